//! Every diagnosis aai-live can make about a failure, one enum, each with its section of
//! docs/troubleshooting.md (embedded in the binary, printed by `aai-live explain`).
//!
//! The classifiers here turn what the code already knows — a close code with its reason, a
//! token provider's error, an HTTP status — into a [`Diagnosis`], so `aai-live doctor`, the
//! dashboard's problem panel and the headless runner point at the same section. A test walks
//! every variant and fails when one has no section, and another fails when a section of the page
//! is reached by no variant: the page and the code cannot drift apart.

use crate::protocol::CloseClass;
use crate::protocol::close::reasons;
use crate::provider::{ProviderError, ProviderErrorClass};

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

    /// A WebSocket close: the code, its reason and the text of the `Error` frame before it.
    /// `after_begin` is false for a session that never began.
    pub fn from_close(
        code: Option<u16>,
        reason: &str,
        error: Option<&str>,
        after_begin: bool,
    ) -> Self {
        let text = format!("{reason} {}", error.unwrap_or_default()).to_ascii_lowercase();
        let has = |word: &str| text.contains(&word.to_ascii_lowercase());
        let Some(code) = code else {
            return Self::Close1006;
        };
        let diagnosis = match code {
            1000 => Self::Close1000,
            1008 if has("too many") => Self::Close1008TooManySessions,
            1008 if has("incorrect padding") => Self::Close1008IncorrectPadding,
            1008 if has(reasons::TOKEN_USED) || has("already used") => Self::Close1008TokenUsed,
            1008 if has("token") && has("expired") => Self::Close1008TokenExpired,
            1008 if has("missing") => Self::Close1008MissingAuth,
            1008 if has("invalid") => Self::Close1008InvalidAuth,
            1008 => Self::Close1008Account,
            1009 => Self::Close1009,
            1011..=1014 => Self::Close1011,
            1006 | 1001 => Self::Close1006,
            3005 if has("session expired") || has("maximum session duration") => Self::Close3008,
            3005 if has("transmission rate") || has("input duration") => Self::Close3007,
            3005 if has("invalid message") || has("invalid json") => Self::Close3006InvalidMessage,
            3005 => Self::Close3005,
            3006 if has("inactiv") || has("idle") => Self::Close3006Inactivity,
            3006 => Self::Close3006InvalidMessage,
            3007 => Self::Close3007,
            3008 if has("token") => Self::Close1008TokenExpired,
            3008 => Self::Close3008,
            3009 | 4102 => Self::Close3009,
            4001..=4003 => Self::FreeTier,
            _ => match crate::protocol::classify(Some(code), reason, error) {
                CloseClass::ClientBug => Self::Close1009,
                CloseClass::Fatal => Self::Close1008Account,
                CloseClass::RateLimited => Self::Close3009,
                CloseClass::SessionExpired => Self::Close3008,
                CloseClass::TokenRejected => Self::Close1008TokenUsed,
                _ => Self::Close1006,
            },
        };
        if after_begin {
            return diagnosis;
        }
        // Before `Begin`, a close the rules cannot place is its own case (a fault, a proxy).
        match diagnosis {
            Self::Close1000 | Self::Close1006 | Self::Close1011 | Self::Close3005 => {
                Self::CloseBeforeBegin
            }
            other => other,
        }
    }

    /// A connection that never opened, from the reason `session::connection` gave.
    pub fn from_connect_reason(reason: &str) -> Self {
        if let Some(at) = reason.find("refused the connection with HTTP ") {
            let status = reason[at + "refused the connection with HTTP ".len()..]
                .get(..3)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or_default();
            return Self::from_upgrade_status(status);
        }
        if reason.contains("proxy") {
            Self::ProxyFailure
        } else if reason.contains("cannot resolve") {
            Self::DnsFailure
        } else if reason.contains("TLS") {
            Self::TlsFailure
        } else if reason.contains("invalid streaming URL") {
            Self::ConfigInvalid
        } else {
            Self::TcpFailure
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

    /// A token provider's failure. `remote` is true for a token server (the remote provider),
    /// whose statuses are `aai-live serve`'s rather than AssemblyAI's.
    pub fn from_provider(error: &ProviderError) -> Self {
        let remote = error.provider() == "remote";
        let text = error.to_string();
        let lower = text.to_ascii_lowercase();
        if let Some(status) = error.status().or_else(|| status_in(&text)) {
            if (200..300).contains(&status) {
                return Self::TokenNotJson;
            }
            return Self::from_token_status(status, remote);
        }
        match error.class() {
            ProviderErrorClass::NotConfigured => Self::SecretMissing,
            ProviderErrorClass::Exhausted => {
                if lower.contains("does not exist") || lower.contains("no such file") {
                    Self::TokenFileMissing
                } else {
                    Self::TokenFileStale
                }
            }
            ProviderErrorClass::InvalidConfig if lower.contains("does not exist") => {
                Self::TokenFileMissing
            }
            ProviderErrorClass::InvalidConfig => Self::ConfigInvalid,
            ProviderErrorClass::Rejected if remote => Self::ServeUnauthorized,
            ProviderErrorClass::Rejected => Self::TokenUnauthorized,
            ProviderErrorClass::RateLimited if remote => Self::ServeRateLimited,
            ProviderErrorClass::RateLimited => Self::TokenRateLimited,
            ProviderErrorClass::Transient => Self::from_transport_text(&lower),
            ProviderErrorClass::Internal => Self::LocalFailure,
        }
    }

    /// The words of a transport failure (reqwest's, tungstenite's), lower-cased.
    pub fn from_transport_text(lower: &str) -> Self {
        if lower.contains("provider.timeout")
            || lower.contains("timed out")
            || lower.contains("within")
        {
            Self::TokenTimeout
        } else if lower.contains("proxy") {
            Self::ProxyFailure
        } else if lower.contains("dns")
            || lower.contains("failed to lookup")
            || lower.contains("name or service not known")
            || lower.contains("no address")
        {
            Self::DnsFailure
        } else if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake")
        {
            Self::TlsFailure
        } else {
            Self::TcpFailure
        }
    }

    /// An HTTP status from the token endpoint (`remote`: from a token server).
    pub fn from_token_status(status: u16, remote: bool) -> Self {
        match (status, remote) {
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
            (404 | 405 | 410 | 300..=399, true) => Self::ServeNotFound,
            (413, true) => Self::ServeTooLarge,
            (429, true) => Self::ServeRateLimited,
            (_, true) => Self::ServeUnavailable,
        }
    }

    /// The section to name when a run stopped or lost a connection with `class` (the
    /// dashboard's problem panel, the headless `state: failed` line), with the close code when
    /// there was one.
    pub fn from_stop(class: CloseClass, code: Option<u16>, reason: &str) -> Self {
        if code.is_some() {
            return Self::from_close(code, reason, None, true);
        }
        match class {
            CloseClass::Normal => Self::Close1000,
            CloseClass::SessionExpired => Self::Close3008,
            CloseClass::TokenRejected => Self::Close1008TokenUsed,
            CloseClass::RateLimited => Self::Close3009,
            CloseClass::Transient => Self::Close1006,
            CloseClass::ClientBug => Self::Close3007,
            CloseClass::Fatal => Self::Close1008InvalidAuth,
            CloseClass::Local => Self::LocalFailure,
        }
    }
}

impl Diagnosis {
    /// A lost connection as the session reports it (`SessionEvent::Lost`): with its close code,
    /// or without one when it never opened or dropped.
    pub fn from_lost(class: CloseClass, code: Option<u16>, reason: &str) -> Self {
        match code {
            Some(_) => Self::from_close(code, reason, None, true),
            None if reason.contains("cannot connect")
                || reason.contains("refused the connection with HTTP") =>
            {
                Self::from_connect_reason(reason)
            }
            None => Self::from_stop(class, None, reason),
        }
    }

    /// A run that stopped for good with `class` and the supervisor's `reason` (the dashboard's
    /// problem panel, the `failed` state): the reason's words decide where they can.
    pub fn from_failure(class: CloseClass, reason: &str) -> Self {
        let lower = reason.to_ascii_lowercase();
        if lower.contains("token provider") {
            if let Some(status) = status_in(reason) {
                if (200..300).contains(&status) {
                    return Self::TokenNotJson;
                }
                return Self::from_token_status(status, lower.contains("remote token provider"));
            }
            if lower.contains("not configured") {
                return Self::SecretMissing;
            }
            return Self::from_transport_text(&lower);
        }
        if lower.contains("cannot connect") || lower.contains("refused the connection with http") {
            return Self::from_connect_reason(reason);
        }
        if lower.contains("no begin within") {
            return Self::NoBegin;
        }
        match class {
            CloseClass::Fatal if lower.contains("unauthorized") => {
                Self::from_close(Some(1008), reason, None, true)
            }
            CloseClass::TokenRejected => {
                let d = Self::from_close(Some(1008), reason, None, true);
                if matches!(
                    d,
                    Self::Close1008TokenExpired | Self::Close1008IncorrectPadding
                ) {
                    d
                } else {
                    Self::Close1008TokenUsed
                }
            }
            CloseClass::ClientBug if lower.contains("invalid") => Self::Close3006InvalidMessage,
            _ => Self::from_stop(class, None, reason),
        }
    }

    /// The failure text of a finished run (`reason (class words; advice)`, as the session
    /// machine writes it), its class read back from the words.
    pub fn from_failure_text(text: &str) -> Self {
        let class = crate::protocol::close::CLASSES
            .iter()
            .copied()
            .find(|c| text.contains(&format!("({};", c.describe())))
            .unwrap_or(CloseClass::Local);
        Self::from_failure(class, text)
    }
}

/// "HTTP 404" in a message: the status a provider quoted.
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("HTTP ")?;
    text[at + 5..]
        .get(..3)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s))
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
        let fix = text
            .find("**Fix:**")
            .map(|at| {
                let para = &text[at + "**Fix:**".len()..];
                para.split("\n\n").next().unwrap_or_default().trim()
            })
            .unwrap_or_default();
        out.push(Section {
            key,
            title: title.trim(),
            text,
            fix,
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

    #[test]
    #[expect(clippy::too_many_lines, reason = "one table")]
    fn closes_are_diagnosed_from_code_and_reason() {
        use Diagnosis as D;
        for (code, reason, error, began, expected) in [
            (
                Some(1008),
                reasons::TOKEN_USED,
                None,
                false,
                D::Close1008TokenUsed,
            ),
            (
                Some(1008),
                reasons::TOKEN_EXPIRED,
                None,
                false,
                D::Close1008TokenExpired,
            ),
            (
                Some(1008),
                reasons::INVALID_AUTH,
                None,
                false,
                D::Close1008InvalidAuth,
            ),
            (
                Some(1008),
                reasons::MISSING_AUTH,
                None,
                false,
                D::Close1008MissingAuth,
            ),
            (
                Some(1008),
                "Unauthorized Connection: Insufficient balance",
                None,
                true,
                D::Close1008Account,
            ),
            (
                Some(1008),
                reasons::TOO_MANY_SESSIONS,
                None,
                false,
                D::Close1008TooManySessions,
            ),
            (
                Some(1008),
                "Unauthorized connection: Incorrect padding",
                None,
                false,
                D::Close1008IncorrectPadding,
            ),
            (
                Some(3009),
                reasons::TOO_MANY_SESSIONS,
                None,
                false,
                D::Close3009,
            ),
            (
                Some(3008),
                reasons::SESSION_EXPIRED,
                None,
                true,
                D::Close3008,
            ),
            (
                Some(3008),
                "Temporary token expired",
                None,
                false,
                D::Close1008TokenExpired,
            ),
            (
                Some(3007),
                "Input duration violation: 20 ms",
                None,
                true,
                D::Close3007,
            ),
            (
                Some(3006),
                "Session terminated due to inactivity",
                None,
                true,
                D::Close3006Inactivity,
            ),
            (
                Some(3006),
                "Invalid JSON: {",
                None,
                true,
                D::Close3006InvalidMessage,
            ),
            (
                Some(3005),
                reasons::SESSION_CANCELLED,
                None,
                true,
                D::Close3005,
            ),
            (
                Some(3005),
                "See Error message for details",
                Some(reasons::SESSION_EXPIRED),
                true,
                D::Close3008,
            ),
            (Some(1011), "", None, true, D::Close1011),
            (Some(1011), "", None, false, D::CloseBeforeBegin),
            (Some(1009), "", None, true, D::Close1009),
            (Some(1000), "", None, true, D::Close1000),
            (None, "", None, true, D::Close1006),
            (Some(4002), "Insufficient Funds", None, false, D::FreeTier),
        ] {
            assert_eq!(
                Diagnosis::from_close(code, reason, error, began),
                expected,
                "{code:?} {reason}"
            );
        }
    }

    #[test]
    fn losses_and_failures_name_their_section() {
        use Diagnosis as D;
        assert_eq!(
            D::from_lost(
                CloseClass::RateLimited,
                Some(3009),
                reasons::TOO_MANY_SESSIONS
            ),
            D::Close3009
        );
        assert_eq!(
            D::from_lost(
                CloseClass::Transient,
                None,
                "cannot connect to wss://x/v3/ws: cannot resolve x: failed to lookup"
            ),
            D::DnsFailure
        );
        assert_eq!(
            D::from_lost(CloseClass::Transient, None, "connection lost"),
            D::Close1006
        );
        let fatal = format!(
            "{} ({}; {})",
            reasons::INVALID_AUTH,
            CloseClass::Fatal.describe(),
            CloseClass::Fatal.advice()
        );
        assert_eq!(D::from_failure_text(&fatal), D::Close1008InvalidAuth);
        let token = "no token: api-key token provider (GET http://h/v3/token): credential \
                     rejected: HTTP 401 Unauthorized (credential or account refused; ...)";
        assert_eq!(D::from_failure_text(token), D::TokenUnauthorized);
        assert_eq!(
            D::from_failure(
                CloseClass::TokenRejected,
                "a fresh token was rejected too (Unauthorized Connection: Temporary token expired)"
            ),
            D::Close1008TokenExpired
        );
        assert_eq!(
            D::from_failure(
                CloseClass::ClientBug,
                "Audio Transmission Rate Exceeded: ..."
            ),
            D::Close3007
        );
        assert_eq!(
            D::from_failure(CloseClass::Local, "the audio input failed: gone"),
            D::LocalFailure
        );
    }

    #[test]
    fn provider_failures_are_diagnosed() {
        use Diagnosis as D;
        use std::time::Duration;
        let rejected = |provider, status| ProviderError::Rejected {
            provider,
            location: "GET http://127.0.0.1:1/v3/token".into(),
            status: Some(status),
            detail: format!("HTTP {status}"),
        };
        assert_eq!(
            D::from_provider(&rejected("api-key", 401)),
            D::TokenUnauthorized
        );
        assert_eq!(
            D::from_provider(&rejected("api-key", 403)),
            D::TokenForbidden
        );
        assert_eq!(
            D::from_provider(&rejected("remote", 401)),
            D::ServeUnauthorized
        );
        let limited = ProviderError::RateLimited {
            provider: "api-key",
            location: "x".into(),
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
            detail: "HTTP 429".into(),
        };
        assert_eq!(D::from_provider(&limited), D::TokenRateLimited);
        let not_found = ProviderError::InvalidConfig {
            provider: "api-key",
            location: "x".into(),
            detail: "HTTP 404 Not Found; is this the token endpoint?".into(),
        };
        assert_eq!(D::from_provider(&not_found), D::TokenNotFound);
        let html = ProviderError::Transient {
            provider: "remote",
            location: "x".into(),
            status: Some(200),
            retry_after: None,
            detail: "HTTP 200 but the body is not JSON: \"<html>\"".into(),
        };
        assert_eq!(D::from_provider(&html), D::TokenNotJson);
        let slow = ProviderError::Transient {
            provider: "api-key",
            location: "x".into(),
            status: None,
            retry_after: None,
            detail: "no complete answer within 1s (provider.timeout)".into(),
        };
        assert_eq!(D::from_provider(&slow), D::TokenTimeout);
        let refused = ProviderError::Transient {
            provider: "api-key",
            location: "x".into(),
            status: None,
            retry_after: None,
            detail: "cannot connect: error sending request: Connection refused (os error 111)"
                .into(),
        };
        assert_eq!(D::from_provider(&refused), D::TcpFailure);
        let missing = ProviderError::NotConfigured {
            provider: "api-key",
            detail: "the environment variable ASSEMBLYAI_API_KEY is not set".into(),
        };
        assert_eq!(D::from_provider(&missing), D::SecretMissing);
        assert_eq!(D::from_token_status(503, true), D::ServeUnavailable);
        assert_eq!(D::from_token_status(502, false), D::TokenServerError);
    }
}
