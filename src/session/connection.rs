//! One WebSocket connection to the service, as a task: connect (token in the header or the
//! query), forward every server message tagged with the connection's generation, send what the
//! supervisor queues, and report how it ended — exactly once.
//!
//! The queue towards the socket is bounded: a server that stops reading makes TCP push back, the
//! queue fills, and the supervisor keeps the audio in its replay buffer instead of in memory
//! here (and finds the connection stalled). Closing is polite: a close frame from the server is
//! answered, after `Termination` aai-live closes with 1000 itself, and a connection the
//! supervisor lets go is closed with 1000 — each bounded, so a dead socket cannot hold a task.
//!
//! [`Connector`] is the seam between the supervisor and the network: the supervisor opens every
//! connection through it, so tests drive the supervisor against fake connections.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::machine::Gen;
use crate::protocol::close::classify_upgrade_status;
use crate::protocol::messages::{ClientMessage, ServerMessage};
use crate::protocol::{API_VERSION, CloseClass, WsUrl, classify};

/// How long a polite close may take (our close frame out, the server's reply in) before the
/// socket is simply dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the supervisor sends down a connection.
#[derive(Debug)]
pub enum Outgoing {
    Audio(Vec<u8>),
    Control(ClientMessage),
    /// A WebSocket ping, to learn whether a quiet server is still there.
    Ping,
}

/// What a connection reports.
#[derive(Debug)]
pub enum ConnEvent {
    Message(ServerMessage),
    /// A frame that is not a message (a pong): the server is alive.
    Alive,
    Closed(Ended),
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub code: Option<u16>,
    pub reason: String,
    /// The `error` of the last `Error` frame, if any.
    pub error: Option<String>,
    pub class: CloseClass,
    pub after_begin: bool,
}

/// Where a connection reports, tagged with its generation.
pub type EventSender = mpsc::UnboundedSender<(Gen, ConnEvent)>;

/// The supervisor's end of a connection. Dropping it (or [`Connection::close`]) asks the task to
/// close the socket politely; the task ends within [`CLOSE_TIMEOUT`] either way.
#[derive(Debug)]
pub struct Connection {
    pub generation: Gen,
    tx: mpsc::Sender<Outgoing>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Connection {
    /// A connection whose task reads `rx` and watches `stop` (for [`Connector`]s).
    pub fn new(
        generation: Gen,
        tx: mpsc::Sender<Outgoing>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self {
            generation,
            tx,
            stop,
            task: Some(task),
        }
    }

    /// Queue `item`; `false` when the queue is full (the socket is not keeping up) or the
    /// connection is gone. Nothing is encoded or queued then: the caller keeps the audio.
    pub fn try_send(&self, item: Outgoing) -> bool {
        self.tx.try_send(item).is_ok()
    }

    /// Room for one more item (audio is only encoded when it can be queued).
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 0
    }

    /// Close politely (bounded); the handle lets the caller wait for the close to finish.
    pub fn close(mut self) -> Option<tokio::task::JoinHandle<()>> {
        self.stop.cancel();
        self.task.take()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Opens connections: the real WebSocket ([`WebSocketConnector`]) or a fake in tests.
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Start connecting `generation` to `url` (the token in `header_token` or in the URL); the
    /// connection reports on `events` and takes at most `queue` items ahead of the socket.
    fn open(
        &self,
        generation: Gen,
        url: WsUrl,
        header_token: Option<SecretString>,
        queue: usize,
        events: EventSender,
    ) -> Connection;
}

/// The real thing: tokio-tungstenite over TCP/TLS.
#[derive(Debug, Default)]
pub struct WebSocketConnector;

impl Connector for WebSocketConnector {
    fn open(
        &self,
        generation: Gen,
        url: WsUrl,
        header_token: Option<SecretString>,
        queue: usize,
        events: EventSender,
    ) -> Connection {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let ended = run(generation, &url, header_token, rx, &events, stop).await;
                tracing::info!(
                    generation,
                    code = ?ended.code,
                    reason = %ended.reason,
                    class = ?ended.class,
                    "connection ended"
                );
                let _ = events.send((generation, ConnEvent::Closed(ended)));
            }
        });
        Connection::new(generation, tx, stop, task)
    }
}

/// The default connector, shared.
pub fn websocket() -> Arc<dyn Connector> {
    Arc::new(WebSocketConnector)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[expect(
    clippy::too_many_lines,
    reason = "connect, then one select loop; splitting hides the flow"
)]
async fn run(
    generation: Gen,
    url: &WsUrl,
    header_token: Option<SecretString>,
    mut rx: mpsc::Receiver<Outgoing>,
    events: &EventSender,
    stop: CancellationToken,
) -> Ended {
    let mut ended = Ended {
        code: None,
        reason: String::new(),
        error: None,
        class: CloseClass::Transient,
        after_begin: false,
    };
    let mut request = match url.expose().into_client_request() {
        Ok(r) => r,
        Err(e) => {
            ended.reason = format!("invalid streaming URL {url}: {e}");
            ended.class = CloseClass::Fatal;
            return ended;
        }
    };
    let headers = request.headers_mut();
    if let Some(token) = header_token
        && let Ok(mut value) = token
            .expose_secret()
            .parse::<tungstenite::http::HeaderValue>()
    {
        value.set_sensitive(true);
        headers.insert("Authorization", value);
    }
    if let Ok(v) = API_VERSION.parse() {
        headers.insert("AssemblyAI-Version", v);
    }
    if let Ok(v) = concat!(
        "AssemblyAI/1.0 (integration=aai-live/",
        env!("CARGO_PKG_VERSION"),
        ")"
    )
    .parse()
    {
        headers.insert("User-Agent", v);
    }
    tracing::debug!(generation, %url, "connecting");
    let connected = tokio::select! {
        () = stop.cancelled() => {
            ended.reason = "closed by aai-live before it was open".into();
            ended.class = CloseClass::Normal;
            return ended;
        }
        // An 8 KiB read buffer: tungstenite zero-fills the whole buffer (128 KiB by default)
        // before every read attempt, once per audio chunk sent; server messages are small.
        connected = tokio_tungstenite::connect_async_with_config(
            request,
            Some(tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024)),
            false,
        ) => connected,
    };
    let mut ws = match connected {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            ended.reason = format!("the service refused the connection with HTTP {status}");
            ended.class = classify_upgrade_status(status);
            return ended;
        }
        Err(e) => {
            // Network errors carry no secrets (the URL is not part of tungstenite's messages).
            ended.reason = format!("cannot connect to {url}: {e}");
            return ended;
        }
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                close_politely(&mut ws).await;
                ended.reason = "closed by aai-live".into();
                ended.class = CloseClass::Normal;
                return ended;
            }
            out = rx.recv() => {
                let Some(out) = out else {
                    close_politely(&mut ws).await;
                    ended.reason = "closed by aai-live".into();
                    ended.class = CloseClass::Normal;
                    return ended;
                };
                let message = match out {
                    Outgoing::Audio(bytes) => Message::Binary(bytes.into()),
                    Outgoing::Control(c) => Message::Text(c.to_json().into()),
                    Outgoing::Ping => Message::Ping(Vec::new().into()),
                };
                // A server that stops reading blocks this send: stay stoppable meanwhile.
                let sent = tokio::select! {
                    () = stop.cancelled() => {
                        ended.reason = "closed by aai-live (the socket was not writable)".into();
                        ended.class = CloseClass::Normal;
                        return ended;
                    }
                    sent = ws.send(message) => sent,
                };
                if let Err(e) = sent {
                    ended.reason = format!("send failed: {e}");
                    return ended;
                }
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => match ServerMessage::parse(text.as_str()) {
                    Ok(message) => {
                        if let ServerMessage::Error(e) = &message {
                            ended.error = Some(e.error.clone());
                        }
                        if matches!(message, ServerMessage::Begin(_)) {
                            ended.after_begin = true;
                        }
                        let terminated = matches!(message, ServerMessage::Termination(_));
                        let _ = events.send((generation, ConnEvent::Message(message)));
                        if terminated {
                            // The session is over: close with 1000 ourselves and take the
                            // server's close (its code is what the session ended with).
                            return finish_after_termination(&mut ws, ended).await;
                        }
                    }
                    Err(e) => tracing::warn!(generation, "ignoring an unreadable server message: {e}"),
                },
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    ended.code = Some(code);
                    ended.reason = reason;
                    ended.class = classify(Some(code), &ended.reason, ended.error.as_deref());
                    // tungstenite queued the reply to the server's close frame: flush it.
                    drain(&mut ws).await;
                    return ended;
                }
                Some(Ok(_)) => {
                    let _ = events.send((generation, ConnEvent::Alive));
                }
                Some(Err(e)) => {
                    ended.reason = format!("connection lost: {e}");
                    ended.class = classify(None, "", ended.error.as_deref());
                    return ended;
                }
                None => {
                    ended.reason = "connection lost".into();
                    return ended;
                }
            }
        }
    }
}

/// After `Termination`: send our close (1000) and wait, bounded, for the server's.
async fn finish_after_termination(ws: &mut Socket, mut ended: Ended) -> Ended {
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let closing = async {
        let _ = ws.close(Some(normal)).await;
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(Message::Close(Some(f))) => {
                    return Some((u16::from(f.code), f.reason.to_string()));
                }
                Ok(Message::Close(None)) => return Some((1005, String::new())),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        None
    };
    let (code, reason) = tokio::time::timeout(CLOSE_TIMEOUT, closing)
        .await
        .ok()
        .flatten()
        .unwrap_or((1000, String::new()));
    ended.code = Some(code);
    ended.reason = reason;
    ended.class = classify(Some(code), &ended.reason, ended.error.as_deref());
    ended
}

/// Send a 1000 close frame and wait, bounded, for the server's reply.
async fn close_politely(ws: &mut Socket) {
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let closing = async {
        let _ = ws.close(Some(normal)).await;
        drain(ws).await;
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}

/// Read until the socket is closed (flushes a queued close reply), bounded.
async fn drain(ws: &mut Socket) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
