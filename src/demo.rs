//! `aai-live demo`: the one-command first run. Starts the emulator in-process on a free loopback
//! port with a demo key and the word script of a bundled recording, points the `api-key`
//! provider and the streaming endpoint at it, shortens every lifetime so pre-minting, the
//! countdowns and a rotation all happen within the first minute, and streams the recording in a
//! loop (or the microphone with `--input mic`). Nothing leaves the machine.
//!
//! The recording (`assets/demo.wav`) and its script (`assets/demo-script.json`) are built into
//! the binary; `assets/make-demo.sh` regenerates both.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::config::{Config, InputSpec, ProviderKind};
use crate::emulator::{self, EmulatorConfig, RunningEmulator, Script};

/// The key the demo's emulator accepts. Not a secret: it opens nothing but the local emulator.
pub const DEMO_KEY: &str = "aai-live-demo-key";
/// The variable name the demo's provider reads its key from. The demo answers it itself
/// (`provider::build_with`); the process environment is never read or written for it.
pub const DEMO_KEY_ENV: &str = "AAI_LIVE_DEMO_KEY";
/// 16 kHz mono s16 speech, a few sentences about aai-live.
pub const WAV: &[u8] = include_bytes!("../assets/demo.wav");
/// The emulator's word script for [`WAV`] (docs/emulator.md, "Scripts").
pub const SCRIPT: &str = include_str!("../assets/demo-script.json");
/// Sessions end after a minute, so a rotation happens within the first one.
pub const MAX_SESSION_SECONDS: u32 = 60;
/// Tokens must be redeemed within this, so their countdown is visible.
pub const TOKEN_SECONDS: u32 = 30;
/// The successor is prepared this long before expiry (at 0:40 of each session).
pub const ROTATION_LEAD: Duration = Duration::from_secs(20);
/// How the bundled input is shown.
pub const INPUT_LABEL: &str = "demo.wav (bundled, looping)";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the bundled demo script is invalid: {0}")]
    Script(String),
    #[error("cannot write the demo files to {path}: {source}")]
    Files {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the demo emulator: {0}")]
    Emulator(#[from] emulator::EmulatorError),
}

/// The bundled word script, checked.
pub fn script() -> Result<Script, DemoError> {
    let script: Script =
        serde_json::from_str(SCRIPT).map_err(|e| DemoError::Script(e.to_string()))?;
    script.validate().map_err(DemoError::Script)?;
    Ok(script)
}

/// A private temporary directory with the demo recording (the audio input reads files) and the
/// demo key (for `demo --headless`, whose provider reads key files); removed on drop.
#[derive(Debug)]
pub struct DemoFiles {
    dir: PathBuf,
}

impl DemoFiles {
    pub fn create() -> Result<Self, DemoError> {
        let dir = std::env::temp_dir().join(format!("aai-live-demo-{}", std::process::id()));
        let shown = dir.display().to_string();
        let err = |source| DemoError::Files {
            path: shown.clone(),
            source,
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(err)?;
        let files = Self { dir };
        std::fs::write(files.wav(), WAV).map_err(err)?;
        write_private(&files.key(), DEMO_KEY).map_err(err)?;
        Ok(files)
    }

    pub fn wav(&self) -> PathBuf {
        self.dir.join("demo.wav")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("demo.key")
    }
}

impl Drop for DemoFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Write a file only its owner can read (no "readable by others" warning for the key file).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, text.as_bytes())
}

/// A running demo: the emulator and the files it streams.
#[derive(Debug)]
pub struct Demo {
    pub emulator: RunningEmulator,
    pub files: DemoFiles,
    /// The bundled recording is the input (not `--input ...`).
    pub bundled: bool,
}

impl Demo {
    /// Start the emulator on a free loopback port. With the bundled input it knows the
    /// recording's words; with another input (`--input mic`) it uses its fixed word list.
    pub async fn start(bundled: bool) -> Result<Self, DemoError> {
        let files = DemoFiles::create()?;
        let script = if bundled {
            Some(Arc::new(script()?))
        } else {
            None
        };
        // The default pacing check stays on: the demo streams in real time, as a client must.
        let config = EmulatorConfig {
            script,
            ..EmulatorConfig::with_key(DEMO_KEY)
        };
        let emulator = emulator::start(config, "127.0.0.1:0", None).await?;
        tracing::info!(addr = %emulator.addr, bundled, "demo emulator started");
        Ok(Self {
            emulator,
            files,
            bundled,
        })
    }

    /// Point `config` at this emulator and shorten the lifetimes (see the module docs).
    pub fn configure(&self, config: &mut Config) {
        configure(
            config,
            &self.emulator.token_url(),
            &self.emulator.ws_url(),
            self.bundled.then(|| self.files.wav()).as_deref(),
        );
    }

    /// The environment as the demo's provider sees it: the demo key under [`DEMO_KEY_ENV`],
    /// everything else from the process.
    pub fn env(name: &str) -> Option<String> {
        if name == DEMO_KEY_ENV {
            Some(DEMO_KEY.to_owned())
        } else {
            crate::provider::process_env(name)
        }
    }

    pub async fn shutdown(self) {
        self.emulator.shutdown().await;
    }
}

/// Rewrite the parts of `config` the demo decides: the provider and the endpoint (the
/// emulator), the lifetimes, turn formatting, the events pane, and the input (`wav` when bundled, looping).
pub fn configure(config: &mut Config, token_url: &str, ws_url: &str, wav: Option<&Path>) {
    let provider = &mut config.provider;
    provider.kind = ProviderKind::ApiKey;
    provider.api_key.key_file = None;
    DEMO_KEY_ENV.clone_into(&mut provider.api_key.key_env);
    provider.api_key.token_url = Url::parse(token_url).ok();
    provider.expires_in_seconds = TOKEN_SECONDS;
    provider.max_session_duration_seconds = MAX_SESSION_SECONDS;
    config.streaming.url = Url::parse(ws_url).ok();
    config.streaming.params.format_turns = true;
    config.session.rotation_lead = ROTATION_LEAD;
    // The events pane tells the story (tokens, rotations, hand-overs) from the first second.
    config.ui.events = true;
    if let Some(wav) = wav {
        config.audio.input = InputSpec::File(wav.to_owned());
        config.audio.loop_input = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_script_matches_the_recording() {
        let script = script().expect("valid script");
        let spec = hound::WavReader::new(std::io::Cursor::new(WAV))
            .expect("wav")
            .spec();
        assert_eq!(
            (spec.sample_rate, spec.channels, spec.bits_per_sample),
            (16_000, 1, 16)
        );
        let samples = (WAV.len() - 44) as u64 / 2;
        assert_eq!(script.loop_ms, Some(samples * 1000 / 16_000));
        assert!(script.words().len() >= 20);
        assert!(WAV.len() < 1_000_000);
    }

    #[test]
    fn configure_points_everything_at_the_emulator() {
        let mut config = Config::default();
        configure(
            &mut config,
            "http://127.0.0.1:9/v3/token",
            "ws://127.0.0.1:9/v3/ws",
            Some(Path::new("/tmp/x.wav")),
        );
        assert_eq!(config.provider.kind, ProviderKind::ApiKey);
        assert_eq!(config.provider.max_session_duration_seconds, 60);
        assert!(config.session.rotation_lead < Duration::from_secs(60));
        assert_eq!(
            config.audio.input,
            InputSpec::File(PathBuf::from("/tmp/x.wav"))
        );
        let built = crate::provider::build_with(&config.provider, &Demo::env).expect("provider");
        assert_eq!(built.provider.name(), "api-key");
        assert!(!built.provider.source().contains(DEMO_KEY));
    }
}
