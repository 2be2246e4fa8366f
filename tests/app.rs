//! The dashboard's update logic: feed actions and session events to `DashboardState::update` and
//! check the state and the commands it emits. No terminal, no tasks, no clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aai_live::app::action::{Action, Keymap};
use aai_live::app::state::{DashboardState, Info, ProblemKind, UiOptions, locale_is_utf8};
use aai_live::app::{DashboardCommand, Msg, StartFailure};
use aai_live::audio::{AudioStats, InputEnd};
use aai_live::config::{Config, KeySpec};
use aai_live::events::SessionEvent;
use aai_live::events::{Cause, View};
use aai_live::failure::Failure;
use aai_live::protocol::CloseClass;
use aai_live::provider::ProviderError;
use aai_live::session;
use aai_live::transcript::{FinalTurn, PartialTurn};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn state() -> DashboardState {
    DashboardState::from_config(
        &Config::default(),
        Info::default(),
        UiOptions {
            fps: 10,
            mono: false,
            ascii: false,
            events: false,
        },
    )
}

fn act(s: &mut DashboardState, action: Action, t: u64) -> Vec<DashboardCommand> {
    s.update(Msg::Action(action), at(t))
}

fn event(s: &mut DashboardState, e: SessionEvent, t: u64) -> Vec<DashboardCommand> {
    s.update(Msg::Session(e), at(t))
}

fn view(s: &mut DashboardState, v: View, t: u64) -> Vec<DashboardCommand> {
    event(s, SessionEvent::State { view: v }, t)
}

fn streaming(s: &mut DashboardState) {
    assert_eq!(
        act(s, Action::ToggleStream, 0),
        vec![DashboardCommand::StartSession {
            run: 1,
            muted: false
        }]
    );
    view(
        s,
        View::Minting {
            generation: 1,
            cause: Cause::Start,
        },
        0,
    );
    view(
        s,
        View::Streaming {
            generation: 1,
            session_id: "abc".into(),
        },
        1,
    );
    event(
        s,
        SessionEvent::Begin {
            generation: 1,
            session_id: "abc".into(),
            expires_at: 1_800_000_061,
            stream_offset_ms: 0,
            backlog_ms: 0,
            cause: Cause::Start,
        },
        1,
    );
}

fn fin(generation: u64, order: u64, text: &str, latency: Option<u64>) -> SessionEvent {
    SessionEvent::Final(FinalTurn {
        generation,
        session_id: "abc".into(),
        turn_order: order,
        text: text.into(),
        formatted: true,
        start_ms: order * 1000,
        end_ms: order * 1000 + 800,
        speaker: None,
        words: Vec::new(),
        latency_ms: latency,
        source: None,
        echo: false,
        ..FinalTurn::default()
    })
}

fn finished(failure: Option<&str>) -> SessionEvent {
    SessionEvent::Finished {
        finals: 0,
        rotations: 0,
        reconnects: 0,
        audio_captured_samples: 0,
        audio_sent_samples: 0,
        audio_lost_samples: 0,
        audio_lost_ms: 0,
        latency_p50_ms: None,
        latency_p95_ms: None,
        failure: failure.map(str::to_owned),
        explain: None,
        archive: None,
    }
}

#[test]
fn start_stop_and_start_again_spawns_a_new_supervisor() {
    let mut s = state();
    streaming(&mut s);
    assert!(s.lifecycle.running);
    assert_eq!(
        act(&mut s, Action::ToggleStream, 5),
        vec![DashboardCommand::Session(session::SessionCommand::Stop)]
    );
    view(&mut s, View::Draining { generation: 1 }, 5);
    // Pressed again while draining: start once the supervisor has finished.
    assert!(act(&mut s, Action::ToggleStream, 6).is_empty());
    assert!(s.lifecycle.start_pending);
    view(&mut s, View::Stopped, 6);
    let out = event(&mut s, finished(None), 6);
    assert_eq!(
        out,
        vec![DashboardCommand::StartSession {
            run: 2,
            muted: false
        }]
    );
    assert!(s.lifecycle.running);
    assert_eq!(s.session.view, View::Idle);
}

#[test]
fn after_a_stop_the_next_start_is_immediate() {
    let mut s = state();
    streaming(&mut s);
    act(&mut s, Action::ToggleStream, 5);
    view(&mut s, View::Stopped, 6);
    assert!(event(&mut s, finished(None), 6).is_empty());
    assert!(!s.lifecycle.running);
    assert_eq!(
        act(&mut s, Action::ToggleStream, 7),
        vec![DashboardCommand::StartSession {
            run: 2,
            muted: false
        }]
    );
}

#[test]
fn mute_is_sent_and_remembered_for_the_next_run() {
    let mut s = state();
    // Before anything runs: only remembered.
    assert!(act(&mut s, Action::Pause, 0).is_empty());
    assert!(s.audio.muted);
    assert_eq!(
        act(&mut s, Action::ToggleStream, 0),
        vec![DashboardCommand::StartSession {
            run: 1,
            muted: true
        }]
    );
    assert_eq!(
        act(&mut s, Action::Pause, 1),
        vec![DashboardCommand::Session(
            session::SessionCommand::SetMuted(false)
        )]
    );
    assert!(!s.audio.muted);
}

#[test]
fn keepalive_is_sent_while_muted_and_streaming() {
    let mut s = state();
    streaming(&mut s);
    act(&mut s, Action::Pause, 2);
    assert!(s.update(Msg::Tick, at(3)).is_empty(), "not due yet");
    assert_eq!(
        s.update(Msg::Tick, at(8)),
        vec![DashboardCommand::Session(
            session::SessionCommand::KeepAlive
        )]
    );
    assert!(s.update(Msg::Tick, at(9)).is_empty());
}

#[test]
fn force_endpoint_and_reconnect_only_while_streaming() {
    let mut s = state();
    assert!(act(&mut s, Action::ForceEndpoint, 0).is_empty());
    assert!(act(&mut s, Action::Reconnect, 0).is_empty());
    assert!(s.notice.is_some(), "says why nothing happened");
    streaming(&mut s);
    assert_eq!(
        act(&mut s, Action::ForceEndpoint, 2),
        vec![DashboardCommand::Session(
            session::SessionCommand::ForceEndpoint
        )]
    );
    assert_eq!(
        act(&mut s, Action::Reconnect, 2),
        vec![DashboardCommand::Session(
            session::SessionCommand::Reconnect
        )]
    );
    assert_eq!(
        act(&mut s, Action::MintToken, 2),
        vec![DashboardCommand::MintToken]
    );
}

#[test]
fn finals_partials_latency_and_replacement() {
    let mut s = state();
    streaming(&mut s);
    event(
        &mut s,
        SessionEvent::Partial(PartialTurn {
            generation: 1,
            turn_order: 0,
            text: "hello wor".into(),
            start_ms: 0,
            end_ms: 500,
        }),
        2,
    );
    assert_eq!(
        s.transcript.partial().map(|p| p.text.as_str()),
        Some("hello wor")
    );
    event(&mut s, fin(1, 0, "hello world", Some(300)), 3);
    assert!(s.transcript.partial().is_none());
    // The formatted duplicate of the same turn replaces it and does not count twice.
    event(&mut s, fin(1, 0, "Hello, world.", Some(900)), 3);
    assert_eq!(s.transcript.all().len(), 1);
    assert_eq!(s.transcript.all()[0].text, "Hello, world.");
    assert_eq!(s.latency.recent.len(), 1);
    for (i, l) in [100, 200, 400, 500].into_iter().enumerate() {
        event(&mut s, fin(1, i as u64 + 1, "x y", Some(l)), 4);
    }
    assert_eq!((s.latency.p50, s.latency.p95), (Some(300), Some(500)));
}

#[test]
fn scrolling_stops_following_and_counts_new_turns() {
    let mut s = state();
    streaming(&mut s);
    for i in 0..20 {
        event(&mut s, fin(1, i, "turn", None), 5);
    }
    act(&mut s, Action::ScrollUp, 6);
    assert!(!s.transcript.is_following());
    act(&mut s, Action::PageUp, 6);
    let bottom = s.transcript.bottom().expect("bottom");
    event(&mut s, fin(1, 20, "new", None), 7);
    event(&mut s, fin(1, 21, "newer", None), 7);
    assert_eq!(s.transcript.bottom(), Some(bottom), "the view stays put");
    assert_eq!(s.transcript.below(), 21 - bottom);
    act(&mut s, Action::ScrollTop, 8);
    assert_eq!(s.transcript.bottom(), Some(0));
    act(&mut s, Action::ScrollBottom, 8);
    assert!(s.transcript.is_following());
}

#[test]
fn clear_hides_the_screen_but_export_keeps_everything() {
    let mut s = state();
    streaming(&mut s);
    assert!(
        act(&mut s, Action::Export, 1).is_empty(),
        "nothing to export"
    );
    event(&mut s, fin(1, 0, "one", None), 2);
    act(&mut s, Action::Clear, 3);
    assert!(s.transcript.visible().is_empty());
    assert_eq!(
        act(&mut s, Action::Export, 4),
        vec![DashboardCommand::Export]
    );
    assert_eq!(s.transcript.all().len(), 1);
    let out = s.update(
        Msg::Exported(Ok(vec!["/tmp/t/aai-live-x-export.txt".into()])),
        at(5),
    );
    assert!(out.is_empty());
    assert!(
        s.notice
            .as_ref()
            .is_some_and(|n| n.text.contains("aai-live-x-export.txt"))
    );
    assert_eq!(s.saved.len(), 1);
}

#[test]
fn quit_while_streaming_stops_waits_for_the_save_then_quits() {
    let mut s = state();
    streaming(&mut s);
    assert_eq!(
        act(&mut s, Action::Quit, 10),
        vec![DashboardCommand::Session(session::SessionCommand::Stop)]
    );
    assert!(s.lifecycle.quitting.is_some() && !s.should_quit);
    // Start is refused while quitting.
    assert!(act(&mut s, Action::ToggleStream, 10).is_empty());
    view(&mut s, View::Draining { generation: 1 }, 10);
    event(&mut s, fin(1, 0, "last words", None), 11);
    view(&mut s, View::Stopped, 11);
    assert!(
        event(&mut s, finished(None), 11).is_empty(),
        "waits for the save"
    );
    assert_eq!(s.lifecycle.saving, 1);
    let out = s.update(Msg::Saved(Ok(vec!["/tmp/t/run.jsonl".into()])), at(11));
    assert_eq!(out, vec![DashboardCommand::Quit]);
    assert!(s.should_quit);
    assert_eq!(s.transcript.all().len(), 1, "the last final made it");
}

#[test]
fn quit_twice_leaves_at_once_and_a_deadline_bounds_the_wait() {
    let mut s = state();
    streaming(&mut s);
    act(&mut s, Action::Quit, 10);
    assert_eq!(act(&mut s, Action::Quit, 11), vec![DashboardCommand::Quit]);

    let mut s = state();
    streaming(&mut s);
    act(&mut s, Action::Quit, 10);
    assert!(s.update(Msg::Tick, at(12)).is_empty());
    // Default terminate_timeout 5 s + 5 s for the save.
    assert_eq!(s.update(Msg::Tick, at(21)), vec![DashboardCommand::Quit]);
}

#[test]
fn quit_when_idle_is_immediate() {
    let mut s = state();
    assert_eq!(act(&mut s, Action::Quit, 0), vec![DashboardCommand::Quit]);
    assert!(s.should_quit);
}

#[test]
fn counters_and_the_last_close() {
    let mut s = state();
    streaming(&mut s);
    event(
        &mut s,
        SessionEvent::Rotation {
            from: 1,
            to: 2,
            forced: false,
            gap_ms: 0,
            stream_offset_ms: 40_000,
            primed_ms: 0,
        },
        40,
    );
    event(
        &mut s,
        SessionEvent::Lost {
            generation: 2,
            class: CloseClass::Transient,
            code: Some(1006),
            reason: "connection dropped".into(),
            what_now: CloseClass::Transient.advice(),
            explain: "1006",
        },
        50,
    );
    event(
        &mut s,
        SessionEvent::Reconnected {
            generation: 3,
            replay_from_ms: 48_000,
            replay_ms: 2_000,
            gap_ms: 800,
            primed_ms: 0,
        },
        51,
    );
    event(
        &mut s,
        SessionEvent::AudioLost {
            from_ms: 0,
            to_ms: 1500,
            ms: 1500,
            samples: 24_000,
            from_sample: 0,
            to_sample: 24_000,
            cause: aai_live::events::LossCause::ReplayBufferFull,
        },
        51,
    );
    assert_eq!((s.session.rotations, s.session.reconnects), (1, 1));
    assert_eq!(s.session.audio_lost_ms, 1500);
    let close = s.session.last_close.as_ref().expect("close");
    assert_eq!(
        (close.code, close.class),
        (Some(1006), CloseClass::Transient)
    );
    let log: Vec<&str> = s.events.entries().iter().map(|e| e.text.as_str()).collect();
    assert!(log.iter().any(|l| l.starts_with("rotated:")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("could not be transcribed")));
}

#[test]
fn backoff_and_failure_show_panels_and_keep_the_transcript() {
    let mut s = state();
    streaming(&mut s);
    event(&mut s, fin(1, 0, "kept", None), 2);
    view(
        &mut s,
        View::Backoff {
            attempt: 1,
            retry_in_ms: 2500,
            class: CloseClass::Transient,
        },
        3,
    );
    assert_eq!(
        s.session.retry_at,
        Some(at(3) + Duration::from_millis(2500))
    );
    view(
        &mut s,
        View::Failed(Failure::close(Some(1008), "invalid API key", None, true)),
        4,
    );
    let problem = s.problems.first().expect("panel");
    assert_eq!(problem.kind, ProblemKind::Session);
    assert!(problem.hint.contains("API key") && problem.hint.contains("space"));
    event(&mut s, finished(Some("1008 invalid API key")), 4);
    assert_eq!(s.transcript.all().len(), 1);
    assert_eq!(s.last_failure.as_deref(), Some("1008 invalid API key"));
    // Starting again clears the panel.
    act(&mut s, Action::ToggleStream, 5);
    assert!(s.problems.is_empty());
}

#[test]
fn a_provider_or_audio_failure_is_a_panel_and_start_can_be_retried() {
    let mut s = state();
    s.update(
        Msg::StartFailed(StartFailure::Provider(Failure::token(
            &ProviderError::NotConfigured {
                provider: "api-key",
                detail: "ASSEMBLYAI_API_KEY is not set".into(),
            },
        ))),
        at(0),
    );
    assert_eq!(s.problems[0].kind, ProblemKind::Provider);
    assert!(!s.lifecycle.running);
    act(&mut s, Action::ToggleStream, 1);
    s.update(
        Msg::StartFailed(StartFailure::Audio("no microphone".into())),
        at(1),
    );
    assert_eq!(s.problems.len(), 2);
    assert!(!s.lifecycle.running);
    s.update(Msg::AudioOpened("microphone: default".into()), at(2));
    assert_eq!(s.problems.len(), 1, "the audio panel goes when it opens");
}

#[test]
fn a_lost_device_is_a_panel() {
    let mut s = state();
    streaming(&mut s);
    s.update(
        Msg::AudioStats(AudioStats {
            ended: Some(InputEnd::Failed("device unplugged".into())),
            ..AudioStats::default()
        }),
        at(5),
    );
    assert_eq!(s.problems[0].kind, ProblemKind::Audio);
    assert_eq!(s.problems[0].detail, "device unplugged");
    assert!(!s.audio.open);
    // Quitting after it exits 1: a lost input is a failure, not a normal end.
    assert!(
        s.last_failure
            .as_deref()
            .is_some_and(|f| f.contains("device unplugged")),
        "{:?}",
        s.last_failure
    );
}

#[test]
fn a_crashed_supervisor_is_a_failure_not_a_crash() {
    let mut s = state();
    streaming(&mut s);
    s.update(Msg::SessionCrashed("task panicked".into()), at(5));
    assert!(!s.lifecycle.running);
    assert!(matches!(s.session.view, View::Failed { .. }));
    assert!(!s.problems.is_empty());
}

#[test]
fn help_events_and_escape() {
    let mut s = state();
    act(&mut s, Action::Help, 0);
    assert!(s.show_help);
    s.update(Msg::Dismiss, at(0));
    assert!(!s.show_help);
    act(&mut s, Action::ToggleEvents, 0);
    assert!(s.show_events);
}

fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
    KeyEvent::new(code, modifiers)
}

#[test]
fn the_keymap_follows_the_config() {
    let config = Config::default();
    let keys = Keymap::from_config(&config.keys);
    let press = |code, m| keys.action_for_event(&key(code, m));
    assert_eq!(
        press(KeyCode::Char(' '), KeyModifiers::NONE),
        Some(Action::ToggleStream)
    );
    assert_eq!(
        press(KeyCode::Char('c'), KeyModifiers::CONTROL),
        Some(Action::Quit)
    );
    assert_eq!(
        press(KeyCode::Char('c'), KeyModifiers::NONE),
        Some(Action::Clear)
    );
    // Terminals report "?" with SHIFT held.
    assert_eq!(
        press(KeyCode::Char('?'), KeyModifiers::SHIFT),
        Some(Action::Help)
    );
    assert_eq!(
        press(KeyCode::PageUp, KeyModifiers::NONE),
        Some(Action::PageUp)
    );
    assert_eq!(press(KeyCode::Char('z'), KeyModifiers::NONE), None);
    let mut release = key(KeyCode::Char('q'), KeyModifiers::NONE);
    release.kind = KeyEventKind::Release;
    assert_eq!(keys.action_for_event(&release), None);

    // Rebinding: quit on "x" only.
    let mut config = Config::default();
    config
        .keys
        .bindings
        .insert("quit".into(), vec!["x".parse::<KeySpec>().expect("key")]);
    let keys = Keymap::from_config(&config.keys);
    assert_eq!(
        keys.action_for_event(&key(KeyCode::Char('x'), KeyModifiers::NONE)),
        Some(Action::Quit)
    );
    assert_eq!(
        keys.action_for_event(&key(KeyCode::Char('q'), KeyModifiers::NONE)),
        None
    );
    assert_eq!(keys.keys_text(Action::Quit), "x");
}

#[test]
fn every_configured_action_is_known() {
    let config = Config::default();
    for name in config.keys.bindings.keys() {
        assert!(
            Action::from_name(name).is_some(),
            "[keys] {name} has no action"
        );
    }
    assert_eq!(config.keys.bindings.len(), Action::COUNT);
}

#[test]
fn mouse_wheel_scrolls_and_resize_is_seen() {
    use ratatui::crossterm::event::{Event, MouseEvent, MouseEventKind};
    let keys = Keymap::from_config(&Config::default().keys);
    let wheel = |kind| {
        Event::Mouse(MouseEvent {
            kind,
            column: 0,
            row: 0,
            modifiers: KeyModifiers::NONE,
        })
    };
    assert_eq!(
        Msg::from_terminal(&wheel(MouseEventKind::ScrollUp), &keys),
        Some(Msg::Action(Action::ScrollUp))
    );
    assert_eq!(
        Msg::from_terminal(&wheel(MouseEventKind::ScrollDown), &keys),
        Some(Msg::Action(Action::ScrollDown))
    );
    assert_eq!(
        Msg::from_terminal(&Event::Resize(120, 40), &keys),
        Some(Msg::Resize(120, 40))
    );
    assert_eq!(
        Msg::from_terminal(&Event::Key(key(KeyCode::Esc, KeyModifiers::NONE)), &keys),
        Some(Msg::Dismiss)
    );
}

#[test]
fn no_color_and_non_utf8_locales() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let config = Config::default();
    let ui = UiOptions::from_config(&config, &env(&[("NO_COLOR", "1"), ("LANG", "en_US.UTF-8")]));
    assert!(ui.mono && !ui.ascii);
    let ui = UiOptions::from_config(&config, &env(&[("NO_COLOR", ""), ("LANG", "C")]));
    assert!(!ui.mono && ui.ascii);
    assert!(!locale_is_utf8(&env(&[])));
    assert!(locale_is_utf8(&env(&[
        ("LC_ALL", "de_DE.utf8"),
        ("LANG", "C")
    ])));
    assert!(!locale_is_utf8(&env(&[
        ("LC_ALL", "C"),
        ("LANG", "en_US.UTF-8")
    ])));
}

#[test]
fn keybindings_doc_lists_every_action_with_its_default_keys() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/keybindings.md"))
        .expect("docs/keybindings.md");
    let keys = Keymap::from_config(&Config::default().keys);
    for action in Action::all() {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", action.name())))
            .unwrap_or_else(|| panic!("docs/keybindings.md has no row for {}", action.name()));
        for key in keys.keys(action) {
            assert!(
                row.contains(&format!("`{key}`")),
                "{}: default key {key} missing from {row}",
                action.name()
            );
        }
        // The description starts with the help overlay's text (the action's doc comment).
        let what = row
            .split('|')
            .nth(3)
            .unwrap_or_default()
            .trim()
            .to_lowercase();
        assert!(
            what.starts_with(&action.describe().to_lowercase()),
            "{}: the row's description must start with the help text {:?}: {row}",
            action.name(),
            action.describe()
        );
    }
}

#[test]
fn stop_then_start_before_the_state_changes_queues_a_restart() {
    let mut s = state();
    streaming(&mut s);
    assert_eq!(
        act(&mut s, Action::ToggleStream, 5),
        vec![DashboardCommand::Session(session::SessionCommand::Stop)]
    );
    // Pressed again before the supervisor reported Draining: no second Stop, a queued start.
    assert!(act(&mut s, Action::ToggleStream, 5).is_empty());
    assert!(s.lifecycle.start_pending);
    // A third press cancels the restart.
    assert!(act(&mut s, Action::ToggleStream, 5).is_empty());
    assert!(!s.lifecycle.start_pending);
    act(&mut s, Action::ToggleStream, 5);
    view(&mut s, View::Stopped, 6);
    assert_eq!(
        event(&mut s, finished(None), 6),
        vec![DashboardCommand::StartSession {
            run: 2,
            muted: false
        }]
    );
}

/// `n` names the speaker of the last turn shown: a prompt in the footer (every key types into
/// it, so `q` is a letter there), enter keeps the name — every turn of that speaker shows it, and
/// the runtime is told (for the stream's journal and exports, and the next runs) — esc leaves.
/// A pending speaker cannot be named; a revision changes who said a turn on screen.
#[test]
fn a_speaker_is_named_from_the_dashboard() {
    use aai_live::app::msg::PromptKey;
    let mut s = state();
    streaming(&mut s);
    let spoken = |order, speaker: &str| match fin(1, order, "Numbers are up.", None) {
        SessionEvent::Final(f) => SessionEvent::Final(FinalTurn {
            speaker: Some(speaker.into()),
            ..f
        }),
        other => other,
    };
    event(&mut s, spoken(0, "A"), 2);
    event(&mut s, spoken(1, "A"), 3);
    assert!(act(&mut s, Action::NameSpeaker, 4).is_empty());
    assert!(s.prompt.is_some(), "a prompt opens");
    // While it is open, `q` is a letter: the dashboard does not quit.
    let mut typed = Vec::new();
    for c in "Qa".chars() {
        typed.extend(s.update(Msg::Prompt(PromptKey::Char(c)), at(4)));
    }
    typed.extend(s.update(Msg::Prompt(PromptKey::Backspace), at(4)));
    for c in "uinn".chars() {
        typed.extend(s.update(Msg::Prompt(PromptKey::Char(c)), at(4)));
    }
    assert!(typed.is_empty() && !s.should_quit);
    let out = s.update(Msg::Prompt(PromptKey::Submit), at(5));
    assert_eq!(
        out,
        vec![DashboardCommand::NameSpeaker {
            source: None,
            speaker: "A".into(),
            name: "Quinn".into(),
        }]
    );
    assert!(s.prompt.is_none());
    let names: Vec<Option<String>> = s
        .transcript
        .all()
        .iter()
        .map(aai_live::app::transcript::Turn::who)
        .collect();
    assert_eq!(names, [Some("Quinn".to_owned()), Some("Quinn".to_owned())]);

    // Esc leaves the name as it was.
    act(&mut s, Action::NameSpeaker, 6);
    assert_eq!(s.prompt.as_ref().map(|p| p.text.as_str()), Some("Quinn"));
    s.update(Msg::Prompt(PromptKey::Char('x')), at(6));
    assert!(s.update(Msg::Prompt(PromptKey::Cancel), at(6)).is_empty());
    assert_eq!(s.transcript.all()[1].who().as_deref(), Some("Quinn"));

    // The service revises the last turn to B (unnamed): it shows B.
    event(
        &mut s,
        SessionEvent::SpeakerRevision {
            generation: 1,
            turn_order: 1,
            speaker: Some("B".into()),
            speaker_name: None,
            speaker_uncertain: false,
            words: Vec::new(),
        },
        7,
    );
    assert_eq!(s.transcript.all()[1].who().as_deref(), Some("B"));

    // A turn too short to tell: nothing to name.
    event(&mut s, spoken(2, "PENDING"), 8);
    act(&mut s, Action::NameSpeaker, 9);
    assert!(s.prompt.is_none());
    assert_eq!(
        s.transcript.all()[2].who().as_deref(),
        Some("speaker pending")
    );
}

#[test]
fn live_settings_are_edited_on_the_dashboard() {
    use aai_live::app::msg::PromptKey;
    use aai_live::protocol::messages::UpdateConfiguration;
    let mut s = state();
    streaming(&mut s);
    let type_in = |s: &mut DashboardState, text: &str| {
        for c in text.chars() {
            assert!(s.update(Msg::Prompt(PromptKey::Char(c)), at(3)).is_empty());
        }
    };
    assert!(act(&mut s, Action::LiveSettings, 2).is_empty());
    let line = s.prompt.as_ref().map(|p| p.text.clone());
    assert_eq!(
        line.as_deref(),
        Some("keyterms=; min_turn_silence=; max_turn_silence=")
    );
    // Replace the line: clear it, type the new one.
    for _ in 0..line.map_or(0, |l| l.chars().count()) {
        s.update(Msg::Prompt(PromptKey::Backspace), at(3));
    }
    type_in(&mut s, "keyterms=Ana, Kubernetes; max_turn_silence=1.5s");
    let out = s.update(Msg::Prompt(PromptKey::Submit), at(4));
    let update = UpdateConfiguration {
        keyterms_prompt: Some(vec!["Ana".into(), "Kubernetes".into()]),
        max_turn_silence: Some(1500),
        ..UpdateConfiguration::default()
    };
    assert_eq!(
        out,
        vec![DashboardCommand::Session(session::SessionCommand::Update(
            update.clone()
        ))]
    );
    assert!(s.prompt.is_none());
    assert_eq!(s.live.keyterms, ["Ana", "Kubernetes"]);
    assert_eq!(s.live.max_turn_silence, Some(1500));

    // A mistake is named and the line reopens as typed; nothing is sent.
    act(&mut s, Action::LiveSettings, 5);
    type_in(&mut s, "; colour=red");
    assert!(s.update(Msg::Prompt(PromptKey::Submit), at(6)).is_empty());
    let reopened = s.prompt.as_ref().map(|p| p.text.as_str());
    assert_eq!(
        reopened,
        Some("keyterms=Ana, Kubernetes; min_turn_silence=; max_turn_silence=1500ms; colour=red")
    );
    assert!(
        s.notice.as_ref().is_some_and(|n| n.text.contains("colour")),
        "{:?}",
        s.notice
    );
    // Unchanged: nothing to send.
    s.update(Msg::Prompt(PromptKey::Cancel), at(7));
    act(&mut s, Action::LiveSettings, 7);
    assert!(s.update(Msg::Prompt(PromptKey::Submit), at(7)).is_empty());
}
