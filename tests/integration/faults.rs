//! Fault injection: an install of the hello bundle onto 3 testbed hosts is hit at a
//! random moment by a random fault, then re-run; it must complete, leave the hosts as
//! a clean install does, and not send again the blobs that had arrived (issue 10).
//!
//! 1. Build and bundle the hello example once, bring up 3 hosts with containerd,
//!    install cleanly and take the reference [`HostState`] of every host; reset.
//! 2. For each seed (`AIRLOCK_FAULT_SEED=N` replays one; `AIRLOCK_FAULT_SEEDS=K` runs
//!    seeds 1..=K, default [`DEFAULT_SEEDS`]), a [`Plan`] drawn from the seed picks a
//!    fault — SIGKILL of the operator process (by its PID), killing a host's sshd,
//!    cutting a host's link (`ip link set down`), or 30% packet loss on it
//!    (`tc netem`, or a 32 kbit/s link where the kernel lacks netem) — and the number of output lines of the install after which it
//!    strikes. The seed and plan are printed before anything happens.
//! 3. The install runs with its output streamed; at the chosen line the fault is
//!    injected, held for a moment, then the install is waited for (killed if still
//!    running after the fault is lifted and it does not end by itself).
//! 4. Before the re-run, the complete blobs each host holds are recorded with their
//!    inode numbers; the re-run must succeed, and afterwards every one of those blobs
//!    must still be the same file (same inode): an arrived blob was not sent again.
//! 5. The hosts must then equal the reference; then reset for the next seed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::testbed::{Testbed, skip_reason};

/// Seeds run when `AIRLOCK_FAULT_SEEDS` is not set.
const DEFAULT_SEEDS: u64 = 30;
/// The number of hosts.
const HOSTS: usize = 3;

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// SIGKILL the operator's airlock process.
    KillOperator,
    /// Kill sshd (listener and sessions) on a host, start it again after.
    KillSshd(usize),
    /// Cut a host's link, restore it after.
    LinkDown(usize),
    /// 30% packet loss on a host's link (`tc netem`; a 32 kbit/s link where the
    /// kernel has no netem), removed after.
    Loss(usize),
}

/// What one seed does.
#[derive(Clone, Copy, Debug)]
struct Plan {
    fault: Fault,
    /// Strike after this many lines of install output.
    after_lines: usize,
    /// Hold the fault this long before lifting it.
    hold: Duration,
}

/// A small deterministic generator (splitmix64): the same seed, the same plan.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

impl Plan {
    /// The plan of `seed`; `lines` is how many output lines a clean install prints.
    fn of(seed: u64, lines: usize) -> Self {
        let mut rng = Rng(seed);
        let host = 1 + rng.below(HOSTS as u64) as usize;
        let fault = match rng.below(4) {
            0 => Fault::KillOperator,
            1 => Fault::KillSshd(host),
            2 => Fault::LinkDown(host),
            _ => Fault::Loss(host),
        };
        Plan {
            fault,
            after_lines: 1 + rng.below(lines.max(2) as u64 - 1) as usize,
            hold: Duration::from_millis(500 + rng.below(2500)),
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `BUNDLE install -f CLUSTERFILE --yes`, output piped.
fn install(bundle: &Path, clusterfile: &Path, operator: &Path) -> Child {
    Command::new(bundle)
        .args(["install", "-f"])
        .arg(clusterfile)
        .arg("--yes")
        .env("AIRLOCK_ROOT", operator)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every line a child prints (stdout and stderr, interleaved), as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    rx
}

/// Run an install to the end; its output and whether it succeeded.
fn install_to_end(bundle: &Path, clusterfile: &Path, operator: &Path) -> (bool, Vec<String>) {
    let mut child = install(bundle, clusterfile, operator);
    let lines: Vec<String> = lines_of(&mut child).iter().collect();
    let ok = child.wait().unwrap().success();
    (ok, lines)
}

fn reset(clusterfile: &Path, operator: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["reset", "-f"])
        .arg(clusterfile)
        .arg("--yes")
        .env("AIRLOCK_ROOT", operator)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "reset failed: {}", text(&out));
}

/// What a host looks like after an install: every path under `/etc` and
/// `/var/lib/airlock`, the checksum of every regular file of airlock's store, the
/// content of `/etc/hosts`, and the names of the long-running processes.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    paths: Vec<String>,
    store: BTreeMap<String, String>,
    hosts_file: String,
    services: Vec<String>,
}

const STATE_SCRIPT: &str = "find /etc /var/lib/airlock -xdev -print | sort; echo ==; \
    cd /var/lib/airlock/store 2>/dev/null && find . -type f -exec sha256sum {} + | sort; echo ==; \
    cat /etc/hosts; echo ==; ps -eo comm= | sort -u";

fn host_state(tb: &Testbed, host: usize) -> HostState {
    let out = tb.exec(host, &["sh", "-c", STATE_SCRIPT]);
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let parts: Vec<&str> = t.split("==\n").collect();
    assert_eq!(parts.len(), 4, "host {host}: {}", text(&out));
    let transient = ["ps", "sh", "sort", "find", "sha256sum", "cat", "sleep"];
    HostState {
        paths: parts[0].lines().map(str::to_string).collect(),
        store: parts[1]
            .lines()
            .filter_map(|l| l.split_once("  "))
            .map(|(sum, path)| (path.to_string(), sum.to_string()))
            .collect(),
        hosts_file: parts[2].to_string(),
        services: parts[3]
            .lines()
            .filter(|l| !transient.contains(l))
            .map(str::to_string)
            .collect(),
    }
}

/// The complete blobs a host holds, with their inode numbers.
fn blob_inodes(tb: &Testbed, host: usize) -> BTreeMap<String, String> {
    let out = tb.exec(
        host,
        &[
            "sh",
            "-c",
            "cd /var/lib/airlock/store/blobs/sha256 2>/dev/null && for f in *; do case $f in *.*) ;; *) [ -f \"$f\" ] && echo \"$f $(stat -c %i \"$f\")\";; esac; done; true",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn inject(tb: &Testbed, child: &mut Child, fault: Fault) {
    let check = |out: Output, what: &str| assert!(out.status.success(), "{what}: {}", text(&out));
    match fault {
        Fault::KillOperator => {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        Fault::KillSshd(h) => check(tb.kill_sshd(h), "kill-sshd"),
        Fault::LinkDown(h) => check(tb.link(h, false), "link down"),
        Fault::Loss(h) => {
            // 30% loss where the kernel has netem; else a link slowed to a crawl.
            let netem = tb.exec(
                h,
                &[
                    "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "loss", "30%",
                ],
            );
            if !netem.status.success() {
                check(
                    tb.exec(
                        h,
                        &[
                            "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate",
                            "32kbit", "burst", "4kb", "latency", "400ms",
                        ],
                    ),
                    "tbf",
                );
            }
        }
    }
}

fn lift(tb: &Testbed, fault: Fault) {
    let check = |out: Output, what: &str| assert!(out.status.success(), "{what}: {}", text(&out));
    match fault {
        Fault::KillOperator => {}
        Fault::KillSshd(h) => check(tb.start_sshd(h), "start-sshd"),
        Fault::LinkDown(h) => check(tb.link(h, true), "link up"),
        Fault::Loss(h) => {
            let _ = tb.exec(h, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
        }
    }
}

/// The seeds to run, from the environment of the test process.
fn seeds() -> Vec<u64> {
    #[expect(clippy::disallowed_methods, reason = "test configuration, read once")]
    let one = std::env::var("AIRLOCK_FAULT_SEED").ok();
    #[expect(clippy::disallowed_methods, reason = "test configuration, read once")]
    let count = std::env::var("AIRLOCK_FAULT_SEEDS").ok();
    match (one, count) {
        (Some(s), _) => vec![s.parse().expect("AIRLOCK_FAULT_SEED is a number")],
        (None, Some(n)) => (1..=n.parse().expect("AIRLOCK_FAULT_SEEDS is a number")).collect(),
        (None, None) => (1..=DEFAULT_SEEDS).collect(),
    }
}

fn clusterfile(dir: &Path, tb: &Testbed) -> PathBuf {
    let path = dir.join("Clusterfile");
    let h = &tb.hosts;
    std::fs::write(
        &path,
        format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: hello\nspec:\n  image: hello-cluster:v1\n  ssh:\n    user: root\n    pk: {}\n  hosts:\n    - ips: [ {} ]\n      roles: [ master ]\n    - ips: [ {}, {} ]\n      roles: [ node ]\n",
            tb.key.display(),
            h[0],
            h[1],
            h[2]
        ),
    )
    .unwrap();
    path
}

#[test]
fn installs_survive_random_faults_and_resume_without_resending() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED installs_survive_random_faults_and_resume_without_resending: {why}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (bundle, tb) = crate::e2e::bundle_and_hosts(work.path(), HOSTS);
    let cf = clusterfile(work.path(), &tb);
    let operator = work.path().join("operator");

    let (ok, clean_lines) = install_to_end(&bundle, &cf, &operator);
    assert!(ok, "the clean install failed:\n{}", clean_lines.join("\n"));
    let reference: Vec<HostState> = (1..=HOSTS).map(|h| host_state(&tb, h)).collect();
    let machine_before = machine_etc();
    reset(&cf, &operator);

    for seed in seeds() {
        let plan = Plan::of(seed, clean_lines.len());
        eprintln!("fault seed {seed} (replay: AIRLOCK_FAULT_SEED={seed}): {plan:?}");
        let mut child = install(&bundle, &cf, &operator);
        let lines = lines_of(&mut child);
        let mut seen = Vec::new();
        while seen.len() < plan.after_lines {
            match lines.recv() {
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        let struck = seen.len() == plan.after_lines;
        if struck {
            inject(&tb, &mut child, plan.fault);
            std::thread::sleep(plan.hold);
            lift(&tb, plan.fault);
        }
        // The faulted run ends by itself (done, or failed naming the host), or is
        // stopped here once its fault is gone; either way the re-run must finish it.
        let first = wait_or_kill(&mut child, &lines, &mut seen);
        let before: Vec<_> = (1..=HOSTS).map(|h| blob_inodes(&tb, h)).collect();
        let (ok, rerun) = install_to_end(&bundle, &cf, &operator);
        assert!(
            ok,
            "seed {seed} {plan:?}: the re-run failed (first run {first}):\n{}\n--- first run:\n{}",
            rerun.join("\n"),
            seen.join("\n")
        );
        for (i, blobs) in before.iter().enumerate() {
            let after = blob_inodes(&tb, i + 1);
            for (digest, inode) in blobs {
                assert_eq!(
                    after.get(digest),
                    Some(inode),
                    "seed {seed} {plan:?}: host {} blob {digest} was sent again",
                    i + 1
                );
            }
        }
        let machine_changed: BTreeSet<String> = machine_before
            .symmetric_difference(&machine_etc())
            .cloned()
            .collect();
        eprintln!(
            "fault seed {seed}: {} after line {}, first run {first}, re-run ok, {} arrived blobs kept",
            if struck {
                "struck"
            } else {
                "not struck (the run ended first)"
            },
            plan.after_lines,
            before.iter().map(BTreeMap::len).sum::<usize>()
        );
        for (i, expected) in reference.iter().enumerate() {
            let got = host_state(&tb, i + 1);
            assert_states_equal(expected, &got, &machine_changed, (seed, plan, i + 1));
        }
        reset(&cf, &operator);
    }
}

/// Wait for the faulted install; a run still going a while after its fault was
/// lifted is left to finish (it may retry), and killed only if it hangs.
fn wait_or_kill(
    child: &mut Child,
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
) -> String {
    loop {
        match lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                break;
            }
        }
    }
    match child.wait() {
        Ok(s) if s.success() => "succeeded".to_string(),
        Ok(s) => format!("ended with {s}"),
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// `/etc` of the machine below the hosts' overlays: other tests and tools change it
/// (users, sudoers, packages), and the hosts see those changes.
fn machine_etc() -> BTreeSet<String> {
    let out = Command::new("sh")
        .args(["-c", "find /etc -xdev -print"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `got` equals `expected` but for paths that changed on the machine itself.
fn assert_states_equal(
    expected: &HostState,
    got: &HostState,
    machine_changed: &BTreeSet<String>,
    (seed, plan, host): (u64, Plan, usize),
) {
    let diff = |a: &[String], b: &[String]| -> (Vec<String>, Vec<String>) {
        let (a, b): (BTreeSet<_>, BTreeSet<_>) = (
            a.iter()
                .filter(|p| !machine_changed.contains(*p))
                .cloned()
                .collect(),
            b.iter()
                .filter(|p| !machine_changed.contains(*p))
                .cloned()
                .collect(),
        );
        (
            b.difference(&a).cloned().collect(),
            a.difference(&b).cloned().collect(),
        )
    };
    let (added, removed) = diff(&expected.paths, &got.paths);
    assert!(
        added.is_empty() && removed.is_empty(),
        "seed {seed} {plan:?}: host {host} paths differ from a clean install: added {added:?}, removed {removed:?}"
    );
    assert_eq!(
        expected.store, got.store,
        "seed {seed} {plan:?}: host {host} store differs from a clean install"
    );
    assert_eq!(
        expected.hosts_file, got.hosts_file,
        "seed {seed} {plan:?}: host {host} /etc/hosts differs"
    );
    let (added, removed) = diff(&expected.services, &got.services);
    assert!(
        added.is_empty() && removed.is_empty(),
        "seed {seed} {plan:?}: host {host} processes differ: added {added:?}, removed {removed:?}"
    );
}
