//! Serving an axum router over TCP, for the emulator and `aai-live serve` alike: bind (port 0
//! picks a free port), optional TLS (rustls), the peer address for every handler, per-connection
//! limits (header timeout, a cap on open connections), and a graceful shutdown driven by a
//! cancellation token.
//!
//! Both servers go through [`serve`], so a limit on connections lives in [`ListenOptions`] and
//! is written once. Every connection is served with axum's `ConnectInfo<SocketAddr>` (the peer
//! address), plain or TLS, so a handler or layer can always ask who is calling. The `--tls-cert`
//! / `--tls-key` pair of both commands is [`TlsArgs`], flattened into their arguments; it lives
//! here rather than in `cli` because `serve`'s arguments sit in `server` and `cli` already
//! depends on `server`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use futures_util::future::BoxFuture;
use futures_util::task::AtomicWaker;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// TLS certificate chain and private key files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `--tls-cert FILE --tls-key FILE`: each requires the other. The certificate's help is
/// `serve`'s; `aai-live emulate` rewords it (it also serves wss://) with `mut_arg`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// TLS certificate chain (PEM): serve https://.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files to serve TLS with, or `None` for plain HTTP (clap guarantees both or neither).
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

/// How to serve: TLS, per-connection limits, shutdown. A new per-connection limit is a field
/// here and a few lines in [`serve`], where the connections are configured for both plain and
/// TLS serving.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Names the server in the log: "emulator", "token server".
    pub name: &'static str,
    pub tls: Option<TlsFiles>,
    /// Time a connection has to send its first request, and the headers of every request
    /// (slow-loris protection). `None`: no limit.
    pub header_timeout: Option<Duration>,
    /// A cap on open connections (plain or TLS, WebSocket ones included, counted from the TCP
    /// accept to the close). `None`: no cap.
    pub connection_limit: Option<Arc<ConnectionLimit>>,
    /// Send small writes at once (`TCP_NODELAY`). A server that writes a last frame and then
    /// closes a connection with unread input (which the kernel answers with a reset, discarding
    /// what it still holds) needs it, or Nagle's algorithm may hold that frame back.
    pub tcp_nodelay: bool,
    /// How long a shutdown waits for requests under way before closing their connections.
    pub shutdown_grace: Duration,
    /// The most a connection buffers, reading a request or writing an answer (HTTP/1; hyper's
    /// default, about 400 KB, when `None`; at least 8 KiB). A stream to a client that stopped
    /// reading stops being produced once this and the socket's buffers are full.
    pub max_buf_size: Option<usize>,
    /// The kernel's send buffer of each connection (`SO_SNDBUF`; the system's, which grows to
    /// megabytes, when `None`). With [`ListenOptions::max_buf_size`], what a client that stopped
    /// reading can have queued for it before its answer stops being produced.
    pub send_buffer: Option<usize>,
}

impl ListenOptions {
    /// Plain HTTP, no per-connection limits, one second of grace at shutdown.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            tls: None,
            header_timeout: None,
            connection_limit: None,
            tcp_nodelay: false,
            shutdown_grace: Duration::from_secs(1),
            max_buf_size: None,
            send_buffer: None,
        }
    }
}

/// At most one "connection cap reached" warning in the log per this period.
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

/// A cap on a server's open connections, shared by the listener (one place per connection,
/// held until the connection closes) and whoever reports the counters.
///
/// At the cap, a new connection takes the place of the oldest one that has not sent a complete
/// request head (an idle socket, a slow-loris, a TLS handshake that never ends, a kept-alive
/// connection between two requests): that one is closed. Idle sockets hold their place until the
/// header timeout, so without this a few hundred of them lock every request out for that long,
/// whatever the cap. Only when every open connection is serving a request (its answer not yet
/// written in full) or is a WebSocket is the new one closed at once, accepted
/// rather than left in the kernel's backlog: the client learns at once (a reset or an end of
/// stream) instead of hanging until its own timeout, the file descriptor is released
/// immediately, and the accept loop keeps draining the backlog.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: Mutex<Open>,
    refused: AtomicU64,
    evicted: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

/// The open connections, oldest first.
#[derive(Debug, Default)]
struct Open {
    next: u64,
    places: BTreeMap<u64, Arc<Place>>,
}

/// One connection's place: whether it is busy (requests under way, their answers still being
/// written, or upgraded to a WebSocket), and the order to leave.
#[derive(Debug, Default)]
struct Place {
    /// Requests whose head has arrived and whose answer has not been written in full.
    busy: AtomicUsize,
    /// Switched protocols (a WebSocket session): busy for as long as it lives.
    upgraded: AtomicBool,
    evicted: AtomicBool,
    /// The connection's task, woken to see the order.
    waker: AtomicWaker,
}

impl Place {
    /// Waiting for a request head: its first, or the next one on a kept-alive connection.
    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0 && !self.upgraded.load(Ordering::Acquire)
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the connection was told to leave; registers the task to be told.
    fn is_evicted(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.evicted.load(Ordering::Acquire)
    }
}

/// What [`ConnectionLimit::stats`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConnectionStats {
    pub open: usize,
    pub max: usize,
    /// Connections closed at once because the cap was reached with every connection busy.
    pub refused: u64,
    /// Connections closed to make room, at the cap, because they were waiting for a request head.
    pub evicted: u64,
}

impl ConnectionLimit {
    /// A cap of `max` (at least 1) open connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            open: Mutex::new(Open::default()),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            last_log: Mutex::new(None),
        })
    }

    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            open: self.open().places.len(),
            max: self.max,
            refused: self.refused.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a new connection: a free one, else the place of the oldest connection that
    /// is waiting for a request head (closed), else `None` (counted). Both are logged at most
    /// every 10 s.
    fn admit(self: &Arc<Self>, name: &str) -> Option<Ticket> {
        let mut open = self.open();
        if open.places.len() >= self.max {
            let idle = open
                .places
                .iter()
                .find(|(_, place)| place.is_idle())
                .map(|(&id, _)| id);
            let Some(place) = idle.and_then(|id| open.places.remove(&id)) else {
                drop(open);
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                self.log(|| {
                    tracing::warn!(
                        max = self.max,
                        refused,
                        "{name}: {} connections are open (the cap), all of them busy: new \
                         connections are closed at once",
                        self.max
                    );
                });
                return None;
            };
            place.evict();
            let evicted = self.evicted.fetch_add(1, Ordering::Relaxed) + 1;
            self.log(|| {
                tracing::warn!(
                    max = self.max,
                    evicted,
                    "{name}: {} connections are open (the cap): the oldest one waiting for a \
                     request is closed for each new one",
                    self.max
                );
            });
        }
        let id = open.next;
        open.next += 1;
        let place = Arc::new(Place::default());
        open.places.insert(id, Arc::clone(&place));
        Some(Ticket {
            id,
            place,
            limit: Arc::clone(self),
        })
    }

    fn log(&self, warn: impl FnOnce()) {
        let mut last = self
            .last_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_PERIOD) {
            *last = Some(now);
            warn();
        }
    }
}

/// A connection's hold on its place, given back when the connection is dropped.
#[derive(Debug)]
struct Ticket {
    id: u64,
    place: Arc<Place>,
    limit: Arc<ConnectionLimit>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.limit.open().places.remove(&self.id);
    }
}

/// Descriptors a server needs besides its clients' connections: the listener, the runtime, the
/// log, an upstream's pooled connections, a limits store, a recording.
pub const RESERVED_FILES: u64 = 64;

/// A connection cap (`setting`, as the user knows it) that fits the open-file limit `files` (`None`: unlimited or unknown), when
/// each connection holds `per_connection` descriptors: the cap itself when it fits, else the
/// limit minus [`RESERVED_FILES`], divided (at least 1), with the sentence that says so. A cap
/// above the limit cannot hold: `accept` fails first, and the server runs out of descriptors for
/// its own work.
pub fn fit_to_open_files(
    setting: &str,
    cap: usize,
    files: Option<u64>,
    per_connection: u64,
) -> (usize, Option<String>) {
    let Some(limit) = files else {
        return (cap, None);
    };
    let fits = usize::try_from(limit.saturating_sub(RESERVED_FILES) / per_connection.max(1))
        .unwrap_or(usize::MAX)
        .max(1);
    if cap <= fits {
        return (cap, None);
    }
    (
        fits,
        Some(format!(
            "{setting} {cap} is above what the open-file limit ({limit}) allows: {fits} \
             connections at most (raise `ulimit -n` or LimitNOFILE= for more)"
        )),
    )
}

/// This process's soft limit on open files (`None` when unlimited or unknown), read from
/// /proc/self/limits: a connection cap above it cannot hold, since `accept` fails first. The
/// emulator lowers its cap to fit it, `serve` warns.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The acceptor every connection goes through (before TLS): takes a place when there is a cap,
/// and marks the place when the connection's first request head has arrived.
#[derive(Debug, Clone)]
struct Gate {
    name: &'static str,
    limit: Option<Arc<ConnectionLimit>>,
    nodelay: bool,
    send_buffer: Option<usize>,
}

impl<S> Accept<TcpStream, S> for Gate {
    type Stream = Counted;
    type Service = Marked<S>;
    type Future = std::future::Ready<io::Result<(Counted, Marked<S>)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let ticket = match &self.limit {
            None => None,
            Some(limit) => match limit.admit(self.name) {
                Some(ticket) => Some(ticket),
                // axum-server drops the stream on an error: the connection is closed at once.
                None => {
                    return std::future::ready(Err(io::Error::other("connection cap reached")));
                }
            },
        };
        if self.nodelay
            && let Err(e) = stream.set_nodelay(true)
        {
            return std::future::ready(Err(e));
        }
        if let Some(size) = self.send_buffer
            && let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(size)
        {
            return std::future::ready(Err(e));
        }
        let place = ticket.as_ref().map(|t| Arc::clone(&t.place));
        std::future::ready(Ok((Counted { stream, ticket }, Marked { service, place })))
    }
}

/// A connection's service, marking its place busy from the arrival of a request head (hyper
/// calls the service only then, for HTTP/1 and HTTP/2, plain or TLS) until its answer's body has
/// been written in full (hyper drops it then); an answer switching protocols (a WebSocket) keeps
/// the place busy for good.
#[derive(Debug, Clone)]
struct Marked<S> {
    service: S,
    place: Option<Arc<Place>>,
}

impl<S, R, B> tower::Service<R> for Marked<S>
where
    S: tower::Service<R, Response = axum::http::Response<B>>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = axum::http::Response<Guarded<B>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let busy = self.place.as_ref().map(Busy::start);
        let answer = self.service.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if let Some(busy) = &busy
                && response.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS
            {
                busy.0.upgraded.store(true, Ordering::Release);
            }
            Ok(response.map(|body| Guarded { body, _busy: busy }))
        })
    }
}

/// One request's hold on its connection's busy count.
#[derive(Debug)]
struct Busy(Arc<Place>);

impl Busy {
    fn start(place: &Arc<Place>) -> Self {
        place.busy.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(place))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body, holding its request's [`Busy`] until hyper has written it and drops it.
#[derive(Debug)]
pub struct Guarded<B> {
    body: B,
    _busy: Option<Busy>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A TCP stream holding its connection's place until it is dropped; told to leave, it fails
/// every read and write, so the connection closes at once whatever it was waiting for.
#[derive(Debug)]
struct Counted {
    stream: TcpStream,
    ticket: Option<Ticket>,
}

impl Counted {
    fn evicted(&self, cx: &Context<'_>) -> bool {
        self.ticket.as_ref().is_some_and(|t| t.place.is_evicted(cx))
    }
}

fn made_room() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed to make room for a new connection (no request head before the cap was reached)",
    )
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.evicted(cx) {
            return Poll::Ready(Err(made_room()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.evicted(cx) {
            return Poll::Ready(Err(made_room()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.evicted(cx) {
            return Poll::Ready(Err(made_room()));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load the TLS certificate {cert} / key {key}: {source}")]
    Tls {
        cert: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running listener. Dropping it does not stop it: cancel its token or call
/// [`Running::shutdown`].
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub tls: bool,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// `http://HOST:PORT` (or https).
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Cancelling it starts the graceful shutdown.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stop accepting connections, let requests under way finish (within the grace period), and
    /// return when the server has stopped.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.wait().await;
    }

    /// Serve until cancelled, then until the graceful shutdown has finished.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Bind `addr`, load the TLS files if any, and serve `app` until `cancel` is cancelled. If
/// serving fails on its own, `cancel` is cancelled too, so whatever hangs on it stops as well.
pub async fn serve(
    addr: impl ToSocketAddrs + Display,
    app: Router,
    options: ListenOptions,
    cancel: CancellationToken,
) -> Result<Running, ListenError> {
    let tls = match &options.tls {
        Some(files) => Some(load_tls(files).await.map_err(|source| ListenError::Tls {
            cert: files.cert.display().to_string(),
            key: files.key.display().to_string(),
            source,
        })?),
        None => None,
    };
    let bind = |source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(&addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;

    // Per-connection settings, for plain and TLS serving alike: the gate (the connection cap)
    // sees every TCP connection before any TLS handshake.
    let handle = axum_server::Handle::new();
    let gate = Gate {
        name: options.name,
        limit: options.connection_limit.clone(),
        nodelay: options.tcp_nodelay,
        send_buffer: options.send_buffer,
    };
    let mut server = axum_server::Server::<SocketAddr>::from_listener(listener)
        .handle(handle.clone())
        .acceptor(gate);
    if let Some(timeout) = options.header_timeout {
        server
            .http_builder()
            .http1()
            .header_read_timeout(Some(timeout));
        server = server.first_request_timeout(timeout);
    }
    if let Some(max) = options.max_buf_size {
        server.http_builder().http1().max_buf_size(max.max(8192));
    }

    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let is_tls = tls.is_some();
    let serving: BoxFuture<'static, std::io::Result<()>> = match tls {
        None => Box::pin(server.serve(make_service)),
        Some(config) => Box::pin(
            server
                .map(|gate| RustlsAcceptor::new(config).acceptor(gate))
                .serve(make_service),
        ),
    };
    let task = tokio::spawn(run(serving, handle, cancel.clone(), options));
    Ok(Running {
        addr: local,
        tls: is_tls,
        cancel,
        task,
    })
}

/// The certificate chain and key, each read bounded ([`crate::files::MAX_FILE_BYTES`]: a PEM
/// file is a few KB; `--tls-cert /dev/zero` must not fill the memory) on a blocking thread (a
/// FIFO may make the read wait up to [`crate::files::PIPE_WAIT`]).
async fn load_tls(files: &TlsFiles) -> io::Result<RustlsConfig> {
    let (cert, key) = (files.cert.clone(), files.key.clone());
    let read = |path: &std::path::Path, what: &str| {
        crate::files::read_capped(path, crate::files::MAX_FILE_BYTES)
            .map_err(|e| io::Error::new(e.kind(), format!("the {what}: {e}")))
    };
    let (cert, key) = tokio::task::spawn_blocking(move || {
        Ok::<_, io::Error>((read(&cert, "certificate")?, read(&key, "key")?))
    })
    .await
    .map_err(io::Error::other)??;
    RustlsConfig::from_pem(cert, key).await
}

/// Serve until cancelled, then shut down gracefully.
async fn run(
    mut serving: BoxFuture<'static, std::io::Result<()>>,
    handle: axum_server::Handle<SocketAddr>,
    cancel: CancellationToken,
    options: ListenOptions,
) {
    let name = options.name;
    tokio::select! {
        result = &mut serving => {
            if let Err(e) = result {
                tracing::error!("{name} stopped: {e}");
            }
            cancel.cancel();
            return;
        }
        () = cancel.cancelled() => {}
    }
    tracing::info!("{name} shutting down");
    // axum-server signals shutdown with `notify_waiters`, which reaches only a loop already
    // waiting for it; repeat until the accept loop has seen it and the connections are done.
    loop {
        handle.graceful_shutdown(Some(options.shutdown_grace));
        match tokio::time::timeout(Duration::from_millis(50), &mut serving).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => {
                tracing::error!("{name} stopped: {e}");
                break;
            }
            Err(_) => {}
        }
    }
    tracing::info!("{name} stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    #[test]
    fn open_file_limit_is_read() {
        // Linux has /proc/self/limits; elsewhere there is nothing to fit a cap to.
        if std::path::Path::new("/proc/self/limits").exists() {
            assert!(open_file_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn the_connection_cap_fits_the_open_file_limit() {
        assert_eq!(
            fit_to_open_files("--max-connections", 4096, None, 1),
            (4096, None)
        );
        assert_eq!(
            fit_to_open_files("--max-connections", 4096, Some(1_048_576), 1),
            (4096, None)
        );
        let (cap, warning) = fit_to_open_files("--max-connections", 4096, Some(1024), 1);
        assert_eq!(cap, 960);
        let warning = warning.expect("lowered");
        assert!(warning.contains("--max-connections 4096") && warning.contains("(1024)"));
        assert_eq!(
            fit_to_open_files("--max-connections", 4096, Some(1024), 2).0,
            480
        );
        assert_eq!(
            fit_to_open_files("--max-connections", 4096, Some(10), 1).0,
            1
        );
        assert_eq!(
            fit_to_open_files("--max-connections", 512, Some(128), 1).0,
            64
        );
    }

    #[test]
    fn tls_flags_come_in_pairs() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.tls)
        };
        assert_eq!(parse(&[]).expect("none").files(), None);
        assert_eq!(
            parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"])
                .expect("both")
                .files(),
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["--tls-key", "k.pem"]).is_err());
    }

    #[tokio::test]
    async fn handlers_see_the_peer_and_shutdown_stops_serving() {
        let app = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let running = serve(
            "127.0.0.1:0",
            app,
            ListenOptions::new("test server"),
            CancellationToken::new(),
        )
        .await
        .expect("serves");
        assert_eq!(running.base_url(), format!("http://{}", running.addr));
        let mut socket = tokio::net::TcpStream::connect(running.addr)
            .await
            .expect("connect");
        let local = socket.local_addr().expect("local");
        let answer = request(&mut socket, "/peer").await;
        assert!(answer.ends_with(&local.to_string()), "{answer}");
        drop(socket);

        let addr = running.addr;
        tokio::time::timeout(Duration::from_secs(5), running.shutdown())
            .await
            .expect("stops in time");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_taken_port_is_a_bind_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let e = serve(
            addr,
            Router::new(),
            ListenOptions::new("test server"),
            CancellationToken::new(),
        )
        .await
        .expect_err("taken");
        assert!(matches!(e, ListenError::Bind { .. }), "{e}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }

    /// Whether `socket` is closed by the server within `within` (an end of stream or a reset).
    async fn closed_within(socket: &mut tokio::net::TcpStream, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0_u8; 16];
        matches!(
            tokio::time::timeout(within, socket.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// At the cap a new connection takes the place of the oldest idle one (it used to be
    /// refused: idle sockets then locked every request out until the header timeout); only when
    /// every connection is serving a request is the new one closed at once.
    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_makes_room() {
        use std::sync::atomic::AtomicUsize;
        let limit = ConnectionLimit::new(2);
        let busy = Arc::new(AtomicUsize::new(0));
        let slow = {
            let busy = Arc::clone(&busy);
            move || {
                let busy = Arc::clone(&busy);
                async move {
                    busy.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    "slow"
                }
            }
        };
        let running = serve(
            "127.0.0.1:0",
            Router::new()
                .route("/", get(|| async { "ok" }))
                .route("/slow", get(slow)),
            ListenOptions {
                connection_limit: Some(Arc::clone(&limit)),
                header_timeout: Some(Duration::from_secs(30)),
                ..ListenOptions::new("test server")
            },
            CancellationToken::new(),
        )
        .await
        .expect("serves");
        let connect = || tokio::net::TcpStream::connect(running.addr);
        let wait_open = |n: usize| {
            let limit = Arc::clone(&limit);
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while limit.stats().open != n {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{:?}",
                        limit.stats()
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        // A kept-alive connection between two requests, and one that has sent nothing, hold
        // both places: both are waiting for a request head.
        let mut kept = connect().await.expect("1");
        tokio::io::AsyncWriteExt::write_all(&mut kept, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        while !answer.ends_with(b"ok") {
            let mut buf = [0_u8; 256];
            let n = tokio::io::AsyncReadExt::read(&mut kept, &mut buf)
                .await
                .expect("read");
            assert!(n > 0, "{}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        wait_open(1).await;
        let mut second = connect().await.expect("2");
        wait_open(2).await;
        // A third is served at once, and the oldest one waiting (the kept-alive one) is closed
        // for it.
        let mut third = connect().await.expect("3");
        assert!(request(&mut third, "/").await.ends_with("ok"));
        assert!(closed_within(&mut kept, Duration::from_secs(5)).await);
        assert_eq!((limit.stats().evicted, limit.stats().refused), (1, 0));
        // Two connections busy with requests take the places (the second idle one makes room)...
        wait_open(1).await;
        let mut slow_ones = Vec::new();
        for _ in 0..2 {
            let mut socket = connect().await.expect("slow");
            tokio::io::AsyncWriteExt::write_all(
                &mut socket,
                b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .expect("write");
            slow_ones.push(socket);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while busy.load(Ordering::SeqCst) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                limit.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(closed_within(&mut second, Duration::from_secs(5)).await);
        // ...and with every connection busy, a new one is closed at once.
        let mut refused = connect().await.expect("refused");
        assert!(closed_within(&mut refused, Duration::from_secs(1)).await);
        assert_eq!(limit.stats().refused, 1);
        for mut socket in slow_ones {
            let mut answer = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut socket, &mut answer)
                .await
                .expect("read");
            assert!(answer.ends_with("slow"), "{answer}");
        }
        running.shutdown().await;
    }

    #[tokio::test]
    async fn idle_connections_time_out() {
        let limit = ConnectionLimit::new(4);
        let running = serve(
            "127.0.0.1:0",
            Router::new().route("/", get(|| async { "ok" })),
            ListenOptions {
                connection_limit: Some(Arc::clone(&limit)),
                header_timeout: Some(Duration::from_millis(600)),
                ..ListenOptions::new("test server")
            },
            CancellationToken::new(),
        )
        .await
        .expect("serves");
        let mut idle = tokio::net::TcpStream::connect(running.addr)
            .await
            .expect("idle");
        assert!(closed_within(&mut idle, Duration::from_secs(10)).await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while limit.stats().open > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                limit.stats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        running.shutdown().await;
    }

    /// One HTTP/1.1 request on `socket` (connection closed after), the whole answer as text.
    async fn request(socket: &mut tokio::net::TcpStream, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        socket
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.expect("read");
        answer
    }
}
