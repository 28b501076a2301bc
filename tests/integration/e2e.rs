//! The walking skeleton end to end, as `make demo` does it, with assertions:
//! a source registry (Debian's docker-registry) holds the app image; `airlock build`
//! makes the hello example into a cluster image; `airlock bundle` writes one file; the
//! bundle installs onto 3 testbed hosts (real sshd, real containerd); each host is then
//! checked for what the install should have left there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::lifecycle::text;
use crate::registry_node::anonymous_status;
use crate::support::{DockerRegistry, skopeo_copy};
use crate::testbed::{Testbed, TestbedOptions, skip_reason};

const APP: &str = "docker.io/airlockdemo/hello:1.0";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn airlock(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock"));
    cmd.env("AIRLOCK_ROOT", root).env("NO_COLOR", "1");
    cmd
}

fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    format!("{stdout}{stderr}")
}

/// `BUNDLE install -f CLUSTERFILE --yes` with the operator's store in `operator`.
fn install(bundle: &Path, clusterfile: &Path, operator: &Path) -> Output {
    Command::new(bundle)
        .args(["install", "-f"])
        .arg(clusterfile)
        .arg("--yes")
        .env("AIRLOCK_ROOT", operator)
        .output()
        .unwrap()
}

fn clusterfile(dir: &Path, tb: &Testbed, ssh: &str) -> PathBuf {
    let hosts = &tb.hosts;
    let path = dir.join("Clusterfile");
    std::fs::write(
        &path,
        format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: hello\nspec:\n  image: hello-cluster:v1\n  ssh:\n{ssh}  hosts:\n    - ips: [ {} ]\n      roles: [ master ]\n    - ips: [ {}, {} ]\n      roles: [ node ]\n",
            hosts[0], hosts[1], hosts[2]
        ),
    )
    .unwrap();
    path
}

/// A built and bundled hello cluster image, from a source registry on loopback.
pub(crate) fn build_and_bundle(work: &Path) -> PathBuf {
    let registry =
        DockerRegistry::start(None).expect("docker-registry is installed by tests/scripts/deps.sh");
    let app_dir = work.join("app");
    let made = Command::new("sh")
        .arg(repo().join("assets/examples/hello/app/make-image.sh"))
        .arg(&app_dir)
        .arg("1.0")
        .output()
        .unwrap();
    ok(made, "make-image.sh");
    let dest = format!("docker://{}/airlockdemo/hello:1.0", registry.addr);
    ok(
        skopeo_copy(
            &format!("oci:{}:1.0", app_dir.display()),
            &dest,
            &["--dest-tls-verify=false"],
        ),
        "skopeo copy",
    );
    let store = work.join("store");
    let built = airlock(&store)
        .args(["build", "-t", "hello-cluster:v1", "--registry-mirror"])
        .arg(format!("docker.io=http://{}", registry.addr))
        .arg(repo().join("assets/examples/hello"))
        .output()
        .unwrap();
    ok(built, "airlock build");
    let bundle = work.join("hello-cluster.run");
    let bundled = airlock(&store)
        .args(["bundle", "hello-cluster:v1", "-o"])
        .arg(&bundle)
        .output()
        .unwrap();
    ok(bundled, "airlock bundle");
    bundle
}

/// The hello example built and bundled under `dir`, and `hosts` testbed hosts running
/// containerd: what most install tests start from.
pub(crate) fn bundle_and_hosts(dir: &Path, hosts: usize) -> (PathBuf, Testbed) {
    let bundle = build_and_bundle(dir);
    let tb = Testbed::up(TestbedOptions {
        hosts,
        containerd: true,
        ..TestbedOptions::default()
    })
    .expect("testbed up");
    (bundle, tb)
}

#[test]
fn build_bundle_and_install_on_three_testbed_hosts() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED build_bundle_and_install_on_three_testbed_hosts: {why}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (bundle, tb) = crate::e2e::bundle_and_hosts(work.path(), 3);
    let operator = work.path().join("operator");

    // Bad credentials first, from the variable `passwdEnv` names: refused before any
    // host changes, naming the host.
    let wrong = clusterfile(
        work.path(),
        &tb,
        "    user: root\n    passwdEnv: AIRLOCK_E2E_ROOT_PASSWORD\n",
    );
    let out = Command::new(&bundle)
        .args(["install", "-f"])
        .arg(&wrong)
        .arg("--yes")
        .env("AIRLOCK_ROOT", &operator)
        .env("AIRLOCK_E2E_ROOT_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    let msg = text(&out);
    assert!(!out.status.success(), "a wrong password must fail:\n{msg}");
    assert!(
        msg.contains(&tb.hosts[0].to_string()) && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert!(
        !msg.contains("not-the-password"),
        "the password leaked into the output:\n{msg}"
    );
    let untouched = tb.exec(1, &["test", "-e", "/var/lib/airlock"]);
    assert!(
        !untouched.status.success(),
        "a refused install must not touch the hosts"
    );

    // The real install, with the testbed key.
    let cf = clusterfile(
        work.path(),
        &tb,
        &format!("    user: root\n    pk: {}\n", tb.key.display()),
    );
    let out = install(&bundle, &cf, &operator);
    let first = ok(out, "bundle install");
    assert!(first.contains("installed"), "{first}");
    // The blobs went node to node, not three times from the operator.
    assert!(first.contains("fan-out chain 0: operator -> "), "{first}");
    assert!(!first.contains("sending over SSH instead"), "{first}");

    // The registry on the first master speaks TLS with the generated CA and wants
    // credentials: curl without them gets 401.
    let ca = "/etc/containerd/certs.d/docker.io/airlock-ca.crt";
    let status = anonymous_status(
        &tb,
        3,
        ca,
        "https://sea.hub:5000/v2/airlockdemo/hello/manifests/1.0?ns=docker.io",
    );
    assert_eq!(status, "401");
    let plain = tb.exec(3, &["curl", "-sS", "http://sea.hub:5000/v2/"]);
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("{}"),
        "plain HTTP must not be served: {}",
        text(&plain)
    );

    for host in 1..=3 {
        let sh = |script: &str| tb.exec(host, &["sh", "-c", script]);
        let toml = sh(
            "stat -c %a /etc/containerd/certs.d/docker.io/hosts.toml && cat /etc/containerd/certs.d/docker.io/hosts.toml",
        );
        let toml_text = String::from_utf8_lossy(&toml.stdout);
        assert!(
            toml_text.starts_with("600\n")
                && toml_text.contains("[host.\"https://sea.hub:5000\"]")
                && toml_text.contains(&format!("ca = \"{ca}\""))
                && toml_text.contains("Authorization = [\"Basic "),
            "host {host}: {toml:?}"
        );
        let hosts = sh("grep ' sea.hub # airlock' /etc/hosts");
        assert!(
            String::from_utf8_lossy(&hosts.stdout).starts_with(&tb.hosts[0].to_string()),
            "host {host}: {hosts:?}"
        );
        // containerd on the host pulls the app by its docker.io name through the mirror,
        // over TLS with the generated CA and basic auth (the testbed has no route to
        // the internet).
        let pull = sh(&format!(
            "ctr --namespace airlock image pull --hosts-dir /etc/containerd/certs.d {APP} && ctr --namespace airlock images ls -q"
        ));
        assert!(
            pull.status.success() && String::from_utf8_lossy(&pull.stdout).contains(APP),
            "host {host}: {}",
            text(&pull)
        );
    }
    // The registry's key and htpasswd are 0600 on the first master, and the operator's
    // CA key and credentials are kept there too.
    let modes = tb.exec(
        1,
        &[
            "stat",
            "-c",
            "%a %n",
            "/var/lib/airlock/registry/server-key.pem",
            "/var/lib/airlock/registry/htpasswd",
            "/var/lib/airlock/cluster/registry/ca-key.pem",
            "/var/lib/airlock/cluster/registry/credentials",
        ],
    );
    let modes = String::from_utf8_lossy(&modes.stdout);
    assert_eq!(
        modes.lines().filter(|l| l.starts_with("600 ")).count(),
        4,
        "{modes}"
    );
    // The launch command ran the app in a container on the first master.
    let launched = tb.exec(1, &["cat", "/var/lib/airlock/hello.out"]);
    let said = String::from_utf8_lossy(&launched.stdout);
    assert!(
        said.contains("hello from airlock on") && said.contains("via sea.hub:5000"),
        "{}",
        text(&launched)
    );

    // A re-run changes nothing: every step is already done.
    let out = install(&bundle, &cf, &operator);
    let again = ok(out, "second install");
    let redone: Vec<&str> = again
        .lines()
        .filter(|l| l.ends_with(" done") && !l.ends_with("already done") && !l.starts_with("verif"))
        .collect();
    assert!(
        redone.is_empty(),
        "a re-run redid steps {redone:?}:\n{again}"
    );
    assert_eq!(again.matches("already done").count(), 3 * 4 + 2, "{again}");

    // The bundle takes the engine's flags too: a third run as JSON lines on stdout, the
    // plan first, every step skipped, `finished` last.
    let out = Command::new(&bundle)
        .args(["install", "-f"])
        .arg(&cf)
        .args([
            "--yes",
            "-o",
            "json",
            "--max-parallel",
            "2",
            "--step-timeout",
            "10m",
        ])
        .env("AIRLOCK_ROOT", &operator)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(
        events.first().map(|e| e["event"].clone()),
        Some("plan".into())
    );
    assert_eq!(
        events.last().map(|e| e["event"].clone()),
        Some("finished".into())
    );
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "step" && e["state"]["state"] == "done"),
        "a JSON re-run redid a step"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "step" && e["state"]["state"] == "skipped"),
        "no step reported as skipped"
    );
}
