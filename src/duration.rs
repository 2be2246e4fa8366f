//! Durations as people type them: one reading for every flag and config key.
//!
//! A newcomer types `--expires-in 60s`, `--duration 90` and `stall_timeout = "20"` and expects
//! all three to work. So every duration accepts a humantime value (`90s`, `1m 30s`, `500ms`) and
//! a bare number, read in the option's own unit: seconds, unless its name says otherwise
//! (`--processing-delay-ms 200`). Keys and flags whose value the service takes in whole seconds
//! (`expires_in_seconds`) refuse fractions instead of rounding them silently.

use std::ops::RangeInclusive;
use std::time::Duration;

/// Why a duration was refused; the caller names the flag or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration such as 90, 90s, 1m 30s or 500ms")]
    Unreadable(String),
    #[error("{0:?} is not a whole number of seconds")]
    NotWholeSeconds(String),
    #[error("{text:?} must be between {low} and {high} seconds")]
    OutOfRange { text: String, low: u64, high: u64 },
    #[error("{0:?} must be longer than 0")]
    Zero(String),
}

/// A duration; a bare number is in seconds.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_with_unit(text, Duration::from_secs(1))
}

/// A duration; a bare number counts `unit`s (whole or decimal: "1.5" seconds).
pub fn parse_with_unit(text: &str, unit: Duration) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let unreadable = || DurationError::Unreadable(text.to_owned());
    if trimmed.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        let count: f64 = trimmed.parse().map_err(|_| unreadable())?;
        // The cap keeps the product finite and well inside Duration (a century).
        if !count.is_finite() || count * unit.as_secs_f64() > 3.2e9 {
            return Err(unreadable());
        }
        return Ok(unit.mul_f64(count));
    }
    humantime::parse_duration(trimmed).map_err(|_| unreadable())
}

/// A positive duration (bare number in seconds), as clap's `value_parser`.
pub fn positive(text: &str) -> Result<Duration, String> {
    match parse(text) {
        Ok(d) if d.is_zero() => Err(DurationError::Zero(text.to_owned()).to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// A duration whose bare number is in milliseconds, as clap's `value_parser` for `…-ms` flags.
pub fn millis(text: &str) -> Result<u64, String> {
    parse_with_unit(text, Duration::from_millis(1))
        .map_err(|e| e.to_string())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A whole number of seconds within `range` ("60", "60s", "1m" alike).
pub fn whole_seconds(text: &str, range: RangeInclusive<u64>) -> Result<u64, DurationError> {
    let d = parse(text)?;
    if d.subsec_nanos() != 0 {
        return Err(DurationError::NotWholeSeconds(text.to_owned()));
    }
    let secs = d.as_secs();
    if !range.contains(&secs) {
        return Err(DurationError::OutOfRange {
            text: text.to_owned(),
            low: *range.start(),
            high: *range.end(),
        });
    }
    Ok(secs)
}

/// clap `value_parser`s for the seconds the service takes (token lifetimes, session caps).
pub fn expires_in(text: &str) -> Result<u32, String> {
    seconds_u32(text, 1..=600)
}

/// See [`expires_in`]: 60–10800 s.
pub fn session_duration(text: &str) -> Result<u32, String> {
    seconds_u32(text, 60..=10_800)
}

fn seconds_u32(text: &str, range: RangeInclusive<u64>) -> Result<u32, String> {
    whole_seconds(text, range)
        .map(|s| u32::try_from(s).unwrap_or(u32::MAX))
        .map_err(|e| e.to_string())
}

/// "30s", "-30s", "+1m", "-45": a signed duration in milliseconds (bare numbers in seconds).
pub fn signed_millis(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    let (sign, rest) = match trimmed.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let d = parse(rest)
        .map_err(|_| format!("{text:?} is not a duration such as 30s, -30s or -30 (seconds)"))?;
    i64::try_from(d.as_millis())
        .map(|ms| sign * ms)
        .map_err(|_| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units_and_bare_seconds_read_alike() {
        for (text, secs) in [
            ("90", 90.0),
            ("90s", 90.0),
            ("1m 30s", 90.0),
            ("1m30s", 90.0),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_secs_f64(secs)), "{text}");
        }
        assert_eq!(parse(" 1.5 "), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(millis("200"), Ok(200));
        assert_eq!(millis("0.2s"), Ok(200));
        for bad in ["", "soon", "1.2.3", "-5", "90 parsecs", ".", "1e9"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn whole_seconds_refuse_fractions_and_name_the_range() {
        assert_eq!(expires_in("60"), Ok(60));
        assert_eq!(expires_in("60s"), Ok(60));
        assert_eq!(expires_in("10m"), Ok(600));
        assert_eq!(session_duration("3h"), Ok(10_800));
        assert_eq!(
            expires_in("1.5"),
            Err("\"1.5\" is not a whole number of seconds".to_owned())
        );
        assert_eq!(
            expires_in("11m"),
            Err("\"11m\" must be between 1 and 600 seconds".to_owned())
        );
        assert!(session_duration("59").is_err());
    }

    #[test]
    fn signed_durations() {
        assert_eq!(signed_millis("30s"), Ok(30_000));
        assert_eq!(signed_millis("-30s"), Ok(-30_000));
        assert_eq!(signed_millis("+1m"), Ok(60_000));
        assert_eq!(signed_millis("-45"), Ok(-45_000));
        assert!(signed_millis("soon").is_err());
        assert!(signed_millis("--5s").is_err());
    }

    #[test]
    fn positive_refuses_zero() {
        assert!(positive("0").is_err());
        assert!(positive("0s").is_err());
        assert_eq!(positive("10"), Ok(Duration::from_secs(10)));
    }

    proptest! {
        // Flags and config values are untrusted text: never a panic, always a bounded value.
        #[test]
        fn any_text_is_read_or_refused(text in "\\PC{0,40}") {
            if let Ok(d) = parse(&text) {
                prop_assert!(d <= Duration::from_secs(u64::MAX / 2));
            }
            let _ = signed_millis(&text);
            let _ = millis(&text);
            let _ = whole_seconds(&text, 1..=600);
        }

        #[test]
        fn bare_seconds_equal_their_unit_spelling(n in 0u64..1_000_000) {
            prop_assert_eq!(parse(&n.to_string()), parse(&format!("{n}s")));
        }
    }
}
