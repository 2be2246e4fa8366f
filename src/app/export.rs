//! Writing transcripts: a finished run's transcript next to its journal (as `run --headless`
//! does), and the `export` action's copy of everything the dashboard has seen. Both use the
//! formats of `transcript.formats` and the exports of [`crate::transcript::Transcript`], so the
//! files match the headless ones byte for byte. Blocking file I/O: call from a blocking thread.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::transcript::Turn;
use crate::config::TranscriptFormat;
use crate::protocol::{Turn as WireTurn, Word};
use crate::transcript::Transcript;

/// A file name stamp: RFC 3339 UTC to the second, with `-` for `:` (portable file names).
pub fn stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(':', "-")
}

/// Write `transcript` in `formats` beside `journal` (same name, other extensions).
pub fn save_run(
    transcript: &Transcript,
    journal: &Path,
    formats: &[TranscriptFormat],
) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    if let Some(path) = transcript.journal_path() {
        written.push(path.to_owned());
    }
    for format in formats {
        let (ext, text) = render(transcript, *format);
        let path = journal.with_extension(ext);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Write every turn in `formats` (plain text when none) to `dir/aai-live-<stamp>-export.*`.
pub fn export(
    turns: &[Turn],
    dir: &Path,
    formats: &[TranscriptFormat],
    at: SystemTime,
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let transcript = to_transcript(turns);
    let base = dir.join(format!("aai-live-{}-export", stamp(at)));
    let formats = if formats.is_empty() {
        &[TranscriptFormat::Txt][..]
    } else {
        formats
    };
    let mut written = Vec::new();
    for format in formats {
        let (ext, text) = render(&transcript, *format);
        let path = base.with_extension(ext);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn render(transcript: &Transcript, format: TranscriptFormat) -> (&'static str, String) {
    match format {
        TranscriptFormat::Txt => ("txt", transcript.to_text()),
        TranscriptFormat::Srt => ("srt", transcript.to_srt()),
        TranscriptFormat::Vtt => ("vtt", transcript.to_vtt()),
    }
}

/// The dashboard's turns as a [`Transcript`], so exports use its formatting. Each turn goes in
/// as a final with one word spanning it (the exports need only its text, times and speaker),
/// keyed by its position so turns of different runs never replace one another.
pub fn to_transcript(turns: &[Turn]) -> Transcript {
    let mut transcript = Transcript::default();
    for (i, turn) in turns.iter().enumerate() {
        let wire = WireTurn {
            turn_order: 0,
            end_of_turn: true,
            turn_is_formatted: true,
            transcript: turn.text.clone(),
            words: vec![Word {
                start: turn.start_ms,
                end: turn.end_ms.max(turn.start_ms),
                text: turn.text.clone(),
                word_is_final: true,
                ..Word::default()
            }],
            speaker_label: turn.speaker.clone(),
            ..WireTurn::default()
        };
        transcript.apply(i as u64, "", 0, &wire, None);
    }
    transcript
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_keep_times_text_and_speaker() {
        let turn = |start_ms, text: &str, speaker: Option<&str>| Turn {
            run: 1,
            generation: 1,
            turn_order: 0,
            start_ms,
            end_ms: start_ms + 700,
            speaker: speaker.map(str::to_owned),
            text: text.into(),
            words: 2,
            received_at: SystemTime::UNIX_EPOCH,
        };
        let t = to_transcript(&[
            turn(61_000, "Hello world.", None),
            turn(62_000, "Again.", Some("B")),
        ]);
        assert_eq!(
            t.to_text(),
            "[00:01:01] Hello world.\n[00:01:02] B: Again.\n"
        );
        assert!(
            t.to_srt()
                .starts_with("1\n00:01:01,000 --> 00:01:01,700\nHello world.\n")
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let files = export(
            &[turn(0, "x", None)],
            dir.path(),
            &[TranscriptFormat::Txt, TranscriptFormat::Vtt],
            SystemTime::UNIX_EPOCH,
        )
        .expect("export");
        assert_eq!(files.len(), 2);
        assert!(
            files[0]
                .display()
                .to_string()
                .ends_with("aai-live-1970-01-01T00-00-00Z-export.txt")
        );
    }
}
