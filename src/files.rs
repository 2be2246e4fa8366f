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
use std::time::{Duration, Instant};

/// The most aai-live reads of a configuration, key, credential, CA certificate, TLS certificate
/// or TLS key file: 1 MiB. Real ones are a few KB at most.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The most aai-live reads of one answer from a server it asks (a token endpoint's body, a token
/// server's as `doctor --server` sees it, one reply of the limits store): 64 KiB. A token answer
/// is well under 1 KiB, and an error page need not be read whole to be quoted.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How long a pipe (a FIFO, `/dev/stdin`, `<(…)`) that has a writer may stay silent before the
/// read is given up: a file the user names must not hang a command.
pub const PIPE_WAIT: Duration = Duration::from_secs(1);

/// Open `path` for reading without waiting for anything: `O_NONBLOCK`, so a FIFO nobody writes
/// to opens at once (a blocking open waits for a writer, forever) and [`read_capped_file`] can
/// tell that it has none. On regular files the flag changes nothing.
pub fn open_for_reading(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Read all of `path`, refusing it (`ErrorKind::FileTooLarge`) when it holds more than `limit`
/// bytes. The limit is enforced while reading, not from metadata, so devices, FIFOs and files
/// that grow while being read are caught too; a FIFO with no writer, or a pipe whose writer
/// sends nothing for [`PIPE_WAIT`], is refused rather than waited for.
pub fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_capped_file(open_for_reading(path)?, limit)
}

/// [`read_capped`] on a file opened with [`open_for_reading`].
pub fn read_capped_file(mut file: File, limit: u64) -> io::Result<Vec<u8>> {
    let pipe = is_pipe(&file);
    let mut bytes = Capped::new(usize::try_from(limit).unwrap_or(usize::MAX));
    let mut chunk = vec![0_u8; 64 * 1024];
    let mut heard = Instant::now();
    loop {
        match file.read(&mut chunk) {
            // A FIFO nobody has open for writing reads as an empty end at once: say so rather
            // than hand an empty file to the parser.
            Ok(0) if pipe && bytes.is_empty() => return Err(no_writer()),
            Ok(0) => break,
            Ok(n) => {
                if !bytes.push(&chunk[..n]) {
                    return Err(too_large(limit));
                }
                heard = Instant::now();
            }
            // A writer that has not written yet (or a terminal): wait, bounded.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if heard.elapsed() >= PIPE_WAIT {
                    return Err(silent_pipe());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(bytes.into_bytes())
}

/// Whether `file` is a FIFO or a pipe (`<(…)`, a piped `/dev/stdin`).
fn is_pipe(file: &File) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        file.metadata().is_ok_and(|m| m.file_type().is_fifo())
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        false
    }
}

fn no_writer() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "it is a pipe (FIFO) with no writer: nothing to read (is the program that writes it \
         running?)",
    )
}

fn silent_pipe() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "nothing arrived on it for {} s (a pipe, FIFO or terminal whose writer sends \
             nothing)",
            PIPE_WAIT.as_secs()
        ),
    )
}

/// [`read_capped`] as UTF-8 text.
pub fn read_capped_string(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_capped(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"))
}

/// Bytes gathered up to a cap from a source that arrives in pieces: a file as it is read, an
/// HTTP body chunk by chunk. What is beyond the cap is never kept.
#[derive(Debug)]
pub struct Capped {
    limit: usize,
    bytes: Vec<u8>,
    over: bool,
}

impl Capped {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: Vec::new(),
            over: false,
        }
    }

    /// Add `chunk`, as much of it as fits; `false` once more than the cap has arrived.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        let room = self.limit - self.bytes.len();
        if chunk.len() > room {
            self.over = true;
        }
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
        !self.over
    }

    /// Whether more than the cap arrived (the bytes kept are its first `limit`).
    pub fn is_over(&self) -> bool {
        self.over
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
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

/// The words of an answer over `limit` bytes: `the answer is larger than 64 KiB, the most
/// aai-live reads of one`.
pub fn answer_too_large(what: &str, limit: usize) -> String {
    format!(
        "{what} is larger than {}, the most aai-live reads of one",
        show_bytes(limit as u64)
    )
}

pub fn show_bytes(n: u64) -> String {
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
    fn fifos_without_a_writer_or_without_data_are_refused_and_pipes_with_one_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        // No writer: at once (a blocking open would wait forever).
        let e = read_capped(&path, MAX_FILE_BYTES).expect_err("no writer");
        assert!(e.to_string().contains("no writer"), "{e}");
        // A writer that sends nothing: refused after PIPE_WAIT.
        let reader = open_for_reading(&path).expect("open");
        let silent = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("writer");
        let e = read_capped_file(reader, MAX_FILE_BYTES).expect_err("silent");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        drop(silent);
        // A writer that writes a little late: read to its end.
        let reader = open_for_reading(&path).expect("open");
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("writer");
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            std::io::Write::write_all(&mut writer, b"[ui]\nfps = 12\n").expect("write");
        });
        assert_eq!(
            read_capped_file(reader, MAX_FILE_BYTES).expect("read"),
            b"[ui]\nfps = 12\n"
        );
        late.join().expect("writer thread");
    }

    proptest::proptest! {
        /// Whatever the size and the cap, a read keeps at most the cap and refuses exactly the
        /// contents over it; chunked gathering agrees with it.
        #[test]
        fn caps_hold_for_any_size(len in 0_usize..5000, limit in 0_u64..5000, piece in 1_usize..700) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("f");
            let content: Vec<u8> = (0..len).map(|i| i as u8).collect();
            std::fs::write(&path, &content).expect("write");
            match read_capped(&path, limit) {
                Ok(bytes) => proptest::prop_assert!(len as u64 <= limit && bytes == content),
                Err(e) => {
                    proptest::prop_assert!(len as u64 > limit);
                    proptest::prop_assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
                }
            }
            let mut capped = Capped::new(limit as usize);
            let mut fits = true;
            for chunk in content.chunks(piece) {
                fits = capped.push(chunk);
                if !fits {
                    break;
                }
            }
            proptest::prop_assert_eq!(fits, len as u64 <= limit);
            proptest::prop_assert_eq!(capped.is_over(), !fits);
            let kept = capped.into_bytes();
            proptest::prop_assert!(kept.len() as u64 <= limit);
            proptest::prop_assert_eq!(&kept[..], &content[..kept.len()]);
        }
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
