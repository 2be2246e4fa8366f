//! System audio and command inputs end to end: the real binary (`aai-live run --headless`)
//! against the in-process emulator, with a real PulseAudio server of the test's own
//! (support/pulse.rs) for `--input monitor` and for the microphone through ALSA's pulse plugin,
//! and plain commands for `--input cmd:…`.
//!
//! The emulator knows the bundled recording's words (its script) and keeps every session's
//! audio (`record_dir`), so a test checks both what came back (finals with the recording's
//! words, the ledger adding up) and what was sent (the recording itself, found in the received
//! audio by cross-correlation). A live source starts at an arbitrary point of the playback, so
//! words are compared loosely there: every final's words in the script's order.

mod common;
#[path = "support/pulse.rs"]
mod pulse;
#[path = "support/running.rs"]
mod running;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aai_live::emulator::{EmulatorConfig, RunningEmulator};
use common::KEY;
use pulse::Pulse;
use running::Running;

const RATE: u32 = 16_000;

/// The emulator for these tests: the demo recording's script, every session's audio kept, the
/// pacing check on (a live source must not run faster than real time either).
async fn emulator(record: &Path) -> RunningEmulator {
    common::start(EmulatorConfig {
        script: Some(Arc::new(aai_live::demo::script().expect("demo script"))),
        record_dir: Some(record.to_owned()),
        processing_delay: Duration::ZERO,
        ..EmulatorConfig::with_key(KEY)
    })
    .await
}

/// `aai-live run --headless --emulator URL ARGS` in a private HOME, stdout piped.
fn aai_live(emu: &RunningEmulator, home: &Path, pulse: Option<&Pulse>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aai-live"));
    command
        .args(["run", "--headless", "--emulator", &emu.base_url()])
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("ASSEMBLYAI_API_KEY", KEY)
        .env_remove("AAI_LIVE_CONFIG")
        .env_remove("AAI_LIVE_EMULATOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match pulse {
        Some(pulse) => {
            pulse.apply(&mut command);
        }
        // No server to reach: a stray one of the machine's must not answer either.
        None => {
            command
                .env("PULSE_SERVER", "unix:/nonexistent/aai-live-test/native")
                .env("XDG_RUNTIME_DIR", home);
        }
    }
    command
}

impl Running {
    /// Wait for the first event named `name` (with a deadline).
    fn wait_for(&mut self, name: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if event["event"] == name {
                        return event;
                    }
                }
                Err(e) => panic!("no {name} event within {within:?} ({e}): {:?}", self.seen),
            }
        }
    }

    /// Wait for the end; every event and stderr.
    fn finish(mut self) -> (Option<i32>, Vec<serde_json::Value>, String) {
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("stderr");
        }
        let status = self.child.wait().expect("wait");
        self.seen.extend(self.lines.iter());
        (status.code(), self.seen, stderr)
    }
}

fn run_to_end(command: Command) -> (Option<i32>, Vec<serde_json::Value>, String) {
    Running::start(command).finish()
}

/// The finals, a replacement (same generation and turn) taking its predecessor's place.
fn finals(events: &[serde_json::Value]) -> Vec<String> {
    let mut out: Vec<((u64, u64), String)> = Vec::new();
    for e in events.iter().filter(|e| e["event"] == "final") {
        let key = (
            e["generation"].as_u64().expect("generation"),
            e["turn_order"].as_u64().expect("turn_order"),
        );
        let text = e["text"].as_str().expect("text").to_owned();
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = text,
            None => out.push((key, text)),
        }
    }
    out.into_iter().map(|(_, text)| text).collect()
}

/// The `finished` event, its ledger checked: captured = sent + lost. Returns it.
fn finished(events: &[serde_json::Value]) -> &serde_json::Value {
    let last = events.last().expect("events");
    assert_eq!(last["event"], "finished", "{events:?}");
    let n = |key: &str| {
        last[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {last}"))
    };
    assert_eq!(
        n("audio_captured_samples"),
        n("audio_sent_samples") + n("audio_lost_samples"),
        "the ledger adds up: {last}"
    );
    last
}

/// The audio the emulator received, session by session (the longest first).
fn received(record: &Path) -> Vec<Vec<i16>> {
    let mut sessions: Vec<Vec<i16>> = std::fs::read_dir(record)
        .expect("record dir")
        .filter_map(|e| {
            let path = e.expect("entry").path();
            (path.extension()? == "pcm").then(|| {
                std::fs::read(&path)
                    .expect("pcm")
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect()
            })
        })
        .collect();
    sessions.sort_by_key(|s| std::cmp::Reverse(s.len()));
    sessions
}

fn correlation(a: &[i16], b: &[i16]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// Where in `haystack` the recording `needle` starts (samples, may be negative: the capture
/// began after the playback), and how alike they are there (normalized correlation over the
/// overlap). A coarse search on 10 ms loudness envelopes, then sample by sample around it.
fn find(needle: &[i16], haystack: &[i16]) -> (i64, f64) {
    const FRAME: usize = 160;
    let envelope = |s: &[i16]| -> Vec<f64> {
        s.chunks(FRAME)
            .map(|c| c.iter().map(|&x| f64::from(x).abs()).sum::<f64>() / c.len() as f64)
            .collect()
    };
    let (n, h) = (envelope(needle), envelope(haystack));
    let score = |lag: i64| {
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (i, &x) in n.iter().enumerate() {
            let j = i as i64 + lag;
            if j < 0 || j as usize >= h.len() {
                continue;
            }
            let y = h[j as usize];
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        if aa == 0.0 || bb == 0.0 {
            0.0
        } else {
            ab / (aa * bb).sqrt()
        }
    };
    let coarse = (-300..h.len() as i64)
        .max_by(|&a, &b| score(a).total_cmp(&score(b)))
        .expect("lags");
    let at = |lag: i64| -> f64 {
        let (n_from, h_from) = if lag >= 0 {
            (0, lag as usize)
        } else {
            ((-lag) as usize, 0)
        };
        if n_from >= needle.len() || h_from >= haystack.len() {
            return 0.0;
        }
        correlation(&needle[n_from..], &haystack[h_from..])
    };
    let fine = (coarse * FRAME as i64 - 2 * FRAME as i64
        ..=coarse * FRAME as i64 + 2 * FRAME as i64)
        .max_by(|&a, &b| at(a).total_cmp(&at(b)))
        .expect("lags");
    (fine, at(fine))
}

/// Play the recording (after a second of silence) once the run says hello, and check what came
/// back and what the emulator received.
async fn play_through(spec_args: &[&str], pulse: &Pulse) {
    let record = tempfile::tempdir().expect("record dir");
    let home = tempfile::tempdir().expect("home");
    let emu = emulator(record.path()).await;
    let wav = pulse::recording_after_silence(&pulse.scratch(), Duration::from_secs(1));
    let mut args = spec_args.to_vec();
    args.extend(["--duration", "30s"]);
    let command = aai_live(&emu, home.path(), Some(pulse), &args);
    let (code, events, stderr) = tokio::task::spawn_blocking({
        let pulse_env = pulse.env();
        move || {
            let mut run = Running::start(command);
            run.wait_for("hello", Duration::from_secs(20));
            let mut paplay = Command::new("paplay");
            paplay
                .arg(format!("--device={}", pulse::SINK))
                .arg(&wav)
                .stdout(Stdio::null());
            for (k, v) in pulse_env {
                paplay.env(k, v);
            }
            let played = paplay.output().expect("paplay");
            assert!(played.status.success(), "paplay: {played:?}");
            run.finish()
        }
    })
    .await
    .expect("join");
    assert_eq!(code, Some(0), "{stderr}\n{events:?}\n{}", pulse.log());
    let last = finished(&events);
    assert_eq!(last["audio_lost_samples"], 0, "{last}");
    let finals = finals(&events);
    eprintln!("finals: {finals:?}");
    assert!(
        finals.len() >= 4,
        "the recording's five sentences: {finals:?}"
    );
    pulse::assert_recording_words("monitor", &finals);

    let sessions = received(record.path());
    let reference = pulse::recording();
    let (lag, similarity) = find(&reference, &sessions[0]);
    eprintln!("recording found at {lag} samples, correlation {similarity:.3}");
    assert!(
        similarity > 0.9,
        "the emulator received the recording (correlation {similarity:.3} at {lag})"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_records_what_the_system_plays() {
    let Some(pulse) = Pulse::start() else { return };
    play_through(&["--input", "monitor"], &pulse).await;
}

#[cfg(feature = "mic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_microphone_reaches_pulseaudio_through_alsa() {
    let Some(pulse) = Pulse::start() else { return };
    // The null sink's monitor is the default source: the microphone hears what is played.
    play_through(&["--input", "mic", "--device", "alsa:pulse"], &pulse).await;
}

#[cfg(feature = "mic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mic_spec_names_its_device_whatever_device_says() {
    let Some(pulse) = Pulse::start() else { return };
    let record = tempfile::tempdir().expect("record dir");
    let home = tempfile::tempdir().expect("home");
    let emu = emulator(record.path()).await;
    let args = [
        "--input",
        "mic:alsa:pulse",
        "--device",
        "no-such-microphone",
        "--duration",
        "2s",
    ];
    let command = aai_live(&emu, home.path(), Some(&pulse), &args);
    let (code, events, stderr) = tokio::task::spawn_blocking(move || run_to_end(command))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(events[0]["input"], "microphone: PulseAudio Sound Server");
    finished(&events);
    // Without the spec's device, --device is what counts.
    let command = aai_live(
        &emu,
        home.path(),
        Some(&pulse),
        &[
            "--input",
            "mic",
            "--device",
            "no-such-microphone",
            "--duration",
            "2s",
        ],
    );
    let (code, _, stderr) = tokio::task::spawn_blocking(move || run_to_end(command))
        .await
        .expect("join");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no input device matches \"no-such-microphone\""),
        "{stderr}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_audio_that_cannot_work_says_why_and_never_falls_back() {
    let record = tempfile::tempdir().expect("record dir");
    let home = tempfile::tempdir().expect("home");
    let emu = emulator(record.path()).await;
    let run = |pulse: Option<&Pulse>, input: &str, path: Option<&Path>| {
        let mut command = aai_live(
            &emu,
            home.path(),
            pulse,
            &["--input", input, "--duration", "5s"],
        );
        if let Some(path) = path {
            command.env("PATH", path);
        }
        async move {
            tokio::task::spawn_blocking(move || run_to_end(command))
                .await
                .expect("join")
        }
    };

    // No recorder installed: what to install.
    let empty = tempfile::tempdir().expect("empty PATH");
    let (code, events, stderr) = run(None, "monitor", Some(empty.path())).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "system audio cannot be captured: neither parec nor pw-record is on PATH; install \
             pulseaudio-utils"
        ),
        "{stderr}"
    );
    assert!(events.is_empty(), "nothing streamed: {events:?}");

    if !pulse::tools_installed() {
        return;
    }
    // No server.
    let (code, events, stderr) = run(None, "monitor", None).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("system audio cannot be captured: no PulseAudio or PipeWire server answers (pactl exited with status 1: "),
        "{stderr}"
    );
    assert!(events.is_empty(), "nothing streamed: {events:?}");

    // A source the server does not have.
    let pulse = Pulse::start().expect("tools are installed");
    let (code, events, stderr) = run(Some(&pulse), "monitor:nullsnk.monitor", None).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "no PulseAudio/PipeWire source matches \"nullsnk.monitor\"; did you mean \
             \"nullsink.monitor\"?; available: nullsink.monitor (see `aai-live devices`)"
        ),
        "{stderr}"
    );
    assert!(events.is_empty(), "nothing streamed: {events:?}");
    emu.shutdown().await;
}

#[cfg(feature = "mic")]
#[test]
fn devices_lists_the_sources_and_marks_the_default_monitor() {
    let Some(pulse) = Pulse::start() else { return };
    let home = tempfile::tempdir().expect("home");
    let mut command = Command::new(env!("CARGO_BIN_EXE_aai-live"));
    command
        .arg("devices")
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .env_remove("AAI_LIVE_CONFIG");
    let out = pulse.apply(&mut command).output().expect("devices");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
    assert!(
        stdout.contains("PulseAudio/PipeWire sources, for --input monitor:NAME"),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains(pulse::MONITOR))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.starts_with("* ") && line.contains("monitor of the default output"),
        "{line}"
    );
    // The pulse plugin's device is listed among ALSA's.
    assert!(stdout.contains("alsa:pulse"), "{stdout}");
}

/// The first `seconds` of the recording as raw s16le, in `dir`.
fn raw_recording(dir: &Path, seconds: f64) -> PathBuf {
    let path = dir.join("recording.raw");
    let samples = pulse::recording();
    let end = (seconds * f64::from(RATE)) as usize;
    let bytes: Vec<u8> = samples[..end]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    std::fs::write(&path, bytes).expect("raw");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_0_ends_the_input_normally() {
    let record = tempfile::tempdir().expect("record dir");
    let home = tempfile::tempdir().expect("home");
    let emu = emulator(record.path()).await;
    // The first two sentences (the second ends 8.07 s in); `cat` does not pace, the input does.
    let raw = raw_recording(home.path(), 8.9);
    let spec = format!("cmd:s16le:16000:1:cat {}", raw.display());
    let command = aai_live(&emu, home.path(), None, &["--input", &spec]);
    let started = Instant::now();
    let (code, events, stderr) = tokio::task::spawn_blocking(move || run_to_end(command))
        .await
        .expect("join");
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{stderr}\n{events:?}");
    assert!(
        took >= Duration::from_millis(8500),
        "paced at real time: {took:?}"
    );
    assert_eq!(
        events[0]["input"],
        format!("command: cat {}", raw.display())
    );
    let last = finished(&events);
    assert!(last["failure"].is_null(), "{last}");
    assert_eq!(last["audio_lost_samples"], 0, "{last}");
    // The stream starts where the recording does: the script's words exactly.
    assert_eq!(
        finals(&events),
        [
            "tokens are minted once and used once",
            "sessions rotate before they expire"
        ]
    );
    // What the emulator received is the file, sample for sample.
    let sent = received(record.path());
    let expected: Vec<i16> = pulse::recording()[..(8.9 * f64::from(RATE)) as usize].to_vec();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0] == expected,
        "{} vs {} samples",
        sent[0].len(),
        expected.len()
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_fails_the_run_with_its_last_stderr_line() {
    let record = tempfile::tempdir().expect("record dir");
    let home = tempfile::tempdir().expect("home");
    let emu = emulator(record.path()).await;
    // Half a second of audio, then two lines on stderr (the last with an escape sequence in
    // it, as a hostile or confused program might write), then status 3.
    let spec = r#"cmd:s16le:16000:1:sh -c "head -c 16000 /dev/zero; printf 'first\nbad \033[31mdata\n' >&2; exit 3""#;
    let command = aai_live(
        &emu,
        home.path(),
        None,
        &["--input", spec, "--duration", "20s"],
    );
    let (code, events, stderr) = tokio::task::spawn_blocking(move || run_to_end(command))
        .await
        .expect("join");
    assert_eq!(code, Some(1), "{stderr}\n{events:?}");
    let last = finished(&events);
    let failure = last["failure"].as_str().unwrap_or_else(|| panic!("{last}"));
    assert!(
        failure.contains("exited with status 3: bad [31mdata"),
        "{failure}"
    );
    assert!(
        stderr.contains("exited with status 3: bad [31mdata"),
        "{stderr}"
    );
    let stdout = serde_json::to_string(&events).expect("json");
    assert!(
        !stderr.contains('\u{1b}') && !stdout.contains("\\u001b"),
        "terminal-safe: {stderr}"
    );
    emu.shutdown().await;
}

/// Processes of group `pgid` that are still alive (not zombies).
fn live_members(pgid: u32) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, after)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(2) == Some(&pgid.to_string().as_str()) && fields[0] != "Z" {
            left.push(stat);
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_never_ends_is_stopped_with_its_whole_group() {
    let record = tempfile::tempdir().expect("record dir");
    let home = tempfile::tempdir().expect("home");
    let emu = emulator(record.path()).await;
    let pid_file = home.path().join("pid");
    // Ignores SIGTERM (and so do its children): only SIGKILL, 2 s later, stops it.
    let spec = format!(
        "cmd:s16le:16000:1:sh -c 'trap \"\" TERM; echo $$ > {}; while :; do head -c 3200 \
         /dev/zero; sleep 0.1; done'",
        pid_file.display()
    );
    let command = aai_live(
        &emu,
        home.path(),
        None,
        &["--input", &spec, "--duration", "3s"],
    );
    let started = Instant::now();
    let (code, events, stderr) = tokio::task::spawn_blocking(move || run_to_end(command))
        .await
        .expect("join");
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{stderr}\n{events:?}");
    let last = finished(&events);
    assert!(last["failure"].is_null(), "{last}");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the command ran")
        .trim()
        .parse()
        .expect("pid");
    let left = live_members(pid);
    assert!(left.is_empty(), "nothing of the command is left: {left:?}");
    assert!(
        took >= Duration::from_secs(5),
        "SIGKILL came 2 s after SIGTERM: {took:?}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    emu.shutdown().await;
}
