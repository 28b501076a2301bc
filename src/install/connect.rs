//! From a resolved [`ClusterSpec`] to a connected [`Remote`] per host.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::remote::known_hosts::{HostKeyInfo, KnownHosts};
use crate::remote::ssh::{SshAuth, SshRemote, SshTarget};
use crate::remote::{Remote, RemoteError};
use crate::spec::clusterfile::{ClusterSpec, Host};

/// At most this many hosts are connected to at once.
pub const CONNECT_CONCURRENCY: usize = 32;

/// The SSH target for `host`: its key if it has one, else its password.
pub fn target_for(host: &Host) -> SshTarget {
    let ssh = &host.ssh;
    let auth = match (&ssh.key, &ssh.password) {
        (Some(path), _) => SshAuth::Key {
            path: path.clone(),
            passphrase: ssh.key_passphrase.clone(),
        },
        (None, Some(pw)) => SshAuth::Password(pw.clone()),
        (None, None) => SshAuth::Agent {
            socket: PathBuf::new(),
        },
    };
    let mut target = SshTarget::new(host.ip.to_string(), ssh.user.clone(), auth.clone());
    target.port = ssh.port;
    target.sudo_password = ssh.sudo_password.clone();
    if let Some(b) = &ssh.bastion {
        let mut jump = SshTarget::new(b.host.clone(), b.user.clone(), auth);
        jump.port = b.port;
        target.bastion = Some(Box::new(jump));
    }
    target
}

/// Connected hosts, and the host keys trusted for the first time while connecting.
pub struct Connected {
    /// One remote per host.
    pub remotes: BTreeMap<IpAddr, Arc<dyn Remote>>,
    /// Host keys seen for the first time (to show the user their fingerprints).
    pub new_keys: Vec<HostKeyInfo>,
}

/// Connect to every host of `spec` in parallel. Every failure is returned, each
/// naming its host, so the user can fix them all at once.
pub async fn connect_all(
    spec: &ClusterSpec,
    known_hosts: &KnownHosts,
) -> Result<Connected, Vec<RemoteError>> {
    let fleet = crate::remote::fleet::Fleet::new(CONNECT_CONCURRENCY);
    // Owned items: a closure over borrowed hosts is not general enough for `Send` futures.
    let targets: Vec<(IpAddr, SshTarget)> =
        spec.hosts.iter().map(|h| (h.ip, target_for(h))).collect();
    let results = fleet
        .each(targets, |(ip, target)| async move {
            SshRemote::connect(target, known_hosts)
                .await
                .map(|r| (ip, r))
        })
        .await;
    let mut remotes: BTreeMap<IpAddr, Arc<dyn Remote>> = BTreeMap::new();
    let mut new_keys = Vec::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok((ip, remote)) => {
                if remote.host_key().newly_trusted {
                    new_keys.push(remote.host_key().clone());
                }
                remotes.insert(ip, Arc::new(remote));
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(Connected { remotes, new_keys })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::clusterfile::Clusterfile;

    #[test]
    fn targets_carry_key_port_sudo_and_bastion() {
        let yaml = "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  ssh: {user: ops, pk: /k, port: 2200, sudoPasswd: s, bastion: 'jump@198.18.0.1:22'}\n  hosts:\n  - ips: [198.18.0.2]\n    roles: [master]\n";
        let spec = Clusterfile::parse("cf", yaml)
            .unwrap()
            .resolve(&|_| None)
            .unwrap();
        let t = target_for(&spec.hosts[0]);
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("198.18.0.2", 2200, "ops")
        );
        assert!(matches!(&t.auth, SshAuth::Key { path, .. } if path == std::path::Path::new("/k")));
        assert_eq!(t.sudo_password.as_ref().map(|s| s.expose()), Some("s"));
        let jump = t.bastion.expect("a bastion");
        assert_eq!(
            (jump.host.as_str(), jump.port, jump.user.as_str()),
            ("198.18.0.1", 22, "jump")
        );
        assert!(matches!(jump.auth, SshAuth::Key { .. }));
    }
}
