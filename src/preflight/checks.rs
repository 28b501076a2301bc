//! The checks and the pure functions that judge facts.
//!
//! 1. [`judge_host`] looks at one host's [`Facts`] against the [`Requirements`] of the
//!    image and the host's roles, and returns a [`Finding`] per check.
//! 2. [`judge_cluster`] looks at every host's facts together: clock skew, duplicate
//!    hostnames and machine-ids.
//! 3. Nothing here does I/O: the tests feed recorded facts.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::facts::Facts;
use super::{Check, CheckId, Finding, Requirements, Severity, Status};
use crate::spec::clusterfile::{ClusterSpec, Host};

/// Every check, in the order they are shown.
pub const CHECKS: &[Check] = &[
    check(CheckId::Reach, Severity::Error, "host reachable over SSH"),
    check(CheckId::Auth, Severity::Error, "login accepted"),
    check(CheckId::Sudo, Severity::Error, "root through sudo"),
    check(CheckId::Platform, Severity::Error, "OS and architecture"),
    check(CheckId::Kernel, Severity::Warning, "kernel version"),
    check(CheckId::Cpu, Severity::Error, "CPUs for the role"),
    check(CheckId::Memory, Severity::Error, "memory for the role"),
    check(CheckId::Disk, Severity::Error, "free disk for the payload"),
    check(
        CheckId::Fsync,
        Severity::Warning,
        "disk fsync latency (etcd)",
    ),
    check(CheckId::Ports, Severity::Error, "required ports free"),
    check(CheckId::Swap, Severity::Warning, "swap off"),
    check(CheckId::Clock, Severity::Error, "clocks agree"),
    check(
        CheckId::Hostname,
        Severity::Error,
        "hostname valid and unique",
    ),
    check(CheckId::MachineId, Severity::Error, "machine-id unique"),
    check(CheckId::Modules, Severity::Warning, "kernel modules"),
    check(CheckId::Sysctl, Severity::Warning, "network sysctls"),
    check(CheckId::Cgroup, Severity::Warning, "cgroup version"),
    check(CheckId::Lsm, Severity::Warning, "SELinux / AppArmor"),
    check(CheckId::Firewall, Severity::Warning, "host firewall"),
    check(
        CheckId::Runtime,
        Severity::Warning,
        "no other container runtime",
    ),
    check(
        CheckId::Leftovers,
        Severity::Error,
        "no Kubernetes leftovers",
    ),
    check(
        CheckId::RegistryDomain,
        Severity::Warning,
        "registry domain",
    ),
    check(CheckId::Cidr, Severity::Error, "pod/service CIDRs free"),
    check(CheckId::DefaultRoute, Severity::Error, "default route"),
    check(CheckId::Peers, Severity::Error, "hosts reach each other"),
];

const fn check(id: CheckId, severity: Severity, title: &'static str) -> Check {
    Check {
        id,
        severity,
        title,
    }
}

/// The catalogue entry of `id`.
pub fn check_of(id: CheckId) -> &'static Check {
    CHECKS.iter().find(|c| c.id == id).unwrap_or(&CHECKS[0])
}

/// The message of a Kubernetes-only check on an image of another runtime.
pub const NOT_NEEDED: &str = "not needed: the image runs no Kubernetes";

/// How far apart hosts' clocks may be.
pub const MAX_CLOCK_SKEW_SECS: u64 = 5;
/// Above this average synchronous write, etcd is too slow.
pub const MAX_FSYNC_US: u64 = 10_000;

/// Builds findings for one host, mapping a problem to Fail or Warn by severity.
struct Judge<'a> {
    host: IpAddr,
    skip: &'a dyn Fn(CheckId) -> bool,
    /// Kubernetes-only checks apply.
    kubernetes: bool,
    out: Vec<Finding>,
}

impl Judge<'_> {
    fn pass(&mut self, id: CheckId, message: impl Into<String>) {
        self.push(id, Status::Pass, message.into(), String::new());
    }

    fn problem(&mut self, id: CheckId, message: impl Into<String>, fix: impl Into<String>) {
        let status = match check_of(id).severity {
            Severity::Error => Status::Fail,
            Severity::Warning => Status::Warn,
        };
        self.push(id, status, message.into(), fix.into());
    }

    fn warn(&mut self, id: CheckId, message: impl Into<String>, fix: impl Into<String>) {
        self.push(id, Status::Warn, message.into(), fix.into());
    }

    fn push(&mut self, id: CheckId, status: Status, message: String, fix: String) {
        let (status, message, fix) = if (self.skip)(id) {
            (Status::Skipped, message, fix)
        } else if id.kubernetes_only() && !self.kubernetes {
            (Status::Skipped, NOT_NEEDED.to_string(), String::new())
        } else {
            (status, message, fix)
        };
        self.out.push(Finding {
            host: self.host,
            check: id,
            status,
            message,
            fix,
        });
    }
}

/// What a host needs, by its roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Minimum {
    cpus: u64,
    mem_mb: u64,
}

fn minimum(req: &Requirements, host: &Host) -> Minimum {
    if host.is_master() {
        Minimum {
            cpus: req.master_cpus,
            mem_mb: req.master_mem_mb,
        }
    } else {
        Minimum {
            cpus: req.node_cpus,
            mem_mb: req.node_mem_mb,
        }
    }
}

/// The ports `host` will need free.
pub fn required_ports(spec: &ClusterSpec, req: &Requirements, host: &Host) -> Vec<u16> {
    let mut ports = Vec::new();
    if req.kubernetes {
        ports.push(10250);
        if host.is_master() {
            ports.extend([6443, 2379, 2380]);
        }
    }
    let registry_here = if spec.registry.ha {
        host.is_master()
    } else {
        spec.first_master().ip == host.ip
    };
    if registry_here {
        ports.push(spec.registry.port);
    }
    ports.extend(req.ports.iter().copied());
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `uname -m` to the OCI architecture name.
fn oci_arch(uname: &str) -> &str {
    match uname {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "armv7l" => "arm",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// `6.1.0-18-amd64` to `(6, 1)`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// An IPv4 network `a.b.c.d/n` as (address, prefix).
pub fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = text.trim().split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((addr.parse().ok()?, prefix))
}

/// Whether two IPv4 networks share an address.
pub fn cidrs_overlap(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let prefix = a.1.min(b.1);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    (u32::from(a.0) & mask) == (u32::from(b.0) & mask)
}

/// RFC 1123 label rules for Kubernetes node names.
pub fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Judge one host's facts. `skip` marks checks the user chose to skip.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per check, read top to bottom"
)]
pub fn judge_host(
    spec: &ClusterSpec,
    req: &Requirements,
    host: &Host,
    facts: &Facts,
    skip: &dyn Fn(CheckId) -> bool,
) -> Vec<Finding> {
    let mut j = Judge {
        host: host.ip,
        skip,
        kubernetes: req.kubernetes,
        out: Vec::new(),
    };
    j.pass(CheckId::Reach, format!("port {} answers", host.ssh.port));
    j.pass(CheckId::Auth, format!("logged in as {}", host.ssh.user));
    if facts.get("uid") == Some("0") {
        j.pass(CheckId::Sudo, "commands run as root");
    } else {
        j.problem(
            CheckId::Sudo,
            format!("{} cannot become root", host.ssh.user),
            "give the user sudo rights (or enter the sudo password on the Credentials screen)",
        );
    }

    let os = facts.get("os").unwrap_or("unknown");
    let arch = oci_arch(facts.get("arch").unwrap_or("unknown"));
    let platform = format!("{os}/{arch}");
    let distro = format!(
        "{} {}",
        facts.get("os_id").unwrap_or("?"),
        facts.get("os_version").unwrap_or("?")
    );
    if req.platforms.is_empty() || req.platforms.iter().any(|p| p == &platform) {
        j.pass(CheckId::Platform, format!("{platform} ({distro})"));
    } else {
        j.problem(
            CheckId::Platform,
            format!(
                "{platform} ({distro}), the image is for {}",
                req.platforms.join(", ")
            ),
            "use hosts of a supported platform, or an image built for this one",
        );
    }

    let kernel = facts.get("kernel").unwrap_or("unknown");
    match kernel_version(kernel) {
        Some(v) if v >= (4, 18) => j.pass(CheckId::Kernel, kernel),
        Some(v) if v >= (3, 10) => j.warn(
            CheckId::Kernel,
            format!("kernel {kernel} is old"),
            "prefer kernel 4.18 or later (overlayfs, cgroup v2)",
        ),
        _ => j.push(
            CheckId::Kernel,
            Status::Fail,
            format!("kernel {kernel} is too old or unknown"),
            "upgrade the kernel to 4.18 or later".to_string(),
        ),
    }

    let min = minimum(req, host);
    let role = if host.is_master() { "master" } else { "node" };
    match facts.number("cpus") {
        Some(n) if n >= min.cpus => j.pass(CheckId::Cpu, format!("{n} CPUs")),
        n => j.problem(
            CheckId::Cpu,
            format!(
                "{} CPUs, a {role} needs {}",
                n.map_or("?".to_string(), |n| n.to_string()),
                min.cpus
            ),
            format!("give the host at least {} CPUs", min.cpus),
        ),
    }
    match facts.number("mem_kb").map(|kb| kb / 1024) {
        // Firmware and the kernel keep some memory: allow 10% below the minimum.
        Some(mb) if mb * 10 >= min.mem_mb * 9 => j.pass(CheckId::Memory, format!("{mb} MiB")),
        mb => j.problem(
            CheckId::Memory,
            format!(
                "{} MiB of memory, a {role} needs {} MiB",
                mb.map_or("?".to_string(), |m| m.to_string()),
                min.mem_mb
            ),
            format!("give the host at least {} MiB of memory", min.mem_mb),
        ),
    }

    let need_mb = req.payload_bytes / (1024 * 1024) * 2 + req.disk_mb;
    let dir = facts.get("disk_dir").unwrap_or(&spec.data_root);
    match facts.number("disk_free_kb").map(|kb| kb / 1024) {
        Some(free) if free >= need_mb => j.pass(CheckId::Disk, format!("{free} MiB free on {dir}")),
        free => j.problem(
            CheckId::Disk,
            format!(
                "{} MiB free on {dir}, {need_mb} MiB needed (payload twice, plus the runtime)",
                free.map_or("?".to_string(), |f| f.to_string()),
            ),
            format!("free space on {dir}, or set a data root on a larger disk (Settings)"),
        ),
    }

    if host.is_master() {
        match facts.number("fsync_us") {
            Some(us) if us <= MAX_FSYNC_US => {
                j.pass(CheckId::Fsync, format!("{:.1} ms per sync write", ms(us)));
            }
            Some(us) => j.problem(
                CheckId::Fsync,
                format!(
                    "{:.1} ms per sync write, etcd wants under {:.0} ms",
                    ms(us),
                    ms(MAX_FSYNC_US)
                ),
                "put the data root (and /var/lib/etcd) on an SSD or a faster volume",
            ),
            None => j.warn(
                CheckId::Fsync,
                "could not measure",
                "check that dd and date +%N work on the host",
            ),
        }
    }

    let listening = facts.listening_ports();
    let ours = facts.airlock_ports();
    let required = required_ports(spec, req, host);
    let busy: Vec<String> = required
        .iter()
        .filter(|p| listening.contains(p) && !ours.contains(p))
        .map(ToString::to_string)
        .collect();
    let held: Vec<String> = required
        .iter()
        .filter(|p| ours.contains(p))
        .map(ToString::to_string)
        .collect();
    let rerun = facts.get("airlock_state") == Some("yes");
    if required.is_empty() {
        j.pass(CheckId::Ports, "none needed");
    } else if rerun && !busy.is_empty() {
        j.pass(
            CheckId::Ports,
            format!(
                "in use by airlock's earlier install here (a re-run): {}",
                busy.join(", ")
            ),
        );
    } else if busy.is_empty() && held.is_empty() {
        j.pass(CheckId::Ports, format!("free: {}", join(&required)));
    } else if busy.is_empty() {
        j.pass(
            CheckId::Ports,
            format!(
                "airlock already listens on {} (an earlier install)",
                held.join(", ")
            ),
        );
    } else {
        j.problem(
            CheckId::Ports,
            format!("in use: {}", busy.join(", ")),
            "stop what listens there (`ss -ltnp` shows it) or use another host",
        );
    }

    match facts.number("swap_kb") {
        Some(0) => j.pass(CheckId::Swap, "off"),
        Some(kb) => j.problem(
            CheckId::Swap,
            format!("{} MiB of swap is on", kb / 1024),
            "run `swapoff -a` and remove swap from /etc/fstab",
        ),
        None => j.warn(CheckId::Swap, "unknown", "check /proc/meminfo"),
    }

    let missing: Vec<&str> = ["overlay", "br_netfilter"]
        .into_iter()
        .filter(|m| facts.get(&format!("module_{m}")) != Some("yes"))
        .collect();
    if missing.is_empty() {
        j.pass(CheckId::Modules, "overlay, br_netfilter loaded");
    } else {
        j.problem(
            CheckId::Modules,
            format!("not loaded: {}", missing.join(", ")),
            format!(
                "airlock loads them; if that fails: `modprobe {}`",
                missing.join(" ")
            ),
        );
    }
    let off: Vec<&str> = [
        ("sysctl_ip_forward", "net.ipv4.ip_forward"),
        (
            "sysctl_bridge_nf_call_iptables",
            "net.bridge.bridge-nf-call-iptables",
        ),
    ]
    .into_iter()
    .filter(|(k, _)| facts.get(k) != Some("1"))
    .map(|(_, name)| name)
    .collect();
    if off.is_empty() {
        j.pass(CheckId::Sysctl, "forwarding on");
    } else {
        j.problem(
            CheckId::Sysctl,
            format!("not 1: {}", off.join(", ")),
            "airlock sets them; to do it yourself: `sysctl -w NAME=1`",
        );
    }

    match facts.get("cgroup_fs") {
        Some("cgroup2fs") => j.pass(CheckId::Cgroup, "v2"),
        Some("tmpfs") => j.problem(
            CheckId::Cgroup,
            "v1 (legacy)",
            "prefer cgroup v2: boot with systemd.unified_cgroup_hierarchy=1",
        ),
        // kubelet cannot run without one; other runtimes only need it for containers.
        other => j.push(
            CheckId::Cgroup,
            if req.kubernetes {
                Status::Fail
            } else {
                Status::Warn
            },
            format!("no cgroup filesystem ({})", other.unwrap_or("none")),
            "mount cgroup2 on /sys/fs/cgroup (containers need it)".to_string(),
        ),
    }

    if facts.get("selinux") == Some("1") {
        j.problem(
            CheckId::Lsm,
            "SELinux is enforcing",
            "set SELinux to permissive (`setenforce 0`, SELINUX=permissive in /etc/selinux/config) unless the image supports it",
        );
    } else if facts.get("apparmor") == Some("Y") {
        j.pass(CheckId::Lsm, "AppArmor enabled (supported)");
    } else {
        j.pass(CheckId::Lsm, "none enforcing");
    }

    let firewalls: Vec<&str> = ["firewalld", "ufw"]
        .into_iter()
        .filter(|u| facts.get(&format!("active_{u}")) == Some("active"))
        .collect();
    if firewalls.is_empty() {
        j.pass(CheckId::Firewall, "no firewall service active");
    } else {
        j.problem(
            CheckId::Firewall,
            format!("{} active", firewalls.join(", ")),
            "open 6443, 2379-2380, 10250 and the registry port between hosts, or stop the firewall",
        );
    }

    let runtimes: Vec<&str> = ["containerd", "docker", "kubelet"]
        .into_iter()
        .filter(|u| facts.get(&format!("active_{u}")) == Some("active"))
        .chain(facts.all("binary"))
        .collect();
    if runtimes.is_empty() {
        j.pass(CheckId::Runtime, "none installed");
    } else {
        let mut runtimes = runtimes;
        runtimes.sort_unstable();
        runtimes.dedup();
        j.problem(
            CheckId::Runtime,
            format!("already present: {}", runtimes.join(", ")),
            "remove the other runtime, or make sure it is the version the image expects",
        );
    }
    let leftovers: Vec<&str> = facts.all("leftover").collect();
    if leftovers.is_empty() {
        j.pass(CheckId::Leftovers, "clean");
    } else if rerun {
        j.pass(
            CheckId::Leftovers,
            "airlock's earlier install here (a re-run): kept",
        );
    } else {
        j.problem(
            CheckId::Leftovers,
            format!("not empty: {}", leftovers.join(", ")),
            "this host ran Kubernetes before: `kubeadm reset -f` and remove those directories",
        );
    }

    let registry_ip = spec.first_master().ip.to_string();
    match facts.get("registry_resolves") {
        None => j.pass(
            CheckId::RegistryDomain,
            format!("{} unused: airlock will add it", spec.registry.domain),
        ),
        Some(ip) if ip == registry_ip => j.pass(
            CheckId::RegistryDomain,
            format!("{} is {ip}", spec.registry.domain),
        ),
        Some(ip) => j.problem(
            CheckId::RegistryDomain,
            format!(
                "{} already resolves to {ip}, not {registry_ip}",
                spec.registry.domain
            ),
            "remove the name from /etc/hosts or DNS, or choose another registry domain (Settings)",
        ),
    }

    let networks: Vec<(Ipv4Addr, u8)> = facts
        .all("addr")
        .filter_map(parse_cidr)
        .filter(|(a, _)| !a.is_loopback())
        .collect();
    let clashes: Vec<String> = [("pod", &req.pod_cidr), ("service", &req.service_cidr)]
        .into_iter()
        .filter_map(|(name, cidr)| {
            let net = parse_cidr(cidr)?;
            networks
                .iter()
                .find(|n| cidrs_overlap(net, **n))
                .map(|n| format!("{name} CIDR {cidr} overlaps {}/{}", n.0, n.1))
        })
        .collect();
    if clashes.is_empty() {
        j.pass(CheckId::Cidr, "no overlap with host networks");
    } else {
        j.problem(
            CheckId::Cidr,
            clashes.join("; "),
            "choose pod/service CIDRs outside the hosts' networks (Settings)",
        );
    }

    match facts.get("default_route") {
        Some(route) => j.pass(CheckId::DefaultRoute, route.to_string()),
        None => j.problem(
            CheckId::DefaultRoute,
            "no default route",
            "add one (even to a gateway that leads nowhere): `ip route add default via GATEWAY`",
        ),
    }
    j.out
}

/// The `addr:port` targets `host` must reach: the required ports of every other host.
pub fn peer_targets(spec: &ClusterSpec, req: &Requirements, host: &Host) -> Vec<String> {
    spec.hosts
        .iter()
        .filter(|peer| peer.ip != host.ip)
        .flat_map(|peer| {
            required_ports(spec, req, peer)
                .into_iter()
                .map(move |port| std::net::SocketAddr::new(peer.ip, port).to_string())
        })
        .collect()
}

/// Judge what `installer/preflight-peers.sh` printed on `host` for `targets`: a peer
/// that answered, even by refusing (nothing listens there yet), is reachable; one that
/// timed out or whose network said unreachable is not.
pub fn judge_peers(
    host: IpAddr,
    targets: &[String],
    output: &str,
    skip: &dyn Fn(CheckId) -> bool,
) -> Finding {
    let mut j = Judge {
        host,
        skip,
        kubernetes: true,
        out: Vec::new(),
    };
    if targets.is_empty() {
        j.pass(CheckId::Peers, "no peer ports needed");
        return j.out.remove(0);
    }
    let facts = Facts::parse(output);
    if let Some(e) = facts.get("error") {
        j.warn(
            CheckId::Peers,
            format!("could not test: {e}"),
            "check by hand that the hosts reach each other on the ports in docs/preflight.md",
        );
        return j.out.remove(0);
    }
    if facts.get("tool") == Some("none") {
        j.warn(
            CheckId::Peers,
            "not tested: the host has neither bash nor nc",
            "check by hand that the hosts reach each other on the ports in docs/preflight.md",
        );
        return j.out.remove(0);
    }
    let results: BTreeMap<&str, &str> = facts
        .all("peer")
        .filter_map(|line| line.split_once(' '))
        .collect();
    let bad: Vec<String> = targets
        .iter()
        .filter_map(|t| match results.get(t.as_str()).copied() {
            Some("open" | "refused") => None,
            Some(other) => Some(format!("{t} ({other})")),
            None => Some(format!("{t} (no answer from the probe)")),
        })
        .collect();
    if bad.is_empty() {
        let what = if targets.len() == 1 {
            targets[0].clone()
        } else {
            format!("{} peer ports", targets.len())
        };
        j.pass(CheckId::Peers, format!("reaches {what}"));
    } else {
        j.problem(
            CheckId::Peers,
            format!("cannot reach {}", bad.join(", ")),
            "open these ports between the hosts (firewall, security groups) and check the routes",
        );
    }
    j.out.remove(0)
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[expect(clippy::cast_precision_loss, reason = "microseconds shown as ms")]
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Judge all hosts' facts together: clocks, hostnames, machine-ids.
pub fn judge_cluster(
    facts: &BTreeMap<IpAddr, Facts>,
    skip: &dyn Fn(CheckId) -> bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let times: Vec<(IpAddr, u64)> = facts
        .iter()
        .filter_map(|(ip, f)| f.number("time").map(|t| (*ip, t)))
        .collect();
    let median = {
        let mut t: Vec<u64> = times.iter().map(|(_, t)| *t).collect();
        t.sort_unstable();
        t.get(t.len() / 2).copied().unwrap_or_default()
    };
    for (ip, t) in &times {
        let mut j = Judge {
            host: *ip,
            skip,
            kubernetes: true,
            out: Vec::new(),
        };
        let skew = t.abs_diff(median);
        if skew <= MAX_CLOCK_SKEW_SECS {
            j.pass(CheckId::Clock, format!("{skew}s from the others"));
        } else {
            j.problem(
                CheckId::Clock,
                format!("{skew}s off the other hosts"),
                "set the time (`date -s` or `chronyc makestep`) and enable an NTP source on every host",
            );
        }
        out.extend(j.out);
    }
    for (id, key, what) in [
        (CheckId::Hostname, "hostname", "hostname"),
        (CheckId::MachineId, "machine_id", "machine-id"),
    ] {
        let mut by_value: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
        for (ip, f) in facts {
            by_value
                .entry(f.get(key).unwrap_or(""))
                .or_default()
                .push(*ip);
        }
        for (ip, f) in facts {
            let mut j = Judge {
                host: *ip,
                skip,
                kubernetes: true,
                out: Vec::new(),
            };
            let value = f.get(key).unwrap_or("");
            let others: Vec<String> = by_value[value]
                .iter()
                .filter(|o| *o != ip)
                .map(ToString::to_string)
                .collect();
            if id == CheckId::Hostname && !is_valid_hostname(value) {
                j.problem(
                    id,
                    format!("{value:?} is not a valid node name"),
                    "use lowercase letters, digits, - and . (`hostnamectl set-hostname NAME`)",
                );
            } else if !others.is_empty() {
                let fix = if id == CheckId::Hostname {
                    "give every host its own name: `hostnamectl set-hostname NAME`"
                } else {
                    "cloned hosts: `rm /etc/machine-id && systemd-machine-id-setup` on each"
                };
                j.problem(
                    id,
                    format!("{what} {value} also on {}", others.join(", ")),
                    fix,
                );
            } else if value.is_empty() {
                j.problem(id, format!("no {what}"), "set one before installing");
            } else {
                j.pass(id, value.to_string());
            }
            out.extend(j.out);
        }
    }
    out
}
