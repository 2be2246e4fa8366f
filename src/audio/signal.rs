//! Generated test inputs (`test:tone`, `test:noise`, `test:silence`), made directly at the target
//! rate. Every sample is a pure function of (signal, seed, rate, offset), so a test can rebuild
//! exactly what a server received from any offset with [`fill`].

use crate::config::TestSignal;

/// Frequency of `test:tone`: the usual alignment tone.
pub const TONE_HZ: u64 = 1000;
/// Peak of `test:tone`: -15 dBFS, i.e. -18 dBFS RMS (the EBU alignment level).
pub const TONE_PEAK: f64 = 5_827.1;
/// `test:noise` is uniform in ±this: -24 dBFS RMS (amplitude × √3 / 32768 ≈ 0.063).
pub const NOISE_PEAK: i32 = 3_581;

/// Fill `out` with the signal's samples `start..start + out.len()`.
pub fn fill(signal: TestSignal, seed: u64, sample_rate: u32, start: u64, out: &mut [i16]) {
    match signal {
        TestSignal::Silence => out.fill(0),
        TestSignal::Tone => {
            let rate = u64::from(sample_rate.max(1));
            for (n, sample) in (start..).zip(out.iter_mut()) {
                // Phase from integers, so the tone never drifts however long it runs.
                let phase = ((n % rate) * TONE_HZ % rate) as f64 / rate as f64;
                *sample = (TONE_PEAK * (phase * std::f64::consts::TAU).sin()).round() as i16;
            }
        }
        TestSignal::Noise => {
            let span = (2 * NOISE_PEAK + 1) as u64;
            for (n, sample) in (start..).zip(out.iter_mut()) {
                let r = splitmix64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                *sample = ((r % span) as i32 - NOISE_PEAK) as i16;
            }
        }
    }
}

/// SplitMix64's finaliser: a good 64-bit mix, used as a counter-based generator so that any
/// sample can be computed without the ones before it.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An endless signal, read a block at a time.
#[derive(Debug, Clone)]
pub struct SignalSource {
    signal: TestSignal,
    seed: u64,
    sample_rate: u32,
    position: u64,
}

impl SignalSource {
    pub fn new(signal: TestSignal, seed: u64, sample_rate: u32) -> Self {
        Self {
            signal,
            seed,
            sample_rate,
            position: 0,
        }
    }

    pub fn signal(&self) -> TestSignal {
        self.signal
    }

    /// The next `n` samples.
    pub fn next_block(&mut self, n: usize) -> Vec<i16> {
        let mut block = vec![0; n];
        fill(
            self.signal,
            self.seed,
            self.sample_rate,
            self.position,
            &mut block,
        );
        self.position += n as u64;
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::meter;

    #[test]
    fn noise_is_deterministic_and_random_access() {
        let mut a = vec![0; 1000];
        let mut b = vec![0; 1000];
        fill(TestSignal::Noise, 7, 16_000, 0, &mut a);
        fill(TestSignal::Noise, 7, 16_000, 0, &mut b);
        assert_eq!(a, b);
        let mut tail = vec![0; 10];
        fill(TestSignal::Noise, 7, 16_000, 990, &mut tail);
        assert_eq!(&a[990..], &tail[..]);
        fill(TestSignal::Noise, 8, 16_000, 0, &mut b);
        assert_ne!(a, b);
        let level = meter::measure(&a);
        assert!((level.rms_dbfs - -24.0).abs() < 0.5, "{level:?}");
    }

    #[test]
    fn tone_level_and_period() {
        let mut s = SignalSource::new(TestSignal::Tone, 0, 16_000);
        let block = s.next_block(16_000);
        let level = meter::measure(&block);
        assert!((level.rms_dbfs - -18.0).abs() < 0.05, "{level:?}");
        assert!((level.peak_dbfs - -15.0).abs() < 0.05, "{level:?}");
        // 1 kHz at 16 kHz: a period of exactly 16 samples.
        assert_eq!(&block[..16], &block[16..32]);
        assert_eq!(s.next_block(16)[..], block[..16]);
    }

    #[test]
    fn silence_is_zero() {
        let mut s = SignalSource::new(TestSignal::Silence, 0, 16_000);
        assert!(s.next_block(100).iter().all(|&x| x == 0));
    }
}
