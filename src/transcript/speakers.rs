//! Speakers across sessions. Diarization labels people per session, in order of first
//! appearance: after a rotation or a reconnect the service's "A" may be someone else. The run
//! keeps the first labelled session's labels; every later session's labels are mapped onto
//! them by the words both sessions labelled — the supervisor feeds a new session a few seconds
//! of audio that is already transcribed (its *priming*), and each word the new session labels
//! there votes, by how long it overlaps an earlier final's word, for that word's run label.
//!
//! A label whose votes agree (at least two thirds of its overlap, and no other label of the
//! session claiming the same person more strongly) is mapped. Any other is *uncertain*: no
//! votes (the person did not speak in the priming), split votes, or a person another label took.
//! Uncertain labels are never guessed silently: the turn is marked, and one notice per label and
//! session says so. Labels that say nothing about who spoke (`PENDING`, `UNKNOWN`) pass through.
//!
//! Pure bookkeeping, apart from I/O: the transcript owns one per stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{AbsWord, FinalTurn, is_pending};

/// A share of the overlap a label needs for its mapping to be taken as known.
const AGREEMENT: f64 = 2.0 / 3.0;

/// A session's label, as the run calls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The run's label (the service's own for the first labelled session).
    pub label: String,
    /// Could not be matched to an earlier speaker with confidence.
    pub uncertain: bool,
}

/// Why a session's label could not be matched (one notice per label and session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    pub generation: u64,
    /// The service's label in that session.
    pub session_label: String,
    /// What the run calls them from now on (marked uncertain).
    pub label: String,
    /// The earlier speaker the votes leaned to, when there were votes.
    pub leaning: Option<String>,
}

#[derive(Debug, Default)]
struct Session {
    /// Overlap (ms) of this session's labels with the run's labels, from its priming.
    votes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Decided mappings (fixed once decided: a person's turns keep one label).
    decided: HashMap<String, Resolved>,
    /// This session began before any labelled final: its labels are the run's.
    first: bool,
}

/// The mapping of every session's labels onto the run's.
#[derive(Debug, Default)]
pub struct Continuity {
    sessions: HashMap<u64, Session>,
    /// Every run label given so far.
    used: BTreeSet<String>,
    notices: Vec<Unmatched>,
}

impl Continuity {
    /// The words of `generation` that fell in its priming (stream times), labelled by that
    /// session: each votes for the run label of the earlier finals' words it overlaps.
    pub fn prime(&mut self, generation: u64, words: &[AbsWord], earlier: &[FinalTurn]) {
        let session = self.session(generation, earlier);
        for word in words {
            let Some(label) = word.speaker.as_deref().filter(|l| !is_pending(l)) else {
                continue;
            };
            for turn in earlier.iter().filter(|t| t.generation != generation) {
                if turn.end_ms <= word.start_ms || turn.start_ms >= word.end_ms {
                    continue;
                }
                for theirs in &turn.words {
                    let Some(run_label) = theirs
                        .speaker
                        .as_deref()
                        .or(turn.speaker.as_deref())
                        .filter(|l| !is_pending(l))
                    else {
                        continue;
                    };
                    let overlap = word
                        .end_ms
                        .min(theirs.end_ms)
                        .saturating_sub(word.start_ms.max(theirs.start_ms));
                    if overlap > 0 {
                        *session
                            .votes
                            .entry(label.to_owned())
                            .or_default()
                            .entry(run_label.to_owned())
                            .or_default() += overlap;
                    }
                }
            }
        }
    }

    /// What the run calls `label` of session `generation`; `earlier` are the run's finals so
    /// far (a session that begins before any labelled final keeps its labels).
    pub fn resolve(&mut self, generation: u64, label: &str, earlier: &[FinalTurn]) -> Resolved {
        if is_pending(label) {
            return Resolved {
                label: label.to_owned(),
                uncertain: false,
            };
        }
        self.session(generation, earlier);
        if let Some(known) = self.sessions[&generation].decided.get(label) {
            return known.clone();
        }
        let resolved = self.decide(generation, label, earlier);
        self.used.insert(resolved.label.clone());
        self.sessions
            .get_mut(&generation)
            .expect("created above")
            .decided
            .insert(label.to_owned(), resolved.clone());
        resolved
    }

    /// Notices of labels that could not be matched, since the last call.
    pub fn take_notices(&mut self) -> Vec<Unmatched> {
        std::mem::take(&mut self.notices)
    }

    fn session(&mut self, generation: u64, earlier: &[FinalTurn]) -> &mut Session {
        self.sessions.entry(generation).or_insert_with(|| Session {
            first: !earlier.iter().any(|t| {
                t.generation != generation && t.speaker.as_deref().is_some_and(|s| !is_pending(s))
            }),
            ..Session::default()
        })
    }

    fn decide(&mut self, generation: u64, label: &str, earlier: &[FinalTurn]) -> Resolved {
        // Labels the run has given, also before this bookkeeping saw them (a restored run).
        self.used
            .extend(earlier.iter().filter_map(|t| t.speaker.clone()));
        let session = &self.sessions[&generation];
        if session.first {
            return Resolved {
                label: label.to_owned(),
                uncertain: false,
            };
        }
        let taken: BTreeSet<&str> = session.decided.values().map(|r| r.label.as_str()).collect();
        let leaning = session.votes.get(label).and_then(|votes| {
            let total: u64 = votes.values().sum();
            let (best, ms) = votes.iter().max_by_key(|(_, ms)| **ms)?;
            Some((best.clone(), *ms, total))
        });
        if let Some((best, ms, total)) = &leaning {
            // Agreed, free, and no other label of this session leans to the same person more.
            let agreed = *ms as f64 >= AGREEMENT * *total as f64;
            let rival = session.votes.iter().any(|(other, votes)| {
                other != label && votes.get(best).is_some_and(|theirs| theirs > ms)
            });
            if agreed && !rival && !taken.contains(best.as_str()) {
                return Resolved {
                    label: best.clone(),
                    uncertain: false,
                };
            }
        }
        // Uncertain: keep the service's label when no one else of this session has it, else a
        // label the run has never used, so two people never share one.
        let label_for_run = if taken.contains(label) {
            fresh(&self.used, &taken)
        } else {
            label.to_owned()
        };
        self.notices.push(Unmatched {
            generation,
            session_label: label.to_owned(),
            label: label_for_run.clone(),
            leaning: leaning.map(|(best, _, _)| best),
        });
        Resolved {
            label: label_for_run,
            uncertain: true,
        }
    }
}

/// The first of A…Z, then S27, S28…, neither used by the run nor taken in this session.
fn fresh(used: &BTreeSet<String>, taken: &BTreeSet<&str>) -> String {
    // More candidates than labels the run can have given, so one is always free.
    let candidates = used.len() + taken.len() + 1;
    (b'A'..=b'Z')
        .map(|c| char::from(c).to_string())
        .chain((27..=27 + candidates).map(|n| format!("S{n}")))
        .find(|l| !used.contains(l) && !taken.contains(l.as_str()))
        .unwrap_or_else(|| format!("S{}", 28 + candidates))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, start_ms: u64, end_ms: u64, speaker: &str) -> AbsWord {
        AbsWord {
            text: text.into(),
            start_ms,
            end_ms,
            confidence: 0.9,
            speaker: Some(speaker.into()),
        }
    }

    fn final_of(generation: u64, order: u64, words: Vec<AbsWord>) -> FinalTurn {
        FinalTurn {
            generation,
            turn_order: order,
            start_ms: words.first().map_or(0, |w| w.start_ms),
            end_ms: words.last().map_or(0, |w| w.end_ms),
            speaker: words.first().and_then(|w| w.speaker.clone()),
            words,
            ..FinalTurn::default()
        }
    }

    /// Session 1 heard ben (A) then ana (B).
    fn earlier() -> Vec<FinalTurn> {
        vec![
            final_of(
                1,
                0,
                vec![word("hi", 0, 500, "A"), word("ana", 700, 1200, "A")],
            ),
            final_of(
                1,
                1,
                vec![word("hello", 2000, 2500, "B"), word("ben", 2800, 3300, "B")],
            ),
        ]
    }

    #[test]
    fn the_first_labelled_session_keeps_its_labels() {
        let mut c = Continuity::default();
        let r = c.resolve(1, "A", &[]);
        assert_eq!((r.label.as_str(), r.uncertain), ("A", false));
        assert!(c.take_notices().is_empty());
    }

    #[test]
    fn a_successor_that_swapped_labels_is_mapped_back_by_the_words_both_labelled() {
        let run = earlier();
        let mut c = Continuity::default();
        // Session 2 was primed from 700 ms: it heard ana first, so it calls her A and ben B.
        c.prime(
            2,
            &[
                word("ana", 700, 1200, "B"),
                word("hello", 2000, 2500, "A"),
                word("ben", 2800, 3300, "A"),
            ],
            &run,
        );
        let a = c.resolve(2, "A", &run);
        let b = c.resolve(2, "B", &run);
        assert_eq!((a.label.as_str(), a.uncertain), ("B", false));
        assert_eq!((b.label.as_str(), b.uncertain), ("A", false));
        assert!(c.take_notices().is_empty());
        // Fixed once decided.
        assert_eq!(c.resolve(2, "A", &run).label, "B");
    }

    #[test]
    fn a_speaker_absent_from_the_priming_is_marked_never_guessed() {
        let run = earlier();
        let mut c = Continuity::default();
        // Session 2 heard only ana in its priming (its A), then a new voice it calls B — the
        // run's B is ana, so that voice gets a label of its own, marked.
        c.prime(2, &[word("hello", 2000, 2500, "A")], &run);
        assert_eq!(c.resolve(2, "A", &run).label, "B");
        let other = c.resolve(2, "B", &run);
        assert!(other.uncertain);
        assert_eq!(other.label, "C", "never the label of someone else");
        let notices = c.take_notices();
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].session_label, "B");
        assert_eq!(notices[0].leaning, None);
        assert!(
            c.take_notices().is_empty(),
            "one notice per label and session"
        );
    }

    #[test]
    fn split_votes_are_ambiguous() {
        let run = earlier();
        let mut c = Continuity::default();
        // Session 2 put both people's words under A.
        c.prime(
            2,
            &[word("ana", 700, 1200, "A"), word("hello", 2000, 2500, "A")],
            &run,
        );
        let r = c.resolve(2, "A", &run);
        assert!(r.uncertain);
        assert_eq!(
            r.label, "A",
            "the service's label while it clashes with no one"
        );
        assert!(c.take_notices()[0].leaning.is_some());
    }

    #[test]
    fn pending_labels_pass_through_and_never_vote() {
        let run = earlier();
        let mut c = Continuity::default();
        c.prime(2, &[word("ana", 700, 1200, "PENDING")], &run);
        let r = c.resolve(2, "PENDING", &run);
        assert_eq!((r.label.as_str(), r.uncertain), ("PENDING", false));
        assert!(c.take_notices().is_empty());
    }

    #[test]
    fn fresh_labels_skip_every_used_one() {
        let used: BTreeSet<String> = (b'A'..=b'Z').map(|c| char::from(c).to_string()).collect();
        assert_eq!(fresh(&used, &BTreeSet::new()), "S27");
    }
}
