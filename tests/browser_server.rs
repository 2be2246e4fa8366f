//! What `serve` gives browsers, over HTTP on 127.0.0.1: the client module and its worklet (with
//! CORS for the allowed origins, revalidated by ETag), the close-code table, `/config.json`, the
//! page at `/` with `--web` under its Content-Security-Policy, and `/token` for the server's own
//! origin (allowed) against foreign and forged ones (refused). Also the real binary with `--web`
//! pointed at the emulator.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aai_live::config::Config;
use aai_live::emulator::RunningEmulator;
use aai_live::protocol::close;
use aai_live::server::{self, Auth, BrowserSettings, Credentials, RunningServer, ServerConfig};
use common::KEY;
use reqwest::header::{self, HeaderMap};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const APP_ORIGIN: &str = "https://app.example";
const CREDENTIAL: &str = "browser-server-credential-0123456789";

fn credentials() -> Credentials {
    Credentials::parse(
        &format!("page:{}\n", server::hash_credential(CREDENTIAL)),
        "test",
    )
    .expect("credentials")
}

/// The emulator and `serve` in front of it; `tweak` edits the server's configuration.
async fn serve(
    auth: Auth,
    tweak: impl FnOnce(&mut ServerConfig),
) -> (RunningEmulator, RunningServer) {
    let emu = common::start(common::config()).await;
    let mut config = Config::default();
    config.provider.api_key.key_env = "AAI_LIVE_BROWSER_SERVER_TEST_KEY".into();
    config.provider.api_key.token_url = Some(emu.token_url().parse().expect("url"));
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).expect("key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    config.provider.api_key.key_file = Some(key_file);
    config.streaming.params.format_turns = true;
    let mut server_config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), auth);
    server_config.cors_origins = vec![APP_ORIGIN.into()];
    server_config.refusal_limit = None;
    server_config.browser = BrowserSettings::from_config(&config);
    tweak(&mut server_config);
    let upstream: Arc<dyn aai_live::provider::TokenProvider> =
        server::serve_cli::upstream_provider(&config).expect("upstream");
    let running = server::start(server_config, upstream).await.expect("serve");
    (emu, running)
}

async fn get(url: &str, headers: &[(header::HeaderName, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10));
    for (name, value) in headers {
        request = request.header(name.clone(), *value);
    }
    request.send().await.expect("request")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map_or("", |v| v.to_str().expect("ASCII header"))
}

#[tokio::test]
async fn the_client_files_are_served_to_allowed_origins_and_revalidated() {
    let (emu, running) = serve(Auth::None, |_| {}).await;
    let base = running.base_url();
    for (path, needle) in [
        ("/aai-live-client.js", "export class AaiLiveClient"),
        (
            "/aai-live-worklet.js",
            "registerProcessor(\"aai-live-capture\"",
        ),
    ] {
        let url = format!("{base}{path}");
        let r = get(&url, &[(header::ORIGIN, APP_ORIGIN)]).await;
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert_eq!(header(&h, "content-type"), "text/javascript; charset=utf-8");
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            APP_ORIGIN,
            "{path}"
        );
        assert_eq!(header(&h, "x-content-type-options"), "nosniff");
        assert_eq!(header(&h, "cache-control"), "no-cache");
        let etag = header(&h, "etag").to_owned();
        assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
        assert!(r.text().await.expect("body").contains(needle), "{path}");
        // A page elsewhere gets the file but no permission to use it.
        let r = get(&url, &[(header::ORIGIN, "https://evil.example")]).await;
        assert!(r.headers().get("access-control-allow-origin").is_none());
        // A browser that has it revalidates for nothing.
        let r = get(&url, &[(header::IF_NONE_MATCH, &etag)]).await;
        assert_eq!(r.status(), 304, "{path}");
        assert!(r.bytes().await.expect("body").is_empty());
    }
    // The CORS preflight of a module load from the allowed origin.
    let r = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{base}/token"))
        .header(header::ORIGIN, APP_ORIGIN)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("preflight");
    assert_eq!(
        header(r.headers(), "access-control-allow-origin"),
        APP_ORIGIN
    );
    running.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn the_close_table_and_the_client_configuration() {
    let (emu, running) = serve(Auth::Bearer(credentials()), |_| {}).await;
    let base = running.base_url();
    let r = get(&format!("{base}/close-codes.json"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "content-type"), "application/json");
    let table: Value = r.json().await.expect("json");
    assert_eq!(table, close::table_json());
    let r = get(&format!("{base}/config.json"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "cache-control"), "no-store");
    let config: Value = r.json().await.expect("json");
    assert_eq!(config["streaming_url"], emu.ws_url());
    assert_eq!(config["emulator_hints"], true, "plain ws:// on loopback");
    assert_eq!(config["auth_required"], true);
    assert_eq!(config["params"]["format_turns"], "true");
    assert_eq!(
        config["params"]["speech_model"],
        "universal-streaming-english"
    );
    assert!(config["params"].get("sample_rate").is_none(), "{config}");
    assert_eq!(config["session"]["rotation_lead_ms"], 30_000);
    // The browser routes have their own state, and the API's JSON answer to a wrong method.
    let r = reqwest::Client::new()
        .post(format!("{base}/config.json"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 405);
    let error: Value = r.json().await.expect("json");
    assert_eq!(error["error"], "method_not_allowed");
    running.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn the_page_is_served_only_with_web_under_its_policy() {
    let (emu, without) = serve(Auth::None, |_| {}).await;
    for path in ["/", "/app.js", "/app.css"] {
        let r = get(&format!("{}{path}", without.base_url()), &[]).await;
        assert_eq!(r.status(), 404, "{path} without --web");
    }
    without.shutdown().await;
    emu.shutdown().await;

    let (emu, running) = serve(Auth::None, |c| c.web = true).await;
    let base = running.base_url();
    let r = get(&format!("{base}/"), &[]).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    let csp = header(&h, "content-security-policy");
    let ws_origin = emu.ws_url().trim_end_matches("/v3/ws").to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        &format!("connect-src 'self' {ws_origin};"),
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert_eq!(header(&h, "referrer-policy"), "no-referrer");
    let html = r.text().await.expect("html");
    assert!(
        html.contains("<script type=\"module\" src=\"app.js\">"),
        "{html}"
    );
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "nothing inline"
    );
    for (path, kind) in [("/app.js", "text/javascript"), ("/app.css", "text/css")] {
        let r = get(&format!("{base}{path}"), &[]).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            header(r.headers(), "content-type").starts_with(kind),
            "{path}"
        );
    }
    running.shutdown().await;
    emu.shutdown().await;
}

/// A token request with `Origin` and `Host` as given.
async fn token(running: &RunningServer, origin: &str, host: Option<&str>, bearer: bool) -> u16 {
    let mut headers = vec![(header::ORIGIN, origin)];
    if let Some(host) = host {
        headers.push((header::HOST, host));
    }
    let auth = format!("Bearer {CREDENTIAL}");
    if bearer {
        headers.push((header::AUTHORIZATION, auth.as_str()));
    }
    get(&running.token_url(), &headers).await.status().as_u16()
}

#[tokio::test]
async fn the_servers_own_origin_may_ask_for_tokens_and_forged_ones_may_not() {
    let (emu, running) = serve(Auth::None, |c| c.web = true).await;
    let port = running.addr.port();
    let own = format!("http://127.0.0.1:{port}");
    assert_eq!(token(&running, &own, None, false).await, 200, "own origin");
    assert_eq!(
        token(
            &running,
            &format!("http://localhost:{port}"),
            Some(&format!("localhost:{port}")),
            false
        )
        .await,
        200,
        "own origin by another loopback name"
    );
    assert_eq!(
        token(&running, APP_ORIGIN, None, false).await,
        200,
        "listed"
    );
    assert_eq!(
        token(&running, "https://evil.example", None, false).await,
        403,
        "foreign"
    );
    assert_eq!(
        token(&running, &format!("https://127.0.0.1:{port}"), None, false).await,
        403,
        "another scheme is another origin"
    );
    assert_eq!(
        token(
            &running,
            &format!("http://127.0.0.1:{}", port + 1),
            None,
            false
        )
        .await,
        403,
        "another port is another origin"
    );
    // DNS rebinding: a page on evil.example resolved to this server. Origin and Host agree, but
    // without authentication only loopback names count.
    let evil = format!("evil.example:{port}");
    assert_eq!(
        token(&running, &format!("http://{evil}"), Some(&evil), false).await,
        403,
        "forged Host"
    );
    // A Host that is not exactly name[:port] names no origin.
    let forged = format!("127.0.0.1:{port}@evil.example");
    assert_eq!(
        token(&running, &format!("http://{forged}"), Some(&forged), false).await,
        403
    );
    running.shutdown().await;
    emu.shutdown().await;

    // With credentials the Host may be any name (behind a proxy that keeps it)...
    let (emu, running) = serve(Auth::Bearer(credentials()), |_| {}).await;
    let host = format!("tokens.example:{}", running.addr.port());
    assert_eq!(
        token(&running, &format!("http://{host}"), Some(&host), true).await,
        200
    );
    assert_eq!(
        token(&running, "http://other.example", Some(&host), true).await,
        403
    );
    running.shutdown().await;
    emu.shutdown().await;

    // ...and with `public_origin` that origin alone is the server's own.
    let (emu, running) = serve(Auth::Bearer(credentials()), |c| {
        c.public_origin = Some("https://tokens.example".into());
    })
    .await;
    let host = format!("127.0.0.1:{}", running.addr.port());
    assert_eq!(
        token(&running, "https://tokens.example", Some(&host), true).await,
        200,
        "the public origin"
    );
    assert_eq!(
        token(&running, &format!("http://{host}"), Some(&host), true).await,
        403,
        "the address behind the proxy is not the page's origin"
    );
    running.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn serve_web_from_the_command_line_streams_beside_its_upstream() {
    let emu = common::start(common::config()).await;
    let home = tempfile::tempdir().expect("home");
    let mut child = common::aai_live(home.path())
        .env("AAI_LIVE_BROWSER_TEST_KEY", KEY)
        .args([
            "serve",
            "--web",
            "--no-auth",
            "--listen",
            "127.0.0.1:0",
            "--key-env",
            "AAI_LIVE_BROWSER_TEST_KEY",
            "--upstream",
            &emu.base_url(),
        ])
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("first line in time")
        .expect("read")
        .expect("a line");
    let base = line
        .strip_prefix("aai-live serve listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let page = get(&format!("{base}/"), &[]).await;
    assert_eq!(page.status(), 200);
    let config: Value = get(&format!("{base}/config.json"), &[])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(config["streaming_url"], emu.ws_url());
    assert_eq!(config["emulator_hints"], true);
    assert_eq!(config["auth_required"], false);
    let minted = get(&format!("{base}/token"), &[(header::ORIGIN, &base)]).await;
    assert_eq!(minted.status(), 200, "the page's own origin");
    child.start_kill().expect("kill");
    let _ = child.wait().await;
    emu.shutdown().await;
}
