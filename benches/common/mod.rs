//! Helpers shared by the benchmarks: CPU accounting from /proc and wrk's output.
#![allow(dead_code, clippy::mod_module_files)] // each bench uses a different subset

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The emulator's API key in the benchmarks.
pub const KEY: &str = "bench-key";

/// A child process, killed (if still running) and reaped when dropped.
pub struct Proc(pub Child);

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

/// HOME and the XDG directories under `home`; no config file, no log filter from outside.
pub fn isolate(cmd: &mut Command, home: &Path) {
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("AAI_LIVE_CONFIG")
        .env_remove("AAI_LIVE_FEED_TOKEN")
        .env_remove("RUST_LOG");
}

/// A client's settings for the emulator at `port`: the api-key provider with its key, minting at
/// its /v3/token, streaming to its /v3/ws.
pub fn to_emulator(cmd: &mut Command, port: u16) {
    cmd.env("ASSEMBLYAI_API_KEY", KEY)
        .env(
            "AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL",
            format!("http://127.0.0.1:{port}/v3/token"),
        )
        .env(
            "AAI_LIVE__STREAMING__URL",
            format!("ws://127.0.0.1:{port}/v3/ws"),
        );
}

/// Start the emulator; returns the process and its port.
pub fn emulator(home: &Path, extra: &[&str]) -> (Proc, u16) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aai-live"));
    cmd.args(["emulate", "--listen", "127.0.0.1:0", "--api-key", KEY])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    isolate(&mut cmd, home);
    let mut child = cmd.spawn().expect("start the emulator");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    // The emulator goes on printing (how to use it): its stdout must stay open, or a late
    // write fails and the emulator stops in the middle of the run.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    (Proc(child), port)
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let (user, system) = cpu_split(pid, ticks);
    user + system
}

/// (utime, stime) of a process (all its threads), in seconds.
pub fn cpu_split(pid: u32, ticks: f64) -> (f64, f64) {
    cpu_split_of(&format!("/proc/{pid}/stat"), ticks)
}

/// (utime, stime) from a /proc `stat` file (a process's, or one thread's under `task/`).
pub fn cpu_split_of(path: &str, ticks: f64) -> (f64, f64) {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after ")": state is 0, utime is 11, stime is 12.
    (field(11) / ticks, field(12) / ticks)
}

/// Clock ticks per second for /proc times.
pub fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// (busy, total) ticks of the whole machine, from /proc/stat.
pub fn system_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle + iowait
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// wrk's "2.10ms", "850.00us", "1.02s", "1.50m", "1.00h" in milliseconds.
pub fn wrk_duration_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        "h" => number * 3_600_000.0,
        _ => return None,
    })
}

/// 12345.6 → "12 346".
pub fn group(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// What `wrk --latency` reports.
pub struct WrkReport {
    pub requests_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Responses other than 2xx/3xx.
    pub non_2xx: u64,
    /// connect + read + write + timeout errors.
    pub socket_errors: u64,
}

/// `wrk -t2 -c<connections> -d<secs>s --latency -H <header> <url>`, echoing its output. As a
/// child process, its CPU counts as the bench's once it has been waited for.
pub async fn run_wrk(
    url: &str,
    connections: usize,
    header: &str,
    window: std::time::Duration,
) -> Result<WrkReport, String> {
    let output = tokio::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{}s", window.as_secs()),
            "--latency",
            "-H",
            header,
            url,
        ])
        .output()
        .await
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk failed ({}): {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    for line in text.lines() {
        println!("  wrk | {line}");
    }
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
    };
    Ok(WrkReport {
        requests_per_s: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .ok_or("no Requests/sec in wrk's output")?,
        p50_ms: field("50%").and_then(wrk_duration_ms),
        p99_ms: field("99%").and_then(wrk_duration_ms),
        non_2xx: field("Non-2xx or 3xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        // "connect 0, read 0, write 0, timeout 0"
        socket_errors: field("Socket errors:").map_or(0, |v| {
            v.split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        }),
    })
}
