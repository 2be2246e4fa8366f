//! Turn semantics per model: each model's defaults for the turn parameters, the U3-Pro modes,
//! the end-of-turn confidence the emulator decides with, and which documented parameters it
//! accepts without simulating them. The recogniser asks here; docs/emulator.md ("Turn
//! detection per model") states the same rules for people.
//!
//! Defaults follow ../shared/protocol.md §2.3 (the service since 2025-09-09; both profiles the
//! emulator offers are later than that change):
//!
//! | model | `min_turn_silence` | `max_turn_silence` | `vad_threshold` | threshold | mode |
//! |---|---|---|---|---|---|
//! | Universal-Streaming (`universal-streaming-*`, others) | 400 | 1280 | 0.4 | 0.4 | null |
//! | `u3-rt-pro` (and `u3-pro`, `--profile u3-pro`) | 100 | 1000 | 0.3 | unused | `balanced` |
//! | `universal-3-5-pro`, `universal-3-6-pro` | by mode | by mode | 0.2 | unused | `balanced` |

use crate::protocol::StreamingParams;
use crate::protocol::params::ParamError;

use super::Profile;

/// The U3-Pro family's latency/accuracy trade-off (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    MinLatency,
    #[default]
    Balanced,
    MaxAccuracy,
}

impl Mode {
    /// The value as the service spells it (`Begin.configuration.mode`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MinLatency => "min_latency",
            Self::Balanced => "balanced",
            Self::MaxAccuracy => "max_accuracy",
        }
    }

    /// A client's `mode`, or an error naming it (3006 on the wire, as for any bad value).
    pub fn parse(value: &str) -> Result<Self, ParamError> {
        match value.trim() {
            "min_latency" => Ok(Self::MinLatency),
            "balanced" => Ok(Self::Balanced),
            "max_accuracy" => Ok(Self::MaxAccuracy),
            _ => Err(ParamError {
                name: "mode".into(),
                value: value.into(),
                expected: "min_latency, balanced or max_accuracy".into(),
            }),
        }
    }

    /// (`min_turn_silence`, `max_turn_silence`) in ms for the models with modes: [skill] in
    /// protocol.md §2.3 gives 128/512 for the minimum and 640/1280/2560 for the maximum; the
    /// shorter minimum goes with the two faster modes.
    fn silences(self) -> (u64, u64) {
        match self {
            Self::MinLatency => (128, 640),
            Self::Balanced => (128, 1280),
            Self::MaxAccuracy => (512, 2560),
        }
    }
}

/// Which rules a session's model follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Universal-Streaming (English, multilingual; unknown names too): confidence-based ends.
    UniversalStreaming,
    /// `u3-rt-pro`: punctuation-based ends, the spec's fixed silences whatever the mode.
    U3RtPro,
    /// `universal-3-5-pro`, `universal-3-6-pro`: silences by mode.
    U3Modes,
}

impl Family {
    pub fn of(params: &StreamingParams, profile: Profile) -> Self {
        let model = params.speech_model.as_str();
        if model.starts_with("universal-3-") {
            Self::U3Modes
        } else if params.is_u3() || profile == Profile::U3Pro {
            Self::U3RtPro
        } else {
            Self::UniversalStreaming
        }
    }

    pub fn is_u3(self) -> bool {
        self != Self::UniversalStreaming
    }
}

/// A model's turn parameters when the client sets none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnDefaults {
    pub min_turn_silence_ms: u64,
    pub max_turn_silence_ms: u64,
    pub vad_threshold: f64,
    /// Universal-Streaming only; the U3-Pro family ends turns on punctuation and silence.
    pub end_of_turn_confidence_threshold: f64,
}

/// The service's default `end_of_turn_confidence_threshold` (0.4 since 2025-09-09).
pub const DEFAULT_CONFIDENCE_THRESHOLD: f64 = 0.4;

/// `family`'s defaults in `mode` (ignored outside [`Family::U3Modes`]).
pub fn defaults(family: Family, mode: Mode) -> TurnDefaults {
    let (min, max, vad) = match family {
        Family::UniversalStreaming => (400, 1280, 0.4),
        Family::U3RtPro => (100, 1000, 0.3),
        Family::U3Modes => {
            let (min, max) = mode.silences();
            (min, max, 0.2)
        }
    };
    TurnDefaults {
        min_turn_silence_ms: min,
        max_turn_silence_ms: max,
        vad_threshold: vad,
        end_of_turn_confidence_threshold: DEFAULT_CONFIDENCE_THRESHOLD,
    }
}

/// The end-of-turn confidence of a Universal-Streaming turn of `words` words after `silence_ms`
/// of silence since its last word: `weight × (0.5 + 0.5 × min(1, silence / max_turn_silence))`,
/// the weight 1 from two words on (the emulator takes them for a sentence) and 0.4 for one.
/// Rounded to 3 decimals so that what a test reads is what was compared.
///
/// So with the default threshold 0.4 a turn of two words or more ends at `min_turn_silence`
/// (0.656 at 400 of 1280 ms) and a lone word only at `max_turn_silence` (0.4 there); a threshold
/// of 1.0 is reached only at `max_turn_silence`.
pub fn end_of_turn_confidence(words: usize, silence_ms: u64, max_turn_silence_ms: u64) -> f64 {
    let weight = if words >= 2 { 1.0 } else { 0.4 };
    let rise = (silence_ms as f64 / max_turn_silence_ms.max(1) as f64).min(1.0);
    (weight * (0.5 + 0.5 * rise) * 1000.0).round() / 1000.0
}

/// Documented connection parameters (../shared/protocol.md §2.3) the emulator accepts without
/// simulating them. Any other name it does not model is reported as unknown: a typo, or an
/// integration's own parameter (pipecat's `formatted_finals`).
pub const UNMODELLED_PARAMS: &[&str] = &[
    "prompt",
    "filter_profanity",
    "interruption_delay",
    "agent_context",
    "previous_context_n_turns",
    "language_codes",
    "language_code",
    "language",
    "domain",
    "voice_focus",
    "voice_focus_threshold",
    "noise_suppression_model",
    "noise_suppression_threshold",
    "redact_pii_policies",
    "redact_pii_sub",
    "speaker_labels_revision_interval_ms",
    "session_heartbeat",
    "llm_gateway",
    "webhook_url",
    "webhook_auth_header_name",
    "webhook_auth_header_value",
    "customer_support_audio_capture",
];

/// Parameters a session's connect query set but the emulator does not act on, split into
/// documented ones (`unmodelled`) and the rest (`unknown`), as a session record shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IgnoredParams {
    pub unmodelled: Vec<String>,
    pub unknown: Vec<String>,
}

impl IgnoredParams {
    /// `names`: the query's names in order (repeats and the credential included).
    /// `unparsed`: those `StreamingParams` does not hold. A parameter of the other family
    /// (`mode` for Universal-Streaming, `end_of_turn_confidence_threshold` for U3-Pro) is
    /// unmodelled for this session.
    pub fn split<'a>(
        names: impl IntoIterator<Item = &'a str>,
        unparsed: &[String],
        family: Family,
    ) -> Self {
        let mut out = Self::default();
        for name in names {
            let other_family = match family {
                Family::UniversalStreaming => name == "mode" || name == "continuous_partials",
                _ => name == "end_of_turn_confidence_threshold" || name == "format_turns",
            };
            let list = if UNMODELLED_PARAMS.contains(&name) || other_family {
                &mut out.unmodelled
            } else if unparsed.iter().any(|u| u == name) && !is_modelled_extra(name) {
                &mut out.unknown
            } else {
                continue;
            };
            if !list.iter().any(|n| n == name) {
                list.push(name.to_owned());
            }
        }
        out
    }
}

/// Names `StreamingParams` leaves to its caller that the emulator reads itself.
fn is_modelled_extra(name: &str) -> bool {
    name == "continuous_partials" || name == crate::protocol::params::OFFSET_PARAM
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_rises_with_silence_and_is_full_at_max_turn_silence() {
        assert!((end_of_turn_confidence(3, 0, 1280) - 0.5).abs() < 1e-9);
        assert!((end_of_turn_confidence(3, 400, 1280) - 0.656).abs() < 1e-9);
        assert!((end_of_turn_confidence(3, 1280, 1280) - 1.0).abs() < 1e-9);
        assert!((end_of_turn_confidence(3, 9999, 1280) - 1.0).abs() < 1e-9);
        assert!((end_of_turn_confidence(1, 400, 1280) - 0.263).abs() < 1e-9);
        assert!((end_of_turn_confidence(1, 1279, 1280) - 0.4).abs() < 1e-9);
        assert!(
            end_of_turn_confidence(1, 1260, 1280) < 0.4,
            "a lone word waits"
        );
        let mut last = 0.0;
        for silence in (0..=1280).step_by(20) {
            let c = end_of_turn_confidence(2, silence, 1280);
            assert!(c >= last, "{silence}: {c} < {last}");
            last = c;
        }
    }

    #[test]
    fn each_model_has_its_defaults() {
        let family = |model: &str| {
            Family::of(
                &StreamingParams {
                    speech_model: model.into(),
                    ..StreamingParams::default()
                },
                Profile::Current,
            )
        };
        assert_eq!(
            family("universal-streaming-english"),
            Family::UniversalStreaming
        );
        assert_eq!(
            family("universal-streaming-multilingual"),
            Family::UniversalStreaming
        );
        assert_eq!(family("u3-rt-pro"), Family::U3RtPro);
        assert_eq!(family("u3-pro"), Family::U3RtPro);
        assert_eq!(family("universal-3-5-pro"), Family::U3Modes);
        assert_eq!(family("universal-3-6-pro"), Family::U3Modes);
        assert_eq!(
            Family::of(&StreamingParams::default(), Profile::U3Pro),
            Family::U3RtPro
        );
        let us = defaults(Family::UniversalStreaming, Mode::MaxAccuracy);
        assert_eq!(
            (us.min_turn_silence_ms, us.max_turn_silence_ms),
            (400, 1280)
        );
        assert!((us.vad_threshold - 0.4).abs() < 1e-9);
        assert!((us.end_of_turn_confidence_threshold - 0.4).abs() < 1e-9);
        let rt = defaults(Family::U3RtPro, Mode::MinLatency);
        assert_eq!(
            (rt.min_turn_silence_ms, rt.max_turn_silence_ms),
            (100, 1000)
        );
        assert!((rt.vad_threshold - 0.3).abs() < 1e-9);
        let silences = |mode| {
            let d = defaults(Family::U3Modes, mode);
            (d.min_turn_silence_ms, d.max_turn_silence_ms)
        };
        assert_eq!(silences(Mode::MinLatency), (128, 640));
        assert_eq!(silences(Mode::Balanced), (128, 1280));
        assert_eq!(silences(Mode::MaxAccuracy), (512, 2560));
        assert_eq!(Mode::default(), Mode::Balanced);
    }

    #[test]
    fn modes_parse_as_spelled_and_a_bad_one_is_named() {
        for mode in [Mode::MinLatency, Mode::Balanced, Mode::MaxAccuracy] {
            assert_eq!(Mode::parse(mode.as_str()), Ok(mode));
        }
        let e = Mode::parse("fast").expect_err("not a mode");
        assert_eq!(e.name, "mode");
        assert!(e.to_string().contains("fast"), "{e}");
    }

    #[test]
    fn ignored_parameters_split_into_documented_and_unknown() {
        let unparsed = vec![
            "formatted_finals".to_owned(),
            "continuous_partials".to_owned(),
            "interruption_delay".to_owned(),
            "made_up".to_owned(),
        ];
        let names = [
            "sample_rate",
            "formatted_finals",
            "continuous_partials",
            "interruption_delay",
            "made_up",
            "made_up",
            "prompt",
            "end_of_turn_confidence_threshold",
        ];
        let us = IgnoredParams::split(names, &unparsed, Family::UniversalStreaming);
        assert_eq!(
            us.unmodelled,
            ["continuous_partials", "interruption_delay", "prompt"]
        );
        assert_eq!(us.unknown, ["formatted_finals", "made_up"]);
        let u3 = IgnoredParams::split(names, &unparsed, Family::U3Modes);
        assert_eq!(
            u3.unmodelled,
            [
                "interruption_delay",
                "prompt",
                "end_of_turn_confidence_threshold"
            ]
        );
        assert_eq!(u3.unknown, ["formatted_finals", "made_up"]);
    }
}
