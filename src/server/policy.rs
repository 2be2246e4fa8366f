//! The server's lifetime policy: which redemption window and session limit a token gets.
//!
//! The configured window and session limit are both the default and the maximum. A caller may
//! ask for less (`expires_in_seconds`, `max_session_duration_seconds` in the query, a JSON body
//! or a form body), down to the configured minimums; asking for more gets the maximum, so a
//! client configured for longer lifetimes still works, with the server's. Asking for less than
//! the minimum is refused rather than raised, because a caller asking for a shorter window wants
//! a *less* powerful token and must not silently get a more powerful one.

use serde_json::Value;

use crate::provider::TokenRequest;

/// The service's bounds (protocol.md §1.2).
pub const WINDOW_RANGE: (u32, u32) = (1, 600);
pub const SESSION_RANGE: (u32, u32) = (60, 10_800);

/// Bounds and defaults of the lifetimes a token may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifetimePolicy {
    /// Redemption window given when the caller does not ask, and the longest it may get.
    pub expires_in: u32,
    /// Shortest window a caller may ask for.
    pub min_expires_in: u32,
    /// Session limit given when the caller does not ask, and the longest it may get.
    pub max_session: u32,
    /// Shortest session limit a caller may ask for.
    pub min_session: u32,
}

impl Default for LifetimePolicy {
    fn default() -> Self {
        Self {
            expires_in: 60,
            min_expires_in: 5,
            max_session: 10_800,
            min_session: 60,
        }
    }
}

impl LifetimePolicy {
    /// Check the bounds against each other and the service's.
    pub fn validate(&self) -> Result<(), String> {
        let (lo, hi) = WINDOW_RANGE;
        if !(lo <= self.min_expires_in
            && self.min_expires_in <= self.expires_in
            && self.expires_in <= hi)
        {
            return Err(format!(
                "the token window must satisfy {lo} <= minimum ({}) <= window ({}) <= {hi} seconds",
                self.min_expires_in, self.expires_in
            ));
        }
        let (lo, hi) = SESSION_RANGE;
        if !(lo <= self.min_session
            && self.min_session <= self.max_session
            && self.max_session <= hi)
        {
            return Err(format!(
                "the session limit must satisfy {lo} <= minimum ({}) <= limit ({}) <= {hi} seconds",
                self.min_session, self.max_session
            ));
        }
        Ok(())
    }

    /// The lifetimes for a request that asked for `window` and `session` (raw values from the
    /// query or body). `Err` is the message for a 400.
    pub fn resolve(
        &self,
        window: Option<&Value>,
        session: Option<&Value>,
    ) -> Result<TokenRequest, String> {
        let expires_in_seconds = pick(
            "expires_in_seconds",
            window,
            self.min_expires_in,
            self.expires_in,
        )?;
        let max_session = pick(
            "max_session_duration_seconds",
            session,
            self.min_session,
            self.max_session,
        )?;
        Ok(TokenRequest {
            expires_in_seconds,
            max_session_duration_seconds: Some(max_session),
        })
    }
}

/// `asked` within `min..=max`: absent → `max`, above → `max`, below → refused.
fn pick(name: &str, asked: Option<&Value>, min: u32, max: u32) -> Result<u32, String> {
    let Some(value) = asked else {
        return Ok(max);
    };
    let n = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{name} must be a whole number of seconds ({min}-{max} here)"))?;
    if n < u64::from(min) {
        return Err(format!(
            "{name} = {n} is below this server's minimum of {min} seconds ({min}-{max} allowed)"
        ));
    }
    Ok(u32::try_from(n).map_or(max, |n| n.min(max)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_shorter_longer_and_refused() {
        let p = LifetimePolicy::default();
        p.validate().expect("valid");
        let r = |w: Option<Value>, s: Option<Value>| p.resolve(w.as_ref(), s.as_ref());
        let got = r(None, None).expect("defaults");
        assert_eq!(
            (got.expires_in_seconds, got.max_session_duration_seconds),
            (60, Some(10_800))
        );
        let got = r(Some(json!(30)), Some(json!("600"))).expect("shorter");
        assert_eq!(
            (got.expires_in_seconds, got.max_session_duration_seconds),
            (30, Some(600))
        );
        let got = r(Some(json!(9999)), Some(json!(u64::MAX))).expect("clamped");
        assert_eq!(
            (got.expires_in_seconds, got.max_session_duration_seconds),
            (60, Some(10_800))
        );
        let e = r(Some(json!(2)), None).expect_err("below");
        assert!(e.contains("below this server's minimum of 5"), "{e}");
        for bad in [
            json!(-1),
            json!(1.5),
            json!("soon"),
            json!(true),
            json!(null),
        ] {
            let e = r(Some(bad.clone()), None).expect_err("bad");
            assert!(e.contains("whole number"), "{bad}: {e}");
        }
        let e = r(None, Some(json!(10))).expect_err("below");
        assert!(e.contains("max_session_duration_seconds = 10"), "{e}");
    }

    #[test]
    fn bounds_are_checked() {
        let bad = [
            LifetimePolicy {
                expires_in: 601,
                ..LifetimePolicy::default()
            },
            LifetimePolicy {
                min_expires_in: 61,
                ..LifetimePolicy::default()
            },
            LifetimePolicy {
                min_expires_in: 0,
                ..LifetimePolicy::default()
            },
            LifetimePolicy {
                max_session: 59,
                min_session: 59,
                ..LifetimePolicy::default()
            },
            LifetimePolicy {
                max_session: 10_801,
                ..LifetimePolicy::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }
}
