//! Command-line interface (clap derive). Parsing only: each subcommand is carried out by a
//! library module through [`crate::subcommands`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Live speech-to-text on AssemblyAI Universal Streaming v3, with one-time tokens that are
/// re-minted and sessions that are rotated before they expire.
#[derive(Debug, Parser)]
#[command(name = "aai-live", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every subcommand.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalOpts {
    /// Configuration file (default: $XDG_CONFIG_HOME/aai-live/config.toml when present).
    #[arg(long, global = true, value_name = "FILE", env = "AAI_LIVE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log level or filter directives, e.g. "debug" or "aai_live=trace" (overrides [log] level).
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log to this file instead of the rolling files in [log] dir.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and validate the configuration.
    Config(ConfigArgs),
    /// Run a local emulator of the AssemblyAI v3 streaming API (no speech recognition: words come
    /// from a script or a fixed word list, timed by the voice activity in the audio received).
    Emulate(Box<EmulateArgs>),
    /// Stream audio with tokens re-minted and sessions rotated and reconnected as needed: a live
    /// dashboard on a terminal, NDJSON events on stdout with --headless (docs/events.md).
    Run(RunArgs),
    /// The offline demo: the dashboard streaming a bundled recording through an in-process
    /// emulator (no key, no network), with a session rotation within the first minute.
    Demo(DemoArgs),
    /// Drive many concurrent real-time sessions from a WAV file against the emulator
    /// (--emulator URL) or the configured endpoint: sessions begun and failed, time to Begin,
    /// partial and final latency percentiles, messages/s, this client's CPU (docs/load.md).
    Load(LoadArgs),
    /// List audio input devices (the default marked) with their sample rates and channel counts.
    Devices,
    /// Mint one temporary token with the configured provider and print it as JSON (or write it
    /// atomically with --out, for the file provider).
    Token(TokenArgs),
    /// Run a token server: mint one-time tokens with the API key held here for authenticated
    /// clients (the remote provider, browser pages), rate limited (docs/server.md).
    Serve(Box<crate::server::serve_cli::ServeArgs>),
    /// Check the set-up step by step, as a run would take it (configuration, key, token,
    /// streaming endpoint, session, clock, input, directories); with --server, a token server
    /// from the outside. Exit 0 when nothing failed, 1 when a step failed, 2 for an invalid
    /// configuration.
    Doctor(DoctorArgs),
    /// Print the troubleshooting section for a close code, an HTTP status or a topic (e.g.
    /// 3009, 1008, 401, proxy, clock-skew); docs/troubleshooting.md is built in.
    Explain {
        /// A close code, HTTP status or topic; an unknown one lists them all.
        #[arg(value_name = "CODE|TOPIC")]
        topic: String,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell to generate completions for.
        shell: Shell,
    },
}

/// Options of `aai-live run`. Input flags override `[audio]`.
#[derive(Debug, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches"
)]
pub struct RunArgs {
    /// Write NDJSON events to stdout instead of showing the dashboard (docs/events.md); also
    /// chosen when stdout is not a terminal.
    #[arg(long)]
    pub headless: bool,

    /// Audio input: "mic[:DEVICE]", "monitor[:SOURCE]" (system audio), "file:PATH", "stdin",
    /// "cmd:FORMAT:COMMAND", "test:tone|noise|silence"; repeat as LABEL=INPUT for several
    /// labelled streams (meeting mode: --input you=mic --input them=monitor).
    #[arg(long, value_name = "INPUT")]
    pub input: Vec<String>,

    /// Microphone device as listed by `aai-live devices`.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,

    /// Loop a file input.
    #[arg(long = "loop")]
    pub loop_input: bool,

    /// Raw PCM format on stdin: "s16le|f32le:RATE:CHANNELS".
    #[arg(long, value_name = "FORMAT")]
    pub stdin_format: Option<String>,

    /// Stop after this long (e.g. "90", "90s", "3m"; a bare number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::positive)]
    pub duration: Option<std::time::Duration>,

    /// Keep each input's captured audio as WAV beside the transcript, with a .json sidecar of
    /// what never reached the service (archive.enabled).
    #[arg(long)]
    pub archive: bool,

    /// No rotation before expiry: expiry is handled by re-mint and reconnect.
    #[arg(long)]
    pub no_rotation: bool,

    /// Serve the run's events to local consumers on ADDR (e.g. 127.0.0.1:8789): SSE at
    /// /events, a WebSocket at /ws, a captions page for OBS at /overlay, the transcript so far
    /// (feed.listen; docs/feed.md).
    #[arg(long, value_name = "ADDR")]
    pub feed: Option<String>,

    /// Write the finals to FILE as captions (.srt or .vtt), a cue as each turn ends.
    #[arg(long, value_name = "FILE")]
    pub captions: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub emulator: EmulatorArg,

    /// Send file audio as fast as possible (only against the emulator with --no-pace-check).
    #[arg(long)]
    pub unpaced: bool,

    /// Tell the emulator where each session starts in the stream (its words and scripts then
    /// follow stream time); on with --emulator, ignored by the service.
    #[arg(long)]
    pub emulator_hints: bool,

    /// Write every frame sent and received, with its time, to FILE (JSON lines; audio as byte
    /// counts, no token, key or credential: safe to attach to a bug report). `aai-live emulate
    /// --replay FILE` serves it back.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// Options of `aai-live load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Concurrent sessions to open.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub sessions: usize,

    /// The audio every session streams: a WAV file (looped for as long as a session lasts).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,

    /// Start the sessions evenly over this long (e.g. "30s"; "0" starts them all at once).
    #[arg(long, default_value = "0", value_name = "DURATION",
          value_parser = any_duration)]
    pub ramp: std::time::Duration,

    /// How long each session streams before it sends Terminate (e.g. "60s", "5m").
    #[arg(long, default_value = "30s", value_name = "DURATION",
          value_parser = crate::duration::positive)]
    pub duration: std::time::Duration,

    /// New sessions in any minute at most: the account's new-session rate (100 a minute at the
    /// start of a paid plan, 5 on the free tier). Raise it against the emulator.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_sessions_per_minute: u32,

    /// Print one JSON object with the results instead of the text summary.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub emulator: EmulatorArg,
}

/// `--emulator URL`: use the emulator at URL (as `aai-live emulate` prints it).
#[derive(Debug, Clone, Default, Args)]
pub struct EmulatorArg {
    /// Use the emulator at URL (as `aai-live emulate` prints it, e.g. http://127.0.0.1:8080):
    /// tokens from its /v3/token with the key in provider.api_key.key_env, streaming to its
    /// /v3/ws.
    #[arg(long = "emulator", value_name = "URL", env = "AAI_LIVE_EMULATOR")]
    pub url: Option<url::Url>,
}

/// Options of `aai-live demo`: those of `run`. `--input` replaces the bundled recording (e.g.
/// `--input mic` to talk to the emulator, which then answers with its fixed word list).
#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

/// Options of `aai-live doctor`.
#[derive(Debug, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches"
)]
pub struct DoctorArgs {
    /// Go on after a failed step (the steps that depend on it are reported as skipped).
    #[arg(long)]
    pub keep_going: bool,

    /// One JSON object per step and line: step, status (pass|warn|fail|skip), detail, fix,
    /// section.
    #[arg(long)]
    pub json: bool,

    /// ASCII marks only (also chosen for a dumb terminal or a locale that is not UTF-8).
    #[arg(long)]
    pub ascii: bool,

    /// With the file provider: take the file's token and open the session with it (a file
    /// token is one-time, so by default it is only inspected).
    #[arg(long)]
    pub redeem: bool,

    /// Audio input to check instead of audio.input: "mic[:DEVICE]", "monitor[:SOURCE]",
    /// "file:PATH", "stdin", "cmd:FORMAT:COMMAND", "test:tone|noise|silence".
    #[arg(long, value_name = "INPUT")]
    pub input: Option<String>,

    /// Microphone device as listed by `aai-live devices`.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,

    /// Check this token server from the outside instead (e.g. https://tokens.example/token).
    #[arg(long, value_name = "URL")]
    pub server: Option<url::Url>,

    /// With --server: the environment variable holding the bearer credential to present.
    #[arg(
        long,
        value_name = "NAME",
        requires = "server",
        conflicts_with = "credential_file"
    )]
    pub credential_env: Option<String>,

    /// With --server: a file holding the bearer credential to present.
    #[arg(long, value_name = "FILE", requires = "server")]
    pub credential_file: Option<PathBuf>,

    /// With --server: the browser origin whose CORS answer to check (e.g. https://app.example).
    #[arg(long, value_name = "ORIGIN", requires = "server")]
    pub origin: Option<String>,

    #[command(flatten)]
    pub emulator: EmulatorArg,
}

/// Options of `aai-live token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Write the JSON to FILE atomically (mode 0600) instead of printing it; the file provider
    /// reads such a file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Redemption window, 1-600 s: "60", "60s" or "1m" (default: provider.expires_in_seconds).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::expires_in)]
    pub expires_in: Option<u32>,

    /// Maximum session duration, 60-10800 s: "3600", "1h" (default:
    /// provider.max_session_duration_seconds).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::session_duration)]
    pub max_session_duration: Option<u32>,

    #[command(flatten)]
    pub emulator: EmulatorArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ConfigArgs {
    /// Print the commented default configuration (the reference for every key).
    #[arg(long)]
    pub print_default: bool,

    /// Validate the effective configuration (defaults, file, environment, flags) and print the
    /// resolved settings with secrets redacted. Exit 0 if valid, 2 if not.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    // `None`: no --check; `Some(None)`: --check alone; `Some(Some(FILE))`: --check FILE.
    pub check: Option<Option<PathBuf>>,
}

/// Options of `aai-live emulate`.
#[derive(Debug, Args)]
// The emulator's certificate also serves wss://; the rest of `TlsArgs` is as `serve` has it.
#[command(mut_arg("tls_cert", |arg| arg.help("TLS certificate (PEM) for https:// and wss://")))]
pub struct EmulateArgs {
    /// Address to listen on. Port 0 picks a free port; the first stdout line tells which.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// API key the emulator accepts (repeatable). Also from AAI_LIVE_EMULATOR_API_KEYS
    /// (comma-separated).
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,

    #[command(flatten)]
    pub tls: crate::listener::TlsArgs,

    /// Word script (JSON) giving the words of a known recording and their times.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,

    /// Behaviour generation to emulate.
    #[arg(long, value_enum, default_value = "current")]
    pub profile: crate::emulator::Profile,

    /// New sessions allowed per minute and API key (the free tier is 5). Unlimited when unset.
    #[arg(long, value_name = "N")]
    pub sessions_per_minute: Option<u32>,

    /// Close code for the new-sessions limit: 3009 (current) or 1008 (legacy servers).
    #[arg(long, default_value_t = 3009, value_parser = parse_one_of::<3009, 1008>)]
    pub rate_limit_close_code: u16,

    /// Reject bad credentials with HTTP 401 at the upgrade instead of Error + close 1008.
    #[arg(long)]
    pub reject_at_upgrade: bool,

    /// Close code for an expired or already-used temporary token: 1008 (default) or 3008.
    #[arg(long, default_value_t = 1008, value_parser = parse_one_of::<1008, 3008>)]
    pub expired_token_close_code: u16,

    /// Audio may arrive at most this many times faster than real time (measured from the first
    /// audio message) before 3007 "Audio Transmission Rate Exceeded". The real tolerance is not
    /// documented; see docs/emulator.md.
    #[arg(long, default_value_t = 1.5, value_name = "FACTOR")]
    pub max_rate_factor: f64,

    /// Burst allowance on top of the rate factor, in milliseconds of audio ("2000" or "2s").
    #[arg(long, default_value_t = 2000, value_name = "MS", value_parser = crate::duration::millis)]
    pub rate_burst_ms: u64,

    /// Switch the pacing check off (lets tests stream files faster than real time).
    #[arg(long)]
    pub no_pace_check: bool,

    /// Cap every session's duration, e.g. "20" (seconds) or "2m" (default: the token's
    /// max_session_duration_seconds, or 10800 with an API key). Makes expiry (3008) quick to
    /// test. Also spelled --session-limit.
    #[arg(long, visible_alias = "session-limit", value_name = "DURATION",
          value_parser = crate::duration::positive)]
    pub max_session_duration: Option<std::time::Duration>,

    /// Report `Begin.expires_at` shifted by this much (e.g. "30s", or "-30s" for earlier), as a
    /// server whose clock is off would; sessions still end on time. For clock-skew tests.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = crate::duration::signed_millis)]
    pub clock_skew: Option<i64>,

    /// Inactivity close code (the service's is undocumented; AssemblyAI notes say 3006). One a
    /// server may send: 1000–1003, 1007–1014 or 3000–4999.
    #[arg(long, default_value_t = 3006, value_name = "CODE",
          value_parser = crate::emulator::faults::parse_close_code)]
    pub inactivity_close_code: u16,

    /// Delay between a word's audio arriving and the emulator reporting it, in milliseconds
    /// ("200" or "0.2s").
    #[arg(long, default_value_t = 200, value_name = "MS", value_parser = crate::duration::millis)]
    pub processing_delay_ms: u64,

    /// Write each session's received audio to DIR/<session id>.pcm, and its record (the
    /// parameters, counters and how both sides closed) to DIR/<session id>.json when its
    /// connection has ended.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,

    /// Fault to inject (repeatable), e.g. "close:3005@5s", "drop@2s", "stall@3s",
    /// "stop-reading@5s", "close-before-begin", "no-termination", "token:500",
    /// "token-delay:2s"; append "xN" to apply to the next N sessions (default 1). See
    /// docs/emulator.md.
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault)]
    pub faults: Vec<crate::emulator::FaultRule>,

    /// Finished sessions kept for GET /emulator/sessions (the open ones are always listed; older
    /// finished ones are forgotten).
    #[arg(long, default_value_t = crate::emulator::DEFAULT_KEEP_SESSIONS, value_name = "N")]
    pub keep_sessions: usize,

    /// Minted tokens remembered at most: beyond it the oldest are forgotten (counted in
    /// GET /emulator/stats, and logged), and a forgotten unredeemed token is refused like an
    /// unknown one.
    #[arg(long, default_value_t = crate::emulator::DEFAULT_MAX_TOKENS, value_name = "N",
          value_parser = at_least_one)]
    pub max_tokens: usize,

    /// Open connections at most (plain or TLS, WebSocket sessions included); beyond it new
    /// connections are closed at once.
    #[arg(long, default_value_t = crate::emulator::DEFAULT_MAX_CONNECTIONS, value_name = "N",
          value_parser = at_least_one)]
    pub max_connections: usize,

    /// Time a connection has to send a request's headers (e.g. "10s"); idle connections that
    /// never send one are closed after it.
    #[arg(long, default_value = "10s", value_name = "DURATION",
          value_parser = crate::duration::positive)]
    pub header_timeout: std::time::Duration,

    /// Answer the control API (/emulator/*) for peers that are not on loopback too (it still
    /// refuses requests with an Origin header, and Host names other than localhost or an IP
    /// address).
    #[arg(long)]
    pub control_from_anywhere: bool,

    /// Serve the sessions of a trace (`run --trace FILE`) instead of recognising: each new
    /// session gets the next recorded one, its server messages at their recorded times once the
    /// client's audio has got as far, and the recorded close.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
}

/// A `--fault` spec, read by the emulator's own parser (the error names the part and value).
fn parse_fault(spec: &str) -> Result<crate::emulator::FaultRule, String> {
    spec.parse()
        .map_err(|e: crate::emulator::faults::FaultParseError| e.to_string())
}

/// A duration that may be zero (bare number in seconds).
fn any_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a number of at least 1")),
    }
}

/// Accept one of two close codes.
fn parse_one_of<const A: u16, const B: u16>(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(code) if code == A || code == B => Ok(code),
        _ => Err(format!("expected {A} or {B}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(args).expect("parses").command
    }

    #[test]
    fn clock_skew_takes_signed_durations() {
        let Command::Emulate(args) = parse(&["aai-live", "emulate", "--clock-skew", "-45s"]) else {
            panic!("emulate");
        };
        assert_eq!(args.clock_skew, Some(-45_000));
    }

    /// Every duration flag takes units and bare seconds alike (bare milliseconds for `…-ms`).
    #[test]
    fn duration_flags_take_units_and_bare_numbers() {
        for spelling in [["60", "3600"], ["60s", "1h"], ["1m", "60m"]] {
            let Command::Token(args) = parse(&[
                "aai-live",
                "token",
                "--expires-in",
                spelling[0],
                "--max-session-duration",
                spelling[1],
            ]) else {
                panic!("token");
            };
            assert_eq!(args.expires_in, Some(60), "{spelling:?}");
            assert_eq!(args.max_session_duration, Some(3600), "{spelling:?}");
        }
        for spelling in ["90", "90s", "1m30s"] {
            let Command::Run(args) = parse(&["aai-live", "run", "--duration", spelling]) else {
                panic!("run");
            };
            assert_eq!(args.duration, Some(Duration::from_secs(90)), "{spelling}");
        }
        // The session cap has one name; the old spelling still works unchanged.
        for flag in ["--max-session-duration", "--session-limit"] {
            let Command::Emulate(args) = parse(&[
                "aai-live",
                "emulate",
                flag,
                "20",
                "--processing-delay-ms",
                "0.3s",
            ]) else {
                panic!("emulate");
            };
            assert_eq!(args.max_session_duration, Some(Duration::from_secs(20)));
            assert_eq!(args.processing_delay_ms, 300);
        }
        let err = Cli::try_parse_from(["aai-live", "token", "--expires-in", "11m"])
            .expect_err("out of range");
        assert!(
            err.to_string()
                .contains("must be between 1 and 600 seconds"),
            "{err}"
        );
    }
}
