//! The emulator's shared state: accepted keys, minted tokens (one-time, with their windows),
//! the per-key new-session counters, the fault book and the session registry.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::EmulatorConfig;
use super::faults::FaultBook;
use crate::protocol::StreamingParams;

/// Server-side record of a minted temporary token.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// Index of the API key that minted it.
    pub key: usize,
    pub minted: Instant,
    pub window: Duration,
    pub max_session: Duration,
    pub used: bool,
}

/// Who opened a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    ApiKey,
    TemporaryToken,
}

/// Why a credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Invalid,
    Expired,
    Used,
}

/// An accepted credential.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub kind: CredentialKind,
    pub key: usize,
    pub max_session: Duration,
}

/// What `/emulator/sessions` reports per session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub credential: CredentialKind,
    pub params: StreamingParams,
    pub ignored_params: Vec<String>,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub expires_at: i64,
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    pub audio_bytes: u64,
    pub audio_ms: u64,
    pub audio_messages: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub final_turns: u64,
    pub terminated_by_client: bool,
    pub faults: Vec<String>,
}

/// Default session length when an API key is used directly (the service's 3 hours).
pub const DEFAULT_MAX_SESSION: Duration = Duration::from_secs(10_800);
/// Token records are kept this long after their window closes, so reuse is reported as reuse.
const TOKEN_RETENTION: Duration = Duration::from_secs(600);
/// The longest redemption window the service grants.
const MAX_WINDOW: Duration = Duration::from_secs(600);
/// At most this many token records are kept (memory stays bounded under a token flood).
const MAX_TOKENS: usize = 1_000_000;

#[derive(Debug)]
pub struct Inner {
    pub tokens: HashMap<String, TokenRecord>,
    /// Tokens in mint order, so pruning looks only at the oldest.
    minted: VecDeque<(Instant, String)>,
    pub session_starts: HashMap<usize, VecDeque<Instant>>,
    pub faults: FaultBook,
    pub sessions: Vec<Arc<Mutex<SessionRecord>>>,
}

/// Shared by every handler.
#[derive(Debug)]
pub struct State {
    pub config: EmulatorConfig,
    inner: Mutex<Inner>,
    /// Cancelled at shutdown: open sessions close with 1001.
    pub cancel: tokio_util::sync::CancellationToken,
    active: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Counts a session as open for as long as it lives.
pub struct ActiveSession<'a>(&'a State);

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl State {
    pub fn new(config: EmulatorConfig, cancel: tokio_util::sync::CancellationToken) -> Self {
        let mut faults = FaultBook::default();
        for rule in &config.faults {
            faults.add(rule.clone());
        }
        Self {
            config,
            inner: Mutex::new(Inner {
                tokens: HashMap::new(),
                minted: VecDeque::new(),
                session_starts: HashMap::new(),
                faults,
                sessions: Vec::new(),
            }),
            cancel,
            active: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
        }
    }

    pub fn enter_session(&self) -> ActiveSession<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveSession(self)
    }

    /// Wait until no session is open.
    pub async fn sessions_closed(&self) {
        loop {
            let notified = self.idle.notified();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Lock the state; a poisoned lock (a panicking handler) is recovered, since every update
    /// leaves the maps consistent.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn key_index(&self, candidate: &str) -> Option<usize> {
        self.config.api_keys.iter().position(|k| k == candidate)
    }

    /// Record a minted token.
    pub fn add_token(&self, token: String, record: TokenRecord) {
        let mut inner = self.lock();
        let now = Instant::now();
        // Prune from the oldest end only (O(1) amortised): a token is forgotten once even the
        // longest window (600 s) plus the retention has passed, or when the cap is reached.
        while let Some((minted, _)) = inner.minted.front() {
            let expired = now.duration_since(*minted) > MAX_WINDOW + TOKEN_RETENTION;
            if !expired && inner.minted.len() < MAX_TOKENS {
                break;
            }
            if let Some((_, old)) = inner.minted.pop_front() {
                inner.tokens.remove(&old);
            }
        }
        inner.minted.push_back((record.minted, token.clone()));
        inner.tokens.insert(token, record);
    }

    /// Check a credential from a WebSocket connect and, for a token, redeem it (once).
    pub fn authorize(&self, credential: Option<&str>) -> Result<Grant, AuthFailure> {
        let credential = credential.map(str::trim).filter(|c| !c.is_empty());
        let Some(credential) = credential else {
            return Err(AuthFailure::Missing);
        };
        if let Some(key) = self.key_index(credential) {
            return Ok(Grant {
                kind: CredentialKind::ApiKey,
                key,
                max_session: DEFAULT_MAX_SESSION,
            });
        }
        let mut inner = self.lock();
        let Some(record) = inner.tokens.get_mut(credential) else {
            return Err(AuthFailure::Invalid);
        };
        if record.used {
            return Err(AuthFailure::Used);
        }
        if record.minted.elapsed() > record.window {
            return Err(AuthFailure::Expired);
        }
        record.used = true;
        Ok(Grant {
            kind: CredentialKind::TemporaryToken,
            key: record.key,
            max_session: record.max_session,
        })
    }

    /// Count a new session against the key's per-minute limit; false when over it.
    pub fn admit_session(&self, key: usize) -> bool {
        let Some(limit) = self.config.sessions_per_minute else {
            return true;
        };
        let mut inner = self.lock();
        let now = Instant::now();
        let starts = inner.session_starts.entry(key).or_default();
        while starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            starts.pop_front();
        }
        if starts.len() >= limit as usize {
            return false;
        }
        starts.push_back(now);
        true
    }

    pub fn register(&self, record: SessionRecord) -> Arc<Mutex<SessionRecord>> {
        let shared = Arc::new(Mutex::new(record));
        self.lock().sessions.push(Arc::clone(&shared));
        shared
    }

    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.lock()
            .sessions
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
