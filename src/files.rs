//! The files aai-live reads and writes, handled safely in one place: bounded reads (a size cap,
//! so `--config /dev/zero`, a FIFO or a wrong path cannot exhaust memory) and private creation
//! (files 0600, directories 0700: transcripts and logs hold what people said, key and token
//! files hold secrets).
//!
//! A leaf module (std only) so that `config`, `secret`, `provider`, `transcript`, `logging` and
//! `server` share one implementation without depending on each other.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// The most aai-live reads of a configuration, key, credential, CA certificate or token file:
/// 1 MiB. Real ones are a few KB at most.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Read all of `path`, refusing it (`ErrorKind::FileTooLarge`) when it holds more than `limit`
/// bytes. The limit is enforced while reading (`Read::take`), not from metadata, so devices,
/// FIFOs and files that grow while being read are caught too.
pub fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_capped_from(File::open(path)?, limit)
}

/// [`read_capped`] on an open file (or any reader).
pub fn read_capped_from(reader: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

/// [`read_capped`] as UTF-8 text.
pub fn read_capped_string(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_capped(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"))
}

/// The error of a file over `limit`: its message states the limit.
pub fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!(
            "the file is larger than {}, the most aai-live reads of such a file (is it the right \
             file?)",
            show_bytes(limit)
        ),
    )
}

fn show_bytes(n: u64) -> String {
    if n >= 1024 * 1024 && n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

/// Create `dir` and any missing parents with mode 0700. A directory that exists already keeps
/// its mode: it may be one the user chose and shares on purpose.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Options that create a missing file with mode 0600 (an existing file keeps its mode).
pub fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Open `path` for appending, created 0600 if missing.
pub fn append_private(path: &Path) -> io::Result<File> {
    private_options().create(true).append(true).open(path)
}

/// Write `contents` to `path`, replacing what it held, the file created 0600 if missing.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = private_options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(contents)?;
    file.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn reads_are_capped_while_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'x'; 1024]).expect("write");
        assert_eq!(read_capped(&path, 1024).expect("at the limit").len(), 1024);
        let e = read_capped(&path, 1023).expect_err("over");
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        // A device that never ends: metadata says 0 bytes, the cap still holds.
        let e = read_capped(Path::new("/dev/zero"), MAX_FILE_BYTES).expect_err("endless");
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        std::fs::write(&path, [0xFF, 0xFE]).expect("write");
        assert_eq!(
            read_capped_string(&path, 10).expect_err("not UTF-8").kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn created_files_and_directories_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a/b");
        create_private_dir(&nested).expect("mkdir");
        assert_eq!((mode(&dir.path().join("a")), mode(&nested)), (0o700, 0o700));
        let file = nested.join("t.txt");
        write_private(&file, b"hello").expect("write");
        assert_eq!(mode(&file), 0o600);
        append_private(&nested.join("j.jsonl")).expect("append");
        assert_eq!(mode(&nested.join("j.jsonl")), 0o600);
        // Existing ones keep their mode.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        write_private(&file, b"again").expect("write");
        assert_eq!(mode(&file), 0o640);
        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        create_private_dir(&nested).expect("exists");
        assert_eq!(mode(&nested), 0o750);
    }
}
