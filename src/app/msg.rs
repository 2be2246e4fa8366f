//! What `update` asks the runtime to do ([`DashboardCommand`]), and what the runtime and the
//! background tasks tell `update` ([`Msg`]), including every terminal event as a message through
//! the keymap ([`Msg::from_terminal`]). `update` itself does no I/O.

use std::path::PathBuf;

use ratatui::crossterm::event::{Event, KeyCode, KeyEventKind, MouseEventKind};

use super::action::{Action, Keymap};
use crate::audio::{AudioStats, Level};
use crate::events::SessionEvent;
use crate::provider::TokenState;
use crate::session;

/// An input to `update`.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// The user asked for something (a key, the mouse wheel).
    Action(Action),
    /// The supervisor reported something (the run's, or its single input's).
    Session(SessionEvent),
    /// Meeting mode: input `index`'s stream reported something.
    Sourced {
        index: usize,
        event: SessionEvent,
    },
    /// Meeting mode: input `index`'s level.
    SourceLevel(usize, Level),
    /// The pre-mint scheduler's state changed.
    Token(TokenState),
    Level(Level),
    AudioStats(AudioStats),
    /// The terminal is now this big (columns, rows).
    Resize(u16, u16),
    /// Time passed (a frame): deadlines, notices, KeepAlive while muted.
    Tick,
    /// Esc: close the help overlay.
    Dismiss,
    /// The audio input was opened (again); its display name.
    AudioOpened(String),
    /// A session could not be started: why, and what is missing.
    StartFailed(StartFailure),
    /// A finished run's transcript was written (the files), or could not be.
    Saved(Result<Vec<PathBuf>, String>),
    /// An export was written, or could not be.
    Exported(Result<Vec<PathBuf>, String>),
    /// The supervisor task ended without saying `Finished` (it panicked).
    SessionCrashed(String),
    /// Something to show in the events pane (e.g. a provider warning).
    Warning(String),
    /// A key typed into the open prompt.
    Prompt(PromptKey),
}

/// What a key does while a prompt is open: the keymap is set aside, so any letter can be
/// typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKey {
    Char(char),
    Backspace,
    Submit,
    Cancel,
}

impl PromptKey {
    /// A terminal key as prompt editing, `None` for keys a prompt ignores.
    pub fn from_terminal(event: &Event) -> Option<Self> {
        let Event::Key(key) = event else {
            return None;
        };
        if key.kind == KeyEventKind::Release {
            return None;
        }
        match key.code {
            KeyCode::Char(c)
                if !key
                    .modifiers
                    .contains(ratatui::crossterm::event::KeyModifiers::CONTROL) =>
            {
                Some(Self::Char(c))
            }
            // Ctrl-C leaves the prompt, as Esc does (a second one quits as usual).
            KeyCode::Char('c') | KeyCode::Esc => Some(Self::Cancel),
            KeyCode::Backspace => Some(Self::Backspace),
            KeyCode::Enter => Some(Self::Submit),
            _ => None,
        }
    }
}

impl Msg {
    /// A terminal event as a message: keys through the keymap, the mouse wheel as scrolling,
    /// Esc to close the help, resizes; `None` for the rest.
    pub fn from_terminal(event: &Event, keymap: &Keymap) -> Option<Self> {
        match event {
            Event::Key(key) => keymap.action_for_event(key).map(Self::Action).or_else(|| {
                (key.code == KeyCode::Esc && key.kind != KeyEventKind::Release)
                    .then_some(Self::Dismiss)
            }),
            Event::Mouse(mouse) => match mouse.kind {
                MouseEventKind::ScrollUp => Some(Self::Action(Action::ScrollUp)),
                MouseEventKind::ScrollDown => Some(Self::Action(Action::ScrollDown)),
                _ => None,
            },
            Event::Resize(w, h) => Some(Self::Resize(*w, *h)),
            _ => None,
        }
    }
}

/// Why the runtime could not start a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFailure {
    /// No token provider (it failed to build): why, and where that is explained.
    Provider(crate::failure::Failure),
    /// The audio input cannot be opened.
    Audio(String),
    /// The transcript journal cannot be created.
    Transcript(String),
}

/// An effect for the runtime to carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum DashboardCommand {
    /// Send a command to the running supervisor.
    Session(session::SessionCommand),
    /// Spawn a supervisor for run `run` (reopening the audio input if it ended), apply `muted`,
    /// and start it.
    StartSession { run: u32, muted: bool },
    /// Call `speaker` of input `source` (`None`: of every input) `name`, in this run and the
    /// next.
    NameSpeaker {
        source: Option<String>,
        speaker: String,
        name: String,
    },
    /// Drop the ready token and mint a fresh one now.
    MintToken,
    /// Write the whole transcript in the configured formats.
    Export,
    /// Leave: restore the terminal and return.
    Quit,
}
