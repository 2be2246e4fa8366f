//! The task that pulls files, stdin, commands and test signals through conversion and chunking,
//! and releases the chunks at real time (or as fast as they are taken, with [`Pace::Unpaced`]).
//!
//! A live source (the system-audio recorder) arrives at real time by itself: pacing it again
//! would only add delay, and its clock, not ours, decides how fast audio comes. Its chunks go
//! out as soon as they are whole, and one that finds the channel full is dropped and counted
//! (`dropped_before` of the next chunk, `stats.dropped_frames`), as the microphone does: a live
//! source is never buffered up behind a stalled consumer.
//!
//! Pacing releases chunk `k` when its last sample would have been captured live:
//! `start + end_offset / rate`. Deadlines come from sample counts, not from adding up sleeps, so
//! timer lateness never accumulates into drift. If the task falls behind (a slow consumer, a
//! pipe that paused), it catches up at most [`MAX_CATCH_UP`] of audio in a burst — the service
//! tolerates a little — and otherwise starts counting afresh from now, so the stream never runs
//! faster than real time for long.

use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

use super::chunker::Chunker;
#[cfg(unix)]
use super::command::CommandSource;
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
    /// A command's standard output (`cmd:`, or the recorder behind `monitor`).
    #[cfg(unix)]
    Command(Box<CommandSource>),
}

impl Source {
    fn format(&self, options: &AudioOptions) -> SourceFormat {
        match self {
            Self::Wav(wav) => wav.format(),
            Self::Raw(raw) => raw.format(),
            #[cfg(unix)]
            Self::Command(command) => command.format(),
            Self::Signal(_) => SourceFormat {
                sample_rate: options.sample_rate,
                channels: 1,
                sample: "i16".into(),
            },
        }
    }

    /// Whether the source delivers at real time by itself (see the module's comment).
    fn is_live(&self) -> bool {
        match self {
            #[cfg(unix)]
            Self::Command(command) => command.live,
            _ => false,
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
    let live = source.is_live();
    let pace = if live { Pace::Unpaced } else { options.pace };
    let driver = Driver {
        source,
        converter,
        chunker: Chunker::new(options.chunk_samples()),
        frames: Vec::new(),
        samples: Vec::new(),
        block_frames,
        clock: PaceClock::new(pace, options.sample_rate),
        non_finite_sent: 0,
        live,
        dropped: 0,
        dropped_pending: 0,
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
    /// Released as it arrives, never waiting for room in the channel.
    live: bool,
    /// Samples of a live source dropped for want of room: in all, and since the last chunk
    /// that went out.
    dropped: u64,
    dropped_pending: u64,
}

impl Driver {
    async fn run(mut self, out: Outputs) {
        let stop = out.stop.clone();
        let end = tokio::select! {
            biased;
            () = stop.cancelled() => InputEnd::Stopped,
            end = self.stream(&out) => end,
        };
        // A command ends with its input, whichever way: SIGTERM, then SIGKILL, to its group.
        #[cfg(unix)]
        if let Source::Command(command) = &mut self.source {
            command.child.stop().await;
        }
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
                    // Offsets count the audio delivered (dropped audio never entered the stream).
                    offset: offset - self.dropped,
                    samples,
                    captured_at: Instant::now(),
                    dropped_before: self.dropped_pending,
                    non_finite: std::mem::take(&mut non_finite),
                };
                if self.live {
                    match out.chunks.try_reserve() {
                        Ok(permit) => {
                            out.account(&chunk);
                            self.dropped_pending = 0;
                            permit.send(chunk);
                        }
                        Err(TrySendError::Full(())) => self.drop_chunk(out, &chunk),
                        Err(TrySendError::Closed(())) => return InputEnd::Stopped,
                    }
                    continue;
                }
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

    /// A live chunk found the channel full: drop it and count it (a new episode when the chunk
    /// before it went out).
    fn drop_chunk(&mut self, out: &Outputs, chunk: &AudioChunk) {
        let samples = chunk.samples.len() as u64;
        let new_episode = self.dropped_pending == 0;
        self.dropped += samples;
        self.dropped_pending += samples;
        out.stats.send_modify(|s| {
            s.dropped_frames += samples;
            s.overflows += u64::from(new_episode);
        });
        if new_episode {
            tracing::warn!(
                target: "aai_live::audio",
                "the audio consumer stopped taking chunks; live audio is being dropped (and \
                 counted) until it does"
            );
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
            #[cfg(unix)]
            Source::Command(command) => {
                let frames = command.raw.read(&mut self.frames).await?;
                if frames == 0 {
                    // The end of the output: a normal end only if the command says so.
                    command.child.finished().await?;
                }
                frames
            }
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

    #[cfg(unix)]
    mod command_sources {
        use super::super::*;
        use crate::config::StdinFormat;

        fn sh(script: &str) -> Vec<String> {
            vec!["sh".into(), "-c".into(), script.into()]
        }

        /// Reads every chunk; returns them and how long that took.
        async fn drain(
            live: bool,
            script: &str,
            wait_first: Duration,
        ) -> (Vec<AudioChunk>, Duration, AudioInput) {
            let source = CommandSource::spawn(&sh(script), "test", StdinFormat::default(), live)
                .expect("spawn");
            let mut input = spawn(
                Source::Command(Box::new(source)),
                "test".into(),
                &AudioOptions::default(),
            )
            .expect("open");
            let started = std::time::Instant::now();
            tokio::time::sleep(wait_first).await;
            let mut chunks = Vec::new();
            while let Some(chunk) = input.chunks.recv().await {
                chunks.push(chunk);
            }
            (chunks, started.elapsed(), input)
        }

        #[tokio::test]
        async fn a_live_source_is_released_as_it_arrives_a_command_is_paced() {
            // One second of audio, all available at once.
            let script = "head -c 32000 /dev/zero";
            let (chunks, took, input) = drain(true, script, Duration::ZERO).await;
            assert_eq!(
                chunks.iter().map(|c| c.samples.len()).sum::<usize>(),
                16_000
            );
            assert!(
                took < Duration::from_millis(600),
                "live, not paced again: {took:?}"
            );
            assert_eq!(input.stats.borrow().ended, Some(InputEnd::Finished));
            let (chunks, took, _input) = drain(false, script, Duration::ZERO).await;
            assert_eq!(chunks.len(), 20);
            assert!(
                took >= Duration::from_millis(900),
                "paced like stdin: {took:?}"
            );
        }

        #[tokio::test]
        async fn a_stalled_consumer_drops_live_audio_and_counts_it() {
            // Ten seconds at once, nobody reading for one: the channel holds two seconds, the
            // rest is dropped; a tenth of a second later on is delivered again, and says how
            // much was dropped before it.
            let (chunks, _, input) = drain(
                true,
                "head -c 320000 /dev/zero; sleep 1.5; head -c 3200 /dev/zero",
                Duration::from_secs(1),
            )
            .await;
            let delivered: u64 = chunks.iter().map(|c| c.samples.len() as u64).sum();
            let dropped: u64 = chunks.iter().map(|c| c.dropped_before).sum();
            let stats = input.stats.borrow().clone();
            assert_eq!(delivered + dropped, 161_600, "{delivered} {dropped}");
            assert!(dropped >= 100_000, "{dropped}");
            assert_eq!(stats.dropped_frames, dropped);
            assert_eq!(stats.overflows, 1);
            assert_eq!(chunks.iter().filter(|c| c.dropped_before > 0).count(), 1);
            let mut end = 0;
            for chunk in &chunks {
                assert_eq!(chunk.offset, end, "offsets count the audio delivered");
                end = chunk.end();
            }
            assert_eq!(stats.ended, Some(InputEnd::Finished));
        }

        #[tokio::test]
        async fn a_failing_command_fails_the_input_with_its_last_words() {
            let (chunks, _, input) = drain(
                false,
                "head -c 3200 /dev/zero; echo 'no more input' >&2; exit 3",
                Duration::ZERO,
            )
            .await;
            assert_eq!(
                chunks.len(),
                2,
                "what came before the failure was delivered"
            );
            assert_eq!(
                input.stats.borrow().ended,
                Some(InputEnd::Failed(
                    "test exited with status 3: no more input".into()
                ))
            );
        }
    }
}
