//! One module per screen, each with `draw` (pure) and `on_key` (state changes only).
//!
//! Every frame has the same frame: a title bar (image, screen, step n of 8), the
//! screen's body, a line for problems and notices, and the help line.

pub mod credentials;
pub mod hosts;
pub mod install;
pub mod preflight;
pub mod result;
pub mod settings;
pub mod summary;
pub mod welcome;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::Action;
use super::event::Key;
use super::state::{Screen, State};
use super::widgets::{self, Theme};

/// Keys for the current screen.
pub fn on_key(state: &mut State, key: Key) -> Option<Action> {
    match state.screen {
        Screen::Welcome => welcome::on_key(state, key),
        Screen::Hosts => hosts::on_key(state, key),
        Screen::Credentials => credentials::on_key(state, key),
        Screen::Settings => settings::on_key(state, key),
        Screen::Preflight => preflight::on_key(state, key),
        Screen::Summary => summary::on_key(state, key),
        Screen::Install => install::on_key(state, key),
        Screen::Result => result::on_key(state, key),
    }
}

/// What a screen draws: its body, its status line and its help keys.
pub struct Body<'a> {
    /// The lines of the status line (problems first), if any.
    pub status: Option<Line<'a>>,
    /// Help keys beyond the common ones.
    pub help: Vec<(&'static str, &'static str)>,
}

/// Draw the whole frame.
pub fn draw(state: &State, frame: &mut Frame<'_>) {
    let theme = Theme::new(state.color);
    let [title, body, status, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let image = if state.image.version.is_empty() {
        state.image.name.clone()
    } else {
        format!("{}:{}", state.image.name, state.image.version)
    };
    let right = format!("{} {}/8 ", state.screen.title(), state.screen.number());
    let left = format!(" airlock  {image}");
    let pad = usize::from(title.width).saturating_sub(left.len() + right.len());
    frame.render_widget(
        Paragraph::new(format!("{left}{}{right}", " ".repeat(pad))).style(theme.title()),
        title,
    );
    let out = match state.screen {
        Screen::Welcome => welcome::draw(state, frame, body, theme),
        Screen::Hosts => hosts::draw(state, frame, body, theme),
        Screen::Credentials => credentials::draw(state, frame, body, theme),
        Screen::Settings => settings::draw(state, frame, body, theme),
        Screen::Preflight => preflight::draw(state, frame, body, theme),
        Screen::Summary => summary::draw(state, frame, body, theme),
        Screen::Install => install::draw(state, frame, body, theme),
        Screen::Result => result::draw(state, frame, body, theme),
    };
    let status_line = match (&state.notice, out.status) {
        (Some(n), _) => Line::from(Span::styled(format!(" {n}"), theme.warn())),
        (None, Some(line)) => line,
        (None, None) => Line::default(),
    };
    frame.render_widget(Paragraph::new(status_line), status);
    let mut keys = out.help;
    let (movable_back, movable_next) = match state.screen {
        Screen::Welcome => (false, true),
        Screen::Install => (false, false),
        Screen::Result => (false, false),
        Screen::Summary => (true, false),
        _ => (true, true),
    };
    if movable_next {
        keys.push(("^N", "next"));
    }
    if movable_back {
        keys.push(("^B", "back"));
    }
    keys.push(("^C", "quit"));
    frame.render_widget(Paragraph::new(widgets::help(theme, &keys)), help);
    if state.confirm_quit {
        confirm_quit(frame, body, theme);
    }
}

fn confirm_quit(frame: &mut Frame<'_>, area: Rect, theme: Theme) {
    let popup = centered(area, 52, 6);
    frame.render_widget(Clear, popup);
    let text = vec![
        Line::from(" Quit the wizard?"),
        Line::from(" What you typed is saved; run the bundle again to"),
        Line::from(" resume (passwords are asked again)."),
        Line::from(Span::styled(" y quit   n stay", theme.key())),
    ];
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" Quit ")),
        popup,
    );
}

/// A `width` x `height` rectangle in the middle of `area`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

/// A bordered block titled `title`.
pub fn panel(title: &str) -> Block<'_> {
    Block::default()
        .borders(Borders::ALL)
        .title(format!(" {title} "))
}

/// Edit `text` with `key`: characters append, Backspace removes. Returns whether used.
pub fn edit_text(text: &mut String, key: Key) -> bool {
    match key {
        Key::Char(c) => {
            text.push(c);
            true
        }
        Key::Backspace => {
            text.pop();
            true
        }
        _ => false,
    }
}

/// The same for a secret.
pub fn edit_secret(secret: &mut crate::remote::Secret, key: Key) -> bool {
    let mut text = secret.expose().to_string();
    let used = edit_text(&mut text, key);
    *secret = crate::remote::Secret::new(text);
    used
}

#[cfg(test)]
mod tests;
