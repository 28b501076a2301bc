//! What happens to the wizard: keys, time, and what the engine reports.
//!
//! 1. The runner turns terminal input into [`Key`]s and sends [`Event::Tick`] with the
//!    time since the wizard started (the state never reads a clock).
//! 2. Work started by an [`super::Action`] reports back as events on the same channel:
//!    verification progress, preflight findings, install progress, results.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::state::HostKeyRow;
use crate::install;
use crate::preflight::Finding;

/// A key, reduced to what the wizard uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Key {
    /// A printable character.
    Char(char),
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Tab.
    Tab,
    /// Shift-Tab.
    BackTab,
    /// Backspace.
    Backspace,
    /// Delete.
    Delete,
    /// Arrow up.
    Up,
    /// Arrow down.
    Down,
    /// Arrow left.
    Left,
    /// Arrow right.
    Right,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// Ctrl-C.
    CtrlC,
    /// Ctrl-N: next screen.
    CtrlN,
    /// Ctrl-B: previous screen.
    CtrlB,
}

impl Key {
    /// The wizard's key for a crossterm key press, if it uses it.
    pub fn from_crossterm(event: &crossterm::event::KeyEvent) -> Option<Self> {
        use crossterm::event::{KeyCode, KeyEventKind, KeyModifiers};
        if event.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = event.modifiers.contains(KeyModifiers::CONTROL);
        Some(match event.code {
            KeyCode::Char('c') if ctrl => Self::CtrlC,
            KeyCode::Char('n') if ctrl => Self::CtrlN,
            KeyCode::Char('b') if ctrl => Self::CtrlB,
            KeyCode::Char(_) if ctrl => return None,
            KeyCode::Char(c) => Self::Char(c),
            KeyCode::Enter => Self::Enter,
            KeyCode::Esc => Self::Esc,
            KeyCode::Tab => Self::Tab,
            KeyCode::BackTab => Self::BackTab,
            KeyCode::Backspace => Self::Backspace,
            KeyCode::Delete => Self::Delete,
            KeyCode::Up => Self::Up,
            KeyCode::Down => Self::Down,
            KeyCode::Left => Self::Left,
            KeyCode::Right => Self::Right,
            KeyCode::PageUp => Self::PageUp,
            KeyCode::PageDown => Self::PageDown,
            _ => return None,
        })
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// The wizard starts (or resumes).
    Start,
    /// A key was pressed.
    Key(Key),
    /// Time passed: milliseconds since the wizard started.
    Tick(u64),
    /// Verification progress.
    VerifyProgress {
        /// Bytes checked.
        done: u64,
        /// Bytes to check.
        total: u64,
    },
    /// Verification ended.
    Verified(Result<(), String>),
    /// The hosts' keys were fetched.
    HostKeys(Vec<HostKeyRow>),
    /// The accepted keys were recorded (or not).
    HostKeysTrusted(Result<(), String>),
    /// A preflight finding.
    Finding(Finding),
    /// Preflight ended; an error means it could not run at all.
    PreflightDone(Result<(), String>),
    /// Install progress.
    Install(install::Event),
    /// The install ended.
    InstallDone(InstallResult),
    /// The Clusterfile was saved (or not).
    Saved(Result<PathBuf, String>),
    /// The support bundle was written (or not).
    SupportBundle(Result<PathBuf, String>),
}

/// How an install ended, as the engine reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum InstallResult {
    /// Every step done.
    Done {
        /// Endpoints to show.
        endpoints: Vec<String>,
        /// The kubeconfig, if one was fetched.
        kubeconfig: Option<PathBuf>,
        /// The install log.
        log_file: Option<PathBuf>,
    },
    /// A step failed.
    Failed {
        /// The host.
        host: Option<IpAddr>,
        /// The step.
        step: Option<install::StepId>,
        /// The cause.
        cause: String,
    },
}
