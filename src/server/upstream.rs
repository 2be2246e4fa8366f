//! Minting through the upstream provider (the `api-key` provider in `aai-live serve`): a cap on
//! concurrent upstream requests, one retry for transient failures, and what a caller is told
//! when the upstream fails.
//!
//! The provider owns the pooled HTTP client and the per-attempt timeout (`provider.timeout`) and
//! scrubs the key from everything the upstream says; this module never sees the key. What a
//! caller reads is built here from the failure's class and status only, so not even scrubbed
//! upstream text reaches a response: the full, scrubbed message goes to the server's log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::Semaphore;

use super::metrics::{Metrics, UpstreamFailure};
use crate::provider::{ProviderError, ProviderErrorClass, Token, TokenProvider, TokenRequest};

/// When to try the upstream again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Pause before a retry; up to as much again is added at random, so many servers that failed
    /// together do not retry together.
    pub delay: Duration,
    /// A `Retry-After` longer than this is passed on to the caller instead of waited out.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 2,
            delay: Duration::from_millis(100),
            max_wait: Duration::from_secs(2),
        }
    }
}

/// Why no token came back.
#[derive(Debug)]
pub enum MintError {
    /// Every upstream slot is taken.
    Busy,
    /// The upstream failed (after the retry, when one was made).
    Failed(ProviderError),
}

/// The upstream and its limits.
#[derive(Debug)]
pub struct Upstream {
    provider: Arc<dyn TokenProvider>,
    permits: Semaphore,
    retry: RetryPolicy,
}

/// Keeps the in-flight gauge true on every exit path, including a cancelled request.
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight(-1);
    }
}

impl Upstream {
    pub fn new(provider: Arc<dyn TokenProvider>, max_in_flight: usize, retry: RetryPolicy) -> Self {
        Self {
            provider,
            permits: Semaphore::new(max_in_flight.max(1)),
            retry,
        }
    }

    /// Where tokens come from, for the log (a URL without credentials).
    pub fn source(&self) -> String {
        self.provider.source()
    }

    /// Mint one token, retrying a transient failure per the policy.
    pub async fn mint(
        &self,
        request: &TokenRequest,
        client: &str,
        metrics: &Metrics,
    ) -> Result<Token, MintError> {
        // Refuse rather than queue: a queue in front of a slow upstream only turns into timeouts.
        let Ok(_permit) = self.permits.try_acquire() else {
            return Err(MintError::Busy);
        };
        metrics.in_flight(1);
        let _in_flight = InFlight(metrics);
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let result = self.provider.fetch(request).await;
            metrics.upstream_latency.observe(started.elapsed());
            let error = match result {
                Ok(token) => return Ok(token),
                Err(error) => error,
            };
            let class = failure_class(&error);
            metrics.upstream_failure(class);
            let wait = error
                .retry_after()
                .unwrap_or_else(|| jittered(self.retry.delay));
            if class == UpstreamFailure::Transient
                && attempt < self.retry.attempts
                && wait <= self.retry.max_wait
            {
                tracing::info!(
                    client,
                    attempt,
                    %error,
                    retry_in_ms = wait.as_millis(),
                    "upstream token request failed; retrying"
                );
                metrics.upstream_retry();
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            return Err(MintError::Failed(error));
        }
    }
}

fn jittered(delay: Duration) -> Duration {
    let extra = rand::random::<u32>() % 1000;
    delay + delay * extra / 1000
}

/// The metrics class of a provider failure.
pub fn failure_class(error: &ProviderError) -> UpstreamFailure {
    match error.class() {
        ProviderErrorClass::Rejected => UpstreamFailure::Rejected,
        ProviderErrorClass::RateLimited => UpstreamFailure::RateLimited,
        ProviderErrorClass::Transient | ProviderErrorClass::Exhausted => UpstreamFailure::Transient,
        ProviderErrorClass::NotConfigured
        | ProviderErrorClass::InvalidConfig
        | ProviderErrorClass::Internal => UpstreamFailure::Refused,
    }
}

/// What the caller is told about an upstream failure: status, error code, message, and how long
/// to wait when the upstream said. Built from the class and status alone (see the module doc).
pub fn describe(error: &ProviderError) -> (StatusCode, &'static str, String, Option<Duration>) {
    let status = error.status();
    let http = |s: Option<u16>| s.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    match failure_class(error) {
        UpstreamFailure::Rejected => (
            StatusCode::BAD_GATEWAY,
            "upstream_rejected",
            format!(
                "upstream rejected the API key{}; the token server's operator must check it",
                http(status)
            ),
            None,
        ),
        UpstreamFailure::RateLimited => {
            // The upstream's wait, else a short one: a client hammering back at once helps no one.
            let wait = error.retry_after().unwrap_or(Duration::from_secs(5));
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_rate_limited",
                format!(
                    "upstream is rate limiting token requests; retry in {} s",
                    super::limit::Decision::ceil_secs(wait)
                ),
                Some(wait),
            )
        }
        UpstreamFailure::Transient => (
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            match status {
                Some(s) => format!("upstream failed (HTTP {s}); try again shortly"),
                None => "upstream did not answer (unreachable, or no answer within the timeout); \
                         try again shortly"
                    .to_owned(),
            },
            error.retry_after(),
        ),
        UpstreamFailure::Refused => (
            StatusCode::BAD_GATEWAY,
            "upstream_refused",
            "upstream refused the token request; the token server's log says why".to_owned(),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_statuses_without_upstream_words() {
        let rejected = ProviderError::Rejected {
            provider: "api-key",
            location: "GET https://x/v3/token".into(),
            status: Some(401),
            detail: "HTTP 401: \"Invalid API key sk-123\"".into(),
        };
        let (status, code, message, wait) = describe(&rejected);
        assert_eq!(
            (status, code, wait),
            (StatusCode::BAD_GATEWAY, "upstream_rejected", None)
        );
        assert!(
            message.contains("upstream rejected the API key (HTTP 401)"),
            "{message}"
        );
        assert!(!message.contains("sk-123") && !message.contains("https://x"));

        let limited = ProviderError::RateLimited {
            provider: "api-key",
            location: "x".into(),
            status: 429,
            retry_after: Some(Duration::from_millis(6500)),
            detail: String::new(),
        };
        let (status, _, message, wait) = describe(&limited);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(wait, Some(Duration::from_millis(6500)));
        assert!(message.contains("retry in 7 s"), "{message}");

        let down = ProviderError::Transient {
            provider: "api-key",
            location: "x".into(),
            status: None,
            network: None,
            retry_after: None,
            detail: "cannot connect".into(),
        };
        assert_eq!(describe(&down).1, "upstream_unavailable");
        assert_eq!(failure_class(&down), UpstreamFailure::Transient);
        let refused = ProviderError::InvalidConfig {
            provider: "api-key",
            location: "x".into(),
            status: None,
            detail: "HTTP 404".into(),
        };
        assert_eq!(describe(&refused).1, "upstream_refused");
    }

    #[test]
    fn jitter_stays_within_double_the_delay() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(100) && d < Duration::from_millis(200));
        }
    }
}
