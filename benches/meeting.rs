//! Meeting-mode cost benchmark: what a second input costs. The release `aai-live` runs headless
//! against an emulator in this process, for the same wall-clock time, in the same run:
//! - `files`: one input, `--input file:A --loop`; two labelled inputs, `--input you=file:A
//!   --input them=file:B --loop` (B is A shifted by 1.1 s, so the two inputs' turns differ, as
//!   two people's do); and for scale the official Python SDK (`assemblyai==1.8.2`,
//!   benches/common/sdk_stream.py) streaming file A, when a Python with it is available;
//! - `live`, with a PulseAudio server of the bench's own (tests/support/pulse.rs: a null sink,
//!   its monitor the default source) playing A into the sink: one input, `--input
//!   mic:alsa:pulse` (the microphone through ALSA's pulse plugin, as on a PulseAudio or
//!   PipeWire desktop); two, `--input you=mic:alsa:pulse --input them=monitor` (a meeting).
//!   Skipped when PulseAudio is not installed.
//!
//! For each process: user + system CPU seconds over its whole life (read from /proc/PID/stat
//! once it has exited and before it is reaped, so every thread is counted; the CPU of the child
//! processes it waited for, `parec` for a monitor, separately), the same over its streaming
//! window (from its inputs' first `begin` to its `finished`; the SDK: `Begin` to
//! `Termination`), and its peak RSS (`VmHWM`, sampled every 20 ms until it exits; its children's
//! separately). Rounds alternate the set-ups so that the machine's noise spreads over all of
//! them. It prints tables of the medians with the ratio two/one and a verdict against the
//! issue's targets: two streams cost at most twice one stream's CPU, RSS under 30 MiB. It
//! reports; it never fails on a figure.
//!
//! `cargo bench --bench meeting` (both parts; `-- files` or `-- live` for one); env
//! `BENCH_SECONDS` (default 60: each run's `--duration`, and the SDK's file), `BENCH_ROUNDS`
//! (default 3), `AAI_LIVE_PYTHON` (default `target/sdk-venv/bin/python`), `BENCH_AAI_LIVE_BIN`
//! (another client build).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aai_live::emulator::EmulatorConfig;

mod common;
#[path = "../tests/support/pulse.rs"]
mod pulse;

const KEY: &str = "bench-key";
const RATE: u64 = 16_000;
/// Targets from the issue.
const CPU_RATIO_TARGET: f64 = 2.0;
const RSS_TARGET_MIB: f64 = 30.0;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

/// The client under test: the `aai-live` cargo built, or `BENCH_AAI_LIVE_BIN`.
fn binary() -> PathBuf {
    std::env::var_os("BENCH_AAI_LIVE_BIN")
        .filter(|p| !p.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_aai-live")),
            PathBuf::from,
        )
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

/// Voice-like 16 kHz mono audio (three 300 ms "words" with 100 ms gaps, then a second of quiet:
/// the emulator's turns) over low noise, `shift` samples into its pattern.
fn voice_like(seconds: u64, shift: u64) -> Vec<i16> {
    let mut seed: u32 = 0x2545_f491;
    (0..seconds * RATE)
        .map(|i| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f64::from((seed >> 16) as u16 as i16) / 32768.0 * 300.0;
            let in_pattern = (i + shift) % (RATE * 22 / 10);
            let voiced =
                in_pattern < RATE * 12 / 10 && in_pattern % (RATE * 4 / 10) < RATE * 3 / 10;
            let tone = if voiced {
                (i as f64 * 440.0 * std::f64::consts::TAU / RATE as f64).sin() * 8000.0
            } else {
                0.0
            };
            (tone + noise) as i16
        })
        .collect()
}

fn write_wav(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE as u32,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("wav");
    for s in samples {
        w.write_sample(*s).expect("sample");
    }
    w.finalize().expect("finalize");
}

/// A process's times from /proc/PID/stat, in seconds (all its threads; a zombie's, exited and
/// not yet reaped, are its whole life's).
#[derive(Debug, Clone, Copy, Default)]
struct Times {
    state: char,
    user: f64,
    system: f64,
    /// Of the children it waited for.
    children: f64,
}

fn proc_stat(pid: u32, ticks: f64) -> Option<Times> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| Some(fields.get(i)?.parse::<f64>().ok()? / ticks);
    // Fields after ")": state is 0, utime 11, stime 12, cutime 13, cstime 14.
    Some(Times {
        state: fields.first()?.chars().next()?,
        user: field(11)?,
        system: field(12)?,
        children: field(13)? + field(14)?,
    })
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// A `kB` field of /proc/PID/status.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The child processes of `pid` (those its main thread started).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// What one run of one set-up showed.
#[derive(Debug, Clone, Default)]
struct Measured {
    /// (user, system) CPU seconds over the process's life.
    whole: (f64, f64),
    /// CPU seconds of the child processes it waited for (`parec`).
    children_cpu: f64,
    /// CPU seconds and wall seconds over the streaming window.
    window_cpu: Option<f64>,
    window_secs: Option<f64>,
    peak_rss_kib: u64,
    /// The peak of its own memory (`RssAnon`: heap and stacks, not the shared libraries or a
    /// sound server's shared memory pool mapped into it).
    peak_anon_kib: u64,
    /// The sum of its children's peaks.
    children_peak_kib: u64,
    wall: f64,
    /// The client's `finished` line (aai-live only).
    finished: Option<serde_json::Value>,
    exit: Option<i32>,
}

impl Measured {
    fn cpu(&self) -> f64 {
        self.whole.0 + self.whole.1
    }
}

/// Where the streaming window starts and ends in a process's stdout.
#[derive(Clone, Copy)]
struct Marks {
    /// Sessions that must have begun (one per input) for the window to start.
    inputs: usize,
    is_begin: fn(&serde_json::Value) -> bool,
    is_end: fn(&serde_json::Value) -> bool,
}

const AAI_LIVE_ONE: Marks = Marks {
    inputs: 1,
    is_begin: |e| e["event"] == "begin",
    is_end: |e| e["event"] == "finished",
};

const AAI_LIVE_TWO: Marks = Marks {
    inputs: 2,
    ..AAI_LIVE_ONE
};

/// Follow the process's stdout: its `finished`, and its CPU over the streaming window.
fn follow(
    stdout: std::process::ChildStdout,
    pid: u32,
    marks: Marks,
    shared: Arc<Mutex<Measured>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let ticks = common::clk_tck() as f64;
        let cpu = || proc_stat(pid, ticks).map_or(0.0, |t| t.user + t.system);
        let mut begun = HashSet::new();
        let mut window_start: Option<(Instant, f64)> = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let mut m = shared.lock().expect("lock");
            if value["event"] == "finished" {
                m.finished = Some(value.clone());
            }
            if window_start.is_none() && (marks.is_begin)(&value) {
                begun.insert(value["source"].to_string());
                if begun.len() == marks.inputs {
                    window_start = Some((Instant::now(), cpu()));
                }
            } else if let Some((at, at_cpu)) = window_start
                && (marks.is_end)(&value)
            {
                m.window_cpu = Some(cpu() - at_cpu);
                m.window_secs = Some(at.elapsed().as_secs_f64());
            }
        }
    })
}

/// Run `cmd` to its end, measuring it.
fn measure(mut cmd: Command, marks: Marks) -> Measured {
    let ticks = common::clk_tck() as f64;
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("start a client");
    let pid = child.id();
    let shared = Arc::new(Mutex::new(Measured::default()));
    let reader = follow(
        child.stdout.take().expect("stdout"),
        pid,
        marks,
        Arc::clone(&shared),
    );
    // Sample the peaks until the process exits; read its CPU as a zombie, then reap it.
    let mut peak = 0;
    let mut peak_anon = 0;
    let mut child_peaks: HashMap<u32, u64> = HashMap::new();
    let mut last = Times::default();
    while let Some(times) = proc_stat(pid, ticks) {
        last = times;
        if times.state == 'Z' {
            break;
        }
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        peak_anon = peak_anon.max(status_kib(pid, "RssAnon:").unwrap_or(0));
        for c in children(pid) {
            let p = peak_rss_kib(c).unwrap_or(0);
            let slot = child_peaks.entry(c).or_default();
            *slot = (*slot).max(p);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().expect("wait");
    let wall = started.elapsed().as_secs_f64();
    let _ = reader.join();
    let mut m = shared.lock().expect("lock").clone();
    m.whole = (last.user, last.system);
    m.children_cpu = last.children;
    m.peak_rss_kib = peak;
    m.peak_anon_kib = peak_anon;
    m.children_peak_kib = child_peaks.values().sum();
    m.wall = wall;
    m.exit = status.code();
    m
}

struct Bench {
    home: tempfile::TempDir,
    port: u16,
    seconds: u64,
    file_a: PathBuf,
    file_b: PathBuf,
    runs: usize,
}

impl Bench {
    /// `aai-live run --headless --emulator URL ARGS --duration Ns` in a fresh HOME.
    fn client(&mut self, args: &[&str]) -> Command {
        self.runs += 1;
        let home = self.home.path().join(format!("run-{}", self.runs));
        std::fs::create_dir_all(&home).expect("home");
        let mut cmd = Command::new(binary());
        cmd.args([
            "run",
            "--headless",
            "--emulator",
            &format!("http://127.0.0.1:{}", self.port),
        ])
        .args(args)
        .args(["--duration", &format!("{}s", self.seconds)])
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("ASSEMBLYAI_API_KEY", KEY)
        .env_remove("AAI_LIVE_CONFIG")
        .env_remove("AAI_LIVE_EMULATOR")
        .env_remove("RUST_LOG");
        cmd
    }

    fn file_one(&mut self) -> Measured {
        let a = format!("file:{}", self.file_a.display());
        measure(self.client(&["--input", &a, "--loop"]), AAI_LIVE_ONE)
    }

    fn file_two(&mut self) -> Measured {
        let you = format!("you=file:{}", self.file_a.display());
        let them = format!("them=file:{}", self.file_b.display());
        let cmd = self.client(&["--input", &you, "--input", &them, "--loop"]);
        measure(cmd, AAI_LIVE_TWO)
    }

    fn sdk(&self, python: &Path) -> Measured {
        let mut cmd = Command::new(python);
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/common/sdk_stream.py"
        ))
        .args([
            "--host",
            &format!("ws://127.0.0.1:{}", self.port),
            "--api-key",
            KEY,
        ])
        .arg(&self.file_a)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
        measure(
            cmd,
            Marks {
                inputs: 1,
                is_begin: |e| e["type"] == "Begin",
                is_end: |e| e["type"] == "Termination",
            },
        )
    }

    /// A live run while `played` plays into the null sink (from before the client starts to
    /// after it ends).
    fn live(
        &mut self,
        pulse: &pulse::Pulse,
        played: &Path,
        args: &[&str],
        marks: Marks,
    ) -> Measured {
        let mut playing = pulse.play(played);
        let mut cmd = self.client(args);
        pulse.apply(&mut cmd);
        let m = measure(cmd, marks);
        let _ = playing.kill();
        let _ = playing.wait();
        m
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => f64::midpoint(values[n / 2 - 1], values[n / 2]),
    }
}

/// A figure of a run, for one row of a table.
type Figure<'a> = &'a dyn Fn(&Measured) -> f64;

/// `median (min-max)` of a figure over the runs.
fn spread(runs: &[Measured], f: Figure, digits: usize) -> String {
    let values: Vec<f64> = runs.iter().map(f).filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return "-".into();
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.digits$} ({lo:.digits$}-{hi:.digits$})",
        median(values.clone())
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Whether an aai-live run did what it was measured for: exit 0, every input's ledger
/// balanced with nothing lost and about `seconds` of audio captured (less the start: mint,
/// connect, a live device's first audio), finals from every input. Says so when not.
fn check_run(name: &str, m: &Measured, inputs: &[&str], seconds: u64) {
    let mut problems = Vec::new();
    if m.exit != Some(0) {
        problems.push(format!("exit {:?}", m.exit));
    }
    let finished = m.finished.clone().unwrap_or_default();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64();
    for label in inputs {
        let totals = if label.is_empty() {
            &finished
        } else {
            &finished["sources"][*label]
        };
        let (captured, sent, lost) = (
            n(totals, "audio_captured_samples"),
            n(totals, "audio_sent_samples"),
            n(totals, "audio_lost_samples"),
        );
        if captured.is_none() || captured != sent.zip(lost).map(|(s, l)| s + l) || lost != Some(0) {
            problems.push(format!(
                "{label} ledger: captured {captured:?}, sent {sent:?}, lost {lost:?}"
            ));
        }
        if captured.unwrap_or(0) < seconds.saturating_sub(3) * RATE {
            problems.push(format!(
                "{label}: captured {captured:?} samples in {seconds} s"
            ));
        }
        if n(totals, "finals").unwrap_or(0) == 0 {
            problems.push(format!("{label}: no finals"));
        }
    }
    if !problems.is_empty() {
        println!("  warning: {name}: {}", problems.join("; "));
    }
}

/// The runs of one part: one input, two inputs, and a peer (may be empty).
#[derive(Default)]
struct Part {
    one: Vec<Measured>,
    two: Vec<Measured>,
    peer: Vec<Measured>,
}

fn round_line(part: &str, round: usize, one: &Measured, two: &Measured, peer: Option<&Measured>) {
    println!(
        "  {part} round {}: CPU one {:.2} s, two {:.2} s (two/one {:.2}){}; peak RSS one {:.1} MiB, two {:.1} MiB{}",
        round + 1,
        one.cpu(),
        two.cpu(),
        two.cpu() / one.cpu(),
        peer.map_or(String::new(), |s| format!(", Python SDK {:.2} s", s.cpu())),
        mib(one.peak_rss_kib),
        mib(two.peak_rss_kib),
        peer.map_or(String::new(), |s| format!(
            ", Python SDK {:.1} MiB",
            mib(s.peak_rss_kib)
        )),
    );
}

/// The emulator runs in this process, on a thread of its own: its CPU is not the clients'.
fn start_emulator(runtime: &tokio::runtime::Runtime) -> (aai_live::emulator::RunningEmulator, u16) {
    let emulator = runtime
        .block_on(aai_live::emulator::start(
            EmulatorConfig::with_key(KEY),
            "127.0.0.1:0",
            None,
        ))
        .expect("the emulator starts");
    let port = url::Url::parse(&emulator.base_url())
        .ok()
        .and_then(|u| u.port())
        .expect("the emulator's port");
    (emulator, port)
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("meeting benchmark: run with `cargo bench --bench meeting`");
        return;
    }
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| picked.is_empty() || picked.iter().any(|p| p == part);
    let seconds = env_u64("BENCH_SECONDS", 60);
    let rounds = env_u64("BENCH_ROUNDS", 3) as usize;
    let home = tempfile::tempdir().expect("tempdir");
    let file_a = home.path().join("a.wav");
    let file_b = home.path().join("b.wav");
    write_wav(&file_a, &voice_like(seconds, 0));
    write_wav(&file_b, &voice_like(seconds, RATE * 11 / 10));
    // Played into the null sink: longer than a run, which starts after it.
    let played = home.path().join("played.wav");
    write_wav(&played, &voice_like(seconds + 15, 0));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (emulator, port) = start_emulator(&runtime);
    let mut bench = Bench {
        home,
        port,
        seconds,
        file_a,
        file_b,
        runs: 0,
    };
    let python = python();
    let pulse = if wants("live") {
        pulse::Pulse::start()
    } else {
        None
    };

    println!(
        "meeting: the release client headless against an in-process emulator, {seconds} s per run (--duration), {rounds} rounds alternating the set-ups"
    );
    let (mut files, mut live) = (Part::default(), Part::default());
    for round in 0..rounds {
        if wants("files") {
            let one = bench.file_one();
            check_run("files, one input", &one, &[""], seconds);
            let two = bench.file_two();
            check_run("files, two inputs", &two, &["you", "them"], seconds);
            let sdk = python.as_deref().map(|p| bench.sdk(p));
            round_line("files", round, &one, &two, sdk.as_ref());
            files.one.push(one);
            files.two.push(two);
            files.peer.extend(sdk);
        }
        if let Some(pulse) = &pulse {
            let one = bench.live(pulse, &played, &["--input", "mic:alsa:pulse"], AAI_LIVE_ONE);
            check_run("live, microphone", &one, &[""], seconds);
            let two = bench.live(
                pulse,
                &played,
                &["--input", "you=mic:alsa:pulse", "--input", "them=monitor"],
                AAI_LIVE_TWO,
            );
            check_run("live, meeting", &two, &["you", "them"], seconds);
            round_line("live", round, &one, &two, None);
            live.one.push(one);
            live.two.push(two);
        }
    }
    runtime.block_on(emulator.shutdown());

    if wants("files") {
        println!(
            "\nfiles: `--input file:A --loop` (one) and `--input you=file:A --input them=file:B --loop` (two){}",
            if python.is_some() {
                "; the Python SDK streams file A once (it has no loop)"
            } else {
                "; Python SDK: skipped (set AAI_LIVE_PYTHON to a Python with assemblyai==1.8.2)"
            }
        );
        report(&files, ["one input", "two inputs", "Python SDK"]);
    }
    if wants("live") {
        if pulse.is_some() {
            println!(
                "\nlive, a PulseAudio of the bench's own playing file A: `--input mic:alsa:pulse` (one) and `--input you=mic:alsa:pulse --input them=monitor` (two)"
            );
            report(&live, ["microphone", "mic + monitor", ""]);
        } else {
            println!("\nlive: skipped (PulseAudio is not installed: make test-deps)");
        }
    }
}

/// A table of medians (min-max) with the ratio two/one, and the verdict against the targets.
fn report(part: &Part, names: [&str; 3]) {
    let cpu = |m: &Measured| m.cpu();
    let user = |m: &Measured| m.whole.0;
    let system = |m: &Measured| m.whole.1;
    let children = |m: &Measured| m.children_cpu;
    let window = |m: &Measured| m.window_cpu.unwrap_or(f64::NAN);
    let window_pct = |m: &Measured| match (m.window_cpu, m.window_secs) {
        (Some(c), Some(s)) if s > 0.0 => c / s * 100.0,
        _ => f64::NAN,
    };
    let rss = |m: &Measured| mib(m.peak_rss_kib);
    let anon = |m: &Measured| mib(m.peak_anon_kib);
    let children_rss = |m: &Measured| mib(m.children_peak_kib);
    let wall = |m: &Measured| m.wall;
    let ratio = |f: Figure| {
        median(part.two.iter().map(f).collect()) / median(part.one.iter().map(f).collect())
    };
    let with_children = part
        .one
        .iter()
        .chain(&part.two)
        .any(|m| m.children_cpu > 0.0);
    let mut rows: Vec<(&str, Figure, usize, bool)> = vec![
        ("wall time of the process (s)", &wall, 1, false),
        ("CPU, whole process (user+sys, s)", &cpu, 2, true),
        ("  user (s)", &user, 2, true),
        ("  system (s)", &system, 2, true),
        ("CPU, streaming window (s)", &window, 2, true),
        ("  of one core (%)", &window_pct, 2, true),
        ("peak RSS, VmHWM (MiB)", &rss, 1, true),
        ("  its own memory, RssAnon (MiB)", &anon, 1, true),
    ];
    if with_children {
        rows.insert(4, ("CPU of its children, parec (s)", &children, 2, false));
        rows.push(("peak RSS of its children (MiB)", &children_rss, 1, false));
    }
    println!(
        "  {:<34} {:>20} {:>20} {:>8} {:>20}",
        "medians (min-max)", names[0], names[1], "two/one", names[2]
    );
    for (name, f, digits, with_ratio) in rows {
        println!(
            "  {name:<34} {:>20} {:>20} {:>8} {:>20}",
            spread(&part.one, f, digits),
            spread(&part.two, f, digits),
            if with_ratio {
                format!("{:.2}", ratio(f))
            } else {
                String::new()
            },
            if part.peer.is_empty() {
                String::new()
            } else {
                spread(&part.peer, f, digits)
            },
        );
    }
    let paired: Vec<String> = part
        .one
        .iter()
        .zip(&part.two)
        .map(|(o, t)| format!("{:.2}", t.cpu() / o.cpu()))
        .collect();
    println!(
        "  two/one CPU per round (whole process): {}",
        paired.join(", ")
    );
    let cpu_ratio = ratio(&cpu);
    let window_ratio = ratio(&window);
    let worst_rss = part
        .one
        .iter()
        .chain(&part.two)
        .map(rss)
        .fold(0.0, f64::max);
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "  target two streams <= {CPU_RATIO_TARGET:.1}x one stream's CPU: {} (whole process {cpu_ratio:.2}, streaming window {window_ratio:.2})",
        verdict(cpu_ratio <= CPU_RATIO_TARGET && window_ratio <= CPU_RATIO_TARGET)
    );
    println!(
        "  target RSS < {RSS_TARGET_MIB:.0} MiB: {} (highest peak {worst_rss:.1} MiB; medians: one {:.1}, two {:.1} MiB; its own memory at most {:.1} MiB, the rest shared libraries and mapped pools)",
        verdict(worst_rss < RSS_TARGET_MIB),
        median(part.one.iter().map(rss).collect()),
        median(part.two.iter().map(rss).collect()),
        part.one
            .iter()
            .chain(&part.two)
            .map(anon)
            .fold(0.0, f64::max),
    );
}
