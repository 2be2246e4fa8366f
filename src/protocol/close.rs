//! Close classification: what a session's end means and what the client should do about it.
//!
//! The service changed its close codes in February 2026 (3006–3009 split out of the 3005
//! catch-all; "too many concurrent sessions" moved from 1008 to 3009), and legacy 4xxx codes are
//! still mapped by the SDKs. So the decision uses the code *and* the reason text, and the text of
//! the `Error` frame that preceded the close when there was one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a close means for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseClass {
    /// Ended on request (1000 after `Termination`).
    Normal,
    /// The session reached its maximum duration: mint a new token and reconnect at once.
    SessionExpired,
    /// The temporary token was expired, already used or unreadable: mint a new one and retry
    /// once; a second rejection is fatal.
    TokenRejected,
    /// Too many new sessions per minute: back off on a minute scale.
    RateLimited,
    /// Network trouble or a server fault: reconnect with backoff.
    Transient,
    /// The client broke a rule (chunk size, pacing, invalid message): retrying the same way
    /// fails again.
    ClientBug,
    /// The credential or the account is refused: a person must act.
    Fatal,
    /// Not a close at all: something on this side failed — the audio input, or one of aai-live's
    /// own tasks. Never the result of [`classify`]; a run that fails this way says why and
    /// stops, it never looks like a normal end.
    Local,
}

impl CloseClass {
    /// Plain words for the dashboard and the event stream.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Normal => "ended normally",
            Self::SessionExpired => "session reached its maximum duration",
            Self::TokenRejected => "temporary token rejected (expired or already used)",
            Self::RateLimited => "too many new sessions per minute",
            Self::Transient => "connection lost or server error",
            Self::ClientBug => "the client broke a protocol rule",
            Self::Fatal => "credential or account refused",
            Self::Local => "a local failure (the audio input or aai-live itself)",
        }
    }

    /// What aai-live does (or the user should do) next.
    pub fn advice(self) -> &'static str {
        match self {
            Self::Normal => "nothing to do",
            Self::SessionExpired => "minting a new token and reconnecting",
            Self::TokenRejected => "minting a fresh token and retrying once",
            Self::RateLimited => {
                "backing off; the limit is on new sessions per minute for the whole account"
            }
            Self::Transient => "reconnecting with backoff",
            Self::ClientBug => "not retrying: check the audio format, chunk size and pacing",
            Self::Fatal => "not retrying: check the API key, the account balance and access",
            Self::Local => "not retrying: the reason says what failed; the log file has details",
        }
    }

    /// What a person can do once aai-live has stopped on this class (the dashboard's problem
    /// panel ends it with the key that starts again).
    pub fn remedy(self) -> &'static str {
        match self {
            Self::Normal | Self::SessionExpired => "Nothing needs fixing",
            Self::TokenRejected => {
                "The service refused a fresh token too: check the token provider's clock and \
                 settings"
            }
            Self::RateLimited => "Too many new sessions this minute: wait a minute",
            Self::Transient => "The service or the network is unreachable: check the connection",
            Self::ClientBug => {
                "aai-live sent something the service refused (audio format, chunk size or \
                 pacing; the log file has details)"
            }
            Self::Fatal => "Check the API key, the account balance and its access to streaming",
            Self::Local => {
                "Check the audio input (`aai-live devices`; a file or stdin that can be read) and \
                 the log file"
            }
        }
    }

    /// Whether reconnecting automatically makes sense. One arm per class, no catch-all: a new
    /// class must be decided here.
    pub fn retryable(self) -> bool {
        match self {
            Self::SessionExpired | Self::TokenRejected | Self::RateLimited | Self::Transient => {
                true
            }
            Self::Normal | Self::ClientBug | Self::Fatal | Self::Local => false,
        }
    }
}

impl fmt::Display for CloseClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// One classification rule: a close whose code is in `codes` (inclusive) and whose text (the
/// close reason and the `Error` frame's text, lower-cased) contains, for every group of `all`,
/// at least one of its words, has `class`. Rules are tried in order; the first that matches
/// decides. Data rather than code, so the browser client classifies with the very same table
/// (`serve` publishes it as `/close-codes.json`, see [`table_json`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub codes: (u16, u16),
    pub all: &'static [&'static [&'static str]],
    pub class: CloseClass,
    /// Why, for people reading the table.
    pub note: &'static str,
}

const fn rule(
    from: u16,
    to: u16,
    all: &'static [&'static [&'static str]],
    class: CloseClass,
    note: &'static str,
) -> Rule {
    Rule {
        codes: (from, to),
        all,
        class,
        note,
    }
}

/// Every rule, in order (see [`Rule`]); a code no rule matches is [`NO_RULE`].
pub const RULES: &[Rule] = &[
    rule(1000, 1000, &[], CloseClass::Normal, "ended on request"),
    rule(
        1001,
        1001,
        &[],
        CloseClass::Transient,
        "going away: a server restart",
    ),
    rule(
        1006,
        1006,
        &[],
        CloseClass::Transient,
        "abnormal closure: the network",
    ),
    rule(
        1011,
        1014,
        &[],
        CloseClass::Transient,
        "internal error, restart, try again later, bad gateway",
    ),
    rule(
        1002,
        1003,
        &[],
        CloseClass::ClientBug,
        "protocol error, unsupported data",
    ),
    rule(1007, 1007, &[], CloseClass::ClientBug, "invalid payload"),
    rule(
        1009,
        1010,
        &[],
        CloseClass::ClientBug,
        "message too big, extension",
    ),
    // 1008 covers auth, account problems and (before 2026) the session-rate limit.
    rule(
        1008,
        1008,
        &[&["too many concurrent", "too many sessions"]],
        CloseClass::RateLimited,
        "the pre-2026 new-session limit",
    ),
    rule(
        1008,
        1008,
        &[&["token"], &["expired", "used", "invalid"]],
        CloseClass::TokenRejected,
        "a temporary token expired, used or unreadable: one re-mint",
    ),
    rule(
        1008,
        1008,
        &[&["incorrect padding"]],
        CloseClass::TokenRejected,
        "a sporadic base64 failure on the server side: one re-mint cures it",
    ),
    rule(
        1008,
        1008,
        &[],
        CloseClass::Fatal,
        "credential or account refused",
    ),
    // Before February 2026 everything below was 3005 with today's reason strings.
    rule(
        3005,
        3005,
        &[&["session expired", "maximum session duration"]],
        CloseClass::SessionExpired,
        "pre-2026 expiry",
    ),
    rule(
        3005,
        3005,
        &[&[
            "input duration violation",
            "transmission rate",
            "invalid message",
            "invalid json",
        ]],
        CloseClass::ClientBug,
        "pre-2026 client errors",
    ),
    rule(3005, 3005, &[], CloseClass::Transient, "server error"),
    // The only "inactivity" close the service documents is a 3006 (per AssemblyAI's own skill
    // notes); reconnecting is right if the user still streams.
    rule(
        3006,
        3006,
        &[&["inactiv", "idle"]],
        CloseClass::Transient,
        "inactivity",
    ),
    rule(3006, 3006, &[], CloseClass::ClientBug, "input validation"),
    rule(
        3007,
        3007,
        &[],
        CloseClass::ClientBug,
        "audio too fast or chunk size",
    ),
    rule(
        3008,
        3008,
        &[&["token"]],
        CloseClass::TokenRejected,
        "an expired token closed with 3008",
    ),
    rule(
        3008,
        3008,
        &[],
        CloseClass::SessionExpired,
        "maximum session duration",
    ),
    rule(
        3009,
        3009,
        &[],
        CloseClass::RateLimited,
        "too many new sessions",
    ),
    // The v2 realtime codes both SDKs still map.
    rule(
        4001,
        4003,
        &[],
        CloseClass::Fatal,
        "v2: not authorized, insufficient funds, free tier",
    ),
    rule(
        4008,
        4008,
        &[],
        CloseClass::SessionExpired,
        "v2: session expired",
    ),
    rule(
        4102,
        4102,
        &[],
        CloseClass::RateLimited,
        "v2: too many concurrent sessions",
    ),
    rule(4000, 4000, &[], CloseClass::ClientBug, "v2: sample rate"),
    rule(
        4029,
        4029,
        &[],
        CloseClass::ClientBug,
        "v2: client sent audio too fast",
    ),
    rule(
        4032,
        4034,
        &[],
        CloseClass::ClientBug,
        "v2: audio too short or long, too small",
    ),
    rule(
        4100,
        4101,
        &[],
        CloseClass::ClientBug,
        "v2: endpoint or auth message",
    ),
    rule(
        4104,
        4104,
        &[],
        CloseClass::ClientBug,
        "v2: invalid message",
    ),
    // 4004 not found, 4010 previously closed, 4030 handled elsewhere, 4031 idle, 4103
    // reconnected elsewhere, and anything unknown: a new session fixes it.
    rule(4000, 4999, &[], CloseClass::Transient, "v2: other"),
];

/// The class of a code no rule matches, and of a connection that ended without a close frame
/// (a TCP drop: 1006 in browsers).
pub const NO_RULE: CloseClass = CloseClass::Transient;

/// Classify a WebSocket close. `code` is `None` when the connection ended without a close frame
/// (1006: TCP drop, reset). `error_text` is the `error` of the last `Error` frame, if any.
pub fn classify(code: Option<u16>, reason: &str, error_text: Option<&str>) -> CloseClass {
    let Some(code) = code else {
        return NO_RULE;
    };
    let text = format!("{reason} {}", error_text.unwrap_or_default()).to_ascii_lowercase();
    RULES
        .iter()
        .find(|r| {
            (r.codes.0..=r.codes.1).contains(&code)
                && r.all
                    .iter()
                    .all(|group| group.iter().any(|word| text.contains(word)))
        })
        .map_or(NO_RULE, |r| r.class)
}

/// Every class with its words and whether it is retried.
pub const CLASSES: [CloseClass; 8] = [
    CloseClass::Normal,
    CloseClass::SessionExpired,
    CloseClass::TokenRejected,
    CloseClass::RateLimited,
    CloseClass::Transient,
    CloseClass::ClientBug,
    CloseClass::Fatal,
    CloseClass::Local,
];

/// The classification as JSON, for clients in other languages (the browser client): the rules
/// in order, the class of anything else, the HTTP statuses of a refused upgrade, and each class
/// with its words. Matching: lower-case `reason + " " + error`, then the first rule whose code
/// range holds the code and for which every group has a word contained in the text.
pub fn table_json() -> serde_json::Value {
    let classes: serde_json::Map<String, serde_json::Value> = CLASSES
        .iter()
        .map(|c| {
            (
                serde_json::to_value(c)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                serde_json::json!({
                    "describe": c.describe(),
                    "advice": c.advice(),
                    "remedy": c.remedy(),
                    "retryable": c.retryable(),
                }),
            )
        })
        .collect();
    serde_json::json!({
        "rules": RULES,
        "no_rule": NO_RULE,
        "no_code": NO_RULE,
        "upgrade_status": [
            {"statuses": [401, 401], "class": classify_upgrade_status(401)},
            {"statuses": [403, 403], "class": classify_upgrade_status(403)},
            {"statuses": [429, 429], "class": classify_upgrade_status(429)},
            {"statuses": [400, 499], "class": classify_upgrade_status(400)},
            {"statuses": [0, 999], "class": classify_upgrade_status(500)},
        ],
        "classes": classes,
    })
}

/// Classify an HTTP-level rejection of the WebSocket upgrade.
pub fn classify_upgrade_status(status: u16) -> CloseClass {
    match status {
        // With a temporary token a 401 most likely means "expired or used": re-mint once.
        401 => CloseClass::TokenRejected,
        403 => CloseClass::Fatal,
        429 => CloseClass::RateLimited,
        400..=499 => CloseClass::ClientBug,
        _ => CloseClass::Transient,
    }
}

/// A close reason may hold at most 123 bytes; longer reasons are replaced by this text and the
/// full message goes in the `Error` frame.
pub const LONG_REASON: &str = "See Error message for details";
pub const MAX_REASON_BYTES: usize = 123;

/// The close reason to send for `message`.
pub fn close_reason(message: &str) -> &str {
    if message.len() <= MAX_REASON_BYTES {
        message
    } else {
        LONG_REASON
    }
}

/// Documented reason strings (current table).
pub mod reasons {
    pub const SESSION_EXPIRED: &str = "Session Expired: Maximum session duration exceeded";
    pub const SESSION_CANCELLED: &str = "Session Cancelled: An error occurred";
    pub const TOO_MANY_SESSIONS: &str = "Unauthorized Connection: Too many concurrent sessions";
    pub const MISSING_AUTH: &str = "Unauthorized Connection: Missing Authorization header";
    pub const INVALID_AUTH: &str = "Unauthorized Connection: Invalid API key or token";
    pub const TOKEN_EXPIRED: &str = "Unauthorized Connection: Temporary token expired";
    pub const TOKEN_USED: &str = "Unauthorized Connection: Temporary token already used";

    pub fn input_duration(ms: f64) -> String {
        format!("Input duration violation: {ms:.0} ms. Expected between 50 and 1000 ms")
    }

    pub fn rate_exceeded(audio_s: f64, wall_s: f64) -> String {
        format!(
            "Audio Transmission Rate Exceeded: Received {audio_s:.1} sec. audio in {wall_s:.1} sec"
        )
    }

    pub fn invalid_message_type(t: &str) -> String {
        format!("Invalid Message Type: {t}")
    }

    pub fn invalid_json(j: &str) -> String {
        format!("Invalid JSON: {j}")
    }

    pub fn invalid_message(m: &str) -> String {
        format!("Invalid Message: {m}")
    }
}

/// The documented closes and their classes, one per line of protocol.md §5 (current table,
/// history, legacy codes, §5.4): `(code, reason, Error text, class)`. The table's own test, and the
/// test that the browser client (assets/web/aai-live-client.js) classifies exactly as [`classify`]
/// does (tests/browser_js.rs), both play them.
pub const EXAMPLES: &[(Option<u16>, &str, Option<&str>, CloseClass)] = {
    use CloseClass::{
        ClientBug, Fatal, Normal, RateLimited, SessionExpired, TokenRejected, Transient,
    };
    &[
        // §5.1 current table
        (Some(1000), "", None, Normal),
        (
            Some(3008),
            reasons::SESSION_EXPIRED,
            Some(reasons::SESSION_EXPIRED),
            SessionExpired,
        ),
        (
            Some(3007),
            "Input duration violation: 20 ms. Expected between 50 and 1000 ms",
            None,
            ClientBug,
        ),
        (
            Some(3007),
            "Audio Transmission Rate Exceeded: Received 5 sec. audio in 2 sec",
            None,
            ClientBug,
        ),
        (Some(3006), "Invalid Message Type: Foo", None, ClientBug),
        (Some(3006), "Invalid JSON: {", None, ClientBug),
        (Some(3006), "Invalid Message: []", None, ClientBug),
        (Some(3005), reasons::SESSION_CANCELLED, None, Transient),
        (Some(3009), reasons::TOO_MANY_SESSIONS, None, RateLimited),
        (Some(1008), reasons::MISSING_AUTH, None, Fatal),
        (
            Some(1008),
            "Unauthorized Connection: Insufficient balance",
            None,
            Fatal,
        ),
        (
            Some(1008),
            "Unauthorized Connection: Account temporarily disabled",
            None,
            Fatal,
        ),
        (
            Some(1008),
            "Unauthorized connection: Incorrect padding",
            None,
            TokenRejected,
        ),
        // [skill] extras
        (
            Some(3006),
            "Session terminated due to inactivity",
            None,
            Transient,
        ),
        (Some(1009), "", None, ClientBug),
        (Some(1011), "", None, Transient),
        (Some(1006), "", None, Transient),
        (None, "", None, Transient),
        // §5.2 history: pre-2026 codes, same reasons
        (Some(3005), reasons::SESSION_EXPIRED, None, SessionExpired),
        (
            Some(3005),
            "Input duration violation: 20 ms. Expected between 50 and 1000 ms",
            None,
            ClientBug,
        ),
        (
            Some(3005),
            "Audio Transmission Rate Exceeded: Received 5 sec. audio in 2 sec",
            None,
            ClientBug,
        ),
        (Some(3005), "Invalid Message Type: Foo", None, ClientBug),
        (Some(3005), "Invalid JSON: {", None, ClientBug),
        (
            Some(1008),
            "Unauthorized connection: Too many concurrent sessions",
            None,
            RateLimited,
        ),
        // The reason can be the long-reason placeholder: the Error frame decides.
        (
            Some(3005),
            LONG_REASON,
            Some(reasons::SESSION_EXPIRED),
            SessionExpired,
        ),
        // §5.4 token cases
        (Some(3008), "Temporary token expired", None, TokenRejected),
        (Some(1008), reasons::TOKEN_EXPIRED, None, TokenRejected),
        (Some(1008), reasons::TOKEN_USED, None, TokenRejected),
        // §5.3 legacy v2 codes
        (
            Some(4000),
            "Sample rate must be a positive integer",
            None,
            ClientBug,
        ),
        (Some(4001), "Not Authorized", None, Fatal),
        (Some(4002), "Insufficient Funds", None, Fatal),
        (Some(4003), "This feature is paid-only", None, Fatal),
        (Some(4004), "Session not found", None, Transient),
        (Some(4008), "Session Expired", None, SessionExpired),
        (Some(4010), "Session previously closed", None, Transient),
        (Some(4029), "Client sent audio too fast", None, ClientBug),
        (
            Some(4030),
            "Session is handled by another WebSocket",
            None,
            Transient,
        ),
        (Some(4031), "Session idle for too long", None, Transient),
        (Some(4032), "Audio duration is too short", None, ClientBug),
        (Some(4033), "Audio duration is too long", None, ClientBug),
        (Some(4034), "Audio too small to transcode", None, ClientBug),
        (Some(4100), "", None, ClientBug),
        (
            Some(4101),
            "Endpoint received a message with an invalid schema",
            None,
            ClientBug,
        ),
        (
            Some(4102),
            "This account has exceeded the number of allowed streams",
            None,
            RateLimited,
        ),
        (
            Some(4103),
            "This session has been reconnected",
            None,
            Transient,
        ),
        (
            Some(4104),
            "Could not parse word boost parameter",
            None,
            ClientBug,
        ),
        (
            Some(1013),
            "Temporary server condition forced blocking client's request",
            None,
            Transient,
        ),
    ]
};

#[cfg(test)]
mod tests {
    use super::CloseClass::{
        ClientBug, Fatal, Normal, RateLimited, SessionExpired, TokenRejected, Transient,
    };
    use super::*;

    /// One row per line of protocol.md §5 (current table, history, legacy codes, §5.4).
    #[test]
    fn close_table() {
        for (code, reason, error, expected) in EXAMPLES {
            assert_eq!(
                classify(*code, reason, *error),
                *expected,
                "code {code:?} reason {reason:?} error {error:?}"
            );
        }
        assert_eq!(EXAMPLES.len(), 47);
    }

    #[test]
    fn upgrade_statuses() {
        assert_eq!(classify_upgrade_status(401), TokenRejected);
        assert_eq!(classify_upgrade_status(403), Fatal);
        assert_eq!(classify_upgrade_status(400), ClientBug);
        assert_eq!(classify_upgrade_status(429), RateLimited);
        assert_eq!(classify_upgrade_status(503), Transient);
    }

    #[test]
    fn retryability_and_words() {
        assert!(SessionExpired.retryable() && Transient.retryable());
        assert!(!Fatal.retryable() && !ClientBug.retryable() && !Normal.retryable());
        assert_eq!(Fatal.to_string(), "credential or account refused");
    }

    #[test]
    fn long_reasons_are_replaced() {
        assert_eq!(close_reason("short"), "short");
        let long = "x".repeat(124);
        assert_eq!(close_reason(&long), LONG_REASON);
        assert_eq!(close_reason(&"y".repeat(123)).len(), 123);
    }
}
