//! The feed's HTTP routes and the rules every request passes first: a loopback `Host` (on a
//! loopback address: no DNS-rebinding page can read the feed), the token server's
//! fetch-metadata rule, the `Origin` rule (none, the feed's own, or a listed one), and the
//! token when there is one. Query strings and `Last-Event-ID` are untrusted: parsed strictly,
//! bounded, refused with a clear message.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};

use super::Shared;
use super::hub::{self, Cursor, Filter, Out};
use crate::config::TranscriptFormat;
use crate::server::Credentials;
use crate::server::auth::{Presented, presented};
use crate::server::handler::{fetch_metadata_allowed, origin_allowed};
use crate::server::host;

/// What the routes share.
#[derive(Clone, Debug)]
pub struct FeedState {
    pub shared: Arc<Shared>,
    /// The token consumers must present, when there is one.
    pub token: Option<Credentials>,
    /// Listed origins (CORS, WebSocket upgrades).
    pub origins: Vec<HeaderValue>,
    /// The feed listens on a loopback address: requests must name a loopback host.
    pub loopback: bool,
}

/// The overlay page and its files (assets/feed/): plain ES modules, no external asset.
const OVERLAY_HTML: &str = include_str!("../../assets/feed/overlay.html");
const OVERLAY_JS: &str = include_str!("../../assets/feed/overlay.js");
const OVERLAY_CSS: &str = include_str!("../../assets/feed/overlay.css");

/// The overlay's policy: its own script and style, `/events` of this feed, nothing else; no
/// framing (OBS and a second screen open it as a page).
const OVERLAY_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                           connect-src 'self'; img-src 'none'; base-uri 'none'; \
                           form-action 'none'; frame-ancestors 'none'";

pub fn router(state: FeedState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/events", get(events))
        .route("/ws", get(ws))
        .route(
            "/transcript.txt",
            get(|State(s): State<FeedState>| async move { transcript(&s, TranscriptFormat::Txt) }),
        )
        .route(
            "/transcript.srt",
            get(|State(s): State<FeedState>| async move { transcript(&s, TranscriptFormat::Srt) }),
        )
        .route(
            "/transcript.vtt",
            get(|State(s): State<FeedState>| async move { transcript(&s, TranscriptFormat::Vtt) }),
        )
        .route(
            "/overlay",
            get(|| async { page(OVERLAY_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/overlay.js",
            get(|| async { page(OVERLAY_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/overlay.css",
            get(|| async { page(OVERLAY_CSS, "text/css; charset=utf-8") }),
        )
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// A refusal with its reason as text.
fn refuse(status: StatusCode, why: &str) -> Response {
    let mut response = (status, format!("{why}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"aai-live feed\""),
        );
    }
    response
}

/// The rules every request passes, then CORS for a listed origin.
async fn guard(State(state): State<FeedState>, request: Request, next: Next) -> Response {
    let (headers, uri) = (request.headers(), request.uri());
    if state.loopback && !host::addressed_to_loopback(headers, uri) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this feed answers requests for localhost only (Host): a page of another site \
             cannot read it through DNS rebinding",
        );
    }
    if !state.loopback && !host::names_a_host(headers, uri) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the request names no host (Host header)",
        );
    }
    let websocket = uri.path() == "/ws";
    if !websocket && !fetch_allowed(headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "a browser may read the feed only from its own pages or with fetch()/EventSource \
             in cors mode (Sec-Fetch-*): not from an image, a script, a form or a frame of \
             another site",
        );
    }
    let own =
        host::request_origin(headers, uri, "http").and_then(|o| HeaderValue::from_str(&o).ok());
    if !origin_allowed(headers, &state.origins, own.as_ref()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this origin may not read the feed (feed.origins)",
        );
    }
    let listed = headers
        .get(header::ORIGIN)
        .filter(|o| state.origins.contains(o))
        .cloned();
    if request.method() == Method::OPTIONS {
        let Some(origin) = listed else {
            return refuse(
                StatusCode::FORBIDDEN,
                "no CORS for this origin (feed.origins)",
            );
        };
        let mut response = StatusCode::NO_CONTENT.into_response();
        cors(response.headers_mut(), origin);
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, last-event-id"),
        );
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        );
        return response;
    }
    // The overlay's files hold no data (its events need the token, passed on from its URL).
    let public = matches!(
        uri.path(),
        "/healthz" | "/overlay" | "/overlay.js" | "/overlay.css"
    );
    if let Some(credentials) = &state.token
        && !public
    {
        let query_token = uri.query().and_then(token_param);
        let shown = match presented(headers) {
            Presented::Bearer(token) => Some(token.to_owned()),
            Presented::Missing => query_token,
            Presented::Malformed => None,
        };
        if shown.is_none_or(|t| credentials.verify(&t).is_none()) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this feed needs its token: `Authorization: Bearer TOKEN` or `?token=TOKEN`",
            );
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(origin) = listed {
        cors(headers, origin);
    }
    response
}

fn cors(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
}

/// The token server's fetch-metadata rule ([`fetch_metadata_allowed`]), and the feed's own
/// pages: the overlay is opened as a page (a navigation typed or opened by OBS: `Sec-Fetch-Site:
/// none`) and loads its script and style from itself (`same-origin`). A page of another site
/// still cannot embed or script it.
fn fetch_allowed(headers: &HeaderMap) -> bool {
    if fetch_metadata_allowed(headers) {
        return true;
    }
    let one = |name: &str| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok(),
            _ => None,
        }
    };
    matches!(
        (one("sec-fetch-site"), one("sec-fetch-mode")),
        (Some("same-origin"), _) | (Some("none"), Some("navigate"))
    )
}

/// What a consumer asked for in the query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub filter: Filter,
    pub last_event_id: Option<u64>,
}

/// The longest query string read.
const MAX_QUERY: usize = 4096;
/// The most names in `events=` or `source=`.
const MAX_NAMES: usize = 32;

/// `?events=final,partial&source=you&last_event_id=42` (other parameters, such as `token` and
/// the overlay's styles, are not the stream's business). Names are 1-32 letters, digits, `_`
/// or `-`; sources are compared in lower case, as labels are.
pub fn parse_query(query: &str) -> Result<Query, String> {
    if query.len() > MAX_QUERY {
        return Err(format!("the query string is longer than {MAX_QUERY} bytes"));
    }
    let mut parsed = Query::default();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let names = |into: &mut BTreeSet<String>, lower: bool| -> Result<(), String> {
            for name in value.split(',').filter(|n| !n.is_empty()) {
                if name.len() > 32
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
                {
                    return Err(format!(
                        "`{key}` takes names of 1-32 letters, digits, _ or - separated by commas"
                    ));
                }
                into.insert(if lower {
                    name.to_ascii_lowercase()
                } else {
                    name.to_owned()
                });
                if into.len() > MAX_NAMES {
                    return Err(format!("`{key}` takes at most {MAX_NAMES} names"));
                }
            }
            Ok(())
        };
        match key.as_ref() {
            "events" => names(&mut parsed.filter.kinds, false)?,
            "source" => names(&mut parsed.filter.sources, true)?,
            "last_event_id" => {
                parsed.last_event_id = Some(hub::parse_last_event_id(value.as_bytes())?);
            }
            _ => {}
        }
    }
    Ok(parsed)
}

/// `?token=` of a query string.
fn token_param(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// Where a consumer starts: after its `Last-Event-ID` header (EventSource resends it when it
/// reconnects) or `?last_event_id=`, else from the start of the history.
/// A refusal is 400 with its reason.
fn cursor(headers: &HeaderMap, query: Option<&str>) -> Result<Cursor, String> {
    let query = parse_query(query.unwrap_or_default())?;
    let mut sent = headers.get_all("last-event-id").iter();
    let header = match (sent.next(), sent.next()) {
        (None, _) => None,
        (Some(value), None) => Some(hub::parse_last_event_id(value.as_bytes())?),
        (Some(_), Some(_)) => return Err("Last-Event-ID is given twice".to_owned()),
    };
    Ok(Cursor::new(header.or(query.last_event_id), query.filter))
}

/// `GET /events`: Server-Sent Events.
async fn events(
    State(state): State<FeedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let cursor = match cursor(&headers, query.as_deref()) {
        Ok(cursor) => cursor,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, &why),
    };
    let stream = hub::subscribe(&state.shared.hub, cursor).map(|out| {
        let mut event = Event::default().event(out.kind()).data(out.json());
        if let Some(id) = out.id() {
            event = event.id(id.to_string());
        }
        Ok::<_, Infallible>(event)
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /ws`: the same events over a WebSocket, each a text message `{"id", "event", "data"}`
/// (the SSE fields; `data` the NDJSON object). The `Origin` rule ran in [`guard`].
async fn ws(
    State(state): State<FeedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let cursor = match cursor(&headers, query.as_deref()) {
        Ok(cursor) => cursor,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, &why),
    };
    let hub = Arc::clone(&state.shared.hub);
    upgrade.on_upgrade(move |socket| forward(socket, hub::subscribe(&hub, cursor)))
}

async fn forward(socket: WebSocket, events: impl futures_util::Stream<Item = Out>) {
    let (mut tx, mut rx) = socket.split();
    let mut events = std::pin::pin!(events);
    let mut disconnected = false;
    loop {
        tokio::select! {
            out = events.next() => {
                let Some(out) = out else { break };
                disconnected = matches!(out, Out::Disconnected(_));
                let id = out.id().map_or_else(|| "null".to_owned(), |id| id.to_string());
                let kind = serde_json::Value::from(out.kind()).to_string();
                let text = format!(r#"{{"id":{id},"event":{kind},"data":{}}}"#, out.json());
                if tx.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = rx.next() => match incoming {
                // A consumer has nothing to say; pings are answered by the library.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let (code, reason) = if disconnected {
        (1013, "too slow: resume with last_event_id")
    } else {
        (1000, "the run ended")
    };
    let _ = tx
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// `GET /transcript.txt|.srt|.vtt`: the transcript so far, as the exports lay it out.
fn transcript(state: &FeedState, format: TranscriptFormat) -> Response {
    let text = state
        .shared
        .turns
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .render(format);
    let content_type = match format {
        TranscriptFormat::Txt => "text/plain; charset=utf-8",
        TranscriptFormat::Srt => "application/x-subrip; charset=utf-8",
        TranscriptFormat::Vtt => "text/vtt; charset=utf-8",
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

/// One of the overlay's files, under its policy.
fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, OVERLAY_CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn queries_name_kinds_sources_and_a_resume_point() {
        let q = parse_query("events=final,partial&source=You&last_event_id=7&token=x&font=a")
            .expect("valid");
        assert_eq!(
            q.filter.kinds,
            ["final".to_owned(), "partial".to_owned()].into()
        );
        assert_eq!(q.filter.sources, ["you".to_owned()].into());
        assert_eq!(q.last_event_id, Some(7));
        for (bad, says) in [
            ("events=fi%0Anal", "events"),
            ("source=a%20b", "source"),
            ("last_event_id=-3", "Last-Event-ID"),
        ] {
            let error = parse_query(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
        assert!(parse_query(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn pages_pass_the_fetch_metadata_rule_and_foreign_subresources_do_not() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            fetch_allowed(&h)
        };
        assert!(with(&[]));
        assert!(with(&[
            ("sec-fetch-site", "none"),
            ("sec-fetch-mode", "navigate")
        ]));
        assert!(with(&[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-dest", "script")
        ]));
        assert!(!with(&[
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", "script")
        ]));
        assert!(!with(&[
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "iframe")
        ]));
    }

    fn state(token: Option<&str>) -> FeedState {
        FeedState {
            shared: Arc::new(Shared {
                hub: hub::Hub::new(
                    hub::Bounds {
                        events: 10,
                        bytes: hub::HISTORY_BYTES,
                    },
                    10,
                ),
                turns: std::sync::Mutex::new(super::super::turns::Turns::default()),
            }),
            token: token.map(|t| Credentials::single("feed", t)),
            origins: Vec::new(),
            loopback: true,
        }
    }

    /// A request through the whole router: the status.
    fn status(state: FeedState, uri: &str, headers: &[(&str, &[u8])]) -> u16 {
        use tower::ServiceExt;
        let mut request = axum::http::Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(axum::body::Body::empty()).expect("request");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(router(state).oneshot(request))
            .expect("infallible")
            .status()
            .as_u16()
    }

    #[test]
    fn the_token_is_taken_from_the_header_or_the_query_and_compared_whole() {
        let host: (&str, &[u8]) = ("host", b"127.0.0.1:8789");
        let s = || state(Some("s3cret"));
        assert_eq!(status(s(), "/transcript.txt", &[host]), 401);
        assert_eq!(status(s(), "/transcript.txt?token=s3cre", &[host]), 401);
        assert_eq!(status(s(), "/transcript.txt?token=s3cret", &[host]), 200);
        assert_eq!(
            status(
                s(),
                "/transcript.txt",
                &[host, ("authorization", b"Bearer s3cret")]
            ),
            200
        );
        assert_eq!(
            status(
                s(),
                "/transcript.txt?token=s3cret",
                &[host, ("authorization", b"Basic czNjcmV0")]
            ),
            401,
            "a malformed Authorization is not overruled by the query"
        );
        assert_eq!(status(s(), "/healthz", &[host]), 200);
        assert_eq!(status(s(), "/overlay", &[host]), 200);
    }

    proptest! {
        /// Any `Host` bytes: answered only when they name a loopback host, never a panic.
        #[test]
        fn only_loopback_hosts_are_answered(host in proptest::collection::vec(any::<u8>(), 0..40)) {
            if HeaderValue::from_bytes(&host).is_err() {
                return Ok(());
            }
            let got = status(state(None), "/healthz", &[("host", &host)]);
            prop_assert_eq!(got == 200, host::is_loopback_host(&host), "{}", got);
        }

        /// Any `Origin` and `Sec-Fetch-*` values: refused or answered, never a panic; a listed
        /// or own origin only is let through.
        #[test]
        fn any_origin_and_fetch_metadata_is_judged(
            origin in proptest::option::of("[ -~]{0,40}"),
            site in proptest::option::of("(same-origin|same-site|cross-site|none|[a-z]{0,8})"),
            mode in proptest::option::of("(cors|no-cors|navigate|same-origin|websocket)"),
        ) {
            let mut headers: Vec<(&str, &[u8])> = vec![("host", b"127.0.0.1:8789")];
            if let Some(origin) = &origin {
                headers.push(("origin", origin.as_bytes()));
            }
            if let Some(site) = &site {
                headers.push(("sec-fetch-site", site.as_bytes()));
            }
            if let Some(mode) = &mode {
                headers.push(("sec-fetch-mode", mode.as_bytes()));
            }
            let got = status(state(None), "/transcript.txt", &headers);
            prop_assert!(got == 200 || got == 403, "{}", got);
            if got == 200 {
                prop_assert!(origin.is_none_or(|o| o == "http://127.0.0.1:8789"));
            }
        }

        /// Any `Last-Event-ID` bytes a client can send, with any query: a cursor or a reason,
        /// never a panic.
        #[test]
        fn any_last_event_id_header_is_read_or_refused(
            value in proptest::collection::vec(any::<u8>(), 0..40),
            twice in any::<bool>(),
        ) {
            let Ok(value) = HeaderValue::from_bytes(&value) else {
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.append("last-event-id", value.clone());
            if twice {
                headers.append("last-event-id", value);
            }
            match cursor(&headers, Some("events=final")) {
                Ok(_) => prop_assert!(!twice),
                Err(why) => prop_assert!(why.contains("Last-Event-ID")),
            }
        }

        /// Any query string: parsed or refused with a message, never a panic, and what is kept
        /// is bounded.
        #[test]
        fn any_query_parses_or_is_refused(query in "\\PC{0,300}|[a-z_=&,%0-9]{0,300}") {
            match parse_query(&query) {
                Ok(q) => {
                    prop_assert!(q.filter.kinds.len() <= MAX_NAMES);
                    prop_assert!(q.filter.sources.len() <= MAX_NAMES);
                    prop_assert!(q.filter.kinds.iter().chain(&q.filter.sources).all(|n| n.len() <= 32));
                }
                Err(why) => prop_assert!(!why.is_empty()),
            }
        }
    }
}
