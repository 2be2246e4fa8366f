//! Load benchmark of `aai-live emulate`: many concurrent real-time 16 kHz sessions, then the token
//! endpoint's throughput. It prints figures; it is not a pass/fail test.
//!
//! `cargo bench --bench emulator` (see docs/benchmarks.md). The emulator runs as a separate
//! process (the release binary) so its CPU time and memory can be read from /proc on their own.
//! Environment: `BENCH_SESSIONS` (500), `BENCH_SECONDS` (20, the measurement window),
//! `BENCH_TOKEN_SECONDS` (10), `BENCH_TOKEN_CLIENT` (`wrk` or `reqwest`; default wrk when on PATH),
//! `BENCH_EMULATOR_BIN` (another `aai-live` binary to measure, e.g. an older build).
//! Arguments after `--`: `sessions` or `token` to run only that part; `limits` runs the hostile
//! client scenarios of docs/security.md ("Emulator limits"), which the default run leaves out.

mod common;

use common::{clk_tck, group, system_ticks};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

const KEY: &str = "bench-key";
const SAMPLE_RATE: u64 = 16_000;
const CHUNK_MS: u64 = 50;
/// 50 ms of 16 kHz s16le mono.
const CHUNK_BYTES: usize = (SAMPLE_RATE * CHUNK_MS / 1000 * 2) as usize;
const RAMP: Duration = Duration::from_secs(2);
const WARMUP: Duration = Duration::from_secs(3);
const PROCESSING_DELAY_MS: u64 = 200;
const TOKEN_CONNECTIONS: usize = 64;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs harness-less benches without `--bench`: stay cheap there.
    if !args.iter().any(|a| a == "--bench") {
        println!("emulator benchmark: skipped (run it with `cargo bench --bench emulator`)");
        return ExitCode::SUCCESS;
    }
    let parts: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let settings = Settings::from_env(&parts);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(&settings))
}

struct Settings {
    sessions: usize,
    window: Duration,
    token_window: Duration,
    token_client: TokenClient,
    run_sessions: bool,
    run_token: bool,
    run_limits: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenClient {
    Wrk,
    Reqwest,
}

impl Settings {
    fn from_env(parts: &[&str]) -> Self {
        // `limits` runs only when named; the others when named or when nothing is.
        let only = |name: &str| parts.contains(&name) || (name != "limits" && parts.is_empty());
        let wrk_available = Command::new("wrk")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        let token_client = match std::env::var("BENCH_TOKEN_CLIENT").as_deref() {
            Ok("reqwest") => TokenClient::Reqwest,
            Ok("wrk") if wrk_available => TokenClient::Wrk,
            Ok("wrk") => {
                println!("BENCH_TOKEN_CLIENT=wrk but wrk is not on PATH: using reqwest");
                TokenClient::Reqwest
            }
            _ if wrk_available => TokenClient::Wrk,
            _ => TokenClient::Reqwest,
        };
        Self {
            sessions: env_or("BENCH_SESSIONS", 500),
            window: Duration::from_secs(env_or("BENCH_SECONDS", 20)),
            token_window: Duration::from_secs(env_or("BENCH_TOKEN_SECONDS", 10)),
            token_client,
            run_sessions: only("sessions"),
            run_token: only("token"),
            run_limits: only("limits"),
        }
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} is not valid: using the default");
            default
        }),
        Err(_) => default,
    }
}

async fn run(settings: &Settings) -> ExitCode {
    let clk_tck = clk_tck();
    if settings.run_limits {
        if !check_open_files(limits::IDLE_SOCKETS) {
            return ExitCode::FAILURE;
        }
        limits::run(settings).await;
        if !settings.run_sessions && !settings.run_token {
            return ExitCode::SUCCESS;
        }
    }
    if settings.run_sessions && !check_open_files(settings.sessions) {
        return ExitCode::FAILURE;
    }
    let emulator = match Emulator::start(&[], None) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot start the emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "emulator: pid {} on 127.0.0.1:{} (processing delay {PROCESSING_DELAY_MS} ms); \
         {} CPU cores; CLK_TCK {clk_tck}",
        emulator.pid,
        emulator.port,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    println!("note: the bench clients and the emulator share this machine's cores");
    let mut emulator = emulator;
    let mut summary = Vec::new();
    let mut targets = Vec::new();
    if settings.run_sessions {
        let (report, cpu, connected) = sessions_bench(&emulator, settings, clk_tck).await;
        summary.push(report);
        targets.push(format!(
            "target ≥ 500 sessions under 1 core: {} ({connected} sessions, {cpu:.1}% of one core)",
            if connected >= 500 && cpu < 100.0 {
                "met"
            } else {
                "not met"
            }
        ));
        emulator.check_alive();
    }
    if settings.run_token {
        let (report, requests_per_s) = token_bench(&emulator, settings, clk_tck).await;
        summary.push(report);
        targets.push(format!(
            "target ≥ 20 000 token req/s: {} ({} req/s)",
            if requests_per_s >= 20_000.0 {
                "met"
            } else {
                "not met"
            },
            group(requests_per_s)
        ));
        emulator.check_alive();
    }
    drop(emulator);
    println!();
    println!("==================== summary ====================");
    for line in summary.iter().chain(&targets) {
        println!("{line}");
    }
    println!("=================================================");
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------------------
// The emulator process

/// The emulator child process; dropping it stops it (SIGTERM, then SIGKILL), also on a panic.
struct Emulator {
    child: Child,
    pid: u32,
    port: u16,
    _home: tempfile::TempDir,
}

/// The binary measured: `BENCH_EMULATOR_BIN` or the one cargo built.
fn emulator_bin() -> String {
    std::env::var("BENCH_EMULATOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_aai-live").into())
}

impl Emulator {
    /// `aai-live emulate` with `extra` flags; with `nofile`, under that open-file limit (set by
    /// `sh -c 'ulimit -n N; exec ...'`, so the pid is the emulator's).
    fn start(extra: &[&str], nofile: Option<u64>) -> Result<Self, String> {
        let home = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let path = home.path();
        let bin = emulator_bin();
        let mut command = match nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), &bin]);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = command
            .args([
                "emulate",
                "--listen",
                "127.0.0.1:0",
                "--api-key",
                KEY,
                "--processing-delay-ms",
                &PROCESSING_DELAY_MS.to_string(),
            ])
            .args(extra)
            .env("HOME", path)
            .env("XDG_CONFIG_HOME", path.join("config"))
            .env("XDG_DATA_HOME", path.join("data"))
            .env("XDG_STATE_HOME", path.join("state"))
            .env("XDG_CACHE_HOME", path.join("cache"))
            .env_remove("RUST_LOG")
            .env_remove("AAI_LIVE_CONFIG")
            .env_remove("AAI_LIVE_EMULATOR_API_KEYS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {bin}: {e}"))?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // Guard first, so an early return below still stops the process.
        let mut emulator = Self {
            child,
            pid,
            port: 0,
            _home: home,
        };
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        lines
            .read_line(&mut first)
            .map_err(|e| format!("read the emulator's stdout: {e}"))?;
        let port = first
            .trim()
            .strip_prefix("aai-live emulator listening on http://127.0.0.1:")
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| format!("unexpected first stdout line {first:?}"))?;
        emulator.port = port;
        // Keep draining stdout so the emulator can never block on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = lines.read_to_end(&mut sink);
        });
        Ok(emulator)
    }

    /// Say so when the emulator has exited (its figures after that are meaningless).
    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            println!("warning: the emulator exited during the benchmark ({status})");
        }
    }

    fn ws_url(&self) -> String {
        format!(
            "ws://127.0.0.1:{}/v3/ws?sample_rate={SAMPLE_RATE}&encoding=pcm_s16le",
            self.port
        )
    }

    fn token_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/v3/token?expires_in_seconds=60",
            self.port
        )
    }

    /// (user, system) CPU ticks.
    fn ticks(&self) -> (u64, u64) {
        proc_stat_ticks(&self.pid.to_string(), false).unwrap_or((0, 0))
    }

    fn status_kib(&self, field: &str) -> u64 {
        proc_status_kib(&self.pid.to_string(), field).unwrap_or(0)
    }
}

impl Drop for Emulator {
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
        eprintln!("the emulator ignored SIGTERM for 5 s: killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// This process's CPU plus that of its waited-for children (wrk), in clock ticks.
fn own_ticks() -> Option<u64> {
    proc_stat_ticks("self", true).map(|(user, system)| user + system)
}

/// (user, system) CPU time of a process (`self` or a pid) in clock ticks, with that of its
/// waited-for children when `children`.
fn proc_stat_ticks(pid: &str, children: bool) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 is the state; utime and stime are fields 14 and 15, so 11 and 12 here.
    // cutime and cstime (fields 16 and 17) count children once they have been waited for.
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let (user, system) = (field(11)?, field(12)?);
    if children {
        Some((user + field(13)?, system + field(14)?))
    } else {
        Some((user, system))
    }
}

/// A `VmXxx:` line of /proc/<pid>/status, in KiB.
fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft open-file limit must cover the sessions (plus the runtime's own descriptors). Raise
/// it to the hard limit with `prlimit` when needed; the emulator inherits it.
fn check_open_files(sessions: usize) -> bool {
    let needed = sessions as u64 + 256;
    let read = || -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut values = line["Max open files".len()..].split_whitespace();
        let parse = |v: Option<&str>| match v? {
            "unlimited" => Some(u64::MAX),
            n => n.parse().ok(),
        };
        Some((parse(values.next())?, parse(values.next())?))
    };
    let Some((soft, hard)) = read() else {
        println!("warning: cannot read the open-file limit; going on");
        return true;
    };
    if soft >= needed {
        println!("open-file limit: {soft} (need about {needed})");
        return true;
    }
    let target = if hard == u64::MAX {
        "unlimited".to_owned()
    } else {
        hard.to_string()
    };
    let _ = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={target}:{target}"),
        ])
        .status();
    match read() {
        Some((soft, _)) if soft >= needed => {
            println!("open-file limit raised to {soft} (need about {needed})");
            true
        }
        _ => {
            eprintln!(
                "the open-file limit ({soft}, hard {hard}) is below the ~{needed} sockets that \
                 {sessions} sessions need; raise it (`ulimit -n {needed}`) or set BENCH_SESSIONS lower"
            );
            false
        }
    }
}

/// CPU counters at one instant.
struct Sample {
    at: Instant,
    /// (user, system)
    emulator: (u64, u64),
    bench: u64,
    /// (busy, total) of the machine
    system: (u64, u64),
}

impl Sample {
    fn take(emulator: &Emulator) -> Self {
        Self {
            at: Instant::now(),
            emulator: emulator.ticks(),
            bench: own_ticks().unwrap_or(0),
            system: system_ticks().unwrap_or((0, 0)),
        }
    }
}

/// CPU use between two samples, in % of one core (emulator, bench) and % of the machine.
struct CpuUse {
    emulator: f64,
    emulator_user: f64,
    emulator_system: f64,
    bench: f64,
    system: f64,
}

impl CpuUse {
    fn between(a: &Sample, b: &Sample, clk_tck: u64) -> Self {
        let wall = b.at.duration_since(a.at).as_secs_f64();
        let pct = |ticks: u64| ticks as f64 / clk_tck as f64 / wall * 100.0;
        // Saturating: a process that died reads as zero.
        let (busy, total) = (
            b.system.0.saturating_sub(a.system.0),
            b.system.1.saturating_sub(a.system.1),
        );
        Self {
            emulator: pct((b.emulator.0 + b.emulator.1).saturating_sub(a.emulator.0 + a.emulator.1)),
            emulator_user: pct(b.emulator.0.saturating_sub(a.emulator.0)),
            emulator_system: pct(b.emulator.1.saturating_sub(a.emulator.1)),
            bench: pct(b.bench.saturating_sub(a.bench)),
            system: if total == 0 {
                0.0
            } else {
                busy as f64 / total as f64 * 100.0
            },
        }
    }

    fn describe(&self) -> String {
        format!(
            "emulator {:.1}% of one core (user {:.1}%, kernel {:.1}%); bench clients (incl. wrk) \
             {:.1}% of one core; whole machine {:.1}% busy",
            self.emulator, self.emulator_user, self.emulator_system, self.bench, self.system
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// One cycle of voice-like audio as 50 ms chunks: four "words" (300 ms of a 440 Hz tone at
/// -12 dBFS peak, then 100 ms of silence) and a 1 s pause, 2.6 s in all. The emulator's voice
/// detection finds the words and its turn logic ends a turn in every pause.
fn audio_cycle() -> Vec<Bytes> {
    let ms_samples = (SAMPLE_RATE / 1000) as usize;
    let mut samples: Vec<i16> = Vec::new();
    for _ in 0..4 {
        samples.extend((0..300 * ms_samples).map(|i| {
            let t = i as f64 / SAMPLE_RATE as f64;
            ((2.0 * std::f64::consts::PI * 440.0 * t).sin() * 8192.0) as i16
        }));
        samples.extend(std::iter::repeat_n(0, 100 * ms_samples));
    }
    samples.extend(std::iter::repeat_n(0, 1000 * ms_samples));
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    bytes
        .chunks(CHUNK_BYTES)
        .map(Bytes::copy_from_slice)
        .collect()
}

/// Counters shared by every session task.
#[derive(Default)]
struct Stats {
    connected: AtomicU64,
    failed: AtomicU64,
    finished: AtomicU64,
    messages: AtomicU64,
    turns: AtomicU64,
    finals: AtomicU64,
    chunks: AtomicU64,
    terminations: AtomicU64,
    clean_closes: AtomicU64,
    /// Connect errors and unexpected ends, with counts.
    connect_errors: Mutex<BTreeMap<String, u64>>,
    unexpected: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn note(map: &Mutex<BTreeMap<String, u64>>, what: String) {
        *map.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(what)
            .or_default() += 1;
    }

    fn snapshot(map: &Mutex<BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
        map.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

async fn connect(url: &str) -> Result<Ws, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request
        .headers_mut()
        .insert("Authorization", KEY.parse().map_err(|_| "header")?);
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out after 10 s".into()),
    }
}

/// Count one server message; true for Termination.
fn count(stats: &Stats, text: &str) -> bool {
    stats.messages.fetch_add(1, Ordering::Relaxed);
    if text.contains(r#""type":"Turn""#) {
        stats.turns.fetch_add(1, Ordering::Relaxed);
        if text.contains(r#""end_of_turn":true"#) {
            stats.finals.fetch_add(1, Ordering::Relaxed);
        }
        false
    } else {
        text.contains(r#""type":"Termination""#)
    }
}

/// One client: connect, stream audio in real time while reading, then Terminate on `stop` and
/// read until Termination and the server's close.
async fn session(
    url: Arc<str>,
    phase: usize,
    chunks: Arc<Vec<Bytes>>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let mut ws = match connect(&url).await {
        Ok(ws) => ws,
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            Stats::note(&stats.connect_errors, e);
            return;
        }
    };
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let mut ticker = tokio::time::interval(Duration::from_millis(CHUNK_MS));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next = phase;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {
                let chunk = chunks[next % chunks.len()].clone();
                next += 1;
                if let Err(e) = ws.send(Message::Binary(chunk)).await {
                    Stats::note(&stats.unexpected, format!("send failed while streaming: {e}"));
                    return;
                }
                stats.chunks.fetch_add(1, Ordering::Relaxed);
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    count(&stats, text.as_str());
                }
                Some(Ok(Message::Close(frame))) => {
                    Stats::note(&stats.unexpected, format!("close while streaming: {}", describe_close(frame.as_ref())));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    Stats::note(&stats.unexpected, format!("error while streaming: {e}"));
                    return;
                }
                None => {
                    Stats::note(&stats.unexpected, "connection ended while streaming".into());
                    return;
                }
            }
        }
    }
    terminate(&mut ws, &stats).await;
}

fn describe_close(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    frame.map_or_else(
        || "no close code".to_owned(),
        |f| format!("{} {:?}", u16::from(f.code), f.reason.as_str()),
    )
}

async fn terminate(ws: &mut Ws, stats: &Stats) {
    if let Err(e) = ws
        .send(Message::Text(r#"{"type":"Terminate"}"#.into()))
        .await
    {
        Stats::note(&stats.unexpected, format!("cannot send Terminate: {e}"));
        return;
    }
    let mut terminated = false;
    let outcome = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(item) = ws.next().await {
            match item {
                Ok(Message::Text(text)) => {
                    if count(stats, text.as_str()) {
                        terminated = true;
                        stats.terminations.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Message::Close(frame)) => {
                    match frame.as_ref().map(|f| u16::from(f.code)) {
                        Some(1000) if terminated => {
                            stats.clean_closes.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => Stats::note(
                            &stats.unexpected,
                            format!(
                                "close after Terminate: {} (Termination seen: {terminated})",
                                describe_close(frame.as_ref())
                            ),
                        ),
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    Stats::note(&stats.unexpected, format!("error after Terminate: {e}"));
                    return;
                }
            }
        }
        Stats::note(
            &stats.unexpected,
            "connection ended after Terminate without a close frame".into(),
        );
    })
    .await;
    if outcome.is_err() {
        Stats::note(
            &stats.unexpected,
            "no close within 15 s of Terminate".into(),
        );
    }
    // Finish the closing handshake (tungstenite answered the close; drain until the end).
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while ws.next().await.is_some() {}
    })
    .await;
    stats.finished.fetch_add(1, Ordering::Relaxed);
}

/// Returns the summary line, the emulator's CPU (% of one core) and the sessions connected.
async fn sessions_bench(
    emulator: &Emulator,
    settings: &Settings,
    clk_tck: u64,
) -> (String, f64, u64) {
    let n = settings.sessions;
    println!();
    println!(
        "--- sessions: {n} real-time 16 kHz sessions (50 ms chunks), ramp {} s, warm-up {} s, \
         window {} s ---",
        RAMP.as_secs(),
        WARMUP.as_secs(),
        settings.window.as_secs()
    );
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let mut tasks = open_sessions(emulator, n, &stats, &stop).await;
    let connected = stats.connected.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    tokio::time::sleep(WARMUP).await;

    let before = Sample::take(emulator);
    let (m0, t0, f0, c0) = counters(&stats);
    tokio::time::sleep(settings.window).await;
    let after = Sample::take(emulator);
    let (m1, t1, f1, c1) = counters(&stats);
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let cpu = CpuUse::between(&before, &after, clk_tck);
    let rss = emulator.status_kib("VmRSS");
    let hwm = emulator.status_kib("VmHWM");
    let streaming = (stats.connected.load(Ordering::Relaxed))
        .saturating_sub(stats.finished.load(Ordering::Relaxed));
    let expected_chunks = streaming as f64 * wall * 1000.0 / CHUNK_MS as f64;
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / wall;
    println!("window {wall:.1} s:");
    println!("  CPU: {}", cpu.describe());
    println!(
        "  emulator memory: RSS {:.1} MiB, peak (VmHWM) {:.1} MiB",
        mib(rss),
        mib(hwm)
    );
    println!(
        "  audio sent: {:.0} chunks/s ({:.1}% of the {:.0}/s that {streaming} real-time sessions send)",
        rate(c0, c1),
        c1.saturating_sub(c0) as f64 / expected_chunks.max(1.0) * 100.0,
        expected_chunks / wall
    );
    println!(
        "  received: {:.0} messages/s, of which {:.0} Turns/s ({:.0} final)",
        rate(m0, m1),
        rate(t0, t1),
        rate(f0, f1)
    );
    let unexpected_streaming = Stats::snapshot(&stats.unexpected);
    println!(
        "  unexpected closes/errors so far: {}",
        unexpected_streaming.values().sum::<u64>()
    );

    let (terminations, unexpected_total) = terminate_all(&mut tasks, &stats, &stop).await;
    let summary = format!(
        "emulator: {connected}/{n} sessions connected ({failed} failed), CPU {:.1}% of one core \
         (bench clients {:.1}%, machine {:.0}% busy), RSS {:.0} MiB (peak {:.0} MiB), \
         {:.0} messages/s received ({:.0} Turns/s), {unexpected_total} unexpected closes, \
         Termination {terminations}/{connected}",
        cpu.emulator,
        cpu.bench,
        cpu.system,
        mib(rss),
        mib(hwm),
        rate(m0, m1),
        rate(t0, t1),
    );
    (summary, cpu.emulator, connected)
}

/// Open `n` sessions spread over the ramp; returns once every connect attempt has settled.
async fn open_sessions(
    emulator: &Emulator,
    n: usize,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
) -> JoinSet<()> {
    let chunks = Arc::new(audio_cycle());
    let url: Arc<str> = emulator.ws_url().into();
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for i in 0..n {
        let at = started + RAMP.mul_f64(i as f64 / n as f64);
        tokio::time::sleep_until(at.into()).await;
        tasks.spawn(session(
            Arc::clone(&url),
            i % chunks.len(),
            Arc::clone(&chunks),
            Arc::clone(stats),
            stop.clone(),
        ));
    }
    // Every connect attempt settled (or 10 s more).
    let settle = Instant::now() + Duration::from_secs(10);
    while stats.connected.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed) < n as u64
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "connected {}, failed {} after {:.1} s",
        stats.connected.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    for (error, count) in Stats::snapshot(&stats.connect_errors) {
        println!("  connect error ×{count}: {error}");
    }
    tasks
}

/// Send Terminate on every session and wait for them; returns (Terminations, unexpected ends).
async fn terminate_all(
    tasks: &mut JoinSet<()>,
    stats: &Stats,
    stop: &CancellationToken,
) -> (u64, u64) {
    let connected = stats.connected.load(Ordering::Relaxed);
    let term_start = Instant::now();
    stop.cancel();
    let joined = tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if joined.is_err() {
        println!("  some sessions did not finish within 30 s of Terminate; aborting them");
        tasks.abort_all();
    }
    let terminations = stats.terminations.load(Ordering::Relaxed);
    let clean = stats.clean_closes.load(Ordering::Relaxed);
    println!(
        "Terminate sent on {connected}: Termination received on {terminations}, clean close 1000 \
         on {clean}, in {:.2} s",
        term_start.elapsed().as_secs_f64()
    );
    let unexpected = Stats::snapshot(&stats.unexpected);
    for (what, count) in &unexpected {
        println!("  unexpected ×{count}: {what}");
    }
    (terminations, unexpected.values().sum())
}

fn counters(stats: &Stats) -> (u64, u64, u64, u64) {
    (
        stats.messages.load(Ordering::Relaxed),
        stats.turns.load(Ordering::Relaxed),
        stats.finals.load(Ordering::Relaxed),
        stats.chunks.load(Ordering::Relaxed),
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

struct TokenResult {
    requests_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    errors: u64,
}

/// Returns the summary line and the requests per second.
async fn token_bench(emulator: &Emulator, settings: &Settings, clk_tck: u64) -> (String, f64) {
    let method = match settings.token_client {
        TokenClient::Wrk => "wrk",
        TokenClient::Reqwest => "reqwest",
    };
    println!();
    println!(
        "--- token endpoint: GET /v3/token, {TOKEN_CONNECTIONS} keep-alive connections for {} s \
         ({method}) ---",
        settings.token_window.as_secs()
    );
    let hwm_before = emulator.status_kib("VmHWM");
    let before = Sample::take(emulator);
    let result = match settings.token_client {
        TokenClient::Wrk => wrk(&emulator.token_url(), settings.token_window).await,
        TokenClient::Reqwest => reqwest_load(&emulator.token_url(), settings.token_window).await,
    };
    let after = Sample::take(emulator);
    let cpu = CpuUse::between(&before, &after, clk_tck);
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            println!("token benchmark failed: {e}");
            return (format!("token endpoint: failed ({e})"), 0.0);
        }
    };
    let ms = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.2} ms"));
    println!(
        "{} req/s, p50 {}, p99 {}, {} errors or non-200 responses",
        group(result.requests_per_s),
        ms(result.p50_ms),
        ms(result.p99_ms),
        result.errors
    );
    println!("  CPU: {}", cpu.describe());
    println!(
        "  emulator peak RSS {:.1} MiB before, {:.1} MiB after; RSS now {:.1} MiB (minted tokens \
         are kept ~11 min, at most --max-tokens of them)",
        mib(hwm_before),
        mib(emulator.status_kib("VmHWM")),
        mib(emulator.status_kib("VmRSS"))
    );
    let summary = format!(
        "token endpoint: {} req/s ({method}, {TOKEN_CONNECTIONS} connections), p50 {}, p99 {}, \
         {} errors; emulator CPU {:.1}% of one core, bench client {:.1}%, machine {:.0}% busy \
         (client and server share the cores)",
        group(result.requests_per_s),
        ms(result.p50_ms),
        ms(result.p99_ms),
        result.errors,
        cpu.emulator,
        cpu.bench,
        cpu.system,
    );
    (summary, result.requests_per_s)
}

/// The token endpoint under wrk (socket errors and non-2xx answers both count as errors).
async fn wrk(url: &str, window: Duration) -> Result<TokenResult, String> {
    let r = common::run_wrk(
        url,
        TOKEN_CONNECTIONS,
        &format!("Authorization: {KEY}"),
        window,
    )
    .await?;
    Ok(TokenResult {
        requests_per_s: r.requests_per_s,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        errors: r.non_2xx + r.socket_errors,
    })
}

/// In-process fallback: `TOKEN_CONNECTIONS` tasks each sending requests back to back on one
/// keep-alive connection.
async fn reqwest_load(url: &str, window: Duration) -> Result<TokenResult, String> {
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(TOKEN_CONNECTIONS)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = JoinSet::new();
    for _ in 0..TOKEN_CONNECTIONS {
        let client = client.clone();
        let url = url.to_owned();
        tasks.spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match client.get(&url).header("Authorization", KEY).send().await {
                    Ok(r) => r.status() == reqwest::StatusCode::OK && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
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
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let percentile = |p: f64| {
        (!all.is_empty()).then(|| {
            let i = ((all.len() - 1) as f64 * p).round() as usize;
            f64::from(all[i]) / 1000.0
        })
    };
    Ok(TokenResult {
        requests_per_s: all.len() as f64 / elapsed,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        errors,
    })
}

// ---------------------------------------------------------------------------------------------
// Limits: what hostile or careless clients can make the emulator hold (docs/security.md)

mod limits {
    use super::{Emulator, KEY, Settings, mib};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::task::JoinSet;

    /// Idle sockets opened against the connection cap (the bench needs this many descriptors).
    pub const IDLE_SOCKETS: usize = 10_000;
    /// The emulator's own open-file limit in the idle-socket scenario ("a low fd limit").
    const IDLE_NOFILE: u64 = 1024;
    const UNAUTH_SOCKETS: usize = 40;
    const PARAM_SESSIONS: usize = 2000;
    const PARAM_BYTES: usize = 60_000;

    pub async fn run(settings: &Settings) {
        println!();
        println!(
            "--- limits: hostile clients (binary {}) ---",
            super::emulator_bin()
        );
        let lines = vec![
            unauthenticated_push().await,
            big_parameters().await,
            token_flood(settings).await,
            idle_sockets().await,
        ];
        println!();
        println!("==================== limits ====================");
        for line in lines {
            println!("{line}");
        }
        println!("================================================");
    }

    fn start() -> Option<Emulator> {
        start_with(None)
    }

    fn start_with(nofile: Option<u64>) -> Option<Emulator> {
        match Emulator::start(&[], nofile) {
            Ok(e) => Some(e),
            Err(e) => {
                println!("cannot start the emulator: {e}");
                None
            }
        }
    }

    fn rss(emulator: &Emulator) -> (f64, f64) {
        (
            mib(emulator.status_kib("VmRSS")),
            mib(emulator.status_kib("VmHWM")),
        )
    }

    /// A WebSocket upgrade by hand (no URI length limit, any frame afterwards).
    async fn upgrade(port: u16, auth: &str, query: &str) -> Option<TcpStream> {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!(
            "GET /v3/ws?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nAuthorization: {auth}\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        head.starts_with(b"HTTP/1.1 101").then_some(tcp)
    }

    /// A masked client frame header (FIN set).
    fn header(opcode: u8, len: u64) -> Vec<u8> {
        let mut out = vec![0x80 | opcode, 0x80 | 127];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out
    }

    /// Read until the server ends the connection (bounded).
    async fn drain(tcp: &mut TcpStream, limit: Duration) {
        let mut buf = vec![0_u8; 16 * 1024];
        let _ = tokio::time::timeout(limit, async {
            while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    /// 40 sockets with a wrong key, each announcing a 16 MiB frame and pushing its payload as
    /// fast as the emulator takes it, reconnecting when closed, for 5 s.
    async fn unauthenticated_push() -> String {
        println!();
        println!("[1] {UNAUTH_SOCKETS} unauthenticated sockets pushing data for 5 s");
        let Some(emulator) = start() else {
            return "unauthenticated push: emulator did not start".into();
        };
        let port = emulator.port;
        let (rss_before, _) = rss(&emulator);
        let pushed = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut tasks = JoinSet::new();
        for _ in 0..UNAUTH_SOCKETS {
            let (pushed, connections) = (Arc::clone(&pushed), Arc::clone(&connections));
            tasks.spawn(async move {
                let payload = vec![0_u8; 64 * 1024];
                while Instant::now() < deadline {
                    let Some(mut tcp) = upgrade(port, "wrong-key", "sample_rate=16000").await
                    else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    connections.fetch_add(1, Ordering::Relaxed);
                    if tcp.write_all(&header(0x2, (16 << 20) - 1)).await.is_err() {
                        continue;
                    }
                    let mut sent = 0_usize;
                    while sent < 16 << 20 && Instant::now() < deadline {
                        match tcp.write(&payload).await {
                            Ok(n) if n > 0 => {
                                sent += n;
                                pushed.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            _ => break,
                        }
                    }
                }
            });
        }
        let mut peak_rss = 0.0_f64;
        while !tasks.is_empty() {
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(100), tasks.join_next()).await
            {
                continue;
            }
            peak_rss = peak_rss.max(rss(&emulator).0);
        }
        let (during_end, hwm) = rss(&emulator);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (after, _) = rss(&emulator);
        let line = format!(
            "unauthenticated push: {UNAUTH_SOCKETS} sockets, {} connections, {:.0} MiB pushed; \
             emulator RSS {rss_before:.1} MiB before, peak {:.1} MiB (VmHWM {hwm:.1} MiB), \
             {during_end:.1} MiB at the end, {after:.1} MiB 2 s later",
            connections.load(Ordering::Relaxed),
            mib(pushed.load(Ordering::Relaxed) / 1024),
            peak_rss.max(during_end),
        );
        println!("{line}");
        line
    }

    /// 2 000 sessions, each with a 60 KB model name, opened and terminated (8 at a time); then
    /// `GET /emulator/sessions`.
    async fn big_parameters() -> String {
        println!();
        println!("[2] {PARAM_SESSIONS} sessions with a {PARAM_BYTES}-byte parameter");
        let Some(emulator) = start() else {
            return "big parameters: emulator did not start".into();
        };
        let port = emulator.port;
        let (rss_before, _) = rss(&emulator);
        let query = Arc::new(format!(
            "sample_rate=16000&speech_model={}",
            "m".repeat(PARAM_BYTES)
        ));
        let next = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..8 {
            let (query, next, done) = (Arc::clone(&query), Arc::clone(&next), Arc::clone(&done));
            tasks.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < PARAM_SESSIONS as u64 {
                    let Some(mut tcp) = upgrade(port, KEY, &query).await else {
                        continue;
                    };
                    // Terminate (masked text), then read to the close and answer nothing.
                    let text = br#"{"type":"Terminate"}"#;
                    let mut frame = vec![0x81, 0x80 | text.len() as u8, 0, 0, 0, 0];
                    frame.extend_from_slice(text);
                    if tcp.write_all(&frame).await.is_ok() {
                        // Close (masked, 1000) so the session ends cleanly.
                        let _ = tcp.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]).await;
                        drain(&mut tcp, Duration::from_secs(5)).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (after, hwm) = rss(&emulator);
        let started = Instant::now();
        let listing = reqwest::get(format!("http://127.0.0.1:{port}/emulator/sessions")).await;
        let (status, bytes) = match listing {
            Ok(r) => (r.status().as_u16(), r.bytes().await.map_or(0, |b| b.len())),
            Err(_) => (0, 0),
        };
        let took = started.elapsed();
        let (after_listing, hwm_listing) = rss(&emulator);
        let line = format!(
            "big parameters: {} sessions with a {PARAM_BYTES}-byte parameter; emulator RSS \
             {rss_before:.1} MiB before, {after:.1} MiB after (+{:.1} MiB, peak {hwm:.1} MiB); \
             GET /emulator/sessions: HTTP {status}, {:.2} MiB in {:.0} ms, RSS then \
             {after_listing:.1} MiB (peak {hwm_listing:.1} MiB)",
            done.load(Ordering::Relaxed),
            after - rss_before,
            bytes as f64 / 1_048_576.0,
            took.as_secs_f64() * 1000.0,
        );
        println!("{line}");
        line
    }

    /// The token endpoint's own load (BENCH_TOKEN_SECONDS of wrk or reqwest) on a fresh
    /// emulator, then its RSS.
    async fn token_flood(settings: &Settings) -> String {
        println!();
        println!("[3] token flood, then RSS");
        let Some(emulator) = start() else {
            return "token flood: emulator did not start".into();
        };
        let (rss_before, _) = rss(&emulator);
        let (report, requests_per_s) =
            super::token_bench(&emulator, settings, super::clk_tck()).await;
        let _ = report;
        let (after, hwm) = rss(&emulator);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (later, _) = rss(&emulator);
        let stored = reqwest::get(format!("http://127.0.0.1:{}/emulator/stats", emulator.port))
            .await
            .ok()
            .filter(|r| r.status().is_success());
        let stored = match stored {
            Some(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .map(|v| format!("{}", v["tokens"]))
                .unwrap_or_default(),
            None => "no /emulator/stats".to_owned(),
        };
        let line = format!(
            "token flood: {} req/s for {} s; emulator RSS {rss_before:.1} MiB before, \
             {after:.1} MiB after (peak {hwm:.1} MiB), {later:.1} MiB 5 s later; tokens: {stored}",
            super::group(requests_per_s),
            settings.token_window.as_secs(),
        );
        println!("{line}");
        line
    }

    /// Open descriptors of a process.
    fn open_fds(pid: u32) -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
    }

    /// 10 000 idle sockets (sending nothing) opened at once against an emulator whose
    /// open-file limit is 1024; its descriptors sampled every 100 ms; then a token request on a
    /// fresh connection every 250 ms until one succeeds (at most 45 s from the start).
    async fn idle_sockets() -> String {
        println!();
        println!(
            "[4] {IDLE_SOCKETS} idle sockets, emulator open-file limit {IDLE_NOFILE}, then real requests"
        );
        let Some(emulator) = start_with(Some(IDLE_NOFILE)) else {
            return "idle sockets: emulator did not start".into();
        };
        let (port, pid) = (emulator.port, emulator.pid);
        let peak_fds = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let (peak_fds, sampling) = (Arc::clone(&peak_fds), Arc::clone(&sampling));
            std::thread::spawn(move || {
                while sampling.load(Ordering::Relaxed) {
                    peak_fds.fetch_max(open_fds(pid) as u64, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..IDLE_SOCKETS {
            tasks.spawn(async move {
                tokio::time::timeout(
                    Duration::from_secs(3),
                    TcpStream::connect(("127.0.0.1", port)),
                )
                .await
                .ok()?
                .ok()
            });
        }
        let mut sockets = Vec::with_capacity(IDLE_SOCKETS);
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Some(tcp)) = joined {
                sockets.push(tcp);
            }
        }
        let opened_in = started.elapsed();
        let connected = sockets.len();
        // Which of them the emulator has closed (EOF or reset already there): `try_read` does
        // not wait, so the count is taken at once, well within the header timeout.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut byte = [0_u8; 1];
        let closed = sockets
            .iter()
            .filter(|tcp| match tcp.try_read(&mut byte) {
                Ok(_) => true,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            })
            .count();
        let fds = open_fds(pid);
        let (rss_held, _) = rss(&emulator);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let (mut refused, mut timed_out, mut first_ok) = (0, 0, None);
        while started.elapsed() < Duration::from_secs(45) {
            let result = client
                .get(format!(
                    "http://127.0.0.1:{port}/v3/token?expires_in_seconds=60"
                ))
                .header("Authorization", KEY)
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => {
                    first_ok = Some(started.elapsed());
                    break;
                }
                Err(e) if e.is_timeout() => timed_out += 1,
                _ => refused += 1,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        sampling.store(false, Ordering::Relaxed);
        let _ = sampler.join();
        drop(sockets);
        let line = format!(
            "idle sockets: {connected}/{IDLE_SOCKETS} connected within {:.1} s, of which \
             {closed} already closed by the emulator; it held {fds} descriptors then (peak {}, \
             RSS {rss_held:.1} MiB); real requests from then on: first success {} after the \
             start, {refused} refused and {timed_out} timed out (2 s) before it",
            opened_in.as_secs_f64(),
            peak_fds.load(Ordering::Relaxed),
            first_ok.map_or_else(
                || "none within 45 s".to_owned(),
                |t| format!("{:.1} s", t.as_secs_f64())
            ),
        );
        println!("{line}");
        line
    }
}
