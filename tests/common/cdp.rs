//! A small Chrome DevTools Protocol client for the browser tests: Debian's `chromium` (`make
//! deps` installs it), headless, with a fresh profile and a fake microphone fed from a WAV file,
//! driven over the protocol's WebSocket with the tokio-tungstenite the crate already has (no CDP
//! crate: build time on two cores matters, and the tests need five methods).
//!
//! Without `chromium` (or the binary `AAI_LIVE_CHROMIUM` names), [`Chromium::launch`] prints why
//! and returns `None`, so a developer without it skips the browser tests; with `CI` set (to
//! anything but `false` or `0`) it panics instead, so CI cannot pass by skipping them.
//!
//! Include it with `#[path = "common/cdp.rs"] mod cdp;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long Chromium has to say where its DevTools endpoint is.
const START_WITHIN: Duration = Duration::from_secs(30);
/// How long one protocol call may take (an `awaitPromise` evaluation included).
const CALL_WITHIN: Duration = Duration::from_secs(60);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The browser binary: `AAI_LIVE_CHROMIUM`, else `chromium` on PATH.
fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AAI_LIVE_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}

/// Whether `node` can be run; otherwise the skip message (or, on CI, a panic). For the tests
/// of the client's pure logic, which need Node rather than Chromium.
pub fn node_available() -> bool {
    let found = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !ci(),
            "node is not installed, and CI is set: the browser client's tests must run there \
             (make deps installs it: apt-get install nodejs)"
        );
        eprintln!(
            "SKIPPED: node is not installed (apt-get install nodejs, or make deps); the browser \
             client's logic tests did not run"
        );
    }
    found
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A protocol event: the session it came from (`None`: the browser), its method and params.
#[derive(Debug, Clone)]
pub struct Event {
    pub session: Option<String>,
    pub method: String,
    pub params: Value,
}

/// A running headless Chromium and its DevTools connection. Dropping it kills the browser's
/// process group (every process it started), if [`Chromium::close`] was not called.
pub struct Chromium {
    child: tokio::process::Child,
    pid: Option<u32>,
    _profile: tempfile::TempDir,
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    events: Arc<Mutex<Vec<Event>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    next_id: AtomicU64,
}

/// What the browser is started with.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// The fake microphone plays this WAV file once (then silence).
    pub fake_audio: Option<PathBuf>,
}

impl Chromium {
    /// Start Chromium, or `None` (with a message) when it is not installed and `CI` is not set.
    pub async fn launch(options: &LaunchOptions) -> Option<Self> {
        let Some(binary) = binary() else {
            assert!(
                !ci(),
                "chromium is not installed, and CI is set: the browser tests must run there \
                 (make deps installs it: apt-get install chromium)"
            );
            eprintln!(
                "SKIPPED: chromium is not installed (apt-get install chromium, or make deps); the \
                 browser tests did not run"
            );
            return None;
        };
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = command(&binary, options, profile.path())
            .spawn()
            .expect("chromium starts");
        let pid = child.id();
        let (url_rx, stderr) = watch_stderr(child.stderr.take().expect("stderr"));
        let Ok(Ok(url)) = tokio::time::timeout(START_WITHIN, url_rx).await else {
            panic!(
                "chromium did not print its DevTools address within {START_WITHIN:?}; stderr:\n{}",
                stderr.lock().expect("lock").join("\n")
            );
        };
        let (out, pending, events) = connect(&url).await;
        Some(Self {
            child,
            pid,
            _profile: profile,
            out,
            pending,
            events,
            stderr,
            next_id: AtomicU64::new(1),
        })
    }

    /// Call `method` (on a page's `session`, or the browser's).
    pub async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = Value::from(session);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("lock").insert(id, tx);
        self.out
            .send(Message::Text(message.to_string().into()))
            .map_err(|_| "the DevTools connection is closed".to_owned())?;
        match tokio::time::timeout(CALL_WITHIN, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(format!("{method}: no reply (the browser went away)")),
            Err(_) => Err(format!("{method}: no reply within {CALL_WITHIN:?}")),
        }
    }

    /// A new tab at `about:blank`, with the page, runtime and log domains on; `init` runs in
    /// every document before its own scripts (outside the page's Content-Security-Policy).
    pub async fn new_page(&self, init: &str) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await
            .expect("createTarget");
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await
            .expect("attachToTarget");
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        let page = Page {
            browser: self,
            session,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await.expect(domain);
        }
        if !init.is_empty() {
            page.call(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": init }),
            )
            .await
            .expect("init script");
        }
        page
    }

    /// Everything the browser reported so far (console messages, exceptions, log entries...).
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("lock").clone()
    }

    /// The browser's stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// Console messages, exceptions and log entries as lines, for assertions and failure output.
    pub fn console(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter_map(|e| match e.method.as_str() {
                "Runtime.consoleAPICalled" => Some(format!(
                    "console.{}: {}",
                    e.params["type"].as_str().unwrap_or("?"),
                    e.params["args"]
                        .as_array()
                        .map(|args| args
                            .iter()
                            .map(|a| a["value"]
                                .as_str()
                                .map_or_else(|| a["value"].to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(" "))
                        .unwrap_or_default()
                )),
                "Runtime.exceptionThrown" => Some(format!(
                    "exception: {}",
                    e.params["exceptionDetails"]["exception"]["description"]
                        .as_str()
                        .or_else(|| e.params["exceptionDetails"]["text"].as_str())
                        .unwrap_or("?")
                )),
                "Log.entryAdded" => Some(format!(
                    "log.{} ({}): {}",
                    e.params["entry"]["level"].as_str().unwrap_or("?"),
                    e.params["entry"]["source"].as_str().unwrap_or("?"),
                    e.params["entry"]["text"].as_str().unwrap_or("?")
                )),
                _ => None,
            })
            .collect()
    }

    /// Close the browser (all its processes) and wait for it, bounded.
    pub async fn close(mut self) {
        let _ = self.call(None, "Browser.close", json!({})).await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.kill_group();
        }
    }

    fn kill_group(&mut self) {
        if let Some(pid) = self.pid.take() {
            // The process group this browser was started in (`process_group(0)`): its own id.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_group();
        }
    }
}

/// The browser's command line: headless, a fresh profile, a fake microphone, DevTools on a free
/// port, in a process group of its own.
fn command(binary: &Path, options: &LaunchOptions, profile: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args([
        "--headless",
        // Tests run as root in containers; Chromium's sandbox needs user namespaces.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-quic",
        "--mute-audio",
        "--window-size=960,1000",
        // Timers of a page in the background are not throttled (the test's page is the only one,
        // but headless Chromium may still count it as hidden).
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--remote-debugging-port=0",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    if let Some(wav) = &options.fake_audio {
        cmd.arg(format!(
            "--use-file-for-fake-audio-capture={}%noloop",
            wav.display()
        ));
    }
    cmd.arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so that the renderer, GPU and utility processes it starts can
        // be ended with it.
        .process_group(0);
    cmd
}

/// Read the browser's stderr until it ends: the DevTools address when it is printed, and the
/// first 2000 lines kept for failure messages.
fn watch_stderr(
    pipe: tokio::process::ChildStderr,
) -> (oneshot::Receiver<String>, Arc<Mutex<Vec<String>>>) {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (url_tx, url_rx) = oneshot::channel();
    let lines_kept = Arc::clone(&kept);
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        let mut url_tx = Some(url_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line.strip_prefix("DevTools listening on ")
                && let Some(tx) = url_tx.take()
            {
                let _ = tx.send(url.trim().to_owned());
            }
            let mut kept = lines_kept.lock().expect("lock");
            if kept.len() < 2000 {
                kept.push(line);
            }
        }
    });
    (url_rx, kept)
}

/// Connect to the DevTools endpoint: a writer task for what is sent, a reader task that hands
/// replies to their callers and keeps events.
async fn connect(
    url: &str,
) -> (
    mpsc::UnboundedSender<Message>,
    Pending,
    Arc<Mutex<Vec<Event>>>,
) {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("DevTools WebSocket");
    let (mut sink, mut stream) = ws.split();
    let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    let pending: Pending = Arc::default();
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let (replies, kept) = (Arc::clone(&pending), Arc::clone(&events));
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            if let Some(id) = value.get("id").and_then(Value::as_u64) {
                let reply = match value.get("error") {
                    Some(error) => Err(error.to_string()),
                    None => Ok(value.get("result").cloned().unwrap_or(Value::Null)),
                };
                if let Some(tx) = replies.lock().expect("lock").remove(&id) {
                    let _ = tx.send(reply);
                }
            } else if let Some(method) = value.get("method").and_then(Value::as_str) {
                kept.lock().expect("lock").push(Event {
                    session: value
                        .get("sessionId")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    method: method.to_owned(),
                    params: value.get("params").cloned().unwrap_or(Value::Null),
                });
            }
        }
        // The browser went away: fail whatever still waits.
        for (_, tx) in replies.lock().expect("lock").drain() {
            let _ = tx.send(Err("the DevTools connection closed".into()));
        }
    });
    (out, pending, events)
}

/// One tab.
pub struct Page<'a> {
    browser: &'a Chromium,
    session: String,
}

impl Page<'_> {
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.browser.call(Some(&self.session), method, params).await
    }

    /// Load `url` and wait until the document (and its module scripts) has loaded.
    pub async fn goto(&self, url: &str) {
        let reply = self
            .call("Page.navigate", json!({ "url": url }))
            .await
            .expect("navigate");
        assert!(
            reply.get("errorText").is_none(),
            "navigating to {url}: {reply}"
        );
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|e| panic!("{url} did not load: {e}"));
    }

    /// Evaluate `expression` in the page (awaiting a promise) and return its value as JSON.
    pub async fn eval(&self, expression: &str) -> Result<Value, String> {
        let reply = self
            .call(
                "Runtime.evaluate",
                json!({
                    "expression": expression,
                    "awaitPromise": true,
                    "returnByValue": true,
                    "userGesture": true,
                }),
            )
            .await?;
        if let Some(details) = reply.get("exceptionDetails") {
            return Err(details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("exception")
                .to_owned());
        }
        Ok(reply["result"]["value"].clone())
    }

    /// Poll `condition` (a JS expression) until it is true, every 100 ms, at most `limit`.
    pub async fn wait_for(&self, condition: &str, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.eval(condition).await {
                Ok(Value::Bool(true)) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                // Not yet, or not evaluable yet (the page is still loading).
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("`{condition}` still false after {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the viewport, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let reply = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": false }),
            )
            .await
            .expect("screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(reply["data"].as_str().expect("data"))
            .expect("base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}
