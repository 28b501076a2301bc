//! Screen 6: the Clusterfile that will be used, saved for next time.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Body, panel};
use crate::wizard::event::Key;
use crate::wizard::state::{AuthMethod, State};
use crate::wizard::widgets::Theme;
use crate::wizard::{Action, save_action, start_install};

/// Up/Down scroll; `p` includes or leaves out passwords and saves again; Enter installs.
pub fn on_key(state: &mut State, key: Key) -> Option<Action> {
    let lines = state.to_yaml(state.summary.include_secrets).lines().count();
    let s = &mut state.summary;
    match key {
        Key::Up => s.scroll = s.scroll.saturating_sub(1),
        Key::Down => s.scroll = (s.scroll + 1).min(lines.saturating_sub(1)),
        Key::Char('p') => {
            s.include_secrets = !s.include_secrets;
            return Some(save_action(state));
        }
        Key::Char('s') => return Some(save_action(state)),
        Key::Enter => return start_install(state),
        _ => {}
    }
    None
}

/// Draw it.
pub fn draw<'a>(state: &State, frame: &mut Frame<'_>, area: Rect, theme: Theme) -> Body<'a> {
    let s = &state.summary;
    let [yaml_area, info_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(3)]).areas(area);
    // Shown as saved: with secrets only if asked, and then masked on screen.
    let yaml = state.to_yaml(false);
    let lines: Vec<Line> = yaml
        .lines()
        .skip(s.scroll)
        .map(|l| Line::from(format!(" {l}")))
        .collect();
    frame.render_widget(Paragraph::new(lines).block(panel("Clusterfile")), yaml_area);
    let secrets = match (state.credentials.method, s.include_secrets) {
        (AuthMethod::Key, false) => "Passwords: not saved (p to save them, file mode 0600)",
        (AuthMethod::Password, false) => {
            "Password: not saved; re-runs ask for it (p to save it, mode 0600)"
        }
        (_, true) => "Passwords: saved in the file (mode 0600); p to leave them out",
    };
    let saved = match (&s.saved, &s.error) {
        (_, Some(e)) => Line::from(Span::styled(format!(" x not saved: {e}"), theme.error())),
        (Some(p), None) => Line::from(format!(" Saved: {}", p.display())),
        (None, None) => Line::from(" Saving..."),
    };
    let info = vec![
        saved,
        Line::from(format!(" {secrets}")),
        Line::from(Span::styled(
            " Enter starts the install. Without the wizard: FILE.run install -f FILE --yes",
            theme.dim(),
        )),
    ];
    frame.render_widget(Paragraph::new(info), info_area);
    Body {
        status: None,
        help: vec![
            ("Enter", "install"),
            ("Up/Dn", "scroll"),
            ("p", "passwords"),
        ],
    }
}
