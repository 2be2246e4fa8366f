//! Serving an axum router over TCP, for the emulator and `aai-live serve` alike: bind (port 0
//! picks a free port), optional TLS (rustls), the peer address for every handler, per-connection
//! limits, and a graceful shutdown driven by a cancellation token.
//!
//! Both servers go through [`serve`], so a limit on connections lives in [`ListenOptions`] and
//! is written once. Every connection is served with axum's `ConnectInfo<SocketAddr>` (the peer
//! address), plain or TLS, so a handler or layer can always ask who is calling. The `--tls-cert`
//! / `--tls-key` pair of both commands is [`TlsArgs`], flattened into their arguments; it lives
//! here rather than in `cli` because `serve`'s arguments sit in `server` and `cli` already
//! depends on `server`.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    /// How long a shutdown waits for requests under way before closing their connections.
    pub shutdown_grace: Duration,
    /// Connections open at once (TLS handshakes included); a connection beyond it is closed as
    /// soon as it is accepted, so idle sockets cannot use up the process's file descriptors.
    /// `None`: no cap.
    pub max_connections: Option<usize>,
}

impl ListenOptions {
    /// Plain HTTP, no per-connection limits, one second of grace at shutdown.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            tls: None,
            header_timeout: None,
            shutdown_grace: Duration::from_secs(1),
            max_connections: None,
        }
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
        Some(files) => Some(
            RustlsConfig::from_pem_file(&files.cert, &files.key)
                .await
                .map_err(|source| ListenError::Tls {
                    cert: files.cert.display().to_string(),
                    key: files.key.display().to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let bind = |source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(&addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;

    // Per-connection settings, for plain and TLS serving alike.
    let handle = axum_server::Handle::new();
    let mut server =
        axum_server::Server::<SocketAddr>::from_listener(listener).handle(handle.clone());
    if let Some(timeout) = options.header_timeout {
        server
            .http_builder()
            .http1()
            .header_read_timeout(Some(timeout));
        server = server.first_request_timeout(timeout);
    }

    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let is_tls = tls.is_some();
    let cap = ConnectionCap {
        name: options.name,
        slots: options.max_connections.map(|n| Arc::new(Semaphore::new(n))),
    };
    let server = server.acceptor(cap);
    let serving: BoxFuture<'static, std::io::Result<()>> = match tls {
        None => Box::pin(server.serve(make_service)),
        Some(config) => Box::pin(
            server
                .map(|capped| RustlsAcceptor::new(config).acceptor(capped))
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

/// The first acceptor of every connection: takes one of `slots` for as long as the connection
/// lives, or closes it at once when none is left.
#[derive(Debug, Clone)]
struct ConnectionCap {
    name: &'static str,
    slots: Option<Arc<Semaphore>>,
}

impl<S> Accept<TcpStream, S> for ConnectionCap {
    type Stream = Counted;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Counted, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let slot = match &self.slots {
            None => None,
            Some(slots) => {
                let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
                    // Dropping the stream closes it. Debug only: a flood would flood the log.
                    tracing::debug!(
                        name = self.name,
                        "connection cap reached: closing a new connection"
                    );
                    return std::future::ready(Err(std::io::Error::other(
                        "connection cap reached",
                    )));
                };
                Some(permit)
            }
        };
        std::future::ready(Ok((
            Counted {
                stream,
                _slot: slot,
            },
            service,
        )))
    }
}

/// A connection holding its slot of the cap until it is dropped.
#[derive(Debug)]
struct Counted {
    stream: TcpStream,
    _slot: Option<OwnedSemaphorePermit>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
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
    use tokio::io::AsyncReadExt;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
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

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_at_once() {
        let app = Router::new().route("/peer", get(|| async { "ok" }));
        let options = ListenOptions {
            max_connections: Some(2),
            ..ListenOptions::new("test server")
        };
        let running = serve("127.0.0.1:0", app, options, CancellationToken::new())
            .await
            .expect("serves");
        let held = [
            tokio::net::TcpStream::connect(running.addr)
                .await
                .expect("1"),
            tokio::net::TcpStream::connect(running.addr)
                .await
                .expect("2"),
        ];
        // Let the server accept both before the third arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = tokio::net::TcpStream::connect(running.addr)
            .await
            .expect("accepted by the kernel");
        let mut buf = [0_u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "the third connection is closed by the server: {closed:?}"
        );
        // A slot freed is a slot for the next connection.
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut socket = tokio::net::TcpStream::connect(running.addr)
            .await
            .expect("connect");
        assert!(request(&mut socket, "/peer").await.ends_with("ok"));
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
