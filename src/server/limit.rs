//! Rate limits of the token server: the GCRA arithmetic every store shares, what a decision
//! reports (`X-RateLimit-*`, `Retry-After`), and the in-memory keyed limiter.
//!
//! A budget of N requests per period is a GCRA (generic cell rate algorithm) with emission
//! interval T = period / N and a burst of N: its whole state is one number per key, the
//! *theoretical arrival time* (TAT). A request at `now` is let through when
//! `max(TAT, now) + T - now <= N·T`, and then moves the TAT to `max(TAT, now) + T`. [`Gcra::decide`]
//! is that rule and everything the headers say about it; the memory store applies it with one
//! compare-and-swap per decision ([`Limiter`]), the Redis store runs the same rule in a Lua
//! script and has its answer turned into a [`Decision`] by the same function
//! (`server::redis_store`), so both stores give the same answers and the same headers.
//!
//! Times are whole microseconds: `RateSpec` refuses intervals below one, and microseconds since
//! the epoch stay exact in Lua's doubles.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::config::{LimitSetting, RateSpec, RateSpecError};

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

/// The GCRA of one budget, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// T: one request's worth of time.
    interval: u64,
    /// N.
    burst: u32,
}

impl Gcra {
    pub fn new(spec: RateSpec) -> Self {
        let interval = u64::try_from(spec.interval().as_micros()).unwrap_or(u64::MAX);
        Self {
            interval: interval.max(1),
            burst: spec.count.get(),
        }
    }

    /// T in microseconds (an argument of the Redis script).
    pub fn interval_micros(self) -> u64 {
        self.interval
    }

    pub fn burst(self) -> u32 {
        self.burst
    }

    /// The decision for a request at `now` on a budget whose stored TAT is `tat` (0, or anything
    /// in the past, for a budget with nothing spent), and the TAT to store when it is let
    /// through.
    pub fn decide(self, tat: u64, now: u64) -> (Decision, Option<u64>) {
        let span = self.interval.saturating_mul(u64::from(self.burst));
        let tat = tat.max(now);
        let next = tat.saturating_add(self.interval);
        let micros = Duration::from_micros;
        if next - now <= span {
            let remaining = (span - (next - now)) / self.interval;
            let decision = Decision {
                allowed: true,
                limit: self.burst,
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX).min(self.burst),
                reset: micros(next - now),
                retry_after: None,
            };
            (decision, Some(next))
        } else {
            let decision = Decision {
                allowed: false,
                limit: self.burst,
                remaining: 0,
                reset: micros(tat - now),
                retry_after: Some(micros(next - now - span)),
            };
            (decision, None)
        }
    }
}

/// Microseconds on a monotonic clock, for the memory store.
pub trait Clock: Send + Sync {
    fn now_micros(&self) -> u64;
}

/// The process's monotonic clock, counted from the limiter's creation (plus one, so that no
/// real time is 0, the "nothing spent" TAT).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now_micros(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }
}

/// A clock moved by hand (tests, benchmarks); clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(std::sync::Arc<AtomicU64>);

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.0.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> u64 {
        self.0.load(Ordering::SeqCst) + 1
    }
}

/// A keyed budget in this process's memory (per client name, per address, or `()` for one
/// global budget). A decision takes a read lock on the table and one compare-and-swap on the
/// key's TAT, so concurrent requests never overshoot the budget; only a new key takes the write
/// lock.
pub struct Limiter<K: Hash + Eq + Clone, C: Clock = MonotonicClock> {
    gcra: Gcra,
    spec: RateSpec,
    clock: C,
    table: RwLock<HashMap<K, AtomicU64>>,
}

impl<K: Hash + Eq + Clone, C: Clock> fmt::Debug for Limiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("spec", &self.spec.to_string())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(spec: RateSpec) -> Self {
        Self::with_clock(spec, MonotonicClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> Limiter<K, C> {
    pub fn with_clock(spec: RateSpec, clock: C) -> Self {
        Self {
            gcra: Gcra::new(spec),
            spec,
            clock,
            table: RwLock::new(HashMap::new()),
        }
    }

    pub fn spec(&self) -> RateSpec {
        self.spec
    }

    /// Take one request from `key`'s budget, if there is one left.
    pub fn check(&self, key: &K) -> Decision {
        let now = self.clock.now_micros();
        {
            let table = self
                .table
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(cell) = table.get(key) {
                return self.spend(cell, now);
            }
        }
        let mut table = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cell = table
            .entry(key.clone())
            .or_insert_with(|| AtomicU64::new(0));
        self.spend(cell, now)
    }

    fn spend(&self, cell: &AtomicU64, now: u64) -> Decision {
        let mut tat = cell.load(Ordering::Acquire);
        loop {
            let (decision, next) = self.gcra.decide(tat, now);
            let Some(next) = next else {
                return decision;
            };
            match cell.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return decision,
                Err(actual) => tat = actual,
            }
        }
    }

    /// Forget keys whose budget is full again (they are indistinguishable from new ones), so a
    /// stream of distinct addresses cannot grow the table without bound.
    pub fn retain_recent(&self) {
        let now = self.clock.now_micros();
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, tat| tat.load(Ordering::Acquire) > now);
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> RateSpec {
        s.parse().expect("valid spec")
    }

    /// The figures governor gave before this limiter replaced it (the old test, unchanged in
    /// its expectations), plus the exact reset after a partial refill.
    #[test]
    fn a_burst_then_one_per_interval_with_exact_headers() {
        let clock = ManualClock::default();
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
        // 5 s later, with the cell spent then 15 s from coming back: 1 remaining, and the whole
        // budget back in 35 s (governor's headers rounded that up to whole intervals, 40 s).
        clock.advance(Duration::from_secs(5));
        let partial = limiter.check(&"alice");
        assert_eq!(
            (partial.remaining, partial.reset),
            (1, Duration::from_secs(35))
        );
        assert_eq!(Decision::ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(Decision::ceil_secs(Duration::from_secs(3)), 3);
    }

    /// The arithmetic alone, on raw microseconds: the rule in the module doc.
    #[test]
    fn gcra_rule() {
        let g = Gcra::new(spec("2/s"));
        assert_eq!((g.interval_micros(), g.burst()), (500_000, 2));
        // Nothing spent (TAT 0, or in the past).
        let (d, tat) = g.decide(0, 10_000_000);
        assert_eq!((d.allowed, d.remaining, tat), (true, 1, Some(10_500_000)));
        assert_eq!(g.decide(3, 10_000_000), (d, tat));
        let (d, tat) = g.decide(10_500_000, 10_000_000);
        assert_eq!((d.allowed, d.remaining, tat), (true, 0, Some(11_000_000)));
        let (d, tat) = g.decide(11_000_000, 10_000_000);
        assert_eq!(tat, None);
        assert_eq!(d.retry_after, Some(Duration::from_millis(500)));
        assert_eq!(d.reset, Duration::from_secs(1));
        // One microsecond before the cell is back, and at the moment it is.
        assert!(!g.decide(11_000_000, 10_499_999).0.allowed);
        assert!(g.decide(11_000_000, 10_500_000).0.allowed);
        // Saturating, never panicking, at the ends of the range.
        let big = Gcra::new(spec("1/day"));
        assert!(!big.decide(u64::MAX, 0).0.allowed);
        assert!(big.decide(0, u64::MAX - 1).0.allowed);
    }

    #[test]
    fn concurrent_checks_never_overshoot() {
        let limiter: std::sync::Arc<Limiter<u8>> = std::sync::Arc::new(Limiter::new(spec("100/h")));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = std::sync::Arc::clone(&limiter);
                std::thread::spawn(move || (0..100).filter(|_| limiter.check(&7).allowed).count())
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let clock = ManualClock::default();
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
