//! Every diagnosis aai-live can make about a failure, one enum, each with its section of
//! docs/troubleshooting.md (embedded in the binary, printed by `aai-live explain`).
//!
//! The classifiers here turn what the code already knows — a close code with its reason, a
//! token provider's error, an HTTP status — into a [`Diagnosis`], so `aai-live doctor`, the
//! dashboard's problem panel and the headless runner point at the same section. A test walks
//! every variant and fails when one has no section, and another fails when a section of the page
//! is reached by no variant: the page and the code cannot drift apart.

/// The troubleshooting page, as shipped.
pub const PAGE: &str = include_str!("../docs/troubleshooting.md");

/// One thing that can be wrong, named after what the user sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumIter)]
pub enum Diagnosis {
    // --- Set-up --------------------------------------------------------------------------------
    /// The configuration does not validate.
    ConfigInvalid,
    /// No API key (or token-server credential) where the configuration says it is.
    SecretMissing,
    /// A key, credential or token file others may read.
    SecretReadableByOthers,
    // --- The token endpoint (AssemblyAI's, or the emulator's) ----------------------------------
    TokenBadRequest,
    TokenUnauthorized,
    TokenForbidden,
    TokenNotFound,
    TokenTooLarge,
    TokenRateLimited,
    TokenServerError,
    /// HTTP 200 with a body that is not the token JSON (an HTML login or error page).
    TokenNotJson,
    /// No complete answer within `provider.timeout`.
    TokenTimeout,
    // --- A token server (`aai-live serve`, through the remote provider) ------------------------
    ServeBadRequest,
    ServeUnauthorized,
    /// 403: an origin or host the server does not serve.
    ServeForbidden,
    ServeNotFound,
    /// 3xx: the token server redirects (redirects are never followed).
    ServeRedirect,
    ServeTooLarge,
    ServeRateLimited,
    /// 502/503: AssemblyAI refused or failed the server's mint, or the server is busy.
    ServeUnavailable,
    /// `/readyz` answers 503: the shared limits store (Redis) is down.
    ServeLimitsStoreDown,
    /// No CORS headers for the page's origin: the browser refuses the answer.
    CorsRefused,
    /// No `X-RateLimit-*` headers: a server that is not `aai-live serve`, or a proxy that drops
    /// them.
    RateLimitHeadersMissing,
    /// The token answer may be cached (`Cache-Control` without `no-store`).
    TokenCacheable,
    // --- The network -----------------------------------------------------------------------------
    DnsFailure,
    /// Connection refused, unreachable or timed out at the TCP level.
    TcpFailure,
    TlsFailure,
    ProxyFailure,
    /// Connected, but what came back is not a usable HTTP answer: a header block or body over
    /// what aai-live reads, or not HTTP at all.
    BadHttpAnswer,
    // --- The token file --------------------------------------------------------------------------
    TokenFileMissing,
    /// The file holds an expired or already used token.
    TokenFileStale,
    // --- The streaming WebSocket -----------------------------------------------------------------
    /// The upgrade was answered with an HTTP status (a wrong path, a proxy, a refused token).
    UpgradeRefused,
    Close1000,
    /// No close frame: the connection dropped.
    Close1006,
    Close1008TokenUsed,
    Close1008TokenExpired,
    Close1008InvalidAuth,
    Close1008MissingAuth,
    Close1008Account,
    Close1008TooManySessions,
    Close1008IncorrectPadding,
    Close1009,
    Close1011,
    Close3005,
    Close3006Inactivity,
    Close3006InvalidMessage,
    Close3007,
    Close3008,
    Close3009,
    /// The v2 4001–4003 codes: not authorized, no funds, a paid-only feature on the free tier.
    FreeTier,
    /// Closed before `Begin` arrived, with no reason the rules above recognise.
    CloseBeforeBegin,
    /// Connected, but no `Begin` within `session.begin_timeout`.
    NoBegin,
    /// `Terminate` sent but no `Termination` came back.
    NoTermination,
    /// More tokens than the mint budget allows without a session that lasted: minting paused.
    MintBudget,
    // --- This machine ----------------------------------------------------------------------------
    /// `Begin.expires_at` or the token answer's `Date` disagree with this machine's clock.
    ClockSkew,
    /// No microphone, or the named device is not there.
    NoInputDevice,
    /// The input delivers only zeros.
    SilentInput,
    /// The input opened but delivered nothing.
    NoAudioFrames,
    /// alsa-lib's own complaints ("Unknown PCM", "underrun").
    AlsaMessages,
    TranscriptDirNotWritable,
    LogDirNotWritable,
    /// The audio input or one of aai-live's own tasks failed mid-run.
    LocalFailure,
}

impl Diagnosis {
    /// The section of docs/troubleshooting.md (its anchor, and the topic of `aai-live explain`).
    pub fn section(self) -> &'static str {
        match self {
            Self::ConfigInvalid => "config",
            Self::SecretMissing => "no-key",
            Self::SecretReadableByOthers => "secret-permissions",
            Self::TokenBadRequest => "token-400",
            Self::TokenUnauthorized => "token-401",
            Self::TokenForbidden => "token-403",
            Self::TokenNotFound => "token-404",
            Self::TokenTooLarge => "token-413",
            Self::TokenRateLimited => "token-429",
            Self::TokenServerError => "token-5xx",
            Self::TokenNotJson => "token-html",
            Self::TokenTimeout => "token-timeout",
            Self::ServeBadRequest => "serve-400",
            Self::ServeUnauthorized => "serve-401",
            Self::ServeForbidden => "serve-403",
            Self::ServeNotFound => "serve-404",
            Self::ServeRedirect => "serve-3xx",
            Self::ServeTooLarge => "serve-413",
            Self::ServeRateLimited => "serve-429",
            Self::ServeUnavailable => "serve-5xx",
            Self::ServeLimitsStoreDown => "readyz",
            Self::CorsRefused => "cors",
            Self::RateLimitHeadersMissing => "rate-limit-headers",
            Self::TokenCacheable => "no-store",
            Self::DnsFailure => "dns",
            Self::TcpFailure => "tcp",
            Self::TlsFailure => "tls",
            Self::ProxyFailure => "proxy",
            Self::BadHttpAnswer => "http-answer",
            Self::TokenFileMissing => "token-file-missing",
            Self::TokenFileStale => "token-file-stale",
            Self::UpgradeRefused => "ws-http",
            Self::Close1000 => "1000",
            Self::Close1006 => "1006",
            Self::Close1008TokenUsed => "1008-token-used",
            Self::Close1008TokenExpired => "1008-token-expired",
            Self::Close1008InvalidAuth => "1008-invalid-key",
            Self::Close1008MissingAuth => "1008-missing-auth",
            Self::Close1008Account => "1008-account",
            Self::Close1008TooManySessions => "1008-too-many-sessions",
            Self::Close1008IncorrectPadding => "1008-incorrect-padding",
            Self::Close1009 => "1009",
            Self::Close1011 => "1011",
            Self::Close3005 => "3005",
            Self::Close3006Inactivity => "3006-inactivity",
            Self::Close3006InvalidMessage => "3006-invalid-message",
            Self::Close3007 => "3007",
            Self::Close3008 => "3008",
            Self::Close3009 => "3009",
            Self::FreeTier => "free-tier",
            Self::CloseBeforeBegin => "close-before-begin",
            Self::NoBegin => "no-begin",
            Self::NoTermination => "no-termination",
            Self::MintBudget => "mint-budget",
            Self::ClockSkew => "clock-skew",
            Self::NoInputDevice => "no-microphone",
            Self::SilentInput => "silent-input",
            Self::NoAudioFrames => "no-audio",
            Self::AlsaMessages => "alsa",
            Self::TranscriptDirNotWritable => "transcript-dir",
            Self::LogDirNotWritable => "log-dir",
            Self::LocalFailure => "local",
        }
    }

    /// "aai-live explain 3009": the command that prints the section.
    pub fn explain_command(self) -> String {
        format!("aai-live explain {}", self.section())
    }

    /// The section's title (its heading on the page).
    pub fn title(self) -> &'static str {
        section(self.section()).map_or("", |s| s.title)
    }

    /// The section's fix, as on the page (one paragraph).
    pub fn fix(self) -> &'static str {
        section(self.section()).map_or("", |s| s.fix)
    }

    /// A transport failure of the token endpoint (`provider`), by its kind.
    pub fn from_network(network: Network) -> Self {
        match network {
            Network::Timeout => Self::TokenTimeout,
            Network::Dns => Self::DnsFailure,
            Network::Refused => Self::TcpFailure,
            Network::Tls => Self::TlsFailure,
            Network::Proxy => Self::ProxyFailure,
        }
    }

    /// A refused WebSocket upgrade (HTTP status instead of 101).
    pub fn from_upgrade_status(status: u16) -> Self {
        match status {
            401 => Self::Close1008TokenUsed,
            // The service refuses credentials after the upgrade (Error + 1008); a 403 or 404 at
            // the upgrade itself is a wrong path, a proxy or a web application firewall.
            429 => Self::Close3009,
            _ => Self::UpgradeRefused,
        }
    }

    /// An HTTP status from the token endpoint (`remote`: from a token server).
    pub fn from_token_status(status: u16, remote: bool) -> Self {
        match (status, remote) {
            (200..=299, _) => Self::TokenNotJson,
            (400 | 422, false) => Self::TokenBadRequest,
            (401, false) => Self::TokenUnauthorized,
            (403, false) => Self::TokenForbidden,
            (404 | 405 | 410 | 300..=399, false) => Self::TokenNotFound,
            (413, false) => Self::TokenTooLarge,
            (429, false) => Self::TokenRateLimited,
            (_, false) => Self::TokenServerError,
            (400 | 408 | 422, true) => Self::ServeBadRequest,
            (401, true) => Self::ServeUnauthorized,
            (403, true) => Self::ServeForbidden,
            (300..=399, true) => Self::ServeRedirect,
            (404 | 405 | 410, true) => Self::ServeNotFound,
            (413, true) => Self::ServeTooLarge,
            (429, true) => Self::ServeRateLimited,
            (_, true) => Self::ServeUnavailable,
        }
    }

    /// The diagnosis of a close that came before `Begin`: one the close table can only place
    /// as a generic end (a normal close, a drop, a server error) is its own case there (a
    /// fault, a proxy, a refused session); the specific ones keep their section.
    #[must_use]
    pub fn before_begin(self) -> Self {
        match self {
            Self::Close1000 | Self::Close1006 | Self::Close1011 | Self::Close3005 => {
                Self::CloseBeforeBegin
            }
            other => other,
        }
    }
}

/// What kind of transport failure it was, decided where the library's error is at hand (typed
/// checks first: `reqwest::Error::is_timeout`, `io::ErrorKind`, the resolver's own error),
/// so that no diagnosis reads a sentence back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// No complete answer in time.
    Timeout,
    /// The host name does not resolve.
    Dns,
    /// Refused, unreachable, reset: the TCP level.
    Refused,
    /// The TLS handshake or the certificate.
    Tls,
    /// The proxy refused or could not be reached.
    Proxy,
}

/// One section of the troubleshooting page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// The topic (`3009`, `token-401`): the anchor and what `aai-live explain` takes.
    pub key: &'static str,
    pub title: &'static str,
    /// The whole section, heading included.
    pub text: &'static str,
    /// The paragraph after "**Fix:**".
    pub fix: &'static str,
    /// The paragraph after "**Fix (emulator):**", when the section says what to do against the
    /// local emulator (its key, its address) instead.
    pub emulator_fix: Option<&'static str>,
}

/// Every section of [`PAGE`], in order. A section starts at a heading `## \`KEY\` Title` and
/// runs to the next heading of level 2 or the end.
pub fn sections() -> Vec<Section> {
    let mut out = Vec::new();
    let mut starts: Vec<usize> = Vec::new();
    let mut offset = 0;
    for line in PAGE.split_inclusive('\n') {
        if line.starts_with("## ") {
            starts.push(offset);
        }
        offset += line.len();
    }
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(PAGE.len());
        let mut text = &PAGE[start..end];
        // The anchor line of the next section belongs to it, not to this one.
        if let Some(cut) = text.rfind("\n<a id=") {
            text = &text[..=cut];
        }
        let text = text.trim_end();
        let heading = text.lines().next().unwrap_or_default();
        let Some(rest) = heading.strip_prefix("## `") else {
            continue;
        };
        let Some((key, title)) = rest.split_once('`') else {
            continue;
        };
        let paragraph = |label: &str| {
            text.find(label).map(|at| {
                let para = &text[at + label.len()..];
                para.split("\n\n").next().unwrap_or_default().trim()
            })
        };
        out.push(Section {
            key,
            title: title.trim(),
            text,
            fix: paragraph("**Fix:**").unwrap_or_default(),
            emulator_fix: paragraph("**Fix (emulator):**"),
        });
    }
    out
}

/// The section with this key.
pub fn section(key: &str) -> Option<Section> {
    sections().into_iter().find(|s| s.key == key)
}

/// The sections a topic names: the exact key; else every key with the topic as one of its
/// `-`-separated parts or as its prefix (`1008` → every 1008 section, `401` → `token-401` and
/// `serve-401`). Case does not matter.
pub fn lookup(topic: &str) -> Vec<Section> {
    let topic = topic.trim().to_ascii_lowercase();
    let all = sections();
    if let Some(exact) = all.iter().find(|s| s.key == topic) {
        return vec![*exact];
    }
    if topic.is_empty() {
        return Vec::new();
    }
    all.into_iter()
        .filter(|s| s.key.starts_with(&topic) || s.key.split('-').any(|part| part == topic))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn every_diagnosis_has_a_section_with_symptom_cause_fix_and_step() {
        for d in Diagnosis::iter() {
            let s = section(d.section())
                .unwrap_or_else(|| panic!("{d:?}: no section `{}`", d.section()));
            for part in ["**You see:**", "**Cause:**", "**Fix:**", "**Doctor step:**"] {
                assert!(
                    s.text.contains(part),
                    "{d:?}: section {} lacks {part}",
                    s.key
                );
            }
            assert!(!d.title().is_empty() && !d.fix().is_empty(), "{d:?}");
            assert!(
                PAGE.contains(&format!("<a id=\"{}\"></a>\n## `{}`", s.key, s.key)),
                "{d:?}: section {} has no anchor",
                s.key
            );
        }
    }

    #[test]
    fn every_section_is_reached_by_a_diagnosis_and_keys_are_unique() {
        let reached: HashSet<&str> = Diagnosis::iter().map(Diagnosis::section).collect();
        let all = sections();
        let mut keys = HashSet::new();
        for s in &all {
            assert!(keys.insert(s.key), "section {} twice", s.key);
            assert!(reached.contains(s.key), "no diagnosis leads to {}", s.key);
            assert_eq!(lookup(s.key), vec![*s], "explain {}", s.key);
        }
        assert_eq!(all.len(), Diagnosis::iter().count());
    }

    #[test]
    fn topics_find_families() {
        let keys = |t: &str| lookup(t).iter().map(|s| s.key).collect::<Vec<_>>();
        assert!(keys("1008").len() >= 6, "{:?}", keys("1008"));
        assert_eq!(keys("401"), ["token-401", "serve-401"]);
        assert_eq!(keys("3009"), ["3009"]);
        assert_eq!(keys("TOKEN-HTML"), ["token-html"]);
        assert!(keys("nonsense").is_empty());
        assert!(keys("").is_empty());
    }
}
