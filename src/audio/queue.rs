//! The hand-off between a real-time audio callback and the conversion thread: a single-producer,
//! single-consumer ring of samples.
//!
//! The callback must never block and should never allocate: it runs on the audio driver's
//! thread, and a stall there loses audio for every application on the device. So the ring is
//! allocated once, sized in audio time (callbacks of any size share it; a pool of per-callback
//! buffers would fill after a fixed number of callbacks, however small), and both ends only
//! touch atomics: samples are stored as f32 bits in `AtomicU32`s, so no `unsafe` is needed, and
//! on the platforms we run on a relaxed atomic store is an ordinary store. When the ring is full
//! — the consumer fell behind by the whole depth — the callback drops the new frames and counts
//! them, so an overflow is always visible ([`FrameConsumer::dropped_frames`]), never silent.
//!
//! The consumer sleeps on a one-slot channel the producer nudges with `try_send`, which never
//! blocks the producer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

struct Ring {
    samples: Box<[AtomicU32]>,
    /// Samples written / read since the start; they only grow (a 64-bit count never wraps in
    /// practice), and `head - tail` is the fill.
    head: AtomicUsize,
    tail: AtomicUsize,
    dropped_frames: AtomicU64,
    overflows: AtomicU64,
    pushed_frames: AtomicU64,
}

impl Ring {
    /// The `len` slots from stream position `position`, as the runs before and after the wrap.
    fn slots(&self, position: usize, len: usize) -> (&[AtomicU32], &[AtomicU32]) {
        let start = position % self.samples.len();
        let first = len.min(self.samples.len() - start);
        (
            &self.samples[start..start + first],
            &self.samples[..len - first],
        )
    }
}

/// Create a queue holding `depth` of audio in `channels`-channel frames at `sample_rate`.
pub fn frame_queue(
    channels: u16,
    sample_rate: u32,
    depth: Duration,
) -> (FrameProducer, FrameConsumer) {
    let channels = usize::from(channels.max(1));
    let frames = ((f64::from(sample_rate) * depth.as_secs_f64()).ceil() as usize).max(1);
    let ring = Arc::new(Ring {
        samples: (0..frames * channels).map(|_| AtomicU32::new(0)).collect(),
        head: AtomicUsize::new(0),
        tail: AtomicUsize::new(0),
        dropped_frames: AtomicU64::new(0),
        overflows: AtomicU64::new(0),
        pushed_frames: AtomicU64::new(0),
    });
    let (wake_tx, wake_rx) = mpsc::sync_channel(1);
    (
        FrameProducer {
            ring: Arc::clone(&ring),
            channels,
            wake: wake_tx,
            overflowing: false,
        },
        FrameConsumer {
            ring,
            channels,
            wake: wake_rx,
        },
    )
}

/// The callback's end.
pub struct FrameProducer {
    ring: Arc<Ring>,
    channels: usize,
    wake: SyncSender<()>,
    overflowing: bool,
}

impl std::fmt::Debug for FrameProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameProducer")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl FrameProducer {
    /// Queue interleaved frames, converting each sample with `to_f32`. Never blocks, never
    /// allocates. Frames that do not fit are dropped and counted. A trailing partial frame
    /// (which audio drivers do not produce) is ignored.
    pub fn push<T: Copy>(&mut self, data: &[T], to_f32: impl Fn(T) -> f32) {
        let ring = &*self.ring;
        let capacity = ring.samples.len();
        let frames = data.len() / self.channels;
        // Only this end moves `head`; `tail` may grow meanwhile, which only frees more room.
        let head = ring.head.load(Ordering::Relaxed);
        let tail = ring.tail.load(Ordering::Acquire);
        let free_frames = (capacity - (head - tail)) / self.channels;
        let fit = frames.min(free_frames);
        let samples = fit * self.channels;
        // Two contiguous runs (before and after the wrap), so no division per sample.
        let (first, second) = ring.slots(head, samples);
        for (slot, &sample) in first.iter().chain(second).zip(&data[..samples]) {
            slot.store(to_f32(sample).to_bits(), Ordering::Relaxed);
        }
        // Publishes the samples stored above to the consumer.
        ring.head.store(head + samples, Ordering::Release);
        ring.pushed_frames.fetch_add(fit as u64, Ordering::Relaxed);
        if fit < frames {
            ring.dropped_frames
                .fetch_add((frames - fit) as u64, Ordering::Relaxed);
            if !self.overflowing {
                self.overflowing = true;
                ring.overflows.fetch_add(1, Ordering::Relaxed);
            }
        } else if fit > 0 {
            self.overflowing = false;
        }
        // A pending nudge is as good as a new one, so a full slot is fine.
        let _ = self.wake.try_send(());
    }
}

/// The conversion thread's end.
pub struct FrameConsumer {
    ring: Arc<Ring>,
    channels: usize,
    wake: Receiver<()>,
}

impl std::fmt::Debug for FrameConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameConsumer")
            .field("channels", &self.channels)
            .field("queued_frames", &self.queued_frames())
            .finish_non_exhaustive()
    }
}

impl FrameConsumer {
    /// Wait until the producer has pushed since the last wait, or `timeout` passes. `Err` when
    /// the producer is gone (its stream was dropped); what it queued can still be read.
    pub fn wait(&self, timeout: Duration) -> Result<(), RecvTimeoutError> {
        match self.wake.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => Err(RecvTimeoutError::Disconnected),
        }
    }

    /// Append up to `max_frames` queued frames to `out`; returns how many.
    pub fn read(&self, out: &mut Vec<f32>, max_frames: usize) -> usize {
        let ring = &*self.ring;
        let tail = ring.tail.load(Ordering::Relaxed);
        // Pairs with the producer's release: the samples before `head` are visible.
        let head = ring.head.load(Ordering::Acquire);
        let samples = (head - tail).min(max_frames * self.channels);
        let (first, second) = ring.slots(tail, samples);
        out.extend(
            first
                .iter()
                .chain(second)
                .map(|slot| f32::from_bits(slot.load(Ordering::Relaxed))),
        );
        // Hands the slots back to the producer.
        ring.tail.store(tail + samples, Ordering::Release);
        samples / self.channels
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Frames waiting to be read.
    pub fn queued_frames(&self) -> usize {
        let ring = &*self.ring;
        (ring.head.load(Ordering::Acquire) - ring.tail.load(Ordering::Relaxed)) / self.channels
    }

    /// Frames dropped so far because the queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.ring.dropped_frames.load(Ordering::Relaxed)
    }

    /// Separate overflow episodes so far.
    pub fn overflows(&self) -> u64 {
        self.ring.overflows.load(Ordering::Relaxed)
    }

    /// Frames queued so far.
    pub fn pushed_frames(&self) -> u64 {
        self.ring.pushed_frames.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(x: f32) -> f32 {
        x
    }

    #[test]
    fn frames_arrive_in_order_across_the_wrap() {
        // Room for 1000 stereo frames; push and read in odd sizes so the ring wraps many times.
        let (mut producer, consumer) = frame_queue(2, 1000, Duration::from_secs(1));
        let data: Vec<f32> = (0..50_000).map(|i| i as f32).collect();
        let mut got = Vec::new();
        let mut at = 0;
        for (turn, size) in [2, 14, 1202, 600, 2].iter().cycle().enumerate() {
            if at >= data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            producer.push(&data[at..end], identity);
            at = end;
            consumer.read(&mut got, [1, 7, 1000][turn % 3]);
            if turn % 5 == 0 {
                consumer.read(&mut got, usize::MAX / 4);
            }
        }
        while consumer.read(&mut got, 333) > 0 {}
        assert_eq!(consumer.dropped_frames(), 0);
        assert_eq!(got, data);
        assert_eq!(consumer.pushed_frames(), 25_000);
    }

    #[test]
    fn overflow_is_counted_not_blocking() {
        // Room for 100 mono frames; nobody reads.
        let (mut producer, consumer) = frame_queue(1, 100, Duration::from_secs(1));
        producer.push(&[1_i16; 30], f32::from);
        producer.push(&[2_i16; 90], f32::from);
        assert_eq!(consumer.pushed_frames(), 100);
        assert_eq!(consumer.dropped_frames(), 20);
        assert_eq!(consumer.overflows(), 1);
        // Still full: another drop in the same episode.
        producer.push(&[3_i16; 10], f32::from);
        assert_eq!((consumer.dropped_frames(), consumer.overflows()), (30, 1));
        // What was queued is intact, and the oldest audio is kept.
        let mut got = Vec::new();
        assert_eq!(consumer.read(&mut got, 1000), 100);
        assert_eq!(&got[..31], &[[1.0; 30].as_slice(), &[2.0]].concat()[..]);
        // Room again: a successful push ends the episode; the next overflow is a new one.
        producer.push(&[4_i16; 10], f32::from);
        producer.push(&[5_i16; 500], f32::from);
        assert_eq!(consumer.overflows(), 2);
        assert_eq!(consumer.dropped_frames(), 30 + 410);
    }

    #[test]
    fn partial_frames_are_ignored_and_waits_wake() {
        let (mut producer, consumer) = frame_queue(2, 48_000, Duration::from_millis(100));
        producer.push(&[1.0_f32, 2.0, 3.0], identity);
        assert!(consumer.wait(Duration::from_secs(5)).is_ok());
        let mut got = Vec::new();
        assert_eq!(consumer.read(&mut got, 10), 1);
        assert_eq!(got, vec![1.0, 2.0]);
        drop(producer);
        assert!(
            consumer.wait(Duration::from_secs(5)).is_err(),
            "producer gone"
        );
    }

    #[test]
    fn works_across_threads() {
        let (mut producer, consumer) = frame_queue(1, 8000, Duration::from_secs(10));
        let writer = std::thread::spawn(move || {
            for block in 0..100 {
                let data: Vec<f32> = (0..333).map(|i| (block * 333 + i) as f32).collect();
                producer.push(&data, identity);
            }
        });
        let mut got = Vec::new();
        while got.len() < 33_300 {
            if consumer.wait(Duration::from_millis(50)).is_err() {
                consumer.read(&mut got, usize::MAX / 4);
                break;
            }
            consumer.read(&mut got, 1000);
        }
        writer.join().expect("writer");
        while consumer.read(&mut got, 1000) > 0 {}
        let want: Vec<f32> = (0..33_300).map(|i| i as f32).collect();
        assert_eq!(got, want);
    }
}
