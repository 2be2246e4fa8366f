//! Word scripts: the words of a known recording and their times, so the emulator "recognises"
//! the right words for a known input.
//!
//! ```json
//! { "loop_ms": 9000,
//!   "turns": [ { "words": [ { "text": "hello", "start": 120, "end": 480 }, ... ] }, ... ] }
//! ```
//! Times are milliseconds from the start of the recording. With `loop_ms` the recording is taken
//! to repeat with that period (a looped demo file).
//!
//! A turn may also say who speaks it and in which language: `"speaker"` (a short name for the
//! scripted person, e.g. `"ana"`; the emulator labels people per session, as diarization does),
//! `"revised_speaker"` (the turn is first labelled as `speaker`, then corrected by a
//! `SpeakerRevision` before `Termination`) and `"language"` (a language code such as `"es"`).
//! Script files are untrusted input: these values are checked for length and characters, and
//! every error names the turn and the field.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Period after which the recording repeats, when it loops.
    #[serde(default)]
    pub loop_ms: Option<u64>,
    pub turns: Vec<ScriptTurn>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptTurn {
    pub words: Vec<ScriptWord>,
    /// Who speaks the turn (a name for the scripted person, not a label: labels are given per
    /// session). Without it the speaker follows the turn's stream time (docs/emulator.md).
    #[serde(default)]
    pub speaker: Option<String>,
    /// The speaker a `SpeakerRevision` gives the turn before `Termination`.
    #[serde(default)]
    pub revised_speaker: Option<String>,
    /// The language the turn is spoken in (`language_code` with `language_detection`).
    #[serde(default)]
    pub language: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptWord {
    pub text: String,
    pub start: u64,
    pub end: u64,
}

/// What a script says about a turn besides its words.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TurnMeta {
    pub speaker: Option<Arc<str>>,
    pub revised_speaker: Option<Arc<str>>,
    pub language: Option<Arc<str>>,
}

impl ScriptTurn {
    pub fn meta(&self) -> TurnMeta {
        let shared = |v: &Option<String>| v.as_deref().map(Arc::from);
        TurnMeta {
            speaker: shared(&self.speaker),
            revised_speaker: shared(&self.revised_speaker),
            language: shared(&self.language),
        }
    }

    /// `speaker`, `revised_speaker` and `language`; the error starts with the field's name and
    /// quotes the value (cut, escaped).
    fn validate_meta(&self) -> Result<(), String> {
        let quoted = |v: &str| format!("{:?}", super::echo(v, ECHO_CHARS));
        for (field, value) in [
            ("speaker", &self.speaker),
            ("revised_speaker", &self.revised_speaker),
        ] {
            if let Some(name) = value {
                check_speaker(name).map_err(|why| format!("{field} ({}): {why}", quoted(name)))?;
            }
        }
        if let Some(code) = &self.language {
            check_language(code).map_err(|why| format!("language ({}): {why}", quoted(code)))?;
        }
        if let (Some(first), Some(revised)) = (&self.speaker, &self.revised_speaker)
            && first == revised
        {
            return Err(format!(
                "revised_speaker ({}): the same as speaker, so there is nothing to revise",
                quoted(revised)
            ));
        }
        Ok(())
    }
}

/// Longest speaker name, in characters: a name, not a paragraph (it is echoed in records).
pub const MAX_SPEAKER_CHARS: usize = 32;
/// Longest language code, in characters (`zh-Hant-TW` is 10).
pub const MAX_LANGUAGE_CHARS: usize = 16;
/// Bad values are echoed in errors cut to this many characters.
const ECHO_CHARS: usize = 40;

/// A speaker name: 1–32 characters, letters, digits, spaces (not at either end) and `-_.'`.
/// Control and bidi characters are refused, as names end up in logs and session records.
pub fn check_speaker(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err("empty (give a short name such as \"ana\")".into());
    }
    if chars > MAX_SPEAKER_CHARS {
        return Err(format!(
            "{chars} characters (at most {MAX_SPEAKER_CHARS}: a short name such as \"ana\")"
        ));
    }
    if name.starts_with(' ') || name.ends_with(' ') {
        return Err("starts or ends with a space".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '\'')))
    {
        return Err(format!(
            "{bad:?} is not allowed (letters, digits, spaces and - _ . ' only)"
        ));
    }
    Ok(())
}

/// A language code: 2–3 lowercase ASCII letters, optionally followed by subtags of 2–8 ASCII
/// letters or digits after `-` (`en`, `es`, `pt-BR`, `zh-Hant-TW`); at most 16 characters.
pub fn check_language(code: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "a language code: 2–3 lowercase letters, optionally with subtags such as \"pt-BR\"";
    if code.chars().count() > MAX_LANGUAGE_CHARS {
        return Err(format!(
            "longer than {MAX_LANGUAGE_CHARS} characters (expected {EXPECTED})"
        ));
    }
    let mut parts = code.split('-');
    let primary = parts.next().unwrap_or_default();
    let primary_ok =
        (2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_lowercase());
    let subtags_ok = parts
        .all(|tag| (2..=8).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_alphanumeric()));
    if primary_ok && subtags_ok {
        Ok(())
    } else {
        Err(format!("expected {EXPECTED}"))
    }
}

/// A script word flattened with its turn index.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedWord {
    pub text: String,
    pub start: u64,
    pub end: u64,
    pub turn: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot read script {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("script {path} is not valid: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("script {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The most of a script file read: 16 MiB (a script of an hour of speech is about 1 MB).
pub const MAX_SCRIPT_BYTES: u64 = 16 * 1024 * 1024;

impl Script {
    pub fn load(path: &Path) -> Result<Self, ScriptError> {
        let p = path.display().to_string();
        let text = crate::files::read_capped_string(path, MAX_SCRIPT_BYTES).map_err(|source| {
            ScriptError::Io {
                path: p.clone(),
                source,
            }
        })?;
        let script: Self = serde_json::from_str(&text).map_err(|source| ScriptError::Json {
            path: p.clone(),
            source,
        })?;
        script
            .validate()
            .map_err(|message| ScriptError::Invalid { path: p, message })?;
        Ok(script)
    }

    /// Words must be non-empty, ordered, non-overlapping and inside the loop period; speakers
    /// and languages must be short names and language codes.
    pub fn validate(&self) -> Result<(), String> {
        let mut last_end = 0;
        for (t, turn) in self.turns.iter().enumerate() {
            turn.validate_meta()
                .map_err(|message| format!("turns[{t}].{message}"))?;
            for (w, word) in turn.words.iter().enumerate() {
                let at = format!("turns[{t}].words[{w}] ({:?})", word.text);
                if word.text.trim().is_empty() {
                    return Err(format!("{at}: empty text"));
                }
                if word.end <= word.start {
                    return Err(format!(
                        "{at}: end {} is not after start {}",
                        word.end, word.start
                    ));
                }
                if word.start < last_end {
                    return Err(format!(
                        "{at}: starts at {} before the previous word ends at {last_end}",
                        word.start
                    ));
                }
                if let Some(period) = self.loop_ms
                    && word.end > period
                {
                    return Err(format!("{at}: ends at {} after loop_ms {period}", word.end));
                }
                last_end = word.end;
            }
        }
        if self.words().is_empty() {
            return Err("no words".into());
        }
        Ok(())
    }

    /// All words in order, with their turn index.
    pub fn words(&self) -> Vec<TimedWord> {
        self.turns
            .iter()
            .enumerate()
            .flat_map(|(turn, t)| {
                t.words.iter().map(move |w| TimedWord {
                    text: w.text.clone(),
                    start: w.start,
                    end: w.end,
                    turn,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_validates() {
        let s: Script = serde_json::from_str(
            r#"{"loop_ms":3000,"turns":[{"words":[{"text":"hi","start":0,"end":200},{"text":"there","start":250,"end":600}]},{"words":[{"text":"bye","start":1500,"end":1800}]}]}"#,
        )
        .expect("json");
        s.validate().expect("valid");
        let words = s.words();
        assert_eq!(words.len(), 3);
        assert_eq!(words[2].turn, 1);

        let overlapping: Script = serde_json::from_str(
            r#"{"turns":[{"words":[{"text":"a","start":0,"end":300},{"text":"b","start":200,"end":400}]}]}"#,
        )
        .expect("json");
        assert!(
            overlapping
                .validate()
                .expect_err("invalid")
                .contains("before the previous word")
        );
        let past_loop: Script = serde_json::from_str(
            r#"{"loop_ms":100,"turns":[{"words":[{"text":"a","start":0,"end":300}]}]}"#,
        )
        .expect("json");
        assert!(past_loop.validate().is_err());
    }

    /// A one-turn script with the given turn fields (JSON members, e.g. `"speaker":"ana"`).
    fn with_turn_fields(fields: &str) -> String {
        format!(
            r#"{{"turns":[{{"words":[{{"text":"a","start":0,"end":300}}]}},{{{fields}"words":[{{"text":"b","start":400,"end":700}}]}}]}}"#
        )
    }

    fn check(json: &str) -> Result<Script, String> {
        let script: Script = serde_json::from_str(json).map_err(|e| e.to_string())?;
        script.validate()?;
        Ok(script)
    }

    #[test]
    fn speakers_and_languages_parse_and_reach_the_turn() {
        let script = check(&with_turn_fields(
            r#""speaker":"Ana María","revised_speaker":"o'brien-2","language":"pt-BR","#,
        ))
        .expect("valid");
        let meta = script.turns[1].meta();
        assert_eq!(meta.speaker.as_deref(), Some("Ana María"));
        assert_eq!(meta.revised_speaker.as_deref(), Some("o'brien-2"));
        assert_eq!(meta.language.as_deref(), Some("pt-BR"));
        assert_eq!(script.turns[0].meta(), TurnMeta::default());
    }

    #[test]
    fn bad_speakers_and_languages_are_named_with_the_turn() {
        for (fields, expected) in [
            (r#""speaker":"","#, "turns[1].speaker (\"\"): empty"),
            (
                r#""speaker":"ana\u001b[31m","#,
                "turns[1].speaker (\"ana\\u{1b}[31m\"): '\\u{1b}' is not allowed",
            ),
            (r#""speaker":" ana","#, "starts or ends with a space"),
            (
                r#""revised_speaker":"ana/ben","#,
                "turns[1].revised_speaker",
            ),
            (
                r#""speaker":"a-very-long-name-for-one-person-indeed","#,
                "turns[1].speaker (\"a-very-long-name-for-one-person-indeed\"): 38 characters",
            ),
            (
                r#""language":"English","#,
                "turns[1].language (\"English\"): expected",
            ),
            (r#""language":"e","#, "turns[1].language"),
            (r#""language":"en-","#, "turns[1].language"),
            (r#""language":"en-US-x","#, "turns[1].language"),
            (
                r#""speaker":"ana","revised_speaker":"ana","#,
                "turns[1].revised_speaker (\"ana\"): the same as speaker",
            ),
        ] {
            let error = check(&with_turn_fields(fields)).expect_err(fields);
            assert!(error.contains(expected), "{fields}: {error}");
        }
        // A wrong type or an unknown field is serde's error, naming the field.
        let error = check(&with_turn_fields(r#""speaker":7,"#)).expect_err("a number");
        assert!(error.contains("invalid type"), "{error}");
        let error = check(&with_turn_fields(r#""speakr":"ana","#)).expect_err("a typo");
        assert!(error.contains("unknown field `speakr`"), "{error}");
    }

    #[test]
    fn a_script_file_with_a_bad_field_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("script.json");
        std::fs::write(&path, with_turn_fields(r#""language":"klingon","#)).expect("write");
        let error = Script::load(&path).expect_err("invalid").to_string();
        assert!(
            error.contains("script.json") && error.contains("turns[1].language"),
            "{error}"
        );
    }

    proptest! {
        /// Well-formed names and codes are accepted.
        #[test]
        fn good_speakers_and_languages_are_accepted(
            speaker in "[a-zA-Z0-9][a-zA-Z0-9 _.'-]{0,30}[a-zA-Z0-9]",
            language in "[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,1}",
        ) {
            prop_assert_eq!(check_speaker(&speaker), Ok(()));
            prop_assert_eq!(check_language(&language), Ok(()));
        }

        /// Any text in the new fields: no panic; an error names the turn and field and stays
        /// short however long the value; an accepted value is within the documented limits.
        #[test]
        fn any_speaker_or_language_is_checked_without_panicking(
            value in prop_oneof![".{0,40}", "\\PC{0,200}", "[a-z-]{0,20}"],
            field in proptest::sample::select(vec!["speaker", "revised_speaker", "language"]),
        ) {
            let turn = ScriptTurn {
                words: vec![ScriptWord { text: "a".into(), start: 0, end: 100 }],
                ..ScriptTurn::default()
            };
            let turn = match field {
                "speaker" => ScriptTurn { speaker: Some(value.clone()), ..turn },
                "revised_speaker" => ScriptTurn { revised_speaker: Some(value.clone()), ..turn },
                _ => ScriptTurn { language: Some(value.clone()), ..turn },
            };
            let script = Script { loop_ms: None, turns: vec![turn] };
            match script.validate() {
                Ok(()) => {
                    let chars = value.chars().count();
                    if field == "language" {
                        prop_assert!((2..=MAX_LANGUAGE_CHARS).contains(&chars));
                        prop_assert!(value.is_ascii());
                    } else {
                        prop_assert!((1..=MAX_SPEAKER_CHARS).contains(&chars));
                        prop_assert!(!value.chars().any(char::is_control));
                    }
                }
                Err(message) => {
                    let prefix = format!("turns[0].{field} (");
                    prop_assert!(message.starts_with(&prefix), "{}", message);
                    prop_assert!(message.chars().count() < 400, "{}", message);
                }
            }
        }

        /// Near-valid script text: parsing and checking never panic, whatever is spliced in.
        #[test]
        fn script_text_never_panics(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["speaker", "revised_speaker", "language", "words", "other"]),
                    prop_oneof![
                        ".{0,20}".prop_map(serde_json::Value::from),
                        any::<i64>().prop_map(serde_json::Value::from),
                        Just(serde_json::Value::Null),
                        Just(serde_json::json!([])),
                    ],
                ),
                0..4,
            ),
            cut in 0_usize..400,
        ) {
            let mut turn = serde_json::json!({"words":[{"text":"a","start":0,"end":300}]});
            for (name, value) in fields {
                turn[name] = value;
            }
            let text = serde_json::json!({"turns":[turn]}).to_string();
            let _ = check(&text);
            // Truncated text too (an unfinished file).
            let end = text.char_indices().nth(cut).map_or(text.len(), |(i, _)| i);
            let _ = check(&text[..end]);
        }
    }
}
