//! `run --trace` and `emulate --replay`, the real binary against emulators on 127.0.0.1: a run
//! through a 3008 and a rotation is recorded, then replayed to `run`, which sees the same finals
//! and the same close classes; the trace holds no key, token or credential, even with every log
//! at TRACE.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use aai_live::emulator::{EmulatorConfig, FaultRule, RunningEmulator};
use aai_live::trace::{Event, Line, Recorded};
use common::KEY;

fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The finals' texts, and the classes of the connections lost, in order.
fn finals_and_losses(out: &Output) -> (Vec<String>, Vec<String>) {
    let events = events(out);
    let of = |kind: &str, field: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["event"] == kind)
            .map(|e| e[field].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    (of("final", "text"), of("lost", "class"))
}

async fn run(
    emu: &RunningEmulator,
    home: &Path,
    wav: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = common::aai_live(home);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd
        .args([
            "run",
            "--headless",
            "--emulator",
            &emu.base_url(),
            "--input",
        ])
        .arg(format!("file:{}", wav.display()))
        .args(extra)
        .env("ASSEMBLYAI_API_KEY", KEY)
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_run_through_a_3008_and_a_rotation_replays_to_the_same_finals() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 13.2 s of speech: six utterances.
    let wav = dir.path().join("speech.wav");
    common::write_wav(&wav, &common::utterances(6));
    // The first session ends with 3008 after 3 s; the next ones last 8 s, so the second
    // rotates (at half its length, being shorter than the rotation lead).
    let fault: FaultRule = "close:3008@3s".parse().expect("fault");
    let recording = common::start(EmulatorConfig {
        max_session_duration: Some(Duration::from_secs(8)),
        faults: vec![fault],
        ..common::config()
    })
    .await;
    let trace = dir.path().join("run.trace");
    let first = run(
        &recording,
        dir.path(),
        &wav,
        &["--trace", trace.to_str().expect("path")],
        &[],
    )
    .await;
    let (finals, losses) = finals_and_losses(&first);
    assert!(finals.len() >= 4, "{finals:?}");
    assert!(losses.contains(&"session_expired".to_owned()), "{losses:?}");
    let rotations = events(&first)
        .iter()
        .filter(|e| e["event"] == "rotation")
        .count();
    assert!(rotations >= 1, "a rotation was recorded");
    recording.shutdown().await;

    let recorded = Recorded::load(&trace).expect("the trace reads back");
    assert!(recorded.sessions.len() >= 3, "{}", recorded.sessions.len());
    let replaying = common::start(EmulatorConfig {
        replay: Some(Arc::new(recorded)),
        ..common::config()
    })
    .await;
    let again = run(&replaying, dir.path(), &wav, &[], &[]).await;
    assert_eq!(finals_and_losses(&again), (finals, losses));
    replaying.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_holds_no_key_token_or_credential_even_at_trace_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("speech.wav");
    common::write_wav(&wav, &common::utterances(1));
    let emu = common::start(common::config()).await;
    let trace = dir.path().join("run.trace");
    let log = dir.path().join("run.log");
    // The token in the URL too, where a careless trace would copy it from.
    run(
        &emu,
        dir.path(),
        &wav,
        &[
            "--trace",
            trace.to_str().expect("path"),
            "--log-level",
            "trace",
            "--log-file",
            log.to_str().expect("path"),
        ],
        &[("AAI_LIVE__STREAMING__TOKEN_IN", "query")],
    )
    .await;
    let text = std::fs::read_to_string(&trace).expect("trace");
    common::assert_clean(&text, KEY, "the API key");
    // Every token the emulator minted starts so; none is in the trace.
    assert!(!text.contains("AQICAHg"), "a token leaked:\n{text}");
    let mut lines = text.lines();
    lines.next();
    let mut kinds = Vec::new();
    for line in lines {
        let line: Line = serde_json::from_str(line).expect("a trace line");
        match &line.event {
            Event::Open { url, .. } => {
                assert!(url.contains("token=%5BREDACTED%5D"), "{url}");
                kinds.push("open");
            }
            Event::Audio { bytes } => {
                assert!(*bytes > 0);
                kinds.push("audio");
            }
            Event::Sent { .. } => kinds.push("sent"),
            Event::Received { .. } => kinds.push("received"),
            Event::ReceivedBinary { .. } => kinds.push("binary"),
            Event::Close { .. } => kinds.push("close"),
        }
    }
    for kind in ["open", "audio", "sent", "received", "close"] {
        assert!(kinds.contains(&kind), "{kind} in the trace");
    }
    // The log at TRACE was written, and the run's own secret filter kept it clean too.
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains("TRACE"), "the log is at TRACE");
    common::assert_clean(&logged, KEY, "the API key in the log");
    assert!(!logged.contains("AQICAHg"), "a token leaked into the log");
    emu.shutdown().await;
}
