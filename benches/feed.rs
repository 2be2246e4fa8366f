//! The live feed's cost to the session: the release `aai-live run --headless --feed` streaming a
//! speech recording (assets/demo.wav, looped) in real time to the emulator (a separate process)
//! with faults (its first two sessions dropped after 5 s: two reconnects with replay), once with
//! no consumer and once with 100 stalled consumers — connections that ask for `/events` with a
//! 4 KiB receive buffer and never read — side by side. Prints, for each, the client's CPU from
//! its start to its `finished` (from /proc): the session's (the process less the feed's own
//! thread, `aai-live-feed`, which serves the consumers) and the whole process's; the ledger
//! (`captured = sent + lost`, and nothing lost); and the ratios.
//!
//! `cargo bench --bench feed`. Env: `BENCH_SECONDS` (default 20) per run, `BENCH_ROUNDS`
//! (default 2: runs alternate, without / with, and the medians are compared), `BENCH_CONSUMERS`
//! (default 100).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Proc, emulator, isolate, to_emulator};

/// One run's figures.
struct Measured {
    /// The process less the feed's thread, in seconds.
    session_cpu: f64,
    /// The whole process.
    cpu: f64,
    captured: u64,
    sent: u64,
    lost: u64,
    reconnects: u64,
    finals: u64,
    consumers_served: usize,
    failure: Option<String>,
}

/// `run --headless --feed 127.0.0.1:0` for `seconds`, with `consumers` stalled consumers.
fn run(seconds: u64, consumers: usize) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().to_owned();
    // Its first two sessions dropped after 5 s: two reconnects with replay.
    let (_emu, port) = emulator(&home, &["--fault", "drop@5sx2"]);
    let recording = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo.wav");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aai-live"));
    cmd.args(["run", "--headless", "--loop", "--feed", "127.0.0.1:0"])
        .arg("--input")
        .arg(format!("file:{}", recording.display()))
        .args(["--duration", &format!("{seconds}s")])
        // Reconnect at once after each drop, as after any healthy session.
        .env("AAI_LIVE__SESSION__HEALTHY_AFTER", "2s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    isolate(&mut cmd, &home);
    to_emulator(&mut cmd, port);
    let started = Instant::now();
    let mut child = Proc(cmd.spawn().expect("client"));
    let pid = child.0.id();
    let mut stderr = BufReader::new(child.0.stderr.take().expect("stderr"));
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).expect("stderr") > 0,
            "the client ended before its feed listened"
        );
        if let Some(rest) = line
            .trim()
            .strip_prefix("aai-live: feed listening on http://")
        {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});
    let stalled: Vec<std::net::TcpStream> = (0..consumers).map(|_| stall(&addr)).collect();
    let (mut cpu, mut feed_cpu) = (0.0, 0.0);
    let mut finished = serde_json::Value::Null;
    for line in BufReader::new(child.0.stdout.take().expect("stdout")).lines() {
        let Ok(line) = line else { break };
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if event["event"] == "finished" {
            // The session's work is done; the feed's closing is not the session's cost.
            (cpu, feed_cpu) = threads_cpu(pid, "aai-live-feed");
            finished = event;
        }
    }
    let _ = child.0.wait();
    assert!(
        started.elapsed() < Duration::from_secs(seconds + 20),
        "the run took {:?}",
        started.elapsed()
    );
    let field = |name: &str| finished[name].as_u64().unwrap_or_default();
    Measured {
        session_cpu: cpu - feed_cpu,
        cpu,
        captured: field("audio_captured_samples"),
        sent: field("audio_sent_samples"),
        lost: field("audio_lost_samples"),
        reconnects: field("reconnects"),
        finals: field("finals"),
        consumers_served: stalled.len(),
        failure: finished["failure"].as_str().map(str::to_owned),
    }
}

/// A consumer that asks for every event and never reads: a 4 KiB receive buffer, so its
/// connection backs up quickly.
fn stall(addr: &str) -> std::net::TcpStream {
    use std::io::Write;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket
            .connect(addr.parse().expect("address"))
            .await
            .expect("connect to the feed")
            .into_std()
            .expect("std stream")
    });
    stream.set_nonblocking(false).expect("blocking");
    let mut stream = stream;
    write!(
        stream,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    stream
}

/// CPU time of the process's threads (`/proc/PID/task/*/schedstat`: nanoseconds, not clock
/// ticks: the session uses a few hundred ms a minute), in seconds: all of them, and those
/// named `name`.
fn threads_cpu(pid: u32, name: &str) -> (f64, f64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0.0, 0.0);
    };
    let (mut all, mut named) = (0.0, 0.0);
    for task in tasks.flatten() {
        let ns: f64 = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        all += ns / 1e9;
        if std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == name) {
            named += ns / 1e9;
        }
    }
    (all, named)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("feed benchmark: run with `cargo bench --bench feed`");
        return;
    }
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seconds = env("BENCH_SECONDS", 20);
    let rounds = env("BENCH_ROUNDS", 2).max(1);
    let consumers = env("BENCH_CONSUMERS", 100) as usize;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let (mut without_all, mut with_all) = (Vec::new(), Vec::new());
    let mut ledgers = Vec::new();
    for round in 1..=rounds {
        for (n, into, all) in [
            (0, &mut without, &mut without_all),
            (consumers, &mut with, &mut with_all),
        ] {
            let m = run(seconds, n);
            let exact = m.captured == m.sent + m.lost;
            println!(
                "round {round}, {:>3} stalled consumers: CPU session {:.3} s, process {:.3} s  ledger captured {} = sent {} + lost {} ({})  reconnects {}  finals {}",
                m.consumers_served,
                m.session_cpu,
                m.cpu,
                m.captured,
                m.sent,
                m.lost,
                if exact && m.lost == 0 {
                    "exact, nothing lost"
                } else if exact {
                    "exact"
                } else {
                    "NOT EXACT"
                },
                m.reconnects,
                m.finals,
            );
            if let Some(failure) = &m.failure {
                println!("    the run failed: {failure}");
            }
            assert!(exact, "the ledger does not add up");
            ledgers.push((m.captured, m.sent, m.lost, m.finals));
            into.push(m.session_cpu);
            all.push(m.cpu);
        }
    }
    // The same audio and faults each run: with consumers or without, every ledger adds up and
    // nothing is lost, with the same finals. (`--duration` is wall time, so where it cuts the
    // looped file can differ by a chunk: the captured totals are shown, not compared.)
    let whole = ledgers
        .iter()
        .all(|&(captured, sent, lost, _)| captured == sent + lost && lost == 0);
    let same_finals = ledgers.windows(2).all(|w| w[0].3 == w[1].3);
    let captured = ledgers.iter().map(|l| l.0);
    println!(
        "ledger with and without consumers: {} (captured {}..={} samples per run)",
        if whole && same_finals {
            "exact and nothing lost in every run, the same finals"
        } else {
            "DIFFERENT"
        },
        captured.clone().min().unwrap_or_default(),
        captured.max().unwrap_or_default(),
    );
    let (a, b) = (median(without), median(with));
    let (a_all, b_all) = (median(without_all), median(with_all));
    println!(
        "\nclient CPU over a {seconds} s run with faults, median of {rounds}:\n\
         {:>28} {:>14} {:>24} {:>8}",
        "",
        "no consumer",
        format!("{consumers} stalled consumers"),
        "ratio",
    );
    for (what, a, b) in [
        ("session (less the feed)", a, b),
        ("whole process", a_all, b_all),
    ] {
        println!(
            "{what:>28} {:>14} {:>24} {:>8}",
            format!("{a:.3} s"),
            format!("{b:.3} s"),
            format!("{:.3}", b / a)
        );
    }
}
