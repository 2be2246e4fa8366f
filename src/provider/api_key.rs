//! The `api-key` provider: mints tokens with the user's AssemblyAI API key,
//! `GET {token_url}?expires_in_seconds=N[&max_session_duration_seconds=M]` with the raw key in
//! `Authorization` (no `Bearer`), as the service and both official SDKs do.
//!
//! The key comes from an environment variable or a key file, read once when the provider is
//! built; it is never accepted on the command line. It travels only in that one header, marked
//! sensitive, and is scrubbed from anything the server says back.

use std::path::Path;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use reqwest::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, HeaderValue};
use secrecy::ExposeSecret;
use url::Url;

use super::http::{self, Hints, Origin};
use super::{ProviderError, TokenProvider, TokenRequest, contract};
use crate::config::ProviderConfig;
use crate::secret::{ApiKey, SecretFileError, Token, read_secret_file};

const NAME: &str = "api-key";

/// Mints one-time tokens at AssemblyAI's token endpoint (or the emulator's).
pub struct ApiKeyProvider {
    key: ApiKey,
    /// Where the key came from, for the "check your key" hint: never the key.
    key_source: String,
    endpoint: Url,
    client: reqwest::Client,
    origin: Origin,
}

impl std::fmt::Debug for ApiKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyProvider")
            .field("key", &self.key)
            .field("key_source", &self.key_source)
            .field("endpoint", &self.origin.location)
            .field("timeout", &self.origin.timeout)
            .finish_non_exhaustive()
    }
}

impl ApiKeyProvider {
    /// A provider minting at `endpoint` with `key`. `key_source` says where the key came from
    /// (e.g. "the environment variable ASSEMBLYAI_API_KEY") for error hints.
    pub fn new(
        key: ApiKey,
        key_source: impl Into<String>,
        endpoint: Url,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let key_source = key_source.into();
        let location = http::display_url(&endpoint);
        if key.expose().is_empty() {
            return Err(ProviderError::NotConfigured {
                provider: NAME,
                detail: format!("{key_source} is empty"),
            });
        }
        if HeaderValue::from_str(key.expose()).is_err() {
            return Err(ProviderError::InvalidConfig {
                provider: NAME,
                location: key_source,
                status: None,
                detail: "the API key holds characters that cannot go in an HTTP header (a stray \
                         quote or line break?)"
                    .into(),
            });
        }
        Ok(Self {
            client: http::client(NAME, timeout)?,
            origin: Origin {
                provider: NAME,
                location: format!("GET {location}"),
                timeout,
            },
            key,
            key_source,
            endpoint,
        })
    }

    /// Build from `[provider]` and `[provider.api_key]`: the key from `key_file` when set, else
    /// from the environment variable `key_env`; the endpoint from `token_url`, else the region.
    pub fn from_config(
        config: &ProviderConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ProviderError> {
        let section = &config.api_key;
        let endpoint = section
            .token_url
            .clone()
            .unwrap_or_else(|| section.region.token_url());
        let (key, key_source) = if let Some(path) = &section.key_file {
            (
                read_key_file(path)?,
                format!("the key file {}", path.display()),
            )
        } else {
            let name = &section.key_env;
            let source = format!("the environment variable {name}");
            let value = env(name).map(|v| v.trim().to_owned());
            let problem = match &value {
                Some(v) if !v.is_empty() => None,
                Some(_) => Some("is empty; put your AssemblyAI API key in it"),
                None => Some("is not set; export it with your AssemblyAI API key"),
            };
            if let Some(problem) = problem {
                return Err(ProviderError::NotConfigured {
                    provider: NAME,
                    detail: format!(
                        "{source} {problem}, or set provider.api_key.key_file (or choose another \
                         provider.kind)"
                    ),
                });
            }
            (ApiKey::new(value.unwrap_or_default()), source)
        };
        Self::new(key, key_source, endpoint, config.timeout)
    }

    fn hints(&self) -> (String, String, String) {
        (
            "the service refused the lifetimes asked for: provider.expires_in_seconds must be \
             1-600 and provider.max_session_duration_seconds 60-10800"
                .into(),
            format!("check the API key in {}", self.key_source),
            "is this the token endpoint? check provider.api_key.token_url or region".into(),
        )
    }

    async fn mint(&self, request: &TokenRequest) -> Result<Token, ProviderError> {
        let mut query = vec![("expires_in_seconds", request.expires_in_seconds.to_string())];
        if let Some(max) = request.max_session_duration_seconds {
            query.push(("max_session_duration_seconds", max.to_string()));
        }
        // Checked in `new`, so this cannot fail; mapped anyway rather than unwrapped.
        let mut auth =
            HeaderValue::from_str(self.key.expose()).map_err(|_| ProviderError::InvalidConfig {
                provider: NAME,
                location: self.key_source.clone(),
                status: None,
                detail: "the API key cannot go in an HTTP header".into(),
            })?;
        auth.set_sensitive(true);
        // The window starts when the service mints, after we send: counting from before the
        // request errs on the safe side.
        let sent_at = SystemTime::now();
        tracing::debug!(endpoint = %self.origin.location, "minting a token");
        let reply = http::exchange(
            &self.origin,
            self.client
                .get(self.endpoint.clone())
                .query(&query)
                .header(AUTHORIZATION, auth)
                .header(ACCEPT, "application/json")
                .header(CACHE_CONTROL, "no-store"),
        )
        .await?;
        let secrets = [self.key.expose()];
        if !reply.status.is_success() {
            let (bad_request, rejected, not_found) = self.hints();
            let hints = Hints {
                bad_request: &bad_request,
                rejected: &rejected,
                not_found: &not_found,
            };
            return Err(http::status_error(&self.origin, &reply, &hints, &secrets));
        }
        let malformed = |what: String| ProviderError::Transient {
            provider: NAME,
            location: self.origin.location.clone(),
            status: Some(reply.status.as_u16()),
            network: None,
            retry_after: None,
            detail: format!(
                "HTTP {} but {what}: {}",
                reply.status.as_u16(),
                http::quote_answer(&reply.body, &secrets)
            ),
        };
        let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(&reply.body) else {
            return Err(malformed(
                "the body is not a JSON object {\"token\", \"expires_in_seconds\"}".into(),
            ));
        };
        let doc = contract::parse_object(&object).map_err(|e| malformed(e.to_string()))?;
        if doc.expires_in.is_none() {
            return Err(malformed(
                "the JSON has no \"expires_in_seconds\" field".into(),
            ));
        }
        let mut token = doc
            .into_token(NAME, sent_at, SystemTime::now())
            .map_err(|e| malformed(e.to_string()))?;
        if token.max_session_duration.is_none() {
            token.max_session_duration = request
                .max_session_duration_seconds
                .map(|s| Duration::from_secs(u64::from(s)));
        }
        token.server_date = reply
            .headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(super::time::parse_http_date);
        tracing::debug!(token = %token.fingerprint(), "minted a token");
        Ok(token)
    }
}

impl TokenProvider for ApiKeyProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn source(&self) -> String {
        http::display_url(&self.endpoint)
    }

    fn fetch<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<Token, ProviderError>> {
        self.mint(request).boxed()
    }
}

fn read_key_file(path: &Path) -> Result<ApiKey, ProviderError> {
    // The permission warning is dropped here: `config::load` already gives it for key_file.
    match read_secret_file(path) {
        Ok((secret, _warning)) => Ok(ApiKey::new(secret.expose_secret())),
        Err(SecretFileError::Empty { path }) => Err(ProviderError::NotConfigured {
            provider: NAME,
            detail: format!("the key file {path} (provider.api_key.key_file) is empty"),
        }),
        Err(SecretFileError::Io { path, source }) => Err(ProviderError::InvalidConfig {
            provider: NAME,
            location: path,
            status: None,
            detail: format!("cannot read the key file (provider.api_key.key_file): {source}"),
        }),
    }
}
