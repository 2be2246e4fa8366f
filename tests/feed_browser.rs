//! The feed's captions overlay (`/overlay`) in Debian's Chromium, headless, driven over the
//! DevTools protocol (tests/common/cdp.rs), following a scripted run: `aai-live demo --headless
//! --feed 127.0.0.1:0` (the bundled recording through the in-process emulator and its word
//! script). The page must show the run's finals, as the NDJSON has them, on a transparent
//! background, styled by its query string, under its Content-Security-Policy without a
//! violation.
//!
//! Real time (about 15 s), in the `browser` test group (.config/nextest.toml). Without
//! Chromium it is skipped with a message; with `CI` set a missing Chromium fails it.

#[path = "common/cdp.rs"]
mod cdp;
mod common;
#[path = "common/feed.rs"]
mod feed_support;

use std::time::Duration;

use cdp::{Chromium, LaunchOptions};
use feed_support::Run;
use serde_json::Value;

/// The finals' text, from the run's NDJSON.
fn finals(stdout: &[String]) -> Vec<String> {
    stdout
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|v| v["event"] == "final")
        .map(|v| v["text"].as_str().expect("text").to_owned())
        .collect()
}

const LINES: &str = "[...document.querySelectorAll('#lines li')].map((li) => li.textContent)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overlay_shows_the_finals_of_a_scripted_run() {
    let Some(browser) = Chromium::launch(&LaunchOptions::default()).await else {
        return;
    };
    let home = tempfile::tempdir().expect("home");
    let run = Run::start(home.path(), &["--duration", "12s"], &[]).await;
    let page = browser.new_page("").await;
    page.goto(&format!("{}/overlay?lines=5&size=40&position=top", run.url))
        .await;
    page.wait_for(
        "document.querySelectorAll('#lines li').length >= 1",
        Duration::from_secs(20),
    )
    .await
    .unwrap_or_else(|e| panic!("no caption: {e}; {:#?}", browser.console()));
    let (stdout, code, stderr) = run.finish().await;
    assert_eq!(code, Some(0), "{stderr}");
    let finals = finals(&stdout);
    assert!(finals.len() >= 2, "{finals:?}");
    // The last final reaches the page before the feed closes.
    let want = serde_json::to_string(&finals[finals.len().saturating_sub(5)..]).expect("json");
    if let Err(e) = page
        .wait_for(
            &format!("JSON.stringify({LINES}) === JSON.stringify({want})"),
            Duration::from_secs(5),
        )
        .await
    {
        let shown = page.eval(LINES).await;
        panic!("the overlay shows {shown:?}, not the finals {want}: {e}");
    }
    let look = page
        .eval(
            "({ background: getComputedStyle(document.body).backgroundColor, \
               size: getComputedStyle(document.body).fontSize, \
               position: document.body.dataset.position })",
        )
        .await
        .expect("styles");
    assert_eq!(
        look["background"], "rgba(0, 0, 0, 0)",
        "transparent: {look}"
    );
    assert_eq!(look["size"], "40px", "{look}");
    assert_eq!(look["position"], "top", "{look}");
    let console = browser.console().join("\n");
    assert!(
        !console.contains("Content Security Policy") && !console.contains("Uncaught"),
        "{console}"
    );
    browser.close().await;
}
