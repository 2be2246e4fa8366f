//! `aai-live demo` with stdout not a terminal: the same demo (in-process emulator, bundled
//! recording and its word script) as NDJSON events, so the demo's wiring is checked without a
//! terminal: the demo key reaches the provider, the real words come back, nothing leaks.

use std::process::Command;

#[test]
fn demo_headless_streams_the_bundled_recording() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_aai-live"))
        .args(["demo", "--headless", "--duration", "7s"])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env_remove("AAI_LIVE_CONFIG")
        .env_remove("ASSEMBLYAI_API_KEY")
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(events[0]["event"], "hello");
    let hello = events[0].to_string();
    assert!(hello.contains("127.0.0.1"), "{hello}");
    assert!(!stdout.contains(aai_live::demo::DEMO_KEY), "the key leaked");
    // The first sentence of the recording ends 4.1 s in, formatted by the emulator.
    let finals: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "final")
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(
        finals.contains(&"Tokens are minted once and used once."),
        "{finals:?}"
    );
    assert_eq!(events.last().expect("last")["event"], "finished");
}
