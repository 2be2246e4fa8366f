//! Graceful stop on SIGINT/SIGTERM for the long-running servers (`emulate`, `serve`).

use tokio_util::sync::CancellationToken;

/// Cancel `stop` on the first SIGINT or SIGTERM (Ctrl-C elsewhere). The handlers are installed
/// before this returns, so a caller can announce readiness right after: a supervisor that
/// signals as soon as it reads the ready line still gets a clean exit.
pub fn cancel_on_signals(stop: CancellationToken) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    Ok(())
}
