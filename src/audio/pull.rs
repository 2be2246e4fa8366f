//! The task that pulls files, stdin and test signals through conversion and chunking, and
//! releases the chunks at real time (or as fast as they are taken, with [`Pace::Unpaced`]).
//!
//! Pacing releases chunk `k` when its last sample would have been captured live:
//! `start + end_offset / rate`. Deadlines come from sample counts, not from adding up sleeps, so
//! timer lateness never accumulates into drift. If the task falls behind (a slow consumer, a
//! pipe that paused), it catches up at most [`MAX_CATCH_UP`] of audio in a burst — the service
//! tolerates a little — and otherwise starts counting afresh from now, so the stream never runs
//! faster than real time for long.

use std::time::Duration;

use tokio::time::Instant;

use super::chunker::Chunker;
use super::convert::Converter;
use super::signal::SignalSource;
use super::stdin::RawSource;
use super::wav::WavSource;
use super::{
    AudioChunk, AudioError, AudioInput, AudioOptions, InputEnd, Outputs, Pace, SourceFormat,
};

/// Most audio released in a burst to catch up after falling behind.
pub const MAX_CATCH_UP: Duration = Duration::from_millis(250);

pub(super) enum Source {
    Wav(Box<WavSource>),
    Raw(Box<RawSource>),
    Signal(SignalSource),
}

impl Source {
    fn format(&self, options: &AudioOptions) -> SourceFormat {
        match self {
            Self::Wav(wav) => wav.format(),
            Self::Raw(raw) => raw.format(),
            Self::Signal(_) => SourceFormat {
                sample_rate: options.sample_rate,
                channels: 1,
                sample: "i16".into(),
            },
        }
    }
}

/// Start the task; the input runs until it ends or the returned [`AudioInput`] is dropped.
pub(super) fn spawn(
    source: Source,
    name: String,
    options: &AudioOptions,
) -> Result<AudioInput, AudioError> {
    let native = source.format(options);
    // 16-bit mono at the output rate: the file's samples are the chunks' samples.
    let direct = matches!(&source, Source::Wav(wav) if wav.is_pcm16())
        && native.channels == 1
        && native.sample_rate == options.sample_rate;
    let converter = match &source {
        Source::Signal(_) => None,
        _ if direct => None,
        _ => Some(Converter::new(
            native.sample_rate,
            native.channels,
            options.sample_rate,
        )?),
    };
    tracing::info!(
        target: "aai_live::audio",
        input = %name,
        native = %native,
        sample_rate = options.sample_rate,
        chunk_ms = options.chunk_ms,
        pace = ?options.pace,
        "audio input opened"
    );
    // Read about one chunk of native audio at a time.
    let block_frames =
        ((u64::from(native.sample_rate) * u64::from(options.chunk_ms)).div_ceil(1000) as usize)
            .max(64);
    let driver = Driver {
        source,
        converter,
        chunker: Chunker::new(options.chunk_samples()),
        frames: Vec::new(),
        samples: Vec::new(),
        block_frames,
        clock: PaceClock::new(options.pace, options.sample_rate),
        non_finite_sent: 0,
    };
    let (outputs, input) = Outputs::new(name, native, options);
    tokio::spawn(driver.run(outputs));
    Ok(input)
}

struct Driver {
    source: Source,
    converter: Option<Converter>,
    chunker: Chunker,
    /// Reused buffers: native f32 frames, converted i16 samples.
    frames: Vec<f32>,
    samples: Vec<i16>,
    block_frames: usize,
    clock: PaceClock,
    /// The converter's count of non-finite samples as last put on a chunk.
    non_finite_sent: u64,
}

impl Driver {
    async fn run(mut self, out: Outputs) {
        let stop = out.stop.clone();
        let end = tokio::select! {
            biased;
            () = stop.cancelled() => InputEnd::Stopped,
            end = self.stream(&out) => end,
        };
        out.end(end);
    }

    async fn stream(&mut self, out: &Outputs) -> InputEnd {
        self.clock.start();
        let mut ended = false;
        loop {
            while !self.chunker.has_ready() && !ended {
                match self.fill().await {
                    Ok(true) => {}
                    Ok(false) => {
                        if let Err(e) = self.flush() {
                            return InputEnd::Failed(e.to_string());
                        }
                        ended = true;
                    }
                    Err(e) => return InputEnd::Failed(e.to_string()),
                }
            }
            // What the conversion silenced since the last chunk travels on the next one.
            let mut non_finite = 0;
            if let Some(converter) = &self.converter {
                out.non_finite(converter.non_finite());
                non_finite = converter.non_finite() - self.non_finite_sent;
                self.non_finite_sent = converter.non_finite();
            }
            if let Source::Wav(wav) = &self.source {
                let loops = wav.loops();
                out.stats.send_if_modified(|s| {
                    let changed = s.loops != loops;
                    s.loops = loops;
                    changed
                });
            }
            while let Some((offset, samples)) = self.chunker.pop() {
                let end = offset + samples.len() as u64;
                self.clock.wait_until_released(end).await;
                let chunk = AudioChunk {
                    offset,
                    samples,
                    captured_at: Instant::now(),
                    dropped_before: 0,
                    non_finite: std::mem::take(&mut non_finite),
                };
                out.account(&chunk);
                if out.chunks.send(chunk).await.is_err() {
                    return InputEnd::Stopped;
                }
                if self.clock.pace == Pace::Unpaced {
                    // Unpaced, a file could otherwise hold the worker thread for its whole length.
                    tokio::task::yield_now().await;
                }
            }
            if ended {
                return InputEnd::Finished;
            }
        }
    }

    /// Read one block into the chunker; `false` at the end of the input.
    async fn fill(&mut self) -> Result<bool, AudioError> {
        self.frames.clear();
        let frames = match &mut self.source {
            Source::Signal(signal) => {
                let block = signal.next_block(self.chunker.size());
                self.chunker.push(&block);
                return Ok(true);
            }
            // A local file read of one chunk's worth is short; doing it inline keeps the task
            // simple and the paced timing exact.
            Source::Wav(wav) if self.converter.is_none() => {
                self.samples.clear();
                if wav.read_pcm16(self.block_frames, &mut self.samples)? == 0 {
                    return Ok(false);
                }
                self.chunker.push(&self.samples);
                return Ok(true);
            }
            Source::Wav(wav) => wav.read(self.block_frames, &mut self.frames)?,
            Source::Raw(raw) => raw.read(&mut self.frames).await?,
        };
        if frames == 0 {
            return Ok(false);
        }
        if let Some(converter) = &mut self.converter {
            self.samples.clear();
            converter.push(&self.frames, &mut self.samples)?;
            self.chunker.push(&self.samples);
        }
        Ok(true)
    }

    /// End of input: the resampler's tail and the last, shorter chunk.
    fn flush(&mut self) -> Result<(), AudioError> {
        if let Some(converter) = &mut self.converter {
            self.samples.clear();
            converter.finish(&mut self.samples)?;
            self.chunker.push(&self.samples);
        }
        self.chunker.finish();
        Ok(())
    }
}

/// Release times for a paced stream.
#[derive(Debug)]
struct PaceClock {
    pace: Pace,
    rate: u32,
    /// Instant at which sample `anchor_sample` is due.
    anchor: Instant,
    anchor_sample: u64,
}

impl PaceClock {
    fn new(pace: Pace, rate: u32) -> Self {
        Self {
            pace,
            rate: rate.max(1),
            anchor: Instant::now(),
            anchor_sample: 0,
        }
    }

    fn start(&mut self) {
        self.anchor = Instant::now();
        self.anchor_sample = 0;
    }

    /// When the stream is due to reach sample `end` (exclusive).
    fn due(&self, end: u64) -> Instant {
        let samples = u128::from(end.saturating_sub(self.anchor_sample));
        let nanos = samples * 1_000_000_000 / u128::from(self.rate);
        self.anchor + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Wait until a chunk ending at sample `end` may be released.
    async fn wait_until_released(&mut self, end: u64) {
        if self.pace == Pace::Unpaced {
            return;
        }
        let due = self.due(end);
        let now = Instant::now();
        if now > due + MAX_CATCH_UP {
            tracing::debug!(
                target: "aai_live::audio",
                behind_ms = (now - due).as_millis(),
                "audio pacing fell behind; continuing at real time from here"
            );
            self.anchor = now;
            self.anchor_sample = end;
            return;
        }
        tokio::time::sleep_until(due).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_come_from_sample_counts() {
        let mut clock = PaceClock::new(Pace::RealTime, 16_000);
        clock.start();
        let t0 = clock.anchor;
        assert_eq!(clock.due(800), t0 + Duration::from_millis(50));
        assert_eq!(clock.due(16_000 * 3600), t0 + Duration::from_secs(3600));
        let mut clock = PaceClock::new(Pace::RealTime, 44_100);
        clock.start();
        assert_eq!(clock.due(1), clock.anchor + Duration::from_nanos(22_675));
    }
}
