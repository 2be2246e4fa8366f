//! `aai-live demo` as a person runs it: inside tmux (a real terminal), keys sent with
//! `send-keys`, the screen read with `capture-pane`. Start/stop, mute, force endpoint, help and
//! quit, then the shell must be usable again (raw mode and the alternate screen left).
//!
//! Every wait polls the screen until the text appears, with a deadline; nothing sleeps to
//! synchronise. Skipped when tmux is not installed, except under CI (`make deps` installs it).

#[path = "support/demo.rs"]
mod demo_recording;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SENTENCE_ENDS: [&str; 5] = [
    "used once.",
    "they expire.",
    "is replayed.",
    "the way.",
    "your machine.",
];

struct Tmux {
    socket: String,
    home: tempfile::TempDir,
}

impl Tmux {
    /// A tmux server of its own (`name` keeps parallel tests apart) running an interactive bash.
    fn start(name: &str, width: u16, height: u16) -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "tmux is required under CI (make deps installs it)"
            );
            eprintln!("skipping: tmux is not installed");
            return None;
        }
        let tmux = Self {
            socket: format!("aai-live-test-{}-{name}", std::process::id()),
            home: tempfile::tempdir().expect("tempdir"),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "demo",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "bash",
            "--noprofile",
            "--norc",
        ]);
        assert!(out.status.success(), "tmux: {out:?}");
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> Output {
        let home = self.home.path();
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            // The server (started by the first command) passes this environment to the shell.
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("LANG", "C.UTF-8")
            .env("PS1", "test$ ")
            .env_remove("TMUX")
            .env_remove("AAI_LIVE_CONFIG")
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .output()
            .expect("tmux runs")
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "demo"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "send-keys: {out:?}");
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "demo"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Poll the screen until `ok` holds; panics with the screen after `within`.
    fn wait(&self, what: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for(&self, text: &str, within: Duration) -> String {
        self.wait(&format!("{text:?}"), within, |s| s.contains(text))
    }

    fn wait_gone(&self, text: &str, within: Duration) -> String {
        self.wait(&format!("{text:?} to go"), within, |s| !s.contains(text))
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.home.path().join("data/aai-live/transcripts")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn files_with(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn demo_in_tmux_start_pause_endpoint_help_quit() {
    let Some(tmux) = Tmux::start("keys", 100, 30) else {
        return;
    };
    let long = Duration::from_secs(40);
    let short = Duration::from_secs(10);
    tmux.wait_for("test$", short);
    let bin = env!("CARGO_BIN_EXE_aai-live");
    tmux.send(&[&format!("{bin} demo; echo SHELL-OK"), "Enter"]);

    // It starts streaming by itself, and says plainly that this is the offline emulator.
    let screen = tmux.wait_for("STREAMING", long);
    assert!(screen.contains("OFFLINE DEMO"), "{screen}");
    // The second header line (waited for: a capture can land mid-frame).
    tmux.wait_for("offline emulator at 127.0.0.1:", short);
    tmux.wait("a final turn", long, |s| {
        SENTENCE_ENDS.iter().any(|end| s.contains(end))
    });

    // Stop, then start again (a fresh supervisor).
    tmux.send(&["Space"]);
    tmux.wait_for("STOPPED", long);
    tmux.send(&["Space"]);
    tmux.wait_for("STREAMING", long);

    // Mute and unmute.
    tmux.send(&["p"]);
    tmux.wait_for("MUTED", short);
    tmux.send(&["p"]);
    tmux.wait_gone("MUTED", short);

    // Force the end of the turn.
    tmux.send(&["f"]);
    tmux.wait_for("asked the service to end the turn now", short);

    // Help overlay, from the live keymap; Esc closes it.
    tmux.send(&["?"]);
    tmux.wait_for("keys (rebind them", short);
    // The overlay's last line, so the capture is not taken while tmux is mid-frame.
    let help = tmux.wait_for("q/ctrl-c", short);
    assert!(help.contains("space/s"), "{help}");
    tmux.send(&["Escape"]);
    tmux.wait_gone("keys (rebind them", short);

    // Quit: stop, wait for the last turns, save, restore the terminal.
    tmux.send(&["q"]);
    let after = tmux.wait_for("SHELL-OK", long);
    assert!(
        !after.contains("OFFLINE DEMO"),
        "the alternate screen was left:\n{after}"
    );
    assert!(after.contains("aai-live: saved"), "{after}");

    // The shell works: echo and line editing are back (raw mode is off).
    tmux.send(&["echo typed-$((40+2))", "Enter"]);
    tmux.wait_for("typed-42", short);

    // Two runs: the first had finals (a journal and a text transcript, with the demo's words);
    // the second, a few seconds of mute and help, leaves files only if it got a final too.
    let journals = files_with(&tmux.data_dir(), "jsonl");
    let texts = files_with(&tmux.data_dir(), "txt");
    assert!(
        journals.len() == texts.len() && (1..=2).contains(&journals.len()),
        "{journals:?} {texts:?}"
    );
    let all: String = texts
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect();
    assert!(SENTENCE_ENDS.iter().any(|end| all.contains(end)), "{all}");
}

/// The pid of the shell's child (the dashboard), once it has one.
fn dashboard_pid(tmux: &Tmux) -> u32 {
    let out = tmux.run(&["display", "-p", "-t", "demo", "#{pane_pid}"]);
    let shell = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
        .expect("the shell's children");
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the dashboard runs under the shell")
}

#[test]
fn sigterm_quits_gracefully_and_restores_the_terminal() {
    let Some(tmux) = Tmux::start("term", 80, 24) else {
        return;
    };
    let long = Duration::from_secs(40);
    tmux.wait_for("test$", Duration::from_secs(10));
    let bin = env!("CARGO_BIN_EXE_aai-live");
    tmux.send(&[&format!("{bin} demo; echo EXIT-$?"), "Enter"]);
    // 80x24: the full layout at its smallest.
    tmux.wait_for("STREAMING", long);
    // Waited for one by one: a capture can land mid-frame.
    tmux.wait_for("lifetimes", Duration::from_secs(10));
    tmux.wait_for("transcript", Duration::from_secs(10));
    let pid = dashboard_pid(&tmux);
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let after = tmux.wait_for("EXIT-0", long);
    assert!(!after.contains("OFFLINE DEMO"), "{after}");
    tmux.send(&["echo typed-$((40+2))", "Enter"]);
    tmux.wait_for("typed-42", Duration::from_secs(10));
}

/// A journal's final texts, in order (JSON Lines, one final each).
fn journal_texts(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

fn plain(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .to_lowercase()
}

/// The newcomer's check, in a real terminal: run, stop (space), let the looping recording play
/// on for 6 s, start again, and the second run's finals are still the recording's sentences word
/// for word — not cut or split ("Tokens are minted once and." / "Machine."), as they were when a
/// restart's stream started the emulator's script at 0. Each run gets its own journal and text
/// export, and each line of the export is a sentence (the first of a run may be the end of one
/// already under way when it started, the last the start of one it stopped in).
#[test]
fn demo_stop_and_start_in_tmux_stays_word_perfect() {
    let Some(tmux) = Tmux::start("restart", 120, 40) else {
        return;
    };
    let long = Duration::from_secs(40);
    tmux.wait_for("test$", Duration::from_secs(10));
    let bin = env!("CARGO_BIN_EXE_aai-live");
    tmux.send(&[&format!("{bin} demo; echo SHELL-OK"), "Enter"]);
    tmux.wait_for("STREAMING", long);
    // The demo opens with the events pane and its guide line.
    tmux.wait_for("what you are seeing:", long);
    tmux.wait_for("╭ events", long);
    let journals = || {
        let mut j = files_with(&tmux.data_dir(), "jsonl");
        j.sort();
        j
    };
    let wait_finals = |run: usize, n: usize| {
        let deadline = Instant::now() + long;
        while journals()
            .get(run)
            .is_none_or(|j| journal_texts(j).len() < n)
        {
            assert!(
                Instant::now() < deadline,
                "run {run}: fewer than {n} finals: {:?}\n{}",
                journals()
                    .iter()
                    .map(|j| journal_texts(j))
                    .collect::<Vec<_>>(),
                tmux.screen()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_finals(0, 2);
    tmux.send(&["Space"]);
    tmux.wait_for("STOPPED", long);
    // The input plays on while stopped: the restart begins elsewhere in the recording.
    std::thread::sleep(Duration::from_secs(6));
    tmux.send(&["Space"]);
    tmux.wait_for("STREAMING", long);
    wait_finals(1, 4);
    tmux.send(&["q"]);
    tmux.wait_for("SHELL-OK", long);

    let sentences = demo_recording::recording_sentences();
    let runs = journals();
    assert_eq!(runs.len(), 2, "one journal per run: {runs:?}");
    for (r, journal) in runs.iter().enumerate() {
        let texts = journal_texts(journal);
        let export = std::fs::read_to_string(journal.with_extension("txt")).expect("txt export");
        assert_eq!(export.lines().count(), texts.len(), "{export}");
        let last = texts.len() - 1;
        let mut whole = 0;
        for (i, text) in texts.iter().enumerate() {
            let p = plain(text);
            let ok = sentences.contains(&p)
                || (i == 0 && sentences.iter().any(|s| s.ends_with(&format!(" {p}"))))
                || (i == last && sentences.iter().any(|s| s.starts_with(&format!("{p} "))));
            assert!(
                ok,
                "run {}: {text:?} is not one of the recording's sentences: {texts:?}",
                r + 1
            );
            whole += usize::from(sentences.contains(&p));
        }
        assert!(whole >= 2, "run {}: {texts:?}", r + 1);
    }
}
