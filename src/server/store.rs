//! Where the server's three budgets live and what happens when that place cannot be reached.
//!
//! [`Limits`] holds the per-client, global and per-address refusal budgets. With the `memory`
//! store they are [`Limiter`]s in this process. With a Redis store every decision is a round trip
//! to it ([`RedisStore`]), and the memory limiters stay as the fallback of the `open` failure
//! policy: while the store is down, `closed` refuses every token request with 503 and `open`
//! decides in this replica's memory (counted in `/metrics`), both without waiting on the store.
//! Either way the order of the checks is the same: the client's budget, then the global one
//! (which a refused client never reaches), so both stores give the same answers.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::limit::{Decision, Gcra, Limiter, RateSpec};
use super::metrics::{Metrics, StoreMetrics};
use super::redis_store::{Budget, RedisStore, StoreError};
use crate::config::{Choice, LimitsStore, ServerSettings, StoreFailure};
use crate::files::{MAX_FILE_BYTES, read_capped};

/// The limits store as `serve` is told: `[server] limits_store*`, with the password read.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub store: LimitsStore,
    pub failure: StoreFailure,
    pub password: Option<SecretString>,
    /// CA certificate (PEM) for a `rediss://` store.
    pub ca: Option<PathBuf>,
    pub prefix: String,
    pub timeout: Duration,
}

impl Default for StoreConfig {
    /// The memory store.
    fn default() -> Self {
        let settings = ServerSettings::default();
        Self {
            store: settings.limits_store,
            failure: settings.limits_store_failure,
            password: None,
            ca: None,
            prefix: settings.limits_store_prefix,
            timeout: settings.limits_store_timeout,
        }
    }
}

impl StoreConfig {
    /// A Redis store at `url` (`redis://127.0.0.1:6379/0`), the other settings as by default.
    pub fn redis(url: &str) -> Result<Self, String> {
        Ok(Self {
            store: url.parse()?,
            ..Self::default()
        })
    }
}

/// A token request's place in the store was not available: the `closed` policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

/// The decisions of an authenticated request: its client's budget, then the global one (not
/// checked when the client's refused). `None` for a budget that is off.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admission {
    pub client: Option<Decision>,
    pub global: Option<Decision>,
}

/// The three budgets; see the module doc.
#[derive(Debug)]
pub struct Limits {
    client: Option<Limiter<Arc<str>>>,
    global: Option<Limiter<()>>,
    refusal: Option<Limiter<IpAddr>>,
    shared: Option<Arc<RedisStore>>,
    prefix: String,
    failure: StoreFailure,
    metrics: StoreMetrics,
}

impl Limits {
    /// The budgets for these rates, in `store`. Reads the CA file of a `rediss://` store;
    /// connects nothing yet ([`Limits::start`] does).
    pub fn new(
        client: Option<RateSpec>,
        global: Option<RateSpec>,
        refusal: Option<RateSpec>,
        store: &StoreConfig,
        metrics: &Metrics,
    ) -> Result<Self, StoreError> {
        let metrics = metrics.store();
        let shared = match &store.store {
            LimitsStore::Memory => None,
            LimitsStore::Redis(address) => {
                let ca = match &store.ca {
                    Some(path) => {
                        Some(
                            read_capped(path, MAX_FILE_BYTES).map_err(|e| StoreError::Ca {
                                path: path.display().to_string(),
                                reason: e.to_string(),
                            })?,
                        )
                    }
                    None => None,
                };
                Some(Arc::new(RedisStore::new(
                    address,
                    store.password.as_ref(),
                    ca.as_deref(),
                    store.timeout,
                    store.failure,
                    metrics.clone(),
                )?))
            }
        };
        if shared.is_none() {
            metrics.up.set(1);
        }
        Ok(Self {
            client: client.map(Limiter::new),
            global: global.map(Limiter::new),
            refusal: refusal.map(Limiter::new),
            shared,
            prefix: store.prefix.clone(),
            failure: store.failure,
            metrics,
        })
    }

    /// Connect to a shared store and watch it until `cancel`; nothing for the memory store. A
    /// store that is down is no error (the failure policy applies); one that refuses our
    /// credentials is.
    pub async fn start(&self, cancel: CancellationToken) -> Result<(), StoreError> {
        match &self.shared {
            Some(shared) => shared.start(cancel).await,
            None => Ok(()),
        }
    }

    pub fn client_spec(&self) -> Option<RateSpec> {
        self.client.as_ref().map(Limiter::spec)
    }

    pub fn global_spec(&self) -> Option<RateSpec> {
        self.global.as_ref().map(Limiter::spec)
    }

    pub fn refusal_spec(&self) -> Option<RateSpec> {
        self.refusal.as_ref().map(Limiter::spec)
    }

    /// Spend one request of `client`'s budget and, if it has one left, of the global budget.
    pub async fn admit(&self, client: &Arc<str>) -> Result<Admission, StoreUnavailable> {
        if let Some(shared) = &self.shared {
            let mut budgets = Vec::with_capacity(2);
            if let Some(limiter) = &self.client {
                budgets.push(Budget {
                    key: format!("{}:client:{client}", self.prefix),
                    gcra: Gcra::new(limiter.spec()),
                });
            }
            if let Some(limiter) = &self.global {
                budgets.push(Budget {
                    key: format!("{}:global", self.prefix),
                    gcra: Gcra::new(limiter.spec()),
                });
            }
            if budgets.is_empty() {
                return Ok(Admission::default());
            }
            match shared.decide(&budgets).await {
                Ok(decisions) => {
                    let mut decisions = decisions.into_iter();
                    let client_decision = self.client.as_ref().and_then(|_| decisions.next());
                    return Ok(Admission {
                        client: client_decision,
                        global: self.global.as_ref().and_then(|_| decisions.next()),
                    });
                }
                Err(_) => self.fall_back()?,
            }
        }
        let client_decision = self.client.as_ref().map(|l| l.check(client));
        let global = match client_decision {
            Some(d) if !d.allowed => None,
            _ => self.global.as_ref().map(|l| l.check(&())),
        };
        Ok(Admission {
            client: client_decision,
            global,
        })
    }

    /// Count a refused request against `addr`'s refusal budget (`None` when that budget is off).
    pub async fn refusal(&self, addr: IpAddr) -> Result<Option<Decision>, StoreUnavailable> {
        let Some(limiter) = &self.refusal else {
            return Ok(None);
        };
        if let Some(shared) = &self.shared {
            let budget = Budget {
                key: format!("{}:refusal:{addr}", self.prefix),
                gcra: Gcra::new(limiter.spec()),
            };
            match shared.decide(std::slice::from_ref(&budget)).await {
                Ok(decisions) => return Ok(decisions.into_iter().next()),
                Err(_) => self.fall_back()?,
            }
        }
        Ok(Some(limiter.check(&addr)))
    }

    /// The store gave no decision: `closed` refuses, `open` goes on in memory (counted).
    fn fall_back(&self) -> Result<(), StoreUnavailable> {
        match self.failure {
            StoreFailure::Closed => Err(StoreUnavailable),
            StoreFailure::Open => {
                self.metrics.fallbacks.inc();
                Ok(())
            }
        }
    }

    /// Forget memory keys whose budget is full again (the Redis keys expire on their own).
    pub fn retain_recent(&self) {
        if let Some(limiter) = &self.client {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.refusal {
            limiter.retain_recent();
        }
    }

    /// Whether this replica should get traffic: the memory store always, a shared store while
    /// it answers, or under the `open` policy (which serves without it).
    pub fn ready(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|s| s.is_up() || self.failure == StoreFailure::Open)
    }

    /// The `/readyz` body's description of the store.
    pub fn describe(&self) -> Value {
        match &self.shared {
            None => json!({ "kind": "memory", "state": "up" }),
            Some(shared) => json!({
                "kind": "redis",
                "address": shared.address(),
                "state": if shared.is_up() { "up" } else { "down" },
                "failure_policy": self.failure.as_str(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Option<RateSpec> {
        s.parse().ok()
    }

    fn memory(client: &str, global: &str) -> Limits {
        let metrics = Metrics::new(&[]);
        Limits::new(
            spec(client),
            spec(global),
            spec("2/h"),
            &StoreConfig::default(),
            &metrics,
        )
        .expect("memory store")
    }

    #[tokio::test]
    async fn a_refused_client_does_not_spend_the_global_budget() {
        let limits = memory("2/h", "3/h");
        let (alice, bob): (Arc<str>, Arc<str>) = (Arc::from("alice"), Arc::from("bob"));
        for _ in 0..2 {
            let a = limits.admit(&alice).await.expect("memory");
            assert!(a.client.is_some_and(|d| d.allowed));
            assert!(a.global.is_some_and(|d| d.allowed));
        }
        let refused = limits.admit(&alice).await.expect("memory");
        assert!(refused.client.is_some_and(|d| !d.allowed));
        assert_eq!(refused.global, None, "the global budget was not touched");
        let a = limits.admit(&bob).await.expect("memory");
        assert_eq!(a.global.map(|d| d.remaining), Some(0));
        let a = limits.admit(&bob).await.expect("memory");
        assert!(a.client.is_some_and(|d| d.allowed) && a.global.is_some_and(|d| !d.allowed));

        let addr: IpAddr = "192.0.2.7".parse().expect("ip");
        assert!(
            limits
                .refusal(addr)
                .await
                .expect("memory")
                .is_some_and(|d| d.allowed)
        );
        assert!(limits.ready());
        assert_eq!(limits.describe()["kind"], "memory");
    }

    #[tokio::test]
    async fn an_unreachable_redis_store_follows_the_failure_policy() {
        // Port 1 on loopback: nothing listens, so every connection is refused at once.
        let metrics = Metrics::new(&[]);
        for (failure, want) in [
            (StoreFailure::Closed, Err(StoreUnavailable)),
            (StoreFailure::Open, Ok(true)),
        ] {
            let store = StoreConfig {
                failure,
                timeout: Duration::from_millis(200),
                ..StoreConfig::redis("redis://127.0.0.1:1/0").expect("url")
            };
            let limits =
                Limits::new(spec("5/h"), None, spec("5/h"), &store, &metrics).expect("lazy store");
            let cancel = CancellationToken::new();
            limits
                .start(cancel.clone())
                .await
                .expect("a store that is down starts");
            let alice: Arc<str> = Arc::from("alice");
            let got = limits
                .admit(&alice)
                .await
                .map(|a| a.client.is_some_and(|d| d.allowed));
            assert_eq!(got, want, "{failure:?}");
            assert_eq!(limits.ready(), failure == StoreFailure::Open);
            assert_eq!(limits.describe()["state"], "down");
            cancel.cancel();
        }
        let text = metrics.render();
        assert!(
            text.contains("aai_live_serve_limits_store_fallbacks_total 1"),
            "{text}"
        );
        assert!(text.contains("aai_live_serve_limits_store_up 0"), "{text}");
    }
}
