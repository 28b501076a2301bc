//! The multi-host testbed, for integration tests: a thin std-only wrapper
//! over `tests/testbed/testbed.sh` (see `tests/testbed/README.md`).
//!
//! ```ignore
//! if let Some(why) = testbed::skip_reason() {
//!     eprintln!("SKIPPED: {why}");
//!     return;
//! }
//! let tb = Testbed::up(TestbedOptions { hosts: 3, ..Default::default() })?;
//! let out = tb.exec(1, &["hostname"]);   // runs inside host 1
//! // tb.hosts[0] is host 1's address; ssh as root with tb.key or tb.root_password
//! // dropping `tb` tears everything down
//! ```
#![allow(dead_code)]

use std::fmt;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What to bring up.
#[derive(Clone, Debug)]
pub(crate) struct TestbedOptions {
    /// Number of hosts (1..=250).
    pub(crate) hosts: usize,
    /// Link rate of every host, as `tc` spells it (`"200mbit"`); `None` = unshaped.
    pub(crate) rate: Option<String>,
    /// Start containerd (with cgroups) in every host.
    pub(crate) containerd: bool,
    /// Boot systemd as PID 1 of every host.
    pub(crate) systemd: bool,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        TestbedOptions {
            hosts: 1,
            rate: None,
            containerd: false,
            systemd: false,
        }
    }
}

/// A running testbed. Host `i` (1-based, as in the script) has address `hosts[i - 1]`.
/// Dropping it runs `testbed.sh down`.
pub(crate) struct Testbed {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) hosts: Vec<Ipv4Addr>,
    /// Private ed25519 key authorized for root on every host.
    pub(crate) key: PathBuf,
    pub(crate) root_password: String,
    /// Password of the non-root user `ops`, who may `sudo` with it.
    pub(crate) ops_password: String,
    /// The machine's address on the testbed bridge: hosts reach the operator here.
    pub(crate) gateway: Ipv4Addr,
    /// known_hosts file with every host's keys (for strict host key checking).
    pub(crate) known_hosts: PathBuf,
    down_done: bool,
}

impl fmt::Debug for Testbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Testbed")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("hosts", &self.hosts)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Path of `testbed.sh`: `$AIRLOCK_TESTBED_SCRIPT` if set, else
/// `$CARGO_MANIFEST_DIR/tests/testbed/testbed.sh`.
#[allow(
    clippy::disallowed_methods,
    reason = "test harness knob, not the app's settings"
)]
pub(crate) fn script() -> PathBuf {
    if let Some(p) = std::env::var_os("AIRLOCK_TESTBED_SCRIPT") {
        return PathBuf::from(p);
    }
    match option_env!("CARGO_MANIFEST_DIR") {
        Some(dir) => Path::new(dir).join("tests/testbed/testbed.sh"),
        // compiled outside cargo: this file is tests/integration/testbed.rs
        None => Path::new(file!())
            .parent()
            .and_then(Path::parent)
            .map(|tests| tests.join("testbed/testbed.sh"))
            .unwrap_or_else(|| PathBuf::from("tests/testbed/testbed.sh")),
    }
}

/// Why the testbed cannot run on this machine, if it cannot: tests print it
/// and skip (they must not pass silently). `None` means it can run.
#[allow(
    clippy::disallowed_methods,
    reason = "test harness knob, not the app's settings"
)]
pub(crate) fn skip_reason() -> Option<String> {
    if std::env::var_os("AIRLOCK_TESTBED_SKIP").is_some_and(|v| !v.is_empty() && v != "0") {
        return Some("AIRLOCK_TESTBED_SKIP is set".into());
    }
    if !cfg!(target_os = "linux") {
        return Some("the testbed needs Linux namespaces".into());
    }
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Some(format!("the testbed needs root (running as uid {uid})")),
        None => return Some("cannot tell the user id (no /proc/self/status)".into()),
    }
    let script = script();
    if !script.is_file() {
        return Some(format!("{} not found", script.display()));
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Some("no network namespaces (/proc/self/ns/net missing)".into());
    }
    // testbed.sh installs missing packages itself with apt-get; without apt-get
    // these must already be there
    let can_install = find_command("apt-get").is_some();
    let mut missing = Vec::new();
    for cmd in [
        "bash", "ip", "unshare", "nsenter", "sshd", "ssh", "iptables",
    ] {
        if find_command(cmd).is_none() {
            missing.push(cmd);
        }
    }
    if missing.contains(&"bash") || (!missing.is_empty() && !can_install) {
        return Some(format!("missing commands: {}", missing.join(", ")));
    }
    None
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved fs
    line.split_whitespace().nth(2)?.parse().ok()
}

#[allow(
    clippy::disallowed_methods,
    reason = "looks up commands like a shell does"
)]
pub(crate) fn find_command(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(cmd))
        .find(|p| p.is_file())
}

/// Parses `KEY=VALUE` lines (a value may be wrapped in double quotes).
pub(crate) fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (k, v) = line.trim().split_once('=')?;
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                return None;
            }
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

fn script_command() -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(script());
    cmd
}

fn failed_output(message: String) -> Output {
    Output {
        status: ExitStatus::from_raw(127 << 8),
        stdout: Vec::new(),
        stderr: message.into_bytes(),
    }
}

impl Testbed {
    /// Brings a testbed up (a unique name per call) and waits until every
    /// host's sshd answers. On error nothing is left behind.
    pub(crate) fn up(opts: TestbedOptions) -> Result<Testbed, String> {
        if let Some(why) = skip_reason() {
            return Err(format!("testbed unavailable: {why}"));
        }
        let name = format!(
            "rs{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut cmd = script_command();
        cmd.args(["up", "--name", &name, "--hosts", &opts.hosts.to_string()]);
        if let Some(rate) = &opts.rate {
            cmd.args(["--rate", rate]);
        }
        if opts.containerd {
            cmd.arg("--containerd");
        }
        if opts.systemd {
            cmd.arg("--systemd");
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
        if !out.status.success() {
            return Err(format!(
                "testbed.sh up --name {name} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let env = parse_env(&String::from_utf8_lossy(&out.stdout));
        let mut tb = Testbed {
            name: name.clone(),
            dir: PathBuf::new(),
            hosts: Vec::new(),
            key: PathBuf::new(),
            root_password: String::new(),
            ops_password: String::new(),
            gateway: Ipv4Addr::UNSPECIFIED,
            known_hosts: PathBuf::new(),
            down_done: false,
        };
        // from here on, an error drops `tb`, which runs down
        tb.fill(&env)
            .map_err(|e| format!("testbed.sh up --name {name}: {e}"))?;
        Ok(tb)
    }

    fn fill(&mut self, env: &[(String, String)]) -> Result<(), String> {
        let get = |key: &str| {
            env.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("no {key} in its output"))
        };
        let ip = |s: &str| {
            s.parse::<Ipv4Addr>()
                .map_err(|e| format!("bad address {s:?}: {e}"))
        };
        let read = |path: String| {
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read {path}: {e}"))
        };
        self.dir = PathBuf::from(get("TESTBED_DIR")?);
        self.hosts = get("TESTBED_HOSTS")?
            .split_whitespace()
            .map(ip)
            .collect::<Result<_, _>>()?;
        self.key = PathBuf::from(get("TESTBED_KEY")?);
        self.root_password = read(get("TESTBED_ROOT_PASSWORD_FILE")?)?;
        self.ops_password = read(get("TESTBED_OPS_PASSWORD_FILE")?)?;
        self.gateway = ip(&get("TESTBED_GATEWAY")?)?;
        self.known_hosts = PathBuf::from(get("TESTBED_KNOWN_HOSTS")?);
        Ok(())
    }

    /// Address of host `host` (1-based).
    pub(crate) fn ip(&self, host: usize) -> Ipv4Addr {
        assert!(
            host >= 1 && host <= self.hosts.len(),
            "host {host} out of 1..={}",
            self.hosts.len()
        );
        self.hosts[host - 1]
    }

    /// Runs `argv` inside host `host` (1-based): its network, mount, pid and
    /// uts namespaces, so it sees the host's own filesystem. Not over ssh.
    pub(crate) fn exec(&self, host: usize, argv: &[&str]) -> Output {
        self.script(
            &["exec", "--name", &self.name, &host.to_string(), "--"],
            argv,
        )
    }

    /// Runs `testbed.sh SUBCOMMAND --name NAME ARGS...` for the rarer commands
    /// (`kill-sshd`, `start-sshd`, `link`, `ip`).
    fn script(&self, head: &[&str], rest: &[&str]) -> Output {
        let mut cmd = script_command();
        cmd.args(head).args(rest).stdin(Stdio::null());
        cmd.output()
            .unwrap_or_else(|e| failed_output(format!("cannot run {}: {e}", script().display())))
    }

    /// Kills sshd in host `host` (the listener and every session).
    pub(crate) fn kill_sshd(&self, host: usize) -> Output {
        self.script(&["kill-sshd", "--name", &self.name, &host.to_string()], &[])
    }

    /// Starts sshd in host `host` again and waits until it answers.
    pub(crate) fn start_sshd(&self, host: usize) -> Output {
        self.script(
            &["start-sshd", "--name", &self.name, &host.to_string()],
            &[],
        )
    }

    /// Cuts (`up = false`) or restores host `host`'s link.
    pub(crate) fn link(&self, host: usize, up: bool) -> Output {
        self.script(
            &[
                "link",
                "--name",
                &self.name,
                &host.to_string(),
                if up { "up" } else { "down" },
            ],
            &[],
        )
    }

    /// `ssh` options for root on host `host` with the testbed key and strict host
    /// key checking: `Command::new("ssh").args(tb.ssh_args(1)).arg("hostname")`.
    pub(crate) fn ssh_args(&self, host: usize) -> Vec<String> {
        vec![
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=5".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-i".into(),
            self.key.display().to_string(),
            format!("root@{}", self.ip(host)),
        ]
    }

    /// Runs a shell command line on host `host` over real ssh as root.
    pub(crate) fn ssh(&self, host: usize, command: &str) -> Output {
        Command::new("ssh")
            .args(self.ssh_args(host))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| failed_output(format!("cannot run ssh: {e}")))
    }

    /// Tears the testbed down now (also done on drop).
    pub(crate) fn down(mut self) -> Result<(), String> {
        self.down_inner()
    }

    fn down_inner(&mut self) -> Result<(), String> {
        if self.down_done {
            return Ok(());
        }
        self.down_done = true;
        let out = self.script(&["down", "--name", &self.name], &[]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "testbed.sh down --name {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Testbed {
    #[allow(
        clippy::print_stderr,
        reason = "a failed teardown must be visible in test output"
    )]
    fn drop(&mut self) {
        if let Err(e) = self.down_inner() {
            eprintln!("warning: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_lines() {
        let env =
            parse_env("TESTBED_DIR=/tmp/x\nTESTBED_HOSTS=\"198.18.0.2 198.18.0.3\"\nnoise\n=x\n");
        assert_eq!(
            env,
            vec![
                ("TESTBED_DIR".to_string(), "/tmp/x".to_string()),
                (
                    "TESTBED_HOSTS".to_string(),
                    "198.18.0.2 198.18.0.3".to_string()
                ),
            ]
        );
    }

    /// Brings up two real hosts, checks exec, ssh and addresses, then drops them.
    #[test]
    fn testbed_two_hosts() {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED testbed_two_hosts: {why}");
            return;
        }
        let tb = Testbed::up(TestbedOptions {
            hosts: 2,
            ..Default::default()
        })
        .expect("testbed up");
        assert_eq!(tb.hosts.len(), 2);
        assert_eq!(
            tb.ip(1),
            Ipv4Addr::new(
                tb.gateway.octets()[0],
                tb.gateway.octets()[1],
                tb.gateway.octets()[2],
                2
            )
        );
        let out = tb.exec(2, &["hostname"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{}-h2", tb.name)
        );
        let out = tb.ssh(1, "hostname");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{}-h1", tb.name)
        );
        let dir = tb.dir.clone();
        tb.down().expect("down");
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
