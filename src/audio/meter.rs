//! Level metering: RMS and peak in dBFS per chunk, and whether it clipped.

/// The level of one chunk. dBFS are relative to a full-scale square wave (a full-scale sine
/// reads -3 dB RMS, 0 dB peak); silence reads [`Level::FLOOR_DBFS`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub rms_dbfs: f32,
    pub peak_dbfs: f32,
    /// A sample reached full scale: the input is (or is about to be) clipping.
    pub clipping: bool,
}

impl Level {
    /// The floor reported for digital silence, below the quietest non-zero i16 signal
    /// (one LSB is -90.3 dBFS).
    pub const FLOOR_DBFS: f32 = -96.0;

    /// Silence.
    pub const SILENT: Self = Self {
        rms_dbfs: Self::FLOOR_DBFS,
        peak_dbfs: Self::FLOOR_DBFS,
        clipping: false,
    };
}

impl Default for Level {
    /// Silence, not 0 dBFS: a meter that has seen nothing shows nothing.
    fn default() -> Self {
        Self::SILENT
    }
}

fn dbfs(amplitude: f64) -> f32 {
    if amplitude <= 0.0 {
        return Level::FLOOR_DBFS;
    }
    ((20.0 * amplitude.log10()) as f32).max(Level::FLOOR_DBFS)
}

/// Measure a block of samples.
pub fn measure(samples: &[i16]) -> Level {
    if samples.is_empty() {
        return Level::SILENT;
    }
    let mut peak = 0_i32;
    let mut clipping = false;
    for &s in samples {
        let v = i32::from(s);
        peak = peak.max(v.abs());
        clipping |= s == i16::MAX || s == i16::MIN;
    }
    Level {
        rms_dbfs: dbfs(crate::protocol::audio::rms(samples)),
        peak_dbfs: dbfs(f64::from(peak) / 32_768.0),
        clipping,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_the_floor() {
        assert_eq!(measure(&[0; 800]), Level::SILENT);
        assert_eq!(measure(&[]), Level::SILENT);
        assert_eq!(Level::default(), Level::SILENT);
    }

    #[test]
    fn sine_reads_minus_three_rms() {
        let half_scale: Vec<i16> = (0..1600)
            .map(|i| {
                (16_384.0 * (f64::from(i) * std::f64::consts::TAU / 16.0).sin()).round() as i16
            })
            .collect();
        let level = measure(&half_scale);
        assert!((level.peak_dbfs - -6.02).abs() < 0.05, "{level:?}");
        assert!((level.rms_dbfs - -9.03).abs() < 0.05, "{level:?}");
        assert!(!level.clipping);
    }

    #[test]
    fn full_scale_flags_clipping() {
        let level = measure(&[0, 100, i16::MIN, 5]);
        assert!(level.clipping);
        assert!(level.peak_dbfs.abs() < 1e-6);
        assert!(measure(&[i16::MAX]).clipping);
        assert!(!measure(&[i16::MAX - 1]).clipping);
    }
}
