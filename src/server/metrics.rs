//! Counters and histograms of the token server, rendered in the Prometheus text format for
//! `GET /metrics`.
//!
//! Everything is a relaxed atomic: a scrape may see one counter a request ahead of another, which
//! Prometheus tolerates, and the hot path takes no lock. Client names are known at start (the
//! credentials file), so per-client series are allocated once and never grow.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    Busy,
    Timeout,
}

impl Denial {
    pub const ALL: [Self; 10] = [
        Self::Unauthenticated,
        Self::ForbiddenOrigin,
        Self::ForbiddenHost,
        Self::ClientRateLimit,
        Self::GlobalRateLimit,
        Self::RefusalRateLimit,
        Self::InvalidRequest,
        Self::PayloadTooLarge,
        Self::Busy,
        Self::Timeout,
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
            Self::Busy => "busy",
            Self::Timeout => "timeout",
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

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
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
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BOUNDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        // The buckets were read one by one; +Inf is the count as they saw it.
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Everything `GET /metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    minted: BTreeMap<Arc<str>, AtomicU64>,
    denied: [AtomicU64; Denial::ALL.len()],
    upstream_failures: [AtomicU64; UpstreamFailure::ALL.len()],
    upstream_retries: AtomicU64,
    /// Responses by status code: a handful of codes, so a small map behind a lock held for
    /// one increment.
    responses: std::sync::Mutex<BTreeMap<u16, u64>>,
    pub token_latency: Histogram,
    pub upstream_latency: Histogram,
    in_flight: AtomicU64,
}

impl Metrics {
    /// Metrics for these clients (their names label the minted counter).
    pub fn new<'a>(clients: impl IntoIterator<Item = &'a Arc<str>>) -> Self {
        Self {
            minted: clients
                .into_iter()
                .map(|name| (Arc::clone(name), AtomicU64::new(0)))
                .collect(),
            denied: Default::default(),
            upstream_failures: Default::default(),
            upstream_retries: AtomicU64::new(0),
            responses: std::sync::Mutex::default(),
            token_latency: Histogram::default(),
            upstream_latency: Histogram::default(),
            in_flight: AtomicU64::new(0),
        }
    }

    pub fn minted(&self, client: &str) {
        if let Some(counter) = self.minted.get(client) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn denied(&self, reason: Denial) {
        self.denied[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn upstream_failure(&self, class: UpstreamFailure) {
        self.upstream_failures[class.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn upstream_retry(&self) {
        self.upstream_retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn response(&self, status: u16) {
        if let Ok(mut map) = self.responses.lock() {
            *map.entry(status).or_default() += 1;
        }
    }

    pub fn in_flight(&self, delta: i64) {
        if delta >= 0 {
            self.in_flight
                .fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.in_flight
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Total tokens minted, all clients.
    pub fn minted_total(&self) -> u64 {
        self.minted
            .values()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn denied_count(&self, reason: Denial) -> u64 {
        self.denied[reason.index()].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP aai_live_serve_info The token server's version.\n\
             # TYPE aai_live_serve_info gauge\n\
             aai_live_serve_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP aai_live_serve_tokens_minted_total Tokens handed out, by client.\n\
             # TYPE aai_live_serve_tokens_minted_total counter"
        );
        for (client, count) in &self.minted {
            let _ = writeln!(
                out,
                "aai_live_serve_tokens_minted_total{{client=\"{client}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP aai_live_serve_requests_denied_total Token requests refused before minting, by reason.\n\
             # TYPE aai_live_serve_requests_denied_total counter"
        );
        for reason in Denial::ALL {
            let _ = writeln!(
                out,
                "aai_live_serve_requests_denied_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.denied_count(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP aai_live_serve_upstream_failures_total Failed attempts at the upstream token endpoint, by class.\n\
             # TYPE aai_live_serve_upstream_failures_total counter"
        );
        for class in UpstreamFailure::ALL {
            let _ = writeln!(
                out,
                "aai_live_serve_upstream_failures_total{{class=\"{}\"}} {}",
                class.as_str(),
                self.upstream_failures[class.index()].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP aai_live_serve_upstream_retries_total Upstream attempts repeated after a transient failure.\n\
             # TYPE aai_live_serve_upstream_retries_total counter\n\
             aai_live_serve_upstream_retries_total {}",
            self.upstream_retries.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP aai_live_serve_upstream_in_flight Upstream token requests under way.\n\
             # TYPE aai_live_serve_upstream_in_flight gauge\n\
             aai_live_serve_upstream_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP aai_live_serve_responses_total HTTP responses, by status code.\n\
             # TYPE aai_live_serve_responses_total counter"
        );
        if let Ok(map) = self.responses.lock() {
            for (code, count) in map.iter() {
                let _ = writeln!(
                    out,
                    "aai_live_serve_responses_total{{code=\"{code}\"}} {count}"
                );
            }
        }
        self.token_latency.render(
            &mut out,
            "aai_live_serve_token_request_duration_seconds",
            "Time to answer a token request, refusals included.",
        );
        self.upstream_latency.render(
            &mut out,
            "aai_live_serve_upstream_request_duration_seconds",
            "Time of one attempt at the upstream token endpoint.",
        );
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
        assert_eq!(m.minted_total(), 2);
    }
}
