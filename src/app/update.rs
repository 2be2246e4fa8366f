//! `AppState::update`: the one place the model changes. `(state, msg, now) → commands`, with no
//! I/O, so every behaviour of the dashboard is testable by feeding messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::action::Action;
use super::command::{Command, Msg, StartFailure};
use super::state::{AppState, CloseInfo, Life, Problem, ProblemKind, Severity};
use crate::audio::{AudioStats, InputEnd};
use crate::protocol::CloseClass;
use crate::provider::TokenState;
use crate::session::machine::{Cause, View};
use crate::session::{self, SessionEvent};

/// Sessions kept for the lifetime gauge (the live one, its successor, a retired one).
const LIVES_KEPT: usize = 4;

impl AppState {
    /// Apply one message; returns what the runtime must do.
    pub fn update(&mut self, msg: Msg, now: SystemTime) -> Vec<Command> {
        let mut out = Vec::new();
        match msg {
            Msg::Action(action) => self.on_action(action, now, &mut out),
            Msg::Session(event) => self.on_session(event, now, &mut out),
            Msg::Token(token) => self.on_token(token, now),
            Msg::Level(level) => self.audio.level = level,
            Msg::AudioStats(stats) => self.on_audio_stats(stats, now),
            Msg::Resize(w, h) => self.viewport = (w, h),
            Msg::Tick => self.on_tick(now, &mut out),
            Msg::Dismiss => self.show_help = false,
            Msg::AudioOpened(name) => {
                self.audio.open = true;
                self.clear_problem(ProblemKind::Audio);
                self.events
                    .push(now, Severity::Info, format!("audio input open: {name}"));
            }
            Msg::StartFailed(failure) => self.on_start_failed(failure, now, &mut out),
            Msg::Saved(result) => {
                self.lifecycle.saving = self.lifecycle.saving.saturating_sub(1);
                match result {
                    Ok(paths) => {
                        for p in &paths {
                            self.events.push(
                                now,
                                Severity::Info,
                                format!("transcript saved: {}", p.display()),
                            );
                        }
                        self.saved.extend(paths);
                    }
                    Err(e) => self.events.push(
                        now,
                        Severity::Error,
                        format!("cannot save the transcript: {e}"),
                    ),
                }
                self.quit_if_done(&mut out);
            }
            Msg::Exported(result) => match result {
                Ok(paths) => {
                    let shown = paths
                        .first()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    let more = if paths.len() > 1 {
                        format!(" (+{} more)", paths.len() - 1)
                    } else {
                        String::new()
                    };
                    self.notify(now, Severity::Info, format!("exported to {shown}{more}"));
                    for p in &paths {
                        self.events
                            .push(now, Severity::Info, format!("exported: {}", p.display()));
                    }
                    self.saved.extend(paths);
                }
                Err(e) => {
                    self.notify(now, Severity::Error, format!("export failed: {e}"));
                    self.events
                        .push(now, Severity::Error, format!("export failed: {e}"));
                }
            },
            Msg::SessionCrashed(reason) => {
                if !self.lifecycle.running {
                    // It had said `Finished` (and a save was counted) before failing to join.
                    self.lifecycle.saving = self.lifecycle.saving.saturating_sub(1);
                }
                self.lifecycle.running = false;
                self.session.view = View::Failed {
                    class: CloseClass::ClientBug,
                    reason: reason.clone(),
                };
                self.session.since = now;
                self.last_failure = Some(reason.clone());
                let hint = format!(
                    "This is a bug in aai-live; the log file has details. Press {} to start again.",
                    self.key_hint(Action::ToggleStream)
                );
                self.set_problem(Problem {
                    kind: ProblemKind::Session,
                    title: "The session task stopped unexpectedly".into(),
                    detail: reason.clone(),
                    hint,
                });
                self.events.push(
                    now,
                    Severity::Error,
                    format!("the session task stopped: {reason}"),
                );
                self.quit_if_done(&mut out);
            }
            Msg::Warning(text) => self.events.push(now, Severity::Warn, text),
        }
        out
    }

    /// The first key of `action`, for hints ("press space").
    fn key_hint(&self, action: Action) -> String {
        self.keymap
            .first_key(action)
            .map_or_else(|| action.name().to_owned(), |k| k.to_string())
    }

    fn on_action(&mut self, action: Action, now: SystemTime, out: &mut Vec<Command>) {
        match action {
            Action::ToggleStream => self.toggle_stream(now, out),
            Action::Pause => {
                let muted = !self.audio.muted;
                self.audio.muted = muted;
                self.lifecycle.last_keepalive = Some(now);
                if self.lifecycle.running {
                    out.push(Command::Session(session::Command::SetMuted(muted)));
                }
                let text = if muted {
                    "muted: silence is sent, the session stays open"
                } else {
                    "unmuted"
                };
                self.notify(now, Severity::Info, text);
                self.events.push(now, Severity::Info, text);
            }
            Action::ForceEndpoint => {
                if matches!(
                    self.session.view,
                    View::Streaming { .. } | View::Rotating { .. }
                ) {
                    out.push(Command::Session(session::Command::ForceEndpoint));
                    self.notify(now, Severity::Info, "asked the service to end the turn now");
                } else {
                    self.notify(
                        now,
                        Severity::Warn,
                        "not streaming: there is no turn to end",
                    );
                }
            }
            Action::Reconnect => {
                if self.lifecycle.running && self.session.is_active() {
                    out.push(Command::Session(session::Command::Reconnect));
                    self.notify(now, Severity::Info, "opening a fresh session now");
                    self.events
                        .push(now, Severity::Info, "reconnect asked for by the user");
                } else {
                    let hint = format!(
                        "not streaming: press {} to start",
                        self.key_hint(Action::ToggleStream)
                    );
                    self.notify(now, Severity::Warn, hint);
                }
            }
            Action::MintToken => {
                out.push(Command::MintToken);
                self.notify(now, Severity::Info, "minting a fresh token now");
                self.events
                    .push(now, Severity::Info, "fresh token asked for by the user");
            }
            Action::Export => {
                if self.transcript.all().is_empty() {
                    self.notify(now, Severity::Warn, "nothing to export yet");
                } else {
                    out.push(Command::Export);
                    self.notify(now, Severity::Info, "exporting the transcript...");
                }
            }
            Action::Clear => {
                self.transcript.clear();
                self.notify(
                    now,
                    Severity::Info,
                    "screen cleared; the saved transcript keeps everything",
                );
            }
            Action::ToggleEvents => self.show_events = !self.show_events,
            Action::Help => self.show_help = !self.show_help,
            Action::ScrollUp => self.transcript.scroll_up(1),
            Action::ScrollDown => self.transcript.scroll_down(1),
            Action::PageUp => self.transcript.scroll_up(self.page_turns()),
            Action::PageDown => self.transcript.scroll_down(self.page_turns()),
            Action::ScrollTop => self.transcript.scroll_top(),
            Action::ScrollBottom => self.transcript.follow(),
            Action::Quit => self.quit(now, out),
        }
    }

    fn toggle_stream(&mut self, now: SystemTime, out: &mut Vec<Command>) {
        if self.lifecycle.quitting.is_some() {
            return;
        }
        if !self.lifecycle.running {
            self.start(now, out);
            return;
        }
        let can_stop = self.session.is_active() || matches!(self.session.view, View::Idle);
        if can_stop && !self.lifecycle.stopping {
            out.push(Command::Session(session::Command::Stop));
            self.lifecycle.stopping = true;
            self.lifecycle.start_pending = false;
            self.notify(now, Severity::Info, "stopping: waiting for the last turns");
            self.events
                .push(now, Severity::Info, "stop asked for by the user");
        } else {
            // Stopping (even if its state does not show it yet), draining, or stopped and about
            // to finish: start again once it has (pressed once more: don't).
            self.lifecycle.start_pending = !self.lifecycle.start_pending;
            let text = if self.lifecycle.start_pending {
                "starting again once the last session has finished"
            } else {
                "stopping: waiting for the last turns"
            };
            self.notify(now, Severity::Info, text);
        }
    }

    fn start(&mut self, now: SystemTime, out: &mut Vec<Command>) {
        self.lifecycle.run += 1;
        self.lifecycle.running = true;
        self.lifecycle.stopping = false;
        self.lifecycle.start_pending = false;
        self.session.view = View::Idle;
        self.session.since = now;
        self.session.run_started = Some(now);
        self.session.run_ended = None;
        self.session.lives.clear();
        self.session.retry_at = None;
        self.last_failure = None;
        self.clear_problem(ProblemKind::Session);
        self.events.push(now, Severity::Info, "starting to stream");
        out.push(Command::StartSession {
            run: self.lifecycle.run,
            muted: self.audio.muted,
        });
    }

    fn quit(&mut self, now: SystemTime, out: &mut Vec<Command>) {
        if self.lifecycle.quitting.is_some() {
            // Asked twice: leave now. Finals are already in the journal on disk.
            self.should_quit = true;
            out.push(Command::Quit);
            return;
        }
        if self.lifecycle.running || self.lifecycle.saving > 0 {
            if self.lifecycle.running
                && (self.session.is_active() || matches!(self.session.view, View::Idle))
                && !self.lifecycle.stopping
            {
                out.push(Command::Session(session::Command::Stop));
                self.lifecycle.stopping = true;
            }
            self.lifecycle.start_pending = false;
            self.lifecycle.quitting = Some(now + self.limits.quit_grace);
            let text = format!(
                "quitting: waiting for the last turns and saving ({} again to leave now)",
                self.key_hint(Action::Quit)
            );
            self.notify(now, Severity::Info, text);
            self.events
                .push(now, Severity::Info, "quit asked for by the user");
            return;
        }
        self.should_quit = true;
        out.push(Command::Quit);
    }

    /// While quitting: leave once nothing is running or being saved.
    fn quit_if_done(&mut self, out: &mut Vec<Command>) {
        if self.lifecycle.quitting.is_some()
            && !self.lifecycle.running
            && self.lifecycle.saving == 0
            && !self.should_quit
        {
            self.should_quit = true;
            out.push(Command::Quit);
        }
    }

    fn on_start_failed(&mut self, failure: StartFailure, now: SystemTime, out: &mut Vec<Command>) {
        self.lifecycle.running = false;
        self.lifecycle.start_pending = false;
        self.session.view = View::Idle;
        self.session.since = now;
        self.session.run_started = None;
        let again = self.key_hint(Action::ToggleStream);
        let problem = match failure {
            StartFailure::Provider(detail) => Problem {
                kind: ProblemKind::Provider,
                title: "No token provider: streaming cannot start".into(),
                detail,
                hint: "Fix [provider] in the configuration (`aai-live config --check` shows it) \
                       and start aai-live again, or try `aai-live demo`."
                    .into(),
            },
            StartFailure::Transcript(detail) => Problem {
                kind: ProblemKind::Session,
                title: "Cannot write the transcript: streaming cannot start".into(),
                detail,
                hint: format!(
                    "Check that transcript.dir is writable (or set another one), then press \
                     {again} to try again."
                ),
            },
            StartFailure::Audio(detail) => {
                self.audio.open = false;
                Problem {
                    kind: ProblemKind::Audio,
                    title: "No audio input: streaming cannot start".into(),
                    detail,
                    hint: format!(
                        "Check the input (`aai-live devices` lists microphones; --input \
                         file:PATH streams a WAV file), then press {again} to try again."
                    ),
                }
            }
        };
        self.events.push(
            now,
            Severity::Error,
            format!("{}: {}", problem.title, problem.detail),
        );
        self.set_problem(problem);
        self.quit_if_done(out);
    }

    fn on_token(&mut self, token: TokenState, now: SystemTime) {
        if let TokenState::Failed { class, message, .. } = &token {
            let changed =
                !matches!(&self.token, TokenState::Failed { message: m, .. } if m == message);
            if changed {
                self.events.push(
                    now,
                    Severity::Warn,
                    format!("token provider ({class}): {message}"),
                );
            }
        }
        self.token = token;
    }

    fn on_audio_stats(&mut self, stats: AudioStats, now: SystemTime) {
        let before = &self.audio.stats;
        if stats.dropped_frames > before.dropped_frames && stats.overflows > before.overflows {
            self.events.push(
                now,
                Severity::Warn,
                format!(
                    "the audio input fell behind: {} frames dropped so far",
                    stats.dropped_frames
                ),
            );
        }
        if stats.ended.is_some() && before.ended.is_none() {
            self.audio.open = false;
            match &stats.ended {
                Some(InputEnd::Failed(reason)) => {
                    let hint = format!(
                        "Check the device (`aai-live devices`), then press {} to open it again \
                         and stream. The transcript so far is kept.",
                        self.key_hint(Action::ToggleStream)
                    );
                    self.events.push(
                        now,
                        Severity::Error,
                        format!("the audio input failed: {reason}"),
                    );
                    self.set_problem(Problem {
                        kind: ProblemKind::Audio,
                        title: "The audio input was lost".into(),
                        detail: reason.clone(),
                        hint,
                    });
                }
                Some(InputEnd::Finished) => self.events.push(
                    now,
                    Severity::Info,
                    "the audio input ended; streaming stops after the last turns",
                ),
                Some(InputEnd::Stopped) | None => {}
            }
        }
        self.audio.stats = stats;
    }

    fn on_tick(&mut self, now: SystemTime, out: &mut Vec<Command>) {
        if self.notice.as_ref().is_some_and(|n| n.until <= now) {
            self.notice = None;
        }
        self.rate.prune(now);
        if let Some(deadline) = self.lifecycle.quitting
            && now >= deadline
            && !self.should_quit
        {
            self.events.push(
                now,
                Severity::Warn,
                "the last turns did not arrive in time; leaving anyway",
            );
            self.should_quit = true;
            out.push(Command::Quit);
            return;
        }
        let streaming = matches!(
            self.session.view,
            View::Streaming { .. } | View::Rotating { .. }
        );
        if self.audio.muted && self.lifecycle.running && streaming {
            let due = self.lifecycle.last_keepalive.is_none_or(|t| {
                now.duration_since(t).unwrap_or_default() >= self.limits.keepalive_interval
            });
            if due {
                self.lifecycle.last_keepalive = Some(now);
                out.push(Command::Session(session::Command::KeepAlive));
            }
        }
    }

    fn on_session(&mut self, event: SessionEvent, now: SystemTime, out: &mut Vec<Command>) {
        let run = self.lifecycle.run;
        match event {
            SessionEvent::State { view } => self.on_view(view, now),
            SessionEvent::Token {
                generation,
                fingerprint,
                ..
            } => {
                self.events.push(
                    now,
                    Severity::Info,
                    format!("token {fingerprint} obtained for connection {generation}"),
                );
                self.session.last_token = Some((generation, fingerprint));
            }
            SessionEvent::TokenFailed {
                generation,
                class,
                message,
            } => {
                let level = if class.retryable() {
                    Severity::Warn
                } else {
                    Severity::Error
                };
                self.events.push(
                    now,
                    level,
                    format!("no token for connection {generation}: {message}"),
                );
            }
            SessionEvent::Begin {
                generation,
                session_id,
                expires_at,
                ..
            } => {
                let expires_at = UNIX_EPOCH + Duration::from_secs(expires_at.max(0) as u64);
                let left = expires_at.duration_since(now).unwrap_or_default();
                self.events.push(
                    now,
                    Severity::Info,
                    format!(
                        "session {} began (connection {generation}); it ends in {}",
                        short_id(&session_id),
                        mm_ss(left)
                    ),
                );
                self.session.lives.push(Life {
                    run,
                    generation,
                    session_id,
                    began_at: now,
                    expires_at,
                });
                if self.session.lives.len() > LIVES_KEPT {
                    self.session.lives.remove(0);
                }
            }
            SessionEvent::Partial(p) => self.transcript.set_partial(run, &p),
            SessionEvent::Final(f) => {
                if !self.transcript.push_final(run, &f, now) {
                    if let Some(ms) = f.latency_ms {
                        self.latency.push(ms);
                    }
                    let words = self.transcript.all().last().map_or(0, |t| t.words);
                    self.rate.push(now, words);
                }
            }
            SessionEvent::Finished { failure, .. } => {
                self.lifecycle.running = false;
                self.lifecycle.saving += 1;
                self.session.run_ended = Some(now);
                self.transcript.clear_partial();
                if failure.is_some() {
                    self.last_failure = failure;
                }
                if self.lifecycle.start_pending && self.lifecycle.quitting.is_none() {
                    self.start(now, out);
                }
            }
            SessionEvent::Hello { .. } => {}
            other => self.on_notice(other, now),
        }
    }

    /// Session events that only count or inform: rotations, losses, replays, warnings.
    fn on_notice(&mut self, event: SessionEvent, now: SystemTime) {
        match event {
            SessionEvent::Rotation {
                from, to, forced, ..
            } => {
                self.session.rotations += 1;
                let how = if forced {
                    "at a forced turn boundary near the deadline"
                } else {
                    "at a turn boundary"
                };
                self.events.push(
                    now,
                    Severity::Info,
                    format!("rotated: audio moved from connection {from} to {to} {how}, no gap"),
                );
            }
            SessionEvent::Lost {
                generation,
                class,
                code,
                reason,
                what_now,
            } => {
                let code_text = code.map_or_else(|| "no close code".to_owned(), |c| c.to_string());
                self.events.push(
                    now,
                    if class.retryable() {
                        Severity::Warn
                    } else {
                        Severity::Error
                    },
                    format!(
                        "connection {generation} lost: {} ({code_text}: {reason}); {what_now}",
                        class.describe()
                    ),
                );
                self.session.last_close = Some(CloseInfo {
                    code,
                    reason,
                    class,
                    at: now,
                });
            }
            SessionEvent::Reconnected {
                generation,
                replay_ms,
                gap_ms,
                ..
            } => {
                self.session.reconnects += 1;
                self.events.push(
                    now,
                    Severity::Info,
                    format!(
                        "reconnected on connection {generation}: replaying {:.1} s of buffered \
                         audio (no live session for {:.1} s)",
                        replay_ms as f64 / 1000.0,
                        gap_ms as f64 / 1000.0
                    ),
                );
            }
            SessionEvent::AudioLost { ms, .. } => {
                self.session.audio_lost_ms += ms;
                self.events.push(
                    now,
                    Severity::Error,
                    format!(
                        "{:.1} s of audio could not be transcribed (the outage outgrew the \
                         replay buffer)",
                        ms as f64 / 1000.0
                    ),
                );
            }
            SessionEvent::DrainTimedOut { generation } => self.events.push(
                now,
                Severity::Warn,
                format!("connection {generation} did not confirm its end in time; closed it"),
            ),
            SessionEvent::Termination {
                generation,
                audio_duration_seconds,
                session_duration_seconds,
            } => self.events.push(
                now,
                Severity::Info,
                format!(
                    "connection {generation} ended normally after {session_duration_seconds} s \
                     ({audio_duration_seconds} s of audio)"
                ),
            ),
            SessionEvent::Warning { message } => {
                self.events
                    .push(now, Severity::Warn, format!("the service warns: {message}"));
            }
            _ => {}
        }
    }

    fn on_view(&mut self, view: View, now: SystemTime) {
        self.session.retry_at = match &view {
            View::Backoff { retry_in_ms, .. } => Some(now + Duration::from_millis(*retry_in_ms)),
            _ => None,
        };
        let (level, text) = describe_view(&view);
        if let Some(text) = text {
            self.events.push(now, level, text);
        }
        match &view {
            View::Streaming { .. } => self.clear_problem(ProblemKind::Session),
            View::Failed { class, reason } => {
                self.last_failure = Some(reason.clone());
                let hint = failure_hint(*class, &self.key_hint(Action::ToggleStream));
                self.set_problem(Problem {
                    kind: ProblemKind::Session,
                    title: format!("Streaming stopped: {}", class.describe()),
                    detail: reason.clone(),
                    hint,
                });
            }
            _ => {}
        }
        self.session.view = view;
        self.session.since = now;
    }
}

/// What to do about a failure of `class`; `again` is the start key.
fn failure_hint(class: CloseClass, again: &str) -> String {
    match class {
        CloseClass::Fatal => format!(
            "Check the API key, the account balance and its access to streaming, then press \
             {again} to try again."
        ),
        CloseClass::ClientBug => format!(
            "aai-live sent something the service refused (audio format, chunk size or pacing); \
             the log file has details. Press {again} to try again."
        ),
        CloseClass::TokenRejected => format!(
            "The service refused a fresh token too: check the token provider's clock and \
             settings, then press {again}."
        ),
        CloseClass::RateLimited => {
            format!("Too many new sessions this minute: wait a minute, then press {again}.")
        }
        CloseClass::Transient => {
            format!("The service or the network is unreachable: press {again} to try again.")
        }
        CloseClass::Normal | CloseClass::SessionExpired => {
            format!("Press {again} to start again.")
        }
    }
}

/// A state change in plain words, for the events pane.
fn describe_view(view: &View) -> (Severity, Option<String>) {
    let text = match view {
        View::Idle => return (Severity::Info, None),
        View::Minting { generation, cause } => {
            format!(
                "getting a token for connection {generation} ({})",
                cause_words(*cause)
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
        } => {
            return (
                Severity::Warn,
                Some(format!(
                    "{}: attempt {attempt} in {:.1} s",
                    class.describe(),
                    *retry_in_ms as f64 / 1000.0
                )),
            );
        }
        View::Failed { class, reason } => {
            return (
                Severity::Error,
                Some(format!("failed ({}): {reason}", class.describe())),
            );
        }
    };
    (Severity::Info, Some(text))
}

/// Why a connection is being made, in words.
pub fn cause_words(cause: Cause) -> &'static str {
    match cause {
        Cause::Start => "starting",
        Cause::Rotation => "the next session, before this one expires",
        Cause::Expired => "the session expired",
        Cause::Dropped => "the connection dropped",
        Cause::TokenRejected => "the token was refused; one fresh try",
        Cause::User => "asked for",
    }
}

/// The first 8 characters of a session id.
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
