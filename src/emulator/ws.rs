//! `/v3/ws`: authentication, connection parameters, and one task per streaming session that
//! enforces the service's rules (chunk sizes, pacing, message size, valid messages, expiry,
//! inactivity) and sends Begin, Turns and Termination.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::faults::Fault;
use super::recognizer::{Recognizer, RecognizerConfig};
use super::state::{AuthFailure, Grant, SessionRecord, State, unix_ms};
use super::token::error;
use crate::protocol::close::{self, reasons};
use crate::protocol::messages::{
    Begin, BeginConfiguration, ClientMessage, ErrorMessage, ServerMessage, Termination,
};
use crate::protocol::params::OFFSET_PARAM;
use crate::protocol::{API_VERSION, AudioFormat, Encoding, StreamingParams, audio};

/// How long the handler waits for the client's close reply before dropping the socket.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

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
    // Generous transport limit: the 128 KB rule is enforced by us, with the documented 1009.
    // An 8 KiB read buffer instead of the 128 KiB default: tungstenite zero-fills the buffer on
    // every read, which was the largest CPU item with 500 sessions (docs/benchmarks.md); larger
    // messages still arrive whole.
    ws.read_buffer_size(8 * 1024)
        .max_message_size(16 << 20)
        .max_frame_size(16 << 20)
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

/// The socket plus counters, with the close helpers every path uses.
struct Conn {
    socket: WebSocket,
    sent: u64,
    closed: Option<(u16, String)>,
}

impl Conn {
    fn new(socket: WebSocket) -> Self {
        Self {
            socket,
            sent: 0,
            closed: None,
        }
    }

    async fn send(&mut self, message: &ServerMessage) -> bool {
        self.sent += 1;
        self.socket
            .send(Message::Text(message.to_json().into()))
            .await
            .is_ok()
    }

    /// `Error` frame with the full text, then the close with a ≤123-byte reason.
    async fn fail(&mut self, code: u16, message: &str) {
        let _ = self
            .send(&ServerMessage::Error(ErrorMessage {
                error_code: Some(code),
                error: message.to_owned(),
            }))
            .await;
        self.close(code, close::close_reason(message)).await;
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.to_owned().into(),
        };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
        self.closed = Some((code, reason.to_owned()));
        // Let the client answer the close so it sees a clean closing handshake.
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(m)) = self.socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// How a session ends.
enum End {
    /// An error close (Error frame + close).
    Fail(u16, String),
    /// A close frame without an Error frame (1000-style faults and closes before Begin).
    Close(u16, String),
    /// Abrupt TCP drop.
    Drop,
    /// The client went away.
    ClientGone(Option<u16>),
    /// Terminate handled: Termination sent, close 1000.
    Terminated,
}

/// Timed faults for one session.
#[derive(Default)]
struct Plan {
    close: Option<(Duration, u16, Option<String>)>,
    drop: Option<Duration>,
    stall: Option<Duration>,
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
                Fault::NoTermination => plan.no_termination = true,
                Fault::TokenStatus { .. } | Fault::TokenDelay { .. } => {}
            }
        }
        Some(plan)
    }
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
                conn.fail(3006, &reasons::invalid_message(&e.to_string()))
                    .await;
                return;
            }
        };
    if let Err(e) = params.validate() {
        conn.fail(3006, &reasons::invalid_message(&e.to_string()))
            .await;
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
    let offset_ms = pairs
        .iter()
        .find(|(k, _)| k == OFFSET_PARAM)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);

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
                    .await;
            }
        }
        return;
    };

    let max_session = state
        .config
        .session_limit
        .map_or(grant.max_session, |cap| cap.min(grant.max_session));
    let started_wall = SystemTime::now();
    let expires_at = unix_ms(started_wall + max_session).div_ceil(1000) as i64;
    let id = uuid::Uuid::new_v4().to_string();
    let record = state.register(SessionRecord {
        id: id.clone(),
        credential: grant.kind,
        params: params.clone(),
        ignored_params: ignored,
        started_at_ms: unix_ms(started_wall),
        ended_at_ms: None,
        expires_at,
        close_code: None,
        close_reason: None,
        audio_bytes: 0,
        audio_ms: 0,
        audio_messages: 0,
        messages_sent: 0,
        messages_received: 0,
        final_turns: 0,
        terminated_by_client: false,
        faults: faults.iter().map(ToString::to_string).collect(),
    });
    tracing::debug!(session = %id, credential = ?grant.kind, ?params, "session starts");

    let begin = ServerMessage::Begin(Begin {
        id: id.clone(),
        expires_at,
        configuration: Some(BeginConfiguration {
            model: Some(params.speech_model.clone()),
            mode: None,
            api_version: Some(API_VERSION.into()),
            other: serde_json::Map::new(),
        }),
    });
    if !conn.send(&begin).await {
        return;
    }

    let recognizer_config = RecognizerConfig::from_params(&params, state.config.profile, offset_ms);
    let recognizer = Recognizer::new(recognizer_config.clone(), state.config.script.as_ref());
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
        id: id.clone(),
        record: Arc::clone(&record),
        format: params.audio_format(),
        inactivity: params
            .inactivity_timeout
            .map(|s| Duration::from_secs(s.into())),
        recognizer,
        recognizer_config,
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
    };
    let end = session.serve(&mut conn).await;
    let recorder = session.recorder.take();
    finish(&id, &record, conn, recorder, end).await;
}

/// Flush the recording and publish the outcome *before* the closing handshake, so whoever sees
/// the close can already read both; then close.
async fn finish(
    id: &str,
    record: &Mutex<SessionRecord>,
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
        End::ClientGone(code) => (*code, Some("client closed the connection".into())),
        End::Terminated => (Some(1000), Some(String::new())),
    };
    {
        let mut r = record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.ended_at_ms = Some(unix_ms(SystemTime::now()));
        r.close_code = code;
        r.close_reason = reason;
        // Counts the closing Error frame too, when there is one.
        r.messages_sent = conn.sent + u64::from(matches!(end, End::Fail(..)));
        tracing::debug!(session = id, code = ?r.close_code, reason = ?r.close_reason, "session ends");
    }
    match end {
        End::Fail(code, text) => conn.fail(code, &text).await,
        End::Close(code, text) => conn.close(code, &text).await,
        End::Terminated => conn.close(1000, "").await,
        // Dropping the socket ends the TCP connection with no close frame: the client sees an
        // abnormal closure (1006).
        End::Drop | End::ClientGone(_) => {}
    }
}

struct Session {
    state: Arc<State>,
    id: String,
    record: Arc<Mutex<SessionRecord>>,
    format: AudioFormat,
    inactivity: Option<Duration>,
    recognizer: Recognizer,
    recognizer_config: RecognizerConfig,
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
}

impl Session {
    async fn serve(&mut self, conn: &mut Conn) -> End {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                incoming = conn.socket.recv() => {
                    let Some(Ok(message)) = incoming else {
                        return End::ClientGone(None);
                    };
                    self.received += 1;
                    self.last_activity = Instant::now();
                    let step = match message {
                        Message::Binary(bytes) => self.audio(&bytes).await,
                        Message::Text(text) => self.text(text.as_str(), conn).await,
                        Message::Close(frame) => Some(End::ClientGone(frame.map(|f| f.code))),
                        Message::Ping(_) | Message::Pong(_) => None,
                    };
                    if let Some(end) = step {
                        return end;
                    }
                }
                () = self.state.cancel.cancelled() => {
                    return End::Close(1001, "Going Away: the emulator is shutting down".into());
                }
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
        if self.plan.stall.is_some_and(|at| now >= self.started + at) {
            if !self.stalled {
                tracing::debug!(session = %self.id, "stalling (fault)");
            }
            self.stalled = true;
            self.plan.stall = None;
        }
        if now >= self.expires {
            return Some(End::Fail(3008, reasons::SESSION_EXPIRED.to_owned()));
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
                    return Some(End::ClientGone(None));
                }
            }
        }
        None
    }

    async fn deliver(&mut self, conn: &mut Conn, message: &ServerMessage) -> bool {
        if let ServerMessage::Turn(t) = message
            && t.end_of_turn
        {
            self.lock_record().final_turns += 1;
        }
        conn.send(message).await
    }

    fn lock_record(&self) -> std::sync::MutexGuard<'_, SessionRecord> {
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn queue(&mut self, messages: Vec<ServerMessage>) {
        let due = Instant::now() + self.state.config.processing_delay;
        self.outbox.extend(messages.into_iter().map(|m| (due, m)));
    }

    async fn audio(&mut self, bytes: &[u8]) -> Option<End> {
        if bytes.len() > audio::MAX_MESSAGE_BYTES {
            return Some(End::Fail(
                1009,
                format!(
                    "Message too big: {} bytes (the limit is 128 KB)",
                    bytes.len()
                ),
            ));
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
        let mut r = self.lock_record();
        r.audio_bytes = self.audio_bytes;
        r.audio_ms = (audio_s * 1000.0) as u64;
        r.audio_messages += 1;
        r.messages_received = self.received;
        None
    }

    async fn text(&mut self, text: &str, conn: &mut Conn) -> Option<End> {
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => return Some(End::Fail(3006, reasons::invalid_json(&excerpt(text)))),
        };
        if !value.is_object() {
            return Some(End::Fail(3006, reasons::invalid_message(&excerpt(text))));
        }
        let Ok(message) = serde_json::from_value::<ClientMessage>(value.clone()) else {
            let kind = value.get("type").map_or_else(
                || excerpt(text),
                |t| t.to_string().trim_matches('"').to_owned(),
            );
            return Some(End::Fail(3006, reasons::invalid_message_type(&kind)));
        };
        self.lock_record().messages_received = self.received;
        match message {
            ClientMessage::KeepAlive => None,
            ClientMessage::UpdateConfiguration(update) => {
                // aai-live's emulator hint (ignored by the service): where in the stream this
                // session's audio starts, sent before the first audio of a hand-over.
                if let Some(offset) = update
                    .other
                    .get(OFFSET_PARAM)
                    .and_then(serde_json::Value::as_u64)
                    && self.audio_bytes == 0
                {
                    let mut cfg = self.recognizer_config.clone();
                    cfg.offset_ms = offset;
                    self.recognizer = Recognizer::new(cfg, self.state.config.script.as_ref());
                }
                self.recognizer.update(&update);
                None
            }
            ClientMessage::ForceEndpoint => {
                let out = self.recognizer.force_endpoint();
                self.queue(out);
                None
            }
            ClientMessage::Terminate => Some(self.terminate(conn).await),
        }
    }

    async fn terminate(&mut self, conn: &mut Conn) -> End {
        self.short_chunk = None;
        self.lock_record().terminated_by_client = true;
        if self.plan.no_termination || self.stalled {
            // Fault: swallow Terminate; keep the socket open until the client gives up.
            while let Some(Ok(m)) = conn.socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
            return End::ClientGone(None);
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
                return End::ClientGone(None);
            }
        }
        let termination = ServerMessage::Termination(Termination {
            audio_duration_seconds: (self.format.millis_of_bytes(self.audio_bytes) / 1000.0).round()
                as u64,
            session_duration_seconds: self.started.elapsed().as_secs_f64().round() as u64,
        });
        let _ = conn.send(&termination).await;
        End::Terminated
    }
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

/// At most 60 characters of client text for an error message.
fn excerpt(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn excerpt_is_bounded() {
        assert_eq!(super::excerpt("abc"), "abc");
        assert_eq!(super::excerpt(&"x".repeat(100)).chars().count(), 61);
    }
}
