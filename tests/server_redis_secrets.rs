//! `aai-live serve` with a password-protected Redis limits store leaks neither the password nor
//! a client credential: across tokens, limits, refusals, Redis going away and coming back, and a
//! server configured with the wrong password, every log line (captured at TRACE from every
//! thread, our dependencies' included), every response and the start error are free of them.
//!
//! Without redis-server the test says it was skipped and passes; with `CI` set it fails.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aai_live::provider::api_key::ApiKeyProvider;
use aai_live::secret::ApiKey;
use aai_live::server::{self, Auth, Credentials, ServerConfig, StoreConfig, hash_credential};
use common::{Capture, KEY, encoded};
use redis_server::{RedisOptions, RedisServer};

const ALICE: &str = "alice-credential-0123456789abcdef";
const GUESS: &str = "mallory-guess-0123456789abcdef";
const PASSWORD: &str = "redis-password-7b1e0c9d2f4a";
const WRONG_PASSWORD: &str = "wrong-redis-password-5c8a1f";

fn occurrences(haystack: &str, secret: &str) -> usize {
    haystack.matches(secret).count() + haystack.matches(&encoded(secret)).count()
}

async fn record(all: &mut Vec<String>, request: reqwest::RequestBuilder) -> u16 {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let mut text = format!("{status}\n");
    for (name, value) in response.headers() {
        let _ = writeln!(
            text,
            "{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    text.push_str(&response.text().await.expect("body"));
    all.push(text);
    status
}

async fn serve(redis: &RedisServer, password: &str, emu_url: &str) -> server::RunningServer {
    try_serve(redis, password, emu_url).await.expect("server")
}

async fn try_serve(
    redis: &RedisServer,
    password: &str,
    emu_url: &str,
) -> Result<server::RunningServer, server::ServerError> {
    let creds = Credentials::parse(
        &format!("alice:{}\n", hash_credential(ALICE)),
        "credentials",
    )
    .expect("credentials");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), Auth::Bearer(creds));
    config.client_limit = Some("2/h".parse().expect("spec"));
    config.refusal_limit = Some("2/h".parse().expect("spec"));
    config.limits = StoreConfig {
        password: Some(password.to_owned().into()),
        timeout: Duration::from_millis(500),
        ..StoreConfig::redis(&redis.url()).expect("URL")
    };
    let upstream = ApiKeyProvider::new(
        ApiKey::new(KEY),
        "the test key",
        emu_url.parse().expect("url"),
        Duration::from_secs(5),
    )
    .expect("provider");
    server::start(config, Arc::new(upstream)).await
}

async fn every_path(redis: &mut RedisServer, all: &mut Vec<String>) {
    let emu = common::start(common::config()).await;
    let http = reqwest::Client::new();
    let running = serve(redis, PASSWORD, &emu.token_url()).await;
    let (url, base) = (running.token_url(), running.base_url());
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(record(all, http.get(&url).bearer_auth(ALICE)).await);
    }
    for _ in 0..3 {
        statuses.push(record(all, http.get(&url).bearer_auth(GUESS)).await);
    }
    assert_eq!(statuses, [200, 200, 429, 401, 401, 429]);
    // Redis goes away, and comes back.
    redis.stop();
    assert_eq!(record(all, http.get(&url).bearer_auth(ALICE)).await, 503);
    record(all, http.get(format!("{base}/readyz"))).await;
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while record(all, http.get(format!("{base}/readyz"))).await != 200 {
        assert!(Instant::now() < deadline, "the store did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(record(all, http.get(&url).bearer_auth(ALICE)).await, 200);
    record(all, http.get(format!("{base}/metrics"))).await;
    running.shutdown().await;

    // The wrong password: refused by Redis, so the server does not start; its error is shown.
    let refused = try_serve(redis, WRONG_PASSWORD, &emu.token_url())
        .await
        .expect_err("the store refuses the password");
    all.push(refused.to_string());
    emu.shutdown().await;
}

#[test]
fn no_store_password_in_logs_or_responses() {
    let Some(mut redis) = RedisServer::start_with(&RedisOptions {
        password: Some(PASSWORD.into()),
        ..RedisOptions::default()
    }) else {
        return;
    };
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .try_init()
        .expect("the only subscriber in this test binary");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut all = Vec::new();
    runtime.block_on(every_path(&mut redis, &mut all));
    drop(runtime);

    let logs = capture.text();
    assert!(
        logs.contains("the limits store cannot be reached")
            && logs.contains("the limits store is reachable again"),
        "the outage and the recovery were logged:\n{logs}"
    );
    let everything = all.join("\n");
    for (secret, what) in [
        (PASSWORD, "the Redis password"),
        (WRONG_PASSWORD, "the wrong Redis password"),
        (ALICE, "alice's credential"),
        (GUESS, "a guessed credential"),
        (KEY, "the API key"),
    ] {
        assert_eq!(occurrences(&logs, secret), 0, "{what} in the logs:\n{logs}");
        assert_eq!(
            occurrences(&everything, secret),
            0,
            "{what} in a response:\n{everything}"
        );
    }
}
