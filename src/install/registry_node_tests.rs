//! Tests of the registry's identity and the mirror files (no hosts involved).

use super::*;
use crate::spec::clusterfile::Clusterfile;

fn spec(registry: &str) -> ClusterSpec {
    let text = format!(
        "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n  ssh: {{passwd: pw}}\n{registry}  hosts:\n  - ips: [198.18.0.2, 198.18.0.3]\n    roles: [master]\n  - ips: [198.18.0.4]\n    roles: [node]\n"
    );
    Clusterfile::parse("Clusterfile", &text)
        .unwrap()
        .resolve(&|v| (v == "REG_PW").then(|| "from-env".to_string()))
        .unwrap()
}

fn refs() -> Vec<Reference> {
    ["nginx", "quay.io/a/b"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn hosts_toml_lists_mirrors_in_order_with_ca_and_header() {
    let auth = Secret::new("Basic dTpw");
    let t = hosts_toml(
        "docker.io",
        &[
            "https://sea.hub:5000".into(),
            "https://198.18.0.3:5000".into(),
        ],
        Some("/etc/containerd/certs.d/docker.io/airlock-ca.crt"),
        Some(&auth),
    );
    assert!(t.starts_with("# written by airlock"));
    assert!(t.contains("server = \"https://registry-1.docker.io\""));
    let first = t.find("[host.\"https://sea.hub:5000\"]").unwrap();
    let second = t.find("[host.\"https://198.18.0.3:5000\"]").unwrap();
    assert!(first < second, "{t}");
    assert_eq!(t.matches("Authorization = [\"Basic dTpw\"]").count(), 2);
    assert!(t.contains("[host.\"https://198.18.0.3:5000\".header]"));
    let plain = hosts_toml("quay.io", &["http://x:1".into()], None, None);
    assert!(plain.contains("server = \"https://quay.io\""));
    assert!(!plain.contains("ca =") && !plain.contains("header"));
}

#[test]
fn domains_are_unique_and_include_the_registry() {
    assert_eq!(
        mirror_domains(&refs(), "sea.hub:5000"),
        ["docker.io", "quay.io", "sea.hub:5000"]
    );
}

#[test]
fn identity_is_made_once_and_reused_and_the_cert_follows_the_registry_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let single = spec("");
    let a = RegistryAccess::prepare(&single, dir.path(), now).unwrap();
    assert!(a.tls);
    let (user, password) = a.credentials.clone().unwrap();
    assert_eq!(user, "airlock");
    assert_eq!(password.expose().len(), 48);
    let reg_dir = dir.path().join(OPERATOR_DIR);
    for private in [
        tls::CA_KEY_FILE,
        CREDENTIALS_FILE,
        HTPASSWD_FILE,
        tls::SERVER_KEY_FILE,
    ] {
        let mode = fs_err::metadata(reg_dir.join(private))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "{private}"
        );
    }
    // A re-run gives the very same files: markers stay unchanged.
    let b = RegistryAccess::prepare(&single, dir.path(), now).unwrap();
    assert_eq!(a.ca_pem, b.ca_pem);
    assert_eq!(a.htpasswd, b.htpasswd);
    assert_eq!(
        a.server.as_ref().unwrap().cert_pem,
        b.server.as_ref().unwrap().cert_pem
    );
    assert_eq!(b.credentials.unwrap().1, password);
    // HA: same CA and credentials, a new certificate naming every master.
    let ha = spec("  registry:\n    localRegistry: {ha: true}\n");
    let c = RegistryAccess::prepare(&ha, dir.path(), now).unwrap();
    assert_eq!(a.ca_pem, c.ca_pem);
    assert_eq!(a.htpasswd, c.htpasswd);
    assert_ne!(
        a.server.as_ref().unwrap().cert_pem,
        c.server.as_ref().unwrap().cert_pem
    );
    let names = fs_err::read_to_string(reg_dir.join(NAMES_FILE)).unwrap();
    assert_eq!(names, "sea.hub\n198.18.0.2\n198.18.0.3\n127.0.0.1\n");
    // The htpasswd line verifies the password.
    let line = c.htpasswd.unwrap();
    let (_, hash) = line.split_once(':').unwrap();
    assert!(bcrypt::verify(password.expose(), hash).unwrap());
}

#[test]
fn given_credentials_replace_the_random_ones_and_insecure_is_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let given = spec("  registry:\n    localRegistry: {username: ops, passwordEnv: REG_PW}\n");
    let a = RegistryAccess::prepare(&given, dir.path(), now).unwrap();
    let (user, password) = a.credentials.clone().unwrap();
    assert_eq!((user.as_str(), password.expose()), ("ops", "from-env"));
    assert!(a.htpasswd.unwrap().starts_with("ops:$2"));
    let insecure = spec("  registry:\n    localRegistry: {insecure: true}\n");
    let p = RegistryAccess::prepare(&insecure, dir.path(), now).unwrap();
    assert!(!p.tls && p.credentials.is_none() && p.server.is_none() && p.ca_pem.is_none());
    let files = mirror_files(&insecure, &p, &refs(), &insecure.hosts[2]);
    let (_, toml, mode) = &files.files[0];
    assert!(toml.expose().contains("[host.\"http://sea.hub:5000\"]"));
    assert_eq!(*mode, "644");
}

#[test]
fn a_supplied_certificate_is_served_and_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let own = dir.path().join("own");
    let ca = tls::generate_ca(&own, now).unwrap();
    let cert = tls::issue_server_cert(&ca, &["registry.corp".to_string()], &own, now).unwrap();
    let s = spec(&format!(
        "  registry:\n    localRegistry:\n      cert: {{certFile: {}, keyFile: {}, caFile: {}}}\n",
        cert.cert_path.display(),
        cert.key_path.display(),
        ca.cert_path.display()
    ));
    let a = RegistryAccess::prepare(&s, dir.path(), now).unwrap();
    assert_eq!(a.ca_pem.as_deref(), Some(ca.cert_pem()));
    assert_eq!(
        a.server.unwrap().cert_pem,
        fs_err::read_to_string(&cert.cert_path).unwrap()
    );
    assert!(
        !dir.path()
            .join(OPERATOR_DIR)
            .join(tls::CA_CERT_FILE)
            .exists()
    );
    // A key that does not fit the certificate is refused before any host changes.
    let wrong = spec(&format!(
        "  registry:\n    localRegistry:\n      cert: {{certFile: {}, keyFile: {}}}\n",
        cert.cert_path.display(),
        ca.key_path.display()
    ));
    assert!(RegistryAccess::prepare(&wrong, dir.path(), now).is_err());
}

#[test]
fn ha_masters_use_themselves_and_workers_fall_over_through_every_master() {
    let dir = tempfile::tempdir().unwrap();
    let ha = spec("  registry:\n    localRegistry: {ha: true}\n");
    let a = RegistryAccess::prepare(&ha, dir.path(), SystemTime::now()).unwrap();
    let second_master = mirror_files(&ha, &a, &refs(), &ha.hosts[1]);
    assert_eq!(second_master.etc_hosts, Some(ha.hosts[1].ip));
    let worker = mirror_files(&ha, &a, &refs(), &ha.hosts[2]);
    assert_eq!(worker.etc_hosts, Some(ha.hosts[0].ip));
    let toml = &worker
        .files
        .iter()
        .find(|(p, _, _)| p.ends_with("docker.io/hosts.toml"))
        .unwrap()
        .1;
    let t = toml.expose();
    let order: Vec<usize> = [
        "[host.\"https://sea.hub:5000\"]",
        "[host.\"https://198.18.0.3:5000\"]",
    ]
    .iter()
    .map(|h| t.find(h).unwrap())
    .collect();
    assert!(order[0] < order[1], "{t}");
    assert!(!t.contains("https://198.18.0.2:5000"), "{t}");
}

#[test]
fn external_registry_is_the_only_mirror_and_needs_no_etc_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let ext = spec(
        "  registry:\n    externalRegistry: {domain: harbor.corp, port: 8443, username: u, password: p}\n",
    );
    let a = RegistryAccess::prepare(&ext, dir.path(), SystemTime::now()).unwrap();
    assert!(registry_hosts(&ext).is_empty());
    let files = mirror_files(&ext, &a, &refs(), &ext.hosts[0]);
    assert_eq!(files.etc_hosts, None);
    let paths: Vec<&str> = files.files.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/etc/containerd/certs.d/docker.io/hosts.toml",
            "/etc/containerd/certs.d/harbor.corp:8443/hosts.toml",
            "/etc/containerd/certs.d/quay.io/hosts.toml"
        ]
    );
    assert!(
        files.files[0]
            .1
            .expose()
            .contains("[host.\"https://harbor.corp:8443\"]")
    );
    assert!(!dir.path().join(OPERATOR_DIR).exists());
}

#[test]
fn docker_daemon_json_is_merged_kept_once_and_left_alone_without_docker() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("");
    let a = RegistryAccess::prepare(&s, dir.path(), SystemTime::now()).unwrap();
    assert!(
        docker_files("none\n", &s, &a, "/var/lib/airlock")
            .unwrap()
            .is_empty()
    );
    let current = "docker\ncurrent\n{\"log-driver\": \"json-file\", \"registry-mirrors\": [\"https://m.corp\"]}\n";
    let files = docker_files(current, &s, &a, "/var/lib/airlock").unwrap();
    let find = |path: &str| {
        files
            .iter()
            .find(|(p, _, _)| p == path)
            .map(|(_, c, m)| (c.expose().to_string(), *m))
    };
    let (orig, mode) = find("/var/lib/airlock/cluster/docker/daemon.json.orig").unwrap();
    assert!(orig.contains("m.corp") && mode == "600");
    let (json, _) = find("/etc/docker/daemon.json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["log-driver"], "json-file");
    assert_eq!(
        v["registry-mirrors"],
        serde_json::json!(["https://sea.hub:5000", "https://m.corp"])
    );
    assert!(find("/etc/docker/certs.d/sea.hub:5000/airlock-ca.crt").is_some());
    // A re-run merges into the kept original: same daemon.json, nothing kept again.
    let again = docker_files(
        &format!("docker\norig\n{}", orig),
        &s,
        &a,
        "/var/lib/airlock",
    )
    .unwrap();
    assert!(
        again
            .iter()
            .all(|(p, _, _)| !p.contains("daemon.json.orig"))
    );
    let (json_again, _) = again
        .iter()
        .find(|(p, _, _)| p == "/etc/docker/daemon.json")
        .map(|(_, c, m)| (c.expose().to_string(), *m))
        .unwrap();
    assert_eq!(json, json_again);
    // No daemon.json: a marker, so that reset removes the one airlock made.
    let absent = docker_files("docker\nabsent\n", &s, &a, "/var/lib/airlock").unwrap();
    assert!(
        absent
            .iter()
            .any(|(p, _, _)| p.ends_with("daemon.json.absent"))
    );
    let bad = docker_files("docker\ncurrent\n[1,", &s, &a, "/var/lib/airlock").unwrap_err();
    assert!(bad.contains("/etc/docker/daemon.json"), "{bad}");
}

#[test]
fn files_kept_on_the_first_master_bring_back_the_same_ca_and_credentials() {
    let now = SystemTime::now();
    let s = spec("");
    let first = tempfile::tempdir().unwrap();
    let a = RegistryAccess::prepare(&s, first.path(), now).unwrap();
    let kept = a.kept_files("/var/lib/airlock").unwrap();
    let paths: Vec<&str> = kept.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        KEPT_FILES.map(|n| format!("/var/lib/airlock/cluster/registry/{n}"))
    );
    // Another operator machine: nothing of its own, takes them back, reuses them.
    let other = tempfile::tempdir().unwrap();
    let by_name: Vec<(String, Secret)> = kept
        .into_iter()
        .map(|(p, c)| (p.rsplit('/').next().unwrap().to_string(), c))
        .collect();
    assert_eq!(RegistryAccess::restore(other.path(), &by_name).unwrap(), 4);
    let b = RegistryAccess::prepare(&s, other.path(), now).unwrap();
    assert_eq!(a.ca_pem, b.ca_pem);
    assert_eq!(a.htpasswd, b.htpasswd);
    assert_eq!(a.credentials.unwrap().1, b.credentials.unwrap().1);
    // Its own files are never overwritten.
    assert_eq!(RegistryAccess::restore(other.path(), &by_name).unwrap(), 0);
}
