//! Faults on demand: rules that make the next N sessions or token requests fail in a chosen way.
//!
//! Rules come from `--fault SPEC` flags or `POST /emulator/faults` (JSON). Each rule has a
//! remaining count; a new session (or token request) takes one use of every matching rule.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One way to fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// Send `Error` (for codes ≥ 3000 and 1008) then close with `code` at `at_ms` after Begin.
    Close {
        code: u16,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        at_ms: u64,
    },
    /// Drop the TCP connection without a close frame (the client sees 1006).
    Drop {
        #[serde(default)]
        at_ms: u64,
    },
    /// Stop sending anything (the socket stays open) from `at_ms`.
    Stall {
        #[serde(default)]
        at_ms: u64,
    },
    /// Close with `code` (and `reason`) before sending Begin — how the service refuses an
    /// expired or used token.
    CloseBeforeBegin {
        #[serde(default = "default_before_begin_code")]
        code: u16,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Never send `Termination` after `Terminate` (and keep the socket open).
    NoTermination,
    /// The token endpoint answers with `status`.
    TokenStatus {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// The token endpoint answers after `delay_ms`.
    TokenDelay { delay_ms: u64 },
}

fn default_before_begin_code() -> u16 {
    1011
}

impl Fault {
    /// Whether this fault applies to token requests (else to sessions).
    pub fn is_token_fault(&self) -> bool {
        matches!(self, Self::TokenStatus { .. } | Self::TokenDelay { .. })
    }
}

/// A fault with how many more sessions/requests it applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(flatten)]
    pub fault: Fault,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "invalid fault {spec:?}: {reason} (examples: close:3005@5s, drop@2s, stall@3s, close-before-begin, no-termination, token:500, token-delay:2s, and an optional xN suffix)"
)]
pub struct FaultParseError {
    pub spec: String,
    pub reason: String,
}

impl FromStr for FaultRule {
    type Err = FaultParseError;

    /// The flag syntax: `KIND[:ARG[:ARG]][@TIME][xCOUNT]`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| FaultParseError {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (body, count) = match spec.rsplit_once('x') {
            Some((body, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                (body, n.parse().map_err(|_| err("bad count"))?)
            }
            _ => (spec, 1),
        };
        let (body, at_ms) = match body.split_once('@') {
            Some((b, t)) => (b, parse_ms(t).ok_or_else(|| err("bad time after @"))?),
            None => (body, 0),
        };
        let mut parts = body.splitn(3, ':');
        let kind = parts.next().unwrap_or_default();
        let arg1 = parts.next();
        let arg2 = parts.next();
        let code = |s: Option<&str>| -> Result<u16, FaultParseError> {
            s.ok_or_else(|| err("missing code"))?
                .parse()
                .map_err(|_| err("code must be a number"))
        };
        let fault = match kind {
            "close" => Fault::Close {
                code: code(arg1)?,
                reason: arg2.map(str::to_owned),
                at_ms,
            },
            "drop" => Fault::Drop { at_ms },
            "stall" => Fault::Stall { at_ms },
            "close-before-begin" => Fault::CloseBeforeBegin {
                code: arg1.map_or(Ok(default_before_begin_code()), |c| code(Some(c)))?,
                reason: arg2.map(str::to_owned),
            },
            "no-termination" => Fault::NoTermination,
            "token" => Fault::TokenStatus {
                status: code(arg1)?,
                retry_after: arg2
                    .map(str::parse)
                    .transpose()
                    .map_err(|_| err("bad retry-after"))?,
            },
            "token-delay" => Fault::TokenDelay {
                delay_ms: arg1.and_then(parse_ms).ok_or_else(|| err("bad delay"))?,
            },
            _ => return Err(err("unknown fault kind")),
        };
        if count == 0 {
            return Err(err("count must be at least 1"));
        }
        Ok(Self { fault, count })
    }
}

fn parse_ms(s: &str) -> Option<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Some(ms);
    }
    humantime::parse_duration(s)
        .ok()
        .map(|d: Duration| d.as_millis() as u64)
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Close { code, at_ms, .. } => write!(f, "close {code} at {at_ms} ms"),
            Self::Drop { at_ms } => write!(f, "TCP drop at {at_ms} ms"),
            Self::Stall { at_ms } => write!(f, "stall at {at_ms} ms"),
            Self::CloseBeforeBegin { code, .. } => write!(f, "close {code} before Begin"),
            Self::NoTermination => f.write_str("no Termination"),
            Self::TokenStatus { status, .. } => write!(f, "token endpoint status {status}"),
            Self::TokenDelay { delay_ms } => write!(f, "token endpoint delay {delay_ms} ms"),
        }
    }
}

/// The active rules.
#[derive(Debug, Default)]
pub struct FaultBook {
    rules: Vec<FaultRule>,
}

impl FaultBook {
    pub fn add(&mut self, rule: FaultRule) {
        self.rules.push(rule);
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
        for bad in ["explode", "close", "close:abc", "drop@soon", "stallx0"] {
            assert!(bad.parse::<FaultRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn json_form() {
        let r: FaultRule =
            serde_json::from_str(r#"{"kind":"close","code":3005,"at_ms":100,"count":2}"#)
                .expect("json");
        assert_eq!(r.count, 2);
        let r: FaultRule = serde_json::from_str(r#"{"kind":"no-termination"}"#).expect("json");
        assert_eq!((r.fault, r.count), (Fault::NoTermination, 1));
    }

    #[test]
    fn book_counts_down_per_kind() {
        let mut book = FaultBook::default();
        book.add("drop@1sx2".parse().expect("parse"));
        book.add("token:500".parse().expect("parse"));
        assert_eq!(book.take_token_faults().len(), 1);
        assert!(book.take_token_faults().is_empty());
        assert_eq!(book.take_session_faults().len(), 1);
        assert_eq!(book.take_session_faults().len(), 1);
        assert!(book.take_session_faults().is_empty());
        assert!(book.list().is_empty());
    }
}
