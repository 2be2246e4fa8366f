//! User intents ([`Action`]) and the live keymap that turns key presses into them.
//!
//! The actions are the keybinding vocabulary of `[keys]` in the configuration: each one has a
//! config name (`toggle_stream`), a description for the help overlay, and a short label for the
//! footer. The keymap is built from the validated `[keys]` section, so the help overlay and the
//! footer always show what the keys really do.

use std::collections::HashMap;

use ratatui::crossterm::event::{KeyCode as TermKey, KeyEvent, KeyEventKind, KeyModifiers};

use crate::config::{KeyCode, KeySpec, KeysConfig, Modifiers};

/// Something the user asked for: the `[keys]` vocabulary. The config name is the variant in
/// snake_case (`toggle_stream`), the doc comment is the description the help overlay shows (and
/// docs/keybindings.md repeats), the message is the footer label; the declaration order is the
/// help overlay's order.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::EnumIter,
    strum::EnumCount,
    strum::EnumMessage,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Action {
    /// start or stop streaming
    #[strum(message = "start/stop")]
    ToggleStream,
    /// mute or unmute: silence is sent, the session stays open
    #[strum(message = "mute")]
    Pause,
    /// end the current turn now (ForceEndpoint)
    #[strum(message = "end turn")]
    ForceEndpoint,
    /// open a fresh session now (replays from the last final)
    #[strum(message = "reconnect")]
    Reconnect,
    /// drop the ready token and mint a fresh one now
    #[strum(message = "new token")]
    MintToken,
    /// export the whole transcript (transcript.dir)
    #[strum(message = "export")]
    Export,
    /// clear the screen (saved files keep everything)
    #[strum(message = "clear")]
    Clear,
    /// name the speaker of the last turn shown (journal and exports too)
    #[strum(message = "name")]
    NameSpeaker,
    /// edit live settings: keyterms, turn silences
    #[strum(message = "settings")]
    LiveSettings,
    /// show or hide the events pane
    #[strum(message = "events")]
    ToggleEvents,
    /// show or hide this help
    #[strum(message = "help")]
    Help,
    /// scroll back one turn (stops following)
    #[strum(message = "up")]
    ScrollUp,
    /// scroll forward one turn
    #[strum(message = "down")]
    ScrollDown,
    /// scroll back a page
    #[strum(message = "page up")]
    PageUp,
    /// scroll forward a page
    #[strum(message = "page down")]
    PageDown,
    /// go to the first turn
    #[strum(message = "top")]
    ScrollTop,
    /// go to the newest turn and follow again
    #[strum(message = "follow")]
    ScrollBottom,
    /// quit: stop, wait for the last turns, save
    #[strum(message = "quit")]
    Quit,
}

impl Action {
    /// How many actions there are.
    pub const COUNT: usize = <Self as strum::EnumCount>::COUNT;

    /// Every action, in the order the help overlay lists them.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// The name in `[keys]`.
    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn from_name(name: &str) -> Option<Self> {
        name.parse().ok()
    }

    /// What it does, for the help overlay and docs/keybindings.md: the variant's doc comment.
    pub fn describe(self) -> &'static str {
        strum::EnumMessage::get_documentation(&self).unwrap_or_default()
    }

    /// A word or two for the footer.
    pub fn label(self) -> &'static str {
        strum::EnumMessage::get_message(&self).unwrap_or_default()
    }
}

/// Key → action, from `[keys]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keymap {
    by_key: HashMap<KeySpec, Action>,
    /// Keys per action, in `Action::all()` order (for help and footer).
    keys: Vec<(Action, Vec<KeySpec>)>,
}

impl Keymap {
    /// The keymap of a validated `[keys]` section. Names that are not actions (none pass
    /// validation today) are ignored rather than fatal: the UI must start.
    pub fn from_config(config: &KeysConfig) -> Self {
        let mut by_key = HashMap::new();
        let mut keys = Vec::new();
        for action in Action::all() {
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
        for a in Action::all() {
            assert_eq!(Action::from_name(a.name()), Some(a));
        }
        assert_eq!(Action::from_name("nope"), None);
        assert_eq!(Action::ToggleStream.name(), "toggle_stream");
        assert_eq!(Action::all().count(), Action::COUNT);
    }

    #[test]
    fn every_action_has_a_description_and_a_label() {
        for a in Action::all() {
            let (text, label) = (a.describe(), a.label());
            assert!(!text.is_empty() && !text.contains('\n'), "{a:?}: {text:?}");
            assert!(!label.is_empty(), "{a:?}");
        }
        assert_eq!(Action::Help.describe(), "show or hide this help");
        assert_eq!(Action::ScrollBottom.label(), "follow");
    }
}
