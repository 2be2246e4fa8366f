//! Who said it, in which language — the real binary, headless, against the scripted emulator:
//! speaker labels, a `SpeakerRevision`, names from the configuration (environment form),
//! `language_code` in events and every export, and speakers kept continuous across a rotation
//! (the successor primed with audio already transcribed, its labels mapped onto the run's).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aai_live::emulator::{EmulatorConfig, RunningEmulator, Script};
use common::{KEY, write_wav};

const RATE: u64 = 16;

/// A scripted turn: who, their words (text, start ms, end ms), optionally a language and a
/// revised speaker.
struct Said {
    who: &'static str,
    words: Vec<(String, u64, u64)>,
    language: Option<&'static str>,
    revised: Option<&'static str>,
}

fn said(who: &'static str, words: &[(&str, u64, u64)]) -> Said {
    Said {
        who,
        words: words
            .iter()
            .map(|(t, s, e)| ((*t).to_owned(), *s, *e))
            .collect(),
        language: None,
        revised: None,
    }
}

fn script(turns: &[Said]) -> Script {
    let turns: Vec<serde_json::Value> = turns
        .iter()
        .map(|t| {
            let mut turn = serde_json::json!({
                "speaker": t.who,
                "words": t.words.iter().map(|(text, start, end)| {
                    serde_json::json!({"text": text, "start": start, "end": end})
                }).collect::<Vec<_>>(),
            });
            if let Some(l) = t.language {
                turn["language"] = l.into();
            }
            if let Some(r) = t.revised {
                turn["revised_speaker"] = r.into();
            }
            turn
        })
        .collect();
    let script: Script =
        serde_json::from_value(serde_json::json!({ "turns": turns })).expect("script");
    script.validate().expect("valid script");
    script
}

/// 16 kHz audio of `ms`: a tone over every scripted word, silence elsewhere.
fn audio(turns: &[Said], ms: u64) -> Vec<i16> {
    let mut out = vec![0i16; (ms * RATE) as usize];
    for (_, start, end) in turns.iter().flat_map(|t| &t.words) {
        for i in start * RATE..(end * RATE).min(out.len() as u64) {
            out[i as usize] =
                ((i as f64 * std::f64::consts::TAU * 440.0 / 16_000.0).sin() * 8000.0) as i16;
        }
    }
    out
}

struct Run {
    events: Vec<serde_json::Value>,
    stderr: String,
    files: HashMap<String, String>,
    record: std::path::PathBuf,
    _home: tempfile::TempDir,
}

/// Run `aai-live run --headless` on `input` against an emulator playing `script`.
async fn run(script: Script, input: &[i16], emulator: EmulatorConfig, env: &[(&str, &str)]) -> Run {
    let home = tempfile::tempdir().expect("tempdir");
    let record = home.path().join("record");
    std::fs::create_dir_all(&record).expect("record dir");
    let emu: RunningEmulator = common::start(EmulatorConfig {
        script: Some(Arc::new(script)),
        record_dir: Some(record.clone()),
        pacing: None,
        ..emulator
    })
    .await;
    write_wav(&home.path().join("talk.wav"), input);
    let mut cmd = common::aai_live(home.path());
    cmd.args(["run", "--headless", "--emulator", &emu.base_url()])
        .args(["--input", "file:talk.wav"])
        .env("ASSEMBLYAI_API_KEY", KEY)
        .env("AAI_LIVE__STREAMING__SPEAKER_LABELS", "true")
        .env("AAI_LIVE__STREAMING__LANGUAGE_DETECTION", "true")
        .env("AAI_LIVE__TRANSCRIPT__FORMATS", "txt,srt,vtt");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the run ends")
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    emu.shutdown().await;
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let dir = home.path().join("data/aai-live/transcripts");
    let files = std::fs::read_dir(&dir)
        .expect("transcripts")
        .map(|e| e.expect("entry").path())
        .filter_map(|p| {
            let ext = p.extension()?.to_string_lossy().into_owned();
            Some((ext, std::fs::read_to_string(&p).expect("read")))
        })
        .collect();
    Run {
        events,
        stderr,
        files,
        record,
        _home: home,
    }
}

fn of<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn words(turn: &serde_json::Value) -> Vec<String> {
    turn["words"]
        .as_array()
        .expect("words")
        .iter()
        .map(|w| w["text"].as_str().expect("text").to_owned())
        .collect()
}

/// Every captured sample was sent, none lost.
fn assert_ledger(events: &[serde_json::Value], samples: usize) {
    let finished = events.last().expect("events");
    assert_eq!(finished["event"], "finished", "{finished}");
    assert_eq!(
        finished["audio_captured_samples"], samples as u64,
        "{finished}"
    );
    assert_eq!(finished["audio_sent_samples"], samples as u64, "{finished}");
    assert_eq!(finished["audio_lost_samples"], 0, "{finished}");
}

/// One session: cat, then ana in Spanish, then ben — whom the service first takes for ben and
/// then revises to cat. Named from the environment, as `[speakers] names` arrives there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_languages_names_and_a_revision_reach_events_and_exports() {
    let mut turns = vec![
        said("cat", &[("crisp", 0, 500), ("clear", 700, 1200)]),
        said("ana", &[("alpha", 2000, 2500), ("apple", 2800, 3300)]),
        said("ben", &[("bravo", 4000, 4500), ("banana", 4700, 5200)]),
    ];
    turns[1].language = Some("es");
    turns[2].revised = Some("cat");
    let input = audio(&turns, 6500);
    let r = run(
        script(&turns),
        &input,
        common::config(),
        // Lower-cased, as environment keys arrive: names B all the same.
        &[("AAI_LIVE__SPEAKERS__NAMES__B", "Ana")],
    )
    .await;
    let finals = of(&r.events, "final");
    assert_eq!(finals.len(), 3, "{}", r.stderr);
    let field = |i: usize, k: &str| finals[i][k].as_str().map(str::to_owned);
    assert_eq!(
        (0..3).map(|i| field(i, "speaker")).collect::<Vec<_>>(),
        [Some("A".into()), Some("B".into()), Some("C".into())],
        "labels in order of first appearance"
    );
    assert_eq!(field(1, "speaker_name").as_deref(), Some("Ana"));
    assert_eq!(field(0, "speaker_name"), None);
    assert_eq!(
        (0..3)
            .map(|i| field(i, "language_code"))
            .collect::<Vec<_>>(),
        [Some("en".into()), Some("es".into()), Some("en".into())]
    );
    assert!(finals[1]["language_confidence"].as_f64().is_some());
    for f in &finals {
        assert!(f.get("speaker_uncertain").is_none(), "one session: {f}");
    }
    // The revision: one event, the final not sent again.
    let revisions = of(&r.events, "speaker_revision");
    assert_eq!(revisions.len(), 1, "{:?}", r.events);
    assert_eq!(revisions[0]["turn_order"], finals[2]["turn_order"]);
    assert_eq!(revisions[0]["speaker"], "A");
    assert_ledger(&r.events, input.len());

    // Every export has the revised speaker, the name and the language.
    let txt = &r.files["txt"];
    let lines: Vec<&str> = txt.lines().collect();
    assert_eq!(lines.len(), 3, "{txt}");
    assert!(lines[0].ends_with("A: crisp clear"), "{txt}");
    assert!(lines[1].ends_with("[es] Ana: alpha apple"), "{txt}");
    assert!(lines[2].ends_with("A: bravo banana"), "revised: {txt}");
    let srt = &r.files["srt"];
    assert!(srt.contains("[es] Ana: alpha apple"), "{srt}");
    assert!(srt.contains("A: bravo banana"), "{srt}");
    let vtt = &r.files["vtt"];
    assert!(vtt.contains("<v Ana><lang es>alpha apple</lang>"), "{vtt}");
    assert!(vtt.contains("<v A><lang en>bravo banana"), "{vtt}");
    // The journal has the revised final too.
    let journal = &r.files["jsonl"];
    let last: serde_json::Value =
        serde_json::from_str(journal.lines().last().expect("lines")).expect("json");
    assert_eq!(last["speaker"], "A", "{journal}");
}

/// A conversation across a rotation: cat opens (the first session's A), then ana and ben take
/// turns. The successor, primed with audio already transcribed, labels ana and ben in its own
/// order of appearance (A and B, where the run calls them B and C); every final of theirs keeps
/// the run's label and name, none is duplicated or lost, and the ledger is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_keeps_speakers_and_their_names() {
    const END_MS: u64 = 56_000;
    let turns = conversation(END_MS);
    let input = audio(&turns, END_MS);
    let r = run(
        script(&turns),
        &input,
        EmulatorConfig {
            // 60 s sessions with a 20 s lead: the rotation starts at half the session (the
            // earliest allowed), the successor is primed with 2 s (of at most 20 / 6) and
            // catches up at 1.25x (in about 10-15 s) long before the forced hand-over at 53 s,
            // leaving it 10 s of the conversation.
            max_session_duration: Some(Duration::from_secs(60)),
            ..common::config()
        },
        &[
            ("AAI_LIVE__SPEAKERS__NAMES__B", "Ana"),
            ("AAI_LIVE__SPEAKERS__NAMES__C", "Ben"),
            ("AAI_LIVE__SESSION__ROTATION_LEAD", "20s"),
            ("AAI_LIVE__SPEAKERS__PRIMING", "2s"),
        ],
    )
    .await;
    let rotations = of(&r.events, "rotation");
    assert_eq!(rotations.len(), 1, "{}", r.stderr);
    let rotation = rotations[0];
    let primed = rotation["primed_ms"].as_u64().unwrap_or_default();
    let life: Vec<&serde_json::Value> = r
        .events
        .iter()
        .filter(|e| e["event"] != "partial" && e["event"] != "final")
        .collect();
    assert!(primed > 0, "the successor was primed: {life:#?}");
    assert_eq!(rotation["forced"], false, "caught up in time: {life:#?}");

    // Every scripted word once, in order: the primed audio's words were not added again.
    let finals = of(&r.events, "final");
    let heard: Vec<String> = finals.iter().flat_map(|f| words(f)).collect();
    let spoken: Vec<String> = turns
        .iter()
        .flat_map(|t| t.words.iter().map(|w| w.0.clone()))
        .collect();
    assert_eq!(heard, spoken, "{}", r.stderr);

    // The successor's own labels differ from the run's (it never heard cat), yet each person
    // keeps one label and one name in the run.
    let mut labels: BTreeMap<char, (String, Option<String>)> = BTreeMap::new();
    let after = rotation["to"].as_u64().expect("to");
    let (mut successor_finals, mut relabelled) = (0, 0);
    for f in &finals {
        let person = words(f)[0].chars().next().expect("word");
        let label = f["speaker"].as_str().expect("speaker").to_owned();
        let name = f["speaker_name"].as_str().map(str::to_owned);
        assert!(f.get("speaker_uncertain").is_none(), "{f}\n{}", r.stderr);
        let known = labels
            .entry(person)
            .or_insert((label.clone(), name.clone()));
        assert_eq!(known, &(label, name), "{person}: {f}");
        if f["generation"] == after {
            successor_finals += 1;
            relabelled += usize::from(f["session_speaker"].is_string());
        } else {
            assert!(f.get("session_speaker").is_none(), "{f}");
        }
    }
    assert!(successor_finals >= 3, "{}", r.stderr);
    // Its "A" is ana or ben, whom the run calls B or C: mapped, not taken as it came.
    assert!(relabelled >= 1, "{finals:#?}");
    assert_eq!(labels[&'c'].0, "A");
    assert_eq!(labels[&'a'], ("B".into(), Some("Ana".into())));
    assert_eq!(labels[&'b'], ("C".into(), Some("Ben".into())));
    assert!(
        of(&r.events, "warning").is_empty(),
        "{:?}",
        of(&r.events, "warning")
    );

    // The ledger: nothing lost, the priming not counted twice; and the successor received the
    // stream itself from where its priming began (the emulator's recording).
    assert_ledger(&r.events, input.len());
    assert_successor_received_the_stream(&r, rotation, &input);

    // The exports say the names across the rotation.
    let txt = &r.files["txt"];
    assert!(
        txt.lines().filter(|l| l.contains("Ana: a")).count() >= 8,
        "{txt}"
    );
    assert!(!txt.contains('?'), "{txt}");
}

/// cat opens; then ana and ben take turns (words `a0x a0y`, `b1x b1y`…) until `end_ms`.
fn conversation(end_ms: u64) -> Vec<Said> {
    let mut turns = vec![said("cat", &[("crisp", 0, 500), ("clear", 700, 1200)])];
    let mut at = 2000;
    let mut n = 0;
    while at + 1200 < end_ms - 1000 {
        let (who, letter) = if n % 2 == 0 {
            ("ana", 'a')
        } else {
            ("ben", 'b')
        };
        turns.push(Said {
            who,
            words: vec![
                (format!("{letter}{n}x"), at, at + 500),
                (format!("{letter}{n}y"), at + 700, at + 1200),
            ],
            language: None,
            revised: None,
        });
        at += 1800;
        n += 1;
    }
    turns
}

/// The emulator's recording of the rotation's successor is the input itself, from the
/// rotation's `stream_offset_ms` (where its priming began) to the end.
fn assert_successor_received_the_stream(r: &Run, rotation: &serde_json::Value, input: &[i16]) {
    let id = of(&r.events, "begin")
        .into_iter()
        .find(|b| b["generation"] == rotation["to"])
        .and_then(|b| b["session_id"].as_str())
        .expect("successor's begin");
    let from = (rotation["stream_offset_ms"].as_u64().expect("offset") * RATE) as usize;
    let received = pcm(&r.record.join(format!("{id}.pcm")));
    assert_eq!(
        from + received.len(),
        input.len(),
        "to the end of the input"
    );
    assert!(
        input[from..] == received[..],
        "the successor's audio is the stream's"
    );
}

fn pcm(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .expect("recording")
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect()
}

/// After a drop the replay reaches back into words already final: the new session's labels are
/// mapped by them, and those words are not added again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_keeps_speakers_and_their_names() {
    const END_MS: u64 = 30_000;
    let turns = conversation(END_MS);
    let input = audio(&turns, END_MS);
    let r = run(
        script(&turns),
        &input,
        EmulatorConfig {
            faults: vec!["drop@15s".parse().expect("fault")],
            ..common::config()
        },
        &[
            ("AAI_LIVE__SPEAKERS__NAMES__B", "Ana"),
            ("AAI_LIVE__SPEAKERS__NAMES__C", "Ben"),
            ("AAI_LIVE__SESSION__BACKOFF_INITIAL", "100ms"),
        ],
    )
    .await;
    let reconnected = of(&r.events, "reconnected");
    assert_eq!(reconnected.len(), 1, "{}", r.stderr);
    assert!(
        reconnected[0]["primed_ms"].as_u64().unwrap_or_default() > 0,
        "{}",
        reconnected[0]
    );
    let finals = of(&r.events, "final");
    let heard: Vec<String> = finals.iter().flat_map(|f| words(f)).collect();
    let spoken: Vec<String> = turns
        .iter()
        .flat_map(|t| t.words.iter().map(|w| w.0.clone()))
        .collect();
    assert_eq!(heard, spoken, "every word once: {}", r.stderr);
    let after = reconnected[0]["generation"].clone();
    let mut after_drop = 0;
    for f in &finals {
        let (person, label) = (words(f)[0].chars().next(), f["speaker"].as_str());
        let expected = match person {
            Some('c') => ("A", None),
            Some('a') => ("B", Some("Ana")),
            _ => ("C", Some("Ben")),
        };
        assert_eq!(
            (label, f["speaker_name"].as_str()),
            (Some(expected.0), expected.1),
            "{f}"
        );
        assert!(f.get("speaker_uncertain").is_none(), "{f}");
        after_drop += usize::from(f["generation"] == after);
    }
    assert!(after_drop >= 3, "{finals:#?}");
    assert_ledger(&r.events, input.len());
}
