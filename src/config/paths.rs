//! Where aai-live keeps its files, after the XDG base directory specification with the usual
//! `$HOME` fallbacks.
//!
//! The `*_with` variants take the environment as a lookup function so that tests (and
//! [`super::EnvSource::Vars`]) never have to modify the process environment.

use std::ffi::OsString;
use std::path::PathBuf;

const APP: &str = "aai-live";

/// Looks up an environment variable.
pub(crate) type GetEnv<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The default user config file, `$XDG_CONFIG_HOME/aai-live/config.toml` (fallback
/// `~/.config/aai-live/config.toml`). The file may not exist; `None` only when neither variable
/// gives a usable directory.
pub fn config_file() -> Option<PathBuf> {
    config_file_with(&|name| std::env::var_os(name))
}

/// Where logs go: `$XDG_STATE_HOME/aai-live` (fallback `~/.local/state/aai-live`, then the
/// system temporary directory: logs are disposable).
pub fn state_dir() -> PathBuf {
    app_dir(
        &|name| std::env::var_os(name),
        "XDG_STATE_HOME",
        ".local/state",
    )
    .unwrap_or_else(|| std::env::temp_dir().join(APP))
}

/// Where data such as transcripts goes: `$XDG_DATA_HOME/aai-live` (fallback
/// `~/.local/share/aai-live`, then `./aai-live`: transcripts must survive, unlike logs).
pub fn data_dir() -> PathBuf {
    app_dir(
        &|name| std::env::var_os(name),
        "XDG_DATA_HOME",
        ".local/share",
    )
    .unwrap_or_else(|| PathBuf::from(APP))
}

pub(crate) fn config_file_with(env: GetEnv<'_>) -> Option<PathBuf> {
    app_dir(env, "XDG_CONFIG_HOME", ".config").map(|dir| dir.join("config.toml"))
}

/// `$<var>/aai-live`, or `$HOME/<home_relative>/aai-live`.
fn app_dir(env: GetEnv<'_>, var: &str, home_relative: &str) -> Option<PathBuf> {
    // The spec says relative XDG paths are invalid and must be ignored; an empty value counts as
    // unset.
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(base) = absolute(var) {
        return Some(base.join(APP));
    }
    absolute("HOME").map(|home| home.join(home_relative).join(APP))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into())
    }

    #[test]
    fn xdg_variable_wins_over_home() {
        let env = env_of(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/home/u")]);
        assert_eq!(
            config_file_with(&env),
            Some(PathBuf::from("/xdg/aai-live/config.toml"))
        );
    }

    #[test]
    fn falls_back_to_home_when_xdg_unset_empty_or_relative() {
        for xdg in [None, Some(""), Some("relative/dir")] {
            let mut vars = vec![("HOME", "/home/u")];
            vars.extend(xdg.map(|x| ("XDG_STATE_HOME", x)));
            let env = env_of(&vars);
            assert_eq!(
                app_dir(&env, "XDG_STATE_HOME", ".local/state"),
                Some(PathBuf::from("/home/u/.local/state/aai-live"))
            );
        }
    }

    #[test]
    fn none_without_any_base() {
        assert_eq!(config_file_with(&env_of(&[])), None);
    }
}
