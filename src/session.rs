//! The session supervisor: streams audio to the service, re-mints and reconnects when a session
//! ends, rotates to a successor session before expiry, and replays audio after unplanned drops,
//! so no audio and no words are lost.
//!
//! `machine` decides (pure); `supervisor` carries out its effects (sockets, timers, audio);
//! `connection` is one WebSocket (through the HTTP proxy of `proxy`, if any); `replay` the audio
//! buffer; `ledger` the accounts. What a run reports is `crate::events`.

pub mod account;
pub mod backoff;
pub mod connection;
pub mod ledger;
pub mod machine;
pub mod proxy;
pub mod replay;
pub mod streams;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use url::Url;

pub use account::Account;
pub use supervisor::{
    AccountSeat, AudioFeed, Outcome, SessionCommand, Supervisor, SupervisorOptions, browser_rules,
};

use crate::config::{Config, ProviderKind};
use crate::events::SessionEvent;
use crate::protocol::StreamingParams;
use crate::provider::PreMinter;
use crate::transcript::Transcript;

/// The streaming endpoint: `[streaming] url`, else the provider's region.
pub fn endpoint(config: &Config) -> Url {
    config
        .streaming
        .url
        .clone()
        .unwrap_or_else(|| config.provider.api_key.region.ws_url())
}

/// Why a token server's published streaming URL was not taken.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "the token server {server} publishes the streaming URL {published}, which is neither an \
         AssemblyAI streaming host nor the token server's own host: refused (set \
         [streaming] url, or provider.remote.follow_server_streaming_url = false)"
    )]
    Refused { server: String, published: String },
    #[error("cannot ask the token server for its streaming URL: {0}")]
    Provider(#[from] crate::provider::ProviderError),
}

/// Whether a streaming URL a token server published may be used: an AssemblyAI streaming host
/// over `wss://`, or the token server's own host (`ws://` only when both are on loopback).
pub fn accept_published(published: &str, token_server: &Url) -> Option<Url> {
    let url = Url::parse(published).ok()?;
    let host = url.host_str()?;
    let assemblyai = [
        crate::protocol::Region::Default,
        crate::protocol::Region::Us,
        crate::protocol::Region::Eu,
    ]
    .iter()
    .any(|r| r.host().eq_ignore_ascii_case(host));
    let own = token_server
        .host_str()
        .is_some_and(|h| h.eq_ignore_ascii_case(host));
    let loopback = crate::protocol::params::is_loopback;
    let ok = match url.scheme() {
        "wss" => assemblyai || own,
        "ws" => own && loopback(&url) && loopback(token_server),
        _ => false,
    };
    (ok && url.password().is_none()).then_some(url)
}

/// With the remote provider and no `[streaming] url`, stream where the token server says (its
/// `config.json`, once, before the first token): sets `streaming.url` and returns a line for
/// the user saying where and why. A server without the document leaves the region's endpoint
/// (also said); a URL elsewhere is refused.
pub async fn follow_token_server(config: &mut Config) -> Result<Option<String>, EndpointError> {
    let remote = &config.provider.remote;
    if config.provider.kind != ProviderKind::Remote
        || config.streaming.url.is_some()
        || !remote.follow_server_streaming_url
    {
        return Ok(None);
    }
    let Some(server) = remote.url.clone() else {
        return Ok(None);
    };
    let shown = crate::provider::http::display_url(&server);
    let Some(url) = published_endpoint(&server, config.provider.timeout).await? else {
        return Ok(Some(format!(
            "the token server {shown} publishes no streaming URL (no config.json): streaming \
             to {}",
            endpoint(config)
        )));
    };
    let line = format!("streaming to {url}, as the token server {shown} publishes");
    config.streaming.url = Some(url);
    Ok(Some(line))
}

/// The streaming URL the token server at `server` publishes in its `config.json`, if it does
/// and it may be used (see [`accept_published`]); a URL elsewhere is refused.
pub async fn published_endpoint(
    server: &Url,
    timeout: std::time::Duration,
) -> Result<Option<Url>, EndpointError> {
    // No credential: the document is public; the user's headers stay with the token requests.
    let provider =
        crate::provider::remote::RemoteProvider::new(crate::provider::remote::RemoteSettings {
            url: server.clone(),
            method: crate::config::HttpMethod::Get,
            headers: std::collections::BTreeMap::new(),
            bearer: None,
            pass_lifetimes: false,
            timeout,
        })?;
    let Some(published) = provider.published_streaming_url().await? else {
        return Ok(None);
    };
    match accept_published(&published, server) {
        Some(url) => Ok(Some(url)),
        None => Err(EndpointError::Refused {
            server: crate::provider::http::display_url(server),
            published: crate::untrusted::for_terminal(&published).into_owned(),
        }),
    }
}

/// Connection parameters from `[streaming]`.
pub fn params(config: &Config) -> StreamingParams {
    config.streaming.params.clone()
}

impl SupervisorOptions {
    pub fn from_config(config: &Config) -> Self {
        let s = &config.session;
        Self {
            endpoint: endpoint(config),
            params: params(config),
            token_in: config.streaming.token_in,
            machine: machine::MachineConfig {
                rotation: s.rotation,
                rotation_lead: s.rotation_lead,
                begin_timeout: s.begin_timeout,
                drain_timeout: s.terminate_timeout,
                healthy_after: s.healthy_after,
                backoff: backoff::BackoffPolicy {
                    initial: s.backoff_initial,
                    max: s.backoff_max,
                    multiplier: s.backoff_multiplier,
                    rate_limited: s.rate_limit_backoff,
                },
                ..machine::MachineConfig::default()
            },
            replay_buffer: s.replay_buffer,
            replay_speed: s.replay_speed,
            stall_timeout: s.stall_timeout,
            chunk_ms: config.audio.chunk_ms,
            emulator_hints: false,
            // Only the API-key provider asks for a session length itself; a token server or a
            // token file decided on theirs.
            session_duration: matches!(config.provider.kind, ProviderKind::ApiKey).then(|| {
                Duration::from_secs(u64::from(config.provider.max_session_duration_seconds))
            }),
            seed: rand::random(),
            connector: connection::websocket(),
            account: None,
            speaker_priming: config.speakers.priming,
        }
    }
}

impl SupervisorOptions {
    /// With `trace`, every connection writes its frames to it (`run --trace`).
    #[must_use]
    pub fn traced(mut self, trace: Option<crate::trace::Trace>) -> Self {
        if let Some(trace) = trace {
            self.connector = Arc::new(connection::WebSocketConnector::traced(trace));
        }
        self
    }
}

/// A running supervisor.
pub struct SessionHandle {
    pub commands: mpsc::UnboundedSender<SessionCommand>,
    pub events: mpsc::UnboundedReceiver<SessionEvent>,
    pub task: tokio::task::JoinHandle<(Outcome, Transcript)>,
}

/// Spawn the supervisor on the current runtime. It waits for [`SessionCommand::Start`].
pub fn spawn(
    options: SupervisorOptions,
    premint: Arc<PreMinter>,
    transcript: Transcript,
    audio: impl Into<AudioFeed>,
) -> SessionHandle {
    let (event_tx, events) = mpsc::unbounded_channel();
    let (commands, command_rx) = mpsc::unbounded_channel();
    let supervisor = Supervisor::new(options, premint, transcript, event_tx);
    let task = tokio::spawn(supervisor.run(audio.into(), command_rx));
    SessionHandle {
        commands,
        events,
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::accept_published;

    #[test]
    fn a_published_streaming_url_is_taken_only_from_a_trusted_host() {
        let server = |u: &str| url::Url::parse(u).expect("url");
        let remote = server("https://tokens.example.com/token");
        let local = server("http://127.0.0.1:8787/token");
        for (published, from, taken) in [
            ("wss://streaming.assemblyai.com/v3/ws", &remote, true),
            ("wss://streaming.eu.assemblyai.com/v3/ws", &remote, true),
            ("wss://tokens.example.com/v3/ws", &remote, true),
            ("ws://tokens.example.com/v3/ws", &remote, false),
            ("wss://elsewhere.example.com/v3/ws", &remote, false),
            (
                "wss://streaming.assemblyai.com.evil.example/v3/ws",
                &remote,
                false,
            ),
            ("wss://user:pw@tokens.example.com/v3/ws", &remote, false),
            ("https://tokens.example.com/v3/ws", &remote, false),
            ("ws://127.0.0.1:8080/v3/ws", &local, true),
            ("ws://localhost:8080/v3/ws", &local, false),
            ("ws://127.0.0.1:8080/v3/ws", &remote, false),
            ("not a url", &remote, false),
        ] {
            assert_eq!(
                accept_published(published, from).is_some(),
                taken,
                "{published} from {from}"
            );
        }
    }

    /// `published_endpoint` against a real HTTP server: what it publishes under the token
    /// URL's own path, or nothing when it publishes nothing usable.
    #[tokio::test]
    async fn the_streaming_url_is_read_beside_the_token_url_and_a_missing_one_is_no_error() {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let own = format!("ws://{addr}/v3/ws");
        let published = serde_json::json!({ "streaming_url": own }).to_string();
        let foreign =
            serde_json::json!({ "streaming_url": "wss://evil.example/v3/ws" }).to_string();
        let app = axum::Router::new()
            .route("/prefix/config.json", get(move || async move { published }))
            .route("/text/config.json", get(|| async { "not json" }))
            .route("/foreign/config.json", get(move || async move { foreign }));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let at = |path: &str| url::Url::parse(&format!("http://{addr}{path}")).expect("url");
        let ask = |path: &str| {
            let url = at(path);
            async move { super::published_endpoint(&url, std::time::Duration::from_secs(5)).await }
        };
        // Behind a path prefix: config.json beside the token URL.
        let found = ask("/prefix/token").await.expect("published");
        assert_eq!(found.map(|u| u.to_string()), Some(own));
        // No config.json (404), or one that is not JSON: the region default stays, no error.
        assert!(
            ask("/none/token")
                .await
                .expect("a 404 is no error")
                .is_none()
        );
        assert!(
            ask("/text/token")
                .await
                .expect("not JSON is no error")
                .is_none()
        );
        // A foreign host is refused, naming it.
        let refused = ask("/foreign/token")
            .await
            .expect_err("refused")
            .to_string();
        assert!(refused.contains("wss://evil.example/v3/ws"), "{refused}");
        server.abort();
    }
}
