//! The emulator over TLS (https:// and wss://) with a self-signed certificate for 127.0.0.1 and
//! localhost, made with the `openssl` command-line tool: clients that trust the certificate mint
//! tokens and stream; clients that do not are refused at the handshake.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aai_live::emulator::{self, RunningEmulator};
use aai_live::listener::TlsFiles;
use aai_live::protocol::ServerMessage;
use common::{KEY, Ws, read_to_close, read_until, speech, stream, terminate};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tempfile::TempDir;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const BOUND: Duration = Duration::from_secs(10);

async fn start_tls(cert: &common::SelfSigned) -> RunningEmulator {
    emulator::start(common::config(), "127.0.0.1:0", Some(cert.files()))
        .await
        .expect("TLS emulator starts")
}

/// reqwest trusting only `cert`.
fn https_client(cert: &common::SelfSigned) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&cert.pem()).expect("PEM certificate")])
        .timeout(BOUND)
        .build()
        .expect("client")
}

/// rustls client configuration trusting only the certificate in `pem_file`.
fn rustls_trusting(pem_file: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(pem_file).expect("read PEM") {
        roots.add(der.expect("PEM certificate")).expect("add root");
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn connect_wss(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let request = url.into_client_request().expect("request");
    tokio::time::timeout(
        BOUND,
        tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            false,
            Some(Connector::Rustls(tls)),
        ),
    )
    .await
    .expect("the TLS handshake ends in time")
    .map(|(ws, _)| ws)
}

async fn mint_over_https(client: &reqwest::Client, emu: &RunningEmulator) -> String {
    let response = client
        .get(format!("{}?expires_in_seconds=60", emu.token_url()))
        .header("Authorization", KEY)
        .send()
        .await
        .expect("https token request");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("JSON");
    body["token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn token_over_https_and_stream_over_wss() {
    let cert = common::SelfSigned::generate();
    let emu = start_tls(&cert).await;
    assert!(emu.tls);
    assert_eq!(emu.base_url(), format!("https://{}", emu.addr));
    assert_eq!(emu.ws_url(), format!("wss://{}/v3/ws", emu.addr));

    let token = mint_over_https(&https_client(&cert), &emu).await;
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let mut ws = connect_wss(
        &format!("{}?sample_rate=16000&token={encoded}", emu.ws_url()),
        rustls_trusting(&cert.cert()),
    )
    .await
    .expect("wss connects");
    let first = read_until(&mut ws, |_| true).await;
    assert!(
        matches!(first.first(), Some(ServerMessage::Begin(_))),
        "{first:?}"
    );
    stream(&mut ws, &speech(), 100, false).await;
    terminate(&mut ws).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(1000), "{out:?}");
    assert!(!out.finals().is_empty(), "a final Turn over wss: {out:?}");
    assert!(matches!(
        out.messages.last(),
        Some(ServerMessage::Termination(_))
    ));

    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].close_code, Some(1000));
    assert_eq!(sessions[0].audio_bytes, speech().len() as u64);
    emu.shutdown().await;
}

#[tokio::test]
async fn certificate_name_localhost_verifies_too() {
    let cert = common::SelfSigned::generate();
    let emu = start_tls(&cert).await;
    // The name "localhost" for SNI and verification, the connection pinned to 127.0.0.1 (never
    // ::1 or anything a resolver says).
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&cert.pem()).expect("PEM certificate")])
        .resolve("localhost", emu.addr)
        .timeout(BOUND)
        .build()
        .expect("client");
    let response = client
        .get(format!(
            "https://localhost:{}/v3/token?expires_in_seconds=60",
            emu.addr.port()
        ))
        .header("Authorization", KEY)
        .send()
        .await
        .expect("https://localhost verifies against DNS:localhost");
    assert_eq!(response.status(), 200);

    // And a name the certificate does not carry fails verification.
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&cert.pem()).expect("PEM certificate")])
        .resolve("emulator.invalid", emu.addr)
        .timeout(BOUND)
        .build()
        .expect("client");
    let err = client
        .get(format!(
            "https://emulator.invalid:{}/v3/token?expires_in_seconds=60",
            emu.addr.port()
        ))
        .header("Authorization", KEY)
        .send()
        .await
        .expect_err("a name outside the certificate is refused");
    assert!(err.is_connect(), "{err:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn untrusted_clients_and_plain_http_are_refused() {
    let cert = common::SelfSigned::generate();
    let emu = start_tls(&cert).await;

    // Built-in roots only: the self-signed certificate does not verify.
    let default_client = reqwest::Client::builder()
        .timeout(BOUND)
        .build()
        .expect("client");
    let err = default_client
        .get(format!("{}?expires_in_seconds=60", emu.token_url()))
        .header("Authorization", KEY)
        .send()
        .await
        .expect_err("an untrusted certificate is refused");
    assert!(err.is_connect(), "{err:?}");

    // A rustls client trusting another certificate: the WebSocket handshake fails.
    let other = common::SelfSigned::generate();
    let wss = connect_wss(
        &format!("{}?sample_rate=16000", emu.ws_url()),
        rustls_trusting(&other.cert()),
    )
    .await;
    let Err(tokio_tungstenite::tungstenite::Error::Io(io)) = &wss else {
        panic!("expected a TLS handshake failure, got {wss:?}")
    };
    assert!(
        matches!(
            io.get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
            Some(rustls::Error::InvalidCertificate(_))
        ),
        "{io:?}"
    );

    // Plain ws:// to the TLS port gets no WebSocket.
    let plain = tokio::time::timeout(
        BOUND,
        tokio_tungstenite::connect_async(format!("ws://{}/v3/ws", emu.addr)),
    )
    .await
    .expect("ends in time");
    assert!(
        plain.is_err(),
        "plain ws:// must not upgrade on the TLS port"
    );

    assert!(emu.sessions().is_empty(), "no session was opened");
    // The trusted path still works after those failures.
    mint_over_https(&https_client(&cert), &emu).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn missing_certificate_file_is_a_clear_error() {
    let dir = TempDir::new().expect("tempdir");
    let err = emulator::start(
        common::config(),
        "127.0.0.1:0",
        Some(TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("nope-key.pem"),
        }),
    )
    .await
    .expect_err("no certificate, no server");
    let text = err.to_string();
    assert!(text.contains("nope.pem"), "names the file: {text}");
}

#[tokio::test]
async fn the_binary_serves_https_with_tls_flags() {
    let cert = common::SelfSigned::generate();
    let home = TempDir::new().expect("tempdir");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aai-live"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AAI_LIVE") {
            cmd.env_remove(&name);
        }
    }
    let cert_arg = cert.cert();
    let key_arg = cert.key();
    let mut child = cmd
        .env_remove("RUST_LOG")
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .env("XDG_DATA_HOME", home.path().join("data"))
        .args(["emulate", "--listen", "127.0.0.1:0", "--api-key", KEY])
        .arg("--tls-cert")
        .arg(&cert_arg)
        .arg("--tls-key")
        .arg(&key_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn aai-live");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(BOUND, lines.next_line())
        .await
        .expect("first line in time")
        .expect("read stdout")
        .expect("a first line");
    let port: u16 = line
        .strip_prefix("aai-live emulator listening on https://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("first line names https: {line:?}"));

    let response = https_client(&cert)
        .get(format!(
            "https://127.0.0.1:{port}/v3/token?expires_in_seconds=60"
        ))
        .header("Authorization", KEY)
        .send()
        .await
        .expect("https token request");
    assert_eq!(response.status(), 200);
    child.start_kill().expect("kill");
    let _ = tokio::time::timeout(BOUND, child.wait()).await;
}

#[tokio::test]
async fn the_connection_cap_holds_over_tls_too() {
    use tokio::io::AsyncReadExt;
    let cert = common::SelfSigned::generate();
    let emu = emulator::start(
        aai_live::emulator::EmulatorConfig {
            max_connections: Some(1),
            ..common::config()
        },
        "127.0.0.1:0",
        Some(cert.files()),
    )
    .await
    .expect("TLS emulator starts");
    // A wss session holds the only slot (counted from the TCP accept, before TLS).
    let mut ws = connect_wss(
        // The key as `?token=` (the emulator reads either place).
        &format!("{}?sample_rate=16000&token={KEY}", emu.ws_url()),
        rustls_trusting(&cert.cert()),
    )
    .await
    .expect("the first connection fits");
    read_until(&mut ws, |_| true).await;
    let mut extra = tokio::net::TcpStream::connect(emu.addr)
        .await
        .expect("connect");
    let mut byte = [0_u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(500), extra.read(&mut byte))
        .await
        .expect("closed at once, before any TLS handshake");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let stats = emu.stats().connections.expect("capped");
    assert_eq!((stats.open, stats.max, stats.refused), (1, 1, 1));
    // Once the session is over, its slot is free for https.
    terminate(&mut ws).await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));
    drop(ws);
    let deadline = std::time::Instant::now() + BOUND;
    while emu.stats().connections.expect("capped").open > 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", emu.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mint_over_https(&https_client(&cert), &emu).await;
}
