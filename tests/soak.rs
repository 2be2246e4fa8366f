//! The soak test: the headless client and the emulator as separate processes (so RSS is per
//! process), 20 s sessions, and a random recoverable fault every few seconds — TCP drops, 1011,
//! 3005 and 3008 closes, stalls, a server that stops reading, closes before `Begin`, token
//! endpoint 500 / 429 / delays. The seed is printed first (`AAI_LIVE_SOAK_SEED` replays a run).
//! It checks that the audio ledger holds to the sample against the emulator's recordings, that
//! nothing panics and both processes end cleanly, and that neither process's RSS grows after
//! warm-up.
//!
//! The suite runs 90 s with a fault every 3-6 s; `AAI_LIVE_SOAK_SECS=1200 cargo nextest run
//! --test soak --run-ignored only` is the 20-minute version (figures in docs/benchmarks.md), with
//! a fault every 30-60 s: a replay goes at most 1.25x real time, so a backlog of B seconds takes
//! 4B seconds to catch up, and faults every few seconds for twenty minutes would outgrow any
//! replay buffer — that is an outage, not a recoverable fault, and its losses are reported
//! (`replay_buffer_full`), as the first 20-minute run showed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{CHUNK, KEY, aai_live, mark_of, marked_input, write_wav};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Recoverable faults: each ends a session or delays a token, none should lose audio.
const FAULTS: &[&str] = &[
    "drop@{t}",
    "close:1011@{t}",
    "close:3005@{t}",
    "close:3008@{t}",
    "stall@{t}",
    "stop-reading@{t}",
    "close-before-begin:1011",
    "token:500",
    "token:429:1",
    "token-delay:1500ms",
];

/// A deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Mean of a slice of samples.
fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

/// RSS after warm-up does not grow: the last third's mean is within 15 % (and 3 MiB) of the
/// middle third's.
fn assert_flat(name: &str, samples: &[u64]) {
    assert!(samples.len() >= 9, "{name}: too few RSS samples");
    let third = samples.len() / 3;
    let middle = mean(&samples[third..2 * third]);
    let last = mean(&samples[2 * third..]);
    assert!(
        last <= middle * 1.15 + 3072.0,
        "{name}: RSS grew after warm-up: {middle:.0} KiB → {last:.0} KiB ({samples:?})"
    );
}

/// Every chunk each session recorded, as chunk indices (sessions in start order).
async fn recordings(base: &str, dir: &Path) -> Vec<Vec<usize>> {
    // A recording is complete once its connection has ended (`closed_at_ms`): the client may
    // exit before the emulator has finished its side of the last closing handshake.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sessions = loop {
        let sessions: serde_json::Value = reqwest::get(format!("{base}/emulator/sessions"))
            .await
            .expect("sessions")
            .json()
            .await
            .expect("json");
        let open = sessions
            .as_array()
            .expect("array")
            .iter()
            .filter(|s| s["closed_at_ms"].is_null())
            .count();
        if open == 0 || Instant::now() > deadline {
            break sessions;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for s in sessions.as_array().expect("array") {
        let id = s["id"].as_str().unwrap_or_default();
        let recorded = std::fs::metadata(dir.join(format!("{id}.pcm"))).map_or(0, |m| m.len());
        // Received and recorded must agree; if not, say which session differs.
        if s["audio_bytes"].as_u64() != Some(recorded) {
            eprintln!(
                "soak: session {id} received {} audio bytes, its recording holds {recorded}",
                s["audio_bytes"]
            );
        }
    }
    let mut list: Vec<(u64, String)> = sessions
        .as_array()
        .expect("array")
        .iter()
        .map(|s| {
            (
                s["started_at_ms"].as_u64().unwrap_or(0),
                s["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    list.sort();
    list.iter()
        .map(|(_, id)| {
            let bytes = std::fs::read(dir.join(format!("{id}.pcm"))).unwrap_or_default();
            let samples: Vec<i16> = bytes
                .chunks_exact(2)
                .map(|p| i16::from_le_bytes([p[0], p[1]]))
                .collect();
            samples
                .chunks(CHUNK)
                .map(|c| mark_of(c).unwrap_or_else(|| panic!("session {id}: an unmarked chunk")))
                .collect()
        })
        .collect()
}

/// The emulator, its own process; its base URL.
async fn start_emulator(home: &Path, record: &Path) -> (tokio::process::Child, String) {
    let mut emulator = aai_live(home)
        .args(["emulate", "--listen", "127.0.0.1:0", "--api-key", KEY])
        .args(["--max-session-duration", "20", "--record"])
        .arg(record)
        .spawn()
        .expect("emulator");
    let mut lines = BufReader::new(emulator.stdout.take().expect("stdout")).lines();
    let ready = lines.next_line().await.expect("read").expect("ready line");
    let base = ready
        .rsplit(' ')
        .next()
        .expect("url")
        .trim_end_matches('/')
        .to_owned();
    (emulator, base)
}

/// The client, its own process, recovering quickly; its NDJSON events and stderr, collected.
fn start_client(
    home: &Path,
    wav: &Path,
    base: &str,
) -> (
    tokio::process::Child,
    tokio::task::JoinHandle<Vec<serde_json::Value>>,
    tokio::task::JoinHandle<String>,
) {
    let mut client = aai_live(home)
        .args(["run", "--headless", "--emulator-hints", "--input"])
        .arg(format!("file:{}", wav.display()))
        .env("ASSEMBLYAI_API_KEY", KEY)
        .env(
            "AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL",
            format!("{base}/v3/token"),
        )
        .env("AAI_LIVE__PROVIDER__TIMEOUT", "10s")
        .env(
            "AAI_LIVE__STREAMING__URL",
            format!("{}/v3/ws", base.replacen("http", "ws", 1)),
        )
        .env("AAI_LIVE__SESSION__ROTATION_LEAD", "5s")
        .env("AAI_LIVE__SESSION__STALL_TIMEOUT", "3s")
        .env("AAI_LIVE__SESSION__BEGIN_TIMEOUT", "5s")
        .env("AAI_LIVE__SESSION__BACKOFF_INITIAL", "200ms")
        .env("AAI_LIVE__SESSION__BACKOFF_MAX", "2s")
        .env("AAI_LIVE__SESSION__RATE_LIMIT_BACKOFF", "2s")
        .spawn()
        .expect("client");
    let out = client.stdout.take().expect("stdout");
    let err = client.stderr.take().expect("stderr");
    let events = tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        let mut events = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            events.push(serde_json::from_str::<serde_json::Value>(&line).expect("NDJSON"));
        }
        events
    });
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(err).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    (client, events, stderr)
}

/// For `seconds`: a random recoverable fault every `every.0` to `every.0 + every.1` seconds
/// (none in the last 12 s), both processes' RSS every second. Returns the faults and the RSS
/// samples (KiB).
async fn inject_and_sample(
    base: &str,
    seconds: u64,
    every: (u64, u64),
    rng: &mut Rng,
    pids: [(&'static str, u32); 2],
) -> (Vec<String>, BTreeMap<&'static str, Vec<u64>>) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let end = Duration::from_secs(seconds);
    let mut next_fault = Duration::from_secs(4);
    let mut rss: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut injected = Vec::new();
    while started.elapsed() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (name, pid) in pids {
            if let Some(kib) = rss_kib(pid) {
                rss.entry(name).or_default().push(kib);
            }
        }
        if started.elapsed() >= next_fault && started.elapsed() + Duration::from_secs(12) < end {
            let at = format!("{}ms", 500 + rng.below(3000));
            let spec = FAULTS[usize::try_from(rng.below(FAULTS.len() as u64)).expect("index")]
                .replace("{t}", &at);
            let answer = http
                .post(format!("{base}/emulator/faults"))
                .json(&serde_json::json!({ "spec": spec }))
                .send()
                .await
                .expect("fault");
            assert!(answer.status().is_success(), "{spec}: {}", answer.status());
            injected.push(spec);
            next_fault = started.elapsed() + Duration::from_secs(every.0 + rng.below(every.1 + 1));
        }
    }
    (injected, rss)
}

/// The ledger to the sample: `finished` balances with nothing lost, and the recordings cover
/// every captured chunk, each session's chunks consecutive.
fn assert_ledger(events: &[serde_json::Value], sessions: &[Vec<usize>]) {
    let finished = events.last().expect("events");
    assert_eq!(finished["event"], "finished", "{finished}");
    let captured = finished["audio_captured_samples"]
        .as_u64()
        .expect("captured");
    let sent = finished["audio_sent_samples"].as_u64().expect("sent");
    let lost = finished["audio_lost_samples"].as_u64().expect("lost");
    assert_eq!(captured, sent + lost, "captured = sent + lost");
    assert_eq!(lost, 0, "recoverable faults lose nothing: {events:?}");
    let chunks = usize::try_from(captured).expect("small") / CHUNK;
    let mut got = vec![false; chunks];
    for (s, session) in sessions.iter().enumerate() {
        for pair in session.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "session {s}: a gap or a repeat");
        }
        for &k in session {
            assert!(k < chunks, "session {s}: chunk {k} was not captured");
            got[k] = true;
        }
    }
    let missing: Vec<usize> = (0..chunks).filter(|k| !got[*k]).collect();
    if !missing.is_empty() {
        for e in events.iter().rev().take(25).rev() {
            eprintln!("soak event: {e}");
        }
    }
    assert!(
        missing.is_empty(),
        "chunks no session received: {missing:?}"
    );
    eprintln!(
        "soak: {captured} samples captured, {sent} sent, {lost} lost; {} sessions, {} reconnects, \
         {} rotations",
        sessions.len(),
        finished["reconnects"],
        finished["rotations"]
    );
}

async fn soak(seconds: u64, fault_every: (u64, u64)) {
    let seed = std::env::var("AAI_LIVE_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0000_0000_0001_u64);
    eprintln!("soak: seed {seed} ({seconds} s); replay with AAI_LIVE_SOAK_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let home = tempfile::tempdir().expect("tempdir");
    let record = home.path().join("record");
    std::fs::create_dir_all(&record).expect("record");
    let (emulator, base) = start_emulator(home.path(), &record).await;
    let emulator_pid = emulator.id().expect("pid");
    // The input is as long as the run and ends it: the client then sends what is still buffered
    // before stopping, so even a replay under way at the end loses nothing.
    let mut input = marked_input(usize::try_from(seconds / 2 + 1).expect("small"));
    input.truncate(usize::try_from(seconds).expect("small") * 16_000);
    let wav: PathBuf = home.path().join("input.wav");
    write_wav(&wav, &input);
    let (mut client, events, stderr) = start_client(home.path(), &wav, &base);
    let client_pid = client.id().expect("pid");
    let (injected, rss) = inject_and_sample(
        &base,
        seconds,
        fault_every,
        &mut rng,
        [("client", client_pid), ("emulator", emulator_pid)],
    )
    .await;
    let status = tokio::time::timeout(Duration::from_secs(90), client.wait())
        .await
        .expect("the client ends")
        .expect("status");
    let events = events.await.expect("stdout");
    let client_stderr = stderr.await.expect("stderr");
    let sessions = recordings(&base, &record).await;
    // The emulator ends cleanly on SIGTERM.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &emulator_pid.to_string()])
        .status();
    let emulator_out = tokio::time::timeout(Duration::from_secs(10), emulator.wait_with_output())
        .await
        .expect("the emulator ends")
        .expect("output");
    let emulator_stderr = String::from_utf8_lossy(&emulator_out.stderr).into_owned();
    eprintln!("soak: {} faults: {injected:?}", injected.len());
    assert!(status.success(), "client exit {status}: {client_stderr}");
    assert!(emulator_out.status.success(), "emulator: {emulator_stderr}");
    for (who, text) in [("client", &client_stderr), ("emulator", &emulator_stderr)] {
        assert!(!text.contains("panicked"), "{who} panicked: {text}");
    }
    assert_ledger(&events, &sessions);
    for (name, samples) in &rss {
        eprintln!(
            "soak: {name} RSS KiB min {} max {}, every second: {samples:?}",
            samples.iter().min().unwrap_or(&0),
            samples.iter().max().unwrap_or(&0)
        );
        assert_flat(name, samples);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_90_seconds_of_recoverable_faults() {
    soak(90, (3, 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "20 minutes; AAI_LIVE_SOAK_SECS sets the length"]
async fn soak_long() {
    let seconds = std::env::var("AAI_LIVE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1200);
    soak(seconds, (30, 30)).await;
}
