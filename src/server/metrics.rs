//! Counters and histograms of the token server, exposed for `GET /metrics` in the Prometheus
//! text format (version 0.0.4) by `prometheus-client`.
//!
//! Each server has its own [`Registry`]: nothing is process-global, so several servers can run
//! in one process (the tests do). The hot path takes no lock: client names are known at start
//! (the credentials file), so the per-client, per-reason and per-class counters are created once
//! and kept as handles (a counter is one relaxed atomic), and the latency histograms are this
//! module's lock-free [`Histogram`] (prometheus-client's own takes a mutex per observation). Only
//! responses by status code are looked up per request (a read lock; which codes occur is not
//! known in advance). A scrape may see one counter a request ahead of another, which Prometheus
//! tolerates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s text: the classic Prometheus text format.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
/// Why a request was refused before a token was minted (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    Unauthenticated,
    ForbiddenOrigin,
    ForbiddenHost,
    ClientRateLimit,
    GlobalRateLimit,
    RefusalRateLimit,
    InvalidRequest,
    PayloadTooLarge,
    BodyTimeout,
    Busy,
    Timeout,
    LimitsStoreUnavailable,
}

impl Denial {
    pub const ALL: [Self; 12] = [
        Self::Unauthenticated,
        Self::ForbiddenOrigin,
        Self::ForbiddenHost,
        Self::ClientRateLimit,
        Self::GlobalRateLimit,
        Self::RefusalRateLimit,
        Self::InvalidRequest,
        Self::PayloadTooLarge,
        Self::BodyTimeout,
        Self::Busy,
        Self::Timeout,
        Self::LimitsStoreUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::ForbiddenHost => "forbidden_host",
            Self::ClientRateLimit => "client_rate_limit",
            Self::GlobalRateLimit => "global_rate_limit",
            Self::RefusalRateLimit => "refusal_rate_limit",
            Self::InvalidRequest => "invalid_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::Busy => "busy",
            Self::Timeout => "timeout",
            Self::LimitsStoreUnavailable => "limits_store_unavailable",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|d| *d == self).unwrap_or(0)
    }
}

/// How an upstream attempt failed (the `class` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// 401/403: the API key is refused.
    Rejected,
    /// 429.
    RateLimited,
    /// Connection, timeout, 5xx, malformed answer.
    Transient,
    /// 400, 404 and other answers that retrying cannot fix.
    Refused,
}

impl UpstreamFailure {
    pub const ALL: [Self; 4] = [
        Self::Rejected,
        Self::RateLimited,
        Self::Transient,
        Self::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::RateLimited => "rate_limited",
            Self::Transient => "transient",
            Self::Refused => "refused",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|d| *d == self).unwrap_or(0)
    }
}

/// Bucket bounds in seconds: loopback mints take about a millisecond, AssemblyAI's 50-300 ms,
/// and the slow tail runs to the timeouts.
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket latency histogram of relaxed atomics; clones share the counts (one clone
/// lives in the registry).
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
struct HistogramCells {
    /// Per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0); BOUNDS.len() + 1];
        for (i, bucket) in buckets.iter_mut().enumerate() {
            *bucket = (
                BOUNDS.get(i).copied().unwrap_or(f64::INFINITY),
                self.0.buckets[i].load(Ordering::Relaxed),
            );
        }
        // The buckets were read one by one; the count is their total as they saw it, so
        // +Inf and _count agree.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabel {
    client: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The limits store's series, shared with the store (clones share the counts).
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    /// Round trips that failed or timed out.
    pub errors: Counter,
    /// Time of each round trip (a decision of one request).
    pub latency: Histogram,
    /// Decisions made in memory because the store was down (`limits_store_failure = "open"`).
    pub fallbacks: Counter,
    /// 1 while the store answers (always, for the memory store).
    pub up: Gauge,
}

impl StoreMetrics {
    fn register(registry: &mut Registry) -> Self {
        let store = Self::default();
        registry.register(
            "aai_live_serve_limits_store_errors",
            "Round trips to the limits store that failed or timed out",
            store.errors.clone(),
        );
        registry.register(
            "aai_live_serve_limits_store_request_duration_seconds",
            "Time of one round trip to the limits store",
            store.latency.clone(),
        );
        registry.register(
            "aai_live_serve_limits_store_fallbacks",
            "Rate-limit decisions made in memory while the limits store was down",
            store.fallbacks.clone(),
        );
        registry.register(
            "aai_live_serve_limits_store_up",
            "1 while the limits store answers",
            store.up.clone(),
        );
        store
    }
}

/// Everything `GET /metrics` reports (the series are listed in docs/server.md).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    minted: BTreeMap<Arc<str>, Counter>,
    denied: [Counter; Denial::ALL.len()],
    upstream_failures: [Counter; UpstreamFailure::ALL.len()],
    upstream_retries: Counter,
    responses: Family<CodeLabel, Counter>,
    pub token_latency: Histogram,
    pub upstream_latency: Histogram,
    in_flight: Gauge,
    store: StoreMetrics,
}

impl Metrics {
    /// Metrics for these clients (their names label the minted counter).
    ///
    /// Names are registered without the `_total` that prometheus-client appends to counters;
    /// help texts without the full stop it appends.
    pub fn new<'a>(clients: impl IntoIterator<Item = &'a Arc<str>>) -> Self {
        let mut registry = Registry::default();

        let info = Family::<VersionLabel, Gauge>::default();
        info.get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        registry.register("aai_live_serve_info", "The token server's version", info);

        let minted_family = Family::<ClientLabel, Counter>::default();
        let minted = clients
            .into_iter()
            .map(|name| {
                let label = ClientLabel {
                    client: Arc::clone(name),
                };
                (Arc::clone(name), minted_family.get_or_create_owned(&label))
            })
            .collect();
        registry.register(
            "aai_live_serve_tokens_minted",
            "Tokens handed out, by client",
            minted_family,
        );

        let denied_family = Family::<ReasonLabel, Counter>::default();
        let denied = Denial::ALL.map(|reason| {
            denied_family.get_or_create_owned(&ReasonLabel {
                reason: reason.as_str(),
            })
        });
        registry.register(
            "aai_live_serve_requests_denied",
            "Token requests refused before minting, by reason",
            denied_family,
        );

        let failures_family = Family::<ClassLabel, Counter>::default();
        let upstream_failures = UpstreamFailure::ALL.map(|class| {
            failures_family.get_or_create_owned(&ClassLabel {
                class: class.as_str(),
            })
        });
        registry.register(
            "aai_live_serve_upstream_failures",
            "Failed attempts at the upstream token endpoint, by class",
            failures_family,
        );

        let upstream_retries = Counter::default();
        registry.register(
            "aai_live_serve_upstream_retries",
            "Upstream attempts repeated after a transient failure",
            upstream_retries.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "aai_live_serve_upstream_in_flight",
            "Upstream token requests under way",
            in_flight.clone(),
        );
        let responses = Family::<CodeLabel, Counter>::default();
        registry.register(
            "aai_live_serve_responses",
            "HTTP responses, by status code",
            responses.clone(),
        );
        let token_latency = Histogram::default();
        registry.register(
            "aai_live_serve_token_request_duration_seconds",
            "Time to answer a token request, refusals included",
            token_latency.clone(),
        );
        let upstream_latency = Histogram::default();
        registry.register(
            "aai_live_serve_upstream_request_duration_seconds",
            "Time of one attempt at the upstream token endpoint",
            upstream_latency.clone(),
        );

        let store = StoreMetrics::register(&mut registry);

        Self {
            registry,
            minted,
            denied,
            upstream_failures,
            upstream_retries,
            responses,
            token_latency,
            upstream_latency,
            in_flight,
            store,
        }
    }

    /// The limits store's series, for the store to update.
    pub fn store(&self) -> StoreMetrics {
        self.store.clone()
    }

    /// Count a token for `client`; a name not given at start is not counted (it cannot
    /// authenticate, so this does not happen).
    pub fn minted(&self, client: &str) {
        if let Some(counter) = self.minted.get(client) {
            counter.inc();
        }
    }

    pub fn denied(&self, reason: Denial) {
        self.denied[reason.index()].inc();
    }

    pub fn upstream_failure(&self, class: UpstreamFailure) {
        self.upstream_failures[class.index()].inc();
    }

    pub fn upstream_retry(&self) {
        self.upstream_retries.inc();
    }

    pub fn response(&self, status: u16) {
        self.responses
            .get_or_create(&CodeLabel { code: status })
            .inc();
    }

    pub fn in_flight(&self, delta: i64) {
        self.in_flight.inc_by(delta);
    }

    /// Total tokens minted, all clients.
    pub fn minted_total(&self) -> u64 {
        self.minted.values().map(Counter::get).sum()
    }

    pub fn denied_count(&self, reason: Denial) -> u64 {
        self.denied[reason.index()].get()
    }

    /// The Prometheus text exposition (version 0.0.4, [`CONTENT_TYPE`]). prometheus-client's
    /// classic-format encoder is used rather than its OpenMetrics one, so there is no `# EOF`
    /// line and no `_created` series, and a metric family with no series yet (responses before
    /// the first one) is left out, as the Go client does.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_series() {
        let names: Vec<Arc<str>> = vec![Arc::from("alice"), Arc::from("bob")];
        let m = Metrics::new(&names);
        m.minted("alice");
        m.minted("alice");
        m.minted("mallory");
        m.denied(Denial::ClientRateLimit);
        m.upstream_failure(UpstreamFailure::Transient);
        m.upstream_retry();
        m.response(200);
        m.response(429);
        m.token_latency.observe(Duration::from_micros(700));
        m.token_latency.observe(Duration::from_secs(20));
        let text = m.render();
        for line in [
            "aai_live_serve_tokens_minted_total{client=\"alice\"} 2",
            "aai_live_serve_tokens_minted_total{client=\"bob\"} 0",
            "aai_live_serve_requests_denied_total{reason=\"client_rate_limit\"} 1",
            "aai_live_serve_requests_denied_total{reason=\"unauthenticated\"} 0",
            "aai_live_serve_upstream_failures_total{class=\"transient\"} 1",
            "aai_live_serve_upstream_retries_total 1",
            "aai_live_serve_responses_total{code=\"429\"} 1",
            "aai_live_serve_token_request_duration_seconds_bucket{le=\"0.0005\"} 0",
            "aai_live_serve_token_request_duration_seconds_bucket{le=\"0.001\"} 1",
            "aai_live_serve_token_request_duration_seconds_bucket{le=\"10\"} 1",
            "aai_live_serve_token_request_duration_seconds_bucket{le=\"+Inf\"} 2",
            "aai_live_serve_token_request_duration_seconds_sum 20.0007",
            "aai_live_serve_token_request_duration_seconds_count 2",
            "aai_live_serve_upstream_request_duration_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("mallory"));
        assert!(!text.contains("# EOF"), "classic format, not OpenMetrics");
        assert_eq!(m.minted_total(), 2);
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }
}
