//! Audio arithmetic for the wire formats: bytes ↔ duration for `pcm_s16le` and `pcm_mulaw`,
//! the µ-law codec, and the signal level of a block of samples (shared by the level meter, the
//! emulator's voice detector and the client's stall detection).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The service's audio limits per binary message.
pub const MIN_CHUNK_MS: u32 = 50;
pub const MAX_CHUNK_MS: u32 = 1000;
/// The service's read limit for one WebSocket message (larger → close 1009).
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// PCM encodings the service accepts (mono only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    PcmS16le,
    PcmMulaw,
}

impl Encoding {
    pub fn bytes_per_sample(self) -> u32 {
        match self {
            Self::PcmS16le => 2,
            Self::PcmMulaw => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PcmS16le => "pcm_s16le",
            Self::PcmMulaw => "pcm_mulaw",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pcm_s16le" => Some(Self::PcmS16le),
            "pcm_mulaw" => Some(Self::PcmMulaw),
            _ => None,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shape of the audio on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    pub sample_rate: u32,
    pub encoding: Encoding,
}

impl Default for AudioFormat {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            encoding: Encoding::PcmS16le,
        }
    }
}

impl AudioFormat {
    pub fn new(sample_rate: u32, encoding: Encoding) -> Self {
        Self {
            sample_rate,
            encoding,
        }
    }

    pub fn bytes_per_second(self) -> u64 {
        u64::from(self.sample_rate) * u64::from(self.encoding.bytes_per_sample())
    }

    /// Duration of `bytes` of audio, in (fractional) milliseconds.
    pub fn millis_of_bytes(self, bytes: u64) -> f64 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        bytes as f64 * 1000.0 / self.bytes_per_second() as f64
    }

    pub fn duration_of_bytes(self, bytes: u64) -> Duration {
        Duration::from_secs_f64(self.millis_of_bytes(bytes) / 1000.0)
    }

    /// Bytes needed for `ms` milliseconds (whole samples, rounded down).
    pub fn bytes_for_millis(self, ms: u32) -> usize {
        self.samples_for_millis(ms) * self.encoding.bytes_per_sample() as usize
    }

    pub fn samples_for_millis(self, ms: u32) -> usize {
        (u64::from(self.sample_rate) * u64::from(ms) / 1000) as usize
    }

    pub fn samples_of_bytes(self, bytes: u64) -> u64 {
        bytes / u64::from(self.encoding.bytes_per_sample())
    }

    /// Milliseconds of audio in `samples` samples.
    pub fn millis_of_samples(self, samples: u64) -> u64 {
        if self.sample_rate == 0 {
            return 0;
        }
        samples * 1000 / u64::from(self.sample_rate)
    }

    /// Whether one message of `bytes` respects the service's 50–1000 ms rule.
    pub fn chunk_is_legal(self, bytes: u64) -> bool {
        let ms = self.millis_of_bytes(bytes);
        (f64::from(MIN_CHUNK_MS)..=f64::from(MAX_CHUNK_MS)).contains(&ms)
    }
}

/// G.711 µ-law encode of one 16-bit sample.
pub fn mulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(CLIP) + BIAS;
    let exponent = (7 - (pcm.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (pcm >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// G.711 µ-law decode of one byte.
pub fn mulaw_decode(byte: u8) -> i16 {
    let byte = !byte;
    let sign = byte & 0x80;
    let exponent = i32::from((byte >> 4) & 0x07);
    let mantissa = i32::from(byte & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign == 0 { magnitude } else { -magnitude }) as i16
}

/// Root-mean-square level of `samples` relative to full scale (0.0 for silence or no samples,
/// 1.0 for a full-scale square wave).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt() / 32_768.0
}

/// Decode a little-endian s16 buffer (a trailing odd byte is ignored).
pub fn s16le_samples(bytes: &[u8]) -> impl Iterator<Item = i16> + '_ {
    bytes
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_of_silence_square_and_sine() {
        assert!(rms(&[]).abs() < f64::EPSILON);
        assert!(rms(&[0; 160]).abs() < f64::EPSILON);
        assert!((rms(&[i16::MIN; 160]) - 1.0).abs() < 1e-9);
        let sine: Vec<i16> = (0..1600)
            .map(|i| (16_384.0 * (f64::from(i) * std::f64::consts::TAU / 16.0).sin()) as i16)
            .collect();
        assert!(
            (rms(&sine) - 0.5 / 2_f64.sqrt()).abs() < 1e-3,
            "{}",
            rms(&sine)
        );
    }

    #[test]
    fn s16le_at_16k_matches_the_documented_sizes() {
        let f = AudioFormat::default();
        assert_eq!(f.bytes_for_millis(50), 1600);
        assert_eq!(f.bytes_for_millis(1000), 32_000);
        assert!((f.millis_of_bytes(1600) - 50.0).abs() < f64::EPSILON);
        assert!(f.chunk_is_legal(1600));
        assert!(f.chunk_is_legal(32_000));
        assert!(!f.chunk_is_legal(1598));
        assert!(!f.chunk_is_legal(32_002));
    }

    #[test]
    fn mulaw_and_other_rates() {
        let f = AudioFormat::new(8000, Encoding::PcmMulaw);
        assert_eq!(f.bytes_for_millis(50), 400);
        assert_eq!(f.bytes_per_second(), 8000);
        let f = AudioFormat::new(44_100, Encoding::PcmS16le);
        assert_eq!(f.samples_for_millis(100), 4410);
        assert_eq!(f.duration_of_bytes(88_200), Duration::from_secs(1));
        assert_eq!(f.millis_of_samples(44_100), 1000);
    }

    #[test]
    fn mulaw_round_trip_is_close() {
        for s in [-32_768_i16, -1000, -1, 0, 1, 1000, 12_345, 32_767] {
            let back = mulaw_decode(mulaw_encode(s));
            let tolerance = (i32::from(s).abs() / 16).max(8);
            assert!(
                (i32::from(back) - i32::from(s)).abs() <= tolerance,
                "{s} -> {back}"
            );
        }
        assert_eq!(mulaw_encode(0), 0xFF);
    }
}
