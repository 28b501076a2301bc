//! Screen 2: hosts as IPs or ranges, with roles and per-host user/port overrides,
//! validated as they are typed.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Body, edit_text, panel};
use crate::spec::clusterfile::expand_ips;
use crate::wizard::Action;
use crate::wizard::event::Key;
use crate::wizard::state::{HostFocus, State};
use crate::wizard::widgets::Theme;

/// Typing edits the entry line; Enter adds it; in the list, `e` edits and Delete removes.
pub fn on_key(state: &mut State, key: Key) -> Option<Action> {
    let h = &mut state.hosts;
    match (h.focus, key) {
        (_, Key::Tab) => h.focus = h.focus.next(),
        (_, Key::BackTab) => h.focus = h.focus.prev(),
        (HostFocus::List, Key::Up) => h.selected = h.selected.saturating_sub(1),
        (HostFocus::List, Key::Down) => {
            h.selected = (h.selected + 1).min(h.rows.len().saturating_sub(1));
        }
        (HostFocus::List, Key::Delete | Key::Char('d')) if h.selected < h.rows.len() => {
            h.rows.remove(h.selected);
            h.selected = h.selected.min(h.rows.len().saturating_sub(1));
            h.editing = None;
        }
        (HostFocus::List, Key::Char(' ')) => {
            if let Some(row) = h.rows.get_mut(h.selected) {
                row.role = row.role.toggled();
            }
        }
        (HostFocus::List, Key::Enter | Key::Char('e')) => {
            if let Some(row) = h.rows.get(h.selected) {
                h.entry = row.clone();
                h.editing = Some(h.selected);
                h.focus = HostFocus::Ips;
            }
        }
        (HostFocus::Role, Key::Char(' ') | Key::Left | Key::Right) => {
            h.entry.role = h.entry.role.toggled();
        }
        (HostFocus::Role, Key::Char('m')) => h.entry.role = crate::wizard::state::Role::Master,
        (HostFocus::Role, Key::Char('n')) => h.entry.role = crate::wizard::state::Role::Node,
        (_, Key::Enter) => {
            if let Err(e) = h.commit_entry() {
                state.notice = Some(e);
            } else {
                h.focus = HostFocus::Ips;
            }
        }
        (_, Key::Esc) => {
            h.entry = crate::wizard::state::HostRow {
                role: h.entry.role,
                ..Default::default()
            };
            h.editing = None;
        }
        (HostFocus::Ips, k) => {
            edit_text(&mut h.entry.ips, k);
        }
        (HostFocus::User, k) => {
            edit_text(&mut h.entry.user, k);
        }
        (HostFocus::Port, k) => {
            edit_text(&mut h.entry.port, k);
        }
        _ => {}
    }
    None
}

/// Draw it.
pub fn draw<'a>(state: &State, frame: &mut Frame<'_>, area: Rect, theme: Theme) -> Body<'a> {
    let h = &state.hosts;
    let [list_area, entry_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(5)]).areas(area);
    let (masters, nodes) = h.counts();
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "   {:<32} {:<8} {:<12} {:<6} {}",
            "IPs", "role", "user", "port", "hosts"
        ),
        theme.dim(),
    ))];
    if h.rows.is_empty() {
        lines.push(Line::from(
            "   No hosts yet: type an IP (or a range a-b) below and press Enter.",
        ));
    }
    let visible = usize::from(list_area.height.saturating_sub(3));
    let first = h.selected.saturating_sub(visible.saturating_sub(1));
    for (i, row) in h.rows.iter().enumerate().skip(first).take(visible) {
        let n = expand_ips(&row.ips).map_or(0, |v| v.len());
        let text = format!(
            " {} {:<32} {:<8} {:<12} {:<6} {n}",
            if i == h.selected { ">" } else { " " },
            row.ips,
            row.role.as_str(),
            if row.user.is_empty() { "-" } else { &row.user },
            if row.port.is_empty() { "-" } else { &row.port },
        );
        let style = if i == h.selected && h.focus == HostFocus::List {
            theme.focus()
        } else {
            ratatui::style::Style::default()
        };
        lines.push(Line::from(Span::styled(text, style)));
    }
    frame.render_widget(
        Paragraph::new(lines).block(panel(&format!(
            "Hosts: {masters} master{}, {nodes} node{}",
            if masters == 1 { "" } else { "s" },
            if nodes == 1 { "" } else { "s" }
        ))),
        list_area,
    );

    let e = &h.entry;
    let field = |label: &str, value: &str, focus: HostFocus, width: usize| {
        let focused = h.focus == focus;
        let cursor = if focused { "_" } else { "" };
        vec![
            Span::raw(format!(" {label} ")),
            Span::styled(
                format!("[{:<width$}]", format!("{value}{cursor}")),
                if focused {
                    theme.focus()
                } else {
                    ratatui::style::Style::default()
                },
            ),
        ]
    };
    let mut spans = field("IPs", &e.ips, HostFocus::Ips, 27);
    spans.extend(field("role", e.role.as_str(), HostFocus::Role, 6));
    spans.extend(field("user", &e.user, HostFocus::User, 6));
    spans.extend(field("port", &e.port, HostFocus::Port, 5));
    let check = match h.entry_problem() {
        Some(p) => Line::from(Span::styled(format!(" x {p}"), theme.error())),
        None if e.ips.trim().is_empty() => Line::from(Span::styled(
            " e.g. 198.18.0.2 or 198.18.0.3-198.18.0.5; user and port are optional",
            theme.dim(),
        )),
        None => {
            let n = expand_ips(&e.ips).map_or(0, |v| v.len());
            Line::from(Span::styled(
                format!(
                    " ok: {n} host{}, Enter to {}",
                    if n == 1 { "" } else { "s" },
                    if h.editing.is_some() { "save" } else { "add" }
                ),
                theme.ok(),
            ))
        }
    };
    let title = if h.editing.is_some() {
        "Edit host"
    } else {
        "Add host"
    };
    frame.render_widget(
        Paragraph::new(vec![Line::from(spans), check]).block(panel(title)),
        entry_area,
    );

    let problems = h.problems();
    let status = problems
        .errors
        .first()
        .map(|e| Line::from(Span::styled(format!(" x {e}"), theme.error())))
        .or_else(|| {
            problems
                .warnings
                .first()
                .map(|w| Line::from(Span::styled(format!(" ! {w}"), theme.warn())))
        });
    let help = if h.focus == HostFocus::List {
        vec![
            ("Up/Dn", "select"),
            ("e", "edit"),
            ("Del", "remove"),
            ("Spc", "role"),
            ("Tab", "field"),
        ]
    } else {
        vec![
            ("Enter", "add"),
            ("Tab", "field"),
            ("Spc", "role"),
            ("Esc", "clear"),
        ]
    };
    Body { status, help }
}
