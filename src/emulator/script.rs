//! Word scripts: the words of a known recording and their times, so the emulator "recognises"
//! the right words for a known input.
//!
//! ```json
//! { "loop_ms": 9000,
//!   "turns": [ { "words": [ { "text": "hello", "start": 120, "end": 480 }, ... ] }, ... ] }
//! ```
//! Times are milliseconds from the start of the recording. With `loop_ms` the recording is taken
//! to repeat with that period (a looped demo file).

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Period after which the recording repeats, when it loops.
    #[serde(default)]
    pub loop_ms: Option<u64>,
    pub turns: Vec<ScriptTurn>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptTurn {
    pub words: Vec<ScriptWord>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptWord {
    pub text: String,
    pub start: u64,
    pub end: u64,
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

    /// Words must be non-empty, ordered, non-overlapping and inside the loop period.
    pub fn validate(&self) -> Result<(), String> {
        let mut last_end = 0;
        for (t, turn) in self.turns.iter().enumerate() {
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
}
