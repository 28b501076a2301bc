//! Progress events: the engine reports, the app renders (lines, bars, the wizard,
//! `-o json`).
//!
//! 1. [`Event::Plan`] comes first: every host x step the run may do, in order.
//! 2. Then, per host and step: [`Event::Step`] started, then done, skipped or failed
//!    (with how long it took), [`Event::Retry`] between tries, [`Event::Transfer`]
//!    while blobs travel and [`Event::Log`] for each output line.
//! 3. The app ends the stream with [`Event::Finished`] (ok or failed, with the
//!    command that resumes).
//!
//! Every event serializes as one JSON object tagged by `event`.

use std::net::IpAddr;

use serde::Serialize;

use super::engine::StepId;

/// What happened to a step on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum StepState {
    /// It started.
    Started,
    /// It finished.
    Done,
    /// Its marker matched: nothing to do.
    Skipped,
    /// It failed; the message says why.
    Failed(String),
}

/// One progress event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// A step changed state on a host.
    Step {
        /// The host.
        host: IpAddr,
        /// The step.
        step: StepId,
        /// Its new state.
        state: StepState,
        /// Milliseconds since it started (0 when it starts or is skipped).
        #[serde(default)]
        elapsed_ms: u64,
    },
    /// What the run will do, before it starts: every host x step, in order. Steps
    /// already done show up as skipped.
    Plan {
        /// The steps.
        steps: Vec<PlannedStep>,
    },
    /// A step failed and will be tried again after a wait.
    Retry {
        /// The host.
        host: IpAddr,
        /// The step.
        step: StepId,
        /// The try about to start (2, 3, ...).
        attempt: u32,
        /// Tries in all.
        attempts: u32,
        /// Why the last try failed.
        reason: String,
        /// Milliseconds waited before the next try.
        wait_ms: u64,
    },
    /// The whole operation ended.
    Finished {
        /// How it ended.
        result: Finish,
        /// Milliseconds it took.
        elapsed_ms: u64,
    },
    /// Bytes sent to a host so far, out of a total.
    Transfer {
        /// The host.
        host: IpAddr,
        /// Bytes sent.
        sent: u64,
        /// Bytes to send.
        total: u64,
    },
    /// A line of output from a command on a host.
    Log {
        /// The host.
        host: IpAddr,
        /// The line.
        line: String,
    },
}

/// One step of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    /// The host.
    pub host: IpAddr,
    /// The step.
    pub step: StepId,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Finish {
    /// Everything finished.
    Ok {
        /// What was done, in one line.
        summary: String,
    },
    /// It stopped.
    Failed {
        /// The error, with host, step, command and stderr when a step failed.
        error: String,
        /// The command that resumes (finished steps are skipped).
        resume: String,
    },
}

/// Receives progress events. Implementations must be cheap: they are called inline.
pub trait Reporter: Send + Sync {
    /// One event.
    fn event(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> Reporter for F {
    fn event(&self, event: Event) {
        self(event);
    }
}
