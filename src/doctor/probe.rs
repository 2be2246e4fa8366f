//! What both doctors do on the network, in one place: reach a host over HTTP(S) with the client
//! the providers build, open one session with a token through the connector `run` uses, wait for
//! its `Begin`, and close it.

use std::time::Duration;

use tokio::sync::mpsc;
use url::Url;

use super::check::Check;
use super::report::Step;
use crate::config::Config;
use crate::diagnosis::Diagnosis;
use crate::protocol::ServerMessage;
use crate::protocol::params::place_token;
use crate::session::connection::{self, ConnEvent};
use crate::session::proxy::{self, ProxyEnv};

/// The outgoing queue of the one session: a second of silence in chunks at most, sent paced.
const QUEUE: usize = 64;

/// " via proxy http://host:port" when the environment routes `url` through one.
pub(super) fn proxy_note(url: &Url) -> String {
    match ProxyEnv::process().proxy_for(url) {
        Ok(Some(proxy)) => format!(" via proxy {}", proxy::display_proxy(&proxy)),
        Ok(None) => String::new(),
        Err(e) => format!(" (proxy setting ignored: {e})"),
    }
}

/// DNS, TCP and TLS to `url`'s host with the HTTP client the providers build: a request for
/// the host's root, without credentials, so nothing is minted and no token fault is consumed.
/// On a pass, also the client that got through, for the requests that follow.
pub(super) async fn reach(
    check: Check,
    url: &Url,
    timeout: Duration,
) -> (Step, Option<reqwest::Client>) {
    let shown = crate::provider::http::display_url(url);
    let via = proxy_note(url);
    let Some(host) = url.host_str() else {
        let step = Step::fail(check, format!("{shown}: no host"), Diagnosis::ConfigInvalid);
        return (step, None);
    };
    let mut found = Vec::new();
    if via.is_empty() {
        let port = url.port_or_known_default().unwrap_or(443);
        match dns_and_tcp(host, port, timeout).await {
            Ok(mut lines) => found.append(&mut lines),
            Err((detail, diagnosis)) => {
                return (
                    Step::fail(check, format!("{shown}: {detail}"), diagnosis),
                    None,
                );
            }
        }
    }
    let client = match crate::provider::http::client("doctor", timeout) {
        Ok(client) => client,
        Err(e) => {
            return (
                Step::fail(check, e.to_string(), Diagnosis::TlsFailure),
                None,
            );
        }
    };
    let mut root = url.clone();
    root.set_path("/");
    root.set_query(None);
    let _ = root.set_username("");
    let _ = root.set_password(None);
    match tokio::time::timeout(timeout, client.get(root).send()).await {
        Ok(Ok(response)) => {
            if url.scheme() == "https" {
                found.push("TLS verified".to_owned());
            }
            // The root's own status says nothing about the endpoint: an error status on a
            // passing line would read as a problem.
            let status = response.status();
            found.push(if status.is_client_error() || status.is_server_error() {
                "an HTTP server answers".to_owned()
            } else {
                format!("HTTP answers ({})", status.as_u16())
            });
            let step = Step::pass(check, format!("{shown}{via}: {}", found.join(", ")));
            (step, Some(client))
        }
        Ok(Err(e)) => {
            let text = crate::provider::http::chain(&e);
            let lower = text.to_ascii_lowercase();
            let diagnosis = if !via.is_empty() && !lower.contains("certificate") {
                Diagnosis::ProxyFailure
            } else {
                transport_diagnosis(&e)
            };
            (
                Step::fail(check, format!("{shown}{via}: {text}"), diagnosis),
                None,
            )
        }
        Err(_) => {
            let detail = format!(
                "{shown}{via}: no HTTP answer within {}",
                humantime::format_duration(timeout)
            );
            (Step::fail(check, detail, Diagnosis::TcpFailure), None)
        }
    }
}

/// The section of a request that failed: the kind of network failure, or, when the connection
/// was made and no kind applies, an answer that is not usable HTTP (an oversized header block,
/// another protocol): not a refused connection.
pub(super) fn transport_diagnosis(e: &reqwest::Error) -> Diagnosis {
    match crate::provider::http::network_of(e) {
        Some(network) => Diagnosis::from_network(network),
        None if e.is_connect() => Diagnosis::TcpFailure,
        None => Diagnosis::BadHttpAnswer,
    }
}

/// Resolve `host` and connect to its first address, each bounded by `timeout`: what was found,
/// or the failure's words and diagnosis. Only without a proxy (a proxy resolves for us).
async fn dns_and_tcp(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<String>, (String, Diagnosis)> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = match tokio::time::timeout(timeout, tokio::net::lookup_host((bare, port))).await {
        Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
        Ok(Err(e)) => {
            return Err((format!("cannot resolve {bare}: {e}"), Diagnosis::DnsFailure));
        }
        Err(_) => return Err((format!("no DNS answer for {bare}"), Diagnosis::DnsFailure)),
    };
    let Some(first) = addrs.first() else {
        return Err((format!("{bare} has no address"), Diagnosis::DnsFailure));
    };
    let mut found = Vec::new();
    if bare.parse::<std::net::IpAddr>().is_err() {
        found.push(format!("{bare} resolves to {}", first.ip()));
    }
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(first)).await {
        Ok(Ok(_)) => found.push("TCP connects".to_owned()),
        Ok(Err(e)) => {
            return Err((
                format!("cannot connect to {first}: {e}"),
                Diagnosis::TcpFailure,
            ));
        }
        Err(_) => return Err((format!("no TCP answer from {first}"), Diagnosis::TcpFailure)),
    }
    Ok(found)
}

/// The connection events of one session.
pub(super) type Events = mpsc::UnboundedReceiver<(crate::events::Gen, ConnEvent)>;

/// One session being opened at the configured streaming URL.
pub(super) struct Dialed {
    pub connection: connection::Connection,
    pub events: Events,
    /// The streaming endpoint (without the token), to show and to find its proxy.
    pub endpoint: Url,
}

/// Start opening one session with `token` at the configured streaming URL, the token where
/// `streaming.token_in` puts it, as a run does; a URL that cannot be built fails `check`.
pub(super) fn dial(
    check: Check,
    config: &Config,
    token: crate::secret::Token,
) -> Result<Dialed, Box<Step>> {
    let endpoint = crate::session::endpoint(config);
    let params = crate::session::params(config);
    let (url, header) =
        place_token(&endpoint, &params, token, config.streaming.token_in).map_err(|e| {
            Box::new(Step::fail(
                check,
                format!("{endpoint}: {e}"),
                Diagnosis::ConfigInvalid,
            ))
        })?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let connection = connection::websocket().open(1, url, header, QUEUE, events_tx);
    Ok(Dialed {
        connection,
        events,
        endpoint,
    })
}

/// Wait up to `timeout` for `Begin` on a connection's events: the `Begin`, or how the connection
/// ended (`None`: no answer in time), and the text of an `Error` frame seen meanwhile. One
/// deadline for the whole wait: other frames before `Begin` do not extend it.
pub(super) async fn wait_for_begin(
    events: &mut Events,
    timeout: Duration,
) -> Result<crate::protocol::messages::Begin, Option<connection::Ended>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some((_, ConnEvent::Message(ServerMessage::Begin(begin))))) => break Ok(begin),
            Ok(Some((_, ConnEvent::Closed(ended)))) => break Err(Some(ended)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break Err(None),
        }
    }
}

/// Close the session politely and wait for it, bounded: the doctor leaves no session open.
pub(super) async fn close(connection: connection::Connection) {
    if let Some(task) = connection.close() {
        let _ = tokio::time::timeout(connection::CLOSE_TIMEOUT * 2, task).await;
    }
}
