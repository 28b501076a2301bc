//! External registry mode end to end: Debian's `docker-registry` with TLS (a CA made
//! here) and htpasswd runs on the operator machine, bound to the testbed bridge; the
//! hello bundle installs onto 2 testbed hosts with `registry.externalRegistry`; the
//! operator pushes the image set there, no registry runs on the nodes, and containerd
//! on a node pulls the app by its original name through the mirror, over TLS with
//! basic auth. A re-run sends nothing again; reset removes the mirror files.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use airlock::registry::tls;

use crate::lifecycle::{ok, text};
use crate::support::{free_port, require};
use crate::testbed::{Testbed, skip_reason};

const APP: &str = "docker.io/airlockdemo/hello:1.0";

/// `docker-registry` at `addr` with TLS and htpasswd, killed on drop.
struct TlsRegistry {
    child: Child,
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path, addr: &str, cert: &Path, key: &Path, htpasswd: &Path) -> TlsRegistry {
    let binary = require("docker-registry").expect("docker-registry is installed");
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        dir.join("data").display(),
        cert.display(),
        key.display(),
        htpasswd.display()
    );
    let path = dir.join("config.yml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(binary)
        .arg("serve")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    let mut registry = TlsRegistry { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        let exited = registry.child.try_wait().ok().flatten().is_some();
        if exited || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            panic!("docker-registry did not start at {addr}: {log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    registry
}

fn install(bundle: &Path, clusterfile: &Path, operator: &Path) -> String {
    let out = Command::new(bundle)
        .args(["install", "-f"])
        .arg(clusterfile)
        .arg("--yes")
        .env("AIRLOCK_ROOT", operator)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "install failed:\n{all}");
    all
}

#[test]
fn external_registry_gets_the_image_set_and_nodes_pull_through_it_over_tls_with_auth() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED external_registry_gets_the_image_set...: {why}");
        return;
    }
    if require("docker-registry").is_none() {
        eprintln!(
            "SKIPPED external_registry_gets_the_image_set...: apt-get install docker-registry"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (bundle, tb) = crate::e2e::bundle_and_hosts(work.path(), 2);

    // The customer's registry: its own CA, TLS on the testbed bridge, htpasswd.
    let reg_dir = work.path().join("external");
    let now = SystemTime::now();
    let ca = tls::generate_ca(&reg_dir.join("ca"), now).unwrap();
    let gateway = tb.gateway.to_string();
    let cert = tls::issue_server_cert(&ca, std::slice::from_ref(&gateway), &reg_dir, now).unwrap();
    let password = "harbor-pass-3";
    let htpasswd = reg_dir.join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("pusher:{}\n", bcrypt::hash(password, 5).unwrap()),
    )
    .unwrap();
    let port = free_port();
    let host = format!("{gateway}:{port}");
    let _registry = start_registry(&reg_dir, &host, &cert.cert_path, &cert.key_path, &htpasswd);

    let cf = work.path().join("Clusterfile");
    std::fs::write(
        &cf,
        format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: ext\nspec:\n  image: hello-cluster:v1\n  ssh:\n    user: root\n    pk: {}\n  registry:\n    externalRegistry:\n      domain: {gateway}\n      port: {port}\n      username: pusher\n      password: {password}\n      caFile: {}\n  hosts:\n    - ips: [ {} ]\n      roles: [ master ]\n    - ips: [ {} ]\n      roles: [ node ]\n",
            tb.key.display(),
            ca.cert_path.display(),
            tb.hosts[0],
            tb.hosts[1]
        ),
    )
    .unwrap();
    let operator = work.path().join("operator");
    let first = install(&bundle, &cf, &operator);
    assert!(
        first.contains("pushed docker.io/airlockdemo/hello:1.0"),
        "{first}"
    );
    assert!(!first.contains(password), "the password leaked:\n{first}");
    // The image set is in the customer's registry under its original path.
    assert!(
        reg_dir
            .join("data/docker/registry/v2/repositories/airlockdemo/hello")
            .is_dir(),
        "{first}"
    );

    // No registry on the nodes; the mirrors point at the external registry.
    ok(
        tb.exec(1, &["test", "!", "-e", "/var/lib/airlock/registry"]),
        "no node registry",
    );
    let toml = tb.exec(2, &["cat", "/etc/containerd/certs.d/docker.io/hosts.toml"]);
    let toml_text = String::from_utf8_lossy(&toml.stdout);
    assert!(
        toml_text.contains(&format!("[host.\"https://{host}\"]")),
        "{toml_text}"
    );
    let hosts = tb.exec(2, &["grep", "-c", "# airlock", "/etc/hosts"]);
    assert_eq!(String::from_utf8_lossy(&hosts.stdout).trim(), "0");
    // containerd pulls the app by its docker.io name through the mirror.
    let pull = tb.exec(
        2,
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
    ok(pull, "ctr pull through the external registry");
    // Without credentials the registry says 401.
    let status = anonymous_status(
        &tb,
        2,
        "/etc/containerd/certs.d/docker.io/airlock-ca.crt",
        &format!("https://{host}/v2/airlockdemo/hello/manifests/1.0"),
    );
    assert_eq!(status, "401");

    // A re-run sends nothing again and redoes no step.
    let again = install(&bundle, &cf, &operator);
    assert!(again.contains(": 0 sent (0 bytes)"), "{again}");
    let redone: Vec<&str> = again
        .lines()
        .filter(|l| l.ends_with(" done") && !l.ends_with("already done") && !l.starts_with("verif"))
        .collect();
    assert!(redone.is_empty(), "a re-run redid {redone:?}:\n{again}");

    // reset removes the mirror files and the CA.
    let reset = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["reset", "-f"])
        .arg(&cf)
        .arg("--yes")
        .env("AIRLOCK_ROOT", &operator)
        .output()
        .unwrap();
    ok(reset, "reset");
    for i in 1..=2 {
        let left = tb.exec(
            i,
            &[
                "sh",
                "-c",
                "ls /etc/containerd/certs.d/*/* 2>/dev/null || true",
            ],
        );
        assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "", "host {i}");
    }
}

/// The HTTP status `curl` gets on testbed host `host` for `url` without credentials,
/// trusting only the CA in `ca` (a path in the host).
pub(crate) fn anonymous_status(tb: &Testbed, host: usize, ca: &str, url: &str) -> String {
    let out = tb.exec(
        host,
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca,
            url,
        ],
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn ha_registry_runs_on_every_master_and_workers_fall_over_when_the_first_is_down() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED ha_registry_runs_on_every_master...: {why}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (bundle, tb) = crate::e2e::bundle_and_hosts(work.path(), 3);
    let cf = work.path().join("Clusterfile");
    std::fs::write(
        &cf,
        format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: ha\nspec:\n  image: hello-cluster:v1\n  ssh:\n    user: root\n    pk: {}\n  registry:\n    localRegistry:\n      ha: true\n  hosts:\n    - ips: [ {}, {} ]\n      roles: [ master ]\n    - ips: [ {} ]\n      roles: [ node ]\n",
            tb.key.display(),
            tb.hosts[0],
            tb.hosts[1],
            tb.hosts[2]
        ),
    )
    .unwrap();
    install(&bundle, &cf, &work.path().join("operator"));

    // Each master names itself for sea.hub; the worker names the first master.
    let sea_hub = |host: usize| {
        let out = tb.exec(host, &["grep", " sea.hub # airlock", "/etc/hosts"]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(sea_hub(1), tb.hosts[0].to_string());
    assert_eq!(sea_hub(2), tb.hosts[1].to_string());
    assert_eq!(sea_hub(3), tb.hosts[0].to_string());
    // The second master serves TLS for its IP (the certificate names every master).
    let ca = "/etc/containerd/certs.d/docker.io/airlock-ca.crt";
    let second = format!("https://{}:5000/v2/", tb.hosts[1]);
    assert_eq!(anonymous_status(&tb, 3, ca, &second), "401");

    // The first master's registry stops: the worker still pulls, from the second.
    ok(
        tb.exec(
            1,
            &["sh", "-c", "kill $(cat /var/lib/airlock/run/registry.pid)"],
        ),
        "stopping the first master's registry",
    );
    let first = format!("https://{}:5000/v2/", tb.hosts[0]);
    assert_ne!(anonymous_status(&tb, 3, ca, &first), "401");
    let pull = tb.exec(
        3,
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
    ok(pull, "ctr pull with the first master's registry down");
}
