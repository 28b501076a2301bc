//! Judging recorded facts (pure), and the engine over a recording fake remote.

use std::sync::Mutex;

use super::*;
use crate::image::oci::ClusterConfig;
use crate::remote::{Output, UploadSource};
use crate::spec::clusterfile::Clusterfile;

/// Facts recorded from a healthy Debian 12 host (script output, trimmed).
const GOOD: &str = "uid=0
hostname=m1
machine_id=aaaa
os_id=debian
os_version=12
os=linux
arch=x86_64
kernel=6.1.0-18-amd64
cpus=4
mem_kb=8148000
swap_kb=0
time=1795399934
disk_dir=/var/lib
disk_free_kb=70342532
fsync_us=900
cgroup_fs=cgroup2fs
module_overlay=yes
module_br_netfilter=yes
sysctl_ip_forward=1
sysctl_bridge_nf_call_iptables=1
apparmor=Y
active_firewalld=inactive
active_ufw=inactive
addr=127.0.0.1/8
addr=198.18.0.2/24
default_route=default via 198.18.0.1 dev eth0
listen=0.0.0.0:22
listen=[::]:22
registry_resolves=
";

fn spec(hosts: &str) -> ClusterSpec {
    let yaml = format!(
        "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  image: hello:1\n  ssh: {{passwd: pw}}\n  hosts:\n{hosts}"
    );
    Clusterfile::parse("cf", &yaml)
        .unwrap()
        .resolve(&|_| None)
        .unwrap()
}

fn three() -> ClusterSpec {
    spec(
        "  - ips: [198.18.0.2]\n    roles: [master]\n  - ips: [198.18.0.3-198.18.0.4]\n    roles: [node]\n",
    )
}

/// `GOOD` with some lines replaced (`key=value`, matched by key; new keys appended).
fn with(changes: &[&str]) -> Facts {
    let mut lines: Vec<String> = GOOD.lines().map(str::to_string).collect();
    for change in changes {
        let key = change.split('=').next().unwrap();
        lines.retain(|l| !l.starts_with(&format!("{key}=")));
        lines.push((*change).to_string());
    }
    Facts::parse(&lines.join("\n"))
}

fn no_skip(_: CheckId) -> bool {
    false
}

fn judge(facts: &Facts, req: &Requirements) -> BTreeMap<CheckId, Finding> {
    let spec = three();
    judge_host(&spec, req, &spec.hosts[0], facts, &no_skip)
        .into_iter()
        .map(|f| (f.check, f))
        .collect()
}

#[test]
fn a_healthy_master_passes_every_host_check() {
    let found = judge(&Facts::parse(GOOD), &Requirements::default());
    let bad: Vec<_> = found
        .values()
        .filter(|f| f.status != Status::Pass)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(found[&CheckId::Platform].message, "linux/amd64 (debian 12)");
}

#[test]
fn each_problem_is_judged_with_its_severity_and_a_fix() {
    let req = Requirements {
        platforms: vec!["linux/arm64".to_string()],
        ..Requirements::default()
    };
    let facts = with(&[
        "uid=1000",
        "kernel=3.10.0-1160.el7.x86_64",
        "cpus=1",
        "mem_kb=1000000",
        "disk_free_kb=1024",
        "fsync_us=25000",
        "swap_kb=2097152",
        "cgroup_fs=tmpfs",
        "module_br_netfilter=no",
        "sysctl_ip_forward=0",
        "selinux=1",
        "active_firewalld=active",
        "binary=dockerd",
        "leftover=/var/lib/etcd",
        "registry_resolves=10.0.0.9",
        "addr=100.64.3.1/16",
        "default_route=",
        "listen=0.0.0.0:6443",
        "tcp=00000000:1388",
    ]);
    let found = judge(&facts, &req);
    let expect = [
        (CheckId::Sudo, Status::Fail),
        (CheckId::Platform, Status::Fail),
        (CheckId::Kernel, Status::Warn),
        (CheckId::Cpu, Status::Fail),
        (CheckId::Memory, Status::Fail),
        (CheckId::Disk, Status::Fail),
        (CheckId::Fsync, Status::Warn),
        (CheckId::Ports, Status::Fail),
        (CheckId::Swap, Status::Warn),
        (CheckId::Cgroup, Status::Warn),
        (CheckId::Modules, Status::Warn),
        (CheckId::Sysctl, Status::Warn),
        (CheckId::Lsm, Status::Warn),
        (CheckId::Firewall, Status::Warn),
        (CheckId::Runtime, Status::Warn),
        (CheckId::Leftovers, Status::Fail),
        (CheckId::RegistryDomain, Status::Warn),
        (CheckId::Cidr, Status::Fail),
        (CheckId::DefaultRoute, Status::Fail),
    ];
    for (id, status) in expect {
        let f = &found[&id];
        assert_eq!(f.status, status, "{id}: {f:?}");
        assert!(!f.fix.is_empty(), "{id} has no fix");
    }
    assert_eq!(found[&CheckId::Ports].message, "in use: 5000, 6443");
    assert_eq!(
        found[&CheckId::Cidr].message,
        "pod CIDR 100.64.0.0/10 overlaps 100.64.3.1/16"
    );
    assert_eq!(found[&CheckId::Cpu].message, "1 CPUs, a master needs 2");
}

#[test]
fn nodes_need_less_and_skip_etcd_checks() {
    let spec = three();
    let node = &spec.hosts[1];
    let facts = with(&[
        "cpus=1",
        "mem_kb=1000000",
        "fsync_us=90000",
        "listen=0.0.0.0:6443",
    ]);
    let found = judge_host(&spec, &Requirements::default(), node, &facts, &no_skip);
    assert!(found.iter().all(|f| f.check != CheckId::Fsync));
    assert!(found.iter().all(|f| f.status == Status::Pass), "{found:#?}");
}

#[test]
fn skipped_checks_are_recorded_as_skipped() {
    let spec = three();
    let facts = with(&["swap_kb=100", "uid=1000"]);
    let skip = |id: CheckId| id.can_skip() && matches!(id, CheckId::Swap | CheckId::Sudo);
    let found = judge_host(
        &spec,
        &Requirements::default(),
        &spec.hosts[0],
        &facts,
        &skip,
    );
    let status = |id| found.iter().find(|f| f.check == id).unwrap().status;
    assert_eq!(status(CheckId::Swap), Status::Skipped);
    // sudo cannot be skipped.
    assert_eq!(status(CheckId::Sudo), Status::Fail);
}

#[test]
fn cross_host_checks_find_skew_and_clones() {
    let hosts: BTreeMap<IpAddr, Facts> = [
        (
            "198.18.0.2",
            with(&["hostname=m1", "machine_id=aaaa", "time=1000"]),
        ),
        (
            "198.18.0.3",
            with(&["hostname=n1", "machine_id=aaaa", "time=1002"]),
        ),
        (
            "198.18.0.4",
            with(&["hostname=m1", "machine_id=cccc", "time=1100"]),
        ),
        (
            "198.18.0.5",
            with(&["hostname=Bad_Name", "machine_id=dddd", "time=1001"]),
        ),
    ]
    .into_iter()
    .map(|(ip, f)| (ip.parse().unwrap(), f))
    .collect();
    let found = judge_cluster(&hosts, &no_skip);
    let get = |ip: &str, id| {
        found
            .iter()
            .find(|f| f.host.to_string() == ip && f.check == id)
            .unwrap()
            .clone()
    };
    assert_eq!(get("198.18.0.2", CheckId::Clock).status, Status::Pass);
    assert_eq!(
        get("198.18.0.4", CheckId::Clock).message,
        "98s off the other hosts"
    );
    assert_eq!(
        get("198.18.0.2", CheckId::Hostname).message,
        "hostname m1 also on 198.18.0.4"
    );
    assert_eq!(get("198.18.0.3", CheckId::Hostname).status, Status::Pass);
    assert_eq!(get("198.18.0.5", CheckId::Hostname).status, Status::Fail);
    assert_eq!(get("198.18.0.3", CheckId::MachineId).status, Status::Fail);
    assert_eq!(get("198.18.0.4", CheckId::MachineId).status, Status::Pass);
}

#[test]
fn cidr_arithmetic() {
    let net = |s| parse_cidr_ok(s);
    assert!(checks::cidrs_overlap(
        net("10.96.0.0/12"),
        net("10.100.1.1/24")
    ));
    assert!(!checks::cidrs_overlap(
        net("10.96.0.0/12"),
        net("10.112.0.1/24")
    ));
    assert!(checks::cidrs_overlap(net("0.0.0.0/0"), net("1.2.3.4/32")));
    assert_eq!(checks::parse_cidr("10.0.0.0/33"), None);
}

fn parse_cidr_ok(s: &str) -> (std::net::Ipv4Addr, u8) {
    checks::parse_cidr(s).unwrap()
}

/// A fake remote: answers the facts script with recorded output, records commands.
struct FakeRemote {
    host: String,
    reply: Result<Output, fn(&str) -> RemoteError>,
    calls: Mutex<Vec<RemoteCommand>>,
}

impl FakeRemote {
    fn answering(host: &str, stdout: &str, status: i32) -> Arc<Self> {
        Arc::new(Self {
            host: host.to_string(),
            reply: Ok(Output {
                status,
                stdout: stdout.as_bytes().to_vec(),
                stderr: b"sudo: a password is required\n".to_vec(),
            }),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn failing(host: &str, err: fn(&str) -> RemoteError) -> Arc<Self> {
        Arc::new(Self {
            host: host.to_string(),
            reply: Err(err),
            calls: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl Remote for FakeRemote {
    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, cmd: &RemoteCommand) -> Result<Output, RemoteError> {
        self.calls.lock().unwrap().push(cmd.clone());
        if cmd.argv.iter().any(|a| a.contains("peer=$target")) {
            // The peers probe: every peer answers (refusing: nothing listens yet).
            let lines: String = cmd.argv[4..]
                .iter()
                .map(|t| format!("peer={t} refused\n"))
                .collect();
            return Ok(Output {
                status: 0,
                stdout: lines.into_bytes(),
                stderr: Vec::new(),
            });
        }
        match &self.reply {
            Ok(out) => Ok(out.clone()),
            Err(make) => Err(make(&self.host)),
        }
    }

    async fn upload(&self, _: &UploadSource, path: &str, _: u32) -> Result<(), RemoteError> {
        panic!("preflight must not upload (asked for {path})")
    }
}

#[tokio::test]
async fn engine_reads_facts_once_per_host_as_root_and_reports_live() {
    let spec = three();
    let m1 = FakeRemote::answering("198.18.0.2", GOOD, 0);
    let n1 = FakeRemote::answering(
        "198.18.0.3",
        &GOOD.replace("m1", "n1").replace("aaaa", "bbbb"),
        0,
    );
    let n2 = FakeRemote::answering("198.18.0.4", "", 1);
    let mut targets: Targets = BTreeMap::new();
    targets.insert(
        "198.18.0.2".parse().unwrap(),
        Ok(m1.clone() as Arc<dyn Remote>),
    );
    targets.insert(
        "198.18.0.3".parse().unwrap(),
        Ok(n1.clone() as Arc<dyn Remote>),
    );
    targets.insert(
        "198.18.0.4".parse().unwrap(),
        Ok(n2.clone() as Arc<dyn Remote>),
    );
    let seen = Mutex::new(Vec::new());
    let report = run(
        &spec,
        &Requirements::default(),
        &targets,
        &BTreeSet::new(),
        &|f: &Finding| seen.lock().unwrap().push(f.clone()),
    )
    .await;
    let calls = m1.calls.lock().unwrap();
    assert_eq!(calls.len(), 2, "facts, then the peers probe");
    assert!(calls[0].sudo);
    assert_eq!(calls[0].argv[..2], ["sh", "-c"]);
    assert_eq!(calls[0].argv[4..], ["/var/lib/airlock", "sea.hub"]);
    // The master probes the kubelet port of both nodes, without root.
    assert!(!calls[1].sudo);
    assert_eq!(calls[1].argv[4..], ["198.18.0.3:10250", "198.18.0.4:10250"]);
    // n2 answered nothing: it is not probed from.
    assert_eq!(n1.calls.lock().unwrap().len(), 2);
    assert_eq!(n2.calls.lock().unwrap().len(), 1);
    let peers = report
        .findings
        .iter()
        .find(|f| f.check == CheckId::Peers && f.host.to_string() == "198.18.0.2")
        .unwrap();
    assert_eq!(peers.status, Status::Pass, "{peers:?}");
    assert_eq!(*seen.lock().unwrap(), report.findings);
    // n2 refused sudo: one failing finding, no facts, the install may not start.
    let n2_findings: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.host.to_string() == "198.18.0.4")
        .collect();
    assert_eq!(n2_findings.len(), 3);
    assert_eq!(n2_findings[2].check, CheckId::Sudo);
    assert_eq!(
        n2_findings[2].message,
        "root cannot become root: sudo: a password is required"
    );
    assert!(!report.is_ok());
    assert_eq!(report.facts.len(), 2);
}

#[tokio::test]
async fn engine_reports_unreachable_and_refused_hosts() {
    let spec = three();
    let mut targets: Targets = BTreeMap::new();
    targets.insert(
        "198.18.0.2".parse().unwrap(),
        Ok(FakeRemote::failing("198.18.0.2", |h| RemoteError::Auth {
            host: h.to_string(),
            user: "root".to_string(),
        }) as Arc<dyn Remote>),
    );
    targets.insert(
        "198.18.0.3".parse().unwrap(),
        Err(RemoteError::Connect {
            host: "198.18.0.3".to_string(),
            reason: "connection refused".to_string(),
        }),
    );
    let report = run(
        &spec,
        &Requirements::default(),
        &targets,
        &BTreeSet::new(),
        &|_| {},
    )
    .await;
    let fails: Vec<(String, CheckId)> = report
        .findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .map(|f| (f.host.to_string(), f.check))
        .collect();
    assert_eq!(
        fails,
        [
            ("198.18.0.2".to_string(), CheckId::Auth),
            ("198.18.0.3".to_string(), CheckId::Reach),
            ("198.18.0.4".to_string(), CheckId::Reach),
        ]
    );
}

#[test]
fn a_generic_image_is_held_to_its_platform_payload_and_registry_port() {
    let config = ClusterConfig {
        runtime: "generic".to_string(),
        platforms: vec!["linux/amd64".to_string()],
        ..ClusterConfig::default()
    };
    let req = Requirements::for_image(&config, 1 << 30);
    assert!(!req.kubernetes);
    let spec = three();
    let busy = with(&[
        "cpus=1",
        "mem_kb=100000",
        "swap_kb=2097152",
        "leftover=/var/lib/etcd",
        "listen=0.0.0.0:5000",
        "tcp=00000000:2A3A",
    ]);
    let master: BTreeMap<_, _> = judge_host(&spec, &req, &spec.hosts[0], &busy, &no_skip)
        .into_iter()
        .map(|f| (f.check, f))
        .collect();
    assert_eq!(master[&CheckId::Cpu].status, Status::Pass);
    assert_eq!(master[&CheckId::Memory].status, Status::Pass);
    for id in [CheckId::Swap, CheckId::Leftovers, CheckId::Fsync] {
        assert_eq!(master[&id].status, Status::Skipped, "{id}");
        assert_eq!(master[&id].message, checks::NOT_NEEDED);
    }
    // The registry's port (5000) is taken on the master; the kubelet's (10250) is not
    // judged at all.
    assert_eq!(master[&CheckId::Ports].status, Status::Fail);
    assert_eq!(master[&CheckId::Ports].message, "in use: 5000");
    let node = judge_host(&spec, &req, &spec.hosts[1], &busy, &no_skip);
    let ports = node.iter().find(|f| f.check == CheckId::Ports).unwrap();
    assert_eq!(
        (ports.status, ports.message.as_str()),
        (Status::Pass, "none needed")
    );
    assert_eq!(
        checks::required_ports(&spec, &Requirements::default(), &spec.hosts[0]),
        [2379, 2380, 5000, 6443, 10250]
    );
}

#[test]
fn minimum_resources_the_image_declares_raise_what_hosts_need() {
    let config = ClusterConfig {
        runtime: "generic".to_string(),
        min_resources: Some(crate::image::oci::MinResources {
            cpus: Some(4),
            memory_mib: Some(4096),
        }),
        ..ClusterConfig::default()
    };
    let req = Requirements::for_image(&config, 0);
    assert_eq!((req.master_cpus, req.node_cpus), (4, 4));
    assert_eq!((req.master_mem_mb, req.node_mem_mb), (4096, 4096));
    let found = judge(&Facts::parse(GOOD), &req);
    assert_eq!(
        found[&CheckId::Cpu].status,
        Status::Pass,
        "4 CPUs are enough"
    );
    assert_eq!(found[&CheckId::Memory].status, Status::Pass);
    let small = with(&["cpus=2", "mem_kb=2000000"]);
    let found = judge(&small, &req);
    assert_eq!(found[&CheckId::Cpu].status, Status::Fail);
    assert_eq!(found[&CheckId::Memory].status, Status::Fail);
}

#[test]
fn ports_held_by_airlock_itself_are_an_earlier_install_not_a_conflict() {
    for req in [
        Requirements::default(),
        Requirements::for_image(&ClusterConfig::default(), 0),
    ] {
        let rerun = with(&["listen=0.0.0.0:5000", "airlock_listen=0.0.0.0:5000"]);
        let found = judge(&rerun, &req);
        let ports = &found[&CheckId::Ports];
        assert_eq!(ports.status, Status::Pass, "{ports:?}");
        assert!(
            ports.message.contains("airlock already listens on 5000"),
            "{ports:?}"
        );
        let other = with(&[
            "listen=0.0.0.0:5000",
            "listen=0.0.0.0:6443",
            "airlock_listen=0.0.0.0:5000",
        ]);
        let found = judge(&other, &req);
        let expect = if req.kubernetes {
            Status::Fail
        } else {
            Status::Pass
        };
        assert_eq!(
            found[&CheckId::Ports].status,
            expect,
            "{:?}",
            found[&CheckId::Ports]
        );
    }
}

#[test]
fn a_rerun_on_hosts_airlock_installed_is_not_a_conflict() {
    let installed = with(&[
        "listen=0.0.0.0:6443",
        "listen=0.0.0.0:2379",
        "leftover=/var/lib/etcd",
    ]);
    let found = judge(&installed, &Requirements::default());
    assert_eq!(found[&CheckId::Ports].status, Status::Fail, "a stranger's");
    assert_eq!(
        found[&CheckId::Leftovers].status,
        Status::Fail,
        "a stranger's"
    );
    let mut lines: Vec<&str> = vec!["airlock_state=yes"];
    lines.extend([
        "listen=0.0.0.0:6443",
        "listen=0.0.0.0:2379",
        "leftover=/var/lib/etcd",
    ]);
    let rerun = with(&lines);
    let found = judge(&rerun, &Requirements::default());
    for id in [CheckId::Ports, CheckId::Leftovers] {
        assert_eq!(found[&id].status, Status::Pass, "{:?}", found[&id]);
        assert!(found[&id].message.contains("a re-run"), "{:?}", found[&id]);
    }
}

#[test]
fn peers_that_answer_even_by_refusing_are_reachable() {
    let ip: IpAddr = "198.18.0.2".parse().unwrap();
    let targets = vec![
        "198.18.0.3:10250".to_string(),
        "198.18.0.4:10250".to_string(),
    ];
    let ok = judge_peers(
        ip,
        &targets,
        "peer=198.18.0.4:10250 open\npeer=198.18.0.3:10250 refused\n",
        &no_skip,
    );
    assert_eq!(
        (ok.status, ok.message.as_str()),
        (Status::Pass, "reaches 2 peer ports")
    );
    let bad = judge_peers(ip, &targets, "peer=198.18.0.3:10250 timeout\n", &no_skip);
    assert_eq!(bad.status, Status::Fail);
    assert_eq!(
        bad.message,
        "cannot reach 198.18.0.3:10250 (timeout), 198.18.0.4:10250 (no answer from the probe)"
    );
    assert!(bad.fix.contains("firewall"), "{bad:?}");
    let untested = judge_peers(ip, &targets, "tool=none\n", &no_skip);
    assert_eq!(untested.status, Status::Warn);
    let skipped = judge_peers(ip, &targets, "", &|id| id == CheckId::Peers);
    assert_eq!(skipped.status, Status::Skipped);
    let alone = judge_peers(ip, &[], "", &no_skip);
    assert_eq!(alone.status, Status::Pass);
}

#[tokio::test]
async fn the_peers_script_tells_open_refused_and_dropped_ports_apart() {
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = open.local_addr().unwrap().to_string();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cmd = RemoteCommand::script(PEERS_SCRIPT, [open.as_str(), closed.as_str()]);
    let out = LocalShell.run(&cmd).await.unwrap();
    let text = out.stdout_text();
    assert!(text.contains(&format!("peer={open} open")), "{text}");
    assert!(text.contains(&format!("peer={closed} refused")), "{text}");
    let targets = [open, closed];
    let finding = judge_peers("127.0.0.1".parse().unwrap(), &targets, &text, &no_skip);
    assert_eq!(finding.status, Status::Pass, "{finding:?}");
}

#[test]
fn every_check_is_documented() {
    let doc = include_str!("../../docs/preflight.md");
    for c in CHECKS {
        assert!(
            doc.contains(&format!("`{}`", c.id)),
            "{} missing from docs/preflight.md",
            c.id
        );
    }
}

/// Runs commands on this machine with `sh`: the facts script on a real host.
struct LocalShell;

#[async_trait::async_trait]
impl Remote for LocalShell {
    fn host(&self) -> &str {
        "127.0.0.1"
    }

    async fn run(&self, cmd: &RemoteCommand) -> Result<Output, RemoteError> {
        let out = tokio::process::Command::new(&cmd.argv[0])
            .args(&cmd.argv[1..])
            .output()
            .await
            .map_err(|e| RemoteError::Session {
                host: "127.0.0.1".to_string(),
                reason: e.to_string(),
            })?;
        Ok(Output {
            status: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    async fn upload(&self, _: &UploadSource, path: &str, _: u32) -> Result<(), RemoteError> {
        panic!("preflight must not upload (asked for {path})")
    }
}

#[tokio::test]
async fn the_facts_script_reports_every_fact_the_judges_read() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "SKIPPED the_facts_script_reports_every_fact_the_judges_read: needs root (sudo is not simulated)"
        );
        return;
    }
    let spec = spec("  - ips: [127.0.0.1]\n    roles: [master]\n");
    let facts = gather(&LocalShell, &spec).await.unwrap();
    for key in [
        "uid",
        "hostname",
        "machine_id",
        "os",
        "arch",
        "kernel",
        "cpus",
        "mem_kb",
        "swap_kb",
        "time",
        "disk_dir",
        "disk_free_kb",
        "fsync_us",
        "cgroup_fs",
    ] {
        assert!(facts.get(key).is_some(), "no {key} in {facts:?}");
    }
    assert!(facts.number("cpus").unwrap() >= 1);
    let found = judge_host(
        &spec,
        &Requirements::default(),
        &spec.hosts[0],
        &facts,
        &no_skip,
    );
    assert_eq!(
        found.len(),
        CHECKS.len() - 4,
        "all but the cross-host checks"
    );
    // The probe file is gone.
    let dir = facts.get("disk_dir").unwrap();
    let left: Vec<_> = fs_err::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".airlock-fsync")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_missing_cgroup_filesystem_stops_kubernetes_only() {
    let facts = with(&["cgroup_fs="]);
    let kube = judge(&facts, &Requirements::default());
    assert_eq!(kube[&CheckId::Cgroup].status, Status::Fail);
    let generic = Requirements {
        kubernetes: false,
        ..Requirements::default()
    };
    let found = judge(&facts, &generic);
    assert_eq!(found[&CheckId::Cgroup].status, Status::Warn);
    assert!(found[&CheckId::Cgroup].fix.contains("cgroup2"));
}

#[test]
fn ignore_lists_name_skippable_checks_or_all() {
    let two = CheckId::parse_list("memory, Swap").unwrap();
    assert_eq!(
        two.into_iter().collect::<Vec<_>>(),
        [CheckId::Memory, CheckId::Swap]
    );
    let all = CheckId::parse_list("all").unwrap();
    assert!(all.contains(&CheckId::Peers) && !all.contains(&CheckId::Sudo));
    let unknown = CheckId::parse_list("memroy").unwrap_err();
    assert!(
        unknown.contains("\"memroy\"") && unknown.contains("memory"),
        "{unknown}"
    );
    let fixed = CheckId::parse_list("auth").unwrap_err();
    assert!(fixed.contains("cannot be ignored"), "{fixed}");
}
