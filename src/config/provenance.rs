//! Where a configuration value came from: the layers of one load and the question "which layer
//! set this key?", which every error message answers.
//!
//! This is its own module, below both `load` (which reads the layers) and `validate` (which names
//! a value's origin in its messages), so that `validate` needs nothing from `load`: the modules
//! of `config/` import each other in one direction only (the graph is in `config.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Where a layer comes from.
#[derive(Debug, Clone)]
pub(super) enum LayerSource {
    Defaults,
    File(PathBuf),
    Env,
    Overrides,
}

/// One configuration layer as a TOML table, plus what set each key.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) source: LayerSource,
    pub(super) table: toml::Table,
    /// Env and override layers: key path -> the variable or override that set it.
    pub(super) setters: BTreeMap<String, String>,
}

impl Layer {
    /// A layer with `table` and no setters yet.
    pub(super) fn new(source: LayerSource, table: toml::Table) -> Self {
        Self {
            source,
            table,
            setters: BTreeMap::new(),
        }
    }

    /// Whether this layer sets `key` (a dotted path).
    pub(super) fn sets(&self, key: &str) -> bool {
        let mut table = &self.table;
        let mut segments = key.split('.').peekable();
        while let Some(segment) = segments.next() {
            match (table.get(segment), segments.peek()) {
                (Some(_), None) => return true,
                (Some(toml::Value::Table(sub)), Some(_)) => table = sub,
                _ => return false,
            }
        }
        false
    }

    /// Where `key` came from in this layer, for messages: "(from <origin>)".
    pub(super) fn origin(&self, key: &str) -> String {
        let setter = self.setters.get(key).map_or("?", String::as_str);
        match &self.source {
            LayerSource::Defaults => "the built-in defaults".to_owned(),
            LayerSource::File(path) => format!("file {}", path.display()),
            LayerSource::Env => format!("environment variable {setter}"),
            LayerSource::Overrides => format!("command-line override of `{setter}`"),
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let setters = || {
            self.setters
                .values()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.source {
            LayerSource::Defaults => f.write_str("built-in defaults (config/default.toml)"),
            LayerSource::File(path) => write!(f, "file {}", path.display()),
            LayerSource::Env => write!(f, "environment: {}", setters()),
            LayerSource::Overrides => write!(f, "command line: {}", setters()),
        }
    }
}

/// All layers of one load, lowest first, to answer "where did this value come from?".
#[derive(Debug, Clone)]
pub(crate) struct Provenance {
    layers: Vec<Layer>,
}

impl Provenance {
    pub(super) fn new(layers: Vec<Layer>) -> Self {
        Self { layers }
    }

    pub(super) fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Only the built-in defaults layer, for tests that validate an edited `default.toml`.
    #[cfg(test)]
    pub(crate) fn defaults_only_for_tests() -> Self {
        let table = toml::from_str(super::DEFAULT_TOML).expect("test setup");
        Self::new(vec![Layer::new(LayerSource::Defaults, table)])
    }

    /// The origin of the effective value of `key`: the highest layer that sets it.
    pub(crate) fn origin(&self, key: &str) -> String {
        self.layers
            .iter()
            .rev()
            .find(|layer| layer.sets(key))
            .map_or_else(
                || "the built-in defaults".to_owned(),
                |layer| layer.origin(key),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(source: LayerSource, toml: &str, setters: &[(&str, &str)]) -> Layer {
        let mut layer = Layer::new(source, toml::from_str(toml).expect("test setup"));
        for (key, setter) in setters {
            layer
                .setters
                .insert((*key).to_owned(), (*setter).to_owned());
        }
        layer
    }

    #[test]
    fn the_highest_layer_that_sets_a_key_is_its_origin() {
        let provenance = Provenance::new(vec![
            layer(LayerSource::Defaults, "[ui]\nfps = 10\nascii = false", &[]),
            layer(
                LayerSource::File("/etc/a.toml".into()),
                "[ui]\nfps = 20",
                &[],
            ),
            layer(
                LayerSource::Env,
                "[ui]\nfps = 30",
                &[("ui.fps", "AAI_LIVE__UI__FPS")],
            ),
        ]);
        assert_eq!(
            provenance.origin("ui.fps"),
            "environment variable AAI_LIVE__UI__FPS"
        );
        assert_eq!(provenance.origin("ui.ascii"), "the built-in defaults");
        // Not set anywhere (an optional key left unset): the defaults are where it stays unset.
        assert_eq!(provenance.origin("log.dir"), "the built-in defaults");
        // A layer sets only the keys it names: not a sibling, not a path below a value.
        assert!(!provenance.layers()[1].sets("ui.ascii"));
        assert!(!provenance.layers()[1].sets("ui.fps.x"));
    }
}
