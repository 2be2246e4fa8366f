//! Reconnect delays: exponential growth with full jitter, and a minute-scale floor after the
//! service's new-sessions-per-minute limit.
//!
//! Written here rather than taken from a crate because the supervisor needs the *delay value*
//! (to show "retrying in 4 s" and to drive a timer in a pure state machine), not a retry loop
//! that owns the future; the arithmetic is a few lines and fully tested.

use std::time::Duration;

/// Backoff settings (from `[session]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// Wait after a rate-limit close (3009): the limit counts new sessions per minute.
    pub rate_limited: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            rate_limited: Duration::from_secs(60),
        }
    }
}

impl BackoffPolicy {
    /// The cap for attempt `n` (1-based): `initial × multiplier^(n-1)`, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// Full jitter: a uniform draw in `[0, ceiling]`. `unit` is a random number in `[0, 1)`
    /// supplied by the caller, so this stays deterministic under test.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// After a rate limit: the minute-scale floor plus up to 25 % jitter, so many clients of one
    /// account do not come back in the same second.
    pub fn rate_limited_delay(&self, unit: f64, retry_after: Option<Duration>) -> Duration {
        let base = retry_after.map_or(self.rate_limited, |r| r.max(Duration::from_secs(1)));
        base + base.mul_f64(0.25 * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap() {
        let p = BackoffPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_millis(500));
        assert_eq!(p.ceiling(2), Duration::from_secs(1));
        assert_eq!(p.ceiling(4), Duration::from_secs(4));
        assert_eq!(p.ceiling(20), Duration::from_secs(30));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let p = BackoffPolicy::default();
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, 0.5), Duration::from_secs(1));
        assert_eq!(p.delay(3, 1.0), Duration::from_secs(2));
    }

    #[test]
    fn rate_limit_waits_on_a_minute_scale() {
        let p = BackoffPolicy::default();
        assert_eq!(p.rate_limited_delay(0.0, None), Duration::from_secs(60));
        assert_eq!(p.rate_limited_delay(1.0, None), Duration::from_secs(75));
        assert_eq!(
            p.rate_limited_delay(0.0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
