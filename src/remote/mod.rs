//! Running commands and copying files on hosts over SSH.
//!
//! The install engine only sees the [`Remote`] trait:
//! 1. [`RemoteCommand`] is an argv (never a shell string); quoting happens in one
//!    place, [`RemoteCommand::to_shell`], when it is sent.
//! 2. [`Remote::run`] returns the exit status, stdout and stderr read to the end.
//! 3. [`Remote::upload`] streams a local file (or a region of one) to a path on the
//!    host, verified by SHA-256 there and written atomically.
//!
//! 4. [`Remote::run_streaming`] hands each output line to a callback as it arrives,
//!    for long commands whose logs the user watches.
//!
//! Secrets travel as [`Secret`], whose `Debug` and `Display` never show the value;
//! [`redact`] scrubs them from text that came back from a host.
//!
//! The implementations: [`ssh::SshRemote`] (russh, with [`known_hosts::KnownHosts`]
//! for trust on first use) and [`fake::FakeRemote`] (records calls, for tests of
//! orchestration). [`fleet::Fleet`] bounds how many hosts are worked on at once.

pub mod fake;
pub mod fleet;
pub mod known_hosts;
pub mod ssh;

use std::fmt;
use std::path::PathBuf;

/// A password, passphrase or token: printed as `***`, never as itself.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A command to run on a host: program and arguments, optional stdin, optionally as root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteCommand {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Bytes written to the command's stdin, then closed.
    pub stdin: Option<Vec<u8>>,
    /// Extra environment, set with `env K=V` in front of the command.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Run as root (through sudo when the login user is not root).
    pub sudo: bool,
    /// Give up after this long.
    pub timeout: Option<std::time::Duration>,
}

impl RemoteCommand {
    /// `program` with no arguments.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            argv: vec![program.into()],
            ..Self::default()
        }
    }

    /// Run a script file's text with `sh -c`, with `args` as `$1...`.
    pub fn script(text: &str, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut argv = vec![
            "sh".to_string(),
            "-c".to_string(),
            text.to_string(),
            "airlock-script".to_string(),
        ];
        argv.extend(args.into_iter().map(Into::into));
        Self {
            argv,
            ..Self::default()
        }
    }

    /// Add one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.argv.push(arg.into());
        self
    }

    /// Add arguments.
    #[must_use]
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Feed `bytes` on stdin.
    #[must_use]
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Set an environment variable.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Run in `dir`.
    #[must_use]
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Run as root.
    #[must_use]
    pub fn sudo(mut self) -> Self {
        self.sudo = true;
        self
    }

    /// Give up after `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The command line a POSIX shell runs: every word quoted, env and cwd applied.
    pub fn to_shell(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        if let Some(dir) = &self.cwd {
            words.push(format!("cd {} &&", quote(dir)));
        }
        if !self.env.is_empty() {
            words.push("env".to_string());
            words.extend(self.env.iter().map(|(k, v)| quote(&format!("{k}={v}"))));
        }
        if let Some(limit) = self.timeout {
            // The far side enforces the limit too (a little later than the client
            // gives up), so a command that timed out does not run on unseen.
            let secs = limit.as_secs().max(1) + 2;
            words.extend([
                "timeout".to_string(),
                "-k".to_string(),
                "5".to_string(),
                secs.to_string(),
            ]);
        }
        words.extend(self.argv.iter().map(|a| quote(a)));
        words.join(" ")
    }

    /// A short form for messages: the program and at most two arguments.
    pub fn summary(&self) -> String {
        if self.argv.first().map(String::as_str) == Some("sh")
            && self.argv.get(1).map(String::as_str) == Some("-c")
        {
            return "sh -c <script>".to_string();
        }
        let mut s: Vec<&str> = self.argv.iter().take(3).map(String::as_str).collect();
        if self.argv.len() > 3 {
            s.push("...");
        }
        s.join(" ")
    }
}

/// Quote `word` for a POSIX shell.
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a finished command left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status (`-1` when killed by a signal or the channel closed without one).
    pub status: i32,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last `n` lines of stderr, for error messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Errors of the remote layer. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// TCP connection or SSH handshake failed.
    #[error("cannot connect to {host}: {reason}")]
    Connect {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The server refused every credential offered.
    #[error("authentication as {user} failed on {host}: check the user, password or key")]
    Auth {
        /// The host.
        host: String,
        /// The login user.
        user: String,
    },
    /// The host presented a key other than the one recorded.
    #[error(
        "host key of {host} changed (now {fingerprint}); if the host was reinstalled on purpose, remove line {line} of {known_hosts} and connect again"
    )]
    HostKeyChanged {
        /// The host.
        host: String,
        /// Fingerprint presented now.
        fingerprint: String,
        /// airlock's known-hosts file.
        known_hosts: PathBuf,
        /// The line (1-based) holding the recorded key.
        line: usize,
    },
    /// airlock's known-hosts file could not be read, parsed or written.
    #[error("known-hosts file {path}: {reason}")]
    KnownHosts {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line number when it is a bad line.
        reason: String,
    },
    /// A private key file could not be used.
    #[error("private key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why (missing, unreadable, wrong passphrase...).
        reason: String,
    },
    /// sudo refused to run a command as root.
    #[error("sudo as {user} on {host} failed: {reason}")]
    Sudo {
        /// The host.
        host: String,
        /// The login user.
        user: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A command exited non-zero (only from helpers that require success).
    #[error("`{command}` exited with {status} on {host}: {stderr}")]
    CommandFailed {
        /// The host.
        host: String,
        /// A summary of the command.
        command: String,
        /// Exit status.
        status: i32,
        /// Last lines of stderr.
        stderr: String,
    },
    /// A command or transfer took longer than allowed.
    #[error("`{command}` timed out after {seconds}s on {host}")]
    Timeout {
        /// The host.
        host: String,
        /// A summary of the command.
        command: String,
        /// The limit.
        seconds: u64,
    },
    /// A transfer arrived but hashed differently on the far side.
    #[error("{path} on {host} does not match its digest after transfer")]
    TransferCorrupt {
        /// The host.
        host: String,
        /// The remote path.
        path: String,
    },
    /// The SSH session failed mid-way.
    #[error("ssh session to {host} failed: {reason}")]
    Session {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// A local file could not be read.
    #[error("reading {path}: {source}")]
    Local {
        /// The local file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A local file, or a region of one, to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadSource {
    /// The file.
    pub path: PathBuf,
    /// Start of the region.
    pub offset: u64,
    /// Length of the region.
    pub len: u64,
    /// Expected SHA-256 of the region (hex), if known; verified on the far side.
    pub sha256: Option<String>,
}

/// What one upload did: where it resumed and how much it sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// Bytes already on the host (a partial file from an earlier attempt) that were kept.
    pub resumed_from: u64,
    /// Bytes sent over the wire by this upload.
    pub bytes_sent: u64,
    /// The destination already held exactly this content; nothing was sent.
    pub already_present: bool,
}

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The command's stdout.
    Stdout,
    /// The command's stderr.
    Stderr,
}

/// Called with each complete output line (without its newline) while a command runs.
pub type LineSink<'a> = &'a mut (dyn FnMut(Stream, &str) + Send);

/// Called with the number of bytes of an upload sent so far (counting resumed bytes).
pub type ProgressSink<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// Replace every secret's value in `text` with `***`.
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        if !secret.expose().is_empty() {
            out = out.replace(secret.expose(), "***");
        }
    }
    out
}

/// One host, reached somehow. The install engine uses nothing else.
#[async_trait::async_trait]
pub trait Remote: Send + Sync {
    /// The host's address, for messages.
    fn host(&self) -> &str;

    /// Run `cmd` and collect its output; a non-zero exit is an `Ok` with that status.
    async fn run(&self, cmd: &RemoteCommand) -> Result<Output, RemoteError>;

    /// Send `source` to `path` on the host (mode `mode`), resuming a partial earlier
    /// transfer, verified by SHA-256 on the far side, renamed into place at the end.
    async fn upload(&self, source: &UploadSource, path: &str, mode: u32)
    -> Result<(), RemoteError>;

    /// Run `cmd`, handing each output line to `on_line` as it arrives; the result is
    /// the same as [`Remote::run`]'s. The default runs first and replays lines after.
    async fn run_streaming(
        &self,
        cmd: &RemoteCommand,
        on_line: LineSink<'_>,
    ) -> Result<Output, RemoteError> {
        let out = self.run(cmd).await?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            on_line(Stream::Stdout, line);
        }
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            on_line(Stream::Stderr, line);
        }
        Ok(out)
    }

    /// [`Remote::upload`], reporting progress and returning what was sent. The default
    /// uploads, then reports the whole region as sent.
    async fn upload_with_progress(
        &self,
        source: &UploadSource,
        path: &str,
        mode: u32,
        progress: ProgressSink<'_>,
    ) -> Result<UploadReport, RemoteError> {
        self.upload(source, path, mode).await?;
        progress(source.len);
        Ok(UploadReport {
            resumed_from: 0,
            bytes_sent: source.len,
            already_present: false,
        })
    }

    /// Run `cmd` and require exit 0.
    async fn check(&self, cmd: &RemoteCommand) -> Result<Output, RemoteError> {
        let out = self.run(cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(RemoteError::CommandFailed {
                host: self.host().to_string(),
                command: cmd.summary(),
                status: out.status,
                stderr: out.stderr_tail(5),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_hostile_words() {
        let cmd = RemoteCommand::new("echo")
            .args(["a b", "it's", "$(rm -rf /)", ""])
            .cwd("/tmp/x y");
        assert_eq!(
            cmd.to_shell(),
            r"cd '/tmp/x y' && echo 'a b' 'it'\''s' '$(rm -rf /)' ''"
        );
    }

    #[test]
    fn a_time_limit_is_enforced_on_the_far_side_too() {
        let cmd = RemoteCommand::new("sleep")
            .arg("30")
            .timeout(std::time::Duration::from_secs(10));
        assert_eq!(cmd.to_shell(), "timeout -k 5 12 sleep 30");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
