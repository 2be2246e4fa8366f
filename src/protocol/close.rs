//! Close classification: what a session's end means and what the client does about it — one
//! table, with everything decided per code and documented reason: the class, what the client
//! does next (re-mint, back off, stop: [`CloseClass::recovery`]), the words, the
//! troubleshooting section, and what the browser client gets (`serve` publishes the very same
//! table as `/close-codes.json`, [`table_json`]).
//!
//! The service changed its close codes in February 2026 (3006–3009 split out of the 3005
//! catch-all; "too many concurrent sessions" moved from 1008 to 3009), and legacy 4xxx codes are
//! still mapped by the SDKs. So the decision uses the code *and* the reason text, and the text of
//! the `Error` frame that preceded the close when there was one. That text is the service's: it
//! is matched here, in the table, and nowhere else.

use std::fmt;

use serde::{Deserialize, Serialize};
use strum::IntoEnumIterator;

use crate::diagnosis::Diagnosis;

/// What a close means for the client. Every class decides its words and its recovery in
/// exhaustive matches (a new class is a compile error until it has them), and the classes are
/// enumerated by the derive, not by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::EnumIter)]
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

/// What the client does after a session ends with a class (the session machine, and the
/// browser client through `/close-codes.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// Nothing: the session ended as asked. (A 1000 nobody asked for is a server ending the
    /// session: the machine carries on as for a transient loss.)
    Done,
    /// A new token and a new session at once.
    Remint,
    /// One fresh token; a second rejection in a row stops.
    RemintOnce,
    /// Exponential backoff with full jitter (at once after a healthy session).
    BackOff,
    /// A minute-scale wait: the server's `Retry-After`, else `rate_limit_backoff`.
    BackOffLong,
    /// Stop: retrying cannot help; a person must act.
    Stop,
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

    /// What the client does after a session ends this way. One arm per class, no catch-all.
    pub fn recovery(self) -> Recovery {
        match self {
            Self::Normal => Recovery::Done,
            Self::SessionExpired => Recovery::Remint,
            Self::TokenRejected => Recovery::RemintOnce,
            Self::RateLimited => Recovery::BackOffLong,
            Self::Transient => Recovery::BackOff,
            Self::ClientBug | Self::Fatal | Self::Local => Recovery::Stop,
        }
    }

    /// Whether reconnecting automatically makes sense.
    pub fn retryable(self) -> bool {
        !matches!(self.recovery(), Recovery::Done | Recovery::Stop)
    }

    /// The troubleshooting section for a stop with this class when nothing more specific is
    /// known (no close code, no status): the dashboard's and the events' `explain`.
    pub fn diagnosis(self) -> Diagnosis {
        match self {
            Self::Normal => Diagnosis::Close1000,
            Self::SessionExpired => Diagnosis::Close3008,
            Self::TokenRejected => Diagnosis::Close1008TokenUsed,
            Self::RateLimited => Diagnosis::Close3009,
            Self::Transient => Diagnosis::Close1006,
            Self::ClientBug => Diagnosis::Close3007,
            Self::Fatal => Diagnosis::Close1008InvalidAuth,
            Self::Local => Diagnosis::LocalFailure,
        }
    }

    /// The class's name on the wire (`session_expired`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::SessionExpired => "session_expired",
            Self::TokenRejected => "token_rejected",
            Self::RateLimited => "rate_limited",
            Self::Transient => "transient",
            Self::ClientBug => "client_bug",
            Self::Fatal => "fatal",
            Self::Local => "local",
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
/// at least one of its words, has `class` and the troubleshooting section `diagnosis`. Rules
/// are tried in order; the first that matches decides. Data rather than code, so the browser
/// client classifies with the very same table (see [`table_json`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub codes: (u16, u16),
    pub all: &'static [&'static [&'static str]],
    pub class: CloseClass,
    pub diagnosis: Diagnosis,
    /// Why, for people reading the table.
    pub note: &'static str,
}

const fn rule(
    codes: (u16, u16),
    all: &'static [&'static [&'static str]],
    class: CloseClass,
    diagnosis: Diagnosis,
    note: &'static str,
) -> Rule {
    Rule {
        codes,
        all,
        class,
        diagnosis,
        note,
    }
}

/// What the table says about one close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub class: CloseClass,
    pub diagnosis: Diagnosis,
}

/// Every rule, in order (see [`Rule`]); a code no rule matches gets [`NO_RULE`].
pub const RULES: &[Rule] = {
    use CloseClass::{
        ClientBug, Fatal, Normal, RateLimited, SessionExpired, TokenRejected, Transient,
    };
    use Diagnosis as D;
    &[
        rule((1000, 1000), &[], Normal, D::Close1000, "ended on request"),
        rule(
            (1001, 1001),
            &[],
            Transient,
            D::Close1006,
            "going away: a server restart",
        ),
        rule(
            (1006, 1006),
            &[],
            Transient,
            D::Close1006,
            "abnormal closure: the network",
        ),
        rule(
            (1011, 1014),
            &[],
            Transient,
            D::Close1011,
            "internal error, restart, try again later, bad gateway",
        ),
        rule(
            (1002, 1003),
            &[],
            ClientBug,
            D::Close1009,
            "protocol error, unsupported data",
        ),
        rule(
            (1007, 1007),
            &[],
            ClientBug,
            D::Close1009,
            "invalid payload",
        ),
        rule(
            (1009, 1010),
            &[],
            ClientBug,
            D::Close1009,
            "message too big, extension",
        ),
        // 1008 covers auth, account problems and (before 2026) the session-rate limit.
        rule(
            (1008, 1008),
            &[&["too many concurrent", "too many sessions"]],
            RateLimited,
            D::Close1008TooManySessions,
            "the pre-2026 new-session limit",
        ),
        rule(
            (1008, 1008),
            &[&["incorrect padding"]],
            TokenRejected,
            D::Close1008IncorrectPadding,
            "a sporadic base64 failure on the server side: one re-mint cures it",
        ),
        rule(
            (1008, 1008),
            &[&["token"], &["used"]],
            TokenRejected,
            D::Close1008TokenUsed,
            "a temporary token already used: one re-mint",
        ),
        rule(
            (1008, 1008),
            &[&["token"], &["expired"]],
            TokenRejected,
            D::Close1008TokenExpired,
            "a temporary token expired: one re-mint",
        ),
        rule(
            (1008, 1008),
            &[&["token"], &["invalid"]],
            TokenRejected,
            D::Close1008InvalidAuth,
            "a key or token the service cannot read: one re-mint, then stop",
        ),
        rule(
            (1008, 1008),
            &[&["missing"]],
            Fatal,
            D::Close1008MissingAuth,
            "no credential reached the service",
        ),
        rule(
            (1008, 1008),
            &[&["invalid"]],
            Fatal,
            D::Close1008InvalidAuth,
            "credential refused",
        ),
        rule(
            (1008, 1008),
            &[],
            Fatal,
            D::Close1008Account,
            "the account is refused",
        ),
        // Before February 2026 everything below was 3005 with today's reason strings.
        rule(
            (3005, 3005),
            &[&["session expired", "maximum session duration"]],
            SessionExpired,
            D::Close3008,
            "pre-2026 expiry",
        ),
        rule(
            (3005, 3005),
            &[&["input duration violation", "transmission rate"]],
            ClientBug,
            D::Close3007,
            "pre-2026 audio pacing and chunk size",
        ),
        rule(
            (3005, 3005),
            &[&["invalid message", "invalid json"]],
            ClientBug,
            D::Close3006InvalidMessage,
            "pre-2026 invalid messages",
        ),
        rule((3005, 3005), &[], Transient, D::Close3005, "server error"),
        // The only "inactivity" close the service documents is a 3006 (per AssemblyAI's own skill
        // notes); reconnecting is right if the user still streams.
        rule(
            (3006, 3006),
            &[&["inactiv", "idle"]],
            Transient,
            D::Close3006Inactivity,
            "inactivity",
        ),
        rule(
            (3006, 3006),
            &[],
            ClientBug,
            D::Close3006InvalidMessage,
            "input validation",
        ),
        rule(
            (3007, 3007),
            &[],
            ClientBug,
            D::Close3007,
            "audio too fast or chunk size",
        ),
        rule(
            (3008, 3008),
            &[&["token"]],
            TokenRejected,
            D::Close1008TokenExpired,
            "an expired token closed with 3008",
        ),
        rule(
            (3008, 3008),
            &[],
            SessionExpired,
            D::Close3008,
            "maximum session duration",
        ),
        rule(
            (3009, 3009),
            &[],
            RateLimited,
            D::Close3009,
            "too many new sessions",
        ),
        // The v2 realtime codes both SDKs still map.
        rule(
            (4001, 4003),
            &[],
            Fatal,
            D::FreeTier,
            "v2: not authorized, insufficient funds, free tier",
        ),
        rule(
            (4008, 4008),
            &[],
            SessionExpired,
            D::Close3008,
            "v2: session expired",
        ),
        rule(
            (4102, 4102),
            &[],
            RateLimited,
            D::Close3009,
            "v2: too many concurrent sessions",
        ),
        rule(
            (4000, 4000),
            &[],
            ClientBug,
            D::Close1009,
            "v2: sample rate",
        ),
        rule(
            (4029, 4029),
            &[],
            ClientBug,
            D::Close3007,
            "v2: client sent audio too fast",
        ),
        rule(
            (4032, 4034),
            &[],
            ClientBug,
            D::Close3007,
            "v2: audio too short or long, too small",
        ),
        rule(
            (4100, 4101),
            &[],
            ClientBug,
            D::Close3006InvalidMessage,
            "v2: endpoint or auth message",
        ),
        rule(
            (4104, 4104),
            &[],
            ClientBug,
            D::Close3006InvalidMessage,
            "v2: invalid message",
        ),
        // 4004 not found, 4010 previously closed, 4030 handled elsewhere, 4031 idle, 4103
        // reconnected elsewhere, and anything unknown: a new session fixes it.
        rule((4000, 4999), &[], Transient, D::Close1006, "v2: other"),
    ]
};

/// The verdict on a code no rule matches, and on a connection that ended without a close frame
/// (a TCP drop: 1006 in browsers).
pub const NO_RULE: Verdict = Verdict {
    class: CloseClass::Transient,
    diagnosis: Diagnosis::Close1006,
};

/// The table's verdict on a WebSocket close. `code` is `None` when the connection ended without
/// a close frame (1006: TCP drop, reset). `error_text` is the `error` of the last `Error` frame,
/// if any.
pub fn verdict(code: Option<u16>, reason: &str, error_text: Option<&str>) -> Verdict {
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
        .map_or(NO_RULE, |r| Verdict {
            class: r.class,
            diagnosis: r.diagnosis,
        })
}

/// The class of a close (see [`verdict`]).
pub fn classify(code: Option<u16>, reason: &str, error_text: Option<&str>) -> CloseClass {
    verdict(code, reason, error_text).class
}

/// The HTTP statuses of a refused WebSocket upgrade, as ranges tried in order, with their
/// verdicts.
pub const UPGRADE_STATUSES: &[((u16, u16), CloseClass)] = &[
    // With a temporary token a 401 most likely means "expired or used": re-mint once.
    ((401, 401), CloseClass::TokenRejected),
    ((403, 403), CloseClass::Fatal),
    ((429, 429), CloseClass::RateLimited),
    ((400, 499), CloseClass::ClientBug),
    ((0, 999), CloseClass::Transient),
];

/// The verdict on an HTTP-level rejection of the WebSocket upgrade.
pub fn upgrade_verdict(status: u16) -> Verdict {
    let class = UPGRADE_STATUSES
        .iter()
        .find(|((from, to), _)| (*from..=*to).contains(&status))
        .map_or(CloseClass::Transient, |(_, class)| *class);
    Verdict {
        class,
        diagnosis: Diagnosis::from_upgrade_status(status),
    }
}

/// The class of an HTTP-level rejection of the WebSocket upgrade.
pub fn classify_upgrade_status(status: u16) -> CloseClass {
    upgrade_verdict(status).class
}

/// What an HTTP status of a token endpoint means for the session, as ranges tried in order: an
/// answer without a token (2xx), a timeout or "too early" (408, 425) and server errors are
/// transient, a rate limit backs off on a minute scale, any other refusal needs a person. The
/// terminal client's providers classify their answers in src/provider/http.rs; a test there
/// holds them to this table, which the browser client reads (`token_status` of
/// [`table_json`]).
pub const TOKEN_STATUSES: &[((u16, u16), CloseClass)] = &[
    ((200, 299), CloseClass::Transient),
    ((408, 408), CloseClass::Transient),
    ((425, 425), CloseClass::Transient),
    ((429, 429), CloseClass::RateLimited),
    ((300, 499), CloseClass::Fatal),
    ((0, 999), CloseClass::Transient),
];

/// The verdict on a token server's HTTP status (`remote`: `aai-live serve`'s sections).
pub fn token_status_verdict(status: u16, remote: bool) -> Verdict {
    let class = TOKEN_STATUSES
        .iter()
        .find(|((from, to), _)| (*from..=*to).contains(&status))
        .map_or(CloseClass::Transient, |(_, class)| *class);
    Verdict {
        class,
        diagnosis: Diagnosis::from_token_status(status, remote),
    }
}

/// The verdict on a token server that cannot be reached at all.
pub const TOKEN_UNREACHABLE: Verdict = Verdict {
    class: CloseClass::Transient,
    diagnosis: Diagnosis::TcpFailure,
};

/// `token_status` of [`table_json`]: every status from 100 to 599 with its verdict for a token
/// server, runs of equal verdicts merged into ranges.
fn token_status_json() -> Vec<serde_json::Value> {
    let mut rows: Vec<((u16, u16), Verdict)> = Vec::new();
    for status in 100..=599 {
        let v = token_status_verdict(status, true);
        match rows.last_mut() {
            Some(((_, to), last)) if *last == v && *to + 1 == status => *to = status,
            _ => rows.push(((status, status), v)),
        }
    }
    rows.iter()
        .map(|((from, to), v)| {
            serde_json::json!({
                "statuses": [from, to],
                "class": v.class,
                "explain": v.diagnosis.section(),
            })
        })
        .collect()
}

/// The table as JSON, for clients in other languages (the browser client, `/close-codes.json`):
/// the rules in order with their class and troubleshooting section (`explain`, and
/// `explain_before_begin` for a close before `Begin`), the verdict on anything else, the HTTP
/// statuses of a refused upgrade, and each class with its words and its recovery. Matching:
/// lower-case `reason + " " + error` (ASCII only), then the first rule whose code range holds
/// the code and for which every group has a word contained in the text.
pub fn table_json() -> serde_json::Value {
    let verdict_json = |class: CloseClass, diagnosis: Diagnosis| {
        serde_json::json!({
            "class": class,
            "explain": diagnosis.section(),
            "explain_before_begin": diagnosis.before_begin().section(),
        })
    };
    let rules: Vec<serde_json::Value> = RULES
        .iter()
        .map(|r| {
            let mut v = verdict_json(r.class, r.diagnosis);
            v["codes"] = serde_json::json!([r.codes.0, r.codes.1]);
            v["all"] = serde_json::json!(r.all);
            v["note"] = serde_json::json!(r.note);
            v
        })
        .collect();
    let classes: serde_json::Map<String, serde_json::Value> = CloseClass::iter()
        .map(|c| {
            (
                c.name().to_owned(),
                serde_json::json!({
                    "describe": c.describe(),
                    "advice": c.advice(),
                    "remedy": c.remedy(),
                    "retryable": c.retryable(),
                    "recovery": c.recovery(),
                    "explain": c.diagnosis().section(),
                }),
            )
        })
        .collect();
    let upgrade: Vec<serde_json::Value> = UPGRADE_STATUSES
        .iter()
        .map(|((from, to), _)| {
            let v = upgrade_verdict(*from);
            serde_json::json!({
                "statuses": [from, to],
                "class": v.class,
                "explain": v.diagnosis.section(),
            })
        })
        .collect();
    serde_json::json!({
        "rules": rules,
        "no_rule": verdict_json(NO_RULE.class, NO_RULE.diagnosis),
        "no_code": verdict_json(NO_RULE.class, NO_RULE.diagnosis),
        "upgrade_status": upgrade,
        "token_status": token_status_json(),
        "token_unreachable": {
            "class": TOKEN_UNREACHABLE.class,
            "explain": TOKEN_UNREACHABLE.diagnosis.section(),
        },
        "classes": classes,
    })
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

/// A documented close: `(code, reason, Error text, class, diagnosis)`.
pub type Example = (
    Option<u16>,
    &'static str,
    Option<&'static str>,
    CloseClass,
    Diagnosis,
);

/// The documented closes with their class and troubleshooting section, one per line of
/// protocol.md §5 (current table, history, legacy codes, §5.4): `(code, reason, Error text,
/// class, diagnosis)`. The table's own test, and the test that the browser client
/// (assets/web/aai-live-client.js) reaches exactly the verdict of [`verdict`]
/// (tests/browser_js.rs), both play them.
pub const EXAMPLES: &[Example] = {
    use CloseClass::{
        ClientBug, Fatal, Normal, RateLimited, SessionExpired, TokenRejected, Transient,
    };
    use Diagnosis as D;
    &[
        // §5.1 current table
        (Some(1000), "", None, Normal, D::Close1000),
        (
            Some(3008),
            reasons::SESSION_EXPIRED,
            Some(reasons::SESSION_EXPIRED),
            SessionExpired,
            D::Close3008,
        ),
        (
            Some(3007),
            "Input duration violation: 20 ms. Expected between 50 and 1000 ms",
            None,
            ClientBug,
            D::Close3007,
        ),
        (
            Some(3007),
            "Audio Transmission Rate Exceeded: Received 5 sec. audio in 2 sec",
            None,
            ClientBug,
            D::Close3007,
        ),
        (
            Some(3006),
            "Invalid Message Type: Foo",
            None,
            ClientBug,
            D::Close3006InvalidMessage,
        ),
        (
            Some(3006),
            "Invalid JSON: {",
            None,
            ClientBug,
            D::Close3006InvalidMessage,
        ),
        (
            Some(3006),
            "Invalid Message: []",
            None,
            ClientBug,
            D::Close3006InvalidMessage,
        ),
        (
            Some(3005),
            reasons::SESSION_CANCELLED,
            None,
            Transient,
            D::Close3005,
        ),
        (
            Some(3009),
            reasons::TOO_MANY_SESSIONS,
            None,
            RateLimited,
            D::Close3009,
        ),
        (
            Some(1008),
            reasons::MISSING_AUTH,
            None,
            Fatal,
            D::Close1008MissingAuth,
        ),
        (
            Some(1008),
            reasons::INVALID_AUTH,
            None,
            TokenRejected,
            D::Close1008InvalidAuth,
        ),
        (
            Some(1008),
            "Unauthorized Connection: Insufficient balance",
            None,
            Fatal,
            D::Close1008Account,
        ),
        (
            Some(1008),
            "Unauthorized Connection: Account temporarily disabled",
            None,
            Fatal,
            D::Close1008Account,
        ),
        (
            Some(1008),
            "Unauthorized connection: Incorrect padding",
            None,
            TokenRejected,
            D::Close1008IncorrectPadding,
        ),
        // [skill] extras
        (
            Some(3006),
            "Session terminated due to inactivity",
            None,
            Transient,
            D::Close3006Inactivity,
        ),
        (Some(1009), "", None, ClientBug, D::Close1009),
        (Some(1011), "", None, Transient, D::Close1011),
        (Some(1006), "", None, Transient, D::Close1006),
        (None, "", None, Transient, D::Close1006),
        // §5.2 history: pre-2026 codes, same reasons
        (
            Some(3005),
            reasons::SESSION_EXPIRED,
            None,
            SessionExpired,
            D::Close3008,
        ),
        (
            Some(3005),
            "Input duration violation: 20 ms. Expected between 50 and 1000 ms",
            None,
            ClientBug,
            D::Close3007,
        ),
        (
            Some(3005),
            "Audio Transmission Rate Exceeded: Received 5 sec. audio in 2 sec",
            None,
            ClientBug,
            D::Close3007,
        ),
        (
            Some(3005),
            "Invalid Message Type: Foo",
            None,
            ClientBug,
            D::Close3006InvalidMessage,
        ),
        (
            Some(3005),
            "Invalid JSON: {",
            None,
            ClientBug,
            D::Close3006InvalidMessage,
        ),
        (
            Some(1008),
            "Unauthorized connection: Too many concurrent sessions",
            None,
            RateLimited,
            D::Close1008TooManySessions,
        ),
        // The reason can be the long-reason placeholder: the Error frame decides.
        (
            Some(3005),
            LONG_REASON,
            Some(reasons::SESSION_EXPIRED),
            SessionExpired,
            D::Close3008,
        ),
        // §5.4 token cases
        (
            Some(3008),
            "Temporary token expired",
            None,
            TokenRejected,
            D::Close1008TokenExpired,
        ),
        (
            Some(1008),
            reasons::TOKEN_EXPIRED,
            None,
            TokenRejected,
            D::Close1008TokenExpired,
        ),
        (
            Some(1008),
            reasons::TOKEN_USED,
            None,
            TokenRejected,
            D::Close1008TokenUsed,
        ),
        // §5.3 legacy v2 codes
        (
            Some(4000),
            "Sample rate must be a positive integer",
            None,
            ClientBug,
            D::Close1009,
        ),
        (Some(4001), "Not Authorized", None, Fatal, D::FreeTier),
        (Some(4002), "Insufficient Funds", None, Fatal, D::FreeTier),
        (
            Some(4003),
            "This feature is paid-only",
            None,
            Fatal,
            D::FreeTier,
        ),
        (
            Some(4004),
            "Session not found",
            None,
            Transient,
            D::Close1006,
        ),
        (
            Some(4008),
            "Session Expired",
            None,
            SessionExpired,
            D::Close3008,
        ),
        (
            Some(4010),
            "Session previously closed",
            None,
            Transient,
            D::Close1006,
        ),
        (
            Some(4029),
            "Client sent audio too fast",
            None,
            ClientBug,
            D::Close3007,
        ),
        (
            Some(4030),
            "Session is handled by another WebSocket",
            None,
            Transient,
            D::Close1006,
        ),
        (
            Some(4031),
            "Session idle for too long",
            None,
            Transient,
            D::Close1006,
        ),
        (
            Some(4032),
            "Audio duration is too short",
            None,
            ClientBug,
            D::Close3007,
        ),
        (
            Some(4033),
            "Audio duration is too long",
            None,
            ClientBug,
            D::Close3007,
        ),
        (
            Some(4034),
            "Audio too small to transcode",
            None,
            ClientBug,
            D::Close3007,
        ),
        (Some(4100), "", None, ClientBug, D::Close3006InvalidMessage),
        (
            Some(4101),
            "Endpoint received a message with an invalid schema",
            None,
            ClientBug,
            D::Close3006InvalidMessage,
        ),
        (
            Some(4102),
            "This account has exceeded the number of allowed streams",
            None,
            RateLimited,
            D::Close3009,
        ),
        (
            Some(4103),
            "This session has been reconnected",
            None,
            Transient,
            D::Close1006,
        ),
        (
            Some(4104),
            "Could not parse word boost parameter",
            None,
            ClientBug,
            D::Close3006InvalidMessage,
        ),
        (
            Some(1013),
            "Temporary server condition forced blocking client's request",
            None,
            Transient,
            D::Close1011,
        ),
    ]
};

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::CloseClass::{
        ClientBug, Fatal, Normal, RateLimited, SessionExpired, TokenRejected, Transient,
    };
    use super::*;

    /// One row per line of protocol.md §5 (current table, history, legacy codes, §5.4): class
    /// and section.
    #[test]
    fn close_table() {
        for (code, reason, error, class, diagnosis) in EXAMPLES {
            assert_eq!(
                verdict(*code, reason, *error),
                Verdict {
                    class: *class,
                    diagnosis: *diagnosis
                },
                "code {code:?} reason {reason:?} error {error:?}"
            );
        }
        assert_eq!(EXAMPLES.len(), 48);
    }

    /// Before `Begin`, a close the table can only place as a generic end is its own case.
    #[test]
    fn closes_before_begin_have_their_own_section() {
        use Diagnosis as D;
        for (code, reason, before) in [
            (Some(1011), "", D::CloseBeforeBegin),
            (Some(1000), "", D::CloseBeforeBegin),
            (None, "", D::CloseBeforeBegin),
            (Some(3005), reasons::SESSION_CANCELLED, D::CloseBeforeBegin),
            (Some(1008), reasons::TOKEN_USED, D::Close1008TokenUsed),
            (Some(3009), reasons::TOO_MANY_SESSIONS, D::Close3009),
        ] {
            assert_eq!(
                verdict(code, reason, None).diagnosis.before_begin(),
                before,
                "{code:?}"
            );
        }
    }

    /// Every class decides its recovery, words and section; every section a rule names exists.
    #[test]
    fn every_class_and_rule_is_decided() {
        for class in CloseClass::iter() {
            assert!(!class.describe().is_empty() && !class.advice().is_empty());
            assert!(!class.remedy().is_empty());
            assert_eq!(serde_json::to_value(class).expect("json"), class.name());
            assert!(crate::diagnosis::section(class.diagnosis().section()).is_some());
        }
        for rule in RULES {
            assert!(rule.codes.0 <= rule.codes.1, "{rule:?}");
            assert!(!rule.note.is_empty(), "{rule:?}");
            assert!(crate::diagnosis::section(rule.diagnosis.section()).is_some());
            // Words are matched against lower-cased text: an upper-case word never matches.
            for word in rule.all.iter().flat_map(|g| g.iter()) {
                assert_eq!(*word, word.to_ascii_lowercase(), "{rule:?}");
            }
        }
        let json = table_json();
        assert_eq!(json["rules"].as_array().map(Vec::len), Some(RULES.len()));
        assert_eq!(
            json["classes"].as_object().map(serde_json::Map::len),
            Some(CloseClass::iter().count())
        );
    }

    #[test]
    fn upgrade_statuses() {
        assert_eq!(classify_upgrade_status(401), TokenRejected);
        assert_eq!(classify_upgrade_status(403), Fatal);
        assert_eq!(classify_upgrade_status(400), ClientBug);
        assert_eq!(classify_upgrade_status(429), RateLimited);
        assert_eq!(classify_upgrade_status(503), Transient);
        assert_eq!(upgrade_verdict(429).diagnosis, Diagnosis::Close3009);
        assert_eq!(upgrade_verdict(404).diagnosis, Diagnosis::UpgradeRefused);
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
