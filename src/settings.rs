//! Settings resolved once from flags, the environment and defaults (in that order of
//! precedence). Commands never read the environment themselves.

use std::path::PathBuf;

/// Every environment variable airlock reads.
pub mod env_vars {
    /// Store directory (`--root`).
    pub const AIRLOCK_ROOT: &str = "AIRLOCK_ROOT";
    /// Disable colour.
    pub const NO_COLOR: &str = "NO_COLOR";
    /// Home directory, for the default store.
    pub const HOME: &str = "HOME";
    /// XDG data directory, for the default store.
    pub const XDG_DATA_HOME: &str = "XDG_DATA_HOME";
    /// Log filter, as tracing-subscriber reads it.
    pub const AIRLOCK_LOG: &str = "AIRLOCK_LOG";
}

/// How read commands print.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Tables and sentences for people.
    #[default]
    Text,
    /// JSON for programs.
    Json,
}

/// What every command gets.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The local store.
    pub root: PathBuf,
    /// `-v` count.
    pub verbosity: u8,
    /// Whether colour is allowed.
    pub color: bool,
    /// The environment, as read at start-up (Clusterfiles may name variables).
    pub env: Env,
}

/// The environment as read once at start-up: airlock's own variables plus any a
/// Clusterfile names (`passwdEnv`, `passwordEnv`), so every variable is kept. Its
/// `Debug` shows names only: values may be passwords.
#[derive(Clone, Default)]
pub struct Env {
    vars: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl Env {
    /// Read the process environment.
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place that reads the environment"
    )]
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// An environment made of the given pairs (for tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The value of `name`, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl Settings {
    /// Apply precedence: flag, then environment, then default.
    pub fn resolve(root: Option<PathBuf>, verbosity: u8, env: &Env) -> Self {
        let root = root
            .or_else(|| env.get(env_vars::AIRLOCK_ROOT).map(PathBuf::from))
            .unwrap_or_else(|| default_root(env));
        Self {
            root,
            verbosity,
            color: env.get(env_vars::NO_COLOR).is_none(),
            env: env.clone(),
        }
    }
}

fn default_root(env: &Env) -> PathBuf {
    if let Some(xdg) = env.get(env_vars::XDG_DATA_HOME) {
        return PathBuf::from(xdg).join("airlock");
    }
    let home = env.get(env_vars::HOME).unwrap_or("/root");
    PathBuf::from(home).join(".local/share/airlock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_env_beats_default() {
        let env = Env::from_pairs([("AIRLOCK_ROOT", "/env"), ("HOME", "/home/u")]);
        let s = Settings::resolve(Some("/flag".into()), 0, &env);
        assert_eq!(s.root, PathBuf::from("/flag"));
        let s = Settings::resolve(None, 0, &env);
        assert_eq!(s.root, PathBuf::from("/env"));
        let s = Settings::resolve(None, 0, &Env::from_pairs([("HOME", "/home/u")]));
        assert_eq!(s.root, PathBuf::from("/home/u/.local/share/airlock"));
        assert!(s.color);
        let s = Settings::resolve(None, 0, &Env::from_pairs([("NO_COLOR", "1")]));
        assert!(!s.color);
    }

    #[test]
    fn debug_shows_names_never_values() {
        let env = Env::from_pairs([("ROOT_PASSWORD", "hunter2")]);
        let shown = format!("{env:?}");
        assert!(shown.contains("ROOT_PASSWORD"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(env.get("ROOT_PASSWORD"), Some("hunter2"));
    }
}
