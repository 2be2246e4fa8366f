//! Who is calling: the TCP peer's address, or, only when the peer is a trusted proxy
//! (`server.trusted_proxies`), the client address its `X-Forwarded-For` names.
//!
//! Behind a load balancer every peer is the balancer, so per-address refusal limits would hit
//! all clients at once; its `X-Forwarded-For` says who the client is. But anyone can send that
//! header, and each proxy *appends* the address it saw to what it received, so only the right
//! end of the list is vouched for. The client is therefore the **rightmost hop that is not a
//! trusted proxy**: walking from the right, trusted proxies are skipped and the first other
//! address is the answer. What a client writes itself sits to the left of that and is never read.
//!
//! - A peer that is not a trusted proxy is the client, whatever the header says.
//! - A hop that is not an address (`unknown`, garbage, an empty field) ends the walk: the answer
//!   is the nearest address already vouched for (the trusted hop to its right, or the peer).
//! - When every hop is a trusted proxy, the leftmost one is the client (an internal caller).
//! - At most [`MAX_HOPS`] hops are read, from the right; the header is parsed in place, so a
//!   huge or hostile header costs no allocation.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;

use crate::config::Cidr;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Hops read from the right of the header; a longer proxy chain is not a deployment anyone runs.
pub const MAX_HOPS: usize = 32;

/// The client's address for rate limits, logs and the `/metrics` check.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let values: Vec<&[u8]> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(axum::http::HeaderValue::as_bytes)
        .collect();
    rightmost_untrusted(&values, trusted, peer)
}

/// The rule of the module doc over the header's values (in the order received) from a trusted
/// `peer`.
pub fn rightmost_untrusted(values: &[&[u8]], trusted: &[Cidr], peer: IpAddr) -> IpAddr {
    let mut nearest = peer;
    let mut read = 0;
    for value in values.iter().rev() {
        for hop in value.rsplit(|b| *b == b',') {
            read += 1;
            if read > MAX_HOPS {
                return nearest;
            }
            let Some(ip) = parse_hop(hop) else {
                return nearest;
            };
            if !is_trusted(ip, trusted) {
                return ip;
            }
            nearest = ip;
        }
    }
    nearest
}

fn is_trusted(ip: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|block| block.contains(ip))
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:4711`, with spaces or tabs around it.
pub fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?.trim_matches([' ', '\t']);
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let ip = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else {
        let (addr, port) = text.rsplit_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(addr.parse().ok()?)
    };
    Some(ip.to_canonical())
}

fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().expect("cidr")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn hops() {
        for (text, want) in [
            ("192.0.2.1", Some("192.0.2.1")),
            (" 192.0.2.1:4711\t", Some("192.0.2.1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("::ffff:192.0.2.1", Some("192.0.2.1")),
            ("unknown", None),
            ("", None),
            ("192.0.2.1:99999", None),
            ("192.0.2.1:", None),
            ("[2001:db8::1]x", None),
            ("_hidden", None),
        ] {
            assert_eq!(parse_hop(text.as_bytes()), want.map(ip), "{text:?}");
        }
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let lb = ip("10.0.0.2");
        let from = |values: &[&str]| {
            let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
            rightmost_untrusted(&values, &trusted, lb)
        };
        assert_eq!(from(&["203.0.113.5"]), ip("203.0.113.5"));
        // The client wrote its own entries first: they are never read.
        assert_eq!(
            from(&["1.1.1.1, 2.2.2.2, 203.0.113.5, 10.0.0.7"]),
            ip("203.0.113.5")
        );
        // Over two header lines, in order.
        assert_eq!(
            from(&["1.1.1.1", "203.0.113.5, 10.0.0.7"]),
            ip("203.0.113.5")
        );
        // Garbage right of any client: the nearest vouched-for hop.
        assert_eq!(from(&["203.0.113.5, unknown, 10.0.0.7"]), ip("10.0.0.7"));
        assert_eq!(from(&["garbage"]), lb);
        assert_eq!(from(&[]), lb);
        // Only proxies: the leftmost.
        assert_eq!(from(&["10.1.1.1, 10.0.0.7"]), ip("10.1.1.1"));

        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, "203.0.113.5".parse().expect("value"));
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            client_addr(ip("198.51.100.1"), &headers, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(client_addr(lb, &headers, &trusted), ip("203.0.113.5"));
        // No trusted proxies configured: the header is never read.
        assert_eq!(client_addr(lb, &headers, &[]), lb);
        // A dual-stack socket's IPv4-mapped peer counts as the IPv4 address.
        assert_eq!(
            client_addr(ip("::ffff:10.0.0.2"), &headers, &trusted),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn long_headers_are_read_only_to_max_hops() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let proxies = vec!["10.0.0.1"; MAX_HOPS + 5].join(",");
        let value = format!("203.0.113.5,{proxies}");
        assert_eq!(
            rightmost_untrusted(&[value.as_bytes()], &trusted, ip("10.0.0.2")),
            ip("10.0.0.1")
        );
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(n.into())),
            any::<u128>().prop_map(|n| IpAddr::V6(n.into())),
        ]
        .prop_map(|ip| ip.to_canonical())
    }

    /// A hop as proxies write it: bare, with a port, IPv6 in brackets.
    fn written(ip: IpAddr, style: u8) -> String {
        match (ip, style % 3) {
            (IpAddr::V4(v4), 1) => format!("{v4}:{}", 1000 + u16::from(style)),
            (IpAddr::V6(v6), 1) => format!("[{v6}]:{}", 1000 + u16::from(style)),
            (IpAddr::V6(v6), 2) => format!("[{v6}]"),
            _ => ip.to_string(),
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..4),
            peer in any_ip(),
            trusted_all in any::<bool>(),
        ) {
            let trusted = if trusted_all { cidrs(&["0.0.0.0/0", "::/0"]) } else { cidrs(&["10.0.0.0/8"]) };
            let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let _ = rightmost_untrusted(&values, &trusted, peer);
            for value in &values {
                let _ = parse_hop(value);
            }
        }

        /// Whatever a client writes to the left, the answer is the rightmost hop outside the
        /// trusted blocks (or the leftmost proxy when all are proxies): a model walk over the
        /// addresses, against the parser over the header text.
        #[test]
        fn picks_the_rightmost_untrusted_hop(
            prefix in proptest::collection::vec(any::<u8>(), 0..60),
            chain in proptest::collection::vec((any_ip(), any::<u8>(), any::<bool>()), 1..8),
            split in any::<usize>(),
        ) {
            let trusted = cidrs(&["10.0.0.0/8", "fd00::/8"]);
            let peer = ip("10.9.9.9");
            // Some hops are proxies (moved into the trusted blocks), the others anything.
            let hops: Vec<IpAddr> = chain
                .iter()
                .map(|(ip, _, proxy)| match (ip, proxy) {
                    (IpAddr::V4(v4), true) => IpAddr::V4(((u32::from(*v4) & 0x00ff_ffff) | 0x0a00_0000).into()),
                    (IpAddr::V6(v6), true) => IpAddr::V6(((u128::from(*v6) & (u128::MAX >> 8)) | (0xfd_u128 << 120)).into()),
                    (ip, false) => *ip,
                })
                .map(|ip| ip.to_canonical())
                .collect();
            let untrusted = |ip: &IpAddr| !trusted.iter().any(|c| c.contains(*ip));
            let expected = hops
                .iter()
                .rev()
                .find(|ip| untrusted(ip))
                .copied()
                .unwrap_or(hops[0]);
            let text: Vec<String> = hops
                .iter()
                .zip(&chain)
                .map(|(ip, (_, style, _))| written(*ip, *style))
                .collect();
            // The client's own bytes, then the hops, over two header lines split anywhere (the
            // second never empty: an empty last value is itself an unparseable hop).
            let at = split % text.len();
            let mut first = prefix;
            first.push(b',');
            first.extend_from_slice(text[..at].join(",").as_bytes());
            let second = text[at..].join(", ");
            let got = rightmost_untrusted(&[first.as_slice(), second.as_bytes()], &trusted, peer);
            if hops.iter().any(untrusted) {
                prop_assert_eq!(got, expected);
            } else if at == 0 {
                // Only proxies, and nothing of theirs in the client's line: the leftmost proxy.
                prop_assert_eq!(got, hops[0]);
            }
        }
    }
}
