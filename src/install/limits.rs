//! How long a step may take, how often it is tried, and how many hosts are worked on
//! at once.
//!
//! 1. [`Limits::from_spec`] starts from the defaults per [`StepId`]
//!    ([`default_timeout`]), then applies the Clusterfile's `spec.stepTimeouts` and
//!    `spec.maxParallel` (apiVersion `airlock.dev/v1`), then the command line's
//!    `--step-timeout` and `--max-parallel` (the app passes them in [`Overrides`]).
//! 2. The engine runs each step under [`Limits::timeout`]; a step that runs past it
//!    fails with host, step, the command that was running and "timed out after Ns".
//! 3. Steps that are safe to run again ([`is_retryable`]: transfers, unpack, registry
//!    start, mirrors) get [`Limits::attempts`] tries, waiting [`Limits::backoff`]
//!    times 1, 2, 4... between them; the others (init, join, launch, plugins) run once.
//! 4. The per-host loops run at most [`Limits::max_parallel`] hosts at once.

use std::collections::BTreeMap;
use std::time::Duration;

use super::engine::{Phase, StepId};
use crate::spec::clusterfile::ClusterSpec;
use crate::spec::engine_fields::parse_duration;

/// Hosts worked on at once when nothing says otherwise.
pub const DEFAULT_MAX_PARALLEL: usize = 32;
/// Tries of a retryable step when nothing says otherwise.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// The first wait between tries; it doubles each time.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(2);

/// Limits given on the command line; they win over the Clusterfile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--step-timeout DURATION`: every step.
    pub all_steps: Option<Duration>,
    /// `--step-timeout STEP=DURATION`: one step (by [`StepId::as_str`] name).
    pub per_step: BTreeMap<String, Duration>,
    /// `--max-parallel N`.
    pub max_parallel: Option<usize>,
}

/// The limits an install runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Per step name, overriding [`default_timeout`].
    pub timeouts: BTreeMap<String, Duration>,
    /// One timeout for every step not named in `timeouts`.
    pub all_steps: Option<Duration>,
    /// Hosts worked on at once (at least 1).
    pub max_parallel: usize,
    /// Tries of a retryable step (at least 1).
    pub attempts: u32,
    /// The first wait between tries.
    pub backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeouts: BTreeMap::new(),
            all_steps: None,
            max_parallel: DEFAULT_MAX_PARALLEL,
            attempts: DEFAULT_ATTEMPTS,
            backoff: DEFAULT_BACKOFF,
        }
    }
}

/// A `--step-timeout` value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Not `DURATION` nor `STEP=DURATION` with a known step.
    #[error("--step-timeout {value:?}: {reason}")]
    StepTimeout {
        /// What was given.
        value: String,
        /// Why it is refused and what to write.
        reason: String,
    },
}

impl Limits {
    /// The Clusterfile's limits, then `overrides` on top.
    pub fn from_spec(spec: &ClusterSpec, overrides: &Overrides) -> Self {
        let mut limits = Self {
            timeouts: spec.step_timeouts.clone(),
            max_parallel: spec.max_parallel.unwrap_or(DEFAULT_MAX_PARALLEL),
            ..Self::default()
        };
        if let Some(all) = overrides.all_steps {
            limits.timeouts.clear();
            limits.all_steps = Some(all);
        }
        limits.timeouts.extend(overrides.per_step.clone());
        if let Some(n) = overrides.max_parallel {
            limits.max_parallel = n;
        }
        limits.max_parallel = limits.max_parallel.max(1);
        limits
    }

    /// How long `step` may run.
    pub fn timeout(&self, step: StepId) -> Duration {
        self.timeouts
            .get(step.as_str())
            .or_else(|| match step {
                StepId::Plugin(_) => self.timeouts.get("plugin"),
                _ => None,
            })
            .copied()
            .or(self.all_steps)
            .unwrap_or_else(|| default_timeout(step))
    }

    /// How many times `step` is tried.
    pub fn attempts(&self, step: StepId) -> u32 {
        if is_retryable(step) {
            self.attempts.max(1)
        } else {
            1
        }
    }

    /// The wait before try number `attempt` (2, 3, ...): backoff, doubled each time.
    pub fn backoff_before(&self, attempt: u32) -> Duration {
        self.backoff * 2u32.saturating_pow(attempt.saturating_sub(2))
    }
}

impl Overrides {
    /// Parse the values of `--step-timeout`: `DURATION` (every step) or
    /// `STEP=DURATION`; `STEP` is a step name (`blobs`, `init`, `plugin-pre-install`,
    /// or `plugin` for every plugin phase).
    pub fn parse_step_timeouts(&mut self, values: &[String]) -> Result<(), LimitError> {
        for value in values {
            let err = |reason: String| LimitError::StepTimeout {
                value: value.clone(),
                reason,
            };
            match value.split_once('=') {
                Some((step, d)) => {
                    let step = step.trim();
                    if !is_step_name(step) {
                        return Err(err(format!(
                            "unknown step {step:?}; use one of {}",
                            step_names().join(", ")
                        )));
                    }
                    self.per_step
                        .insert(step.to_string(), parse_duration(d).map_err(err)?);
                }
                None => self.all_steps = Some(parse_duration(value).map_err(err)?),
            }
        }
        Ok(())
    }
}

/// Whether running `step` again after a failure is safe: it only copies, unpacks or
/// (re)starts what the engine owns. Init, join, launch and plugins run the image's
/// own scripts, which may not be.
pub fn is_retryable(step: StepId) -> bool {
    matches!(
        step,
        StepId::Prepare | StepId::Blobs | StepId::Unpack | StepId::Registry | StepId::Mirrors
    )
}

/// How long `step` may take by default: transfers and the runtime's scripts get long,
/// small configuration steps short.
pub fn default_timeout(step: StepId) -> Duration {
    let minutes = match step {
        StepId::Prepare | StepId::Registry | StepId::Mirrors => 10,
        StepId::Blobs => 120,
        StepId::Unpack
        | StepId::Init
        | StepId::Join
        | StepId::Ready
        | StepId::Launch
        | StepId::Plugin(_) => 30,
        StepId::Clean => 20,
    };
    Duration::from_secs(minutes * 60)
}

/// Every name `--step-timeout STEP=...` and `spec.stepTimeouts` accept.
pub fn step_names() -> Vec<&'static str> {
    let mut names = vec![
        StepId::Prepare.as_str(),
        StepId::Blobs.as_str(),
        StepId::Unpack.as_str(),
        StepId::Registry.as_str(),
        StepId::Mirrors.as_str(),
        StepId::Init.as_str(),
        StepId::Join.as_str(),
        StepId::Ready.as_str(),
        StepId::Launch.as_str(),
        StepId::Clean.as_str(),
        "plugin",
    ];
    names.extend(Phase::ALL.into_iter().map(|p| StepId::Plugin(p).as_str()));
    names
}

/// Whether `name` is one of [`step_names`].
pub fn is_step_name(name: &str) -> bool {
    step_names().contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::clusterfile::Clusterfile;

    #[test]
    fn command_line_wins_over_clusterfile_wins_over_defaults() {
        let yaml = "apiVersion: airlock.dev/v1\nkind: Cluster\nspec:\n  ssh: {passwd: x}\n  maxParallel: 4\n  stepTimeouts: {blobs: 1h, plugin: 5m}\n  hosts:\n  - ips: [198.18.0.2]\n    roles: [master]\n";
        let spec = Clusterfile::parse("cf", yaml)
            .unwrap()
            .resolve(&|_| None)
            .unwrap();
        let from_file = Limits::from_spec(&spec, &Overrides::default());
        assert_eq!(from_file.max_parallel, 4);
        assert_eq!(from_file.timeout(StepId::Blobs), Duration::from_secs(3600));
        assert_eq!(
            from_file.timeout(StepId::Plugin(Phase::PreInstall)),
            Duration::from_secs(300)
        );
        assert_eq!(
            from_file.timeout(StepId::Init),
            default_timeout(StepId::Init)
        );
        let mut cli = Overrides {
            max_parallel: Some(2),
            ..Overrides::default()
        };
        cli.parse_step_timeouts(&["20m".to_string(), "init=1m".to_string()])
            .unwrap();
        let both = Limits::from_spec(&spec, &cli);
        assert_eq!(both.max_parallel, 2);
        assert_eq!(both.timeout(StepId::Blobs), Duration::from_secs(1200));
        assert_eq!(both.timeout(StepId::Init), Duration::from_secs(60));
        let err = cli
            .parse_step_timeouts(&["inti=1m".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown step \"inti\"") && err.contains("init"),
            "{err}"
        );
    }

    #[test]
    fn only_steps_safe_to_repeat_are_retried_with_growing_waits() {
        let limits = Limits::default();
        assert_eq!(limits.attempts(StepId::Blobs), DEFAULT_ATTEMPTS);
        assert_eq!(limits.attempts(StepId::Registry), DEFAULT_ATTEMPTS);
        assert_eq!(limits.attempts(StepId::Init), 1);
        assert_eq!(limits.attempts(StepId::Plugin(Phase::PostInstall)), 1);
        assert_eq!(limits.backoff_before(2), DEFAULT_BACKOFF);
        assert_eq!(limits.backoff_before(3), DEFAULT_BACKOFF * 2);
    }
}
