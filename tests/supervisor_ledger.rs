//! The audio ledger on every path, under Tokio's paused clock: the supervisor runs against fake
//! connections (through the `Connector` seam) and a scripted fake token provider, fed chunks
//! whose content names their position. Each row of the table checks, to the sample, that
//! captured = sent + lost, that the fake sessions received a gap-free cover of the captured
//! audio minus exactly the reported losses (and nothing reported lost was sent), and the causes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aai_live::audio::{AudioChunk, AudioStats, InputEnd};
use aai_live::config::Config;
use aai_live::events::LossCause;
use aai_live::events::SessionEvent;
use aai_live::events::View;
use aai_live::protocol::CloseClass;
use aai_live::protocol::WsUrl;
use aai_live::protocol::messages::{Begin, ClientMessage, ServerMessage, Termination};
use aai_live::provider::{PreMintOptions, PreMinter, ProviderError, TokenProvider, TokenRequest};
use aai_live::secret::Token;
use aai_live::session::connection::{
    ConnEvent, Connection, Connector, Ended, EventSender, Outgoing,
};
use aai_live::session::{self, AudioFeed, SessionCommand, SupervisorOptions};
use aai_live::transcript::Transcript;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// 50 ms at 16 kHz.
const CHUNK: usize = 800;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// --- The fake service ------------------------------------------------------------------------

/// How one connection (by generation, in order) behaves.
#[derive(Debug, Clone)]
enum Script {
    /// `Begin` after this long; then take audio, answer Terminate with Termination + 1000.
    Begin(Duration),
    /// Closed with this code before `Begin`, after this long.
    CloseBeforeBegin(Duration, u16, &'static str),
    /// `Begin`, then drop the TCP connection (no close frame) after receiving this much audio.
    DropAfter(Duration, usize),
    /// `Begin`, then stop reading (and answering) after this many chunks.
    StopReadingAfter(Duration, usize),
    /// `Begin`, take audio, but never answer `Terminate` (the end is never confirmed).
    Unconfirmed(Duration),
    /// `Begin`, take audio, and answer `Terminate` with a 3008 close instead of `Termination`
    /// (the session expired just as the input ended; the last audio was never processed).
    ExpiresOnTerminate(Duration),
    /// `Begin` with `expires_at: 0` (a broken server), then as `Begin`.
    BeginExpiresAtZero(Duration),
    /// Opening this connection panics (a bug in a connector).
    Panics,
}

/// What the fake service saw: per connection, the chunks received (their first sample) and
/// how the client closed.
#[derive(Debug, Default)]
struct Seen {
    chunks: Vec<Vec<i16>>,
    /// When each chunk arrived.
    times: Vec<tokio::time::Instant>,
    client_closed: bool,
}

#[derive(Debug)]
struct FakeService {
    scripts: Mutex<VecDeque<Script>>,
    seen: Mutex<Vec<Arc<Mutex<Seen>>>>,
}

impl FakeService {
    fn new(scripts: impl IntoIterator<Item = Script>) -> Arc<Self> {
        Arc::new(Self {
            scripts: Mutex::new(scripts.into_iter().collect()),
            seen: Mutex::new(Vec::new()),
        })
    }

    /// Every chunk each connection received, as the first sample of each (the chunk's index).
    /// When connection `g` received each of its chunks.
    fn times(&self, g: usize) -> Vec<tokio::time::Instant> {
        self.seen
            .lock()
            .expect("lock")
            .get(g)
            .map(|s| s.lock().expect("lock").times.clone())
            .unwrap_or_default()
    }

    fn received(&self) -> Vec<Vec<i64>> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .map(|s| {
                s.lock()
                    .expect("lock")
                    .chunks
                    .iter()
                    .map(|c| i64::from(c[0]))
                    .collect()
            })
            .collect()
    }
}

fn begin_message(expires_at: Option<i64>) -> ServerMessage {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    ServerMessage::Begin(Begin {
        id: format!("fake-{now}"),
        expires_at: expires_at.unwrap_or(now + 3600),
        configuration: None,
    })
}

fn ended(code: Option<u16>, reason: &str, after_begin: bool) -> Ended {
    Ended::close(code, reason, None, after_begin)
}

impl Connector for FakeService {
    #[expect(
        clippy::too_many_lines,
        reason = "one scripted fake connection: each script's behaviour reads top to bottom"
    )]
    fn open(
        &self,
        generation: u64,
        _url: WsUrl,
        _header_token: Option<SecretString>,
        queue: usize,
        events: EventSender,
    ) -> Connection {
        let script = self
            .scripts
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(Script::Begin(ms(100)));
        assert!(!matches!(script, Script::Panics), "a connector with a bug");
        let seen = Arc::new(Mutex::new(Seen::default()));
        self.seen.lock().expect("lock").push(Arc::clone(&seen));
        let (tx, mut rx) = mpsc::channel(queue);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let send = |e| {
                    let _ = events.send((generation, e));
                };
                let (mut expires_at, mut unconfirmed, mut expires_on_terminate) =
                    (None, false, false);
                let (delay, drop_after, stop_reading_after) = match script {
                    Script::CloseBeforeBegin(after, code, reason) => {
                        tokio::time::sleep(after).await;
                        send(ConnEvent::Closed(ended(Some(code), reason, false)));
                        return;
                    }
                    Script::Begin(d) => (d, None, None),
                    Script::DropAfter(d, n) => (d, Some(n), None),
                    Script::StopReadingAfter(d, n) => (d, None, Some(n)),
                    Script::Unconfirmed(d) => {
                        unconfirmed = true;
                        (d, None, None)
                    }
                    Script::ExpiresOnTerminate(d) => {
                        expires_on_terminate = true;
                        (d, None, None)
                    }
                    Script::BeginExpiresAtZero(d) => {
                        expires_at = Some(0);
                        (d, None, None)
                    }
                    Script::Panics => unreachable!("checked above"),
                };
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return,
                }
                send(ConnEvent::Message(begin_message(expires_at)));
                loop {
                    let received = seen.lock().expect("lock").chunks.len();
                    if stop_reading_after.is_some_and(|n| received >= n) {
                        // Read nothing more: the queue fills, the client must notice.
                        stop.cancelled().await;
                        return;
                    }
                    let item = tokio::select! {
                        item = rx.recv() => item,
                        () = stop.cancelled() => {
                            seen.lock().expect("lock").client_closed = true;
                            return;
                        }
                    };
                    match item {
                        None => {
                            seen.lock().expect("lock").client_closed = true;
                            return;
                        }
                        Some(Outgoing::Audio(bytes)) => {
                            let chunk: Vec<i16> = bytes
                                .chunks_exact(2)
                                .map(|p| i16::from_le_bytes([p[0], p[1]]))
                                .collect();
                            let mut seen = seen.lock().expect("lock");
                            seen.chunks.push(chunk);
                            seen.times.push(tokio::time::Instant::now());
                            drop(seen);
                            if drop_after.is_some_and(|n| received + 1 >= n) {
                                send(ConnEvent::Closed(ended(None, "connection reset", true)));
                                return;
                            }
                        }
                        Some(Outgoing::Control(ClientMessage::Terminate)) if unconfirmed => {}
                        Some(Outgoing::Control(ClientMessage::Terminate))
                            if expires_on_terminate =>
                        {
                            // The audio just before the expiry was never processed.
                            let mut seen = seen.lock().expect("lock");
                            let n = seen.chunks.len().saturating_sub(2);
                            seen.chunks.truncate(n);
                            seen.times.truncate(n);
                            drop(seen);
                            send(ConnEvent::Closed(ended(
                                Some(3008),
                                "Session expired",
                                true,
                            )));
                            return;
                        }
                        Some(Outgoing::Control(ClientMessage::Terminate)) => {
                            send(ConnEvent::Message(ServerMessage::Termination(
                                Termination::default(),
                            )));
                            send(ConnEvent::Closed(ended(Some(1000), "", true)));
                            seen.lock().expect("lock").client_closed = true;
                            return;
                        }
                        Some(Outgoing::Ping) => send(ConnEvent::Alive),
                        Some(Outgoing::Control(_)) => {}
                    }
                }
            }
        });
        Connection::new(generation, tx, stop, task)
    }
}

// --- The fake token provider ----------------------------------------------------------------

#[derive(Debug)]
enum Mint {
    Ok(Duration),
    Fail(Duration, fn() -> ProviderError),
}

#[derive(Debug)]
struct FakeProvider {
    script: Mutex<VecDeque<Mint>>,
}

impl TokenProvider for FakeProvider {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn source(&self) -> String {
        "a script".into()
    }

    fn fetch<'a>(
        &'a self,
        _request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<Token, ProviderError>> {
        async move {
            let next = self
                .script
                .lock()
                .expect("lock")
                .pop_front()
                .unwrap_or(Mint::Ok(ms(10)));
            match next {
                Mint::Ok(delay) => {
                    tokio::time::sleep(delay).await;
                    Ok(Token::new("fake-token", "fake"))
                }
                Mint::Fail(delay, error) => {
                    tokio::time::sleep(delay).await;
                    Err(error())
                }
            }
        }
        .boxed()
    }
}

fn server_error() -> ProviderError {
    ProviderError::Transient {
        provider: "fake",
        location: "fake".into(),
        status: Some(500),
        network: None,
        retry_after: None,
        detail: "HTTP 500".into(),
    }
}

fn dns_error() -> ProviderError {
    ProviderError::Transient {
        provider: "fake",
        location: "fake".into(),
        status: None,
        network: None,
        retry_after: None,
        detail: "dns error: failed to lookup address information".into(),
    }
}

fn timeout_error() -> ProviderError {
    ProviderError::Transient {
        provider: "fake",
        location: "fake".into(),
        status: None,
        network: None,
        retry_after: None,
        detail: "no answer within 10s".into(),
    }
}

fn rate_limited() -> ProviderError {
    ProviderError::RateLimited {
        provider: "fake",
        location: "fake".into(),
        status: 429,
        retry_after: Some(Duration::from_secs(2)),
        detail: "HTTP 429".into(),
    }
}

fn unauthorized() -> ProviderError {
    ProviderError::Rejected {
        provider: "fake",
        location: "fake".into(),
        status: Some(401),
        detail: "HTTP 401 Invalid API key".into(),
    }
}

// --- One row ---------------------------------------------------------------------------------

/// What happens to the run besides the scripts.
#[derive(Debug, Clone, Copy)]
enum End {
    /// The input ends after this many chunks.
    InputEnds,
    /// The user stops at this time (the input goes on).
    StopAt(Duration),
    /// The input fails after its chunks (a read error, a device gone).
    InputFails,
    /// The input's task dies after its chunks without saying why (a panic).
    InputDies,
}

struct Row {
    name: &'static str,
    mints: Vec<Mint>,
    sessions: Vec<Script>,
    /// Chunks the input delivers (one per 50 ms).
    chunks: usize,
    end: End,
    /// `(chunk index, samples)`: the capture dropped this much before that chunk.
    overruns: Vec<(usize, u64)>,
    replay_buffer: Duration,
    /// Loss causes expected (each at least once), and none other.
    lost: Vec<LossCause>,
    /// The run ends failed.
    fails: bool,
}

impl Row {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            mints: Vec::new(),
            sessions: Vec::new(),
            chunks: 100,
            end: End::InputEnds,
            overruns: Vec::new(),
            replay_buffer: Duration::from_secs(30),
            lost: Vec::new(),
            fails: false,
        }
    }
    fn mints(mut self, m: impl IntoIterator<Item = Mint>) -> Self {
        self.mints = m.into_iter().collect();
        self
    }
    fn sessions(mut self, s: impl IntoIterator<Item = Script>) -> Self {
        self.sessions = s.into_iter().collect();
        self
    }
    fn chunks(mut self, n: usize) -> Self {
        self.chunks = n;
        self
    }
    fn end(mut self, end: End) -> Self {
        self.end = end;
        self
    }
    fn overruns(mut self, o: impl IntoIterator<Item = (usize, u64)>) -> Self {
        self.overruns = o.into_iter().collect();
        self
    }
    fn replay_buffer(mut self, d: Duration) -> Self {
        self.replay_buffer = d;
        self
    }
    fn lost(mut self, causes: impl IntoIterator<Item = LossCause>) -> Self {
        self.lost = causes.into_iter().collect();
        self
    }
    fn fails(mut self) -> Self {
        self.fails = true;
        self
    }
}

struct Played {
    events: Vec<SessionEvent>,
    received: Vec<Vec<i64>>,
    /// When the first connection received each chunk.
    first_times: Vec<tokio::time::Instant>,
    captured_chunks: usize,
}

async fn play(row: &Row) -> Played {
    let mut config = Config::default();
    config.session.backoff_initial = ms(200);
    config.session.backoff_max = ms(1000);
    config.session.rate_limit_backoff = Duration::from_secs(3);
    config.session.replay_buffer = row.replay_buffer;
    config.session.stall_timeout = Duration::from_secs(2);
    config.session.begin_timeout = Duration::from_secs(5);
    config.session.terminate_timeout = Duration::from_secs(1);
    let service = FakeService::new(row.sessions.clone());
    let mut options = SupervisorOptions::from_config(&config);
    options.connector = Arc::clone(&service) as Arc<dyn Connector>;
    options.seed = 7;
    let provider = Arc::new(FakeProvider {
        script: Mutex::new(row.mints.iter().map(clone_mint).collect()),
    });
    let premint = Arc::new(PreMinter::new(
        provider,
        TokenRequest {
            expires_in_seconds: 600,
            max_session_duration_seconds: Some(3600),
        },
        PreMintOptions::default(),
    ));
    let (audio_tx, audio_rx) = mpsc::channel(64);
    let (stats_tx, stats_rx) = tokio::sync::watch::channel(AudioStats::default());
    let mut handle = session::spawn(
        options,
        premint,
        Transcript::default(),
        AudioFeed::watched(audio_rx, stats_rx),
    );
    handle.commands.send(SessionCommand::Start).expect("start");
    let t0 = tokio::time::Instant::now();
    let feeder = {
        let overruns = row.overruns.clone();
        let chunks = row.chunks;
        let end = row.end;
        tokio::spawn(async move {
            for k in 0..chunks {
                tokio::time::sleep_until(t0 + ms(50 * (k as u64 + 1))).await;
                // The content names the chunk: its index in the first sample (the rest is
                // silence, so no chunk counts as voice).
                let mut samples = vec![0; CHUNK];
                samples[0] = i16::try_from(k).expect("few chunks");
                let chunk = AudioChunk {
                    offset: (k * CHUNK) as u64,
                    samples,
                    captured_at: tokio::time::Instant::now(),
                    dropped_before: overruns
                        .iter()
                        .find(|(at, _)| *at == k)
                        .map_or(0, |(_, n)| *n),
                    non_finite: 0,
                };
                if audio_tx.send(chunk).await.is_err() {
                    break;
                }
            }
            // Dropping the sender ends the input; the stats say how (a task that dies says
            // nothing).
            let how = match end {
                End::InputFails => Some(InputEnd::Failed("read error: device unplugged".into())),
                End::InputDies => None,
                End::InputEnds | End::StopAt(_) => Some(InputEnd::Finished),
            };
            if let Some(how) = how {
                stats_tx.send_modify(|s| s.ended = Some(how));
            }
            drop(audio_tx);
            // Keep the stats alive like a real input's, so only `ended` tells.
            std::future::pending::<()>().await;
        })
    };
    if let End::StopAt(at) = row.end {
        let commands = handle.commands.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(t0 + at).await;
            let _ = commands.send(SessionCommand::Stop);
        });
    }
    let mut events = Vec::new();
    while let Some(e) = handle.events.recv().await {
        events.push(e);
    }
    let _ = handle.task.await.expect("supervisor");
    feeder.abort();
    let captured_chunks = match (row.end, row.fails) {
        // A failed run stops capturing when it fails: the ledger says how much it took.
        (_, true) => match events.last() {
            Some(SessionEvent::Finished {
                audio_captured_samples,
                ..
            }) => usize::try_from(*audio_captured_samples).expect("small") / CHUNK,
            _ => 0,
        },
        (End::InputEnds | End::InputFails | End::InputDies, false) => row.chunks,
        // Chunks delivered before the stop (the stop at t: chunk k arrives at 50(k+1) ms).
        (End::StopAt(at), false) => ((at.as_millis() / 50) as usize).min(row.chunks),
    };
    Played {
        events,
        received: service.received(),
        first_times: service.times(0),
        captured_chunks,
    }
}

fn clone_mint(m: &Mint) -> Mint {
    match m {
        Mint::Ok(d) => Mint::Ok(*d),
        Mint::Fail(d, f) => Mint::Fail(*d, *f),
    }
}

/// The ledger, checked to the sample against what the fake service received.
fn check(row: &Row, played: &Played) {
    let name = row.name;
    let Some(SessionEvent::Finished {
        audio_captured_samples: captured,
        audio_sent_samples: sent,
        audio_lost_samples: lost,
        failure,
        ..
    }) = played.events.last()
    else {
        panic!(
            "{name}: the last event is not `finished`: {:?}",
            played.events.last()
        );
    };
    let overrun: u64 = row.overruns.iter().map(|(_, n)| n).sum();
    assert_eq!(*captured, *sent + *lost, "{name}: captured = sent + lost");
    assert_eq!(
        *captured,
        (played.captured_chunks * CHUNK) as u64 + overrun,
        "{name}: every chunk delivered (and every overrun) is captured"
    );
    assert_eq!(failure.is_some(), row.fails, "{name}: failure {failure:?}");
    let lost_chunks = check_losses(row, played, *lost);
    check_cover(name, played, &lost_chunks, *sent);
}

/// The `audio_lost` events: whole chunks on the timeline (or overruns), never twice, adding up
/// to the ledger's loss, with the expected causes. Returns which chunks were lost.
fn check_losses(row: &Row, played: &Played, lost: u64) -> Vec<bool> {
    let name = row.name;
    // Losses as reported: chunk ranges on the timeline, plus overruns.
    let mut lost_chunks = vec![false; played.captured_chunks];
    let mut reported = 0;
    let mut causes = Vec::new();
    for e in &played.events {
        if let SessionEvent::AudioLost {
            from_ms,
            to_ms,
            samples,
            cause,
            ..
        } = e
        {
            reported += samples;
            causes.push(*cause);
            if *cause == LossCause::CaptureOverrun {
                assert_eq!(from_ms, to_ms, "{name}: an overrun has no extent");
                continue;
            }
            assert_eq!(from_ms % 50, 0, "{name}: losses are whole chunks");
            assert_eq!(
                (to_ms - from_ms) * 16,
                *samples,
                "{name}: ms and samples agree"
            );
            for k in (from_ms / 50)..(to_ms / 50) {
                assert!(
                    !lost_chunks[k as usize],
                    "{name}: chunk {k} reported lost twice"
                );
                lost_chunks[k as usize] = true;
            }
        }
    }
    assert_eq!(
        reported, lost,
        "{name}: audio_lost events add up to the ledger's loss"
    );
    for cause in &causes {
        assert!(
            row.lost.contains(cause),
            "{name}: unexpected loss cause {cause:?}"
        );
    }
    for cause in &row.lost {
        assert!(causes.contains(cause), "{name}: expected a {cause:?} loss");
    }
    lost_chunks
}

/// What the service received: each chunk's content is its index, so every chunk must be the
/// right one in order within a session, and together they cover the captured audio except
/// exactly the lost chunks.
fn check_cover(name: &str, played: &Played, lost_chunks: &[bool], sent: u64) {
    let mut got = vec![false; played.captured_chunks];
    for (g, chunks) in played.received.iter().enumerate() {
        for pair in chunks.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "{name}: connection {g} got a gap or a repeat"
            );
        }
        for &k in chunks {
            let k = usize::try_from(k).expect("index");
            assert!(
                k < played.captured_chunks,
                "{name}: chunk {k} was not captured"
            );
            got[k] = true;
        }
    }
    for k in 0..played.captured_chunks {
        assert!(
            got[k] != lost_chunks[k],
            "{name}: chunk {k} {}",
            if got[k] {
                "was reported lost but reached a session"
            } else {
                "reached no session and was not reported lost"
            }
        );
    }
    assert_eq!(
        got.iter().filter(|g| **g).count() as u64 * CHUNK as u64,
        sent,
        "{name}: sent = what reached the service"
    );
}

fn begin_backlog(played: &Played) -> Option<u64> {
    played.events.iter().find_map(|e| match e {
        SessionEvent::Begin { backlog_ms, .. } => Some(*backlog_ms),
        _ => None,
    })
}

fn rows() -> Vec<Row> {
    use LossCause::{CaptureOverrun, Failed, ReplayBufferFull, Stopped};
    vec![
        Row::new("start: a quick mint and connect, the first chunks come as a backlog")
            .mints([Mint::Ok(ms(40))])
            .sessions([Script::Begin(ms(260))]),
        Row::new("slow mint: 1.5 s of audio before the first session, all of it sent")
            .mints([Mint::Ok(ms(1500))])
            .sessions([Script::Begin(ms(100))]),
        Row::new("mint failures: HTTP 500 three times, then a token")
            .mints([
                Mint::Fail(ms(50), server_error),
                Mint::Fail(ms(50), server_error),
                Mint::Fail(ms(50), server_error),
                Mint::Ok(ms(50)),
            ])
            .chunks(160),
        Row::new("mint failures: a DNS error and a timeout, then a token")
            .mints([
                Mint::Fail(ms(20), dns_error),
                Mint::Fail(ms(2000), timeout_error),
                Mint::Ok(ms(50)),
            ])
            .chunks(160),
        Row::new("mint failures: 429 with Retry-After, then a token")
            .mints([Mint::Fail(ms(50), rate_limited), Mint::Ok(ms(50))])
            .chunks(160),
        Row::new("mint failure: 401 fails the run, everything captured is reported lost")
            .mints([Mint::Fail(ms(300), unauthorized)])
            .chunks(40)
            .lost([Failed])
            .fails(),
        Row::new("four closes before Begin (1011), then a session")
            .sessions([
                Script::CloseBeforeBegin(ms(100), 1011, "Internal error"),
                Script::CloseBeforeBegin(ms(100), 1011, "Internal error"),
                Script::CloseBeforeBegin(ms(100), 1011, "Internal error"),
                Script::CloseBeforeBegin(ms(100), 1011, "Internal error"),
                Script::Begin(ms(100)),
            ])
            .chunks(200),
        Row::new("3009 before the first session: rate-limit backoff, then a session")
            .sessions([
                Script::CloseBeforeBegin(ms(100), 3009, "Too many concurrent sessions"),
                Script::Begin(ms(100)),
            ])
            .chunks(200),
        Row::new("stop during a mint: all captured audio reported lost (stopped)")
            .mints([Mint::Ok(ms(10_000))])
            .chunks(200)
            .end(End::StopAt(ms(2025)))
            .lost([Stopped]),
        Row::new("stop during a backoff: reported lost (stopped)")
            .mints([Mint::Fail(ms(10), server_error), Mint::Ok(ms(10))])
            .sessions([
                Script::CloseBeforeBegin(ms(100), 1011, ""),
                Script::CloseBeforeBegin(ms(100), 1011, ""),
                Script::CloseBeforeBegin(ms(100), 1011, ""),
            ])
            .chunks(200)
            .end(End::StopAt(ms(1525)))
            .lost([Stopped]),
        Row::new("the input ends during a backoff: the backlog is sent afterwards")
            .sessions([
                Script::CloseBeforeBegin(ms(100), 1011, ""),
                Script::CloseBeforeBegin(ms(100), 1011, ""),
                Script::Begin(ms(100)),
            ])
            .chunks(10),
        Row::new("replay buffer outgrown during a long rate-limit wait: the oldest is lost")
            .mints([
                Mint::Fail(ms(10), rate_limited),
                Mint::Fail(ms(10), rate_limited),
                Mint::Ok(ms(10)),
            ])
            .chunks(200)
            .replay_buffer(Duration::from_secs(1))
            .lost([ReplayBufferFull]),
        Row::new("microphone overruns: the dropped frames are captured and lost")
            .overruns([(10, 160), (30, 800)])
            .lost([CaptureOverrun]),
        Row::new("a drop during the start backlog: replayed, nothing lost")
            .mints([Mint::Ok(ms(1500))])
            .sessions([Script::DropAfter(ms(100), 10), Script::Begin(ms(100))])
            .chunks(200),
        Row::new("a server that stops reading: stalled, replaced, nothing lost")
            .sessions([
                Script::StopReadingAfter(ms(100), 40),
                Script::Begin(ms(100)),
            ])
            .chunks(400),
        Row::new("stop while streaming: nothing lost").end(End::StopAt(ms(3025))),
    ]
}

/// The ends that are not the user's choice: an unconfirmed last session, a failing input, a
/// bug, a broken server clock.
fn failure_rows() -> Vec<Row> {
    use LossCause::Failed;
    vec![
        Row::new("the last session never confirms its end: replayed into a new one, nothing lost")
            .sessions([Script::Unconfirmed(ms(100)), Script::Begin(ms(100))])
            .chunks(100),
        Row::new("the last session expires instead of confirming: replayed, nothing lost")
            .sessions([Script::ExpiresOnTerminate(ms(100)), Script::Begin(ms(100))])
            .chunks(100),
        Row::new("the input fails: its audio is sent, then the run fails")
            .chunks(100)
            .end(End::InputFails)
            .fails(),
        Row::new("the input's task dies: the run fails, not a normal end")
            .chunks(100)
            .end(End::InputDies)
            .fails(),
        Row::new("a connector panics: the run fails with the ledger kept")
            .mints([Mint::Ok(ms(500))])
            .sessions([Script::Panics])
            .chunks(40)
            .lost([Failed])
            .fails(),
        Row::new("Begin says expires_at 0: planned from the requested length, no rotation")
            .sessions([Script::BeginExpiresAtZero(ms(100))])
            .chunks(200),
    ]
}

#[tokio::test(start_paused = true)]
async fn every_path_keeps_the_ledger_to_the_sample() {
    for row in rows().into_iter().chain(failure_rows()) {
        let played = play(&row).await;
        check(&row, &played);
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_session_gets_the_start_backlog_paced_and_it_is_not_a_reconnect() {
    let row = Row::new("slow mint")
        .mints([Mint::Ok(ms(1500))])
        .sessions([Script::Begin(ms(100))]);
    let played = play(&row).await;
    check(&row, &played);
    // 1.6 s captured before Begin: whole chunks, sent first.
    let backlog = begin_backlog(&played).expect("begin");
    assert!((1550..=1650).contains(&backlog), "backlog {backlog} ms");
    assert_eq!(
        played.received[0][0], 0,
        "the first session starts at sample 0"
    );
    // The backlog goes out at most 1.25x real time (the service closes faster audio with
    // 3007): chunk k no earlier than k x 40 ms after the first, give or take one chunk.
    let t = &played.first_times;
    for (k, at) in t.iter().enumerate() {
        let earliest = ms(40 * k as u64).saturating_sub(ms(50));
        assert!(
            at.duration_since(t[0]) >= earliest,
            "chunk {k} sent {:?} after the first: faster than 1.25x",
            at.duration_since(t[0])
        );
    }
    // ...and catches up with the live audio.
    assert_eq!(t.len(), 100, "every chunk reached the session");
    assert!(
        !played
            .events
            .iter()
            .any(|e| matches!(e, SessionEvent::Reconnected { .. })),
        "a first session is not a reconnect"
    );
    let Some(SessionEvent::Finished { reconnects, .. }) = played.events.last() else {
        panic!("finished");
    };
    assert_eq!(*reconnects, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_run_says_so() {
    let row = Row::new("401")
        .mints([Mint::Fail(ms(300), unauthorized)])
        .chunks(40)
        .lost([LossCause::Failed])
        .fails();
    let played = play(&row).await;
    assert!(played.events.iter().any(|e| matches!(
        e,
        SessionEvent::State {
            view: View::Failed(aai_live::failure::Failure {
                class: CloseClass::Fatal,
                ..
            })
        }
    )));
}

/// The end of an input must be confirmed by the last session (`Termination`): a session that
/// never confirms gets its unfinalized audio replayed into a new session before the run stops.
#[tokio::test(start_paused = true)]
async fn an_unconfirmed_end_is_replayed_into_a_new_session() {
    let row = Row::new("unconfirmed")
        .sessions([Script::Unconfirmed(ms(100)), Script::Begin(ms(100))])
        .chunks(60);
    let played = play(&row).await;
    check(&row, &played);
    assert_eq!(played.received.len(), 2, "a second session took the replay");
    assert_eq!(
        played.received[1].first(),
        Some(&0),
        "nothing was final: the replay starts at the first session's start"
    );
    assert_eq!(played.received[1].len(), 60, "all of it again");
    assert!(
        played
            .events
            .iter()
            .any(|e| matches!(e, SessionEvent::Termination { .. }))
    );
}

/// An input that fails, or whose task dies, must never end the run like the end of a file.
#[tokio::test(start_paused = true)]
async fn an_input_failure_fails_the_run_after_sending_its_audio() {
    for (end, words) in [
        (End::InputFails, "device unplugged"),
        (End::InputDies, "stopped unexpectedly"),
    ] {
        let row = Row::new("input failure").chunks(60).end(end).fails();
        let played = play(&row).await;
        check(&row, &played);
        let Some(SessionEvent::Finished {
            failure: Some(failure),
            audio_lost_samples,
            ..
        }) = played.events.last()
        else {
            panic!(
                "{end:?}: finished with a failure: {:?}",
                played.events.last()
            );
        };
        assert!(failure.contains(words), "{end:?}: {failure}");
        assert_eq!(*audio_lost_samples, 0, "{end:?}: the audio was sent first");
        assert!(played.events.iter().any(|e| matches!(
            e,
            SessionEvent::State {
                view: View::Failed(aai_live::failure::Failure {
                    class: CloseClass::Local,
                    ..
                })
            }
        )));
    }
}

/// A panic inside the supervisor (here: a connector with a bug) ends the run `Failed` with a
/// `finished` event that still balances the ledger, instead of a task that just vanishes.
#[tokio::test(start_paused = true)]
async fn a_panic_in_the_supervisor_fails_the_run_with_its_ledger() {
    let row = Row::new("panic")
        .mints([Mint::Ok(ms(500))])
        .sessions([Script::Panics])
        .chunks(40)
        .lost([LossCause::Failed])
        .fails();
    let played = play(&row).await;
    check(&row, &played);
    let Some(SessionEvent::Finished {
        failure: Some(failure),
        ..
    }) = played.events.last()
    else {
        panic!("finished with a failure");
    };
    assert!(failure.contains("a connector with a bug"), "{failure}");
}

/// `expires_at: 0` is not believable: the session is planned from the length asked for (no
/// rotation every second), and the user is told once.
#[tokio::test(start_paused = true)]
async fn an_implausible_expires_at_does_not_make_the_client_rotate() {
    let row = Row::new("expires_at 0")
        .sessions([Script::BeginExpiresAtZero(ms(100))])
        .chunks(200);
    let played = play(&row).await;
    check(&row, &played);
    let begins = played
        .events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Begin { .. }))
        .count();
    assert_eq!(begins, 1, "one session for 10 s of audio");
    let warnings: Vec<_> = played
        .events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Warning { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("not believable"), "{warnings:?}");
}

/// A believable `expires_at` that disagrees with the length asked for by more than 5 s (here
/// 1 h against the 3 h asked for) is clock skew: said once a run, however many sessions.
#[tokio::test(start_paused = true)]
async fn clock_skew_is_reported_once_a_run() {
    let row = Row::new("skew")
        .sessions([Script::DropAfter(ms(100), 20), Script::Begin(ms(100))])
        .chunks(100);
    let played = play(&row).await;
    check(&row, &played);
    let skews: Vec<_> = played
        .events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Warning { message, .. } if message.contains("clock skew") => {
                Some(message)
            }
            _ => None,
        })
        .collect();
    assert_eq!(skews.len(), 1, "{skews:?}");
    assert!(
        // 1 h against 3 h, give or take the second `expires_at` is rounded to.
        ["7199 s", "7200 s", "7201 s"]
            .iter()
            .any(|n| skews[0].contains(&format!("{n} earlier than the 10800 s"))),
        "{skews:?}"
    );
}
