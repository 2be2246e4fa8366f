//! The session lifecycle as a pure state machine: `(state, input, now) → (state, effects)`.
//!
//! No I/O and no clock of its own: the supervisor feeds it inputs (commands, connection events,
//! timers) with `now`, and carries out the effects it returns (mint, connect, route audio, send
//! Terminate, schedule a timer). Every connection has a *generation*; events from a generation
//! the machine is not waiting for are ignored, so a retired socket can never disturb the live one.
//!
//! ```text
//! Idle ─Start→ Minting ─token→ Connecting ─Begin→ Streaming ─rotation due→ Rotating{old,new}
//!                 ▲                │ close/timeout      │ close             │ end of turn (or forced)
//!                 └──── Backoff ◀──┴────────────────────┘                   ▼
//!                        Failed (fatal / client bug)         Streaming(new), old drains
//! Streaming ─Stop→ Draining ─Termination/close/timeout→ Stopped
//! ```

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::backoff::BackoffPolicy;
use crate::protocol::CloseClass;

/// Connection generation: 1, 2, 3, ... one per connection attempt.
pub type Gen = u64;

/// Timing and policy.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Open a successor before expiry and hand over at a turn boundary.
    pub rotation: bool,
    /// How long before expiry the successor is prepared.
    pub rotation_lead: Duration,
    /// If no turn boundary came by `expires_at − handover_margin`, force one.
    pub handover_margin: Duration,
    /// After forcing an endpoint, hand over at the latest this much later.
    pub handover_grace: Duration,
    pub begin_timeout: Duration,
    pub drain_timeout: Duration,
    /// A session that stayed up this long is healthy: it resets the backoff, and its loss is
    /// followed by an immediate reconnect. What it produced does not matter.
    pub healthy_after: Duration,
    pub backoff: BackoffPolicy,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            rotation: true,
            rotation_lead: Duration::from_secs(30),
            handover_margin: Duration::from_secs(8),
            handover_grace: Duration::from_millis(1500),
            begin_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            healthy_after: Duration::from_secs(30),
            backoff: BackoffPolicy::default(),
        }
    }
}

/// A failure to obtain a token, as the machine needs to see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: CloseClass,
    pub message: String,
    pub retry_after: Option<Duration>,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    /// `None`: no close frame (TCP drop, timeout, stall).
    pub code: Option<u16>,
    pub reason: String,
    pub class: CloseClass,
    /// Whether `Begin` had arrived on this connection.
    pub after_begin: bool,
}

impl Closed {
    /// The notice that connection `generation` ended this way.
    fn lost(&self, generation: Gen) -> Effect {
        Effect::Notice(Notice::Lost {
            generation,
            class: self.class,
            code: self.code,
            reason: self.reason.clone(),
        })
    }
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
        /// Time left until the session's `expires_at`.
        expires_in: Duration,
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
    /// with `reason`, never `Stopped`: a failure must not look like a normal end.
    Fail {
        class: CloseClass,
        reason: String,
    },
}

/// Why a new connection is being made (for the event stream and the dashboard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Start,
    Rotation,
    Expired,
    Dropped,
    TokenRejected,
    User,
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
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// Audio moved from `from` to `to` at a turn boundary (or forced).
    Rotated { from: Gen, to: Gen, forced: bool },
    /// Connection `generation` was lost; a new one follows.
    Lost {
        generation: Gen,
        class: CloseClass,
        code: Option<u16>,
        reason: String,
    },
    /// A retired connection did not finish its Terminate handshake in time.
    DrainTimedOut { generation: Gen },
    /// The token was rejected; one fresh token is tried.
    RetryingToken { generation: Gen },
}

/// A serializable snapshot of the state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum View {
    Idle,
    Minting {
        generation: Gen,
        cause: Cause,
    },
    Connecting {
        generation: Gen,
        cause: Cause,
    },
    Streaming {
        generation: Gen,
        session_id: String,
    },
    Rotating {
        old: Gen,
        new: Gen,
        new_ready: bool,
    },
    Draining {
        generation: Gen,
    },
    Stopped,
    Backoff {
        attempt: u32,
        retry_in_ms: u64,
        class: CloseClass,
    },
    Failed {
        class: CloseClass,
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Live {
    generation: Gen,
    session_id: String,
    expires_at: Instant,
    turn_open: bool,
}

#[derive(Debug, Clone)]
enum State {
    Idle,
    Minting {
        generation: Gen,
        cause: Cause,
    },
    Connecting {
        generation: Gen,
        cause: Cause,
    },
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
        until: Instant,
        class: CloseClass,
    },
    Failed {
        class: CloseClass,
        reason: String,
    },
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
    /// xorshift state for backoff jitter (deterministic per seed).
    rng: u64,
    /// The audio currently sent is silent (see [`Input::Quiet`]).
    quiet: bool,
    /// Set by [`Input::Fail`]: the run ends `Failed` with this once its drain is over.
    failure: Option<(CloseClass, String)>,
    /// Set by [`Input::Finish`]: a drain that times out is a loss to recover from, not the end.
    finishing: bool,
}

impl Machine {
    pub fn new(cfg: MachineConfig, seed: u64) -> Self {
        Self {
            cfg,
            state: State::Idle,
            next_gen: 1,
            attempt: 0,
            healthy: false,
            token_retry_used: false,
            replay_from: None,
            rng: seed | 1,
            quiet: true,
            failure: None,
            finishing: false,
        }
    }

    pub fn view(&self) -> View {
        match &self.state {
            State::Idle => View::Idle,
            State::Minting { generation, cause } => View::Minting {
                generation: *generation,
                cause: *cause,
            },
            State::Connecting { generation, cause } => View::Connecting {
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
                until,
                class,
            } => View::Backoff {
                attempt: *attempt,
                retry_in_ms: until.saturating_duration_since(Instant::now()).as_millis() as u64,
                class: *class,
            },
            State::Failed { class, reason } => View::Failed {
                class: *class,
                reason: reason.clone(),
            },
        }
    }

    /// Whether the machine is finished (stopped or failed) and the supervisor may exit.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Stopped | State::Failed { .. })
    }

    /// The live session's expiry, for the dashboard.
    pub fn expires_at(&self) -> Option<Instant> {
        match &self.state {
            State::Streaming(live) | State::Rotating { old: live, .. } => Some(live.expires_at),
            _ => None,
        }
    }

    fn random_unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1_u64 << 53) as f64
    }

    fn new_gen(&mut self) -> Gen {
        let g = self.next_gen;
        self.next_gen += 1;
        g
    }

    fn set(&mut self, state: State, out: &mut Vec<Effect>) {
        self.state = match state {
            // A run stopped because something failed ends failed.
            State::Stopped => match self.failure.take() {
                Some((class, reason)) => State::Failed { class, reason },
                None => State::Stopped,
            },
            other => other,
        };
        out.push(Effect::Changed(self.view()));
    }

    fn mint(&mut self, cause: Cause, out: &mut Vec<Effect>) {
        let generation = self.new_gen();
        self.set(State::Minting { generation, cause }, out);
        out.push(Effect::Mint { generation });
    }

    /// Handle one input at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Start => self.start(&mut out),
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
                expires_in,
            } => self.begin(now, generation, session_id, expires_in, &mut out),
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
            Input::Fail { class, reason } => {
                if !self.is_done() {
                    self.failure = Some((
                        class,
                        format!("{reason} ({}; {})", class.describe(), class.advice()),
                    ));
                    self.stop(now, &mut out);
                }
            }
        }
        out
    }

    fn start(&mut self, out: &mut Vec<Effect>) {
        if matches!(
            self.state,
            State::Idle | State::Stopped | State::Failed { .. }
        ) {
            self.attempt = 0;
            self.healthy = false;
            self.failure = None;
            self.finishing = false;
            self.token_retry_used = false;
            self.replay_from = None;
            self.mint(Cause::Start, out);
        }
    }

    fn stop(&mut self, now: Instant, out: &mut Vec<Effect>) {
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Streaming(live) => self.drain(now, live.generation, out),
            State::Rotating { old, new, .. } => {
                out.push(Effect::Drop { generation: new });
                self.drain(now, old.generation, out);
            }
            State::Connecting { generation, .. } => {
                out.push(Effect::Drop { generation });
                self.set(State::Stopped, out);
            }
            State::Draining { generation } => self.state = State::Draining { generation },
            State::Idle | State::Minting { .. } | State::Backoff { .. } => {
                self.set(State::Stopped, out);
            }
            other @ (State::Stopped | State::Failed { .. }) => self.state = other,
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
            State::Connecting { generation, .. } => {
                out.push(Effect::Drop {
                    generation: *generation,
                });
                None
            }
            State::Backoff { .. } | State::Minting { .. } => None,
            _ => return,
        };
        if let Some(generation) = lost {
            // Make-before-break is for planned rotations; a user's "reconnect now" breaks first,
            // and replays what was not finalized.
            self.retire(now, generation, None, out);
            self.replay_from = Some(generation);
        }
        if !matches!(self.state, State::Minting { .. }) {
            self.mint(Cause::User, out);
        }
    }

    fn token_minted(&mut self, now: Instant, generation: Gen, out: &mut Vec<Effect>) {
        match &mut self.state {
            State::Minting {
                generation: g,
                cause,
            } if *g == generation => {
                let cause = *cause;
                self.set(State::Connecting { generation, cause }, out);
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
            State::Minting { generation: g, .. } if *g == generation => {
                self.fail_or_back_off(
                    now,
                    failure.class,
                    &failure.message,
                    failure.retry_after,
                    out,
                );
            }
            State::Rotating { old, new, .. } if *new == generation => {
                // The live session carries on; expiry will be handled by re-mint-and-reconnect.
                let old = old.clone();
                self.set(State::Streaming(old), out);
            }
            _ => {}
        }
    }

    fn fail_or_back_off(
        &mut self,
        now: Instant,
        class: CloseClass,
        reason: &str,
        retry_after: Option<Duration>,
        out: &mut Vec<Effect>,
    ) {
        // One arm per class, no catch-all: a new class must be decided here.
        let rate_limited = match class {
            CloseClass::ClientBug | CloseClass::Fatal | CloseClass::Local => {
                self.set(
                    State::Failed {
                        class,
                        reason: format!("{reason} ({}; {})", class.describe(), class.advice()),
                    },
                    out,
                );
                return;
            }
            CloseClass::Transient if self.healthy => {
                // The first loss after a healthy session is most likely a blip: reconnect at
                // once (the replay covers the gap). Back off only if it keeps failing.
                self.healthy = false;
                self.mint(Cause::Dropped, out);
                return;
            }
            CloseClass::RateLimited => true,
            // Normal, SessionExpired and TokenRejected come here only from a failed token (a
            // lost session's are decided in `after_loss`): back off like any failure.
            CloseClass::Transient
            | CloseClass::Normal
            | CloseClass::SessionExpired
            | CloseClass::TokenRejected => false,
        };
        self.attempt += 1;
        let unit = self.random_unit();
        let delay = if rate_limited {
            self.cfg.backoff.rate_limited_delay(unit, retry_after)
        } else {
            self.cfg.backoff.delay(self.attempt, unit)
        };
        let until = now + delay;
        let attempt = self.attempt;
        self.set(
            State::Backoff {
                attempt,
                until,
                class,
            },
            out,
        );
        out.push(Effect::Schedule {
            timer: Timer::BackoffDone(attempt),
            at: until,
        });
    }

    fn begin(
        &mut self,
        now: Instant,
        generation: Gen,
        session_id: String,
        expires_in: Duration,
        out: &mut Vec<Effect>,
    ) {
        let live = Live {
            generation,
            session_id,
            expires_at: now + expires_in,
            turn_open: false,
        };
        match &mut self.state {
            State::Connecting { generation: g, .. } if *g == generation => {
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
                let old_generation = old.generation;
                let deadline_passed = *forced;
                *new_ready = Some(live);
                if deadline_passed {
                    out.push(Effect::Changed(self.view()));
                    self.force_hand_over(now, old_generation, out);
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
    fn force_hand_over(&self, now: Instant, old_generation: Gen, out: &mut Vec<Effect>) {
        let grace = self.cfg.handover_grace.min(self.cfg.handover_margin / 2);
        out.push(Effect::ForceEndpoint {
            generation: old_generation,
        });
        out.push(Effect::Schedule {
            timer: Timer::HandoverGrace(old_generation),
            at: now + grace,
        });
    }

    fn schedule_session_timers(&self, now: Instant, live: &Live, out: &mut Vec<Effect>) {
        out.push(Effect::Schedule {
            timer: Timer::Healthy(live.generation),
            at: now + self.cfg.healthy_after,
        });
        if self.cfg.rotation {
            let rotate_at = live
                .expires_at
                .checked_sub(self.cfg.rotation_lead)
                .unwrap_or(now)
                .max(now);
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
                out.push(closed.lost(generation));
                self.replay_from = Some(generation);
                self.after_loss(now, closed, out);
            }
            State::Draining { generation: g } if g == generation => self.set(State::Stopped, out),
            State::Connecting { generation: g, .. } if g == generation => {
                out.push(closed.lost(generation));
                self.after_loss(now, closed, out);
            }
            State::Streaming(live) if live.generation == generation => {
                out.push(Effect::Route {
                    to: None,
                    replay_from: None,
                });
                out.push(closed.lost(generation));
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
                    out.push(closed.lost(generation));
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
                            State::Connecting {
                                generation: new,
                                cause: Cause::Expired,
                            }
                        } else {
                            State::Minting {
                                generation: new,
                                cause: Cause::Expired,
                            }
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

    /// After losing the current connection: decide between re-mint now, backoff, or failure.
    /// One arm per class, no catch-all: a new class must be decided here.
    fn after_loss(&mut self, now: Instant, closed: &Closed, out: &mut Vec<Effect>) {
        match closed.class {
            CloseClass::SessionExpired => {
                // Expected (every session ends): a new token and a new session at once.
                self.mint(Cause::Expired, out);
            }
            CloseClass::TokenRejected if !self.token_retry_used => {
                self.token_retry_used = true;
                let generation = self.next_gen;
                out.push(Effect::Notice(Notice::RetryingToken { generation }));
                self.mint(Cause::TokenRejected, out);
            }
            CloseClass::TokenRejected => self.set(
                State::Failed {
                    class: CloseClass::TokenRejected,
                    reason: format!(
                        "a fresh token was rejected too ({}); check the token source and the clock",
                        closed.reason
                    ),
                },
                out,
            ),
            // A 1000 we did not ask for: the server ended the session; carry on with a new one.
            CloseClass::Normal => {
                self.fail_or_back_off(now, CloseClass::Transient, &closed.reason, None, out);
            }
            CloseClass::RateLimited
            | CloseClass::Transient
            | CloseClass::ClientBug
            | CloseClass::Fatal
            | CloseClass::Local => {
                self.fail_or_back_off(now, closed.class, &describe_close(closed), None, out);
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
                        self.force_hand_over(now, generation, out);
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
                        self.mint(Cause::Dropped, out);
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
                }
            }
            Timer::BackoffDone(attempt) => {
                if matches!(self.state, State::Backoff { attempt: a, .. } if a == attempt) {
                    self.mint(Cause::Dropped, out);
                }
            }
        }
    }

    fn begin_timeout(&mut self, now: Instant, generation: Gen, out: &mut Vec<Effect>) {
        let waiting = match &self.state {
            State::Connecting { generation: g, .. } => *g == generation,
            State::Rotating { new, new_ready, .. } => *new == generation && new_ready.is_none(),
            _ => false,
        };
        if waiting {
            out.push(Effect::Drop { generation });
            self.closed(
                now,
                generation,
                &Closed {
                    code: None,
                    reason: "no Begin within the timeout".into(),
                    class: CloseClass::Transient,
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
        let new = self.new_gen();
        let deadline = old
            .expires_at
            .checked_sub(self.cfg.handover_margin)
            .unwrap_or(now)
            .max(now);
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

fn describe_close(closed: &Closed) -> String {
    match closed.code {
        Some(code) if closed.reason.is_empty() => format!("closed with {code}"),
        Some(code) => format!("closed with {code} \"{}\"", closed.reason),
        None if closed.reason.is_empty() => "connection lost".into(),
        None => closed.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    //! The machine's scenarios as one table (in the spirit of trippy's state scenario files):
    //! each [`Row`] is a name, config tweaks, and steps — inputs at instants after t0, and
    //! expectations about the effects of the input just fed or the state after it. A new path or
    //! close class is one more row in [`rows`]; [`scenarios`] plays them all and names every
    //! failing row and step.
    //!
    //! Times are milliseconds after t0 (`30 * S`). Effects are matched exactly where the order is
    //! the point (`effects`), or by inclusion (`has`) / kind (`lacks`) where the rest is noise;
    //! a backoff view matches by attempt and class, because its `retry_in_ms` is read off the
    //! real clock.

    use std::collections::{HashMap, HashSet};

    use super::*;
    use Timer::{
        BackoffDone, BeginTimeout, Drain, HandoverDeadline, HandoverGrace, Healthy, Rotate,
    };

    /// One second, in the table's milliseconds.
    const S: u64 = 1000;
    /// The jitter seed every row plays with.
    const SEED: u64 = 42;

    /// A scenario: a name, config tweaks, the steps that set it up and the steps it is about.
    struct Row {
        name: &'static str,
        tweak: fn(&mut MachineConfig),
        given: Vec<Step>,
        then: Vec<Step>,
    }

    #[derive(Debug)]
    enum Step {
        /// Feed an input at an instant.
        Input(When, Input),
        /// Check the effects of the last input, or the state after it.
        Expect(Expect),
    }

    #[derive(Debug, Clone, Copy)]
    enum When {
        /// This many ms after t0.
        At(u64),
        /// This many ms after the previous input.
        After(u64),
        /// When the machine last scheduled this timer.
        Scheduled(Timer),
    }

    #[derive(Debug)]
    enum Expect {
        /// The last input's effects are exactly these, in this order.
        Effects(Vec<Fx>),
        /// The last input's effects include each of these.
        Has(Vec<Fx>),
        /// The last input had no effect of this kind.
        Lacks(Kind),
        /// The state changes among the last input's effects are exactly these.
        Changes(Vec<V>),
        /// The state now.
        View(V),
        /// The machine is finished (stopped or failed).
        Done,
        /// Consecutive failed attempts, which the backoff counts.
        Attempts(u32),
    }

    /// An expected effect.
    #[derive(Debug)]
    enum Fx {
        /// This effect (one without an instant).
        Is(Effect),
        /// `timer` scheduled for `from..=to` ms after t0.
        Schedule { timer: Timer, from: u64, to: u64 },
        /// A token wanted by this many ms after t0.
        PrepareToken(u64),
        /// A state change to a view that matches.
        Changed(V),
    }

    /// An expected view.
    #[derive(Debug)]
    enum V {
        Is(View),
        /// Any `retry_in_ms`.
        Backoff {
            attempt: u32,
            class: CloseClass,
        },
        /// A reason containing each of these.
        Failed {
            class: CloseClass,
            containing: Vec<&'static str>,
        },
    }

    /// The kinds of effect, for "no effect of this kind".
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Mint,
        Connect,
        Route,
        Terminate,
        ForceEndpoint,
        Drop,
        Schedule,
        PrepareToken,
        Changed,
        Notice,
    }

    impl Kind {
        fn of(effect: &Effect) -> Self {
            match effect {
                Effect::Mint { .. } => Self::Mint,
                Effect::Connect { .. } => Self::Connect,
                Effect::Route { .. } => Self::Route,
                Effect::Terminate { .. } => Self::Terminate,
                Effect::ForceEndpoint { .. } => Self::ForceEndpoint,
                Effect::Drop { .. } => Self::Drop,
                Effect::Schedule { .. } => Self::Schedule,
                Effect::PrepareToken { .. } => Self::PrepareToken,
                Effect::Changed(_) => Self::Changed,
                Effect::Notice(_) => Self::Notice,
            }
        }
    }

    fn ms_after(t0: Instant, at: Instant) -> u64 {
        at.saturating_duration_since(t0).as_millis() as u64
    }

    impl Fx {
        fn matches(&self, effect: &Effect, t0: Instant) -> bool {
            match (self, effect) {
                (Self::Is(want), got) => want == got,
                (Self::Schedule { timer, from, to }, Effect::Schedule { timer: t, at }) => {
                    timer == t && (*from..=*to).contains(&ms_after(t0, *at))
                }
                (Self::PrepareToken(by), Effect::PrepareToken { by: at }) => {
                    *by == ms_after(t0, *at)
                }
                (Self::Changed(want), Effect::Changed(got)) => want.matches(got),
                _ => false,
            }
        }
    }

    impl V {
        fn matches(&self, view: &View) -> bool {
            match (self, view) {
                (Self::Is(want), got) => want == got,
                (
                    Self::Backoff { attempt, class },
                    View::Backoff {
                        attempt: a,
                        class: c,
                        ..
                    },
                ) => attempt == a && class == c,
                (Self::Failed { class, containing }, View::Failed { class: c, reason }) => {
                    class == c && containing.iter().all(|part| reason.contains(part))
                }
                _ => false,
            }
        }
    }

    /// Every `want` matches its effect, and there are as many of each.
    fn all_match(want: &[Fx], got: &[Effect], t0: Instant) -> bool {
        want.len() == got.len() && want.iter().zip(got).all(|(w, e)| w.matches(e, t0))
    }

    impl Expect {
        /// `Err` says what was found instead.
        fn check(&self, m: &Machine, fx: &[Effect], t0: Instant) -> Result<(), String> {
            match self {
                Self::Effects(want) if !all_match(want, fx, t0) => {
                    Err("the effects are not exactly these".into())
                }
                Self::Has(want) => match want.iter().find(|w| !fx.iter().any(|e| w.matches(e, t0)))
                {
                    Some(missing) => Err(format!("no effect matches {missing:?}")),
                    None => Ok(()),
                },
                Self::Lacks(kind) if fx.iter().any(|e| Kind::of(e) == *kind) => {
                    Err(format!("there is a {kind:?} effect"))
                }
                Self::Changes(want) => {
                    let got: Vec<&View> = fx
                        .iter()
                        .filter_map(|e| match e {
                            Effect::Changed(v) => Some(v),
                            _ => None,
                        })
                        .collect();
                    if want.len() == got.len() && want.iter().zip(&got).all(|(w, v)| w.matches(v)) {
                        Ok(())
                    } else {
                        Err(format!("the state changes are {got:?}"))
                    }
                }
                Self::View(want) if !want.matches(&m.view()) => {
                    Err(format!("the view is {:?}", m.view()))
                }
                Self::Done if !m.is_done() => Err(format!("not done: {:?}", m.view())),
                Self::Attempts(n) if m.attempt != *n => {
                    Err(format!("{} attempts, not {n}", m.attempt))
                }
                _ => Ok(()),
            }
        }
    }

    impl Row {
        fn new(name: &'static str) -> Self {
            Self {
                name,
                tweak: |_| {},
                given: Vec::new(),
                then: Vec::new(),
            }
        }

        fn config(self, tweak: fn(&mut MachineConfig)) -> Self {
            Self { tweak, ..self }
        }

        fn given(self, given: Vec<Step>) -> Self {
            Self { given, ..self }
        }

        fn then(self, then: impl IntoIterator<Item = Step>) -> Self {
            Self {
                then: then.into_iter().collect(),
                ..self
            }
        }

        /// Play the row on a fresh machine; `Err` names the row and the first step that failed.
        fn run(&self) -> Result<(), String> {
            let mut cfg = MachineConfig::default();
            (self.tweak)(&mut cfg);
            let mut m = Machine::new(cfg, SEED);
            let t0 = Instant::now();
            let mut now = t0;
            let mut last: Vec<Effect> = Vec::new();
            let mut scheduled: HashMap<Timer, Instant> = HashMap::new();
            for (i, step) in self.given.iter().chain(&self.then).enumerate() {
                let checked = match step {
                    Step::Input(when, input) => {
                        let at = match *when {
                            When::At(ms) => Ok(t0 + Duration::from_millis(ms)),
                            When::After(ms) => Ok(now + Duration::from_millis(ms)),
                            When::Scheduled(timer) => scheduled
                                .get(&timer)
                                .copied()
                                .ok_or_else(|| format!("{timer:?} was never scheduled")),
                        };
                        at.and_then(|at| {
                            if at < now {
                                return Err("the row goes back in time".to_owned());
                            }
                            now = at;
                            last = m.handle(now, input.clone());
                            for effect in &last {
                                if let Effect::Schedule { timer, at } = effect {
                                    scheduled.insert(*timer, *at);
                                }
                            }
                            Ok(())
                        })
                    }
                    Step::Expect(expect) => expect.check(&m, &last, t0),
                };
                checked.map_err(|why| {
                    let place = match i.checked_sub(self.given.len()) {
                        None => format!("given step {i}"),
                        Some(j) => format!("step {j}"),
                    };
                    format!(
                        "row `{}`, {place} {step:?} at +{} ms: {why}\neffects of the last input: {last:#?}",
                        self.name,
                        ms_after(t0, now)
                    )
                })?;
            }
            Ok(())
        }
    }

    // Steps.

    fn at(ms: u64, input: Input) -> Step {
        Step::Input(When::At(ms), input)
    }

    fn after(ms: u64, input: Input) -> Step {
        Step::Input(When::After(ms), input)
    }

    /// The timer fires when the machine scheduled it.
    fn fire(timer: Timer) -> Step {
        Step::Input(When::Scheduled(timer), Input::Timer(timer))
    }

    // Inputs.

    fn start() -> Input {
        Input::Start
    }

    fn stop() -> Input {
        Input::Stop
    }

    fn reconnect() -> Input {
        Input::Reconnect
    }

    fn minted(generation: Gen) -> Input {
        Input::TokenMinted { generation }
    }

    fn token_failed(generation: Gen, class: CloseClass, message: &str) -> Input {
        Input::TokenFailed {
            generation,
            failure: Failure {
                class,
                message: message.into(),
                retry_after: None,
            },
        }
    }

    fn begin(generation: Gen, session_id: &str, expires_in_secs: u64) -> Input {
        Input::Begin {
            generation,
            session_id: session_id.into(),
            expires_in: Duration::from_secs(expires_in_secs),
        }
    }

    fn turn_opens(generation: Gen) -> Input {
        Input::Turn {
            generation,
            end_of_turn: false,
        }
    }

    fn turn_ends(generation: Gen) -> Input {
        Input::Turn {
            generation,
            end_of_turn: true,
        }
    }

    fn voice() -> Input {
        Input::Quiet(false)
    }

    fn silence() -> Input {
        Input::Quiet(true)
    }

    fn termination(generation: Gen) -> Input {
        Input::Termination { generation }
    }

    fn finish() -> Input {
        Input::Finish
    }

    fn fails_locally(reason: &str) -> Input {
        Input::Fail {
            class: CloseClass::Local,
            reason: reason.into(),
        }
    }

    /// A timer at an instant of the row's choosing (a stale one, say).
    fn timer(timer: Timer) -> Input {
        Input::Timer(timer)
    }

    /// A close classified as the client classifies it.
    fn close(generation: Gen, code: Option<u16>, reason: &str, after_begin: bool) -> Input {
        Input::Closed {
            generation,
            closed: Closed {
                code,
                reason: reason.into(),
                class: crate::protocol::classify(code, reason, None),
                after_begin,
            },
        }
    }

    /// A close frame after Begin.
    fn closes(generation: Gen, code: u16, reason: &str) -> Input {
        close(generation, Some(code), reason, true)
    }

    fn closes_before_begin(generation: Gen, code: u16, reason: &str) -> Input {
        close(generation, Some(code), reason, false)
    }

    /// The connection ends after Begin without a close frame.
    fn drops(generation: Gen) -> Input {
        close(generation, None, "", true)
    }

    // Expectations.

    fn effects(fx: impl IntoIterator<Item = Fx>) -> Step {
        Step::Expect(Expect::Effects(fx.into_iter().collect()))
    }

    fn nothing() -> Step {
        effects([])
    }

    fn has(fx: impl IntoIterator<Item = Fx>) -> Step {
        Step::Expect(Expect::Has(fx.into_iter().collect()))
    }

    fn lacks(kind: Kind) -> Step {
        Step::Expect(Expect::Lacks(kind))
    }

    fn changes(views: impl IntoIterator<Item = V>) -> Step {
        Step::Expect(Expect::Changes(views.into_iter().collect()))
    }

    fn view(view: V) -> Step {
        Step::Expect(Expect::View(view))
    }

    fn done() -> Step {
        Step::Expect(Expect::Done)
    }

    fn attempts(n: u32) -> Step {
        Step::Expect(Expect::Attempts(n))
    }

    // Effects.

    fn mint(generation: Gen) -> Fx {
        Fx::Is(Effect::Mint { generation })
    }

    fn connect(generation: Gen) -> Fx {
        Fx::Is(Effect::Connect { generation })
    }

    fn route(to: Gen) -> Fx {
        Fx::Is(Effect::Route {
            to: Some(to),
            replay_from: None,
        })
    }

    fn route_replaying(to: Gen, replay_from: Gen) -> Fx {
        Fx::Is(Effect::Route {
            to: Some(to),
            replay_from: Some(replay_from),
        })
    }

    fn route_nowhere() -> Fx {
        Fx::Is(Effect::Route {
            to: None,
            replay_from: None,
        })
    }

    fn terminate(generation: Gen) -> Fx {
        Fx::Is(Effect::Terminate { generation })
    }

    fn force_endpoint(generation: Gen) -> Fx {
        Fx::Is(Effect::ForceEndpoint { generation })
    }

    fn drop_socket(generation: Gen) -> Fx {
        Fx::Is(Effect::Drop { generation })
    }

    fn schedule(timer: Timer, ms: u64) -> Fx {
        schedule_within(timer, ms, ms)
    }

    fn schedule_within(timer: Timer, from: u64, to: u64) -> Fx {
        Fx::Schedule { timer, from, to }
    }

    fn prepare_token(ms: u64) -> Fx {
        Fx::PrepareToken(ms)
    }

    fn changed(view: V) -> Fx {
        Fx::Changed(view)
    }

    fn rotated(from: Gen, to: Gen) -> Fx {
        Fx::Is(Effect::Notice(Notice::Rotated {
            from,
            to,
            forced: false,
        }))
    }

    fn rotated_forced(from: Gen, to: Gen) -> Fx {
        Fx::Is(Effect::Notice(Notice::Rotated {
            from,
            to,
            forced: true,
        }))
    }

    fn lost(generation: Gen, class: CloseClass, code: Option<u16>, reason: &str) -> Fx {
        Fx::Is(Effect::Notice(Notice::Lost {
            generation,
            class,
            code,
            reason: reason.into(),
        }))
    }

    fn drain_timed_out(generation: Gen) -> Fx {
        Fx::Is(Effect::Notice(Notice::DrainTimedOut { generation }))
    }

    fn retrying_token(generation: Gen) -> Fx {
        Fx::Is(Effect::Notice(Notice::RetryingToken { generation }))
    }

    // Views.

    fn is_minting(generation: Gen, cause: Cause) -> V {
        V::Is(View::Minting { generation, cause })
    }

    fn is_connecting(generation: Gen, cause: Cause) -> V {
        V::Is(View::Connecting { generation, cause })
    }

    fn is_streaming(generation: Gen, session_id: &str) -> V {
        V::Is(View::Streaming {
            generation,
            session_id: session_id.into(),
        })
    }

    fn is_rotating(old: Gen, new: Gen, new_ready: bool) -> V {
        V::Is(View::Rotating {
            old,
            new,
            new_ready,
        })
    }

    fn is_draining(generation: Gen) -> V {
        V::Is(View::Draining { generation })
    }

    fn is_stopped() -> V {
        V::Is(View::Stopped)
    }

    fn is_backoff(attempt: u32, class: CloseClass) -> V {
        V::Backoff { attempt, class }
    }

    fn is_failed(class: CloseClass, containing: impl IntoIterator<Item = &'static str>) -> V {
        V::Failed {
            class,
            containing: containing.into_iter().collect(),
        }
    }

    /// Start and stream on generation 1 (session "s1", expiring after `expires_in_secs`) at t0.
    fn streaming(expires_in_secs: u64) -> Vec<Step> {
        vec![
            at(0, start()),
            effects([changed(is_minting(1, Cause::Start)), mint(1)]),
            at(0, minted(1)),
            has([connect(1)]),
            at(0, begin(1, "s1", expires_in_secs)),
            has([route(1)]),
            view(is_streaming(1, "s1")),
        ]
    }

    /// Streaming on connection 1 for `healthy_after` (30 s): its loss reconnects at once.
    fn healthy_streaming(expires_in_secs: u64) -> Vec<Step> {
        let mut steps = streaming(expires_in_secs);
        steps.push(fire(Healthy(1)));
        steps
    }

    /// A close that a retry cannot cure: the machine fails, and says why and what to do.
    fn fails_with_advice(
        name: &'static str,
        code: u16,
        reason: &'static str,
        class: CloseClass,
    ) -> Row {
        Row::new(name).given(streaming(60)).then([
            at(0, closes(1, code, reason)),
            view(is_failed(class, [reason, "not retrying"])),
            done(),
        ])
    }

    #[expect(clippy::too_many_lines, reason = "the table: one row per scenario")]
    fn rows() -> Vec<Row> {
        vec![
            Row::new("start_mint_connect_begin_stream").then([
                at(0, start()),
                changes([is_minting(1, Cause::Start)]),
                at(0, minted(1)),
                effects([
                    changed(is_connecting(1, Cause::Start)),
                    connect(1),
                    schedule(BeginTimeout(1), 10 * S),
                ]),
                at(0, begin(1, "s1", 60)),
                // Rotation prepared 30 s before expiry.
                effects([
                    route(1),
                    schedule(Healthy(1), 30 * S),
                    prepare_token(30 * S),
                    schedule(Rotate(1), 30 * S),
                    changed(is_streaming(1, "s1")),
                ]),
            ]),
            Row::new("stop_terminates_and_termination_ends_it")
                .given(streaming(60))
                .then([
                    at(0, stop()),
                    effects([
                        route_nowhere(),
                        terminate(1),
                        schedule(Drain(1), 5 * S),
                        changed(is_draining(1)),
                    ]),
                    at(0, termination(1)),
                    changes([is_stopped()]),
                    done(),
                ]),
            Row::new("stop_waits_for_termination_at_most_the_drain_timeout")
                .given(streaming(60))
                .then([
                    at(0, stop()),
                    fire(Drain(1)),
                    effects([drop_socket(1), drain_timed_out(1), changed(is_stopped())]),
                    view(is_stopped()),
                ]),
            Row::new("an_unconfirmed_finish_replays_into_a_new_session_then_finishes")
                .given(streaming(60))
                .then([
                    // The input ended; the last session never confirms (it stopped reading).
                    at(0, finish()),
                    effects([
                        route_nowhere(),
                        terminate(1),
                        schedule(Drain(1), 5 * S),
                        changed(is_draining(1)),
                    ]),
                    fire(Drain(1)),
                    effects([
                        drop_socket(1),
                        drain_timed_out(1),
                        changed(is_minting(2, Cause::Dropped)),
                        mint(2),
                    ]),
                    after(0, minted(2)),
                    after(0, begin(2, "s2", 60)),
                    // What it had not finalized goes to the new session.
                    has([Fx::Is(Effect::Route {
                        to: Some(2),
                        replay_from: Some(1),
                    })]),
                    after(0, finish()),
                    has([terminate(2)]),
                    after(0, termination(2)),
                    changes([is_stopped()]),
                    done(),
                ]),
            Row::new("a_finish_closed_without_termination_replays_into_a_new_session")
                .given(streaming(60))
                .then([
                    // The input ended just as the session expired: 3008 instead of Termination.
                    at(0, finish()),
                    changes([is_draining(1)]),
                    after(0, close(1, Some(3008), "Session expired", true)),
                    effects([
                        drop_socket(1),
                        lost(1, CloseClass::SessionExpired, Some(3008), "Session expired"),
                        changed(is_minting(2, Cause::Expired)),
                        mint(2),
                    ]),
                    after(0, minted(2)),
                    after(0, begin(2, "s2", 60)),
                    has([Fx::Is(Effect::Route {
                        to: Some(2),
                        replay_from: Some(1),
                    })]),
                ]),
            Row::new("a_stop_closed_without_termination_just_stops")
                .given(streaming(60))
                .then([
                    at(0, stop()),
                    changes([is_draining(1)]),
                    after(0, close(1, Some(3008), "Session expired", true)),
                    changes([is_stopped()]),
                    done(),
                ]),
            Row::new("stop_during_rotation_drops_the_successor_and_drains_the_old")
                .given(streaming(60))
                .then([
                    fire(Rotate(1)),
                    at(30 * S, minted(2)),
                    at(31 * S, stop()),
                    effects([
                        drop_socket(2),
                        route_nowhere(),
                        terminate(1),
                        schedule(Drain(1), 36 * S),
                        changed(is_draining(1)),
                    ]),
                ]),
            Row::new("planned_rotation_hands_over_at_end_of_turn")
                .given(streaming(60))
                .then([
                    at(0, turn_opens(1)),
                    fire(Rotate(1)),
                    has([mint(2), schedule(HandoverDeadline(1), 52 * S)]),
                    at(31 * S, minted(2)),
                    at(31 * S, begin(2, "s2", 60)),
                    // A turn is open on the old session: wait for its end.
                    lacks(Kind::Route),
                    view(is_rotating(1, 2, true)),
                    at(33 * S, turn_ends(1)),
                    effects([
                        route(2),
                        terminate(1),
                        schedule(Drain(1), 38 * S),
                        rotated(1, 2),
                        schedule(Healthy(2), 63 * S),
                        prepare_token(61 * S),
                        schedule(Rotate(2), 61 * S),
                        changed(is_streaming(2, "s2")),
                    ]),
                    view(is_streaming(2, "s2")),
                    // The retired session's close and Termination do not disturb the new one.
                    at(34 * S, termination(1)),
                    nothing(),
                    at(34 * S, closes(1, 1000, "")),
                    nothing(),
                    // The drain timer only drops the retired socket.
                    fire(Drain(1)),
                    effects([drop_socket(1)]),
                ]),
            Row::new("hand_over_waits_for_silent_audio")
                .given(streaming(60))
                .then([
                    at(0, voice()),
                    fire(Rotate(1)),
                    at(30 * S, minted(2)),
                    // No turn reported yet, but voice is being sent: wait.
                    at(31 * S, begin(2, "s2", 60)),
                    lacks(Kind::Route),
                    at(32 * S, silence()),
                    has([route(2)]),
                ]),
            Row::new("rotation_is_immediate_in_silence")
                .given(streaming(60))
                .then([
                    fire(Rotate(1)),
                    at(30 * S, minted(2)),
                    at(31 * S, begin(2, "s2", 60)),
                    has([route(2)]),
                ]),
            Row::new("rotation_is_forced_near_the_deadline_for_a_speaker_who_never_pauses")
                .given(streaming(60))
                .then([
                    at(0, turn_opens(1)),
                    fire(Rotate(1)),
                    at(30 * S, minted(2)),
                    at(31 * S, begin(2, "s2", 60)),
                    fire(HandoverDeadline(1)),
                    effects([
                        force_endpoint(1),
                        schedule(HandoverGrace(1), 53 * S + S / 2),
                    ]),
                    fire(HandoverGrace(1)),
                    has([rotated_forced(1, 2)]),
                ]),
            Row::new("a_successor_ready_after_the_deadline_is_handed_over_at_once")
                .given(streaming(60))
                .then([
                    at(0, turn_opens(1)),
                    fire(Rotate(1)),
                    fire(HandoverDeadline(1)),
                    lacks(Kind::ForceEndpoint),
                    at(55 * S, minted(2)),
                    at(55 * S, begin(2, "s2", 60)),
                    has([
                        force_endpoint(1),
                        schedule(HandoverGrace(1), 56 * S + S / 2),
                    ]),
                ]),
            Row::new("successor_failure_keeps_the_live_session")
                .given(streaming(60))
                .then([
                    fire(Rotate(1)),
                    at(30 * S, token_failed(2, CloseClass::Transient, "timeout")),
                    view(is_streaming(1, "s1")),
                ]),
            Row::new("old_session_lost_during_rotation_switches_with_replay")
                .given(streaming(60))
                .then([
                    at(0, turn_opens(1)),
                    fire(Rotate(1)),
                    at(30 * S, minted(2)),
                    at(31 * S, begin(2, "s2", 60)),
                    at(32 * S, drops(1)),
                    effects([
                        lost(1, CloseClass::Transient, None, ""),
                        route_replaying(2, 1),
                        schedule(Healthy(2), 62 * S),
                        prepare_token(61 * S),
                        schedule(Rotate(2), 61 * S),
                        changed(is_streaming(2, "s2")),
                    ]),
                    view(is_streaming(2, "s2")),
                ]),
            Row::new("old_session_lost_while_the_successor_mints_carries_on_minting")
                .given(streaming(60))
                .then([
                    fire(Rotate(1)),
                    at(31 * S, drops(1)),
                    effects([
                        lost(1, CloseClass::Transient, None, ""),
                        route_nowhere(),
                        changed(is_minting(2, Cause::Expired)),
                    ]),
                    view(is_minting(2, Cause::Expired)),
                    // The token arrives: connect, then Begin routes with a replay of what 1 did
                    // not finalize.
                    at(32 * S, minted(2)),
                    has([connect(2)]),
                    at(32 * S, begin(2, "s2", 60)),
                    has([route_replaying(2, 1)]),
                ]),
            Row::new("expiry_without_rotation_remints_and_replays")
                .config(|c| c.rotation = false)
                .given(streaming(60))
                .then([
                    at(
                        60 * S,
                        closes(
                            1,
                            3008,
                            "Session Expired: Maximum session duration exceeded",
                        ),
                    ),
                    effects([
                        route_nowhere(),
                        lost(
                            1,
                            CloseClass::SessionExpired,
                            Some(3008),
                            "Session Expired: Maximum session duration exceeded",
                        ),
                        changed(is_minting(2, Cause::Expired)),
                        mint(2),
                    ]),
                    view(is_minting(2, Cause::Expired)),
                    at(60 * S, minted(2)),
                    at(60 * S, begin(2, "s2", 60)),
                    has([route_replaying(2, 1)]),
                ]),
            Row::new("transient_losses_back_off_with_jitter_and_reset_when_healthy")
                .given(healthy_streaming(3600))
                .then([
                    // The first drop after a healthy session reconnects at once.
                    after(0, drops(1)),
                    effects([
                        route_nowhere(),
                        lost(1, CloseClass::Transient, None, ""),
                        changed(is_minting(2, Cause::Dropped)),
                        mint(2),
                    ]),
                    // It fails again: now a jittered backoff, at most 0.5 s (the ceiling of
                    // attempt 1)...
                    after(
                        0,
                        token_failed(2, CloseClass::Transient, "connection refused"),
                    ),
                    effects([
                        changed(is_backoff(1, CloseClass::Transient)),
                        schedule_within(BackoffDone(1), 30 * S, 30 * S + S / 2),
                    ]),
                    fire(BackoffDone(1)),
                    has([mint(3)]),
                    // ...and again: at most 1 s (attempt 2).
                    after(
                        0,
                        token_failed(3, CloseClass::Transient, "connection refused"),
                    ),
                    view(is_backoff(2, CloseClass::Transient)),
                    fire(BackoffDone(2)),
                    has([mint(4)]),
                    after(0, minted(4)),
                    after(0, begin(4, "s4", 3600)),
                    fire(Healthy(4)),
                    // A healthy session resets the backoff...
                    attempts(0),
                    // ...so the next drop reconnects at once again.
                    after(0, drops(4)),
                    has([mint(5)]),
                    lacks(Kind::Schedule),
                ]),
            Row::new("token_rejected_is_retried_once").then([
                at(0, start()),
                at(0, minted(1)),
                at(
                    0,
                    closes_before_begin(
                        1,
                        1008,
                        "Unauthorized Connection: Temporary token expired",
                    ),
                ),
                effects([
                    lost(
                        1,
                        CloseClass::TokenRejected,
                        Some(1008),
                        "Unauthorized Connection: Temporary token expired",
                    ),
                    retrying_token(2),
                    changed(is_minting(2, Cause::TokenRejected)),
                    mint(2),
                ]),
                at(0, minted(2)),
                at(
                    0,
                    closes_before_begin(
                        2,
                        1008,
                        "Unauthorized Connection: Temporary token expired",
                    ),
                ),
                view(is_failed(
                    CloseClass::TokenRejected,
                    ["a fresh token was rejected too"],
                )),
            ]),
            fails_with_advice(
                "fatal_and_client_bugs_fail_with_advice: missing authorization",
                1008,
                "Unauthorized Connection: Missing Authorization header",
                CloseClass::Fatal,
            ),
            fails_with_advice(
                "fatal_and_client_bugs_fail_with_advice: input duration",
                3007,
                "Input duration violation: 20 ms. Expected between 50 and 1000 ms",
                CloseClass::ClientBug,
            ),
            fails_with_advice(
                "fatal_and_client_bugs_fail_with_advice: invalid json",
                3006,
                "Invalid JSON: {",
                CloseClass::ClientBug,
            ),
            fails_with_advice(
                "fatal_and_client_bugs_fail_with_advice: message too big",
                1009,
                "Message too big",
                CloseClass::ClientBug,
            ),
            Row::new("a_token_refused_for_good_fails_with_advice").then([
                at(0, start()),
                at(
                    0,
                    token_failed(1, CloseClass::Fatal, "the API key was refused"),
                ),
                view(is_failed(
                    CloseClass::Fatal,
                    ["the API key was refused", "not retrying"],
                )),
                done(),
            ]),
            Row::new("a_healthy_session_closed_normally_unasked_reconnects_at_once")
                .given(healthy_streaming(60))
                .then([
                    after(0, closes(1, 1000, "")),
                    effects([
                        route_nowhere(),
                        lost(1, CloseClass::Normal, Some(1000), ""),
                        changed(is_minting(2, Cause::Dropped)),
                        mint(2),
                    ]),
                ]),
            Row::new("rate_limit_waits_a_minute")
                .given(streaming(60))
                .then([
                    at(
                        0,
                        closes(
                            1,
                            3009,
                            "Unauthorized Connection: Too many concurrent sessions",
                        ),
                    ),
                    has([schedule_within(BackoffDone(1), 60 * S, 75 * S)]),
                    view(is_backoff(1, CloseClass::RateLimited)),
                ]),
            Row::new("no_begin_in_time_backs_off_from_the_first_failure").then([
                at(0, start()),
                at(0, minted(1)),
                fire(BeginTimeout(1)),
                // No healthy session before it: back off at once.
                effects([
                    drop_socket(1),
                    lost(
                        1,
                        CloseClass::Transient,
                        None,
                        "no Begin within the timeout",
                    ),
                    changed(is_backoff(1, CloseClass::Transient)),
                    schedule_within(BackoffDone(1), 10 * S, 10 * S + S / 2),
                ]),
                // A stale timer for an old generation does nothing.
                at(11 * S, timer(BeginTimeout(1))),
                nothing(),
            ]),
            Row::new("close_before_begin_backs_off_from_the_first_failure").then([
                at(0, start()),
                at(0, minted(1)),
                at(0, closes_before_begin(1, 1011, "")),
                view(is_backoff(1, CloseClass::Transient)),
                fire(BackoffDone(1)),
                has([mint(2)]),
                after(0, minted(2)),
                after(0, closes_before_begin(2, 1011, "")),
                view(is_backoff(2, CloseClass::Transient)),
            ]),
            Row::new("a_local_failure_while_streaming_drains_then_fails")
                .given(streaming(60))
                .then([
                    at(
                        S,
                        fails_locally("the audio input failed: the microphone went away"),
                    ),
                    effects([
                        route_nowhere(),
                        terminate(1),
                        schedule(Drain(1), 6 * S),
                        changed(is_draining(1)),
                    ]),
                    // The last turns still come; then the run ends failed, never stopped.
                    at(2 * S, termination(1)),
                    changes([is_failed(
                        CloseClass::Local,
                        ["the microphone went away", "not retrying"],
                    )]),
                    done(),
                ]),
            Row::new("a_local_failure_while_minting_fails_at_once").then([
                at(0, start()),
                at(S, fails_locally("the audio input stopped unexpectedly")),
                view(is_failed(CloseClass::Local, ["stopped unexpectedly"])),
                done(),
                // A late token changes nothing.
                at(2 * S, minted(1)),
                nothing(),
            ]),
            Row::new("a_token_failure_at_start_backs_off_from_the_first_failure").then([
                at(0, start()),
                at(0, token_failed(1, CloseClass::Transient, "HTTP 500")),
                effects([
                    changed(is_backoff(1, CloseClass::Transient)),
                    schedule_within(BackoffDone(1), 0, S / 2),
                ]),
            ]),
            Row::new("a_session_that_sends_a_final_and_closes_is_not_healthy")
                .given(streaming(60))
                .then([
                    at(S, turn_ends(1)),
                    at(2 * S, closes(1, 1000, "")),
                    has([lost(1, CloseClass::Normal, Some(1000), "")]),
                    view(is_backoff(1, CloseClass::Transient)),
                    lacks(Kind::Mint),
                ]),
            Row::new("user_reconnect_breaks_and_replays")
                .given(streaming(60))
                .then([
                    at(0, reconnect()),
                    effects([
                        route_nowhere(),
                        terminate(1),
                        schedule(Drain(1), 5 * S),
                        changed(is_minting(2, Cause::User)),
                        mint(2),
                    ]),
                    at(0, minted(2)),
                    at(0, begin(2, "s2", 60)),
                    has([route_replaying(2, 1)]),
                ]),
            Row::new("user_reconnect_during_rotation_drops_the_successor")
                .given(streaming(60))
                .then([
                    fire(Rotate(1)),
                    at(31 * S, reconnect()),
                    effects([
                        drop_socket(2),
                        route_nowhere(),
                        terminate(1),
                        schedule(Drain(1), 36 * S),
                        changed(is_minting(3, Cause::User)),
                        mint(3),
                    ]),
                    at(31 * S, minted(3)),
                    at(31 * S, begin(3, "s3", 60)),
                    has([route_replaying(3, 1)]),
                ]),
        ]
    }

    #[test]
    fn scenarios() {
        let rows = rows();
        let mut names = HashSet::new();
        for row in &rows {
            assert!(names.insert(row.name), "two rows are named {}", row.name);
        }
        let failures: Vec<String> = rows.iter().filter_map(|row| row.run().err()).collect();
        assert!(
            failures.is_empty(),
            "{} of {} rows failed:\n\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n\n")
        );
    }

    /// The table can fail, and says where: a wrong expectation fails its row at its step.
    #[test]
    fn a_wrong_expectation_names_its_row_and_step() {
        let row = Row::new("wrong")
            .given(streaming(60))
            .then([at(0, stop()), view(is_stopped())]);
        let err = row.run().expect_err("the view is Draining, not Stopped");
        assert!(
            err.starts_with("row `wrong`, step 1 ") && err.contains("Draining"),
            "{err}"
        );
        let row = Row::new("never").then([fire(Drain(1))]);
        let err = row.run().expect_err("no Drain timer was scheduled");
        assert!(err.contains("never scheduled"), "{err}");
    }
}
