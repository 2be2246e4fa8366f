//! The streams of one run: one supervisor per input, each with its own token, sessions,
//! rotation, replay buffer and ledger (a fault in one never touches another), sharing the
//! account ([`super::account`]), and one merged account of what happened — every event tagged
//! with its input's label, echoes marked, one `finished` whose totals add up per input.
//!
//! With one unlabelled input this is exactly one supervisor and its events, unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::{AccountSeat, AudioFeed, Outcome, SessionCommand, SupervisorOptions};
use crate::config::Label;
use crate::events::SessionEvent;
use crate::provider::PreMinter;
use crate::transcript::Transcript;
use crate::transcript::echo::EchoWatch;

/// One input's part of a run.
pub struct StreamSetup {
    pub label: Option<Label>,
    pub premint: Arc<PreMinter>,
    pub feed: AudioFeed,
    /// The input is a microphone: its turns are the echoes (see `transcript::echo`), and mute
    /// applies to it.
    pub mic: bool,
}

/// An event and the input it is about (`None`: the single unlabelled input, or the run).
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced {
    /// The input's index among the run's streams.
    pub index: usize,
    pub source: Option<Label>,
    pub event: SessionEvent,
}

impl Sourced {
    /// One NDJSON line: the event with `source` when it has one, and `ts_ms`.
    pub fn to_line_at(&self, at: std::time::SystemTime) -> String {
        self.event
            .to_line_sourced(self.source.as_ref().map(Label::as_str), at)
    }
}

/// One input's totals in the run's `finished` (`sources`): they add up to the run's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceTotals {
    pub audio_captured_samples: u64,
    pub audio_sent_samples: u64,
    pub audio_lost_samples: u64,
    pub finals: usize,
    pub rotations: u32,
    pub reconnects: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The running streams.
pub struct Streams {
    labels: Vec<Option<Label>>,
    mics: Vec<bool>,
    commands: Vec<mpsc::UnboundedSender<SessionCommand>>,
    /// Every stream's events, with the index of its stream; closes when all have ended.
    pub events: mpsc::UnboundedReceiver<(usize, SessionEvent)>,
    tasks: Vec<tokio::task::JoinHandle<(Outcome, Transcript)>>,
    echo: EchoWatch,
    /// Each stream's own `finished`, held back when there are several (the run's comes last).
    finished: Vec<Option<SessionEvent>>,
    sample_rate: u32,
}

/// Spawn one supervisor per part (each waits for [`SessionCommand::Start`]). `transcript` is
/// the run's (its journal); with labels, each stream writes to it through its own view.
pub fn spawn(
    options: &SupervisorOptions,
    transcript: Transcript,
    parts: Vec<StreamSetup>,
) -> Streams {
    let several = parts.len() > 1 || parts.iter().any(|p| p.label.is_some());
    let account = several.then(|| Arc::new(super::Account::new(parts.len())));
    let (tx, events) = mpsc::unbounded_channel();
    let mut streams = Streams {
        labels: Vec::new(),
        mics: Vec::new(),
        commands: Vec::new(),
        events,
        tasks: Vec::new(),
        echo: EchoWatch::default(),
        finished: Vec::new(),
        sample_rate: options.params.sample_rate,
    };
    let mut transcript = Some(transcript);
    for (index, part) in parts.into_iter().enumerate() {
        let mut opts = options.clone();
        opts.seed = opts.seed.wrapping_add(index as u64);
        opts.account = account.as_ref().map(|account| AccountSeat {
            account: Arc::clone(account),
            index,
        });
        let own = match (&part.label, &transcript) {
            (Some(label), Some(run)) => run.for_source(label),
            _ => transcript.take().unwrap_or_default(),
        };
        let handle = super::spawn(opts, part.premint, own, part.feed);
        let forward = tx.clone();
        let mut events = handle.events;
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if forward.send((index, event)).is_err() {
                    break;
                }
            }
        });
        streams.labels.push(part.label);
        streams.mics.push(part.mic);
        streams.commands.push(handle.commands);
        streams.tasks.push(handle.task);
        streams.finished.push(None);
    }
    streams
}

impl Streams {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// More than one stream, or a labelled one: events carry `source`, `finished` is the run's.
    pub fn labelled(&self) -> bool {
        self.labels.iter().any(Option::is_some)
    }

    pub fn label(&self, index: usize) -> Option<&Label> {
        self.labels.get(index).and_then(Option::as_ref)
    }

    /// Stop every stream at once (leaving): no Terminate, no waiting.
    pub fn abort(&self) {
        self.send_all(&SessionCommand::Stop);
        for task in &self.tasks {
            task.abort();
        }
    }

    /// The index of input `label`.
    pub fn index_of(&self, label: &str) -> Option<usize> {
        self.labels
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.as_str() == label))
    }

    /// Send `command` to stream `index`.
    pub fn send_to(&self, index: usize, command: &SessionCommand) {
        if let Some(tx) = self.commands.get(index) {
            let _ = tx.send(command.clone());
        }
    }

    /// Send `command` to every stream.
    pub fn send_all(&self, command: &SessionCommand) {
        for tx in &self.commands {
            let _ = tx.send(command.clone());
        }
    }

    /// Mute or unmute the microphones (every input when none is one: a single file input
    /// mutes as before).
    pub fn set_muted(&self, muted: bool) {
        for (tx, mutes) in self.commands.iter().zip(muted_by_mute(&self.mics)) {
            if mutes {
                let _ = tx.send(SessionCommand::SetMuted(muted));
            }
        }
    }

    /// What stream `index`'s event means for the run's report: itself, tagged with the
    /// input's label — a final also compared with the other inputs' for echoes (a marked one
    /// is reported again, marked) — and, when there are several streams, a stream's own
    /// `finished` held back for [`Streams::finish`].
    pub fn on_event(&mut self, index: usize, event: SessionEvent) -> Vec<Sourced> {
        let source = self.label(index).cloned();
        let mut out = Vec::new();
        match event {
            SessionEvent::Finished { .. } if self.labelled() => {
                if let Some(slot) = self.finished.get_mut(index) {
                    *slot = Some(event);
                }
            }
            SessionEvent::Final(turn) if self.len() > 1 => {
                let mic = self.mics.get(index).copied().unwrap_or(false);
                let marks = self.echo.push(index, mic, &turn);
                let this_is_echo = marks.iter().any(|m| {
                    m.input == index
                        && m.generation == turn.generation
                        && m.turn_order == turn.turn_order
                });
                let mut shown = turn.clone();
                shown.echo = this_is_echo;
                out.push(Sourced {
                    index,
                    source: source.clone(),
                    event: SessionEvent::Final(shown),
                });
                for mark in marks.iter().filter(|m| m.input != index) {
                    if let Some(mut earlier) = self.echo.turn(mark) {
                        earlier.echo = true;
                        out.push(Sourced {
                            index: mark.input,
                            source: self.label(mark.input).cloned(),
                            event: SessionEvent::Final(earlier),
                        });
                    }
                }
            }
            event => out.push(Sourced {
                index,
                source,
                event,
            }),
        }
        out
    }

    /// Wait for every stream to end. Returns each stream's outcome and the run's transcript:
    /// the streams' finals merged by stream time, the echoes marked. A stream whose task
    /// vanished (it catches its own panics; a last resort) is an `Err` with its label.
    pub async fn finish(self) -> Finished {
        let mut outcomes = Vec::new();
        let mut parts = Vec::new();
        let mut vanished = Vec::new();
        for (index, task) in self.tasks.into_iter().enumerate() {
            match task.await {
                Ok((outcome, transcript)) => {
                    outcomes.push(outcome);
                    parts.push(transcript);
                }
                Err(join) => {
                    vanished.push((self.labels[index].clone(), join.to_string()));
                    outcomes.push(Outcome {
                        failure: Some(crate::failure::Failure::internal(crate::strings::crashed(
                            &join.to_string(),
                        ))),
                        ..Outcome::default()
                    });
                }
            }
        }
        let mut transcript = if parts.len() == 1 && !self.labels.iter().any(Option::is_some) {
            parts.pop().unwrap_or_default()
        } else {
            Transcript::merged(parts)
        };
        for mark in self.echo.marks() {
            transcript.mark_echo(mark.generation, mark.turn_order);
        }
        Finished {
            labels: self.labels,
            outcomes,
            own: self.finished,
            transcript,
            vanished,
            sample_rate: self.sample_rate,
        }
    }
}

/// How the run's streams ended.
pub struct Finished {
    pub labels: Vec<Option<Label>>,
    pub outcomes: Vec<Outcome>,
    /// Each stream's own `finished` event (kept back when there were several).
    own: Vec<Option<SessionEvent>>,
    pub transcript: Transcript,
    /// Streams whose task vanished: their label and why.
    pub vanished: Vec<(Option<Label>, String)>,
    sample_rate: u32,
}

impl Finished {
    /// Each input's audio archive (`--archive`): its label (`input` unlabelled) → the path.
    pub fn archive(&self) -> Option<BTreeMap<String, String>> {
        let map: BTreeMap<String, String> = self
            .labels
            .iter()
            .zip(&self.outcomes)
            .filter_map(|(label, outcome)| {
                let path = outcome.archive.as_ref()?;
                let name = label.as_ref().map_or("input", Label::as_str).to_owned();
                Some((name, super::supervisor::absolute(path)))
            })
            .collect();
        (!map.is_empty()).then_some(map)
    }

    /// The run's exit status: 1 when any stream failed, else 3 when any lost audio, else 0.
    pub fn exit_code(&self) -> i32 {
        self.outcomes
            .iter()
            .map(Outcome::exit_code)
            .max_by_key(|code| match code {
                1 => 2,
                3 => 1,
                _ => 0,
            })
            .unwrap_or(0)
    }

    /// The run's `finished` event for several streams: the totals, the latency over every
    /// final, the first failure (named by its input), and `sources` with each input's totals.
    /// `None` with one unlabelled stream (its own `finished` was reported as it came).
    pub fn run_event(&self) -> Option<(SessionEvent, BTreeMap<String, SourceTotals>)> {
        if !self.labels.iter().any(Option::is_some) {
            return None;
        }
        let mut sources = BTreeMap::new();
        let mut failure = None;
        for ((label, outcome), own) in self.labels.iter().zip(&self.outcomes).zip(&self.own) {
            let name = label.as_ref().map_or("input", Label::as_str).to_owned();
            let finals = match own {
                Some(SessionEvent::Finished { finals, .. }) => *finals,
                _ => 0,
            };
            let failed = outcome.failure.as_ref().map(crate::strings::failure);
            if failure.is_none()
                && let Some(f) = &outcome.failure
            {
                failure = Some((
                    format!("{name}: {}", crate::strings::failure(f)),
                    f.explain(),
                ));
            }
            sources.insert(
                name,
                SourceTotals {
                    audio_captured_samples: outcome.audio.captured,
                    audio_sent_samples: outcome.audio.sent,
                    audio_lost_samples: outcome.audio.lost,
                    finals,
                    rotations: outcome.rotations,
                    reconnects: outcome.reconnects,
                    failure: failed,
                },
            );
        }
        let sum = |f: fn(&SourceTotals) -> u64| sources.values().map(f).sum::<u64>();
        let latencies: Vec<u64> = self
            .transcript
            .finals()
            .iter()
            .filter_map(|t| t.latency_ms)
            .collect();
        let (p50, p95) = super::supervisor::percentiles(&latencies);
        let lost = sum(|s| s.audio_lost_samples);
        let rate = u64::from(self.sample_rate);
        let event = SessionEvent::Finished {
            finals: sources.values().map(|s| s.finals).sum(),
            rotations: sources.values().map(|s| s.rotations).sum(),
            reconnects: sources.values().map(|s| s.reconnects).sum(),
            audio_captured_samples: sum(|s| s.audio_captured_samples),
            audio_sent_samples: sum(|s| s.audio_sent_samples),
            audio_lost_samples: lost,
            audio_lost_ms: lost.saturating_mul(1000) / rate.max(1),
            latency_p50_ms: p50,
            latency_p95_ms: p95,
            explain: failure.as_ref().map(|(_, explain)| *explain),
            failure: failure.map(|(text, _)| text),
            archive: self.archive(),
        };
        Some((event, sources))
    }
}

/// Which inputs the mute key acts on, given which are microphones: the microphones (the far
/// side of a meeting is not ours to mute), or every input when none is one (a single file input
/// mutes as it always did).
fn muted_by_mute(mics: &[bool]) -> Vec<bool> {
    let any_mic = mics.iter().any(|m| *m);
    mics.iter().map(|mic| *mic || !any_mic).collect()
}

#[cfg(test)]
mod tests {
    use super::muted_by_mute;

    #[test]
    fn mute_acts_on_the_microphones_only_or_on_everything_without_one() {
        assert_eq!(
            muted_by_mute(&[true, false]),
            [true, false],
            "you=mic, them=monitor"
        );
        assert_eq!(muted_by_mute(&[false, true, true]), [false, true, true]);
        assert_eq!(muted_by_mute(&[false]), [true], "a single file input");
        assert_eq!(muted_by_mute(&[false, false]), [true, true], "two files");
    }
}
