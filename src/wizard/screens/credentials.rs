//! Screen 3: how to log in to the hosts (per-host user/port overrides are on Hosts).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Body, edit_secret, edit_text, panel};
use crate::wizard::Action;
use crate::wizard::event::Key;
use crate::wizard::state::{AuthMethod, CredField, State};
use crate::wizard::widgets::{self, Theme};

/// Up/Down/Tab move between fields; typing edits; Space toggles choices.
pub fn on_key(state: &mut State, key: Key) -> Option<Action> {
    let c = &mut state.credentials;
    let fields = CredField::visible(c.method);
    let at = fields.iter().position(|f| *f == c.focus).unwrap_or(0);
    match key {
        Key::Tab | Key::Down | Key::Enter => c.focus = fields[(at + 1) % fields.len()],
        Key::BackTab | Key::Up => c.focus = fields[(at + fields.len() - 1) % fields.len()],
        k => match c.focus {
            CredField::User => {
                edit_text(&mut c.user, k);
            }
            CredField::Method => {
                if matches!(k, Key::Char(' ') | Key::Left | Key::Right) {
                    c.method = match c.method {
                        AuthMethod::Key => AuthMethod::Password,
                        AuthMethod::Password => AuthMethod::Key,
                    };
                }
            }
            CredField::Password => {
                edit_secret(&mut c.password, k);
            }
            CredField::KeyFile => {
                edit_text(&mut c.key_file, k);
            }
            CredField::Passphrase => {
                edit_secret(&mut c.passphrase, k);
            }
            CredField::SudoPassword => {
                edit_secret(&mut c.sudo_password, k);
            }
            CredField::Port => {
                edit_text(&mut c.port, k);
            }
            CredField::Bastion => {
                edit_text(&mut c.bastion, k);
            }
            CredField::AcceptHostKeys => {
                if matches!(k, Key::Char(' ')) {
                    c.accept_host_keys = !c.accept_host_keys;
                }
            }
        },
    }
    None
}

/// Draw it.
pub fn draw<'a>(state: &State, frame: &mut Frame<'_>, area: Rect, theme: Theme) -> Body<'a> {
    let c = &state.credentials;
    let mut lines = vec![
        Line::from("  Every host is reached with these, unless Hosts gives a user or port."),
        Line::default(),
    ];
    for f in CredField::visible(c.method) {
        let focused = c.focus == f;
        let line = match f {
            CredField::User => widgets::field(theme, "User", &c.user, focused),
            CredField::Method => widgets::field(
                theme,
                "Log in with",
                match c.method {
                    AuthMethod::Key => "key file   <Space: password>",
                    AuthMethod::Password => "password   <Space: key file>",
                },
                focused,
            ),
            CredField::Password => widgets::field(
                theme,
                "Password",
                &widgets::masked(c.password.expose().len()),
                focused,
            ),
            CredField::KeyFile => widgets::field(theme, "Key file", &c.key_file, focused),
            CredField::Passphrase => widgets::field(
                theme,
                "Key passphrase",
                &widgets::masked(c.passphrase.expose().len()),
                focused,
            ),
            CredField::SudoPassword => widgets::field(
                theme,
                "Sudo password",
                &widgets::masked(c.sudo_password.expose().len()),
                focused,
            ),
            CredField::Port => widgets::field(theme, "SSH port", &c.port, focused),
            CredField::Bastion => widgets::field(theme, "Bastion", &c.bastion, focused),
            CredField::AcceptHostKeys => widgets::field(
                theme,
                "New host keys",
                if c.accept_host_keys {
                    "accept and record on first contact"
                } else {
                    "refuse unknown hosts"
                },
                focused,
            ),
        };
        lines.push(line);
    }
    lines.push(Line::default());
    let hint = match c.focus {
        CredField::SudoPassword => "Empty: the login password is used for sudo.",
        CredField::Bastion => "Optional jump host, user@host:port.",
        CredField::AcceptHostKeys => "Recorded in airlock's known-hosts file; a changed key stops.",
        CredField::KeyFile => "A private key readable on this machine, e.g. /root/.ssh/id_ed25519",
        _ => "Passwords are never written to disk unless you ask on Summary.",
    };
    lines.push(Line::from(Span::styled(format!("  {hint}"), theme.dim())));
    frame.render_widget(Paragraph::new(lines).block(panel("Credentials")), area);
    let status = c
        .problem()
        .map(|p| Line::from(Span::styled(format!(" x {p}"), theme.error())));
    Body {
        status,
        help: vec![("Up/Dn", "field"), ("Spc", "toggle")],
    }
}
