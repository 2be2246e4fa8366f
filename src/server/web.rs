//! The browser half of `serve`: the client module and its AudioWorklet, the close-code table and
//! the client's configuration for any page, and (with `server.web`) the page at `/`.
//!
//! Everything is embedded in the binary (`assets/web/`), so a deployment is still one file and
//! the client a page loads always matches the server that serves it. Static files carry an
//! `ETag` with `Cache-Control: no-cache`: browsers revalidate (a 304 costs a round trip and no
//! body), so an upgraded server is never paired with a stale client. The page gets a strict
//! Content-Security-Policy: its own scripts, styles and AudioWorklet, connections to itself and
//! to the streaming origin, nothing else (docs/browser.md).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use super::state::Access;
use crate::config::Config;
use crate::protocol::close;
use crate::protocol::params::{self, is_public_param};

/// The client module: `import { AaiLiveClient } from ".../aai-live-client.js"`.
pub const CLIENT_JS: &str = include_str!("../../assets/web/aai-live-client.js");
/// The session machine the client module imports (the Rust machine's twin).
pub const MACHINE_JS: &str = include_str!("../../assets/web/aai-live-machine.js");
/// The AudioWorklet the module loads (downmix, frame-stamped blocks).
pub const WORKLET_JS: &str = include_str!("../../assets/web/aai-live-worklet.js");
/// The page at `/` (with `server.web`).
pub const INDEX_HTML: &str = include_str!("../../assets/web/index.html");
pub const APP_JS: &str = include_str!("../../assets/web/app.js");
pub const APP_CSS: &str = include_str!("../../assets/web/app.css");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const JSON_TYPE: &str = "application/json";

/// Query parameters `/config.json` never hands to browsers: the client always sends 16 kHz
/// 16-bit PCM, whatever `[streaming]` says for the terminal client.
const CLIENT_DECIDES: [&str; 2] = ["sample_rate", "encoding"];

/// What browser clients are told in `/config.json`: where to stream, with which parameters,
/// and the session timings of `[session]`, so the server's configuration is the one place a
/// deployment sets them.
#[derive(Debug, Clone, PartialEq)]
pub struct BrowserSettings {
    /// The v3 WebSocket endpoint.
    pub streaming_url: Url,
    /// Query parameters of the connection, as the terminal client writes them; only those known
    /// to be harmless to show ([`is_public_param`]): anything else (a webhook's credential in
    /// `[streaming] extra`) stays on the server.
    pub params: Vec<(String, String)>,
    /// Parameters left out because they are not known to be public (logged at start).
    pub withheld: Vec<String>,
    /// The emulator's stream-offset hints (docs/emulator.md, "Scripts"): on only for a plain
    /// `ws://` endpoint on loopback, which can only be the emulator (the service is `wss://`).
    pub emulator_hints: bool,
    /// `[session]`, in the client's terms.
    pub session: Value,
}

impl BrowserSettings {
    pub fn from_config(config: &Config) -> Self {
        // `/config.json` is public: no user info, and no query (no client sends the
        // endpoint's own query: each builds its own). A secret among them is named among what
        // is withheld.
        let mut streaming_url = streaming_endpoint(config);
        let mut params = Vec::new();
        let mut withheld = Vec::new();
        // The URL itself may carry a secret (a password, a query credential of a proxy): never
        // published, named among what is withheld.
        if !streaming_url.username().is_empty() || streaming_url.password().is_some() {
            let _ = streaming_url.set_username("");
            let _ = streaming_url.set_password(None);
            withheld.push("streaming.url's user and password".to_owned());
        }
        withheld.extend(
            streaming_url
                .query_pairs()
                .filter(|(name, _)| !is_public_param(name))
                .map(|(name, _)| format!("streaming.url's {name}")),
        );
        streaming_url.set_query(None);
        for (name, value) in crate::session::params(config).query_pairs() {
            if CLIENT_DECIDES.contains(&name.as_str()) {
                continue;
            }
            if is_public_param(&name) {
                params.push((name, value));
            } else {
                withheld.push(name);
            }
        }
        let emulator_hints = streaming_url.scheme() == "ws" && params::is_loopback(&streaming_url);
        // The machine's policy as the terminal client runs it (one home: MachineConfig), plus
        // what the browser's I/O needs: stalls, the replay buffer, chunks, and the expiry rule
        // (which session ends are believed: src/protocol/expiry.rs).
        let options = crate::session::SupervisorOptions::from_config(config);
        let bounds = crate::protocol::expiry::Bounds {
            min: if emulator_hints {
                std::time::Duration::from_secs(1)
            } else {
                crate::protocol::expiry::Bounds::default().min
            },
            ..crate::protocol::expiry::Bounds::default()
        };
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        let mut session = crate::session::browser_rules(&options);
        session["expiry"] = json!({
            "min_ms": ms(bounds.min),
            "max_ms": ms(bounds.max),
            "fallback_ms": ms(crate::protocol::expiry::MIN_SESSION),
        });
        Self {
            streaming_url,
            params,
            withheld,
            emulator_hints,
            session,
        }
    }
}

/// Where browsers stream: `[streaming] url` when set; else beside `[provider.api_key]
/// token_url` when that is a v3 token endpoint (`http://127.0.0.1:8080/v3/token` → `ws://...
/// /v3/ws`: tokens are redeemed where they are minted, so `serve --upstream` pointed at the
/// emulator needs nothing more); else the region's endpoint.
pub fn streaming_endpoint(config: &Config) -> Url {
    if config.streaming.url.is_none()
        && let Some(url) = config
            .provider
            .api_key
            .token_url
            .as_ref()
            .and_then(ws_beside)
    {
        return url;
    }
    crate::session::endpoint(config)
}

/// The v3 WebSocket endpoint on the host of a v3 token endpoint.
fn ws_beside(token_url: &Url) -> Option<Url> {
    let scheme = match token_url.scheme() {
        "http" => "ws",
        "https" => "wss",
        _ => return None,
    };
    let path = token_url.path().strip_suffix("/v3/token")?;
    let mut url = token_url.clone();
    url.set_scheme(scheme).ok()?;
    url.set_path(&format!("{path}/v3/ws"));
    url.set_query(None);
    url.set_fragment(None);
    Some(url)
}

/// One embedded file with its validator.
#[derive(Debug, Clone)]
pub struct Asset {
    body: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: impl Into<Bytes>, content_type: &'static str) -> Self {
        let body = body.into();
        Self {
            etag: etag(&body),
            body,
            content_type,
        }
    }
}

/// A strong validator: the first 16 bytes of the content's SHA-256, quoted.
fn etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let hex = digest[..16]
        .iter()
        .fold(String::with_capacity(32), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

/// The browser routes' state, built once at start.
#[derive(Debug, Clone)]
pub struct Web {
    pub client: Asset,
    pub machine: Asset,
    pub worklet: Asset,
    pub index: Asset,
    pub app_js: Asset,
    pub app_css: Asset,
    /// `/close-codes.json`: [`close::table_json`].
    pub close_codes: Asset,
    /// `/config.json`.
    config_json: Bytes,
    /// The page's Content-Security-Policy.
    pub csp: HeaderValue,
    /// Whether `/` serves the page.
    pub page: bool,
}

/// `/config.json`: the streaming endpoint and parameters, the emulator hints, whether `/token`
/// wants a credential, and the session policy (`session`) — the browser client's only source of
/// settings.
pub fn config_json(settings: &BrowserSettings, auth_required: bool) -> Value {
    json!({
        "streaming_url": settings.streaming_url.as_str(),
        "params": settings
            .params
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect::<serde_json::Map<String, Value>>(),
        "emulator_hints": settings.emulator_hints,
        "auth_required": auth_required,
        "session": settings.session,
    })
}

impl Web {
    pub fn new(settings: &BrowserSettings, auth_required: bool, page: bool) -> Self {
        let config = config_json(settings, auth_required);
        Self {
            client: Asset::new(CLIENT_JS, JAVASCRIPT),
            machine: Asset::new(MACHINE_JS, JAVASCRIPT),
            worklet: Asset::new(WORKLET_JS, JAVASCRIPT),
            index: Asset::new(INDEX_HTML, "text/html; charset=utf-8"),
            app_js: Asset::new(APP_JS, JAVASCRIPT),
            app_css: Asset::new(APP_CSS, "text/css; charset=utf-8"),
            close_codes: Asset::new(close::table_json().to_string(), JSON_TYPE),
            config_json: Bytes::from(config.to_string()),
            csp: content_security_policy(&settings.streaming_url),
            page,
        }
    }
}

/// The page's policy: only this server's own scripts, styles and worklet; fetches to itself and
/// WebSockets to the streaming origin; no plugins, frames, forms elsewhere or base changes.
/// (An AudioWorklet's module is fetched under `script-src`; `worker-src` is listed for browsers
/// that check it too.)
pub fn content_security_policy(streaming: &Url) -> HeaderValue {
    let origin = streaming.origin().ascii_serialization();
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' {origin}; worker-src 'self'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| {
        // An origin is ASCII without controls; should it ever not be, no WebSocket at all.
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'",
        )
    })
}

/// An embedded file, or 304 when the caller has it already.
fn asset(asset: &Asset, request: &HeaderMap, outcome: &'static str) -> Response {
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/").as_bytes() == asset.etag.as_bytes()
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body.clone(),
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, asset.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response.extensions_mut().insert(Access {
        outcome: Some(outcome),
        ..Access::default()
    });
    response
}

/// `GET /aai-live-client.js`.
pub async fn client(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    asset(&web.client, &headers, "client")
}

/// `GET /aai-live-machine.js` (imported by the client module).
pub async fn machine(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    asset(&web.machine, &headers, "machine")
}

/// `GET /aai-live-worklet.js`.
pub async fn worklet(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    asset(&web.worklet, &headers, "worklet")
}

/// `GET /close-codes.json`: the classification rules of `protocol::close`, for clients in
/// other languages.
pub async fn close_codes(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    asset(&web.close_codes, &headers, "close_codes")
}

/// `GET /config.json`: the streaming endpoint, parameters and session timings for browser
/// clients, and whether `/token` needs a credential. Never cached: it follows the configuration.
pub async fn config(State(web): State<Arc<Web>>) -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
        web.config_json.clone(),
    )
        .into_response();
    response.extensions_mut().insert(Access {
        outcome: Some("config"),
        ..Access::default()
    });
    response
}

/// `GET /` with `server.web`: the page, under its Content-Security-Policy.
pub async fn index(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let mut response = asset(&web.index, &headers, "page");
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, web.csp.clone());
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /app.js` with `server.web`.
pub async fn app_js(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    asset(&web.app_js, &headers, "page")
}

/// `GET /app.css` with `server.web`.
pub async fn app_css(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    asset(&web.app_css, &headers, "page")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(edit: impl FnOnce(&mut Config)) -> Config {
        let mut c = Config::default();
        edit(&mut c);
        c
    }

    #[test]
    fn the_streaming_endpoint_follows_the_configuration() {
        let region = BrowserSettings::from_config(&Config::default());
        assert_eq!(
            region.streaming_url.as_str(),
            "wss://streaming.assemblyai.com/v3/ws"
        );
        assert!(!region.emulator_hints);
        let eu = config(|c| c.provider.api_key.region = crate::protocol::Region::Eu);
        assert_eq!(
            streaming_endpoint(&eu).as_str(),
            "wss://streaming.eu.assemblyai.com/v3/ws"
        );
        // `serve --upstream` pointed at the emulator: its WebSocket, and the hints.
        let emulator = config(|c| {
            c.provider.api_key.token_url = Url::parse("http://127.0.0.1:8080/v3/token").ok();
        });
        let s = BrowserSettings::from_config(&emulator);
        assert_eq!(s.streaming_url.as_str(), "ws://127.0.0.1:8080/v3/ws");
        assert!(s.emulator_hints);
        let tls = config(|c| {
            c.provider.api_key.token_url = Url::parse("https://proxy.example/aai/v3/token").ok();
        });
        assert_eq!(
            streaming_endpoint(&tls).as_str(),
            "wss://proxy.example/aai/v3/ws"
        );
        // A token URL of another shape says nothing about the WebSocket: the region's.
        let other = config(|c| {
            c.provider.api_key.token_url = Url::parse("https://tokens.example/mint").ok();
        });
        assert_eq!(
            streaming_endpoint(&other).as_str(),
            "wss://streaming.assemblyai.com/v3/ws"
        );
        // `[streaming] url` wins; a wss:// emulator gets no hints (only plain ws:// on loopback).
        let explicit = config(|c| {
            c.provider.api_key.token_url = Url::parse("http://127.0.0.1:8080/v3/token").ok();
            c.streaming.url = Url::parse("wss://127.0.0.1:9443/v3/ws").ok();
        });
        let s = BrowserSettings::from_config(&explicit);
        assert_eq!(s.streaming_url.as_str(), "wss://127.0.0.1:9443/v3/ws");
        assert!(!s.emulator_hints);
    }

    #[test]
    fn only_public_parameters_reach_browsers() {
        let c = config(|c| {
            c.streaming.params.format_turns = true;
            c.streaming.params.keyterms_prompt = vec!["aai-live".into()];
            c.streaming
                .params
                .extra
                .insert("webhook_auth_header_value".into(), "s3cret".into());
            c.streaming
                .params
                .extra
                .insert("mode".into(), "fast".into());
        });
        let s = BrowserSettings::from_config(&c);
        let names: Vec<&str> = s.params.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            names.contains(&"format_turns") && names.contains(&"mode"),
            "{names:?}"
        );
        assert!(!names.contains(&"sample_rate") && !names.contains(&"encoding"));
        assert!(
            s.params
                .contains(&("keyterms_prompt".into(), "[\"aai-live\"]".into())),
            "{:?}",
            s.params
        );
        assert_eq!(s.withheld, ["webhook_auth_header_value"]);
        // A secret in the streaming URL itself is withheld too, and the URL goes without its
        // query (each client builds its own).
        let mut with_secrets = Config::default();
        with_secrets.streaming.url = Some(
            "wss://user:pw@proxy.example/v3/ws?access_key=hunter2&format_turns=true"
                .parse()
                .expect("url"),
        );
        let hidden = BrowserSettings::from_config(&with_secrets);
        assert_eq!(hidden.streaming_url.as_str(), "wss://proxy.example/v3/ws");
        assert_eq!(
            hidden.withheld,
            [
                "streaming.url's user and password",
                "streaming.url's access_key"
            ]
        );
        let web = Web::new(&s, true, false);
        let text = String::from_utf8_lossy(&web.config_json).into_owned();
        assert!(!text.contains("s3cret"), "{text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["auth_required"], true);
        assert_eq!(v["params"]["format_turns"], "true");
        assert_eq!(v["session"]["rotation_lead_ms"], 30_000);
        assert_eq!(v["session"]["backoff"]["initial_ms"], 500);
    }

    #[test]
    fn the_policy_allows_the_streaming_origin_only() {
        let csp = content_security_policy(
            &Url::parse("wss://streaming.eu.assemblyai.com/v3/ws").expect("url"),
        );
        let csp = csp.to_str().expect("ascii");
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(
            csp.contains("connect-src 'self' wss://streaming.eu.assemblyai.com;"),
            "{csp}"
        );
        for directive in [
            "script-src 'self'",
            "style-src 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{directive} in {csp}");
        }
        let local = content_security_policy(&Url::parse("ws://127.0.0.1:8080/v3/ws").expect("url"));
        assert!(
            local
                .to_str()
                .expect("ascii")
                .contains("connect-src 'self' ws://127.0.0.1:8080;")
        );
    }

    #[test]
    fn assets_revalidate_by_etag() {
        let a = Asset::new("export const x = 1;\n", JAVASCRIPT);
        let plain = asset(&a, &HeaderMap::new(), "client");
        assert_eq!(plain.status(), StatusCode::OK);
        assert_eq!(plain.headers()[header::CACHE_CONTROL], "no-cache");
        let tag = plain.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag.clone());
        assert_eq!(asset(&a, &h, "client").status(), StatusCode::NOT_MODIFIED);
        let weak = format!("\"other\", W/{}", tag.to_str().expect("ascii"));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&weak).expect("header"),
        );
        assert_eq!(asset(&a, &h, "client").status(), StatusCode::NOT_MODIFIED);
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(asset(&a, &h, "client").status(), StatusCode::OK);
    }
}
