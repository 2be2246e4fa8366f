//! `emulate --replay FILE`: each new session is served the next session of a trace
//! (`run --trace`) instead of recognition — the server's text frames as recorded, each once the
//! client has got as far (its text frames, then its audio since the last of them) and no earlier
//! than its recorded time in the session, then the recorded close. A client slower than the
//! recorded one is waited for; one that has gone past a step (a later text frame, such as its
//! `Terminate`) gets the step at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Message;
use tokio::time::Instant;

use super::ws::Conn;
use crate::protocol::audio::MAX_MESSAGE_BYTES;
use crate::trace::{ClientPosition, RecordedSession, ServerStep, shift_begin};

/// How long a replay waits for a client's close when the recording says the client closed
/// first (after `Termination`, for instance) before answering it anyway.
const CLIENT_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What ended a replayed session early.
enum Gone {
    /// The client closed (answered) or went away.
    Client,
    /// The emulator is shutting down.
    Shutdown,
}

/// Serve `session` on `conn`; returns when the recorded close has been played (or the client
/// has gone, or `cancel` fires).
pub(super) async fn serve(
    conn: &mut Conn,
    session: &RecordedSession,
    cancel: &tokio_util::sync::CancellationToken,
) {
    let started = Instant::now();
    let now_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut client = ClientPosition::default();
    for step in &session.steps {
        let due = started + Duration::from_millis(step.session_ms);
        match wait_for(conn, &mut client, step.after, due, cancel).await {
            Ok(()) => {}
            Err(Gone::Client) => return,
            Err(Gone::Shutdown) => {
                conn.close(1001, "Going Away: the emulator is shutting down")
                    .await;
                return;
            }
        }
        match &step.what {
            ServerStep::Text(text) => {
                let text = shift_begin(text, session.opened_unix_ms, now_unix_ms);
                if !conn.send_text(text).await {
                    return;
                }
            }
            ServerStep::Binary(bytes) => {
                // The size comes from a file: no bigger than a message may be.
                let size =
                    usize::try_from(*bytes).map_or(MAX_MESSAGE_BYTES, |n| n.min(MAX_MESSAGE_BYTES));
                if conn
                    .socket
                    .send(Message::Binary(vec![0; size].into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // The connection was lost: end it without a close frame.
            ServerStep::Close { code: None, .. } => return,
            ServerStep::Close {
                code: Some(code),
                reason,
                by_server: true,
            } => {
                conn.close(*code, reason).await;
                return;
            }
            ServerStep::Close {
                code: Some(code),
                reason,
                by_server: false,
            } => {
                // The client closed first: wait for its close, then answer as recorded.
                let closed = tokio::time::timeout(CLIENT_CLOSE_WAIT, async {
                    loop {
                        match conn.socket.recv().await {
                            Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                            Some(Ok(_)) => {}
                        }
                    }
                })
                .await;
                if closed.is_err() {
                    conn.close(*code, reason).await;
                } else {
                    conn.answer_close().await;
                }
                return;
            }
        }
    }
    // A trace cut short (no close recorded): end as the service ends a finished session.
    conn.close(1000, "").await;
}

/// Read the client's frames until it has reached `after` and `due` has come, or passed
/// `after`.
async fn wait_for(
    conn: &mut Conn,
    client: &mut ClientPosition,
    after: ClientPosition,
    due: Instant,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), Gone> {
    loop {
        if client.passed(after) || (client.reached(after) && Instant::now() >= due) {
            return Ok(());
        }
        let reached = client.reached(after);
        tokio::select! {
            () = tokio::time::sleep_until(due), if reached => {}
            incoming = conn.socket.recv() => match incoming {
                Some(Ok(Message::Binary(bytes))) => client.audio(bytes.len()),
                Some(Ok(Message::Text(_))) => client.text(),
                Some(Ok(Message::Close(_))) => {
                    conn.answer_close().await;
                    return Err(Gone::Client);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(_)) | None => return Err(Gone::Client),
            },
            () = cancel.cancelled() => return Err(Gone::Shutdown),
        }
    }
}
