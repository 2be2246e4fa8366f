//! Secret types: the API key, reusable bearer credentials and the one-time streaming `Token`.
//!
//! Secrets live in `secrecy` wrappers so `Debug` prints `[REDACTED]`, and are exposed only at
//! the single place their bytes go on the wire. A `Token` is deliberately not `Clone`: the
//! service redeems a token once, so the type system makes "use it twice" impossible — connecting
//! consumes it.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};

/// What every secret prints as.
pub const REDACTED: &str = "[REDACTED]";

/// An AssemblyAI API key: reusable, long-lived, never sent to the WebSocket in token mode.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(SecretString::from(key.into()))
    }

    /// The raw key, for the one `Authorization` header that needs it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({REDACTED})")
    }
}

/// A reusable bearer credential for the user's own token server (may be cached).
#[derive(Clone)]
pub struct BearerCredential(SecretString);

impl BearerCredential {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for BearerCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerCredential({REDACTED})")
    }
}

/// A one-time streaming token. Not `Clone`: [`Token::into_secret`] consumes it.
pub struct Token {
    secret: SecretString,
    /// When the provider obtained it.
    pub minted_at: SystemTime,
    /// The token must be redeemed (a session opened) before this instant, when known.
    pub redeem_by: Option<SystemTime>,
    /// The maximum duration of the session the token opens, when known.
    pub max_session_duration: Option<Duration>,
    /// Name of the provider that produced it ("api-key", "remote", "file", ...).
    pub provider: &'static str,
    /// The `Date` header of the answer that carried it, when there was one: `aai-live doctor`'s
    /// second clock-skew signal.
    pub server_date: Option<SystemTime>,
}

impl Token {
    pub fn new(secret: impl Into<String>, provider: &'static str) -> Self {
        Self {
            secret: SecretString::from(secret.into()),
            minted_at: SystemTime::now(),
            redeem_by: None,
            max_session_duration: None,
            provider,
            server_date: None,
        }
    }

    #[must_use]
    pub fn with_redeem_by(mut self, at: SystemTime) -> Self {
        self.redeem_by = Some(at);
        self
    }

    #[must_use]
    pub fn with_max_session_duration(mut self, d: Duration) -> Self {
        self.max_session_duration = Some(d);
        self
    }

    #[must_use]
    pub fn with_minted_at(mut self, at: SystemTime) -> Self {
        self.minted_at = at;
        self
    }

    /// True when the redemption window is known to have passed at `now`.
    pub fn is_lapsed(&self, now: SystemTime) -> bool {
        self.redeem_by.is_some_and(|deadline| now >= deadline)
    }

    /// A short, stable fingerprint (not reversible) so logs can tell tokens apart without
    /// revealing them; also what the file provider remembers to never hand a token out twice.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.secret.expose_secret())
    }

    /// Borrow the secret, for building a request that is sent right away.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// Consume the token: the caller is about to redeem it.
    pub fn into_secret(self) -> SecretString {
        self.secret
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("secret", &REDACTED)
            .field("fingerprint", &self.fingerprint())
            .field("minted_at", &self.minted_at)
            .field("redeem_by", &self.redeem_by)
            .field("max_session_duration", &self.max_session_duration)
            .field("provider", &self.provider)
            .field("server_date", &self.server_date)
            .finish()
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {} from {}", self.fingerprint(), self.provider)
    }
}

/// A non-reversible 12-hex-digit fingerprint of a secret (FNV-1a 64, truncated). Good enough to
/// tell tokens apart in logs; not a security boundary.
pub fn fingerprint(secret: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in secret.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", hash >> 16)
}

/// Errors reading a secret from a file.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read secret file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {path} is empty")]
    Empty { path: String },
}

/// Read a secret from the first non-empty line of `path`, trimming whitespace. Returns the
/// secret and, when the file is readable by group or others, an ssh-style warning. A file over
/// [`crate::files::MAX_FILE_BYTES`] is refused (a key is a line; `/dev/zero` is not).
pub fn read_secret_file(path: &Path) -> Result<(SecretString, Option<String>), SecretFileError> {
    let display = path.display().to_string();
    let text =
        crate::files::read_capped_string(path, crate::files::MAX_FILE_BYTES).map_err(|source| {
            SecretFileError::Io {
                path: display.clone(),
                source,
            }
        })?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or(SecretFileError::Empty { path: display })?;
    Ok((
        SecretString::from(line.to_owned()),
        permission_warning(path),
    ))
}

/// An ssh-style warning when a file holding a secret is readable by group or others.
#[cfg(unix)]
pub fn permission_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} holds a secret but is readable by others (mode {mode:04o}); run: chmod 600 {}",
            path.display(),
            path.display()
        )
    })
}

#[cfg(not(unix))]
pub fn permission_warning(_path: &Path) -> Option<String> {
    None
}

/// Secrets shorter than this are hidden where they stand as a whole word only: hiding every
/// occurrence of a one-letter key inside other words garbles the text (`to[REDACTED]en`) and
/// hides nothing worth hiding.
const SCRUB_SUBSTRING_MIN: usize = 8;

/// Characters of the words (and tokens) [`scrub`] and the token masks look at.
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-' | '.' | '%' | '~')
}

/// Replace every occurrence of `secret` in `text` with [`REDACTED`] (and its percent-encoded
/// form, since tokens travel in URLs); a secret shorter than 8 characters only where no letter
/// or digit touches it (a word of its own, a query value). Used on text from the outside world (server error bodies) before it reaches an
/// error message.
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    if secret.chars().count() >= SCRUB_SUBSTRING_MIN {
        return text.replace(secret, REDACTED).replace(&encoded, REDACTED);
    }
    replace_standalone(&replace_standalone(text, secret), &encoded)
}

/// `text` with each occurrence of `needle` that no letter or digit touches on either side
/// replaced by [`REDACTED`].
fn replace_standalone(text: &str, needle: &str) -> String {
    let touches = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(needle) {
        let end = at + needle.len();
        if at < last
            || touches(text[..at].chars().next_back())
            || touches(text[end..].chars().next())
        {
            continue;
        }
        out.push_str(&text[last..at]);
        out.push_str(REDACTED);
        last = end;
    }
    out.push_str(&text[last..]);
    out
}

/// `text` with each maximal run of [`is_token_char`]s replaced where `replace` says so.
pub fn map_words<'a>(text: &str, replace: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = None;
    let flush = |out: &mut String, word: &str| out.push_str(replace(word).unwrap_or(word));
    for (i, c) in text.char_indices() {
        match (is_token_char(c), start) {
            (true, None) => start = Some(i),
            (false, Some(from)) => {
                flush(&mut out, &text[from..i]);
                start = None;
                out.push(c);
            }
            (false, None) => out.push(c),
            (true, Some(_)) => {}
        }
    }
    if let Some(from) = start {
        flush(&mut out, &text[from..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_hidden_as_whole_words_only() {
        assert_eq!(scrub("token o k", "o"), "token [REDACTED] k");
        assert_eq!(scrub("bad key k3y!", "k3y"), "bad key [REDACTED]!");
        assert_eq!(
            scrub("sk-123456789 and sk-123456789x", "sk-123456789"),
            "[REDACTED] and [REDACTED]x"
        );
        assert_eq!(scrub("a%2Bb", "a+b"), "[REDACTED]");
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let key = ApiKey::new("sk-live-123456");
        let bearer = BearerCredential::new("bearer-abcdef");
        let token = Token::new("AQICAHg+/secret==", "api-key");
        for text in [
            format!("{key:?}"),
            format!("{bearer:?}"),
            format!("{token:?}"),
            format!("{token}"),
        ] {
            assert!(!text.contains("123456"), "{text}");
            assert!(!text.contains("abcdef"), "{text}");
            assert!(!text.contains("AQICAHg"), "{text}");
        }
        assert!(format!("{token:?}").contains(REDACTED));
    }

    #[test]
    fn fingerprint_is_stable_and_distinct() {
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert_ne!(fingerprint("a"), fingerprint("b"));
        assert_eq!(fingerprint("abc").len(), 12);
    }

    #[test]
    fn lapse_is_judged_against_the_redemption_window() {
        let now = SystemTime::now();
        let token = Token::new("t", "test").with_redeem_by(now + Duration::from_secs(5));
        assert!(!token.is_lapsed(now));
        assert!(token.is_lapsed(now + Duration::from_secs(5)));
        assert!(!Token::new("t", "test").is_lapsed(now));
    }

    #[test]
    fn scrub_removes_plain_and_percent_encoded_forms() {
        let s = "AQ+/x==";
        let text = format!("bad token {s} in ?token=AQ%2B%2Fx%3D%3D");
        let clean = scrub(&text, s);
        assert!(!clean.contains("AQ"), "{clean}");
    }

    #[test]
    fn secret_file_reads_first_line_and_warns_on_loose_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "\n  my-key  \nrest\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (secret, warning) = read_secret_file(&path).expect("read");
        assert_eq!(secret.expose_secret(), "my-key");
        assert!(warning.expect("warning").contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(read_secret_file(&path).expect("read").1.is_none());
        std::fs::write(&path, "  \n").expect("write");
        assert!(matches!(
            read_secret_file(&path),
            Err(SecretFileError::Empty { .. })
        ));
    }

    #[test]
    fn secret_files_are_read_with_a_size_cap() {
        // Once read whole: a key_file pointing at /dev/zero ran the machine out of memory.
        let e = read_secret_file(Path::new("/dev/zero")).expect_err("endless");
        let shown = e.to_string();
        assert!(
            shown.contains("/dev/zero") && shown.contains("larger than 1 MiB"),
            "{shown}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        let mut big = b"key\n".to_vec();
        big.resize(1024 * 1024 + 1, b'x');
        std::fs::write(&path, &big).expect("write");
        assert!(read_secret_file(&path).is_err());
        big.truncate(1024 * 1024);
        std::fs::write(&path, &big).expect("write");
        assert_eq!(
            read_secret_file(&path)
                .expect("at the cap")
                .0
                .expose_secret(),
            "key"
        );
    }
}
