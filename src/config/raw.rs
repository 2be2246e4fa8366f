//! The configuration as written: serde structs mirroring `config/default.toml` one to one.
//!
//! Values stay as the file spells them (durations and URLs as strings, numbers as `i64`) so that
//! `validate` can report a bad value with the key, the value and the rule, instead of a generic
//! serde message. `deny_unknown_fields` is a backstop: the schema check in `load` already
//! rejects unknown keys with a suggestion and the layer they came from.
//!
//! The reverse conversion (`From<&Config>`) serves `render_resolved`, which prints the effective
//! configuration in the same shape as the defaults file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use url::Url;

use super::server::LimitSetting;
use super::types::{Choice, Config, ServerSettings};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub provider: RawProvider,
    pub streaming: RawStreaming,
    pub session: RawSession,
    pub audio: RawAudio,
    pub transcript: RawTranscript,
    pub ui: RawUi,
    /// Action -> key specs. The allowed actions are the keys of `[keys]` in `default.toml`,
    /// enforced by the schema check.
    pub keys: BTreeMap<String, Vec<String>>,
    pub log: RawLog,
    pub server: RawServer,
    /// Label -> input spec (meeting mode).
    pub inputs: BTreeMap<String, String>,
    pub speakers: RawSpeakers,
    pub archive: RawArchive,
    pub feed: RawFeed,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct RawSpeakers {
    pub names: BTreeMap<String, String>,
    pub priming: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct RawArchive {
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFeed {
    pub listen: String,
    pub token_file: Option<String>,
    pub origins: Vec<String>,
    pub history_events: i64,
    pub queue_events: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    pub kind: String,
    pub expires_in_seconds: i64,
    pub max_session_duration_seconds: i64,
    pub timeout: String,
    pub api_key: RawApiKey,
    pub remote: RawRemote,
    pub file: RawFile,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKey {
    pub key_env: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemote {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_file: Option<String>,
    pub pass_lifetimes: bool,
    pub follow_server_streaming_url: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub wait: String,
    pub poll_interval: String,
    pub remove_after_use: bool,
}

#[expect(
    clippy::struct_excessive_bools,
    reason = "the service's independent on/off parameters, one field each"
)]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStreaming {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub speech_model: String,
    pub sample_rate: i64,
    pub encoding: String,
    pub format_turns: bool,
    pub token_in: String,
    pub keyterms_prompt: Vec<String>,
    pub language_detection: bool,
    pub speaker_labels: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_turn_confidence_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_turn_silence: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turn_silence: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vad_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactivity_timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_profanity: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_speakers: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    pub redact_pii: bool,
    pub redact_pii_policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact_pii_sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_partial_turns: Option<bool>,
    pub extra: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSession {
    pub rotation: bool,
    pub rotation_lead: String,
    pub begin_timeout: String,
    pub terminate_timeout: String,
    pub stall_timeout: String,
    pub healthy_after: String,
    pub backoff_initial: String,
    pub backoff_max: String,
    pub backoff_multiplier: f64,
    pub rate_limit_backoff: String,
    pub replay_buffer: String,
    pub replay_speed: f64,
    pub keepalive_interval: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudio {
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub chunk_ms: i64,
    pub r#loop: bool,
    pub stdin_format: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTranscript {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    pub formats: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUi {
    pub fps: i64,
    pub theme: String,
    pub ascii: bool,
    pub events: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    pub max_files: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: String,
    pub auth: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    pub expires_in_seconds: i64,
    pub min_expires_in_seconds: i64,
    pub max_session_duration_seconds: i64,
    pub min_session_duration_seconds: i64,
    pub rate_limit: String,
    pub global_rate_limit: String,
    pub refusal_limit: String,
    pub cors_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    pub request_timeout: String,
    pub max_in_flight: i64,
    pub max_connections: i64,
    pub public_metrics: bool,
    pub trusted_proxies: Vec<String>,
    pub limits_store: String,
    pub limits_store_failure: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_store_password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_store_password_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_store_ca: Option<String>,
    pub limits_store_prefix: String,
    pub limits_store_timeout: String,
    pub web: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_origin: Option<String>,
}

fn duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn path(p: Option<&Path>) -> Option<String> {
    p.map(|p| p.display().to_string())
}

fn url(u: Option<&Url>) -> Option<String> {
    u.map(ToString::to_string)
}

impl From<&Config> for RawConfig {
    #[expect(
        clippy::too_many_lines,
        reason = "one line per key, in the order of default.toml"
    )]
    fn from(c: &Config) -> Self {
        let (p, s, se, a) = (&c.provider, &c.streaming, &c.session, &c.audio);
        Self {
            provider: RawProvider {
                kind: p.kind.as_str().to_owned(),
                expires_in_seconds: p.expires_in_seconds.into(),
                max_session_duration_seconds: p.max_session_duration_seconds.into(),
                timeout: duration(p.timeout),
                api_key: RawApiKey {
                    key_env: p.api_key.key_env.clone(),
                    key_file: path(p.api_key.key_file.as_deref()),
                    region: p.api_key.region.as_str().to_owned(),
                    token_url: url(p.api_key.token_url.as_ref()),
                },
                remote: RawRemote {
                    url: url(p.remote.url.as_ref()),
                    method: p.remote.method.as_str().to_owned(),
                    headers: p.remote.headers.clone(),
                    bearer_env: p.remote.bearer_env.clone(),
                    bearer_file: path(p.remote.bearer_file.as_deref()),
                    pass_lifetimes: p.remote.pass_lifetimes,
                    follow_server_streaming_url: p.remote.follow_server_streaming_url,
                },
                file: RawFile {
                    path: path(p.file.path.as_deref()),
                    wait: duration(p.file.wait),
                    poll_interval: duration(p.file.poll_interval),
                    remove_after_use: p.file.remove_after_use,
                },
            },
            streaming: RawStreaming {
                url: url(s.url.as_ref()),
                speech_model: s.params.speech_model.clone(),
                sample_rate: s.params.sample_rate.into(),
                encoding: s.params.encoding.as_str().to_owned(),
                format_turns: s.params.format_turns,
                token_in: s.token_in.as_str().to_owned(),
                keyterms_prompt: s.params.keyterms_prompt.clone(),
                language_detection: s.params.language_detection,
                speaker_labels: s.params.speaker_labels,
                end_of_turn_confidence_threshold: s.params.end_of_turn_confidence_threshold,
                min_turn_silence: s.params.min_turn_silence.map(Into::into),
                max_turn_silence: s.params.max_turn_silence.map(Into::into),
                vad_threshold: s.params.vad_threshold,
                inactivity_timeout: s.params.inactivity_timeout.map(Into::into),
                filter_profanity: s.params.filter_profanity,
                max_speakers: s.params.max_speakers.map(Into::into),
                prompt: s.params.prompt.clone(),
                mode: s.params.mode.clone(),
                redact_pii: s.params.redact_pii,
                redact_pii_policies: s.params.redact_pii_policies.clone(),
                redact_pii_sub: s.params.redact_pii_sub.clone(),
                include_partial_turns: s.params.include_partial_turns,
                extra: s.params.extra.clone(),
            },
            session: RawSession {
                rotation: se.rotation,
                rotation_lead: duration(se.rotation_lead),
                begin_timeout: duration(se.begin_timeout),
                terminate_timeout: duration(se.terminate_timeout),
                stall_timeout: duration(se.stall_timeout),
                healthy_after: duration(se.healthy_after),
                backoff_initial: duration(se.backoff_initial),
                backoff_max: duration(se.backoff_max),
                backoff_multiplier: se.backoff_multiplier,
                rate_limit_backoff: duration(se.rate_limit_backoff),
                replay_buffer: duration(se.replay_buffer),
                replay_speed: se.replay_speed,
                keepalive_interval: duration(se.keepalive_interval),
            },
            audio: RawAudio {
                input: a.input.to_string(),
                device: a.device.clone(),
                chunk_ms: a.chunk_ms.into(),
                r#loop: a.loop_input,
                stdin_format: a.stdin_format.to_string(),
            },
            transcript: RawTranscript {
                dir: path(c.transcript.dir.as_deref()),
                formats: c
                    .transcript
                    .formats
                    .iter()
                    .map(|f| f.as_str().to_owned())
                    .collect(),
            },
            ui: RawUi {
                fps: c.ui.fps.into(),
                theme: c.ui.theme.as_str().to_owned(),
                ascii: c.ui.ascii,
                events: c.ui.events,
            },
            keys: c
                .keys
                .bindings
                .iter()
                .map(|(action, keys)| {
                    (
                        action.clone(),
                        keys.iter().map(ToString::to_string).collect(),
                    )
                })
                .collect(),
            log: RawLog {
                level: c.log.level.clone(),
                dir: path(c.log.dir.as_deref()),
                max_files: c.log.max_files.into(),
            },
            server: RawServer::from(&c.server),
            inputs: c
                .inputs
                .iter()
                .map(|s| (s.label.as_str().to_owned(), s.spec.to_string()))
                .collect(),
            speakers: RawSpeakers {
                names: c.speakers.names.clone(),
                priming: duration(c.speakers.priming),
            },
            archive: RawArchive {
                enabled: c.archive.enabled,
            },
            feed: RawFeed {
                listen: c.feed.listen.map_or_else(String::new, |a| a.to_string()),
                token_file: path(c.feed.token_file.as_deref()),
                origins: c.feed.origins.clone(),
                history_events: c.feed.history_events.into(),
                queue_events: c.feed.queue_events.into(),
            },
        }
    }
}

impl From<&ServerSettings> for RawServer {
    fn from(s: &ServerSettings) -> Self {
        let rate = |r| LimitSetting(r).to_string();
        let list = |items: &[_]| items.iter().map(ToString::to_string).collect();
        Self {
            listen: s.listen.to_string(),
            auth: s.auth.as_str().to_owned(),
            credentials: path(s.credentials.as_deref()),
            expires_in_seconds: s.expires_in_seconds.into(),
            min_expires_in_seconds: s.min_expires_in_seconds.into(),
            max_session_duration_seconds: s.max_session_duration_seconds.into(),
            min_session_duration_seconds: s.min_session_duration_seconds.into(),
            rate_limit: rate(s.rate_limit),
            global_rate_limit: rate(s.global_rate_limit),
            refusal_limit: rate(s.refusal_limit),
            cors_origins: s.cors_origins.clone(),
            tls_cert: path(s.tls_cert.as_deref()),
            tls_key: path(s.tls_key.as_deref()),
            request_timeout: duration(s.request_timeout),
            max_in_flight: s.max_in_flight.into(),
            max_connections: s.max_connections.into(),
            public_metrics: s.public_metrics,
            trusted_proxies: list(&s.trusted_proxies),
            limits_store: s.limits_store.to_string(),
            limits_store_failure: s.limits_store_failure.as_str().to_owned(),
            limits_store_password_env: s.limits_store_password_env.clone(),
            limits_store_password_file: path(s.limits_store_password_file.as_deref()),
            limits_store_ca: path(s.limits_store_ca.as_deref()),
            limits_store_prefix: s.limits_store_prefix.clone(),
            limits_store_timeout: duration(s.limits_store_timeout),
            web: s.web,
            public_origin: s.public_origin.clone(),
        }
    }
}
