//! The replay buffer: the most recent audio, chunk by chunk with stream offsets and the time
//! each chunk was first sent, so a new session can be fed from any recent offset and latency can
//! be measured from the moment a word's audio left.

use std::collections::VecDeque;

use tokio::time::Instant;

/// One buffered chunk.
#[derive(Debug, Clone)]
pub struct Buffered {
    /// Stream offset of the first sample.
    pub offset: u64,
    pub samples: Vec<i16>,
    /// When it was first sent to a session (for latency), if it was.
    pub sent_at: Option<Instant>,
}

impl Buffered {
    pub fn end(&self) -> u64 {
        self.offset + self.samples.len() as u64
    }
}

/// A bounded FIFO of chunks, `capacity` samples long.
#[derive(Debug)]
pub struct ReplayBuffer {
    chunks: VecDeque<Buffered>,
    capacity: u64,
    held: u64,
}

impl ReplayBuffer {
    pub fn new(capacity_samples: u64) -> Self {
        Self {
            chunks: VecDeque::new(),
            capacity: capacity_samples.max(1),
            held: 0,
        }
    }

    /// Add a chunk; the oldest ones leave when the buffer is over capacity. Returns the end of
    /// what left (everything before it is gone), so unsent audio can be accounted for.
    pub fn push(&mut self, offset: u64, samples: Vec<i16>) -> Option<u64> {
        self.held += samples.len() as u64;
        self.chunks.push_back(Buffered {
            offset,
            samples,
            sent_at: None,
        });
        let mut evicted_to = None;
        while self.held > self.capacity {
            match self.chunks.pop_front() {
                Some(old) => {
                    self.held -= old.samples.len() as u64;
                    evicted_to = Some(old.end());
                }
                None => break,
            }
        }
        evicted_to
    }

    /// Oldest offset still held.
    pub fn oldest(&self) -> Option<u64> {
        self.chunks.front().map(|c| c.offset)
    }

    /// End of the newest chunk (the live head).
    pub fn head(&self) -> Option<u64> {
        self.chunks.back().map(Buffered::end)
    }

    /// The chunk containing `offset`, or the first one after it.
    pub fn at_or_after(&self, offset: u64) -> Option<&Buffered> {
        let i = self.chunks.partition_point(|c| c.end() <= offset);
        self.chunks.get(i)
    }

    /// Chunk start at or before `offset` (replays must start on a chunk boundary so every
    /// message keeps a legal duration).
    pub fn chunk_start(&self, offset: u64) -> Option<u64> {
        self.at_or_after(offset).map(|c| c.offset)
    }

    /// Mark the chunk starting at `offset` as sent at `at` (first send only).
    pub fn mark_sent(&mut self, offset: u64, at: Instant) {
        let i = self.chunks.partition_point(|c| c.offset < offset);
        if let Some(c) = self.chunks.get_mut(i)
            && c.offset == offset
            && c.sent_at.is_none()
        {
            c.sent_at = Some(at);
        }
    }

    /// When the audio at `offset` was first sent.
    pub fn sent_at(&self, offset: u64) -> Option<Instant> {
        self.at_or_after(offset)
            .filter(|c| c.offset <= offset)
            .and_then(|c| c.sent_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer() -> ReplayBuffer {
        let mut b = ReplayBuffer::new(2000);
        for i in 0..5 {
            b.push(i * 800, vec![i as i16; 800]);
        }
        b
    }

    #[test]
    fn keeps_at_most_capacity() {
        let mut b = ReplayBuffer::new(2000);
        assert_eq!(b.push(0, vec![0; 800]), None);
        assert_eq!(b.push(800, vec![0; 800]), None);
        assert_eq!(
            b.push(1600, vec![0; 800]),
            Some(800),
            "what left, up to where"
        );
        let b = buffer();
        assert_eq!(b.oldest(), Some(2400));
        assert_eq!(b.head(), Some(4000));
    }

    #[test]
    fn finds_chunks_by_offset() {
        let b = buffer();
        assert_eq!(b.at_or_after(2500).map(|c| c.offset), Some(2400));
        assert_eq!(b.at_or_after(3200).map(|c| c.offset), Some(3200));
        assert_eq!(b.chunk_start(3999), Some(3200));
        assert_eq!(
            b.chunk_start(100),
            Some(2400),
            "never before the oldest held"
        );
        assert!(b.at_or_after(4000).is_none());
    }

    #[test]
    fn first_send_time_is_kept() {
        let mut b = buffer();
        let t = Instant::now();
        b.mark_sent(3200, t);
        b.mark_sent(3200, t + std::time::Duration::from_secs(1));
        assert_eq!(b.sent_at(3300), Some(t));
        assert_eq!(b.sent_at(2400), None);
    }
}
