//! Sample conversion: native PCM (any integer width, float) → f32, channel downmix, and f32 → i16;
//! plus [`Converter`], which chains sanitise → downmix → resample → i16 for one source.
//!
//! Scaling is symmetric around full scale 2^(bits-1), so an i16 survives i16 → f32 → i16
//! unchanged: sources already in the target format (16 kHz mono s16) reach the wire bit-exact.
//!
//! Float sources (the microphone, float WAVs, stdin `f32le`) can hold NaN or ±Inf. One such
//! sample reaching the FFT resampler poisons a whole block and makes it panic, so the converter
//! replaces every non-finite sample with silence before anything else sees it, counts them
//! ([`Converter::non_finite`]) and logs one warning per input.

use std::ops::RangeInclusive;

use super::AudioError;
use super::resample::StreamResampler;

/// Native sample rates the converter accepts, in Hz. Below 8 kHz is not speech-grade audio (and a
/// 1 Hz header made the resampler allocate hundreds of MB); above 384 kHz no audio interface
/// records (and 2^31 Hz asked for an 8 GiB FFT). WAV headers are checked against it when the
/// file is opened, stdin's declared rate by the configuration.
pub const NATIVE_RATES: RangeInclusive<u32> = 8_000..=384_000;

/// Native channel counts the converter accepts: beyond 32 is no recording a speech service
/// should get, and each channel costs a pass of the downmix.
pub const NATIVE_CHANNELS: RangeInclusive<u16> = 1..=32;

/// Largest finite magnitude passed to the resampler; anything beyond is clipped to it. Far above
/// full scale (1.0, where the i16 conversion clips anyway), far below where the FFT's sums could
/// overflow f32 into ±Inf and NaN.
const MAX_MAGNITUDE: f32 = 1.0e6;

/// Check a native format against [`NATIVE_RATES`] and [`NATIVE_CHANNELS`]. The error names the
/// value and the range: "a sample rate of 1 Hz, outside the 8000-384000 Hz aai-live reads".
pub fn check_native(rate: u32, channels: u16) -> Result<(), String> {
    if !NATIVE_RATES.contains(&rate) {
        return Err(format!(
            "a sample rate of {rate} Hz, outside the {}-{} Hz aai-live reads",
            NATIVE_RATES.start(),
            NATIVE_RATES.end()
        ));
    }
    if !NATIVE_CHANNELS.contains(&channels) {
        return Err(format!(
            "{channels} channels, outside the {}-{} channels aai-live reads",
            NATIVE_CHANNELS.start(),
            NATIVE_CHANNELS.end()
        ));
    }
    Ok(())
}

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
    /// A sanitised copy of the input, used only when it held a non-finite sample.
    clean: Vec<f32>,
    /// Native samples (not frames) that were NaN or ±Inf and became silence, since the start.
    non_finite: u64,
    /// What the one warning about non-finite samples calls the input.
    name: String,
}

impl Converter {
    /// A converter for one stream of `channels`-channel audio at `input_rate`. The native format
    /// must be within [`NATIVE_RATES`] and [`NATIVE_CHANNELS`], checked before any resampler is
    /// built (its buffers grow with the rate ratio).
    pub fn new(input_rate: u32, channels: u16, output_rate: u32) -> Result<Self, AudioError> {
        check_native(input_rate, channels).map_err(AudioError::InvalidOptions)?;
        Ok(Self {
            channels: usize::from(channels),
            resampler: StreamResampler::new(input_rate, output_rate)?,
            mono: Vec::new(),
            resampled: Vec::new(),
            clean: Vec::new(),
            non_finite: 0,
            name: "the audio input".to_owned(),
        })
    }

    /// Name the input in the warning about non-finite samples (`stdin`, `file: talk.wav`).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Native samples that were NaN or ±Inf and were replaced with silence, since the start: for
    /// the input's statistics.
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }

    /// Convert `interleaved` (whole frames) and append the result to `out`.
    pub fn push(&mut self, interleaved: &[f32], out: &mut Vec<i16>) -> Result<(), AudioError> {
        self.mono.clear();
        // The common case (every sample a sane finite number) costs one scan and no copy.
        if interleaved
            .iter()
            .all(|s| s.is_finite() && s.abs() <= MAX_MAGNITUDE)
        {
            downmix_into(interleaved, self.channels, &mut self.mono);
        } else {
            self.sanitise(interleaved);
            downmix_into(&self.clean, self.channels, &mut self.mono);
        }
        self.resampled.clear();
        self.resampler.process(&self.mono, &mut self.resampled)?;
        out.extend(self.resampled.iter().map(|&s| f32_to_i16(s)));
        Ok(())
    }

    /// Copy `interleaved` into `clean` with NaN and ±Inf replaced by 0 (counted, and warned about
    /// once) and huge finite values clipped to ±[`MAX_MAGNITUDE`].
    fn sanitise(&mut self, interleaved: &[f32]) {
        let before = self.non_finite;
        self.clean.clear();
        self.clean.extend(interleaved.iter().map(|&s| {
            if s.is_finite() {
                s.clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE)
            } else {
                self.non_finite += 1;
                0.0
            }
        }));
        if before == 0 && self.non_finite > 0 {
            tracing::warn!(
                target: "aai_live::audio",
                input = %self.name,
                "{} holds NaN or infinite samples; they are replaced with silence (counted in \
                 the input's statistics, this is said once)",
                self.name
            );
        }
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

    /// Counts WARN events.
    struct Warnings(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if *event.metadata().level() == tracing::Level::WARN {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn non_finite_samples_become_silence_counted_and_warned_once() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let warnings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(Warnings(warnings.clone()));
        tracing::subscriber::with_default(subscriber, || {
            // Resampled (48 kHz stereo → 16 kHz), where a NaN used to make rubato panic.
            let mut c = Converter::new(48_000, 2, 16_000)
                .expect("must succeed")
                .named("stdin");
            let mut out = Vec::new();
            let mut frames = vec![0.25_f32; 2 * 4800];
            frames[100] = f32::NAN;
            frames[2001] = f32::INFINITY;
            frames[5000] = f32::NEG_INFINITY;
            frames[6000] = f32::MAX;
            for piece in frames.chunks(2 * 700) {
                c.push(piece, &mut out).expect("must succeed");
            }
            c.push(&[f32::NAN, f32::NAN], &mut out)
                .expect("must succeed");
            c.finish(&mut out).expect("must succeed");
            assert_eq!(c.non_finite(), 5);
            assert_eq!(out.len(), 1601, "4801 frames at 48 kHz");
            // Huge finite values overflow the FFT's sums into ±Inf (and a panic): clipped first.
            let mut c = Converter::new(48_000, 1, 16_000).expect("must succeed");
            let mut out = Vec::new();
            let huge: Vec<f32> = (0..4800)
                .map(|i| if i % 2 == 0 { f32::MAX } else { -3e37 })
                .collect();
            c.push(&huge, &mut out).expect("must succeed");
            c.finish(&mut out).expect("must succeed");
            assert_eq!((out.len(), c.non_finite()), (1600, 0));
            // Same rate: ±Inf is silence too, not full scale.
            let mut c = Converter::new(16_000, 1, 16_000).expect("must succeed");
            let mut out = Vec::new();
            c.push(&[0.5, f32::INFINITY, f32::NEG_INFINITY, f32::NAN], &mut out)
                .expect("must succeed");
            assert_eq!(out, vec![16_384, 0, 0, 0]);
            assert_eq!(c.non_finite(), 3);
        });
        assert_eq!(
            warnings.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "one warning per input (two converters), not one per sample"
        );
    }

    #[test]
    fn native_formats_out_of_range_are_refused_before_a_resampler_is_built() {
        for (rate, channels, needle) in [
            (1, 1, "1 Hz"),
            (7_999, 1, "7999 Hz"),
            (384_001, 2, "384001 Hz"),
            (i32::MAX as u32, 1, "2147483647 Hz"),
            (48_000, 0, "0 channels"),
            (48_000, 33, "33 channels"),
        ] {
            let e = Converter::new(rate, channels, 16_000)
                .expect_err("out of range")
                .to_string();
            assert!(e.contains(needle) && e.contains("aai-live reads"), "{e}");
        }
        for (rate, channels) in [(8_000, 1), (384_000, 32), (44_100, 2)] {
            assert!(Converter::new(rate, channels, 16_000).is_ok());
        }
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
