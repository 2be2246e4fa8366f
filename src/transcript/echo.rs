//! Echo between the inputs of a meeting: when the far side plays on speakers, the microphone
//! hears it too, and both streams transcribe the same words. Such a turn is *marked*
//! (`echo: true`: dimmed on screen, labelled in exports), never dropped — the rule can be wrong,
//! and a transcript must not lose what somebody said.
//!
//! The rule: a turn is an echo of another input's turn when that turn started within
//! [`WINDOW_MS`] of it and at least [`SHARE`] of its words are found, in order, among that
//! turn's words (compared without case or punctuation). Of the two, the microphone's turn is the
//! echo (the speakers are where the words came from); between two inputs of the same kind, the
//! later one.

use std::collections::VecDeque;

use super::FinalTurn;

/// Turns starting this far apart (stream time) are never echoes of each other.
pub const WINDOW_MS: u64 = 1500;
/// The share of a turn's words that must be found in the other turn.
pub const SHARE: f64 = 0.8;
/// Finals kept for comparison: a later turn may echo one up to this far back in stream time.
const KEEP_MS: u64 = 30_000;

/// Whether `turn` echoes `of` (see the module's rule).
pub fn echoes(turn: &FinalTurn, of: &FinalTurn) -> bool {
    if turn.start_ms.abs_diff(of.start_ms) > WINDOW_MS {
        return false;
    }
    let mine = words(turn);
    if mine.is_empty() {
        return false;
    }
    let theirs = words(of);
    let common = common_in_order(&mine, &theirs);
    common as f64 >= SHARE * mine.len() as f64
}

/// The words of a turn, lower case, punctuation removed.
fn words(turn: &FinalTurn) -> Vec<String> {
    turn.text
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The longest common subsequence's length (turns are short: O(n·m) is fine, and bounded).
fn common_in_order(a: &[String], b: &[String]) -> usize {
    // Server text is untrusted: cap the work for absurdly long turns.
    let (a, b) = (&a[..a.len().min(512)], &b[..b.len().min(512)]);
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// One final as the watch keeps it: which input, whether that input is a microphone.
#[derive(Debug, Clone)]
struct Seen {
    input: usize,
    mic: bool,
    turn: FinalTurn,
}

/// The recent finals of every input of a run, compared as each new one arrives.
#[derive(Debug, Default)]
pub struct EchoWatch {
    recent: VecDeque<Seen>,
    /// Every final marked so far (for the run's transcript at its end).
    marked: Vec<Echo>,
}

/// A final to mark as an echo: its input (index) and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub input: usize,
    pub generation: u64,
    pub turn_order: u64,
}

impl EchoWatch {
    /// A final of input `input` (`mic`: that input is a microphone) arrived: the finals to mark
    /// now — this one, or an earlier one of another input it proves to be an echo.
    pub fn push(&mut self, input: usize, mic: bool, turn: &FinalTurn) -> Vec<Echo> {
        let mut marks = Vec::new();
        let key = |s: &Seen| Echo {
            input: s.input,
            generation: s.turn.generation,
            turn_order: s.turn.turn_order,
        };
        let new = Seen {
            input,
            mic,
            turn: turn.clone(),
        };
        for old in self
            .recent
            .iter()
            .filter(|s| s.input != input && !s.turn.echo)
        {
            // The microphone's turn is the echo; of two of a kind, the newer one.
            let (echo, source) = if old.mic && !mic {
                (old, &new)
            } else {
                (&new, old)
            };
            if echoes(&echo.turn, &source.turn) {
                marks.push(key(echo));
                break;
            }
        }
        for mark in &marks {
            if let Some(s) = self.recent.iter_mut().find(|s| key(s) == *mark) {
                s.turn.echo = true;
            }
        }
        let mut new = new;
        new.turn.echo = marks.contains(&key(&new));
        self.recent.push_back(new);
        self.marked.extend(&marks);
        let newest = self
            .recent
            .iter()
            .map(|s| s.turn.start_ms)
            .max()
            .unwrap_or(0);
        while self
            .recent
            .front()
            .is_some_and(|s| newest.saturating_sub(s.turn.start_ms) > KEEP_MS)
            || self.recent.len() > 256
        {
            self.recent.pop_front();
        }
        marks
    }

    /// A final still kept, by its mark (to report it again, marked).
    pub fn turn(&self, mark: &Echo) -> Option<FinalTurn> {
        self.recent
            .iter()
            .find(|s| {
                s.input == mark.input
                    && s.turn.generation == mark.generation
                    && s.turn.turn_order == mark.turn_order
            })
            .map(|s| s.turn.clone())
    }

    /// Every final marked so far.
    pub fn marks(&self) -> &[Echo] {
        &self.marked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn turn(generation: u64, start_ms: u64, text: &str) -> FinalTurn {
        FinalTurn::sample(generation, 0, text, start_ms, start_ms + 1000)
    }

    #[test]
    fn eighty_percent_of_the_words_within_a_second_and_a_half() {
        let heard = turn(1, 10_000, "Can you hear me at the back of the room?");
        // Four of five words, 1.2 s later: an echo.
        assert!(echoes(&turn(2, 11_200, "hear me at the, um"), &heard));
        assert!(echoes(
            &turn(2, 8_600, "Can you hear me at the back of the room"),
            &heard
        ));
        // Too late, or too few shared words.
        assert!(!echoes(&turn(2, 11_600, "can you hear me"), &heard));
        assert!(!echoes(&turn(2, 10_000, "yes I can hear you fine"), &heard));
        // Order counts: the same words shuffled are not the same speech.
        assert!(!echoes(
            &turn(2, 10_000, "room the of back the at me hear you can"),
            &heard
        ));
        assert!(!echoes(&turn(2, 10_000, "..."), &heard));
    }

    #[test]
    fn the_microphone_turn_is_marked_whichever_comes_first() {
        let said = "the quarterly numbers are in the shared folder";
        // The monitor's final first, then the microphone's: the microphone's is marked.
        let mut watch = EchoWatch::default();
        assert!(watch.push(1, false, &turn(1, 5_000, said)).is_empty());
        let mic_turn = [Echo {
            input: 0,
            generation: 2,
            turn_order: 0,
        }];
        assert_eq!(watch.push(0, true, &turn(2, 5_300, said)), mic_turn);

        // The microphone's final first: it is marked when the monitor's arrives.
        let mut watch = EchoWatch::default();
        assert!(watch.push(0, true, &turn(2, 5_300, said)).is_empty());
        assert_eq!(watch.push(1, false, &turn(1, 5_000, said)), mic_turn);
        // Marked once only.
        assert!(watch.push(1, false, &turn(3, 5_100, said)).is_empty());

        // Two microphones: the newer turn is the echo. The same input never echoes itself.
        let mut watch = EchoWatch::default();
        assert!(watch.push(0, true, &turn(1, 0, said)).is_empty());
        assert!(watch.push(0, true, &turn(2, 100, said)).is_empty());
        assert_eq!(
            watch.push(1, true, &turn(3, 200, said)),
            [Echo {
                input: 1,
                generation: 3,
                turn_order: 0
            }]
        );
    }

    proptest! {
        // Server text is untrusted: any pair of texts is compared without a panic, in bounded
        // time, and a turn always echoes itself unless it has no words.
        #[test]
        fn any_text(a in "\\PC{0,300}", b in "\\PC{0,300}") {
            let (x, y) = (turn(1, 0, &a), turn(2, 0, &b));
            let _ = echoes(&x, &y);
            prop_assert_eq!(echoes(&x, &x), !words(&x).is_empty());
        }
    }
}
