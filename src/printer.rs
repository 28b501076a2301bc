//! The one place that writes to the terminal: results on stdout, progress and
//! diagnostics on stderr.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the printer is where output goes"
)]

/// Where commands send what users see.
#[derive(Clone, Copy, Debug)]
pub struct Printer {
    /// Suppress progress lines.
    pub quiet: bool,
}

impl Printer {
    /// A result line on stdout.
    pub fn result(&self, line: impl AsRef<str>) {
        println!("{}", line.as_ref());
    }

    /// A JSON result on stdout.
    pub fn json<T: serde::Serialize>(&self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot encode output as JSON: {e}"),
        }
    }

    /// A progress or status line on stderr.
    pub fn status(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", line.as_ref());
        }
    }

    /// A warning on stderr.
    pub fn warn(&self, line: impl AsRef<str>) {
        eprintln!("warning: {}", line.as_ref());
    }

    /// An error and its cause chain on stderr.
    pub fn error(&self, err: &anyhow::Error) {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
    }
}
