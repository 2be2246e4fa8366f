//! End to end: the `remote` provider fetches every token from `aai-live serve` (bearer
//! credential from a file, lifetimes passed), which mints them with the API key at the emulator;
//! the session supervisor streams a recording through a planned rotation to the final
//! Termination. The client side never holds the API key.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aai_live::audio::{self, AudioOptions, Pace};
use aai_live::config::{Config, InputSpec, ProviderKind};
use aai_live::emulator::{EmulatorConfig, RunningEmulator};
use aai_live::events::SessionEvent;
use aai_live::provider::api_key::ApiKeyProvider;
use aai_live::provider::{self, PreMintOptions, PreMinter, TokenRequest};
use aai_live::secret::ApiKey;
use aai_live::server::{self, Auth, Credentials, RunningServer, ServerConfig, hash_credential};
use aai_live::session::{self, SessionCommand, SupervisorOptions};
use aai_live::transcript::Transcript;
use common::{KEY, utterances, write_wav};

const CREDENTIAL: &str = "laptop-credential-0123456789abcdef";

fn secret_file(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// The token server, holding the key, minting at the emulator.
async fn token_server(emu: &RunningEmulator) -> RunningServer {
    let creds = Credentials::parse(
        &format!("laptop:{}\n", hash_credential(CREDENTIAL)),
        "credentials",
    )
    .expect("credentials");
    let config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), Auth::Bearer(creds));
    let upstream = ApiKeyProvider::new(
        ApiKey::new(KEY),
        "the test key",
        emu.token_url().parse().expect("url"),
        Duration::from_secs(5),
    )
    .expect("upstream");
    server::start(config, Arc::new(upstream))
        .await
        .expect("server starts")
}

/// The client: the remote provider with a bearer file, no key anywhere.
fn client_config(dir: &Path, server: &RunningServer, emu: &RunningEmulator) -> Config {
    let bearer = dir.join("credential");
    secret_file(&bearer, CREDENTIAL);
    let mut config = Config::default();
    config.provider.kind = ProviderKind::Remote;
    config.provider.remote.url = Some(server.token_url().parse().expect("url"));
    config.provider.remote.bearer_file = Some(bearer);
    config.provider.remote.pass_lifetimes = true;
    config.streaming.url = Some(emu.ws_url().parse().expect("url"));
    config.session.rotation_lead = Duration::from_secs(2);
    config.session.begin_timeout = Duration::from_secs(5);
    config.session.terminate_timeout = Duration::from_secs(2);
    config.session.backoff_initial = Duration::from_millis(100);
    config.session.backoff_max = Duration::from_millis(500);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_provider_streams_through_serve_with_a_rotation() {
    let emu = common::start(EmulatorConfig {
        max_session_duration: Some(Duration::from_secs(5)),
        ..common::config()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");

    let server = token_server(&emu).await;
    let config = client_config(dir.path(), &server, &emu);

    let wav = dir.path().join("input.wav");
    write_wav(&wav, &utterances(4));
    let provider = provider::build(&config.provider).expect("remote provider");
    assert_eq!(provider.name(), "remote");
    let request = TokenRequest::from_config(&config.provider);
    let premint = Arc::new(PreMinter::new(provider, request, PreMintOptions::default()));
    let options = AudioOptions {
        pace: Pace::RealTime,
        ..AudioOptions::from_config(&config)
    };
    let input = audio::open(&InputSpec::File(wav), &options)
        .await
        .expect("audio");
    let mut handle = session::spawn(
        SupervisorOptions::from_config(&config),
        premint,
        Transcript::default(),
        input.chunks,
    );
    handle.commands.send(SessionCommand::Start).expect("start");
    let mut events = Vec::new();
    let collected = tokio::time::timeout(Duration::from_secs(40), async {
        while let Some(e) = handle.events.recv().await {
            events.push(e);
        }
    })
    .await;
    assert!(collected.is_ok(), "the run ends by itself: {events:#?}");
    let (outcome, transcript) = handle.task.await.expect("task");

    assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
    let finals = transcript.finals();
    assert_eq!(finals.len(), 4, "one final per utterance: {finals:#?}");
    assert!(
        finals
            .iter()
            .all(|f| f.text.split_whitespace().count() == 3),
        "{finals:#?}"
    );
    let rotations = events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Rotation { .. }))
        .count();
    assert!(
        rotations >= 1,
        "a planned rotation, with a second token: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SessionEvent::Termination { .. })),
        "the last session ended with Termination"
    );
    assert!(matches!(events.last(), Some(SessionEvent::Finished { .. })));

    // Every session ran on a token from the server, with the server's session limit.
    let sessions = emu.sessions();
    assert!(sessions.len() >= 2, "{sessions:?}");
    assert!(server.minted() >= sessions.len() as u64);
    for s in &sessions {
        assert_eq!(s.close_code, Some(1000), "{s:?}");
    }
    // Each token used came from serve (one more may have been pre-minted for a rotation that
    // the end of the input made unnecessary).
    let used = events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Token { .. }))
        .count() as u64;
    assert!(
        used >= 2 && used <= server.minted(),
        "{used} used, {} minted",
        server.minted()
    );
    server.shutdown().await;
}

/// A newcomer's set-up from docs/server.md: `serve --upstream` the emulator, the client with the
/// remote provider and no `[streaming] url`. The client asks the token server's config.json where
/// to stream (the emulator, as `serve` publishes it), says so, and streams there: exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_provider_streams_where_serve_publishes() {
    let emu = common::start(common::config()).await;
    let creds = Credentials::parse(
        &format!("laptop:{}\n", hash_credential(CREDENTIAL)),
        "credentials",
    )
    .expect("credentials");
    let mut server_config =
        ServerConfig::new("127.0.0.1:0".parse().expect("addr"), Auth::Bearer(creds));
    let mut upstream_config = Config::default();
    upstream_config.provider.api_key.token_url = Some(emu.token_url().parse().expect("url"));
    server_config.browser = aai_live::server::BrowserSettings::from_config(&upstream_config);
    let upstream = ApiKeyProvider::new(
        ApiKey::new(KEY),
        "the test key",
        emu.token_url().parse().expect("url"),
        Duration::from_secs(5),
    )
    .expect("upstream");
    let server = server::start(server_config, Arc::new(upstream))
        .await
        .expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let bearer = dir.path().join("credential");
    secret_file(&bearer, CREDENTIAL);
    let out = common::aai_live(dir.path())
        .args([
            "run",
            "--headless",
            "--input",
            "test:tone",
            "--duration",
            "2s",
        ])
        .env("AAI_LIVE__PROVIDER__KIND", "remote")
        .env("AAI_LIVE__PROVIDER__REMOTE__URL", server.token_url())
        .env("AAI_LIVE__PROVIDER__REMOTE__BEARER_FILE", &bearer)
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("as the token server"), "{stderr}");
    let hello: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .expect("hello"),
    )
    .expect("JSON");
    assert_eq!(hello["endpoint"], emu.ws_url(), "{hello}");
    assert_eq!(emu.sessions().len(), 1);
    server.shutdown().await;
    emu.shutdown().await;
}
