//! Screen 5: every check on every host, live; the selected cell's details and fix
//! below; a failed check can be skipped after confirmation (the skip is recorded).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::{Body, panel};
use crate::preflight::{CHECKS, Status};
use crate::wizard::event::Key;
use crate::wizard::state::State;
use crate::wizard::widgets::Theme;
use crate::wizard::{Action, start_preflight};

const TITLE_WIDTH: usize = 28;
const CELL_WIDTH: usize = 16;

/// Arrows select a cell; `s` skips its check (asks first); `r` runs the checks again.
pub fn on_key(state: &mut State, key: Key) -> Option<Action> {
    let hosts = state.host_ips().len();
    let p = &mut state.preflight;
    if let Some(id) = p.confirm_skip.take() {
        if key == Key::Char('y') {
            p.skipped.insert(id);
            for f in p.findings.iter_mut().filter(|f| f.check == id) {
                if f.status != Status::Pass {
                    f.status = Status::Skipped;
                }
            }
            state.notice = Some(format!("Check {id} skipped: recorded in the Clusterfile"));
        }
        return None;
    }
    match key {
        Key::Up => p.row = p.row.saturating_sub(1),
        Key::Down => p.row = (p.row + 1).min(CHECKS.len() - 1),
        Key::Left => p.column = p.column.saturating_sub(1),
        Key::Right => p.column = (p.column + 1).min(hosts.saturating_sub(1)),
        Key::Char('s') => {
            let id = CHECKS[p.row.min(CHECKS.len() - 1)].id;
            if !id.can_skip() {
                state.notice = Some(format!("{id} cannot be skipped: nothing works without it"));
            } else if !p.running {
                p.confirm_skip = Some(id);
            }
        }
        Key::Char('r') if !p.running => return start_preflight(state),
        Key::Enter if state.preflight.is_passed() => return crate::wizard::next(state),
        _ => {}
    }
    None
}

fn cell(status: Option<Status>, running: bool) -> &'static str {
    match status {
        Some(Status::Pass) => "ok",
        Some(Status::Fail) => "FAIL",
        Some(Status::Warn) => "warn",
        Some(Status::Skipped) => "skipped",
        None if running => "...",
        None => "-",
    }
}

/// Draw it.
pub fn draw<'a>(state: &State, frame: &mut Frame<'_>, area: Rect, theme: Theme) -> Body<'a> {
    let p = &state.preflight;
    let hosts = state.host_ips();
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Min(5), Constraint::Length(6)]).areas(area);
    let columns = (usize::from(table_area.width.saturating_sub(2)).saturating_sub(TITLE_WIDTH)
        / CELL_WIDTH)
        .max(1);
    let first_col = p.column.saturating_sub(columns.saturating_sub(1));
    let mut header = format!(" {:<w$}", "check", w = TITLE_WIDTH - 1);
    for ip in hosts.iter().skip(first_col).take(columns) {
        header.push_str(&format!("{:<CELL_WIDTH$}", ip.to_string()));
    }
    let mut lines = vec![Line::from(Span::styled(header, theme.dim()))];
    let rows = usize::from(table_area.height.saturating_sub(3));
    let first_row = p.row.saturating_sub(rows.saturating_sub(1));
    for (r, check) in CHECKS.iter().enumerate().skip(first_row).take(rows) {
        let skipped = p.skipped.contains(&check.id);
        let mut spans = vec![Span::raw(format!(
            " {:<w$}",
            format!("{}{}", check.title, if skipped { " (skip)" } else { "" }),
            w = TITLE_WIDTH - 1
        ))];
        for (c, ip) in hosts.iter().enumerate().skip(first_col).take(columns) {
            let status = p.finding(*ip, check.id).map(|f| f.status);
            let style = if r == p.row && c == p.column {
                theme.focus()
            } else {
                match status {
                    Some(Status::Fail) => theme.error(),
                    Some(Status::Warn) => theme.warn(),
                    Some(Status::Pass) => theme.ok(),
                    _ => theme.dim(),
                }
            };
            spans.push(Span::styled(
                format!("{:<w$}", cell(status, p.running), w = CELL_WIDTH - 1),
                style,
            ));
            spans.push(Span::raw(" "));
        }
        lines.push(Line::from(spans));
    }
    let (fails, warns) = p.counts();
    let title = if p.running {
        format!("Preflight: checking {} hosts...", hosts.len())
    } else if p.finished {
        format!("Preflight: {fails} failed, {warns} warnings")
    } else {
        "Preflight".to_string()
    };
    frame.render_widget(Paragraph::new(lines).block(panel(&title)), table_area);

    let check = &CHECKS[p.row.min(CHECKS.len() - 1)];
    let detail: Vec<Line> = if let Some(error) = &p.error {
        vec![Line::from(Span::styled(error.clone(), theme.error()))]
    } else if let Some(id) = p.confirm_skip {
        vec![
            Line::from(Span::styled(
                format!("Skip the check {id} on every host?"),
                theme.warn(),
            )),
            Line::from("The install may fail or the cluster misbehave because of it."),
            Line::from("The skip is written into the saved Clusterfile.   y skip   n keep"),
        ]
    } else {
        match hosts.get(p.column).and_then(|ip| p.finding(*ip, check.id)) {
            Some(f) => {
                let mut v = vec![Line::from(vec![
                    Span::styled(format!("{} {}: ", f.host, check.id), theme.key()),
                    Span::raw(f.message.clone()),
                ])];
                if !f.fix.is_empty() {
                    v.push(Line::from(format!("Fix: {}", f.fix)));
                }
                v
            }
            None => vec![Line::from(Span::styled(
                format!("{}: {}", check.id, check.title),
                Style::default(),
            ))],
        }
    };
    frame.render_widget(
        Paragraph::new(detail)
            .wrap(Wrap { trim: false })
            .block(panel("Details")),
        detail_area,
    );
    let status = if p.running {
        None
    } else if p.is_passed() {
        Some(Line::from(Span::styled(
            " All checks passed: ^N to review the Clusterfile",
            theme.ok(),
        )))
    } else if p.finished {
        Some(Line::from(Span::styled(
            format!(" x {fails} checks failed: fix them and press r, or skip with s"),
            theme.error(),
        )))
    } else {
        None
    };
    Body {
        status,
        help: vec![("Arrows", "select"), ("s", "skip"), ("r", "re-run")],
    }
}
