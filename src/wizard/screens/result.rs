//! Screen 8: where the cluster is and what to do next; or, on failure, the host,
//! step, cause and fix, with retry, edit, support bundle and quit.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::{Body, panel};
use crate::install::StepId;
use crate::wizard::event::Key;
use crate::wizard::state::{Outcome, Screen, State};
use crate::wizard::widgets::Theme;
use crate::wizard::{Action, start_install};

/// A fix for a failed step, from the step and the words of the cause.
pub fn fix_for(step: Option<StepId>, cause: &str) -> String {
    let lower = cause.to_lowercase();
    if lower.contains("authentication") || lower.contains("password") {
        return "correct the user, password or key (e: edit), then r to retry".to_string();
    }
    if lower.contains("no space") {
        return "free disk space on the host (or move the data root), then retry".to_string();
    }
    if lower.contains("connect") || lower.contains("timed out") {
        return "check the host is up and reachable on its SSH port, then retry".to_string();
    }
    match step {
        Some(StepId::Blobs) => "retry: transfers resume where they stopped".to_string(),
        Some(StepId::Registry) => {
            "check the registry port is free on the first master, then retry".to_string()
        }
        Some(StepId::Launch) => {
            "read the log of the first master (support bundle: w), fix, then retry".to_string()
        }
        _ => "fix the cause shown above, then retry: finished steps are skipped".to_string(),
    }
}

/// On failure: `r` retries, `s` skips the failed step (after a confirmation) and goes
/// on, `e` goes back to edit, `w` writes a support bundle.
pub fn on_key(state: &mut State, key: Key) -> Option<Action> {
    let Some(Outcome::Failure { host, step, .. }) = &state.outcome else {
        return None;
    };
    let failed = host.zip(step.clone());
    if state.dashboard.confirm_skip {
        state.dashboard.confirm_skip = false;
        return match (key, failed) {
            (Key::Char('y' | 'Y'), Some(step)) => {
                state.dashboard.skipped_steps.push(step);
                start_install(state)
            }
            _ => None,
        };
    }
    match key {
        Key::Char('r') => start_install(state),
        Key::Char('s') => {
            match failed {
                Some((host, step)) => {
                    state.dashboard.confirm_skip = true;
                    state.notice = Some(format!(
                        "Skip {step} on {host}? It is recorded as done and not run again. y: skip and go on, n: no"
                    ));
                }
                None => {
                    state.notice =
                        Some("Nothing to skip: the install stopped before any host".to_string());
                }
            }
            None
        }
        Key::Char('e') => {
            state.screen = Screen::Hosts;
            None
        }
        Key::Char('w') => Some(Action::SupportBundle {
            yaml: state.to_yaml(false),
        }),
        _ => None,
    }
}

/// Draw it.
pub fn draw<'a>(state: &State, frame: &mut Frame<'_>, area: Rect, theme: Theme) -> Body<'a> {
    let saved = state
        .summary
        .saved
        .as_ref()
        .map_or("not saved".to_string(), |p| p.display().to_string());
    let (title, lines, help) = match &state.outcome {
        Some(Outcome::Success {
            endpoints,
            kubeconfig,
            log_file,
        }) => {
            let mut v = vec![
                Line::default(),
                Line::from(Span::styled("  The cluster is installed.", theme.ok())),
                Line::default(),
            ];
            for e in endpoints {
                v.push(Line::from(format!("  Endpoint     {e}")));
            }
            let kube = kubeconfig.as_ref().map_or(
                "on the first master: /etc/kubernetes/admin.conf".to_string(),
                |p| p.display().to_string(),
            );
            v.push(Line::from(format!("  Kubeconfig   {kube}")));
            if let Some(log) = log_file {
                v.push(Line::from(format!("  Install log  {}", log.display())));
            }
            v.push(Line::from(format!("  Clusterfile  {saved}")));
            v.push(Line::default());
            v.push(Line::from("  Next:"));
            v.push(Line::from(format!(
                "    kubectl --kubeconfig {kube} get nodes"
            )));
            v.push(Line::from(format!("    FILE.run install -f {saved} --yes")));
            ("Installed", v, vec![])
        }
        Some(Outcome::Failure {
            host,
            step,
            cause,
            fix,
        }) => {
            let mut v = vec![
                Line::default(),
                Line::from(Span::styled("  The install stopped.", theme.error())),
                Line::default(),
                Line::from(format!(
                    "  Host   {}",
                    host.map_or("-".to_string(), |h| h.to_string())
                )),
                Line::from(format!(
                    "  Step   {}",
                    step.clone().unwrap_or_else(|| "-".to_string())
                )),
                Line::from(format!(
                    "  Cause  {}",
                    cause.lines().next().unwrap_or_default()
                )),
            ];
            v.extend(
                cause
                    .lines()
                    .skip(1)
                    .take(4)
                    .map(|l| Line::from(format!("         {l}"))),
            );
            v.push(Line::from(Span::styled(
                format!("  Fix    {fix}"),
                theme.key(),
            )));
            v.push(Line::default());
            v.push(Line::from(
                "  r retry (finished steps are skipped)   e edit hosts and credentials",
            ));
            v.push(Line::from(
                "  s skip this step on this host and go on (asks first; Ctrl-C quits)",
            ));
            v.push(Line::from(
                "  w write a support bundle (logs, journal, Clusterfile without secrets)",
            ));
            if let Some(p) = &state.support_bundle {
                v.push(Line::from(format!("  Support bundle: {}", p.display())));
            }
            (
                "Failed",
                v,
                vec![
                    ("r", "retry"),
                    ("s", "skip"),
                    ("e", "edit"),
                    ("w", "support bundle"),
                ],
            )
        }
        None => ("Result", vec![Line::from("  No install has run.")], vec![]),
    };
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(panel(title)),
        area,
    );
    Body { status: None, help }
}
