//! `aai-live serve` as a user runs it: the real binary on 127.0.0.1 with the emulator upstream,
//! its first-line contract, the key from a file or the environment, `--hash-credential`, flag
//! and start errors, SIGTERM, and a log file that names clients but holds no secret.
//!
//! Every child runs with HOME and the XDG directories inside a temporary directory and without
//! the developer's `AAI_LIVE*` variables, `ASSEMBLYAI_API_KEY` and `RUST_LOG`.

mod common;

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use aai_live::server::hash_credential;
use common::KEY;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const FIRST_LINE: &str = "aai-live serve listening on http://127.0.0.1:";
const CREDENTIAL: &str = "cli-credential-0123456789abcdef";
const BOUND: Duration = Duration::from_secs(10);

use common::aai_live;

fn secret_file(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A running `aai-live serve` child (killed when dropped).
struct CliServer {
    child: Child,
    port: u16,
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl CliServer {
    async fn spawn(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start(serve_command(home, args, env)).await
    }

    async fn start(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn aai-live");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = match tokio::time::timeout(BOUND, stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = child.start_kill();
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = tokio::time::timeout(BOUND, e.read_to_string(&mut stderr)).await;
                }
                panic!("no first stdout line ({other:?}); stderr: {stderr}");
            }
        };
        let port = line
            .strip_prefix(FIRST_LINE)
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("first line {line:?} is not \"{FIRST_LINE}PORT\""));
        assert_ne!(port, 0);
        Self {
            child,
            port,
            _stdout: stdout,
        }
    }

    async fn mint(&self) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/token", self.port))
            .bearer_auth(CREDENTIAL)
            .timeout(BOUND)
            .send()
            .await
            .expect("token request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// SIGTERM (through `kill`: this crate forbids unsafe code and has no libc), then the exit.
    async fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success());
        let Ok(status) = tokio::time::timeout(BOUND, self.child.wait()).await else {
            let _ = self.child.start_kill();
            panic!("aai-live serve did not exit within {BOUND:?}");
        };
        status.expect("wait")
    }
}

fn serve_command(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = aai_live(home);
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `cmd` run with at most `files` open files (`ulimit -n` in a shell that then execs it, so the
/// pid stays the program's), with the same environment and directory.
fn with_open_file_limit(cmd: &Command, files: u32) -> Command {
    let std = cmd.as_std();
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
        .arg(std.get_program())
        .args(std.get_args());
    limited.env_clear();
    for (name, value) in std::env::vars_os() {
        limited.env(name, value);
    }
    for (name, value) in std.get_envs() {
        match value {
            Some(value) => limited.env(name, value),
            None => limited.env_remove(name),
        };
    }
    if let Some(dir) = std.get_current_dir() {
        limited.current_dir(dir);
    }
    limited
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    limited
}

async fn run_to_exit(
    home: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (ExitStatus, String, String) {
    let mut cmd = aai_live(home);
    cmd.args(args);
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn");
    if let Some(text) = stdin {
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(text.as_bytes()).await.expect("write stdin");
    }
    let output = tokio::time::timeout(BOUND, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("aai-live {args:?} did not exit"))
        .expect("output");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_mints_logs_without_secrets_and_stops_on_sigterm() {
    let emu = common::start(common::config()).await;
    let home = TempDir::new().expect("tempdir");
    let creds = home.path().join("credentials");
    std::fs::write(
        &creds,
        format!("# clients\nlaptop:{}\n", hash_credential(CREDENTIAL)),
    )
    .expect("write");
    let key_file = home.path().join("key");
    secret_file(&key_file, KEY);
    let log = home.path().join("serve.log");
    let server = CliServer::spawn(
        home.path(),
        &[
            "--credentials",
            &creds.display().to_string(),
            "--key-file",
            &key_file.display().to_string(),
            "--upstream",
            &emu.base_url(),
            "--expires-in",
            "30",
            "--log-file",
            &log.display().to_string(),
            "--log-level",
            "trace",
        ],
        &[],
    )
    .await;
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (status, body) = server.mint().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["expires_in_seconds"], 30);
        tokens.push(body["token"].as_str().expect("token").to_owned());
    }
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", server.port))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let status = server.stop().await;
    assert!(status.success(), "a clean exit on SIGTERM: {status}");

    let text = std::fs::read_to_string(&log).expect("log file");
    assert!(text.contains("token server listening"), "{text}");
    assert!(
        text.lines()
            .filter(|l| l.contains("aai_live::server::access")
                && l.contains("client=\"laptop\"")
                && l.contains("status=200")
                && l.contains("latency_ms="))
            .count()
            >= 2,
        "{text}"
    );
    assert!(
        text.contains("token server stopped"),
        "graceful shutdown logged: {text}"
    );
    for secret in [KEY, CREDENTIAL]
        .iter()
        .copied()
        .chain(tokens.iter().map(String::as_str))
    {
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        assert!(
            !text.contains(secret) && !text.contains(&encoded),
            "a secret in the log:\n{text}"
        );
    }
}

/// The key from the environment, no authentication on loopback, for plain clients only: a
/// request a browser marks as another site's (`Sec-Fetch-*` without `Origin`) and a request
/// naming no host are refused; plain curl gets a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_from_the_environment_and_no_auth_on_loopback() {
    let emu = common::start(common::config()).await;
    let home = TempDir::new().expect("tempdir");
    let server = CliServer::spawn(
        home.path(),
        &[
            "--no-auth",
            "--upstream",
            &emu.token_url(),
            "--key-env",
            "MY_AAI_KEY",
        ],
        &[("MY_AAI_KEY", KEY)],
    )
    .await;
    let url = format!("http://127.0.0.1:{}/token", server.port);
    let http = reqwest::Client::new();
    for headers in [
        &[("sec-fetch-site", "cross-site")][..],
        &[
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", "image"),
        ],
        &[
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ],
    ] {
        let mut request = http.get(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("token request");
        assert_eq!(response.status(), 403, "{headers:?}");
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "forbidden", "{body}");
    }
    // HTTP/1.0 without Host names no host.
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    socket
        .write_all(b"GET /token HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(BOUND, socket.read_to_string(&mut answer))
        .await
        .expect("answered")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.0 403"), "{answer}");
    // curl, when it is installed (it sends no Sec-Fetch-*); reqwest stands in for it otherwise.
    let curl = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .await;
    match curl {
        Ok(out) => assert_eq!(String::from_utf8_lossy(&out.stdout), "200"),
        Err(_) => assert_eq!(http.get(&url).send().await.expect("token").status(), 200),
    }
    assert!(server.stop().await.success());
}

#[tokio::test]
async fn hash_credential_and_start_errors() {
    let home = TempDir::new().expect("tempdir");
    let (status, out, _) = run_to_exit(
        home.path(),
        &["serve", "--hash-credential"],
        Some(&format!("{CREDENTIAL}\n")),
    )
    .await;
    assert!(status.success());
    assert_eq!(out, format!("{}\n", hash_credential(CREDENTIAL)));

    // No authentication chosen, neither by a flag nor in the configuration: no start.
    let (status, _, err) = run_to_exit(home.path(), &["serve"], None).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("--credentials FILE (`server.credentials`)") && err.contains("--no-auth"),
        "{err}"
    );
    // No authentication off loopback.
    let (status, _, err) = run_to_exit(
        home.path(),
        &["serve", "--no-auth", "--listen", "0.0.0.0:0"],
        Some(""),
    )
    .await;
    assert!(!status.success());
    assert!(err.contains("only on a loopback address"), "{err}");
    // No key.
    let (status, _, err) = run_to_exit(home.path(), &["serve", "--no-auth"], None).await;
    assert!(!status.success());
    assert!(err.contains("ASSEMBLYAI_API_KEY is not set"), "{err}");
    // A credentials file holding a plain credential: the line is named, never quoted.
    let creds = home.path().join("credentials");
    std::fs::write(&creds, format!("laptop:{CREDENTIAL}\n")).expect("write");
    let (status, _, err) = run_to_exit(
        home.path(),
        &["serve", "--credentials", &creds.display().to_string()],
        None,
    )
    .await;
    assert!(!status.success());
    assert!(
        err.contains("line 1") && err.contains("--hash-credential"),
        "{err}"
    );
    assert!(!err.contains(CREDENTIAL), "{err}");
    // A bad rate.
    let (status, _, err) = run_to_exit(
        home.path(),
        &["serve", "--no-auth", "--rate-limit", "fast"],
        None,
    )
    .await;
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("N/PERIOD"), "{err}");
}

/// `serve --no-auth` minting at `emu`, with `args`, under an open-file limit of 128.
async fn serve_with_128_files(
    emu: &aai_live::emulator::RunningEmulator,
    home: &TempDir,
    args: &[&str],
) -> CliServer {
    let base = emu.base_url();
    let mut all = vec!["--no-auth", "--upstream", &base, "--key-env", "MY_AAI_KEY"];
    all.extend_from_slice(args);
    let cmd = serve_command(home.path(), &all, &[("MY_AAI_KEY", KEY)]);
    CliServer::start(with_open_file_limit(&cmd, 128)).await
}

/// Up to `n` sockets connected to `port` that never send anything.
async fn idle_sockets(port: u16, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut idle = Vec::new();
    for _ in 0..n {
        if let Ok(socket) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            idle.push(socket);
        }
    }
    idle
}

/// Idle connections cannot take the descriptors the server needs for its own work: under an
/// open-file limit of 128, 300 idle sockets used to leave `serve` unable to open a connection to
/// the upstream (a 502 for a client already connected); with `--max-connections 40` the
/// excess is closed as it arrives and the token is minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_exhaust_the_servers_files() {
    let emu = common::start(common::config()).await;
    let home = TempDir::new().expect("tempdir");
    let server = serve_with_128_files(&emu, &home, &["--max-connections", "40"]).await;
    // A client that is already connected (one keep-alive connection)...
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(BOUND)
        .build()
        .expect("client");
    let base = format!("http://127.0.0.1:{}", server.port);
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    health.bytes().await.expect("body");
    // ...then 300 idle sockets...
    let idle = idle_sockets(server.port, 300).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...and the server still has a descriptor for the upstream, at once (without the cap the
    // request waited until the header timeout had closed enough idle sockets, or failed).
    let asked = std::time::Instant::now();
    let token = client.get(format!("{base}/token")).send().await;
    let waited = asked.elapsed();
    let (status, body) = match token {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    };
    assert_eq!(status, 200, "after {waited:?}: {body}");
    assert!(waited < Duration::from_secs(3), "the token took {waited:?}");
    drop(idle);
    assert!(server.stop().await.success());
}

/// Under `ulimit -n 128` with the default cap (512) `serve` fits its cap to the limit and says
/// so once; 300 idle sockets then cannot lock requests out: at the cap, a new connection takes the
/// place of the oldest one that has sent no request. (It used to only warn, and `/healthz` timed
/// out for about 12 s; a fitted cap alone still reset every `/healthz` until the header timeout
/// closed idle sockets.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_never_lock_requests_out_under_a_low_file_limit() {
    let emu = common::start(common::config()).await;
    let home = TempDir::new().expect("tempdir");
    let mut server = serve_with_128_files(&emu, &home, &[]).await;
    let mut stderr = server.child.stderr.take().expect("stderr");
    let idle = idle_sockets(server.port, 300).await;
    // A new client, on a new connection, after the idle ones: answered well before the header
    // timeout (10 s) would have freed a place.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let base = format!("http://127.0.0.1:{}", server.port);
    for path in ["/healthz", "/token"] {
        let asked = std::time::Instant::now();
        let answer = client.get(format!("{base}{path}")).send().await;
        let waited = asked.elapsed();
        let status = answer.map(|r| r.status().as_u16());
        assert!(
            matches!(status, Ok(200)),
            "{path}: {status:?} after {waited:?}"
        );
        eprintln!("{path} answered in {waited:?} with 300 idle sockets open");
    }
    drop(idle);
    assert!(server.stop().await.success());
    let mut text = String::new();
    stderr.read_to_string(&mut text).await.expect("stderr");
    assert_eq!(
        text.matches("server.max_connections 512 is above what the open-file limit (128) allows")
            .count(),
        1,
        "{text}"
    );
}

/// `--region` and `--upstream` choose where the server mints, through the same configuration
/// keys as the `api-key` provider (no process needed: the flags become config overrides).
#[test]
fn region_and_upstream_flags_pick_the_token_endpoint() {
    use aai_live::config::{LoadOptions, load};
    use aai_live::server::serve_cli::{ServeArgs, upstream_provider};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let home = TempDir::new().expect("tempdir");
    let key_file = home.path().join("key");
    secret_file(&key_file, KEY);
    let key_file = key_file.display().to_string();
    for (flags, endpoint) in [
        (vec![], "https://streaming.assemblyai.com/v3/token"),
        (
            vec!["--region", "eu"],
            "https://streaming.eu.assemblyai.com/v3/token",
        ),
        (
            vec!["--region", "us"],
            "https://streaming.us.assemblyai.com/v3/token",
        ),
        (
            vec!["--region", "eu", "--upstream", "http://127.0.0.1:8080"],
            "http://127.0.0.1:8080/v3/token",
        ),
    ] {
        let args = Cli::try_parse_from(
            ["serve", "--no-auth", "--key-file", &key_file]
                .into_iter()
                .chain(flags.iter().copied()),
        )
        .expect("flags")
        .serve;
        let loaded = load(&LoadOptions {
            overrides: args.config_overrides(),
            ..LoadOptions::defaults_only()
        })
        .expect("config");
        let provider = upstream_provider(&loaded.config).expect("upstream");
        assert_eq!(provider.source(), endpoint, "{flags:?}");
    }
    // A bad region is the configuration's error, naming the flag.
    let args = Cli::try_parse_from(["serve", "--no-auth", "--region", "mars"])
        .expect("flags")
        .serve;
    let e = load(&LoadOptions {
        overrides: args.config_overrides(),
        ..LoadOptions::defaults_only()
    })
    .expect_err("mars");
    assert!(e.to_string().contains("provider.api_key.region"), "{e}");
}
