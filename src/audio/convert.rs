//! Sample conversion: native PCM (any integer width, float) → f32, channel downmix, and f32 → i16;
//! plus [`Converter`], which chains downmix → resample → i16 for one source.
//!
//! Scaling is symmetric around full scale 2^(bits-1), so an i16 survives i16 → f32 → i16
//! unchanged: sources already in the target format (16 kHz mono s16) reach the wire bit-exact.

use super::AudioError;
use super::resample::StreamResampler;

/// Full scale of i16 as f32.
const I16_SCALE: f32 = 32_768.0;

/// An i16 sample as f32 in [-1, 1).
pub fn i16_to_f32(sample: i16) -> f32 {
    f32::from(sample) / I16_SCALE
}

/// A signed integer sample of `bits` significant bits (8–32, as hound returns them) as f32.
pub fn int_to_f32(sample: i32, bits: u16) -> f32 {
    let scale = (1_u64 << (bits.clamp(1, 32) - 1)) as f64;
    (f64::from(sample) / scale) as f32
}

/// f32 → i16, rounded, clamped at full scale. NaN becomes 0.
pub fn f32_to_i16(sample: f32) -> i16 {
    // `as` saturates and maps NaN to 0; the clamp only makes the intent explicit.
    (sample * I16_SCALE)
        .round()
        .clamp(-I16_SCALE, I16_SCALE - 1.0) as i16
}

/// Append the mono mix (mean of the channels) of interleaved frames to `out`. A trailing partial
/// frame is ignored.
pub fn downmix_into(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    match channels {
        0 => {}
        1 => out.extend_from_slice(interleaved),
        2 => out.extend(
            interleaved
                .chunks_exact(2)
                .map(|frame| (frame[0] + frame[1]) * 0.5),
        ),
        n => {
            let scale = 1.0 / n as f32;
            out.extend(
                interleaved
                    .chunks_exact(n)
                    .map(|frame| frame.iter().sum::<f32>() * scale),
            );
        }
    }
}

/// Native interleaved f32 frames → mono i16 at the target rate, for one continuous stream.
///
/// Output does not depend on how the input is split into calls (the resampler works on fixed
/// blocks internally), so a microphone's odd callback sizes give the same samples as one call.
/// All buffers are reused: after warm-up, [`push`](Self::push) does not allocate unless `out`
/// must grow.
#[derive(Debug)]
pub struct Converter {
    channels: usize,
    resampler: StreamResampler,
    mono: Vec<f32>,
    resampled: Vec<f32>,
}

impl Converter {
    pub fn new(input_rate: u32, channels: u16, output_rate: u32) -> Result<Self, AudioError> {
        if channels == 0 {
            return Err(AudioError::InvalidOptions(
                "an input with 0 channels".into(),
            ));
        }
        Ok(Self {
            channels: usize::from(channels),
            resampler: StreamResampler::new(input_rate, output_rate)?,
            mono: Vec::new(),
            resampled: Vec::new(),
        })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Convert `interleaved` (whole frames) and append the result to `out`.
    pub fn push(&mut self, interleaved: &[f32], out: &mut Vec<i16>) -> Result<(), AudioError> {
        self.mono.clear();
        downmix_into(interleaved, self.channels, &mut self.mono);
        self.resampled.clear();
        self.resampler.process(&self.mono, &mut self.resampled)?;
        out.extend(self.resampled.iter().map(|&s| f32_to_i16(s)));
        Ok(())
    }

    /// End of the stream: flush the resampler's tail so the output has exactly
    /// `ceil(frames_in × output_rate / input_rate)` samples in total.
    pub fn finish(&mut self, out: &mut Vec<i16>) -> Result<(), AudioError> {
        self.resampled.clear();
        self.resampler.finish(&mut self.resampled)?;
        out.extend(self.resampled.iter().map(|&s| f32_to_i16(s)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i16_round_trips_exactly() {
        for s in [i16::MIN, -12_345, -1, 0, 1, 12_345, i16::MAX] {
            assert_eq!(f32_to_i16(i16_to_f32(s)), s);
        }
    }

    #[test]
    fn integer_widths_scale_to_the_same_value() {
        assert!((int_to_f32(-128, 8) - -1.0).abs() < f32::EPSILON);
        assert!((int_to_f32(64, 8) - 0.5).abs() < f32::EPSILON);
        assert!((int_to_f32(1 << 22, 24) - 0.5).abs() < f32::EPSILON);
        assert!((int_to_f32(i32::MIN, 32) - -1.0).abs() < f32::EPSILON);
        // 24-bit keeps its top 16 bits, rounded: 0x12_3456 → 0x1234 (0x56 < 0x80).
        assert_eq!(f32_to_i16(int_to_f32(0x12_3456, 24)), 0x1234);
        assert_eq!(f32_to_i16(int_to_f32(0x12_3480, 24)), 0x1235);
    }

    #[test]
    fn out_of_range_clamps_and_nan_is_silence() {
        assert_eq!(f32_to_i16(1.5), i16::MAX);
        assert_eq!(f32_to_i16(-7.0), i16::MIN);
        assert_eq!(f32_to_i16(f32::NAN), 0);
    }

    #[test]
    fn downmix_averages_channels() {
        let mut out = Vec::new();
        downmix_into(&[1.0, 0.0, 0.5, 0.5, 0.25], 2, &mut out);
        assert_eq!(out, vec![0.5, 0.5]);
        out.clear();
        downmix_into(&[0.3, 0.3, 0.3, 0.9, 0.0, 0.0], 3, &mut out);
        assert!((out[0] - 0.3).abs() < 1e-6 && (out[1] - 0.3).abs() < 1e-6);
    }

    #[test]
    fn same_rate_mono_is_bit_exact() {
        let input: Vec<i16> = (0..5000)
            .map(|i| ((i * 7919) % 65_536 - 32_768) as i16)
            .collect();
        let floats: Vec<f32> = input.iter().map(|&s| i16_to_f32(s)).collect();
        let mut c = Converter::new(16_000, 1, 16_000).expect("must succeed");
        let mut out = Vec::new();
        c.push(&floats, &mut out).expect("must succeed");
        c.finish(&mut out).expect("must succeed");
        assert_eq!(out, input);
    }
}
