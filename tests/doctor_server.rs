//! `aai-live doctor --server URL`: a token server checked from the outside — `aai-live serve`
//! (in-process, minting at the emulator) with and without a credential, with a foreign origin,
//! and a stub server that sends no rate-limit headers.

mod common;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use aai_live::doctor::{Check, Suite};
use aai_live::emulator::RunningEmulator;
use aai_live::provider::api_key::ApiKeyProvider;
use aai_live::secret::ApiKey;
use aai_live::server::{self, Auth, Credentials, RunningServer, ServerConfig, hash_credential};
use common::KEY;
use serde_json::Value;

const CREDENTIAL: &str = "doctor-credential-0123456789abcdef";
const ORIGIN: &str = "https://app.example.com";

async fn serve(emu: &RunningEmulator) -> RunningServer {
    serve_with(emu, |_| {}).await
}

/// `serve` with `tune` applied to its configuration.
async fn serve_with(emu: &RunningEmulator, tune: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let mut text = String::new();
    let _ = writeln!(text, "doctor:{}", hash_credential(CREDENTIAL));
    let credentials = Credentials::parse(&text, "test credentials").expect("credentials");
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        Auth::Bearer(credentials),
    );
    config.cors_origins = vec![ORIGIN.into()];
    tune(&mut config);
    let upstream = Arc::new(
        ApiKeyProvider::new(
            ApiKey::new(KEY),
            "the test key",
            emu.token_url().parse().expect("url"),
            Duration::from_secs(10),
        )
        .expect("provider"),
    );
    server::start(config, upstream).await.expect("serve starts")
}

struct Run {
    code: Option<i32>,
    steps: Vec<Value>,
    stdout: String,
}

impl Run {
    fn status(&self, step: &str) -> &Value {
        &self
            .steps
            .iter()
            .find(|s| s["step"] == step)
            .unwrap_or_else(|| panic!("no {step}: {}", self.stdout))["status"]
    }

    fn section(&self, step: &str) -> &Value {
        &self
            .steps
            .iter()
            .find(|s| s["step"] == step)
            .unwrap_or_else(|| panic!("no {step}: {}", self.stdout))["section"]
    }
}

async fn doctor(emu: &RunningEmulator, url: &str, args: &[&str]) -> Run {
    doctor_streaming_to(Some(&emu.ws_url()), url, args).await
}

/// `doctor --server url`, its sessions streaming to `streaming` (`None`: where the server says).
async fn doctor_streaming_to(streaming: Option<&str>, url: &str, args: &[&str]) -> Run {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = common::aai_live(home.path());
    cmd.args(["doctor", "--json", "--keep-going", "--server", url])
        .args(args)
        .env("DOCTOR_CREDENTIAL", CREDENTIAL);
    if let Some(streaming) = streaming {
        cmd.env("AAI_LIVE__STREAMING__URL", streaming);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("doctor ends")
        .expect("doctor");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Run {
        code: out.status.code(),
        steps: stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect(),
        stdout,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_credential_passes_every_step_and_its_token_opens_a_session() {
    let emu = common::start(common::config()).await;
    let server = serve(&emu).await;
    let url = format!("http://{}/token", server.addr);
    let run = doctor(
        &emu,
        &url,
        &["--credential-env", "DOCTOR_CREDENTIAL", "--origin", ORIGIN],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    // Every step of the model, in its order, and each passes.
    let names: Vec<&str> = run
        .steps
        .iter()
        .map(|s| s["step"].as_str().expect("step"))
        .collect();
    let model: Vec<&str> = Check::all(Suite::Server).map(Check::name).collect();
    assert_eq!(names, model, "{}", run.stdout);
    for step in model {
        assert_eq!(run.status(step), "pass", "{step}: {}", run.stdout);
    }
    assert!(!run.stdout.contains(CREDENTIAL));
    let sessions: Value = reqwest::get(format!("{}/emulator/sessions", emu.base_url()))
        .await
        .expect("sessions")
        .json()
        .await
        .expect("json");
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
    server.shutdown().await;
    emu.shutdown().await;
}

/// Without `[streaming] url`, the token's session opens where the server publishes
/// (`/config.json`'s `streaming_url`: here the emulator), as `run` does with the remote provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_opens_where_the_server_publishes() {
    let emu = common::start(common::config()).await;
    let ws = emu.ws_url();
    let server = serve_with(&emu, |config| {
        config.browser.streaming_url = ws.parse().expect("url");
    })
    .await;
    let url = format!("http://{}/token", server.addr);
    let run = doctor_streaming_to(None, &url, &["--credential-env", "DOCTOR_CREDENTIAL"]).await;
    assert_eq!(run.status("server-redeem"), "pass", "{}", run.stdout);
    let sessions: Value = reqwest::get(format!("{}/emulator/sessions", emu.base_url()))
        .await
        .expect("sessions")
        .json()
        .await
        .expect("json");
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
    server.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_credential_and_with_a_wrong_one() {
    let emu = common::start(common::config()).await;
    let server = serve(&emu).await;
    let url = format!("http://{}/token", server.addr);
    let run = doctor(&emu, &url, &[]).await;
    assert_eq!(run.status("server-no-credential"), "pass", "{}", run.stdout);
    assert_eq!(run.status("server-credential"), "skip", "{}", run.stdout);
    assert_eq!(run.status("server-redeem"), "skip", "{}", run.stdout);
    assert_eq!(run.code, Some(0), "{}", run.stdout);

    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("credential");
    std::fs::write(&file, "not-the-credential-0123456789").expect("write");
    let run = doctor(
        &emu,
        &url,
        &["--credential-file", file.to_str().expect("path")],
    )
    .await;
    assert_eq!(run.status("server-credential"), "fail", "{}", run.stdout);
    assert_eq!(run.section("server-credential"), "serve-401");
    assert_eq!(run.code, Some(1));
    assert!(!run.stdout.contains("not-the-credential"));
    server.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused_by_cors() {
    let emu = common::start(common::config()).await;
    let server = serve(&emu).await;
    let url = format!("http://{}/token", server.addr);
    let run = doctor(
        &emu,
        &url,
        &[
            "--credential-env",
            "DOCTOR_CREDENTIAL",
            "--origin",
            "https://evil.example",
        ],
    )
    .await;
    assert_eq!(run.status("server-cors"), "fail", "{}", run.stdout);
    assert_eq!(run.section("server-cors"), "cors");
    assert_eq!(
        run.status("server-redeem"),
        "pass",
        "keep-going: {}",
        run.stdout
    );
    assert_eq!(run.code, Some(1));
    server.shutdown().await;
    emu.shutdown().await;
}

/// A token server that mints at the emulator but sends no rate-limit headers (and, on request,
/// no `Cache-Control: no-store`).
async fn stub(emu: &RunningEmulator, no_store: bool) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let token_url = emu.token_url();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let token_url = token_url.clone();
            tokio::spawn(async move {
                let mut buf = vec![0_u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let (status, body) = if head.starts_with("POST /token") {
                    let body: Value = reqwest::Client::new()
                        .get(format!("{token_url}?expires_in_seconds=60"))
                        .header("Authorization", KEY)
                        .send()
                        .await
                        .expect("mint")
                        .json()
                        .await
                        .expect("json");
                    ("200 OK", body.to_string())
                } else {
                    ("404 Not Found", "{}".to_owned())
                };
                let cache = if no_store {
                    "Cache-Control: no-store\r\n"
                } else {
                    ""
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{cache}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_rate_limit_headers_is_warned_about() {
    let emu = common::start(common::config()).await;
    let (port, task) = stub(&emu, true).await;
    let url = format!("http://127.0.0.1:{port}/token");
    let run = doctor(&emu, &url, &[]).await;
    assert_eq!(
        run.status("server-rate-limit-headers"),
        "warn",
        "{}",
        run.stdout
    );
    assert_eq!(
        run.section("server-rate-limit-headers"),
        "rate-limit-headers"
    );
    assert_eq!(run.status("server-cache-control"), "pass", "{}", run.stdout);
    assert_eq!(run.status("server-redeem"), "pass", "{}", run.stdout);
    assert_eq!(run.code, Some(0), "warnings only: {}", run.stdout);

    let (port, task2) = stub(&emu, false).await;
    let url = format!("http://127.0.0.1:{port}/token");
    let run = doctor(&emu, &url, &[]).await;
    assert_eq!(run.status("server-cache-control"), "fail", "{}", run.stdout);
    assert_eq!(run.section("server-cache-control"), "no-store");
    task.abort();
    task2.abort();
    emu.shutdown().await;
}
