//! `aai-live explain CODE|TOPIC`: the troubleshooting page built into the binary, one section
//! (or a family) per topic; an unknown topic lists them all and exits 2.

mod common;

use std::process::Output;

use strum::IntoEnumIterator;

fn explain(topic: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_aai-live"))
        .args(["explain", topic])
        .env_remove("AAI_LIVE_CONFIG")
        .output()
        .expect("aai-live explain")
}

#[test]
fn a_close_code_prints_its_section_with_the_words_users_see() {
    let out = explain("3009");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("## `3009`"), "{text}");
    for part in [
        "**You see:**",
        "**Cause:**",
        "**Fix:**",
        "**Doctor step:** `begin`",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    // The exact words of src/protocol/close.rs.
    assert!(text.contains(aai_live::protocol::CloseClass::RateLimited.describe()));
    assert!(!text.contains("## `3008`"), "one section only: {text}");
}

#[test]
fn a_family_prints_every_member() {
    let text = String::from_utf8_lossy(&explain("1008").stdout).into_owned();
    for key in [
        "1008-token-used",
        "1008-token-expired",
        "1008-invalid-key",
        "1008-account",
    ] {
        assert!(text.contains(&format!("## `{key}`")), "{key}");
    }
    let text = String::from_utf8_lossy(&explain("401").stdout).into_owned();
    assert!(text.contains("## `token-401`") && text.contains("## `serve-401`"));
}

#[test]
fn every_diagnosis_can_be_explained_from_the_binary() {
    for d in aai_live::diagnosis::Diagnosis::iter() {
        let out = explain(d.section());
        assert_eq!(out.status.code(), Some(0), "{d:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with(&format!("## `{}`", d.section())),
            "{d:?}: {text}"
        );
    }
}

#[test]
fn an_unknown_topic_lists_the_topics_and_exits_2() {
    let out = explain("9999");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no troubleshooting section for \"9999\""),
        "{err}"
    );
    for key in ["3009", "token-401", "proxy", "clock-skew"] {
        assert!(err.contains(key), "{key}: {err}");
    }
}

/// The sentences the page quotes are the ones the code builds (src/strings.rs and
/// src/protocol/close.rs), whitespace aside and with `N` for the connection number.
#[test]
fn the_page_quotes_the_code_s_own_words() {
    use aai_live::protocol::CloseClass as C;
    use aai_live::protocol::close::reasons;
    use aai_live::strings;
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let lost = |class: C, code: u16, reason: &str| {
        strings::lost(1, class, Some(code), reason, class.advice())
            .replace("connection 1", "connection N")
    };
    let cases = [
        (
            "3009",
            lost(C::RateLimited, 3009, reasons::TOO_MANY_SESSIONS),
        ),
        ("3009", C::RateLimited.remedy().to_owned()),
        (
            "3008",
            lost(C::SessionExpired, 3008, reasons::SESSION_EXPIRED),
        ),
        ("3005", lost(C::Transient, 3005, reasons::SESSION_CANCELLED)),
        (
            "1008-token-used",
            lost(C::TokenRejected, 1008, reasons::TOKEN_USED),
        ),
        (
            "1008-token-expired",
            lost(C::TokenRejected, 1008, reasons::TOKEN_EXPIRED),
        ),
        (
            "1008-too-many-sessions",
            lost(C::RateLimited, 1008, reasons::TOO_MANY_SESSIONS),
        ),
        ("1008-account", C::Fatal.remedy().to_owned()),
        ("1009", C::ClientBug.remedy().to_owned()),
        (
            "1000",
            strings::terminated(1, 42, 42).replace("connection 1", "connection N"),
        ),
        (
            "no-termination",
            strings::drain_timed_out(1).replace("connection 1", "connection N"),
        ),
        ("transcript-dir", strings::NO_TRANSCRIPT_TITLE.to_owned()),
        ("transcript-dir", strings::no_transcript_hint("space")),
        ("no-microphone", strings::NO_AUDIO_TITLE.to_owned()),
        ("local", strings::CRASH_TITLE.to_owned()),
        ("alsa", strings::audio_fell_behind(7).replace('7', "N")),
        ("no-audio", strings::AUDIO_ENDED.to_owned()),
        ("local", strings::AUDIO_TASK_DIED.to_owned()),
        ("local", strings::CONNECTION_TASK_DIED.to_owned()),
        (
            "clock-skew",
            strings::clock_skew(30_000, std::time::Duration::from_secs(3600)),
        ),
        (
            "clock-skew",
            strings::implausible_expiry(
                0,
                -1_800_000_000_000,
                std::time::Duration::from_secs(3600),
            ),
        ),
    ];
    for (key, sentence) in cases {
        let section = aai_live::diagnosis::section(key).expect("section");
        assert!(
            flat(section.text).contains(&flat(&sentence)),
            "section {key} does not quote {sentence:?}"
        );
    }
}

/// The headless runner's failure line names the section that explains it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_headless_run_names_its_section() {
    let emu = common::start(common::config()).await;
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = common::aai_live(home.path());
    cmd.args([
        "run",
        "--headless",
        "--input",
        "test:silence",
        "--duration",
        "10s",
    ])
    .env("ASSEMBLYAI_API_KEY", "wrong-key")
    .env("AAI_LIVE__PROVIDER__API_KEY__TOKEN_URL", emu.token_url())
    .env("AAI_LIVE__STREAMING__URL", emu.ws_url());
    let out = cmd.output().await.expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("(see `aai-live explain token-401`)"),
        "{stderr}"
    );
    emu.shutdown().await;
}
