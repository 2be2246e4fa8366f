//! Logging to a private file (mode 0600, in a directory created 0700), written by a background
//! thread (`tracing-appender`'s non-blocking writer), rolled daily and bounded in count. The
//! terminal belongs to the dashboard and to command output, so nothing is ever logged to stdout or
//! stderr.
//!
//! One function, [`subscriber`], builds the whole set-up — the filter, the secret filter, the
//! format and the `log` → `tracing` bridge for our dependencies' records — parameterised only by
//! the writer: [`init`] gives it the log file, and the secret tests give it a buffer, so they see
//! exactly what a real run writes.
//!
//! **Secrets and dependencies.** tungstenite logs the whole HTTP upgrade request at TRACE
//! (`Request: "GET /v3/ws?...token=... Authorization: ..."`, target
//! `tungstenite::handshake::client`): the temporary token, in the query or the header. The
//! records of the targets in [`SECRET_BEARING_TARGETS`] are dropped before any filter the user
//! controls, so not even `--log-level trace` or `RUST_LOG=trace` can write them. The list is
//! narrow on purpose (a module, not a crate: tungstenite's frame and connection records stay);
//! tests/secrets.rs and tests/provider_secrets.rs capture this set-up at TRACE around minting and
//! connecting and fail if any secret reaches the log, so a dependency upgrade that starts dumping
//! requests elsewhere is caught.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;

/// Targets (and their submodules) whose records never reach the log, at any level, because they
/// carry secrets. `tungstenite::handshake::client`: its TRACE record `Request: ...` is the whole
/// upgrade request, `Authorization` header and `?token=` included (tungstenite 0.29,
/// src/handshake/client.rs); the only other record there is DEBUG "Client handshake done.".
pub const SECRET_BEARING_TARGETS: &[&str] = &["tungstenite::handshake::client"];

const DAY_SECS: u64 = 86_400;

/// Where and how much to log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Filter directives (`info`, `aai_live=debug`); `RUST_LOG` wins when set.
    pub level: String,
    /// Directory of the rolling daily files.
    pub dir: PathBuf,
    /// A single file instead of rolling files (`--log-file`).
    pub file: Option<PathBuf>,
    /// Rolling files kept.
    pub max_files: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot create log directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot open log file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid log level {level:?}: {reason}")]
    Level { level: String, reason: String },
}

/// Keeps the background writer alive; dropping it flushes what is buffered. Hold it in `main`'s
/// frame (never `process::exit` past it) so every exit path flushes.
#[must_use = "dropping the guard stops logging"]
pub struct LogGuard {
    _guard: WorkerGuard,
    /// Where the log goes, to tell the user.
    pub location: PathBuf,
}

/// True when records of `target` are never written (see [`SECRET_BEARING_TARGETS`]).
pub fn is_secret_bearing(target: &str) -> bool {
    SECRET_BEARING_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// The complete logging set-up writing to `writer`: `directives` (`EnvFilter` syntax, e.g.
/// `info` or `trace`), the secret filter, the plain-text format, and the `log` bridge (installed
/// process-wide once, raised to what `directives` may let through).
pub fn subscriber<W>(
    directives: &str,
    writer: W,
) -> Result<impl Subscriber + Send + Sync + 'static, LogError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(directives).map_err(|e| LogError::Level {
        level: directives.to_owned(),
        reason: e.to_string(),
    })?;
    bridge_log(filter.max_level_hint().unwrap_or(LevelFilter::TRACE));
    Ok(tracing_subscriber::registry()
        .with(filter_fn(|metadata| !is_secret_bearing(metadata.target())))
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false),
        ))
}

/// Route the `log` records of our dependencies (reqwest, rustls, tungstenite) into `tracing`,
/// letting through records up to `max` (and never lowering what an earlier call let through).
fn bridge_log(max: LevelFilter) {
    use tracing_log::AsLog as _;
    use tracing_log::log;
    let max = max.as_log();
    if tracing_log::LogTracer::builder()
        .with_max_level(max)
        .init()
        .is_err()
        && log::max_level() < max
    {
        // Installed already (a second set-up in one process, e.g. tests): only widen it.
        log::set_max_level(max);
    }
}

/// Install the global subscriber, logging to the file(s) `options` names. A second call in one
/// process (tests running two commands) keeps the first subscriber.
pub fn init(options: &LogOptions) -> Result<LogGuard, LogError> {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|env| !env.trim().is_empty())
        .unwrap_or_else(|| options.level.clone());
    let (files, location) = if let Some(file) = &options.file {
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let name = file
            .file_name()
            .map_or_else(|| "aai-live.log".into(), std::ffi::OsStr::to_owned);
        (
            LogFiles::single(dir.join(name)).map_err(|(path, source)| file_error(&path, source))?,
            file.clone(),
        )
    } else {
        create_private_dir(&options.dir)?;
        (
            LogFiles::daily(&options.dir, options.max_files.max(1), SystemTime::now)
                .map_err(|(path, source)| file_error(&path, source))?,
            options.dir.clone(),
        )
    };
    let (non_blocking, guard) = tracing_appender::non_blocking(files);
    let subscriber = subscriber(&directives, non_blocking).map_err(|e| match e {
        LogError::Level { reason, .. } => LogError::Level {
            level: options.level.clone(),
            reason,
        },
        other => other,
    })?;
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(LogGuard {
        _guard: guard,
        location,
    })
}

fn file_error(path: &Path, source: io::Error) -> LogError {
    LogError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Create `dir` and its missing parents with mode 0700 (logs hold what people said); a directory
/// that exists keeps its mode.
fn create_private_dir(dir: &Path) -> Result<(), LogError> {
    crate::files::create_private_dir(dir).map_err(|source| LogError::Dir {
        path: dir.display().to_string(),
        source,
    })
}

/// The log file(s): one file, or one per UTC day (`aai-live.2026-01-31.log`, the names
/// tracing-appender used) with the oldest beyond `max_files` deleted at each roll. Every file is
/// created 0600. Our own writer rather than tracing-appender's rolling one, which creates its
/// files with the process umask (usually 0644) at every rotation and offers no hook to tighten
/// them before the first line is written.
pub struct LogFiles {
    /// `Some` for daily files: the directory, how many to keep and the clock.
    daily: Option<Daily>,
    /// The open file and, for daily files, its UTC day number.
    file: File,
    day: u64,
}

struct Daily {
    dir: PathBuf,
    max_files: usize,
    clock: fn() -> SystemTime,
}

impl std::fmt::Debug for LogFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFiles")
            .field("dir", &self.daily.as_ref().map(|d| &d.dir))
            .field("day", &self.day)
            .finish_non_exhaustive()
    }
}

/// File name prefix and suffix of the daily files.
const PREFIX: &str = "aai-live.";
const SUFFIX: &str = ".log";

impl LogFiles {
    /// Append to `path` (created 0600 if missing).
    pub fn single(path: PathBuf) -> Result<Self, (PathBuf, io::Error)> {
        let file = crate::files::append_private(&path).map_err(|e| (path, e))?;
        Ok(Self {
            daily: None,
            file,
            day: 0,
        })
    }

    /// Daily files in `dir`, keeping `max_files` of them, the day read from `clock` (UTC).
    pub fn daily(
        dir: &Path,
        max_files: usize,
        clock: fn() -> SystemTime,
    ) -> Result<Self, (PathBuf, io::Error)> {
        let daily = Daily {
            dir: dir.to_owned(),
            max_files: max_files.max(1),
            clock,
        };
        let day = daily.today();
        let file = daily.open(day)?;
        daily.prune();
        Ok(Self {
            daily: Some(daily),
            file,
            day,
        })
    }

    /// Move to a new file if the day has changed. A file that cannot be created leaves the old
    /// one in use (the log must not stop the program).
    fn roll(&mut self) {
        let Some(daily) = &self.daily else {
            return;
        };
        let today = daily.today();
        if today == self.day {
            return;
        }
        match daily.open(today) {
            Ok(file) => {
                self.file = file;
                self.day = today;
                daily.prune();
            }
            Err((path, e)) => {
                // Logging about logging would recurse; stderr is the dashboard's, so one note in
                // the old file is all that can be done.
                let _ = writeln!(
                    self.file,
                    "aai-live: cannot open the next log file {}: {e}",
                    path.display()
                );
                self.day = today;
            }
        }
    }
}

impl Daily {
    fn today(&self) -> u64 {
        (self.clock)()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / DAY_SECS)
    }

    fn path(&self, day: u64) -> PathBuf {
        self.dir
            .join(format!("{PREFIX}{}{SUFFIX}", civil_date(day)))
    }

    fn open(&self, day: u64) -> Result<File, (PathBuf, io::Error)> {
        let path = self.path(day);
        crate::files::append_private(&path).map_err(|e| (path, e))
    }

    /// Delete the oldest daily files beyond `max_files` (names sort by date).
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_daily_name)
            })
            .collect();
        logs.sort();
        let excess = logs.len().saturating_sub(self.max_files);
        for old in &logs[..excess] {
            let _ = std::fs::remove_file(old);
        }
    }
}

/// `aai-live.YYYY-MM-DD.log`.
fn is_daily_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
        .is_some_and(|date| {
            date.len() == 10
                && date.bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                })
        })
}

/// `YYYY-MM-DD` of a day number since 1970-01-01 (proleptic Gregorian, Howard Hinnant's
/// `civil_from_days`).
fn civil_date(day: u64) -> String {
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Write for LogFiles {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.roll();
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[test]
    fn bad_level_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = init(&LogOptions {
            level: "aai_live=loud".into(),
            dir: dir.path().to_owned(),
            file: None,
            max_files: 1,
        });
        // RUST_LOG may be set by the developer; only check when it is not.
        if std::env::var("RUST_LOG").is_err() {
            assert!(matches!(result, Err(LogError::Level { .. })));
        }
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(20_454), "2026-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(2_932_896), "9999-12-31");
        assert!(is_daily_name("aai-live.2026-01-31.log"));
        for not in [
            "aai-live.log",
            "aai-live.2026-1-31.log",
            "other.2026-01-31.log",
        ] {
            assert!(!is_daily_name(not), "{not}");
        }
    }

    #[test]
    fn only_the_secret_bearing_module_is_dropped() {
        assert!(is_secret_bearing("tungstenite::handshake::client"));
        assert!(is_secret_bearing("tungstenite::handshake::client::inner"));
        for kept in [
            "tungstenite::handshake::clientele",
            "tungstenite::protocol",
            "tungstenite::handshake::server",
            "aai_live::session",
        ] {
            assert!(!is_secret_bearing(kept), "{kept}");
        }
    }

    /// The fake clock of the rolling test: seconds since the epoch.
    static NOW: AtomicU64 = AtomicU64::new(0);

    fn fake_now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW.load(Ordering::SeqCst))
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn daily_files_are_private_at_every_roll_and_bounded_in_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("state/logs");
        crate::files::create_private_dir(&logs).expect("mkdir");
        assert_eq!(mode(&logs), 0o700);
        assert_eq!(mode(&dir.path().join("state")), 0o700, "parents too");
        // A file left from before is pruned with the others when it is oldest.
        std::fs::write(logs.join("aai-live.2025-12-30.log"), "old\n").expect("write");
        std::fs::write(logs.join("notes.txt"), "kept\n").expect("write");
        NOW.store(1_767_225_600 - 1, Ordering::SeqCst); // 2025-12-31T23:59:59Z
        let mut files = LogFiles::daily(&logs, 2, fake_now).expect("open");
        writeln!(files, "first day").expect("write");
        NOW.store(1_767_225_600, Ordering::SeqCst); // midnight: a new file
        writeln!(files, "second day").expect("write");
        NOW.store(1_767_225_600 + DAY_SECS + 5, Ordering::SeqCst);
        writeln!(files, "third day").expect("write");
        files.flush().expect("flush");
        let mut names: Vec<String> = std::fs::read_dir(&logs)
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "aai-live.2026-01-01.log",
                "aai-live.2026-01-02.log",
                "notes.txt"
            ]
        );
        for name in &names[..2] {
            assert_eq!(mode(&logs.join(name)), 0o600, "{name}");
        }
        assert_eq!(
            std::fs::read_to_string(logs.join("aai-live.2026-01-02.log")).expect("read"),
            "third day\n"
        );
    }

    #[test]
    fn a_chosen_directory_keeps_its_mode_and_a_single_file_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        crate::files::create_private_dir(dir.path()).expect("exists");
        assert_eq!(mode(dir.path()), 0o755);
        let path = dir.path().join("serve.log");
        let mut file = LogFiles::single(path.clone()).expect("open");
        writeln!(file, "line").expect("write");
        assert_eq!(mode(&path), 0o600);
    }
}
