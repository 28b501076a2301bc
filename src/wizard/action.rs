//! What the wizard asks the runner to do. Only the runner performs actions; their
//! results come back as [`super::Event`]s.

use std::collections::BTreeSet;

use super::state::{HostKeyRow, KeyTarget};
use crate::preflight::CheckId;
use crate::spec::clusterfile::ClusterSpec;

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Verify the bundle's integrity.
    Verify,
    /// Fetch every host's SSH key (no login) and compare it with the known-hosts file.
    ScanHostKeys {
        /// The hosts.
        targets: Vec<KeyTarget>,
    },
    /// Record the host keys the user accepted.
    TrustHostKeys {
        /// The accepted rows (new keys).
        rows: Vec<HostKeyRow>,
    },
    /// Connect to every host and run the preflight checks, skipping `skip`.
    Preflight {
        /// The cluster.
        spec: Box<ClusterSpec>,
        /// Checks the user skipped.
        skip: BTreeSet<CheckId>,
    },
    /// Save the Clusterfile text (mode 0600).
    SaveClusterfile {
        /// The YAML.
        yaml: String,
    },
    /// Run the install (again: finished steps are skipped).
    Install {
        /// The cluster.
        spec: Box<ClusterSpec>,
        /// Failed steps the user chose to skip: (host, step name).
        skip: Vec<(std::net::IpAddr, String)>,
    },
    /// Write a support bundle: logs, journal, Clusterfile without secrets, host facts.
    SupportBundle {
        /// The Clusterfile without secrets.
        yaml: String,
    },
    /// Leave, saving the session so it can resume.
    Quit,
}
