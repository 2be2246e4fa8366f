//! The live feed's test helpers: `aai-live demo --headless --feed 127.0.0.1:0` as a child (the
//! bundled recording through the in-process emulator, its word script), the feed's address read
//! from its stderr line, and a Server-Sent Events reader.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// A demo run with a feed.
pub struct Run {
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Run {
    /// Start `aai-live demo --headless --feed 127.0.0.1:0` with `args`, and wait for the feed's
    /// address on stderr.
    pub async fn start(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = crate::common::aai_live(home);
        cmd.args(["demo", "--headless", "--feed", "127.0.0.1:0"])
            .args(args);
        for (name, value) in env {
            cmd.env(name, value);
        }
        let mut child = cmd.spawn().expect("aai-live starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = tokio::sync::oneshot::channel();
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let kept = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut url_tx = Some(url_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("aai-live: feed listening on ")
                    && let Some(tx) = url_tx.take()
                {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(url);
                }
                kept.lock().expect("lock").push(line);
            }
        });
        let url = tokio::time::timeout(Duration::from_secs(20), url_rx)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no feed address on stderr: {:?}",
                    stderr.lock().expect("lock")
                )
            })
            .expect("the feed's address");
        Self { child, url, stderr }
    }

    /// Wait for the end; stdout's lines (the NDJSON events) and the exit status.
    pub async fn finish(self) -> (Vec<String>, Option<i32>, String) {
        let output = tokio::time::timeout(Duration::from_secs(60), self.child.wait_with_output())
            .await
            .expect("the run ends")
            .expect("output");
        let stdout = String::from_utf8(output.stdout).expect("utf-8");
        let stderr = self.stderr.lock().expect("lock").join("\n");
        (
            stdout.lines().map(str::to_owned).collect(),
            output.status.code(),
            stderr,
        )
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
}

/// Reads `/events` (or any SSE answer) event by event.
pub struct Sse {
    pub response: reqwest::Response,
    /// Bytes: a chunk may end inside a character.
    buf: Vec<u8>,
}

impl Sse {
    /// `GET url` with `headers`; panics unless the answer is 200.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = reqwest::Client::new().get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("GET /events");
        assert_eq!(response.status(), 200, "{url}");
        Self {
            response,
            buf: Vec::new(),
        }
    }

    /// The next event; `None` when the stream ends. Comments (keep-alives) are skipped.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let bytes: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8(bytes).expect("utf-8 events");
                let mut event = SseEvent {
                    id: None,
                    event: "message".to_owned(),
                    data: String::new(),
                };
                let mut fields = 0;
                for line in block.lines() {
                    let (name, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match name {
                        "id" => event.id = Some(value.parse().expect("a numeric id")),
                        "event" => value.clone_into(&mut event.event),
                        "data" => event.data.push_str(value),
                        _ => continue,
                    }
                    fields += 1;
                }
                if fields > 0 {
                    return Some(event);
                }
                continue;
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                _ => return None,
            }
        }
    }
}
