//! WAV files: checked up front (missing, not a WAV, truncated, unsupported encoding) with messages
//! that say what the file is and how to convert it, then read block by block as f32 frames,
//! optionally looping (16-bit PCM can also be read straight from the file as i16:
//! `WavSource::read_pcm16`). Decoding is hound's: 8/16/24/32-bit integer and 32-bit float PCM,
//! plain or WAVE_FORMAT_EXTENSIBLE, 8–384 kHz, 1–32 channels (`convert::NATIVE_RATES`,
//! `convert::NATIVE_CHANNELS`: a header is untrusted input, and buffers are sized from it).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use super::convert::{check_native, int_to_f32};
use super::{AudioError, SourceFormat};

/// How to turn anything into a file aai-live reads, for error messages.
const CONVERT_HINT: &str = "convert it with `ffmpeg -i IN -ac 1 -ar 16000 OUT.wav` (or `sox IN -c 1 -r 16000 -b 16 OUT.wav`)";

/// An open WAV file, positioned in its audio.
pub struct WavSource {
    path: PathBuf,
    reader: hound::WavReader<BufReader<File>>,
    spec: hound::WavSpec,
    /// Frames in the file.
    frames: u64,
    /// Frames read in the current pass.
    position: u64,
    loop_input: bool,
    loops: u64,
    /// 16-bit integer PCM is read straight from the file (see [`WavSource::read_pcm16`]): the
    /// file positioned in its `data` chunk, where that chunk starts, and a reused byte buffer.
    pcm16: Option<Pcm16>,
}

struct Pcm16 {
    file: BufReader<File>,
    data_start: u64,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for WavSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSource")
            .field("path", &self.path)
            .field("spec", &self.spec)
            .field("frames", &self.frames)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl WavSource {
    /// Open and check `path`.
    pub fn open(path: &Path, loop_input: bool) -> Result<Self, AudioError> {
        let file = File::open(path).map_err(|source| open_error(path, source))?;
        let file_len = file
            .metadata()
            .map_err(|source| open_error(path, source))?
            .len();
        let (data_start, data_len) = check_layout(path, BufReader::new(file), file_len)?;
        let reader = hound::WavReader::open(path).map_err(|e| hound_error(path, e))?;
        let spec = reader.spec();
        let frames = u64::from(reader.duration());
        if frames == 0 {
            return Err(AudioError::EmptyFile {
                path: path.to_owned(),
            });
        }
        // Before anything is sized from the header: a rate of 1 Hz or 2^31 Hz once made the
        // resampler allocate from hundreds of MB to 8 GiB.
        if let Err(detail) = check_native(spec.sample_rate, spec.channels) {
            return Err(AudioError::UnsupportedWav {
                path: path.to_owned(),
                detail: format!("its header declares {detail}; {CONVERT_HINT}"),
            });
        }
        match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 1..=32) | (hound::SampleFormat::Float, 32) => {}
            (format, bits) => {
                return Err(AudioError::UnsupportedWav {
                    path: path.to_owned(),
                    detail: format!(
                        "{bits}-bit {} samples; {CONVERT_HINT}",
                        sample_format_name(format)
                    ),
                });
            }
        }
        // 16-bit samples packed two bytes each (not in a wider container) are read as they are.
        let pcm16 = if spec.sample_format == hound::SampleFormat::Int
            && spec.bits_per_sample == 16
            && u64::from(data_len) == frames * u64::from(spec.channels) * 2
        {
            let mut file = BufReader::new(File::open(path).map_err(|e| open_error(path, e))?);
            file.seek(io::SeekFrom::Start(data_start))
                .map_err(|e| open_error(path, e))?;
            Some(Pcm16 {
                file,
                data_start,
                bytes: Vec::new(),
            })
        } else {
            None
        };
        Ok(Self {
            path: path.to_owned(),
            reader,
            spec,
            frames,
            position: 0,
            loop_input,
            loops: 0,
            pcm16,
        })
    }

    /// Whether [`WavSource::read_pcm16`] reads this file (16-bit integer PCM).
    pub fn is_pcm16(&self) -> bool {
        self.pcm16.is_some()
    }

    /// Like [`WavSource::read`], for 16-bit files, as the samples themselves: one read of the
    /// block and no per-sample decoding, the cheapest path for the commonest file (16-bit mono
    /// at the service's rate needs no conversion at all). Reads nothing for other files.
    pub fn read_pcm16(
        &mut self,
        max_frames: usize,
        out: &mut Vec<i16>,
    ) -> Result<usize, AudioError> {
        if self.pcm16.is_none() {
            return Ok(0);
        }
        if self.position == self.frames {
            if !self.loop_input {
                return Ok(0);
            }
            if let Some(pcm) = &mut self.pcm16 {
                let start = pcm.data_start;
                pcm.file
                    .seek(io::SeekFrom::Start(start))
                    .map_err(|e| self.read_error(&hound::Error::IoError(e)))?;
            }
            self.position = 0;
            self.loops += 1;
            tracing::debug!(target: "aai_live::audio", path = %self.path.display(), loops = self.loops, "looping the file");
        }
        let frames = (max_frames as u64).min(self.frames - self.position) as usize;
        let Some(pcm) = &mut self.pcm16 else {
            return Ok(0);
        };
        pcm.bytes
            .resize(frames * usize::from(self.spec.channels) * 2, 0);
        if let Err(e) = pcm.file.read_exact(&mut pcm.bytes) {
            return Err(self.read_error(&hound::Error::IoError(e)));
        }
        out.extend(
            pcm.bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
        self.position += frames as u64;
        Ok(frames)
    }

    pub fn format(&self) -> SourceFormat {
        let sample = match self.spec.sample_format {
            hound::SampleFormat::Float => format!("f{}", self.spec.bits_per_sample),
            hound::SampleFormat::Int if self.spec.bits_per_sample <= 8 => "u8".to_owned(),
            hound::SampleFormat::Int => format!("i{}", self.spec.bits_per_sample),
        };
        SourceFormat {
            sample_rate: self.spec.sample_rate,
            channels: self.spec.channels,
            sample,
        }
    }

    /// Frames in the file.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Times the file started again.
    pub fn loops(&self) -> u64 {
        self.loops
    }

    /// Append up to `max_frames` interleaved f32 frames to `out`; returns how many. 0 means the
    /// end (never, when looping).
    pub fn read(&mut self, max_frames: usize, out: &mut Vec<f32>) -> Result<usize, AudioError> {
        if self.position == self.frames {
            if !self.loop_input {
                return Ok(0);
            }
            self.reader
                .seek(0)
                .map_err(|e| self.read_error(&hound::Error::IoError(e)))?;
            self.position = 0;
            self.loops += 1;
            tracing::debug!(target: "aai_live::audio", path = %self.path.display(), loops = self.loops, "looping the file");
        }
        let frames = (max_frames as u64).min(self.frames - self.position) as usize;
        let samples = frames * usize::from(self.spec.channels);
        out.reserve(samples);
        let result = match self.spec.sample_format {
            hound::SampleFormat::Int => {
                let bits = self.spec.bits_per_sample;
                self.reader
                    .samples::<i32>()
                    .take(samples)
                    .try_for_each(|s| s.map(|s| out.push(int_to_f32(s, bits))))
            }
            hound::SampleFormat::Float => self
                .reader
                .samples::<f32>()
                .take(samples)
                .try_for_each(|s| s.map(|s| out.push(s))),
        };
        result.map_err(|e| self.read_error(&e))?;
        self.position += frames as u64;
        Ok(frames)
    }

    fn read_error(&self, error: &hound::Error) -> AudioError {
        match error {
            hound::Error::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                AudioError::Truncated {
                    path: self.path.clone(),
                    detail: format!(
                        "it ended after {:.2} s of the {:.2} s its header declares (was it changed \
                         while being read?)",
                        self.position as f64 / f64::from(self.spec.sample_rate),
                        self.frames as f64 / f64::from(self.spec.sample_rate)
                    ),
                }
            }
            other => AudioError::Read {
                what: self.path.display().to_string(),
                detail: other.to_string(),
            },
        }
    }
}

fn open_error(path: &Path, source: io::Error) -> AudioError {
    if source.kind() == io::ErrorKind::NotFound {
        AudioError::FileNotFound {
            path: path.to_owned(),
        }
    } else {
        AudioError::FileOpen {
            path: path.to_owned(),
            source,
        }
    }
}

fn sample_format_name(format: hound::SampleFormat) -> &'static str {
    match format {
        hound::SampleFormat::Float => "float",
        hound::SampleFormat::Int => "integer",
    }
}

fn hound_error(path: &Path, error: hound::Error) -> AudioError {
    match error {
        hound::Error::IoError(source) => open_error(path, source),
        hound::Error::Unsupported => AudioError::UnsupportedWav {
            path: path.to_owned(),
            detail: format!(
                "a compressed or unusual encoding (only PCM and float are read); {CONVERT_HINT}"
            ),
        },
        other => AudioError::NotWav {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// Check the RIFF layout before decoding: what the file is if not a WAV, and whether its audio
/// is all there. hound would report a truncated file only when reading reaches the missing part,
/// possibly minutes into a session.
/// Returns where the audio data starts and its declared length.
fn check_layout<R: Read + Seek>(
    path: &Path,
    mut reader: R,
    file_len: u64,
) -> Result<(u64, u32), AudioError> {
    let not_wav = |reason: String| AudioError::NotWav {
        path: path.to_owned(),
        reason,
    };
    let mut magic = [0_u8; 12];
    let got = read_up_to(&mut reader, &mut magic).map_err(|source| open_error(path, source))?;
    if got == 0 {
        return Err(not_wav("the file is empty".into()));
    }
    if got < magic.len() || &magic[..4] != b"RIFF" || &magic[8..12] != b"WAVE" {
        return Err(not_wav(identify(&magic[..got])));
    }
    let (data_start, data_len) = find_data_chunk(&mut reader)
        .map_err(|source| open_error(path, source))?
        .ok_or_else(|| AudioError::Truncated {
            path: path.to_owned(),
            detail: "the file ends before its audio data begins".into(),
        })?;
    let present = file_len.saturating_sub(data_start);
    if data_len == u32::MAX {
        return Err(AudioError::Truncated {
            path: path.to_owned(),
            detail: format!(
                "its header does not give the length of the audio (was it written to a pipe, or \
                 is it still being recorded?); {CONVERT_HINT}"
            ),
        });
    }
    if u64::from(data_len) > present {
        return Err(AudioError::Truncated {
            path: path.to_owned(),
            detail: format!(
                "its header declares {data_len} bytes of audio but only {present} are present; \
                 {CONVERT_HINT} to keep what is there"
            ),
        });
    }
    Ok((data_start, data_len))
}

/// Walk the RIFF chunks after the 12-byte header to the `data` chunk: (offset of its first byte,
/// declared length). `None` when the file ends first.
fn find_data_chunk<R: Read + Seek>(reader: &mut R) -> io::Result<Option<(u64, u32)>> {
    let mut position = 12;
    reader.seek(io::SeekFrom::Start(position))?;
    loop {
        let mut header = [0_u8; 8];
        if read_up_to(reader, &mut header)? < header.len() {
            return Ok(None);
        }
        position += 8;
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if &header[..4] == b"data" {
            return Ok(Some((position, len)));
        }
        // Chunks are padded to an even length.
        position += u64::from(len) + u64::from(len & 1);
        reader.seek(io::SeekFrom::Start(position))?;
    }
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Name what a non-WAV file probably is, from its first bytes.
fn identify(head: &[u8]) -> String {
    let kind = if head.starts_with(b"fLaC") {
        Some("FLAC audio")
    } else if head.starts_with(b"OggS") {
        Some("Ogg audio (Vorbis or Opus)")
    } else if head.starts_with(b"ID3")
        || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0)
    {
        Some("MP3 audio")
    } else if head.starts_with(b"RIFX") {
        Some("a big-endian WAV (RIFX)")
    } else if head.starts_with(b"RF64") || head.starts_with(b"BW64") {
        Some("an RF64 WAV")
    } else if head.starts_with(b"FORM") {
        Some("AIFF audio")
    } else if head.len() >= 8 && &head[4..8] == b"ftyp" {
        Some("MP4/M4A audio")
    } else if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("WebM/Matroska")
    } else if head.starts_with(b"RIFF") {
        Some("a RIFF file that is not WAVE (AVI?)")
    } else {
        None
    };
    match kind {
        Some(kind) => format!("it looks like {kind}; {CONVERT_HINT}"),
        None if head.len() < 12 => {
            format!(
                "it is only {} bytes long, too short for a WAV header",
                head.len()
            )
        }
        None => format!("it does not start with a RIFF/WAVE header; {CONVERT_HINT}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, channels: u16, bits: u16, samples: &[i32]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: 16_000,
            bits_per_sample: bits,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).expect("wav");
        for &s in samples {
            w.write_sample(s).expect("sample");
        }
        w.finalize().expect("finalize");
    }

    /// The direct 16-bit path gives exactly what hound decodes (through f32 and back), block by
    /// block of any size, across a loop, and ends where the file ends.
    #[test]
    fn pcm16_reads_what_hound_decodes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stereo.wav");
        let samples: Vec<i32> = (0..2 * 1001)
            .map(|i: i32| match i % 7 {
                0 => i32::from(i16::MIN),
                1 => i32::from(i16::MAX),
                _ => (i * 7919) % 65_536 - 32_768,
            })
            .collect();
        write(&path, 2, 16, &samples);
        let mut hound_path = WavSource::open(&path, false).expect("open");
        let mut frames = Vec::new();
        while hound_path.read(97, &mut frames).expect("read") > 0 {}
        let decoded: Vec<i16> = frames
            .iter()
            .map(|&f| super::super::convert::f32_to_i16(f))
            .collect();
        let expected: Vec<i16> = samples.iter().map(|&s| s as i16).collect();
        assert_eq!(decoded, expected, "hound's path is lossless for 16-bit");

        let mut direct = WavSource::open(&path, true).expect("open");
        assert!(direct.is_pcm16());
        let mut got = Vec::new();
        while got.len() < 2 * expected.len() {
            assert!(direct.read_pcm16(97, &mut got).expect("read") > 0);
        }
        assert_eq!(got[..expected.len()], expected[..]);
        assert_eq!(got[expected.len()..], expected[..], "the second pass");
        assert_eq!(direct.loops(), 1);

        let mut once = WavSource::open(&path, false).expect("open");
        let mut all = Vec::new();
        while once.read_pcm16(1000, &mut all).expect("read") > 0 {}
        assert_eq!(all, expected);
    }

    #[test]
    fn other_sample_sizes_are_decoded_by_hound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("24.wav");
        write(&path, 1, 24, &[0, 1, -1, 8_388_607]);
        let mut wav = WavSource::open(&path, false).expect("open");
        assert!(!wav.is_pcm16());
        let mut out = Vec::new();
        assert_eq!(wav.read_pcm16(10, &mut out).expect("read"), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn identifies_common_formats() {
        assert!(identify(b"fLaC\0\0\0\"").contains("FLAC"));
        assert!(identify(b"ID3\x04\0\0\0\0\0\0\0\0").contains("MP3"));
        assert!(identify(&[0xFF, 0xFB, 0x90, 0x64, 0, 0, 0, 0, 0, 0, 0, 0]).contains("MP3"));
        assert!(identify(b"OggS\0\x02\0\0\0\0\0\0").contains("Ogg"));
        assert!(identify(b"\0\0\0\x20ftypM4A ").contains("MP4"));
        assert!(identify(b"hello").contains("only 5 bytes"));
        assert!(identify(b"hello, world!").contains("RIFF/WAVE"));
    }
}
