//! Shared helpers for the integration tests: an in-process emulator on 127.0.0.1, WebSocket
//! clients, and generated audio.
#![allow(clippy::mod_module_files, dead_code)]

use std::time::Duration;

use aai_live::emulator::{self, EmulatorConfig, RunningEmulator};
use aai_live::protocol::ServerMessage;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const KEY: &str = "test-key-0123456789";

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Start an emulator on a free loopback port.
pub async fn start(config: EmulatorConfig) -> RunningEmulator {
    emulator::start(config, "127.0.0.1:0", None)
        .await
        .expect("emulator starts")
}

/// The defaults with our key, no processing delay (tests wait on messages, not on time) and no
/// pacing check (tests send audio as fast as they can unless they test pacing).
pub fn config() -> EmulatorConfig {
    EmulatorConfig {
        processing_delay: Duration::ZERO,
        pacing: None,
        ..EmulatorConfig::with_key(KEY)
    }
}

/// Mint a token; returns (status, JSON body).
pub async fn mint(emu: &RunningEmulator, query: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("{}?{query}", emu.token_url()))
        .header("Authorization", KEY)
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

pub async fn mint_token(emu: &RunningEmulator, query: &str) -> String {
    let (status, body) = mint(emu, query).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().expect("token").to_owned()
}

/// Connect with an Authorization header (or none) and a query string.
pub async fn connect(
    emu: &RunningEmulator,
    auth: Option<&str>,
    query: &str,
) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("{}?{query}", emu.ws_url())
        .into_client_request()
        .expect("request");
    if let Some(auth) = auth {
        request
            .headers_mut()
            .insert("Authorization", auth.parse().expect("header"));
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

pub async fn connect_key(emu: &RunningEmulator, query: &str) -> Ws {
    connect(emu, Some(KEY), query).await.expect("connect")
}

/// What a connection produced until it closed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub messages: Vec<ServerMessage>,
    /// `None` when the connection ended without a close frame.
    pub close: Option<(u16, String)>,
    pub abnormal: bool,
}

impl Outcome {
    pub fn turns(&self) -> Vec<&aai_live::protocol::Turn> {
        self.messages
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Turn(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    pub fn finals(&self) -> Vec<&aai_live::protocol::Turn> {
        self.turns().into_iter().filter(|t| t.end_of_turn).collect()
    }

    pub fn error(&self) -> Option<&aai_live::protocol::ErrorMessage> {
        self.messages.iter().find_map(|m| match m {
            ServerMessage::Error(e) => Some(e),
            _ => None,
        })
    }

    pub fn code(&self) -> Option<u16> {
        self.close.as_ref().map(|(c, _)| *c)
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.messages.iter().map(ServerMessage::kind).collect()
    }
}

/// Read until the server closes (bounded, so a hang fails the test instead of blocking it).
pub async fn read_to_close(ws: &mut Ws) -> Outcome {
    read_for(ws, Duration::from_secs(20)).await
}

pub async fn read_for(ws: &mut Ws, limit: Duration) -> Outcome {
    let mut out = Outcome::default();
    let _ = tokio::time::timeout(limit, async {
        while let Some(item) = ws.next().await {
            match item {
                Ok(Message::Text(t)) => out
                    .messages
                    .push(ServerMessage::parse(t.as_str()).expect("server JSON")),
                Ok(Message::Close(frame)) => {
                    out.close = Some(frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    }));
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    out.abnormal = true;
                    break;
                }
            }
        }
    })
    .await;
    out
}

/// Read messages until one matches, returning everything read (bounded).
pub async fn read_until(ws: &mut Ws, pred: impl Fn(&ServerMessage) -> bool) -> Vec<ServerMessage> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                let m = ServerMessage::parse(t.as_str()).expect("server JSON");
                let done = pred(&m);
                out.push(m);
                if done {
                    break;
                }
            }
        }
    })
    .await;
    out
}

pub async fn send_json(ws: &mut Ws, json: &str) {
    ws.send(Message::Text(json.into())).await.expect("send");
}

pub async fn terminate(ws: &mut Ws) {
    send_json(ws, r#"{"type":"Terminate"}"#).await;
}

pub fn close_code(code: CloseCode) -> u16 {
    u16::from(code)
}

/// 16 kHz mono s16le: a 440 Hz tone for `ms`.
pub fn tone(ms: u64) -> Vec<u8> {
    (0..16 * ms)
        .flat_map(|i| {
            let s =
                ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 16_000.0).sin() * 8000.0) as i16;
            s.to_le_bytes()
        })
        .collect()
}

pub fn silence(ms: u64) -> Vec<u8> {
    vec![0; (32 * ms) as usize]
}

/// Three spoken-like "words" (300 ms tone, 100 ms gap) and a second of silence.
pub fn speech() -> Vec<u8> {
    let mut a = Vec::new();
    for _ in 0..3 {
        a.extend(tone(300));
        a.extend(silence(100));
    }
    a.extend(silence(1000));
    a
}

/// Send `audio` in `chunk_ms` messages, paced in real time when `paced`.
pub async fn stream(ws: &mut Ws, audio: &[u8], chunk_ms: u64, paced: bool) {
    let chunk = (32 * chunk_ms) as usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(chunk_ms));
    for piece in audio.chunks(chunk) {
        if paced {
            ticker.tick().await;
        }
        ws.send(Message::Binary(piece.to_vec().into()))
            .await
            .expect("send audio");
    }
}

/// A log writer that keeps everything written, for the secret-leak tests.
#[derive(Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

/// A secret as it appears in a URL query.
pub fn encoded(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Fail if `secret` (plain or percent-encoded) is in `haystack`.
pub fn assert_clean(haystack: &str, secret: &str, what: &str) {
    assert!(!haystack.contains(secret), "{what} leaked:\n{haystack}");
    assert!(
        !haystack.contains(&encoded(secret)),
        "{what} leaked percent-encoded:\n{haystack}"
    );
}

/// `n` utterances at 16 kHz: three 300 ms "words" 100 ms apart, then 1 s of silence (2.2 s
/// each); a different pitch per word, so misplaced audio never compares equal.
pub fn utterances(n: usize) -> Vec<i16> {
    const RATE: u32 = 16_000;
    let mut out = Vec::new();
    let mut phase = 0.0_f64;
    for u in 0..n {
        for w in 0..3 {
            let freq = 300.0 + 40.0 * (u * 3 + w) as f64;
            for _ in 0..RATE * 3 / 10 {
                phase += 2.0 * std::f64::consts::PI * freq / f64::from(RATE);
                out.push((phase.sin() * 9000.0) as i16);
            }
            out.extend(std::iter::repeat_n(0, (RATE / 10) as usize));
        }
        out.extend(std::iter::repeat_n(0, RATE as usize));
    }
    out
}

/// Write 16 kHz mono s16 samples as a WAV file.
pub fn write_wav(path: &std::path::Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("wav");
    for s in samples {
        w.write_sample(*s).expect("sample");
    }
    w.finalize().expect("finalize");
}

/// The real `aai-live` binary as a tokio child with an isolated environment: HOME and XDG dirs
/// under `home` (also the working directory), no `AAI_LIVE*` variables, no `RUST_LOG`, no
/// `ASSEMBLYAI_API_KEY`; stdout and stderr piped, killed when dropped.
pub fn aai_live(home: &std::path::Path) -> tokio::process::Command {
    use std::process::Stdio;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aai-live"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AAI_LIVE") {
            cmd.env_remove(&name);
        }
    }
    cmd.env_remove("RUST_LOG")
        .env_remove("ASSEMBLYAI_API_KEY")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// 50 ms at 16 kHz: one chunk on the wire.
pub const CHUNK: usize = 800;

/// `n` utterances, cut to whole chunks, each chunk watermarked with its index (+1, so silence
/// never matches): samples 0 and 1 are `k + 1` and `-(k + 1)`. Too faint to count as voice.
pub fn marked_input(n: usize) -> Vec<i16> {
    watermark(utterances(n))
}

/// `samples` cut to whole chunks, each chunk watermarked (see [`marked_input`]).
pub fn watermark(mut samples: Vec<i16>) -> Vec<i16> {
    samples.truncate(samples.len() / CHUNK * CHUNK);
    for (k, chunk) in samples.chunks_mut(CHUNK).enumerate() {
        let mark = i16::try_from(k + 1).expect("few chunks");
        chunk[0] = mark;
        chunk[1] = -mark;
    }
    samples
}

/// The chunk index a recorded chunk carries.
pub fn mark_of(chunk: &[i16]) -> Option<usize> {
    (chunk.len() >= 2 && chunk[0] > 0 && chunk[1] == -chunk[0])
        .then(|| usize::try_from(chunk[0] - 1).expect("positive"))
}

/// A self-signed leaf certificate (and its key) for IP 127.0.0.1 and DNS localhost.
pub struct SelfSigned {
    dir: tempfile::TempDir,
}

impl SelfSigned {
    pub fn generate() -> Self {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let output = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "1"])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            // `req -x509` marks the certificate as a CA by default, and rustls (webpki) refuses a
            // CA certificate as a server's own ("CaUsedAsEndEntity"): make it a leaf.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs the `openssl` command-line tool to make a test certificate \
                     (Debian/Ubuntu: apt-get install openssl): cannot run it: {e}"
                )
            });
        assert!(
            output.status.success(),
            "openssl req failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Self { dir }
    }

    pub fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }

    pub fn files(&self) -> aai_live::listener::TlsFiles {
        aai_live::listener::TlsFiles {
            cert: self.cert(),
            key: self.key(),
        }
    }

    pub fn pem(&self) -> Vec<u8> {
        std::fs::read(self.cert()).expect("cert.pem")
    }
}

/// What a run of the binary printed and the most memory it held.
pub struct Measured {
    pub output: std::process::Output,
    /// The peak resident set (VmHWM) in KiB, as last read before the process ended.
    pub peak_kib: u64,
}

impl Measured {
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
}

/// Run `cmd` to its end (at most `limit`, else panic) while reading its peak resident set from
/// /proc every 10 ms: a bounded read shows as a small peak whatever the input's size.
pub async fn run_measured(mut cmd: tokio::process::Command, limit: Duration) -> Measured {
    let child = cmd.spawn().expect("spawn aai-live");
    let pid = child.id().expect("pid");
    let status = format!("/proc/{pid}/status");
    let waited = tokio::spawn(child.wait_with_output());
    let mut peak_kib = 0;
    let deadline = tokio::time::Instant::now() + limit;
    while !waited.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running after {limit:?} (peak {peak_kib} KiB so far)"
        );
        if let Some(kib) = std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        }) {
            peak_kib = peak_kib.max(kib);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let output = waited.await.expect("join").expect("output");
    Measured { output, peak_kib }
}

/// The most a hostile-input case may hold: 100 MiB (the binary alone is about a tenth of it).
pub const PEAK_KIB_LIMIT: u64 = 100 * 1024;

/// (stream offset in samples, recorded samples) per session of input `label` (16 kHz), in
/// stream order, from the emulator's `--record` directory (see [`sessions_received`]).
pub fn received(
    record: &std::path::Path,
    events: &[serde_json::Value],
    label: &str,
) -> Vec<(u64, Vec<i16>)> {
    sessions_received(record, events, Some(label))
        .into_iter()
        .map(|(_, base, samples)| (base, samples))
        .collect()
}

/// (generation, stream offset in samples, recorded samples) per session of input `label`
/// (`None`: events without inputs, such as the browser client's), in stream order: the session
/// ids from the `begin` events, each session's base from its `begin` (a first session or a
/// reconnect), its `rotation` (a successor) or its `reconnected` (the replay's start); the audio
/// from the emulator's `--record` directory (16 kHz).
pub fn sessions_received(
    record: &std::path::Path,
    events: &[serde_json::Value],
    label: Option<&str>,
) -> Vec<(u64, u64, Vec<i16>)> {
    let mut ids: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    let mut bases: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for e in events
        .iter()
        .filter(|e| label.is_none_or(|l| e["source"] == l))
    {
        let n = |k: &str| e[k].as_u64().unwrap_or_default();
        match e["event"].as_str() {
            Some("begin") => {
                ids.insert(
                    n("generation"),
                    e["session_id"].as_str().expect("id").into(),
                );
                bases
                    .entry(n("generation"))
                    .or_insert(n("stream_offset_ms") * 16);
            }
            Some("rotation") => {
                bases.insert(n("to"), n("stream_offset_ms") * 16);
            }
            Some("reconnected") => {
                bases.insert(n("generation"), n("replay_from_ms") * 16);
            }
            _ => {}
        }
    }
    let mut out: Vec<(u64, u64, Vec<i16>)> = ids
        .iter()
        .filter_map(|(g, id)| {
            let bytes = std::fs::read(record.join(format!("{id}.pcm"))).ok()?;
            let samples: Vec<i16> = bytes
                .chunks_exact(2)
                .map(|p| i16::from_le_bytes([p[0], p[1]]))
                .collect();
            (!samples.is_empty()).then(|| (*g, bases[g], samples))
        })
        .collect();
    out.sort_by_key(|(_, base, _)| *base);
    out
}

/// Every recorded sample equals `archive` (the input, or its archive) at its offset, and
/// together the sessions cover it from its first sample to its last.
pub fn assert_lossless(label: &str, parts: &[(u64, Vec<i16>)], archive: &[i16]) {
    assert!(!parts.is_empty(), "{label}: no audio received");
    let mut covered_to = 0usize;
    for (base, samples) in parts {
        let base = *base as usize;
        assert!(
            base <= covered_to,
            "{label}: samples {covered_to}..{base} reached no session"
        );
        let end = base + samples.len();
        assert!(
            end <= archive.len(),
            "{label}: a session received samples {base}..{end}, the archive has {}",
            archive.len()
        );
        assert!(
            archive[base..end] == samples[..],
            "{label}: the audio received at {base}..{end} differs from the archive"
        );
        covered_to = covered_to.max(end);
    }
    assert_eq!(
        covered_to,
        archive.len(),
        "{label}: the end of the archive reached the service"
    );
}
