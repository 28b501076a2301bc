//! The terminal wizard: State + Event + Action, after Oxide's wicket.
//!
//! 1. [`State`] holds everything; it is serde so an interrupted session resumes.
//! 2. [`on`] takes one [`Event`] (a key, a tick, something the engine reported),
//!    changes the state and may return one [`Action`]. It does no I/O.
//! 3. [`draw`] renders the state into a frame: it only reads `&State`.
//! 4. [`runner::run_wizard`] owns the terminal, turns input and engine reports into
//!    events on one channel, and is the only place actions are performed, through the
//!    [`WizardEngine`] the app provides (the same preflight and install code as the CLI).
//!
//! Screens (one module each under `screens/`): Welcome, Hosts, Credentials, Settings,
//! Preflight, Summary, Install, Result. `Ctrl-N` and `Ctrl-B` move between them; the
//! bottom line always shows the keys.

pub mod action;
pub mod event;
pub mod hostkeys;
pub mod runner;
pub mod screens;
pub mod state;
pub mod widgets;

pub use action::Action;
pub use event::{Event, InstallResult, Key};
pub use runner::{WizardEngine, WizardInput, WizardOutcome, run_wizard};
pub use state::{Screen, State};

use ratatui::Frame;

use crate::install::{self, StepState};
use crate::preflight::Status;
use state::{HostKeys, KeyStatus, Outcome, Verify};

/// Apply one event; the action, if any, is for the runner to perform.
pub fn on(state: &mut State, event: Event) -> Option<Action> {
    match event {
        Event::Start => start(state),
        Event::Key(key) => on_key(state, key),
        Event::Tick(ms) => {
            state.dashboard.now_ms = ms;
            None
        }
        Event::VerifyProgress { done, total } => {
            state.verify = Verify::Running { done, total };
            None
        }
        Event::Verified(result) => {
            state.verify = match result {
                Ok(()) => Verify::Passed,
                Err(reason) => Verify::Failed { reason },
            };
            None
        }
        Event::HostKeys(rows) => {
            host_keys_fetched(state, rows);
            None
        }
        Event::HostKeysTrusted(result) => {
            if let Err(e) = result {
                state.notice = Some(format!("Could not record the host keys: {e}"));
            }
            None
        }
        Event::Finding(f) => {
            let p = &mut state.preflight;
            p.findings
                .retain(|o| !(o.host == f.host && o.check == f.check));
            p.findings.push(f);
            None
        }
        Event::PreflightDone(result) => {
            let p = &mut state.preflight;
            p.running = false;
            p.finished = true;
            p.error = result.err();
            None
        }
        Event::Install(e) => {
            install_event(state, e);
            None
        }
        Event::InstallDone(result) => {
            install_done(state, result);
            None
        }
        Event::Saved(result) => {
            match result {
                Ok(path) => {
                    state.notice = Some(format!("Saved {}", path.display()));
                    state.summary.saved = Some(path);
                    state.summary.error = None;
                }
                Err(e) => state.summary.error = Some(e),
            }
            None
        }
        Event::SupportBundle(result) => {
            match result {
                Ok(path) => {
                    state.notice = Some(format!("Support bundle: {}", path.display()));
                    state.support_bundle = Some(path);
                }
                Err(e) => state.notice = Some(format!("Support bundle failed: {e}")),
            }
            None
        }
    }
}

fn start(state: &mut State) -> Option<Action> {
    // Work that was running when the session stopped is not running now.
    state.preflight.running = false;
    state.dashboard.running = false;
    if matches!(state.credentials.host_keys, HostKeys::Scanning { .. }) {
        state.credentials.host_keys = HostKeys::NotScanned;
    }
    state.confirm_quit = false;
    if state.screen == Screen::Install {
        state.screen = Screen::Summary;
    }
    match state.verify {
        Verify::Passed => None,
        _ => {
            state.verify = Verify::Running { done: 0, total: 0 };
            Some(Action::Verify)
        }
    }
}

fn on_key(state: &mut State, key: Key) -> Option<Action> {
    if state.confirm_quit {
        match key {
            Key::Char('y' | 'Y') => return Some(Action::Quit),
            Key::Char('n' | 'N') | Key::Esc | Key::CtrlC => state.confirm_quit = false,
            _ => {}
        }
        return None;
    }
    state.notice = None;
    match key {
        Key::CtrlC => {
            state.confirm_quit = true;
            None
        }
        Key::CtrlN => next(state),
        Key::CtrlB => {
            back(state);
            None
        }
        key => screens::on_key(state, key),
    }
}

/// Go forward if the current screen is complete; otherwise say what is missing.
pub fn next(state: &mut State) -> Option<Action> {
    match state.screen {
        Screen::Welcome => match &state.verify {
            Verify::Passed => state.screen = Screen::Hosts,
            Verify::Failed { .. } => {
                state.notice = Some("The bundle is damaged: get a new copy".to_string());
            }
            _ => state.notice = Some("Wait for the verification to finish".to_string()),
        },
        Screen::Hosts => {
            if !state.hosts.entry.ips.trim().is_empty()
                && let Err(e) = state.hosts.commit_entry()
            {
                state.notice = Some(e);
                return None;
            }
            match state.hosts.problems().errors.first() {
                Some(e) => state.notice = Some(e.clone()),
                None => state.screen = Screen::Credentials,
            }
        }
        Screen::Credentials => match state.credentials.problem() {
            Some(p) => state.notice = Some(p),
            None => return accept_host_keys(state),
        },
        Screen::Settings => {
            let fields = state::SettingsForm::fields(&state.image.params);
            if let Some((f, p)) = fields
                .iter()
                .find_map(|f| state.settings.field_problem(*f).map(|p| (*f, p)))
            {
                state.notice = Some(format!("{}: {p}", screens::settings::label(state, f)));
                return None;
            }
            state.screen = Screen::Preflight;
            return start_preflight(state);
        }
        Screen::Preflight => {
            if state.preflight.running {
                state.notice = Some("Wait for the checks to finish".to_string());
            } else if state.preflight.is_passed() {
                state.screen = Screen::Summary;
                return Some(save_action(state));
            } else {
                state.notice =
                    Some("Fix the failed checks and press r, or skip them with s".to_string());
            }
        }
        Screen::Summary => return start_install(state),
        Screen::Install | Screen::Result => {}
    }
    None
}

/// Leaving Credentials: fetch the hosts' keys first, then (on the next Ctrl-N) accept
/// the new ones and go on. Hosts behind a bastion are trusted on first use instead.
fn accept_host_keys(state: &mut State) -> Option<Action> {
    let targets = state.key_targets();
    let keys = &mut state.credentials.host_keys;
    if !state.credentials.bastion.trim().is_empty() {
        state.screen = Screen::Settings;
        return None;
    }
    match keys {
        HostKeys::Accepted { targets: accepted } if *accepted == targets => {
            state.screen = Screen::Settings;
            None
        }
        HostKeys::Scanning { .. } => {
            state.notice = Some("Wait: fetching the hosts' keys".to_string());
            None
        }
        HostKeys::Scanned { rows, .. } if rows.iter().map(|r| &r.target).eq(targets.iter()) => {
            if let Some(row) = rows
                .iter()
                .find(|r| matches!(r.status, KeyStatus::Changed { .. }))
            {
                state.notice = Some(format!(
                    "{}: its host key changed (see above)",
                    row.target.label()
                ));
                return None;
            }
            let new: Vec<_> = rows
                .iter()
                .filter(|r| r.status == KeyStatus::New)
                .cloned()
                .collect();
            *keys = HostKeys::Accepted { targets };
            state.screen = Screen::Settings;
            (!new.is_empty()).then_some(Action::TrustHostKeys { rows: new })
        }
        _ => {
            *keys = HostKeys::Scanning {
                targets: targets.clone(),
            };
            Some(Action::ScanHostKeys { targets })
        }
    }
}

/// The keys arrived: show them, unless the hosts changed meanwhile.
fn host_keys_fetched(state: &mut State, rows: Vec<state::HostKeyRow>) {
    let keys = &mut state.credentials.host_keys;
    let HostKeys::Scanning { targets } = keys else {
        return;
    };
    if !rows.iter().map(|r| &r.target).eq(targets.iter()) {
        return;
    }
    let new = rows.iter().filter(|r| r.status == KeyStatus::New).count();
    state.notice = Some(if new == 0 {
        "Every host key is already known: Ctrl-N to go on".to_string()
    } else {
        format!("{new} new host keys: compare them, then Ctrl-N accepts them")
    });
    *keys = HostKeys::Scanned { rows, scroll: 0 };
}

fn back(state: &mut State) {
    state.screen = match state.screen {
        Screen::Hosts => Screen::Welcome,
        Screen::Credentials => Screen::Hosts,
        Screen::Settings => Screen::Credentials,
        Screen::Preflight if !state.preflight.running => Screen::Settings,
        Screen::Summary => Screen::Preflight,
        other => other,
    };
}

/// Resolve the forms and ask for preflight.
pub fn start_preflight(state: &mut State) -> Option<Action> {
    match state.to_spec() {
        Ok(spec) => {
            let p = &mut state.preflight;
            p.running = true;
            p.error = None;
            p.findings.clear();
            p.confirm_skip = None;
            Some(Action::Preflight {
                spec: Box::new(spec),
                skip: p.skipped.clone(),
            })
        }
        Err(e) => {
            state.preflight.error = Some(e.to_string());
            None
        }
    }
}

/// Save the Clusterfile as the Summary shows it.
pub fn save_action(state: &State) -> Action {
    Action::SaveClusterfile {
        yaml: state.to_yaml(state.summary.include_secrets),
    }
}

/// Start (or retry) the install.
pub fn start_install(state: &mut State) -> Option<Action> {
    match state.to_spec() {
        Ok(spec) => {
            state.screen = Screen::Install;
            state.outcome = None;
            let ips = state.host_ips();
            let d = &mut state.dashboard;
            d.running = true;
            for ip in ips {
                let h = d.hosts.entry(ip).or_default();
                h.failed = None;
                h.steps_done = 0;
            }
            Some(Action::Install {
                spec: Box::new(spec),
                skip: state.dashboard.skipped_steps.clone(),
            })
        }
        Err(e) => {
            state.notice = Some(e.to_string());
            None
        }
    }
}

fn install_event(state: &mut State, event: install::Event) {
    let d = &mut state.dashboard;
    let now = d.now_ms;
    match event {
        install::Event::Step {
            host, step, state, ..
        } => {
            let h = d.hosts.entry(host).or_default();
            h.step = Some(step.as_str().to_string());
            match state {
                StepState::Started => {}
                StepState::Done | StepState::Skipped => h.steps_done += 1,
                StepState::Failed(reason) => h.failed = Some(reason),
            }
        }
        install::Event::Transfer { host, sent, total } => {
            let h = d.hosts.entry(host).or_default();
            if h.transfer_started_ms.is_none() {
                h.transfer_started_ms = Some(now);
            }
            h.sent = sent;
            h.total = total;
        }
        install::Event::Retry {
            host, step, reason, ..
        } => {
            let h = d.hosts.entry(host).or_default();
            h.log.push(format!("{step} failed, trying again: {reason}"));
            if h.log.len() > state::LOG_LINES {
                h.log.remove(0);
            }
        }
        install::Event::Plan { .. } | install::Event::Finished { .. } => {}
        install::Event::Log { host, line } => {
            let h = d.hosts.entry(host).or_default();
            h.log.push(line);
            if h.log.len() > state::LOG_LINES {
                h.log.remove(0);
            }
        }
    }
}

fn install_done(state: &mut State, result: InstallResult) {
    state.dashboard.running = false;
    state.screen = Screen::Result;
    state.outcome = Some(match result {
        InstallResult::Done {
            endpoints,
            kubeconfig,
            log_file,
        } => Outcome::Success {
            endpoints,
            kubeconfig,
            log_file,
        },
        InstallResult::Failed { host, step, cause } => Outcome::Failure {
            host,
            fix: screens::result::fix_for(step, &cause),
            step: step.map(|s| s.as_str().to_string()),
            cause,
        },
    });
}

/// Render the state. Pure: reads `state`, writes `frame`.
pub fn draw(state: &State, frame: &mut Frame<'_>) {
    screens::draw(state, frame);
}

/// Whether a finding needs the user's attention.
pub fn is_problem(status: Status) -> bool {
    matches!(status, Status::Fail | Status::Warn)
}
