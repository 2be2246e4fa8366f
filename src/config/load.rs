//! Layering: reads each layer into a TOML table, checks it against the schema, merges the layers
//! with the `config` crate and remembers which layer set which key.
//!
//! Each layer is checked on its own, before the merge, because only then is it known where a bad
//! key came from: after the merge, `AAI_LIVE__UI__FPSS` and a typo in the user file look the same.
//! Environment variables and command-line overrides are plain strings; they are converted to the
//! key's type here (from the schema), so the merged tree is typed no matter where a value came
//! from.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::provenance::{Layer, LayerSource, Provenance};
use super::raw::RawConfig;
use super::schema::{self, Kind, Lookup, Schema};
use super::server::LimitsStore;
use super::types::Config;
use super::{ConfigError, DEFAULT_TOML, Problem, paths, validate};

/// Prefix of configuration environment variables. Note the double underscore: `AAI_LIVE_CONFIG`
/// (the `--config` flag's variable) and other `AAI_LIVE_*` variables are not config keys.
const ENV_PREFIX: &str = "AAI_LIVE__";
/// Separates path segments in environment variable names; single underscores stay in key names.
const ENV_SEPARATOR: &str = "__";

/// What [`load`] reads.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// An explicit config file (`--config FILE`); it must exist.
    pub file: Option<PathBuf>,
    /// When `file` is `None`, read `$XDG_CONFIG_HOME/aai-live/config.toml` if it exists.
    pub use_default_file: bool,
    /// Where `AAI_LIVE__*` variables (and the XDG variables for the default file) come from.
    pub env: EnvSource,
    /// Command-line overrides, `(key path, value)`, highest precedence. Lists are comma-separated.
    pub overrides: Vec<(String, String)>,
}

impl LoadOptions {
    /// Only the built-in defaults: no file, no environment, no overrides.
    pub fn defaults_only() -> Self {
        Self {
            file: None,
            use_default_file: false,
            env: EnvSource::Vars(Vec::new()),
            overrides: Vec::new(),
        }
    }
}

/// The environment [`load`] sees.
#[derive(Debug, Clone)]
pub enum EnvSource {
    /// The process environment.
    Process,
    /// These variables only (for tests: the process environment cannot be changed safely while
    /// tests run in parallel).
    Vars(Vec<(String, String)>),
}

impl EnvSource {
    fn var(&self, name: &str) -> Option<OsString> {
        match self {
            Self::Process => std::env::var_os(name),
            Self::Vars(vars) => vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()),
        }
    }

    fn vars(&self) -> Vec<(OsString, OsString)> {
        match self {
            Self::Process => std::env::vars_os().collect(),
            Self::Vars(vars) => vars.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }
}

/// A successfully loaded configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Things worth fixing that do not stop the program (e.g. a secret file readable by others).
    pub warnings: Vec<String>,
    /// A human description of each layer used, lowest first.
    pub layers: Vec<String>,
    /// The keys a layer above the built-in defaults set (a file, the environment, a flag):
    /// what the user chose, as dotted paths.
    pub chosen: std::collections::BTreeSet<String>,
}

impl Loaded {
    /// Whether the user set `key` (dotted), rather than leaving the built-in default.
    pub fn chose(&self, key: &str) -> bool {
        self.chosen.contains(key)
    }
}

/// Every dotted key path (leaves) of `table`, under `prefix`.
fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(sub) => leaf_keys(sub, &path, out),
            _ => {
                out.insert(path);
            }
        }
    }
}

/// Loads, merges and validates every layer.
pub fn load(opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let schema = Schema::from_default_toml(DEFAULT_TOML).map_err(ConfigError::Internal)?;
    let mut layers = vec![defaults_layer()?];
    let mut problems = Vec::new();
    if let Some(path) = user_file(opts) {
        let layer = file_layer(path)?;
        check_table(&schema, &layer, &layer.table, "", &mut problems);
        layers.push(layer);
    }
    layers.extend(env_layer(&opts.env, &schema, &mut problems));
    layers.extend(override_layer(&opts.overrides, &schema, &mut problems));
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    let provenance = Provenance::new(layers);
    let config = validate::validate(merge(provenance.layers())?, &provenance)
        .map_err(ConfigError::Invalid)?;
    let mut chosen = std::collections::BTreeSet::new();
    for layer in provenance.layers() {
        if !matches!(layer.source, LayerSource::Defaults) {
            leaf_keys(&layer.table, "", &mut chosen);
        }
    }
    Ok(Loaded {
        chosen,
        warnings: warnings(&config),
        layers: provenance
            .layers()
            .iter()
            .map(ToString::to_string)
            .collect(),
        config,
    })
}

/// Warns when a file holding a secret is accessible by group or others, like ssh does for keys.
/// Returns `None` when the permissions are fine, the file cannot be inspected, or off Unix.
pub fn secret_file_warning(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
        (mode & 0o077 != 0).then(|| {
            let path = path.display();
            format!("{path} is readable by others (mode {mode:04o}); run chmod 600 {path}")
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Whether a header (or query parameter) name suggests its value is a credential.
pub(crate) fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["authorization", "cookie", "token", "key", "secret"]
        .iter()
        .any(|word| name.contains(word))
}

fn warnings(config: &Config) -> Vec<String> {
    let (api_key, remote) = (&config.provider.api_key, &config.provider.remote);
    let secret_files = [
        ("provider.api_key.key_file", api_key.key_file.as_deref()),
        ("provider.remote.bearer_file", remote.bearer_file.as_deref()),
        (
            "server.limits_store_password_file",
            config.server.limits_store_password_file.as_deref(),
        ),
    ];
    let mut warnings: Vec<String> = secret_files
        .into_iter()
        .filter_map(|(key, path)| Some(format!("`{key}`: {}", secret_file_warning(path?)?)))
        .collect();
    warnings.extend(remote.headers.keys().filter(|name| looks_secret(name)).map(|name| {
        format!(
            "`provider.remote.headers.{name}` looks like a credential; keep secrets out of config \
             files with `provider.remote.bearer_env` or `provider.remote.bearer_file`"
        )
    }));
    let server = &config.server;
    if server.limits_store_ca.is_some()
        && !matches!(&server.limits_store, LimitsStore::Redis(r) if r.tls())
    {
        warnings.push(
            "`server.limits_store_ca` is not used: `server.limits_store` is not a rediss:// URL"
                .to_owned(),
        );
    }
    warnings
}

fn user_file(opts: &LoadOptions) -> Option<PathBuf> {
    if let Some(file) = &opts.file {
        return Some(file.clone());
    }
    if !opts.use_default_file {
        return None;
    }
    paths::config_file_with(&|name| opts.env.var(name)).filter(|path| path.exists())
}

/// The built-in defaults layer.
fn defaults_layer() -> Result<Layer, ConfigError> {
    let table = toml::from_str(DEFAULT_TOML)
        .map_err(|e| ConfigError::Internal(format!("config/default.toml does not parse: {e}")))?;
    Ok(Layer::new(LayerSource::Defaults, table))
}

/// The user file's layer; a missing file or bad TOML is an error of its own.
fn file_layer(path: PathBuf) -> Result<Layer, ConfigError> {
    // Capped: `--config /dev/zero` (or a multi-GB file named by mistake) must not exhaust memory.
    let text = match crate::files::read_capped_string(&path, crate::files::MAX_FILE_BYTES) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NotFound { path });
        }
        Err(cause) => return Err(ConfigError::Read { path, cause }),
    };
    let table = toml::from_str(&text).map_err(|e| {
        let (line, column) = line_column(&text, e.span().map_or(0, |span| span.start));
        ConfigError::Syntax {
            path: path.clone(),
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })?;
    Ok(Layer::new(LayerSource::File(path), table))
}

/// Sets `key` in `layer` from a string, converting it to the key's type. Used for env and
/// overrides.
fn set_str(
    layer: &mut Layer,
    schema: &Schema,
    key: &str,
    text: &str,
    setter: String,
    problems: &mut Vec<Problem>,
) {
    layer.setters.insert(key.to_owned(), setter);
    let kind = match schema.lookup(key) {
        Lookup::Unknown => return problems.push(unknown_key(schema, key, &layer.origin(key))),
        Lookup::MapEntry => Kind::Str,
        Lookup::Known(kind) => kind,
    };
    let Some(value) = kind.parse_str(text) else {
        let rule = match kind {
            Kind::Section | Kind::Map => "is a table: set the keys inside it one by one".to_owned(),
            _ => format!("must be {}", kind.expected()),
        };
        let message = format!("`{key}` = {text:?} (from {}): {rule}", layer.origin(key));
        return problems.push(Problem {
            key: key.to_owned(),
            message,
        });
    };
    insert_path(&mut layer.table, key, value);
}

/// Checks a parsed file's keys and value types against the schema.
fn check_table(
    schema: &Schema,
    layer: &Layer,
    table: &toml::Table,
    prefix: &str,
    problems: &mut Vec<Problem>,
) {
    for (name, value) in table {
        let key = schema::join(prefix, name);
        let kind = match schema.lookup(&key) {
            Lookup::Unknown => {
                problems.push(unknown_key(schema, &key, &layer.origin(&key)));
                continue;
            }
            Lookup::MapEntry => Kind::Str,
            Lookup::Known(kind) => kind,
        };
        if !kind.accepts(value) {
            let message = format!(
                "`{key}` = {} (from {}): must be {}",
                show(value),
                layer.origin(&key),
                kind.expected()
            );
            problems.push(Problem { key, message });
        } else if let toml::Value::Table(sub) = value {
            check_table(schema, layer, sub, &key, problems);
        }
    }
}

/// A TOML value for a message, shortened: a whole section would drown the message.
fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(_) => "a table".to_owned(),
        other => other.to_string(),
    }
}

fn unknown_key(schema: &Schema, key: &str, origin: &str) -> Problem {
    let hint = schema.suggest(key).map_or_else(
        || "; `aai-live config --print-default` lists every key".to_owned(),
        |near| format!("; did you mean `{near}`?"),
    );
    Problem {
        key: key.to_owned(),
        message: format!("unknown key `{key}` (from {origin}){hint}"),
    }
}

fn env_layer(env: &EnvSource, schema: &Schema, problems: &mut Vec<Problem>) -> Option<Layer> {
    let mut layer = Layer::new(LayerSource::Env, toml::Table::new());
    let mut vars = env.vars();
    vars.sort();
    for (name, value) in vars {
        // Non-UTF-8 names cannot be ours; skip them like the `config` crate does.
        let Some(name) = name.to_str() else { continue };
        // Matched case-insensitively, as the `config` crate's `Environment` source does.
        let Some(rest) = name.get(ENV_PREFIX.len()..).filter(|_| {
            name.get(..ENV_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
        }) else {
            continue;
        };
        let key = rest.to_ascii_lowercase().replace(ENV_SEPARATOR, ".");
        match value.to_str() {
            Some(value) => set_str(&mut layer, schema, &key, value, name.to_owned(), problems),
            None => problems.push(Problem {
                message: format!(
                    "`{key}` (from environment variable {name}): the value is not valid UTF-8"
                ),
                key,
            }),
        }
    }
    (!layer.setters.is_empty()).then_some(layer)
}

fn override_layer(
    overrides: &[(String, String)],
    schema: &Schema,
    problems: &mut Vec<Problem>,
) -> Option<Layer> {
    let mut layer = Layer::new(LayerSource::Overrides, toml::Table::new());
    for (key, value) in overrides {
        set_str(&mut layer, schema, key, value, key.clone(), problems);
    }
    (!layer.setters.is_empty()).then_some(layer)
}

/// Inserts `value` at the dotted `key`, creating the tables on the way.
fn insert_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = table
                .entry(head)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(sub) = entry {
                insert_path(sub, rest, value);
            }
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// Merges the layers in order with the `config` crate and deserializes the result.
fn merge(layers: &[Layer]) -> Result<RawConfig, ConfigError> {
    let builder = layers
        .iter()
        .fold(config::Config::builder(), |builder, layer| {
            builder.add_source(TableSource(layer.table.clone()))
        });
    // Every layer passed the schema check, so a failure here means `RawConfig` and
    // `default.toml` disagree: a bug, which the tests catch.
    builder
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| ConfigError::Internal(format!("merging the configuration layers failed: {e}")))
}

/// A checked TOML table as a `config` source.
#[derive(Debug, Clone)]
struct TableSource(toml::Table);

impl config::Source for TableSource {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        Ok(self
            .0
            .iter()
            .map(|(key, value)| (key.clone(), to_config_value(value)))
            .collect())
    }
}

fn to_config_value(value: &toml::Value) -> config::Value {
    use config::ValueKind as K;
    let kind = match value {
        toml::Value::String(s) => K::String(s.clone()),
        toml::Value::Integer(i) => K::I64(*i),
        toml::Value::Float(f) => K::Float(*f),
        toml::Value::Boolean(b) => K::Boolean(*b),
        toml::Value::Datetime(d) => K::String(d.to_string()),
        toml::Value::Array(items) => K::Array(items.iter().map(to_config_value).collect()),
        toml::Value::Table(table) => K::Table(
            table
                .iter()
                .map(|(k, v)| (k.clone(), to_config_value(v)))
                .collect(),
        ),
    };
    config::Value::new(None, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbé = ?\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(
            line_column(text, text.find('?').expect("test setup")),
            (2, 6)
        );
    }

    #[test]
    fn insert_path_creates_tables() {
        let mut table = toml::Table::new();
        insert_path(&mut table, "a.b.c", toml::Value::Integer(1));
        insert_path(&mut table, "a.b.d", toml::Value::Integer(2));
        assert_eq!(table.to_string(), "[a.b]\nc = 1\nd = 2\n");
    }

    #[test]
    fn secret_names() {
        for name in [
            "Authorization",
            "Cookie",
            "X-Api-Key",
            "x-auth-token",
            "client_secret",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["Accept", "X-Client-Version", "User-Agent"] {
            assert!(!looks_secret(name), "{name}");
        }
    }

    #[test]
    fn env_prefix_needs_double_underscore() {
        let schema = Schema::from_default_toml(DEFAULT_TOML).expect("test setup");
        let env = EnvSource::Vars(vec![
            ("AAI_LIVE_CONFIG".into(), "/nowhere.toml".into()),
            ("AAI_LIVE_TOKEN_SERVER_CREDENTIAL".into(), "x".into()),
            (
                "AAI_LIVE__PROVIDER__API_KEY__KEY_ENV".into(),
                "MY_KEY".into(),
            ),
        ]);
        let mut problems = Vec::new();
        let layer = env_layer(&env, &schema, &mut problems).expect("test setup");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(layer.sets("provider.api_key.key_env"));
        assert_eq!(layer.setters.len(), 1);
    }
}
