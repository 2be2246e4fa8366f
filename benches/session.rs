//! Session supervisor benchmark: runs the release `aai-live` binary as a headless client against
//! the emulator (a separate process), and prints
//! - the planned-rotation transcription gap (audio reaching no session at a hand-over),
//! - the time from an unplanned drop to streaming again,
//! - the headless client's CPU and peak RSS while streaming 16 kHz audio in real time,
//! - side by side with the official Python SDK, streaming the same file to the same emulator in
//!   the same run: the time from process start to the first audio at the service, the samples
//!   lost at the start, and each process's CPU (from its `Begin` to its `Termination`, from
//!   /proc) and peak RSS.
//!
//! `cargo bench --bench session` runs every part (about 2.5 minutes); `-- rotation`, `-- drop`,
//! `-- cost`, `-- sdk` pick parts. Env: `BENCH_SECONDS` (default 20) for the CPU run,
//! `BENCH_SDK_SECONDS` (default 60) for the file both clients stream, `AAI_LIVE_PYTHON` (default
//! `target/sdk-venv/bin/python`) for a Python with `assemblyai` installed, `BENCH_AAI_LIVE_BIN`
//! for another client build (before/after; the emulator stays the built one).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{KEY, Proc, cpu_seconds, cpu_split, emulator, isolate, to_emulator};

/// The client under test: the `aai-live` cargo built, or `BENCH_AAI_LIVE_BIN` (e.g. an older
/// build, to compare before and after a change; the emulator is always the one cargo built).
fn binary() -> PathBuf {
    std::env::var_os("BENCH_AAI_LIVE_BIN")
        .filter(|p| !p.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_aai-live")),
            PathBuf::from,
        )
}

fn client(home: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(["run", "--headless"]).args(args);
    isolate(&mut cmd, home);
    to_emulator(&mut cmd, port);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Stream the client's NDJSON, each line with its arrival time.
fn events(mut cmd: Command) -> Vec<(Instant, serde_json::Value)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("client");
    let stdout = child.stdout.take().expect("stdout");
    let mut out = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Ok(v) = serde_json::from_str(&line) {
            out.push((Instant::now(), v));
        }
    }
    let _ = child.wait();
    out
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn home() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    (dir, path)
}

/// Planned rotations: sessions capped at 8 s, rotation 4 s before expiry, 30 s of speech-like
/// input. The union of what the emulator recorded must cover the stream with no hole.
fn rotation_gap() {
    let (_dir, home) = home();
    let record = home.join("record");
    std::fs::create_dir_all(&record).expect("record dir");
    let (_emu, port) = emulator(
        &home,
        &[
            "--max-session-duration",
            "8",
            "--record",
            record.to_str().expect("path"),
        ],
    );
    let cmd = client(
        &home,
        port,
        &["--input", "test:tone", "--duration", "30s"],
        &[("AAI_LIVE__SESSION__ROTATION_LEAD", "4s")],
    );
    let events = events(cmd);
    let rotations: Vec<&serde_json::Value> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e["event"] == "rotation")
        .collect();
    let gap_ms: u64 = rotations.iter().filter_map(|e| e["gap_ms"].as_u64()).sum();
    // Stream offsets of each session, and the bytes each received.
    let mut starts: Vec<(u64, String)> = Vec::new();
    let mut ids = std::collections::HashMap::new();
    // Session ids first: a successor's `rotation` can precede its `begin` (docs/events.md).
    for (_, e) in &events {
        if e["event"] == "begin" {
            let id = e["session_id"].as_str().unwrap_or("").to_owned();
            if e["generation"] == 1 {
                starts.push((0, id.clone()));
            }
            ids.insert(e["generation"].as_u64().unwrap_or(0), id);
        }
    }
    for (_, e) in &events {
        if e["event"] == "rotation" {
            let to = e["to"].as_u64().unwrap_or(0);
            let offset = e["stream_offset_ms"].as_u64().unwrap_or(0) * 32;
            if let Some(id) = ids.get(&to) {
                starts.push((offset, id.clone()));
            }
        }
    }
    starts.sort();
    let mut covered = 0_u64;
    let mut holes = 0_u64;
    for (start, id) in &starts {
        let len = std::fs::metadata(record.join(format!("{id}.pcm"))).map_or(0, |m| m.len());
        if *start > covered {
            holes += start - covered;
        }
        covered = covered.max(start + len);
    }
    println!(
        "planned rotation: {} rotations in 30 s (8 s sessions); audio reaching no session: {} samples; gap reported by the client: {gap_ms} ms  (goal 0 ms)",
        rotations.len(),
        holes / 2
    );
}

/// Unplanned drop → streaming again: one TCP drop 3 s into a session, five runs. The session
/// counts as healthy after 2 s (`healthy_after`), so the first reconnect is immediate, as after
/// any session that stayed up for `healthy_after`; with the default 30 s a drop at 3 s backs off.
fn drop_recovery() {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let (_dir, home) = home();
        let (_emu, port) = emulator(&home, &["--fault", "drop@3s"]);
        let cmd = client(
            &home,
            port,
            &["--input", "test:tone", "--duration", "6s"],
            &[("AAI_LIVE__SESSION__HEALTHY_AFTER", "2s")],
        );
        let events = events(cmd);
        let lost = events
            .iter()
            .find(|(_, e)| e["event"] == "lost")
            .map(|(t, _)| *t);
        let back = lost.and_then(|l| {
            events
                .iter()
                .find(|(t, e)| *t >= l && e["event"] == "state" && e["state"] == "streaming")
                .map(|(t, _)| t.duration_since(l))
        });
        if let Some(d) = back {
            samples.push(d);
        }
    }
    samples.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    match (
        samples.first(),
        samples.get(samples.len() / 2),
        samples.last(),
    ) {
        (Some(min), Some(median), Some(max)) => println!(
            "unplanned drop -> streaming again: median {:.1} ms, min {:.1} ms, max {:.1} ms over {} drops  (goal < 250 ms)",
            ms(median),
            ms(min),
            ms(max),
            samples.len()
        ),
        _ => println!("unplanned drop -> streaming again: no measurement (no recovery seen)"),
    }
}

/// The headless client's CPU and peak RSS while streaming 16 kHz audio in real time.
fn client_cost() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let (_dir, home) = home();
    let (_emu, port) = emulator(&home, &[]);
    let mut cmd = client(
        &home,
        port,
        &[
            "--input",
            "test:noise",
            "--duration",
            &format!("{}s", seconds + 5),
        ],
        &[],
    );
    let mut child = Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("client"),
    );
    let pid = child.0.id();
    let ticks = common::clk_tck() as f64;
    std::thread::sleep(Duration::from_secs(3));
    let (c0, t0) = (cpu_seconds(pid, ticks), Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let (c1, t1) = (cpu_seconds(pid, ticks), Instant::now());
    let rss = peak_rss_kib(pid);
    let _ = child.0.wait();
    println!(
        "headless client streaming 16 kHz in real time: CPU {:.2}% of one core over {seconds} s, peak RSS {:.1} MiB  (goal < 1% and < 25 MiB)",
        (c1 - c0) / t1.duration_since(t0).as_secs_f64() * 100.0,
        rss as f64 / 1024.0
    );
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("session benchmark: run with `cargo bench --bench session`");
        return;
    }
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| picked.is_empty() || picked.iter().any(|p| p == part);
    if wants("rotation") {
        rotation_gap();
    }
    if wants("drop") {
        drop_recovery();
    }
    if wants("cost") {
        client_cost();
    }
    if wants("sdk") {
        side_by_side();
    }
}

/// A 16 kHz mono file both clients stream: voice-like bursts (three 300 ms "words" with 100 ms
/// gaps, then a second of quiet: the emulator's turns) over low noise, so that every stretch of
/// the file is unique and a recording can be placed in it to the sample.
fn bench_file(path: &Path, seconds: u64) -> Vec<i16> {
    const RATE: u64 = 16_000;
    let mut seed: u32 = 0x2545_f491;
    let samples: Vec<i16> = (0..seconds * RATE)
        .map(|i| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f64::from((seed >> 16) as u16 as i16) / 32768.0 * 300.0;
            let in_pattern = i % (RATE * 22 / 10);
            let voiced =
                in_pattern < RATE * 12 / 10 && in_pattern % (RATE * 4 / 10) < RATE * 3 / 10;
            let tone = if voiced {
                (i as f64 * 440.0 * std::f64::consts::TAU / RATE as f64).sin() * 8000.0
            } else {
                0.0
            };
            (tone + noise) as i16
        })
        .collect();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("wav");
    for s in &samples {
        w.write_sample(*s).expect("sample");
    }
    w.finalize().expect("finalize");
    samples
}

/// `GET /emulator/sessions` over a plain HTTP/1.1 request: (session id, audio bytes) of each.
fn emulator_sessions(port: u16) -> Vec<(String, u64)> {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    let request = format!(
        "GET /emulator/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).is_err()
        || stream.read_to_string(&mut response).is_err()
    {
        return Vec::new();
    }
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let Ok(serde_json::Value::Array(sessions)) = serde_json::from_str(body) else {
        return Vec::new();
    };
    sessions
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_owned(),
                s["audio_bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Watches the emulator's sessions and notes when each first had audio.
struct FirstAudio {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, Instant)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FirstAudio {
    /// Poll every 2 ms until `want` sessions have had audio (then stop, so that the polling
    /// does not load the machine during the CPU measurement).
    fn watch(port: u16, want: usize) -> Self {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Instant)>::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        std::thread::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && seen.lock().expect("lock").len() < want
                {
                    let now = Instant::now();
                    for (id, bytes) in emulator_sessions(port) {
                        let mut seen = seen.lock().expect("lock");
                        if bytes > 0 && !seen.iter().any(|(s, _)| *s == id) {
                            seen.push((id, now));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Self { seen, stop }
    }

    fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    fn when(&self, id: &str) -> Option<Instant> {
        let seen = self.seen.lock().expect("lock");
        seen.iter().find(|(s, _)| s == id).map(|(_, t)| *t)
    }
}

impl Drop for FirstAudio {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One client streaming the file: what its stdout said and what /proc showed.
#[derive(Default)]
struct Streamed {
    lines: Vec<serde_json::Value>,
    /// Spawn, `Begin` and `Termination` instants.
    spawned: Option<Instant>,
    begin: Option<Instant>,
    end: Option<Instant>,
    /// (user, system) CPU seconds at `Begin` and at `Termination`.
    cpu_begin: (f64, f64),
    cpu_end: (f64, f64),
    peak_rss_kib: u64,
}

impl Streamed {
    fn window(&self) -> Option<Duration> {
        Some(self.end?.duration_since(self.begin?))
    }

    fn cpu(&self) -> (f64, f64) {
        (
            self.cpu_end.0 - self.cpu_begin.0,
            self.cpu_end.1 - self.cpu_begin.1,
        )
    }
}

/// Start `cmd` and follow its JSON lines; `is_begin`/`is_end` pick the lines at which /proc is
/// read. The thread returns once the process has exited.
fn follow(
    mut cmd: Command,
    is_begin: fn(&serde_json::Value) -> bool,
    is_end: fn(&serde_json::Value) -> bool,
) -> std::thread::JoinHandle<Streamed> {
    let spawned = Instant::now();
    let mut child = Proc(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a client"),
    );
    std::thread::spawn(move || {
        let ticks = common::clk_tck() as f64;
        let pid = child.0.id();
        let mut run = Streamed {
            spawned: Some(spawned),
            ..Streamed::default()
        };
        let stdout = child.0.stdout.take().expect("stdout");
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if run.begin.is_none() && is_begin(&value) {
                run.cpu_begin = cpu_split(pid, ticks);
                run.begin = Some(Instant::now());
            } else if run.begin.is_some() && is_end(&value) {
                run.cpu_end = cpu_split(pid, ticks);
                run.end = Some(Instant::now());
                run.peak_rss_kib = peak_rss_kib(pid);
            }
            run.lines.push(value);
        }
        // The peak may rise after `Termination` (the transcript exports): the process is still
        // there until it is waited for.
        run.peak_rss_kib = run.peak_rss_kib.max(peak_rss_kib(pid));
        let _ = child.0.wait();
        run
    })
}

/// Where `recording` starts in `file` (the samples the service never got at the start), if it
/// is a stretch of it.
fn offset_in(file: &[i16], recording: &[i16]) -> Option<usize> {
    let probe = &recording[..recording.len().min(1600)];
    if probe.is_empty() {
        return None;
    }
    (0..file.len().saturating_sub(probe.len() - 1)).find(|&at| file[at..].starts_with(probe))
}

fn read_pcm(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn python() -> Option<PathBuf> {
    let path = std::env::var_os("AAI_LIVE_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv/bin/python"),
            PathBuf::from,
        );
    path.exists().then_some(path)
}

/// aai-live and the official Python SDK stream the same file to the same emulator in the same
/// run. aai-live starts first; the SDK once aai-live's audio has arrived, so that neither start
/// is slowed by the other's. Each one's CPU counts from its `Begin` to its `Termination`.
#[expect(
    clippy::too_many_lines,
    reason = "one measurement, printed as one table"
)]
fn side_by_side() {
    let seconds: u64 = std::env::var("BENCH_SDK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let Some(python) = python() else {
        println!(
            "side by side with the Python SDK: skipped (set AAI_LIVE_PYTHON to a Python with \
             assemblyai==1.8.2, e.g. target/sdk-venv/bin/python)"
        );
        return;
    };
    let (_dir, home) = home();
    let file = home.join("bench.wav");
    let samples = bench_file(&file, seconds);
    let record = home.join("record");
    std::fs::create_dir_all(&record).expect("record dir");
    let (_emu, port) = emulator(&home, &["--record", record.to_str().expect("path")]);
    let first_audio = FirstAudio::watch(port, 2);

    let ours = client(
        &home,
        port,
        &["--input", &format!("file:{}", file.display())],
        &[],
    );
    let ours = follow(
        ours,
        |e| e["event"] == "begin",
        |e| e["event"] == "termination",
    );
    let started = Instant::now();
    while first_audio.count() < 1 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut sdk = Command::new(&python);
    sdk.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/common/sdk_stream.py"
    ))
    .args([
        "--host",
        &format!("ws://127.0.0.1:{port}"),
        "--api-key",
        KEY,
    ])
    .arg(&file)
    .env("PYTHONDONTWRITEBYTECODE", "1")
    .env("PYTHONUNBUFFERED", "1")
    .stdin(Stdio::null());
    let sdk = follow(
        sdk,
        |e| e["type"] == "Begin",
        |e| e["type"] == "Termination",
    );
    let ours = ours.join().expect("aai-live follower");
    let sdk = sdk.join().expect("SDK follower");

    // Session ids: aai-live's `begin` events, the SDK's `Begin`.
    let our_ids: Vec<String> = ours
        .lines
        .iter()
        .filter(|e| e["event"] == "begin")
        .filter_map(|e| e["session_id"].as_str().map(str::to_owned))
        .collect();
    let sdk_id = sdk
        .lines
        .iter()
        .find(|e| e["type"] == "Begin")
        .and_then(|e| e["id"].as_str().map(str::to_owned));
    let since_spawn = |run: &Streamed, id: Option<&String>| {
        let at = first_audio.when(id?)?;
        Some(at.duration_since(run.spawned?))
    };
    let our_first = since_spawn(&ours, our_ids.first());
    let sdk_first = since_spawn(&sdk, sdk_id.as_ref());

    // Samples lost at the start: the client's ledger, and where the recording of its first
    // session starts in the file.
    let finished = ours
        .lines
        .iter()
        .find(|e| e["event"] == "finished")
        .cloned()
        .unwrap_or_default();
    let ledger = |k: &str| finished[k].as_u64();
    let placed = |id: Option<&String>| {
        let pcm = read_pcm(&record.join(format!("{}.pcm", id?)));
        Some((offset_in(&samples, &pcm)?, pcm.len()))
    };
    let ours_placed = placed(our_ids.first());
    let sdk_placed = placed(sdk_id.as_ref());

    let secs =
        |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.3} s", d.as_secs_f64()));
    let (our_user, our_sys) = ours.cpu();
    let (sdk_user, sdk_sys) = sdk.cpu();
    let (our_cpu, sdk_cpu) = (our_user + our_sys, sdk_user + sdk_sys);
    let percent = |cpu: f64, run: &Streamed| {
        run.window().map_or("-".to_owned(), |w| {
            format!("{:.2} %", cpu / w.as_secs_f64() * 100.0)
        })
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let at_start = |placed: Option<(usize, usize)>| {
        placed.map_or("no recording".to_owned(), |(at, _)| at.to_string())
    };
    let recorded = |placed: Option<(usize, usize)>| placed.map_or(0, |(_, n)| n).to_string();
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "-".into()
        }
    };

    println!(
        "side by side: aai-live and the Python SDK (assemblyai 1.8.2, v3 StreamingClient) stream the same {seconds} s 16 kHz file to one emulator; CPU from each one's Begin to its Termination"
    );
    println!(
        "  {:<34} {:>14} {:>14} {:>8}",
        "", "aai-live", "Python SDK", "ratio"
    );
    println!(
        "  {:<34} {:>14} {:>14}",
        "process start -> first audio",
        secs(our_first),
        secs(sdk_first)
    );
    println!(
        "  {:<34} {:>14} {:>14}",
        "streaming window (Begin..Termination)",
        secs(ours.window()),
        secs(sdk.window())
    );
    println!(
        "  {:<34} {:>12.2} s {:>12.2} s {:>8}  (goal <= 0.20)",
        "CPU in the window",
        our_cpu,
        sdk_cpu,
        ratio(our_cpu, sdk_cpu)
    );
    println!(
        "  {:<34} {:>14} {:>14}",
        "  of one core",
        percent(our_cpu, &ours),
        percent(sdk_cpu, &sdk)
    );
    println!(
        "  {:<34} {:>14} {:>14}",
        "  user / system",
        format!("{our_user:.2} / {our_sys:.2}"),
        format!("{sdk_user:.2} / {sdk_sys:.2}")
    );
    println!(
        "  {:<34} {:>10.1} MiB {:>10.1} MiB {:>8}  (goal aai-live < 25 MiB)",
        "peak RSS (VmHWM)",
        mib(ours.peak_rss_kib),
        mib(sdk.peak_rss_kib),
        ratio(mib(ours.peak_rss_kib), mib(sdk.peak_rss_kib))
    );
    println!(
        "  {:<34} {:>14} {:>14}  (goal 0)",
        "samples missing at the start",
        at_start(ours_placed),
        at_start(sdk_placed)
    );
    println!(
        "  {:<34} {:>14} {:>14}  (file: {})",
        "samples in the first session",
        recorded(ours_placed),
        recorded(sdk_placed),
        samples.len()
    );
    println!(
        "  aai-live's ledger: captured {} = sent {} + lost {} samples; {} session(s)",
        ledger("audio_captured_samples").map_or("-".into(), |v| v.to_string()),
        ledger("audio_sent_samples").map_or("-".into(), |v| v.to_string()),
        ledger("audio_lost_samples").map_or("-".into(), |v| v.to_string()),
        our_ids.len()
    );
}
