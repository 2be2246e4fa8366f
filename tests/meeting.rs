//! Meeting mode, the real binary against the emulator: two labelled inputs, each its own stream
//! (token, sessions, rotation, replay, ledger) through faults and rotations, merged into one
//! transcript whose turns carry their label. The emulator's `--record` files prove, per input
//! and to the sample, which audio reached the service.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use aai_live::emulator::EmulatorConfig;
use common::{KEY, utterances, write_wav};

fn lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

struct Meeting {
    emu: aai_live::emulator::RunningEmulator,
    home: tempfile::TempDir,
    record: PathBuf,
}

async fn meeting(emulator: EmulatorConfig) -> Meeting {
    let home = tempfile::tempdir().expect("tempdir");
    let record = home.path().join("record");
    std::fs::create_dir_all(&record).expect("record dir");
    let emu = common::start(EmulatorConfig {
        record_dir: Some(record.clone()),
        // Real-time pacing: the rotation and the drop happen at their times.
        pacing: None,
        ..emulator
    })
    .await;
    Meeting { emu, home, record }
}

/// Run the binary with `args` (after `run --headless`), the emulator as its service.
async fn run(m: &Meeting, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = common::aai_live(m.home.path());
    cmd.args(["run", "--headless", "--emulator", &m.emu.base_url()])
        .args(args)
        .env("ASSEMBLYAI_API_KEY", KEY)
        .env("AAI_LIVE__TRANSCRIPT__FORMATS", "txt,srt,vtt")
        .env("AAI_LIVE__SESSION__BACKOFF_INITIAL", "100ms");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("the run ends")
        .expect("run")
}

/// The arguments of a meeting of the two files [`two_inputs`] writes.
const TWO_INPUTS: [&str; 4] = [
    "--input",
    "you=file:you.wav",
    "--input",
    "them=file:them.wav",
];

/// `you.wav` and `them.wav` in the meeting's home: `utterances` of speech each, `them` shifted
/// by half an utterance (so no turn is an echo) and cut to the same length. Returns their
/// samples.
fn two_inputs(m: &Meeting, utterances: usize) -> (Vec<i16>, Vec<i16>) {
    let you = common::utterances(utterances);
    let mut them = vec![0i16; 17_600];
    them.extend(common::utterances(utterances));
    them.truncate(you.len());
    write_wav(&m.home.path().join("you.wav"), &you);
    write_wav(&m.home.path().join("them.wav"), &them);
    (you, them)
}

fn transcript_files(m: &Meeting) -> HashMap<String, String> {
    let dir = m.home.path().join("data/aai-live/transcripts");
    std::fs::read_dir(&dir)
        .expect("transcripts")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| ["txt", "srt", "vtt", "jsonl"].contains(&&*x.to_string_lossy()))
        })
        .map(|p| {
            let ext = p.extension().expect("ext").to_string_lossy().into_owned();
            (ext, std::fs::read_to_string(&p).expect("read"))
        })
        .collect()
}

/// Two inputs through a drop and rotations: each input's audio reaches the service whole and in
/// order (its own sessions, its own ledger), the two rotations are staggered 10 s apart, the
/// generations never collide, and one transcript holds both inputs' turns, labelled and in
/// stream-time order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_labelled_inputs_keep_their_own_ledgers_through_a_drop_and_rotations() {
    let m = meeting(EmulatorConfig {
        // 26 s sessions with a 1 s lead: both would rotate at 24 s; one moves to 14 s.
        max_session_duration: Some(Duration::from_secs(26)),
        faults: vec!["drop@16s".parse().expect("fault")],
        ..common::config()
    })
    .await;
    let (you, them) = two_inputs(&m, 12);
    let out = run(
        &m,
        &[&TWO_INPUTS[..], &["--archive"]].concat(),
        &[("AAI_LIVE__SESSION__ROTATION_LEAD", "1")],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = lines(&out.stdout);
    assert_eq!(events[0]["event"], "hello");
    assert!(
        events[0]["input"]
            .as_str()
            .is_some_and(|i| i.starts_with("you=file: you.wav, them=file: them.wav")),
        "{}",
        events[0]
    );
    let (run_finished, streams) = events[1..].split_last().expect("events");
    // Every event about a stream names its input.
    for e in streams {
        assert!(e["source"] == "you" || e["source"] == "them", "{e}");
    }
    let of = |source: &str, kind: &str| -> Vec<&serde_json::Value> {
        streams
            .iter()
            .filter(|e| e["source"] == source && e["event"] == kind)
            .collect()
    };
    // Generations are the run's: you 1, 3, 5…; them 2, 4, 6….
    for (source, parity) in [("you", 1), ("them", 0)] {
        for b in of(source, "begin") {
            assert_eq!(b["generation"].as_u64().expect("g") % 2, parity, "{b}");
        }
    }
    // The drop hit one stream, which replayed; the other never reconnected.
    let reconnects = |s| of(s, "reconnected").len();
    assert_eq!(reconnects("you") + reconnects("them"), 1, "{stderr}");
    check_staggered(streams);
    assert!(stderr.is_empty() || !stderr.contains("panic"), "{stderr}");

    // Each input's audio reached the service whole, to the sample, in its own sessions.
    common::assert_lossless("you", &common::received(&m.record, &events, "you"), &you);
    common::assert_lossless("them", &common::received(&m.record, &events, "them"), &them);

    // The run's finished: totals per input that add up, and to the run's.
    assert_eq!(run_finished["event"], "finished");
    assert!(run_finished.get("source").is_none(), "{run_finished}");
    let sources = &run_finished["sources"];
    let mut captured = 0;
    for (source, input) in [("you", &you), ("them", &them)] {
        let s = &sources[source];
        let n = |k: &str| s[k].as_u64().expect(k);
        assert_eq!(n("audio_captured_samples"), input.len() as u64, "{s}");
        assert_eq!(n("audio_sent_samples"), input.len() as u64, "{s}");
        assert_eq!(n("audio_lost_samples"), 0, "{s}");
        assert!(n("finals") >= 10, "{s}");
        captured += n("audio_captured_samples");
    }
    assert_eq!(run_finished["audio_captured_samples"], captured);
    assert_eq!(run_finished["audio_lost_samples"], 0);
    assert_eq!(
        run_finished["finals"].as_u64(),
        Some(
            sources["you"]["finals"].as_u64().expect("f")
                + sources["them"]["finals"].as_u64().expect("f")
        )
    );

    check_archives(run_finished, &[("you", &you), ("them", &them)]);

    check_exports(&m);

    transcribe_the_archive_again(&m, run_finished, streams, &you).await;
    m.emu.shutdown().await;
}

/// One input failing for good (its token refused: 401) ends that stream `failed` alone; the
/// other streams to its end. The run exits 1, and says which input failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_input_failing_for_good_leaves_the_other_streaming() {
    let m = meeting(EmulatorConfig {
        faults: vec!["token:401".parse().expect("fault")],
        ..common::config()
    })
    .await;
    let audio = utterances(3);
    write_wav(&m.home.path().join("a.wav"), &audio);
    let out = run(
        &m,
        &[
            "--input",
            "you=file:a.wav",
            "--input",
            "them=test:tone",
            "--duration",
            "8s",
        ],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let events = lines(&out.stdout);
    let failed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "state" && e["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let loser = failed[0]["source"].as_str().expect("source").to_owned();
    let winner = if loser == "you" { "them" } else { "you" };
    // The other stream went on: sessions and finals of its own.
    assert!(
        events
            .iter()
            .any(|e| e["source"] == winner && e["event"] == "final"),
        "{stderr}"
    );
    let finished = events.last().expect("last");
    assert!(
        finished["failure"]
            .as_str()
            .is_some_and(|f| f.starts_with(&format!("{loser}: "))),
        "{finished}"
    );
    assert!(
        finished["sources"][loser.as_str()]["failure"].is_string(),
        "{finished}"
    );
    assert!(
        finished["sources"][winner]["failure"].is_null(),
        "{finished}"
    );
    assert!(stderr.contains(&format!("{loser}: ")), "{stderr}");
    m.emu.shutdown().await;
}

/// Labels are checked before anything starts: two spellings of one label, a second stdin, a
/// label mixed with an unlabelled input — each a usage error (exit 2) naming the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_labels_are_usage_errors() {
    let home = tempfile::tempdir().expect("tempdir");
    for (args, says) in [
        (
            vec!["--input", "you=test:tone", "--input", "You=test:noise"],
            "used twice",
        ),
        (
            vec!["--input", "a=stdin", "--input", "b=stdin"],
            "`stdin` can be the input of one label only",
        ),
        (
            vec!["--input", "test:tone", "--input", "them=test:noise"],
            "need a label each",
        ),
        (vec!["--input", "you=nonsense"], "--input \"you=nonsense\""),
    ] {
        let out = common::aai_live(home.path())
            .args(["run", "--headless"])
            .args(&args)
            .output()
            .await
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // In the configuration: the key names the problem.
    let out = common::aai_live(home.path())
        .args(["config", "--check"])
        .env("AAI_LIVE__INPUTS__YOU", "mic")
        .env("AAI_LIVE__INPUTS__BAD+LABEL", "mic")
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("inputs.bad+label"), "{stderr}");
}

/// The account refuses one stream's session (3009: too many new sessions): that stream backs
/// off alone, then streams; the other is never held back; neither loses a sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_backs_off_only_its_own_stream() {
    let m = meeting(EmulatorConfig {
        // The first session asked for is refused, as the service refuses one over the rate.
        faults: vec![
            "close-before-begin:3009:Too many new sessions"
                .parse()
                .expect("fault"),
        ],
        ..common::config()
    })
    .await;
    let (you, them) = two_inputs(&m, 4);
    let out = run(
        &m,
        &TWO_INPUTS,
        &[("AAI_LIVE__SESSION__RATE_LIMIT_BACKOFF", "2s")],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = lines(&out.stdout);
    let backoffs = |source: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| e["source"] == source && e["event"] == "state" && e["state"] == "backoff")
            .collect()
    };
    let (refused, other) = if backoffs("you").is_empty() {
        ("them", "you")
    } else {
        ("you", "them")
    };
    let waits = backoffs(refused);
    assert_eq!(waits.len(), 1, "one refusal, one wait: {waits:?}");
    assert_eq!(waits[0]["class"], "rate_limited", "{}", waits[0]);
    assert!(
        backoffs(other).is_empty(),
        "{other} was held back too: {stderr}"
    );
    // The other stream began at once; the refused one only after its wait.
    let began = |source: &str| {
        events
            .iter()
            .find(|e| e["source"] == source && e["event"] == "begin")
            .and_then(|e| e["ts_ms"].as_i64())
            .expect("a begin")
    };
    let waited = waits[0]["retry_in_ms"].as_i64().expect("retry_in_ms");
    assert!(waited >= 1_000, "{}", waits[0]);
    assert!(
        began(refused) - began(other) >= waited / 2,
        "{refused} began {} ms after {other}, its wait was {waited} ms",
        began(refused) - began(other)
    );
    // Both inputs reached the service whole, the refused one's wait included (its backlog).
    for (source, input) in [("you", &you), ("them", &them)] {
        common::assert_lossless(source, &common::received(&m.record, &events, source), input);
    }
    let finished = events.last().expect("finished");
    assert_eq!(finished["audio_lost_samples"], 0, "{finished}");
    m.emu.shutdown().await;
}

/// Both streams planned a rotation at 24 s; one of them moved 10 s earlier, and said so. Every
/// plan keeps 10 s from the other input's plan made before it (a reconnect plans anew).
fn check_staggered(streams: &[serde_json::Value]) {
    let plans: Vec<(&str, i64, u64)> = streams
        .iter()
        .filter(|e| e["event"] == "rotation_planned")
        .map(|e| {
            let at = e["ts_ms"].as_i64().expect("ts") + e["rotates_in_ms"].as_i64().expect("in");
            (
                e["source"].as_str().expect("source"),
                at,
                e["staggered_ms"].as_u64().expect("ms"),
            )
        })
        .collect();
    assert!(plans.iter().any(|p| p.2 > 0), "{plans:?}");
    // The first move: from the clash (both at 24 s) to 10 s before the other's plan (made a
    // millisecond or so apart).
    let first = plans.iter().find(|p| p.2 > 0).map_or(0, |p| p.2);
    assert!((9_900..=10_100).contains(&first), "{plans:?}");
    for (i, (source, at, _)) in plans.iter().enumerate() {
        // The other input's latest plan before this one.
        if let Some((_, other, _)) = plans[..i].iter().rev().find(|p| p.0 != *source) {
            assert!((at - other).abs() >= 9_900, "{plans:?}");
        }
    }
}

/// An archive transcribes again (`run --input file:ARCHIVE`): the same words as its input gave
/// in the meeting.
async fn transcribe_the_archive_again(
    m: &Meeting,
    run_finished: &serde_json::Value,
    streams: &[serde_json::Value],
    you: &[i16],
) {
    let archive = run_finished["archive"]["you"].as_str().expect("archive");
    let again = run(
        m,
        &["--input", &format!("file:{archive}"), "--unpaced"],
        &[],
    )
    .await;
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let words = |events: &[serde_json::Value], source: Option<&str>| -> String {
        let finals = events
            .iter()
            .filter(|e| e["event"] == "final" && source.is_none_or(|s| e["source"] == s));
        finals
            .filter_map(|e| e["text"].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let again = lines(&again.stdout);
    assert_eq!(
        again.last().expect("finished")["audio_captured_samples"],
        you.len()
    );
    assert_eq!(words(&again, None), words(streams, Some("you")));
}

/// Each input's archive is its audio, sample for sample, and nothing was lost.
fn check_archives(run_finished: &serde_json::Value, inputs: &[(&str, &Vec<i16>)]) {
    for &(source, input) in inputs {
        let wav = PathBuf::from(run_finished["archive"][source].as_str().expect("archive"));
        assert!(
            wav.to_string_lossy().ends_with(&format!("-{source}.wav")),
            "{}",
            wav.display()
        );
        let samples: Vec<i16> = hound::WavReader::open(&wav)
            .expect("a WAV")
            .samples::<i16>()
            .map(|s| s.expect("sample"))
            .collect();
        assert!(
            samples == *input,
            "{source}: the archive differs from the captured audio"
        );
        let sidecar: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(wav.with_extension("json")).expect("sidecar"),
        )
        .expect("json");
        assert_eq!(sidecar["label"], source);
        assert_eq!(sidecar["lost"], serde_json::json!([]), "{sidecar}");
    }
}

/// One transcript: both inputs' turns, labelled, in stream-time order, in every format.
fn check_exports(m: &Meeting) {
    let files = transcript_files(m);
    let txt = &files["txt"];
    let times: Vec<&str> = txt.lines().map(|l| &l[1..9]).collect();
    assert!(times.is_sorted(), "{txt}");
    assert!(
        txt.lines()
            .all(|l| l[11..].starts_with("You: ") || l[11..].starts_with("Them: ")),
        "{txt}"
    );
    assert!(txt.contains("] You: ") && txt.contains("] Them: "), "{txt}");
    assert!(
        files["vtt"].contains("<v You>") && files["vtt"].contains("<v Them>"),
        "{}",
        files["vtt"]
    );
    assert!(
        files["srt"].contains("\nYou: ") && files["srt"].contains("\nThem: "),
        "{}",
        files["srt"]
    );
    let journal = &files["jsonl"];
    assert!(
        journal
            .lines()
            .all(|l| l.contains("\"source\":\"you\"") || l.contains("\"source\":\"them\"")),
        "{journal}"
    );
}
