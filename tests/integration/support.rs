//! Helpers shared by integration tests: free ports, tools on the machine, Debian's
//! `docker-registry` on a free port, and a tiny busybox OCI layout.
//!
//! 1. [`tool`] says whether a program is installed; tests that need one return early
//!    with a message naming it when it is not.
//! 2. [`DockerRegistry::start`] writes a config into a temp dir, starts
//!    `/usr/bin/docker-registry serve CONFIG` on a free loopback port, waits until
//!    `/v2/` answers, and kills the process (by its PID) when dropped.
//! 3. [`busybox_layout`] writes an OCI image layout holding one image: a single
//!    uncompressed layer with `/bin/busybox` from this machine.
//!
//! Uses only std and the test's dependencies (no airlock internals), so any test
//! module can reuse it.

#![allow(dead_code, reason = "each test module uses a different part")]
#![allow(clippy::print_stderr, reason = "tests say why they skip")]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// A port that was free a moment ago on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// The path of `name` if it is installed (searched in the usual system directories).
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.is_file())
}

/// Print why a test does not run and return `None` when `name` is missing.
pub(crate) fn require(name: &str) -> Option<PathBuf> {
    let found = tool(name);
    if found.is_none() {
        eprintln!("SKIPPED: `{name}` is not installed (apt-get install it to run this test)");
    }
    found
}

/// Run a command to completion, panicking with its output when it fails.
pub(crate) fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A minimal HTTP/1.0 GET on loopback: status code and body.
pub(crate) fn http_get(addr: &str, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body_at = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((status, response[body_at..].to_vec()))
}

/// Debian's `docker-registry` (distribution 2.x) on a free loopback port.
pub(crate) struct DockerRegistry {
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl DockerRegistry {
    /// Start it, with basic auth from `htpasswd` (a bcrypt htpasswd file) if given.
    /// `None` (with a message) when `docker-registry` is not installed.
    pub(crate) fn start(htpasswd: Option<&Path>) -> Option<Self> {
        let binary = require("docker-registry")?;
        let dir = tempfile::tempdir().expect("temp dir");
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let auth = htpasswd.map_or(String::new(), |p| {
                format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    p.display()
                )
            });
            let config = format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                dir.path().join("data").display()
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("writing the registry config");
            let mut child = Command::new(&binary)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("log")).expect("log file"))
                .spawn()
                .expect("starting docker-registry");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if http_get(&addr, "/v2/").is_some() {
                    return Some(Self { addr, child, dir });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        panic!("docker-registry did not start: {log}");
    }

    /// Where it stores data.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What [`busybox_layout`] wrote.
pub(crate) struct Layout {
    /// The layout directory, for `oci:DIR:TAG`.
    pub(crate) dir: PathBuf,
    /// The tag in its `index.json`.
    pub(crate) tag: String,
    /// Digest of the image manifest.
    pub(crate) manifest_digest: String,
    /// The manifest bytes.
    pub(crate) manifest: Vec<u8>,
    /// Digest of the layer.
    pub(crate) layer_digest: String,
    /// The layer bytes.
    pub(crate) layer: Vec<u8>,
}

fn write_blob(dir: &Path, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let hex = digest.trim_start_matches("sha256:");
    std::fs::write(dir.join("blobs/sha256").join(hex), bytes).expect("writing a blob");
    digest
}

/// Write an OCI layout in `dir` with one linux image tagged `tag`: a single
/// uncompressed layer holding `bin/busybox` (this machine's) and `etc/hello`.
/// `None` (with a message) when `/bin/busybox` is missing.
pub(crate) fn busybox_layout(dir: &Path, tag: &str) -> Option<Layout> {
    let busybox = require("busybox")?;
    let binary = std::fs::read(&busybox).expect("reading busybox");
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dirs");
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, data) in [
        ("bin/busybox", 0o755, binary.as_slice()),
        ("etc/hello", 0o644, b"hello from airlock tests\n".as_slice()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, path, data)
            .expect("tar entry");
    }
    let layer = builder.into_inner().expect("tar");
    let layer_digest = write_blob(dir, &layer);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Cmd": ["/bin/busybox", "sh"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .expect("config json");
    let config_digest = write_blob(dir, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .expect("manifest json");
    let manifest_digest = write_blob(dir, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": arch, "os": "linux" },
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    Some(Layout {
        dir: dir.to_path_buf(),
        tag: tag.to_string(),
        manifest_digest,
        manifest,
        layer_digest,
        layer,
    })
}

/// `skopeo copy --preserve-digests` with TLS verification off on both sides (plain
/// HTTP on loopback); without it skopeo gzips uncompressed layers for registries.
pub(crate) fn skopeo_copy(from: &str, to: &str, extra: &[&str]) -> Output {
    run_ok(
        Command::new("skopeo")
            .args([
                "copy",
                "--preserve-digests",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
            ])
            .args(extra)
            .arg(from)
            .arg(to),
    )
}
