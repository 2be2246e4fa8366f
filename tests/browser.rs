//! The browser client in a real browser: Debian's Chromium, headless, with a fake microphone
//! playing assets/demo.wav, driven over the DevTools protocol (tests/common/cdp.rs), against
//! `serve --web` and the emulator on 127.0.0.1 with short sessions. The page at `/` streams the
//! recording; the emulator's `--record` files and the page's own events show what reached the
//! service: the demo's sentences, in order, one final each; no hole between sessions longer
//! than one chunk across rotations, a 3008 close and a TCP drop; the page's ledger; a refused
//! credential that stops at once.
//!
//! These run in real time (about 2 minutes in all), one at a time (the `browser` test group in
//! .config/nextest.toml). Without Chromium they are skipped with a message; with `CI` set a
//! missing Chromium fails them.

#[path = "common/cdp.rs"]
mod cdp;
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aai_live::config::Config;
use aai_live::emulator::{EmulatorConfig, Fault, FaultRule, RunningEmulator, Script};
use aai_live::protocol::close::reasons;
use aai_live::server::{self, Auth, BrowserSettings, Credentials, RunningServer, ServerConfig};
use cdp::{Chromium, LaunchOptions, Page};
use common::KEY;
use serde_json::Value;

/// The page's events, collected by a hook installed before the page's own scripts run (outside
/// its Content-Security-Policy): every event of the client but the level meter's.
const HOOK: &str = r#"
window.__aaiEvents = [];
(() => {
  let client = null;
  Object.defineProperty(window, "aaiLive", {
    configurable: true,
    get() { return client; },
    set(c) {
      client = c;
      c.addEventListener("event", (e) => { if (e.detail.event !== "level") window.__aaiEvents.push(e.detail); });
    },
  });
})();
"#;

/// Samples per chunk the client sends (50 ms at 16 kHz).
const CHUNK: u64 = 800;

/// The emulator, the token server in front of it and a scratch directory.
struct Rig {
    emu: RunningEmulator,
    server: RunningServer,
    _dir: tempfile::TempDir,
    record: PathBuf,
}

/// A credential the token server knows (as the client `page`).
const CREDENTIAL: &str = "browser-test-credential-0123456789";

/// The sentences of the demo recording, as the emulator's script says them.
fn demo_sentences() -> Vec<String> {
    let value: Value = serde_json::from_str(aai_live::demo::SCRIPT).expect("json");
    value["turns"]
        .as_array()
        .expect("turns")
        .iter()
        .map(|t| {
            t["words"]
                .as_array()
                .expect("words")
                .iter()
                .map(|w| w["text"].as_str().expect("text"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The demo recording `times` over, as one WAV file (the script loops with it).
fn demo_wav(dir: &Path, times: usize) -> PathBuf {
    let mut reader = hound::WavReader::new(std::io::Cursor::new(aai_live::demo::WAV)).expect("wav");
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let all: Vec<i16> = std::iter::repeat_n(samples, times).flatten().collect();
    let path = dir.join("demo-x{times}.wav".replace("{times}", &times.to_string()));
    common::write_wav(&path, &all);
    path
}

async fn rig(emulator: EmulatorConfig, auth: Auth, tweak: impl FnOnce(&mut Config)) -> Rig {
    rig_with(emulator, auth, tweak, |_| {}).await
}

/// The emulator (recording, the demo's script) and `serve --web` in front of it; `tweak` edits
/// the configuration (`[session]` reaches the page through /config.json), `serve` the server's.
async fn rig_with(
    emulator: EmulatorConfig,
    auth: Auth,
    tweak: impl FnOnce(&mut Config),
    serve: impl FnOnce(&mut ServerConfig),
) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record");
    std::fs::create_dir_all(&record).expect("record dir");
    let script: Script = serde_json::from_str(aai_live::demo::SCRIPT).expect("script");
    let emu = common::start(EmulatorConfig {
        record_dir: Some(record.clone()),
        script: Some(Arc::new(script)),
        ..emulator
    })
    .await;
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).expect("key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let mut config = Config::default();
    config.provider.api_key.key_file = Some(key_file);
    config.provider.api_key.token_url = Some(emu.token_url().parse().expect("url"));
    config.session.begin_timeout = Duration::from_secs(5);
    config.session.terminate_timeout = Duration::from_secs(3);
    config.session.backoff_initial = Duration::from_millis(200);
    config.session.backoff_max = Duration::from_secs(1);
    tweak(&mut config);
    let mut server_config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), auth);
    server_config.web = true;
    server_config.client_limit = None;
    server_config.global_limit = None;
    server_config.refusal_limit = None;
    server_config.browser = BrowserSettings::from_config(&config);
    serve(&mut server_config);
    let upstream = server::serve_cli::upstream_provider(&config).expect("upstream");
    let server = server::start(server_config, upstream).await.expect("serve");
    Rig {
        emu,
        server,
        _dir: dir,
        record,
    }
}

/// Where screenshots go: target/browser/.
fn screenshot_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    target.join("browser").join(name)
}

/// The events the page's client emitted so far.
async fn events(page: &Page<'_>) -> Vec<Value> {
    let text = page
        .eval("JSON.stringify(window.__aaiEvents || [])")
        .await
        .expect("events");
    serde_json::from_str(text.as_str().expect("string")).expect("events JSON")
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// The finals on the page, in the order shown (text only, the time stripped).
async fn dom_finals(page: &Page<'_>) -> Vec<String> {
    let v = page
        .eval("[...document.querySelectorAll('#finals li')].map((li) => li.lastChild.textContent)")
        .await
        .expect("finals");
    v.as_array()
        .expect("array")
        .iter()
        .map(|t| t.as_str().expect("text").to_owned())
        .collect()
}

/// Across sessions, no stretch of the stream longer than one chunk reached no session, and
/// where sessions overlap (a replay) they received the very same samples.
fn assert_no_gaps(parts: &[(u64, u64, Vec<i16>)], sent_to: u64) {
    assert!(!parts.is_empty(), "no audio received");
    assert_eq!(
        parts[0].1, 0,
        "streaming started with the first captured sample"
    );
    let mut covered_to = 0_u64;
    let mut stream: Vec<i16> = Vec::new();
    for (generation, base, samples) in parts {
        assert!(
            *base <= covered_to + CHUNK,
            "a hole between sessions: samples {covered_to}..{base} reached no session \
             (generation {generation})"
        );
        let overlap_end = covered_to.min(base + samples.len() as u64);
        if *base < overlap_end {
            let (from, to) = (*base as usize, overlap_end as usize);
            let mismatched = (from..to)
                .filter(|&i| stream[i] != samples[i - from])
                .count();
            assert_eq!(
                mismatched, 0,
                "generation {generation} got different audio at {from}..{to} than the session \
                 before it"
            );
        }
        let end = base + samples.len() as u64;
        if end > covered_to {
            stream.resize(end as usize, 0);
            let from = covered_to.max(*base) as usize;
            stream[from..end as usize].copy_from_slice(&samples[from - *base as usize..]);
            covered_to = end;
        }
    }
    assert!(
        covered_to + CHUNK >= sent_to,
        "the stream reached the service up to {covered_to} of {sent_to} samples"
    );
}

/// Click Start and wait until the client streams.
async fn start_streaming(page: &Page<'_>) {
    page.eval("document.getElementById('toggle').click()")
        .await
        .expect("click");
    page.wait_for(
        "(window.__aaiEvents || []).some((e) => e.event === 'state' && e.state === 'streaming')",
        Duration::from_secs(20),
    )
    .await
    .unwrap_or_else(|e| panic!("not streaming: {e}"));
}

/// Click Stop and return the client's `finished` event.
async fn stop_streaming(page: &Page<'_>) -> Value {
    page.eval("document.getElementById('toggle').click()")
        .await
        .expect("click");
    page.wait_for(
        "(window.__aaiEvents || []).some((e) => e.event === 'finished')",
        Duration::from_secs(20),
    )
    .await
    .unwrap_or_else(|e| panic!("no finished event: {e}"));
    let all = events(page).await;
    of_kind(&all, "finished")[0].clone()
}

fn assert_ledger(finished: &Value) {
    let n = |k: &str| {
        finished[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {finished}"))
    };
    let (captured, sent, lost) = (
        n("audio_captured_samples"),
        n("audio_sent_samples"),
        n("audio_lost_samples"),
    );
    assert_eq!(captured, sent + lost, "captured = sent + lost: {finished}");
    assert!(
        sent as f64 >= 0.98 * captured as f64,
        "at least 98 % of the captured audio was sent: {finished}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_streams_the_demo_across_rotations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = demo_wav(dir.path(), 2);
    let Some(browser) = Chromium::launch(&LaunchOptions {
        fake_audio: Some(wav),
    })
    .await
    else {
        return;
    };
    // 20 s sessions under the default 30 s `rotation_lead`: the page rotates at half of each
    // session (the rule it gets from /config.json), never in a loop.
    let rig = rig(
        EmulatorConfig {
            max_session_duration: Some(Duration::from_secs(20)),
            ..common::config()
        },
        Auth::None,
        |_| {},
    )
    .await;
    let started = Instant::now();
    let page = browser.new_page(HOOK).await;
    page.goto(&format!("{}/", rig.server.base_url())).await;
    start_streaming(&page).await;
    // 48 s of audio: wait for the last sentence (or give up after 80 s).
    let sentences = demo_sentences();
    let want = sentences.len() * 2;
    let mut shot = false;
    let deadline = Instant::now() + Duration::from_secs(80);
    while Instant::now() < deadline {
        let finals = dom_finals(&page).await;
        let speaking = page
            .eval("document.getElementById('partial').textContent.split(' ').length >= 3")
            .await
            .expect("partial");
        if !shot && finals.len() >= 3 && speaking == Value::Bool(true) {
            page.screenshot(&screenshot_path("page-streaming.png"))
                .await;
            shot = true;
        }
        if finals.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let finished = stop_streaming(&page).await;
    let all = events(&page).await;
    let console = browser.console();
    eprintln!(
        "took {:?}; console:\n{}",
        started.elapsed(),
        console.join("\n")
    );
    let finals = dom_finals(&page).await;
    let expected: Vec<String> = sentences.iter().chain(sentences.iter()).cloned().collect();
    assert_eq!(finals, expected, "events: {all:#?}");
    let rotations = of_kind(&all, "rotation");
    assert!(rotations.len() >= 2, "two rotations: {all:#?}");
    // It used to open 47 sessions in 50 s, most with no audio.
    let sessions = rig.emu.sessions().len();
    assert!(sessions <= 8, "{sessions} sessions opened in about 50 s");
    let tokens = rig.emu.stats().tokens.minted;
    assert!(tokens <= 9, "{tokens} tokens minted");
    // Latency as the terminal client measures it: from sending a turn's last word to its final.
    for f in of_kind(&all, "final") {
        let latency = f["latency_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("latency in {f}"));
        assert!(latency < 5_000, "{f}");
    }
    assert!(finished["latency_p95_ms"].is_u64(), "{finished}");
    assert!(of_kind(&all, "lost").is_empty(), "{all:#?}");
    assert_ledger(&finished);
    let sent = finished["audio_sent_samples"].as_u64().unwrap_or_default();
    let parts = common::sessions_received(&rig.record, &all, None);
    report(&parts, &rotations);
    assert_eq!(
        parts.len(),
        rotations.len() + 1,
        "one recording per session"
    );
    assert_no_gaps(&parts, sent);
    for s in rig.emu.sessions() {
        assert_eq!(s.client_close_code, Some(1000), "{s:?}");
        assert!(s.terminated_by_client, "{s:?}");
    }
    assert_no_policy_violations(&console);
    browser.close().await;
    rig.server.shutdown().await;
    rig.emu.shutdown().await;
}

/// What reached each session, for the test's output.
fn report(parts: &[(u64, u64, Vec<i16>)], notes: &[&Value]) {
    for (generation, base, samples) in parts {
        eprintln!(
            "generation {generation}: samples {base}..{} ({:.2} s)",
            base + samples.len() as u64,
            samples.len() as f64 / 16_000.0
        );
    }
    for n in notes {
        eprintln!("{n}");
    }
}

fn assert_no_policy_violations(console: &[String]) {
    assert!(
        !console
            .iter()
            .any(|l| l.contains("Content Security Policy") || l.starts_with("exception")),
        "{console:#?}"
    );
}

/// A credential typed into the page's form (kept in sessionStorage), then Start again.
async fn enter_credential(page: &Page<'_>, credential: &str) {
    page.eval("document.getElementById('toggle').click()")
        .await
        .expect("click");
    page.wait_for(
        "!document.getElementById('auth').hidden",
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| panic!("the page does not ask for a credential: {e}"));
    page.eval(&format!(
        "document.getElementById('credential').value = {}; \
         document.getElementById('auth').requestSubmit()",
        serde_json::to_string(credential).expect("json")
    ))
    .await
    .expect("submit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3008_close_and_a_tcp_drop_are_survived_without_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = demo_wav(dir.path(), 1);
    let Some(browser) = Chromium::launch(&LaunchOptions {
        fake_audio: Some(wav),
    })
    .await
    else {
        return;
    };
    let credentials = Credentials::parse(
        &format!("page:{}\n", server::hash_credential(CREDENTIAL)),
        "test",
    )
    .expect("credentials");
    let rig = rig(common::config(), Auth::Bearer(credentials), |_| {}).await;
    // The first session ends with the service's expiry close 5 s after Begin...
    rig.emu.add_fault(FaultRule {
        fault: Fault::Close {
            code: 3008,
            reason: Some(reasons::SESSION_EXPIRED.into()),
            at_ms: 5000,
        },
        count: 1,
    });
    let page = browser.new_page(HOOK).await;
    page.goto(&format!("{}/", rig.server.base_url())).await;
    enter_credential(&page, CREDENTIAL).await;
    page.wait_for(
        "(window.__aaiEvents || []).some((e) => e.event === 'state' && e.state === 'streaming')",
        Duration::from_secs(20),
    )
    .await
    .unwrap_or_else(|e| panic!("not streaming: {e}"));
    // ...and the second loses its TCP connection 5 s after its Begin.
    rig.emu.add_fault("drop@5s".parse().expect("fault"));
    let sentences = demo_sentences();
    let deadline = Instant::now() + Duration::from_secs(50);
    while Instant::now() < deadline && dom_finals(&page).await.len() < sentences.len() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let finished = stop_streaming(&page).await;
    let all = events(&page).await;
    let console = browser.console();
    let lost = of_kind(&all, "lost");
    let reconnected = of_kind(&all, "reconnected");
    let parts = common::sessions_received(&rig.record, &all, None);
    report(&parts, &[lost.clone(), reconnected.clone()].concat());
    assert_eq!(dom_finals(&page).await, sentences, "events: {all:#?}");
    let classes: Vec<&str> = lost.iter().filter_map(|l| l["class"].as_str()).collect();
    assert_eq!(classes, ["session_expired", "transient"], "{lost:#?}");
    assert_eq!(lost[0]["code"], 3008);
    assert!(
        lost[1].get("code").is_none(),
        "a drop has no close code: {lost:#?}"
    );
    assert_eq!(reconnected.len(), 2, "{all:#?}");
    assert_eq!(finished["reconnects"], 2);
    assert_ledger(&finished);
    let sent = finished["audio_sent_samples"].as_u64().unwrap_or_default();
    assert_eq!(parts.len(), 3, "three sessions");
    assert_no_gaps(&parts, sent);
    // The page said what happened, in words.
    let close = page
        .eval("document.getElementById('close').textContent")
        .await
        .expect("close");
    assert!(
        close.as_str().is_some_and(|t| t.contains("reconnecting")),
        "{close}"
    );
    assert_no_policy_violations(&console);
    browser.close().await;
    rig.server.shutdown().await;
    rig.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_stops_with_a_clear_message_and_no_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = demo_wav(dir.path(), 1);
    let Some(browser) = Chromium::launch(&LaunchOptions {
        fake_audio: Some(wav),
    })
    .await
    else {
        return;
    };
    let credentials = Credentials::parse(
        &format!("page:{}\n", server::hash_credential(CREDENTIAL)),
        "test",
    )
    .expect("credentials");
    let rig = rig(common::config(), Auth::Bearer(credentials), |_| {}).await;
    let page = browser.new_page(HOOK).await;
    page.goto(&format!("{}/", rig.server.base_url())).await;
    enter_credential(&page, "not-the-credential").await;
    page.wait_for(
        "(window.__aaiEvents || []).some((e) => e.event === 'finished')",
        Duration::from_secs(20),
    )
    .await
    .unwrap_or_else(|e| panic!("the client did not stop: {e}"));
    // Time for a retry loop to show itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = events(&page).await;
    let message = page
        .eval("document.getElementById('message').textContent")
        .await
        .expect("message");
    let message = message.as_str().expect("text");
    assert!(
        message.contains("HTTP 401") && message.contains("credential"),
        "{message}"
    );
    assert_eq!(of_kind(&all, "token_failed").len(), 1, "{all:#?}");
    let states: Vec<&str> = of_kind(&all, "state")
        .iter()
        .filter_map(|s| s["state"].as_str())
        .collect();
    assert_eq!(states, ["minting", "failed"], "{all:#?}");
    assert!(rig.emu.sessions().is_empty(), "no session was opened");
    let metrics = rig.server.metrics_text();
    assert!(
        metrics.contains("aai_live_serve_requests_denied_total{reason=\"unauthenticated\"} 1"),
        "one refused request: {metrics}"
    );
    // The refused credential is forgotten, and the page asks again.
    let asked = page
        .eval(
            "sessionStorage.getItem('aai-live-credential') === null && \
             !document.getElementById('auth').hidden",
        )
        .await
        .expect("eval");
    assert_eq!(asked, Value::Bool(true));
    assert_no_policy_violations(&browser.console());
    browser.close().await;
    rig.server.shutdown().await;
    rig.emu.shutdown().await;
}

/// A page of another origin (its own port) that embeds the module from `serve`, under the
/// Content-Security-Policy docs/browser.md recommends for such a page. Served on `listener`.
fn embedding_page(
    listener: tokio::net::TcpListener,
    serve_origin: &str,
    ws_origin: &str,
) -> tokio::task::JoinHandle<()> {
    use axum::http::header;
    use axum::routing::get;
    let csp = format!(
        "default-src 'none'; script-src 'self' {serve_origin}; connect-src {serve_origin} \
         {ws_origin}; base-uri 'none'"
    );
    let html = "<!doctype html><meta charset=\"utf-8\"><title>embed</title>\
                <script type=\"module\" src=\"/embed.js\"></script><ol id=\"finals\"></ol>";
    let script = format!(
        r#"import {{ AaiLiveClient }} from "{serve_origin}/aai-live-client.js";
const client = new AaiLiveClient({{ credential: "{CREDENTIAL}" }});
window.aaiLive = client;
client.addEventListener("final", (e) => {{
  const li = document.createElement("li");
  li.textContent = e.detail.text;
  document.getElementById("finals").append(li);
}});
window.startStreaming = () => client.start();
window.stopStreaming = () => client.stop();
"#
    );
    let app = axum::Router::new()
        .route(
            "/",
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
                        (header::CONTENT_SECURITY_POLICY, csp),
                    ],
                    html,
                )
            }),
        )
        .route(
            "/embed.js",
            get(move || async move { ([(header::CONTENT_TYPE, "text/javascript")], script) }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_streams_from_a_page_on_another_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = demo_wav(dir.path(), 1);
    let Some(browser) = Chromium::launch(&LaunchOptions {
        fake_audio: Some(wav),
    })
    .await
    else {
        return;
    };
    // The page's origin must be allowed by serve, and serve's origin written into the page:
    // the page's port first, then serve, then the page.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let page_origin = format!("http://{}", listener.local_addr().expect("addr"));
    let credentials = Credentials::parse(
        &format!("page:{}\n", server::hash_credential(CREDENTIAL)),
        "test",
    )
    .expect("credentials");
    let rig = rig_with(
        common::config(),
        Auth::Bearer(credentials),
        |_| {},
        |s| {
            s.web = false;
            s.cors_origins = vec![page_origin.clone()];
        },
    )
    .await;
    let serve_origin = rig.server.base_url();
    let ws_origin = rig.emu.ws_url().trim_end_matches("/v3/ws").to_owned();
    let page_task = embedding_page(listener, &serve_origin, &ws_origin);
    let page = browser.new_page(HOOK).await;
    page.goto(&format!("{page_origin}/")).await;
    page.wait_for(
        "typeof window.startStreaming === 'function'",
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| panic!("the module did not load: {e}; {:#?}", browser.console()));
    page.eval("window.startStreaming()").await.expect("start");
    page.wait_for(
        "document.querySelectorAll('#finals li').length >= 2",
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("no finals: {e}; {:#?}", browser.console()));
    page.eval("window.stopStreaming()").await.expect("stop");
    let all = events(&page).await;
    let finished = of_kind(&all, "finished");
    assert_eq!(finished.len(), 1, "{all:#?}");
    assert_ledger(finished[0]);
    let finals = page
        .eval("[...document.querySelectorAll('#finals li')].map((li) => li.textContent)")
        .await
        .expect("finals");
    let finals: Vec<&str> = finals
        .as_array()
        .expect("array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let sentences = demo_sentences();
    assert_eq!(finals, sentences[..finals.len()], "{all:#?}");
    assert_no_policy_violations(&browser.console());
    page_task.abort();
    browser.close().await;
    rig.server.shutdown().await;
    rig.emu.shutdown().await;
}

/// A page of another site cannot spend an unauthenticated loopback `serve`'s budget: `<img src>`
/// and `fetch(…, {mode: "no-cors"})` GETs carry no `Origin`, so the `Origin` rule never saw them
/// (30 tokens minted before a 429, measured); the browser's `Sec-Fetch-*` headers now refuse
/// them. The page runs on `localhost`, `serve` on 127.0.0.1: another site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_site_mints_nothing_from_an_open_loopback_server() {
    use axum::http::header;
    use axum::routing::get;
    let Some(browser) = Chromium::launch(&LaunchOptions::default()).await else {
        return;
    };
    let rig = rig_with(common::config(), Auth::None, |_| {}, |s| s.web = false).await;
    let serve_origin = rig.server.base_url();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let page_origin = format!(
        "http://localhost:{}",
        listener.local_addr().expect("addr").port()
    );
    let html = format!(
        r#"<!doctype html><meta charset="utf-8"><title>elsewhere</title><script>
window.sent = 0;
const loads = [];
for (let i = 0; i < 10; i++) {{
  loads.push(new Promise((done) => {{
    const img = new Image();
    img.onload = img.onerror = done;
    img.src = "{serve_origin}/token?img=" + i;
  }}));
  loads.push(fetch("{serve_origin}/token?fetch=" + i, {{ mode: "no-cors" }}).catch(() => {{}}));
}}
Promise.all(loads).then(() => {{ window.sent = loads.length; }});
</script>"#
    );
    let app = axum::Router::new().route(
        "/",
        get(move || async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html) }),
    );
    let page_task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let page = browser.new_page("").await;
    page.goto(&format!("{page_origin}/")).await;
    page.wait_for("window.sent === 20", Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("the requests were not sent: {e}; {:#?}", browser.console()));
    let metrics = rig.server.metrics_text();
    assert_eq!(rig.server.minted(), 0, "{metrics}");
    let refused = metrics
        .lines()
        .find(|l| {
            l.starts_with("aai_live_serve_requests_denied_total{reason=\"forbidden_origin\"}")
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_default();
    assert!(refused >= 20, "{metrics}");
    // Plain requests (no Sec-Fetch-*, like curl) still get their token.
    let status = reqwest::get(rig.server.token_url())
        .await
        .expect("token")
        .status();
    assert_eq!(status, 200);
    page_task.abort();
    browser.close().await;
    rig.server.shutdown().await;
    rig.emu.shutdown().await;
}
