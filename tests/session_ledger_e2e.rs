//! The audio ledger end to end: the real supervisor, the real WebSocket client and the emulator
//! with `--record`, one test per path of the lossless-start issue. The input carries a watermark
//! (each 50 ms chunk's first two samples name the chunk), so every recorded chunk is identified
//! by its content, not by what the client claims. Each test checks, to the sample, that the
//! recordings are a gap-free cover of the captured audio minus exactly the reported losses, and
//! that `finished` says captured = sent + lost.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aai_live::audio::{self, AudioOptions, Pace};
use aai_live::config::{Config, InputSpec};
use aai_live::emulator::{EmulatorConfig, Pacing, RunningEmulator};
use aai_live::events::LossCause;
use aai_live::events::SessionEvent;
use aai_live::events::View;
use aai_live::provider::{self, PreMintOptions, PreMinter, TokenRequest};
use aai_live::session::{self, SessionCommand, SupervisorOptions};
use aai_live::transcript::Transcript;
use common::{CHUNK, KEY, mark_of, marked_input, utterances, watermark, write_wav};

struct Setup {
    emu: RunningEmulator,
    dir: tempfile::TempDir,
    record: PathBuf,
    config: Config,
}

async fn setup(
    emulator: EmulatorConfig,
    faults: &[&str],
    tweak: impl FnOnce(&mut Config),
) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record");
    std::fs::create_dir_all(&record).expect("record dir");
    let emu = common::start(EmulatorConfig {
        record_dir: Some(record.clone()),
        ..emulator
    })
    .await;
    for fault in faults {
        emu.add_fault(fault.parse().expect("fault"));
    }
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).expect("key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let mut config = Config::default();
    config.provider.api_key.key_file = Some(key_file);
    config.provider.api_key.token_url = Some(emu.token_url().parse().expect("url"));
    config.provider.timeout = Duration::from_secs(20);
    config.streaming.url = Some(emu.ws_url().parse().expect("url"));
    config.session.begin_timeout = Duration::from_secs(5);
    config.session.terminate_timeout = Duration::from_secs(2);
    config.session.backoff_initial = Duration::from_millis(100);
    config.session.backoff_max = Duration::from_millis(500);
    tweak(&mut config);
    Setup {
        emu,
        dir,
        record,
        config,
    }
}

struct Run {
    events: Vec<SessionEvent>,
}

/// Stream `input` (a WAV paced in real time) until it ends, or stop at `stop_at`.
async fn run(setup: &Setup, input: &[i16], stop_at: Option<Duration>) -> Run {
    let wav = setup.dir.path().join("input.wav");
    write_wav(&wav, input);
    let provider = provider::build(&setup.config.provider).expect("provider");
    let request = TokenRequest::from_config(&setup.config.provider);
    let premint = Arc::new(PreMinter::new(provider, request, PreMintOptions::default()));
    let options = AudioOptions {
        pace: Pace::RealTime,
        ..AudioOptions::from_config(&setup.config)
    };
    let audio = audio::open(&InputSpec::File(wav), &options)
        .await
        .expect("audio");
    let mut handle = session::spawn(
        SupervisorOptions::from_config(&setup.config),
        premint,
        Transcript::default(),
        audio.chunks,
    );
    handle.commands.send(SessionCommand::Start).expect("start");
    if let Some(at) = stop_at {
        let commands = handle.commands.clone();
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            let _ = commands.send(SessionCommand::Stop);
        });
    }
    let mut events = Vec::new();
    let collect = async {
        while let Some(e) = handle.events.recv().await {
            events.push(e);
        }
    };
    tokio::time::timeout(Duration::from_secs(90), collect)
        .await
        .expect("the run ends");
    let _ = handle.task.await.expect("task");
    Run { events }
}

/// What each session received, as chunk indices, from the recordings.
fn recorded(setup: &Setup) -> Vec<Vec<usize>> {
    let mut sessions: Vec<_> = setup.emu.sessions();
    sessions.sort_by_key(|s| s.started_at_ms);
    sessions
        .iter()
        .map(|s| {
            let bytes =
                std::fs::read(setup.record.join(format!("{}.pcm", s.id))).unwrap_or_default();
            let samples: Vec<i16> = bytes
                .chunks_exact(2)
                .map(|p| i16::from_le_bytes([p[0], p[1]]))
                .collect();
            samples
                .chunks(CHUNK)
                .map(|c| {
                    mark_of(c).unwrap_or_else(|| panic!("session {}: an unmarked chunk", s.id))
                })
                .collect()
        })
        .collect()
}

/// The ledger to the sample: `finished` balances, the losses are exactly the chunks no session
/// received, each recorded chunk is the input's chunk (content equal), and sessions got
/// consecutive chunks. Returns the loss causes seen.
fn assert_ledger(setup: &Setup, run: &Run, input: &[i16], whole_input: bool) -> Vec<LossCause> {
    let Some(SessionEvent::Finished {
        audio_captured_samples: captured,
        audio_sent_samples: sent,
        audio_lost_samples: lost,
        ..
    }) = run.events.last()
    else {
        panic!("no `finished`: {:?}", run.events.last());
    };
    assert_eq!(*captured, *sent + *lost, "captured = sent + lost");
    if whole_input {
        assert_eq!(
            *captured,
            input.len() as u64,
            "the whole input was captured"
        );
    }
    let chunks = usize::try_from(*captured).expect("small") / CHUNK;
    let mut lost_chunks = vec![false; chunks];
    let mut causes = Vec::new();
    let mut reported = 0;
    for e in &run.events {
        if let SessionEvent::AudioLost {
            from_ms,
            to_ms,
            samples,
            cause,
            ..
        } = e
        {
            causes.push(*cause);
            reported += samples;
            for k in (from_ms / 50)..(to_ms / 50) {
                lost_chunks[usize::try_from(k).expect("small")] = true;
            }
        }
    }
    assert_eq!(reported, *lost, "the audio_lost events add up");
    let mut got = vec![false; chunks];
    for (s, session) in recorded(setup).iter().enumerate() {
        for pair in session.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "session {s}: a gap or a repeat");
        }
        for &k in session {
            assert!(k < chunks, "session {s}: chunk {k} was not captured");
            got[k] = true;
        }
    }
    // Content: the recordings are byte-exact copies of the input at their chunk.
    for s in setup.emu.sessions() {
        let bytes = std::fs::read(setup.record.join(format!("{}.pcm", s.id))).unwrap_or_default();
        let samples: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect();
        for c in samples.chunks(CHUNK) {
            let k = mark_of(c).expect("marked");
            assert_eq!(
                c,
                &input[k * CHUNK..k * CHUNK + c.len()],
                "chunk {k} differs"
            );
        }
    }
    for k in 0..chunks {
        assert!(
            got[k] != lost_chunks[k],
            "chunk {k}: {}",
            if got[k] {
                "reported lost but it reached the service"
            } else {
                "reached no session and was not reported lost"
            }
        );
    }
    assert_eq!(
        got.iter().filter(|g| **g).count() as u64 * CHUNK as u64,
        *sent,
        "sent = what the emulator recorded"
    );
    causes
}

fn backlog(run: &Run) -> Option<u64> {
    run.events.iter().find_map(|e| match e {
        SessionEvent::Begin { backlog_ms, .. } => Some(*backlog_ms),
        _ => None,
    })
}

fn count(run: &Run, pred: impl Fn(&SessionEvent) -> bool) -> usize {
    run.events.iter().filter(|e| pred(e)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_token_endpoint_at_the_start_loses_nothing() {
    // The service's pacing rule on: the backlog must go out at most 1.25x real time.
    let setup = setup(
        EmulatorConfig {
            pacing: Some(Pacing::default()),
            ..common::config()
        },
        &["token-delay:1500ms"],
        |_| {},
    )
    .await;
    let input = marked_input(3);
    let run = run(&setup, &input, None).await;
    assert!(
        assert_ledger(&setup, &run, &input, true).is_empty(),
        "nothing lost"
    );
    assert!(
        backlog(&run).is_some_and(|b| b >= 1500),
        "{:?}",
        backlog(&run)
    );
    assert_eq!(
        recorded(&setup)[0][0],
        0,
        "the first session starts at sample 0"
    );
    assert_eq!(
        count(&run, |e| matches!(e, SessionEvent::Reconnected { .. })),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_errors_at_the_start_lose_nothing() {
    let setup = setup(common::config(), &["token:500x3"], |_| {}).await;
    let input = marked_input(2);
    let run = run(&setup, &input, None).await;
    assert!(assert_ledger(&setup, &run, &input, true).is_empty());
    assert_eq!(
        count(&run, |e| matches!(e, SessionEvent::TokenFailed { .. })),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_closes_before_begin_lose_nothing() {
    let setup = setup(common::config(), &["close-before-begin:1011x4"], |_| {}).await;
    let input = marked_input(2);
    let run = run(&setup, &input, None).await;
    assert!(assert_ledger(&setup, &run, &input, true).is_empty());
    // Backed off from the first failure.
    assert!(
        count(&run, |e| matches!(
            e,
            SessionEvent::State {
                view: View::Backoff { .. }
            }
        )) >= 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_before_the_first_session_loses_nothing() {
    let setup = setup(
        common::config(),
        &["close-before-begin:3009:Too many concurrent sessions"],
        |c| c.session.rate_limit_backoff = Duration::from_millis(400),
    )
    .await;
    let input = marked_input(2);
    let run = run(&setup, &input, None).await;
    assert!(assert_ledger(&setup, &run, &input, true).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_during_the_start_backlog_is_replayed() {
    let setup = setup(
        common::config(),
        &["token-delay:1500ms", "drop@300ms"],
        |_| {},
    )
    .await;
    let input = marked_input(3);
    let run = run(&setup, &input, None).await;
    assert!(assert_ledger(&setup, &run, &input, true).is_empty());
    assert_eq!(
        count(&run, |e| matches!(e, SessionEvent::Reconnected { .. })),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitting_during_a_mint_reports_everything_captured_as_lost() {
    let setup = setup(common::config(), &["token-delay:10s"], |_| {}).await;
    let input = marked_input(3);
    let run = run(&setup, &input, Some(Duration::from_secs(2))).await;
    let causes = assert_ledger(&setup, &run, &input, false);
    assert_eq!(causes, [LossCause::Stopped]);
    assert!(setup.emu.sessions().is_empty(), "no session was opened");
    let Some(SessionEvent::Finished {
        audio_captured_samples,
        audio_lost_samples,
        ..
    }) = run.events.last()
    else {
        panic!("finished");
    };
    assert!(*audio_captured_samples >= 16_000, "about 2 s captured");
    assert_eq!(audio_lost_samples, audio_captured_samples);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_that_ends_during_a_backoff_is_still_sent() {
    let setup = setup(common::config(), &["close-before-begin:1011x4"], |c| {
        c.session.backoff_initial = Duration::from_millis(600);
        c.session.backoff_max = Duration::from_millis(1200);
    })
    .await;
    // One second of input: it ends while the client is still backing off.
    let input = marked_input(1)[..16_000].to_vec();
    let run = run(&setup, &input, None).await;
    assert!(assert_ledger(&setup, &run, &input, true).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_reading_is_replaced_and_nothing_is_lost() {
    let setup = setup(common::config(), &["stop-reading@2s"], |c| {
        c.session.stall_timeout = Duration::from_secs(2);
    })
    .await;
    // One utterance, then silence: after the server stops reading, nothing voiced is sent, so
    // only liveness (a ping nobody answers) can tell — it must not depend on voice.
    let mut samples = utterances(1);
    samples.resize(16_000 * 14, 0);
    let input = watermark(samples);
    let run = run(&setup, &input, None).await;
    assert!(assert_ledger(&setup, &run, &input, true).is_empty());
    assert!(
        run.events.iter().any(|e| matches!(
            e,
            SessionEvent::Lost { reason, .. } if reason.contains("not even an answer to a ping")
        )),
        "detected by the unanswered ping: {:#?}",
        run.events
            .iter()
            .filter(|e| matches!(e, SessionEvent::Lost { .. }))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        count(&run, |e| matches!(e, SessionEvent::Reconnected { .. })),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_closes_every_session_properly() {
    // Two sessions: one ends at expiry (the server closes; the client answers), one at the end
    // of the input (Terminate, Termination, then the client closes with 1000 itself).
    let setup = setup(
        EmulatorConfig {
            max_session_duration: Some(Duration::from_secs(3)),
            ..common::config()
        },
        &[],
        |c| c.session.rotation = false,
    )
    .await;
    let input = marked_input(2);
    let run = run(&setup, &input, None).await;
    assert!(assert_ledger(&setup, &run, &input, true).is_empty());
    let sessions = setup.emu.sessions();
    assert!(sessions.len() >= 2, "{sessions:?}");
    for s in &sessions {
        if s.terminated_by_client {
            assert_eq!(
                s.client_close_code,
                Some(1000),
                "closed by the client: {s:?}"
            );
        } else {
            // Closed by the server (expiry): the client answered its close frame (echoing the
            // code, as RFC 6455 says), instead of dropping the connection.
            assert!(s.close_code.is_some(), "{s:?}");
            assert_eq!(s.client_close_code, s.close_code, "answered: {s:?}");
        }
    }
    assert!(sessions.iter().any(|s| s.terminated_by_client));
    assert!(sessions.iter().any(|s| !s.terminated_by_client));
}
