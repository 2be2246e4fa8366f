//! The account the streams of one run share (meeting mode). The service limits *new sessions
//! per minute* per account (close 3009; legacy 1008 "Too many concurrent sessions"; 5 a minute
//! on the free tier), so two streams draw twice from one budget: at the start, and at every
//! rotation. Two things follow, both here:
//!
//! - every stream's mints count in each stream's mint budget (the machine's circuit,
//!   [`super::machine::Input::PeerMinted`]), so the account as a whole never storms;
//! - rotations are staggered: a stream planning its rotation within [`STAGGER`] of another
//!   stream's moves it earlier — never before half its session (the rotation rule's floor), so
//!   short sessions simply rotate where they can.
//!
//! A refused stream backs off alone (its machine's own backoff); the others go on.

use std::sync::Mutex;

use tokio::sync::broadcast;
use tokio::time::{Duration, Instant};

/// Two streams' rotations are kept at least this far apart.
pub const STAGGER: Duration = Duration::from_secs(10);

/// The shared state of one run's streams.
#[derive(Debug)]
pub struct Account {
    /// Which stream minted (its index), for the others' budgets.
    mints: broadcast::Sender<usize>,
    /// Each stream's next planned rotation.
    planned: Mutex<Vec<Option<Instant>>>,
}

impl Account {
    pub fn new(streams: usize) -> Self {
        Self {
            mints: broadcast::channel(64).0,
            planned: Mutex::new(vec![None; streams]),
        }
    }

    pub fn streams(&self) -> usize {
        self.planned.lock().map_or(0, |p| p.len())
    }

    /// Stream `index` minted.
    pub fn minted(&self, index: usize) {
        let _ = self.mints.send(index);
    }

    /// Every stream's mints from now on (each stream skips its own).
    pub fn subscribe(&self) -> broadcast::Receiver<usize> {
        self.mints.subscribe()
    }

    /// Stream `index` plans its rotation at `at`, not before `floor`: the time it should use —
    /// `at`, or earlier to keep [`STAGGER`] from every other stream's planned rotation when
    /// that is possible without going below `floor`.
    pub fn plan_rotation(&self, index: usize, at: Instant, floor: Instant) -> Instant {
        let Ok(mut planned) = self.planned.lock() else {
            return at;
        };
        let others: Vec<Instant> = planned
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .filter_map(|(_, t)| *t)
            .collect();
        let chosen = stagger(at, floor, &others);
        if let Some(slot) = planned.get_mut(index) {
            *slot = Some(chosen);
        }
        chosen
    }

    /// Stream `index` has no rotation planned any more (stopped, failed, lost).
    pub fn forget(&self, index: usize) {
        if let Ok(mut planned) = self.planned.lock()
            && let Some(slot) = planned.get_mut(index)
        {
            *slot = None;
        }
    }
}

/// The latest time not after `at` and not before `floor` that is at least [`STAGGER`] from
/// every one of `others`; `at` itself when there is none.
fn stagger(at: Instant, floor: Instant, others: &[Instant]) -> Instant {
    let clash = |t: Instant| {
        others
            .iter()
            .find(|o| t.max(**o) - t.min(**o) < STAGGER)
            .copied()
    };
    let mut candidate = at;
    // Each step moves below one clashing rotation; there are at most `others.len()` of them.
    for _ in 0..=others.len() {
        let Some(other) = clash(candidate) else {
            return candidate;
        };
        match other.checked_sub(STAGGER) {
            Some(earlier) if earlier >= floor => candidate = earlier,
            _ => return at,
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clashing_rotation_moves_earlier_but_never_below_the_floor() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        // Nothing planned elsewhere: as asked.
        assert_eq!(stagger(s(100), s(50), &[]), s(100));
        // 4 s after another stream's: 10 s before it instead.
        assert_eq!(stagger(s(104), s(50), &[s(100)]), s(90));
        // Two others: below both.
        assert_eq!(stagger(s(100), s(50), &[s(100), s(92)]), s(82));
        // Far enough already.
        assert_eq!(stagger(s(115), s(50), &[s(100)]), s(115));
        // Cannot move below the floor (half the session): rotate as planned.
        assert_eq!(stagger(s(100), s(95), &[s(100)]), s(100));
    }

    #[test]
    fn the_account_keeps_each_streams_plan() {
        let account = Account::new(2);
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(account.plan_rotation(0, s(60), s(30)), s(60));
        // The second stream, started at the same time, rotates 10 s before the first.
        assert_eq!(account.plan_rotation(1, s(60), s(30)), s(50));
        account.forget(0);
        assert_eq!(account.plan_rotation(1, s(60), s(30)), s(60));
        let mut mints = account.subscribe();
        account.minted(1);
        assert_eq!(mints.try_recv().ok(), Some(1));
    }
}
