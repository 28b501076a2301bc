//! The Kubernetes runtime: the parts airlock makes itself instead of leaving them to
//! kubeadm, so that they are the same on every install and last as long as the cluster.
//!
//! 1. [`pki`] generates the whole cluster PKI (CAs, serving and client certificates,
//!    the service-account key pair) in kubeadm's layout, valid for 100 years, and
//!    reads a layout back to report when each certificate expires.
//! 2. [`kubeconfig`] writes and reads the kubeconfig files of that layout
//!    (`admin.conf`, `kubelet.conf`, ...), with the credentials embedded.
//! 3. [`lb`] is the TCP load balancer a worker runs on 127.0.0.1:6443 in front of
//!    every API server, with HTTPS `/readyz` health checks, so that a cluster needs
//!    no external load balancer to be highly available.
//! 4. [`runtime`] is the runtime the install engine drives (kubeadm over SSH), and
//!    [`scale`] keeps running masters and workers current when masters join.
//!
//! kubeadm itself (init, join, upgrade) is driven by the install engine; see
//! `docs/kubernetes.md` for what is built so far.

pub mod kubeadm;
pub mod kubeconfig;
pub mod lb;
pub mod pki;
pub mod runtime;
pub mod scale;
