//! A real `redis-server` for the tests (Debian's package; `make deps` installs it), started on a
//! free loopback port with its own temporary directory, no persistence, and killed when dropped.
//! It never touches a system daemon on 6379.
//!
//! Without `redis-server` on PATH, [`RedisServer::start`] prints why and returns `None`, so a
//! developer without it skips the Redis tests; with `CI` set (to anything but `false` or `0`) it
//! panics instead, so CI cannot pass by skipping them.
//!
//! Include it with `#[path = "common/redis.rs"] mod redis_server;`.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server has to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// What the server requires of its clients.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass`.
    pub password: Option<String>,
    /// Serve TLS only (a CA and a certificate for 127.0.0.1 are generated with openssl).
    pub tls: bool,
    /// More configuration, as `redis-server` arguments (`--user`, ...).
    pub args: Vec<String>,
}

/// A running `redis-server` child.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    options: RedisOptions,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether `redis-server` can be run; otherwise the skip message (or, on CI, a panic).
fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !ci(),
            "redis-server is not installed, and CI is set: the Redis tests must run there \
             (make deps installs it: apt-get install redis-server)"
        );
        eprintln!(
            "SKIPPED: redis-server is not installed (apt-get install redis-server, or make deps); \
             the Redis tests did not run"
        );
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    /// A plain server without a password, or `None` when redis-server is missing (not on CI).
    pub fn start() -> Option<Self> {
        Self::start_with(&RedisOptions::default())
    }

    pub fn start_with(options: &RedisOptions) -> Option<Self> {
        if !available() {
            return None;
        }
        // A port found free can be taken before redis binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = Self {
                child: None,
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir for redis-server"),
                options: options.clone(),
            };
            if options.tls {
                make_tls_material(server.dir.path());
            }
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// `redis://127.0.0.1:PORT/0` (or `rediss://`).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id (for CPU accounting), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that did not sign it (for the test that a wrong CA is refused).
    pub fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// Kill the server (as a crash would) and wait for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + READY_WITHIN;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "redis-server still accepts after kill"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start it again on the same port (its data is gone: no persistence).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match self.spawn() {
                Ok(()) => return,
                // The port may linger for a moment after the kill.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("redis-server restart: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("redis-server did not restart on port {}: {e}", self.port),
            }
        }
    }

    /// A Redis command over a plain connection (`None` for a TLS server), the raw reply.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        if self.options.tls {
            return None;
        }
        let mut socket = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).ok()?;
        socket.set_read_timeout(Some(READY_WITHIN)).ok()?;
        let mut request = String::new();
        if let Some(password) = &self.options.password {
            request.push_str(&resp(&["AUTH", password]));
        }
        request.push_str(&resp(args));
        socket.write_all(request.as_bytes()).ok()?;
        std::thread::sleep(Duration::from_millis(50));
        let mut reply = vec![0; 64 * 1024];
        let n = socket.read(&mut reply).ok()?;
        Some(String::from_utf8_lossy(&reply[..n]).into_owned())
    }

    fn spawn(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(["--daemonize", "no"]);
        if self.options.tls {
            cmd.args([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(dir.join("server.pem"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.pem"));
        } else {
            cmd.args(["--port", &port]);
        }
        if let Some(password) = &self.options.password {
            cmd.args(["--requirepass", password]);
        }
        cmd.args(&self.options.args);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        let deadline = Instant::now() + READY_WITHIN;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                return Err(format!("redis-server exited ({status}): {log}"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "not accepting on port {} after {READY_WITHIN:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn resp(args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n{arg}\r\n", arg.len());
    }
    out
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA, with openssl.
fn make_tls_material(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the Redis TLS test needs the openssl command-line tool");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    for (key, cert, name) in [
        ("ca.key", "ca.pem", "/CN=aai-live test CA"),
        ("other-ca.key", "other-ca.pem", "/CN=another CA"),
    ] {
        openssl(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days",
            "1", "-subj", name,
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
    )
    .expect("write the extension file");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "server.ext",
    ]);
}
