//! What a streaming run reports: the event stream, one enum that serializes to one JSON object
//! per line (`aai-live run --headless`) with an `"event"` field (schema in docs/events.md; bump
//! [`SCHEMA_VERSION`] on any incompatible change), and its vocabulary — the session's state as
//! seen from outside ([`View`]), why a connection is made ([`Cause`]), why audio was lost
//! ([`LossCause`]). The session produces these values, `strings` puts them into words, and the
//! clients (the dashboard, headless, the browser client's same-named events) show them.

use serde::Serialize;

use crate::failure::Failure;
use crate::protocol::CloseClass;
use crate::transcript::{FinalTurn, PartialTurn};

/// Connection generation: 1, 2, 3, ... one per connection attempt of a run.
pub type Gen = u64;

/// Why a new connection is being made (for the event stream and the dashboard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Start,
    Rotation,
    Expired,
    Dropped,
    TokenRejected,
    User,
}

/// The session's state, as seen from outside (`state` events).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum View {
    Idle,
    Minting {
        generation: Gen,
        cause: Cause,
    },
    Connecting {
        generation: Gen,
        cause: Cause,
    },
    Streaming {
        generation: Gen,
        session_id: String,
    },
    Rotating {
        old: Gen,
        new: Gen,
        new_ready: bool,
    },
    Draining {
        generation: Gen,
    },
    Stopped,
    /// Waiting before the next attempt; `retry_in_ms` is the wait decided when it began.
    Backoff {
        attempt: u32,
        retry_in_ms: u64,
        class: CloseClass,
    },
    /// Stopped for good: what failed (`class`, `reason`, `explain`, ...).
    Failed(Failure),
}

/// Why audio was never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossCause {
    /// The replay buffer was outgrown while no session could take the audio (a long mint, a
    /// backoff, an outage).
    ReplayBufferFull,
    /// The run was stopped (stop, quit, `--duration`, a signal) before the audio could be sent.
    Stopped,
    /// The run failed (a fatal error or a protocol violation) with the audio unsent.
    Failed,
    /// The input ended and the rest could not be sent within the finishing deadline.
    FinishTimeout,
    /// The microphone capture fell behind and dropped frames before aai-live got them.
    CaptureOverrun,
}

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
        /// The troubleshooting section for this failure (`aai-live explain TOPIC`).
        explain: &'static str,
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
    /// When a session's successor will be prepared (its planned rotation): after its `begin`
    /// for a first session or a reconnect, at the hand-over for a rotation's successor. None
    /// with rotation off.
    RotationPlanned {
        generation: Gen,
        /// From now.
        rotates_in_ms: u64,
        /// Meeting mode: how much earlier than the rotation rule says, to stay
        /// `session::account::STAGGER` from another input's rotation (the account's
        /// new-session limit); 0 otherwise.
        staggered_ms: u64,
    },
    Partial(PartialTurn),
    Final(FinalTurn),
    /// The service revised who said a final (diarization's `SpeakerRevision`, one event per
    /// revised turn); the final is not sent again: this replaces its speaker (and words).
    SpeakerRevision {
        generation: Gen,
        turn_order: u64,
        /// The service's new label; `null` when it no longer says.
        speaker: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        speaker_name: Option<String>,
        /// The new label could not be matched to an earlier session's speaker (as on `final`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        speaker_uncertain: bool,
        words: Vec<crate::transcript::AbsWord>,
    },
    /// Live settings changed (on the dashboard): sent to the session as `UpdateConfiguration`
    /// and carried to every later one. Only the fields that changed.
    SettingsUpdated(crate::protocol::messages::UpdateConfiguration),
    /// A speaker was named (on the dashboard): every final of theirs carries the name from now
    /// on, in the journal and the exports too.
    SpeakerNamed {
        speaker: String,
        name: String,
    },
    /// A planned hand-over to a successor session.
    Rotation {
        from: Gen,
        to: Gen,
        forced: bool,
        /// Audio not sent to either session during the hand-over, in ms (0 by design).
        gap_ms: u64,
        /// Stream position of the successor's first sample.
        stream_offset_ms: u64,
        /// With speakers: the successor was first fed this much audio its predecessor had
        /// already transcribed (from `stream_offset_ms`; it takes over at `stream_offset_ms +
        /// primed_ms`), to map its speaker labels onto the run's.
        #[serde(skip_serializing_if = "is_zero")]
        primed_ms: u64,
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
        /// With speakers: how much of the replay is audio already transcribed, sent for the
        /// new session's speaker labels to be mapped (its words there are not added again).
        #[serde(skip_serializing_if = "is_zero")]
        primed_ms: u64,
    },
    /// Audio that was captured and will never be sent, and why. For `capture_overrun` the audio
    /// never reached the stream: `from_ms = to_ms` is where it was dropped.
    AudioLost {
        from_ms: u64,
        to_ms: u64,
        ms: u64,
        samples: u64,
        /// The same stretch in samples of the stream (and of its audio archive).
        from_sample: u64,
        to_sample: u64,
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
        /// The troubleshooting section, when one explains it.
        #[serde(skip_serializing_if = "Option::is_none")]
        explain: Option<&'static str>,
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
        /// `--archive`: each input's audio archive (label, or `input` for the single
        /// unlabelled input) → the file's absolute path.
        #[serde(skip_serializing_if = "Option::is_none")]
        archive: Option<std::collections::BTreeMap<String, String>>,
    },
}

impl SessionEvent {
    /// A `speaker_revision` applied to the final it revises: its speaker, name and words, as
    /// the event says (the final's words stay when the revision carries none).
    pub fn revise(&self, turn: &mut FinalTurn) {
        if let Self::SpeakerRevision {
            speaker,
            speaker_name,
            speaker_uncertain,
            words,
            ..
        } = self
        {
            turn.speaker.clone_from(speaker);
            turn.speaker_name.clone_from(speaker_name);
            turn.speaker_uncertain = *speaker_uncertain;
            if !words.is_empty() {
                turn.words.clone_from(words);
            }
        }
    }

    /// One NDJSON line.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// One NDJSON line with `source` (the input's label in meeting mode) and `ts_ms`.
    pub fn to_line_sourced(&self, source: Option<&str>, at: std::time::SystemTime) -> String {
        let line = self.to_line_at(at);
        let Some(source) = source else {
            return line;
        };
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.insert("source".into(), source.into());
                serde_json::Value::Object(map).to_string()
            }
            _ => line,
        }
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

/// Serde: leave a zero count out.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u64) -> bool {
    *n == 0
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
            from_sample: 16,
            to_sample: 48,
            cause: LossCause::ReplayBufferFull,
        };
        assert_eq!(
            e.to_line(),
            r#"{"event":"audio_lost","from_ms":1,"to_ms":3,"ms":2,"samples":32,"from_sample":16,"to_sample":48,"cause":"replay_buffer_full"}"#
        );
    }
}
