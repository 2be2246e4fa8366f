//! The emulator's stand-in for speech recognition: energy-based voice detection on 20 ms frames,
//! words while there is voice, turns that end after silence — shaped like the service's messages.
//!
//! It recognises nothing. Word *text* comes from a script (for a known recording) or from a fixed
//! word list; word *timing* comes from the audio. Everything runs on audio time (samples
//! received), so the output for a given input is deterministic. The session loop adds the
//! processing delay on the wall clock.
//!
//! When the client says where the session's audio starts in its stream (aai-live's offset hint),
//! the recogniser runs on *stream* time: its frames sit on the same 20 ms grid of the stream
//! whatever chunk the session starts at, a word-list word's text is chosen from the stream time
//! it starts at, and a voiced run already under way when a mid-stream session starts (the tail
//! of a word an earlier session finalized, which a replay resends) is not a word again. So the
//! same audio gives the same final words whatever rotations, reconnects and replays happened.
//! Without the hint (the official SDKs) every session starts its own time at zero.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;

use super::Profile;
use super::script::{Script, TimedWord, TurnMeta};
use super::turns::{self, Family, Mode};
use crate::protocol::StreamingParams;
use crate::protocol::messages::{
    Revision, ServerMessage, SpeakerRevision, SpeechStarted, Turn, UpdateConfiguration, Word,
};

/// Voice detection frame.
const FRAME_MS: u64 = 20;
/// A gap this long ends a word (list mode).
const WORD_GAP_MS: u64 = 60;
/// A voiced run this long is split into words (list mode).
const MAX_WORD_MS: u64 = 600;
/// Voice history kept to check that script words were actually heard.
const HISTORY_MS: u64 = 30_000;

/// Without a script speaker, who speaks changes with the stream time of a turn's first word:
/// [`VOICES`] take turns in slots this long. Stream time, not turn counts, so that every session
/// hearing the same stretch of a stream hears the same person (turn counts restart per session).
pub const SPEAKER_SLOT_MS: u64 = 5_000;
/// The people of the unscripted conversation (names inside the emulator; the wire carries only
/// the labels each session gives them).
pub const VOICES: &[&str] = &["voice-1", "voice-2"];
/// A turn shorter than this (first word's start to last word's end) is too short to say who
/// speaks: `PENDING` (or `UNKNOWN` before June 2026) instead of a label.
pub const SHORT_TURN_MS: u64 = 1_000;
/// `language_confidence` on final turns with `language_detection`: fixed, so tests can predict it.
pub const LANGUAGE_CONFIDENCE: f64 = 0.97;
/// The language of turns a script does not give one.
pub const DEFAULT_LANGUAGE: &str = "en";
/// Final turns kept for the `SpeakerRevision` before `Termination` (scripted revisions and
/// pending labels); the oldest beyond it go unrevised, so a long session's memory stays bounded.
pub const MAX_REVISABLE_TURNS: usize = 256;
/// Words used when no script is given: deterministic, so tests can predict them.
pub const WORD_LIST: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "seven",
    "clever", "parrots", "count", "silver", "coins", "under", "a", "quiet", "moon",
];

/// Recognizer settings taken from the connection parameters.
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent switches, one per connection parameter of the service"
)]
#[derive(Debug, Clone)]
pub struct RecognizerConfig {
    pub sample_rate: u32,
    pub profile: Profile,
    /// Which model's rules the session follows (docs/emulator.md, "Turn detection per model").
    pub family: Family,
    pub u3_style: bool,
    /// U3-Pro family: the mode in effect (`Begin.configuration.mode`); `None` otherwise.
    pub mode: Option<Mode>,
    /// U3-Pro family: a partial for every word, also during unbroken speech; otherwise at
    /// most one partial per pause.
    pub continuous_partials: bool,
    /// The silences the client set itself, kept when a mode change resets the defaults.
    explicit_min_turn_silence: Option<u64>,
    explicit_max_turn_silence: Option<u64>,
    pub format_turns: bool,
    pub min_turn_silence_ms: u64,
    pub max_turn_silence_ms: u64,
    /// Universal-Streaming: the end-of-turn confidence at which a pause of `min_turn_silence`
    /// ends a turn (below it, `max_turn_silence`).
    pub end_of_turn_confidence_threshold: f64,
    pub vad_threshold: f64,
    /// RMS level (dBFS) above which a frame counts as voice (from `vad_threshold`).
    pub threshold_dbfs: f64,
    /// Words spelled as these terms when they match one (case aside).
    pub keyterms: Vec<String>,
    pub speaker_labels: bool,
    /// At most this many labels per session (`max_speakers`).
    pub max_speakers: Option<u32>,
    pub language_detection: bool,
    /// Stream offset of this session's first sample, in ms (script alignment after a reconnect).
    pub offset_ms: u64,
    /// The client gave the offset hint: run on stream time (see the module's comment).
    pub hinted: bool,
}

impl RecognizerConfig {
    /// `offset_ms`: the client's offset hint, if it gave one.
    pub fn from_params(params: &StreamingParams, profile: Profile, offset_ms: Option<u64>) -> Self {
        let family = Family::of(params, profile);
        // A bad mode was refused before the session began (3006); here it cannot occur.
        let mode = family.is_u3().then(|| {
            params
                .mode
                .as_deref()
                .and_then(|m| Mode::parse(m).ok())
                .unwrap_or_default()
        });
        let defaults = turns::defaults(family, mode.unwrap_or_default());
        let vad = params
            .vad_threshold
            .unwrap_or(defaults.vad_threshold)
            .clamp(0.0, 1.0);
        let mut cfg = Self {
            sample_rate: params.sample_rate,
            profile,
            family,
            u3_style: family.is_u3(),
            mode,
            continuous_partials: false,
            explicit_min_turn_silence: params.min_turn_silence.map(u64::from),
            explicit_max_turn_silence: params.max_turn_silence.map(u64::from),
            format_turns: params.format_turns,
            min_turn_silence_ms: 0,
            max_turn_silence_ms: 0,
            end_of_turn_confidence_threshold: params
                .end_of_turn_confidence_threshold
                .unwrap_or(defaults.end_of_turn_confidence_threshold),
            vad_threshold: vad,
            threshold_dbfs: vad_dbfs(vad),
            keyterms: params.keyterms_prompt.clone(),
            speaker_labels: params.speaker_labels,
            max_speakers: params.max_speakers,
            language_detection: params.language_detection,
            offset_ms: offset_ms.unwrap_or(0),
            hinted: offset_ms.is_some(),
        };
        cfg.apply_silences();
        cfg
    }

    /// With `continuous_partials` (a connect parameter `StreamingParams` does not hold).
    #[must_use]
    pub fn with_continuous_partials(mut self, on: bool) -> Self {
        self.continuous_partials = on && self.u3_style;
        self
    }

    /// The silences in effect: the client's where it set them, else the model's (and mode's)
    /// defaults; `max_turn_silence` never below `min_turn_silence`.
    fn apply_silences(&mut self) {
        let defaults = turns::defaults(self.family, self.mode.unwrap_or_default());
        self.min_turn_silence_ms = self
            .explicit_min_turn_silence
            .unwrap_or(defaults.min_turn_silence_ms);
        self.max_turn_silence_ms = self
            .explicit_max_turn_silence
            .unwrap_or(defaults.max_turn_silence_ms)
            .max(self.explicit_min_turn_silence.unwrap_or(0));
    }

    /// What `/emulator/sessions` shows as the session's settings in effect.
    pub fn settings(&self) -> EffectiveSettings {
        EffectiveSettings {
            mode: self.mode.map(Mode::as_str),
            continuous_partials: self.continuous_partials,
            min_turn_silence: self.min_turn_silence_ms,
            max_turn_silence: self.max_turn_silence_ms,
            // U3-Pro ends turns on silence alone.
            end_of_turn_confidence_threshold: (!self.u3_style)
                .then_some(self.end_of_turn_confidence_threshold),
            vad_threshold: self.vad_threshold,
            format_turns: self.format_turns,
            keyterms_prompt: self.keyterms.clone(),
            keyterms_count: self.keyterms.len(),
            speaker_labels: self.speaker_labels,
            max_speakers: self.max_speakers,
            language_detection: self.language_detection,
            stream_offset_ms: self.hinted.then_some(self.offset_ms),
        }
    }
}

/// The level above which a frame is voice: −60 dBFS at `vad_threshold` 0, −20 at 1.
fn vad_dbfs(vad: f64) -> f64 {
    -60.0 + 40.0 * vad.clamp(0.0, 1.0)
}

/// The settings a session runs with now: the connection's parameters with the updates applied.
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent switches, one per connection parameter of the service"
)]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveSettings {
    /// U3-Pro family: the mode in effect; `None` for Universal-Streaming.
    pub mode: Option<&'static str>,
    pub continuous_partials: bool,
    pub min_turn_silence: u64,
    pub max_turn_silence: u64,
    /// `None` for the U3-Pro family, which does not use it.
    pub end_of_turn_confidence_threshold: Option<f64>,
    pub vad_threshold: f64,
    pub format_turns: bool,
    /// In a session record, cut to about 1 KiB of whole terms; `keyterms_count` is the total.
    pub keyterms_prompt: Vec<String>,
    pub keyterms_count: usize,
    pub speaker_labels: bool,
    pub max_speakers: Option<u32>,
    pub language_detection: bool,
    /// The offset hint, when the client gave one.
    pub stream_offset_ms: Option<u64>,
}

/// Where word texts come from.
#[derive(Debug)]
enum Words {
    List { next: usize },
    Script(ScriptCursor),
}

#[derive(Debug)]
struct ScriptCursor {
    words: Vec<TimedWord>,
    /// Each script turn's speaker and language, by turn index.
    turns: Vec<TurnMeta>,
    loop_ms: Option<u64>,
    /// Index of the next word to report and the start (stream ms) of its loop cycle.
    next: usize,
    cycle_base: u64,
    /// Turn index (in the script) of the words in the current turn.
    turn: Option<(u64, usize)>,
}

impl ScriptCursor {
    fn new(script: &Script, offset_ms: u64) -> Self {
        let words = script.words();
        let loop_ms = script.loop_ms.filter(|&p| p > 0);
        let cycle_base = loop_ms.map_or(0, |p| offset_ms / p * p);
        let next = words
            .iter()
            .position(|w| cycle_base + w.start >= offset_ms)
            .unwrap_or(words.len());
        let mut cursor = Self {
            words,
            turns: script
                .turns
                .iter()
                .map(super::script::ScriptTurn::meta)
                .collect(),
            loop_ms,
            next,
            cycle_base,
            turn: None,
        };
        cursor.wrap();
        cursor
    }

    fn wrap(&mut self) {
        if self.next >= self.words.len()
            && let Some(period) = self.loop_ms
        {
            self.next = 0;
            self.cycle_base += period;
        }
    }

    /// The next word (stream times) if it has ended by `now_ms`.
    fn due(&self, now_ms: u64) -> Option<(TimedWord, u64)> {
        let w = self.words.get(self.next)?;
        let end = self.cycle_base + w.end;
        (end <= now_ms).then(|| (w.clone(), self.cycle_base))
    }

    fn advance(&mut self) {
        self.next += 1;
        self.wrap();
    }
}

#[derive(Debug)]
struct TurnState {
    order: u64,
    words: Vec<Word>,
    /// Words the last partial carried.
    partial_words: usize,
    /// Who speaks it (a script name or a voice), and what the script says about it.
    speaker: Arc<str>,
    meta: TurnMeta,
}

/// A final turn the `SpeakerRevision` before `Termination` may relabel.
#[derive(Debug)]
struct Revisable {
    order: u64,
    /// The label the final turn carried.
    label: String,
    /// Who the turn is finally attributed to (the script's `revised_speaker`, else its speaker).
    speaker: Arc<str>,
    /// The final turn's words, as sent.
    words: Vec<Word>,
}

/// Speaker labels for one session, given as diarization gives them: in order of first
/// appearance (the first person heard long enough is "A"), at most `max_speakers` of them.
#[derive(Debug)]
struct Diarizer {
    on: bool,
    max: Option<usize>,
    /// Each person labelled so far and its label's index, in order of first appearance.
    people: Vec<(Arc<str>, usize)>,
    /// Distinct labels given (≤ `max`).
    labels: usize,
    /// What a turn under [`SHORT_TURN_MS`] is labelled.
    short: &'static str,
    /// Whether the final revision names the speaker of short turns (`PENDING` says the label
    /// is still to come; the older `UNKNOWN` was final).
    resolve_short: bool,
    revisable: VecDeque<Revisable>,
}

impl Diarizer {
    fn new(cfg: &RecognizerConfig) -> Self {
        let legacy = cfg.profile == Profile::Legacy;
        Self {
            on: cfg.speaker_labels,
            max: cfg.max_speakers.map(|n| n.max(1) as usize),
            people: Vec::new(),
            labels: 0,
            short: if legacy { "UNKNOWN" } else { "PENDING" },
            resolve_short: !legacy,
            revisable: VecDeque::new(),
        }
    }

    /// The label of `speaker`, giving the next one to a new person; beyond `max_speakers`
    /// new people share the last label (a clustering limited to N speakers puts an extra
    /// voice in one of the N; the newest cluster is the emulator's fixed choice).
    fn label(&mut self, speaker: &Arc<str>) -> String {
        if let Some((_, index)) = self.people.iter().find(|(p, _)| p == speaker) {
            return label_text(*index);
        }
        let index = match self.max {
            Some(max) if self.labels >= max => max - 1,
            _ => {
                self.labels += 1;
                self.labels - 1
            }
        };
        self.people.push((Arc::clone(speaker), index));
        label_text(index)
    }

    /// Label `messages` (Turns of one turn) for `speaker`: each Turn and its words get the
    /// label, or the short-turn label while the words span under [`SHORT_TURN_MS`].
    fn label_turns(&mut self, speaker: &Arc<str>, messages: &mut [ServerMessage]) {
        if !self.on {
            return;
        }
        for message in messages {
            let ServerMessage::Turn(turn) = message else {
                continue;
            };
            let span = match (turn.words.first(), turn.words.last()) {
                (Some(first), Some(last)) => last.end.saturating_sub(first.start),
                _ => 0,
            };
            let label = if span < SHORT_TURN_MS {
                self.short.to_owned()
            } else {
                self.label(speaker)
            };
            for word in &mut turn.words {
                word.speaker = Some(label.clone());
            }
            turn.speaker_label = Some(label);
        }
    }

    /// Keep a final turn for the last revision if it may change: a scripted revision, or a
    /// pending label.
    fn keep(&mut self, final_turn: &Turn, speaker: &Arc<str>, revised: Option<&Arc<str>>) {
        let Some(label) = &final_turn.speaker_label else {
            return;
        };
        let pending = self.resolve_short && label == self.short;
        if revised.is_none() && !pending {
            return;
        }
        if self.revisable.len() == MAX_REVISABLE_TURNS {
            self.revisable.pop_front();
        }
        self.revisable.push_back(Revisable {
            order: final_turn.turn_order,
            label: label.clone(),
            speaker: Arc::clone(revised.unwrap_or(speaker)),
            words: final_turn.words.clone(),
        });
    }

    /// The `SpeakerRevision` for the turns whose label changes, once.
    fn revision(&mut self) -> Option<ServerMessage> {
        let mut revisions = Vec::new();
        for turn in std::mem::take(&mut self.revisable) {
            let label = self.label(&turn.speaker);
            if label == turn.label {
                continue;
            }
            let words = turn
                .words
                .into_iter()
                .map(|w| Word {
                    speaker: Some(label.clone()),
                    ..w
                })
                .collect();
            revisions.push(Revision {
                turn_order: turn.order,
                speaker_label: Some(label),
                words,
            });
        }
        (!revisions.is_empty()).then_some(ServerMessage::SpeakerRevision(SpeakerRevision {
            revisions,
        }))
    }
}

/// Label number `index` as diarization writes it: A … Z, then AA, AB, … (bijective base 26).
pub fn label_text(index: usize) -> String {
    let mut n = index + 1;
    let mut letters = Vec::new();
    while n > 0 {
        n -= 1;
        letters.push(char::from(b'A' + (n % 26) as u8));
        n /= 26;
    }
    letters.iter().rev().collect()
}

/// A person and the label a session gave them, for the session's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpeakerLabel {
    pub speaker: String,
    pub label: String,
}

/// The word's text in a keyterm's spelling when its core (without surrounding punctuation)
/// equals the term but for case: "assemblyai," with the term "AssemblyAI" → "AssemblyAI,".
/// Terms with spaces are left to the real model: one word never becomes several here.
fn keyterm_spelling(text: &str, terms: &[String]) -> Option<String> {
    let core = text.trim_matches(|c: char| !c.is_alphanumeric());
    if core.is_empty() {
        return None;
    }
    let lower = core.to_lowercase();
    let term = terms
        .iter()
        .find(|t| !t.contains(char::is_whitespace) && t.to_lowercase() == lower)?;
    let at = text.find(core)?;
    Some(format!("{}{term}{}", &text[..at], &text[at + core.len()..]))
}

/// Streaming recogniser for one session.
#[derive(Debug)]
pub struct Recognizer {
    cfg: RecognizerConfig,
    frame_len: usize,
    pending: Vec<i16>,
    /// Session audio time (ms) at the end of the last whole frame.
    now_ms: u64,
    word_start: Option<u64>,
    silence_ms: u64,
    /// Session ms at which the last voiced frame ended.
    last_voice_ms: u64,
    turn: Option<TurnState>,
    next_turn_order: u64,
    words: Words,
    /// (frame start in stream ms, voiced) for recent frames.
    history: VecDeque<(u64, bool)>,
    /// Samples still to drop before the first frame (to land on the stream's frame grid).
    skip: usize,
    /// A mid-stream session's leading voiced run is the tail of a word already transcribed:
    /// true until the first silent frame.
    leading: bool,
    diarizer: Diarizer,
}

impl Recognizer {
    pub fn new(cfg: RecognizerConfig, script: Option<&Arc<Script>>) -> Self {
        let frame_len = (u64::from(cfg.sample_rate) * FRAME_MS / 1000).max(1) as usize;
        let words = match script {
            Some(s) => Words::Script(ScriptCursor::new(s, cfg.offset_ms)),
            None => Words::List { next: 0 },
        };
        // On stream time, the first frame starts at the next multiple of the frame length.
        let skip_ms = if cfg.hinted {
            (FRAME_MS - cfg.offset_ms % FRAME_MS) % FRAME_MS
        } else {
            0
        };
        let skip = (u64::from(cfg.sample_rate) * skip_ms / 1000) as usize;
        let leading = cfg.hinted && cfg.offset_ms > 0;
        let diarizer = Diarizer::new(&cfg);
        Self {
            diarizer,
            cfg,
            frame_len,
            pending: Vec::new(),
            now_ms: skip_ms,
            skip,
            leading,
            word_start: None,
            silence_ms: 0,
            last_voice_ms: 0,
            turn: None,
            next_turn_order: 0,
            words,
            history: VecDeque::new(),
        }
    }

    /// Apply a mid-session `UpdateConfiguration` (silently, as the service does) to the audio
    /// that follows: turn endpointing, voice detection, formatting and keyterms. Speaker labels
    /// and language detection are set at connect time only (the service ignores them here).
    pub fn update(&mut self, update: &UpdateConfiguration) {
        if let Some(v) = update.min_turn_silence {
            self.cfg.explicit_min_turn_silence = Some(u64::from(v));
        }
        if let Some(v) = update.max_turn_silence {
            self.cfg.explicit_max_turn_silence = Some(u64::from(v));
        }
        // U3-Pro family (3.5 Pro on): `mode` and `continuous_partials` change mid-session too;
        // `check_update` refused a bad mode before this.
        if self.cfg.u3_style {
            if let Some(mode) = update
                .other
                .get("mode")
                .and_then(serde_json::Value::as_str)
                .and_then(|m| Mode::parse(m).ok())
            {
                self.cfg.mode = Some(mode);
            }
            if let Some(on) = update
                .other
                .get("continuous_partials")
                .and_then(serde_json::Value::as_bool)
            {
                self.cfg.continuous_partials = on;
            }
        }
        self.cfg.apply_silences();
        if let Some(v) = update.end_of_turn_confidence_threshold {
            self.cfg.end_of_turn_confidence_threshold = v;
        }
        if let Some(v) = update.format_turns {
            self.cfg.format_turns = v;
        }
        if let Some(v) = update.vad_threshold {
            self.cfg.vad_threshold = v.clamp(0.0, 1.0);
            self.cfg.threshold_dbfs = vad_dbfs(v);
        }
        // `[]` clears them, as with the service.
        if let Some(terms) = &update.keyterms_prompt {
            self.cfg.keyterms.clone_from(terms);
        }
    }

    /// The configuration as updated so far (a restart at an offset hint keeps the updates).
    pub fn config(&self) -> &RecognizerConfig {
        &self.cfg
    }

    /// Each person labelled so far and their label, in order of first appearance.
    pub fn speakers(&self) -> Vec<SpeakerLabel> {
        self.diarizer
            .people
            .iter()
            .map(|(speaker, index)| SpeakerLabel {
                speaker: speaker.to_string(),
                label: label_text(*index),
            })
            .collect()
    }

    /// How many people have a label (cheap, to see whether [`Self::speakers`] changed).
    pub fn speaker_count(&self) -> usize {
        self.diarizer.people.len()
    }

    /// The `SpeakerRevision` to send before `Termination`, if any label changes: the scripted
    /// revisions, and (current profile) the speakers of turns that were `PENDING`. Once.
    pub fn speaker_revision(&mut self) -> Option<ServerMessage> {
        if !self.diarizer.on {
            return None;
        }
        self.diarizer.revision()
    }

    /// Feed PCM samples; returns the messages they cause, in order.
    pub fn feed(&mut self, samples: &[i16]) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        let skipped = self.skip.min(samples.len());
        self.skip -= skipped;
        self.pending.extend_from_slice(&samples[skipped..]);
        let mut start = 0;
        while self.pending.len() - start >= self.frame_len {
            let frame = &self.pending[start..start + self.frame_len];
            let voiced = rms_dbfs(frame) > self.cfg.threshold_dbfs;
            self.frame(voiced, &mut out);
            start += self.frame_len;
        }
        self.pending.drain(..start);
        out
    }

    fn frame(&mut self, voiced: bool, out: &mut Vec<ServerMessage>) {
        let frame_start = self.now_ms;
        self.now_ms += FRAME_MS;
        // Only script mode asks whether a word's span was heard.
        if matches!(self.words, Words::Script(_)) {
            self.history
                .push_back((frame_start + self.cfg.offset_ms, voiced));
        }
        while self
            .history
            .front()
            .is_some_and(|&(t, _)| t + HISTORY_MS < self.now_ms + self.cfg.offset_ms)
        {
            self.history.pop_front();
        }
        if voiced {
            self.silence_ms = 0;
            self.last_voice_ms = self.now_ms;
        } else {
            self.silence_ms += FRAME_MS;
        }
        if matches!(self.words, Words::List { .. }) {
            self.list_mode(voiced, frame_start, out);
        } else {
            self.script_mode(out);
        }
        if self.word_start.is_none()
            && let Some(turn) = &self.turn
            && !turn.words.is_empty()
        {
            if let Some(confidence) = self.turn_ends(turn.words.len()) {
                self.end_turn(confidence, out);
            } else if self.cfg.u3_style
                && !self.cfg.continuous_partials
                && self.silence_ms >= WORD_GAP_MS
                && turn.words.len() > turn.partial_words
            {
                // U3-Pro without continuous_partials: one partial per pause, with every word
                // heard since the last one.
                self.push_partial(out);
            }
        }
    }

    /// Whether the silence so far ends the turn of `words` words, and with which
    /// `end_of_turn_confidence`. Universal-Streaming: at `min_turn_silence` or later once the
    /// confidence (rising with the silence, [`turns::end_of_turn_confidence`]) reaches
    /// `end_of_turn_confidence_threshold`, else at `max_turn_silence`. U3-Pro: its
    /// punctuation-based rule, which the emulator reads as "two words make a sentence":
    /// `min_turn_silence` from two words on, else `max_turn_silence`; confidence 1.
    fn turn_ends(&self, words: usize) -> Option<f64> {
        let silence = self.silence_ms;
        if silence < self.cfg.min_turn_silence_ms {
            return None;
        }
        let at_max = silence >= self.cfg.max_turn_silence_ms;
        if self.cfg.u3_style {
            return (words >= 2 || at_max).then_some(1.0);
        }
        let confidence = self.confidence(words);
        (confidence >= self.cfg.end_of_turn_confidence_threshold || at_max).then_some(confidence)
    }

    /// The confidence of a turn of `words` words ended now by other than silence (a script's
    /// next turn, ForceEndpoint): the model's of the moment; U3-Pro finals always say 1.
    fn ending_confidence(&self, words: usize) -> f64 {
        if self.cfg.u3_style {
            1.0
        } else {
            self.confidence(words)
        }
    }

    /// The Universal-Streaming end-of-turn confidence now, for a turn of `words` words.
    fn confidence(&self, words: usize) -> f64 {
        turns::end_of_turn_confidence(words, self.silence_ms, self.cfg.max_turn_silence_ms)
    }

    fn list_mode(&mut self, voiced: bool, frame_start: u64, out: &mut Vec<ServerMessage>) {
        if self.leading {
            // The tail of a word an earlier session finalized: not a word again.
            self.leading = voiced;
            return;
        }
        if voiced {
            let start = *self.word_start.get_or_insert(frame_start);
            if self.now_ms - start >= MAX_WORD_MS {
                self.word_start = None;
                self.add_word(start, self.now_ms, None, None, out);
            }
        } else if let Some(start) = self.word_start
            && self.silence_ms >= WORD_GAP_MS
        {
            self.word_start = None;
            let end = self.last_voice_ms.max(start + FRAME_MS);
            self.add_word(start, end, None, None, out);
        }
    }

    fn script_mode(&mut self, out: &mut Vec<ServerMessage>) {
        let stream_now = self.now_ms + self.cfg.offset_ms;
        loop {
            let Words::Script(cursor) = &mut self.words else {
                return;
            };
            let Some((word, base)) = cursor.due(stream_now) else {
                return;
            };
            cursor.advance();
            let (start, end) = (base + word.start, base + word.end);
            // Only words whose audio actually carried voice are "heard" (a muted input yields
            // nothing, as with the service).
            let heard = self
                .history
                .iter()
                .any(|&(t, v)| v && t + FRAME_MS > start && t < end);
            if !heard {
                continue;
            }
            let key = (base, word.turn);
            let Words::Script(cursor) = &mut self.words else {
                return;
            };
            let new_turn = cursor.turn.is_some_and(|k| k != key);
            cursor.turn = Some(key);
            let meta = cursor.turns.get(word.turn).cloned().unwrap_or_default();
            // The script's turns are the conversation's: a new one ends the last whatever the
            // threshold, with the confidence of the moment.
            if new_turn && let Some(turn) = &self.turn {
                self.end_turn(self.ending_confidence(turn.words.len()), out);
            }
            let offset = self.cfg.offset_ms;
            self.add_word(
                start.saturating_sub(offset),
                end.saturating_sub(offset),
                Some(word.text),
                Some(meta),
                out,
            );
        }
    }

    /// The next word-list word: in order, or on stream time the one its start chooses (the
    /// same word whichever session hears it).
    fn next_list_word(&mut self, start: u64) -> String {
        let stream_frame = (start + self.cfg.offset_ms) / FRAME_MS;
        match &mut self.words {
            Words::List { .. } if self.cfg.hinted => {
                WORD_LIST[(stream_frame % WORD_LIST.len() as u64) as usize].to_owned()
            }
            Words::List { next } => {
                let w = WORD_LIST[*next % WORD_LIST.len()];
                *next += 1;
                w.to_owned()
            }
            Words::Script(_) => String::new(),
        }
    }

    /// `meta`: what the script says about the word's turn (`None` for word-list words).
    fn add_word(
        &mut self,
        start: u64,
        end: u64,
        text: Option<String>,
        meta: Option<TurnMeta>,
        out: &mut Vec<ServerMessage>,
    ) {
        let text = text.unwrap_or_else(|| self.next_list_word(start));
        let text = keyterm_spelling(&text, &self.cfg.keyterms).unwrap_or(text);
        if self.turn.is_none() {
            let order = self.next_turn_order;
            self.next_turn_order += 1;
            let meta = meta.unwrap_or_default();
            let speaker = meta.speaker.clone().unwrap_or_else(|| self.voice_at(start));
            self.turn = Some(TurnState {
                order,
                words: Vec::new(),
                partial_words: 0,
                speaker,
                meta,
            });
            if self.cfg.u3_style {
                out.push(ServerMessage::SpeechStarted(SpeechStarted {
                    timestamp: start,
                    confidence: 0.98,
                }));
            }
        }
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        turn.words.push(Word {
            start,
            end,
            text,
            confidence: 0.9,
            word_is_final: false,
            ..Word::default()
        });
        // Universal-Streaming and continuous U3-Pro partials: one per word as it is heard.
        // Otherwise U3-Pro waits for a pause (`frame`).
        if !self.cfg.u3_style || self.cfg.continuous_partials {
            self.push_partial(out);
        }
    }

    /// Send the partial Turn for the current state, labelled.
    fn push_partial(&mut self, out: &mut Vec<ServerMessage>) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        turn.partial_words = turn.words.len();
        let speaker = Arc::clone(&turn.speaker);
        let mut partial = [self.partial()];
        self.diarizer.label_turns(&speaker, &mut partial);
        out.extend(partial);
    }

    /// The unscripted speaker of a turn starting at session time `start`: the voice of its
    /// stream-time slot (session time without the offset hint).
    fn voice_at(&self, start: u64) -> Arc<str> {
        let slot = (start + self.cfg.offset_ms) / SPEAKER_SLOT_MS;
        Arc::from(VOICES[(slot % VOICES.len() as u64) as usize])
    }

    /// A partial Turn for the current state.
    fn partial(&self) -> ServerMessage {
        let Some(turn) = &self.turn else {
            return ServerMessage::Unknown(serde_json::Value::Null);
        };
        let n = turn.words.len();
        if self.cfg.u3_style {
            // U3-Pro: the whole turn re-transcribed; nothing final until the end.
            let words: Vec<Word> = turn.words.clone();
            return ServerMessage::Turn(Turn {
                turn_order: turn.order,
                turn_is_formatted: false,
                end_of_turn: false,
                transcript: join(&words),
                utterance: Some(String::new()),
                end_of_turn_confidence: 0.0,
                words,
                ..Turn::default()
            });
        }
        // Universal-Streaming: every word but the newest is final; the transcript holds the
        // final ones only.
        let words: Vec<Word> = turn
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| Word {
                word_is_final: i + 1 < n,
                ..w.clone()
            })
            .collect();
        let finals = &words[..n.saturating_sub(1)];
        let formatted = self.cfg.format_turns && self.cfg.profile == Profile::Current;
        let transcript = if formatted {
            capitalise(&join(finals))
        } else {
            join(finals)
        };
        ServerMessage::Turn(Turn {
            turn_order: turn.order,
            turn_is_formatted: formatted,
            end_of_turn: false,
            transcript,
            utterance: Some(String::new()),
            end_of_turn_confidence: self.confidence(n),
            words,
            ..Turn::default()
        })
    }

    /// End the current turn now (ForceEndpoint).
    /// The confidence reported is the one of that moment (below the threshold, usually: the
    /// client decided, not the model).
    pub fn force_endpoint(&mut self) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        self.close_open_word(&mut out);
        if let Some(turn) = &self.turn {
            self.end_turn(self.ending_confidence(turn.words.len()), &mut out);
        }
        out
    }

    /// Everything still pending, for `Terminate`.
    pub fn flush(&mut self) -> Vec<ServerMessage> {
        self.force_endpoint()
    }

    fn close_open_word(&mut self, out: &mut Vec<ServerMessage>) {
        if let Some(start) = self.word_start.take() {
            let end = self.last_voice_ms.max(start + FRAME_MS);
            self.add_word(start, end, None, None, out);
        }
    }

    /// `confidence`: the `end_of_turn_confidence` the turn ended with (Universal-Streaming).
    fn end_turn(&mut self, confidence: f64, out: &mut Vec<ServerMessage>) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        if turn.words.is_empty() {
            return;
        }
        let words: Vec<Word> = turn
            .words
            .into_iter()
            .map(|w| Word {
                word_is_final: true,
                ..w
            })
            .collect();
        let first = out.len();
        self.final_turns(turn.order, words, confidence, out);
        let finals = &mut out[first..];
        self.diarizer.label_turns(&turn.speaker, finals);
        if self.cfg.language_detection {
            let language = turn.meta.language.as_deref().unwrap_or(DEFAULT_LANGUAGE);
            for message in finals.iter_mut() {
                if let ServerMessage::Turn(t) = message {
                    t.language_code = Some(language.to_owned());
                    t.language_confidence = Some(LANGUAGE_CONFIDENCE);
                }
            }
        }
        // The last final is what the client keeps (the formatted one when there are two).
        if let Some(ServerMessage::Turn(last)) = finals.last() {
            self.diarizer
                .keep(last, &turn.speaker, turn.meta.revised_speaker.as_ref());
        }
    }

    /// The final Turn message(s) of turn `order`, shaped by profile and formatting.
    fn final_turns(
        &self,
        order: u64,
        words: Vec<Word>,
        confidence: f64,
        out: &mut Vec<ServerMessage>,
    ) {
        let plain = join(&words);
        let formatted_words = format_words(&words);
        let formatted = format_sentence(&plain);
        let base = Turn {
            turn_order: order,
            end_of_turn: true,
            ..Turn::default()
        };
        if self.cfg.u3_style {
            // U3-Pro finals are always formatted, confidence 1, utterance = transcript.
            out.push(ServerMessage::Turn(Turn {
                turn_is_formatted: true,
                transcript: formatted.clone(),
                utterance: Some(formatted),
                end_of_turn_confidence: 1.0,
                words: formatted_words,
                ..base
            }));
            return;
        }
        match (self.cfg.format_turns, self.cfg.profile) {
            (true, Profile::Legacy) => {
                // Before March 2026: the unformatted final, then an extra formatted final with
                // the same turn_order.
                out.push(ServerMessage::Turn(Turn {
                    turn_is_formatted: false,
                    transcript: plain.clone(),
                    utterance: Some(plain),
                    end_of_turn_confidence: confidence,
                    words,
                    ..base.clone()
                }));
                out.push(ServerMessage::Turn(Turn {
                    turn_is_formatted: true,
                    transcript: formatted,
                    utterance: Some(String::new()),
                    end_of_turn_confidence: confidence,
                    words: formatted_words,
                    ..base
                }));
            }
            (true, _) => out.push(ServerMessage::Turn(Turn {
                turn_is_formatted: true,
                transcript: formatted.clone(),
                utterance: Some(formatted),
                end_of_turn_confidence: confidence,
                words: formatted_words,
                ..base
            })),
            (false, _) => out.push(ServerMessage::Turn(Turn {
                turn_is_formatted: false,
                transcript: plain.clone(),
                utterance: Some(plain),
                end_of_turn_confidence: confidence,
                words,
                ..base
            })),
        }
    }

    /// Session audio time processed so far, in ms.
    pub fn audio_ms(&self) -> u64 {
        self.now_ms
    }
}

fn join(words: &[Word]) -> String {
    words
        .iter()
        .map(|w| w.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// "hi my name is sonny" → "Hi my name is sonny." (the emulator's idea of formatting).
fn format_sentence(text: &str) -> String {
    let mut s = capitalise(text);
    if !s.ends_with(['.', '?', '!']) {
        s.push('.');
    }
    s
}

fn format_words(words: &[Word]) -> Vec<Word> {
    let n = words.len();
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut text = if i == 0 {
                capitalise(&w.text)
            } else {
                w.text.clone()
            };
            if i + 1 == n && !text.ends_with(['.', '?', '!']) {
                text.push('.');
            }
            Word { text, ..w.clone() }
        })
        .collect()
}

/// RMS level of a frame in dBFS (−∞ for digital silence is reported as −120).
pub fn rms_dbfs(frame: &[i16]) -> f64 {
    let rms = crate::protocol::audio::rms(frame);
    if rms <= 1e-6 {
        -120.0
    } else {
        20.0 * rms.log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16_000;

    fn tone(ms: u64) -> Vec<i16> {
        (0..u64::from(RATE) * ms / 1000)
            .map(|i| {
                ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / f64::from(RATE)).sin() * 8000.0)
                    as i16
            })
            .collect()
    }

    fn silence(ms: u64) -> Vec<i16> {
        vec![0; (u64::from(RATE) * ms / 1000) as usize]
    }

    fn turns(msgs: &[ServerMessage]) -> Vec<&Turn> {
        msgs.iter()
            .filter_map(|m| match m {
                ServerMessage::Turn(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    fn recognizer(params: &StreamingParams, profile: Profile) -> Recognizer {
        Recognizer::new(RecognizerConfig::from_params(params, profile, None), None)
    }

    /// Three 300 ms "words" separated by 100 ms gaps, then silence.
    fn speech() -> Vec<i16> {
        let mut a = Vec::new();
        for _ in 0..3 {
            a.extend(tone(300));
            a.extend(silence(100));
        }
        a.extend(silence(1000));
        a
    }

    /// The final words (text, stream start, stream end) of a hinted session fed `audio` (the
    /// stream from `offset_ms` on) in 50 ms chunks; `flush`: it was asked to end (Terminate),
    /// else it just stopped hearing (a drop).
    fn hinted_finals(audio: &[i16], offset_ms: u64, flush: bool) -> Vec<(String, u64, u64)> {
        let cfg = RecognizerConfig::from_params(
            &StreamingParams::default(),
            Profile::Current,
            Some(offset_ms),
        );
        let mut r = Recognizer::new(cfg, None);
        let mut msgs = Vec::new();
        for chunk in audio.chunks(800) {
            msgs.extend(r.feed(chunk));
        }
        if flush {
            msgs.extend(r.flush());
        }
        turns(&msgs)
            .into_iter()
            .filter(|t| t.end_of_turn)
            .flat_map(|t| {
                t.words
                    .iter()
                    .map(|w| (w.text.clone(), w.start + offset_ms, w.end + offset_ms))
            })
            .collect()
    }

    /// Turns of words of uneven lengths and gaps, so that word starts fall anywhere on the grid.
    fn talk() -> Vec<i16> {
        let mut a = silence(130);
        for (word, gap) in [
            (260, 90),
            (410, 120),
            (180, 650),
            (330, 70),
            (520, 900),
            (240, 110),
        ] {
            a.extend(tone(word));
            a.extend(silence(gap));
        }
        a.extend(tone(700));
        a.extend(silence(1500));
        a
    }

    /// On stream time, the same audio gives the same final words whichever sessions hear it: a
    /// session that stops hearing anywhere (a drop) and a new one that is fed from the chunk
    /// holding the end of the last final word (as aai-live replays) together say exactly the
    /// words one session says, with the same texts and times.
    #[test]
    fn hinted_words_follow_stream_time_across_a_drop_and_replay() {
        let audio = talk();
        let clean = hinted_finals(&audio, 0, true);
        assert!(clean.len() >= 7, "{clean:?}");
        let texts: Vec<&str> = clean.iter().map(|(t, ..)| t.as_str()).collect();
        assert_ne!(
            texts[..4],
            ["the", "quick", "brown", "fox"],
            "chosen by start"
        );
        let total_ms = audio.len() as u64 / 16;
        let mut cuts = 0;
        for cut_ms in (50..total_ms).step_by(50) {
            let first = hinted_finals(&audio[..(cut_ms * 16) as usize], 0, false);
            // Where aai-live resumes: the chunk holding the last final word's end, else the
            // first session's own start.
            let resume = first.last().map_or(0, |(.., end)| end / 50 * 50);
            let second = hinted_finals(&audio[(resume * 16) as usize..], resume, true);
            let joined: Vec<_> = first.iter().chain(&second).cloned().collect();
            assert_eq!(
                joined, clean,
                "dropped at {cut_ms} ms, resumed at {resume} ms"
            );
            cuts += 1;
        }
        assert!(cuts > 50);
    }

    #[test]
    fn words_only_while_there_is_voice() {
        let mut r = recognizer(&StreamingParams::default(), Profile::Current);
        assert!(r.feed(&silence(3000)).is_empty());
        assert_eq!(r.audio_ms(), 3000);
    }

    #[test]
    fn universal_streaming_partials_then_final() {
        let mut r = recognizer(&StreamingParams::default(), Profile::Current);
        let msgs = r.feed(&speech());
        let t = turns(&msgs);
        assert_eq!(t.len(), 4, "{t:#?}");
        // First partial: one non-final word, empty transcript.
        assert_eq!(t[0].transcript, "");
        assert!(!t[0].words[0].word_is_final);
        // Second: the first word became final.
        assert_eq!(t[1].transcript, "the");
        assert!(t[1].words[0].word_is_final && !t[1].words[1].word_is_final);
        let last = t[3];
        assert!(last.end_of_turn && !last.turn_is_formatted);
        assert_eq!(last.transcript, "the quick brown");
        assert_eq!(last.utterance.as_deref(), Some("the quick brown"));
        assert!(last.words.iter().all(|w| w.word_is_final));
        // Word times follow the audio: 0-300, 400-700, 800-1100 ms.
        assert_eq!((last.words[0].start, last.words[0].end), (0, 300));
        assert_eq!((last.words[1].start, last.words[1].end), (400, 700));
        assert_eq!(last.turn_order, 0);
        // The next turn gets the next order.
        let msgs = r.feed(&speech());
        assert_eq!(turns(&msgs)[0].turn_order, 1);
    }

    #[test]
    fn format_turns_current_and_legacy() {
        let params = StreamingParams {
            format_turns: true,
            ..StreamingParams::default()
        };
        let msgs = recognizer(&params, Profile::Current).feed(&speech());
        let t = turns(&msgs);
        assert!(t.iter().all(|t| t.turn_is_formatted));
        assert_eq!(t.last().expect("final").transcript, "The quick brown.");

        let msgs = recognizer(&params, Profile::Legacy).feed(&speech());
        let t = turns(&msgs);
        let finals: Vec<_> = t.iter().filter(|t| t.end_of_turn).collect();
        assert_eq!(finals.len(), 2);
        assert_eq!(finals[0].turn_order, finals[1].turn_order);
        assert!(!finals[0].turn_is_formatted && finals[1].turn_is_formatted);
        assert_eq!(finals[1].transcript, "The quick brown.");
        assert_eq!(finals[1].utterance.as_deref(), Some(""));
    }

    #[test]
    fn u3_style_speech_started_whole_turn_partials() {
        // U3's default min_turn_silence (100 ms) would end the turn at each 100 ms gap.
        let params = StreamingParams {
            min_turn_silence: Some(400),
            ..StreamingParams::default()
        };
        let msgs = recognizer(&params, Profile::U3Pro).feed(&speech());
        assert!(matches!(
            msgs[0],
            ServerMessage::SpeechStarted(SpeechStarted { timestamp: 0, .. })
        ));
        let t = turns(&msgs);
        assert_eq!(t[1].transcript, "the quick");
        assert!(t[1].words.iter().all(|w| !w.word_is_final));
        let last = t.last().expect("final");
        assert!(last.end_of_turn && last.turn_is_formatted);
        assert_eq!(last.transcript, "The quick brown.");
        assert_eq!(last.utterance.as_deref(), Some("The quick brown."));
        assert!((last.end_of_turn_confidence - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn force_endpoint_ends_the_turn_at_once() {
        let mut r = recognizer(&StreamingParams::default(), Profile::Current);
        let mut audio = tone(300);
        audio.extend(silence(100));
        audio.extend(tone(200));
        let msgs = r.feed(&audio);
        assert!(turns(&msgs).iter().all(|t| !t.end_of_turn));
        let msgs = r.force_endpoint();
        let t = turns(&msgs);
        let last = t.last().expect("final");
        assert!(last.end_of_turn);
        assert_eq!(last.words.len(), 2);
        assert!(r.force_endpoint().is_empty(), "nothing left to end");
    }

    #[test]
    fn min_turn_silence_controls_turn_end() {
        let params = StreamingParams {
            min_turn_silence: Some(800),
            ..StreamingParams::default()
        };
        let mut r = recognizer(&params, Profile::Current);
        let mut audio = Vec::new();
        for _ in 0..2 {
            audio.extend(tone(300));
            audio.extend(silence(100));
        }
        audio.extend(silence(500));
        assert!(turns(&r.feed(&audio)).iter().all(|t| !t.end_of_turn));
        let msgs = r.feed(&silence(300));
        assert!(turns(&msgs).iter().any(|t| t.end_of_turn));
    }

    #[test]
    fn script_words_and_turns_with_offset_and_loop() {
        let script: Script = serde_json::from_str(
            r#"{"loop_ms":2000,"turns":[{"words":[{"text":"hello","start":0,"end":300},{"text":"world","start":400,"end":700}]},{"words":[{"text":"again","start":800,"end":1100}]}]}"#,
        )
        .expect("json");
        let script = Arc::new(script);
        let cfg =
            RecognizerConfig::from_params(&StreamingParams::default(), Profile::Current, Some(0));
        let mut r = Recognizer::new(cfg, Some(&script));
        let mut audio = Vec::new();
        for _ in 0..3 {
            audio.extend(tone(300));
            audio.extend(silence(100));
        }
        audio.extend(silence(800));
        audio.extend(speech().into_iter().take(RATE as usize)); // second loop, 1 s
        let msgs = r.feed(&audio);
        let finals: Vec<_> = turns(&msgs)
            .into_iter()
            .filter(|t| t.end_of_turn)
            .cloned()
            .collect();
        assert_eq!(finals[0].transcript, "hello world");
        assert_eq!(finals[1].transcript, "again");

        // A session that starts 2400 ms into the looped stream continues with "world".
        let cfg = RecognizerConfig::from_params(
            &StreamingParams::default(),
            Profile::Current,
            Some(2400),
        );
        let mut r = Recognizer::new(cfg, Some(&script));
        let msgs = r.feed(&tone(300));
        let t = turns(&msgs);
        assert_eq!(t[0].words[0].text, "world");
        assert_eq!((t[0].words[0].start, t[0].words[0].end), (0, 300));
    }

    #[test]
    fn script_words_need_voice() {
        let script = Arc::new(
            serde_json::from_str::<Script>(
                r#"{"turns":[{"words":[{"text":"hi","start":0,"end":300}]}]}"#,
            )
            .expect("json"),
        );
        let cfg =
            RecognizerConfig::from_params(&StreamingParams::default(), Profile::Current, Some(0));
        let mut r = Recognizer::new(cfg, Some(&script));
        assert!(r.feed(&silence(1000)).is_empty());
    }

    /// A recogniser for `script` (JSON) with `params`, on stream time from `offset_ms`.
    fn scripted(
        script: &str,
        params: &StreamingParams,
        profile: Profile,
        offset_ms: u64,
    ) -> (Recognizer, Arc<Script>) {
        let script: Script = serde_json::from_str(script).expect("script");
        script.validate().expect("valid script");
        let script = Arc::new(script);
        let cfg = RecognizerConfig::from_params(params, profile, Some(offset_ms));
        (Recognizer::new(cfg, Some(&script)), script)
    }

    /// The stream from `from_ms` to `to_ms`: voice over the script's words, silence elsewhere.
    fn voiced(script: &Script, from_ms: u64, to_ms: u64) -> Vec<i16> {
        let words = script.words();
        let mut out = Vec::new();
        for ms in from_ms..to_ms {
            if words.iter().any(|w| (w.start..w.end).contains(&ms)) {
                out.extend(tone(1));
            } else {
                out.extend(silence(1));
            }
        }
        out
    }

    /// Feed the stream from the recogniser's offset to `to_ms`, then Terminate: every message,
    /// the revision last (if any).
    fn run(r: &mut Recognizer, script: &Script, from_ms: u64, to_ms: u64) -> Vec<ServerMessage> {
        let mut msgs = r.feed(&voiced(script, from_ms, to_ms));
        msgs.extend(r.flush());
        msgs.extend(r.speaker_revision());
        msgs
    }

    fn finals(msgs: &[ServerMessage]) -> Vec<&Turn> {
        turns(msgs).into_iter().filter(|t| t.end_of_turn).collect()
    }

    fn labels(msgs: &[ServerMessage]) -> Vec<String> {
        finals(msgs)
            .iter()
            .map(|t| t.speaker_label.clone().unwrap_or_default())
            .collect()
    }

    fn revision(msgs: &[ServerMessage]) -> Option<&SpeakerRevision> {
        msgs.iter().find_map(|m| match m {
            ServerMessage::SpeakerRevision(r) => Some(r),
            _ => None,
        })
    }

    fn diarized() -> StreamingParams {
        StreamingParams {
            speaker_labels: true,
            ..StreamingParams::default()
        }
    }

    /// ben, ana, ben: two 500 ms words a turn, 1.2 s long.
    const CONVERSATION: &str = r#"{"turns":[
        {"speaker":"ben","words":[{"text":"hi","start":0,"end":500},{"text":"ana","start":700,"end":1200}]},
        {"speaker":"ana","words":[{"text":"hello","start":2000,"end":2500},{"text":"ben","start":2800,"end":3300}]},
        {"speaker":"ben","words":[{"text":"how","start":4000,"end":4500},{"text":"goes","start":4700,"end":5200}]}]}"#;

    #[test]
    fn scripted_speakers_are_labelled_in_order_of_first_appearance_per_session() {
        let (mut r, script) = scripted(CONVERSATION, &diarized(), Profile::Current, 0);
        let msgs = run(&mut r, &script, 0, 6000);
        assert_eq!(labels(&msgs), ["A", "B", "A"]);
        for t in finals(&msgs) {
            assert!(
                t.words.iter().all(|w| w.speaker == t.speaker_label),
                "{t:?}"
            );
        }
        assert_eq!(
            r.speakers(),
            [
                SpeakerLabel {
                    speaker: "ben".into(),
                    label: "A".into()
                },
                SpeakerLabel {
                    speaker: "ana".into(),
                    label: "B".into()
                }
            ]
        );
        assert!(revision(&msgs).is_none(), "nothing to revise");

        // A session that starts on ana's turn calls ana "A": labels are per session.
        let (mut r, script) = scripted(CONVERSATION, &diarized(), Profile::Current, 1900);
        let msgs = run(&mut r, &script, 1900, 6000);
        assert_eq!(labels(&msgs), ["A", "B"]);
        assert_eq!(finals(&msgs)[0].transcript, "hello ben");
    }

    #[test]
    fn max_speakers_folds_new_people_into_the_last_label() {
        let three = CONVERSATION.replacen(
            r#""speaker":"ben","words":[{"text":"how""#,
            r#""speaker":"cy","words":[{"text":"how""#,
            1,
        );
        for (max, expected) in [
            (None, ["A", "B", "C"]),
            (Some(2), ["A", "B", "B"]),
            (Some(1), ["A", "A", "A"]),
        ] {
            let params = StreamingParams {
                max_speakers: max,
                ..diarized()
            };
            let (mut r, script) = scripted(&three, &params, Profile::Current, 0);
            assert_eq!(labels(&run(&mut r, &script, 0, 6000)), expected, "{max:?}");
        }
    }

    #[test]
    fn short_turns_are_pending_and_resolved_by_the_last_revision() {
        // "ok" (400 ms) is too short to say who spoke; "right then" grows past a second.
        let script = r#"{"turns":[
            {"speaker":"ana","words":[{"text":"ok","start":0,"end":400}]},
            {"speaker":"ben","words":[{"text":"right","start":2000,"end":2500},{"text":"then","start":2700,"end":3200}]}]}"#;
        let (mut r, s) = scripted(script, &diarized(), Profile::Current, 0);
        let msgs = run(&mut r, &s, 0, 4500);
        // ben is the first heard long enough: "A".
        assert_eq!(labels(&msgs), ["PENDING", "A"]);
        let ben: Vec<_> = turns(&msgs)
            .into_iter()
            .filter(|t| t.turn_order == 1)
            .collect();
        assert_eq!(
            ben[0].speaker_label.as_deref(),
            Some("PENDING"),
            "one word, 500 ms"
        );
        assert_eq!(ben[0].words[0].speaker.as_deref(), Some("PENDING"));
        assert_eq!(
            ben.last().and_then(|t| t.speaker_label.as_deref()),
            Some("A")
        );
        let revised = revision(&msgs).expect("a revision");
        assert_eq!(revised.revisions.len(), 1);
        let pending = &revised.revisions[0];
        assert_eq!(
            (pending.turn_order, pending.speaker_label.as_deref()),
            (0, Some("B"))
        );
        assert_eq!(pending.words[0].text, "ok");
        assert_eq!(pending.words[0].speaker.as_deref(), Some("B"));
        assert!(matches!(
            msgs.last(),
            Some(ServerMessage::SpeakerRevision(_))
        ));

        // Before June 2026 the label was UNKNOWN, and final.
        let (mut r, s) = scripted(script, &diarized(), Profile::Legacy, 0);
        let msgs = run(&mut r, &s, 0, 4500);
        assert_eq!(labels(&msgs), ["UNKNOWN", "A"]);
        assert!(revision(&msgs).is_none());
    }

    #[test]
    fn a_revised_speaker_comes_in_the_revision_with_the_words() {
        let script = CONVERSATION.replacen(
            r#""speaker":"ana""#,
            r#""speaker":"ana","revised_speaker":"ben""#,
            1,
        );
        let (mut r, s) = scripted(&script, &diarized(), Profile::Current, 0);
        let msgs = run(&mut r, &s, 0, 6000);
        assert_eq!(labels(&msgs), ["A", "B", "A"], "first labelled as scripted");
        let revised = revision(&msgs).expect("a revision");
        assert_eq!(revised.revisions.len(), 1);
        let turn = &revised.revisions[0];
        assert_eq!(
            (turn.turn_order, turn.speaker_label.as_deref()),
            (1, Some("A"))
        );
        let texts: Vec<_> = turn.words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, ["hello", "ben"]);
        assert!(
            turn.words
                .iter()
                .all(|w| w.speaker.as_deref() == Some("A") && w.word_is_final)
        );
        assert_eq!(turn.words[0].start, 2000);
        assert!(r.speaker_revision().is_none(), "sent once");

        // A revision to someone never heard gives them the next label.
        let script = CONVERSATION.replacen(
            r#""speaker":"ana""#,
            r#""speaker":"ana","revised_speaker":"cy""#,
            1,
        );
        let (mut r, s) = scripted(&script, &diarized(), Profile::Current, 0);
        let msgs = run(&mut r, &s, 0, 6000);
        assert_eq!(
            revision(&msgs).expect("revision").revisions[0]
                .speaker_label
                .as_deref(),
            Some("C")
        );
    }

    #[test]
    fn without_speaker_labels_nothing_is_labelled_or_revised() {
        let script = CONVERSATION.replacen(
            r#""speaker":"ana""#,
            r#""speaker":"ana","revised_speaker":"ben""#,
            1,
        );
        let (mut r, s) = scripted(&script, &StreamingParams::default(), Profile::Current, 0);
        let msgs = run(&mut r, &s, 0, 6000);
        assert!(
            turns(&msgs)
                .iter()
                .all(|t| t.speaker_label.is_none() && t.words.iter().all(|w| w.speaker.is_none()))
        );
        assert!(revision(&msgs).is_none());
        assert!(r.speakers().is_empty());
    }

    #[test]
    fn language_comes_on_final_turns_with_language_detection_only() {
        let script = CONVERSATION.replacen(
            r#""speaker":"ana""#,
            r#""speaker":"ana","language":"es""#,
            1,
        );
        let params = StreamingParams {
            language_detection: true,
            ..StreamingParams::default()
        };
        let (mut r, s) = scripted(&script, &params, Profile::Current, 0);
        let msgs = run(&mut r, &s, 0, 6000);
        let languages: Vec<_> = finals(&msgs)
            .iter()
            .map(|t| (t.language_code.clone(), t.language_confidence))
            .collect();
        let en = (Some("en".to_owned()), Some(LANGUAGE_CONFIDENCE));
        assert_eq!(
            languages,
            [
                en.clone(),
                (Some("es".to_owned()), Some(LANGUAGE_CONFIDENCE)),
                en
            ]
        );
        assert!(
            turns(&msgs)
                .iter()
                .filter(|t| !t.end_of_turn)
                .all(|t| t.language_code.is_none() && t.language_confidence.is_none())
        );

        let (mut r, s) = scripted(&script, &StreamingParams::default(), Profile::Current, 0);
        let msgs = run(&mut r, &s, 0, 6000);
        assert!(
            turns(&msgs)
                .iter()
                .all(|t| t.language_code.is_none() && t.language_confidence.is_none())
        );
    }

    /// Two-word turns (300 ms words, 100 ms apart) starting at each of `starts` (ms), then 2 s
    /// of silence.
    fn turns_at(starts: &[u64]) -> Vec<i16> {
        let mut audio = Vec::new();
        let mut at = 0;
        for &start in starts {
            audio.extend(silence(start - at));
            audio.extend(tone(500));
            audio.extend(silence(100));
            audio.extend(tone(500));
            at = start + 1100;
        }
        audio.extend(silence(2000));
        audio
    }

    #[test]
    fn unscripted_speakers_follow_stream_time() {
        // Turns at 1 s and 3 s are in the first slot, 6 s in the second, 11 s in the third.
        let starts = [1000, 3000, 6000, 11_000];
        let mut r = Recognizer::new(
            RecognizerConfig::from_params(&diarized(), Profile::Current, None),
            None,
        );
        let msgs = r.feed(&turns_at(&starts));
        assert_eq!(labels(&msgs), ["A", "A", "B", "A"]);

        // A session from 5 s into the stream (the hint) starts on the second voice: "A" to it.
        let audio = turns_at(&starts);
        let cfg = RecognizerConfig::from_params(&diarized(), Profile::Current, Some(5000));
        let mut r = Recognizer::new(cfg, None);
        let msgs = r.feed(&audio[5000 * 16..]);
        assert_eq!(labels(&msgs), ["A", "B"]);
        assert_eq!(r.speakers()[0].speaker, VOICES[1]);
    }

    #[test]
    fn keyterms_respell_matching_words_and_updates_replace_them() {
        let terms = vec![
            "AssemblyAI".to_owned(),
            "Ben".to_owned(),
            "two words".to_owned(),
        ];
        assert_eq!(
            keyterm_spelling("assemblyai,", &terms).as_deref(),
            Some("AssemblyAI,")
        );
        assert_eq!(keyterm_spelling("(BEN)", &terms).as_deref(), Some("(Ben)"));
        assert_eq!(keyterm_spelling("benny", &terms), None);
        assert_eq!(keyterm_spelling("two", &terms), None);
        assert_eq!(keyterm_spelling("...", &terms), None);

        let params = StreamingParams {
            keyterms_prompt: vec!["Ana".into()],
            ..StreamingParams::default()
        };
        let (mut r, s) = scripted(CONVERSATION, &params, Profile::Current, 0);
        let mut msgs = r.feed(&voiced(&s, 0, 1900));
        assert_eq!(finals(&msgs)[0].transcript, "hi Ana");
        // From here on "ben" is a keyterm and "ana" no longer is.
        r.update(&UpdateConfiguration {
            keyterms_prompt: Some(vec!["BEN".into()]),
            ..UpdateConfiguration::default()
        });
        msgs = r.feed(&voiced(&s, 1900, 4000));
        assert_eq!(finals(&msgs)[0].transcript, "hello BEN");
        assert_eq!(r.config().settings().keyterms_prompt, ["BEN"]);
    }

    #[test]
    fn end_of_turn_confidence_threshold_chooses_the_pause_that_ends_a_turn() {
        // Two words, then 600 ms of silence: over min_turn_silence (400), under max (1280).
        let mut audio = tone(300);
        audio.extend(silence(100));
        audio.extend(tone(300));
        audio.extend(silence(600));
        let ended = |threshold: Option<f64>| {
            let params = StreamingParams {
                end_of_turn_confidence_threshold: threshold,
                ..StreamingParams::default()
            };
            let mut r = recognizer(&params, Profile::Current);
            !finals(&r.feed(&audio)).is_empty()
        };
        assert!(ended(None), "the default 0.4: two words are confident");
        assert!(!ended(Some(0.9)), "0.9: wait for max_turn_silence");
        // And mid-session, for the audio that follows.
        let mut r = recognizer(&StreamingParams::default(), Profile::Current);
        r.update(&UpdateConfiguration {
            end_of_turn_confidence_threshold: Some(0.9),
            ..UpdateConfiguration::default()
        });
        assert!(finals(&r.feed(&audio)).is_empty());
        assert!(!finals(&r.feed(&silence(700))).is_empty(), "1280 ms in all");
    }

    /// Three two-word sentences, each followed by a 600 ms pause (over the default
    /// `min_turn_silence`, under `max_turn_silence`), then a long silence.
    fn sentences() -> Vec<i16> {
        let mut audio = Vec::new();
        for _ in 0..3 {
            audio.extend(tone(300));
            audio.extend(silence(100));
            audio.extend(tone(300));
            audio.extend(silence(600));
        }
        audio.extend(silence(1500));
        audio
    }

    fn with_threshold(threshold: f64) -> StreamingParams {
        StreamingParams {
            end_of_turn_confidence_threshold: Some(threshold),
            ..StreamingParams::default()
        }
    }

    #[test]
    fn thresholds_zero_and_one_give_different_turns_on_the_same_audio() {
        let eager = recognizer(&with_threshold(0.0), Profile::Current).feed(&sentences());
        let patient = recognizer(&with_threshold(1.0), Profile::Current).feed(&sentences());
        let (eager, patient) = (finals(&eager), finals(&patient));
        assert_eq!(eager.len(), 3, "0.0: every pause ends a turn");
        assert!(eager.iter().all(|t| t.words.len() == 2));
        assert_eq!(
            patient.len(),
            1,
            "1.0: the pauses are shorter than max_turn_silence"
        );
        assert_eq!(patient[0].words.len(), 6);
        // The confidence reported is the one decided with: at min_turn_silence (400 of 1280
        // ms: 0.5 + 0.5 × 400/1280) for 0.0, full at max_turn_silence for 1.0.
        assert!(
            eager
                .iter()
                .all(|t| (t.end_of_turn_confidence - 0.656).abs() < 1e-9)
        );
        assert!((patient[0].end_of_turn_confidence - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_final_never_reports_less_confidence_than_the_threshold_unless_max_silence_ended_it() {
        for threshold in [0.3, 0.6, 0.7, 0.8, 0.9] {
            let mut r = recognizer(&with_threshold(threshold), Profile::Current);
            let msgs = r.feed(&sentences());
            for t in finals(&msgs) {
                assert!(
                    t.end_of_turn_confidence >= threshold,
                    "{threshold}: {}",
                    t.end_of_turn_confidence
                );
            }
        }
        // 0.8 is reached after 768 ms of silence (0.5 + 0.5 × 768/1280): the 600 ms pauses
        // do not end a turn, the last long silence does, before max_turn_silence.
        let mut r = recognizer(&with_threshold(0.8), Profile::Current);
        let msgs = r.feed(&sentences());
        let last = *finals(&msgs).last().expect("final");
        assert!(
            (last.end_of_turn_confidence - 0.805).abs() < 1e-9,
            "{last:?}"
        );
    }

    #[test]
    fn force_endpoint_ends_a_turn_under_a_high_threshold_with_the_confidence_of_the_moment() {
        let mut r = recognizer(&with_threshold(1.0), Profile::Current);
        let mut audio = tone(300);
        audio.extend(silence(100));
        audio.extend(tone(300));
        audio.extend(silence(640));
        assert!(finals(&r.feed(&audio)).is_empty(), "1.0 waits for 1280 ms");
        let out = r.force_endpoint();
        let f = finals(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].words.len(), 2);
        // 640 ms of silence: 0.5 + 0.5 × 640/1280.
        assert!(
            (f[0].end_of_turn_confidence - 0.75).abs() < 1e-9,
            "{:?}",
            f[0]
        );
    }

    #[test]
    fn each_model_runs_with_its_defaults_and_modes_change_them() {
        let settings = |model: &str, mode: Option<&str>| {
            let params = StreamingParams {
                speech_model: model.into(),
                mode: mode.map(Into::into),
                ..StreamingParams::default()
            };
            RecognizerConfig::from_params(&params, Profile::Current, None).settings()
        };
        let us = settings("universal-streaming-english", Some("max_accuracy"));
        assert_eq!((us.min_turn_silence, us.max_turn_silence), (400, 1280));
        assert_eq!(us.end_of_turn_confidence_threshold, Some(0.4));
        assert_eq!(us.mode, None, "no modes outside the U3-Pro family");
        let rt = settings("u3-rt-pro", None);
        assert_eq!((rt.min_turn_silence, rt.max_turn_silence), (100, 1000));
        assert_eq!((rt.mode, rt.vad_threshold), (Some("balanced"), 0.3));
        assert_eq!(rt.end_of_turn_confidence_threshold, None);
        let pro = settings("universal-3-6-pro", None);
        assert_eq!((pro.min_turn_silence, pro.max_turn_silence), (128, 1280));
        assert_eq!((pro.mode, pro.vad_threshold), (Some("balanced"), 0.2));
        let fast = settings("universal-3-5-pro", Some("min_latency"));
        assert_eq!((fast.min_turn_silence, fast.max_turn_silence), (128, 640));
        let slow = settings("universal-3-5-pro", Some("max_accuracy"));
        assert_eq!((slow.min_turn_silence, slow.max_turn_silence), (512, 2560));

        // Mid-session: a new mode moves the silences the client did not set itself.
        let params = StreamingParams {
            speech_model: "universal-3-5-pro".into(),
            max_turn_silence: Some(3000),
            ..StreamingParams::default()
        };
        let mut r = recognizer(&params, Profile::Current);
        let mut other = serde_json::Map::new();
        other.insert("mode".into(), "max_accuracy".into());
        r.update(&UpdateConfiguration {
            other,
            ..UpdateConfiguration::default()
        });
        let now = r.config().settings();
        assert_eq!(now.mode, Some("max_accuracy"));
        assert_eq!((now.min_turn_silence, now.max_turn_silence), (512, 3000));
    }

    #[test]
    fn continuous_partials_send_partials_during_unbroken_speech() {
        // 1.8 s of unbroken voice: three 600 ms words with no pause between them.
        let mut audio = tone(1800);
        audio.extend(silence(1500));
        let partials = |continuous: bool| {
            let params = StreamingParams {
                speech_model: "universal-3-5-pro".into(),
                ..StreamingParams::default()
            };
            let cfg = RecognizerConfig::from_params(&params, Profile::Current, None)
                .with_continuous_partials(continuous);
            let msgs = Recognizer::new(cfg, None).feed(&audio);
            assert_eq!(finals(&msgs).len(), 1);
            turns(&msgs)
                .iter()
                .filter(|t| !t.end_of_turn)
                .map(|t| t.words.len())
                .collect::<Vec<_>>()
        };
        assert_eq!(partials(false), [3], "one partial, at the pause");
        assert_eq!(partials(true), [1, 2, 3], "one per word");
    }

    #[test]
    fn labels_are_letters_then_pairs() {
        let got: Vec<String> = [0, 1, 25, 26, 27, 51, 52, 701, 702]
            .into_iter()
            .map(label_text)
            .collect();
        assert_eq!(got, ["A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]);
    }

    #[test]
    fn rms_levels() {
        assert!((rms_dbfs(&[i16::MAX; 100]) - 0.0).abs() < 0.01);
        assert!((rms_dbfs(&[0; 100]) + 120.0).abs() < f64::EPSILON);
    }
}
