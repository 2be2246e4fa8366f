//! `aai-live serve` leaks no secret: across every path (tokens handed out by GET and POST and to
//! the `remote` provider, bad and missing credentials, foreign origins, rate limits, bad
//! requests, an upstream that rejects the key, fails, or rate limits), the API key and the
//! client credentials appear in no log line (ours and our dependencies', captured at TRACE from
//! every thread) and in no response, and each minted token appears in exactly one place: the body
//! of the response that handed it out.

mod common;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use aai_live::config::{Config, ProviderConfig, ProviderKind};
use aai_live::provider::api_key::ApiKeyProvider;
use aai_live::provider::{self, TokenProvider, TokenRequest};
use aai_live::secret::ApiKey;
use aai_live::server::{self, Auth, Credentials, RunningServer, ServerConfig, hash_credential};
use common::{Capture, KEY, encoded};

const ALICE: &str = "alice-credential-0123456789abcdef";
const BOB: &str = "bob-credential-0123456789abcdef";
const WRONG_KEY: &str = "wrong-api-key-fedcba9876543210";
const WRONG_CREDENTIAL: &str = "mallory-guess-0123456789abcdef";

fn occurrences(haystack: &str, secret: &str) -> usize {
    haystack.matches(secret).count() + haystack.matches(&encoded(secret)).count()
}

/// Every response as text: status, headers, body.
#[derive(Default)]
struct Responses {
    all: Vec<String>,
    /// Tokens handed out, with the index of the response that carried each.
    tokens: Vec<(String, usize)>,
}

impl Responses {
    async fn record(&mut self, request: reqwest::RequestBuilder) -> u16 {
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
        let body = response.text().await.expect("body");
        text.push_str(&body);
        if status == 200
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&body)
            && let Some(token) = json["token"].as_str()
        {
            self.tokens.push((token.to_owned(), self.all.len()));
        }
        self.all.push(text);
        status
    }
}

fn upstream(key: &str, url: &str) -> Arc<dyn TokenProvider> {
    Arc::new(
        ApiKeyProvider::new(
            ApiKey::new(key),
            "the test key",
            url.parse().expect("url"),
            Duration::from_secs(5),
        )
        .expect("provider"),
    )
}

async fn serve(provider: Arc<dyn TokenProvider>) -> RunningServer {
    let creds = Credentials::parse(
        &format!(
            "alice:{}\nbob:{}\n",
            hash_credential(ALICE),
            hash_credential(BOB)
        ),
        "credentials",
    )
    .expect("credentials");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), Auth::Bearer(creds));
    config.client_limit = Some("8/h".parse().expect("spec"));
    config.refusal_limit = Some("3/h".parse().expect("spec"));
    config.cors_origins = vec!["https://app.example.com".into()];
    server::start(config, provider).await.expect("server")
}

/// The `remote` provider pointed at the server, with bob's credential from a file (read once,
/// when it is built).
fn remote_provider(url: &str) -> (Arc<dyn TokenProvider>, ProviderConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bearer = dir.path().join("credential");
    std::fs::write(&bearer, BOB).expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bearer, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let mut config = Config::default().provider;
    config.kind = ProviderKind::Remote;
    config.remote.url = Some(url.parse().expect("url"));
    config.remote.bearer_file = Some(bearer);
    config.remote.pass_lifetimes = true;
    (provider::build(&config).expect("remote"), config)
}

async fn every_path(responses: &mut Responses, remote_tokens: &mut Vec<String>) {
    let emu = common::start(common::config()).await;
    let server = serve(upstream(KEY, &emu.token_url())).await;
    let http = reqwest::Client::new();
    let url = server.token_url();

    // Tokens: GET, POST with JSON, from a listed browser origin.
    assert_eq!(
        responses.record(http.get(&url).bearer_auth(ALICE)).await,
        200
    );
    assert_eq!(
        responses
            .record(
                http.post(&url)
                    .bearer_auth(BOB)
                    .header("content-type", "application/json")
                    .body(r#"{"expires_in_seconds": 30}"#)
            )
            .await,
        200
    );
    assert_eq!(
        responses
            .record(
                http.get(&url)
                    .bearer_auth(ALICE)
                    .header("origin", "https://app.example.com")
            )
            .await,
        200
    );
    // The remote provider through the server.
    let (remote, config) = remote_provider(&url);
    let request = TokenRequest::from_config(&config);
    let token = remote.fetch(&request).await.expect("token via serve");
    tracing::info!(?token, %token, "the remote provider got a token");
    remote_tokens.push(token.expose().to_owned());

    // Refusals: no credential, a wrong one, a foreign origin, then the refusal limit.
    responses.record(http.get(&url)).await;
    responses
        .record(http.get(&url).bearer_auth(WRONG_CREDENTIAL))
        .await;
    responses
        .record(
            http.get(&url)
                .bearer_auth(ALICE)
                .header("origin", "https://evil.example"),
        )
        .await;
    assert_eq!(
        responses
            .record(http.get(&url).bearer_auth(WRONG_CREDENTIAL))
            .await,
        429
    );
    // Bad requests, then alice's own limit.
    responses
        .record(
            http.get(format!("{url}?expires_in_seconds=1"))
                .bearer_auth(ALICE),
        )
        .await;
    responses
        .record(http.post(&url).bearer_auth(ALICE).body("{not json"))
        .await;
    // The remote provider's failure on a refusal, logged like a caller would.
    let e = remote
        .fetch(&TokenRequest {
            expires_in_seconds: 1,
            max_session_duration_seconds: None,
        })
        .await
        .expect_err("below the minimum");
    tracing::warn!(%e, ?e, "remote provider refused");
    // Upstream failures: a 500 retried, two 500s, a 429.
    emu.add_fault("token:500".parse().expect("fault"));
    assert_eq!(responses.record(http.get(&url).bearer_auth(BOB)).await, 200);
    emu.add_fault("token:500x2".parse().expect("fault"));
    assert_eq!(responses.record(http.get(&url).bearer_auth(BOB)).await, 502);
    emu.add_fault("token:429:3".parse().expect("fault"));
    assert_eq!(responses.record(http.get(&url).bearer_auth(BOB)).await, 503);
    while responses.record(http.get(&url).bearer_auth(ALICE)).await == 200 {}
    responses
        .record(http.get(format!("{}/metrics", server.base_url())))
        .await;
    responses
        .record(http.get(format!("{}/healthz", server.base_url())))
        .await;
    server.shutdown().await;

    // An upstream that rejects the key.
    let server = serve(upstream(WRONG_KEY, &emu.token_url())).await;
    assert_eq!(
        responses
            .record(http.get(server.token_url()).bearer_auth(ALICE))
            .await,
        502
    );
    server.shutdown().await;
    emu.shutdown().await;
}

#[test]
fn no_secret_in_logs_or_responses() {
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
    let mut responses = Responses::default();
    let mut remote_tokens = Vec::new();
    runtime.block_on(every_path(&mut responses, &mut remote_tokens));
    drop(runtime);

    let logs = capture.text();
    assert!(
        logs.contains("aai_live::server::access") && logs.contains("client=\"alice\""),
        "the access log was captured, with client names:\n{logs}"
    );
    assert!(logs.contains("hyper"), "dependencies' logs too");
    let statuses: Vec<&str> = responses
        .all
        .iter()
        .filter_map(|r| r.lines().next())
        .collect();
    for code in ["200", "400", "401", "403", "429", "502", "503"] {
        assert!(statuses.contains(&code), "{code} among {statuses:?}");
    }
    assert!(responses.tokens.len() >= 8, "{}", responses.tokens.len());

    let everything = responses.all.join("\n");
    for (secret, what) in [
        (KEY, "the API key"),
        (WRONG_KEY, "the wrong API key"),
        (ALICE, "alice's credential"),
        (BOB, "bob's credential"),
        (WRONG_CREDENTIAL, "a guessed credential"),
    ] {
        assert_eq!(occurrences(&logs, secret), 0, "{what} in the logs:\n{logs}");
        assert_eq!(
            occurrences(&everything, secret),
            0,
            "{what} in a response:\n{everything}"
        );
    }
    for (token, index) in &responses.tokens {
        assert_eq!(occurrences(&logs, token), 0, "a token in the logs:\n{logs}");
        for (i, response) in responses.all.iter().enumerate() {
            let want = usize::from(i == *index);
            assert_eq!(
                occurrences(response, token),
                want,
                "token of response {index} in response {i}:\n{response}"
            );
        }
    }
    for token in &remote_tokens {
        assert_eq!(
            occurrences(&logs, token),
            0,
            "the remote provider's token in the logs"
        );
        assert_eq!(occurrences(&everything, token), 0);
    }
}
