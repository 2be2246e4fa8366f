//! Every read of something from outside is bounded, and what cannot be read is refused at once
//! with a clear error: the real binary against hostile files (`/dev/zero` as a TLS certificate
//! or an emulator script, FIFOs nobody writes to) and hostile servers (an endless body, a
//! redirect, an endless header block), each run measured: it ends with the refusal, holding
//! under 100 MiB.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{KEY, Measured, PEAK_KIB_LIMIT, aai_live, run_measured};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BOUND: Duration = Duration::from_secs(60);

fn assert_bounded(run: &Measured, what: &str) {
    assert!(
        run.peak_kib > 0 && run.peak_kib < PEAK_KIB_LIMIT,
        "{what}: peak resident set {} KiB (limit {PEAK_KIB_LIMIT} KiB)\n{}",
        run.peak_kib,
        run.stderr()
    );
    eprintln!("{what}: peak resident set {} KiB", run.peak_kib);
}

/// A loopback HTTP server that answers every connection with `head` and then, if `endless`,
/// zeros until the client goes away.
async fn hostile_server(head: Vec<u8>, endless: bool) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let head = head.clone();
            tokio::spawn(async move {
                let mut request = [0_u8; 4096];
                let _ = socket.read(&mut request).await;
                if socket.write_all(&head).await.is_err() {
                    return;
                }
                let zeros = vec![b'0'; 64 * 1024];
                while endless && socket.write_all(&zeros).await.is_ok() {}
            });
        }
    });
    (port, task)
}

async fn doctor_server(port: u16) -> (Measured, Vec<serde_json::Value>) {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = aai_live(home.path());
    cmd.args([
        "doctor",
        "--json",
        "--keep-going",
        "--server",
        &format!("http://127.0.0.1:{port}/token"),
    ]);
    let run = run_measured(cmd, BOUND).await;
    let steps = run
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (run, steps)
}

fn step<'a>(steps: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    steps
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {steps:?}"))
}

/// A server that answers 200 and streams zeros: `doctor --server` reads 64 KiB of each answer,
/// as the providers do, and says the answer is too large (it used to read it all: 2.9 GB in
/// 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_server_reads_at_most_64_kib_of_an_endless_answer() {
    let (port, task) = hostile_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n".to_vec(),
        true,
    )
    .await;
    let (run, steps) = doctor_server(port).await;
    assert_bounded(&run, "doctor --server, endless body");
    let no_credential = step(&steps, "server-no-credential");
    assert_eq!(no_credential["status"], "fail", "{no_credential}");
    assert!(
        no_credential["detail"]
            .as_str()
            .is_some_and(|d| d.contains("larger than 64 KiB")),
        "{no_credential}"
    );
    assert_eq!(no_credential["section"], "http-answer");
    task.abort();
}

/// A 302 is a redirect, not a missing path; an endless header block is a broken answer, not a
/// refused connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_server_says_what_happened() {
    let (port, task) = hostile_server(
        b"HTTP/1.1 302 Found\r\nLocation: https://elsewhere.example/token?key=secret\r\n\
          Content-Length: 0\r\n\r\n"
            .to_vec(),
        false,
    )
    .await;
    let (_, steps) = doctor_server(port).await;
    let no_credential = step(&steps, "server-no-credential");
    assert_eq!(no_credential["section"], "serve-3xx", "{no_credential}");
    let detail = no_credential["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("redirects to https://elsewhere.example/token"),
        "{detail}"
    );
    assert!(!detail.contains("secret"), "{detail}");
    assert!(
        !no_credential["cause"]
            .as_str()
            .unwrap_or_default()
            .contains("404"),
        "{no_credential}"
    );
    task.abort();

    // Headers without end.
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..20_000 {
        head.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    let (port, task) = hostile_server(head, false).await;
    let (run, steps) = doctor_server(port).await;
    assert_bounded(&run, "doctor --server, endless header block");
    let reachable = step(&steps, "server-reachable");
    assert_eq!(reachable["status"], "fail", "{reachable}");
    assert_eq!(reachable["section"], "http-answer", "{reachable}");
    task.abort();
}

/// `serve` with `/dev/zero` as its TLS certificate and key: refused at start after 1 MiB (it
/// used to read 7 GB in 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_are_read_bounded() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = aai_live(home.path());
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-auth",
        "--tls-cert",
        "/dev/zero",
        "--tls-key",
        "/dev/zero",
    ])
    .env("ASSEMBLYAI_API_KEY", KEY);
    let run = run_measured(cmd, BOUND).await;
    assert_bounded(&run, "serve --tls-cert /dev/zero");
    assert!(!run.output.status.success());
    let stderr = run.stderr();
    assert!(
        stderr.contains("certificate") && stderr.contains("larger than 1 MiB"),
        "{stderr}"
    );
    assert!(!run.stdout().contains("listening"), "{}", run.stdout());
}

/// `aai-live emulate` with `flag /dev/zero`: refused, bounded, with `said` on stderr.
async fn emulate_refuses_dev_zero(flag: &str, said: &str) {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = aai_live(home.path());
    cmd.args([
        "emulate",
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        "k",
        flag,
        "/dev/zero",
    ]);
    let run = run_measured(cmd, BOUND).await;
    assert_bounded(&run, &format!("emulate {flag} /dev/zero"));
    assert!(!run.output.status.success());
    let stderr = run.stderr();
    assert!(
        stderr.contains("/dev/zero") && stderr.contains(said),
        "{stderr}"
    );
}

/// `emulate --script /dev/zero`: refused after 16 MiB (it used to read 7.2 GB in 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulator_script_is_read_bounded() {
    emulate_refuses_dev_zero("--script", "larger than 16 MiB").await;
}

/// `emulate --replay /dev/zero`: refused after 64 MiB, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_trace_is_read_bounded() {
    emulate_refuses_dev_zero("--replay", "larger than 64 MiB").await;
}

fn fifo(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    path
}

/// A FIFO with no writer, as the config file or the key file: refused at once, naming it (an
/// open without `O_NONBLOCK` waited for a writer forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_without_a_writer_is_refused() {
    let home = tempfile::tempdir().expect("tempdir");
    let config = fifo(home.path(), "config.toml");
    let mut cmd = aai_live(home.path());
    cmd.args([
        "--config",
        &config.display().to_string(),
        "config",
        "--check",
    ]);
    let run = run_measured(cmd, BOUND).await;
    assert_eq!(run.output.status.code(), Some(2), "{}", run.stderr());
    assert!(run.stderr().contains("no writer"), "{}", run.stderr());

    let key = fifo(home.path(), "key");
    let mut cmd = aai_live(home.path());
    cmd.args(["token"]).env(
        "AAI_LIVE__PROVIDER__API_KEY__KEY_FILE",
        key.display().to_string(),
    );
    let run = run_measured(cmd, BOUND).await;
    assert!(!run.output.status.success(), "{}", run.stdout());
    let stderr = run.stderr();
    assert!(
        stderr.contains("no writer") && stderr.contains(&key.display().to_string()),
        "{stderr}"
    );
}

/// Pipes that have a writer still work: `--config /dev/stdin` and `--config <(…)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_with_a_writer_still_work() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = aai_live(home.path());
    cmd.args(["--config", "/dev/stdin", "config", "--check"])
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"[ui]\nfps = 12\n")
        .await
        .expect("write stdin");
    drop(stdin);
    let out = tokio::time::timeout(BOUND, child.wait_with_output())
        .await
        .expect("ends")
        .expect("output");
    assert_checked(&out, "fps = 12");

    // Process substitution, through bash.
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("-c")
        .arg("exec \"$0\" --config <(sleep 0.3; printf '[ui]\\nfps = 13\\n') config --check")
        .arg(env!("CARGO_BIN_EXE_aai-live"))
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .kill_on_drop(true);
    let out = tokio::time::timeout(BOUND, cmd.output())
        .await
        .expect("ends")
        .expect("output");
    assert_checked(&out, "fps = 13");
}

/// `config --check` succeeded and printed `setting`.
fn assert_checked(out: &std::process::Output, setting: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(setting), "{stdout}");
}
