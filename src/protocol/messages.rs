//! Serde types for every v3 message, server → client and client → server.
//!
//! The service adds fields and message types often (utterance, SpeechStarted, Error, Heartbeat,
//! ...), so parsing is tolerant: unknown fields are ignored, unknown `type`s become
//! [`ServerMessage::Unknown`] with the raw JSON kept, and the untyped legacy `{"error": "..."}`
//! shape parses as an [`ErrorMessage`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A message from the service.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    Begin(Begin),
    Turn(Turn),
    SpeechStarted(SpeechStarted),
    Termination(Termination),
    Error(ErrorMessage),
    Warning(Warning),
    Heartbeat(Heartbeat),
    SpeakerRevision(SpeakerRevision),
    LlmGatewayResponse(Value),
    /// A message type this version does not know; kept raw.
    Unknown(Value),
}

/// Why a text frame could not be read as a server message.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("server message is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("server message is not a JSON object")]
    NotAnObject,
    #[error("malformed {kind} message: {source}")]
    Shape {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl ServerMessage {
    /// Parse one text frame.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let value: Value = serde_json::from_str(text)?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, ParseError> {
        fn typed<T: for<'de> Deserialize<'de>>(
            kind: &'static str,
            value: Value,
        ) -> Result<T, ParseError> {
            serde_json::from_value(value).map_err(|source| ParseError::Shape { kind, source })
        }
        let Some(object) = value.as_object() else {
            return Err(ParseError::NotAnObject);
        };
        let kind = object
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(match kind.as_deref() {
            Some("Begin") => Self::Begin(typed("Begin", value)?),
            Some("Turn") => Self::Turn(typed("Turn", value)?),
            Some("SpeechStarted") => Self::SpeechStarted(typed("SpeechStarted", value)?),
            Some("Termination") => Self::Termination(typed("Termination", value)?),
            Some("Error") => Self::Error(typed("Error", value)?),
            Some("Warning") => Self::Warning(typed("Warning", value)?),
            Some("Heartbeat") => Self::Heartbeat(typed("Heartbeat", value)?),
            Some("SpeakerRevision") => Self::SpeakerRevision(typed("SpeakerRevision", value)?),
            Some("LLMGatewayResponse") => Self::LlmGatewayResponse(value),
            // Legacy servers sent `{"error": "..."}` with no type (and clients such as the Node
            // SDK treat any message carrying `error` as an error), so do the same.
            None if object.contains_key("error") => Self::Error(typed("Error", value)?),
            _ => Self::Unknown(value),
        })
    }

    /// Serialize for the wire (the emulator's side).
    pub fn to_json(&self) -> String {
        let value = match self {
            Self::Begin(m) => tagged("Begin", m),
            Self::Turn(m) => tagged("Turn", m),
            Self::SpeechStarted(m) => tagged("SpeechStarted", m),
            Self::Termination(m) => tagged("Termination", m),
            Self::Error(m) => tagged("Error", m),
            Self::Warning(m) => tagged("Warning", m),
            Self::Heartbeat(m) => tagged("Heartbeat", m),
            Self::SpeakerRevision(m) => tagged("SpeakerRevision", m),
            Self::LlmGatewayResponse(v) | Self::Unknown(v) => v.clone(),
        };
        value.to_string()
    }

    /// The `type` name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Begin(_) => "Begin",
            Self::Turn(_) => "Turn",
            Self::SpeechStarted(_) => "SpeechStarted",
            Self::Termination(_) => "Termination",
            Self::Error(_) => "Error",
            Self::Warning(_) => "Warning",
            Self::Heartbeat(_) => "Heartbeat",
            Self::SpeakerRevision(_) => "SpeakerRevision",
            Self::LlmGatewayResponse(_) => "LLMGatewayResponse",
            Self::Unknown(_) => "Unknown",
        }
    }
}

fn tagged<T: Serialize>(kind: &str, message: &T) -> Value {
    let mut value = serde_json::to_value(message).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("type".into(), Value::String(kind.into()));
    }
    value
}

/// First message of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Begin {
    /// Session id (a UUID); quote it to support.
    pub id: String,
    /// Unix seconds at which the service ends the session with 3008.
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<BeginConfiguration>,
}

/// The configuration echo newer servers put in `Begin`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BeginConfiguration {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub api_version: Option<String>,
    /// Anything else echoed (speaker_labels, redact_pii, ...).
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// A transcript update for one turn.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Turn {
    pub turn_order: u64,
    #[serde(default)]
    pub turn_is_formatted: bool,
    #[serde(default)]
    pub end_of_turn: bool,
    #[serde(default)]
    pub transcript: String,
    /// Non-empty on the message where an utterance boundary was detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utterance: Option<String>,
    #[serde(default)]
    pub end_of_turn_confidence: f64,
    #[serde(default)]
    pub words: Vec<Word>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_confidence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker_confidence: Option<f64>,
}

/// One word of a turn; times are milliseconds from the start of the session's audio.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Word {
    pub start: u64,
    pub end: u64,
    pub text: String,
    #[serde(default)]
    pub confidence: f64,
    #[serde(default)]
    pub word_is_final: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker_confidence: Option<f64>,
}

/// U3-Pro family: voice detected, a turn is starting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeechStarted {
    pub timestamp: u64,
    #[serde(default)]
    pub confidence: f64,
}

/// Last message of a session after `Terminate`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Termination {
    #[serde(default)]
    pub audio_duration_seconds: u64,
    #[serde(default)]
    pub session_duration_seconds: u64,
}

/// Sent immediately before an error close; `error_code` equals the close code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u16>,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    #[serde(default)]
    pub warning_code: Option<i64>,
    #[serde(default)]
    pub warning: String,
}

/// Periodic session health (with `session_heartbeat=true`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(default)]
    pub total_audio_received_ms: u64,
    #[serde(default)]
    pub total_duration_ms: u64,
    #[serde(default)]
    pub realtime_factor: f64,
    #[serde(default)]
    pub max_speech_probability: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SpeakerRevision {
    #[serde(default)]
    pub revisions: Vec<Revision>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Revision {
    pub turn_order: u64,
    #[serde(default)]
    pub speaker_label: Option<String>,
    #[serde(default)]
    pub words: Vec<Word>,
}

/// A control message from the client (audio goes as binary frames, not through this type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientMessage {
    Terminate,
    ForceEndpoint,
    KeepAlive,
    UpdateConfiguration(UpdateConfiguration),
}

impl ClientMessage {
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Settings that can change mid-session; all optional, only the set ones are sent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_turn_confidence_threshold: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "min_end_of_turn_silence_when_confident"
    )]
    pub min_turn_silence: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turn_silence: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vad_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_turns: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyterms_prompt: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_profanity: Option<bool>,
    /// Fields this version does not model, passed through.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_type_and_fields_are_tolerated() {
        let m = ServerMessage::parse(r#"{"type":"Brand New","x":1}"#).expect("parse");
        assert!(matches!(m, ServerMessage::Unknown(_)));
        let m = ServerMessage::parse(
            r#"{"type":"Termination","audio_duration_seconds":3,"session_duration_seconds":4,"new":true}"#,
        )
        .expect("parse");
        assert_eq!(
            m,
            ServerMessage::Termination(Termination {
                audio_duration_seconds: 3,
                session_duration_seconds: 4
            })
        );
    }

    #[test]
    fn legacy_untyped_error_parses_as_error() {
        let m = ServerMessage::parse(r#"{"error":"Session Expired"}"#).expect("parse");
        assert_eq!(
            m,
            ServerMessage::Error(ErrorMessage {
                error_code: None,
                error: "Session Expired".into()
            })
        );
    }

    #[test]
    fn non_objects_and_bad_json_are_errors() {
        assert!(matches!(
            ServerMessage::parse("[]"),
            Err(ParseError::NotAnObject)
        ));
        assert!(matches!(
            ServerMessage::parse("{"),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            ServerMessage::parse(r#"{"type":"Begin"}"#),
            Err(ParseError::Shape { kind: "Begin", .. })
        ));
    }

    #[test]
    fn server_messages_round_trip() {
        let begin = ServerMessage::Begin(Begin {
            id: "abc".into(),
            expires_at: 1_759_796_682,
            configuration: Some(BeginConfiguration {
                model: Some("universal-streaming-english".into()),
                ..BeginConfiguration::default()
            }),
        });
        assert_eq!(
            ServerMessage::parse(&begin.to_json()).expect("parse"),
            begin
        );
        let error = ServerMessage::Error(ErrorMessage {
            error_code: Some(3008),
            error: "Session Expired: Maximum session duration exceeded".into(),
        });
        assert!(error.to_json().contains(r#""type":"Error""#));
        assert_eq!(
            ServerMessage::parse(&error.to_json()).expect("parse"),
            error
        );
    }

    #[test]
    fn client_messages_serialize_as_documented() {
        assert_eq!(
            ClientMessage::Terminate.to_json(),
            r#"{"type":"Terminate"}"#
        );
        assert_eq!(
            ClientMessage::ForceEndpoint.to_json(),
            r#"{"type":"ForceEndpoint"}"#
        );
        assert_eq!(
            ClientMessage::KeepAlive.to_json(),
            r#"{"type":"KeepAlive"}"#
        );
        let update = ClientMessage::UpdateConfiguration(UpdateConfiguration {
            max_turn_silence: Some(900),
            ..UpdateConfiguration::default()
        });
        assert_eq!(
            update.to_json(),
            r#"{"type":"UpdateConfiguration","max_turn_silence":900}"#
        );
        let parsed: ClientMessage = serde_json::from_str(
            r#"{"type":"UpdateConfiguration","min_end_of_turn_silence_when_confident":300}"#,
        )
        .expect("parse");
        assert_eq!(
            parsed,
            ClientMessage::UpdateConfiguration(UpdateConfiguration {
                min_turn_silence: Some(300),
                ..UpdateConfiguration::default()
            })
        );
    }
}
