//! The Clusterfile: sealer's `sealer.io/v2` description of hosts, roles and credentials.
