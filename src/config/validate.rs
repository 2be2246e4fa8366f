//! `RawConfig` -> `Config`: one `validate_*` function per section, with every rule of
//! `docs/configuration.md`.
//!
//! All problems are collected rather than stopping at the first, so `aai-live config --check`
//! shows everything to fix at once. Each message names the key, the value, the rule and the layer
//! the value came from. When a value is invalid a placeholder is used to keep going; the
//! `Config` built from placeholders is never returned.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use url::{Host, Url};

use super::Problem;
use super::keys::KeySpec;
use super::provenance::Provenance;
use super::raw::{
    RawAudio, RawConfig, RawFeed, RawLog, RawProvider, RawServer, RawSession, RawStreaming,
};
use super::server::{Cidr, LimitSetting, LimitsStore, RateSpec, parse_origin};
use super::types::{
    ApiKeyConfig, ArchiveConfig, AudioConfig, Choice, Config, FeedConfig, FileConfig, InputSpec,
    KeysConfig, Label, LabelledInput, LogConfig, ProviderConfig, ProviderKind, RemoteConfig,
    ServerAuth, ServerSettings, SessionConfig, SpeakersConfig, StreamingConfig, TranscriptConfig,
    UiConfig, check_inputs,
};
use crate::protocol::StreamingParams;

/// Validates every section; `Err` holds every problem found.
pub(crate) fn validate(raw: RawConfig, provenance: &Provenance) -> Result<Config, Vec<Problem>> {
    let mut v = Validator {
        provenance,
        problems: Vec::new(),
    };
    let provider = validate_provider(&mut v, raw.provider);
    let config = Config {
        streaming: validate_streaming(&mut v, raw.streaming),
        session: validate_session(&mut v, &raw.session, &provider),
        audio: validate_audio(&mut v, raw.audio),
        transcript: TranscriptConfig {
            dir: v.path("transcript.dir", raw.transcript.dir),
            formats: v.choices("transcript.formats", &raw.transcript.formats),
        },
        ui: UiConfig {
            fps: v.int("ui.fps", raw.ui.fps, 1..=60),
            theme: v.choice("ui.theme", &raw.ui.theme),
            ascii: raw.ui.ascii,
            events: raw.ui.events,
        },
        keys: validate_keys(&mut v, raw.keys),
        log: validate_log(&mut v, raw.log),
        server: validate_server(&mut v, raw.server),
        inputs: validate_inputs(&mut v, &raw.inputs),
        speakers: SpeakersConfig {
            names: validate_names(&mut v, &raw.speakers.names),
            priming: v.duration(
                "speakers.priming",
                &raw.speakers.priming,
                Some(Duration::ZERO..=Duration::from_secs(30)),
            ),
        },
        archive: ArchiveConfig {
            enabled: raw.archive.enabled,
        },
        feed: validate_feed(&mut v, raw.feed),
        provider,
    };
    if v.problems.is_empty() {
        Ok(config)
    } else {
        Err(v.problems)
    }
}

/// `[feed]`: the address (empty: no feed), the token file, the origins (as `[server]`'s), the
/// bounds.
fn validate_feed(v: &mut Validator<'_>, raw: RawFeed) -> FeedConfig {
    let listen = match raw.listen.trim() {
        "" => None,
        text => v.accept(
            "feed.listen",
            &raw.listen,
            text.parse().map_err(|_| {
                "must be an address and port, e.g. \"127.0.0.1:8789\" (port 0: any free port), \
                 or empty for no feed"
                    .to_owned()
            }),
        ),
    };
    FeedConfig {
        listen,
        token_file: v.path("feed.token_file", raw.token_file),
        origins: raw
            .origins
            .iter()
            .filter_map(|origin| v.accept("feed.origins", origin, parse_origin(origin)))
            .collect(),
        history_events: v.int("feed.history_events", raw.history_events, 1..=1_000_000),
        queue_events: v.int("feed.queue_events", raw.queue_events, 16..=100_000),
    }
}

fn validate_provider(v: &mut Validator<'_>, raw: RawProvider) -> ProviderConfig {
    let kind = v.choice::<ProviderKind>("provider.kind", &raw.kind);
    let (a, r, f) = (raw.api_key, raw.remote, raw.file);
    if a.key_env.is_empty() && a.key_file.is_none() {
        v.fail(
            "provider.api_key.key_env",
            &Q(""),
            "must name an environment variable (or set `provider.api_key.key_file`)",
        );
    }
    for (name, value) in &r.headers {
        let key = format!("provider.remote.headers.{name}");
        if name.is_empty() || !name.bytes().all(is_header_name_byte) {
            v.fail(
                &key,
                &Q(value),
                "the header name must be letters, digits and !#$%&'*+-.^_`|~",
            );
        } else if value.chars().any(|c| c.is_control() && c != '\t') {
            v.fail(
                &key,
                &Q(value),
                "the header value must not contain control characters",
            );
        }
    }
    // A missing required key is reported against `provider.kind`, which is what made it required.
    let required = match kind {
        ProviderKind::Remote if r.url.is_none() => Some("provider.remote.url"),
        ProviderKind::File if f.path.is_none() => Some("provider.file.path"),
        _ => None,
    };
    if let Some(missing) = required {
        let message = format!(
            "`{missing}` is missing: it is required when `provider.kind` = {:?} (from {})",
            kind.as_str(),
            v.provenance.origin("provider.kind")
        );
        v.problems.push(Problem {
            key: missing.to_owned(),
            message,
        });
    }
    ProviderConfig {
        kind,
        expires_in_seconds: v.int(
            "provider.expires_in_seconds",
            raw.expires_in_seconds,
            1..=600,
        ),
        max_session_duration_seconds: v.int(
            "provider.max_session_duration_seconds",
            raw.max_session_duration_seconds,
            60..=10_800,
        ),
        timeout: v.duration("provider.timeout", &raw.timeout, None),
        api_key: ApiKeyConfig {
            key_env: a.key_env,
            key_file: v.path("provider.api_key.key_file", a.key_file),
            region: v.choice("provider.api_key.region", &a.region),
            token_url: a
                .token_url
                .and_then(|u| v.url("provider.api_key.token_url", &u, Scheme::Http)),
        },
        remote: RemoteConfig {
            url: r
                .url
                .and_then(|u| v.url("provider.remote.url", &u, Scheme::Http)),
            method: v.choice("provider.remote.method", &r.method),
            headers: r.headers,
            bearer_env: v.non_empty("provider.remote.bearer_env", r.bearer_env),
            bearer_file: v.path("provider.remote.bearer_file", r.bearer_file),
            pass_lifetimes: r.pass_lifetimes,
            follow_server_streaming_url: r.follow_server_streaming_url,
        },
        file: FileConfig {
            path: v.path("provider.file.path", f.path),
            wait: v.duration("provider.file.wait", &f.wait, None),
            poll_interval: v.duration("provider.file.poll_interval", &f.poll_interval, None),
            remove_after_use: f.remove_after_use,
        },
    }
}

/// RFC 9110 `tchar`.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn validate_streaming(v: &mut Validator<'_>, raw: RawStreaming) -> StreamingConfig {
    const TERMS: &str = "streaming.keyterms_prompt";
    if raw.keyterms_prompt.len() > 100 {
        let count = format!("[{} terms]", raw.keyterms_prompt.len());
        v.fail(TERMS, &count, "must have at most 100 terms");
    }
    for term in &raw.keyterms_prompt {
        let len = term.chars().count();
        if !(1..=50).contains(&len) {
            v.fail(
                TERMS,
                &Q(term),
                &format!("each term must be 1-50 characters long (this one has {len})"),
            );
        }
    }
    let min_silence = v.opt_int(
        "streaming.min_turn_silence",
        raw.min_turn_silence,
        0..=10_000,
    );
    let max_silence = v.opt_int(
        "streaming.max_turn_silence",
        raw.max_turn_silence,
        0..=10_000,
    );
    if let (Some(min), Some(max)) = (min_silence, max_silence)
        && min > max
    {
        let rule = format!("must not exceed `streaming.max_turn_silence` ({max})");
        v.fail("streaming.min_turn_silence", &min, &rule);
    }
    if let Some(prompt) = &raw.prompt {
        let len = prompt.chars().count();
        if len > 1750 {
            v.fail(
                "streaming.prompt",
                &format!("<{len} characters>"),
                "must be at most 1750 characters",
            );
        }
    }
    let u3 = raw.speech_model.starts_with("u3") || raw.speech_model.starts_with("universal-3");
    if let Some(mode) = &raw.mode {
        if !u3 {
            let rule = format!(
                "applies to U3 models only (`streaming.speech_model` is {:?})",
                raw.speech_model
            );
            v.fail("streaming.mode", &Q(mode), &rule);
        } else if !["min_latency", "balanced", "max_accuracy"].contains(&mode.as_str()) {
            v.fail(
                "streaming.mode",
                &Q(mode),
                "must be \"min_latency\", \"balanced\" or \"max_accuracy\"",
            );
        }
    }
    validate_redaction(v, &raw);
    StreamingConfig {
        url: raw
            .url
            .and_then(|u| v.url("streaming.url", &u, Scheme::WebSocket)),
        token_in: v.choice("streaming.token_in", &raw.token_in),
        params: StreamingParams {
            speech_model: v
                .non_empty("streaming.speech_model", Some(raw.speech_model))
                .unwrap_or_default(),
            sample_rate: v.int("streaming.sample_rate", raw.sample_rate, 8000..=96_000),
            encoding: v.choice("streaming.encoding", &raw.encoding),
            format_turns: raw.format_turns,
            keyterms_prompt: raw.keyterms_prompt,
            language_detection: raw.language_detection,
            speaker_labels: raw.speaker_labels,
            end_of_turn_confidence_threshold: raw
                .end_of_turn_confidence_threshold
                .map(|t| v.float("streaming.end_of_turn_confidence_threshold", t, 0.0..=1.0)),
            min_turn_silence: min_silence,
            max_turn_silence: max_silence,
            vad_threshold: raw
                .vad_threshold
                .map(|t| v.float("streaming.vad_threshold", t, 0.0..=1.0)),
            inactivity_timeout: v.opt_int(
                "streaming.inactivity_timeout",
                raw.inactivity_timeout,
                5..=3600,
            ),
            filter_profanity: raw.filter_profanity,
            max_speakers: v.opt_int("streaming.max_speakers", raw.max_speakers, 1..=10),
            prompt: raw.prompt,
            mode: raw.mode,
            redact_pii: raw.redact_pii,
            redact_pii_policies: raw.redact_pii_policies,
            redact_pii_sub: raw.redact_pii_sub,
            include_partial_turns: raw.include_partial_turns,
            extra: raw.extra,
        },
    }
}

/// The PII redaction keys: policies and substitution only with `redact_pii`, policies named
/// as the service names them (lower case, `_`), at most 50.
fn validate_redaction(v: &mut Validator<'_>, raw: &RawStreaming) {
    const POLICIES: &str = "streaming.redact_pii_policies";
    if !raw.redact_pii {
        for (key, set) in [
            (POLICIES, !raw.redact_pii_policies.is_empty()),
            ("streaming.redact_pii_sub", raw.redact_pii_sub.is_some()),
            (
                "streaming.include_partial_turns",
                raw.include_partial_turns.is_some(),
            ),
        ] {
            if set {
                v.fail(
                    key,
                    &"(set)",
                    "applies only with `streaming.redact_pii = true`",
                );
            }
        }
    }
    if raw.redact_pii_policies.len() > 50 {
        let count = format!("[{} policies]", raw.redact_pii_policies.len());
        v.fail(POLICIES, &count, "must have at most 50 policies");
    }
    for policy in &raw.redact_pii_policies {
        let ok = (1..=64).contains(&policy.len())
            && policy
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            v.fail(
                POLICIES,
                &Q(policy),
                "each policy is a name such as \"person_name\" (lower case, digits, `_`)",
            );
        }
    }
    if let Some(sub) = &raw.redact_pii_sub
        && !["hash", "entity_name"].contains(&sub.as_str())
    {
        v.fail(
            "streaming.redact_pii_sub",
            &Q(sub),
            "must be \"hash\" or \"entity_name\"",
        );
    }
}

fn validate_session(
    v: &mut Validator<'_>,
    raw: &RawSession,
    provider: &ProviderConfig,
) -> SessionConfig {
    let rotation_lead = v.duration("session.rotation_lead", &raw.rotation_lead, None);
    let session_max = u64::from(provider.max_session_duration_seconds);
    if rotation_lead >= Duration::from_secs(session_max) {
        let rule = format!(
            "must be shorter than `provider.max_session_duration_seconds` ({session_max} s, from {})",
            v.provenance.origin("provider.max_session_duration_seconds")
        );
        v.fail("session.rotation_lead", &Q(&raw.rotation_lead), &rule);
    }
    let backoff_initial = v.duration("session.backoff_initial", &raw.backoff_initial, None);
    let backoff_max = v.duration("session.backoff_max", &raw.backoff_max, None);
    if backoff_initial > backoff_max {
        let rule = format!(
            "must not exceed `session.backoff_max` ({:?})",
            raw.backoff_max
        );
        v.fail("session.backoff_initial", &Q(&raw.backoff_initial), &rule);
    }
    let backoff_multiplier = raw.backoff_multiplier;
    if !(backoff_multiplier.is_finite() && backoff_multiplier >= 1.0) {
        v.fail(
            "session.backoff_multiplier",
            &backoff_multiplier,
            "must be at least 1.0",
        );
    }
    let replay_range = Duration::from_secs(1)..=Duration::from_secs(600);
    SessionConfig {
        rotation: raw.rotation,
        rotation_lead,
        begin_timeout: v.duration("session.begin_timeout", &raw.begin_timeout, None),
        terminate_timeout: v.duration("session.terminate_timeout", &raw.terminate_timeout, None),
        stall_timeout: v.duration("session.stall_timeout", &raw.stall_timeout, None),
        healthy_after: v.duration("session.healthy_after", &raw.healthy_after, None),
        backoff_initial,
        backoff_max,
        backoff_multiplier,
        rate_limit_backoff: v.duration("session.rate_limit_backoff", &raw.rate_limit_backoff, None),
        replay_buffer: v.duration(
            "session.replay_buffer",
            &raw.replay_buffer,
            Some(replay_range),
        ),
        // The service rejects audio faster than 1.25x real time (close 3007).
        replay_speed: v.float("session.replay_speed", raw.replay_speed, 1.0..=1.25),
        keepalive_interval: v.duration("session.keepalive_interval", &raw.keepalive_interval, None),
    }
}

fn validate_audio(v: &mut Validator<'_>, raw: RawAudio) -> AudioConfig {
    AudioConfig {
        input: v.parse("audio.input", &raw.input).unwrap_or_default(),
        device: v.non_empty("audio.device", raw.device),
        chunk_ms: v.int("audio.chunk_ms", raw.chunk_ms, 50..=1000),
        loop_input: raw.r#loop,
        stdin_format: v
            .parse("audio.stdin_format", &raw.stdin_format)
            .unwrap_or_default(),
    }
}

/// `[speakers] names`: keys `LABEL` or `INPUT:LABEL` (a speaker label: 1-16 letters or
/// digits), names of 1-64 characters without control characters. Kept in lower case: the
/// environment lower-cases its keys.
fn validate_names(
    v: &mut Validator<'_>,
    raw: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let speaker_ok =
        |s: &str| (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let mut names = BTreeMap::new();
    for (key, name) in raw {
        let path = format!("speakers.names.{key}");
        let key_ok = match key.split_once(':') {
            Some((input, speaker)) => input.parse::<Label>().is_ok() && speaker_ok(speaker),
            None => speaker_ok(key),
        };
        if !key_ok {
            v.fail(
                &path,
                &Q(key),
                "must be a speaker label (1-16 letters or digits, e.g. \"A\") or INPUT:LABEL \
                 (e.g. \"them:A\")",
            );
            continue;
        }
        let chars = name.chars().count();
        if !(1..=64).contains(&chars) || name.chars().any(char::is_control) {
            v.fail(
                &path,
                &Q(name),
                "must be a name of 1-64 characters without control characters",
            );
            continue;
        }
        names.insert(key.to_lowercase(), name.clone());
    }
    names
}

/// `[inputs]`: each key a label, each value a spec; labels unique without case, `stdin` once.
fn validate_inputs(v: &mut Validator<'_>, raw: &BTreeMap<String, String>) -> Vec<LabelledInput> {
    let mut inputs = Vec::new();
    for (label, spec) in raw {
        let key = format!("inputs.{label}");
        let label = v.accept(&key, label, label.parse::<Label>());
        let spec = v.parse::<InputSpec>(&key, spec);
        if let (Some(label), Some(spec)) = (label, spec) {
            inputs.push(LabelledInput { label, spec });
        }
    }
    if let Err(rule) = check_inputs(&inputs) {
        let shown = raw.keys().cloned().collect::<Vec<_>>().join(", ");
        v.fail("inputs", &Q(&shown), &rule);
    }
    inputs
}

fn validate_keys(v: &mut Validator<'_>, raw: BTreeMap<String, Vec<String>>) -> KeysConfig {
    let mut bound: HashMap<KeySpec, String> = HashMap::new();
    let mut bindings = BTreeMap::new();
    for (action, specs) in raw {
        let key = format!("keys.{action}");
        let mut keys: Vec<KeySpec> = Vec::new();
        for spec in &specs {
            let Some(parsed) = v.parse::<KeySpec>(&key, spec) else {
                continue;
            };
            if keys.contains(&parsed) {
                continue; // listed twice for the same action: harmless
            }
            if let Some(other) = bound.get(&parsed) {
                let message = format!(
                    "key {:?} is bound to both `keys.{other}` (from {}) and `{key}` (from {}); a key can \
                     trigger only one action",
                    parsed.to_string(),
                    v.provenance.origin(&format!("keys.{other}")),
                    v.provenance.origin(&key),
                );
                v.problems.push(Problem {
                    key: key.clone(),
                    message,
                });
                continue;
            }
            bound.insert(parsed, action.clone());
            keys.push(parsed);
        }
        bindings.insert(action, keys);
    }
    KeysConfig { bindings }
}

fn validate_log(v: &mut Validator<'_>, raw: RawLog) -> LogConfig {
    if let Err(rule) = check_log_filter(&raw.level) {
        v.fail("log.level", &Q(&raw.level), &rule);
    }
    LogConfig {
        dir: v.path("log.dir", raw.dir),
        max_files: v.int("log.max_files", raw.max_files, 1..=100),
        level: raw.level,
    }
}

fn validate_server(v: &mut Validator<'_>, raw: RawServer) -> ServerSettings {
    let (listen, auth) = validate_server_listen(v, &raw);
    let lifetimes = validate_server_lifetimes(v, &raw);
    let tls_cert = v.path("server.tls_cert", raw.tls_cert);
    let tls_key = v.path("server.tls_key", raw.tls_key);
    for (set, unset, value) in [
        ("server.tls_cert", "server.tls_key", &tls_cert),
        ("server.tls_key", "server.tls_cert", &tls_key),
    ] {
        if let (Some(path), false) = (value, tls_cert.is_some() && tls_key.is_some()) {
            let rule =
                format!("needs `{unset}` too: give both the certificate and its key, or neither");
            v.fail(set, &Q(&path.display().to_string()), &rule);
        }
    }
    let limits_store = match raw.limits_store.parse::<LimitsStore>() {
        Ok(store) => store,
        Err(rule) => {
            // The value is quoted with any password masked: a config error may be pasted anywhere.
            let shown = crate::protocol::params::redact_url_text(&raw.limits_store);
            v.fail("server.limits_store", &Q(&shown), &rule);
            LimitsStore::Memory
        }
    };
    let prefix = raw.limits_store_prefix;
    if !(1..=64).contains(&prefix.chars().count())
        || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        v.fail(
            "server.limits_store_prefix",
            &Q(&prefix),
            "must be 1-64 characters without spaces or control characters",
        );
    }
    ServerSettings {
        listen,
        auth,
        credentials: v.path("server.credentials", raw.credentials),
        expires_in_seconds: lifetimes[0],
        min_expires_in_seconds: lifetimes[1],
        max_session_duration_seconds: lifetimes[2],
        min_session_duration_seconds: lifetimes[3],
        rate_limit: v.rate("server.rate_limit", &raw.rate_limit),
        global_rate_limit: v.rate("server.global_rate_limit", &raw.global_rate_limit),
        refusal_limit: v.rate("server.refusal_limit", &raw.refusal_limit),
        cors_origins: raw
            .cors_origins
            .iter()
            .filter_map(|origin| v.accept("server.cors_origins", origin, parse_origin(origin)))
            .collect(),
        tls_cert,
        tls_key,
        request_timeout: v.duration(
            "server.request_timeout",
            &raw.request_timeout,
            Some(Duration::from_millis(100)..=Duration::from_secs(600)),
        ),
        max_in_flight: v.int("server.max_in_flight", raw.max_in_flight, 1..=100_000),
        max_connections: v.int("server.max_connections", raw.max_connections, 1..=1_000_000),
        public_metrics: raw.public_metrics,
        trusted_proxies: raw
            .trusted_proxies
            .iter()
            .filter_map(|cidr| v.parse::<Cidr>("server.trusted_proxies", cidr))
            .collect(),
        limits_store,
        limits_store_failure: v.choice("server.limits_store_failure", &raw.limits_store_failure),
        limits_store_password_env: v.non_empty(
            "server.limits_store_password_env",
            raw.limits_store_password_env,
        ),
        limits_store_password_file: v.path(
            "server.limits_store_password_file",
            raw.limits_store_password_file,
        ),
        limits_store_ca: v.path("server.limits_store_ca", raw.limits_store_ca),
        limits_store_prefix: prefix,
        limits_store_timeout: v.duration(
            "server.limits_store_timeout",
            &raw.limits_store_timeout,
            Some(Duration::from_millis(1)..=Duration::from_secs(10)),
        ),
        web: raw.web,
        public_origin: v
            .non_empty("server.public_origin", raw.public_origin)
            .and_then(|origin| {
                let parsed = parse_origin(&origin);
                v.accept("server.public_origin", &origin, parsed)
            }),
    }
}

/// `server.listen` and `server.auth`, which must be a loopback address when nobody
/// authenticates.
fn validate_server_listen(
    v: &mut Validator<'_>,
    raw: &RawServer,
) -> (std::net::SocketAddr, ServerAuth) {
    let listen = v
        .accept(
            "server.listen",
            &raw.listen,
            raw.listen.parse().map_err(|_| {
                "must be an address and port, e.g. \"127.0.0.1:8787\" or \"[::1]:8787\" \
                 (port 0: any free port)"
                    .to_owned()
            }),
        )
        .unwrap_or(ServerSettings::default().listen);
    let auth = v.choice::<ServerAuth>("server.auth", &raw.auth);
    if auth == ServerAuth::None && !listen.ip().is_loopback() {
        let message = format!(
            "`server.auth` = \"none\" (from {}) is allowed only on a loopback address, not \
             `server.listen` = {listen} (from {}): give clients credentials (`server.credentials`, \
             --credentials FILE) or listen on 127.0.0.1",
            v.provenance.origin("server.auth"),
            v.provenance.origin("server.listen")
        );
        v.problems.push(Problem {
            key: "server.auth".to_owned(),
            message,
        });
    }
    (listen, auth)
}

/// The token lifetimes `serve` gives, each minimum at most its maximum: `[expires_in,
/// min_expires_in, max_session, min_session]` in seconds.
fn validate_server_lifetimes(v: &mut Validator<'_>, raw: &RawServer) -> [u32; 4] {
    let window = 1..=600;
    let session = 60..=10_800;
    let values = [
        v.int(
            "server.expires_in_seconds",
            raw.expires_in_seconds,
            window.clone(),
        ),
        v.int(
            "server.min_expires_in_seconds",
            raw.min_expires_in_seconds,
            window,
        ),
        v.int(
            "server.max_session_duration_seconds",
            raw.max_session_duration_seconds,
            session.clone(),
        ),
        v.int(
            "server.min_session_duration_seconds",
            raw.min_session_duration_seconds,
            session,
        ),
    ];
    for (min_key, min, max_key, max) in [
        (
            "server.min_expires_in_seconds",
            values[1],
            "server.expires_in_seconds",
            values[0],
        ),
        (
            "server.min_session_duration_seconds",
            values[3],
            "server.max_session_duration_seconds",
            values[2],
        ),
    ] {
        if min > max {
            let rule = format!(
                "must not exceed `{max_key}` ({max}, from {})",
                v.provenance.origin(max_key)
            );
            v.fail(min_key, &min, &rule);
        }
    }
    values
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A simple check of `tracing_subscriber::EnvFilter` syntax: comma-separated `level` or
/// `target=level` directives. Stricter than `EnvFilter` on purpose: a bare word there means
/// "trace for that target", which in a config file is almost always a misspelt level.
fn check_log_filter(filter: &str) -> Result<(), String> {
    let is_level = |s: &str| {
        LEVELS
            .iter()
            .any(|level| level.eq_ignore_ascii_case(s.trim()))
    };
    let levels = LEVELS.join(", ");
    if filter.trim().is_empty() {
        return Err(format!(
            "must be a level ({levels}) or target=level directives"
        ));
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.rsplit_once('=') {
            Some((target, level)) if is_level(level) => {
                if target.trim().is_empty() || target.contains(char::is_whitespace) {
                    return Err(format!(
                        "{directive:?} needs a target before '=', e.g. \"aai_live=debug\""
                    ));
                }
            }
            Some((_, level)) => {
                return Err(format!(
                    "{level:?} in {directive:?} is not a level ({levels})"
                ));
            }
            None if is_level(directive) => {}
            None => {
                return Err(format!(
                    "{directive:?} is not a level ({levels}) nor a target=level directive"
                ));
            }
        }
    }
    Ok(())
}

/// A string value quoted as in TOML, for messages.
struct Q<'a>(&'a str);

impl fmt::Display for Q<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[derive(Clone, Copy)]
enum Scheme {
    /// `wss://`, or `ws://` on loopback.
    WebSocket,
    /// `https://`, or `http://` on loopback.
    Http,
}

/// Collects problems while converting values; every method returns a usable placeholder on
/// failure so that validation can go on and report the remaining problems too.
struct Validator<'a> {
    provenance: &'a Provenance,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn fail(&mut self, key: &str, value: &dyn fmt::Display, rule: &str) {
        let origin = self.provenance.origin(key);
        self.problems.push(Problem {
            key: key.to_owned(),
            message: format!("`{key}` = {value} (from {origin}): {rule}"),
        });
    }

    fn int(&mut self, key: &str, value: i64, range: RangeInclusive<u32>) -> u32 {
        match u32::try_from(value) {
            Ok(n) if range.contains(&n) => n,
            _ => {
                self.fail(
                    key,
                    &value,
                    &format!("must be between {} and {}", range.start(), range.end()),
                );
                *range.start()
            }
        }
    }

    fn opt_int(
        &mut self,
        key: &str,
        value: Option<i64>,
        range: RangeInclusive<u32>,
    ) -> Option<u32> {
        value.map(|n| self.int(key, n, range))
    }

    fn float(&mut self, key: &str, value: f64, range: RangeInclusive<f64>) -> f64 {
        if !range.contains(&value) {
            self.fail(
                key,
                &value,
                &format!("must be between {:?} and {:?}", range.start(), range.end()),
            );
        }
        value
    }

    /// A duration (units or bare seconds, [`crate::duration`]) that is positive and, with
    /// `range`, within it.
    fn duration(
        &mut self,
        key: &str,
        text: &str,
        range: Option<RangeInclusive<Duration>>,
    ) -> Duration {
        let fallback = Duration::from_secs(1);
        let Ok(parsed) = crate::duration::parse(text) else {
            let rule =
                "must be a duration such as \"30s\", \"1m 30s\", \"500ms\" or \"20\" (seconds)";
            self.fail(key, &Q(text), rule);
            return fallback;
        };
        let rule = match range {
            Some(range) if !range.contains(&parsed) => format!(
                "must be between {} and {}",
                humantime::format_duration(*range.start()),
                humantime::format_duration(*range.end())
            ),
            _ if parsed.is_zero() => "must be longer than 0".to_owned(),
            _ => return parsed,
        };
        self.fail(key, &Q(text), &rule);
        fallback
    }

    fn choice<T: Choice>(&mut self, key: &str, text: &str) -> T {
        self.accept(key, text, T::parse_choice(text))
            .unwrap_or(T::ALL[0])
    }

    /// A list of choices, duplicates dropped.
    fn choices<T: Choice + PartialEq>(&mut self, key: &str, items: &[String]) -> Vec<T> {
        let mut out = Vec::new();
        for item in items {
            if let Some(choice) = self.accept(key, item, T::parse_choice(item))
                && !out.contains(&choice)
            {
                out.push(choice);
            }
        }
        out
    }

    fn parse<T: FromStr<Err = String>>(&mut self, key: &str, text: &str) -> Option<T> {
        self.accept(key, text, text.parse())
    }

    /// A rate (`"30/min"`) or `"off"`.
    fn rate(&mut self, key: &str, text: &str) -> Option<RateSpec> {
        let parsed = text.parse::<LimitSetting>().map_err(|e| {
            format!(
                "must be N/PERIOD (\"30/min\", \"5/s\", \"100/h\") or \"off\": {}",
                e.reason
            )
        });
        self.accept(key, text, parsed).and_then(|setting| setting.0)
    }

    /// The parsed value, or `None` after recording the parser's rule as a problem.
    fn accept<T>(&mut self, key: &str, text: &str, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|rule| self.fail(key, &Q(text), &rule)).ok()
    }

    /// Optional strings and paths must not be empty: unsetting is done by removing the key.
    fn non_empty(&mut self, key: &str, value: Option<String>) -> Option<String> {
        if value.as_deref() == Some("") {
            self.fail(
                key,
                &Q(""),
                "must not be empty (remove the key to leave it unset)",
            );
        }
        value
    }

    fn path(&mut self, key: &str, value: Option<String>) -> Option<PathBuf> {
        self.non_empty(key, value).map(PathBuf::from)
    }

    fn url(&mut self, key: &str, text: &str, scheme: Scheme) -> Option<Url> {
        let (secure, plain) = match scheme {
            Scheme::WebSocket => ("wss", "ws"),
            Scheme::Http => ("https", "http"),
        };
        // A refused URL is quoted without its password or query secrets.
        let shown = crate::protocol::params::redact_url_text(text);
        let url = match Url::parse(text) {
            Ok(url) => url,
            Err(e) => {
                self.fail(
                    key,
                    &Q(&shown),
                    &format!("must be a URL starting with {secure}:// ({e})"),
                );
                return None;
            }
        };
        // Plain-text schemes would send tokens and credentials in the clear; that is only
        // acceptable when the traffic never leaves the machine (the local emulator).
        let rule = match url.scheme() {
            s if s == secure => return Some(url),
            s if s == plain && is_loopback(&url) => return Some(url),
            s if s == plain => format!(
                "{plain}:// is allowed only for loopback hosts (127.0.0.0/8, ::1, localhost); use {secure}://"
            ),
            _ => format!(
                "must be a URL starting with {secure}:// ({plain}:// only for loopback hosts)"
            ),
        };
        self.fail(key, &Q(&shown), &rule);
        None
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_TOML;

    fn raw() -> RawConfig {
        toml::from_str(DEFAULT_TOML).expect("test setup")
    }

    /// Validates the defaults after `edit`, returning the problem messages.
    fn problems(edit: impl FnOnce(&mut RawConfig)) -> Vec<String> {
        let mut raw = raw();
        edit(&mut raw);
        let provenance = Provenance::defaults_only_for_tests();
        match validate(raw, &provenance) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.message).collect(),
        }
    }

    fn assert_problem(edit: impl FnOnce(&mut RawConfig), expected: &str) {
        let found = problems(edit);
        assert!(
            found.iter().any(|m| m.contains(expected)),
            "expected {expected:?} in {found:#?}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(problems(|_| {}), Vec::<String>::new());
    }

    #[test]
    fn integer_ranges() {
        assert_problem(
            |r| r.streaming.sample_rate = 7999,
            "`streaming.sample_rate` = 7999 (from the built-in defaults): must be between 8000 and 96000",
        );
        assert_problem(
            |r| r.provider.expires_in_seconds = -1,
            "must be between 1 and 600",
        );
        assert_problem(
            |r| r.streaming.max_speakers = Some(11),
            "`streaming.max_speakers` = 11",
        );
        assert!(problems(|r| r.streaming.min_turn_silence = Some(0)).is_empty());
    }

    #[test]
    fn float_ranges() {
        assert_problem(
            |r| r.session.replay_speed = 1.5,
            "`session.replay_speed` = 1.5 (from the built-in defaults): must be between 1.0 and 1.25",
        );
        assert_problem(
            |r| r.streaming.vad_threshold = Some(f64::NAN),
            "must be between 0.0 and 1.0",
        );
        assert_problem(
            |r| r.session.backoff_multiplier = 0.5,
            "must be at least 1.0",
        );
    }

    #[test]
    fn durations() {
        assert_problem(
            |r| r.session.stall_timeout = "twenty".into(),
            "`session.stall_timeout` = \"twenty\"",
        );
        // Bare numbers are seconds, as on the command line.
        let mut raw = raw();
        raw.session.stall_timeout = "21".into();
        raw.session.replay_buffer = "90".into();
        let settings = validate(raw, &Provenance::defaults_only_for_tests()).expect("valid");
        assert_eq!(settings.session.stall_timeout, Duration::from_secs(21));
        assert_eq!(settings.session.replay_buffer, Duration::from_secs(90));
        assert_problem(
            |r| r.provider.timeout = "0s".into(),
            "must be longer than 0",
        );
        assert_problem(
            |r| r.session.replay_buffer = "11m".into(),
            "must be between 1s and 10m",
        );
        assert_problem(
            |r| r.session.rotation_lead = "3h".into(),
            "must be shorter than `provider.max_session_duration_seconds` (10800 s",
        );
        assert_problem(
            |r| r.session.backoff_initial = "1m".into(),
            "must not exceed `session.backoff_max`",
        );
    }

    /// Model parameters are checked for the model they apply to, and redaction's keys only with
    /// redaction on.
    #[test]
    fn model_and_redaction_keys() {
        assert_problem(
            |r| r.streaming.mode = Some("balanced".into()),
            "`streaming.mode` = \"balanced\" (from the built-in defaults): applies to U3 models only",
        );
        assert_problem(
            |r| {
                r.streaming.speech_model = "u3-rt-pro".into();
                r.streaming.mode = Some("fast".into());
            },
            "must be \"min_latency\", \"balanced\" or \"max_accuracy\"",
        );
        assert_eq!(
            problems(|r| {
                r.streaming.speech_model = "universal-3-6-pro".into();
                r.streaming.mode = Some("max_accuracy".into());
            }),
            Vec::<String>::new()
        );
        assert_problem(
            |r| r.streaming.redact_pii_policies = vec!["person_name".into()],
            "`streaming.redact_pii_policies` = (set) (from the built-in defaults): applies only with `streaming.redact_pii = true`",
        );
        assert_problem(
            |r| {
                r.streaming.redact_pii = true;
                r.streaming.redact_pii_policies = vec!["Person Name".into()];
            },
            "each policy is a name such as",
        );
        assert_problem(
            |r| {
                r.streaming.redact_pii = true;
                r.streaming.redact_pii_sub = Some("stars".into());
            },
            "must be \"hash\" or \"entity_name\"",
        );
        assert_eq!(
            problems(|r| {
                r.streaming.redact_pii = true;
                r.streaming.redact_pii_policies = vec!["person_name".into(), "phone_number".into()];
                r.streaming.redact_pii_sub = Some("entity_name".into());
                r.streaming.include_partial_turns = Some(false);
            }),
            Vec::<String>::new()
        );
    }

    #[test]
    fn urls_require_tls_off_loopback() {
        for ok in [
            "wss://example.com/v3/ws",
            "ws://127.0.0.1:8080/v3/ws",
            "ws://127.1.2.3/",
            "ws://[::1]:9/",
            "ws://LOCALHOST/",
        ] {
            assert!(
                problems(|r| r.streaming.url = Some(ok.into())).is_empty(),
                "{ok}"
            );
        }
        assert_problem(
            |r| r.streaming.url = Some("ws://example.com/v3/ws".into()),
            "ws:// is allowed only for loopback",
        );
        assert_problem(
            |r| r.streaming.url = Some("https://example.com".into()),
            "must be a URL starting with wss://",
        );
        assert_problem(
            |r| r.streaming.url = Some("not a url".into()),
            "must be a URL starting with wss:// (relative URL without a base)",
        );
        assert_problem(
            |r| r.provider.api_key.token_url = Some("http://10.0.0.1/token".into()),
            "http:// is allowed only for loopback",
        );
        assert!(
            problems(|r| r.provider.remote.url = Some("http://localhost:3000/token".into()))
                .is_empty()
        );
    }

    #[test]
    fn provider_kind_requirements() {
        assert_problem(
            |r| r.provider.kind = "remote".into(),
            "`provider.remote.url` is missing: it is required when `provider.kind` = \"remote\"",
        );
        assert_problem(
            |r| r.provider.kind = "file".into(),
            "`provider.file.path` is missing",
        );
        assert_problem(
            |r| r.provider.kind = "apikey".into(),
            "must be one of \"api-key\", \"remote\" or \"file\"",
        );
    }

    #[test]
    fn headers() {
        assert_problem(
            |r| {
                r.provider
                    .remote
                    .headers
                    .insert("Bad Name".into(), "x".into());
            },
            "the header name must be",
        );
        assert_problem(
            |r| {
                r.provider
                    .remote
                    .headers
                    .insert("X-Ok".into(), "a\nb".into());
            },
            "control characters",
        );
    }

    #[test]
    fn streaming_lists_and_text() {
        assert_problem(
            |r| r.streaming.keyterms_prompt = vec!["x".into(); 101],
            "must have at most 100 terms",
        );
        assert_problem(
            |r| r.streaming.keyterms_prompt = vec!["y".repeat(51)],
            "(this one has 51)",
        );
        assert_problem(
            |r| r.streaming.prompt = Some("p".repeat(1751)),
            "`streaming.prompt` = <1751 characters>",
        );
        assert_problem(
            |r| {
                r.streaming.min_turn_silence = Some(900);
                r.streaming.max_turn_silence = Some(800);
            },
            "must not exceed `streaming.max_turn_silence` (800)",
        );
    }

    #[test]
    fn audio_transcript_ui() {
        assert_problem(|r| r.audio.input = "file:".into(), "needs a path");
        assert_problem(
            |r| r.audio.stdin_format = "s16le:4000:1".into(),
            "rate must be an integer between 8000 and 384000",
        );
        assert_problem(|r| r.audio.chunk_ms = 20, "must be between 50 and 1000");
        assert_problem(
            |r| r.transcript.formats = vec!["pdf".into()],
            "`transcript.formats` = \"pdf\"",
        );
        assert_problem(
            |r| r.ui.theme = "dark".into(),
            "must be one of \"default\" or \"mono\"",
        );
    }

    #[test]
    fn duplicate_formats_are_dropped() {
        let mut raw = raw();
        raw.transcript.formats = vec!["srt".into(), "txt".into(), "srt".into()];
        let config = validate(raw, &Provenance::defaults_only_for_tests()).expect("test setup");
        assert_eq!(config.transcript.formats.len(), 2);
    }

    #[test]
    fn key_bindings() {
        assert_problem(
            |r| {
                r.keys.insert("help".into(), vec!["q".into()]);
            },
            "key \"q\" is bound to both `keys.help` (from the built-in defaults) and `keys.quit`",
        );
        assert_problem(
            |r| {
                r.keys.insert("help".into(), vec!["ctrl-".into()]);
            },
            "not a key",
        );
        assert!(
            problems(|r| {
                r.keys
                    .insert("help".into(), vec!["?".into(), "?".into(), "f1".into()]);
            })
            .is_empty()
        );
    }

    #[test]
    fn log_filters() {
        for ok in [
            "info",
            "WARN",
            "aai_live=debug",
            "info,aai_live::session=trace",
            "tokio[span{x=1}]=off",
        ] {
            assert_eq!(check_log_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "verbose", "aai_live=loud", "=debug", "aai live=debug"] {
            assert!(check_log_filter(bad).is_err(), "{bad:?}");
        }
        assert_problem(|r| r.log.max_files = 0, "`log.max_files` = 0");
    }

    #[test]
    fn optional_strings_must_not_be_empty() {
        assert_problem(
            |r| r.audio.device = Some(String::new()),
            "`audio.device` = \"\" (from the built-in defaults): must not be empty",
        );
        assert_problem(
            |r| r.provider.api_key.key_env = String::new(),
            "must name an environment variable",
        );
        assert!(
            problems(
                |r| (r.provider.api_key.key_env, r.provider.api_key.key_file) =
                    (String::new(), Some("/k".into()))
            )
            .is_empty()
        );
    }

    #[test]
    fn server_section() {
        let leak = |r: &mut RawConfig| r.server.limits_store = "redis://u:hunter2@h:6379/0".into();
        assert_problem(
            leak,
            "`server.limits_store` = \"redis://u:REDACTED@h:6379/0\" (from the built-in defaults): \
             must not hold a password",
        );
        assert!(problems(leak).iter().all(|m| !m.contains("hunter2")));
        assert_problem(
            |r| {
                r.server.min_session_duration_seconds = 7200;
                r.server.max_session_duration_seconds = 3600;
            },
            "`server.min_session_duration_seconds` = 7200 (from the built-in defaults): must not \
             exceed `server.max_session_duration_seconds` (3600, from the built-in defaults)",
        );
        assert!(
            problems(|r| r.server.min_session_duration_seconds = 10_800).is_empty(),
            "equal bounds are fine"
        );
        assert_problem(
            |r| r.server.tls_key = Some("/k.pem".into()),
            "`server.tls_key` = \"/k.pem\" (from the built-in defaults): needs `server.tls_cert` too",
        );
        assert!(
            problems(|r| {
                r.server.tls_cert = Some("/c.pem".into());
                r.server.tls_key = Some("/k.pem".into());
            })
            .is_empty()
        );
        assert_problem(
            |r| r.server.global_rate_limit = "0/s".into(),
            "the count must be at least 1",
        );
        assert_problem(
            |r| r.server.request_timeout = "1h".into(),
            "must be between 100ms and 10m",
        );
        assert_problem(
            |r| r.server.limits_store_password_env = Some(String::new()),
            "`server.limits_store_password_env` = \"\"",
        );
        let settings = |edit: fn(&mut RawConfig)| {
            let mut raw = raw();
            edit(&mut raw);
            validate(raw, &Provenance::defaults_only_for_tests())
                .expect("valid")
                .server
        };
        let s = settings(|r| {
            r.server.rate_limit = "off".into();
            r.server.cors_origins = vec!["https://A.example/".into()];
            r.server.listen = "[::1]:0".into();
            r.server.auth = "none".into();
        });
        assert_eq!(s.rate_limit, None);
        assert_eq!(s.cors_origins, ["https://a.example"]);
        assert!(s.listen.ip().is_loopback());
        assert_problem(
            |r| r.server.public_origin = Some("https://tokens.example/app".into()),
            "`server.public_origin` = \"https://tokens.example/app\"",
        );
        let s = settings(|r| {
            r.server.web = true;
            r.server.public_origin = Some("HTTPS://Tokens.Example:443/".into());
        });
        assert!(s.web);
        assert_eq!(s.public_origin.as_deref(), Some("https://tokens.example"));
    }
}
