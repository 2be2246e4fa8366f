//! The pre-mint scheduler under Tokio's paused clock, with a scripted fake provider: fetch time
//! (lead and jitter bounds), discarding and re-minting a lapsing token, single flight, distinct
//! tokens, retries and the published state.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aai_live::provider::{
    PreMintOptions, PreMinter, ProviderError, ProviderErrorClass, TokenProvider, TokenRequest,
    TokenState,
};
use aai_live::secret::Token;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A provider whose tokens have a chosen window and whose fetches take a chosen time; it records
/// when each fetch started and how many ran at once.
#[derive(Debug)]
struct Fake {
    window: Option<Duration>,
    delay: Duration,
    started: Mutex<Vec<Instant>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    failures: Mutex<VecDeque<ProviderError>>,
    minted: AtomicUsize,
}

impl Fake {
    fn new(window: Option<Duration>, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            window,
            delay,
            started: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            most_running: AtomicUsize::new(0),
            failures: Mutex::new(VecDeque::new()),
            minted: AtomicUsize::new(0),
        })
    }

    fn fail_next(&self, error: ProviderError) {
        self.failures.lock().expect("lock").push_back(error);
    }

    /// Fetch start times relative to `t0`.
    fn starts(&self, t0: Instant) -> Vec<Duration> {
        self.started
            .lock()
            .expect("lock")
            .iter()
            .map(|t| t.duration_since(t0))
            .collect()
    }

    async fn mint(&self) -> Result<Token, ProviderError> {
        self.started.lock().expect("lock").push(Instant::now());
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(running, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        if let Some(error) = self.failures.lock().expect("lock").pop_front() {
            return Err(error);
        }
        let n = self.minted.fetch_add(1, Ordering::SeqCst);
        // The paused clock does not move SystemTime, so deadlines are set at the end of the fetch.
        let token = Token::new(format!("fake-token-{n}"), "fake");
        Ok(match self.window {
            Some(window) => token.with_redeem_by(SystemTime::now() + window),
            None => token,
        })
    }
}

impl TokenProvider for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn source(&self) -> String {
        "memory".into()
    }

    fn fetch<'a>(
        &'a self,
        _request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<Token, ProviderError>> {
        self.mint().boxed()
    }
}

const REQUEST: TokenRequest = TokenRequest {
    expires_in_seconds: 60,
    max_session_duration_seconds: None,
};

fn options(lead: u64, jitter: u64) -> PreMintOptions {
    PreMintOptions {
        lead: secs(lead),
        jitter: secs(jitter),
        margin: secs(2),
        ..PreMintOptions::default()
    }
}

fn pre_minter(fake: &Arc<Fake>, options: PreMintOptions) -> PreMinter {
    PreMinter::new(Arc::clone(fake) as Arc<dyn TokenProvider>, REQUEST, options)
}

async fn until_ready(pm: &PreMinter) -> TokenState {
    pm.state()
        .wait_for(|s| matches!(s, TokenState::Ready { .. }))
        .await
        .expect("scheduler alive")
        .clone()
}

fn rate_limited(retry_after: Duration) -> ProviderError {
    ProviderError::RateLimited {
        provider: "fake",
        location: "memory".into(),
        status: 429,
        retry_after: Some(retry_after),
        detail: "HTTP 429".into(),
    }
}

#[test]
fn the_scheduler_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<PreMinter>();
    shareable::<TokenState>();
}

#[tokio::test(start_paused = true)]
async fn fetches_lead_before_the_deadline_and_hands_the_token_out_once() {
    let fake = Fake::new(Some(secs(60)), Duration::from_millis(300));
    let pm = pre_minter(&fake, options(10, 0));
    let t0 = Instant::now();
    assert_eq!(*pm.state().borrow(), TokenState::None);
    pm.prepare_by(t0 + secs(60));

    let mut state = pm.state();
    state
        .wait_for(|s| matches!(s, TokenState::Fetching { .. }))
        .await
        .expect("fetching");
    assert_eq!(
        Instant::now() - t0,
        secs(50),
        "fetched exactly `lead` early"
    );
    let TokenState::Ready {
        fingerprint,
        provider,
        redeem_by,
        ..
    } = until_ready(&pm).await
    else {
        unreachable!()
    };
    assert_eq!(provider, "fake");
    assert!(redeem_by.is_some());
    assert_eq!(fake.starts(t0), vec![secs(50)]);

    tokio::time::sleep_until(t0 + secs(60)).await;
    let token = pm.take().await.expect("token");
    assert_eq!(token.fingerprint(), fingerprint, "the prepared token");
    assert_eq!(Instant::now() - t0, secs(60), "no fetch at take time");
    assert_eq!(*pm.state().borrow(), TokenState::None);

    // The next take never gets the same token: it fetches a new one.
    let next = pm.take().await.expect("token");
    assert_ne!(next.fingerprint(), token.fingerprint());
    assert_eq!(fake.starts(t0).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn jitter_moves_the_fetch_earlier_within_bounds() {
    let mut leads = HashSet::new();
    for _ in 0..30 {
        let fake = Fake::new(Some(secs(60)), Duration::ZERO);
        let pm = pre_minter(&fake, options(10, 4));
        let t0 = Instant::now();
        let deadline = t0 + secs(60);
        pm.prepare_by(deadline);
        until_ready(&pm).await;
        let started = fake.started.lock().expect("lock")[0];
        let lead = deadline - started;
        assert!(lead >= secs(10) && lead <= secs(14), "lead {lead:?}");
        leads.insert(lead);
    }
    assert!(leads.len() > 5, "jitter varies: {leads:?}");
}

#[tokio::test(start_paused = true)]
async fn a_lapsing_token_is_discarded_and_minted_again() {
    // A 20 s window and a 45 s lead: the first token would lapse before it is needed.
    let fake = Fake::new(Some(secs(20)), Duration::ZERO);
    let pm = pre_minter(&fake, options(45, 0));
    let t0 = Instant::now();
    pm.prepare_by(t0 + secs(60));
    tokio::time::sleep_until(t0 + secs(60)).await;
    // Minted at 15 s, discarded at 33 s (window less the 2 s margin), again at 51 s.
    assert_eq!(fake.starts(t0), vec![secs(15), secs(33), secs(51)]);
    let token = pm.take().await.expect("token");
    assert_eq!(
        token.fingerprint(),
        Token::new("fake-token-2", "x").fingerprint()
    );
    assert!(!token.is_lapsed(SystemTime::now()));

    // Nothing is minted once the preparation has been taken.
    tokio::time::sleep(secs(300)).await;
    assert_eq!(fake.starts(t0).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_reminted_after_the_deadline_passes_untaken() {
    let fake = Fake::new(Some(secs(20)), Duration::ZERO);
    let pm = pre_minter(&fake, options(5, 0));
    let t0 = Instant::now();
    pm.prepare_by(t0 + secs(10));
    until_ready(&pm).await;
    // The consumer is late (paused streaming): the token lapses at 23 s and is not replaced.
    tokio::time::sleep(secs(600)).await;
    assert_eq!(fake.starts(t0), vec![secs(5)]);
    assert_eq!(*pm.state().borrow(), TokenState::None);
    // A take then fetches on demand.
    pm.take().await.expect("token");
    assert_eq!(fake.starts(t0).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lapsed_ready_token_is_never_handed_out() {
    let fake = Fake::new(Some(secs(20)), Duration::ZERO);
    let pm = pre_minter(&fake, options(10, 0));
    let t0 = Instant::now();
    pm.refresh_now();
    let TokenState::Ready { fingerprint, .. } = until_ready(&pm).await else {
        unreachable!()
    };
    tokio::time::sleep(secs(19)).await;
    let token = pm.take().await.expect("token");
    assert_ne!(
        token.fingerprint(),
        fingerprint,
        "the lapsing one was dropped"
    );
    assert_eq!(fake.starts(t0), vec![Duration::ZERO, secs(19)]);
}

#[tokio::test(start_paused = true)]
async fn one_fetch_in_flight_and_distinct_tokens_for_concurrent_takes() {
    let fake = Fake::new(Some(secs(60)), secs(5));
    let pm = Arc::new(pre_minter(&fake, options(10, 0)));
    let t0 = Instant::now();
    pm.refresh_now();
    pm.refresh_now();
    pm.prepare_by(t0 + secs(1));
    let takes: Vec<_> = (0..3)
        .map(|_| {
            let pm = Arc::clone(&pm);
            tokio::spawn(async move { pm.take().await })
        })
        .collect();
    pm.refresh_now();
    let mut seen = HashSet::new();
    for take in takes {
        let token = take.await.expect("task").expect("token");
        assert!(
            seen.insert(token.fingerprint()),
            "a token was handed out twice"
        );
    }
    assert_eq!(fake.most_running.load(Ordering::SeqCst), 1, "single flight");
    // One fetch per take, one after another (5 s each); the refreshes joined the first.
    assert_eq!(fake.starts(t0), vec![Duration::ZERO, secs(5), secs(10)]);
}

#[tokio::test(start_paused = true)]
async fn a_take_that_gives_up_leaves_the_token_ready() {
    let fake = Fake::new(Some(secs(60)), secs(5));
    let pm = pre_minter(&fake, options(10, 0));
    let t0 = Instant::now();
    assert!(tokio::time::timeout(SEC, pm.take()).await.is_err());
    let TokenState::Ready { fingerprint, .. } = until_ready(&pm).await else {
        unreachable!()
    };
    let token = pm.take().await.expect("token");
    assert_eq!(token.fingerprint(), fingerprint);
    assert_eq!(fake.starts(t0).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn failed_preparations_are_retried_honouring_retry_after() {
    let fake = Fake::new(Some(secs(60)), Duration::ZERO);
    fake.fail_next(rate_limited(secs(7)));
    let pm = pre_minter(&fake, options(10, 0));
    let t0 = Instant::now();
    pm.prepare_by(t0 + secs(60));
    let failed = pm
        .state()
        .wait_for(|s| matches!(s, TokenState::Failed { .. }))
        .await
        .expect("failed")
        .clone();
    let TokenState::Failed {
        class,
        message,
        retry_at,
    } = failed
    else {
        unreachable!()
    };
    assert_eq!(class, ProviderErrorClass::RateLimited);
    assert!(message.contains("HTTP 429"), "{message}");
    assert!(retry_at.is_some());
    until_ready(&pm).await;
    assert_eq!(fake.starts(t0), vec![secs(50), secs(57)]);
}

#[tokio::test(start_paused = true)]
async fn fatal_failures_are_not_retried_and_reach_the_taker() {
    let fake = Fake::new(Some(secs(60)), Duration::ZERO);
    let rejected = ProviderError::Rejected {
        provider: "fake",
        location: "memory".into(),
        status: Some(401),
        detail: "HTTP 401".into(),
    };
    fake.fail_next(rejected.clone());
    fake.fail_next(rejected);
    let pm = pre_minter(&fake, options(10, 0));
    let t0 = Instant::now();
    pm.prepare_by(t0 + secs(60));
    tokio::time::sleep_until(t0 + secs(60)).await;
    assert_eq!(
        fake.starts(t0),
        vec![secs(50)],
        "no retry of a fatal failure"
    );
    assert!(matches!(
        *pm.state().borrow(),
        TokenState::Failed {
            class: ProviderErrorClass::Rejected,
            retry_at: None,
            ..
        }
    ));
    let e = pm.take().await.expect_err("rejected");
    assert!(e.is_fatal());
    // Once the credential is fixed, taking works again.
    pm.take().await.expect("token");
}

#[tokio::test(start_paused = true)]
async fn a_token_without_a_deadline_is_kept_for_the_assumed_window() {
    let fake = Fake::new(None, Duration::ZERO);
    let pm = pre_minter(
        &fake,
        PreMintOptions {
            unknown_window: secs(30),
            margin: secs(3),
            ..PreMintOptions::default()
        },
    );
    let t0 = Instant::now();
    pm.refresh_now();
    until_ready(&pm).await;
    pm.state()
        .wait_for(|s| matches!(s, TokenState::None))
        .await
        .expect("discarded");
    assert_eq!(
        Instant::now() - t0,
        secs(27),
        "30 s assumed, less the margin"
    );
}

#[tokio::test(start_paused = true)]
async fn state_follows_fetch_ready_take_and_cancel() {
    let fake = Fake::new(Some(secs(60)), secs(1));
    let pm = pre_minter(&fake, options(10, 0));
    let mut state = pm.state();
    pm.refresh_now();
    state.changed().await.expect("changed");
    assert!(matches!(
        *state.borrow_and_update(),
        TokenState::Fetching { .. }
    ));
    state.changed().await.expect("changed");
    assert!(matches!(
        *state.borrow_and_update(),
        TokenState::Ready { .. }
    ));
    pm.cancel();
    state.changed().await.expect("changed");
    assert_eq!(*state.borrow_and_update(), TokenState::None);
    drop(pm);
    assert!(
        state.changed().await.is_err(),
        "the task ends with the scheduler"
    );
}

/// A provider with a bug: its fetch panics.
#[derive(Debug)]
struct Panicking;

impl TokenProvider for Panicking {
    fn name(&self) -> &'static str {
        "panicking"
    }

    fn source(&self) -> String {
        "memory".into()
    }

    fn fetch<'a>(
        &'a self,
        _request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<Token, ProviderError>> {
        async { panic!("a bug in the provider") }.boxed()
    }
}

/// A fetch task that dies is a bug, not a network hiccup: the run must fail (class `internal`,
/// fatal), not back off and retry it for ever as "transient".
#[tokio::test(start_paused = true)]
async fn a_panicking_fetch_is_an_internal_fatal_error_not_a_transient_one() {
    let pm = PreMinter::new(Arc::new(Panicking), REQUEST, PreMintOptions::default());
    let error = pm.take().await.expect_err("the fetch panicked");
    assert_eq!(error.class(), ProviderErrorClass::Internal, "{error}");
    assert!(error.is_fatal());
    assert!(error.to_string().contains("a bug in aai-live"), "{error}");
    let failure = aai_live::failure::Failure::token(&error);
    assert_eq!(failure.class, aai_live::protocol::CloseClass::Local);
}
