//! When a session really ends: `Begin.expires_at` checked against what was asked for.
//!
//! `expires_at` comes from the server and is used in arithmetic (when to rotate), so it is
//! checked like any untrusted number: a session lasts 60 s to 10 800 s (the token's
//! `max_session_duration_seconds`), so an `expires_at` outside `now + 60 s − 5 s ..= now +
//! 10 800 s + 5 s` is implausible — `0`, negative, far in the future — and the plan falls back to
//! the requested duration rather than rotating every second or never. A plausible `expires_at`
//! that differs from the requested duration by more than 5 s means one of the two clocks is off
//! (the server's, or this machine's): clock skew, reported. `aai-live doctor` uses the same rule.

use std::time::Duration;

/// The shortest and longest session the service grants.
pub const MIN_SESSION: Duration = Duration::from_secs(60);
pub const MAX_SESSION: Duration = Duration::from_secs(10_800);
/// How far the numbers may disagree before it is worth saying.
pub const TOLERANCE: Duration = Duration::from_secs(5);

/// Which session lengths are believed: normally 55 s to 10 805 s. The emulator can be told to
/// make sessions shorter than the service allows (`--max-session-duration`), so a client that knows it
/// talks to the emulator lowers the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            min: MIN_SESSION.saturating_sub(TOLERANCE),
            max: MAX_SESSION + TOLERANCE,
        }
    }
}

/// What was found about `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// Believable and as requested.
    Consistent,
    /// Believable, but `skew` away from the requested duration (positive: the server says later).
    ClockSkew { skew_ms: i64 },
    /// Not believable (`left_ms`: what it would leave, possibly negative): planned from the
    /// requested duration instead.
    Implausible { left_ms: i64 },
}

/// How long to plan the session for, and what was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub expires_in: Duration,
    pub finding: Finding,
}

/// Plan a session that began at `now_unix_ms` with `Begin.expires_at = expires_at_s` (unix
/// seconds), for which `requested` was asked. Never overflows, whatever the numbers.
pub fn plan(expires_at_s: i64, now_unix_ms: i64, requested: Duration, bounds: Bounds) -> Plan {
    let left_ms = expires_at_s
        .saturating_mul(1000)
        .saturating_sub(now_unix_ms);
    let in_bounds = u64::try_from(left_ms)
        .ok()
        .map(Duration::from_millis)
        .filter(|left| *left >= bounds.min && *left <= bounds.max);
    let Some(left) = in_bounds else {
        return Plan {
            expires_in: requested,
            finding: Finding::Implausible { left_ms },
        };
    };
    let requested_ms = i64::try_from(requested.as_millis()).unwrap_or(i64::MAX);
    let skew_ms = left_ms.saturating_sub(requested_ms);
    let finding = if skew_ms.unsigned_abs() > TOLERANCE.as_millis() as u64 {
        Finding::ClockSkew { skew_ms }
    } else {
        Finding::Consistent
    };
    Plan {
        expires_in: left,
        finding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_800_000_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    fn at(s: i64) -> i64 {
        NOW_MS / 1000 + s
    }

    #[test]
    fn a_plausible_expiry_is_believed() {
        let p = plan(at(3600), NOW_MS, HOUR, Bounds::default());
        assert_eq!(p.expires_in, HOUR);
        assert_eq!(p.finding, Finding::Consistent);
        // Rounded to the second: within the tolerance.
        let p = plan(at(3598), NOW_MS, HOUR, Bounds::default());
        assert_eq!(p.finding, Finding::Consistent);
    }

    #[test]
    fn a_difference_beyond_five_seconds_is_clock_skew() {
        let p = plan(at(3630), NOW_MS, HOUR, Bounds::default());
        assert_eq!(p.expires_in, Duration::from_secs(3630));
        assert_eq!(p.finding, Finding::ClockSkew { skew_ms: 30_000 });
        let p = plan(at(3500), NOW_MS, HOUR, Bounds::default());
        assert_eq!(p.finding, Finding::ClockSkew { skew_ms: -100_000 });
    }

    #[test]
    fn absurd_values_fall_back_to_the_requested_duration() {
        for expires_at in [0, -1, i64::MIN, i64::MAX, at(10), at(10_806), at(-60)] {
            let p = plan(expires_at, NOW_MS, HOUR, Bounds::default());
            assert_eq!(p.expires_in, HOUR, "{expires_at}");
            assert!(
                matches!(p.finding, Finding::Implausible { .. }),
                "{expires_at}"
            );
        }
        // The edges.
        assert_eq!(
            plan(at(55), NOW_MS, HOUR, Bounds::default())
                .expires_in
                .as_secs(),
            55
        );
        assert_eq!(
            plan(at(10_805), NOW_MS, HOUR, Bounds::default())
                .expires_in
                .as_secs(),
            10_805
        );
    }

    #[test]
    fn the_emulator_may_be_allowed_short_sessions() {
        let short = Bounds {
            min: Duration::ZERO,
            ..Bounds::default()
        };
        let p = plan(at(6), NOW_MS, HOUR, short);
        assert_eq!(p.expires_in, Duration::from_secs(6));
        assert!(matches!(p.finding, Finding::ClockSkew { .. }));
    }
}
