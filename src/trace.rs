//! Session traces: `run --trace FILE` writes every frame a run's connections send and receive,
//! one JSON line each with its time; `emulate --replay FILE` reads them back and serves the same
//! server-side sequence to any client (docs/emulator.md, "Record and replay").
//!
//! A trace is made to be attached to a bug report, so it holds no secret by construction: the
//! connect URL as shown everywhere (`redact_url`: query values not known to be harmless, the
//! token among them, are `[REDACTED]`), no header at all, audio as byte counts only, and the
//! text frames verbatim (the service's messages and aai-live's control messages carry no
//! credential). The writer is handed the redacted URL only; it never sees a token or a key.
//!
//! Reading is for untrusted files: bounded ([`MAX_TRACE_BYTES`]), line by line, each error
//! naming the file and the line, and the parsed sessions are no larger than the file.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The trace format's version, in the first line.
pub const TRACE_VERSION: u32 = 1;
/// The most of a trace file read: 64 MiB (an hour of 50 ms audio chunks is about 6 MB of lines,
/// the messages of an hour of speech a few MB more: a 3-hour session fits).
pub const MAX_TRACE_BYTES: u64 = 64 * 1024 * 1024;
/// The longest line accepted: a server message is at most 128 KB, escaped into JSON twice that.
pub const MAX_LINE_BYTES: usize = 512 * 1024;

/// The first line of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub aai_live_trace: u32,
    /// When the trace started, Unix milliseconds.
    pub started_unix_ms: u64,
}

/// One frame, or how a connection began or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// No `deny_unknown_fields` here or on `Line`: serde cannot combine it with `flatten`.
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The connection is open (the WebSocket handshake done): its URL as shown everywhere.
    Open { url: String, unix_ms: u64 },
    /// A text frame from the server, verbatim.
    Received { text: String },
    /// A binary frame from the server (the service sends none): its size only.
    ReceivedBinary { bytes: u64 },
    /// A text frame from the client, verbatim (`Terminate`, `UpdateConfiguration`, ...).
    Sent { text: String },
    /// Audio from the client: its size only.
    Audio { bytes: u64 },
    /// How the connection ended: the close code (`None`: no close frame, the connection was
    /// lost) and reason, and whether the server closed first.
    Close {
        code: Option<u16>,
        reason: String,
        by_server: bool,
    },
}

/// A line after the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// Milliseconds since the trace started.
    pub at_ms: u64,
    /// The connection's generation (`generation` in the NDJSON events).
    pub generation: u64,
    /// Milliseconds since this connection opened (its session's time).
    pub session_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// Where a run's connections write their frames; cheap to clone, shared by all of them. Each
/// line is written whole at once, so nothing is lost when the process ends without dropping it.
#[derive(Debug, Clone)]
pub struct Trace {
    file: Arc<Mutex<File>>,
    started: Instant,
    path: PathBuf,
}

/// Why a trace could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot write the trace {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the trace {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("trace {path}, line {line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

impl Trace {
    /// Create (or truncate) `path`, private (0600: it holds what people said), and write the
    /// header.
    pub fn create(path: &Path) -> Result<Self, TraceError> {
        let fail = |source| TraceError::Create {
            path: path.display().to_string(),
            source,
        };
        let mut file = crate::files::private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(fail)?;
        let header = Header {
            aai_live_trace: TRACE_VERSION,
            started_unix_ms: unix_ms(),
        };
        let mut text = serde_json::to_string(&header).unwrap_or_default();
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(fail)?;
        Ok(Self {
            file: Arc::new(Mutex::new(file)),
            started: Instant::now(),
            path: path.to_owned(),
        })
    }

    /// The trace of one connection, opened now.
    pub fn session(&self, generation: u64) -> SessionTrace {
        SessionTrace {
            trace: self.clone(),
            generation,
            opened: Instant::now(),
            closed: false,
        }
    }

    fn write(&self, line: &Line) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = file.write_all(text.as_bytes()) {
            // A full disk must not end the run: the trace is a by-product.
            tracing::warn!("cannot write the trace {}: {e}", self.path.display());
        }
    }
}

/// One connection's lines.
#[derive(Debug)]
pub struct SessionTrace {
    trace: Trace,
    generation: u64,
    opened: Instant,
    closed: bool,
}

impl SessionTrace {
    fn record(&self, event: Event) {
        let now = Instant::now();
        self.trace.write(&Line {
            at_ms: millis(now.duration_since(self.trace.started)),
            generation: self.generation,
            session_ms: millis(now.duration_since(self.opened)),
            event,
        });
    }

    /// The socket is open; `url` is the redacted connect URL (never the one with the token).
    pub fn opened(&mut self, url: &str) {
        self.opened = Instant::now();
        self.record(Event::Open {
            url: url.to_owned(),
            unix_ms: unix_ms(),
        });
    }

    pub fn received(&self, text: &str) {
        self.record(Event::Received {
            text: text.to_owned(),
        });
    }

    pub fn received_binary(&self, bytes: usize) {
        self.record(Event::ReceivedBinary {
            bytes: bytes as u64,
        });
    }

    pub fn sent(&self, text: &str) {
        self.record(Event::Sent {
            text: text.to_owned(),
        });
    }

    pub fn audio(&self, bytes: usize) {
        self.record(Event::Audio {
            bytes: bytes as u64,
        });
    }

    /// How the connection ended; only the first call counts (the precise one, made where the
    /// close was seen, comes before the general one made when the task ends).
    pub fn closed(&mut self, code: Option<u16>, reason: &str, by_server: bool) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        self.record(Event::Close {
            code,
            reason: reason.to_owned(),
            by_server,
        });
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// A trace read back: its connections in the order they opened.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recorded {
    pub sessions: Vec<RecordedSession>,
}

/// One connection of a trace, as a server would replay it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordedSession {
    pub generation: u64,
    /// When it opened (Unix ms): `Begin.expires_at` is shifted by the same distance.
    pub opened_unix_ms: u64,
    /// What the server sent, and how the connection ended, in order.
    pub steps: Vec<Step>,
}

/// Where in the client's frames a server step came: after this many text frames, and this much
/// audio since the last of them. Audio counts from the last text frame because a client's text
/// frames are its turning points (a `Terminate` is followed by no audio): a replaying client
/// that sent less audio before its `Terminate` than the recorded one still gets its
/// `Termination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientPosition {
    pub texts: u64,
    pub audio_bytes: u64,
}

impl ClientPosition {
    /// A client frame arrived.
    pub fn audio(&mut self, bytes: usize) {
        self.audio_bytes = self.audio_bytes.saturating_add(bytes as u64);
    }

    pub fn text(&mut self) {
        self.texts += 1;
        self.audio_bytes = 0;
    }

    /// Whether a client at `self` has gone past `step` (a later text frame), or reached it
    /// (the same text frames, at least as much audio since).
    pub fn passed(self, step: Self) -> bool {
        self.texts > step.texts
    }

    pub fn reached(self, step: Self) -> bool {
        self.passed(step) || (self.texts == step.texts && self.audio_bytes >= step.audio_bytes)
    }
}

/// A server step: `what` at `session_ms`, once the client got to `after`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub session_ms: u64,
    pub after: ClientPosition,
    pub what: ServerStep,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ServerStep {
    Text(String),
    Binary(u64),
    Close {
        code: Option<u16>,
        reason: String,
        by_server: bool,
    },
}

impl Recorded {
    /// Read the trace at `path`, bounded (see the module's comment).
    pub fn load(path: &Path) -> Result<Self, TraceError> {
        let shown = path.display().to_string();
        let bytes = crate::files::read_capped(path, MAX_TRACE_BYTES).map_err(|source| {
            TraceError::Read {
                path: shown.clone(),
                source,
            }
        })?;
        Self::parse(&bytes).map_err(|(line, message)| TraceError::Invalid {
            path: shown,
            line,
            message,
        })
    }

    /// Parse a trace's bytes; the error is the line number (from 1) and what is wrong there.
    pub fn parse(bytes: &[u8]) -> Result<Self, (usize, String)> {
        let mut lines = bytes.split(|&b| b == b'\n').enumerate();
        let header = lines
            .next()
            .map(|(_, l)| l)
            .filter(|l| !l.is_empty())
            .ok_or((1, "empty: not a trace written by `run --trace`".to_owned()))?;
        let header: Header =
            serde_json::from_slice(header).map_err(|e| (1, format!("not a trace header ({e})")))?;
        if header.aai_live_trace != TRACE_VERSION {
            return Err((
                1,
                format!(
                    "trace version {} (this aai-live reads version {TRACE_VERSION})",
                    header.aai_live_trace
                ),
            ));
        }
        let mut recorded = Self::default();
        // Per open connection: its index in `sessions` and where its client has got to.
        let mut open: HashMap<u64, (usize, ClientPosition)> = HashMap::new();
        for (index, line) in lines {
            let number = index + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if line.len() > MAX_LINE_BYTES {
                return Err((
                    number,
                    format!("a line of {} bytes (at most {MAX_LINE_BYTES})", line.len()),
                ));
            }
            let line: Line = serde_json::from_slice(line).map_err(|e| (number, e.to_string()))?;
            if let Event::Open { unix_ms, .. } = line.event {
                if open.contains_key(&line.generation) {
                    return Err((
                        number,
                        format!("generation {} opened twice", line.generation),
                    ));
                }
                open.insert(
                    line.generation,
                    (recorded.sessions.len(), ClientPosition::default()),
                );
                recorded.sessions.push(RecordedSession {
                    generation: line.generation,
                    opened_unix_ms: unix_ms,
                    steps: Vec::new(),
                });
                continue;
            }
            let Some((session, position)) = open.get_mut(&line.generation) else {
                return Err((
                    number,
                    format!("generation {} before its `open` line", line.generation),
                ));
            };
            let what = match line.event {
                Event::Open { .. } => continue,
                Event::Audio { bytes } => {
                    position.audio_bytes = position.audio_bytes.saturating_add(bytes);
                    continue;
                }
                Event::Sent { .. } => {
                    position.text();
                    continue;
                }
                Event::Received { text } => ServerStep::Text(text),
                Event::ReceivedBinary { bytes } => ServerStep::Binary(bytes),
                Event::Close {
                    code,
                    reason,
                    by_server,
                } => ServerStep::Close {
                    code,
                    reason,
                    by_server,
                },
            };
            let closes = matches!(what, ServerStep::Close { .. });
            let session_index = *session;
            recorded.sessions[session_index].steps.push(Step {
                session_ms: line.session_ms,
                after: *position,
                what,
            });
            if closes {
                open.remove(&line.generation);
            }
        }
        Ok(recorded)
    }
}

/// `Begin` as a replay sends it: `expires_at` moved by as long as has passed since the
/// recorded connection opened, so a client plans its rotation as it did then. Any other text is
/// sent as recorded.
pub fn shift_begin(text: &str, opened_unix_ms: u64, now_unix_ms: u64) -> String {
    let Ok(serde_json::Value::Object(mut begin)) = serde_json::from_str(text) else {
        return text.to_owned();
    };
    if begin.get("type").and_then(serde_json::Value::as_str) != Some("Begin") {
        return text.to_owned();
    }
    let Some(expires_at) = begin.get("expires_at").and_then(serde_json::Value::as_i64) else {
        return text.to_owned();
    };
    let shift_s = (i64::try_from(now_unix_ms).unwrap_or(i64::MAX)
        - i64::try_from(opened_unix_ms).unwrap_or(i64::MAX))
        / 1000;
    begin.insert(
        "expires_at".into(),
        serde_json::Value::from(expires_at.saturating_add(shift_s)),
    );
    serde_json::Value::Object(begin).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(lines: &[&str]) -> Vec<u8> {
        let mut text = format!("{{\"aai_live_trace\":{TRACE_VERSION},\"started_unix_ms\":1000}}\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        text.into_bytes()
    }

    #[test]
    fn a_written_trace_reads_back_as_server_steps_after_client_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run.trace");
        let trace = Trace::create(&path).expect("create");
        let mut one = trace.session(1);
        one.opened("ws://127.0.0.1:1/v3/ws?sample_rate=16000&token=%5BREDACTED%5D");
        one.received(r#"{"type":"Begin","id":"x","expires_at":100}"#);
        one.audio(1600);
        one.audio(1600);
        one.received(r#"{"type":"Turn"}"#);
        one.sent(r#"{"type":"Terminate"}"#);
        one.received(r#"{"type":"Termination"}"#);
        one.closed(Some(1000), "", false);
        one.closed(Some(1006), "ignored: the first close counts", true);
        let mut two = trace.session(2);
        two.opened("ws://127.0.0.1:1/v3/ws");
        two.closed(Some(3008), "Session Expired", true);
        drop((one, two, trace));

        let recorded = Recorded::load(&path).expect("load");
        assert_eq!(recorded.sessions.len(), 2);
        let steps = &recorded.sessions[0].steps;
        let after: Vec<(u64, u64)> = steps
            .iter()
            .map(|s| (s.after.texts, s.after.audio_bytes))
            .collect();
        assert_eq!(after, [(0, 0), (0, 3200), (1, 0), (1, 0)]);
        assert_eq!(
            steps[3].what,
            ServerStep::Close {
                code: Some(1000),
                reason: String::new(),
                by_server: false
            }
        );
        assert_eq!(recorded.sessions[1].generation, 2);
        assert!(matches!(
            recorded.sessions[1].steps[0].what,
            ServerStep::Close {
                code: Some(3008),
                by_server: true,
                ..
            }
        ));
    }

    #[test]
    fn a_client_passes_a_step_by_a_later_text_or_reaches_it_with_as_much_audio() {
        let step = ClientPosition {
            texts: 1,
            audio_bytes: 3200,
        };
        let mut client = ClientPosition::default();
        client.audio(9600);
        assert!(!client.reached(step), "no text frame yet");
        client.text();
        client.audio(1600);
        assert!(!client.reached(step));
        client.audio(1600);
        assert!(client.reached(step) && !client.passed(step));
        client.text();
        assert!(client.passed(step), "a later text frame");
    }

    #[test]
    fn bad_traces_are_refused_naming_the_line() {
        let cases: [(&[u8], usize, &str); 5] = [
            (b"", 1, "empty"),
            (
                b"{\"aai_live_trace\":9,\"started_unix_ms\":0}\n",
                1,
                "version 9",
            ),
            (b"hello\n", 1, "not a trace header"),
            (
                &written(&[
                    r#"{"at_ms":0,"generation":1,"session_ms":0,"kind":"audio","bytes":2}"#,
                ]),
                2,
                "before its `open` line",
            ),
            (
                &written(&[
                    r#"{"at_ms":0,"generation":1,"session_ms":0,"kind":"open","url":"u","unix_ms":0}"#,
                    r#"{"at_ms":0,"generation":1,"session_ms":0,"kind":"warp"}"#,
                ]),
                3,
                "unknown variant",
            ),
        ];
        for (bytes, line, needle) in cases {
            let (at, message) = Recorded::parse(bytes).expect_err("refused");
            assert_eq!(at, line, "{message}");
            assert!(message.contains(needle), "{message}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.trace");
        std::fs::write(&path, "nope").expect("write");
        let e = Recorded::load(&path).expect_err("refused").to_string();
        assert!(e.contains("bad.trace") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn begin_expiry_moves_with_the_replay_and_nothing_else_changes() {
        let begin = r#"{"type":"Begin","id":"x","expires_at":1000}"#;
        let shifted = shift_begin(begin, 500_000, 560_000);
        let value: serde_json::Value = serde_json::from_str(&shifted).expect("json");
        assert_eq!(value["expires_at"], 1060);
        assert_eq!(value["id"], "x");
        let turn = r#"{"type":"Turn","expires_at":1}"#;
        assert_eq!(shift_begin(turn, 0, 60_000), turn);
        assert_eq!(shift_begin("not json", 0, 1), "not json");
    }

    proptest! {
        /// Untrusted trace files: any bytes give a trace or an error naming a line, never a
        /// panic, and no more steps than lines.
        #[test]
        fn any_bytes_parse_or_are_refused_with_a_line(
            lines in prop::collection::vec(
                prop_oneof![
                    Just(r#"{"at_ms":1,"generation":1,"session_ms":1,"kind":"open","url":"u","unix_ms":5}"#.to_owned()),
                    Just(r#"{"at_ms":2,"generation":1,"session_ms":2,"kind":"audio","bytes":18446744073709551615}"#.to_owned()),
                    Just(r#"{"at_ms":3,"generation":1,"session_ms":3,"kind":"received","text":"{}"}"#.to_owned()),
                    Just(r#"{"at_ms":4,"generation":1,"session_ms":4,"kind":"close","code":null,"reason":"","by_server":true}"#.to_owned()),
                    ".{0,40}",
                ],
                0..20,
            ),
            header in prop::bool::ANY,
        ) {
            let mut text = if header {
                format!("{{\"aai_live_trace\":{TRACE_VERSION},\"started_unix_ms\":0}}\n")
            } else {
                String::new()
            };
            text.push_str(&lines.join("\n"));
            match Recorded::parse(text.as_bytes()) {
                Ok(recorded) => {
                    let steps: usize = recorded.sessions.iter().map(|s| s.steps.len()).sum();
                    prop_assert!(steps <= lines.len());
                }
                Err((line, message)) => {
                    prop_assert!(line >= 1 && line <= lines.len() + 1);
                    prop_assert!(!message.is_empty());
                }
            }
        }
    }
}
