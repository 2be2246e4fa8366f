//! Child processes that produce audio: the `cmd:` input and the recorder behind `monitor`
//! (`parec` or `pw-record`). The one place that spawns them, reads them, stops them and judges
//! how they ended, plus the short queries `monitor` and `aai-live devices` make (`pactl`).
//!
//! A command runs without a shell, in a process group of its own, with standard input closed;
//! its standard output is the audio (read through [`RawSource`], like `stdin`), its standard
//! error is kept, last line only and bounded, to explain a failure. Its own group means that
//! Ctrl-C in the terminal reaches aai-live, not the command, and that stopping reaches whatever
//! the command started too: at stop the group gets SIGTERM, then SIGKILL when anything of it is
//! still there [`KILL_AFTER`] later.
//!
//! Exit status 0 at the end of the output is a normal end ([`InputEnd::Finished`]); any other
//! status, or a signal aai-live did not send, is a failure naming the status and the last line
//! the command wrote to stderr.
//!
//! [`InputEnd::Finished`]: super::InputEnd::Finished

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::stdin::RawSource;
use super::{AudioError, SourceFormat};
use crate::config::StdinFormat;
use crate::untrusted;

/// How long a stopped command has between SIGTERM and SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(2);
/// How long a command that closed its output has to exit before it is stopped and the input
/// fails: a command that keeps running without output is stuck, not finished.
const EXIT_AFTER_EOF: Duration = Duration::from_secs(2);
/// How long to wait for the rest of stderr once the command has exited (a grandchild may keep
/// the pipe open; its last words are not worth waiting longer for).
const STDERR_AFTER_EXIT: Duration = Duration::from_millis(500);
/// How long after SIGKILL to wait for the command itself to be reaped.
const REAP_AFTER_KILL: Duration = Duration::from_secs(1);
/// How often the stop path looks whether the group is gone.
const POLL: Duration = Duration::from_millis(20);
/// The longest stderr line kept (bytes); the rest of a longer line is dropped. Shown through
/// [`untrusted::for_terminal`], which caps it again in characters.
const MAX_LINE_BYTES: usize = 2048;
/// The most a short query ([`query`]) may print on stdout or stderr.
const MAX_QUERY_BYTES: u64 = 1 << 20;

/// How a command ended, as the reaper thread saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Exit {
    Status(ExitStatus),
    /// `wait` itself failed (someone else reaped the child): nothing is known.
    Unknown(String),
}

/// A running command in its own process group, with its reaper and stderr reader.
#[derive(Debug)]
pub struct ChildGroup {
    /// The leader's pid, which is also the group's id.
    pgid: Pid,
    /// How messages name the command (the command line as written, or `parec`).
    label: String,
    exit: watch::Receiver<Option<Exit>>,
    stderr: StderrTail,
    /// We sent SIGTERM or SIGKILL (said in the log when it goes).
    stopping: bool,
    /// The group was seen empty after the leader was reaped, or has been stopped (SIGKILL
    /// leaves nothing but zombies): never signal its id again (it could be reused).
    gone: bool,
}

impl ChildGroup {
    /// Spawn `argv` (program first) with stdin closed, stdout piped (returned) and stderr
    /// kept. `label` names it in messages.
    pub fn spawn(argv: &[String], label: &str) -> Result<(Self, ChildStdout), AudioError> {
        let Some((program, arguments)) = argv.split_first() else {
            return Err(AudioError::CommandStart {
                command: label.to_owned(),
                reason: "the command is empty".into(),
            });
        };
        let mut command = Command::new(program);
        command
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().map_err(|e| AudioError::CommandStart {
            command: label.to_owned(),
            reason: spawn_error(program, &e),
        })?;
        let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            // Both were asked for as pipes; std always provides them. Not worth a thread.
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            return Err(AudioError::CommandStart {
                command: label.to_owned(),
                reason: "its output pipes were not created".into(),
            });
        };
        let exit = spawn_reaper(child, pgid, label)?;
        let tail = StderrTail::spawn(stderr, label);
        tracing::info!(target: "aai_live::audio", command = %untrusted::for_terminal(label), pid = pgid.as_raw(), "command started");
        Ok((
            Self {
                pgid,
                label: label.to_owned(),
                exit,
                stderr: tail,
                stopping: false,
                gone: false,
            },
            stdout,
        ))
    }

    /// Whether the command has exited (it may have left processes of its group behind).
    fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Whether any process of the group is left. Once the leader is reaped and the group is
    /// empty, its id may be reused, so the answer is remembered and the id never signalled again.
    fn group_alive(&mut self) -> bool {
        if self.gone {
            return false;
        }
        let alive = killpg(self.pgid, None).is_ok();
        if !alive && self.exited().is_some() {
            self.gone = true;
        }
        alive
    }

    fn signal(&mut self, signal: Signal) {
        if self.gone {
            return;
        }
        self.stopping = true;
        if let Err(e) = killpg(self.pgid, signal) {
            tracing::debug!(target: "aai_live::audio", pid = self.pgid.as_raw(), %signal, error = %e, "cannot signal the command's group");
        }
    }

    /// The command ended its output by itself: wait for its exit and judge it. `Ok` for exit
    /// status 0; otherwise the failure in words, with its last line on stderr.
    pub async fn finished(&mut self) -> Result<(), AudioError> {
        let exit_rx = &mut self.exit;
        let waited = tokio::time::timeout(EXIT_AFTER_EOF, async {
            exit_rx
                .wait_for(Option::is_some)
                .await
                .map(|exit| exit.clone())
        })
        .await;
        let exit = match waited {
            Ok(Ok(exit)) => exit,
            // The reaper always sends before it ends; a closed channel without a value is a
            // reaper that died, and the command's fate is unknown.
            Ok(Err(_)) => Some(Exit::Unknown("its reaper thread ended".into())),
            Err(_) => None,
        };
        let Some(exit) = exit else {
            self.stop().await;
            return Err(self.failure(&format!(
                "closed its output but had not exited {} s later, so it was stopped",
                EXIT_AFTER_EOF.as_secs()
            )));
        };
        let _ = tokio::time::timeout(STDERR_AFTER_EXIT, self.stderr.wait_done()).await;
        // Whatever the command left running in its group goes with it.
        if self.group_alive() {
            self.stop().await;
        }
        match describe_exit(&exit) {
            None => Ok(()),
            Some(how) => Err(self.failure(&how)),
        }
    }

    /// If the command exits within `grace` (a recorder that cannot open its source does so at
    /// once), the failure, as [`finished`](Self::finished) words it; `Ok` if it is still running.
    pub async fn exited_within(&mut self, grace: Duration) -> Result<(), AudioError> {
        if tokio::time::timeout(grace, self.exit.wait_for(Option::is_some))
            .await
            .is_err()
        {
            return Ok(());
        }
        let _ = tokio::time::timeout(STDERR_AFTER_EXIT, self.stderr.wait_done()).await;
        let exit = self.exited();
        let how = exit
            .as_ref()
            .and_then(describe_exit)
            .unwrap_or_else(|| "exited at once (status 0) without producing any audio".to_owned());
        Err(self.failure(&how))
    }

    fn failure(&self, how: &str) -> AudioError {
        AudioError::CommandFailed {
            command: untrusted::for_terminal(&self.label).into_owned(),
            how: how.to_owned(),
            stderr: self.stderr.last_line().map_or_else(
                || " (nothing on stderr)".to_owned(),
                |line| format!(": {}", untrusted::for_terminal(&line)),
            ),
        }
    }

    /// Stop the command: SIGTERM to its group, SIGKILL [`KILL_AFTER`] later to whatever is left,
    /// then wait (bounded) for the group to be gone. Waits on the runtime's timer.
    pub async fn stop(&mut self) {
        if !self.group_alive() {
            return;
        }
        self.signal(Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + KILL_AFTER;
        while tokio::time::Instant::now() < deadline {
            if !self.group_alive() {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::warn!(target: "aai_live::audio", command = %untrusted::for_terminal(&self.label), "the command did not stop on SIGTERM within {} s; killing it", KILL_AFTER.as_secs());
        self.signal(Signal::SIGKILL);
        // SIGKILL cannot be ignored; waiting for the leader's exit is enough (an orphan's
        // zombie is init's to reap, and stays in the group until it does).
        let deadline = tokio::time::Instant::now() + REAP_AFTER_KILL;
        while self.exited().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        self.gone = true;
    }

    /// [`stop`](Self::stop) for places without a runtime to wait on (drop): blocks the thread
    /// for as long as the command takes to go, [`KILL_AFTER`] at most before SIGKILL.
    fn stop_blocking(&mut self) {
        if !self.group_alive() {
            return;
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + KILL_AFTER;
        while Instant::now() < deadline {
            if !self.group_alive() {
                return;
            }
            std::thread::sleep(POLL);
        }
        tracing::warn!(target: "aai_live::audio", command = %untrusted::for_terminal(&self.label), "the command did not stop on SIGTERM within {} s; killing it", KILL_AFTER.as_secs());
        self.signal(Signal::SIGKILL);
        let deadline = Instant::now() + REAP_AFTER_KILL;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        self.gone = true;
    }
}

impl Drop for ChildGroup {
    /// Nothing the input started outlives it: when the input is dropped without having been
    /// stopped (a runtime shutting down drops its tasks unpolled), stop the group here, even if
    /// that blocks: a process left behind would record, or hold the audio device, for ever.
    fn drop(&mut self) {
        self.stop_blocking();
        if self.stopping {
            tracing::debug!(target: "aai_live::audio", pid = self.pgid.as_raw(), "command stopped");
        }
    }
}

/// Wait for the child on a thread of its own, so that its exit is known the moment it happens
/// (and it never lingers as a zombie).
fn spawn_reaper(
    mut child: Child,
    pgid: Pid,
    label: &str,
) -> Result<watch::Receiver<Option<Exit>>, AudioError> {
    let (tx, rx) = watch::channel(None);
    let spawned = std::thread::Builder::new()
        .name("aai-live-cmd-wait".into())
        .spawn(move || {
            let exit = match child.wait() {
                Ok(status) => Exit::Status(status),
                Err(e) => Exit::Unknown(e.to_string()),
            };
            tracing::debug!(target: "aai_live::audio", pid = pgid.as_raw(), exit = ?exit, "command exited");
            tx.send_replace(Some(exit));
        });
    if let Err(e) = spawned {
        // The child went with the closure; without a reaper it must not keep running.
        let _ = killpg(pgid, Signal::SIGKILL);
        return Err(AudioError::CommandStart {
            command: label.to_owned(),
            reason: format!("cannot start a thread to wait for it: {e}"),
        });
    }
    Ok(rx)
}

/// The failure in an exit, or `None` for a normal exit (status 0).
fn describe_exit(exit: &Exit) -> Option<String> {
    match exit {
        Exit::Status(status) if status.success() => None,
        Exit::Status(status) => Some(match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {}", signal_name(signal)),
            (None, None) => format!("ended abnormally ({status})"),
        }),
        Exit::Unknown(reason) => Some(format!("ended, but how is unknown ({reason})")),
    }
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| signal.to_string(), |s| s.as_str().to_owned())
}

fn spawn_error(program: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound if !program.contains('/') => {
            format!("the program {program:?} is not on PATH")
        }
        io::ErrorKind::NotFound => format!("the program {program:?} does not exist"),
        io::ErrorKind::PermissionDenied => {
            format!("the program {program:?} cannot be executed (permission denied)")
        }
        _ => e.to_string(),
    }
}

/// The last non-empty line a command wrote to stderr, kept by a reader thread.
#[derive(Debug)]
struct StderrTail {
    last: Arc<Mutex<Option<String>>>,
    done: watch::Receiver<bool>,
}

impl StderrTail {
    fn spawn<R: Read + Send + 'static>(reader: R, label: &str) -> Self {
        let last = Arc::new(Mutex::new(None));
        let (done_tx, done) = watch::channel(false);
        let thread_last = Arc::clone(&last);
        let label = untrusted::for_terminal(label).into_owned();
        let spawned = std::thread::Builder::new()
            .name("aai-live-cmd-stderr".into())
            .spawn(move || {
                read_lines(reader, |line| {
                    tracing::debug!(target: "aai_live::audio", command = %label, stderr = %untrusted::for_terminal(line), "command stderr");
                    *thread_last.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(line.to_owned());
                });
                done_tx.send_replace(true);
            });
        if let Err(e) = spawned {
            // The command still runs; only its last words will be missing from a failure.
            tracing::warn!(target: "aai_live::audio", error = %e, "cannot read the command's stderr");
        }
        Self { last, done }
    }

    fn last_line(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn wait_done(&mut self) {
        let _ = self.done.wait_for(|done| *done).await;
    }
}

/// Call `line` for each non-blank line of `reader` (lossy UTF-8, trailing `\r` and blanks
/// trimmed), reading in bounded blocks: a line longer than [`MAX_LINE_BYTES`] is cut there, so
/// memory stays bounded however much a command writes without a newline.
pub(super) fn read_lines<R: Read>(mut reader: R, mut line: impl FnMut(&str)) {
    let mut block = [0_u8; 4096];
    let mut current: Vec<u8> = Vec::new();
    let mut emit = |current: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(current);
        let text = text.trim();
        if !text.is_empty() {
            line(text);
        }
        current.clear();
    };
    loop {
        let n = match reader.read(&mut block) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for piece in block[..n].split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match piece.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (piece, false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(current.len());
            current.extend_from_slice(&body[..body.len().min(room)]);
            if ends {
                emit(&mut current);
            }
        }
    }
    emit(&mut current);
}

/// Raw PCM from a command's standard output, and the command.
#[derive(Debug)]
pub struct CommandSource {
    pub raw: RawSource,
    pub child: ChildGroup,
    /// A live source (a recorder) delivers at real time by itself and must not be paced again;
    /// a `cmd:` may be a file decoder, so it is paced like stdin.
    pub live: bool,
}

impl CommandSource {
    /// Start `argv`, reading its output as `format`.
    pub fn spawn(
        argv: &[String],
        label: &str,
        format: StdinFormat,
        live: bool,
    ) -> Result<Self, AudioError> {
        let (child, stdout) = ChildGroup::spawn(argv, label)?;
        let raw = RawSource::spawn(stdout, format, label);
        Ok(Self { raw, child, live })
    }

    pub fn format(&self) -> SourceFormat {
        self.raw.format()
    }
}

/// The program `name` as found on PATH (an executable file), like a shell finds it.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a short query printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOutput {
    pub stdout: String,
}

/// Run a short query (`pactl info`) to its end, in the C locale (its output is parsed), with
/// stdin closed, its output bounded, and a deadline after which it is killed. `Err` says why it
/// failed: not started, timed out, or its exit and last stderr line.
pub fn query<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    timeout: Duration,
) -> Result<QueryOutput, String> {
    let shown = program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let stdout = child.stdout.take().map(|s| bounded_reader(s, "query-out"));
    let stderr = child.stderr.take().map(|s| bounded_reader(s, "query-err"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                break Err(format!(
                    "{shown} did not answer within {} s",
                    timeout.as_secs_f32()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => break Err(format!("cannot wait for {shown}: {e}")),
        }
    };
    let join = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
        reader
            .and_then(|r| r.join().ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    };
    let (out, err) = (join(stdout), join(stderr));
    let status = status?;
    if status.success() {
        return Ok(QueryOutput { stdout: out });
    }
    let how = describe_exit(&Exit::Status(status)).unwrap_or_default();
    let last = err.lines().map(str::trim).rfind(|l| !l.is_empty());
    Err(match last {
        Some(line) => format!("{shown} {how}: {}", untrusted::for_terminal(line)),
        None => format!("{shown} {how}"),
    })
}

/// Read all of `reader` (at most [`MAX_QUERY_BYTES`]) on a thread.
fn bounded_reader<R: Read + Send + 'static>(
    reader: R,
    name: &str,
) -> std::thread::JoinHandle<Vec<u8>> {
    let read = move || {
        let mut bytes = Vec::new();
        let mut limited = reader.take(MAX_QUERY_BYTES);
        let _ = limited.read_to_end(&mut bytes);
        // Drain the rest so the writer is not blocked on a full pipe.
        let _ = io::copy(&mut limited.into_inner(), &mut io::sink());
        bytes
    };
    std::thread::Builder::new()
        .name(format!("aai-live-{name}"))
        .spawn(read)
        .unwrap_or_else(|_| std::thread::spawn(Vec::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        read_lines(bytes, |l| out.push(l.to_owned()));
        out
    }

    #[test]
    fn stderr_lines_are_trimmed_and_blank_lines_skipped() {
        assert_eq!(
            lines_of(b"first\r\n\n  second  \nlast without newline"),
            ["first", "second", "last without newline"]
        );
        assert!(lines_of(b"").is_empty());
        assert!(lines_of(b"\n\n \n").is_empty());
        assert_eq!(lines_of(b"caf\xc3\xa9 \xff\n"), ["café \u{fffd}"]);
    }

    #[test]
    fn a_huge_line_is_cut_not_buffered() {
        let mut bytes = vec![b'x'; 100_000];
        bytes.extend_from_slice(b"\nnext\n");
        let lines = lines_of(&bytes);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(describe_exit(&Exit::Status(ExitStatus::from_raw(0))), None);
        assert_eq!(
            describe_exit(&Exit::Status(ExitStatus::from_raw(3 << 8))).as_deref(),
            Some("exited with status 3")
        );
        assert_eq!(
            describe_exit(&Exit::Status(ExitStatus::from_raw(11))).as_deref(),
            Some("was killed by signal SIGSEGV")
        );
        assert!(
            describe_exit(&Exit::Unknown("ECHILD".into())).is_some_and(|d| d.contains("ECHILD"))
        );
    }

    #[test]
    fn spawn_errors_say_what_is_missing() {
        let e = ChildGroup::spawn(&["aai-live-no-such-program".to_owned()], "x")
            .expect_err("no such program")
            .to_string();
        assert!(
            e.contains("\"aai-live-no-such-program\" is not on PATH"),
            "{e}"
        );
        let e = ChildGroup::spawn(&["/nonexistent/prog".to_owned()], "x")
            .expect_err("no such file")
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(ChildGroup::spawn(&[], "x").is_err());
    }

    #[test]
    fn programs_are_found_on_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("aai-live-no-such-program").is_none());
    }

    #[test]
    fn queries_report_output_failure_and_timeout() {
        let sh = find_program("sh").expect("sh");
        let out = query(
            &sh,
            &["-c", "echo hello; echo $LC_ALL"],
            Duration::from_secs(5),
        )
        .expect("runs");
        assert_eq!(out.stdout, "hello\nC\n");
        let e = query(
            &sh,
            &["-c", "echo oops >&2; exit 4"],
            Duration::from_secs(5),
        )
        .expect_err("fails");
        assert_eq!(e, "sh exited with status 4: oops");
        let started = Instant::now();
        let e = query(&sh, &["-c", "sleep 30"], Duration::from_millis(200)).expect_err("times out");
        assert!(e.contains("did not answer within 0.2 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn exit_status_decides_how_the_command_ended() {
        let sh = |script: &str| vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let (mut ok, _out) = ChildGroup::spawn(&sh("exit 0"), "ok").expect("spawn");
        ok.finished().await.expect("status 0 is a normal end");
        let (mut bad, _out) = ChildGroup::spawn(
            &sh("echo first >&2; echo 'the \x1b[31mreason' >&2; exit 3"),
            "bad",
        )
        .expect("spawn");
        let e = bad
            .finished()
            .await
            .expect_err("status 3 fails")
            .to_string();
        assert_eq!(e, "bad exited with status 3: the [31mreason");
        let (mut killed, _out) = ChildGroup::spawn(&sh("kill -KILL $$"), "killed").expect("spawn");
        let e = killed
            .finished()
            .await
            .expect_err("a signal fails")
            .to_string();
        assert_eq!(e, "killed was killed by signal SIGKILL (nothing on stderr)");
    }

    /// Processes of group `pgid` that are not zombies (an orphan's zombie waits for init, which
    /// on some machines takes its time; it is dead all the same).
    fn live_members(pgid: Pid) -> Vec<String> {
        let mut left = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some((_, after)) = stat.rsplit_once(") ") else {
                continue;
            };
            let fields: Vec<&str> = after.split_whitespace().collect();
            if fields.get(2) == Some(&pgid.as_raw().to_string().as_str()) && fields[0] != "Z" {
                left.push(stat);
            }
        }
        left
    }

    #[tokio::test]
    async fn stop_terms_then_kills_the_whole_group() {
        // The shell ignores SIGTERM and so does its child (an ignored signal is inherited).
        let argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "trap '' TERM; sleep 60 & sleep 60".to_owned(),
        ];
        let (mut group, _out) = ChildGroup::spawn(&argv, "stubborn").expect("spawn");
        let pgid = group.pgid;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(killpg(pgid, None).is_ok());
        let started = std::time::Instant::now();
        group.stop().await;
        let took = started.elapsed();
        assert!(
            took >= KILL_AFTER,
            "SIGKILL only after {KILL_AFTER:?}: {took:?}"
        );
        assert!(took < KILL_AFTER + Duration::from_secs(2), "{took:?}");
        let left = live_members(pgid);
        assert!(left.is_empty(), "the whole group is gone: {left:?}");

        // A command that stops on SIGTERM is not kept waiting for SIGKILL.
        let argv = vec!["sleep".to_owned(), "60".to_owned()];
        let (group, _out) = ChildGroup::spawn(&argv, "polite").expect("spawn");
        let pgid = group.pgid;
        let started = std::time::Instant::now();
        drop(group);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(live_members(pgid).is_empty(), "dropping stops it too");
    }
}
