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
use url::Url;

use super::check::{Check, Suite};
use super::probe::{self, Dialed};
use super::report::{Format, Recorder, Report, Step};
use crate::config::Config;
use crate::diagnosis::Diagnosis;

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

/// The token answer the last steps inspect, and the credential that got it (kept out of what
/// they print).
struct Minted {
    answer: Answer,
    credential: Option<SecretString>,
}

/// The server being asked: where, with which client, how long to wait.
struct Server<'a> {
    url: &'a Url,
    client: reqwest::Client,
    timeout: Duration,
    /// On this machine: plain HTTP and an open token endpoint are fine there.
    loopback: bool,
}

/// Check the server; `env` is where `--credential-env` is read.
pub async fn run(
    config: &Config,
    options: &ServerOptions,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut (dyn Write + Send),
) -> Report {
    let mut r = Recorder::new(Suite::Server, out, options.format, options.keep_going);
    let url = &options.url;
    let timeout = config.provider.timeout;

    // The client that reached the server asks it everything else.
    let (step, client) = probe::reach(Check::ServerReachable, url, timeout).await;
    r.record(step);
    let Some(client) = client else {
        return r.finish();
    };
    let loopback = url.host_str().is_some_and(|h| {
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
            || h == "[::1]"
    });
    let server = Server {
        url,
        client,
        timeout,
        loopback,
    };

    if r.runs(Check::ServerTls) {
        r.record(tls_step(&server));
    }
    if r.runs(Check::ServerReady) {
        r.record(ready_step(&server).await);
    }
    let mut without = None;
    if r.runs(Check::ServerNoCredential) {
        let (step, answer) = no_credential_step(&server).await;
        without = answer;
        r.record(step);
    }
    let mut minted = None;
    if r.runs(Check::ServerCredential) {
        let (step, answer) = credential_step(&server, options, env, without).await;
        minted = answer;
        r.record(step);
    }
    if r.runs(Check::ServerCors) {
        r.record(cors_step(&server, options.origin.as_deref()).await);
    }
    // `server-credential` passes exactly when there is an answer; otherwise the recorder
    // reports these three as skipped.
    if let Some(minted) = minted {
        let headers = &minted.answer.headers;
        if r.runs(Check::ServerRateLimitHeaders) {
            r.record(rate_limit_step(headers));
        }
        if r.runs(Check::ServerCacheControl) {
            r.record(cache_step(headers));
        }
        if r.runs(Check::ServerRedeem) {
            r.record(redeem_step(config, &minted).await);
        }
    }
    r.finish()
}

/// Tokens and credentials cross the network encrypted, or stay on this machine.
fn tls_step(server: &Server<'_>) -> Step {
    const STEP: Check = Check::ServerTls;
    match (server.url.scheme(), server.loopback) {
        ("https", _) => Step::pass(STEP, "HTTPS with a verified certificate"),
        (_, true) => Step::pass(STEP, "plain HTTP on loopback (tokens stay on this machine)"),
        _ => Step::fail(
            STEP,
            format!(
                "{} is plain HTTP: tokens and credentials cross the network unencrypted",
                crate::provider::http::display_url(server.url)
            ),
            Diagnosis::TlsFailure,
        ),
    }
}

/// `/readyz` of `aai-live serve`; another server's answer is noted, not held against it.
async fn ready_step(server: &Server<'_>) -> Step {
    const STEP: Check = Check::ServerReady;
    let mut readyz = server.url.clone();
    readyz.set_path("/readyz");
    readyz.set_query(None);
    match fetch(server.client.get(readyz), server.timeout).await {
        Ok(a) if a.status == 200 => Step::pass(STEP, "/readyz: ready"),
        Ok(a) if a.status == 503 => Step::fail(
            STEP,
            format!(
                "/readyz: HTTP 503 {}",
                crate::provider::http::excerpt(&a.body, &[])
            ),
            Diagnosis::ServeLimitsStoreDown,
        ),
        Ok(a) => Step::skip(
            STEP,
            format!("/readyz: HTTP {} (not aai-live serve?)", a.status),
        ),
        Err(e) => Step::fail(STEP, format!("/readyz: {}", e.detail), e.diagnosis),
    }
}

/// A request without a credential is refused (or, on loopback, may be answered); a token
/// answered to it is returned for the steps that inspect one.
async fn no_credential_step(server: &Server<'_>) -> (Step, Option<Answer>) {
    const STEP: Check = Check::ServerNoCredential;
    match fetch(server.client.post(server.url.clone()), server.timeout).await {
        Ok(a) if a.status == 401 || a.status == 403 => {
            let step = Step::pass(
                STEP,
                format!("refuses a request without a credential (HTTP {})", a.status),
            );
            (step, None)
        }
        Ok(a) if (200..300).contains(&a.status) => {
            let step = if server.loopback {
                Step::pass(
                    STEP,
                    "answers without a credential (allowed on loopback only)",
                )
            } else {
                Step::fail(
                    STEP,
                    format!(
                        "{} hands out tokens without a credential, to anyone who reaches it",
                        crate::provider::http::display_url(server.url)
                    ),
                    Diagnosis::ServeUnauthorized,
                )
            };
            (step, Some(a))
        }
        Ok(a) => {
            let step = Step::fail(
                STEP,
                refusal(&a, &[]),
                Diagnosis::from_token_status(a.status, true),
            );
            (step, None)
        }
        Err(e) => (e.step(STEP), None),
    }
}

/// The credential is accepted with a token; without one, the answer `without` a credential (if
/// the server gave one) stands in. The token answer comes back exactly when the step passes.
async fn credential_step(
    server: &Server<'_>,
    options: &ServerOptions,
    env: &dyn Fn(&str) -> Option<String>,
    without: Option<Answer>,
) -> (Step, Option<Minted>) {
    const STEP: Check = Check::ServerCredential;
    let credential = match read_credential(options, env) {
        Ok(Some(credential)) => credential,
        Ok(None) => {
            return match without {
                Some(answer) => (
                    Step::pass(STEP, "not needed: the server answered without one"),
                    Some(Minted {
                        answer,
                        credential: None,
                    }),
                ),
                None => (
                    Step::skip(
                        STEP,
                        "no credential given (--credential-env NAME or --credential-file FILE)",
                    ),
                    None,
                ),
            };
        }
        Err(e) => return (Step::fail(STEP, e, Diagnosis::SecretMissing), None),
    };
    let request = server
        .client
        .post(server.url.clone())
        .bearer_auth(credential.expose_secret());
    let secrets = [credential.expose_secret()];
    let step = match fetch(request, server.timeout).await {
        Ok(a) if (200..300).contains(&a.status) => {
            match crate::provider::remote::parse_answer(&a.body, &secrets) {
                Ok(_) => {
                    let step = Step::pass(
                        STEP,
                        format!("the credential is accepted: HTTP {} with a token", a.status),
                    );
                    let minted = Minted {
                        answer: a,
                        credential: Some(credential),
                    };
                    return (step, Some(minted));
                }
                Err(e) => Step::fail(
                    STEP,
                    format!("HTTP {} but {e}", a.status),
                    Diagnosis::TokenNotJson,
                ),
            }
        }
        Ok(a) => Step::fail(
            STEP,
            refusal(&a, &secrets),
            Diagnosis::from_token_status(a.status, true),
        ),
        Err(e) => e.step(STEP),
    };
    (step, None)
}

/// The CORS preflight a browser at `origin` sends before asking for a token.
async fn cors_step(server: &Server<'_>, origin: Option<&str>) -> Step {
    const STEP: Check = Check::ServerCors;
    let Some(origin) = origin else {
        return Step::skip(STEP, "no --origin given");
    };
    let request = server
        .client
        .request(reqwest::Method::OPTIONS, server.url.clone())
        .header(ORIGIN, origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(ACCESS_CONTROL_REQUEST_HEADERS, "authorization");
    match fetch(request, server.timeout).await {
        Ok(a) => {
            let allowed = a
                .headers
                .get(ACCESS_CONTROL_ALLOW_ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match allowed {
                Some(v) if v == origin || v == "*" => Step::pass(
                    STEP,
                    format!("{origin} may ask for tokens (Access-Control-Allow-Origin: {v})"),
                ),
                _ => Step::fail(
                    STEP,
                    format!(
                        "no Access-Control-Allow-Origin for {} (preflight HTTP {})",
                        crate::untrusted::for_terminal(origin),
                        a.status
                    ),
                    Diagnosis::CorsRefused,
                ),
            }
        }
        Err(e) => e.step(STEP),
    }
}

/// The token answer tells clients their budget.
fn rate_limit_step(headers: &HeaderMap) -> Step {
    const STEP: Check = Check::ServerRateLimitHeaders;
    if headers.contains_key("x-ratelimit-limit") && headers.contains_key("x-ratelimit-remaining") {
        Step::pass(
            STEP,
            format!(
                "X-RateLimit-Limit {}, X-RateLimit-Remaining {}",
                header_text(headers, "x-ratelimit-limit"),
                header_text(headers, "x-ratelimit-remaining")
            ),
        )
    } else {
        Step::warn(
            STEP,
            "no X-RateLimit-Limit / X-RateLimit-Remaining headers",
            Diagnosis::RateLimitHeadersMissing,
        )
    }
}

/// The token answer is kept out of caches.
fn cache_step(headers: &HeaderMap) -> Step {
    const STEP: Check = Check::ServerCacheControl;
    let cache = header_text(headers, CACHE_CONTROL.as_str());
    if cache.to_ascii_lowercase().contains("no-store") {
        Step::pass(STEP, format!("Cache-Control: {cache}"))
    } else {
        Step::fail(
            STEP,
            "the token answer has no Cache-Control: no-store",
            Diagnosis::TokenCacheable,
        )
    }
}

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

/// Why a request to the server got no answer to inspect: the words and their section.
struct NoAnswer {
    detail: String,
    diagnosis: Diagnosis,
}

impl NoAnswer {
    fn step(self, step: Check) -> Step {
        Step::fail(step, self.detail, self.diagnosis)
    }
}

/// Send `request` and read the answer: within `timeout`, its body at most
/// [`crate::files::MAX_ANSWER_BYTES`] (as the providers read one), or a failure that says what
/// happened (a broken or oversized answer is not a refused connection).
async fn fetch(request: reqwest::RequestBuilder, timeout: Duration) -> Result<Answer, NoAnswer> {
    let attempt = async {
        let mut response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = crate::provider::http::read_body(&mut response).await?;
        Ok::<_, reqwest::Error>((status, headers, body))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((_, _, body))) if body.is_over() => Err(NoAnswer {
            detail: crate::files::answer_too_large("the answer", crate::files::MAX_ANSWER_BYTES),
            diagnosis: Diagnosis::BadHttpAnswer,
        }),
        Ok(Ok((status, headers, body))) => Ok(Answer {
            status,
            headers,
            body: body.into_bytes(),
        }),
        Ok(Err(e)) => Err(NoAnswer {
            detail: crate::provider::http::chain(&e),
            diagnosis: probe::transport_diagnosis(&e),
        }),
        Err(_) => Err(NoAnswer {
            detail: format!("no answer within {}", humantime::format_duration(timeout)),
            diagnosis: Diagnosis::TcpFailure,
        }),
    }
}

/// `HTTP 302: the endpoint redirects to URL, ...` or `HTTP 500: "the server's words"`.
fn refusal(answer: &Answer, secrets: &[&str]) -> String {
    if (300..400).contains(&answer.status) {
        return format!(
            "HTTP {}: {}",
            answer.status,
            crate::provider::http::redirect_note(&answer.headers)
        );
    }
    format!(
        "HTTP {}: {}",
        answer.status,
        crate::provider::http::excerpt(&answer.body, secrets)
    )
}

/// The token of the answer opens one session at the configured streaming URL: `Begin`, then
/// closed at once.
async fn redeem_step(config: &Config, minted: &Minted) -> Step {
    const STEP: Check = Check::ServerRedeem;
    let secrets: Vec<&str> = minted
        .credential
        .iter()
        .map(ExposeSecret::expose_secret)
        .collect();
    let token = match crate::provider::remote::parse_answer(&minted.answer.body, &secrets) {
        Ok(doc) => crate::secret::Token::new(doc.secret, "remote"),
        Err(e) => return Step::fail(STEP, e, Diagnosis::TokenNotJson),
    };
    let fingerprint = token.fingerprint();
    let Dialed {
        connection,
        mut events,
        endpoint,
    } = match probe::dial(STEP, config, token) {
        Ok(dialed) => dialed,
        Err(step) => return *step,
    };
    let shown = crate::provider::http::display_url(&endpoint);
    let outcome = probe::wait_for_begin(&mut events, config.session.begin_timeout).await;
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
    probe::close(connection).await;
    step
}
