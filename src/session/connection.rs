//! One WebSocket connection to the service, as a task: connect (token in the header or the
//! query), forward every server message tagged with the connection's generation, send what the
//! supervisor queues, and report how it ended — exactly once.

use futures_util::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use super::machine::Gen;
use crate::protocol::close::classify_upgrade_status;
use crate::protocol::messages::{ClientMessage, ServerMessage};
use crate::protocol::{API_VERSION, CloseClass, WsUrl, classify};

/// What the supervisor sends down a connection.
#[derive(Debug)]
pub enum Outgoing {
    Audio(Vec<u8>),
    Control(ClientMessage),
}

/// What a connection reports.
#[derive(Debug)]
pub enum ConnEvent {
    Message(ServerMessage),
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

/// The supervisor's end of a connection. Dropping it closes the socket.
#[derive(Debug)]
pub struct Connection {
    pub generation: Gen,
    tx: mpsc::UnboundedSender<Outgoing>,
    task: tokio::task::JoinHandle<()>,
}

impl Connection {
    pub fn send(&self, item: Outgoing) -> bool {
        self.tx.send(item).is_ok()
    }

    /// Close now, without the Terminate handshake.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Open a connection. With `header_token`, the token goes in `Authorization` (the URL then holds
/// none).
pub fn spawn(
    generation: Gen,
    url: WsUrl,
    header_token: Option<SecretString>,
    events: mpsc::UnboundedSender<(Gen, ConnEvent)>,
) -> Connection {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let ended = run(generation, &url, header_token, rx, &events).await;
        tracing::info!(
            generation,
            code = ?ended.code,
            reason = %ended.reason,
            class = ?ended.class,
            "connection ended"
        );
        let _ = events.send((generation, ConnEvent::Closed(ended)));
    });
    Connection {
        generation,
        tx,
        task,
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "connect, then one select loop; splitting hides the flow"
)]
async fn run(
    generation: Gen,
    url: &WsUrl,
    header_token: Option<SecretString>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    events: &mpsc::UnboundedSender<(Gen, ConnEvent)>,
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
    let mut ws = match tokio_tungstenite::connect_async(request).await {
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
            out = rx.recv() => {
                let Some(out) = out else {
                    // The supervisor dropped us: close politely.
                    let _ = ws.close(None).await;
                    ended.reason = "closed by aai-live".into();
                    ended.class = CloseClass::Normal;
                    return ended;
                };
                let message = match out {
                    Outgoing::Audio(bytes) => Message::Binary(bytes.into()),
                    Outgoing::Control(c) => Message::Text(c.to_json().into()),
                };
                if let Err(e) = ws.send(message).await {
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
                        let _ = events.send((generation, ConnEvent::Message(message)));
                    }
                    Err(e) => tracing::warn!(generation, "ignoring an unreadable server message: {e}"),
                },
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    ended.code = Some(code);
                    ended.reason = reason;
                    ended.class = classify(Some(code), &ended.reason, ended.error.as_deref());
                    return ended;
                }
                Some(Ok(_)) => {}
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
