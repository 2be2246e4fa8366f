//! The session lifecycle as a pure state machine: `(state, input, now, draw) → (state, effects)`.
//!
//! No I/O, no clock and no random source of its own: the supervisor feeds it inputs (commands,
//! connection events, timers) with `now` and a uniform `draw` for any jitter the decision needs,
//! and carries out the effects it returns (mint, connect, route audio, send Terminate, schedule
//! a timer). Every connection has a *generation*; events from a generation the machine is not
//! waiting for are ignored, so a retired socket can never disturb the live one. The browser
//! client's machine (assets/web/aai-live-machine.js) is the same machine in JavaScript, held to
//! this one's scenario table (tests/fixtures/machine-rows.json, exported from `tests.rs`).
//!
//! ```text
//! Idle ─Start→ Minting ─token→ Connecting ─Begin→ Streaming ─rotation due→ Rotating{old,new}
//!                 ▲                │ close/timeout      │ close             │ end of turn (or forced)
//!                 └──── Backoff ◀──┴────────────────────┘                   ▼
//!                        Failed (fatal / client bug)         Streaming(new), old drains
//! Streaming ─Stop→ Draining ─Termination/close/timeout→ Stopped
//! ```
//!
//! The rotation rule (docs/session.md): a session's *granted* length is what the service granted
//! (`Begin.expires_at` minus the time `Begin` arrived, when believable). The effective lead is
//! `min(rotation_lead, granted / 2)`, so a session is never rotated before half its granted
//! length, whatever the configured lead; the hand-over margin (a third of the effective lead)
//! and the token's pre-mint deadline derive from it. Minting is budgeted: more than
//! [`MachineConfig::mint_budget`] mints within [`MachineConfig::mint_window`] while no session
//! reached its planned rotation or stayed up `healthy_after` opens a circuit — a minute-scale
//! backoff with a notice — so no rule, present or future, can turn into a token storm.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::BackoffPolicy;
use crate::diagnosis::Diagnosis;
pub use crate::events::{Cause, Gen, View};
use crate::failure::Failure;
use crate::protocol::CloseClass;
use crate::protocol::close::Recovery;

/// Timing and policy.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Open a successor before expiry and hand over at a turn boundary.
    pub rotation: bool,
    /// How long before expiry the successor is prepared (at most half the granted length).
    pub rotation_lead: Duration,
    /// After forcing an endpoint, hand over at the latest this much later (at most half the
    /// hand-over margin).
    pub handover_grace: Duration,
    /// `Begin.expires_at` is whole seconds and may be rounded either way: plan as if the session
    /// ended this much early (at most a quarter of the granted length).
    pub expiry_safety: Duration,
    pub begin_timeout: Duration,
    pub drain_timeout: Duration,
    /// A session that stayed up this long is healthy: it resets the backoff, and its loss is
    /// followed by an immediate reconnect. What it produced does not matter.
    pub healthy_after: Duration,
    pub backoff: BackoffPolicy,
    /// At most this many mints within `mint_window` while no session reached its planned
    /// rotation or stayed healthy; one more opens the circuit.
    pub mint_budget: usize,
    pub mint_window: Duration,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            rotation: true,
            rotation_lead: Duration::from_secs(30),
            handover_grace: Duration::from_millis(1500),
            expiry_safety: Duration::from_secs(1),
            begin_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            healthy_after: Duration::from_secs(30),
            backoff: BackoffPolicy::default(),
            mint_budget: 6,
            mint_window: Duration::from_secs(60),
        }
    }
}

impl MachineConfig {
    /// The policy in the browser client's terms (`/config.json`'s `session`, the machine
    /// fixtures): durations in whole milliseconds.
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_millis() as u64;
        serde_json::json!({
            "rotation": self.rotation,
            "rotation_lead_ms": ms(self.rotation_lead),
            "handover_grace_ms": ms(self.handover_grace),
            "expiry_safety_ms": ms(self.expiry_safety),
            "begin_timeout_ms": ms(self.begin_timeout),
            "terminate_timeout_ms": ms(self.drain_timeout),
            "healthy_after_ms": ms(self.healthy_after),
            "backoff": {
                "initial_ms": ms(self.backoff.initial),
                "max_ms": ms(self.backoff.max),
                "multiplier": self.backoff.multiplier,
            },
            "rate_limit_backoff_ms": ms(self.backoff.rate_limited),
            "mint_budget": self.mint_budget,
            "mint_window_ms": ms(self.mint_window),
        })
    }

    /// How long after its `Begin` a session granted `granted` has its successor prepared; `None`
    /// with rotation off: the rule alone. What a run carries out (staggered in meeting mode) is
    /// what the supervisor announces in its `rotation_planned` events.
    pub fn rotation_after(&self, granted: Duration) -> Option<Duration> {
        self.rotation
            .then(|| self.rotate_offset(granted.max(MIN_GRANTED)))
    }

    /// The end planned for, from `Begin`: the granted end, less the rounding safety.
    fn planned_end(&self, granted: Duration) -> Duration {
        granted.saturating_sub(self.expiry_safety.min(granted / 4))
    }

    /// The rotation lead a session allows: the configured one, at most half its length.
    pub fn lead(&self, granted: Duration) -> Duration {
        self.rotation_lead.min(granted / 2)
    }

    /// `lead` before the planned end, never before half the granted length.
    fn rotate_offset(&self, granted: Duration) -> Duration {
        self.planned_end(granted)
            .saturating_sub(self.lead(granted))
            .max(granted / 2)
    }
}

/// How a connection ended: what the close (or the failure to open) was, and whether `Begin`
/// had arrived on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub failure: Failure,
    pub after_begin: bool,
}

/// Timers the machine schedules; a timer whose situation has passed is ignored when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    BeginTimeout(Gen),
    Rotate(Gen),
    HandoverDeadline(Gen),
    HandoverGrace(Gen),
    Drain(Gen),
    Healthy(Gen),
    BackoffDone(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start,
    Stop,
    /// Another stream of the same account minted (meeting mode): the service limits new
    /// sessions per account, so every stream's mints count in one budget.
    PeerMinted,
    /// The user asks for a fresh session now.
    Reconnect,
    TokenMinted {
        generation: Gen,
    },
    TokenFailed {
        generation: Gen,
        failure: Failure,
    },
    Begin {
        generation: Gen,
        session_id: String,
        /// How long the service granted this session (its believed `expires_at` minus now).
        granted: Duration,
    },
    /// A Turn arrived on `generation`; `end_of_turn` tells whether it closed the turn.
    Turn {
        generation: Gen,
        end_of_turn: bool,
    },
    Termination {
        generation: Gen,
    },
    /// The audio being sent has been silent for a while (`true`) or carries voice (`false`).
    /// A hand-over waits for silence so no word is cut between two sessions: the service
    /// reports a turn only after its first word, so its turn state lags the audio.
    Quiet(bool),
    Closed {
        generation: Gen,
        closed: Closed,
    },
    Timer(Timer),
    /// The input ended and every captured sample was sent: stop as for `Stop`, but the last
    /// session must confirm its end. If it does not (no `Termination` within the drain timeout:
    /// a server that stopped reading, say), what it had not finalized is replayed into a new
    /// session before stopping again, so the last words are not lost. The supervisor bounds
    /// this with its finishing deadline.
    Finish,
    /// Something on this side failed (the audio input, one of aai-live's tasks): stop as for
    /// `Stop` — the live session drains, so its last turns still arrive — but end `Failed`
    /// with it, never `Stopped`: a failure must not look like a normal end.
    Fail(Failure),
}

/// Side effects for the supervisor to carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Obtain a fresh token for `generation` (answer with `TokenMinted` or `TokenFailed`).
    Mint {
        generation: Gen,
    },
    /// Connect `generation` with the token minted for it (answer with `Begin` / `Closed`).
    Connect {
        generation: Gen,
    },
    /// Send live audio to `to` (`None`: to nobody). With `replay_from`, first resend the
    /// buffered audio after the last finalized word of that generation.
    Route {
        to: Option<Gen>,
        replay_from: Option<Gen>,
    },
    Terminate {
        generation: Gen,
    },
    ForceEndpoint {
        generation: Gen,
    },
    /// Close the socket now, without the Terminate handshake.
    Drop {
        generation: Gen,
    },
    Schedule {
        timer: Timer,
        at: Instant,
    },
    /// Have a token ready by this time (the pre-mint scheduler's job).
    PrepareToken {
        by: Instant,
    },
    /// The state changed.
    Changed(View),
    Notice(Notice),
}

/// Things worth telling the user besides state changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Audio moved from `from` to `to` at a turn boundary (or forced).
    Rotated { from: Gen, to: Gen, forced: bool },
    /// Connection `generation` was lost; what comes next follows.
    Lost { generation: Gen, failure: Failure },
    /// A retired connection did not finish its Terminate handshake in time.
    DrainTimedOut { generation: Gen },
    /// The token was rejected; one fresh token is tried.
    RetryingToken { generation: Gen },
    /// `mints` tokens in `window` without a session that lasted: minting pauses for `wait`.
    MintBudget {
        mints: usize,
        window: Duration,
        wait: Duration,
    },
}

#[derive(Debug, Clone)]
struct Live {
    generation: Gen,
    session_id: String,
    /// When `Begin` arrived, and the length the service granted.
    began: Instant,
    granted: Duration,
    turn_open: bool,
}

impl Live {
    /// The end planned for: the granted end, less the rounding safety.
    fn expires_at(&self, cfg: &MachineConfig) -> Instant {
        self.began + cfg.planned_end(self.granted)
    }

    /// The rotation lead this session allows: the configured one, at most half its length.
    fn lead(&self, cfg: &MachineConfig) -> Duration {
        cfg.lead(self.granted)
    }

    /// When the successor is prepared: `lead` before the planned end, never before half the
    /// granted length.
    fn rotate_at(&self, cfg: &MachineConfig) -> Instant {
        self.began + cfg.rotate_offset(self.granted)
    }

    /// The hand-over margin: a third of the lead, so a natural turn boundary has two thirds of
    /// it to come before the end is forced.
    fn margin(&self, cfg: &MachineConfig) -> Duration {
        self.lead(cfg) / 3
    }

    /// No turn boundary by then: force one.
    fn handover_deadline(&self, cfg: &MachineConfig) -> Instant {
        self.expires_at(cfg)
            .checked_sub(self.margin(cfg))
            .map_or(self.rotate_at(cfg), |at| at.max(self.rotate_at(cfg)))
    }

    /// After forcing an endpoint, the longest wait for its final.
    fn grace(&self, cfg: &MachineConfig) -> Duration {
        cfg.handover_grace.min(self.margin(cfg) / 2)
    }
}

/// A connection being made: its generation and why.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    generation: Gen,
    cause: Cause,
}

#[derive(Debug, Clone)]
enum State {
    Idle,
    Minting(Attempt),
    Connecting(Attempt),
    Streaming(Live),
    Rotating {
        old: Live,
        new: Gen,
        new_ready: Option<Live>,
        /// The successor's token arrived and it is connecting.
        new_connecting: bool,
        /// The hand-over deadline passed: hand over as soon as the successor is ready.
        forced: bool,
    },
    Draining {
        generation: Gen,
    },
    Stopped,
    Backoff {
        attempt: u32,
        delay: Duration,
        class: CloseClass,
    },
    Failed(Failure),
}

/// The session lifecycle.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts: healthy, token retry used, quiet, finishing"
)]
pub struct Machine {
    cfg: MachineConfig,
    state: State,
    next_gen: Gen,
    /// Generations advance by this: the streams of one run number theirs apart (1, 3, 5… and
    /// 2, 4, 6…), so `(generation, turn_order)` names one turn of the run.
    gen_step: Gen,
    /// Consecutive failed attempts (reset by a healthy session).
    attempt: u32,
    /// The last session stayed up for `healthy_after`: the next loss reconnects at once (a blip
    /// after a good stretch). Anything short of that backs off from the first failure, so a
    /// server that accepts and then closes quickly is not hammered.
    healthy: bool,
    /// A rejected token gets one fresh retry; reset by a Begin.
    token_retry_used: bool,
    /// The generation whose buffered audio must be replayed into the next session.
    replay_from: Option<Gen>,
    /// The uniform draw in `[0, 1)` that came with the input being handled (backoff jitter).
    draw: f64,
    /// The audio currently sent is silent (see [`Input::Quiet`]).
    quiet: bool,
    /// Set by [`Input::Fail`]: the run ends `Failed` with this once its drain is over.
    failure: Option<Failure>,
    /// Set by [`Input::Finish`]: a drain that times out is a loss to recover from, not the end.
    finishing: bool,
    /// When the mints since the last session that lasted were made (the mint budget).
    mints: VecDeque<Instant>,
}

impl Machine {
    pub fn new(cfg: MachineConfig) -> Self {
        Self {
            cfg,
            state: State::Idle,
            next_gen: 1,
            gen_step: 1,
            attempt: 0,
            healthy: false,
            token_retry_used: false,
            replay_from: None,
            draw: 0.5,
            quiet: true,
            failure: None,
            finishing: false,
            mints: VecDeque::new(),
        }
    }

    pub fn view(&self) -> View {
        match &self.state {
            State::Idle => View::Idle,
            State::Minting(Attempt { generation, cause }) => View::Minting {
                generation: *generation,
                cause: *cause,
            },
            State::Connecting(Attempt { generation, cause }) => View::Connecting {
                generation: *generation,
                cause: *cause,
            },
            State::Streaming(live) => View::Streaming {
                generation: live.generation,
                session_id: live.session_id.clone(),
            },
            State::Rotating {
                old,
                new,
                new_ready,
                ..
            } => View::Rotating {
                old: old.generation,
                new: *new,
                new_ready: new_ready.is_some(),
            },
            State::Draining { generation } => View::Draining {
                generation: *generation,
            },
            State::Stopped => View::Stopped,
            State::Backoff {
                attempt,
                delay,
                class,
            } => View::Backoff {
                attempt: *attempt,
                retry_in_ms: delay.as_millis() as u64,
                class: *class,
            },
            State::Failed(failure) => View::Failed(failure.clone()),
        }
    }

    /// Whether the machine is finished (stopped or failed) and the supervisor may exit.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Stopped | State::Failed(_))
    }

    /// The failure the run ended with, if it failed.
    pub fn failed(&self) -> Option<&Failure> {
        match &self.state {
            State::Failed(failure) => Some(failure),
            _ => None,
        }
    }

    /// The live session's planned end, for the dashboard.
    pub fn expires_at(&self) -> Option<Instant> {
        match &self.state {
            State::Streaming(live) | State::Rotating { old: live, .. } => {
                Some(live.expires_at(&self.cfg))
            }
            _ => None,
        }
    }

    /// The machine of stream `index` of `streams` (0-based): its generations are
    /// `index + 1`, `index + 1 + streams`, …
    #[must_use]
    pub fn numbered(mut self, index: Gen, streams: Gen) -> Self {
        self.next_gen = index + 1;
        self.gen_step = streams.max(1);
        self
    }

    fn new_gen(&mut self) -> Gen {
        let g = self.next_gen;
        self.next_gen += self.gen_step;
        g
    }

    fn set(&mut self, state: State, out: &mut Vec<Effect>) {
        self.state = match state {
            // A run stopped because something failed ends failed.
            State::Stopped => match self.failure.take() {
                Some(failure) => State::Failed(failure),
                None => State::Stopped,
            },
            other => other,
        };
        out.push(Effect::Changed(self.view()));
    }

    /// A session lasted (its planned rotation came, or it stayed healthy): the mint budget
    /// starts over.
    fn lasted(&mut self) {
        self.mints.clear();
    }

    /// Whether one more mint at `now` stays within the budget.
    fn within_budget(&mut self, now: Instant) -> bool {
        let window = self.cfg.mint_window;
        while self
            .mints
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.mints.pop_front();
        }
        self.mints.len() < self.cfg.mint_budget
    }

    fn mint(&mut self, now: Instant, cause: Cause, out: &mut Vec<Effect>) {
        if !self.within_budget(now) {
            // Something keeps failing in a way no rule caught: pause minting on a minute scale
            // rather than flood the token source. This never fails the run by itself.
            let wait = self.cfg.backoff.rate_limited_delay(self.draw, None);
            out.push(Effect::Notice(Notice::MintBudget {
                mints: self.mints.len(),
                window: self.cfg.mint_window,
                wait,
            }));
            self.attempt += 1;
            self.back_off(now, wait, CloseClass::RateLimited, out);
            return;
        }
        self.mints.push_back(now);
        let generation = self.new_gen();
        self.set(State::Minting(Attempt { generation, cause }), out);
        out.push(Effect::Mint { generation });
    }

    /// Handle one input at `now`. `draw` is a uniform number in `[0, 1)` for any jitter the
    /// decision needs (the supervisor draws it; the scenario rows give it).
    pub fn handle(&mut self, now: Instant, input: Input, draw: f64) -> Vec<Effect> {
        self.draw = draw.clamp(0.0, 1.0);
        let mut out = Vec::new();
        match input {
            Input::Start => self.start(now, &mut out),
            Input::PeerMinted => self.mints.push_back(now),
            Input::Stop => {
                self.finishing = false;
                self.stop(now, &mut out);
            }
            Input::Finish => {
                self.finishing = true;
                self.stop(now, &mut out);
            }
            Input::Reconnect => self.reconnect(now, &mut out),
            Input::TokenMinted { generation } => self.token_minted(now, generation, &mut out),
            Input::TokenFailed {
                generation,
                failure,
            } => self.token_failed(now, generation, &failure, &mut out),
            Input::Begin {
                generation,
                session_id,
                granted,
            } => self.begin(now, generation, session_id, granted, &mut out),
            Input::Turn {
                generation,
                end_of_turn,
            } => self.turn(now, generation, end_of_turn, &mut out),
            Input::Termination { generation } => self.termination(generation, &mut out),
            Input::Quiet(quiet) => {
                self.quiet = quiet;
                if quiet
                    && matches!(&self.state, State::Rotating { old, new_ready: Some(_), .. } if !old.turn_open)
                {
                    self.hand_over(now, false, &mut out);
                }
            }
            Input::Closed { generation, closed } => self.closed(now, generation, &closed, &mut out),
            Input::Timer(timer) => self.timer(now, timer, &mut out),
            Input::Fail(failure) => {
                if !self.is_done() {
                    self.failure = Some(failure);
                    self.stop(now, &mut out);
                }
            }
        }
        out
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if matches!(self.state, State::Idle | State::Stopped | State::Failed(_)) {
            self.attempt = 0;
            self.healthy = false;
            self.failure = None;
            self.finishing = false;
            self.token_retry_used = false;
            self.replay_from = None;
            self.mints.clear();
            self.mint(now, Cause::Start, out);
        }
    }

    fn stop(&mut self, now: Instant, out: &mut Vec<Effect>) {
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Streaming(live) => self.drain(now, live.generation, out),
            State::Rotating { old, new, .. } => {
                out.push(Effect::Drop { generation: new });
                self.drain(now, old.generation, out);
            }
            State::Connecting(Attempt { generation, .. }) => {
                out.push(Effect::Drop { generation });
                self.set(State::Stopped, out);
            }
            State::Draining { generation } => self.state = State::Draining { generation },
            State::Idle | State::Minting(_) | State::Backoff { .. } => {
                self.set(State::Stopped, out);
            }
            other @ (State::Stopped | State::Failed(_)) => self.state = other,
        }
    }

    /// Stop routing audio, send Terminate and wait (bounded) for the trailing turns.
    fn drain(&mut self, now: Instant, generation: Gen, out: &mut Vec<Effect>) {
        self.retire(now, generation, None, out);
        self.set(State::Draining { generation }, out);
    }

    /// Retire `generation` (on stop, a user's reconnect and a hand-over): send live audio to
    /// `route_to` instead (the successor, or nobody), ask it to end with Terminate so its
    /// trailing turns still arrive, and bound that wait with a Drain timer.
    fn retire(&self, now: Instant, generation: Gen, route_to: Option<Gen>, out: &mut Vec<Effect>) {
        out.push(Effect::Route {
            to: route_to,
            replay_from: None,
        });
        out.push(Effect::Terminate { generation });
        out.push(Effect::Schedule {
            timer: Timer::Drain(generation),
            at: now + self.cfg.drain_timeout,
        });
    }

    fn reconnect(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let lost = match &self.state {
            State::Streaming(live) => Some(live.generation),
            State::Rotating { old, new, .. } => {
                out.push(Effect::Drop { generation: *new });
                Some(old.generation)
            }
            State::Connecting(Attempt { generation, .. }) => {
                out.push(Effect::Drop {
                    generation: *generation,
                });
                None
            }
            State::Backoff { .. } | State::Minting(_) => None,
            _ => return,
        };
        if let Some(generation) = lost {
            // Make-before-break is for planned rotations; a user's "reconnect now" breaks first,
            // and replays what was not finalized.
            self.retire(now, generation, None, out);
            self.replay_from = Some(generation);
        }
        if !matches!(self.state, State::Minting(_)) {
            self.mint(now, Cause::User, out);
        }
    }

    fn token_minted(&mut self, now: Instant, generation: Gen, out: &mut Vec<Effect>) {
        match &mut self.state {
            State::Minting(Attempt {
                generation: g,
                cause,
            }) if *g == generation => {
                let cause = *cause;
                self.set(State::Connecting(Attempt { generation, cause }), out);
                self.connect(now, generation, out);
            }
            State::Rotating {
                new,
                new_connecting,
                ..
            } if *new == generation => {
                *new_connecting = true;
                self.connect(now, generation, out);
            }
            _ => {}
        }
    }

    fn connect(&self, now: Instant, generation: Gen, out: &mut Vec<Effect>) {
        out.push(Effect::Connect { generation });
        out.push(Effect::Schedule {
            timer: Timer::BeginTimeout(generation),
            at: now + self.cfg.begin_timeout,
        });
    }

    fn token_failed(
        &mut self,
        now: Instant,
        generation: Gen,
        failure: &Failure,
        out: &mut Vec<Effect>,
    ) {
        match &self.state {
            State::Minting(Attempt { generation: g, .. }) if *g == generation => {
                self.fail_or_back_off(now, failure.class, failure, out);
            }
            State::Rotating { old, new, .. } if *new == generation => {
                // The live session carries on; expiry will be handled by re-mint-and-reconnect.
                let old = old.clone();
                self.set(State::Streaming(old), out);
            }
            _ => {}
        }
    }

    /// After a failed attempt with `class` (the failure's own, or the class its close is
    /// treated as): stop, reconnect at once, or back off, as the class's recovery says.
    fn fail_or_back_off(
        &mut self,
        now: Instant,
        class: CloseClass,
        failure: &Failure,
        out: &mut Vec<Effect>,
    ) {
        let delay = match class.recovery() {
            Recovery::Stop => {
                self.set(State::Failed(failure.clone()), out);
                return;
            }
            Recovery::BackOff if self.healthy => {
                // The first loss after a healthy session is most likely a blip: reconnect at
                // once (the replay covers the gap). Back off only if it keeps failing.
                self.healthy = false;
                self.mint(now, Cause::Dropped, out);
                return;
            }
            Recovery::BackOffLong => {
                self.attempt += 1;
                self.cfg
                    .backoff
                    .rate_limited_delay(self.draw, failure.retry_after)
            }
            // Done, Remint and RemintOnce come here only from a failed token (a lost session's
            // are decided in `after_loss`): back off like any failure.
            Recovery::BackOff | Recovery::Done | Recovery::Remint | Recovery::RemintOnce => {
                self.attempt += 1;
                self.cfg.backoff.delay(self.attempt, self.draw)
            }
        };
        self.back_off(now, delay, class, out);
    }

    fn back_off(
        &mut self,
        now: Instant,
        delay: Duration,
        class: CloseClass,
        out: &mut Vec<Effect>,
    ) {
        let attempt = self.attempt;
        self.set(
            State::Backoff {
                attempt,
                delay,
                class,
            },
            out,
        );
        out.push(Effect::Schedule {
            timer: Timer::BackoffDone(attempt),
            at: now + delay,
        });
    }

    fn begin(
        &mut self,
        now: Instant,
        generation: Gen,
        session_id: String,
        granted: Duration,
        out: &mut Vec<Effect>,
    ) {
        let live = Live {
            generation,
            session_id,
            began: now,
            granted: granted.max(MIN_GRANTED),
            turn_open: false,
        };
        match &mut self.state {
            State::Connecting(Attempt { generation: g, .. }) if *g == generation => {
                self.token_retry_used = false;
                let replay_from = self.replay_from.take();
                out.push(Effect::Route {
                    to: Some(generation),
                    replay_from,
                });
                self.schedule_session_timers(now, &live, out);
                self.set(State::Streaming(live), out);
            }
            State::Rotating {
                old,
                new,
                new_ready,
                forced,
                ..
            } if *new == generation => {
                let old_turn_open = old.turn_open;
                let old = old.clone();
                let deadline_passed = *forced;
                *new_ready = Some(live);
                if deadline_passed {
                    out.push(Effect::Changed(self.view()));
                    self.force_hand_over(now, &old, out);
                } else if old_turn_open || !self.quiet {
                    out.push(Effect::Changed(self.view()));
                } else {
                    // Nothing is being said: hand over at once.
                    self.hand_over(now, false, out);
                }
            }
            _ => {}
        }
    }

    /// Ask the old session to end its turn now and hand over after a short grace, bounded so
    /// it happens before the old session expires.
    fn force_hand_over(&self, now: Instant, old: &Live, out: &mut Vec<Effect>) {
        out.push(Effect::ForceEndpoint {
            generation: old.generation,
        });
        out.push(Effect::Schedule {
            timer: Timer::HandoverGrace(old.generation),
            at: now + old.grace(&self.cfg),
        });
    }

    fn schedule_session_timers(&self, now: Instant, live: &Live, out: &mut Vec<Effect>) {
        out.push(Effect::Schedule {
            timer: Timer::Healthy(live.generation),
            at: now + self.cfg.healthy_after,
        });
        if self.cfg.rotation {
            let rotate_at = live.rotate_at(&self.cfg).max(now);
            out.push(Effect::PrepareToken { by: rotate_at });
            out.push(Effect::Schedule {
                timer: Timer::Rotate(live.generation),
                at: rotate_at,
            });
        }
    }

    fn turn(&mut self, now: Instant, generation: Gen, end_of_turn: bool, out: &mut Vec<Effect>) {
        match &mut self.state {
            State::Streaming(live) if live.generation == generation => {
                // A final turn says nothing about the connection's health: only time does
                // (`Timer::Healthy`), so a server that sends one final and closes backs off.
                live.turn_open = !end_of_turn;
            }
            State::Rotating { old, new_ready, .. } if old.generation == generation => {
                old.turn_open = !end_of_turn;
                if end_of_turn && new_ready.is_some() && self.quiet {
                    self.hand_over(now, false, out);
                }
            }
            _ => {}
        }
    }

    /// Switch audio to the ready successor and retire the old session.
    fn hand_over(&mut self, now: Instant, forced: bool, out: &mut Vec<Effect>) {
        let State::Rotating {
            old,
            new_ready: Some(new),
            forced: was_forced,
            ..
        } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return;
        };
        self.retire(now, old.generation, Some(new.generation), out);
        out.push(Effect::Notice(Notice::Rotated {
            from: old.generation,
            to: new.generation,
            forced: forced || was_forced,
        }));
        self.schedule_session_timers(now, &new, out);
        self.set(State::Streaming(new), out);
    }

    fn termination(&mut self, generation: Gen, out: &mut Vec<Effect>) {
        if let State::Draining { generation: g } = self.state
            && g == generation
        {
            self.set(State::Stopped, out);
        }
    }

    fn lost(generation: Gen, closed: &Closed, out: &mut Vec<Effect>) {
        out.push(Effect::Notice(Notice::Lost {
            generation,
            failure: closed.failure.clone(),
        }));
    }

    fn closed(&mut self, now: Instant, generation: Gen, closed: &Closed, out: &mut Vec<Effect>) {
        match self.state.clone() {
            // A session that closes while finishing without having sent `Termination` (which
            // would have stopped the run already) did not confirm its last audio — it expired
            // or dropped just then: what it had not finalized goes to a new session, under the
            // usual rules for this kind of close.
            State::Draining { generation: g }
                if g == generation && self.finishing && self.failure.is_none() =>
            {
                out.push(Effect::Drop { generation });
                Self::lost(generation, closed, out);
                self.replay_from = Some(generation);
                self.after_loss(now, closed, out);
            }
            State::Draining { generation: g } if g == generation => self.set(State::Stopped, out),
            State::Connecting(Attempt { generation: g, .. }) if g == generation => {
                Self::lost(generation, closed, out);
                self.after_loss(now, closed, out);
            }
            State::Streaming(live) if live.generation == generation => {
                out.push(Effect::Route {
                    to: None,
                    replay_from: None,
                });
                Self::lost(generation, closed, out);
                // Whatever comes next replays what this session had not finalized.
                self.replay_from = Some(generation);
                self.after_loss(now, closed, out);
            }
            State::Rotating {
                old,
                new,
                new_ready,
                new_connecting,
                ..
            } => {
                if old.generation == generation {
                    // The old session died before the handover.
                    Self::lost(generation, closed, out);
                    if let Some(new_live) = new_ready {
                        out.push(Effect::Route {
                            to: Some(new_live.generation),
                            replay_from: Some(generation),
                        });
                        self.schedule_session_timers(now, &new_live, out);
                        self.set(State::Streaming(new_live), out);
                    } else {
                        out.push(Effect::Route {
                            to: None,
                            replay_from: None,
                        });
                        self.replay_from = Some(generation);
                        // The successor carries on from where it is: connecting (its Begin
                        // timeout is armed) or still waiting for its token.
                        let state = if new_connecting {
                            State::Connecting(Attempt {
                                generation: new,
                                cause: Cause::Expired,
                            })
                        } else {
                            State::Minting(Attempt {
                                generation: new,
                                cause: Cause::Expired,
                            })
                        };
                        self.set(state, out);
                    }
                } else if new == generation {
                    // The successor failed: keep streaming on the old one; expiry is still handled.
                    self.set(State::Streaming(old), out);
                }
            }
            _ => {}
        }
    }

    /// After losing the current connection: decide between re-mint now, backoff, or failure,
    /// as the close class's recovery says.
    fn after_loss(&mut self, now: Instant, closed: &Closed, out: &mut Vec<Effect>) {
        let failure = &closed.failure;
        match failure.class.recovery() {
            // Expected (every session ends): a new token and a new session at once.
            Recovery::Remint => self.mint(now, Cause::Expired, out),
            Recovery::RemintOnce if !self.token_retry_used => {
                self.token_retry_used = true;
                let generation = self.next_gen;
                out.push(Effect::Notice(Notice::RetryingToken { generation }));
                self.mint(now, Cause::TokenRejected, out);
            }
            // A fresh token was rejected too.
            Recovery::RemintOnce => self.set(State::Failed(failure.clone()), out),
            // A 1000 we did not ask for: the server ended the session; carry on with a new one.
            Recovery::Done => self.fail_or_back_off(now, CloseClass::Transient, failure, out),
            Recovery::BackOff | Recovery::BackOffLong | Recovery::Stop => {
                self.fail_or_back_off(now, failure.class, failure, out);
            }
        }
    }

    fn timer(&mut self, now: Instant, timer: Timer, out: &mut Vec<Effect>) {
        match timer {
            Timer::BeginTimeout(generation) => self.begin_timeout(now, generation, out),
            Timer::Rotate(generation) => self.rotate(now, generation, out),
            Timer::HandoverDeadline(generation) => {
                if let State::Rotating {
                    old,
                    new_ready,
                    forced,
                    ..
                } = &mut self.state
                    && old.generation == generation
                {
                    // No turn boundary came in time: from now on the hand-over is forced (at
                    // once if the successor is ready, else as soon as it is).
                    *forced = true;
                    if new_ready.is_some() {
                        let old = old.clone();
                        self.force_hand_over(now, &old, out);
                    }
                }
            }
            Timer::HandoverGrace(generation) => {
                if matches!(&self.state, State::Rotating { old, new_ready: Some(_), .. } if old.generation == generation)
                {
                    self.hand_over(now, true, out);
                }
            }
            Timer::Drain(generation) => {
                if matches!(self.state, State::Draining { generation: g } if g == generation) {
                    out.push(Effect::Drop { generation });
                    out.push(Effect::Notice(Notice::DrainTimedOut { generation }));
                    if self.finishing && self.failure.is_none() {
                        // Its last audio is unconfirmed: replay it into a new session.
                        self.replay_from = Some(generation);
                        self.mint(now, Cause::Dropped, out);
                    } else {
                        self.set(State::Stopped, out);
                    }
                } else {
                    // A retired generation (after a rotation or a user reconnect).
                    out.push(Effect::Drop { generation });
                }
            }
            Timer::Healthy(generation) => {
                if matches!(&self.state, State::Streaming(live) if live.generation == generation) {
                    self.attempt = 0;
                    self.healthy = true;
                    self.lasted();
                }
            }
            Timer::BackoffDone(attempt) => {
                if matches!(self.state, State::Backoff { attempt: a, .. } if a == attempt) {
                    self.mint(now, Cause::Dropped, out);
                }
            }
        }
    }

    fn begin_timeout(&mut self, now: Instant, generation: Gen, out: &mut Vec<Effect>) {
        let waiting = match &self.state {
            State::Connecting(Attempt { generation: g, .. }) => *g == generation,
            State::Rotating { new, new_ready, .. } => *new == generation && new_ready.is_none(),
            _ => false,
        };
        if waiting {
            out.push(Effect::Drop { generation });
            self.closed(
                now,
                generation,
                &Closed {
                    failure: Failure::silent(NO_BEGIN, Diagnosis::NoBegin),
                    after_begin: false,
                },
                out,
            );
        }
    }

    fn rotate(&mut self, now: Instant, generation: Gen, out: &mut Vec<Effect>) {
        let State::Streaming(live) = &self.state else {
            return;
        };
        if live.generation != generation || !self.cfg.rotation {
            return;
        }
        let old = live.clone();
        // The session reached its planned rotation: it lasted.
        self.lasted();
        let deadline = old.handover_deadline(&self.cfg).max(now);
        self.mints.push_back(now);
        let new = self.new_gen();
        self.set(
            State::Rotating {
                old,
                new,
                new_ready: None,
                new_connecting: false,
                forced: false,
            },
            out,
        );
        out.push(Effect::Mint { generation: new });
        out.push(Effect::Schedule {
            timer: Timer::HandoverDeadline(generation),
            at: deadline,
        });
    }
}

/// A session is never planned shorter than this (a zero grant would rotate at once).
const MIN_GRANTED: Duration = Duration::from_secs(1);

/// The reason of a connection that opened but never said `Begin` in time.
pub const NO_BEGIN: &str = "no Begin within the timeout";

#[cfg(test)]
mod tests;
