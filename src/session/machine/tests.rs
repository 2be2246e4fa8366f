//! The machine's scenarios as one table (in the spirit of trippy's state scenario files):
//! each [`Row`] is a name, config tweaks, and steps — inputs at instants after t0 (each with the
//! jitter draw it comes with), and expectations about the effects of the input just fed or the
//! state after it. A new path or close class is one more row in [`rows`]; [`scenarios`] plays
//! them all and names every failing row and step.
//!
//! Times are milliseconds after t0 (`30 * S`). Effects are matched exactly where the order is
//! the point (`effects`), or by inclusion (`has`) / kind (`lacks`) where the rest is noise; a
//! backoff view matches by attempt and class where the jitter is not the point, a failure by
//! class and troubleshooting section.
//!
//! The browser client's machine is held to the same rows: [`fixtures_are_current`] exports
//! every row to tests/fixtures/machine-rows.json (inputs, draws and expectations as data), and
//! tests/web/machine.test.mjs plays them against assets/web/aai-live-machine.js under Node.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::*;
use crate::provider::ProviderError;
use Timer::{BackoffDone, BeginTimeout, Drain, HandoverDeadline, HandoverGrace, Healthy, Rotate};

/// One second, in the table's milliseconds.
const S: u64 = 1000;
/// The jitter draw of an input that does not name one.
const DRAW: f64 = 0.5;

/// A scenario: a name, config tweaks, the steps that set it up and the steps it is about.
struct Row {
    name: &'static str,
    tweak: fn(&mut MachineConfig),
    given: Vec<Step>,
    then: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    /// Feed an input at an instant, with a jitter draw.
    Input(When, Input, f64),
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
    /// A failure of this class, explained in this section.
    Failed {
        class: CloseClass,
        explain: &'static str,
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

    fn name(self) -> &'static str {
        match self {
            Self::Mint => "mint",
            Self::Connect => "connect",
            Self::Route => "route",
            Self::Terminate => "terminate",
            Self::ForceEndpoint => "force_endpoint",
            Self::Drop => "drop",
            Self::Schedule => "schedule",
            Self::PrepareToken => "prepare_token",
            Self::Changed => "changed",
            Self::Notice => "notice",
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
            (Self::PrepareToken(by), Effect::PrepareToken { by: at }) => *by == ms_after(t0, *at),
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
            (Self::Failed { class, explain }, View::Failed(failure)) => {
                *class == failure.class && *explain == failure.explain()
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
            Self::Has(want) => match want.iter().find(|w| !fx.iter().any(|e| w.matches(e, t0))) {
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
            Self::Attempts(n) if m.attempt != *n => Err(format!("{} attempts, not {n}", m.attempt)),
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

    /// More steps after these.
    fn and(mut self, more: impl IntoIterator<Item = Step>) -> Self {
        self.then.extend(more);
        self
    }

    fn machine_config(&self) -> MachineConfig {
        let mut cfg = MachineConfig::default();
        (self.tweak)(&mut cfg);
        cfg
    }

    /// Play the row on a fresh machine; `Err` names the row and the first step that failed.
    fn run(&self) -> Result<(), String> {
        let mut m = Machine::new(self.machine_config());
        let t0 = Instant::now();
        let mut now = t0;
        let mut last: Vec<Effect> = Vec::new();
        let mut scheduled: HashMap<Timer, Instant> = HashMap::new();
        for (i, step) in self.given.iter().chain(&self.then).enumerate() {
            let checked = match step {
                Step::Input(when, input, draw) => {
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
                        last = m.handle(now, input.clone(), *draw);
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
    Step::Input(When::At(ms), input, DRAW)
}

fn after(ms: u64, input: Input) -> Step {
    Step::Input(When::After(ms), input, DRAW)
}

/// The timer fires when the machine scheduled it.
fn fire(timer: Timer) -> Step {
    Step::Input(When::Scheduled(timer), Input::Timer(timer), DRAW)
}

/// `step` with another jitter draw.
fn drawing(draw: f64, step: Step) -> Step {
    match step {
        Step::Input(when, input, _) => Step::Input(when, input, draw),
        expect @ Step::Expect(_) => expect,
    }
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

fn peer_minted() -> Input {
    Input::PeerMinted
}

fn minted(generation: Gen) -> Input {
    Input::TokenMinted { generation }
}

/// A token provider's failure with this class (an HTTP 500, a 429, a 401...), as the supervisor
/// builds it.
fn token_failure(class: CloseClass) -> Failure {
    let location = "GET http://127.0.0.1:9/v3/token".to_owned();
    let error = match class {
        CloseClass::RateLimited => ProviderError::RateLimited {
            provider: "api-key",
            location,
            status: 429,
            retry_after: None,
            detail: "HTTP 429".into(),
        },
        CloseClass::Fatal => ProviderError::Rejected {
            provider: "api-key",
            location,
            status: Some(401),
            detail: "HTTP 401 Unauthorized".into(),
        },
        _ => ProviderError::Transient {
            provider: "api-key",
            location,
            status: Some(500),
            network: None,
            retry_after: None,
            detail: "HTTP 500 Internal Server Error".into(),
        },
    };
    Failure::token(&error)
}

fn token_failed(generation: Gen, class: CloseClass) -> Input {
    Input::TokenFailed {
        generation,
        failure: token_failure(class),
    }
}

fn begin(generation: Gen, session_id: &str, granted_secs: u64) -> Input {
    begin_ms(generation, session_id, granted_secs * S)
}

fn begin_ms(generation: Gen, session_id: &str, granted_ms: u64) -> Input {
    Input::Begin {
        generation,
        session_id: session_id.into(),
        granted: Duration::from_millis(granted_ms),
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
    Input::Fail(Failure::input(reason))
}

/// A timer at an instant of the row's choosing (a stale one, say).
fn timer(timer: Timer) -> Input {
    Input::Timer(timer)
}

/// A close as the client sees it (the close table's verdict).
fn close(generation: Gen, code: Option<u16>, reason: &str, after_begin: bool) -> Input {
    Input::Closed {
        generation,
        closed: Closed {
            failure: Failure::close(code, reason, None, after_begin),
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

fn lost_with(generation: Gen, failure: Failure) -> Fx {
    Fx::Is(Effect::Notice(Notice::Lost {
        generation,
        failure,
    }))
}

fn drain_timed_out(generation: Gen) -> Fx {
    Fx::Is(Effect::Notice(Notice::DrainTimedOut { generation }))
}

fn retrying_token(generation: Gen) -> Fx {
    Fx::Is(Effect::Notice(Notice::RetryingToken { generation }))
}

fn mint_budget_spent(wait_ms: u64) -> Fx {
    Fx::Is(Effect::Notice(Notice::MintBudget {
        mints: 6,
        window: Duration::from_secs(60),
        wait: Duration::from_millis(wait_ms),
    }))
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

fn is_failed(class: CloseClass, explain: &'static str) -> V {
    V::Failed { class, explain }
}

/// Start and stream on generation 1 (session "s1", granted `granted_secs`) at t0.
fn streaming(granted_secs: u64) -> Vec<Step> {
    vec![
        at(0, start()),
        effects([changed(is_minting(1, Cause::Start)), mint(1)]),
        at(0, minted(1)),
        has([connect(1)]),
        at(0, begin(1, "s1", granted_secs)),
        has([route(1)]),
        view(is_streaming(1, "s1")),
    ]
}

/// Streaming on connection 1 for `healthy_after` (30 s): its loss reconnects at once.
fn healthy_streaming(granted_secs: u64) -> Vec<Step> {
    let mut steps = streaming(granted_secs);
    steps.push(fire(Healthy(1)));
    steps
}

/// `Begin` on `generation` at `healthy - 30 s`: audio goes to it, it is healthy at `healthy`, and
/// its successor is prepared and due at `rotate` (ms).
fn streams(generation: Gen, session_id: &str, healthy: u64, rotate: u64) -> Step {
    effects([
        route(generation),
        schedule(Healthy(generation), healthy),
        prepare_token(rotate),
        schedule(Rotate(generation), rotate),
        changed(is_streaming(generation, session_id)),
    ])
}

/// The successor `generation` gets its token and `Begin` (60 s), and is fed what `from` had not
/// finalized.
fn replayed_into(generation: Gen, from: Gen) -> [Step; 3] {
    [
        after(0, minted(generation)),
        after(0, begin(generation, &format!("s{generation}"), 60)),
        has([route_replaying(generation, from)]),
    ]
}

/// The effects of a stop (or a finish, a local failure) while streaming on `generation`: no more
/// audio to it, `Terminate`, the drain bounded at `until` ms.
fn drains(generation: Gen, until: u64) -> Step {
    effects([
        route_nowhere(),
        terminate(generation),
        schedule(Drain(generation), until),
        changed(is_draining(generation)),
    ])
}

/// A close that a retry cannot cure: the machine fails, and says where it is explained.
fn fails_with_advice(
    name: &'static str,
    code: u16,
    reason: &'static str,
    class: CloseClass,
    explain: &'static str,
) -> Row {
    Row::new(name).given(streaming(60)).then([
        at(0, closes(1, code, reason)),
        view(is_failed(class, explain)),
        done(),
    ])
}

#[expect(clippy::too_many_lines, reason = "the table: one row per scenario")]
fn rows() -> Vec<Row> {
    let mut rows = vec![
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
            streams(1, "s1", 30 * S, 30 * S),
        ]),
        Row::new("stop_terminates_and_termination_ends_it")
            .given(streaming(60))
            .then([
                at(0, stop()),
                drains(1, 5 * S),
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
                drains(1, 5 * S),
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
                has([route_replaying(2, 1)]),
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
                    lost_with(1, Failure::close(Some(3008), "Session expired", None, true)),
                    changed(is_minting(2, Cause::Expired)),
                    mint(2),
                ]),
            ])
            .and(replayed_into(2, 1)),
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
                has([mint(2), schedule(HandoverDeadline(1), 49 * S)]),
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
                    schedule(HandoverGrace(1), 50 * S + S / 2),
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
                at(30 * S, token_failed(2, CloseClass::Transient)),
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
                    lost_with(1, Failure::close(None, "", None, true)),
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
                    lost_with(1, Failure::close(None, "", None, true)),
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
                    lost_with(
                        1,
                        Failure::close(
                            Some(3008),
                            "Session Expired: Maximum session duration exceeded",
                            None,
                            true,
                        ),
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
                    lost_with(1, Failure::close(None, "", None, true)),
                    changed(is_minting(2, Cause::Dropped)),
                    mint(2),
                ]),
                // It fails again: now a jittered backoff, at most 0.5 s (the ceiling of
                // attempt 1)...
                after(0, token_failed(2, CloseClass::Transient)),
                effects([
                    changed(is_backoff(1, CloseClass::Transient)),
                    schedule_within(BackoffDone(1), 30 * S, 30 * S + S / 2),
                ]),
                fire(BackoffDone(1)),
                has([mint(3)]),
                // ...and again: at most 1 s (attempt 2).
                after(0, token_failed(3, CloseClass::Transient)),
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
                closes_before_begin(1, 1008, "Unauthorized Connection: Temporary token expired"),
            ),
            effects([
                lost_with(
                    1,
                    Failure::close(
                        Some(1008),
                        "Unauthorized Connection: Temporary token expired",
                        None,
                        false,
                    ),
                ),
                retrying_token(2),
                changed(is_minting(2, Cause::TokenRejected)),
                mint(2),
            ]),
            at(0, minted(2)),
            at(
                0,
                closes_before_begin(2, 1008, "Unauthorized Connection: Temporary token expired"),
            ),
            view(is_failed(CloseClass::TokenRejected, "1008-token-expired")),
        ]),
        fails_with_advice(
            "fatal_and_client_bugs_fail_with_advice: missing authorization",
            1008,
            "Unauthorized Connection: Missing Authorization header",
            CloseClass::Fatal,
            "1008-missing-auth",
        ),
        fails_with_advice(
            "fatal_and_client_bugs_fail_with_advice: input duration",
            3007,
            "Input duration violation: 20 ms. Expected between 50 and 1000 ms",
            CloseClass::ClientBug,
            "3007",
        ),
        fails_with_advice(
            "fatal_and_client_bugs_fail_with_advice: invalid json",
            3006,
            "Invalid JSON: {",
            CloseClass::ClientBug,
            "3006-invalid-message",
        ),
        fails_with_advice(
            "fatal_and_client_bugs_fail_with_advice: message too big",
            1009,
            "Message too big",
            CloseClass::ClientBug,
            "1009",
        ),
        Row::new("a_token_refused_for_good_fails_with_advice").then([
            at(0, start()),
            at(0, token_failed(1, CloseClass::Fatal)),
            view(is_failed(CloseClass::Fatal, "token-401")),
            done(),
        ]),
        Row::new("a_healthy_session_closed_normally_unasked_reconnects_at_once")
            .given(healthy_streaming(60))
            .then([
                after(0, closes(1, 1000, "")),
                effects([
                    route_nowhere(),
                    lost_with(1, Failure::close(Some(1000), "", None, true)),
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
                lost_with(1, Failure::silent(NO_BEGIN, Diagnosis::NoBegin)),
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
                at(S, fails_locally("the microphone went away")),
                drains(1, 6 * S),
                // The last turns still come; then the run ends failed, never stopped.
                at(2 * S, termination(1)),
                changes([is_failed(CloseClass::Local, "local")]),
                done(),
            ]),
        Row::new("a_local_failure_while_minting_fails_at_once").then([
            at(0, start()),
            at(S, fails_locally("the audio input stopped unexpectedly")),
            view(is_failed(CloseClass::Local, "local")),
            done(),
            // A late token changes nothing.
            at(2 * S, minted(1)),
            nothing(),
        ]),
        Row::new("a_token_failure_at_start_backs_off_from_the_first_failure").then([
            at(0, start()),
            at(0, token_failed(1, CloseClass::Transient)),
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
                has([lost_with(1, Failure::close(Some(1000), "", None, true))]),
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
            ])
            .and(replayed_into(2, 1)),
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
    ];
    rows.extend(rotation_rule_rows());
    rows.extend(mint_budget_rows());
    rows
}

/// The rotation rule: never before half the granted length, the lead and the margin derived
/// from it.
fn rotation_rule_rows() -> Vec<Row> {
    vec![
        Row::new("a_session_shorter_than_the_lead_rotates_at_half_its_length").then([
            at(0, start()),
            at(0, minted(1)),
            // 20 s granted, 30 s lead: the lead is 10 s, so the successor is prepared at 10 s
            // (not at once, as `expires_at - lead` would say), and the hand-over is forced a
            // third of the lead before the planned end (19 s - 3.3 s).
            at(0, begin(1, "s1", 20)),
            streams(1, "s1", 30 * S, 10 * S),
            fire(Rotate(1)),
            has([
                mint(2),
                schedule_within(HandoverDeadline(1), 15_666, 15_667),
            ]),
            at(10_500, minted(2)),
            at(10_500, begin(2, "s2", 20)),
            has([
                rotated(1, 2),
                prepare_token(20_500),
                schedule(Rotate(2), 20_500),
            ]),
        ]),
        Row::new("a_one_second_session_is_still_rotated_at_half_its_length").then([
            at(0, start()),
            at(0, minted(1)),
            at(0, begin(1, "s1", 1)),
            has([prepare_token(500), schedule(Rotate(1), 500)]),
        ]),
        Row::new("a_long_session_keeps_the_configured_lead")
            .given(streaming(3600))
            .then([
                // 3600 s less the second of rounding safety, less the 30 s lead.
                fire(Rotate(1)),
                has([mint(2), schedule(HandoverDeadline(1), 3589 * S)]),
            ]),
        Row::new("a_raised_lead_is_capped_at_half_of_a_short_grant")
            .config(|c| c.rotation_lead = Duration::from_secs(300))
            .then([
                at(0, start()),
                at(0, minted(1)),
                at(0, begin(1, "s1", 120)),
                has([prepare_token(60 * S), schedule(Rotate(1), 60 * S)]),
            ]),
        Row::new("short_forced_hand_overs_fit_before_the_end")
            .given(streaming(6))
            .then([
                at(0, turn_opens(1)),
                fire(Rotate(1)),
                // 6 s granted, planned as 5 s: lead 3 s, margin 1 s, grace half the margin.
                has([schedule(HandoverDeadline(1), 4000)]),
                at(3100, minted(2)),
                at(3200, begin(2, "s2", 6)),
                fire(HandoverDeadline(1)),
                effects([force_endpoint(1), schedule(HandoverGrace(1), 4500)]),
                fire(HandoverGrace(1)),
                has([rotated_forced(1, 2)]),
            ]),
    ]
}

/// Minting is budgeted: a storm of quick failures pauses on a minute scale; sessions that last
/// (a planned rotation, a healthy stretch) start the budget over.
fn mint_budget_rows() -> Vec<Row> {
    // Six mints, each refused before `Begin` and backed off (full jitter at 0.5: 0.25, 0.5,
    // 1, 2, 4, 8 s), the seventh falls 15.75 s in.
    let mut storm = vec![at(0, start())];
    for generation in 1..=6 {
        storm.push(after(0, minted(generation)));
        storm.push(after(0, closes_before_begin(generation, 1011, "")));
        if generation < 6 {
            storm.push(fire(BackoffDone(u32::try_from(generation).expect("small"))));
            storm.push(has([mint(generation + 1)]));
        }
    }
    let mut rotations = streaming(2);
    for generation in 1..=40 {
        rotations.push(fire(Rotate(generation)));
        rotations.push(has([mint(generation + 1)]));
        rotations.push(after(100, minted(generation + 1)));
        rotations.push(after(0, begin(generation + 1, "s", 2)));
        rotations.push(has([rotated(generation, generation + 1)]));
    }
    vec![
        Row::new("seven_mints_in_a_minute_without_a_lasting_session_open_the_circuit")
            .given(storm)
            .then([
                view(is_backoff(6, CloseClass::Transient)),
                fire(BackoffDone(6)),
                // The seventh: no mint, a minute-scale wait (60 s + 25 % jitter at 0.5).
                effects([
                    mint_budget_spent(67_500),
                    changed(is_backoff(7, CloseClass::RateLimited)),
                    schedule(BackoffDone(7), 15_750 + 67_500),
                ]),
                lacks(Kind::Mint),
                // Once the window has passed, minting resumes.
                fire(BackoffDone(7)),
                has([mint(7)]),
            ]),
        // Meeting mode: the account's budget is shared; another stream's mints count too.
        Row::new("another_streams_mints_count_in_the_account_budget").then([
            at(0, start()),
            at(0, minted(1)),
            at(0, peer_minted()),
            at(0, peer_minted()),
            at(0, peer_minted()),
            at(0, peer_minted()),
            at(0, peer_minted()),
            at(0, closes_before_begin(1, 1011, "")),
            // One own mint and five of the other stream: the next is over the budget.
            fire(BackoffDone(1)),
            effects([
                mint_budget_spent(67_500),
                changed(is_backoff(2, CloseClass::RateLimited)),
                schedule(BackoffDone(2), 250 + 67_500),
            ]),
            lacks(Kind::Mint),
        ]),
        Row::new("planned_rotations_of_short_sessions_never_trip_the_budget")
            .given(rotations)
            .then([view(is_streaming(41, "s"))]),
        Row::new("the_backoff_jitter_is_the_draw_that_came_with_the_input").then([
            at(0, start()),
            drawing(0.0, at(0, token_failed(1, CloseClass::Transient))),
            has([schedule(BackoffDone(1), 0)]),
            fire(BackoffDone(1)),
            drawing(1.0, at(0, token_failed(2, CloseClass::Transient))),
            // Attempt 2's ceiling: 1 s.
            has([schedule(BackoffDone(2), 1000)]),
            drawing(0.25, fire(BackoffDone(2))),
            drawing(0.25, after(0, token_failed(3, CloseClass::RateLimited))),
            // A rate limit: the minute-scale floor plus a quarter of the draw's 25 %.
            has([schedule(BackoffDone(3), 1000 + 63_750)]),
        ]),
        Row::new("a_healthy_session_starts_the_budget_over")
            .config(|c| c.healthy_after = Duration::from_secs(5))
            .then([
                at(0, start()),
                at(0, minted(1)),
                at(0, closes_before_begin(1, 1011, "")),
                fire(BackoffDone(1)),
                after(0, minted(2)),
                after(0, closes_before_begin(2, 1011, "")),
                fire(BackoffDone(2)),
                after(0, minted(3)),
                after(0, closes_before_begin(3, 1011, "")),
                fire(BackoffDone(3)),
                after(0, minted(4)),
                after(0, closes_before_begin(4, 1011, "")),
                fire(BackoffDone(4)),
                after(0, minted(5)),
                after(0, begin(5, "s5", 3600)),
                fire(Healthy(5)),
                // Five mints so far, but a session lasted: the next ones are new budget.
                after(0, drops(5)),
                has([mint(6)]),
                after(0, minted(6)),
                after(0, closes_before_begin(6, 1011, "")),
                fire(BackoffDone(1)),
                has([mint(7)]),
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

// --- The fixtures: every row as data, for the browser client's machine ---------------------

/// The committed export of [`rows`].
const FIXTURES: &str = "tests/fixtures/machine-rows.json";

fn ms_json(d: Duration) -> Value {
    json!(d.as_millis() as u64)
}

fn timer_json(timer: Timer) -> Value {
    match timer {
        BeginTimeout(g) => json!({"kind": "begin_timeout", "generation": g}),
        Rotate(g) => json!({"kind": "rotate", "generation": g}),
        HandoverDeadline(g) => json!({"kind": "handover_deadline", "generation": g}),
        HandoverGrace(g) => json!({"kind": "handover_grace", "generation": g}),
        Drain(g) => json!({"kind": "drain", "generation": g}),
        Healthy(g) => json!({"kind": "healthy", "generation": g}),
        BackoffDone(a) => json!({"kind": "backoff_done", "attempt": a}),
    }
}

fn failure_json(failure: &Failure) -> Value {
    let mut v = serde_json::to_value(failure).expect("a failure serializes");
    if let Some(wait) = failure.retry_after {
        v["retry_after_ms"] = ms_json(wait);
    }
    v
}

fn input_json(input: &Input) -> Value {
    match input {
        Input::Start => json!({"kind": "start"}),
        Input::PeerMinted => json!({"kind": "peer_minted"}),
        Input::Stop => json!({"kind": "stop"}),
        Input::Reconnect => json!({"kind": "reconnect"}),
        Input::Finish => json!({"kind": "finish"}),
        Input::TokenMinted { generation } => {
            json!({"kind": "token_minted", "generation": generation})
        }
        Input::TokenFailed {
            generation,
            failure,
        } => {
            json!({"kind": "token_failed", "generation": generation, "failure": failure_json(failure)})
        }
        Input::Begin {
            generation,
            session_id,
            granted,
        } => {
            json!({"kind": "begin", "generation": generation, "session_id": session_id, "granted_ms": ms_json(*granted)})
        }
        Input::Turn {
            generation,
            end_of_turn,
        } => json!({"kind": "turn", "generation": generation, "end_of_turn": end_of_turn}),
        Input::Termination { generation } => {
            json!({"kind": "termination", "generation": generation})
        }
        Input::Quiet(quiet) => json!({"kind": "quiet", "quiet": quiet}),
        Input::Closed { generation, closed } => json!({
            "kind": "closed",
            "generation": generation,
            "after_begin": closed.after_begin,
            "failure": failure_json(&closed.failure),
        }),
        Input::Timer(timer) => json!({"kind": "timer", "timer": timer_json(*timer)}),
        Input::Fail(failure) => json!({"kind": "fail", "failure": failure_json(failure)}),
    }
}

fn notice_json(notice: &Notice) -> Value {
    match notice {
        Notice::Rotated { from, to, forced } => {
            json!({"kind": "rotated", "from": from, "to": to, "forced": forced})
        }
        Notice::Lost {
            generation,
            failure,
        } => json!({"kind": "lost", "generation": generation, "failure": failure_json(failure)}),
        Notice::DrainTimedOut { generation } => {
            json!({"kind": "drain_timed_out", "generation": generation})
        }
        Notice::RetryingToken { generation } => {
            json!({"kind": "retrying_token", "generation": generation})
        }
        Notice::MintBudget {
            mints,
            window,
            wait,
        } => {
            json!({"kind": "mint_budget", "mints": mints, "window_ms": ms_json(*window), "wait_ms": ms_json(*wait)})
        }
    }
}

fn view_json(v: &V) -> Value {
    match v {
        V::Is(view) => json!({"is": view}),
        V::Backoff { attempt, class } => json!({"backoff": {"attempt": attempt, "class": class}}),
        V::Failed { class, explain } => json!({"failed": {"class": class, "explain": explain}}),
    }
}

/// An effect the row expects. Instants are ms windows after t0 (`from` to `to`, inclusive,
/// of the truncated milliseconds).
fn fx_json(fx: &Fx) -> Value {
    match fx {
        Fx::Is(effect) => match effect {
            Effect::Mint { generation } => json!({"mint": {"generation": generation}}),
            Effect::Connect { generation } => json!({"connect": {"generation": generation}}),
            Effect::Route { to, replay_from } => {
                json!({"route": {"to": to, "replay_from": replay_from}})
            }
            Effect::Terminate { generation } => json!({"terminate": {"generation": generation}}),
            Effect::ForceEndpoint { generation } => {
                json!({"force_endpoint": {"generation": generation}})
            }
            Effect::Drop { generation } => json!({"drop": {"generation": generation}}),
            Effect::Notice(notice) => json!({"notice": notice_json(notice)}),
            Effect::Changed(view) => json!({"changed": {"is": view}}),
            Effect::Schedule { .. } | Effect::PrepareToken { .. } => {
                panic!("rows name instants with schedule() and prepare_token()")
            }
        },
        Fx::Schedule { timer, from, to } => {
            json!({"schedule": {"timer": timer_json(*timer), "from_ms": from, "to_ms": to}})
        }
        Fx::PrepareToken(by) => json!({"prepare_token": {"by_ms": by}}),
        Fx::Changed(v) => json!({"changed": view_json(v)}),
    }
}

fn step_json(step: &Step) -> Value {
    match step {
        Step::Input(when, input, draw) => {
            let mut v = json!({"input": input_json(input), "draw": draw});
            match when {
                When::At(ms) => v["at_ms"] = json!(ms),
                When::After(ms) => v["after_ms"] = json!(ms),
                When::Scheduled(timer) => v["when_scheduled"] = timer_json(*timer),
            }
            v
        }
        Step::Expect(expect) => match expect {
            Expect::Effects(fx) => {
                json!({"expect": "effects", "effects": fx.iter().map(fx_json).collect::<Vec<_>>()})
            }
            Expect::Has(fx) => {
                json!({"expect": "has", "effects": fx.iter().map(fx_json).collect::<Vec<_>>()})
            }
            Expect::Lacks(kind) => json!({"expect": "lacks", "kind": kind.name()}),
            Expect::Changes(views) => {
                json!({"expect": "changes", "views": views.iter().map(view_json).collect::<Vec<_>>()})
            }
            Expect::View(v) => json!({"expect": "view", "view": view_json(v)}),
            Expect::Done => json!({"expect": "done"}),
            Expect::Attempts(n) => json!({"expect": "attempts", "attempts": n}),
        },
    }
}

/// Every row as data: its machine configuration (in `/config.json`'s `session` terms), its
/// steps, and what each expects.
fn fixtures() -> Value {
    let rows: Vec<Value> = rows()
        .iter()
        .map(|row| {
            json!({
                "name": row.name,
                "config": row.machine_config().to_json(),
                "steps": row.given.iter().chain(&row.then).map(step_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "about": "The session machine's scenario rows, exported from src/session/machine/tests.rs \
                  (regenerate: AAI_LIVE_UPDATE_FIXTURES=1 cargo test --lib fixtures_are_current). \
                  Times are ms after t0; `draw` is the jitter draw that comes with an input; \
                  instants are matched as truncated ms within [from_ms, to_ms].",
        "rows": rows,
        // Rows the browser client cannot express, each with why (none today: ping liveness and
        // the pre-mint scheduler are the supervisor's, not the machine's).
        "not_for_the_browser": [],
    })
}

/// The committed fixtures are what the rows say today: a stale file fails here, and
/// `AAI_LIVE_UPDATE_FIXTURES=1` rewrites it.
#[test]
fn fixtures_are_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURES);
    let fresh = serde_json::to_string_pretty(&fixtures()).expect("json") + "\n";
    if std::env::var_os("AAI_LIVE_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, &fresh).expect("write the fixtures");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{FIXTURES} is stale: regenerate it with \
         `AAI_LIVE_UPDATE_FIXTURES=1 cargo test --lib fixtures_are_current` and commit it"
    );
}
