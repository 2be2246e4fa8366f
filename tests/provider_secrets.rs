//! The token providers leak no secret: the API key, the bearer credential for a token server and
//! the minted tokens appear in no log line (ours and our dependencies', captured at TRACE from
//! every thread through the real logging set-up, `logging::subscriber`, `log` bridge included)
//! and in no error's `Display` or `Debug`, on success and on every error path, including servers
//! that echo the credential and the token back in their error bodies.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aai_live::config::{Config, ProviderKind};
use aai_live::provider::{self, PreMintOptions, PreMinter, ProviderError, TokenRequest};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::{Capture, KEY, assert_clean, config as emulator_config, start};

const BEARER: &str = "bearer-credential-0123456789abcdef";
const WRONG_KEY: &str = "wrong-api-key-fedcba9876543210";
const REQUEST: TokenRequest = TokenRequest {
    expires_in_seconds: 60,
    max_session_duration_seconds: Some(600),
};

/// The token our fake token server hands out, and echoes in its error pages.
const SERVER_TOKEN: &str = "AQICAHgSERVERtoken+/abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH==";

/// A token server that wants `BEARER`, and answers in turn: a token, a 500 echoing the
/// credential and the token, a 401 echoing them, an HTML page with the token, a plain token.
async fn token_server() -> String {
    let calls = Arc::new(Mutex::new(0_u32));
    let app = Router::new().fallback(move |headers: HeaderMap| {
        let calls = Arc::clone(&calls);
        async move {
            let n = {
                let mut calls = calls.lock().expect("lock");
                *calls += 1;
                *calls
            };
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert_eq!(auth, format!("Bearer {BEARER}"));
            let echo = serde_json::json!({
                "error": format!("credential {auth} refused"),
                "message": format!("last token was {SERVER_TOKEN}"),
            })
            .to_string();
            match n {
                1 => (
                    StatusCode::OK,
                    serde_json::json!({"token": SERVER_TOKEN}).to_string(),
                ),
                2 => (StatusCode::INTERNAL_SERVER_ERROR, echo),
                3 => (StatusCode::UNAUTHORIZED, echo),
                4 => (
                    StatusCode::OK,
                    format!("<html>token {SERVER_TOKEN} for {BEARER}</html>"),
                ),
                _ => (StatusCode::OK, SERVER_TOKEN.to_owned()),
            }
            .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/token")
}

/// Log an error the way a real caller would, and keep its texts.
fn report(error: &ProviderError, texts: &mut Vec<String>) {
    tracing::warn!(%error, ?error, class = %error.class(), "token fetch failed");
    texts.push(format!("{error} {error:?}"));
}

/// An environment holding `pairs`.
fn env(pairs: Vec<(&'static str, &'static str)>) -> impl Fn(&str) -> Option<String> {
    move |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// api-key: success, a wrong key, 429, 500; then the pre-minter over it.
async fn api_key_paths(
    emu: &aai_live::emulator::RunningEmulator,
    errors: &mut Vec<String>,
    tokens: &mut Vec<String>,
) {
    let mut config = Config::default().provider;
    config.api_key.token_url = Some(emu.token_url().parse().expect("url"));
    let api = provider::build_with(&config, &env(vec![("ASSEMBLYAI_API_KEY", KEY)]))
        .expect("builds")
        .provider;
    tracing::info!(?api, "provider");
    for _ in 0..2 {
        let token = api.fetch(&REQUEST).await.expect("token");
        tracing::info!(?token, %token, "minted");
        tokens.push(token.expose().to_owned());
    }
    let wrong = provider::build_with(&config, &env(vec![("ASSEMBLYAI_API_KEY", WRONG_KEY)]))
        .expect("builds")
        .provider;
    tracing::info!(?wrong, "provider");
    report(&wrong.fetch(&REQUEST).await.expect_err("401"), errors);
    for fault in ["token:429:7", "token:500"] {
        emu.add_fault(fault.parse().expect("fault"));
        report(&api.fetch(&REQUEST).await.expect_err(fault), errors);
    }

    let pm = PreMinter::new(Arc::clone(&api), REQUEST, PreMintOptions::default());
    pm.refresh_now();
    let state = pm
        .state()
        .wait_for(|s| matches!(s, provider::TokenState::Ready { .. }))
        .await
        .expect("ready")
        .clone();
    tracing::info!(?state, "pre-mint state");
    let token = pm.take().await.expect("token");
    tokens.push(token.expose().to_owned());
}

/// remote: success, 500 and 401 echoing secrets, HTML with a token, a plain token, and a
/// missing credential.
async fn remote_paths(errors: &mut Vec<String>) {
    let mut config = Config::default().provider;
    config.kind = ProviderKind::Remote;
    config.remote.url = Some(token_server().await.parse().expect("url"));
    config.remote.bearer_env = Some("CRED".into());
    config.remote.pass_lifetimes = true;
    let remote = provider::build_with(&config, &env(vec![("CRED", BEARER)]))
        .expect("builds")
        .provider;
    tracing::info!(?remote, "provider");
    for _ in 0..5 {
        match remote.fetch(&REQUEST).await {
            Ok(token) => tracing::info!(?token, "got"),
            Err(e) => report(&e, errors),
        }
    }
    let e = provider::build_with(&config, &env(vec![])).expect_err("no credential");
    report(&e, errors);
}

/// file: a token taken, then the same one again.
async fn file_paths(errors: &mut Vec<String>, tokens: &mut Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    let file_token = format!("{SERVER_TOKEN}FILE");
    std::fs::write(&path, &file_token).expect("write");
    tokens.push(file_token);
    let mut config = Config::default().provider;
    config.kind = ProviderKind::File;
    config.file.path = Some(path);
    config.file.wait = Duration::from_millis(200);
    let file = provider::build_with(&config, &env(vec![]))
        .expect("builds")
        .provider;
    let token = file.fetch(&REQUEST).await.expect("token");
    tracing::info!(?token, "from the file");
    report(&file.fetch(&REQUEST).await.expect_err("used"), errors);
}

#[test]
fn no_secret_in_logs_or_errors_of_any_provider() {
    let capture = Capture::default();
    // Global (every thread: the watcher, blocking reads, runtime workers): what `--log-level
    // trace` (RUST_LOG unset) writes, `log` records from our dependencies included.
    let subscriber = aai_live::logging::subscriber("trace", capture.clone()).expect("set-up");
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber in this test binary");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut errors = Vec::new();
    let mut tokens = vec![SERVER_TOKEN.to_owned()];
    runtime.block_on(async {
        let emu = start(emulator_config()).await;
        api_key_paths(&emu, &mut errors, &mut tokens).await;
        remote_paths(&mut errors).await;
        file_paths(&mut errors, &mut tokens).await;
        emu.shutdown().await;
    });
    drop(runtime);

    let logs = capture.text();
    assert!(
        logs.contains("minted a token"),
        "our logs were captured:\n{logs}"
    );
    assert!(
        logs.contains("reqwest") || logs.contains("hyper"),
        "dependencies' logs too"
    );
    let errors = errors.join("\n");
    assert!(
        errors.contains("HTTP 401") && errors.contains("HTTP 500"),
        "{errors}"
    );
    for (text, what) in [(&logs, "log"), (&errors, "error")] {
        assert_clean(text, KEY, &format!("API key in a {what}"));
        assert_clean(text, WRONG_KEY, &format!("wrong API key in a {what}"));
        assert_clean(text, BEARER, &format!("bearer credential in a {what}"));
        for token in &tokens {
            assert_clean(text, token, &format!("token in a {what}"));
        }
    }
}
