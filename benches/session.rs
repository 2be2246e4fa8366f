//! Session supervisor benchmark: runs the release `aai-live` binary as a headless client against
//! the emulator (a separate process), and prints
//! - the planned-rotation transcription gap (audio reaching no session at a hand-over),
//! - the time from an unplanned drop to streaming again,
//! - the headless client's CPU and peak RSS while streaming 16 kHz audio in real time.
//!
//! `cargo bench --bench session` (env `BENCH_SECONDS`, default 30, for the CPU run).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const KEY: &str = "bench-key";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg(self.0.id().to_string())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.0.wait();
    }
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_aai-live")
}

fn isolate(cmd: &mut Command, home: &Path) {
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("AAI_LIVE_CONFIG")
        .env_remove("RUST_LOG");
}

/// Start the emulator; returns the process and its port.
fn emulator(home: &Path, extra: &[&str]) -> (Proc, u16) {
    let mut cmd = Command::new(binary());
    cmd.args(["emulate", "--listen", "127.0.0.1:0", "--api-key", KEY])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    isolate(&mut cmd, home);
    let mut child = cmd.spawn().expect("start the emulator");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    (Proc(child), port)
}

fn client(home: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(["run", "--headless"]).args(args);
    isolate(&mut cmd, home);
    cmd.env("ASSEMBLYAI_API_KEY", KEY)
        .env(
            "AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL",
            format!("http://127.0.0.1:{port}/v3/token"),
        )
        .env(
            "AAI_LIVE__STREAMING__URL",
            format!("ws://127.0.0.1:{port}/v3/ws"),
        );
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

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after ")": state is 0, utime is 11, stime is 12.
    (field(11) + field(12)) / ticks
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
            "--session-limit",
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

/// Unplanned drop → streaming again: one TCP drop 3 s into a session, five runs.
fn drop_recovery() {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let (_dir, home) = home();
        let (_emu, port) = emulator(&home, &["--fault", "drop@3s"]);
        let cmd = client(
            &home,
            port,
            &["--input", "test:tone", "--duration", "6s"],
            &[],
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
        .unwrap_or(30);
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
    rotation_gap();
    drop_recovery();
    client_cost();
}
