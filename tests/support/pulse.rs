//! A real PulseAudio server of a test's own, for tests of system audio (`--input monitor`) and of
//! the microphone through ALSA's pulse plugin. Include it with
//! `#[path = "support/pulse.rs"] mod pulse;`.
//!
//! The server runs as a child of the test (`--daemonize=no`) in a temporary directory that is its
//! `XDG_RUNTIME_DIR` and `HOME`, with one null sink (`nullsink`: plays into nothing, on the
//! system clock, so it paces like a sound card) as the default output and its monitor
//! (`nullsink.monitor`) as the default input. Its socket accepts anyone who can reach the
//! private directory (`auth-anonymous`), so a child process with another `HOME` still gets in.
//! Nothing of the machine's own sound set-up is touched. Dropping the harness stops the server.
//!
//! Needs `pulseaudio`, `pactl`, `paplay` and `parec` (`make test-deps`): without them
//! [`Pulse::start`] returns `None` (the test is skipped), except under CI, where it fails.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The null sink every test plays into.
pub const SINK: &str = "nullsink";
/// Its monitor: the default input, and what `--input monitor` records.
pub const MONITOR: &str = "nullsink.monitor";

/// How long the server gets to answer `pactl info`.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether PulseAudio and its tools are installed; if not, says so on stderr (the caller skips
/// its test), or fails under CI.
pub fn tools_installed() -> bool {
    for tool in ["pulseaudio", "pactl", "paplay", "parec"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "{tool} is required under CI (make test-deps installs pulseaudio and \
                 pulseaudio-utils)"
            );
            eprintln!("skipping: {tool} is not installed (make test-deps)");
            return false;
        }
    }
    true
}

/// A running test server. Stopped on drop.
pub struct Pulse {
    dir: tempfile::TempDir,
    server: Child,
}

impl Pulse {
    /// Start a server, or `None` (with a note on stderr) when PulseAudio is not installed.
    /// Under CI a missing tool is a failure: `make test-deps` installs them.
    pub fn start() -> Option<Self> {
        if !tools_installed() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["home", "pulse"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("dirs");
        }
        // Clients never start a server of their own (PulseAudio's autospawn) if ours is not up.
        std::fs::write(dir.path().join("client.conf"), "autospawn = no\n").expect("client.conf");
        let log = std::fs::File::create(dir.path().join("pulseaudio.log")).expect("log file");
        let socket = dir.path().join("pulse/native");
        let mut command = Command::new("pulseaudio");
        command
            .args([
                "--daemonize=no",
                // No configuration files: only the modules named here.
                "-n",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                // Root (as in CI) runs it as a per-user server all the same.
                "--system=false",
                "--disallow-exit",
                "--log-target=stderr",
                "--log-level=info",
            ])
            .arg(format!(
                "--load=module-native-protocol-unix auth-anonymous=1 socket={}",
                socket.display()
            ))
            .arg(format!("--load=module-null-sink sink_name={SINK}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let server = Self::environment(dir.path(), &mut command)
            .spawn()
            .expect("start pulseaudio");
        let mut pulse = Self { dir, server };
        pulse.wait_until_ready();
        pulse.pactl_ok(&["set-default-sink", SINK]);
        pulse.pactl_ok(&["set-default-source", MONITOR]);
        Some(pulse)
    }

    fn environment<'c>(dir: &Path, command: &'c mut Command) -> &'c mut Command {
        command
            .env("XDG_RUNTIME_DIR", dir)
            .env("HOME", dir.join("home"))
            .env(
                "PULSE_SERVER",
                format!("unix:{}", dir.join("pulse/native").display()),
            )
            .env("PULSE_CLIENTCONFIG", dir.join("client.conf"))
            .env_remove("PULSE_SINK")
            .env_remove("PULSE_SOURCE")
            .env_remove("PULSE_COOKIE")
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.server.try_wait() {
                panic!("pulseaudio exited ({status}):\n{}", self.log());
            }
            let out = self.pactl(&["info"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pulseaudio did not answer within {START_TIMEOUT:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The variables a client needs to reach this server (and nothing else): `XDG_RUNTIME_DIR`,
    /// `PULSE_SERVER`, `PULSE_CLIENTCONFIG`. `HOME` is left to the caller.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let dir = self.dir.path();
        vec![
            ("XDG_RUNTIME_DIR", dir.as_os_str().to_owned()),
            (
                "PULSE_SERVER",
                format!("unix:{}", dir.join("pulse/native").display()).into(),
            ),
            (
                "PULSE_CLIENTCONFIG",
                dir.join("client.conf").into_os_string(),
            ),
        ]
    }

    /// Point `command` at this server.
    pub fn apply<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        for (key, value) in self.env() {
            command.env(key, value);
        }
        command
            .env_remove("PULSE_SINK")
            .env_remove("PULSE_SOURCE")
            .env_remove("PULSE_COOKIE")
    }

    /// `pactl ARGS` against this server.
    pub fn pactl(&self, args: &[&str]) -> Output {
        let mut command = Command::new("pactl");
        command.args(args).env("LC_ALL", "C");
        Self::environment(self.dir.path(), &mut command)
            .output()
            .expect("run pactl")
    }

    /// `pactl ARGS`, which must succeed; its stdout.
    pub fn pactl_ok(&self, args: &[&str]) -> String {
        let out = self.pactl(args);
        assert!(
            out.status.success(),
            "pactl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start playing `file` (WAV) into the null sink; wait on the returned child for its end.
    pub fn play(&self, file: &Path) -> Child {
        let mut command = Command::new("paplay");
        command
            .arg(format!("--device={SINK}"))
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Self::environment(self.dir.path(), &mut command)
            .spawn()
            .expect("start paplay")
    }

    /// A scratch directory inside the server's (removed with it).
    pub fn scratch(&self) -> PathBuf {
        let dir = self.dir.path().join("scratch");
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// What the server logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pulseaudio.log")).unwrap_or_default()
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The bundled recording's samples (16 kHz mono): what the tests play into the sink.
pub fn recording() -> Vec<i16> {
    let reader = hound::WavReader::new(aai_live::demo::WAV).expect("demo.wav");
    assert_eq!(reader.spec().sample_rate, 16_000);
    reader
        .into_samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect()
}

/// The recording after `lead` of silence, as a WAV file in `dir`.
pub fn recording_after_silence(dir: &Path, lead: Duration) -> PathBuf {
    let path = dir.join("played.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&path, spec).expect("wav");
    let silence = (lead.as_secs_f64() * 16_000.0) as usize;
    for s in std::iter::repeat_n(0, silence).chain(recording()) {
        writer.write_sample(s).expect("write");
    }
    writer.finalize().expect("finalize");
    path
}

/// A final's words, lower case, without punctuation.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Every final's words come from the recording's script, in its order (it is played once), and
/// together they are most of it.
pub fn assert_recording_words(label: &str, finals: &[String]) {
    let script: Vec<String> = aai_live::demo::script()
        .expect("script")
        .turns
        .iter()
        .flat_map(|t| t.words.iter().map(|w| w.text.to_lowercase()))
        .collect();
    let mut at = 0;
    let mut heard = 0;
    for text in finals {
        for word in words(text) {
            let Some(found) = script[at..].iter().position(|w| *w == word) else {
                panic!("{label}: {word:?} of {text:?} is not next in the script: {finals:?}");
            };
            at += found + 1;
            heard += 1;
        }
    }
    assert!(
        heard * 10 >= script.len() * 8,
        "{label}: {heard} of the recording's {} words: {finals:?}",
        script.len()
    );
}
