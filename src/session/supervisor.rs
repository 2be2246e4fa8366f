//! The supervisor task: carries out the machine's effects. It owns the connections (one per
//! generation), the replay buffer and the audio routing, the timers, the token fetches and the
//! transcript, and turns everything into [`SessionEvent`]s.
//!
//! Audio routing: the stream starts at the first captured sample. Every chunk goes into the
//! replay buffer and is counted in the [`Ledger`]; from `cursor`, chunks go to the routed
//! connection. A session that starts with audio waiting — the first one (the mint, DNS, TLS and
//! upgrade take time), or one after a failure before `Begin` — is fed that backlog from the
//! first unsent sample; after an unplanned loss the cursor moves back to the end of the last
//! finalized word. A backlog is sent at `replay_speed` × real time (the service closes with
//! 3007 on faster audio) until it catches up with the live head. Audio that can no longer be
//! sent is reported lost with its cause, so `captured = sent + lost` holds to the sample.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use secrecy::SecretString;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use url::Url;

use rand::{RngExt, SeedableRng};

use super::account::Account;
use super::connection::{ConnEvent, Connection, Connector, Ended, Outgoing};
use super::ledger::{Ledger, Loss, Totals};
use super::machine::{Closed, Effect, Input, Machine, MachineConfig, Notice, Timer};
use super::replay::ReplayBuffer;
use crate::audio::{self, AudioChunk, AudioStats, InputEnd};
use crate::deadline::sleep_until;
use crate::diagnosis::Diagnosis;
use crate::events::{Cause, Gen, LossCause, SessionEvent, View};
use crate::failure::Failure;
use crate::protocol::expiry::{self, Bounds, Finding};
use crate::protocol::messages::{ClientMessage, ServerMessage, UpdateConfiguration};
use crate::protocol::params::OFFSET_PARAM;
use crate::protocol::{CloseClass, StreamingParams, TokenPlacement, build_ws_url};
use crate::provider::{PreMinter, ProviderError};
use crate::secret::Token;
use crate::transcript::{Change, Transcript};

/// How long the end of an input may take to be sent (a replay backlog at 1.25× real time).
const FINISH_LIMIT: Duration = Duration::from_secs(60);

/// Voiced audio that must go unanswered before a session counts as stalled.
const STALL_MIN_VOICE_MS: u64 = 2000;

/// A server quiet for this long gets a WebSocket ping; if it then stays quiet for
/// `stall_timeout`, the session is stalled (a server that stopped reading answers nothing).
const PING_AFTER: Duration = Duration::from_secs(5);

/// Audio queued ahead of a socket, in milliseconds: more means the socket is not keeping up,
/// and the audio waits in the replay buffer instead.
const QUEUE_MS: u32 = 2000;

/// How long the end of a run waits for connections to finish their closing handshakes.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// −40 dBFS as an RMS relative to full scale: louder chunks count as voice.
const VOICE_RMS: f64 = 327.0 / 32_768.0;

/// The slowest replay a priming is done at: slower would take too long to catch up.
const MIN_PRIMING_SPEED: f64 = 1.05;

/// Silence needed before a hand-over may move the audio (shorter than the service's 400 ms
/// default turn silence, longer than the gaps between words).
const QUIET_AFTER_MS: u64 = 300;

/// The supervisor's rules as `/config.json`'s `session` object gives them to the browser client
/// (which has no defaults of its own): the machine's policy, and the stream's rules that are
/// not machine inputs — the constants above and the configured stall, replay and chunk
/// settings. One home for both clients.
pub fn browser_rules(options: &SupervisorOptions) -> serde_json::Value {
    let ms = |d: Duration| d.as_millis() as u64;
    let mut session = options.machine.to_json();
    let rules = serde_json::json!({
        "stall_timeout_ms": ms(options.stall_timeout),
        "replay_buffer_ms": ms(options.replay_buffer),
        "replay_speed": options.replay_speed,
        "chunk_ms": options.chunk_ms,
        "quiet_after_ms": QUIET_AFTER_MS,
        "voice_rms": VOICE_RMS,
        "queue_ms": QUEUE_MS,
        "stall_min_voice_ms": STALL_MIN_VOICE_MS,
        "finish_limit_ms": ms(FINISH_LIMIT),
    });
    if let (Some(session), serde_json::Value::Object(rules)) = (session.as_object_mut(), rules) {
        session.extend(rules);
    }
    session
}

/// Commands from the UI or the headless runner.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    Start,
    Stop,
    Reconnect,
    ForceEndpoint,
    KeepAlive,
    Update(UpdateConfiguration),
    /// While muted, silence is sent instead of the input: the session stays alive and its
    /// timeline stays continuous (the service bills wall-clock time either way).
    SetMuted(bool),
    /// Drop the pre-minted token and fetch a fresh one now.
    MintNow,
    /// Call the service's `speaker` `name` from now on (in this stream's transcript: its
    /// finals, journal and exports), for this input only or (`all_inputs`) whatever the input.
    NameSpeaker {
        speaker: String,
        name: String,
        all_inputs: bool,
    },
}

/// Everything the supervisor needs besides its collaborators.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    pub endpoint: Url,
    pub params: StreamingParams,
    pub token_in: TokenPlacement,
    pub machine: MachineConfig,
    pub replay_buffer: Duration,
    /// 1.0–1.25.
    pub replay_speed: f64,
    /// Voice sent and no reply for this long, or no answer to a ping for this long: the
    /// session is considered dropped.
    pub stall_timeout: Duration,
    pub chunk_ms: u32,
    /// Tell the emulator where each session starts in the stream (a query parameter the real
    /// service ignores), so a word script stays aligned across sessions.
    pub emulator_hints: bool,
    /// The session length asked for with the token (`max_session_duration_seconds`), when
    /// aai-live asked for it itself (the API-key provider): `Begin.expires_at` is checked against
    /// it for clock skew. `None` (a token server or a token file decided): only plausibility.
    pub session_duration: Option<Duration>,
    /// Seed of the draws the machine's backoff jitter takes.
    pub seed: u64,
    /// Opens the connections (the real WebSocket, or a fake in tests).
    pub connector: Arc<dyn Connector>,
    /// Meeting mode: this stream's seat in the account the run's streams share (one mint
    /// budget, staggered rotations, generations numbered apart). `None`: a stream of its own.
    pub account: Option<AccountSeat>,
    /// With `speaker_labels`: how much already-transcribed audio a new session is fed first,
    /// so its speaker labels can be mapped onto the run's (at most a sixth of the rotation
    /// lead; zero: never).
    pub speaker_priming: Duration,
}

/// A stream's place among the streams of one run.
#[derive(Debug, Clone)]
pub struct AccountSeat {
    pub account: Arc<Account>,
    /// 0-based, below `account.streams()`.
    pub index: usize,
}

/// Per-generation bookkeeping.
#[derive(Debug)]
struct Conn {
    connection: Connection,
    session_id: String,
    /// Stream offset (samples) of the first sample this session received.
    base: Option<u64>,
    /// End (samples, stream offset) of the last finalized word.
    last_final_end: Option<u64>,
    /// Voice was sent at this time and nothing came back since.
    unanswered_since: Option<Instant>,
    /// Voiced audio (ms) sent since the last server message.
    unanswered_voice_ms: u64,
    /// The last frame of any kind from the server (or the connect), for the ping check.
    last_heard: Instant,
    /// A ping went out since `last_heard`.
    pinged: bool,
    /// The emulator was told where this session's audio starts.
    hinted: bool,
    /// Its `begin` event is out (a rotation planned later is announced at once).
    announced: bool,
    cause: Cause,
    /// A rotation successor being primed before its hand-over ([`Supervisor::start_priming`]).
    priming: Option<Priming>,
    /// Stream position (samples) before which an earlier session transcribed the audio: this
    /// session's words there only map its speakers, and are dropped.
    primed_until: Option<u64>,
}

/// A rotation successor fed, at `replay_speed`, audio its predecessor already had, from a few
/// seconds before the predecessor's last final word: the words both sessions label map the new
/// session's speaker labels onto the run's (`transcript::speakers`). Only audio already sent is
/// primed, so the ledger, which counts a sample at its first sending, never counts it twice.
#[derive(Debug)]
struct Priming {
    /// The next sample to send.
    cursor: u64,
    next_send: Instant,
}

/// The audio a run streams, and (when the caller has them) the input's statistics, which say
/// why the chunks stopped coming: a finished input ends the run normally, a failed input — or
/// one whose task died without a word (a panic) — fails it, so a crash never looks like the end
/// of a file.
#[derive(Debug)]
pub struct AudioFeed {
    pub chunks: mpsc::Receiver<AudioChunk>,
    pub stats: Option<watch::Receiver<AudioStats>>,
    /// Where the samples the stream counts as captured are also kept (`--archive`): written
    /// where the ledger counts them, so the file holds exactly the stream.
    pub archive: Option<crate::archive::Archive>,
    /// Why the archive asked for could not be started, said as the stream starts.
    pub archive_warning: Option<String>,
}

impl AudioFeed {
    /// Chunks whose end is explained by `stats.ended`.
    pub fn watched(chunks: mpsc::Receiver<AudioChunk>, stats: watch::Receiver<AudioStats>) -> Self {
        Self {
            chunks,
            stats: Some(stats),
            archive: None,
            archive_warning: None,
        }
    }

    /// Keep the stream's audio in `archive` too. One that could not be started is a warning:
    /// the stream goes on without it.
    #[must_use]
    pub fn archived(
        mut self,
        archive: Result<Option<crate::archive::Archive>, crate::archive::ArchiveError>,
    ) -> Self {
        match archive {
            Ok(archive) => self.archive = archive,
            Err(e) => self.archive_warning = Some(e.warning()),
        }
        self
    }

    /// Why the chunks stopped: `None` for a normal end, else the failure.
    fn failure(&self) -> Option<Failure> {
        let stats = self.stats.as_ref()?;
        match &stats.borrow().ended {
            Some(InputEnd::Finished | InputEnd::Stopped) => None,
            Some(InputEnd::Failed(reason)) => Some(Failure::input(reason.clone())),
            None => Some(Failure::internal(crate::strings::AUDIO_TASK_DIED)),
        }
    }
}

impl From<mpsc::Receiver<AudioChunk>> for AudioFeed {
    /// Chunks alone (the dashboard watches its input itself): their end is a normal end.
    fn from(chunks: mpsc::Receiver<AudioChunk>) -> Self {
        Self {
            chunks,
            stats: None,
            archive: None,
            archive_warning: None,
        }
    }
}

/// Summary of a run.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub failure: Option<Failure>,
    pub rotations: u32,
    pub reconnects: u32,
    /// Tokens that arrived for a connection no longer wanted (stopped, superseded): dropped
    /// unused, never reused.
    pub tokens_unused: u32,
    /// The audio ledger: captured = sent + lost, in samples.
    pub audio: Totals,
    /// The audio archive, finished (`--archive`).
    pub archive: Option<std::path::PathBuf>,
}

impl Outcome {
    /// The exit status of a run that ended like this (docs/events.md): 1 when it failed, 3
    /// when it ended normally but audio was reported lost, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.failure.is_some() {
            1
        } else if self.audio.lost > 0 {
            3
        } else {
            0
        }
    }
}

#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts of one task: input ended, capturing, muted, quiet"
)]
pub struct Supervisor {
    opts: SupervisorOptions,
    machine: Machine,
    /// The machine's jitter draws.
    rng: rand::rngs::SmallRng,
    premint: Arc<PreMinter>,
    events: mpsc::UnboundedSender<SessionEvent>,
    conns: HashMap<Gen, Conn>,
    /// Where closed connections' audio started and their last final word ended (samples), so a
    /// replay can start at the right place after the socket is gone.
    retired: HashMap<Gen, (Option<u64>, Option<u64>)>,
    conn_tx: mpsc::UnboundedSender<(Gen, ConnEvent)>,
    conn_rx: mpsc::UnboundedReceiver<(Gen, ConnEvent)>,
    mints: JoinSet<(Gen, Result<Token, ProviderError>)>,
    tokens: HashMap<Gen, Token>,
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    buffer: ReplayBuffer,
    ledger: Ledger,
    /// Audio is captured from the first chunk until the run is asked to stop (or fails).
    capturing: bool,
    /// The input's own offset of the stream's first sample (see [`Supervisor::hint_ms`]).
    origin: Option<u64>,
    route: Option<Gen>,
    cursor: u64,
    next_replay_send: Instant,
    /// When live audio stopped reaching any session (for gap reporting).
    unrouted_since: Option<Instant>,
    muted: bool,
    transcript: Transcript,
    latencies: Vec<u64>,
    outcome: Outcome,
    input_done: bool,
    /// The input ended: stop once the backlog is sent (bounded by this deadline).
    finish_by: Option<Instant>,
    /// The input failed (or its task died): the run ends `Failed` with this once its backlog
    /// is sent.
    input_failure: Option<Failure>,
    /// The loop panicked (a bug): the run ends `Failed` with this.
    crashed: Option<Failure>,
    /// `Begin.expires_at` findings already reported (once per run is enough).
    reported_skew: bool,
    /// The input's NaN or ±Inf samples were reported (once a run).
    reported_non_finite: bool,
    reported_implausible: bool,
    /// Milliseconds of silence at the end of the audio sent live (for hand-overs).
    silent_ms: u64,
    quiet: bool,
    pending_cause: Cause,
    /// Connections let go of, finishing their closing handshakes (waited for at the end).
    closing: JoinSet<()>,
    /// Each begun session's `Begin` time and granted length (the rotation rule's floor).
    granted: HashMap<Gen, (Instant, Duration)>,
    /// When each session's rotation is planned, and how much earlier than the rule said
    /// (staggered from another stream's), until announced.
    planned: HashMap<Gen, (Instant, Duration)>,
    /// Meeting mode: the other streams' mints.
    peer_mints: Option<tokio::sync::broadcast::Receiver<usize>>,
    /// `--archive`: the captured samples, and the ledger's losses, also go here.
    archive: Option<crate::archive::Archive>,
}

impl Supervisor {
    pub fn new(
        opts: SupervisorOptions,
        premint: Arc<PreMinter>,
        transcript: Transcript,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> Self {
        let (conn_tx, conn_rx) = mpsc::unbounded_channel();
        let samples =
            u64::from(opts.params.sample_rate) * opts.replay_buffer.as_millis() as u64 / 1000;
        let machine = match &opts.account {
            Some(seat) => Machine::new(opts.machine.clone())
                .numbered(seat.index as Gen, seat.account.streams() as Gen),
            None => Machine::new(opts.machine.clone()),
        };
        let peer_mints = opts.account.as_ref().map(|seat| seat.account.subscribe());
        Self {
            machine,
            rng: rand::rngs::SmallRng::seed_from_u64(opts.seed),
            buffer: ReplayBuffer::new(samples),
            ledger: Ledger::default(),
            capturing: true,
            origin: None,
            opts,
            premint,
            events,
            conns: HashMap::new(),
            retired: HashMap::new(),
            conn_tx,
            conn_rx,
            mints: JoinSet::new(),
            tokens: HashMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            route: None,
            cursor: 0,
            next_replay_send: Instant::now(),
            unrouted_since: None,
            muted: false,
            transcript,
            latencies: Vec::new(),
            outcome: Outcome::default(),
            input_done: false,
            finish_by: None,
            input_failure: None,
            crashed: None,
            reported_skew: false,
            reported_non_finite: false,
            reported_implausible: false,
            silent_ms: 0,
            quiet: true,
            pending_cause: Cause::Start,
            closing: JoinSet::new(),
            granted: HashMap::new(),
            planned: HashMap::new(),
            peer_mints,
            archive: None,
        }
    }

    fn emit(&self, event: SessionEvent) {
        let _ = self.events.send(event);
    }

    fn ms(&self, samples: u64) -> u64 {
        samples.saturating_mul(1000) / u64::from(self.opts.params.sample_rate.max(1))
    }

    /// The emulator's offset hint for a stream position: where that sample is in the *input*,
    /// not in this run's stream — a dashboard's input outlives its runs (a restart's stream
    /// starts at 0 while a looping recording is anywhere), and the emulator's script and words
    /// follow the input.
    fn hint_ms(&self, position: u64) -> u64 {
        self.ms(self.origin.unwrap_or(0).saturating_add(position))
    }

    /// Server times (word ends) go through here: saturating, whatever the server says.
    fn samples(&self, ms: u64) -> u64 {
        ms.saturating_mul(u64::from(self.opts.params.sample_rate)) / 1000
    }

    /// Run until stopped or failed. `audio` ends → graceful stop.
    pub async fn run(
        mut self,
        audio: impl Into<AudioFeed>,
        mut commands: mpsc::UnboundedReceiver<SessionCommand>,
    ) -> (Outcome, Transcript) {
        let mut audio = audio.into();
        self.archive = audio.archive.take();
        if let Some(message) = audio.archive_warning.take() {
            self.emit(SessionEvent::Warning {
                message,
                explain: None,
            });
        }
        // A bug that panics in the loop must not take the run's record with it: the ledger and
        // the transcript survive, the run ends `Failed` with the panic as its reason, and the
        // exports are still written.
        let looped = std::panic::AssertUnwindSafe(self.run_loop(&mut audio, &mut commands))
            .catch_unwind()
            .await;
        if let Err(panic) = looped {
            let what = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            let failure = Failure::internal(crate::strings::crashed(&what));
            tracing::error!(reason = %failure.reason, "the session supervisor panicked");
            self.capturing = false;
            for generation in self.conns.keys().copied().collect::<Vec<_>>() {
                self.retire(generation);
            }
            self.crashed = Some(failure.clone());
            self.emit(SessionEvent::State {
                view: View::Failed(failure),
            });
        }
        self.conclude().await
    }

    /// The loop of [`Supervisor::run`].
    async fn run_loop(
        &mut self,
        audio: &mut AudioFeed,
        commands: &mut mpsc::UnboundedReceiver<SessionCommand>,
    ) {
        let mut commands_open = true;
        loop {
            if self.machine.is_done() && self.conns.is_empty() {
                break;
            }
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let replay_due = (self.route.is_some() && self.backlog())
                .then_some(self.next_replay_send)
                .into_iter()
                .chain(self.priming_due())
                .min();
            // Liveness checks run when one can come due, not on a periodic tick: an idle
            // stream wakes the process only for its audio.
            let stall_due = self.next_stall_check();
            tokio::select! {
                chunk = audio.chunks.recv(), if !self.input_done => {
                    if let Some(chunk) = chunk {
                        self.on_chunk(chunk);
                    } else {
                        self.input_done = true;
                        self.input_failure = audio.failure();
                        if let Some(failure) = &self.input_failure {
                            tracing::error!(reason = %failure.reason, "the audio input failed; stopping once the backlog is sent");
                        } else {
                            tracing::info!("the audio input ended; stopping once the backlog is sent");
                        }
                        // Send what is still buffered (a replay in progress) before stopping,
                        // so the end of a file is transcribed too; bounded.
                        self.finish_by = Some(Instant::now() + FINISH_LIMIT);
                    }
                }
                command = commands.recv(), if commands_open => {
                    if let Some(c) = command {
                        self.on_command(c);
                    } else {
                        // Every sender is gone: stop once, and stop polling the closed channel.
                        commands_open = false;
                        self.input(Input::Stop);
                    }
                }
                Some((generation, event)) = self.conn_rx.recv() => self.on_conn(generation, event),
                Some(joined) = self.mints.join_next(), if !self.mints.is_empty() => {
                    if let Ok((generation, result)) = joined {
                        self.on_token(generation, result);
                    }
                }
                peer = next_peer_mint(&mut self.peer_mints) => {
                    let own = self.opts.account.as_ref().map(|seat| seat.index);
                    if peer.is_some_and(|index| Some(index) != own) {
                        self.input(Input::PeerMinted);
                    }
                }
                () = sleep_until(next_timer) => self.fire_timers(),
                () = sleep_until(replay_due) => self.pump(),
                () = sleep_until(stall_due) => self.check_stalls(),
            }
            self.maybe_finish();
        }
    }

    /// The end of a run: what was not sent is reported lost, connections close, `Finished`.
    async fn conclude(mut self) -> (Outcome, Transcript) {
        let failure = self
            .crashed
            .clone()
            .or_else(|| self.machine.failed().cloned());
        // Whatever is still unsent will not be sent now: say so (normally nothing is left).
        self.abandon(if failure.is_some() {
            LossCause::Failed
        } else {
            LossCause::Stopped
        });
        // Let retired connections finish their closing handshakes (bounded).
        let closing = std::mem::take(&mut self.closing);
        let _ = tokio::time::timeout(CLOSE_WAIT, closing.join_all()).await;
        self.outcome.failure.clone_from(&failure);
        // The archive's last samples written and its header and sidecar final (blocking: off
        // the runtime's threads).
        if let Some(archive) = self.archive.take() {
            self.outcome.archive = tokio::task::spawn_blocking(move || archive.finish())
                .await
                .ok();
        }
        if let Some(seat) = &self.opts.account {
            seat.account.forget(seat.index);
        }
        let audio = self.ledger.totals();
        debug_assert!(audio.balanced(), "audio ledger out of balance: {audio:?}");
        self.outcome.audio = audio;
        let (p50, p95) = percentiles(&self.latencies);
        self.emit(SessionEvent::Finished {
            finals: self.transcript.finals().len(),
            rotations: self.outcome.rotations,
            reconnects: self.outcome.reconnects,
            audio_captured_samples: audio.captured,
            audio_sent_samples: audio.sent,
            audio_lost_samples: audio.lost,
            audio_lost_ms: self.ms(audio.lost),
            latency_p50_ms: p50,
            latency_p95_ms: p95,
            explain: failure.as_ref().map(Failure::explain),
            failure: failure.as_ref().map(crate::strings::failure),
            archive: self
                .outcome
                .archive
                .as_ref()
                .map(|path| std::iter::once(("input".to_owned(), absolute(path))).collect()),
        });
        (self.outcome, self.transcript)
    }

    /// After the input ended: finish when every captured sample was sent (or at the deadline).
    /// Until then the run goes on as usual — a backoff, a reconnect, a replay — so audio
    /// captured during an outage at the end still reaches a session. A normal end finishes
    /// from a live session ([`Input::Finish`]: the last session must confirm its end, else what
    /// it had not finalized is replayed into a new one), so the deadline stays armed until the
    /// machine is done. A failed input ends the run `Failed` once its audio is sent.
    fn maybe_finish(&mut self) {
        let Some(deadline) = self.finish_by else {
            return;
        };
        if self.machine.is_done() {
            self.finish_by = None;
            self.stop();
            return;
        }
        if Instant::now() >= deadline {
            self.finish_by = None;
            self.abandon(LossCause::FinishTimeout);
            match self.input_failure.take() {
                Some(failure) => self.fail_input(failure),
                None => self.stop(),
            }
            return;
        }
        let head = self.ledger.head();
        let all_sent =
            self.ledger.settled() >= head && (self.route.is_none() || self.cursor >= head);
        let view = self.machine.view();
        if self.input_failure.is_some() {
            if (all_sent || matches!(view, View::Idle))
                && let Some(failure) = self.input_failure.take()
            {
                self.finish_by = None;
                self.fail_input(failure);
            }
            return;
        }
        match view {
            View::Idle => {
                self.finish_by = None;
                self.stop();
            }
            View::Streaming { .. } if all_sent => {
                self.capturing = false;
                self.input(Input::Finish);
            }
            _ => {}
        }
    }

    /// The input failed: nothing more will be captured; the run ends `Failed` (the live
    /// session still drains, so its last turns arrive).
    fn fail_input(&mut self, failure: Failure) {
        self.capturing = false;
        self.abandon(LossCause::Failed);
        self.input(Input::Fail(failure));
    }

    /// End capturing and stop: what was captured and not sent is reported lost (stopped).
    fn stop(&mut self) {
        self.capturing = false;
        self.abandon(LossCause::Stopped);
        self.input(Input::Stop);
    }

    /// Report every pending sample lost for `cause` (nothing if all was sent).
    fn abandon(&mut self, cause: LossCause) {
        if let Some(loss) = self.ledger.abandon(cause) {
            self.report(loss);
        }
    }

    /// One `audio_lost` event: exactly the samples the ledger says.
    fn report(&self, loss: Loss) {
        let (from_ms, to_ms) = (self.ms(loss.from), self.ms(loss.to));
        if let Some(archive) = &self.archive {
            archive.lost(crate::archive::Lost {
                from_sample: loss.from,
                to_sample: loss.to,
                samples: loss.samples,
                cause: loss.cause,
            });
        }
        tracing::warn!(
            from_ms,
            to_ms,
            samples = loss.samples,
            cause = ?loss.cause,
            "audio that will not be transcribed"
        );
        self.emit(SessionEvent::AudioLost {
            from_ms,
            to_ms,
            ms: self.ms(loss.samples),
            samples: loss.samples,
            from_sample: loss.from,
            to_sample: loss.to,
            cause: loss.cause,
        });
    }

    fn input(&mut self, input: Input) {
        let draw = self.rng.random::<f64>();
        let mut effects = self.machine.handle(Instant::now(), input, draw);
        self.plan_rotations(&mut effects);
        for effect in effects {
            self.apply(effect);
        }
        if self.capturing && self.machine.is_done() {
            // Failed (or stopped on its own): nothing captured from here on will be sent.
            self.capturing = false;
            let cause = if matches!(self.machine.view(), View::Failed { .. }) {
                LossCause::Failed
            } else {
                LossCause::Stopped
            };
            self.abandon(cause);
        }
    }

    fn on_command(&mut self, command: SessionCommand) {
        match command {
            SessionCommand::Start => self.input(Input::Start),
            SessionCommand::Stop => self.stop(),
            SessionCommand::Reconnect => self.input(Input::Reconnect),
            SessionCommand::ForceEndpoint => self.control(ClientMessage::ForceEndpoint),
            SessionCommand::KeepAlive => self.control(ClientMessage::KeepAlive),
            SessionCommand::Update(u) => self.update_settings(u),
            SessionCommand::SetMuted(m) => self.muted = m,
            SessionCommand::MintNow => self.premint.refresh_now(),
            SessionCommand::NameSpeaker {
                speaker,
                name,
                all_inputs,
            } => {
                self.transcript.name_speaker(&speaker, &name, all_inputs);
                self.emit(SessionEvent::SpeakerNamed { speaker, name });
            }
        }
    }

    /// Live settings: sent to every session of the stream (the live one, and a successor
    /// already connecting with the old URL), carried to every later one (its URL parameters),
    /// journaled, and reported as `settings_updated`. Values outside the service's ranges are
    /// refused with a warning, and nothing is sent.
    fn update_settings(&mut self, update: UpdateConfiguration) {
        if let Err(e) = crate::protocol::params::check_update(&update) {
            self.emit(SessionEvent::Warning {
                message: crate::strings::settings_refused(&e),
                explain: None,
            });
            return;
        }
        self.opts.params = self.opts.params.updated(&update);
        for c in self.conns.values() {
            c.connection
                .try_send(Outgoing::Control(ClientMessage::UpdateConfiguration(
                    update.clone(),
                )));
        }
        self.transcript.journal_settings(&update);
        self.emit(SessionEvent::SettingsUpdated(update));
    }

    fn control(&self, message: ClientMessage) {
        if let Some(conn) = self.route.and_then(|g| self.conns.get(&g)) {
            conn.connection.try_send(Outgoing::Control(message));
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Mint { generation } => {
                if let Some(seat) = &self.opts.account {
                    seat.account.minted(seat.index);
                }
                let premint = Arc::clone(&self.premint);
                self.mints
                    .spawn(async move { (generation, premint.take().await) });
            }
            Effect::Connect { generation } => self.connect(generation),
            Effect::Route { to, replay_from } => self.route_to(to, replay_from),
            // A full queue means the socket is stuck: the drain timer then closes it.
            Effect::Terminate { generation } => {
                if let Some(c) = self.conns.get(&generation) {
                    c.connection
                        .try_send(Outgoing::Control(ClientMessage::Terminate));
                }
            }
            Effect::ForceEndpoint { generation } => {
                if let Some(c) = self.conns.get(&generation) {
                    c.connection
                        .try_send(Outgoing::Control(ClientMessage::ForceEndpoint));
                }
            }
            Effect::Drop { generation } => self.retire(generation),
            Effect::Schedule { timer, at } => {
                self.timer_seq += 1;
                self.timers.insert((at, self.timer_seq), timer);
            }
            Effect::PrepareToken { by } => self.premint.prepare_by(by),
            Effect::Changed(view) => {
                tracing::info!(?view, "session state");
                match &view {
                    View::Minting { cause, .. } | View::Connecting { cause, .. } => {
                        self.pending_cause = *cause;
                    }
                    View::Rotating { .. } => self.pending_cause = Cause::Rotation,
                    _ => {}
                }
                self.emit(SessionEvent::State { view });
            }
            Effect::Notice(notice) => {
                tracing::info!(?notice, "session notice");
                if let Some(event) = self.notice_event(notice) {
                    self.emit(event);
                }
            }
        }
    }

    /// The machine's rotation plans, as carried out: staggered from the other streams' in
    /// meeting mode (the token prepared by the same, earlier time), remembered, and announced
    /// (`rotation_planned`) once the session's `begin` is out.
    fn plan_rotations(&mut self, effects: &mut [Effect]) {
        let now = Instant::now();
        for i in 0..effects.len() {
            let Effect::Schedule {
                timer: Timer::Rotate(generation),
                at,
            } = effects[i]
            else {
                continue;
            };
            let floor = self
                .granted
                .get(&generation)
                .map(|(began, granted)| (*began + *granted / 2).max(now));
            // A primed successor starts early enough to catch up (never before half the
            // session, as every plan).
            let early = self.priming_head_start(generation);
            let primed_at = match floor {
                Some(floor) if !early.is_zero() => {
                    at.checked_sub(early).unwrap_or(at).max(floor).min(at)
                }
                _ => at,
            };
            let planned = match (&self.opts.account, floor) {
                (Some(seat), Some(floor)) => {
                    seat.account.plan_rotation(seat.index, primed_at, floor)
                }
                _ => primed_at,
            };
            if planned != at {
                for effect in effects.iter_mut() {
                    match effect {
                        Effect::Schedule {
                            timer: Timer::Rotate(g),
                            at: t,
                        } if *g == generation => {
                            *t = planned;
                        }
                        Effect::PrepareToken { by } if *by == at => *by = planned,
                        _ => {}
                    }
                }
            }
            self.planned.insert(
                generation,
                (planned, primed_at.saturating_duration_since(planned)),
            );
            if self.conns.get(&generation).is_some_and(|c| c.announced) {
                self.announce_rotation(generation);
            }
        }
    }

    /// The `rotation_planned` event of `generation`, once.
    fn announce_rotation(&mut self, generation: Gen) {
        if let Some((at, earlier)) = self.planned.remove(&generation) {
            self.emit(SessionEvent::RotationPlanned {
                generation,
                rotates_in_ms: at.saturating_duration_since(Instant::now()).as_millis() as u64,
                staggered_ms: earlier.as_millis() as u64,
            });
        }
    }

    /// The event a machine notice becomes (with what only the supervisor knows), counting
    /// rotations and reconnects.
    fn notice_event(&mut self, notice: Notice) -> Option<SessionEvent> {
        Some(match notice {
            Notice::Rotated { from, to, forced } => {
                self.outcome.rotations += 1;
                let (base, primed_until) = self
                    .conns
                    .get(&to)
                    .map_or((0, None), |c| (c.base.unwrap_or(0), c.primed_until));
                SessionEvent::Rotation {
                    from,
                    to,
                    forced,
                    gap_ms: 0,
                    stream_offset_ms: self.ms(base),
                    primed_ms: primed_until.map_or(0, |u| self.ms(u.saturating_sub(base))),
                }
            }
            Notice::Lost {
                generation,
                failure,
            } => {
                self.outcome.reconnects += 1;
                SessionEvent::Lost {
                    generation,
                    class: failure.class,
                    code: failure.code,
                    what_now: failure.class.advice(),
                    explain: failure.explain(),
                    reason: failure.reason,
                }
            }
            Notice::DrainTimedOut { generation } => SessionEvent::DrainTimedOut { generation },
            Notice::RetryingToken { .. } => return None,
            Notice::MintBudget {
                mints,
                window,
                wait,
            } => {
                let message = crate::strings::mint_budget(
                    mints,
                    window,
                    wait,
                    self.opts
                        .account
                        .as_ref()
                        .map(|seat| seat.account.streams()),
                );
                tracing::warn!("{message}");
                SessionEvent::Warning {
                    message,
                    explain: Some(Diagnosis::MintBudget.section()),
                }
            }
        })
    }

    fn connect(&mut self, generation: Gen) {
        let Some(token) = self.tokens.remove(&generation) else {
            tracing::error!(generation, "no token for the connection");
            return;
        };
        let mut params = self.opts.params.clone();
        if self.opts.emulator_hints {
            // Where this session's audio will most likely start: the first unsent sample (a
            // replay start, if it differs, follows as an UpdateConfiguration before any audio).
            params.extra.insert(
                OFFSET_PARAM.into(),
                self.hint_ms(self.ledger.settled()).to_string(),
            );
        }
        let (url, header): (_, Option<SecretString>) = match self.opts.token_in {
            TokenPlacement::Query => (
                build_ws_url(&self.opts.endpoint, &params, Some(&token)),
                None,
            ),
            TokenPlacement::Header => (
                build_ws_url(&self.opts.endpoint, &params, None),
                Some(token.into_secret()),
            ),
        };
        match url {
            Ok(url) => {
                let queue = (QUEUE_MS / self.opts.chunk_ms.max(1)).max(4) as usize;
                let connection =
                    self.opts
                        .connector
                        .open(generation, url, header, queue, self.conn_tx.clone());
                self.conns.insert(
                    generation,
                    Conn {
                        connection,
                        session_id: String::new(),
                        base: None,
                        last_final_end: None,
                        unanswered_since: None,
                        unanswered_voice_ms: 0,
                        last_heard: Instant::now(),
                        pinged: false,
                        hinted: false,
                        announced: false,
                        cause: self.pending_cause,
                        priming: None,
                        primed_until: None,
                    },
                );
            }
            Err(e) => self.input(Input::Closed {
                generation,
                closed: Closed {
                    failure: Failure::connect(
                        CloseClass::ClientBug,
                        e.to_string(),
                        Diagnosis::ConfigInvalid,
                        None,
                        None,
                    ),
                    after_begin: false,
                },
            }),
        }
    }

    fn route_to(&mut self, to: Option<Gen>, replay_from: Option<Gen>) {
        let now = Instant::now();
        let Some(to) = to else {
            if self.route.take().is_some() {
                self.unrouted_since = Some(now);
            }
            return;
        };
        let head = self.ledger.head();
        let settled = self.ledger.settled();
        // A hand-over continues exactly where the previous session stopped (the cursor: the
        // live head, or where a backlog being sent has got to). Any other session starts at
        // the first unsent sample: the first session of a run gets everything captured while
        // it was being minted and connected, and nothing is skipped after failures before
        // `Begin` either.
        let handing_over = self.route.is_some();
        let mut start = if handing_over { self.cursor } else { settled };
        // A primed successor goes on from where its priming got to (its audio stays one
        // stream); everything before the hand-over was its predecessor's to transcribe.
        let priming = self.conns.get_mut(&to).and_then(|c| c.priming.take());
        let mut primed_until = priming.as_ref().map(|_| self.cursor);
        if let Some(from) = replay_from {
            // Resume after the last finalized word of the lost session (what was not final is
            // transcribed again), else from that session's own start. A session that never
            // received audio leaves the start at the first unsent sample.
            let wanted = self.replay_start(from).unwrap_or(settled).min(settled);
            let oldest = self.buffer.oldest().unwrap_or(head);
            if wanted < oldest {
                // Sent to the lost session but gone from the buffer before it could be sent
                // again: counted as sent, but its words may be missing. Say so.
                let message = crate::strings::replay_outgrown(self.ms(oldest) - self.ms(wanted));
                tracing::warn!("{message}");
                self.emit(SessionEvent::Warning {
                    message,
                    explain: None,
                });
            }
            start = self.buffer.chunk_start(wanted.max(oldest)).unwrap_or(head);
            // With speakers, the replay reaches back into words already final, for the new
            // session's labels to be mapped by (those words are not added again).
            if let Some(window) = self.priming_window(from)
                && self.last_final_end(from).is_some()
                && priming.is_none()
            {
                primed_until = Some(start);
                start = self
                    .buffer
                    .chunk_start(start.saturating_sub(window).max(oldest))
                    .unwrap_or(start);
            }
            if priming.is_some() {
                primed_until = Some(wanted);
            }
            if let Some(p) = &priming {
                start = p.cursor;
            }
            let gap_ms = self
                .unrouted_since
                .map_or(0, |t| now.duration_since(t).as_millis() as u64);
            self.emit(SessionEvent::Reconnected {
                generation: to,
                replay_from_ms: self.ms(start),
                replay_ms: self.ms(head.saturating_sub(start)),
                gap_ms,
                primed_ms: primed_until.map_or(0, |until| self.ms(until.saturating_sub(start))),
            });
        } else if let Some(p) = &priming {
            start = p.cursor;
        }
        self.unrouted_since = None;
        self.route = Some(to);
        self.cursor = start;
        self.next_replay_send = now;
        if let Some(c) = self.conns.get_mut(&to) {
            if priming.is_none() {
                c.base = Some(start);
            }
            c.primed_until = primed_until;
            // What an earlier session transcribed is done: a replay after losing this one
            // starts after it.
            if let Some(until) = primed_until {
                c.last_final_end = Some(c.last_final_end.map_or(until, |e| e.max(until)));
            }
        }
        self.pump();
    }

    /// How much already-transcribed audio primes a session after `predecessor`: the
    /// configured amount, at most a sixth of the rotation lead its length allowed (a primed
    /// successor catches up at `replay_speed` well inside the lead); `None` without speakers.
    fn priming_window(&self, predecessor: Gen) -> Option<u64> {
        // A priming is caught up by replaying faster than real time: at 1.0 it never would.
        if !self.opts.params.speaker_labels
            || self.opts.speaker_priming.is_zero()
            || self.opts.replay_speed < MIN_PRIMING_SPEED
        {
            return None;
        }
        let lead = self
            .granted
            .get(&predecessor)
            .map_or(self.opts.machine.rotation_lead, |(_, granted)| {
                self.opts.machine.lead(*granted)
            });
        let window = self.opts.speaker_priming.min(lead / 6);
        Some(self.samples(window.as_millis() as u64)).filter(|w| *w > 0)
    }

    /// How much earlier than the machine plans it a rotation starts, so that the successor's
    /// priming (its window, and the audio since the last final, guessed at 2 s) is caught up
    /// at `replay_speed` by the planned time.
    fn priming_head_start(&self, generation: Gen) -> Duration {
        self.priming_window(generation)
            .map_or(Duration::ZERO, |window| {
                let lag = Duration::from_millis(self.ms(window)) + Duration::from_secs(2);
                lag.div_f64(self.opts.replay_speed.clamp(MIN_PRIMING_SPEED, 1.25) - 1.0)
            })
    }

    /// The end of the last final word of `generation` (live or retired).
    fn last_final_end(&self, generation: Gen) -> Option<u64> {
        self.conns
            .get(&generation)
            .map(|c| c.last_final_end)
            .or_else(|| self.retired.get(&generation).map(|r| r.1))
            .flatten()
    }

    /// A rotation successor just began: with speakers, feed it the audio from a window before
    /// its predecessor's last final word while the predecessor still takes the live audio.
    fn start_priming(&mut self, generation: Gen) {
        let Some(predecessor) = self.route.filter(|g| *g != generation) else {
            return;
        };
        let (Some(window), Some(done)) = (
            self.priming_window(predecessor),
            self.last_final_end(predecessor),
        ) else {
            return;
        };
        let oldest = self.buffer.oldest().unwrap_or(done);
        let Some(start) = self
            .buffer
            .chunk_start(done.saturating_sub(window).max(oldest))
            .filter(|s| *s < self.cursor)
        else {
            return;
        };
        let Some(c) = self
            .conns
            .get_mut(&generation)
            .filter(|c| c.cause == Cause::Rotation && c.base.is_none())
        else {
            return;
        };
        c.base = Some(start);
        c.priming = Some(Priming {
            cursor: start,
            next_send: Instant::now(),
        });
        self.update_quiet();
        tracing::info!(
            generation,
            from_ms = self.ms(start),
            "priming the successor with audio already transcribed"
        );
    }

    /// Send the primed successors what is due: audio their predecessor already has, at
    /// `replay_speed`, never ahead of the predecessor.
    fn pump_priming(&mut self) {
        let now = Instant::now();
        let chunk_time = Duration::from_millis(u64::from(self.opts.chunk_ms));
        let speed = self.opts.replay_speed.clamp(1.0, 1.25);
        let primed: Vec<Gen> = self
            .conns
            .iter()
            .filter(|(_, c)| c.priming.is_some())
            .map(|(g, _)| *g)
            .collect();
        for generation in primed {
            while let Some(c) = self.conns.get(&generation) {
                let Some(p) = &c.priming else {
                    break;
                };
                let Some(chunk) = self.buffer.at_or_after(p.cursor) else {
                    break;
                };
                if p.next_send > now || chunk.end() > self.cursor || !c.connection.has_room() {
                    break;
                }
                // The buffer never drops what a priming still needs (it started inside it and
                // runs faster than the audio comes), so its audio stays one stream.
                debug_assert_eq!(chunk.offset, p.cursor, "priming skipped audio");
                let end = chunk.end();
                let bytes = audio::encode(&chunk.samples, self.opts.params.encoding);
                self.send_hint(generation);
                let Some(c) = self.conns.get_mut(&generation) else {
                    break;
                };
                if !c.connection.try_send(Outgoing::Audio(bytes)) {
                    break;
                }
                if let Some(p) = &mut c.priming {
                    p.cursor = end;
                    p.next_send = p.next_send.max(now - chunk_time) + chunk_time.div_f64(speed);
                }
            }
        }
    }

    /// When the next priming send is due.
    fn priming_due(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| c.priming.as_ref())
            .filter(|p| {
                self.buffer
                    .at_or_after(p.cursor)
                    .is_some_and(|c| c.end() <= self.cursor)
            })
            .map(|p| p.next_send)
            .min()
    }

    /// Before the first audio a session gets: tell the emulator where it starts (its script
    /// and words follow the input; only ever sent to the emulator). Sent with the audio rather
    /// than at the hand-over, so that the input's own position is known even for a session
    /// that began before the first chunk was captured.
    fn send_hint(&mut self, generation: Gen) {
        let Some(base) = self.conns.get(&generation).and_then(|c| c.base) else {
            return;
        };
        let offset_ms = self.hint_ms(base);
        let Some(c) = self.conns.get_mut(&generation) else {
            return;
        };
        if !self.opts.emulator_hints || c.hinted {
            return;
        }
        let mut update = UpdateConfiguration::default();
        update
            .other
            .insert(OFFSET_PARAM.into(), serde_json::Value::from(offset_ms));
        c.hinted = c
            .connection
            .try_send(Outgoing::Control(ClientMessage::UpdateConfiguration(
                update,
            )));
    }

    /// Let a connection go (it closes politely, bounded) and remember what a replay needs.
    fn retire(&mut self, generation: Gen) {
        if let Some(c) = self.conns.remove(&generation) {
            self.retired.insert(generation, (c.base, c.last_final_end));
            if let Some(task) = c.connection.close() {
                self.closing.spawn(async move {
                    let _ = task.await;
                });
            }
        }
    }

    /// Where a replay after losing `generation` starts: the end of its last final word, else
    /// the start of its audio.
    fn replay_start(&self, generation: Gen) -> Option<u64> {
        let (base, last_final) = self
            .conns
            .get(&generation)
            .map(|c| (c.base, c.last_final_end))
            .or_else(|| self.retired.get(&generation).copied())?;
        last_final.or(base)
    }

    fn backlog(&self) -> bool {
        // More than the newest chunk is waiting: we are replaying.
        self.buffer
            .at_or_after(self.cursor)
            .is_some_and(|c| c.end() < self.buffer.head().unwrap_or(0))
    }

    /// A chunk from the input: on the timeline (the stream starts with the first one), into
    /// the replay buffer and the ledger, then sent if a session takes audio.
    fn on_chunk(&mut self, mut chunk: AudioChunk) {
        if !self.capturing {
            // Asked to stop (or failed): audio from now on is not part of the run.
            return;
        }
        if let Some(loss) = self.ledger.overrun(chunk.dropped_before) {
            self.report(loss);
        }
        // Sent as silence, so the ledger is not concerned; but the user should know (the log
        // alone is not read).
        if chunk.non_finite > 0 && !std::mem::replace(&mut self.reported_non_finite, true) {
            self.emit(SessionEvent::Warning {
                message: crate::strings::NON_FINITE_SAMPLES.to_owned(),
                explain: None,
            });
        }
        if self.muted {
            chunk.samples.fill(0);
        }
        // Positions are the ledger's: the run's own timeline, whatever the input's offsets
        // (the dashboard's input outlives runs); the input's are kept for the emulator's hint.
        self.origin.get_or_insert(chunk.offset);
        let offset = self.ledger.head();
        self.ledger.captured(chunk.samples.len() as u64);
        if let Some(warning) = self
            .archive
            .as_mut()
            .and_then(|a| a.chunk(offset, &chunk.samples))
        {
            self.emit(SessionEvent::Warning {
                message: warning,
                explain: None,
            });
        }
        if let Some(evicted_to) = self.buffer.push(offset, chunk.samples)
            && let Some(loss) = self.ledger.evicted(evicted_to)
        {
            self.report(loss);
        }
        self.pump();
    }

    /// Send what is due: to the routed session, then to a successor being primed.
    fn pump(&mut self) {
        self.pump_route();
        self.pump_priming();
        self.update_quiet();
    }

    /// Send the routed session what is due: the live chunk at once, a backlog at
    /// `replay_speed`.
    fn pump_route(&mut self) {
        let Some(generation) = self.route else {
            return;
        };
        let now = Instant::now();
        let chunk_time = Duration::from_millis(u64::from(self.opts.chunk_ms));
        loop {
            let Some(is_live) = self
                .buffer
                .at_or_after(self.cursor)
                .map(|c| Some(c.end()) == self.buffer.head())
            else {
                return;
            };
            if !is_live && self.quiet {
                // While a backlog is replayed the audio being sent is not "now": never hand
                // over in the middle of it on the strength of an old silence.
                self.quiet = false;
                self.silent_ms = 0;
                self.input(Input::Quiet(false));
            }
            let Some(chunk) = self.buffer.at_or_after(self.cursor) else {
                return;
            };
            if !is_live {
                if now < self.next_replay_send {
                    return;
                }
                self.next_replay_send = self.next_replay_send.max(now - chunk_time)
                    + chunk_time.div_f64(self.opts.replay_speed.clamp(1.0, 1.25));
            }
            let (offset, end) = (chunk.offset, chunk.end());
            let Some(conn) = self.conns.get(&generation) else {
                return;
            };
            if !conn.connection.has_room() {
                // The socket is not keeping up (a server that stopped reading): keep the audio
                // here and try again later; the liveness check decides when to give up.
                self.next_replay_send = now + chunk_time;
                return;
            }
            let voiced = level_is_voice(&chunk.samples);
            let bytes = audio::encode(&chunk.samples, self.opts.params.encoding);
            self.send_hint(generation);
            let Some(conn) = self.conns.get_mut(&generation) else {
                return;
            };
            if !conn.connection.try_send(Outgoing::Audio(bytes)) {
                return;
            }
            if voiced {
                conn.unanswered_since.get_or_insert(now);
                conn.unanswered_voice_ms += u64::from(self.opts.chunk_ms);
            }
            self.buffer.mark_sent(offset, now);
            if let Some(loss) = self.ledger.sent(offset, end) {
                self.report(loss);
            }
            self.cursor = end;
            if is_live {
                self.track_quiet(voiced, self.ms(end - offset));
                return;
            }
        }
    }

    /// Count the live audio's silence.
    fn track_quiet(&mut self, voiced: bool, chunk_ms: u64) {
        self.silent_ms = if voiced { 0 } else { self.silent_ms + chunk_ms };
    }

    /// Tell the machine when the live audio turns quiet (300 ms of silence) or voiced again. A
    /// successor still catching up with its priming is not ready to take over: the hand-over
    /// waits for it as it waits for a word to end (or is forced at its deadline).
    fn update_quiet(&mut self) {
        let priming_behind = self
            .conns
            .values()
            .any(|c| c.priming.as_ref().is_some_and(|p| p.cursor < self.cursor));
        let quiet = self.silent_ms >= QUIET_AFTER_MS && !priming_behind;
        if quiet != self.quiet {
            self.quiet = quiet;
            self.input(Input::Quiet(quiet));
        }
    }

    fn on_token(&mut self, generation: Gen, result: Result<Token, ProviderError>) {
        match result {
            Ok(token) => {
                let redeem_in_ms = token.redeem_by.and_then(|t| {
                    t.duration_since(SystemTime::now())
                        .ok()
                        .map(|d| d.as_millis() as u64)
                });
                self.emit(SessionEvent::Token {
                    generation,
                    fingerprint: token.fingerprint(),
                    redeem_in_ms,
                });
                self.tokens.insert(generation, token);
                self.input(Input::TokenMinted { generation });
                // Connecting consumed it; one still here was minted for a connection that is
                // no longer wanted (stopped, or superseded): drop it, never reuse it.
                if self.tokens.remove(&generation).is_some() {
                    self.outcome.tokens_unused += 1;
                    tracing::debug!(generation, "dropping a token nobody waits for");
                }
            }
            Err(e) => {
                let failure = Failure::token(&e);
                self.emit(SessionEvent::TokenFailed {
                    generation,
                    class: failure.class,
                    message: crate::untrusted::for_json(&e.to_string()).into_owned(),
                    explain: failure.explain(),
                });
                self.input(Input::TokenFailed {
                    generation,
                    failure,
                });
            }
        }
    }

    fn on_conn(&mut self, generation: Gen, event: ConnEvent) {
        match event {
            ConnEvent::Message(message) => {
                if let Some(c) = self.conns.get_mut(&generation) {
                    c.unanswered_since = None;
                    c.unanswered_voice_ms = 0;
                    c.last_heard = Instant::now();
                    c.pinged = false;
                }
                self.on_message(generation, message);
            }
            ConnEvent::Alive => {
                if let Some(c) = self.conns.get_mut(&generation) {
                    c.last_heard = Instant::now();
                    c.pinged = false;
                }
            }
            ConnEvent::Closed(ended) => {
                self.retire(generation);
                self.input(Input::Closed {
                    generation,
                    closed: closed_of(&ended),
                });
            }
        }
    }

    fn on_message(&mut self, generation: Gen, message: ServerMessage) {
        match message {
            ServerMessage::Begin(begin) => {
                // What the service granted (the machine plans a little early: `expires_at` is
                // whole seconds).
                let granted = self.plan_session(begin.expires_at);
                let cause = self
                    .conns
                    .get(&generation)
                    .map_or(self.pending_cause, |c| c.cause);
                if let Some(c) = self.conns.get_mut(&generation) {
                    c.session_id.clone_from(&begin.id);
                }
                tracing::info!(generation, session = %begin.id, expires_at = begin.expires_at, "session began");
                self.granted.insert(generation, (Instant::now(), granted));
                self.start_priming(generation);
                self.input(Input::Begin {
                    generation,
                    session_id: begin.id.clone(),
                    granted,
                });
                let base = self.conns.get(&generation).and_then(|c| c.base);
                self.emit(SessionEvent::Begin {
                    generation,
                    session_id: begin.id,
                    expires_at: begin.expires_at,
                    stream_offset_ms: base.map_or(0, |b| self.ms(b)),
                    // Audio captured before this session could take it, sent first (paced).
                    backlog_ms: base.map_or(0, |b| self.ms(self.ledger.head().saturating_sub(b))),
                    cause,
                });
                if let Some(c) = self.conns.get_mut(&generation) {
                    c.announced = true;
                }
                self.announce_rotation(generation);
            }
            ServerMessage::Turn(turn) => self.on_turn(generation, turn),
            ServerMessage::SpeakerRevision(revision) => self.on_revision(generation, &revision),
            ServerMessage::Termination(t) => {
                self.emit(SessionEvent::Termination {
                    generation,
                    audio_duration_seconds: t.audio_duration_seconds,
                    session_duration_seconds: t.session_duration_seconds,
                });
                self.input(Input::Termination { generation });
            }
            ServerMessage::Error(e) => {
                let error = crate::untrusted::for_terminal(&e.error);
                tracing::warn!(generation, code = ?e.error_code, %error, "the service reported an error");
            }
            ServerMessage::Warning(w) => self.emit(SessionEvent::Warning {
                message: crate::untrusted::for_json(&w.warning).into_owned(),
                explain: None,
            }),
            other => tracing::debug!(generation, kind = other.kind(), "server message"),
        }
    }

    /// A Turn of `generation`: into the transcript (without what a priming covers), out as a
    /// `partial` or `final`, and to the machine.
    fn on_turn(&mut self, generation: Gen, turn: crate::protocol::Turn) {
        let Some(conn) = self.conns.get(&generation) else {
            return;
        };
        let Some(base) = conn.base else {
            return;
        };
        let base_ms = self.ms(base);
        let session_id = conn.session_id.clone();
        // Words in audio an earlier session transcribed (a primed successor's, all of
        // them until its hand-over) only map speakers.
        let primed_until = if conn.priming.is_some() {
            Some(u64::MAX)
        } else {
            conn.primed_until.map(|u| self.ms(u))
        };
        let end_of_turn = turn.end_of_turn;
        let Some(turn) = self.unprimed(generation, base_ms, turn, primed_until) else {
            self.input(Input::Turn {
                generation,
                end_of_turn,
            });
            return;
        };
        let latency = turn.end_of_turn.then(|| {
            turn.words.last().and_then(|w| {
                let at = base.saturating_add(self.samples(w.end.saturating_sub(1)));
                self.buffer
                    .sent_at(at)
                    .map(|t| t.elapsed().as_millis() as u64)
            })
        });
        let latency = latency.flatten();
        let change = self
            .transcript
            .apply(generation, &session_id, base_ms, &turn, latency);
        self.report_unmatched();
        match change {
            Change::Partial(p) => self.emit(SessionEvent::Partial(p)),
            Change::Final { turn: f, replaced } => {
                if !replaced {
                    if let Some(l) = f.latency_ms {
                        self.latencies.push(l);
                    }
                    let end = self.samples(f.end_ms);
                    if let Some(c) = self.conns.get_mut(&generation) {
                        c.last_final_end = Some(end);
                    }
                }
                self.emit(SessionEvent::Final(f));
            }
        }
        self.input(Input::Turn {
            generation,
            end_of_turn: turn.end_of_turn,
        });
    }

    /// `turn` without its words before `primed_until` (stream ms), which were transcribed by
    /// an earlier session: a final's vote for who is who ([`Transcript::prime`]); `None` when
    /// nothing is left. Unrelated turns pass untouched.
    fn unprimed(
        &mut self,
        generation: Gen,
        base_ms: u64,
        mut turn: crate::protocol::Turn,
        primed_until: Option<u64>,
    ) -> Option<crate::protocol::Turn> {
        let Some(until) = primed_until else {
            return Some(turn);
        };
        let (primed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut turn.words)
            .into_iter()
            .partition(|w| base_ms.saturating_add(w.start) < until);
        if turn.end_of_turn && !primed.is_empty() {
            self.transcript.prime(generation, base_ms, &primed);
        }
        if kept.is_empty() && (!primed.is_empty() || until == u64::MAX) {
            return None;
        }
        if !primed.is_empty() {
            // A turn across the hand-over: only its new words, as the text too.
            turn.transcript = kept
                .iter()
                .map(|w| w.text.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            turn.utterance = None;
        }
        turn.words = kept;
        Some(turn)
    }

    /// Speaker labels of later sessions that could not be matched to the run's: each said
    /// once, as a warning.
    fn report_unmatched(&mut self) {
        for unmatched in self.transcript.take_unmatched() {
            let message = crate::strings::speaker_unmatched(&unmatched);
            tracing::warn!("{message}");
            self.emit(SessionEvent::Warning {
                message,
                explain: None,
            });
        }
    }

    /// The service revised who said turns of `generation`: the transcript takes each revision,
    /// and each becomes a `speaker_revision` event.
    fn on_revision(
        &mut self,
        generation: Gen,
        revision: &crate::protocol::messages::SpeakerRevision,
    ) {
        let base_ms = self
            .conns
            .get(&generation)
            .and_then(|c| c.base)
            .or_else(|| self.retired.get(&generation).and_then(|r| r.0))
            .map_or(0, |b| self.ms(b));
        for entry in &revision.revisions {
            let revised = self.transcript.revise(generation, base_ms, entry);
            self.report_unmatched();
            if let Some(turn) = revised {
                self.emit(SessionEvent::SpeakerRevision {
                    generation,
                    turn_order: turn.turn_order,
                    speaker: turn.speaker,
                    speaker_name: turn.speaker_name,
                    speaker_uncertain: turn.speaker_uncertain,
                    words: turn.words,
                });
            }
        }
    }

    /// How long the session that just began will last: `Begin.expires_at` when it is
    /// believable (see [`expiry`]), else the length asked for (the shortest the service grants
    /// when aai-live did not ask itself). Skew and implausible values are reported once a run.
    fn plan_session(&mut self, expires_at: i64) -> Duration {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        // The emulator (or a test server: plain ws:// on loopback) may be told to end sessions
        // sooner than the service ever does, whatever was asked for.
        let local = self.opts.emulator_hints
            || (self.opts.endpoint.scheme() == "ws"
                && crate::protocol::params::is_loopback(&self.opts.endpoint));
        let bounds = if local {
            Bounds {
                min: Duration::from_secs(1),
                ..Bounds::default()
            }
        } else {
            Bounds::default()
        };
        let requested = self.opts.session_duration.unwrap_or(expiry::MIN_SESSION);
        let plan = expiry::plan(expires_at, now_ms, requested, bounds);
        match plan.finding {
            // Only meaningful when this client chose the length (not the emulator's own).
            Finding::ClockSkew { skew_ms } if self.opts.session_duration.is_some() && !local => {
                if !std::mem::replace(&mut self.reported_skew, true) {
                    let message = crate::strings::clock_skew(skew_ms, requested);
                    tracing::warn!(expires_at, skew_ms, "{message}");
                    self.emit(SessionEvent::Warning {
                        message,
                        explain: Some(Diagnosis::ClockSkew.section()),
                    });
                }
            }
            Finding::Consistent | Finding::ClockSkew { .. } => {}
            Finding::Implausible { left_ms } => {
                if !std::mem::replace(&mut self.reported_implausible, true) {
                    let message =
                        crate::strings::implausible_expiry(expires_at, left_ms, requested);
                    tracing::warn!(expires_at, left_ms, "{message}");
                    self.emit(SessionEvent::Warning {
                        message,
                        explain: Some(Diagnosis::ClockSkew.section()),
                    });
                }
            }
        }
        plan.expires_in
    }

    /// The earliest moment a liveness check can change anything (a ping due, a silence or an
    /// unanswered voice turning into a stall).
    fn next_stall_check(&self) -> Option<Instant> {
        let stall_timeout = self.opts.stall_timeout;
        let voice_rule = !self.opts.params.partials_withheld();
        self.conns
            .values()
            .flat_map(|c| {
                let ping = (!c.pinged).then(|| c.last_heard + PING_AFTER);
                let silent = Some(c.last_heard + PING_AFTER + stall_timeout);
                let voice = (voice_rule && c.unanswered_voice_ms >= STALL_MIN_VOICE_MS)
                    .then_some(c.unanswered_since)
                    .flatten()
                    .map(|t| t + stall_timeout);
                [ping, silent, voice]
            })
            .flatten()
            .min()
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            self.input(Input::Timer(timer));
        }
    }

    /// Sessions that stopped answering: sustained voice with no reply (a server that reads
    /// but does not transcribe), or no frame at all for `PING_AFTER` plus `stall_timeout`
    /// despite a ping (a server that stopped reading: TCP pushes back and pongs never come).
    /// Liveness does not depend on what is being said.
    fn check_stalls(&mut self) {
        let now = Instant::now();
        let stall_timeout = self.opts.stall_timeout;
        let mut stalled = Vec::new();
        for (generation, c) in &mut self.conns {
            // A cough or a click followed by silence is not a stall (the service says
            // nothing about non-speech).
            // With partials withheld (PII redaction) a long turn says nothing until it ends:
            // only the ping rule tells a dead session then.
            let unanswered_voice = !self.opts.params.partials_withheld()
                && c.unanswered_voice_ms >= STALL_MIN_VOICE_MS
                && c.unanswered_since
                    .is_some_and(|t| now.duration_since(t) >= stall_timeout);
            let quiet_for = now.duration_since(c.last_heard);
            if quiet_for >= PING_AFTER && !c.pinged {
                c.pinged = true;
                c.connection.try_send(Outgoing::Ping);
            }
            let unanswered_ping = quiet_for >= PING_AFTER + stall_timeout;
            if unanswered_voice || unanswered_ping {
                stalled.push((*generation, unanswered_voice));
            }
        }
        for (generation, voice) in stalled {
            let reason = if voice {
                crate::strings::stalled_unanswered(stall_timeout)
            } else {
                crate::strings::stalled_silent(PING_AFTER + stall_timeout)
            };
            tracing::warn!(generation, "{reason}: treating the session as dropped");
            self.retire(generation);
            self.input(Input::Closed {
                generation,
                closed: Closed {
                    failure: Failure::silent(reason, Diagnosis::Close1006),
                    after_begin: true,
                },
            });
        }
    }
}

/// The machine's view of a connection's end. The reason may be the server's text: capped here
/// (it travels on to NDJSON and the log; the terminal's wording defuses it further).
fn closed_of(ended: &Ended) -> Closed {
    let mut failure = ended.failure.clone();
    failure.reason = crate::untrusted::for_json(&failure.reason).into_owned();
    Closed {
        failure,
        after_begin: ended.after_begin,
    }
}

/// Whether a chunk carries voice (above −40 dBFS RMS), for stall detection.
fn level_is_voice(samples: &[i16]) -> bool {
    crate::protocol::audio::rms(samples) > VOICE_RMS
}

/// p50 and p95 of the latencies seen.
pub fn percentiles(values: &[u64]) -> (Option<u64>, Option<u64>) {
    if values.is_empty() {
        return (None, None);
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (Some(at(0.5)), Some(at(0.95)))
}

/// A path as `finished` reports it: absolute, whatever the working directory.
pub fn absolute(path: &std::path::Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

/// The next index another stream of the account minted with; pending forever without an
/// account. A lagging receiver skips what it missed (those mints are only budget hints).
async fn next_peer_mint(
    peers: &mut Option<tokio::sync::broadcast::Receiver<usize>>,
) -> Option<usize> {
    let Some(rx) = peers else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(index) => return Some(index),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                *peers = None;
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exit-status contract (docs/events.md): failed → 1, audio lost → 3, else 0.
    #[test]
    fn exit_codes() {
        let mut outcome = Outcome::default();
        assert_eq!(outcome.exit_code(), 0);
        outcome.audio.lost = 1;
        assert_eq!(outcome.exit_code(), 3);
        outcome.failure = Some(Failure::input("gone"));
        assert_eq!(outcome.exit_code(), 1);
    }
}
