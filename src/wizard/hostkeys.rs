//! The host keys step behind the Credentials screen, over airlock's known-hosts file.
//!
//! 1. [`scan`] fetches every host's SSH key in parallel without logging in
//!    ([`scan_host_key`]) and looks each up in the file: known, new or changed.
//! 2. [`trust`] records the keys the user accepted (the file stays 0600; a key recorded
//!    meanwhile for another key of the same host is refused, not overwritten).

use std::time::Duration;

use futures_util::future::join_all;
use russh::keys::PublicKey;

use super::state::{HostKeyRow, KeyStatus, KeyTarget};
use crate::remote::RemoteError;
use crate::remote::known_hosts::{KeyTrust, KnownHosts, fingerprint};
use crate::remote::ssh::scan_host_key;

/// How long a host has to answer.
const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// One row per target, in order.
pub async fn scan(known_hosts: &KnownHosts, targets: &[KeyTarget]) -> Vec<HostKeyRow> {
    join_all(targets.iter().map(|t| async move {
        match scan_host_key(&t.host, t.port, SCAN_TIMEOUT).await {
            Ok(key) => row(known_hosts, t, &key),
            Err(e) => HostKeyRow {
                target: t.clone(),
                algorithm: String::new(),
                fingerprint: String::new(),
                public_key: String::new(),
                status: KeyStatus::Unreachable {
                    reason: short_reason(&e),
                },
            },
        }
    }))
    .await
}

fn row(known_hosts: &KnownHosts, target: &KeyTarget, key: &PublicKey) -> HostKeyRow {
    let status = match known_hosts.lookup(&target.host, target.port, key) {
        Ok(KeyTrust::Known) => KeyStatus::Known,
        Ok(KeyTrust::New) => KeyStatus::New,
        Ok(KeyTrust::Changed { line }) => KeyStatus::Changed {
            reason: format!(
                "the host key changed; if the host was reinstalled on purpose, remove line {line} of {} and press Esc, then Ctrl-N",
                known_hosts.path().display()
            ),
        },
        Err(e) => KeyStatus::Changed {
            reason: e.to_string(),
        },
    };
    HostKeyRow {
        target: target.clone(),
        algorithm: key.algorithm().as_str().to_string(),
        fingerprint: fingerprint(key),
        public_key: key.to_openssh().unwrap_or_default(),
        status,
    }
}

fn short_reason(e: &RemoteError) -> String {
    match e {
        RemoteError::Connect { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Record the accepted rows' keys.
pub fn trust(known_hosts: &KnownHosts, rows: &[HostKeyRow]) -> anyhow::Result<()> {
    for r in rows {
        let key = PublicKey::from_openssh(&r.public_key).map_err(|e| {
            anyhow::anyhow!("{}: the fetched key does not parse: {e}", r.target.label())
        })?;
        known_hosts.trust(&r.target.host, r.target.port, &key)?;
    }
    Ok(())
}
