//! The JSON token document: what `aai-live token` writes, what the `file` provider reads and
//! what the `remote` provider accepts from a token server, plus the plain-text form.
//!
//! ```json
//! {"token": "...", "minted_at": "2026-11-23T10:15:00Z", "expires_at": "2026-11-23T10:16:00Z",
//!  "expires_in_seconds": 60, "max_session_duration_seconds": 10800}
//! ```
//!
//! Only `token` is required. The redemption deadline is `expires_at` when present (RFC 3339 or
//! unix seconds), else `expires_in_seconds` counted from `minted_at`, else from a time the reader
//! knows (when the request was sent, when the file was written). Readers are lenient about extra
//! fields, strict about the fields they use, and quote no token in their complaints.
//!
//! Lifetimes are untrusted numbers that end up in clock arithmetic (`SystemTime + Duration`
//! panics on overflow), so a document is refused when it cannot describe a real token: a
//! duration that is negative or longer than [`MAX_LIFETIME`] (a day; the service's windows are
//! 1–600 s and its sessions 60–10 800 s, and a token server may grant other values, so the bound
//! is generous), a session of 0 s, a time before 1970, or a time (given or computed) more than
//! [`MAX_LIFETIME`] after the reader's clock. A deadline in the past is not refused here, nor a
//! window of 0 s (what [`to_json`] writes for a token with under a second left): that token has
//! lapsed, which the readers report as such.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::time::{format_rfc3339, parse_json_timestamp, seconds_until};
use crate::secret::{REDACTED, Token};
use crate::untrusted::json_kind;

/// Longest token we accept; AssemblyAI's are about 100 characters.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Shortest *plain-text* token we accept: a body of "OK" or "ready" is not a token, and taking
/// it for one would burn a connect attempt. JSON documents name their token, so any length goes.
pub const MIN_PLAIN_TOKEN_LEN: usize = 16;
/// Longest lifetime a token document may state or imply: a redemption window, a session, or how
/// far ahead of the reader's clock `minted_at` and `expires_at` may lie.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// What a token document says, before it becomes a [`Token`].
#[derive(Debug)]
pub struct TokenDocument {
    pub secret: String,
    pub minted_at: Option<SystemTime>,
    pub expires_at: Option<SystemTime>,
    pub expires_in: Option<Duration>,
    pub max_session_duration: Option<Duration>,
}

impl TokenDocument {
    /// The redemption deadline: `expires_at`, else `expires_in` from `minted_at` or `base`.
    /// Refused when it (or `minted_at`) lies more than [`MAX_LIFETIME`] after `now`.
    pub fn redeem_by(
        &self,
        base: SystemTime,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, DocumentError> {
        let horizon = now.checked_add(MAX_LIFETIME);
        let too_far = |at: SystemTime| horizon.is_some_and(|h| at > h);
        for (field, at) in [
            ("minted_at", self.minted_at),
            ("expires_at", self.expires_at),
        ] {
            if let Some(at) = at
                && too_far(at)
            {
                return Err(DocumentError::Implausible {
                    field,
                    value: super::time::describe(at),
                    rule: "it lies more than a day after this computer's clock (is one of the \
                           clocks wrong?)",
                });
            }
        }
        if let Some(at) = self.expires_at {
            return Ok(Some(at));
        }
        let Some(window) = self.expires_in else {
            return Ok(None);
        };
        let deadline = self
            .minted_at
            .unwrap_or(base)
            .checked_add(window)
            .filter(|&at| !too_far(at));
        match deadline {
            Some(at) => Ok(Some(at)),
            None => Err(DocumentError::Implausible {
                field: "expires_in_seconds",
                value: format!("{} s", show_number(window.as_secs_f64())),
                rule: "counted from when the token was minted, the deadline lies more than a day \
                       after this computer's clock (is one of the clocks wrong?)",
            }),
        }
    }

    /// The token, minted at `minted_at` (else `base`), with whatever lifetimes are known; `now` is
    /// the reader's clock, against which implausible times are refused.
    pub fn into_token(
        self,
        provider: &'static str,
        base: SystemTime,
        now: SystemTime,
    ) -> Result<Token, DocumentError> {
        let redeem_by = self.redeem_by(base, now)?;
        let mut token =
            Token::new(self.secret, provider).with_minted_at(self.minted_at.unwrap_or(base));
        if let Some(at) = redeem_by {
            token = token.with_redeem_by(at);
        }
        if let Some(d) = self.max_session_duration {
            token = token.with_max_session_duration(d);
        }
        Ok(token)
    }
}

/// Why a body is not a token document. The messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("the JSON has no \"token\" field")]
    MissingToken,
    #[error("\"token\" is {0}, not a non-empty string")]
    BadToken(&'static str),
    #[error("field \"{field}\" is not {expected}")]
    BadField {
        field: &'static str,
        expected: &'static str,
    },
    /// A lifetime no real token has (see the module's rule).
    #[error("field \"{field}\" is {value}, an impossible lifetime for a token: {rule}")]
    Implausible {
        field: &'static str,
        /// The value as read (a number of seconds or a time); never the token.
        value: String,
        rule: &'static str,
    },
}

/// Read a token document from a JSON object. `error` bodies are the caller's business (the
/// remote provider reads them first).
pub fn parse_object(object: &Map<String, Value>) -> Result<TokenDocument, DocumentError> {
    let secret = match object.get("token") {
        None | Some(Value::Null) => return Err(DocumentError::MissingToken),
        Some(Value::String(s)) => {
            let s = s.trim();
            if !is_token_text(s) {
                return Err(DocumentError::BadToken(if s.is_empty() {
                    "empty"
                } else {
                    "malformed (whitespace, control characters or too long)"
                }));
            }
            s.to_owned()
        }
        Some(other) => return Err(DocumentError::BadToken(json_kind(other))),
    };
    let timestamp = |field: &'static str| match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_json_timestamp(v)
            .map(Some)
            .ok_or(DocumentError::BadField {
                field,
                expected: "an RFC 3339 time or unix seconds",
            }),
    };
    // `expires_in_seconds` may be 0: `to_json` writes what is left of the window in whole
    // seconds, so a lapsed token (or one with under a second left) says 0. A session of 0 s is
    // no session.
    let seconds = |field: &'static str, zero: bool| match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = json_number(v).ok_or(DocumentError::BadField {
                field,
                expected: "a number of seconds",
            })?;
            lifetime(n, zero)
                .map(Some)
                .ok_or_else(|| DocumentError::Implausible {
                    field,
                    value: format!("{} s", show_number(n)),
                    rule: if zero {
                        "a lifetime is at least 0 s and at most a day (86400 s)"
                    } else {
                        "a lifetime is more than 0 s and at most a day (86400 s)"
                    },
                })
        }
    };
    Ok(TokenDocument {
        secret,
        minted_at: timestamp("minted_at")?,
        expires_at: timestamp("expires_at")?,
        expires_in: seconds("expires_in_seconds", true)?,
        max_session_duration: seconds("max_session_duration_seconds", false)?,
    })
}

/// Plain-text token: the trimmed body, one word of at least [`MIN_PLAIN_TOKEN_LEN`] printable
/// characters.
pub fn parse_plain(text: &str) -> Option<TokenDocument> {
    let text = text.trim();
    (text.len() >= MIN_PLAIN_TOKEN_LEN && is_token_text(text)).then(|| TokenDocument {
        secret: text.to_owned(),
        minted_at: None,
        expires_at: None,
        expires_in: None,
        max_session_duration: None,
    })
}

/// Non-empty, at most [`MAX_TOKEN_LEN`] bytes, printable ASCII without spaces or markup: what
/// fits an `Authorization` header and cannot be an HTML page or a sentence.
pub fn is_token_text(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TOKEN_LEN
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'{' | b'}'))
}

/// A JSON number, or a string holding one; finite.
fn json_number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// A number as read, short even when huge: `9.3e18`, not 19 digits (or 300).
fn show_number(n: f64) -> String {
    if n.abs() < 1e12 {
        format!("{n}")
    } else {
        format!("{n:e}")
    }
}

/// `n` seconds as a lifetime: at most [`MAX_LIFETIME`], more than zero unless `zero` is allowed.
fn lifetime(n: f64, zero: bool) -> Option<Duration> {
    Duration::try_from_secs_f64(n)
        .ok()
        .filter(|d| (zero || !d.is_zero()) && *d <= MAX_LIFETIME)
}

/// The document `aai-live token` prints: the token and its lifetimes as of `now`. `null` for
/// what the provider did not say.
pub fn to_json(token: &Token, now: SystemTime) -> Value {
    json!({
        "token": token.expose(),
        "minted_at": format_rfc3339(token.minted_at),
        "expires_at": token.redeem_by.map(format_rfc3339),
        "expires_in_seconds": token.redeem_by.map(|at| seconds_until(at, now)),
        "max_session_duration_seconds": token.max_session_duration.map(|d| d.as_secs()),
    })
}

/// Mask every run of token-like characters of `min_len` or more in `text` that looks random: it
/// holds a digit, an upper-case letter or one of `+ = %` (used on free text we quote in errors:
/// a token server's page may carry a token we have not parsed). Words and field names
/// (`max_session_duration_seconds`) are left as they are.
pub fn mask_token_like(text: &str, min_len: usize) -> String {
    crate::secret::map_words(text, |run| {
        let random = run
            .chars()
            .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase() || matches!(c, '+' | '=' | '%'));
        (random && run.chars().count() >= min_len).then_some(REDACTED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn object(v: &Value) -> &Map<String, Value> {
        v.as_object().expect("test JSON is an object")
    }

    #[test]
    fn documents_and_deadlines() {
        let base = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now = base;
        let doc = parse_object(object(&json!({"token": "abc", "expires_in_seconds": 60})))
            .expect("parses");
        assert_eq!(
            doc.redeem_by(base, now),
            Ok(Some(base + Duration::from_secs(60)))
        );
        let doc = parse_object(object(&json!({
            "token": "abc", "expires_in_seconds": 60, "minted_at": 1_000_010
        })))
        .expect("parses");
        assert_eq!(
            doc.redeem_by(base, now),
            Ok(Some(base + Duration::from_secs(70)))
        );
        let doc = parse_object(object(&json!({
            "token": "abc", "expires_at": "1970-01-12T13:46:40Z", "expires_in_seconds": 5
        })))
        .expect("parses");
        assert_eq!(doc.redeem_by(base, now), Ok(Some(base)), "expires_at wins");
        let doc = parse_object(object(&json!({"token": " abc\n"}))).expect("parses");
        assert_eq!(doc.secret, "abc");
        assert_eq!(doc.redeem_by(base, now), Ok(None));
        let token = doc.into_token("file", base, now).expect("plausible");
        assert_eq!(token.minted_at, base);
        assert!(token.redeem_by.is_none());
    }

    #[test]
    fn impossible_lifetimes_are_refused_naming_the_field_and_the_value() {
        let now = UNIX_EPOCH + Duration::from_secs(1_767_268_800);
        let parse = |v: Value| parse_object(object(&v));
        // Durations: zero, negative, beyond a day, overflowing, not finite.
        for (v, field, value) in [
            (
                json!({"token": "t", "expires_in_seconds": -5}),
                "expires_in_seconds",
                "-5 s",
            ),
            (
                json!({"token": "t", "expires_in_seconds": 9.3e18}),
                "expires_in_seconds",
                "9.3e18 s",
            ),
            (
                json!({"token": "t", "expires_in_seconds": 86_401}),
                "expires_in_seconds",
                "86401 s",
            ),
            (
                json!({"token": "t", "max_session_duration_seconds": 1e300}),
                "max_session_duration_seconds",
                "1e300 s",
            ),
            (
                json!({"token": "t", "max_session_duration_seconds": "0"}),
                "max_session_duration_seconds",
                "0 s",
            ),
        ] {
            let e = parse(v.clone()).expect_err("implausible");
            assert!(
                matches!(&e, DocumentError::Implausible { field: f, value: got, .. }
                    if *f == field && got == value),
                "{v}: {e:?}"
            );
            assert!(e.to_string().contains(field), "{e}");
        }
        // The edges are real tokens.
        for v in [
            json!({"token": "t", "expires_in_seconds": 0.5}),
            json!({"token": "t", "expires_in_seconds": 86_400, "max_session_duration_seconds": 10_800}),
        ] {
            parse(v.clone())
                .expect("plausible")
                .into_token("test", now, now)
                .expect("plausible");
        }
        // Times: far in the future (given, or computed from minted_at).
        for (v, field) in [
            (json!({"token": "t", "expires_at": 9.2e18}), "expires_at"),
            (
                json!({"token": "t", "expires_at": "9999-12-31T23:59:59Z"}),
                "expires_at",
            ),
            (
                json!({"token": "t", "minted_at": 9.2e18, "expires_in_seconds": 60}),
                "minted_at",
            ),
            (
                json!({"token": "t", "minted_at": 1_767_268_800 + 86_000, "expires_in_seconds": 600}),
                "expires_in_seconds",
            ),
        ] {
            let doc = parse(v.clone()).expect("parses");
            let e = doc.into_token("test", now, now).expect_err("implausible");
            assert!(
                matches!(&e, DocumentError::Implausible { field: f, .. } if *f == field),
                "{v}: {e:?}"
            );
        }
        // A deadline computed from a base time near the end of SystemTime does not overflow.
        let doc = parse(json!({"token": "t", "expires_in_seconds": 600})).expect("parses");
        let far = UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 - 10);
        assert!(doc.redeem_by(far, now).is_err());
        // Negative times are not times.
        assert!(matches!(
            parse(json!({"token": "t", "expires_at": -1})),
            Err(DocumentError::BadField {
                field: "expires_at",
                ..
            })
        ));
        // A deadline in the past, or a window of 0 s (what `to_json` writes for a token with
        // under a second left), is a lapsed token, not an impossible one.
        for v in [
            json!({"token": "t", "expires_at": 1_000}),
            json!({"token": "t", "expires_in_seconds": 0}),
        ] {
            let doc = parse(v).expect("parses");
            assert!(
                doc.into_token("test", now, now)
                    .expect("lapsed")
                    .is_lapsed(now)
            );
        }
    }

    #[test]
    fn bad_documents_say_why_without_the_token() {
        for (v, want) in [
            (json!({}), DocumentError::MissingToken),
            (json!({"token": null}), DocumentError::MissingToken),
            (json!({"token": 5}), DocumentError::BadToken("a number")),
            (json!({"token": ""}), DocumentError::BadToken("empty")),
        ] {
            assert_eq!(parse_object(object(&v)).expect_err("bad"), want, "{v}");
        }
        let err = parse_object(object(
            &json!({"token": "secret-xyz", "expires_at": "soon"}),
        ))
        .expect_err("bad");
        assert!(matches!(
            err,
            DocumentError::BadField {
                field: "expires_at",
                ..
            }
        ));
        assert!(!err.to_string().contains("secret-xyz"));
        let err = parse_object(object(&json!({"token": "a b"}))).expect_err("bad");
        assert!(!err.to_string().contains("a b"));
    }

    #[test]
    fn plain_tokens() {
        assert_eq!(
            parse_plain("  AQICAHg+/x0123456789==\n")
                .expect("token")
                .secret,
            "AQICAHg+/x0123456789=="
        );
        for bad in [
            "",
            "  ",
            "OK",
            "two words and more",
            "<html></html><html>",
            "{\"token\":\"abcdefghijklmnop\"}",
            "abcdefgh\u{7}ijklmnopq",
        ] {
            assert!(parse_plain(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn output_document() {
        let now = SystemTime::now();
        let token = Token::new("tok", "api-key")
            .with_minted_at(now)
            .with_redeem_by(now + Duration::from_secs(60))
            .with_max_session_duration(Duration::from_secs(600));
        let v = to_json(&token, now);
        assert_eq!(v["token"], "tok");
        assert_eq!(v["expires_in_seconds"], 60);
        assert_eq!(v["max_session_duration_seconds"], 600);
        let back = parse_object(object(&v)).expect("round trip");
        assert_eq!(back.secret, "tok");
        let bare = to_json(&Token::new("tok", "file"), now);
        assert!(bare["expires_at"].is_null() && bare["expires_in_seconds"].is_null());
    }

    #[test]
    fn masking() {
        let tok = "AQICAHgXk3+abcdefghijklmnopqrstuv/w==";
        let text = format!("<p>token {tok} failed</p> short-word ok");
        let masked = mask_token_like(&text, 24);
        assert!(!masked.contains("AQICAHg"), "{masked}");
        assert!(masked.contains("short-word ok"));
        assert!(masked.contains(REDACTED));
        // Field names are words, not tokens.
        let field = "field \"max_session_duration_seconds\" is not a number";
        assert_eq!(mask_token_like(field, 24), field);
    }
}
