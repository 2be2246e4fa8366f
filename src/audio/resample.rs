//! Streaming sample-rate conversion of one mono channel, on rubato's FFT resampler.
//!
//! rubato's synchronous `Fft` resampler works on fixed blocks: this wrapper collects input of any
//! size into those blocks, drops the resampler's start-up delay so that output sample `n`
//! corresponds to input time `n / output_rate` (offsets stay true to the audio), and at the end
//! flushes the tail so a finite input of `N` frames yields exactly
//! `ceil(N × output_rate / input_rate)` samples. Equal rates pass through untouched.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::AudioError;

/// Input frames per block, as a hint: rubato rounds it up to a whole number of the smallest
/// block the rate pair allows (1026 frames for 48 kHz → 16 kHz, 1323 for 44.1 kHz → 16 kHz).
/// About 21 ms at 48 kHz: a long enough FFT for a steep anti-alias filter, short enough to add
/// little latency (the block plus half an output block of filter delay, ≈ 32 ms in all).
const BLOCK_HINT: usize = 1024;

/// A mono resampler for one continuous stream.
pub struct StreamResampler {
    input_rate: u32,
    output_rate: u32,
    inner: Option<Box<FftState>>,
}

struct FftState {
    fft: Fft<f32>,
    block_in: usize,
    /// Input waiting for a full block; capacity `block_in`, never grows.
    pending: Vec<f32>,
    /// rubato's output block.
    out: Vec<f32>,
    /// Output samples still to drop at the start (the filter delay).
    to_trim: usize,
    frames_in: u64,
    frames_out: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("input_rate", &self.input_rate)
            .field("output_rate", &self.output_rate)
            .field("block_in", &self.inner.as_ref().map(|s| s.block_in))
            .finish()
    }
}

impl StreamResampler {
    pub fn new(input_rate: u32, output_rate: u32) -> Result<Self, AudioError> {
        if input_rate == 0 || output_rate == 0 {
            return Err(AudioError::InvalidOptions(format!(
                "cannot resample {input_rate} Hz to {output_rate} Hz"
            )));
        }
        if input_rate == output_rate {
            return Ok(Self {
                input_rate,
                output_rate,
                inner: None,
            });
        }
        let fft = Fft::<f32>::new(
            input_rate as usize,
            output_rate as usize,
            BLOCK_HINT,
            1,
            FixedSync::Both,
        )
        .map_err(|e| AudioError::Resampler(e.to_string()))?;
        let block_in = fft.input_frames_next();
        let state = FftState {
            to_trim: fft.output_delay(),
            out: vec![0.0; fft.output_frames_max()],
            pending: Vec::with_capacity(block_in),
            block_in,
            fft,
            frames_in: 0,
            frames_out: 0,
        };
        Ok(Self {
            input_rate,
            output_rate,
            inner: Some(Box::new(state)),
        })
    }

    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    pub fn output_rate(&self) -> u32 {
        self.output_rate
    }

    /// Input frames per internal block (1 when passing through).
    pub fn block_frames(&self) -> usize {
        self.inner.as_ref().map_or(1, |s| s.block_in)
    }

    /// Resample `input` and append what is ready to `out`.
    pub fn process(&mut self, mut input: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        let Some(state) = self.inner.as_deref_mut() else {
            out.extend_from_slice(input);
            return Ok(());
        };
        while !input.is_empty() {
            let take = (state.block_in - state.pending.len()).min(input.len());
            state.pending.extend_from_slice(&input[..take]);
            state.frames_in += take as u64;
            input = &input[take..];
            if state.pending.len() == state.block_in {
                state.run_block(out)?;
            }
        }
        Ok(())
    }

    /// End of stream: append the rest, so that the whole output has exactly
    /// `ceil(frames_in × output_rate / input_rate)` samples. The resampler starts afresh after.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let (input_rate, output_rate) = (u64::from(self.input_rate), u64::from(self.output_rate));
        let Some(state) = self.inner.as_deref_mut() else {
            return Ok(());
        };
        let expected = (state.frames_in * output_rate).div_ceil(input_rate);
        let start = out.len();
        // Zeros push the last real samples through the filter; each block adds output, so this
        // ends after at most (delay / block_out) + 2 blocks.
        while state.frames_out < expected {
            state.pending.resize(state.block_in, 0.0);
            state.run_block(out)?;
        }
        let surplus = (state.frames_out - expected) as usize;
        out.truncate((out.len() - surplus).max(start));
        state.fft.reset();
        state.pending.clear();
        state.to_trim = state.fft.output_delay();
        state.frames_in = 0;
        state.frames_out = 0;
        Ok(())
    }
}

impl FftState {
    /// Resample the full `pending` block and append its output, minus any delay still to trim.
    fn run_block(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let resample_error = |e: &dyn std::fmt::Display| AudioError::Resampler(e.to_string());
        let input = InterleavedSlice::new(&self.pending[..], 1, self.block_in)
            .map_err(|e| resample_error(&e))?;
        let frames_max = self.out.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out[..], 1, frames_max)
            .map_err(|e| resample_error(&e))?;
        let (_, produced) = self
            .fft
            .process_into_buffer(&input, &mut output, None)
            .map_err(|e| resample_error(&e))?;
        self.pending.clear();
        let trim = self.to_trim.min(produced);
        self.to_trim -= trim;
        out.extend_from_slice(&self.out[trim..produced]);
        self.frames_out += (produced - trim) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input_rate: u32, output_rate: u32, input: &[f32], piece: usize) -> Vec<f32> {
        let mut r = StreamResampler::new(input_rate, output_rate).expect("must succeed");
        let mut out = Vec::new();
        for part in input.chunks(piece) {
            r.process(part, &mut out).expect("must succeed");
        }
        r.finish(&mut out).expect("must succeed");
        out
    }

    #[test]
    fn output_length_is_exact() {
        for (from, to, n) in [
            (48_000, 16_000, 48_000),
            (48_000, 16_000, 1),
            (48_000, 16_000, 4801),
            (44_100, 16_000, 44_100 * 2 + 7),
            (8000, 16_000, 12_345),
            (22_050, 16_000, 999),
        ] {
            let input = vec![0.1_f32; n];
            let out = run(from, to, &input, 333);
            let expected = (n as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize;
            assert_eq!(out.len(), expected, "{from} -> {to}, {n} frames");
        }
    }

    #[test]
    fn output_does_not_depend_on_how_input_is_split() {
        let input: Vec<f32> = (0..30_000)
            .map(|i| ((i as f32) * 0.01).sin() * 0.5)
            .collect();
        let whole = run(48_000, 16_000, &input, input.len());
        for piece in [1, 7, 480, 1023, 1026, 4097] {
            assert_eq!(
                run(48_000, 16_000, &input, piece),
                whole,
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn no_delay_at_the_start() {
        // A step at input frame 4800 (100 ms) must appear at output sample ~1600.
        let input: Vec<f32> = (0..9600)
            .map(|i| if i < 4800 { 0.0 } else { 0.5 })
            .collect();
        let out = run(48_000, 16_000, &input, 512);
        let first = out.iter().position(|&s| s > 0.25).expect("must succeed");
        assert!((1598..=1602).contains(&first), "step at {first}");
    }

    #[test]
    fn equal_rates_pass_through() {
        let input = vec![0.25_f32, -0.5, 0.75];
        assert_eq!(run(16_000, 16_000, &input, 2), input);
    }

    #[test]
    fn zero_rate_is_an_error() {
        assert!(StreamResampler::new(0, 16_000).is_err());
    }
}
