//! `aai-live token`: mint one token with the configured provider and print it as JSON, or write
//! that JSON atomically (temporary file, mode 0600, then rename) for the `file` provider.
//!
//! Printing the token is this command's job; it still goes nowhere else (no log line, no error).
//! Exit codes follow sysexits so scripts and cron jobs can tell "try later" from "fix me".

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::{ProviderErrorClass, TokenRequest, contract};
use crate::config::ProviderConfig;
use crate::secret::Token;

/// Transient, rate-limited or exhausted: try again later (`EX_TEMPFAIL`).
pub const EXIT_TEMPFAIL: u8 = 75;
/// The credential was rejected (`EX_NOPERM`).
pub const EXIT_REJECTED: u8 = 77;
/// Missing or invalid configuration (`EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;
/// The output file could not be written (`EX_CANTCREAT`).
pub const EXIT_CANT_CREATE: u8 = 73;
/// A bug in aai-live (sysexits `EX_SOFTWARE`).
pub const EXIT_SOFTWARE: u8 = 70;

/// What `aai-live token` was asked.
#[derive(Debug, Clone, Default)]
pub struct TokenOptions {
    /// Write the JSON here instead of printing it.
    pub out: Option<PathBuf>,
    /// Overrides `provider.expires_in_seconds`.
    pub expires_in_seconds: Option<u32>,
    /// Overrides `provider.max_session_duration_seconds`.
    pub max_session_duration_seconds: Option<u32>,
}

/// The exit code for a failure of this class.
pub fn exit_code(class: ProviderErrorClass) -> u8 {
    match class {
        ProviderErrorClass::Transient
        | ProviderErrorClass::RateLimited
        | ProviderErrorClass::Exhausted => EXIT_TEMPFAIL,
        ProviderErrorClass::Rejected => EXIT_REJECTED,
        ProviderErrorClass::NotConfigured | ProviderErrorClass::InvalidConfig => EXIT_CONFIG,
        ProviderErrorClass::Internal => EXIT_SOFTWARE,
    }
}

/// Run the command; returns the process exit code. Warnings and errors go to `stderr`, the
/// JSON to `stdout` (or the file).
pub async fn run(
    config: &ProviderConfig,
    command: &TokenOptions,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> u8 {
    let built = match super::build_with(config, &super::process_env) {
        Ok(built) => built,
        Err(e) => {
            let _ = writeln!(stderr, "error: {e}");
            return exit_code(e.class());
        }
    };
    for warning in &built.warnings {
        let _ = writeln!(stderr, "warning: {warning}");
    }
    let mut request = TokenRequest::from_config(config);
    if let Some(n) = command.expires_in_seconds {
        request.expires_in_seconds = n;
    }
    if let Some(n) = command.max_session_duration_seconds {
        request.max_session_duration_seconds = Some(n);
    }
    let token = match built.provider.fetch(&request).await {
        Ok(token) => token,
        Err(e) => {
            tracing::warn!(error = %e, "aai-live token failed");
            let _ = writeln!(stderr, "error: {e}");
            return exit_code(e.class());
        }
    };
    tracing::info!(token = %token.fingerprint(), provider = token.provider, "minted a token for output");
    emit(&token, command.out.as_deref(), stdout, stderr)
}

fn emit(token: &Token, out: Option<&Path>, stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    let mut json = contract::to_json(token, SystemTime::now()).to_string();
    json.push('\n');
    let Some(path) = out else {
        return match stdout
            .write_all(json.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(stderr, "error: cannot print the token: {e}");
                1
            }
        };
    };
    match write_atomically(path, json.as_bytes()) {
        Ok(()) => {
            let deadline = token
                .redeem_by
                .map(|at| format!(", redeem by {}", super::time::format_rfc3339(at)))
                .unwrap_or_default();
            let _ = writeln!(
                stderr,
                "wrote token {} ({}) to {}{deadline}",
                token.fingerprint(),
                token.provider,
                path.display()
            );
            0
        }
        Err(e) => {
            let _ = writeln!(stderr, "error: cannot write {}: {e}", path.display());
            EXIT_CANT_CREATE
        }
    }
}

/// Replace `path` with `contents` atomically: a reader sees the old file or the new one, never
/// half of one. The file is created with mode 0600 (it holds a secret) in the same directory,
/// synced, renamed over `path`, and the directory is synced so the rename survives a crash.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    static TEMPS: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?
        .to_string_lossy();
    let temp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TEMPS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    // Best effort: some file systems cannot sync a directory, and the data is in place anyway.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token.json");
        std::fs::write(&path, "old").expect("write");
        write_atomically(&path, b"new\n").expect("write atomically");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "token.json")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(write_atomically(&dir.path().join("missing/x"), b"x").is_err());
    }

    #[test]
    fn exit_codes_follow_the_class() {
        assert_eq!(exit_code(ProviderErrorClass::RateLimited), EXIT_TEMPFAIL);
        assert_eq!(exit_code(ProviderErrorClass::Rejected), EXIT_REJECTED);
        assert_eq!(exit_code(ProviderErrorClass::NotConfigured), EXIT_CONFIG);
    }
}
