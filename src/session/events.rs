//! The event stream: everything the supervisor reports, as one enum that serializes to one JSON
//! object per line (`aai-live run --headless`) with an `"event"` field. Schema in docs/events.md;
//! bump [`SCHEMA_VERSION`] on any incompatible change.

use serde::Serialize;

use super::ledger::LossCause;
use super::machine::{Cause, Gen, Notice, View};
use crate::diagnosis::Diagnosis;
use crate::protocol::CloseClass;
use crate::transcript::{FinalTurn, PartialTurn};

/// Version of the NDJSON schema.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SessionEvent {
    /// First line of every stream.
    Hello {
        schema: u32,
        version: &'static str,
        input: String,
        provider: String,
        endpoint: String,
    },
    /// A state change.
    State {
        #[serde(flatten)]
        view: View,
    },
    /// A token was obtained for a connection.
    Token {
        generation: Gen,
        fingerprint: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        redeem_in_ms: Option<u64>,
    },
    /// Getting a token failed.
    TokenFailed {
        generation: Gen,
        class: CloseClass,
        message: String,
    },
    /// A session began.
    Begin {
        generation: Gen,
        session_id: String,
        /// Unix seconds.
        expires_at: i64,
        /// Stream position of the session's first sample, in ms.
        stream_offset_ms: u64,
        /// Audio captured before this session could take it (during the mint, the connect,
        /// a backoff or an outage), sent to it first at ≤ `replay_speed` × real time; 0 for a
        /// rotation's successor, which takes over live.
        backlog_ms: u64,
        cause: Cause,
    },
    Partial(PartialTurn),
    Final(FinalTurn),
    /// A planned hand-over to a successor session.
    Rotation {
        from: Gen,
        to: Gen,
        forced: bool,
        /// Audio not sent to either session during the hand-over, in ms (0 by design).
        gap_ms: u64,
        /// Stream position of the successor's first sample.
        stream_offset_ms: u64,
    },
    /// A connection was lost unexpectedly.
    Lost {
        generation: Gen,
        class: CloseClass,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
        reason: String,
        what_now: &'static str,
        /// The troubleshooting section for this ending (`aai-live explain TOPIC`).
        explain: &'static str,
    },
    /// After a loss, the new session is fed from `replay_from_ms`; `gap_ms` is how long no
    /// session received live audio.
    Reconnected {
        generation: Gen,
        /// Where the new session's audio starts (= `replay_from_ms`).
        replay_from_ms: u64,
        replay_ms: u64,
        gap_ms: u64,
    },
    /// Audio that was captured and will never be sent, and why. For `capture_overrun` the audio
    /// never reached the stream: `from_ms = to_ms` is where it was dropped.
    AudioLost {
        from_ms: u64,
        to_ms: u64,
        ms: u64,
        samples: u64,
        cause: LossCause,
    },
    /// A retired session did not finish its Terminate handshake in time.
    DrainTimedOut {
        generation: Gen,
    },
    Termination {
        generation: Gen,
        audio_duration_seconds: u64,
        session_duration_seconds: u64,
    },
    /// Something the user should know that is not a state change.
    Warning {
        message: String,
    },
    /// The run ended. `audio_captured_samples = audio_sent_samples + audio_lost_samples`.
    Finished {
        finals: usize,
        rotations: u32,
        reconnects: u32,
        audio_captured_samples: u64,
        /// First sendings only: a replay does not count twice.
        audio_sent_samples: u64,
        audio_lost_samples: u64,
        audio_lost_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        latency_p50_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        latency_p95_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
        /// With a failure: its troubleshooting section (`aai-live explain TOPIC`).
        #[serde(skip_serializing_if = "Option::is_none")]
        explain: Option<&'static str>,
    },
}

impl SessionEvent {
    pub fn from_notice(notice: &Notice) -> Option<Self> {
        match notice {
            Notice::Rotated { from, to, forced } => Some(Self::Rotation {
                from: *from,
                to: *to,
                forced: *forced,
                gap_ms: 0,
                stream_offset_ms: 0,
            }),
            Notice::Lost {
                generation,
                class,
                code,
                reason,
            } => Some(Self::Lost {
                generation: *generation,
                class: *class,
                code: *code,
                reason: reason.clone(),
                what_now: class.advice(),
                explain: Diagnosis::from_lost(*class, *code, reason).section(),
            }),
            Notice::DrainTimedOut { generation } => Some(Self::DrainTimedOut {
                generation: *generation,
            }),
            Notice::RetryingToken { .. } => None,
        }
    }

    /// One NDJSON line.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// One NDJSON line with `ts_ms`, the wall-clock time (unix milliseconds) it was written.
    pub fn to_line_at(&self, at: std::time::SystemTime) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut value {
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            map.insert("ts_ms".into(), ms.into());
        }
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_event_name() {
        let e = SessionEvent::State {
            view: View::Streaming {
                generation: 2,
                session_id: "abc".into(),
            },
        };
        assert_eq!(
            e.to_line(),
            r#"{"event":"state","state":"streaming","generation":2,"session_id":"abc"}"#
        );
        let e = SessionEvent::AudioLost {
            from_ms: 1,
            to_ms: 3,
            ms: 2,
            samples: 32,
            cause: LossCause::ReplayBufferFull,
        };
        assert_eq!(
            e.to_line(),
            r#"{"event":"audio_lost","from_ms":1,"to_ms":3,"ms":2,"samples":32,"cause":"replay_buffer_full"}"#
        );
    }

    #[test]
    fn a_lost_connection_names_its_troubleshooting_section() {
        let notice = Notice::Lost {
            generation: 3,
            class: CloseClass::RateLimited,
            code: Some(3009),
            reason: "Too many concurrent sessions".into(),
        };
        let line = SessionEvent::from_notice(&notice)
            .expect("an event")
            .to_line();
        assert!(line.contains(r#""explain":"3009""#), "{line}");
    }
}
