//! `GET /v3/token`: mints one-time temporary tokens the way the service does.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use super::faults::Fault;
use super::state::{DEFAULT_MAX_SESSION, State};
use super::tokens::Minted;

/// JSON error body in the service's shape.
pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub async fn mint(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let faults = state.lock().faults.take_token_faults();
    for fault in faults {
        match fault {
            Fault::TokenDelay { delay_ms } => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            Fault::TokenStatus {
                status,
                retry_after,
            } => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = error(
                    status,
                    status.canonical_reason().unwrap_or("Injected failure"),
                );
                if let Some(secs) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                tracing::debug!(%status, "token request failed on purpose (fault)");
                return response;
            }
            _ => {}
        }
    }

    // The raw key, no "Bearer" prefix (protocol.md §1.3).
    let Some(key) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|k| state.key_index(k.trim()))
    else {
        tracing::debug!("token request with a missing or unknown API key");
        return error(StatusCode::UNAUTHORIZED, "Invalid API key");
    };

    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let window = match get("expires_in_seconds").map(str::parse::<u64>) {
        Some(Ok(n)) if (1..=600).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "expires_in_seconds must be an integer between 1 and 600",
            );
        }
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "expires_in_seconds is required (an integer between 1 and 600)",
            );
        }
    };
    let max_session = match get("max_session_duration_seconds").map(str::parse::<u64>) {
        Some(Ok(n)) if (60..=10_800).contains(&n) => Duration::from_secs(n),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "max_session_duration_seconds must be an integer between 60 and 10800",
            );
        }
        None => DEFAULT_MAX_SESSION,
    };

    let token = new_token();
    state.add_token(
        &token,
        Minted {
            key,
            window: Duration::from_secs(window),
            max_session,
        },
    );
    tracing::debug!(
        token = %crate::secret::fingerprint(&token),
        window,
        max_session = max_session.as_secs(),
        "minted a temporary token"
    );
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "token": token, "expires_in_seconds": window })),
    )
        .into_response()
}

/// Opaque standard base64 like the service's (KMS-style `AQICAHg` prefix); 64 random bytes give
/// `==` padding and, almost always, `+` and `/`, so clients must percent-encode it.
fn new_token() -> String {
    let bytes: [u8; 64] = rand::random();
    format!(
        "AQICAHg{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_padded_base64_with_url_hostile_characters() {
        let tokens: Vec<String> = (0..50).map(|_| super::new_token()).collect();
        assert!(
            tokens
                .iter()
                .all(|t| t.ends_with("==") && t.starts_with("AQICAHg"))
        );
        assert!(tokens.iter().any(|t| t.contains('+')));
        assert!(tokens.iter().any(|t| t.contains('/')));
        let unique: std::collections::HashSet<_> = tokens.iter().collect();
        assert_eq!(unique.len(), tokens.len());
    }
}
