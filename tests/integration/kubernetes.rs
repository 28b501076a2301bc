//! The Kubernetes runtime's parts that need no Kubernetes servers, checked with real
//! tools and real TLS peers.
//!
//! 1. `airlock cert gen` writes a PKI; `openssl verify` checks every chain and
//!    `openssl x509` every subject, SAN, key usage, extended key usage and expiry.
//! 2. A TLS server in the test presents the generated API server certificate and
//!    requires a client certificate from the cluster CA; `kubectl get --raw /readyz`
//!    with the generated `admin.conf` gets `ok`, and fails with another PKI's.
//! 3. The load balancer runs in front of three TLS backends that answer `/readyz`
//!    and say who they are; backends go unready, die and come back while the test
//!    watches where new connections land. The `airlock agent lb` binary follows a
//!    rewritten backends file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use airlock::runtime::kubernetes::lb::{HealthCheck, LbConfig, LoadBalancer, Probe};
use airlock::runtime::kubernetes::pki::{self, KeyAlgorithm, PkiOptions};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::require;

const NINETY_NINE_YEARS_SECS: u64 = 99 * 366 * 24 * 3600;

fn airlock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(args)
        .output()
        .expect("running airlock")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `openssl x509 -noout` with `flags` on the certificate at `cert`.
fn x509(cert: &Path, flags: &[&str]) -> String {
    let mut args = vec!["x509", "-in", path(cert), "-noout"];
    args.extend_from_slice(flags);
    ok(openssl(&args), &format!("openssl x509 {}", cert.display()))
}

/// The client certificate embedded in a kubeconfig, written next to it as `.crt`.
fn client_cert_of(conf: &Path) -> PathBuf {
    let text = std::fs::read_to_string(conf).unwrap();
    let data = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-certificate-data:"))
        .unwrap_or_else(|| panic!("{} has no client-certificate-data", conf.display()))
        .trim();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    let out = conf.with_extension("client.crt.pem");
    std::fs::write(&out, pem).unwrap();
    out
}

fn verify(ca: &Path, cert: &Path) {
    let out = openssl(&["verify", "-CAfile", path(ca), path(cert)]);
    let text = ok(out, &format!("openssl verify {}", cert.display()));
    assert!(text.trim().ends_with(": OK"), "{text}");
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn cert_gen_layout_verifies_with_openssl() {
    if require("openssl").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki-out");
    ok(
        airlock(&[
            "cert",
            "gen",
            "--out",
            path(&dir),
            "--master",
            "m1=198.18.0.2",
            "--master",
            "m2=198.18.0.3",
            "--node",
            "w1=198.18.0.4",
            "--vip",
            "198.18.0.100",
            "--alt-names",
            "api.example.test,198.18.0.200",
        ]),
        "cert gen",
    );
    let d = |p: &str| dir.join(p);

    // Every chain.
    let ca = d("pki/ca.crt");
    let etcd_ca = d("pki/etcd/ca.crt");
    for cert in ["pki/apiserver.crt", "pki/apiserver-kubelet-client.crt"] {
        verify(&ca, &d(cert));
    }
    verify(
        &d("pki/front-proxy-ca.crt"),
        &d("pki/front-proxy-client.crt"),
    );
    for cert in [
        "pki/etcd/server.crt",
        "pki/etcd/peer.crt",
        "pki/etcd/healthcheck-client.crt",
        "pki/apiserver-etcd-client.crt",
        "nodes/m1/pki/etcd/server.crt",
        "nodes/m2/pki/etcd/server.crt",
        "nodes/m2/pki/etcd/peer.crt",
    ] {
        verify(&etcd_ca, &d(cert));
    }
    for conf in [
        "admin.conf",
        "super-admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
        "kubelet.conf",
        "nodes/m2/kubelet.conf",
        "nodes/w1/kubelet.conf",
    ] {
        verify(&ca, &client_cert_of(&d(conf)));
    }
    // Another CA does not verify them.
    let wrong = openssl(&[
        "verify",
        "-CAfile",
        path(&d("pki/front-proxy-ca.crt")),
        path(&d("pki/apiserver.crt")),
    ]);
    assert!(!wrong.status.success());

    // SANs of the API server: every master, the VIP, the service IP, the fixed names.
    let sans = x509(&d("pki/apiserver.crt"), &["-ext", "subjectAltName"]);
    for want in [
        "DNS:kubernetes,",
        "DNS:kubernetes.default,",
        "DNS:kubernetes.default.svc,",
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:apiserver.cluster.local",
        "DNS:m1",
        "DNS:m2",
        "DNS:api.example.test",
        "IP Address:10.96.0.1",
        "IP Address:127.0.0.1",
        "IP Address:198.18.0.2",
        "IP Address:198.18.0.3",
        "IP Address:198.18.0.100",
        "IP Address:198.18.0.200",
    ] {
        assert!(sans.contains(want), "apiserver SANs lack {want}: {sans}");
    }
    // etcd server and peer: per master.
    let m2_server = x509(
        &d("nodes/m2/pki/etcd/server.crt"),
        &["-subject", "-ext", "subjectAltName"],
    );
    for want in [
        "CN = m2",
        "DNS:m2",
        "DNS:localhost",
        "IP Address:198.18.0.3",
        "IP Address:127.0.0.1",
    ] {
        assert!(
            m2_server.contains(want),
            "m2 etcd server lacks {want}: {m2_server}"
        );
    }
    assert!(!m2_server.contains("198.18.0.2"), "{m2_server}");

    // Key usages and extended key usages, as kubeadm sets them.
    let leaf_usage = "Digital Signature, Key Encipherment";
    for (cert, eku, subject) in [
        (
            "pki/apiserver.crt",
            "TLS Web Server Authentication",
            "CN = kube-apiserver",
        ),
        (
            "pki/apiserver-kubelet-client.crt",
            "TLS Web Client Authentication",
            "O = kubeadm:cluster-admins, CN = kube-apiserver-kubelet-client",
        ),
        (
            "pki/front-proxy-client.crt",
            "TLS Web Client Authentication",
            "CN = front-proxy-client",
        ),
        (
            "pki/etcd/server.crt",
            "TLS Web Server Authentication, TLS Web Client Authentication",
            "CN = m1",
        ),
        (
            "pki/etcd/peer.crt",
            "TLS Web Server Authentication, TLS Web Client Authentication",
            "CN = m1",
        ),
        (
            "pki/etcd/healthcheck-client.crt",
            "TLS Web Client Authentication",
            "CN = kube-etcd-healthcheck-client",
        ),
        (
            "pki/apiserver-etcd-client.crt",
            "TLS Web Client Authentication",
            "CN = kube-apiserver-etcd-client",
        ),
    ] {
        let text = x509(
            &d(cert),
            &[
                "-subject",
                "-ext",
                "keyUsage,extendedKeyUsage,basicConstraints",
            ],
        );
        assert!(text.contains(subject), "{cert}: {text}");
        assert!(
            text.contains(&format!("critical\n    {leaf_usage}\n")),
            "{cert}: {text}"
        );
        assert!(text.contains(&format!("\n    {eku}\n")), "{cert}: {text}");
        assert!(text.contains("CA:FALSE"), "{cert}: {text}");
    }
    for (cert, cn) in [
        ("pki/ca.crt", "kubernetes"),
        ("pki/front-proxy-ca.crt", "front-proxy-ca"),
        ("pki/etcd/ca.crt", "etcd-ca"),
    ] {
        let text = x509(&d(cert), &["-subject", "-ext", "keyUsage,basicConstraints"]);
        assert!(text.contains(&format!("CN = {cn}")), "{cert}: {text}");
        assert!(
            text.contains("Digital Signature, Key Encipherment, Certificate Sign"),
            "{cert}: {text}"
        );
        assert!(text.contains("CA:TRUE"), "{cert}: {text}");
    }
    // Kubeconfig identities.
    for (conf, subject) in [
        (
            "admin.conf",
            "O = kubeadm:cluster-admins, CN = kubernetes-admin",
        ),
        (
            "super-admin.conf",
            "O = system:masters, CN = kubernetes-super-admin",
        ),
        (
            "controller-manager.conf",
            "CN = system:kube-controller-manager",
        ),
        ("scheduler.conf", "CN = system:kube-scheduler"),
        (
            "nodes/w1/kubelet.conf",
            "O = system:nodes, CN = system:node:w1",
        ),
    ] {
        let text = x509(&client_cert_of(&d(conf)), &["-subject"]);
        assert!(text.contains(subject), "{conf}: {text}");
    }
    let cm = std::fs::read_to_string(d("nodes/m2/controller-manager.conf")).unwrap();
    assert!(cm.contains("server: https://198.18.0.3:6443"), "{cm}");
    let admin = std::fs::read_to_string(d("admin.conf")).unwrap();
    assert!(
        admin.contains("server: https://apiserver.cluster.local:6443"),
        "{admin}"
    );

    // 100 years: still valid 99 years from now, RSA-2048 keys.
    for cert in [
        "pki/ca.crt",
        "pki/apiserver.crt",
        "pki/etcd/ca.crt",
        "pki/etcd/peer.crt",
        "pki/front-proxy-client.crt",
    ] {
        let secs = NINETY_NINE_YEARS_SECS.to_string();
        let text = x509(&d(cert), &["-checkend", &secs]);
        assert!(text.contains("will not expire"), "{cert}: {text}");
        let text = x509(&d(cert), &["-text"]);
        assert!(text.contains("Public-Key: (2048 bit)"), "{cert}");
    }
    let text = x509(
        &client_cert_of(&d("admin.conf")),
        &["-checkend", &NINETY_NINE_YEARS_SECS.to_string()],
    );
    assert!(text.contains("will not expire"), "{text}");

    // The service-account pair matches; keys and kubeconfigs are 0600.
    let public = ok(
        openssl(&["pkey", "-in", path(&d("pki/sa.key")), "-pubout"]),
        "openssl pkey",
    );
    assert_eq!(public, std::fs::read_to_string(d("pki/sa.pub")).unwrap());
    for secret in [
        "pki/ca.key",
        "pki/sa.key",
        "pki/etcd/peer.key",
        "admin.conf",
        "nodes/w1/kubelet.conf",
    ] {
        assert_eq!(mode(&d(secret)), 0o600, "{secret}");
    }
    assert_eq!(mode(&d("pki/ca.crt")), 0o644);

    // A second run into the same directory is refused with exit code 2.
    let again = airlock(&["cert", "gen", "--out", path(&dir), "--master", "198.18.0.2"]);
    assert_eq!(again.status.code(), Some(2), "{again:?}");

    // cert check sees every certificate with ~100 years left.
    let json = ok(
        airlock(&["cert", "check", "--dir", path(&dir), "-o", "json"]),
        "cert check",
    );
    let found: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert!(found.len() >= 25, "{json}");
    for entry in &found {
        assert!(entry["days_left"].as_i64().unwrap() >= 99 * 365, "{entry}");
    }
    assert!(
        found
            .iter()
            .any(|e| e["path"] == "pki/etcd/ca.crt" && e["is_ca"] == true)
    );
    let table = ok(
        airlock(&["cert", "check", "--dir", path(&dir)]),
        "cert check",
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("admin.conf") && l.contains("kubernetes-admin")),
        "{table}"
    );
}

#[test]
fn cert_gen_uses_a_given_ca_and_ecdsa_keys() {
    if require("openssl").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ca_crt = tmp.path().join("my-ca.crt");
    let ca_key = tmp.path().join("my-ca.key");
    ok(
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            path(&ca_key),
            "-out",
            path(&ca_crt),
            "-days",
            "36600",
            "-subj",
            "/CN=my-own-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,digitalSignature",
        ]),
        "openssl req",
    );
    // PKCS#1 ("RSA PRIVATE KEY"), as older tools write it.
    let pkcs1 = tmp.path().join("my-ca.pkcs1.key");
    ok(
        openssl(&[
            "rsa",
            "-in",
            path(&ca_key),
            "-traditional",
            "-out",
            path(&pkcs1),
        ]),
        "openssl rsa -traditional",
    );
    assert!(
        std::fs::read_to_string(&pkcs1)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );

    let dir = tmp.path().join("out");
    ok(
        airlock(&[
            "cert",
            "gen",
            "--out",
            path(&dir),
            "--master",
            "198.18.0.2",
            "--ca-cert",
            path(&ca_crt),
            "--ca-key",
            path(&pkcs1),
            "--key-algorithm",
            "ecdsa",
        ]),
        "cert gen --ca-cert",
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("pki/ca.crt")).unwrap(),
        std::fs::read_to_string(&ca_crt).unwrap()
    );
    verify(&ca_crt, &dir.join("pki/apiserver.crt"));
    verify(&ca_crt, &client_cert_of(&dir.join("admin.conf")));
    let text = x509(&dir.join("pki/apiserver.crt"), &["-text"]);
    assert!(text.contains("Issuer: CN = my-own-ca"), "{text}");
    assert!(
        text.contains("id-ecPublicKey") && text.contains("P-256"),
        "{text}"
    );
    // The etcd CA is still made by airlock, with ECDSA keys too.
    verify(
        &dir.join("pki/etcd/ca.crt"),
        &dir.join("pki/etcd/server.crt"),
    );

    // A key that is not the CA's is refused as bad input.
    let other_key = tmp.path().join("other.key");
    ok(
        openssl(&["genrsa", "-out", path(&other_key), "2048"]),
        "openssl genrsa",
    );
    let out = airlock(&[
        "cert",
        "gen",
        "--out",
        path(&tmp.path().join("out2")),
        "--master",
        "198.18.0.2",
        "--ca-cert",
        path(&ca_crt),
        "--ca-key",
        path(&other_key),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not belong"),
        "{out:?}"
    );
}

/// A TLS server that answers `GET /readyz` with its current status (body `ok`) and
/// any other GET with its name; stops (closing its port) when dropped.
struct TlsServer {
    readyz: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&str>,
) -> Arc<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(certs, key).unwrap())
}

impl TlsServer {
    fn start(listener: TcpListener, config: Arc<rustls::ServerConfig>, name: &str) -> Self {
        let readyz = Arc::new(AtomicU16::new(200));
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let name = name.to_string();
        let status = Arc::clone(&readyz);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let name = name.clone();
                let status = Arc::clone(&status);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    // kubectl adds `?timeout=...`; the path is what counts.
                    let target = text.split_whitespace().nth(1).unwrap_or("");
                    let target = target.split('?').next().unwrap_or("");
                    let (code, body) = if target == "/readyz" {
                        let code = status.load(Ordering::SeqCst);
                        (
                            code,
                            if code == 200 {
                                "ok".to_string()
                            } else {
                                "not ready".to_string()
                            },
                        )
                    } else {
                        (200, name.clone())
                    };
                    let answer = format!(
                        "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self { readyz, task }
    }
}

/// Generate a PKI in memory and write it to `dir`.
fn generate(dir: &Path, endpoint: &str, algorithm: KeyAlgorithm) {
    let mut options = PkiOptions::new(vec!["127.0.0.1".parse().unwrap()]);
    options.control_plane_endpoint = endpoint.to_string();
    options.key_algorithm = algorithm;
    let pki = pki::generate(&options, time::OffsetDateTime::now_utc()).unwrap();
    pki.write_to(dir).unwrap();
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reaches_readyz_with_the_generated_admin_kubeconfig() {
    if require("kubectl").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let good = tmp.path().join("good");
    let other = tmp.path().join("other");
    // RSA, the default, for the PKI kubectl talks to.
    generate(&good, &endpoint, KeyAlgorithm::Rsa2048);
    generate(&other, &endpoint, KeyAlgorithm::EcdsaP256);
    let config = server_config(
        &read(good.join("pki/apiserver.crt")),
        &read(good.join("pki/apiserver.key")),
        Some(&read(good.join("pki/ca.crt"))),
    );
    let _server = TlsServer::start(listener, config, "apiserver");

    let kubectl = |conf: PathBuf| {
        let home = tmp.path().join("home");
        async move {
            tokio::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(conf)
                .args(["get", "--raw", "/readyz", "--request-timeout=20s"])
                .env("HOME", &home)
                .env("KUBECACHEDIR", home.join("cache"))
                .kill_on_drop(true)
                .output()
                .await
                .unwrap()
        }
    };
    let out = kubectl(good.join("admin.conf")).await;
    assert!(out.status.success(), "kubectl failed: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    // Another PKI's admin.conf, pointed at the same server: its CA does not know the
    // server's certificate (and the server does not know its client certificate).
    let out = kubectl(other.join("admin.conf")).await;
    assert!(
        !out.status.success(),
        "kubectl with the wrong CA succeeded: {out:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("certificate") || stderr.contains("x509") || stderr.contains("tls"),
        "{stderr}"
    );

    // The right CA but another CA's client certificate: refused by the server.
    let mixed = tmp.path().join("mixed.conf");
    let good_text = read(good.join("admin.conf"));
    let other_text = read(other.join("admin.conf"));
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.trim().starts_with(name))
            .unwrap()
            .to_string()
    };
    let text = good_text
        .replace(
            &field(&good_text, "client-certificate-data:"),
            &field(&other_text, "client-certificate-data:"),
        )
        .replace(
            &field(&good_text, "client-key-data:"),
            &field(&other_text, "client-key-data:"),
        );
    std::fs::write(&mixed, text).unwrap();
    let out = kubectl(mixed).await;
    assert!(
        !out.status.success(),
        "kubectl with a foreign client certificate succeeded: {out:?}"
    );
}

/// One request through `addr`, TLS verified with `ca`: the name of the backend that answered.
async fn whoami(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Result<String, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    // A peer that closes without close_notify still gave us its answer.
    let _ = tls.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.split("\r\n\r\n")
        .nth(1)
        .map(str::to_string)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("no answer: {text:?}"))
}

fn client_tls(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Poll `check` until it returns `Some`, failing after a generous deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Names that answered `count` requests through `addr` (each must be answered).
async fn answers(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>, count: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..count {
        names.push(
            whoami(addr, tls)
                .await
                .expect("a request through the load balancer"),
        );
    }
    names
}

struct Backends {
    servers: Vec<Option<TlsServer>>,
    addrs: Vec<SocketAddr>,
    config: Arc<rustls::ServerConfig>,
}

impl Backends {
    async fn start(dir: &Path, count: usize) -> Self {
        let config = server_config(
            &read(dir.join("pki/apiserver.crt")),
            &read(dir.join("pki/apiserver.key")),
            None,
        );
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..count {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            servers.push(Some(TlsServer::start(
                listener,
                Arc::clone(&config),
                &format!("b{i}"),
            )));
        }
        Self {
            servers,
            addrs,
            config,
        }
    }

    fn kill(&mut self, i: usize) {
        self.servers[i] = None;
    }

    async fn revive(&mut self, i: usize) {
        let listener = TcpListener::bind(self.addrs[i])
            .await
            .expect("rebinding the backend's port");
        self.servers[i] = Some(TlsServer::start(
            listener,
            Arc::clone(&self.config),
            &format!("b{i}"),
        ));
    }

    fn set_readyz(&self, i: usize, code: u16) {
        self.servers[i]
            .as_ref()
            .unwrap()
            .readyz
            .store(code, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_follows_backend_health() {
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path(), "127.0.0.1:6443", KeyAlgorithm::EcdsaP256);
    let ca = read(tmp.path().join("pki/ca.crt"));
    let mut backends = Backends::start(tmp.path(), 3).await;

    let mut config = LbConfig::new("127.0.0.1:0".parse().unwrap(), backends.addrs.clone());
    config.health = HealthCheck {
        probe: Probe::Https {
            path: "/readyz".into(),
            ca_pem: Some(ca.clone()),
        },
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        fall: 2,
        rise: 2,
    };
    let lb = LoadBalancer::bind(config).await.unwrap();
    let addr = lb.local_addr().unwrap();
    let handle = lb.handle();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(lb.run(shutdown.clone()));
    let tls = client_tls(&ca);

    // 1. Connections flow to every backend, TLS end to end.
    let names = answers(addr, &tls, 9).await;
    for b in ["b0", "b1", "b2"] {
        assert!(names.iter().any(|n| n == b), "{b} got nothing: {names:?}");
    }

    // 2. b0 answers /readyz with 500 but still serves: taken out, gets nothing new.
    backends.set_readyz(0, 500);
    eventually("b0 marked down", || {
        let down = !handle.status()[0].is_healthy;
        async move { down.then_some(()) }
    })
    .await;
    let names = answers(addr, &tls, 12).await;
    assert!(!names.iter().any(|n| n == "b0"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "b1") && names.iter().any(|n| n == "b2"),
        "{names:?}"
    );

    // 3. b1 dies: taken out too; everything goes to b2.
    backends.kill(1);
    eventually("b1 marked down", || {
        let down = !handle.status()[1].is_healthy;
        async move { down.then_some(()) }
    })
    .await;
    let names = answers(addr, &tls, 6).await;
    assert!(names.iter().all(|n| n == "b2"), "{names:?}");

    // 4. Both come back: both are used again.
    backends.set_readyz(0, 200);
    backends.revive(1).await;
    let tls_ref = &tls;
    eventually("b0 and b1 used again", || async move {
        let names = answers(addr, tls_ref, 6).await;
        (names.iter().any(|n| n == "b0") && names.iter().any(|n| n == "b1")).then_some(())
    })
    .await;
    assert!(
        handle.status().iter().all(|b| b.is_healthy),
        "{:?}",
        handle.status()
    );

    // 5. A new backend list takes effect at once.
    handle.set_backends(&[backends.addrs[2]]);
    let names = answers(addr, &tls, 4).await;
    assert!(names.iter().all(|n| n == "b2"), "{names:?}");

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_lb_follows_its_backends_file() {
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path(), "127.0.0.1:6443", KeyAlgorithm::EcdsaP256);
    let ca_path = tmp.path().join("pki/ca.crt");
    let ca = read(ca_path.clone());
    let backends = Backends::start(tmp.path(), 2).await;
    let file = tmp.path().join("backends");
    std::fs::write(
        &file,
        format!("# first master only\n{}\n", backends.addrs[0]),
    )
    .unwrap();
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args([
            "agent",
            "lb",
            "--listen",
            &listen.to_string(),
            "--backends-file",
        ])
        .arg(&file)
        .args(["--health", "https", "/readyz", "--health-ca"])
        .arg(&ca_path)
        .args(["--interval-ms", "100"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let tls = client_tls(&ca);
    let tls_ref = &tls;
    let name = eventually("the agent answers through b0", || async move {
        whoami(listen, tls_ref).await.ok()
    })
    .await;
    assert_eq!(name, "b0");

    std::fs::write(&file, format!("{}\n", backends.addrs[1])).unwrap();
    eventually("the agent switched to b1", || async move {
        let names = answers(listen, tls_ref, 3).await;
        names.iter().all(|n| n == "b1").then_some(())
    })
    .await;

    // A broken file is reported and the last good list kept.
    std::fs::write(&file, "not-an-address\n").unwrap();
    let names = answers(listen, &tls, 3).await;
    assert!(names.iter().all(|n| n == "b1"), "{names:?}");

    child.start_kill().unwrap();
    let _ = child.wait().await;
}
