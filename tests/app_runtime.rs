//! The dashboard's runtime loop end to end, without a terminal: `app::run_with` on a ratatui
//! `TestBackend` with scripted key events, against the demo's in-process emulator. Checks that
//! streaming starts by itself, the transcript is journaled and saved on quit, and that a missing
//! provider becomes a panel rather than an error.

#[path = "support/demo.rs"]
mod demo_recording;
use std::path::Path;
use std::time::Duration;

use aai_live::app::{self, Setup};
use aai_live::config::Config;
use aai_live::demo::{Demo, INPUT_LABEL};
use aai_live::provider;
use futures_util::Stream;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use tokio::sync::mpsc;

type Events = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Event>> + Send>>;

fn keys() -> (mpsc::UnboundedSender<std::io::Result<Event>>, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    (tx, Box::pin(stream))
}

fn press(c: char) -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Poll until a journal in `dir` holds `text` (bounded).
async fn wait_for_journal(dir: &Path, text: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let found = std::fs::read_dir(dir).ok().is_some_and(|entries| {
            entries.flatten().any(|e| {
                e.path().extension().is_some_and(|x| x == "jsonl")
                    && std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(text))
            })
        });
        if found {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no journal with {text:?} in {} after {within:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Poll until `dir` holds `n` files ending in `ext` (bounded).
/// Waits until `n` files with `ext` hold something (a journal is created empty at its run's
/// start, and removed at its end if no final came).
async fn wait_for_files(dir: &Path, ext: &str, n: usize, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let found = std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == ext))
                .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                .count()
        });
        if found >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{found} of {n} .{ext} files in {} after {within:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_streams_journals_and_saves_on_quit() {
    let data = tempfile::tempdir().expect("tempdir");
    let demo = Demo::start(true).await.expect("demo");
    let mut config = Config::default();
    demo.configure(&mut config);
    config.transcript.dir = Some(data.path().to_owned());
    let mut setup = Setup::from_config(
        &config,
        provider::build_with(&config.provider, &Demo::env),
        &no_env,
    );
    setup.supervisor.emulator_hints = true;
    setup.info.demo = Some(demo.emulator.addr.to_string());
    setup.input_label = Some(INPUT_LABEL.to_owned());

    let (tx, events) = keys();
    let dir = data.path().to_owned();
    let driver = tokio::spawn(async move {
        // The first sentence ends 4.1 s into the recording.
        wait_for_journal(&dir, "Tokens are minted once", Duration::from_secs(30)).await;
        // Stop and, at once, start again: the restart waits for the first run to finish, and
        // both runs' transcripts are saved (once the second has a final of its own).
        let _ = tx.send(Ok(press(' ')));
        let _ = tx.send(Ok(press(' ')));
        wait_for_files(&dir, "jsonl", 2, Duration::from_secs(30)).await;
        let _ = tx.send(Ok(press('?')));
        let _ = tx.send(Ok(press('q')));
        tx
    });
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).expect("terminal");
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        app::run_with(setup, &mut terminal, events),
    )
    .await
    .expect("the dashboard quits")
    .expect("no error");
    let _tx = driver.await.expect("driver");
    demo.shutdown().await;

    assert!(report.failure.is_none(), "{:?}", report.failure);
    let has = |ext: &str| {
        report
            .saved
            .iter()
            .find(|p| p.extension().is_some_and(|x| x == ext))
    };
    assert!(has("jsonl").is_some(), "{:?}", report.saved);
    let count = |ext: &str| {
        report
            .saved
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .count()
    };
    assert_eq!((count("jsonl"), count("txt")), (2, 2), "{:?}", report.saved);
    let plain = has("txt").expect("a txt transcript");
    let text = std::fs::read_to_string(plain).expect("read");
    assert!(
        text.contains("Tokens are minted once and used once."),
        "{text}"
    );
    let screen = terminal.backend().to_string();
    assert!(screen.contains("OFFLINE DEMO"), "{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_api_key_is_a_panel_and_quit_still_works() {
    let mut config = Config::default();
    config.provider.api_key.key_env = "AAI_LIVE_TEST_SURELY_UNSET".into();
    config.audio.input = "test:silence".parse().expect("input");
    let setup = Setup::from_config(
        &config,
        provider::build_with(&config.provider, &no_env),
        &no_env,
    );
    let (tx, events) = keys();
    // Queued before the start: the first frame is drawn before keys are read.
    tx.send(Ok(press('q'))).expect("send");
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        app::run_with(setup, &mut terminal, events),
    )
    .await
    .expect("quits");
    let report = report.expect("no error");
    assert!(report.saved.is_empty());
    let screen = terminal.backend().to_string();
    assert!(screen.contains("No token provider"), "{screen}");
    assert!(screen.contains("AAI_LIVE_TEST_SURELY_UNSET"), "{screen}");
}

/// The transcript a run journaled: its finals' texts, in order.
fn journaled_finals(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

/// Stop, wait while the looping recording plays on, start again: the second run's stream
/// starts at 0 while the recording is anywhere, and its finals must still be the recording's
/// sentences word for word (the emulator learns where the input is, not where the run is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_and_a_restart_keep_the_demo_word_perfect() {
    let data = tempfile::tempdir().expect("tempdir");
    let demo = Demo::start(true).await.expect("demo");
    let mut config = Config::default();
    demo.configure(&mut config);
    config.transcript.dir = Some(data.path().to_owned());
    let mut setup = Setup::from_config(
        &config,
        provider::build_with(&config.provider, &Demo::env),
        &no_env,
    );
    setup.supervisor.emulator_hints = true;
    setup.input_label = Some(INPUT_LABEL.to_owned());
    let (tx, events) = keys();
    let dir = data.path().to_owned();
    let driver = tokio::spawn(async move {
        wait_for_journal(&dir, "Tokens are minted once", Duration::from_secs(30)).await;
        let _ = tx.send(Ok(press(' ')));
        wait_for_files(&dir, "txt", 1, Duration::from_secs(30)).await;
        // The recording plays on while stopped: the restart begins mid-sentence.
        tokio::time::sleep(Duration::from_millis(6300)).await;
        let _ = tx.send(Ok(press(' ')));
        // Once the second run has its first final, a reconnect (`r`) and a fresh token (`t`):
        // the new session is fed from the last final word, and its words follow the input too.
        let second_run = |dir: &Path, n: usize| {
            std::fs::read_dir(dir).expect("dir").flatten().any(|e| {
                let p = e.path();
                p.extension().is_some_and(|x| x == "jsonl")
                    && !std::fs::read_to_string(&p)
                        .unwrap_or_default()
                        .contains("Tokens are minted once")
                    && journaled_finals(&p).len() >= n
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !second_run(&dir, 1) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no final in the second run"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = tx.send(Ok(press('r')));
        let _ = tx.send(Ok(press('t')));
        // Two whole sentences more.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            let journals: Vec<_> = std::fs::read_dir(&dir)
                .expect("dir")
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            if journals.len() == 2 && journals.iter().any(|j| journaled_finals(j).len() >= 3) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no second run");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = tx.send(Ok(press('q')));
        tx
    });
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).expect("terminal");
    let report = tokio::time::timeout(
        Duration::from_secs(90),
        app::run_with(setup, &mut terminal, events),
    )
    .await
    .expect("the dashboard quits")
    .expect("no error");
    let _tx = driver.await.expect("driver");
    demo.shutdown().await;
    let sentences = demo_recording::recording_sentences();
    let mut journals: Vec<_> = report
        .saved
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    journals.sort();
    assert_eq!(journals.len(), 2, "{:?}", report.saved);
    let second = journaled_finals(journals[1]);
    assert!(second.len() >= 3, "{second:?}");
    // A run hears what is said after it starts: its first final may be the end of a sentence
    // (the words before it were never captured), every other final a whole sentence.
    for journal in journals {
        for (i, text) in journaled_finals(journal).iter().enumerate() {
            let plain = text.to_lowercase().replace('.', "");
            let whole = sentences.contains(&plain);
            let tail = i == 0 && sentences.iter().any(|s| s.ends_with(&plain));
            assert!(
                whole || tail,
                "{text:?} is not one of the recording's sentences (second run: {second:?})"
            );
        }
    }
}

/// Meeting mode on the dashboard: two labelled inputs (here the demo recording twice), each its
/// own stream; the lifetimes and audio panels show each input, the one transcript labels each
/// turn, and since both inputs say the same words at the same time, the newer of each pair is
/// kept as an echo, marked. Quitting saves one journal and one export with both inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meeting_mode_on_the_dashboard_saves_one_labelled_transcript() {
    use aai_live::config::LabelledInput;
    let data = tempfile::tempdir().expect("tempdir");
    let demo = Demo::start(true).await.expect("demo");
    let mut config = Config::default();
    demo.configure(&mut config);
    config.transcript.dir = Some(data.path().to_owned());
    let wav = format!("file:{}", demo.files.wav().display());
    config.inputs = ["you", "them"]
        .iter()
        .map(|label| LabelledInput {
            label: label.parse().expect("label"),
            spec: wav.parse().expect("spec"),
        })
        .collect();
    let mut setup = Setup::from_config(
        &config,
        provider::build_with(&config.provider, &Demo::env),
        &no_env,
    );
    setup.supervisor.emulator_hints = true;
    let (tx, events) = keys();
    let dir = data.path().to_owned();
    let driver = tokio::spawn(async move {
        // Two sentences from each input, at least.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            let journal = std::fs::read_dir(&dir)
                .expect("dir")
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "jsonl"));
            let text = journal
                .map(|j| std::fs::read_to_string(j).unwrap_or_default())
                .unwrap_or_default();
            let from = |label: &str| {
                text.lines()
                    .filter(|l| l.contains(&format!("\"source\":\"{label}\"")))
                    .count()
            };
            if from("you") >= 2 && from("them") >= 2 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "finals: {text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = tx.send(Ok(press('q')));
        tx
    });
    let mut terminal = Terminal::new(TestBackend::new(120, 36)).expect("terminal");
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        app::run_with(setup, &mut terminal, events),
    )
    .await
    .expect("the dashboard quits")
    .expect("no error");
    let _tx = driver.await.expect("driver");
    demo.shutdown().await;
    assert!(report.failure.is_none(), "{:?}", report.failure);
    let screen = terminal.backend().to_string();
    // Each input's session in the lifetimes panel (ASCII here: no UTF-8 locale in tests).
    for name in ["You ", "Them "] {
        assert!(
            screen
                .lines()
                .any(|l| l.contains(name) && l.contains(" left")),
            "{name}: {screen}"
        );
    }
    let files = |ext: &str| -> Vec<&std::path::PathBuf> {
        report
            .saved
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect()
    };
    assert_eq!(
        (files("jsonl").len(), files("txt").len()),
        (1, 1),
        "{:?}",
        report.saved
    );
    let txt = std::fs::read_to_string(files("txt")[0]).expect("txt");
    assert!(
        txt.contains("] You: ") || txt.contains("] You (echo): "),
        "{txt}"
    );
    assert!(
        txt.contains("] Them: ") || txt.contains("] Them (echo): "),
        "{txt}"
    );
    assert!(
        txt.contains("(echo): "),
        "the same words twice at once: {txt}"
    );
    let times: Vec<&str> = txt.lines().map(|l| &l[1..9]).collect();
    assert!(times.is_sorted(), "{txt}");
}
