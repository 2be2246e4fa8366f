//! The emulator against hostile clients on 127.0.0.1: frames it must refuse early (before and
//! after authentication), bytes tungstenite would never send (bad UTF-8, unmasked frames, absurd
//! lengths), the 128 KB rule for text, bounded echoes, the session registry and token store
//! caps, the connection cap and header timeout, close-code validation, and who may use the
//! control API. docs/security.md ("Emulator limits") lists each limit.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aai_live::emulator::{self, EmulatorConfig, EmulatorError, RunningEmulator};
use aai_live::protocol::ServerMessage;
use common::*;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket opened by hand, so a test can write frames a real client never sends.
struct Raw {
    tcp: TcpStream,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
}

/// What a server frame was.
#[derive(Debug)]
enum Frame {
    Text(String),
    Close(Option<u16>),
    Other,
}

const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

impl Raw {
    /// The upgrade request by hand; panics unless the answer is 101.
    async fn connect(addr: SocketAddr, auth: Option<&str>, query: &str) -> Self {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let request = format!(
            "GET /v3/ws?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{auth}\r\n"
        );
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0_u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk))
                .await
                .expect("answer in time")
                .expect("read");
            assert!(n > 0, "closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self {
            tcp,
            buf: buf[end..].to_vec(),
        }
    }

    /// A frame header (FIN set) claiming `len` payload bytes.
    fn header(opcode: u8, len: u64, masked: bool) -> Vec<u8> {
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut out = vec![0x80 | opcode];
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            // 126 and 127 (0x7e, 0x7f) announce a 16- and a 64-bit length.
            out.push(mask_bit | 0x7e);
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.push(mask_bit | 0x7f);
            out.extend_from_slice(&len.to_be_bytes());
        }
        if masked {
            out.extend_from_slice(&MASK);
        }
        out
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8], masked: bool) {
        let mut bytes = Self::header(opcode, payload.len() as u64, masked);
        if masked {
            bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        } else {
            bytes.extend_from_slice(payload);
        }
        // A server that closes first may reset the connection: not an error here.
        let _ = self.tcp.write_all(&bytes).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.tcp.write_all(bytes).await;
    }

    /// The next server frame, or `None` when the connection ends (EOF or reset) or `limit`
    /// passes.
    async fn frame(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0_u8; 8192];
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Frames until the close (or the end): the texts and the close code.
    async fn until_close(&mut self, limit: Duration) -> (Vec<String>, Option<Option<u16>>) {
        let mut texts = Vec::new();
        while let Some(frame) = self.frame(limit).await {
            match frame {
                Frame::Text(t) => texts.push(t),
                Frame::Close(code) => return (texts, Some(code)),
                Frame::Other => {}
            }
        }
        (texts, None)
    }

    /// Time until the server ends the TCP connection (EOF or reset), reading and discarding.
    async fn until_end(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        let mut chunk = [0_u8; 8192];
        let ended = tokio::time::timeout(limit, async {
            loop {
                match self.tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        ended.ok().map(|()| started.elapsed())
    }
}

/// One unmasked server frame from the front of `buf`: the frame and the bytes it used.
fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
    let b0 = *buf.first()?;
    let b1 = *buf.get(1)?;
    let (len, start) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let end = start + usize::try_from(len).ok()?;
    let payload = buf.get(start..end)?;
    let frame = match b0 & 0x0f {
        0x1 => Frame::Text(String::from_utf8_lossy(payload).into_owned()),
        0x8 => {
            Frame::Close((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])))
        }
        _ => Frame::Other,
    };
    Some((frame, end))
}

/// An authenticated raw session, its Begin already read.
async fn raw_session(emu: &RunningEmulator) -> Raw {
    let mut raw = Raw::connect(emu.addr, Some(KEY), "sample_rate=16000").await;
    match raw.frame(Duration::from_secs(5)).await {
        Some(Frame::Text(t)) => assert!(t.contains("\"Begin\""), "{t}"),
        other => panic!("expected Begin, got {other:?}"),
    }
    raw
}

/// The first session's record once its connection has ended.
async fn closed_record(emu: &RunningEmulator) -> emulator::SessionRecord {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(r) = emu
            .sessions()
            .into_iter()
            .find(|r| r.closed_at_ms.is_some())
        {
            return r;
        }
        assert!(Instant::now() < deadline, "{:?}", emu.sessions());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- frames and bytes

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_is_closed_with_1007() {
    let emu = start(config()).await;
    let mut raw = raw_session(&emu).await;
    raw.send_frame(0x1, &[b'{', 0xff, 0xfe, b'}'], true).await;
    let (_, close) = raw.until_close(Duration::from_secs(5)).await;
    assert_eq!(
        close,
        Some(Some(1007)),
        "a close frame with 1007, not a TCP drop"
    );
    assert_eq!(closed_record(&emu).await.close_code, Some(1007));
}

#[tokio::test]
async fn an_unmasked_client_frame_is_closed_with_1002() {
    let emu = start(config()).await;
    let mut raw = raw_session(&emu).await;
    raw.send_frame(0x2, &silence(100), false).await;
    let (_, close) = raw.until_close(Duration::from_secs(5)).await;
    assert_eq!(close, Some(Some(1002)));
    assert_eq!(closed_record(&emu).await.close_code, Some(1002));
}

#[tokio::test]
async fn absurd_and_oversized_lengths_are_1009_at_the_header() {
    let emu = start(config()).await;
    // 2^62 bytes announced: refused at the header with the service's Error + 1009.
    let mut raw = raw_session(&emu).await;
    raw.send_raw(&Raw::header(0x2, 1 << 62, true)).await;
    let (texts, close) = raw.until_close(Duration::from_secs(5)).await;
    assert_eq!(close, Some(Some(1009)), "{texts:?}");
    let error = ServerMessage::parse(texts.last().expect("Error frame")).expect("JSON");
    assert!(matches!(error, ServerMessage::Error(e) if e.error_code == Some(1009)));

    // 1 MiB announced and never sent: refused at once, not waited for.
    let mut raw = raw_session(&emu).await;
    raw.send_raw(&Raw::header(0x2, 1 << 20, true)).await;
    let started = Instant::now();
    let (_, close) = raw.until_close(Duration::from_secs(5)).await;
    assert_eq!(close, Some(Some(1009)));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_refused_credential_cannot_make_the_emulator_buffer_a_big_frame() {
    let emu = start(config()).await;
    let mut raw = Raw::connect(emu.addr, Some("wrong-key"), "sample_rate=16000").await;
    let (texts, close) = raw.until_close(Duration::from_secs(5)).await;
    assert_eq!(close, Some(Some(1008)), "{texts:?}");
    // An 8 MiB frame during the wait for our close reply: with the 16 MiB limit the emulator
    // reserved 8 MiB and waited out its 500 ms linger; now the header alone ends the connection.
    raw.send_raw(&Raw::header(0x2, 8 << 20, true)).await;
    raw.send_raw(&vec![0_u8; 1024]).await;
    let ended = raw.until_end(Duration::from_secs(3)).await.expect("closed");
    assert!(ended < Duration::from_millis(250), "closed after {ended:?}");
}

#[tokio::test]
async fn text_frames_over_128_kb_are_1009_like_binary_ones() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "").await;
    let padded = format!("{{\"type\":\"KeepAlive\"}}{}", " ".repeat(200_000));
    ws.send(Message::Text(padded.into())).await.expect("send");
    let out = read_for(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(out.code(), Some(1009), "{:?}", out.kinds());
    assert_eq!(out.error().expect("Error frame").error_code, Some(1009));
}

#[tokio::test]
async fn an_unknown_type_is_echoed_in_64_characters() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, "").await;
    let kind = "k".repeat(100_000);
    send_json(&mut ws, &format!("{{\"type\":\"{kind}\"}}")).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(3006));
    let error = &out.error().expect("Error frame").error;
    assert_eq!(error, &format!("Invalid Message Type: {}…", "k".repeat(64)));
}

#[tokio::test]
async fn a_huge_bad_parameter_is_echoed_bounded() {
    let emu = start(config()).await;
    let mut ws = connect_key(&emu, &format!("sample_rate={}", "9".repeat(60_000))).await;
    let out = read_to_close(&mut ws).await;
    assert_eq!(out.code(), Some(3006));
    let error = &out.error().expect("Error frame").error;
    assert!(
        error.len() < 300 && error.contains("sample_rate"),
        "{error}"
    );
}

// ---------------------------------------------------------------- kept state

#[tokio::test]
async fn the_registry_keeps_the_last_finished_sessions_with_bounded_parameters() {
    let emu = start(EmulatorConfig {
        keep_sessions: 3,
        ..config()
    })
    .await;
    // A model name has no length rule; a prompt may have 1 750 characters; unknown names are
    // listed. The client's URI type stops at 64 KiB.
    let model = "m".repeat(30_000);
    let prompt = "p".repeat(1750);
    let unknown_name = "u".repeat(25_000);
    let mut ids = Vec::new();
    for _ in 0..6 {
        let query = format!("speech_model={model}&prompt={prompt}&{unknown_name}=1");
        let mut ws = connect_key(&emu, &query).await;
        let begin = read_until(&mut ws, |_| true).await;
        let ServerMessage::Begin(begin) = &begin[0] else {
            panic!("{begin:?}");
        };
        ids.push(begin.id.clone());
        terminate(&mut ws).await;
        assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));
        drop(ws);
    }
    // Once the last connection has ended, only the three newest are kept.
    let deadline = Instant::now() + Duration::from_secs(5);
    let kept = loop {
        let kept = emu.sessions();
        if kept.len() == 3 && kept.iter().all(|r| r.closed_at_ms.is_some()) {
            break kept;
        }
        assert!(Instant::now() < deadline, "{} kept", kept.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let kept_ids: Vec<&str> = kept.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        kept_ids,
        ids[3..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    for record in &kept {
        assert!(record.params_truncated);
        assert_eq!(
            record.params.speech_model.chars().count(),
            257,
            "256 characters and …"
        );
        let echoed = record.params.prompt.as_deref().expect("prompt");
        assert_eq!(echoed.chars().count(), 257);
        assert!(
            record
                .ignored_params
                .unknown
                .iter()
                .chain(&record.ignored_params.unmodelled)
                .all(|n| n.chars().count() <= 257)
        );
    }
    let stats = emu.stats();
    assert_eq!(
        (stats.sessions.kept_finished, stats.sessions.pruned),
        (3, 3)
    );
    let body = reqwest::get(format!("{}/emulator/sessions", emu.base_url()))
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(body.len() < 20_000, "{} bytes", body.len());
}

#[tokio::test]
async fn the_token_store_is_capped_evicts_the_oldest_and_reports_it() {
    let emu = start(EmulatorConfig {
        max_tokens: 5,
        ..config()
    })
    .await;
    let mut tokens = Vec::new();
    for _ in 0..8 {
        tokens.push(mint_token(&emu, "expires_in_seconds=60").await);
    }
    // The three oldest were evicted unredeemed: refused like unknown tokens.
    for token in &tokens[..3] {
        let mut ws = connect(&emu, Some(token), "").await.expect("upgrade");
        let out = read_to_close(&mut ws).await;
        assert_eq!(out.code(), Some(1008));
        assert!(
            out.error()
                .expect("Error")
                .error
                .contains("Invalid API key or token"),
            "{out:?}"
        );
    }
    let mut ws = connect(&emu, Some(&tokens[7]), "").await.expect("upgrade");
    terminate(&mut ws).await;
    assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));

    let stats = stats_json(&emu).await;
    let t = &stats["tokens"];
    assert_eq!(t["max_tokens"], 5, "{stats}");
    assert_eq!(t["stored"], 5, "{stats}");
    assert_eq!(t["minted"], 8, "{stats}");
    assert_eq!(t["evicted"], 3, "{stats}");
    assert_eq!(t["evicted_unredeemed"], 3, "{stats}");
    assert_eq!(t["redeemed"], 1, "{stats}");
}

// ---------------------------------------------------------------- connections

/// `GET url` as JSON, on a connection of its own.
async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// `GET /emulator/stats`.
async fn stats_json(emu: &RunningEmulator) -> serde_json::Value {
    get_json(&format!("{}/emulator/stats", emu.base_url())).await
}

/// At the cap, a new connection takes the place of the oldest that has sent no request (idle
/// sockets cannot lock clients out); with every place held by a session, a new connection is
/// closed at once; idle connections are closed by the header timeout.
#[tokio::test]
async fn the_connection_cap_makes_room_from_idle_connections_and_closes_extra_ones_at_once() {
    let emu = start(EmulatorConfig {
        max_connections: Some(3),
        header_timeout: Some(Duration::from_millis(400)),
        ..config()
    })
    .await;
    let open = |n: usize| {
        let emu = &emu;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while emu.stats().connections.expect("capped").open != n {
                assert!(Instant::now() < deadline, "{:?}", emu.stats());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let mut idle = Vec::new();
    for n in 1..=3 {
        idle.push(TcpStream::connect(emu.addr).await.expect("connect"));
        open(n).await;
    }
    // A client's request is answered: the oldest idle connection made room for it.
    let stats = stats_json(&emu).await;
    assert_eq!(stats["connections"]["max"], 3, "{stats}");
    assert_eq!(stats["connections"]["evicted"], 1, "{stats}");
    let mut byte = [0_u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(3), idle[0].read(&mut byte))
        .await
        .expect("the oldest idle connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The others are closed by the header timeout.
    for socket in &mut idle[1..] {
        let read = tokio::time::timeout(Duration::from_secs(3), socket.read(&mut byte))
            .await
            .expect("closed by the header timeout");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    open(0).await;
    // Three sessions hold every place: a fourth connection is closed at once.
    let mut sessions = Vec::new();
    for n in 1..=3 {
        sessions.push(connect_key(&emu, "sample_rate=16000").await);
        open(n).await;
    }
    let mut extra = TcpStream::connect(emu.addr).await.expect("connect");
    let read = tokio::time::timeout(Duration::from_secs(1), extra.read(&mut byte))
        .await
        .expect("closed at once, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        emu.stats().connections.expect("capped").refused >= 1,
        "{:?}",
        emu.stats()
    );
    drop(sessions);
}

// ---------------------------------------------------------------- close codes

#[tokio::test]
async fn close_codes_a_server_may_not_send_are_refused_by_the_control_api_and_start() {
    let emu = start(config()).await;
    let client = reqwest::Client::new();
    let faults = format!("{}/emulator/faults", emu.base_url());
    for (body, field, value) in [
        (r#"{"kind":"close","code":1005}"#, "code", "1005"),
        (r#"{"kind":"close","code":0,"at_ms":10}"#, "code", "0"),
        (
            r#"[{"kind":"drop"},{"kind":"close-before-begin","code":65535}]"#,
            "code",
            "65535",
        ),
        (r#"{"spec":"close:1006@1s"}"#, "spec", "1006"),
    ] {
        let response = client.post(&faults).body(body).send().await.expect("post");
        assert_eq!(response.status(), 400, "{body}");
        let error: serde_json::Value = response.json().await.expect("json");
        let message = error["error"].as_str().expect("message");
        assert!(
            message.contains(field) && message.contains(value),
            "{message}"
        );
    }
    let listed = get_json(&faults).await;
    assert_eq!(listed, serde_json::json!([]), "nothing was added");

    for config in [
        EmulatorConfig {
            inactivity_close_code: 1005,
            ..config()
        },
        EmulatorConfig {
            faults: vec![aai_live::emulator::FaultRule {
                fault: aai_live::emulator::Fault::Close {
                    code: 0,
                    reason: None,
                    at_ms: 0,
                },
                count: 1,
            }],
            ..config()
        },
    ] {
        let e = emulator::start(config, "127.0.0.1:0", None)
            .await
            .expect_err("refused");
        assert!(
            matches!(e, EmulatorError::CloseCode { .. } | EmulatorError::Fault(_)),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------- the control API

/// The fault list the control API keeps is bounded: past 1000 active rules a POST is refused
/// with 409, all of its rules or none (it used to grow with every POST).
#[tokio::test]
async fn the_fault_list_is_bounded() {
    let emu = start(config()).await;
    let client = reqwest::Client::new();
    let faults = format!("{}/emulator/faults", emu.base_url());
    let batch = serde_json::Value::Array(vec![serde_json::json!({"spec": "drop@1s"}); 500]);
    for _ in 0..2 {
        let status = client
            .post(&faults)
            .json(&batch)
            .send()
            .await
            .expect("post");
        assert_eq!(status.status(), 201);
    }
    let refused = client
        .post(&faults)
        .json(&serde_json::json!({"spec": "drop@1s"}))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 409);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("at most 1000")),
        "{body}"
    );
    let listed = get_json(&faults).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1000));
    let cleared = client.delete(&faults).send().await.expect("delete");
    assert_eq!(cleared.status(), 204);
}

/// One raw HTTP/1.1 request; the status code of the answer.
async fn http_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

fn get_sessions_with_host(host: &[u8]) -> Vec<u8> {
    let mut request = b"GET /emulator/sessions HTTP/1.1\r\nHost: ".to_vec();
    request.extend_from_slice(host);
    request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    request
}

#[tokio::test]
async fn the_control_api_refuses_browsers_and_foreign_hosts() {
    let emu = start(config()).await;
    let client = reqwest::Client::new();
    let faults = format!("{}/emulator/faults", emu.base_url());
    // A cross-site "simple" POST from a page: text/plain with an Origin.
    let page = client
        .post(&faults)
        .header("Origin", "http://evil.example")
        .header("Content-Type", "text/plain")
        .body(r#"{"kind":"drop"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(page.status(), 403);
    // Even an Origin naming the emulator itself: no browser page drives it.
    let same = client
        .get(format!("{}/emulator/sessions", emu.base_url()))
        .header("Origin", emu.base_url())
        .send()
        .await
        .expect("get");
    assert_eq!(same.status(), 403);
    // curl-style requests (no Origin) still work.
    let curl = client
        .post(&faults)
        .body(r#"{"kind":"drop","at_ms":5000}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(curl.status(), 201);
    // Control requests are small: a 100 KB body is refused before it is parsed.
    let big = client
        .post(&faults)
        .body(format!("[{}]", vec![r#"{"kind":"drop"}"#; 7000].join(",")))
        .send()
        .await
        .expect("post");
    assert_eq!(big.status(), 413);

    let port = emu.addr.port();
    for (host, expected) in [
        (format!("127.0.0.1:{port}").into_bytes(), 200),
        (format!("localhost:{port}").into_bytes(), 200),
        (b"evil.example".to_vec(), 403),
        (b"localhost:80@evil.example".to_vec(), 403),
        (b"localhost.evil.example".to_vec(), 403),
        (b"\xfflocalhost".to_vec(), 403),
    ] {
        let status = http_status(emu.addr, &get_sessions_with_host(&host)).await;
        assert_eq!(status, expected, "Host: {}", String::from_utf8_lossy(&host));
    }
    // The service's own endpoints are not the control API: any Host, any Origin.
    let token = client
        .get(format!("{}?expires_in_seconds=60", emu.token_url()))
        .header("Authorization", KEY)
        .header("Origin", "http://app.example")
        .send()
        .await
        .expect("token");
    assert_eq!(token.status(), 200);
}

/// A non-loopback address of this machine, if it has one (found without sending anything).
fn lan_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn the_control_api_answers_loopback_peers_only_unless_allowed() {
    let Some(ip) = lan_address() else {
        eprintln!("no non-loopback address on this machine: the peer rule is unit-tested only");
        return;
    };
    for (anywhere, expected) in [(false, 403), (true, 200)] {
        let emu = emulator::start(
            EmulatorConfig {
                control_from_anywhere: anywhere,
                ..config()
            },
            "0.0.0.0:0",
            None,
        )
        .await
        .expect("starts");
        let addr = SocketAddr::new(ip, emu.addr.port());
        let host = addr.to_string();
        let status = http_status(addr, &get_sessions_with_host(host.as_bytes())).await;
        assert_eq!(status, expected, "control_from_anywhere = {anywhere}");
        // The streaming API answers other machines either way.
        let token = reqwest::Client::new()
            .get(format!("http://{addr}/v3/token?expires_in_seconds=60"))
            .header("Authorization", KEY)
            .send()
            .await
            .expect("token");
        assert_eq!(token.status(), 200);
        emu.shutdown().await;
    }
}
