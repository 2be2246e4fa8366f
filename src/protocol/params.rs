//! Connection parameters (`StreamingParams`), service endpoints, and the WebSocket URL builder.
//!
//! Both directions live here: the client builds a query string, the emulator parses one with the
//! service's leniency (booleans as `true`/`True`/`1`, lists as JSON arrays, unknown keys ignored,
//! the old `min_end_of_turn_silence_when_confident` name accepted).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use super::audio::{AudioFormat, Encoding};
use crate::secret::{REDACTED, Token};

/// Query parameter (and `UpdateConfiguration` key) telling the emulator where in the stream a
/// session's audio starts, so a word script stays aligned after reconnects. The real service
/// ignores it like any unknown parameter; the client sends it only when asked to
/// (`--emulator-hints`), and the emulator reads it.
pub const OFFSET_PARAM: &str = "emulator_stream_offset_ms";

/// Connect parameters whose values are not secret, and so are shown in full wherever a connect
/// URL is printed or logged. Every other query value — an unknown `[streaming] extra`, a
/// `webhook_auth_header_value`, a `webhook_url` (which may carry a credential in its own query) —
/// is shown as `[REDACTED]`: the list is of what is known to be harmless, not of what is known to
/// be secret, so a parameter the service adds tomorrow is hidden by default.
pub const PUBLIC_PARAMS: &[&str] = &[
    // Modelled in `StreamingParams`.
    "sample_rate",
    "encoding",
    "speech_model",
    "format_turns",
    "end_of_turn_confidence_threshold",
    "min_turn_silence",
    "max_turn_silence",
    "vad_threshold",
    "keyterms_prompt",
    "prompt",
    "filter_profanity",
    "language_detection",
    "inactivity_timeout",
    "speaker_labels",
    "max_speakers",
    // Known extras (docs and SDKs, see ../shared/protocol.md §2.3) that carry no credential.
    "min_end_of_turn_silence_when_confident",
    "mode",
    "interruption_delay",
    "continuous_partials",
    "agent_context",
    "previous_context_n_turns",
    "language_codes",
    "language_code",
    "domain",
    "voice_focus",
    "voice_focus_threshold",
    "noise_suppression_model",
    "noise_suppression_threshold",
    "redact_pii",
    "redact_pii_policies",
    "redact_pii_sub",
    "include_partial_turns",
    "speaker_labels_revision_interval_ms",
    "session_heartbeat",
    "webhook_auth_header_name",
    "customer_support_audio_capture",
    "formatted_finals",
    "word_finalization_max_wait_time",
    "turn_left_pad_ms",
    OFFSET_PARAM,
];

/// Whether a connect parameter's value may be shown (see [`PUBLIC_PARAMS`]).
pub fn is_public_param(name: &str) -> bool {
    PUBLIC_PARAMS.contains(&name)
}

/// A URL fit to show, log or serialise: the password of its user info replaced by `REDACTED`,
/// and the value of every query parameter not known to be harmless ([`PUBLIC_PARAMS`]) by
/// `[REDACTED]` (a token, a key, a signature). The one redaction of every URL aai-live shows:
/// connect URLs ([`WsUrl`]), the endpoints of `config --check`, the NDJSON `hello`, the
/// headless and dashboard lines, a limits store's URL in an error.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if url.password().is_some() {
        let _ = shown.set_password(Some("REDACTED"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_public_param(&k) {
                    v.into_owned()
                } else {
                    REDACTED.to_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        shown.set_query(None);
        if !pairs.is_empty() {
            shown.query_pairs_mut().extend_pairs(pairs).finish();
        }
    }
    shown.to_string()
}

/// [`redact_url`] of text that may not parse as a URL (a value being refused): then whatever
/// sits between `user:` and `@`, and everything after a `?`, is hidden all the same. Text with
/// nothing to hide is kept as written.
pub fn redact_url_text(text: &str) -> String {
    if let Ok(url) = Url::parse(text) {
        if url.password().is_none() && url.query().is_none() {
            return text.to_owned();
        }
        return redact_url(&url);
    }
    let (text, query) = match text.split_once('?') {
        Some((before, _)) => (before, "?[REDACTED]"),
        None => (text, ""),
    };
    let shown = match (text.find("://"), text.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match text[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:REDACTED{}", &text[..scheme + 3], &text[at..]),
            None => text.to_owned(),
        },
        _ => text.to_owned(),
    };
    shown + query
}

/// Service regions and their hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    /// Edge-routed (`streaming.assemblyai.com`).
    #[default]
    Default,
    Us,
    Eu,
}

/// The token and streaming endpoints of an emulator (or any v3 server), from the base URL
/// `aai-live emulate` prints (`http://127.0.0.1:8080`), or its full `/v3/token` URL:
/// `http(s)://HOST:PORT/v3/token` and `ws(s)://HOST:PORT/v3/ws`.
pub fn server_endpoints(base: &Url) -> Result<(Url, Url), String> {
    let secure = match base.scheme() {
        "http" => false,
        "https" => true,
        other => {
            return Err(format!(
                "{other}:// is not an emulator's address: give the http:// or https:// URL \
                 `aai-live emulate` prints"
            ));
        }
    };
    let host = base
        .host_str()
        .ok_or_else(|| "the URL names no host".to_owned())?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let authority = match base.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    let path = base.path().trim_end_matches('/');
    let prefix = path.strip_suffix("/v3/token").unwrap_or(path);
    let (http, ws) = if secure {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let token =
        Url::parse(&format!("{http}://{authority}{prefix}/v3/token")).map_err(|e| e.to_string())?;
    let stream =
        Url::parse(&format!("{ws}://{authority}{prefix}/v3/ws")).map_err(|e| e.to_string())?;
    Ok((token, stream))
}

impl Region {
    pub fn host(self) -> &'static str {
        match self {
            Self::Default => "streaming.assemblyai.com",
            Self::Us => "streaming.us.assemblyai.com",
            Self::Eu => "streaming.eu.assemblyai.com",
        }
    }

    pub fn ws_url(self) -> Url {
        Url::parse(&format!("wss://{}/v3/ws", self.host())).expect("static URL is valid")
    }

    /// The token endpoint on the same host: tokens are minted where they are redeemed.
    pub fn token_url(self) -> Url {
        Url::parse(&format!("https://{}/v3/token", self.host())).expect("static URL is valid")
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "default" => Some(Self::Default),
            "us" => Some(Self::Us),
            "eu" => Some(Self::Eu),
            _ => None,
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::Us => "us",
            Self::Eu => "eu",
        })
    }
}

/// Where the temporary token travels on connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPlacement {
    /// `Authorization: <token>` (what the Python SDK does; keeps it out of URLs and proxies' logs).
    #[default]
    Header,
    /// `?token=<token>` (what browsers must do).
    Query,
}

/// Every documented connection parameter, typed.
#[expect(
    clippy::struct_excessive_bools,
    reason = "the service's independent on/off parameters, one field each"
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamingParams {
    pub sample_rate: u32,
    pub encoding: Encoding,
    pub speech_model: String,
    pub format_turns: bool,
    pub end_of_turn_confidence_threshold: Option<f64>,
    /// Sent as `min_turn_silence` (renamed from `min_end_of_turn_silence_when_confident`).
    pub min_turn_silence: Option<u32>,
    pub max_turn_silence: Option<u32>,
    pub vad_threshold: Option<f64>,
    pub keyterms_prompt: Vec<String>,
    pub prompt: Option<String>,
    pub filter_profanity: Option<bool>,
    pub language_detection: bool,
    pub inactivity_timeout: Option<u32>,
    pub speaker_labels: bool,
    pub max_speakers: Option<u32>,
    /// U3 models: `min_latency`, `balanced`, `max_accuracy`.
    pub mode: Option<String>,
    pub redact_pii: bool,
    pub redact_pii_policies: Vec<String>,
    pub redact_pii_sub: Option<String>,
    pub include_partial_turns: Option<bool>,
    /// Parameters not modelled here, passed verbatim.
    pub extra: BTreeMap<String, String>,
}

impl Default for StreamingParams {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            encoding: Encoding::PcmS16le,
            speech_model: "universal-streaming-english".into(),
            format_turns: false,
            end_of_turn_confidence_threshold: None,
            min_turn_silence: None,
            max_turn_silence: None,
            vad_threshold: None,
            keyterms_prompt: Vec::new(),
            prompt: None,
            filter_profanity: None,
            language_detection: false,
            inactivity_timeout: None,
            speaker_labels: false,
            max_speakers: None,
            mode: None,
            redact_pii: false,
            redact_pii_policies: Vec::new(),
            redact_pii_sub: None,
            include_partial_turns: None,
            extra: BTreeMap::new(),
        }
    }
}

/// A parameter outside what the service accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid streaming parameter `{name}` = {value}: {expected}")]
pub struct ParamError {
    pub name: String,
    pub value: String,
    pub expected: String,
}

fn param_error(name: &str, value: impl fmt::Display, expected: &str) -> ParamError {
    ParamError {
        name: name.into(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// Known model names (others are passed through with a warning by the config layer).
pub const SPEECH_MODELS: &[&str] = &[
    "universal-streaming-english",
    "universal-streaming-multilingual",
    "whisper-rt",
    "u3-rt-pro",
    "u3-pro",
    "universal-3-5-pro",
    "universal-3-6-pro",
];

impl StreamingParams {
    pub fn audio_format(&self) -> AudioFormat {
        AudioFormat::new(self.sample_rate, self.encoding)
    }

    /// Whether the model belongs to the U3-Pro family (whole-turn partials, SpeechStarted).
    /// The service sends no partial turns: PII redaction withholds them unless
    /// `include_partial_turns`. A long turn then says nothing until its end, so silence from the
    /// service after voice is no sign of a dead session.
    pub fn partials_withheld(&self) -> bool {
        self.redact_pii && self.include_partial_turns != Some(true)
    }

    pub fn is_u3(&self) -> bool {
        self.speech_model.starts_with("u3") || self.speech_model.starts_with("universal-3")
    }

    /// Whether the model takes `min_turn_silence`/`max_turn_silence` in an
    /// `UpdateConfiguration` (Universal-Streaming and the U3-Pro family do; `whisper-rt`'s docs
    /// list none).
    pub fn takes_live_turn_silences(&self) -> bool {
        self.speech_model != "whisper-rt"
    }

    /// These parameters after a live `UpdateConfiguration`: what later sessions connect with,
    /// so a setting changed mid-session is carried to every successor.
    #[must_use]
    pub fn updated(&self, update: &crate::protocol::messages::UpdateConfiguration) -> Self {
        let mut next = self.clone();
        if let Some(k) = &update.keyterms_prompt {
            next.keyterms_prompt.clone_from(k);
        }
        if update.prompt.is_some() {
            next.prompt.clone_from(&update.prompt);
        }
        for (slot, value) in [
            (&mut next.min_turn_silence, update.min_turn_silence),
            (&mut next.max_turn_silence, update.max_turn_silence),
        ] {
            if value.is_some() {
                *slot = value;
            }
        }
        for (slot, value) in [
            (
                &mut next.end_of_turn_confidence_threshold,
                update.end_of_turn_confidence_threshold,
            ),
            (&mut next.vad_threshold, update.vad_threshold),
        ] {
            if value.is_some() {
                *slot = value;
            }
        }
        next
    }

    /// Check every value against the service's documented ranges.
    pub fn validate(&self) -> Result<(), ParamError> {
        if !(8000..=96_000).contains(&self.sample_rate) {
            return Err(param_error(
                "sample_rate",
                self.sample_rate,
                "8000 to 96000 Hz",
            ));
        }
        if self.speech_model.trim().is_empty() {
            return Err(param_error("speech_model", "\"\"", "a model name"));
        }
        for (name, value) in [
            (
                "end_of_turn_confidence_threshold",
                self.end_of_turn_confidence_threshold,
            ),
            ("vad_threshold", self.vad_threshold),
        ] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                return Err(param_error(name, v, "0.0 to 1.0"));
            }
        }
        for (name, value) in [
            ("min_turn_silence", self.min_turn_silence),
            ("max_turn_silence", self.max_turn_silence),
        ] {
            if let Some(v) = value
                && v > 10_000
            {
                return Err(param_error(name, v, "0 to 10000 ms"));
            }
        }
        if self.keyterms_prompt.len() > 100 {
            return Err(param_error(
                "keyterms_prompt",
                format!("{} terms", self.keyterms_prompt.len()),
                "at most 100 terms",
            ));
        }
        if let Some(term) = self.keyterms_prompt.iter().find(|t| t.chars().count() > 50) {
            return Err(param_error(
                "keyterms_prompt",
                format!("{term:?}"),
                "terms of at most 50 characters",
            ));
        }
        if let Some(p) = &self.prompt
            && p.chars().count() > 1750
        {
            return Err(param_error(
                "prompt",
                format!("{} characters", p.chars().count()),
                "at most 1750 characters",
            ));
        }
        if let Some(t) = self.inactivity_timeout
            && !(5..=3600).contains(&t)
        {
            return Err(param_error("inactivity_timeout", t, "5 to 3600 seconds"));
        }
        if let Some(n) = self.max_speakers
            && !(1..=10).contains(&n)
        {
            return Err(param_error("max_speakers", n, "1 to 10"));
        }
        Ok(())
    }

    /// The query pairs, in a stable order. Booleans are `true`/`false`, lists JSON arrays.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let mut q: Vec<(String, String)> = vec![
            ("sample_rate".into(), self.sample_rate.to_string()),
            ("encoding".into(), self.encoding.as_str().into()),
            ("speech_model".into(), self.speech_model.clone()),
            ("format_turns".into(), self.format_turns.to_string()),
        ];
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.push((k.into(), v));
            }
        };
        push(
            "end_of_turn_confidence_threshold",
            self.end_of_turn_confidence_threshold.map(|v| v.to_string()),
        );
        push(
            "min_turn_silence",
            self.min_turn_silence.map(|v| v.to_string()),
        );
        push(
            "max_turn_silence",
            self.max_turn_silence.map(|v| v.to_string()),
        );
        push("vad_threshold", self.vad_threshold.map(|v| v.to_string()));
        if !self.keyterms_prompt.is_empty() {
            push(
                "keyterms_prompt",
                serde_json::to_string(&self.keyterms_prompt).ok(),
            );
        }
        push("prompt", self.prompt.clone());
        push(
            "filter_profanity",
            self.filter_profanity.map(|v| v.to_string()),
        );
        push(
            "language_detection",
            self.language_detection.then(|| "true".into()),
        );
        push(
            "inactivity_timeout",
            self.inactivity_timeout.map(|v| v.to_string()),
        );
        push("speaker_labels", self.speaker_labels.then(|| "true".into()));
        push("max_speakers", self.max_speakers.map(|v| v.to_string()));
        push("mode", self.mode.clone());
        push("redact_pii", self.redact_pii.then(|| "true".into()));
        if !self.redact_pii_policies.is_empty() {
            push(
                "redact_pii_policies",
                serde_json::to_string(&self.redact_pii_policies).ok(),
            );
        }
        push("redact_pii_sub", self.redact_pii_sub.clone());
        push(
            "include_partial_turns",
            self.include_partial_turns.map(|v| v.to_string()),
        );
        for (k, v) in &self.extra {
            q.push((k.clone(), v.clone()));
        }
        q
    }

    /// Parse a connect query the way the service does. Unknown parameters are ignored and
    /// returned so the caller can log them; a known parameter with an unreadable value is an
    /// error naming it.
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(Self, Vec<String>), ParamError> {
        let mut p = Self::default();
        let mut ignored = Vec::new();
        for (key, value) in pairs {
            match key {
                "sample_rate" => p.sample_rate = parse_num(key, value)?,
                "encoding" => {
                    p.encoding = Encoding::parse(value)
                        .ok_or_else(|| param_error(key, value, "pcm_s16le or pcm_mulaw"))?;
                }
                "speech_model" => p.speech_model = value.into(),
                "format_turns" => p.format_turns = parse_bool(key, value)?,
                "end_of_turn_confidence_threshold" => {
                    p.end_of_turn_confidence_threshold = Some(parse_num(key, value)?);
                }
                "min_turn_silence" | "min_end_of_turn_silence_when_confident" => {
                    p.min_turn_silence = Some(parse_num(key, value)?);
                }
                "max_turn_silence" => p.max_turn_silence = Some(parse_num(key, value)?),
                "vad_threshold" => p.vad_threshold = Some(parse_num(key, value)?),
                "keyterms_prompt" | "keyterms" => p.keyterms_prompt = parse_list(key, value)?,
                "prompt" => p.prompt = Some(value.into()),
                "filter_profanity" => p.filter_profanity = Some(parse_bool(key, value)?),
                "language_detection" => p.language_detection = parse_bool(key, value)?,
                "inactivity_timeout" => p.inactivity_timeout = Some(parse_num(key, value)?),
                "speaker_labels" => p.speaker_labels = parse_bool(key, value)?,
                "max_speakers" => p.max_speakers = Some(parse_num(key, value)?),
                "mode" => p.mode = Some(value.into()),
                "redact_pii" => p.redact_pii = parse_bool(key, value)?,
                "redact_pii_policies" => p.redact_pii_policies = parse_list(key, value)?,
                "redact_pii_sub" => p.redact_pii_sub = Some(value.into()),
                "include_partial_turns" => {
                    p.include_partial_turns = Some(parse_bool(key, value)?);
                }
                // The credential is not a streaming parameter.
                "token" => {}
                other => ignored.push(other.to_owned()),
            }
        }
        Ok((p, ignored))
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ParamError> {
    value
        .trim()
        .parse()
        .map_err(|_| param_error(key, value, "a number"))
}

/// Booleans arrive as `true`/`false` (JS SDK, integrations), `True`/`False` (Python's
/// `urlencode`), or `1`/`0`.
pub fn parse_bool(key: &str, value: &str) -> Result<bool, ParamError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(param_error(key, value, "true or false")),
    }
}

/// Lists are JSON arrays; Python SDK 0.44–0.45 sent Python reprs (`['a', 'b']`), accepted too.
fn parse_list(key: &str, value: &str) -> Result<Vec<String>, ParamError> {
    serde_json::from_str::<Vec<String>>(value)
        .or_else(|_| serde_json::from_str::<Vec<String>>(&value.replace('\'', "\"")))
        .map_err(|_| param_error(key, value, "a JSON array of strings"))
}

/// Errors building a connect URL.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UrlError {
    #[error("streaming URL {url} must use wss:// (ws:// is allowed for loopback addresses only)")]
    InsecureScheme { url: String },
    #[error("streaming URL {url} has an unsupported scheme (use wss:// or, for loopback, ws://)")]
    BadScheme { url: String },
    #[error(transparent)]
    Param(#[from] ParamError),
}

/// Whether a URL's host is a loopback address (where plain ws:// and http:// are acceptable).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Check a streaming endpoint: `wss://` anywhere, `ws://` for loopback only.
pub fn check_ws_endpoint(url: &Url) -> Result<(), UrlError> {
    match url.scheme() {
        "wss" => Ok(()),
        "ws" if is_loopback(url) => Ok(()),
        "ws" => Err(UrlError::InsecureScheme {
            url: url.to_string(),
        }),
        _ => Err(UrlError::BadScheme {
            url: url.to_string(),
        }),
    }
}

/// A connect URL that may contain a token: `Debug`/`Display` show it redacted; the full URL is
/// exposed only to the connector.
pub struct WsUrl {
    full: SecretString,
    redacted: String,
}

impl WsUrl {
    pub fn expose(&self) -> &str {
        self.full.expose_secret()
    }

    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WsUrl({})", self.redacted)
    }
}

impl fmt::Display for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// Build the connect URL for `endpoint` (a region's or a custom one). With
/// `token_in_query`, the token is appended percent-encoded as `token=` (real tokens contain
/// `+`, `/` and `=`).
pub fn build_ws_url(
    endpoint: &Url,
    params: &StreamingParams,
    token_in_query: Option<&Token>,
) -> Result<WsUrl, UrlError> {
    check_ws_endpoint(endpoint)?;
    params.validate()?;
    let mut url = endpoint.clone();
    url.set_query(None);
    url.query_pairs_mut()
        .extend_pairs(params.query_pairs())
        .finish();
    if let Some(token) = token_in_query {
        url.query_pairs_mut()
            .append_pair("token", token.expose())
            .finish();
    }
    // What may be printed: every value that is not known to be harmless is redacted (the token
    // is not in the list), and a password in the endpoint's user info.
    let redacted = redact_url(&url);
    Ok(WsUrl {
        full: SecretString::from(url.to_string()),
        redacted,
    })
}

/// The connect URL and the `Authorization` header for `token`, placed as `placement` says: in
/// the query (and no header) or in the header (and not in the URL). The one decision of where a
/// token travels, for every client that opens sessions.
pub fn place_token(
    endpoint: &Url,
    params: &StreamingParams,
    token: Token,
    placement: TokenPlacement,
) -> Result<(WsUrl, Option<SecretString>), UrlError> {
    match placement {
        TokenPlacement::Query => Ok((build_ws_url(endpoint, params, Some(&token))?, None)),
        TokenPlacement::Header => Ok((
            build_ws_url(endpoint, params, None)?,
            Some(token.into_secret()),
        )),
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn an_emulators_base_url_gives_both_endpoints() {
        for (given, token, ws) in [
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/v3/token",
                "ws://127.0.0.1:8080/v3/ws",
            ),
            (
                "http://127.0.0.1:8080/v3/token",
                "http://127.0.0.1:8080/v3/token",
                "ws://127.0.0.1:8080/v3/ws",
            ),
            (
                "https://emu.example/base/",
                "https://emu.example/base/v3/token",
                "wss://emu.example/base/v3/ws",
            ),
            (
                "http://[::1]:9/",
                "http://[::1]:9/v3/token",
                "ws://[::1]:9/v3/ws",
            ),
        ] {
            let (t, w) = server_endpoints(&Url::parse(given).expect("url")).expect(given);
            assert_eq!((t.as_str(), w.as_str()), (token, ws), "{given}");
        }
        assert!(server_endpoints(&Url::parse("ws://127.0.0.1:1").expect("url")).is_err());
    }
}

/// The fields an `UpdateConfiguration` changes, checked against the connection parameters'
/// ranges (one set of rules for both).
pub fn check_update(
    update: &crate::protocol::messages::UpdateConfiguration,
) -> Result<(), ParamError> {
    StreamingParams::default().updated(update).validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Url {
        Url::parse("ws://127.0.0.1:9999/v3/ws").expect("url")
    }

    #[test]
    fn region_endpoints() {
        assert_eq!(
            Region::Eu.ws_url().as_str(),
            "wss://streaming.eu.assemblyai.com/v3/ws"
        );
        assert_eq!(
            Region::Us.token_url().as_str(),
            "https://streaming.us.assemblyai.com/v3/token"
        );
        assert_eq!(
            Region::Default.ws_url().as_str(),
            "wss://streaming.assemblyai.com/v3/ws"
        );
    }

    #[test]
    fn every_value_not_known_to_be_harmless_is_redacted_in_display() {
        let params = StreamingParams {
            extra: BTreeMap::from([
                (
                    "webhook_auth_header_value".to_owned(),
                    "s3cr3t-value".to_owned(),
                ),
                ("webhook_url".to_owned(), "https://h/?key=abc123".to_owned()),
                ("some_future_param".to_owned(), "who-knows".to_owned()),
                ("mode".to_owned(), "balanced".to_owned()),
            ]),
            ..StreamingParams::default()
        };
        let url = build_ws_url(&local(), &params, None).expect("url");
        assert!(url.expose().contains("s3cr3t-value"), "the wire keeps it");
        for shown in [url.to_string(), format!("{url:?}")] {
            for secret in ["s3cr3t-value", "abc123", "who-knows"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("mode=balanced"), "{shown}");
            assert!(shown.contains("sample_rate=16000"), "{shown}");
            assert!(
                shown.contains("webhook_auth_header_value=%5BREDACTED%5D"),
                "{shown}"
            );
        }
    }

    #[test]
    fn urls_are_shown_without_passwords_and_secret_query_values() {
        let url = Url::parse(
            "wss://user:pa55word@host.example:8443/v3/ws?sample_rate=16000&key=k3y-value&\
             token=t0ken&mode=fast",
        )
        .expect("url");
        let shown = redact_url(&url);
        assert_eq!(
            shown,
            "wss://user:REDACTED@host.example:8443/v3/ws?sample_rate=16000&\
             key=%5BREDACTED%5D&token=%5BREDACTED%5D&mode=fast"
        );
        let plain = Url::parse("https://host.example/token").expect("url");
        assert_eq!(redact_url(&plain), "https://host.example/token");
        // Text that is not a URL (a value being refused) is hidden all the same.
        assert_eq!(
            redact_url_text("redis://user:hunter2@host:6379/0"),
            "redis://user:REDACTED@host:6379/0"
        );
        assert_eq!(
            redact_url_text("redis://:hunter2@host"),
            "redis://:REDACTED@host"
        );
        assert_eq!(
            redact_url_text("redis://u:hunt er2@ho st"),
            "redis://u:REDACTED@ho st"
        );
        assert_eq!(
            redact_url_text("redis://u@ho st/?password=hunter2"),
            "redis://u@ho st/?[REDACTED]"
        );
        assert_eq!(redact_url_text("redis://host"), "redis://host");
        // The connect URL says the same of its endpoint's user info.
        let endpoint = Url::parse("ws://u:pa55word@127.0.0.1:9/v3/ws").expect("url");
        let ws = build_ws_url(&endpoint, &StreamingParams::default(), None).expect("url");
        assert!(!ws.to_string().contains("pa55word"), "{ws}");
    }

    proptest::proptest! {
        /// Whatever a URL holds, its password and the values of parameters not known to be
        /// harmless never reach its shown form; text that is no URL never panics.
        #[test]
        fn redaction_hides_secrets(
            password in "[A-Za-z0-9]{8,20}",
            secret in "[A-Za-z0-9]{8,20}",
            name in "[a-z_]{1,12}",
            text in "\\PC{0,80}",
        ) {
            let url = Url::parse(&format!(
                "https://me:{password}@h.example/p?{name}={secret}&sample_rate=16000"
            ))
            .expect("url");
            let shown = redact_url(&url);
            proptest::prop_assert!(!shown.contains(&password), "{}", shown);
            if !is_public_param(&name) {
                proptest::prop_assert!(!shown.contains(&secret), "{}", shown);
            }
            proptest::prop_assert!(shown.contains("sample_rate=16000"), "{}", shown);
            let _ = redact_url_text(&text);
        }
    }

    #[test]
    fn token_is_percent_encoded_and_redacted_in_display() {
        let token = Token::new("AQICAHg+ab/cd==", "test");
        let url = build_ws_url(&local(), &StreamingParams::default(), Some(&token)).expect("url");
        assert!(
            url.expose().ends_with("token=AQICAHg%2Bab%2Fcd%3D%3D"),
            "{}",
            url.expose()
        );
        for shown in [
            url.to_string(),
            format!("{url:?}"),
            url.redacted().to_owned(),
        ] {
            assert!(!shown.contains("AQICAHg"), "{shown}");
            assert!(shown.contains("REDACTED"), "{shown}");
        }
        let parsed = Url::parse(url.expose()).expect("parse");
        let got = parsed
            .query_pairs()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned());
        assert_eq!(got.as_deref(), Some("AQICAHg+ab/cd=="));
    }

    #[test]
    fn query_has_booleans_and_json_lists() {
        let params = StreamingParams {
            format_turns: true,
            keyterms_prompt: vec!["AssemblyAI".into(), "aai-live".into()],
            speaker_labels: true,
            min_turn_silence: Some(300),
            extra: BTreeMap::from([("mode".to_owned(), "balanced".to_owned())]),
            ..StreamingParams::default()
        };
        let url = build_ws_url(&local(), &params, None).expect("url");
        let q = url.expose().split_once('?').expect("query").1.to_owned();
        assert!(q.contains("format_turns=true"), "{q}");
        assert!(q.contains("speaker_labels=true"), "{q}");
        assert!(q.contains("min_turn_silence=300"), "{q}");
        assert!(q.contains("mode=balanced"), "{q}");
        assert!(
            q.contains("keyterms_prompt=%5B%22AssemblyAI%22%2C%22aai-live%22%5D"),
            "{q}"
        );
        assert!(!q.contains("token="));
    }

    #[test]
    fn plain_ws_only_for_loopback() {
        let p = StreamingParams::default();
        for ok in [
            "ws://localhost:1/v3/ws",
            "ws://[::1]:1/v3/ws",
            "wss://x.example/v3/ws",
        ] {
            assert!(
                build_ws_url(&Url::parse(ok).expect("url"), &p, None).is_ok(),
                "{ok}"
            );
        }
        let bad = Url::parse("ws://example.com/v3/ws").expect("url");
        assert!(matches!(
            build_ws_url(&bad, &p, None),
            Err(UrlError::InsecureScheme { .. })
        ));
        let http = Url::parse("https://example.com/v3/ws").expect("url");
        assert!(matches!(
            build_ws_url(&http, &p, None),
            Err(UrlError::BadScheme { .. })
        ));
    }

    #[test]
    fn validation_names_the_parameter() {
        let p = StreamingParams {
            sample_rate: 4000,
            ..StreamingParams::default()
        };
        let e = p.validate().expect_err("invalid");
        assert_eq!(e.name, "sample_rate");
        assert!(e.to_string().contains("4000"));
        let p = StreamingParams {
            keyterms_prompt: vec!["x".repeat(51)],
            ..StreamingParams::default()
        };
        assert_eq!(p.validate().expect_err("invalid").name, "keyterms_prompt");
        let p = StreamingParams {
            inactivity_timeout: Some(2),
            ..StreamingParams::default()
        };
        assert_eq!(
            p.validate().expect_err("invalid").name,
            "inactivity_timeout"
        );
    }

    #[test]
    fn from_query_is_lenient_like_the_service() {
        let (p, ignored) = StreamingParams::from_query([
            ("sample_rate", "8000"),
            ("encoding", "pcm_mulaw"),
            ("format_turns", "True"),
            ("speaker_labels", "1"),
            ("min_end_of_turn_silence_when_confident", "250"),
            ("keyterms_prompt", "['a', 'b']"),
            ("no_such_param", "x"),
            ("token", "secret"),
        ])
        .expect("parse");
        assert_eq!(p.sample_rate, 8000);
        assert_eq!(p.encoding, Encoding::PcmMulaw);
        assert!(p.format_turns && p.speaker_labels);
        assert_eq!(p.min_turn_silence, Some(250));
        assert_eq!(p.keyterms_prompt, vec!["a", "b"]);
        assert_eq!(ignored, vec!["no_such_param"]);
        let e = StreamingParams::from_query([("sample_rate", "fast")]).expect_err("bad");
        assert_eq!(e.name, "sample_rate");
    }

    #[test]
    fn query_round_trips_through_the_parser() {
        let params = StreamingParams {
            format_turns: true,
            keyterms_prompt: vec!["x y".into()],
            vad_threshold: Some(0.5),
            inactivity_timeout: Some(30),
            ..StreamingParams::default()
        };
        let pairs = params.query_pairs();
        let (back, ignored) =
            StreamingParams::from_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .expect("parse");
        assert_eq!(back, params);
        assert!(ignored.is_empty());
    }
}
