//! User intents ([`Action`]) and the live keymap that turns key presses into them.
//!
//! The actions are the keybinding vocabulary of `[keys]` in the configuration: each one has a
//! config name (`toggle_stream`), a description for the help overlay, and a short label for the
//! footer. The keymap is built from the validated `[keys]` section, so the help overlay and the
//! footer always show what the keys really do.

use std::collections::HashMap;

use ratatui::crossterm::event::{KeyCode as TermKey, KeyEvent, KeyEventKind, KeyModifiers};

use crate::config::{KeyCode, KeySpec, KeysConfig, Modifiers};

/// Something the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    ToggleStream,
    Pause,
    ForceEndpoint,
    Reconnect,
    MintToken,
    Export,
    Clear,
    ToggleEvents,
    Help,
    ScrollUp,
    ScrollDown,
    PageUp,
    PageDown,
    ScrollTop,
    ScrollBottom,
    Quit,
}

impl Action {
    /// Every action, in the order the help overlay lists them.
    pub const ALL: [Self; 16] = [
        Self::ToggleStream,
        Self::Pause,
        Self::ForceEndpoint,
        Self::Reconnect,
        Self::MintToken,
        Self::Export,
        Self::Clear,
        Self::ToggleEvents,
        Self::Help,
        Self::ScrollUp,
        Self::ScrollDown,
        Self::PageUp,
        Self::PageDown,
        Self::ScrollTop,
        Self::ScrollBottom,
        Self::Quit,
    ];

    /// The name in `[keys]`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ToggleStream => "toggle_stream",
            Self::Pause => "pause",
            Self::ForceEndpoint => "force_endpoint",
            Self::Reconnect => "reconnect",
            Self::MintToken => "mint_token",
            Self::Export => "export",
            Self::Clear => "clear",
            Self::ToggleEvents => "toggle_events",
            Self::Help => "help",
            Self::ScrollUp => "scroll_up",
            Self::ScrollDown => "scroll_down",
            Self::PageUp => "page_up",
            Self::PageDown => "page_down",
            Self::ScrollTop => "scroll_top",
            Self::ScrollBottom => "scroll_bottom",
            Self::Quit => "quit",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// What it does, for the help overlay and docs/keybindings.md.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ToggleStream => "start or stop streaming",
            Self::Pause => "mute or unmute: silence is sent, the session stays open",
            Self::ForceEndpoint => "end the current turn now (ForceEndpoint)",
            Self::Reconnect => "open a fresh session now (replays from the last final)",
            Self::MintToken => "drop the ready token and mint a fresh one now",
            Self::Export => "export the whole transcript (transcript.dir)",
            Self::Clear => "clear the screen (saved files keep everything)",
            Self::ToggleEvents => "show or hide the events pane",
            Self::Help => "show or hide this help",
            Self::ScrollUp => "scroll back one turn (stops following)",
            Self::ScrollDown => "scroll forward one turn",
            Self::PageUp => "scroll back a page",
            Self::PageDown => "scroll forward a page",
            Self::ScrollTop => "go to the first turn",
            Self::ScrollBottom => "go to the newest turn and follow again",
            Self::Quit => "quit: stop, wait for the last turns, save",
        }
    }

    /// A word or two for the footer.
    pub fn label(self) -> &'static str {
        match self {
            Self::ToggleStream => "start/stop",
            Self::Pause => "mute",
            Self::ForceEndpoint => "end turn",
            Self::Reconnect => "reconnect",
            Self::MintToken => "new token",
            Self::Export => "export",
            Self::Clear => "clear",
            Self::ToggleEvents => "events",
            Self::Help => "help",
            Self::ScrollUp => "up",
            Self::ScrollDown => "down",
            Self::PageUp => "page up",
            Self::PageDown => "page down",
            Self::ScrollTop => "top",
            Self::ScrollBottom => "follow",
            Self::Quit => "quit",
        }
    }
}

/// Key → action, from `[keys]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keymap {
    by_key: HashMap<KeySpec, Action>,
    /// Keys per action, in `Action::ALL` order (for help and footer).
    keys: Vec<(Action, Vec<KeySpec>)>,
}

impl Keymap {
    /// The keymap of a validated `[keys]` section. Names that are not actions (none pass
    /// validation today) are ignored rather than fatal: the UI must start.
    pub fn from_config(config: &KeysConfig) -> Self {
        let mut by_key = HashMap::new();
        let mut keys = Vec::new();
        for action in Action::ALL {
            let bound = config.keys_for(action.name()).to_vec();
            for key in &bound {
                by_key.entry(*key).or_insert(action);
            }
            keys.push((action, bound));
        }
        Self { by_key, keys }
    }

    /// The keys bound to `action`.
    pub fn keys(&self, action: Action) -> &[KeySpec] {
        self.keys
            .iter()
            .find(|(a, _)| *a == action)
            .map_or(&[], |(_, k)| k.as_slice())
    }

    /// Keys of `action` as text: `"space/s"`, or `"(unbound)"`.
    pub fn keys_text(&self, action: Action) -> String {
        let keys = self.keys(action);
        if keys.is_empty() {
            return "(unbound)".into();
        }
        keys.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The first key of `action`, for the footer.
    pub fn first_key(&self, action: Action) -> Option<KeySpec> {
        self.keys(action).first().copied()
    }

    pub fn action_for(&self, key: &KeySpec) -> Option<Action> {
        self.by_key.get(key).copied()
    }

    /// The action of a terminal key event (presses and auto-repeats; releases are ignored).
    pub fn action_for_event(&self, event: &KeyEvent) -> Option<Action> {
        if event.kind == KeyEventKind::Release {
            return None;
        }
        let code = match event.code {
            TermKey::Char(c) => KeyCode::Char(c),
            TermKey::Enter => KeyCode::Enter,
            TermKey::Esc => KeyCode::Esc,
            TermKey::Tab => KeyCode::Tab,
            TermKey::Backspace => KeyCode::Backspace,
            TermKey::Up => KeyCode::Up,
            TermKey::Down => KeyCode::Down,
            TermKey::Left => KeyCode::Left,
            TermKey::Right => KeyCode::Right,
            TermKey::PageUp => KeyCode::PageUp,
            TermKey::PageDown => KeyCode::PageDown,
            TermKey::Home => KeyCode::Home,
            TermKey::End => KeyCode::End,
            TermKey::F(n) => KeyCode::F(n),
            _ => return None,
        };
        let m = event.modifiers;
        let mut spec = KeySpec {
            code,
            modifiers: Modifiers {
                ctrl: m.contains(KeyModifiers::CONTROL),
                alt: m.contains(KeyModifiers::ALT),
                shift: m.contains(KeyModifiers::SHIFT),
            },
        };
        if let KeyCode::Char(_) = code {
            // Terminals report "?" or "Q" with SHIFT held; the character already says so, and
            // the config writes them without "shift-". Try that first, then the literal spec.
            let literal = spec;
            spec.modifiers.shift = false;
            return self.action_for(&spec).or_else(|| self.action_for(&literal));
        }
        self.action_for(&spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
        }
        assert_eq!(Action::from_name("nope"), None);
    }
}
