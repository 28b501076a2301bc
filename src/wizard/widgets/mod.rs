//! Small drawing helpers shared by the screens: styles that honour `NO_COLOR`,
//! form fields, text progress bars, byte counts.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

/// Styles, plain when colour is off (`NO_COLOR`): emphasis then uses bold and reverse.
#[derive(Clone, Copy, Debug)]
pub struct Theme {
    color: bool,
}

impl Theme {
    /// The theme for `color`.
    pub fn new(color: bool) -> Self {
        Self { color }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    /// Title bar.
    pub fn title(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    /// The focused field or selected row.
    pub fn focus(self) -> Style {
        self.fg(Color::Cyan)
            .add_modifier(Modifier::BOLD | Modifier::REVERSED)
    }

    /// Errors and failures.
    pub fn error(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// Warnings.
    pub fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }

    /// Passed.
    pub fn ok(self) -> Style {
        self.fg(Color::Green)
    }

    /// Less important text.
    pub fn dim(self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default()
        }
    }

    /// Key names in the help line.
    pub fn key(self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }
}

/// A form line: `  Label........ [value_]`; the focused field shows a `_` cursor.
pub fn field<'a>(theme: Theme, label: &str, value: &str, focused: bool) -> Line<'a> {
    let shown = if focused {
        format!("[{value}_]")
    } else {
        format!("[{value}]")
    };
    Line::from(vec![
        Span::raw(format!("  {label:<18}")),
        Span::styled(
            shown,
            if focused {
                theme.focus()
            } else {
                Style::default()
            },
        ),
    ])
}

/// `****` for a secret of `len` characters.
pub fn masked(len: usize) -> String {
    "*".repeat(len)
}

/// `[#####.....]` of `width` cells inside the brackets.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        let ratio = u128::from(done.min(total)) * width as u128 / u128::from(total);
        usize::try_from(ratio).unwrap_or(width)
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// `1.5 GiB`, `20 MiB`, `512 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    let mut tenths = 0;
    while value >= 1024 && unit < UNITS.len() - 1 {
        tenths = (value % 1024) * 10 / 1024;
        value /= 1024;
        unit += 1;
    }
    if unit == 0 || value >= 10 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value}.{tenths} {}", UNITS[unit])
    }
}

/// `1m05s`, `42s`.
pub fn duration(secs: u64) -> String {
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// The help line: `key label` pairs.
pub fn help<'a>(theme: Theme, pairs: &[(&str, &str)]) -> Line<'a> {
    let mut spans = Vec::new();
    for (i, (key, label)) in pairs.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::styled((*key).to_string(), theme.key()));
        spans.push(Span::raw(format!(" {label}")));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_sizes() {
        assert_eq!(bar(5, 10, 10), "[#####.....]");
        assert_eq!(bar(0, 0, 4), "[....]");
        assert_eq!(bar(20, 10, 4), "[####]");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(bytes(20 * 1024 * 1024), "20 MiB");
        assert_eq!(duration(65), "1m05s");
    }
}
