//! A real OpenSSH server on loopback for tests, and the users and keys they need.
//!
//! 1. [`skip_unless_sshd`] says (on stderr) why a test cannot run and returns
//!    `true` then: not root, or no `/usr/sbin/sshd`.
//! 2. [`Sshd::start`] writes a config into a temp dir (its own host key, its own
//!    authorized-keys file, password, keyboard-interactive and root login allowed,
//!    PAM on), starts `sshd -D -e` on a free 127.0.0.1 port and waits for its banner.
//! 3. [`TestUser::create`] adds a user with a password (`useradd`, `chpasswd`) and,
//!    if asked, a sudoers drop-in that requires that password; dropping removes both.
//! 4. [`keygen`] makes client keys with `ssh-keygen`.
//!
//! Every process started here is ended by its PID when its guard drops.

use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// The sshd binary the tests run.
pub(crate) const SSHD: &str = "/usr/sbin/sshd";

/// Whether the current test must be skipped; prints why.
pub(crate) fn skip_unless_sshd(test: &str) -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED {test}: needs root to run sshd and create test users");
        return true;
    }
    if !Path::new(SSHD).exists() || !Path::new("/usr/bin/ssh-keygen").exists() {
        eprintln!("SKIPPED {test}: {SSHD} or ssh-keygen missing (apt-get install openssh-server)");
        return true;
    }
    false
}

/// A running sshd; killed (with its session processes) on drop.
pub(crate) struct Sshd {
    /// The port it listens on, on 127.0.0.1.
    pub(crate) port: u16,
    /// Its temp dir (config, host key, authorized keys, log).
    pub(crate) dir: tempfile::TempDir,
    child: Child,
}

impl Sshd {
    /// Start an sshd. `extra` config lines come first, so they win over the defaults.
    pub(crate) fn start(extra: &str) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        let host_key = dir.path().join("host_key");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key));
        let authorized = dir.path().join("authorized_keys");
        fs_err::write(&authorized, "").unwrap();
        set_mode(&authorized, 0o644);
        fs_err::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        let d = dir.path().display();
        let config = format!(
            "{extra}\nPort {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
             PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nStrictModes no\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication yes\nPermitRootLogin yes\n\
             PubkeyAuthentication yes\nUsePAM yes\nAllowTcpForwarding yes\nMaxStartups 100\n\
             LogLevel VERBOSE\n"
        );
        let config_path = dir.path().join("sshd_config");
        fs_err::write(&config_path, config).unwrap();
        let log = fs_err::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.into_parts().0)
            .spawn()
            .unwrap();
        let sshd = Sshd { port, dir, child };
        sshd.wait_ready();
        sshd
    }

    fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut banner = [0u8; 4];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sshd did not start: {}", self.log());
    }

    /// The public half of its host key, as `type base64 comment`.
    pub(crate) fn host_public_key(&self) -> String {
        fs_err::read_to_string(self.dir.path().join("host_key.pub")).unwrap()
    }

    /// `ssh-keygen -l` of its host key: `SHA256:...`.
    pub(crate) fn host_fingerprint(&self) -> String {
        let out = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join("host_key.pub")));
        out.split_whitespace().nth(1).unwrap().to_string()
    }

    /// Allow `public_key_file`'s key to log in (as any user).
    pub(crate) fn authorize(&self, public_key_file: &Path) {
        let line = fs_err::read_to_string(public_key_file).unwrap();
        let path = self.dir.path().join("authorized_keys");
        let mut all = fs_err::read_to_string(&path).unwrap();
        all.push_str(&line);
        fs_err::write(path, all).unwrap();
    }

    /// Everything sshd logged so far.
    pub(crate) fn log(&self) -> String {
        fs_err::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// SIGKILL the per-connection sshd processes (and everything below them): every
    /// session drops as if the network went away; the listener stays.
    pub(crate) fn kill_sessions(&self) {
        for pid in descendants(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_sessions();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Process IDs below `pid`, deepest last.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in fs_err::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs_err::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Field 4, after the parenthesised command name (which may hold spaces).
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parents.push((child, ppid));
        }
    }
    let mut found = vec![pid];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        index += 1;
    }
    found.remove(0);
    found
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `useradd` and friends lock /etc/passwd: one at a time.
static USERS: Mutex<()> = Mutex::new(());

/// A local user with a password; removed on drop.
pub(crate) struct TestUser {
    /// Login name.
    pub(crate) name: String,
    /// Its password (also its sudo password).
    pub(crate) password: String,
    sudoers: Option<PathBuf>,
}

impl TestUser {
    /// Create `name` with a fresh password; with `sudo`, allow it to run anything as
    /// root after giving that password (never cached).
    pub(crate) fn create(name: &str, sudo: bool) -> TestUser {
        let _guard = USERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = Command::new("userdel")
            .args(["-r", name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", name]));
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        chpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success());
        let sudoers = sudo.then(|| {
            let path = PathBuf::from(format!("/etc/sudoers.d/{name}"));
            fs_err::write(
                &path,
                format!(
                    "Defaults:{name} timestamp_timeout=0, !lecture\n{name} ALL=(ALL:ALL) ALL\n"
                ),
            )
            .unwrap();
            set_mode(&path, 0o440);
            path
        });
        TestUser {
            name: name.to_string(),
            password,
            sudoers,
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _guard = USERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(path) = &self.sudoers {
            let _ = fs_err::remove_file(path);
        }
        let _ = Command::new("userdel")
            .args(["-f", "-r", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Make a client key pair of `kind` (`ed25519`, `rsa`, `ecdsa`) in `dir`; returns
/// the private key's path (the public one is beside it, `.pub`).
pub(crate) fn keygen(dir: &Path, kind: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(format!("id_{kind}"));
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            kind,
            "-N",
            passphrase,
            "-C",
            "airlock-test",
            "-f",
        ])
        .arg(&path));
    path
}

/// Run a setup command; panic with its output if it fails.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
