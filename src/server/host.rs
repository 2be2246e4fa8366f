//! Which name a request is addressed to (`Host`, or the authority of an absolute URI), checked
//! strictly so that the loopback-only endpoints fail closed.
//!
//! Without authentication `/token` answers only requests addressed to a loopback name, and
//! `/metrics` (unless public) only those too: otherwise a web page could reach them through DNS
//! rebinding (a name of the attacker's resolving to 127.0.0.1, the browser sending
//! `Host: evil.example`). The check used to split the header at its last `:` and accept what
//! came before it, so `localhost:80@evil` passed, and a `Host` that was not UTF-8 was skipped as
//! if absent. Now a value is accepted only when it is exactly `name[:port]` with `name`
//! `localhost`, an IPv4 address in 127.0.0.0/8, or `[::1]` (or an IPv4-mapped loopback), and
//! `port` 1-5 digits; anything else (userinfo, a path, spaces, control or non-ASCII bytes, two
//! `Host` headers, a `Host` that disagrees with the URI's authority) is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::http::{HeaderMap, HeaderValue, Uri, header};

/// The host part of a `Host` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostName<'a> {
    /// A registered name, as written (case kept).
    Name(&'a str),
    Ip(IpAddr),
}

impl HostName<'_> {
    pub fn is_loopback(&self) -> bool {
        match self {
            Self::Name(name) => name.eq_ignore_ascii_case("localhost"),
            Self::Ip(ip) => ip.to_canonical().is_loopback(),
        }
    }
}

/// A `Host` value that is not `name[:port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Host header is not name[:port]")]
pub struct HostError;

/// Parse `name[:port]`: a DNS name (letters, digits, `-`, `.`, `_`), an IPv4 address or an IPv6
/// address in brackets, and an optional port of 1-5 digits.
pub fn parse_host(value: &[u8]) -> Result<(HostName<'_>, Option<u16>), HostError> {
    let text = std::str::from_utf8(value).map_err(|_| HostError)?;
    if text.is_empty() || text.len() > 255 {
        return Err(HostError);
    }
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(HostError)?;
        let ip = inside.parse::<Ipv6Addr>().map_err(|_| HostError)?;
        let port = match after {
            "" => None,
            _ => Some(port(after.strip_prefix(':').ok_or(HostError)?)?),
        };
        (HostName::Ip(IpAddr::V6(ip)), port)
    } else {
        let (name, port) = match text.split_once(':') {
            Some((name, p)) => (name, Some(port(p)?)),
            None => (text, None),
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(HostError);
        }
        match name.parse::<Ipv4Addr>() {
            Ok(ip) => (HostName::Ip(IpAddr::V4(ip)), port),
            Err(_) => (HostName::Name(name), port),
        }
    };
    Ok((name, port))
}

fn port(text: &str) -> Result<u16, HostError> {
    if (1..=5).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().map_err(|_| HostError)
    } else {
        Err(HostError)
    }
}

/// Whether `value` is a `Host` naming this machine by a loopback name.
pub fn is_loopback_host(value: &[u8]) -> bool {
    parse_host(value).is_ok_and(|(name, _)| name.is_loopback())
}

/// Whether the request names a host at all: a `Host` header or an authority in its URI
/// (HTTP/2's `:authority`). `serve` answers no token request that names none: every client it
/// serves (browsers, curl, the `remote` provider) sends one, and a host is what the loopback
/// and origin checks read.
pub fn names_a_host(headers: &HeaderMap, uri: &Uri) -> bool {
    headers.contains_key(header::HOST) || uri.authority().is_some()
}

/// Whether the request names this host by a loopback name: every `Host` header (there must be
/// at most one) and the URI's authority, when present, must, and one of them must be there (a
/// request naming no host fails closed).
pub fn addressed_to_loopback(headers: &HeaderMap, uri: &Uri) -> bool {
    if !names_a_host(headers, uri) {
        return false;
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return false;
    }
    if host.is_some_and(|h| !is_loopback_host(h.as_bytes())) {
        return false;
    }
    uri.authority()
        .is_none_or(|authority| is_loopback_host(authority.as_str().as_bytes()))
}

/// The origin a browser addressed: `scheme://` and the request's `Host` (or the URI's authority
/// when there is no `Host`), normalised as browsers write `Origin` (lower case, the scheme's
/// default port left out). `None` unless that name passes [`parse_host`]: two `Host` headers, a
/// `Host` that is not exactly `name[:port]`, or one that disagrees with the URI's authority
/// name no origin.
pub fn request_origin(headers: &HeaderMap, uri: &Uri, scheme: &str) -> Option<String> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return None;
    }
    let authority = uri.authority().map(|a| a.as_str().as_bytes());
    let named = match (host.map(HeaderValue::as_bytes), authority) {
        (Some(host), Some(authority)) if !host.eq_ignore_ascii_case(authority) => return None,
        (Some(host), _) => host,
        (None, Some(authority)) => authority,
        (None, None) => return None,
    };
    let (name, port) = parse_host(named).ok()?;
    let name = match name {
        HostName::Name(name) => name.to_ascii_lowercase(),
        HostName::Ip(IpAddr::V4(ip)) => ip.to_string(),
        HostName::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
    };
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    Some(match port {
        Some(port) if port != default_port => format!("{scheme}://{name}:{port}"),
        _ => format!("{scheme}://{name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(host: &[u8]) -> bool {
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            axum::http::HeaderValue::from_bytes(host).expect("header"),
        );
        addressed_to_loopback(&h, &Uri::from_static("/token"))
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:8787",
            "127.0.0.1",
            "127.0.0.2:80",
            "[::1]:8787",
            "[::1]",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(check(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8787",
            "10.0.0.1:80",
            "[2001:db8::1]:80",
            "localhost.evil.example",
            // What used to pass: the name before the last ':'.
            "localhost:80@evil",
            "localhost:80@evil.example:80",
            "localhost:",
            "localhost:99999",
            "localhost:80:80",
            "user@localhost",
            "localhost/x",
            "[::1]x",
            "127.0.0.1 ",
            "",
        ] {
            assert!(!check(bad.as_bytes()), "{bad:?}");
        }
        // Not UTF-8: refused, not skipped.
        assert!(!check(b"localhost\xff"));
        assert!(!check(b"\xe4vil"));
        // Two Host headers.
        let mut h = HeaderMap::new();
        h.append(header::HOST, "localhost".parse().expect("header"));
        h.append(header::HOST, "localhost".parse().expect("header"));
        assert!(!addressed_to_loopback(&h, &Uri::from_static("/token")));
        // An absolute URI that names another host.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "localhost".parse().expect("header"));
        assert!(!addressed_to_loopback(
            &h,
            &Uri::from_static("http://evil.example/token")
        ));
        assert!(addressed_to_loopback(
            &h,
            &Uri::from_static("http://127.0.0.1:8787/token")
        ));
        // Neither (HTTP/1.0 without Host): no host named, refused.
        assert!(!addressed_to_loopback(
            &HeaderMap::new(),
            &Uri::from_static("/token")
        ));
        assert!(addressed_to_loopback(
            &HeaderMap::new(),
            &Uri::from_static("http://localhost:8787/token")
        ));
    }

    fn origin(host: &[&str], uri: &'static str, scheme: &str) -> Option<String> {
        let mut h = HeaderMap::new();
        for value in host {
            h.append(header::HOST, HeaderValue::from_str(value).expect("header"));
        }
        request_origin(&h, &Uri::from_static(uri), scheme)
    }

    #[test]
    fn origins_of_requests() {
        let http = |host: &str| origin(&[host], "/token", "http");
        assert_eq!(
            http("127.0.0.1:8787").as_deref(),
            Some("http://127.0.0.1:8787")
        );
        assert_eq!(
            http("Tokens.Example:80").as_deref(),
            Some("http://tokens.example")
        );
        assert_eq!(http("[::1]:8080").as_deref(), Some("http://[::1]:8080"));
        assert_eq!(
            origin(&["tokens.example:443"], "/token", "https").as_deref(),
            Some("https://tokens.example")
        );
        assert_eq!(
            origin(&["tokens.example:80"], "/token", "https").as_deref(),
            Some("https://tokens.example:80")
        );
        for forged in ["localhost:80@evil.example", "evil.example/x", "a b", ""] {
            assert_eq!(http(forged), None, "{forged:?}");
        }
        assert_eq!(origin(&["a.example", "b.example"], "/token", "http"), None);
        assert_eq!(
            origin(&["a.example"], "http://b.example/token", "http"),
            None,
            "Host and URI disagree"
        );
        assert_eq!(
            origin(&[], "http://b.example:8080/token", "http").as_deref(),
            Some("http://b.example:8080")
        );
        assert_eq!(origin(&[], "/token", "http"), None);
    }

    fn loopback_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("localhost".to_owned()),
            Just("LocalHost".to_owned()),
            any::<(u8, u8, u8)>().prop_map(|(a, b, c)| format!("127.{a}.{b}.{c}")),
            Just("[::1]".to_owned()),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_and_refuses_what_is_not_name_port(value in proptest::collection::vec(any::<u8>(), 0..300)) {
            let parsed = parse_host(&value);
            if value.iter().any(|b| !b.is_ascii_graphic()) || value.contains(&b'@') || value.contains(&b'/') {
                prop_assert!(parsed.is_err());
            }
        }

        #[test]
        fn loopback_names_with_ports_round_trip(name in loopback_name(), port in proptest::option::of(any::<u16>())) {
            let text = match port {
                Some(p) => format!("{name}:{p}"),
                None => name.clone(),
            };
            let (host, got) = parse_host(text.as_bytes()).expect("valid");
            prop_assert!(host.is_loopback());
            prop_assert_eq!(got, port);
        }

        /// Anything after a loopback name other than `:PORT` makes it not loopback.
        #[test]
        fn a_loopback_prefix_proves_nothing(name in loopback_name(), port in any::<u16>(), tail in "[@/ #?a-z.:]{1,20}") {
            let text = format!("{name}:{port}{tail}");
            prop_assume!(!tail.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!(!is_loopback_host(text.as_bytes()), "{}", text);
        }
    }
}
