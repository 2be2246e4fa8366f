//! `aai-live serve`'s command line: [`ServeArgs`] and the adapter that runs the token server.
//! Turns flags and the `[provider.api_key]` settings into a [`ServerConfig`] and an upstream
//! provider, starts the server, announces it on stdout, and shuts it down gracefully on SIGINT
//! or SIGTERM.
//!
//! The API key is read the way the `api-key` provider reads it (`provider.api_key.key_env` or
//! `key_file`, overridable with `--key-env` / `--key-file`); it is never a flag's value.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::auth::{Auth, Credentials, MIN_CREDENTIAL_LEN, hash_credential};
use super::limit::LimitSetting;
use super::policy::LifetimePolicy;
use super::{DEFAULT_LISTEN, RunningServer, ServerConfig, ServerError};
use crate::config::Config;
use crate::listener::TlsArgs;
use crate::provider::{self, TokenProvider};

/// Options of `aai-live serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Port 0 picks a free port; the first stdout line tells which.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Credentials file: one client per line, "name:sha256hex" (docs/server.md).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["no_auth", "hash_credential"])]
    pub credentials: Option<PathBuf>,

    /// Serve anyone who can connect, as the client "anonymous" (loopback addresses only).
    #[arg(long, conflicts_with = "credentials")]
    pub no_auth: bool,

    /// Read a credential from stdin, print its SHA-256 for the credentials file, and exit.
    #[arg(long, exclusive = true)]
    pub hash_credential: bool,

    /// Redemption window given to each token, in seconds: the default, and the longest a caller
    /// may get (1-600).
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(1..=600))]
    pub expires_in: u32,

    /// Shortest window a caller may ask for, in seconds.
    #[arg(long, default_value_t = 5, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(1..=600))]
    pub min_expires_in: u32,

    /// Session limit of each token, in seconds: the default, and the longest a caller may get
    /// (60-10800).
    #[arg(long, default_value_t = 10_800, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(60..=10_800))]
    pub max_session_duration: u32,

    /// Shortest session limit a caller may ask for, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(60..=10_800))]
    pub min_session_duration: u32,

    /// Token requests per client, e.g. "30/min", "5/s", or "off".
    #[arg(long, default_value = super::DEFAULT_CLIENT_LIMIT, value_name = "RATE")]
    pub rate_limit: LimitSetting,

    /// Token requests of all clients together, or "off".
    #[arg(long, default_value = super::DEFAULT_GLOBAL_LIMIT, value_name = "RATE")]
    pub global_rate_limit: LimitSetting,

    /// Refused requests (bad credentials, foreign origins) per client address, or "off".
    #[arg(long, default_value = super::DEFAULT_REFUSAL_LIMIT, value_name = "RATE")]
    pub refusal_limit: LimitSetting,

    /// Browser origin allowed to call /token (repeatable), e.g. https://app.example.com.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,

    /// Upstream token endpoint or base URL (e.g. the emulator's http://127.0.0.1:8080);
    /// overrides provider.api_key.token_url and region.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,

    /// AssemblyAI region to mint in: "default", "us" or "eu" (provider.api_key.region).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// Environment variable holding the API key (provider.api_key.key_env).
    #[arg(long, value_name = "NAME")]
    pub key_env: Option<String>,

    /// File holding the API key (provider.api_key.key_file); used instead of the variable.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Timeout of one upstream attempt (provider.timeout), e.g. "5s".
    #[arg(long, value_name = "DURATION")]
    pub upstream_timeout: Option<String>,

    /// Upper bound for answering one token request, upstream retry included.
    #[arg(long, default_value = "30s", value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Upstream requests under way at once; more are answered 503.
    #[arg(long, default_value_t = 64, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: u32,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Serve /metrics to every address, not only loopback.
    #[arg(long)]
    pub public_metrics: bool,
}

impl ServeArgs {
    /// The configuration overrides these flags stand for (`[provider.api_key]`, `provider.timeout`).
    pub fn config_overrides(&self) -> Vec<(String, String)> {
        let mut o = Vec::new();
        if let Some(url) = &self.upstream {
            o.push((
                "provider.api_key.token_url".to_owned(),
                upstream_token_url(url),
            ));
        }
        let mut set = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                o.push((key.to_owned(), value));
            }
        };
        set("provider.api_key.region", self.region.clone());
        set("provider.api_key.key_env", self.key_env.clone());
        set(
            "provider.api_key.key_file",
            self.key_file.as_ref().map(|p| p.display().to_string()),
        );
        set("provider.timeout", self.upstream_timeout.clone());
        o
    }

    /// The server configuration (reads the credentials file).
    pub fn server_config(&self) -> Result<ServerConfig, ServerError> {
        let auth = match (&self.credentials, self.no_auth) {
            (Some(path), _) => Auth::Bearer(Credentials::load(path)?),
            // Checked again by `start`; here it fails before the key is looked for.
            (None, true) if !self.listen.ip().is_loopback() => {
                return Err(ServerError::InvalidConfig(format!(
                    "--no-auth is allowed only on a loopback address, not {}: give clients \
                     credentials (--credentials FILE) or listen on 127.0.0.1",
                    self.listen
                )));
            }
            (None, true) => Auth::None,
            (None, false) => {
                return Err(ServerError::InvalidConfig(
                    "choose how clients authenticate: --credentials FILE, or --no-auth on a \
                     loopback address"
                        .into(),
                ));
            }
        };
        let mut config = ServerConfig::new(self.listen, auth);
        config.policy = LifetimePolicy {
            expires_in: self.expires_in,
            min_expires_in: self.min_expires_in,
            max_session: self.max_session_duration,
            min_session: self.min_session_duration,
        };
        config.client_limit = self.rate_limit.0;
        config.global_limit = self.global_rate_limit.0;
        config.refusal_limit = self.refusal_limit.0;
        config.cors_origins.clone_from(&self.cors_origins);
        config.request_timeout = self.request_timeout;
        config.shutdown_grace = self.request_timeout;
        config.max_in_flight = self.max_in_flight as usize;
        config.public_metrics = self.public_metrics;
        config.tls = self.tls.files();
        Ok(config)
    }
}

/// `--upstream`: a base URL (`http://127.0.0.1:8080`) gets the token path; a full endpoint is
/// kept as written.
pub fn upstream_token_url(text: &str) -> String {
    match url::Url::parse(text.trim()) {
        Ok(mut url) if url.path() == "/" || url.path().is_empty() => {
            url.set_path("/v3/token");
            url.to_string()
        }
        _ => text.trim().to_owned(),
    }
}

/// `aai-live serve --hash-credential`: read one line, print its hash. Returns the exit code.
pub fn hash_credential_command(
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mut line = String::new();
    if let Err(e) = input.read_line(&mut line) {
        let _ = writeln!(err, "error: cannot read the credential from stdin: {e}");
        return 1;
    }
    let credential = line.trim();
    if credential.is_empty() {
        let _ = writeln!(
            err,
            "error: no credential on stdin; e.g. openssl rand -base64 32 | tee alice.credential | \
             aai-live serve --hash-credential"
        );
        return 2;
    }
    if credential.len() < MIN_CREDENTIAL_LEN {
        let _ = writeln!(
            err,
            "warning: a credential shorter than {MIN_CREDENTIAL_LEN} characters can be guessed \
             from its hash; use a random one (openssl rand -base64 32)"
        );
    }
    if writeln!(out, "{}", hash_credential(credential)).is_err() {
        return 1;
    }
    0
}

/// Build the upstream: the `api-key` provider from `[provider.api_key]` whatever
/// `provider.kind` says, since the server is where the key lives.
pub fn upstream_provider(config: &Config) -> Result<Arc<dyn TokenProvider>, ServerError> {
    let provider =
        provider::api_key::ApiKeyProvider::from_config(&config.provider, &provider::process_env)?;
    Ok(Arc::new(provider))
}

/// Warnings worth printing before the server starts.
pub fn warnings(config: &ServerConfig) -> Vec<String> {
    let mut out = Vec::new();
    if config.tls.is_none() && !config.listen.ip().is_loopback() {
        out.push(format!(
            "serving plain HTTP on {}: credentials and tokens cross the network in clear; use \
             --tls-cert/--tls-key, or a TLS-terminating reverse proxy on the same host",
            config.listen
        ));
    }
    if config.client_limit.is_none() && config.global_limit.is_none() {
        out.push("rate limiting is off: any client may mint as fast as the upstream allows".into());
    }
    out
}

/// Run `aai-live serve` until SIGINT or SIGTERM. The first stdout line is a contract:
/// `aai-live serve listening on http(s)://HOST:PORT`.
pub async fn run(
    args: &ServeArgs,
    config: &Config,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), ServerError> {
    let server_config = args.server_config()?;
    let upstream = upstream_provider(config)?;
    for warning in warnings(&server_config) {
        let _ = writeln!(err, "warning: {warning}");
    }
    let running = super::start(server_config, upstream).await?;
    // Install the signal handlers *before* announcing readiness, so a supervisor that signals
    // right after reading the line gets a graceful stop.
    watch_signals(&running)?;
    let io = |source| ServerError::Io {
        what: "cannot write to stdout".into(),
        source,
    };
    writeln!(out, "aai-live serve listening on {}", running.base_url()).map_err(io)?;
    out.flush().map_err(io)?;
    running.wait().await;
    Ok(())
}

fn watch_signals(running: &RunningServer) -> Result<(), ServerError> {
    crate::signals::cancel_on_signals(running.cancel_token()).map_err(|source| ServerError::Io {
        what: "cannot handle SIGINT/SIGTERM".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map(|c| c.serve)
    }

    #[test]
    fn flags_become_a_config_and_overrides() {
        let args = parse(&[
            "--no-auth",
            "--listen",
            "127.0.0.1:0",
            "--expires-in",
            "30",
            "--rate-limit",
            "off",
            "--global-rate-limit",
            "5/s",
            "--upstream",
            "http://127.0.0.1:8080",
            "--key-env",
            "MY_KEY",
            "--upstream-timeout",
            "3s",
        ])
        .expect("parses");
        let config = args.server_config().expect("config");
        assert!(matches!(config.auth, Auth::None));
        assert_eq!(config.policy.expires_in, 30);
        assert_eq!(config.client_limit, None);
        assert_eq!(
            config.global_limit.map(|s| s.to_string()),
            Some("5/s".into())
        );
        assert_eq!(
            args.config_overrides(),
            [
                (
                    "provider.api_key.token_url".into(),
                    "http://127.0.0.1:8080/v3/token".into()
                ),
                ("provider.api_key.key_env".into(), "MY_KEY".into()),
                ("provider.timeout".into(), "3s".into()),
            ]
        );
        assert!(warnings(&config).is_empty());
    }

    #[test]
    fn authentication_must_be_chosen() {
        assert!(parse(&[]).is_err(), "neither --credentials nor --no-auth");
        assert!(parse(&["--no-auth", "--credentials", "x"]).is_err());
        assert!(parse(&["--hash-credential"]).is_ok());
        assert!(parse(&["--hash-credential", "--no-auth"]).is_err());
        assert!(parse(&["--no-auth", "--rate-limit", "lots"]).is_err());
        assert!(parse(&["--no-auth", "--expires-in", "601"]).is_err());
    }

    #[test]
    fn upstream_urls() {
        assert_eq!(
            upstream_token_url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/v3/token"
        );
        assert_eq!(
            upstream_token_url("https://streaming.eu.assemblyai.com/v3/token"),
            "https://streaming.eu.assemblyai.com/v3/token"
        );
        assert_eq!(upstream_token_url("not a url"), "not a url");
    }

    #[test]
    fn hashing_a_credential() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = hash_credential_command(&mut "hello\n".as_bytes(), &mut out, &mut err);
        assert_eq!(code, 0);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\n"
        );
        assert!(String::from_utf8_lossy(&err).contains("shorter than 16"));
        let mut err = Vec::new();
        assert_eq!(
            hash_credential_command(&mut "\n".as_bytes(), &mut Vec::new(), &mut err),
            2
        );
    }

    #[test]
    fn plain_http_off_loopback_is_warned_about() {
        let mut config = ServerConfig::new("0.0.0.0:8787".parse().expect("addr"), Auth::None);
        config.client_limit = None;
        config.global_limit = None;
        let w = warnings(&config).join("\n");
        assert!(
            w.contains("plain HTTP") && w.contains("rate limiting is off"),
            "{w}"
        );
    }
}
