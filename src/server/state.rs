//! What the token server's handlers share: [`ServerState`] (the state of `/token`, `/healthz`,
//! `/readyz`, `/metrics` and the access log) and [`Access`], what a response tells the access
//! log. The API handlers ([`super::handler`]) and the browser routes ([`super::web`]) both answer
//! with an [`Access`]: they use this file and it uses neither, so the edges between the server's
//! files point one way. The browser routes have a state of their own ([`super::web::Web`]).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Uri};

use super::auth::Auth;
use super::host;
use super::metrics::Metrics;
use super::policy::LifetimePolicy;
use super::store::Limits;
use super::upstream::Upstream;
use crate::config::Cidr;

/// Everything the API handlers and the access log share.
#[derive(Debug)]
pub struct ServerState {
    pub auth: Auth,
    pub policy: LifetimePolicy,
    /// The per-client, global and refusal budgets, in memory or in the shared store.
    pub limits: Limits,
    /// Allowed browser origins, as browsers send them (`https://app.example.com`).
    pub origins: Vec<HeaderValue>,
    /// Without authentication: answer only requests addressed to a loopback name, so a web page
    /// cannot reach the server through DNS rebinding.
    pub loopback_hosts_only: bool,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Cidr>,
    pub request_timeout: Duration,
    /// Time a client has to send its whole body once the server reads it.
    pub body_timeout: Duration,
    pub max_body: usize,
    pub upstream: Upstream,
    pub metrics: Metrics,
    pub public_metrics: bool,
    /// The server listens with TLS: its own origin is `https://`.
    pub tls: bool,
    /// The origin browsers see behind a proxy (`server.public_origin`).
    pub public_origin: Option<HeaderValue>,
}

impl ServerState {
    /// The server's own origin as this request's browser would send it: `server.public_origin`,
    /// or the scheme it listens with and the request's `Host`. Only a `Host` that passes the
    /// checks counts: exactly `name[:port]`, one of them, agreeing with the URI, and (without
    /// authentication) a loopback name, so a page on a rebinding name (`evil.example` resolved
    /// to this server) never has this origin.
    pub fn own_origin(&self, headers: &HeaderMap, uri: &Uri) -> Option<HeaderValue> {
        if let Some(origin) = &self.public_origin {
            return Some(origin.clone());
        }
        if self.loopback_hosts_only && !host::addressed_to_loopback(headers, uri) {
            return None;
        }
        let scheme = if self.tls { "https" } else { "http" };
        host::request_origin(headers, uri, scheme)
            .and_then(|origin| HeaderValue::from_str(&origin).ok())
    }
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
