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
        session_limit: Some(Duration::from_secs(5)),
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
