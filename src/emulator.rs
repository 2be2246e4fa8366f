//! A local emulator of AssemblyAI's Universal Streaming v3 API: the token endpoint, the
//! WebSocket with the service's rules and close codes, scripted "recognition", faults on demand
//! and session inspection. Tests, `aai-live demo` and users' own clients run against it offline.
//!
//! It does not recognise speech: words come from a script or a fixed word list, timed by the
//! voice activity in the audio it receives. See docs/emulator.md.

pub mod control;
pub mod faults;
pub mod recognizer;
pub mod script;
pub mod state;
pub mod token;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::listener::{self, ListenError, ListenOptions, TlsFiles};

pub use faults::{Fault, FaultRule};
pub use script::Script;
pub use state::SessionRecord;

/// Which generation of the service's behaviour to emulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Today's service: with format_turns every Turn is formatted.
    #[default]
    Current,
    /// Before 2026-03-20: with format_turns an extra formatted final follows each final.
    #[value(name = "pre-2026-03")]
    #[serde(rename = "pre-2026-03")]
    Legacy,
    /// The U3-Pro family: SpeechStarted, whole-turn partials, formatted finals.
    U3Pro,
}

/// Pacing rule: audio may run at most `factor` × real time plus a `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    pub factor: f64,
    pub burst: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            factor: 1.5,
            burst: Duration::from_secs(2),
        }
    }
}

/// Everything the emulator can be told.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub api_keys: Vec<String>,
    pub profile: Profile,
    pub script: Option<Arc<Script>>,
    pub sessions_per_minute: Option<u32>,
    pub rate_limit_close_code: u16,
    pub reject_at_upgrade: bool,
    pub expired_token_close_code: u16,
    pub pacing: Option<Pacing>,
    pub processing_delay: Duration,
    pub record_dir: Option<PathBuf>,
    pub faults: Vec<FaultRule>,
    pub session_limit: Option<Duration>,
    pub inactivity_close_code: u16,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            profile: Profile::Current,
            script: None,
            sessions_per_minute: None,
            rate_limit_close_code: 3009,
            reject_at_upgrade: false,
            expired_token_close_code: 1008,
            pacing: Some(Pacing::default()),
            processing_delay: Duration::from_millis(200),
            record_dir: None,
            faults: Vec::new(),
            session_limit: None,
            inactivity_close_code: 3006,
        }
    }
}

impl EmulatorConfig {
    /// A config accepting one API key, with defaults otherwise.
    pub fn with_key(key: impl Into<String>) -> Self {
        Self {
            api_keys: vec![key.into()],
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("the emulator needs at least one API key (--api-key or AAI_LIVE_EMULATOR_API_KEYS)")]
    NoKeys,
}

/// A running emulator. Dropping it does not stop it; call [`RunningEmulator::shutdown`].
#[derive(Debug)]
pub struct RunningEmulator {
    pub addr: SocketAddr,
    pub tls: bool,
    state: Arc<state::State>,
    listener: listener::Running,
}

impl RunningEmulator {
    /// `http://HOST:PORT` (or https).
    pub fn base_url(&self) -> String {
        self.listener.base_url()
    }

    pub fn token_url(&self) -> String {
        format!("{}/v3/token", self.base_url())
    }

    pub fn ws_url(&self) -> String {
        format!(
            "{}://{}/v3/ws",
            if self.tls { "wss" } else { "ws" },
            self.addr
        )
    }

    /// Every session so far.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.state.sessions()
    }

    /// Add a fault rule at run time.
    pub fn add_fault(&self, rule: FaultRule) {
        self.state.lock().faults.add(rule);
    }

    /// Stop accepting connections and end open sessions (close 1001 "Going Away"), waiting at
    /// most a second for their closing handshakes.
    pub async fn shutdown(self) {
        self.listener.cancel_token().cancel();
        self.wait().await;
    }

    /// Serve until `shutdown` is called elsewhere (used by `aai-live emulate` with Ctrl-C).
    pub fn cancel_token(&self) -> CancellationToken {
        self.listener.cancel_token()
    }

    /// Serve until cancelled, then let open sessions close (bounded).
    pub async fn wait(self) {
        self.listener.wait().await;
        let _ = tokio::time::timeout(SESSIONS_CLOSE_GRACE, self.state.sessions_closed()).await;
    }
}

fn router(state: Arc<state::State>) -> Router {
    Router::new()
        .route("/v3/token", get(token::mint))
        .route("/v3/ws", get(ws::upgrade))
        .route(
            "/emulator/faults",
            get(control::list_faults)
                .post(control::add_faults)
                .delete(control::clear_faults),
        )
        .route("/emulator/sessions", get(control::sessions))
        // The service answers unknown paths with an empty 403.
        .fallback(|| async { StatusCode::FORBIDDEN })
        .with_state(state)
}

/// How long a shutdown waits for open sessions' closing handshakes, and for HTTP requests under
/// way.
const SESSIONS_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Start the emulator on `listen` (port 0 picks a free port).
pub async fn start(
    config: EmulatorConfig,
    listen: &str,
    tls: Option<TlsFiles>,
) -> Result<RunningEmulator, EmulatorError> {
    if config.api_keys.is_empty() {
        return Err(EmulatorError::NoKeys);
    }
    // The sessions watch the same token as the listener: cancelling it ends them with 1001.
    let cancel = CancellationToken::new();
    let state = Arc::new(state::State::new(config, cancel.clone()));
    let options = ListenOptions {
        tls,
        shutdown_grace: SESSIONS_CLOSE_GRACE,
        ..ListenOptions::new("emulator")
    };
    let listener = listener::serve(listen, router(Arc::clone(&state)), options, cancel).await?;
    tracing::info!(addr = %listener.addr, tls = listener.tls, "emulator listening");
    Ok(RunningEmulator {
        addr: listener.addr,
        tls: listener.tls,
        state,
        listener,
    })
}
