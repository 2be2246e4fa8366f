//! The emulator's shared state: accepted keys, the token store, the per-key new-session
//! counters, the fault book, the session registry (the open sessions and the last N finished
//! ones) and the connection counters the control API reports.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use super::faults::FaultBook;
use super::recognizer::{EffectiveSettings, SpeakerLabel};
use super::tokens::{Minted, Refusal, TokenStats, TokenStore};
use super::turns::IgnoredParams;
use super::{EmulatorConfig, EmulatorStats};
use crate::listener::ConnectionLimit;
use crate::protocol::StreamingParams;

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

/// What `/emulator/sessions` reports per session, and what `--record` writes to `<id>.json`.
///
/// The server's side (`ended_at_ms`, `close_code`, `close_reason`, the counters) is final
/// before the closing handshake starts; the client's close and `closed_at_ms` are filled in
/// when the connection has ended, so `closed_at_ms` set means the record is complete.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub credential: CredentialKind,
    /// As parsed, each text value cut to [`ECHO_VALUE_CHARS`] characters and the whole bounded
    /// (see `params_truncated`).
    pub params: StreamingParams,
    /// Query parameters the emulator does not act on, by name (bounded like `params`):
    /// documented ones it does not simulate (`unmodelled`) and the rest (`unknown`: a typo, an
    /// integration's own parameter).
    pub ignored_params: IgnoredParams,
    /// Whether `params` or `ignored_params` were cut to keep the record small.
    pub params_truncated: bool,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    /// When the session ended, as the server decided (before the closing handshake).
    pub ended_at_ms: Option<u64>,
    pub expires_at: i64,
    /// The close frame the server sent (or echoed); `None` for a TCP drop.
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    /// The close frame the client sent (first, or in answer to the server's); `None` when the
    /// TCP connection ended without one. An empty close frame reads as 1005.
    pub client_close_code: Option<u16>,
    pub client_close_reason: Option<String>,
    /// When the connection ended (after the closing handshake, or when it was given up).
    pub closed_at_ms: Option<u64>,
    pub audio_bytes: u64,
    pub audio_ms: u64,
    pub audio_messages: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub final_turns: u64,
    pub terminated_by_client: bool,
    pub faults: Vec<String>,
    /// The settings in effect now: the parameters with the `UpdateConfiguration`s applied
    /// (`None` until the recogniser exists, just after Begin).
    pub effective: Option<EffectiveSettings>,
    /// The last [`MAX_RECORDED_UPDATES`] `UpdateConfiguration`s, oldest first.
    pub updates: VecDeque<UpdateRecord>,
    /// Every `UpdateConfiguration` accepted (more than `updates` holds when some were dropped).
    pub updates_received: u64,
    /// With `speaker_labels`: each person heard and the label this session gave them, in order
    /// of first appearance (the first [`MAX_RECORDED_SPEAKERS`]).
    pub speakers: Vec<SpeakerLabel>,
}

/// One `UpdateConfiguration` as a session received it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpdateRecord {
    /// Milliseconds since the session started (wall clock).
    pub at_ms: u64,
    /// Audio received before it, in ms of session time: it applies to the audio after this.
    pub audio_ms: u64,
    /// The same position in the client's stream, when it gave the offset hint.
    pub stream_ms: Option<u64>,
    /// The fields as sent, bounded ([`bounded_fields`]).
    pub fields: Map<String, Value>,
    /// Whether `fields` was cut to keep the record small.
    pub truncated: bool,
}

/// `UpdateConfiguration`s kept per session record (the most recent).
pub const MAX_RECORDED_UPDATES: usize = 16;
/// Characters of client text kept per recorded update (field names and string values).
const UPDATE_BUDGET_CHARS: usize = 512;
/// Keyterms kept in a record's effective settings, in characters (whole terms).
const KEYTERMS_BUDGET_CHARS: usize = 1024;
/// People listed in a record's `speakers`.
pub const MAX_RECORDED_SPEAKERS: usize = 32;

/// A client's `UpdateConfiguration` fields for a record: at most 16 fields; strings cut to 64
/// characters; at most [`UPDATE_BUDGET_CHARS`] characters in all, every kept name, string,
/// number or list entry costing at least one (so a list of 100 000 empty strings is cut too);
/// values nested deeper than a list described by their kind only. The flag says whether
/// anything was cut.
pub fn bounded_fields(fields: &Map<String, Value>) -> (Map<String, Value>, bool) {
    const MAX_FIELDS: usize = 16;
    let mut budget = Budget {
        left: UPDATE_BUDGET_CHARS,
        truncated: fields.len() > MAX_FIELDS,
    };
    let mut out = Map::new();
    for (name, value) in fields.iter().take(MAX_FIELDS) {
        let Some(name) = budget.text(name) else {
            break;
        };
        let Some(value) = budget.value(value, false) else {
            break;
        };
        out.insert(name, value);
    }
    (out, budget.truncated)
}

/// What is left of a record's allowance for client text, and whether anything was cut.
struct Budget {
    left: usize,
    truncated: bool,
}

impl Budget {
    /// Each string kept is cut to this many characters.
    const STRING_CHARS: usize = 64;

    /// Take `cost` (at least 1) from what is left; `None` (and cut) when nothing is left.
    fn charge(&mut self, cost: usize) -> Option<()> {
        if self.left == 0 {
            self.truncated = true;
            return None;
        }
        self.left = self.left.saturating_sub(cost.max(1));
        Some(())
    }

    fn text(&mut self, text: &str) -> Option<String> {
        if self.left == 0 {
            self.truncated = true;
            return None;
        }
        let echoed = super::echo(text, Self::STRING_CHARS.min(self.left));
        if echoed.len() != text.len() {
            self.truncated = true;
        }
        self.charge(echoed.chars().count())?;
        Some(echoed)
    }

    /// A field's value: scalars and strings as they are (bounded), a list entry by entry until
    /// the allowance runs out, anything deeper by its kind.
    fn value(&mut self, value: &Value, nested: bool) -> Option<Value> {
        match value {
            Value::String(text) => self.text(text).map(Value::String),
            Value::Array(items) if !nested => {
                let mut kept = Vec::new();
                for item in items {
                    match self.value(item, true) {
                        Some(item) => kept.push(item),
                        None => break,
                    }
                }
                Some(Value::Array(kept))
            }
            Value::Array(_) | Value::Object(_) => {
                self.truncated = true;
                self.text(crate::untrusted::json_kind(value))
                    .map(Value::String)
            }
            scalar => {
                self.charge(scalar.to_string().len())?;
                Some(scalar.clone())
            }
        }
    }
}

/// Effective settings for a record: keyterms cut to [`KEYTERMS_BUDGET_CHARS`] (whole terms;
/// `keyterms_count` keeps the full count).
pub fn bounded_settings(mut settings: EffectiveSettings) -> EffectiveSettings {
    let mut budget = KEYTERMS_BUDGET_CHARS;
    let kept = settings
        .keyterms_prompt
        .iter()
        .take_while(|term| {
            let chars = term.chars().count();
            let fits = chars <= budget;
            budget = budget.saturating_sub(chars);
            fits
        })
        .count();
    settings.keyterms_prompt.truncate(kept);
    settings
}

impl SessionRecord {
    /// The record of a session as it starts: which, by what credential, when and until when;
    /// nothing closed, nothing counted, no parameters or faults (the caller adds them, the
    /// parameters bounded by [`bounded_params`]). The one place a new counter starts at zero.
    pub fn started(
        id: String,
        credential: CredentialKind,
        started_at_ms: u64,
        expires_at: i64,
    ) -> Self {
        Self {
            id,
            credential,
            params: StreamingParams::default(),
            ignored_params: IgnoredParams::default(),
            params_truncated: false,
            started_at_ms,
            ended_at_ms: None,
            expires_at,
            close_code: None,
            close_reason: None,
            client_close_code: None,
            client_close_reason: None,
            closed_at_ms: None,
            audio_bytes: 0,
            audio_ms: 0,
            audio_messages: 0,
            messages_sent: 0,
            messages_received: 0,
            final_turns: 0,
            terminated_by_client: false,
            faults: Vec::new(),
            effective: None,
            updates: VecDeque::new(),
            updates_received: 0,
            speakers: Vec::new(),
        }
    }

    /// Note an accepted `UpdateConfiguration`, keeping the last [`MAX_RECORDED_UPDATES`].
    pub fn add_update(&mut self, update: UpdateRecord) {
        self.updates_received += 1;
        if self.updates.len() == MAX_RECORDED_UPDATES {
            self.updates.pop_front();
        }
        self.updates.push_back(update);
    }
}

/// Default session length when an API key is used directly (the service's 3 hours).
pub const DEFAULT_MAX_SESSION: Duration = Duration::from_secs(10_800);
/// Each text value echoed in a session record is cut to this many characters.
pub const ECHO_VALUE_CHARS: usize = 256;
/// All text echoed from one session's parameters: about 4 KiB, so 1 000 kept records stay
/// within a few MiB whatever the clients send.
const ECHO_BUDGET_CHARS: usize = 4096;

/// `params` and the ignored names, with each text value cut to [`ECHO_VALUE_CHARS`] characters
/// and at most [`ECHO_BUDGET_CHARS`] in all (list entries past the budget are dropped); the
/// flag says whether anything was cut. The typed values (numbers, booleans) are small already.
pub fn bounded_params(
    params: &StreamingParams,
    ignored: &IgnoredParams,
) -> (StreamingParams, IgnoredParams, bool) {
    let mut budget = ECHO_BUDGET_CHARS;
    let mut truncated = false;
    let mut cut = |text: &str| -> Option<String> {
        if budget == 0 {
            truncated = true;
            return None;
        }
        let limit = ECHO_VALUE_CHARS.min(budget);
        let echoed = super::echo(text, limit);
        if echoed.len() != text.len() {
            truncated = true;
        }
        budget = budget.saturating_sub(echoed.chars().count());
        Some(echoed)
    };
    let mut out = params.clone();
    out.speech_model = cut(&params.speech_model).unwrap_or_default();
    out.prompt = params.prompt.as_deref().map(|p| cut(p).unwrap_or_default());
    out.keyterms_prompt = params
        .keyterms_prompt
        .iter()
        .map_while(|t| cut(t))
        .collect();
    out.extra = params
        .extra
        .iter()
        .map_while(|(k, v)| Some((cut(k)?, cut(v)?)))
        .collect();
    let unmodelled = ignored.unmodelled.iter().map_while(|n| cut(n)).collect();
    let unknown = ignored.unknown.iter().map_while(|n| cut(n)).collect();
    let ignored = IgnoredParams {
        unmodelled,
        unknown,
    };
    (out, ignored, truncated)
}

/// Open sessions and the last `keep` finished ones, in start order.
#[derive(Debug)]
pub struct Registry {
    records: VecDeque<Arc<Mutex<SessionRecord>>>,
    keep: usize,
    pruned: u64,
}

/// Counters for `GET /emulator/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SessionStats {
    pub open: usize,
    pub kept_finished: usize,
    /// `--keep-sessions`.
    pub keep_finished: usize,
    /// Finished records forgotten so far.
    pub pruned: u64,
}

impl Registry {
    fn new(keep: usize) -> Self {
        Self {
            records: VecDeque::new(),
            keep,
            pruned: 0,
        }
    }

    /// A record is finished once its session task let go of it (whether it ended normally or
    /// not): the registry then holds the only reference.
    fn is_finished(record: &Arc<Mutex<SessionRecord>>) -> bool {
        Arc::strong_count(record) == 1
    }

    /// Forget the oldest finished records beyond `keep` (O(n), n ≤ keep + open sessions).
    fn prune(&mut self) {
        let finished = self.records.iter().filter(|r| Self::is_finished(r)).count();
        let mut excess = finished.saturating_sub(self.keep);
        let before = self.records.len();
        self.records.retain(|r| {
            if excess > 0 && Self::is_finished(r) {
                excess -= 1;
                false
            } else {
                true
            }
        });
        self.pruned += (before - self.records.len()) as u64;
    }

    fn stats(&self) -> SessionStats {
        let finished = self.records.iter().filter(|r| Self::is_finished(r)).count();
        SessionStats {
            open: self.records.len() - finished,
            kept_finished: finished,
            keep_finished: self.keep,
            pruned: self.pruned,
        }
    }
}

#[derive(Debug)]
pub struct Inner {
    tokens: TokenStore,
    pub session_starts: HashMap<usize, VecDeque<Instant>>,
    pub faults: FaultBook,
    sessions: Registry,
}

/// Shared by every handler.
#[derive(Debug)]
pub struct State {
    pub config: EmulatorConfig,
    inner: Mutex<Inner>,
    /// Cancelled at shutdown: open sessions close with 1001.
    pub cancel: tokio_util::sync::CancellationToken,
    /// The listener's connection cap, for the stats.
    pub connections: Option<Arc<ConnectionLimit>>,
    active: AtomicUsize,
    idle: tokio::sync::Notify,
    /// With `--replay`: the recorded sessions served so far.
    replayed: AtomicUsize,
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

/// A session's record, shared with the registry; dropping it marks the session finished and
/// lets the registry prune.
pub struct Registered {
    state: Arc<State>,
    record: Option<Arc<Mutex<SessionRecord>>>,
}

impl Registered {
    pub fn lock(&self) -> MutexGuard<'_, SessionRecord> {
        self.record
            .as_ref()
            .expect("held until drop")
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        drop(self.record.take());
        self.state.lock().sessions.prune();
    }
}

impl State {
    pub fn new(
        config: EmulatorConfig,
        cancel: tokio_util::sync::CancellationToken,
        connections: Option<Arc<ConnectionLimit>>,
    ) -> Self {
        let mut faults = FaultBook::default();
        // `EmulatorConfig::validate` refused more than the book holds.
        let _ = faults.add(&config.faults);
        let inner = Inner {
            tokens: TokenStore::new(config.max_tokens),
            session_starts: HashMap::new(),
            faults,
            sessions: Registry::new(config.keep_sessions),
        };
        Self {
            config,
            inner: Mutex::new(inner),
            cancel,
            connections,
            active: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
            replayed: AtomicUsize::new(0),
        }
    }

    /// With `--replay`: the index of the recorded session the next connection is served.
    pub fn next_replay(&self) -> usize {
        self.replayed.fetch_add(1, Ordering::AcqRel)
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
    pub fn add_token(&self, token: &str, minted: Minted) {
        self.lock().tokens.add(token, minted, Instant::now());
    }

    pub fn token_stats(&self) -> TokenStats {
        self.lock().tokens.stats()
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
        let redeemed = self
            .lock()
            .tokens
            .redeem(credential, Instant::now())
            .map_err(|refusal| match refusal {
                Refusal::Unknown => AuthFailure::Invalid,
                Refusal::Expired => AuthFailure::Expired,
                Refusal::Used => AuthFailure::Used,
            })?;
        Ok(Grant {
            kind: CredentialKind::TemporaryToken,
            key: redeemed.key,
            max_session: redeemed.max_session,
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

    /// Add a session to the registry; it counts as open until the returned handle is dropped.
    pub fn register(self: &Arc<Self>, record: SessionRecord) -> Registered {
        let shared = Arc::new(Mutex::new(record));
        {
            let mut inner = self.lock();
            inner.sessions.records.push_back(Arc::clone(&shared));
            inner.sessions.prune();
        }
        Registered {
            state: Arc::clone(self),
            record: Some(shared),
        }
    }

    /// Copies of the kept records. The state lock is held only to clone the handles; each
    /// record is locked briefly on its own, and the caller serialises without any lock.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        let handles: Vec<_> = self.lock().sessions.records.iter().cloned().collect();
        handles
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }

    pub fn session_stats(&self) -> SessionStats {
        self.lock().sessions.stats()
    }

    pub fn stats(&self) -> EmulatorStats {
        let inner = self.lock();
        EmulatorStats {
            connections: self.connections.as_ref().map(|c| c.stats()),
            sessions: inner.sessions.stats(),
            tokens: inner.tokens.stats(),
        }
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> SessionRecord {
        SessionRecord::started(id.to_owned(), CredentialKind::ApiKey, 0, 0)
    }

    #[test]
    fn the_registry_keeps_open_sessions_and_the_last_finished_ones() {
        let state = Arc::new(State::new(
            EmulatorConfig {
                keep_sessions: 2,
                ..EmulatorConfig::with_key("k")
            },
            tokio_util::sync::CancellationToken::new(),
            None,
        ));
        let open = state.register(record("open"));
        for i in 0..5 {
            drop(state.register(record(&format!("done-{i}"))));
        }
        let ids: Vec<String> = state.sessions().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["open", "done-3", "done-4"]);
        let counts = state.session_stats();
        assert_eq!(
            (counts.open, counts.kept_finished, counts.pruned),
            (1, 2, 3)
        );
        drop(open);
        let ids: Vec<String> = state.sessions().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["done-3", "done-4"], "{ids:?}");
    }

    #[test]
    fn echoed_parameters_are_bounded() {
        let params = StreamingParams {
            prompt: Some("p".repeat(60_000)),
            keyterms_prompt: vec!["k".repeat(1000); 500],
            ..StreamingParams::default()
        };
        let ignored = IgnoredParams {
            unmodelled: vec!["y".repeat(10_000); 100],
            unknown: vec!["x".repeat(10_000); 100],
        };
        let (out, names, truncated) = bounded_params(&params, &ignored);
        assert!(truncated);
        let prompt = out.prompt.expect("prompt");
        assert_eq!(
            prompt.chars().count(),
            ECHO_VALUE_CHARS + 1,
            "256 chars and …"
        );
        let total: usize = out.keyterms_prompt.iter().map(String::len).sum::<usize>()
            + names.unmodelled.iter().map(String::len).sum::<usize>()
            + names.unknown.iter().map(String::len).sum::<usize>()
            + prompt.len()
            + out.speech_model.len();
        assert!(total <= ECHO_BUDGET_CHARS * 4, "{total} bytes");
        let small = StreamingParams::default();
        let one = IgnoredParams {
            unmodelled: vec!["prompt".to_owned()],
            unknown: vec!["foo".to_owned()],
        };
        let (same, kept, truncated) = bounded_params(&small, &one);
        assert!(!truncated);
        assert_eq!(same, small);
        assert_eq!(kept, one);
    }

    fn fields(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).expect("object")
    }

    #[test]
    fn recorded_updates_are_bounded_and_say_when_cut() {
        let small = fields(r#"{"max_turn_silence":900,"keyterms_prompt":["Ana","Ben"]}"#);
        assert_eq!(bounded_fields(&small), (small.clone(), false));

        // Empty strings and numbers cost too: a long list is cut.
        let many = Value::from(vec![Value::from(""); 100_000]);
        let numbers = Value::from(vec![Value::from(1); 100_000]);
        for list in [many, numbers] {
            let mut big = Map::new();
            big.insert("keyterms_prompt".into(), list);
            let (kept, truncated) = bounded_fields(&big);
            assert!(truncated);
            let kept = kept["keyterms_prompt"].as_array().expect("list").len();
            assert!(kept < UPDATE_BUDGET_CHARS, "{kept}");
        }
        // Deeper values are described by their kind; long text is cut with "…".
        let nested = fields(&format!(
            r#"{{"other":{{"a":[1,2]}},"list":[[1],{{}}],"prompt":"{}"}}"#,
            "p".repeat(500)
        ));
        let (kept, truncated) = bounded_fields(&nested);
        assert!(truncated);
        assert_eq!(kept["other"], "an object");
        assert_eq!(kept["list"], serde_json::json!(["an array", "an object"]));
        assert_eq!(kept["prompt"].as_str().expect("text").chars().count(), 65);
    }

    #[test]
    fn effective_keyterms_are_cut_to_whole_terms_and_counted() {
        use crate::emulator::Profile;
        use crate::emulator::recognizer::RecognizerConfig;
        let params = StreamingParams {
            keyterms_prompt: vec!["k".repeat(50); 100],
            ..StreamingParams::default()
        };
        let settings = RecognizerConfig::from_params(&params, Profile::Current, None).settings();
        let kept = bounded_settings(settings);
        assert_eq!(kept.keyterms_count, 100);
        assert_eq!(kept.keyterms_prompt.len(), KEYTERMS_BUDGET_CHARS / 50);
    }

    #[test]
    fn a_record_keeps_the_last_updates_and_counts_them_all() {
        let mut r = record("s");
        for at_ms in 0..40 {
            r.add_update(UpdateRecord {
                at_ms,
                audio_ms: 0,
                stream_ms: None,
                fields: Map::new(),
                truncated: false,
            });
        }
        assert_eq!(r.updates_received, 40);
        assert_eq!(r.updates.len(), MAX_RECORDED_UPDATES);
        assert_eq!(r.updates.front().map(|u| u.at_ms), Some(24));
    }
}
