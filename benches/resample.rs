//! Throughput of the audio conversion that runs for a live microphone: native frames →
//! downmix → resample (rubato FFT) → i16 → exact chunks, on one core. It prints figures; it is not
//! a pass/fail test.
//!
//! `cargo bench --bench resample` (see docs/benchmarks.md). Environment: `BENCH_AUDIO_SECONDS`
//! (60, the audio converted per round), `BENCH_ROUNDS` (5; the best and the median are shown).
//!
//! Target from the audio issue: 48 kHz stereo f32 → 16 kHz mono i16 at ≥ 100× real time on one
//! core, i.e. ≤ 1 % of a core while capturing live.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aai_live::audio::Chunker;
use aai_live::audio::convert::Converter;
use aai_live::audio::queue::frame_queue;

/// Frames per simulated driver callback: 10 ms at 48 kHz, a common period.
const CALLBACK_FRAMES: usize = 480;
const TARGET_FACTOR: f64 = 100.0;

struct Case {
    name: &'static str,
    rate: u32,
    channels: u16,
    /// Through the callback queue too, as the microphone path does.
    with_queue: bool,
}

const CASES: [Case; 5] = [
    Case {
        name: "48 kHz stereo f32 → 16 kHz mono i16 (convert + chunk)",
        rate: 48_000,
        channels: 2,
        with_queue: false,
    },
    Case {
        name: "48 kHz stereo f32 → 16 kHz mono i16 (queue + convert + chunk: the mic path)",
        rate: 48_000,
        channels: 2,
        with_queue: true,
    },
    Case {
        name: "44.1 kHz stereo → 16 kHz mono",
        rate: 44_100,
        channels: 2,
        with_queue: false,
    },
    Case {
        name: "48 kHz mono → 16 kHz",
        rate: 48_000,
        channels: 1,
        with_queue: false,
    },
    Case {
        name: "16 kHz mono → 16 kHz (no resampling)",
        rate: 16_000,
        channels: 1,
        with_queue: false,
    },
];

fn main() -> ExitCode {
    // `cargo test --all-targets` runs harness-less benches without `--bench`: stay cheap there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("resample benchmark: skipped (run it with `cargo bench --bench resample`)");
        return ExitCode::SUCCESS;
    }
    let seconds = env_number("BENCH_AUDIO_SECONDS", 60);
    let rounds = env_number("BENCH_ROUNDS", 5).max(1);
    println!(
        "audio conversion throughput, one thread, {seconds} s of audio per round, {rounds} rounds \
         (best / median), callbacks of {CALLBACK_FRAMES} frames, 50 ms chunks"
    );
    let mut headline = None;
    for case in &CASES {
        let input = test_audio(case.rate, case.channels, seconds);
        let mut times: Vec<Duration> = (0..rounds).map(|_| run(case, &input)).collect();
        times.sort();
        let audio = Duration::from_secs(seconds as u64);
        let best = audio.as_secs_f64() / times[0].as_secs_f64();
        let median = audio.as_secs_f64() / times[times.len() / 2].as_secs_f64();
        println!(
            "  {:<76} {:>7.0}× / {:>7.0}× real time  ({:.3} % / {:.3} % of a core live)",
            case.name,
            best,
            median,
            100.0 / best,
            100.0 / median
        );
        if case.with_queue {
            headline = Some(median);
        }
    }
    if let Some(median) = headline {
        let verdict = if median >= TARGET_FACTOR {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "target ≥ {TARGET_FACTOR:.0}× real time for 48 kHz stereo f32 → 16 kHz mono i16 (mic \
             path, median): {verdict} ({median:.0}×)"
        );
    }
    ExitCode::SUCCESS
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Speech-like enough for a resampler: a few tones and some noise, different per channel.
fn test_audio(rate: u32, channels: u16, seconds: usize) -> Vec<f32> {
    let frames = rate as usize * seconds;
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1_u64 << 24) as f32 - 0.5
    };
    let mut out = Vec::with_capacity(frames * usize::from(channels));
    for n in 0..frames {
        let t = n as f32 / rate as f32;
        for c in 0..channels {
            let f = 220.0 * f32::from(c + 1);
            out.push(
                0.3 * (std::f32::consts::TAU * f * t).sin()
                    + 0.1 * (std::f32::consts::TAU * 3100.0 * t).sin()
                    + 0.05 * noise(),
            );
        }
    }
    out
}

/// Convert `input` as the live path would, callback by callback; returns the time taken.
fn run(case: &Case, input: &[f32]) -> Duration {
    let mut converter = Converter::new(case.rate, case.channels, 16_000).expect("converter");
    let mut chunker = Chunker::new(800);
    let callback = CALLBACK_FRAMES * usize::from(case.channels);
    let (mut producer, consumer) = frame_queue(case.channels, case.rate, Duration::from_secs(1));
    let mut frames = Vec::with_capacity(callback);
    let mut samples = Vec::new();
    let mut chunks = 0_u64;
    let started = Instant::now();
    for piece in input.chunks(callback) {
        samples.clear();
        if case.with_queue {
            producer.push(piece, |s| s);
            frames.clear();
            consumer.read(&mut frames, CALLBACK_FRAMES);
            converter.push(&frames, &mut samples).expect("convert");
        } else {
            converter.push(piece, &mut samples).expect("convert");
        }
        chunker.push(&samples);
        while let Some(chunk) = chunker.pop() {
            black_box(&chunk);
            chunks += 1;
        }
    }
    samples.clear();
    converter.finish(&mut samples).expect("finish");
    chunker.push(&samples);
    chunker.finish();
    while chunker.pop().is_some() {
        chunks += 1;
    }
    let elapsed = started.elapsed();
    assert_eq!(consumer.dropped_frames(), 0);
    black_box(chunks);
    elapsed
}
