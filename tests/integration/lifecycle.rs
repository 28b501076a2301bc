//! The cluster lifecycle on testbed hosts with real software: the etcd example
//! (`assets/examples/etcd`, Debian's etcd inside the image, generic runtime scripts)
//! installed on 3 hosts booted with systemd and containerd, scaled to 5 and back to 3,
//! checked, deleted and reset, with the hosts' filesystems compared before and after;
//! bad input refused before any host changes; a run killed halfway resumed.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::{DockerRegistry, skopeo_copy};
use crate::testbed::{Testbed, TestbedOptions, skip_reason};

const APP: &str = "docker.io/airlockdemo/hello:1.0";
const ETCDCTL: &str = "/var/lib/airlock/rootfs/bin/etcdctl";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The airlock binary with its store at `root`.
pub(crate) fn airlock(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock"));
    cmd.env("AIRLOCK_ROOT", root).env("NO_COLOR", "1");
    cmd
}

/// stdout then stderr.
pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Require success; stdout and stderr.
pub(crate) fn ok(out: Output, what: &str) -> String {
    let t = text(&out);
    assert!(out.status.success(), "{what} failed ({}):\n{t}", out.status);
    t
}

/// The etcd example's build context, plus an application image in its imageList.
fn build_image(work: &Path, store: &Path) {
    let registry =
        DockerRegistry::start(None).expect("docker-registry is installed by tests/scripts/deps.sh");
    let app_dir = work.join("app");
    ok(
        Command::new("sh")
            .arg(repo().join("assets/examples/hello/app/make-image.sh"))
            .arg(&app_dir)
            .arg("1.0")
            .output()
            .unwrap(),
        "make-image.sh",
    );
    ok(
        skopeo_copy(
            &format!("oci:{}:1.0", app_dir.display()),
            &format!("docker://{}/airlockdemo/hello:1.0", registry.addr),
            &["--dest-tls-verify=false"],
        ),
        "skopeo copy",
    );
    let ctx = work.join("ctx");
    ok(
        Command::new("sh")
            .arg(repo().join("assets/examples/etcd/prepare.sh"))
            .arg(&ctx)
            .output()
            .unwrap(),
        "prepare.sh",
    );
    std::fs::create_dir_all(ctx.join("manifests")).unwrap();
    std::fs::write(ctx.join("manifests/imageList"), format!("{APP}\n")).unwrap();
    let mut kubefile = std::fs::read_to_string(ctx.join("Kubefile")).unwrap();
    kubefile.push_str("COPY manifests manifests\n");
    std::fs::write(ctx.join("Kubefile"), kubefile).unwrap();
    ok(
        airlock(store)
            .args(["build", "-t", "etcd-cluster:v1", "--registry-mirror"])
            .arg(format!("docker.io=http://{}", registry.addr))
            .arg(&ctx)
            .output()
            .unwrap(),
        "airlock build",
    );
}

fn clusterfile(dir: &Path, name: &str, tb: &Testbed, hosts: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: etcd\nspec:\n  image: etcd-cluster:v1\n  ssh:\n    user: root\n    pk: {}\n  hosts:\n{hosts}",
            tb.key.display()
        ),
    )
    .unwrap();
    path
}

fn group(ips: &[std::net::Ipv4Addr], role: &str) -> String {
    let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
    format!(
        "    - ips: [ {} ]\n      roles: [ {role} ]\n",
        list.join(", ")
    )
}

const LISTING: &str = "find /etc /var/lib -xdev \\( -path /var/lib/containerd -o -path /var/lib/systemd \\) -prune -o -print | sort";

/// What airlock may change on a host, listed: every path under /etc and /var/lib
/// (containerd's and systemd's own state aside) and the content of /etc/hosts; and
/// the same listing of the machine below the host's overlay, taken at the same time.
struct Snapshot {
    host: String,
    machine: String,
}

fn snapshot(tb: &Testbed, host: usize) -> Snapshot {
    let out = tb.exec(host, &["sh", "-c", &format!("{LISTING}; cat /etc/hosts")]);
    assert!(out.status.success(), "{}", text(&out));
    let machine = std::process::Command::new("sh")
        .args(["-c", LISTING])
        .output()
        .unwrap();
    Snapshot {
        host: String::from_utf8_lossy(&out.stdout).into_owned(),
        machine: String::from_utf8_lossy(&machine.stdout).into_owned(),
    }
}

/// The host's listing is the same as before, but for paths that changed on the
/// machine itself in between: tests running in parallel add and remove users and
/// sudoers files there, and the hosts' overlays show the machine's files.
fn same_as_before(before: &Snapshot, after: &Snapshot, host: usize) {
    let lines = |s: &str| {
        s.lines()
            .map(str::to_string)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let machine_changed: std::collections::BTreeSet<String> = lines(&before.machine)
        .symmetric_difference(&lines(&after.machine))
        .cloned()
        .collect();
    let (b, a) = (lines(&before.host), lines(&after.host));
    let added: Vec<&String> = a
        .difference(&b)
        .filter(|l| !machine_changed.contains(*l))
        .collect();
    let removed: Vec<&String> = b
        .difference(&a)
        .filter(|l| !machine_changed.contains(*l))
        .collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "host {host} differs after reset: added {added:?}, removed {removed:?}"
    );
}

fn members(tb: &Testbed) -> Vec<String> {
    let out = tb.exec(
        1,
        &[
            ETCDCTL,
            "--endpoints=http://127.0.0.1:2379",
            "member",
            "list",
        ],
    );
    let t = ok(out, "etcdctl member list");
    let mut names: Vec<String> = t
        .lines()
        .filter_map(|l| l.split(", ").nth(2).map(str::to_string))
        .collect();
    names.sort();
    names
}

fn names(ips: &[std::net::Ipv4Addr]) -> Vec<String> {
    let mut v: Vec<String> = ips.iter().map(|ip| format!("etcd-{ip}")).collect();
    v.sort();
    v
}

fn healthy(tb: &Testbed) -> String {
    ok(
        tb.exec(
            1,
            &[
                ETCDCTL,
                "--endpoints=http://127.0.0.1:2379",
                "endpoint",
                "health",
                "--cluster",
            ],
        ),
        "etcdctl endpoint health --cluster",
    )
}

#[test]
fn etcd_cluster_lifecycle_on_systemd_testbed_hosts() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED etcd_cluster_lifecycle_on_systemd_testbed_hosts: {why}");
        return;
    }
    if !Path::new("/usr/bin/etcd").exists() || !Path::new("/usr/bin/etcdctl").exists() {
        eprintln!(
            "SKIPPED etcd_cluster_lifecycle_on_systemd_testbed_hosts: apt-get install etcd-server etcd-client"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build_image(work.path(), &store);
    let tb = Testbed::up(TestbedOptions {
        hosts: 5,
        containerd: true,
        systemd: true,
        ..TestbedOptions::default()
    })
    .expect("testbed up");
    let h = &tb.hosts;
    let before: Vec<Snapshot> = (1..=5).map(|i| snapshot(&tb, i)).collect();
    let three = clusterfile(
        work.path(),
        "three.yaml",
        &tb,
        &(group(&h[..1], "master") + &group(&h[1..3], "node")),
    );

    // Bad input: refused before any host changes, naming what and where.
    let refused = |cf: &Path, extra: &[&str], expect: &str| {
        let out = airlock(&store)
            .arg("run")
            .args(extra)
            .arg("-f")
            .arg(cf)
            .arg("--yes")
            .output()
            .unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "must be refused:\n{t}");
        assert!(t.contains(expect), "expected {expect:?} in:\n{t}");
        for i in 1..=5 {
            assert!(
                !tb.exec(i, &["test", "-e", "/var/lib/airlock"])
                    .status
                    .success(),
                "host {i} was touched by a refused run"
            );
        }
    };
    let dup = clusterfile(
        work.path(),
        "dup.yaml",
        &tb,
        &(group(&h[..1], "master") + &group(&h[..2], "node")),
    );
    refused(&dup, &[], &format!("{} is listed twice", h[0]));
    let both = clusterfile(
        work.path(),
        "both.yaml",
        &tb,
        "    - ips: [ 198.18.0.2 ]\n      roles: [ master, node ]\n",
    );
    refused(
        &both,
        &[],
        "spec.hosts[0].roles: a host is either master or node",
    );
    refused(&three, &["no-such-image:v9"], "image no-such-image:v9");
    let unreachable: std::net::Ipv4Addr = {
        let o = h[4].octets();
        [o[0], o[1], o[2], 250].into()
    };
    let gone = clusterfile(
        work.path(),
        "gone.yaml",
        &tb,
        &(group(&h[..1], "master") + &group(&[unreachable], "node")),
    );
    refused(&gone, &[], &unreachable.to_string());

    // Install on 3 hosts: a healthy 3-member etcd cluster.
    let run = |cf: &Path, verb: &str| {
        ok(
            airlock(&store)
                .arg(verb)
                .arg("-f")
                .arg(cf)
                .arg("--yes")
                .output()
                .unwrap(),
            verb,
        )
    };
    let first = run(&three, "run");
    assert!(first.contains("installed"), "{first}");
    let health = healthy(&tb);
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    assert_eq!(members(&tb), names(&h[..3]));
    // The registry and etcd are systemd units on the hosts.
    let units = tb.exec(
        1,
        &["systemctl", "is-active", "airlock-registry", "airlock-etcd"],
    );
    assert_eq!(
        String::from_utf8_lossy(&units.stdout).trim(),
        "active\nactive",
        "{}",
        text(&units)
    );
    // The registry unit serves TLS with basic auth: a worker without credentials
    // gets 401 over TLS checked against the generated CA.
    let unit = tb.exec(1, &["systemctl", "cat", "airlock-registry"]);
    let unit_text = String::from_utf8_lossy(&unit.stdout);
    assert!(
        unit_text.contains("--tls-cert") && unit_text.contains("--htpasswd"),
        "{unit_text}"
    );
    let status = crate::registry_node::anonymous_status(
        &tb,
        3,
        "/etc/containerd/certs.d/docker.io/airlock-ca.crt",
        "https://sea.hub:5000/v2/",
    );
    assert_eq!(status, "401");
    // The template was rendered per host.
    let env = tb.exec(2, &["cat", "/var/lib/airlock/rootfs/etc/etcd.env"]);
    assert!(
        String::from_utf8_lossy(&env.stdout).contains(&format!("ETCD_NAME=etcd-{}", h[1])),
        "{}",
        text(&env)
    );
    // containerd on every host pulls the application by its docker.io name through
    // the mirror (the testbed has no route to the internet).
    for i in 1..=3 {
        let pull = tb.exec(
            i,
            &[
                "ctr",
                "--namespace",
                "airlock",
                "image",
                "pull",
                "--hosts-dir",
                "/etc/containerd/certs.d",
                APP,
            ],
        );
        ok(pull, &format!("ctr pull on host {i}"));
        ok(
            tb.exec(i, &["ctr", "--namespace", "airlock", "image", "rm", APP]),
            "ctr image rm",
        );
    }
    // The cluster's state is kept on the first master, without secrets.
    let kept = tb.exec(1, &["cat", "/var/lib/airlock/cluster/Clusterfile"]);
    assert!(
        String::from_utf8_lossy(&kept.stdout).contains("etcd-cluster:v1"),
        "{}",
        text(&kept)
    );
    ok(
        tb.exec(1, &["test", "-s", "/var/lib/airlock/cluster/state.json"]),
        "state.json on the first master",
    );

    // A re-run changes nothing; with -o json, stdout is one event per line: the plan
    // first, every step skipped, `finished` last.
    let out = airlock(&store)
        .args([
            "run",
            "-o",
            "json",
            "--max-parallel",
            "2",
            "--step-timeout",
            "10m",
            "-f",
        ])
        .arg(&three)
        .arg("--yes")
        .output()
        .unwrap();
    let again = ok(out.clone(), "run -o json");
    let redone: Vec<&str> = again
        .lines()
        .filter(|l| l.ends_with(" done") && !l.ends_with("already done"))
        .collect();
    assert!(redone.is_empty(), "a re-run redid {redone:?}:\n{again}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(events[0]["event"], "plan", "{events:?}");
    let planned = events[0]["steps"].as_array().unwrap().len();
    let skipped = events
        .iter()
        .filter(|e| e["event"] == "step" && e["state"]["state"] == "skipped")
        .count();
    assert_eq!(planned, skipped, "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(
        (&last["event"], &last["result"]["status"]),
        (&"finished".into(), &"ok".into()),
        "{last}"
    );

    // status from the journal.
    let status = airlock(&store)
        .args(["status", "-o", "json"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status));
    let j: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(j["outcome"]["state"], "installed", "{j}");
    assert_eq!(j["hosts"].as_object().unwrap().len(), 3);

    // Scale to 5, then back to 3: the members list follows.
    let five = clusterfile(
        work.path(),
        "five.yaml",
        &tb,
        &(group(&h[..1], "master") + &group(&h[1..5], "node")),
    );
    run(&five, "apply");
    assert_eq!(members(&tb), names(&h[..5]));
    assert_eq!(healthy(&tb).matches("is healthy").count(), 5);
    // Another operator machine: without this one's records, fetch them from the first
    // master; status and the scale-down below work from what was fetched.
    std::fs::remove_dir_all(store.join("clusters/etcd")).unwrap();
    ok(
        airlock(&store)
            .args([
                "cluster",
                "fetch",
                "--host",
                &h[0].to_string(),
                "-u",
                "root",
                "--pk",
            ])
            .arg(&tb.key)
            .output()
            .unwrap(),
        "cluster fetch",
    );
    let status = airlock(&store)
        .args(["status", "-o", "json"])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(j["hosts"].as_object().unwrap().len(), 5, "{j}");
    assert_eq!(j["outcome"]["state"], "installed", "{j}");
    run(&three, "apply");
    assert_eq!(members(&tb), names(&h[..3]));
    assert_eq!(healthy(&tb).matches("is healthy").count(), 3);
    for i in 4..=5 {
        same_as_before(&before[i - 1], &snapshot(&tb, i), i);
    }

    // join and delete by IP, from the Clusterfile kept for the cluster.
    ok(
        airlock(&store)
            .args(["join", "--nodes", &h[3].to_string(), "--yes"])
            .output()
            .unwrap(),
        "join",
    );
    assert_eq!(members(&tb), names(&h[..4]));
    let deleted = airlock(&store)
        .args([
            "delete",
            "-o",
            "json",
            "--nodes",
            &h[3].to_string(),
            "--yes",
        ])
        .output()
        .unwrap();
    ok(deleted.clone(), "delete --nodes");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&deleted.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(
        events[0],
        serde_json::json!({"event": "plan", "steps": [{"host": h[3].to_string(), "step": "clean"}]})
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "step" && e["step"] == "clean" && e["state"]["state"] == "done")
    );
    assert_eq!(
        events.last().unwrap()["result"]["status"],
        "ok",
        "{events:?}"
    );
    assert_eq!(members(&tb), names(&h[..3]));
    same_as_before(&before[3], &snapshot(&tb, 4), 4);

    // check --post (the runtime's check script) and exec by role.
    let checked = ok(
        airlock(&store).args(["check", "--post"]).output().unwrap(),
        "check --post",
    );
    assert_eq!(checked.matches(": healthy").count(), 3, "{checked}");
    let execd = ok(
        airlock(&store)
            .args(["exec", "--roles", "master", "--", "hostname"])
            .output()
            .unwrap(),
        "exec",
    );
    assert_eq!(
        execd.lines().filter(|l| l.contains("| ")).count(),
        1,
        "{execd}"
    );

    // delete --all leaves the hosts as they were.
    ok(
        airlock(&store)
            .args(["delete", "--all", "--yes"])
            .output()
            .unwrap(),
        "delete --all",
    );
    for i in 1..=3 {
        same_as_before(&before[i - 1], &snapshot(&tb, i), i);
    }

    // A run killed halfway: reset cleans it up without the image...
    let killed = |cf: &Path| {
        let mut child = airlock(&store)
            .arg("run")
            .arg("-f")
            .arg(cf)
            .arg("--yes")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.ends_with(": blobs ...") {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(seen.contains(": blobs ..."), "{seen}");
    };
    killed(&three);
    let tag = |from: &str, to: &str| {
        ok(
            airlock(&store).args(["tag", from, to]).output().unwrap(),
            "tag",
        )
    };
    tag("etcd-cluster:v1", "kept:v1");
    ok(
        airlock(&store)
            .args(["rmi", "etcd-cluster:v1"])
            .output()
            .unwrap(),
        "rmi",
    );
    ok(
        airlock(&store)
            .arg("reset")
            .arg("-f")
            .arg(&three)
            .arg("--yes")
            .output()
            .unwrap(),
        "reset",
    );
    for i in 1..=3 {
        same_as_before(&before[i - 1], &snapshot(&tb, i), i);
    }
    // ...and a re-run after a kill resumes: the steps done before are skipped.
    tag("kept:v1", "etcd-cluster:v1");
    killed(&three);
    let resumed = run(&three, "run");
    assert!(resumed.contains("prepare already done"), "{resumed}");
    assert_eq!(members(&tb), names(&h[..3]));
}
