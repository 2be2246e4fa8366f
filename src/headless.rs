//! `aai-live run --headless`: the scripting interface. Streams with the configured provider and
//! input, writes one JSON event per line to stdout (schema: docs/events.md), human-readable
//! messages to stderr, and exports the transcript at the end.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::audio::{self, AudioOptions, Pace};
use crate::config::Config;
use crate::provider::{self, PreMintOptions, PreMinter, TokenRequest};
use crate::session::{self, SessionCommand, SessionEvent, SupervisorOptions};
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

/// Run headless until the input ends, `--duration` passes, Ctrl-C, or a fatal failure.
/// Returns the process exit code: 0 when the run ended normally, 1 when it failed.
pub async fn run(
    config: &Config,
    options: &RunOptions,
    out: &mut (dyn Write + Send),
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
        schema: session::events::SCHEMA_VERSION,
        version: env!("CARGO_PKG_VERSION"),
        input: input.name.clone(),
        provider: format!("{} ({})", provider.name(), provider.source()),
        endpoint: supervisor_options.endpoint.to_string(),
    };
    writeln!(out, "{}", hello.to_line_at(std::time::SystemTime::now()))?;
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
                writeln!(out, "{}", event.to_line_at(std::time::SystemTime::now()))?;
                out.flush()?;
                describe(&event);
            }
            () = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } }, if !stop_sent => {
                stop_sent = true;
                let _ = stop.send(SessionCommand::Stop);
            }
            () = signalled.cancelled(), if !stop_sent => {
                stop_sent = true;
                eprintln!("aai-live: {}", strings::STOPPING);
                let _ = stop.send(SessionCommand::Stop);
            }
        }
    }
    // The supervisor catches its own panics and reports them in `finished`; should its task
    // still vanish, the run must not look finished: say `failed`, exit 1 (the journal keeps
    // the finals).
    let (outcome, transcript) = match handle.task.await {
        Ok(done) => done,
        Err(join) => {
            let reason = strings::crashed(&join.to_string());
            let failed = SessionEvent::State {
                view: session::machine::View::Failed {
                    class: crate::protocol::CloseClass::Local,
                    reason: reason.clone(),
                },
            };
            writeln!(out, "{}", failed.to_line_at(std::time::SystemTime::now()))?;
            out.flush()?;
            eprintln!("aai-live: {}", strings::run_failed(&reason));
            return Ok(1);
        }
    };
    // Exports are file writes: off the runtime's threads.
    let formats = config.transcript.formats.clone();
    tokio::task::spawn_blocking(move || transcript.write_beside(&journal, &formats))
        .await
        .context("the transcript export task failed")?
        .context("cannot write the transcript")?;
    Ok(i32::from(outcome.failure.is_some()))
}

/// Human-readable lines on stderr for the events a person wants to see (the dashboard's events
/// pane says the same words).
fn describe(event: &SessionEvent) {
    let line = match event {
        SessionEvent::Lost {
            generation,
            class,
            code,
            reason,
            what_now,
        } => strings::lost_explained(*generation, *class, *code, reason, what_now),
        SessionEvent::AudioLost { ms, cause, .. } => strings::audio_lost(*ms, *cause),
        SessionEvent::Rotation {
            from, to, forced, ..
        } => strings::rotated(*from, *to, *forced),
        SessionEvent::Finished {
            failure: Some(f), ..
        } => strings::run_failed_explained(f),
        SessionEvent::TokenFailed {
            generation,
            message,
            ..
        } => strings::token_failed(*generation, message),
        _ => return,
    };
    eprintln!("aai-live: {line}");
}
