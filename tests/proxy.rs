//! The streaming connection through an HTTP CONNECT proxy: a small proxy on loopback written
//! here sees the run's `CONNECT` to the emulator's port (with the credentials of the proxy URL,
//! which are never printed); `NO_PROXY` bypasses it; a proxy that refuses is diagnosed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aai_live::session::connection::{self, ConnectError};
use aai_live::session::proxy::ProxyEnv;
use common::KEY;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy saw: each request head.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn heads(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
}

/// A CONNECT proxy on a free loopback port; `refuse` answers 407 to everything.
async fn proxy(refuse: bool) -> (u16, Seen, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Seen::default();
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        let Ok(byte) = client.read_u8().await else {
                            return;
                        };
                        head.push(byte);
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    seen.0.lock().expect("lock").push(text.clone());
                    if refuse {
                        let _ = client
                            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                            .await;
                        return;
                    }
                    if !text.starts_with("CONNECT ") {
                        forward(client, &text).await;
                        return;
                    }
                    let target = text
                        .strip_prefix("CONNECT ")
                        .and_then(|r| r.split_whitespace().next())
                        .unwrap_or_default()
                        .to_owned();
                    let Ok(mut upstream) = TcpStream::connect(&target).await else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    let _ = client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        }
    });
    (port, seen, task)
}

/// A plain proxied request (`GET http://host:port/path HTTP/1.1`, what reqwest sends for an
/// http:// URL): sent on in origin form, the answer copied back.
async fn forward(mut client: TcpStream, head: &str) {
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let Ok(url) = url::Url::parse(target) else {
        return;
    };
    let authority = format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(80)
    );
    let Ok(mut upstream) = TcpStream::connect(&authority).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let rest: Vec<&str> = lines
        .filter(|l| !l.to_ascii_lowercase().starts_with("proxy-"))
        .collect();
    let rewritten = format!("{method} {path} HTTP/1.1\r\n{}", rest.join("\r\n"));
    if upstream.write_all(rewritten.as_bytes()).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

/// `aai-live run --headless` for 2 s against the emulator, with `env`.
async fn run(
    emu: &aai_live::emulator::RunningEmulator,
    env: &[(&str, String)],
) -> std::process::Output {
    run_for(emu, "2s", env).await
}

/// `aai-live run --headless` for `duration` against the emulator, with `env` (which may
/// override the endpoints); the run must end within 30 s.
async fn run_for(
    emu: &aai_live::emulator::RunningEmulator,
    duration: &str,
    env: &[(&str, String)],
) -> std::process::Output {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = common::aai_live(home.path());
    cmd.args([
        "run",
        "--headless",
        "--input",
        "test:tone",
        "--duration",
        duration,
    ])
    .env("ASSEMBLYAI_API_KEY", KEY)
    .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", emu.token_url())
    .env("AAI_LIVE__STREAMING__URL", emu.ws_url());
    for name in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(name);
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("run ends")
        .expect("run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_streams_through_the_proxy_and_its_password_is_never_printed() {
    let emu = common::start(common::config()).await;
    let (port, seen, task) = proxy(false).await;
    // ws:// follows HTTP_PROXY, as reqwest does for http://; the token request (http://) too.
    let out = run(
        &emu,
        &[(
            "HTTP_PROXY",
            format!("http://proxyuser:s3cret-pw@127.0.0.1:{port}"),
        )],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("\"event\":\"begin\""), "{stdout}");
    let emu_port = emu.addr.port();
    let heads = seen.heads();
    let connect = heads
        .iter()
        .find(|h| h.starts_with(&format!("CONNECT 127.0.0.1:{emu_port} ")))
        .unwrap_or_else(|| panic!("no CONNECT to the emulator: {heads:?}"));
    // Basic proxyuser:s3cret-pw
    assert!(
        connect.contains("Proxy-Authorization: Basic cHJveHl1c2VyOnMzY3JldC1wdw=="),
        "{connect}"
    );
    assert!(!stdout.contains("s3cret-pw") && !stderr.contains("s3cret-pw"));
    // The token request went through the same proxy.
    assert!(
        heads.iter().any(|h| h.starts_with("GET http://127.0.0.1:")),
        "{heads:?}"
    );

    // The doctor names the proxy in use for both endpoints, without its password.
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = common::aai_live(home.path());
    cmd.args(["doctor", "--json", "--input", "test:tone"])
        .env("ASSEMBLYAI_API_KEY", KEY)
        .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", emu.token_url())
        .env("AAI_LIVE__STREAMING__URL", emu.ws_url())
        .env(
            "HTTP_PROXY",
            format!("http://proxyuser:s3cret-pw@127.0.0.1:{port}"),
        );
    let out = cmd.output().await.expect("doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let via = format!("via proxy http://127.0.0.1:{port}");
    for step in ["token-endpoint", "streaming-endpoint"] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("\"step\":\"{step}\"")))
            .expect("step");
        assert!(line.contains(&via), "{line}");
    }
    assert!(!text.contains("s3cret-pw"), "{text}");
    task.abort();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_bypasses_it() {
    let emu = common::start(common::config()).await;
    let (port, seen, task) = proxy(false).await;
    let out = run(
        &emu,
        &[
            ("HTTP_PROXY", format!("http://127.0.0.1:{port}")),
            ("NO_PROXY", "localhost,127.0.0.1".to_owned()),
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(seen.heads().is_empty(), "{:?}", seen.heads());
    task.abort();
    emu.shutdown().await;
}

#[tokio::test]
async fn a_refusing_proxy_is_named_without_its_credentials() {
    let emu = common::start(common::config()).await;
    let (port, _seen, task) = proxy(true).await;
    let env = ProxyEnv {
        http: Some(format!("http://user:hunter2@127.0.0.1:{port}")),
        ..ProxyEnv::default()
    };
    let url = aai_live::protocol::build_ws_url(
        &url::Url::parse(&emu.ws_url()).expect("url"),
        &aai_live::protocol::StreamingParams::default(),
        None,
    )
    .expect("ws url");
    let error = connection::connect(&url, None, &env)
        .await
        .expect_err("refused");
    assert!(
        matches!(error, ConnectError::ProxyRefused { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("407"), "{text}");
    assert!(text.contains(&format!("http://127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let failure = error.failure();
    assert_eq!(
        failure.diagnosis,
        aai_live::diagnosis::Diagnosis::ProxyFailure
    );
    // 407 will be the answer to every retry: not retried (it used to be, forever).
    assert_eq!(
        failure.class,
        aai_live::protocol::close::CloseClass::Fatal,
        "{failure:?}"
    );
    task.abort();
    emu.shutdown().await;
}

/// A run whose streaming connection goes through a proxy that answers 407 ends at once, failed,
/// pointing at the proxy's section, instead of reconnecting with backoff for as long as it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_wants_credentials_fails_the_run_at_once() {
    let emu = common::start(common::config()).await;
    let (port, _seen, task) = proxy(true).await;
    // The token endpoint by name (bypassed with NO_PROXY), the streaming one by address
    // (through the proxy); the run ends well before its 120 s.
    let out = run_for(
        &emu,
        "120s",
        &[
            (
                "AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL",
                format!("http://localhost:{}/v3/token", emu.addr.port()),
            ),
            (
                "HTTP_PROXY",
                format!("http://user:hunter2@127.0.0.1:{port}"),
            ),
            ("NO_PROXY", "localhost".to_owned()),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("407"), "{stderr}");
    assert!(
        stdout.contains("\"explain\":\"proxy\"") || stderr.contains("explain proxy"),
        "{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
    task.abort();
    emu.shutdown().await;
}

#[test]
fn proxy_rules_follow_the_environment_like_reqwest() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        ProxyEnv::from_env(&|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    };
    let wss = url::Url::parse("wss://streaming.assemblyai.com/v3/ws").expect("url");
    let ws = url::Url::parse("ws://127.0.0.1:8080/v3/ws").expect("url");
    let e = env(&[("https_proxy", "proxy:3128")]);
    assert_eq!(
        e.proxy_for(&wss).expect("ok").map(|u| u.to_string()),
        Some("http://proxy:3128/".to_owned())
    );
    assert_eq!(e.proxy_for(&ws).expect("ok"), None, "ws:// uses HTTP_PROXY");
    let e = env(&[
        ("ALL_PROXY", "http://all:1"),
        ("HTTPS_PROXY", "http://tls:2"),
    ]);
    assert_eq!(
        e.proxy_for(&wss).expect("ok").and_then(|u| u.port()),
        Some(2)
    );
    assert_eq!(
        e.proxy_for(&ws).expect("ok").and_then(|u| u.port()),
        Some(1)
    );
    for no_proxy in [
        "assemblyai.com",
        ".assemblyai.com",
        "*",
        "x.org, streaming.assemblyai.com:443",
    ] {
        let e = ProxyEnv {
            https: Some("http://p:1".into()),
            no_proxy: Some(no_proxy.into()),
            ..ProxyEnv::default()
        };
        assert_eq!(e.proxy_for(&wss).expect("ok"), None, "{no_proxy}");
    }
    let e = ProxyEnv {
        https: Some("http://p:1".into()),
        no_proxy: Some("sembly.com,other.assemblyai.com".into()),
        ..ProxyEnv::default()
    };
    assert!(e.proxy_for(&wss).expect("ok").is_some());
    let e = ProxyEnv {
        https: Some("socks5://p:1".into()),
        ..ProxyEnv::default()
    };
    assert!(e.proxy_for(&wss).is_err());
}
