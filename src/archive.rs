//! The audio archive (`--archive`, `[archive] enabled`): each input's captured audio, written
//! as it is captured beside the transcript, with a sidecar saying which parts never reached the
//! service. Users keep audio to transcribe it again or to audit it; the sidecar makes the
//! ledger's losses point into the file.
//!
//! The file is WAV, 16-bit PCM, mono, at `streaming.sample_rate`: exactly the chunks the stream
//! received from its input (after conversion, no padding), so sample `i` of the file is sample
//! `i` of the stream's timeline and `run --input file:ARCHIVE` transcribes it again. Samples a
//! microphone's capture dropped before they became chunks (`capture_overrun`) never existed as
//! audio: the sidecar lists them at the position where they were dropped.
//!
//! Writing is on a thread of its own behind a bounded queue (10 s of audio), so a slow or full
//! disk never holds up the transcription: what does not fit is left out of the archive only,
//! noted in the sidecar as a gap and reported once as a warning. The header is rewritten every
//! second and at the end (`hound`'s flush), so a crash leaves a readable file. Files are 0600.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::events::LossCause;

/// Audio the writer's queue holds at most before chunks are left out of the archive.
pub const QUEUE_AUDIO: Duration = Duration::from_secs(10);
/// How often the WAV header is brought up to date while recording.
const HEADER_EVERY: Duration = Duration::from_secs(1);

/// Why an archive could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the audio archive {path}: {source}")]
pub struct ArchiveError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

impl ArchiveError {
    /// What the run says when it goes on without the archive: transcription never waits for,
    /// or stops because of, the archive.
    pub fn warning(&self) -> String {
        format!("{self} (the transcription goes on without an archive)")
    }
}

/// A stretch of the stream that never reached the service (from the ledger's `audio_lost`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lost {
    /// Stream (and file) positions, in samples; equal for a capture overrun.
    pub from_sample: u64,
    pub to_sample: u64,
    /// Samples lost: `to - from`, or the overrun's count.
    pub samples: u64,
    pub cause: LossCause,
}

/// A stretch left out of the archive (the writer fell behind, or the disk failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Where the stream was (samples) and where the file was when it happened.
    pub stream_sample: u64,
    pub file_sample: u64,
    pub samples: u64,
    pub why: String,
}

/// The sidecar (`<archive>.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sidecar {
    /// The input's label (`input` for the single unlabelled input).
    pub label: String,
    /// The input's name (`file: a.wav`, `microphone: default`).
    pub input: String,
    pub sample_rate: u32,
    /// RFC 3339, when the first sample was captured.
    pub started_at: String,
    /// Samples in the file.
    pub samples: u64,
    /// Samples of the stream (captured = file + gaps).
    pub stream_samples: u64,
    pub lost: Vec<Lost>,
    pub archive_gaps: Vec<Gap>,
    /// Why the file stopped being written (the disk failed), when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_error: Option<String>,
    /// Written at the end of the run (a crash leaves `false`).
    pub complete: bool,
}

enum Op {
    /// Samples at a stream position.
    Chunk(u64, Vec<i16>),
    /// Flush, rewrite the sidecar and answer.
    Sync(mpsc::Sender<()>),
}

/// A running archive of one input.
pub struct Archive {
    path: PathBuf,
    ops: Option<SyncSender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
    sidecar: Arc<Mutex<Sidecar>>,
    /// The first failure to keep up, to be said once.
    warned: bool,
    /// The next stream position expected (to place gaps).
    stream_head: u64,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The archive of input `label` (`None`: the single input, named `input`) of the run whose
/// journal is `journal`: `aai-live-<stamp>-<label>.wav` beside it.
pub fn path_for(journal: &Path, label: Option<&str>) -> PathBuf {
    let stem = journal
        .file_stem()
        .map_or_else(|| "aai-live".into(), |s| s.to_string_lossy().into_owned());
    journal.with_file_name(format!("{stem}-{}.wav", label.unwrap_or("input")))
}

/// `--archive` (`archive.enabled`): the audio archive of `source`, named `input`, beside the
/// run's `journal`; `None` when archiving is off.
pub fn for_source(
    config: &crate::config::Config,
    journal: &Path,
    source: &crate::config::Source,
    input: &str,
) -> Result<Option<Archive>, ArchiveError> {
    if !config.archive.enabled {
        return Ok(None);
    }
    let label = source.label.as_ref().map(crate::config::Label::as_str);
    Archive::create(
        &path_for(journal, label),
        label,
        input,
        config.streaming.params.sample_rate,
        config.audio.chunk_ms,
    )
    .map(Some)
}

impl Archive {
    /// Create the file (0600, its directory 0700) and start the writer thread.
    pub fn create(
        path: &Path,
        label: Option<&str>,
        input: &str,
        sample_rate: u32,
        chunk_ms: u32,
    ) -> Result<Self, ArchiveError> {
        let err = |source| ArchiveError {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_private_dir(dir).map_err(err)?;
        }
        let file = crate::files::private_options()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(err)?;
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::new(std::io::BufWriter::new(file), spec)
            .map_err(|e| err(std::io::Error::other(e)))?;
        Self::start(path, writer, label, input, chunk_ms).map_err(err)
    }

    /// The archive around an open writer (the file, or a test's).
    fn start<W: std::io::Write + std::io::Seek + Send + 'static>(
        path: &Path,
        writer: hound::WavWriter<W>,
        label: Option<&str>,
        input: &str,
        chunk_ms: u32,
    ) -> std::io::Result<Self> {
        let sidecar = Arc::new(Mutex::new(Sidecar {
            label: label.unwrap_or("input").to_owned(),
            input: input.to_owned(),
            sample_rate: writer.spec().sample_rate,
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            ..Sidecar::default()
        }));
        let capacity = (QUEUE_AUDIO.as_millis() as usize / chunk_ms.max(1) as usize).max(1);
        let (ops, rx) = mpsc::sync_channel(capacity);
        let shared = Arc::clone(&sidecar);
        let sidecar_path = path.with_extension("json");
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("aai-live-archive".into())
            .spawn(move || write_archive(writer, &rx, &shared, &sidecar_path, &shown))?;
        Ok(Self {
            path: path.to_owned(),
            ops: Some(ops),
            thread: Some(thread),
            sidecar,
            warned: false,
            stream_head: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Samples the stream received, at `position` on its timeline. Never blocks: a full
    /// queue leaves them out of the archive (a gap in the sidecar). Returns a warning to show
    /// the first time that happens.
    pub fn chunk(&mut self, position: u64, samples: &[i16]) -> Option<String> {
        self.stream_head = position + samples.len() as u64;
        let n = samples.len() as u64;
        let sent = self
            .ops
            .as_ref()
            .map(|ops| ops.try_send(Op::Chunk(position, samples.to_vec())));
        match sent {
            Some(Ok(())) => self.disk_failure(),
            Some(Err(TrySendError::Full(_))) => self.gap(position, n, "the disk could not keep up"),
            Some(Err(TrySendError::Disconnected(_))) | None => {
                self.gap(position, n, "the archive writer stopped")
            }
        }
    }

    /// Audio the ledger reports lost (it never reached the service).
    pub fn lost(&self, lost: Lost) {
        if let Ok(mut s) = self.sidecar.lock() {
            s.lost.push(lost);
        }
    }

    fn gap(&mut self, stream_sample: u64, samples: u64, why: &str) -> Option<String> {
        if let Ok(mut s) = self.sidecar.lock() {
            let file_sample = s.samples;
            match s.archive_gaps.last_mut() {
                // One gap for a run of chunks left out in a row.
                Some(g) if g.stream_sample + g.samples == stream_sample && g.why == why => {
                    g.samples += samples;
                }
                _ => s.archive_gaps.push(Gap {
                    stream_sample,
                    file_sample,
                    samples,
                    why: why.to_owned(),
                }),
            }
        }
        self.warn_once(stream_sample, why)
    }

    /// The writer thread's failure (the disk failed), said once: the writer leaves the rest out
    /// of the file and notes it in the sidecar.
    fn disk_failure(&mut self) -> Option<String> {
        if self.warned {
            return None;
        }
        let failed = self.sidecar.lock().ok().and_then(|s| {
            let failed = s.archive_gaps.iter().find(|g| g.why == "the disk failed")?;
            let at = failed.stream_sample;
            Some((at, s.write_error.clone()?))
        });
        let (at, error) = failed?;
        self.warn_once(at, &format!("the disk failed ({error})"))
    }

    fn warn_once(&mut self, stream_sample: u64, why: &str) -> Option<String> {
        if self.warned {
            return None;
        }
        self.warned = true;
        Some(format!(
            "the audio archive {} is missing audio from {:.1} s on: {why} (the transcription \
             goes on; the gaps are listed in its .json)",
            self.path.display(),
            stream_sample as f64 / f64::from(self.sample_rate().max(1))
        ))
    }

    fn sample_rate(&self) -> u32 {
        self.sidecar.lock().map_or(16_000, |s| s.sample_rate)
    }

    /// Finish: every queued chunk written, the header final, the sidecar complete. Blocking
    /// (call it off the runtime's threads). Returns the file's path.
    pub fn finish(mut self) -> PathBuf {
        if let Ok(mut s) = self.sidecar.lock() {
            s.complete = true;
            s.stream_samples = self.stream_head;
        }
        drop(self.ops.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(
                "the audio archive writer for {} stopped unexpectedly",
                self.path.display()
            );
        }
        self.path.clone()
    }

    /// Wait until everything handed over so far is in the file (tests, and the end of a run).
    pub fn sync(&self) {
        let (done, wait) = mpsc::channel();
        if self
            .ops
            .as_ref()
            .is_some_and(|ops| ops.send(Op::Sync(done)).is_ok())
        {
            let _ = wait.recv_timeout(Duration::from_secs(10));
        }
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        drop(self.ops.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: samples appended as they come, the header rewritten each second; at the
/// end (the queue closed) the header and the sidecar are final. A write error leaves the rest
/// out (a gap "the disk failed") and is logged once.
fn write_archive<W: std::io::Write + std::io::Seek>(
    mut writer: hound::WavWriter<W>,
    ops: &mpsc::Receiver<Op>,
    sidecar: &Mutex<Sidecar>,
    sidecar_path: &Path,
    shown: &str,
) {
    let mut failed = false;
    let mut last_header = Instant::now();
    write_sidecar(sidecar, sidecar_path);
    while let Ok(op) = ops.recv() {
        match op {
            Op::Chunk(position, samples) => {
                if failed {
                    note_failed(sidecar, position, &samples, None);
                    continue;
                }
                let written = samples.iter().try_for_each(|s| writer.write_sample(*s));
                match written {
                    Ok(()) => {
                        if let Ok(mut s) = sidecar.lock() {
                            s.samples += samples.len() as u64;
                        }
                    }
                    Err(e) => {
                        tracing::error!("cannot write the audio archive {shown}: {e}");
                        failed = true;
                        note_failed(sidecar, position, &samples, Some(&e.to_string()));
                    }
                }
                if last_header.elapsed() >= HEADER_EVERY {
                    last_header = Instant::now();
                    if !failed && let Err(e) = writer.flush() {
                        tracing::error!("cannot write the audio archive {shown}: {e}");
                        failed = true;
                        note_failed(
                            sidecar,
                            position + samples.len() as u64,
                            &[],
                            Some(&e.to_string()),
                        );
                    }
                }
            }
            Op::Sync(done) => {
                if !failed {
                    let _ = writer.flush();
                }
                write_sidecar(sidecar, sidecar_path);
                let _ = done.send(());
            }
        }
    }
    if let Err(e) = writer.finalize() {
        tracing::error!("cannot finish the audio archive {shown}: {e}");
    }
    write_sidecar(sidecar, sidecar_path);
}

/// Samples left out because the disk failed (`error`: the failure, the first time).
fn note_failed(sidecar: &Mutex<Sidecar>, position: u64, samples: &[i16], error: Option<&str>) {
    if let Ok(mut s) = sidecar.lock() {
        if let Some(e) = error {
            s.write_error.get_or_insert_with(|| e.to_owned());
        }
        let file_sample = s.samples;
        let n = samples.len() as u64;
        match s.archive_gaps.last_mut() {
            // One gap for a run of chunks left out in a row.
            Some(g) if g.stream_sample + g.samples == position && g.why == "the disk failed" => {
                g.samples += n;
            }
            _ => s.archive_gaps.push(Gap {
                stream_sample: position,
                file_sample,
                samples: n,
                why: "the disk failed".into(),
            }),
        }
    }
}

fn write_sidecar(sidecar: &Mutex<Sidecar>, path: &Path) {
    let Ok(text) = sidecar
        .lock()
        .map(|s| serde_json::to_string_pretty(&*s).unwrap_or_default())
    else {
        return;
    };
    if let Err(e) = crate::files::write_private(path, text.as_bytes()) {
        tracing::error!(
            "cannot write the audio archive's sidecar {}: {e}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Chunk `k`: 800 samples at stream position `k * 800`.
    fn chunk(k: u64) -> (u64, Vec<i16>) {
        (
            k * 800,
            (0..800).map(|i| ((k * 800 + i) % 30_000) as i16).collect(),
        )
    }

    fn mono16k() -> hound::WavSpec {
        hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        }
    }

    /// The archive finished, and its sidecar.
    fn finished_sidecar(archive: Archive) -> serde_json::Value {
        let done = archive.finish();
        serde_json::from_str(&std::fs::read_to_string(done.with_extension("json")).expect("json"))
            .expect("sidecar")
    }

    /// Samples left out of the file, all gaps together.
    fn gap_samples(sidecar: &serde_json::Value) -> u64 {
        sidecar["archive_gaps"]
            .as_array()
            .expect("gaps")
            .iter()
            .map(|g| g["samples"].as_u64().expect("n"))
            .sum()
    }

    fn read(path: &Path) -> Vec<i16> {
        hound::WavReader::open(path)
            .expect("a readable WAV")
            .samples::<i16>()
            .map(|s| s.expect("sample"))
            .collect()
    }

    #[test]
    fn the_file_is_the_captured_audio_readable_while_recording_and_at_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = dir.path().join("t/aai-live-2026-12-07T20-00-00Z.jsonl");
        let path = path_for(&journal, Some("you"));
        assert!(
            path.ends_with("t/aai-live-2026-12-07T20-00-00Z-you.wav"),
            "{path:?}"
        );
        let mut archive =
            Archive::create(&path, Some("you"), "file: a.wav", 16_000, 50).expect("archive");
        let mut expected: Vec<i16> = Vec::new();
        for k in 0..30 {
            let (at, samples) = chunk(k);
            expected.extend(&samples);
            assert!(archive.chunk(at, &samples).is_none());
        }
        archive.sync();
        // Readable mid-recording: a crash now leaves this much.
        assert_eq!(read(&path), expected);
        archive.lost(Lost {
            from_sample: 800,
            to_sample: 1600,
            samples: 800,
            cause: LossCause::ReplayBufferFull,
        });
        let done = archive.finish();
        assert_eq!(read(&done), expected);
        let sidecar: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(done.with_extension("json")).expect("json"),
        )
        .expect("sidecar");
        assert_eq!(sidecar["samples"], 24_000);
        assert_eq!(sidecar["stream_samples"], 24_000);
        assert_eq!(sidecar["complete"], true);
        assert_eq!(sidecar["label"], "you");
        assert_eq!(sidecar["lost"][0]["from_sample"], 800);
        assert_eq!(sidecar["lost"][0]["cause"], "replay_buffer_full");
        for p in [&done, &done.with_extension("json")] {
            let mode = std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{p:?}");
        }
    }

    /// A writer that blocks while its gate is closed (a disk that hangs).
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        inner: std::io::Cursor<Vec<u8>>,
    }

    impl Gate {
        fn wait(&self) {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().expect("lock");
            while !*open {
                open = cv.wait(open).expect("wait");
            }
        }
    }

    impl std::io::Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.wait();
            self.inner.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl std::io::Seek for Gate {
        fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
            self.wait();
            self.inner.seek(to)
        }
    }

    #[test]
    fn a_disk_that_cannot_keep_up_leaves_gaps_in_the_archive_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.wav");
        let open = Arc::new((Mutex::new(true), std::sync::Condvar::new()));
        let gate = Gate {
            open: Arc::clone(&open),
            inner: std::io::Cursor::new(Vec::new()),
        };
        let spec = mono16k();
        let writer = hound::WavWriter::new(gate, spec).expect("header");
        // The disk hangs; a queue of one chunk (10 s of 10 s chunks).
        *open.0.lock().expect("lock") = false;
        let mut archive = Archive::start(&path, writer, None, "test:tone", 10_000).expect("start");
        let mut warnings = Vec::new();
        let started = Instant::now();
        for k in 0..50 {
            let (at, samples) = chunk(k);
            warnings.extend(archive.chunk(at, &samples));
        }
        // Never blocked by the disk.
        assert!(started.elapsed() < Duration::from_secs(1));
        *open.0.lock().expect("lock") = true;
        open.1.notify_all();
        let sidecar = finished_sidecar(archive);
        let gaps = gap_samples(&sidecar);
        // A few chunks got through (the one being written, the one or two queued as the thread
        // took its first); every other is a gap, and the stream's samples are all accounted
        // for.
        assert!(gaps >= 47 * 800, "{sidecar}");
        assert_eq!(
            sidecar["samples"].as_u64().expect("samples") + gaps,
            50 * 800
        );
        assert!(
            sidecar["archive_gaps"]
                .as_array()
                .is_some_and(|g| g.len() <= 2),
            "runs of chunks left out are one gap each: {sidecar}"
        );
        assert_eq!(warnings.len(), 1, "said once: {warnings:?}");
        assert!(warnings[0].contains("could not keep up"), "{warnings:?}");
    }

    /// A writer whose disk fills up after `room` bytes.
    struct Full {
        room: usize,
        inner: std::io::Cursor<Vec<u8>>,
    }

    impl std::io::Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.inner.get_ref().len() + buf.len() > self.room {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            self.inner.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl std::io::Seek for Full {
        fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(to)
        }
    }

    #[test]
    fn a_disk_that_fails_is_said_once_and_leaves_the_rest_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.wav");
        let spec = mono16k();
        // Room for the header and a little more than two chunks.
        let full = Full {
            room: 44 + 2 * 1600 + 100,
            inner: std::io::Cursor::new(Vec::new()),
        };
        let writer = hound::WavWriter::new(std::io::BufWriter::with_capacity(64, full), spec)
            .expect("header");
        let mut archive =
            Archive::start(&path, writer, Some("you"), "test:tone", 50).expect("start");
        let mut warnings = Vec::new();
        for k in 0..20 {
            let (at, samples) = chunk(k);
            warnings.extend(archive.chunk(at, &samples));
            // The writer takes each chunk before the next (a failure is seen by then).
            archive.sync();
        }
        let sidecar = finished_sidecar(archive);
        assert_eq!(warnings.len(), 1, "said once: {warnings:?}");
        assert!(warnings[0].contains("the disk failed"), "{warnings:?}");
        assert!(
            warnings[0].contains("transcription goes on"),
            "{warnings:?}"
        );
        let gaps = gap_samples(&sidecar);
        assert_eq!(
            sidecar["samples"].as_u64().expect("samples") + gaps,
            20 * 800,
            "{sidecar}"
        );
        assert!(gaps >= 17 * 800, "{sidecar}");
    }

    #[test]
    fn an_archive_that_cannot_be_created_is_a_warning_not_a_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocked = dir.path().join("not-a-dir");
        std::fs::write(&blocked, b"a file where the directory should be").expect("write");
        let e = Archive::create(&blocked.join("a.wav"), None, "test:tone", 16_000, 50)
            .expect_err("cannot be created");
        let warning = e.warning();
        assert!(warning.contains("not-a-dir/a.wav"), "{warning}");
        assert!(warning.contains("without an archive"), "{warning}");
    }
}
