//! `aai-live token` as a user runs it: the binary in a child process against an emulator started
//! in this test, with the key in `ASSEMBLYAI_API_KEY` and the emulator's endpoint in
//! `AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL`, HOME and XDG directories isolated.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use aai_live::protocol::ServerMessage;
use aai_live::provider::file::{FileProvider, FileSettings};
use aai_live::provider::{TokenProvider, TokenRequest};
use common::{KEY, config as emulator_config, connect, read_until, start, terminate};

/// Run `aai-live token ARGS` with `env` on top of an isolated environment.
async fn aai_live_token(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aai-live"));
    cmd.arg("token")
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("AAI_LIVE_CONFIG")
        .env_remove("ASSEMBLYAI_API_KEY")
        .env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("AAI_LIVE__") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("aai-live token finishes")
        .expect("aai-live runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Everything the run left in the isolated home (logs included), to check for the key.
fn all_files_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("dir").filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&all_files_text(&path));
        } else if let Ok(content) = std::fs::read(&path) {
            text.push_str(&String::from_utf8_lossy(&content));
        }
    }
    text
}

async fn assert_opens_a_session(emu: &aai_live::emulator::RunningEmulator, token: &str) -> i64 {
    let mut ws = connect(emu, Some(token), "sample_rate=16000")
        .await
        .expect("connect");
    let messages = read_until(&mut ws, |m| matches!(m, ServerMessage::Begin(_))).await;
    let Some(ServerMessage::Begin(begin)) = messages.last() else {
        panic!("no Begin: {messages:?}");
    };
    let expires_at = begin.expires_at;
    terminate(&mut ws).await;
    expires_at
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_a_token_document_that_opens_a_session() {
    let emu = start(emulator_config()).await;
    let home = tempfile::tempdir().expect("tempdir");
    let token_url = emu.token_url();
    let env = [
        ("ASSEMBLYAI_API_KEY", KEY),
        ("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", token_url.as_str()),
    ];
    let out = aai_live_token(home.path(), &[], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let token = doc["token"].as_str().expect("token").to_owned();
    let left = doc["expires_in_seconds"]
        .as_u64()
        .expect("expires_in_seconds");
    assert!((55..=60).contains(&left), "{doc}");
    assert_eq!(doc["max_session_duration_seconds"], 10_800);
    let expires_at = doc["expires_at"].as_str().expect("expires_at");
    let at = humantime::parse_rfc3339(expires_at).expect("RFC 3339");
    assert!(at > SystemTime::now());
    assert!(doc["minted_at"].is_string());
    assert!(out.stdout.ends_with(b"\n"));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert_opens_a_session(&emu, &token).await;

    // Lifetimes from the command line.
    let out = aai_live_token(
        home.path(),
        &["--expires-in", "120", "--max-session-duration", "600"],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(doc["expires_in_seconds"].as_u64().expect("n") > 60, "{doc}");
    assert_eq!(doc["max_session_duration_seconds"], 600);
    let expires = assert_opens_a_session(&emu, doc["token"].as_str().expect("token")).await;
    assert!((expires - unix_now() - 600).abs() <= 5);

    // The key reached no file aai-live wrote (its logs).
    assert!(!all_files_text(home.path()).contains(KEY));

    let out = aai_live_token(home.path(), &["--expires-in", "0"], &env).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses out-of-range values"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_writes_a_private_file_the_file_provider_reads() {
    use std::os::unix::fs::PermissionsExt;
    let emu = start(emulator_config()).await;
    let home = tempfile::tempdir().expect("tempdir");
    let path = home.path().join("run").join("token.json");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    // An older, world-readable file is replaced, not rewritten in place.
    std::fs::write(&path, "old").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let token_url = emu.token_url();
    let out = aai_live_token(
        home.path(),
        &["--out", path.to_str().expect("utf-8 path")],
        &[
            ("ASSEMBLYAI_API_KEY", KEY),
            ("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", token_url.as_str()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "the token goes to the file only");
    let note = stderr(&out);
    assert!(
        note.contains("wrote token") && note.contains("token.json"),
        "{note}"
    );
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
    let written = doc["token"].as_str().expect("token").to_owned();
    assert!(
        !note.contains(&written),
        "the note names the token by fingerprint only"
    );
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    // The file provider takes it, with its deadline, and the token works.
    let provider = FileProvider::new(FileSettings {
        path: path.clone(),
        wait: Duration::from_millis(200),
        poll_interval: Duration::from_millis(50),
        remove_after_use: false,
        timeout: Duration::from_secs(5),
        watch: true,
    });
    let request = TokenRequest {
        expires_in_seconds: 60,
        max_session_duration_seconds: None,
    };
    let token = provider.fetch(&request).await.expect("token from the file");
    assert_eq!(token.expose(), written);
    assert!(token.redeem_by.is_some());
    assert_eq!(
        token.max_session_duration,
        Some(Duration::from_secs(10_800))
    );
    assert_opens_a_session(&emu, token.expose()).await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_with_the_class_code_and_no_secret() {
    let emu = start(emulator_config()).await;
    let home = tempfile::tempdir().expect("tempdir");
    let token_url = emu.token_url();
    let url_env = ("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", token_url.as_str());

    // No key: EX_CONFIG, saying where to put one.
    let out = aai_live_token(home.path(), &[], &[url_env]).await;
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("ASSEMBLYAI_API_KEY is not set"),
        "{}",
        stderr(&out)
    );

    // A wrong key: EX_NOPERM, naming the URL and the status, not the key.
    let wrong = "wrong-key-for-the-cli-test";
    let out = aai_live_token(home.path(), &[], &[url_env, ("ASSEMBLYAI_API_KEY", wrong)]).await;
    assert_eq!(out.status.code(), Some(77));
    let text = stderr(&out);
    assert!(
        text.contains("HTTP 401") && text.contains(&token_url),
        "{text}"
    );
    assert!(!text.contains(wrong), "{text}");
    assert!(out.stdout.is_empty());

    // Rate limited: EX_TEMPFAIL, with the server's Retry-After.
    emu.add_fault("token:429:7".parse().expect("fault"));
    let out = aai_live_token(home.path(), &[], &[url_env, ("ASSEMBLYAI_API_KEY", KEY)]).await;
    assert_eq!(out.status.code(), Some(75));
    assert!(stderr(&out).contains("retry after 7s"), "{}", stderr(&out));

    // An unwritable --out: EX_CANTCREAT, and the token is not printed instead.
    let out = aai_live_token(
        home.path(),
        &[
            "--out",
            home.path()
                .join("no/such/dir/t.json")
                .to_str()
                .expect("path"),
        ],
        &[url_env, ("ASSEMBLYAI_API_KEY", KEY)],
    )
    .await;
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    assert!(!all_files_text(home.path()).contains(wrong));
    assert!(!all_files_text(home.path()).contains(KEY));
    emu.shutdown().await;
}

/// A loopback token endpoint answering every request with `body` (HTTP 200, JSON).
async fn stub_token_endpoint(body: serde_json::Value) -> String {
    let app = axum::Router::new().fallback(move || {
        let body = body.to_string();
        async move { ([("content-type", "application/json")], body) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v3/token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_lifetimes_are_a_clear_error_not_a_panic() {
    // Once: `SystemTime + Duration` overflowed and the command panicked with exit code 101.
    let home = tempfile::tempdir().expect("tempdir");
    let token = "AQICAHgSTUBtokenABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789==";
    let url =
        stub_token_endpoint(serde_json::json!({"token": token, "expires_in_seconds": 9.3e18}))
            .await;
    let out = aai_live_token(
        home.path(),
        &[],
        &[
            ("ASSEMBLYAI_API_KEY", KEY),
            ("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", url.as_str()),
        ],
    )
    .await;
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{text}");
    assert!(
        text.contains("\"expires_in_seconds\" is 9.3e18 s") && text.contains("impossible"),
        "{text}"
    );
    assert!(!text.contains(token) && out.stdout.is_empty(), "{text}");

    // The file provider, with an expires_at in the year 9999.
    let path = home.path().join("token.json");
    std::fs::write(
        &path,
        serde_json::json!({"token": token, "expires_at": "9999-12-31T23:59:59Z"}).to_string(),
    )
    .expect("write");
    let out = aai_live_token(
        home.path(),
        &[],
        &[
            ("AAI_LIVE__PROVIDER__KIND", "file"),
            (
                "AAI_LIVE__PROVIDER__FILE__PATH",
                path.to_str().expect("path"),
            ),
            ("AAI_LIVE__PROVIDER__FILE__WAIT", "200ms"),
        ],
    )
    .await;
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{text}");
    assert!(
        text.contains("\"expires_at\"") && text.contains("impossible"),
        "{text}"
    );
    assert!(!text.contains(token), "{text}");
}
