//! Screen 7: the live dashboard: a row per host (step, progress, bytes/s, ETA),
//! overall progress, and the log of the selected host.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Body, panel};
use crate::wizard::Action;
use crate::wizard::event::Key;
use crate::wizard::state::{HostProgress, State};
use crate::wizard::widgets::{self, Theme};

/// Steps each host runs (prepare, blobs, unpack, mirrors), for the overall bar.
const STEPS_PER_HOST: usize = 4;

/// Up/Down select the host whose log is shown.
pub fn on_key(state: &mut State, key: Key) -> Option<Action> {
    let d = &mut state.dashboard;
    match key {
        Key::Up => d.selected = d.selected.saturating_sub(1),
        Key::Down => d.selected = (d.selected + 1).min(d.hosts.len().saturating_sub(1)),
        _ => {}
    }
    None
}

/// Bytes per second and seconds left, once a transfer has run for a while.
pub fn rate_and_eta(h: &HostProgress, now_ms: u64) -> Option<(u64, u64)> {
    let started = h.transfer_started_ms?;
    let elapsed = now_ms.checked_sub(started).filter(|ms| *ms >= 1000)?;
    let rate = h.sent * 1000 / elapsed;
    let left = h.total.saturating_sub(h.sent);
    Some((rate, left.checked_div(rate).unwrap_or(0)))
}

/// Draw it.
pub fn draw<'a>(state: &State, frame: &mut Frame<'_>, area: Rect, theme: Theme) -> Body<'a> {
    let d = &state.dashboard;
    let rows = u16::try_from(d.hosts.len()).unwrap_or(u16::MAX).min(10);
    let [hosts_area, overall_area, log_area] = Layout::vertical([
        Constraint::Length(rows + 3),
        Constraint::Length(1),
        Constraint::Min(3),
    ])
    .areas(area);
    let mut lines = vec![Line::from(Span::styled(
        format!(
            " {:<16}{:<10}{:<18} {:>9} {:>10} {:>8}",
            "host", "step", "progress", "sent", "rate", "ETA"
        ),
        theme.dim(),
    ))];
    for (i, (ip, h)) in d.hosts.iter().enumerate() {
        let step = match (&h.failed, &h.step) {
            (Some(_), _) => "FAILED".to_string(),
            (None, Some(s)) => s.clone(),
            (None, None) => "waiting".to_string(),
        };
        let (rate, eta) = match rate_and_eta(h, d.now_ms) {
            Some((r, e)) if h.sent < h.total => {
                (format!("{}/s", widgets::bytes(r)), widgets::duration(e))
            }
            Some((r, _)) => (format!("{}/s", widgets::bytes(r)), "-".to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        let text = format!(
            "{}{:<16}{:<10}{} {:>9} {:>10} {:>8}",
            if i == d.selected { ">" } else { " " },
            ip.to_string(),
            step,
            widgets::bar(h.sent, h.total, 16),
            widgets::bytes(h.sent),
            rate,
            eta
        );
        let style = if h.failed.is_some() {
            theme.error()
        } else if i == d.selected {
            theme.key()
        } else {
            Style::default()
        };
        lines.push(Line::from(Span::styled(text, style)));
    }
    frame.render_widget(Paragraph::new(lines).block(panel("Hosts")), hosts_area);

    let expected = (d.hosts.len() * STEPS_PER_HOST).max(1);
    let done: usize = d.hosts.values().map(|h| h.steps_done).sum();
    let (sent, total) = d
        .hosts
        .values()
        .fold((0, 0), |(s, t), h| (s + h.sent, t + h.total));
    frame.render_widget(
        Paragraph::new(format!(
            " Overall {} {done}/{expected} steps, {} of {} sent",
            widgets::bar(done.min(expected) as u64, expected as u64, 20),
            widgets::bytes(sent),
            widgets::bytes(total)
        )),
        overall_area,
    );

    let selected = d.hosts.iter().nth(d.selected);
    let height = usize::from(log_area.height.saturating_sub(2));
    let log: Vec<Line> = selected
        .map(|(_, h)| {
            let from = h.log.len().saturating_sub(height);
            h.log[from..]
                .iter()
                .map(|l| Line::from(format!(" {l}")))
                .collect()
        })
        .unwrap_or_default();
    let title = selected.map_or("Log".to_string(), |(ip, _)| format!("Log of {ip}"));
    frame.render_widget(Paragraph::new(log).block(panel(&title)), log_area);
    let status = d
        .hosts
        .iter()
        .find_map(|(ip, h)| h.failed.as_ref().map(|f| (ip, f)))
        .map(|(ip, f)| {
            Line::from(Span::styled(
                format!(" x {ip}: {}", f.lines().next().unwrap_or_default()),
                theme.error(),
            ))
        });
    Body {
        status,
        help: vec![("Up/Dn", "host log")],
    }
}
