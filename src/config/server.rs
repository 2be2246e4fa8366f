//! Value types of the `[server]` section (`aai-live serve`): rates, CIDRs, browser origins and the
//! limits store's address. Each is parsed here once, for the config file, `serve`'s flags (which
//! become config overrides) and `aai_live::server` alike, so a value means the same wherever it
//! is written.
//!
//! They live in `config` rather than in `server` because the config validates them (every
//! problem named with its key and origin) and `config` depends on no module above `protocol`;
//! `server` re-exports what it uses.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

/// "N requests per period", refilled evenly: `10/min` allows a burst of 10, then one more every
/// 6 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: NonZeroU32,
    pub per: Duration,
}

/// The longest period a rate may have: the limits store counts in microseconds with Lua's doubles
/// (exact up to 2^53 µs, 285 years), and a longer budget is a misprint anyway.
const MAX_PERIOD: Duration = Duration::from_secs(366 * 86_400);

impl RateSpec {
    /// Time for one request to come back: `per / count`.
    pub fn interval(self) -> Duration {
        self.per / self.count.get()
    }
}

/// Why a rate text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate {text:?}: {reason} (write N/PERIOD, e.g. \"30/min\", \"5/s\", \"100/h\", \"10/90s\")"
)]
pub struct RateSpecError {
    pub text: String,
    pub reason: &'static str,
}

impl FromStr for RateSpec {
    type Err = RateSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| RateSpecError {
            text: text.to_owned(),
            reason,
        };
        let (count, period) = text.trim().split_once('/').ok_or_else(|| err("no '/'"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| err("the count is not a whole number"))?;
        let count = NonZeroU32::new(count).ok_or_else(|| err("the count must be at least 1"))?;
        let period = period.trim();
        let per = match period {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => humantime::parse_duration(other).map_err(|_| err("unknown period"))?,
        };
        // Below a microsecond per request the limiter cannot represent the refill.
        if per.is_zero() || per / count.get() < Duration::from_micros(1) {
            return Err(err("the period is too short for the count"));
        }
        if per > MAX_PERIOD {
            return Err(err("the period must be at most a year"));
        }
        Ok(Self { count, per })
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.count;
        match self.per.as_secs() {
            1 if self.per.subsec_nanos() == 0 => write!(f, "{count}/s"),
            60 if self.per.subsec_nanos() == 0 => write!(f, "{count}/min"),
            3600 if self.per.subsec_nanos() == 0 => write!(f, "{count}/h"),
            86_400 if self.per.subsec_nanos() == 0 => write!(f, "{count}/day"),
            _ => write!(f, "{count}/{}", humantime::format_duration(self.per)),
        }
    }
}

/// A rate or "off": the value of `server.rate_limit` and the other limits, and of their flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSetting(pub Option<RateSpec>);

impl FromStr for LimitSetting {
    type Err = RateSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "off" | "none" | "unlimited" => Ok(Self(None)),
            other => other.parse().map(|spec| Self(Some(spec))),
        }
    }
}

impl fmt::Display for LimitSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(spec) => spec.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// An address block, `10.0.0.0/8` or `fd00::/8` (a bare address is a block of one): an entry of
/// `server.trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the block. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a
    /// dual-stack socket reports for an IPv4 peer) are compared as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const SYNTAX: &str = "must be an address block such as \"10.0.0.0/8\", \"192.168.1.7/32\", \
                              \"fd00::/8\" or a single address";
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| SYNTAX.to_owned())?;
        // A block of IPv4-mapped addresses is the IPv4 block it maps.
        let network = network.to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("the prefix length must be 0-{bits} ({SYNTAX})"))?,
        };
        let block = Self { network, prefix };
        // Host bits set ("10.0.0.1/8") usually means a typo in the address or the length.
        if block.masked() != network {
            return Err(format!(
                "has bits set after the first {prefix}: did you mean \"{}/{prefix}\"?",
                block.masked()
            ));
        }
        Ok(block)
    }
}

impl Cidr {
    fn masked(&self) -> IpAddr {
        match self.network {
            IpAddr::V4(net) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(net) & mask).into())
            }
            IpAddr::V6(net) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(net) & mask).into())
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A browser origin as browsers send it in `Origin`: `scheme://host[:port]`, lower-case, the
/// default port left out. `Err` is the rule the text breaks.
pub fn parse_origin(text: &str) -> Result<String, String> {
    const SYNTAX: &str = "write scheme://host[:port], e.g. https://app.example.com";
    if text.trim() == "*" {
        return Err(format!(
            "would let every web page mint tokens; list the origins of your pages ({SYNTAX})"
        ));
    }
    let url = Url::parse(text.trim()).map_err(|_| format!("is not a URL ({SYNTAX})"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!("is not an origin ({SYNTAX})"));
    }
    Ok(url.origin().ascii_serialization())
}

/// Where `serve` keeps its rate limits (`server.limits_store`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LimitsStore {
    /// In this process: exact for one replica, per replica for several.
    #[default]
    Memory,
    /// A Redis (or Valkey) server shared by every replica.
    Redis(RedisAddress),
}

impl FromStr for LimitsStore {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "memory" {
            return Ok(Self::Memory);
        }
        text.parse().map(Self::Redis)
    }
}

impl fmt::Display for LimitsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Redis(address) => address.fmt(f),
        }
    }
}

/// `redis://[USER@]HOST[:PORT][/DB]` or `rediss://...` (TLS). Never holds a password: that comes
/// from `server.limits_store_password_env` or `_file`, so the URL can be logged and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAddress {
    url: Url,
}

/// Redis's default port.
const REDIS_PORT: u16 = 6379;

impl RedisAddress {
    pub fn tls(&self) -> bool {
        self.url.scheme() == "rediss"
    }

    /// The host name or address (IPv6 without brackets).
    pub fn host(&self) -> String {
        match self.url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => String::new(),
        }
    }

    pub fn port(&self) -> u16 {
        self.url.port().unwrap_or(REDIS_PORT)
    }

    /// The database number (0 when the URL has no path).
    pub fn db(&self) -> i64 {
        self.url.path().trim_start_matches('/').parse().unwrap_or(0)
    }

    /// The ACL user name, if the URL has one (`redis://limits@host`), percent-decoded.
    pub fn username(&self) -> Option<String> {
        let user = self.url.username();
        (!user.is_empty()).then(|| percent_decode(user))
    }
}

impl FromStr for RedisAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const SYNTAX: &str = "must be \"memory\" or a Redis URL, \"redis://HOST:PORT/DB\" or \
                              \"rediss://HOST:PORT/DB\" (TLS)";
        let url = Url::parse(text).map_err(|_| SYNTAX.to_owned())?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(SYNTAX.to_owned());
        }
        if url.password().is_some() {
            return Err(
                "must not hold a password (URLs end up in logs and process lists): \
                        set `server.limits_store_password_env` or \
                        `server.limits_store_password_file`"
                    .to_owned(),
            );
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("has no host ({SYNTAX})"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("must have no query or fragment ({SYNTAX})"));
        }
        let db = url.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<u16>().is_err() {
            return Err(format!(
                "the path must be a database number, e.g. /0 ({SYNTAX})"
            ));
        }
        Ok(Self { url })
    }
}

impl fmt::Display for RedisAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

/// `%XX` escapes decoded (the URL parser keeps them in the user name); invalid escapes are kept.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> RateSpec {
        s.parse().expect("valid spec")
    }

    #[test]
    fn rates_parse_and_print() {
        for (text, count, secs, shown) in [
            ("30/min", 30, 60, "30/min"),
            ("5/s", 5, 1, "5/s"),
            (" 100 / hour ", 100, 3600, "100/h"),
            ("10/90s", 10, 90, "10/1m 30s"),
            ("1/day", 1, 86_400, "1/day"),
        ] {
            let s = spec(text);
            assert_eq!((s.count.get(), s.per), (count, Duration::from_secs(secs)));
            assert_eq!(s.to_string(), shown);
            assert_eq!(spec(&s.to_string()), s, "round trip of {shown}");
        }
        assert_eq!(spec("3/min").interval(), Duration::from_secs(20));
        for bad in [
            "",
            "30",
            "0/min",
            "x/min",
            "5/fortnight",
            "-1/s",
            "5000000/1us",
            "1/2years",
        ] {
            let e = bad.parse::<RateSpec>().expect_err(bad);
            assert!(e.to_string().contains("N/PERIOD"), "{e}");
        }
        assert_eq!("off".parse::<LimitSetting>(), Ok(LimitSetting(None)));
        assert_eq!(LimitSetting(None).to_string(), "off");
        assert_eq!(
            "2/s".parse::<LimitSetting>().map(|l| l.to_string()),
            Ok("2/s".into())
        );
    }

    #[test]
    fn cidrs() {
        let block: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(block.contains("10.200.3.4".parse().expect("ip")));
        assert!(block.contains("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!block.contains("11.0.0.1".parse().expect("ip")));
        assert!(!block.contains("::1".parse().expect("ip")));
        let one: Cidr = "127.0.0.1".parse().expect("cidr");
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("203.0.113.9".parse().expect("ip")));
        let v6: Cidr = "fd00::/8".parse().expect("cidr");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!(!v6.contains("fe80::1".parse().expect("ip")));
        assert_eq!(
            "::ffff:10.0.0.0/8".parse::<Cidr>().map(|c| c.to_string()),
            Ok("10.0.0.0/8".into())
        );
        for (bad, want) in [
            ("10.0.0.1/8", "did you mean \"10.0.0.0/8\""),
            ("10.0.0.0/33", "0-32"),
            ("fd00::/129", "0-128"),
            ("localhost", "address block"),
            ("10.0.0.0/x", "0-32"),
        ] {
            let e = bad.parse::<Cidr>().expect_err(bad);
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn origins_are_normalised_and_checked() {
        for (text, want) in [
            ("https://App.Example.com", "https://app.example.com"),
            ("http://localhost:3000/", "http://localhost:3000"),
            ("https://example.com:443", "https://example.com"),
        ] {
            assert_eq!(parse_origin(text).as_deref(), Ok(want));
        }
        for bad in [
            "*",
            "example.com",
            "https://example.com/app",
            "ftp://x",
            "https://u@x",
            "https://x/#y",
        ] {
            let e = parse_origin(bad).expect_err(bad);
            assert!(e.contains("scheme://host"), "{e}");
        }
        assert!(parse_origin("*").expect_err("*").contains("every web page"));
    }

    #[test]
    fn limits_stores() {
        assert_eq!("memory".parse::<LimitsStore>(), Ok(LimitsStore::Memory));
        let LimitsStore::Redis(r) = "redis://10.0.0.5:6380/2"
            .parse::<LimitsStore>()
            .expect("redis")
        else {
            panic!("not redis");
        };
        assert_eq!(
            (r.host(), r.port(), r.db(), r.tls(), r.username()),
            ("10.0.0.5".into(), 6380, 2, false, None)
        );
        let LimitsStore::Redis(r) = "rediss://lim%40its@[::1]"
            .parse::<LimitsStore>()
            .expect("tls")
        else {
            panic!("not redis");
        };
        assert_eq!(
            (r.host(), r.port(), r.db(), r.tls(), r.username()),
            ("::1".into(), 6379, 0, true, Some("lim@its".into()))
        );
        assert_eq!(r.to_string(), "rediss://lim%40its@[::1]");
        for (bad, want) in [
            ("redis://:hunter2@host:6379/0", "must not hold a password"),
            ("redis://user:hunter2@host/0", "must not hold a password"),
            ("http://host", "must be \"memory\" or a Redis URL"),
            ("Memory", "must be \"memory\""),
            ("redis://host/zero", "database number"),
            ("redis://host/0?timeout=1", "no query"),
            ("redis:///0", "no host"),
        ] {
            let e = bad.parse::<LimitsStore>().expect_err(bad);
            assert!(e.contains(want), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn rates_round_trip(count in 1_u32..=100_000, secs in 1_u64..=86_400 * 366) {
                let spec = RateSpec { count: NonZeroU32::new(count).expect("nonzero"), per: Duration::from_secs(secs) };
                prop_assume!(spec.interval() >= Duration::from_micros(1));
                prop_assert_eq!(spec.to_string().parse::<RateSpec>(), Ok(spec));
            }

            #[test]
            fn cidrs_round_trip(addr in any::<u32>(), prefix in 0_u8..=32) {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                let text = format!("{}/{prefix}", std::net::Ipv4Addr::from(addr & mask));
                let block: Cidr = text.parse().expect("valid");
                prop_assert_eq!(block.to_string(), text);
                prop_assert!(block.contains(IpAddr::V4((addr & mask).into())));
            }

            #[test]
            fn values_never_panic(text in "\\PC{0,80}") {
                let _ = text.parse::<RateSpec>();
                let _ = text.parse::<LimitSetting>();
                let _ = text.parse::<Cidr>();
                let _ = parse_origin(&text);
                let _ = text.parse::<LimitsStore>();
            }

            /// A password in a store URL is refused, and neither the refusal nor the redacted
            /// value shown with it repeats it.
            #[test]
            fn store_passwords_are_never_echoed(user in "[a-z]{0,8}", password in "[A-Za-z0-9]{6,30}", host in "[a-z]{1,10}") {
                let url = format!("redis://{user}:{password}@{host}:6379/0");
                let e = url.parse::<LimitsStore>().expect_err("a password");
                prop_assert!(!e.contains(&password), "{}", e);
                prop_assert!(!crate::protocol::params::redact_url_text(&url).contains(&password));
            }
        }
    }
}
