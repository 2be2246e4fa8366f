//! The signals that ask aai-live to stop gracefully: SIGTERM and SIGINT for the servers and the
//! headless runner (Ctrl-C elsewhere), plus SIGHUP for the dashboard (its terminal went away).

use tokio_util::sync::CancellationToken;

/// A set of stop signals, installed when created.
pub struct Signals {
    #[cfg(unix)]
    streams: Vec<tokio::signal::unix::Signal>,
}

impl Signals {
    /// SIGTERM and SIGINT (systemd, `docker stop`, Ctrl-C).
    pub fn stop() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::SignalKind;
            Self::of(&[SignalKind::terminate(), SignalKind::interrupt()])
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// SIGTERM, SIGHUP (the terminal went away) and SIGINT. In raw mode Ctrl-C is a key, so
    /// SIGINT only comes from `kill`.
    pub fn dashboard() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::SignalKind;
            Self::of(&[
                SignalKind::terminate(),
                SignalKind::hangup(),
                SignalKind::interrupt(),
            ])
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    #[cfg(unix)]
    fn of(kinds: &[tokio::signal::unix::SignalKind]) -> std::io::Result<Self> {
        let streams = kinds
            .iter()
            .map(|kind| tokio::signal::unix::signal(*kind))
            .collect::<std::io::Result<_>>()?;
        Ok(Self { streams })
    }

    /// The next signal of the set.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let next = self.streams.iter_mut().map(|s| Box::pin(s.recv()));
            let _ = futures_util::future::select_all(next).await;
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Cancel `stop` on the first SIGINT or SIGTERM. The handlers are installed before this returns,
/// so a caller can announce readiness right after: a supervisor that signals as soon as it reads
/// the ready line still gets a clean exit.
pub fn cancel_on_signals(stop: CancellationToken) -> std::io::Result<()> {
    let mut signals = Signals::stop()?;
    tokio::spawn(async move {
        signals.recv().await;
        stop.cancel();
    });
    Ok(())
}
