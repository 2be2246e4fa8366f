//! A local emulator of AssemblyAI's Universal Streaming v3 API: the token endpoint, the
//! WebSocket with the service's rules and close codes, scripted "recognition", faults on demand
//! and session inspection. Tests, `aai-live demo` and users' own clients run against it offline.
//!
//! It does not recognise speech: words come from a script or a fixed word list, timed by the
//! voice activity in the audio it receives. See docs/emulator.md.
//!
//! Others point their own clients at it, sometimes on a LAN, so every resource a client can
//! make it hold is bounded (docs/security.md, "Emulator limits"): connections, header time,
//! frame sizes before and after authentication, kept session records, echoed text and minted
//! tokens; and the control API answers local, non-browser callers only.

pub mod control;
pub mod faults;
pub mod recognizer;
pub mod replay;
pub mod script;
pub mod state;
pub mod token;
pub mod tokens;
pub mod turns;
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

use crate::listener::{
    self, ConnectionLimit, ConnectionStats, ListenError, ListenOptions, TlsFiles,
};

pub use faults::{Fault, FaultRule};
pub use script::Script;
pub use state::{SessionRecord, SessionStats};
pub use tokens::TokenStats;

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
    /// Caps every session below the token's own `max_session_duration_seconds`
    /// (`--max-session-duration`, once `--session-limit`).
    pub max_session_duration: Option<Duration>,
    pub inactivity_close_code: u16,
    /// Finished sessions kept for `/emulator/sessions` (the open ones are always listed).
    pub keep_sessions: usize,
    /// Minted tokens remembered at most; the oldest are evicted beyond it.
    pub max_tokens: usize,
    /// Open connections at most (`None`: no cap); beyond it new ones are closed at once.
    pub max_connections: Option<usize>,
    /// Time a connection has to send a request's headers (`None`: hyper's default, 30 s).
    pub header_timeout: Option<Duration>,
    /// Answer the control API (`/emulator/*`) for peers that are not on loopback too.
    pub control_from_anywhere: bool,
    /// Milliseconds added to the `expires_at` that `Begin` reports (negative: earlier), as a
    /// server whose clock is off would report it; the session still ends on time. For clock-skew
    /// tests (`aai-live doctor`'s `clock` step).
    pub clock_skew_ms: i64,
    /// `--replay`: serve these recorded sessions, one per new session, instead of recognising.
    pub replay: Option<Arc<crate::trace::Recorded>>,
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
            max_session_duration: None,
            inactivity_close_code: 3006,
            keep_sessions: DEFAULT_KEEP_SESSIONS,
            max_tokens: DEFAULT_MAX_TOKENS,
            max_connections: Some(DEFAULT_MAX_CONNECTIONS),
            header_timeout: Some(DEFAULT_HEADER_TIMEOUT),
            control_from_anywhere: false,
            clock_skew_ms: 0,
            replay: None,
        }
    }
}

/// `--keep-sessions` default.
pub const DEFAULT_KEEP_SESSIONS: usize = 1000;
/// `--max-tokens` default: about 7 MiB of records at most.
pub const DEFAULT_MAX_TOKENS: usize = 100_000;
/// `--max-connections` default: within the usual 8 192+ descriptor limit of a service, and
/// above the 2 000 sessions the benchmark drives.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// `--header-timeout` default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

impl EmulatorConfig {
    /// A config accepting one API key, with defaults otherwise.
    pub fn with_key(key: impl Into<String>) -> Self {
        Self {
            api_keys: vec![key.into()],
            ..Self::default()
        }
    }

    /// The checks `start` makes (the flags are checked the same way when parsed): close codes
    /// the emulator would send must be ones a server may send.
    pub fn validate(&self) -> Result<(), EmulatorError> {
        if self.api_keys.is_empty() {
            return Err(EmulatorError::NoKeys);
        }
        let codes = [
            ("inactivity_close_code", self.inactivity_close_code),
            ("rate_limit_close_code", self.rate_limit_close_code),
            ("expired_token_close_code", self.expired_token_close_code),
        ];
        for (field, code) in codes {
            if !faults::is_sendable_close_code(code) {
                return Err(EmulatorError::CloseCode { field, code });
            }
        }
        if self.faults.len() > faults::MAX_FAULT_RULES {
            return Err(EmulatorError::TooManyFaults(faults::FaultBookFull {
                active: 0,
                adding: self.faults.len(),
            }));
        }
        for rule in &self.faults {
            // A rule built in code skips the parsers: read it back through the flag syntax.
            rule.to_spec()
                .parse::<FaultRule>()
                .map_err(EmulatorError::Fault)?;
        }
        if self.max_tokens == 0 || self.max_connections == Some(0) {
            return Err(EmulatorError::ZeroLimit);
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("the emulator needs at least one API key (--api-key or AAI_LIVE_EMULATOR_API_KEYS)")]
    NoKeys,
    #[error(
        "{field} {code} is not a close code a server may send (allowed: {})",
        faults::ALLOWED_CLOSE_CODES
    )]
    CloseCode { field: &'static str, code: u16 },
    #[error(transparent)]
    Fault(faults::FaultParseError),
    #[error("max_tokens and max_connections must be at least 1")]
    ZeroLimit,
    #[error(transparent)]
    TooManyFaults(faults::FaultBookFull),
}

/// Text from a client echoed back (in an Error frame, a log line, a session record): at most
/// `max_chars` characters, and "…" when cut. One place, so every echo is bounded the same way.
pub fn echo(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Everything `GET /emulator/stats` reports: how close each limit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EmulatorStats {
    /// `None` without a connection cap.
    pub connections: Option<ConnectionStats>,
    pub sessions: SessionStats,
    pub tokens: TokenStats,
}

/// A running emulator. Dropping it does not stop it; call [`RunningEmulator::shutdown`].
#[derive(Debug)]
pub struct RunningEmulator {
    pub addr: SocketAddr,
    pub tls: bool,
    /// What the operator should know (also logged): an address beyond loopback, a connection
    /// cap lowered to fit the open-file limit. `aai-live emulate` prints them on stderr.
    pub warnings: Vec<String>,
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

    /// The open sessions and the last `keep_sessions` finished ones, in start order.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.state.sessions()
    }

    /// The limits' counters (connections, session records, tokens).
    pub fn stats(&self) -> EmulatorStats {
        self.state.stats()
    }

    /// Add a fault rule at run time. Panics when [`faults::MAX_FAULT_RULES`] are active already
    /// (a test that adds that many has a bug; the control API answers 409 instead).
    pub fn add_fault(&self, rule: FaultRule) {
        if let Err(full) = self.state.lock().faults.add(&[rule]) {
            panic!("{full}");
        }
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
        .merge(control::routes(Arc::clone(&state)))
        // The service answers unknown paths with an empty 403.
        .fallback(|| async { StatusCode::FORBIDDEN })
        .with_state(state)
}

/// The warning for an address other machines can reach, or `None` on loopback.
pub fn exposure_warning(addr: SocketAddr) -> Option<String> {
    if addr.ip().to_canonical().is_loopback() {
        return None;
    }
    Some(format!(
        "the emulator listens on {addr}, which is not a loopback address: anyone who can reach \
         it can mint tokens and open sessions with its keys (the control API still answers \
         loopback peers only, unless --control-from-anywhere)"
    ))
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
    config.validate()?;
    let mut warnings = Vec::new();
    let max_connections = config.max_connections.map(|cap| {
        // With `--record` each session also holds its `.pcm` file open.
        let per_connection = if config.record_dir.is_some() { 2 } else { 1 };
        let (cap, lowered) = listener::fit_to_open_files(
            "--max-connections",
            cap,
            listener::open_file_limit(),
            per_connection,
        );
        warnings.extend(lowered);
        cap
    });
    // The sessions watch the same token as the listener: cancelling it ends them with 1001.
    let cancel = CancellationToken::new();
    let connection_limit = max_connections.map(ConnectionLimit::new);
    let options = ListenOptions {
        tls,
        header_timeout: config.header_timeout,
        connection_limit: connection_limit.clone(),
        // Refusals write their Error and close frames, then drop connections that may hold
        // unread input: those frames must not wait behind Nagle's algorithm for the reset.
        tcp_nodelay: true,
        shutdown_grace: SESSIONS_CLOSE_GRACE,
        ..ListenOptions::new("emulator")
    };
    let state = Arc::new(state::State::new(config, cancel.clone(), connection_limit));
    let listener = listener::serve(listen, router(Arc::clone(&state)), options, cancel).await?;
    tracing::info!(addr = %listener.addr, tls = listener.tls, "emulator listening");
    if let Some(exposed) = exposure_warning(listener.addr) {
        warnings.insert(0, exposed);
    }
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    Ok(RunningEmulator {
        addr: listener.addr,
        tls: listener.tls,
        warnings,
        state,
        listener,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_is_bounded_in_characters() {
        assert_eq!(echo("abc", 64), "abc");
        assert_eq!(echo(&"x".repeat(100), 60).chars().count(), 61);
        assert_eq!(echo("ééé", 2), "éé…");
    }

    #[test]
    fn only_loopback_addresses_go_without_a_warning() {
        for quiet in ["127.0.0.1:80", "[::1]:80", "[::ffff:127.0.0.1]:80"] {
            assert_eq!(
                exposure_warning(quiet.parse().expect("addr")),
                None,
                "{quiet}"
            );
        }
        for loud in ["0.0.0.0:80", "[::]:80", "192.168.1.2:80"] {
            assert!(
                exposure_warning(loud.parse().expect("addr")).is_some(),
                "{loud}"
            );
        }
    }
}
