//! What the verbs that change hosts (`run`, `apply`, `join`, `delete`) share about
//! progress: the engine's flags, and where events go.
//!
//! 1. [`EngineArgs`]: `--step-timeout`, `--max-parallel` and `-o/--output`.
//! 2. [`Progress::new`] picks the reporters: lines on stderr (and the log file) always;
//!    with `-o json` also one JSON object per event on stdout ([`JsonLines`]), and
//!    nothing else goes to stdout.
//! 3. [`Progress::finish`] ends the stream with [`Event::Finished`]: the summary, or
//!    the error and the command that resumes ([`resume_command`]); the error returned
//!    to `main` carries the resume command too.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::OutputArgs;
use crate::install::limits::Overrides;
use crate::install::{Event, Finish, Reporter};
use crate::preflight::CheckId;
use crate::printer::Printer;

/// Flags of the verbs that change hosts.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct EngineArgs {
    /// How long a step may take: DURATION for every step, or STEP=DURATION (repeatable),
    /// e.g. --step-timeout blobs=2h --step-timeout init=20m.
    #[arg(long = "step-timeout", value_name = "[STEP=]DURATION")]
    pub step_timeout: Vec<String>,
    /// How many hosts are worked on at once (default 32, or spec.maxParallel).
    #[arg(long = "max-parallel", value_name = "N")]
    pub max_parallel: Option<usize>,
    /// Go on although these preflight checks fail: CHECK[,CHECK...] or all (see
    /// `docs/preflight.md`; reach, auth and sudo cannot be ignored).
    #[arg(long = "ignore-preflight-errors", value_name = "CHECKS")]
    pub ignore_preflight_errors: Vec<String>,
    /// Output format: text for people (on stderr), or json: one event per line on stdout.
    #[command(flatten)]
    pub format: OutputArgs,
}

impl EngineArgs {
    /// The limits given on the command line (bad values exit 2).
    pub fn overrides(&self) -> anyhow::Result<Overrides> {
        if self.max_parallel == Some(0) {
            return Err(super::bad_input("--max-parallel must be at least 1"));
        }
        let mut o = Overrides {
            max_parallel: self.max_parallel,
            ..Overrides::default()
        };
        o.parse_step_timeouts(&self.step_timeout)
            .map_err(super::bad_input)?;
        Ok(o)
    }

    /// The preflight checks `--ignore-preflight-errors` names (bad names exit 2).
    pub fn ignored_checks(&self) -> anyhow::Result<BTreeSet<CheckId>> {
        let mut out = BTreeSet::new();
        for text in &self.ignore_preflight_errors {
            out.extend(
                CheckId::parse_list(text)
                    .map_err(|e| super::bad_input(format!("--ignore-preflight-errors: {e}")))?,
            );
        }
        Ok(out)
    }
}

/// Prints each event as one JSON object on one line of stdout.
pub struct JsonLines {
    out: Mutex<std::io::Stdout>,
}

impl JsonLines {
    /// On this process's stdout.
    pub fn stdout() -> Self {
        Self {
            out: Mutex::new(std::io::stdout()),
        }
    }
}

impl Reporter for JsonLines {
    fn event(&self, event: Event) {
        if let (Ok(line), Ok(out)) = (serde_json::to_string(&event), self.out.lock()) {
            let mut out = out.lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// The command line that runs this operation again (it resumes: finished steps are
/// skipped), quoted for a shell.
pub fn resume_command() -> String {
    std::env::args()
        .map(|a| crate::remote::quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where the events of one operation go, and how it ends.
pub struct Progress {
    /// Every event goes here.
    pub reporter: Arc<dyn Reporter>,
    json: bool,
    printer: Printer,
    started: Instant,
}

impl Progress {
    /// Send events to `human` (lines) and, with `-o json`, as JSON lines to stdout too.
    pub fn new(human: Arc<dyn Reporter>, format: OutputArgs, printer: Printer) -> Self {
        let json = format.is_json();
        let reporter: Arc<dyn Reporter> = if json {
            Arc::new(Tee(vec![human, Arc::new(JsonLines::stdout())]))
        } else {
            human
        };
        Self {
            reporter,
            json,
            printer,
            started: Instant::now(),
        }
    }

    /// Whether JSON lines go to stdout.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// A result line: stdout for people, stderr when stdout carries JSON.
    pub fn result(&self, line: impl AsRef<str>) {
        if self.json {
            self.printer.status(line);
        } else {
            self.printer.result(line);
        }
    }

    /// End the stream: [`Event::Finished`] with `summary`, or with the error and the
    /// resume command; an error comes back with the resume command added.
    pub fn finish(&self, result: anyhow::Result<String>) -> anyhow::Result<()> {
        let elapsed_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok(summary) => {
                self.reporter.event(Event::Finished {
                    result: Finish::Ok {
                        summary: summary.clone(),
                    },
                    elapsed_ms,
                });
                self.result(summary);
                Ok(())
            }
            Err(e) => {
                let resume = resume_command();
                self.reporter.event(Event::Finished {
                    result: Finish::Failed {
                        error: format!("{e:#}"),
                        resume: resume.clone(),
                    },
                    elapsed_ms,
                });
                if e.chain().any(|c| c.is::<super::BadInput>()) {
                    Err(e)
                } else {
                    Err(anyhow::anyhow!(
                        "{e:#}\n  fix the cause, then resume (finished steps are skipped):\n    {resume}"
                    ))
                }
            }
        }
    }
}

/// Sends every event to each reporter in turn.
pub struct Tee(pub Vec<Arc<dyn Reporter>>);

impl Reporter for Tee {
    fn event(&self, event: Event) {
        for r in &self.0 {
            r.event(event.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_limits_are_bad_input_and_good_ones_parse() {
        let bad = EngineArgs {
            max_parallel: Some(0),
            ..EngineArgs::default()
        };
        let err = bad.overrides().unwrap_err();
        assert!(err.is::<super::super::BadInput>(), "{err}");
        let typo = EngineArgs {
            step_timeout: vec!["blob=1h".into()],
            ..EngineArgs::default()
        };
        let err = typo.overrides().unwrap_err().to_string();
        assert!(err.contains("unknown step \"blob\""), "{err}");
        let good = EngineArgs {
            step_timeout: vec!["blobs=1h".into(), "5m".into()],
            max_parallel: Some(4),
            ..EngineArgs::default()
        };
        let o = good.overrides().unwrap();
        assert_eq!(o.max_parallel, Some(4));
        assert_eq!(o.per_step["blobs"], std::time::Duration::from_secs(3600));
        assert_eq!(o.all_steps, Some(std::time::Duration::from_secs(300)));
    }

    #[test]
    fn a_failure_finishes_with_the_resume_command_and_comes_back_with_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let progress = Progress::new(
            Arc::new(move |e: Event| sink.lock().unwrap().push(e)),
            OutputArgs::default(),
            Printer { quiet: true },
        );
        let err = progress
            .finish(Err(anyhow::anyhow!("step init failed on 198.18.0.2: boom")))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("step init failed on 198.18.0.2: boom\n  fix the cause, then resume"),
            "{err}"
        );
        let events = seen.lock().unwrap();
        let Some(Event::Finished {
            result: Finish::Failed { error, resume },
            ..
        }) = events.last()
        else {
            panic!("{events:?}");
        };
        assert_eq!(error, "step init failed on 198.18.0.2: boom");
        assert!(err.ends_with(resume.as_str()), "{err}");
        let line = serde_json::to_string(events.last().unwrap()).unwrap();
        assert!(
            line.starts_with(r#"{"event":"finished","result":{"status":"failed","error":"#),
            "{line}"
        );
    }
}
