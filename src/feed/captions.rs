//! `--captions FILE`: the run's finals as SubRip or WebVTT (by the file's extension), written as
//! turns end, so a player or an OBS text source can follow the growing file.
//!
//! Each new cue is appended and flushed: the file is a valid caption file after every cue. A
//! revision (a replaced final, a speaker revised or named) changes cues already written, so the
//! file is rewritten whole, atomically (a temporary file beside it, then a rename): a follower
//! reopens it by name (`tail -F`). The cues are the transcript exports' (`to_srt`, `to_vtt`):
//! terminal-safe text, never a blank line or `-->` inside a cue. The writing happens on a
//! thread of its own, so a slow disk never holds up the session.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::turns::{Changed, Turns};
use crate::config::TranscriptFormat;
use crate::session::streams::Sourced;

#[derive(Debug, thiserror::Error)]
pub enum CaptionsError {
    #[error("--captions {path}: the file name must end in .srt or .vtt")]
    Extension { path: String },
    #[error("cannot write the captions file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the captions file {path} is no longer written: {why}")]
    Stopped { path: String, why: String },
}

/// The caption format a file name asks for.
pub fn format_of(path: &Path) -> Result<TranscriptFormat, CaptionsError> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("srt") => Ok(TranscriptFormat::Srt),
        Some("vtt") => Ok(TranscriptFormat::Vtt),
        _ => Err(CaptionsError::Extension {
            path: path.display().to_string(),
        }),
    }
}

/// The file as written so far, and how to add to it.
struct File {
    path: PathBuf,
    format: TranscriptFormat,
    written: String,
    out: std::fs::File,
}

impl File {
    fn create(path: &Path, format: TranscriptFormat) -> std::io::Result<Self> {
        let mut file = Self {
            path: path.to_owned(),
            format,
            written: String::new(),
            out: std::fs::File::create(path)?,
        };
        // A WebVTT file is valid from its header on; an empty SubRip file is too.
        file.replace(Turns::default().render(format))?;
        Ok(file)
    }

    /// Bring the file to `text`: appended when it only adds cues, else rewritten whole.
    fn update(&mut self, text: String) -> std::io::Result<()> {
        if let Some(added) = text.strip_prefix(self.written.as_str()) {
            self.out.write_all(added.as_bytes())?;
            self.out.flush()?;
            self.written = text;
            return Ok(());
        }
        self.replace(text)
    }

    /// Temporary file beside it, then a rename: a reader sees the old file or the new one.
    fn replace(&mut self, text: String) -> std::io::Result<()> {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = self.path.with_file_name(format!(".{name}.aai-live-tmp"));
        {
            let mut out = std::fs::File::create(&temp)?;
            out.write_all(text.as_bytes())?;
            out.sync_data()?;
        }
        std::fs::rename(&temp, &self.path)?;
        self.out = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        self.written = text;
        Ok(())
    }
}

/// The captions file's writer thread.
pub struct Captions {
    tx: std::sync::mpsc::Sender<(u32, Sourced)>,
    thread: std::thread::JoinHandle<Result<(), CaptionsError>>,
    path: String,
}

impl std::fmt::Debug for Captions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captions")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Captions {
    /// Create `path` (an empty caption file at once) and start its thread.
    pub fn start(path: &Path) -> Result<Self, CaptionsError> {
        let format = format_of(path)?;
        let shown = path.display().to_string();
        let io = |source| CaptionsError::Io {
            path: shown.clone(),
            source,
        };
        let mut file = File::create(path, format).map_err(io)?;
        let (tx, rx) = std::sync::mpsc::channel::<(u32, Sourced)>();
        let thread_path = shown.clone();
        let thread = std::thread::Builder::new()
            .name("aai-live-captions".into())
            .spawn(move || {
                let mut turns = Turns::default();
                while let Ok((run, sourced)) = rx.recv() {
                    if turns.apply(run, &sourced) == Changed::No {
                        continue;
                    }
                    file.update(turns.render(file.format))
                        .map_err(|source| CaptionsError::Io {
                            path: thread_path.clone(),
                            source,
                        })?;
                }
                Ok(())
            })
            .map_err(io)?;
        Ok(Self {
            tx,
            thread,
            path: shown,
        })
    }

    /// Hand run `run`'s event to the writer (never waits for the disk); fails once the writer
    /// has stopped on an error.
    pub fn offer(&self, run: u32, sourced: &Sourced) -> Result<(), CaptionsError> {
        if !matters(sourced) {
            return Ok(());
        }
        self.tx
            .send((run, sourced.clone()))
            .map_err(|_| CaptionsError::Stopped {
                path: self.path.clone(),
                why: "its writer stopped".into(),
            })
    }

    /// Everything handed over is written when this returns.
    pub fn finish(self) -> Result<(), CaptionsError> {
        drop(self.tx);
        self.thread.join().map_err(|_| CaptionsError::Stopped {
            path: self.path,
            why: "its writer panicked".into(),
        })?
    }
}

/// Whether an event can change the captions (the rest are not sent to the thread).
fn matters(sourced: &Sourced) -> bool {
    use crate::events::SessionEvent;
    matches!(
        sourced.event,
        SessionEvent::Final(_)
            | SessionEvent::SpeakerRevision { .. }
            | SessionEvent::SpeakerNamed { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::SessionEvent;
    use crate::transcript::FinalTurn;

    fn final_turn(order: u64, text: &str) -> Sourced {
        Sourced {
            index: 0,
            source: None,
            event: SessionEvent::Final(FinalTurn::sample(
                1,
                order,
                text,
                order * 1000,
                order * 1000 + 900,
            )),
        }
    }

    #[test]
    fn the_extension_picks_the_format() {
        assert_eq!(
            format_of(Path::new("a.SRT")).ok(),
            Some(TranscriptFormat::Srt)
        );
        assert_eq!(
            format_of(Path::new("a.vtt")).ok(),
            Some(TranscriptFormat::Vtt)
        );
        let error = format_of(Path::new("a.txt")).expect_err("not captions");
        assert!(error.to_string().contains(".srt or .vtt"), "{error}");
    }

    #[test]
    fn cues_are_appended_and_a_revision_rewrites_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("live.srt");
        let mut file = File::create(&path, TranscriptFormat::Srt).expect("create");
        let mut turns = Turns::default();
        let read = || std::fs::read_to_string(&path).expect("read");
        turns.apply(0, &final_turn(0, "one"));
        file.update(turns.render(TranscriptFormat::Srt))
            .expect("append");
        // A follower's handle on the file sees the appended cue: the same inode.
        let inode = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).expect("meta").ino()
        };
        let before = inode(&path);
        turns.apply(0, &final_turn(1, "two\n\n2\n00:00:00,000 --> 00:00:01,000"));
        file.update(turns.render(TranscriptFormat::Srt))
            .expect("append");
        assert_eq!(inode(&path), before, "appended in place");
        let text = read();
        assert!(
            text.starts_with("1\n00:00:00,000 --> 00:00:00,900\none\n\n2\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("-->").count(),
            2,
            "no arrow inside a cue: {text}"
        );
        assert!(!text.contains("\n\n\n"), "{text}");
        turns.apply(0, &final_turn(0, "ONE"));
        file.update(turns.render(TranscriptFormat::Srt))
            .expect("rewrite");
        assert_ne!(inode(&path), before, "replaced by a rename");
        assert!(read().contains("ONE"), "{}", read());
        assert!(!dir.path().join(".live.srt.aai-live-tmp").exists());
    }

    #[test]
    fn the_thread_writes_everything_before_finish_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("live.vtt");
        let captions = Captions::start(&path).expect("start");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "WEBVTT\n\n");
        for n in 0..3 {
            captions
                .offer(0, &final_turn(n, "a <b> & c"))
                .expect("offer");
        }
        captions.finish().expect("finish");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.matches("a &lt;b&gt; &amp; c").count(), 3, "{text}");
    }

    #[test]
    fn a_file_that_cannot_be_created_is_an_error_at_start() {
        let error = Captions::start(Path::new("/nonexistent-dir/x.srt")).err();
        assert!(matches!(error, Some(CaptionsError::Io { .. })), "{error:?}");
    }
}
