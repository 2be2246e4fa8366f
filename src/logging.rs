//! Logging to a file through `tracing-appender` (non-blocking). The terminal belongs to the
//! dashboard and to command output, so nothing is ever logged to stdout or stderr.

use std::path::{Path, PathBuf};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::EnvFilter;

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
        source: std::io::Error,
    },
    #[error("cannot open log file in {path}: {source}")]
    File {
        path: String,
        #[source]
        source: tracing_appender::rolling::InitError,
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

/// Install the global subscriber. Returns `None` if one is already installed (tests).
pub fn init(options: &LogOptions) -> Result<LogGuard, LogError> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|env| !env.trim().is_empty())
        .map_or_else(|| EnvFilter::try_new(&options.level), EnvFilter::try_new)
        .map_err(|e| LogError::Level {
            level: options.level.clone(),
            reason: e.to_string(),
        })?;
    let (writer, location) = if let Some(file) = &options.file {
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_dir(dir)?;
        let name = file
            .file_name()
            .map_or_else(|| "aai-live.log".into(), std::ffi::OsStr::to_owned);
        let appender = Builder::new()
            .rotation(Rotation::NEVER)
            .filename_prefix(name.to_string_lossy())
            .build(dir)
            .map_err(|source| LogError::File {
                path: dir.display().to_string(),
                source,
            })?;
        (appender, file.clone())
    } else {
        create_dir(&options.dir)?;
        let appender = Builder::new()
            .rotation(Rotation::DAILY)
            .filename_prefix("aai-live")
            .filename_suffix("log")
            .max_log_files(options.max_files.max(1))
            .build(&options.dir)
            .map_err(|source| LogError::File {
                path: options.dir.display().to_string(),
                source,
            })?;
        (appender, options.dir.clone())
    };
    let (non_blocking, guard) = tracing_appender::non_blocking(writer);
    // A second init (e.g. two commands in one test process) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(non_blocking)
        .with_ansi(false)
        .try_init();
    Ok(LogGuard {
        _guard: guard,
        location,
    })
}

fn create_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::create_dir_all(dir).map_err(|source| LogError::Dir {
        path: dir.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
