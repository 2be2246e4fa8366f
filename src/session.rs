//! The session supervisor: streams audio to the service, re-mints and reconnects when a session
//! ends, rotates to a successor session before expiry, and replays audio after unplanned drops,
//! so no audio and no words are lost.
//!
//! `machine` decides (pure); `supervisor` carries out its effects (sockets, timers, audio);
//! `connection` is one WebSocket (through the HTTP proxy of `proxy`, if any); `replay` the audio
//! buffer; `ledger` the accounts. What a run reports is `crate::events`.

pub mod backoff;
pub mod connection;
pub mod ledger;
pub mod machine;
pub mod proxy;
pub mod replay;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use url::Url;

pub use supervisor::{AudioFeed, Outcome, SessionCommand, Supervisor, SupervisorOptions};

use crate::config::{Config, ProviderKind};
use crate::events::SessionEvent;
use crate::protocol::StreamingParams;
use crate::provider::PreMinter;
use crate::transcript::Transcript;

/// The streaming endpoint: `[streaming] url`, else the provider's region.
pub fn endpoint(config: &Config) -> Url {
    config
        .streaming
        .url
        .clone()
        .unwrap_or_else(|| config.provider.api_key.region.ws_url())
}

/// Connection parameters from `[streaming]`.
pub fn params(config: &Config) -> StreamingParams {
    let s = &config.streaming;
    StreamingParams {
        sample_rate: s.sample_rate,
        encoding: s.encoding,
        speech_model: s.speech_model.clone(),
        format_turns: s.format_turns,
        end_of_turn_confidence_threshold: s.end_of_turn_confidence_threshold,
        min_turn_silence: s.min_turn_silence,
        max_turn_silence: s.max_turn_silence,
        vad_threshold: s.vad_threshold,
        keyterms_prompt: s.keyterms_prompt.clone(),
        prompt: s.prompt.clone(),
        filter_profanity: s.filter_profanity,
        language_detection: s.language_detection,
        inactivity_timeout: s.inactivity_timeout,
        speaker_labels: s.speaker_labels,
        max_speakers: s.max_speakers,
        extra: s.extra.clone(),
    }
}

impl SupervisorOptions {
    pub fn from_config(config: &Config) -> Self {
        let s = &config.session;
        Self {
            endpoint: endpoint(config),
            params: params(config),
            token_in: config.streaming.token_in,
            machine: machine::MachineConfig {
                rotation: s.rotation,
                rotation_lead: s.rotation_lead,
                begin_timeout: s.begin_timeout,
                drain_timeout: s.terminate_timeout,
                healthy_after: s.healthy_after,
                backoff: backoff::BackoffPolicy {
                    initial: s.backoff_initial,
                    max: s.backoff_max,
                    multiplier: s.backoff_multiplier,
                    rate_limited: s.rate_limit_backoff,
                },
                ..machine::MachineConfig::default()
            },
            replay_buffer: s.replay_buffer,
            replay_speed: s.replay_speed,
            stall_timeout: s.stall_timeout,
            chunk_ms: config.audio.chunk_ms,
            emulator_hints: false,
            // Only the API-key provider asks for a session length itself; a token server or a
            // token file decided on theirs.
            session_duration: matches!(config.provider.kind, ProviderKind::ApiKey).then(|| {
                Duration::from_secs(u64::from(config.provider.max_session_duration_seconds))
            }),
            seed: rand::random(),
            connector: connection::websocket(),
        }
    }
}

/// A running supervisor.
pub struct SessionHandle {
    pub commands: mpsc::UnboundedSender<SessionCommand>,
    pub events: mpsc::UnboundedReceiver<SessionEvent>,
    pub task: tokio::task::JoinHandle<(Outcome, Transcript)>,
}

/// Spawn the supervisor on the current runtime. It waits for [`SessionCommand::Start`].
pub fn spawn(
    options: SupervisorOptions,
    premint: Arc<PreMinter>,
    transcript: Transcript,
    audio: impl Into<AudioFeed>,
) -> SessionHandle {
    let (event_tx, events) = mpsc::unbounded_channel();
    let (commands, command_rx) = mpsc::unbounded_channel();
    let supervisor = Supervisor::new(options, premint, transcript, event_tx);
    let task = tokio::spawn(supervisor.run(audio.into(), command_rx));
    SessionHandle {
        commands,
        events,
        task,
    }
}
