//! The `remote` provider: asks the user's own token server, the pattern of AssemblyAI's browser
//! example (an endpoint that mints with a key the client never sees), and what `aai-live serve`
//! offers.
//!
//! The request is `GET` or `POST` to the configured URL with `Cache-Control: no-store`, optional
//! extra headers, an optional `Authorization: Bearer` credential for that server (reusable, so
//! read once and kept) and, when `pass_lifetimes` is on, the lifetimes as query parameters. The
//! answer may be `{"token"}`, `{"token", "expires_in_seconds"}`, `{"token", "expires_at"}`, a
//! plain-text token, or `{"error", "message"?}`; anything else is reported with a short, masked
//! excerpt of the body.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue,
};
use secrecy::ExposeSecret;
use serde_json::Value;
use url::Url;

use super::http::{self, Hints, Origin};
use super::time::format_rfc3339;
use super::{ProviderError, TokenProvider, TokenRequest, contract};
use crate::config::{HttpMethod, ProviderConfig};
use crate::secret::{BearerCredential, SecretFileError, Token, read_secret_file};

const NAME: &str = "remote";

/// Everything the remote provider needs, already resolved (credential read).
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub url: Url,
    pub method: HttpMethod,
    /// Extra request headers, names as written.
    pub headers: BTreeMap<String, String>,
    /// The credential for the token server and where it came from (for hints).
    pub bearer: Option<(BearerCredential, String)>,
    /// Send `expires_in_seconds` / `max_session_duration_seconds` as query parameters.
    pub pass_lifetimes: bool,
    pub timeout: Duration,
}

/// Fetches tokens from the user's token server.
pub struct RemoteProvider {
    url: Url,
    method: reqwest::Method,
    headers: HeaderMap,
    bearer: Option<(BearerCredential, String)>,
    pass_lifetimes: bool,
    client: reqwest::Client,
    origin: Origin,
}

impl std::fmt::Debug for RemoteProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values are left out: a user may have put a credential there despite the warning.
        let header_names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("RemoteProvider")
            .field("endpoint", &self.origin.location)
            .field("headers", &header_names)
            .field("bearer", &self.bearer.as_ref().map(|(b, _)| b))
            .field("pass_lifetimes", &self.pass_lifetimes)
            .field("timeout", &self.origin.timeout)
            .finish_non_exhaustive()
    }
}

impl RemoteProvider {
    pub fn new(settings: RemoteSettings) -> Result<Self, ProviderError> {
        let location = http::display_url(&settings.url);
        let invalid = |detail: String| ProviderError::InvalidConfig {
            provider: NAME,
            location: location.clone(),
            status: None,
            detail,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                invalid(format!(
                    "provider.remote.headers: {name:?} is not a header name"
                ))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                invalid(format!(
                    "provider.remote.headers.{name}: the value cannot go in an HTTP header"
                ))
            })?;
            // Values may be credentials the user chose to keep here; keep them out of any dump.
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        if settings.bearer.is_some() && headers.contains_key(AUTHORIZATION) {
            return Err(invalid(
                "both provider.remote.headers.Authorization and a bearer credential are set; keep \
                 one (the bearer_env / bearer_file one keeps the secret out of the config)"
                    .into(),
            ));
        }
        if let Some((bearer, source)) = &settings.bearer
            && HeaderValue::from_str(&format!("Bearer {}", bearer.expose())).is_err()
        {
            return Err(ProviderError::InvalidConfig {
                provider: NAME,
                location: source.clone(),
                status: None,
                detail: "the bearer credential holds characters that cannot go in an HTTP header"
                    .into(),
            });
        }
        let method = match settings.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
        };
        Ok(Self {
            client: http::client(NAME, settings.timeout)?,
            origin: Origin {
                provider: NAME,
                location: format!("{method} {location}"),
                timeout: settings.timeout,
            },
            url: settings.url,
            method,
            headers,
            bearer: settings.bearer,
            pass_lifetimes: settings.pass_lifetimes,
        })
    }

    /// Build from `[provider]` and `[provider.remote]`; the bearer credential from `bearer_file`
    /// when set, else from the environment variable `bearer_env` when set.
    pub fn from_config(
        config: &ProviderConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ProviderError> {
        let section = &config.remote;
        let Some(url) = section.url.clone() else {
            return Err(ProviderError::NotConfigured {
                provider: NAME,
                detail: "provider.remote.url is not set; point it at your token server".into(),
            });
        };
        let bearer = match (&section.bearer_file, &section.bearer_env) {
            (Some(path), _) => Some((
                read_bearer_file(path)?,
                format!("the bearer file {}", path.display()),
            )),
            (None, Some(name)) => match env(name).map(|v| v.trim().to_owned()) {
                Some(v) if !v.is_empty() => Some((
                    BearerCredential::new(v),
                    format!("the environment variable {name}"),
                )),
                _ => {
                    return Err(ProviderError::NotConfigured {
                        provider: NAME,
                        detail: format!(
                            "provider.remote.bearer_env names {name}, which is not set or empty; \
                             export it with the credential for your token server"
                        ),
                    });
                }
            },
            (None, None) => None,
        };
        Self::new(RemoteSettings {
            url,
            method: section.method,
            headers: section.headers.clone(),
            bearer,
            pass_lifetimes: section.pass_lifetimes,
            timeout: config.timeout,
        })
    }

    async fn ask(&self, request: &TokenRequest) -> Result<Token, ProviderError> {
        let mut builder = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .header(ACCEPT, "application/json, text/plain;q=0.9")
            .header(CACHE_CONTROL, "no-store");
        if self.pass_lifetimes {
            let mut query = vec![("expires_in_seconds", request.expires_in_seconds.to_string())];
            if let Some(max) = request.max_session_duration_seconds {
                query.push(("max_session_duration_seconds", max.to_string()));
            }
            builder = builder.query(&query);
        }
        if let Some((bearer, _)) = &self.bearer {
            // Checked in `new`.
            if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", bearer.expose())) {
                value.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, value);
            }
        }
        if self.method == reqwest::Method::POST {
            // An explicit empty body sends `Content-Length: 0`, which some servers insist on.
            builder = builder.header(CONTENT_LENGTH, "0").body(Vec::<u8>::new());
        }
        let sent_at = SystemTime::now();
        tracing::debug!(endpoint = %self.origin.location, "asking the token server");
        let reply = http::exchange(&self.origin, builder).await?;
        let bearer = self.bearer.as_ref().map(|(b, _)| b.expose());
        let secrets: Vec<&str> = bearer.into_iter().collect();
        if !reply.status.is_success() {
            let rejected = match &self.bearer {
                Some((_, source)) => format!("check the credential in {source}"),
                None => "the server wants a credential: set provider.remote.bearer_env or \
                         provider.remote.bearer_file"
                    .into(),
            };
            let hints = Hints {
                bad_request: "check provider.remote.headers and provider.remote.pass_lifetimes \
                              against what the server expects",
                rejected: &rejected,
                not_found: "check provider.remote.url and provider.remote.method",
            };
            return Err(http::status_error(&self.origin, &reply, &hints, &secrets));
        }
        let status = reply.status.as_u16();
        let transient = |detail: String| ProviderError::Transient {
            provider: NAME,
            location: self.origin.location.clone(),
            status: Some(status),
            network: None,
            retry_after: None,
            detail: format!("HTTP {status} but {detail}"),
        };
        let doc = parse_answer(&reply.body, &secrets).map_err(transient)?;
        let mut token = doc
            .into_token(NAME, sent_at, SystemTime::now())
            .map_err(|e| transient(e.to_string()))?;
        if self.pass_lifetimes {
            // The server was asked for these lifetimes; take them when it does not say.
            token.redeem_by = token.redeem_by.or_else(|| {
                sent_at.checked_add(Duration::from_secs(u64::from(request.expires_in_seconds)))
            });
            token.max_session_duration = token.max_session_duration.or_else(|| {
                request
                    .max_session_duration_seconds
                    .map(|s| Duration::from_secs(u64::from(s)))
            });
        }
        if let Some(at) = token.redeem_by
            && token.is_lapsed(SystemTime::now())
        {
            return Err(transient(format!(
                "the token's redemption window ended at {} already (is the server's clock \
                 right?)",
                format_rfc3339(at)
            )));
        }
        token.server_date = reply
            .headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(super::time::parse_http_date);
        tracing::debug!(token = %token.fingerprint(), "got a token from the token server");
        Ok(token)
    }
}

impl TokenProvider for RemoteProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn source(&self) -> String {
        http::display_url(&self.url)
    }

    fn fetch<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<Token, ProviderError>> {
        self.ask(request).boxed()
    }
}

impl RemoteProvider {
    /// The `streaming_url` the token server publishes in its `config.json` (as `aai-live serve`
    /// does), resolved beside the token URL so that a server behind a path prefix works. No
    /// credential goes with it (the document is public). `Ok(None)`: the server has no such
    /// document (an error status, not JSON, no field): not an `aai-live serve`.
    pub async fn published_streaming_url(&self) -> Result<Option<String>, ProviderError> {
        let Ok(url) = self.url.join("config.json") else {
            return Ok(None);
        };
        let origin = Origin {
            location: format!("GET {}", http::display_url(&url)),
            ..self.origin.clone()
        };
        let request = self
            .client
            .get(url)
            .header(CACHE_CONTROL, "no-store")
            .header(ACCEPT, "application/json");
        let reply = http::exchange(&origin, request).await?;
        if !reply.status.is_success() {
            return Ok(None);
        }
        Ok(serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("streaming_url")?.as_str().map(str::to_owned)))
    }
}

/// Read a 2xx body: a token document, a JSON string, a plain-text token, or an error object.
/// The `Err` text is the rest of a message (after "HTTP 200 but ") and quotes the body masked.
pub fn parse_answer(body: &[u8], secrets: &[&str]) -> Result<contract::TokenDocument, String> {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the body is empty".into());
    }
    let quoted = || http::quote_answer(body, secrets);
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Object(object)) => {
            let has_token = object.get("token").is_some_and(|t| !t.is_null());
            if !has_token && object.get("error").is_some_and(|e| !e.is_null()) {
                let said = http::server_text(body, secrets).unwrap_or_default();
                return Err(format!("the server reported an error: \"{said}\""));
            }
            contract::parse_object(&object).map_err(|e| format!("{e}: {}", quoted()))
        }
        Ok(Value::String(s)) => contract::parse_plain(&s)
            .ok_or_else(|| format!("the JSON string is not a token: {}", quoted())),
        // A bare number is also valid JSON, but as a body it can only be a plain token.
        Ok(Value::Number(_)) | Err(_) => contract::parse_plain(trimmed).ok_or_else(|| {
            format!(
                "the body is neither a JSON token document nor a plain-text token: {}",
                quoted()
            )
        }),
        Ok(other) => Err(format!(
            "the body is JSON but not an object with a \"token\": {}",
            crate::untrusted::json_shape(&other)
        )),
    }
}

fn read_bearer_file(path: &Path) -> Result<BearerCredential, ProviderError> {
    // The permission warning is dropped here: `config::load` already gives it for bearer_file.
    match read_secret_file(path) {
        Ok((secret, _warning)) => Ok(BearerCredential::new(secret.expose_secret())),
        Err(SecretFileError::Empty { path }) => Err(ProviderError::NotConfigured {
            provider: NAME,
            detail: format!("the bearer file {path} (provider.remote.bearer_file) is empty"),
        }),
        Err(SecretFileError::Io { path, source }) => Err(ProviderError::InvalidConfig {
            provider: NAME,
            location: path,
            status: None,
            detail: format!("cannot read the bearer file (provider.remote.bearer_file): {source}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "AQICAHgabcdefghijklmnopqrstuvwxyz0123456789+/==";

    #[test]
    fn every_answer_shape() {
        let ok = |body: &str| parse_answer(body.as_bytes(), &[]).expect(body);
        assert_eq!(ok(&format!(r#"{{"token":"{TOKEN}"}}"#)).secret, TOKEN);
        assert_eq!(
            ok(&format!(r#"{{"token":"{TOKEN}","expires_in_seconds":60}}"#)).expires_in,
            Some(Duration::from_secs(60))
        );
        assert!(
            ok(&format!(
                r#"{{"token":"{TOKEN}","expires_at":"2030-01-01T00:00:00Z"}}"#
            ))
            .expires_at
            .is_some()
        );
        assert!(
            ok(&format!(r#"{{"token":"{TOKEN}","expires_at":1893456000}}"#))
                .expires_at
                .is_some()
        );
        assert_eq!(ok(&format!("{TOKEN}\n")).secret, TOKEN);
        assert_eq!(ok(&format!("\"{TOKEN}\"")).secret, TOKEN);
        assert_eq!(ok("12345678901234567890").secret, "12345678901234567890");
    }

    #[test]
    fn bad_answers_quote_a_masked_excerpt() {
        let err = |body: &str| parse_answer(body.as_bytes(), &[]).expect_err(body);
        assert!(err("").contains("empty"));
        let e = err(r#"{"error":"quota","message":"try tomorrow"}"#);
        assert!(e.contains("quota: try tomorrow"), "{e}");
        let e = err(&format!("<html><p>Your token: {TOKEN}</p></html>"));
        assert!(e.contains("neither"), "{e}");
        assert!(!e.contains("AQICAHg"), "{e}");
        let e = err(&format!(r#"{{"access_token":"{TOKEN}"}}"#));
        assert!(e.contains("no \"token\" field"), "{e}");
        assert!(!e.contains("AQICAHg"), "{e}");
        assert!(err("OK").contains("neither"));
        let e = err("[1,2]");
        assert!(e.contains("not an object"), "{e}");
        let e = err(r#"{"token": 12}"#);
        assert!(e.contains("a number"), "{e}");
    }
}
