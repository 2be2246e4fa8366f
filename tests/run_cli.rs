//! `aai-live run --headless`, the real binary against the emulator: the NDJSON contract
//! (docs/events.md), the transcript files, and the exit status.

mod common;

use std::process::{Command, Output};

use common::KEY;

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_run_streams_and_writes_ndjson_and_transcripts() {
    let emu = common::start(common::config()).await;
    let home = tempfile::tempdir().expect("tempdir");
    let emu_ref = &emu;
    let home_path = home.path().to_owned();
    let out = tokio::task::spawn_blocking({
        let token_url = emu_ref.token_url();
        let ws_url = emu_ref.ws_url();
        move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_aai-live"));
            cmd.args([
                "run",
                "--headless",
                "--input",
                "test:tone",
                "--duration",
                "3s",
            ])
            .env("HOME", &home_path)
            .env("XDG_CONFIG_HOME", home_path.join("config"))
            .env("XDG_STATE_HOME", home_path.join("state"))
            .env("XDG_DATA_HOME", home_path.join("data"))
            .env("ASSEMBLYAI_API_KEY", KEY)
            .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", token_url)
            .env("AAI_LIVE__STREAMING__URL", ws_url)
            .env("AAI_LIVE__TRANSCRIPT__FORMATS", "txt,srt,vtt")
            .env_remove("AAI_LIVE_CONFIG")
            .env_remove("RUST_LOG");
            cmd.output().expect("run")
        }
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = lines(&out);
    assert_eq!(events[0]["event"], "hello");
    assert_eq!(events[0]["schema"], 1);
    assert!(
        !events[0]["provider"]
            .as_str()
            .expect("provider")
            .contains(KEY)
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().expect("event"))
        .collect();
    for wanted in ["state", "token", "begin", "partial", "final", "termination"] {
        assert!(kinds.contains(&wanted), "{wanted} in {kinds:?}");
    }
    let last = events.last().expect("last");
    assert_eq!(last["event"], "finished");
    assert!(last["failure"].is_null());
    assert!(last["finals"].as_u64().expect("finals") >= 1);
    // No token in the stream (only fingerprints).
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("AQICAHg"),
        "a token leaked into the event stream"
    );

    let dir = home.path().join("data/aai-live/transcripts");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("transcripts dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let exts: Vec<&str> = names.iter().filter_map(|n| n.rsplit('.').next()).collect();
    assert_eq!(exts, ["jsonl", "srt", "txt", "vtt"], "{names:?}");
    let jsonl = names
        .iter()
        .find(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|e| e == "jsonl")
        })
        .expect("journal");
    let journal = std::fs::read_to_string(dir.join(jsonl)).expect("journal");
    assert!(journal.lines().count() >= 1);
    assert!(journal.contains("\"text\":\"the quick"), "{journal}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_fails_with_exit_1_and_a_clear_message() {
    let emu = common::start(common::config()).await;
    let home = tempfile::tempdir().expect("tempdir");
    let out = {
        let emu = &emu;
        let home = home.path().to_owned();
        let token_url = emu.token_url();
        let ws_url = emu.ws_url();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_aai-live"))
                .args(["run", "--input", "test:silence", "--duration", "10s"])
                .env("HOME", &home)
                .env("XDG_CONFIG_HOME", home.join("config"))
                .env("XDG_STATE_HOME", home.join("state"))
                .env("XDG_DATA_HOME", home.join("data"))
                .env("ASSEMBLYAI_API_KEY", "wrong-key")
                .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", token_url)
                .env("AAI_LIVE__STREAMING__URL", ws_url)
                .env_remove("AAI_LIVE_CONFIG")
                .output()
                .expect("run")
        })
        .await
        .expect("join")
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        !stderr.contains("wrong-key"),
        "the key must not be echoed: {stderr}"
    );
    let events = lines(&out);
    let last = events.last().expect("last");
    assert_eq!(last["event"], "finished");
    assert!(
        last["failure"]
            .as_str()
            .is_some_and(|f| f.contains("not retrying"))
    );
    assert!(emu.sessions().is_empty());
}

/// `[streaming] extra` values that are not known to be harmless never reach stdout, stderr or
/// the log, even when every connection fails (the connect URL is in the reasons) and the log is
/// at debug level (the URL is logged when connecting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_extra_parameters_are_redacted_everywhere() {
    const SECRET: &str = "s3cr3t-webhook-value";
    let emu = common::start(common::config()).await;
    let home = tempfile::tempdir().expect("tempdir");
    let config = home.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[streaming]\nurl = \"ws://127.0.0.1:9/v3/ws\"\n\n[streaming.extra]\n\
             webhook_auth_header_value = \"{SECRET}\"\nmode = \"balanced\"\n"
        ),
    )
    .expect("config");
    let out = {
        let home = home.path().to_owned();
        let token_url = emu.token_url();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_aai-live"))
                .args(["--config"])
                .arg(&config)
                .args(["--log-level", "debug", "run", "--headless", "--input"])
                .args(["test:silence", "--duration", "3s"])
                .env("HOME", &home)
                .env("XDG_CONFIG_HOME", home.join("config"))
                .env("XDG_STATE_HOME", home.join("state"))
                .env("XDG_DATA_HOME", home.join("data"))
                .env("ASSEMBLYAI_API_KEY", KEY)
                .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", token_url)
                .env_remove("AAI_LIVE_CONFIG")
                .env_remove("RUST_LOG")
                .output()
                .expect("run")
        })
        .await
        .expect("join")
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("webhook_auth_header_value=%5BREDACTED%5D"),
        "the connect URL is reported, redacted: {stdout}"
    );
    let mut log = String::new();
    for entry in std::fs::read_dir(home.path().join("state/aai-live")).expect("log dir") {
        log.push_str(&std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default());
    }
    assert!(
        log.contains("connecting"),
        "the debug log was written: {log}"
    );
    for (what, text) in [("stdout", &*stdout), ("stderr", &*stderr), ("log", &*log)] {
        assert!(!text.contains(SECRET), "the secret is in {what}: {text}");
    }
}

/// A password in a configured URL's user info and secret query values are shown nowhere:
/// `config --check` (the remote provider's URL and the streaming URL), the NDJSON `hello` and
/// the stderr "streaming ... to" line (they used to print the URLs whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_query_secrets_in_configured_urls_are_hidden() {
    const SECRETS: [&str; 4] = ["pa55word-ws", "qu3ry-ws", "pa55word-remote", "qu3ry-remote"];
    let emu = common::start(common::config()).await;
    let home = tempfile::tempdir().expect("tempdir");
    let port = emu.addr.port();
    let streaming =
        format!("ws://user:pa55word-ws@127.0.0.1:{port}/v3/ws?key=qu3ry-ws&sample_rate=16000");
    let run = |args: &'static [&'static str], env: Vec<(&'static str, String)>| {
        let mut cmd = common::aai_live(home.path());
        cmd.args(args).envs(env);
        async move { cmd.output().await.expect("run") }
    };
    let check = run(
        &["config", "--check"],
        vec![
            ("AAI_LIVE__STREAMING__URL", streaming.clone()),
            (
                "AAI_LIVE__PROVIDER__REMOTE__URL",
                "https://me:pa55word-remote@tokens.example/token?sig=qu3ry-remote".into(),
            ),
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{text}");
    assert!(text.contains("tokens.example/token"), "{text}");
    let out = run(
        &[
            "run",
            "--headless",
            "--input",
            "test:silence",
            "--duration",
            "2s",
        ],
        vec![
            ("AAI_LIVE__STREAMING__URL", streaming),
            ("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", emu.token_url()),
            ("ASSEMBLYAI_API_KEY", KEY.into()),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let hello = stdout.lines().next().unwrap_or_default();
    assert!(hello.contains("\"event\":\"hello\""), "{stdout}");
    assert!(
        hello.contains(&format!("127.0.0.1:{port}/v3/ws")),
        "{hello}"
    );
    assert!(stderr.contains("streaming test:silence to"), "{stderr}");
    for (what, text) in [
        ("config --check", &*text),
        ("stdout", &*stdout),
        ("stderr", &*stderr),
    ] {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} in {what}: {text}");
        }
    }
}

/// NaN and ±Inf samples on stdin are sent as silence and said once, as a `warning` event and a
/// stderr line (it used to be in the log file only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_samples_are_warned_about_on_stdout_and_stderr() {
    let emu = common::start(common::config()).await;
    let home = tempfile::tempdir().expect("tempdir");
    let mut audio = Vec::new();
    for i in 0..16_000_u32 {
        let sample = match i % 400 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            _ => 0.0,
        };
        audio.extend_from_slice(&sample.to_le_bytes());
    }
    let mut cmd = common::aai_live(home.path());
    cmd.args(["run", "--headless", "--input", "stdin"])
        .env("ASSEMBLYAI_API_KEY", KEY)
        .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", emu.token_url())
        .env("AAI_LIVE__STREAMING__URL", emu.ws_url())
        .env("AAI_LIVE__AUDIO__STDIN_FORMAT", "f32le:16000:1")
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &audio)
        .await
        .expect("write audio");
    drop(stdin);
    let out = child.wait_with_output().await.expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let warnings: Vec<_> = lines(&out)
        .into_iter()
        .filter(|e| e["event"] == "warning")
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains("NaN")))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        stderr.matches("NaN or infinite samples").count(),
        1,
        "{stderr}"
    );
}

/// A server's close reason and `Error` text can carry escape sequences and megabytes: on stderr
/// they arrive stripped of control characters and cut to a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_close_text_reaches_stderr_defused() {
    use aai_live::emulator::{Fault, FaultRule};
    let emu = common::start(common::config()).await;
    // A reason longer than a close frame allows: the emulator sends it in an `Error` frame and
    // closes with "See Error message for details", as the service does.
    let evil = format!("\u{1b}]0;pwned\u{7}\u{1b}[2J{}", "x".repeat(200_000));
    emu.add_fault(FaultRule {
        fault: Fault::Close {
            code: 3005,
            reason: Some(evil),
            at_ms: 500,
        },
        count: 1,
    });
    // A short one straight in the close frame (1011 has no `Error` frame).
    emu.add_fault(FaultRule {
        fault: Fault::Close {
            code: 1011,
            reason: Some("\u{1b}[31mred\u{1b}]8;;http://evil\u{7}link".into()),
            at_ms: 500,
        },
        count: 1,
    });
    let home = tempfile::tempdir().expect("tempdir");
    let out = {
        let home = home.path().to_owned();
        let token_url = emu.token_url();
        let ws_url = emu.ws_url();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_aai-live"))
                .args([
                    "run",
                    "--headless",
                    "--input",
                    "test:tone",
                    "--duration",
                    "3s",
                ])
                .env("HOME", &home)
                .env("XDG_CONFIG_HOME", home.join("config"))
                .env("XDG_STATE_HOME", home.join("state"))
                .env("XDG_DATA_HOME", home.join("data"))
                .env("ASSEMBLYAI_API_KEY", KEY)
                .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", token_url)
                .env("AAI_LIVE__STREAMING__URL", ws_url)
                .env_remove("AAI_LIVE_CONFIG")
                .env_remove("RUST_LOG")
                .output()
                .expect("run")
        })
        .await
        .expect("join")
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" lost: "), "the loss is reported: {stderr}");
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\u{7}'),
        "an escape sequence reached stderr: {stderr:?}"
    );
    for line in stderr.lines() {
        assert!(line.chars().count() < 800, "a line of {} chars", line.len());
    }
}

/// An input that fails (here stdin is a directory: every read is an error) must not end the
/// run like the end of a file: `state: failed`, `finished` with the failure, exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_input_fails_the_run_with_exit_1() {
    let emu = common::start(common::config()).await;
    let home = tempfile::tempdir().expect("tempdir");
    let out = {
        let home = home.path().to_owned();
        let token_url = emu.token_url();
        let ws_url = emu.ws_url();
        tokio::task::spawn_blocking(move || {
            let stdin = std::fs::File::open(&home).expect("a directory opens for reading");
            Command::new(env!("CARGO_BIN_EXE_aai-live"))
                .args(["run", "--headless", "--input", "stdin", "--duration", "20s"])
                .env("HOME", &home)
                .env("XDG_CONFIG_HOME", home.join("config"))
                .env("XDG_STATE_HOME", home.join("state"))
                .env("XDG_DATA_HOME", home.join("data"))
                .env("ASSEMBLYAI_API_KEY", common::KEY)
                .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", token_url)
                .env("AAI_LIVE__STREAMING__URL", ws_url)
                .env_remove("AAI_LIVE_CONFIG")
                .stdin(stdin)
                .output()
                .expect("run")
        })
        .await
        .expect("join")
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let events = lines(&out);
    let last = events.last().expect("last");
    assert_eq!(last["event"], "finished", "{events:?}");
    let failure = last["failure"].as_str().expect("a failure");
    assert!(failure.contains("audio input failed"), "{failure}");
    // Where it is explained: `aai-live explain local`.
    assert_eq!(last["explain"], "local", "{last}");
    assert!(stderr.contains("aai-live explain local"), "{stderr}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "state" && e["state"] == "failed"),
        "{events:?}"
    );
    assert!(stderr.contains("audio input failed"), "{stderr}");
}

/// The exit-status contract (docs/events.md), status 3: a token endpoint that refuses every
/// connection for a whole 4 s run — nothing crashes, the run ends normally, but every captured
/// sample is reported lost, each `token_failed` says where it is explained, and the exit status
/// tells a script so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_lost_audio_exits_3_and_every_token_failure_is_explained() {
    let home = tempfile::tempdir().expect("tempdir");
    // A port nobody listens on (bound, then freed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let out = common::aai_live(home.path())
        .args([
            "run",
            "--headless",
            "--input",
            "test:tone",
            "--duration",
            "4s",
            "--archive",
        ])
        .env("ASSEMBLYAI_API_KEY", KEY)
        .env(
            "AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL",
            format!("http://{closed}/v3/token"),
        )
        .env("AAI_LIVE__STREAMING__URL", format!("ws://{closed}/v3/ws"))
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let events = lines(&out);
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "token_failed")
        .collect();
    assert!(!failed.is_empty(), "{events:?}");
    for e in &failed {
        assert_eq!(e["explain"], "tcp", "{e}");
    }
    assert!(stderr.contains("(see `aai-live explain tcp`)"), "{stderr}");
    let last = events.last().expect("last");
    assert_eq!(last["event"], "finished");
    assert!(last["failure"].is_null(), "{last}");
    let captured = last["audio_captured_samples"].as_u64().expect("captured");
    assert!(captured > 0);
    assert_eq!(
        last["audio_lost_samples"].as_u64(),
        Some(captured),
        "{last}"
    );
    // The archive holds what was captured, and its sidecar says none of it reached the
    // service: the ledger's losses index the file.
    let wav = std::path::PathBuf::from(last["archive"]["input"].as_str().expect("archive"));
    assert!(wav.is_absolute(), "{wav:?}");
    let samples: Vec<i16> = hound::WavReader::open(&wav)
        .expect("a WAV")
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    assert_eq!(samples.len() as u64, captured);
    assert!(samples.iter().any(|s| *s != 0), "the tone, not silence");
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(wav.with_extension("json")).expect("json"))
            .expect("sidecar");
    assert_eq!(sidecar["complete"], true, "{sidecar}");
    assert_eq!(sidecar["samples"].as_u64(), Some(captured), "{sidecar}");
    let ranges = sidecar["lost"].as_array().expect("lost");
    let covered: u64 = ranges
        .iter()
        .map(|l| l["to_sample"].as_u64().expect("to") - l["from_sample"].as_u64().expect("from"))
        .sum();
    assert_eq!(covered, captured, "{sidecar}");
    assert!(
        sidecar["archive_gaps"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

/// Status 2: an invalid configuration value is a usage error, named on stderr, and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_value_exits_2() {
    let home = tempfile::tempdir().expect("tempdir");
    for command in [["run", "--headless"], ["demo", "--headless"]] {
        let out = common::aai_live(home.path())
            .args(command)
            .args(["--input", "test:tone", "--duration", "1s"])
            .env("AAI_LIVE__SESSION__ROTATION_LEAD", "banana")
            .output()
            .await
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
        assert!(stderr.contains("session.rotation_lead"), "{stderr}");
        assert!(stderr.contains("banana"), "{stderr}");
        assert!(out.stdout.is_empty(), "no events: {command:?}");
    }
}

/// The storm of the decision-core issue, with the real binary: the emulator ends sessions after
/// 20 s, shorter than the default 30 s `rotation_lead`. A 40 s file makes at most 6 rotations
/// and mints at most 8 tokens (it made 1 319 and 1 320 in 24 s before the rotation rule), the
/// recordings hold every chunk of the file exactly once, and the run exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_shorter_than_the_rotation_lead_rotate_at_half_their_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record");
    std::fs::create_dir_all(&record).expect("record dir");
    let emu = common::start(aai_live::emulator::EmulatorConfig {
        max_session_duration: Some(std::time::Duration::from_secs(20)),
        record_dir: Some(record.clone()),
        ..common::config()
    })
    .await;
    let input = common::watermark(
        std::iter::repeat_n(common::utterances(4), 10)
            .flatten()
            .take(40 * 16_000)
            .collect(),
    );
    let wav = dir.path().join("forty.wav");
    common::write_wav(&wav, &input);
    let out = common::aai_live(dir.path())
        .args(["run", "--headless", "--emulator-hints", "--input"])
        .arg(format!("file:{}", wav.display()))
        .env("ASSEMBLYAI_API_KEY", KEY)
        .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", emu.token_url())
        .env("AAI_LIVE__STREAMING__URL", emu.ws_url())
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = lines(&out);
    let rotations = events.iter().filter(|e| e["event"] == "rotation").count();
    let tokens = emu.stats().tokens.minted;
    assert!(rotations <= 6, "{rotations} rotations");
    assert!(tokens <= 8, "{tokens} tokens");
    let last = events.last().expect("last");
    assert_eq!(last["audio_lost_samples"], 0, "{last}");
    // Every chunk of the file reached a session exactly once, in order within each session.
    let mut sessions = emu.sessions();
    sessions.sort_by_key(|s| s.started_at_ms);
    let mut got = vec![0_u32; input.len() / common::CHUNK];
    for s in &sessions {
        let bytes = std::fs::read(record.join(format!("{}.pcm", s.id))).unwrap_or_default();
        let samples: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect();
        let marks: Vec<usize> = samples
            .chunks(common::CHUNK)
            .map(|c| common::mark_of(c).expect("a marked chunk"))
            .collect();
        for pair in marks.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "session {}: a gap or a repeat", s.id);
        }
        for k in marks {
            got[k] += 1;
        }
    }
    let missing = got.iter().filter(|n| **n == 0).count();
    let twice = got.iter().filter(|n| **n > 1).count();
    assert_eq!(
        (missing, twice),
        (0, 0),
        "chunks missing, chunks sent twice"
    );
    emu.shutdown().await;
}
