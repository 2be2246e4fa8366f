//! The validated, typed configuration that the rest of the program reads.
//!
//! Values here are already checked (ranges, URL schemes, key syntax), so consumers need no
//! error handling of their own. The field names follow `config/default.toml` one to one, and
//! `docs/configuration.md` documents each key.
//!
//! The region, the audio encoding and the token placement are the `protocol` enums themselves
//! (`config`'s one edge to another crate module, see `config.rs`): the config only adds their
//! file spellings ([`Choice`]), so nothing maps one enum onto a copy of it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::keys::{KeyCode, KeySpec, Modifiers};
use super::paths;
use super::server::{Cidr, LimitsStore, RateSpec};
use crate::protocol::{Encoding, Region, StreamingParams, TokenPlacement};

/// The effective configuration after all layers are merged and validated.
///
/// `Config::default()` holds the values of `config/default.toml`, written out as plain Rust so
/// that it is cheap and cannot fail (it does not run the loader). `config/default.toml` stays the
/// source: the test `default_toml_parses_to_default` (tests/config.rs) fails when what the loader
/// builds from that file alone differs from `Config::default()` in any field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub provider: ProviderConfig,
    pub streaming: StreamingConfig,
    pub session: SessionConfig,
    pub audio: AudioConfig,
    pub transcript: TranscriptConfig,
    pub ui: UiConfig,
    pub keys: KeysConfig,
    pub log: LogConfig,
    pub server: ServerSettings,
    /// `[inputs]`: labelled inputs (meeting mode); empty = the single `audio.input`.
    pub inputs: Vec<LabelledInput>,
    pub speakers: SpeakersConfig,
    pub archive: ArchiveConfig,
    pub feed: FeedConfig,
}

/// `[speakers]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakersConfig {
    /// `LABEL` or `INPUT:LABEL` (lower case) → name.
    pub names: BTreeMap<String, String>,
    /// Already-transcribed audio a new session is fed first, to map its speaker labels onto
    /// the run's (zero: never).
    pub priming: Duration,
}

impl Default for SpeakersConfig {
    fn default() -> Self {
        Self {
            names: BTreeMap::new(),
            priming: Duration::from_secs(5),
        }
    }
}

/// `[archive]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchiveConfig {
    /// Keep each input's captured audio as WAV beside the transcript.
    pub enabled: bool,
}

/// `[feed]`: the run's events offered to local consumers (docs/feed.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// Where the feed listens (`--feed ADDR`); `None`: no feed.
    pub listen: Option<std::net::SocketAddr>,
    /// The feed's token, needed on a non-loopback address (or `AAI_LIVE_FEED_TOKEN`).
    pub token_file: Option<PathBuf>,
    /// Web origins allowed besides the feed's own (CORS, WebSocket upgrades), normalised.
    pub origins: Vec<String>,
    /// Events kept for consumers that join or resume late (also bounded to 16 MiB).
    pub history_events: u32,
    /// Events waiting for one consumer at most before its partials are dropped, then it is
    /// disconnected.
    pub queue_events: u32,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token_file: None,
            origins: Vec::new(),
            history_events: 10_000,
            queue_events: 1_000,
        }
    }
}

/// A stream's label in meeting mode (`--input you=mic`, `[inputs] you = "mic"`): ASCII letters,
/// digits, `_` and `-`, 1–32 of them. Kept in lower case, because labels are compared without
/// case (the environment lower-cases its keys: `AAI_LIVE__INPUTS__YOU`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(String);

impl Label {
    pub const MAX_LEN: usize = 32;

    /// The label as written on screen and in exports: its first letter upper-cased ("You").
    pub fn display_name(&self) -> String {
        let mut chars = self.0.chars();
        chars.next().map_or_else(String::new, |first| {
            first.to_ascii_uppercase().to_string() + chars.as_str()
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Label {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=Self::MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(format!(
                "a label is 1-{} letters, digits, `_` or `-` (e.g. \"you\", \"them\")",
                Self::MAX_LEN
            ))
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One input of a run: its label (`None`: the single unlabelled input) and where it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub label: Option<Label>,
    pub spec: InputSpec,
}

/// An entry of `[inputs]` (or a `--input LABEL=SPEC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledInput {
    pub label: Label,
    pub spec: InputSpec,
}

impl Config {
    /// The inputs of a run, in order: the `[inputs]` (or `--input LABEL=SPEC`) entries, else
    /// the single `audio.input` without a label.
    pub fn sources(&self) -> Vec<Source> {
        if self.inputs.is_empty() {
            return vec![Source {
                label: None,
                spec: self.audio.input.clone(),
            }];
        }
        self.inputs
            .iter()
            .map(|i| Source {
                label: Some(i.label.clone()),
                spec: i.spec.clone(),
            })
            .collect()
    }
}

/// A `--input` value: `LABEL=SPEC`, or a spec alone. The part before the first `=` is a label
/// only when no `:` precedes that `=` and it is a valid label, so `file:/x/a=b.wav` stays a
/// spec.
pub fn parse_input_arg(text: &str) -> Result<(Option<Label>, InputSpec), String> {
    if let Some((head, spec)) = text.split_once('=')
        && !head.contains(':')
        && let Ok(label) = head.parse::<Label>()
    {
        return Ok((Some(label), spec.parse()?));
    }
    Ok((None, text.parse()?))
}

/// The rules a set of labelled inputs must keep: labels unique (without case), `stdin` at most
/// once (there is one standard input).
pub fn check_inputs(inputs: &[LabelledInput]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for input in inputs {
        if !seen.insert(&input.label) {
            return Err(format!(
                "the label {:?} is used twice (labels are compared without case)",
                input.label.as_str()
            ));
        }
    }
    if inputs
        .iter()
        .filter(|i| matches!(i.spec, InputSpec::Stdin))
        .count()
        > 1
    {
        return Err("`stdin` can be the input of one label only".to_owned());
    }
    Ok(())
}

/// Gives an existing enum its config-file spellings as a [`Choice`]. The `match` in `as_str`
/// is exhaustive, so a new variant is a compile error here until it has a spelling.
macro_rules! impl_choice {
    ($name:ty { $($variant:ident = $text:literal,)+ }) => {
        impl Choice for $name {
            const ALL: &'static [Self] = &[$(Self::$variant,)+];

            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }
    };
}

/// Defines a closed set of string values with the exact spelling used in the config file; the
/// spelling drives parsing, `Display` and serde, so they cannot disagree.
macro_rules! choice_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl_choice!($name { $($variant = $text,)+ });

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse_choice(s)
            }
        }
    };
}

/// A config value chosen from a fixed list of spellings.
pub trait Choice: Copy + 'static {
    /// Every value, in the order the documentation lists them.
    const ALL: &'static [Self];
    /// The spelling in the config file.
    fn as_str(self) -> &'static str;

    /// The allowed spellings, quoted, for error messages: `"a", "b" or "c"`.
    fn allowed() -> String {
        let quoted: Vec<String> = Self::ALL
            .iter()
            .map(|v| format!("{:?}", v.as_str()))
            .collect();
        match quoted.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => quoted.join(""),
        }
    }

    /// The value spelt `text`, or the rule it breaks: `must be one of "a", "b" or "c"`.
    fn parse_choice(text: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| format!("must be one of {}", Self::allowed()))
    }
}

choice_enum! {
    /// Where one-time streaming tokens come from (`provider.kind`).
    pub enum ProviderKind {
        /// Mint tokens with the user's API key.
        ApiKey = "api-key",
        /// Fetch tokens from the user's own token server.
        Remote = "remote",
        /// Read tokens from a file another process writes.
        File = "file",
    }
}

// The protocol's own enums, spelt as in the config file. These are also their serde names, which
// the wire code uses; `protocol_choices_are_spelt_as_on_the_wire` keeps the two equal.

// `provider.api_key.region`
impl_choice!(Region {
    Default = "default",
    Us = "us",
    Eu = "eu",
});

// `streaming.encoding`
impl_choice!(Encoding {
    PcmS16le = "pcm_s16le",
    PcmMulaw = "pcm_mulaw",
});

// `streaming.token_in`
impl_choice!(TokenPlacement {
    Header = "header",
    Query = "query",
});

choice_enum! {
    /// HTTP method for the remote token server (`provider.remote.method`).
    #[derive(Default)]
    pub enum HttpMethod {
        #[default]
        Get = "GET",
        Post = "POST",
    }
}

choice_enum! {
    /// Transcript export format (`transcript.formats`).
    pub enum TranscriptFormat {
        Txt = "txt",
        Srt = "srt",
        Vtt = "vtt",
    }
}

choice_enum! {
    /// UI colour theme (`ui.theme`).
    pub enum Theme {
        Default = "default",
        Mono = "mono",
    }
}

choice_enum! {
    /// Sample format of raw PCM on stdin (first part of `audio.stdin_format`).
    pub enum SampleFormat {
        S16le = "s16le",
        F32le = "f32le",
    }
}

choice_enum! {
    /// Synthetic test input (`audio.input = "test:..."`).
    pub enum TestSignal {
        Tone = "tone",
        Noise = "noise",
        Silence = "silence",
    }
}

/// `[provider]`: where tokens come from and what lifetimes they ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Redemption window asked for each token (1-600 s).
    pub expires_in_seconds: u32,
    /// Maximum session duration asked for each token (60-10800 s).
    pub max_session_duration_seconds: u32,
    /// Upper bound for one token fetch.
    pub timeout: Duration,
    pub api_key: ApiKeyConfig,
    pub remote: RemoteConfig,
    pub file: FileConfig,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::ApiKey,
            expires_in_seconds: 60,
            max_session_duration_seconds: 10_800,
            timeout: Duration::from_secs(10),
            api_key: ApiKeyConfig::default(),
            remote: RemoteConfig::default(),
            file: FileConfig::default(),
        }
    }
}

/// `[provider.api_key]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    /// Environment variable holding the API key.
    pub key_env: String,
    /// File holding the API key; preferred over `key_env` when set.
    pub key_file: Option<PathBuf>,
    pub region: Region,
    /// Full token endpoint; overrides `region`.
    pub token_url: Option<Url>,
}

impl Default for ApiKeyConfig {
    fn default() -> Self {
        Self {
            key_env: "ASSEMBLYAI_API_KEY".to_owned(),
            key_file: None,
            region: Region::Default,
            token_url: None,
        }
    }
}

/// `[provider.remote]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Token server endpoint; required when `provider.kind = "remote"`.
    pub url: Option<Url>,
    pub method: HttpMethod,
    /// Extra request headers (names as written).
    pub headers: BTreeMap<String, String>,
    pub bearer_env: Option<String>,
    pub bearer_file: Option<PathBuf>,
    pub pass_lifetimes: bool,
    /// Without `[streaming] url`, stream where the token server's `config.json` says.
    pub follow_server_streaming_url: bool,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            url: None,
            method: HttpMethod::default(),
            headers: BTreeMap::new(),
            bearer_env: None,
            bearer_file: None,
            pass_lifetimes: false,
            follow_server_streaming_url: true,
        }
    }
}

/// `[provider.file]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// Token file; required when `provider.kind = "file"`.
    pub path: Option<PathBuf>,
    pub wait: Duration,
    pub poll_interval: Duration,
    pub remove_after_use: bool,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            path: None,
            wait: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            remove_after_use: false,
        }
    }
}

/// `[streaming]`: where to stream and how the token travels, and the connection parameters of
/// the v3 streaming API — the one [`StreamingParams`] the URL is built from, so the
/// configuration and the wire share a single list of them. `None` there means "not sent; the
/// service default applies".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamingConfig {
    /// WebSocket endpoint overriding the region (`wss://`, or `ws://` on loopback).
    pub url: Option<Url>,
    pub token_in: TokenPlacement,
    pub params: StreamingParams,
}

/// `[session]`: rotation, timeouts, reconnect backoff and replay.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    pub rotation: bool,
    pub rotation_lead: Duration,
    pub begin_timeout: Duration,
    pub terminate_timeout: Duration,
    pub stall_timeout: Duration,
    /// A session up this long is healthy (resets the backoff; its loss reconnects at once).
    pub healthy_after: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub backoff_multiplier: f64,
    pub rate_limit_backoff: Duration,
    pub replay_buffer: Duration,
    pub replay_speed: f64,
    pub keepalive_interval: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            rotation: true,
            rotation_lead: Duration::from_secs(30),
            begin_timeout: Duration::from_secs(10),
            terminate_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(20),
            healthy_after: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            backoff_multiplier: 2.0,
            rate_limit_backoff: Duration::from_secs(60),
            replay_buffer: Duration::from_secs(30),
            replay_speed: 1.25,
            keepalive_interval: Duration::from_secs(5),
        }
    }
}

/// `[audio]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    pub input: InputSpec,
    pub device: Option<String>,
    pub chunk_ms: u32,
    /// `audio.loop` (a keyword in Rust).
    pub loop_input: bool,
    pub stdin_format: StdinFormat,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            input: InputSpec::default(),
            device: None,
            chunk_ms: 50,
            loop_input: false,
            stdin_format: StdinFormat::default(),
        }
    }
}

/// `audio.input`: where audio comes from.
///
/// The spellings (docs/audio.md): `mic` or `mic:DEVICE`, `file:PATH`, `stdin`, `test:SIGNAL`,
/// `monitor` or `monitor:SOURCE` (system audio through PulseAudio or PipeWire), and
/// `cmd:FORMAT:RATE:CHANNELS:COMMAND` (raw PCM from a command's standard output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    /// The microphone: the named device (matched as `--device` is), or `audio.device` / the
    /// system default when `None`.
    Mic(Option<String>),
    File(PathBuf),
    Stdin,
    Test(TestSignal),
    /// What the system plays: the default output's monitor when `None`, else the PulseAudio /
    /// PipeWire source of that name.
    Monitor(Option<String>),
    /// Raw PCM on the standard output of a command run without a shell.
    Command(CommandSpec),
}

impl Default for InputSpec {
    fn default() -> Self {
        Self::Mic(None)
    }
}

/// `cmd:FORMAT:RATE:CHANNELS:COMMAND`: the layout of the command's output and the command line,
/// split into words the way a POSIX shell would (quotes and backslashes), but never run by one:
/// no variables, globs, pipes or redirections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub format: StdinFormat,
    /// The command line as written (shown in messages, and what `Display` writes back).
    pub line: String,
    /// `line` split into words: the program, then its arguments. Never empty.
    pub argv: Vec<String>,
}

impl CommandSpec {
    /// Parse `FORMAT:RATE:CHANNELS:COMMAND` (what follows `cmd:`).
    fn parse(rest: &str) -> Result<Self, String> {
        const SHAPE: &str = "\"cmd:\" needs FORMAT:RATE:CHANNELS:COMMAND, e.g. \
                             \"cmd:s16le:16000:1:arecord -q -f S16_LE -r 16000 -c 1 -t raw\"";
        let mut parts = rest.splitn(4, ':');
        let (Some(sample), Some(rate), Some(channels), Some(line)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SHAPE.into());
        };
        let format: StdinFormat = format!("{sample}:{rate}:{channels}")
            .parse()
            .map_err(|e| format!("the format of \"cmd:{sample}:{rate}:{channels}:…\": {e}"))?;
        let argv = shell_words::split(line)
            .map_err(|e| format!("the command {line:?} cannot be split into words: {e}"))?;
        if argv.first().is_none_or(String::is_empty) {
            return Err(format!(
                "\"cmd:{format}:\" needs a command after the format, e.g. \
                 \"cmd:{format}:arecord -q -f S16_LE -r 16000 -c 1 -t raw\""
            ));
        }
        Ok(Self {
            format,
            line: line.to_owned(),
            argv,
        })
    }
}

impl InputSpec {
    /// A microphone: its turns are the echoes in meeting mode, and mute applies to it.
    pub fn is_mic(&self) -> bool {
        matches!(self, Self::Mic(_))
    }
}

impl FromStr for InputSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "must be \"mic\", \"mic:DEVICE\", \"stdin\", \"file:PATH\", \
                                \"test:tone\", \"test:noise\", \"test:silence\", \"monitor\", \
                                \"monitor:SOURCE\" or \"cmd:FORMAT:RATE:CHANNELS:COMMAND\"";
        match s {
            "mic" => Ok(Self::Mic(None)),
            "stdin" => Ok(Self::Stdin),
            "monitor" => Ok(Self::Monitor(None)),
            _ => match s.split_once(':') {
                Some(("mic", "")) => Err(
                    "\"mic:\" needs a device, e.g. \"mic:USB\" (see `aai-live devices`), or \
                     \"mic\" for the default"
                        .into(),
                ),
                Some(("mic", device)) => Ok(Self::Mic(Some(device.to_owned()))),
                Some(("file", "")) => Err("\"file:\" needs a path, e.g. \"file:talk.wav\"".into()),
                Some(("file", path)) => Ok(Self::File(PathBuf::from(path))),
                Some(("test", signal)) => {
                    signal.parse().map(Self::Test).map_err(|_| EXPECTED.into())
                }
                Some(("monitor", "")) => Err(
                    "\"monitor:\" needs a source name (see `aai-live devices`), or \"monitor\" \
                     for what the default output plays"
                        .into(),
                ),
                Some(("monitor", source)) => Ok(Self::Monitor(Some(source.to_owned()))),
                Some(("cmd", rest)) => CommandSpec::parse(rest).map(Self::Command),
                _ => Err(EXPECTED.into()),
            },
        }
    }
}

impl fmt::Display for InputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mic(None) => f.write_str("mic"),
            Self::Mic(Some(device)) => write!(f, "mic:{device}"),
            Self::Stdin => f.write_str("stdin"),
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Test(signal) => write!(f, "test:{signal}"),
            Self::Monitor(None) => f.write_str("monitor"),
            Self::Monitor(Some(source)) => write!(f, "monitor:{source}"),
            Self::Command(command) => write!(f, "cmd:{}:{}", command.format, command.line),
        }
    }
}

/// `audio.stdin_format`: layout of raw PCM read from stdin, `FORMAT:RATE:CHANNELS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StdinFormat {
    pub sample: SampleFormat,
    /// Hz, 8000-384000.
    pub rate: u32,
    /// 1-32.
    pub channels: u16,
}

impl Default for StdinFormat {
    /// `s16le:16000:1`.
    fn default() -> Self {
        Self {
            sample: SampleFormat::S16le,
            rate: 16_000,
            channels: 1,
        }
    }
}

impl FromStr for StdinFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let [sample, rate, channels] = parts[..] else {
            return Err(format!(
                "must be FORMAT:RATE:CHANNELS with FORMAT {}, e.g. \"s16le:16000:1\"",
                SampleFormat::allowed()
            ));
        };
        let sample = sample
            .parse::<SampleFormat>()
            .map_err(|e| format!("sample format {e}"))?;
        // The bounds of `audio::convert::NATIVE_RATES` / `NATIVE_CHANNELS`, what a WAV header may
        // declare (config cannot import audio; tests/audio.rs holds them equal).
        let rate = rate
            .parse::<u32>()
            .ok()
            .filter(|r| (8000..=384_000).contains(r))
            .ok_or("rate must be an integer between 8000 and 384000")?;
        let channels = channels
            .parse::<u16>()
            .ok()
            .filter(|c| (1..=32).contains(c))
            .ok_or("channels must be an integer between 1 and 32")?;
        Ok(Self {
            sample,
            rate,
            channels,
        })
    }
}

impl fmt::Display for StdinFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.sample, self.rate, self.channels)
    }
}

/// `[transcript]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptConfig {
    pub dir: Option<PathBuf>,
    /// Export formats, duplicates removed, in the order given.
    pub formats: Vec<TranscriptFormat>,
}

impl Default for TranscriptConfig {
    fn default() -> Self {
        Self {
            dir: None,
            formats: vec![TranscriptFormat::Txt],
        }
    }
}

impl TranscriptConfig {
    /// `dir`, or `$XDG_DATA_HOME/aai-live/transcripts` when unset.
    pub fn dir_or_default(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| paths::data_dir().join("transcripts"))
    }
}

/// `[ui]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiConfig {
    pub fps: u32,
    pub theme: Theme,
    pub ascii: bool,
    /// Open with the events pane shown.
    pub events: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            fps: 10,
            theme: Theme::Default,
            ascii: false,
            events: false,
        }
    }
}

/// `[keys]`: action name -> keys bound to it. Every action of `config/default.toml` is present,
/// and no key is bound to two actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysConfig {
    pub bindings: BTreeMap<String, Vec<KeySpec>>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        let key = |code| KeySpec {
            code,
            modifiers: Modifiers::default(),
        };
        let char = |c| key(KeyCode::Char(c));
        let ctrl = |c| KeySpec {
            code: KeyCode::Char(c),
            modifiers: Modifiers {
                ctrl: true,
                ..Modifiers::default()
            },
        };
        let bindings = [
            ("toggle_stream", vec![char(' '), char('s')]),
            ("pause", vec![char('p')]),
            ("force_endpoint", vec![char('f')]),
            ("reconnect", vec![char('r')]),
            ("mint_token", vec![char('t')]),
            ("export", vec![char('e')]),
            ("name_speaker", vec![char('n')]),
            ("live_settings", vec![char('u')]),
            ("clear", vec![char('c')]),
            ("toggle_events", vec![char('l')]),
            ("help", vec![char('?')]),
            ("scroll_up", vec![key(KeyCode::Up), char('k')]),
            ("scroll_down", vec![key(KeyCode::Down), char('j')]),
            ("page_up", vec![key(KeyCode::PageUp)]),
            ("page_down", vec![key(KeyCode::PageDown)]),
            ("scroll_top", vec![key(KeyCode::Home)]),
            ("scroll_bottom", vec![key(KeyCode::End)]),
            ("quit", vec![char('q'), ctrl('c')]),
        ];
        Self {
            bindings: bindings
                .into_iter()
                .map(|(action, keys)| (action.to_owned(), keys))
                .collect(),
        }
    }
}

impl KeysConfig {
    /// Keys bound to `action` (empty for an unknown or unbound action).
    pub fn keys_for(&self, action: &str) -> &[KeySpec] {
        self.bindings.get(action).map_or(&[], Vec::as_slice)
    }

    /// The action bound to `key`, if any.
    pub fn action_for(&self, key: &KeySpec) -> Option<&str> {
        self.bindings
            .iter()
            .find(|(_, keys)| keys.contains(key))
            .map(|(action, _)| action.as_str())
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Level or `target=level` directives, as `tracing_subscriber::EnvFilter` reads them.
    pub level: String,
    pub dir: Option<PathBuf>,
    pub max_files: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            dir: None,
            max_files: 7,
        }
    }
}

impl LogConfig {
    /// `dir`, or `$XDG_STATE_HOME/aai-live` when unset.
    pub fn dir_or_default(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(paths::state_dir)
    }
}

choice_enum! {
    /// How `aai-live serve`'s clients authenticate (`server.auth`).
    pub enum ServerAuth {
        /// Named bearer credentials from `server.credentials`.
        Bearer = "bearer",
        /// Nobody: everyone is "anonymous" (loopback addresses only).
        None = "none",
    }
}

choice_enum! {
    /// What `aai-live serve` does while its limits store cannot be reached
    /// (`server.limits_store_failure`).
    pub enum StoreFailure {
        /// Refuse token requests with 503 and Retry-After: no limit is ever exceeded.
        Closed = "closed",
        /// Decide in this process's memory: each replica enforces the limits on its own.
        Open = "open",
    }
}

/// `[server]`: `aai-live serve`'s own settings (docs/server.md). Named `Settings` because
/// `server::ServerConfig` is the running server's configuration, built from these plus the files
/// they name (credentials, store password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub listen: std::net::SocketAddr,
    pub auth: ServerAuth,
    /// Required by `serve` (not by the config) when `auth` is `bearer`.
    pub credentials: Option<PathBuf>,
    pub expires_in_seconds: u32,
    pub min_expires_in_seconds: u32,
    pub max_session_duration_seconds: u32,
    pub min_session_duration_seconds: u32,
    /// `None`: off.
    pub rate_limit: Option<RateSpec>,
    pub global_rate_limit: Option<RateSpec>,
    pub refusal_limit: Option<RateSpec>,
    /// Normalised as browsers send them (`https://app.example.com`).
    pub cors_origins: Vec<String>,
    /// Both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub request_timeout: Duration,
    pub max_in_flight: u32,
    pub max_connections: u32,
    pub public_metrics: bool,
    pub trusted_proxies: Vec<Cidr>,
    pub limits_store: LimitsStore,
    pub limits_store_failure: StoreFailure,
    pub limits_store_password_env: Option<String>,
    pub limits_store_password_file: Option<PathBuf>,
    pub limits_store_ca: Option<PathBuf>,
    pub limits_store_prefix: String,
    pub limits_store_timeout: Duration,
    /// Serve the browser page at `/`.
    pub web: bool,
    /// The origin browsers see behind a proxy, normalised as browsers send it.
    pub public_origin: Option<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let rate = |count, secs| {
            Some(RateSpec {
                count: std::num::NonZeroU32::new(count).unwrap_or(std::num::NonZeroU32::MIN),
                per: Duration::from_secs(secs),
            })
        };
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8787)),
            auth: ServerAuth::Bearer,
            credentials: None,
            expires_in_seconds: 60,
            min_expires_in_seconds: 5,
            max_session_duration_seconds: 10_800,
            min_session_duration_seconds: 60,
            rate_limit: rate(30, 60),
            global_rate_limit: rate(300, 60),
            refusal_limit: rate(10, 60),
            cors_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
            request_timeout: Duration::from_secs(30),
            max_in_flight: 64,
            max_connections: 512,
            public_metrics: false,
            trusted_proxies: Vec::new(),
            limits_store: LimitsStore::Memory,
            limits_store_failure: StoreFailure::Closed,
            limits_store_password_env: None,
            limits_store_password_file: None,
            limits_store_ca: None,
            limits_store_prefix: "aai-live".to_owned(),
            limits_store_timeout: Duration::from_millis(250),
            web: false,
            public_origin: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_spellings_match_serde() {
        for kind in ProviderKind::ALL {
            let json = serde_json::to_string(kind).expect("test setup");
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(
                kind.as_str().parse::<ProviderKind>().expect("test setup"),
                *kind
            );
        }
        assert_eq!(HttpMethod::allowed(), "\"GET\" or \"POST\"");
        assert_eq!(
            "get".parse::<HttpMethod>().expect_err("should fail"),
            "must be one of \"GET\" or \"POST\""
        );
    }

    /// The config spells the protocol enums as their serde (wire) names, and as their `Display`
    /// where they have one; the allowed lists keep the order of `docs/configuration.md`.
    #[test]
    fn protocol_choices_are_spelt_as_on_the_wire() {
        fn same_as_serde<T: Choice + Serialize + PartialEq + fmt::Debug>() {
            for value in T::ALL {
                let json = serde_json::to_string(value).expect("test setup");
                assert_eq!(json, format!("{:?}", value.as_str()), "{value:?}");
                assert_eq!(T::parse_choice(value.as_str()), Ok(*value));
            }
        }
        same_as_serde::<Region>();
        same_as_serde::<Encoding>();
        same_as_serde::<TokenPlacement>();
        for region in Region::ALL {
            assert_eq!(region.to_string(), region.as_str());
            assert_eq!(Region::parse(region.as_str()), Some(*region));
        }
        for encoding in Encoding::ALL {
            assert_eq!(encoding.to_string(), encoding.as_str());
            assert_eq!(Encoding::parse(encoding.as_str()), Some(*encoding));
        }
        assert_eq!(Region::allowed(), "\"default\", \"us\" or \"eu\"");
        assert_eq!(Encoding::allowed(), "\"pcm_s16le\" or \"pcm_mulaw\"");
        assert_eq!(TokenPlacement::allowed(), "\"header\" or \"query\"");
        assert_eq!(
            TokenPlacement::parse_choice("Header"),
            Err("must be one of \"header\" or \"query\"".to_owned())
        );
    }

    /// A label is what comes before the first `=` only when no `:` comes before it: a path
    /// holding `=` stays a path.
    #[test]
    fn input_arguments_take_a_label_only_before_any_colon() {
        let label = |s: &str| s.parse::<Label>().expect("label");
        for (arg, expected) in [
            ("you=mic", (Some(label("you")), InputSpec::Mic(None))),
            (
                "them=monitor:sink.monitor",
                (
                    Some(label("them")),
                    InputSpec::Monitor(Some("sink.monitor".into())),
                ),
            ),
            (
                "file:/x/a=b.wav",
                (None, InputSpec::File(PathBuf::from("/x/a=b.wav"))),
            ),
            (
                "a=file:/x/b=c.wav",
                (
                    Some(label("a")),
                    InputSpec::File(PathBuf::from("/x/b=c.wav")),
                ),
            ),
            ("mic:hw=1", (None, InputSpec::Mic(Some("hw=1".into())))),
            // Compared without case: kept in lower case.
            ("You=mic", (Some(label("you")), InputSpec::Mic(None))),
        ] {
            assert_eq!(parse_input_arg(arg), Ok(expected), "{arg}");
        }
        // Not a label (empty, too long, a dot): the whole argument is read as a spec.
        for bad in ["=mic", &format!("{}=mic", "a".repeat(33)), "a.b=mic"] {
            assert!(parse_input_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn input_spec() {
        assert_eq!(
            "mic".parse::<InputSpec>().expect("test setup"),
            InputSpec::Mic(None)
        );
        assert_eq!(
            "stdin".parse::<InputSpec>().expect("test setup"),
            InputSpec::Stdin
        );
        assert_eq!(
            "file:a:b.wav".parse::<InputSpec>().expect("test setup"),
            InputSpec::File(PathBuf::from("a:b.wav"))
        );
        assert_eq!(
            "test:noise".parse::<InputSpec>().expect("test setup"),
            InputSpec::Test(TestSignal::Noise)
        );
        for bad in ["", "file:", "test:", "test:sine", "microphone", "FILE:x"] {
            assert!(bad.parse::<InputSpec>().is_err(), "{bad:?}");
        }
        for s in [
            "mic",
            "mic:alsa:pulse",
            "stdin",
            "file:x.wav",
            "test:tone",
            "monitor",
            "monitor:alsa_output.pci.analog-stereo.monitor",
            "cmd:s16le:16000:1:arecord -q -f S16_LE -r 16000 -c 1 -t raw",
            "cmd:f32le:48000:2:sox 'my talk.flac' -t raw -e floating-point -b 32 -",
        ] {
            let spec = s.parse::<InputSpec>().expect("test setup");
            assert_eq!(spec.to_string(), s);
            assert_eq!(spec.to_string().parse::<InputSpec>(), Ok(spec));
        }
    }

    #[test]
    fn new_input_kinds() {
        assert_eq!(
            "mic:alsa:pulse".parse::<InputSpec>(),
            Ok(InputSpec::Mic(Some("alsa:pulse".into())))
        );
        assert_eq!(
            "mic:USB".parse::<InputSpec>(),
            Ok(InputSpec::Mic(Some("USB".into())))
        );
        assert_eq!("monitor".parse::<InputSpec>(), Ok(InputSpec::Monitor(None)));
        assert_eq!(
            "monitor:nullsink.monitor".parse::<InputSpec>(),
            Ok(InputSpec::Monitor(Some("nullsink.monitor".into())))
        );
        let spec: InputSpec = "cmd:f32le:48000:2:sox \"my talk.flac\" -t raw -e float -b 32 - "
            .parse()
            .expect("test setup");
        let InputSpec::Command(command) = spec else {
            panic!("a command: {spec:?}");
        };
        assert_eq!(
            command.format,
            StdinFormat {
                sample: SampleFormat::F32le,
                rate: 48_000,
                channels: 2
            }
        );
        // Split as a shell would, but a shell's syntax means nothing: `|`, `$X`, `*` are words.
        assert_eq!(
            command.argv,
            [
                "sox",
                "my talk.flac",
                "-t",
                "raw",
                "-e",
                "float",
                "-b",
                "32",
                "-"
            ]
        );
        let InputSpec::Command(command) = "cmd:s16le:16000:1:cat a | tee $HOME/*"
            .parse()
            .expect("test setup")
        else {
            panic!("a command");
        };
        assert_eq!(command.argv, ["cat", "a", "|", "tee", "$HOME/*"]);
    }

    #[test]
    fn bad_input_specs_say_what_is_wrong() {
        let error = |s: &str| s.parse::<InputSpec>().expect_err(s);
        assert!(error("mic:").contains("\"mic:\" needs a device"));
        assert!(error("monitor:").contains("\"monitor:\" needs a source name"));
        for no_format in ["cmd:", "cmd:arecord", "cmd:s16le:16000"] {
            let e = error(no_format);
            assert!(
                e.contains("needs FORMAT:RATE:CHANNELS:COMMAND"),
                "{no_format}: {e}"
            );
        }
        let e = error("cmd:s24le:16000:1:arecord");
        assert!(
            e.contains("the format of \"cmd:s24le:16000:1:…\"") && e.contains("\"s16le\""),
            "{e}"
        );
        let e = error("cmd:s16le:96:1:arecord");
        assert!(
            e.contains("rate must be an integer between 8000 and 384000"),
            "{e}"
        );
        for empty in [
            "cmd:s16le:16000:1:",
            "cmd:s16le:16000:1:   ",
            "cmd:s16le:16000:1:''",
        ] {
            let e = error(empty);
            assert!(
                e.contains("needs a command after the format"),
                "{empty}: {e}"
            );
        }
        let e = error("cmd:s16le:16000:1:sox 'unclosed");
        assert!(e.contains("cannot be split into words"), "{e}");
    }

    proptest::proptest! {
        /// `audio.input` comes from files, the environment and the command line: any text
        /// parses or is refused with a reason, never a panic, and what parses writes back to
        /// text that parses to the same spec.
        #[test]
        fn input_spec_parsing_never_panics(text in "(?s).{0,200}", prefix in proptest::sample::select(vec!["", "mic:", "monitor:", "cmd:", "cmd:s16le:16000:1:", "file:", "test:"])) {
            let text = format!("{prefix}{text}");
            match text.parse::<InputSpec>() {
                Ok(spec) => proptest::prop_assert_eq!(spec.to_string().parse::<InputSpec>(), Ok(spec)),
                Err(reason) => proptest::prop_assert!(!reason.is_empty()),
            }
        }
    }

    #[test]
    fn stdin_format() {
        let f: StdinFormat = "f32le:48000:2".parse().expect("test setup");
        assert_eq!(
            f,
            StdinFormat {
                sample: SampleFormat::F32le,
                rate: 48000,
                channels: 2
            }
        );
        assert_eq!(f.to_string(), "f32le:48000:2");
        for bad in [
            "s16le",
            "s16le:16000",
            "s8:16000:1",
            "s16le:7999:1",
            "s16le:384001:1",
            "s16le:16000:0",
            "s16le:16000:33",
            "s16le:16k:1",
            "s16le:16000:1:1",
        ] {
            assert!(bad.parse::<StdinFormat>().is_err(), "{bad:?}");
        }
    }
}
