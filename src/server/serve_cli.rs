//! `aai-live serve`'s command line: [`ServeArgs`] and the adapter that runs the token server.
//!
//! The server's settings are the `[server]` section of the configuration. Each flag *given*
//! becomes a config override of its key (`--rate-limit 5/s` is `server.rate_limit = "5/s"`), so
//! flags win over the file and the environment, a flag left out leaves the file's value, and a
//! bad value is reported like a bad key. The upstream's flags override `[provider.api_key]` and
//! `provider.timeout` the same way. [`server_config`] then reads the files the settings name
//! (the credentials, the limits store's password) and builds the [`ServerConfig`]; [`run`] starts
//! the server, announces it on stdout, and shuts it down gracefully on SIGINT or SIGTERM.
//!
//! The API key is read the way the `api-key` provider reads it (`provider.api_key.key_env` or
//! `key_file`, overridable with `--key-env` / `--key-file`); it is never a flag's value.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use super::auth::{Auth, Credentials, MIN_CREDENTIAL_LEN, hash_credential};
use super::limit::LimitSetting;
use super::{RunningServer, ServerConfig, ServerError};
use crate::config::{Choice, Cidr, Config, LimitsStore, ServerAuth, ServerSettings, StoreFailure};
use crate::listener::{TlsArgs, fit_to_open_files, open_file_limit};
use crate::provider::{self, TokenProvider};

/// Options of `aai-live serve`. Each flag given overrides its `[server]` key (the table is in
/// docs/server.md, "All flags"); without the flag the configuration's value applies, so the
/// flags have no clap defaults (config/default.toml holds them). The help of the flags that
/// existed before the `[server]` section is unchanged but for the "[default: ...]" dropped.
#[derive(Debug, Clone, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "command-line switches, each independent of the others"
)]
pub struct ServeArgs {
    /// Address to listen on. Port 0 picks a free port; the first stdout line tells which.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Credentials file: one client per line, "name:sha256hex" (docs/server.md).
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,

    /// Serve anyone who can connect, as the client "anonymous" (loopback addresses only).
    #[arg(long, conflicts_with = "credentials")]
    pub no_auth: bool,

    /// Read a credential from stdin, print its SHA-256 for the credentials file, and exit.
    #[arg(long, exclusive = true)]
    pub hash_credential: bool,

    /// Redemption window given to each token ("60", "60s", "1m"): the default, and the longest a
    /// caller may get (1-600 s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::expires_in)]
    pub expires_in: Option<u32>,

    /// Shortest window a caller may ask for (1-600 s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::expires_in)]
    pub min_expires_in: Option<u32>,

    /// Maximum session duration of each token ("3600", "1h"): the default, and the longest a
    /// caller may get (60-10800 s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::session_duration)]
    pub max_session_duration: Option<u32>,

    /// Shortest maximum session duration a caller may ask for (60-10800 s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::session_duration)]
    pub min_session_duration: Option<u32>,

    /// Token requests per client, e.g. "30/min", "5/s", or "off".
    #[arg(long, value_name = "RATE")]
    pub rate_limit: Option<LimitSetting>,

    /// Token requests of all clients together, or "off".
    #[arg(long, value_name = "RATE")]
    pub global_rate_limit: Option<LimitSetting>,

    /// Refused requests (bad credentials, foreign origins) per client address, or "off".
    #[arg(long, value_name = "RATE")]
    pub refusal_limit: Option<LimitSetting>,

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
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::positive)]
    pub request_timeout: Option<Duration>,

    /// Upstream requests under way at once; more are answered 503.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: Option<u32>,

    /// Connections open at once; more are closed as they arrive (server.max_connections). Keep
    /// it below the open-file limit (ulimit -n).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Serve /metrics to every address, not only loopback.
    #[arg(long)]
    pub public_metrics: bool,

    /// A load balancer or proxy whose X-Forwarded-For names the client: an address or CIDR
    /// (repeatable; server.trusted_proxies).
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<Cidr>,

    /// Where rate limits are kept: "memory", or "redis://HOST:PORT/DB" / "rediss://..." shared
    /// by every replica (server.limits_store; the password comes from
    /// server.limits_store_password_env or _file, never the URL).
    #[arg(long, value_name = "STORE")]
    pub limits_store: Option<String>,

    /// While the limits store cannot be reached: "closed" (answer 503) or "open" (limits in
    /// this replica's memory) (server.limits_store_failure).
    #[arg(long, value_name = "POLICY")]
    pub limits_store_failure: Option<StoreFailure>,

    /// Serve the browser page at / (server.web; docs/browser.md).
    #[arg(long)]
    pub web: bool,

    /// The origin browsers see behind a proxy, e.g. https://tokens.example.com: the page's own
    /// requests from it are allowed (server.public_origin).
    #[arg(long, value_name = "ORIGIN")]
    pub public_origin: Option<String>,
}

impl ServeArgs {
    /// The configuration overrides the flags given stand for: `[server]` keys, and
    /// `[provider.api_key]` / `provider.timeout` for the upstream.
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
        let text = |v: Option<&dyn std::fmt::Display>| v.map(ToString::to_string);
        let list = |items: &[String]| (!items.is_empty()).then(|| items.join(","));
        set("provider.api_key.region", self.region.clone());
        set("provider.api_key.key_env", self.key_env.clone());
        set(
            "provider.api_key.key_file",
            self.key_file.as_ref().map(|p| p.display().to_string()),
        );
        set("provider.timeout", self.upstream_timeout.clone());
        set("server.listen", text(self.listen.as_ref().map(|v| v as _)));
        set(
            "server.credentials",
            self.credentials.as_ref().map(|p| p.display().to_string()),
        );
        let auth = match (&self.credentials, self.no_auth) {
            (_, true) => Some(ServerAuth::None),
            (Some(_), false) => Some(ServerAuth::Bearer),
            (None, false) => None,
        };
        set("server.auth", auth.map(|a| a.as_str().to_owned()));
        for (key, value) in [
            ("server.expires_in_seconds", self.expires_in),
            ("server.min_expires_in_seconds", self.min_expires_in),
            (
                "server.max_session_duration_seconds",
                self.max_session_duration,
            ),
            (
                "server.min_session_duration_seconds",
                self.min_session_duration,
            ),
            ("server.max_in_flight", self.max_in_flight),
            ("server.max_connections", self.max_connections),
        ] {
            set(key, value.map(|n| n.to_string()));
        }
        for (key, value) in [
            ("server.rate_limit", self.rate_limit),
            ("server.global_rate_limit", self.global_rate_limit),
            ("server.refusal_limit", self.refusal_limit),
        ] {
            set(key, value.map(|r| r.to_string()));
        }
        set("server.cors_origins", list(&self.cors_origins));
        set(
            "server.request_timeout",
            self.request_timeout
                .map(|d| humantime::format_duration(d).to_string()),
        );
        set(
            "server.tls_cert",
            self.tls.tls_cert.as_ref().map(|p| p.display().to_string()),
        );
        set(
            "server.tls_key",
            self.tls.tls_key.as_ref().map(|p| p.display().to_string()),
        );
        set(
            "server.public_metrics",
            self.public_metrics.then(|| "true".to_owned()),
        );
        let proxies: Vec<String> = self
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        set("server.trusted_proxies", list(&proxies));
        set("server.limits_store", self.limits_store.clone());
        set(
            "server.limits_store_failure",
            self.limits_store_failure.map(|p| p.as_str().to_owned()),
        );
        set("server.web", self.web.then(|| "true".to_owned()));
        set("server.public_origin", self.public_origin.clone());
        o
    }
}

/// The server configuration `[server]` describes: reads the credentials file and the limits
/// store's password.
pub fn server_config(config: &Config) -> Result<ServerConfig, ServerError> {
    let settings = &config.server;
    let auth = match (settings.auth, &settings.credentials) {
        (ServerAuth::None, _) => Auth::None,
        (ServerAuth::Bearer, Some(path)) => Auth::Bearer(Credentials::load(path)?),
        (ServerAuth::Bearer, None) => {
            return Err(ServerError::InvalidConfig(
                "choose how clients authenticate: --credentials FILE (`server.credentials`), or \
                 --no-auth (`server.auth` = \"none\") on a loopback address"
                    .into(),
            ));
        }
    };
    let mut server = ServerConfig::from_settings(settings, auth);
    server.limits.password = store_password(settings, &provider::process_env)?;
    server.browser = super::BrowserSettings::from_config(config);
    Ok(server)
}

/// The limits store's password: `server.limits_store_password_file` (first line), else the
/// variable `server.limits_store_password_env` names; none for the memory store.
fn store_password(
    settings: &ServerSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>, ServerError> {
    if settings.limits_store == LimitsStore::Memory {
        return Ok(None);
    }
    if let Some(path) = &settings.limits_store_password_file {
        // The file's permissions were warned about when the configuration was loaded.
        let (password, _) = crate::secret::read_secret_file(path).map_err(|e| {
            ServerError::InvalidConfig(format!("`server.limits_store_password_file`: {e}"))
        })?;
        return Ok(Some(password));
    }
    let Some(name) = &settings.limits_store_password_env else {
        return Ok(None);
    };
    match env(name) {
        Some(value) if !value.is_empty() => Ok(Some(SecretString::from(value))),
        _ => Err(ServerError::InvalidConfig(format!(
            "the limits store's password variable {name} (`server.limits_store_password_env`) \
             is not set"
        ))),
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

/// Warnings worth printing before the server starts. The connection cap is fitted to the
/// open-file limit first (leaving descriptors for the upstream, the limits store and the log),
/// and the lowering is the first warning: said once.
pub fn warnings(config: &mut ServerConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(cap) = config.max_connections {
        let (fitted, lowered) =
            fit_to_open_files("server.max_connections", cap, open_file_limit(), 1);
        config.max_connections = Some(fitted);
        out.extend(lowered);
    }
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

/// Run `aai-live serve` until SIGINT or SIGTERM, with `config` (the flags already applied as
/// overrides). The first stdout line is a contract: `aai-live serve listening on
/// http(s)://HOST:PORT`.
pub async fn run(
    config: &Config,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), ServerError> {
    let mut server_config = server_config(config)?;
    let upstream = upstream_provider(config)?;
    for warning in warnings(&mut server_config) {
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
    use secrecy::ExposeSecret;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map(|c| c.serve)
    }

    /// The configuration with `file` (a `[server]` table's text) under the flags' overrides.
    fn load(file: &str, args: &ServeArgs) -> Result<Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, file).expect("write");
        crate::config::load(&crate::config::LoadOptions {
            file: Some(path),
            overrides: args.config_overrides(),
            ..crate::config::LoadOptions::defaults_only()
        })
        .map(|loaded| loaded.config)
    }

    #[test]
    fn flags_become_overrides_of_server_keys() {
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
            "--request-timeout",
            "1m 5s",
            "--cors-origin",
            "https://a.example",
            "--cors-origin",
            "https://b.example",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--max-connections",
            "100",
            "--limits-store",
            "redis://127.0.0.1:6379/0",
            "--limits-store-failure",
            "open",
            "--web",
            "--public-origin",
            "https://Tokens.example",
        ])
        .expect("parses");
        let pairs: Vec<(&str, &str)> = vec![
            (
                "provider.api_key.token_url",
                "http://127.0.0.1:8080/v3/token",
            ),
            ("provider.api_key.key_env", "MY_KEY"),
            ("provider.timeout", "3s"),
            ("server.listen", "127.0.0.1:0"),
            ("server.auth", "none"),
            ("server.expires_in_seconds", "30"),
            ("server.max_connections", "100"),
            ("server.rate_limit", "off"),
            ("server.global_rate_limit", "5/s"),
            ("server.cors_origins", "https://a.example,https://b.example"),
            ("server.request_timeout", "1m 5s"),
            ("server.trusted_proxies", "10.0.0.0/8"),
            ("server.limits_store", "redis://127.0.0.1:6379/0"),
            ("server.limits_store_failure", "open"),
            ("server.web", "true"),
            ("server.public_origin", "https://Tokens.example"),
        ];
        let want: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(args.config_overrides(), want);
        let config = load("", &args).expect("valid");
        let server = server_config(&config).expect("server config");
        assert!(matches!(server.auth, Auth::None));
        assert_eq!(server.policy.expires_in, 30);
        assert_eq!(server.client_limit, None);
        assert_eq!(
            server.global_limit.map(|s| s.to_string()),
            Some("5/s".into())
        );
        assert_eq!(server.request_timeout, Duration::from_secs(65));
        assert_eq!(server.max_connections, Some(100));
        assert_eq!(server.limits.failure, StoreFailure::Open);
        assert_eq!(
            server.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert!(server.web);
        assert_eq!(
            server.public_origin.as_deref(),
            Some("https://tokens.example")
        );
        // The browser client streams beside the upstream (the emulator here).
        assert_eq!(
            server.browser.streaming_url.as_str(),
            "ws://127.0.0.1:8080/v3/ws"
        );
        assert!(server.browser.emulator_hints);
    }

    #[test]
    fn flags_not_given_leave_the_files_values() {
        let file = "[server]\nauth = \"none\"\nrate_limit = \"7/min\"\nexpires_in_seconds = 20\n\
                    max_connections = 64\ncors_origins = [\"https://app.example\"]\n";
        let server = |args: &[&str]| {
            let args = parse(args).expect("parses");
            server_config(&load(file, &args).expect("valid")).expect("server config")
        };
        let from_file = server(&[]);
        assert!(matches!(from_file.auth, Auth::None));
        assert_eq!(
            from_file.client_limit.map(|s| s.to_string()),
            Some("7/min".into())
        );
        assert_eq!(from_file.policy.expires_in, 20);
        assert_eq!(from_file.max_connections, Some(64));
        assert_eq!(from_file.cors_origins, ["https://app.example"]);
        // Untouched keys keep the defaults of config/default.toml.
        assert_eq!(
            from_file.global_limit.map(|s| s.to_string()),
            Some("300/min".into())
        );
        assert_eq!(from_file.request_timeout, Duration::from_secs(30));

        let flagged = server(&["--rate-limit", "9/s", "--expires-in", "40"]);
        assert_eq!(
            flagged.client_limit.map(|s| s.to_string()),
            Some("9/s".into())
        );
        assert_eq!(flagged.policy.expires_in, 40);
        assert_eq!(flagged.max_connections, Some(64), "not given: the file's");
    }

    #[test]
    fn authentication_must_be_chosen() {
        assert!(parse(&["--no-auth", "--credentials", "x"]).is_err());
        assert!(parse(&["--hash-credential"]).is_ok());
        assert!(parse(&["--hash-credential", "--no-auth"]).is_err());
        assert!(parse(&["--no-auth", "--rate-limit", "lots"]).is_err());
        assert!(parse(&["--no-auth", "--expires-in", "601"]).is_err());
        // Neither flag nor key: a clear error before any key is looked for.
        let args = parse(&[]).expect("parses");
        let e = server_config(&load("", &args).expect("valid"))
            .expect_err("no auth chosen")
            .to_string();
        assert!(
            e.contains("--credentials FILE") && e.contains("--no-auth"),
            "{e}"
        );
        // No authentication off loopback: the configuration's error, naming both keys.
        let args = parse(&["--no-auth", "--listen", "0.0.0.0:0"]).expect("parses");
        let e = load("", &args).expect_err("off loopback").to_string();
        assert!(
            e.contains("`server.auth` = \"none\"") && e.contains("`server.listen` = 0.0.0.0:0"),
            "{e}"
        );
    }

    #[test]
    fn the_store_password_comes_from_a_variable_or_a_file() {
        let mut settings = ServerSettings::default();
        let env = |name: &str| (name == "REDIS_PW").then(|| "from-env".to_owned());
        settings.limits_store_password_env = Some("REDIS_PW".into());
        assert!(
            store_password(&settings, &env).expect("memory").is_none(),
            "the memory store needs none"
        );
        settings.limits_store = "redis://127.0.0.1/0".parse().expect("url");
        let got = store_password(&settings, &env).expect("from the variable");
        assert_eq!(
            got.as_ref().map(ExposeSecret::expose_secret),
            Some("from-env")
        );
        settings.limits_store_password_env = Some("UNSET_PW".into());
        let e = store_password(&settings, &env)
            .expect_err("unset")
            .to_string();
        assert!(e.contains("UNSET_PW"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").expect("write");
        settings.limits_store_password_file = Some(file);
        let got = store_password(&settings, &env).expect("from the file");
        assert_eq!(
            got.as_ref().map(ExposeSecret::expose_secret),
            Some("from-file")
        );
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
        let w = warnings(&mut config).join("\n");
        assert!(
            w.contains("plain HTTP") && w.contains("rate limiting is off"),
            "{w}"
        );
    }
}
