//! Raw PCM from a pipe (`input = "stdin"`), in the layout `audio.stdin_format` declares, so
//! `arecord`, `sox` and `ffmpeg` pipelines work:
//!
//! ```sh
//! arecord -q -f S16_LE -r 16000 -c 1 -t raw | aai-live run --input stdin
//! ffmpeg -loglevel error -i talk.mp3 -f f32le -ar 48000 -ac 2 - \
//!     | aai-live run --input stdin --stdin-format f32le:48000:2
//! ```
//!
//! Reads happen on their own thread (a read from a pipe blocks for as long as the writer
//! pauses); frames may be split across reads in any way.

use std::io::{self, Read};

use tokio::sync::mpsc;

use super::{AudioError, SourceFormat};
use crate::config::{SampleFormat, StdinFormat};

/// Bytes per read. Small enough that a live pipe is forwarded promptly.
const READ_BYTES: usize = 8192;

/// Raw PCM arriving from a reader thread.
#[derive(Debug)]
pub struct RawSource {
    blocks: mpsc::Receiver<io::Result<Vec<u8>>>,
    format: StdinFormat,
    /// Bytes of an incomplete frame, waiting for the rest.
    partial: Vec<u8>,
    name: String,
}

impl RawSource {
    /// Start reading `reader` on a thread of its own. The thread ends at the end of input, on a
    /// read error, or at its next read after the source is dropped.
    pub fn spawn<R: Read + Send + 'static>(reader: R, format: StdinFormat, name: &str) -> Self {
        // A few blocks of slack; beyond that the reader waits, and the pipe's writer with it.
        let (tx, rx) = mpsc::channel(4);
        let error_tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("aai-live-stdin".into())
            .spawn(move || read_blocks(reader, &tx));
        if let Err(e) = spawned {
            // The thread's sender went with the closure: report the failure as the first read.
            let _ = error_tx.try_send(Err(e));
        }
        Self {
            blocks: rx,
            format,
            partial: Vec::new(),
            name: name.to_owned(),
        }
    }

    pub fn format(&self) -> SourceFormat {
        SourceFormat {
            sample_rate: self.format.rate,
            channels: self.format.channels,
            sample: match self.format.sample {
                SampleFormat::S16le => "s16le",
                SampleFormat::F32le => "f32le",
            }
            .to_owned(),
        }
    }

    fn frame_bytes(&self) -> usize {
        bytes_per_sample(self.format.sample) * usize::from(self.format.channels)
    }

    /// Wait for more input and append its whole frames to `out` as f32; returns the number of
    /// frames, 0 at the end of input.
    pub async fn read(&mut self, out: &mut Vec<f32>) -> Result<usize, AudioError> {
        let frame = self.frame_bytes();
        loop {
            match self.blocks.recv().await {
                Some(Ok(block)) => {
                    self.partial.extend_from_slice(&block);
                    let whole = self.partial.len() - self.partial.len() % frame;
                    if whole == 0 {
                        continue;
                    }
                    decode(&self.partial[..whole], self.format.sample, out);
                    self.partial.drain(..whole);
                    return Ok(whole / frame);
                }
                Some(Err(e)) => {
                    return Err(AudioError::Read {
                        what: self.name.clone(),
                        detail: e.to_string(),
                    });
                }
                None => {
                    if !self.partial.is_empty() {
                        tracing::warn!(
                            target: "aai_live::audio",
                            bytes = self.partial.len(),
                            frame_bytes = frame,
                            "{} ended in the middle of a frame; the partial frame was dropped \
                             (is --stdin-format right?)",
                            self.name
                        );
                        self.partial.clear();
                    }
                    return Ok(0);
                }
            }
        }
    }
}

fn read_blocks<R: Read>(mut reader: R, tx: &mpsc::Sender<io::Result<Vec<u8>>>) {
    loop {
        let mut block = vec![0; READ_BYTES];
        match reader.read(&mut block) {
            Ok(0) => return,
            Ok(n) => {
                block.truncate(n);
                if tx.blocking_send(Ok(block)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

pub fn bytes_per_sample(sample: SampleFormat) -> usize {
    match sample {
        SampleFormat::S16le => 2,
        SampleFormat::F32le => 4,
    }
}

/// Decode whole little-endian samples to f32 (a trailing partial sample is ignored).
pub fn decode(bytes: &[u8], sample: SampleFormat, out: &mut Vec<f32>) {
    match sample {
        SampleFormat::S16le => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| super::convert::i16_to_f32(i16::from_le_bytes([b[0], b[1]]))),
        ),
        SampleFormat::F32le => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_layouts() {
        let mut out = Vec::new();
        decode(
            &[0x00, 0x40, 0x00, 0xC0, 0x01],
            SampleFormat::S16le,
            &mut out,
        );
        assert_eq!(out, vec![0.5, -0.5]);
        out.clear();
        let bytes: Vec<u8> = [0.25_f32, -1.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        decode(&bytes, SampleFormat::F32le, &mut out);
        assert_eq!(out, vec![0.25, -1.0]);
    }
}
