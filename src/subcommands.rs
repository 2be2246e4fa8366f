//! Subcommand adapters: each turns parsed arguments into a call on a library module, sets up
//! logging where the command needs it, and returns the process exit code.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, Command, ConfigArgs, DoctorArgs, EmulateArgs, GlobalOpts, Shell, TokenArgs};
use crate::config::{self, EnvSource, LoadOptions, Loaded};
use crate::emulator::{self, EmulatorConfig, Pacing, Script};
use crate::logging::{self, LogGuard, LogOptions};
use crate::provider;

/// Run one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Config(args) => Ok(config_command(&args, &cli.global)),
        Command::Completions { shell } => {
            completions(shell, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let mut loaded = match usage(load_run_config(&cli.global, &args)) {
                Ok(loaded) => loaded,
                Err(code) => return Ok(code),
            };
            let _log = init_logging(&cli.global, &loaded)?;
            follow_token_server(&mut loaded)?;
            let trace = open_trace(&args, &loaded.config)?;
            if wants_dashboard(&args) {
                let mut setup = dashboard_setup(&loaded.config, &args, &provider::process_env);
                setup.supervisor = setup.supervisor.traced(trace);
                return runtime()?.block_on(show_dashboard(setup, args.captions.as_deref()));
            }
            let options = crate::headless::RunOptions {
                duration: args.duration,
                unpaced: args.unpaced,
                emulator_hints: args.emulator_hints || args.emulator.url.is_some(),
                captions: args.captions.clone(),
                trace,
            };
            let code = crate::headless::runtime(&loaded.config)?.block_on(async {
                crate::headless::run(&loaded.config, &options, Box::new(std::io::stdout())).await
            })?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Demo(args) => {
            let loaded = match usage(load_run_config(&cli.global, &args.run)) {
                Ok(loaded) => loaded,
                Err(code) => return Ok(code),
            };
            let _log = init_logging(&cli.global, &loaded)?;
            demo(loaded.config, &args.run)
        }
        Command::Devices => {
            let loaded = load_config(&cli.global)?;
            // alsa-lib's messages go to the log, not the terminal.
            let _log = init_logging(&cli.global, &loaded)?;
            devices(&mut std::io::stdout())
        }
        Command::Token(args) => token(&args, &cli.global),
        Command::Load(args) => load(&args, &cli.global),
        Command::Doctor(args) => doctor(&args, &cli.global),
        Command::Explain { topic } => {
            use std::io::IsTerminal;
            // On a terminal, rendered to its width; into a pipe, the Markdown as written.
            let width = std::io::stdout()
                .is_terminal()
                .then(|| crossterm::terminal::size().map_or(80, |(w, _)| w));
            Ok(ExitCode::from(explain(
                &topic,
                width,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            )))
        }
        Command::Serve(args) => serve(&args, &cli.global),
        Command::Emulate(args) => {
            let loaded = load_config(&cli.global)?;
            let _log = init_logging(&cli.global, &loaded)?;
            runtime()?.block_on(emulate(*args))
        }
    }
}

/// `run --trace FILE`: one stream's connections (the generations of several streams would
/// mix in one file).
fn open_trace(
    args: &crate::cli::RunArgs,
    config: &config::Config,
) -> anyhow::Result<Option<crate::trace::Trace>> {
    let Some(path) = &args.trace else {
        return Ok(None);
    };
    if config.sources().len() > 1 {
        anyhow::bail!(
            "--trace {}: records one input's stream, not several",
            path.display()
        );
    }
    Ok(Some(crate::trace::Trace::create(path)?))
}

/// An invalid configuration (a file, a variable or a flag) is a usage error: said on stderr,
/// exit 2 (docs/events.md), never mistaken for a failed run.
fn usage(loaded: anyhow::Result<Loaded>) -> Result<Loaded, ExitCode> {
    loaded.map_err(|error| {
        eprintln!("error: {error:#}");
        ExitCode::from(2)
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Config overrides from global flags.
fn overrides(global: &GlobalOpts) -> Vec<(String, String)> {
    let mut o = Vec::new();
    if let Some(level) = &global.log_level {
        o.push(("log.level".to_owned(), level.clone()));
    }
    o
}

/// Config overrides for `--emulator URL`: the api-key provider minting at the emulator's
/// /v3/token, streaming to its /v3/ws (the key still comes from `key_env`).
fn emulator_overrides(emulator: &crate::cli::EmulatorArg) -> anyhow::Result<Vec<(String, String)>> {
    let Some(url) = &emulator.url else {
        return Ok(Vec::new());
    };
    let (token, stream) = crate::protocol::params::server_endpoints(url)
        .map_err(|why| anyhow::anyhow!("--emulator {url}: {why}"))?;
    Ok(vec![
        ("provider.kind".to_owned(), "api-key".to_owned()),
        ("provider.api_key.token_url".to_owned(), token.to_string()),
        ("streaming.url".to_owned(), stream.to_string()),
    ])
}

/// The configuration of `run` and `demo`: the layers, then the flags. Labelled `--input`s
/// replace `[inputs]`; one unlabelled `--input` means the single-input run, whatever the files
/// say.
fn load_run_config(global: &GlobalOpts, args: &crate::cli::RunArgs) -> anyhow::Result<Loaded> {
    let inputs = input_args(&args.input)?;
    let mut loaded = load_config_with(global, run_overrides(args, inputs.as_ref())?)?;
    match inputs {
        Some(InputArgs::One(_)) => loaded.config.inputs.clear(),
        Some(InputArgs::Labelled(labelled)) => loaded.config.inputs = labelled,
        None => {}
    }
    Ok(loaded)
}

/// What the `--input` flags say.
enum InputArgs {
    One(String),
    Labelled(Vec<crate::config::LabelledInput>),
}

/// `--input SPEC` once, or `--input LABEL=SPEC` once or more (not both kinds).
fn input_args(values: &[String]) -> anyhow::Result<Option<InputArgs>> {
    let mut labelled = Vec::new();
    let mut plain = Vec::new();
    for value in values {
        let (label, spec) = crate::config::parse_input_arg(value)
            .map_err(|rule| anyhow::anyhow!("--input {value:?}: {rule}"))?;
        match label {
            Some(label) => labelled.push(crate::config::LabelledInput { label, spec }),
            None => plain.push(value.clone()),
        }
    }
    match (plain.len(), labelled.is_empty()) {
        (0, true) => Ok(None),
        (1, true) => Ok(plain.pop().map(InputArgs::One)),
        (0, false) => {
            crate::config::check_inputs(&labelled)
                .map_err(|rule| anyhow::anyhow!("--input: {rule}"))?;
            Ok(Some(InputArgs::Labelled(labelled)))
        }
        _ => anyhow::bail!(
            "--input: several inputs need a label each, e.g. --input you=mic --input them=monitor \
             (got {})",
            values.join(", ")
        ),
    }
}

/// Config overrides from `run` flags (`input`: the single unlabelled input, if given).
fn run_overrides(
    args: &crate::cli::RunArgs,
    inputs: Option<&InputArgs>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut o = emulator_overrides(&args.emulator)?;
    let single = match inputs {
        Some(InputArgs::One(spec)) => Some(spec),
        _ => None,
    };
    let mut set = |k: &str, v: Option<&String>| {
        if let Some(v) = v {
            o.push((k.to_owned(), v.clone()));
        }
    };
    set("audio.input", single);
    set("audio.device", args.device.as_ref());
    set("audio.stdin_format", args.stdin_format.as_ref());
    set("feed.listen", args.feed.as_ref());
    if args.loop_input {
        o.push(("audio.loop".into(), "true".into()));
    }
    if args.no_rotation {
        o.push(("session.rotation".into(), "false".into()));
    }
    if args.archive {
        o.push(("archive.enabled".into(), "true".into()));
    }
    Ok(o)
}

/// Load the effective configuration, printing its warnings to stderr (before any TUI starts).
pub fn load_config(global: &GlobalOpts) -> anyhow::Result<Loaded> {
    load_config_with(global, Vec::new())
}

/// Like [`load_config`], with extra command-line overrides.
pub fn load_config_with(
    global: &GlobalOpts,
    extra: Vec<(String, String)>,
) -> anyhow::Result<Loaded> {
    let mut all = overrides(global);
    all.extend(extra);
    let loaded = config::load(&LoadOptions {
        file: global.config.clone(),
        use_default_file: true,
        env: EnvSource::Process,
        overrides: all,
    })?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(loaded)
}

fn init_logging(global: &GlobalOpts, loaded: &Loaded) -> anyhow::Result<LogGuard> {
    let log = &loaded.config.log;
    Ok(logging::init(&LogOptions {
        level: log.level.clone(),
        dir: log.dir_or_default(),
        file: global.log_file.clone(),
        max_files: log.max_files as usize,
    })?)
}

/// With the remote provider and no `[streaming] url`: stream where the token server publishes
/// (`session::follow_token_server`), said on stderr before anything starts.
fn follow_token_server(loaded: &mut Loaded) -> anyhow::Result<()> {
    let before = loaded.config.streaming.url.is_some();
    if let Some(line) =
        runtime()?.block_on(crate::session::follow_token_server(&mut loaded.config))?
    {
        eprintln!("aai-live: {line}");
        if !before && loaded.config.streaming.url.is_some() {
            loaded
                .layers
                .push("the token server's config.json: streaming.url".to_owned());
        }
    }
    Ok(())
}

/// `aai-live token`: mint one token with the configured provider (`provider::token_cli`).
fn token(args: &TokenArgs, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let loaded = load_config_with(global, emulator_overrides(&args.emulator)?)?;
    let _log = init_logging(global, &loaded)?;
    let command = provider::token_cli::TokenOptions {
        out: args.out.clone(),
        expires_in_seconds: args.expires_in,
        max_session_duration_seconds: args.max_session_duration,
    };
    let code = runtime()?.block_on(provider::token_cli::run(
        &loaded.config.provider,
        &command,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ));
    Ok(ExitCode::from(code))
}

/// `aai-live load`: the sessions of `crate::load`, a progress line on stderr while they run
/// (rewritten in place on a terminal, every 5 s otherwise), the summary on stdout.
fn load(args: &crate::cli::LoadArgs, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let loaded = load_config_with(global, emulator_overrides(&args.emulator)?)?;
    let _log = init_logging(global, &loaded)?;
    let plan = crate::load::LoadPlan {
        sessions: args.sessions,
        ramp: args.ramp,
        duration: args.duration,
        max_sessions_per_minute: args.max_sessions_per_minute,
        stop: tokio_util::sync::CancellationToken::new(),
    };
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_secs(if terminal { 1 } else { 5 });
    let summary = runtime()?.block_on(async {
        // Ctrl-C ends the test early, with the figures so far.
        crate::signals::cancel_on_signals(plan.stop.clone())
            .context("cannot install the signal handlers")?;
        let chunks = crate::load::read_input(&args.input, &loaded.config).await?;
        let summary = crate::load::run(&loaded.config, &plan, chunks, every, |progress| {
            let line = progress.line(plan.sessions);
            if terminal {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
        })
        .await?;
        anyhow::Ok(summary)
    })?;
    if terminal {
        eprintln!();
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.text());
    }
    Ok(ExitCode::SUCCESS)
}

/// `aai-live doctor`: every step of a run, checked (`crate::doctor`); exit 2 for an invalid
/// configuration, as `run`.
fn doctor(args: &DoctorArgs, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let mut extra = emulator_overrides(&args.emulator)?;
    if let Some(input) = &args.input {
        extra.push(("audio.input".to_owned(), input.clone()));
    }
    if let Some(device) = &args.device {
        extra.push(("audio.device".to_owned(), device.clone()));
    }
    let format = if args.json {
        crate::doctor::Format::Json
    } else {
        crate::doctor::Format::Text {
            ascii: crate::doctor::wants_ascii(args.ascii, &provider::process_env),
        }
    };
    let loaded = match load_config_with(global, extra) {
        Ok(loaded) => loaded,
        Err(e) => {
            let step = crate::doctor::Step::fail(
                crate::doctor::Check::Config,
                format!("{e:#}"),
                crate::diagnosis::Diagnosis::ConfigInvalid,
            );
            print!("{}", crate::doctor::render(&step, format));
            return Ok(ExitCode::from(2));
        }
    };
    // Logging as a run has it; a log directory that cannot be written is the `files` step's
    // finding, not a reason not to check the rest.
    let _log = init_logging(global, &loaded).ok();
    let mut loaded = loaded;
    let mut out = std::io::stdout();
    let code = if let Some(server) = &args.server {
        // The token's session opens where the server says browsers and clients stream.
        if loaded.config.streaming.url.is_none() {
            let published = runtime()?.block_on(crate::session::published_endpoint(
                server,
                loaded.config.provider.timeout,
            ));
            match published {
                Ok(Some(url)) => loaded.config.streaming.url = Some(url),
                Ok(None) => {}
                Err(e) => eprintln!("warning: {e}"),
            }
        }
        let options = crate::doctor::server::ServerOptions {
            url: server.clone(),
            credential_env: args.credential_env.clone(),
            credential_file: args.credential_file.clone(),
            origin: args.origin.clone(),
            keep_going: args.keep_going,
            format,
        };
        let report = runtime()?.block_on(crate::doctor::server::run(
            &loaded.config,
            &options,
            &provider::process_env,
            &mut out,
        ));
        report.exit_code()
    } else {
        follow_token_server(&mut loaded)?;
        let options = crate::doctor::Options {
            keep_going: args.keep_going,
            redeem: args.redeem,
            format,
            layers: loaded.layers.clone(),
            warnings: loaded.warnings.clone(),
            input_wait: crate::doctor::INPUT_WAIT,
            input_chosen: loaded.chose("audio.input"),
        };
        let report = runtime()?.block_on(crate::doctor::run(
            &loaded.config,
            &options,
            &provider::process_env,
            &mut out,
        ));
        report.exit_code()
    };
    Ok(ExitCode::from(code))
}

/// `aai-live explain TOPIC`: the troubleshooting sections a topic names; an unknown topic lists
/// the topics (exit 2).
/// `width`: render the Markdown for a terminal that wide (headings, emphasis, code, wrapped);
/// `None` (a pipe, a file): the Markdown as written.
pub fn explain(topic: &str, width: Option<u16>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let found = crate::diagnosis::lookup(topic);
    if found.is_empty() {
        let keys: Vec<&str> = crate::diagnosis::sections().iter().map(|s| s.key).collect();
        let _ = writeln!(
            err,
            "error: no troubleshooting section for {:?}; topics: {}",
            crate::untrusted::for_terminal(topic),
            keys.join(", ")
        );
        return 2;
    }
    let text = found
        .iter()
        .map(|s| s.text)
        .collect::<Vec<_>>()
        .join("\n\n");
    let text = match width {
        // Long lines read badly on a wide terminal: at most 100 columns.
        Some(w) => termimad::MadSkin::default()
            .text(&text, Some(usize::from(w.clamp(20, 100))))
            .to_string(),
        None => text,
    };
    match writeln!(out, "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(_) => 1,
        Ok(()) => 0,
    }
}

/// `aai-live serve`: the token server (`server::serve_cli`), or `--hash-credential`.
fn serve(
    args: &crate::server::serve_cli::ServeArgs,
    global: &GlobalOpts,
) -> anyhow::Result<ExitCode> {
    use crate::server::serve_cli;
    if args.hash_credential {
        let code = serve_cli::hash_credential_command(
            &mut std::io::stdin().lock(),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        );
        return Ok(ExitCode::from(code));
    }
    let loaded = load_config_with(global, args.config_overrides())?;
    let _log = init_logging(global, &loaded)?;
    runtime()?.block_on(serve_cli::run(
        &loaded.config,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn config_command(args: &ConfigArgs, global: &GlobalOpts) -> ExitCode {
    if args.print_default {
        print!("{}", config::DEFAULT_TOML);
        return ExitCode::SUCCESS;
    }
    let file = args.check.as_ref().and_then(Option::as_deref);
    let code = config::check_command(
        file,
        global.config.as_deref(),
        overrides(global),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Write a completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> anyhow::Result<()> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "aai-live", &mut script);
    match out.write_all(&script) {
        // `aai-live completions bash | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `aai-live devices`: the input devices, or a plain statement that there is no sound hardware
/// (not an error: exit 0); then the PulseAudio / PipeWire sources `--input monitor:NAME` takes.
pub fn devices(out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let report = crate::audio::device_report()?;
    let text = format!(
        "{}\n{}",
        report.render(),
        crate::audio::system_sources().render()
    );
    match out.write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("cannot write the device list")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Turn `emulate` flags into an emulator configuration.
pub fn emulator_config(args: &EmulateArgs) -> anyhow::Result<EmulatorConfig> {
    let mut api_keys = args.api_keys.clone();
    if let Ok(env) = std::env::var("AAI_LIVE_EMULATOR_API_KEYS") {
        api_keys.extend(
            env.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned),
        );
    }
    let script = match &args.script {
        Some(path) => Some(std::sync::Arc::new(Script::load(path)?)),
        None => None,
    };
    if !(args.max_rate_factor >= 1.0 && args.max_rate_factor.is_finite()) {
        anyhow::bail!(
            "--max-rate-factor {} is invalid: it must be at least 1.0",
            args.max_rate_factor
        );
    }
    if let Some(dir) = &args.record {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the --record directory {}", dir.display()))?;
    }
    Ok(EmulatorConfig {
        api_keys,
        profile: args.profile,
        script,
        sessions_per_minute: args.sessions_per_minute,
        rate_limit_close_code: args.rate_limit_close_code,
        reject_at_upgrade: args.reject_at_upgrade,
        expired_token_close_code: args.expired_token_close_code,
        pacing: (!args.no_pace_check).then_some(Pacing {
            factor: args.max_rate_factor,
            burst: Duration::from_millis(args.rate_burst_ms),
        }),
        processing_delay: Duration::from_millis(args.processing_delay_ms),
        record_dir: args.record.clone(),
        faults: args.faults.clone(),
        max_session_duration: args.max_session_duration,
        inactivity_close_code: args.inactivity_close_code,
        keep_sessions: args.keep_sessions,
        max_tokens: args.max_tokens,
        max_connections: Some(args.max_connections),
        header_timeout: Some(args.header_timeout),
        control_from_anywhere: args.control_from_anywhere,
        clock_skew_ms: args.clock_skew.unwrap_or_default(),
        replay: match &args.replay {
            Some(path) => Some(std::sync::Arc::new(crate::trace::Recorded::load(path)?)),
            None => None,
        },
    })
}

/// The command lines that use an emulator at `base` with `key`, as `emulate` prints them after
/// its first line: ready to copy into another terminal.
pub fn emulator_recipes(base: &str, key: &str) -> String {
    let lines = [
        (
            format!("aai-live run --emulator {base} --input test:tone"),
            "stream, on the dashboard",
        ),
        (
            format!("aai-live run --emulator {base} --input file:speech.wav --headless"),
            "a WAV file, NDJSON events",
        ),
        (
            format!("aai-live doctor --emulator {base}"),
            "check every step a run takes",
        ),
        (
            format!("aai-live token --emulator {base}"),
            "mint one token",
        ),
    ];
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut out = format!("\nUse it from another terminal:\n  export ASSEMBLYAI_API_KEY={key}\n");
    for (line, what) in &lines {
        let _ = writeln!(out, "  {line:<width$}   # {what}");
    }
    out
}

async fn emulate(args: EmulateArgs) -> anyhow::Result<ExitCode> {
    let config = emulator_config(&args)?;
    let running = emulator::start(config.clone(), &args.listen, args.tls.files()).await?;
    crate::signals::cancel_on_signals(running.cancel_token())
        .context("cannot install the signal handlers")?;
    // The first stdout line is a contract: scripts and tests read the real port from it.
    println!("aai-live emulator listening on {}", running.base_url());
    // Then how to use it, ready to copy (the key is this emulator's own, not a secret).
    let key = config.api_keys.first().map_or("KEY", String::as_str);
    print!("{}", emulator_recipes(&running.base_url(), key));
    std::io::stdout().flush().ok();
    for warning in &running.warnings {
        eprintln!("warning: {warning}");
    }
    running.wait().await;
    Ok(ExitCode::SUCCESS)
}

/// `run` and `demo` show the dashboard unless --headless, or stdout is not a terminal (a pipe
/// gets NDJSON).
fn wants_dashboard(args: &crate::cli::RunArgs) -> bool {
    use std::io::IsTerminal;
    !args.headless && std::io::stdout().is_terminal()
}

/// The dashboard's setup for `run` flags, with the provider built from `env`.
fn dashboard_setup(
    config: &config::Config,
    args: &crate::cli::RunArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> crate::app::Setup {
    // A provider that cannot be built is shown on the dashboard, not fatal here.
    let built = provider::build_with(&config.provider, env);
    let mut setup = crate::app::Setup::from_config(config, built, &provider::process_env);
    setup.duration = args.duration;
    setup.supervisor.emulator_hints = args.emulator_hints || args.emulator.url.is_some();
    if args.unpaced {
        setup.audio.pace = crate::audio::Pace::Unpaced;
    }
    setup
}

/// Run the dashboard (with the feed and the captions file when asked for); once the terminal
/// is restored, say where the transcripts went.
async fn show_dashboard(
    mut setup: crate::app::Setup,
    captions: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    use crate::feed::{Captions, Feed, FeedOptions};
    let feed = match FeedOptions::from_config(&setup.config.feed, &provider::process_env)? {
        Some(options) => Some(Feed::start(options).await?),
        None => None,
    };
    if let Some(feed) = &feed {
        setup.tap = feed.tap();
        setup.feed = Some(feed.url.clone());
    }
    if let Some(path) = captions {
        setup.tap = setup.tap.with_captions(Captions::start(path)?);
    }
    let mut tap = setup.tap.clone();
    let report = crate::app::run(setup).await;
    tap.finish_captions()?;
    if let Some(feed) = feed {
        feed.finish().await?;
    }
    let report = report?;
    for path in &report.saved {
        eprintln!("aai-live: saved {}", path.display());
    }
    if let Some(failure) = &report.failure {
        eprintln!(
            "aai-live: the last run failed: {}",
            crate::untrusted::for_terminal(failure)
        );
    } else if report.audio_lost_ms > 0 {
        eprintln!(
            "aai-live: {}",
            crate::strings::audio_lost(report.audio_lost_ms, crate::events::LossCause::Stopped)
        );
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// `aai-live demo`: the emulator in-process, the configuration pointed at it, then the dashboard
/// (or NDJSON with --headless).
fn demo(mut config: config::Config, args: &crate::cli::RunArgs) -> anyhow::Result<ExitCode> {
    use crate::demo::{Demo, INPUT_LABEL};
    let bundled = args.input.is_empty();
    runtime()?.block_on(async move {
        let demo = Demo::start(bundled).await?;
        demo.configure(&mut config);
        let trace = open_trace(args, &config)?;
        let code = if wants_dashboard(args) {
            let mut setup = dashboard_setup(&config, args, &Demo::env);
            setup.supervisor = setup.supervisor.traced(trace);
            setup.supervisor.emulator_hints = true;
            setup.info.demo = Some(demo.emulator.addr.to_string());
            if bundled {
                INPUT_LABEL.clone_into(&mut setup.info.input);
                setup.input_label = Some(INPUT_LABEL.to_owned());
            }
            Box::pin(show_dashboard(setup, args.captions.as_deref())).await
        } else {
            // The headless runner builds its provider from files and the process environment:
            // give it the demo key as a private key file.
            config.provider.api_key.key_file = Some(demo.files.key());
            let options = crate::headless::RunOptions {
                duration: args.duration,
                unpaced: args.unpaced,
                emulator_hints: true,
                captions: args.captions.clone(),
                trace,
            };
            crate::headless::run(&config, &options, Box::new(std::io::stdout()))
                .await
                .map(|code| ExitCode::from(u8::try_from(code).unwrap_or(1)))
        };
        demo.shutdown().await;
        code
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a terminal the section is rendered (no Markdown marks, wrapped to the width); into a
    /// pipe it is the Markdown as written.
    #[test]
    fn explain_renders_for_a_terminal_and_stays_markdown_in_a_pipe() {
        /// What a terminal shows: the text without its escape sequences.
        fn visible(text: &str) -> String {
            let mut plain = String::new();
            let mut escape = false;
            for c in text.chars() {
                match (escape, c) {
                    (false, '\u{1b}') => escape = true,
                    (true, 'm') => escape = false,
                    (false, c) => plain.push(c),
                    (true, _) => {}
                }
            }
            plain
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(explain("3009", Some(60), &mut out, &mut err), 0);
        let rendered = String::from_utf8(out).expect("utf-8");
        assert!(rendered.contains('\u{1b}'), "styled for a terminal");
        let shown = visible(&rendered);
        assert!(shown.contains("You see:"), "{shown}");
        assert!(!shown.contains("**") && !shown.contains("## "), "{shown}");
        let longest = shown.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        assert!(longest <= 60, "wrapped to 60 columns: {longest}");
        let mut piped = Vec::new();
        assert_eq!(explain("3009", None, &mut piped, &mut err), 0);
        let piped = String::from_utf8(piped).expect("utf-8");
        assert!(piped.starts_with("## `3009`") && piped.contains("**You see:**"));
    }
}
