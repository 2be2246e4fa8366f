//! Token providers: where one-time streaming tokens come from.
//!
//! A [`TokenProvider`] fetches one fresh [`Token`] per call and nothing more: it never caches a
//! token for reuse (AssemblyAI redeems each token once) and never decides *when* to fetch. The
//! session supervisor decides that, through the pre-mint scheduler ([`premint::PreMinter`]).
//!
//! Three providers ship, chosen by `provider.kind` and built by [`build`]:
//! - [`api_key::ApiKeyProvider`] mints with the user's API key (`GET /v3/token`);
//! - [`remote::RemoteProvider`] asks the user's own token server;
//! - [`file::FileProvider`] reads tokens another process writes to a file.
//!
//! Every failure is a [`ProviderError`] whose class ([`ProviderErrorClass`]) tells the caller
//! what to do (back off, honour `Retry-After`, give up and tell the user). Messages name the
//! provider, the URL or path, the HTTP status and the server's own words, scrubbed of every
//! secret in play. `docs/providers.md` documents the providers and how to write a new one.

pub mod api_key;
pub mod contract;
pub mod file;
pub(crate) mod http;
pub mod premint;
pub mod remote;
pub mod time;
pub mod token_cli;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::{ProviderConfig, ProviderKind};
use crate::diagnosis::{Diagnosis, Network};
pub use crate::secret::Token;
pub use premint::{PreMintOptions, PreMinter, TokenState};

/// A source of fresh one-time streaming tokens.
///
/// Implementations are cheap to share (`Arc<dyn TokenProvider>`) and safe to call concurrently;
/// two concurrent fetches must yield two distinct tokens. Each fetch is bounded by the
/// provider's timeout. See `docs/providers.md`, "Writing a provider".
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// The provider's name as in `provider.kind`: "api-key", "remote", "file", ...
    fn name(&self) -> &'static str;

    /// Where tokens come from (a URL without credentials or query, or a path), for messages and
    /// the dashboard. Never a secret.
    fn source(&self) -> String;

    /// Obtain one fresh token that has never been handed out before.
    fn fetch<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<Token, ProviderError>>;
}

/// The lifetimes asked for each token. Providers that cannot choose them (a token file, a
/// server that ignores them) report the lifetimes they actually got on the [`Token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRequest {
    /// Redemption window: the token must open a session within this many seconds (1-600).
    pub expires_in_seconds: u32,
    /// Maximum duration of the session the token opens (60-10800); `None` leaves the service
    /// default (3 hours).
    pub max_session_duration_seconds: Option<u32>,
}

impl TokenRequest {
    /// The lifetimes configured in `[provider]`.
    pub fn from_config(config: &ProviderConfig) -> Self {
        Self {
            expires_in_seconds: config.expires_in_seconds,
            max_session_duration_seconds: Some(config.max_session_duration_seconds),
        }
    }
}

/// What a failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderErrorClass {
    /// A credential or setting is missing. Fatal: the user must set it.
    NotConfigured,
    /// A setting is wrong (URL, method, lifetimes, file type). Fatal: the user must fix it.
    InvalidConfig,
    /// Network error, 5xx, timeout, malformed answer. Back off and try again.
    Transient,
    /// HTTP 429. Wait at least `retry_after` when given, then try again.
    RateLimited,
    /// HTTP 401/403: the credential is bad. Fatal: retrying cannot help.
    Rejected,
    /// The token file holds no fresh token yet. Try again later.
    Exhausted,
    /// A task of aai-live's own died (a bug). Fatal: retrying would only hide it.
    Internal,
}

impl ProviderErrorClass {
    /// Retrying cannot help: the user has to change something.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Self::NotConfigured | Self::InvalidConfig | Self::Rejected | Self::Internal
        )
    }

    /// Short lowercase label for the dashboard and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotConfigured => "not configured",
            Self::InvalidConfig => "invalid configuration",
            Self::Transient => "transient",
            Self::RateLimited => "rate limited",
            Self::Rejected => "rejected",
            Self::Exhausted => "exhausted",
            Self::Internal => "internal error",
        }
    }
}

impl fmt::Display for ProviderErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed fetch, classified. Every text field was built by us from scrubbed parts, so
/// `Display` and `Debug` never hold a secret. `Clone` so the pre-minter can hand one failure to
/// every caller that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider} token provider is not configured: {detail}")]
    NotConfigured {
        provider: &'static str,
        /// What is missing and how to provide it.
        detail: String,
    },
    #[error("{provider} token provider ({location}): invalid configuration: {detail}")]
    InvalidConfig {
        provider: &'static str,
        /// The URL or path concerned, or the config key.
        location: String,
        /// The HTTP status that showed it (a 400, a 404, a redirect), when one did.
        status: Option<u16>,
        /// What is wrong and what to fix.
        detail: String,
    },
    #[error("{provider} token provider ({location}): {detail}")]
    Transient {
        provider: &'static str,
        location: String,
        status: Option<u16>,
        /// The kind of transport failure, when it was one (decided from the library's error).
        network: Option<Network>,
        /// A `Retry-After` the server sent with a 5xx, honoured like a rate limit's.
        retry_after: Option<Duration>,
        detail: String,
    },
    #[error("{provider} token provider ({location}): rate limited: {detail}")]
    RateLimited {
        provider: &'static str,
        location: String,
        status: u16,
        retry_after: Option<Duration>,
        detail: String,
    },
    #[error("{provider} token provider ({location}): credential rejected: {detail}")]
    Rejected {
        provider: &'static str,
        location: String,
        status: Option<u16>,
        detail: String,
    },
    #[error("{provider} token provider ({location}): {detail} (a bug in aai-live)")]
    Internal {
        provider: &'static str,
        location: String,
        detail: String,
    },
    #[error("{provider} token provider ({location}): no fresh token after waiting {}: {detail}",
        humantime::format_duration(*.waited))]
    Exhausted {
        provider: &'static str,
        location: String,
        waited: Duration,
        /// The file was not there at all (else it held no fresh token).
        missing: bool,
        detail: String,
    },
}

impl ProviderError {
    pub fn class(&self) -> ProviderErrorClass {
        match self {
            Self::NotConfigured { .. } => ProviderErrorClass::NotConfigured,
            Self::InvalidConfig { .. } => ProviderErrorClass::InvalidConfig,
            Self::Transient { .. } => ProviderErrorClass::Transient,
            Self::RateLimited { .. } => ProviderErrorClass::RateLimited,
            Self::Rejected { .. } => ProviderErrorClass::Rejected,
            Self::Exhausted { .. } => ProviderErrorClass::Exhausted,
            Self::Internal { .. } => ProviderErrorClass::Internal,
        }
    }

    /// How long the server asked us to wait before the next attempt, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Transient { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Retrying cannot help: the user has to change something.
    pub fn is_fatal(&self) -> bool {
        self.class().is_fatal()
    }

    /// The HTTP status of the failed answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Transient { status, .. }
            | Self::Rejected { status, .. }
            | Self::InvalidConfig { status, .. } => *status,
            Self::RateLimited { status, .. } => Some(*status),
            Self::NotConfigured { .. } | Self::Internal { .. } | Self::Exhausted { .. } => None,
        }
    }

    /// The kind of transport failure, when it was one.
    pub fn network(&self) -> Option<Network> {
        match self {
            Self::Transient { network, .. } => *network,
            _ => None,
        }
    }

    /// The troubleshooting section, from the typed facts: the status (a token server's are
    /// `aai-live serve`'s, not AssemblyAI's), the network kind, the class.
    pub fn diagnosis(&self) -> Diagnosis {
        let remote = self.provider() == "remote";
        if let Some(status) = self.status() {
            return Diagnosis::from_token_status(status, remote);
        }
        match self {
            Self::NotConfigured { .. } => Diagnosis::SecretMissing,
            Self::InvalidConfig { .. } => Diagnosis::ConfigInvalid,
            Self::Exhausted { missing: true, .. } => Diagnosis::TokenFileMissing,
            Self::Exhausted { missing: false, .. } => Diagnosis::TokenFileStale,
            Self::Rejected { .. } if remote => Diagnosis::ServeUnauthorized,
            Self::Rejected { .. } => Diagnosis::TokenUnauthorized,
            Self::RateLimited { .. } if remote => Diagnosis::ServeRateLimited,
            Self::RateLimited { .. } => Diagnosis::TokenRateLimited,
            Self::Transient {
                network: Some(network),
                ..
            } => Diagnosis::from_network(*network),
            // A token file that cannot be read.
            Self::Transient { provider, .. } if *provider == "file" => Diagnosis::TokenFileMissing,
            Self::Transient { .. } => Diagnosis::TcpFailure,
            Self::Internal { .. } => Diagnosis::LocalFailure,
        }
    }

    /// The provider that failed.
    pub fn provider(&self) -> &'static str {
        match self {
            Self::NotConfigured { provider, .. }
            | Self::InvalidConfig { provider, .. }
            | Self::Transient { provider, .. }
            | Self::RateLimited { provider, .. }
            | Self::Rejected { provider, .. }
            | Self::Exhausted { provider, .. }
            | Self::Internal { provider, .. } => provider,
        }
    }
}

/// A provider built from the configuration, with what the user should hear about before the
/// program starts (e.g. a token file readable by others). Warnings about secret *files* named in
/// the configuration are already given by `config::load`, so they are not repeated here.
#[derive(Debug)]
pub struct Built {
    pub provider: Arc<dyn TokenProvider>,
    pub warnings: Vec<String>,
}

/// Build the provider chosen by `provider.kind`, reading credentials from the process
/// environment and the configured files. Warnings go to the log; use [`build_with`] to show
/// them to the user instead.
pub fn build(config: &ProviderConfig) -> Result<Arc<dyn TokenProvider>, ProviderError> {
    let built = build_with(config, &process_env)?;
    for warning in &built.warnings {
        tracing::warn!("{warning}");
    }
    Ok(built.provider)
}

/// [`build`] with the environment given as a function (tests, embedding programs), returning
/// the warnings rather than logging them.
pub fn build_with(
    config: &ProviderConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Built, ProviderError> {
    let (provider, warnings): (Arc<dyn TokenProvider>, Vec<String>) = match config.kind {
        ProviderKind::ApiKey => (
            Arc::new(api_key::ApiKeyProvider::from_config(config, env)?),
            Vec::new(),
        ),
        ProviderKind::Remote => (
            Arc::new(remote::RemoteProvider::from_config(config, env)?),
            Vec::new(),
        ),
        ProviderKind::File => {
            let provider = file::FileProvider::from_config(config)?;
            let warnings = provider.permission_warning().into_iter().collect();
            (Arc::new(provider), warnings)
        }
    };
    tracing::debug!(
        provider = provider.name(),
        source = %provider.source(),
        "token provider ready"
    );
    Ok(Built { provider, warnings })
}

/// The process environment, as [`build_with`] takes it. A value that is not UTF-8 is passed on lossily: it then fails the
/// header check with a clear message instead of reading as "not set".
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_drive_fatality_and_retry_after() {
        let limited = ProviderError::RateLimited {
            provider: "api-key",
            location: "http://127.0.0.1:1/v3/token".into(),
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
            detail: "HTTP 429".into(),
        };
        assert_eq!(limited.class(), ProviderErrorClass::RateLimited);
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        assert!(!limited.is_fatal());
        assert_eq!(limited.status(), Some(429));
        let rejected = ProviderError::Rejected {
            provider: "remote",
            location: "x".into(),
            status: Some(401),
            detail: "no".into(),
        };
        assert!(rejected.is_fatal());
        assert_eq!(rejected.provider(), "remote");
        let exhausted = ProviderError::Exhausted {
            provider: "file",
            location: "/tmp/t".into(),
            waited: Duration::from_secs(30),
            missing: false,
            detail: "the file still holds a used token".into(),
        };
        assert!(!exhausted.is_fatal());
        assert_eq!(
            exhausted.to_string(),
            "file token provider (/tmp/t): no fresh token after waiting 30s: the file still holds a used token"
        );
    }
}
