//! `aai-live run --headless`: the scripting interface. Streams with the configured provider and
//! input, writes one JSON event per line to stdout (schema: docs/events.md), human-readable
//! messages to stderr, and exports the transcript at the end.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::audio::{self, AudioOptions, Pace};
use crate::config::Config;
use crate::config::Label;
use crate::events::{SessionEvent, View};
use crate::failure::Failure;
use crate::feed::{Captions, Feed, FeedOptions, Tap};
use crate::provider::{self, PreMintOptions, PreMinter, TokenRequest};
use crate::session::streams::{Sourced, StreamSetup};
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
    /// `--captions FILE`: the finals as SRT or WebVTT, a cue as each turn ends.
    pub captions: Option<std::path::PathBuf>,
    /// `--trace`: where the connections write their frames.
    pub trace: Option<crate::trace::Trace>,
}

/// The runtime for a headless run. A file, stdin or a test signal is paced by one task, and
/// the whole run is a handful of tasks waking 20 times a second: one thread runs them with the
/// least wake-up and hand-over cost (the printing has its own thread, [`Printer`], so a slow
/// stdout never holds up the audio). The microphone keeps the multi-threaded runtime: its
/// conversion thread waits on the runtime for room in the chunk channel.
pub fn runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if config.sources().iter().any(|s| s.spec.is_mic()) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The supervisors' options: the configuration's, with the run's flags.
fn supervisor_options(config: &Config, options: &RunOptions) -> SupervisorOptions {
    let mut supervisor = SupervisorOptions::from_config(config).traced(options.trace.clone());
    supervisor.emulator_hints = options.emulator_hints;
    supervisor
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
    // The dashboard's audio options, and the run's own pace; seed 1 as ever (test signals).
    let audio_options = AudioOptions {
        pace: if options.unpaced {
            Pace::Unpaced
        } else {
            Pace::RealTime
        },
        seed: 1,
        ..AudioOptions::from_config(config)
    };
    let sources = config.sources();
    let mut inputs = open_inputs(&sources, &audio_options).await?;
    let supervisor_options = supervisor_options(config, options);

    let journal = transcript::journal_path(
        &config.transcript.dir_or_default(),
        std::time::SystemTime::now(),
    );
    let transcript =
        Transcript::with_journal(&journal)?.named(transcript::Names::new(&config.speakers.names));
    let names = input_names(&sources, &inputs);
    // Shown and serialised without a password or query secrets.
    let endpoint = crate::config::redact_url(&supervisor_options.endpoint);
    eprintln!(
        "aai-live: {}",
        strings::streaming_to(&names, &endpoint, &journal)
    );

    let hello = SessionEvent::Hello {
        schema: crate::events::SCHEMA_VERSION,
        version: env!("CARGO_PKG_VERSION"),
        input: names,
        provider: format!("{} ({})", provider.name(), provider.source()),
        endpoint,
    };
    let (feed, printer) = start_output(config, options, out, hello).await?;
    let mut parts = Vec::with_capacity(sources.len());
    for (source, input) in sources.iter().zip(inputs.iter_mut()) {
        let archive = crate::archive::for_source(config, &journal, source, &input.name);
        parts.push(StreamSetup {
            label: source.label.clone(),
            // Each stream its own token: a token opens one session.
            premint: Arc::new(PreMinter::new(
                Arc::clone(&provider),
                request,
                PreMintOptions::default(),
            )),
            // With the input's stats, so a failed or crashed input fails its stream (exit 1).
            feed: session::AudioFeed::watched(input.take_chunks(), input.stats.clone())
                .archived(archive),
            mic: source.spec.is_mic(),
        });
    }
    let mut streams = session::streams::spawn(&supervisor_options, transcript, parts);
    streams.send_all(&SessionCommand::Start);

    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    // SIGINT and SIGTERM (systemd, docker stop) end the run gracefully: Terminate, the last
    // turns, the exports.
    let signalled = tokio_util::sync::CancellationToken::new();
    crate::signals::cancel_on_signals(signalled.clone()).context("cannot handle signals")?;
    let mut stop_sent = false;
    loop {
        tokio::select! {
            event = streams.events.recv() => {
                let Some((index, event)) = event else { break };
                for sourced in streams.on_event(index, event) {
                    report(&printer, &sourced)?;
                }
            }
            () = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } }, if !stop_sent => {
                stop_sent = true;
                streams.send_all(&SessionCommand::Stop);
            }
            () = signalled.cancelled(), if !stop_sent => {
                stop_sent = true;
                printer.print(Line::Err(strings::STOPPING.to_owned()))?;
                streams.send_all(&SessionCommand::Stop);
            }
        }
    }
    let finished = streams.finish().await;
    // A supervisor catches its own panics and reports them in `finished`; should its task
    // still vanish, its stream must not look finished: `state: failed`, exit 1 (the journal
    // keeps the finals).
    for (source, why) in &finished.vanished {
        vanished(&printer, source.clone(), why)?;
    }
    report_run_finished(&printer, &finished)?;
    // Every event is on stdout before anything else can end the run.
    printer.finish()?;
    if let Some(feed) = feed {
        feed.finish().await?;
    }
    let code = finished.exit_code();
    // Exports are file writes: off the runtime's threads.
    let formats = config.transcript.formats.clone();
    let transcript = finished.transcript;
    tokio::task::spawn_blocking(move || transcript.write_beside(&journal, &formats))
        .await
        .context("the transcript export task failed")?
        .context("cannot write the transcript")?;
    drop(inputs);
    Ok(code)
}

/// Where the run's events go: stdout, and the feed (`--feed`) and the captions file
/// (`--captions`) when asked for, which take them as stdout does (see [`Printer`]); `hello`
/// first.
async fn start_output(
    config: &Config,
    options: &RunOptions,
    out: Box<dyn Write + Send>,
    hello: SessionEvent,
) -> anyhow::Result<(Option<Feed>, Printer)> {
    let feed = match FeedOptions::from_config(&config.feed, &|name| std::env::var(name).ok())? {
        Some(options) => Some(Feed::start(options).await?),
        None => None,
    };
    let mut tap = feed.as_ref().map(Feed::tap).unwrap_or_default();
    if let Some(path) = &options.captions {
        tap = tap.with_captions(Captions::start(path)?);
    }
    if let Some(feed) = &feed {
        eprintln!(
            "aai-live: {}",
            strings::feed_listening(&feed.url, &feed.overlay_shown)
        );
    }
    let printer = Printer::start(out, tap)?;
    printer.event(&Sourced {
        index: 0,
        source: None,
        event: hello,
    })?;
    Ok((feed, printer))
}

/// Every input opens before anything streams: one that cannot is a clear error naming it.
async fn open_inputs(
    sources: &[crate::config::Source],
    options: &AudioOptions,
) -> anyhow::Result<Vec<audio::AudioInput>> {
    let mut inputs = Vec::with_capacity(sources.len());
    for source in sources {
        let input =
            audio::open(&source.spec, options)
                .await
                .with_context(|| match &source.label {
                    Some(label) => format!("cannot open the audio input {label} ({})", source.spec),
                    None => "cannot open the audio input".to_owned(),
                })?;
        inputs.push(input);
    }
    Ok(inputs)
}

/// Meeting mode: the run's own `finished`, with each input's totals under `sources`.
fn report_run_finished(
    printer: &Printer,
    finished: &session::streams::Finished,
) -> anyhow::Result<()> {
    let Some((event, sources)) = finished.run_event() else {
        return Ok(());
    };
    let mut line: serde_json::Value =
        serde_json::from_str(&event.to_line_at(std::time::SystemTime::now())).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut line {
        map.insert(
            "sources".into(),
            serde_json::to_value(&sources).unwrap_or_default(),
        );
    }
    let run = Sourced {
        index: 0,
        source: None,
        event,
    };
    printer.event_line(&run, line.to_string())?;
    report_stderr(printer, &run)
}

/// The inputs as `hello` and the first stderr line name them: the one input's name, or
/// `you=microphone: default, them=monitor` in meeting mode.
fn input_names(sources: &[crate::config::Source], inputs: &[audio::AudioInput]) -> String {
    sources
        .iter()
        .zip(inputs)
        .map(|(source, input)| match &source.label {
            Some(label) => format!("{label}={}", input.name),
            None => input.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An event on stdout, and its line (if any) on stderr.
fn report(printer: &Printer, sourced: &Sourced) -> anyhow::Result<()> {
    printer.event(sourced)?;
    report_stderr(printer, sourced)
}

/// An event's stderr line, prefixed with its input's label in meeting mode.
fn report_stderr(printer: &Printer, sourced: &Sourced) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now();
    if let Some(line) = strings::event_line(&sourced.event, now)
        && line.audience != strings::Audience::Pane
    {
        let text = line.for_stderr();
        let text = match &sourced.source {
            Some(label) => format!("{label}: {text}"),
            None => text,
        };
        printer.print(Line::Err(text))?;
    }
    Ok(())
}

/// A stream's supervisor task vanished (it catches its own panics, so this is a last resort):
/// the stream must not look finished — `state: failed` on stdout, the reason on stderr.
fn vanished(printer: &Printer, source: Option<Label>, why: &str) -> anyhow::Result<()> {
    let failure = Failure::internal(strings::crashed(why));
    let line = strings::Line {
        severity: strings::Severity::Error,
        text: strings::run_failed(&strings::failure(&failure)),
        explain: Some(failure.explain()),
        audience: strings::Audience::Stderr,
    };
    let failed = Sourced {
        index: 0,
        source,
        event: SessionEvent::State {
            view: View::Failed(failure),
        },
    };
    printer.event(&failed)?;
    printer.print(Line::Err(line.for_stderr()))?;
    Ok(())
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
///
/// Every NDJSON line of the run goes through [`Printer::event`]: the one place a headless run's
/// events are serialised, and where the feed and the captions file ([`Tap`]) take them.
struct Printer {
    tx: std::sync::mpsc::Sender<Line>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
    tap: Tap,
}

impl Printer {
    fn start(mut out: Box<dyn Write + Send>, tap: Tap) -> anyhow::Result<Self> {
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
        Ok(Self { tx, thread, tap })
    }

    /// One of the run's events: its NDJSON line on stdout and offered to the tap.
    fn event(&self, sourced: &Sourced) -> anyhow::Result<()> {
        self.event_line(sourced, sourced.to_line_at(std::time::SystemTime::now()))
    }

    /// An event whose line is already made (the run's `finished` with its `sources`).
    fn event_line(&self, sourced: &Sourced, line: String) -> anyhow::Result<()> {
        self.tap.offer(sourced, &line)?;
        self.print(Line::Out(line))
    }

    /// Queue a line; fails once the thread has stopped on a write error (stdout closed).
    fn print(&self, line: Line) -> anyhow::Result<()> {
        self.tx
            .send(line)
            .map_err(|_| anyhow::anyhow!("cannot write the events to stdout"))
    }

    /// Everything queued is written (and flushed) when this returns, the captions file too.
    fn finish(mut self) -> anyhow::Result<()> {
        drop(self.tx);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the output thread panicked"))?
            .context("cannot write the events to stdout")?;
        self.tap.finish_captions()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Condvar, Mutex};

    use super::*;
    use crate::config::InputSpec;

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
        let printer = Printer::start(Box::new(stdout.clone()), Tap::default()).expect("printer");
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
        let printer = Printer::start(Box::new(Closed), Tap::default()).expect("printer");
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
