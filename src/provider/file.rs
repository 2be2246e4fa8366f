//! The `file` provider: tokens written to a file by another process (a sidecar, a cron job, a
//! CI secret, `aai-live token --out`).
//!
//! A token opens one session, so the provider remembers a keyed hash of every token it has
//! handed out. When the file still holds a used, expired, missing, empty or half-written token,
//! it waits for the producer: it watches the *directory* (producers replace the file by rename,
//! which a watch on the file itself would miss) and polls as a fallback, up to `wait`, then gives
//! up with `Exhausted`. Unreadable files (permissions, a directory) are configuration errors.
//!
//! With `remove_after_use`, the file is claimed by renaming it before the token is handed out,
//! so two readers of one file can never both take the same token, and the producer sees the file
//! gone as its cue to write the next one.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::contract;
use super::time::format_rfc3339;
use super::{ProviderError, TokenProvider, TokenRequest};
use crate::config::ProviderConfig;
use crate::secret::{Token, fingerprint};

const NAME: &str = "file";
/// Files larger than this are not token files.
const MAX_FILE: u64 = 64 * 1024;
/// How many used-token hashes are remembered; far more than sessions in any realistic run, and
/// a bound on memory for a run that never ends.
const REMEMBERED: usize = 4096;

/// Everything the file provider needs.
#[derive(Debug, Clone)]
pub struct FileSettings {
    pub path: PathBuf,
    /// How long one fetch waits for a fresh token.
    pub wait: Duration,
    /// Polling period, the fallback when directory events do not arrive.
    pub poll_interval: Duration,
    pub remove_after_use: bool,
    /// Bound on one read of the file (a hung network file system must not hang the fetch).
    pub timeout: Duration,
    /// Watch the directory for changes (on by default; off leaves polling alone).
    pub watch: bool,
}

/// Reads one-time tokens from a file, handing each out at most once.
#[derive(Debug)]
pub struct FileProvider {
    settings: FileSettings,
    used: Mutex<UsedTokens>,
    /// The last (inode, mode) warned about, so a loose mode is reported once per file version.
    warned: Mutex<Option<(u64, u32)>>,
}

/// Keyed hashes of the tokens handed out; keyed so the set reveals nothing even in a dump.
#[derive(Debug)]
struct UsedTokens {
    keys: RandomState,
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl UsedTokens {
    fn new() -> Self {
        Self {
            keys: RandomState::new(),
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    fn hash(&self, secret: &str) -> u64 {
        self.keys.hash_one(secret)
    }

    fn contains(&self, hash: u64) -> bool {
        self.set.contains(&hash)
    }

    /// Record `hash`; false if it was there already.
    fn insert(&mut self, hash: u64) -> bool {
        if !self.set.insert(hash) {
            return false;
        }
        self.order.push_back(hash);
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    fn forget(&mut self, hash: u64) {
        if self.set.remove(&hash) {
            self.order.retain(|h| *h != hash);
        }
    }
}

/// One look at the file.
enum Look {
    /// A token not handed out before and not expired.
    Fresh {
        token: Token,
        hash: u64,
        bytes: Vec<u8>,
    },
    /// Nothing usable yet; why, for the final message.
    Wait(String),
    /// The file is not there (yet).
    Missing,
}

impl FileProvider {
    pub fn new(settings: FileSettings) -> Self {
        Self {
            settings,
            used: Mutex::new(UsedTokens::new()),
            warned: Mutex::new(None),
        }
    }

    /// Build from `[provider]` and `[provider.file]`.
    pub fn from_config(config: &ProviderConfig) -> Result<Self, ProviderError> {
        let section = &config.file;
        let Some(path) = section.path.clone() else {
            return Err(ProviderError::NotConfigured {
                provider: NAME,
                detail: "provider.file.path is not set; point it at the token file".into(),
            });
        };
        Ok(Self::new(FileSettings {
            path,
            wait: section.wait,
            poll_interval: section.poll_interval,
            remove_after_use: section.remove_after_use,
            timeout: config.timeout,
            watch: true,
        }))
    }

    /// An ssh-style warning when the token file exists and others can read it.
    pub fn permission_warning(&self) -> Option<String> {
        crate::secret::permission_warning(&self.settings.path)
    }

    fn location(&self) -> String {
        self.settings.path.display().to_string()
    }

    /// A read of the file that failed but may pass next time (too slow, interrupted, an I/O
    /// error): retried like any transient failure. A file has no status, network or server's
    /// wait to report.
    fn transient(&self, detail: String) -> ProviderError {
        ProviderError::Transient {
            provider: NAME,
            location: self.location(),
            status: None,
            network: None,
            retry_after: None,
            detail,
        }
    }

    fn lock_used(&self) -> std::sync::MutexGuard<'_, UsedTokens> {
        // A panic while holding the lock cannot leave the set half-updated in a harmful way.
        self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn take(&self) -> Result<Token, ProviderError> {
        let deadline = Instant::now() + self.settings.wait;
        // Watch before the first read, so a swap between the read and the watch is not missed.
        let wake = Arc::new(Notify::new());
        let _watcher = if self.settings.watch {
            watch_directory(&self.settings.path, &wake)
        } else {
            None
        };
        let mut announced = false;
        loop {
            let mut missing = false;
            let reason = match self.look().await? {
                Look::Fresh { token, hash, bytes } => match self.claim(hash, &bytes).await? {
                    Ok(()) => {
                        tracing::debug!(token = %token.fingerprint(), path = %self.location(),
                            "took a token from the file");
                        return Ok(token);
                    }
                    // The file changed under us: look again at once.
                    Err(reason) if reason.is_empty() => continue,
                    Err(reason) => reason,
                },
                Look::Wait(reason) => reason,
                Look::Missing => {
                    missing = true;
                    "the file does not exist (yet)".to_owned()
                }
            };
            if Instant::now() >= deadline {
                return Err(ProviderError::Exhausted {
                    provider: NAME,
                    location: self.location(),
                    waited: self.settings.wait,
                    missing,
                    detail: format!(
                        "{reason}; is the process that writes it running? (provider.file.wait)"
                    ),
                });
            }
            if !announced {
                tracing::debug!(path = %self.location(), %reason, "waiting for a fresh token");
                announced = true;
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Read the file once and judge what it holds.
    async fn look(&self) -> Result<Look, ProviderError> {
        let path = self.settings.path.clone();
        let read = tokio::task::spawn_blocking(move || read_bounded(&path));
        let (bytes, meta) = match tokio::time::timeout(self.settings.timeout, read).await {
            Err(_) => {
                return Err(self.transient(format!(
                    "reading the file took longer than {} (provider.timeout)",
                    humantime::format_duration(self.settings.timeout)
                )));
            }
            Ok(Err(join)) => {
                return Err(self.transient(format!("the read was interrupted: {join}")));
            }
            Ok(Ok(Err(e))) => return self.read_error(&e),
            Ok(Ok(Ok(read))) => read,
        };
        self.warn_loose_mode(&meta);
        let Some(bytes) = bytes else {
            return Ok(Look::Wait(format!(
                "the file is larger than {MAX_FILE} bytes, so not a token file"
            )));
        };
        // `expires_in_seconds` without `minted_at` counts from when the file was written.
        let base = meta.modified().unwrap_or_else(|_| SystemTime::now());
        let text = String::from_utf8_lossy(&bytes);
        let trimmed = text.trim();
        let doc = if trimmed.is_empty() {
            return Ok(Look::Wait(
                "the file is empty (still being written?)".into(),
            ));
        } else if trimmed.starts_with('{') {
            match serde_json::from_str::<serde_json::Value>(trimmed) {
                Ok(serde_json::Value::Object(object)) => match contract::parse_object(&object) {
                    Ok(doc) => doc,
                    Err(e) => {
                        return Ok(Look::Wait(format!(
                            "the file holds JSON that is not a token document ({e})"
                        )));
                    }
                },
                _ => {
                    return Ok(Look::Wait(
                        "the file holds incomplete or invalid JSON (still being written?)".into(),
                    ));
                }
            }
        } else if let Some(doc) = contract::parse_plain(trimmed) {
            doc
        } else {
            return Ok(Look::Wait(
                "the file holds neither a token nor a JSON token document".into(),
            ));
        };
        let hash = self.lock_used().hash(&doc.secret);
        if self.lock_used().contains(hash) {
            return Ok(Look::Wait(format!(
                "the file still holds token {}, which was already used",
                fingerprint(&doc.secret)
            )));
        }
        let secret_print = fingerprint(&doc.secret);
        let token = match doc.into_token(NAME, base, SystemTime::now()) {
            Ok(token) => token,
            Err(e) => {
                return Ok(Look::Wait(format!(
                    "the file holds token {secret_print}, whose {e}"
                )));
            }
        };
        if let Some(at) = token.redeem_by
            && token.is_lapsed(SystemTime::now())
        {
            return Ok(Look::Wait(format!(
                "the file holds token {secret_print} whose redemption window ended at {}",
                format_rfc3339(at)
            )));
        }
        Ok(Look::Fresh { token, hash, bytes })
    }

    fn read_error(&self, e: &std::io::Error) -> Result<Look, ProviderError> {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::NotFound => Ok(Look::Missing),
            ErrorKind::PermissionDenied => Err(ProviderError::InvalidConfig {
                provider: NAME,
                location: self.location(),
                status: None,
                detail: format!(
                    "cannot read the token file: {e}; let the user running aai-live read it"
                ),
            }),
            ErrorKind::IsADirectory => Err(ProviderError::InvalidConfig {
                provider: NAME,
                location: self.location(),
                status: None,
                detail: "this is a directory; provider.file.path must name the token file".into(),
            }),
            _ => Err(self.transient(format!("cannot read the token file: {e}"))),
        }
    }

    /// Mark the token as handed out, and with `remove_after_use` claim the file. `Ok(Err(""))`
    /// means the file changed while being claimed (look again); `Ok(Err(reason))` that another
    /// reader took it.
    async fn claim(&self, hash: u64, bytes: &[u8]) -> Result<Result<(), String>, ProviderError> {
        // Reserve first: concurrent fetches in this process race on the set, not the file.
        if !self.lock_used().insert(hash) {
            return Ok(Err(
                "the token in the file was just taken by another fetch".into()
            ));
        }
        if !self.settings.remove_after_use {
            return Ok(Ok(()));
        }
        let path = self.settings.path.clone();
        let expected = bytes.to_vec();
        let outcome = tokio::task::spawn_blocking(move || claim_file(&path, &expected))
            .await
            .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())));
        match outcome {
            Ok(Claim::Taken) => Ok(Ok(())),
            Ok(Claim::Changed) => {
                self.lock_used().forget(hash);
                Ok(Err(String::new()))
            }
            Ok(Claim::Gone) => Ok(Err(
                "the token was taken by another reader of the file".into()
            )),
            Err(e) => {
                self.lock_used().forget(hash);
                Err(ProviderError::InvalidConfig {
                    provider: NAME,
                    location: self.location(),
                    status: None,
                    detail: format!(
                        "cannot remove the token file after use (provider.file.remove_after_use): \
                         {e}; the directory must be writable"
                    ),
                })
            }
        }
    }

    fn warn_loose_mode(&self, meta: &std::fs::Metadata) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let mode = meta.mode() & 0o777;
            let loose = mode & 0o077 != 0;
            let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
            if loose && *warned != Some((meta.ino(), mode)) {
                *warned = Some((meta.ino(), mode));
                let path = self.location();
                tracing::warn!(
                    "token file {path} is readable by others (mode {mode:04o}); tokens are \
                     secrets until used: run chmod 600 {path}, or have the producer write it 0600"
                );
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
    }
}

impl TokenProvider for FileProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn source(&self) -> String {
        self.location()
    }

    fn fetch<'a>(
        &'a self,
        _request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<Token, ProviderError>> {
        // The file's producer chooses the lifetimes; the request has nothing to say here.
        self.take().boxed()
    }
}

/// Read at most [`MAX_FILE`] bytes; `None` content when the file is larger.
fn read_bounded(path: &Path) -> std::io::Result<(Option<Vec<u8>>, std::fs::Metadata)> {
    // Not waiting on a FIFO with no writer: the provider polls, it must not hang.
    let file = crate::files::open_for_reading(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(std::io::Error::from(std::io::ErrorKind::IsADirectory));
    }
    match crate::files::read_capped_file(file, MAX_FILE) {
        Ok(bytes) => Ok((Some(bytes), meta)),
        Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => Ok((None, meta)),
        Err(e) => Err(e),
    }
}

enum Claim {
    /// The file held our token and is gone now.
    Taken,
    /// A different token arrived between our read and the claim; it is back in place.
    Changed,
    /// Someone else claimed the file first.
    Gone,
}

/// Rename the file aside (atomic: exactly one claimant gets it), check it is what we read, and
/// delete it. A newer file that slipped in is put back with a hard link, which fails rather than
/// overwrite an even newer one.
fn claim_file(path: &Path, expected: &[u8]) -> std::io::Result<Claim> {
    static CLAIMS: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map_or_else(|| "token".into(), |n| n.to_string_lossy().into_owned());
    let aside = path.with_file_name(format!(
        ".{name}.taken-{}-{}",
        std::process::id(),
        CLAIMS.fetch_add(1, Ordering::Relaxed)
    ));
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Claim::Gone),
        Err(e) => return Err(e),
    }
    // Bounded like the first read: what was swapped in may be anything.
    let held = match crate::files::read_capped(&aside, MAX_FILE) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => None,
        Err(e) => return Err(e),
    };
    if held.as_deref() == Some(expected) {
        std::fs::remove_file(&aside)?;
        return Ok(Claim::Taken);
    }
    match std::fs::hard_link(&aside, path) {
        Ok(()) => {}
        // An even newer file is in place already; the one we hold is older, so drop it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_file(&aside)?;
    Ok(Claim::Changed)
}

/// Watch the file's directory and wake `wake` on changes that may concern the file. `None` when
/// watching is impossible (no directory yet, no inotify instances left): polling still works.
fn watch_directory(path: &Path, wake: &Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name()?.to_owned();
    let wake = Arc::clone(wake);
    let handler = move |event: notify::Result<notify::Event>| match event {
        // Our own reads show up as Access events; only changes can bring a new token.
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        Ok(event) => {
            if event.paths.is_empty() || event.paths.iter().any(|p| p.file_name() == Some(&name)) {
                wake.notify_one();
            }
        }
        // An overflow or watcher error: look at the file rather than miss a change.
        Err(_) => wake.notify_one(),
    };
    let mut watcher = notify::recommended_watcher(handler)
        .inspect_err(|e| tracing::debug!(error = %e, "cannot watch; polling only"))
        .ok()?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .inspect_err(|e| {
            tracing::debug!(error = %e, dir = %dir.display(), "cannot watch the directory; polling only");
        })
        .ok()?;
    Some(watcher)
}
