//! `aai-live load`, the real binary against the emulator on 127.0.0.1: every session begun and
//! measured, one JSON summary object, a progress line on stderr; and a rate-limited account
//! (3009) pauses new sessions as `run` backs off, each refusal counted by its class.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use aai_live::emulator::{EmulatorConfig, RunningEmulator};
use common::KEY;

async fn load(emu: &RunningEmulator, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let wav = home.join("speech.wav");
    common::write_wav(&wav, &common::utterances(2));
    let mut cmd = common::aai_live(home);
    cmd.args(["load", "--emulator", &emu.base_url(), "--json", "--input"])
        .arg(&wav)
        .args(args)
        .env("ASSEMBLYAI_API_KEY", KEY);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("load ends")
        .expect("load");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let json = lines.next().expect("a summary");
    assert!(lines.next().is_none(), "one object only:\n{stdout}");
    serde_json::from_str(json).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_begins_and_the_summary_has_every_figure() {
    let home = tempfile::tempdir().expect("tempdir");
    let emu = common::start(common::config()).await;
    let out = load(
        &emu,
        home.path(),
        &["--sessions", "20", "--duration", "4s", "--ramp", "1s"],
        &[],
    )
    .await;
    let s = summary(&out);
    assert_eq!(s["sessions_begun"], 20, "{s}");
    assert_eq!(s["sessions_failed"], 0, "{s}");
    assert_eq!(s["sessions_failed_by_class"], serde_json::json!({}), "{s}");
    for figure in ["begin_ms", "first_partial_ms", "final_ms"] {
        let p = &s[figure];
        let (p50, p95, p99) = (
            p["p50"].as_u64().expect("p50"),
            p["p95"].as_u64().expect("p95"),
            p["p99"].as_u64().expect("p99"),
        );
        assert!(p50 <= p95 && p95 <= p99, "{figure}: {p}");
    }
    // A word ends after 60 ms of silence, a turn after 400 ms (min_turn_silence): the
    // latencies, measured from the end of the words' audio, hold them.
    assert!(s["first_partial_ms"]["p50"].as_u64() >= Some(60), "{s}");
    assert!(s["final_ms"]["p50"].as_u64() >= Some(400), "{s}");
    assert!(s["messages_per_s"].as_f64().expect("messages_per_s") > 0.0);
    assert!(s["cpu_percent"].as_f64().expect("cpu_percent") >= 0.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("20/20 started, 20 begun, 0 failed"),
        "{stderr}"
    );
    // Each session streamed and said Terminate: the emulator saw 20 normal ends.
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 20);
    assert!(
        sessions
            .iter()
            .all(|r| r.terminated_by_client && r.close_code == Some(1000))
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_account_pauses_new_sessions_and_counts_the_refusals() {
    let home = tempfile::tempdir().expect("tempdir");
    let emu = common::start(EmulatorConfig {
        sessions_per_minute: Some(3),
        ..common::config()
    })
    .await;
    // Six sessions half a second apart; the account takes three a minute. The fourth is
    // refused with 3009, and no new session starts for the backoff (2 s and up to 25 %
    // jitter): the fifth and sixth each come after a pause.
    let out = load(
        &emu,
        home.path(),
        &["--sessions", "6", "--duration", "1s", "--ramp", "3s"],
        &[("AAI_LIVE__SESSION__RATE_LIMIT_BACKOFF", "2s")],
    )
    .await;
    let s = summary(&out);
    assert_eq!(s["sessions_begun"], 3, "{s}");
    assert_eq!(s["sessions_failed"], 3, "{s}");
    assert_eq!(
        s["sessions_failed_by_class"],
        serde_json::json!({"rate_limited": 3}),
        "{s}"
    );
    // Without the pause the last session would start at 2.5 s; with it, after two pauses.
    let elapsed = s["elapsed_s"].as_f64().expect("elapsed_s");
    assert!(elapsed >= 5.5, "{elapsed} s: {s}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_input_is_named_and_nothing_is_opened() {
    let home = tempfile::tempdir().expect("tempdir");
    let emu = common::start(common::config()).await;
    let missing = home.path().join("nowhere.wav");
    let out = common::aai_live(home.path())
        .args(["load", "--emulator", &emu.base_url(), "--input"])
        .arg(&missing)
        .env("ASSEMBLYAI_API_KEY", KEY)
        .output()
        .await
        .expect("load");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nowhere.wav"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(emu.stats().tokens.minted, 0, "no session was started");
    emu.shutdown().await;
}
