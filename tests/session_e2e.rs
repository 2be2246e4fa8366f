//! The session supervisor end to end against the emulator on 127.0.0.1: planned rotations,
//! unplanned drops with replay, expiry without rotation, and every failure path. The emulator's
//! `--record` files prove byte-exactly which audio reached the service.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aai_live::audio::{self, AudioOptions, Pace};
use aai_live::config::{Config, InputSpec};
use aai_live::emulator::{EmulatorConfig, RunningEmulator};
use aai_live::events::SessionEvent;
use aai_live::events::View;
use aai_live::protocol::CloseClass;
use aai_live::provider::{self, PreMintOptions, PreMinter, TokenRequest};
use aai_live::session::{self, SessionCommand, SupervisorOptions};
use aai_live::transcript::Transcript;
use common::{KEY, utterances, write_wav};

struct Setup {
    emu: RunningEmulator,
    dir: tempfile::TempDir,
    record: PathBuf,
    config: Config,
    /// Give the emulator aai-live's stream-offset hints (its words then follow stream time).
    hints: bool,
}

async fn setup(emulator: EmulatorConfig, tweak: impl FnOnce(&mut Config)) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record");
    std::fs::create_dir_all(&record).expect("record dir");
    let emu = common::start(EmulatorConfig {
        record_dir: Some(record.clone()),
        ..emulator
    })
    .await;
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).expect("key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let mut config = Config::default();
    config.provider.api_key.key_file = Some(key_file);
    config.provider.api_key.token_url = Some(emu.token_url().parse().expect("url"));
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
        hints: false,
    }
}

struct Run {
    events: Vec<SessionEvent>,
    transcript: Transcript,
    failure: Option<String>,
}

/// Stream `samples` (as a WAV file, paced in real time) through the supervisor until the input
/// ends (then Stop) or `limit` passes.
async fn run(setup: &Setup, samples: &[i16], limit: Duration) -> Run {
    run_with(setup, samples, limit, |_| None).await
}

/// [`run`], with a command sent whenever `answer` has one for an event.
async fn run_with(
    setup: &Setup,
    samples: &[i16],
    limit: Duration,
    mut answer: impl FnMut(&SessionEvent) -> Option<SessionCommand>,
) -> Run {
    let wav = setup.dir.path().join("input.wav");
    write_wav(&wav, samples);
    let provider = provider::build(&setup.config.provider).expect("provider");
    let request = TokenRequest::from_config(&setup.config.provider);
    let premint = Arc::new(PreMinter::new(provider, request, PreMintOptions::default()));
    let options = AudioOptions {
        pace: Pace::RealTime,
        ..AudioOptions::from_config(&setup.config)
    };
    let input = audio::open(&InputSpec::File(wav), &options)
        .await
        .expect("audio");
    let mut options = SupervisorOptions::from_config(&setup.config);
    options.emulator_hints = setup.hints;
    let mut handle = session::spawn(options, premint, Transcript::default(), input.chunks);
    handle.commands.send(SessionCommand::Start).expect("start");
    let mut events = Vec::new();
    let commands = handle.commands.clone();
    let collect = async {
        while let Some(e) = handle.events.recv().await {
            if let Some(command) = answer(&e) {
                commands.send(command).expect("command");
            }
            events.push(e);
        }
    };
    if tokio::time::timeout(limit, collect).await.is_err() {
        let _ = handle.commands.send(SessionCommand::Stop);
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_secs(10), handle.events.recv()).await
        {
            events.push(e);
        }
    }
    let (outcome, transcript) = handle.task.await.expect("task");
    Run {
        events,
        transcript,
        failure: outcome.failure.as_ref().map(aai_live::strings::failure),
    }
}

/// (stream offset in samples, recorded samples) per session, from the events and recordings.
fn received(setup: &Setup, events: &[SessionEvent]) -> Vec<(u64, Vec<i16>)> {
    let mut ids: HashMap<u64, String> = HashMap::new();
    let mut bases: HashMap<u64, u64> = HashMap::new();
    for e in events {
        match e {
            SessionEvent::Begin {
                generation,
                session_id,
                stream_offset_ms,
                ..
            } => {
                ids.insert(*generation, session_id.clone());
                bases.entry(*generation).or_insert(stream_offset_ms * 16);
            }
            SessionEvent::Rotation {
                to,
                stream_offset_ms,
                ..
            } => {
                bases.insert(*to, stream_offset_ms * 16);
            }
            SessionEvent::Reconnected {
                generation,
                replay_from_ms,
                ..
            } => {
                bases.insert(*generation, replay_from_ms * 16);
            }
            _ => {}
        }
    }
    let mut out: Vec<(u64, Vec<i16>)> = ids
        .iter()
        .filter_map(|(g, id)| {
            let bytes = std::fs::read(setup.record.join(format!("{id}.pcm"))).ok()?;
            let samples = bytes
                .chunks_exact(2)
                .map(|p| i16::from_le_bytes([p[0], p[1]]))
                .collect::<Vec<_>>();
            (!samples.is_empty()).then(|| (bases[g], samples))
        })
        .collect();
    out.sort_by_key(|(b, _)| *b);
    out
}

/// Every received sample equals the input at its offset, and together they cover the input
/// from the first session's start to the end: 0 samples missing.
fn assert_lossless(parts: &[(u64, Vec<i16>)], input: &[i16]) {
    assert!(!parts.is_empty(), "no audio received");
    let mut covered_to = parts[0].0;
    for (base, samples) in parts {
        let base = *base as usize;
        assert!(
            base as u64 <= covered_to,
            "hole in the audio: {covered_to} .. {base} (samples) reached no session"
        );
        assert_eq!(
            &input[base..base + samples.len()],
            samples.as_slice(),
            "audio at {base} differs from the input"
        );
        covered_to = covered_to.max((base + samples.len()) as u64);
    }
    assert_eq!(parts[0].0, 0, "streaming started with the first sample");
    assert_eq!(
        covered_to as usize,
        input.len(),
        "the end of the input reached the service"
    );
}

fn finals(run: &Run) -> Vec<(u64, u64, String)> {
    run.transcript
        .finals()
        .iter()
        .map(|f| (f.start_ms, f.end_ms, f.text.clone()))
        .collect()
}

fn assert_one_final_per_utterance(run: &Run, n: usize) {
    let f = finals(run);
    assert_eq!(f.len(), n, "one final per utterance: {f:#?}");
    for (i, (start, end, text)) in f.iter().enumerate() {
        let expected_start = i as u64 * 2200;
        assert!(
            start.abs_diff(expected_start) <= 60 && end.abs_diff(expected_start + 1100) <= 60,
            "final {i} at {start}..{end} ({text}) is not utterance {i}"
        );
        assert_eq!(text.split_whitespace().count(), 3, "final {i}: {text}");
    }
}

fn count(run: &Run, pred: impl Fn(&SessionEvent) -> bool) -> usize {
    run.events.iter().filter(|e| pred(e)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_rotations_lose_nothing() {
    // 8 s sessions, a 3 s lead: the successor is prepared at 4 s (half the session: the
    // rotation rule) and has 2 s to meet a natural turn boundary before the hand-over would be
    // forced (a third of the lead before the end, planned a second early).
    let setup = setup(
        EmulatorConfig {
            max_session_duration: Some(Duration::from_secs(8)),
            ..common::config()
        },
        |c| c.session.rotation_lead = Duration::from_secs(3),
    )
    .await;
    let input = utterances(8);
    let run = run(&setup, &input, Duration::from_secs(40)).await;
    assert!(run.failure.is_none(), "{:?}", run.failure);
    let rotations = count(&run, |e| matches!(e, SessionEvent::Rotation { .. }));
    assert!(
        rotations >= 2,
        "at least two planned rotations, got {rotations}"
    );
    assert_eq!(count(&run, |e| matches!(e, SessionEvent::Lost { .. })), 0);
    assert!(
        run.events
            .iter()
            .all(|e| !matches!(e, SessionEvent::Rotation { gap_ms, .. } if *gap_ms > 0))
    );
    assert_lossless(&received(&setup, &run.events), &input);
    assert_one_final_per_utterance(&run, 8);
    // Every session the emulator saw was terminated by the client and closed 1000.
    for s in setup.emu.sessions() {
        assert_eq!(s.close_code, Some(1000), "{s:?}");
        assert!(s.terminated_by_client);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speaker_who_never_pauses_is_handed_over_by_force_before_expiry() {
    let setup = setup(
        EmulatorConfig {
            max_session_duration: Some(Duration::from_secs(6)),
            ..common::config()
        },
        |c| c.session.rotation_lead = Duration::from_secs(3),
    )
    .await;
    // 14 s of uninterrupted voice: no turn boundary, no quiet moment.
    let input: Vec<i16> = (0..16_000 * 14)
        .map(|i| {
            ((f64::from(i) * 2.0 * std::f64::consts::PI * 220.0 / 16_000.0).sin() * 9000.0) as i16
        })
        .collect();
    let run = run(&setup, &input, Duration::from_secs(40)).await;
    assert!(run.failure.is_none(), "{:?}", run.failure);
    let forced = count(&run, |e| {
        matches!(e, SessionEvent::Rotation { forced: true, .. })
    });
    assert!(forced >= 1, "forced hand-overs: {forced}");
    assert_eq!(
        count(&run, |e| matches!(e, SessionEvent::Lost { .. })),
        0,
        "no session reached its expiry"
    );
    assert_lossless(&received(&setup, &run.events), &input);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplanned_drops_reconnect_and_replay_from_the_last_final_word() {
    for fault in ["drop@3300ms", "close:1011@3300ms", "close:3005@3300ms"] {
        let setup = setup(common::config(), |_| {}).await;
        setup.emu.add_fault(fault.parse().expect("fault"));
        let input = utterances(4);
        let run = run(&setup, &input, Duration::from_secs(30)).await;
        assert!(run.failure.is_none(), "{fault}: {:?}", run.failure);
        assert_eq!(
            count(&run, |e| matches!(
                e,
                SessionEvent::Lost {
                    class: CloseClass::Transient,
                    ..
                }
            )),
            1,
            "{fault}"
        );
        let replay = run.events.iter().find_map(|e| match e {
            SessionEvent::Reconnected { replay_from_ms, .. } => Some(*replay_from_ms),
            _ => None,
        });
        // The drop came mid-utterance 2 (2200..3300 ms): replay starts at the end of utterance
        // 1's last word (1100 ms), on a chunk boundary.
        assert_eq!(replay, Some(1100), "{fault}");
        assert_lossless(&received(&setup, &run.events), &input);
        assert_one_final_per_utterance(&run, 4);
        assert_eq!(
            count(&run, |e| matches!(e, SessionEvent::AudioLost { .. })),
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_before_any_final_replays_the_whole_session() {
    let setup = setup(common::config(), |_| {}).await;
    // 1 s into the first utterance: nothing of this session was finalized yet.
    setup.emu.add_fault("drop@1000ms".parse().expect("fault"));
    let input = utterances(2);
    let run = run(&setup, &input, Duration::from_secs(30)).await;
    assert!(run.failure.is_none(), "{:?}", run.failure);
    let replay = run.events.iter().find_map(|e| match e {
        SessionEvent::Reconnected { replay_from_ms, .. } => Some(*replay_from_ms),
        _ => None,
    });
    assert_eq!(
        replay,
        Some(0),
        "replayed from the lost session's first sample"
    );
    assert_lossless(&received(&setup, &run.events), &input);
    assert_one_final_per_utterance(&run, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_counts_as_a_drop() {
    let setup = setup(common::config(), |c| {
        c.session.stall_timeout = Duration::from_secs(1);
    })
    .await;
    setup.emu.add_fault("stall@3000ms".parse().expect("fault"));
    let input = utterances(4);
    let run = run(&setup, &input, Duration::from_secs(30)).await;
    assert!(run.failure.is_none(), "{:?}", run.failure);
    assert!(
        run.events
            .iter()
            .any(|e| matches!(e, SessionEvent::Lost { reason, .. } if reason.contains("stalled")))
    );
    assert_one_final_per_utterance(&run, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_without_rotation_remints_and_reports_the_gap() {
    let setup = setup(
        EmulatorConfig {
            max_session_duration: Some(Duration::from_secs(4)),
            ..common::config()
        },
        |c| c.session.rotation = false,
    )
    .await;
    let input = utterances(3);
    let run = run(&setup, &input, Duration::from_secs(30)).await;
    assert!(run.failure.is_none(), "{:?}", run.failure);
    assert!(run.events.iter().any(|e| matches!(
        e,
        SessionEvent::Lost {
            class: CloseClass::SessionExpired,
            ..
        }
    )));
    let gap = run.events.iter().find_map(|e| match e {
        SessionEvent::Reconnected { gap_ms, .. } => Some(*gap_ms),
        _ => None,
    });
    assert!(gap.is_some(), "the gap is reported");
    assert_lossless(&received(&setup, &run.events), &input);
    assert_one_final_per_utterance(&run, 3);
}

fn failed(run: &Run) -> Option<CloseClass> {
    run.events.iter().rev().find_map(|e| match e {
        SessionEvent::State {
            view: View::Failed(failure),
        } => Some(failure.class),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_end_in_their_documented_state() {
    // A wrong key: the token endpoint refuses it (401); fatal, no retry, no session.
    let mut bad = setup(common::config(), |_| {}).await;
    let wrong = bad.dir.path().join("wrong-key");
    std::fs::write(&wrong, "not-the-key").expect("key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    bad.config.provider.api_key.key_file = Some(wrong);
    let run_bad = run(&bad, &utterances(1), Duration::from_secs(20)).await;
    assert_eq!(failed(&run_bad), Some(CloseClass::Fatal));
    assert!(
        run_bad
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("401")),
        "{:?}",
        run_bad.failure
    );
    assert!(bad.emu.sessions().is_empty());

    // 3007 (a client bug): failed, not retried.
    let s = setup(common::config(), |_| {}).await;
    s.emu
        .add_fault("close:3007@500msx5".parse().expect("fault"));
    let r = run(&s, &utterances(2), Duration::from_secs(20)).await;
    assert_eq!(failed(&r), Some(CloseClass::ClientBug));
    assert_eq!(s.emu.sessions().len(), 1, "no retry after a client bug");

    // A token rejected twice: one fresh token, then failed.
    let s = setup(common::config(), |_| {}).await;
    s.emu.add_fault(
        "close-before-begin:1008:Unauthorized Connection: Temporary token expiredx2"
            .parse()
            .expect("fault"),
    );
    let r = run(&s, &utterances(2), Duration::from_secs(20)).await;
    assert_eq!(failed(&r), Some(CloseClass::TokenRejected));
    // Exactly one retry: two tokens were minted.
    assert_eq!(
        r.events
            .iter()
            .filter(|e| matches!(e, SessionEvent::Token { .. }))
            .count(),
        2
    );
    assert!(
        s.emu.sessions().is_empty(),
        "refused before Begin: no session opened"
    );

    // 3009: backs off (briefly here) and streams again.
    let s = setup(common::config(), |c| {
        c.session.rate_limit_backoff = Duration::from_millis(300);
    })
    .await;
    s.emu.add_fault("close:3009@0".parse().expect("fault"));
    let r = run(&s, &utterances(2), Duration::from_secs(20)).await;
    assert!(r.failure.is_none(), "{:?}", r.failure);
    assert!(r.events.iter().any(|e| matches!(
        e,
        SessionEvent::State {
            view: View::Backoff {
                class: CloseClass::RateLimited,
                ..
            }
        }
    )));

    // Closed before Begin: handled (backoff, then a session), never a hang.
    let s = setup(common::config(), |_| {}).await;
    s.emu
        .add_fault("close-before-begin:1011".parse().expect("fault"));
    let r = run(&s, &utterances(2), Duration::from_secs(20)).await;
    assert!(r.failure.is_none(), "{:?}", r.failure);
    assert_one_final_per_utterance(&r, 2);

    // Termination never arrives: the drain is bounded and the run still stops.
    let s = setup(common::config(), |_| {}).await;
    s.emu.add_fault("no-termination".parse().expect("fault"));
    let started = std::time::Instant::now();
    let r = run(&s, &utterances(1), Duration::from_secs(20)).await;
    assert!(
        r.events
            .iter()
            .any(|e| matches!(e, SessionEvent::DrainTimedOut { .. }))
    );
    assert!(matches!(
        r.events.last(),
        Some(SessionEvent::Finished { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The issue's own numbers: sessions of 60 s (the token's `max_session_duration_seconds`, no
/// emulator cap), 3 minutes of input. Takes 3 minutes, so it is opt-in:
/// `cargo nextest run --test session_e2e --run-ignored only`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3 minutes of real-time audio"]
async fn full_scale_three_minutes_with_60_second_sessions() {
    let setup = setup(common::config(), |c| {
        c.provider.max_session_duration_seconds = 60;
    })
    .await;
    let input = utterances(82);
    let run = run(&setup, &input, Duration::from_secs(240)).await;
    assert!(run.failure.is_none(), "{:?}", run.failure);
    let rotations = count(&run, |e| matches!(e, SessionEvent::Rotation { .. }));
    assert!(
        rotations >= 2,
        "at least two planned rotations, got {rotations}"
    );
    assert_eq!(count(&run, |e| matches!(e, SessionEvent::Lost { .. })), 0);
    assert_lossless(&received(&setup, &run.events), &input);
    assert_one_final_per_utterance(&run, 82);
    eprintln!(
        "full scale: {rotations} rotations, {} finals, {} sessions, 0 samples missing",
        run.transcript.finals().len(),
        setup.emu.sessions().len()
    );
}

/// The final words of a run, in stream order.
fn final_words(run: &Run) -> Vec<String> {
    let mut finals: Vec<_> = run.transcript.finals().to_vec();
    finals.sort_by_key(|f| f.start_ms);
    finals
        .iter()
        .flat_map(|f| f.words.iter().map(|w| w.text.clone()))
        .collect()
}

/// The strongest lossless check, readable by a person: with the stream-offset hints, the
/// emulator's words follow stream time, so the same input gives the same final words whether
/// the run was clean or went through a drop, a stall and 20 s sessions (rotations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_audio_gives_the_same_words_through_drops_stalls_and_rotations() {
    let input = utterances(14);
    let tweak = |c: &mut Config| c.session.stall_timeout = Duration::from_secs(2);
    let mut clean = setup(common::config(), tweak).await;
    clean.hints = true;
    let mut faulted = setup(
        EmulatorConfig {
            max_session_duration: Some(Duration::from_secs(20)),
            ..common::config()
        },
        tweak,
    )
    .await;
    faulted.hints = true;
    // A session takes every fault pending when it starts: the drop goes to the first session,
    // the stall (added once the drop happened) to the second.
    faulted.emu.add_fault("drop@3300ms".parse().expect("fault"));
    let stall_later = async {
        while faulted.emu.sessions().len() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        faulted
            .emu
            .add_fault("stall@4000ms".parse().expect("fault"));
    };
    let limit = Duration::from_secs(90);
    let (clean_run, faulted_run, ()) = tokio::join!(
        run(&clean, &input, limit),
        run(&faulted, &input, limit),
        stall_later
    );
    assert!(clean_run.failure.is_none(), "{:?}", clean_run.failure);
    assert!(faulted_run.failure.is_none(), "{:?}", faulted_run.failure);
    let count = |run: &Run, kind: &str| {
        run.events
            .iter()
            .filter(|e| match e {
                SessionEvent::Lost { .. } => kind == "lost",
                SessionEvent::Rotation { .. } => kind == "rotation",
                _ => false,
            })
            .count()
    };
    assert!(count(&faulted_run, "lost") >= 2, "a drop and a stall");
    assert!(count(&faulted_run, "rotation") >= 1, "20 s sessions rotate");
    assert_eq!(count(&clean_run, "lost") + count(&clean_run, "rotation"), 0);
    let words = final_words(&clean_run);
    assert_eq!(words.len(), 14 * 3, "{words:?}");
    assert_eq!(
        final_words(&faulted_run),
        words,
        "the same words, in the same order"
    );
}

/// One long turn: `words` words of 300 ms tone with 100 ms gaps (no silence long enough to end
/// the turn), then a second of silence.
fn long_turn(words: usize) -> Vec<i16> {
    let mut out = Vec::new();
    let mut phase = 0.0_f64;
    for w in 0..words {
        let freq = 300.0 + 40.0 * w as f64;
        for _ in 0..4800 {
            phase += 2.0 * std::f64::consts::PI * freq / 16_000.0;
            out.push((phase.sin() * 9000.0) as i16);
        }
        out.extend(std::iter::repeat_n(0, 1600));
    }
    out.extend(std::iter::repeat_n(0, 16_000));
    out
}

/// With PII redaction the service withholds partial turns: a long turn says nothing for
/// seconds. That is no stall: the session is kept (the ping rule still watches it), and the
/// turn's final comes whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_redacted_turn_is_not_a_stall() {
    let setup = setup(common::config(), |c| {
        c.session.stall_timeout = Duration::from_secs(1);
        c.streaming.params.redact_pii = true;
    })
    .await;
    let input = long_turn(14);
    let run = run(&setup, &input, Duration::from_secs(30)).await;
    assert!(run.failure.is_none(), "{:?}", run.failure);
    let lost: Vec<_> = run
        .events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Lost { .. }))
        .collect();
    assert!(
        lost.is_empty(),
        "a redacted turn is not a dead session: {lost:?}"
    );
    assert!(
        !run.events
            .iter()
            .any(|e| matches!(e, SessionEvent::Partial(_))),
        "the emulator withholds partials as the service does"
    );
    assert_eq!(finals(&run).len(), 1, "{:?}", finals(&run));
    assert_lossless(&received(&setup, &run.events), &input);
}

/// Live settings: an update sent mid-session reaches the live session (the emulator records
/// it) and every successor connects with it (its URL parameters), and the run reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_setting_reaches_the_session_and_every_successor() {
    let setup = setup(
        EmulatorConfig {
            max_session_duration: Some(Duration::from_secs(6)),
            ..common::config()
        },
        |c| c.session.rotation_lead = Duration::from_secs(2),
    )
    .await;
    let input = utterances(6);
    let update = aai_live::protocol::messages::UpdateConfiguration {
        keyterms_prompt: Some(vec!["Fox".into()]),
        max_turn_silence: Some(3000),
        ..Default::default()
    };
    // Out of the service's range: refused with a warning, nothing sent.
    let refused = aai_live::protocol::messages::UpdateConfiguration {
        max_turn_silence: Some(20_000),
        ..Default::default()
    };
    let mut begins = 0;
    let run = run_with(&setup, &input, Duration::from_secs(30), |e| {
        if !matches!(e, SessionEvent::Begin { .. }) {
            return None;
        }
        begins += 1;
        match begins {
            1 => Some(SessionCommand::Update(update.clone())),
            2 => Some(SessionCommand::Update(refused.clone())),
            _ => None,
        }
    })
    .await;
    assert!(run.failure.is_none(), "{:?}", run.failure);
    assert_eq!(
        count(
            &run,
            |e| matches!(e, SessionEvent::SettingsUpdated(u) if *u == update)
        ),
        1
    );
    let sessions = setup.emu.sessions();
    assert!(sessions.len() >= 2, "a rotation: {sessions:?}");
    let first = &sessions[0];
    assert_eq!(first.updates_received, 1, "{first:?}");
    let effective = first.effective.as_ref().expect("effective");
    assert_eq!(effective.keyterms_prompt, ["Fox"]);
    assert_eq!(effective.max_turn_silence, 3000);
    for later in &sessions[1..] {
        assert_eq!(later.params.keyterms_prompt, ["Fox"], "{later:?}");
        assert_eq!(later.params.max_turn_silence, Some(3000), "{later:?}");
        assert_eq!(later.updates_received, 0, "{later:?}");
    }
    assert!(
        run.events
            .iter()
            .any(|e| matches!(e, SessionEvent::Warning { message, .. }
            if message.contains("live settings not sent") && message.contains("max_turn_silence"))),
        "{:?}",
        run.events
    );
}
