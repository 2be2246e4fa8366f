//! The dashboard's model: everything the screen shows, as plain data. Only `update` changes it;
//! `ui::render` reads it with the current time passed in. All times are wall-clock
//! (`SystemTime`), so a test can render any state at a fixed `now`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::action::Keymap;
use super::transcript::TranscriptView;
use crate::audio::{AudioStats, Level};
use crate::config::{Config, Theme};
use crate::events::{Gen, View};
use crate::protocol::CloseClass;
use crate::provider::TokenState;

/// Entries kept in the events pane.
pub const EVENT_LOG_CAPACITY: usize = 200;
/// Latencies kept for the rolling p50/p95.
pub const LATENCY_WINDOW: usize = 200;
/// Words per minute are counted over this much recent time.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How long a footer notice stays.
pub const NOTICE_FOR: Duration = Duration::from_secs(6);

/// What the header says about where things come from and go to. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Info {
    /// The provider kind (`api-key`, `remote`, `file`).
    pub provider: String,
    /// Its URL (without credentials) or path.
    pub source: String,
    /// The streaming endpoint.
    pub endpoint: String,
    /// The region preset, when the endpoint comes from one.
    pub region: Option<String>,
    /// The audio input as the user knows it.
    pub input: String,
    /// `Some(address)` when this is `aai-live demo` against the in-process emulator.
    pub demo: Option<String>,
}

/// How to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiOptions {
    /// Frames per second at most.
    pub fps: u32,
    /// No colours: `ui.theme = "mono"` or `NO_COLOR`.
    pub mono: bool,
    /// ASCII only: `ui.ascii`, or a locale that is not UTF-8.
    pub ascii: bool,
    /// Open with the events pane: `ui.events`.
    pub events: bool,
}

impl UiOptions {
    /// From `[ui]` and the environment (`NO_COLOR`, `LC_ALL`/`LC_CTYPE`/`LANG`).
    pub fn from_config(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Self {
        // https://no-color.org: set and not empty.
        let no_color = env("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            fps: config.ui.fps.clamp(1, 60),
            mono: config.ui.theme == Theme::Mono || no_color,
            ascii: config.ui.ascii || !locale_is_utf8(env),
            events: config.ui.events,
        }
    }
}

/// Whether the character locale is UTF-8: the first of `LC_ALL`, `LC_CTYPE`, `LANG` that is set
/// decides, as the C library does. None set means the "C" locale: ASCII.
pub fn locale_is_utf8(env: &dyn Fn(&str) -> Option<String>) -> bool {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|name| env(name).filter(|v| !v.is_empty()))
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("utf-8") || v.contains("utf8")
        })
}

/// Policy numbers the screen and the update need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub rotation: bool,
    /// `streaming.redact_pii`: the transcript is redacted; and whether partials are withheld.
    pub redacting: bool,
    pub partials_withheld: bool,
    /// KeepAlive period while muted.
    pub keepalive_interval: Duration,
    /// How long quitting waits for the last turns before giving up.
    pub quit_grace: Duration,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            rotation: config.session.rotation,
            redacting: config.streaming.params.redact_pii,
            partials_withheld: config.streaming.params.redact_pii
                && config.streaming.params.include_partial_turns != Some(true),
            keepalive_interval: config.session.keepalive_interval,
            // Terminate's own timeout, plus room for the transcript to be written.
            quit_grace: config.session.terminate_timeout + Duration::from_secs(5),
        }
    }
}

/// One session that began (its lifetime, for the gauge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Life {
    pub run: u32,
    pub generation: Gen,
    pub session_id: String,
    pub began_at: SystemTime,
    pub expires_at: SystemTime,
    /// When the supervisor prepares its successor (its rotation rule); `None` with rotation off.
    pub rotates_at: Option<SystemTime>,
}

/// The last connection that ended unexpectedly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    pub code: Option<u16>,
    pub reason: String,
    pub class: CloseClass,
    pub at: SystemTime,
}

/// The session lifecycle as the screen shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPanel {
    pub view: View,
    /// When `view` was entered.
    pub since: SystemTime,
    /// When the current (or last) run of streaming started and ended.
    pub run_started: Option<SystemTime>,
    pub run_ended: Option<SystemTime>,
    /// Sessions that began in this run, newest last (a few kept).
    pub lives: Vec<Life>,
    /// While in backoff: when the next attempt is made.
    pub retry_at: Option<SystemTime>,
    /// Totals since the dashboard started.
    pub rotations: u32,
    pub reconnects: u32,
    pub audio_lost_ms: u64,
    pub last_close: Option<CloseInfo>,
    /// The generation whose token was obtained last, and its fingerprint.
    pub last_token: Option<(Gen, String)>,
}

impl Default for SessionPanel {
    fn default() -> Self {
        Self {
            view: View::Idle,
            since: SystemTime::UNIX_EPOCH,
            run_started: None,
            run_ended: None,
            lives: Vec::new(),
            retry_at: None,
            rotations: 0,
            reconnects: 0,
            audio_lost_ms: 0,
            last_close: None,
            last_token: None,
        }
    }
}

impl SessionPanel {
    /// The generation audio goes to (the retiring one while rotating).
    pub fn active_generation(&self) -> Option<Gen> {
        match &self.view {
            View::Streaming { generation, .. } | View::Draining { generation } => Some(*generation),
            View::Rotating { old, .. } => Some(*old),
            _ => None,
        }
    }

    /// The life of the active session, if it began.
    pub fn active_life(&self) -> Option<&Life> {
        let generation = self.active_generation()?;
        self.lives.iter().rev().find(|l| l.generation == generation)
    }

    pub fn life(&self, generation: Gen) -> Option<&Life> {
        self.lives.iter().rev().find(|l| l.generation == generation)
    }

    /// Whether streaming is under way or being set up (a stop makes sense).
    pub fn is_active(&self) -> bool {
        matches!(
            self.view,
            View::Minting { .. }
                | View::Connecting { .. }
                | View::Streaming { .. }
                | View::Rotating { .. }
                | View::Backoff { .. }
        )
    }
}

/// A line being typed, and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub purpose: PromptPurpose,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptPurpose {
    /// A name for `speaker` of input `source` (`None`: the single input).
    SpeakerName {
        source: Option<String>,
        speaker: String,
    },
    /// The live settings line ([`super::settings`]).
    Settings,
}

impl Prompt {
    /// Longest line a prompt takes: a name is at most 64 characters; the settings line holds up
    /// to 100 keyterms.
    pub fn max_chars(&self) -> usize {
        match self.purpose {
            PromptPurpose::SpeakerName { .. } => 64,
            PromptPurpose::Settings => 4000,
        }
    }
}

/// Meeting mode: one input's own stream, beside the run's panel.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcePanel {
    pub label: crate::config::Label,
    /// A microphone (mute applies to it).
    pub mic: bool,
    pub session: SessionPanel,
    pub level: Level,
}

impl SourcePanel {
    pub fn new(label: crate::config::Label, mic: bool) -> Self {
        Self {
            label,
            mic,
            session: SessionPanel::default(),
            level: Level::default(),
        }
    }
}

/// The audio side.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AudioPanel {
    pub level: Level,
    pub stats: AudioStats,
    pub muted: bool,
    /// An input is open.
    pub open: bool,
}

/// Rolling latency figures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Latency {
    pub recent: VecDeque<u64>,
    pub p50: Option<u64>,
    pub p95: Option<u64>,
}

impl Latency {
    pub fn push(&mut self, ms: u64) {
        if self.recent.len() == LATENCY_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(ms);
        let values: Vec<u64> = self.recent.iter().copied().collect();
        let (p50, p95) = crate::session::supervisor::percentiles(&values);
        self.p50 = p50;
        self.p95 = p95;
    }
}

/// Words of recent finals, for words per minute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WordRate {
    pub recent: VecDeque<(SystemTime, usize)>,
}

impl WordRate {
    pub fn push(&mut self, at: SystemTime, words: usize) {
        self.recent.push_back((at, words));
        self.prune(at);
    }

    pub fn prune(&mut self, now: SystemTime) {
        while let Some(&(at, _)) = self.recent.front() {
            if now.duration_since(at).unwrap_or_default() > RATE_WINDOW {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    /// Words per minute over the last minute (or since `started`, if later); `None` in the
    /// first seconds, when a rate would mean nothing.
    pub fn per_minute(&self, now: SystemTime, started: Option<SystemTime>) -> Option<u32> {
        let started = started?;
        let span = now
            .duration_since(started)
            .unwrap_or_default()
            .min(RATE_WINDOW);
        if span < Duration::from_secs(10) {
            return None;
        }
        let words: usize = self
            .recent
            .iter()
            .filter(|(at, _)| now.duration_since(*at).unwrap_or_default() <= RATE_WINDOW)
            .map(|(_, w)| w)
            .sum();
        Some((words as f64 * 60.0 / span.as_secs_f64()).round() as u32)
    }
}

pub use crate::strings::Severity;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub at: SystemTime,
    pub level: Severity,
    pub text: String,
}

/// Recent state changes and errors, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventLog {
    entries: VecDeque<LogEntry>,
}

impl EventLog {
    pub fn push(&mut self, at: SystemTime, level: Severity, text: impl Into<String>) {
        if self.entries.len() == EVENT_LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(LogEntry {
            at,
            level,
            text: text.into(),
        });
    }

    pub fn entries(&self) -> &VecDeque<LogEntry> {
        &self.entries
    }
}

/// What a failure panel is about; one panel per kind at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProblemKind {
    Provider,
    Audio,
    Session,
}

/// A failure panel: what happened and what to do. The transcript stays beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub title: String,
    pub detail: String,
    pub hint: String,
}

/// A short message in the footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub until: SystemTime,
    pub level: Severity,
}

/// Where the session supervisor is in its life, from the dashboard's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifecycle {
    /// A supervisor is running (spawned and not yet finished).
    pub running: bool,
    /// Stop was sent to the running supervisor (its state may not say so yet).
    pub stopping: bool,
    /// Start again as soon as the running supervisor has finished.
    pub start_pending: bool,
    /// Quitting: stop, wait for the last turns and the save, then leave (by this deadline).
    pub quitting: Option<SystemTime>,
    /// Finished runs whose transcript is still being written.
    pub saving: u32,
    /// Runs started so far (1-based id of the current one).
    pub run: u32,
    /// When the last KeepAlive was sent while muted.
    pub last_keepalive: Option<SystemTime>,
}

/// Everything on the screen.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardState {
    pub info: Info,
    pub ui: UiOptions,
    pub keymap: Keymap,
    pub limits: Limits,
    pub session: SessionPanel,
    pub token: TokenState,
    pub audio: AudioPanel,
    pub transcript: TranscriptView,
    /// Meeting mode: each input's stream (empty with one unlabelled input). `session` is then
    /// the run as a whole: the most pressing of their states, their totals.
    pub sources: Vec<SourcePanel>,
    pub latency: Latency,
    pub rate: WordRate,
    pub events: EventLog,
    pub problems: Vec<Problem>,
    pub notice: Option<Notice>,
    pub show_help: bool,
    pub show_events: bool,
    /// A line being typed (naming a speaker, live settings); the keymap waits while it is open.
    pub prompt: Option<Prompt>,
    /// The settings the session can be changed in mid-stream, as they are now.
    pub live: super::settings::LiveSettings,
    pub lifecycle: Lifecycle,
    /// Terminal size (columns, rows), for paging.
    pub viewport: (u16, u16),
    /// Files written so far (transcripts, exports), reported after quitting.
    pub saved: Vec<PathBuf>,
    /// The last run's failure, if it failed (the exit status says so).
    pub last_failure: Option<String>,
    /// Set once the dashboard should close.
    pub should_quit: bool,
    /// `--feed`: where it listens and how many consumers follow it.
    pub feed: Option<FeedPanel>,
}

/// The live feed, as the header shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPanel {
    pub address: String,
    pub consumers: usize,
}

impl DashboardState {
    pub fn new(info: Info, ui: UiOptions, keymap: Keymap, limits: Limits) -> Self {
        Self {
            info,
            ui,
            keymap,
            limits,
            session: SessionPanel::default(),
            token: TokenState::None,
            audio: AudioPanel::default(),
            transcript: TranscriptView::default(),
            sources: Vec::new(),
            latency: Latency::default(),
            rate: WordRate::default(),
            events: EventLog::default(),
            problems: Vec::new(),
            notice: None,
            show_help: false,
            show_events: ui.events,
            prompt: None,
            live: super::settings::LiveSettings::default(),
            lifecycle: Lifecycle::default(),
            viewport: (80, 24),
            saved: Vec::new(),
            last_failure: None,
            should_quit: false,
            feed: None,
        }
    }

    /// A state from the configuration (the usual way in).
    pub fn from_config(config: &Config, info: Info, ui: UiOptions) -> Self {
        let mut state = Self::new(
            info,
            ui,
            Keymap::from_config(&config.keys),
            Limits::from_config(config),
        );
        state.sources = config
            .inputs
            .iter()
            .map(|i| SourcePanel::new(i.label.clone(), i.spec.is_mic()))
            .collect();
        state.live = super::settings::LiveSettings::from_params(&crate::session::params(config));
        state
    }

    /// Show `problem`, replacing one of the same kind.
    /// Show `problem`; its detail (often a server's words) is made safe for the terminal here.
    pub fn set_problem(&mut self, mut problem: Problem) {
        problem.detail = crate::untrusted::for_terminal(&problem.detail).into_owned();
        self.problems.retain(|p| p.kind != problem.kind);
        self.problems.push(problem);
        self.problems.sort_by_key(|p| p.kind);
    }

    pub fn clear_problem(&mut self, kind: ProblemKind) {
        self.problems.retain(|p| p.kind != kind);
    }

    pub fn notify(&mut self, now: SystemTime, level: Severity, text: impl Into<String>) {
        self.notice = Some(Notice {
            text: text.into(),
            until: now + NOTICE_FOR,
            level,
        });
    }

    /// Turns per page for PgUp/PgDn: about half the transcript pane.
    pub fn page_turns(&self) -> usize {
        usize::from(self.viewport.1 / 4).max(1)
    }
}
