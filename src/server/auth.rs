//! Client authentication for the token server: named bearer credentials stored as SHA-256
//! hashes, or none at all (loopback only).
//!
//! The credentials file holds one client per line, `name:sha256hex`, with `#` comments:
//!
//! ```text
//! # aai-live serve credentials: name:sha256 of the credential
//! alice:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
//! ci-runner:486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7
//! ```
//!
//! Only hashes are stored, so the file (and a backup of it) does not hand out credentials; that
//! holds for *random* credentials (`openssl rand -base64 32`), whose hashes cannot be reversed by
//! guessing. `aai-live serve --hash-credential` prints the hash of a credential read from stdin.
//! The name is what logs, metrics and per-client rate limits use; a credential never is.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

/// Longest client name: names go into log lines and metric labels.
const MAX_NAME_LEN: usize = 64;
/// Shortest credential `--hash-credential` accepts without a warning.
pub const MIN_CREDENTIAL_LEN: usize = 16;

/// How clients prove who they are.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Everyone is the client "anonymous". Allowed only when the server listens on loopback.
    None,
    /// `Authorization: Bearer <credential>`, checked against the credentials file.
    Bearer(Credentials),
}

/// The name every caller gets when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

/// Problems with the credentials file. No message quotes a line's content: a user who pasted a
/// credential instead of its hash must not see it echoed into a terminal log.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the credentials file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the credentials file {path} names no client; add lines name:sha256hex (hash a credential with `aai-live serve --hash-credential`)"
    )]
    Empty { path: String },
    #[error("{path}, line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
}

/// One client.
#[derive(Clone)]
struct Entry {
    name: Arc<str>,
    hash: [u8; 32],
}

/// The clients of the credentials file.
#[derive(Clone)]
pub struct Credentials {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes are not secrets, but there is nothing to learn from them in a dump either.
        f.debug_struct("Credentials")
            .field("clients", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// Read and check a credentials file (at most [`crate::files::MAX_FILE_BYTES`]: a wrong
    /// path such as `/dev/zero` is an error, not an allocation without end).
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let shown = path.display().to_string();
        let text = crate::files::read_capped_string(path, crate::files::MAX_FILE_BYTES).map_err(
            |source| CredentialsError::Io {
                path: shown.clone(),
                source,
            },
        )?;
        Self::parse(&text, &shown)
    }

    /// One client `name` whose credential is `credential` (kept only as its hash): the live
    /// feed's token (`[feed] token_file`), checked by [`Credentials::verify`] like the file's.
    pub fn single(name: &str, credential: &str) -> Self {
        Self {
            entries: vec![Entry {
                name: Arc::from(name),
                hash: Sha256::digest(credential.as_bytes()).into(),
            }],
        }
    }

    /// Parse the file's text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CredentialsError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let problem = |reason: String| CredentialsError::Line {
                path: origin.to_owned(),
                line: index + 1,
                reason,
            };
            let Some((name, hash)) = line.split_once(':') else {
                return Err(problem(
                    "expected name:sha256hex (hash a credential with `aai-live serve \
                     --hash-credential`)"
                        .into(),
                ));
            };
            let (name, hash) = (name.trim(), hash.trim());
            if !valid_name(name) {
                return Err(problem(format!(
                    "the client name must be 1-{MAX_NAME_LEN} letters, digits or . _ - @"
                )));
            }
            let Some(hash) = parse_hash(hash) else {
                return Err(problem(format!(
                    "the value for {name} is not a SHA-256 hash (64 hex digits); store hashes, \
                     not credentials: `aai-live serve --hash-credential`"
                )));
            };
            if let Some(other) = entries.iter().find(|e| &*e.name == name) {
                return Err(problem(format!("the name {} is used twice", other.name)));
            }
            if let Some(other) = entries.iter().find(|e| e.hash == hash) {
                return Err(problem(format!(
                    "{name} has the same credential as {}; give every client its own, so logs and \
                     limits can tell them apart",
                    other.name
                )));
            }
            entries.push(Entry {
                name: Arc::from(name),
                hash,
            });
        }
        if entries.is_empty() {
            return Err(CredentialsError::Empty {
                path: origin.to_owned(),
            });
        }
        Ok(Self { entries })
    }

    /// The client names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.entries.iter().map(|e| &e.name)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The client whose credential this is. Every entry is compared, in constant time each, so
    /// the time taken does not tell how close a guess came.
    pub fn verify(&self, credential: &str) -> Option<Arc<str>> {
        let presented: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if constant_time_eq(&entry.hash, &presented) {
                found = Some(Arc::clone(&entry.name));
            }
        }
        found
    }
}

/// The SHA-256 of a credential, as 64 lowercase hex digits: what the credentials file stores.
pub fn hash_credential(credential: &str) -> String {
    Sha256::digest(credential.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// What the `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    Missing,
    /// Not `Bearer <credential>` (another scheme, or not text).
    Malformed,
    Bearer(&'a str),
}

/// Read `Authorization: Bearer <credential>` (the scheme is case-insensitive).
pub fn presented(headers: &HeaderMap) -> Presented<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Presented::Missing;
    };
    let Ok(text) = value.to_str() else {
        return Presented::Malformed;
    };
    match text.trim().split_once(' ') {
        Some((scheme, credential))
            if scheme.eq_ignore_ascii_case("bearer") && !credential.trim().is_empty() =>
        {
            Presented::Bearer(credential.trim())
        }
        _ => Presented::Malformed,
    }
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0_u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            hash_credential("hello"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn a_file_with_comments_and_two_clients() {
        let text = format!(
            "# clients\n\n alice : {}\nci-runner:{}\n",
            hash_credential("alice-secret-0123456789"),
            hash_credential("ci-secret-0123456789").to_uppercase()
        );
        let creds = Credentials::parse(&text, "creds").expect("parses");
        assert_eq!(creds.len(), 2);
        assert_eq!(
            creds.verify("alice-secret-0123456789").as_deref(),
            Some("alice")
        );
        assert_eq!(
            creds.verify("ci-secret-0123456789").as_deref(),
            Some("ci-runner")
        );
        assert_eq!(creds.verify("alice-secret-012345678"), None);
        assert_eq!(creds.verify(""), None);
        assert!(!format!("{creds:?}").contains(&hash_credential("alice-secret-0123456789")));
    }

    #[test]
    fn bad_files_name_the_line_but_never_quote_it() {
        let h = hash_credential("x");
        for (text, want) in [
            ("", "names no client"),
            ("# only a comment\n", "names no client"),
            ("alice\n", "line 1: expected name:sha256hex"),
            (
                "alice:plain-credential-0123456789\n",
                "line 1: the value for alice is not",
            ),
            (&format!("al ice:{h}\n") as &str, "client name"),
            (
                &format!("a:{h}\na:{}\n", hash_credential("y")),
                "line 2: the name a is used twice",
            ),
            (&format!("a:{h}\nb:{h}\n"), "b has the same credential as a"),
        ] {
            let e = Credentials::parse(text, "creds")
                .expect_err(text)
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("plain-credential"), "{e}");
        }
    }

    #[test]
    fn files_are_read_with_a_size_cap() {
        let e = Credentials::load(Path::new("/dev/zero"))
            .expect_err("endless")
            .to_string();
        assert!(
            e.contains("/dev/zero") && e.contains("larger than 1 MiB"),
            "{e}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe, b'\n']).expect("write");
        let e = Credentials::load(&binary).expect_err("binary").to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn authorization_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), Presented::Missing);
        for (value, want) in [
            ("Bearer abc", Presented::Bearer("abc")),
            ("bearer   abc  ", Presented::Bearer("abc")),
            ("Basic abc", Presented::Malformed),
            ("Bearer ", Presented::Malformed),
            ("abc", Presented::Malformed),
        ] {
            h.insert(header::AUTHORIZATION, value.parse().expect("header"));
            assert_eq!(presented(&h), want, "{value}");
        }
    }

    /// A name and a credential per client, all distinct.
    fn clients() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::btree_map("[A-Za-z0-9._@-]{1,64}", "[!-~]{1,80}", 1..8).prop_map(
            |map| {
                let mut seen = std::collections::BTreeSet::new();
                map.into_iter()
                    .filter(|(_, credential)| seen.insert(credential.clone()))
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn authorization_never_panics_and_takes_the_bearer_credential(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            credential in "[!-~]{1,100}",
            scheme in "[bB][eE][aA][rR][eE][rR]",
        ) {
            let mut h = HeaderMap::new();
            if let Ok(value) = axum::http::HeaderValue::from_bytes(&bytes) {
                h.insert(header::AUTHORIZATION, value);
                let _ = presented(&h);
            }
            h.insert(
                header::AUTHORIZATION,
                format!("{scheme} {credential}").parse().expect("visible ASCII"),
            );
            prop_assert_eq!(presented(&h), Presented::Bearer(&credential));
        }

        #[test]
        fn a_credentials_file_never_panics(text in "\\PC{0,400}", bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Credentials::parse(&text, "fuzz");
            let _ = Credentials::parse(&String::from_utf8_lossy(&bytes), "fuzz");
        }

        /// A valid file parses to its clients, each credential verifies as its name, and a bad
        /// line is reported by number without its content.
        #[test]
        fn a_valid_file_round_trips_and_errors_name_the_line(
            clients in clients(),
            comment in "# [ -~]{0,40}",
            bad_at in any::<usize>(),
            pasted in "[A-Za-z0-9+/]{40,60}",
        ) {
            let lines: Vec<String> = clients
                .iter()
                .map(|(name, credential)| format!("{name}:{}", hash_credential(credential)))
                .collect();
            let text = format!("{comment}\n\n{}\n", lines.join("\n"));
            let parsed = Credentials::parse(&text, "creds").expect("valid");
            prop_assert_eq!(parsed.len(), clients.len());
            for (name, credential) in &clients {
                let found = parsed.verify(credential);
                prop_assert_eq!(found.as_deref(), Some(name.as_str()));
            }
            // A credential pasted where its hash belongs, on some line.
            let at = bad_at % (lines.len() + 1);
            let mut with_bad = lines.clone();
            with_bad.insert(at, format!("pasted:{pasted}"));
            let e = Credentials::parse(&with_bad.join("\n"), "creds")
                .expect_err("a plain credential")
                .to_string();
            let line_number = format!("line {}", at + 1);
            prop_assert!(e.contains(&line_number), "{}", e);
            prop_assert!(!e.contains(&pasted), "{}", e);
        }
    }
}
