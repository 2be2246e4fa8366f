//! Helpers shared by the benchmarks: CPU accounting from /proc and wrk's output.
#![allow(dead_code, clippy::mod_module_files)] // each bench uses a different subset

use std::process::Command;

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
