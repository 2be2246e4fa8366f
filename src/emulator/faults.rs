//! Faults on demand: rules that make the next N sessions or token requests fail in a chosen way.
//!
//! Rules come from `--fault SPEC` flags or `POST /emulator/faults` (JSON). Each rule has a
//! remaining count; a new session (or token request) takes one use of every matching rule.
//! Both syntaxes are read here, and only here, with the same checks (close codes a server may
//! send, times within a day), so a rule the emulator accepts is one it can carry out; every error
//! names the part or field and the value.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::untrusted::json_kind;

/// One way to fail.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// Send `Error` (for codes ≥ 3000 and 1008) then close with `code` at `at_ms` after Begin.
    Close {
        code: u16,
        reason: Option<String>,
        at_ms: u64,
    },
    /// Drop the TCP connection without a close frame (the client sees 1006).
    Drop { at_ms: u64 },
    /// Stop sending anything (the socket stays open and is still read) from `at_ms`.
    Stall { at_ms: u64 },
    /// From `at_ms`, stop reading the socket at all (TCP back-pressure builds up at the client)
    /// and send nothing, not even pongs, until the session's expiry or the emulator's shutdown.
    StopReading { at_ms: u64 },
    /// Close with `code` (and `reason`) before sending Begin — how the service refuses an
    /// expired or used token.
    CloseBeforeBegin { code: u16, reason: Option<String> },
    /// Never send `Termination` after `Terminate` (and keep the socket open).
    NoTermination,
    /// The token endpoint answers with `status`.
    TokenStatus {
        status: u16,
        retry_after: Option<u64>,
    },
    /// The token endpoint answers after `delay_ms`.
    TokenDelay { delay_ms: u64 },
}

const DEFAULT_BEFORE_BEGIN_CODE: u16 = 1011;

/// Times in a rule (`at_ms`, `delay_ms`) are at most a day: a session lasts at most 3 hours.
pub const MAX_FAULT_MS: u64 = 86_400_000;

/// The close codes the emulator sends, for the error messages.
pub const ALLOWED_CLOSE_CODES: &str = "1000–1003, 1007–1014, 3000–4999";

/// Whether a server may put `code` in a close frame (RFC 6455 §7.4: 1004–1006 and 1015 are
/// reserved or must not be sent; 1015–2999 are for future standards; 5000+ are not codes).
pub fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A close code checked for sending, for clap value parsers and the config check.
pub fn parse_close_code(value: &str) -> Result<u16, String> {
    let code: u16 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a close code (a number)"))?;
    check_close_code(code)?;
    Ok(code)
}

fn check_close_code(code: u16) -> Result<(), String> {
    if is_sendable_close_code(code) {
        Ok(())
    } else {
        Err(format!(
            "{code} is not a close code a server may send (allowed: {ALLOWED_CLOSE_CODES})"
        ))
    }
}

fn check_ms(value: u64) -> Result<u64, String> {
    if value <= MAX_FAULT_MS {
        Ok(value)
    } else {
        Err(format!(
            "{value} ms is longer than a day (at most {MAX_FAULT_MS})"
        ))
    }
}

fn check_status(status: u16) -> Result<u16, String> {
    if (200..=599).contains(&status) {
        Ok(status)
    } else {
        Err(format!(
            "{status} is not an HTTP status the endpoint can answer (200–599)"
        ))
    }
}

impl Fault {
    /// Whether this fault applies to token requests (else to sessions).
    pub fn is_token_fault(&self) -> bool {
        matches!(self, Self::TokenStatus { .. } | Self::TokenDelay { .. })
    }

    /// The flag syntax for this fault, without the count (`close:3005:Reason@2000`).
    fn spec_body(&self) -> String {
        let with_reason = |head: String, reason: &Option<String>| match reason {
            Some(r) => format!("{head}:{r}"),
            None => head,
        };
        match self {
            Self::Close {
                code,
                reason,
                at_ms,
            } => format!("{}@{at_ms}", with_reason(format!("close:{code}"), reason)),
            Self::Drop { at_ms } => format!("drop@{at_ms}"),
            Self::Stall { at_ms } => format!("stall@{at_ms}"),
            Self::StopReading { at_ms } => format!("stop-reading@{at_ms}"),
            Self::CloseBeforeBegin { code, reason } => {
                with_reason(format!("close-before-begin:{code}"), reason)
            }
            Self::NoTermination => "no-termination".to_owned(),
            Self::TokenStatus {
                status,
                retry_after,
            } => match retry_after {
                Some(secs) => format!("token:{status}:{secs}"),
                None => format!("token:{status}"),
            },
            Self::TokenDelay { delay_ms } => format!("token-delay:{delay_ms}"),
        }
    }
}

/// A fault with how many more sessions/requests it applies to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultRule {
    #[serde(flatten)]
    pub fault: Fault,
    pub count: u32,
}

/// A flag-syntax rule that cannot be read; `reason` names the part and the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "invalid fault {spec:?}: {reason} (examples: close:3005@5s, drop@2s, stall@3s, stop-reading@5s, close-before-begin, no-termination, token:500, token-delay:2s, and an optional xN suffix)"
)]
pub struct FaultParseError {
    pub spec: String,
    pub reason: String,
}

/// A JSON rule that cannot be read: the field and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field \"{field}\": {reason}")]
pub struct FaultJsonError {
    pub field: String,
    pub reason: String,
}

impl FaultRule {
    /// The flag syntax, always with the `@T` of timed faults and the `xN` suffix, so a reason
    /// ending in `x` and digits reads back as a reason.
    pub fn to_spec(&self) -> String {
        format!("{}x{}", self.fault.spec_body(), self.count)
    }

    /// A rule from its JSON form (`{"kind": "close", "code": 3005, "at_ms": 2000, "count": 2}`):
    /// unknown fields, wrong types and out-of-range values are errors naming the field.
    pub fn from_json(value: &Value) -> Result<Self, FaultJsonError> {
        let Some(object) = value.as_object() else {
            return Err(json_error(
                "kind",
                format!("a fault is a JSON object, not {}", json_kind(value)),
            ));
        };
        let mut fields = Fields {
            object,
            read: Vec::new(),
        };
        let kind = fields.string("kind")?.ok_or_else(|| {
            json_error(
                "kind",
                "missing (close, drop, stall, stop-reading, close-before-begin, no-termination, token-status, token-delay)",
            )
        })?;
        let fault = match kind.as_str() {
            "close" => Fault::Close {
                code: fields.close_code("code")?.ok_or_else(|| missing("code"))?,
                reason: fields.string("reason")?,
                at_ms: fields.millis("at_ms")?.unwrap_or(0),
            },
            "drop" => Fault::Drop {
                at_ms: fields.millis("at_ms")?.unwrap_or(0),
            },
            "stall" => Fault::Stall {
                at_ms: fields.millis("at_ms")?.unwrap_or(0),
            },
            "stop-reading" => Fault::StopReading {
                at_ms: fields.millis("at_ms")?.unwrap_or(0),
            },
            "close-before-begin" => Fault::CloseBeforeBegin {
                code: fields
                    .close_code("code")?
                    .unwrap_or(DEFAULT_BEFORE_BEGIN_CODE),
                reason: fields.string("reason")?,
            },
            "no-termination" => Fault::NoTermination,
            "token-status" => Fault::TokenStatus {
                status: fields
                    .integer("status")?
                    .map(|s| u16::try_from(s).map_err(|_| out_of_range("status", s)))
                    .transpose()?
                    .map(|s| check_status(s).map_err(|r| json_error("status", r)))
                    .transpose()?
                    .ok_or_else(|| missing("status"))?,
                retry_after: fields.integer("retry_after")?,
            },
            "token-delay" => Fault::TokenDelay {
                delay_ms: fields
                    .millis("delay_ms")?
                    .ok_or_else(|| missing("delay_ms"))?,
            },
            other => {
                return Err(json_error(
                    "kind",
                    format!("unknown fault kind {:?}", bounded(other)),
                ));
            }
        };
        let count = match fields.integer("count")? {
            None => 1,
            Some(n) => match u32::try_from(n) {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(json_error(
                        "count",
                        format!("{n} is not a count from 1 to {}", u32::MAX),
                    ));
                }
            },
        };
        fields.no_others()?;
        Ok(Self { fault, count })
    }
}

/// The fields of one JSON rule, read once each, so the rest can be reported as unknown.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    read: Vec<&'static str>,
}

impl Fields<'_> {
    /// The field's value, `None` when absent or null.
    fn get(&mut self, name: &'static str) -> Option<&Value> {
        self.read.push(name);
        self.object.get(name).filter(|v| !v.is_null())
    }

    fn string(&mut self, name: &'static str) -> Result<Option<String>, FaultJsonError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(json_error(
                name,
                format!("expected a string, got {}", json_kind(other)),
            )),
        }
    }

    fn integer(&mut self, name: &'static str) -> Result<Option<u64>, FaultJsonError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                json_error(
                    name,
                    format!("{} is not a non-negative integer", bounded(&n.to_string())),
                )
            }),
            Some(other) => Err(json_error(
                name,
                format!("expected an integer, got {}", json_kind(other)),
            )),
        }
    }

    fn millis(&mut self, name: &'static str) -> Result<Option<u64>, FaultJsonError> {
        self.integer(name)?
            .map(|ms| check_ms(ms).map_err(|r| json_error(name, r)))
            .transpose()
    }

    fn close_code(&mut self, name: &'static str) -> Result<Option<u16>, FaultJsonError> {
        let Some(code) = self.integer(name)? else {
            return Ok(None);
        };
        let code = u16::try_from(code).map_err(|_| {
            json_error(
                name,
                format!(
                    "{code} is not a close code a server may send (allowed: {ALLOWED_CLOSE_CODES})"
                ),
            )
        })?;
        check_close_code(code).map_err(|r| json_error(name, r))?;
        Ok(Some(code))
    }

    fn no_others(&self) -> Result<(), FaultJsonError> {
        match self
            .object
            .keys()
            .find(|k| !self.read.contains(&k.as_str()))
        {
            Some(unknown) => Err(json_error(
                bounded(unknown),
                "unknown field for this kind of fault",
            )),
            None => Ok(()),
        }
    }
}

fn json_error(field: impl Into<String>, reason: impl Into<String>) -> FaultJsonError {
    FaultJsonError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn missing(field: &str) -> FaultJsonError {
    json_error(field, "missing")
}

fn out_of_range(field: &str, value: u64) -> FaultJsonError {
    json_error(field, format!("{value} is out of range"))
}

/// Client-supplied text in an error message: at most 64 characters.
fn bounded(text: &str) -> String {
    super::echo(text, 64)
}

impl FromStr for FaultRule {
    type Err = FaultParseError;

    /// The flag syntax: `KIND[:ARG[:ARG]][@TIME][xCOUNT]`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| FaultParseError {
            spec: bounded(spec),
            reason,
        };
        let (body, count) = match spec.rsplit_once('x') {
            Some((body, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => (
                body,
                n.parse::<u32>()
                    .map_err(|_| err(format!("count {} is too large", bounded(n))))?,
            ),
            _ => (spec, 1),
        };
        let (body, at_ms) = match body.split_once('@') {
            Some((b, t)) => (
                b,
                parse_ms(t)
                    .ok_or_else(|| err(format!("bad time after @: {:?}", bounded(t))))
                    .and_then(|ms| check_ms(ms).map_err(|r| err(format!("time after @: {r}"))))?,
            ),
            None => (body, 0),
        };
        let mut parts = body.splitn(3, ':');
        let kind = parts.next().unwrap_or_default();
        let arg1 = parts.next();
        let arg2 = parts.next();
        let number = |what: &str, s: Option<&str>| -> Result<u16, FaultParseError> {
            let s = s.ok_or_else(|| err(format!("missing {what}")))?;
            s.parse()
                .map_err(|_| err(format!("{what} {:?} is not a number", bounded(s))))
        };
        let close_code = |s: Option<&str>| -> Result<u16, FaultParseError> {
            let code = number("code", s)?;
            check_close_code(code).map_err(|r| err(format!("code {r}")))?;
            Ok(code)
        };
        let fault = match kind {
            "close" => Fault::Close {
                code: close_code(arg1)?,
                reason: arg2.map(str::to_owned),
                at_ms,
            },
            "drop" => Fault::Drop { at_ms },
            "stall" => Fault::Stall { at_ms },
            "stop-reading" => Fault::StopReading { at_ms },
            "close-before-begin" => Fault::CloseBeforeBegin {
                code: arg1.map_or(Ok(DEFAULT_BEFORE_BEGIN_CODE), |c| close_code(Some(c)))?,
                reason: arg2.map(str::to_owned),
            },
            "no-termination" => Fault::NoTermination,
            "token" => Fault::TokenStatus {
                status: check_status(number("status", arg1)?)
                    .map_err(|r| err(format!("status {r}")))?,
                retry_after: arg2
                    .map(|s| {
                        s.parse()
                            .map_err(|_| err(format!("bad retry-after {:?}", bounded(s))))
                    })
                    .transpose()?,
            },
            "token-delay" => Fault::TokenDelay {
                delay_ms: arg1
                    .and_then(parse_ms)
                    .ok_or_else(|| err("bad delay".to_owned()))
                    .and_then(|ms| check_ms(ms).map_err(|r| err(format!("delay {r}"))))?,
            },
            _ => return Err(err(format!("unknown fault kind {:?}", bounded(kind)))),
        };
        if count == 0 {
            return Err(err("count must be at least 1".to_owned()));
        }
        Ok(Self { fault, count })
    }
}

fn parse_ms(s: &str) -> Option<u64> {
    crate::duration::millis(s).ok()
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Close { code, at_ms, .. } => write!(f, "close {code} at {at_ms} ms"),
            Self::Drop { at_ms } => write!(f, "TCP drop at {at_ms} ms"),
            Self::Stall { at_ms } => write!(f, "stall at {at_ms} ms"),
            Self::StopReading { at_ms } => write!(f, "stop reading at {at_ms} ms"),
            Self::CloseBeforeBegin { code, .. } => write!(f, "close {code} before Begin"),
            Self::NoTermination => f.write_str("no Termination"),
            Self::TokenStatus { status, .. } => write!(f, "token endpoint status {status}"),
            Self::TokenDelay { delay_ms } => write!(f, "token endpoint delay {delay_ms} ms"),
        }
    }
}

/// The most fault rules active at once: far more than any test needs, and the control API is
/// open to every local client, so the list must not grow without bound.
pub const MAX_FAULT_RULES: usize = 1000;

/// Adding the rules would make more than [`MAX_FAULT_RULES`] active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "at most {MAX_FAULT_RULES} fault rules can be active at once ({active} are, {adding} more \
     asked for): clear them (DELETE /emulator/faults) or let them run out"
)]
pub struct FaultBookFull {
    pub active: usize,
    pub adding: usize,
}

/// The active rules.
#[derive(Debug, Default)]
pub struct FaultBook {
    rules: Vec<FaultRule>,
}

impl FaultBook {
    /// Add `rules`, all of them or none (when more than [`MAX_FAULT_RULES`] would be active).
    pub fn add(&mut self, rules: &[FaultRule]) -> Result<(), FaultBookFull> {
        if self.rules.len() + rules.len() > MAX_FAULT_RULES {
            return Err(FaultBookFull {
                active: self.rules.len(),
                adding: rules.len(),
            });
        }
        self.rules.extend_from_slice(rules);
        Ok(())
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    /// Take one use of every session fault (for a new session).
    pub fn take_session_faults(&mut self) -> Vec<Fault> {
        self.take(|f| !f.is_token_fault())
    }

    /// Take one use of every token fault (for a token request).
    pub fn take_token_faults(&mut self) -> Vec<Fault> {
        self.take(Fault::is_token_fault)
    }

    fn take(&mut self, pick: impl Fn(&Fault) -> bool) -> Vec<Fault> {
        let mut taken = Vec::new();
        for rule in &mut self.rules {
            if rule.count > 0 && pick(&rule.fault) {
                rule.count -= 1;
                taken.push(rule.fault.clone());
            }
        }
        self.rules.retain(|r| r.count > 0);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flag_syntax() {
        let r: FaultRule = "close:3005@5s".parse().expect("parse");
        assert_eq!(
            r,
            FaultRule {
                fault: Fault::Close {
                    code: 3005,
                    reason: None,
                    at_ms: 5000
                },
                count: 1
            }
        );
        let r: FaultRule = "drop@1500x3".parse().expect("parse");
        assert_eq!(r.fault, Fault::Drop { at_ms: 1500 });
        assert_eq!(r.count, 3);
        let r: FaultRule = "close:1011:Internal oops@2s".parse().expect("parse");
        assert_eq!(
            r.fault,
            Fault::Close {
                code: 1011,
                reason: Some("Internal oops".into()),
                at_ms: 2000
            }
        );
        let r: FaultRule = "token:429:7x2".parse().expect("parse");
        assert_eq!(
            r.fault,
            Fault::TokenStatus {
                status: 429,
                retry_after: Some(7)
            }
        );
        assert_eq!(
            "close-before-begin"
                .parse::<FaultRule>()
                .expect("parse")
                .fault,
            Fault::CloseBeforeBegin {
                code: 1011,
                reason: None
            }
        );
        assert_eq!(
            "token-delay:2s".parse::<FaultRule>().expect("parse").fault,
            Fault::TokenDelay { delay_ms: 2000 }
        );
        assert_eq!(
            "stop-reading@5sx2".parse::<FaultRule>().expect("parse"),
            FaultRule {
                fault: Fault::StopReading { at_ms: 5000 },
                count: 2
            }
        );
        for bad in ["explode", "close", "close:abc", "drop@soon", "stallx0"] {
            assert!(bad.parse::<FaultRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn close_codes_a_server_may_not_send_are_refused_naming_the_value() {
        for code in [0_u16, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535] {
            assert!(!is_sendable_close_code(code), "{code}");
            let e = format!("close:{code}@1s")
                .parse::<FaultRule>()
                .expect_err("refused");
            assert!(
                e.to_string().contains(&format!("code {code} is not")),
                "{e}"
            );
            let e = format!("close-before-begin:{code}")
                .parse::<FaultRule>()
                .expect_err("refused");
            assert!(e.to_string().contains(&code.to_string()), "{e}");
            let e = FaultRule::from_json(&serde_json::json!({"kind": "close", "code": code}))
                .expect_err("refused");
            assert_eq!(e.field, "code");
            assert!(e.reason.contains(&code.to_string()), "{e}");
            assert!(parse_close_code(&code.to_string()).is_err());
        }
        for code in [1000_u16, 1003, 1007, 1014, 3000, 3005, 4999] {
            assert!(is_sendable_close_code(code), "{code}");
            assert_eq!(parse_close_code(&code.to_string()), Ok(code));
        }
        let e = FaultRule::from_json(&serde_json::json!({"kind": "close", "code": 70000}))
            .expect_err("not a u16");
        assert_eq!(e.field, "code");
        assert!(e.reason.contains("70000"), "{e}");
    }

    #[test]
    fn json_form() {
        let r = FaultRule::from_json(
            &serde_json::from_str(r#"{"kind":"close","code":3005,"at_ms":100,"count":2}"#)
                .expect("json"),
        )
        .expect("rule");
        assert_eq!(r.count, 2);
        let r = FaultRule::from_json(&serde_json::json!({"kind": "no-termination"})).expect("rule");
        assert_eq!((r.fault, r.count), (Fault::NoTermination, 1));
        let r = FaultRule::from_json(&serde_json::json!({"kind": "stop-reading", "at_ms": 5000}))
            .expect("rule");
        assert_eq!(r.fault, Fault::StopReading { at_ms: 5000 });
        // A typo is not silently a fault at 0 ms.
        let e = FaultRule::from_json(&serde_json::json!({"kind": "drop", "at": 5000}))
            .expect_err("unknown field");
        assert_eq!(e.field, "at");
        let e = FaultRule::from_json(&serde_json::json!({"kind": "drop", "at_ms": "5s"}))
            .expect_err("type");
        assert_eq!(e.field, "at_ms");
        let e = FaultRule::from_json(&serde_json::json!({"kind": "drop", "count": 0}))
            .expect_err("count");
        assert_eq!(e.field, "count");
    }

    #[test]
    fn book_counts_down_per_kind() {
        let mut book = FaultBook::default();
        let rules: Vec<FaultRule> = ["drop@1sx2", "token:500"]
            .iter()
            .map(|s| s.parse().expect("parse"))
            .collect();
        book.add(&rules).expect("room");
        assert_eq!(book.take_token_faults().len(), 1);
        assert!(book.take_token_faults().is_empty());
        assert_eq!(book.take_session_faults().len(), 1);
        assert_eq!(book.take_session_faults().len(), 1);
        assert!(book.take_session_faults().is_empty());
        assert!(book.list().is_empty());
    }

    #[test]
    fn the_book_holds_a_bounded_number_of_rules() {
        let mut book = FaultBook::default();
        let rule: FaultRule = "drop@1s".parse().expect("parse");
        let many = vec![rule.clone(); MAX_FAULT_RULES - 1];
        book.add(&many).expect("room");
        let e = book.add(&[rule.clone(), rule.clone()]).expect_err("full");
        assert_eq!((e.active, e.adding), (MAX_FAULT_RULES - 1, 2));
        assert_eq!(book.list().len(), MAX_FAULT_RULES - 1, "all or none");
        book.add(&[rule]).expect("the last place");
        book.clear();
        assert!(book.list().is_empty());
    }

    fn close_code() -> impl Strategy<Value = u16> {
        prop_oneof![1000_u16..=1003, 1007_u16..=1014, 3000_u16..=4999]
    }

    /// Reasons without `@` (the time separator); anything else, `:` and `x1` included, reads back.
    fn reason() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-zA-Z0-9 :x.,!-]{0,40}")
    }

    fn ms() -> impl Strategy<Value = u64> {
        0..=MAX_FAULT_MS
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            (close_code(), reason(), ms()).prop_map(|(code, reason, at_ms)| Fault::Close {
                code,
                reason,
                at_ms
            }),
            ms().prop_map(|at_ms| Fault::Drop { at_ms }),
            ms().prop_map(|at_ms| Fault::Stall { at_ms }),
            ms().prop_map(|at_ms| Fault::StopReading { at_ms }),
            (close_code(), reason())
                .prop_map(|(code, reason)| Fault::CloseBeforeBegin { code, reason }),
            Just(Fault::NoTermination),
            (200_u16..=599, proptest::option::of(any::<u64>())).prop_map(
                |(status, retry_after)| Fault::TokenStatus {
                    status,
                    retry_after
                }
            ),
            ms().prop_map(|delay_ms| Fault::TokenDelay { delay_ms }),
        ]
    }

    fn rule() -> impl Strategy<Value = FaultRule> {
        (fault(), 1_u32..=u32::MAX).prop_map(|(fault, count)| FaultRule { fault, count })
    }

    /// Arbitrary JSON, a few levels deep.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("close"),
                Just("drop"),
                Just("stop-reading"),
                Just("token-status"),
                Just("close-before-begin")
            ]
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("kind".to_owned()),
                        Just("code".to_owned()),
                        Just("at_ms".to_owned()),
                        Just("count".to_owned()),
                        Just("reason".to_owned()),
                        Just("status".to_owned()),
                        "[a-z_]{1,8}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn flag_parser_never_panics(spec in ".{0,60}") {
            let _ = spec.parse::<FaultRule>();
        }

        #[test]
        fn flag_parser_never_panics_on_near_valid_specs(
            kind in prop_oneof![Just("close"), Just("drop"), Just("stop-reading"), Just("token"),
                                Just("token-delay"), Just("close-before-begin")],
            rest in "[0-9:@xsm]{0,16}",
        ) {
            let _ = format!("{kind}{rest}").parse::<FaultRule>();
        }

        #[test]
        fn flag_syntax_round_trips(rule in rule()) {
            prop_assert_eq!(rule.to_spec().parse::<FaultRule>(), Ok(rule));
        }

        #[test]
        fn json_parser_never_panics(value in json()) {
            let _ = FaultRule::from_json(&value);
        }

        #[test]
        fn json_form_round_trips(rule in rule()) {
            let value = serde_json::to_value(&rule).expect("serialize");
            prop_assert_eq!(FaultRule::from_json(&value), Ok(rule));
        }

        #[test]
        fn json_errors_name_the_field(
            field in prop_oneof![Just("code"), Just("at_ms"), Just("count")],
            bad in prop_oneof![
                Just(serde_json::json!("text")),
                Just(serde_json::json!(-1)),
                Just(serde_json::json!(1.5)),
                Just(serde_json::json!(1005)),
                Just(serde_json::json!(0)),
                Just(serde_json::json!(u64::MAX)),
            ],
        ) {
            let mut value = serde_json::json!({"kind": "close", "code": 3005});
            value[field] = bad.clone();
            // Some combinations are valid (`at_ms: 0`, `at_ms: 1005`); the others name the field.
            if let Err(e) = FaultRule::from_json(&value) {
                prop_assert_eq!(&e.field, field);
                prop_assert!(e.to_string().contains(field));
            }
        }
    }
}
