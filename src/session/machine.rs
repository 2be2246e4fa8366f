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
    /// A session that streamed this long (or produced a final turn) resets the backoff.
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
pub struct Machine {
    cfg: MachineConfig,
    state: State,
    next_gen: Gen,
    /// Consecutive failed attempts (reset by a healthy session).
    attempt: u32,
    /// A rejected token gets one fresh retry; reset by a Begin.
    token_retry_used: bool,
    /// The generation whose buffered audio must be replayed into the next session.
    replay_from: Option<Gen>,
    /// xorshift state for backoff jitter (deterministic per seed).
    rng: u64,
    /// The audio currently sent is silent (see [`Input::Quiet`]).
    quiet: bool,
}

impl Machine {
    pub fn new(cfg: MachineConfig, seed: u64) -> Self {
        Self {
            cfg,
            state: State::Idle,
            next_gen: 1,
            attempt: 0,
            token_retry_used: false,
            replay_from: None,
            rng: seed | 1,
            quiet: true,
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
        self.state = state;
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
            Input::Stop => self.stop(now, &mut out),
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
        }
        out
    }

    fn start(&mut self, out: &mut Vec<Effect>) {
        if matches!(
            self.state,
            State::Idle | State::Stopped | State::Failed { .. }
        ) {
            self.attempt = 0;
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
        out.push(Effect::Route {
            to: None,
            replay_from: None,
        });
        out.push(Effect::Terminate { generation });
        out.push(Effect::Schedule {
            timer: Timer::Drain(generation),
            at: now + self.cfg.drain_timeout,
        });
        self.set(State::Draining { generation }, out);
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
            out.push(Effect::Route {
                to: None,
                replay_from: None,
            });
            out.push(Effect::Terminate { generation });
            out.push(Effect::Schedule {
                timer: Timer::Drain(generation),
                at: now + self.cfg.drain_timeout,
            });
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
        if !class.retryable() && class != CloseClass::Normal {
            self.set(
                State::Failed {
                    class,
                    reason: format!("{reason} ({}; {})", class.describe(), class.advice()),
                },
                out,
            );
            return;
        }
        self.attempt += 1;
        if self.attempt == 1 && class == CloseClass::Transient {
            // The first loss after a healthy stretch is most likely a blip: reconnect at once
            // (the replay covers the gap). Back off only if it keeps failing.
            self.mint(Cause::Dropped, out);
            return;
        }
        let unit = self.random_unit();
        let delay = if class == CloseClass::RateLimited {
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
                live.turn_open = !end_of_turn;
                if end_of_turn {
                    self.attempt = 0;
                }
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
        out.push(Effect::Route {
            to: Some(new.generation),
            replay_from: None,
        });
        out.push(Effect::Terminate {
            generation: old.generation,
        });
        out.push(Effect::Schedule {
            timer: Timer::Drain(old.generation),
            at: now + self.cfg.drain_timeout,
        });
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
            State::Draining { generation: g } if g == generation => self.set(State::Stopped, out),
            State::Connecting { generation: g, .. } if g == generation => {
                out.push(Effect::Notice(Notice::Lost {
                    generation,
                    class: closed.class,
                    code: closed.code,
                    reason: closed.reason.clone(),
                }));
                self.after_loss(now, closed, out);
            }
            State::Streaming(live) if live.generation == generation => {
                out.push(Effect::Route {
                    to: None,
                    replay_from: None,
                });
                out.push(Effect::Notice(Notice::Lost {
                    generation,
                    class: closed.class,
                    code: closed.code,
                    reason: closed.reason.clone(),
                }));
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
                    out.push(Effect::Notice(Notice::Lost {
                        generation,
                        class: closed.class,
                        code: closed.code,
                        reason: closed.reason.clone(),
                    }));
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
            class => self.fail_or_back_off(now, class, &describe_close(closed), None, out),
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
                    self.set(State::Stopped, out);
                } else {
                    // A retired generation (after a rotation or a user reconnect).
                    out.push(Effect::Drop { generation });
                }
            }
            Timer::Healthy(generation) => {
                if matches!(&self.state, State::Streaming(live) if live.generation == generation) {
                    self.attempt = 0;
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
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn machine(rotation: bool) -> Machine {
        Machine::new(
            MachineConfig {
                rotation,
                ..MachineConfig::default()
            },
            42,
        )
    }

    fn closed(code: Option<u16>, reason: &str, error: Option<&str>, after_begin: bool) -> Closed {
        Closed {
            code,
            reason: reason.into(),
            class: crate::protocol::classify(code, reason, error),
            after_begin,
        }
    }

    fn views(effects: &[Effect]) -> Vec<View> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Changed(v) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    fn has(effects: &[Effect], wanted: &Effect) -> bool {
        effects.contains(wanted)
    }

    fn begin(generation: Gen, id: &str, expires_in: Duration) -> Input {
        Input::Begin {
            generation,
            session_id: id.into(),
            expires_in,
        }
    }

    /// Drive a fresh machine to Streaming on generation 1.
    fn streaming(m: &mut Machine, t0: Instant, expires_in: Duration) {
        assert_eq!(
            m.handle(t0, Input::Start)[1],
            Effect::Mint { generation: 1 }
        );
        let fx = m.handle(t0, Input::TokenMinted { generation: 1 });
        assert!(has(&fx, &Effect::Connect { generation: 1 }));
        let fx = m.handle(t0, begin(1, "s1", expires_in));
        assert!(has(
            &fx,
            &Effect::Route {
                to: Some(1),
                replay_from: None
            }
        ));
        assert_eq!(
            m.view(),
            View::Streaming {
                generation: 1,
                session_id: "s1".into()
            }
        );
    }

    #[test]
    fn start_mint_connect_begin_stream() {
        let t0 = Instant::now();
        let mut m = machine(true);
        let fx = m.handle(t0, Input::Start);
        assert_eq!(
            views(&fx),
            [View::Minting {
                generation: 1,
                cause: Cause::Start
            }]
        );
        let fx = m.handle(t0, Input::TokenMinted { generation: 1 });
        assert!(has(
            &fx,
            &Effect::Schedule {
                timer: Timer::BeginTimeout(1),
                at: t0 + 10 * S
            }
        ));
        let fx = m.handle(t0, begin(1, "s1", 60 * S));
        // Rotation prepared 30 s before expiry.
        assert!(has(
            &fx,
            &Effect::Schedule {
                timer: Timer::Rotate(1),
                at: t0 + 30 * S
            }
        ));
        assert!(has(&fx, &Effect::PrepareToken { by: t0 + 30 * S }));
    }

    #[test]
    fn stop_terminates_and_waits_bounded() {
        let t0 = Instant::now();
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        let fx = m.handle(t0, Input::Stop);
        assert!(has(&fx, &Effect::Terminate { generation: 1 }));
        assert_eq!(views(&fx), [View::Draining { generation: 1 }]);
        // Termination ends it...
        let fx = m.handle(t0, Input::Termination { generation: 1 });
        assert_eq!(views(&fx), [View::Stopped]);
        assert!(m.is_done());

        // ...or the drain timeout does, with a notice.
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        m.handle(t0, Input::Stop);
        let fx = m.handle(t0 + 5 * S, Input::Timer(Timer::Drain(1)));
        assert!(has(&fx, &Effect::Drop { generation: 1 }));
        assert!(has(
            &fx,
            &Effect::Notice(Notice::DrainTimedOut { generation: 1 })
        ));
        assert_eq!(m.view(), View::Stopped);
    }

    #[test]
    fn planned_rotation_hands_over_at_end_of_turn() {
        let t0 = Instant::now();
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        m.handle(
            t0,
            Input::Turn {
                generation: 1,
                end_of_turn: false,
            },
        );
        let fx = m.handle(t0 + 30 * S, Input::Timer(Timer::Rotate(1)));
        assert!(has(&fx, &Effect::Mint { generation: 2 }));
        assert!(has(
            &fx,
            &Effect::Schedule {
                timer: Timer::HandoverDeadline(1),
                at: t0 + 52 * S
            }
        ));
        m.handle(t0 + 31 * S, Input::TokenMinted { generation: 2 });
        let fx = m.handle(t0 + 31 * S, begin(2, "s2", 60 * S));
        // A turn is open on the old session: wait for its end.
        assert!(!fx.iter().any(|e| matches!(e, Effect::Route { .. })));
        assert_eq!(
            m.view(),
            View::Rotating {
                old: 1,
                new: 2,
                new_ready: true
            }
        );
        let fx = m.handle(
            t0 + 33 * S,
            Input::Turn {
                generation: 1,
                end_of_turn: true,
            },
        );
        assert_eq!(
            fx[..3],
            [
                Effect::Route {
                    to: Some(2),
                    replay_from: None
                },
                Effect::Terminate { generation: 1 },
                Effect::Schedule {
                    timer: Timer::Drain(1),
                    at: t0 + 38 * S
                }
            ]
        );
        assert!(has(
            &fx,
            &Effect::Notice(Notice::Rotated {
                from: 1,
                to: 2,
                forced: false
            })
        ));
        assert_eq!(
            m.view(),
            View::Streaming {
                generation: 2,
                session_id: "s2".into()
            }
        );
        // The retired session's close and Termination do not disturb the new one.
        assert!(
            m.handle(t0 + 34 * S, Input::Termination { generation: 1 })
                .is_empty()
        );
        let fx = m.handle(
            t0 + 34 * S,
            Input::Closed {
                generation: 1,
                closed: closed(Some(1000), "", None, true),
            },
        );
        assert!(fx.is_empty());
        // The drain timer only drops the retired socket.
        assert_eq!(
            m.handle(t0 + 38 * S, Input::Timer(Timer::Drain(1))),
            [Effect::Drop { generation: 1 }]
        );
    }

    #[test]
    fn hand_over_waits_for_silent_audio() {
        let t0 = Instant::now();
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        m.handle(t0, Input::Quiet(false));
        m.handle(t0 + 30 * S, Input::Timer(Timer::Rotate(1)));
        m.handle(t0 + 30 * S, Input::TokenMinted { generation: 2 });
        // No turn reported yet, but voice is being sent: wait.
        let fx = m.handle(t0 + 31 * S, begin(2, "s2", 60 * S));
        assert!(!fx.iter().any(|e| matches!(e, Effect::Route { .. })));
        let fx = m.handle(t0 + 32 * S, Input::Quiet(true));
        assert!(has(
            &fx,
            &Effect::Route {
                to: Some(2),
                replay_from: None
            }
        ));
    }

    #[test]
    fn rotation_is_immediate_in_silence_and_forced_near_the_deadline() {
        let t0 = Instant::now();
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        m.handle(t0 + 30 * S, Input::Timer(Timer::Rotate(1)));
        m.handle(t0 + 30 * S, Input::TokenMinted { generation: 2 });
        let fx = m.handle(t0 + 31 * S, begin(2, "s2", 60 * S));
        assert!(has(
            &fx,
            &Effect::Route {
                to: Some(2),
                replay_from: None
            }
        ));

        // A speaker who never pauses: forced endpoint at the deadline, handover after grace.
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        m.handle(
            t0,
            Input::Turn {
                generation: 1,
                end_of_turn: false,
            },
        );
        m.handle(t0 + 30 * S, Input::Timer(Timer::Rotate(1)));
        m.handle(t0 + 30 * S, Input::TokenMinted { generation: 2 });
        m.handle(t0 + 31 * S, begin(2, "s2", 60 * S));
        let fx = m.handle(t0 + 52 * S, Input::Timer(Timer::HandoverDeadline(1)));
        assert!(has(&fx, &Effect::ForceEndpoint { generation: 1 }));
        let fx = m.handle(t0 + 53 * S + S / 2, Input::Timer(Timer::HandoverGrace(1)));
        assert!(has(
            &fx,
            &Effect::Notice(Notice::Rotated {
                from: 1,
                to: 2,
                forced: true
            })
        ));
    }

    #[test]
    fn expiry_without_rotation_remints_and_replays() {
        let t0 = Instant::now();
        let mut m = machine(false);
        streaming(&mut m, t0, 60 * S);
        let expired = closed(
            Some(3008),
            "Session Expired: Maximum session duration exceeded",
            None,
            true,
        );
        let fx = m.handle(
            t0 + 60 * S,
            Input::Closed {
                generation: 1,
                closed: expired,
            },
        );
        assert!(has(&fx, &Effect::Mint { generation: 2 }));
        assert_eq!(
            m.view(),
            View::Minting {
                generation: 2,
                cause: Cause::Expired
            }
        );
        m.handle(t0 + 60 * S, Input::TokenMinted { generation: 2 });
        let fx = m.handle(t0 + 60 * S, begin(2, "s2", 60 * S));
        assert!(has(
            &fx,
            &Effect::Route {
                to: Some(2),
                replay_from: Some(1)
            }
        ));
    }

    #[test]
    fn transient_losses_back_off_with_jitter_and_reset_when_healthy() {
        let t0 = Instant::now();
        let mut m = machine(true);
        streaming(&mut m, t0, 3600 * S);
        // The first drop after a healthy session reconnects at once.
        let fx = m.handle(
            t0,
            Input::Closed {
                generation: 1,
                closed: closed(None, "", None, true),
            },
        );
        assert!(has(&fx, &Effect::Mint { generation: 2 }));
        assert!(!fx.iter().any(|e| matches!(e, Effect::Schedule { .. })));
        // It fails again: now a jittered backoff, at most 1 s (the ceiling of attempt 2).
        let fx = m.handle(
            t0,
            Input::TokenFailed {
                generation: 2,
                failure: Failure {
                    class: CloseClass::Transient,
                    message: "connection refused".into(),
                    retry_after: None,
                },
            },
        );
        let Some(Effect::Schedule {
            timer: Timer::BackoffDone(2),
            at,
        }) = fx
            .iter()
            .find(|e| matches!(e, Effect::Schedule { .. }))
            .cloned()
        else {
            panic!("backoff scheduled: {fx:?}")
        };
        assert!(at >= t0 && at <= t0 + S);
        assert!(matches!(m.view(), View::Backoff { attempt: 2, .. }));
        let fx = m.handle(at, Input::Timer(Timer::BackoffDone(2)));
        assert!(has(&fx, &Effect::Mint { generation: 3 }));
        m.handle(at, Input::TokenMinted { generation: 3 });
        m.handle(at, begin(3, "s3", 3600 * S));
        m.handle(at + 31 * S, Input::Timer(Timer::Healthy(3)));
        assert_eq!(m.attempt, 0, "a healthy session resets the backoff");
    }

    #[test]
    fn token_rejected_is_retried_once() {
        let t0 = Instant::now();
        let mut m = machine(true);
        m.handle(t0, Input::Start);
        m.handle(t0, Input::TokenMinted { generation: 1 });
        let rejected = closed(
            Some(1008),
            "Unauthorized Connection: Temporary token expired",
            None,
            false,
        );
        let fx = m.handle(
            t0,
            Input::Closed {
                generation: 1,
                closed: rejected.clone(),
            },
        );
        assert!(has(
            &fx,
            &Effect::Notice(Notice::RetryingToken { generation: 2 })
        ));
        assert!(has(&fx, &Effect::Mint { generation: 2 }));
        m.handle(t0, Input::TokenMinted { generation: 2 });
        m.handle(
            t0,
            Input::Closed {
                generation: 2,
                closed: rejected,
            },
        );
        assert!(matches!(
            m.view(),
            View::Failed {
                class: CloseClass::TokenRejected,
                ..
            }
        ));
    }

    #[test]
    fn fatal_and_client_bugs_fail_with_advice() {
        let t0 = Instant::now();
        for (code, reason, class) in [
            (
                1008,
                "Unauthorized Connection: Missing Authorization header",
                CloseClass::Fatal,
            ),
            (
                3007,
                "Input duration violation: 20 ms. Expected between 50 and 1000 ms",
                CloseClass::ClientBug,
            ),
            (3006, "Invalid JSON: {", CloseClass::ClientBug),
            (1009, "Message too big", CloseClass::ClientBug),
        ] {
            let mut m = machine(true);
            streaming(&mut m, t0, 60 * S);
            m.handle(
                t0,
                Input::Closed {
                    generation: 1,
                    closed: closed(Some(code), reason, None, true),
                },
            );
            let View::Failed {
                class: got,
                reason: text,
            } = m.view()
            else {
                panic!("{code}")
            };
            assert_eq!(got, class);
            assert!(
                text.contains(reason) && text.contains("not retrying"),
                "{text}"
            );
            assert!(m.is_done());
        }
    }

    #[test]
    fn rate_limit_waits_a_minute() {
        let t0 = Instant::now();
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        let limited = closed(
            Some(3009),
            "Unauthorized Connection: Too many concurrent sessions",
            None,
            true,
        );
        let fx = m.handle(
            t0,
            Input::Closed {
                generation: 1,
                closed: limited,
            },
        );
        let at = fx
            .iter()
            .find_map(|e| match e {
                Effect::Schedule {
                    timer: Timer::BackoffDone(_),
                    at,
                } => Some(*at),
                _ => None,
            })
            .expect("scheduled");
        assert!(at >= t0 + 60 * S && at <= t0 + 75 * S);
    }

    #[test]
    fn no_begin_in_time_or_close_before_begin_is_handled() {
        let t0 = Instant::now();
        let mut m = machine(true);
        m.handle(t0, Input::Start);
        m.handle(t0, Input::TokenMinted { generation: 1 });
        let fx = m.handle(t0 + 10 * S, Input::Timer(Timer::BeginTimeout(1)));
        assert!(has(&fx, &Effect::Drop { generation: 1 }));
        assert!(
            has(&fx, &Effect::Mint { generation: 2 }),
            "first failure: at once"
        );
        // A stale timer for an old generation does nothing.
        assert!(
            m.handle(t0 + 11 * S, Input::Timer(Timer::BeginTimeout(1)))
                .is_empty()
        );

        let mut m = machine(true);
        m.handle(t0, Input::Start);
        m.handle(t0, Input::TokenMinted { generation: 1 });
        m.handle(
            t0,
            Input::Closed {
                generation: 1,
                closed: closed(Some(1011), "", None, false),
            },
        );
        m.handle(t0, Input::TokenMinted { generation: 2 });
        m.handle(
            t0,
            Input::Closed {
                generation: 2,
                closed: closed(Some(1011), "", None, false),
            },
        );
        assert!(matches!(m.view(), View::Backoff { attempt: 2, .. }));
    }

    #[test]
    fn old_session_lost_during_rotation_switches_with_replay() {
        let t0 = Instant::now();
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        m.handle(
            t0,
            Input::Turn {
                generation: 1,
                end_of_turn: false,
            },
        );
        m.handle(t0 + 30 * S, Input::Timer(Timer::Rotate(1)));
        m.handle(t0 + 30 * S, Input::TokenMinted { generation: 2 });
        m.handle(t0 + 31 * S, begin(2, "s2", 60 * S));
        let fx = m.handle(
            t0 + 32 * S,
            Input::Closed {
                generation: 1,
                closed: closed(None, "", None, true),
            },
        );
        assert!(has(
            &fx,
            &Effect::Route {
                to: Some(2),
                replay_from: Some(1)
            }
        ));
        assert_eq!(
            m.view(),
            View::Streaming {
                generation: 2,
                session_id: "s2".into()
            }
        );
    }

    #[test]
    fn old_session_lost_while_the_successor_mints_carries_on_minting() {
        let t0 = Instant::now();
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        m.handle(t0 + 30 * S, Input::Timer(Timer::Rotate(1)));
        let lost = closed(None, "", None, true);
        m.handle(
            t0 + 31 * S,
            Input::Closed {
                generation: 1,
                closed: lost,
            },
        );
        assert_eq!(
            m.view(),
            View::Minting {
                generation: 2,
                cause: Cause::Expired
            }
        );
        // The token arrives: connect, then Begin routes with a replay of what 1 did not finalize.
        let fx = m.handle(t0 + 32 * S, Input::TokenMinted { generation: 2 });
        assert!(has(&fx, &Effect::Connect { generation: 2 }));
        let fx = m.handle(t0 + 32 * S, begin(2, "s2", 60 * S));
        assert!(has(
            &fx,
            &Effect::Route {
                to: Some(2),
                replay_from: Some(1)
            }
        ));
    }

    #[test]
    fn a_successor_ready_after_the_deadline_is_handed_over_at_once() {
        let t0 = Instant::now();
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        m.handle(
            t0,
            Input::Turn {
                generation: 1,
                end_of_turn: false,
            },
        );
        m.handle(t0 + 30 * S, Input::Timer(Timer::Rotate(1)));
        assert!(
            m.handle(t0 + 52 * S, Input::Timer(Timer::HandoverDeadline(1)))
                .iter()
                .all(|e| !matches!(e, Effect::ForceEndpoint { .. }))
        );
        m.handle(t0 + 55 * S, Input::TokenMinted { generation: 2 });
        let fx = m.handle(t0 + 55 * S, begin(2, "s2", 60 * S));
        assert!(has(&fx, &Effect::ForceEndpoint { generation: 1 }));
        assert!(has(
            &fx,
            &Effect::Schedule {
                timer: Timer::HandoverGrace(1),
                at: t0 + 55 * S + S + S / 2
            }
        ));
    }

    #[test]
    fn successor_failure_keeps_the_live_session() {
        let t0 = Instant::now();
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        m.handle(t0 + 30 * S, Input::Timer(Timer::Rotate(1)));
        let failure = Failure {
            class: CloseClass::Transient,
            message: "timeout".into(),
            retry_after: None,
        };
        m.handle(
            t0 + 30 * S,
            Input::TokenFailed {
                generation: 2,
                failure,
            },
        );
        assert_eq!(
            m.view(),
            View::Streaming {
                generation: 1,
                session_id: "s1".into()
            }
        );
    }

    #[test]
    fn user_reconnect_breaks_and_replays() {
        let t0 = Instant::now();
        let mut m = machine(true);
        streaming(&mut m, t0, 60 * S);
        let fx = m.handle(t0, Input::Reconnect);
        assert!(has(&fx, &Effect::Terminate { generation: 1 }));
        assert!(has(
            &fx,
            &Effect::Schedule {
                timer: Timer::Drain(1),
                at: t0 + 5 * S
            }
        ));
        assert!(has(&fx, &Effect::Mint { generation: 2 }));
        m.handle(t0, Input::TokenMinted { generation: 2 });
        let fx = m.handle(t0, begin(2, "s2", 60 * S));
        assert!(has(
            &fx,
            &Effect::Route {
                to: Some(2),
                replay_from: Some(1)
            }
        ));
    }
}
