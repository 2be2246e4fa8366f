//! HTTP plumbing shared by the `api-key` and `remote` providers: one pooled client, a bounded
//! exchange, and the mapping of statuses and transport failures to [`ProviderError`] classes with
//! the server's own words, scrubbed.

use std::error::Error as _;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use url::Url;

use super::ProviderError;
use super::contract::mask_token_like;
use super::time::parse_retry_after;
use crate::diagnosis::Network;
use crate::files::{Capped, MAX_ANSWER_BYTES, answer_too_large};
use crate::secret::scrub;

/// Characters of a body quoted in an error.
const EXCERPT_CHARS: usize = 160;
/// Runs of token-like characters at least this long are masked in quotes. Real tokens are about
/// 100 characters; ordinary words and error codes are shorter.
pub(crate) const MASK_MIN_LEN: usize = 24;
/// A server asking for more than this is taken to mean "much later"; we still come back.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Who is asking where, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub provider: &'static str,
    /// Method and URL without credentials or query, e.g. `GET https://host/v3/token`.
    pub location: String,
    pub timeout: Duration,
}

/// What the server answered.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// At most [`MAX_ANSWER_BYTES`]: an error page is quoted from its start.
    pub body: Vec<u8>,
}

/// Read `response`'s body, at most [`MAX_ANSWER_BYTES`] of it (the rest is never read): the
/// providers, `serve`'s upstream and `doctor --server` all read answers through here. A token
/// answer is well under 1 KiB, and an error page need not be read whole to be quoted.
pub(crate) async fn read_body(response: &mut reqwest::Response) -> Result<Capped, reqwest::Error> {
    let mut body = Capped::new(MAX_ANSWER_BYTES);
    while let Some(chunk) = response.chunk().await? {
        if !body.push(&chunk) {
            break;
        }
    }
    Ok(body)
}

/// `; the endpoint redirects to URL, which is not followed: configure the final URL`, from a
/// 3xx answer's `Location` (shown without credentials or query).
pub(crate) fn redirect_note(headers: &HeaderMap) -> String {
    let target = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Url::parse(v).ok())
        .map(|u| format!(" to {}", display_url(&u)))
        .unwrap_or_default();
    format!("the endpoint redirects{target}, which is not followed: configure the final URL")
}

/// How to tell the user to fix a 400, a 401/403 or a 404/405 for this provider.
pub(crate) struct Hints<'a> {
    pub bad_request: &'a str,
    pub rejected: &'a str,
    pub not_found: &'a str,
}

/// The provider's pooled client. Redirects are not followed: a token endpoint does not move,
/// and following one could carry a credential to another host.
pub(crate) fn client(
    provider: &'static str,
    timeout: Duration,
) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .user_agent(concat!("aai-live/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::InvalidConfig {
            provider,
            location: "HTTP client".into(),
            status: None,
            detail: format!("cannot set up the HTTP client: {}", chain(&e)),
        })
}

/// A URL fit for messages: no user info, query or fragment (where credentials hide).
pub(crate) fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// Send `request` and read the answer (status, headers, capped body), all within the timeout.
pub(crate) async fn exchange(
    origin: &Origin,
    request: reqwest::RequestBuilder,
) -> Result<Reply, ProviderError> {
    let attempt = async {
        let mut response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_body(&mut response).await?;
        Ok::<_, reqwest::Error>((status, headers, body))
    };
    match tokio::time::timeout(origin.timeout, attempt).await {
        // A token answer that large is no token answer: say so rather than parse its start.
        Ok(Ok((status, _, body))) if body.is_over() && status.is_success() => {
            Err(ProviderError::Transient {
                provider: origin.provider,
                location: origin.location.clone(),
                status: Some(status.as_u16()),
                network: None,
                retry_after: None,
                detail: format!(
                    "HTTP {} but {}",
                    status.as_u16(),
                    answer_too_large("the answer", MAX_ANSWER_BYTES)
                ),
            })
        }
        Ok(Ok((status, headers, body))) => Ok(Reply {
            status,
            headers,
            body: body.into_bytes(),
        }),
        Ok(Err(e)) => Err(transport_error(origin, &e)),
        Err(_) => Err(ProviderError::Transient {
            provider: origin.provider,
            location: origin.location.clone(),
            status: None,
            network: Some(Network::Timeout),
            retry_after: None,
            detail: format!(
                "no complete answer within {} (provider.timeout)",
                humantime::format_duration(origin.timeout)
            ),
        }),
    }
}

fn transport_error(origin: &Origin, e: &reqwest::Error) -> ProviderError {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    ProviderError::Transient {
        provider: origin.provider,
        location: origin.location.clone(),
        status: None,
        network: network_of(e),
        retry_after: None,
        detail: format!("{what}: {}", chain(e)),
    }
}

/// The kind of a transport failure: reqwest's and the OS's typed facts first; the resolver and
/// the TLS stack report through boxed errors whose types are private to hyper-util and rustls,
/// so for those the words of their messages decide, here where the error is at hand.
pub(crate) fn network_of(e: &reqwest::Error) -> Option<Network> {
    if e.is_timeout() {
        return Some(Network::Timeout);
    }
    let mut words = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::TimedOut => return Some(Network::Timeout),
                ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::AddrNotAvailable => return Some(Network::Refused),
                _ => {}
            }
        }
        words.push_str(&s.to_string().to_ascii_lowercase());
        words.push(' ');
        source = s.source();
    }
    if words.contains("proxy") {
        Some(Network::Proxy)
    } else if words.contains("dns error")
        || words.contains("failed to lookup")
        || words.contains("name or service not known")
    {
        Some(Network::Dns)
    } else if words.contains("certificate") || words.contains("tls") || words.contains("handshake")
    {
        Some(Network::Tls)
    } else if e.is_connect() {
        Some(Network::Refused)
    } else {
        None
    }
}

/// An error and its sources on one line, without the URL (which may carry a query we do not
/// show).
/// An error and its sources on one line, the URL left out (the doctor says the same).
pub(crate) fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    // reqwest puts the URL in its top-level message; the location already names it.
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
        text = text.replace(url.as_str(), "[url]");
    }
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Classify a non-2xx answer.
pub(crate) fn status_error(
    origin: &Origin,
    reply: &Reply,
    hints: &Hints<'_>,
    secrets: &[&str],
) -> ProviderError {
    let code = reply.status.as_u16();
    let mut detail = describe_status(reply, secrets);
    let retry_after = reply
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
        .map(|d| d.min(MAX_RETRY_AFTER));
    let (provider, location) = (origin.provider, origin.location.clone());
    let with_hint = |mut detail: String, hint: &str| {
        if !hint.is_empty() {
            let _ = write!(detail, "; {hint}");
        }
        detail
    };
    match code {
        429 => {
            if let Some(d) = retry_after {
                let _ = write!(
                    detail,
                    "; the server asks to retry after {}",
                    humantime::format_duration(d)
                );
            }
            ProviderError::RateLimited {
                provider,
                location,
                status: code,
                retry_after,
                detail,
            }
        }
        401..=403 => ProviderError::Rejected {
            provider,
            location,
            status: Some(code),
            detail: with_hint(detail, hints.rejected),
        },
        400 | 422 => ProviderError::InvalidConfig {
            provider,
            location,
            status: Some(code),
            detail: with_hint(detail, hints.bad_request),
        },
        404 | 405 | 410 => ProviderError::InvalidConfig {
            provider,
            location,
            status: Some(code),
            detail: with_hint(detail, hints.not_found),
        },
        300..=399 => {
            let _ = write!(detail, "; {}", redirect_note(&reply.headers));
            ProviderError::InvalidConfig {
                provider,
                location,
                status: Some(code),
                detail,
            }
        }
        // Other client errors will not go away by themselves.
        400..=499 if code != 408 && code != 425 => ProviderError::InvalidConfig {
            provider,
            location,
            status: Some(code),
            detail,
        },
        // 408, 425, 5xx and anything unexpected: the next attempt may well work.
        _ => ProviderError::Transient {
            provider,
            location,
            status: Some(code),
            network: None,
            retry_after,
            detail,
        },
    }
}

/// `HTTP 401 Unauthorized: "the server's words"`.
fn describe_status(reply: &Reply, secrets: &[&str]) -> String {
    let mut detail = format!("HTTP {}", reply.status.as_u16());
    if let Some(reason) = reply.status.canonical_reason() {
        let _ = write!(detail, " {reason}");
    }
    if let Some(text) = server_text(&reply.body, secrets) {
        let _ = write!(detail, ": \"{text}\"");
    }
    detail
}

/// The server's own explanation: `error` (with `message` when both are given) of a JSON body,
/// else an excerpt of the body; scrubbed of `secrets` and of anything token-like.
pub(crate) fn server_text(body: &[u8], secrets: &[&str]) -> Option<String> {
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(body) {
        let field = |name: &str| match object.get(name) {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(v @ (serde_json::Value::Object(_) | serde_json::Value::Number(_))) => {
                Some(v.to_string())
            }
            _ => None,
        };
        let text = match (field("error"), field("message")) {
            (Some(e), Some(m)) if e != m => Some(format!("{e}: {m}")),
            (Some(e), _) => Some(e),
            (None, Some(m)) => Some(m),
            (None, None) => None,
        };
        if let Some(text) = text {
            return Some(clean(&text, secrets));
        }
    }
    let text = excerpt(body, secrets);
    (!text.is_empty()).then_some(text)
}

/// A 2xx body that is not the token answer, quoted so that no token it may hold is repeated,
/// whatever its length: a JSON document by its shape (keys and the kinds of their values), a
/// single word by its length (a word is what a token is), anything else (an HTML page) as an
/// excerpt, scrubbed and masked.
pub(crate) fn quote_answer(body: &[u8], secrets: &[&str]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        return crate::untrusted::json_shape(&value);
    }
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.chars().all(crate::secret::is_token_char) {
        return format!("one word of {} characters", trimmed.chars().count());
    }
    format!("\"{}\"", excerpt(body, secrets))
}

/// A short single-line excerpt of a body, scrubbed and masked.
pub(crate) fn excerpt(body: &[u8], secrets: &[&str]) -> String {
    clean(&String::from_utf8_lossy(body), secrets)
}

/// Scrub secrets and token-like runs first, then flatten and cut: cutting first could leave a
/// token's prefix too short to recognise.
fn clean(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        text = scrub(&text, secret);
    }
    let text = mask_token_like(&text, MASK_MIN_LEN);
    let flat: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if flat.chars().count() > EXCERPT_CHARS {
        let cut: String = flat.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            provider: "remote",
            location: "GET http://127.0.0.1:9/token".into(),
            timeout: Duration::from_secs(1),
        }
    }

    fn reply(code: u16, headers: &[(&'static str, &str)], body: &str) -> Reply {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().expect("header"));
        }
        Reply {
            status: StatusCode::from_u16(code).expect("status"),
            headers: map,
            body: body.as_bytes().to_vec(),
        }
    }

    const HINTS: Hints<'static> = Hints {
        bad_request: "fix the lifetimes",
        rejected: "fix the credential",
        not_found: "fix the URL",
    };

    #[test]
    fn statuses_map_to_classes() {
        use super::super::ProviderErrorClass as C;
        for (code, class) in [
            (400, C::InvalidConfig),
            (401, C::Rejected),
            (403, C::Rejected),
            (404, C::InvalidConfig),
            (405, C::InvalidConfig),
            (408, C::Transient),
            (418, C::InvalidConfig),
            (429, C::RateLimited),
            (500, C::Transient),
            (503, C::Transient),
            (302, C::InvalidConfig),
        ] {
            let e = status_error(&origin(), &reply(code, &[], ""), &HINTS, &[]);
            assert_eq!(e.class(), class, "{code}: {e}");
            assert!(e.to_string().contains(&format!("HTTP {code}")), "{e}");
            assert!(e.to_string().contains("http://127.0.0.1:9/token"), "{e}");
        }
    }

    #[test]
    fn retry_after_and_server_words() {
        let e = status_error(
            &origin(),
            &reply(
                429,
                &[("retry-after", "7")],
                r#"{"error":"Too many requests"}"#,
            ),
            &HINTS,
            &[],
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(e.to_string().contains("\"Too many requests\""), "{e}");
        let e = status_error(
            &origin(),
            &reply(
                401,
                &[],
                r#"{"error":"bad key sk-123","message":"see docs"}"#,
            ),
            &HINTS,
            &["sk-123"],
        );
        let text = e.to_string();
        assert!(text.contains("bad key [REDACTED]: see docs"), "{text}");
        assert!(text.contains("fix the credential"), "{text}");
        assert!(!text.contains("sk-123"));
        // A one-letter key is hidden where it stands alone, not inside every word; field names
        // are not token-like.
        let e = status_error(
            &origin(),
            &reply(
                401,
                &[],
                r#"{"error":"token o refused: max_session_duration_seconds too long"}"#,
            ),
            &HINTS,
            &["o"],
        );
        let text = e.to_string();
        assert!(
            text.contains("token [REDACTED] refused: max_session_duration_seconds too long"),
            "{text}"
        );
    }

    #[test]
    fn answers_that_are_not_tokens_are_quoted_by_shape() {
        assert_eq!(
            quote_answer(br#"{"token":"tok-123","expires_in_seconds":"soon"}"#, &[]),
            r#"{"expires_in_seconds": a string, "token": a string}"#
        );
        assert_eq!(quote_answer(b"abc123\n", &[]), "one word of 6 characters");
        assert_eq!(
            quote_answer(b"<html><p>Log in</p></html>", &[]),
            "\"<html><p>Log in</p></html>\""
        );
    }

    #[test]
    fn excerpts_are_short_single_line_and_masked() {
        let token = "AQICAHg".to_owned() + &"x".repeat(80) + "==";
        let body = format!(
            "<html>\n<body>\tyour token {token} {}</body>",
            "word ".repeat(100)
        );
        let text = excerpt(body.as_bytes(), &[]);
        assert!(!text.contains("AQICAHg"), "{text}");
        assert!(!text.contains('\n') && !text.contains('\t'));
        assert!(text.chars().count() <= EXCERPT_CHARS + 1);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        let url = Url::parse("https://user:pw@example.com/token?key=abc#x").expect("url");
        assert_eq!(display_url(&url), "https://example.com/token");
    }
}
