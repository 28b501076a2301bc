//! airlock's own known-hosts file: trust on first use, refuse changed keys.
//!
//! airlock never reads or writes the user's `~/.ssh/known_hosts`; the app passes the
//! path of airlock's own file. One line per key:
//! `host:port key-type base64` (IPv6 hosts as `[addr]:port`); `#` starts a comment.
//!
//! 1. [`KnownHosts::check`] reads the file and looks for lines naming `host:port`.
//! 2. A line with the presented key: known, accepted.
//! 3. Lines for the host but none with this key: [`RemoteError::HostKeyChanged`],
//!    naming the file and the line to remove to accept the new key on purpose.
//! 4. No line for the host: the key is appended (file mode 0600, written atomically)
//!    and [`HostKeyInfo::newly_trusted`] tells the app to show the fingerprint.
//!
//! The wizard asks first instead: [`super::ssh::scan_host_key`] fetches a host's key
//! without logging in, [`KnownHosts::lookup`] says whether it is known, new or changed,
//! and [`KnownHosts::trust`] records the keys the user accepted.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use russh::keys::{HashAlg, PublicKey};

use super::RemoteError;

/// What is known about a host's key after a successful check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKeyInfo {
    /// `host:port` as written in the file.
    pub host: String,
    /// The key type, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// The fingerprint as OpenSSH shows it: `SHA256:<base64>`.
    pub fingerprint: String,
    /// The key was not known before and has just been recorded (trust on first use):
    /// show the fingerprint to the user.
    pub newly_trusted: bool,
}

/// What the known-hosts file says of a key a host presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "trust")]
pub enum KeyTrust {
    /// Recorded for this host: accepted.
    Known,
    /// The host is not in the file: ask the user (or trust on first use).
    New,
    /// The host is recorded with another key, at this 1-based line: refused.
    Changed {
        /// The line holding the recorded key.
        line: usize,
    },
}

/// airlock's known-hosts file. Checks from many connections at once are serialised.
#[derive(Debug)]
pub struct KnownHosts {
    path: PathBuf,
    lock: Mutex<()>,
}

impl KnownHosts {
    /// The file at `path` (created on first use).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept `key` for `host:port` if it is recorded, record it if the host is new,
    /// refuse it if the host is recorded with another key.
    pub fn check(
        &self,
        host: &str,
        port: u16,
        key: &PublicKey,
    ) -> Result<HostKeyInfo, RemoteError> {
        let _guard = self.guard();
        let (label, algorithm, base64) = self.encode(host, port, key)?;
        let fingerprint = fingerprint(key);
        let text = self.read()?;
        let newly_trusted = match self.find(&text, &label, &algorithm, &base64)? {
            KeyTrust::Known => false,
            KeyTrust::Changed { line } => {
                return Err(RemoteError::HostKeyChanged {
                    host: label,
                    fingerprint,
                    known_hosts: self.path.clone(),
                    line,
                });
            }
            KeyTrust::New => {
                self.append(text, &label, &algorithm, &base64)?;
                true
            }
        };
        Ok(HostKeyInfo {
            host: label,
            algorithm,
            fingerprint,
            newly_trusted,
        })
    }

    /// What the file says of `key` for `host:port`, changing nothing.
    pub fn lookup(&self, host: &str, port: u16, key: &PublicKey) -> Result<KeyTrust, RemoteError> {
        let _guard = self.guard();
        let (label, algorithm, base64) = self.encode(host, port, key)?;
        let text = self.read()?;
        self.find(&text, &label, &algorithm, &base64)
    }

    /// Record `key` for `host:port` (the user accepted its fingerprint). A key already
    /// recorded is left alone; a host recorded with another key is refused.
    pub fn trust(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), RemoteError> {
        self.check(host, port, key).map(drop)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `(host:port, key type, base64)` as written in the file.
    fn encode(
        &self,
        host: &str,
        port: u16,
        key: &PublicKey,
    ) -> Result<(String, String, String), RemoteError> {
        let encoded = key.to_openssh().map_err(|e| self.error(e.to_string()))?;
        let base64 = encoded
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        Ok((
            host_label(host, port),
            key.algorithm().as_str().to_string(),
            base64,
        ))
    }

    fn read(&self) -> Result<String, RemoteError> {
        match fs_err::read_to_string(&self.path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(self.error(e.to_string())),
        }
    }

    fn find(
        &self,
        text: &str,
        label: &str,
        algorithm: &str,
        base64: &str,
    ) -> Result<KeyTrust, RemoteError> {
        let mut first_line_for_host = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, kind, data, ..] = fields[..] else {
                return Err(self.error(format!(
                    "line {}: expected `host:port key-type base64`; fix or delete it",
                    index + 1
                )));
            };
            if name != label {
                continue;
            }
            if kind == algorithm && data == base64 {
                return Ok(KeyTrust::Known);
            }
            first_line_for_host.get_or_insert(index + 1);
        }
        Ok(match first_line_for_host {
            Some(line) => KeyTrust::Changed { line },
            None => KeyTrust::New,
        })
    }

    fn append(
        &self,
        mut text: String,
        label: &str,
        algorithm: &str,
        base64: &str,
    ) -> Result<(), RemoteError> {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{label} {algorithm} {base64}\n"));
        self.write(&text).map_err(|e| self.error(e.to_string()))
    }

    fn write(&self, text: &str) -> std::io::Result<()> {
        use fs_err::os::unix::fs::OpenOptionsExt as _;
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            fs_err::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("airlock-tmp");
        let mut file = fs_err::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs_err::rename(&tmp, &self.path)
    }

    fn error(&self, reason: String) -> RemoteError {
        RemoteError::KnownHosts {
            path: self.path.clone(),
            reason,
        }
    }
}

/// `host:port`, with IPv6 addresses in brackets.
pub fn host_label(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The key's fingerprint as OpenSSH prints it: `SHA256:<base64 without padding>`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        let keypair = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
        PublicKey::from(keypair.public)
    }

    #[test]
    fn first_use_records_then_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = KnownHosts::new(dir.path().join("sub/known_hosts"));
        let first = hosts.check("10.0.0.1", 22, &key(1)).unwrap();
        assert!(first.newly_trusted);
        assert!(first.fingerprint.starts_with("SHA256:"));
        let again = hosts.check("10.0.0.1", 22, &key(1)).unwrap();
        assert!(!again.newly_trusted);
        assert_eq!(again.fingerprint, first.fingerprint);
        let text = fs_err::read_to_string(hosts.path()).unwrap();
        assert!(text.starts_with("10.0.0.1:22 ssh-ed25519 "), "{text}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs_err::metadata(hosts.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn lookup_changes_nothing_and_trust_records() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = KnownHosts::new(dir.path().join("known_hosts"));
        assert_eq!(
            hosts.lookup("10.0.0.1", 22, &key(1)).unwrap(),
            KeyTrust::New
        );
        assert!(!hosts.path().exists(), "a lookup wrote the file");
        hosts.trust("10.0.0.1", 22, &key(1)).unwrap();
        hosts.trust("10.0.0.1", 22, &key(1)).unwrap();
        let text = fs_err::read_to_string(hosts.path()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(
            hosts.lookup("10.0.0.1", 22, &key(1)).unwrap(),
            KeyTrust::Known
        );
        assert_eq!(
            hosts.lookup("10.0.0.1", 22, &key(2)).unwrap(),
            KeyTrust::Changed { line: 1 }
        );
        assert_eq!(
            hosts.lookup("10.0.0.1", 2222, &key(2)).unwrap(),
            KeyTrust::New
        );
        assert!(
            hosts.trust("10.0.0.1", 22, &key(2)).is_err(),
            "a changed key is refused"
        );
    }

    #[test]
    fn changed_key_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = KnownHosts::new(dir.path().join("known_hosts"));
        hosts.check("10.0.0.1", 22, &key(1)).unwrap();
        hosts.check("::1", 2222, &key(2)).unwrap();
        hosts.check("10.0.0.2", 22, &key(3)).unwrap();
        // Same address, other port: a different host entry.
        assert!(
            hosts
                .check("10.0.0.2", 2200, &key(9))
                .unwrap()
                .newly_trusted
        );
        let err = hosts.check("10.0.0.2", 22, &key(4)).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, RemoteError::HostKeyChanged { line: 3, .. }),
            "{message}"
        );
        assert!(message.contains("remove line 3 of"), "{message}");
        assert!(message.contains("known_hosts"), "{message}");
    }

    #[test]
    fn bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs_err::write(&path, "# comment\n\nhost-without-key\n").unwrap();
        let err = KnownHosts::new(&path).check("h", 22, &key(1)).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(host_label("fe80::1", 22), "[fe80::1]:22");
        assert_eq!(host_label("node1", 2222), "node1:2222");
    }
}
