//! `/v3/ws`: authentication, connection parameters, and one task per streaming session that
//! enforces the service's rules (chunk sizes, pacing, message size, valid messages, expiry,
//! inactivity) and sends Begin, Turns and Termination; then the closing handshake, whose outcome
//! on both sides goes into the session's record (and, with `--record`, `<id>.json`).
//!
//! Memory per connection is bounded before anything is read: the transport limits are set per
//! upgrade from the credential, checked at the upgrade (header or `?token=`). An authenticated
//! session may send frames up to the 128 KB rule plus a margin (so an oversized message gets
//! the service's 1009 with its Error frame); a refused one, which is only sent an Error and a
//! close, may send 4 KiB frames while the close is answered, and a larger one ends the linger at
//! its header, before its payload is buffered.

use std::collections::VecDeque;
use std::error::Error as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

use super::faults::Fault;
use super::recognizer::{Recognizer, RecognizerConfig};
use super::script::Script;
use super::state::{
    AuthFailure, Grant, MAX_RECORDED_SPEAKERS, Registered, SessionRecord, State, UpdateRecord,
    bounded_fields, bounded_params, bounded_settings, unix_ms,
};
use super::token::error;
use super::turns::{Family, IgnoredParams, Mode};
use crate::protocol::close::{self, reasons};
use crate::protocol::messages::{
    Begin, BeginConfiguration, ClientMessage, ErrorMessage, ServerMessage, Termination,
    UpdateConfiguration,
};
use crate::protocol::params::{OFFSET_PARAM, ParamError, parse_bool};
use crate::protocol::{API_VERSION, AudioFormat, Encoding, StreamingParams, audio};

/// How long the handler waits for a close frame to be written, and then for the client's close
/// reply, before dropping the socket.
const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// Transport limit for an authenticated session: the 128 KB rule plus a margin, so a message a
/// little over the rule gets the service's Error + 1009 and anything larger is refused at its
/// frame header, before its payload is buffered.
const SESSION_FRAME_LIMIT: usize = audio::MAX_MESSAGE_BYTES + 4096;
/// Transport limit for a refused credential: it is only sent an Error and a close.
const REFUSED_FRAME_LIMIT: usize = 4096;
/// Client text echoed in an Error (an unknown `type`, a bad parameter's value).
const ECHO_CHARS: usize = 64;
/// Stream offsets beyond this (about 31 years) are not positions in a stream: ignored, so the
/// recogniser's arithmetic cannot overflow.
const MAX_OFFSET_MS: u64 = 1_000_000_000_000;

pub async fn upgrade(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    // The Python SDK sends even temporary tokens in the Authorization header; browsers and the
    // JS SDK use ?token=. Accept both (protocol.md §2.2).
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            pairs
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.clone())
        });
    let auth = state.authorize(credential.as_deref());
    if let Err(failure) = auth
        && state.config.reject_at_upgrade
    {
        tracing::debug!(?failure, "rejecting the upgrade with HTTP 401");
        return error(StatusCode::UNAUTHORIZED, auth_reason(failure));
    }
    let frame_limit = if auth.is_ok() {
        SESSION_FRAME_LIMIT
    } else {
        REFUSED_FRAME_LIMIT
    };
    // An 8 KiB read buffer instead of the 128 KiB default: tungstenite zero-fills the buffer on
    // every read, which was the largest CPU item with 500 sessions (docs/benchmarks.md); larger
    // messages still arrive whole.
    ws.read_buffer_size(8 * 1024)
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit)
        .on_upgrade(move |socket| async move {
            let mut conn = Conn::new(socket);
            match auth {
                Err(failure) => {
                    let code = match failure {
                        AuthFailure::Expired | AuthFailure::Used => {
                            state.config.expired_token_close_code
                        }
                        AuthFailure::Missing | AuthFailure::Invalid => 1008,
                    };
                    conn.fail(code, auth_reason(failure)).await;
                }
                Ok(grant) => run(state, conn, grant, pairs).await,
            }
        })
        .into_response()
}

fn auth_reason(failure: AuthFailure) -> &'static str {
    match failure {
        AuthFailure::Missing => reasons::MISSING_AUTH,
        AuthFailure::Invalid => reasons::INVALID_AUTH,
        AuthFailure::Expired => reasons::TOKEN_EXPIRED,
        AuthFailure::Used => reasons::TOKEN_USED,
    }
}

/// The client's close frame: its code (1005 for an empty frame) and reason; `None` when the
/// connection ended without one.
type ClientClose = Option<(u16, String)>;

fn client_close(frame: Option<CloseFrame>) -> (u16, String) {
    frame.map_or((1005, String::new()), |f| {
        (f.code, f.reason.as_str().to_owned())
    })
}

/// The socket plus counters, with the close helpers every path uses. Every write that could
/// wait on a client that does not read is bounded by [`CLOSE_LINGER`].
pub(super) struct Conn {
    pub(super) socket: WebSocket,
    sent: u64,
}

impl Conn {
    fn new(socket: WebSocket) -> Self {
        Self { socket, sent: 0 }
    }

    async fn send(&mut self, message: &ServerMessage) -> bool {
        self.send_text(message.to_json()).await
    }

    /// A text frame as it is (a replayed message).
    pub(super) async fn send_text(&mut self, text: String) -> bool {
        self.sent += 1;
        self.socket.send(Message::Text(text.into())).await.is_ok()
    }

    /// `Error` frame with the full text, then the close with a ≤123-byte reason.
    async fn fail(&mut self, code: u16, message: &str) -> ClientClose {
        let error = ServerMessage::Error(ErrorMessage {
            error_code: Some(code),
            error: message.to_owned(),
        });
        let _ = tokio::time::timeout(CLOSE_LINGER, self.send(&error)).await;
        self.close(code, close::close_reason(message)).await
    }

    /// Send the close frame, then read (and discard) until the client's close frame arrives,
    /// within [`CLOSE_LINGER`]; returns the client's close.
    pub(super) async fn close(&mut self, code: u16, reason: &str) -> ClientClose {
        // A close frame's reason holds at most 123 bytes (a longer one makes the frame invalid
        // and the client drops the connection with a protocol error).
        let frame = CloseFrame {
            code,
            reason: close::close_reason(reason).to_owned().into(),
        };
        let sent =
            tokio::time::timeout(CLOSE_LINGER, self.socket.send(Message::Close(Some(frame)))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return None;
        }
        tokio::time::timeout(CLOSE_LINGER, async {
            loop {
                match self.socket.recv().await {
                    Some(Ok(Message::Close(frame))) => return Some(client_close(frame)),
                    Some(Ok(_)) => {}
                    // A transport error (a frame over the limit, bad bytes) or the end of the
                    // connection: no close frame will come.
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// The client closed first: tungstenite has queued the echo of its close frame; write it
    /// out, so the client sees a complete closing handshake.
    pub(super) async fn answer_close(&mut self) {
        let _ = tokio::time::timeout(CLOSE_LINGER, self.socket.flush()).await;
    }
}

/// How a session ends.
enum End {
    /// An error close (Error frame + close).
    Fail(u16, String),
    /// A close frame without an Error frame (1000-style faults, closes before Begin, protocol
    /// errors).
    Close(u16, String),
    /// Abrupt TCP drop.
    Drop,
    /// The client sent a close frame first (code, reason).
    ClientClosed(u16, String),
    /// The TCP connection ended without a close frame.
    ClientGone,
    /// Terminate handled: Termination sent, close 1000.
    Terminated,
}

/// What a transport error from the client's side means: the close code RFC 6455 gives it where
/// the connection can still carry a close frame (tungstenite reports these before changing the
/// connection's state, so a close can still be written), else the client is gone.
fn transport_end(error: &axum::Error) -> End {
    use tungstenite::error::{CapacityError, ProtocolError};
    let Some(inner) = error
        .source()
        .and_then(|e| e.downcast_ref::<tungstenite::Error>())
    else {
        return End::ClientGone;
    };
    match inner {
        tungstenite::Error::Utf8(_) => End::Close(1007, "Invalid UTF-8 in a text frame".into()),
        tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, .. }) => {
            End::Fail(1009, too_big(*size))
        }
        tungstenite::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::ReceivedAfterClosing,
        ) => End::ClientGone,
        tungstenite::Error::Protocol(protocol) => {
            End::Close(1002, format!("Protocol error: {protocol}"))
        }
        _ => End::ClientGone,
    }
}

fn too_big(bytes: usize) -> String {
    format!("Message too big: {bytes} bytes (the limit is 128 KB)")
}

/// Timed faults for one session.
#[derive(Default)]
struct Plan {
    close: Option<(Duration, u16, Option<String>)>,
    drop: Option<Duration>,
    stall: Option<Duration>,
    stop_reading: Option<Duration>,
    no_termination: bool,
}

impl Plan {
    /// The timed faults of a session, or `None` when it must close before Begin.
    fn from_faults(faults: &[Fault]) -> Option<Self> {
        let mut plan = Self::default();
        for fault in faults {
            match fault {
                Fault::CloseBeforeBegin { .. } => return None,
                Fault::Close {
                    code,
                    reason,
                    at_ms,
                } => {
                    plan.close = Some((Duration::from_millis(*at_ms), *code, reason.clone()));
                }
                Fault::Drop { at_ms } => plan.drop = Some(Duration::from_millis(*at_ms)),
                Fault::Stall { at_ms } => plan.stall = Some(Duration::from_millis(*at_ms)),
                Fault::StopReading { at_ms } => {
                    plan.stop_reading = Some(Duration::from_millis(*at_ms));
                }
                Fault::NoTermination => plan.no_termination = true,
                Fault::TokenStatus { .. } | Fault::TokenDelay { .. } => {}
            }
        }
        Some(plan)
    }
}

/// A bad parameter's error, with the client's name and value cut for the echo.
fn param_message(e: &ParamError) -> String {
    let bounded = ParamError {
        name: super::echo(&e.name, ECHO_CHARS),
        value: super::echo(&e.value, ECHO_CHARS),
        expected: e.expected.clone(),
    };
    reasons::invalid_message(&bounded.to_string())
}

/// A stream offset hint, if it is one.
fn offset_hint(value: Option<u64>) -> Option<u64> {
    value.filter(|&ms| ms <= MAX_OFFSET_MS)
}

#[expect(
    clippy::too_many_lines,
    reason = "one linear setup: parameters, limits, faults, Begin, then the loop"
)]
async fn run(state: Arc<State>, mut conn: Conn, grant: Grant, pairs: Vec<(String, String)>) {
    let _active = state.enter_session();
    let (params, ignored) =
        match StreamingParams::from_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(p) => p,
            Err(e) => {
                // The service's reaction to a bad parameter is undocumented; the Python SDK calls
                // 3006 "Input validation error", which fits.
                conn.fail(3006, &param_message(&e)).await;
                return;
            }
        };
    let family = Family::of(&params, state.config.profile);
    if let Err(e) = params.validate().and_then(|()| check_mode(&params, family)) {
        conn.fail(3006, &param_message(&e)).await;
        return;
    }
    if !state.admit_session(grant.key) {
        let code = state.config.rate_limit_close_code;
        let text = if code == 1008 {
            "Unauthorized connection: Too many concurrent sessions"
        } else {
            reasons::TOO_MANY_SESSIONS
        };
        conn.fail(code, text).await;
        return;
    }
    if let Some(recorded) = &state.config.replay {
        if let Some(session) = recorded.sessions.get(state.next_replay()) {
            super::replay::serve(&mut conn, session, &state.cancel).await;
        } else {
            let text = format!(
                "Session Cancelled: the replayed trace holds {} sessions, all served",
                recorded.sessions.len()
            );
            conn.fail(3005, &text).await;
        }
        return;
    }
    let offset_ms = offset_hint(
        pairs
            .iter()
            .find(|(k, _)| k == OFFSET_PARAM)
            .and_then(|(_, v)| v.parse().ok()),
    );

    let faults = state.lock().faults.take_session_faults();
    let Some(plan) = Plan::from_faults(&faults) else {
        let (code, reason) = faults
            .iter()
            .find_map(|f| match f {
                Fault::CloseBeforeBegin { code, reason } => Some((*code, reason.clone())),
                _ => None,
            })
            .unwrap_or((1011, None));
        match reason {
            // With a reason, refuse the way the service refuses a credential: Error, then close.
            Some(reason) => conn.fail(code, &reason).await,
            None => {
                conn.close(code, "Closed before Begin (emulator fault)")
                    .await
            }
        };
        return;
    };

    let max_session = state
        .config
        .max_session_duration
        .map_or(grant.max_session, |cap| cap.min(grant.max_session));
    let started_wall = SystemTime::now();
    let expires_at = (unix_ms(started_wall + max_session) as i64)
        .saturating_add(state.config.clock_skew_ms)
        .saturating_add(999)
        .div_euclid(1000);
    let id = uuid::Uuid::new_v4().to_string();
    let ignored = IgnoredParams::split(pairs.iter().map(|(k, _)| k.as_str()), &ignored, family);
    let (echoed, ignored, params_truncated) = bounded_params(&params, &ignored);
    let record = state.register(SessionRecord {
        params: echoed,
        ignored_params: ignored,
        params_truncated,
        faults: faults.iter().map(ToString::to_string).collect(),
        ..SessionRecord::started(id.clone(), grant.kind, unix_ms(started_wall), expires_at)
    });
    tracing::debug!(session = %id, credential = ?grant.kind, "session starts");

    let continuous_partials = pairs
        .iter()
        .rfind(|(k, _)| k == "continuous_partials")
        .is_some_and(|(k, v)| parse_bool(k, v).unwrap_or(false));
    let recognizer_config = RecognizerConfig::from_params(&params, state.config.profile, offset_ms)
        .with_continuous_partials(continuous_partials);
    let begin = ServerMessage::Begin(Begin {
        id: id.clone(),
        expires_at,
        configuration: Some(BeginConfiguration {
            model: Some(params.speech_model.clone()),
            // The mode in effect, its default when unset; null outside the U3-Pro family.
            mode: recognizer_config.mode.map(|m| m.as_str().to_owned()),
            api_version: Some(API_VERSION.into()),
            other: serde_json::Map::new(),
        }),
    });
    if !conn.send(&begin).await {
        finish(&state, record, conn, None, End::ClientGone).await;
        return;
    }

    record.lock().effective = Some(bounded_settings(recognizer_config.settings()));
    let recognizer = Recognizer::new(recognizer_config, state.config.script.as_ref());
    let recorder = match &state.config.record_dir {
        Some(dir) => match tokio::fs::File::create(dir.join(format!("{id}.pcm"))).await {
            Ok(f) => Some(tokio::io::BufWriter::new(f)),
            Err(e) => {
                tracing::warn!(session = %id, "cannot record audio in {}: {e}", dir.display());
                None
            }
        },
        None => None,
    };
    let mut session = Session {
        state: Arc::clone(&state),
        id,
        record,
        format: params.audio_format(),
        inactivity: params
            .inactivity_timeout
            .map(|s| Duration::from_secs(s.into())),
        recognizer,
        outbox: VecDeque::new(),
        started: Instant::now(),
        expires: Instant::now() + max_session,
        last_activity: Instant::now(),
        first_audio: None,
        audio_bytes: 0,
        short_chunk: None,
        plan,
        stalled: false,
        recorder,
        received: 0,
        speakers_noted: 0,
        partials_withheld: params.partials_withheld(),
    };
    let end = session.serve(&mut conn).await;
    let recorder = session.recorder.take();
    finish(&state, session.record, conn, recorder, end).await;
}

/// Flush the recording and publish the server's side of the outcome *before* the closing
/// handshake, so whoever sees the close can already read both; then close, note the client's
/// close frame (or its absence) and, with `--record`, write the whole record to `<id>.json`.
async fn finish(
    state: &State,
    record: Registered,
    mut conn: Conn,
    recorder: Option<tokio::io::BufWriter<tokio::fs::File>>,
    end: End,
) {
    if let Some(mut recorder) = recorder {
        let _ = recorder.flush().await;
    }
    let (code, reason) = match &end {
        End::Fail(code, text) | End::Close(code, text) => (Some(*code), Some(text.clone())),
        End::Drop => (
            None,
            Some("TCP connection dropped (emulator fault)".to_owned()),
        ),
        // The server echoes the client's close frame.
        End::ClientClosed(code, _) => (Some(*code), Some("client closed the connection".into())),
        End::ClientGone => (None, Some("client closed the connection".into())),
        End::Terminated => (Some(1000), Some(String::new())),
    };
    let id = {
        let mut r = record.lock();
        r.ended_at_ms = Some(unix_ms(SystemTime::now()));
        r.close_code = code;
        r.close_reason = reason;
        // Counts the closing Error frame too, when there is one.
        r.messages_sent = conn.sent + u64::from(matches!(end, End::Fail(..)));
        tracing::debug!(session = r.id, code = ?r.close_code, reason = ?r.close_reason, "session ends");
        r.id.clone()
    };
    let client = match end {
        End::Fail(code, text) => conn.fail(code, &text).await,
        End::Close(code, text) => conn.close(code, &text).await,
        End::Terminated => conn.close(1000, "").await,
        End::ClientClosed(code, reason) => {
            conn.answer_close().await;
            Some((code, reason))
        }
        // Dropping the socket ends the TCP connection with no close frame: the client sees an
        // abnormal closure (1006).
        End::Drop | End::ClientGone => None,
    };
    drop(conn);
    let complete = {
        let mut r = record.lock();
        r.client_close_code = client.as_ref().map(|(code, _)| *code);
        r.client_close_reason = client.map(|(_, reason)| reason);
        r.closed_at_ms = Some(unix_ms(SystemTime::now()));
        tracing::debug!(session = id, client_code = ?r.client_close_code, "connection closed");
        r.clone()
    };
    if let Some(dir) = &state.config.record_dir
        && let Err(e) = write_record(dir, &complete).await
    {
        tracing::warn!(
            session = id,
            "cannot write the session record in {}: {e}",
            dir.display()
        );
    }
}

/// `DIR/<id>.json`, written atomically: a temporary file in the same directory, then a rename,
/// so a reader sees no file or the whole record.
async fn write_record(dir: &Path, record: &SessionRecord) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{}.json.tmp", record.id));
    tokio::fs::write(&tmp, json).await?;
    tokio::fs::rename(&tmp, dir.join(format!("{}.json", record.id))).await
}

/// Apply an `UpdateConfiguration`: aai-live's offset hint (before any audio) restarts the
/// recogniser at that stream position (keeping earlier updates); the rest changes its settings
/// for the audio that follows. A value outside the range the connection parameter allows is
/// refused the same way (3006 naming it), and nothing is applied.
fn apply_update(
    recognizer: &mut Recognizer,
    script: Option<&Arc<Script>>,
    update: &UpdateConfiguration,
    before_audio: bool,
) -> Result<(), ParamError> {
    check_update(update)?;
    // aai-live's emulator hint (ignored by the service): where in the stream this session's
    // audio starts, sent before the first audio of a hand-over.
    if let Some(offset) = offset_hint(
        update
            .other
            .get(OFFSET_PARAM)
            .and_then(serde_json::Value::as_u64),
    ) && before_audio
    {
        let mut cfg = recognizer.config().clone();
        cfg.offset_ms = offset;
        cfg.hinted = true;
        *recognizer = Recognizer::new(cfg, script);
    }
    recognizer.update(update);
    Ok(())
}

/// The fields an update changes, checked as the client checks them (one set of rules for
/// both), and a `mode` the emulator models.
fn check_update(update: &UpdateConfiguration) -> Result<(), ParamError> {
    if let Some(mode) = update.other.get("mode") {
        Mode::parse(mode.as_str().unwrap_or_default())?;
    }
    crate::protocol::params::check_update(update)
}

/// A U3-Pro family session's `mode` must be one the service knows; elsewhere it is unmodelled.
fn check_mode(params: &StreamingParams, family: Family) -> Result<(), ParamError> {
    match &params.mode {
        Some(mode) if family.is_u3() => Mode::parse(mode).map(|_| ()),
        _ => Ok(()),
    }
}

/// Client message types, to tell an unknown type from a known one with bad fields.
const CLIENT_TYPES: [&str; 4] = [
    "Terminate",
    "ForceEndpoint",
    "KeepAlive",
    "UpdateConfiguration",
];

/// A text frame read as the service reads it: the 128 KB rule, JSON, an object, a known `type`.
/// The error is the close code and the Error text, with the client's text echoed bounded.
fn read_client_text(text: &str) -> Result<ClientMessage, (u16, String)> {
    use serde::Deserialize;
    if text.len() > audio::MAX_MESSAGE_BYTES {
        return Err((1009, too_big(text.len())));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| (3006, reasons::invalid_json(&super::echo(text, 60))))?;
    if !value.is_object() {
        return Err((3006, reasons::invalid_message(&super::echo(text, 60))));
    }
    ClientMessage::deserialize(&value).map_err(|e| {
        // A known type whose fields do not fit (`"max_turn_silence": "abc"`): say so, rather
        // than call the type unknown.
        if let Some(known) = value
            .get("type")
            .and_then(serde_json::Value::as_str)
            .filter(|t| CLIENT_TYPES.contains(t))
        {
            let why = super::echo(&e.to_string(), 60);
            return (3006, reasons::invalid_message(&format!("{known}: {why}")));
        }
        let kind = value.get("type").map_or_else(
            || super::echo(text, 60),
            |t| match t {
                serde_json::Value::String(s) => super::echo(s, ECHO_CHARS),
                other => super::echo(&other.to_string(), ECHO_CHARS),
            },
        );
        (3006, reasons::invalid_message_type(&kind))
    })
}

struct Session {
    state: Arc<State>,
    id: String,
    record: Registered,
    format: AudioFormat,
    inactivity: Option<Duration>,
    recognizer: Recognizer,
    /// Messages waiting for their processing delay, in due order.
    outbox: VecDeque<(Instant, ServerMessage)>,
    started: Instant,
    expires: Instant,
    last_activity: Instant,
    first_audio: Option<Instant>,
    audio_bytes: u64,
    /// A chunk under 50 ms is tolerated only as the last one before Terminate (undocumented;
    /// clients such as pipecat flush a short remainder), so its violation is held here.
    short_chunk: Option<f64>,
    plan: Plan,
    stalled: bool,
    recorder: Option<tokio::io::BufWriter<tokio::fs::File>>,
    received: u64,
    /// People in the record's `speakers` so far.
    speakers_noted: usize,
    /// PII redaction without `include_partial_turns`: partial turns are withheld, as the
    /// service does; a turn says nothing until it ends.
    partials_withheld: bool,
}

impl Session {
    async fn serve(&mut self, conn: &mut Conn) -> End {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                incoming = conn.socket.recv() => {
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        Some(Err(e)) => return transport_end(&e),
                        None => return End::ClientGone,
                    };
                    self.received += 1;
                    self.last_activity = Instant::now();
                    let step = match message {
                        Message::Binary(bytes) => self.audio(&bytes).await,
                        Message::Text(text) => self.text(text.as_str(), conn).await,
                        Message::Close(frame) => {
                            let (code, reason) = client_close(frame);
                            Some(End::ClientClosed(code, reason))
                        }
                        Message::Ping(_) | Message::Pong(_) => None,
                    };
                    if let Some(end) = step {
                        return end;
                    }
                }
                () = self.state.cancel.cancelled() => return going_away(),
                () = tokio::time::sleep_until(deadline) => {
                    if let Some(end) = self.timers(conn).await {
                        return end;
                    }
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let far = self.started + Duration::from_secs(86_400);
        let mut next = self.expires;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = next.min(t);
            }
        };
        if !self.stalled {
            consider(self.outbox.front().map(|(due, _)| *due));
        }
        consider(self.inactivity.map(|d| self.last_activity + d));
        consider(self.plan.close.as_ref().map(|(at, ..)| self.started + *at));
        consider(self.plan.drop.map(|at| self.started + at));
        consider(self.plan.stall.map(|at| self.started + at));
        consider(self.plan.stop_reading.map(|at| self.started + at));
        next.min(far)
    }

    async fn timers(&mut self, conn: &mut Conn) -> Option<End> {
        let now = Instant::now();
        if self.plan.drop.is_some_and(|at| now >= self.started + at) {
            return Some(End::Drop);
        }
        if let Some((at, code, reason)) = &self.plan.close
            && now >= self.started + *at
        {
            let code = *code;
            let text = reason
                .clone()
                .unwrap_or_else(|| default_reason(code).to_owned());
            // Codes the service documents with an Error frame get one; 1000/1001/1011 do not.
            return Some(if code >= 3000 || code == 1008 || code == 1009 {
                End::Fail(code, text)
            } else {
                End::Close(code, text)
            });
        }
        if self
            .plan
            .stop_reading
            .is_some_and(|at| now >= self.started + at)
        {
            return Some(self.stop_reading().await);
        }
        if self.plan.stall.is_some_and(|at| now >= self.started + at) {
            if !self.stalled {
                tracing::debug!(session = %self.id, "stalling (fault)");
            }
            self.stalled = true;
            self.plan.stall = None;
        }
        if now >= self.expires {
            return Some(expired());
        }
        if let Some(limit) = self.inactivity
            && now >= self.last_activity + limit
        {
            return Some(End::Fail(
                self.state.config.inactivity_close_code,
                format!(
                    "Session terminated due to inactivity: no audio or messages for {} s",
                    limit.as_secs()
                ),
            ));
        }
        if !self.stalled {
            while self.outbox.front().is_some_and(|(due, _)| *due <= now) {
                if let Some((_, message)) = self.outbox.pop_front()
                    && !self.deliver(conn, &message).await
                {
                    return Some(End::ClientGone);
                }
            }
        }
        None
    }

    /// The `stop-reading` fault: from now on the socket is not read at all, so the client's
    /// frames pile up in the kernel's buffers until its writes block, and nothing is sent (no
    /// turns, no pongs: pings are not even seen). The session ends at its expiry, at a `drop`
    /// fault's time, or at shutdown. A client that goes away cannot be noticed meanwhile: its
    /// FIN waits in the TCP stream behind the unread audio.
    async fn stop_reading(&mut self) -> End {
        tracing::debug!(session = %self.id, "no longer reading the socket (fault)");
        self.plan.stop_reading = None;
        let drop_at = self.plan.drop.map(|at| self.started + at);
        let drop_due = async {
            match drop_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = self.state.cancel.cancelled() => going_away(),
            () = tokio::time::sleep_until(self.expires) => expired(),
            () = drop_due => End::Drop,
        }
    }

    async fn deliver(&mut self, conn: &mut Conn, message: &ServerMessage) -> bool {
        if let ServerMessage::Turn(t) = message
            && t.end_of_turn
        {
            self.record.lock().final_turns += 1;
        }
        conn.send(message).await
    }

    fn queue(&mut self, messages: Vec<ServerMessage>) {
        let due = Instant::now() + self.state.config.processing_delay;
        let withheld = self.partials_withheld;
        self.outbox.extend(
            messages
                .into_iter()
                .filter(|m| !(withheld && matches!(m, ServerMessage::Turn(t) if !t.end_of_turn)))
                .map(|m| (due, m)),
        );
    }

    async fn audio(&mut self, bytes: &[u8]) -> Option<End> {
        if bytes.len() > audio::MAX_MESSAGE_BYTES {
            return Some(End::Fail(1009, too_big(bytes.len())));
        }
        if let Some(ms) = self.short_chunk.take() {
            return Some(End::Fail(3007, reasons::input_duration(ms)));
        }
        let ms = self.format.millis_of_bytes(bytes.len() as u64);
        if ms > f64::from(audio::MAX_CHUNK_MS) {
            return Some(End::Fail(3007, reasons::input_duration(ms)));
        }
        if ms < f64::from(audio::MIN_CHUNK_MS) {
            self.short_chunk = Some(ms);
        }
        let now = Instant::now();
        let first = *self.first_audio.get_or_insert(now);
        self.audio_bytes += bytes.len() as u64;
        let audio_s = self.format.millis_of_bytes(self.audio_bytes) / 1000.0;
        if let Some(pacing) = self.state.config.pacing {
            let wall_s = now.duration_since(first).as_secs_f64();
            if audio_s > wall_s * pacing.factor + pacing.burst.as_secs_f64() {
                return Some(End::Fail(3007, reasons::rate_exceeded(audio_s, wall_s)));
            }
        }
        if let Some(recorder) = &mut self.recorder
            && let Err(e) = recorder.write_all(bytes).await
        {
            tracing::warn!(session = %self.id, "recording failed: {e}");
            self.recorder = None;
        }
        let samples: Vec<i16> = match self.format.encoding {
            Encoding::PcmS16le => audio::s16le_samples(bytes).collect(),
            Encoding::PcmMulaw => bytes.iter().map(|&b| audio::mulaw_decode(b)).collect(),
        };
        let out = self.recognizer.feed(&samples);
        self.queue(out);
        self.note_speakers();
        let mut r = self.record.lock();
        r.audio_bytes = self.audio_bytes;
        r.audio_ms = (audio_s * 1000.0) as u64;
        r.audio_messages += 1;
        r.messages_received = self.received;
        None
    }

    async fn text(&mut self, text: &str, conn: &mut Conn) -> Option<End> {
        let message = match read_client_text(text) {
            Ok(message) => message,
            Err((code, error)) => return Some(End::Fail(code, error)),
        };
        self.record.lock().messages_received = self.received;
        match message {
            ClientMessage::KeepAlive => None,
            ClientMessage::UpdateConfiguration(update) => {
                if let Err(e) = apply_update(
                    &mut self.recognizer,
                    self.state.config.script.as_ref(),
                    &update,
                    self.audio_bytes == 0,
                ) {
                    return Some(End::Fail(3006, param_message(&e)));
                }
                self.note_update(&update);
                None
            }
            ClientMessage::ForceEndpoint => {
                let out = self.recognizer.force_endpoint();
                self.queue(out);
                self.note_speakers();
                None
            }
            ClientMessage::Terminate => Some(self.terminate(conn).await),
        }
    }

    /// An accepted `UpdateConfiguration` into the record: when (wall clock, audio and stream
    /// position), what it said (bounded), and the settings now in effect.
    fn note_update(&mut self, update: &UpdateConfiguration) {
        let fields = match serde_json::to_value(update) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        let (fields, truncated) = bounded_fields(&fields);
        let audio_ms = self.format.millis_of_bytes(self.audio_bytes).round() as u64;
        let config = self.recognizer.config();
        let entry = UpdateRecord {
            at_ms: self.started.elapsed().as_millis() as u64,
            audio_ms,
            stream_ms: config
                .hinted
                .then(|| audio_ms.saturating_add(config.offset_ms)),
            fields,
            truncated,
        };
        let settings = bounded_settings(config.settings());
        let mut r = self.record.lock();
        r.add_update(entry);
        r.effective = Some(settings);
    }

    /// Copy the people labelled so far into the record when a new one was labelled.
    fn note_speakers(&mut self) {
        // Checked without the record's lock: this runs for every audio message.
        let count = self.recognizer.speaker_count().min(MAX_RECORDED_SPEAKERS);
        if count == self.speakers_noted {
            return;
        }
        self.speakers_noted = count;
        let mut speakers = self.recognizer.speakers();
        speakers.truncate(MAX_RECORDED_SPEAKERS);
        self.record.lock().speakers = speakers;
    }

    async fn terminate(&mut self, conn: &mut Conn) -> End {
        self.short_chunk = None;
        self.record.lock().terminated_by_client = true;
        if self.plan.no_termination || self.stalled {
            // Fault: swallow Terminate; keep the socket open until the client gives up (or the
            // emulator shuts down).
            loop {
                let incoming = tokio::select! {
                    incoming = conn.socket.recv() => incoming,
                    () = self.state.cancel.cancelled() => return going_away(),
                };
                match incoming {
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = client_close(frame);
                        return End::ClientClosed(code, reason);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return transport_end(&e),
                    None => return End::ClientGone,
                }
            }
        }
        // In-flight turns first (without waiting out the processing delay), then Termination.
        let pending: Vec<ServerMessage> = self
            .outbox
            .drain(..)
            .map(|(_, m)| m)
            .chain(self.recognizer.flush())
            .collect();
        for message in &pending {
            if !self.deliver(conn, message).await {
                return End::ClientGone;
            }
        }
        // With speaker_labels, the service's last word on who spoke comes right before
        // Termination.
        if let Some(revision) = self.recognizer.speaker_revision()
            && !self.deliver(conn, &revision).await
        {
            return End::ClientGone;
        }
        self.note_speakers();
        let termination = ServerMessage::Termination(Termination {
            audio_duration_seconds: (self.format.millis_of_bytes(self.audio_bytes) / 1000.0).round()
                as u64,
            session_duration_seconds: self.started.elapsed().as_secs_f64().round() as u64,
        });
        let _ = conn.send(&termination).await;
        End::Terminated
    }
}

fn going_away() -> End {
    End::Close(1001, "Going Away: the emulator is shutting down".into())
}

fn expired() -> End {
    End::Fail(3008, reasons::SESSION_EXPIRED.to_owned())
}

fn default_reason(code: u16) -> &'static str {
    match code {
        3005 => reasons::SESSION_CANCELLED,
        3008 => reasons::SESSION_EXPIRED,
        3009 => reasons::TOO_MANY_SESSIONS,
        1008 => reasons::INVALID_AUTH,
        1011 => "Internal server error",
        _ => "Closed by the emulator (fault)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::Profile;
    use crate::emulator::script::{ScriptTurn, ScriptWord};
    use proptest::prelude::*;

    #[test]
    fn text_frames_follow_the_rules_and_echo_bounded_text() {
        assert_eq!(
            read_client_text(r#"{"type":"KeepAlive"}"#),
            Ok(ClientMessage::KeepAlive)
        );
        // The 128 KB rule holds for text too (a 10 MB KeepAlive was accepted).
        let padded = format!(r#"{{"type":"KeepAlive","pad":"{}"}}"#, "x".repeat(200_000));
        let (code, text) = read_client_text(&padded).expect_err("too big");
        assert_eq!(code, 1009, "{text}");
        // An unknown type of any size is echoed in at most 64 characters and "…".
        let huge = format!(r#"{{"type":"{}"}}"#, "y".repeat(100_000));
        let (code, text) = read_client_text(&huge).expect_err("unknown type");
        assert_eq!(code, 3006);
        assert_eq!(text, format!("Invalid Message Type: {}…", "y".repeat(64)));
        let (_, text) = read_client_text(r#"{"type":["a","b"]}"#).expect_err("not a string");
        assert!(text.starts_with("Invalid Message Type: [\"a\""), "{text}");
        assert_eq!(read_client_text("[]").expect_err("array").0, 3006);
        assert_eq!(read_client_text("nope").expect_err("not JSON").0, 3006);
    }

    #[test]
    fn bad_parameter_values_are_echoed_bounded() {
        let e = StreamingParams::from_query([("sample_rate", "9".repeat(60_000).as_str())])
            .expect_err("not a number");
        let message = param_message(&e);
        assert!(message.len() < 300, "{} bytes", message.len());
        assert!(
            message.contains("sample_rate") && message.contains('…'),
            "{message}"
        );
    }

    #[test]
    fn transport_errors_map_to_close_codes() {
        use tungstenite::error::{CapacityError, ProtocolError};
        let end = |e: tungstenite::Error| transport_end(&axum::Error::new(e));
        assert!(matches!(
            end(tungstenite::Error::Utf8("bad".into())),
            End::Close(1007, _)
        ));
        assert!(matches!(
            end(tungstenite::Error::Protocol(
                ProtocolError::UnmaskedFrameFromClient
            )),
            End::Close(1002, _)
        ));
        assert!(matches!(
            end(tungstenite::Error::Capacity(
                CapacityError::MessageTooLong {
                    size: 1 << 40,
                    max_size: SESSION_FRAME_LIMIT
                }
            )),
            End::Fail(1009, _)
        ));
        assert!(matches!(
            end(tungstenite::Error::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            End::ClientGone
        ));
        assert!(matches!(
            end(tungstenite::Error::Io(
                std::io::ErrorKind::ConnectionReset.into()
            )),
            End::ClientGone
        ));
    }

    fn script() -> Arc<Script> {
        let word = |text: &str, start, end| ScriptWord {
            text: text.into(),
            start,
            end,
        };
        Arc::new(Script {
            loop_ms: Some(2000),
            turns: vec![ScriptTurn {
                words: vec![word("hello", 100, 400), word("world", 500, 900)],
                speaker: Some("ana".into()),
                revised_speaker: Some("ben".into()),
                language: Some("es".into()),
            }],
        })
    }

    /// Client messages: known ones with arbitrary field values, and arbitrary JSON objects.
    fn client_text() -> impl Strategy<Value = String> {
        let number = prop_oneof![
            any::<u64>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            ".{0,8}".prop_map(serde_json::Value::from),
            // Keyterm lists: sometimes over 100 terms or 50 characters a term.
            proptest::collection::vec(".{0,60}", 0..120).prop_map(serde_json::Value::from),
        ];
        let field = prop_oneof![
            Just("min_turn_silence"),
            Just("max_turn_silence"),
            Just("vad_threshold"),
            Just("format_turns"),
            Just("end_of_turn_confidence_threshold"),
            Just(OFFSET_PARAM),
            Just("keyterms_prompt"),
            Just("other"),
        ];
        let kind = prop_oneof![
            Just("UpdateConfiguration".to_owned()),
            Just("KeepAlive".to_owned()),
            Just("ForceEndpoint".to_owned()),
            Just("Terminate".to_owned()),
            ".{0,10}",
        ];
        prop_oneof![
            (kind, proptest::collection::vec((field, number), 0..5)).prop_map(|(kind, fields)| {
                let mut object = serde_json::Map::new();
                object.insert("type".into(), kind.into());
                for (name, value) in fields {
                    object.insert(name.into(), value);
                }
                serde_json::Value::Object(object).to_string()
            }),
            ".{0,80}",
        ]
    }

    proptest! {
        #[test]
        fn client_text_handling_never_panics(
            text in client_text(),
            scripted in any::<bool>(),
            before_audio in any::<bool>(),
            diarized in any::<bool>(),
        ) {
            let params = StreamingParams {
                speaker_labels: diarized,
                max_speakers: diarized.then_some(1),
                language_detection: diarized,
                ..StreamingParams::default()
            };
            let base = RecognizerConfig::from_params(&params, Profile::Current, None);
            let script = scripted.then(script);
            let mut recognizer = Recognizer::new(base, script.as_ref());
            match read_client_text(&text) {
                Ok(ClientMessage::UpdateConfiguration(update)) => {
                    let before = recognizer.config().settings();
                    match apply_update(&mut recognizer, script.as_ref(), &update, before_audio) {
                        // A refused update names the field and changes nothing.
                        Err(e) => {
                            prop_assert!(text.contains(&e.name), "{} not in {}", e.name, text);
                            prop_assert_eq!(recognizer.config().settings(), before);
                        }
                        Ok(()) => {
                            if let Some(max) = update.max_turn_silence {
                                prop_assert_eq!(recognizer.config().max_turn_silence_ms, u64::from(max));
                            }
                        }
                    }
                    // What a record keeps of it is small whatever was sent.
                    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&update) {
                        let (kept, _) = crate::emulator::state::bounded_fields(&fields);
                        // 512 characters of text at most, each at worst a 6-byte JSON escape
                        // plus quotes and a comma.
                        prop_assert!(serde_json::Value::Object(kept).to_string().len() < 512 * 10);
                    }
                    // Voice then silence: words, turn ends, and script times all computed.
                    let tone: Vec<i16> = (0..16_000).map(|i| if i % 40 < 20 { 9000 } else { -9000 }).collect();
                    let _ = recognizer.feed(&tone);
                    let _ = recognizer.feed(&vec![0; 32_000]);
                    let _ = recognizer.force_endpoint();
                    let _ = recognizer.flush();
                    let _ = recognizer.speaker_revision();
                }
                Ok(_) => {}
                Err((code, message)) => {
                    prop_assert!(matches!(code, 1009 | 3006));
                    // The echo is bounded whatever the client sent.
                    prop_assert!(message.chars().count() <= 100, "{}", message);
                }
            }
        }

        #[test]
        fn known_client_messages_round_trip(
            kind in 0_u8..4,
            min in proptest::option::of(0_u32..=10_000),
            format_turns in proptest::option::of(any::<bool>()),
        ) {
            let message = match kind {
                0 => ClientMessage::Terminate,
                1 => ClientMessage::ForceEndpoint,
                2 => ClientMessage::KeepAlive,
                _ => ClientMessage::UpdateConfiguration(UpdateConfiguration {
                    min_turn_silence: min,
                    format_turns,
                    ..UpdateConfiguration::default()
                }),
            };
            prop_assert_eq!(read_client_text(&message.to_json()), Ok(message));
        }
    }
}
