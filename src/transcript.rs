//! The transcript: turns keyed by (session generation, turn order), partials replaced in place,
//! finals kept (a later formatted final for the same turn replaces the unformatted one — the
//! pre-2026 servers' duplicate), a JSONL journal flushed on every final so a crash loses nothing,
//! and exports to plain text, SRT and WebVTT. The transcript files' names and writing live here
//! too, so the headless runner and the dashboard produce the same files.
//!
//! Files and directories created here are private (0600 / 0700, `crate::files`): they hold what
//! people said. The journal is written by a thread of its own (`Journal`), so the supervisor's
//! async task hands a final over and never waits for the disk.

pub mod echo;
pub mod speakers;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::TranscriptFormat;
use crate::protocol::Turn;
use crate::untrusted::{for_cue, for_text_file};

/// A file name stamp: RFC 3339 UTC to the second, with `-` for `:` (portable file names).
fn stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(':', "-")
}

/// The journal of a run started at `at`: `dir/aai-live-<stamp>.jsonl`. Its exports go beside it
/// with the same name ([`Transcript::write_beside`]).
pub fn journal_path(dir: &Path, at: SystemTime) -> PathBuf {
    dir.join(format!("aai-live-{}.jsonl", stamp(at)))
}

/// A word with times in ms from the start of the stream (not of its session).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbsWord {
    pub text: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub confidence: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

/// A finished turn.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct FinalTurn {
    pub generation: u64,
    pub session_id: String,
    pub turn_order: u64,
    pub text: String,
    pub formatted: bool,
    pub start_ms: u64,
    pub end_ms: u64,
    /// The service's speaker label (`A`, `B`…; `PENDING` or `UNKNOWN` for a turn too short to
    /// tell), never a name: in the run's terms, the first labelled session's labels, later
    /// sessions' mapped onto them ([`speakers`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    /// What this turn's own session called the speaker, when the run calls them otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_speaker: Option<String>,
    /// The speaker could not be matched to an earlier session's with confidence (a `warning`
    /// said so): the label is this session's own, or a new one, never a guess.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub speaker_uncertain: bool,
    /// The name given to that speaker (`[speakers] names`, or on the dashboard).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker_name: Option<String>,
    /// With `language_detection`: the language the service heard, and how sure it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_confidence: Option<f64>,
    pub words: Vec<AbsWord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The input's label in meeting mode (`you`, `them`); absent with one unlabelled input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// At least 80 % of its words are a turn of another input that started within 1.5 s: the
    /// microphone hearing the speakers ([`echo`]). Kept, marked, never dropped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub echo: bool,
}

impl FinalTurn {
    /// A final of `text` from `start_ms` to `end_ms`, for tests (no words, no latency).
    #[cfg(test)]
    pub(crate) fn sample(
        generation: u64,
        turn_order: u64,
        text: &str,
        start_ms: u64,
        end_ms: u64,
    ) -> Self {
        Self {
            generation,
            session_id: String::new(),
            turn_order,
            text: text.to_owned(),
            formatted: true,
            start_ms,
            end_ms,
            ..Self::default()
        }
    }

    /// Who said it, as exports and the screen write it: the input's name ("You"), its speaker
    /// ("A"), or both ("Them · A"); `None` when neither is known.
    pub fn who(&self) -> Option<String> {
        who(
            self.source.as_deref(),
            self.speaker.as_deref(),
            self.speaker_name.as_deref(),
            self.speaker_uncertain,
        )
    }
}

/// Who said a turn, from its input's label and its speaker (named, or the service's label):
/// "You", "Ana", "A", "Them · Ana", "speaker pending"; "A?" or "Ana?" when the speaker could
/// not be matched across sessions. The one layout of the screen and the exports.
pub fn who(
    source: Option<&str>,
    speaker: Option<&str>,
    name: Option<&str>,
    uncertain: bool,
) -> Option<String> {
    let source = source
        .and_then(|s| s.parse::<crate::config::Label>().ok())
        .map(|l| l.display_name());
    let speaker = match (speaker, name) {
        (Some(s), _) if is_pending(s) => Some("speaker pending".to_owned()),
        (Some(_), Some(name)) => Some(name.to_owned()),
        (speaker, _) => speaker.map(str::to_owned),
    }
    .map(|s| if uncertain { format!("{s}?") } else { s });
    match (source, speaker) {
        (Some(source), Some(speaker)) => Some(format!("{source} · {speaker}")),
        (Some(source), None) => Some(source),
        (None, Some(speaker)) => Some(speaker),
        (None, None) => None,
    }
}

/// The turn being spoken.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartialTurn {
    pub generation: u64,
    pub turn_order: u64,
    pub text: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// What applying a Turn changed.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // one a turn, consumed at once: boxing buys nothing
pub enum Change {
    Partial(PartialTurn),
    Final { turn: FinalTurn, replaced: bool },
}

#[derive(Debug, thiserror::Error)]
#[error("transcript file {path}: {source}")]
pub struct TranscriptError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// All turns of a run.
#[derive(Debug, Default)]
pub struct Transcript {
    finals: Vec<FinalTurn>,
    index: HashMap<(u64, u64), usize>,
    partial: Option<PartialTurn>,
    /// Shared by the streams of one run (meeting mode): one journal, each line labelled.
    journal: Option<std::sync::Arc<Journal>>,
    /// The input's label, stamped on every final (meeting mode).
    source: Option<String>,
    /// Names for the service's speaker labels.
    names: Names,
    /// Every session's speaker labels mapped onto the run's.
    continuity: speakers::Continuity,
}

/// Names for the service's speaker labels (`[speakers] names`, and those given on the
/// dashboard): keyed by the label (`A`: every input) or `INPUT:LABEL` (`them:A`: one input of a
/// meeting), compared without case — environment keys arrive lower-cased. `PENDING` and
/// `UNKNOWN` (a turn too short to tell) are never named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(BTreeMap<String, String>);

impl Names {
    /// From `[speakers] names` (keys checked by the configuration).
    pub fn new(names: &BTreeMap<String, String>) -> Self {
        Self(
            names
                .iter()
                .map(|(k, v)| (k.to_lowercase(), v.clone()))
                .collect(),
        )
    }

    /// The name of `speaker` of input `source`, if it has one.
    pub fn lookup(&self, source: Option<&str>, speaker: Option<&str>) -> Option<&str> {
        let speaker = speaker.filter(|s| !is_pending(s))?.to_lowercase();
        source
            .and_then(|source| self.0.get(&format!("{}:{speaker}", source.to_lowercase())))
            .or_else(|| self.0.get(&speaker))
            .map(String::as_str)
    }

    /// Name `speaker` of `source` (`None`: of every input).
    pub fn set(&mut self, source: Option<&str>, speaker: &str, name: &str) {
        let key = match source {
            Some(source) => format!("{}:{}", source.to_lowercase(), speaker.to_lowercase()),
            None => speaker.to_lowercase(),
        };
        self.0.insert(key, name.to_owned());
    }
}

/// The service's word for a turn too short to tell who spoke (`UNKNOWN`, then `PENDING` since
/// June 2026): shown as "speaker pending", never named, coloured or mapped.
pub fn is_pending(speaker: &str) -> bool {
    speaker.eq_ignore_ascii_case("PENDING") || speaker.eq_ignore_ascii_case("UNKNOWN")
}

/// How long [`Transcript::sync_journal`] waits for the writer thread before giving up (a hung
/// network file system must not hang the exit).
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The JSONL journal: lines are handed to a dedicated writer thread over an unbounded channel
/// (so a slow disk never blocks the sender; finals come a few a second, so the queue stays
/// small), which writes and flushes each one as it arrives. "Flushed per final" thus means: a
/// final is in the file (the OS's page cache, where a crash of aai-live cannot lose it) as soon
/// as the thread has written it, normally well under a millisecond after it arrived and bounded
/// by the disk alone; the tests hold it to one second. Dropping the journal closes the channel
/// and joins the thread, so every line handed over is written before the drop returns.
struct Journal {
    path: PathBuf,
    ops: Option<mpsc::Sender<JournalOp>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum JournalOp {
    Line(String),
    /// Answer once everything before has been written.
    Sync(mpsc::Sender<()>),
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Journal {
    fn spawn(path: PathBuf, writer: Box<dyn std::io::Write + Send>) -> std::io::Result<Self> {
        let (ops, rx) = mpsc::channel();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("aai-live-journal".into())
            .spawn(move || write_journal(&shown, writer, &rx))?;
        Ok(Self {
            path,
            ops: Some(ops),
            thread: Some(thread),
        })
    }

    fn send(&self, op: JournalOp) -> bool {
        self.ops.as_ref().is_some_and(|ops| ops.send(op).is_ok())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(self.ops.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(
                "the transcript journal writer for {} stopped unexpectedly",
                self.path.display()
            );
        }
    }
}

/// The journal writer thread: each line written and flushed as it arrives; a failure is logged
/// and the next line tried again (a full disk may get space back).
fn write_journal(
    path: &str,
    writer: Box<dyn std::io::Write + Send>,
    ops: &mpsc::Receiver<JournalOp>,
) {
    let mut writer = std::io::BufWriter::new(writer);
    while let Ok(op) = ops.recv() {
        match op {
            JournalOp::Line(line) => {
                let written = writeln!(writer, "{line}").and_then(|()| writer.flush());
                if let Err(e) = written {
                    tracing::error!("cannot write the transcript journal {path}: {e}");
                }
            }
            JournalOp::Sync(done) => {
                let _ = writer.flush();
                let _ = done.send(());
            }
        }
    }
    let _ = writer.flush();
}

impl Transcript {
    /// A transcript that appends every final to `path` (JSON Lines). The file (0600) and its
    /// missing directories (0700) are created here, so a path that cannot be written is an error
    /// now rather than a log line later.
    pub fn with_journal(path: &Path) -> Result<Self, TranscriptError> {
        let err = |source| TranscriptError {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_private_dir(dir).map_err(err)?;
        }
        let file = crate::files::append_private(path).map_err(err)?;
        Self::with_journal_writer(path, Box::new(file))
    }

    /// A transcript journaling to `writer` (named `path` in messages).
    fn with_journal_writer(
        path: &Path,
        writer: Box<dyn std::io::Write + Send>,
    ) -> Result<Self, TranscriptError> {
        let journal =
            Journal::spawn(path.to_owned(), writer).map_err(|source| TranscriptError {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self {
            journal: Some(std::sync::Arc::new(journal)),
            ..Self::default()
        })
    }

    /// A transcript for the input `source` of the same run: it shares this one's journal (one
    /// file, each line labelled) and stamps `source` on its finals.
    #[must_use]
    pub fn for_source(&self, source: &crate::config::Label) -> Self {
        Self {
            journal: self.journal.clone(),
            source: Some(source.as_str().to_owned()),
            names: self.names.clone(),
            ..Self::default()
        }
    }

    /// Name the service's speakers with `names` from now on.
    #[must_use]
    pub fn named(mut self, names: Names) -> Self {
        self.names = names;
        self
    }

    /// The service revised who said turn `turn_order` of session `generation` (its words' times
    /// from `base_ms`): the final takes the new label (`None`: the service no longer says), its
    /// name and its words' speakers; the journal gets the revised final. Returns it, `None` when
    /// the turn is not known.
    pub fn revise(
        &mut self,
        generation: u64,
        base_ms: u64,
        revision: &crate::protocol::messages::Revision,
    ) -> Option<FinalTurn> {
        let i = *self.index.get(&(generation, revision.turn_order))?;
        let resolved = revision
            .speaker_label
            .as_deref()
            .map(|l| self.continuity.resolve(generation, l, &self.finals));
        let words =
            (!revision.words.is_empty()).then(|| self.words(generation, base_ms, &revision.words));
        let names = &self.names;
        let turn = &mut self.finals[i];
        turn.speaker = resolved.as_ref().map(|r| r.label.clone());
        turn.session_speaker = revision
            .speaker_label
            .clone()
            .filter(|raw| Some(raw) != turn.speaker.as_ref());
        turn.speaker_uncertain = resolved.is_some_and(|r| r.uncertain);
        turn.speaker_name = names
            .lookup(turn.source.as_deref(), turn.speaker.as_deref())
            .map(str::to_owned);
        if let Some(words) = words {
            turn.words = words;
        }
        let revised = turn.clone();
        self.journal(&revised, true);
        Some(revised)
    }

    /// Name `speaker` (of this transcript's input, or of every input when `all_inputs`): every
    /// final of that speaker takes the name, each renamed one journaled again. Returns the
    /// finals renamed.
    pub fn name_speaker(&mut self, speaker: &str, name: &str, all_inputs: bool) -> Vec<FinalTurn> {
        let source = if all_inputs {
            None
        } else {
            self.source.clone()
        };
        self.names.set(source.as_deref(), speaker, name);
        let mut renamed = Vec::new();
        for turn in &mut self.finals {
            let now = self
                .names
                .lookup(turn.source.as_deref(), turn.speaker.as_deref())
                .map(str::to_owned);
            if now != turn.speaker_name {
                turn.speaker_name = now;
                renamed.push(turn.clone());
            }
        }
        for turn in &renamed {
            self.journal(turn, true);
        }
        renamed
    }

    /// One transcript of a run's inputs, its finals ordered by stream time (every input's
    /// stream starts with the run), for the exports. It shares their journal.
    pub fn merged(parts: Vec<Self>) -> Self {
        let journal = parts.iter().find_map(|p| p.journal.clone());
        let mut finals: Vec<FinalTurn> = parts.into_iter().flat_map(|p| p.finals).collect();
        // Stable: turns that start together keep the inputs' order.
        finals.sort_by_key(|t| t.start_ms);
        Self {
            journal,
            ..Self::from_finals(finals)
        }
    }

    /// A transcript of these finals (no journal), for exports of turns kept elsewhere.
    pub fn from_finals(finals: Vec<FinalTurn>) -> Self {
        let index = finals
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.generation, t.turn_order), i))
            .collect();
        Self {
            finals,
            index,
            ..Self::default()
        }
    }

    /// Mark the final `(generation, turn_order)` as an echo of another input's turn; the
    /// journal gets the marked line (replacing the first). Returns the marked final, `None`
    /// when it is unknown or already marked.
    pub fn mark_echo(&mut self, generation: u64, turn_order: u64) -> Option<FinalTurn> {
        let i = *self.index.get(&(generation, turn_order))?;
        let turn = &mut self.finals[i];
        if turn.echo {
            return None;
        }
        turn.echo = true;
        let marked = turn.clone();
        self.journal(&marked, true);
        Some(marked)
    }

    /// Wait (at most 10 s, blocking) until every final handed to the journal so far is written.
    /// For the end of a run, before the journal is listed as written; never needed for safety
    /// (each final is written on its own as soon as it arrives).
    pub fn sync_journal(&self) {
        let Some(journal) = &self.journal else {
            return;
        };
        let (done, wait) = mpsc::channel();
        if journal.send(JournalOp::Sync(done)) && wait.recv_timeout(SYNC_TIMEOUT).is_err() {
            tracing::warn!(
                "the transcript journal {} is still being written after {}s",
                journal.path.display(),
                SYNC_TIMEOUT.as_secs()
            );
        }
    }

    /// The journal's file, if this transcript keeps one and it is still empty (checked, so a
    /// file another writer filled is never removed).
    fn remove_empty_journal(&self) {
        let Some(path) = self.journal_path() else {
            return;
        };
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0)
            && let Err(e) = std::fs::remove_file(path)
        {
            tracing::warn!("cannot remove the empty journal {}: {e}", path.display());
        }
    }

    pub fn finals(&self) -> &[FinalTurn] {
        &self.finals
    }

    pub fn partial(&self) -> Option<&PartialTurn> {
        self.partial.as_ref()
    }

    pub fn journal_path(&self) -> Option<&Path> {
        self.journal.as_ref().map(|j| j.path.as_path())
    }

    /// A session's words at stream times, their speakers in the run's terms.
    fn words(
        &mut self,
        generation: u64,
        base_ms: u64,
        words: &[crate::protocol::messages::Word],
    ) -> Vec<AbsWord> {
        let mut out = abs_words(base_ms, words);
        for w in &mut out {
            if let Some(label) = w.speaker.take() {
                w.speaker = Some(
                    self.continuity
                        .resolve(generation, &label, &self.finals)
                        .label,
                );
            }
        }
        out
    }

    /// Words session `generation` (whose audio starts `base_ms` into the stream) labelled in
    /// audio that was already transcribed (its priming): they only vote for which of the run's
    /// speakers each of its labels is, and are not added.
    pub fn prime(
        &mut self,
        generation: u64,
        base_ms: u64,
        words: &[crate::protocol::messages::Word],
    ) {
        self.continuity
            .prime(generation, &abs_words(base_ms, words), &self.finals);
    }

    /// Labels of later sessions that could not be matched to the run's speakers, since the last
    /// call (one each per label and session).
    pub fn take_unmatched(&mut self) -> Vec<speakers::Unmatched> {
        self.continuity.take_notices()
    }

    /// Apply a Turn from session `generation`, whose audio starts `base_ms` into the stream.
    pub fn apply(
        &mut self,
        generation: u64,
        session_id: &str,
        base_ms: u64,
        turn: &Turn,
        latency_ms: Option<u64>,
    ) -> Change {
        let words = if turn.end_of_turn {
            self.words(generation, base_ms, &turn.words)
        } else {
            // A partial's words are shown as text only: no speaker to map yet.
            abs_words(base_ms, &turn.words)
        };
        let start_ms = words.first().map_or(base_ms, |w| w.start_ms);
        let end_ms = words.last().map_or(base_ms, |w| w.end_ms);
        if !turn.end_of_turn {
            // Universal-Streaming partials carry the final words in `transcript` and the newest
            // (not final) word only in `words`; show all of them.
            let text = if turn.words.is_empty() {
                turn.transcript.clone()
            } else {
                turn.words
                    .iter()
                    .map(|w| w.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let partial = PartialTurn {
                generation,
                turn_order: turn.turn_order,
                text,
                start_ms,
                end_ms,
            };
            self.partial = Some(partial.clone());
            return Change::Partial(partial);
        }
        if self
            .partial
            .as_ref()
            .is_some_and(|p| p.generation == generation && p.turn_order == turn.turn_order)
        {
            self.partial = None;
        }
        let text = if turn.transcript.is_empty() {
            turn.utterance.clone().unwrap_or_default()
        } else {
            turn.transcript.clone()
        };
        let key = (generation, turn.turn_order);
        let previous = self.index.get(&key).copied();
        let resolved = turn
            .speaker_label
            .as_deref()
            .map(|l| self.continuity.resolve(generation, l, &self.finals));
        let mut final_turn = FinalTurn {
            generation,
            session_id: session_id.to_owned(),
            turn_order: turn.turn_order,
            text,
            formatted: turn.turn_is_formatted,
            start_ms,
            end_ms,
            speaker: resolved.as_ref().map(|r| r.label.clone()),
            session_speaker: turn
                .speaker_label
                .clone()
                .filter(|raw| resolved.as_ref().is_some_and(|r| &r.label != raw)),
            speaker_uncertain: resolved.as_ref().is_some_and(|r| r.uncertain),
            speaker_name: self
                .names
                .lookup(
                    self.source.as_deref(),
                    resolved.as_ref().map(|r| r.label.as_str()),
                )
                .map(str::to_owned),
            language_code: turn.language_code.clone(),
            language_confidence: turn.language_confidence,
            words,
            latency_ms,
            source: self.source.clone(),
            echo: false,
        };
        let replaced = if let Some(i) = previous {
            // Keep the first latency: the duplicate formatted final comes later by design.
            final_turn.latency_ms = self.finals[i].latency_ms.or(latency_ms);
            self.finals[i] = final_turn.clone();
            true
        } else {
            self.index.insert(key, self.finals.len());
            self.finals.push(final_turn.clone());
            false
        };
        self.journal(&final_turn, replaced);
        Change::Final {
            turn: final_turn,
            replaced,
        }
    }

    /// Live settings changed: a line of their own in the journal (`"event":
    /// "settings_updated"`, the fields that changed), so the file says what the words after it
    /// were transcribed with.
    pub fn journal_settings(&self, update: &crate::protocol::messages::UpdateConfiguration) {
        let Some(journal) = &self.journal else {
            return;
        };
        let mut line = serde_json::to_value(update).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut line {
            map.insert("event".into(), "settings_updated".into());
            if let Some(source) = &self.source {
                map.insert("source".into(), source.clone().into());
            }
        }
        if !journal.send(JournalOp::Line(line.to_string())) {
            tracing::error!(
                "cannot write the transcript journal {}: its writer has stopped",
                journal.path.display()
            );
        }
    }

    /// Hand a final to the journal's writer thread (never waits for the disk).
    fn journal(&self, turn: &FinalTurn, replaced: bool) {
        let Some(journal) = &self.journal else {
            return;
        };
        let mut line = serde_json::to_value(turn).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut line {
            map.insert("replaces_previous".into(), replaced.into());
        }
        if !journal.send(JournalOp::Line(line.to_string())) {
            tracing::error!(
                "cannot write the transcript journal {}: its writer has stopped",
                journal.path.display()
            );
        }
    }

    /// The transcript in `format`, with the file extension that goes with it.
    pub fn render(&self, format: TranscriptFormat) -> (&'static str, String) {
        match format {
            TranscriptFormat::Txt => ("txt", self.to_text()),
            TranscriptFormat::Srt => ("srt", self.to_srt()),
            TranscriptFormat::Vtt => ("vtt", self.to_vtt()),
        }
    }

    /// Write the transcript in each of `formats` to `base` with the format's extension.
    /// Blocking file I/O.
    fn write_formats(
        &self,
        base: &Path,
        formats: &[TranscriptFormat],
    ) -> Result<Vec<PathBuf>, TranscriptError> {
        let mut written = Vec::new();
        for format in formats {
            let (ext, text) = self.render(*format);
            let path = base.with_extension(ext);
            crate::files::write_private(&path, text.as_bytes()).map_err(|source| {
                TranscriptError {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            written.push(path);
        }
        Ok(written)
    }

    /// A finished run's files: the exports in `formats` beside `journal` (same name, other
    /// extensions). Returns the journal (when this transcript keeps one, every final written to
    /// it first) and the files written. Blocking file I/O: call it off the runtime threads
    /// (`spawn_blocking`).
    ///
    /// A run that produced no final leaves no file: its journal, empty, is removed, and no
    /// export is written (a stop right after a start, a run that failed before `Begin`).
    pub fn write_beside(
        &self,
        journal: &Path,
        formats: &[TranscriptFormat],
    ) -> Result<Vec<PathBuf>, TranscriptError> {
        self.sync_journal();
        if self.finals.is_empty() {
            self.remove_empty_journal();
            return Ok(Vec::new());
        }
        let mut files: Vec<PathBuf> = self
            .journal_path()
            .map(Path::to_owned)
            .into_iter()
            .collect();
        files.extend(self.write_formats(journal, formats)?);
        Ok(files)
    }

    /// A copy of the whole transcript, taken at `at`: `dir/aai-live-<stamp>-export[-<part>].*`
    /// in `formats` (plain text when none). `part` names one of several files written at once
    /// (`run2`: the dashboard's runs, each with its own stream time). Blocking file I/O.
    pub fn export_to(
        &self,
        dir: &Path,
        formats: &[TranscriptFormat],
        at: SystemTime,
        part: Option<&str>,
    ) -> Result<Vec<PathBuf>, TranscriptError> {
        crate::files::create_private_dir(dir).map_err(|source| TranscriptError {
            path: dir.display().to_string(),
            source,
        })?;
        let part = part.map_or_else(String::new, |p| format!("-{p}"));
        let base = dir.join(format!("aai-live-{}-export{part}", stamp(at)));
        let formats = if formats.is_empty() {
            &[TranscriptFormat::Txt][..]
        } else {
            formats
        };
        self.write_formats(&base, formats)
    }

    /// Plain text, one final turn per line with its start time: `[hh:mm:ss] You: text`. The
    /// server's text (and a speaker label) in its terminal-safe form: `cat transcript.txt` runs
    /// no escape sequence.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for t in &self.finals {
            let _ = writeln!(
                out,
                "[{}] {}{}{}",
                clock(t.start_ms, ':', false),
                language_prefix(t),
                for_text_file(&who_prefix(t)),
                for_text_file(&t.text)
            );
        }
        out
    }

    /// SubRip: each final a cue whose text is one safe line with no `-->` (server text cannot
    /// end a cue or add one).
    pub fn to_srt(&self) -> String {
        let mut out = String::new();
        for (i, t) in self.finals.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}\n{} --> {}\n{}\n",
                i + 1,
                clock(t.start_ms, ',', true),
                clock(t.end_ms.max(t.start_ms.saturating_add(1)), ',', true),
                for_cue(&format!(
                    "{}{}{}",
                    language_prefix(t),
                    who_prefix(t),
                    t.text
                ))
            );
        }
        out
    }

    /// WebVTT: as SRT, and `&`, `<`, `>` written as entities (in a cue they are markup).
    pub fn to_vtt(&self) -> String {
        let mut out = String::from("WEBVTT\n\n");
        for t in &self.finals {
            let text = match t.language_code.as_deref() {
                Some(lang) => format!(
                    "<lang {}>{}</lang>",
                    vtt_escape(&for_cue(lang)),
                    vtt_escape(&for_cue(&t.text))
                ),
                None => vtt_escape(&for_cue(&t.text)),
            };
            let _ = writeln!(
                out,
                "{} --> {}\n{}{text}\n",
                clock(t.start_ms, '.', true),
                clock(t.end_ms.max(t.start_ms.saturating_add(1)), '.', true),
                vtt_voice(t),
            );
        }
        out
    }
}

/// A session's words at stream times (`base_ms` is where its audio starts in the stream), the
/// service's labels as they are.
fn abs_words(base_ms: u64, words: &[crate::protocol::messages::Word]) -> Vec<AbsWord> {
    words
        .iter()
        .map(|w| AbsWord {
            text: w.text.clone(),
            // Word times come from the server: never let one overflow the arithmetic.
            start_ms: base_ms.saturating_add(w.start),
            end_ms: base_ms.saturating_add(w.end),
            confidence: w.confidence,
            speaker: w.speaker.clone(),
        })
        .collect()
}

/// Who said a turn, as the txt and SRT lines begin: `You: `, `Them · A: `, `You (echo): `;
/// empty when nobody is known. One layout for every export (the speakers work extends `who`).
fn who_prefix(t: &FinalTurn) -> String {
    match (t.who(), t.echo) {
        (Some(who), false) => format!("{who}: "),
        (Some(who), true) => format!("{who} (echo): "),
        (None, true) => "(echo) ".to_owned(),
        (None, false) => String::new(),
    }
}

/// The language the service heard, before who said it in txt and SRT: `[es] `.
fn language_prefix(t: &FinalTurn) -> String {
    t.language_code
        .as_deref()
        .map_or_else(String::new, |lang| format!("[{}] ", for_cue(lang)))
}

/// WebVTT's voice tag for [`who_prefix`]: `<v You>`, `<v You (echo)>` (a speaker label is the
/// server's text: made safe and escaped like the cue).
fn vtt_voice(t: &FinalTurn) -> String {
    let who = who_prefix(t);
    match who.strip_suffix(": ") {
        Some(name) => format!("<v {}>", vtt_escape(&for_cue(name))),
        None => who,
    }
}

/// WebVTT's markup characters as text.
fn vtt_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `hh:mm:ss` (and `,mmm` / `.mmm` with `millis`).
fn clock(ms: u64, separator: char, millis: bool) -> String {
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    if millis {
        format!("{h:02}:{m:02}:{s:02}{separator}{:03}", ms % 1000)
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Word;

    fn turn(order: u64, end: bool, formatted: bool, text: &str) -> Turn {
        Turn {
            turn_order: order,
            end_of_turn: end,
            turn_is_formatted: formatted,
            transcript: text.into(),
            words: text
                .split_whitespace()
                .enumerate()
                .map(|(i, w)| Word {
                    start: i as u64 * 400,
                    end: i as u64 * 400 + 300,
                    text: w.into(),
                    word_is_final: true,
                    ..Word::default()
                })
                .collect(),
            ..Turn::default()
        }
    }

    #[test]
    fn absurd_word_times_do_not_overflow() {
        let mut t = Transcript::default();
        let mut absurd = turn(u64::MAX, true, false, "far away");
        for w in &mut absurd.words {
            w.start = u64::MAX - 1;
            w.end = u64::MAX;
        }
        let Change::Final { turn: f, .. } = t.apply(1, "s", 60_000, &absurd, None) else {
            panic!("a final");
        };
        assert_eq!((f.start_ms, f.end_ms), (u64::MAX, u64::MAX));
        assert!(t.to_srt().contains("far away"));
    }

    #[test]
    fn partials_are_replaced_and_finals_rebased() {
        let mut t = Transcript::default();
        let c = t.apply(1, "s", 0, &turn(0, false, false, "hi"), None);
        assert!(matches!(c, Change::Partial(p) if p.text == "hi"));
        t.apply(1, "s", 0, &turn(0, false, false, "hi there"), None);
        assert_eq!(t.partial().expect("partial").text, "hi there");
        t.apply(
            2,
            "s2",
            60_000,
            &turn(0, true, false, "hi there"),
            Some(120),
        );
        // A final from another generation does not clear this generation's partial.
        assert!(t.partial().is_some());
        let f = &t.finals()[0];
        assert_eq!((f.start_ms, f.end_ms), (60_000, 60_700));
        assert_eq!(f.words[1].start_ms, 60_400);
    }

    #[test]
    fn legacy_formatted_final_replaces_not_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.jsonl");
        let mut t = Transcript::with_journal(&path).expect("journal");
        t.apply(1, "s", 0, &turn(0, false, false, "hi my"), None);
        t.apply(1, "s", 0, &turn(0, true, false, "hi my name"), Some(200));
        assert!(t.partial().is_none());
        let c = t.apply(1, "s", 0, &turn(0, true, true, "Hi, my name."), None);
        assert!(matches!(c, Change::Final { replaced: true, .. }));
        assert_eq!(t.finals().len(), 1);
        assert_eq!(t.finals()[0].text, "Hi, my name.");
        assert_eq!(t.finals()[0].latency_ms, Some(200));
        let journal = lines_within_a_second(&path, 2);
        assert!(
            journal
                .lines()
                .last()
                .expect("line")
                .contains("\"replaces_previous\":true")
        );
    }

    /// The journal's text once it holds `n` lines: "a final is on disk shortly after it
    /// arrives", shortly being at most a second (normally well under a millisecond).
    fn lines_within_a_second(path: &Path, n: usize) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= n {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} lines not written within a second: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A writer that blocks until released: a disk that hangs.
    struct Stuck {
        release: std::sync::Arc<std::sync::Barrier>,
        out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        waited: bool,
    }

    impl std::io::Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.waited {
                self.release.wait();
                self.waited = true;
            }
            self.out.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_hung_disk_never_blocks_the_caller_and_nothing_is_lost() {
        let release = std::sync::Arc::new(std::sync::Barrier::new(2));
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Stuck {
            release: release.clone(),
            out: out.clone(),
            waited: false,
        };
        let mut t = Transcript::with_journal_writer(Path::new("stuck.jsonl"), Box::new(writer))
            .expect("journal");
        let started = std::time::Instant::now();
        for order in 0..100 {
            t.apply(1, "s", 0, &turn(order, true, true, "Words."), None);
        }
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "applying finals waited for the disk: {:?}",
            started.elapsed()
        );
        assert!(out.lock().expect("lock").is_empty(), "the disk is stuck");
        release.wait();
        drop(t); // joins the writer: every final handed over is written
        let text = String::from_utf8(out.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 100);
    }

    #[test]
    fn journal_and_exports_are_private_files_in_private_directories() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        let dir = tempfile::tempdir().expect("tempdir");
        // The directory the user chose exists, shared on purpose: it keeps its mode.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let journal = journal_path(&dir.path().join("data/transcripts"), SystemTime::UNIX_EPOCH);
        let mut t = Transcript::with_journal(&journal).expect("journal");
        t.apply(1, "s", 0, &turn(0, true, true, "Hello."), None);
        lines_within_a_second(&journal, 1);
        let files = t
            .write_beside(&journal, &[TranscriptFormat::Txt, TranscriptFormat::Vtt])
            .expect("write");
        let exported = t
            .export_to(
                &dir.path().join("exports"),
                &[],
                SystemTime::UNIX_EPOCH,
                None,
            )
            .expect("export");
        for file in files.iter().chain(&exported) {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
        for created in ["data", "data/transcripts", "exports"] {
            assert_eq!(mode(&dir.path().join(created)), 0o700, "{created}");
        }
        assert_eq!(
            mode(dir.path()),
            0o755,
            "an existing directory keeps its mode"
        );
    }

    /// A final holding escape sequences (clear the screen, OSC 52: write the clipboard) and a
    /// forged cue reaches the text files defused; the journal keeps the text (JSON-escaped).
    #[test]
    fn live_settings_are_a_journal_line_between_the_finals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = dir.path().join("run.jsonl");
        let mut t = Transcript::with_journal(&journal).expect("journal");
        t.apply(1, "s", 0, &turn(0, true, true, "before"), None);
        t.journal_settings(&crate::protocol::messages::UpdateConfiguration {
            keyterms_prompt: Some(vec!["Fox".into()]),
            ..Default::default()
        });
        t.apply(1, "s", 0, &turn(1, true, true, "after"), None);
        t.sync_journal();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&journal)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["text"], "before");
        assert_eq!(lines[1]["event"], "settings_updated");
        assert_eq!(lines[1]["keyterms_prompt"], serde_json::json!(["Fox"]));
        assert_eq!(lines[2]["text"], "after");
        // The exports hold the turns only.
        assert_eq!(t.finals().len(), 2);
    }

    #[test]
    fn hostile_text_reaches_the_files_defused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = dir.path().join("run.jsonl");
        let mut t = Transcript::with_journal(&journal).expect("journal");
        let evil = "hi\u{1b}[2J\u{1b}]52;c;cHduZWQ=\u{7}\n\n99\n00:00:00,000 --> 00:00:09,000\nforged <b>&";
        let mut hostile = turn(0, true, true, evil);
        hostile.speaker_label = Some("A\u{1b}[31m".into());
        t.apply(0, "s", 0, &hostile, None);
        t.sync_journal();
        for (name, text) in [
            ("txt", t.to_text()),
            ("srt", t.to_srt()),
            ("vtt", t.to_vtt()),
        ] {
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{7}'),
                "{name}: {text:?}"
            );
            assert!(!text.contains("\n\n99"), "{name}: {text:?}");
        }
        assert!(!t.to_text().contains("-->\n"));
        assert_eq!(t.to_srt().matches("-->").count(), 1, "{}", t.to_srt());
        assert_eq!(t.to_vtt().matches("-->").count(), 1, "{}", t.to_vtt());
        assert!(
            t.to_vtt().contains("forged &lt;b&gt;&amp;"),
            "{}",
            t.to_vtt()
        );
        let journal = std::fs::read_to_string(&journal).expect("journal");
        assert!(journal.contains("\\u001b[2J"), "{journal}");
    }

    #[test]
    fn exports() {
        let mut t = Transcript::default();
        t.apply(1, "s", 61_000, &turn(0, true, true, "Hello world."), None);
        assert_eq!(t.to_text(), "[00:01:01] Hello world.\n");
        assert_eq!(
            t.to_srt(),
            "1\n00:01:01,000 --> 00:01:01,700\nHello world.\n\n"
        );
        assert_eq!(
            t.to_vtt(),
            "WEBVTT\n\n00:01:01.000 --> 00:01:01.700\nHello world.\n\n"
        );
    }

    #[test]
    fn files_are_named_by_start_and_written_beside_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = journal_path(dir.path(), SystemTime::UNIX_EPOCH);
        assert!(journal.ends_with("aai-live-1970-01-01T00-00-00Z.jsonl"));
        let mut t = Transcript::with_journal(&journal).expect("journal");
        t.apply(1, "s", 0, &turn(0, true, true, "Hello."), None);
        let files = t
            .write_beside(&journal, &[TranscriptFormat::Txt, TranscriptFormat::Srt])
            .expect("write");
        assert_eq!(
            files,
            [
                journal.clone(),
                journal.with_extension("txt"),
                journal.with_extension("srt")
            ]
        );
        assert_eq!(
            std::fs::read_to_string(journal.with_extension("txt")).expect("txt"),
            t.to_text()
        );
        let exported = t
            .export_to(&dir.path().join("x"), &[], SystemTime::UNIX_EPOCH, None)
            .expect("export");
        assert_eq!(exported.len(), 1);
        assert!(exported[0].ends_with("x/aai-live-1970-01-01T00-00-00Z-export.txt"));
    }

    /// A run without a final (stopped at once, failed before `Begin`) leaves no file behind: the
    /// journal created at its start is removed, and no export is written.
    #[test]
    fn a_run_without_finals_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = journal_path(dir.path(), SystemTime::UNIX_EPOCH);
        let t = Transcript::with_journal(&journal).expect("journal");
        assert!(
            journal.exists(),
            "created at the start, so a bad path fails early"
        );
        let files = t
            .write_beside(&journal, &[TranscriptFormat::Txt, TranscriptFormat::Vtt])
            .expect("write");
        assert!(files.is_empty());
        drop(t);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert!(left.is_empty(), "files left: {left:?}");
    }

    /// A `SpeakerRevision` changes who said a final everywhere it is written: the model, the
    /// journal (a replacing line) and every export; names follow the revised label; a pending
    /// speaker is never named; languages show in every export.
    #[test]
    fn revisions_names_and_languages_reach_every_export() {
        use crate::protocol::messages::{Revision, Word};
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = journal_path(dir.path(), SystemTime::UNIX_EPOCH);
        let names = BTreeMap::from([
            ("a".to_owned(), "Ana".to_owned()),
            ("them:b".to_owned(), "Ben".to_owned()),
        ]);
        let mut t = Transcript::with_journal(&journal)
            .expect("journal")
            .named(Names::new(&names));
        let spoken = |order, speaker: &str, lang: Option<&str>, text: &str| Turn {
            speaker_label: Some(speaker.to_owned()),
            language_code: lang.map(str::to_owned),
            language_confidence: lang.map(|_| 0.9),
            ..turn(order, true, true, text)
        };
        t.apply(1, "s", 0, &spoken(0, "A", Some("es"), "Hola."), None);
        t.apply(1, "s", 0, &spoken(1, "PENDING", None, "Hm."), None);
        assert_eq!(t.finals()[0].speaker_name.as_deref(), Some("Ana"));
        assert_eq!(t.finals()[0].language_code.as_deref(), Some("es"));
        assert_eq!(t.finals()[1].speaker_name, None, "pending is never named");
        assert_eq!(t.finals()[1].who().as_deref(), Some("speaker pending"));
        // The service revises turn 1: B said it (B has no name for this input).
        let revised = t
            .revise(
                1,
                0,
                &Revision {
                    turn_order: 1,
                    speaker_label: Some("B".into()),
                    words: vec![Word {
                        start: 100,
                        end: 400,
                        text: "Hm.".into(),
                        speaker: Some("B".into()),
                        ..Word::default()
                    }],
                },
            )
            .expect("known turn");
        assert_eq!(revised.speaker.as_deref(), Some("B"));
        assert_eq!(revised.words[0].speaker.as_deref(), Some("B"));
        assert!(
            t.revise(9, 0, &Revision::default()).is_none(),
            "unknown turn"
        );
        let text = t.to_text();
        assert!(text.contains("[00:00:00] [es] Ana: Hola."), "{text}");
        assert!(text.contains("B: Hm."), "{text}");
        assert!(
            t.to_vtt().contains("<v Ana><lang es>Hola.</lang>"),
            "{}",
            t.to_vtt()
        );
        assert!(t.to_srt().contains("[es] Ana: Hola."), "{}", t.to_srt());
        // Naming B on the spot: the turn takes the name, the journal a line for it.
        let renamed = t.name_speaker("b", "Bea", false);
        assert_eq!(renamed.len(), 1);
        assert!(t.to_text().contains("Bea: Hm."), "{}", t.to_text());
        t.sync_journal();
        let lines = std::fs::read_to_string(&journal).expect("journal");
        let last: serde_json::Value =
            serde_json::from_str(lines.lines().last().expect("a line")).expect("json");
        assert_eq!(last["speaker_name"], "Bea");
        assert_eq!(last["replaces_previous"], true);
        assert_eq!(
            lines.lines().count(),
            4,
            "two finals, a revision, a naming: {lines}"
        );
    }

    #[test]
    fn a_meeting_with_speakers_says_the_input_and_the_name_in_every_export() {
        let names = BTreeMap::from([("them:a".to_owned(), "Ana".to_owned())]);
        let run = Transcript::default().named(Names::new(&names));
        let (mut you, mut them) = (
            run.for_source(&"you".parse().expect("label")),
            run.for_source(&"them".parse().expect("label")),
        );
        let spoken = |order, speaker: &str, text: &str, start| Turn {
            speaker_label: Some(speaker.to_owned()),
            words: vec![crate::protocol::messages::Word {
                start,
                end: start + 300,
                text: text.to_owned(),
                speaker: Some(speaker.to_owned()),
                ..Default::default()
            }],
            ..turn(order, true, true, text)
        };
        you.apply(1, "s1", 0, &spoken(0, "A", "Hello.", 1000), None);
        them.apply(2, "s2", 0, &spoken(0, "A", "Hi.", 2000), None);
        them.apply(2, "s2", 0, &spoken(1, "B", "Hey.", 3000), None);
        let all = Transcript::merged(vec![you, them]);
        let text = all.to_text();
        for line in ["You · A: Hello.", "Them · Ana: Hi.", "Them · B: Hey."] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let vtt = all.to_vtt();
        assert!(vtt.contains("<v Them · Ana>Hi."), "{vtt}");
        assert!(vtt.contains("<v You · A>Hello."), "{vtt}");
        assert!(all.to_srt().contains("Them · Ana: Hi."), "{}", all.to_srt());
    }

    #[test]
    fn names_are_looked_up_without_case_per_input_first() {
        let names = Names::new(&BTreeMap::from([
            ("A".to_owned(), "Ana".to_owned()),
            ("them:a".to_owned(), "Alex".to_owned()),
        ]));
        assert_eq!(names.lookup(None, Some("a")), Some("Ana"));
        assert_eq!(names.lookup(Some("you"), Some("A")), Some("Ana"));
        assert_eq!(names.lookup(Some("Them"), Some("A")), Some("Alex"));
        assert_eq!(names.lookup(Some("them"), Some("UNKNOWN")), None);
        assert_eq!(names.lookup(None, None), None);
    }
}
