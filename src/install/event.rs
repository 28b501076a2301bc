//! Progress events: the engine reports, the app renders (lines, bars, the wizard).

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
