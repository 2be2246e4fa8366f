//! The HTTP side of the token server: `/token` (GET and POST), `/healthz`, `/readyz`, `/metrics`,
//! the JSON error shape, and the access log.
//!
//! A token request goes through, in order: the browser origin and (without authentication) the
//! `Host` check, authentication, the client's and the global rate limit, the requested lifetimes,
//! and only then the upstream. Every refusal is decided before the upstream is called, and every
//! `/token` answer says where the caller stands with its rate limit. The caller's address (for
//! the refusal limit, the log and the `/metrics` check) is the peer's, or the one a trusted
//! proxy's `X-Forwarded-For` names ([`super::forwarded`]); the access log layer works it out
//! once and hands it to the handlers as a [`ClientAddr`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::{ANONYMOUS, Auth, Presented, presented};
use super::forwarded;
use super::host;
use super::limit::{Decision, RateSpec};
use super::metrics::Denial;
use super::state::{Access, ServerState};
use super::store::{Admission, StoreUnavailable};
use super::upstream::{self, MintError};
use crate::provider::time::format_rfc3339;
use crate::provider::{Token, TokenRequest};

pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Longest path the access log records (paths are the caller's text).
const MAX_LOGGED_PATH: usize = 96;

/// The caller's address: the peer's, or the client a trusted proxy forwarded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

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

    /// A 403 (`forbidden`): who or where the request comes from may not have this answer.
    fn forbidden(message: &'static str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// The `closed` failure policy's answer while the limits store cannot be reached.
    fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the rate-limit store cannot be reached; try again shortly",
        )
        .denied(Denial::LimitsStoreUnavailable)
        .retry_after(Some(Duration::from_secs(1)))
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
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The body was not read to its end: the connection cannot carry another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
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
    /// Reading the body: a deadline passing now is the client's slowness, not the server's.
    reading_body: bool,
}

/// `GET /token`, `POST /token`.
pub async fn token(
    State(state): State<Arc<ServerState>>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let mut ctx = Ctx::default();
    let timed = tokio::time::timeout(
        state.request_timeout,
        serve_token(&state, addr, &uri, &headers, query, body, &mut ctx),
    )
    .await;
    let result = timed.unwrap_or_else(|_| {
        if ctx.reading_body {
            return Err(body_too_slow(state.request_timeout));
        }
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
    if !fetch_metadata_allowed(headers) {
        let error = ApiError::forbidden(
            "a browser may ask for tokens only with fetch() in cors or same-origin mode \
             (Sec-Fetch-Mode, Sec-Fetch-Dest): not from an image, a form, a frame or a link",
        )
        .denied(Denial::ForbiddenOrigin);
        return Err(refuse(state, peer, ctx, error).await);
    }
    if !host::names_a_host(headers, uri) {
        let error = ApiError::forbidden("the request names no host (Host header)")
            .denied(Denial::ForbiddenHost);
        return Err(refuse(state, peer, ctx, error).await);
    }
    let own = state.own_origin(headers, uri);
    if !origin_allowed(headers, &state.origins, own.as_ref()) {
        let error = ApiError::forbidden("this origin may not ask for tokens (see --cors-origin)")
            .denied(Denial::ForbiddenOrigin);
        return Err(refuse(state, peer, ctx, error).await);
    }
    if state.loopback_hosts_only && !host::addressed_to_loopback(headers, uri) {
        let error = ApiError::forbidden(
            "without authentication this server answers requests for localhost only",
        )
        .denied(Denial::ForbiddenHost);
        return Err(refuse(state, peer, ctx, error).await);
    }

    let client = authenticate(state, peer, headers, ctx).await?;
    ctx.client = Some(Arc::clone(&client));

    admit(state, &client, ctx).await?;

    ctx.reading_body = true;
    let params = read_params(state, headers, query, body).await?;
    ctx.reading_body = false;
    let request = state
        .policy
        .resolve(
            params.expires_in_seconds.as_ref(),
            params.max_session_duration_seconds.as_ref(),
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

/// Whether the request's `Origin`, if it has one, is listed or is the server's own (`own`, see
/// [`ServerState::own_origin`]); compared as bytes: browsers send origins normalised as the list
/// is. Several `Origin` headers are refused.
pub fn origin_allowed(
    headers: &HeaderMap,
    origins: &[HeaderValue],
    own: Option<&HeaderValue>,
) -> bool {
    let mut sent = headers.get_all(header::ORIGIN).iter();
    match (sent.next(), sent.next()) {
        (None, _) => true,
        (Some(origin), None) => origins.contains(origin) || own == Some(origin),
        (Some(_), Some(_)) => false,
    }
}

/// Whether the browser's fetch metadata, if any, allows a token request. A page of another site
/// can send GETs that carry no `Origin` (`<img src>`, `fetch(url, {mode: "no-cors"})`, a form,
/// a frame, a link), so the `Origin` rule never sees them; browsers mark every request with
/// `Sec-Fetch-*`. Refused: a `Sec-Fetch-Mode` other than `cors` or `same-origin`, a
/// `Sec-Fetch-Dest` other than `empty`, and a `Sec-Fetch-Site` other than `same-origin` or
/// `none` without an `Origin` (a cross-site request in cors mode carries `Origin`, which
/// [`origin_allowed`] checks, so the listed origins keep working). A header given twice, or not
/// text, is refused. Without any `Sec-Fetch-*` (curl, the `remote` provider, an older browser)
/// the request passes. Browsers send these headers to https and loopback origins only.
pub fn fetch_metadata_allowed(headers: &HeaderMap) -> bool {
    fn one<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ()> {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(value), None) => value.to_str().map(Some).map_err(|_| ()),
            (Some(_), Some(_)) => Err(()),
        }
    }
    let (Ok(mode), Ok(dest), Ok(site)) = (
        one(headers, "sec-fetch-mode"),
        one(headers, "sec-fetch-dest"),
        one(headers, "sec-fetch-site"),
    ) else {
        return false;
    };
    let mode_ok = mode.is_none_or(|m| matches!(m, "cors" | "same-origin"));
    let dest_ok = dest.is_none_or(|d| d == "empty");
    let site_ok = site.is_none_or(|s| matches!(s, "same-origin" | "none"))
        || headers.contains_key(header::ORIGIN);
    mode_ok && dest_ok && site_ok
}

/// The caller's client name, or the refusal.
async fn authenticate(
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
    )
    .await)
}

/// A request refused before its client is known counts against its address; when the address
/// has used up its refusals, the answer becomes a 429 (and while the limits store is down under
/// the `closed` policy, a 503 like every other token request).
async fn refuse(state: &ServerState, peer: IpAddr, ctx: &mut Ctx, error: ApiError) -> ApiError {
    let decision = match state.limits.refusal(peer).await {
        Ok(Some(decision)) => decision,
        Ok(None) => return error,
        Err(StoreUnavailable) => return ApiError::store_unavailable(),
    };
    ctx.rate = Some(decision);
    if decision.allowed {
        return error;
    }
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "too many refused requests from this address (limit {}); retry in {} s",
            shown(state.limits.refusal_spec()),
            Decision::ceil_secs(decision.retry_after.unwrap_or_default())
        ),
    )
    .denied(Denial::RefusalRateLimit)
    .retry_after(decision.retry_after)
}

fn shown(spec: Option<RateSpec>) -> String {
    spec.map_or_else(|| "off".to_owned(), |s| s.to_string())
}

/// The client's budget first, then the server's. A request the global limit refuses has still
/// spent its client's budget: a client retrying into a saturated server is still retrying.
async fn admit(state: &ServerState, client: &Arc<str>, ctx: &mut Ctx) -> Result<(), ApiError> {
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
    let Admission {
        client: mine,
        global,
    } = state
        .limits
        .admit(client)
        .await
        .map_err(|StoreUnavailable| ApiError::store_unavailable())?;
    if let Some(decision) = mine {
        ctx.rate = Some(decision);
        if !decision.allowed {
            return Err(limited(
                format!("client {client}"),
                shown(state.limits.client_spec()),
                decision,
                Denial::ClientRateLimit,
            ));
        }
    }
    if let Some(decision) = global {
        if !decision.allowed {
            ctx.rate = Some(decision);
            return Err(limited(
                "this server".into(),
                shown(state.limits.global_spec()),
                decision,
                Denial::GlobalRateLimit,
            ));
        }
        // Report the budget closest to running out.
        if mine.is_none_or(|s| decision.remaining < s.remaining) {
            ctx.rate = Some(decision);
        }
    }
    Ok(())
}

/// The lifetimes asked for: query parameters, overridden by a JSON or form body.
async fn read_params(
    state: &ServerState,
    headers: &HeaderMap,
    query: Option<String>,
    body: Body,
) -> Result<Params, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {} bytes", state.max_body),
        )
        .denied(Denial::PayloadTooLarge)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_body) {
        return Err(too_large());
    }
    // An over-long chunked body fails here; so does one that broke off, which is rare enough
    // to share the message.
    let bytes = tokio::time::timeout(
        state.body_timeout,
        axum::body::to_bytes(body, state.max_body),
    )
    .await
    .map_err(|_| body_too_slow(state.body_timeout))?
    .map_err(|_| too_large())?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    parse_params(content_type, query.as_deref().unwrap_or_default(), &bytes).map_err(|message| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            .denied(Denial::InvalidRequest)
    })
}

/// 408: the client did not send its body in time.
fn body_too_slow(limit: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body did not arrive within {}",
            humantime::format_duration(limit)
        ),
    )
    .denied(Denial::BodyTimeout)
}

/// The two lifetimes a caller may ask for, as written (checked by the policy).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    pub expires_in_seconds: Option<Value>,
    pub max_session_duration_seconds: Option<Value>,
}

impl Params {
    fn take(&mut self, pairs: impl IntoIterator<Item = (String, Value)>) {
        for (key, value) in pairs {
            match key.as_str() {
                "expires_in_seconds" => self.expires_in_seconds = Some(value),
                "max_session_duration_seconds" => self.max_session_duration_seconds = Some(value),
                // Other names are ignored, as an older server ignores newer parameters.
                _ => {}
            }
        }
    }
}

/// The lifetimes of a token request: the query's, overridden by a body that is empty (or
/// blank), a JSON object, or a form (`Content-Type: application/x-www-form-urlencoded`). Only the
/// two known names are kept, so what a request holds costs nothing beyond its (capped) size.
/// `Err` is the message for a 400.
pub fn parse_params(content_type: &[u8], query: &str, body: &[u8]) -> Result<Params, &'static str> {
    let mut params = Params::default();
    params.take(form_pairs(query.as_bytes()));
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(params);
    }
    let form = content_type
        .get(..33)
        .is_some_and(|t| t.eq_ignore_ascii_case(b"application/x-www-form-urlencoded"));
    if form {
        if std::str::from_utf8(body).is_err() {
            return Err("the form body is not UTF-8");
        }
        params.take(form_pairs(body));
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(object)) => params.take(object),
            _ => {
                return Err("the body must be empty, a JSON object or a form \
                            ({\"expires_in_seconds\": N, \"max_session_duration_seconds\": M})");
            }
        }
    }
    Ok(params)
}

fn form_pairs(text: &[u8]) -> impl Iterator<Item = (String, Value)> + '_ {
    url::form_urlencoded::parse(text).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
}

/// `GET /healthz`: the process is up and serving (liveness). It calls neither the upstream nor
/// the limits store, so a load balancer probing it every second costs nothing.
pub async fn healthz() -> Response {
    let mut response = Json(json!({ "status": "ok" })).into_response();
    response.extensions_mut().insert(Access {
        outcome: Some("ok"),
        ..Access::default()
    });
    response
}

/// `GET /readyz`: whether this replica should get traffic (readiness), with the limits store's
/// state as last seen (requests and the store's watcher keep it current; the probe itself makes
/// no round trip). 503 while a shared store is down under the `closed` policy.
pub async fn readyz(State(state): State<Arc<ServerState>>) -> Response {
    let ready = state.limits.ready();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "limits_store": state.limits.describe(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(Access {
        outcome: Some(if ready { "ready" } else { "not_ready" }),
        ..Access::default()
    });
    response
}

/// `GET /metrics`: the Prometheus exposition. Unless `public_metrics`, only to a loopback caller
/// that addressed the request to a loopback name (a page of another site, resolved to 127.0.0.1,
/// must not read who the clients are).
pub async fn metrics(
    State(state): State<Arc<ServerState>>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let local = addr.to_canonical().is_loopback() && host::addressed_to_loopback(&headers, &uri);
    if !(state.public_metrics || local) {
        return ApiError::forbidden(
            "metrics are served to loopback addresses and names only (see --public-metrics)",
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
        "no such endpoint: use /token, /healthz, /readyz, /metrics, /config.json, \
         /close-codes.json, /aai-live-client.js or /aai-live-machine.js",
    )
    .into_response()
}

/// Known paths, wrong method.
pub async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "use GET or POST for /token, GET for everything else",
    )
    .into_response()
}

/// The outermost layer: counts every response, times `/token`, forbids caching, and writes one
/// access log line (target `aai_live::server::access`) with the client's name, never a
/// credential or a token.
pub async fn access_log(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let addr = forwarded::client_addr(peer.ip(), request.headers(), &state.trusted_proxies);
    request.extensions_mut().insert(ClientAddr(addr));
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
    // `via`: the proxy the request came through, when the client address is a forwarded one.
    let via = (addr != peer.ip().to_canonical()).then(|| peer.ip().to_string());
    tracing::info!(
        target: "aai_live::server::access",
        peer = %addr,
        via = via.as_deref().unwrap_or("-"),
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
    use crate::server::policy::LifetimePolicy;
    use proptest::prelude::*;

    const FORM: &[u8] = b"application/x-www-form-urlencoded";

    #[test]
    fn params_from_query_json_and_form() {
        let p = parse_params(b"", "expires_in_seconds=30&other=1", b"").expect("query");
        assert_eq!(p.expires_in_seconds, Some(json!("30")));
        let p = parse_params(
            b"application/json",
            "expires_in_seconds=30",
            br#"{"expires_in_seconds": 20, "max_session_duration_seconds": 600, "x": [1]}"#,
        )
        .expect("json");
        assert_eq!(
            (p.expires_in_seconds, p.max_session_duration_seconds),
            (Some(json!(20)), Some(json!(600)))
        );
        let p = parse_params(
            b"Application/X-WWW-Form-Urlencoded; charset=utf-8",
            "",
            b"expires_in_seconds=25",
        )
        .expect("form");
        assert_eq!(p.expires_in_seconds, Some(json!("25")));
        assert_eq!(
            parse_params(b"", "", b" \n").expect("blank"),
            Params::default()
        );
        for (content_type, body) in [
            (&b""[..], &b"[1]"[..]),
            (b"", b"expires_in_seconds: 5"),
            (FORM, b"\xff"),
        ] {
            assert!(parse_params(content_type, "", body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn fetch_metadata_lets_only_cors_fetches_through() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.append(*name, HeaderValue::from_static(value));
            }
            fetch_metadata_allowed(&h)
        };
        // curl, the remote provider: nothing to check.
        assert!(with(&[]));
        // fetch() from the page itself, and from a listed origin (Origin is checked next).
        assert!(with(&[
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(with(&[
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://app.example.com")
        ]));
        assert!(with(&[("sec-fetch-mode", "same-origin")]));
        // <img src>, fetch no-cors, a navigation, a form, a frame; a cross-site request
        // without Origin; a header twice.
        for refused in [
            &[
                ("sec-fetch-mode", "no-cors"),
                ("sec-fetch-dest", "image"),
                ("sec-fetch-site", "cross-site"),
            ][..],
            &[
                ("sec-fetch-mode", "no-cors"),
                ("sec-fetch-dest", "empty"),
                ("sec-fetch-site", "cross-site"),
            ],
            &[
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
            ],
            &[("sec-fetch-dest", "iframe")],
            &[("sec-fetch-mode", "websocket")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[("sec-fetch-mode", "cors"), ("sec-fetch-mode", "cors")],
        ] {
            assert!(!with(refused), "{refused:?}");
        }
    }

    #[test]
    fn origins_are_compared_exactly_and_only_once() {
        let listed = [HeaderValue::from_static("https://app.example.com")];
        let own = HeaderValue::from_static("http://127.0.0.1:8787");
        let mut h = HeaderMap::new();
        assert!(
            origin_allowed(&h, &listed, None),
            "no Origin: not a browser"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example.com"),
        );
        assert!(origin_allowed(&h, &listed, None));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example.com.evil"),
        );
        assert!(!origin_allowed(&h, &listed, Some(&own)));
        h.insert(header::ORIGIN, own.clone());
        assert!(
            origin_allowed(&h, &[], Some(&own)),
            "the server's own origin"
        );
        assert!(
            !origin_allowed(&h, &listed, None),
            "not own without a good Host"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example.com"),
        );
        h.append(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example.com"),
        );
        assert!(!origin_allowed(&h, &listed, None), "two Origin headers");
    }

    proptest! {
        /// Whatever a caller sends, parsing never panics, keeps only the two known names, and a
        /// refusal says what a valid body looks like.
        #[test]
        fn token_params_never_panic(
            content_type in proptest::collection::vec(any::<u8>(), 0..60),
            query in "\\PC{0,200}",
            body in proptest::collection::vec(any::<u8>(), 0..300),
            form in any::<bool>(),
        ) {
            let content_type = if form { FORM.to_vec() } else { content_type };
            match parse_params(&content_type, &query, &body) {
                Ok(_) => {}
                Err(message) => prop_assert!(
                    message.contains("expires_in_seconds") || message.contains("UTF-8"),
                    "{}", message
                ),
            }
        }

        /// A valid request round-trips to the lifetimes asked for (within the policy), and a
        /// value the policy refuses is reported with the field's name.
        #[test]
        fn asked_lifetimes_round_trip(window in 5_u32..=60, session in 60_u32..=10_800, json in any::<bool>(), bad in "[a-z]{1,8}") {
            let policy = LifetimePolicy::default();
            let params = if json {
                let body = json!({"expires_in_seconds": window, "max_session_duration_seconds": session});
                parse_params(b"application/json", "", body.to_string().as_bytes())
            } else {
                let query = format!("expires_in_seconds={window}&max_session_duration_seconds={session}");
                parse_params(b"", &query, b"")
            }
            .expect("valid");
            let request = policy
                .resolve(params.expires_in_seconds.as_ref(), params.max_session_duration_seconds.as_ref())
                .expect("within the policy");
            prop_assert_eq!(request.expires_in_seconds, window);
            prop_assert_eq!(request.max_session_duration_seconds, Some(session));
            let params = parse_params(b"", &format!("max_session_duration_seconds={bad}"), b"").expect("query");
            let e = policy
                .resolve(None, params.max_session_duration_seconds.as_ref())
                .expect_err("not a number");
            prop_assert!(e.contains("max_session_duration_seconds"), "{}", e);
        }

        #[test]
        fn origins_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let listed = [HeaderValue::from_static("https://app.example.com")];
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                h.insert(header::ORIGIN, value.clone());
                prop_assert_eq!(origin_allowed(&h, &listed, None), value == listed[0]);
            }
        }

        /// Whatever bytes the fetch-metadata headers hold, the rule never panics and lets a
        /// request through only with the values a cors fetch sends.
        #[test]
        fn fetch_metadata_never_panics(
            mode in proptest::collection::vec(any::<u8>(), 0..24),
            dest in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            let mut h = HeaderMap::new();
            let mode = HeaderValue::from_bytes(&mode).ok();
            let dest = HeaderValue::from_bytes(&dest).ok();
            if let Some(v) = &mode {
                h.insert("sec-fetch-mode", v.clone());
            }
            if let Some(v) = &dest {
                h.insert("sec-fetch-dest", v.clone());
            }
            let allowed = fetch_metadata_allowed(&h);
            let mode_ok = mode.as_ref().is_none_or(|m| m == "cors" || m == "same-origin");
            let dest_ok = dest.as_ref().is_none_or(|d| d == "empty");
            prop_assert_eq!(allowed, mode_ok && dest_ok);
        }
    }
}
