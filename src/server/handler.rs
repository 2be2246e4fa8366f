//! The HTTP side of the token server: `/token` (GET and POST), `/healthz`, `/metrics`, the JSON
//! error shape, and the access log.
//!
//! A token request goes through, in order: the browser origin and (without authentication) the
//! `Host` check, authentication, the client's and the global rate limit, the requested lifetimes,
//! and only then the upstream. Every refusal is decided before the upstream is called, and every
//! `/token` answer says where the caller stands with its rate limit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::auth::{ANONYMOUS, Auth, Presented, presented};
use super::limit::{Decision, Limiter};
use super::metrics::{Denial, Metrics};
use super::policy::LifetimePolicy;
use super::upstream::{self, MintError, Upstream};
use crate::provider::time::format_rfc3339;
use crate::provider::{Token, TokenRequest};

pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Longest path the access log records (paths are the caller's text).
const MAX_LOGGED_PATH: usize = 96;

/// Everything the handlers share.
#[derive(Debug)]
pub struct ServerState {
    pub auth: Auth,
    pub policy: LifetimePolicy,
    pub client_limit: Option<Limiter<Arc<str>>>,
    pub global_limit: Option<Limiter<()>>,
    pub refusal_limit: Option<Limiter<IpAddr>>,
    /// Allowed browser origins, as browsers send them (`https://app.example.com`).
    pub origins: Vec<HeaderValue>,
    /// Without authentication: answer only requests addressed to a loopback name, so a web page
    /// cannot reach the server through DNS rebinding.
    pub loopback_hosts_only: bool,
    pub request_timeout: Duration,
    pub max_body: usize,
    pub upstream: Upstream,
    pub metrics: Metrics,
    pub public_metrics: bool,
}

/// What the access log says about a request beyond method, path, status and latency; handlers
/// attach it to their response.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub client: Option<Arc<str>>,
    pub outcome: Option<&'static str>,
    /// The minted token's fingerprint, never the token.
    pub token: Option<String>,
}

/// A refusal or failure, answered as `{"error": code, "message": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
    denial: Option<Denial>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            denial: None,
        }
    }

    fn denied(mut self, denial: Denial) -> Self {
        self.denial = Some(denial);
        self
    }

    fn retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(wait) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(Decision::ceil_secs(wait).max(1)),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"aai-live\""),
            );
        }
        let outcome = self.denial.map_or(self.code, Denial::as_str);
        response.extensions_mut().insert(Access {
            outcome: Some(outcome),
            ..Access::default()
        });
        response
    }
}

/// What one token request accumulates on its way, for the headers and the log.
#[derive(Default)]
struct Ctx {
    client: Option<Arc<str>>,
    rate: Option<Decision>,
}

/// `GET /token`, `POST /token`.
pub async fn token(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let mut ctx = Ctx::default();
    let timed = tokio::time::timeout(
        state.request_timeout,
        serve_token(&state, peer.ip(), &uri, &headers, query, body, &mut ctx),
    )
    .await;
    let result = timed.unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "no token within {}; try again",
                humantime::format_duration(state.request_timeout)
            ),
        )
        .denied(Denial::Timeout)
        .retry_after(Some(Duration::from_secs(1))))
    });
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            if let Some(denial) = error.denial {
                state.metrics.denied(denial);
            }
            error.into_response()
        }
    };
    if let Some(rate) = ctx.rate {
        let headers = response.headers_mut();
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(rate.limit));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(rate.remaining));
        headers.insert(
            X_RATELIMIT_RESET,
            HeaderValue::from(Decision::ceil_secs(rate.reset)),
        );
    }
    if let Some(access) = response.extensions_mut().get_mut::<Access>() {
        access.client = ctx.client;
    }
    response
}

async fn serve_token(
    state: &ServerState,
    peer: IpAddr,
    uri: &Uri,
    headers: &HeaderMap,
    query: Option<String>,
    body: Body,
    ctx: &mut Ctx,
) -> Result<Response, ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN)
        && !state.origins.contains(origin)
    {
        return Err(refuse(
            state,
            peer,
            ctx,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this origin may not ask for tokens (see --cors-origin)",
            )
            .denied(Denial::ForbiddenOrigin),
        ));
    }
    if state.loopback_hosts_only && !addressed_to_loopback(headers, uri) {
        return Err(refuse(
            state,
            peer,
            ctx,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "without authentication this server answers requests for localhost only",
            )
            .denied(Denial::ForbiddenHost),
        ));
    }

    let client = authenticate(state, peer, headers, ctx)?;
    ctx.client = Some(Arc::clone(&client));

    admit(state, &client, ctx)?;

    let params = read_params(state, headers, query, body).await?;
    let request = state
        .policy
        .resolve(
            params.get("expires_in_seconds"),
            params.get("max_session_duration_seconds"),
        )
        .map_err(|message| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
                .denied(Denial::InvalidRequest)
        })?;

    let token = match state.upstream.mint(&request, &client, &state.metrics).await {
        Ok(token) => token,
        Err(MintError::Busy) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many token requests under way; try again in a moment",
            )
            .denied(Denial::Busy)
            .retry_after(Some(Duration::from_secs(1))));
        }
        Err(MintError::Failed(error)) => {
            // The provider's message is scrubbed of the key and of anything token-like.
            tracing::warn!(client = %client, %error, "upstream token request failed");
            let (status, code, message, wait) = upstream::describe(&error);
            return Err(ApiError::new(status, code, message).retry_after(wait));
        }
    };

    state.metrics.minted(&client);
    Ok(minted(&client, &token, &request))
}

/// The 200 answer: the token and its lifetimes as the upstream granted them.
fn minted(client: &str, token: &Token, request: &TokenRequest) -> Response {
    let redeem_by = token.redeem_by.unwrap_or_else(|| {
        token.minted_at + Duration::from_secs(u64::from(request.expires_in_seconds))
    });
    let window = redeem_by
        .duration_since(token.minted_at)
        .map_or(request.expires_in_seconds.into(), |d| d.as_secs());
    let session = token
        .max_session_duration
        .map_or(request.max_session_duration_seconds.map(u64::from), |d| {
            Some(d.as_secs())
        });
    let fingerprint = token.fingerprint();
    tracing::debug!(client, token = %fingerprint, window, "handed out a token");
    let body = json!({
        "token": token.expose(),
        "expires_in_seconds": window,
        "expires_at": format_rfc3339(redeem_by),
        "max_session_duration_seconds": session,
    });
    let mut response = (StatusCode::OK, Json(body)).into_response();
    response.extensions_mut().insert(Access {
        client: None,
        outcome: Some("minted"),
        token: Some(fingerprint),
    });
    response
}

/// The caller's client name, or the refusal.
fn authenticate(
    state: &ServerState,
    peer: IpAddr,
    headers: &HeaderMap,
    ctx: &mut Ctx,
) -> Result<Arc<str>, ApiError> {
    let Auth::Bearer(credentials) = &state.auth else {
        return Ok(Arc::from(ANONYMOUS));
    };
    let message = match presented(headers) {
        Presented::Bearer(credential) => match credentials.verify(credential) {
            Some(client) => return Ok(client),
            None => "the credential is not valid",
        },
        Presented::Missing => "a credential is required: Authorization: Bearer <credential>",
        Presented::Malformed => "the Authorization header must be Bearer <credential>",
    };
    Err(refuse(
        state,
        peer,
        ctx,
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
            .denied(Denial::Unauthenticated),
    ))
}

/// A request refused before its client is known counts against its address; when the address
/// has used up its refusals, the answer becomes a 429.
fn refuse(state: &ServerState, peer: IpAddr, ctx: &mut Ctx, error: ApiError) -> ApiError {
    let Some(limiter) = &state.refusal_limit else {
        return error;
    };
    let decision = limiter.check(&peer);
    ctx.rate = Some(decision);
    if decision.allowed {
        return error;
    }
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "too many refused requests from this address (limit {}); retry in {} s",
            limiter.spec(),
            Decision::ceil_secs(decision.retry_after.unwrap_or_default())
        ),
    )
    .denied(Denial::RefusalRateLimit)
    .retry_after(decision.retry_after)
}

/// The client's budget first, then the server's. A request the global limit refuses has still
/// spent its client's budget: a client retrying into a saturated server is still retrying.
fn admit(state: &ServerState, client: &Arc<str>, ctx: &mut Ctx) -> Result<(), ApiError> {
    let limited = |who: String, spec: String, decision: Decision, denial: Denial| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "{who} is over its rate limit ({spec}); retry in {} s",
                Decision::ceil_secs(decision.retry_after.unwrap_or_default())
            ),
        )
        .denied(denial)
        .retry_after(decision.retry_after)
    };
    let mut shown: Option<Decision> = None;
    if let Some(limiter) = &state.client_limit {
        let decision = limiter.check(client);
        ctx.rate = Some(decision);
        if !decision.allowed {
            return Err(limited(
                format!("client {client}"),
                limiter.spec().to_string(),
                decision,
                Denial::ClientRateLimit,
            ));
        }
        shown = Some(decision);
    }
    if let Some(limiter) = &state.global_limit {
        let decision = limiter.check(&());
        if !decision.allowed {
            ctx.rate = Some(decision);
            return Err(limited(
                "this server".into(),
                limiter.spec().to_string(),
                decision,
                Denial::GlobalRateLimit,
            ));
        }
        // Report the budget closest to running out.
        if shown.is_none_or(|s| decision.remaining < s.remaining) {
            shown = Some(decision);
        }
    }
    ctx.rate = shown;
    Ok(())
}

/// The lifetimes asked for: query parameters, overridden by a JSON or form body.
async fn read_params(
    state: &ServerState,
    headers: &HeaderMap,
    query: Option<String>,
    body: Body,
) -> Result<Map<String, Value>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {} bytes", state.max_body),
        )
        .denied(Denial::PayloadTooLarge)
    };
    let invalid = |message: &str| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            .denied(Denial::InvalidRequest)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_body) {
        return Err(too_large());
    }
    let mut params: Map<String, Value> = form_pairs(query.as_deref().unwrap_or_default());
    // An over-long chunked body fails here; so does one that broke off, which is rare enough
    // to share the message.
    let bytes = axum::body::to_bytes(body, state.max_body)
        .await
        .map_err(|_| too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(params);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let from_body = if content_type.starts_with("application/x-www-form-urlencoded") {
        let text =
            std::str::from_utf8(&bytes).map_err(|_| invalid("the form body is not UTF-8"))?;
        form_pairs(text)
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(object)) => object,
            _ => {
                return Err(invalid(
                    "the body must be empty, a JSON object or a form \
                     ({\"expires_in_seconds\": N, \"max_session_duration_seconds\": M})",
                ));
            }
        }
    };
    params.extend(from_body);
    Ok(params)
}

fn form_pairs(text: &str) -> Map<String, Value> {
    url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

/// Whether the request names this host by a loopback name (`localhost`, 127.0.0.0/8, `[::1]`).
/// A request without a host (HTTP/1.0) is not from a browser, and passes.
fn addressed_to_loopback(headers: &HeaderMap, uri: &Uri) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()));
    let Some(host) = host else {
        return true;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':')
            .map_or(host.as_str(), |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `GET /healthz`: the process is up and serving. It does not call the upstream, so a load
/// balancer probing it costs no mint.
pub async fn healthz() -> Response {
    let mut response = Json(json!({ "status": "ok" })).into_response();
    response.extensions_mut().insert(Access {
        outcome: Some("ok"),
        ..Access::default()
    });
    response
}

/// `GET /metrics`: the Prometheus exposition, to loopback peers unless `public_metrics`.
pub async fn metrics(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !state.public_metrics && !peer.ip().is_loopback() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "metrics are served to loopback addresses only (see --public-metrics)",
        )
        .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(super::metrics::CONTENT_TYPE),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Unknown paths.
pub async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint: use /token, /healthz or /metrics",
    )
    .into_response()
}

/// Known paths, wrong method.
pub async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "use GET or POST for /token, GET for /healthz and /metrics",
    )
    .into_response()
}

/// The outermost layer: counts every response, times `/token`, forbids caching, and writes one
/// access log line (target `aai_live::server::access`) with the client's name, never a
/// credential or a token.
pub async fn access_log(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // The path only: a query is the caller's text and has no business in a log.
    let path: String = request.uri().path().chars().take(MAX_LOGGED_PATH).collect();
    let mut response = next.run(request).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.response(status);
    if path == "/token" {
        state.metrics.token_latency.observe(latency);
    }
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let access = response
        .extensions_mut()
        .remove::<Access>()
        .unwrap_or_default();
    tracing::info!(
        target: "aai_live::server::access",
        peer = %peer.ip(),
        %method,
        path,
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        client = access.client.as_deref().unwrap_or("-"),
        outcome = access.outcome.unwrap_or("-"),
        token = access.token.as_deref().unwrap_or("-"),
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        let check = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().expect("header"));
            addressed_to_loopback(&h, &Uri::from_static("/token"))
        };
        for ok in [
            "localhost",
            "LOCALHOST:8787",
            "127.0.0.1",
            "127.0.0.2:80",
            "[::1]:8787",
            "[::1]",
        ] {
            assert!(check(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8787",
            "10.0.0.1:80",
            "[2001:db8::1]:80",
            "localhost.evil.example",
        ] {
            assert!(!check(bad), "{bad}");
        }
        assert!(addressed_to_loopback(
            &HeaderMap::new(),
            &Uri::from_static("/token")
        ));
    }
}
