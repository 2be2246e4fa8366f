//! Microphone capture through cpal, and the device list behind `aai-live devices`.
//!
//! Capture runs on a thread of its own (`aai-live-mic`), which opens the device at its native
//! format, owns the stream, and converts what the callback queues. The callback only copies
//! frames into the pre-allocated [`queue`](super::queue) and counts what does not fit.
//!
//! alsa-lib prints its complaints straight to stderr, which would tear through the dashboard.
//! Every thread here that calls into ALSA first installs alsa-lib's thread-local error handler,
//! which collects the messages in a buffer; they go to the log instead. (Messages from the
//! stream's own internal thread are outside our reach; in practice alsa-lib reports while
//! opening and configuring, which happens here.) ALSA's plugins are worse: the JACK plugin's
//! library prints "Cannot connect to server socket" and the like to stderr itself, whenever a
//! device list probes it. So while devices are listed and opened, the process's stderr is a
//! pipe whose lines go to the log ([`PluginStderr`]).

use std::fmt::Write as _;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SizedSample};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::chunker::Chunker;
use super::convert::Converter;
use super::devices::{self, DeviceInfo, DeviceReport};
use super::queue::{FrameConsumer, FrameProducer, frame_queue};
use super::{AudioChunk, AudioError, AudioInput, AudioOptions, InputEnd, Outputs, SourceFormat};

/// Audio the callback may queue ahead of the conversion thread before frames are dropped.
const QUEUE_DEPTH: Duration = Duration::from_secs(1);
/// Native frames converted at a time.
const READ_FRAMES: usize = 4096;
/// How long the conversion thread waits for audio before checking for stop and errors.
const POLL: Duration = Duration::from_millis(100);
/// Overflows are reported (and alsa-lib's messages logged) at most this often.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// A device that delivers nothing for this long after starting is reported in the log.
const SILENT_DEVICE_WARNING: Duration = Duration::from_secs(3);
/// Time given to the backend to open a stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Start capturing.
pub(super) async fn open(options: &AudioOptions) -> Result<AudioInput, AudioError> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let thread_options = options.clone();
    // The capture thread waits for room in the chunk channel through this runtime, so that a
    // stop request interrupts the wait.
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("aai-live-mic".into())
        .spawn(move || capture_thread(&thread_options, &runtime, ready_tx))
        .map_err(|e| AudioError::DeviceUnavailable {
            device: device_label(options.device.as_deref()),
            reason: format!("cannot start the capture thread: {e}"),
        })?;
    ready_rx.await.unwrap_or_else(|_| {
        Err(AudioError::DeviceUnavailable {
            device: device_label(options.device.as_deref()),
            reason: "the capture thread ended while opening the device".into(),
        })
    })
}

fn device_label(device: Option<&str>) -> String {
    device.map_or_else(|| "(default)".to_owned(), |d| format!("{d:?}"))
}

/// What the capture thread holds while streaming.
struct Running {
    stream: cpal::Stream,
    consumer: FrameConsumer,
    errors: std::sync::mpsc::Receiver<cpal::Error>,
    native: SourceFormat,
    name: String,
}

fn capture_thread(
    options: &AudioOptions,
    runtime: &tokio::runtime::Handle,
    ready: oneshot::Sender<Result<AudioInput, AudioError>>,
) {
    let mut alsa = AlsaLog::install();
    let started = {
        let _plugins = PluginStderr::hold();
        start_stream(options)
    };
    let alsa_said = alsa.flush(tracing::Level::DEBUG);
    let running = match started {
        Ok(running) => running,
        Err(mut e) => {
            // alsa-lib's own words are often the best explanation ("Unknown PCM default").
            if let (AudioError::DeviceUnavailable { reason, .. }, Some(last)) =
                (&mut e, alsa_said.last())
            {
                let _ = write!(reason, " (ALSA: {last})");
            }
            let _ = ready.send(Err(e));
            return;
        }
    };
    let converter = match Converter::new(
        running.native.sample_rate,
        running.native.channels,
        options.sample_rate,
    ) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    tracing::info!(
        target: "aai_live::audio",
        device = %running.name,
        native = %running.native,
        sample_rate = options.sample_rate,
        chunk_ms = options.chunk_ms,
        "microphone opened"
    );
    let (outputs, input) = Outputs::new(
        format!("microphone: {}", running.name),
        running.native.clone(),
        options,
    );
    if ready.send(Ok(input)).is_err() {
        return; // The opener is gone; dropping `running` closes the device.
    }
    let mut conversion = Conversion {
        converter,
        chunker: Chunker::new(options.chunk_samples()),
        output_rate: options.sample_rate,
        frames: Vec::new(),
        samples: Vec::new(),
    };
    let end = conversion.run(&running, &outputs, runtime, &mut alsa);
    drop(running.stream);
    alsa.flush(tracing::Level::WARN);
    outputs.end(end);
}

/// Find the device, open it in its native format and start it.
fn start_stream(options: &AudioOptions) -> Result<Running, AudioError> {
    let host = cpal::default_host();
    let label = device_label(options.device.as_deref());
    let unavailable = |reason: String| AudioError::DeviceUnavailable {
        device: label.clone(),
        reason,
    };
    let device = match options.device.as_deref() {
        None | Some("default" | "alsa:default") => host
            .default_input_device()
            .ok_or_else(|| unavailable("the system has no default input device".into()))?,
        Some(wanted) => {
            let (infos, devices) = enumerate(&host);
            devices
                .into_iter()
                .nth(devices::select(wanted, &infos)?)
                .ok_or_else(|| unavailable("the device list changed while opening".into()))?
        }
    };
    let name = device
        .description()
        .map(|d| first_line(&d.to_string()))
        .or_else(|_| device.id().map(|id| id.to_string()))
        .unwrap_or_else(|_| label.clone());
    let config = device
        .default_input_config()
        .map_err(|e| unavailable(explain(&e)))?;
    let native = SourceFormat {
        sample_rate: config.sample_rate(),
        channels: config.channels(),
        sample: config.sample_format().to_string(),
    };
    let (producer, consumer) = frame_queue(native.channels, native.sample_rate, QUEUE_DEPTH);
    let (error_tx, errors) = std::sync::mpsc::channel();
    let on_error = move |e: cpal::Error| {
        // Rare, and not on the data path, so an unbounded channel is fine.
        let _ = error_tx.send(e);
    };
    let stream_config = config.config();
    let stream = match config.sample_format() {
        cpal::SampleFormat::I8 => build::<i8>(&device, stream_config, producer, on_error),
        cpal::SampleFormat::I16 => build::<i16>(&device, stream_config, producer, on_error),
        cpal::SampleFormat::I24 => build::<cpal::I24>(&device, stream_config, producer, on_error),
        cpal::SampleFormat::I32 => build::<i32>(&device, stream_config, producer, on_error),
        cpal::SampleFormat::I64 => build::<i64>(&device, stream_config, producer, on_error),
        cpal::SampleFormat::U8 => build::<u8>(&device, stream_config, producer, on_error),
        cpal::SampleFormat::U16 => build::<u16>(&device, stream_config, producer, on_error),
        cpal::SampleFormat::U24 => build::<cpal::U24>(&device, stream_config, producer, on_error),
        cpal::SampleFormat::U32 => build::<u32>(&device, stream_config, producer, on_error),
        cpal::SampleFormat::U64 => build::<u64>(&device, stream_config, producer, on_error),
        cpal::SampleFormat::F32 => build::<f32>(&device, stream_config, producer, on_error),
        cpal::SampleFormat::F64 => build::<f64>(&device, stream_config, producer, on_error),
        other => {
            return Err(unavailable(format!(
                "its native sample format {other} is not PCM"
            )));
        }
    }
    .map_err(|e| unavailable(explain(&e)))?;
    stream.play().map_err(|e| unavailable(explain(&e)))?;
    Ok(Running {
        stream,
        consumer,
        errors,
        native,
        name,
    })
}

fn build<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mut producer: FrameProducer,
    on_error: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    device.build_input_stream::<T, _, _>(
        config,
        // The real-time callback: copy into the queue, nothing else.
        move |data: &[T], _info| producer.push(data, <f32 as cpal::Sample>::from_sample),
        on_error,
        Some(OPEN_TIMEOUT),
    )
}

/// A cpal error in words a user can act on.
fn explain(e: &cpal::Error) -> String {
    match e.kind() {
        cpal::ErrorKind::DeviceNotAvailable => {
            "it is not available (no sound hardware, unplugged, or not configured)".into()
        }
        cpal::ErrorKind::DeviceBusy => "it is busy (another program is using it)".into(),
        cpal::ErrorKind::PermissionDenied => {
            "permission denied (on Linux, is the user in the `audio` group?)".into()
        }
        _ => e.to_string(),
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).trim().to_owned()
}

/// The conversion side of a running capture.
struct Conversion {
    converter: Converter,
    chunker: Chunker,
    output_rate: u32,
    /// Reused buffers: native frames, converted samples.
    frames: Vec<f32>,
    samples: Vec<i16>,
}

impl Conversion {
    fn run(
        &mut self,
        running: &Running,
        out: &Outputs,
        runtime: &tokio::runtime::Handle,
        alsa: &mut AlsaLog,
    ) -> InputEnd {
        let started = std::time::Instant::now();
        let mut warned_silent = false;
        let mut overflow = OverflowReport::default();
        let mut dropped = DroppedSamples::new(running.native.sample_rate, self.output_rate);
        let mut alsa_flushed = std::time::Instant::now();
        let mut non_finite_sent = 0;
        loop {
            if out.stop.is_cancelled() {
                return InputEnd::Stopped;
            }
            if running.consumer.wait(POLL).is_err() && running.consumer.queued_frames() == 0 {
                return InputEnd::Failed("the audio stream stopped".into());
            }
            loop {
                self.frames.clear();
                if running.consumer.read(&mut self.frames, READ_FRAMES) == 0 {
                    break;
                }
                self.samples.clear();
                if let Err(e) = self.converter.push(&self.frames, &mut self.samples) {
                    return InputEnd::Failed(e.to_string());
                }
                out.non_finite(self.converter.non_finite());
                // What the conversion silenced since the last chunk travels on the next one.
                let mut non_finite = self.converter.non_finite() - non_finite_sent;
                non_finite_sent = self.converter.non_finite();
                self.chunker.push(&self.samples);
                while let Some((offset, samples)) = self.chunker.pop() {
                    let chunk = AudioChunk {
                        offset,
                        samples,
                        captured_at: Instant::now(),
                        dropped_before: dropped.since_last(running.consumer.dropped_frames()),
                        non_finite: std::mem::take(&mut non_finite),
                    };
                    out.account(&chunk);
                    // Waits while the consumer is busy; meanwhile the callback keeps
                    // queueing, and counts drops once the queue is full.
                    // Overflows keep being reported during the wait.
                    let sent = runtime.block_on(async {
                        let send = out.chunks.send(chunk);
                        tokio::pin!(send);
                        loop {
                            tokio::select! {
                                biased;
                                () = out.stop.cancelled() => break false,
                                result = &mut send => break result.is_ok(),
                                () = tokio::time::sleep(REPORT_INTERVAL) => {
                                    overflow.check(running, out);
                                }
                            }
                        }
                    });
                    if !sent {
                        return InputEnd::Stopped;
                    }
                }
            }
            if !warned_silent
                && running.consumer.pushed_frames() == 0
                && started.elapsed() >= SILENT_DEVICE_WARNING
            {
                warned_silent = true;
                tracing::warn!(
                    target: "aai_live::audio",
                    device = %running.name,
                    "the microphone has delivered no audio for {} s",
                    SILENT_DEVICE_WARNING.as_secs()
                );
            }
            while let Ok(e) = running.errors.try_recv() {
                if e.kind() == cpal::ErrorKind::DeviceNotAvailable {
                    return InputEnd::Failed(format!(
                        "the microphone {} went away: {e}",
                        running.name
                    ));
                }
                tracing::warn!(target: "aai_live::audio", device = %running.name, error = %e, "audio stream error");
            }
            overflow.check(running, out);
            if alsa_flushed.elapsed() >= REPORT_INTERVAL {
                alsa.flush(tracing::Level::WARN);
                alsa_flushed = std::time::Instant::now();
            }
        }
    }
}

/// The queue's dropped native frames as output samples, handed out once each: the session
/// reports them lost. Exact over a run (cumulative rounding, no drift).
#[cfg_attr(test, derive(Debug))]
struct DroppedSamples {
    native_rate: u64,
    output_rate: u64,
    handed_out: u64,
}

impl DroppedSamples {
    fn new(native_rate: u32, output_rate: u32) -> Self {
        Self {
            native_rate: u64::from(native_rate.max(1)),
            output_rate: u64::from(output_rate),
            handed_out: 0,
        }
    }

    /// Output samples dropped since the last call, from the queue's cumulative frame count.
    fn since_last(&mut self, dropped_frames: u64) -> u64 {
        let total = dropped_frames * self.output_rate / self.native_rate;
        let new = total.saturating_sub(self.handed_out);
        self.handed_out = total.max(self.handed_out);
        new
    }
}

/// Turns the queue's drop counter into statistics and log lines, at most once per
/// [`REPORT_INTERVAL`] (the first drop at once).
#[derive(Default)]
struct OverflowReport {
    reported: u64,
    last: Option<std::time::Instant>,
}

impl OverflowReport {
    fn check(&mut self, running: &Running, out: &Outputs) {
        let dropped = running.consumer.dropped_frames();
        if dropped == self.reported || self.last.is_some_and(|t| t.elapsed() < REPORT_INTERVAL) {
            return;
        }
        let overflows = running.consumer.overflows();
        tracing::warn!(
            target: "aai_live::audio",
            dropped_frames = dropped,
            overflows,
            "audio overflow: the conversion fell behind the microphone; {dropped} frames ({:.2} s) \
             dropped so far",
            dropped as f64 / f64::from(running.native.sample_rate.max(1))
        );
        out.stats.send_modify(|s| {
            s.dropped_frames = dropped;
            s.overflows = overflows;
        });
        self.reported = dropped;
        self.last = Some(std::time::Instant::now());
    }
}

/// The input devices that can be opened, plus the sound-card count.
pub(super) fn device_report() -> Result<DeviceReport, AudioError> {
    // On a thread of its own, so that alsa-lib's thread-local error handler is installed for
    // exactly the calls made here, whatever thread the caller is.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut alsa = AlsaLog::install();
                let plugins = PluginStderr::hold();
                let host = cpal::default_host();
                let (devices, _) = enumerate(&host);
                drop(plugins);
                alsa.flush(tracing::Level::DEBUG);
                DeviceReport {
                    host: host.id().name().to_owned(),
                    devices,
                    sound_cards: sound_cards(),
                }
            })
            .join()
            .map_err(|_| AudioError::Devices("the device enumeration crashed".into()))
    })
}

/// Input devices that can be opened for capture, the default first.
fn enumerate(host: &cpal::Host) -> (Vec<DeviceInfo>, Vec<cpal::Device>) {
    let mut infos = Vec::new();
    let mut devices = Vec::new();
    let default = host.default_input_device();
    let default_id = default.as_ref().and_then(|d| d.id().ok());
    if let Some(device) = default
        && let Some(info) = describe(&device, true)
    {
        infos.push(info);
        devices.push(device);
    }
    match host.input_devices() {
        Ok(list) => {
            for device in list {
                if device
                    .id()
                    .ok()
                    .is_some_and(|id| Some(&id) == default_id.as_ref())
                {
                    continue;
                }
                if let Some(info) = describe(&device, false) {
                    infos.push(info);
                    devices.push(device);
                }
            }
        }
        Err(e) => {
            tracing::warn!(target: "aai_live::audio", error = %e, "cannot list input devices");
        }
    }
    (infos, devices)
}

/// A device as shown to the user, or `None` when it cannot record.
fn describe(device: &cpal::Device, is_default: bool) -> Option<DeviceInfo> {
    let id = device.id().ok()?.to_string();
    let config = match device.default_input_config() {
        Ok(config) => config,
        Err(e) => {
            tracing::debug!(target: "aai_live::audio", device = %id, error = %e, "skipping a device that cannot record");
            return None;
        }
    };
    let description = device
        .description()
        .map(|d| d.to_string())
        .unwrap_or_default();
    let mut lines = description.lines().map(str::trim).filter(|l| !l.is_empty());
    let name = lines.next().unwrap_or(&id).to_owned();
    let details = lines.map(str::to_owned).collect();
    let mut rates = Vec::new();
    let mut channels = Vec::new();
    let mut formats: Vec<String> = Vec::new();
    if let Ok(ranges) = device.supported_input_configs() {
        for range in ranges {
            if !range.sample_format().is_int()
                && !range.sample_format().is_uint()
                && !range.sample_format().is_float()
            {
                continue;
            }
            rates.push((range.min_sample_rate(), range.max_sample_rate()));
            channels.push((range.channels(), range.channels()));
            let format = range.sample_format().to_string();
            if !formats.contains(&format) {
                formats.push(format);
            }
        }
    }
    Some(DeviceInfo {
        id,
        name,
        details,
        is_default,
        default_format: Some(SourceFormat {
            sample_rate: config.sample_rate(),
            channels: config.channels(),
            sample: config.sample_format().to_string(),
        }),
        sample_rates: devices::merge_ranges(rates),
        channels: devices::merge_ranges(channels),
        sample_formats: formats,
    })
}

#[cfg(target_os = "linux")]
#[expect(
    clippy::unnecessary_wraps,
    reason = "`None` where the system cannot count sound cards"
)]
fn sound_cards() -> Option<usize> {
    Some(alsa::card::Iter::new().filter_map(Result::ok).count())
}

#[cfg(not(target_os = "linux"))]
fn sound_cards() -> Option<usize> {
    None
}

/// While alive, the process's stderr (fd 2) is a pipe whose lines go to the log: what ALSA's
/// plugins print themselves (JACK's library, without a JACK server, prints five lines whenever
/// it is probed) never reaches the terminal or tears the dashboard. Process-wide, so held by one
/// thread at a time; anything another thread writes to stderr meanwhile is logged too, not lost.
#[cfg(target_os = "linux")]
struct PluginStderr {
    saved: Option<std::os::fd::OwnedFd>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

#[cfg(target_os = "linux")]
static PLUGIN_STDERR: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(target_os = "linux")]
impl PluginStderr {
    fn hold() -> Self {
        let turn = PLUGIN_STDERR
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let unheld = |turn, what: &str, e: &dyn std::fmt::Display| {
            tracing::debug!(target: "aai_live::audio", error = %e, "cannot hold stderr ({what}); ALSA plugins may print to it");
            Self {
                saved: None,
                _turn: turn,
            }
        };
        let (reader, writer) = match std::io::pipe() {
            Ok(pipe) => pipe,
            Err(e) => return unheld(turn, "pipe", &e),
        };
        let saved = match nix::unistd::dup(std::io::stderr()) {
            Ok(saved) => saved,
            Err(e) => return unheld(turn, "dup", &e),
        };
        // Not joined: it ends when the last copy of the pipe's writing end closes, which a
        // plugin's own thread could delay.
        let lines = std::thread::Builder::new()
            .name("aai-live-alsa-stderr".into())
            .spawn(move || {
                super::command::read_lines(reader, |line| {
                    tracing::debug!(target: "alsa", "{}", crate::untrusted::for_terminal(line));
                });
            });
        if let Err(e) = lines {
            return unheld(turn, "thread", &e);
        }
        if let Err(e) = nix::unistd::dup2_stderr(&writer) {
            return unheld(turn, "dup2", &e);
        }
        // fd 2 now holds the pipe; this handle goes, so that restoring fd 2 ends the reader.
        drop(writer);
        Self {
            saved: Some(saved),
            _turn: turn,
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for PluginStderr {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take()
            && let Err(e) = nix::unistd::dup2_stderr(&saved)
        {
            tracing::warn!(target: "aai_live::audio", error = %e, "cannot restore stderr after listing audio devices");
        }
    }
}

#[cfg(not(target_os = "linux"))]
struct PluginStderr;

#[cfg(not(target_os = "linux"))]
impl PluginStderr {
    fn hold() -> Self {
        Self
    }
}

/// alsa-lib's messages for the current thread, collected instead of printed.
struct AlsaLog {
    #[cfg(target_os = "linux")]
    output: Option<std::rc::Rc<std::cell::RefCell<alsa::Output>>>,
}

impl AlsaLog {
    #[cfg(target_os = "linux")]
    fn install() -> Self {
        let output = alsa::Output::local_error_handler()
            .map_err(|e| tracing::debug!(target: "aai_live::audio", error = %e, "cannot capture alsa-lib messages"))
            .ok();
        Self { output }
    }

    #[cfg(not(target_os = "linux"))]
    fn install() -> Self {
        Self {}
    }

    /// Log what alsa-lib said since the last flush, and return those lines.
    #[cfg(target_os = "linux")]
    fn flush(&mut self, level: tracing::Level) -> Vec<String> {
        let Some(output) = &self.output else {
            return Vec::new();
        };
        let text = output.borrow().to_string();
        if text.is_empty() {
            return Vec::new();
        }
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        for line in &lines {
            if level == tracing::Level::DEBUG {
                tracing::debug!(target: "alsa", "{line}");
            } else {
                tracing::warn!(target: "alsa", "{line}");
            }
        }
        // A fresh handler starts an empty buffer (the crate's way to clear it).
        *self = Self::install();
        lines
    }

    #[cfg(not(target_os = "linux"))]
    fn flush(&mut self, _level: tracing::Level) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_frames_become_output_samples_once_and_exactly() {
        let mut d = DroppedSamples::new(48_000, 16_000);
        assert_eq!(d.since_last(0), 0);
        assert_eq!(d.since_last(4), 1, "4 frames at 48 kHz: 1 sample at 16 kHz");
        assert_eq!(d.since_last(4), 0, "handed out once");
        assert_eq!(d.since_last(5), 0);
        assert_eq!(d.since_last(6), 1);
        // 44.1 kHz: cumulative rounding, no drift over many small drops.
        let mut d = DroppedSamples::new(44_100, 16_000);
        let total: u64 = (1..=441).map(|n| d.since_last(n * 100)).sum();
        assert_eq!(total, 44_100 * 16_000 / 44_100);
    }
}
