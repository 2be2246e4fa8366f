//! The finals of a run as its events tell them (a replaced final, a speaker revision, a name),
//! for `/transcript.*` and the captions file; rendered by the transcript's own exports.

use crate::config::TranscriptFormat;
use crate::events::SessionEvent;
use crate::session::streams::Sourced;
use crate::transcript::{FinalTurn, Transcript};

/// What an event did to the turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    No,
    /// A new final.
    Added,
    /// A final already given changed (replaced, revised, named).
    Revised,
}

/// The finals so far, in the order they ended, each with its run: the dashboard starts a new
/// run (generations from 1, stream time from 0) at each start, and keeps the earlier ones.
#[derive(Debug, Default)]
pub struct Turns {
    finals: Vec<(u32, FinalTurn)>,
}

impl Turns {
    /// Apply one of run `run`'s events.
    pub fn apply(&mut self, run: u32, sourced: &Sourced) -> Changed {
        let source = sourced.source.as_ref().map(|l| l.as_str().to_owned());
        let same = |(r, t): &(u32, FinalTurn), generation: u64, order: u64| {
            *r == run && t.source == source && t.generation == generation && t.turn_order == order
        };
        match &sourced.event {
            SessionEvent::Final(turn) => {
                match self
                    .finals
                    .iter_mut()
                    .find(|t| same(t, turn.generation, turn.turn_order))
                {
                    Some((_, known)) => {
                        known.clone_from(turn);
                        Changed::Revised
                    }
                    // A final without words is no caption and no line of the transcript.
                    None if turn.text.trim().is_empty() => Changed::No,
                    None => {
                        self.finals.push((run, turn.clone()));
                        Changed::Added
                    }
                }
            }
            SessionEvent::SpeakerRevision {
                generation,
                turn_order,
                ..
            } => {
                let Some((_, known)) = self
                    .finals
                    .iter_mut()
                    .find(|t| same(t, *generation, *turn_order))
                else {
                    return Changed::No;
                };
                sourced.event.revise(known);
                Changed::Revised
            }
            SessionEvent::SpeakerNamed { speaker, name } => {
                let mut changed = Changed::No;
                for (_, turn) in self.finals.iter_mut().filter(|(r, _)| *r == run) {
                    if turn.source == source
                        && turn.speaker.as_deref() == Some(speaker)
                        && !crate::transcript::is_pending(speaker)
                        && turn.speaker_name.as_deref() != Some(name)
                    {
                        turn.speaker_name = Some(name.clone());
                        changed = Changed::Revised;
                    }
                }
                changed
            }
            _ => Changed::No,
        }
    }

    /// The transcript in `format`, as the exports write it (finals by run, then stream time).
    pub fn render(&self, format: TranscriptFormat) -> String {
        let mut finals = self.finals.clone();
        // Stable: meeting mode's inputs keep their order for turns that start together.
        finals.sort_by_key(|(run, t)| (*run, t.start_ms));
        Transcript::from_finals(finals.into_iter().map(|(_, t)| t).collect())
            .render(format)
            .1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sourced(event: SessionEvent) -> Sourced {
        Sourced {
            index: 0,
            source: None,
            event,
        }
    }

    #[test]
    fn replaced_revised_and_named_finals_are_rendered_as_they_stand() {
        let mut turns = Turns::default();
        let mut first = FinalTurn::sample(1, 0, "hello there", 0, 1000);
        first.speaker = Some("A".into());
        assert_eq!(
            turns.apply(0, &sourced(SessionEvent::Final(first.clone()))),
            Changed::Added
        );
        first.text = "Hello there.".into();
        assert_eq!(
            turns.apply(0, &sourced(SessionEvent::Final(first))),
            Changed::Revised
        );
        assert_eq!(
            turns.apply(
                0,
                &sourced(SessionEvent::SpeakerRevision {
                    generation: 1,
                    turn_order: 0,
                    speaker: Some("B".into()),
                    speaker_name: None,
                    speaker_uncertain: false,
                    words: Vec::new(),
                })
            ),
            Changed::Revised
        );
        assert_eq!(
            turns.apply(
                0,
                &sourced(SessionEvent::SpeakerNamed {
                    speaker: "B".into(),
                    name: "Ben".into(),
                })
            ),
            Changed::Revised
        );
        assert_eq!(
            turns.render(TranscriptFormat::Txt),
            "[00:00:00] Ben: Hello there.\n"
        );
        assert_eq!(
            turns.apply(
                0,
                &sourced(SessionEvent::SpeakerNamed {
                    speaker: "C".into(),
                    name: "Cy".into(),
                })
            ),
            Changed::No
        );
        // The dashboard's next run starts its generations again: its turns are new ones.
        assert_eq!(
            turns.apply(
                1,
                &sourced(SessionEvent::Final(FinalTurn::sample(
                    1, 0, "again", 0, 500
                )))
            ),
            Changed::Added
        );
        assert_eq!(
            turns.render(TranscriptFormat::Txt),
            "[00:00:00] Ben: Hello there.\n[00:00:00] again\n"
        );
    }
}
