//! The words aai-live says to people about a streaming run, in one place: the dashboard's events
//! pane and problem panel and the headless runner's stderr lines use the same sentences for the
//! same events ([`event_line`] is the one dispatcher from an event to its line), so both clients
//! describe a run the same way. Every sentence is a function of values (a [`Failure`], a
//! [`View`], an event); nothing reads a sentence back.
//!
//! What each close class *means* and what aai-live does about it (`CloseClass::describe`,
//! `CloseClass::advice`, `CloseClass::remedy`) lives with the classification in
//! `protocol::close`, because the session machine and the event stream use those words too;
//! this module builds the sentences around them. gitui's `strings.rs` is the model: plain
//! functions of the values a sentence needs, no formatting at the call sites. Text that came
//! from the network (reasons, messages) goes through `untrusted::for_terminal` here, so no
//! sentence can carry an escape sequence to a terminal.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::diagnosis::Diagnosis;
use crate::events::{Cause, LossCause, SessionEvent, View};
use crate::failure::{Failure, Origin};
use crate::protocol::CloseClass;
use crate::untrusted::for_terminal;

// --- Formatting helpers --------------------------------------------------------------------

/// The first 8 characters of a session id (enough to tell sessions apart on screen).
pub fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `mm:ss` (or `h:mm:ss` from an hour).
pub fn mm_ss(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

/// Milliseconds as seconds with one decimal ("1.5").
fn secs(ms: u64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

// --- Session states and causes -------------------------------------------------------------

/// Why a connection is being made, in words.
pub fn cause(cause: Cause) -> &'static str {
    match cause {
        Cause::Start => "starting",
        Cause::Rotation => "the next session, before this one expires",
        Cause::Expired => "the session expired",
        Cause::Dropped => "the connection dropped",
        Cause::TokenRejected => "the token was refused; one fresh try",
        Cause::User => "asked for",
    }
}

/// A state change in plain words (`None` for states not worth a line).
pub fn view(view: &View) -> Option<String> {
    Some(match view {
        View::Idle => return None,
        View::Minting {
            generation,
            cause: c,
        } => {
            format!(
                "getting a token for connection {generation} ({})",
                cause(*c)
            )
        }
        View::Connecting { generation, .. } => format!("connecting (connection {generation})"),
        View::Streaming {
            generation,
            session_id,
        } => format!(
            "streaming on session {} (connection {generation})",
            short_id(session_id)
        ),
        View::Rotating {
            old,
            new,
            new_ready: false,
        } => format!("rotation: opening connection {new} before connection {old} expires"),
        View::Rotating {
            new,
            new_ready: true,
            ..
        } => format!("rotation: connection {new} is ready; handing over at the next turn boundary"),
        View::Draining { generation } => {
            format!("finishing: waiting for the last turns of connection {generation}")
        }
        View::Stopped => "stopped".to_owned(),
        View::Backoff {
            attempt,
            retry_in_ms,
            class,
        } => format!(
            "{}: attempt {attempt} in {} s",
            class.describe(),
            secs(*retry_in_ms)
        ),
        View::Failed(failure) => {
            format!(
                "failed ({}): {}",
                failure.class.describe(),
                for_terminal(&failure.reason)
            )
        }
    })
}

/// The problem panel's title when streaming stopped for good.
pub fn stopped_title(class: CloseClass) -> String {
    format!("Streaming stopped: {}", class.describe())
}

/// What to do after streaming stopped with `class`; `key` starts streaming again.
pub fn stopped_hint(class: CloseClass, key: &str) -> String {
    match class {
        CloseClass::Normal | CloseClass::SessionExpired => format!("Press {key} to start again."),
        CloseClass::TokenRejected
        | CloseClass::RateLimited
        | CloseClass::Transient
        | CloseClass::ClientBug
        | CloseClass::Fatal
        | CloseClass::Local => format!("{}, then press {key} to try again.", class.remedy()),
    }
}

/// [`stopped_hint`], then where the failure is explained: "... More: `aai-live explain 3009`."
pub fn stopped_hint_explained(failure: &Failure, key: &str) -> String {
    format!(
        "{} More: {}.",
        stopped_hint(failure.class, key),
        explain(failure.diagnosis)
    )
}

/// A failure in one sentence: what failed, in its own words, then what its class means and
/// what is (not) done about it. The `failure` of a `finished` event, the log, stderr.
pub fn failure(failure: &Failure) -> String {
    let reason = for_terminal(&failure.reason);
    let what = match (failure.origin, failure.class, failure.code) {
        (Origin::Input, ..) => format!("the audio input failed: {reason}"),
        (Origin::Token, ..) => format!("no token: {reason}"),
        // A close that fails the run with this class comes after the one retry: its advice
        // ("retrying once") is spent.
        (Origin::Close, CloseClass::TokenRejected, _) => {
            return format!(
                "a fresh token was rejected too ({reason}); check the token source and the \
                 clock ({})",
                failure.class.describe()
            );
        }
        (Origin::Close, _, Some(code)) if reason.is_empty() => format!("closed with {code}"),
        (Origin::Close, _, Some(code)) => format!("closed with {code} \"{reason}\""),
        (Origin::Close, _, None) if reason.is_empty() => "connection lost".to_owned(),
        (Origin::Close | Origin::Connect | Origin::Internal, ..) => reason.into_owned(),
    };
    format!(
        "{what} ({}; {})",
        failure.class.describe(),
        failure.class.advice()
    )
}

/// `hint`, then where the problem is explained: "... More: `aai-live explain no-key`."
pub fn explained(hint: &str, diagnosis: Diagnosis) -> String {
    format!("{hint} More: {}.", explain(diagnosis))
}

/// "`aai-live explain 3009`": the command that prints a diagnosis's section.
pub fn explain(diagnosis: Diagnosis) -> String {
    format!("`{}`", diagnosis.explain_command())
}

// --- Session events ------------------------------------------------------------------------

pub fn token_obtained(generation: u64, fingerprint: &str) -> String {
    format!("token {fingerprint} obtained for connection {generation}")
}

pub fn token_failed(generation: u64, message: &str) -> String {
    format!(
        "no token for connection {generation}: {}",
        for_terminal(message)
    )
}

/// A session began; `left` is the time until it expires.
pub fn session_began(generation: u64, session_id: &str, left: Duration) -> String {
    format!(
        "session {} began (connection {generation}); it ends in {}",
        short_id(session_id),
        mm_ss(left)
    )
}

pub fn rotated(from: u64, to: u64, forced: bool) -> String {
    let how = if forced {
        "at a forced turn boundary near the deadline"
    } else {
        "at a turn boundary"
    };
    format!("rotated: audio moved from connection {from} to {to} {how}, no gap")
}

pub fn lost(
    generation: u64,
    class: CloseClass,
    code: Option<u16>,
    reason: &str,
    what_now: &str,
) -> String {
    let code_text = code.map_or_else(|| "no close code".to_owned(), |c| c.to_string());
    format!(
        "connection {generation} lost: {} ({code_text}: {}); {what_now}",
        class.describe(),
        for_terminal(reason)
    )
}

/// A headless stderr line, then the troubleshooting section that explains it.
fn see(line: &str, section: &str) -> String {
    format!("{line} (see `aai-live explain {section}`)")
}

pub fn reconnected(generation: u64, replay_ms: u64, gap_ms: u64) -> String {
    format!(
        "reconnected on connection {generation}: replaying {} s of buffered audio (no live \
         session for {} s)",
        secs(replay_ms),
        secs(gap_ms)
    )
}

/// A backlog that outgrew the replay buffer before a new session could take it again.
pub fn replay_outgrown(ms: u64) -> String {
    format!(
        "{} s of audio sent to the lost session could not be replayed (it outgrew the replay \
         buffer); words in it may be missing",
        secs(ms)
    )
}

/// A later session's speaker that could not be matched to the run's (speakers across
/// sessions): its turns carry `speaker_uncertain` and show with a `?`.
pub fn speaker_unmatched(u: &crate::transcript::speakers::Unmatched) -> String {
    let why = match &u.leaning {
        Some(leaning) => format!("its words there matched no one clearly; closest: {leaning}"),
        None => "they did not speak in the audio it was primed with".to_owned(),
    };
    format!(
        "session {}'s speaker {} could not be matched to an earlier speaker ({why}); \
         their turns are labelled {}? rather than guessed",
        u.generation,
        crate::untrusted::for_terminal(&u.session_label),
        crate::untrusted::for_terminal(&u.label),
    )
}

/// A session that reads audio but answers nothing.
pub fn stalled_unanswered(after: Duration) -> String {
    format!(
        "stalled: no reply for {} s while audio was sent",
        after.as_secs()
    )
}

/// A session that answers nothing at all, not even a ping.
pub fn stalled_silent(after: Duration) -> String {
    format!(
        "stalled: nothing from the server for {} s, not even an answer to a ping",
        after.as_secs()
    )
}

/// A float input held NaN or ±Inf samples (said once a run).
pub const NON_FINITE_SAMPLES: &str = "the audio input holds NaN or infinite samples: they are \
     sent as silence (the input's statistics count them)";

/// The mint budget was spent without a session that lasted: minting pauses.
/// `shared`: the number of inputs whose streams draw from one account (meeting mode).
pub fn mint_budget(
    mints: usize,
    window: Duration,
    wait: Duration,
    shared: Option<usize>,
) -> String {
    let whose = match shared {
        Some(n) if n > 1 => format!(" (the {n} inputs share the account's budget)"),
        _ => String::new(),
    };
    format!(
        "{mints} tokens in {} s and no session lasted{whose}: pausing new sessions for {} s so \
         the token source is not flooded",
        window.as_secs(),
        wait.as_secs()
    )
}

/// Why audio was never sent, in words.
pub fn loss_cause(cause: LossCause) -> &'static str {
    match cause {
        LossCause::ReplayBufferFull => "the outage outgrew the replay buffer",
        LossCause::Stopped => "the run stopped before it could be sent",
        LossCause::Failed => "the run failed before it could be sent",
        LossCause::FinishTimeout => "the input ended and it could not be sent in time",
        LossCause::CaptureOverrun => "the microphone capture fell behind and dropped it",
    }
}

pub fn audio_lost(ms: u64, cause: LossCause) -> String {
    format!(
        "{} s of audio could not be transcribed ({})",
        secs(ms),
        loss_cause(cause)
    )
}

pub fn drain_timed_out(generation: u64) -> String {
    format!("connection {generation} did not confirm its end in time; closed it")
}

pub fn terminated(generation: u64, audio_seconds: u64, session_seconds: u64) -> String {
    format!(
        "connection {generation} ended normally after {session_seconds} s ({audio_seconds} s of \
         audio)"
    )
}

/// The run ended with a failure.
pub fn run_failed(reason: &str) -> String {
    format!("failed: {}", for_terminal(reason))
}

// --- One event, one line --------------------------------------------------------------------

/// How much an events-pane entry or a stderr line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

/// Who shows a line: the dashboard's events pane, the headless runner's stderr, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Both,
    /// The events pane only: headless has the NDJSON event for it.
    Pane,
    /// Stderr only: the dashboard shows it otherwise (a failed `finished` is its problem panel).
    Stderr,
}

/// What an event says to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub severity: Severity,
    pub text: String,
    /// The troubleshooting section that explains it, for failure-bearing events.
    pub explain: Option<&'static str>,
    pub audience: Audience,
}

impl Line {
    fn new(severity: Severity, text: String, audience: Audience) -> Self {
        Self {
            severity,
            text,
            explain: None,
            audience,
        }
    }

    fn explained(self, explain: Option<&'static str>) -> Self {
        Self { explain, ..self }
    }

    /// The headless stderr form: the line, then where it is explained.
    pub fn for_stderr(&self) -> String {
        match self.explain {
            Some(section) => see(&self.text, section),
            None => self.text.clone(),
        }
    }
}

fn by_class(class: CloseClass) -> Severity {
    if class.retryable() {
        Severity::Warn
    } else {
        Severity::Error
    }
}

/// The line an event says, if any: the one dispatcher for the dashboard's events pane and the
/// headless runner's stderr. No wildcard arm: a new event is a compile error here until it is
/// decided. `now` is when it is shown (a session's time left).
pub fn event_line(event: &SessionEvent, now: SystemTime) -> Option<Line> {
    use Audience::{Both, Pane, Stderr};
    use Severity::{Error, Info, Warn};
    let line = match event {
        SessionEvent::Hello { .. } | SessionEvent::Partial(_) | SessionEvent::Final(_) => {
            return None;
        }
        SessionEvent::SpeakerRevision { .. } | SessionEvent::SpeakerNamed { .. } => {
            speaker_line(event)?
        }
        SessionEvent::SettingsUpdated(update) => Line::new(Info, settings_updated(update), Both),
        SessionEvent::State { view: v } => {
            let severity = match v {
                View::Backoff { .. } => Warn,
                View::Failed(_) => Error,
                _ => Info,
            };
            let explain = match v {
                View::Failed(failure) => Some(failure.explain()),
                _ => None,
            };
            Line::new(severity, view(v)?, Pane).explained(explain)
        }
        SessionEvent::Token {
            generation,
            fingerprint,
            ..
        } => Line::new(Info, token_obtained(*generation, fingerprint), Pane),
        SessionEvent::TokenFailed {
            generation,
            class,
            message,
            explain,
        } => Line::new(by_class(*class), token_failed(*generation, message), Both)
            .explained(Some(explain)),
        SessionEvent::Begin {
            generation,
            session_id,
            expires_at,
            ..
        } => {
            let ends = UNIX_EPOCH + Duration::from_secs((*expires_at).max(0).unsigned_abs());
            let left = ends.duration_since(now).unwrap_or_default();
            Line::new(Info, session_began(*generation, session_id, left), Pane)
        }
        SessionEvent::Rotation {
            from, to, forced, ..
        } => Line::new(Info, rotated(*from, *to, *forced), Both),
        SessionEvent::RotationPlanned {
            generation,
            rotates_in_ms,
            staggered_ms: earlier @ 1..,
        } => Line::new(Info, staggered(*generation, *rotates_in_ms, *earlier), Pane),
        SessionEvent::RotationPlanned { .. } => return None,
        SessionEvent::Lost {
            generation,
            class,
            code,
            reason,
            what_now,
            explain,
        } => Line::new(
            by_class(*class),
            lost(*generation, *class, *code, reason, what_now),
            Both,
        )
        .explained(Some(explain)),
        SessionEvent::Reconnected {
            generation,
            replay_ms,
            gap_ms,
            ..
        } => Line::new(Info, reconnected(*generation, *replay_ms, *gap_ms), Pane),
        SessionEvent::AudioLost { ms, cause, .. } => {
            Line::new(Error, audio_lost(*ms, *cause), Both)
        }
        SessionEvent::DrainTimedOut { generation } => {
            Line::new(Warn, drain_timed_out(*generation), Pane)
        }
        SessionEvent::Termination {
            generation,
            audio_duration_seconds,
            session_duration_seconds,
        } => Line::new(
            Info,
            terminated(
                *generation,
                *audio_duration_seconds,
                *session_duration_seconds,
            ),
            Pane,
        ),
        SessionEvent::Warning { message, explain } => {
            Line::new(Warn, for_terminal(message).into_owned(), Both).explained(*explain)
        }
        SessionEvent::Finished {
            failure, explain, ..
        } => Line::new(Error, run_failed(failure.as_deref()?), Stderr).explained(*explain),
    };
    Some(line)
}

/// Live settings sent to the session (and carried to the next ones).
pub fn settings_updated(update: &crate::protocol::messages::UpdateConfiguration) -> String {
    let mut parts = Vec::new();
    if let Some(terms) = &update.keyterms_prompt {
        parts.push(if terms.is_empty() {
            "keyterms cleared".to_owned()
        } else {
            format!("keyterms {}", for_terminal(&terms.join(", ")))
        });
    }
    for (name, value) in [
        ("min_turn_silence", update.min_turn_silence),
        ("max_turn_silence", update.max_turn_silence),
    ] {
        if let Some(ms) = value {
            parts.push(format!("{name} {ms} ms"));
        }
    }
    format!(
        "live settings: {} (sent to the session, kept for the next ones)",
        parts.join("; ")
    )
}

/// Live settings outside the service's ranges: not sent.
pub fn settings_refused(error: &crate::protocol::params::ParamError) -> String {
    format!("live settings not sent: {error}")
}

/// The events about who spoke, for the events pane.
fn speaker_line(event: &SessionEvent) -> Option<Line> {
    let text = match event {
        SessionEvent::SpeakerRevision {
            generation,
            turn_order,
            speaker,
            speaker_name,
            ..
        } => speaker_revised(
            *generation,
            *turn_order,
            speaker.as_deref(),
            speaker_name.as_deref(),
        ),
        SessionEvent::SpeakerNamed { speaker, name } => {
            format!(
                "speaker {} is {}",
                for_terminal(speaker),
                for_terminal(name)
            )
        }
        _ => return None,
    };
    Some(Line::new(Severity::Info, text, Audience::Pane))
}

/// The service changed its mind about who said a turn.
pub fn speaker_revised(
    generation: u64,
    turn_order: u64,
    speaker: Option<&str>,
    name: Option<&str>,
) -> String {
    let who = match (speaker, name) {
        (_, Some(name)) => for_terminal(name).into_owned(),
        (Some(s), None) if crate::transcript::is_pending(s) => "speaker pending".to_owned(),
        (Some(s), None) => format!("speaker {}", for_terminal(s)),
        (None, None) => "no speaker".to_owned(),
    };
    format!("turn {turn_order} of connection {generation} revised: said by {who}")
}

/// Meeting mode: a rotation moved earlier, away from another input's.
pub fn staggered(generation: u64, in_ms: u64, earlier_ms: u64) -> String {
    format!(
        "connection {generation} rotates in {} s, {} s earlier than planned: the inputs share the \
         account's new-session limit, so their rotations stay 10 s apart",
        in_ms / 1000,
        earlier_ms.div_ceil(1000)
    )
}

// --- The run as a whole --------------------------------------------------------------------

/// Headless: where the audio goes and where the transcript is written.
pub fn streaming_to(input: &str, endpoint: &str, journal: &std::path::Path) -> String {
    format!(
        "streaming {input} to {endpoint}; transcript in {}",
        journal.display()
    )
}

/// `--feed`: where consumers find the run's events (the overlay's address with any token
/// redacted). Tests and scripts read the address from this line.
pub fn feed_listening(url: &str, overlay: &str) -> String {
    format!("feed listening on {url} (events at {url}/events, captions overlay at {overlay})")
}

/// The header's count of the feed's consumers.
pub fn consumers(n: usize) -> String {
    match n {
        1 => "1 consumer".to_owned(),
        n => format!("{n} consumers"),
    }
}

pub const STOPPING: &str = "stopping (waiting for the last turns)...";

/// The supervisor task died without finishing its run.
pub const CRASH_TITLE: &str = "The session task stopped unexpectedly";

pub fn crash_hint(key: &str) -> String {
    format!("This is a bug in aai-live; the log file has details. Press {key} to start again.")
}

pub fn crashed(reason: &str) -> String {
    format!("the session task stopped: {}", for_terminal(reason))
}

// --- Why a run cannot start ----------------------------------------------------------------

pub const NO_PROVIDER_TITLE: &str = "No token provider: streaming cannot start";
pub const NO_PROVIDER_HINT: &str = "Fix [provider] in the configuration (`aai-live config \
                                    --check` shows it) and start aai-live again, or try \
                                    `aai-live demo`.";
pub const NO_TRANSCRIPT_TITLE: &str = "Cannot write the transcript: streaming cannot start";

pub fn no_transcript_hint(key: &str) -> String {
    format!(
        "Check that transcript.dir is writable (or set another one), then press {key} to try \
         again."
    )
}

pub const NO_AUDIO_TITLE: &str = "No audio input: streaming cannot start";

pub fn no_audio_hint(key: &str) -> String {
    format!(
        "Check the input (`aai-live devices` lists microphones; --input file:PATH streams a WAV \
         file), then press {key} to try again."
    )
}

pub const AUDIO_LOST_TITLE: &str = "The audio input was lost";

pub fn audio_lost_hint(key: &str) -> String {
    format!(
        "Check the device (`aai-live devices`), then press {key} to open it again and stream. \
         The transcript so far is kept."
    )
}

pub fn audio_failed(reason: &str) -> String {
    format!("the audio input failed: {}", for_terminal(reason))
}

pub fn audio_fell_behind(dropped_frames: u64) -> String {
    format!("the audio input fell behind: {dropped_frames} frames dropped so far")
}

pub const AUDIO_ENDED: &str = "the audio input ended; streaming stops after the last turns";

/// The input's task ended without saying how (it panicked): never a normal end of input.
pub const AUDIO_TASK_DIED: &str =
    "the audio input stopped unexpectedly (its task ended without a reason: a bug in aai-live)";

/// A connection's task ended without reporting its close (it panicked).
pub const CONNECTION_TASK_DIED: &str =
    "the connection task stopped unexpectedly (a bug in aai-live)";

/// `Begin.expires_at` is believable but disagrees with the session length asked for.
pub fn clock_skew(skew_ms: i64, requested: Duration) -> String {
    let direction = if skew_ms > 0 { "later" } else { "earlier" };
    format!(
        "clock skew: the service says this session ends {:.0} s {direction} than the {} s asked \
         for: a clock is off (this machine's — check NTP with `timedatectl status` — or the \
         service's), or the service changed the session's length; rotations follow the \
         service's time",
        skew_ms.unsigned_abs() as f64 / 1000.0,
        requested.as_secs()
    )
}

/// `Begin.expires_at` cannot be right (zero, in the past, beyond the longest session).
pub fn implausible_expiry(expires_at: i64, left_ms: i64, planned: Duration) -> String {
    format!(
        "the service's session end (expires_at {expires_at}, {:.0} s from now) is not \
         believable; planning the session for {} s instead",
        left_ms as f64 / 1000.0,
        planned.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::*;
    use crate::protocol::close::reasons;

    #[test]
    fn clock_and_ids() {
        assert_eq!(mm_ss(Duration::from_secs(0)), "00:00");
        assert_eq!(mm_ss(Duration::from_secs(599)), "09:59");
        assert_eq!(mm_ss(Duration::from_secs(3600 + 62)), "1:01:02");
        assert_eq!(short_id("0123456789abcdef"), "01234567");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn every_class_has_a_stopped_hint_naming_the_key() {
        for class in CloseClass::iter() {
            let hint = stopped_hint(class, "space");
            assert!(
                hint.contains("press space") || hint.contains("Press space"),
                "{hint}"
            );
            assert!(hint.ends_with('.'), "{hint}");
        }
        assert_eq!(
            stopped_hint(CloseClass::Fatal, "space"),
            "Check the API key, the account balance and its access to streaming, then press \
             space to try again."
        );
    }

    #[test]
    fn network_text_cannot_reach_a_terminal_raw() {
        let evil = format!("\u{1b}]0;pwned\u{7}{}", "x".repeat(20_000));
        let failed = Failure::close(Some(1008), &evil, None, true);
        for line in [
            lost(1, CloseClass::Transient, Some(1011), &evil, "reconnecting"),
            token_failed(1, &evil),
            run_failed(&evil),
            failure(&failed),
            view(&View::Failed(failed.clone())).expect("line"),
            event_line(
                &SessionEvent::Warning {
                    message: evil.clone(),
                    explain: None,
                },
                SystemTime::now(),
            )
            .expect("line")
            .text,
        ] {
            assert!(
                !line.contains('\u{1b}') && !line.contains('\u{7}'),
                "{line:?}"
            );
            assert!(line.chars().count() < 700, "{}", line.len());
        }
    }

    #[test]
    fn failures_name_their_section() {
        let limited = Failure::close(Some(3009), "Too many concurrent sessions", None, true);
        let line = event_line(
            &SessionEvent::Lost {
                generation: 2,
                class: limited.class,
                code: limited.code,
                reason: limited.reason.clone(),
                what_now: "backing off",
                explain: limited.explain(),
            },
            SystemTime::now(),
        )
        .expect("a line");
        assert_eq!(
            line.for_stderr(),
            "connection 2 lost: too many new sessions per minute (3009: Too many concurrent \
             sessions); backing off (see `aai-live explain 3009`)"
        );
        let fatal = Failure::close(Some(1008), reasons::MISSING_AUTH, None, true);
        assert!(
            stopped_hint_explained(&fatal, "space")
                .ends_with("press space to try again. More: `aai-live explain 1008-missing-auth`."),
        );
        let input = Failure::input("gone");
        assert_eq!(
            failure(&input),
            "the audio input failed: gone (a local failure (the audio input or aai-live \
             itself); not retrying: the reason says what failed; the log file has details)"
        );
        let finished = SessionEvent::Finished {
            finals: 0,
            rotations: 0,
            reconnects: 0,
            audio_captured_samples: 0,
            audio_sent_samples: 0,
            audio_lost_samples: 0,
            audio_lost_ms: 0,
            latency_p50_ms: None,
            latency_p95_ms: None,
            failure: Some(failure(&input)),
            explain: Some(input.explain()),
            archive: None,
        };
        let line = event_line(&finished, SystemTime::now()).expect("a line");
        assert_eq!(line.audience, Audience::Stderr);
        assert!(line.for_stderr().contains("explain local"), "{line:?}");
    }

    /// Rewording any sentence changes no section: the sections come from the values, and the
    /// words are only ever rendered from them. Every failure-bearing event keeps its section
    /// whatever its reason says.
    #[test]
    fn rewording_changes_no_section() {
        for reason in [
            "",
            "token provider",
            "cannot resolve proxy TLS timed out dns",
        ] {
            let f = Failure::close(Some(3009), reason, None, true);
            assert_eq!(f.explain(), "3009", "{reason:?}");
            let f = Failure::input(reason);
            assert_eq!(f.explain(), "local", "{reason:?}");
        }
    }

    #[test]
    fn events_read_the_same_everywhere() {
        assert_eq!(
            lost(
                3,
                CloseClass::Transient,
                None,
                "reset",
                "reconnecting with backoff"
            ),
            "connection 3 lost: connection lost or server error (no close code: reset); \
             reconnecting with backoff"
        );
        assert_eq!(
            rotated(1, 2, false),
            "rotated: audio moved from connection 1 to 2 at a turn boundary, no gap"
        );
        assert_eq!(
            audio_lost(1500, LossCause::ReplayBufferFull),
            "1.5 s of audio could not be transcribed (the outage outgrew the replay buffer)"
        );
    }
}
