//! The Kubernetes runtime's orchestration on testbed hosts booted with systemd, with
//! test doubles for kubeadm, kubectl and kubelet (`tests/fixtures/kube-doubles`:
//! shell scripts in the image's `bin/` that record their argv, with a nanosecond
//! timestamp, and a copy of every `--config` file).
//!
//! `kubernetes_runtime_orchestrates_...`: 2 masters and 1 worker. Asserted: the order (base script everywhere, `kubeadm init`
//! on the first master only, a fresh join token then `kubeadm join` on the second
//! master, then the worker, then labels and taints); the kubeadm files (endpoint,
//! image repository, SANs, CIDRs in sealer's precedence: env over Clusterfile over the
//! image over airlock's defaults); which host got which key; the worker's
//! `airlock-lb` unit running with every master as a backend; `/etc/hosts`; the join
//! token never on a command line; a re-run runs nothing.
//!
//! `kubernetes_join_masters_...`: 1 master and 1 worker, then `airlock join --masters`
//! of a third host: the running master renewed (new API server certificate naming the
//! new master) before the new master's `kubeadm join`, a failed join resumed, the new
//! master's own etcd certificates from the same CA, the worker's `lb-backends` with
//! both masters, a third join changing nothing; then `apply` with a third master
//! renews both running masters, one after the other, before it joins.
//!
//! `upgrade_to_an_image_whose_kubeadm_layer_does_not_merge_...`: 1 master, then
//! `airlock upgrade` to an image whose `etc/kubeadm.yml` has a document without `kind`:
//! exit 2 on one line naming the file and document, and nothing changed on the host
//! (no upgrade marker, the same files, no command) or in the cluster's record.
//!
//! `a_new_kubernetes_cluster_not_confirmed_...`: `run` of a new cluster without `--yes`
//! and without a terminal exits 2 after the checks and leaves no cluster directory
//! (the PKI made for the question is removed) and nothing on the host.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lifecycle::{ok, text};
use crate::testbed::{Testbed, TestbedOptions, skip_reason};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn airlock(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock"));
    cmd.env("AIRLOCK_ROOT", root).env("NO_COLOR", "1");
    cmd
}

fn host_text(tb: &Testbed, host: usize, argv: &[&str]) -> String {
    ok(tb.exec(host, argv), &argv.join(" "))
}

/// One recorded call: when, on which host, which program, its arguments.
#[derive(Debug)]
struct Call {
    at: u128,
    host: String,
    program: String,
    args: String,
}

fn calls(tb: &Testbed) -> Vec<Call> {
    let mut all = Vec::new();
    for i in 1..=tb.hosts.len() {
        let out = tb.exec(i, &["cat", "/var/log/kube-doubles/calls"]);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut parts = line.splitn(4, ' ');
            let (Some(at), Some(host), Some(program)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            all.push(Call {
                at: at.parse().unwrap_or_default(),
                host: host.to_string(),
                program: program.to_string(),
                args: parts.next().unwrap_or_default().to_string(),
            });
        }
    }
    all.sort_by_key(|c| c.at);
    all
}

/// The index of the first call on `host` of `program` whose args start with `args`.
fn position(calls: &[Call], host: &str, program: &str, args: &str) -> usize {
    calls
        .iter()
        .position(|c| c.host == host && c.program == program && c.args.starts_with(args))
        .unwrap_or_else(|| panic!("no `{program} {args}` on {host} in {calls:#?}"))
}

/// The last `kubeadm-<verb>-*.yaml` copy on `host`, parsed.
fn kubeadm_file(tb: &Testbed, host: usize, verb: &str) -> Vec<serde_json::Value> {
    let listing = host_text(
        tb,
        host,
        &[
            "sh",
            "-c",
            &format!("ls /var/log/kube-doubles/kubeadm-{verb}-*.yaml | sort"),
        ],
    );
    let last = listing
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no kubeadm {verb} file"));
    let text = host_text(tb, host, &["cat", last]);
    serde_saphyr::from_multiple(&text).unwrap()
}

fn doc<'a>(docs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:#?}"))
}

/// The kube-doubles image built into a fresh store, and `hosts` systemd testbed hosts;
/// `None` (after saying why) when the testbed or openssl is missing.
fn doubles_image_and_hosts(
    test: &str,
    hosts: usize,
) -> Option<(tempfile::TempDir, PathBuf, Testbed)> {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED {test}: {why}");
        return None;
    }
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED {test}: openssl is missing (apt-get install openssl)");
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    ok(
        airlock(&store)
            .args(["build", "-t", "kube-doubles:v1"])
            .arg(repo().join("tests/fixtures/kube-doubles"))
            .output()
            .unwrap(),
        "airlock build",
    );
    let tb = Testbed::up(TestbedOptions {
        hosts,
        systemd: true,
        ..TestbedOptions::default()
    })
    .expect("testbed up");
    Some((work, store, tb))
}

/// `kube-doubles:v2` built into `store`: the doubles at Kubernetes v1.31.0, copied
/// under `work/v2` and changed there by `edit` first.
fn build_v2(work: &Path, store: &Path, edit: impl FnOnce(&Path)) {
    let v2 = work.join("v2");
    ok(
        Command::new("cp")
            .arg("-r")
            .arg(repo().join("tests/fixtures/kube-doubles"))
            .arg(&v2)
            .output()
            .unwrap(),
        "cp",
    );
    let kubefile = std::fs::read_to_string(v2.join("Kubefile")).unwrap();
    std::fs::write(v2.join("Kubefile"), kubefile.replace("v1.30.2", "v1.31.0")).unwrap();
    edit(&v2);
    ok(
        airlock(store)
            .args(["build", "-t", "kube-doubles:v2"])
            .arg(&v2)
            .output()
            .unwrap(),
        "airlock build v2",
    );
}

#[test]
fn kubernetes_runtime_orchestrates_kubeadm_doubles_on_systemd_testbed_hosts() {
    let Some((work, store, tb)) = doubles_image_and_hosts(
        "kubernetes_runtime_orchestrates_kubeadm_doubles_on_systemd_testbed_hosts",
        3,
    ) else {
        return;
    };
    let [m1, m2, w] = [tb.hosts[0], tb.hosts[1], tb.hosts[2]].map(|ip| ip.to_string());
    let cf = work.path().join("Clusterfile");
    std::fs::write(
        &cf,
        format!(
            "apiVersion: sealer.io/v2
kind: Cluster
metadata:
  name: kube
spec:
  image: kube-doubles:v1
  env: [ PodCIDR=10.244.0.0/16, CertSANs=k8s.example.com, KubeRestartWait=0 ]
  ssh:
    user: root
    pk: {key}
  hosts:
    - ips: [ {m1}, {m2} ]
      roles: [ master ]
    - ips: [ {w} ]
      roles: [ node ]
      labels: {{ disk: ssd }}
      taints: [ \"gpu=yes:NoSchedule\" ]
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
networking:
  serviceSubnet: 10.3.0.0/16
",
            key = tb.key.display()
        ),
    )
    .unwrap();
    let run = || {
        ok(
            airlock(&store)
                .args(["run", "-f"])
                .arg(&cf)
                .arg("--yes")
                .output()
                .unwrap(),
            "airlock run",
        )
    };
    // A failing kubeadm init: the error names the phase and kubeadm's last error.
    ok(tb.exec(1, &["touch", "/etc/kube-doubles-fail"]), "touch");
    let failed = airlock(&store)
        .args(["run", "-f"])
        .arg(&cf)
        .arg("--yes")
        .output()
        .unwrap();
    let t = text(&failed);
    assert!(!failed.status.success(), "{t}");
    for want in [
        "kubeadm init failed (exit 1) in phase wait-control-plane",
        "kubeadm: error execution phase wait-control-plane: couldn't initialize",
        "kubelet: ",
        "/var/lib/airlock/log/kubeadm-failure.txt",
    ] {
        assert!(t.contains(want), "{want:?} in:\n{t}");
    }
    let report = host_text(&tb, 1, &["cat", "/var/lib/airlock/log/kubeadm-failure.txt"]);
    assert!(
        report.contains("--- journalctl -u kubelet -n 30:"),
        "{report}"
    );
    assert!(report.contains("[wait-control-plane] Waiting"), "{report}");
    // Fixed, the same command goes on from there.
    ok(tb.exec(1, &["rm", "/etc/kube-doubles-fail"]), "rm");
    let first = run();
    assert!(first.contains("installed"), "{first}");

    // Order: base on every host before its kubeadm; init on the first master only;
    // a token then the second master's join; then the worker's; then the marks.
    let log = calls(&tb);
    let init = log
        .iter()
        .rposition(|c| c.host == m1 && c.args.starts_with("init --config"))
        .unwrap();
    assert!(log[init].args.contains("--skip-phases=certs"), "{log:#?}");
    for (host, kubeadm) in [(&m1, "init"), (&m2, "join"), (&w, "join")] {
        let base = position(&log, host, "base", "");
        assert!(base < position(&log, host, "kubeadm", kubeadm), "{log:#?}");
    }
    let inits: Vec<&Call> = log.iter().filter(|c| c.args.starts_with("init")).collect();
    assert_eq!(
        inits.len(),
        2,
        "the failed init and the good one: {inits:#?}"
    );
    assert!(inits.iter().all(|c| c.host == m1), "{inits:#?}");
    let join_m2 = position(&log, &m2, "kubeadm", "join --config");
    let join_w = position(&log, &w, "kubeadm", "join --config");
    assert!(init < join_m2 && join_m2 < join_w, "{log:#?}");
    let tokens: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, c)| c.host == m1 && c.args.contains("apply -f -"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(tokens.len(), 2, "one token before each join: {log:#?}");
    assert!(init < tokens[0] && tokens[0] < join_m2 && join_m2 < tokens[1] && tokens[1] < join_w);
    let label = position(
        &log,
        &m1,
        "kubectl",
        "--kubeconfig /etc/kubernetes/admin.conf label node",
    );
    let taint = position(
        &log,
        &m1,
        "kubectl",
        "--kubeconfig /etc/kubernetes/admin.conf taint node",
    );
    assert!(
        log[label]
            .args
            .ends_with(&format!("{w} disk=ssd --overwrite")),
        "{log:#?}"
    );
    assert!(log[taint].args.contains("gpu=yes:NoSchedule"), "{log:#?}");
    assert!(join_w < label, "{log:#?}");

    // The join token: kept 0600 on the operator, applied from stdin, never in argv.
    let token_file = store.join("clusters/kube/kubernetes/token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        log.iter().all(|c| !c.args.contains(&token)),
        "token in argv"
    );
    let applied = host_text(
        &tb,
        1,
        &["sh", "-c", "cat /var/log/kube-doubles/applied-*.yaml"],
    );
    let (id, secret) = token.split_once('.').unwrap();
    assert!(
        applied.contains(&format!("name: bootstrap-token-{id}")),
        "{applied}"
    );
    assert!(
        applied.contains(&format!("token-secret: \"{secret}\"")),
        "{applied}"
    );

    // The kubeadm files.
    let init_docs = kubeadm_file(&tb, 1, "init");
    let cluster = doc(&init_docs, "ClusterConfiguration");
    assert_eq!(cluster["apiVersion"], "kubeadm.k8s.io/v1beta3");
    assert_eq!(
        cluster["controlPlaneEndpoint"],
        "apiserver.cluster.local:6443"
    );
    assert_eq!(cluster["imageRepository"], "sea.hub:5000");
    assert_eq!(cluster["kubernetesVersion"], "v1.30.2");
    assert_eq!(
        cluster["networking"]["podSubnet"], "10.244.0.0/16",
        "env wins"
    );
    assert_eq!(
        cluster["networking"]["serviceSubnet"], "10.3.0.0/16",
        "Clusterfile over image"
    );
    assert_eq!(
        cluster["apiServer"]["extraArgs"]["audit-log-maxage"], "7",
        "image layer"
    );
    let cert_sans = cluster["apiServer"]["certSANs"].as_array().unwrap();
    for want in [
        m1.as_str(),
        m2.as_str(),
        "apiserver.cluster.local",
        "k8s.example.com",
    ] {
        assert!(
            cert_sans.iter().any(|s| s == want),
            "{want} in {cert_sans:?}"
        );
    }
    let init_doc = doc(&init_docs, "InitConfiguration");
    assert_eq!(init_doc["nodeRegistration"]["name"], m1.as_str());
    assert_eq!(
        init_doc["localAPIEndpoint"]["advertiseAddress"],
        m1.as_str()
    );
    assert_eq!(
        doc(&init_docs, "KubeletConfiguration")["cgroupDriver"],
        "systemd"
    );
    let join_m2_docs = kubeadm_file(&tb, 2, "join");
    let join = doc(&join_m2_docs, "JoinConfiguration");
    assert_eq!(
        join["controlPlane"]["localAPIEndpoint"]["advertiseAddress"],
        m2.as_str()
    );
    let discovery = &join["discovery"]["bootstrapToken"];
    assert_eq!(
        discovery["apiServerEndpoint"],
        "apiserver.cluster.local:6443"
    );
    assert!(
        discovery["caCertHashes"][0]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // The CA hash is kubeadm's: SHA-256 of the CA's DER public key (SPKI).
    let spki = host_text(
        &tb,
        1,
        &[
            "sh",
            "-c",
            "openssl x509 -pubkey -noout -in /etc/kubernetes/pki/ca.crt | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1",
        ],
    );
    assert_eq!(
        discovery["caCertHashes"][0],
        format!("sha256:{}", spki.trim())
    );
    let join_w_docs = kubeadm_file(&tb, 3, "join");
    assert!(
        doc(&join_w_docs, "JoinConfiguration")
            .get("controlPlane")
            .is_none()
    );

    // Keys: both masters have the cluster CA's key, 0600; the worker has no key at all.
    for host in [1, 2] {
        let mode = host_text(
            &tb,
            host,
            &["stat", "-c", "%a", "/etc/kubernetes/pki/ca.key"],
        );
        assert_eq!(mode.trim(), "600");
    }
    let worker_keys = host_text(
        &tb,
        3,
        &[
            "sh",
            "-c",
            "find /etc/kubernetes /var/lib/airlock -name '*.key' -o -name '*.conf' | grep -v kubelet.conf || true",
        ],
    );
    assert!(
        worker_keys.trim().is_empty(),
        "worker has keys: {worker_keys}"
    );
    // The second master's etcd serving certificate is its own, from the same CA.
    let san = sans(&tb, 2, "/etc/kubernetes/pki/etcd/server.crt");
    assert!(san.contains(&format!("IP Address:{m2}")), "{san}");
    let same_ca = |host| host_text(&tb, host, &["sha256sum", "/etc/kubernetes/pki/ca.crt"]);
    assert_eq!(same_ca(1), same_ca(2));
    assert!(
        !tb.exec(2, &["test", "-e", "/etc/kubernetes/super-admin.conf"])
            .status
            .success()
    );

    // The worker's load balancer: a running systemd unit with every master behind it.
    let active = tb.exec(3, &["systemctl", "is-active", "airlock-lb.service"]);
    assert_eq!(
        String::from_utf8_lossy(&active.stdout).trim(),
        "active",
        "{}",
        text(&active)
    );
    let backends = host_text(
        &tb,
        3,
        &["cat", "/var/lib/airlock/cluster/kubernetes/lb-backends"],
    );
    assert_eq!(backends, format!("{m1}:6443\n{m2}:6443\n"));
    let listening = host_text(&tb, 3, &["sh", "-c", "ss -ltn 'sport = :6443'"]);
    assert!(listening.contains("127.0.0.1:6443"), "{listening}");
    // apiserver.cluster.local: the LB on the worker, the master itself on masters.
    for (host, ip) in [(1, m1.as_str()), (2, m2.as_str()), (3, "127.0.0.1")] {
        let hosts = host_text(&tb, host, &["cat", "/etc/hosts"]);
        assert!(
            hosts.contains(&format!("{ip} apiserver.cluster.local # airlock")),
            "host {host}: {hosts}"
        );
    }

    // A re-run runs nothing.
    let before = calls(&tb).len();
    run();
    let after = calls(&tb);
    assert_eq!(after.len(), before, "a re-run ran {:#?}", &after[before..]);

    // `cert renew --alt-names`: every leaf re-issued from the same CAs on both
    // masters, the new name in the API server certificate, the static pods restarted.
    let sums = |host| {
        host_text(
            &tb,
            host,
            &[
                "sh",
                "-c",
                "cd /etc/kubernetes/pki && sha256sum ca.crt ca.key sa.pub etcd/ca.crt apiserver.crt",
            ],
        )
    };
    let before_renew = [sums(1), sums(2)];
    // `cert check` reads every master's certificates over SSH: the CAs, the leaves and
    // the client certificates inside the kubeconfigs, each with about 100 years left.
    let checked = ok(
        airlock(&store).args(["cert", "check"]).output().unwrap(),
        "airlock cert check",
    );
    for master in &tb.hosts[..2] {
        assert!(checked.contains(&format!("master {master}:")), "{checked}");
    }
    for name in ["pki/apiserver.crt", "pki/etcd/server.crt", "admin.conf"] {
        let rows = checked
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{name} ")))
            .count();
        assert_eq!(rows, 2, "{name} on both masters:\n{checked}");
    }
    assert!(!checked.contains("PRIVATE KEY"), "{checked}");
    let out = airlock(&store)
        .args(["cert", "check", "-o", "json"])
        .output()
        .unwrap();
    ok(out.clone(), "airlock cert check -o json");
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    let parsed: serde_json::Value =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"));
    let days = parsed[tb.hosts[0].to_string()][0]["days_left"]
        .as_i64()
        .unwrap_or(0);
    assert!(days > 36_000, "{json}");
    let renewed = ok(
        airlock(&store)
            .args(["cert", "renew", "--alt-names", "renew.example.com", "--yes"])
            .output()
            .unwrap(),
        "airlock cert renew",
    );
    assert_eq!(
        renewed
            .matches("restarted static pod kube-apiserver")
            .count(),
        2,
        "{renewed}"
    );
    for (i, host) in [1, 2].into_iter().enumerate() {
        let after = sums(host);
        let line = |t: &str, f: &str| t.lines().find(|l| l.ends_with(f)).unwrap().to_string();
        for kept in ["ca.crt", "ca.key", "sa.pub", "etcd/ca.crt"] {
            assert_eq!(
                line(&after, kept),
                line(&before_renew[i], kept),
                "{kept} changed on {host}"
            );
        }
        assert_ne!(
            line(&after, "apiserver.crt"),
            line(&before_renew[i], "apiserver.crt")
        );
        let san = sans(&tb, host, "/etc/kubernetes/pki/apiserver.crt");
        assert!(
            san.contains("DNS:renew.example.com") && san.contains("DNS:k8s.example.com"),
            "{san}"
        );
        let verify = host_text(
            &tb,
            host,
            &[
                "openssl",
                "verify",
                "-CAfile",
                "/etc/kubernetes/pki/ca.crt",
                "/etc/kubernetes/pki/apiserver.crt",
            ],
        );
        assert!(verify.contains(": OK"), "{verify}");
        assert!(
            tb.exec(
                host,
                &[
                    "test",
                    "-f",
                    "/etc/kubernetes/manifests/kube-apiserver.yaml"
                ]
            )
            .status
            .success()
        );
    }
    let etcd_san = sans(&tb, 2, "/etc/kubernetes/pki/etcd/server.crt");
    assert!(etcd_san.contains(&format!("IP Address:{m2}")), "{etcd_san}");

    // A renewal that stopped after the first master (as if the second failed): the
    // second master still records the PKI before. `cert renew` again finishes it there
    // only, without issuing anew.
    ok(
        tb.exec(
            2,
            &[
                "sh",
                "-c",
                "echo 0000 > /var/lib/airlock/cluster/kubernetes/pki-applied",
            ],
        ),
        "mark the second master as not renewed",
    );
    let renewed_sums = [sums(1), sums(2)];
    let finished = ok(
        airlock(&store)
            .args(["cert", "renew", "--yes"])
            .output()
            .unwrap(),
        "airlock cert renew (finishing)",
    );
    assert!(
        finished.contains(&format!(
            "finished the renewal of the certificates of kube on {m2}"
        )),
        "{finished}"
    );
    assert_eq!(
        finished
            .matches("restarted static pod kube-apiserver")
            .count(),
        1,
        "{finished}"
    );
    assert_eq!([sums(1), sums(2)], renewed_sums, "the PKI was issued anew");

    // `airlock upgrade`: the newer image everywhere without a runtime step, then
    // `kubeadm upgrade apply` on the first master, `upgrade node` on the second, the
    // worker drained, upgraded and uncordoned, then the `upgrade` plugins.
    build_v2(work.path(), &store, |v2| {
        let kubefile = std::fs::read_to_string(v2.join("Kubefile")).unwrap();
        std::fs::write(v2.join("Kubefile"), kubefile + "COPY plugins plugins\n").unwrap();
        std::fs::create_dir_all(v2.join("plugins")).unwrap();
        std::fs::write(
            v2.join("plugins/upgrade.yaml"),
            "apiVersion: sealer.io/v1\nkind: Plugin\nmetadata:\n  name: record-upgrade\nspec:\n  type: SHELL\n  action: upgrade\n  data: printf '%s %s upgrade-plugin\\n' \"$(date +%s%N)\" \"$AIRLOCK_HOST_IP\" >> /var/log/kube-doubles/calls\n",
        )
        .unwrap();
    });
    let before_upgrade = calls(&tb).len();
    let upgraded = ok(
        airlock(&store)
            .args(["upgrade", "kube-doubles:v2", "--yes"])
            .output()
            .unwrap(),
        "airlock upgrade",
    );
    assert!(
        upgraded.contains("upgraded kube to kube-doubles:v2 (Kubernetes v1.31.0)"),
        "{upgraded}"
    );
    let log = calls(&tb);
    let new = &log[before_upgrade..];
    assert!(
        new.iter()
            .all(|c| !c.args.starts_with("init") && !c.args.starts_with("join")),
        "{new:#?}"
    );
    let apply = position(new, &m1, "kubeadm", "upgrade apply v1.31.0 --yes");
    let node_m2 = position(new, &m2, "kubeadm", "upgrade node");
    let drain_w = position(
        new,
        &m1,
        "kubectl",
        &format!("--kubeconfig /etc/kubernetes/admin.conf drain {w}"),
    );
    let node_w = position(new, &w, "kubeadm", "upgrade node");
    let uncordon_w = position(
        new,
        &m1,
        "kubectl",
        &format!("--kubeconfig /etc/kubernetes/admin.conf uncordon {w}"),
    );
    assert!(
        apply < node_m2 && node_m2 < drain_w && drain_w < node_w && node_w < uncordon_w,
        "{new:#?}"
    );
    for host in [&m1, &m2, &w] {
        assert!(
            position(new, host, "upgrade-plugin", "") > uncordon_w,
            "{new:#?}"
        );
    }
    let recorded = std::fs::read_to_string(store.join("clusters/kube/Clusterfile")).unwrap();
    assert!(recorded.contains("kube-doubles:v2"), "{recorded}");

    // The same upgrade again: every host carries its marker, nothing runs.
    let before_again = calls(&tb).len();
    let again = ok(
        airlock(&store)
            .args(["upgrade", "kube-doubles:v2", "--yes"])
            .output()
            .unwrap(),
        "airlock upgrade again",
    );
    for host in [&m1, &m2, &w] {
        assert!(
            again.contains(&format!("{host}: already on Kubernetes v1.31.0")),
            "{again}"
        );
    }
    let rerun = &calls(&tb)[before_again..];
    assert!(
        rerun.iter().all(|c| c.program != "upgrade-plugin"
            && !c.args.contains("upgrade")
            && !c.args.contains("drain")),
        "{rerun:#?}"
    );

    // Back to v1.30.2: kubeadm cannot downgrade, so it is refused before any host changes.
    let before_downgrade = calls(&tb).len();
    let back = airlock(&store)
        .args(["upgrade", "kube-doubles:v1", "--yes"])
        .output()
        .unwrap();
    let msg = text(&back);
    assert_eq!(back.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("cannot downgrade") && msg.contains("v1.31.0"),
        "{msg}"
    );
    assert_eq!(
        calls(&tb).len(),
        before_downgrade,
        "a refused upgrade ran commands"
    );

    // Deleting the second master drains it and deletes its node (from its own
    // admin.conf), then resets it (which removes its etcd member).
    ok(
        airlock(&store)
            .args(["delete", "--masters", &m2, "--yes"])
            .output()
            .unwrap(),
        "airlock delete --masters",
    );
    let log = calls(&tb);
    let drain = position(
        &log,
        &m2,
        "kubectl",
        "--kubeconfig /etc/kubernetes/admin.conf drain",
    );
    let delete = position(
        &log,
        &m2,
        "kubectl",
        "--kubeconfig /etc/kubernetes/admin.conf delete node",
    );
    let reset = position(&log, &m2, "kubeadm", "reset -f");
    assert!(drain < delete && delete < reset, "{log:#?}");
    assert!(
        !tb.exec(2, &["test", "-e", "/etc/kubernetes"])
            .status
            .success()
    );
    // The worker's load balancer now has the first master only.
    let backends = host_text(
        &tb,
        3,
        &["cat", "/var/lib/airlock/cluster/kubernetes/lb-backends"],
    );
    assert_eq!(backends, format!("{m1}:6443\n"));
    // Deleting the worker: drained from the first master, reset (its LB unit goes),
    // then its node deleted from the first master.
    ok(
        airlock(&store)
            .args(["delete", "--nodes", &w, "--yes"])
            .output()
            .unwrap(),
        "airlock delete --nodes",
    );
    let log = calls(&tb);
    let drain = log
        .iter()
        .rposition(|c| c.host == m1 && c.args.contains(&format!("drain {w}")))
        .unwrap();
    let reset = position(&log, &w, "kubeadm", "reset -f");
    let gone = position(
        &log,
        &m1,
        "kubectl",
        &format!("--kubeconfig /etc/kubernetes/admin.conf delete node {w}"),
    );
    assert!(drain < reset && reset < gone, "{log:#?}");
    // Deleting the cluster resets the last host.
    ok(
        airlock(&store)
            .args(["delete", "--all", "--yes"])
            .output()
            .unwrap(),
        "airlock delete --all",
    );
    let log = calls(&tb);
    position(&log, &m1, "kubeadm", "reset -f");
    for host in [1, 3] {
        assert!(
            !tb.exec(host, &["test", "-e", "/etc/kubernetes"])
                .status
                .success()
        );
        let hosts = host_text(&tb, host, &["cat", "/etc/hosts"]);
        assert!(!hosts.contains("apiserver.cluster.local"), "{hosts}");
    }
    assert!(
        !tb.exec(3, &["test", "-e", "/etc/systemd/system/airlock-lb.service"])
            .status
            .success()
    );
    let active = tb.exec(3, &["systemctl", "is-active", "airlock-lb.service"]);
    assert_ne!(String::from_utf8_lossy(&active.stdout).trim(), "active");
}

/// The modification time of `path` on `host`, in nanoseconds (the clock of the calls).
fn mtime_ns(tb: &Testbed, host: usize, path: &str) -> u128 {
    let t = host_text(tb, host, &["stat", "-c", "%.9Y", path]);
    t.trim().replace('.', "").parse().unwrap()
}

/// `openssl x509 -noout -ext subjectAltName` of a certificate on `host`.
fn sans(tb: &Testbed, host: usize, path: &str) -> String {
    host_text(
        tb,
        host,
        &[
            "openssl",
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            path,
        ],
    )
}

#[test]
fn kubernetes_join_masters_renews_running_masters_first_on_kubeadm_doubles() {
    let Some((work, store, tb)) = doubles_image_and_hosts(
        "kubernetes_join_masters_renews_running_masters_first_on_kubeadm_doubles",
        4,
    ) else {
        return;
    };
    let [m1, m2, w, m3] =
        [tb.hosts[0], tb.hosts[1], tb.hosts[2], tb.hosts[3]].map(|ip| ip.to_string());
    // One master and one worker first; the second master joins later, the third
    // through `apply`.
    let clusterfile = |masters: &str| {
        format!(
            "apiVersion: sealer.io/v2
kind: Cluster
metadata:
  name: grow
spec:
  image: kube-doubles:v1
  env: [ KubeRestartWait=0 ]
  ssh:
    user: root
    pk: {key}
  hosts:
    - ips: [ {masters} ]
      roles: [ master ]
    - ips: [ {w} ]
      roles: [ node ]
",
            key = tb.key.display()
        )
    };
    let cf = work.path().join("Clusterfile");
    std::fs::write(&cf, clusterfile(&m1)).unwrap();
    run_yes(&store, &cf);
    let stage = "/var/lib/airlock/cluster/kubernetes";
    let applied = format!("{stage}/pki-applied");
    let backends = format!("{stage}/lb-backends");
    assert_eq!(
        host_text(&tb, 3, &["cat", &backends]),
        format!("{m1}:6443\n")
    );
    let apiserver = "/etc/kubernetes/pki/apiserver.crt";
    let m1_cert = host_text(&tb, 1, &["sha256sum", apiserver]);
    assert!(!sans(&tb, 1, apiserver).contains(&format!("IP Address:{m2}")));
    // kube.sh recorded which PKI the first master's control plane started on.
    assert_eq!(
        host_text(&tb, 1, &["cat", &applied]).trim(),
        m1_cert.split_whitespace().next().unwrap()
    );
    let before_join = calls(&tb).len();
    let join = || {
        airlock(&store)
            .args(["join", "--masters", &m2, "--yes"])
            .output()
            .unwrap()
    };

    // The second master's kubeadm join fails (a double asked to): the first master
    // was renewed before it, the worker still has the first master only.
    ok(tb.exec(2, &["touch", "/etc/kube-doubles-fail"]), "touch");
    let failed = join();
    let t = text(&failed);
    assert!(!failed.status.success(), "{t}");
    assert!(
        t.contains(&format!("{m1}| restarted static pod kube-apiserver")),
        "{t}"
    );
    assert!(
        t.contains(&format!("{m1}| the API server answers /readyz again")),
        "{t}"
    );
    assert!(t.contains("kubeadm join failed (exit 1)"), "{t}");
    let renewed_at = mtime_ns(&tb, 1, &applied);
    let log = calls(&tb);
    let first_join = position(&log, &m2, "kubeadm", "join --config");
    assert!(
        renewed_at < log[first_join].at,
        "renew on {m1} after the join: {log:#?}"
    );
    let m1_renewed = host_text(&tb, 1, &["sha256sum", apiserver]);
    assert_ne!(
        m1_renewed, m1_cert,
        "the first master's API server certificate"
    );
    let m1_sans = sans(&tb, 1, apiserver);
    assert!(
        m1_sans.contains(&format!("IP Address:{m2}"))
            && m1_sans.contains(&format!("IP Address:{m1}")),
        "{m1_sans}"
    );
    assert_eq!(
        host_text(&tb, 1, &["cat", &applied]).trim(),
        m1_renewed.split_whitespace().next().unwrap()
    );
    assert_eq!(
        host_text(&tb, 3, &["cat", &backends]),
        format!("{m1}:6443\n")
    );

    // Fixed, the same join goes on: no second renewal, the second master joins (a
    // fresh token first), the worker's load balancer gets both masters. The first
    // master and the worker run no init or join again.
    ok(tb.exec(2, &["rm", "/etc/kube-doubles-fail"]), "rm");
    let joined = ok(join(), "airlock join --masters (again)");
    assert!(
        joined.contains(&format!("{m2} in cluster grow already")),
        "{joined}"
    );
    assert_eq!(mtime_ns(&tb, 1, &applied), renewed_at, "renewed twice");
    assert_eq!(host_text(&tb, 1, &["sha256sum", apiserver]), m1_renewed);
    let log = calls(&tb);
    let new = &log[before_join..];
    let join_m2 = new
        .iter()
        .rposition(|c| c.host == m2 && c.args.starts_with("join --config"))
        .unwrap();
    let token = new
        .iter()
        .rposition(|c| c.host == m1 && c.args.contains("apply -f -"))
        .unwrap();
    assert!(token < join_m2, "{new:#?}");
    for host in [&m1, &w] {
        assert!(
            new.iter()
                .all(|c| c.host != *host || (c.program != "base" && c.program != "kubeadm")),
            "{host} ran its init or join again: {new:#?}"
        );
    }
    assert_eq!(
        host_text(&tb, 3, &["cat", &backends]),
        format!("{m1}:6443\n{m2}:6443\n")
    );
    // The second master: the same CAs, its own etcd certificates from the etcd CA.
    let fetch = |host: usize, path: &str, local: &str| {
        let p = work.path().join(local);
        std::fs::write(&p, host_text(&tb, host, &["cat", path])).unwrap();
        p
    };
    let etcd_ca = fetch(1, "/etc/kubernetes/pki/etcd/ca.crt", "etcd-ca.crt");
    for (file, local) in [("server", "m2-server.crt"), ("peer", "m2-peer.crt")] {
        let path = format!("/etc/kubernetes/pki/etcd/{file}.crt");
        let cert = fetch(2, &path, local);
        let verify = ok(
            Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(&etcd_ca)
                .arg(&cert)
                .output()
                .unwrap(),
            "openssl verify",
        );
        assert!(verify.contains(": OK"), "{verify}");
        let own = sans(&tb, 2, &path);
        assert!(own.contains(&format!("IP Address:{m2}")), "{own}");
        assert!(!own.contains(&format!("IP Address:{m1}")), "{own}");
    }
    for shared in ["ca.crt", "ca.key", "sa.pub", "etcd/ca.crt", "apiserver.crt"] {
        let path = format!("/etc/kubernetes/pki/{shared}");
        assert_eq!(
            host_text(&tb, 1, &["sha256sum", &path]),
            host_text(&tb, 2, &["sha256sum", &path]),
            "{shared}"
        );
    }
    assert_eq!(
        host_text(&tb, 2, &["cat", &applied]).trim(),
        m1_renewed.split_whitespace().next().unwrap()
    );

    // The same join once more changes nothing.
    let before = calls(&tb).len();
    ok(join(), "airlock join --masters (third time)");
    let after = calls(&tb);
    assert_eq!(after.len(), before, "a re-run ran {:#?}", &after[before..]);
    assert_eq!(mtime_ns(&tb, 1, &applied), renewed_at);
    assert_eq!(host_text(&tb, 1, &["sha256sum", apiserver]), m1_renewed);
    assert_eq!(
        host_text(&tb, 3, &["cat", &backends]),
        format!("{m1}:6443\n{m2}:6443\n")
    );

    // Without a confirmation the PKI is not re-issued.
    let kept_aside = || {
        std::fs::read_dir(store.join("clusters/grow/kubernetes"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".old"))
            .count()
    };
    let aside = kept_aside();
    assert_eq!(aside, 1, "re-issued once for the second master");
    let unconfirmed = airlock(&store)
        .args(["join", "--masters", &m3])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(unconfirmed.status.code(), Some(2), "{}", text(&unconfirmed));
    let asked = text(&unconfirmed);
    assert!(asked.contains("pass --yes"), "{asked}");
    assert!(
        asked.contains(&format!(
            "re-issuing the cluster's certificates for the new master(s) {m3}"
        )),
        "{asked}"
    );
    assert_eq!(kept_aside(), aside);

    // `apply` with a third master: both running masters renewed, one after the
    // other, before the third joins; the worker gets all three.
    std::fs::write(&cf, clusterfile(&format!("{m1}, {m2}, {m3}"))).unwrap();
    let before = calls(&tb).len();
    let applied_out = ok(
        airlock(&store)
            .args(["apply", "-f"])
            .arg(&cf)
            .arg("--yes")
            .output()
            .unwrap(),
        "airlock apply (three masters)",
    );
    for master in [&m1, &m2] {
        assert!(
            applied_out.contains(&format!("{master}| restarted static pod kube-apiserver")),
            "{applied_out}"
        );
    }
    let (renewed_m1, renewed_m2) = (mtime_ns(&tb, 1, &applied), mtime_ns(&tb, 2, &applied));
    let log = calls(&tb);
    let join_m3 = position(&log[before..], &m3, "kubeadm", "join --config");
    assert!(
        renewed_at < renewed_m1 && renewed_m1 < renewed_m2 && renewed_m2 < log[before + join_m3].at,
        "{log:#?}"
    );
    assert!(
        applied_out.contains(&format!("for the new master(s) {m3}")),
        "{applied_out}"
    );
    assert_eq!(kept_aside(), aside + 1);
    let m1_sans = sans(&tb, 1, apiserver);
    assert!(m1_sans.contains(&format!("IP Address:{m3}")), "{m1_sans}");
    assert_eq!(
        host_text(&tb, 3, &["cat", &backends]),
        format!("{m1}:6443\n{m2}:6443\n{m3}:6443\n")
    );
    let current = host_text(&tb, 1, &["sha256sum", apiserver]);
    for host in [2, 4] {
        assert_eq!(host_text(&tb, host, &["sha256sum", apiserver]), current);
    }

    // Joining the worker as a master is refused before anything changes.
    let refused = airlock(&store)
        .args(["join", "--masters", &w, "--yes"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("delete it first"),
        "{}",
        text(&refused)
    );
    ok(
        airlock(&store)
            .args(["delete", "--all", "--yes"])
            .output()
            .unwrap(),
        "airlock delete --all",
    );
}

/// Every regular file under the airlock and Kubernetes directories of `host`, with its
/// SHA-256, sorted: what an upgrade replaces.
fn host_files(tb: &Testbed, host: usize) -> String {
    host_text(
        tb,
        host,
        &[
            "sh",
            "-c",
            "find /var/lib/airlock /etc/kubernetes -type f -exec sha256sum {} + | sort -k 2",
        ],
    )
}

/// Every file under `dir` on this machine with its content, by relative path.
fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// A Clusterfile of the kube-doubles cluster `name` on the testbed's first host, as
/// its only master.
fn one_master(work: &Path, tb: &Testbed, name: &str) -> PathBuf {
    let cf = work.join("Clusterfile");
    std::fs::write(
        &cf,
        format!(
            "apiVersion: sealer.io/v2
kind: Cluster
metadata:
  name: {name}
spec:
  image: kube-doubles:v1
  env: [ KubeRestartWait=0 ]
  ssh:
    user: root
    pk: {key}
  hosts:
    - ips: [ {m1} ]
      roles: [ master ]
",
            key = tb.key.display(),
            m1 = tb.hosts[0]
        ),
    )
    .unwrap();
    cf
}

#[test]
fn upgrade_to_an_image_whose_kubeadm_layer_does_not_merge_exits_2_and_changes_nothing() {
    let Some((work, store, tb)) = doubles_image_and_hosts(
        "upgrade_to_an_image_whose_kubeadm_layer_does_not_merge_exits_2_and_changes_nothing",
        1,
    ) else {
        return;
    };
    let cf = one_master(work.path(), &tb, "bad-layer");
    run_yes(&store, &cf);

    // v1.31.0 (a version the cluster may go to), whose etc/kubeadm.yml has a second
    // document without a `kind`: it cannot be merged with the Clusterfile's layers.
    build_v2(work.path(), &store, |v2| {
        let layer = std::fs::read_to_string(v2.join("etc/kubeadm.yml")).unwrap();
        std::fs::write(
            v2.join("etc/kubeadm.yml"),
            layer + "---\napiVersion: kubeadm.k8s.io/v1beta3\nnetworking:\n  podSubnet: 10.9.0.0/16\n",
        )
        .unwrap();
    });

    let files_before = host_files(&tb, 1);
    let calls_before = calls(&tb).len();
    let state = store.join("clusters/bad-layer");
    let state_before = tree(&state);
    let out = airlock(&store)
        .args(["upgrade", "kube-doubles:v2", "--yes"])
        .output()
        .unwrap();
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("image etc/kubeadm.yml document 2")
            && errors[0].contains("has no `kind`"),
        "the error line must name the file, the document and the field: {stderr}"
    );
    // Nothing changed: no marker, no file replaced on the host, no command run there,
    // the cluster's record on this machine as it was.
    assert!(
        !tb.exec(1, &["test", "-e", "/var/lib/airlock/state/upgrade-v1.31.0"])
            .status
            .success(),
        "upgrade marker written"
    );
    assert_eq!(
        host_files(&tb, 1),
        files_before,
        "files changed on the host"
    );
    assert_eq!(calls(&tb).len(), calls_before, "commands ran on the host");
    assert_eq!(tree(&state), state_before, "the cluster's record changed");
    let recorded = std::fs::read_to_string(state.join("Clusterfile")).unwrap();
    assert!(recorded.contains("kube-doubles:v1"), "{recorded}");
    tb.down().unwrap();
}

#[test]
fn a_new_kubernetes_cluster_not_confirmed_leaves_no_state_behind() {
    let Some((work, store, tb)) = doubles_image_and_hosts(
        "a_new_kubernetes_cluster_not_confirmed_leaves_no_state_behind",
        1,
    ) else {
        return;
    };
    let cf = one_master(work.path(), &tb, "unconfirmed");
    // No terminal and no --yes: the checks pass, the PKI is made for the question,
    // then the command stops unconfirmed.
    let out = airlock(&store)
        .args(["run", "-f"])
        .arg(&cf)
        .output()
        .unwrap();
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("preflight: 1 hosts passed") && msg.contains("pass --yes"),
        "{msg}"
    );
    let state = store.join("clusters/unconfirmed");
    assert!(
        !state.exists(),
        "an unconfirmed run left {:?} behind",
        tree(&state).keys().collect::<Vec<_>>()
    );
    assert!(
        !tb.exec(1, &["test", "-e", "/var/lib/airlock"])
            .status
            .success(),
        "an unconfirmed run touched the host"
    );
    // Confirmed, the same command makes the PKI and installs.
    ok(
        airlock(&store)
            .args(["run", "-f"])
            .arg(&cf)
            .arg("--yes")
            .output()
            .unwrap(),
        "airlock run --yes",
    );
    assert!(state.join("kubernetes/pki-files/pki/ca.crt").is_file());
    tb.down().unwrap();
}

/// `airlock run -f CF --yes` on `store`, which must succeed.
fn run_yes(store: &Path, cf: &Path) {
    ok(
        airlock(store)
            .args(["run", "-f"])
            .arg(cf)
            .arg("--yes")
            .output()
            .unwrap(),
        "airlock run",
    );
}
