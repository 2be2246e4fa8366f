//! `aai-live load`: many concurrent real-time sessions against any v3 endpoint (the emulator,
//! or the service through the configured provider), each streaming the same file at real-time
//! pace, and what they measured: sessions begun and failed (by close class), time to `Begin`,
//! the latency of each turn's first partial and of its final, messages per second, and this
//! process's own CPU.
//!
//! Sessions are opened the way `run` opens them (the provider's tokens, the token where
//! `streaming.token_in` puts it, the same WebSocket connector) and their ends are classified by
//! the same close table. New sessions start evenly over `--ramp`, never more than
//! `--max-sessions-per-minute` in any minute, and after a rate-limit close (3009) no new
//! session starts for `session.rate_limit_backoff` (with `run`'s jitter): the account's limit
//! counts new sessions per minute, and a load test must not lock its owner out.
//!
//! Latency is measured from when the audio a message covers was *due* (the stream's clock plus
//! the word's end time, each chunk sent when its audio is over, as a live source releases it):
//! real-time pacing is the contract, so a client that falls behind shows up in the figures
//! instead of hiding in them.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::audio::{self, AudioOptions, Pace};
use crate::config::{Config, InputSpec};
use crate::failure::Failure;
use crate::protocol::messages::{ClientMessage, ServerMessage};
use crate::protocol::params::place_token;
use crate::protocol::{CloseClass, StreamingParams, TokenPlacement};
use crate::provider::{TokenProvider, TokenRequest};
use crate::session::backoff::BackoffPolicy;
use crate::session::connection::{self, ConnEvent, Connector, Outgoing};

/// The most audio read from the input: 10 minutes (about 19 MB at 16 kHz); sessions loop it.
pub const MAX_AUDIO: Duration = Duration::from_secs(600);
/// The window of `--max-sessions-per-minute`.
const MINUTE: Duration = Duration::from_secs(60);
/// Frames queued towards one socket at most.
const QUEUE: usize = 32;
/// How long a session may take from `Terminate` to its close.
const DRAIN: Duration = Duration::from_secs(10);

/// What a load test does.
#[derive(Debug, Clone, Default)]
pub struct LoadPlan {
    pub sessions: usize,
    /// New sessions start evenly over this long (all at once when zero).
    pub ramp: Duration,
    /// Each session streams this long, then sends `Terminate`.
    pub duration: Duration,
    /// New sessions in any minute at most.
    pub max_sessions_per_minute: u32,
    /// Cancelled (Ctrl-C): no new session starts, the open ones send `Terminate` now, and the
    /// figures so far are reported.
    pub stop: tokio_util::sync::CancellationToken,
}

/// Everything a session needs, shared by all of them.
struct Shared {
    provider: Arc<dyn TokenProvider>,
    request: TokenRequest,
    endpoint: url::Url,
    params: StreamingParams,
    token_in: TokenPlacement,
    connector: Arc<dyn Connector>,
    /// The input, encoded, one message per chunk.
    chunks: Vec<Arc<[u8]>>,
    chunk: Duration,
    duration: Duration,
    stop: tokio_util::sync::CancellationToken,
    begin_timeout: Duration,
    rate_limited: BackoffPolicy,
    tally: Mutex<Tally>,
    /// After a rate limit (3009): no new session before `until`, then one alone (the probe),
    /// the others only once it has begun.
    limit: Mutex<Limit>,
    /// Wakes the scheduler when the probe has begun or failed.
    wake: tokio::sync::Notify,
}

/// The account's answer to new sessions, as the scheduler follows it.
#[derive(Debug, Default)]
struct Limit {
    until: Option<Instant>,
    /// A rate limit came: the next session to start is the probe.
    probe_next: bool,
    /// The session probing the account's limit, until it has begun or failed.
    probe: Option<usize>,
}

/// Figures gathered while the test runs.
#[derive(Debug, Default)]
struct Tally {
    started: usize,
    begun: usize,
    failed: BTreeMap<&'static str, usize>,
    open: usize,
    messages: u64,
    begin_ms: Vec<u64>,
    first_partial_ms: Vec<u64>,
    final_ms: Vec<u64>,
}

/// What a load test reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub started: usize,
    pub begun: usize,
    pub failed: usize,
    pub open: usize,
    pub messages: u64,
    pub elapsed: Duration,
}

/// p50, p95 and p99 of a set of milliseconds (nearest rank); `None` without any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
}

impl Percentiles {
    pub fn of(values: &[u64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
        })
    }
}

impl Progress {
    /// The progress line: `load: 12 s, 37/100 started, 35 begun, 0 failed, 35 open, 420 msg/s`.
    pub fn line(&self, sessions: usize) -> String {
        let secs = self.elapsed.as_secs_f64();
        format!(
            "load: {:.0} s, {}/{sessions} started, {} begun, {} failed, {} open, {:.0} msg/s",
            secs,
            self.started,
            self.begun,
            self.failed,
            self.open,
            self.messages as f64 / secs.max(1e-3),
        )
    }
}

/// What a load test found: `--json` prints it as one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub sessions: usize,
    pub sessions_begun: usize,
    pub sessions_failed: usize,
    /// Failed sessions by close class (`rate_limited`, `transient`, ...).
    pub sessions_failed_by_class: BTreeMap<&'static str, usize>,
    pub begin_ms: Option<Percentiles>,
    pub first_partial_ms: Option<Percentiles>,
    pub final_ms: Option<Percentiles>,
    pub messages: u64,
    pub messages_per_s: f64,
    /// This process's CPU time over the test's wall time, in % of one core (`None` where it
    /// cannot be read).
    pub cpu_percent: Option<f64>,
    pub elapsed_s: f64,
    /// Stopped before every session had run its course (Ctrl-C).
    pub stopped: bool,
}

impl Summary {
    /// The summary for people, one figure a line.
    pub fn text(&self) -> String {
        let ms = |p: Option<Percentiles>| {
            p.map_or_else(
                || "none".to_owned(),
                |p| format!("p50 {} ms, p95 {} ms, p99 {} ms", p.p50, p.p95, p.p99),
            )
        };
        let by_class = if self.sessions_failed_by_class.is_empty() {
            String::new()
        } else {
            let classes: Vec<String> = self
                .sessions_failed_by_class
                .iter()
                .map(|(class, n)| format!("{class} {n}"))
                .collect();
            format!(" ({})", classes.join(", "))
        };
        let cpu = self
            .cpu_percent
            .map_or_else(|| "unknown".to_owned(), |c| format!("{c:.1} % of one core"));
        format!(
            "sessions:       {} begun, {} failed{by_class} of {}{}\n\
             time to Begin:  {}\n\
             first partial:  {}\n\
             final:          {}\n\
             messages:       {} ({:.1}/s)\n\
             client CPU:     {cpu}\n\
             elapsed:        {:.1} s\n",
            self.sessions_begun,
            self.sessions_failed,
            self.sessions,
            if self.stopped { " (stopped early)" } else { "" },
            ms(self.begin_ms),
            ms(self.first_partial_ms),
            ms(self.final_ms),
            self.messages,
            self.messages_per_s,
            self.elapsed_s,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the input {path}: {detail}")]
    Input { path: String, detail: String },
    #[error("the input {path} holds no audio")]
    EmptyInput { path: String },
    #[error("--sessions must be at least 1")]
    NoSessions,
    #[error("--max-sessions-per-minute must be at least 1")]
    NoRate,
    #[error("cannot set up the token provider: {0}")]
    Provider(#[from] crate::provider::ProviderError),
}

/// Read `path` (a WAV file) as `config` would stream it: the stream's rate and encoding, in
/// `audio.chunk_ms` chunks, at most [`MAX_AUDIO`].
pub async fn read_input(path: &Path, config: &Config) -> Result<Vec<Arc<[u8]>>, LoadError> {
    let shown = path.display().to_string();
    let fail = |detail: String| LoadError::Input {
        path: shown.clone(),
        detail,
    };
    let options = AudioOptions {
        pace: Pace::Unpaced,
        loop_input: false,
        ..AudioOptions::from_config(config)
    };
    let mut input = audio::open(&InputSpec::File(path.to_owned()), &options)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut chunks_rx = input.take_chunks();
    let most = (MAX_AUDIO.as_millis() / u128::from(config.audio.chunk_ms.max(1))) as usize;
    let mut chunks = Vec::new();
    while let Some(chunk) = chunks_rx.recv().await {
        chunks.push(Arc::from(chunk.encode(config.streaming.params.encoding)));
        if chunks.len() >= most {
            break;
        }
    }
    input.stop();
    if chunks.is_empty() {
        return Err(LoadError::EmptyInput { path: shown });
    }
    Ok(chunks)
}

/// The start of session `index` of `plan` (0-based): evenly over the ramp.
fn planned_start(plan: &LoadPlan, index: usize, t0: Instant) -> Instant {
    if plan.sessions <= 1 {
        return t0;
    }
    t0 + plan.ramp.mul_f64(index as f64 / plan.sessions as f64)
}

/// The earliest time at or after `now` that one more session may start with `starts` the
/// recent starts (oldest first) and at most `per_minute` in any minute.
pub fn next_allowed(starts: &VecDeque<Instant>, now: Instant, per_minute: u32) -> Instant {
    let per_minute = per_minute.max(1) as usize;
    if starts.len() < per_minute {
        return now;
    }
    // The start that must have left the window: the per_minute-th most recent.
    let blocking = starts[starts.len() - per_minute];
    now.max(blocking + MINUTE)
}

/// Run `plan` against the configuration's endpoint and provider with `chunks` as every
/// session's audio; `progress` is called about every `every`.
pub async fn run(
    config: &Config,
    plan: &LoadPlan,
    chunks: Vec<Arc<[u8]>>,
    every: Duration,
    progress: impl FnMut(Progress),
) -> Result<Summary, LoadError> {
    let provider = crate::provider::build(&config.provider)?;
    let connector = connection::websocket();
    drive(config, plan, chunks, (provider, connector), every, progress).await
}

/// [`run`] with the provider and connector given (tests give fakes).
async fn drive(
    config: &Config,
    plan: &LoadPlan,
    chunks: Vec<Arc<[u8]>>,
    (provider, connector): (Arc<dyn TokenProvider>, Arc<dyn Connector>),
    every: Duration,
    mut progress: impl FnMut(Progress),
) -> Result<Summary, LoadError> {
    if plan.sessions == 0 {
        return Err(LoadError::NoSessions);
    }
    if plan.max_sessions_per_minute == 0 {
        return Err(LoadError::NoRate);
    }
    let shared = Arc::new(Shared::new(config, plan, chunks, provider, connector));
    let cpu_before = cpu_time();
    let t0 = Instant::now();
    let mut starts: VecDeque<Instant> = VecDeque::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0;
    loop {
        let now = Instant::now();
        if plan.stop.is_cancelled() {
            next = next.max(plan.sessions);
        }
        // `None` while every session has started, or while the probe has not begun.
        let start_at = (next < plan.sessions)
            .then(|| shared.limit().allowed(now))
            .flatten()
            .map(|after_limit| {
                planned_start(plan, next, t0)
                    .max(next_allowed(&starts, now, plan.max_sessions_per_minute))
                    .max(after_limit)
            });
        if next >= plan.sessions && tasks.is_empty() {
            break;
        }
        tokio::select! {
            () = crate::deadline::sleep_until(start_at) => {
                let now = Instant::now();
                // A 3009 may have come meanwhile: look again before starting.
                let index = next;
                if !shared.limit().start(index, now) {
                    continue;
                }
                starts.push_back(now);
                while starts.front().is_some_and(|s| *s + MINUTE <= now) {
                    starts.pop_front();
                }
                let shared = Arc::clone(&shared);
                tasks.spawn(async move { one_session(&shared, index).await });
                next += 1;
            }
            () = shared.wake.notified() => {}
            () = plan.stop.cancelled(), if next < plan.sessions => {}
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                // A session task that panicked settles nothing: never wait for it.
                if joined.is_err() {
                    shared.limit().probe = None;
                }
            }
            _ = ticker.tick() => progress(snapshot(&shared, t0.elapsed())),
        }
    }
    let elapsed = t0.elapsed();
    progress(snapshot(&shared, elapsed));
    let cpu_percent = match (cpu_before, cpu_time()) {
        (Some(before), Some(after)) if !elapsed.is_zero() => Some(round1(
            after.saturating_sub(before).as_secs_f64() / elapsed.as_secs_f64() * 100.0,
        )),
        _ => None,
    };
    let tally = shared
        .tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(Summary {
        sessions: plan.sessions,
        sessions_begun: tally.begun,
        sessions_failed: tally.failed.values().sum(),
        sessions_failed_by_class: tally.failed.clone(),
        begin_ms: Percentiles::of(&tally.begin_ms),
        first_partial_ms: Percentiles::of(&tally.first_partial_ms),
        final_ms: Percentiles::of(&tally.final_ms),
        messages: tally.messages,
        messages_per_s: round1(tally.messages as f64 / elapsed.as_secs_f64().max(1e-3)),
        cpu_percent,
        elapsed_s: round1(elapsed.as_secs_f64()),
        stopped: plan.stop.is_cancelled(),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn snapshot(shared: &Shared, elapsed: Duration) -> Progress {
    let tally = shared
        .tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Progress {
        started: tally.started,
        begun: tally.begun,
        failed: tally.failed.values().sum(),
        open: tally.open,
        messages: tally.messages,
        elapsed,
    }
}

/// This process's CPU time (user + system) so far.
#[cfg(unix)]
fn cpu_time() -> Option<Duration> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Some(micros(usage.user_time()) + micros(usage.system_time()))
}

#[cfg(not(unix))]
fn cpu_time() -> Option<Duration> {
    None
}

impl Limit {
    /// When a new session may start as far as the account is concerned: `now` or the end of a
    /// pause; `None` while the probe has not begun.
    fn allowed(&self, now: Instant) -> Option<Instant> {
        if self.probe.is_some() {
            return None;
        }
        Some(self.until.map_or(now, |u| u.max(now)))
    }

    /// Start session `index` now if the account allows it (it is the probe after a limit).
    fn start(&mut self, index: usize, now: Instant) -> bool {
        if self.allowed(now).is_none_or(|at| at > now) {
            return false;
        }
        if std::mem::take(&mut self.probe_next) {
            self.probe = Some(index);
        }
        true
    }

    /// Session `index` has begun or failed; `limited` when it failed on the rate limit.
    fn settled(&mut self, index: usize, limited: Option<Instant>) {
        if self.probe == Some(index) {
            self.probe = None;
        }
        if let Some(until) = limited {
            self.until = Some(self.until.map_or(until, |u| u.max(until)));
            self.probe_next = true;
        }
    }
}

impl Shared {
    fn new(
        config: &Config,
        plan: &LoadPlan,
        chunks: Vec<Arc<[u8]>>,
        provider: Arc<dyn TokenProvider>,
        connector: Arc<dyn Connector>,
    ) -> Self {
        Self {
            provider,
            request: TokenRequest {
                expires_in_seconds: config.provider.expires_in_seconds,
                max_session_duration_seconds: Some(config.provider.max_session_duration_seconds),
            },
            endpoint: crate::session::endpoint(config),
            params: crate::session::params(config),
            token_in: config.streaming.token_in,
            connector,
            chunks,
            chunk: Duration::from_millis(u64::from(config.audio.chunk_ms)),
            duration: plan.duration,
            stop: plan.stop.clone(),
            begin_timeout: config.session.begin_timeout,
            rate_limited: BackoffPolicy {
                rate_limited: config.session.rate_limit_backoff,
                ..BackoffPolicy::default()
            },
            tally: Mutex::new(Tally::default()),
            limit: Mutex::new(Limit::default()),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn limit(&self) -> std::sync::MutexGuard<'_, Limit> {
        self.limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Session `index` has begun: the account took it.
    fn begun(&self, index: usize) {
        self.limit().settled(index, None);
        self.wake.notify_one();
    }

    /// Session `index` ended in failure of `class`; a rate limit pauses new sessions, as `run`
    /// backs off after one, and the next one probes the account alone.
    fn failed(&self, index: usize, class: CloseClass) {
        *self.tally().failed.entry(class.name()).or_default() += 1;
        let limited = (class == CloseClass::RateLimited)
            .then(|| Instant::now() + self.rate_limited.rate_limited_delay(rand::random(), None));
        self.limit().settled(index, limited);
        self.wake.notify_one();
    }
}

/// One session: token, connect, `Begin`, `duration` of audio at real-time pace, `Terminate`,
/// its close.
async fn one_session(shared: &Shared, index: usize) {
    shared.tally().started += 1;
    let started = Instant::now();
    let token = match shared.provider.fetch(&shared.request).await {
        Ok(token) => token,
        Err(e) => return shared.failed(index, Failure::token(&e).class),
    };
    let Ok((url, header)) = place_token(&shared.endpoint, &shared.params, token, shared.token_in)
    else {
        return shared.failed(index, CloseClass::Fatal);
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let connection = shared
        .connector
        .open(index as u64 + 1, url, header, QUEUE, events_tx);
    let begin_by = started + shared.begin_timeout;
    loop {
        match tokio::time::timeout_at(begin_by, events.recv()).await {
            Ok(Some((_, ConnEvent::Message(ServerMessage::Begin(_))))) => break,
            Ok(Some((_, ConnEvent::Closed(ended)))) => return shared.failed(index, ended.class()),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                connection.close();
                return shared.failed(index, CloseClass::Transient);
            }
        }
    }
    shared.begun(index);
    {
        let mut tally = shared.tally();
        tally.begun += 1;
        tally.open += 1;
        tally.begin_ms.push(started.elapsed().as_millis() as u64);
    }
    let class = stream(shared, &connection, &mut events).await;
    shared.tally().open -= 1;
    if let Some(class) = class {
        shared.failed(index, class);
    }
    connection.close();
}

/// Stream the audio for `duration`, then `Terminate`, measuring every message; `None` when the
/// session ended normally, else the class of its end.
async fn stream(
    shared: &Shared,
    connection: &connection::Connection,
    events: &mut mpsc::UnboundedReceiver<(u64, ConnEvent)>,
) -> Option<CloseClass> {
    let audio_start = Instant::now();
    // A live chunk can be sent only once its audio is over: the stream's clock starts one chunk
    // before the first is sent, so chunk k covers up to when it is sent.
    let clock = audio_start.checked_sub(shared.chunk).unwrap_or(audio_start);
    let stop_at = audio_start + shared.duration;
    let mut ticker = tokio::time::interval(shared.chunk);
    let mut sent = 0_usize;
    let mut drain_by: Option<Instant> = None;
    let mut partial_turn: Option<u64> = None;
    loop {
        tokio::select! {
            _ = ticker.tick(), if drain_by.is_none() => {
                if Instant::now() >= stop_at || shared.stop.is_cancelled() {
                    connection.try_send(Outgoing::Control(ClientMessage::Terminate));
                    drain_by = Some(Instant::now() + DRAIN);
                    continue;
                }
                let chunk = &shared.chunks[sent % shared.chunks.len()];
                // A full queue (the socket not keeping up) drops the chunk: the session's
                // figures then show it.
                connection.try_send(Outgoing::Audio(chunk.to_vec()));
                sent += 1;
            }
            () = crate::deadline::sleep_until(drain_by) => return Some(CloseClass::Transient),
            event = events.recv() => match event {
                Some((_, ConnEvent::Message(message))) => {
                    let mut tally = shared.tally();
                    tally.messages += 1;
                    let ServerMessage::Turn(turn) = message else {
                        continue;
                    };
                    let Some(last) = turn.words.last() else {
                        continue;
                    };
                    let due = clock + Duration::from_millis(last.end);
                    let latency = Instant::now().saturating_duration_since(due).as_millis() as u64;
                    if turn.end_of_turn {
                        tally.final_ms.push(latency);
                    } else if partial_turn != Some(turn.turn_order) {
                        partial_turn = Some(turn.turn_order);
                        tally.first_partial_ms.push(latency);
                    }
                }
                Some((_, ConnEvent::Alive)) => {}
                Some((_, ConnEvent::Closed(ended))) => {
                    return match (drain_by, ended.class()) {
                        (Some(_), CloseClass::Normal) => None,
                        (_, class) => Some(class),
                    };
                }
                None => return Some(CloseClass::Local),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(Percentiles::of(&[]), None);
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(
            Percentiles::of(&values),
            Some(Percentiles {
                p50: 51,
                p95: 95,
                p99: 99
            })
        );
        assert_eq!(
            Percentiles::of(&[7]),
            Some(Percentiles {
                p50: 7,
                p95: 7,
                p99: 7
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_sessions_in_a_minute_than_allowed() {
        let t0 = Instant::now();
        let mut starts = VecDeque::new();
        // Five allowed: the first five at once, the sixth a minute after the first.
        for _ in 0..5 {
            assert_eq!(next_allowed(&starts, t0, 5), t0);
            starts.push_back(t0);
        }
        assert_eq!(next_allowed(&starts, t0, 5), t0 + MINUTE);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(next_allowed(&starts, Instant::now(), 5), t0 + MINUTE);
        tokio::time::advance(Duration::from_secs(31)).await;
        let now = Instant::now();
        assert_eq!(next_allowed(&starts, now, 5), now);
        // Spread starts: the window slides.
        let spread: VecDeque<Instant> = (0..3).map(|i| t0 + Duration::from_secs(i * 10)).collect();
        assert_eq!(next_allowed(&spread, t0, 2), t0 + Duration::from_secs(70));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_rate_limit_one_session_probes_the_account_alone() {
        let t0 = Instant::now();
        let mut limit = Limit::default();
        assert!(limit.start(0, t0));
        assert!(limit.start(1, t0));
        // Session 1 is refused with 3009: a pause, then one session alone.
        let until = t0 + Duration::from_secs(60);
        limit.settled(1, Some(until));
        assert_eq!(limit.allowed(t0), Some(until));
        assert!(!limit.start(2, t0), "paused");
        assert!(limit.start(2, until), "the probe");
        assert_eq!(limit.allowed(until), None, "nothing else while it probes");
        assert!(!limit.start(3, until));
        // It began: the others may start.
        limit.settled(2, None);
        assert!(limit.start(3, until));
        assert!(limit.start(4, until));
        // The one refused first does not end a later probe.
        limit.settled(0, Some(until + Duration::from_secs(60)));
        assert!(limit.start(5, until + Duration::from_secs(60)));
        limit.settled(4, None);
        assert_eq!(limit.allowed(until), None, "5 probes");
    }

    /// Tokens at once.
    #[derive(Debug)]
    struct Tokens;

    impl TokenProvider for Tokens {
        fn name(&self) -> &'static str {
            "fake"
        }

        fn source(&self) -> String {
            "tests".to_owned()
        }

        fn fetch<'a>(
            &'a self,
            _: &'a TokenRequest,
        ) -> futures_util::future::BoxFuture<
            'a,
            Result<crate::secret::Token, crate::provider::ProviderError>,
        > {
            Box::pin(async { Ok(crate::secret::Token::new("t", "fake")) })
        }
    }

    /// A server that begins at once and ends normally on `Terminate`.
    #[derive(Debug)]
    struct Server;

    impl Connector for Server {
        fn open(
            &self,
            generation: u64,
            _: crate::protocol::WsUrl,
            _: Option<secrecy::SecretString>,
            queue: usize,
            events: connection::EventSender,
        ) -> connection::Connection {
            let (tx, mut rx) = mpsc::channel(queue.max(1));
            let stop = tokio_util::sync::CancellationToken::new();
            let task = tokio::spawn({
                let stop = stop.clone();
                async move {
                    let begin = ServerMessage::Begin(crate::protocol::messages::Begin {
                        id: "s".to_owned(),
                        expires_at: 0,
                        configuration: None,
                    });
                    let _ = events.send((generation, ConnEvent::Message(begin)));
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            out = rx.recv() => match out {
                                Some(Outgoing::Control(ClientMessage::Terminate)) => {
                                    let ended = connection::Ended::close(Some(1000), "", None, true);
                                    let _ = events.send((generation, ConnEvent::Closed(ended)));
                                    return;
                                }
                                Some(_) => {}
                                None => return,
                            },
                        }
                    }
                }
            });
            connection::Connection::new(generation, tx, stop, task)
        }
    }

    /// `plan` run whole against the fakes, progress every second.
    async fn against_fakes(plan: &LoadPlan, progress: impl FnMut(Progress)) -> Summary {
        drive(
            &Config::default(),
            plan,
            vec![Arc::from(vec![0_u8; 1600])],
            (Arc::new(Tokens), Arc::new(Server)),
            Duration::from_secs(1),
            progress,
        )
        .await
        .expect("runs")
    }

    /// The whole scheduler on the paused clock: seven sessions at once, three a minute allowed.
    #[tokio::test(start_paused = true)]
    async fn the_scheduler_never_starts_more_sessions_a_minute_than_allowed() {
        let plan = LoadPlan {
            sessions: 7,
            ramp: Duration::ZERO,
            duration: Duration::from_secs(1),
            max_sessions_per_minute: 3,
            ..LoadPlan::default()
        };
        let mut seen = Vec::new();
        let summary = against_fakes(&plan, |p| seen.push((p.elapsed.as_secs(), p.started))).await;
        assert_eq!((summary.sessions_begun, summary.sessions_failed), (7, 0));
        // 3 at 0 s, 3 at 60 s, the last at 120 s; each streams 1 s.
        assert!((121.0..122.0).contains(&summary.elapsed_s), "{summary:?}");
        let started_by = |secs: u64| {
            seen.iter()
                .filter(|(at, _)| *at <= secs)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0)
        };
        assert_eq!(started_by(59), 3, "{seen:?}");
        assert_eq!(started_by(119), 6, "{seen:?}");
        assert_eq!(started_by(121), 7, "{seen:?}");
    }

    /// Ctrl-C: no new session, the open ones end now, the figures so far are reported.
    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_open_sessions_and_starts_no_more() {
        let plan = LoadPlan {
            sessions: 5,
            duration: Duration::from_secs(3600),
            max_sessions_per_minute: 1,
            ..LoadPlan::default()
        };
        let stop = plan.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.cancel();
        });
        let summary = against_fakes(&plan, |_| {}).await;
        assert!(summary.stopped);
        assert_eq!((summary.sessions_begun, summary.sessions_failed), (1, 0));
        assert!((10.0..10.5).contains(&summary.elapsed_s), "{summary:?}");
        assert!(
            summary.text().contains("of 5 (stopped early)"),
            "{}",
            summary.text()
        );
    }

    #[test]
    fn sessions_start_evenly_over_the_ramp() {
        let plan = LoadPlan {
            sessions: 4,
            ramp: Duration::from_secs(8),
            duration: Duration::from_secs(1),
            max_sessions_per_minute: 100,
            ..LoadPlan::default()
        };
        let t0 = Instant::now();
        let at: Vec<u64> = (0..4)
            .map(|i| planned_start(&plan, i, t0).duration_since(t0).as_secs())
            .collect();
        assert_eq!(at, [0, 2, 4, 6]);
        let one = LoadPlan {
            sessions: 1,
            ..plan
        };
        assert_eq!(planned_start(&one, 0, t0), t0);
    }
}
