//! The official AssemblyAI Python SDK (`assemblyai` on PyPI, its v3 `StreamingClient`) streams to
//! the in-process emulator through tests/sdk/python_stream.py, with an API key and with a
//! temporary token, and what the SDK reports must match what the emulator recorded.
//!
//! Needs `AAI_LIVE_PYTHON`: a Python with the SDK installed, e.g.
//!
//! ```sh
//! python3 -m venv target/sdk-venv && target/sdk-venv/bin/pip install assemblyai==1.8.2
//! AAI_LIVE_PYTHON=target/sdk-venv/bin/python cargo nextest run --test sdk_interop
//! ```
//!
//! Without it the tests print "skipped" and pass, except under CI (`CI` set), where they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aai_live::emulator::state::CredentialKind;
use aai_live::emulator::{EmulatorConfig, RunningEmulator, SessionRecord};
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/python_stream.py");
/// One repetition of the script's pattern: 3 × (300 ms tone + 100 ms gap) + 1 s silence.
const PATTERN_MS: u64 = 2200;
const VENV_HINT: &str = "python3 -m venv target/sdk-venv && \
     target/sdk-venv/bin/pip install assemblyai==1.8.2, then set \
     AAI_LIVE_PYTHON=target/sdk-venv/bin/python";

/// The Python to run the SDK with, or `None` (after saying so) when this is not CI.
fn python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AAI_LIVE_PYTHON").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return Some(if path.is_relative() {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
        } else {
            path
        });
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "AAI_LIVE_PYTHON is not set, and under CI the SDK interop tests may not be skipped. \
         Create the venv: {VENV_HINT}"
    );
    eprintln!("skipped: set AAI_LIVE_PYTHON to a Python with the assemblyai SDK ({VENV_HINT})");
    None
}

/// What one run of the script printed, parsed.
struct SdkRun {
    events: Vec<Value>,
    stderr: String,
}

impl SdkRun {
    fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }

    fn finals(&self) -> Vec<&Value> {
        self.of_type("Turn")
            .into_iter()
            .filter(|t| t["end_of_turn"] == true)
            .collect()
    }

    fn kinds(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("?"))
            .collect()
    }
}

/// Run the script against `emu` with `auth` (`--api-key K` or `--token T`); it must exit 0 within
/// `limit` and print only JSON lines.
async fn run_sdk(
    python: &Path,
    emu: &RunningEmulator,
    auth: [&str; 2],
    repeat: u64,
    limit: Duration,
) -> SdkRun {
    let child = tokio::process::Command::new(python)
        .arg(SCRIPT)
        .args(["--host", &format!("ws://{}", emu.addr)])
        .args(auth)
        .args(["--repeat", &repeat.to_string()])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run AAI_LIVE_PYTHON={}: {e}", python.display()));
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the SDK script did not finish within {limit:?}"))
        .expect("script output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the SDK script failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let events: Vec<Value> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nstderr:\n{stderr}"))
        })
        .collect();
    let sdk = events.first().expect("the script's first line");
    assert_eq!(sdk["type"], "sdk", "{sdk}");
    eprintln!(
        "assemblyai SDK {} on Python {}",
        sdk["version"], sdk["python"]
    );
    assert_eq!(
        events.last().map(|e| &e["type"]),
        Some(&Value::from("done")),
        "the script ran to its end: {stdout}\nstderr:\n{stderr}"
    );
    // Exceptions in the SDK's reader thread or in handlers are logged, not raised: a traceback
    // means the SDK could not digest something the emulator sent.
    assert!(!stderr.contains("Traceback"), "the SDK raised:\n{stderr}");
    SdkRun {
        events: events[1..events.len() - 1].to_vec(),
        stderr,
    }
}

/// The one session on record, once it has closed (bounded poll: the close is published just
/// before the closing handshake the SDK waits for, so this normally returns at once).
async fn closed_session(emu: &RunningEmulator) -> SessionRecord {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let sessions = emu.sessions();
        assert!(sessions.len() <= 1, "one session: {sessions:#?}");
        if let Some(s) = sessions.first().filter(|s| s.close_code.is_some()) {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no closed session on record: {sessions:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What every successful SDK session must show, on both sides.
fn check_session(run: &SdkRun, session: &SessionRecord, repeat: u64) {
    let kinds = run.kinds();
    assert!(
        run.of_type("Error").is_empty(),
        "no Error: {:?}",
        run.events
    );
    assert_eq!(kinds.first(), Some(&"Begin"), "Begin first: {kinds:?}");
    assert_eq!(
        kinds.last(),
        Some(&"Termination"),
        "Termination last: {kinds:?}"
    );
    assert_eq!(run.of_type("Termination").len(), 1, "{kinds:?}");

    // Begin carries the emulator's session id and expiry.
    let begin = &run.events[0];
    assert_eq!(begin["id"], session.id.as_str());
    assert_eq!(begin["expires_at_unix"], session.expires_at);

    // Turns: at least one final with text; as many finals as the emulator sent; in order.
    let finals = run.finals();
    assert!(!finals.is_empty(), "a final Turn: {:?}", run.events);
    assert!(
        finals
            .iter()
            .all(|t| !t["transcript"].as_str().unwrap_or_default().is_empty()),
        "{finals:?}"
    );
    assert_eq!(finals.len() as u64, session.final_turns, "{finals:?}");
    let orders: Vec<u64> = finals
        .iter()
        .map(|t| t["turn_order"].as_u64().expect("turn_order"))
        .collect();
    assert!(
        orders.windows(2).all(|w| w[0] < w[1]),
        "final turn orders increase: {orders:?}"
    );
    // One turn per repetition of the pattern (three "words", then a second of silence).
    assert_eq!(finals.len() as u64, repeat, "{finals:?}");
    assert!(
        finals.iter().all(|t| t["turn_is_formatted"] == true),
        "format_turns=True gives formatted finals: {finals:?}"
    );

    // The emulator's side: closed 1000 after the client's Terminate, every byte received.
    assert_eq!(session.close_code, Some(1000), "{session:#?}");
    assert!(session.terminated_by_client, "{session:#?}");
    assert_eq!(session.audio_ms, PATTERN_MS * repeat, "{session:#?}");
    assert_eq!(
        session.audio_bytes,
        32 * PATTERN_MS * repeat,
        "{session:#?}"
    );
    assert_eq!(session.params.sample_rate, 16_000);
    assert!(session.params.format_turns, "{session:#?}");
    let termination = run.of_type("Termination")[0];
    assert_eq!(
        termination["audio_duration_seconds"],
        (PATTERN_MS * repeat + 500) / 1000,
        "whole seconds, rounded: {termination}"
    );
    // Nothing logged by the SDK either (it logs what it cannot parse, and server errors).
    assert!(run.stderr.trim().is_empty(), "SDK stderr:\n{}", run.stderr);
}

fn sdk_config() -> EmulatorConfig {
    // The defaults (pacing check on, 200 ms processing delay): the script streams in real time
    // like an application with a microphone.
    EmulatorConfig::with_key(common::KEY)
}

#[tokio::test]
async fn python_sdk_streams_with_an_api_key() {
    let Some(python) = python() else { return };
    let emu = common::start(sdk_config()).await;
    let repeat = 2;
    let run = run_sdk(
        &python,
        &emu,
        ["--api-key", common::KEY],
        repeat,
        Duration::from_secs(13),
    )
    .await;
    let session = closed_session(&emu).await;
    check_session(&run, &session, repeat);
    assert_eq!(session.credential, CredentialKind::ApiKey);
    // Partials came before each final, growing word by word.
    assert!(
        run.of_type("Turn")
            .iter()
            .any(|t| t["end_of_turn"] == false),
        "partial Turns too: {:?}",
        run.events
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn python_sdk_streams_with_a_temporary_token_once() {
    let Some(python) = python() else { return };
    let emu = common::start(sdk_config()).await;
    let token = common::mint_token(
        &emu,
        "expires_in_seconds=60&max_session_duration_seconds=600",
    )
    .await;
    let run = run_sdk(
        &python,
        &emu,
        ["--token", &token],
        1,
        Duration::from_secs(8),
    )
    .await;
    let session = closed_session(&emu).await;
    check_session(&run, &session, 1);
    assert_eq!(session.credential, CredentialKind::TemporaryToken);
    // The token's max_session_duration_seconds sets the session's expiry.
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let left = session.expires_at - now_s;
    assert!((590..=601).contains(&left), "expires in {left} s, not ~600");

    // The token is one-time: the SDK reports the refusal as an Error with code 1008, no Begin.
    let again = run_sdk(
        &python,
        &emu,
        ["--token", &token],
        1,
        Duration::from_secs(8),
    )
    .await;
    assert!(again.of_type("Begin").is_empty(), "{:?}", again.events);
    let errors = again.of_type("Error");
    assert_eq!(errors.len(), 1, "one Error: {:?}", again.events);
    assert_eq!(errors[0]["code"], 1008, "{}", errors[0]);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already used"),
        "{}",
        errors[0]
    );
    assert_eq!(
        emu.sessions().len(),
        1,
        "the refused connection opened no session"
    );

    // The control API tells the same story over HTTP.
    let sessions: Value = reqwest::get(format!("{}/emulator/sessions", emu.base_url()))
        .await
        .expect("sessions")
        .json()
        .await
        .expect("JSON");
    assert_eq!(sessions[0]["credential"], "temporary_token", "{sessions}");
    assert_eq!(sessions[0]["close_code"], 1000, "{sessions}");
    assert_eq!(sessions[0]["audio_ms"], PATTERN_MS, "{sessions}");
    emu.shutdown().await;
}
