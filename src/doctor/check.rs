//! The doctor's steps as a model: which steps there are, the order they are reported in and which
//! step needs which. A failure's consequences (the steps it skips) are derived from here, so the
//! runs in `doctor.rs` and `server.rs` only say what they found, never what to skip.
//!
//! A new step is a variant here (its place in the enum is its place in the report), its line in
//! [`Check::suite`] and [`Check::needs`], and the code that runs it behind `Recorder::runs`.

use serde::Serialize;
use strum::IntoEnumIterator;

/// Which command reports a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// `aai-live doctor`: the steps of a run.
    Run,
    /// `aai-live doctor --server URL`: a token server checked from the outside.
    Server,
}

/// One step of the doctor. The declaration order is the report order (`Ord`, `iter`); the
/// kebab-case name is what the text and JSON lines print (`step`), and what
/// docs/troubleshooting.md's "Doctor step" lines name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    strum::EnumIter,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "kebab-case")]
#[serde(into = "&'static str")]
pub enum Check {
    /// The configuration loaded, with its layers and warnings.
    Config,
    /// The provider's secret found (and not readable by others); the provider built.
    Secret,
    /// DNS, TCP, TLS and HTTP to the token endpoint; for the file provider, the token file.
    TokenEndpoint,
    /// Exactly one token from the provider.
    Token,
    /// The WebSocket upgrade at the streaming URL, with that token.
    StreamingEndpoint,
    /// The session's `Begin`.
    Begin,
    /// `Begin.expires_at` and the token answer's `Date` against this machine's clock.
    Clock,
    /// Silence, `Terminate`, and the `Termination` that must follow.
    Terminate,
    /// The audio input opens and delivers frames.
    Input,
    /// The transcript and log directories can be written.
    Files,
    /// DNS, TCP, TLS and HTTP to the token server.
    ServerReachable,
    /// HTTPS, or plain HTTP on loopback only.
    ServerTls,
    /// `/readyz`.
    ServerReady,
    /// What the server answers without a credential.
    ServerNoCredential,
    /// What the server answers with the credential: a token.
    ServerCredential,
    /// The CORS preflight for `--origin`.
    ServerCors,
    /// `X-RateLimit-*` headers on the token answer.
    ServerRateLimitHeaders,
    /// `Cache-Control: no-store` on the token answer.
    ServerCacheControl,
    /// The token of that answer opens a session.
    ServerRedeem,
}

impl Check {
    /// The name the report prints.
    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn suite(self) -> Suite {
        match self {
            Self::Config
            | Self::Secret
            | Self::TokenEndpoint
            | Self::Token
            | Self::StreamingEndpoint
            | Self::Begin
            | Self::Clock
            | Self::Terminate
            | Self::Input
            | Self::Files => Suite::Run,
            Self::ServerReachable
            | Self::ServerTls
            | Self::ServerReady
            | Self::ServerNoCredential
            | Self::ServerCredential
            | Self::ServerCors
            | Self::ServerRateLimitHeaders
            | Self::ServerCacheControl
            | Self::ServerRedeem => Suite::Server,
        }
    }

    /// The steps that must pass (or only warn) for this one to run: what it uses of theirs.
    /// Only earlier steps of the same suite (a test holds this).
    pub fn needs(self) -> &'static [Check] {
        match self {
            // A configuration that does not load ends the doctor before any step (exit 2), so
            // no step waits on `config`; input and files use nothing the network steps make.
            Self::Config | Self::Secret | Self::Input | Self::Files | Self::ServerReachable => &[],
            // The provider built from the secret knows the endpoint and asks it.
            Self::TokenEndpoint => &[Self::Secret],
            Self::Token => &[Self::TokenEndpoint],
            Self::StreamingEndpoint => &[Self::Token],
            Self::Begin => &[Self::StreamingEndpoint],
            // Terminate needs the session, not a clock that agrees: `--keep-going` still ends
            // the session properly after a clock failure.
            Self::Clock | Self::Terminate => &[Self::Begin],
            // Each asks the server that was reached; none uses another's answer.
            Self::ServerTls
            | Self::ServerReady
            | Self::ServerNoCredential
            | Self::ServerCredential
            | Self::ServerCors => &[Self::ServerReachable],
            // These inspect the token answer, which `server-credential` vouches for (with the
            // credential, or without one when the server needs none).
            Self::ServerRateLimitHeaders | Self::ServerCacheControl | Self::ServerRedeem => {
                &[Self::ServerCredential]
            }
        }
    }

    /// What the steps after this one lack when it does not pass, where its name alone does not
    /// say it (the skipped lines read "skipped: no token (token failed)").
    pub fn lack(self) -> Option<&'static str> {
        match self {
            Self::Secret => Some("no token provider"),
            Self::Token => Some("no token"),
            Self::ServerCredential => Some("no token answer"),
            _ => None,
        }
    }

    /// The steps of `suite`, in report order.
    pub fn all(suite: Suite) -> impl Iterator<Item = Check> {
        Self::iter().filter(move |c| c.suite() == suite)
    }

    /// Every step that needs this one, directly or through another, in report order: the steps
    /// that cannot run when this one fails or is skipped.
    pub fn dependents(self) -> Vec<Check> {
        let mut out: Vec<Check> = Vec::new();
        // A step needs only earlier steps, so one pass in order has decided each need before
        // the step that has it.
        for check in Self::iter().filter(|c| *c > self) {
            if check.needs().iter().any(|n| *n == self || out.contains(n)) {
                out.push(check);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The names as printed (JSON `step`, text lines); tests and docs quote them.
    #[test]
    fn names_are_the_printed_ones() {
        let names = [
            (Check::Config, "config"),
            (Check::Secret, "secret"),
            (Check::TokenEndpoint, "token-endpoint"),
            (Check::Token, "token"),
            (Check::StreamingEndpoint, "streaming-endpoint"),
            (Check::Begin, "begin"),
            (Check::Clock, "clock"),
            (Check::Terminate, "terminate"),
            (Check::Input, "input"),
            (Check::Files, "files"),
            (Check::ServerReachable, "server-reachable"),
            (Check::ServerTls, "server-tls"),
            (Check::ServerReady, "server-ready"),
            (Check::ServerNoCredential, "server-no-credential"),
            (Check::ServerCredential, "server-credential"),
            (Check::ServerCors, "server-cors"),
            (Check::ServerRateLimitHeaders, "server-rate-limit-headers"),
            (Check::ServerCacheControl, "server-cache-control"),
            (Check::ServerRedeem, "server-redeem"),
        ];
        for (check, name) in names {
            assert_eq!(check.name(), name);
            assert_eq!(
                serde_json::to_value(check).expect("json"),
                serde_json::Value::from(name)
            );
        }
    }

    #[test]
    fn a_step_needs_only_earlier_steps_of_its_suite() {
        for check in Check::iter() {
            for need in check.needs() {
                assert!(*need < check, "{check:?} needs the later {need:?}");
                assert_eq!(need.suite(), check.suite(), "{check:?} needs {need:?}");
            }
        }
        // The report order keeps each suite together.
        let suites: Vec<Suite> = Check::iter().map(Check::suite).collect();
        let changes = suites.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(changes, 1, "{suites:?}");
    }

    #[test]
    fn a_failure_takes_exactly_its_dependents_transitively() {
        use Check::{
            Begin, Clock, Config, Input, Secret, ServerCacheControl, ServerCors, ServerCredential,
            ServerNoCredential, ServerRateLimitHeaders, ServerReachable, ServerReady, ServerRedeem,
            ServerTls, StreamingEndpoint, Terminate, Token, TokenEndpoint,
        };
        let cases: [(Check, &[Check]); 10] = [
            (
                Secret,
                &[
                    TokenEndpoint,
                    Token,
                    StreamingEndpoint,
                    Begin,
                    Clock,
                    Terminate,
                ],
            ),
            (
                TokenEndpoint,
                &[Token, StreamingEndpoint, Begin, Clock, Terminate],
            ),
            (Token, &[StreamingEndpoint, Begin, Clock, Terminate]),
            (Begin, &[Clock, Terminate]),
            (Clock, &[]),
            (Input, &[]),
            (Config, &[]),
            (
                ServerReachable,
                &[
                    ServerTls,
                    ServerReady,
                    ServerNoCredential,
                    ServerCredential,
                    ServerCors,
                    ServerRateLimitHeaders,
                    ServerCacheControl,
                    ServerRedeem,
                ],
            ),
            (
                ServerCredential,
                &[ServerRateLimitHeaders, ServerCacheControl, ServerRedeem],
            ),
            (ServerCors, &[]),
        ];
        for (failed, expected) in cases {
            assert_eq!(failed.dependents(), expected, "{failed:?}");
        }
    }

    /// The derivation against its definition: `d` depends on `c` when a chain of needs leads
    /// from `d` to `c`, found here by a plain search instead of the one pass in order.
    #[test]
    fn dependents_are_the_closure_of_needs() {
        fn reaches(from: Check, to: Check) -> bool {
            from.needs().iter().any(|n| *n == to || reaches(*n, to))
        }
        for c in Check::iter() {
            let closure: BTreeSet<Check> = Check::iter().filter(|d| reaches(*d, c)).collect();
            let derived: BTreeSet<Check> = c.dependents().into_iter().collect();
            assert_eq!(derived, closure, "{c:?}");
        }
    }

    /// docs/troubleshooting.md lists the steps in order and names one in every section: both
    /// must be the model's.
    #[test]
    fn the_troubleshooting_page_names_the_steps_of_the_model() {
        let page = crate::diagnosis::PAGE;
        let start = page
            .find("The doctor's steps, in order:")
            .expect("the order paragraph");
        let paragraph = page[start..].split("\n\n").next().unwrap_or_default();
        let listed: Vec<&str> = backticked(paragraph)
            .into_iter()
            .filter(|w| !w.starts_with('-'))
            .collect();
        let model: Vec<&str> = Check::iter().map(Check::name).collect();
        assert_eq!(listed, model, "docs/troubleshooting.md: {paragraph}");
        let mut named = 0;
        for line in page.lines().filter(|l| l.starts_with("**Doctor step:**")) {
            // Asides in parentheses quote other things (`run`, `--redeem`).
            let mut depth = 0_usize;
            let outside: String = line
                .chars()
                .filter(|c| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth = depth.saturating_sub(1),
                        _ => return depth == 0,
                    }
                    false
                })
                .collect();
            for word in backticked(&outside)
                .into_iter()
                .filter(|w| !w.starts_with('-'))
            {
                assert!(model.contains(&word), "no step `{word}`: {line}");
                named += 1;
            }
        }
        assert!(named > 20, "{named}");
    }

    fn backticked(text: &str) -> Vec<&str> {
        text.split('`').skip(1).step_by(2).collect()
    }
}
