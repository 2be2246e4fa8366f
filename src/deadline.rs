//! Optional deadlines for `select!` loops: a timer arm that never fires while there is nothing
//! to wait for.

use tokio::time::Instant;

/// Sleep until `at`, or forever when there is no deadline (so the `select!` arm stays idle
/// instead of being disabled and re-enabled by every caller).
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_deadline_and_never_without_one() {
        let start = Instant::now();
        sleep_until(Some(start + Duration::from_secs(3))).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        let none = tokio::time::timeout(Duration::from_secs(3600), sleep_until(None)).await;
        assert!(none.is_err(), "no deadline must never fire");
    }
}
