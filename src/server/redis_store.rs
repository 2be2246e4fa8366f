//! The shared limits store: the server's budgets kept in Redis (or Valkey), so every replica
//! behind a load balancer spends from the same budgets.
//!
//! A decision is one round trip: a Lua script that reads Redis's own clock (`TIME`, so the
//! replicas' clocks do not matter) and applies the GCRA rule of [`super::limit`] to the budgets
//! of a request in order (the client's, then the global one), atomically, as Redis runs one
//! script at a time. It returns the clock and the TAT each budget had, and [`Gcra::decide`] turns
//! them into the same [`Decision`]s (and headers) the memory store gives; a script that
//! disagreed with the Rust rule would be reported as an inconsistency rather than trusted. Keys
//! are `{prefix}:client:{name}`, `{prefix}:global` and `{prefix}:refusal:{address}`, and expire
//! when their budget is full again, so an idle key costs Redis nothing.
//!
//! Reachability: a failed or late round trip marks the store down; while it is down no request
//! waits on it (the failure policy answers at once) and a background task pings it with backoff
//! (100 ms doubling to 2 s) until it answers, then marks it up. While up, the task pings every
//! 5 s so `/readyz` stays true when no requests come. The pings read Redis's clock (`TIME`), and
//! each script carries a deadline on it: a request this replica gave up on (a 503) spends
//! nothing if Redis runs its script later (a store that stalls, then resumes). The connection is
//! [`super::redis_link`]'s: one multiplexed connection, its replies read under a cap, re-opened
//! after any failure. A store that refuses our credentials at start stops the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::RedisConnectionInfo;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::limit::{Decision, Gcra};
use super::metrics::StoreMetrics;
use super::redis_link::Link;
use crate::config::{Choice, RedisAddress, StoreFailure};

/// The GCRA rule of `limit.rs` over several budgets; see the module doc.
const SCRIPT: &str = r"
-- aai-live serve: GCRA over the budgets of one request (src/server/limit.rs has the rule).
-- ARGV[1]: the deadline, on Redis's clock in microseconds: a request the replica has given up
-- on by then (it answered 503) must spend nothing, however late the store runs this.
-- KEYS[i]: a budget; ARGV[2i]: its interval in microseconds; ARGV[2i+1]: its burst.
-- Budgets are checked in order; checking stops at the first refusal, which spends nothing.
-- A budget that lets the request through stores its new TAT, expiring when it is full again.
-- Returns {now, tat_1, ..., tat_k}: Redis's clock and the TAT each checked budget had; {now}
-- alone when the deadline had passed.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local out = {now}
if now > tonumber(ARGV[1]) then
  return out
end
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local span = interval * tonumber(ARGV[2 * i + 1])
  local stored = tonumber(redis.call('GET', key)) or 0
  out[#out + 1] = stored
  local tat = math.max(stored, now)
  local next = tat + interval
  if next - now > span then
    break
  end
  redis.call('SET', key, string.format('%d', next), 'PX', math.ceil((next - now) / 1000))
end
return out
";

/// Pings while the store is up.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Backoff between pings while it is down.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Why the store gave no decision.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the limits store is down (reconnecting in the background)")]
    Down,
    #[error("no answer from the limits store within {0:?}")]
    Timeout(Duration),
    #[error("limits store: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the limits store's script disagrees with this program's rate-limit arithmetic")]
    Inconsistent,
    #[error("the limits store ran the request after its deadline (it was refused meanwhile)")]
    Late,
    #[error(
        "the limits store {address} refuses this server's credentials ({detail}): check \
         `server.limits_store_password_env` / `_file` and the user name in the URL"
    )]
    Credentials { address: String, detail: String },
    #[error("cannot read the limits store's CA certificate {path}: {reason}")]
    Ca { path: String, reason: String },
}

/// One budget of a request: its key and its GCRA.
#[derive(Debug, Clone)]
pub struct Budget {
    pub key: String,
    pub gcra: Gcra,
}

/// A Redis limits store; see the module doc.
pub struct RedisStore {
    link: Link,
    /// Redis's clock as last read (microseconds) and when: the scripts' deadlines are set on it.
    clock: std::sync::Mutex<Option<(u64, Instant)>>,
    script: redis::Script,
    address: String,
    timeout: Duration,
    failure: StoreFailure,
    up: AtomicBool,
    wake: Notify,
    metrics: StoreMetrics,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.address)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store at `address`, not yet connected: [`RedisStore::start`] connects. `ca` is the PEM
    /// to verify a `rediss://` server with (the system's roots otherwise).
    pub fn new(
        address: &RedisAddress,
        password: Option<&SecretString>,
        ca: Option<&[u8]>,
        timeout: Duration,
        failure: StoreFailure,
        metrics: StoreMetrics,
    ) -> Result<Self, StoreError> {
        let mut settings = RedisConnectionInfo::default().set_db(address.db());
        if let Some(user) = address.username() {
            settings = settings.set_username(user);
        }
        if let Some(password) = password {
            settings = settings.set_password(password.expose_secret());
        }
        // Connected on first use (the watcher below is the retry loop), each attempt bounded
        // like a round trip, so nothing waits longer than `timeout` on a store that is gone.
        let link = Link::new(address.host(), address.port(), address.tls(), ca, settings)?;
        Ok(Self {
            link,
            clock: std::sync::Mutex::new(None),
            script: redis::Script::new(SCRIPT),
            address: address.to_string(),
            timeout,
            failure,
            up: AtomicBool::new(false),
            wake: Notify::new(),
            metrics,
        })
    }

    /// Connect (one ping, within the timeout) and keep watching the store until `cancel`. A
    /// store that does not answer now is not an error: the server starts, reports it down, and
    /// the watcher connects when it can. A store that answers but refuses our credentials (a
    /// wrong password, a user it does not know, a missing permission) is: it will not change its
    /// mind, and a server that started would answer 503 to everyone.
    pub async fn start(self: &Arc<Self>, cancel: CancellationToken) -> Result<(), StoreError> {
        match self.ping().await {
            Ok(()) => self.mark_up(false),
            Err(StoreError::Redis(error)) if refuses_credentials(&error) => {
                return Err(StoreError::Credentials {
                    address: self.address.clone(),
                    detail: error.to_string(),
                });
            }
            Err(error) => {
                self.metrics.up.set(0);
                tracing::warn!(
                    store = %self.address,
                    %error,
                    policy = self.failure.as_str(),
                    "the limits store cannot be reached; retrying in the background"
                );
            }
        }
        tokio::spawn(Arc::clone(self).watch(cancel));
        Ok(())
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Decide `budgets` in order, stopping at the first refusal: one round trip. The decisions
    /// returned are those of the budgets checked (all of them unless one refused). The script
    /// carries a deadline on Redis's clock (now + the timeout): a request this replica has
    /// already refused with a 503 spends nothing if the store runs it late.
    pub async fn decide(&self, budgets: &[Budget]) -> Result<Vec<Decision>, StoreError> {
        if !self.is_up() {
            return Err(StoreError::Down);
        }
        let Some(deadline) = self.deadline() else {
            return Err(StoreError::Down);
        };
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(deadline);
        for budget in budgets {
            invocation
                .key(&budget.key)
                .arg(budget.gcra.interval_micros())
                .arg(budget.gcra.burst());
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(self.timeout, async {
            let mut connection = self.link.connection().await?;
            invocation.invoke_async::<Vec<u64>>(&mut connection).await
        })
        .await;
        self.metrics.latency.observe(started.elapsed());
        let result = match answer {
            Ok(Ok(values)) => {
                if let Some(&now) = values.first() {
                    self.read_clock(now, Instant::now());
                }
                decisions(budgets, &values)
            }
            Ok(Err(error)) => Err(StoreError::Redis(error)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        if let Err(error) = &result {
            self.failed(error);
        }
        result
    }

    /// A script's deadline: Redis's clock now (as last read, moved on by ours) plus the timeout;
    /// `None` before the clock was ever read.
    fn deadline(&self) -> Option<u64> {
        let clock = *self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (redis_now, at) = clock?;
        let elapsed = at.elapsed() + self.timeout;
        Some(redis_now.saturating_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)))
    }

    fn read_clock(&self, redis_now: u64, at: Instant) {
        *self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((redis_now, at));
    }

    /// One round trip: Redis's clock (`TIME`), kept for the scripts' deadlines.
    async fn ping(&self) -> Result<(), StoreError> {
        let time = tokio::time::timeout(self.timeout, async {
            let mut connection = self.link.connection().await?;
            redis::cmd("TIME")
                .query_async::<(u64, u64)>(&mut connection)
                .await
        })
        .await;
        let result = match time {
            Ok(Ok((secs, micros))) => {
                self.read_clock(
                    secs.saturating_mul(1_000_000).saturating_add(micros),
                    Instant::now(),
                );
                Ok(())
            }
            Ok(Err(error)) => Err(StoreError::Redis(error)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        if result.is_err() {
            self.link.reset();
        }
        result
    }

    /// A round trip failed: count it, drop the connection, and on the transition to down log it
    /// and wake the watcher.
    fn failed(&self, error: &StoreError) {
        self.metrics.errors.inc();
        self.link.reset();
        if self.up.swap(false, Ordering::AcqRel) {
            self.metrics.up.set(0);
            tracing::warn!(
                store = %self.address,
                %error,
                policy = self.failure.as_str(),
                "the limits store cannot be reached; {} until it is back",
                match self.failure {
                    StoreFailure::Closed => "token requests are answered 503",
                    StoreFailure::Open => "this replica decides the limits in its own memory",
                }
            );
            self.wake.notify_one();
        }
    }

    fn mark_up(&self, was_down: bool) {
        self.up.store(true, Ordering::Release);
        self.metrics.up.set(1);
        if was_down {
            tracing::info!(store = %self.address, "the limits store is reachable again");
        }
    }

    /// The background watcher: pings with backoff while down, every [`HEALTH_INTERVAL`] while up.
    async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        let mut retry = RETRY_FIRST;
        loop {
            let wait = if self.is_up() { HEALTH_INTERVAL } else { retry };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.wake.notified() => continue,
                () = tokio::time::sleep(wait) => {}
            }
            let was_up = self.is_up();
            match self.ping().await {
                Ok(()) => {
                    retry = RETRY_FIRST;
                    if !was_up {
                        self.mark_up(true);
                    }
                }
                Err(error) => {
                    if was_up {
                        self.failed(&error);
                    } else {
                        tracing::debug!(store = %self.address, %error, "limits store still down");
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
        }
    }
}

/// Whether the store refused who we said we are: a wrong password (`WRONGPASS`), none where one
/// is required (`NOAUTH`), a user without the permission (`NOPERM`).
fn refuses_credentials(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

/// The script's answer, `{now, tat_1, ..., tat_k}`, as decisions by [`Gcra::decide`], checked to
/// agree with where the script stopped; `{now}` alone: run after its deadline, nothing spent.
fn decisions(budgets: &[Budget], values: &[u64]) -> Result<Vec<Decision>, StoreError> {
    let Some((&now, tats)) = values.split_first() else {
        return Err(StoreError::Inconsistent);
    };
    if tats.is_empty() {
        return Err(StoreError::Late);
    }
    if tats.len() > budgets.len() {
        return Err(StoreError::Inconsistent);
    }
    let mut out = Vec::with_capacity(tats.len());
    for (i, (&tat, budget)) in tats.iter().zip(budgets).enumerate() {
        let (decision, _) = budget.gcra.decide(tat, now);
        let last = i + 1 == tats.len();
        // Every budget before the last checked one let the request through; the last one refused
        // it, unless every budget was checked.
        let stopped_early = tats.len() < budgets.len();
        if (!last && !decision.allowed) || (last && stopped_early && decision.allowed) {
            return Err(StoreError::Inconsistent);
        }
        out.push(decision);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(spec: &str) -> Budget {
        Budget {
            key: "k".into(),
            gcra: Gcra::new(spec.parse().expect("spec")),
        }
    }

    #[test]
    fn answers_become_the_memory_stores_decisions() {
        let budgets = [budget("3/min"), budget("10/h")];
        let now = 1_700_000_000_000_000;
        // Both checked and allowed: fresh client budget, global with 2 of 10 spent.
        let d = decisions(&budgets, &[now, 0, now + 720_000_000]).expect("consistent");
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].allowed, d[0].remaining, d[0].reset),
            (true, 2, Duration::from_secs(20))
        );
        assert_eq!((d[1].allowed, d[1].remaining), (true, 7));
        assert_eq!(d[0], budgets[0].gcra.decide(0, now).0);
        // The client budget refused: the script stopped there.
        let d = decisions(&budgets, &[now, now + 60_000_000]).expect("consistent");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].retry_after, Some(Duration::from_secs(20)));
        // Answers that cannot come from the script as written.
        assert!(matches!(decisions(&budgets, &[now]), Err(StoreError::Late)));
        for bad in [
            vec![],
            vec![now, now + 60_000_000, 0],
            vec![now, 0],
            vec![now, 0, 0, 0],
        ] {
            assert!(
                matches!(decisions(&budgets, &bad), Err(StoreError::Inconsistent)),
                "{bad:?}"
            );
        }
    }
}
