//! Screen 1: what the bundle holds, and its integrity checked before anything else.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Body, panel};
use crate::wizard::event::Key;
use crate::wizard::state::{State, Verify};
use crate::wizard::widgets::{self, Theme};
use crate::wizard::{Action, next};

/// Enter goes on once verified; `r` verifies again after a failure.
pub fn on_key(state: &mut State, key: Key) -> Option<Action> {
    match key {
        Key::Enter => next(state),
        Key::Char('r') if matches!(state.verify, Verify::Failed { .. }) => {
            state.verify = Verify::Running { done: 0, total: 0 };
            Some(Action::Verify)
        }
        _ => None,
    }
}

/// Draw it.
pub fn draw<'a>(state: &State, frame: &mut Frame<'_>, area: Rect, theme: Theme) -> Body<'a> {
    let img = &state.image;
    let row = |k: &str, v: String| Line::from(format!("  {k:<12} {v}"));
    let mut lines = vec![
        Line::default(),
        Line::from("  This bundle installs a whole cluster on your hosts over SSH."),
        Line::from("  Nothing is changed on a host before the checks have passed."),
        Line::default(),
        row("Image", img.name.clone()),
        row("Version", img.version.clone()),
        row("Runtime", img.runtime.clone()),
        row("Platforms", img.platforms.join(", ")),
        row("Size", widgets::bytes(img.size)),
        row(
            "Signed by",
            img.signer
                .clone()
                .unwrap_or_else(|| "not signed".to_string()),
        ),
        Line::default(),
    ];
    let (status, help) = match &state.verify {
        Verify::Pending | Verify::Running { .. } => {
            let (done, total) = match state.verify {
                Verify::Running { done, total } => (done, total),
                _ => (0, 0),
            };
            lines.push(Line::from(format!(
                "  Verifying  {} {} of {}",
                widgets::bar(done, total, 30),
                widgets::bytes(done),
                widgets::bytes(total)
            )));
            (None, vec![])
        }
        Verify::Passed => {
            lines.push(Line::from(Span::styled(
                "  Verified: every part matches its digest.",
                theme.ok(),
            )));
            lines.push(Line::from("  Press Enter to describe your hosts."));
            (None, vec![("Enter", "start")])
        }
        Verify::Failed { reason } => {
            lines.push(Line::from(Span::styled(
                "  Verification FAILED: this copy is damaged. Do not install from it.",
                theme.error(),
            )));
            lines.push(Line::from(format!("  {reason}")));
            lines.push(Line::from(
                "  Copy the bundle again (compare its checksum) and restart.",
            ));
            (
                Some(Line::from(Span::styled(
                    " The bundle did not verify",
                    theme.error(),
                ))),
                vec![("r", "verify again")],
            )
        }
    };
    frame.render_widget(Paragraph::new(lines).block(panel("Welcome")), area);
    Body { status, help }
}
