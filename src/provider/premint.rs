//! The pre-mint scheduler: decides *when* to fetch so a fresh token is ready by the time the
//! session supervisor needs one.
//!
//! AssemblyAI tokens are redeemable once within a short window, so "refresh ahead" becomes
//! "pre-mint ahead": asked to have a token ready by `T`, the scheduler fetches at `T - lead`
//! (up to `jitter` earlier, so many clients do not mint in step), keeps the token until it is
//! taken, and discards and re-mints it if its window lapses before `T`. One task owns all of
//! this, so there is at most one fetch in flight; a token is moved out exactly once (`Token` is
//! not `Clone`), so none is handed out twice. The state is published on a `watch` channel for
//! the dashboard's countdown.
//!
//! Policy kept deliberately small: transient failures of a *preparation* are retried with
//! backoff (honouring `Retry-After`) until `T`; everything else is reported to the caller of
//! [`PreMinter::take`], whose own backoff applies. After `T` nothing is re-minted on its own: a
//! paused or late consumer costs no mints.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ProviderError, ProviderErrorClass, TokenProvider, TokenRequest};
use crate::deadline::sleep_until;
use crate::secret::Token;

/// Timing of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreMintOptions {
    /// Fetch this long before the time a token is needed. Keep it well under the redemption
    /// window (`provider.expires_in_seconds`), or the token lapses and is minted again.
    pub lead: Duration,
    /// Fetch up to this much earlier than `lead`, at random.
    pub jitter: Duration,
    /// A token with less than this left of its window counts as lapsed: connecting takes time.
    /// Capped at half the token's window, so short windows still work.
    pub margin: Duration,
    /// Window assumed for a token whose provider does not say (a plain-text token): capped at
    /// the requested `expires_in_seconds`.
    pub unknown_window: Duration,
    /// First and largest delay between retries of a failed preparation.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for PreMintOptions {
    fn default() -> Self {
        Self {
            lead: Duration::from_secs(10),
            jitter: Duration::from_secs(3),
            margin: Duration::from_secs(3),
            unknown_window: Duration::from_secs(30),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// What the scheduler holds, for the dashboard. `Ready` wins over `Fetching` and `Failed`: a
/// usable token is what matters to the next connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// No token and nothing under way.
    None,
    Fetching {
        since: SystemTime,
    },
    Ready {
        provider: &'static str,
        fingerprint: String,
        minted_at: SystemTime,
        /// The token's own deadline, when its provider said.
        redeem_by: Option<SystemTime>,
        /// When the scheduler will discard it (the deadline, or the assumed one, less the margin).
        discard_at: SystemTime,
    },
    Failed {
        class: ProviderErrorClass,
        message: String,
        /// When a preparation will be retried, if it will.
        retry_at: Option<SystemTime>,
    },
}

enum Command {
    PrepareBy(Instant),
    Take(oneshot::Sender<Result<Token, ProviderError>>),
    RefreshNow,
    Cancel,
}

/// Keeps a fresh one-time token ready for the next connect. Create it inside a Tokio runtime
/// (it spawns its task); dropping it stops the task and any fetch under way.
#[derive(Debug)]
pub struct PreMinter {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<TokenState>,
    provider: &'static str,
    /// Tokens minted and dropped unused (lapsed, replaced, refreshed, cancelled).
    discarded: Arc<AtomicU64>,
}

impl PreMinter {
    pub fn new(
        provider: Arc<dyn TokenProvider>,
        request: TokenRequest,
        options: PreMintOptions,
    ) -> Self {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(TokenState::None);
        let name = provider.name();
        let discarded = Arc::new(AtomicU64::new(0));
        let scheduler = Scheduler {
            discarded: Arc::clone(&discarded),
            provider,
            request,
            options,
            state_tx,
            ready: None,
            fetch: None,
            target: None,
            waiters: VecDeque::new(),
            retry_at: None,
            retry_delay: options.retry_initial,
            last_error: None,
        };
        tokio::spawn(scheduler.run(commands_rx));
        Self {
            commands,
            state,
            provider: name,
            discarded,
        }
    }

    /// How many tokens this scheduler minted and dropped without handing them out (their
    /// window lapsed, a fresh one was asked for, the preparation was cancelled). Every other
    /// token it minted was handed out or is still held.
    pub fn discarded(&self) -> u64 {
        self.discarded.load(Ordering::Relaxed)
    }

    /// Have a fresh token ready by `at`: fetch at `at - lead` (up to `jitter` earlier), unless
    /// the token held then is still good at `at`. Replaces an earlier preparation.
    pub fn prepare_by(&self, at: Instant) {
        let _ = self.commands.send(Command::PrepareBy(at));
    }

    /// A fresh token never handed out before: the ready one if its window has not lapsed (less
    /// the margin), else the one being fetched, else one fetched now. Concurrent callers get
    /// distinct tokens. Taking ends the current preparation. If the caller stops waiting, a
    /// token fetched for it is kept as the ready one.
    pub async fn take(&self) -> Result<Token, ProviderError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Take(reply))
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// Drop the ready token and fetch a new one now (the dashboard's "mint a fresh token now").
    pub fn refresh_now(&self) {
        let _ = self.commands.send(Command::RefreshNow);
    }

    /// Forget the preparation and the ready token (streaming paused, or stopped).
    pub fn cancel(&self) {
        let _ = self.commands.send(Command::Cancel);
    }

    /// The scheduler's state, updated on every change.
    pub fn state(&self) -> watch::Receiver<TokenState> {
        self.state.clone()
    }

    /// The scheduler task is gone while its owner still asks for tokens: it died. Fatal, not
    /// transient — retrying would ask a dead task for ever.
    fn stopped(&self) -> ProviderError {
        ProviderError::Internal {
            provider: self.provider,
            location: "pre-mint scheduler".into(),
            detail: "the token scheduler stopped unexpectedly".into(),
        }
    }
}

struct Ready {
    token: Token,
    discard_at: Instant,
    /// `discard_at` on the wall clock, computed once so the published state stays stable.
    discard_at_wall: SystemTime,
}

struct Target {
    at: Instant,
    fetch_at: Instant,
    /// The timed fetch has been considered (done or found unnecessary).
    fired: bool,
}

/// A fetch running as its own task, so the scheduler can keep serving while it runs; dropping
/// this aborts it.
struct Fetch {
    handle: JoinHandle<Result<Token, ProviderError>>,
    since: SystemTime,
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

enum Event {
    Command(Option<Command>),
    Fetched(Result<Token, ProviderError>),
    Timer,
}

struct Scheduler {
    discarded: Arc<AtomicU64>,
    provider: Arc<dyn TokenProvider>,
    request: TokenRequest,
    options: PreMintOptions,
    state_tx: watch::Sender<TokenState>,
    ready: Option<Ready>,
    fetch: Option<Fetch>,
    target: Option<Target>,
    waiters: VecDeque<oneshot::Sender<Result<Token, ProviderError>>>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    /// The last failure and when it will be retried (wall clock, for the dashboard).
    last_error: Option<(ProviderError, Option<SystemTime>)>,
}

impl Scheduler {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let wake = self.next_wake();
            // Handlers run after the select, so its futures' borrows of `self` have ended.
            let event = tokio::select! {
                command = commands.recv() => Event::Command(command),
                result = fetched(&mut self.fetch) => Event::Fetched(result),
                () = sleep_until(wake) => Event::Timer,
            };
            match event {
                Event::Command(None) => break,
                Event::Command(Some(command)) => self.on_command(command),
                Event::Fetched(result) => {
                    self.fetch = None;
                    self.on_fetched(result);
                }
                Event::Timer => self.on_timer(),
            }
            self.publish();
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        [
            self.ready.as_ref().map(|r| r.discard_at),
            self.target
                .as_ref()
                .filter(|t| !t.fired)
                .map(|t| t.fetch_at),
            self.retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::PrepareBy(at) => {
                let jitter = random_up_to(self.options.jitter);
                let fetch_at = at
                    .checked_sub(self.options.lead + jitter)
                    .unwrap_or(now)
                    .max(now);
                tracing::debug!(
                    in_ms = fetch_at.saturating_duration_since(now).as_millis(),
                    "token pre-mint scheduled"
                );
                self.target = Some(Target {
                    at,
                    fetch_at,
                    fired: false,
                });
                self.retry_at = None;
                self.retry_delay = self.options.retry_initial;
            }
            Command::Take(reply) => {
                self.target = None;
                self.retry_at = None;
                self.discard_if_lapsed(now);
                if let Some(ready) = self.ready.take() {
                    let (discard_at, discard_at_wall) = (ready.discard_at, ready.discard_at_wall);
                    if let Err(Ok(token)) = reply.send(Ok(ready.token)) {
                        // The caller gave up before the answer: keep the token.
                        self.ready = Some(Ready {
                            token,
                            discard_at,
                            discard_at_wall,
                        });
                    }
                } else {
                    self.waiters.push_back(reply);
                    self.ensure_fetch();
                }
            }
            Command::RefreshNow => {
                if let Some(old) = self.ready.take() {
                    self.count_discarded();
                    tracing::debug!(token = %old.token.fingerprint(), "discarded on request");
                }
                self.retry_at = None;
                self.last_error = None;
                self.ensure_fetch();
            }
            Command::Cancel => {
                self.target = None;
                self.retry_at = None;
                if self.ready.take().is_some() {
                    self.count_discarded();
                }
                self.last_error = None;
                self.waiters.retain(|w| !w.is_closed());
                if self.waiters.is_empty() {
                    self.fetch = None;
                }
            }
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.discard_if_lapsed(now) && self.target_ahead(now) {
            // Still wanted by `at`: mint a replacement.
            self.ensure_fetch();
        }
        let held_until = self.ready.as_ref().map(|r| r.discard_at);
        if let Some(target) = self.target.as_mut()
            && !target.fired
            && target.fetch_at <= now
        {
            target.fired = true;
            let at = target.at;
            if held_until.is_none_or(|until| until <= at) {
                self.ensure_fetch();
            }
        }
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            if self.ready.is_none() && self.target_ahead(now) {
                self.ensure_fetch();
            }
        }
    }

    fn on_fetched(&mut self, result: Result<Token, ProviderError>) {
        let now = Instant::now();
        self.waiters.retain(|w| !w.is_closed());
        match result {
            Ok(token) => {
                self.retry_delay = self.options.retry_initial;
                self.last_error = None;
                let discard_at = self.discard_at(&token, now);
                let mut token = Some(token);
                while let Some(waiter) = self.waiters.pop_front() {
                    let Some(t) = token.take() else { break };
                    if t.is_lapsed(SystemTime::now()) {
                        self.count_discarded();
                        let error = self.late_token_error(&t);
                        let _ = waiter.send(Err(error));
                        break;
                    }
                    match waiter.send(Ok(t)) {
                        // That caller gave up meanwhile: offer the token to the next one.
                        Err(Ok(t)) => token = Some(t),
                        Ok(()) | Err(Err(_)) => break,
                    }
                }
                if let Some(token) = token {
                    if discard_at > now {
                        tracing::debug!(token = %token.fingerprint(), "token ready");
                        // A token replaced here was never handed out; dropping it is the point.
                        if self.ready.is_some() {
                            self.count_discarded();
                        }
                        self.ready = Some(Ready {
                            token,
                            discard_at,
                            discard_at_wall: to_system(discard_at, now),
                        });
                    } else {
                        let error = self.late_token_error(&token);
                        self.count_discarded();
                        tracing::debug!(%error, "token discarded on arrival");
                        self.on_failure(error, now);
                    }
                }
                if !self.waiters.is_empty() {
                    self.ensure_fetch();
                }
            }
            Err(error) => {
                tracing::debug!(%error, class = %error.class(), "token fetch failed");
                for waiter in self.waiters.drain(..) {
                    let _ = waiter.send(Err(error.clone()));
                }
                self.on_failure(error, now);
            }
        }
    }

    /// Remember a failure and, while a preparation is still ahead and retrying can help, plan a
    /// retry.
    fn on_failure(&mut self, error: ProviderError, now: Instant) {
        self.retry_at = None;
        if !error.is_fatal()
            && let Some(target) = &self.target
        {
            let delay = self
                .retry_delay
                .max(error.retry_after().unwrap_or_default());
            let at = now + delay;
            if at < target.at {
                self.retry_at = Some(at);
                self.retry_delay = (self.retry_delay * 2).min(self.options.retry_max);
            }
        }
        self.last_error = Some((error, self.retry_at.map(|at| to_system(at, now))));
    }

    fn late_token_error(&self, token: &Token) -> ProviderError {
        ProviderError::Transient {
            provider: token.provider,
            location: self.provider.source(),
            status: None,
            network: None,
            retry_after: None,
            detail: format!(
                "token {} arrived with its redemption window (almost) over",
                token.fingerprint()
            ),
        }
    }

    fn count_discarded(&self) {
        self.discarded.fetch_add(1, Ordering::Relaxed);
    }

    fn target_ahead(&self, now: Instant) -> bool {
        self.target.as_ref().is_some_and(|t| t.at > now)
    }

    /// Drop the ready token if it is past its discard time; true if one was dropped.
    fn discard_if_lapsed(&mut self, now: Instant) -> bool {
        if self.ready.as_ref().is_some_and(|r| r.discard_at <= now) {
            if let Some(old) = self.ready.take() {
                self.count_discarded();
                tracing::debug!(token = %old.token.fingerprint(), "discarded: window lapsing");
            }
            return true;
        }
        false
    }

    /// When to stop offering `token`: its deadline (or the assumed one) less the margin.
    fn discard_at(&self, token: &Token, now: Instant) -> Instant {
        let assumed = self
            .options
            .unknown_window
            .min(Duration::from_secs(u64::from(
                self.request.expires_in_seconds,
            )));
        let deadline = token.redeem_by.unwrap_or_else(|| {
            token
                .minted_at
                .checked_add(assumed)
                .unwrap_or(token.minted_at)
        });
        let window = deadline.duration_since(token.minted_at).unwrap_or_default();
        let margin = self.options.margin.min(window / 2);
        let left = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        // Lifetimes are bounded where tokens are read (a day at most); still never overflow.
        now.checked_add(left.saturating_sub(margin)).unwrap_or(now)
    }

    fn ensure_fetch(&mut self) {
        if self.fetch.is_some() {
            return;
        }
        let provider = Arc::clone(&self.provider);
        let request = self.request;
        tracing::debug!(provider = provider.name(), "fetching a token");
        self.fetch = Some(Fetch {
            handle: tokio::spawn(async move { provider.fetch(&request).await }),
            since: SystemTime::now(),
        });
    }

    fn publish(&self) {
        let state = if let Some(ready) = &self.ready {
            TokenState::Ready {
                provider: ready.token.provider,
                fingerprint: ready.token.fingerprint(),
                minted_at: ready.token.minted_at,
                redeem_by: ready.token.redeem_by,
                discard_at: ready.discard_at_wall,
            }
        } else if let Some(fetch) = &self.fetch {
            TokenState::Fetching { since: fetch.since }
        } else if let Some((error, retry_at)) = &self.last_error {
            TokenState::Failed {
                class: error.class(),
                message: error.to_string(),
                retry_at: *retry_at,
            }
        } else {
            TokenState::None
        };
        self.state_tx.send_if_modified(|current| {
            if *current == state {
                false
            } else {
                *current = state;
                true
            }
        });
    }
}

/// The outcome of the fetch under way; pending forever when there is none.
async fn fetched(fetch: &mut Option<Fetch>) -> Result<Token, ProviderError> {
    let Some(fetch) = fetch else {
        return std::future::pending().await;
    };
    match (&mut fetch.handle).await {
        Ok(result) => result,
        // A fetch that panicked would panic again: fatal (a provider's own failures are
        // classified inside the fetch, never here).
        Err(join) => Err(ProviderError::Internal {
            provider: "pre-mint",
            location: "fetch task".into(),
            detail: format!("the fetch task ended abnormally: {join}"),
        }),
    }
}

/// A tokio instant as wall-clock time, for display.
fn to_system(at: Instant, now: Instant) -> SystemTime {
    let wall = SystemTime::now();
    if at >= now {
        wall + (at - now)
    } else {
        wall - (now - at)
    }
}

fn random_up_to(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(rand::random_range(0..=nanos))
    }
}
