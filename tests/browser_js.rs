//! The browser client's JavaScript under Node (Debian's `nodejs`; `make deps` installs it): its
//! unit tests (tests/web/client.test.mjs: resampler, chunker, replay buffer, ledger, one final
//! per turn, backoff; tests/web/client-session.test.mjs: the supervisor's ledger rows against a
//! fake WebSocket and token server; tests/web/machine.test.mjs: every row of the Rust machine's
//! scenario table, exported to tests/fixtures/machine-rows.json), and the proof that the
//! close-code rules are not written twice: Rust's `verdict` and the client's, fed the table
//! `serve` publishes (`/close-codes.json`), must agree (class and troubleshooting section) on
//! every documented close and on thousands of generated ones. And a token's fingerprint on the
//! page is the one `serve`'s access log shows.
//!
//! Without `node` these are skipped with a message; with `CI` set they fail.

#[path = "common/cdp.rs"]
mod cdp;

use std::path::{Path, PathBuf};
use std::process::Command;

use aai_live::protocol::close::{self, EXAMPLES, RULES, verdict};
use serde_json::Value;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The table as `serve` publishes it, written to `dir`.
fn table_file(dir: &Path) -> PathBuf {
    let path = dir.join("close-codes.json");
    std::fs::write(&path, close::table_json().to_string()).expect("table");
    path
}

/// `/config.json` as `serve` publishes it for a configuration with short timings (those of
/// tests/supervisor_ledger.rs) and the emulator's loopback streaming URL, written to `dir`.
fn config_file(dir: &Path) -> PathBuf {
    use std::time::Duration;
    let mut config = aai_live::config::Config::default();
    config.streaming.url = Some(url::Url::parse("ws://127.0.0.1:9/v3/ws").expect("url"));
    let s = &mut config.session;
    s.backoff_initial = Duration::from_millis(200);
    s.backoff_max = Duration::from_secs(1);
    s.rate_limit_backoff = Duration::from_secs(3);
    s.stall_timeout = Duration::from_secs(2);
    s.begin_timeout = Duration::from_secs(5);
    s.terminate_timeout = Duration::from_secs(1);
    let settings = aai_live::server::BrowserSettings::from_config(&config);
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        aai_live::server::web::config_json(&settings, false).to_string(),
    )
    .expect("config");
    path
}

#[test]
fn the_client_logic_tests_pass_under_node() {
    if !cdp::node_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let table = table_file(dir.path());
    let config = config_file(dir.path());
    let out = Command::new("node")
        .args([
            "--test",
            "tests/web/client.test.mjs",
            "tests/web/client-session.test.mjs",
            "tests/web/machine.test.mjs",
        ])
        .current_dir(manifest())
        .env("AAI_LIVE_CLOSE_CODES", &table)
        .env("AAI_LIVE_CONFIG_JSON", &config)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node --test failed:\n{stdout}\n{stderr}"
    );
    // Every test ran, the table's included: none skipped, none failed.
    assert!(
        stdout.contains("# fail 0") && stdout.contains("# skipped 0"),
        "{stdout}"
    );
}

/// Every word the rules look for, as written and in capitals.
fn rule_words() -> Vec<String> {
    let mut words: Vec<String> = RULES
        .iter()
        .flat_map(|r| r.all.iter().flat_map(|group| group.iter()))
        .flat_map(|w| [(*w).to_owned(), w.to_uppercase()])
        .collect();
    words.sort();
    words.dedup();
    words
}

/// The corpus: the documented closes, then every code of 1000-1015, 3000-3010 and 4000-4200
/// with no text, with each rule word (in the reason and in the Error text), with pairs of words
/// that together satisfy two-group rules, and with texts where only a non-ASCII letter makes a
/// word (which Rust's ASCII lower-casing does not fold, and JavaScript's `toLowerCase` would).
fn corpus() -> Vec<(Option<u16>, String, Option<String>)> {
    let mut out: Vec<(Option<u16>, String, Option<String>)> = EXAMPLES
        .iter()
        .map(|(code, reason, error, _, _)| (*code, (*reason).to_owned(), error.map(str::to_owned)))
        .collect();
    let words = rule_words();
    let mut texts: Vec<String> = vec![String::new()];
    texts.extend(words.iter().cloned());
    texts.extend(
        [
            "Temporary token expired",
            "temporary TOKEN already USED",
            "token invalid",
            "Session Expired: Maximum session duration exceeded",
            "Unauthorized Connection: Too many concurrent sessions",
            // The Kelvin sign (U+212A) lower-cases to "k" in JavaScript's toLowerCase only.
            "to\u{212A}en expired",
            "TO\u{212A}EN USED",
            // The capital I with a dot (U+0130) becomes "i̇" (two code points) in JavaScript.
            "\u{130}NACTIVITY",
            "session \u{130}dle",
            "ınactıve",
        ]
        .map(str::to_owned),
    );
    let codes = (1000..=1015).chain(3000..=3010).chain(4000..=4200);
    for code in codes {
        for text in &texts {
            out.push((Some(code), text.clone(), None));
            if !text.is_empty() {
                out.push((
                    Some(code),
                    close::LONG_REASON.to_owned(),
                    Some(text.clone()),
                ));
            }
        }
    }
    for text in &texts {
        out.push((None, text.clone(), None));
    }
    out
}

#[test]
fn rust_and_the_browser_client_classify_every_close_alike() {
    if !cdp::node_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let table = table_file(dir.path());
    let corpus = corpus();
    assert!(corpus.len() > 10_000, "{} closes", corpus.len());
    let corpus_file = dir.path().join("corpus.json");
    std::fs::write(&corpus_file, serde_json::to_string(&corpus).expect("json")).expect("corpus");
    let out = Command::new("node")
        .arg("tests/web/classify-corpus.mjs")
        .arg(&table)
        .arg(&corpus_file)
        .current_dir(manifest())
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js: Vec<Value> = serde_json::from_slice(&out.stdout).expect("verdicts from node");
    assert_eq!(js.len(), corpus.len());
    let mut disagreements = Vec::new();
    for ((code, reason, error), js_verdict) in corpus.iter().zip(&js) {
        let rust = verdict(*code, reason, error.as_deref());
        let rust_verdict = serde_json::json!({
            "class": rust.class,
            "explain": rust.diagnosis.section(),
        });
        if rust_verdict != *js_verdict {
            disagreements.push(format!(
                "code {code:?} reason {reason:?} error {error:?}: Rust {rust_verdict}, JS {js_verdict}"
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} closes classified differently:\n{}",
        disagreements.len(),
        corpus.len(),
        disagreements.join("\n")
    );
    // The documented closes also have the class and section the table test says.
    for ((code, reason, error, class, diagnosis), js_verdict) in EXAMPLES.iter().zip(&js) {
        assert_eq!(
            *js_verdict,
            serde_json::json!({"class": class, "explain": diagnosis.section()}),
            "code {code:?} reason {reason:?} error {error:?}"
        );
    }
}

#[test]
fn token_fingerprints_match_the_servers_log() {
    if !cdp::node_available() {
        return;
    }
    let tokens = [
        "AQICAHg+token/one==",
        "AQICAHgAbC/de+FgHi==",
        "",
        "\u{e9}t\u{e9} token",
    ];
    let module = url::Url::from_file_path(manifest().join("assets/web/aai-live-client.js"))
        .expect("file URL");
    let script = format!(
        "import {{ fingerprint }} from {};\n\
         process.stdout.write(JSON.stringify({}.map(fingerprint)));",
        serde_json::to_string(module.as_str()).expect("json"),
        serde_json::to_string(&tokens).expect("json")
    );
    let out = Command::new("node")
        .args(["--input-type=module", "-e", &script])
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js: Vec<String> = serde_json::from_slice(&out.stdout).expect("JSON");
    let rust: Vec<String> = tokens
        .iter()
        .map(|t| aai_live::secret::fingerprint(t))
        .collect();
    assert_eq!(js, rust);
}
