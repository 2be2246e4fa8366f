//! The audio ledger of one stream: every captured sample is either sent to a session (counted
//! once, at its first sending; replays do not count again) or reported lost, with a cause. At the
//! end of a run `captured = sent + lost`, to the sample; the supervisor reports what the ledger
//! says and nothing else, so the promise "no audio lost, and when it is, we say exactly how much"
//! is arithmetic rather than hope.
//!
//! Positions are samples on the stream's timeline, which starts at the first captured sample.
//! Samples the capture itself dropped (microphone overruns) never reach the timeline: they are
//! counted as captured and lost at the position where they were dropped.

use crate::events::LossCause;

/// A stretch of audio that will never be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// Timeline position of the first lost sample (for a capture overrun: where it happened).
    pub from: u64,
    /// One past the last lost sample on the timeline (`== from` for a capture overrun).
    pub to: u64,
    /// Samples lost.
    pub samples: u64,
    pub cause: LossCause,
}

/// Counts of one stream, in samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub captured: u64,
    pub sent: u64,
    pub lost: u64,
}

impl Totals {
    /// Whether every captured sample is accounted for.
    pub fn balanced(self) -> bool {
        self.captured == self.sent + self.lost
    }
}

/// The ledger. Invariant: every timeline sample below `settled` was sent or reported lost
/// exactly once; samples from `settled` to `head` are pending (buffered, not yet sent).
#[derive(Debug, Default)]
pub struct Ledger {
    /// Timeline end: samples captured onto the timeline.
    head: u64,
    settled: u64,
    totals: Totals,
}

impl Ledger {
    /// The end of the timeline (one past the newest captured sample).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The first sample neither sent nor reported lost.
    pub fn settled(&self) -> u64 {
        self.settled
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// `samples` more were captured onto the timeline.
    pub fn captured(&mut self, samples: u64) {
        self.head += samples;
        self.totals.captured += samples;
    }

    /// The capture dropped `samples` before the current head: captured and lost at once.
    pub fn overrun(&mut self, samples: u64) -> Option<Loss> {
        (samples > 0).then(|| {
            self.totals.captured += samples;
            self.totals.lost += samples;
            Loss {
                from: self.head,
                to: self.head,
                samples,
                cause: LossCause::CaptureOverrun,
            }
        })
    }

    /// `[from, to)` went to a session. Only samples never sent before count. Sending can only
    /// skip pending samples that are no longer in the replay buffer (the supervisor reports
    /// evictions first, so this does not happen); if it ever did, they are reported lost
    /// rather than left uncounted.
    pub fn sent(&mut self, from: u64, to: u64) -> Option<Loss> {
        let skipped =
            (from > self.settled).then(|| self.lose_to(from, LossCause::ReplayBufferFull));
        if to > self.settled {
            self.totals.sent += to - self.settled.max(from);
            self.settled = to;
        }
        skipped.flatten()
    }

    /// Everything pending before `to` will never be sent (evicted from the replay buffer).
    pub fn evicted(&mut self, to: u64) -> Option<Loss> {
        self.lose_to(to, LossCause::ReplayBufferFull)
    }

    /// Everything still pending will never be sent, for `cause`.
    pub fn abandon(&mut self, cause: LossCause) -> Option<Loss> {
        self.lose_to(self.head, cause)
    }

    fn lose_to(&mut self, to: u64, cause: LossCause) -> Option<Loss> {
        let to = to.min(self.head);
        (to > self.settled).then(|| {
            let loss = Loss {
                from: self.settled,
                to,
                samples: to - self.settled,
                cause,
            };
            self.totals.lost += loss.samples;
            self.settled = to;
            loss
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sends_count_once_and_replays_not_at_all() {
        let mut l = Ledger::default();
        l.captured(800);
        l.captured(800);
        assert_eq!(l.sent(0, 800), None);
        assert_eq!(l.sent(800, 1600), None);
        // A replay of what was sent.
        assert_eq!(l.sent(0, 800), None);
        assert_eq!(l.sent(0, 1600), None);
        assert_eq!(
            l.totals(),
            Totals {
                captured: 1600,
                sent: 1600,
                lost: 0
            }
        );
        assert!(l.totals().balanced());
    }

    #[test]
    fn a_replay_that_reaches_new_audio_counts_only_the_new_part() {
        let mut l = Ledger::default();
        l.captured(2400);
        l.sent(0, 800);
        l.sent(400, 1600);
        assert_eq!(l.totals().sent, 1600);
        assert_eq!(l.settled(), 1600);
    }

    #[test]
    fn evictions_and_abandonment_report_exactly_the_unsent_samples() {
        let mut l = Ledger::default();
        l.captured(4000);
        l.sent(0, 800);
        let evicted = l.evicted(2400).expect("loss");
        assert_eq!(
            evicted,
            Loss {
                from: 800,
                to: 2400,
                samples: 1600,
                cause: LossCause::ReplayBufferFull
            }
        );
        // Evicting what is already settled reports nothing.
        assert_eq!(l.evicted(2000), None);
        l.sent(2400, 3200);
        let rest = l.abandon(LossCause::Stopped).expect("rest");
        assert_eq!((rest.from, rest.to, rest.samples), (3200, 4000, 800));
        assert_eq!(l.abandon(LossCause::Stopped), None);
        let t = l.totals();
        assert_eq!((t.captured, t.sent, t.lost), (4000, 1600, 2400));
        assert!(t.balanced());
    }

    #[test]
    fn overruns_are_captured_and_lost_where_they_happened() {
        let mut l = Ledger::default();
        l.captured(800);
        let loss = l.overrun(160).expect("loss");
        assert_eq!((loss.from, loss.to, loss.samples), (800, 800, 160));
        assert_eq!(loss.cause, LossCause::CaptureOverrun);
        assert_eq!(l.overrun(0), None);
        l.captured(800);
        l.sent(0, 1600);
        let t = l.totals();
        assert_eq!((t.captured, t.sent, t.lost), (1760, 1600, 160));
        assert!(t.balanced());
    }

    #[test]
    fn a_send_past_unsettled_audio_reports_the_skipped_part() {
        let mut l = Ledger::default();
        l.captured(2400);
        let skipped = l.sent(1600, 2400).expect("skipped");
        assert_eq!((skipped.from, skipped.to), (0, 1600));
        assert!(l.totals().balanced());
    }
}
