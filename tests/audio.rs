//! Audio input through the public API: every WAV sample format, resampling accuracy, chunking,
//! stdin parsing, test signals, metering, stopping, and every error a user can meet.
//! Fixture audio is generated here with hound; nothing is read from the network.

use std::io::Read;
use std::path::{Path, PathBuf};

use aai_live::audio::{
    self, AudioChunk, AudioError, AudioInput, AudioOptions, InputEnd, Pace, signal,
};
use aai_live::config::{InputSpec, SampleFormat, StdinFormat, TestSignal};
use aai_live::protocol::Encoding;

fn unpaced() -> AudioOptions {
    AudioOptions {
        pace: Pace::Unpaced,
        ..AudioOptions::default()
    }
}

/// Every chunk of a finite input, checking exactness on the way: contiguous offsets and full
/// chunks except the last.
async fn collect(mut input: AudioInput, chunk: usize) -> Vec<AudioChunk> {
    let mut chunks: Vec<AudioChunk> = Vec::new();
    while let Some(c) = input.chunks.recv().await {
        if let Some(prev) = chunks.last() {
            assert_eq!(
                prev.samples.len(),
                chunk,
                "only the last chunk may be short"
            );
            assert_eq!(c.offset, prev.end(), "offsets are contiguous");
        } else {
            assert_eq!(c.offset, 0);
        }
        assert!(!c.samples.is_empty() && c.samples.len() <= chunk);
        chunks.push(c);
    }
    assert_eq!(input.stats.borrow().ended, Some(InputEnd::Finished));
    chunks
}

fn samples(chunks: &[AudioChunk]) -> Vec<i16> {
    chunks
        .iter()
        .flat_map(|c| c.samples.iter().copied())
        .collect()
}

fn write_wav<S: hound::Sample + Copy>(path: &Path, spec: hound::WavSpec, data: &[S]) {
    let mut writer = hound::WavWriter::create(path, spec).expect("create wav");
    for &s in data {
        writer.write_sample(s).expect("write sample");
    }
    writer.finalize().expect("finalize wav");
}

fn spec(rate: u32, channels: u16, bits: u16, float: bool) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    }
}

/// A varied i16 test pattern covering the whole range, both extremes included.
fn pattern(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| match i % 5 {
            0 => i16::MIN,
            1 => i16::MAX,
            _ => ((i * 7919 % 65_536) as i32 - 32_768) as i16,
        })
        .collect()
}

async fn open_file(path: &Path, options: &AudioOptions) -> Result<AudioInput, AudioError> {
    audio::open(&InputSpec::File(path.to_owned()), options).await
}

#[tokio::test]
async fn every_wav_sample_format_converts_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = pattern(16_000 + 123);
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        ("i16", dir.path().join("i16.wav"), "i16"),
        ("i24", dir.path().join("i24.wav"), "i24"),
        ("i32", dir.path().join("i32.wav"), "i32"),
        ("f32", dir.path().join("f32.wav"), "f32"),
    ];
    write_wav(&cases[0].1, spec(16_000, 1, 16, false), &expected);
    let i24: Vec<i32> = expected.iter().map(|&s| i32::from(s) << 8).collect();
    write_wav(&cases[1].1, spec(16_000, 1, 24, false), &i24);
    let i32s: Vec<i32> = expected.iter().map(|&s| i32::from(s) << 16).collect();
    write_wav(&cases[2].1, spec(16_000, 1, 32, false), &i32s);
    let floats: Vec<f32> = expected.iter().map(|&s| f32::from(s) / 32_768.0).collect();
    write_wav(&cases[3].1, spec(16_000, 1, 32, true), &floats);
    for (label, path, native) in &cases {
        let input = open_file(path, &unpaced()).await.expect("open");
        assert_eq!(input.name, format!("file: {}", path.display()));
        let format = input.native_format();
        assert_eq!(
            (format.sample.as_str(), format.sample_rate, format.channels),
            (*native, 16_000, 1)
        );
        let got = samples(&collect(input, 800).await);
        assert_eq!(got, expected, "{label}");
    }

    // 8-bit WAV is unsigned; hound centres it, and each step is 256 in i16.
    let path = dir.path().join("u8.wav");
    let eight: Vec<i8> = (0..1000).map(|i| ((i * 37) % 256 - 128) as i8).collect();
    write_wav(&path, spec(16_000, 1, 8, false), &eight);
    let input = open_file(&path, &unpaced()).await.expect("open");
    assert_eq!(input.native_format().sample, "u8");
    let got = samples(&collect(input, 800).await);
    let want: Vec<i16> = eight.iter().map(|&s| i16::from(s) << 8).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn stereo_is_downmixed_to_the_mean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stereo.wav");
    let frames: Vec<i16> = (0..4000)
        .flat_map(|i| [(i * 4) as i16, -((i * 2) as i16)])
        .collect();
    write_wav(&path, spec(16_000, 2, 16, false), &frames);
    let got = samples(&collect(open_file(&path, &unpaced()).await.expect("open"), 800).await);
    let want: Vec<i16> = (0..4000).map(|i| i as i16).collect();
    assert_eq!(got, want);
}

/// Sine of `freq` Hz at `amplitude` (full scale 1.0).
fn sine(rate: u32, freq: f64, amplitude: f64, frames: usize) -> Vec<f64> {
    (0..frames)
        .map(|n| amplitude * (std::f64::consts::TAU * freq * n as f64 / f64::from(rate)).sin())
        .collect()
}

/// Frequency from the first and last rising zero crossings (interpolated).
fn frequency(samples: &[i16], rate: u32) -> f64 {
    let mut crossings = Vec::new();
    for i in 1..samples.len() {
        let (a, b) = (f64::from(samples[i - 1]), f64::from(samples[i]));
        if a < 0.0 && b >= 0.0 {
            crossings.push((i - 1) as f64 + a / (a - b));
        }
    }
    let (first, last) = (crossings[0], crossings[crossings.len() - 1]);
    (crossings.len() - 1) as f64 * f64::from(rate) / (last - first)
}

fn rms_dbfs(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    20.0 * ((sum / samples.len() as f64).sqrt() / 32_768.0).log10()
}

/// Share of the energy at `freq` (a least-squares fit of sine and cosine): 1.0 for a pure tone.
fn purity(samples: &[i16], rate: u32, freq: f64) -> f64 {
    let (mut s, mut c, mut total) = (0.0, 0.0, 0.0);
    for (n, &x) in samples.iter().enumerate() {
        let x = f64::from(x);
        let phase = std::f64::consts::TAU * freq * n as f64 / f64::from(rate);
        s += x * phase.sin();
        c += x * phase.cos();
        total += x * x;
    }
    let n = samples.len() as f64;
    2.0 * (s * s + c * c) / n / total
}

#[tokio::test]
async fn resampling_keeps_a_1khz_tone_at_1khz_and_its_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 48 kHz stereo f32 (the common microphone format) and 44.1 kHz stereo i16 (CD), 2 s each.
    let cases = [(48_000_u32, true), (44_100, false)];
    for (rate, float) in cases {
        let tone = sine(rate, 1000.0, 0.5, rate as usize * 2);
        let path = dir.path().join(format!("tone{rate}.wav"));
        if float {
            let data: Vec<f32> = tone.iter().flat_map(|&x| [x as f32, x as f32]).collect();
            write_wav(&path, spec(rate, 2, 32, true), &data);
        } else {
            let data: Vec<i16> = tone
                .iter()
                .flat_map(|&x| {
                    let s = (x * 32_768.0).round() as i16;
                    [s, s]
                })
                .collect();
            write_wav(&path, spec(rate, 2, 16, false), &data);
        }
        let got = samples(&collect(open_file(&path, &unpaced()).await.expect("open"), 800).await);
        assert_eq!(got.len(), 32_000, "{rate} Hz: 2 s at 16 kHz");
        // Away from the edges, where the input starts and stops abruptly.
        let steady = &got[1600..30_400];
        let f = frequency(steady, 16_000);
        assert!((f - 1000.0).abs() < 0.5, "{rate} Hz: tone at {f} Hz");
        let level = rms_dbfs(steady);
        let expected = 20.0 * (0.5 / 2_f64.sqrt()).log10();
        assert!(
            (level - expected).abs() < 0.5,
            "{rate} Hz: {level:.2} dBFS, want {expected:.2}"
        );
        assert!(
            purity(steady, 16_000, 1000.0) > 0.999,
            "{rate} Hz: not a pure tone"
        );
    }
}

#[tokio::test]
async fn odd_rates_and_channel_counts_give_exact_lengths() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (rate, channels, frames) in [
        (8000_u32, 1_u16, 8001_usize),
        (22_050, 3, 22_050),
        (96_000, 6, 9_601),
    ] {
        let path = dir.path().join(format!("r{rate}c{channels}.wav"));
        let data = vec![1000_i16; frames * usize::from(channels)];
        write_wav(&path, spec(rate, channels, 16, false), &data);
        let got = samples(&collect(open_file(&path, &unpaced()).await.expect("open"), 800).await);
        let want = (frames as u64 * 16_000).div_ceil(u64::from(rate)) as usize;
        assert_eq!(got.len(), want, "{rate} Hz × {channels}");
        // A constant stays constant (DC passes the filter), away from the edges.
        let mid = &got[want / 4..want * 3 / 4];
        assert!(
            mid.iter().all(|&s| (i32::from(s) - 1000).abs() <= 8),
            "{rate} Hz: {:?}",
            &mid[..8]
        );
    }
}

#[tokio::test]
async fn a_looping_file_keeps_offsets_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("short.wav");
    let data = pattern(1000);
    write_wav(&path, spec(16_000, 1, 16, false), &data);
    let options = AudioOptions {
        loop_input: true,
        ..unpaced()
    };
    let mut input = open_file(&path, &options).await.expect("open");
    let mut got = Vec::new();
    let mut next = 0;
    for _ in 0..10 {
        let chunk = input
            .chunks
            .recv()
            .await
            .expect("a looping file does not end");
        assert_eq!(chunk.offset, next);
        assert_eq!(chunk.samples.len(), 800);
        next = chunk.end();
        got.extend(chunk.samples);
    }
    let want: Vec<i16> = data.iter().copied().cycle().take(8000).collect();
    assert_eq!(got, want);
    assert!(
        input.stats.borrow().loops >= 7,
        "{:?}",
        input.stats.borrow()
    );
}

#[tokio::test]
async fn test_noise_is_byte_exact_for_its_seed() {
    let options = AudioOptions {
        seed: 42,
        ..unpaced()
    };
    let mut input = audio::open(&InputSpec::Test(TestSignal::Noise), &options)
        .await
        .expect("open");
    assert_eq!(input.name, "test:noise");
    let mut wire = Vec::new();
    for _ in 0..20 {
        let chunk = input.chunks.recv().await.expect("noise is endless");
        wire.extend(chunk.encode(Encoding::PcmS16le));
    }
    let mut expected = vec![0_i16; 16_000];
    signal::fill(TestSignal::Noise, 42, 16_000, 0, &mut expected);
    assert_eq!(wire, audio::encode(&expected, Encoding::PcmS16le));
    assert_eq!(wire.len(), 32_000);
}

#[tokio::test]
async fn tone_and_silence_meter_as_expected() {
    let mut tone = audio::open(&InputSpec::Test(TestSignal::Tone), &unpaced())
        .await
        .expect("open");
    let chunk = tone.chunks.recv().await.expect("chunk");
    assert_eq!(chunk.samples.len(), 800);
    let level = *tone.level.borrow();
    assert!((level.rms_dbfs - -18.0).abs() < 0.1, "{level:?}");
    assert!(!level.clipping);
    assert!((frequency(&chunk.samples, 16_000) - 1000.0).abs() < 1.0);

    let mut silence = audio::open(&InputSpec::Test(TestSignal::Silence), &unpaced())
        .await
        .expect("open");
    let chunk = silence.chunks.recv().await.expect("chunk");
    assert!(chunk.samples.iter().all(|&s| s == 0));
    assert_eq!(*silence.level.borrow(), audio::Level::SILENT);
    let stats = silence.stats.borrow().clone();
    assert_eq!(
        (stats.input.as_str(), stats.sample_rate),
        ("test:silence", 16_000)
    );
    assert!(stats.chunks >= 1 && stats.samples == stats.chunks * 800);
}

#[tokio::test]
async fn clipping_is_flagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("loud.wav");
    // Float beyond full scale: clamped, and flagged.
    write_wav(&path, spec(16_000, 1, 32, true), &vec![1.5_f32; 800]);
    let mut input = open_file(&path, &unpaced()).await.expect("open");
    let chunk = input.chunks.recv().await.expect("chunk");
    assert!(chunk.samples.iter().all(|&s| s == i16::MAX));
    assert!(input.level.borrow().clipping);
}

#[tokio::test]
async fn dropping_the_input_stops_it() {
    let input = audio::open(&InputSpec::Test(TestSignal::Tone), &AudioOptions::default())
        .await
        .expect("open");
    let mut stats = input.stats.clone();
    drop(input);
    let ended = stats
        .wait_for(|s| s.ended.is_some())
        .await
        .expect("stats outlive the input")
        .ended
        .clone();
    assert_eq!(ended, Some(InputEnd::Stopped));
}

/// A reader that hands out its bytes in awkward sizes: frames split across reads.
struct Dribble {
    data: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    turn: usize,
    fail_at_end: bool,
}

impl Read for Dribble {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.data.len() {
            if self.fail_at_end {
                return Err(std::io::Error::other("device unplugged"));
            }
            return Ok(0);
        }
        let n = self.sizes[self.turn % self.sizes.len()]
            .min(buf.len())
            .min(self.data.len() - self.at);
        self.turn += 1;
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn dribble(data: Vec<u8>) -> Dribble {
    Dribble {
        data,
        at: 0,
        sizes: vec![1, 3, 7, 1600, 333, 2],
        turn: 0,
        fail_at_end: false,
    }
}

#[tokio::test]
async fn stdin_s16le_is_parsed_exactly_across_split_reads() {
    let expected = pattern(8000 + 17);
    let mut bytes = audio::encode(&expected, Encoding::PcmS16le);
    bytes.push(0x7F); // half a sample at the end: dropped
    let format: StdinFormat = "s16le:16000:1".parse().expect("format");
    let input = audio::open_raw_reader(dribble(bytes), "stdin", format, &unpaced()).expect("open");
    assert_eq!(input.name, "stdin");
    assert_eq!(input.native_format().to_string(), "s16le 16000 Hz 1 ch");
    assert_eq!(samples(&collect(input, 800).await), expected);
}

#[tokio::test]
async fn stdin_f32le_stereo_48k_is_resampled() {
    let tone = sine(48_000, 1000.0, 0.25, 48_000);
    let bytes: Vec<u8> = tone
        .iter()
        .flat_map(|&x| [x as f32, x as f32])
        .flat_map(f32::to_le_bytes)
        .collect();
    let format = StdinFormat {
        sample: SampleFormat::F32le,
        rate: 48_000,
        channels: 2,
    };
    let input = audio::open_raw_reader(dribble(bytes), "stdin", format, &unpaced()).expect("open");
    let got = samples(&collect(input, 800).await);
    assert_eq!(got.len(), 16_000);
    assert!((frequency(&got[800..15_200], 16_000) - 1000.0).abs() < 0.5);
}

/// 1 s of a 1 kHz tone at 48 kHz with NaN, +Inf and -Inf in it.
fn tone_with_non_finite() -> Vec<f32> {
    let mut tone: Vec<f32> = sine(48_000, 1000.0, 0.25, 48_000)
        .iter()
        .map(|&x| x as f32)
        .collect();
    tone[4_800] = f32::NAN;
    tone[24_000] = f32::INFINITY;
    tone[40_000] = f32::NEG_INFINITY;
    tone
}

#[tokio::test]
async fn nan_and_inf_on_stdin_become_silence_and_the_input_goes_on() {
    // Once, one NaN made the resampler panic: the input ended after 100 ms, silently.
    let bytes: Vec<u8> = tone_with_non_finite()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let format: StdinFormat = "f32le:48000:1".parse().expect("format");
    let input = audio::open_raw_reader(dribble(bytes), "stdin", format, &unpaced()).expect("open");
    let stats = input.stats.clone();
    let got = samples(&collect(input, 800).await);
    assert_eq!(got.len(), 16_000, "every sample after the NaN is delivered");
    assert_eq!(
        stats.borrow().non_finite,
        3,
        "counted in the input's statistics"
    );
    assert!((frequency(&got[14_000..15_800], 16_000) - 1000.0).abs() < 1.0);
}

#[tokio::test]
async fn nan_and_inf_in_a_float_wav_become_silence_and_the_file_plays_to_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nan.wav");
    write_wav(&path, spec(48_000, 1, 32, true), &tone_with_non_finite());
    let input = open_file(&path, &unpaced()).await.expect("open");
    let stats = input.stats.clone();
    let got = samples(&collect(input, 800).await);
    assert_eq!(got.len(), 16_000);
    assert_eq!(
        stats.borrow().non_finite,
        3,
        "counted in the input's statistics"
    );
    assert!((frequency(&got[14_000..15_800], 16_000) - 1000.0).abs() < 1.0);
}

#[tokio::test]
async fn a_stdin_read_error_ends_the_input_with_the_reason() {
    let mut reader = dribble(vec![0; 3200]);
    reader.fail_at_end = true;
    let format: StdinFormat = "s16le:16000:1".parse().expect("format");
    let mut input = audio::open_raw_reader(reader, "stdin", format, &unpaced()).expect("open");
    let mut got = 0;
    while let Some(c) = input.chunks.recv().await {
        got += c.samples.len();
    }
    assert_eq!(got, 1600, "the audio before the error is delivered");
    let ended = input.stats.borrow().ended.clone();
    match ended {
        Some(InputEnd::Failed(reason)) => {
            assert!(
                reason.contains("stdin") && reason.contains("device unplugged"),
                "{reason}"
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn stdin_format_errors_say_what_is_expected() {
    for (text, needle) in [
        ("s16le:16000", "FORMAT:RATE:CHANNELS"),
        ("s24le:16000:1", "sample format"),
        ("s16le:100:1", "rate must be"),
        ("f32le:48000:0", "channels must be"),
    ] {
        let e = text.parse::<StdinFormat>().expect_err(text);
        assert!(e.contains(needle), "{text}: {e}");
    }
}

async fn open_error(path: &Path) -> String {
    open_file(path, &unpaced())
        .await
        .expect_err("must fail")
        .to_string()
}

#[tokio::test]
async fn file_errors_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.wav");
    let e = open_error(&missing).await;
    assert!(
        e.contains("nope.wav") && e.contains("does not exist"),
        "{e}"
    );

    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").expect("write");
    assert!(
        open_error(&empty)
            .await
            .contains("not a WAV file: the file is empty")
    );

    let text = dir.path().join("notes.wav");
    std::fs::write(&text, b"these are my meeting notes, not audio").expect("write");
    let e = open_error(&text).await;
    assert!(
        e.contains("is not a WAV file") && e.contains("RIFF/WAVE") && e.contains("ffmpeg"),
        "{e}"
    );

    let mp3 = dir.path().join("talk.wav");
    std::fs::write(&mp3, b"ID3\x04\0\0\0\0\0\x21 and then mp3 frames").expect("write");
    assert!(open_error(&mp3).await.contains("looks like MP3 audio"));

    // A WAV cut short: its header promises more than the file holds.
    let whole = dir.path().join("whole.wav");
    write_wav(&whole, spec(16_000, 1, 16, false), &pattern(16_000));
    let bytes = std::fs::read(&whole).expect("read");
    let cut = dir.path().join("cut.wav");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let e = open_error(&cut).await;
    assert!(
        e.contains("cut.wav is truncated") && e.contains("declares 32000 bytes"),
        "{e}"
    );
    std::fs::write(&cut, &bytes[..30]).expect("write");
    assert!(
        open_error(&cut).await.contains("is truncated"),
        "header cut"
    );

    let silent = dir.path().join("silent.wav");
    write_wav::<i16>(&silent, spec(16_000, 1, 16, false), &[]);
    assert!(open_error(&silent).await.contains("contains no audio"));

    // A-law (format tag 6): a real WAV, but not PCM.
    let mut alaw = bytes[..44].to_vec();
    alaw[20] = 6;
    alaw[34] = 8; // 8 bits per sample
    alaw[32] = 1; // block align
    alaw[40..44].copy_from_slice(&4_u32.to_le_bytes());
    alaw.extend([0xD5; 4]);
    let alaw_path = dir.path().join("alaw.wav");
    std::fs::write(&alaw_path, &alaw).expect("write");
    let e = open_error(&alaw_path).await;
    assert!(e.contains("cannot read") || e.contains("not a WAV"), "{e}");

    #[cfg(unix)]
    {
        let dir_as_file = dir.path().to_owned();
        let e = open_error(&dir_as_file).await;
        assert!(e.contains(&dir_as_file.display().to_string()), "{e}");
    }
}

/// A 16-bit WAV's bytes with the header's channel count and rate replaced (block align and byte
/// rate kept consistent), as a hostile or broken writer could produce.
fn patched_wav(whole: &[u8], rate: u32, channels: u16) -> Vec<u8> {
    let mut bytes = whole.to_vec();
    let block_align = channels.wrapping_mul(2);
    bytes[22..24].copy_from_slice(&channels.to_le_bytes());
    bytes[24..28].copy_from_slice(&rate.to_le_bytes());
    bytes[28..32].copy_from_slice(&rate.wrapping_mul(u32::from(block_align)).to_le_bytes());
    bytes[32..34].copy_from_slice(&block_align.to_le_bytes());
    bytes
}

#[tokio::test]
async fn absurd_header_rates_and_channel_counts_are_refused_up_front() {
    // A 1 Hz header once took 705 MB from a 32 KB file; 2^31-1 Hz an 8 GiB allocation and SIGABRT.
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = dir.path().join("whole.wav");
    write_wav(&whole, spec(16_000, 1, 16, false), &pattern(16_000));
    let bytes = std::fs::read(&whole).expect("read");
    for (rate, channels, needle) in [
        (1, 1, "a sample rate of 1 Hz, outside the 8000-384000 Hz"),
        (i32::MAX as u32, 1, "a sample rate of 2147483647 Hz"),
        (7_999, 1, "7999 Hz"),
        (384_001, 1, "384001 Hz"),
        (16_000, 40, "40 channels, outside the 1-32 channels"),
    ] {
        let path = dir.path().join(format!("absurd-{rate}-{channels}.wav"));
        std::fs::write(&path, patched_wav(&bytes, rate, channels)).expect("write");
        let e = open_error(&path).await;
        assert!(
            e.contains(&path.display().to_string()) && e.contains(needle),
            "{rate} Hz, {channels} ch: {e}"
        );
    }
    // The edges of the range are read.
    for (rate, channels) in [(8_000, 1), (384_000, 1), (16_000, 32)] {
        let path = dir.path().join(format!("edge-{rate}-{channels}.wav"));
        std::fs::write(&path, patched_wav(&bytes, rate, channels)).expect("write");
        let input = open_file(&path, &unpaced())
            .await
            .expect("the edges are read");
        assert_eq!(input.native_format().sample_rate, rate);
    }
}

#[test]
fn stdin_format_bounds_agree_with_what_the_converter_reads() {
    use aai_live::audio::convert::{NATIVE_CHANNELS, NATIVE_RATES};
    let (low, high) = (*NATIVE_RATES.start(), *NATIVE_RATES.end());
    let (few, many) = (*NATIVE_CHANNELS.start(), *NATIVE_CHANNELS.end());
    for ok in [format!("s16le:{low}:{few}"), format!("f32le:{high}:{many}")] {
        let format: StdinFormat = ok.parse().expect(&ok);
        assert!(audio::convert::Converter::new(format.rate, format.channels, 16_000).is_ok());
    }
    for bad in [
        format!("s16le:{}:1", low - 1),
        format!("s16le:{}:1", high + 1),
        format!("s16le:16000:{}", few - 1),
        format!("s16le:16000:{}", many + 1),
    ] {
        assert!(bad.parse::<StdinFormat>().is_err(), "{bad}");
    }
}

#[tokio::test]
async fn options_out_of_the_services_range_are_refused() {
    let options = AudioOptions {
        chunk_ms: 20,
        ..unpaced()
    };
    let e = audio::open(&InputSpec::Test(TestSignal::Tone), &options)
        .await
        .expect_err("20 ms chunks")
        .to_string();
    assert!(e.contains("50-1000 ms"), "{e}");
}

#[cfg(not(feature = "mic"))]
#[tokio::test]
async fn without_the_mic_feature_the_microphone_is_refused_plainly() {
    let e = audio::open(&InputSpec::Mic(None), &AudioOptions::default())
        .await
        .expect_err("no mic support")
        .to_string();
    assert!(e.contains("no microphone support"), "{e}");
    assert!(audio::list_devices().is_err());
}

/// The microphone path without the driver: callbacks of odd, varying sizes go through the
/// callback queue, the converter and the chunker, and the chunks come out exactly as if the
/// whole recording had been converted at once.
#[test]
fn chunks_are_exact_whatever_the_callback_sizes() {
    use aai_live::audio::Chunker;
    use aai_live::audio::convert::Converter;
    use aai_live::audio::queue::frame_queue;

    let rate = 48_000;
    let frames = 48_000 * 3 + 17;
    let tone = sine(rate, 440.0, 0.4, frames);
    let interleaved: Vec<f32> = tone
        .iter()
        .enumerate()
        .flat_map(|(i, &x)| [x as f32, (x * 0.5) as f32 + (i % 7) as f32 * 1e-3])
        .collect();

    let convert_all = |pieces: &[usize]| -> Vec<(u64, Vec<i16>)> {
        let mut converter = Converter::new(rate, 2, 16_000).expect("converter");
        let mut chunker = Chunker::new(800);
        let (mut producer, consumer) = frame_queue(2, rate, std::time::Duration::from_secs(10));
        let mut native = Vec::new();
        let mut mono16 = Vec::new();
        let mut at = 0;
        let mut turn = 0;
        while at < frames {
            let n = pieces[turn % pieces.len()].min(frames - at);
            turn += 1;
            producer.push(&interleaved[at * 2..(at + n) * 2], |s| s);
            at += n;
            native.clear();
            consumer.read(&mut native, usize::MAX / 4);
            converter.push(&native, &mut mono16).expect("convert");
            chunker.push(&mono16);
            mono16.clear();
        }
        converter.finish(&mut mono16).expect("finish");
        chunker.push(&mono16);
        chunker.finish();
        assert_eq!(consumer.dropped_frames(), 0);
        std::iter::from_fn(|| chunker.pop()).collect()
    };

    let reference = convert_all(&[frames]);
    assert_eq!(
        reference.len(),
        61,
        "3 s + 17 frames at 16 kHz: 60 chunks and a short one"
    );
    assert_eq!(reference[60].1.len(), 6);
    for pieces in [&[1_usize][..], &[441, 1, 96, 1023], &[480], &[4099, 3]] {
        let got = convert_all(pieces);
        assert_eq!(got.len(), reference.len(), "{pieces:?}");
        for ((offset, chunk), (want_offset, want)) in got.iter().zip(&reference) {
            assert_eq!(offset, want_offset);
            assert_eq!(chunk, want, "{pieces:?}: chunk at {offset}");
        }
    }
}
