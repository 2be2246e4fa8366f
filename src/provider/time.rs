//! Timestamps in the forms token servers and token files use: RFC 3339 with any offset, unix
//! seconds (or milliseconds, as JavaScript's `Date.now()` gives), and the HTTP date of a
//! `Retry-After` header.
//!
//! `humantime` parses UTC RFC 3339 only, so offsets are applied here; there is no date crate in
//! the stack and these three shapes do not justify one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix times above this are taken as milliseconds: 10^11 seconds is the year 5138, while 10^11
/// milliseconds is 1973, earlier than any token.
const MILLIS_THRESHOLD: f64 = 1e11;

/// Parse a JSON timestamp: an RFC 3339 string, or unix seconds (or milliseconds) as a number or
/// a numeric string.
pub fn parse_json_timestamp(value: &serde_json::Value) -> Option<SystemTime> {
    match value {
        serde_json::Value::Number(n) => from_unix(n.as_f64()?),
        serde_json::Value::String(s) => {
            let s = s.trim();
            match s.parse::<f64>() {
                Ok(n) => from_unix(n),
                Err(_) => parse_rfc3339(s),
            }
        }
        _ => None,
    }
}

fn from_unix(n: f64) -> Option<SystemTime> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let secs = if n > MILLIS_THRESHOLD { n / 1000.0 } else { n };
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
}

/// Parse an RFC 3339 timestamp with `Z` or a numeric offset (`+02:00`, `-0500`).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim().to_ascii_uppercase();
    if let Some(utc) = s.strip_suffix('Z') {
        return humantime::parse_rfc3339(&format!("{utc}Z")).ok();
    }
    // Split a trailing offset "+HH:MM", "-HH:MM" or "+HHMM" after the time of day.
    let split = s
        .len()
        .checked_sub(6)
        .filter(|&i| s.as_bytes()[i + 3] == b':');
    let (local, offset) = match split {
        Some(i) if matches!(s.as_bytes()[i], b'+' | b'-') && i > 10 => (&s[..i], &s[i..]),
        _ => match s.len().checked_sub(5) {
            Some(i) if i > 10 && matches!(s.as_bytes()[i], b'+' | b'-') => (&s[..i], &s[i..]),
            _ => return None,
        },
    };
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let digits: String = offset[1..].chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 4 {
        return None;
    }
    let hours: u64 = digits[..2].parse().ok()?;
    let minutes: u64 = digits[2..].parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let at_local = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    // 12:00+02:00 is 10:00 UTC: subtract a positive offset, add a negative one.
    let at = if sign > 0 {
        at_local.checked_sub(shift)
    } else {
        at_local.checked_add(shift)
    }?;
    // 1970-01-01T00:30:00+01:00 is before the epoch: no token's time, and not printable.
    (at >= UNIX_EPOCH).then_some(at)
}

/// Parse a `Retry-After` value: delay seconds, or an HTTP date (IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`) turned into a delay from `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An HTTP date (IMF-fixdate), e.g. a `Date` or `Retry-After` header.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // "Sun, 06 Nov 1994 08:49:37 GMT" -> ["Sun,", "06", "Nov", "1994", "08:49:37", "GMT"]
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? + 1;
    let day: u32 = day.parse().ok()?;
    let year: u32 = year.parse().ok()?;
    humantime::parse_rfc3339(&format!("{year:04}-{month:02}-{day:02}T{time}Z")).ok()
}

/// The first second RFC 3339 cannot write: 10000-01-01T00:00:00Z.
const YEAR_10000: Duration = Duration::from_secs(253_402_300_800);

/// `2026-11-23T10:15:00Z` (whole seconds, UTC). Total: humantime panics on a time before 1970 or
/// after 9999, which untrusted input can produce, so those are written as [`describe`] does.
pub fn format_rfc3339(at: SystemTime) -> String {
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) if since < YEAR_10000 => humantime::format_rfc3339_seconds(at).to_string(),
        _ => describe(at),
    }
}

/// A time for a message, whatever it is: RFC 3339 when it has one, else seconds from the epoch
/// (`9.2e18 s after 1970-01-01T00:00:00Z`).
pub fn describe(at: SystemTime) -> String {
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) if since < YEAR_10000 => humantime::format_rfc3339_seconds(at).to_string(),
        Ok(since) => format!("{:e} s after 1970-01-01T00:00:00Z", since.as_secs_f64()),
        Err(before) => format!(
            "{:e} s before 1970-01-01T00:00:00Z",
            before.duration().as_secs_f64()
        ),
    }
}

/// Whole seconds from `now` until `at`, zero when past.
pub fn seconds_until(at: SystemTime, now: SystemTime) -> u64 {
    at.duration_since(now).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rfc3339_with_offsets() {
        // 2026-01-01T12:00:00Z = 1767268800
        let noon = at(1_767_268_800);
        assert_eq!(parse_rfc3339("2026-01-01T12:00:00Z"), Some(noon));
        assert_eq!(parse_rfc3339("2026-01-01t12:00:00z"), Some(noon));
        assert_eq!(parse_rfc3339("2026-01-01T14:00:00+02:00"), Some(noon));
        assert_eq!(parse_rfc3339("2026-01-01T07:00:00-05:00"), Some(noon));
        assert_eq!(parse_rfc3339("2026-01-01T07:00:00-0500"), Some(noon));
        assert_eq!(parse_rfc3339("2026-01-01T12:00:00+00:00"), Some(noon));
        assert_eq!(
            parse_rfc3339("2026-01-01T12:00:00.250Z"),
            Some(noon + Duration::from_millis(250))
        );
        for bad in [
            "",
            "2026-01-01",
            "tomorrow",
            "2026-01-01T12:00:00+25:00",
            "12:00:00+02:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn json_timestamps() {
        let t = at(1_767_268_800);
        assert_eq!(parse_json_timestamp(&json!(1_767_268_800)), Some(t));
        assert_eq!(parse_json_timestamp(&json!(1_767_268_800_000_u64)), Some(t));
        assert_eq!(parse_json_timestamp(&json!("1767268800")), Some(t));
        assert_eq!(
            parse_json_timestamp(&json!("2026-01-01T12:00:00Z")),
            Some(t)
        );
        assert_eq!(
            parse_json_timestamp(&json!(1_767_268_800.5)),
            Some(t + Duration::from_millis(500))
        );
        for bad in [
            json!(null),
            json!(-1),
            json!(true),
            json!("soon"),
            json!([]),
        ] {
            assert_eq!(parse_json_timestamp(&bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = at(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn formatting() {
        assert_eq!(format_rfc3339(at(1_767_268_800)), "2026-01-01T12:00:00Z");
        // Out of RFC 3339's range, still no panic.
        assert_eq!(
            format_rfc3339(at(9_200_000_000_000_000_000)),
            "9.2e18 s after 1970-01-01T00:00:00Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_secs(1800)),
            "1.8e3 s before 1970-01-01T00:00:00Z"
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:30:00+01:00"), None);
        assert_eq!(seconds_until(at(100), at(40)), 60);
        assert_eq!(seconds_until(at(40), at(100)), 0);
    }
}
