//! Docker credential helpers, with a real one: Debian's `docker-credential-pass`
//! (golang-docker-credential-helpers) over `pass` and a gpg key made for the test
//! in a temp `GNUPGHOME`. airlock pushes to Debian's docker-registry (htpasswd) with
//! the password only the helper knows.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

use super::{airlock, cluster, run_with_stdin};
use crate::support;

const PASSWORD: &str = "helper horse 7";

/// A gpg home and a password store, with the gpg-agent it starts stopped on drop.
struct PassStore {
    gnupg: tempfile::TempDir,
    store: tempfile::TempDir,
}

impl PassStore {
    fn new() -> Self {
        let gnupg = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(gnupg.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let pass = Self {
            gnupg,
            store: tempfile::tempdir().unwrap(),
        };
        support::run_ok(pass.env(&mut Command::new("gpg")).args([
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "airlock test <airlock@test.invalid>",
            "default",
            "default",
            "never",
        ]));
        support::run_ok(
            pass.env(&mut Command::new("pass"))
                .args(["init", "airlock@test.invalid"]),
        );
        pass
    }

    /// `cmd` with this store's environment.
    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("GNUPGHOME", self.gnupg.path())
            .env("PASSWORD_STORE_DIR", self.store.path())
    }
}

impl Drop for PassStore {
    fn drop(&mut self) {
        let _ = self
            .env(&mut Command::new("gpgconf"))
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

fn write_config(dir: &Path, json: &serde_json::Value) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(json).unwrap()).unwrap();
    path
}

#[test]
fn docker_credential_pass_gives_the_password_through_creds_store_and_cred_helpers() {
    for tool in ["docker-credential-pass", "pass", "gpg", "gpgconf"] {
        if support::require(tool).is_none() {
            return;
        }
    }
    let Some(c) = cluster() else { return };
    let auth_dir = tempfile::tempdir().unwrap();
    let htpasswd = auth_dir.path().join("htpasswd");
    let hash = bcrypt::hash_with_result(PASSWORD, 5)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let Some(registry) = support::DockerRegistry::start(Some(&htpasswd)) else {
        return;
    };
    let addr = registry.addr.clone();
    let pass = PassStore::new();
    let stored = run_with_stdin(
        pass.env(&mut Command::new("docker-credential-pass"))
            .arg("store"),
        &serde_json::json!({ "ServerURL": addr, "Username": "alice", "Secret": PASSWORD })
            .to_string(),
    );
    assert!(stored.status.success(), "{stored:?}");

    let root = c.store.root().to_path_buf();
    let docker = tempfile::tempdir().unwrap();
    let push = |destination: &str| {
        let out = pass
            .env(&mut airlock(&root, docker.path()))
            .args(["push", "demo:v1", destination])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains(PASSWORD), "the password leaked: {stderr}");
        (out, stderr)
    };

    // credsStore: the helper for every host without an auths entry.
    write_config(docker.path(), &serde_json::json!({ "credsStore": "pass" }));
    let (out, stderr) = push(&format!("{addr}/team/store:v1"));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        c.index_digest.to_string()
    );

    // credHelpers wins over a wrong auths entry for the same host.
    let wrong = base64::engine::general_purpose::STANDARD.encode("alice:wrong");
    write_config(
        docker.path(),
        &serde_json::json!({
            "credHelpers": { addr.clone(): "pass" },
            "auths": { addr.clone(): { "auth": wrong } },
        }),
    );
    let (out, stderr) = push(&format!("{addr}/team/helpers:v1"));
    assert!(out.status.success(), "{stderr}");

    // A host the helper has nothing for: no credentials, the usual advice.
    let other = format!("localhost:{}", addr.rsplit(':').next().unwrap());
    write_config(docker.path(), &serde_json::json!({ "credsStore": "pass" }));
    let (out, stderr) = push(&format!("{other}/team/none:v1"));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("airlock login"), "{stderr}");

    // A helper that is not installed is named, with the setting that named it.
    write_config(
        docker.path(),
        &serde_json::json!({ "credsStore": "airlock-test-missing" }),
    );
    let (out, stderr) = push(&format!("{addr}/team/missing:v1"));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("docker-credential-airlock-test-missing") && stderr.contains("credsStore"),
        "{stderr}"
    );
}
