//! `DashboardState::update`: the one place the model changes. `(state, msg, now) → commands`, with no
//! I/O, so every behaviour of the dashboard is testable by feeding messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::action::Action;
use super::msg::PromptKey;
use super::msg::{DashboardCommand, Msg, StartFailure};
use super::state::{
    CloseInfo, DashboardState, Life, Problem, ProblemKind, Prompt, PromptPurpose, SessionPanel,
};
use crate::audio::{AudioStats, InputEnd};
use crate::diagnosis::Diagnosis;
use crate::events::SessionEvent;
use crate::events::View;
use crate::failure::Failure;
use crate::provider::TokenState;
use crate::session;
use crate::strings::{self, Severity};

/// Sessions kept for the lifetime gauge (the live one, its successor, a retired one).
const LIVES_KEPT: usize = 4;

impl DashboardState {
    /// Apply one message; returns what the runtime must do.
    pub fn update(&mut self, msg: Msg, now: SystemTime) -> Vec<DashboardCommand> {
        let mut out = Vec::new();
        match msg {
            Msg::Action(action) => self.on_action(action, now, &mut out),
            Msg::Session(event) => self.on_session(event, now, &mut out, None),
            Msg::Sourced { index, event } => self.on_sourced(index, event, now, &mut out),
            Msg::SourceLevel(index, level) => {
                if let Some(source) = self.sources.get_mut(index) {
                    source.level = level;
                }
            }
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
                self.session.view = View::Failed(Failure::internal(reason.clone()));
                self.session.since = now;
                self.last_failure = Some(reason.clone());
                let hint = strings::crash_hint(&self.key_hint(Action::ToggleStream));
                self.set_problem(Problem {
                    kind: ProblemKind::Session,
                    title: strings::CRASH_TITLE.into(),
                    detail: reason.clone(),
                    hint,
                });
                self.events
                    .push(now, Severity::Error, strings::crashed(&reason));
                self.quit_if_done(&mut out);
            }
            Msg::Warning(text) => self.events.push(now, Severity::Warn, text),
            Msg::Prompt(key) => self.on_prompt(key, now, &mut out),
        }
        out
    }

    /// The first key of `action`, for hints ("press space").
    fn key_hint(&self, action: Action) -> String {
        self.keymap
            .first_key(action)
            .map_or_else(|| action.name().to_owned(), |k| k.to_string())
    }

    fn on_action(&mut self, action: Action, now: SystemTime, out: &mut Vec<DashboardCommand>) {
        match action {
            Action::ToggleStream => self.toggle_stream(now, out),
            Action::Pause => {
                let muted = !self.audio.muted;
                self.audio.muted = muted;
                self.lifecycle.last_keepalive = Some(now);
                if self.lifecycle.running {
                    out.push(DashboardCommand::Session(
                        session::SessionCommand::SetMuted(muted),
                    ));
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
                    out.push(DashboardCommand::Session(
                        session::SessionCommand::ForceEndpoint,
                    ));
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
                    out.push(DashboardCommand::Session(
                        session::SessionCommand::Reconnect,
                    ));
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
                out.push(DashboardCommand::MintToken);
                self.notify(now, Severity::Info, "minting a fresh token now");
                self.events
                    .push(now, Severity::Info, "fresh token asked for by the user");
            }
            Action::Export => {
                if self.transcript.all().is_empty() {
                    self.notify(now, Severity::Warn, "nothing to export yet");
                } else {
                    out.push(DashboardCommand::Export);
                    self.notify(now, Severity::Info, "exporting the transcript...");
                }
            }
            Action::NameSpeaker => self.open_name_prompt(now),
            Action::LiveSettings => {
                self.prompt = Some(Prompt {
                    purpose: PromptPurpose::Settings,
                    text: self.live.line(),
                });
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

    fn toggle_stream(&mut self, now: SystemTime, out: &mut Vec<DashboardCommand>) {
        if self.lifecycle.quitting.is_some() {
            return;
        }
        if !self.lifecycle.running {
            self.start(now, out);
            return;
        }
        let can_stop = self.session.is_active() || matches!(self.session.view, View::Idle);
        if can_stop && !self.lifecycle.stopping {
            out.push(DashboardCommand::Session(session::SessionCommand::Stop));
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

    fn start(&mut self, now: SystemTime, out: &mut Vec<DashboardCommand>) {
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
        for source in &mut self.sources {
            source.session = SessionPanel {
                since: now,
                run_started: Some(now),
                ..SessionPanel::default()
            };
        }
        self.last_failure = None;
        self.clear_problem(ProblemKind::Session);
        self.events.push(now, Severity::Info, "starting to stream");
        out.push(DashboardCommand::StartSession {
            run: self.lifecycle.run,
            muted: self.audio.muted,
        });
    }

    fn quit(&mut self, now: SystemTime, out: &mut Vec<DashboardCommand>) {
        if self.lifecycle.quitting.is_some() {
            // Asked twice: leave now. Finals are already in the journal on disk.
            self.should_quit = true;
            out.push(DashboardCommand::Quit);
            return;
        }
        if self.lifecycle.running || self.lifecycle.saving > 0 {
            if self.lifecycle.running
                && (self.session.is_active() || matches!(self.session.view, View::Idle))
                && !self.lifecycle.stopping
            {
                out.push(DashboardCommand::Session(session::SessionCommand::Stop));
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
        out.push(DashboardCommand::Quit);
    }

    /// While quitting: leave once nothing is running or being saved.
    fn quit_if_done(&mut self, out: &mut Vec<DashboardCommand>) {
        if self.lifecycle.quitting.is_some()
            && !self.lifecycle.running
            && self.lifecycle.saving == 0
            && !self.should_quit
        {
            self.should_quit = true;
            out.push(DashboardCommand::Quit);
        }
    }

    fn on_start_failed(
        &mut self,
        failure: StartFailure,
        now: SystemTime,
        out: &mut Vec<DashboardCommand>,
    ) {
        self.lifecycle.running = false;
        self.lifecycle.start_pending = false;
        self.session.view = View::Idle;
        self.session.since = now;
        self.session.run_started = None;
        let again = self.key_hint(Action::ToggleStream);
        let problem = match failure {
            StartFailure::Provider(failure) => Problem {
                kind: ProblemKind::Provider,
                title: strings::NO_PROVIDER_TITLE.into(),
                hint: strings::explained(strings::NO_PROVIDER_HINT, failure.diagnosis),
                detail: failure.reason,
            },
            StartFailure::Transcript(detail) => Problem {
                kind: ProblemKind::Session,
                title: strings::NO_TRANSCRIPT_TITLE.into(),
                detail,
                hint: strings::explained(
                    &strings::no_transcript_hint(&again),
                    Diagnosis::TranscriptDirNotWritable,
                ),
            },
            StartFailure::Audio(detail) => {
                self.audio.open = false;
                Problem {
                    kind: ProblemKind::Audio,
                    title: strings::NO_AUDIO_TITLE.into(),
                    detail,
                    hint: strings::explained(
                        &strings::no_audio_hint(&again),
                        Diagnosis::NoInputDevice,
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
                strings::audio_fell_behind(stats.dropped_frames),
            );
        }
        if stats.ended.is_some() && before.ended.is_none() {
            self.audio.open = false;
            match &stats.ended {
                Some(InputEnd::Failed(reason)) => {
                    let hint = strings::explained(
                        &strings::audio_lost_hint(&self.key_hint(Action::ToggleStream)),
                        Diagnosis::LocalFailure,
                    );
                    self.events
                        .push(now, Severity::Error, strings::audio_failed(reason));
                    // Quitting after this exits 1: the input failing is never a normal end.
                    self.last_failure = Some(strings::audio_failed(reason));
                    self.set_problem(Problem {
                        kind: ProblemKind::Audio,
                        title: strings::AUDIO_LOST_TITLE.into(),
                        detail: reason.clone(),
                        hint,
                    });
                }
                Some(InputEnd::Finished) => {
                    self.events.push(now, Severity::Info, strings::AUDIO_ENDED);
                }
                Some(InputEnd::Stopped) | None => {}
            }
        }
        self.audio.stats = stats;
    }

    fn on_tick(&mut self, now: SystemTime, out: &mut Vec<DashboardCommand>) {
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
            out.push(DashboardCommand::Quit);
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
                out.push(DashboardCommand::Session(
                    session::SessionCommand::KeepAlive,
                ));
            }
        }
    }

    /// Name the speaker of the turn the view is anchored on (the last one shown): open a prompt
    /// holding their current name.
    fn open_name_prompt(&mut self, now: SystemTime) {
        let Some(turn) = self.transcript.anchored() else {
            self.notify(now, Severity::Warn, "no turn to name the speaker of yet");
            return;
        };
        let Some(speaker) = turn
            .speaker
            .clone()
            .filter(|s| !crate::transcript::is_pending(s))
        else {
            let why = if turn.speaker.is_some() {
                "the service has not yet said who spoke this turn (speaker pending)"
            } else {
                "turns carry no speaker: set streaming.speaker_labels = true"
            };
            self.notify(now, Severity::Warn, why);
            return;
        };
        self.prompt = Some(Prompt {
            purpose: PromptPurpose::SpeakerName {
                source: turn.source.clone(),
                speaker,
            },
            text: turn.speaker_name.clone().unwrap_or_default(),
        });
    }

    fn on_prompt(&mut self, key: PromptKey, now: SystemTime, out: &mut Vec<DashboardCommand>) {
        let Some(prompt) = self.prompt.as_mut() else {
            return;
        };
        match key {
            PromptKey::Char(c)
                if !c.is_control() && prompt.text.chars().count() < prompt.max_chars() =>
            {
                prompt.text.push(c);
            }
            PromptKey::Char(_) => {}
            PromptKey::Backspace => {
                prompt.text.pop();
            }
            PromptKey::Cancel => self.prompt = None,
            PromptKey::Submit => {
                let Some(Prompt { purpose, text }) = self.prompt.take() else {
                    return;
                };
                if purpose == PromptPurpose::Settings {
                    self.submit_settings(text, now, out);
                    return;
                }
                let name = text.trim().to_owned();
                if name.is_empty() {
                    return;
                }
                match purpose {
                    PromptPurpose::SpeakerName { source, speaker } => {
                        self.transcript
                            .name_speaker(source.as_deref(), &speaker, &name);
                        self.events.push(
                            now,
                            Severity::Info,
                            format!("speaker {speaker} is {name} from now on"),
                        );
                        self.notify(now, Severity::Info, format!("{speaker} is {name}"));
                        out.push(DashboardCommand::NameSpeaker {
                            source,
                            speaker,
                            name,
                        });
                    }
                    PromptPurpose::Settings => {}
                }
            }
        }
    }

    /// The live settings line, submitted: a mistake reopens it as typed, with what is wrong;
    /// a change goes to the session (every input's) and is kept for the next runs.
    fn submit_settings(&mut self, text: String, now: SystemTime, out: &mut Vec<DashboardCommand>) {
        match self.live.parse(&text) {
            Err(why) => {
                self.notify(now, Severity::Warn, why);
                self.prompt = Some(Prompt {
                    purpose: PromptPurpose::Settings,
                    text,
                });
            }
            Ok(None) => self.notify(now, Severity::Info, "live settings unchanged"),
            Ok(Some(update)) => {
                self.live.apply(&update);
                self.notify(
                    now,
                    Severity::Info,
                    if self.session.is_active() {
                        "live settings sent to the session"
                    } else {
                        "live settings kept for the next session"
                    },
                );
                out.push(DashboardCommand::Session(session::SessionCommand::Update(
                    update,
                )));
            }
        }
    }

    /// Meeting mode: input `index`'s event. Its own panel takes it (as the run's panel takes a
    /// single input's), its lines in the events pane name the input, and the run's panel
    /// follows all inputs.
    fn on_sourced(
        &mut self,
        index: usize,
        event: SessionEvent,
        now: SystemTime,
        out: &mut Vec<DashboardCommand>,
    ) {
        let Some(source) = self.sources.get_mut(index) else {
            return;
        };
        let name = source.label.display_name();
        std::mem::swap(&mut self.session, &mut source.session);
        self.on_session(event, now, out, Some(&name));
        if let Some(source) = self.sources.get_mut(index) {
            std::mem::swap(&mut self.session, &mut source.session);
        }
        self.follow_sources();
    }

    /// The run's panel in meeting mode: the most pressing of the inputs' states (a failure, a
    /// wait, a session being set up, a hand-over, streaming), and their totals.
    fn follow_sources(&mut self) {
        let Some(pressing) = self
            .sources
            .iter()
            .max_by_key(|s| urgency(&s.session.view))
            .map(|s| s.session.clone())
        else {
            return;
        };
        let run = &mut self.session;
        run.view = pressing.view;
        run.since = pressing.since;
        run.retry_at = pressing.retry_at;
        run.lives = pressing.lives;
        run.last_token = pressing.last_token;
        run.rotations = self.sources.iter().map(|s| s.session.rotations).sum();
        run.reconnects = self.sources.iter().map(|s| s.session.reconnects).sum();
        run.audio_lost_ms = self.sources.iter().map(|s| s.session.audio_lost_ms).sum();
        run.last_close = self
            .sources
            .iter()
            .filter_map(|s| s.session.last_close.clone())
            .max_by_key(|c| c.at);
    }

    fn on_session(
        &mut self,
        event: SessionEvent,
        now: SystemTime,
        out: &mut Vec<DashboardCommand>,
        from: Option<&str>,
    ) {
        // The events pane says what the headless runner's stderr says, from the one dispatcher
        // (in meeting mode, after the input's name).
        if let Some(line) = strings::event_line(&event, now)
            && line.audience != strings::Audience::Stderr
        {
            let text = match from {
                Some(name) => format!("{name}: {}", line.text),
                None => line.text,
            };
            self.events.push(now, line.severity, text);
        }
        let run = self.lifecycle.run;
        // The model: one arm per event, no catch-all (a new event must be decided here).
        match event {
            SessionEvent::State { view } => self.on_view(view, now, from),
            SessionEvent::Token {
                generation,
                fingerprint,
                ..
            } => self.session.last_token = Some((generation, fingerprint)),
            SessionEvent::Begin { .. } | SessionEvent::RotationPlanned { .. } => {
                self.on_life(run, event, now);
            }
            SessionEvent::SpeakerRevision {
                generation,
                turn_order,
                speaker,
                speaker_name,
                speaker_uncertain,
                ..
            } => self.transcript.revise(
                run,
                (generation, turn_order),
                speaker.as_deref(),
                speaker_name.as_deref(),
                speaker_uncertain,
            ),
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
            SessionEvent::Rotation { .. } => self.session.rotations += 1,
            SessionEvent::Lost {
                class,
                code,
                reason,
                ..
            } => {
                self.session.last_close = Some(CloseInfo {
                    code,
                    reason: crate::untrusted::for_terminal(&reason).into_owned(),
                    class,
                    at: now,
                });
            }
            SessionEvent::Reconnected { .. } => self.session.reconnects += 1,
            SessionEvent::AudioLost { ms, .. } => self.session.audio_lost_ms += ms,
            SessionEvent::Hello { .. }
            | SessionEvent::TokenFailed { .. }
            | SessionEvent::DrainTimedOut { .. }
            | SessionEvent::Termination { .. }
            // The dashboard named them or changed them itself (its view already shows it).
            | SessionEvent::SpeakerNamed { .. }
            | SessionEvent::SettingsUpdated(_)
            | SessionEvent::Warning { .. } => {}
        }
    }

    /// A session's life: its `Begin`, and when its rotation is planned.
    fn on_life(&mut self, run: u32, event: SessionEvent, now: SystemTime) {
        match event {
            SessionEvent::Begin {
                generation,
                session_id,
                expires_at,
                ..
            } => {
                let expires_at = UNIX_EPOCH + Duration::from_secs(expires_at.max(0) as u64);
                self.session.lives.push(Life {
                    run,
                    generation,
                    session_id,
                    began_at: now,
                    expires_at,
                    rotates_at: None,
                });
                if self.session.lives.len() > LIVES_KEPT {
                    self.session.lives.remove(0);
                }
            }
            SessionEvent::RotationPlanned {
                generation,
                rotates_in_ms,
                ..
            } => {
                if let Some(life) = self
                    .session
                    .lives
                    .iter_mut()
                    .rev()
                    .find(|l| l.run == run && l.generation == generation)
                {
                    life.rotates_at = Some(now + Duration::from_millis(rotates_in_ms));
                }
            }
            _ => {}
        }
    }

    fn on_view(&mut self, view: View, now: SystemTime, from: Option<&str>) {
        self.session.retry_at = match &view {
            View::Backoff { retry_in_ms, .. } => Some(now + Duration::from_millis(*retry_in_ms)),
            _ => None,
        };
        match &view {
            View::Streaming { .. } => self.clear_problem(ProblemKind::Session),
            View::Failed(failure) => {
                self.last_failure = Some(strings::failure(failure));
                let key = self.key_hint(Action::ToggleStream);
                let hint = strings::stopped_hint_explained(failure, &key);
                let title = strings::stopped_title(failure.class);
                self.set_problem(Problem {
                    kind: ProblemKind::Session,
                    title: match from {
                        Some(name) => format!("{name}: {title}"),
                        None => title,
                    },
                    detail: failure.reason.clone(),
                    hint,
                });
            }
            _ => {}
        }
        self.session.view = view;
        self.session.since = now;
    }
}

/// How pressing a state is, for the run's panel in meeting mode (higher: shown).
fn urgency(view: &View) -> u8 {
    match view {
        View::Failed(_) => 7,
        View::Backoff { .. } => 6,
        View::Minting { .. } | View::Connecting { .. } => 5,
        View::Rotating { .. } => 4,
        View::Draining { .. } => 3,
        View::Streaming { .. } => 2,
        View::Stopped => 1,
        View::Idle => 0,
    }
}
