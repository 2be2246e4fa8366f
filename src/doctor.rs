//! `aai-live doctor`: every step a real run takes, with the effective configuration, one line
//! each — pass, warning or failure — and for a failure its cause, its fix and the section of
//! docs/troubleshooting.md (`aai-live explain ...`).
//!
//! It goes through the very code a run uses: the provider `run` builds (its HTTP client), the
//! supervisor's `Connector` for the WebSocket (`session::connection`, proxy included), the audio
//! input's `open`. So it cannot pass where a run fails. It mints exactly one token and opens
//! exactly one session. The steps, in order: `config` → `secret` → `token-endpoint` → `token` →
//! `streaming-endpoint` → `begin` → `clock` → `terminate` → `input` → `files`. It stops at the
//! first failure unless `keep_going`; then the steps that depend on a failed one are skipped.
//! `doctor --server` ([`server`]) checks a token server from the outside.

pub mod server;

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;
use url::Url;

use crate::audio::{self, AudioError, AudioOptions};
use crate::config::{Config, ProviderKind};
use crate::diagnosis::Diagnosis;
use crate::protocol::expiry::{self, Finding};
use crate::protocol::{ClientMessage, ServerMessage, TokenPlacement, build_ws_url};
use crate::provider::{self, TokenProvider, TokenRequest};
use crate::session::connection::{self, ConnEvent, Outgoing};
use crate::session::proxy::{self, ProxyEnv};

/// How long the input has to deliver its first frames.
pub const INPUT_WAIT: Duration = Duration::from_secs(2);
/// The silence sent before `Terminate`.
const SILENCE: Duration = Duration::from_secs(1);

/// What a step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

/// One step's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub status: Status,
    /// What was found (never a secret).
    pub detail: String,
    /// The cause in plain words, for a warning or a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    /// What to do, for a warning or a failure.
    pub fix: Option<&'static str>,
    /// The section of docs/troubleshooting.md (`aai-live explain SECTION`).
    pub section: Option<&'static str>,
}

impl Step {
    pub fn pass(step: &'static str, detail: impl Into<String>) -> Self {
        Self {
            step,
            status: Status::Pass,
            detail: detail.into(),
            cause: None,
            fix: None,
            section: None,
        }
    }

    pub fn skip(step: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status: Status::Skip,
            ..Self::pass(step, detail)
        }
    }

    pub fn warn(step: &'static str, detail: impl Into<String>, diagnosis: Diagnosis) -> Self {
        Self {
            status: Status::Warn,
            ..Self::fail(step, detail, diagnosis)
        }
    }

    pub fn fail(step: &'static str, detail: impl Into<String>, diagnosis: Diagnosis) -> Self {
        Self {
            step,
            status: Status::Fail,
            detail: crate::untrusted::for_terminal(&detail.into()).into_owned(),
            cause: Some(diagnosis.title()),
            fix: Some(diagnosis.fix()),
            section: Some(diagnosis.section()),
        }
    }
}

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per step with ✔/⚠/✘ (or ASCII), cause, fix and section beneath a problem.
    Text { ascii: bool },
    /// One JSON object per step and line: `step`, `status`, `detail`, `fix`, `section`.
    Json,
}

/// Whether to draw ASCII only: asked for, a dumb terminal, or a locale that is not UTF-8.
pub fn wants_ascii(asked: bool, env: &dyn Fn(&str) -> Option<String>) -> bool {
    asked || env("TERM").is_some_and(|t| t == "dumb") || !crate::app::state::locale_is_utf8(env)
}

/// One step as the text report shows it.
pub fn render_text(step: &Step, ascii: bool) -> String {
    let mark = match (step.status, ascii) {
        (Status::Pass, false) => "✔",
        (Status::Warn, false) => "⚠",
        (Status::Fail, false) => "✘",
        (Status::Skip, false) => "–",
        (Status::Pass, true) => "[ok]  ",
        (Status::Warn, true) => "[warn]",
        (Status::Fail, true) => "[FAIL]",
        (Status::Skip, true) => "[skip]",
    };
    let mut text = format!("{mark} {:<18} {}\n", step.step, step.detail);
    if let Some(cause) = step.cause {
        let _ = writeln!(text, "    cause: {cause}");
    }
    if let Some(fix) = step.fix {
        let fix = fix.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = writeln!(text, "    fix:   {fix}");
    }
    if let Some(section) = step.section {
        let _ = writeln!(text, "    more:  aai-live explain {section}");
    }
    if ascii {
        text = text
            .replace('→', "->")
            .replace('±', "+/-")
            .replace(['—', '–'], "-")
            .chars()
            .map(|c| if c.is_ascii() { c } else { '?' })
            .collect();
    }
    text
}

/// One step as a JSON line.
pub fn render_json(step: &Step) -> String {
    let mut value = serde_json::to_value(step).unwrap_or_default();
    if let Some(fix) = step.fix {
        value["fix"] = fix.split_whitespace().collect::<Vec<_>>().join(" ").into();
    }
    format!("{value}\n")
}

/// What the command line asks of the doctor.
#[derive(Debug, Clone)]
pub struct Options {
    pub keep_going: bool,
    /// Use a file token (one-time) to open the session.
    pub redeem: bool,
    pub format: Format,
    /// The configuration's layers, lowest first, and its warnings (from the loader).
    pub layers: Vec<String>,
    pub warnings: Vec<String>,
    pub input_wait: Duration,
}

/// The steps as they were written, and the exit status they make.
#[derive(Debug, Default)]
pub struct Report {
    pub steps: Vec<Step>,
}

impl Report {
    /// 0 when nothing failed (warnings allowed), 1 when a step failed.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.steps.iter().any(|s| s.status == Status::Fail))
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.step == name)
    }
}

/// Writes each step as soon as it is known and remembers it.
struct Recorder<'a> {
    out: &'a mut (dyn Write + Send),
    format: Format,
    keep_going: bool,
    report: Report,
}

impl Recorder<'_> {
    fn record(&mut self, step: Step) {
        let text = match self.format {
            Format::Text { ascii } => render_text(&step, ascii),
            Format::Json => render_json(&step),
        };
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
        self.report.steps.push(step);
    }

    /// A step failed and the doctor stops there.
    fn stopped(&self) -> bool {
        !self.keep_going && self.report.exit_code() != 0
    }
}

/// Run every step with `config`; `env` is where the provider reads its credentials (the process
/// environment for `aai-live doctor`).
pub async fn run(
    config: &Config,
    options: &Options,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut (dyn Write + Send),
) -> Report {
    let mut r = Recorder {
        out,
        format: options.format,
        keep_going: options.keep_going,
        report: Report::default(),
    };
    // The loader's warnings about secret files belong to the `secret` step; the rest here.
    let (secret_warnings, other): (Vec<String>, Vec<String>) = options
        .warnings
        .iter()
        .cloned()
        .partition(|w| w.contains("readable by others"));
    let layers = format!("valid; layers: {}", options.layers.join(" → "));
    r.record(if other.is_empty() {
        Step::pass("config", layers)
    } else {
        Step::warn(
            "config",
            format!("{layers}; {}", other.join("; ")),
            Diagnosis::ConfigInvalid,
        )
    });
    network_steps(config, &secret_warnings, options.redeem, env, &mut r).await;
    if !r.stopped() {
        let step = input_step(config, options.input_wait).await;
        r.record(step);
    }
    if !r.stopped() {
        r.record(files_step(config));
    }
    r.report
}

/// `secret` → `token-endpoint` → `token` → `streaming-endpoint` → `begin` → `clock` →
/// `terminate`: each needs the one before.
#[expect(
    clippy::too_many_lines,
    reason = "the chain in order, each step a few lines; splitting hides the order"
)]
async fn network_steps(
    config: &Config,
    secret_warnings: &[String],
    redeem: bool,
    env: &dyn Fn(&str) -> Option<String>,
    r: &mut Recorder<'_>,
) {
    const CHAIN: [&str; 7] = [
        "secret",
        "token-endpoint",
        "token",
        "streaming-endpoint",
        "begin",
        "clock",
        "terminate",
    ];
    let skip_from = |r: &mut Recorder<'_>, from: &str, why: &str| {
        if r.stopped() {
            return;
        }
        let at = CHAIN.iter().position(|s| *s == from).unwrap_or(CHAIN.len());
        for step in &CHAIN[at..] {
            r.record(Step::skip(step, why.to_owned()));
        }
    };

    // secret
    let built = match provider::build_with(&config.provider, env) {
        Ok(built) => built,
        Err(e) => {
            r.record(Step::fail("secret", e.to_string(), e.diagnosis()));
            skip_from(
                r,
                "token-endpoint",
                "skipped: no token provider (secret failed)",
            );
            return;
        }
    };
    let mut warnings: Vec<String> = secret_warnings.to_vec();
    warnings.extend(built.warnings.iter().cloned());
    let source = secret_source(config);
    if warnings.is_empty() {
        r.record(Step::pass("secret", source));
    } else {
        r.record(Step::warn(
            "secret",
            format!("{source}; {}", warnings.join("; ")),
            Diagnosis::SecretReadableByOthers,
        ));
    }
    let provider = built.provider;

    // token-endpoint
    let endpoint_step = match config.provider.kind {
        ProviderKind::File => file_step(config),
        ProviderKind::ApiKey | ProviderKind::Remote => {
            let url = match config.provider.kind {
                ProviderKind::Remote => config.provider.remote.url.clone(),
                _ => Some(
                    config
                        .provider
                        .api_key
                        .token_url
                        .clone()
                        .unwrap_or_else(|| config.provider.api_key.region.token_url()),
                ),
            };
            match url {
                Some(url) => reach_step("token-endpoint", &url, config.provider.timeout).await,
                None => Step::fail(
                    "token-endpoint",
                    "provider.remote.url is not set",
                    Diagnosis::ConfigInvalid,
                ),
            }
        }
    };
    let endpoint_failed = endpoint_step.status == Status::Fail;
    r.record(endpoint_step);
    if endpoint_failed {
        skip_from(r, "token", "skipped: token-endpoint failed");
        return;
    }
    if config.provider.kind == ProviderKind::File && !redeem {
        skip_from(
            r,
            "token",
            "not redeemed: a file token opens one session only (--redeem uses it)",
        );
        return;
    }

    // token
    let request = TokenRequest::from_config(&config.provider);
    let token = match fetch_once(provider.as_ref(), &request, config).await {
        Ok(token) => token,
        Err(step) => {
            r.record(*step);
            skip_from(r, "streaming-endpoint", "skipped: no token (token failed)");
            return;
        }
    };
    r.record(Step::pass(
        "token",
        format!(
            "token {} from {} ({}); redemption window {}",
            token.fingerprint(),
            provider.name(),
            provider.source(),
            token
                .redeem_by
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .map_or_else(|| "not stated".to_owned(), |d| format!("{} s", d.as_secs())),
        ),
    ));
    session_steps(config, token, r, &skip_from).await;
}

type SkipFrom<'s> = dyn Fn(&mut Recorder<'_>, &str, &str) + 's;

/// `streaming-endpoint` → `begin` → `clock` → `terminate`, on one session opened with `token`.
#[expect(
    clippy::too_many_lines,
    reason = "one session's steps in order; splitting hides the order"
)]
async fn session_steps(
    config: &Config,
    token: provider::Token,
    r: &mut Recorder<'_>,
    skip_from: &SkipFrom<'_>,
) {
    let requested = token
        .max_session_duration
        .unwrap_or(Duration::from_secs(u64::from(
            config.provider.max_session_duration_seconds,
        )));
    let date_skew_ms = token
        .server_date
        .map(|date| signed_ms(date, token.minted_at));
    let endpoint = crate::session::endpoint(config);
    let params = crate::session::params(config);
    let (url, header) = match config.streaming.token_in {
        TokenPlacement::Query => (build_ws_url(&endpoint, &params, Some(&token)), None),
        TokenPlacement::Header => (
            build_ws_url(&endpoint, &params, None),
            Some(token.into_secret()),
        ),
    };
    let url = match url {
        Ok(url) => url,
        Err(e) => {
            r.record(Step::fail(
                "streaming-endpoint",
                format!("{endpoint}: {e}"),
                Diagnosis::ConfigInvalid,
            ));
            skip_from(r, "begin", "skipped: streaming-endpoint failed");
            return;
        }
    };
    let shown = crate::provider::http::display_url(&endpoint);
    let via = proxy_note(&endpoint);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let connection = connection::websocket().open(1, url, header, 64, events_tx);
    let begin_timeout = config.session.begin_timeout;
    let opened = wait_for_begin(&mut events, begin_timeout).await;
    let begin = match opened {
        Ok(begin) => begin,
        Err(Some(ended)) if ended.failure.origin == crate::failure::Origin::Connect => {
            r.record(Step::fail(
                "streaming-endpoint",
                format!("{shown}{via}: {}", ended.failure.reason),
                ended.failure.diagnosis,
            ));
            skip_from(r, "begin", "skipped: streaming-endpoint failed");
            return;
        }
        Err(Some(ended)) => {
            r.record(Step::pass(
                "streaming-endpoint",
                format!("{shown}{via}: WebSocket upgraded"),
            ));
            let error = ended.error;
            let code = ended.failure.code.unwrap_or_default();
            let said = match &error {
                Some(e) if *e != ended.failure.reason => {
                    format!("{} (Error: {e})", ended.failure.reason)
                }
                _ => ended.failure.reason.clone(),
            };
            r.record(Step::fail(
                "begin",
                format!("closed before Begin: {code} \"{said}\""),
                ended.failure.diagnosis,
            ));
            skip_from(r, "clock", "skipped: begin failed");
            return;
        }
        Err(None) => {
            drop(connection);
            r.record(Step::warn(
                "streaming-endpoint",
                format!("{shown}{via}: no answer to tell whether the upgrade completed"),
                Diagnosis::NoBegin,
            ));
            r.record(Step::fail(
                "begin",
                format!(
                    "no Begin within {} (session.begin_timeout)",
                    humantime::format_duration(begin_timeout)
                ),
                Diagnosis::NoBegin,
            ));
            skip_from(r, "clock", "skipped: begin failed");
            return;
        }
    };
    r.record(Step::pass(
        "streaming-endpoint",
        format!("{shown}{via}: WebSocket upgraded"),
    ));
    r.record(Step::pass(
        "begin",
        format!("session {} began", crate::strings::short_id(&begin.id)),
    ));

    // clock
    let now_ms = signed_ms(SystemTime::now(), UNIX_EPOCH);
    let plan = expiry::plan(
        begin.expires_at,
        now_ms,
        requested,
        expiry::Bounds::default(),
    );
    let clock = clock_step(plan.finding, requested, date_skew_ms);
    let clock_failed = clock.status == Status::Fail;
    r.record(clock);
    if clock_failed && !r.keep_going {
        close(connection).await;
        return;
    }

    // terminate
    let step = terminate_step(config, &connection, &mut events).await;
    r.record(step);
    close(connection).await;
}

/// Close the session politely and wait for it, bounded: the doctor leaves no session open.
async fn close(connection: connection::Connection) {
    if let Some(task) = connection.close() {
        let _ = tokio::time::timeout(connection::CLOSE_TIMEOUT * 2, task).await;
    }
}

/// Milliseconds from `since` to `at` (negative when `at` is earlier).
fn signed_ms(at: SystemTime, since: SystemTime) -> i64 {
    match at.duration_since(since) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The clock rule of `protocol::expiry` (Begin.expires_at against the duration asked for, 5 s),
/// with the token answer's `Date` as a second signal.
fn clock_step(finding: Finding, requested: Duration, date_skew_ms: Option<i64>) -> Step {
    let tolerance_ms = expiry::TOLERANCE.as_millis() as i64;
    let asked = requested.as_secs();
    let date_text = match date_skew_ms {
        // The Date header has whole seconds, cut down: up to a second early is exact.
        Some(ms) if ms.abs() > tolerance_ms + 1000 => Err(format!(
            "the token endpoint's Date is {} s {} this machine's clock",
            ms.abs() / 1000,
            if ms > 0 { "ahead of" } else { "behind" }
        )),
        Some(_) => Ok("the token endpoint's Date agrees with this machine's clock".to_owned()),
        None => Ok("the token answer had no Date header".to_owned()),
    };
    match (finding, date_text) {
        (Finding::ClockSkew { skew_ms }, date) => Step::fail(
            "clock",
            format!(
                "Begin.expires_at is {} s {} than the {asked} s asked for: one of the two clocks \
                 is off; {}",
                (skew_ms.abs() + 500) / 1000,
                if skew_ms > 0 { "later" } else { "earlier" },
                date.unwrap_or_else(|e| e)
            ),
            Diagnosis::ClockSkew,
        ),
        (Finding::Consistent, Err(date)) => Step::fail(
            "clock",
            format!("Begin.expires_at matches the {asked} s asked for, but {date}"),
            Diagnosis::ClockSkew,
        ),
        (Finding::Implausible { left_ms }, date) => Step::fail(
            "clock",
            format!(
                "Begin.expires_at leaves {} s, not a session length the service grants (asked: \
                 {asked} s): one of the two clocks is far off; {}",
                left_ms / 1000,
                date.unwrap_or_else(|e| e)
            ),
            Diagnosis::ClockSkew,
        ),
        (Finding::Consistent, Ok(date)) => Step::pass(
            "clock",
            format!("Begin.expires_at matches the {asked} s asked for (±5 s); {date}"),
        ),
    }
}

/// One second of silence, `Terminate`, and the `Termination` that must follow.
async fn terminate_step(
    config: &Config,
    connection: &connection::Connection,
    events: &mut mpsc::UnboundedReceiver<(u64, ConnEvent)>,
) -> Step {
    let chunk_ms = config.audio.chunk_ms.max(1);
    let samples = (u64::from(config.streaming.sample_rate) * u64::from(chunk_ms) / 1000) as usize;
    let chunk = audio::encode(&vec![0; samples], config.streaming.encoding);
    let chunks = (SILENCE.as_millis() as u32).div_ceil(chunk_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(chunk_ms)));
    let mut closed = None;
    for _ in 0..chunks {
        tick.tick().await;
        if !connection.try_send(Outgoing::Audio(chunk.clone())) {
            break;
        }
        // A close while streaming (pacing, chunk size) is the answer.
        while let Ok((_, event)) = events.try_recv() {
            if let ConnEvent::Closed(ended) = event {
                closed = Some(ended);
            }
        }
        if closed.is_some() {
            break;
        }
    }
    if closed.is_none() {
        connection.try_send(Outgoing::Control(ClientMessage::Terminate));
    }
    let wait = config.session.terminate_timeout + Duration::from_secs(2);
    let deadline = tokio::time::Instant::now() + wait;
    let mut termination = None;
    while closed.is_none() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some((_, ConnEvent::Message(ServerMessage::Termination(t))))) => {
                termination = Some(t);
            }
            Ok(Some((_, ConnEvent::Closed(ended)))) => closed = Some(ended),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    match (termination, closed) {
        (Some(t), ended) => Step::pass(
            "terminate",
            format!(
                "{} s of silence sent; Termination received ({} s of audio); closed with {}",
                SILENCE.as_secs(),
                t.audio_duration_seconds,
                ended
                    .and_then(|e| e.failure.code)
                    .map_or_else(|| "no code".to_owned(), |c| c.to_string())
            ),
        ),
        (None, Some(ended)) => Step::fail(
            "terminate",
            format!(
                "closed without Termination: {} \"{}\"",
                ended
                    .failure
                    .code
                    .map_or_else(|| "no code".to_owned(), |c| c.to_string()),
                ended.failure.reason
            ),
            ended.failure.diagnosis,
        ),
        (None, None) => Step::fail(
            "terminate",
            format!(
                "no Termination within {} after Terminate",
                humantime::format_duration(wait)
            ),
            Diagnosis::NoTermination,
        ),
    }
}

/// Fetch exactly one token, bounded a little beyond the provider's own timeout.
async fn fetch_once(
    provider: &dyn TokenProvider,
    request: &TokenRequest,
    config: &Config,
) -> Result<provider::Token, Box<Step>> {
    let limit = config.provider.timeout + config.provider.file.wait + Duration::from_secs(5);
    match tokio::time::timeout(limit, provider.fetch(request)).await {
        Ok(Ok(token)) => Ok(token),
        Ok(Err(e)) => Err(Box::new(Step::fail("token", e.to_string(), e.diagnosis()))),
        Err(_) => Err(Box::new(Step::fail(
            "token",
            format!(
                "no token within {}",
                humantime::format_duration(config.provider.timeout)
            ),
            Diagnosis::TokenTimeout,
        ))),
    }
}

/// Where the provider's secret comes from (never the secret).
fn secret_source(config: &Config) -> String {
    let p = &config.provider;
    match p.kind {
        ProviderKind::ApiKey => match &p.api_key.key_file {
            Some(file) => format!("API key from the key file {}", file.display()),
            None => format!(
                "API key from the environment variable {}",
                p.api_key.key_env
            ),
        },
        ProviderKind::Remote => match (&p.remote.bearer_file, &p.remote.bearer_env) {
            (Some(file), _) => format!("token-server credential from {}", file.display()),
            (None, Some(name)) => {
                format!("token-server credential from the environment variable {name}")
            }
            (None, None) => "no token-server credential configured".to_owned(),
        },
        ProviderKind::File => "tokens from a file (no secret held here)".to_owned(),
    }
}

/// " via proxy http://host:port" when the environment routes `url` through one.
fn proxy_note(url: &Url) -> String {
    match ProxyEnv::process().proxy_for(url) {
        Ok(Some(proxy)) => format!(" via proxy {}", proxy::display_proxy(&proxy)),
        Ok(None) => String::new(),
        Err(e) => format!(" (proxy setting ignored: {e})"),
    }
}

/// DNS, TCP and TLS to `url`'s host with the HTTP client the providers build: a request for
/// the host's root, without credentials, so nothing is minted and no token fault is consumed.
pub async fn reach_step(step: &'static str, url: &Url, timeout: Duration) -> Step {
    let shown = crate::provider::http::display_url(url);
    let via = proxy_note(url);
    let Some(host) = url.host_str() else {
        return Step::fail(step, format!("{shown}: no host"), Diagnosis::ConfigInvalid);
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let mut found = Vec::new();
    if via.is_empty() {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = match tokio::time::timeout(timeout, tokio::net::lookup_host((bare, port))).await
        {
            Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
            Ok(Err(e)) => {
                return Step::fail(
                    step,
                    format!("{shown}: cannot resolve {bare}: {e}"),
                    Diagnosis::DnsFailure,
                );
            }
            Err(_) => {
                return Step::fail(
                    step,
                    format!("{shown}: no DNS answer for {bare}"),
                    Diagnosis::DnsFailure,
                );
            }
        };
        let Some(first) = addrs.first() else {
            return Step::fail(
                step,
                format!("{shown}: {bare} has no address"),
                Diagnosis::DnsFailure,
            );
        };
        if bare.parse::<std::net::IpAddr>().is_err() {
            found.push(format!("{bare} resolves to {}", first.ip()));
        }
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(first)).await {
            Ok(Ok(_)) => found.push("TCP connects".to_owned()),
            Ok(Err(e)) => {
                return Step::fail(
                    step,
                    format!("{shown}: cannot connect to {first}: {e}"),
                    Diagnosis::TcpFailure,
                );
            }
            Err(_) => {
                return Step::fail(
                    step,
                    format!("{shown}: no TCP answer from {first}"),
                    Diagnosis::TcpFailure,
                );
            }
        }
    }
    let client = match crate::provider::http::client("doctor", timeout) {
        Ok(client) => client,
        Err(e) => return Step::fail(step, e.to_string(), Diagnosis::TlsFailure),
    };
    let mut root = url.clone();
    root.set_path("/");
    root.set_query(None);
    let _ = root.set_username("");
    let _ = root.set_password(None);
    match tokio::time::timeout(timeout, client.get(root).send()).await {
        Ok(Ok(response)) => {
            if url.scheme() == "https" {
                found.push("TLS verified".to_owned());
            }
            found.push(format!("HTTP answers ({})", response.status().as_u16()));
            Step::pass(step, format!("{shown}{via}: {}", found.join(", ")))
        }
        Ok(Err(e)) => {
            let text = crate::provider::http::chain(&e);
            let lower = text.to_ascii_lowercase();
            let diagnosis = if !via.is_empty() && !lower.contains("certificate") {
                Diagnosis::ProxyFailure
            } else {
                crate::provider::http::network_of(&e)
                    .map_or(Diagnosis::TcpFailure, Diagnosis::from_network)
            };
            Step::fail(step, format!("{shown}{via}: {text}"), diagnosis)
        }
        Err(_) => Step::fail(
            step,
            format!(
                "{shown}{via}: no HTTP answer within {}",
                humantime::format_duration(timeout)
            ),
            Diagnosis::TcpFailure,
        ),
    }
}

/// Wait up to `timeout` for `Begin` on a connection's events: the `Begin`, or how the connection
/// ended (`None`: no answer in time), and the text of an `Error` frame seen meanwhile. One
/// deadline for the whole wait: other frames before `Begin` do not extend it.
pub(crate) async fn wait_for_begin(
    events: &mut mpsc::UnboundedReceiver<(crate::events::Gen, ConnEvent)>,
    timeout: Duration,
) -> Result<crate::protocol::messages::Begin, Option<connection::Ended>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some((_, ConnEvent::Message(ServerMessage::Begin(begin))))) => break Ok(begin),
            Ok(Some((_, ConnEvent::Closed(ended)))) => break Err(Some(ended)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break Err(None),
        }
    }
}

/// The file provider's "endpoint": the token file present, readable, fresh, and (as far as this
/// process can tell) unused — without taking its token.
fn file_step(config: &Config) -> Step {
    const STEP: &str = "token-endpoint";
    let Some(path) = config.provider.file.path.as_deref() else {
        return Step::fail(
            STEP,
            "provider.file.path is not set",
            Diagnosis::ConfigInvalid,
        );
    };
    let shown = path.display();
    let bytes = match crate::files::read_capped(path, crate::files::MAX_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Step::fail(
                STEP,
                format!("token file {shown}: the file does not exist"),
                Diagnosis::TokenFileMissing,
            );
        }
        Err(e) => {
            return Step::fail(
                STEP,
                format!("token file {shown}: {e}"),
                Diagnosis::TokenFileMissing,
            );
        }
    };
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    let text = String::from_utf8_lossy(&bytes);
    let trimmed = text.trim();
    let doc = if trimmed.starts_with('{') {
        match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Object(o)) => provider::contract::parse_object(&o).ok(),
            _ => None,
        }
    } else {
        provider::contract::parse_plain(trimmed)
    };
    let Some(doc) = doc else {
        return Step::fail(
            STEP,
            format!("token file {shown}: holds no token (empty, half-written or not a token)"),
            Diagnosis::TokenFileStale,
        );
    };
    let token = match doc.into_token("file", modified, SystemTime::now()) {
        Ok(token) => token,
        Err(e) => {
            return Step::fail(
                STEP,
                format!("token file {shown}: {e}"),
                Diagnosis::TokenFileStale,
            );
        }
    };
    if let Some(at) = token.redeem_by
        && token.is_lapsed(SystemTime::now())
    {
        return Step::fail(
            STEP,
            format!(
                "token file {shown}: holds token {} whose redemption window ended at {}",
                token.fingerprint(),
                provider::time::format_rfc3339(at)
            ),
            Diagnosis::TokenFileStale,
        );
    }
    Step::pass(
        STEP,
        format!(
            "token file {shown}: holds token {}, within its window (whether another reader used \
             it shows only when it is redeemed)",
            token.fingerprint()
        ),
    )
}

/// The input opens and delivers frames within `wait`; all-zero frames are a warning.
async fn input_step(config: &Config, wait: Duration) -> Step {
    const STEP: &str = "input";
    let options = AudioOptions::from_config(config);
    let mut input = match audio::open(&config.audio.input, &options).await {
        Ok(input) => input,
        Err(e) => {
            let diagnosis = match e {
                AudioError::NoMicSupport
                | AudioError::DeviceNotFound { .. }
                | AudioError::DeviceAmbiguous { .. }
                | AudioError::DeviceUnavailable { .. }
                | AudioError::Devices(_) => Diagnosis::NoInputDevice,
                _ => Diagnosis::NoAudioFrames,
            };
            return Step::fail(STEP, format!("cannot open the input: {e}"), diagnosis);
        }
    };
    let name = input.name.clone();
    let deadline = tokio::time::Instant::now() + wait;
    let (mut frames, mut samples, mut nonzero) = (0_u64, 0_u64, 0_u64);
    // Half a second of audio tells enough; the wait bounds a device that delivers nothing.
    let enough = u64::from(config.streaming.sample_rate) / 2;
    while samples < enough {
        match tokio::time::timeout_at(deadline, input.chunks.recv()).await {
            Ok(Some(chunk)) => {
                frames += 1;
                samples += chunk.samples.len() as u64;
                nonzero += chunk.samples.iter().filter(|s| **s != 0).count() as u64;
            }
            Ok(None) | Err(_) => break,
        }
    }
    drop(input);
    if frames == 0 {
        return Step::fail(
            STEP,
            format!(
                "{name}: the input opened but delivered no audio within {} s",
                wait.as_secs()
            ),
            Diagnosis::NoAudioFrames,
        );
    }
    if nonzero == 0 {
        return Step::warn(
            STEP,
            format!("{name}: the input delivered {frames} frames, all zero"),
            Diagnosis::SilentInput,
        );
    }
    Step::pass(
        STEP,
        format!(
            "{name}: {frames} frames, {} ms of audio with signal",
            samples * 1000 / u64::from(config.streaming.sample_rate.max(1))
        ),
    )
}

/// The transcript and log directories can be created and written.
fn files_step(config: &Config) -> Step {
    const STEP: &str = "files";
    let transcript = config.transcript.dir_or_default();
    let log = config.log.dir_or_default();
    if let Err(e) = writable(&transcript) {
        return Step::fail(
            STEP,
            format!("transcript.dir {}: {e}", transcript.display()),
            Diagnosis::TranscriptDirNotWritable,
        );
    }
    if let Err(e) = writable(&log) {
        return Step::fail(
            STEP,
            format!("log.dir {}: {e}", log.display()),
            Diagnosis::LogDirNotWritable,
        );
    }
    Step::pass(
        STEP,
        format!(
            "transcripts in {}, logs in {}: both writable",
            transcript.display(),
            log.display()
        ),
    )
}

/// Create `dir` (private, as the run would) and write and remove a probe file in it.
fn writable(dir: &Path) -> std::io::Result<()> {
    crate::files::create_private_dir(dir)?;
    let probe = dir.join(format!(".aai-live-doctor-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_marks_cause_fix_and_section() {
        let step = Step::fail("token", "HTTP 401", Diagnosis::TokenUnauthorized);
        let text = render_text(&step, false);
        assert!(text.starts_with("✘ token "), "{text}");
        assert!(text.contains("more:  aai-live explain token-401"), "{text}");
        assert!(
            text.contains("cause: The token endpoint refuses the API key"),
            "{text}"
        );
        let ascii = render_text(&step, true);
        assert!(ascii.starts_with("[FAIL] token"), "{ascii}");
        let layers = render_text(&Step::pass("config", "defaults → file; ±5 s"), true);
        assert_eq!(
            layers,
            "[ok]   config             defaults -> file; +/-5 s\n"
        );
        assert!(ascii.is_ascii());
        let json: serde_json::Value =
            serde_json::from_str(render_json(&step).trim()).expect("json");
        assert_eq!(json["status"], "fail");
        assert_eq!(json["section"], "token-401");
        assert_eq!(json["step"], "token");
        assert!(json["fix"].as_str().expect("fix").contains("the key again"));
        let pass: serde_json::Value =
            serde_json::from_str(render_json(&Step::pass("files", "ok")).trim()).expect("json");
        assert_eq!(pass["status"], "pass");
        assert!(pass["fix"].is_null() && pass["section"].is_null());
    }

    #[test]
    fn ascii_where_the_terminal_cannot_show_marks() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(!wants_ascii(false, &env(&[("LANG", "en_US.UTF-8")])));
        assert!(wants_ascii(true, &env(&[("LANG", "en_US.UTF-8")])));
        assert!(wants_ascii(false, &env(&[("LANG", "C")])));
        assert!(wants_ascii(false, &env(&[])));
        assert!(wants_ascii(
            false,
            &env(&[("LANG", "en_US.UTF-8"), ("TERM", "dumb")])
        ));
    }

    #[test]
    fn the_clock_rule_and_the_date_signal() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            clock_step(Finding::Consistent, hour, Some(-400)).status,
            Status::Pass
        );
        let skew = clock_step(Finding::ClockSkew { skew_ms: 30_000 }, hour, None);
        assert_eq!(skew.status, Status::Fail);
        assert!(
            skew.detail.contains("30 s later than the 3600 s"),
            "{}",
            skew.detail
        );
        assert_eq!(skew.section, Some("clock-skew"));
        let date = clock_step(Finding::Consistent, hour, Some(45_000));
        assert_eq!(date.status, Status::Fail);
        assert!(date.detail.contains("45 s ahead of"), "{}", date.detail);
        let odd = clock_step(Finding::Implausible { left_ms: 3_000 }, hour, None);
        assert_eq!(odd.status, Status::Fail);
        assert!(odd.detail.contains("leaves 3 s"), "{}", odd.detail);
    }
}
