//! Key-binding syntax of the `[keys]` section: `"q"`, `"space"`, `"ctrl-c"`, `"alt-shift-f5"`.
//!
//! Only the syntax lives here. Mapping a [`KeySpec`] to terminal events is the UI's job, so this
//! module does not depend on crossterm.

use std::fmt;
use std::str::FromStr;

/// The key itself, without modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyCode {
    /// A printable character; `"space"` is `Char(' ')`.
    Char(char),
    Enter,
    Esc,
    Tab,
    Backspace,
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Home,
    End,
    /// Function key `F1`..=`F12`.
    F(u8),
}

/// Modifier keys held with a [`KeyCode`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Modifiers {
    pub ctrl: bool,
    pub alt: bool,
    pub shift: bool,
}

/// One parsed key binding, e.g. `ctrl-c`.
///
/// Equal specs are the same physical key press, which is what duplicate detection across actions
/// relies on. Characters are case-sensitive (`"Q"` is not `"q"`); names and modifiers are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeySpec {
    pub code: KeyCode,
    pub modifiers: Modifiers,
}

/// Named keys, in the spelling used by the config file and by [`KeySpec`]'s `Display`.
const NAMED: &[(&str, KeyCode)] = &[
    ("space", KeyCode::Char(' ')),
    ("enter", KeyCode::Enter),
    ("esc", KeyCode::Esc),
    ("tab", KeyCode::Tab),
    ("backspace", KeyCode::Backspace),
    ("up", KeyCode::Up),
    ("down", KeyCode::Down),
    ("left", KeyCode::Left),
    ("right", KeyCode::Right),
    ("pgup", KeyCode::PageUp),
    ("pgdn", KeyCode::PageDown),
    ("home", KeyCode::Home),
    ("end", KeyCode::End),
];

/// What a key spec may look like; ends every parse error message.
pub const KEY_SYNTAX: &str = "a single character, space, enter, esc, tab, backspace, up, down, \
     left, right, pgup, pgdn, home, end or f1-f12, optionally prefixed with ctrl-, alt- and/or shift-";

impl FromStr for KeySpec {
    type Err = String;

    /// The error is a message without the spec itself, to follow "`keys.quit` = \"x\": ".
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut modifiers = Modifiers::default();
        let mut rest = spec;
        // Strip prefixes only while something follows them, so "-" and "ctrl--" (ctrl + minus)
        // parse, and "ctrl-" alone is rejected below as an unknown key.
        while let Some((prefix, tail)) = rest.split_once('-') {
            if tail.is_empty() {
                break;
            }
            let flag = match prefix.to_ascii_lowercase().as_str() {
                "ctrl" => &mut modifiers.ctrl,
                "alt" => &mut modifiers.alt,
                "shift" => &mut modifiers.shift,
                _ => break,
            };
            if *flag {
                return Err(format!(
                    "the modifier {}- is given twice",
                    prefix.to_ascii_lowercase()
                ));
            }
            *flag = true;
            rest = tail;
        }
        let code = parse_code(rest).ok_or_else(|| format!("not a key; use {KEY_SYNTAX}"))?;
        Ok(Self { code, modifiers })
    }
}

fn parse_code(text: &str) -> Option<KeyCode> {
    let mut chars = text.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        // Control characters cannot be typed into the config file meaningfully; they have names.
        return (!c.is_control()).then_some(KeyCode::Char(c));
    }
    let lower = text.to_ascii_lowercase();
    if let Some((_, code)) = NAMED.iter().find(|(name, _)| *name == lower) {
        return Some(*code);
    }
    let n: u8 = lower.strip_prefix('f')?.parse().ok()?;
    (1..=12).contains(&n).then_some(KeyCode::F(n))
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, prefix) in [
            (self.modifiers.ctrl, "ctrl-"),
            (self.modifiers.alt, "alt-"),
            (self.modifiers.shift, "shift-"),
        ] {
            if on {
                f.write_str(prefix)?;
            }
        }
        write!(f, "{}", self.code)
    }
}

impl fmt::Display for KeyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((name, _)) = NAMED.iter().find(|(_, code)| code == self) {
            return f.write_str(name);
        }
        match self {
            Self::Char(c) => write!(f, "{c}"),
            Self::F(n) => write!(f, "f{n}"),
            // Every other variant is in NAMED.
            _ => write!(f, "{self:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> KeySpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_chars_names_and_modifiers() {
        assert_eq!(key("q").code, KeyCode::Char('q'));
        assert_eq!(key("?").code, KeyCode::Char('?'));
        assert_eq!(key("-").code, KeyCode::Char('-'));
        assert_eq!(key("space").code, KeyCode::Char(' '));
        assert_eq!(key("PgDn").code, KeyCode::PageDown);
        assert_eq!(key("f12").code, KeyCode::F(12));
        assert_eq!(key("f").code, KeyCode::Char('f'));
        let k = key("ctrl-alt-shift-c");
        assert_eq!(k.code, KeyCode::Char('c'));
        assert_eq!(
            k.modifiers,
            Modifiers {
                ctrl: true,
                alt: true,
                shift: true
            }
        );
        let minus = key("ctrl--");
        assert_eq!(
            (minus.code, minus.modifiers.ctrl),
            (KeyCode::Char('-'), true)
        );
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "",
            "ctrl-",
            "ctrll-c",
            "f0",
            "f13",
            "qq",
            "ctrl-ctrl-c",
            "\t",
            "hyper-x",
        ] {
            assert!(bad.parse::<KeySpec>().is_err(), "{bad:?} should not parse");
        }
        let err = "ctrll-c".parse::<KeySpec>().expect_err("typo");
        assert!(
            err.starts_with("not a key; use a single character"),
            "{err}"
        );
    }

    #[test]
    fn display_round_trips_in_canonical_form() {
        for (input, shown) in [
            ("space", "space"),
            ("Shift-Ctrl-UP", "ctrl-shift-up"),
            ("alt-f5", "alt-f5"),
            ("ctrl-c", "ctrl-c"),
            ("?", "?"),
        ] {
            let spec = key(input);
            assert_eq!(spec.to_string(), shown);
            assert_eq!(key(shown), spec);
        }
    }
}
