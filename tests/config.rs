//! Configuration loading end to end: the defaults contract, valid and invalid fixture files,
//! layer precedence, error messages, warnings, `config --check`, and docs that cannot drift.
//!
//! Invalid fixtures live in `tests/fixtures/configs/invalid/`; each starts with one or more
//! `# expect: <substring>` lines (`\n` stands for a newline) that the error message must contain,
//! besides the fixture's own path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aai_live::config::{
    self, Config, ConfigError, EnvSource, InputSpec, LoadOptions, ProviderKind, Theme,
    TranscriptFormat,
};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/configs")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .map(|entry| entry.expect("fixture entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn opts(file: Option<&Path>, env: &[(&str, &str)], overrides: &[(&str, &str)]) -> LoadOptions {
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    LoadOptions {
        file: file.map(Path::to_path_buf),
        use_default_file: false,
        env: EnvSource::Vars(pairs(env)),
        overrides: pairs(overrides),
    }
}

fn load_ok(opts: &LoadOptions) -> config::Loaded {
    config::load(opts).unwrap_or_else(|e| panic!("expected a valid configuration, got: {e}"))
}

fn load_err(opts: &LoadOptions) -> String {
    match config::load(opts) {
        Ok(loaded) => panic!("expected an error, got {:#?}", loaded.config),
        Err(e) => e.to_string(),
    }
}

/// A user file in a temporary directory (kept alive by the returned guard).
fn user_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

// --- The defaults contract -------------------------------------------------------------------

/// `Config::default()` (plain values in `src/config/types.rs`) is exactly what the loader builds
/// from `config/default.toml` alone, so the file stays the source of the defaults. Compared
/// section by section for a failure that names the drifted section; the pattern is exhaustive,
/// so a new section does not compile until it is compared here too.
#[test]
fn default_toml_parses_to_default() {
    let loaded = load_ok(&LoadOptions::defaults_only());
    let Config {
        provider,
        streaming,
        session,
        audio,
        transcript,
        ui,
        keys,
        log,
        server,
        inputs,
        speakers,
        archive,
        feed,
    } = Config::default();
    let from_file = &loaded.config;
    assert_eq!(from_file.provider, provider);
    assert_eq!(from_file.streaming, streaming);
    assert_eq!(from_file.session, session);
    assert_eq!(from_file.audio, audio);
    assert_eq!(from_file.transcript, transcript);
    assert_eq!(from_file.ui, ui);
    assert_eq!(from_file.keys, keys);
    assert_eq!(from_file.log, log);
    assert_eq!(from_file.server, server);
    assert_eq!(from_file.inputs, inputs);
    assert_eq!(from_file.speakers, speakers);
    assert_eq!(from_file.archive, archive);
    assert_eq!(from_file.feed, feed);
    assert!(loaded.warnings.is_empty());
    assert_eq!(loaded.layers, ["built-in defaults (config/default.toml)"]);
}

/// `default.toml` with every optional `# key = value` line uncommented must still be valid:
/// the example values shown to users are accepted, and `RawConfig` knows every optional key.
#[test]
fn optional_keys_in_default_toml_are_valid_when_uncommented() {
    let mut in_section = false;
    let uncommented: String = config::DEFAULT_TOML
        .lines()
        .map(|line| {
            in_section |= line.starts_with('[');
            match line.strip_prefix("# ") {
                Some(rest) if in_section && optional_key(rest).is_some() => format!("{rest}\n"),
                _ => format!("{line}\n"),
            }
        })
        .collect();
    let (_dir, path) = user_file(&uncommented);
    // Some examples apply in a context their comment names: a U3 model (`mode`), redaction on
    // (`redact_pii_sub`, `include_partial_turns`).
    let context = [
        ("streaming.speech_model", "u3-rt-pro"),
        ("streaming.redact_pii", "true"),
    ];
    let loaded = load_ok(&opts(Some(&path), &[], &context));
    let streaming = &loaded.config.streaming;
    assert_eq!(streaming.params.end_of_turn_confidence_threshold, Some(0.4));
    assert_eq!(streaming.params.max_turn_silence, Some(1280));
    assert!(loaded.config.provider.api_key.token_url.is_some());
    assert!(loaded.config.log.dir.is_some());
}

// --- Fixtures ---------------------------------------------------------------------------------

#[test]
fn valid_fixtures_load() {
    for path in fixtures("valid") {
        if let Err(e) = config::load(&opts(Some(&path), &[], &[])) {
            panic!("{} should be valid: {e}", path.display());
        }
    }
}

#[test]
fn valid_fixture_values_arrive() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/configs/valid/everything.toml");
    let c = load_ok(&opts(Some(&path), &[], &[])).config;
    assert_eq!(
        c.streaming.params.end_of_turn_confidence_threshold,
        Some(1.0)
    );
    assert_eq!(
        c.streaming
            .params
            .extra
            .get("some_new_param")
            .map(String::as_str),
        Some("on")
    );
    assert_eq!(c.audio.input, InputSpec::File("/tmp/talk.wav".into()));
    assert_eq!(c.audio.stdin_format.to_string(), "f32le:192000:8");
    assert_eq!(
        c.transcript.formats,
        [
            TranscriptFormat::Vtt,
            TranscriptFormat::Srt,
            TranscriptFormat::Txt
        ]
    );
    let quit: Vec<String> = c
        .keys
        .keys_for("quit")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(quit, ["ctrl-q", "esc"]);
    assert_eq!(
        c.keys.action_for(&"q".parse().expect("key")),
        Some("toggle_events")
    );
    // Untouched sections keep their defaults.
    assert_eq!(c.provider, Config::default().provider);
}

#[test]
fn invalid_fixtures_fail_with_their_message() {
    let mut failures = Vec::new();
    for path in fixtures("invalid") {
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let mut expects: Vec<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# expect: "))
            .map(|e| e.replace("\\n", "\n"))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            path.display()
        );
        expects.push(path.display().to_string());
        match config::load(&opts(Some(&path), &[], &[])) {
            Ok(_) => failures.push(format!("{}: loaded without error", path.display())),
            Err(e) => {
                let message = e.to_string();
                let absent: Vec<&String> = expects
                    .iter()
                    .filter(|x| !message.contains(x.as_str()))
                    .collect();
                if !absent.is_empty() {
                    failures.push(format!("{}: {absent:?} not in:\n{message}", path.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn missing_explicit_file_is_an_error_naming_it() {
    let message = load_err(&opts(
        Some(Path::new("/nonexistent/aai-live.toml")),
        &[],
        &[],
    ));
    assert_eq!(
        message,
        "config file /nonexistent/aai-live.toml does not exist"
    );
}

#[test]
fn syntax_error_is_a_dedicated_variant() {
    let (_dir, path) = user_file("[ui]\nfps = = 3\n");
    match config::load(&opts(Some(&path), &[], &[])) {
        Err(ConfigError::Syntax { line, column, .. }) => assert_eq!((line, column), (2, 7)),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

// --- Layers and precedence --------------------------------------------------------------------

#[test]
fn env_overrides_file_and_overrides_win_over_env() {
    let (_dir, path) = user_file("[ui]\nfps = 20\ntheme = \"mono\"\n");
    let file_only = load_ok(&opts(Some(&path), &[], &[]));
    assert_eq!(
        (file_only.config.ui.fps, file_only.config.ui.theme),
        (20, Theme::Mono)
    );

    let env = [("AAI_LIVE__UI__FPS", "30")];
    let with_env = load_ok(&opts(Some(&path), &env, &[]));
    assert_eq!(
        (with_env.config.ui.fps, with_env.config.ui.theme),
        (30, Theme::Mono)
    );

    let with_override = load_ok(&opts(Some(&path), &env, &[("ui.fps", "40")]));
    assert_eq!(with_override.config.ui.fps, 40);
    assert_eq!(
        with_override.layers,
        [
            "built-in defaults (config/default.toml)".to_owned(),
            format!("file {}", path.display()),
            "environment: AAI_LIVE__UI__FPS".to_owned(),
            "command line: ui.fps".to_owned(),
        ]
    );
}

#[test]
fn env_names_nested_keys_lists_and_maps() {
    let env = [
        ("AAI_LIVE__PROVIDER__KIND", "remote"),
        (
            "AAI_LIVE__PROVIDER__REMOTE__URL",
            "https://tokens.example.com/",
        ),
        ("AAI_LIVE__PROVIDER__API_KEY__KEY_ENV", "X"),
        ("AAI_LIVE__TRANSCRIPT__FORMATS", "srt, vtt"),
        ("AAI_LIVE__STREAMING__EXTRA__NEW_PARAM", "1"),
        ("AAI_LIVE__STREAMING__FORMAT_TURNS", "true"),
        ("AAI_LIVE__SESSION__REPLAY_SPEED", "1.1"),
        // Not config keys: a single underscore after the prefix.
        ("AAI_LIVE_CONFIG", "/does/not/matter.toml"),
        ("AAI_LIVE_TOKEN_SERVER_CREDENTIAL", "secret"),
    ];
    let c = load_ok(&opts(None, &env, &[])).config;
    assert_eq!(c.provider.kind, ProviderKind::Remote);
    assert_eq!(c.provider.api_key.key_env, "X");
    assert_eq!(
        c.transcript.formats,
        [TranscriptFormat::Srt, TranscriptFormat::Vtt]
    );
    assert_eq!(
        c.streaming
            .params
            .extra
            .get("new_param")
            .map(String::as_str),
        Some("1")
    );
    assert!(c.streaming.params.format_turns);
    assert!((c.session.replay_speed - 1.1).abs() < f64::EPSILON);
}

#[test]
fn maps_merge_across_layers() {
    let (_dir, path) = user_file("[provider.remote.headers]\nX-From-File = \"a\"\n");
    let c = load_ok(&opts(
        Some(&path),
        &[("AAI_LIVE__PROVIDER__REMOTE__HEADERS__X_ENV", "b")],
        &[],
    ))
    .config;
    let names: Vec<&str> = c
        .provider
        .remote
        .headers
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["X-From-File", "x_env"]);
}

#[test]
fn unknown_env_key_names_the_variable() {
    let message = load_err(&opts(None, &[("AAI_LIVE__UI__FPSS", "30")], &[]));
    assert_eq!(
        message,
        "unknown key `ui.fpss` (from environment variable AAI_LIVE__UI__FPSS); did you mean `ui.fps`?"
    );
}

#[test]
fn bad_env_values_name_the_variable() {
    let message = load_err(&opts(None, &[("AAI_LIVE__UI__FPS", "fast")], &[]));
    assert_eq!(
        message,
        "`ui.fps` = \"fast\" (from environment variable AAI_LIVE__UI__FPS): must be an integer"
    );
    let message = load_err(&opts(None, &[("AAI_LIVE__UI__FPS", "100")], &[]));
    assert_eq!(
        message,
        "`ui.fps` = 100 (from environment variable AAI_LIVE__UI__FPS): must be between 1 and 60"
    );
    let message = load_err(&opts(None, &[("AAI_LIVE__PROVIDER__REMOTE", "x")], &[]));
    assert!(
        message.contains("is a table: set the keys inside it one by one"),
        "{message}"
    );
}

#[test]
fn override_errors_name_the_override() {
    let message = load_err(&opts(None, &[], &[("log.levle", "debug")]));
    assert_eq!(
        message,
        "unknown key `log.levle` (from command-line override of `log.levle`); did you mean `log.level`?"
    );
    let message = load_err(&opts(None, &[], &[("log.level", "loud")]));
    assert!(
        message.starts_with("`log.level` = \"loud\" (from command-line override of `log.level`)"),
        "{message}"
    );
}

#[test]
fn cross_key_rules_name_each_origin() {
    let (_dir, path) = user_file("[session]\nrotation_lead = \"90s\"\n");
    let message = load_err(&opts(
        Some(&path),
        &[("AAI_LIVE__PROVIDER__MAX_SESSION_DURATION_SECONDS", "60")],
        &[],
    ));
    assert_eq!(
        message,
        format!(
            "`session.rotation_lead` = \"90s\" (from file {}): must be shorter than \
             `provider.max_session_duration_seconds` (60 s, from environment variable \
             AAI_LIVE__PROVIDER__MAX_SESSION_DURATION_SECONDS)",
            path.display()
        )
    );
    let message = load_err(&opts(None, &[("AAI_LIVE__PROVIDER__KIND", "file")], &[]));
    assert_eq!(
        message,
        "`provider.file.path` is missing: it is required when `provider.kind` = \"file\" (from \
         environment variable AAI_LIVE__PROVIDER__KIND)"
    );
}

#[test]
fn default_file_is_found_through_xdg_config_home() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("aai-live/config.toml");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, "[ui]\nfps = 5\n").expect("write");
    let xdg = dir.path().to_str().expect("utf-8 temp path");
    let mut options = opts(None, &[("XDG_CONFIG_HOME", xdg)], &[]);

    options.use_default_file = true;
    let loaded = load_ok(&options);
    assert_eq!(loaded.config.ui.fps, 5);
    assert_eq!(loaded.layers[1], format!("file {}", file.display()));

    options.use_default_file = false;
    assert_eq!(load_ok(&options).config.ui.fps, 10);

    // No file there: the defaults alone, no error.
    options.use_default_file = true;
    std::fs::remove_file(&file).expect("rm");
    assert_eq!(load_ok(&options).layers.len(), 1);
}

// --- Warnings and rendering ---------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn secret_files_readable_by_others_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, "not read by the config module\n").expect("write");
    let set_mode = |mode| {
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let key_file_str = key_file.to_str().expect("utf-8 temp path");
    let options = opts(None, &[], &[("provider.api_key.key_file", key_file_str)]);

    set_mode(0o644);
    let shown = key_file.display();
    let expected = format!("{shown} is readable by others (mode 0644); run chmod 600 {shown}");
    assert_eq!(
        config::secret_file_warning(&key_file),
        Some(expected.clone())
    );
    assert_eq!(
        load_ok(&options).warnings,
        [format!("`provider.api_key.key_file`: {expected}")]
    );

    set_mode(0o600);
    assert_eq!(config::secret_file_warning(&key_file), None);
    assert!(load_ok(&options).warnings.is_empty());

    // A missing file is the secret reader's business, not a config warning.
    let gone = opts(
        None,
        &[],
        &[("provider.remote.bearer_file", "/nonexistent/credential")],
    );
    assert!(load_ok(&gone).warnings.is_empty());
}

#[test]
fn secret_headers_are_redacted_and_warned_about() {
    let (_dir, path) = user_file(
        "[provider.remote.headers]\nAuthorization = \"Bearer hunter2\"\nX-Api-Key = \"k\"\nX-Client = \"aai-live\"\n",
    );
    let loaded = load_ok(&opts(Some(&path), &[], &[]));
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0]
            .starts_with("`provider.remote.headers.Authorization` looks like a credential")
    );
    let rendered = config::render_resolved(&loaded.config);
    assert!(!rendered.contains("hunter2"), "{rendered}");
    assert!(
        rendered.contains("Authorization = \"[REDACTED]\""),
        "{rendered}"
    );
    assert!(
        rendered.contains("X-Api-Key = \"[REDACTED]\""),
        "{rendered}"
    );
    assert!(rendered.contains("X-Client = \"aai-live\""), "{rendered}");
}

#[test]
fn extra_query_values_are_redacted_unless_known_to_be_harmless() {
    let (_dir, path) = user_file(
        "[streaming.extra]\nwebhook_auth_header_value = \"hunter2\"\nfuture_thing = \"x9\"\nmode = \"balanced\"\n",
    );
    let loaded = load_ok(&opts(Some(&path), &[], &[]));
    let rendered = config::render_resolved(&loaded.config);
    assert!(
        !rendered.contains("hunter2") && !rendered.contains("x9"),
        "{rendered}"
    );
    assert!(rendered.contains("mode = \"balanced\""), "{rendered}");
    assert!(
        rendered.contains("webhook_auth_header_value = \"[REDACTED]\""),
        "{rendered}"
    );
}

/// What `config --check` prints is a config file that loads back to the same settings, except
/// the redacted values.
#[test]
fn render_resolved_round_trips() {
    for path in fixtures("valid") {
        let config = load_ok(&opts(Some(&path), &[], &[])).config;
        let (_dir, rendered) = user_file(&config::render_resolved(&config));
        let mut expected = config.clone();
        for (name, value) in &mut expected.streaming.params.extra {
            if !aai_live::protocol::params::is_public_param(name) {
                "[REDACTED]".clone_into(value);
            }
        }
        assert_eq!(
            load_ok(&opts(Some(&rendered), &[], &[])).config,
            expected,
            "{}",
            path.display()
        );
    }
}

#[test]
fn check_command_reports_layers_and_settings() {
    let (_dir, path) = user_file("[ui]\nfps = 12\n");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = config::check_command(
        Some(&path),
        None,
        vec![("ui.ascii".into(), "true".into())],
        &mut out,
        &mut err,
    );
    let (out, err) = (
        String::from_utf8(out).expect("utf-8"),
        String::from_utf8(err).expect("utf-8"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty());
    assert!(
        out.starts_with("# The configuration is valid. Layers, lowest first:\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("#   2. file {}\n", path.display())),
        "{out}"
    );
    assert!(out.contains("#   3. command line: ui.ascii\n"), "{out}");
    assert!(
        out.contains("[ui]\nfps = 12\ntheme = \"default\"\nascii = true\n"),
        "{out}"
    );
}

#[test]
fn check_command_falls_back_to_the_global_config_and_fails_with_2() {
    let (_dir, path) = user_file("[ui]\nfps = 0\n");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    // `config --check` without FILE arrives as an empty path.
    let code = config::check_command(
        Some(Path::new("")),
        Some(&path),
        Vec::new(),
        &mut out,
        &mut err,
    );
    let err = String::from_utf8(err).expect("utf-8");
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert_eq!(
        err,
        format!(
            "error: `ui.fps` = 0 (from file {}): must be between 1 and 60\n",
            path.display()
        )
    );
}

// --- Documentation ------------------------------------------------------------------------------

/// `key` of an optional `key = value` line (the text after `# `), found independently of the
/// library's own parser so the two cross-check each other.
fn optional_key(line: &str) -> Option<&str> {
    let (key, _) = line.split_once(" = ")?;
    let mut chars = key.chars();
    (chars.next()?.is_ascii_lowercase()
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    .then_some(key)
}

/// Every key path of `default.toml`, active and optional.
fn default_toml_keys() -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in config::DEFAULT_TOML.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            name.clone_into(&mut section);
        } else if section.is_empty() {
            // The file's header comment, before any section.
        } else if let Some(key) = line.strip_prefix("# ").and_then(optional_key) {
            keys.insert(format!("{section}.{key}"));
        } else if let Some((key, _)) = line.split_once(" = ").filter(|_| !line.starts_with('#')) {
            keys.insert(format!("{section}.{}", key.trim()));
        }
    }
    keys
}

#[test]
fn docs_cover_every_key_and_only_real_keys() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let keys = default_toml_keys();
    assert!(
        keys.contains("provider.api_key.key_file") && keys.contains("streaming.prompt"),
        "{keys:?}"
    );
    assert!(keys.len() > 70, "found only {} keys", keys.len());
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !docs.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md: {missing:?}"
    );

    // The first cell of each table row names a key.
    let documented: Vec<&str> = docs
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(key, _)| key))
        .filter(|key| key.contains('.'))
        .collect();
    assert!(
        documented.len() >= keys.len(),
        "only {} documented rows",
        documented.len()
    );
    let unknown: Vec<&&str> = documented.iter().filter(|k| !keys.contains(**k)).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys not in default.toml: {unknown:?}"
    );
}

#[test]
fn config_files_are_read_with_a_size_cap() {
    // Once read whole: `--config /dev/zero` ran out of memory.
    let e = load_err(&opts(Some(Path::new("/dev/zero")), &[], &[]));
    assert!(
        e.contains("/dev/zero") && e.contains("larger than 1 MiB"),
        "{e}"
    );
    // A real file just over the cap: refused before parsing; at the cap: parsed.
    let mut text = String::from("[ui]\ntheme = \"mono\"\n");
    let pad = 1024 * 1024 - text.len();
    text.push_str(&"#".repeat(pad - 1));
    text.push('\n');
    let (_dir, path) = user_file(&text);
    assert_eq!(
        load_ok(&opts(Some(&path), &[], &[])).config.ui.theme,
        Theme::Mono
    );
    std::fs::write(&path, format!("{text}#")).expect("write");
    let e = load_err(&opts(Some(&path), &[], &[]));
    assert!(
        e.contains(&path.display().to_string()) && e.contains("larger than 1 MiB"),
        "{e}"
    );
}

/// Durations read alike in every layer: units, a bare number of seconds in a string (file,
/// environment, `--set`), and a bare TOML integer in a file.
#[test]
fn durations_take_units_and_bare_seconds_in_every_layer() {
    let (_dir, path) = user_file("[session]\nstall_timeout = 21\nreplay_buffer = \"45\"\n");
    let loaded = load_ok(&opts(
        Some(&path),
        &[("AAI_LIVE__SESSION__HEALTHY_AFTER", "40")],
        &[("session.backoff_max", "1m 5s")],
    ));
    let session = &loaded.config.session;
    assert_eq!(session.stall_timeout, std::time::Duration::from_secs(21));
    assert_eq!(session.replay_buffer, std::time::Duration::from_secs(45));
    assert_eq!(session.healthy_after, std::time::Duration::from_secs(40));
    assert_eq!(session.backoff_max, std::time::Duration::from_secs(65));

    let (_dir, path) = user_file("[session]\nstall_timeout = -3\n");
    let err = load_err(&opts(Some(&path), &[], &[]));
    assert!(
        err.contains("`session.stall_timeout` = -3") && err.contains("a number of seconds"),
        "{err}"
    );
    let (_dir, path) = user_file("[session]\nstall_timeout = \"soon\"\n");
    let err = load_err(&opts(Some(&path), &[], &[]));
    assert!(err.contains("\"20\" (seconds)"), "{err}");
}
