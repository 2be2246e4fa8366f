//! Configuration: loads the layered settings, rejects anything unknown or out of range, and hands
//! the rest of the program a typed, validated [`Config`].
//!
//! Layers, lowest first (see `docs/configuration.md`):
//! 1. [`DEFAULT_TOML`], the commented `config/default.toml` embedded in the binary;
//! 2. the user file: `--config FILE`, else `$XDG_CONFIG_HOME/aai-live/config.toml` if it exists;
//! 3. environment variables `AAI_LIVE__SECTION__KEY`;
//! 4. command-line overrides.
//!
//! The flow follows trippy: each layer is read into a TOML table and checked against the schema
//! derived from `default.toml` (`schema`), the `config` crate merges the layers (`load`), serde
//! fills a `RawConfig` with `deny_unknown_fields` (`raw`), and `validate` turns it into [`Config`].
//! Every error names the key, the value, the rule and where the value came from, because a config
//! error is read by a person who has to find the line to fix.
//!
//! The submodules import each other in one direction only ("A ← B": B imports A):
//! `types` ← `raw` ← `validate` ← `load`, with `provenance` (which layer set a key) under both
//! `validate` and `load`; `keys`, `paths`, `schema` and `server` (the `[server]` section's value
//! types: rates, CIDRs, origins, the limits store's URL) are leaves. `types` reads nothing of the
//! loader: `Config::default()` is plain values, checked against `default.toml` by a test.
//!
//! Of the crate's other modules `config` uses only `files` (the config file's size cap) and
//! `protocol` (which itself uses only `secret`):
//! the region, the audio encoding and the token placement are `protocol::{Region, Encoding,
//! TokenPlacement}` themselves, so the session and the providers use the configured values
//! without mapping them.
//!
//! Secrets are never read here: the config only says where they live (an environment variable or
//! a file), and [`secret_file_warning`] checks such a file's permissions without opening it.

mod keys;
mod load;
pub mod paths;
mod provenance;
mod raw;
mod schema;
mod server;
mod types;
mod validate;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The URLs of settings (`streaming.url`, `provider.remote.url`, ...) are shown through the
/// protocol's one redaction: passwords and query values not known to be harmless hidden.
pub use crate::protocol::params::{redact_url, redact_url_text};
pub use keys::{KEY_SYNTAX, KeyCode, KeySpec, Modifiers};
pub use load::{EnvSource, LoadOptions, Loaded, load, secret_file_warning};
pub use server::{
    Cidr, LimitSetting, LimitsStore, RateSpec, RateSpecError, RedisAddress, parse_origin,
};
pub use types::{
    ApiKeyConfig, ArchiveConfig, AudioConfig, Choice, CommandSpec, Config, FeedConfig, FileConfig,
    HttpMethod, InputSpec, KeysConfig, Label, LabelledInput, LogConfig, ProviderConfig,
    ProviderKind, RemoteConfig, SampleFormat, ServerAuth, ServerSettings, SessionConfig, Source,
    SpeakersConfig, StdinFormat, StoreFailure, StreamingConfig, TestSignal, Theme,
    TranscriptConfig, TranscriptFormat, UiConfig, check_inputs, parse_input_arg,
};

/// The built-in defaults and the reference for every key: the lowest layer, printed by
/// `aai-live config --print-default`.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Why the configuration could not be loaded. `Display` is the complete message for the user.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} does not exist", .path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read config file {}: {cause}", .path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: TOML syntax error at line {line}, column {column}: {message}", .path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// Unknown keys, wrong types or invalid values; every one found, in a stable order.
    #[error("{}", ProblemList(.0))]
    Invalid(Vec<Problem>),
    /// A defect of the program (e.g. `default.toml` and `RawConfig` disagree), not of the input.
    #[error("internal error in the configuration code: {0}")]
    Internal(String),
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key at fault, e.g. `streaming.sample_rate`.
    pub key: String,
    /// The full message, naming the key, the value, the rule and the origin.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems in the configuration:", many.len())?;
                many.iter()
                    .try_for_each(|problem| write!(f, "\n  - {problem}"))
            }
        }
    }
}

/// The effective settings as TOML, in the layout of `default.toml`. Values of headers whose name
/// looks secret (authorization, cookie, *token*, *key*, *secret*) and of every extra query
/// parameter not known to be harmless (`protocol::params::PUBLIC_PARAMS`, the rule every printed
/// connect URL follows) are replaced by `"[REDACTED]"`, and the URLs (`streaming.url`,
/// `provider.remote.url`, `provider.api_key.token_url`) are shown through [`redact_url`], so the
/// output can be pasted into a bug report.
pub fn render_resolved(config: &Config) -> String {
    let mut raw = raw::RawConfig::from(config);
    for (name, value) in &mut raw.provider.remote.headers {
        if load::looks_secret(name) {
            "[REDACTED]".clone_into(value);
        }
    }
    for (name, value) in &mut raw.streaming.extra {
        if !crate::protocol::params::is_public_param(name) {
            "[REDACTED]".clone_into(value);
        }
    }
    for url in [
        &mut raw.provider.api_key.token_url,
        &mut raw.provider.remote.url,
        &mut raw.streaming.url,
    ]
    .into_iter()
    .flatten()
    {
        *url = redact_url_text(url);
    }
    toml::to_string(&raw).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
}

/// `aai-live config --check [FILE]`: validates FILE (else the global `--config`, else the default
/// lookup) with the environment and `overrides` on top.
///
/// On success writes, to `out`, the layers and warnings as TOML comments followed by
/// [`render_resolved`], so the output is itself a usable config file, and returns 0. On a config
/// error writes `error: <message>` to `err` and returns 2; returns 1 if `out` cannot be written.
pub fn check_command(
    file: Option<&Path>,
    global_config: Option<&Path>,
    overrides: Vec<(String, String)>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    // clap gives `--check` without FILE as an empty path (its `default_missing_value`).
    let given = |path: Option<&Path>| {
        path.filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
    };
    let opts = LoadOptions {
        file: given(file).or_else(|| given(global_config)),
        use_default_file: true,
        env: EnvSource::Process,
        overrides,
    };
    match load(&opts) {
        Ok(loaded) => match write_check_report(&loaded, out) {
            Ok(()) => 0,
            Err(_) => 1,
        },
        Err(e) => {
            // Nothing sensible is left to do if stderr itself fails.
            let _ = writeln!(err, "error: {e}");
            2
        }
    }
}

fn write_check_report(loaded: &Loaded, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "# The configuration is valid. Layers, lowest first:")?;
    for (n, layer) in loaded.layers.iter().enumerate() {
        writeln!(out, "#   {}. {layer}", n + 1)?;
    }
    for warning in &loaded.warnings {
        writeln!(out, "# warning: {warning}")?;
    }
    writeln!(out, "# Effective settings (secrets redacted):\n")?;
    out.write_all(render_resolved(&loaded.config).as_bytes())
}
