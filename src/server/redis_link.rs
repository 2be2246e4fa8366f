//! The connection to the limits store: TCP (or TLS for `rediss://`) opened by us rather than by
//! redis-rs's connection manager, so that what the store sends is read under a cap. redis-rs
//! reads a reply whole before parsing it, and a bulk string declares its own length: a hostile
//! or broken store answering `$2000000000` made `serve` buffer hundreds of megabytes. Here the
//! stream refuses to read more than [`MAX_ANSWER_BYTES`] beyond what has been sent to the
//! store (every reply we expect is smaller than its request), so one reply never costs more
//! than that: the connection fails with a clear error instead, and the store counts as down.
//!
//! One multiplexed connection, opened on first use and dropped after any failure; the next use
//! opens a new one (the store's watcher does, in [`super::redis_store`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo, RedisError, RedisResult};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::files::{MAX_ANSWER_BYTES, answer_too_large};

/// Where the store is and how to talk to it.
pub struct Link {
    host: String,
    port: u16,
    /// `rediss://`: the TLS settings (roots: the configured CA, else the system's).
    tls: Option<Arc<rustls::ClientConfig>>,
    settings: RedisConnectionInfo,
    current: Mutex<Option<MultiplexedConnection>>,
}

impl Link {
    /// `ca`: the PEM of the CA to verify a TLS store with, instead of the system's roots.
    pub fn new(
        host: String,
        port: u16,
        tls: bool,
        ca: Option<&[u8]>,
        settings: RedisConnectionInfo,
    ) -> RedisResult<Self> {
        let tls = if tls {
            Some(Arc::new(tls_config(ca)?))
        } else {
            None
        };
        Ok(Self {
            host,
            port,
            tls,
            settings,
            current: Mutex::new(None),
        })
    }

    /// The open connection, or a new one (TCP, TLS, `AUTH`, `SELECT`). Callers bound the wait.
    pub async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.as_ref() {
            return Ok(connection.clone());
        }
        let connection = self.connect().await?;
        *current = Some(connection.clone());
        Ok(connection)
    }

    /// After a failure: the next use opens a new connection. A command still queued on the old
    /// one may yet run on the store; the scripts' deadline makes that harmless.
    pub fn reset(&self) {
        if let Ok(mut current) = self.current.try_lock() {
            *current = None;
        }
    }

    async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => open(&self.settings, tcp).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await?;
                open(&self.settings, stream).await
            }
        }
    }
}

/// The multiplexed connection over `stream`, read under the cap, its driver running.
async fn open<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    settings: &RedisConnectionInfo,
    stream: S,
) -> RedisResult<MultiplexedConnection> {
    // Our own timeouts bound every round trip (`limits_store_timeout`).
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None);
    let (connection, driver) =
        MultiplexedConnection::new_with_config(settings, ReplyCap::new(stream), config).await?;
    tokio::spawn(driver);
    Ok(connection)
}

/// TLS as redis-rs sets it up: the system's roots, or only the given CA's.
fn tls_config(ca: Option<&[u8]>) -> RedisResult<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let invalid = |what: String| {
        RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cannot set up TLS to the limits store",
            what,
        ))
    };
    if let Some(pem) = ca {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| invalid(format!("the CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("the CA file: {e}")))?;
        }
    } else {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A stream the store may send at most [`MAX_ANSWER_BYTES`] more to than it was sent: every
/// byte written adds to the allowance (up to the cap), every byte read spends it. Replies are
/// smaller than their requests, so an honest store never comes near; a reply that would go
/// beyond is refused, whatever length it claims.
struct ReplyCap<S> {
    inner: S,
    allowance: usize,
}

impl<S> ReplyCap<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            allowance: MAX_ANSWER_BYTES,
        }
    }
}

impl<S: AsyncRead + Unpin> ReplyCap<S> {
    /// Read at most the allowance, spending it; nothing once it is spent.
    fn read_within(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.allowance == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                answer_too_large("a reply of the limits store", MAX_ANSWER_BYTES),
            )));
        }
        let room = buf.remaining().min(self.allowance);
        let mut limited = ReadBuf::new(&mut buf.initialize_unfilled()[..room]);
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let read = limited.filled().len();
        buf.advance(read);
        self.allowance -= read;
        polled
    }
}

impl<S: AsyncWrite + Unpin> ReplyCap<S> {
    /// Write, renewing the allowance by what was written (up to the cap).
    fn write_renewing(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(written)) = polled {
            self.allowance = self.allowance.saturating_add(written).min(MAX_ANSWER_BYTES);
        }
        polled
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReplyCap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().read_within(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReplyCap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_renewing(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Whatever the other side sends, at most the allowance is read: an endless reply fails
    /// with the cap in its message, and writing renews the allowance up to the cap.
    #[tokio::test]
    async fn replies_are_read_under_the_cap() {
        let (ours, mut store) = tokio::io::duplex(1 << 20);
        let mut capped = ReplyCap::new(ours);
        let sender = tokio::spawn(async move {
            let chunk = vec![b'x'; 8192];
            for _ in 0..64 {
                if store.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            store
        });
        let mut read = 0;
        let mut buf = vec![0_u8; 10_000];
        let error = loop {
            match capped.read(&mut buf).await {
                Ok(0) => panic!("ended after {read} bytes"),
                Ok(n) => read += n,
                Err(e) => break e,
            }
        };
        assert_eq!(read, MAX_ANSWER_BYTES);
        assert!(error.to_string().contains("larger than 64 KiB"), "{error}");
        // Sending renews the allowance, up to the cap.
        capped.write_all(&[b'y'; 100]).await.expect("write");
        assert_eq!(capped.allowance, 100);
        capped
            .write_all(&vec![b'y'; 2 * MAX_ANSWER_BYTES])
            .await
            .expect("write");
        assert_eq!(capped.allowance, MAX_ANSWER_BYTES);
        drop(sender);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the store sends and however our writes and its replies interleave, what is
        /// read never exceeds what was written plus the cap, and going beyond is an error.
        #[test]
        fn reads_never_outrun_writes_by_more_than_the_cap(
            steps in proptest::collection::vec((0_usize..4096, 0_usize..40_000), 1..24),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let (ours, mut store) = tokio::io::duplex(1 << 22);
                let mut capped = ReplyCap::new(ours);
                let (mut written, mut read) = (0_usize, 0_usize);
                for (ask, answer) in steps {
                    capped.write_all(&vec![b'q'; ask]).await.expect("write");
                    written += ask;
                    let mut sent = vec![0_u8; ask];
                    store.read_exact(&mut sent).await.expect("the store reads");
                    store.write_all(&vec![b'r'; answer]).await.expect("the store answers");
                    let mut buf = vec![0_u8; answer];
                    let mut got = 0;
                    while got < answer {
                        match capped.read(&mut buf[got..]).await {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) => {
                                assert!(e.to_string().contains("64 KiB"), "{e}");
                                return;
                            }
                        }
                    }
                    read += got;
                    assert!(read <= written + MAX_ANSWER_BYTES, "{read} read, {written} written");
                }
            });
        }
    }
}
