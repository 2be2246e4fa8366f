//! The three token providers against the in-process emulator and loopback test servers: success
//! for each, every error class, every remote answer shape, and the file provider's waiting
//! (used token, fresh token by rename, timeout, half-written file).

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aai_live::config::{Config, HttpMethod, ProviderConfig, ProviderKind};
use aai_live::protocol::{Region, ServerMessage};
use aai_live::provider::file::{FileProvider, FileSettings};
use aai_live::provider::{
    self, ProviderError, ProviderErrorClass, TokenProvider, TokenRequest, build_with,
};
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{KEY, config as emulator_config, connect, read_until, start, terminate};

/// A realistic token: long, base64 with `+`, `/` and padding.
const TOKEN: &str = "AQICAHgEXAMPLEtokenABCDEFGHIJKLMNOPQRSTUVWXYZ+/abcdefghijklmnop0123456789==";
const REQUEST: TokenRequest = TokenRequest {
    expires_in_seconds: 60,
    max_session_duration_seconds: Some(600),
};

fn env_with(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn api_key_config(token_url: &str) -> ProviderConfig {
    let mut config = Config::default().provider;
    config.api_key.token_url = Some(token_url.parse().expect("url"));
    config.timeout = Duration::from_secs(5);
    config
}

fn build(config: &ProviderConfig, env: &[(&str, &str)]) -> Arc<dyn TokenProvider> {
    build_with(config, &env_with(env))
        .expect("provider builds")
        .provider
}

fn build_err(config: &ProviderConfig, env: &[(&str, &str)]) -> ProviderError {
    build_with(config, &env_with(env)).expect_err("provider does not build")
}

/// A failure's Display and Debug, checked to be free of `secrets`.
fn text(error: &ProviderError, secrets: &[&str]) -> String {
    let shown = format!("{error} / {error:?}");
    for secret in secrets {
        assert!(!shown.contains(secret), "secret leaked: {shown}");
    }
    error.to_string()
}

// ---------------------------------------------------------------------------------------------
// A scripted loopback HTTP server

#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Answer {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    fn json(status: u16, body: &serde_json::Value) -> Self {
        Self::new(status, body.to_string()).header("content-type", "application/json")
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
}

#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct TestServer {
    addr: SocketAddr,
    script: Script,
}

impl TestServer {
    async fn start() -> Self {
        async fn handle(
            State(script): State<Script>,
            method: Method,
            headers: HeaderMap,
            RawQuery(query): RawQuery,
        ) -> Response {
            script.seen.lock().expect("lock").push(Seen {
                method,
                query,
                headers,
            });
            let answer = script.answers.lock().expect("lock").pop_front();
            let Some(answer) = answer else {
                return (StatusCode::IM_A_TEAPOT, "no scripted answer").into_response();
            };
            tokio::time::sleep(answer.delay).await;
            let mut response = (
                StatusCode::from_u16(answer.status).expect("status"),
                answer.body,
            )
                .into_response();
            for (name, value) in answer.headers {
                response
                    .headers_mut()
                    .insert(name, value.parse().expect("header value"));
            }
            response
        }
        let script = Script::default();
        let app = Router::new().fallback(handle).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, script }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn answer(&self, answer: Answer) {
        self.script.answers.lock().expect("lock").push_back(answer);
    }

    fn last_seen(&self) -> Seen {
        self.script
            .seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("a request arrived")
    }
}

/// A loopback port with nothing listening.
async fn refused_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------------------------
// api-key

#[tokio::test]
async fn api_key_mints_a_token_the_emulator_accepts() {
    let emu = start(emulator_config()).await;
    let provider = build(
        &api_key_config(&emu.token_url()),
        &[("ASSEMBLYAI_API_KEY", KEY)],
    );
    assert_eq!(provider.name(), "api-key");
    assert_eq!(provider.source(), emu.token_url());
    let before = SystemTime::now();
    let token = provider.fetch(&REQUEST).await.expect("token");
    let after = SystemTime::now();
    assert_eq!(token.provider, "api-key");
    let redeem_by = token.redeem_by.expect("the window is known");
    assert!(
        redeem_by >= before + Duration::from_secs(60)
            && redeem_by <= after + Duration::from_secs(60)
    );
    assert_eq!(token.max_session_duration, Some(Duration::from_secs(600)));

    // Two fetches, two distinct tokens.
    let second = provider.fetch(&REQUEST).await.expect("token");
    assert_ne!(second.fingerprint(), token.fingerprint());

    // The token opens a session whose expiry follows max_session_duration_seconds.
    let mut ws = connect(&emu, Some(token.expose()), "sample_rate=16000")
        .await
        .expect("connect");
    let messages = read_until(&mut ws, |m| matches!(m, ServerMessage::Begin(_))).await;
    let Some(ServerMessage::Begin(begin)) = messages.last() else {
        panic!("no Begin: {messages:?}");
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!((begin.expires_at - now - 600).abs() <= 5, "{begin:?}");
    terminate(&mut ws).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn api_key_sends_the_raw_key_and_the_lifetimes() {
    let server = TestServer::start().await;
    server.answer(Answer::json(
        200,
        &serde_json::json!({"token": TOKEN, "expires_in_seconds": 45}),
    ));
    let provider = build(
        &api_key_config(&server.url("/v3/token")),
        &[("ASSEMBLYAI_API_KEY", " sk-raw-key \n")],
    );
    let token = provider.fetch(&REQUEST).await.expect("token");
    assert_eq!(token.expose(), TOKEN);
    let seen = server.last_seen();
    assert_eq!(seen.method, Method::GET);
    assert_eq!(
        seen.headers["authorization"], "sk-raw-key",
        "raw key, trimmed, no Bearer"
    );
    assert_eq!(seen.headers["cache-control"], "no-store");
    assert_eq!(
        seen.query.as_deref(),
        Some("expires_in_seconds=60&max_session_duration_seconds=600")
    );
    // The window the service granted counts, not the one asked for.
    let left = token
        .redeem_by
        .expect("window")
        .duration_since(SystemTime::now())
        .expect("future");
    assert!(left <= Duration::from_secs(45) && left > Duration::from_secs(40));
}

#[tokio::test]
async fn api_key_error_classes() {
    let emu = start(emulator_config()).await;
    let config = api_key_config(&emu.token_url());
    let location = emu.token_url();

    // 401: a wrong key.
    let provider = build(&config, &[("ASSEMBLYAI_API_KEY", "wrong-key-123456")]);
    let e = provider.fetch(&REQUEST).await.expect_err("401");
    assert_eq!(e.class(), ProviderErrorClass::Rejected);
    assert_eq!(e.status(), Some(401));
    assert!(e.is_fatal());
    let shown = text(&e, &["wrong-key-123456"]);
    for part in [
        location.as_str(),
        "HTTP 401",
        "Invalid API key",
        "ASSEMBLYAI_API_KEY",
    ] {
        assert!(shown.contains(part), "{part:?} missing from {shown}");
    }

    let provider = build(&config, &[("ASSEMBLYAI_API_KEY", KEY)]);

    // 400: lifetimes the service refuses.
    let bad = TokenRequest {
        expires_in_seconds: 0,
        max_session_duration_seconds: None,
    };
    let e = provider.fetch(&bad).await.expect_err("400");
    assert_eq!(e.class(), ProviderErrorClass::InvalidConfig);
    let shown = text(&e, &[KEY]);
    assert!(
        shown.contains("HTTP 400") && shown.contains("expires_in_seconds must be"),
        "{shown}"
    );
    assert!(shown.contains("provider.expires_in_seconds"), "{shown}");

    // 429 with Retry-After.
    emu.add_fault("token:429:7".parse().expect("fault"));
    let e = provider.fetch(&REQUEST).await.expect_err("429");
    assert_eq!(e.class(), ProviderErrorClass::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert!(!e.is_fatal());
    let shown = text(&e, &[KEY]);
    assert!(
        shown.contains("HTTP 429") && shown.contains("retry after 7s"),
        "{shown}"
    );

    // 500.
    emu.add_fault("token:500".parse().expect("fault"));
    let e = provider.fetch(&REQUEST).await.expect_err("500");
    assert_eq!(e.class(), ProviderErrorClass::Transient);
    assert_eq!(e.status(), Some(500));
    assert!(text(&e, &[KEY]).contains("Internal Server Error"));

    // Timeout: the emulator answers after 2 s, the provider waits 200 ms.
    let mut quick = config.clone();
    quick.timeout = Duration::from_millis(200);
    let impatient = build(&quick, &[("ASSEMBLYAI_API_KEY", KEY)]);
    emu.add_fault("token-delay:2s".parse().expect("fault"));
    let e = impatient.fetch(&REQUEST).await.expect_err("timeout");
    assert_eq!(e.class(), ProviderErrorClass::Transient);
    let shown = text(&e, &[KEY]);
    assert!(
        shown.contains("within 200ms") && shown.contains(&location),
        "{shown}"
    );

    // After all that, minting works again.
    provider.fetch(&REQUEST).await.expect("recovered");
    emu.shutdown().await;

    // Connection refused.
    let port = refused_port().await;
    let refused = build(
        &api_key_config(&format!("http://127.0.0.1:{port}/v3/token")),
        &[("ASSEMBLYAI_API_KEY", KEY)],
    );
    let e = refused.fetch(&REQUEST).await.expect_err("refused");
    assert_eq!(e.class(), ProviderErrorClass::Transient);
    let shown = text(&e, &[KEY]);
    assert!(
        shown.contains("cannot connect") && shown.contains(&port.to_string()),
        "{shown}"
    );
}

#[tokio::test]
async fn api_key_malformed_answers() {
    let server = TestServer::start().await;
    let provider = build(
        &api_key_config(&server.url("/v3/token")),
        &[("ASSEMBLYAI_API_KEY", KEY)],
    );
    server.answer(Answer::new(200, "<html>maintenance</html>"));
    let e = provider.fetch(&REQUEST).await.expect_err("not JSON");
    assert_eq!(e.class(), ProviderErrorClass::Transient);
    let shown = text(&e, &[KEY]);
    assert!(
        shown.contains("not a JSON object") && shown.contains("maintenance"),
        "{shown}"
    );

    server.answer(Answer::json(200, &serde_json::json!({"token": TOKEN})));
    let e = provider.fetch(&REQUEST).await.expect_err("no window");
    let shown = text(&e, &[KEY, TOKEN]);
    assert!(shown.contains("\"expires_in_seconds\""), "{shown}");

    server.answer(Answer::json(
        200,
        &serde_json::json!({"expires_in_seconds": 60}),
    ));
    let e = provider.fetch(&REQUEST).await.expect_err("no token");
    assert!(text(&e, &[KEY]).contains("no \"token\" field"));

    server.answer(Answer::new(200, r#"{"token": "AQICAHg"#));
    let e = provider.fetch(&REQUEST).await.expect_err("truncated");
    assert_eq!(e.class(), ProviderErrorClass::Transient);

    // A redirect is not followed (the key must not travel elsewhere).
    server
        .answer(Answer::new(302, "").header("location", "https://elsewhere.example/v3/token?x=1"));
    let e = provider.fetch(&REQUEST).await.expect_err("redirect");
    assert_eq!(e.class(), ProviderErrorClass::InvalidConfig);
    assert!(text(&e, &[KEY]).contains("redirects to https://elsewhere.example/v3/token"));
}

#[tokio::test]
async fn api_key_needs_a_key_and_knows_regions() {
    let mut config = Config::default().provider;
    let e = build_err(&config, &[]);
    assert_eq!(e.class(), ProviderErrorClass::NotConfigured);
    let shown = e.to_string();
    assert!(
        shown.contains("ASSEMBLYAI_API_KEY is not set") && shown.contains("key_file"),
        "{shown}"
    );
    assert_eq!(
        build_err(&config, &[("ASSEMBLYAI_API_KEY", "  ")]).class(),
        ProviderErrorClass::NotConfigured
    );
    config.api_key.key_env = "MY_KEY".into();
    assert!(
        build_err(&config, &[("ASSEMBLYAI_API_KEY", KEY)])
            .to_string()
            .contains("MY_KEY")
    );
    let e = build_err(&config, &[("MY_KEY", "sk\u{1}zzz")]);
    assert_eq!(e.class(), ProviderErrorClass::InvalidConfig);
    assert!(!e.to_string().contains("zzz"), "{e}");

    for (region, host) in [
        (Region::Default, "https://streaming.assemblyai.com/v3/token"),
        (Region::Us, "https://streaming.us.assemblyai.com/v3/token"),
        (Region::Eu, "https://streaming.eu.assemblyai.com/v3/token"),
    ] {
        config.api_key.region = region;
        assert_eq!(build(&config, &[("MY_KEY", KEY)]).source(), host);
    }

    // A key file is preferred over the variable.
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("write");
    let emu = start(emulator_config()).await;
    let mut config = api_key_config(&emu.token_url());
    config.api_key.key_file = Some(key_file.clone());
    let provider = build(&config, &[("ASSEMBLYAI_API_KEY", "not-this-one")]);
    provider
        .fetch(&REQUEST)
        .await
        .expect("minted with the file's key");
    std::fs::write(&key_file, "\n").expect("write");
    assert_eq!(
        build_err(&config, &[]).class(),
        ProviderErrorClass::NotConfigured
    );
    config.api_key.key_file = Some(dir.path().join("missing"));
    let e = build_err(&config, &[]);
    assert_eq!(e.class(), ProviderErrorClass::InvalidConfig);
    assert!(e.to_string().contains("missing"), "{e}");
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// remote

fn remote_config(url: &str) -> ProviderConfig {
    let mut config = Config::default().provider;
    config.kind = ProviderKind::Remote;
    config.remote.url = Some(url.parse().expect("url"));
    config.timeout = Duration::from_secs(5);
    config
}

#[tokio::test]
async fn remote_accepts_every_answer_shape() {
    let server = TestServer::start().await;
    let provider = build(&remote_config(&server.url("/token")), &[]);
    assert_eq!(provider.name(), "remote");
    assert_eq!(provider.source(), server.url("/token"));
    let in_a_minute = SystemTime::now() + Duration::from_secs(60);
    let unix = in_a_minute
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let rfc3339 = humantime::format_rfc3339_seconds(in_a_minute).to_string();
    let answers = [
        (
            Answer::json(200, &serde_json::json!({"token": TOKEN})),
            false,
        ),
        (
            Answer::json(
                200,
                &serde_json::json!({"token": TOKEN, "expires_in_seconds": 60}),
            ),
            true,
        ),
        (
            Answer::json(
                200,
                &serde_json::json!({"token": TOKEN, "expires_at": rfc3339}),
            ),
            true,
        ),
        (
            Answer::json(
                200,
                &serde_json::json!({"token": TOKEN, "expires_at": unix}),
            ),
            true,
        ),
        (
            Answer::new(200, format!("{TOKEN}\n")).header("content-type", "text/plain"),
            false,
        ),
        (
            Answer::json(
                200,
                &serde_json::json!({"token": TOKEN, "ws_url": "wss://x/v3/ws", "expires_in_seconds": "60"}),
            ),
            true,
        ),
    ];
    for (answer, has_window) in answers {
        let body = answer.body.clone();
        server.answer(answer);
        let token = provider.fetch(&REQUEST).await.expect(&body);
        assert_eq!(token.expose(), TOKEN, "{body}");
        assert_eq!(token.provider, "remote");
        assert_eq!(token.redeem_by.is_some(), has_window, "{body}");
        if let Some(at) = token.redeem_by {
            let off = at
                .duration_since(in_a_minute)
                .unwrap_or_else(|e| e.duration());
            assert!(off <= Duration::from_secs(2), "{body}: {off:?}");
        }
    }
    let seen = server.last_seen();
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.headers["cache-control"], "no-store");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.query, None, "lifetimes are passed only when asked");
}

#[tokio::test]
async fn remote_sends_method_headers_bearer_and_lifetimes() {
    let server = TestServer::start().await;
    let mut config = remote_config(&server.url("/token?team=a"));
    config.remote.method = HttpMethod::Post;
    config.remote.headers = BTreeMap::from([("X-Client".to_owned(), "aai-live-test".to_owned())]);
    config.remote.pass_lifetimes = true;
    let dir = tempfile::tempdir().expect("tempdir");
    let bearer_file = dir.path().join("bearer");
    std::fs::write(&bearer_file, "bearer-from-file-987654\n").expect("write");
    config.remote.bearer_file = Some(bearer_file);
    config.remote.bearer_env = Some("TOKEN_SERVER_CREDENTIAL".into());
    let provider = build(&config, &[("TOKEN_SERVER_CREDENTIAL", "bearer-from-env")]);
    assert_eq!(
        provider.source(),
        server.url("/token"),
        "no query in the source"
    );
    assert!(!format!("{provider:?}").contains("bearer-from-file"));

    server.answer(Answer::json(200, &serde_json::json!({"token": TOKEN})));
    let token = provider.fetch(&REQUEST).await.expect("token");
    let seen = server.last_seen();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(
        seen.headers["authorization"],
        "Bearer bearer-from-file-987654"
    );
    assert_eq!(seen.headers["x-client"], "aai-live-test");
    assert_eq!(seen.headers["cache-control"], "no-store");
    assert_eq!(seen.headers["content-length"], "0");
    assert_eq!(
        seen.query.as_deref(),
        Some("team=a&expires_in_seconds=60&max_session_duration_seconds=600")
    );
    // Passed lifetimes stand in for what the server did not say.
    assert!(token.redeem_by.is_some());
    assert_eq!(token.max_session_duration, Some(Duration::from_secs(600)));

    // The credential from the environment when there is no file.
    config.remote.bearer_file = None;
    config.remote.method = HttpMethod::Get;
    let provider = build(&config, &[("TOKEN_SERVER_CREDENTIAL", "bearer-from-env")]);
    server.answer(Answer::new(200, TOKEN));
    provider.fetch(&REQUEST).await.expect("token");
    assert_eq!(
        server.last_seen().headers["authorization"],
        "Bearer bearer-from-env"
    );
    let e = build_err(&config, &[]);
    assert_eq!(e.class(), ProviderErrorClass::NotConfigured);
    assert!(e.to_string().contains("TOKEN_SERVER_CREDENTIAL"), "{e}");
}

const BEARER: &str = "credential-abcdef-123456";

/// A test server and a remote provider for it with a bearer credential in `CRED`.
async fn remote_with_bearer() -> (TestServer, ProviderConfig, Arc<dyn TokenProvider>) {
    let server = TestServer::start().await;
    let mut config = remote_config(&server.url("/token"));
    config.remote.bearer_env = Some("CRED".into());
    let provider = build(&config, &[("CRED", BEARER)]);
    (server, config, provider)
}

#[tokio::test]
async fn remote_error_statuses() {
    let (server, _, provider) = remote_with_bearer().await;
    let location = server.url("/token");
    let secrets = [BEARER, TOKEN];

    // {"error", "message"} with a 500 that echoes the credential and a token.
    server.answer(Answer::json(
        500,
        &serde_json::json!({"error": format!("upstream refused {BEARER}"), "message": format!("last token {TOKEN}")}),
    ));
    let e = provider.fetch(&REQUEST).await.expect_err("500");
    assert_eq!(e.class(), ProviderErrorClass::Transient);
    let shown = text(&e, &secrets);
    for part in [
        location.as_str(),
        "GET",
        "HTTP 500",
        "upstream refused [REDACTED]",
        "last token",
    ] {
        assert!(shown.contains(part), "{part:?} missing from {shown}");
    }

    server.answer(Answer::json(
        401,
        &serde_json::json!({"error": "bad credential"}),
    ));
    let e = provider.fetch(&REQUEST).await.expect_err("401");
    assert_eq!(e.class(), ProviderErrorClass::Rejected);
    let shown = text(&e, &secrets);
    assert!(
        shown.contains("bad credential") && shown.contains("CRED"),
        "{shown}"
    );

    server.answer(Answer::new(403, "forbidden"));
    assert_eq!(
        provider.fetch(&REQUEST).await.expect_err("403").class(),
        ProviderErrorClass::Rejected
    );

    server.answer(
        Answer::json(429, &serde_json::json!({"error": "slow down"})).header("retry-after", "3"),
    );
    let e = provider.fetch(&REQUEST).await.expect_err("429");
    assert_eq!(e.class(), ProviderErrorClass::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));

    server.answer(Answer::json(
        400,
        &serde_json::json!({"error": "missing team"}),
    ));
    let e = provider.fetch(&REQUEST).await.expect_err("400");
    assert_eq!(e.class(), ProviderErrorClass::InvalidConfig);
    assert!(text(&e, &secrets).contains("missing team"));

    server.answer(Answer::new(404, "Not Found"));
    let e = provider.fetch(&REQUEST).await.expect_err("404");
    assert_eq!(e.class(), ProviderErrorClass::InvalidConfig);
    assert!(text(&e, &secrets).contains("provider.remote.url"));
}

#[tokio::test]
async fn remote_bad_bodies_timeouts_and_refusals() {
    let (server, config, provider) = remote_with_bearer().await;
    let secrets = [BEARER, TOKEN];

    // A 200 that carries an error.
    server.answer(Answer::json(
        200,
        &serde_json::json!({"error": "quota exceeded", "message": "try later"}),
    ));
    let e = provider.fetch(&REQUEST).await.expect_err("200 error");
    assert_eq!(e.class(), ProviderErrorClass::Transient);
    assert!(text(&e, &secrets).contains("quota exceeded: try later"));

    // Malformed JSON, HTML with a token in it, an unknown JSON shape, an empty body.
    for (body, expect) in [
        (r#"{"token": "AQICAHg"#.to_owned(), "neither"),
        (
            format!("<html><body>token={TOKEN}</body></html>"),
            "neither",
        ),
        (
            format!(r#"{{"access_token": "{TOKEN}"}}"#),
            "no \"token\" field",
        ),
        (String::new(), "empty"),
    ] {
        server.answer(Answer::new(200, body.clone()));
        let e = provider.fetch(&REQUEST).await.expect_err(&body);
        assert_eq!(e.class(), ProviderErrorClass::Transient, "{body}");
        let shown = text(&e, &secrets);
        assert!(shown.contains(expect), "{expect:?} missing from {shown}");
    }

    // A token whose window is already over.
    server.answer(Answer::json(
        200,
        &serde_json::json!({"token": TOKEN, "expires_at": "2020-01-01T00:00:00Z"}),
    ));
    let e = provider.fetch(&REQUEST).await.expect_err("expired");
    assert!(text(&e, &secrets).contains("2020-01-01T00:00:00Z"));

    // Timeout.
    let mut quick = config.clone();
    quick.timeout = Duration::from_millis(200);
    let impatient = build(&quick, &[("CRED", BEARER)]);
    let mut slow = Answer::new(200, TOKEN);
    slow.delay = Duration::from_secs(3);
    server.answer(slow);
    let e = impatient.fetch(&REQUEST).await.expect_err("timeout");
    assert_eq!(e.class(), ProviderErrorClass::Transient);
    assert!(text(&e, &secrets).contains("within 200ms"));

    // Connection refused.
    let port = refused_port().await;
    let refused = build(
        &remote_config(&format!("http://127.0.0.1:{port}/token")),
        &[],
    );
    let e = refused.fetch(&REQUEST).await.expect_err("refused");
    assert_eq!(e.class(), ProviderErrorClass::Transient);
    assert!(e.to_string().contains("cannot connect"), "{e}");
}

#[tokio::test]
async fn remote_provider_against_the_emulator() {
    // The emulator wants the raw key and expires_in_seconds: a token server in front of it would
    // do exactly that, so the header plus pass_lifetimes make the emulator a token server.
    let emu = start(emulator_config()).await;
    let mut config = remote_config(&emu.token_url());
    config.remote.headers = BTreeMap::from([("Authorization".to_owned(), KEY.to_owned())]);
    config.remote.pass_lifetimes = true;
    let provider = build(&config, &[]);
    let token = provider.fetch(&REQUEST).await.expect("token");
    assert!(token.redeem_by.is_some());
    let mut ws = connect(&emu, Some(token.expose()), "sample_rate=16000")
        .await
        .expect("connect");
    let messages = read_until(&mut ws, |m| matches!(m, ServerMessage::Begin(_))).await;
    assert!(matches!(messages.last(), Some(ServerMessage::Begin(_))));
    terminate(&mut ws).await;

    // Without the lifetimes, the emulator refuses with a 400.
    config.remote.pass_lifetimes = false;
    let e = build(&config, &[]).fetch(&REQUEST).await.expect_err("400");
    assert_eq!(e.class(), ProviderErrorClass::InvalidConfig);
    assert!(text(&e, &[KEY]).contains("expires_in_seconds is required"));
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// file

fn file_provider(path: &Path, wait: Duration, poll: Duration, watch: bool) -> FileProvider {
    FileProvider::new(FileSettings {
        path: path.to_owned(),
        wait,
        poll_interval: poll,
        remove_after_use: false,
        timeout: Duration::from_secs(5),
        watch,
    })
}

/// Write `contents` the way producers should: a temporary file renamed over the target.
fn swap_in(path: &Path, contents: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, contents).expect("write");
    std::fs::rename(&temp, path).expect("rename");
}

#[tokio::test]
async fn file_raw_and_json_tokens_each_handed_out_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    let provider = file_provider(
        &path,
        Duration::from_millis(300),
        Duration::from_millis(50),
        true,
    );
    assert_eq!(provider.name(), "file");
    assert_eq!(provider.source(), path.display().to_string());

    std::fs::write(&path, format!("{TOKEN}\n")).expect("write");
    let token = provider.fetch(&REQUEST).await.expect("raw token");
    assert_eq!(token.expose(), TOKEN);
    assert_eq!(token.provider, "file");
    assert!(token.redeem_by.is_none());

    // The same token again: wait, then Exhausted naming the reason.
    let e = provider.fetch(&REQUEST).await.expect_err("used");
    assert_eq!(e.class(), ProviderErrorClass::Exhausted);
    assert!(!e.is_fatal());
    let shown = text(&e, &[TOKEN]);
    assert!(
        shown.contains("already used") && shown.contains(&path.display().to_string()),
        "{shown}"
    );
    assert!(shown.contains(&token.fingerprint()), "{shown}");

    // JSON with a deadline and a session duration.
    let second = format!("{TOKEN}-2");
    let expires_at = SystemTime::now() + Duration::from_secs(90);
    swap_in(
        &path,
        &serde_json::json!({
            "token": second,
            "expires_at": humantime::format_rfc3339_seconds(expires_at).to_string(),
            "max_session_duration_seconds": 300,
        })
        .to_string(),
    );
    let token = provider.fetch(&REQUEST).await.expect("json token");
    assert_eq!(token.expose(), second);
    let at = token.redeem_by.expect("deadline");
    assert!(
        at.duration_since(expires_at)
            .unwrap_or_else(|e| e.duration())
            < Duration::from_secs(1)
    );
    assert_eq!(token.max_session_duration, Some(Duration::from_secs(300)));

    // expires_in_seconds counts from minted_at.
    let minted_at = SystemTime::now() - Duration::from_secs(10);
    swap_in(
        &path,
        &serde_json::json!({
            "token": format!("{TOKEN}-3"),
            "minted_at": humantime::format_rfc3339_seconds(minted_at).to_string(),
            "expires_in_seconds": 60,
        })
        .to_string(),
    );
    let token = provider.fetch(&REQUEST).await.expect("json token");
    let left = token
        .redeem_by
        .expect("deadline")
        .duration_since(SystemTime::now())
        .expect("future");
    assert!(
        left > Duration::from_secs(45) && left <= Duration::from_secs(51),
        "{left:?}"
    );

    // An expired token is waited past, not handed out.
    swap_in(
        &path,
        &serde_json::json!({"token": format!("{TOKEN}-4"), "expires_at": "2020-01-01T00:00:00Z"})
            .to_string(),
    );
    let e = provider.fetch(&REQUEST).await.expect_err("expired");
    assert_eq!(e.class(), ProviderErrorClass::Exhausted);
    assert!(text(&e, &[TOKEN]).contains("redemption window ended at 2020-01-01T00:00:00Z"));
}

#[tokio::test]
async fn file_fresh_token_arriving_by_rename_wakes_the_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token.json");
    // Polling every minute: only the directory watch can deliver within the test's bound.
    let provider = Arc::new(file_provider(
        &path,
        Duration::from_secs(30),
        Duration::from_secs(60),
        true,
    ));
    std::fs::write(&path, serde_json::json!({"token": TOKEN}).to_string()).expect("write");
    provider.fetch(&REQUEST).await.expect("first token");

    let started = std::time::Instant::now();
    let waiting = tokio::spawn({
        let provider = Arc::clone(&provider);
        async move { provider.fetch(&REQUEST).await }
    });
    // Give the fetch time to find the used token and start waiting; if it has not yet, it simply
    // finds the fresh token on its first look, and the test still holds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = format!("{TOKEN}-fresh");
    swap_in(&path, &serde_json::json!({"token": fresh}).to_string());
    let token = waiting.await.expect("task").expect("fresh token");
    assert_eq!(token.expose(), fresh);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn file_polling_finds_a_fresh_token_without_a_watch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    let provider = Arc::new(file_provider(
        &path,
        Duration::from_secs(30),
        Duration::from_millis(50),
        false,
    ));
    let waiting = tokio::spawn({
        let provider = Arc::clone(&provider);
        async move { provider.fetch(&REQUEST).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    swap_in(&path, TOKEN);
    let token = waiting.await.expect("task").expect("token");
    assert_eq!(token.expose(), TOKEN);
}

#[tokio::test]
async fn file_half_written_then_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token.json");
    let provider = Arc::new(file_provider(
        &path,
        Duration::from_secs(30),
        Duration::from_millis(50),
        true,
    ));
    let body = serde_json::json!({"token": TOKEN, "expires_in_seconds": 60}).to_string();
    // A producer writing in place: first half, then the rest.
    std::fs::write(&path, &body[..body.len() / 2]).expect("write");
    let waiting = tokio::spawn({
        let provider = Arc::clone(&provider);
        async move { provider.fetch(&REQUEST).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&path, &body).expect("write");
    let token = waiting.await.expect("task").expect("token once complete");
    assert_eq!(token.expose(), TOKEN);

    // Half-written until the wait ends: Exhausted (transient), not a fatal error.
    let quick = file_provider(
        &path,
        Duration::from_millis(200),
        Duration::from_millis(50),
        true,
    );
    std::fs::write(&path, r#"{"token": "AQI"#).expect("write");
    let e = quick.fetch(&REQUEST).await.expect_err("half-written");
    assert_eq!(e.class(), ProviderErrorClass::Exhausted);
    assert!(e.to_string().contains("incomplete or invalid JSON"), "{e}");
    std::fs::write(&path, "").expect("write");
    let e = quick.fetch(&REQUEST).await.expect_err("empty");
    assert!(e.to_string().contains("empty"), "{e}");
}

#[tokio::test]
async fn file_missing_directory_and_timeouts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent");
    let provider = file_provider(
        &path,
        Duration::from_millis(200),
        Duration::from_millis(50),
        true,
    );
    let e = provider.fetch(&REQUEST).await.expect_err("absent");
    assert_eq!(e.class(), ProviderErrorClass::Exhausted);
    let shown = e.to_string();
    assert!(
        shown.contains("does not exist") && shown.contains("200ms"),
        "{shown}"
    );

    let provider = file_provider(
        dir.path(),
        Duration::from_millis(200),
        Duration::from_millis(50),
        true,
    );
    let e = provider.fetch(&REQUEST).await.expect_err("a directory");
    assert_eq!(e.class(), ProviderErrorClass::InvalidConfig);
    assert!(e.is_fatal());

    // The config requires a path.
    let mut config = Config::default().provider;
    config.kind = ProviderKind::File;
    assert_eq!(
        build_err(&config, &[]).class(),
        ProviderErrorClass::NotConfigured
    );
}

#[tokio::test]
async fn file_concurrent_fetches_never_share_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    std::fs::write(&path, TOKEN).expect("write");
    let provider = Arc::new(file_provider(
        &path,
        Duration::from_millis(400),
        Duration::from_millis(50),
        true,
    ));
    let fetches: Vec<_> = (0..4)
        .map(|_| {
            let provider = Arc::clone(&provider);
            tokio::spawn(async move { provider.fetch(&REQUEST).await })
        })
        .collect();
    let mut got = 0;
    for fetch in fetches {
        match fetch.await.expect("task") {
            Ok(token) => {
                assert_eq!(token.expose(), TOKEN);
                got += 1;
            }
            Err(e) => assert_eq!(e.class(), ProviderErrorClass::Exhausted),
        }
    }
    assert_eq!(got, 1, "exactly one fetch gets the token");
}

#[tokio::test]
async fn file_remove_after_use_and_permission_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    std::fs::write(&path, TOKEN).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut config = Config::default().provider;
    config.kind = ProviderKind::File;
    config.file.path = Some(path.clone());
    config.file.remove_after_use = true;
    config.file.wait = Duration::from_millis(200);
    let built = provider::build_with(&config, &env_with(&[])).expect("builds");
    assert_eq!(built.warnings.len(), 1, "{:?}", built.warnings);
    assert!(
        built.warnings[0].contains("chmod 600"),
        "{:?}",
        built.warnings
    );
    let token = built.provider.fetch(&REQUEST).await.expect("token");
    assert_eq!(token.expose(), TOKEN);
    assert!(!path.exists(), "the file is removed after use");
    let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(leftovers, 0, "no claim file left behind");
    let e = built.provider.fetch(&REQUEST).await.expect_err("gone");
    assert!(e.to_string().contains("does not exist"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Impossible lifetimes: every provider refuses them with the field and the value, never panics

/// Token documents no real token has: each with the field its error must name.
fn impossible_documents() -> Vec<(serde_json::Value, &'static str)> {
    use serde_json::json;
    vec![
        // Once `SystemTime + Duration` overflowed: `aai-live token` panicked (exit 101).
        (
            json!({"token": TOKEN, "expires_in_seconds": 9.3e18}),
            "expires_in_seconds",
        ),
        (
            json!({"token": TOKEN, "expires_in_seconds": 18_446_744_073_709_551_615_u64}),
            "expires_in_seconds",
        ),
        (
            json!({"token": TOKEN, "expires_in_seconds": -60}),
            "expires_in_seconds",
        ),
        (
            json!({"token": TOKEN, "expires_in_seconds": 60, "max_session_duration_seconds": 0}),
            "max_session_duration_seconds",
        ),
        (
            json!({"token": TOKEN, "expires_in_seconds": 60, "expires_at": 9.2e18}),
            "expires_at",
        ),
        (
            json!({"token": TOKEN, "expires_in_seconds": 60, "expires_at": "9999-12-31T23:59:59Z"}),
            "expires_at",
        ),
        (
            json!({"token": TOKEN, "expires_in_seconds": 60, "minted_at": 9.2e18}),
            "minted_at",
        ),
        (
            json!({"token": TOKEN, "expires_in_seconds": 60, "max_session_duration_seconds": 1e300}),
            "max_session_duration_seconds",
        ),
    ]
}

#[tokio::test]
async fn api_key_refuses_impossible_lifetimes() {
    let server = TestServer::start().await;
    let provider = build(
        &api_key_config(&server.url("/v3/token")),
        &[("ASSEMBLYAI_API_KEY", KEY)],
    );
    for (document, field) in impossible_documents() {
        server.answer(Answer::json(200, &document));
        let e = provider.fetch(&REQUEST).await.expect_err("impossible");
        assert_eq!(e.class(), ProviderErrorClass::Transient, "{document}");
        let shown = text(&e, &[KEY, TOKEN]);
        assert!(
            shown.contains(&format!("\"{field}\"")),
            "{document}: {shown}"
        );
    }
}

#[tokio::test]
async fn remote_refuses_impossible_lifetimes() {
    let server = TestServer::start().await;
    let provider = build(&remote_config(&server.url("/token")), &[]);
    for (document, field) in impossible_documents() {
        server.answer(Answer::json(200, &document));
        let e = provider.fetch(&REQUEST).await.expect_err("impossible");
        assert_eq!(e.class(), ProviderErrorClass::Transient, "{document}");
        let shown = text(&e, &[TOKEN]);
        assert!(
            shown.contains(&format!("\"{field}\"")),
            "{document}: {shown}"
        );
    }
    // An expires_at before 1970 once made the "already ended" message panic.
    server.answer(Answer::json(
        200,
        &serde_json::json!({"token": TOKEN, "expires_at": "1970-01-01T00:30:00+01:00"}),
    ));
    let e = provider.fetch(&REQUEST).await.expect_err("before 1970");
    assert!(text(&e, &[TOKEN]).contains("\"expires_at\""), "{e}");
}

#[tokio::test]
async fn file_refuses_impossible_lifetimes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token.json");
    let provider = file_provider(
        &path,
        Duration::from_millis(100),
        Duration::from_millis(20),
        false,
    );
    for (document, field) in impossible_documents() {
        swap_in(&path, &document.to_string());
        let e = provider.fetch(&REQUEST).await.expect_err("impossible");
        assert_eq!(e.class(), ProviderErrorClass::Exhausted, "{document}");
        let shown = text(&e, &[TOKEN]);
        assert!(
            shown.contains(&format!("\"{field}\"")) && shown.contains("impossible"),
            "{document}: {shown}"
        );
    }
}
