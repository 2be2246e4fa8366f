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

use super::Profile;
use super::script::{Script, TimedWord};
use crate::protocol::StreamingParams;
use crate::protocol::messages::{ServerMessage, SpeechStarted, Turn, UpdateConfiguration, Word};

/// Voice detection frame.
const FRAME_MS: u64 = 20;
/// A gap this long ends a word (list mode).
const WORD_GAP_MS: u64 = 60;
/// A voiced run this long is split into words (list mode).
const MAX_WORD_MS: u64 = 600;
/// Voice history kept to check that script words were actually heard.
const HISTORY_MS: u64 = 30_000;

/// Words used when no script is given: deterministic, so tests can predict them.
pub const WORD_LIST: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "seven",
    "clever", "parrots", "count", "silver", "coins", "under", "a", "quiet", "moon",
];

/// Recognizer settings taken from the connection parameters.
#[derive(Debug, Clone)]
pub struct RecognizerConfig {
    pub sample_rate: u32,
    pub profile: Profile,
    pub u3_style: bool,
    pub format_turns: bool,
    pub min_turn_silence_ms: u64,
    pub max_turn_silence_ms: u64,
    /// RMS level (dBFS) above which a frame counts as voice.
    pub threshold_dbfs: f64,
    /// Stream offset of this session's first sample, in ms (script alignment after a reconnect).
    pub offset_ms: u64,
    /// The client gave the offset hint: run on stream time (see the module's comment).
    pub hinted: bool,
}

impl RecognizerConfig {
    /// `offset_ms`: the client's offset hint, if it gave one.
    pub fn from_params(params: &StreamingParams, profile: Profile, offset_ms: Option<u64>) -> Self {
        let u3_style = profile == Profile::U3Pro || params.is_u3();
        // The service's defaults differ per family (protocol.md §2.3).
        let (min_default, max_default) = if u3_style { (100, 1000) } else { (400, 1280) };
        let vad = params.vad_threshold.unwrap_or(0.4);
        Self {
            sample_rate: params.sample_rate,
            profile,
            u3_style,
            format_turns: params.format_turns,
            min_turn_silence_ms: params.min_turn_silence.map_or(min_default, u64::from),
            max_turn_silence_ms: params
                .max_turn_silence
                .map_or(max_default, u64::from)
                .max(params.min_turn_silence.map_or(0, u64::from)),
            threshold_dbfs: -60.0 + 40.0 * vad.clamp(0.0, 1.0),
            offset_ms: offset_ms.unwrap_or(0),
            hinted: offset_ms.is_some(),
        }
    }
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

#[derive(Debug, Default)]
struct TurnState {
    order: u64,
    words: Vec<Word>,
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
        Self {
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

    /// Apply a mid-session `UpdateConfiguration` (silently, as the service does).
    pub fn update(&mut self, update: &UpdateConfiguration) {
        if let Some(v) = update.min_turn_silence {
            self.cfg.min_turn_silence_ms = u64::from(v);
        }
        if let Some(v) = update.max_turn_silence {
            self.cfg.max_turn_silence_ms = u64::from(v);
        }
        if let Some(v) = update.format_turns {
            self.cfg.format_turns = v;
        }
        if let Some(v) = update.vad_threshold {
            self.cfg.threshold_dbfs = -60.0 + 40.0 * v.clamp(0.0, 1.0);
        }
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
        // End the turn after enough silence: min_turn_silence once it is "confident" (two or more
        // words), max_turn_silence otherwise.
        if self.word_start.is_none()
            && let Some(turn) = &self.turn
        {
            let limit = if turn.words.len() >= 2 {
                self.cfg.min_turn_silence_ms
            } else {
                self.cfg.max_turn_silence_ms
            };
            if !turn.words.is_empty() && self.silence_ms >= limit {
                self.end_turn(out);
            }
        }
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
                self.add_word(start, self.now_ms, None, out);
            }
        } else if let Some(start) = self.word_start
            && self.silence_ms >= WORD_GAP_MS
        {
            self.word_start = None;
            let end = self.last_voice_ms.max(start + FRAME_MS);
            self.add_word(start, end, None, out);
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
            if new_turn && self.turn.is_some() {
                self.end_turn(out);
            }
            let offset = self.cfg.offset_ms;
            self.add_word(
                start.saturating_sub(offset),
                end.saturating_sub(offset),
                Some(word.text),
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

    fn add_word(
        &mut self,
        start: u64,
        end: u64,
        text: Option<String>,
        out: &mut Vec<ServerMessage>,
    ) {
        let text = text.unwrap_or_else(|| self.next_list_word(start));
        if self.turn.is_none() {
            let order = self.next_turn_order;
            self.next_turn_order += 1;
            self.turn = Some(TurnState {
                order,
                words: Vec::new(),
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
        out.push(self.partial());
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
            end_of_turn_confidence: 0.05,
            words,
            ..Turn::default()
        })
    }

    /// End the current turn now (ForceEndpoint).
    pub fn force_endpoint(&mut self) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        self.close_open_word(&mut out);
        if self.turn.is_some() {
            self.end_turn(&mut out);
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
            self.add_word(start, end, None, out);
        }
    }

    fn end_turn(&mut self, out: &mut Vec<ServerMessage>) {
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
        let plain = join(&words);
        let formatted_words = format_words(&words);
        let formatted = format_sentence(&plain);
        let base = Turn {
            turn_order: turn.order,
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
                    end_of_turn_confidence: 0.8,
                    words,
                    ..base.clone()
                }));
                out.push(ServerMessage::Turn(Turn {
                    turn_is_formatted: true,
                    transcript: formatted,
                    utterance: Some(String::new()),
                    end_of_turn_confidence: 0.8,
                    words: formatted_words,
                    ..base
                }));
            }
            (true, _) => out.push(ServerMessage::Turn(Turn {
                turn_is_formatted: true,
                transcript: formatted.clone(),
                utterance: Some(formatted),
                end_of_turn_confidence: 0.8,
                words: formatted_words,
                ..base
            })),
            (false, _) => out.push(ServerMessage::Turn(Turn {
                turn_is_formatted: false,
                transcript: plain.clone(),
                utterance: Some(plain),
                end_of_turn_confidence: 0.8,
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

    #[test]
    fn rms_levels() {
        assert!((rms_dbfs(&[i16::MAX; 100]) - 0.0).abs() < 0.01);
        assert!((rms_dbfs(&[0; 100]) + 120.0).abs() < f64::EPSILON);
    }
}
