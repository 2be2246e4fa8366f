//! Load benchmark of `aai-live serve`: `/token` throughput and p50/p99 latency on loopback with
//! the emulator as the upstream. Saturation set-ups: no rate limiting; rate limits that never
//! bind, in memory and in Redis (what the limiter and the shared store cost); a per-client limit
//! that refuses most requests, in memory and in Redis (the cost of a refusal). Then latency at a
//! fixed request rate, memory against Redis, to read the latency one Redis round trip adds; the
//! memory limiter alone; and the Redis store's decisions alone. It prints figures; it is not a
//! pass/fail test.
//!
//! `cargo bench --bench server` (see docs/benchmarks.md). The emulator, the server and
//! redis-server (started on a free loopback port, as the tests do; skipped with a message when
//! it is not installed) run as separate processes, so each one's CPU can be read from /proc.
//! Environment: `BENCH_SECONDS` (10, per set-up), `BENCH_CLIENT` (`wrk` or `reqwest`; default
//! wrk when on PATH), `BENCH_RATE` (2000, the fixed rate). Arguments after `--`: `off`, `on`,
//! `on-redis`, `binding`, `binding-redis`, `latency`, `limiter`, `store` to run only those parts.

mod common;
#[path = "../tests/common/redis.rs"]
mod redis_server;

use common::{clk_tck, group, system_ticks};

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use redis_server::RedisServer;
use tokio::task::JoinSet;

const KEY: &str = "bench-key";
const CREDENTIAL: &str = "bench-credential-0123456789abcdef";
const CONNECTIONS: usize = 64;
const BINDING_LIMIT: &str = "100/s";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs harness-less benches without `--bench`: stay cheap there.
    if !args.iter().any(|a| a == "--bench") {
        println!("server benchmark: skipped (run it with `cargo bench --bench server`)");
        return ExitCode::SUCCESS;
    }
    let only: Vec<String> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(10);
    let wrk_available = Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let client = match std::env::var("BENCH_CLIENT").as_deref() {
        Ok("reqwest") => Client::Reqwest,
        Ok("wrk") if !wrk_available => {
            println!("BENCH_CLIENT=wrk but wrk is not on PATH: using reqwest");
            Client::Reqwest
        }
        _ if wrk_available => Client::Wrk,
        _ => Client::Reqwest,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(Duration::from_secs(seconds), client, &only))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    Wrk,
    Reqwest,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Self::Wrk => "wrk",
            Self::Reqwest => "reqwest",
        }
    }
}

/// One set-up: a name for `--` selection, a label, the `serve` flags, and whether its limits
/// live in Redis.
struct Setup {
    id: &'static str,
    label: &'static str,
    flags: &'static [&'static str],
    redis: bool,
}

const NEVER_BINDING: &[&str] = &[
    "--rate-limit",
    "1000000/s",
    "--global-rate-limit",
    "1000000/s",
];
const BINDING: &[&str] = &["--rate-limit", BINDING_LIMIT, "--global-rate-limit", "off"];

const SETUPS: [Setup; 5] = [
    Setup {
        id: "off",
        label: "no rate limiting",
        flags: &["--rate-limit", "off", "--global-rate-limit", "off"],
        redis: false,
    },
    Setup {
        id: "on",
        label: "rate limits on, never binding, memory store",
        flags: NEVER_BINDING,
        redis: false,
    },
    Setup {
        id: "on-redis",
        label: "rate limits on, never binding, Redis store",
        flags: NEVER_BINDING,
        redis: true,
    },
    Setup {
        id: "binding",
        label: "per-client limit 100/s, binding, memory store",
        flags: BINDING,
        redis: false,
    },
    Setup {
        id: "binding-redis",
        label: "per-client limit 100/s, binding, Redis store",
        flags: BINDING,
        redis: true,
    },
];

/// The processes of one set-up: a fresh emulator (it keeps every token it mints for ten
/// minutes, and its token map growing, and rehashing under its lock, would show in the next
/// set-up's tail latency: docs/benchmarks.md, the emulator's token endpoint) and a server.
struct Stack {
    emulator: Proc,
    serve: Proc,
}

fn stack(
    home: &std::path::Path,
    credentials: &str,
    flags: &[&str],
    store: Option<(&str, &str)>,
) -> Result<Stack, String> {
    let emulator = Proc::start(
        "emulator",
        &["emulate", "--listen", "127.0.0.1:0", "--api-key", KEY],
        "aai-live emulator listening on http://127.0.0.1:",
        home,
        &[],
    )
    .map_err(|e| format!("cannot start the emulator: {e}"))?;
    let upstream = format!("http://127.0.0.1:{}", emulator.port);
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--credentials",
        credentials,
        "--upstream",
        &upstream,
        "--key-env",
        "BENCH_AAI_KEY",
        "--max-in-flight",
        "1024",
    ];
    args.extend_from_slice(flags);
    // A store of its own per set-up: a fresh key prefix, so no set-up inherits spent budgets.
    let mut env = Vec::new();
    if let Some((url, prefix)) = store {
        args.extend_from_slice(&["--limits-store", url]);
        env.push(("AAI_LIVE__SERVER__LIMITS_STORE_PREFIX", prefix));
    }
    let serve = Proc::start(
        "serve",
        &args,
        "aai-live serve listening on http://127.0.0.1:",
        home,
        &env,
    )
    .map_err(|e| format!("cannot start aai-live serve: {e}"))?;
    Ok(Stack { emulator, serve })
}

async fn run(window: Duration, client: Client, only: &[String]) -> ExitCode {
    let wanted = |id: &str| only.is_empty() || only.iter().any(|o| o == id);
    let home = tempfile::tempdir().expect("temp dir");
    let credentials = home.path().join("credentials");
    std::fs::write(
        &credentials,
        format!("bench:{}\n", aai_live::server::hash_credential(CREDENTIAL)),
    )
    .expect("write the credentials file");
    let credentials = credentials.display().to_string();
    let clk_tck = clk_tck();
    let redis_wanted =
        SETUPS.iter().any(|s| s.redis && wanted(s.id)) || wanted("latency") || wanted("store");
    let redis = if redis_wanted {
        RedisServer::start()
    } else {
        None
    };
    println!(
        "server benchmark: GET /token with a bearer credential, {CONNECTIONS} keep-alive \
         connections for {} s per set-up ({}); upstream: a fresh emulator per set-up; serve, \
         the emulator, redis-server and the load generator share the machine's {} cores",
        window.as_secs(),
        client.name(),
        std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get)
    );
    let mut summary = Vec::new();
    for setup in &SETUPS {
        if !wanted(setup.id) {
            continue;
        }
        let store = match (&redis, setup.redis) {
            (_, false) => None,
            (Some(redis), true) => Some(redis.url()),
            (None, true) => {
                summary.push(format!("{}: skipped (no redis-server)", setup.label));
                continue;
            }
        };
        let stack = match stack(
            home.path(),
            &credentials,
            setup.flags,
            store.as_deref().map(|url| (url, setup.id)),
        ) {
            Ok(stack) => stack,
            Err(e) => {
                println!("{e}");
                return ExitCode::FAILURE;
            }
        };
        println!();
        println!("--- {} ---", setup.label);
        let redis_pid = if setup.redis {
            redis.as_ref().and_then(RedisServer::pid)
        } else {
            None
        };
        let line = setup_run(
            &stack.serve,
            &stack.emulator,
            redis_pid,
            window,
            client,
            clk_tck,
        )
        .await;
        summary.push(format!("{}: {line}", setup.label));
    }
    if wanted("latency") {
        summary.extend(latency(home.path(), &credentials, redis.as_ref(), window).await);
    }
    if wanted("limiter") {
        summary.push(limiter_cost());
    }
    if wanted("store") {
        match &redis {
            Some(redis) => summary.push(store_cost(&redis.url()).await),
            None => summary.push("Redis store alone: skipped (no redis-server)".into()),
        }
    }
    println!();
    println!("=== summary ===");
    for line in summary {
        println!("{line}");
    }
    ExitCode::SUCCESS
}

async fn setup_run(
    serve: &Proc,
    emulator: &Proc,
    redis: Option<u32>,
    window: Duration,
    client: Client,
    clk_tck: u64,
) -> String {
    let url = format!("http://127.0.0.1:{}/token", serve.port);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", serve.port);
    // A short warm-up fills the upstream connection pool.
    let _ = load(Client::Reqwest, &url, Duration::from_millis(300)).await;
    let redis_ticks = || redis.map_or(0, ticks);
    let before = (
        responses(&metrics_url).await,
        serve.ticks(),
        emulator.ticks(),
        Instant::now(),
        redis_ticks(),
    );
    let machine_before = system_ticks();
    let result = load(client, &url, window).await;
    let after = (
        responses(&metrics_url).await,
        serve.ticks(),
        emulator.ticks(),
        Instant::now(),
        redis_ticks(),
    );
    let machine_after = system_ticks();
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            println!("failed: {e}");
            return format!("failed ({e})");
        }
    };
    let wall = after.3.duration_since(before.3).as_secs_f64();
    let cpu = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / clk_tck as f64 / wall * 100.0;
    let count = |code: u16| after.0.get(code).saturating_sub(before.0.get(code));
    let (ok, limited) = (count(200), count(429));
    let other = after
        .0
        .total()
        .saturating_sub(before.0.total())
        .saturating_sub(ok + limited);
    let ms = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.2} ms"));
    let redis_cpu = redis.map_or_else(String::new, |_| {
        format!(", redis-server {:.0}%", cpu(before.4, after.4))
    });
    let line = format!(
        "{} req/s, p50 {}, p99 {}; {} × 200 ({} tokens/s), {} × 429, {} other, {} transport errors; \
         serve CPU {:.0}% of one core, emulator {:.0}%{redis_cpu}, machine {:.0}% busy",
        group(result.requests_per_s),
        ms(result.p50_ms),
        ms(result.p99_ms),
        group(ok as f64),
        group(ok as f64 / result.seconds),
        group(limited as f64),
        other,
        result.errors,
        cpu(before.1, after.1),
        cpu(before.2, after.2),
        match (machine_before, machine_after) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 =>
                (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0,
            _ => f64::NAN,
        },
    );
    println!("{line}");
    line
}

/// Latency at a fixed request rate (the bench's own open-loop client), limits on and never
/// binding, in memory and then in Redis, each on a fresh emulator and server: the difference is
/// what one Redis round trip per request adds.
async fn latency(
    home: &std::path::Path,
    credentials: &str,
    redis: Option<&RedisServer>,
    window: Duration,
) -> Vec<String> {
    let rate = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|r| *r > 0)
        .unwrap_or(2000);
    let mut lines = Vec::new();
    let mut measured = Vec::new();
    let url = redis.map(RedisServer::url);
    for (label, store) in [
        ("memory store", None),
        ("Redis store", url.as_deref().map(|url| (url, "latency"))),
    ] {
        if label == "Redis store" && store.is_none() {
            lines.push(format!(
                "fixed {rate} req/s, Redis store: skipped (no redis-server)"
            ));
            continue;
        }
        let stack = match stack(home, credentials, NEVER_BINDING, store) {
            Ok(stack) => stack,
            Err(e) => {
                lines.push(format!("fixed {rate} req/s, {label}: {e}"));
                continue;
            }
        };
        let url = format!("http://127.0.0.1:{}/token", stack.serve.port);
        let _ = load(Client::Reqwest, &url, Duration::from_millis(300)).await;
        println!();
        println!("--- fixed {rate} req/s, {label} ---");
        let result = fixed_rate(&url, rate, window).await;
        let line = format!("fixed {rate} req/s, {label}: {}", result.describe());
        println!("{line}");
        lines.push(line);
        measured.push(result);
        drop(stack);
    }
    if let [memory, redis] = &measured[..] {
        let added = |a: Option<f64>, b: Option<f64>| {
            a.zip(b)
                .map_or_else(|| "?".to_owned(), |(a, b)| format!("{:+.3} ms", b - a))
        };
        lines.push(format!(
            "fixed {rate} req/s, added by the Redis store: p50 {}, p90 {}, p99 {}",
            added(memory.percentile(0.50), redis.percentile(0.50)),
            added(memory.percentile(0.90), redis.percentile(0.90)),
            added(memory.percentile(0.99), redis.percentile(0.99)),
        ));
    }
    lines
}

/// Latencies of requests sent at fixed times.
struct FixedRate {
    rate: u32,
    /// Microseconds, sorted.
    latencies: Vec<u32>,
    errors: u64,
    /// The furthest a request was sent behind its schedule (the client keeping up).
    worst_lag: Duration,
}

impl FixedRate {
    fn percentile(&self, p: f64) -> Option<f64> {
        (!self.latencies.is_empty()).then(|| {
            let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
            f64::from(self.latencies[i]) / 1000.0
        })
    }

    fn describe(&self) -> String {
        let ms = |p| {
            self.percentile(p)
                .map_or_else(|| "?".to_owned(), |v| format!("{v:.3} ms"))
        };
        format!(
            "p50 {}, p90 {}, p99 {}, p99.9 {}, max {}; {} requests ({} req/s asked), {} errors; \
             sends at most {:.2} ms behind schedule",
            ms(0.50),
            ms(0.90),
            ms(0.99),
            ms(0.999),
            ms(1.0),
            self.latencies.len(),
            self.rate,
            self.errors,
            self.worst_lag.as_secs_f64() * 1000.0
        )
    }
}

/// Send one request every `1/rate` s for `window` (open loop: a slow answer does not delay the
/// next request), each on its own task over a shared keep-alive pool, and time each from its
/// send to the end of its answer.
async fn fixed_rate(url: &str, rate: u32, window: Duration) -> FixedRate {
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let interval = Duration::from_secs(1) / rate;
    let count = (window.as_secs_f64() * f64::from(rate)) as u32;
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    let mut latencies = Vec::with_capacity(count as usize);
    let mut errors = 0;
    let mut worst_lag = Duration::ZERO;
    let mut reap = |joined: Result<Option<u32>, tokio::task::JoinError>| match joined {
        Ok(Some(us)) => latencies.push(us),
        _ => errors += 1,
    };
    for i in 0..count {
        let scheduled = started + interval * i;
        tokio::time::sleep_until(scheduled).await;
        worst_lag = worst_lag.max(scheduled.elapsed());
        let (client, url) = (client.clone(), url.to_owned());
        tasks.spawn(async move {
            let sent = Instant::now();
            let response = client.get(&url).bearer_auth(CREDENTIAL).send().await.ok()?;
            let ok = response.status().is_success();
            response.bytes().await.ok()?;
            ok.then(|| sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
        });
        while let Some(joined) = tasks.try_join_next() {
            reap(joined);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        reap(joined);
    }
    latencies.sort_unstable();
    FixedRate {
        rate,
        latencies,
        errors,
        worst_lag,
    }
}

/// The Redis store's decisions alone, in process: one client's and the global budget per
/// decision (what `/token` asks), one at a time (the round trip) and 64 at once (what one
/// connection carries).
async fn store_cost(url: &str) -> String {
    use aai_live::server::limit::Gcra;
    use aai_live::server::redis_store::{Budget, RedisStore};
    use std::sync::Arc;
    const SEQUENTIAL: u32 = 20_000;
    const TASKS: usize = 64;
    const EACH: usize = 2_000;
    let metrics = aai_live::server::metrics::Metrics::new(&[]);
    let store = match RedisStore::new(
        &url.parse().expect("url"),
        None,
        None,
        Duration::from_secs(2),
        aai_live::config::StoreFailure::Closed,
        metrics.store(),
    ) {
        Ok(store) => Arc::new(store),
        Err(e) => return format!("Redis store alone: {e}"),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    store.start(cancel.clone()).await.expect("the store starts");
    let spec: aai_live::server::RateSpec = "1000000/s".parse().expect("spec");
    let budgets = Arc::new([
        Budget {
            key: "store-bench:client:bench".into(),
            gcra: Gcra::new(spec),
        },
        Budget {
            key: "store-bench:global".into(),
            gcra: Gcra::new(spec),
        },
    ]);
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        let _ = store.decide(&budgets[..]).await;
    }
    let one = started.elapsed() / SEQUENTIAL;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let (store, budgets) = (Arc::clone(&store), Arc::clone(&budgets));
        tasks.spawn(async move {
            for _ in 0..EACH {
                let _ = store.decide(&budgets[..]).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let per_second = (TASKS * EACH) as f64 / started.elapsed().as_secs_f64();
    cancel.cancel();
    let line = format!(
        "Redis store alone: {:.0} µs per decision one at a time (the round trip), {} decisions/s \
         with {TASKS} at once over its one connection; each decision is one round trip (the \
         client's and the global budget in one script)",
        one.as_secs_f64() * 1e6,
        group(per_second)
    );
    println!();
    println!("--- Redis store alone ---");
    println!("{line}");
    line
}

/// The limiter's own cost, in process: one decision on a per-client (keyed by name) and on the
/// global budget, as `/token` makes them.
fn limiter_cost() -> String {
    use aai_live::server::limit::Limiter;
    const N: u32 = 2_000_000;
    let spec: aai_live::server::RateSpec = "1000000/s".parse().expect("spec");
    let keyed: Limiter<std::sync::Arc<str>> = Limiter::new(spec);
    let global: Limiter<()> = Limiter::new(spec);
    let name: std::sync::Arc<str> = std::sync::Arc::from("bench");
    let started = Instant::now();
    let mut allowed = 0_u32;
    for _ in 0..N {
        allowed += u32::from(keyed.check(std::hint::black_box(&name)).allowed);
        allowed += u32::from(global.check(&()).allowed);
    }
    let per_request = started.elapsed().as_secs_f64() * 1e9 / f64::from(N);
    let line = format!(
        "limiter: {per_request:.0} ns per request for the client and the global decision \
         together ({allowed} of {} allowed), on one thread",
        2 * N
    );
    println!();
    println!("--- limiter cost ---");
    println!("{line}");
    line
}

/// Status counts from `/metrics` (`aai_live_serve_responses_total{code="..."}`).
struct Counts(Vec<(u16, u64)>);

impl Counts {
    fn get(&self, code: u16) -> u64 {
        self.0
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(0, |(_, n)| *n)
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

async fn responses(metrics_url: &str) -> Counts {
    let text = match reqwest::get(metrics_url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    Counts(
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("aai_live_serve_responses_total{code=\"")?;
                let (code, n) = rest.split_once("\"} ")?;
                Some((code.parse().ok()?, n.trim().parse().ok()?))
            })
            .collect(),
    )
}

struct LoadResult {
    requests_per_s: f64,
    seconds: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    errors: u64,
}

async fn load(client: Client, url: &str, window: Duration) -> Result<LoadResult, String> {
    match client {
        Client::Wrk => wrk(url, window).await,
        Client::Reqwest => reqwest_load(url, window).await,
    }
}

/// `/token` under wrk with the bearer credential (429s are answers here, not errors).
async fn wrk(url: &str, window: Duration) -> Result<LoadResult, String> {
    let header = format!("Authorization: Bearer {CREDENTIAL}");
    let r = common::run_wrk(url, CONNECTIONS, &header, window).await?;
    Ok(LoadResult {
        requests_per_s: r.requests_per_s,
        seconds: window.as_secs_f64(),
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        errors: r.socket_errors,
    })
}

/// In-process fallback: `CONNECTIONS` tasks each sending requests back to back on one
/// keep-alive connection; the latency of every answer (429s included, as wrk counts them).
async fn reqwest_load(url: &str, window: Duration) -> Result<LoadResult, String> {
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(CONNECTIONS)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = JoinSet::new();
    for _ in 0..CONNECTIONS {
        let client = client.clone();
        let url = url.to_owned();
        tasks.spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::with_capacity(1 << 14);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let answered = match client.get(&url).bearer_auth(CREDENTIAL).send().await {
                    Ok(r) => r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if answered {
                    latencies_us.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                } else {
                    errors += 1;
                }
            }
            (latencies_us, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (latencies, e) = joined.map_err(|e| e.to_string())?;
        all.extend(latencies);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let percentile = |p: f64| {
        (!all.is_empty()).then(|| {
            let i = ((all.len() - 1) as f64 * p).round() as usize;
            f64::from(all[i]) / 1000.0
        })
    };
    Ok(LoadResult {
        requests_per_s: all.len() as f64 / seconds,
        seconds,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        errors,
    })
}

/// A child `aai-live` process, stopped with SIGTERM when dropped (SIGKILL after 5 s).
struct Proc {
    name: &'static str,
    child: Child,
    pid: u32,
    port: u16,
}

impl Proc {
    fn start(
        name: &'static str,
        args: &[&str],
        first_line: &str,
        home: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aai-live"))
            .args(args)
            .envs(env.iter().copied())
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("BENCH_AAI_KEY", KEY)
            .env_remove("RUST_LOG")
            .env_remove("AAI_LIVE_CONFIG")
            .env_remove("AAI_LIVE_EMULATOR_API_KEYS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", env!("CARGO_BIN_EXE_aai-live")))?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // Guard first, so an early return below still stops the process.
        let mut proc = Self {
            name,
            child,
            pid,
            port: 0,
        };
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        lines
            .read_line(&mut first)
            .map_err(|e| format!("read {name}'s stdout: {e}"))?;
        proc.port = first
            .trim()
            .strip_prefix(first_line)
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| format!("unexpected first stdout line of {name}: {first:?}"))?;
        // Keep draining stdout so the process can never block on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = lines.read_to_end(&mut sink);
        });
        Ok(proc)
    }

    /// User + system CPU ticks.
    fn ticks(&self) -> u64 {
        ticks(self.pid)
    }
}

/// User + system CPU ticks of process `pid`.
fn ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    field(11) + field(12)
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => break,
            }
        }
        eprintln!("{} ignored SIGTERM for 5 s: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
