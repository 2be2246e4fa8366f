//! A failure as a value. It is built where it is known — the token provider's error, the
//! connection that could not open, the session the service closed, the audio input, aai-live's
//! own tasks — with the facts that place it (origin, close class, close code, HTTP status,
//! network kind) and its [`Diagnosis`], decided there from those typed facts. From then on it
//! travels as is: the session machine decides on its class, the events carry it (`explain`),
//! and only `strings` puts it into words. No code reads a diagnosis back out of a sentence, so
//! rewording a message cannot send anyone to another troubleshooting section.

use std::time::Duration;

use serde::Serialize;

use crate::diagnosis::{Diagnosis, Network};
use crate::protocol::CloseClass;
use crate::protocol::close;
use crate::provider::{ProviderError, ProviderErrorClass};

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Getting a token (the provider: the key, the token endpoint or server, the token file).
    Token,
    /// Opening the streaming WebSocket (the URL, DNS, TCP, TLS, a proxy, the upgrade).
    Connect,
    /// The service ended the session: a close code, a drop, no `Begin`, a stall.
    Close,
    /// The audio input.
    Input,
    /// aai-live itself: one of its tasks died (a bug).
    Internal,
}

/// What failed, and everything known about it. Cheap to clone; carries no secret (every text
/// in it was scrubbed where it was built, and the service's words are capped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub origin: Origin,
    pub class: CloseClass,
    /// The WebSocket close code, when the service sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The HTTP status, when an HTTP answer failed (the token endpoint, a refused upgrade).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The kind of a transport failure, when it was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// What happened, in the words of whoever saw it: the service's close reason or `Error`
    /// text (untrusted: shown only through `untrusted`), the provider's message, the input's
    /// error. Never parsed.
    pub reason: String,
    /// The troubleshooting section (`aai-live explain` topic).
    #[serde(rename = "explain", serialize_with = "section")]
    pub diagnosis: Diagnosis,
    /// How long the server asked us to wait (a token endpoint's `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's serialize_with passes a reference"
)]
fn section<S: serde::Serializer>(diagnosis: &Diagnosis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(diagnosis.section())
}

impl Failure {
    fn new(origin: Origin, class: CloseClass, reason: String, diagnosis: Diagnosis) -> Self {
        Self {
            origin,
            class,
            code: None,
            status: None,
            network: None,
            reason,
            diagnosis,
            retry_after: None,
        }
    }

    /// A token provider's failure: its class tells the machine what to do, its typed facts
    /// (provider, status, network kind) the section.
    pub fn token(error: &ProviderError) -> Self {
        let class = match error.class() {
            ProviderErrorClass::RateLimited => CloseClass::RateLimited,
            ProviderErrorClass::Transient | ProviderErrorClass::Exhausted => CloseClass::Transient,
            ProviderErrorClass::Internal => CloseClass::Local,
            ProviderErrorClass::NotConfigured
            | ProviderErrorClass::InvalidConfig
            | ProviderErrorClass::Rejected => CloseClass::Fatal,
        };
        Self {
            status: error.status(),
            network: error.network(),
            retry_after: error.retry_after(),
            ..Self::new(Origin::Token, class, error.to_string(), error.diagnosis())
        }
    }

    /// The service ended the session (`code` `None`: the connection dropped): the close
    /// table's verdict on its code, reason and the preceding `Error` text. The reason kept is
    /// the close reason, or the `Error` text when the reason is empty or the long-reason
    /// placeholder.
    pub fn close(
        code: Option<u16>,
        reason: &str,
        error_text: Option<&str>,
        after_begin: bool,
    ) -> Self {
        let verdict = close::verdict(code, reason, error_text);
        let diagnosis = if after_begin {
            verdict.diagnosis
        } else {
            verdict.diagnosis.before_begin()
        };
        let shown = match error_text {
            Some(e) if reason.is_empty() || reason == close::LONG_REASON => e,
            _ => reason,
        };
        Self {
            code,
            ..Self::new(Origin::Close, verdict.class, shown.to_owned(), diagnosis)
        }
    }

    /// A session that ended by our own judgement: no `Begin` in time, a stall. Transient.
    pub fn silent(reason: impl Into<String>, diagnosis: Diagnosis) -> Self {
        Self::new(
            Origin::Close,
            CloseClass::Transient,
            reason.into(),
            diagnosis,
        )
    }

    /// The WebSocket could not be opened. `status` when the upgrade was refused with one.
    pub fn connect(
        class: CloseClass,
        reason: impl Into<String>,
        diagnosis: Diagnosis,
        status: Option<u16>,
        network: Option<Network>,
    ) -> Self {
        Self {
            status,
            network,
            ..Self::new(Origin::Connect, class, reason.into(), diagnosis)
        }
    }

    /// The audio input failed (or its task died).
    pub fn input(reason: impl Into<String>) -> Self {
        Self::new(
            Origin::Input,
            CloseClass::Local,
            reason.into(),
            Diagnosis::LocalFailure,
        )
    }

    /// One of aai-live's own tasks failed: a bug.
    pub fn internal(reason: impl Into<String>) -> Self {
        Self::new(
            Origin::Internal,
            CloseClass::Local,
            reason.into(),
            Diagnosis::LocalFailure,
        )
    }

    /// The section's key, for `explain` fields.
    pub fn explain(&self) -> &'static str {
        self.diagnosis.section()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::close::reasons;

    #[test]
    fn closes_take_the_tables_verdict_and_a_section_of_their_own_before_begin() {
        let f = Failure::close(Some(3009), reasons::TOO_MANY_SESSIONS, None, true);
        assert_eq!(
            (f.origin, f.class, f.code, f.diagnosis),
            (
                Origin::Close,
                CloseClass::RateLimited,
                Some(3009),
                Diagnosis::Close3009
            )
        );
        let f = Failure::close(Some(1011), "", None, false);
        assert_eq!(f.diagnosis, Diagnosis::CloseBeforeBegin);
        let f = Failure::close(None, "connection lost", None, true);
        assert_eq!(
            (f.class, f.diagnosis),
            (CloseClass::Transient, Diagnosis::Close1006)
        );
    }

    /// The providers and the browser client (which reads `token_status` of the close table)
    /// decide alike on every HTTP status a token server can answer with a failure.
    #[test]
    fn token_statuses_agree_with_the_close_table() {
        use crate::provider::http::{Hints, Origin as At, Reply, status_error};
        let at = At {
            provider: "remote",
            location: "GET http://127.0.0.1:9/token".into(),
            timeout: Duration::from_secs(1),
        };
        let hints = Hints {
            bad_request: "",
            rejected: "",
            not_found: "",
        };
        for code in 300..=599 {
            let reply = Reply {
                status: reqwest::StatusCode::from_u16(code).expect("status"),
                headers: reqwest::header::HeaderMap::new(),
                body: Vec::new(),
            };
            let failure = Failure::token(&status_error(&at, &reply, &hints, &[]));
            let table = close::token_status_verdict(code, true);
            assert_eq!(
                (failure.class, failure.diagnosis),
                (table.class, table.diagnosis),
                "HTTP {code}"
            );
        }
    }

    proptest::proptest! {
        /// Rewording any message changes no section: whatever a provider's or a connection's
        /// message says (our own words, a library's, a server's), the section comes from the
        /// typed facts alone.
        #[test]
        fn sections_do_not_read_the_words(detail in ".{0,200}") {
            use crate::diagnosis::Network;
            let at = "GET http://127.0.0.1:9/v3/token".to_owned();
            let cases = [
                (
                    ProviderError::Transient {
                        provider: "api-key",
                        location: at.clone(),
                        status: None,
                        network: Some(Network::Dns),
                        retry_after: None,
                        detail: detail.clone(),
                    },
                    Diagnosis::DnsFailure,
                ),
                (
                    ProviderError::Transient {
                        provider: "remote",
                        location: at.clone(),
                        status: Some(503),
                        network: None,
                        retry_after: None,
                        detail: detail.clone(),
                    },
                    Diagnosis::ServeUnavailable,
                ),
                (
                    ProviderError::Rejected {
                        provider: "api-key",
                        location: at.clone(),
                        status: Some(401),
                        detail: detail.clone(),
                    },
                    Diagnosis::TokenUnauthorized,
                ),
                (
                    ProviderError::NotConfigured {
                        provider: "api-key",
                        detail: detail.clone(),
                    },
                    Diagnosis::SecretMissing,
                ),
                (
                    ProviderError::Exhausted {
                        provider: "file",
                        location: at.clone(),
                        waited: Duration::from_secs(1),
                        missing: true,
                        detail: detail.clone(),
                    },
                    Diagnosis::TokenFileMissing,
                ),
            ];
            for (error, section) in cases {
                proptest::prop_assert_eq!(Failure::token(&error).diagnosis, section);
            }
            // Closes whose rule looks at the code only.
            for (code, section) in [
                (Some(3009), Diagnosis::Close3009),
                (Some(3007), Diagnosis::Close3007),
                (Some(1011), Diagnosis::Close1011),
                (None, Diagnosis::Close1006),
            ] {
                proptest::prop_assert_eq!(Failure::close(code, &detail, None, true).diagnosis, section);
            }
            proptest::prop_assert_eq!(Failure::input(detail.clone()).diagnosis, Diagnosis::LocalFailure);
        }
    }

    #[test]
    fn serialized_with_its_section() {
        let f = Failure::close(Some(1008), reasons::MISSING_AUTH, None, true);
        let json = serde_json::to_value(&f).expect("json");
        assert_eq!(json["explain"], "1008-missing-auth");
        assert_eq!(json["class"], "fatal");
        assert_eq!(json["origin"], "close");
        assert_eq!(json["code"], 1008);
        assert!(json.get("status").is_none());
    }
}
