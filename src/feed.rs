//! The live feed (`run --feed ADDR`, `demo --feed ADDR`; docs/feed.md): the run's events
//! offered to local consumers as they happen — Server-Sent Events at `/events`, a WebSocket at
//! `/ws`, a captions page for OBS at `/overlay`, the transcript so far at `/transcript.*` — and
//! `--captions FILE` written as turns end.
//!
//! The run's events reach it through a [`Tap`], given the same `Sourced` event and NDJSON line
//! the headless runner prints (one serialiser: `Sourced::to_line_at`), so a consumer sees
//! exactly the run's NDJSON. Consumers never slow the session: publishing is O(1) whatever
//! their number ([`hub`]), and the feed's server runs on the listener every server of aai-live
//! uses (connection cap, header timeout, idle eviction).

pub mod captions;
pub mod hub;
mod routes;
pub mod turns;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

pub use captions::{Captions, CaptionsError};
use hub::{Bounds, Hub};
use turns::Turns;

use crate::config::FeedConfig;
use crate::listener::{ConnectionLimit, ListenError, ListenOptions};
use crate::session::streams::Sourced;

/// The environment variable that may hold the feed's token (instead of `feed.token_file`).
pub const TOKEN_ENV: &str = "AAI_LIVE_FEED_TOKEN";

/// The most consumers connected at once (the listener's cap: idle connections make room).
const MAX_CONNECTIONS: usize = 256;

/// What a consumer's connection buffers, in the server (hyper's least) and in the kernel: a
/// consumer that stops reading stops costing anything once they are full, after a few dozen
/// events (its place in the history is kept, not a copy).
const WRITE_BUFFER: usize = 8 * 1024;
const SEND_BUFFER: usize = 8 * 1024;

/// How long a connection has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// At the end, how long consumers get to take the last events before the feed closes; with
/// [`SHUTDOWN_GRACE`], under the 1 s a stalled consumer may delay the exit.
const DRAIN: Duration = Duration::from_millis(700);
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the feed: {0}")]
    Listen(#[from] ListenError),
    #[error(
        "the feed would listen on {addr}, which is not a loopback address: it needs a token \
         (feed.token_file, or {TOKEN_ENV}); consumers then send it as `Authorization: Bearer` \
         or `?token=`"
    )]
    NeedsToken { addr: SocketAddr },
    #[error("the feed's token: {0}")]
    TokenFile(#[from] crate::secret::SecretFileError),
    #[error("the feed's token is empty")]
    EmptyToken,
    #[error(transparent)]
    Captions(#[from] CaptionsError),
    #[error("the feed stopped serving before the run ended (see the log)")]
    Stopped,
    #[error("cannot start the feed's thread: {0}")]
    Runtime(std::io::Error),
}

/// How to run the feed, from `[feed]` and the environment.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    pub listen: SocketAddr,
    pub token: Option<SecretString>,
    pub origins: Vec<String>,
    pub bounds: Bounds,
    pub queue: usize,
}

impl FeedOptions {
    /// `None` without `feed.listen`. The token comes from `AAI_LIVE_FEED_TOKEN` or
    /// `feed.token_file`; a non-loopback address without one is an error.
    pub fn from_config(
        config: &FeedConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, FeedError> {
        let Some(listen) = config.listen else {
            return Ok(None);
        };
        let token = match (env(TOKEN_ENV), &config.token_file) {
            (Some(token), _) => Some(SecretString::from(token.trim().to_owned())),
            (None, Some(path)) => Some(crate::secret::read_secret_file(path)?.0),
            (None, None) => None,
        };
        if token.as_ref().is_some_and(|t| t.expose_secret().is_empty()) {
            return Err(FeedError::EmptyToken);
        }
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(FeedError::NeedsToken { addr: listen });
        }
        Ok(Some(Self {
            listen,
            token,
            origins: config.origins.clone(),
            bounds: Bounds {
                events: config.history_events as usize,
                bytes: hub::HISTORY_BYTES,
            },
            queue: config.queue_events as usize,
        }))
    }
}

/// What the feed's routes share with the run.
#[derive(Debug)]
struct Shared {
    hub: Arc<Hub>,
    turns: Mutex<Turns>,
}

/// A running feed. Its server runs on a thread of its own (a runtime of one thread), so that
/// serving consumers never takes the session's thread (a headless run has one).
#[derive(Debug)]
pub struct Feed {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Cancelled to stop the server, and by the listener when it stops on its own.
    cancel: CancellationToken,
    /// Resolves when the server has shut down.
    stopped: tokio::sync::oneshot::Receiver<()>,
    /// Where consumers find it (`http://127.0.0.1:8789`).
    pub url: String,
    /// The overlay's address as it may be shown (any token redacted).
    pub overlay_shown: String,
}

impl Feed {
    /// Bind and serve; events come through [`Feed::tap`].
    pub async fn start(options: FeedOptions) -> Result<Self, FeedError> {
        let shared = Arc::new(Shared {
            hub: Hub::new(options.bounds, options.queue),
            turns: Mutex::new(Turns::default()),
        });
        let loopback = options.listen.ip().is_loopback();
        let router = routes::router(routes::FeedState {
            shared: Arc::clone(&shared),
            token: options
                .token
                .as_ref()
                .map(|t| crate::server::Credentials::single("feed", t.expose_secret())),
            origins: options
                .origins
                .iter()
                .filter_map(|o| axum::http::HeaderValue::from_str(o).ok())
                .collect(),
            loopback,
        });
        let mut listen = ListenOptions::new("feed");
        listen.header_timeout = Some(HEADER_TIMEOUT);
        listen.connection_limit = Some(ConnectionLimit::new(MAX_CONNECTIONS));
        listen.tcp_nodelay = true;
        listen.shutdown_grace = SHUTDOWN_GRACE;
        listen.max_buf_size = Some(WRITE_BUFFER);
        listen.send_buffer = Some(SEND_BUFFER);
        let cancel = CancellationToken::new();
        let (addr, stopped) = serve_on_own_thread(options.listen, router, listen, &cancel).await?;
        let url = format!("http://{addr}");
        let overlay = match &options.token {
            Some(_) => format!("{url}/overlay?token={}", "TOKEN"),
            None => format!("{url}/overlay"),
        };
        let overlay_shown =
            url::Url::parse(&overlay).map_or(overlay, |u| crate::protocol::params::redact_url(&u));
        Ok(Self {
            shared,
            addr,
            cancel,
            stopped,
            url,
            overlay_shown,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the run's events go.
    pub fn tap(&self) -> Tap {
        Tap {
            shared: Some(Arc::clone(&self.shared)),
            captions: None,
            run: 0,
        }
    }

    /// Consumers connected now.
    pub fn consumers(&self) -> usize {
        self.shared.hub.consumers()
    }

    /// The run is over: once every consumer has been offered the last event (or after
    /// [`DRAIN`], whichever is first: a stalled consumer does not hold the exit), close. Fails
    /// when the server had stopped on its own meanwhile (the listener cancels its token then):
    /// consumers were left without the run's end, which must not look like a normal one.
    pub async fn finish(self) -> Result<(), FeedError> {
        let stopped = self.cancel.is_cancelled();
        let hub = &self.shared.hub;
        hub.end();
        let deadline = tokio::time::Instant::now() + DRAIN;
        while hub.consumers() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if hub.dropped_partials() > 0 || hub.disconnected() > 0 {
            tracing::info!(
                dropped_partials = hub.dropped_partials(),
                disconnected = hub.disconnected(),
                "feed: consumers that fell behind"
            );
        }
        self.cancel.cancel();
        // The thread says when the server is down (or it has gone, which is as final).
        let _ = self.stopped.await;
        if stopped {
            return Err(FeedError::Stopped);
        }
        Ok(())
    }
}

/// Bind `listen` and serve `router` on a thread of its own until `cancel`; the address, and a
/// receiver that resolves when the server is down.
async fn serve_on_own_thread(
    listen: SocketAddr,
    router: axum::Router,
    options: ListenOptions,
    cancel: &CancellationToken,
) -> Result<(SocketAddr, tokio::sync::oneshot::Receiver<()>), FeedError> {
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (down_tx, down_rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FeedError::Runtime)?;
    let cancel = cancel.clone();
    std::thread::Builder::new()
        .name("aai-live-feed".into())
        .spawn(move || {
            runtime.block_on(async move {
                match crate::listener::serve(listen, router, options, cancel).await {
                    Ok(running) => {
                        let _ = bound_tx.send(Ok(running.addr));
                        running.wait().await;
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                    }
                }
            });
            let _ = down_tx.send(());
        })
        .map_err(FeedError::Runtime)?;
    let addr = bound_rx.await.map_err(|_| FeedError::Stopped)??;
    Ok((addr, down_rx))
}

/// Where a run's events go besides stdout or the screen: the feed, the captions file, both or
/// neither. Cloned freely; every clone feeds the same.
#[derive(Debug, Clone, Default)]
pub struct Tap {
    shared: Option<Arc<Shared>>,
    captions: Option<Arc<Captions>>,
    /// The dashboard's run (each start is one), for the turns: generations start again at 1.
    run: u32,
}

/// The head of an NDJSON line: its kind.
#[derive(serde::Deserialize)]
struct Head {
    event: String,
}

impl Tap {
    /// Also write the captions to `captions`.
    #[must_use]
    pub fn with_captions(mut self, captions: Captions) -> Self {
        self.captions = Some(Arc::new(captions));
        self
    }

    /// The dashboard started a new run: its turns are new ones, after the earlier runs'.
    pub fn new_run(&mut self) {
        self.run += 1;
    }

    /// Offer one of the run's events, as `line` (its NDJSON line). Fails when the captions
    /// file can no longer be written.
    pub fn offer(&self, sourced: &Sourced, line: &str) -> Result<(), FeedError> {
        if let Some(shared) = &self.shared {
            shared
                .turns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .apply(self.run, sourced);
            let kind =
                serde_json::from_str::<Head>(line).map_or_else(|_| String::new(), |h| h.event);
            let source = sourced.source.as_ref().map(|l| l.as_str().to_owned());
            shared.hub.publish(kind, source, line.to_owned());
        }
        if let Some(captions) = &self.captions {
            captions.offer(self.run, sourced)?;
        }
        Ok(())
    }

    /// Consumers of the feed connected now; `None` without a feed.
    pub fn consumers(&self) -> Option<usize> {
        self.shared.as_ref().map(|s| s.hub.consumers())
    }

    /// The captions file is complete (everything offered written) when this returns.
    pub fn finish_captions(&mut self) -> Result<(), FeedError> {
        if let Some(captions) = self.captions.take() {
            match Arc::try_unwrap(captions) {
                Ok(captions) => captions.finish()?,
                // Another clone still offers to it: it is finished with the last of them.
                Err(shared) => drop(shared),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::SessionEvent;
    use tokio::io::AsyncWriteExt;

    fn options() -> FeedOptions {
        FeedOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            token: None,
            origins: Vec::new(),
            bounds: Bounds {
                events: 10_000,
                bytes: hub::HISTORY_BYTES,
            },
            queue: 1000,
        }
    }

    /// A consumer that asked for everything and never reads, with megabytes waiting for it:
    /// the feed still closes within a second of the run's end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_consumer_does_not_hold_the_exit() {
        let feed = Feed::start(options()).await.expect("feed");
        let mut stalled = tokio::net::TcpStream::connect(feed.addr())
            .await
            .expect("connect");
        stalled
            .write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("request");
        let tap = feed.tap();
        let event = Sourced {
            index: 0,
            source: None,
            event: SessionEvent::Warning {
                message: "x".repeat(4000),
                explain: None,
            },
        };
        for _ in 0..3000 {
            tap.offer(&event, &event.to_line_at(std::time::SystemTime::now()))
                .expect("offered");
        }
        while feed.consumers() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = std::time::Instant::now();
        feed.finish().await.expect("a clean end");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        drop(stalled);
    }

    #[test]
    fn a_non_loopback_address_needs_a_token_from_the_environment_or_a_file() {
        let config = FeedConfig {
            listen: Some("0.0.0.0:8789".parse().expect("addr")),
            ..FeedConfig::default()
        };
        let error = FeedOptions::from_config(&config, &|_| None).expect_err("no token");
        assert!(matches!(error, FeedError::NeedsToken { .. }), "{error}");
        let with = FeedOptions::from_config(&config, &|name| {
            (name == TOKEN_ENV).then(|| "secret-token\n".to_owned())
        })
        .expect("valid")
        .expect("a feed");
        assert_eq!(
            with.token.as_ref().map(ExposeSecret::expose_secret),
            Some("secret-token")
        );
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").expect("write");
        let config = FeedConfig {
            token_file: Some(file),
            ..config
        };
        let from_file = FeedOptions::from_config(&config, &|_| None)
            .expect("valid")
            .expect("a feed");
        assert_eq!(
            from_file.token.as_ref().map(ExposeSecret::expose_secret),
            Some("from-file")
        );
        assert!(
            FeedOptions::from_config(&FeedConfig::default(), &|_| None)
                .expect("valid")
                .is_none(),
            "no address, no feed"
        );
    }
}
