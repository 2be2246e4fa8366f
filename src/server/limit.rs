//! Rate limits of the token server: a budget per client, one for the whole server, and one per
//! peer address for requests refused before a client is known (bad credentials).
//!
//! Each budget is a GCRA limiter from `governor`: a decision is one atomic compare-and-swap on
//! the key's state, so concurrent requests can never overshoot a budget, and a budget of N lets
//! exactly N requests through a burst. The clock is a type parameter so tests can drive time by
//! hand (`governor::clock::FakeRelativeClock`).

use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// "N requests per period", refilled evenly: `10/min` allows a burst of 10, then one more every
/// 6 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl RateSpec {
    /// The quota: a burst of `count`, one cell back every `per / count`.
    fn quota(self) -> Option<Quota> {
        Quota::with_period(self.per / self.count.get()).map(|q| q.allow_burst(self.count))
    }
}

/// Why a rate text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate {text:?}: {reason} (write N/PERIOD, e.g. \"30/min\", \"5/s\", \"100/h\", \"10/90s\")"
)]
pub struct RateSpecError {
    pub text: String,
    pub reason: &'static str,
}

impl FromStr for RateSpec {
    type Err = RateSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| RateSpecError {
            text: text.to_owned(),
            reason,
        };
        let (count, period) = text.trim().split_once('/').ok_or_else(|| err("no '/'"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| err("the count is not a whole number"))?;
        let count = NonZeroU32::new(count).ok_or_else(|| err("the count must be at least 1"))?;
        let period = period.trim();
        let per = match period {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => humantime::parse_duration(other).map_err(|_| err("unknown period"))?,
        };
        // Below a microsecond per request the limiter cannot represent the refill.
        if per.is_zero() || per / count.get() < Duration::from_micros(1) {
            return Err(err("the period is too short for the count"));
        }
        Ok(Self { count, per })
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.count;
        match self.per.as_secs() {
            1 if self.per.subsec_nanos() == 0 => write!(f, "{count}/s"),
            60 if self.per.subsec_nanos() == 0 => write!(f, "{count}/min"),
            3600 if self.per.subsec_nanos() == 0 => write!(f, "{count}/h"),
            86_400 if self.per.subsec_nanos() == 0 => write!(f, "{count}/day"),
            _ => write!(f, "{count}/{}", humantime::format_duration(self.per)),
        }
    }
}

/// A rate or "off": the value of the `--*-limit` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSetting(pub Option<RateSpec>);

impl FromStr for LimitSetting {
    type Err = RateSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "off" | "none" | "unlimited" => Ok(Self(None)),
            other => other.parse().map(|spec| Self(Some(spec))),
        }
    }
}

impl fmt::Display for LimitSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(spec) => spec.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// One decision, with what the `X-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The burst size (`X-RateLimit-Limit`).
    pub limit: u32,
    /// Requests that would still be let through right now (`X-RateLimit-Remaining`).
    pub remaining: u32,
    /// Until the whole burst is available again (`X-RateLimit-Reset`, in seconds rounded up).
    pub reset: Duration,
    /// Until the next request can pass, when this one was refused (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// Seconds for a header: rounded up, so a client that waits that long is let through.
    pub fn ceil_secs(d: Duration) -> u64 {
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

type Inner<K, C> = RateLimiter<K, DashMapStateStore<K>, C, StateInformationMiddleware>;

/// A keyed budget (per client name, per address, or `()` for one global budget).
pub struct Limiter<K: Hash + Eq + Clone, C: Clock + Clone = DefaultClock> {
    inner: Inner<K, C>,
    /// The limiter's own clock, to turn "not until" instants into waits.
    clock: C,
    spec: RateSpec,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> fmt::Debug for Limiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("spec", &self.spec.to_string())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(spec: RateSpec) -> Self {
        Self::with_clock(spec, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Limiter<K, C> {
    pub fn with_clock(spec: RateSpec, clock: C) -> Self {
        // `RateSpec::from_str` rejects periods the limiter cannot represent; a spec built by hand
        // with a zero period gets the shortest one instead of a panic.
        let quota = spec
            .quota()
            .unwrap_or_else(|| Quota::per_second(spec.count).allow_burst(spec.count));
        Self {
            inner: RateLimiter::dashmap_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            clock,
            spec,
        }
    }

    pub fn spec(&self) -> RateSpec {
        self.spec
    }

    /// Take one request from `key`'s budget, if there is one left.
    pub fn check(&self, key: &K) -> Decision {
        let limit = self.spec.count.get();
        let interval = self.spec.per / limit;
        match self.inner.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(limit);
                Decision {
                    allowed: true,
                    limit,
                    remaining,
                    // Each spent cell comes back after one interval; this is an upper bound by
                    // less than one interval, which is the right side to err on.
                    reset: interval * (limit - remaining),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    // The next cell is back after `wait`, the rest one interval each after it.
                    reset: wait + interval * (limit - 1),
                    retry_after: Some(wait),
                }
            }
        }
    }

    /// Forget keys whose budget is full again (they are indistinguishable from new ones), so a
    /// stream of distinct addresses cannot grow the table without bound.
    pub fn retain_recent(&self) {
        self.inner.retain_recent();
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn spec(s: &str) -> RateSpec {
        s.parse().expect("valid spec")
    }

    #[test]
    fn specs_parse_and_print() {
        for (text, count, secs, shown) in [
            ("30/min", 30, 60, "30/min"),
            ("5/s", 5, 1, "5/s"),
            (" 100 / hour ", 100, 3600, "100/h"),
            ("10/90s", 10, 90, "10/1m 30s"),
            ("1/day", 1, 86_400, "1/day"),
        ] {
            let s = spec(text);
            assert_eq!((s.count.get(), s.per), (count, Duration::from_secs(secs)));
            assert_eq!(s.to_string(), shown);
            assert_eq!(spec(&s.to_string()), s, "round trip of {shown}");
        }
        for bad in [
            "",
            "30",
            "0/min",
            "x/min",
            "5/fortnight",
            "-1/s",
            "5000000/1us",
        ] {
            let e = bad.parse::<RateSpec>().expect_err(bad);
            assert!(e.to_string().contains("N/PERIOD"), "{e}");
        }
        assert_eq!("off".parse::<LimitSetting>(), Ok(LimitSetting(None)));
        assert_eq!(LimitSetting(None).to_string(), "off");
        assert_eq!(
            "2/s".parse::<LimitSetting>().map(|l| l.to_string()),
            Ok("2/s".into())
        );
    }

    #[test]
    fn a_burst_then_one_per_interval_with_exact_headers() {
        let clock = FakeRelativeClock::default();
        let limiter: Limiter<&str, _> = Limiter::with_clock(spec("3/min"), clock.clone());
        let d = limiter.check(&"alice");
        assert_eq!(
            (d.allowed, d.limit, d.remaining, d.reset),
            (true, 3, 2, Duration::from_secs(20))
        );
        assert_eq!(limiter.check(&"alice").remaining, 1);
        let last = limiter.check(&"alice");
        assert_eq!((last.allowed, last.remaining), (true, 0));
        assert_eq!(last.reset, Duration::from_secs(60));

        let refused = limiter.check(&"alice");
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(20)));
        assert_eq!(refused.reset, Duration::from_secs(60));
        // Another key has its own budget.
        assert!(limiter.check(&"bob").allowed);

        clock.advance(Duration::from_secs(15));
        let refused = limiter.check(&"alice");
        assert_eq!(refused.retry_after, Some(Duration::from_secs(5)));
        assert_eq!(refused.reset, Duration::from_secs(45));
        clock.advance(Duration::from_secs(5));
        let again = limiter.check(&"alice");
        assert!(again.allowed, "one cell back after 20 s");
        assert_eq!(again.remaining, 0);
        assert!(!limiter.check(&"alice").allowed);

        clock.advance(Duration::from_secs(60));
        assert_eq!(limiter.check(&"alice").remaining, 2, "full again");
        assert_eq!(Decision::ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(Decision::ceil_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let limiter: Limiter<u32, _> = Limiter::with_clock(spec("2/s"), clock.clone());
        for key in 0..100 {
            limiter.check(&key);
        }
        assert_eq!(limiter.len(), 100);
        clock.advance(Duration::from_secs(2));
        limiter.retain_recent();
        assert!(limiter.is_empty());
    }
}
