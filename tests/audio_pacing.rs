//! Real-time pacing of pulled inputs (files, stdin, test signals), checked to the nanosecond
//! under tokio's paused clock: nothing here sleeps for real.

use std::time::Duration;

use aai_live::audio::{self, AudioChunk, AudioInput, AudioOptions, Pace};
use aai_live::config::{InputSpec, StdinFormat, TestSignal};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

async fn next(input: &mut AudioInput) -> AudioChunk {
    input.chunks.recv().await.expect("a chunk")
}

fn wav(dir: &std::path::Path, rate: u32, frames: usize) -> std::path::PathBuf {
    let path = dir.join(format!("{rate}.wav"));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&path, spec).expect("create");
    for i in 0..frames {
        writer.write_sample((i % 100) as i16).expect("write");
    }
    writer.finalize().expect("finalize");
    path
}

#[tokio::test(start_paused = true)]
async fn a_file_is_released_at_real_time_chunk_by_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 1.01 s: 20 full chunks of 50 ms and a last one of 10 ms.
    let path = wav(dir.path(), 16_000, 16_160);
    let t0 = Instant::now();
    let mut input = audio::open(&InputSpec::File(path), &AudioOptions::default())
        .await
        .expect("open");
    let mut releases = Vec::new();
    while let Some(chunk) = input.chunks.recv().await {
        // Each chunk leaves when its last sample would have been captured live, not earlier.
        assert_eq!(chunk.captured_at, Instant::now());
        releases.push((chunk.offset, chunk.samples.len(), chunk.captured_at - t0));
    }
    assert_eq!(releases.len(), 21);
    for (k, &(offset, len, at)) in releases.iter().take(20).enumerate() {
        assert_eq!((offset, len), (k as u64 * 800, 800));
        assert_eq!(at, 50 * MS * (k as u32 + 1), "chunk {k}");
    }
    assert_eq!(releases[20], (16_000, 160, 1010 * MS));
}

#[tokio::test(start_paused = true)]
async fn a_long_test_signal_does_not_drift() {
    let t0 = Instant::now();
    let options = AudioOptions {
        chunk_ms: 100,
        sample_rate: 44_100,
        ..AudioOptions::default()
    };
    let mut input = audio::open(&InputSpec::Test(TestSignal::Silence), &options)
        .await
        .expect("open");
    // Ten minutes of audio: 6000 chunks of 4410 samples.
    let mut last = next(&mut input).await;
    for _ in 1..6000 {
        last = next(&mut input).await;
    }
    assert_eq!(last.end(), 44_100 * 600);
    assert_eq!(last.captured_at - t0, Duration::from_secs(600));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_consumer_never_gets_a_long_burst() {
    let t0 = Instant::now();
    let mut input = audio::open(
        &InputSpec::Test(TestSignal::Silence),
        &AudioOptions::default(),
    )
    .await
    .expect("open");
    assert_eq!(next(&mut input).await.captured_at - t0, 50 * MS);

    // The consumer looks away for 200 ms: chunks released meanwhile wait in the channel, each
    // stamped with its own release time, and the schedule goes on unchanged.
    tokio::time::sleep(200 * MS).await;
    for k in 2..=5 {
        assert_eq!(next(&mut input).await.captured_at - t0, 50 * MS * k);
    }
    assert_eq!(next(&mut input).await.captured_at - t0, 300 * MS);

    // Away for five seconds: the channel holds two seconds of chunks, the source is stuck
    // behind them, and when the consumer returns the source does not try to make up the
    // missing three seconds in a burst: it continues at real time from then on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let back = Instant::now();
    let mut chunk = next(&mut input).await;
    let mut buffered = 0;
    while chunk.captured_at < back {
        buffered += 1;
        chunk = next(&mut input).await;
    }
    assert_eq!(
        buffered, 41,
        "40 queued in the channel and 1 waiting to be sent"
    );
    assert_eq!(chunk.captured_at, back, "released at once");
    let mut previous = chunk;
    for _ in 0..10 {
        let chunk = next(&mut input).await;
        assert_eq!(chunk.offset, previous.end(), "no audio skipped");
        assert_eq!(
            chunk.captured_at - previous.captured_at,
            50 * MS,
            "real time again"
        );
        previous = chunk;
    }
}

#[tokio::test(start_paused = true)]
async fn stdin_is_paced_too() {
    let data = audio::encode(&vec![7_i16; 48_000], aai_live::protocol::Encoding::PcmS16le);
    let format: StdinFormat = "s16le:48000:1".parse().expect("format");
    let options = AudioOptions {
        chunk_ms: 250,
        ..AudioOptions::default()
    };
    let t0 = Instant::now();
    let mut input = audio::open_raw_reader(std::io::Cursor::new(data), "stdin", format, &options)
        .expect("open");
    let mut times = Vec::new();
    while let Some(chunk) = input.chunks.recv().await {
        times.push((chunk.end(), chunk.captured_at - t0));
    }
    assert_eq!(
        times,
        vec![
            (4000, 250 * MS),
            (8000, 500 * MS),
            (12_000, 750 * MS),
            (16_000, 1000 * MS)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn unpaced_takes_no_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = wav(dir.path(), 16_000, 16_000 * 5);
    let options = AudioOptions {
        pace: Pace::Unpaced,
        ..AudioOptions::default()
    };
    let t0 = Instant::now();
    let mut input = audio::open(&InputSpec::File(path), &options)
        .await
        .expect("open");
    let mut n = 0;
    while let Some(chunk) = input.chunks.recv().await {
        assert_eq!(chunk.captured_at, t0);
        n += 1;
    }
    assert_eq!(n, 100);
    assert_eq!(Instant::now(), t0);
}
