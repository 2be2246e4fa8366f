//! The transcript as the dashboard holds it: every final turn since the dashboard started (across
//! stops and restarts), the live partial, and the scroll position.
//!
//! Scrolling is by turns, anchored to a turn index: new turns arriving while the user reads
//! history do not move the view, and the count of turns below is a subtraction. Rendering walks
//! back from the anchor only as far as the pane is tall, so its cost does not grow with history.

use std::time::SystemTime;

use crate::transcript::{FinalTurn, PartialTurn, Transcript};

/// How far back a formatted duplicate of a final can arrive (older servers send one right after
/// the unformatted final): only that many recent turns are searched for a replacement.
const REPLACE_WINDOW: usize = 16;

/// A final turn as the screen shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Which start of streaming (1, 2, ...) produced it: generations restart with each run.
    pub run: u32,
    pub generation: u64,
    pub turn_order: u64,
    /// Stream time of its first and last word, in ms.
    pub start_ms: u64,
    pub end_ms: u64,
    pub speaker: Option<String>,
    /// The name given to that speaker.
    pub speaker_name: Option<String>,
    /// Not matched to an earlier session's speaker with confidence (shown with a `?`).
    pub speaker_uncertain: bool,
    /// The language the service heard (with `language_detection`).
    pub language: Option<String>,
    /// The input's label in meeting mode.
    pub source: Option<String>,
    /// Marked as an echo of another input's turn (dimmed, kept).
    pub echo: bool,
    pub text: String,
    pub words: usize,
    pub received_at: SystemTime,
}

impl Turn {
    /// Who said it, as the exports write it ("You", "Them · A").
    pub fn who(&self) -> Option<String> {
        crate::transcript::who(
            self.source.as_deref(),
            self.speaker.as_deref(),
            self.speaker_name.as_deref(),
            self.speaker_uncertain,
        )
    }
}

/// The turn being spoken.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    pub run: u32,
    pub generation: u64,
    pub turn_order: u64,
    pub start_ms: u64,
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TranscriptView {
    turns: Vec<Turn>,
    /// Turns before this index were cleared from the screen (`c`); they are still exported.
    visible_from: usize,
    partial: Option<Partial>,
    /// `None`: following the newest turn. `Some(i)`: turn `i` is at the bottom of the pane.
    anchor: Option<usize>,
}

impl TranscriptView {
    /// Every final turn, cleared ones included (what an export writes).
    pub fn all(&self) -> &[Turn] {
        &self.turns
    }

    /// The turns on screen (after the last clear).
    pub fn visible(&self) -> &[Turn] {
        &self.turns[self.visible_from..]
    }

    pub fn visible_from(&self) -> usize {
        self.visible_from
    }

    pub fn partial(&self) -> Option<&Partial> {
        self.partial.as_ref()
    }

    pub fn is_following(&self) -> bool {
        self.anchor.is_none()
    }

    /// The index of the turn at the bottom of the pane (`None` when there is none).
    pub fn bottom(&self) -> Option<usize> {
        match self.anchor {
            Some(i) => Some(i),
            None => self
                .turns
                .len()
                .checked_sub(1)
                .filter(|&i| i >= self.visible_from),
        }
    }

    /// Turns below the view while scrolled back.
    pub fn below(&self) -> usize {
        self.anchor.map_or(0, |i| self.turns.len() - 1 - i)
    }

    pub fn set_partial(&mut self, run: u32, p: &PartialTurn) {
        self.partial = Some(Partial {
            run,
            generation: p.generation,
            turn_order: p.turn_order,
            start_ms: p.start_ms,
            text: crate::untrusted::without_controls(&p.text).into_owned(),
        });
    }

    pub fn clear_partial(&mut self) {
        self.partial = None;
    }

    /// Add a final turn, or replace the recent one with the same generation and order (a
    /// formatted duplicate). Returns whether it replaced one.
    pub fn push_final(&mut self, run: u32, f: &FinalTurn, now: SystemTime) -> bool {
        // A final from another session (the retiring one, during a hand-over) leaves the
        // successor's partial alone.
        if self.partial.as_ref().is_some_and(|p| {
            p.run == run && p.generation == f.generation && p.turn_order <= f.turn_order
        }) {
            self.partial = None;
        }
        let turn = Turn {
            run,
            generation: f.generation,
            turn_order: f.turn_order,
            start_ms: f.start_ms,
            end_ms: f.end_ms,
            speaker: f
                .speaker
                .as_deref()
                .map(|s| crate::untrusted::without_controls(s).into_owned()),
            speaker_name: f
                .speaker_name
                .as_deref()
                .map(|s| crate::untrusted::without_controls(s).into_owned()),
            speaker_uncertain: f.speaker_uncertain,
            language: f
                .language_code
                .as_deref()
                .map(|s| crate::untrusted::without_controls(s).into_owned()),
            source: f.source.clone(),
            echo: f.echo,
            text: crate::untrusted::without_controls(&f.text).into_owned(),
            words: if f.words.is_empty() {
                f.text.split_whitespace().count()
            } else {
                f.words.len()
            },
            received_at: now,
        };
        let start = self
            .turns
            .len()
            .saturating_sub(REPLACE_WINDOW)
            .max(self.visible_from);
        if let Some(existing) = self.turns[start..]
            .iter_mut()
            .rev()
            .find(|t| t.run == run && t.generation == f.generation && t.turn_order == f.turn_order)
        {
            *existing = turn;
            return true;
        }
        self.turns.push(turn);
        false
    }

    /// The service revised who said a turn of this run (its label, `None` when it no longer
    /// says; its name).
    pub fn revise(
        &mut self,
        run: u32,
        (generation, turn_order): (u64, u64),
        speaker: Option<&str>,
        name: Option<&str>,
        uncertain: bool,
    ) {
        if let Some(turn) = self
            .turns
            .iter_mut()
            .rev()
            .find(|t| t.run == run && t.generation == generation && t.turn_order == turn_order)
        {
            turn.speaker = speaker.map(|s| crate::untrusted::without_controls(s).into_owned());
            turn.speaker_name = name.map(|s| crate::untrusted::without_controls(s).into_owned());
            turn.speaker_uncertain = uncertain;
        }
    }

    /// `speaker` of input `source` (`None`: of every input) is called `name` from now on: every
    /// turn of theirs on screen too.
    pub fn name_speaker(&mut self, source: Option<&str>, speaker: &str, name: &str) {
        for turn in &mut self.turns {
            let same_input = source.is_none() || turn.source.as_deref() == source;
            if same_input
                && turn
                    .speaker
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(speaker))
            {
                turn.speaker_name = Some(crate::untrusted::without_controls(name).into_owned());
            }
        }
    }

    /// The turn the view is anchored on (the bottom one shown): what "this turn" means to the
    /// keys that act on one.
    pub fn anchored(&self) -> Option<&Turn> {
        self.bottom().and_then(|i| self.turns.get(i))
    }

    /// Hide everything on screen so far (the saved files keep it), and follow again.
    pub fn clear(&mut self) {
        self.visible_from = self.turns.len();
        self.partial = None;
        self.anchor = None;
    }

    /// Scroll back `n` turns (stops following).
    pub fn scroll_up(&mut self, n: usize) {
        let Some(bottom) = self.bottom() else {
            return;
        };
        self.anchor = Some(bottom.saturating_sub(n).max(self.visible_from));
    }

    /// Scroll forward `n` turns; reaching the newest turn follows again.
    pub fn scroll_down(&mut self, n: usize) {
        if let Some(i) = self.anchor {
            let last = self.turns.len().saturating_sub(1);
            self.anchor = if i + n >= last { None } else { Some(i + n) };
        }
    }

    pub fn scroll_top(&mut self) {
        if self.turns.len() > self.visible_from {
            self.anchor = Some(self.visible_from);
            if self.turns.len() - 1 == self.visible_from {
                // A single turn: the top is the bottom.
                self.anchor = None;
            }
        }
    }

    pub fn follow(&mut self) {
        self.anchor = None;
    }
}

/// The dashboard's turns as a [`Transcript`], so exports use its formatting: each turn a final
/// with its times, text, speaker, input and echo mark, keyed by its position so turns of
/// different runs never replace one another.
pub fn to_transcript(turns: &[Turn]) -> Transcript {
    Transcript::from_finals(
        turns
            .iter()
            .enumerate()
            .map(|(i, turn)| FinalTurn {
                generation: i as u64,
                session_id: String::new(),
                turn_order: 0,
                text: turn.text.clone(),
                formatted: true,
                start_ms: turn.start_ms,
                end_ms: turn.end_ms.max(turn.start_ms),
                speaker: turn.speaker.clone(),
                speaker_name: turn.speaker_name.clone(),
                speaker_uncertain: turn.speaker_uncertain,
                language_code: turn.language.clone(),
                words: Vec::new(),
                latency_ms: None,
                source: turn.source.clone(),
                echo: turn.echo,
                ..FinalTurn::default()
            })
            .collect(),
    )
}

/// The dashboard's turns as one [`Transcript`] per run (each start of streaming has its own
/// stream time, from 00:00), in order, each with the name its export file gets: none when there
/// is only one run, `run<N>` otherwise, so runs never share a file or a timeline.
pub fn runs_to_transcripts(turns: &[Turn]) -> Vec<(Option<String>, Transcript)> {
    let runs: Vec<&[Turn]> = turns.chunk_by(|a, b| a.run == b.run).collect();
    let several = runs.len() > 1;
    runs.into_iter()
        .map(|run| {
            let name = several.then(|| format!("run{}", run[0].run));
            (name, to_transcript(run))
        })
        .collect()
}

/// Export every run of the dashboard's transcript at `at` (see [`runs_to_transcripts`]).
/// Blocking file I/O.
pub fn export_runs(
    turns: &[Turn],
    dir: &std::path::Path,
    formats: &[crate::config::TranscriptFormat],
    at: SystemTime,
) -> Result<Vec<std::path::PathBuf>, crate::transcript::TranscriptError> {
    let mut written = Vec::new();
    for (part, transcript) in runs_to_transcripts(turns) {
        written.extend(transcript.export_to(dir, formats, at, part.as_deref())?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TranscriptFormat;

    fn fin(generation: u64, order: u64, text: &str) -> FinalTurn {
        FinalTurn {
            session_id: "s".into(),
            formatted: false,
            ..FinalTurn::sample(generation, order, text, order * 1000, order * 1000 + 500)
        }
    }

    #[test]
    fn scrolling_anchors_and_counts_turns_below() {
        let mut t = TranscriptView::default();
        let now = SystemTime::UNIX_EPOCH;
        for i in 0..10 {
            t.push_final(1, &fin(1, i, "x"), now);
        }
        assert_eq!(t.bottom(), Some(9));
        t.scroll_up(3);
        assert_eq!((t.bottom(), t.below()), (Some(6), 3));
        t.push_final(1, &fin(1, 10, "y"), now);
        assert_eq!((t.bottom(), t.below()), (Some(6), 4));
        t.scroll_down(100);
        assert!(t.is_following());
        t.scroll_top();
        assert_eq!(t.bottom(), Some(0));
        t.clear();
        assert!(t.visible().is_empty());
        assert_eq!(t.all().len(), 11);
        t.scroll_up(1);
        assert!(t.is_following(), "nothing to scroll");
    }

    #[test]
    fn a_duplicate_final_replaces_and_clears_the_partial() {
        let mut t = TranscriptView::default();
        let now = SystemTime::UNIX_EPOCH;
        t.set_partial(
            1,
            &PartialTurn {
                generation: 1,
                turn_order: 0,
                text: "hi".into(),
                start_ms: 0,
                end_ms: 10,
            },
        );
        assert!(!t.push_final(1, &fin(1, 0, "hi there"), now));
        assert!(t.partial().is_none());
        assert!(t.push_final(1, &fin(1, 0, "Hi there."), now));
        assert_eq!(t.all().len(), 1);
        assert_eq!(t.all()[0].text, "Hi there.");
        // Same generation and order in another run is another turn.
        assert!(!t.push_final(2, &fin(1, 0, "again"), now));
    }

    /// A one-word turn of `run`, 700 ms long, nobody's.
    fn said(run: u32, start_ms: u64, text: &str) -> Turn {
        Turn {
            run,
            generation: 1,
            turn_order: 0,
            start_ms,
            end_ms: start_ms + 700,
            speaker: None,
            speaker_name: None,
            speaker_uncertain: false,
            language: None,
            source: None,
            echo: false,
            text: text.into(),
            words: 1,
            received_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn exports_keep_times_text_and_speaker() {
        let turn = |start_ms, text: &str, speaker: Option<&str>| Turn {
            speaker: speaker.map(str::to_owned),
            words: 2,
            ..said(1, start_ms, text)
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
        let files = to_transcript(&[turn(0, "x", None)])
            .export_to(
                dir.path(),
                &[TranscriptFormat::Txt, TranscriptFormat::Vtt],
                SystemTime::UNIX_EPOCH,
                None,
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

    /// Each run is its own export file with its own timeline; one run keeps the plain name.
    #[test]
    fn each_run_exports_to_its_own_file() {
        let turn = said;
        let dir = tempfile::tempdir().expect("tempdir");
        let at = SystemTime::UNIX_EPOCH;
        let one = export_runs(&[turn(1, 0, "a")], dir.path(), &[], at).expect("export");
        assert_eq!(names(&one), ["aai-live-1970-01-01T00-00-00Z-export.txt"]);

        let dir = tempfile::tempdir().expect("tempdir");
        let turns = [
            turn(1, 0, "First."),
            turn(1, 4000, "Second."),
            turn(3, 0, "Again."),
        ];
        let files = export_runs(&turns, dir.path(), &[TranscriptFormat::Txt], at).expect("export");
        assert_eq!(
            names(&files),
            [
                "aai-live-1970-01-01T00-00-00Z-export-run1.txt",
                "aai-live-1970-01-01T00-00-00Z-export-run3.txt"
            ]
        );
        let read = |i: usize| std::fs::read_to_string(&files[i]).expect("read");
        assert_eq!(read(0), "[00:00:00] First.\n[00:00:04] Second.\n");
        assert_eq!(read(1), "[00:00:00] Again.\n");
    }

    fn names(files: &[std::path::PathBuf]) -> Vec<String> {
        files
            .iter()
            .map(|f| f.file_name().expect("name").to_string_lossy().into_owned())
            .collect()
    }
}
