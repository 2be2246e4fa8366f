//! The binary's surface: `--version`, `--help`, `completions`, `config --print-default`.

use std::process::{Command, Output};

fn aai_live(args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aai-live"));
    cmd.args(args)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .env_remove("AAI_LIVE_CONFIG");
    for (key, _) in std::env::vars() {
        if key.starts_with("AAI_LIVE__") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run aai-live")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version() {
    let out = aai_live(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("aai-live {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_commands() {
    let out = aai_live(&["--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!("help", stdout(&out));
}

#[test]
fn help_of_doctor_and_explain() {
    let out = aai_live(&["doctor", "--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!("doctor_help", stdout(&out));
    let out = aai_live(&["explain", "--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!("explain_help", stdout(&out));
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_aai__live()"),
        ("zsh", "#compdef aai-live"),
        ("fish", "complete -c aai-live"),
    ] {
        let out = aai_live(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = stdout(&out);
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..text.len().min(200)]
        );
        assert!(text.contains("emulate"), "{shell} completes subcommands");
        assert!(
            text.contains("doctor") && text.contains("explain") && text.contains("keep-going"),
            "{shell} completes doctor and explain"
        );
    }
    let out = aai_live(&["completions", "powershell"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn print_default_is_the_embedded_file() {
    let out = aai_live(&["config", "--print-default"]);
    assert!(out.status.success());
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"))
        .expect("default.toml");
    assert_eq!(stdout(&out), file);
}

#[test]
fn config_check_defaults_and_a_bad_file() {
    let out = aai_live(&["config", "--check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("[provider]"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[streaming]\nsample_rat = 16000\n").expect("write");
    let out = aai_live(&["config", "--check", bad.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("streaming.sample_rat"), "{err}");
    assert!(err.contains("bad.toml"), "{err}");
    assert!(
        err.contains("sample_rate"),
        "suggests the nearest key: {err}"
    );
}
