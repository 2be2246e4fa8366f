//! `aai-live serve`: a token server. It mints one-time streaming tokens with the API key it
//! holds and hands them to authenticated clients (the `remote` provider, a browser page), so the
//! key never leaves the machine it runs on.
//!
//! AssemblyAI's browser example leaves the hardening as advice; here it is built in:
//! authentication by named bearer credentials stored as hashes ([`auth`]), rate limits per client
//! and global ([`limit`]), a lifetime policy callers can only shorten ([`policy`]), a CORS
//! allow-list, request size and time limits, JSON errors, an upstream with a retry and bounded
//! concurrency ([`upstream`]), Prometheus metrics ([`metrics`]) and an access log without
//! secrets ([`handler`]). Optional TLS; graceful shutdown. See `docs/server.md`.
//!
//! [`start`] runs it in-process (tests, embedding) on a [`crate::listener`]; [`serve_cli`] is the
//! `aai-live serve` command line.

pub mod auth;
pub mod handler;
pub mod limit;
pub mod metrics;
pub mod policy;
pub mod serve_cli;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::{Auth, Credentials, CredentialsError, hash_credential};
pub use limit::{LimitSetting, RateSpec};
pub use policy::LifetimePolicy;
pub use upstream::RetryPolicy;

use crate::listener::{self, ListenError, ListenOptions, TlsFiles};
use crate::provider::{ProviderError, TokenProvider};
use handler::ServerState;
use limit::Limiter;
use metrics::Metrics;

/// Everything the server can be told. [`ServerConfig::new`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub auth: Auth,
    pub policy: LifetimePolicy,
    /// Per client (credential name); `None` = unlimited.
    pub client_limit: Option<RateSpec>,
    /// All clients together.
    pub global_limit: Option<RateSpec>,
    /// Requests refused before a client is known (bad credentials, foreign origins), per peer
    /// address.
    pub refusal_limit: Option<RateSpec>,
    /// Browser origins allowed to call `/token` (`https://app.example.com`).
    pub cors_origins: Vec<String>,
    /// Upper bound for answering one token request, upstream retry included.
    pub request_timeout: Duration,
    /// Time a client has to send its request headers (slow-loris protection).
    pub header_timeout: Duration,
    /// Largest request body accepted.
    pub max_body: usize,
    /// Upstream requests under way at once; more are answered 503.
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    pub tls: Option<TlsFiles>,
    /// Serve `/metrics` to any address, not only loopback.
    pub public_metrics: bool,
    /// How long shutdown waits for requests under way.
    pub shutdown_grace: Duration,
}

/// Defaults, shared with the command line.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
pub const DEFAULT_CLIENT_LIMIT: &str = "30/min";
pub const DEFAULT_GLOBAL_LIMIT: &str = "300/min";
pub const DEFAULT_REFUSAL_LIMIT: &str = "10/min";
pub const DEFAULT_MAX_BODY: usize = 4096;

impl ServerConfig {
    /// The defaults: 60 s windows, 30/min per client, 300/min in all, 10 refusals/min per
    /// address, 30 s per request, 10 s for headers, 4 KiB bodies, 64 upstream requests at once,
    /// one retry.
    pub fn new(listen: SocketAddr, auth: Auth) -> Self {
        let spec = |s: &str| s.parse::<RateSpec>().ok();
        Self {
            listen,
            auth,
            policy: LifetimePolicy::default(),
            client_limit: spec(DEFAULT_CLIENT_LIMIT),
            global_limit: spec(DEFAULT_GLOBAL_LIMIT),
            refusal_limit: spec(DEFAULT_REFUSAL_LIMIT),
            cors_origins: Vec::new(),
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_body: DEFAULT_MAX_BODY,
            max_in_flight: 64,
            retry: RetryPolicy::default(),
            tls: None,
            public_metrics: false,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot mint tokens: {0}")]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running token server. Dropping it does not stop it: call [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub tls: bool,
    state: Arc<ServerState>,
    listener: listener::Running,
}

impl RunningServer {
    /// `http://HOST:PORT` (or https).
    pub fn base_url(&self) -> String {
        self.listener.base_url()
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }

    /// The metrics as `GET /metrics` shows them.
    pub fn metrics_text(&self) -> String {
        self.state.metrics.render()
    }

    /// Tokens handed out so far, all clients.
    pub fn minted(&self) -> u64 {
        self.state.metrics.minted_total()
    }

    /// Cancelling it starts a graceful shutdown (the command's signal handlers use it).
    pub fn cancel_token(&self) -> CancellationToken {
        self.listener.cancel_token()
    }

    /// Stop accepting connections, let requests under way finish (within the grace period),
    /// and return when the server has stopped.
    pub async fn shutdown(self) {
        self.listener.shutdown().await;
    }

    /// Serve until cancelled, then until the graceful shutdown has finished.
    pub async fn wait(self) {
        self.listener.wait().await;
    }
}

/// Start a token server minting with `upstream` (in `aai-live serve`, the `api-key` provider).
pub async fn start(
    config: ServerConfig,
    upstream: Arc<dyn TokenProvider>,
) -> Result<RunningServer, ServerError> {
    config
        .policy
        .validate()
        .map_err(ServerError::InvalidConfig)?;
    if matches!(config.auth, Auth::None) && !config.listen.ip().is_loopback() {
        return Err(ServerError::InvalidConfig(format!(
            "authentication can be off only on a loopback address, not {}: give clients \
             credentials (--credentials FILE) or listen on 127.0.0.1",
            config.listen
        )));
    }
    if config.max_in_flight == 0 || config.max_body == 0 {
        return Err(ServerError::InvalidConfig(
            "max_in_flight and max_body must be at least 1".into(),
        ));
    }
    let origins = parse_origins(&config.cors_origins)?;
    let state = Arc::new(build_state(&config, upstream, origins.clone()));
    let app = router(Arc::clone(&state), &origins);

    let options = ListenOptions {
        tls: config.tls.clone(),
        header_timeout: Some(config.header_timeout),
        shutdown_grace: config.shutdown_grace,
        ..ListenOptions::new("token server")
    };
    let listener = listener::serve(config.listen, app, options, CancellationToken::new()).await?;
    tokio::spawn(forget_idle_keys(
        Arc::clone(&state),
        listener.cancel_token(),
    ));
    tracing::info!(
        addr = %listener.addr,
        tls = listener.tls,
        upstream = %state.upstream.source(),
        auth = match &config.auth {
            Auth::None => "none".to_owned(),
            Auth::Bearer(c) => format!("bearer ({} clients)", c.len()),
        },
        "token server listening"
    );
    Ok(RunningServer {
        addr: listener.addr,
        tls: listener.tls,
        state,
        listener,
    })
}

/// Until the server stops, forget rate-limit keys idle long enough to be full again, so the
/// per-address and per-client tables do not grow without bound.
async fn forget_idle_keys(state: Arc<ServerState>, cancel: CancellationToken) {
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = sweep.tick() => {
                if let Some(limiter) = &state.refusal_limit {
                    limiter.retain_recent();
                }
                if let Some(limiter) = &state.client_limit {
                    limiter.retain_recent();
                }
            }
        }
    }
}

fn build_state(
    config: &ServerConfig,
    upstream: Arc<dyn TokenProvider>,
    origins: Vec<HeaderValue>,
) -> ServerState {
    let anonymous: Arc<str> = Arc::from(auth::ANONYMOUS);
    let clients: Vec<Arc<str>> = match &config.auth {
        Auth::None => vec![anonymous],
        Auth::Bearer(credentials) => credentials.names().cloned().collect(),
    };
    ServerState {
        auth: config.auth.clone(),
        policy: config.policy,
        client_limit: config.client_limit.map(Limiter::new),
        global_limit: config.global_limit.map(Limiter::new),
        refusal_limit: config.refusal_limit.map(Limiter::new),
        origins,
        loopback_hosts_only: matches!(config.auth, Auth::None),
        request_timeout: config.request_timeout,
        max_body: config.max_body,
        upstream: upstream::Upstream::new(upstream, config.max_in_flight, config.retry),
        metrics: Metrics::new(&clients),
        public_metrics: config.public_metrics,
    }
}

fn router(state: Arc<ServerState>, origins: &[HeaderValue]) -> Router {
    let mut router = Router::new()
        .route("/token", get(handler::token).post(handler::token))
        .route("/healthz", get(handler::healthz))
        .route("/metrics", get(handler::metrics))
        .fallback(handler::not_found)
        .method_not_allowed_fallback(handler::method_not_allowed);
    if !origins.is_empty() {
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins.iter().cloned()))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .expose_headers([
                    handler::X_RATELIMIT_LIMIT,
                    handler::X_RATELIMIT_REMAINING,
                    handler::X_RATELIMIT_RESET,
                    HeaderName::from_static("retry-after"),
                ])
                .max_age(Duration::from_secs(600)),
        );
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            handler::access_log,
        ))
        .with_state(state)
}

/// Origins as browsers send them: `scheme://host[:port]`, nothing after.
fn parse_origins(origins: &[String]) -> Result<Vec<HeaderValue>, ServerError> {
    origins
        .iter()
        .map(|text| {
            let bad = |why: &str| {
                ServerError::InvalidConfig(format!(
                    "CORS origin {text:?} {why}: write scheme://host[:port], e.g. \
                     https://app.example.com"
                ))
            };
            if text.trim() == "*" {
                return Err(bad(
                    "would let every web page mint tokens; list the origins of your pages",
                ));
            }
            let url = url::Url::parse(text.trim()).map_err(|_| bad("is not a URL"))?;
            if !matches!(url.scheme(), "http" | "https")
                || url.host_str().is_none()
                || url.path() != "/"
                || url.query().is_some()
                || !url.username().is_empty()
            {
                return Err(bad("is not an origin"));
            }
            HeaderValue::from_str(&url.origin().ascii_serialization())
                .map_err(|_| bad("is not an origin"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_and_checked() {
        let ok = parse_origins(&[
            "https://App.Example.com".into(),
            "http://localhost:3000/".into(),
            "https://example.com:443".into(),
        ])
        .expect("valid");
        assert_eq!(
            ok,
            [
                "https://app.example.com",
                "http://localhost:3000",
                "https://example.com"
            ]
        );
        for bad in [
            "*",
            "example.com",
            "https://example.com/app",
            "ftp://x",
            "https://u@x",
        ] {
            let e = parse_origins(&[bad.into()]).expect_err(bad).to_string();
            assert!(e.contains("scheme://host"), "{e}");
        }
    }
}
