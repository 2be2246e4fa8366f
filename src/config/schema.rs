//! The valid keys and the TOML type of each, read from `config/default.toml`.
//!
//! Deriving the schema from the defaults file keeps a single list of keys: adding a key to
//! `default.toml` (active, or as an optional `# key = value` line) makes it valid in every layer.
//! Conventions of that file that this module relies on:
//! - a non-empty table is a section; an empty table (`headers = {}`) is a free-form map whose
//!   keys are anything and whose values are strings;
//! - arrays are lists of strings;
//! - inside a section, a comment line that is itself a valid `key = value` TOML line declares an
//!   optional key (unset by default) and its type.

use std::collections::BTreeMap;

/// The type a key accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Section,
    Map,
    Bool,
    Int,
    Float,
    Str,
    /// A string whose default reads as a duration ("30s"): a bare TOML integer is seconds too.
    Duration,
    List,
}

impl Kind {
    /// How the expected type reads in an error message ("must be ...").
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Self::Section => "a table (section)",
            Self::Map => "a table of strings",
            Self::Bool => "true or false",
            Self::Int => "an integer",
            Self::Float => "a number",
            Self::Str => "a string",
            Self::Duration => "a duration such as \"30s\" or a number of seconds",
            Self::List => "a list of strings",
        }
    }

    /// Whether a value parsed from a TOML file has this type. Integers are accepted where a
    /// number is expected, because `backoff_multiplier = 2` should mean 2.0.
    pub(crate) fn accepts(self, value: &toml::Value) -> bool {
        use toml::Value as V;
        match (self, value) {
            (Self::Section | Self::Map, V::Table(_))
            | (Self::Bool, V::Boolean(_))
            | (Self::Int, V::Integer(_))
            | (Self::Float, V::Float(_) | V::Integer(_))
            | (Self::Str | Self::Duration, V::String(_)) => true,
            (Self::Duration, V::Integer(n)) => *n >= 0,
            (Self::List, V::Array(items)) => items.iter().all(toml::Value::is_str),
            _ => false,
        }
    }

    /// Converts a string from an environment variable or command-line override to this type.
    /// Lists are comma-separated (an empty string is an empty list).
    pub(crate) fn parse_str(self, text: &str) -> Option<toml::Value> {
        use toml::Value as V;
        match self {
            Self::Section | Self::Map => None,
            Self::Bool => match text.to_ascii_lowercase().as_str() {
                "true" => Some(V::Boolean(true)),
                "false" => Some(V::Boolean(false)),
                _ => None,
            },
            Self::Int => text.trim().parse().ok().map(V::Integer),
            Self::Float => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(V::Float),
            Self::Str | Self::Duration => Some(V::String(text.to_owned())),
            Self::List if text.is_empty() => Some(V::Array(Vec::new())),
            Self::List => Some(V::Array(
                text.split(',')
                    .map(|item| V::String(item.trim().to_owned()))
                    .collect(),
            )),
        }
    }
}

/// Dotted key path -> kind, for every section and key of `default.toml`.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    kinds: BTreeMap<String, Kind>,
}

/// What a key path is, as far as the schema can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    Known(Kind),
    /// An entry of a free-form map such as `provider.remote.headers`.
    MapEntry,
    Unknown,
}

impl Schema {
    pub(crate) fn from_default_toml(text: &str) -> Result<Self, String> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| format!("config/default.toml does not parse: {e}"))?;
        let mut kinds = BTreeMap::new();
        collect(&table, "", &mut kinds);
        for (path, kind) in optional_keys(text) {
            kinds.insert(path, kind);
        }
        Ok(Self { kinds })
    }

    pub(crate) fn lookup(&self, path: &str) -> Lookup {
        if let Some(kind) = self.kinds.get(path) {
            return Lookup::Known(*kind);
        }
        match path.rsplit_once('.') {
            Some((parent, _)) if self.kinds.get(parent) == Some(&Kind::Map) => Lookup::MapEntry,
            _ => Lookup::Unknown,
        }
    }

    /// The valid path closest to the unknown `path`, when one is close enough to be a likely typo
    /// (or the same key name in another section).
    pub(crate) fn suggest(&self, path: &str) -> Option<&str> {
        let (parent, name) = split_last(path);
        self.kinds
            .keys()
            .filter_map(|candidate| {
                let (cand_parent, cand_name) = split_last(candidate);
                let mut score = strsim::normalized_damerau_levenshtein(name, cand_name);
                // Prefer the same section on ties, e.g. a typo that matches keys in two sections.
                if cand_parent == parent {
                    score += 0.01;
                }
                (score >= 0.7).then_some((score, candidate.as_str()))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, candidate)| candidate)
    }
}

fn split_last(path: &str) -> (&str, &str) {
    path.rsplit_once('.').unwrap_or(("", path))
}

fn collect(table: &toml::Table, prefix: &str, kinds: &mut BTreeMap<String, Kind>) {
    for (key, value) in table {
        let path = join(prefix, key);
        let kind = match value {
            toml::Value::Table(sub) if sub.is_empty() => Kind::Map,
            toml::Value::Table(sub) => {
                collect(sub, &path, kinds);
                Kind::Section
            }
            toml::Value::Boolean(_) => Kind::Bool,
            toml::Value::Integer(_) => Kind::Int,
            toml::Value::Float(_) => Kind::Float,
            toml::Value::Array(_) => Kind::List,
            // A default such as "30s" makes a duration key (a bare "20" in a default would not).
            toml::Value::String(s) if humantime::parse_duration(s).is_ok() => Kind::Duration,
            toml::Value::String(_) | toml::Value::Datetime(_) => Kind::Str,
        };
        kinds.insert(path, kind);
    }
}

pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Optional keys: `# key = value` comment lines inside a section.
fn optional_keys(text: &str) -> Vec<(String, Kind)> {
    let mut section: Option<String> = None;
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(header.trim().to_owned());
            continue;
        }
        let (Some(section), Some(comment)) = (&section, line.strip_prefix('#')) else {
            continue;
        };
        // Prose comments do not parse as TOML; a commented-out setting does.
        let Ok(entry) = toml::from_str::<toml::Table>(comment.trim()) else {
            continue;
        };
        if entry.len() == 1 {
            let mut one = BTreeMap::new();
            collect(&entry, section, &mut one);
            found.extend(one);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::from_default_toml(crate::config::DEFAULT_TOML).expect("test setup")
    }

    #[test]
    fn reads_active_and_optional_keys() {
        let s = schema();
        assert_eq!(s.lookup("provider"), Lookup::Known(Kind::Section));
        assert_eq!(s.lookup("provider.kind"), Lookup::Known(Kind::Str));
        assert_eq!(
            s.lookup("provider.api_key.key_file"),
            Lookup::Known(Kind::Str)
        );
        assert_eq!(
            s.lookup("streaming.end_of_turn_confidence_threshold"),
            Lookup::Known(Kind::Float)
        );
        assert_eq!(
            s.lookup("streaming.min_turn_silence"),
            Lookup::Known(Kind::Int)
        );
        assert_eq!(
            s.lookup("streaming.filter_profanity"),
            Lookup::Known(Kind::Bool)
        );
        assert_eq!(s.lookup("keys.quit"), Lookup::Known(Kind::List));
        assert_eq!(
            s.lookup("provider.remote.headers"),
            Lookup::Known(Kind::Map)
        );
        assert_eq!(
            s.lookup("provider.remote.headers.X-Anything"),
            Lookup::MapEntry
        );
        assert_eq!(s.lookup("streaming.extra.foo"), Lookup::MapEntry);
        assert_eq!(s.lookup("streaming.extra.foo.bar"), Lookup::Unknown);
        assert_eq!(
            s.lookup("keys.Action"),
            Lookup::Unknown,
            "prose comments are not keys"
        );
        assert_eq!(s.lookup("lines"), Lookup::Unknown);
    }

    #[test]
    fn suggestions() {
        let s = schema();
        assert_eq!(
            s.suggest("streaming.sample_rat"),
            Some("streaming.sample_rate")
        );
        assert_eq!(
            s.suggest("streaming.keytrems_prompt"),
            Some("streaming.keyterms_prompt")
        );
        assert_eq!(
            s.suggest("streaming.region"),
            Some("provider.api_key.region")
        );
        assert_eq!(s.suggest("streming"), Some("streaming"));
        assert_eq!(s.suggest("keys.quitt"), Some("keys.quit"));
        assert_eq!(s.suggest("ui.colour_scheme"), None);
    }

    #[test]
    fn parse_str_by_kind() {
        assert_eq!(
            Kind::Bool.parse_str("TRUE"),
            Some(toml::Value::Boolean(true))
        );
        assert_eq!(Kind::Bool.parse_str("yes"), None);
        assert_eq!(
            Kind::Int.parse_str("16000"),
            Some(toml::Value::Integer(16000))
        );
        assert_eq!(Kind::Int.parse_str("1.5"), None);
        assert_eq!(Kind::Float.parse_str("1"), Some(toml::Value::Float(1.0)));
        assert_eq!(Kind::Float.parse_str("NaN"), None);
        assert_eq!(
            Kind::List.parse_str("txt, srt"),
            Some(toml::Value::Array(vec!["txt".into(), "srt".into()]))
        );
        assert_eq!(Kind::List.parse_str(""), Some(toml::Value::Array(vec![])));
    }
}
