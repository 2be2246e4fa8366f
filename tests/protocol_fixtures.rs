//! The documented message sequences (protocol.md §3.8, both `format_turns` generations, the
//! U3-Pro variant and error endings) parse end to end with the protocol types.

use aai_live::protocol::{ClientMessage, CloseClass, ServerMessage, classify};

fn lines(name: &str) -> Vec<(char, String)> {
    let path = format!(
        "{}/tests/fixtures/sessions/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (dir, json) = l.split_at(2);
            (dir.chars().next().expect("direction"), json.to_owned())
        })
        .collect()
}

/// Parse a fixture, returning the server messages in order; every client line must parse too.
fn parse(name: &str) -> Vec<ServerMessage> {
    let mut out = Vec::new();
    for (dir, json) in lines(name) {
        match dir {
            'S' => out.push(
                ServerMessage::parse(&json).unwrap_or_else(|e| panic!("{name}: {e}: {json}")),
            ),
            'C' => {
                let _: ClientMessage =
                    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}: {e}: {json}"));
            }
            other => panic!("{name}: bad direction {other}"),
        }
    }
    out
}

#[test]
fn current_universal_streaming_sequence() {
    let msgs = parse("us-current.txt");
    let ServerMessage::Begin(begin) = &msgs[0] else {
        panic!("first is Begin")
    };
    assert_eq!(begin.expires_at, 1_772_570_132);
    let config = begin.configuration.as_ref().expect("configuration echo");
    assert_eq!(config.model.as_deref(), Some("universal-streaming-english"));
    assert_eq!(config.mode, None);
    let turns: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Turn(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(turns.len(), 6);
    // Partials: every word but the last is final.
    let partial = turns[1];
    assert!(!partial.end_of_turn);
    assert!(
        partial.words[..partial.words.len() - 1]
            .iter()
            .all(|w| w.word_is_final)
    );
    assert!(!partial.words.last().expect("word").word_is_final);
    // The utterance boundary can come before the end of the turn.
    assert_eq!(turns[4].utterance.as_deref(), Some("i am a voice agent"));
    assert!(turns[5].end_of_turn && turns[5].utterance.as_deref() == Some(""));
    assert!(
        matches!(msgs.last(), Some(ServerMessage::Termination(t)) if t.audio_duration_seconds == 7)
    );
}

#[test]
fn legacy_formatted_final_sequence() {
    let msgs = parse("us-legacy-formatted.txt");
    let finals: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Turn(t) if t.end_of_turn => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(finals.len(), 2, "unformatted then formatted final");
    assert_eq!(finals[0].turn_order, finals[1].turn_order);
    assert!(!finals[0].turn_is_formatted && finals[1].turn_is_formatted);
    assert_eq!(finals[1].transcript, "Hi, my name is Sonny.");
    let ServerMessage::Begin(begin) = &msgs[0] else {
        panic!("Begin")
    };
    assert!(begin.configuration.is_none());
}

#[test]
fn u3_pro_sequence_and_newer_messages() {
    let msgs = parse("u3-pro.txt");
    let kinds: Vec<_> = msgs.iter().map(ServerMessage::kind).collect();
    assert_eq!(
        kinds,
        [
            "Begin",
            "SpeechStarted",
            "Turn",
            "Turn",
            "Heartbeat",
            "SpeakerRevision",
            "Warning",
            "LLMGatewayResponse",
            "Unknown",
            "Termination"
        ]
    );
    let ServerMessage::Turn(last) = &msgs[3] else {
        panic!("Turn")
    };
    assert!(last.end_of_turn && last.turn_is_formatted);
    assert!((last.end_of_turn_confidence - 1.0).abs() < f64::EPSILON);
    assert_eq!(last.speaker_label.as_deref(), Some("A"));
}

#[test]
fn error_endings_parse_and_classify() {
    let msgs = parse("error-ending.txt");
    let ServerMessage::Error(typed) = &msgs[1] else {
        panic!("Error")
    };
    assert_eq!(typed.error_code, Some(3007));
    assert_eq!(
        classify(Some(3007), "", Some(&typed.error)),
        CloseClass::ClientBug
    );
    let ServerMessage::Error(legacy) = &msgs[2] else {
        panic!("legacy Error")
    };
    assert_eq!(legacy.error_code, None);
    assert_eq!(
        classify(
            Some(3005),
            "See Error message for details",
            Some(&legacy.error)
        ),
        CloseClass::SessionExpired
    );
}
