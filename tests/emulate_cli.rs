//! `aai-live emulate` as a user runs it: the real binary on 127.0.0.1, its first-line contract,
//! keys from flags and from the environment, flag errors, `--record`, and SIGTERM.
//!
//! Every child runs with HOME and the XDG directories inside a temporary directory and without
//! the developer's `AAI_LIVE*` variables, so no real configuration is read and no log lands in
//! the developer's state directory.

mod common;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use aai_live::protocol::ServerMessage;
use common::{Ws, read_to_close, read_until, silence, terminate, tone};
use futures_util::SinkExt;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEY: &str = "cli-key-0123456789";
const FIRST_LINE: &str = "aai-live emulator listening on http://127.0.0.1:";
/// Upper bound for anything the binary must do "at once" (start, answer, exit).
const BOUND: Duration = Duration::from_secs(10);

use common::aai_live;

/// A running `aai-live emulate` child (killed when dropped).
struct CliEmulator {
    child: Child,
    port: u16,
    /// Kept open: the emulator may print more, and a closed pipe would turn that into EPIPE.
    stdout: Lines<BufReader<ChildStdout>>,
    _home: TempDir,
}

impl CliEmulator {
    /// Spawn `aai-live emulate --listen 127.0.0.1:0 ARGS` and read the port from the first line.
    async fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let home = TempDir::new().expect("tempdir");
        let mut cmd = aai_live(home.path());
        cmd.args(["emulate", "--listen", "127.0.0.1:0"]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn aai-live");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(BOUND, stdout.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = child.start_kill();
                let stderr = stderr_of(&mut child).await;
                panic!("no first stdout line within {BOUND:?} ({other:?}); stderr: {stderr}");
            }
        };
        let port = line
            .strip_prefix(FIRST_LINE)
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("first line {line:?} is not \"{FIRST_LINE}PORT\""));
        assert_ne!(port, 0, "the real port, not the requested 0");
        Self {
            child,
            port,
            stdout,
            _home: home,
        }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn mint(&self, key: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!(
                "{}/v3/token?expires_in_seconds=60",
                self.base_url()
            ))
            .header("Authorization", key)
            .timeout(BOUND)
            .send()
            .await
            .expect("token request")
    }

    async fn mint_token(&self, key: &str) -> String {
        let response = self.mint(key).await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.expect("token JSON");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Open `/v3/ws` with `query` and an optional Authorization header.
    async fn connect(&self, auth: Option<&str>, query: &str) -> Ws {
        let mut request = format!("ws://127.0.0.1:{}/v3/ws?{query}", self.port)
            .into_client_request()
            .expect("request");
        if let Some(auth) = auth {
            request
                .headers_mut()
                .insert("Authorization", auth.parse().expect("header"));
        }
        tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("connect")
            .0
    }

    /// Send SIGTERM (through the `kill` utility: this crate forbids unsafe code and has no libc).
    async fn sigterm(&self) {
        let pid = self.child.id().expect("the child is running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}: {status}");
    }

    /// Wait (bounded) for the process to exit.
    async fn exit_status(&mut self) -> ExitStatus {
        let Ok(status) = tokio::time::timeout(BOUND, self.child.wait()).await else {
            let _ = self.child.start_kill();
            panic!("aai-live did not exit within {BOUND:?}");
        };
        status.expect("wait")
    }
}

async fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = tokio::time::timeout(BOUND, stderr.read_to_string(&mut text)).await;
    }
    text
}

/// Run a command that must end by itself; returns (status, stdout, stderr).
async fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let home = TempDir::new().expect("tempdir");
    let child = aai_live(home.path()).args(args).spawn().expect("spawn");
    let output = tokio::time::timeout(BOUND, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("aai-live {args:?} did not exit within {BOUND:?}"))
        .expect("output");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn begin_id(messages: &[ServerMessage]) -> String {
    match messages.first() {
        Some(ServerMessage::Begin(begin)) => begin.id.clone(),
        other => panic!("expected Begin first, got {other:?}"),
    }
}

/// Terminate, then expect Termination and close 1000.
async fn terminate_cleanly(ws: &mut Ws) {
    terminate(ws).await;
    let out = read_to_close(ws).await;
    assert!(
        matches!(out.messages.last(), Some(ServerMessage::Termination(_))),
        "Termination last: {:?}",
        out.kinds()
    );
    assert_eq!(out.code(), Some(1000), "{out:?}");
}

#[tokio::test]
async fn token_over_http_then_session_with_token_in_query() {
    let emu = CliEmulator::spawn(&["--api-key", KEY], &[]).await;

    let token = emu.mint_token(KEY).await;
    // Real tokens carry + / =: the query value must be percent-encoded.
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let mut ws = emu
        .connect(None, &format!("sample_rate=16000&token={encoded}"))
        .await;
    let first = read_until(&mut ws, |_| true).await;
    uuid::Uuid::parse_str(&begin_id(&first)).expect("the session id is a UUID");
    terminate_cleanly(&mut ws).await;

    // The session is on record as a token session closed with 1000.
    let sessions: serde_json::Value = reqwest::get(format!("{}/emulator/sessions", emu.base_url()))
        .await
        .expect("sessions")
        .json()
        .await
        .expect("JSON");
    assert_eq!(sessions[0]["credential"], "temporary_token", "{sessions}");
    assert_eq!(sessions[0]["close_code"], 1000, "{sessions}");

    // A wrong key is refused by the token endpoint.
    assert_eq!(emu.mint("not-the-key").await.status(), 401);
}

#[tokio::test]
async fn api_keys_from_the_environment() {
    let emu = CliEmulator::spawn(&[], &[("AAI_LIVE_EMULATOR_API_KEYS", "key-a, key-b")]).await;
    for key in ["key-a", "key-b"] {
        assert_eq!(emu.mint(key).await.status(), 200, "{key}");
    }
    for key in ["key-a, key-b", "key-c", ""] {
        assert_eq!(emu.mint(key).await.status(), 401, "{key:?}");
    }
    // The second key also opens a session directly.
    let mut ws = emu.connect(Some("key-b"), "sample_rate=16000").await;
    begin_id(&read_until(&mut ws, |_| true).await);
    terminate_cleanly(&mut ws).await;
}

#[tokio::test]
async fn without_any_key_it_refuses_to_start() {
    let (status, stdout, stderr) = run_to_exit(&["emulate", "--listen", "127.0.0.1:0"]).await;
    assert!(!status.success(), "{status}");
    assert!(
        stdout.is_empty(),
        "nothing listens, nothing printed: {stdout:?}"
    );
    assert!(
        stderr.contains("--api-key") && stderr.contains("AAI_LIVE_EMULATOR_API_KEYS"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bad_fault_spec_exits_non_zero_naming_it() {
    let (status, stdout, stderr) = run_to_exit(&[
        "emulate",
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        KEY,
        "--fault",
        "close:3005@1s",
        "--fault",
        "explode",
    ])
    .await;
    assert!(!status.success(), "{status}");
    assert!(stdout.is_empty(), "{stdout:?}");
    assert!(
        stderr.contains("\"explode\"") && stderr.contains("invalid fault"),
        "stderr names the bad spec: {stderr}"
    );
    assert!(
        !stderr.contains("\"close:3005@1s\""),
        "only the bad spec is named: {stderr}"
    );
}

#[tokio::test]
async fn record_writes_the_session_audio_to_dir() {
    let dir = TempDir::new().expect("tempdir");
    // A directory that does not exist yet: the emulator creates it.
    let record: PathBuf = dir.path().join("recordings");
    let record_arg = record.to_str().expect("UTF-8 path");
    let emu = CliEmulator::spawn(&["--api-key", KEY, "--record", record_arg], &[]).await;

    let mut audio = tone(500);
    audio.extend(silence(300));
    audio.extend(tone(200));
    let mut ws = emu.connect(Some(KEY), "sample_rate=16000").await;
    let id = begin_id(&read_until(&mut ws, |_| true).await);
    for chunk in audio.chunks(3200) {
        ws.send(Message::Binary(chunk.to_vec().into()))
            .await
            .expect("send audio");
    }
    terminate_cleanly(&mut ws).await;

    let file = record.join(format!("{id}.pcm"));
    let recorded =
        std::fs::read(&file).unwrap_or_else(|e| panic!("{} after the close: {e}", file.display()));
    assert_eq!(recorded.len(), audio.len());
    assert!(
        recorded == audio,
        "the recording is the audio sent, byte for byte"
    );
    // Then, once the connection has ended, the session's record beside it.
    let json = record.join(format!("{id}.json"));
    let deadline = std::time::Instant::now() + BOUND;
    while !json.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no {}",
            json.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("read")).expect("JSON");
    assert_eq!(saved["audio_bytes"], audio.len() as u64);
    let mut names: Vec<String> = std::fs::read_dir(&record)
        .expect("record dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [format!("{id}.json"), format!("{id}.pcm")],
        "two files per session"
    );
}

#[tokio::test]
async fn close_codes_a_server_may_not_send_are_refused_naming_flag_and_value() {
    for (flag, value, named) in [
        ("--inactivity-close-code", "0", "0"),
        ("--inactivity-close-code", "1005", "1005"),
        ("--inactivity-close-code", "65535", "65535"),
        ("--fault", "close:65535@1s", "65535"),
        ("--fault", "close-before-begin:1006", "1006"),
        ("--fault", "close:0:reason@2s", "0"),
    ] {
        let (status, stdout, stderr) = run_to_exit(&[
            "emulate",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            KEY,
            flag,
            value,
        ])
        .await;
        assert_eq!(status.code(), Some(2), "{flag} {value}: {status} {stderr}");
        assert!(stdout.is_empty(), "{stdout:?}");
        assert!(
            stderr.contains(flag) && stderr.contains(&format!("{named} is not a close code")),
            "{flag} {value}: {stderr}"
        );
    }
    // The allowed ranges are accepted.
    let emu = CliEmulator::spawn(
        &[
            "--api-key",
            KEY,
            "--inactivity-close-code",
            "4000",
            "--fault",
            "close:1013@9s",
        ],
        &[],
    )
    .await;
    assert_eq!(emu.mint(KEY).await.status(), 200);
}

#[tokio::test]
async fn limit_flags_are_applied_and_checked() {
    let emu = CliEmulator::spawn(
        &[
            "--api-key",
            KEY,
            "--max-connections",
            "7",
            "--max-tokens",
            "2",
            "--keep-sessions",
            "0",
            "--header-timeout",
            "300ms",
        ],
        &[],
    )
    .await;
    for _ in 0..3 {
        emu.mint_token(KEY).await;
    }
    // An idle connection is closed after the header timeout.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", emu.port))
        .await
        .expect("connect");
    let mut byte = [0_u8; 1];
    let read = tokio::time::timeout(BOUND, idle.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    let counters: serde_json::Value = reqwest::get(format!("{}/emulator/stats", emu.base_url()))
        .await
        .expect("stats")
        .json()
        .await
        .expect("JSON");
    assert_eq!(counters["connections"]["max"], 7, "{counters}");
    assert_eq!(counters["tokens"]["max_tokens"], 2, "{counters}");
    assert_eq!(counters["tokens"]["evicted"], 1, "{counters}");
    assert_eq!(counters["sessions"]["keep_finished"], 0, "{counters}");

    for (flag, value) in [
        ("--max-connections", "0"),
        ("--max-tokens", "0"),
        ("--header-timeout", "0s"),
        ("--header-timeout", "soon"),
    ] {
        let (status, _, stderr) = run_to_exit(&[
            "emulate",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            KEY,
            flag,
            value,
        ])
        .await;
        assert_eq!(status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

#[tokio::test]
async fn listening_beyond_loopback_warns_on_stderr() {
    let home = TempDir::new().expect("tempdir");
    let mut child = aai_live(home.path())
        .args(["emulate", "--listen", "0.0.0.0:0", "--api-key", KEY])
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(BOUND, stdout.next_line())
        .await
        .expect("first line in time")
        .expect("read")
        .expect("a line");
    assert!(
        first.starts_with("aai-live emulator listening on http://0.0.0.0:"),
        "{first}"
    );
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let warning = tokio::time::timeout(BOUND, stderr.next_line())
        .await
        .expect("warning in time")
        .expect("read")
        .expect("a line");
    assert!(
        warning.starts_with("warning: the emulator listens on 0.0.0.0:")
            && warning.contains("not a loopback address"),
        "{warning}"
    );
    let _ = child.start_kill();
}

#[tokio::test]
async fn sigterm_exits_with_status_0() {
    let mut emu = CliEmulator::spawn(&["--api-key", KEY], &[]).await;
    // Serving: a request round trip completes before the signal.
    assert_eq!(emu.mint(KEY).await.status(), 200);
    emu.sigterm().await;
    let status = emu.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn sigterm_with_an_open_session_still_exits_0_and_ends_it() {
    let mut emu = CliEmulator::spawn(&["--api-key", KEY], &[]).await;
    let mut ws = emu.connect(Some(KEY), "sample_rate=16000").await;
    begin_id(&read_until(&mut ws, |_| true).await);
    emu.sigterm().await;
    let status = emu.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}");
    // The client learns that the session is over (bounded read: a hang fails here).
    let out = common::read_for(&mut ws, BOUND).await;
    assert!(
        out.close.is_some() || out.abnormal,
        "the connection ended: {out:?}"
    );
}

#[tokio::test]
async fn the_connection_cap_is_lowered_to_fit_a_low_open_file_limit() {
    let home = TempDir::new().expect("tempdir");
    // `aai_live` sets up the environment; run the same binary under `ulimit -n 256`.
    let mut cmd = aai_live(home.path());
    let std_cmd = cmd.as_std_mut();
    let bin = std_cmd.get_program().to_owned();
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
        .arg(bin)
        .args(["emulate", "--listen", "127.0.0.1:0", "--api-key", KEY])
        .env_clear()
        .envs(std_cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(home.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = shell.spawn().expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(BOUND, stdout.next_line())
        .await
        .expect("first line in time")
        .expect("read")
        .expect("a line");
    let port: u16 = first
        .strip_prefix(FIRST_LINE)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let warning = tokio::time::timeout(BOUND, stderr.next_line())
        .await
        .expect("warning in time")
        .expect("read")
        .expect("a line");
    assert!(
        warning.contains("--max-connections 4096") && warning.contains("(256)"),
        "{warning}"
    );
    let stats: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/emulator/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("JSON");
    assert_eq!(stats["connections"]["max"], 256 - 64, "{stats}");
    let _ = child.start_kill();
}

/// After its first line, `emulate` prints the command lines that use it, with its key; a
/// newcomer copies them and they work: `token --emulator` mints, `run --emulator` streams.
#[tokio::test]
async fn the_emulator_prints_the_commands_that_use_it_and_they_work() {
    let mut emu = CliEmulator::spawn(&["--api-key", "local-test-key"], &[]).await;
    let mut printed = Vec::new();
    while printed.len() < 7 {
        match tokio::time::timeout(BOUND, emu.stdout.next_line()).await {
            Ok(Ok(Some(line))) => printed.push(line),
            other => panic!("the recipes end early ({other:?}): {printed:?}"),
        }
    }
    let text = printed.join("\n");
    let base = emu.base_url();
    assert!(
        text.contains("export ASSEMBLYAI_API_KEY=local-test-key"),
        "{text}"
    );
    for command in ["run", "doctor", "token"] {
        assert!(
            text.contains(&format!("aai-live {command} --emulator {base}")),
            "{command}: {text}"
        );
    }
    let home = TempDir::new().expect("tempdir");
    let token = aai_live(home.path())
        .args(["token", "--emulator", &base])
        .env("ASSEMBLYAI_API_KEY", "local-test-key")
        .output()
        .await
        .expect("token");
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&token.stdout).expect("token JSON");
    assert!(
        doc["token"].as_str().is_some_and(|t| !t.is_empty()),
        "{doc}"
    );
    let run = aai_live(home.path())
        .args([
            "run",
            "--emulator",
            &base,
            "--input",
            "test:tone",
            "--duration",
            "2s",
            "--headless",
        ])
        .env("ASSEMBLYAI_API_KEY", "local-test-key")
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let hello: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&run.stdout)
            .lines()
            .next()
            .expect("hello"),
    )
    .expect("JSON");
    assert_eq!(
        hello["endpoint"],
        format!("ws://127.0.0.1:{}/v3/ws", emu.port),
        "{hello}"
    );
    // AAI_LIVE_EMULATOR says the same.
    let token = aai_live(home.path())
        .args(["token"])
        .env("ASSEMBLYAI_API_KEY", "local-test-key")
        .env("AAI_LIVE_EMULATOR", &base)
        .output()
        .await
        .expect("token");
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
}
