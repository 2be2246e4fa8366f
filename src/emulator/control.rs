//! The emulator's own API: inject faults, inspect sessions and the limits' counters.
//!
//! - `GET /emulator/faults` lists the active rules; `POST` adds one rule or a list (JSON
//!   `{"kind": "close", "code": 3005, "at_ms": 2000, "count": 1}`, or `{"spec": "close:3005@2s"}`);
//!   `DELETE` clears them.
//! - `GET /emulator/sessions` lists the open sessions and the last N finished ones.
//! - `GET /emulator/stats` reports connections, session records and tokens against their caps.
//!
//! It changes what the emulator does to every client, so it answers only callers that cannot be
//! a web page or another machine ([`guard`]): a loopback peer (unless `--control-from-anywhere`),
//! a `Host` that names this machine by a loopback name or, with that switch, an IP address (a
//! DNS-rebinding page sends its own host name), and no `Origin` header at all (browsers send one
//! on cross-site POSTs and on fetches; curl and the test clients do not).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::faults::FaultRule;
use super::state::State;
use super::token::error;

/// Control requests are small JSON documents.
const BODY_LIMIT: usize = 64 * 1024;

/// The control routes, behind [`guard`].
pub fn routes(state: Arc<State>) -> Router<Arc<State>> {
    Router::new()
        .route(
            "/emulator/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/emulator/sessions", get(sessions))
        .route("/emulator/stats", get(stats))
        .route_layer(axum::middleware::from_fn_with_state(state, guard))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Refuse (403) a request with an `Origin`, from a peer off loopback (unless allowed), or for a
/// `Host` that is not this machine's; see the module docs.
pub async fn guard(AxState(state): AxState<Arc<State>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let anywhere = state.config.control_from_anywhere;
    if let Some(reason) = refusal(request.headers(), request.uri(), peer, anywhere) {
        tracing::debug!(?peer, reason, "control request refused");
        return error(StatusCode::FORBIDDEN, reason);
    }
    next.run(request).await
}

/// Why a control request is refused, or `None`.
fn refusal(
    headers: &HeaderMap,
    uri: &Uri,
    peer: Option<SocketAddr>,
    anywhere: bool,
) -> Option<&'static str> {
    if headers.contains_key(header::ORIGIN) {
        return Some(
            "the control API refuses requests with an Origin header (a web page may not drive \
             the emulator)",
        );
    }
    // Without the peer address (never the case behind the listener) nothing is known: refuse.
    let local_peer = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
    if !local_peer && !anywhere {
        return Some(
            "the control API answers loopback peers only (start the emulator with \
             --control-from-anywhere to allow others)",
        );
    }
    // No host at all (HTTP/1.0) passes: not a browser, which always sends one.
    for value in headers.get_all(header::HOST) {
        let acceptable = value
            .to_str()
            .ok()
            .and_then(host_name)
            .is_some_and(|host| host_allowed(&host, anywhere));
        if !acceptable {
            return Some("the control API answers requests for this machine's host only");
        }
    }
    if let Some(authority) = uri.authority()
        && !host_name(authority.as_str()).is_some_and(|host| host_allowed(&host, anywhere))
    {
        return Some("the control API answers requests for this machine's host only");
    }
    None
}

/// What a `Host` value names, read strictly: `name[:port]` or `[v6][:port]`, with a name of
/// letters, digits, `.` and `-` only. Anything else (user info such as `localhost:80@evil`, a
/// bare IPv6 address, spaces, an empty name or port) is `None`, so the check fails closed.
fn host_name(value: &str) -> Option<Host> {
    let port_ok = |port: &str| {
        !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
    };
    if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        return inside
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| Host::Ip(IpAddr::V6(ip)));
    }
    let (name, port) = match value.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (value, None),
    };
    if port.is_some_and(|p| !port_ok(p)) {
        return None;
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return None;
    }
    Some(match name.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(name.to_ascii_lowercase()),
    })
}

#[derive(Debug, PartialEq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Loopback names always; any IP address too when other machines may call (an address cannot be
/// a rebinding attacker's name). Other names never: they are what a rebinding page sends.
fn host_allowed(host: &Host, anywhere: bool) -> bool {
    match host {
        Host::Name(name) => name == "localhost" || name == "localhost.",
        Host::Ip(ip) => anywhere || ip.to_canonical().is_loopback(),
    }
}

/// A rule as JSON, or in the flag syntax (`{"spec": "..."}`), with errors naming the rule (from
/// 1) and the field.
fn parse_rules(body: &str) -> Result<Vec<FaultRule>, String> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("invalid fault JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        one => vec![one],
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let n = i + 1;
            match item.as_object().and_then(|o| o.get("spec")) {
                Some(spec) => {
                    let spec = spec
                        .as_str()
                        .ok_or_else(|| format!("fault {n}: field \"spec\": expected a string"))?;
                    if item.as_object().is_some_and(|o| o.len() > 1) {
                        return Err(format!(
                            "fault {n}: a \"spec\" rule has no other fields (append xN for a count)"
                        ));
                    }
                    spec.parse::<FaultRule>()
                        .map_err(|e| format!("fault {n}: field \"spec\": {e}"))
                }
                None => FaultRule::from_json(item).map_err(|e| format!("fault {n}: {e}")),
            }
        })
        .collect()
}

pub async fn list_faults(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.lock().faults.list()).into_response()
}

pub async fn add_faults(AxState(state): AxState<Arc<State>>, body: String) -> Response {
    let rules = match parse_rules(&body) {
        Ok(rules) => rules,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let mut inner = state.lock();
    if let Err(full) = inner.faults.add(&rules) {
        return error(StatusCode::CONFLICT, &full.to_string());
    }
    for rule in &rules {
        tracing::debug!(fault = %rule.fault, count = rule.count, "fault added");
    }
    (
        StatusCode::CREATED,
        Json(json!({ "added": rules.len(), "rules": inner.faults.list() })),
    )
        .into_response()
}

pub async fn clear_faults(AxState(state): AxState<Arc<State>>) -> Response {
    state.lock().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

/// Snapshot under the lock (cheap: bounded records), serialise without it.
pub async fn sessions(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.sessions()).into_response()
}

pub async fn stats(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.stats()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_bytes(v).expect("value"),
            );
        }
        h
    }

    fn local() -> Option<SocketAddr> {
        "127.0.0.1:5000".parse().ok()
    }

    fn lan() -> Option<SocketAddr> {
        "192.168.1.20:5000".parse().ok()
    }

    #[test]
    fn hosts_are_read_strictly() {
        for (value, expected) in [
            ("localhost", Some(Host::Name("localhost".into()))),
            ("LOCALHOST:8080", Some(Host::Name("localhost".into()))),
            (
                "127.0.0.1:80",
                Some(Host::Ip("127.0.0.1".parse().expect("ip"))),
            ),
            ("[::1]:80", Some(Host::Ip("::1".parse().expect("ip")))),
            ("[::1]", Some(Host::Ip("::1".parse().expect("ip")))),
            ("localhost:80@evil", None),
            ("evil@localhost", None),
            ("localhost:", None),
            ("localhost:80:90", None),
            ("::1", None),
            ("[::1]x", None),
            ("[::1]:", None),
            ("", None),
            ("local host", None),
            ("localhost:123456", None),
        ] {
            assert_eq!(host_name(value), expected, "{value}");
        }
    }

    #[test]
    fn who_may_call_the_control_api() {
        let uri = Uri::from_static("/emulator/faults");
        let ok = |h: &HeaderMap, peer, anywhere| refusal(h, &uri, peer, anywhere).is_none();
        let host = |v: &[u8]| headers(&[("host", v)]);
        assert!(ok(&host(b"127.0.0.1:8080"), local(), false));
        assert!(ok(&host(b"localhost:8080"), local(), false));
        assert!(ok(&host(b"[::1]:8080"), local(), false));
        assert!(ok(&HeaderMap::new(), local(), false), "HTTP/1.0, no host");
        // Origin: refused whatever it says.
        let h = headers(&[
            ("host", b"127.0.0.1:8080"),
            ("origin", b"http://127.0.0.1:8080"),
        ]);
        assert!(!ok(&h, local(), false));
        assert!(!ok(&h, local(), true));
        // Peers off loopback, unless allowed; then an IP host is fine, a name still is not.
        assert!(!ok(&host(b"192.168.1.5:8080"), lan(), false));
        assert!(!ok(&host(b"127.0.0.1:8080"), None, false), "unknown peer");
        assert!(ok(&host(b"192.168.1.5:8080"), lan(), true));
        assert!(!ok(&host(b"evil.example:8080"), lan(), true));
        // Rebinding names, tricks and bytes that are not UTF-8 fail closed.
        for bad in [
            &b"evil.example"[..],
            b"localhost:80@evil",
            b"localhost.evil.example",
            b"10.0.0.1:80",
            b"\xff\xfe",
            b"localhost\xc3\xa9",
        ] {
            assert!(!ok(&host(bad), local(), false), "{bad:?}");
        }
        // Two Host headers: each must pass.
        let two = headers(&[("host", b"localhost"), ("host", b"evil.example")]);
        assert!(!ok(&two, local(), false));
        // An absolute-form request's authority counts too.
        let absolute = Uri::from_static("http://evil.example/emulator/faults");
        assert!(refusal(&host(b"localhost"), &absolute, local(), false).is_some());
    }

    #[test]
    fn rules_errors_name_the_rule_and_field() {
        let e = parse_rules(r#"[{"spec":"drop@1s"},{"kind":"close","code":1005}]"#)
            .expect_err("invalid code");
        assert!(
            e.contains("fault 2") && e.contains("\"code\"") && e.contains("1005"),
            "{e}"
        );
        let e = parse_rules(r#"{"spec":"close:65535@1s"}"#).expect_err("invalid code");
        assert!(e.contains("spec") && e.contains("65535"), "{e}");
        let e = parse_rules(r#"{"spec":"drop@1s","count":3}"#).expect_err("mixed");
        assert!(e.contains("fault 1"), "{e}");
        assert_eq!(
            parse_rules(r#"[{"spec":"drop@1sx3"},{"kind":"stop-reading","at_ms":5}]"#)
                .expect("valid")
                .len(),
            2
        );
    }

    proptest! {
        #[test]
        fn host_parser_never_panics(value in ".{0,40}") {
            let _ = host_name(&value);
        }

        #[test]
        fn guard_never_panics_on_arbitrary_host_bytes(
            bytes in proptest::collection::vec(0x20_u8..=0xff, 0..40),
            anywhere in any::<bool>(),
        ) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                h.insert(header::HOST, value);
                let _ = refusal(&h, &Uri::from_static("/"), local(), anywhere);
            }
        }

        #[test]
        fn rules_parser_never_panics(body in ".{0,200}") {
            let _ = parse_rules(&body);
        }

        #[test]
        fn rules_parser_never_panics_on_json_like_bodies(
            body in r#"[\[\]{}",:0-9a-z_ -]{0,120}"#,
        ) {
            let _ = parse_rules(&body);
        }
    }
}
