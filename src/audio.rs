//! Audio input: turns a microphone, a WAV file, raw PCM on stdin or from a command, system audio
//! (a PulseAudio / PipeWire monitor) or a generated test signal into exact, offset-stamped chunks
//! of mono 16-bit PCM at the service's sample rate, with a level meter and running statistics
//! beside them.
//!
//! ```text
//!  source                       convert (per source)                       out
//!  ───────────────────────────  ─────────────────────────────────────────  ─────────────────────
//!  mic: cpal callback ─▶ queue ─▶ downmix ─▶ resample ─▶ i16 ─▶ chunker ─▶ chunks (mpsc, bounded)
//!  file: WAV (hound)  ─┐          (convert.rs) (resample.rs)   (chunker.rs)  level  (watch)
//!  stdin: raw PCM     ─┤                                                     stats  (watch)
//!  cmd: its stdout    ─┼─ pulled by a task that paces chunks at real time
//!  test:* signals     ─┘   (pull.rs)
//!  monitor: parec /   ──── pulled by the same task, released as they arrive (live)
//!           pw-record      (monitor.rs, command.rs)
//! ```
//!
//! The microphone runs on its own thread: the cpal callback only copies into a pre-allocated
//! ring ([`queue`]) and counts what it cannot queue, never blocking and never allocating.
//! Files, stdin, commands and test signals are pulled by one async task that releases each chunk
//! when its audio would have finished arriving live, so the service (which rejects audio faster
//! than real time) sees a live-like stream, and tests can check the timing under tokio's paused
//! clock. System audio is live already: its chunks go out as soon as they are whole.
//!
//! Pause and mute are the session's business: the source keeps running, and the session decides
//! what to send ([`AudioChunk::muted`] keeps offsets while dropping the sound). See
//! `docs/audio.md`.

pub mod chunker;
#[cfg(unix)]
pub mod command;
pub mod convert;
pub mod devices;
pub mod meter;
#[cfg(unix)]
pub mod monitor;
mod pull;
pub mod queue;
pub mod resample;
pub mod signal;
pub mod stdin;
pub mod wav;

#[cfg(feature = "mic")]
mod capture;

use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{InputSpec, StdinFormat};
use crate::protocol::{self, Encoding};

pub use chunker::Chunker;
pub use convert::Converter;
pub use devices::{DeviceInfo, DeviceReport, SourceInfo, SystemSources};
pub use meter::Level;
pub use resample::StreamResampler;

/// One chunk of mono PCM at the target rate, exactly `chunk_ms` long (the last one of a finite
/// input may be shorter).
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    /// Samples since the start of the stream (the first sample of this chunk). Chunks are
    /// contiguous: the next chunk's offset is this one's plus `samples.len()`, across file loops
    /// and microphone overflows alike, so offsets are the service's audio clock.
    pub offset: u64,
    pub samples: Vec<i16>,
    /// When the chunk was complete: for the microphone, when its last sample came out of the
    /// conversion (a few milliseconds after capture); for a paced file, stdin or test signal,
    /// when it was released.
    pub captured_at: tokio::time::Instant,
    /// Samples (at the output rate) the capture dropped just before this chunk because the
    /// conversion fell behind the microphone: audio of the stream that never became a chunk,
    /// reported lost by the session. Always 0 for files, stdin and test signals.
    pub dropped_before: u64,
    /// NaN or ±Inf samples of a float source that the conversion turned into silence since the
    /// previous chunk: the session warns about them once (`warning` event, stderr).
    pub non_finite: u64,
}

impl AudioChunk {
    /// Offset one past the last sample.
    pub fn end(&self) -> u64 {
        self.offset + self.samples.len() as u64
    }

    /// The same stretch of the stream with the sound replaced by silence: what a muted input
    /// sends when the session chooses to keep audio flowing.
    #[must_use]
    pub fn muted(mut self) -> Self {
        self.samples.fill(0);
        self
    }

    /// The chunk on the wire.
    pub fn encode(&self, encoding: Encoding) -> Vec<u8> {
        encode(&self.samples, encoding)
    }
}

/// How a pulled input (file, stdin, test signal) is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pace {
    /// Each chunk when its audio would have finished arriving live. The service closes the
    /// session when audio arrives faster than real time.
    #[default]
    RealTime,
    /// As fast as the consumer takes it. Only for a server known to tolerate it: the emulator
    /// with its pacing check switched off (`aai-live emulate --no-pace-check`).
    Unpaced,
}

/// Everything [`open`] needs besides the input itself.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioOptions {
    /// Output sample rate in Hz (`streaming.sample_rate`).
    pub sample_rate: u32,
    /// Audio per chunk in milliseconds (`audio.chunk_ms`, 50–1000 as the service requires).
    pub chunk_ms: u32,
    pub pace: Pace,
    /// Start a file again at its end (`audio.loop`).
    pub loop_input: bool,
    /// Microphone as listed by `aai-live devices` (`audio.device`); `None` = the default.
    pub device: Option<String>,
    /// Layout of raw PCM on stdin (`audio.stdin_format`).
    pub stdin_format: StdinFormat,
    /// Seed of `test:noise`.
    pub seed: u64,
}

impl AudioOptions {
    /// The options a configuration asks for, paced at real time.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            sample_rate: config.streaming.params.sample_rate,
            chunk_ms: config.audio.chunk_ms,
            pace: Pace::RealTime,
            loop_input: config.audio.loop_input,
            device: config.audio.device.clone(),
            stdin_format: config.audio.stdin_format,
            seed: 0,
        }
    }

    /// Samples per chunk, rounded up so that a chunk is never shorter than `chunk_ms` (at
    /// 22050 Hz, 50 ms is 1102.5 samples; 1102 would break the service's 50 ms minimum).
    pub fn chunk_samples(&self) -> usize {
        (u64::from(self.sample_rate) * u64::from(self.chunk_ms)).div_ceil(1000) as usize
    }

    fn validate(&self) -> Result<(), AudioError> {
        if !(1000..=MAX_RATE).contains(&self.sample_rate) {
            return Err(AudioError::InvalidOptions(format!(
                "sample rate {} Hz is out of range (1000-{MAX_RATE})",
                self.sample_rate
            )));
        }
        if !(protocol::audio::MIN_CHUNK_MS..=protocol::audio::MAX_CHUNK_MS).contains(&self.chunk_ms)
        {
            return Err(AudioError::InvalidOptions(format!(
                "chunk_ms {} is out of range: the service takes {}-{} ms per message",
                self.chunk_ms,
                protocol::audio::MIN_CHUNK_MS,
                protocol::audio::MAX_CHUNK_MS
            )));
        }
        Ok(())
    }
}

impl Default for AudioOptions {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            chunk_ms: 50,
            pace: Pace::RealTime,
            loop_input: false,
            device: None,
            stdin_format: StdinFormat {
                sample: crate::config::SampleFormat::S16le,
                rate: 16_000,
                channels: 1,
            },
            seed: 0,
        }
    }
}

/// Highest sample rate accepted anywhere in the pipeline.
pub const MAX_RATE: u32 = 384_000;

/// The shape of the audio as the source delivers it, before conversion.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceFormat {
    pub sample_rate: u32,
    pub channels: u16,
    /// Sample encoding as the source names it: `i16`, `i24`, `f32`, `u8`…
    pub sample: String,
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} Hz {} ch",
            self.sample, self.sample_rate, self.channels
        )
    }
}

/// How an input ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputEnd {
    /// A finite input (file without loop, stdin) reached its end; every sample was delivered.
    Finished,
    /// The input failed (device gone, read error); the message says why.
    Failed(String),
    /// Stopped by dropping the [`AudioInput`] or its chunk receiver.
    Stopped,
}

/// Running statistics of an input, published as a latest-value channel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AudioStats {
    /// Same as [`AudioInput::name`].
    pub input: String,
    /// The source's own format (before downmix and resampling).
    pub native: SourceFormat,
    /// Output sample rate.
    pub sample_rate: u32,
    /// Chunks and samples delivered so far.
    pub chunks: u64,
    pub samples: u64,
    /// Native frames lost because the conversion fell behind the microphone (queue full). Never
    /// silent: also logged, at most once a second.
    pub dropped_frames: u64,
    /// How many separate overflow episodes there were.
    pub overflows: u64,
    /// Times a looping file started again.
    pub loops: u64,
    /// NaN or ±Inf samples the converter turned into silence (float input only).
    pub non_finite: u64,
    /// `Some` once the input has ended.
    pub ended: Option<InputEnd>,
}

impl AudioStats {
    /// Seconds of audio delivered.
    pub fn seconds(&self) -> f64 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        self.samples as f64 / f64::from(self.sample_rate)
    }
}

/// A running input. Chunks arrive on `chunks`; dropping the `AudioInput` (or just the chunk
/// receiver) stops the source: the microphone is closed, files and stdin stop being read.
///
/// The fields can be moved out (`session::spawn(…, input.chunks)`); the source then runs for as
/// long as the rest of the `AudioInput` is alive, and stops when it is dropped.
pub struct AudioInput {
    /// Bounded; closes at the end of a finite input, on failure, or when stopped. Check
    /// `stats.borrow().ended` for the reason.
    pub chunks: mpsc::Receiver<AudioChunk>,
    /// Level of the latest chunk.
    pub level: watch::Receiver<Level>,
    pub stats: watch::Receiver<AudioStats>,
    /// `microphone: <device>`, `file: <path>`, `stdin`, `test:<signal>`, `command: <line>` or
    /// `system audio: <source>`.
    pub name: String,
    stop: CancellationToken,
    _guard: DropGuard,
}

impl AudioInput {
    /// Stop the source now (dropping does the same).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The chunks, moved out (to a supervisor); the source keeps running while `self` lives.
    pub fn take_chunks(&mut self) -> mpsc::Receiver<AudioChunk> {
        std::mem::replace(&mut self.chunks, mpsc::channel(1).1)
    }

    /// The source's own format.
    pub fn native_format(&self) -> SourceFormat {
        self.stats.borrow().native.clone()
    }
}

impl fmt::Debug for AudioInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioInput")
            .field("name", &self.name)
            .field("stats", &*self.stats.borrow())
            .finish_non_exhaustive()
    }
}

/// Errors of the audio module. Messages name the input and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error(
        "this build of aai-live has no microphone support (it was built without the `mic` \
         feature); use input \"file:PATH\", \"stdin\" or \"test:tone\", or rebuild with the \
         default features"
    )]
    NoMicSupport,
    #[error(
        "no input device matches {wanted:?}{suggestion}; available: {available} (see `aai-live devices`)"
    )]
    DeviceNotFound {
        wanted: String,
        /// Empty, or `"; did you mean …?"`.
        suggestion: String,
        available: String,
    },
    #[error("{wanted:?} matches several input devices: {matches}; use the full ID")]
    DeviceAmbiguous { wanted: String, matches: String },
    #[error("the microphone {device} cannot be used: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    #[error("cannot list audio devices: {0}")]
    Devices(String),
    #[error("cannot read {path}: the file does not exist")]
    FileNotFound { path: PathBuf },
    #[error("cannot open {path}: {source}")]
    FileOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a WAV file: {reason}")]
    NotWav { path: PathBuf, reason: String },
    #[error("{path} is truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    #[error("{path} uses a WAV format aai-live cannot read: {detail}")]
    UnsupportedWav { path: PathBuf, detail: String },
    #[error("{path} contains no audio")]
    EmptyFile { path: PathBuf },
    #[error("reading {what} failed: {detail}")]
    Read { what: String, detail: String },
    #[error("invalid audio options: {0}")]
    InvalidOptions(String),
    #[error("the resampler failed: {0}")]
    Resampler(String),
    #[error("cannot run {command}: {reason}")]
    CommandStart { command: String, reason: String },
    /// A command input (or the system-audio recorder) ended badly: `how` (`exited with status
    /// 3`), then `: <its last line on stderr>` or ` (nothing on stderr)`. Terminal-safe.
    #[error("{command} {how}{stderr}")]
    CommandFailed {
        command: String,
        how: String,
        stderr: String,
    },
    #[error("system audio cannot be captured: {reason}")]
    SystemAudio { reason: String },
    #[error(
        "no PulseAudio/PipeWire source matches {wanted:?}{suggestion}; available: {available} (see `aai-live devices`)"
    )]
    SourceNotFound {
        wanted: String,
        /// Empty, or `"; did you mean …?"`.
        suggestion: String,
        available: String,
    },
    #[error("{wanted:?} matches several PulseAudio/PipeWire sources: {matches}; use the full name")]
    SourceAmbiguous { wanted: String, matches: String },
    #[error("{0} inputs need a Unix system (Linux)")]
    NotOnThisPlatform(&'static str),
}

/// Encode samples for the wire: little-endian s16, or G.711 µ-law.
pub fn encode(samples: &[i16], encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::PcmS16le => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
        Encoding::PcmMulaw => samples
            .iter()
            .map(|&s| protocol::audio::mulaw_encode(s))
            .collect(),
    }
}

/// Start an input. Must be called inside a tokio runtime. Errors that can be known up front
/// (missing file, no such device, bad options) are returned here; later failures end the chunk
/// stream and show in `stats.ended`.
pub async fn open(input: &InputSpec, options: &AudioOptions) -> Result<AudioInput, AudioError> {
    options.validate()?;
    match input {
        InputSpec::Mic(None) => open_mic(options).await,
        // The spec's device wins over `audio.device` / `--device`.
        InputSpec::Mic(Some(device)) => {
            let options = AudioOptions {
                device: Some(device.clone()),
                ..options.clone()
            };
            open_mic(&options).await
        }
        InputSpec::File(path) => {
            let source = wav::WavSource::open(path, options.loop_input)?;
            let name = format!("file: {}", path.display());
            pull::spawn(pull::Source::Wav(Box::new(source)), name, options)
        }
        InputSpec::Stdin => {
            open_raw_reader(std::io::stdin(), "stdin", options.stdin_format, options)
        }
        InputSpec::Test(signal) => {
            let name = format!("test:{signal}");
            let source = signal::SignalSource::new(*signal, options.seed, options.sample_rate);
            pull::spawn(pull::Source::Signal(source), name, options)
        }
        InputSpec::Monitor(source) => open_monitor(source.as_deref(), options).await,
        InputSpec::Command(command) => open_command(command, options),
    }
}

/// `cmd:FORMAT:COMMAND`: the command's standard output, paced like stdin (it may be a decoder
/// running faster than real time).
#[cfg(unix)]
fn open_command(
    spec: &crate::config::CommandSpec,
    options: &AudioOptions,
) -> Result<AudioInput, AudioError> {
    let source = command::CommandSource::spawn(&spec.argv, &spec.line, spec.format, false)?;
    let name = format!("command: {}", crate::untrusted::for_terminal(&spec.line));
    pull::spawn(pull::Source::Command(Box::new(source)), name, options)
}

#[cfg(not(unix))]
fn open_command(
    _spec: &crate::config::CommandSpec,
    _options: &AudioOptions,
) -> Result<AudioInput, AudioError> {
    Err(AudioError::NotOnThisPlatform("cmd:"))
}

#[cfg(unix)]
async fn open_monitor(
    source: Option<&str>,
    options: &AudioOptions,
) -> Result<AudioInput, AudioError> {
    monitor::open(source, options).await
}

#[cfg(not(unix))]
#[expect(clippy::unused_async, reason = "same signature as the Unix build")]
async fn open_monitor(
    _source: Option<&str>,
    _options: &AudioOptions,
) -> Result<AudioInput, AudioError> {
    Err(AudioError::NotOnThisPlatform("monitor"))
}

/// The PulseAudio / PipeWire sources `--input monitor:NAME` can record, for `aai-live devices`.
#[cfg(unix)]
pub fn system_sources() -> SystemSources {
    monitor::system_sources()
}

/// The PulseAudio / PipeWire sources `--input monitor:NAME` can record, for `aai-live devices`.
#[cfg(not(unix))]
pub fn system_sources() -> SystemSources {
    SystemSources::Unsupported
}

/// Raw PCM in `format` from any reader, read on its own thread: what `input = "stdin"` does with
/// the process's stdin. A trailing partial frame at the end is dropped (and logged).
pub fn open_raw_reader<R: Read + Send + 'static>(
    reader: R,
    name: &str,
    format: StdinFormat,
    options: &AudioOptions,
) -> Result<AudioInput, AudioError> {
    options.validate()?;
    let source = stdin::RawSource::spawn(reader, format, name);
    pull::spawn(
        pull::Source::Raw(Box::new(source)),
        name.to_owned(),
        options,
    )
}

#[cfg(feature = "mic")]
async fn open_mic(options: &AudioOptions) -> Result<AudioInput, AudioError> {
    capture::open(options).await
}

#[cfg(not(feature = "mic"))]
#[expect(
    clippy::unused_async,
    reason = "same signature as the microphone build"
)]
async fn open_mic(_options: &AudioOptions) -> Result<AudioInput, AudioError> {
    Err(AudioError::NoMicSupport)
}

/// Input devices, for `aai-live devices` and for choosing `--device`.
pub fn list_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    Ok(device_report()?.devices)
}

/// Input devices plus what the system says about its sound hardware.
#[cfg(feature = "mic")]
pub fn device_report() -> Result<DeviceReport, AudioError> {
    capture::device_report()
}

/// Input devices plus what the system says about its sound hardware.
#[cfg(not(feature = "mic"))]
pub fn device_report() -> Result<DeviceReport, AudioError> {
    Err(AudioError::NoMicSupport)
}

/// The channels and the stop switch shared by every kind of input.
pub(crate) struct Outputs {
    pub chunks: mpsc::Sender<AudioChunk>,
    pub level: watch::Sender<Level>,
    pub stats: watch::Sender<AudioStats>,
    pub stop: CancellationToken,
}

impl Outputs {
    /// Create the channels; returns the sending half and the [`AudioInput`] to hand out.
    pub(crate) fn new(
        name: String,
        native: SourceFormat,
        options: &AudioOptions,
    ) -> (Self, AudioInput) {
        // Room for about two seconds: enough to ride out a busy consumer without letting a
        // stalled one hide behind a deep queue (a live source then counts overflows instead).
        let capacity = (2000 / options.chunk_ms.max(1)).max(4) as usize;
        let (chunks_tx, chunks_rx) = mpsc::channel(capacity);
        let (level_tx, level_rx) = watch::channel(Level::default());
        let (stats_tx, stats_rx) = watch::channel(AudioStats {
            input: name.clone(),
            native,
            sample_rate: options.sample_rate,
            ..AudioStats::default()
        });
        let stop = CancellationToken::new();
        let input = AudioInput {
            chunks: chunks_rx,
            level: level_rx,
            stats: stats_rx,
            name,
            stop: stop.clone(),
            _guard: stop.clone().drop_guard(),
        };
        (
            Self {
                chunks: chunks_tx,
                level: level_tx,
                stats: stats_tx,
                stop,
            },
            input,
        )
    }

    /// Record a chunk about to be sent: level and counters.
    pub(crate) fn account(&self, chunk: &AudioChunk) {
        self.level.send_replace(meter::measure(&chunk.samples));
        self.stats.send_modify(|s| {
            s.chunks += 1;
            s.samples += chunk.samples.len() as u64;
        });
    }

    /// Publish the converter's count of non-finite samples (when it changed).
    pub(crate) fn non_finite(&self, count: u64) {
        self.stats.send_if_modified(|s| {
            let changed = s.non_finite != count;
            s.non_finite = count;
            changed
        });
    }

    pub(crate) fn end(&self, end: InputEnd) {
        match &end {
            InputEnd::Failed(reason) => {
                tracing::warn!(target: "aai_live::audio", %reason, "audio input failed");
            }
            InputEnd::Finished => tracing::info!(target: "aai_live::audio", "audio input finished"),
            InputEnd::Stopped => tracing::debug!(target: "aai_live::audio", "audio input stopped"),
        }
        self.stats.send_modify(|s| s.ended = Some(end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_s16le_and_mulaw() {
        assert_eq!(
            encode(&[1, -2, 0x1234], Encoding::PcmS16le),
            vec![1, 0, 0xFE, 0xFF, 0x34, 0x12]
        );
        assert_eq!(encode(&[0, 0], Encoding::PcmMulaw), vec![0xFF, 0xFF]);
        let samples = [-32_768_i16, -1000, 0, 1000, 32_767];
        let bytes = encode(&samples, Encoding::PcmMulaw);
        assert_eq!(bytes.len(), samples.len());
        for (s, b) in samples.iter().zip(bytes) {
            let back = protocol::audio::mulaw_decode(b);
            assert!(
                (i32::from(back) - i32::from(*s)).abs() <= 1100,
                "{s} -> {back}"
            );
        }
    }

    #[test]
    fn chunk_samples_round_up() {
        let o = |sample_rate, chunk_ms| AudioOptions {
            sample_rate,
            chunk_ms,
            ..AudioOptions::default()
        };
        assert_eq!(o(16_000, 50).chunk_samples(), 800);
        assert_eq!(o(22_050, 50).chunk_samples(), 1103);
        assert_eq!(o(44_100, 50).chunk_samples(), 2205);
        assert_eq!(o(8000, 1000).chunk_samples(), 8000);
    }

    #[test]
    fn options_are_checked() {
        let bad_chunk = AudioOptions {
            chunk_ms: 20,
            ..AudioOptions::default()
        };
        assert!(
            bad_chunk
                .validate()
                .expect_err("must fail")
                .to_string()
                .contains("50-1000 ms")
        );
        let bad_rate = AudioOptions {
            sample_rate: 0,
            ..AudioOptions::default()
        };
        assert!(bad_rate.validate().is_err());
        assert!(AudioOptions::default().validate().is_ok());
    }

    #[test]
    fn muted_chunk_keeps_its_place() {
        let chunk = AudioChunk {
            offset: 800,
            samples: vec![5; 800],
            captured_at: tokio::time::Instant::now(),
            dropped_before: 0,
            non_finite: 0,
        };
        let muted = chunk.clone().muted();
        assert_eq!(muted.offset, 800);
        assert_eq!(muted.end(), 1600);
        assert!(muted.samples.iter().all(|&s| s == 0));
    }
}
