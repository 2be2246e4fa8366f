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
//!
//! Which steps there are, their order and which needs which is one model, [`Check`]; the
//! recorder of `report` writes the lines and derives the skipped ones from it; `probe` holds
//! what both doctors do on the network.

mod check;
mod probe;
mod report;
pub mod server;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use check::{Check, Suite};
pub use report::{Format, Report, Status, Step, render, render_json, render_text, wants_ascii};

use crate::audio::{self, AudioError, AudioOptions};
use crate::config::{Config, ProviderKind};
use crate::diagnosis::Diagnosis;
use crate::protocol::expiry::{self, Finding};
use crate::protocol::{ClientMessage, ServerMessage};
use crate::provider::{self, TokenProvider, TokenRequest};
use crate::session::connection::{self, ConnEvent, Outgoing};
use probe::{Dialed, Events};
use report::Recorder;

/// How long the input has to deliver its first frames.
pub const INPUT_WAIT: Duration = Duration::from_secs(2);
/// The silence sent before `Terminate`.
const SILENCE: Duration = Duration::from_secs(1);

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
    /// The user chose `audio.input` (a file, the environment, `--input`): an input that cannot
    /// be opened fails the step; the default microphone missing only warns (a server has none).
    pub input_chosen: bool,
}

/// Run every step with `config`; `env` is where the provider reads its credentials (the process
/// environment for `aai-live doctor`).
pub async fn run(
    config: &Config,
    options: &Options,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut (dyn Write + Send),
) -> Report {
    let local = [
        config.provider.api_key.token_url.as_ref(),
        config.streaming.url.as_ref(),
    ]
    .into_iter()
    .flatten()
    .any(crate::protocol::params::is_loopback);
    let mut r =
        Recorder::new(Suite::Run, out, options.format, options.keep_going).against_emulator(local);
    // The loader's warnings about secret files belong to the `secret` step; the rest here.
    let (secret_warnings, other): (Vec<String>, Vec<String>) = options
        .warnings
        .iter()
        .cloned()
        .partition(|w| w.contains("readable by others"));
    let layers = format!("valid; layers: {}", options.layers.join(" → "));
    r.record(if other.is_empty() {
        Step::pass(Check::Config, layers)
    } else {
        Step::warn(
            Check::Config,
            format!("{layers}; {}", other.join("; ")),
            Diagnosis::ConfigInvalid,
        )
    });
    network_steps(config, &secret_warnings, options.redeem, env, &mut r).await;
    if r.runs(Check::Input) {
        let step = input_step(config, options.input_wait, options.input_chosen).await;
        r.record(step);
    }
    if r.runs(Check::Files) {
        r.record(files_step(config));
    }
    r.finish()
}

/// `secret` → `token-endpoint` → `token`, then the session's steps: each needs the one before,
/// so a failure returns and the recorder reports what it leaves out.
async fn network_steps(
    config: &Config,
    secret_warnings: &[String],
    redeem: bool,
    env: &dyn Fn(&str) -> Option<String>,
    r: &mut Recorder<'_>,
) {
    if !r.runs(Check::Secret) {
        return;
    }
    let built = match provider::build_with(&config.provider, env) {
        Ok(built) => built,
        Err(e) => {
            r.record(Step::fail(Check::Secret, e.to_string(), e.diagnosis()));
            return;
        }
    };
    let mut warnings: Vec<String> = secret_warnings.to_vec();
    warnings.extend(built.warnings.iter().cloned());
    let source = secret_source(config);
    if warnings.is_empty() {
        r.record(Step::pass(Check::Secret, source));
    } else {
        r.record(Step::warn(
            Check::Secret,
            format!("{source}; {}", warnings.join("; ")),
            Diagnosis::SecretReadableByOthers,
        ));
    }
    let provider = built.provider;

    if !r.runs(Check::TokenEndpoint) {
        return;
    }
    let step = token_endpoint_step(config).await;
    r.record(step);

    if !r.runs(Check::Token) {
        return;
    }
    if config.provider.kind == ProviderKind::File && !redeem {
        r.record(Step::skip(
            Check::Token,
            "not redeemed: a file token opens one session only (--redeem uses it)",
        ));
        return;
    }
    let request = TokenRequest::from_config(&config.provider);
    let token = match fetch_once(provider.as_ref(), &request, config).await {
        Ok(token) => token,
        Err(step) => {
            r.record(*step);
            return;
        }
    };
    r.record(Step::pass(
        Check::Token,
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
    session_steps(config, token, r).await;
}

/// The token endpoint of the configured provider: reached over the network, or for the file
/// provider the file inspected.
async fn token_endpoint_step(config: &Config) -> Step {
    let url = match config.provider.kind {
        ProviderKind::File => return file_step(config),
        ProviderKind::Remote => config.provider.remote.url.clone(),
        ProviderKind::ApiKey => Some(
            config
                .provider
                .api_key
                .token_url
                .clone()
                .unwrap_or_else(|| config.provider.api_key.region.token_url()),
        ),
    };
    match url {
        Some(url) => {
            probe::reach(Check::TokenEndpoint, &url, config.provider.timeout)
                .await
                .0
        }
        None => Step::fail(
            Check::TokenEndpoint,
            "provider.remote.url is not set",
            Diagnosis::ConfigInvalid,
        ),
    }
}

/// `streaming-endpoint` → `begin` → `clock` → `terminate`, on one session opened with `token`.
async fn session_steps(config: &Config, token: provider::Token, r: &mut Recorder<'_>) {
    if !r.runs(Check::StreamingEndpoint) {
        return;
    }
    let requested = token
        .max_session_duration
        .unwrap_or(Duration::from_secs(u64::from(
            config.provider.max_session_duration_seconds,
        )));
    let date_skew_ms = token
        .server_date
        .map(|date| signed_ms(date, token.minted_at));
    let Dialed {
        connection,
        mut events,
        endpoint,
    } = match probe::dial(Check::StreamingEndpoint, config, token) {
        Ok(dialed) => dialed,
        Err(step) => {
            r.record(*step);
            return;
        }
    };
    let shown = crate::provider::http::display_url(&endpoint);
    let via = probe::proxy_note(&endpoint);
    let begin_timeout = config.session.begin_timeout;
    let begin = match probe::wait_for_begin(&mut events, begin_timeout).await {
        Ok(begin) => begin,
        Err(Some(ended)) if ended.failure.origin == crate::failure::Origin::Connect => {
            r.record(Step::fail(
                Check::StreamingEndpoint,
                format!("{shown}{via}: {}", ended.failure.reason),
                ended.failure.diagnosis,
            ));
            return;
        }
        Err(Some(ended)) => {
            r.record(Step::pass(
                Check::StreamingEndpoint,
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
                Check::Begin,
                format!("closed before Begin: {code} \"{said}\""),
                ended.failure.diagnosis,
            ));
            return;
        }
        Err(None) => {
            drop(connection);
            r.record(Step::warn(
                Check::StreamingEndpoint,
                format!("{shown}{via}: no answer to tell whether the upgrade completed"),
                Diagnosis::NoBegin,
            ));
            r.record(Step::fail(
                Check::Begin,
                format!(
                    "no Begin within {} (session.begin_timeout)",
                    humantime::format_duration(begin_timeout)
                ),
                Diagnosis::NoBegin,
            ));
            return;
        }
    };
    r.record(Step::pass(
        Check::StreamingEndpoint,
        format!("{shown}{via}: WebSocket upgraded"),
    ));
    r.record(Step::pass(
        Check::Begin,
        format!("session {} began", crate::strings::short_id(&begin.id)),
    ));

    if r.runs(Check::Clock) {
        let now_ms = signed_ms(SystemTime::now(), UNIX_EPOCH);
        let plan = expiry::plan(
            begin.expires_at,
            now_ms,
            requested,
            expiry::Bounds::default(),
        );
        r.record(clock_step(plan.finding, requested, date_skew_ms));
    }
    if r.runs(Check::Terminate) {
        let step = terminate_step(config, &connection, &mut events).await;
        r.record(step);
    }
    probe::close(connection).await;
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
            Check::Clock,
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
            Check::Clock,
            format!("Begin.expires_at matches the {asked} s asked for, but {date}"),
            Diagnosis::ClockSkew,
        ),
        (Finding::Implausible { left_ms }, date) => Step::fail(
            Check::Clock,
            format!(
                "Begin.expires_at leaves {} s, not a session length the service grants (asked: \
                 {asked} s): one of the two clocks is far off; {}",
                left_ms / 1000,
                date.unwrap_or_else(|e| e)
            ),
            Diagnosis::ClockSkew,
        ),
        (Finding::Consistent, Ok(date)) => Step::pass(
            Check::Clock,
            format!("Begin.expires_at matches the {asked} s asked for (±5 s); {date}"),
        ),
    }
}

/// One second of silence, `Terminate`, and the `Termination` that must follow.
async fn terminate_step(
    config: &Config,
    connection: &connection::Connection,
    events: &mut Events,
) -> Step {
    let chunk_ms = config.audio.chunk_ms.max(1);
    let samples =
        (u64::from(config.streaming.params.sample_rate) * u64::from(chunk_ms) / 1000) as usize;
    let chunk = audio::encode(&vec![0; samples], config.streaming.params.encoding);
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
            Check::Terminate,
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
            Check::Terminate,
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
            Check::Terminate,
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
        Ok(Err(e)) => Err(Box::new(Step::fail(
            Check::Token,
            e.to_string(),
            e.diagnosis(),
        ))),
        Err(_) => Err(Box::new(Step::fail(
            Check::Token,
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

/// The file provider's "endpoint": the token file present, readable, fresh, and (as far as this
/// process can tell) unused — without taking its token.
fn file_step(config: &Config) -> Step {
    const STEP: Check = Check::TokenEndpoint;
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

/// Every input of a run (meeting mode's labelled inputs, each in turn) opens and delivers
/// frames within `wait`; all-zero frames are a warning. With several inputs the step says each
/// one's finding, labelled, and is as bad as the worst.
async fn input_step(config: &Config, wait: Duration, chosen: bool) -> Step {
    let sources = config.sources();
    let mut steps = Vec::new();
    for source in &sources {
        // Labelled inputs were always chosen (`[inputs]` or `--input LABEL=SPEC`).
        let chosen = chosen || source.label.is_some();
        let step = one_input_step(config, &source.spec, wait, chosen).await;
        steps.push(match &source.label {
            Some(label) => Step {
                detail: format!("{}: {}", label.display_name(), step.detail),
                ..step
            },
            None => step,
        });
    }
    let worst = steps
        .iter()
        .max_by_key(|s| match s.status {
            Status::Fail => 3,
            Status::Warn => 2,
            Status::Pass => 1,
            Status::Skip => 0,
        })
        .cloned()
        .unwrap_or_else(|| Step::pass(Check::Input, "no input"));
    if steps.len() == 1 {
        return worst;
    }
    Step {
        detail: steps
            .iter()
            .map(|s| s.detail.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        ..worst
    }
}

/// One input opens and delivers frames within `wait`.
async fn one_input_step(
    config: &Config,
    spec: &crate::config::InputSpec,
    wait: Duration,
    chosen: bool,
) -> Step {
    const STEP: Check = Check::Input;
    let options = AudioOptions::from_config(config);
    let mut input = match audio::open(spec, &options).await {
        Ok(input) => input,
        Err(e) => {
            let no_device = matches!(
                e,
                AudioError::NoMicSupport
                    | AudioError::DeviceNotFound { .. }
                    | AudioError::DeviceAmbiguous { .. }
                    | AudioError::DeviceUnavailable { .. }
                    | AudioError::Devices(_)
            );
            if no_device && !chosen {
                // Nobody asked for the microphone: a server or a CI machine has none, and runs
                // there stream files, stdin or test signals.
                return Step::warn(
                    STEP,
                    format!(
                        "no microphone for the default input ({e}); a run can stream a WAV file \
                         (--input file:PATH), stdin (--input stdin) or a test signal \
                         (--input test:tone)"
                    ),
                    Diagnosis::NoInputDevice,
                );
            }
            let diagnosis = if no_device {
                Diagnosis::NoInputDevice
            } else {
                Diagnosis::NoAudioFrames
            };
            return Step::fail(STEP, format!("cannot open the input: {e}"), diagnosis);
        }
    };
    let name = input.name.clone();
    let deadline = tokio::time::Instant::now() + wait;
    let (mut frames, mut samples, mut nonzero) = (0_u64, 0_u64, 0_u64);
    // Half a second of audio tells enough; the wait bounds a device that delivers nothing.
    let enough = u64::from(config.streaming.params.sample_rate) / 2;
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
            samples * 1000 / u64::from(config.streaming.params.sample_rate.max(1))
        ),
    )
}

/// The transcript and log directories can be created and written.
fn files_step(config: &Config) -> Step {
    const STEP: Check = Check::Files;
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

    /// A full run with `--keep-going` and nothing to reach (port 1 on loopback refuses): every
    /// step of the model is reported, in order — the failure in the network chain, the steps
    /// after it skipped naming it, the input and the directories still checked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_run_reports_every_step_of_the_model_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.provider.api_key.token_url =
            Some("http://127.0.0.1:1/v3/token".parse().expect("url"));
        config.provider.timeout = Duration::from_secs(2);
        config.audio.input = crate::config::InputSpec::Test(crate::config::TestSignal::Tone);
        config.transcript.dir = Some(dir.path().join("transcripts"));
        config.log.dir = Some(dir.path().join("logs"));
        let options = Options {
            keep_going: true,
            redeem: false,
            format: Format::Json,
            layers: vec!["built-in defaults".to_owned()],
            warnings: Vec::new(),
            input_wait: INPUT_WAIT,
            input_chosen: true,
        };
        let env = |name: &str| {
            (name == "ASSEMBLYAI_API_KEY").then(|| "0123456789abcdef0123456789abcdef".to_owned())
        };
        let mut out = Vec::new();
        let report = run(&config, &options, &env, &mut out).await;
        let written = String::from_utf8(out).expect("utf-8");
        let names: Vec<Check> = report.steps.iter().map(|s| s.step).collect();
        assert_eq!(
            names,
            Check::all(Suite::Run).collect::<Vec<_>>(),
            "{written}"
        );
        assert_eq!(written.lines().count(), names.len(), "{written}");
        assert_eq!(report.exit_code(), 1, "{written}");
        // Where the chain breaks depends on the machine's proxy settings; what follows does not.
        let failed = report
            .steps
            .iter()
            .find(|s| s.status == Status::Fail)
            .expect("a failure");
        for dependent in failed.step.dependents() {
            let step = report.step(dependent).expect("reported");
            assert_eq!(step.status, Status::Skip, "{written}");
            assert!(step.detail.contains(failed.step.name()), "{written}");
        }
        for check in [Check::Config, Check::Secret, Check::Input, Check::Files] {
            assert_eq!(
                report.step(check).map(|s| s.status),
                Some(Status::Pass),
                "{written}"
            );
        }
    }

    /// `--server` at a port that refuses: every step of its model is reported, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_server_run_reports_every_step_of_the_model_in_order() {
        let mut config = Config::default();
        config.provider.timeout = Duration::from_secs(2);
        let options = server::ServerOptions {
            url: "http://127.0.0.1:1/token".parse().expect("url"),
            credential_env: None,
            credential_file: None,
            origin: None,
            keep_going: true,
            format: Format::Text { ascii: true },
        };
        let mut out = Vec::new();
        let report = server::run(&config, &options, &|_| None, &mut out).await;
        let written = String::from_utf8(out).expect("utf-8");
        let names: Vec<Check> = report.steps.iter().map(|s| s.step).collect();
        assert_eq!(
            names,
            Check::all(Suite::Server).collect::<Vec<_>>(),
            "{written}"
        );
        assert_eq!(report.exit_code(), 1, "{written}");
        assert!(written.starts_with("[FAIL] server-reachable"), "{written}");
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
