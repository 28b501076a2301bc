//! The registry over TLS with certificates from a generated airlock CA: the airlock
//! client, skopeo, and `ctr image pull` inside a testbed host through a containerd
//! `hosts.toml` mirror with basic auth.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

use airlock::image::store::Store;
use airlock::registry::client::{ClientConfig, ClientError};
use airlock::registry::server::ServerConfig;
use airlock::registry::tls;
use airlock::spec::reference::Reference;

use super::{cluster, new_client, serve};
use crate::support;
use crate::testbed::{self, Testbed, TestbedOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_serves_tls_from_a_generated_ca_to_the_client_and_skopeo() {
    let Some(c) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = tls::generate_ca(&dir.path().join("ca"), now).unwrap();
    let stranger = tls::generate_ca(&dir.path().join("stranger"), now).unwrap();
    let issued = tls::issue_server_cert(
        &ca,
        &["127.0.0.1".to_string()],
        &dir.path().join("server"),
        now,
    )
    .unwrap();
    let mut config = ServerConfig::read_only();
    config.tls = Some(tls::server_config(&issued.cert_path, &issued.key_path).unwrap());
    let registry = serve(&c.store, config).await;
    assert!(registry.url().starts_with("https://"), "{}", registry.url());
    let reference: Reference = format!("{}/library/busybox:1.36", registry.addr)
        .parse()
        .unwrap();

    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let (trusting, _) = new_client(ClientConfig {
        ca_certs: vec![ca.cert_path.clone()],
        ..ClientConfig::default()
    });
    let descriptor = trusting.pull(&store, &reference, &[]).await.unwrap();
    assert_eq!(descriptor.digest.to_string(), c.layout.manifest_digest);

    // loopback may speak plain HTTP, but its TLS certificate is still checked
    for config in [
        ClientConfig::default(),
        ClientConfig {
            ca_certs: vec![stranger.cert_path.clone()],
            ..ClientConfig::default()
        },
    ] {
        let (client, _) = new_client(config);
        let fresh = tempfile::tempdir().unwrap();
        let err = client
            .pull(&Store::open(fresh.path()).unwrap(), &reference, &[])
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Http { .. }), "{err}");
        assert!(err.to_string().contains("--ca-cert"), "{err}");
    }
    let (insecure, _) = new_client(ClientConfig {
        insecure: vec![registry.addr.to_string()],
        ..ClientConfig::default()
    });
    let fresh = tempfile::tempdir().unwrap();
    insecure
        .pull(&Store::open(fresh.path()).unwrap(), &reference, &[])
        .await
        .unwrap();

    // skopeo checks the certificate against the CA in --cert-dir (files *.crt)
    if support::require("skopeo").is_some() {
        let image = format!("docker://{}/library/busybox:1.36", registry.addr);
        let inspect = move |ca_file: &Path| {
            let certs = tempfile::tempdir().unwrap();
            std::fs::copy(ca_file, certs.path().join("ca.crt")).unwrap();
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=true", "--cert-dir"])
                .arg(certs.path())
                .arg(&image)
                .output()
                .unwrap()
        };
        let (ca_path, stranger_path) = (ca.cert_path.clone(), stranger.cert_path.clone());
        let (good, bad) =
            tokio::task::spawn_blocking(move || (inspect(&ca_path), inspect(&stranger_path)))
                .await
                .unwrap();
        assert!(
            good.status.success(),
            "{}",
            String::from_utf8_lossy(&good.stderr)
        );
        assert_eq!(good.stdout, c.layout.manifest);
        assert!(!bad.status.success(), "skopeo trusted a stranger's CA");
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(stderr.contains("certificate"), "{stderr}");
    }
    registry.stop().await.unwrap();
}

/// A child process killed (by its PID) and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `airlock registry serve` on `addr` over the store at `root`, with TLS from the CA
/// in `ca_dir` and basic auth; returns the process and the URL it printed.
fn serve_cli(root: &Path, addr: &str, ca_dir: &Path, htpasswd: &Path) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--root")
        .arg(root)
        .args(["registry", "serve", "--read-only", "--addr", addr])
        .arg("--tls-ca-dir")
        .arg(ca_dir)
        .arg("--htpasswd")
        .arg(htpasswd)
        .env_remove("AIRLOCK_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (running, url)
}

/// Write `text` to `path` inside testbed host 1.
fn write_in_host(tb: &Testbed, path: &str, text: &str) {
    let out = tb.exec(
        1,
        &[
            "sh",
            "-c",
            "mkdir -p \"$(dirname \"$1\")\" && printf '%s' \"$2\" > \"$1\"",
            "sh",
            path,
            text,
        ],
    );
    assert!(
        out.status.success(),
        "writing {path} in host 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A containerd `hosts.toml` for docker.io whose mirror is `url`, trusted with `ca`.
fn hosts_toml(url: &str, ca: &str) -> String {
    format!(
        "server = \"https://registry-1.docker.io\"\n\n\
         [host.\"{url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{ca}\"\n"
    )
}

#[test]
fn ctr_pulls_through_a_hosts_toml_mirror_over_tls_with_basic_auth_in_a_testbed_host() {
    if let Some(why) = testbed::skip_reason() {
        eprintln!("SKIPPED (needs the testbed): {why}");
        return;
    }
    let Some(c) = cluster() else { return };
    let tb = Testbed::up(TestbedOptions {
        hosts: 1,
        containerd: true,
        ..TestbedOptions::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let password = "mirror-pass-7";
    std::fs::write(
        &htpasswd,
        format!("puller:{}\n", bcrypt::hash(password, 5).unwrap()),
    )
    .unwrap();
    let ca_dir: PathBuf = dir.path().join("ca");
    let (_registry, url) = serve_cli(
        c.store.root(),
        &format!("{}:0", tb.gateway),
        &ca_dir,
        &htpasswd,
    );
    assert!(
        url.starts_with(&format!("https://{}:", tb.gateway)),
        "{url}"
    );
    let ca_pem = std::fs::read_to_string(ca_dir.join(tls::CA_CERT_FILE)).unwrap();
    let stranger = tls::generate_ca(&dir.path().join("stranger"), SystemTime::now()).unwrap();

    write_in_host(&tb, "/etc/airlock/ca.pem", &ca_pem);
    write_in_host(&tb, "/etc/airlock/stranger.pem", stranger.cert_pem());
    write_in_host(
        &tb,
        "/etc/containerd/certs.d/docker.io/hosts.toml",
        &hosts_toml(&url, "/etc/airlock/ca.pem"),
    );
    write_in_host(
        &tb,
        "/etc/containerd/certs-stranger.d/docker.io/hosts.toml",
        &hosts_toml(&url, "/etc/airlock/stranger.pem"),
    );

    let pull = |hosts_dir: &str, user: &str| {
        // throwaway test credentials: ctr only takes them as an argument
        tb.exec(
            1,
            &[
                "ctr",
                "-n",
                "t",
                "image",
                "pull",
                "--hosts-dir",
                hosts_dir,
                "--user",
                user,
                "docker.io/library/busybox:1.36",
            ],
        )
    };
    let good_user = format!("puller:{password}");
    let wrong_password = pull("/etc/containerd/certs.d", "puller:not-it");
    assert!(
        !wrong_password.status.success(),
        "pulled with a wrong password"
    );
    let text = String::from_utf8_lossy(&wrong_password.stderr).to_lowercase();
    assert!(
        text.contains("401") || text.contains("unauthorized") || text.contains("authoriz"),
        "{text}"
    );
    let wrong_ca = pull("/etc/containerd/certs-stranger.d", &good_user);
    assert!(
        !wrong_ca.status.success(),
        "pulled trusting a stranger's CA"
    );
    let text = String::from_utf8_lossy(&wrong_ca.stderr);
    assert!(
        text.contains("x509") || text.contains("certificate"),
        "{text}"
    );

    let ok = pull("/etc/containerd/certs.d", &good_user);
    assert!(
        ok.status.success(),
        "ctr pull failed:\n{}\n{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let images = tb.exec(1, &["ctr", "-n", "t", "image", "ls"]);
    let listing = String::from_utf8_lossy(&images.stdout);
    assert!(
        listing.contains("docker.io/library/busybox:1.36")
            && listing.contains(&c.layout.manifest_digest),
        "{listing}"
    );
    // the unpacked layer is usable: read a file of it through a snapshot mount
    let hello = tb.exec(
        1,
        &[
            "sh",
            "-c",
            "ctr -n t run --rm docker.io/library/busybox:1.36 hello-check /bin/busybox cat /etc/hello",
        ],
    );
    assert!(
        String::from_utf8_lossy(&hello.stdout).contains("hello from airlock tests"),
        "{}",
        String::from_utf8_lossy(&hello.stderr)
    );
}
