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
//! connection through it, so tests drive the supervisor against fake connections. [`connect`]
//! is the one way to open the socket; which HTTP proxy it goes through, and the tunnel's
//! `CONNECT`, are `super::proxy`'s.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::diagnosis::{Diagnosis, Network};
use crate::events::Gen;
use crate::failure::Failure;
use crate::protocol::close::upgrade_verdict;
use crate::protocol::messages::{ClientMessage, ServerMessage};
use crate::protocol::{API_VERSION, CloseClass, WsUrl};
use crate::trace::{SessionTrace, Trace};

use super::proxy::{ProxyEnv, TunnelError, display_proxy, proxy_address, tunnel};

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

/// How a connection ended: the failure (or the normal end) it was, and whether `Begin` had
/// arrived on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// Its class, close code, reason (the server's, not yet capped) and troubleshooting section.
    pub failure: Failure,
    /// The `error` of the last `Error` frame, if any.
    pub error: Option<String>,
    pub after_begin: bool,
}

impl Ended {
    /// The service closed it (or the connection dropped: `code` `None`).
    pub fn close(
        code: Option<u16>,
        reason: &str,
        error: Option<String>,
        after_begin: bool,
    ) -> Self {
        Self {
            failure: Failure::close(code, reason, error.as_deref(), after_begin),
            error,
            after_begin,
        }
    }

    /// The connection ended because aai-live closed it.
    pub fn by_us(reason: &str, after_begin: bool) -> Self {
        Self {
            failure: Failure::close(Some(1000), reason, None, true),
            error: None,
            after_begin,
        }
    }

    /// It could not be opened.
    pub fn not_opened(error: &ConnectError) -> Self {
        Self {
            failure: error.failure(),
            error: None,
            after_begin: false,
        }
    }

    /// Its class.
    pub fn class(&self) -> CloseClass {
        self.failure.class
    }
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

/// The real thing: tokio-tungstenite over TCP/TLS; with a [`Trace`], every frame each
/// connection sends and receives is written to it (`run --trace`).
#[derive(Debug, Default)]
pub struct WebSocketConnector {
    trace: Option<Trace>,
}

impl WebSocketConnector {
    /// Connections that write their frames to `trace`.
    pub fn traced(trace: Trace) -> Self {
        Self { trace: Some(trace) }
    }
}

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
        let mut trace = self.trace.as_ref().map(|t| t.session(generation));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let ended = guarded(Box::pin(run(
                    generation,
                    &url,
                    header_token,
                    rx,
                    &events,
                    stop,
                    trace.as_mut(),
                )))
                .await;
                if let Some(trace) = &mut trace {
                    // Unless the close was traced where it was seen: aai-live closed, or the
                    // connection was lost (no code then).
                    trace.closed(ended.failure.code, &ended.failure.reason, false);
                }
                tracing::info!(
                    generation,
                    code = ?ended.failure.code,
                    reason = %crate::untrusted::for_terminal(&ended.failure.reason),
                    class = ?ended.failure.class,
                    "connection ended"
                );
                let _ = events.send((generation, ConnEvent::Closed(ended)));
            }
        });
        Connection::new(generation, tx, stop, task)
    }
}

/// A connection task's end, even when it panics: a panic is reported as a local failure (the
/// run fails) instead of a silence the stall check would mistake for a dropped connection.
pub async fn guarded(task: impl std::future::Future<Output = Ended>) -> Ended {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(task)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Ended {
            failure: Failure::internal(crate::strings::CONNECTION_TASK_DIED),
            error: None,
            after_begin: false,
        })
}

/// The default connector, shared.
pub fn websocket() -> Arc<dyn Connector> {
    Arc::new(WebSocketConnector::default())
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run(
    generation: Gen,
    url: &WsUrl,
    header_token: Option<SecretString>,
    mut rx: mpsc::Receiver<Outgoing>,
    events: &EventSender,
    stop: CancellationToken,
    mut trace: Option<&mut SessionTrace>,
) -> Ended {
    tracing::debug!(generation, %url, "connecting");
    let proxies = ProxyEnv::process();
    let connected = tokio::select! {
        () = stop.cancelled() => return Ended::by_us("closed by aai-live before it was open", false),
        connected = connect(url, header_token, &proxies) => connected,
    };
    // Connect errors carry no secrets: the URL they name is the redacted one.
    let mut ws = match connected {
        Ok(ws) => ws,
        Err(e) => return Ended::not_opened(&e),
    };
    if let Some(trace) = trace.as_deref_mut() {
        // The redacted URL: the trace never sees the token.
        trace.opened(&url.to_string());
    }
    let mut error: Option<String> = None;
    let mut after_begin = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                close_politely(&mut ws).await;
                return Ended::by_us("closed by aai-live", after_begin);
            }
            out = rx.recv() => {
                let Some(out) = out else {
                    close_politely(&mut ws).await;
                    return Ended::by_us("closed by aai-live", after_begin);
                };
                let message = match out {
                    Outgoing::Audio(bytes) => Message::Binary(bytes.into()),
                    Outgoing::Control(c) => Message::Text(c.to_json().into()),
                    Outgoing::Ping => Message::Ping(Vec::new().into()),
                };
                if let Some(trace) = trace.as_deref() {
                    match &message {
                        Message::Binary(bytes) => trace.audio(bytes.len()),
                        Message::Text(text) => trace.sent(text.as_str()),
                        _ => {}
                    }
                }
                // A server that stops reading blocks this send: stay stoppable meanwhile.
                let sent = tokio::select! {
                    () = stop.cancelled() => {
                        return Ended::by_us(
                            "closed by aai-live (the socket was not writable)",
                            after_begin,
                        );
                    }
                    sent = ws.send(message) => sent,
                };
                if let Err(e) = sent {
                    return Ended::close(None, &format!("send failed: {e}"), error, after_begin);
                }
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => match trace_received(trace.as_deref(), text.as_str()) {
                    Ok(message) => {
                        if let ServerMessage::Error(e) = &message {
                            error = Some(e.error.clone());
                        }
                        if matches!(message, ServerMessage::Begin(_)) {
                            after_begin = true;
                        }
                        let terminated = matches!(message, ServerMessage::Termination(_));
                        let _ = events.send((generation, ConnEvent::Message(message)));
                        if terminated {
                            // The session is over: close with 1000 ourselves and take the
                            // server's close (its code is what the session ended with).
                            let (code, reason) = finish_after_termination(&mut ws).await;
                            if let Some(trace) = trace.as_deref_mut() {
                                trace.closed(Some(code), &reason, false);
                            }
                            return Ended::close(Some(code), &reason, error, after_begin);
                        }
                    }
                    Err(e) => tracing::warn!(generation, "ignoring an unreadable server message: {e}"),
                },
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    if let Some(trace) = trace.as_deref_mut() {
                        trace.closed(Some(code), &reason, true);
                    }
                    // tungstenite queued the reply to the server's close frame: flush it.
                    drain(&mut ws).await;
                    return Ended::close(Some(code), &reason, error, after_begin);
                }
                Some(Ok(frame)) => {
                    if let (Some(trace), Message::Binary(bytes)) = (trace.as_deref(), &frame) {
                        trace.received_binary(bytes.len());
                    }
                    let _ = events.send((generation, ConnEvent::Alive));
                }
                Some(Err(e)) => {
                    return Ended::close(None, &format!("connection lost: {e}"), error, after_begin);
                }
                None => return Ended::close(None, "connection lost", error, after_begin),
            }
        }
    }
}

/// Parse a server text frame, tracing it first (verbatim, readable or not).
fn trace_received(
    trace: Option<&SessionTrace>,
    text: &str,
) -> Result<ServerMessage, crate::protocol::messages::ParseError> {
    if let Some(trace) = trace {
        trace.received(text);
    }
    ServerMessage::parse(text)
}

/// How long reaching the server (or the proxy) may take: name resolution, TCP, the proxy's
/// answer to `CONNECT`. The TLS and WebSocket handshakes after it are bounded by the
/// supervisor's `begin_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a WebSocket could not be opened. `Display` is the reason a connection reports: it names
/// the redacted URL and the proxy without credentials, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid streaming URL {url}: {detail}")]
    InvalidUrl { url: String, detail: String },
    #[error("cannot connect to {url}: cannot resolve {host}: {detail}")]
    Dns {
        url: String,
        host: String,
        detail: String,
    },
    #[error("cannot connect to {url}: {detail}")]
    Tcp { url: String, detail: String },
    #[error("cannot connect to {url}: cannot reach the proxy {proxy}: {detail}")]
    ProxyUnreachable {
        url: String,
        proxy: String,
        detail: String,
    },
    #[error("cannot connect to {url}: the proxy {proxy} refused the tunnel: {answer}")]
    ProxyRefused {
        url: String,
        proxy: String,
        /// The proxy's status: 407 (it wants credentials, or other ones) will not change by
        /// retrying.
        status: Option<u16>,
        answer: String,
    },
    #[error("cannot connect to {url}: TLS handshake failed: {detail}")]
    Tls { url: String, detail: String },
    #[error("the service refused the connection with HTTP {status}")]
    Refused { status: u16 },
    #[error("cannot connect to {url}: {detail}")]
    Handshake { url: String, detail: String },
}

impl ConnectError {
    /// What the failure means for the session.
    pub fn class(&self) -> CloseClass {
        match self {
            // A proxy that wants credentials (or refuses the ones in its URL) refuses every
            // retry the same way: a run that retried it would retry forever.
            Self::InvalidUrl { .. }
            | Self::ProxyRefused {
                status: Some(407), ..
            } => CloseClass::Fatal,
            Self::Refused { status } => upgrade_verdict(*status).class,
            _ => CloseClass::Transient,
        }
    }

    /// The failure it is, with its troubleshooting section (decided here, from the variant).
    pub fn failure(&self) -> Failure {
        let (diagnosis, status, network) = match self {
            Self::InvalidUrl { .. } => (Diagnosis::ConfigInvalid, None, None),
            Self::Dns { .. } => (Diagnosis::DnsFailure, None, Some(Network::Dns)),
            Self::Tcp { .. } | Self::Handshake { .. } => {
                (Diagnosis::TcpFailure, None, Some(Network::Refused))
            }
            Self::ProxyUnreachable { .. } | Self::ProxyRefused { .. } => {
                (Diagnosis::ProxyFailure, None, Some(Network::Proxy))
            }
            Self::Tls { .. } => (Diagnosis::TlsFailure, None, Some(Network::Tls)),
            Self::Refused { status } => (upgrade_verdict(*status).diagnosis, Some(*status), None),
        };
        Failure::connect(self.class(), self.to_string(), diagnosis, status, network)
    }
}

/// Open the WebSocket to `url` (the token in `header_token` or in the URL) with aai-live's
/// headers, through the proxy `proxies` name for it. `run` and `aai-live doctor` both connect
/// through here, so the doctor cannot pass where a run fails.
pub async fn connect(
    url: &WsUrl,
    header_token: Option<SecretString>,
    proxies: &ProxyEnv,
) -> Result<Socket, ConnectError> {
    let shown = url.to_string();
    let invalid = |detail: String| ConnectError::InvalidUrl {
        url: shown.clone(),
        detail,
    };
    let mut request = url
        .expose()
        .into_client_request()
        .map_err(|e| invalid(e.to_string()))?;
    let parsed = url::Url::parse(url.expose()).map_err(|e| invalid(e.to_string()))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| invalid("no host".into()))?
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| invalid("no port".into()))?;
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
    let proxy = proxies
        .proxy_for(&parsed)
        .map_err(|detail| ConnectError::ProxyUnreachable {
            url: shown.clone(),
            proxy: "(from the environment)".into(),
            detail,
        })?;
    let tcp = match &proxy {
        None => tcp_connect(&shown, &host, port).await?,
        Some(proxy) => through_proxy(&shown, proxy, &host, port).await?,
    };
    let _ = tcp.set_nodelay(true);
    // An 8 KiB read buffer: tungstenite zero-fills the whole buffer (128 KiB by default) before
    // every read attempt, once per audio chunk sent; server messages are small.
    let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024);
    match tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), None).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(ConnectError::Refused {
            status: response.status().as_u16(),
        }),
        Err(tungstenite::Error::Tls(e)) => Err(ConnectError::Tls {
            url: shown,
            detail: e.to_string(),
        }),
        // rustls reports a refused certificate or a broken handshake as invalid data.
        Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err(ConnectError::Tls {
                url: shown,
                detail: e.to_string(),
            })
        }
        Err(e) => Err(ConnectError::Handshake {
            url: shown,
            detail: e.to_string(),
        }),
    }
}

/// Resolve `host` and connect, bounded by [`CONNECT_TIMEOUT`]; a name that does not resolve is
/// told apart from an address that does not answer.
async fn tcp_connect(shown: &str, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((bare, port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                return Err(ConnectError::Dns {
                    url: shown.to_owned(),
                    host: bare.to_owned(),
                    detail: e.to_string(),
                });
            }
            Err(_) => {
                return Err(ConnectError::Dns {
                    url: shown.to_owned(),
                    host: bare.to_owned(),
                    detail: format!("no answer within {}", CONNECT_TIMEOUT.as_secs()),
                });
            }
        };
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => last = format!("IO error: {e}"),
            Err(_) => {
                last = format!(
                    "no answer from {addr} within {} s",
                    CONNECT_TIMEOUT.as_secs()
                );
            }
        }
    }
    Err(ConnectError::Tcp {
        url: shown.to_owned(),
        detail: last,
    })
}

/// Reach `host:port` through the HTTP proxy `proxy`: TCP to the proxy (bounded as any
/// connect), then its tunnel ([`tunnel`]); its failures are the proxy's, with the proxy
/// shown without credentials.
async fn through_proxy(
    shown: &str,
    proxy: &url::Url,
    host: &str,
    port: u16,
) -> Result<TcpStream, ConnectError> {
    let proxy_shown = display_proxy(proxy);
    let unreachable = |detail: String| ConnectError::ProxyUnreachable {
        url: shown.to_owned(),
        proxy: proxy_shown.clone(),
        detail,
    };
    let (proxy_host, proxy_port) = proxy_address(proxy);
    let mut tcp = tcp_connect(&proxy_shown, proxy_host, proxy_port)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    match tunnel(&mut tcp, proxy, host, port, CONNECT_TIMEOUT).await {
        Ok(()) => Ok(tcp),
        Err(TunnelError::Unreachable(detail)) => Err(unreachable(detail)),
        Err(TunnelError::Refused { status, line }) => Err(ConnectError::ProxyRefused {
            url: shown.to_owned(),
            proxy: proxy_shown,
            status,
            answer: line,
        }),
    }
}

/// After `Termination`: send our close (1000) and wait, bounded, for the server's (its code
/// and reason).
async fn finish_after_termination(ws: &mut Socket) -> (u16, String) {
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
    tokio::time::timeout(CLOSE_TIMEOUT, closing)
        .await
        .ok()
        .flatten()
        .unwrap_or((1000, String::new()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_upgrade_keeps_its_class_and_words() {
        let e = ConnectError::Refused { status: 429 };
        assert_eq!(e.class(), CloseClass::RateLimited);
        assert_eq!(
            e.to_string(),
            "the service refused the connection with HTTP 429"
        );
        let e = ConnectError::Dns {
            url: "wss://x/v3/ws".into(),
            host: "x".into(),
            detail: "failed to lookup address information".into(),
        };
        assert_eq!(e.class(), CloseClass::Transient);
        assert!(e.to_string().contains("cannot resolve x"));
    }

    fn normal() -> Ended {
        Ended::close(Some(1000), "bye", None, true)
    }

    #[tokio::test]
    async fn a_panicking_connection_task_ends_as_a_local_failure_not_a_silence() {
        let ended = guarded(async {
            assert!(
                normal().failure.code.is_none(),
                "a bug in the connection task"
            );
            normal()
        })
        .await;
        assert_eq!(ended.class(), CloseClass::Local);
        assert_eq!(ended.failure.reason, crate::strings::CONNECTION_TASK_DIED);
        assert_eq!(guarded(async { normal() }).await, normal());
    }
}
