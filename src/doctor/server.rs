//! `aai-live doctor --server URL`: a token server checked from the outside, as its clients see
//! it: reachable (DNS, TCP, TLS), ready (`/readyz`), its answer without a credential and with
//! one, CORS for a browser origin, rate-limit headers, `Cache-Control: no-store`, and the token it
//! minted redeemed at the configured streaming URL (one session, opened and closed at once).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD,
    CACHE_CONTROL, HeaderMap, ORIGIN,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use url::Url;

use super::{Format, Recorder, Report, Status, Step, reach_step};
use crate::config::Config;
use crate::diagnosis::Diagnosis;
use crate::protocol::{TokenPlacement, build_ws_url};
use crate::session::connection;

/// What `--server` was given.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The token endpoint (`https://host/token`).
    pub url: Url,
    pub credential_env: Option<String>,
    pub credential_file: Option<PathBuf>,
    /// A browser origin to check CORS for.
    pub origin: Option<String>,
    pub keep_going: bool,
    pub format: Format,
}

/// An answer of the token server.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Check the server; `env` is where `--credential-env` is read.
#[expect(
    clippy::too_many_lines,
    reason = "the steps in order, each a few lines; splitting hides the order"
)]
pub async fn run(
    config: &Config,
    options: &ServerOptions,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut (dyn Write + Send),
) -> Report {
    let mut r = Recorder {
        out,
        format: options.format,
        keep_going: options.keep_going,
        report: Report::default(),
    };
    let url = &options.url;
    let timeout = config.provider.timeout;
    let shown = crate::provider::http::display_url(url);

    // server-reachable, server-tls
    let reach = reach_step("server-reachable", url, timeout).await;
    let reached = reach.status == Status::Pass;
    r.record(reach);
    if !reached {
        finish_skipped(&mut r, "server-tls", "skipped: server-reachable failed");
        return r.report;
    }
    let loopback = url.host_str().is_some_and(|h| {
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
            || h == "[::1]"
    });
    r.record(match (url.scheme(), loopback) {
        ("https", _) => Step::pass("server-tls", "HTTPS with a verified certificate"),
        (_, true) => Step::pass(
            "server-tls",
            "plain HTTP on loopback (tokens stay on this machine)",
        ),
        _ => Step::fail(
            "server-tls",
            format!("{shown} is plain HTTP: tokens and credentials cross the network unencrypted"),
            Diagnosis::TlsFailure,
        ),
    });
    if r.stopped() {
        return r.report;
    }

    let client = match crate::provider::http::client("doctor", timeout) {
        Ok(client) => client,
        Err(e) => {
            r.record(Step::fail(
                "server-ready",
                e.to_string(),
                Diagnosis::TlsFailure,
            ));
            return r.report;
        }
    };

    // server-ready
    let mut readyz = url.clone();
    readyz.set_path("/readyz");
    readyz.set_query(None);
    r.record(match fetch(client.get(readyz), timeout).await {
        Ok(a) if a.status == 200 => Step::pass("server-ready", "/readyz: ready"),
        Ok(a) if a.status == 503 => Step::fail(
            "server-ready",
            format!(
                "/readyz: HTTP 503 {}",
                crate::provider::http::excerpt(&a.body, &[])
            ),
            Diagnosis::ServeLimitsStoreDown,
        ),
        Ok(a) => Step::skip(
            "server-ready",
            format!("/readyz: HTTP {} (not aai-live serve?)", a.status),
        ),
        Err(e) => Step::fail(
            "server-ready",
            format!("/readyz: {e}"),
            Diagnosis::TcpFailure,
        ),
    });
    if r.stopped() {
        return r.report;
    }

    // server-no-credential
    let mut minted: Option<Answer> = None;
    let bare = fetch(client.post(url.clone()), timeout).await;
    let no_credential = match bare {
        Ok(a) if a.status == 401 || a.status == 403 => Step::pass(
            "server-no-credential",
            format!("refuses a request without a credential (HTTP {})", a.status),
        ),
        Ok(a) if (200..300).contains(&a.status) => {
            let step = if loopback {
                Step::pass(
                    "server-no-credential",
                    "answers without a credential (allowed on loopback only)",
                )
            } else {
                Step::fail(
                    "server-no-credential",
                    format!(
                        "{shown} hands out tokens without a credential, to anyone who reaches it"
                    ),
                    Diagnosis::ServeUnauthorized,
                )
            };
            minted = Some(a);
            step
        }
        Ok(a) => Step::fail(
            "server-no-credential",
            format!(
                "HTTP {}: {}",
                a.status,
                crate::provider::http::excerpt(&a.body, &[])
            ),
            Diagnosis::from_token_status(a.status, true),
        ),
        Err(e) => Step::fail("server-no-credential", e, Diagnosis::TcpFailure),
    };
    r.record(no_credential);
    if r.stopped() {
        return r.report;
    }

    // server-credential
    let credential = match read_credential(options, env) {
        Ok(credential) => credential,
        Err(e) => {
            r.record(Step::fail("server-credential", e, Diagnosis::SecretMissing));
            finish_skipped(&mut r, "server-cors", "skipped: no credential");
            return r.report;
        }
    };
    match &credential {
        Some(credential) => {
            let request = client
                .post(url.clone())
                .bearer_auth(credential.expose_secret());
            let secrets = [credential.expose_secret()];
            match fetch(request, timeout).await {
                Ok(a) if (200..300).contains(&a.status) => {
                    match crate::provider::remote::parse_answer(&a.body, &secrets) {
                        Ok(_) => {
                            r.record(Step::pass(
                                "server-credential",
                                format!(
                                    "the credential is accepted: HTTP {} with a token",
                                    a.status
                                ),
                            ));
                            minted = Some(a);
                        }
                        Err(e) => r.record(Step::fail(
                            "server-credential",
                            format!("HTTP {} but {e}", a.status),
                            Diagnosis::TokenNotJson,
                        )),
                    }
                }
                Ok(a) => r.record(Step::fail(
                    "server-credential",
                    format!(
                        "HTTP {}: {}",
                        a.status,
                        crate::provider::http::excerpt(&a.body, &secrets)
                    ),
                    Diagnosis::from_token_status(a.status, true),
                )),
                Err(e) => r.record(Step::fail("server-credential", e, Diagnosis::TcpFailure)),
            }
        }
        None if minted.is_some() => r.record(Step::pass(
            "server-credential",
            "not needed: the server answered without one",
        )),
        None => r.record(Step::skip(
            "server-credential",
            "no credential given (--credential-env NAME or --credential-file FILE)",
        )),
    }
    if r.stopped() {
        return r.report;
    }

    // server-cors
    r.record(match &options.origin {
        None => Step::skip("server-cors", "no --origin given"),
        Some(origin) => {
            let request = client
                .request(reqwest::Method::OPTIONS, url.clone())
                .header(ORIGIN, origin.as_str())
                .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(ACCESS_CONTROL_REQUEST_HEADERS, "authorization");
            match fetch(request, timeout).await {
                Ok(a) => {
                    let allowed = a
                        .headers
                        .get(ACCESS_CONTROL_ALLOW_ORIGIN)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    match allowed {
                        Some(v) if v == *origin || v == "*" => Step::pass(
                            "server-cors",
                            format!(
                                "{origin} may ask for tokens (Access-Control-Allow-Origin: {v})"
                            ),
                        ),
                        _ => Step::fail(
                            "server-cors",
                            format!(
                                "no Access-Control-Allow-Origin for {} (preflight HTTP {})",
                                crate::untrusted::for_terminal(origin),
                                a.status
                            ),
                            Diagnosis::CorsRefused,
                        ),
                    }
                }
                Err(e) => Step::fail("server-cors", e, Diagnosis::TcpFailure),
            }
        }
    });
    if r.stopped() {
        return r.report;
    }

    // server-rate-limit-headers, server-cache-control: on the answer that carried a token.
    let Some(answer) = minted else {
        finish_skipped(
            &mut r,
            "server-rate-limit-headers",
            "skipped: no token answer to inspect",
        );
        return r.report;
    };
    let has = |name: &str| answer.headers.contains_key(name);
    r.record(
        if has("x-ratelimit-limit") && has("x-ratelimit-remaining") {
            Step::pass(
                "server-rate-limit-headers",
                format!(
                    "X-RateLimit-Limit {}, X-RateLimit-Remaining {}",
                    header_text(&answer.headers, "x-ratelimit-limit"),
                    header_text(&answer.headers, "x-ratelimit-remaining")
                ),
            )
        } else {
            Step::warn(
                "server-rate-limit-headers",
                "no X-RateLimit-Limit / X-RateLimit-Remaining headers",
                Diagnosis::RateLimitHeadersMissing,
            )
        },
    );
    if r.stopped() {
        return r.report;
    }
    let cache = header_text(&answer.headers, CACHE_CONTROL.as_str());
    r.record(if cache.to_ascii_lowercase().contains("no-store") {
        Step::pass("server-cache-control", format!("Cache-Control: {cache}"))
    } else {
        Step::fail(
            "server-cache-control",
            "the token answer has no Cache-Control: no-store",
            Diagnosis::TokenCacheable,
        )
    });
    if r.stopped() {
        return r.report;
    }

    // server-redeem
    let secrets: Vec<&str> = credential.iter().map(ExposeSecret::expose_secret).collect();
    let step = match crate::provider::remote::parse_answer(&answer.body, &secrets) {
        Ok(doc) => redeem(config, doc.secret).await,
        Err(e) => Step::fail("server-redeem", e, Diagnosis::TokenNotJson),
    };
    r.record(step);
    r.report
}

/// Record every remaining step from `from` as skipped (the order of [`STEPS`]).
fn finish_skipped(r: &mut Recorder<'_>, from: &str, why: &str) {
    if r.stopped() {
        return;
    }
    let at = STEPS.iter().position(|s| *s == from).unwrap_or(STEPS.len());
    for step in &STEPS[at..] {
        r.record(Step::skip(step, why.to_owned()));
    }
}

/// The steps of `--server`, in order.
pub const STEPS: [&str; 9] = [
    "server-reachable",
    "server-tls",
    "server-ready",
    "server-no-credential",
    "server-credential",
    "server-cors",
    "server-rate-limit-headers",
    "server-cache-control",
    "server-redeem",
];

fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| crate::untrusted::for_terminal(v).into_owned())
        .unwrap_or_default()
}

/// The credential from `--credential-env` or `--credential-file`, if one was named.
fn read_credential(
    options: &ServerOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>, String> {
    if let Some(name) = &options.credential_env {
        return match env(name).map(|v| v.trim().to_owned()) {
            Some(v) if !v.is_empty() => Ok(Some(SecretString::from(v))),
            _ => Err(format!(
                "the environment variable {name} is not set or empty"
            )),
        };
    }
    if let Some(path) = &options.credential_file {
        return crate::secret::read_secret_file(path)
            .map(|(secret, _warning)| Some(secret))
            .map_err(|e| e.to_string());
    }
    Ok(None)
}

/// Send `request` and read the answer, bounded.
async fn fetch(request: reqwest::RequestBuilder, timeout: Duration) -> Result<Answer, String> {
    let attempt = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok::<_, reqwest::Error>(Answer {
            status,
            headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(crate::provider::http::chain(&e)),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Open one session with `token` at the configured streaming URL, wait for `Begin`, close.
async fn redeem(config: &Config, token: String) -> Step {
    const STEP: &str = "server-redeem";
    let token = crate::secret::Token::new(token, "remote");
    let endpoint = crate::session::endpoint(config);
    let params = crate::session::params(config);
    let fingerprint = token.fingerprint();
    let (url, header) = match config.streaming.token_in {
        TokenPlacement::Query => (build_ws_url(&endpoint, &params, Some(&token)), None),
        TokenPlacement::Header => (
            build_ws_url(&endpoint, &params, None),
            Some(token.into_secret()),
        ),
    };
    let url = match url {
        Ok(url) => url,
        Err(e) => return Step::fail(STEP, format!("{endpoint}: {e}"), Diagnosis::ConfigInvalid),
    };
    let shown = crate::provider::http::display_url(&endpoint);
    let (tx, mut events) = mpsc::unbounded_channel();
    let connection = connection::websocket().open(1, url, header, 8, tx);
    let outcome = super::wait_for_begin(&mut events, config.session.begin_timeout).await;
    let step = match outcome {
        Ok(begin) => Step::pass(
            STEP,
            format!(
                "token {fingerprint} opened session {} at {shown}",
                crate::strings::short_id(&begin.id)
            ),
        ),
        Err(Some(ended)) if ended.failure.origin == crate::failure::Origin::Connect => Step::fail(
            STEP,
            format!("{shown}: {}", ended.failure.reason),
            ended.failure.diagnosis,
        ),
        Err(Some(ended)) => Step::fail(
            STEP,
            format!(
                "token {fingerprint} refused at {shown}: {} \"{}\"",
                ended.failure.code.unwrap_or_default(),
                ended.failure.reason
            ),
            ended.failure.diagnosis,
        ),
        Err(None) => Step::fail(
            STEP,
            format!("{shown}: no Begin within the begin timeout"),
            Diagnosis::NoBegin,
        ),
    };
    super::close(connection).await;
    step
}
