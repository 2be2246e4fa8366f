//! `aai-live serve` replicas sharing their rate limits in a real `redis-server` (started by the
//! tests on a free loopback port, see tests/common/redis.rs): exact budgets across two serve
//! processes, the shared refusal limit, both failure policies while Redis is stopped and the
//! recovery once it is back (serve is not restarted), TLS with a CA and a password, and the Lua
//! script against the Rust GCRA rule.
//!
//! Without redis-server each test says it was skipped and passes; with `CI` set they fail.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aai_live::config::StoreFailure;
use aai_live::provider::api_key::ApiKeyProvider;
use aai_live::secret::ApiKey;
use aai_live::server::limit::{Gcra, Limiter};
use aai_live::server::metrics::Metrics;
use aai_live::server::redis_store::{Budget, RedisStore};
use aai_live::server::{self, Auth, Credentials, ServerConfig, StoreConfig, hash_credential};
use common::{KEY, aai_live};
use redis_server::{RedisOptions, RedisServer};
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(10);
const CLIENTS: [(&str, &str); 3] = [
    ("alice", "alice-credential-0123456789abcdef"),
    ("bob", "bob-credential-0123456789abcdef"),
    ("carol", "carol-credential-0123456789abcdef"),
];

/// A credentials file for [`CLIENTS`] in `dir`.
fn credentials_file(dir: &Path) -> String {
    let mut text = String::new();
    for (name, credential) in CLIENTS {
        let _ = writeln!(text, "{name}:{}", hash_credential(credential));
    }
    let path = dir.join("credentials");
    std::fs::write(&path, text).expect("write credentials");
    path.display().to_string()
}

fn credential(name: &str) -> &'static str {
    CLIENTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
        .expect("a known client")
}

/// One `aai-live serve` process (killed when dropped).
struct Replica {
    child: tokio::process::Child,
    base: String,
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Replica {
    /// `serve` with the emulator upstream, `args` and `AAI_LIVE__*` variables `env`.
    async fn start(home: &Path, upstream: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let credentials = credentials_file(home);
        let mut cmd = aai_live(home);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--credentials",
            &credentials,
        ])
        .args(["--upstream", upstream, "--key-env", "REPLICA_KEY"])
        .args(args)
        .env("REPLICA_KEY", KEY);
        for (name, value) in env {
            cmd.env(name, value);
        }
        let mut child = cmd.spawn().expect("spawn aai-live serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = match tokio::time::timeout(BOUND, stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = child.start_kill();
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = tokio::time::timeout(BOUND, e.read_to_string(&mut stderr)).await;
                }
                panic!("serve did not start ({other:?}): {stderr}");
            }
        };
        let base = line
            .strip_prefix("aai-live serve listening on ")
            .unwrap_or_else(|| panic!("first line {line:?}"))
            .to_owned();
        Self {
            child,
            base,
            _stdout: stdout,
        }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

#[derive(Debug)]
struct Answer {
    client: String,
    status: StatusCode,
    remaining: Option<u64>,
    retry_after: Option<u64>,
    reset: Option<u64>,
    body: Value,
}

async fn ask(http: &reqwest::Client, replica: &str, client: &str, credential: &str) -> Answer {
    let response = http
        .get(format!("{replica}/token"))
        .bearer_auth(credential)
        .send()
        .await
        .expect("token request");
    let number = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    let (remaining, retry_after, reset) = (
        number("x-ratelimit-remaining"),
        number("retry-after"),
        number("x-ratelimit-reset"),
    );
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        client: client.to_owned(),
        status,
        remaining,
        retry_after,
        reset,
        body,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(BOUND)
        .build()
        .expect("client")
}

/// `per_client` requests from each of `clients` at once, alternating between `replicas`.
async fn burst(replicas: &[&Replica], clients: &[&str], per_client: usize) -> Vec<Answer> {
    let http = http();
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0;
    for _ in 0..per_client {
        for client in clients {
            let base = replicas[n % replicas.len()].base.clone();
            n += 1;
            let (http, client) = (http.clone(), (*client).to_owned());
            tasks.spawn(async move { ask(&http, &base, &client, credential(&client)).await });
        }
    }
    let mut answers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        answers.push(joined.expect("task"));
    }
    answers
}

fn ok_by_client(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in answers {
        *out.entry(a.client.clone()).or_default() += usize::from(a.status == StatusCode::OK);
    }
    out
}

/// Two replicas, per-client 10/h and global 15/h in one Redis: 40 concurrent requests from
/// each of two clients, spread over both, get exactly 15 tokens with neither client above 10;
/// one client alone gets exactly 10 whose remaining counts are 9..0, each once, whichever replica
/// answered; refusals (bad credentials) share one budget too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_spend_one_set_of_budgets() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let emu = common::start(common::config()).await;
    let home = TempDir::new().expect("tempdir");
    let limits = [
        "--limits-store",
        &redis.url(),
        "--rate-limit",
        "10/h",
        "--global-rate-limit",
        "15/h",
        "--refusal-limit",
        "4/h",
        "--max-in-flight",
        "256",
    ];
    let prefix = |p: &'static str| [("AAI_LIVE__SERVER__LIMITS_STORE_PREFIX", p)];
    let base = emu.base_url();
    let a = Replica::start(home.path(), &base, &limits, &prefix("pair-one")).await;
    let b = Replica::start(home.path(), &base, &limits, &prefix("pair-one")).await;

    let answers = burst(&[&a, &b], &["alice", "bob"], 40).await;
    let ok = ok_by_client(&answers);
    assert_eq!(ok.values().sum::<usize>(), 15, "{ok:?}");
    assert!(ok.values().all(|n| *n <= 10), "{ok:?}");
    for refused in answers.iter().filter(|a| a.status != StatusCode::OK) {
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{refused:?}");
        assert_eq!(refused.remaining, Some(0), "{refused:?}");
        let message = refused.body["message"].as_str().unwrap_or_default();
        // 10/h: one request back every 6 min; 15/h: every 4 min.
        let retry = refused.retry_after.expect("Retry-After");
        if message.contains("this server") {
            assert!((230..=240).contains(&retry), "{refused:?}");
        } else {
            assert!(
                message.contains("is over its rate limit (10/h)"),
                "{refused:?}"
            );
            assert!((350..=360).contains(&retry), "{refused:?}");
        }
    }
    // Both replicas see the same budget: the next request is refused by either, with the same
    // reset.
    let http = http();
    let on_a = ask(&http, &a.base, "alice", credential("alice")).await;
    let on_b = ask(&http, &b.base, "alice", credential("alice")).await;
    assert_eq!(
        (on_a.status, on_b.status),
        (StatusCode::TOO_MANY_REQUESTS, StatusCode::TOO_MANY_REQUESTS)
    );
    let (ra, rb) = (on_a.reset.expect("reset"), on_b.reset.expect("reset"));
    assert!(ra.abs_diff(rb) <= 1, "{on_a:?} {on_b:?}");

    // The refusal budget of an address is shared: 4 refusals, then 429, however they are spread.
    let mut statuses = Vec::new();
    for i in 0..10 {
        let replica = if i % 2 == 0 { &a } else { &b };
        statuses.push(
            ask(&http, &replica.base, "?", "not-a-credential-0123456789")
                .await
                .status,
        );
    }
    let count = |s: StatusCode| statuses.iter().filter(|x| **x == s).count();
    assert_eq!(
        (
            count(StatusCode::UNAUTHORIZED),
            count(StatusCode::TOO_MANY_REQUESTS)
        ),
        (4, 6),
        "{statuses:?}"
    );
    a.stop().await;
    b.stop().await;

    // One client alone over two fresh replicas (their own key prefix): exactly its 10, and each
    // remaining count once.
    let c1 = Replica::start(home.path(), &base, &limits, &prefix("pair-two")).await;
    let c2 = Replica::start(home.path(), &base, &limits, &prefix("pair-two")).await;
    let answers = burst(&[&c1, &c2], &["carol"], 30).await;
    let mut remaining: Vec<u64> = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .filter_map(|a| a.remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..10).collect::<Vec<u64>>(), "{answers:?}");
    // The keys are namespaced and expire.
    let keys = redis.command(&["KEYS", "*"]).expect("KEYS");
    for key in [
        "pair-one:client:alice",
        "pair-one:global",
        "pair-one:refusal:127.0.0.1",
        "pair-two:client:carol",
    ] {
        assert!(keys.contains(key), "{key} in {keys}");
    }
    let ttl = redis
        .command(&["PTTL", "pair-two:client:carol"])
        .expect("PTTL");
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().expect("a TTL");
    assert!(
        ttl > 3_000_000 && ttl <= 3_600_000,
        "the key expires when the budget is full: {ttl}"
    );
    c1.stop().await;
    c2.stop().await;
}

/// `GET path` on `base`: status and JSON body.
async fn get_json(base: &str, path: &str) -> (StatusCode, Value) {
    let response = http()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn metrics(base: &str) -> String {
    http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

fn series(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
}

/// Redis stopped in the middle: the closed replica answers 503 with Retry-After and is not
/// ready; the open one keeps minting with its own memory limits and stays ready; /healthz stays
/// 200 on both. Redis back on the same port: both use it again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_store_follows_the_policy_and_comes_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let emu = common::start(common::config()).await;
    let home = TempDir::new().expect("tempdir");
    let start = |policy: &'static str| {
        let args = [
            "--limits-store",
            &redis.url(),
            "--limits-store-failure",
            policy,
            "--rate-limit",
            "100/h",
        ]
        .map(str::to_owned);
        let (home, base) = (home.path().to_owned(), emu.base_url());
        async move {
            let args = args.each_ref().map(String::as_str);
            // Each replica has its own key prefix, named after its policy.
            let prefix = [("AAI_LIVE__SERVER__LIMITS_STORE_PREFIX", policy)];
            Replica::start(&home, &base, &args, &prefix).await
        }
    };
    let closed = start("closed").await;
    let open = start("open").await;
    let http = http();
    for replica in [&closed, &open] {
        assert_eq!(
            ask(&http, &replica.base, "alice", credential("alice"))
                .await
                .status,
            StatusCode::OK
        );
        let (status, body) = get_json(&replica.base, "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["limits_store"]["state"], "up", "{body}");
    }

    redis.stop();
    let refused = ask(&http, &closed.base, "alice", credential("alice")).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{refused:?}"
    );
    assert_eq!(refused.body["error"], "unavailable", "{refused:?}");
    assert_eq!(refused.retry_after, Some(1));
    // Refused requests too: the closed policy gives nothing away while the store is down.
    let guess = ask(&http, &closed.base, "?", "not-a-credential-0123456789").await;
    assert_eq!(guess.status, StatusCode::SERVICE_UNAVAILABLE, "{guess:?}");
    let (status, body) = get_json(&closed.base, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["limits_store"]["state"], "down", "{body}");
    assert_eq!(body["limits_store"]["failure_policy"], "closed", "{body}");

    let fallback = ask(&http, &open.base, "alice", credential("alice")).await;
    assert_eq!(fallback.status, StatusCode::OK, "{fallback:?}");
    assert_eq!(
        fallback.remaining,
        Some(99),
        "a fresh budget in memory: {fallback:?}"
    );
    let (status, body) = get_json(&open.base, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["limits_store"]["state"], "down", "{body}");
    for replica in [&closed, &open] {
        assert_eq!(get_json(&replica.base, "/healthz").await.0, StatusCode::OK);
    }
    let (closed_metrics, open_metrics) = (metrics(&closed.base).await, metrics(&open.base).await);
    assert_eq!(series(&closed_metrics, "aai_live_serve_limits_store_up"), 0);
    assert!(series(&closed_metrics, "aai_live_serve_limits_store_errors_total") >= 1);
    assert_eq!(
        series(
            &closed_metrics,
            "aai_live_serve_requests_denied_total{reason=\"limits_store_unavailable\"}"
        ),
        2
    );
    assert!(series(&open_metrics, "aai_live_serve_limits_store_fallbacks_total") >= 1);

    // Back on the same port: both replicas find it again on their own.
    redis.restart();
    for replica in [&closed, &open] {
        wait_until_ready(replica).await;
        let a = ask(&http, &replica.base, "bob", credential("bob")).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
    }
    // The decisions are Redis's again (its data is gone with the restart: fresh keys).
    let keys = redis.command(&["KEYS", "*"]).expect("KEYS");
    assert!(
        keys.contains("closed:client:bob") && keys.contains("open:client:bob"),
        "{keys}"
    );
    assert_eq!(
        series(
            &metrics(&closed.base).await,
            "aai_live_serve_limits_store_up"
        ),
        1
    );
    closed.stop().await;
    open.stop().await;
}

/// A request that times out at the start of an outage (Redis stopped, the request's script
/// already in its socket) is answered 503, and must never be charged when Redis runs the script
/// later: it carries a deadline on Redis's clock. With a budget of one token an hour, the next
/// request after the outage is minted (it used to get a 429: the refused request had spent the
/// budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_in_an_outage_is_not_charged_when_the_store_runs_it_late() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let pid = redis.pid().expect("redis-server pid").to_string();
    let emu = common::start(common::config()).await;
    let home = TempDir::new().expect("tempdir");
    let url = redis.url();
    let args = ["--limits-store", &url, "--rate-limit", "1/h"];
    let timeout = [("AAI_LIVE__SERVER__LIMITS_STORE_TIMEOUT", "300ms")];
    let replica = Replica::start(home.path(), &emu.base_url(), &args, &timeout).await;
    wait_until_ready(&replica).await;
    let signal = |which: &str| {
        let status = std::process::Command::new("kill")
            .args([which, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    let http = http();
    // Another client first: Redis then knows the script, and runs a late EVALSHA as it is.
    let bob = ask(&http, &replica.base, "bob", credential("bob")).await;
    assert_eq!(bob.status, StatusCode::OK, "{bob:?}");
    signal("-STOP");
    let refused = ask(&http, &replica.base, "alice", credential("alice")).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{refused:?}"
    );
    // Well past the deadline (300 ms), Redis runs what it was sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal("-CONT");
    wait_until_ready(&replica).await;
    let minted = ask(&http, &replica.base, "alice", credential("alice")).await;
    assert_eq!(minted.status, StatusCode::OK, "{minted:?}");
    let refused = ask(&http, &replica.base, "alice", credential("alice")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{refused:?}");
    replica.stop().await;
}

/// A hostile store that answers every command with a bulk string of 2 GB: `serve` reads at most
/// 64 KiB of a reply (it used to buffer 416 MB from one `$2000000000`), counts the store as down
/// with a clear reason, and stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_store_cannot_make_serve_buffer_a_huge_reply() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hostile = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = [0_u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(b"$2000000000\r\n").await;
                let zeros = vec![b'0'; 64 * 1024];
                while socket.write_all(&zeros).await.is_ok() {}
            });
        }
    });
    let emu = common::start(common::config()).await;
    let home = TempDir::new().expect("tempdir");
    let url = format!("redis://127.0.0.1:{port}/0");
    let args = ["--limits-store", &url];
    let replica = Replica::start(home.path(), &emu.base_url(), &args, &[]).await;
    let pid = replica.child.id().expect("pid");
    // The first attempt at start, then the watcher's, with backoff.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = get_json(&replica.base, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["limits_store"]["state"], "down", "{body}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let peak_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("VmHWM");
    eprintln!("serve against a hostile limits store: peak resident set {peak_kib} KiB");
    assert!(peak_kib < common::PEAK_KIB_LIMIT, "{peak_kib} KiB");
    replica.stop().await;
    let mut log = String::new();
    for entry in std::fs::read_dir(home.path().join("state/aai-live")).expect("log dir") {
        log.push_str(&std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default());
    }
    assert!(
        log.contains("a reply of the limits store is larger than 64 KiB"),
        "{log}"
    );
    hostile.abort();
}

/// Poll `/readyz` until it reports the store up (within 15 s).
async fn wait_until_ready(replica: &Replica) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = get_json(&replica.base, "/readyz").await;
        if body["limits_store"]["state"] == "up" {
            assert_eq!(status, StatusCode::OK);
            return;
        }
        assert!(Instant::now() < deadline, "not back: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn provider(url: &str) -> Arc<ApiKeyProvider> {
    Arc::new(
        ApiKeyProvider::new(
            ApiKey::new(KEY),
            "the test key",
            url.parse().expect("url"),
            BOUND,
        )
        .expect("provider"),
    )
}

fn bearer() -> Auth {
    let mut text = String::new();
    for (name, c) in CLIENTS {
        let _ = writeln!(text, "{name}:{}", hash_credential(c));
    }
    Auth::Bearer(Credentials::parse(&text, "credentials").expect("credentials"))
}

/// `rediss://` with the CA that signed the server's certificate and the right password: the
/// limits work. A CA that did not sign it: the store is down (503 under the closed policy), and
/// the server says so on /readyz. A wrong password: the server does not start (it used to start,
/// say it was listening, and answer 503 to everyone), naming the settings to check and never
/// the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_and_a_password() {
    let Some(redis) = RedisServer::start_with(&RedisOptions {
        password: Some("redis-password-0123456789".into()),
        tls: true,
        args: Vec::new(),
    }) else {
        return;
    };
    let emu = common::start(common::config()).await;
    let store = |password: &str, ca: &Path| StoreConfig {
        password: Some(password.to_owned().into()),
        ca: Some(ca.to_owned()),
        timeout: Duration::from_secs(2),
        ..StoreConfig::redis(&redis.url()).expect("rediss URL")
    };
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), bearer());
    config.limits = store("wrong-password", &redis.ca());
    let refused = server::start(config, provider(&emu.token_url()))
        .await
        .expect_err("the store refuses the password");
    let text = refused.to_string();
    assert!(
        text.contains("refuses this server's credentials")
            && text.contains("limits_store_password")
            && !text.contains("wrong-password"),
        "{text}"
    );
    for (password, ca, works) in [
        ("redis-password-0123456789", redis.ca(), true),
        ("redis-password-0123456789", redis.other_ca(), false),
    ] {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), bearer());
        config.client_limit = Some("2/h".parse().expect("spec"));
        config.limits = store(password, &ca);
        let running = server::start(config, provider(&emu.token_url()))
            .await
            .expect("starts, whether the store is reachable or not");
        let base = running.base_url();
        let http = http();
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(
                ask(&http, &base, "alice", credential("alice"))
                    .await
                    .status
                    .as_u16(),
            );
        }
        let (ready, body) = get_json(&base, "/readyz").await;
        if works {
            assert_eq!(statuses, [200, 200, 429]);
            assert_eq!(ready, StatusCode::OK, "{body}");
        } else {
            assert_eq!(statuses, [503, 503, 503], "{password} {}", ca.display());
            assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        }
        running.shutdown().await;
    }
}

/// The ACL user of docs/server.md (its exact permissions) is all the store needs; a key prefix
/// outside the user's pattern is refused by Redis, so the ACL is really in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_user_suffices() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/server.md"))
        .expect("docs/server.md");
    let rule = doc
        .lines()
        .find_map(|l| l.strip_prefix("user aai-live "))
        .expect("the ACL line in docs/server.md")
        .replace(">CHANGE-ME", ">acl-password-0123456789");
    let mut args = vec!["--user".to_owned(), "aai-live".to_owned()];
    args.extend(rule.split_whitespace().map(str::to_owned));
    let Some(redis) = RedisServer::start_with(&RedisOptions {
        args,
        ..RedisOptions::default()
    }) else {
        return;
    };
    let emu = common::start(common::config()).await;
    let url = format!("redis://aai-live@127.0.0.1:{}/0", redis.port());
    for (prefix, want) in [
        ("aai-live", [200, 200, 429]),
        ("elsewhere", [503, 503, 503]),
    ] {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), bearer());
        config.client_limit = Some("2/h".parse().expect("spec"));
        config.limits = StoreConfig {
            password: Some("acl-password-0123456789".to_owned().into()),
            prefix: prefix.to_owned(),
            ..StoreConfig::redis(&url).expect("URL")
        };
        let running = server::start(config, provider(&emu.token_url()))
            .await
            .expect("starts");
        let http = http();
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let base = running.base_url();
            statuses.push(
                ask(&http, &base, "alice", credential("alice"))
                    .await
                    .status
                    .as_u16(),
            );
        }
        assert_eq!(statuses, want, "prefix {prefix}");
        running.shutdown().await;
    }
}

/// The Lua script and `Gcra::decide` are the same rule: the same sequence of requests through
/// the Redis store and a memory limiter gets the same decisions and headers (times within the
/// few milliseconds between the two calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_and_the_memory_store_decide_alike() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let metrics = Metrics::new(&[]);
    let store = Arc::new(
        RedisStore::new(
            &redis.url().parse().expect("url"),
            None,
            None,
            Duration::from_secs(2),
            StoreFailure::Closed,
            metrics.store(),
        )
        .expect("store"),
    );
    let cancel = CancellationToken::new();
    store.start(cancel.clone()).await.expect("the store starts");
    assert!(store.is_up());
    for (spec, requests) in [("3/min", 6), ("5/h", 8), ("1/s", 3), ("100/day", 110)] {
        let spec: aai_live::server::RateSpec = spec.parse().expect("spec");
        let memory: Limiter<()> = Limiter::new(spec);
        let budget = Budget {
            key: format!("equivalence:{spec}"),
            gcra: Gcra::new(spec),
        };
        for i in 0..requests {
            let from_redis = store
                .decide(std::slice::from_ref(&budget))
                .await
                .expect("a decision")[0];
            let from_memory = memory.check(&());
            let close = |a: Duration, b: Duration| a.abs_diff(b) <= Duration::from_millis(20);
            assert_eq!(
                (from_redis.allowed, from_redis.limit, from_redis.remaining),
                (
                    from_memory.allowed,
                    from_memory.limit,
                    from_memory.remaining
                ),
                "{spec}, request {i}: {from_redis:?} vs {from_memory:?}"
            );
            assert!(
                close(from_redis.reset, from_memory.reset),
                "{from_redis:?} {from_memory:?}"
            );
            match (from_redis.retry_after, from_memory.retry_after) {
                (None, None) => {}
                (Some(a), Some(b)) => assert!(close(a, b), "{from_redis:?} {from_memory:?}"),
                other => panic!("{spec}, request {i}: {other:?}"),
            }
        }
    }
    cancel.cancel();
}
