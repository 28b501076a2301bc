//! Cluster runtimes: what turns hosts that hold an unpacked cluster image into a cluster.
//!
//! 1. [`kubernetes`] is the kubeadm-based runtime: its PKI, kubeconfigs and the
//!    load balancer that workers run in front of the API servers.

pub mod kubernetes;
