//! `aai-live doctor`, the real binary against the emulator: every step passing with exactly one
//! token minted and one session opened (counted by the emulator's control API), then one test
//! per failing step made with the emulator's faults and bad set-ups, each asserting the failing
//! step, its cause (the troubleshooting section) and that later steps did not run.

mod common;

use std::path::Path;
use std::time::Duration;

use aai_live::doctor::{Check, Suite};
use aai_live::emulator::{EmulatorConfig, RunningEmulator};
use common::KEY;
use serde_json::Value;

/// Every step of `aai-live doctor`, in report order, from the model the runs are built on: a step
/// the model has and the run never reports (or reports out of place) fails the full runs below.
fn steps() -> Vec<&'static str> {
    Check::all(Suite::Run).map(Check::name).collect()
}

struct Run {
    code: Option<i32>,
    steps: Vec<Value>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn step(&self, name: &str) -> &Value {
        self.steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {}", self.stdout))
    }

    fn names(&self) -> Vec<&str> {
        self.steps
            .iter()
            .map(|s| s["step"].as_str().expect("step"))
            .collect()
    }

    /// `name` failed with `section`, and no step after it ran.
    fn failed_at(&self, name: &str, section: &str) {
        let step = self.step(name);
        assert_eq!(step["status"], "fail", "{}", self.stdout);
        assert_eq!(step["section"], section, "{}", self.stdout);
        assert!(
            step["cause"].as_str().is_some_and(|c| !c.is_empty()),
            "{step}"
        );
        assert!(
            step["fix"].as_str().is_some_and(|f| !f.is_empty()),
            "{step}"
        );
        assert_eq!(
            self.names().last(),
            Some(&name),
            "later steps ran: {}",
            self.stdout
        );
        assert_eq!(self.code, Some(1), "{}", self.stderr);
    }
}

/// `aai-live doctor --json` with the emulator's endpoints, `key` in ASSEMBLYAI_API_KEY, more
/// environment and arguments.
async fn doctor(
    home: &Path,
    emu: Option<&RunningEmulator>,
    key: &str,
    env: &[(&str, String)],
    args: &[&str],
) -> Run {
    let mut cmd = common::aai_live(home);
    cmd.arg("doctor").arg("--json").args(args);
    for proxy in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(proxy);
    }
    cmd.env("ASSEMBLYAI_API_KEY", key);
    if let Some(emu) = emu {
        cmd.env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", emu.token_url())
            .env("AAI_LIVE__STREAMING__URL", emu.ws_url());
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("doctor finishes")
        .expect("doctor runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let steps = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    Run {
        code: out.status.code(),
        steps,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn control(emu: &RunningEmulator, path: &str) -> Value {
    reqwest::get(format!("{}{path}", emu.base_url()))
        .await
        .expect("control API")
        .json()
        .await
        .expect("JSON")
}

async fn add_fault(emu: &RunningEmulator, rule: Value) {
    let status = reqwest::Client::new()
        .post(format!("{}/emulator/faults", emu.base_url()))
        .json(&rule)
        .send()
        .await
        .expect("fault")
        .status();
    assert!(status.is_success(), "{status}");
}

fn emulator(skew_ms: i64) -> EmulatorConfig {
    EmulatorConfig {
        clock_skew_ms: skew_ms,
        ..common::config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_passes_with_one_token_and_one_session() {
    let emu = common::start(emulator(0)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(home.path(), Some(&emu), KEY, &[], &["--input", "test:tone"]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.names(), steps(), "{}", run.stdout);
    for step in &run.steps {
        assert_eq!(step["status"], "pass", "{step}");
        assert!(step["fix"].is_null() && step["section"].is_null(), "{step}");
    }
    assert!(
        run.step("terminate")["detail"]
            .as_str()
            .expect("detail")
            .contains("Termination received"),
        "{}",
        run.stdout
    );
    let stats = control(&emu, "/emulator/stats").await;
    assert_eq!(stats["tokens"]["minted"], 1, "{stats}");
    assert_eq!(stats["tokens"]["redeemed"], 1, "{stats}");
    let sessions = control(&emu, "/emulator/sessions").await;
    let sessions = sessions.as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["terminated_by_client"], true, "{sessions:?}");
    assert!(!run.stdout.contains(KEY) && !run.stdout.contains("AQICAHg"));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_report_marks_and_ascii() {
    let emu = common::start(emulator(0)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = common::aai_live(home.path());
    cmd.args(["doctor", "--input", "test:tone"])
        .env("ASSEMBLYAI_API_KEY", "wrong-key")
        .env("LANG", "en_US.UTF-8")
        .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", emu.token_url())
        .env("AAI_LIVE__STREAMING__URL", emu.ws_url());
    let out = cmd.output().await.expect("doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.starts_with("✔ config"), "{text}");
    assert!(text.contains("✘ token "), "{text}");
    assert!(
        text.contains("    more:  aai-live explain token-401"),
        "{text}"
    );
    assert!(!text.contains("wrong-key"), "{text}");
    let mut cmd = common::aai_live(home.path());
    cmd.args(["doctor", "--ascii", "--input", "test:tone"])
        .env("ASSEMBLYAI_API_KEY", "wrong-key")
        .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", emu.token_url());
    let out = cmd.output().await.expect("doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.is_ascii(), "{text}");
    assert!(text.contains("[FAIL] token"), "{text}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_exits_2() {
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(
        home.path(),
        None,
        KEY,
        &[("AAI_LIVE__STREAMING__SAMPLE_RAT", "16000".to_owned())],
        &[],
    )
    .await;
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert_eq!(run.names(), ["config"]);
    assert_eq!(run.step("config")["section"], "config");
    assert!(
        run.step("config")["detail"]
            .as_str()
            .expect("detail")
            .contains("sample_rat"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_at_token() {
    let emu = common::start(emulator(0)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(
        home.path(),
        Some(&emu),
        "wrong-key",
        &[],
        &["--input", "test:tone"],
    )
    .await;
    run.failed_at("token", "token-401");
    assert!(run.stdout.contains("Invalid API key"), "{}", run.stdout);
    assert!(!run.stdout.contains("wrong-key"));
    assert_eq!(
        control(&emu, "/emulator/stats").await["tokens"]["minted"],
        0
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_going_reports_dependents_skipped_and_runs_the_rest() {
    let emu = common::start(emulator(0)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(
        home.path(),
        Some(&emu),
        "wrong-key",
        &[],
        &["--keep-going", "--input", "test:tone"],
    )
    .await;
    assert_eq!(run.code, Some(1));
    assert_eq!(run.names(), steps(), "{}", run.stdout);
    for skipped in ["streaming-endpoint", "begin", "clock", "terminate"] {
        assert_eq!(run.step(skipped)["status"], "skip", "{}", run.stdout);
        assert_eq!(
            run.step(skipped)["detail"],
            "skipped: no token (token failed)",
            "{}",
            run.stdout
        );
    }
    assert_eq!(run.step("input")["status"], "pass");
    assert_eq!(run.step("files")["status"], "pass");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_401_from_the_endpoint() {
    let emu = common::start(emulator(0)).await;
    add_fault(&emu, serde_json::json!({"spec": "token:401"})).await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(home.path(), Some(&emu), KEY, &[], &["--input", "test:tone"]).await;
    run.failed_at("token", "token-401");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_429_names_the_retry_after() {
    let emu = common::start(emulator(0)).await;
    add_fault(&emu, serde_json::json!({"spec": "token:429:7"})).await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(home.path(), Some(&emu), KEY, &[], &["--input", "test:tone"]).await;
    run.failed_at("token", "token-429");
    let detail = run.step("token")["detail"].as_str().expect("detail");
    assert!(detail.contains("retry after 7s"), "{detail}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_slower_than_provider_timeout() {
    let emu = common::start(emulator(0)).await;
    add_fault(&emu, serde_json::json!({"spec": "token-delay:3s"})).await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(
        home.path(),
        Some(&emu),
        KEY,
        &[("AAI_LIVE__PROVIDER__TIMEOUT", "1s".to_owned())],
        &["--input", "test:tone"],
    )
    .await;
    run.failed_at("token", "token-timeout");
    assert!(
        run.step("token")["detail"]
            .as_str()
            .expect("detail")
            .contains("provider.timeout"),
        "{}",
        run.stdout
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_before_begin_with_token_already_used() {
    let emu = common::start(emulator(0)).await;
    add_fault(
        &emu,
        serde_json::json!({
            "kind": "close-before-begin",
            "code": 1008,
            "reason": "Unauthorized Connection: Temporary token already used"
        }),
    )
    .await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(home.path(), Some(&emu), KEY, &[], &["--input", "test:tone"]).await;
    assert_eq!(run.step("streaming-endpoint")["status"], "pass");
    run.failed_at("begin", "1008-token-used");
    let detail = run.step("begin")["detail"].as_str().expect("detail");
    assert!(
        detail.contains("1008") && detail.contains("already used"),
        "{detail}"
    );
    emu.shutdown().await;
}

/// A "token server" that answers every request with an HTML page (a captive portal).
async fn html_server() -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0_u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = "<!doctype html><html><body>Please log in to the network</body></html>";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_server_answering_html() {
    let (port, server) = html_server().await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(
        home.path(),
        None,
        KEY,
        &[
            ("AAI_LIVE__PROVIDER__KIND", "remote".to_owned()),
            (
                "AAI_LIVE__PROVIDER__REMOTE__URL",
                format!("http://127.0.0.1:{port}/token"),
            ),
        ],
        &["--input", "test:tone"],
    )
    .await;
    assert_eq!(
        run.step("token-endpoint")["status"],
        "pass",
        "{}",
        run.stdout
    );
    run.failed_at("token", "token-html");
    assert!(run.stdout.contains("<!doctype html>"), "{}", run.stdout);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_url_with_a_wrong_path() {
    let emu = common::start(emulator(0)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let wrong = emu.ws_url().replace("/v3/ws", "/v3/wrong");
    let run = doctor(
        home.path(),
        Some(&emu),
        KEY,
        &[("AAI_LIVE__STREAMING__URL", wrong)],
        &["--input", "test:tone"],
    )
    .await;
    run.failed_at("streaming-endpoint", "ws-http");
    assert!(
        run.stdout.contains("refused the connection with HTTP 4"),
        "{}",
        run.stdout
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_token_file() {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("token.json");
    std::fs::write(
        &file,
        r#"{"token":"stale-token-0123456789abcdef0123456789","expires_at":"2020-01-01T00:00:00Z"}"#,
    )
    .expect("write");
    let run = doctor(
        home.path(),
        None,
        KEY,
        &[
            ("AAI_LIVE__PROVIDER__KIND", "file".to_owned()),
            ("AAI_LIVE__PROVIDER__FILE__PATH", file.display().to_string()),
        ],
        &["--input", "test:tone"],
    )
    .await;
    run.failed_at("token-endpoint", "token-file-stale");
    assert!(
        run.stdout.contains("2020-01-01T00:00:00Z"),
        "{}",
        run.stdout
    );
    assert!(
        std::fs::read_to_string(&file)
            .expect("still there")
            .contains("stale-token")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_token_file_is_not_redeemed_without_redeem() {
    let emu = common::start(emulator(0)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let token = common::mint_token(&emu, "expires_in_seconds=600").await;
    let file = home.path().join("token");
    std::fs::write(&file, &token).expect("write");
    let env = [
        ("AAI_LIVE__PROVIDER__KIND", "file".to_owned()),
        ("AAI_LIVE__PROVIDER__FILE__PATH", file.display().to_string()),
    ];
    let run = doctor(
        home.path(),
        Some(&emu),
        KEY,
        &env,
        &["--input", "test:tone"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(run.step("token-endpoint")["status"], "pass");
    assert_eq!(run.step("token")["status"], "skip");
    assert_eq!(
        control(&emu, "/emulator/stats").await["tokens"]["redeemed"],
        0
    );
    let run = doctor(
        home.path(),
        Some(&emu),
        KEY,
        &env,
        &["--redeem", "--input", "test:tone"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(run.step("begin")["status"], "pass");
    assert_eq!(
        control(&emu, "/emulator/stats").await["tokens"]["redeemed"],
        1
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock() {
    let emu = common::start(emulator(30_000)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(
        home.path(),
        Some(&emu),
        KEY,
        &[(
            "AAI_LIVE__PROVIDER__MAX_SESSION_DURATION_SECONDS",
            "3600".to_owned(),
        )],
        &["--input", "test:tone"],
    )
    .await;
    assert_eq!(run.step("begin")["status"], "pass");
    run.failed_at("clock", "clock-skew");
    let detail = run.step("clock")["detail"].as_str().expect("detail");
    // expires_at is in whole seconds, rounded up: 30 s of skew reads as 30 or 31.
    assert!(
        detail.contains("30 s later") || detail.contains("31 s later"),
        "{detail}"
    );
    // The session was still closed, and only one was opened.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = control(&emu, "/emulator/stats").await;
    assert_eq!(stats["sessions"]["open"], 0, "{stats}");
    assert_eq!(stats["tokens"]["minted"], 1, "{stats}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_silent_input_is_a_warning() {
    let emu = common::start(emulator(0)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(
        home.path(),
        Some(&emu),
        KEY,
        &[],
        &["--input", "test:silence"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let input = run.step("input");
    assert_eq!(input["status"], "warn");
    assert_eq!(input["section"], "silent-input");
    assert!(
        input["detail"]
            .as_str()
            .expect("detail")
            .contains("all zero")
    );
    assert_eq!(run.names(), steps());
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_at_the_token_endpoint_with_tls() {
    let cert = common::SelfSigned::generate();
    let emu = aai_live::emulator::start(common::config(), "127.0.0.1:0", Some(cert.files()))
        .await
        .expect("TLS emulator");
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(home.path(), Some(&emu), KEY, &[], &["--input", "test:tone"]).await;
    assert!(emu.token_url().starts_with("https://"));
    run.failed_at("token-endpoint", "tls");
    assert!(run.stdout.contains("certificate"), "{}", run.stdout);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_and_a_port_that_refuses() {
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(
        home.path(),
        None,
        KEY,
        &[(
            "AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL",
            "https://no-such-host.invalid/v3/token".to_owned(),
        )],
        &["--input", "test:tone"],
    )
    .await;
    run.failed_at("token-endpoint", "dns");
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let run = doctor(
        home.path(),
        None,
        KEY,
        &[(
            "AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL",
            format!("http://127.0.0.1:{port}/v3/token"),
        )],
        &["--input", "test:tone"],
    )
    .await;
    run.failed_at("token-endpoint", "tcp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_close_before_begin() {
    let emu = common::start(emulator(0)).await;
    add_fault(&emu, serde_json::json!({"spec": "close-before-begin"})).await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(home.path(), Some(&emu), KEY, &[], &["--input", "test:tone"]).await;
    run.failed_at("begin", "close-before-begin");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_termination_after_terminate() {
    let emu = common::start(emulator(0)).await;
    add_fault(&emu, serde_json::json!({"spec": "no-termination"})).await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(
        home.path(),
        Some(&emu),
        KEY,
        &[("AAI_LIVE__SESSION__TERMINATE_TIMEOUT", "1s".to_owned())],
        &["--input", "test:tone"],
    )
    .await;
    run.failed_at("terminate", "no-termination");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_max_session_duration_is_3009() {
    let emu = common::start(EmulatorConfig {
        sessions_per_minute: Some(0),
        ..emulator(0)
    })
    .await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = doctor(home.path(), Some(&emu), KEY, &[], &["--input", "test:tone"]).await;
    run.failed_at("begin", "3009");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_status_names_its_section() {
    let emu = common::start(emulator(0)).await;
    let home = tempfile::tempdir().expect("tempdir");
    for (status, section) in [
        (400, "token-400"),
        (403, "token-403"),
        (404, "token-404"),
        (413, "token-413"),
        (500, "token-5xx"),
        (503, "token-5xx"),
    ] {
        add_fault(&emu, serde_json::json!({"spec": format!("token:{status}")})).await;
        let run = doctor(home.path(), Some(&emu), KEY, &[], &["--input", "test:tone"]).await;
        run.failed_at("token", section);
        let detail = run.step("token")["detail"].as_str().expect("detail");
        assert!(detail.contains(&format!("HTTP {status}")), "{detail}");
    }
    assert_eq!(
        control(&emu, "/emulator/stats").await["tokens"]["minted"],
        0
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_others_can_read_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let emu = common::start(emulator(0)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let key_file = home.path().join("key");
    std::fs::write(&key_file, KEY).expect("write");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let run = doctor(
        home.path(),
        Some(&emu),
        "unused",
        &[(
            "AAI_LIVE__PROVIDER__API_KEY__KEY_FILE",
            key_file.display().to_string(),
        )],
        &["--input", "test:tone"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let secret = run.step("secret");
    assert_eq!(secret["status"], "warn", "{}", run.stdout);
    assert_eq!(secret["section"], "secret-permissions");
    assert!(
        secret["detail"]
            .as_str()
            .expect("detail")
            .contains("readable by others"),
        "{secret}"
    );
    assert_eq!(run.step("config")["status"], "pass", "{}", run.stdout);
    assert_eq!(run.step("token")["status"], "pass", "{}", run.stdout);
    emu.shutdown().await;
}

/// `doctor --emulator URL`, as `aai-live emulate` suggests it, on a machine with no sound card
/// (this one, and CI's): every step passes but the default input, which nobody chose, and which
/// only warns; no passing line shows an error status; and against the emulator a wrong key's fix
/// speaks of the emulator's key, not of the AssemblyAI dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_with_emulator_passes_on_a_machine_without_a_sound_card() {
    let emu = common::start(emulator(0)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let base = emu.base_url();
    let run = doctor(home.path(), None, KEY, &[], &["--emulator", &base]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.names(), steps());
    for step in &run.steps {
        let status = step["status"].as_str().expect("status");
        let detail = step["detail"].as_str().expect("detail");
        if step["step"] == "input" {
            // Without a microphone a warning naming what works; with one, a pass.
            assert!(status == "pass" || status == "warn", "{step}");
            if status == "warn" {
                assert!(detail.contains("--input file:PATH"), "{step}");
            }
            continue;
        }
        assert_eq!(status, "pass", "{step}");
        for code in ["(4", "(5"] {
            assert!(
                !detail.contains(code),
                "an error status on a passing line: {step}"
            );
        }
    }
    let wrong = doctor(
        home.path(),
        None,
        "not-the-key",
        &[],
        &["--emulator", &base],
    )
    .await;
    wrong.failed_at("token", "token-401");
    let fix = wrong.step("token")["fix"].as_str().expect("fix").to_owned();
    assert!(fix.contains("emulator"), "{fix}");
    assert!(!fix.contains("AssemblyAI dashboard"), "{fix}");
    emu.shutdown().await;
}

/// Meeting mode: every labelled input is checked, each finding labelled; the step is as bad as
/// the worst (a missing file fails it, whatever the other input does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_of_a_meeting_is_checked() {
    let emu = common::start(emulator(0)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let meeting = |them: &str| {
        vec![
            ("AAI_LIVE__INPUTS__YOU", "test:tone".to_owned()),
            ("AAI_LIVE__INPUTS__THEM", them.to_owned()),
        ]
    };
    let run = doctor(home.path(), Some(&emu), KEY, &meeting("test:tone"), &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let input = run.step("input");
    assert_eq!(input["status"], "pass");
    let detail = input["detail"].as_str().expect("detail");
    assert!(
        detail.contains("You: test:tone: ") && detail.contains("Them: test:tone: "),
        "{detail}"
    );

    let run = doctor(
        home.path(),
        Some(&emu),
        KEY,
        &meeting("file:missing.wav"),
        &[],
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let input = run.step("input");
    assert_eq!(input["status"], "fail");
    let detail = input["detail"].as_str().expect("detail");
    assert!(
        detail.contains("You: ") && detail.contains("frames"),
        "{detail}"
    );
    assert!(
        detail.contains("Them: cannot open the input") && detail.contains("missing.wav"),
        "{detail}"
    );
    emu.shutdown().await;
}
