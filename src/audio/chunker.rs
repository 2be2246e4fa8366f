//! Cuts a continuous sample stream into chunks of exactly `size` samples, each stamped with its
//! offset in the stream, whatever sizes the samples arrive in.

use std::collections::VecDeque;

/// A cut chunk: its first sample's offset and its samples.
pub type RawChunk = (u64, Vec<i16>);

#[derive(Debug)]
pub struct Chunker {
    size: usize,
    pending: Vec<i16>,
    /// Offset of `pending[0]`.
    offset: u64,
    ready: VecDeque<RawChunk>,
}

impl Chunker {
    /// Chunks of `size` samples (at least 1).
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            size,
            pending: Vec::with_capacity(size),
            offset: 0,
            ready: VecDeque::new(),
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Offset of the next sample to arrive.
    pub fn position(&self) -> u64 {
        self.offset + self.pending.len() as u64
    }

    pub fn push(&mut self, mut samples: &[i16]) {
        while !samples.is_empty() {
            let take = (self.size - self.pending.len()).min(samples.len());
            self.pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.pending.len() == self.size {
                let full = std::mem::replace(&mut self.pending, Vec::with_capacity(self.size));
                self.ready.push_back((self.offset, full));
                self.offset += self.size as u64;
            }
        }
    }

    /// End of the stream: the remaining samples become a last, shorter chunk.
    pub fn finish(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            let len = rest.len() as u64;
            self.ready.push_back((self.offset, rest));
            self.offset += len;
        }
    }

    /// The next complete chunk, oldest first.
    pub fn pop(&mut self) -> Option<RawChunk> {
        self.ready.pop_front()
    }

    /// Whether a complete chunk is waiting.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(c: &mut Chunker) -> Vec<RawChunk> {
        std::iter::from_fn(|| c.pop()).collect()
    }

    #[test]
    fn chunks_are_exact_and_contiguous_whatever_the_pushes() {
        let stream: Vec<i16> = (0..10_007).map(|i| (i % 30_000) as i16).collect();
        for pieces in [
            vec![1],
            vec![799, 1, 3],
            vec![800],
            vec![1601, 13],
            vec![10_007],
        ] {
            let mut c = Chunker::new(800);
            let mut at = 0;
            let mut turn = 0;
            while at < stream.len() {
                let n = pieces[turn % pieces.len()].min(stream.len() - at);
                c.push(&stream[at..at + n]);
                at += n;
                turn += 1;
            }
            c.finish();
            let chunks = drain(&mut c);
            assert_eq!(chunks.len(), 13);
            for (i, (offset, samples)) in chunks.iter().enumerate() {
                assert_eq!(*offset, i as u64 * 800);
                let expected_len = if i == 12 { 407 } else { 800 };
                assert_eq!(samples.len(), expected_len);
                assert_eq!(
                    &samples[..],
                    &stream[*offset as usize..*offset as usize + expected_len]
                );
            }
            assert_eq!(c.position(), 10_007);
        }
    }

    #[test]
    fn finish_without_remainder_adds_nothing() {
        let mut c = Chunker::new(4);
        c.push(&[1, 2, 3, 4]);
        c.finish();
        assert_eq!(drain(&mut c), vec![(0, vec![1, 2, 3, 4])]);
    }
}
