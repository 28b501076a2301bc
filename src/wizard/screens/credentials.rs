//! Screen 3: how to log in to the hosts (per-host user/port overrides are on Hosts).
//!
//! 1. The form: user, key file or password, passphrase, sudo password, port, bastion.
//! 2. Ctrl-N fetches every host's SSH key without logging in and shows each
//!    fingerprint with what airlock's known-hosts file says of it (known, new,
//!    changed, unreachable). The engineer compares them with the hosts' own.
//! 3. Ctrl-N again records the new keys and goes on; a changed key stops here. Esc goes
//!    back to the form.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::{Body, edit_secret, edit_text, panel};
use crate::wizard::Action;
use crate::wizard::event::Key;
use crate::wizard::state::{AuthMethod, CredField, HostKeyRow, HostKeys, KeyStatus, State};
use crate::wizard::widgets::{self, Theme};

/// Up/Down/Tab move between fields; typing edits; Space toggles choices.
pub fn on_key(state: &mut State, key: Key) -> Option<Action> {
    let c = &mut state.credentials;
    if let HostKeys::Scanned { rows, scroll } = &mut c.host_keys {
        match key {
            Key::Esc => c.host_keys = HostKeys::NotScanned,
            Key::Up => *scroll = scroll.saturating_sub(1),
            Key::Down => *scroll = (*scroll + 1).min(rows.len().saturating_sub(1)),
            _ => {}
        }
        return None;
    }
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
        },
    }
    None
}

/// Draw it.
pub fn draw<'a>(state: &State, frame: &mut Frame<'_>, area: Rect, theme: Theme) -> Body<'a> {
    let c = &state.credentials;
    if let HostKeys::Scanned { rows, scroll } = &c.host_keys {
        return draw_keys(rows, *scroll, frame, area, theme);
    }
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
        };
        lines.push(line);
    }
    lines.push(Line::default());
    let hint = match c.focus {
        CredField::SudoPassword => "Empty: the login password is used for sudo.",
        CredField::Bastion => "Optional jump host, user@host:port.",
        CredField::KeyFile => "A private key readable on this machine, e.g. /root/.ssh/id_ed25519",
        _ => "Passwords are never written to disk unless you ask on Summary.",
    };
    lines.push(Line::from(Span::styled(format!("  {hint}"), theme.dim())));
    if let HostKeys::Scanning { targets } = &c.host_keys {
        lines.push(Line::from(Span::styled(
            format!("  Fetching the SSH keys of {} hosts ...", targets.len()),
            theme.warn(),
        )));
    }
    frame.render_widget(Paragraph::new(lines).block(panel("Credentials")), area);
    let status = c
        .problem()
        .map(|p| Line::from(Span::styled(format!(" x {p}"), theme.error())));
    Body {
        status,
        help: vec![("Up/Dn", "field"), ("Spc", "toggle")],
    }
}

/// The fetched host keys, two lines per host, for the engineer to compare.
fn draw_keys<'a>(
    rows: &[HostKeyRow],
    scroll: usize,
    frame: &mut Frame<'_>,
    area: Rect,
    theme: Theme,
) -> Body<'a> {
    let mut lines = vec![
        Line::from("  Compare each fingerprint with the host's own, on its console:"),
        Line::from(Span::styled(
            "    ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub",
            theme.dim(),
        )),
        Line::default(),
    ];
    for row in rows.iter().skip(scroll) {
        let (status, style, why) = match &row.status {
            KeyStatus::Known => ("known", theme.ok(), None),
            KeyStatus::New => ("NEW: accept?", theme.warn(), None),
            KeyStatus::Changed { reason } => ("CHANGED: refused", theme.error(), Some(reason)),
            KeyStatus::Unreachable { reason } => ("no answer", theme.error(), Some(reason)),
        };
        lines.push(Line::from(vec![
            Span::raw(format!("  {:<22}", row.target.label())),
            Span::styled(format!("{status:<18}"), style),
            Span::styled(row.algorithm.clone(), theme.dim()),
        ]));
        if !row.fingerprint.is_empty() {
            lines.push(Line::from(format!("      {}", row.fingerprint)));
        }
        if let Some(why) = why {
            lines.push(Line::from(Span::styled(format!("      {why}"), style)));
        }
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(panel("Host keys")),
        area,
    );
    let changed = rows
        .iter()
        .filter(|r| matches!(r.status, KeyStatus::Changed { .. }))
        .count();
    let status = (changed > 0).then(|| {
        Line::from(Span::styled(
            format!(" x {changed} host keys changed: Ctrl-N shows what to do"),
            theme.error(),
        ))
    });
    Body {
        status,
        help: vec![("Up/Dn", "scroll"), ("Esc", "back to the form")],
    }
}
