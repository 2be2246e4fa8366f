//! `aai-live serve` in-process on 127.0.0.1 against the emulator: the token endpoint and its
//! lifetime policy, authentication, the origin and host checks, exact rate limits under
//! concurrent requests, upstream failures and the retry, size and time limits, health, metrics,
//! TLS and graceful shutdown. Every refusal is checked to have made no upstream call.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aai_live::emulator::RunningEmulator;
use aai_live::listener::{ListenError, TlsFiles};
use aai_live::protocol::ServerMessage;
use aai_live::provider::api_key::ApiKeyProvider;
use aai_live::provider::{ProviderError, Token, TokenProvider, TokenRequest};
use aai_live::secret::ApiKey;
use aai_live::server::{
    self, Auth, Credentials, RunningServer, ServerConfig, ServerError, StoreConfig, hash_credential,
};
use common::KEY;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis_server::RedisServer;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALICE: &str = "alice-credential-0123456789abcdef";
const BOB: &str = "bob-credential-0123456789abcdef";
const CAROL: &str = "carol-credential-0123456789abcdef";
const BOUND: Duration = Duration::from_secs(10);

/// Counts the fetches that reach the upstream.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn TokenProvider>,
    calls: AtomicUsize,
}

impl Counting {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TokenProvider for Counting {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn source(&self) -> String {
        self.inner.source()
    }

    fn fetch<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<Token, ProviderError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.fetch(request)
    }
}

/// A provider that announces each fetch and answers only when released (or never).
#[derive(Debug)]
struct Gate {
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    release: tokio::sync::Semaphore,
}

impl TokenProvider for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn source(&self) -> String {
        "gate".into()
    }

    fn fetch<'a>(
        &'a self,
        _request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<Token, ProviderError>> {
        async move {
            let _ = self.entered.send(());
            self.release.acquire().await.expect("open").forget();
            Ok(Token::new("gated-token-0123456789abcdefghij", "gate"))
        }
        .boxed()
    }
}

fn gate() -> (Arc<Gate>, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (entered, rx) = tokio::sync::mpsc::unbounded_channel();
    (
        Arc::new(Gate {
            entered,
            release: tokio::sync::Semaphore::new(0),
        }),
        rx,
    )
}

fn api_key_provider(key: &str, url: &str, timeout: Duration) -> Arc<dyn TokenProvider> {
    Arc::new(
        ApiKeyProvider::new(
            ApiKey::new(key),
            "the test key",
            url.parse().expect("url"),
            timeout,
        )
        .expect("provider"),
    )
}

fn counting(inner: Arc<dyn TokenProvider>) -> Arc<Counting> {
    Arc::new(Counting {
        inner,
        calls: AtomicUsize::new(0),
    })
}

fn credentials() -> Credentials {
    let mut text = String::new();
    for (name, credential) in [("alice", ALICE), ("bob", BOB), ("carol", CAROL)] {
        let _ = writeln!(text, "{name}:{}", hash_credential(credential));
    }
    Credentials::parse(&text, "test credentials").expect("credentials")
}

/// Bearer auth with three clients, limits off unless `tweak` sets them.
fn base_config() -> ServerConfig {
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        Auth::Bearer(credentials()),
    );
    config.client_limit = None;
    config.global_limit = None;
    config.refusal_limit = None;
    config
}

async fn serve(
    provider: Arc<dyn TokenProvider>,
    tweak: impl FnOnce(&mut ServerConfig),
) -> RunningServer {
    let mut config = base_config();
    tweak(&mut config);
    server::start(config, provider)
        .await
        .expect("server starts")
}

struct Setup {
    emu: RunningEmulator,
    upstream: Arc<Counting>,
    server: RunningServer,
    /// Keeps a test's redis-server running as long as the server.
    _store: Store,
}

async fn setup(tweak: impl FnOnce(&mut ServerConfig)) -> Setup {
    setup_in(Store::Memory, tweak).await
}

async fn setup_in(store: Store, tweak: impl FnOnce(&mut ServerConfig)) -> Setup {
    let emu = common::start(common::config()).await;
    let upstream = counting(api_key_provider(KEY, &emu.token_url(), BOUND));
    let server = serve(upstream.clone(), |c| {
        store.apply(c);
        tweak(c);
    })
    .await;
    Setup {
        emu,
        upstream,
        server,
        _store: store,
    }
}

/// Where a test's rate limits live: this process's memory, or a redis-server of the test's own.
/// The tests whose behaviour must not depend on the store run on both (`on_both_stores!`).
enum Store {
    Memory,
    Redis(RedisServer),
}

impl Store {
    /// `None` when redis-server is missing (the test is skipped with a message; on CI it fails).
    fn redis() -> Option<Self> {
        RedisServer::start().map(Self::Redis)
    }

    fn apply(&self, config: &mut ServerConfig) {
        if let Self::Redis(redis) = self {
            config.limits = StoreConfig::redis(&redis.url()).expect("redis URL");
        }
    }
}

/// For each `test(store: Store)`, a module `test` with a `memory` and a `redis` test.
macro_rules! on_both_stores {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            use super::Store;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$test(Store::Memory).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                if let Some(store) = Store::redis() {
                    super::$test(store).await;
                }
            }
        }
    )+};
}

on_both_stores!(
    unauthenticated_requests_are_refused_without_an_upstream_call,
    rate_limits_are_exact_under_concurrent_requests,
    health_metrics_and_json_errors,
    a_metrics_scrape_has_the_documented_series_and_counts,
    forwarded_clients_have_their_own_refusal_budgets,
);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(BOUND)
        .build()
        .expect("client")
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn rate(&self) -> (Option<u64>, Option<u64>, Option<u64>) {
        let n = |h: &str| self.header(h).and_then(|v| v.parse().ok());
        (
            n("x-ratelimit-limit"),
            n("x-ratelimit-remaining"),
            n("x-ratelimit-reset"),
        )
    }

    /// (`expires_in_seconds`, `max_session_duration_seconds`).
    fn lifetimes(&self) -> (Value, Value) {
        (
            self.body["expires_in_seconds"].clone(),
            self.body["max_session_duration_seconds"].clone(),
        )
    }

    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(server: &RunningServer, query: &str, credential: Option<&str>) -> Answer {
    let mut request = client().get(format!("{}?{query}", server.token_url()));
    if let Some(c) = credential {
        request = request.bearer_auth(c);
    }
    answer(request).await
}

/// The token opens a session on the emulator.
async fn redeem(emu: &RunningEmulator, token: &str) {
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let mut ws = common::connect(emu, None, &format!("sample_rate=16000&token={encoded}"))
        .await
        .expect("connects");
    let first = common::read_until(&mut ws, |_| true).await;
    assert!(
        matches!(first.first(), Some(ServerMessage::Begin(_))),
        "{first:?}"
    );
    common::terminate(&mut ws).await;
    common::read_to_close(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_mint_tokens_within_the_policy() {
    let s = setup(|c| {
        c.policy.expires_in = 60;
        c.policy.min_expires_in = 10;
        c.policy.max_session = 3600;
        c.policy.min_session = 120;
    })
    .await;

    let a = get(&s.server, "", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.body["expires_in_seconds"], 60);
    assert_eq!(a.body["max_session_duration_seconds"], 3600);
    let expires_at = aai_live::provider::time::parse_json_timestamp(&a.body["expires_at"])
        .expect("RFC 3339 expires_at");
    let left = expires_at
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(
        left <= Duration::from_secs(60) && left > Duration::from_secs(50),
        "{left:?}"
    );
    let token = a.body["token"].as_str().expect("token");
    redeem(&s.emu, token).await;

    // Shorter on request, in the query (GET) or a JSON or form body (POST).
    let a = get(
        &s.server,
        "expires_in_seconds=20&max_session_duration_seconds=600",
        Some(ALICE),
    )
    .await;
    assert_eq!(a.lifetimes(), (json!(20), json!(600)));
    let a = answer(
        client()
            .post(s.server.token_url())
            .bearer_auth(BOB)
            .json(&json!({"expires_in_seconds": 15, "max_session_duration_seconds": 300})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.lifetimes(), (json!(15), json!(300)));
    let a = answer(
        client()
            .post(format!("{}?expires_in_seconds=40", s.server.token_url()))
            .bearer_auth(BOB)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("expires_in_seconds=25"),
    )
    .await;
    assert_eq!(
        a.body["expires_in_seconds"], 25,
        "the body wins over the query"
    );
    let a = answer(client().post(s.server.token_url()).bearer_auth(BOB)).await;
    assert_eq!(
        a.body["expires_in_seconds"], 60,
        "an empty POST gets the defaults"
    );

    // Never longer: clamped to the policy.
    let a = get(
        &s.server,
        "expires_in_seconds=600&max_session_duration_seconds=10800",
        Some(ALICE),
    )
    .await;
    assert_eq!(a.lifetimes(), (json!(60), json!(3600)));
    let metrics = s.server.metrics_text();
    for client in ["alice", "bob"] {
        let line = format!("aai_live_serve_tokens_minted_total{{client=\"{client}\"}} 3");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_the_upstream() {
    let s = setup(|c| {
        c.policy.min_expires_in = 10;
        c.policy.min_session = 120;
    })
    .await;
    let calls = s.upstream.calls();
    // Below the minimum, not a number, a body that is neither JSON nor a form: 400.
    for (query, body, want) in [
        (
            "expires_in_seconds=5",
            None,
            "below this server's minimum of 10",
        ),
        (
            "max_session_duration_seconds=60",
            None,
            "below this server's minimum of 120",
        ),
        ("expires_in_seconds=soon", None, "whole number"),
        (
            "",
            Some("expires_in_seconds: 5"),
            "must be empty, a JSON object or a form",
        ),
        ("", Some("[1, 2]"), "must be empty, a JSON object or a form"),
    ] {
        let mut request = client()
            .post(format!("{}?{query}", s.server.token_url()))
            .bearer_auth(ALICE);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let a = answer(request).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query} {body:?}: {a:?}");
        assert_eq!(a.error(), "invalid_request");
        assert!(a.message().contains(want), "{a:?}");
    }
    // Too large, by Content-Length or by a chunked stream.
    let a = answer(
        client()
            .post(s.server.token_url())
            .bearer_auth(ALICE)
            .body(vec![b' '; 5000]),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{a:?}");
    assert_eq!(a.error(), "payload_too_large");
    // A chunked body (no Content-Length) is cut off at the limit as it arrives.
    let mut socket = tokio::net::TcpStream::connect(s.server.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ALICE}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    for _ in 0..5 {
        let chunk = format!("3e8\r\n{}\r\n", " ".repeat(1000));
        if socket.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut reply = vec![0; 1024];
    let n = tokio::time::timeout(BOUND, socket.read(&mut reply))
        .await
        .expect("answer")
        .expect("read");
    let reply = String::from_utf8_lossy(&reply[..n]).into_owned();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("payload_too_large"), "{reply}");
    assert_eq!(
        s.upstream.calls(),
        calls,
        "no upstream call for a bad request"
    );

    let metrics = s.server.metrics_text();
    assert!(
        metrics.contains("aai_live_serve_tokens_minted_total{client=\"alice\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("aai_live_serve_requests_denied_total{reason=\"invalid_request\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("aai_live_serve_requests_denied_total{reason=\"payload_too_large\"} 2"),
        "{metrics}"
    );
    s.server.shutdown().await;
}

async fn unauthenticated_requests_are_refused_without_an_upstream_call(store: Store) {
    let s = setup_in(store, |c| {
        c.refusal_limit = Some("3/h".parse().expect("spec"));
    })
    .await;
    for (auth, want) in [
        (None, "a credential is required"),
        (Some("Basic YWxpY2U6eA=="), "must be Bearer"),
        (
            Some("Bearer not-a-known-credential-0123456789"),
            "not valid",
        ),
    ] {
        let mut request = client().get(s.server.token_url());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let a = answer(request).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{a:?}");
        assert_eq!(a.error(), "unauthenticated");
        assert!(a.message().contains(want), "{a:?}");
        assert_eq!(
            a.header("www-authenticate"),
            Some("Bearer realm=\"aai-live\"")
        );
        assert_eq!(a.rate().0, Some(3), "the refusal budget is reported: {a:?}");
    }
    // The address has used up its refusals: 429, still without an upstream call.
    let a = get(&s.server, "", Some("wrong-credential-0123456789")).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{a:?}");
    assert!(a.message().contains("too many refused requests"), "{a:?}");
    assert!(a.header("retry-after").is_some());
    assert_eq!(a.rate().1, Some(0));
    assert_eq!(s.upstream.calls(), 0);
    // A valid credential from the same address is not held back by others' failures.
    let a = get(&s.server, "", Some(CAROL)).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(s.upstream.calls(), 1);
    let metrics = s.server.metrics_text();
    assert!(
        metrics.contains("reason=\"unauthenticated\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("reason=\"refusal_rate_limit\"} 1"),
        "{metrics}"
    );
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_is_loopback_only_and_answers_loopback_names_only() {
    let emu = common::start(common::config()).await;
    let upstream = counting(api_key_provider(KEY, &emu.token_url(), BOUND));
    let mut config = base_config();
    config.auth = Auth::None;
    config.listen = "0.0.0.0:0".parse().expect("addr");
    let e = server::start(config.clone(), upstream.clone())
        .await
        .expect_err("not loopback");
    assert!(matches!(e, ServerError::InvalidConfig(_)), "{e}");
    assert!(e.to_string().contains("only on a loopback address"), "{e}");

    config.listen = "127.0.0.1:0".parse().expect("addr");
    let server = server::start(config, upstream.clone())
        .await
        .expect("starts");
    let a = get(&server, "", None).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    // DNS rebinding: a page of evil.example resolving to 127.0.0.1 is refused.
    let a = answer(
        client()
            .get(server.token_url())
            .header("host", "evil.example"),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    assert!(a.message().contains("localhost only"), "{a:?}");
    // By name, pinned to 127.0.0.1 (whatever a resolver says about localhost).
    let by_name = reqwest::Client::builder()
        .resolve("localhost", server.addr)
        .timeout(BOUND)
        .build()
        .expect("client");
    let a = answer(by_name.get(format!("http://localhost:{}/token", server.addr.port()))).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    // Hosts that once passed: a loopback name before the last ':' with anything after it, and a
    // Host that is not UTF-8 (skipped as if absent). Both are refused now, with no upstream call.
    for host in [
        &b"localhost:80@evil.example"[..],
        b"localhost\xff",
        b"127.0.0.1:80/x",
    ] {
        let reply = raw_request(server.addr, "GET /token HTTP/1.1", host).await;
        assert!(reply.starts_with("HTTP/1.1 403"), "{host:?}: {reply}");
        assert!(reply.contains("localhost only"), "{reply}");
    }
    assert_eq!(upstream.calls(), 2);
    assert!(server.metrics_text().contains("client=\"anonymous\"} 2"));
    assert!(
        server
            .metrics_text()
            .contains("requests_denied_total{reason=\"forbidden_host\"} 4"),
        "{}",
        server.metrics_text()
    );
    server.shutdown().await;
}

/// One HTTP/1.1 request with these exact `Host` bytes, on a fresh connection; the reply's text.
async fn raw_request(addr: std::net::SocketAddr, request_line: &str, host: &[u8]) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{request_line}\r\nHost: ").into_bytes();
    request.extend_from_slice(host);
    request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    socket.write_all(&request).await.expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(BOUND, socket.read_to_end(&mut reply))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8_lossy(&reply).into_owned()
}

/// `/metrics` is for loopback callers addressing a loopback name: a page of another site that
/// resolves to 127.0.0.1 (DNS rebinding) is refused, unless the metrics are public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_check_the_host_too() {
    let (gate, _entered) = gate();
    let server = serve(gate.clone(), |_| {}).await;
    for (host, status) in [
        (&b"127.0.0.1"[..], "200"),
        (b"localhost:8787", "200"),
        (b"evil.example", "403"),
        (b"localhost:80@evil.example", "403"),
        (b"\xff", "403"),
    ] {
        let reply = raw_request(server.addr, "GET /metrics HTTP/1.1", host).await;
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status}")),
            "{host:?}: {reply}"
        );
    }
    server.shutdown().await;
    let server = serve(gate, |c| c.public_metrics = true).await;
    let reply = raw_request(server.addr, "GET /metrics HTTP/1.1", b"metrics.example").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    server.shutdown().await;
}

/// Behind a load balancer (a trusted proxy) each client has its own refusal budget, taken from
/// X-Forwarded-For's rightmost untrusted hop; what a client prepends does not change which
/// budget it spends. Without trusted proxies the header is ignored.
async fn forwarded_clients_have_their_own_refusal_budgets(store: Store) {
    let s = setup_in(store, |c| {
        c.refusal_limit = Some("2/h".parse().expect("spec"));
        c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("cidr")];
    })
    .await;
    let refused_as = |xff: &'static str| {
        answer(
            client()
                .get(s.server.token_url())
                .bearer_auth("wrong-credential-0123456789")
                .header("x-forwarded-for", xff),
        )
    };
    for _ in 0..2 {
        assert_eq!(
            refused_as("203.0.113.1").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        refused_as("203.0.113.1").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Prepending another address does not escape the budget...
    assert_eq!(
        refused_as("198.51.100.9, 203.0.113.1").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...and another client behind the same balancer has its own.
    assert_eq!(
        refused_as("203.0.113.2").await.status,
        StatusCode::UNAUTHORIZED
    );
    // Valid credentials are never held back by the refusal budget.
    assert_eq!(
        answer(
            client()
                .get(s.server.token_url())
                .bearer_auth(ALICE)
                .header("x-forwarded-for", "203.0.113.1")
        )
        .await
        .status,
        StatusCode::OK
    );
    s.server.shutdown().await;

    // No trusted proxies: every request is the peer's, whatever the header claims.
    let (gate, _entered) = gate();
    let server = serve(gate, |c| {
        c.refusal_limit = Some("2/h".parse().expect("spec"));
    })
    .await;
    let statuses = ["203.0.113.1", "203.0.113.2", "203.0.113.3"].map(|xff| {
        answer(
            client()
                .get(server.token_url())
                .bearer_auth("wrong-credential-0123456789")
                .header("x-forwarded-for", xff),
        )
    });
    let mut got = Vec::new();
    for request in statuses {
        got.push(request.await.status.as_u16());
    }
    assert_eq!(got, [401, 401, 429]);
    server.shutdown().await;
}

/// A body that stops arriving is the client's fault: 408 once the body deadline passes, not the
/// 503 "timeout" meant for a slow upstream. The connection is closed after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_answered_408() {
    let (gate, _entered) = gate();
    for (request_timeout, header_timeout) in [
        // The request deadline passes while the body is read...
        (Duration::from_millis(500), Duration::from_secs(10)),
        // ...or the body's own deadline (the header timeout) does.
        (Duration::from_secs(10), Duration::from_millis(500)),
    ] {
        let server = serve(gate.clone(), |c| {
            c.request_timeout = request_timeout;
            c.header_timeout = header_timeout;
        })
        .await;
        let mut socket = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ALICE}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"expires_in"
        );
        socket.write_all(head.as_bytes()).await.expect("write");
        let mut reply = Vec::new();
        tokio::time::timeout(BOUND, socket.read_to_end(&mut reply))
            .await
            .expect("answered and closed in time")
            .expect("read");
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("\"error\":\"request_timeout\""), "{reply}");
        assert!(
            reply.to_ascii_lowercase().contains("connection: close"),
            "{reply}"
        );
        let metrics = server.metrics_text();
        assert!(
            metrics.contains("requests_denied_total{reason=\"body_timeout\"} 1")
                && metrics.contains("requests_denied_total{reason=\"timeout\"} 0"),
            "{metrics}"
        );
        server.shutdown().await;
    }
}

/// Connections beyond `max_connections` are closed as they arrive instead of being held: 60
/// idle sockets against a cap of 20 leave 40 closed at once, and the server answers again as
/// soon as the idle ones go (before, all 60 were held until the header timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed() {
    let (gate, _entered) = gate();
    let server = serve(gate, |c| c.max_connections = Some(20)).await;
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(
            tokio::net::TcpStream::connect(server.addr)
                .await
                .expect("connect"),
        );
    }
    // Each socket is read at once, concurrently: a closed one reads end-of-file (or a reset).
    let reads = idle.iter_mut().map(|socket| async move {
        let mut byte = [0_u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(500), socket.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    });
    let closed = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count();
    assert_eq!(
        closed, 40,
        "the connections beyond the cap are closed at once"
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = answer(client().get(format!("{}/healthz", server.base_url()))).await;
    assert_eq!(a.status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_from_listed_origins_only() {
    let s = setup(|c| c.cors_origins = vec!["https://app.example.com".into()]).await;
    // The preflight a browser sends before a GET with Authorization.
    let preflight = answer(
        client()
            .request(reqwest::Method::OPTIONS, s.server.token_url())
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization"),
    )
    .await;
    assert!(preflight.status.is_success(), "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("authorization"))
    );

    let a = answer(
        client()
            .get(s.server.token_url())
            .bearer_auth(ALICE)
            .header("origin", "https://app.example.com"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let exposed = a
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_owned();
    for h in ["x-ratelimit-remaining", "retry-after"] {
        assert!(exposed.contains(h), "{exposed}");
    }

    let calls = s.upstream.calls();
    let a = answer(
        client()
            .get(s.server.token_url())
            .bearer_auth(ALICE)
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    assert_eq!(a.error(), "forbidden");
    assert!(a.header("access-control-allow-origin").is_none());
    assert_eq!(s.upstream.calls(), calls, "a foreign origin costs no mint");
    s.server.shutdown().await;
}

/// Fire `n` requests for each credential at once; statuses per credential, and the remaining
/// counts of the successes.
async fn burst(
    server: &RunningServer,
    who: &[&str],
    n: usize,
) -> (BTreeMap<String, Vec<u16>>, Vec<Answer>) {
    let http = client();
    let mut tasks = tokio::task::JoinSet::new();
    for credential in who {
        for _ in 0..n {
            let request = http.get(server.token_url()).bearer_auth(credential);
            let credential = (*credential).to_owned();
            tasks.spawn(async move { (credential, answer(request).await) });
        }
    }
    let mut statuses: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    let mut answers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (credential, a) = joined.expect("task");
        statuses
            .entry(credential)
            .or_default()
            .push(a.status.as_u16());
        answers.push(a);
    }
    (statuses, answers)
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

async fn rate_limits_are_exact_under_concurrent_requests(store: Store) {
    // Per client: a budget of 5 an hour lets exactly 5 of 40 simultaneous requests through.
    let second = match &store {
        Store::Memory => Store::Memory,
        Store::Redis(_) => Store::redis().expect("redis-server was there a moment ago"),
    };
    let s = setup_in(store, |c| {
        c.client_limit = Some("5/h".parse().expect("spec"));
    })
    .await;
    let (statuses, answers) = burst(&s.server, &[ALICE], 40).await;
    assert_eq!(count(&statuses[ALICE], 200), 5, "{statuses:?}");
    assert_eq!(count(&statuses[ALICE], 429), 35, "{statuses:?}");
    let mut remaining: Vec<u64> = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .filter_map(|a| a.rate().1)
        .collect();
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        [0, 1, 2, 3, 4],
        "each success saw its own place in the budget"
    );
    for a in answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
    {
        assert_eq!(a.error(), "rate_limited");
        assert!(
            a.message()
                .contains("client alice is over its rate limit (5/h)"),
            "{a:?}"
        );
        assert_eq!(a.rate().0, Some(5));
        assert_eq!(a.rate().1, Some(0));
        // One request back every 12 minutes; the whole budget within the hour.
        let retry: u64 = a
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((700..=720).contains(&retry), "{retry}");
        assert!(
            a.rate().2.is_some_and(|r| (3500..=3600).contains(&r)),
            "{a:?}"
        );
    }
    assert_eq!(
        s.upstream.calls(),
        5,
        "refused requests made no upstream call"
    );
    // Another client has its own budget.
    assert_eq!(get(&s.server, "", Some(BOB)).await.status, StatusCode::OK);
    s.server.shutdown().await;

    // Global: 8 an hour in all, however the 3 clients (5 each) race for it.
    let s = setup_in(second, |c| {
        c.client_limit = Some("5/h".parse().expect("spec"));
        c.global_limit = Some("8/h".parse().expect("spec"));
    })
    .await;
    let (statuses, answers) = burst(&s.server, &[ALICE, BOB, CAROL], 10).await;
    let ok: usize = statuses.values().map(|v| count(v, 200)).sum();
    assert_eq!(ok, 8, "{statuses:?}");
    for v in statuses.values() {
        assert!(count(v, 200) <= 5, "{statuses:?}");
    }
    assert_eq!(s.upstream.calls(), 8);
    let global_refusals = answers
        .iter()
        .filter(|a| {
            a.message()
                .contains("this server is over its rate limit (8/h)")
        })
        .count();
    let client_refusals = answers
        .iter()
        .filter(|a| {
            a.message().contains("is over its rate limit (5/h)") && !a.message().contains("server")
        })
        .count();
    // Each client passes exactly 5 through its own limit; 8 of those 15 pass the global one.
    assert_eq!((global_refusals, client_refusals), (7, 15));
    let metrics = s.server.metrics_text();
    assert!(
        metrics.contains(&format!("reason=\"global_rate_limit\"}} {global_refusals}")),
        "{metrics}"
    );
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_become_clear_errors() {
    // A wrong API key: 502, said plainly, the key nowhere.
    let emu = common::start(common::config()).await;
    let wrong = "wrong-api-key-fedcba9876543210";
    let server = serve(api_key_provider(wrong, &emu.token_url(), BOUND), |_| {}).await;
    let a = get(&server, "", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{a:?}");
    assert_eq!(a.error(), "upstream_rejected");
    assert!(
        a.message()
            .contains("upstream rejected the API key (HTTP 401)"),
        "{a:?}"
    );
    assert!(!format!("{:?} {}", a.headers, a.body).contains(wrong));
    server.shutdown().await;

    let s = setup(|_| {}).await;
    // One transient failure: retried, and the caller never knows.
    s.emu.add_fault("token:500".parse().expect("fault"));
    let a = get(&s.server, "", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(s.upstream.calls(), 2);
    // Two: 502 naming the upstream status.
    s.emu.add_fault("token:503x2".parse().expect("fault"));
    let a = get(&s.server, "", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{a:?}");
    assert_eq!(a.error(), "upstream_unavailable");
    assert!(a.message().contains("upstream failed (HTTP 503)"), "{a:?}");
    assert_eq!(s.upstream.calls(), 4);
    // Rate limited upstream: 503 with its Retry-After, not retried.
    s.emu.add_fault("token:429:7".parse().expect("fault"));
    let a = get(&s.server, "", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{a:?}");
    assert_eq!(a.error(), "upstream_rate_limited");
    assert_eq!(a.header("retry-after"), Some("7"));
    assert_eq!(s.upstream.calls(), 5);
    let metrics = s.server.metrics_text();
    for line in [
        "aai_live_serve_upstream_failures_total{class=\"transient\"} 3",
        "aai_live_serve_upstream_failures_total{class=\"rate_limited\"} 1",
        "aai_live_serve_upstream_retries_total 2",
        "aai_live_serve_upstream_request_duration_seconds_count 5",
        "aai_live_serve_responses_total{code=\"502\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    s.server.shutdown().await;

    // Slower than the upstream timeout, twice: 502 after the retry.
    let emu = common::start(common::config()).await;
    emu.add_fault("token-delay:3sx2".parse().expect("fault"));
    let server = serve(
        api_key_provider(KEY, &emu.token_url(), Duration::from_millis(300)),
        |_| {},
    )
    .await;
    let a = get(&server, "", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{a:?}");
    assert!(a.message().contains("did not answer"), "{a:?}");
    server.shutdown().await;

    // Nothing listening upstream.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let server = serve(
        api_key_provider(KEY, &format!("http://127.0.0.1:{port}/v3/token"), BOUND),
        |_| {},
    )
    .await;
    let a = get(&server, "", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{a:?}");
    assert_eq!(a.error(), "upstream_unavailable");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_timed_out_requests_get_503() {
    let (gate, mut entered) = gate();
    let server = serve(gate.clone(), |c| {
        c.max_in_flight = 1;
        c.request_timeout = Duration::from_millis(400);
    })
    .await;
    let url = server.token_url();
    let first = tokio::spawn(answer(client().get(url).bearer_auth(ALICE)));
    entered
        .recv()
        .await
        .expect("the first request reached the upstream");
    // The only upstream slot is taken.
    let a = get(&server, "", Some(BOB)).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{a:?}");
    assert_eq!(a.error(), "busy");
    assert_eq!(a.header("retry-after"), Some("1"));
    // The first one never gets its token: the request deadline answers for it.
    let a = first.await.expect("task");
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{a:?}");
    assert_eq!(a.error(), "timeout");
    let metrics = server.metrics_text();
    assert!(
        metrics.contains("reason=\"busy\"} 1") && metrics.contains("reason=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("aai_live_serve_upstream_in_flight 0"),
        "the timed-out fetch was dropped: {metrics}"
    );
    server.shutdown().await;
}

async fn health_metrics_and_json_errors(store: Store) {
    let s = setup_in(store, |c| {
        c.client_limit = Some("10/min".parse().expect("spec"));
    })
    .await;
    let a = answer(client().get(format!("{}/healthz", s.server.base_url()))).await;
    assert_eq!(
        (a.status, a.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let a = get(&s.server, "", Some(ALICE)).await;
    assert_eq!(a.rate(), (Some(10), Some(9), Some(6)), "{a:?}");
    let a = answer(client().get(format!("{}/nowhere", s.server.base_url()))).await;
    assert_eq!((a.status, a.error()), (StatusCode::NOT_FOUND, "not_found"));
    let a = answer(client().delete(s.server.token_url())).await;
    assert_eq!(
        (a.status, a.error()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );

    let response = client()
        .get(format!("{}/metrics", s.server.base_url()))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.expect("text");
    for line in [
        "aai_live_serve_tokens_minted_total{client=\"alice\"} 1",
        "aai_live_serve_tokens_minted_total{client=\"carol\"} 0",
        "aai_live_serve_responses_total{code=\"200\"} 2",
        "aai_live_serve_responses_total{code=\"404\"} 1",
        "aai_live_serve_token_request_duration_seconds_count 2",
        "# TYPE aai_live_serve_token_request_duration_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert_eq!(s.upstream.calls(), 1, "health and metrics cost no mint");
    s.server.shutdown().await;
}

/// One row of the `GET /metrics` table in docs/server.md.
#[derive(Debug)]
struct DocumentedSeries {
    name: String,
    labels: Vec<String>,
    kind: String,
    /// The backticked words of the meaning column: the label values a labelled series takes.
    values: Vec<String>,
}

fn documented_series() -> Vec<DocumentedSeries> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/server.md"))
        .expect("docs/server.md");
    let section = doc
        .split("### `GET /metrics`")
        .nth(1)
        .expect("a GET /metrics section");
    let rows: Vec<DocumentedSeries> = section
        .lines()
        .take_while(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with("| `aai_live_serve"))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            let series = cells[0].trim_matches('`');
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (
                    name,
                    labels
                        .trim_end_matches('}')
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                ),
                None => (series, Vec::new()),
            };
            let values = cells[2]
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            DocumentedSeries {
                name: name.to_owned(),
                labels,
                kind: cells[1].to_owned(),
                values,
            }
        })
        .collect();
    assert_eq!(rows.len(), 13, "the documented series: {rows:?}");
    rows
}

/// The label names and values of a sample line `name{a="x",b="y"} 1`.
fn sample_labels(line: &str) -> Vec<(String, String)> {
    let Some((_, rest)) = line.split_once('{') else {
        return Vec::new();
    };
    let inside = rest.rsplit_once('}').map_or(rest, |(inside, _)| inside);
    inside
        .split("\",")
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once("=\"").expect("key=\"value\"");
            (key.to_owned(), value.trim_end_matches('"').to_owned())
        })
        .collect()
}

/// `text` has a TYPE and HELP line for every series docs/server.md documents and no other, the
/// documented label names, the documented label values, and every histogram bucket.
fn assert_documented_series(text: &str) {
    let documented = documented_series();
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    assert_eq!(
        typed.len(),
        documented.len(),
        "one TYPE line per documented series:\n{text}"
    );
    for series in &documented {
        let name = &series.name;
        let type_line = format!("{name} {}", series.kind);
        assert!(
            typed.contains(&type_line.as_str()),
            "# TYPE {type_line} in\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "# HELP {name} in\n{text}"
        );
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.split(['{', ' ']).next().is_some_and(|n| {
                    n == name || (series.kind == "histogram" && n.starts_with(name.as_str()))
                })
            })
            .collect();
        assert!(!samples.is_empty(), "samples of {name} in\n{text}");
        if series.kind == "histogram" {
            for le in [
                "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                "0.5", "1", "2.5", "5", "10", "+Inf",
            ] {
                let bucket = format!("{name}_bucket{{le=\"{le}\"}} ");
                assert!(
                    samples.iter().any(|l| l.starts_with(&bucket)),
                    "{bucket} in\n{text}"
                );
            }
            for part in ["_sum ", "_count "] {
                let line = format!("{name}{part}");
                assert!(
                    samples.iter().any(|l| l.starts_with(&line)),
                    "{line} in\n{text}"
                );
            }
            continue;
        }
        for sample in &samples {
            let keys: Vec<String> = sample_labels(sample).into_iter().map(|(k, _)| k).collect();
            assert_eq!(keys, series.labels, "labels of {sample}");
        }
        // A label whose values the docs list takes exactly those values (pre-created at 0).
        if series.labels.len() == 1 && !series.values.is_empty() {
            let mut seen: Vec<String> = samples
                .iter()
                .flat_map(|l| sample_labels(l))
                .map(|(_, v)| v)
                .collect();
            let mut listed = series.values.clone();
            seen.sort();
            listed.sort();
            assert_eq!(seen, listed, "values of {name}");
        }
    }
}

/// A scrape of `/metrics` over HTTP shows exactly the series docs/server.md documents, with
/// their types, labels and label values, in the content type a Prometheus server expects, and
/// counts what happened.
async fn a_metrics_scrape_has_the_documented_series_and_counts(store: Store) {
    let redis = matches!(store, Store::Redis(_));
    let s = setup_in(store, |c| {
        c.client_limit = Some("100/min".parse().expect("spec"));
    })
    .await;
    for credential in [ALICE, ALICE, BOB] {
        let a = get(&s.server, "", Some(credential)).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
    }
    for credential in [None, Some("not-a-credential-0123456789abcdef")] {
        let a = get(&s.server, "", credential).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{a:?}");
    }
    let a = get(&s.server, "expires_in_seconds=soon", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    let a = answer(client().get(format!("{}/healthz", s.server.base_url()))).await;
    assert_eq!(a.status, StatusCode::OK);

    let response = client()
        .get(format!("{}/metrics", s.server.base_url()))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.expect("text");
    assert!(text.ends_with('\n') && !text.contains("# EOF"), "{text}");

    assert_documented_series(&text);

    let version = env!("CARGO_PKG_VERSION");
    for line in [
        format!("aai_live_serve_info{{version=\"{version}\"}} 1"),
        "aai_live_serve_tokens_minted_total{client=\"alice\"} 2".into(),
        "aai_live_serve_tokens_minted_total{client=\"bob\"} 1".into(),
        "aai_live_serve_tokens_minted_total{client=\"carol\"} 0".into(),
        "aai_live_serve_requests_denied_total{reason=\"unauthenticated\"} 2".into(),
        "aai_live_serve_requests_denied_total{reason=\"invalid_request\"} 1".into(),
        "aai_live_serve_requests_denied_total{reason=\"client_rate_limit\"} 0".into(),
        "aai_live_serve_upstream_failures_total{class=\"transient\"} 0".into(),
        "aai_live_serve_upstream_retries_total 0".into(),
        "aai_live_serve_upstream_in_flight 0".into(),
        // The scrape itself is counted once its answer is written.
        "aai_live_serve_responses_total{code=\"200\"} 4".into(),
        "aai_live_serve_responses_total{code=\"401\"} 2".into(),
        "aai_live_serve_responses_total{code=\"400\"} 1".into(),
        "aai_live_serve_token_request_duration_seconds_count 6".into(),
        "aai_live_serve_token_request_duration_seconds_bucket{le=\"+Inf\"} 6".into(),
        "aai_live_serve_upstream_request_duration_seconds_count 3".into(),
        "aai_live_serve_limits_store_errors_total 0".into(),
        "aai_live_serve_limits_store_fallbacks_total 0".into(),
        "aai_live_serve_limits_store_up 1".into(),
        // One round trip per admitted request (the 400 was admitted first), none in memory.
        format!(
            "aai_live_serve_limits_store_request_duration_seconds_count {}",
            if redis { 4 } else { 0 }
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert_eq!(s.server.minted(), 3);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_under_way_finish() {
    let (gate, mut entered) = gate();
    let server = serve(gate.clone(), |_| {}).await;
    let addr = server.addr;
    let request = tokio::spawn(answer(client().get(server.token_url()).bearer_auth(ALICE)));
    entered
        .recv()
        .await
        .expect("the request reached the upstream");
    let stopping = tokio::spawn(server.shutdown());
    // New connections are refused once the accept loop has stopped...
    tokio::time::timeout(BOUND, async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the listener closes");
    assert!(
        !stopping.is_finished(),
        "the request under way holds the shutdown"
    );
    // ...while the request under way gets its token.
    gate.release.add_permits(1);
    let a = request.await.expect("task");
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    tokio::time::timeout(BOUND, stopping)
        .await
        .expect("stops")
        .expect("task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let (gate, _entered) = gate();
    let server = serve(gate, |c| c.header_timeout = Duration::from_millis(300)).await;
    let mut socket = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    socket
        .write_all(b"GET /token HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(BOUND, socket.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server closes a connection whose headers never end"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_signed_certificate() {
    let cert = common::SelfSigned::generate();
    let emu = common::start(common::config()).await;
    let server = serve(api_key_provider(KEY, &emu.token_url(), BOUND), |c| {
        c.tls = Some(cert.files());
    })
    .await;
    assert!(server.tls);
    assert_eq!(server.token_url(), format!("https://{}/token", server.addr));
    let pem = cert.pem();
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("PEM")])
        .timeout(BOUND)
        .build()
        .expect("client");
    let a = answer(https.get(server.token_url()).bearer_auth(ALICE)).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    redeem(&emu, a.body["token"].as_str().expect("token")).await;
    // A client that does not trust the certificate gets no answer at all.
    assert!(client().get(server.token_url()).send().await.is_err());
    server.shutdown().await;

    // Unreadable TLS files are a start error, not a panic.
    let mut config = base_config();
    config.tls = Some(TlsFiles {
        cert: cert.key().with_file_name("missing.pem"),
        key: cert.key(),
    });
    let e = server::start(config, api_key_provider(KEY, &emu.token_url(), BOUND))
        .await
        .expect_err("no certificate");
    assert!(e.to_string().contains("missing.pem"), "{e}");
}

#[tokio::test]
async fn bad_settings_fail_at_start() {
    let (gate, _entered) = gate();
    let mut config = base_config();
    config.policy.min_expires_in = 90;
    let e = server::start(config, gate.clone())
        .await
        .expect_err("policy");
    assert!(e.to_string().contains("token window"), "{e}");
    let mut config = base_config();
    config.cors_origins = vec!["*".into()];
    let e = server::start(config, gate.clone())
        .await
        .expect_err("wildcard");
    assert!(e.to_string().contains("every web page"), "{e}");
    // The port is taken.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut config = base_config();
    config.listen = taken.local_addr().expect("addr");
    let e = server::start(config, gate).await.expect_err("taken");
    assert!(
        matches!(e, ServerError::Listen(ListenError::Bind { .. })),
        "{e}"
    );
}
