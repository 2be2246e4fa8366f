//! The dashboard (`aai-live run` on a terminal, `aai-live demo`): an Elm-like loop.
//!
//! ```text
//!  terminal (crossterm EventStream) ─┐
//!  signals (TERM, HUP, INT) ─────────┤
//!  session events (mpsc, drained) ───┤          ┌──────────────┐   Vec<DashboardCommand>   ┌──────────┐
//!  token state (watch) ──────────────┼─ Msg ──▶ │ state.update │ ───────────────▶ │ execute  │
//!  audio level, stats (watch) ───────┤          └──────────────┘                  └────┬─────┘
//!  background results (JoinSet) ─────┤                 │                             │
//!  frame tick (ui.fps) ──────────────┘                 ▼                             ▼
//!                                       ui::render(&state, now)      supervisor commands (mpsc),
//!                                       when something changed       spawn supervisor, mint now,
//!                                                                    save / export (blocking pool)
//! ```
//!
//! One task owns the terminal and the state; background work talks to it only by message. The
//! audio input outlives sessions: a relay task forwards its chunks to whichever supervisor is
//! running (a supervisor ends when it stops, so starting again spawns a new one), and the level
//! meter keeps working while nothing streams. Every failure becomes state on screen; the
//! dashboard stays open until the user quits.

pub mod action;
pub mod msg;
pub mod settings;
pub mod state;
pub mod transcript;
pub mod update;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::crossterm::event::Event;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::audio::{self, AudioChunk, AudioInput, AudioOptions, AudioStats, Level};
use crate::config::{Config, Source, TranscriptFormat};
use crate::deadline::sleep_until;
use crate::events::SessionEvent;
use crate::failure::Failure;
use crate::provider::{
    self, PreMintOptions, PreMinter, ProviderError, TokenProvider, TokenRequest, TokenState,
};
use crate::session::streams::{StreamSetup, Streams};
use crate::session::{self, SupervisorOptions};
use crate::transcript::Transcript;
use action::Action;
pub use msg::{DashboardCommand, Msg, StartFailure};
use state::{DashboardState, Info, UiOptions};

/// Session events handled per loop turn at most (then the screen gets a chance to draw).
const EVENT_BATCH: usize = 256;

/// Everything the dashboard needs, prepared before the terminal is taken over.
pub struct Setup {
    pub config: Config,
    /// The token provider, or why there is none (shown as a panel, not a crash).
    pub provider: Result<Arc<dyn TokenProvider>, ProviderError>,
    /// Things to show in the events pane at once (e.g. a readable token file).
    pub warnings: Vec<String>,
    pub info: Info,
    pub ui: UiOptions,
    pub supervisor: SupervisorOptions,
    /// The run's inputs: one unlabelled, or several labelled (meeting mode).
    pub sources: Vec<Source>,
    pub audio: AudioOptions,
    /// How the single input is shown (`None`: the input's own name).
    pub input_label: Option<String>,
    /// Start streaming at once.
    pub autostart: bool,
    /// Quit (gracefully) after this long.
    pub duration: Option<Duration>,
    /// Where the run's events go besides the screen: the feed, the captions file.
    pub tap: crate::feed::Tap,
    /// The feed's address, for the header.
    pub feed: Option<String>,
}

impl Setup {
    /// The usual setup for `aai-live run` from a validated configuration and a provider build.
    pub fn from_config(
        config: &Config,
        built: Result<provider::Built, ProviderError>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let supervisor = SupervisorOptions::from_config(config);
        let (provider, warnings) = match built {
            Ok(b) => (Ok(b.provider), b.warnings),
            Err(e) => (Err(e), Vec::new()),
        };
        let (kind, source) = match &provider {
            Ok(p) => (p.name().to_owned(), p.source()),
            Err(e) => (e.provider().to_owned(), "(not available)".to_owned()),
        };
        let region = config
            .streaming
            .url
            .is_none()
            .then(|| config.provider.api_key.region.to_string());
        Self {
            info: Info {
                provider: kind,
                source,
                endpoint: crate::protocol::params::redact_url(&supervisor.endpoint),
                region,
                input: input_names(&config.sources()),
                demo: None,
            },
            ui: UiOptions::from_config(config, env),
            supervisor,
            sources: config.sources(),
            audio: AudioOptions::from_config(config),
            input_label: None,
            autostart: true,
            duration: None,
            tap: crate::feed::Tap::default(),
            feed: None,
            config: config.clone(),
            provider,
            warnings,
        }
    }
}

/// How the dashboard ended.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Transcript files written (journals, exports).
    pub saved: Vec<PathBuf>,
    /// The last run's failure, if it ended in one.
    pub failure: Option<String>,
    /// Audio reported lost over the dashboard's runs, in ms.
    pub audio_lost_ms: u64,
}

impl Report {
    /// The exit status (docs/events.md), as for a headless run: 1 when the last run failed, 3
    /// when audio was reported lost, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.failure.is_some() {
            1
        } else if self.audio_lost_ms > 0 {
            3
        } else {
            0
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot use the terminal: {0}")]
    Terminal(#[from] std::io::Error),
    #[error("cannot draw the dashboard: {0}")]
    Draw(String),
}

/// Run the dashboard on the process's terminal until the user quits. The terminal is restored
/// before this returns, whatever happened.
pub async fn run(setup: Setup) -> Result<Report, AppError> {
    let mut signals = crate::signals::Signals::dashboard()?;
    let mut guard = crate::tui::TerminalGuard::new()?;
    let events = ratatui::crossterm::event::EventStream::new();
    let result = Runtime::new(setup)
        .run(guard.terminal_mut(), events, &mut signals)
        .await;
    drop(guard);
    result
}

/// The dashboard on any backend and event stream (tests drive it with a `TestBackend`).
pub async fn run_with<B, S>(
    setup: Setup,
    terminal: &mut Terminal<B>,
    events: S,
) -> Result<Report, AppError>
where
    B: Backend,
    S: Stream<Item = std::io::Result<Event>> + Unpin,
{
    let mut signals = crate::signals::Signals::dashboard()?;
    Runtime::new(setup)
        .run(terminal, events, &mut signals)
        .await
}

/// The inputs as the header names them: the one input, or `you=mic, them=monitor`.
fn input_names(sources: &[Source]) -> String {
    sources
        .iter()
        .map(|s| match &s.label {
            Some(label) => format!("{label}={}", s.spec),
            None => s.spec.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An open audio input and the relay feeding supervisors from it.
struct Audio {
    stats: watch::Receiver<AudioStats>,
    /// The input's name, for the archive's sidecar.
    name: String,
    /// Attach the next supervisor's audio channel.
    attach: mpsc::UnboundedSender<mpsc::Sender<AudioChunk>>,
    /// Keeps the source running (dropping it stops the source).
    _input: AudioInput,
}

/// The running streams of a run (one per input).
struct Running {
    streams: Streams,
    journal: PathBuf,
}

struct Runtime {
    state: DashboardState,
    config: Config,
    supervisor: SupervisorOptions,
    sources: Vec<Source>,
    audio_options: AudioOptions,
    input_label: Option<String>,
    autostart: bool,
    duration: Option<Duration>,
    provider_error: Option<Failure>,
    warnings: Vec<String>,
    /// One per input: each stream its own token.
    premints: Vec<Arc<PreMinter>>,
    /// Speaker names: `[speakers] names`, and those given on the dashboard (for the next runs
    /// too).
    names: crate::transcript::Names,
    provider: Option<Arc<dyn TokenProvider>>,
    /// The first input's token, for the token line.
    token: Option<watch::Receiver<TokenState>>,
    /// One per input, open together; empty when any could not open.
    audio: Vec<Audio>,
    /// Every input's level, by index (forwarded from their watch channels).
    levels: mpsc::UnboundedReceiver<(usize, Level)>,
    levels_tx: mpsc::UnboundedSender<(usize, Level)>,
    session: Option<Running>,
    background: JoinSet<Msg>,
    queue: VecDeque<Msg>,
    tap: crate::feed::Tap,
    /// The tap failed once (said in the events pane; not again for every event).
    tap_failed: bool,
}

impl Runtime {
    fn new(setup: Setup) -> Self {
        let mut state = DashboardState::from_config(&setup.config, setup.info, setup.ui);
        state.feed = setup.feed.map(|address| state::FeedPanel {
            address,
            consumers: 0,
        });
        let (provider, provider_error) = match setup.provider {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(Failure::token(&e))),
        };
        let (levels_tx, levels) = mpsc::unbounded_channel();
        Self {
            state,
            supervisor: setup.supervisor,
            sources: setup.sources,
            audio_options: setup.audio,
            input_label: setup.input_label,
            autostart: setup.autostart,
            duration: setup.duration,
            provider_error,
            warnings: setup.warnings,
            premints: Vec::new(),
            names: crate::transcript::Names::new(&setup.config.speakers.names),
            provider,
            token: None,
            audio: Vec::new(),
            levels,
            levels_tx,
            session: None,
            background: JoinSet::new(),
            queue: VecDeque::new(),
            tap: setup.tap,
            tap_failed: false,
            config: setup.config,
        }
    }

    async fn run<B, S>(
        mut self,
        terminal: &mut Terminal<B>,
        mut events: S,
        signals: &mut crate::signals::Signals,
    ) -> Result<Report, AppError>
    where
        B: Backend,
        S: Stream<Item = std::io::Result<Event>> + Unpin,
    {
        let size = terminal.size().map_err(|e| AppError::Draw(e.to_string()))?;
        self.post(Msg::Resize(size.width, size.height));
        self.startup().await;
        self.draw(terminal)?;

        let fps = self.state.ui.fps.max(1);
        let mut frame = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
        frame.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let deadline = self.duration.map(|d| tokio::time::Instant::now() + d);
        let mut batch: Vec<(usize, SessionEvent)> = Vec::with_capacity(EVENT_BATCH);
        let mut terminal_open = true;
        let mut dirty = false;
        let mut last_second = 0;

        while !self.state.should_quit {
            let mut draw_now = false;
            let stats_rx = self.audio.first_mut().map(|a| &mut a.stats);
            tokio::select! {
                event = events.next(), if terminal_open => match event {
                    Some(Ok(event)) => {
                        // An open prompt takes the keys (any letter can be typed).
                        let msg = if self.state.prompt.is_some() {
                            msg::PromptKey::from_terminal(&event).map(Msg::Prompt)
                        } else {
                            Msg::from_terminal(&event, &self.state.keymap)
                        };
                        if let Some(msg) = msg {
                            self.post(msg);
                            // Answer the user at once rather than at the next frame.
                            draw_now = true;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("cannot read the terminal: {e}; quitting");
                        terminal_open = false;
                        self.post(Msg::Action(Action::Quit));
                    }
                    None => {
                        terminal_open = false;
                        self.post(Msg::Action(Action::Quit));
                    }
                },
                received = session_events(self.session.as_mut(), &mut batch) => {
                    for (index, event) in batch.drain(..) {
                        self.on_stream_event(index, event);
                    }
                    if received == 0 {
                        self.session_ended().await;
                    }
                }
                token = changed(self.token.as_mut()) => self.post(Msg::Token(token)),
                Some((index, level)) = self.levels.recv() => {
                    if self.state.sources.is_empty() {
                        self.post(Msg::Level(level));
                    } else {
                        self.post(Msg::SourceLevel(index, level));
                    }
                }
                stats = changed(stats_rx) => self.post(Msg::AudioStats(stats)),
                Some(joined) = self.background.join_next(), if !self.background.is_empty() => {
                    match joined {
                        Ok(msg) => self.post(msg),
                        Err(e) => self.post(Msg::Warning(format!("a background task failed: {e}"))),
                    }
                }
                () = signals.recv() => self.post(Msg::Action(Action::Quit)),
                () = sleep_until(deadline) => {
                    self.post(Msg::Action(Action::Quit));
                }
                _ = frame.tick() => {
                    self.post(Msg::Tick);
                    // Countdowns change every second even when nothing else does.
                    let second = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    if dirty || second != last_second {
                        draw_now = true;
                        last_second = second;
                    }
                }
            }
            let changed_state = self.process().await;
            dirty |= changed_state;
            if draw_now {
                self.draw(terminal)?;
                dirty = false;
            }
        }
        self.shutdown();
        Ok(Report {
            saved: std::mem::take(&mut self.state.saved),
            failure: self.state.last_failure.take(),
            audio_lost_ms: self.state.session.audio_lost_ms,
        })
    }

    fn post(&mut self, msg: Msg) {
        self.queue.push_back(msg);
    }

    /// Run queued messages through `update` and carry out the commands (which may queue more).
    /// Returns whether anything was processed.
    async fn process(&mut self) -> bool {
        let mut changed = false;
        while let Some(msg) = self.queue.pop_front() {
            // A tick alone is not worth a frame: the second-boundary check redraws countdowns.
            changed |= !matches!(msg, Msg::Tick);
            let commands = self.state.update(msg, SystemTime::now());
            for command in commands {
                self.execute(command).await;
            }
        }
        changed
    }

    fn draw<B: Backend>(&mut self, terminal: &mut Terminal<B>) -> Result<(), AppError> {
        // A count read when drawn (every second at least), like a meter.
        if let (Some(feed), Some(consumers)) = (&mut self.state.feed, self.tap.consumers()) {
            feed.consumers = consumers;
        }
        let state = &self.state;
        terminal
            .draw(|frame| crate::ui::render(frame, state, SystemTime::now()))
            .map_err(|e| AppError::Draw(e.to_string()))?;
        Ok(())
    }

    /// Before the first frame: provider, pre-minters, audio, then autostart.
    async fn startup(&mut self) {
        for warning in std::mem::take(&mut self.warnings) {
            self.post(Msg::Warning(warning));
        }
        if let Some(provider) = &self.provider {
            let request = TokenRequest::from_config(&self.config.provider);
            // Each input its own token: a token opens one session.
            self.premints = self
                .sources
                .iter()
                .map(|_| {
                    Arc::new(PreMinter::new(
                        Arc::clone(provider),
                        request,
                        PreMintOptions::default(),
                    ))
                })
                .collect();
            self.token = self.premints.first().map(|p| p.state());
        } else if let Some(e) = self.provider_error.clone() {
            self.post(Msg::StartFailed(StartFailure::Provider(e)));
        }
        if let Err(e) = self.open_audio().await {
            self.post(Msg::StartFailed(StartFailure::Audio(e)));
        }
        let ready = !self.premints.is_empty() && !self.audio.is_empty();
        if self.autostart && ready {
            self.post(Msg::Action(Action::ToggleStream));
        }
        self.process().await;
    }

    /// Open every input and start its relay and level forwarding. All or none: an input that
    /// cannot open is an error naming it.
    async fn open_audio(&mut self) -> Result<(), String> {
        self.audio.clear();
        let mut opened = Vec::with_capacity(self.sources.len());
        for (index, source) in self.sources.iter().enumerate() {
            let mut input = audio::open(&source.spec, &self.audio_options)
                .await
                .map_err(|e| match &source.label {
                    Some(label) => format!("{label} ({}): {e}", source.spec),
                    None => e.to_string(),
                })?;
            let chunks = input.take_chunks();
            let (attach, attach_rx) = mpsc::unbounded_channel();
            tokio::spawn(relay(chunks, attach_rx));
            tokio::spawn(forward_levels(
                index,
                input.level.clone(),
                self.levels_tx.clone(),
            ));
            opened.push(Audio {
                stats: input.stats.clone(),
                name: input.name.clone(),
                attach,
                _input: input,
            });
        }
        let name = match (&self.input_label, opened.as_slice()) {
            (Some(label), [_]) => label.clone(),
            _ => self
                .sources
                .iter()
                .zip(&opened)
                .map(|(s, a)| match &s.label {
                    Some(label) => format!("{label}={}", a.name),
                    None => a.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        self.audio = opened;
        self.post(Msg::AudioOpened(name));
        Ok(())
    }

    /// One event of input `index`'s stream: what it means for the run (labels, echoes, the
    /// run's `finished`), as messages.
    fn on_stream_event(&mut self, index: usize, event: SessionEvent) {
        let Some(running) = self.session.as_mut() else {
            return;
        };
        let sourced = running.streams.on_event(index, event);
        for sourced in sourced {
            self.offer(&sourced);
            let msg = if sourced.source.is_some() {
                Msg::Sourced {
                    index: sourced.index,
                    event: sourced.event,
                }
            } else {
                Msg::Session(sourced.event)
            };
            self.post(msg);
        }
    }

    /// Offer one of the run's events to the feed and the captions file, as its NDJSON line
    /// (the headless runner's serialiser).
    fn offer(&mut self, sourced: &session::streams::Sourced) {
        if let Err(e) = self
            .tap
            .offer(sourced, &sourced.to_line_at(SystemTime::now()))
            && !self.tap_failed
        {
            self.tap_failed = true;
            tracing::error!("{e}");
            self.post(Msg::Warning(e.to_string()));
        }
    }

    async fn execute(&mut self, command: DashboardCommand) {
        match command {
            DashboardCommand::Session(c) => {
                // Live settings hold for the next runs too (a stop and a start).
                if let session::SessionCommand::Update(u) = &c {
                    self.supervisor.params = self.supervisor.params.updated(u);
                }
                if let Some(r) = &self.session {
                    match c {
                        // Mute is for microphones (every input when none is one).
                        session::SessionCommand::SetMuted(m) => r.streams.set_muted(m),
                        c => r.streams.send_all(&c),
                    }
                }
            }
            DashboardCommand::StartSession { run, muted } => self.start_session(run, muted).await,
            DashboardCommand::NameSpeaker {
                source,
                speaker,
                name,
            } => {
                self.names.set(source.as_deref(), &speaker, &name);
                if let Some(r) = &self.session {
                    let command = session::SessionCommand::NameSpeaker {
                        speaker,
                        name,
                        all_inputs: source.is_none(),
                    };
                    match source.as_deref().and_then(|s| r.streams.index_of(s)) {
                        Some(index) => r.streams.send_to(index, &command),
                        None => r.streams.send_all(&command),
                    }
                }
            }
            DashboardCommand::MintToken => {
                if self.premints.is_empty() {
                    self.post(Msg::Warning(
                        "no token provider: nothing to mint with".to_owned(),
                    ));
                }
                for premint in &self.premints {
                    premint.refresh_now();
                }
            }
            DashboardCommand::Export => {
                let turns = self.state.transcript.all().to_vec();
                let dir = self.config.transcript.dir_or_default();
                let formats = self.config.transcript.formats.clone();
                self.background.spawn(async move {
                    let written = tokio::task::spawn_blocking(move || {
                        transcript::export_runs(&turns, &dir, &formats, SystemTime::now())
                            .map_err(|e| e.to_string())
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                    Msg::Exported(written)
                });
            }
            DashboardCommand::Quit => {}
        }
    }

    async fn start_session(&mut self, run: u32, muted: bool) {
        // A restart queued behind a stop arrives with the old supervisor's `Finished`, before
        // its event stream is seen closed: join and save that one first.
        if self.session.is_some() {
            self.session_ended().await;
        }
        if self.premints.is_empty() {
            let why = self
                .provider_error
                .clone()
                .unwrap_or_else(|| Failure::internal("no token provider"));
            self.post(Msg::StartFailed(StartFailure::Provider(why)));
            return;
        }
        let input_ended =
            self.audio.is_empty() || self.audio.iter().any(|a| a.stats.borrow().ended.is_some());
        if input_ended && let Err(e) = self.open_audio().await {
            self.post(Msg::StartFailed(StartFailure::Audio(e)));
            return;
        }
        let dir = self.config.transcript.dir_or_default();
        let journal = crate::transcript::journal_path(&dir, SystemTime::now());
        let transcript = match Transcript::with_journal(&journal) {
            Ok(t) => t.named(self.names.clone()),
            Err(e) => {
                self.post(Msg::StartFailed(StartFailure::Transcript(e.to_string())));
                return;
            }
        };
        let mut parts = Vec::with_capacity(self.audio.len());
        for ((audio, source), premint) in self.audio.iter().zip(&self.sources).zip(&self.premints) {
            let (audio_tx, audio_rx) = mpsc::channel(64);
            if audio.attach.send(audio_tx).is_err() {
                self.post(Msg::StartFailed(StartFailure::Audio(
                    "the audio input has stopped".to_owned(),
                )));
                return;
            }
            let archive = crate::archive::for_source(&self.config, &journal, source, &audio.name);
            parts.push(StreamSetup {
                label: source.label.clone(),
                premint: Arc::clone(premint),
                feed: session::AudioFeed::from(audio_rx).archived(archive),
                mic: source.spec.is_mic(),
            });
        }
        let mut options = self.supervisor.clone();
        options.seed = rand::random();
        let streams = session::streams::spawn(&options, transcript, parts);
        self.tap.new_run();
        if muted {
            streams.set_muted(true);
        }
        streams.send_all(&session::SessionCommand::Start);
        tracing::info!(run, journal = %journal.display(), "session supervisors started");
        self.session = Some(Running { streams, journal });
    }

    /// The streams' events closed: join them (the run's `finished` in meeting mode) and save the
    /// transcript in the background.
    async fn session_ended(&mut self) {
        let Some(running) = self.session.take() else {
            return;
        };
        for premint in &self.premints {
            // A token held for nobody only lapses; the next start mints its own.
            premint.cancel();
        }
        let finished = running.streams.finish().await;
        if let Some((event, _)) = finished.run_event() {
            let run = session::streams::Sourced {
                index: 0,
                source: None,
                event,
            };
            self.offer(&run);
            self.post(Msg::Session(run.event));
        }
        if let Some((label, why)) = finished.vanished.first() {
            let who = label
                .as_ref()
                .map_or_else(String::new, |l| format!("{l}: "));
            self.post(Msg::SessionCrashed(format!(
                "{who}the session supervisor stopped: {why}"
            )));
            return;
        }
        let formats: Vec<TranscriptFormat> = self.config.transcript.formats.clone();
        let journal = running.journal;
        let transcript = finished.transcript;
        self.background.spawn(async move {
            let saved = tokio::task::spawn_blocking(move || {
                transcript
                    .write_beside(&journal, &formats)
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            Msg::Saved(saved)
        });
    }

    /// Leaving: stop what still runs (finals are already in the journal on disk).
    fn shutdown(&mut self) {
        if let Some(running) = self.session.take() {
            running.streams.abort();
        }
        self.background.abort_all();
        self.audio.clear();
    }
}

/// Forward an input's level changes, by index, into the runtime's one channel.
async fn forward_levels(
    index: usize,
    mut level: watch::Receiver<Level>,
    to: mpsc::UnboundedSender<(usize, Level)>,
) {
    while level.changed().await.is_ok() {
        let value = *level.borrow_and_update();
        if to.send((index, value)).is_err() {
            return;
        }
    }
}

/// Forward audio chunks to the attached supervisor; between supervisors, drop them (the meter
/// still sees the input). Ends with the input, which closes the attached supervisor's audio so
/// it finishes its backlog and stops.
async fn relay(
    mut chunks: mpsc::Receiver<AudioChunk>,
    mut attach: mpsc::UnboundedReceiver<mpsc::Sender<AudioChunk>>,
) {
    let mut target: Option<mpsc::Sender<AudioChunk>> = None;
    loop {
        tokio::select! {
            next = attach.recv() => match next {
                Some(tx) => target = Some(tx),
                None => return,
            },
            chunk = chunks.recv() => {
                let Some(chunk) = chunk else { return };
                if let Some(tx) = &target
                    && tx.send(chunk).await.is_err()
                {
                    // That supervisor has ended.
                    target = None;
                }
            }
        }
    }
}

/// Drain up to a batch of the streams' events; 0 means they all ended. Pending forever when no
/// run streams.
async fn session_events(
    running: Option<&mut Running>,
    batch: &mut Vec<(usize, SessionEvent)>,
) -> usize {
    match running {
        Some(r) => r.streams.events.recv_many(batch, EVENT_BATCH).await,
        None => std::future::pending().await,
    }
}

/// The next value of a watch channel. Pending forever when there is none or it closed, so
/// `select!` waits on the other branches instead of spinning.
async fn changed<T: Clone>(rx: Option<&mut watch::Receiver<T>>) -> T {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => rx.borrow_and_update().clone(),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::Report;

    /// The dashboard exits as a headless run would (docs/events.md).
    #[test]
    fn exit_codes() {
        let mut report = Report::default();
        assert_eq!(report.exit_code(), 0);
        report.audio_lost_ms = 50;
        assert_eq!(report.exit_code(), 3);
        report.failure = Some("failed".into());
        assert_eq!(report.exit_code(), 1);
    }
}
