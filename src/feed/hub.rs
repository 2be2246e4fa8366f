//! The feed's record of a run and its consumers' places in it: every event in order with its
//! id, kept within a bound (events and bytes), and each consumer a cursor into it.
//!
//! A consumer's queue is the window between its cursor and the newest event, so publishing is
//! the same few steps whatever the number of consumers (push, trim, bump a watch): a stalled
//! consumer costs the session nothing, and its queue never holds a copy. The bound on that
//! window is applied when the consumer reads: beyond `queue` waiting events its partials are
//! dropped first (counted), and when the rest still exceed it the consumer is disconnected with
//! a reason, to resume with `Last-Event-ID` from what the history keeps. When the history no
//! longer reaches back to a consumer's cursor it is told so with a `gap`, never skipped
//! silently.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

/// One event as consumers get it: its id (1, 2, 3… in the order of the run), its kind (the
/// NDJSON `event`), its input's label, and its NDJSON line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: u64,
    pub kind: String,
    pub source: Option<String>,
    pub json: String,
}

impl Item {
    /// What it holds in the history's byte bound.
    fn size(&self) -> usize {
        self.json.len() + self.kind.len() + self.source.as_ref().map_or(0, String::len) + 64
    }

    fn is_partial(&self) -> bool {
        self.kind == "partial"
    }
}

/// The history's bound: the older events go when either is exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub events: usize,
    pub bytes: usize,
}

/// The default byte bound of the history (with `feed.history_events` events).
pub const HISTORY_BYTES: usize = 16 * 1024 * 1024;

/// Which events a consumer asked for (`?events=final,partial&source=you`); empty: all. The
/// feed's own `gap` and `disconnected` always pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub kinds: BTreeSet<String>,
    pub sources: BTreeSet<String>,
}

impl Filter {
    fn passes(&self, item: &Item) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&item.kind))
            && (self.sources.is_empty()
                || item
                    .source
                    .as_ref()
                    .is_some_and(|s| self.sources.contains(s)))
    }
}

/// A `gap` event: the history no longer reaches back to what the consumer needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub event: &'static str,
    /// The last id the consumer had (its `Last-Event-ID`, 0 for none).
    pub after: u64,
    /// The id it resumes at.
    pub resumed_at: u64,
    /// Events missed; `null` when `after` is not an id of this run (a feed restarted since).
    pub missed: Option<u64>,
}

/// The `disconnected` event: the consumer fell too far behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disconnected {
    pub event: &'static str,
    pub reason: String,
    /// Resume with `Last-Event-ID: resume_after`.
    pub resume_after: u64,
    /// Partials this consumer was not sent because it was behind.
    pub dropped_partials: u64,
}

/// What a consumer is sent, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Event(Arc<Item>),
    Gap(Gap),
    Disconnected(Disconnected),
}

impl Out {
    /// The SSE `event:` / the JSON `event`.
    pub fn kind(&self) -> &str {
        match self {
            Self::Event(item) => &item.kind,
            Self::Gap(_) => "gap",
            Self::Disconnected(_) => "disconnected",
        }
    }

    /// The SSE `id:`: only the run's events have one (the feed's own leave `Last-Event-ID` as
    /// it was).
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::Event(item) => Some(item.id),
            _ => None,
        }
    }

    /// The JSON line.
    pub fn json(&self) -> String {
        match self {
            Self::Event(item) => item.json.clone(),
            Self::Gap(gap) => serde_json::to_string(gap).unwrap_or_default(),
            Self::Disconnected(d) => serde_json::to_string(d).unwrap_or_default(),
        }
    }
}

/// A consumer's place: the last id it was given (or skipped by its filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    after: u64,
    filter: Filter,
    started: bool,
    /// The newest id when it first read: what came before is the history it catches up on,
    /// what came after is its queue.
    joined: u64,
    dropped_partials: u64,
}

impl Cursor {
    /// From the start of the history (`after` 0) or after the consumer's `Last-Event-ID`.
    pub fn new(after: Option<u64>, filter: Filter) -> Self {
        Self {
            after: after.unwrap_or(0),
            filter,
            started: false,
            joined: 0,
            dropped_partials: 0,
        }
    }
}

/// One read: what to send, and whether the consumer is done (the run ended and everything was
/// read, or it was disconnected).
#[derive(Debug, Default)]
pub struct Read {
    pub out: Vec<Out>,
    pub done: bool,
}

#[derive(Debug, Default)]
struct History {
    items: VecDeque<Arc<Item>>,
    bytes: usize,
    /// The id the next event gets.
    next_id: u64,
    ended: bool,
}

/// The history and the consumers' count.
#[derive(Debug)]
pub struct Hub {
    history: Mutex<History>,
    /// The newest id, watched by consumers waiting for more.
    head: watch::Sender<u64>,
    bounds: Bounds,
    queue: usize,
    consumers: AtomicUsize,
    dropped_partials: AtomicU64,
    disconnected: AtomicU64,
}

impl Hub {
    pub fn new(bounds: Bounds, queue: usize) -> Arc<Self> {
        Arc::new(Self {
            history: Mutex::new(History {
                next_id: 1,
                ..History::default()
            }),
            head: watch::Sender::new(0),
            bounds: Bounds {
                events: bounds.events.max(1),
                bytes: bounds.bytes.max(1),
            },
            queue: queue.max(1),
            consumers: AtomicUsize::new(0),
            dropped_partials: AtomicU64::new(0),
            disconnected: AtomicU64::new(0),
        })
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add an event; returns its id. The oldest go when the bound is exceeded (the newest is
    /// always kept).
    pub fn publish(&self, kind: String, source: Option<String>, json: String) -> u64 {
        let mut history = self.history();
        let id = history.next_id;
        history.next_id += 1;
        let item = Item {
            id,
            kind,
            source,
            json,
        };
        history.bytes += item.size();
        history.items.push_back(Arc::new(item));
        while history.items.len() > 1
            && (history.items.len() > self.bounds.events || history.bytes > self.bounds.bytes)
        {
            if let Some(old) = history.items.pop_front() {
                history.bytes -= old.size();
            }
        }
        drop(history);
        self.head.send_replace(id);
        id
    }

    /// The run is over: consumers end once they have read everything.
    pub fn end(&self) {
        self.history().ended = true;
        self.head.send_modify(|_| {});
    }

    /// A receiver that changes with every event (and at the end).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Consumers connected now.
    pub fn consumers(&self) -> usize {
        self.consumers.load(Ordering::Relaxed)
    }

    /// Partials not sent to consumers that were behind, over the run.
    pub fn dropped_partials(&self) -> u64 {
        self.dropped_partials.load(Ordering::Relaxed)
    }

    /// Consumers disconnected for falling behind, over the run.
    pub fn disconnected(&self) -> u64 {
        self.disconnected.load(Ordering::Relaxed)
    }

    /// Count a consumer in until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> ConsumerGuard {
        self.consumers.fetch_add(1, Ordering::Relaxed);
        ConsumerGuard(Arc::clone(self))
    }

    /// The next events for `cursor`, at most `max` of the run's (plus a `gap` before them).
    pub fn read(&self, cursor: &mut Cursor, max: usize) -> Read {
        let history = self.history();
        let mut read = Read::default();
        let first = history.items.front().map_or(history.next_id, |i| i.id);
        if !cursor.started {
            cursor.started = true;
            cursor.joined = history.next_id - 1;
            if cursor.after >= history.next_id {
                // Not an id of this run: everything kept, after a gap that says so.
                read.out.push(Out::Gap(Gap {
                    event: "gap",
                    after: cursor.after,
                    resumed_at: first,
                    missed: None,
                }));
                cursor.after = first.saturating_sub(1);
            }
        }
        if cursor.after.saturating_add(1) < first {
            read.out.push(Out::Gap(Gap {
                event: "gap",
                after: cursor.after,
                resumed_at: first,
                missed: Some(first - cursor.after - 1),
            }));
            cursor.after = first - 1;
        }
        let start = usize::try_from(cursor.after + 1 - first).unwrap_or(usize::MAX);
        // The queue: what was published since it joined and waits for it (the history before
        // is caught up on at its own pace: it is bounded already).
        let queued = usize::try_from(cursor.after.max(cursor.joined) + 1 - first)
            .unwrap_or(usize::MAX)
            .min(history.items.len());
        let waiting = history.items.len() - queued;
        let mut drop_partials = false;
        if waiting > self.queue {
            let wanted = history
                .items
                .range(queued..)
                .filter(|i| cursor.filter.passes(i))
                .count();
            if wanted > self.queue {
                let lasting = history
                    .items
                    .range(queued..)
                    .filter(|i| cursor.filter.passes(i) && !i.is_partial())
                    .count();
                if lasting > self.queue {
                    self.disconnected.fetch_add(1, Ordering::Relaxed);
                    read.out.push(Out::Disconnected(Disconnected {
                        event: "disconnected",
                        reason: format!(
                            "{lasting} events were waiting for this consumer (feed.queue_events \
                             is {}): it reads too slowly; resume with Last-Event-ID",
                            self.queue
                        ),
                        resume_after: cursor.after,
                        dropped_partials: cursor.dropped_partials,
                    }));
                    read.done = true;
                    return read;
                }
                drop_partials = true;
            }
        }
        let mut taken = 0;
        for item in history.items.range(start..) {
            if taken >= max {
                break;
            }
            cursor.after = item.id;
            if !cursor.filter.passes(item) {
                continue;
            }
            if drop_partials && item.is_partial() {
                cursor.dropped_partials += 1;
                self.dropped_partials.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            read.out.push(Out::Event(Arc::clone(item)));
            taken += 1;
        }
        read.done = history.ended && cursor.after + 1 >= history.next_id;
        read
    }
}

/// A connected consumer, counted until dropped.
#[derive(Debug)]
pub struct ConsumerGuard(Arc<Hub>);

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        self.0.consumers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a consumer is sent, as a stream: the history from its cursor, then live events as
/// they come, until the run ends or it is disconnected.
pub fn subscribe(
    hub: &Arc<Hub>,
    cursor: Cursor,
) -> impl futures_util::Stream<Item = Out> + Send + use<> {
    /// Events taken from the history per read.
    const BATCH: usize = 64;
    struct State {
        hub: Arc<Hub>,
        cursor: Cursor,
        ready: VecDeque<Out>,
        head: watch::Receiver<u64>,
        done: bool,
        _guard: ConsumerGuard,
    }
    let state = State {
        head: hub.watch(),
        _guard: hub.enter(),
        hub: Arc::clone(hub),
        cursor,
        ready: VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(out) = s.ready.pop_front() {
                return Some((out, s));
            }
            if s.done {
                return None;
            }
            // Marked seen before reading, so an event published after the read wakes us.
            s.head.borrow_and_update();
            let read = s.hub.read(&mut s.cursor, BATCH);
            s.done = read.done;
            let empty = read.out.is_empty();
            s.ready.extend(read.out);
            if empty && !s.done && s.head.changed().await.is_err() {
                s.done = true;
            }
        }
    })
}

/// A `Last-Event-ID` (or `?last_event_id=`): an id of this feed, 1-20 digits.
pub fn parse_last_event_id(text: &[u8]) -> Result<u64, &'static str> {
    const RULE: &str = "Last-Event-ID must be the id of an event of this feed (digits)";
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return Err(RULE);
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(RULE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use proptest::prelude::*;

    fn hub(events: usize, queue: usize) -> Arc<Hub> {
        Hub::new(
            Bounds {
                events,
                bytes: HISTORY_BYTES,
            },
            queue,
        )
    }

    fn publish(hub: &Hub, kind: &str, n: u64) {
        hub.publish(
            kind.into(),
            None,
            format!("{{\"event\":\"{kind}\",\"n\":{n}}}"),
        );
    }

    fn ids(read: &Read) -> Vec<Option<u64>> {
        read.out.iter().map(Out::id).collect()
    }

    #[test]
    fn a_new_consumer_gets_the_history_then_ends_with_the_run() {
        let hub = hub(100, 100);
        for n in 0..5 {
            publish(&hub, "final", n);
        }
        let mut cursor = Cursor::new(None, Filter::default());
        let read = hub.read(&mut cursor, 3);
        assert_eq!(ids(&read), [Some(1), Some(2), Some(3)]);
        assert!(!read.done);
        hub.end();
        let read = hub.read(&mut cursor, 10);
        assert_eq!(ids(&read), [Some(4), Some(5)]);
        assert!(read.done);
    }

    #[test]
    fn resuming_gets_every_missed_event_and_a_gap_when_history_is_short() {
        let hub = hub(4, 100);
        for n in 0..10 {
            publish(&hub, "final", n);
        }
        // 7..=10 kept: a consumer that had 8 misses nothing.
        let read = hub.read(&mut Cursor::new(Some(8), Filter::default()), 10);
        assert_eq!(ids(&read), [Some(9), Some(10)]);
        // One that had 3 is told that 4..=6 are gone, then gets 7..=10.
        let read = hub.read(&mut Cursor::new(Some(3), Filter::default()), 10);
        assert_eq!(
            read.out[0],
            Out::Gap(Gap {
                event: "gap",
                after: 3,
                resumed_at: 7,
                missed: Some(3)
            })
        );
        assert_eq!(ids(&read)[1..], [Some(7), Some(8), Some(9), Some(10)]);
        // A new one too: the run's first events are gone.
        let read = hub.read(&mut Cursor::new(None, Filter::default()), 10);
        assert!(matches!(&read.out[0], Out::Gap(g) if g.missed == Some(6)));
        // An id from another run: all that is kept, after a gap without a count.
        let read = hub.read(&mut Cursor::new(Some(99), Filter::default()), 10);
        assert!(matches!(&read.out[0], Out::Gap(g) if g.missed.is_none() && g.after == 99));
        assert_eq!(read.out.len(), 5);
    }

    #[test]
    fn the_byte_bound_trims_too_but_keeps_the_newest() {
        let hub = Hub::new(
            Bounds {
                events: 1000,
                bytes: 300,
            },
            100,
        );
        for n in 0..10 {
            publish(&hub, "final", n);
        }
        let read = hub.read(&mut Cursor::new(None, Filter::default()), 100);
        let kept: Vec<_> = ids(&read).into_iter().flatten().collect();
        assert!(kept.len() < 10 && kept.last() == Some(&10), "{kept:?}");
        hub.publish("final".into(), None, "x".repeat(1000));
        let read = hub.read(&mut Cursor::new(Some(10), Filter::default()), 100);
        assert_eq!(ids(&read), [Some(11)], "a big event is kept alone");
    }

    #[test]
    fn filters_pick_kinds_and_sources() {
        let hub = hub(100, 100);
        hub.publish("partial".into(), Some("you".into()), "{}".into());
        hub.publish("final".into(), Some("you".into()), "{}".into());
        hub.publish("final".into(), Some("them".into()), "{}".into());
        hub.publish("state".into(), None, "{}".into());
        let filter = Filter {
            kinds: ["final".to_owned()].into(),
            sources: ["you".to_owned()].into(),
        };
        let mut cursor = Cursor::new(None, filter);
        assert_eq!(ids(&hub.read(&mut cursor, 10)), [Some(2)]);
        assert_eq!(cursor.after, 4, "skipped events move the cursor on");
    }

    #[test]
    fn a_slow_consumer_loses_partials_first_then_is_disconnected() {
        let hub = hub(1000, 4);
        let mut cursor = Cursor::new(None, Filter::default());
        assert!(hub.read(&mut cursor, 100).out.is_empty(), "joined");
        for n in 0..6 {
            publish(&hub, "partial", n);
        }
        publish(&hub, "final", 6);
        let read = hub.read(&mut cursor, 100);
        assert_eq!(ids(&read), [Some(7)], "partials dropped, the final kept");
        assert_eq!(hub.dropped_partials(), 6);
        for n in 0..5 {
            publish(&hub, "final", n);
        }
        let read = hub.read(&mut cursor, 100);
        let Some(Out::Disconnected(d)) = read.out.first() else {
            panic!("{:?}", read.out);
        };
        assert!(read.done);
        assert_eq!(d.resume_after, 7);
        assert_eq!(d.dropped_partials, 6);
        assert!(d.reason.contains("Last-Event-ID"), "{}", d.reason);
        // Resuming from there gets every final, at its own pace: they are history now.
        let mut resumed = Cursor::new(Some(d.resume_after), Filter::default());
        assert_eq!(
            ids(&hub.read(&mut resumed, 3)),
            [Some(8), Some(9), Some(10)]
        );
        assert_eq!(ids(&hub.read(&mut resumed, 3)), [Some(11), Some(12)]);
    }

    #[tokio::test]
    async fn a_subscription_follows_live_events_and_counts_its_consumer() {
        let hub = hub(100, 100);
        publish(&hub, "hello", 0);
        let mut stream = Box::pin(subscribe(&hub, Cursor::new(None, Filter::default())));
        assert_eq!(stream.next().await.and_then(|o| o.id()), Some(1));
        assert_eq!(hub.consumers(), 1);
        let publisher = Arc::clone(&hub);
        tokio::spawn(async move {
            publish(&publisher, "final", 1);
            publisher.end();
        });
        assert_eq!(stream.next().await.and_then(|o| o.id()), Some(2));
        assert_eq!(stream.next().await, None);
        drop(stream);
        assert_eq!(hub.consumers(), 0);
    }

    #[test]
    fn last_event_ids_are_digits() {
        assert_eq!(parse_last_event_id(b"42"), Ok(42));
        for bad in [&b""[..], b"-1", b"4 2", b"99999999999999999999", b"\xff"] {
            assert!(parse_last_event_id(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_last_event_id_bytes_parse_or_are_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            match parse_last_event_id(&bytes) {
                Ok(id) => {
                    let text = String::from_utf8(bytes).expect("digits");
                    let trimmed = text.trim_start_matches('0');
                    prop_assert_eq!(id.to_string(), if trimmed.is_empty() { "0" } else { trimmed });
                }
                Err(rule) => prop_assert!(rule.contains("Last-Event-ID")),
            }
        }

        /// Any sequence of publishes and reads by a consumer that resumes whenever it is
        /// disconnected: every final reaches it exactly once, or lies inside a `gap` it was
        /// sent; ids only go up.
        #[test]
        fn finals_are_never_skipped_silently(
            ops in proptest::collection::vec((any::<bool>(), 0usize..4), 1..200),
        ) {
            let hub = hub(32, 8);
            let mut cursor = Cursor::new(None, Filter::default());
            let mut finals = BTreeSet::new();
            let mut seen = BTreeSet::new();
            let mut last = 0;
            let mut take = |read: Read, cursor: &mut Cursor, seen: &mut BTreeSet<u64>| {
                for out in read.out {
                    match out {
                        Out::Event(item) => {
                            assert!(item.id > last, "ids go up");
                            last = item.id;
                            seen.insert(item.id);
                        }
                        Out::Gap(gap) => {
                            seen.extend(gap.after + 1..gap.resumed_at);
                            last = gap.resumed_at - 1;
                        }
                        Out::Disconnected(d) => {
                            *cursor = Cursor::new(Some(d.resume_after), Filter::default());
                        }
                    }
                }
            };
            for (is_partial, reads) in ops {
                let id = hub.publish(
                    if is_partial { "partial" } else { "final" }.into(), None, "{}".into());
                if !is_partial {
                    finals.insert(id);
                }
                for _ in 0..reads {
                    let read = hub.read(&mut cursor, 3);
                    take(read, &mut cursor, &mut seen);
                }
            }
            hub.end();
            for _ in 0..1000 {
                let read = hub.read(&mut cursor, 3);
                let done = read.done && !read.out.iter().any(|o| matches!(o, Out::Disconnected(_)));
                take(read, &mut cursor, &mut seen);
                if done {
                    break;
                }
            }
            prop_assert!(finals.is_subset(&seen), "missing: {:?}", finals.difference(&seen).collect::<Vec<_>>());
        }
    }
}
