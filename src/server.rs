//! `aai-live serve`: a token server. It mints one-time streaming tokens with the API key it
//! holds and hands them to authenticated clients (the `remote` provider, a browser page), so the
//! key never leaves the machine it runs on.
//!
//! AssemblyAI's browser example leaves the hardening as advice; here it is built in:
//! authentication by named bearer credentials stored as hashes ([`auth`]), rate limits per client
//! and global ([`limit`]) kept in memory or, for several replicas, in Redis ([`store`],
//! [`redis_store`]), a lifetime policy callers can only shorten ([`policy`]), a CORS allow-list,
//! strict `Host` checks ([`host`]), client addresses from trusted proxies only ([`forwarded`]),
//! request size, time and connection limits, JSON errors, an upstream with a retry and bounded
//! concurrency ([`upstream`]), Prometheus metrics ([`metrics`]) and an access log without
//! secrets ([`handler`]). Optional TLS; graceful shutdown. See `docs/server.md`.
//!
//! [`start`] runs it in-process (tests, embedding) on a [`crate::listener`]; [`serve_cli`] is the
//! `aai-live serve` command line.

pub mod auth;
pub mod forwarded;
pub mod handler;
pub mod host;
pub mod limit;
pub mod metrics;
pub mod policy;
mod redis_link;
pub mod redis_store;
pub mod serve_cli;
pub mod state;
pub mod store;
pub mod upstream;
pub mod web;

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
pub use store::StoreConfig;
pub use upstream::RetryPolicy;
pub use web::BrowserSettings;

use crate::config::{Cidr, ServerSettings};
use crate::listener::{self, ListenError, ListenOptions, TlsFiles};
use crate::provider::{ProviderError, TokenProvider};
use metrics::Metrics;
use redis_store::StoreError;
use state::ServerState;
use store::Limits;

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
    /// Connections open at once; more are closed as they arrive. `None`: no cap.
    pub max_connections: Option<usize>,
    /// Peers whose `X-Forwarded-For` names the client (load balancers, proxies).
    pub trusted_proxies: Vec<Cidr>,
    /// Where the budgets live, and what happens when that store cannot be reached.
    pub limits: StoreConfig,
    /// Serve the browser page at `/` (the client module and its files are served either way).
    pub web: bool,
    /// The origin browsers see when the server sits behind a proxy; `None`: the request's
    /// `Host` with the scheme the server listens with.
    pub public_origin: Option<String>,
    /// What `/config.json` tells browser clients.
    pub browser: BrowserSettings,
}

/// Largest request body accepted by default.
pub const DEFAULT_MAX_BODY: usize = 4096;

impl ServerConfig {
    /// The defaults of `[server]` in config/default.toml (60 s windows, 30/min per client,
    /// 300/min in all, 10 refusals/min per address, 30 s per request, 64 upstream requests and
    /// 512 connections at once, limits in memory), 10 s for headers and bodies, 4 KiB bodies,
    /// one retry.
    pub fn new(listen: SocketAddr, auth: Auth) -> Self {
        Self {
            listen,
            ..Self::from_settings(&ServerSettings::default(), auth)
        }
    }

    /// The configuration `[server]` describes, with `auth` (the credentials file read) and the
    /// limits store's password left unset (the caller reads it). The browser settings are those
    /// of the default configuration; [`serve_cli::server_config`] takes them from the whole one
    /// (`[streaming]`, `[session]`, the provider's endpoint).
    pub fn from_settings(settings: &ServerSettings, auth: Auth) -> Self {
        Self {
            listen: settings.listen,
            auth,
            policy: LifetimePolicy {
                expires_in: settings.expires_in_seconds,
                min_expires_in: settings.min_expires_in_seconds,
                max_session: settings.max_session_duration_seconds,
                min_session: settings.min_session_duration_seconds,
            },
            client_limit: settings.rate_limit,
            global_limit: settings.global_rate_limit,
            refusal_limit: settings.refusal_limit,
            cors_origins: settings.cors_origins.clone(),
            request_timeout: settings.request_timeout,
            header_timeout: Duration::from_secs(10),
            max_body: DEFAULT_MAX_BODY,
            max_in_flight: settings.max_in_flight as usize,
            retry: RetryPolicy::default(),
            tls: match (&settings.tls_cert, &settings.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            public_metrics: settings.public_metrics,
            shutdown_grace: settings.request_timeout,
            max_connections: Some(settings.max_connections as usize),
            trusted_proxies: settings.trusted_proxies.clone(),
            limits: StoreConfig {
                store: settings.limits_store.clone(),
                failure: settings.limits_store_failure,
                password: None,
                ca: settings.limits_store_ca.clone(),
                prefix: settings.limits_store_prefix.clone(),
                timeout: settings.limits_store_timeout,
            },
            web: settings.web,
            public_origin: settings.public_origin.clone(),
            browser: BrowserSettings::from_config(&crate::config::Config::default()),
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
    #[error(transparent)]
    Store(#[from] StoreError),
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
    if config.max_in_flight == 0 || config.max_body == 0 || config.max_connections == Some(0) {
        return Err(ServerError::InvalidConfig(
            "max_in_flight, max_body and max_connections must be at least 1".into(),
        ));
    }
    let origins = parse_origins(&config.cors_origins)?;
    let public_origin = config
        .public_origin
        .as_ref()
        .map(|origin| parse_origins(std::slice::from_ref(origin)))
        .transpose()?
        .and_then(|mut parsed| parsed.pop());
    let state = Arc::new(build_state(
        &config,
        upstream,
        origins.clone(),
        public_origin,
    )?);
    let web = web::Web::new(
        &config.browser,
        matches!(config.auth, Auth::Bearer(_)),
        config.web,
    );
    let app = router(Arc::clone(&state), Arc::new(web), &origins);
    if !config.browser.withheld.is_empty() {
        tracing::warn!(
            withheld = ?config.browser.withheld,
            "streaming parameters not known to be public are left out of /config.json: browser \
             clients connect without them"
        );
    }

    // The store's watcher stops with the listener.
    let cancel = CancellationToken::new();
    if let Err(e) = state.limits.start(cancel.clone()).await {
        cancel.cancel();
        return Err(e.into());
    }
    let options = ListenOptions {
        tls: config.tls.clone(),
        header_timeout: Some(config.header_timeout),
        shutdown_grace: config.shutdown_grace,
        connection_limit: config.max_connections.map(listener::ConnectionLimit::new),
        ..ListenOptions::new("token server")
    };
    let listener = match listener::serve(config.listen, app, options, cancel.clone()).await {
        Ok(listener) => listener,
        Err(e) => {
            cancel.cancel();
            return Err(e.into());
        }
    };
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
        limits_store = %config.limits.store,
        web = config.web,
        streaming = %config.browser.streaming_url,
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
            _ = sweep.tick() => state.limits.retain_recent(),
        }
    }
}

fn build_state(
    config: &ServerConfig,
    upstream: Arc<dyn TokenProvider>,
    origins: Vec<HeaderValue>,
    public_origin: Option<HeaderValue>,
) -> Result<ServerState, ServerError> {
    let anonymous: Arc<str> = Arc::from(auth::ANONYMOUS);
    let clients: Vec<Arc<str>> = match &config.auth {
        Auth::None => vec![anonymous],
        Auth::Bearer(credentials) => credentials.names().cloned().collect(),
    };
    let metrics = Metrics::new(&clients);
    let limits = Limits::new(
        config.client_limit,
        config.global_limit,
        config.refusal_limit,
        &config.limits,
        &metrics,
    )?;
    Ok(ServerState {
        auth: config.auth.clone(),
        policy: config.policy,
        limits,
        origins,
        loopback_hosts_only: matches!(config.auth, Auth::None),
        trusted_proxies: config.trusted_proxies.clone(),
        request_timeout: config.request_timeout,
        body_timeout: config.header_timeout,
        max_body: config.max_body,
        upstream: upstream::Upstream::new(upstream, config.max_in_flight, config.retry),
        metrics,
        public_metrics: config.public_metrics,
        tls: config.tls.is_some(),
        public_origin,
    })
}

fn router(state: Arc<ServerState>, web: Arc<web::Web>, origins: &[HeaderValue]) -> Router {
    // The browser routes have their own state: they need none of the API's.
    let mut browser = Router::new()
        .route("/aai-live-client.js", get(web::client))
        .route("/aai-live-machine.js", get(web::machine))
        .route("/aai-live-worklet.js", get(web::worklet))
        .route("/close-codes.json", get(web::close_codes))
        .route("/config.json", get(web::config));
    if web.page {
        browser = browser
            .route("/", get(web::index))
            .route("/app.js", get(web::app_js))
            .route("/app.css", get(web::app_css));
    }
    let mut router = Router::new()
        .route("/token", get(handler::token).post(handler::token))
        .route("/healthz", get(handler::healthz))
        .route("/readyz", get(handler::readyz))
        .route("/metrics", get(handler::metrics))
        .merge(browser.with_state(web));
    router = router
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

/// Origins as browsers send them: `scheme://host[:port]`, nothing after (the rule of
/// `server.cors_origins`, also applied to a configuration built in code).
fn parse_origins(origins: &[String]) -> Result<Vec<HeaderValue>, ServerError> {
    origins
        .iter()
        .map(|text| {
            let bad =
                |why: String| ServerError::InvalidConfig(format!("CORS origin {text:?} {why}"));
            let origin = crate::config::parse_origin(text).map_err(bad)?;
            HeaderValue::from_str(&origin).map_err(|_| bad("is not an origin".to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule of an origin is `config::parse_origin`'s (tested there); this is what the list
    /// adds: each one normalised, and a bad one named in a configuration error.
    #[test]
    fn origins_are_normalised_and_checked() {
        let ok = parse_origins(&[
            "https://App.Example.com".into(),
            "http://localhost:3000/".into(),
        ])
        .expect("valid");
        assert_eq!(ok, ["https://app.example.com", "http://localhost:3000"]);
        let e = parse_origins(&["https://ok.example".into(), "example.com".into()])
            .expect_err("one bad");
        assert!(matches!(e, ServerError::InvalidConfig(_)), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("CORS origin \"example.com\"") && e.contains("scheme://host"),
            "{e}"
        );
    }
}
