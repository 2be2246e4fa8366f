//! Live settings: what a session can be told mid-stream (`UpdateConfiguration`) and the
//! dashboard edits as one line — `keyterms=Ana, Kubernetes; min_turn_silence=400ms;
//! max_turn_silence=1.2s`. Pure: the line in, an update or an error naming the part out.

use crate::protocol::StreamingParams;
use crate::protocol::messages::UpdateConfiguration;

/// The settings the running session has (as configured, then as edited).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSettings {
    pub keyterms: Vec<String>,
    pub min_turn_silence: Option<u32>,
    pub max_turn_silence: Option<u32>,
    /// The model takes the turn silences mid-session (every current model but `whisper-rt`).
    pub silences_live: bool,
}

impl LiveSettings {
    pub fn from_params(params: &StreamingParams) -> Self {
        Self {
            // Shown on the screen: no control characters, whatever the configuration held.
            keyterms: params
                .keyterms_prompt
                .iter()
                .map(|k| crate::untrusted::without_controls(k).into_owned())
                .collect(),
            min_turn_silence: params.min_turn_silence,
            max_turn_silence: params.max_turn_silence,
            silences_live: params.takes_live_turn_silences(),
        }
    }

    /// The editable line, holding the current values.
    pub fn line(&self) -> String {
        let mut parts = vec![format!("keyterms={}", self.keyterms.join(", "))];
        if self.silences_live {
            let ms = |v: Option<u32>| v.map_or_else(String::new, |v| format!("{v}ms"));
            parts.push(format!("min_turn_silence={}", ms(self.min_turn_silence)));
            parts.push(format!("max_turn_silence={}", ms(self.max_turn_silence)));
        }
        parts.join("; ")
    }

    /// The update an edited `line` asks for (only what changed; `None`: nothing did), checked
    /// against the service's ranges. An empty silence leaves it as it is; empty keyterms clear
    /// them.
    pub fn parse(&self, line: &str) -> Result<Option<UpdateConfiguration>, String> {
        let mut update = UpdateConfiguration::default();
        for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("`{part}`: expected key=value"))?;
            match key {
                "keyterms" => {
                    let terms: Vec<String> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if terms != self.keyterms {
                        update.keyterms_prompt = Some(terms);
                    }
                }
                "min_turn_silence" | "max_turn_silence" if self.silences_live => {
                    if value.is_empty() {
                        continue;
                    }
                    let ms = crate::duration::parse_with_unit(
                        value,
                        std::time::Duration::from_millis(1),
                    )
                    .ok()
                    .and_then(|d| u32::try_from(d.as_millis()).ok())
                    .ok_or_else(|| {
                        format!("`{key}` = {value:?}: expected a duration such as 400ms or 1.2s")
                    })?;
                    let (slot, current) = if key == "min_turn_silence" {
                        (&mut update.min_turn_silence, self.min_turn_silence)
                    } else {
                        (&mut update.max_turn_silence, self.max_turn_silence)
                    };
                    if current != Some(ms) {
                        *slot = Some(ms);
                    }
                }
                "min_turn_silence" | "max_turn_silence" => {
                    return Err(format!("`{key}`: this model does not take it mid-session"));
                }
                other => {
                    return Err(format!(
                        "`{other}`: not a live setting (keyterms, min_turn_silence, max_turn_silence)"
                    ));
                }
            }
        }
        crate::protocol::params::check_update(&update).map_err(|e| e.to_string())?;
        Ok((update != UpdateConfiguration::default()).then_some(update))
    }

    /// The settings after `update`.
    pub fn apply(&mut self, update: &UpdateConfiguration) {
        if let Some(k) = &update.keyterms_prompt {
            self.keyterms.clone_from(k);
        }
        if let Some(v) = update.min_turn_silence {
            self.min_turn_silence = Some(v);
        }
        if let Some(v) = update.max_turn_silence {
            self.max_turn_silence = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LiveSettings {
        LiveSettings {
            keyterms: vec!["Ana".into()],
            min_turn_silence: Some(400),
            max_turn_silence: None,
            silences_live: true,
        }
    }

    #[test]
    fn the_line_holds_the_current_values_and_parses_back_to_nothing() {
        let s = settings();
        assert_eq!(
            s.line(),
            "keyterms=Ana; min_turn_silence=400ms; max_turn_silence="
        );
        assert_eq!(s.parse(&s.line()), Ok(None));
    }

    #[test]
    fn an_edit_becomes_an_update_of_what_changed() {
        let s = settings();
        let u = s
            .parse("keyterms=Ana, Kubernetes ;min_turn_silence=400; max_turn_silence=1.2s")
            .expect("valid")
            .expect("changed");
        assert_eq!(
            u.keyterms_prompt,
            Some(vec!["Ana".to_owned(), "Kubernetes".to_owned()])
        );
        assert_eq!(u.min_turn_silence, None, "unchanged: not sent");
        assert_eq!(u.max_turn_silence, Some(1200));
        let mut after = s.clone();
        after.apply(&u);
        assert_eq!(after.keyterms.len(), 2);
        assert_eq!(after.parse(&after.line()), Ok(None));
        // Empty keyterms clear them.
        let cleared = s.parse("keyterms=").expect("valid").expect("changed");
        assert_eq!(cleared.keyterms_prompt, Some(Vec::new()));
    }

    #[test]
    fn mistakes_name_the_part() {
        let s = settings();
        for (line, says) in [
            ("keyterms", "expected key=value"),
            ("colour=red", "`colour`: not a live setting"),
            ("min_turn_silence=soon", "`min_turn_silence` = \"soon\""),
            ("max_turn_silence=20s", "max_turn_silence"),
            (
                &format!("keyterms={}", "x".repeat(51)),
                "at most 50 characters",
            ),
        ] {
            let err = s.parse(line).expect_err(line);
            assert!(err.contains(says), "{line}: {err}");
        }
        let whisper = LiveSettings {
            silences_live: false,
            ..settings()
        };
        assert_eq!(whisper.line(), "keyterms=Ana");
        assert!(
            whisper
                .parse("min_turn_silence=300ms")
                .expect_err("refused")
                .contains("does not take it")
        );
    }
}
