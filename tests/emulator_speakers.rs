//! The emulator's "who said it, in which language" against real clients on 127.0.0.1: speaker
//! labels per session in order of first appearance (scripted people, `max_speakers`),
//! `PENDING`/`UNKNOWN` for short turns, the `SpeakerRevision` before `Termination`,
//! `language_code`/`language_confidence` with `language_detection`, and `UpdateConfiguration`
//! changing endpointing and keyterms for later audio, as `/emulator/sessions` and `--record`
//! show it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aai_live::emulator::{EmulatorConfig, Profile, RunningEmulator, Script};
use aai_live::protocol::messages::SpeakerRevision;
use aai_live::protocol::{ServerMessage, Turn};
use common::*;

/// ben, ana, ben: two 500 ms words a turn, each turn 1.2 s long.
const CONVERSATION: &str = r#"{"turns":[
    {"speaker":"ben","words":[{"text":"hi","start":0,"end":500},{"text":"ana","start":700,"end":1200}]},
    {"speaker":"ana","words":[{"text":"hello","start":2000,"end":2500},{"text":"ben","start":2800,"end":3300}]},
    {"speaker":"ben","words":[{"text":"how","start":4000,"end":4500},{"text":"goes","start":4700,"end":5200}]}]}"#;

/// Where the conversation's audio ends (a second of silence after the last word).
const END_MS: u64 = 6200;

fn script(json: &str) -> Script {
    let script: Script = serde_json::from_str(json).expect("script JSON");
    script.validate().expect("valid script");
    script
}

async fn scripted(json: &str, profile: Profile) -> (RunningEmulator, Script) {
    let s = script(json);
    let emu = start(EmulatorConfig {
        script: Some(Arc::new(s.clone())),
        profile,
        ..config()
    })
    .await;
    (emu, s)
}

/// The stream from `from_ms` to `to_ms` (16 kHz s16le): voice over the script's words,
/// silence elsewhere.
fn voiced(script: &Script, from_ms: u64, to_ms: u64) -> Vec<u8> {
    let words = script.words();
    let voice_at = |ms: u64| words.iter().any(|w| (w.start..w.end).contains(&ms));
    let mut audio = Vec::new();
    let mut at = from_ms;
    while at < to_ms {
        let voice = voice_at(at);
        let mut end = at + 1;
        while end < to_ms && voice_at(end) == voice {
            end += 1;
        }
        audio.extend(if voice {
            tone(end - at)
        } else {
            silence(end - at)
        });
        at = end;
    }
    audio
}

/// One session: connect with `query`, stream the script's audio from `from_ms`, Terminate,
/// read everything to the close.
async fn session(emu: &RunningEmulator, s: &Script, query: &str, from_ms: u64) -> Outcome {
    let mut ws = connect_key(emu, query).await;
    stream(&mut ws, &voiced(s, from_ms, END_MS), 50, false).await;
    terminate(&mut ws).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(1000), "{:?}", out.kinds());
    out
}

fn labels(finals: &[&Turn]) -> Vec<String> {
    finals
        .iter()
        .map(|t| t.speaker_label.clone().unwrap_or_default())
        .collect()
}

fn transcripts(finals: &[&Turn]) -> Vec<String> {
    finals.iter().map(|t| t.transcript.clone()).collect()
}

fn revision(out: &Outcome) -> Option<&SpeakerRevision> {
    out.messages.iter().find_map(|m| match m {
        ServerMessage::SpeakerRevision(r) => Some(r),
        _ => None,
    })
}

/// After the server's close frame, keep polling as a client library does: tungstenite writes its
/// answer to the close on the next poll, and the stream then ends (and `--record` writes).
async fn answer_close(ws: &mut Ws) {
    use futures_util::StreamExt;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// The session records as `GET /emulator/sessions` serves them.
async fn sessions_json(emu: &RunningEmulator) -> Vec<serde_json::Value> {
    let body: serde_json::Value = reqwest::get(format!("{}/emulator/sessions", emu.base_url()))
        .await
        .expect("GET /emulator/sessions")
        .json()
        .await
        .expect("JSON");
    body.as_array().expect("a list").clone()
}

#[tokio::test]
async fn speakers_are_labelled_per_session_in_order_of_first_appearance() {
    let (emu, s) = scripted(CONVERSATION, Profile::Current).await;
    let out = session(&emu, &s, "speaker_labels=true", 0).await;
    let finals = out.finals();
    assert_eq!(transcripts(&finals), ["hi ana", "hello ben", "how goes"]);
    assert_eq!(labels(&finals), ["A", "B", "A"]);
    for turn in out.turns() {
        assert!(
            turn.words.iter().all(|w| w.speaker == turn.speaker_label),
            "every word carries its turn's label: {turn:?}"
        );
    }
    assert!(revision(&out).is_none(), "nothing to revise");

    // A session that starts mid-stream on ana's turn (the offset hint) calls ana "A": the same
    // person gets another letter in another session. Python-style booleans are read too.
    let out = session(
        &emu,
        &s,
        "speaker_labels=True&emulator_stream_offset_ms=1900",
        1900,
    )
    .await;
    let finals = out.finals();
    assert_eq!(transcripts(&finals), ["hello ben", "how goes"]);
    assert_eq!(labels(&finals), ["A", "B"]);

    // The records say who got which label.
    let records = sessions_json(&emu).await;
    assert_eq!(records.len(), 2);
    let who = |record: &serde_json::Value| -> Vec<(String, String)> {
        record["speakers"]
            .as_array()
            .expect("speakers")
            .iter()
            .map(|p| {
                (
                    p["speaker"].as_str().expect("speaker").to_owned(),
                    p["label"].as_str().expect("label").to_owned(),
                )
            })
            .collect()
    };
    let pair = |s: &str, l: &str| (s.to_owned(), l.to_owned());
    assert_eq!(who(&records[0]), [pair("ben", "A"), pair("ana", "B")]);
    assert_eq!(who(&records[1]), [pair("ana", "A"), pair("ben", "B")]);
    emu.shutdown().await;
}

#[tokio::test]
async fn without_speaker_labels_turns_carry_no_speaker() {
    let (emu, s) = scripted(CONVERSATION, Profile::Current).await;
    let out = session(&emu, &s, "speaker_labels=false", 0).await;
    assert_eq!(out.finals().len(), 3);
    assert!(
        out.turns()
            .iter()
            .all(|t| { t.speaker_label.is_none() && t.words.iter().all(|w| w.speaker.is_none()) })
    );
    assert!(revision(&out).is_none());
    assert!(emu.sessions()[0].speakers.is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn max_speakers_caps_the_labels_of_a_session() {
    let three = CONVERSATION.replacen(
        r#""speaker":"ben","words":[{"text":"how""#,
        r#""speaker":"cy","words":[{"text":"how""#,
        1,
    );
    let (emu, s) = scripted(&three, Profile::Current).await;
    let out = session(&emu, &s, "speaker_labels=true", 0).await;
    assert_eq!(labels(&out.finals()), ["A", "B", "C"]);
    // The third person shares the last label.
    let out = session(&emu, &s, "speaker_labels=true&max_speakers=2", 0).await;
    assert_eq!(labels(&out.finals()), ["A", "B", "B"]);
    // Out of range is refused as every bad parameter is.
    let mut ws = connect_key(&emu, "speaker_labels=true&max_speakers=11").await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(3006));
    assert!(out.error().expect("Error").error.contains("max_speakers"));
    emu.shutdown().await;
}

#[tokio::test]
async fn a_speaker_revision_comes_right_before_termination() {
    let revised = CONVERSATION.replacen(
        r#""speaker":"ana""#,
        r#""speaker":"ana","revised_speaker":"ben""#,
        1,
    );
    let (emu, s) = scripted(&revised, Profile::Current).await;
    let out = session(&emu, &s, "speaker_labels=true", 0).await;
    // First labelled as scripted...
    assert_eq!(labels(&out.finals()), ["A", "B", "A"]);
    // ...then revised, right before Termination, with the turn's words.
    let kinds = out.kinds();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["SpeakerRevision", "Termination"],
        "{kinds:?}"
    );
    let revisions = &revision(&out).expect("SpeakerRevision").revisions;
    assert_eq!(revisions.len(), 1);
    let turn = &revisions[0];
    assert_eq!(turn.turn_order, 1);
    assert_eq!(turn.speaker_label.as_deref(), Some("A"));
    let words: Vec<_> = turn
        .words
        .iter()
        .map(|w| (w.text.as_str(), w.start, w.end, w.speaker.as_deref()))
        .collect();
    assert_eq!(
        words,
        [
            ("hello", 2000, 2500, Some("A")),
            ("ben", 2800, 3300, Some("A"))
        ]
    );
    // Without speaker_labels there is nothing to revise.
    let out = session(&emu, &s, "", 0).await;
    assert!(revision(&out).is_none(), "{:?}", out.kinds());
    emu.shutdown().await;
}

/// "ok" is 400 ms: too short to say who spoke.
const SHORT_FIRST: &str = r#"{"turns":[
    {"speaker":"ana","words":[{"text":"ok","start":0,"end":400}]},
    {"speaker":"ben","words":[{"text":"right","start":2000,"end":2500},{"text":"then","start":2700,"end":3200}]}]}"#;

#[tokio::test]
async fn short_turns_are_pending_now_and_unknown_before_june_2026() {
    let (emu, s) = scripted(SHORT_FIRST, Profile::Current).await;
    let out = session(&emu, &s, "speaker_labels=true", 0).await;
    let finals = out.finals();
    // ben is the first person heard long enough to label: "A".
    assert_eq!(labels(&finals), ["PENDING", "A"]);
    assert_eq!(finals[0].words[0].speaker.as_deref(), Some("PENDING"));
    // ben's own first partial (one 500 ms word) was pending too.
    let first_of_ben = out
        .turns()
        .into_iter()
        .find(|t| t.turn_order == 1)
        .expect("ben's turn");
    assert_eq!(first_of_ben.speaker_label.as_deref(), Some("PENDING"));
    // The revision before Termination names the pending turn's speaker.
    let revisions = &revision(&out).expect("SpeakerRevision").revisions;
    assert_eq!(revisions.len(), 1);
    assert_eq!(
        (
            revisions[0].turn_order,
            revisions[0].speaker_label.as_deref()
        ),
        (0, Some("B"))
    );
    emu.shutdown().await;

    let (emu, s) = scripted(SHORT_FIRST, Profile::Legacy).await;
    let out = session(&emu, &s, "speaker_labels=true", 0).await;
    assert_eq!(labels(&out.finals()), ["UNKNOWN", "A"]);
    assert_eq!(out.finals()[0].words[0].speaker.as_deref(), Some("UNKNOWN"));
    assert!(revision(&out).is_none(), "UNKNOWN was final");
    emu.shutdown().await;
}

#[tokio::test]
async fn language_fields_come_on_finals_with_language_detection_only() {
    let spanish = CONVERSATION.replacen(
        r#""speaker":"ana""#,
        r#""speaker":"ana","language":"es""#,
        1,
    );
    let (emu, s) = scripted(&spanish, Profile::Current).await;
    let out = session(&emu, &s, "language_detection=true", 0).await;
    let languages: Vec<_> = out
        .finals()
        .iter()
        .map(|t| (t.language_code.clone(), t.language_confidence))
        .collect();
    let lang = |code: &str| (Some(code.to_owned()), Some(0.97));
    assert_eq!(languages, [lang("en"), lang("es"), lang("en")]);
    assert!(
        out.turns()
            .iter()
            .filter(|t| !t.end_of_turn)
            .all(|t| t.language_code.is_none() && t.language_confidence.is_none()),
        "partials carry no language"
    );

    let out = session(&emu, &s, "", 0).await;
    assert!(
        out.turns()
            .iter()
            .all(|t| t.language_code.is_none() && t.language_confidence.is_none())
    );
    emu.shutdown().await;
}

/// One 300 ms word, 1.5 s of silence, another word, 1.5 s of silence.
fn two_lone_words() -> Vec<u8> {
    let mut audio = Vec::new();
    for _ in 0..2 {
        audio.extend(tone(300));
        audio.extend(silence(1500));
    }
    audio
}

#[tokio::test]
async fn update_configuration_changes_endpointing_for_later_audio_and_is_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = start(EmulatorConfig {
        record_dir: Some(dir.path().to_owned()),
        ..config()
    })
    .await;
    let mut ws = connect_key(&emu, "").await;
    // A lone word ends its turn after max_turn_silence (1280 ms by default)...
    stream(&mut ws, &two_lone_words(), 50, false).await;
    // ...and after this, only after 3 s: the same audio again makes one turn of two words.
    send_json(
        &mut ws,
        r#"{"type":"UpdateConfiguration","max_turn_silence":3000,"keyterms_prompt":["Fox"]}"#,
    )
    .await;
    stream(&mut ws, &two_lone_words(), 50, false).await;
    terminate(&mut ws).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(1000));
    let finals = out.finals();
    assert_eq!(transcripts(&finals), ["the", "quick", "brown Fox"]);

    let records = sessions_json(&emu).await;
    let record = &records[0];
    assert_eq!(record["updates_received"], 1);
    let update = &record["updates"][0];
    assert_eq!(update["audio_ms"], 3600, "{update}");
    assert!(update["stream_ms"].is_null(), "no offset hint");
    assert!(update["at_ms"].is_u64());
    assert_eq!(update["fields"]["max_turn_silence"], 3000);
    assert_eq!(
        update["fields"]["keyterms_prompt"],
        serde_json::json!(["Fox"])
    );
    assert_eq!(update["truncated"], false);
    let effective = &record["effective"];
    assert_eq!(effective["max_turn_silence"], 3000);
    assert_eq!(effective["min_turn_silence"], 400);
    assert_eq!(effective["keyterms_prompt"], serde_json::json!(["Fox"]));

    // The --record JSON holds the same.
    answer_close(&mut ws).await;
    let id = record["id"].as_str().expect("id");
    let path = dir.path().join(format!("{id}.json"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
    assert_eq!(written["updates"], record["updates"]);
    assert_eq!(written["effective"]["max_turn_silence"], 3000);
    emu.shutdown().await;
}

#[tokio::test]
async fn updates_are_placed_on_the_stream_with_the_offset_hint() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "emulator_stream_offset_ms=60000").await;
    stream(&mut ws, &silence(1000), 50, false).await;
    send_json(
        &mut ws,
        r#"{"type":"UpdateConfiguration","min_turn_silence":700}"#,
    )
    .await;
    terminate(&mut ws).await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));
    let record = &emu.sessions()[0];
    let update = &record.updates[0];
    assert_eq!((update.audio_ms, update.stream_ms), (1000, Some(61_000)));
    let effective = record.effective.as_ref().expect("effective settings");
    assert_eq!(effective.min_turn_silence, 700);
    assert_eq!(effective.stream_offset_ms, Some(60_000));
    emu.shutdown().await;
}

#[tokio::test]
async fn an_update_outside_the_parameter_ranges_is_3006_naming_the_field() {
    let emu = start(config()).await;
    for (update, named) in [
        (
            r#"{"type":"UpdateConfiguration","max_turn_silence":20000}"#,
            "max_turn_silence",
        ),
        (
            r#"{"type":"UpdateConfiguration","vad_threshold":1.5}"#,
            "vad_threshold",
        ),
        (
            r#"{"type":"UpdateConfiguration","max_turn_silence":"long"}"#,
            "UpdateConfiguration: invalid type",
        ),
    ] {
        let mut ws = connect_key(&emu, "").await;
        send_json(&mut ws, update).await;
        let out = read_to_close(&mut ws).await;
        assert_eq!(out.code(), Some(3006), "{update}");
        let error = &out.error().expect("Error frame").error;
        assert!(
            error.starts_with("Invalid Message: ") && error.contains(named),
            "{update}: {error}"
        );
    }
    emu.shutdown().await;
}
