//! Snapshots of the whole dashboard (ratatui `TestBackend` + insta), rendered at a fixed `now`,
//! for every state at 80×24 and at a wide size, plus the help overlay, the events pane, failure
//! panels, scrolling, tiny terminals, mono and ASCII. States are reached by feeding messages to
//! `DashboardState::update`, as the running dashboard does.

#[path = "support/demo.rs"]
mod demo_recording;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aai_live::app::Msg;
use aai_live::app::action::Action;
use aai_live::app::state::{DashboardState, Info, UiOptions};
use aai_live::audio::{AudioStats, Level, SourceFormat};
use aai_live::config::Config;
use aai_live::events::SessionEvent;
use aai_live::events::{Cause, View};
use aai_live::failure::{Failure, Origin};
use aai_live::protocol::CloseClass;
use aai_live::provider::{ProviderErrorClass, TokenState};
use aai_live::session::SupervisorOptions;
use aai_live::transcript::{FinalTurn, PartialTurn};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const SESSION_ID: &str = "3207b601-0f4e-4c63-9f5f-6f0f4b8f2a11";
const NEXT_ID: &str = "9c41e2d0-77aa-4b1e-8d3f-0a5b6c7d8e9f";
/// Sessions last 10 minutes in these scenes.
const SESSION_S: u64 = 600;

/// A fixed wall-clock origin, so every countdown renders the same.
fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + ms)
}

fn unix(s: u64) -> i64 {
    (1_800_000_000 + s) as i64
}

/// When the supervisor would plan the successor of a session of `secs` (the machine's rule).
fn rotates_in(secs: u64) -> Option<u64> {
    SupervisorOptions::from_config(&Config::default())
        .machine
        .rotation_after(Duration::from_secs(secs))
        .map(|d| d.as_millis() as u64)
}

fn screen(state: &DashboardState, width: u16, height: u16, now: SystemTime) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal
        .draw(|frame| aai_live::ui::render(frame, state, now))
        .expect("draw");
    terminal.backend().to_string()
}

fn ui(mono: bool, ascii: bool) -> UiOptions {
    UiOptions {
        fps: 10,
        mono,
        ascii,
        events: false,
    }
}

fn idle_with(ui: UiOptions) -> DashboardState {
    let info = Info {
        provider: "api-key".into(),
        source: "https://streaming.assemblyai.com/v3/token".into(),
        endpoint: "wss://streaming.assemblyai.com/v3/ws".into(),
        region: Some("default".into()),
        input: "microphone: default".into(),
        demo: None,
    };
    let mut s = DashboardState::from_config(&Config::default(), info, ui);
    s.update(Msg::AudioOpened("microphone: default".into()), at(0));
    s.update(
        Msg::AudioStats(AudioStats {
            input: "microphone: default".into(),
            native: SourceFormat {
                sample_rate: 48_000,
                channels: 2,
                sample: "f32".into(),
            },
            sample_rate: 16_000,
            chunks: 20,
            samples: 16_000,
            ..AudioStats::default()
        }),
        at(0),
    );
    s.update(
        Msg::Level(Level {
            rms_dbfs: -24.0,
            peak_dbfs: -9.0,
            clipping: false,
        }),
        at(0),
    );
    s.update(Msg::Resize(80, 24), at(0));
    s
}

fn idle() -> DashboardState {
    idle_with(ui(false, false))
}

fn session(s: &mut DashboardState, e: SessionEvent, t: SystemTime) {
    s.update(Msg::Session(e), t);
}

fn view(s: &mut DashboardState, view: View, t: SystemTime) {
    session(s, SessionEvent::State { view }, t);
}

fn minting(s: &mut DashboardState) {
    s.update(Msg::Action(Action::ToggleStream), at(0));
    view(
        s,
        View::Minting {
            generation: 1,
            cause: Cause::Start,
        },
        at(0),
    );
    s.update(Msg::Token(TokenState::Fetching { since: at(0) }), at(0));
}

const SENTENCES: [&str; 6] = [
    "Tokens are minted once and used once.",
    "Sessions rotate before they expire.",
    "When a connection drops, the audio is replayed.",
    "No words are lost along the way.",
    "This dashboard shows the session's time left, the token waiting for the next connect, \
     and every close in plain words.",
    "Scroll back with the arrow keys or the mouse wheel.",
];

fn final_turn(generation: u64, order: u64, text: &str, start_ms: u64) -> FinalTurn {
    FinalTurn {
        generation,
        session_id: SESSION_ID.into(),
        turn_order: order,
        text: text.into(),
        formatted: true,
        start_ms,
        end_ms: start_ms + 2500,
        speaker: None,
        words: Vec::new(),
        latency_ms: Some(280 + order * 37),
        source: None,
        echo: false,
        ..FinalTurn::default()
    }
}

/// Streaming on session 1 since 0:01, with finals and a partial.
fn streaming() -> DashboardState {
    let mut s = idle();
    minting(&mut s);
    session(
        &mut s,
        SessionEvent::Token {
            generation: 1,
            fingerprint: "3fa91c0e27d1".into(),
            redeem_in_ms: Some(59_000),
        },
        at(1),
    );
    s.update(Msg::Token(TokenState::None), at(1));
    view(
        &mut s,
        View::Connecting {
            generation: 1,
            cause: Cause::Start,
        },
        at(1),
    );
    view(
        &mut s,
        View::Streaming {
            generation: 1,
            session_id: SESSION_ID.into(),
        },
        at(1),
    );
    session(
        &mut s,
        SessionEvent::Begin {
            generation: 1,
            session_id: SESSION_ID.into(),
            expires_at: unix(1 + SESSION_S),
            stream_offset_ms: 0,
            backlog_ms: 0,
            cause: Cause::Start,
        },
        at(1),
    );
    session(
        &mut s,
        SessionEvent::RotationPlanned {
            generation: 1,
            rotates_in_ms: rotates_in(SESSION_S).expect("rotation on"),
            staggered_ms: 0,
        },
        at(1),
    );
    for (i, text) in SENTENCES.iter().enumerate() {
        let start = 2000 + i as u64 * 4000;
        session(
            &mut s,
            SessionEvent::Final(final_turn(1, i as u64, text, start)),
            at_ms(1000 + start + 2800),
        );
    }
    session(
        &mut s,
        SessionEvent::Partial(PartialTurn {
            generation: 1,
            turn_order: 6,
            text: "and the partial is updated in".into(),
            start_ms: 26_000,
            end_ms: 27_500,
        }),
        at(29),
    );
    s.update(
        Msg::Token(TokenState::Ready {
            provider: "api-key",
            fingerprint: "b7d2e8a1c4f0".into(),
            minted_at: at(25),
            redeem_by: Some(at(85)),
            discard_at: at(82),
        }),
        at(25),
    );
    s
}

fn near_expiry() -> DashboardState {
    let mut s = streaming();
    s.update(
        Msg::Token(TokenState::Ready {
            provider: "api-key",
            fingerprint: "c0ffee123456".into(),
            minted_at: at(SESSION_S - 40),
            redeem_by: Some(at(SESSION_S + 20)),
            discard_at: at(SESSION_S + 17),
        }),
        at(SESSION_S - 40),
    );
    s
}

fn rotating() -> DashboardState {
    let mut s = near_expiry();
    let t = SESSION_S - 28;
    view(
        &mut s,
        View::Rotating {
            old: 1,
            new: 2,
            new_ready: false,
        },
        at(t),
    );
    session(
        &mut s,
        SessionEvent::Token {
            generation: 2,
            fingerprint: "c0ffee123456".into(),
            redeem_in_ms: Some(20_000),
        },
        at(t),
    );
    s.update(Msg::Token(TokenState::None), at(t));
    session(
        &mut s,
        SessionEvent::Begin {
            generation: 2,
            session_id: NEXT_ID.into(),
            expires_at: unix(t + 1 + SESSION_S),
            stream_offset_ms: 0,
            backlog_ms: 0,
            cause: Cause::Rotation,
        },
        at(t + 1),
    );
    view(
        &mut s,
        View::Rotating {
            old: 1,
            new: 2,
            new_ready: true,
        },
        at(t + 1),
    );
    s
}

fn backoff() -> DashboardState {
    let mut s = streaming();
    session(
        &mut s,
        SessionEvent::Lost {
            generation: 1,
            class: CloseClass::Transient,
            code: Some(1011),
            reason: "Internal error".into(),
            what_now: CloseClass::Transient.advice(),
            explain: "1006",
        },
        at(40),
    );
    view(
        &mut s,
        View::Backoff {
            attempt: 2,
            retry_in_ms: 4000,
            class: CloseClass::Transient,
        },
        at(40),
    );
    s.update(
        Msg::Token(TokenState::Failed {
            class: ProviderErrorClass::Transient,
            message: "api-key token provider (GET https://streaming.assemblyai.com/v3/token): \
                      HTTP 503"
                .into(),
            retry_at: Some(at(43)),
        }),
        at(40),
    );
    s
}

fn failed() -> DashboardState {
    let mut s = streaming();
    session(
        &mut s,
        SessionEvent::Lost {
            generation: 1,
            class: CloseClass::Fatal,
            code: Some(1008),
            reason: "Unauthorized connection: invalid API key".into(),
            what_now: CloseClass::Fatal.advice(),
            explain: "1008-invalid-key",
        },
        at(40),
    );
    view(
        &mut s,
        View::Failed(refused(
            "connection 1 closed: 1008 Unauthorized connection: invalid API key",
        )),
        at(40),
    );
    session(
        &mut s,
        SessionEvent::Finished {
            finals: 6,
            rotations: 0,
            reconnects: 0,
            audio_captured_samples: 0,
            audio_sent_samples: 0,
            audio_lost_samples: 0,
            audio_lost_ms: 0,
            latency_p50_ms: Some(370),
            latency_p95_ms: Some(465),
            failure: Some("connection 1 closed: 1008 Unauthorized connection".into()),
            explain: None,
            archive: None,
        },
        at(40),
    );
    s
}

/// Both sizes of one scene.
fn both(name: &str, state: &DashboardState, now: SystemTime) {
    insta::assert_snapshot!(format!("{name}_80x24"), screen(state, 80, 24, now));
    insta::assert_snapshot!(format!("{name}_200x60"), screen(state, 200, 60, now));
}

#[test]
fn idle_screen() {
    both("idle", &idle(), at(0));
}

#[test]
fn minting_screen() {
    let mut s = idle();
    minting(&mut s);
    both("minting", &s, at(1));
}

#[test]
fn streaming_with_a_partial() {
    both("streaming", &streaming(), at(30));
}

#[test]
fn near_expiry_turns_amber_with_a_token_ready() {
    // 25 s left: inside the 30 s rotation lead.
    both("near_expiry", &near_expiry(), at(SESSION_S - 24));
}

#[test]
fn rotating_shows_the_handover() {
    both("rotating", &rotating(), at(SESSION_S - 26));
}

#[test]
fn backoff_counts_down_to_the_next_attempt() {
    both("backoff", &backoff(), at(41));
}

#[test]
fn failed_keeps_the_transcript_and_says_what_to_do() {
    both("failed", &failed(), at(45));
}

#[test]
fn help_overlay_lists_the_live_keymap() {
    let mut s = streaming();
    s.update(Msg::Action(Action::Help), at(30));
    both("help", &s, at(30));
}

#[test]
fn events_pane() {
    let mut s = rotating();
    session(
        &mut s,
        SessionEvent::Rotation {
            from: 1,
            to: 2,
            forced: false,
            gap_ms: 0,
            stream_offset_ms: 596_000,
            primed_ms: 0,
        },
        at(SESSION_S - 25),
    );
    // The successor's rotation is planned at the hand-over.
    session(
        &mut s,
        SessionEvent::RotationPlanned {
            generation: 2,
            rotates_in_ms: rotates_in(SESSION_S).expect("rotation on") - 2000,
            staggered_ms: 0,
        },
        at(SESSION_S - 25),
    );
    view(
        &mut s,
        View::Streaming {
            generation: 2,
            session_id: NEXT_ID.into(),
        },
        at(SESSION_S - 25),
    );
    s.update(Msg::Action(Action::ToggleEvents), at(SESSION_S - 25));
    both("events", &s, at(SESSION_S - 20));
}

#[test]
fn scrolled_back_shows_new_turns_below() {
    let mut s = streaming();
    s.update(Msg::Action(Action::ScrollUp), at(30));
    s.update(Msg::Action(Action::ScrollUp), at(30));
    session(
        &mut s,
        SessionEvent::Final(final_turn(
            1,
            6,
            "And the partial is updated in place.",
            26_000,
        )),
        at(31),
    );
    insta::assert_snapshot!("scrolled_80x24", screen(&s, 80, 24, at(31)));
}

/// The service refused the credential (1008), with `reason` as said.
fn refused(reason: &str) -> Failure {
    Failure {
        origin: Origin::Close,
        class: CloseClass::Fatal,
        code: Some(1008),
        status: None,
        network: None,
        reason: reason.into(),
        diagnosis: aai_live::diagnosis::Diagnosis::Close1008InvalidAuth,
        retry_after: None,
    }
}

#[test]
fn a_failed_provider_is_a_panel_not_a_crash() {
    let mut s = idle();
    s.update(
        Msg::StartFailed(aai_live::app::StartFailure::Provider(Failure::token(
            &aai_live::provider::ProviderError::NotConfigured {
                provider: "api-key",
                detail: "the environment variable ASSEMBLYAI_API_KEY is not set; export it \
                         with your AssemblyAI API key, or set provider.api_key.key_file (or \
                         choose another provider.kind)"
                    .into(),
            },
        ))),
        at(0),
    );
    insta::assert_snapshot!("provider_failed_80x24", screen(&s, 80, 24, at(0)));
}

#[test]
fn a_lost_device_is_a_panel_and_the_transcript_stays() {
    let mut s = streaming();
    s.update(
        Msg::AudioStats(AudioStats {
            ended: Some(aai_live::audio::InputEnd::Failed(
                "the microphone alsa:default disappeared (unplugged?)".into(),
            )),
            ..AudioStats::default()
        }),
        at(30),
    );
    insta::assert_snapshot!("device_lost_80x24", screen(&s, 80, 24, at(30)));
}

#[test]
fn mono_and_ascii() {
    let mut ascii = streaming();
    ascii.ui = ui(true, true);
    insta::assert_snapshot!("ascii_80x24", screen(&ascii, 80, 24, at(30)));
}

#[test]
fn small_and_tiny_terminals() {
    let s = streaming();
    insta::assert_snapshot!("compact_60x16", screen(&s, 60, 16, at(30)));
    insta::assert_snapshot!("tiny_30x8", screen(&s, 30, 8, at(30)));
}

/// `--feed`: the header says where the feed listens and how many consumers follow it.
#[test]
fn the_header_shows_the_feed_and_its_consumers() {
    let mut s = streaming();
    s.feed = Some(aai_live::app::state::FeedPanel {
        address: "http://127.0.0.1:8789".into(),
        consumers: 2,
    });
    insta::assert_snapshot!("feed_120x30", screen(&s, 120, 30, at(30)));
}

#[test]
fn demo_header_says_it_is_the_offline_emulator() {
    let s = as_demo(streaming());
    insta::assert_snapshot!("demo_100x30", screen(&s, 100, 30, at(30)));
}

/// `scene` as `aai-live demo` shows it: the demo's own configuration (`demo::configure`) decides
/// the events pane, and the header names the emulator.
fn as_demo(mut s: DashboardState) -> DashboardState {
    let mut config = Config::default();
    aai_live::demo::configure(
        &mut config,
        "http://127.0.0.1:41235/v3/token",
        "ws://127.0.0.1:41235/v3/ws",
        None,
    );
    s.show_events = UiOptions::from_config(&config, &|_| Some("C.UTF-8".into())).events;
    s.info.demo = Some("127.0.0.1:41235".into());
    s.info.source = "http://127.0.0.1:41235/v3/token".into();
    s.info.endpoint = "ws://127.0.0.1:41235/v3/ws".into();
    s.info.input = "demo.wav (bundled, looping)".into();
    s
}

/// The demo opens with the events pane, and its guide line stays above the transcript while it
/// streams, saying what the screen shows: the countdown to the rotation, the amber gauge ten
/// seconds before it, the hand-over. The transcript's lines stay `MM:SS text`.
#[test]
fn the_demo_says_what_you_are_seeing_while_it_streams() {
    let rotation = 1 + rotates_in(SESSION_S).expect("rotation on") / 1000;
    let scenes = [
        ("demo_guide_streaming", as_demo(streaming()), at(30)),
        ("demo_guide_amber", as_demo(near_expiry()), at(rotation - 6)),
        (
            "demo_guide_rotating",
            as_demo(rotating()),
            at(SESSION_S - 26),
        ),
    ];
    for (name, s, now) in scenes {
        assert!(s.show_events, "the demo opens with the events pane");
        let frame = screen(&s, 100, 32, now);
        let guide = frame
            .lines()
            .find(|l| l.contains("what you are seeing:"))
            .unwrap_or_else(|| panic!("{name}: no guide line in\n{frame}"));
        assert!(
            !guide.contains('│'),
            "{name}: the guide is outside the panes: {guide}"
        );
        insta::assert_snapshot!(name, frame);
    }
}

/// At 140 columns the demo's transcript pane holds each of the recording's sentences on one
/// line, as `MM:SS text` (the events pane open beside it, as the demo starts).
#[test]
fn the_demo_transcript_is_one_sentence_a_line_at_140_columns() {
    let sentences = demo_recording::recording_sentences();
    let mut s = as_demo(streaming());
    assert!(s.show_events, "the demo opens with the events pane");
    for (i, sentence) in sentences.iter().enumerate() {
        let order = 100 + i as u64;
        session(
            &mut s,
            SessionEvent::Final(final_turn(1, order, sentence, 40_000 + i as u64 * 4000)),
            at(40 + i as u64 * 4),
        );
    }
    let frame = screen(&s, 140, 60, at(40 + sentences.len() as u64 * 4));
    for (i, sentence) in sentences.iter().enumerate() {
        let stamp = format!("{:02}:{:02} ", (40 + i * 4) / 60, (40 + i * 4) % 60);
        assert!(
            frame
                .lines()
                .any(|l| l.contains(&format!("{stamp}{sentence}"))),
            "{stamp}{sentence} on one line:\n{frame}"
        );
    }
}

/// A server's close reason, error text and transcript can carry escape sequences and bidi
/// overrides: nothing of them reaches the screen (the frame holds no control character). The
/// model keeps them out (`untrusted`), and ratatui's buffer also drops control characters and
/// zero-width graphemes: this holds both lines of defence to it.
#[test]
fn hostile_server_text_never_reaches_the_terminal() {
    const EVIL: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}gnp.exe";
    let mut s = streaming();
    session(
        &mut s,
        SessionEvent::Final(final_turn(1, 9, &format!("hello {EVIL} world"), 30_000)),
        at(39),
    );
    session(
        &mut s,
        SessionEvent::Lost {
            generation: 1,
            class: CloseClass::Fatal,
            code: Some(1008),
            reason: format!("{EVIL}{}", "x".repeat(100_000)),
            what_now: CloseClass::Fatal.advice(),
            explain: "1008-invalid-key",
        },
        at(40),
    );
    view(&mut s, View::Failed(refused(EVIL)), at(40));
    s.update(Msg::Action(Action::ToggleEvents), at(40));
    for (w, h) in [(80, 24), (200, 60)] {
        let frame = screen(&s, w, h, at(41));
        assert!(
            !frame
                .chars()
                .any(|c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c)),
            "a control character reached the frame:\n{frame}"
        );
        assert!(
            frame.contains("pwned"),
            "the text itself is still shown:\n{frame}"
        );
    }
}

/// The session gauge turns amber `NOTICE` (10 s) before the supervisor prepares the successor —
/// the time the rotation rule gives with `Begin` — not inside the configured lead, which the
/// hand-over leaves after about a second.
#[test]
fn the_gauge_turns_amber_ten_seconds_before_the_rotation() {
    use aai_live::ui::{Ctx, Theme, lifetimes};
    let s = streaming();
    let t = Theme::new(s.ui);
    let rotation = 1 + rotates_in(SESSION_S).expect("rotation on") / 1000;
    let style = |now| {
        let line = lifetimes::session_line(Ctx { state: &s, now, t }, 60);
        line.spans[1].style
    };
    assert_eq!(style(at(rotation - 11)), t.ok());
    assert_eq!(style(at(rotation - 9)), t.warn());
    assert_eq!(lifetimes::NOTICE, Duration::from_secs(10));
}

/// Meeting mode: two labelled inputs (`you` the microphone, `them` the system audio). The
/// lifetimes panel has each input's session, the audio panel each input's level, and the one
/// transcript each turn's input by name and colour, in stream-time order; an echo (the
/// microphone hearing the speakers) is kept, dimmed and marked; the events pane names the input
/// of each line.
/// Both inputs' first sessions begin; the second's rotation is staggered 10 s earlier.
fn meeting_sessions_begin(s: &mut DashboardState) {
    let sourced = |s: &mut DashboardState, index: usize, event: SessionEvent, t| {
        s.update(Msg::Sourced { index, event }, t);
    };
    // Generations of a meeting are the run's: you 1, 3…; them 2, 4….
    for (index, generation, id, rotates_in_s) in [(0, 1, SESSION_ID, 569), (1, 2, NEXT_ID, 559)] {
        sourced(
            s,
            index,
            SessionEvent::State {
                view: View::Streaming {
                    generation,
                    session_id: id.into(),
                },
            },
            at(1),
        );
        sourced(
            s,
            index,
            SessionEvent::Begin {
                generation,
                session_id: id.into(),
                expires_at: unix(1 + SESSION_S),
                stream_offset_ms: 0,
                backlog_ms: 0,
                cause: Cause::Start,
            },
            at(1),
        );
        sourced(
            s,
            index,
            SessionEvent::RotationPlanned {
                generation,
                rotates_in_ms: rotates_in_s * 1000,
                staggered_ms: if index == 1 { 10_000 } else { 0 },
            },
            at(1),
        );
    }
}

/// A meeting of `you` (the microphone) and `them` (the system audio), streaming, with turns of
/// both and one echo.
fn meeting() -> DashboardState {
    use aai_live::config::LabelledInput;
    let config = Config {
        inputs: vec![
            LabelledInput {
                label: "you".parse().expect("label"),
                spec: "mic".parse().expect("spec"),
            },
            LabelledInput {
                label: "them".parse().expect("label"),
                spec: "monitor".parse().expect("spec"),
            },
        ],
        ..Config::default()
    };
    let info = Info {
        provider: "api-key".into(),
        source: "https://streaming.assemblyai.com/v3/token".into(),
        endpoint: "wss://streaming.assemblyai.com/v3/ws".into(),
        region: Some("default".into()),
        input: "you=mic, them=monitor".into(),
        demo: None,
    };
    let mut s = DashboardState::from_config(&config, info, ui(false, false));
    s.update(
        Msg::AudioOpened("you=microphone: default, them=monitor: @DEFAULT_MONITOR@".into()),
        at(0),
    );
    for (index, db) in [(0, -21.0), (1, -33.0)] {
        s.update(
            Msg::SourceLevel(
                index,
                Level {
                    rms_dbfs: db,
                    peak_dbfs: db + 12.0,
                    clipping: false,
                },
            ),
            at(0),
        );
    }
    s.update(Msg::Action(Action::ToggleStream), at(0));
    let sourced = |s: &mut DashboardState, index: usize, event: SessionEvent, t| {
        s.update(Msg::Sourced { index, event }, t);
    };
    meeting_sessions_begin(&mut s);
    let said = |generation, order, text: &str, start_ms, source: &str, echo| FinalTurn {
        source: Some(source.into()),
        echo,
        ..final_turn(generation, order, text, start_ms)
    };
    let turns = [
        (1, said(2, 0, "Can everyone hear me?", 2_000, "them", false)),
        (0, said(1, 0, "Yes, loud and clear.", 5_000, "you", false)),
        (
            1,
            said(2, 1, "Let's go through the numbers.", 8_000, "them", false),
        ),
        // The microphone heard the speakers: the same words, 300 ms later.
        (
            0,
            said(1, 1, "Let's go through the numbers.", 8_300, "you", true),
        ),
        (
            0,
            said(1, 2, "Revenue is up four percent.", 12_000, "you", false),
        ),
    ];
    for (index, turn) in turns {
        let t = at_ms(1000 + turn.end_ms + 300);
        sourced(&mut s, index, SessionEvent::Final(turn), t);
    }
    s
}

#[test]
fn meeting_mode_shows_each_input() {
    let mut s = meeting();
    s.update(Msg::Action(Action::ToggleEvents), at(20));
    // The run's panel follows both: streaming, each with its own countdown.
    assert_eq!(s.sources.len(), 2);
    assert!(matches!(s.session.view, View::Streaming { .. }));
    let frame = screen(&s, 120, 36, at(30));
    assert!(frame.contains("You: Yes, loud and clear."), "{frame}");
    assert!(frame.contains("Them: Can everyone hear me?"), "{frame}");
    assert!(
        frame.contains("You (echo): Let's go through the numbers."),
        "{frame}"
    );
    assert!(
        frame.contains("Them: connection 2 rotates in 559 s, 10 s"),
        "the staggered rotation is said: {frame}"
    );
    insta::assert_snapshot!("meeting_120x36", frame);
    // The echo is dimmed, the inputs in their own colours.
    let theme = aai_live::ui::Theme::new(s.ui);
    assert_ne!(theme.who(Some(0)), theme.who(Some(1)));
}

/// Speakers and languages: named and unnamed speakers, a language other than English, a
/// speaker still pending, one a later session could not match (`?`), and live keyterms in the
/// header.
#[test]
fn speakers_and_languages() {
    let mut s = idle();
    minting(&mut s);
    view(
        &mut s,
        View::Streaming {
            generation: 1,
            session_id: SESSION_ID.into(),
        },
        at(1),
    );
    let said = |order, text: &str, speaker: &str, name: Option<&str>, language: &str| {
        SessionEvent::Final(FinalTurn {
            speaker: Some(speaker.into()),
            speaker_name: name.map(str::to_owned),
            language_code: Some(language.into()),
            language_confidence: Some(0.97),
            ..final_turn(1, order, text, 2000 + order * 4000)
        })
    };
    for (i, event) in [
        said(
            0,
            "Shall we start with the numbers?",
            "A",
            Some("Ana"),
            "en",
        ),
        said(1, "Sí, empecemos por las cifras.", "B", None, "es"),
        said(2, "Okay.", "PENDING", None, "en"),
        SessionEvent::Final(FinalTurn {
            generation: 2,
            speaker: Some("C".into()),
            session_speaker: Some("B".into()),
            speaker_uncertain: true,
            language_code: Some("en".into()),
            ..final_turn(2, 0, "Sorry, I joined late.", 14_000)
        }),
    ]
    .into_iter()
    .enumerate()
    {
        session(&mut s, event, at(5 + i as u64 * 4));
    }
    let mut live = s.live.clone();
    live.apply(&aai_live::protocol::messages::UpdateConfiguration {
        keyterms_prompt: Some(vec!["Kubernetes".into(), "Ana".into()]),
        ..Default::default()
    });
    s.live = live;
    let frame = screen(&s, 120, 20, at(22));
    for expected in [
        "Ana:",
        "[es] B: Sí, empecemos",
        "speaker pending:",
        "C?: Sorry",
        "keyterms Kubernetes, Ana",
    ] {
        assert!(frame.contains(expected), "{expected}: {frame}");
    }
    insta::assert_snapshot!("speakers_120x20", frame);
}

/// With `redact_pii`, the transcript pane says the text is redacted, and when the service
/// withholds partials, that each turn shows only when it ends (not a stalled session).
#[test]
fn redaction_is_said_on_the_transcript_pane() {
    for (withheld, expected) in [
        (
            true,
            "transcript (personal information redacted: each turn shows when it ends)",
        ),
        (false, "transcript (personal information redacted)"),
    ] {
        let mut s = idle();
        s.limits.redacting = true;
        s.limits.partials_withheld = withheld;
        let frame = screen(&s, 120, 20, at(1));
        assert!(frame.contains(expected), "{expected}: {frame}");
    }
    let frame = screen(&idle(), 120, 20, at(1));
    assert!(!frame.contains("redacted"), "{frame}");
}
