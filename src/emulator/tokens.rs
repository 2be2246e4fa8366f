//! The store of minted temporary tokens: one-time redemption, bounded memory.
//!
//! A token is remembered as a 16-byte hash (not its ~95-character text) with its key, window,
//! session length and whether it was used, about 70 bytes in all. Records are kept for the
//! longest window plus a retention (so a reuse is reported as reuse, not as an unknown token),
//! and at most `cap` of them: at the cap the oldest record is evicted and counted, and an evicted
//! token that was never redeemed is then refused like an unknown one. Without the cap a token
//! flood (the bench's 85 000 mints/s) kept hundreds of MiB for eleven minutes.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Records are kept this long after the longest window, so reuse is reported as reuse.
const RETENTION: Duration = Duration::from_secs(600);
/// The longest redemption window the service grants.
const MAX_WINDOW: Duration = Duration::from_secs(600);
/// Records the map is allocated for up front (the default cap): a larger cap grows as needed.
const PREALLOCATED: usize = 100_000;
/// At most one eviction warning in the log per this period (the count says how many).
const EVICTION_LOG_PERIOD: Duration = Duration::from_secs(10);

/// A token's identity in the store: the first 16 bytes of its SHA-256.
type TokenId = [u8; 16];

fn token_id(token: &str) -> TokenId {
    let digest = Sha256::digest(token.as_bytes());
    let mut id = [0; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// What is remembered of a minted token.
#[derive(Debug, Clone, Copy)]
struct Entry {
    minted: Instant,
    window_s: u16,
    max_session_s: u16,
    key: u32,
    used: bool,
}

/// A token to remember: the key that minted it and its lifetimes (seconds, as the endpoint
/// accepts them: window 1–600, session 60–10 800).
#[derive(Debug, Clone, Copy)]
pub struct Minted {
    pub key: usize,
    pub window: Duration,
    pub max_session: Duration,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Never minted here, or forgotten (evicted or past retention).
    Unknown,
    Expired,
    Used,
}

/// A redeemed token's grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redeemed {
    pub key: usize,
    pub max_session: Duration,
}

/// Counters for `GET /emulator/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokenStats {
    /// Records held now.
    pub stored: usize,
    /// The cap (`--max-tokens`).
    pub max_tokens: usize,
    pub minted: u64,
    pub redeemed: u64,
    /// Records dropped at the cap, oldest first.
    pub evicted: u64,
    /// Of those, tokens never redeemed (now refused like unknown ones).
    pub evicted_unredeemed: u64,
    /// Records forgotten after their window and the retention.
    pub expired: u64,
}

/// The bounded store (behind the emulator's state lock).
#[derive(Debug)]
pub struct TokenStore {
    entries: HashMap<TokenId, Entry>,
    /// Ids in mint order: pruning and eviction look only at the oldest.
    order: VecDeque<TokenId>,
    stats: TokenStats,
    last_eviction_log: Option<Instant>,
}

impl TokenStore {
    /// A store holding at most `cap` (≥ 1) records. The map is allocated for the cap at once (up
    /// to [`PREALLOCATED`] records), so with the default cap it never rehashes under the lock
    /// during a flood; untouched pages cost no memory.
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            entries: HashMap::with_capacity(cap.min(PREALLOCATED)),
            order: VecDeque::new(),
            stats: TokenStats {
                max_tokens: cap,
                ..TokenStats::default()
            },
            last_eviction_log: None,
        }
    }

    pub fn stats(&self) -> TokenStats {
        TokenStats {
            stored: self.entries.len(),
            ..self.stats
        }
    }

    /// Remember a freshly minted token.
    pub fn add(&mut self, token: &str, minted: Minted, now: Instant) {
        self.prune(now);
        let mut evicted_now = 0;
        while self.entries.len() >= self.stats.max_tokens {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.stats.evicted += 1;
                evicted_now += 1;
                if !entry.used {
                    self.stats.evicted_unredeemed += 1;
                }
            }
        }
        if evicted_now > 0 {
            self.log_eviction(now);
        }
        let id = token_id(token);
        let entry = Entry {
            minted: now,
            window_s: u16::try_from(minted.window.as_secs()).unwrap_or(u16::MAX),
            max_session_s: u16::try_from(minted.max_session.as_secs()).unwrap_or(u16::MAX),
            key: u32::try_from(minted.key).unwrap_or(u32::MAX),
            used: false,
        };
        if self.entries.insert(id, entry).is_none() {
            self.order.push_back(id);
        }
        self.stats.minted += 1;
    }

    /// Redeem a token once, within its window.
    pub fn redeem(&mut self, token: &str, now: Instant) -> Result<Redeemed, Refusal> {
        let entry = self
            .entries
            .get_mut(&token_id(token))
            .ok_or(Refusal::Unknown)?;
        if entry.used {
            return Err(Refusal::Used);
        }
        if now.duration_since(entry.minted) > Duration::from_secs(entry.window_s.into()) {
            return Err(Refusal::Expired);
        }
        entry.used = true;
        self.stats.redeemed += 1;
        Ok(Redeemed {
            key: entry.key as usize,
            max_session: Duration::from_secs(entry.max_session_s.into()),
        })
    }

    /// Forget records past the longest window plus the retention, from the oldest end only
    /// (O(1) amortised).
    fn prune(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front() {
            let expired = self
                .entries
                .get(oldest)
                .is_none_or(|e| now.duration_since(e.minted) > MAX_WINDOW + RETENTION);
            if !expired {
                break;
            }
            if self.entries.remove(oldest).is_some() {
                self.stats.expired += 1;
            }
            self.order.pop_front();
        }
    }

    fn log_eviction(&mut self, now: Instant) {
        if self
            .last_eviction_log
            .is_some_and(|t| now.duration_since(t) < EVICTION_LOG_PERIOD)
        {
            return;
        }
        self.last_eviction_log = Some(now);
        tracing::warn!(
            max_tokens = self.stats.max_tokens,
            evicted = self.stats.evicted,
            evicted_unredeemed = self.stats.evicted_unredeemed,
            "token store full: the oldest minted tokens are forgotten (an unredeemed one is now \
             refused like an unknown token); raise --max-tokens if clients need them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minted(window_s: u64) -> Minted {
        Minted {
            key: 0,
            window: Duration::from_secs(window_s),
            max_session: Duration::from_secs(60),
        }
    }

    #[test]
    fn one_time_within_the_window() {
        let mut store = TokenStore::new(10);
        let t0 = Instant::now();
        store.add("a", minted(60), t0);
        store.add("b", minted(1), t0);
        assert_eq!(
            store.redeem("a", t0),
            Ok(Redeemed {
                key: 0,
                max_session: Duration::from_secs(60)
            })
        );
        assert_eq!(store.redeem("a", t0), Err(Refusal::Used));
        assert_eq!(
            store.redeem("b", t0 + Duration::from_secs(2)),
            Err(Refusal::Expired)
        );
        assert_eq!(store.redeem("c", t0), Err(Refusal::Unknown));
        let stats = store.stats();
        assert_eq!((stats.minted, stats.redeemed, stats.stored), (2, 1, 2));
    }

    #[test]
    fn the_cap_evicts_the_oldest_and_counts_it() {
        let mut store = TokenStore::new(3);
        let t0 = Instant::now();
        for t in ["a", "b", "c"] {
            store.add(t, minted(60), t0);
        }
        store.redeem("a", t0).expect("redeem a");
        store.add("d", minted(60), t0);
        store.add("e", minted(60), t0);
        // a (used) and b (unredeemed) are gone: b is refused like an unknown token.
        assert_eq!(store.redeem("b", t0), Err(Refusal::Unknown));
        assert_eq!(store.redeem("a", t0), Err(Refusal::Unknown));
        assert!(store.redeem("c", t0).is_ok());
        let stats = store.stats();
        assert_eq!(stats.stored, 3);
        assert_eq!((stats.evicted, stats.evicted_unredeemed), (2, 1));
    }

    #[test]
    fn records_are_forgotten_after_window_and_retention() {
        let mut store = TokenStore::new(100);
        let t0 = Instant::now();
        store.add("a", minted(60), t0);
        store.redeem("a", t0).expect("redeem");
        let later = t0 + MAX_WINDOW + RETENTION.saturating_sub(Duration::from_secs(1));
        store.add("b", minted(60), later);
        assert_eq!(
            store.redeem("a", later),
            Err(Refusal::Used),
            "still reported as reuse"
        );
        let much_later = t0 + MAX_WINDOW + RETENTION + Duration::from_secs(1);
        store.add("c", minted(60), much_later);
        assert_eq!(store.redeem("a", much_later), Err(Refusal::Unknown));
        assert_eq!(store.stats().expired, 1);
    }
}
