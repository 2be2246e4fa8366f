//! `aai-live run --headless`: the scripting interface. Streams with the configured provider and
//! input, writes one JSON event per line to stdout (schema: docs/events.md), human-readable
//! messages to stderr, and exports the transcript at the end.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::audio::{self, AudioOptions, Pace};
use crate::config::{Config, InputSpec};
use crate::events::{SessionEvent, View};
use crate::failure::Failure;
use crate::provider::{self, PreMintOptions, PreMinter, TokenRequest};
use crate::session::{self, SessionCommand, SupervisorOptions};
use crate::strings;
use crate::transcript::{self, Transcript};

/// What the command line adds to the configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Send file audio as fast as the server allows (only for the emulator with its pacing
    /// check off).
    pub unpaced: bool,
    /// Tell the emulator where each session starts (script alignment across sessions).
    pub emulator_hints: bool,
}

/// The runtime for a headless run. A file, stdin or a test signal is paced by one task, and
/// the whole run is a handful of tasks waking 20 times a second: one thread runs them with the
/// least wake-up and hand-over cost (the printing has its own thread, [`Printer`], so a slow
/// stdout never holds up the audio). The microphone keeps the multi-threaded runtime: its
/// conversion thread waits on the runtime for room in the chunk channel.
pub fn runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if matches!(config.audio.input, InputSpec::Mic(_)) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Run headless until the input ends, `--duration` passes, Ctrl-C, or a fatal failure.
/// Returns the process exit code (docs/events.md): 0 when the run ended normally and every
/// captured sample was sent, 3 when it ended normally but audio was reported lost, 1 when it
/// failed.
pub async fn run(
    config: &Config,
    options: &RunOptions,
    out: Box<dyn Write + Send>,
) -> anyhow::Result<i32> {
    let provider = provider::build(&config.provider).context("cannot set up the token provider")?;
    let request = TokenRequest {
        expires_in_seconds: config.provider.expires_in_seconds,
        max_session_duration_seconds: Some(config.provider.max_session_duration_seconds),
    };
    let premint = Arc::new(PreMinter::new(
        Arc::clone(&provider),
        request,
        PreMintOptions::default(),
    ));
    let audio_options = AudioOptions {
        sample_rate: config.streaming.sample_rate,
        chunk_ms: config.audio.chunk_ms,
        pace: if options.unpaced {
            Pace::Unpaced
        } else {
            Pace::RealTime
        },
        loop_input: config.audio.loop_input,
        device: config.audio.device.clone(),
        stdin_format: config.audio.stdin_format,
        seed: 1,
    };
    let input = audio::open(&config.audio.input, &audio_options)
        .await
        .context("cannot open the audio input")?;
    let mut supervisor_options = SupervisorOptions::from_config(config);
    supervisor_options.emulator_hints = options.emulator_hints;

    let journal = transcript::journal_path(
        &config.transcript.dir_or_default(),
        std::time::SystemTime::now(),
    );
    let transcript = Transcript::with_journal(&journal)?;
    eprintln!(
        "aai-live: {}",
        strings::streaming_to(&input.name, supervisor_options.endpoint.as_str(), &journal)
    );

    let hello = SessionEvent::Hello {
        schema: crate::events::SCHEMA_VERSION,
        version: env!("CARGO_PKG_VERSION"),
        input: input.name.clone(),
        provider: format!("{} ({})", provider.name(), provider.source()),
        endpoint: supervisor_options.endpoint.to_string(),
    };
    let printer = Printer::start(out)?;
    printer.print(Line::Out(hello.to_line_at(std::time::SystemTime::now())))?;
    // With the input's stats, so a failed or crashed input fails the run (exit 1).
    let feed = session::AudioFeed::watched(input.chunks, input.stats.clone());
    let mut handle = session::spawn(supervisor_options, premint, transcript, feed);
    let _ = handle.commands.send(SessionCommand::Start);

    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let stop = handle.commands.clone();
    // SIGINT and SIGTERM (systemd, docker stop) end the run gracefully: Terminate, the last
    // turns, the exports.
    let signalled = tokio_util::sync::CancellationToken::new();
    crate::signals::cancel_on_signals(signalled.clone()).context("cannot handle signals")?;
    let mut stop_sent = false;
    loop {
        tokio::select! {
            event = handle.events.recv() => {
                let Some(event) = event else { break };
                let now = std::time::SystemTime::now();
                printer.print(Line::Out(event.to_line_at(now)))?;
                if let Some(line) = strings::event_line(&event, now)
                    && line.audience != strings::Audience::Pane
                {
                    printer.print(Line::Err(line.for_stderr()))?;
                }
            }
            () = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } }, if !stop_sent => {
                stop_sent = true;
                let _ = stop.send(SessionCommand::Stop);
            }
            () = signalled.cancelled(), if !stop_sent => {
                stop_sent = true;
                printer.print(Line::Err(strings::STOPPING.to_owned()))?;
                let _ = stop.send(SessionCommand::Stop);
            }
        }
    }
    let joined = handle.task.await;
    // The supervisor catches its own panics and reports them in `finished`; should its task
    // still vanish, the run must not look finished: say `failed`, exit 1 (the journal keeps
    // the finals).
    let (outcome, transcript) = match joined {
        Ok(done) => done,
        Err(join) => return vanished(printer, &join),
    };
    // Every event is on stdout before anything else can end the run.
    printer.finish()?;
    // Exports are file writes: off the runtime's threads.
    let formats = config.transcript.formats.clone();
    tokio::task::spawn_blocking(move || transcript.write_beside(&journal, &formats))
        .await
        .context("the transcript export task failed")?
        .context("cannot write the transcript")?;
    Ok(outcome.exit_code())
}

/// The supervisor's task vanished (it catches its own panics, so this is a last resort): the
/// run must not look finished — `state: failed` on stdout, the reason on stderr, exit 1.
fn vanished(printer: Printer, join: &tokio::task::JoinError) -> anyhow::Result<i32> {
    let failure = Failure::internal(strings::crashed(&join.to_string()));
    let line = strings::Line {
        severity: strings::Severity::Error,
        text: strings::run_failed(&strings::failure(&failure)),
        explain: Some(failure.explain()),
        audience: strings::Audience::Stderr,
    };
    let failed = SessionEvent::State {
        view: View::Failed(failure),
    };
    printer.print(Line::Out(failed.to_line_at(std::time::SystemTime::now())))?;
    printer.print(Line::Err(line.for_stderr()))?;
    printer.finish()?;
    Ok(1)
}

/// A line for the printer thread.
enum Line {
    /// An NDJSON event for stdout.
    Out(String),
    /// A message for stderr (prefixed with `aai-live: `).
    Err(String),
}

/// Prints on a thread of its own, in order, so that a reader slow to take stdout (a pipe into a
/// busy consumer, a paused terminal) holds up only the printing and never the audio: the
/// runtime may be single-threaded ([`runtime`]). A burst of events is written with one flush.
struct Printer {
    tx: std::sync::mpsc::Sender<Line>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Printer {
    fn start(mut out: Box<dyn Write + Send>) -> anyhow::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Line>();
        let thread = std::thread::Builder::new()
            .name("aai-live-out".into())
            .spawn(move || {
                let write = |out: &mut dyn Write, line: Line| match line {
                    Line::Out(json) => writeln!(out, "{json}"),
                    Line::Err(message) => writeln!(std::io::stderr(), "aai-live: {message}"),
                };
                while let Ok(line) = rx.recv() {
                    write(&mut out, line)?;
                    while let Ok(line) = rx.try_recv() {
                        write(&mut out, line)?;
                    }
                    out.flush()?;
                }
                Ok(())
            })
            .context("cannot start the output thread")?;
        Ok(Self { tx, thread })
    }

    /// Queue a line; fails once the thread has stopped on a write error (stdout closed).
    fn print(&self, line: Line) -> anyhow::Result<()> {
        self.tx
            .send(line)
            .map_err(|_| anyhow::anyhow!("cannot write the events to stdout"))
    }

    /// Everything queued is written (and flushed) when this returns.
    fn finish(self) -> anyhow::Result<()> {
        drop(self.tx);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the output thread panicked"))?
            .context("cannot write the events to stdout")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Condvar, Mutex};

    use super::*;

    /// A stdout whose reader is away until `open` is called, then keeps what it gets.
    #[derive(Clone, Default)]
    struct Stuck {
        open: Arc<(Mutex<bool>, Condvar)>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Stuck {
        fn open(&self) {
            *self.open.0.lock().expect("lock") = true;
            self.open.1.notify_all();
        }
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, ready) = &*self.open;
            let _open = ready
                .wait_while(lock.lock().expect("lock"), |open| !*open)
                .expect("lock");
            self.got.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_stdout_holds_up_only_the_printing() {
        let stdout = Stuck::default();
        let printer = Printer::start(Box::new(stdout.clone())).expect("printer");
        // With nobody reading stdout, every print still returns at once.
        for n in 0..10_000 {
            printer
                .print(Line::Out(format!("{{\"n\":{n}}}")))
                .expect("queued");
        }
        assert!(stdout.got.lock().expect("lock").is_empty());
        stdout.open();
        printer.finish().expect("all written");
        let got = String::from_utf8(stdout.got.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 10_000, "every line, once");
        assert!(
            lines
                .iter()
                .enumerate()
                .all(|(n, l)| *l == format!("{{\"n\":{n}}}")),
            "in order"
        );
    }

    /// stdout closed (a reader that went away): the run learns it and fails.
    #[test]
    fn a_failed_stdout_is_reported() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let printer = Printer::start(Box::new(Closed)).expect("printer");
        printer.print(Line::Out("{}".into())).expect("queued");
        // The thread stops at the failed write; the next prints fail once it has.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while printer.print(Line::Out("{}".into())).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the failure was never seen"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let error = printer.finish().expect_err("the write failed");
        assert!(format!("{error:#}").contains("stdout"), "{error:#}");
    }

    #[test]
    fn pulled_inputs_run_on_one_thread_the_microphone_on_several() {
        use tokio::runtime::RuntimeFlavor;
        let mut config = Config::default();
        for (input, flavor) in [
            (
                InputSpec::File("a.wav".into()),
                RuntimeFlavor::CurrentThread,
            ),
            (InputSpec::Stdin, RuntimeFlavor::CurrentThread),
            (
                InputSpec::Test(crate::config::TestSignal::Tone),
                RuntimeFlavor::CurrentThread,
            ),
            (InputSpec::Mic(None), RuntimeFlavor::MultiThread),
        ] {
            config.audio.input = input.clone();
            let runtime = runtime(&config).expect("runtime");
            assert_eq!(runtime.handle().runtime_flavor(), flavor, "{input:?}");
        }
    }
}
