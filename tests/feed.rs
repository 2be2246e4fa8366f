//! The live feed end to end: the real binary (`aai-live demo --headless --feed 127.0.0.1:0`: the
//! bundled recording through the in-process emulator on 127.0.0.1, its word script) read over
//! SSE and WebSocket as a consumer would, checked against the run's own NDJSON; the captions
//! file read while it grows; the rules of the feed's door (Host, Origin, fetch metadata, token).

mod common;
#[path = "common/feed.rs"]
mod feed_support;

use std::time::Duration;

use feed_support::{Run, Sse, SseEvent};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The JSON `event` of an NDJSON line.
fn kind(line: &str) -> String {
    let value: Value = serde_json::from_str(line).expect("json");
    value["event"].as_str().expect("event").to_owned()
}

/// A consumer reads until the first final, goes away, and comes back with `Last-Event-ID` a
/// moment later: across both connections it gets exactly the run's NDJSON, line for line, ids
/// 1, 2, 3… without a hole — no final missing or changed, no `gap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_with_last_event_id_and_misses_nothing() {
    let home = tempfile::tempdir().expect("home");
    let run = Run::start(home.path(), &["--duration", "12s"], &[]).await;
    let events = format!("{}/events", run.url);
    let mut got: Vec<SseEvent> = Vec::new();
    let mut first = Sse::open(&events, &[]).await;
    let finals_before = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = first.next().await {
            let is_final = event.event == "final";
            got.push(event);
            if is_final {
                return 1;
            }
        }
        0
    })
    .await
    .expect("a final within 20 s");
    assert_eq!(finals_before, 1, "the stream ended before a final");
    drop(first);
    let last = got.last().and_then(|e| e.id).expect("an id");
    // Events go by while it is away.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut second = Sse::open(&events, &[("Last-Event-ID", &last.to_string())]).await;
    let resumed_at = got.len();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(30), second.next())
        .await
        .expect("the feed ends with the run")
    {
        got.push(event);
    }
    let (stdout, code, stderr) = run.finish().await;
    assert_eq!(code, Some(0), "{stderr}");

    let data: Vec<&str> = got.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(
        data, stdout,
        "the feed's events are the run's NDJSON, in order"
    );
    let ids: Vec<u64> = got.iter().map(|e| e.id.expect("an id")).collect();
    assert_eq!(ids, (1..=got.len() as u64).collect::<Vec<_>>());
    for event in &got {
        assert_eq!(event.event, kind(&event.data), "event: is the kind");
    }
    let missed = &got[resumed_at..];
    assert!(
        got[resumed_at].id == Some(last + 1) && missed.iter().any(|e| e.event == "final"),
        "the resumed stream starts at the next id and carries the later finals"
    );
    assert_eq!(got.last().map(|e| e.event.as_str()), Some("finished"));
    assert!(
        !got.iter()
            .any(|e| e.event == "gap" || e.event == "disconnected")
    );
}

/// Parse a SubRip file strictly: numbered cues, a timing line with one `-->`, then one or more
/// non-empty text lines without `-->`; cues separated by one blank line. Returns the cues' text.
fn parse_srt(text: &str) -> Result<Vec<String>, String> {
    let mut cues = Vec::new();
    if text.is_empty() {
        return Ok(cues);
    }
    let body = text
        .strip_suffix("\n\n")
        .ok_or_else(|| format!("does not end with a blank line: {text:?}"))?;
    for (n, block) in body.split("\n\n").enumerate() {
        let mut lines = block.lines();
        let number = lines.next().ok_or("an empty cue")?;
        if number != (n + 1).to_string() {
            return Err(format!("cue {} is numbered {number:?}", n + 1));
        }
        let timing = lines.next().ok_or("a cue without timing")?;
        let (from, to) = timing
            .split_once(" --> ")
            .ok_or_else(|| format!("bad timing {timing:?}"))?;
        for t in [from, to] {
            if t.len() != 12 || t.as_bytes()[8] != b',' {
                return Err(format!("bad time {t:?}"));
            }
        }
        let text: Vec<&str> = lines.collect();
        if text.is_empty()
            || text
                .iter()
                .any(|l| l.trim().is_empty() || l.contains("-->"))
        {
            return Err(format!("bad cue text {text:?}"));
        }
        cues.push(text.join("\n"));
    }
    Ok(cues)
}

/// `--captions live.srt`: read every 20 ms during the run, the file is a valid SubRip file each
/// time, it grows a cue per final, and at the end holds every final's text in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_captions_file_is_valid_after_each_cue() {
    let home = tempfile::tempdir().expect("home");
    let path = home.path().join("live.srt");
    let captions = path.to_str().expect("utf-8 path").to_owned();
    let mut run = Run::start(
        home.path(),
        &["--duration", "12s", "--captions", &captions],
        &[],
    )
    .await;
    let mut seen = vec![0];
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let cues = parse_srt(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            if cues.len() != *seen.last().expect("seen") {
                seen.push(cues.len());
            }
        }
        if run.child.try_wait().expect("status").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (stdout, code, stderr) = run.finish().await;
    assert_eq!(code, Some(0), "{stderr}");
    let finals: Vec<String> = stdout
        .iter()
        .filter(|l| kind(l) == "final")
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            v["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert!(finals.len() >= 2, "{finals:?}");
    let text = std::fs::read_to_string(&path).expect("captions");
    assert_eq!(parse_srt(&text).expect("valid"), finals);
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1) && seen.len() > 2,
        "one cue at a time, seen during the run: {seen:?}"
    );
}

/// A GET with `headers`; the status and body.
async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    // An SSE answer never ends while the run lasts: what came within a second is enough.
    let mut body = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(until, response.chunk()).await {
        body.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A WebSocket upgrade of `/ws` with an `Origin`; the handshake's status, or the first message.
async fn ws(url: &str, origin: &str) -> Result<Value, u16> {
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("origin", origin.parse().expect("origin"));
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut socket, _)) => {
            let message = socket.next().await.expect("a message").expect("text");
            Ok(serde_json::from_str(message.to_text().expect("text")).expect("json"))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

/// The door: with a token set (`AAI_LIVE_FEED_TOKEN`), a request without it or with a wrong
/// one gets 401, with it (header or `?token=`) 200; a foreign `Host` (DNS rebinding), a foreign
/// `Origin`, a cross-site script load are refused; `/ws` upgrades only for the feed's own
/// origin. The token never appears on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_origins_and_missing_tokens_are_refused() {
    const TOKEN: &str = "feed-token-0123456789abcdef";
    let home = tempfile::tempdir().expect("home");
    let run = Run::start(
        home.path(),
        &["--duration", "6s"],
        &[("AAI_LIVE_FEED_TOKEN", TOKEN)],
    )
    .await;
    let url = &run.url;
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];

    assert_eq!(get(&format!("{url}/healthz"), &[]).await.0, 200);
    let (status, body) = get(&format!("{url}/events"), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token"), "{body}");
    assert_eq!(get(&format!("{url}/events?token=wrong"), &[]).await.0, 401);
    let (status, body) = get(&format!("{url}/events?token={TOKEN}"), &[]).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("event: hello\n"), "{body}");
    assert_eq!(get(&format!("{url}/transcript.txt"), &auth).await.0, 200);

    // DNS rebinding: evil.example resolves to 127.0.0.1, the browser says so in Host.
    let (status, body) = get(
        &format!("{url}/events"),
        &[auth[0], ("host", "evil.example")],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("localhost only"), "{body}");
    assert_eq!(
        get(&format!("{url}/healthz"), &[("host", "evil.example:80")])
            .await
            .0,
        403
    );
    // Another site's page.
    let (status, body) = get(
        &format!("{url}/events"),
        &[auth[0], ("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = get(
        &format!("{url}/transcript.txt"),
        &[
            auth[0],
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", "script"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    // The overlay opens without the token (it holds no data) and under its policy.
    let response = reqwest::get(format!("{url}/overlay"))
        .await
        .expect("overlay");
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));

    let ws_url = format!("{}/ws?token={TOKEN}", url.replacen("http", "ws", 1));
    assert_eq!(ws(&ws_url, "http://evil.example").await, Err(403));
    let first = ws(&ws_url, url).await.expect("its own origin is let in");
    assert_eq!(first["id"], 1);
    assert_eq!(first["event"], "hello");
    assert_eq!(first["data"]["event"], "hello");
    let no_token = format!("{}/ws", url.replacen("http", "ws", 1));
    assert_eq!(ws(&no_token, url).await, Err(401));

    let (_, code, stderr) = run.finish().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains(TOKEN), "the token leaked: {stderr}");
}

/// A feed on a non-loopback address without a token does not start: the run stops before
/// streaming, with a message naming the two ways to give one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_feed_without_a_token_is_refused() {
    let home = tempfile::tempdir().expect("home");
    let output = common::aai_live(home.path())
        .args([
            "demo",
            "--headless",
            "--duration",
            "5s",
            "--feed",
            "0.0.0.0:0",
        ])
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("AAI_LIVE_FEED_TOKEN"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing streamed");
}
