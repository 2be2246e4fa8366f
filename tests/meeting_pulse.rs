//! Meeting mode through a real PulseAudio server (support/pulse.rs): the real binary with two
//! labelled live inputs, `you=mic:alsa:pulse` (the microphone through ALSA's pulse plugin) and
//! `them=monitor` (the null sink's monitor through parec), against the in-process emulator, while
//! the bundled recording plays into the null sink.
//!
//! The harness's default source is the null sink's monitor, so the microphone hears exactly what
//! is played, like a microphone next to the speakers: both inputs transcribe the same words, and
//! the microphone's turns are the echoes. Each input keeps its own ledger, checked to the sample:
//! what the emulator recorded for that input's sessions is its archive (`--archive`) at the same
//! stream offsets, from its first sample to its last.
#![cfg(feature = "mic")]

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
const LABELS: [&str; 2] = ["you", "them"];

impl Running {
    /// Take the lines that arrived so far.
    fn drain(&mut self) {
        self.seen.extend(self.lines.try_iter());
    }

    /// The session ids `label`'s `begin` events named so far.
    fn sessions_of(&self, label: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|e| e["event"] == "begin" && e["source"] == label)
            .filter_map(|e| e["session_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Ask for a graceful stop (SIGINT: the same Stop as `--duration`'s end, and a line on stderr).
    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -INT: {status}");
    }

    /// Wait for the end (bounded); every event and stderr.
    fn finish(mut self, within: Duration) -> (Option<i32>, Vec<serde_json::Value>, String) {
        let deadline = Instant::now() + within;
        while self.child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the run did not end within {within:?}: {:?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("stderr");
        }
        let status = self.child.wait().expect("wait");
        self.seen.extend(self.lines.iter());
        (status.code(), std::mem::take(&mut self.seen), stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_archive(path: &Path) -> Vec<i16> {
    let reader = hound::WavReader::open(path).expect("the archive is a WAV");
    assert_eq!(reader.spec().sample_rate, RATE, "{}", path.display());
    assert_eq!(reader.spec().channels, 1, "{}", path.display());
    reader
        .into_samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect()
}

/// A final as last reported.
#[derive(Debug)]
struct Final {
    echo: bool,
    start_ms: u64,
    text: String,
}

/// One input's finals as last reported (an echo is reported again, marked, with the same
/// generation and turn order), in stream order.
fn finals_of(events: &[serde_json::Value], label: &str) -> Vec<Final> {
    let mut keys: Vec<(u64, u64)> = Vec::new();
    let mut turns: Vec<Final> = Vec::new();
    for e in events
        .iter()
        .filter(|e| e["event"] == "final" && e["source"] == label)
    {
        let key = (
            e["generation"].as_u64().expect("generation"),
            e["turn_order"].as_u64().expect("turn_order"),
        );
        let turn = Final {
            echo: e["echo"].as_bool().unwrap_or(false),
            start_ms: e["start_ms"].as_u64().expect("start_ms"),
            text: e["text"].as_str().expect("text").to_owned(),
        };
        if let Some(i) = keys.iter().position(|k| *k == key) {
            turns[i] = turn;
        } else {
            keys.push(key);
            turns.push(turn);
        }
    }
    turns.sort_by_key(|t| t.start_ms);
    turns
}

/// The emulator: the recording's script, every session's audio kept, the pacing check on.
async fn emulator(record: &Path) -> RunningEmulator {
    common::start(EmulatorConfig {
        script: Some(Arc::new(aai_live::demo::script().expect("demo script"))),
        record_dir: Some(record.to_owned()),
        processing_delay: Duration::ZERO,
        ..EmulatorConfig::with_key(KEY)
    })
    .await
}

/// The run's command line: both inputs on the harness's server, archived, txt export.
fn meeting_command(emu: &RunningEmulator, home: &Path, pulse: &Pulse) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aai-live"));
    command
        .args(["run", "--headless", "--emulator", &emu.base_url()])
        .args(["--input", "you=mic:alsa:pulse", "--input", "them=monitor"])
        // An upper bound: the test stops the run once the playback is over.
        .args(["--archive", "--duration", "60s"])
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("ASSEMBLYAI_API_KEY", KEY)
        .env("AAI_LIVE__TRANSCRIPT__FORMATS", "txt")
        .env_remove("AAI_LIVE_CONFIG")
        .env_remove("AAI_LIVE_EMULATOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    pulse.apply(&mut command);
    command
}

/// Both inputs must be capturing before the playback starts, so that each archive holds the
/// whole recording: wait until the emulator has audio from a session of each (the first audio
/// through ALSA can take a couple of seconds).
async fn wait_until_both_stream(run: &mut Running, emu: &RunningEmulator, pulse: &Pulse) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    loop {
        run.drain();
        let sessions = emu.sessions();
        let streaming = |label: &str| {
            let ids = run.sessions_of(label);
            sessions
                .iter()
                .any(|s| s.audio_bytes > 0 && ids.contains(&s.id))
        };
        if LABELS.iter().all(|l| streaming(l)) {
            eprintln!("both inputs streaming after {:?}", started.elapsed());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "both inputs streaming within 20 s: {:?}\n{}",
            run.seen,
            pulse.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Play `wav` into the null sink, to its end.
async fn play(pulse: &Pulse, wav: &Path) {
    let mut paplay = tokio::process::Command::new("paplay");
    paplay
        .arg(format!("--device={}", pulse::SINK))
        .arg(wav)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (k, v) in pulse.env() {
        paplay.env(k, v);
    }
    let played = tokio::time::timeout(Duration::from_secs(40), paplay.output())
        .await
        .expect("the playback ends")
        .expect("paplay");
    assert!(played.status.success(), "paplay: {played:?}");
}

/// Each input's ledger, from the run's `finished`: it adds up, nothing was lost, and what the
/// emulator recorded for the input's sessions is its archive, to the sample, from its first
/// sample to its last. Returns where the recording's first word is in each archive (stream
/// time, samples): the echo rule compares turns' stream times, so this says why should the
/// inputs' clocks ever disagree.
fn check_ledgers(events: &[serde_json::Value], record: &Path) -> Vec<Option<usize>> {
    let finished = events.last().expect("events");
    assert_eq!(finished["event"], "finished", "{finished}");
    assert!(finished.get("source").is_none(), "{finished}");
    let mut voice_at = Vec::new();
    for label in LABELS {
        let totals = &finished["sources"][label];
        let n = |k: &str| {
            totals[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{label}: {k} in {finished}"))
        };
        assert_eq!(
            n("audio_captured_samples"),
            n("audio_sent_samples") + n("audio_lost_samples"),
            "{label}: the ledger adds up: {totals}"
        );
        assert_eq!(n("audio_lost_samples"), 0, "{label}: {totals}");
        assert!(totals["failure"].is_null(), "{label}: {totals}");

        let wav = PathBuf::from(
            finished["archive"][label]
                .as_str()
                .unwrap_or_else(|| panic!("{label}'s archive in {finished}")),
        );
        let archive = read_archive(&wav);
        // Live inputs: at least the whole playback (1 s of silence and the recording).
        assert!(
            archive.len() as f64 >= 25.0 * f64::from(RATE),
            "{label}: {} samples archived",
            archive.len()
        );
        assert_eq!(
            archive.len() as u64,
            n("audio_captured_samples"),
            "{label}: the archive holds what the ledger captured"
        );
        let parts = common::received(record, events, label);
        common::assert_lossless(label, &parts, &archive);
        voice_at.push(archive.iter().position(|s| s.unsigned_abs() > 1000));
    }
    voice_at
}

/// The txt export marks the same turns: `You (echo): ` on each of the microphone's lines,
/// `Them: ` on each of the monitor's.
fn check_txt(home: &Path, you: &[Final], them: &[Final]) {
    let dir = home.join("data/aai-live/transcripts");
    let txt: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("transcripts")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    assert_eq!(txt.len(), 1, "{txt:?}");
    let txt = std::fs::read_to_string(&txt[0]).expect("txt");
    // `[hh:mm:ss] ` then who said it.
    let who = |line: &str, prefix: &str| line.get(11..).is_some_and(|l| l.starts_with(prefix));
    let lines: Vec<&str> = txt.lines().collect();
    assert_eq!(lines.len(), you.len() + them.len(), "{txt}");
    assert_eq!(
        lines.iter().filter(|l| who(l, "You (echo): ")).count(),
        you.len(),
        "{txt}"
    );
    assert_eq!(
        lines.iter().filter(|l| who(l, "Them: ")).count(),
        them.len(),
        "{txt}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_through_pulseaudio_keeps_two_ledgers_and_marks_the_microphones_echoes() {
    let Some(pulse) = Pulse::start() else { return };
    let record = tempfile::tempdir().expect("record dir");
    let home = tempfile::tempdir().expect("home");
    let emu = emulator(record.path()).await;
    let played = pulse::recording_after_silence(&pulse.scratch(), Duration::from_secs(1));
    let started = Instant::now();
    let mut run = Running::start(meeting_command(&emu, home.path(), &pulse));
    wait_until_both_stream(&mut run, &emu, &pulse).await;
    play(&pulse, &played).await;
    // The last turn ends in the silence after the recording (the emulator's 400 ms, once the
    // script's last word is passed).
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.interrupt();
    let (code, events, stderr) =
        tokio::task::spawn_blocking(move || run.finish(Duration::from_secs(20)))
            .await
            .expect("join");
    eprintln!("run took {:?} in all", started.elapsed());
    assert_eq!(code, Some(0), "{stderr}\n{events:?}\n{}", pulse.log());
    assert!(!stderr.contains("panic"), "{stderr}");
    assert_eq!(events[0]["event"], "hello", "{events:?}");
    assert_eq!(
        events[0]["input"],
        "you=microphone: PulseAudio Sound Server, them=system audio: default output",
    );
    let voice_at = check_ledgers(&events, record.path());

    // Both inputs transcribed the recording.
    let you = finals_of(&events, "you");
    let them = finals_of(&events, "them");
    eprintln!("you: {you:?}\nthem: {them:?}");
    for (label, finals) in [("you", &you), ("them", &them)] {
        assert!(
            finals.len() >= 4,
            "{label}: the recording's five sentences: {finals:?}"
        );
        let texts: Vec<String> = finals.iter().map(|f| f.text.clone()).collect();
        pulse::assert_recording_words(label, &texts);
    }
    // The microphone heard the speakers: each of its finals repeats one of the monitor's, and
    // is marked; none of the monitor's is.
    assert!(
        you.iter().all(|f| f.echo),
        "every microphone final is an echo: {you:?}\nthem: {them:?}\nfirst voice (you, them): \
         {voice_at:?}"
    );
    assert!(
        them.iter().all(|f| !f.echo),
        "no monitor final is an echo: {them:?}"
    );
    check_txt(home.path(), &you, &them);
    emu.shutdown().await;
}
