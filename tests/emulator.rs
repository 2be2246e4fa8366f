//! The emulator against real clients on 127.0.0.1: token endpoint, authentication, the
//! service's rules and close codes, the Terminate flow, recognition shapes, faults, session
//! inspection and recording.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aai_live::emulator::{EmulatorConfig, Fault, FaultRule, Pacing, Profile, Script};
use aai_live::protocol::ServerMessage;
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

// ---------------------------------------------------------------- token endpoint

#[tokio::test]
async fn token_endpoint_validates_key_and_parameters() {
    let emu = start(config()).await;
    let client = reqwest::Client::new();
    let url = emu.token_url();

    let no_key = client
        .get(format!("{url}?expires_in_seconds=60"))
        .send()
        .await
        .expect("send");
    assert_eq!(no_key.status(), 401);
    let body: serde_json::Value = no_key.json().await.expect("json");
    assert!(body["error"].is_string());

    let bearer = client
        .get(format!("{url}?expires_in_seconds=60"))
        .header("Authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .expect("send");
    assert_eq!(bearer.status(), 401, "Bearer prefix is not accepted");

    for (query, name) in [
        ("", "expires_in_seconds"),
        ("expires_in_seconds=0", "expires_in_seconds"),
        ("expires_in_seconds=601", "expires_in_seconds"),
        ("expires_in_seconds=abc", "expires_in_seconds"),
        (
            "expires_in_seconds=60&max_session_duration_seconds=59",
            "max_session_duration_seconds",
        ),
        (
            "expires_in_seconds=60&max_session_duration_seconds=10801",
            "max_session_duration_seconds",
        ),
    ] {
        let (status, body) = mint(&emu, query).await;
        assert_eq!(status, 400, "{query}");
        assert!(
            body["error"].as_str().expect("error").contains(name),
            "{query}: {body}"
        );
    }

    let post = client
        .post(format!("{url}?expires_in_seconds=60"))
        .header("Authorization", KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(post.status(), 405);

    let ok = client
        .get(format!(
            "{url}?expires_in_seconds=60&max_session_duration_seconds=60"
        ))
        .header("Authorization", KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["cache-control"], "no-store");
    let body: serde_json::Value = ok.json().await.expect("json");
    assert_eq!(body["expires_in_seconds"], 60);
    let token = body["token"].as_str().expect("token");
    assert!(token.ends_with('=') && token.len() > 80, "{token}");
    emu.shutdown().await;
}

#[tokio::test]
async fn other_paths_are_403_with_empty_body() {
    let emu = start(config()).await;
    let response = reqwest::get(format!("{}/v3/stream", emu.base_url()))
        .await
        .expect("get");
    assert_eq!(response.status(), 403);
    assert!(response.text().await.expect("body").is_empty());
    let ws = tokio_tungstenite::connect_async(format!("ws://{}/v2/realtime/ws", emu.addr)).await;
    assert!(ws.is_err(), "the upgrade is refused");
}

// ---------------------------------------------------------------- authentication

#[tokio::test]
async fn missing_and_invalid_credentials_close_1008_with_an_error_frame() {
    let emu = start(config()).await;
    let mut ws = connect(&emu, None, "sample_rate=16000")
        .await
        .expect("upgrade is accepted");
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(1008));
    assert_eq!(out.error().expect("Error frame").error_code, Some(1008));
    assert!(
        out.close
            .expect("close")
            .1
            .contains("Missing Authorization")
    );

    let mut ws = connect(&emu, Some("wrong-key"), "").await.expect("upgrade");
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1008));
}

#[tokio::test]
async fn reject_at_upgrade_switch_gives_http_401() {
    let emu = start(EmulatorConfig {
        reject_at_upgrade: true,
        ..config()
    })
    .await;
    let err = connect(&emu, Some("wrong-key"), "")
        .await
        .expect_err("rejected");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 401),
        other => panic!("expected HTTP 401, got {other}"),
    }
    // A good key still connects.
    let mut ws = connect_key(&emu, "").await;
    assert!(matches!(
        read_until(&mut ws, |_| true).await[0],
        ServerMessage::Begin(_)
    ));
}

#[tokio::test]
async fn temporary_token_in_query_or_header_is_one_time() {
    let emu = start(config()).await;
    let token = mint_token(
        &emu,
        "expires_in_seconds=60&max_session_duration_seconds=120",
    )
    .await;
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();

    // ?token= (percent-encoded: real tokens contain + / =)
    let mut ws = connect(&emu, None, &format!("sample_rate=16000&token={encoded}"))
        .await
        .expect("connect");
    let first = read_until(&mut ws, |_| true).await;
    let ServerMessage::Begin(begin) = &first[0] else {
        panic!("Begin first: {first:?}")
    };
    uuid::Uuid::parse_str(&begin.id).expect("UUID session id");
    let expected = now_s() + 120;
    assert!(
        (begin.expires_at - expected).abs() <= 2,
        "{} vs {expected}",
        begin.expires_at
    );
    let configuration = begin.configuration.as_ref().expect("configuration echo");
    assert_eq!(
        configuration.model.as_deref(),
        Some("universal-streaming-english")
    );
    terminate(&mut ws).await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));

    // The same token again, now in the header: already used.
    let mut ws = connect(&emu, Some(&token), "").await.expect("connect");
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(1008));
    assert!(
        out.error().expect("Error").error.contains("already used"),
        "{out:?}"
    );

    // A fresh token in the Authorization header (what the Python SDK does) works.
    let token = mint_token(&emu, "expires_in_seconds=60").await;
    let mut ws = connect(&emu, Some(&token), "").await.expect("connect");
    let msgs = read_until(&mut ws, |_| true).await;
    let ServerMessage::Begin(begin) = &msgs[0] else {
        panic!("Begin")
    };
    assert!(
        (begin.expires_at - (now_s() + 10_800)).abs() <= 2,
        "default 3 h session"
    );

    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().all(|s| matches!(
        s.credential,
        aai_live::emulator::state::CredentialKind::TemporaryToken
    )));
}

#[tokio::test]
async fn expired_token_is_refused_with_1008_or_3008_by_switch() {
    for code in [1008, 3008] {
        let emu = start(EmulatorConfig {
            expired_token_close_code: code,
            ..config()
        })
        .await;
        let token = mint_token(&emu, "expires_in_seconds=1").await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut ws = connect(&emu, Some(&token), "").await.expect("connect");
        let out = read_to_close(&mut ws).await;
        assert_eq!(out.code(), Some(code));
        assert!(out.error().expect("Error").error.contains("expired"));
        assert!(emu.sessions().is_empty(), "no session opened");
    }
}

// ---------------------------------------------------------------- audio rules

#[tokio::test]
async fn chunk_duration_bounds() {
    let emu = start(config()).await;
    // 20 ms followed by more audio: 3007.
    let mut ws = connect_key(&emu, "").await;
    stream(&mut ws, &tone(40), 20, false).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(3007));
    assert!(
        out.error()
            .expect("Error")
            .error
            .starts_with("Input duration violation: 20 ms")
    );

    // 1100 ms: 3007 at once.
    let mut ws = connect_key(&emu, "").await;
    stream(&mut ws, &tone(1100), 1100, false).await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(3007));

    // 50 and 1000 ms are fine, and a short last chunk before Terminate is tolerated.
    let mut ws = connect_key(&emu, "").await;
    stream(&mut ws, &tone(1000), 1000, false).await;
    stream(&mut ws, &tone(50), 50, false).await;
    stream(&mut ws, &tone(30), 30, false).await;
    terminate(&mut ws).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(1000), "{out:?}");

    // 8 kHz mu-law: 400 bytes are 50 ms.
    let mut ws = connect_key(&emu, "sample_rate=8000&encoding=pcm_mulaw").await;
    ws.send(Message::Binary(vec![0xFF; 400].into()))
        .await
        .expect("send");
    terminate(&mut ws).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(1000));
    let ServerMessage::Termination(_) = out.messages.last().expect("Termination") else {
        panic!()
    };
}

#[tokio::test]
async fn faster_than_real_time_is_3007_unless_switched_off() {
    let emu = start(EmulatorConfig {
        pacing: Some(Pacing {
            factor: 1.5,
            burst: Duration::from_millis(500),
        }),
        ..config()
    })
    .await;
    let mut ws = connect_key(&emu, "").await;
    stream(&mut ws, &silence(3000), 100, false).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(3007));
    assert!(
        out.error()
            .expect("Error")
            .error
            .starts_with("Audio Transmission Rate Exceeded: Received")
    );

    // Real time (paced) passes.
    let mut ws = connect_key(&emu, "").await;
    stream(&mut ws, &silence(1000), 100, true).await;
    terminate(&mut ws).await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));

    // Switched off (the common config): the same burst passes.
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "").await;
    stream(&mut ws, &silence(3000), 100, false).await;
    terminate(&mut ws).await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));
}

#[tokio::test]
async fn oversized_message_is_1009() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "sample_rate=96000").await;
    // 96 kHz s16le: 140 KB is ~730 ms, a legal duration but over the 128 KB read limit.
    ws.send(Message::Binary(vec![0; 140 * 1024].into()))
        .await
        .expect("send");
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1009));
}

#[tokio::test]
async fn invalid_text_messages_are_3006() {
    let emu = start(config()).await;
    for (text, expected) in [
        ("{not json", "Invalid JSON: "),
        ("[]", "Invalid Message: "),
        (r#"{"type":"Explode"}"#, "Invalid Message Type: Explode"),
    ] {
        let mut ws = connect_key(&emu, "").await;
        send_json(&mut ws, text).await;
        let out = read_to_close(&mut ws).await;
        assert_eq!(out.code(), Some(3006), "{text}");
        assert!(
            out.error().expect("Error").error.starts_with(expected),
            "{text}: {out:?}"
        );
    }
}

#[tokio::test]
async fn bad_parameter_value_is_3006_and_unknown_ones_are_ignored_apart_from_documented_ones() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "sample_rate=fast").await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(3006));
    assert!(out.error().expect("Error").error.contains("sample_rate"));

    let mut ws = connect_key(&emu, "sample_rate=16000&format_turns=True&min_end_of_turn_silence_when_confident=300&keyterms_prompt=%5B%22a%22%5D&made_up=1&formatted_finals=true&continuous_partials=true&agent_context=x").await;
    terminate(&mut ws).await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 1, "a refused connection opens no session");
    let s = &sessions[0];
    assert!(s.params.format_turns);
    assert_eq!(s.params.min_turn_silence, Some(300));
    assert_eq!(s.params.keyterms_prompt, vec!["a"]);
    // pipecat's `formatted_finals` is no documented parameter: a typo would look the same.
    // `continuous_partials` is documented, for the U3-Pro family only.
    assert_eq!(s.ignored_params.unknown, ["made_up", "formatted_finals"]);
    assert_eq!(
        s.ignored_params.unmodelled,
        ["continuous_partials", "agent_context"]
    );
}

// ---------------------------------------------------------------- flow and recognition

#[tokio::test]
async fn terminate_flushes_turns_then_termination_then_1000() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "sample_rate=16000").await;
    let mut audio = tone(300);
    audio.extend(silence(100));
    audio.extend(tone(300));
    stream(&mut ws, &audio, 50, false).await;
    terminate(&mut ws).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(1000));
    let finals = out.finals();
    assert_eq!(
        finals.len(),
        1,
        "the open turn is ended by Terminate: {:?}",
        out.kinds()
    );
    assert_eq!(finals[0].transcript, "the quick");
    let ServerMessage::Termination(t) = out.messages.last().expect("last") else {
        panic!("Termination last: {:?}", out.kinds())
    };
    assert_eq!(t.audio_duration_seconds, 1);
    let session = &emu.sessions()[0];
    assert_eq!(session.close_code, Some(1000));
    assert_eq!(session.audio_bytes, audio.len() as u64);
    assert_eq!(session.audio_ms, 700);
    assert_eq!(session.final_turns, 1);
    assert!(session.terminated_by_client);
}

#[tokio::test]
async fn turns_grow_and_end_after_silence() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "").await;
    stream(&mut ws, &speech(), 50, false).await;
    let msgs = read_until(
        &mut ws,
        |m| matches!(m, ServerMessage::Turn(t) if t.end_of_turn),
    )
    .await;
    let turns: Vec<_> = msgs
        .iter()
        .filter_map(|m| {
            if let ServerMessage::Turn(t) = m {
                Some(t)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        turns
            .iter()
            .map(|t| t.transcript.as_str())
            .collect::<Vec<_>>(),
        ["", "the", "the quick", "the quick brown"]
    );
    assert!(turns.iter().all(|t| t.turn_order == 0));
    let last = turns.last().expect("final");
    assert_eq!(last.utterance.as_deref(), Some("the quick brown"));
    assert_eq!((last.words[2].start, last.words[2].end), (800, 1100));
}

#[tokio::test]
async fn force_endpoint_and_update_configuration() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "").await;
    // UpdateConfiguration is applied silently: no reply.
    send_json(
        &mut ws,
        r#"{"type":"UpdateConfiguration","min_turn_silence":5000,"max_turn_silence":6000}"#,
    )
    .await;
    send_json(&mut ws, r#"{"type":"KeepAlive"}"#).await;
    let mut audio = tone(300);
    audio.extend(silence(100));
    audio.extend(tone(300));
    audio.extend(silence(1500)); // would end the turn with the default 400 ms
    stream(&mut ws, &audio, 50, false).await;
    send_json(&mut ws, r#"{"type":"ForceEndpoint"}"#).await;
    let msgs = read_until(
        &mut ws,
        |m| matches!(m, ServerMessage::Turn(t) if t.end_of_turn),
    )
    .await;
    let ServerMessage::Turn(last) = msgs.last().expect("final") else {
        panic!()
    };
    assert!(last.end_of_turn);
    assert_eq!(last.transcript, "the quick");
    // Only Begin and Turns arrived (no acknowledgement of UpdateConfiguration or KeepAlive).
    assert!(matches!(msgs[0], ServerMessage::Begin(_)));
    assert!(
        msgs[1..]
            .iter()
            .all(|m| matches!(m, ServerMessage::Turn(_)))
    );
}

#[tokio::test]
async fn script_gives_known_words() {
    let script: Script = serde_json::from_str(
        r#"{"turns":[{"words":[{"text":"hello","start":0,"end":300},{"text":"world","start":400,"end":700}]}]}"#,
    )
    .expect("script");
    let emu = start(EmulatorConfig {
        script: Some(Arc::new(script)),
        ..config()
    })
    .await;
    let mut ws = connect_key(&emu, "format_turns=true").await;
    let mut audio = tone(300);
    audio.extend(silence(100));
    audio.extend(tone(300));
    audio.extend(silence(800));
    stream(&mut ws, &audio, 50, false).await;
    terminate(&mut ws).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.finals()[0].transcript, "Hello world.");
}

#[tokio::test]
async fn profiles_shape_messages() {
    let emu = start(EmulatorConfig {
        profile: Profile::Legacy,
        ..config()
    })
    .await;
    let mut ws = connect_key(&emu, "format_turns=true").await;
    stream(&mut ws, &speech(), 50, false).await;
    terminate(&mut ws).await;
    let out = read_to_close(&mut ws).await;
    let finals = out.finals();
    assert_eq!(finals.len(), 2);
    assert_eq!(finals[0].turn_order, finals[1].turn_order);
    assert!(finals[1].turn_is_formatted && !finals[0].turn_is_formatted);

    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "speech_model=u3-rt-pro&min_turn_silence=400").await;
    stream(&mut ws, &speech(), 50, false).await;
    terminate(&mut ws).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.kinds()[1], "SpeechStarted");
    assert_eq!(out.finals()[0].transcript, "The quick brown.");
}

/// Three two-word sentences with 600 ms pauses (under `max_turn_silence`), then silence.
fn sentences() -> Vec<u8> {
    let mut audio = Vec::new();
    for _ in 0..3 {
        audio.extend(tone(300));
        audio.extend(silence(100));
        audio.extend(tone(300));
        audio.extend(silence(600));
    }
    audio.extend(silence(1500));
    audio
}

#[tokio::test]
async fn the_confidence_threshold_decides_where_turns_end() {
    let emu = start(config()).await;
    let mut finals = Vec::new();
    for threshold in ["0.0", "1.0"] {
        let query = format!("end_of_turn_confidence_threshold={threshold}");
        let mut ws = connect_key(&emu, &query).await;
        stream(&mut ws, &sentences(), 50, false).await;
        terminate(&mut ws).await;
        let out = read_to_close(&mut ws).await;
        finals.push(
            out.finals()
                .iter()
                .map(|t| (t.words.len(), t.end_of_turn_confidence))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(finals[0], [(2, 0.656), (2, 0.656), (2, 0.656)], "0.0");
    assert_eq!(finals[1], [(6, 1.0)], "1.0: one longer turn");
}

#[tokio::test]
async fn begin_echoes_the_mode_in_effect_and_a_bad_mode_is_3006() {
    let emu = start(config()).await;
    for (query, mode) in [
        (
            "speech_model=universal-streaming-english&mode=balanced",
            None,
        ),
        ("speech_model=u3-rt-pro", Some("balanced")),
        (
            "speech_model=universal-3-5-pro&mode=max_accuracy",
            Some("max_accuracy"),
        ),
    ] {
        let mut ws = connect_key(&emu, query).await;
        let first = read_until(&mut ws, |_| true).await;
        let ServerMessage::Begin(begin) = &first[0] else {
            panic!("Begin first: {first:?}")
        };
        let configuration = begin.configuration.as_ref().expect("configuration");
        assert_eq!(configuration.mode.as_deref(), mode, "{query}");
        terminate(&mut ws).await;
        assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));
    }
    let record = emu
        .sessions()
        .into_iter()
        .find(|s| s.params.speech_model == "universal-3-5-pro")
        .expect("record");
    let effective = record.effective.expect("effective");
    assert_eq!(
        (effective.min_turn_silence, effective.max_turn_silence),
        (512, 2560)
    );

    let mut ws = connect_key(&emu, "speech_model=u3-rt-pro&mode=fastest").await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(3006));
    assert!(
        out.error().expect("Error").error.contains("mode"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------- limits and timers

#[tokio::test]
async fn session_expiry_is_error_3008_then_close_3008() {
    let emu = start(EmulatorConfig {
        max_session_duration: Some(Duration::from_secs(1)),
        ..config()
    })
    .await;
    let mut ws = connect_key(&emu, "").await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(3008));
    assert_eq!(
        out.close.as_ref().expect("close").1,
        "Session Expired: Maximum session duration exceeded"
    );
    assert_eq!(out.error().expect("Error").error_code, Some(3008));
}

#[tokio::test]
async fn inactivity_timeout_is_reset_by_keepalive() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "inactivity_timeout=5").await;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    send_json(&mut ws, r#"{"type":"KeepAlive"}"#).await;
    let out = read_to_close(&mut ws).await;
    let elapsed = started.elapsed();
    assert_eq!(out.code(), Some(3006));
    assert!(out.error().expect("Error").error.contains("inactivity"));
    assert!(
        elapsed >= Duration::from_millis(7900),
        "KeepAlive reset the timer: {elapsed:?}"
    );
}

#[tokio::test]
async fn new_sessions_per_minute_limit() {
    for (code, text) in [
        (3009, "Too many concurrent sessions"),
        (1008, "Too many concurrent sessions"),
    ] {
        let emu = start(EmulatorConfig {
            sessions_per_minute: Some(2),
            rate_limit_close_code: code,
            ..config()
        })
        .await;
        for _ in 0..2 {
            let mut ws = connect_key(&emu, "").await;
            terminate(&mut ws).await;
            assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));
        }
        let mut ws = connect_key(&emu, "").await;
        let out = read_to_close(&mut ws).await;
        assert_eq!(out.code(), Some(code));
        assert!(out.close.expect("close").1.contains(text));
    }
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn close_fault_at_time_and_long_reasons() {
    let emu = start(config()).await;
    emu.add_fault("close:3005@300ms".parse().expect("fault"));
    let mut ws = connect_key(&emu, "").await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(3005));
    assert_eq!(
        out.close.expect("close").1,
        "Session Cancelled: An error occurred"
    );

    let long = "x".repeat(200);
    emu.add_fault(FaultRule {
        fault: Fault::Close {
            code: 3005,
            reason: Some(long.clone()),
            at_ms: 0,
        },
        count: 1,
    });
    let mut ws = connect_key(&emu, "").await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(
        out.close.as_ref().expect("close").1,
        "See Error message for details"
    );
    assert_eq!(out.error().expect("Error").error, long);

    // 1011 arrives without an Error frame.
    emu.add_fault("close:1011@0".parse().expect("fault"));
    let mut ws = connect_key(&emu, "").await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(1011));
    assert!(out.error().is_none());
}

#[tokio::test]
async fn drop_fault_has_no_close_frame() {
    let emu = start(config()).await;
    emu.add_fault("drop@200ms".parse().expect("fault"));
    let mut ws = connect_key(&emu, "").await;
    let out = read_to_close(&mut ws).await;
    assert!(out.close.is_none() && out.abnormal, "{out:?}");
    assert_eq!(out.kinds(), ["Begin"]);
    assert_eq!(emu.sessions()[0].close_code, None);
}

#[tokio::test]
async fn stall_fault_stops_all_messages() {
    let emu = start(config()).await;
    emu.add_fault("stall@0".parse().expect("fault"));
    let mut ws = connect_key(&emu, "").await;
    let begin = read_until(&mut ws, |_| true).await;
    assert_eq!(begin.len(), 1);
    stream(&mut ws, &speech(), 50, false).await;
    let out = read_for(&mut ws, Duration::from_millis(800)).await;
    assert!(out.messages.is_empty() && out.close.is_none(), "{out:?}");
}

#[tokio::test]
async fn close_before_begin_and_no_termination() {
    let emu = start(config()).await;
    emu.add_fault("close-before-begin:1011".parse().expect("fault"));
    let mut ws = connect_key(&emu, "").await;
    let out = read_to_close(&mut ws).await;
    assert!(out.messages.is_empty());
    assert_eq!(out.code(), Some(1011));

    emu.add_fault("no-termination".parse().expect("fault"));
    let mut ws = connect_key(&emu, "").await;
    terminate(&mut ws).await;
    let out = read_for(&mut ws, Duration::from_millis(800)).await;
    assert_eq!(out.kinds(), ["Begin"]);
    assert!(out.close.is_none(), "socket stays open: {out:?}");
}

#[tokio::test]
async fn token_faults_status_retry_after_and_delay() {
    let emu = start(config()).await;
    emu.add_fault("token:429:7".parse().expect("fault"));
    emu.add_fault("token:500x2".parse().expect("fault"));
    let response = reqwest::Client::new()
        .get(format!("{}?expires_in_seconds=60", emu.token_url()))
        .header("Authorization", KEY)
        .send()
        .await
        .expect("send");
    // Both rules applied to the first request: the first listed wins.
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(mint(&emu, "expires_in_seconds=60").await.0, 500);
    assert_eq!(mint(&emu, "expires_in_seconds=60").await.0, 200);

    emu.add_fault("token-delay:300ms".parse().expect("fault"));
    let started = std::time::Instant::now();
    assert_eq!(mint(&emu, "expires_in_seconds=60").await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn control_api_adds_lists_and_clears_faults_and_lists_sessions() {
    let emu = start(config()).await;
    let client = reqwest::Client::new();
    let faults = format!("{}/emulator/faults", emu.base_url());
    let added = client
        .post(&faults)
        .body(r#"[{"kind":"close","code":3005,"at_ms":0,"count":2},{"spec":"drop@5sx3"}]"#)
        .send()
        .await
        .expect("post");
    assert_eq!(added.status(), 201);
    let listed: serde_json::Value = client
        .get(&faults)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.as_array().expect("list").len(), 2);
    let bad = client
        .post(&faults)
        .body(r#"{"spec":"explode"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);

    let mut ws = connect_key(&emu, "").await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(3005));
    assert_eq!(
        client
            .delete(&faults)
            .send()
            .await
            .expect("delete")
            .status(),
        204
    );
    let mut ws = connect_key(&emu, "").await;
    terminate(&mut ws).await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));

    let sessions: serde_json::Value = client
        .get(format!("{}/emulator/sessions", emu.base_url()))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let sessions = sessions.as_array().expect("list");
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["close_code"], 3005);
    assert_eq!(sessions[0]["credential"], "api_key");
    assert_eq!(sessions[1]["close_code"], 1000);
    assert!(sessions[1]["params"]["sample_rate"].is_number());
}

#[tokio::test]
async fn record_writes_received_audio_byte_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = start(EmulatorConfig {
        record_dir: Some(dir.path().to_owned()),
        ..config()
    })
    .await;
    let mut ws = connect_key(&emu, "").await;
    // Deterministic noise, sent in uneven legal chunks.
    let mut seed = 0x1234_5678_u32;
    let audio: Vec<u8> = (0..32_000 * 2)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        })
        .collect();
    for piece in audio.chunks(1600 * 3) {
        ws.send(Message::Binary(piece.to_vec().into()))
            .await
            .expect("send");
    }
    terminate(&mut ws).await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));
    let id = &emu.sessions()[0].id;
    let recorded = std::fs::read(dir.path().join(format!("{id}.pcm"))).expect("recording");
    assert_eq!(recorded, audio);
}

#[tokio::test]
async fn shutdown_closes_open_sessions_with_1001() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "").await;
    assert!(matches!(
        read_until(&mut ws, |_| true).await[0],
        ServerMessage::Begin(_)
    ));
    let reader = tokio::spawn(async move { read_to_close(&mut ws).await });
    emu.shutdown().await;
    let out = reader.await.expect("reader");
    assert_eq!(out.code(), Some(1001), "{out:?}");
}

// ---------------------------------------------------------------- closing handshake

/// The session's record once its connection has ended (`closed_at_ms` set), bounded.
async fn closed(emu: &aai_live::emulator::RunningEmulator) -> aai_live::emulator::SessionRecord {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(r) = emu
            .sessions()
            .into_iter()
            .find(|r| r.closed_at_ms.is_some())
        {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", emu.sessions());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After the server's close frame, keep polling as a client library does: tungstenite writes its
/// answer to the close on the next poll, and the stream then ends.
async fn answer_close(ws: &mut Ws) {
    use futures_util::StreamExt;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[tokio::test]
async fn a_client_close_frame_is_recorded() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "").await;
    read_until(&mut ws, |_| true).await;
    ws.close(Some(CloseFrame {
        code: 1000.into(),
        reason: "bye".into(),
    }))
    .await
    .expect("close");
    // The emulator answers the close: the client's handshake completes.
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(1000), "{out:?}");
    let record = closed(&emu).await;
    assert_eq!(record.client_close_code, Some(1000));
    assert_eq!(record.client_close_reason.as_deref(), Some("bye"));
    assert_eq!(record.close_code, Some(1000), "the server echoes it");
}

#[tokio::test]
async fn a_tcp_end_without_close_frame_records_null() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "").await;
    read_until(&mut ws, |_| true).await;
    drop(ws);
    let record = closed(&emu).await;
    assert_eq!(record.client_close_code, None);
    assert_eq!(record.client_close_reason, None);
    // The JSON says null rather than leaving the fields out.
    let sessions: serde_json::Value = reqwest::get(format!("{}/emulator/sessions", emu.base_url()))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let session = sessions[0].as_object().expect("object");
    assert_eq!(
        session.get("client_close_code"),
        Some(&serde_json::Value::Null)
    );
    assert_eq!(
        session.get("client_close_reason"),
        Some(&serde_json::Value::Null)
    );
    assert!(
        session
            .get("closed_at_ms")
            .is_some_and(serde_json::Value::is_u64)
    );
}

#[tokio::test]
async fn the_client_answer_to_the_server_close_is_recorded() {
    let emu = start(config()).await;
    // Terminate → Termination → close 1000; tungstenite answers with the same frame.
    let mut ws = connect_key(&emu, "").await;
    stream(&mut ws, &speech(), 50, false).await;
    terminate(&mut ws).await;
    let out = read_to_close(&mut ws).await;
    assert!(matches!(
        out.messages.last(),
        Some(ServerMessage::Termination(_))
    ));
    assert_eq!(out.code(), Some(1000));
    answer_close(&mut ws).await;
    let record = closed(&emu).await;
    assert_eq!(
        (record.close_code, record.client_close_code),
        (Some(1000), Some(1000))
    );

    // A fault close: the client's answer carries the server's code back.
    let emu = start(config()).await;
    emu.add_fault("close:3005@0".parse().expect("fault"));
    let mut ws = connect_key(&emu, "").await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(3005));
    answer_close(&mut ws).await;
    let record = closed(&emu).await;
    assert_eq!(record.client_close_code, Some(3005));
}

#[tokio::test]
async fn a_client_that_does_not_answer_the_close_is_given_up_after_the_linger() {
    let emu = start(config()).await;
    emu.add_fault("close:1011@0".parse().expect("fault"));
    let mut ws = connect_key(&emu, "").await;
    // Read nothing: tungstenite would answer the close as soon as it reads it.
    let started = std::time::Instant::now();
    let record = closed(&emu).await;
    assert_eq!(record.close_code, Some(1011));
    assert_eq!(
        record.client_close_code, None,
        "no answer within the linger"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(ws.close(None).await);
}

#[tokio::test]
async fn record_writes_the_session_record_as_json_after_the_connection_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = start(EmulatorConfig {
        record_dir: Some(dir.path().to_owned()),
        ..config()
    })
    .await;
    let mut ws = connect_key(&emu, "sample_rate=16000&format_turns=true").await;
    let audio = speech();
    stream(&mut ws, &audio, 50, false).await;
    terminate(&mut ws).await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));
    // The audio is final as soon as the session is over (before the closing handshake).
    let id = emu.sessions()[0].id.clone();
    let pcm = std::fs::read(dir.path().join(format!("{id}.pcm"))).expect("recording");
    assert_eq!(pcm, audio);
    answer_close(&mut ws).await;
    // The record follows once the connection has ended.
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
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["close_code"], 1000);
    assert_eq!(record["client_close_code"], 1000);
    assert_eq!(record["audio_bytes"], audio.len() as u64);
    assert_eq!(record["terminated_by_client"], true);
    assert_eq!(record["params"]["format_turns"], true);
    assert!(record["closed_at_ms"].is_u64() && record["started_at_ms"].is_u64());
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "the .pcm and the .json, no temporary file: {names:?}"
    );
}

// ---------------------------------------------------------------- stop-reading

#[tokio::test]
async fn stop_reading_fault_builds_back_pressure_and_sends_nothing() {
    use futures_util::StreamExt;
    let emu = start(EmulatorConfig {
        max_session_duration: Some(Duration::from_secs(60)),
        ..config()
    })
    .await;
    emu.add_fault("stop-reading@1s".parse().expect("fault"));
    let ws = connect_key(&emu, "sample_rate=16000").await;
    let started = std::time::Instant::now();
    let (mut sink, mut source) = ws.split();
    // Every frame the server sends, with its arrival time.
    let reader = tokio::spawn(async move {
        let mut arrivals = Vec::new();
        while let Some(Ok(message)) = source.next().await {
            arrivals.push((started.elapsed(), message.is_text()));
        }
        arrivals
    });
    // One second of voice-like audio per message (32 000 bytes), as fast as the socket takes
    // them; each send is timed.
    let mut chunk = tone(300);
    chunk.extend(silence(700));
    let mut sent_before = 0_u32;
    let mut blocked_at = None;
    while started.elapsed() < Duration::from_secs(20) {
        let send = sink.send(Message::Binary(chunk.clone().into()));
        let Ok(result) = tokio::time::timeout(Duration::from_secs(2), send).await else {
            blocked_at = Some(started.elapsed());
            break;
        };
        result.expect("send");
        if started.elapsed() < Duration::from_millis(900) {
            sent_before += 1;
            // Before T: a modest pace, so the emulator reads everything as it comes.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let blocked_at = blocked_at.expect("sends block once the emulator stops reading");
    assert!(sent_before >= 5, "sends progressed before T: {sent_before}");
    assert!(
        blocked_at > Duration::from_secs(1) && blocked_at < Duration::from_secs(12),
        "blocked at {blocked_at:?}"
    );
    // Nothing arrived after T (turns queued before it were sent before it).
    let session = emu.sessions().pop().expect("session");
    assert_eq!(session.faults, ["stop reading at 1000 ms"]);
    assert!(session.closed_at_ms.is_none(), "the session stays open");
    emu.shutdown().await;
    let arrivals = reader.await.expect("reader");
    let after: Vec<_> = arrivals
        .iter()
        .filter(|(at, is_text)| *is_text && *at > Duration::from_millis(1100))
        .collect();
    assert!(
        after.is_empty(),
        "frames after T: {after:?} (all: {arrivals:?})"
    );
    assert!(
        arrivals.iter().any(|(_, is_text)| *is_text),
        "Begin and turns arrived before T"
    );
}

#[tokio::test]
async fn shutdown_also_ends_a_session_that_swallowed_terminate() {
    let emu = start(config()).await;
    emu.add_fault("no-termination".parse().expect("fault"));
    let mut ws = connect_key(&emu, "").await;
    read_until(&mut ws, |_| true).await;
    terminate(&mut ws).await;
    let reader = tokio::spawn(async move { read_for(&mut ws, Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    emu.shutdown().await;
    let out = reader.await.expect("reader");
    assert_eq!(out.code(), Some(1001), "{out:?}");
}
