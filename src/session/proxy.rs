//! HTTP proxies for the streaming connection: which proxy the environment names for a URL
//! (`HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`, `NO_PROXY`, as reqwest reads them for the token
//! requests), how a proxy is shown (never its credentials), and the `CONNECT` exchange that turns
//! a TCP stream to the proxy into a tunnel to the service.
//!
//! It knows nothing of WebSockets or of the connection's errors: `connection::connect` reaches
//! the proxy, asks for the tunnel here and words what went wrong, so the file edges point one
//! way (connection → proxy).

use std::time::Duration;

use tokio::net::TcpStream;

/// The largest proxy answer to `CONNECT` read (its status line and headers).
const MAX_PROXY_ANSWER: usize = 8 * 1024;

/// The proxy settings of the environment, read as reqwest reads them for the token requests:
/// `wss://` (like `https://`) goes through `HTTPS_PROXY`/`https_proxy`, else
/// `ALL_PROXY`/`all_proxy`; `ws://` (like `http://`) through `HTTP_PROXY`/`http_proxy`, else
/// `ALL_PROXY`; `NO_PROXY`/`no_proxy` lists hosts that bypass it. Only `http://` proxies are
/// spoken (HTTP `CONNECT`); TLS to the service runs end to end through the tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    pub https: Option<String>,
    pub http: Option<String>,
    pub all: Option<String>,
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// From the process environment (upper case first, as reqwest does).
    pub fn process() -> Self {
        Self::from_env(&|name| std::env::var(name).ok())
    }

    /// From an environment given as a function.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let get = |upper: &str, lower: &str| {
            env(upper)
                .or_else(|| env(lower))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Self {
            https: get("HTTPS_PROXY", "https_proxy"),
            http: get("HTTP_PROXY", "http_proxy"),
            all: get("ALL_PROXY", "all_proxy"),
            no_proxy: get("NO_PROXY", "no_proxy"),
        }
    }

    /// The proxy for `url`, if any (`Err` when the variable does not hold a usable proxy URL).
    pub fn proxy_for(&self, url: &url::Url) -> Result<Option<url::Url>, String> {
        let Some(host) = url.host_str() else {
            return Ok(None);
        };
        if self.bypassed(host) {
            return Ok(None);
        }
        let chosen = match url.scheme() {
            "wss" | "https" => self.https.as_ref().or(self.all.as_ref()),
            _ => self.http.as_ref().or(self.all.as_ref()),
        };
        let Some(value) = chosen else {
            return Ok(None);
        };
        // "proxy:3128" without a scheme means http://, as in reqwest and curl.
        let text = if value.contains("://") {
            value.clone()
        } else {
            format!("http://{value}")
        };
        let proxy =
            url::Url::parse(&text).map_err(|e| format!("the proxy setting is not a URL ({e})"))?;
        if proxy.scheme() != "http" {
            return Err(format!(
                "{} proxies are not supported for the streaming connection (only http://)",
                proxy.scheme()
            ));
        }
        Ok(Some(proxy))
    }

    /// `NO_PROXY`: `*`, host names (matching the name and its subdomains, with or without a
    /// leading dot) and IP addresses, comma-separated; ports are ignored.
    fn bypassed(&self, host: &str) -> bool {
        let Some(list) = &self.no_proxy else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        list.split(',').map(str::trim).any(|entry| {
            let entry = entry.to_ascii_lowercase();
            let entry = entry.trim_start_matches('.');
            let entry = entry
                .strip_prefix('[')
                .and_then(|e| e.split_once(']').map(|(h, _)| h))
                .unwrap_or_else(|| {
                    // "host:port": the port is ignored (an IPv6 address has several colons).
                    match entry.rsplit_once(':') {
                        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h,
                        _ => entry,
                    }
                });
            !entry.is_empty()
                && (entry == "*" || host == entry || host.ends_with(&format!(".{entry}")))
        })
    }
}

/// A proxy URL fit for messages: scheme, host and port, no credentials.
pub fn display_proxy(proxy: &url::Url) -> String {
    let (host, port) = proxy_address(proxy);
    format!("{}://{host}:{port}", proxy.scheme())
}

/// Where the proxy listens: its host and port (80 when the URL names none, as for `http://`).
pub fn proxy_address(proxy: &url::Url) -> (&str, u16) {
    (
        proxy.host_str().unwrap_or_default(),
        proxy.port_or_known_default().unwrap_or(80),
    )
}

/// Why the proxy gave no tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelError {
    /// The exchange failed or took too long: as good as an unreachable proxy.
    Unreachable(String),
    /// The proxy answered, but not with 2xx: its status (when the line has one) and its status
    /// line, made safe to show.
    Refused { status: Option<u16>, line: String },
}

/// Ask the proxy at the other end of `tcp` for a tunnel to `host:port`: `CONNECT`, with
/// `Proxy-Authorization: Basic` when the proxy URL carries credentials (never shown), then a 2xx
/// answer, all within `within`. On `Ok` the stream is the tunnel.
pub async fn tunnel(
    tcp: &mut TcpStream,
    proxy: &url::Url,
    host: &str,
    port: u16,
    within: Duration,
) -> Result<(), TunnelError> {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if !proxy.username().is_empty() {
        let user = percent_decode(proxy.username());
        let password = percent_decode(proxy.password().unwrap_or_default());
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        head.push_str("Proxy-Authorization: Basic ");
        head.push_str(&credentials);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let exchange = async {
        tcp.write_all(head.as_bytes()).await?;
        // Byte by byte up to the blank line: nothing of the tunnel's own data may be read here.
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\n") && answer.len() < MAX_PROXY_ANSWER {
            let byte = tcp.read_u8().await?;
            answer.push(byte);
        }
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(within, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            return Err(TunnelError::Unreachable(format!(
                "the CONNECT exchange failed: {e}"
            )));
        }
        Err(_) => {
            return Err(TunnelError::Unreachable(format!(
                "no answer to CONNECT within {} s",
                within.as_secs()
            )));
        }
    };
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(200..=299) => Ok(()),
        _ => Err(TunnelError::Refused {
            status,
            line: crate::untrusted::for_terminal(status_line.trim()).to_string(),
        }),
    }
}

/// `%40` → `@` in a proxy URL's user or password.
fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_are_shown_without_credentials() {
        let proxy = url::Url::parse("http://us%40er:p%2Bw@proxy.example:3128").expect("url");
        assert_eq!(display_proxy(&proxy), "http://proxy.example:3128");
        assert_eq!(percent_decode(proxy.username()), "us@er");
        assert_eq!(percent_decode(proxy.password().unwrap_or_default()), "p+w");
        let bare = url::Url::parse("http://proxy.example").expect("url");
        assert_eq!(display_proxy(&bare), "http://proxy.example:80");
        assert_eq!(proxy_address(&bare), ("proxy.example", 80));
    }

    #[test]
    fn no_proxy_matches_names_suffixes_and_addresses() {
        let env = |no_proxy: &str| ProxyEnv {
            all: Some("http://p:1".into()),
            no_proxy: Some(no_proxy.into()),
            ..ProxyEnv::default()
        };
        let on = |e: &ProxyEnv, u: &str| {
            e.proxy_for(&url::Url::parse(u).expect("url"))
                .expect("ok")
                .is_some()
        };
        assert!(!on(&env("127.0.0.1"), "ws://127.0.0.1:9/v3/ws"));
        assert!(on(&env("127.0.0.2"), "ws://127.0.0.1:9/v3/ws"));
        assert!(!on(&env("[::1]:9"), "ws://[::1]:9/v3/ws"));
        assert!(!on(&env("example.com"), "wss://a.b.example.com/v3/ws"));
        assert!(on(&env("example.com"), "wss://notexample.com/v3/ws"));
        assert!(on(&env(""), "wss://example.com/v3/ws"));
    }
}
