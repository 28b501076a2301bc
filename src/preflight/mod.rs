//! Preflight: read-only checks of every host before anything changes.
//!
//! 1. [`run`] sends `installer/preflight-facts.sh` to every host at once, as root, in
//!    one SSH round trip per host. The script prints `key=value` facts and changes
//!    nothing (its fsync probe writes a temporary file and removes it).
//! 2. A host that cannot be reached, refuses the login or refuses sudo gets one failing
//!    [`Finding`] for that and no others: its facts are unknown.
//! 3. [`checks::judge_host`] judges each host's [`Facts`] against the image's
//!    [`Requirements`]; [`checks::judge_cluster`] judges all hosts together (clock
//!    skew, duplicate hostnames and machine-ids). Both are pure functions.
//! 4. Every finding is passed to `on_finding` as it is known (the wizard's live table),
//!    and the whole [`Report`] is returned. Checks the user chose to skip are reported
//!    as [`Status::Skipped`], so the skip is recorded.
//!
//! The checks and their fixes are listed in `docs/preflight.md`.

pub mod checks;
mod facts;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

pub use checks::{CHECKS, check_of, judge_cluster, judge_host, judge_peers, peer_targets};
pub use facts::Facts;

use crate::image::oci::ClusterConfig;
use crate::remote::{Remote, RemoteCommand, RemoteError};
use crate::spec::clusterfile::{ClusterSpec, Host};

const FACTS_SCRIPT: &str = include_str!("../../installer/preflight-facts.sh");
const PEERS_SCRIPT: &str = include_str!("../../installer/preflight-peers.sh");

/// Which check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    /// The SSH port answers.
    Reach,
    /// The login is accepted.
    Auth,
    /// Commands can run as root.
    Sudo,
    /// OS and architecture are among the image's platforms.
    Platform,
    /// Kernel version.
    Kernel,
    /// CPUs for the host's role.
    Cpu,
    /// Memory for the host's role.
    Memory,
    /// Free disk at the data root for the payload.
    Disk,
    /// Synchronous write latency (etcd), masters only.
    Fsync,
    /// Required ports are free.
    Ports,
    /// Swap is off.
    Swap,
    /// Clocks agree across hosts.
    Clock,
    /// Hostname valid and unique.
    Hostname,
    /// machine-id unique.
    MachineId,
    /// overlay and `br_netfilter` loaded.
    Modules,
    /// IP forwarding and bridge netfilter sysctls.
    Sysctl,
    /// cgroup v2.
    Cgroup,
    /// SELinux / AppArmor.
    Lsm,
    /// No firewall service in the way.
    Firewall,
    /// No other container runtime present.
    Runtime,
    /// No earlier Kubernetes state.
    Leftovers,
    /// The registry domain does not already point elsewhere.
    RegistryDomain,
    /// Pod and service CIDRs do not overlap host networks.
    Cidr,
    /// A default route exists.
    DefaultRoute,
    /// Every host reaches the ports its peers will listen on.
    Peers,
}

impl CheckId {
    /// The id as written in docs and `airlock check --pre` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reach => "reach",
            Self::Auth => "auth",
            Self::Sudo => "sudo",
            Self::Platform => "platform",
            Self::Kernel => "kernel",
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Fsync => "fsync",
            Self::Ports => "ports",
            Self::Swap => "swap",
            Self::Clock => "clock",
            Self::Hostname => "hostname",
            Self::MachineId => "machine-id",
            Self::Modules => "modules",
            Self::Sysctl => "sysctl",
            Self::Cgroup => "cgroup",
            Self::Lsm => "lsm",
            Self::Firewall => "firewall",
            Self::Runtime => "runtime",
            Self::Leftovers => "leftovers",
            Self::RegistryDomain => "registry-domain",
            Self::Cidr => "cidr",
            Self::DefaultRoute => "default-route",
            Self::Peers => "peers",
        }
    }

    /// Whether only a Kubernetes runtime needs it (etcd, kubelet, CNI, kubeadm): for
    /// other runtimes it shows as not needed.
    pub fn kubernetes_only(self) -> bool {
        matches!(
            self,
            Self::Fsync
                | Self::Swap
                | Self::Modules
                | Self::Sysctl
                | Self::Runtime
                | Self::Leftovers
                | Self::Cidr
        )
    }

    /// Whether the user may skip it: without a session nothing else can run.
    pub fn can_skip(self) -> bool {
        !matches!(self, Self::Reach | Self::Auth | Self::Sudo)
    }
}

impl CheckId {
    /// The checks named in `text` (`ID[,ID...]`, or `all`) that the user may skip.
    /// Unknown ids and the three that cannot be skipped are refused, naming them.
    pub fn parse_list(text: &str) -> Result<BTreeSet<CheckId>, String> {
        let skippable = || CHECKS.iter().map(|c| c.id).filter(|id| id.can_skip());
        let mut out = BTreeSet::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word.eq_ignore_ascii_case("all") {
                out.extend(skippable());
                continue;
            }
            let id = CHECKS
                .iter()
                .map(|c| c.id)
                .find(|id| id.as_str().eq_ignore_ascii_case(word))
                .ok_or_else(|| {
                    let known: Vec<&str> = skippable().map(CheckId::as_str).collect();
                    format!(
                        "unknown check {word:?}; use `all` or some of: {}",
                        known.join(", ")
                    )
                })?;
            if !id.can_skip() {
                return Err(format!(
                    "check {word:?} cannot be ignored: without an SSH session as root nothing else can run"
                ));
            }
            out.insert(id);
        }
        Ok(out)
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a failed check is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The install cannot work: it does not start until fixed or skipped.
    Error,
    /// The install may work, or airlock fixes it itself.
    Warning,
}

/// One check of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    /// Its id.
    pub id: CheckId,
    /// How bad a failure is.
    pub severity: Severity,
    /// A short title for tables.
    pub title: &'static str,
}

/// The result of a check on a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Fine.
    Pass,
    /// An error-severity problem: the install waits.
    Fail,
    /// A warning.
    Warn,
    /// Not judged: the user skipped it.
    Skipped,
}

/// One check's result on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The host.
    pub host: IpAddr,
    /// The check.
    pub check: CheckId,
    /// Its result.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do about it (empty when it passed).
    pub fix: String,
}

impl Finding {
    /// One line for a terminal: `HOST CHECK fail: MESSAGE`, and the fix indented on a
    /// second line when there is one.
    pub fn line(&self) -> String {
        let status = match self.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Warn => "warn",
            Status::Skipped => "skipped",
        };
        let mut line = format!("{} {} {status}: {}", self.host, self.check, self.message);
        if !self.fix.is_empty() {
            line.push_str(&format!("\n    fix: {}", self.fix));
        }
        line
    }
}

/// What the image needs of the hosts (from its metadata, or defaults).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// Supported platforms, `linux/amd64`; empty accepts any.
    pub platforms: Vec<String>,
    /// CPUs per master.
    pub master_cpus: u64,
    /// Memory per master, MiB.
    pub master_mem_mb: u64,
    /// CPUs per node.
    pub node_cpus: u64,
    /// Memory per node, MiB.
    pub node_mem_mb: u64,
    /// Disk for the runtime beyond the payload, MiB.
    pub disk_mb: u64,
    /// Size of the payload sent to a host, bytes.
    pub payload_bytes: u64,
    /// Extra ports the image's applications listen on.
    pub ports: Vec<u16>,
    /// Pod network.
    pub pod_cidr: String,
    /// Service network.
    pub service_cidr: String,
    /// The runtime is Kubernetes: its ports and the Kubernetes-only checks apply.
    pub kubernetes: bool,
}

impl Default for Requirements {
    /// kubeadm's minimums and default networks.
    fn default() -> Self {
        Self {
            platforms: Vec::new(),
            master_cpus: 2,
            master_mem_mb: 2048,
            node_cpus: 1,
            node_mem_mb: 1024,
            disk_mb: 2048,
            payload_bytes: 0,
            ports: Vec::new(),
            pod_cidr: "100.64.0.0/10".to_string(),
            service_cidr: "10.96.0.0/12".to_string(),
            kubernetes: true,
        }
    }
}

impl Requirements {
    /// What an image needs, from its config: kubeadm's minimums for a Kubernetes
    /// runtime; for any other runtime (`generic`, empty) only the platform, room for the
    /// payload and the registry's port. Minimum resources the image declares raise the
    /// CPU and memory asked of every host.
    pub fn for_image(config: &ClusterConfig, payload_bytes: u64) -> Self {
        let mut req = Self {
            platforms: config.platforms.clone(),
            payload_bytes,
            ..Self::default()
        };
        if !is_kubernetes(&config.runtime) {
            req = Self {
                master_cpus: 1,
                master_mem_mb: 0,
                node_cpus: 1,
                node_mem_mb: 0,
                disk_mb: 0,
                kubernetes: false,
                ..req
            };
        }
        if let Some(min) = &config.min_resources {
            if let Some(cpus) = min.cpus.map(u64::from) {
                req.master_cpus = req.master_cpus.max(cpus);
                req.node_cpus = req.node_cpus.max(cpus);
            }
            if let Some(mib) = min.memory_mib {
                req.master_mem_mb = req.master_mem_mb.max(mib);
                req.node_mem_mb = req.node_mem_mb.max(mib);
            }
        }
        req
    }
}

/// Whether an image's runtime (its `runtime` config field) is Kubernetes.
pub fn is_kubernetes(runtime: &str) -> bool {
    !(runtime.is_empty() || runtime == "generic")
}

/// Everything preflight found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every finding, host by host.
    pub findings: Vec<Finding>,
    /// The facts of every host that answered.
    pub facts: BTreeMap<IpAddr, Facts>,
}

impl Report {
    /// Whether the install may start: no check failed (skipped ones do not count).
    pub fn is_ok(&self) -> bool {
        !self.findings.iter().any(|f| f.status == Status::Fail)
    }
}

/// How to reach each host: a connected [`Remote`], or why connecting failed.
pub type Targets = BTreeMap<IpAddr, Result<Arc<dyn Remote>, RemoteError>>;

/// Check every host of `spec` in parallel; `skip` lists checks the user skipped.
pub async fn run(
    spec: &ClusterSpec,
    req: &Requirements,
    targets: &Targets,
    skip: &BTreeSet<CheckId>,
    on_finding: &(dyn Fn(&Finding) + Send + Sync),
) -> Report {
    let skipped = |id: CheckId| id.can_skip() && skip.contains(&id);
    let per_host = spec.hosts.iter().map(|host| async move {
        let (facts, findings) = match targets.get(&host.ip) {
            Some(Ok(remote)) => match gather(remote.as_ref(), spec).await {
                Ok(facts) => {
                    let findings = judge_host(spec, req, host, &facts, &skipped);
                    (Some(facts), findings)
                }
                Err(e) => (None, unreachable_findings(host, &e)),
            },
            Some(Err(e)) => (None, unreachable_findings(host, e)),
            None => (
                None,
                unreachable_findings(
                    host,
                    &RemoteError::Connect {
                        host: host.ip.to_string(),
                        reason: "no connection was made".to_string(),
                    },
                ),
            ),
        };
        for f in &findings {
            on_finding(f);
        }
        (host.ip, facts, findings)
    });
    let mut report = Report::default();
    for (ip, facts, findings) in join_all(per_host).await {
        report.findings.extend(findings);
        if let Some(facts) = facts {
            report.facts.insert(ip, facts);
        }
    }
    let mut cluster = judge_cluster(&report.facts, &skipped);
    let answered = spec
        .hosts
        .iter()
        .filter(|h| report.facts.contains_key(&h.ip));
    let peers = answered.filter_map(|host| match targets.get(&host.ip) {
        Some(Ok(remote)) => Some(probe_peers(spec, req, host, remote.as_ref(), &skipped)),
        _ => None,
    });
    cluster.extend(join_all(peers).await);
    for f in &cluster {
        on_finding(f);
    }
    report.findings.extend(cluster);
    report
}

/// From `host`, try a TCP connection to every port its peers will listen on.
async fn probe_peers(
    spec: &ClusterSpec,
    req: &Requirements,
    host: &Host,
    remote: &dyn Remote,
    skipped: &(dyn Fn(CheckId) -> bool + Sync),
) -> Finding {
    let targets = peer_targets(spec, req, host);
    if targets.is_empty() {
        return judge_peers(host.ip, &[], "", skipped);
    }
    let cmd = RemoteCommand::script(PEERS_SCRIPT, targets.iter().map(String::as_str))
        .timeout(std::time::Duration::from_secs(30));
    let output = match remote.run(&cmd).await {
        Ok(out) => out.stdout_text(),
        Err(e) => format!("error={e}"),
    };
    judge_peers(host.ip, &targets, &output, skipped)
}

/// One round trip: the facts script as root.
async fn gather(remote: &dyn Remote, spec: &ClusterSpec) -> Result<Facts, RemoteError> {
    let cmd = RemoteCommand::script(
        FACTS_SCRIPT,
        [spec.data_root.as_str(), spec.registry.domain.as_str()],
    )
    .sudo()
    .timeout(std::time::Duration::from_secs(60));
    let out = remote.run(&cmd).await?;
    let facts = Facts::parse(&out.stdout_text());
    if facts.get("uid").is_none() {
        // sudo refused before the script ran.
        return Err(RemoteError::CommandFailed {
            host: remote.host().to_string(),
            command: "sudo".to_string(),
            status: out.status,
            stderr: out.stderr_tail(3),
        });
    }
    Ok(facts)
}

/// The one finding a host gets when its facts could not be read.
fn unreachable_findings(target: &Host, err: &RemoteError) -> Vec<Finding> {
    let (host, port, user) = (target.ip, target.ssh.port, target.ssh.user.as_str());
    let finding = |check, message: String, fix: &str| Finding {
        host,
        check,
        status: Status::Fail,
        message,
        fix: fix.to_string(),
    };
    let pass = |check, message: String| Finding {
        host,
        check,
        status: Status::Pass,
        message,
        fix: String::new(),
    };
    match err {
        RemoteError::Auth { .. } => vec![
            pass(CheckId::Reach, format!("port {port} answers")),
            finding(
                CheckId::Auth,
                format!("login as {user} refused"),
                "check the user, password or key file on the Credentials screen",
            ),
        ],
        RemoteError::CommandFailed { stderr, .. } => vec![
            pass(CheckId::Reach, format!("port {port} answers")),
            pass(CheckId::Auth, format!("logged in as {user}")),
            finding(
                CheckId::Sudo,
                format!("{user} cannot become root: {}", first_line(stderr)),
                "give the user sudo rights, or enter the sudo password on the Credentials screen",
            ),
        ],
        RemoteError::HostKeyChanged { .. } => vec![finding(
            CheckId::Reach,
            err.to_string(),
            "if the host was reinstalled, accept its new key on the Credentials screen",
        )],
        other => vec![finding(
            CheckId::Reach,
            other.to_string(),
            "check the IP, the SSH port, that sshd runs and that no firewall is in the way",
        )],
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("refused")
}

#[cfg(test)]
mod tests;
