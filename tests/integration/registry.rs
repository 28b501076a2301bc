//! The embedded registry and the registry client, against real clients and servers:
//! skopeo, Debian's docker-registry, plain HTTP requests.

#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock::digest::Digest;
use airlock::image::ImageFetcher as _;
use airlock::image::oci::Platform;
use airlock::image::oci::{self, Descriptor, ImageIndex};
use airlock::image::store::{Store, to_json};
use airlock::registry::client::{
    ClientConfig, ClientError, Mirror, RegistryClient, TransferReporter,
};
use airlock::registry::server::{RegistryServer, RunningRegistry, ServerConfig};
use airlock::spec::reference::Reference;

use crate::support::{self, Layout};

mod helper;
mod tls;
mod token;

/// A store holding a cluster image `docker.io/library/demo:v1` whose index has a
/// rootfs manifest and the busybox layout as container image `busybox:1.36`.
struct Cluster {
    store: Store,
    layout: Layout,
    index_digest: Digest,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn copy_layout_into(store: &Store, layout: &Layout) {
    for entry in std::fs::read_dir(layout.dir.join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        store.put_bytes(&bytes).unwrap();
    }
}

fn cluster() -> Option<Cluster> {
    let layout_dir = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let layout = support::busybox_layout(layout_dir.path(), "1.36")?;
    let store = Store::open(store_dir.path()).unwrap();
    copy_layout_into(&store, &layout);
    let config_bytes =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"airlock":{}}"#;
    let config = store.put_bytes(config_bytes).unwrap();
    let rootfs = serde_json::to_vec(&oci::ImageManifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_MANIFEST.to_string()),
        config: Descriptor::new(oci::MEDIA_TYPE_CONFIG, config, config_bytes.len() as u64),
        layers: vec![],
        annotations: BTreeMap::new(),
    })
    .unwrap();
    let rootfs_digest = store.put_bytes(&rootfs).unwrap();
    let mut rootfs_entry =
        Descriptor::new(oci::MEDIA_TYPE_MANIFEST, rootfs_digest, rootfs.len() as u64);
    rootfs_entry
        .annotations
        .insert(oci::ANNOTATION_ROLE.into(), oci::ROLE_ROOTFS.into());
    let mut image_entry = Descriptor::new(
        oci::MEDIA_TYPE_MANIFEST,
        layout.manifest_digest.parse().unwrap(),
        layout.manifest.len() as u64,
    );
    image_entry.annotations.insert(
        oci::ANNOTATION_ROLE.into(),
        oci::ROLE_CONTAINER_IMAGE.into(),
    );
    image_entry.annotations.insert(
        oci::ANNOTATION_IMAGE_REF.into(),
        "docker.io/library/busybox:1.36".into(),
    );
    let index = to_json(&ImageIndex {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_INDEX.to_string()),
        manifests: vec![rootfs_entry, image_entry],
        annotations: BTreeMap::new(),
    });
    let index_digest = store.put_bytes(&index).unwrap();
    store
        .set_ref(
            "docker.io/library/demo:v1",
            &Descriptor::new(
                oci::MEDIA_TYPE_INDEX,
                index_digest.clone(),
                index.len() as u64,
            ),
        )
        .unwrap();
    Some(Cluster {
        store,
        layout,
        index_digest,
        _dirs: (layout_dir, store_dir),
    })
}

async fn serve(store: &Store, config: ServerConfig) -> RunningRegistry {
    RegistryServer::new(Arc::new(store.clone()), config)
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

async fn error_code(r: reqwest::Response) -> String {
    let body: serde_json::Value = r.json().await.unwrap();
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_serves_container_images_under_their_original_names_with_ns() {
    let Some(c) = cluster() else { return };
    let registry = serve(&c.store, ServerConfig::read_only()).await;
    let http = reqwest::Client::new();
    let url = registry.url();

    let r = http
        .get(format!(
            "{url}/v2/library/busybox/manifests/1.36?ns=docker.io"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-content-digest"),
        c.layout.manifest_digest
    );
    assert_eq!(header(&r, "content-type"), oci::MEDIA_TYPE_MANIFEST);
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        c.layout.manifest.as_slice()
    );

    let r = http
        .get(format!(
            "{url}/v2/library/busybox/manifests/1.36?ns=quay.io"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    for path in ["library/demo/manifests/v1", "demo/manifests/v1"] {
        let r = http.head(format!("{url}/v2/{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            header(&r, "docker-content-digest"),
            c.index_digest.to_string()
        );
        assert_eq!(header(&r, "content-type"), oci::MEDIA_TYPE_INDEX);
    }

    let r = http
        .get(format!("{url}/v2/library/busybox/tags/list"))
        .send()
        .await
        .unwrap();
    let tags: serde_json::Value = r.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1.36"]));
    let r = http.get(format!("{url}/v2/_catalog")).send().await.unwrap();
    let repos: serde_json::Value = r.json().await.unwrap();
    let repos = repos["repositories"].as_array().unwrap();
    assert!(
        repos.contains(&serde_json::json!("library/busybox")),
        "{repos:?}"
    );
    assert!(
        repos.contains(&serde_json::json!("library/demo")),
        "{repos:?}"
    );
    registry.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_serves_blobs_with_ranges_and_oci_errors() {
    let Some(c) = cluster() else { return };
    let registry = serve(&c.store, ServerConfig::read_only()).await;
    let http = reqwest::Client::new();
    let blob = format!(
        "{}/v2/library/busybox/blobs/{}",
        registry.url(),
        c.layout.layer_digest
    );

    let r = http.get(&blob).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), c.layout.layer_digest);
    assert_eq!(r.bytes().await.unwrap().as_ref(), c.layout.layer.as_slice());

    let r = http.head(&blob).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-length"),
        c.layout.layer.len().to_string()
    );

    let r = http
        .get(&blob)
        .header("range", "bytes=100-1099")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let total = c.layout.layer.len();
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 100-1099/{total}")
    );
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &c.layout.layer[100..1100]
    );
    // A range across the server's read chunks (512 KiB) and to the end.
    let from = total / 3;
    let r = http
        .get(&blob)
        .header("range", format!("bytes={from}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &c.layout.layer[from..]);

    let r = http
        .get(&blob)
        .header("range", format!("bytes={total}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(error_code(r).await, "RANGE_INVALID");

    let missing = Digest::of(b"not here");
    let r = http
        .get(format!(
            "{}/v2/library/busybox/blobs/{missing}",
            registry.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");

    let r = http
        .get(format!(
            "{}/v2/library/busybox/blobs/sha256:../../etc",
            registry.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    let r = http
        .get(format!("{}/v2/Bad/Name/manifests/v1", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "NAME_INVALID");

    let r = http
        .post(format!("{}/v2/library/x/blobs/uploads/", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405, "read-only registry accepted an upload");
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    registry.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_into_the_registry_and_back_with_identical_digests() {
    if support::require("skopeo").is_none() {
        return;
    }
    let layout_dir = tempfile::tempdir().unwrap();
    let Some(layout) = support::busybox_layout(layout_dir.path(), "v1") else {
        return;
    };
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let registry = serve(&store, ServerConfig::writable(store.clone())).await;
    let target = format!("docker://{}/team/app:v1", registry.addr);
    let out_dir = tempfile::tempdir().unwrap();
    let from = format!("oci:{}:v1", layout.dir.display());
    let back = format!("oci:{}:v1", out_dir.path().display());
    let copy_in = target.clone();
    tokio::task::spawn_blocking(move || {
        support::skopeo_copy(&from, &copy_in, &[]);
        support::skopeo_copy(&copy_in, &back, &[]);
    })
    .await
    .unwrap();

    let stored = store.resolve("docker.io/team/app:v1").unwrap();
    assert_eq!(stored.digest.to_string(), layout.manifest_digest);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], layout.manifest_digest);
    let layer = out_dir
        .path()
        .join("blobs/sha256")
        .join(layout.layer_digest.trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(layer).unwrap(), layout.layer);
    registry.stop().await.unwrap();
}

/// Counts what the client reports.
#[derive(Default)]
struct Counter {
    fetched: std::sync::atomic::AtomicUsize,
    skipped: std::sync::atomic::AtomicUsize,
}

impl TransferReporter for Counter {
    fn blob_finished(&self, _digest: &Digest, skipped: bool) {
        let n = if skipped {
            &self.skipped
        } else {
            &self.fetched
        };
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn new_client(config: ClientConfig) -> (RegistryClient, Arc<Counter>) {
    let counter = Arc::new(Counter::default());
    let client = RegistryClient::new(ClientConfig {
        retries: 2,
        ..config
    })
    .unwrap()
    .with_reporter(counter.clone());
    (client, counter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pulls_from_docker_registry_byte_for_byte_and_skips_present_blobs() {
    if support::require("skopeo").is_none() {
        return;
    }
    let Some(registry) = support::DockerRegistry::start(None) else {
        return;
    };
    let layout_dir = tempfile::tempdir().unwrap();
    let Some(layout) = support::busybox_layout(layout_dir.path(), "v1") else {
        return;
    };
    let from = format!("oci:{}:v1", layout.dir.display());
    let to = format!("docker://{}/library/x:v1", registry.addr);
    tokio::task::spawn_blocking(move || support::skopeo_copy(&from, &to, &[]))
        .await
        .unwrap();

    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let (client, counter) = new_client(ClientConfig::default());
    let reference: Reference = format!("{}/library/x:v1", registry.addr).parse().unwrap();
    let descriptor = client
        .pull(&store, &reference, &[Platform::host()])
        .await
        .unwrap();
    assert_eq!(descriptor.digest.to_string(), layout.manifest_digest);
    assert_eq!(
        store.read_blob(&descriptor.digest).unwrap(),
        layout.manifest
    );
    let layer: Digest = layout.layer_digest.parse().unwrap();
    assert_eq!(store.read_blob(&layer).unwrap(), layout.layer);
    assert_eq!(counter.fetched.load(std::sync::atomic::Ordering::SeqCst), 2);

    // Again through a mirror for docker.io: everything is already there.
    let (mirrored, counter) = new_client(ClientConfig {
        mirrors: vec![Mirror::parse(&format!("docker.io=http://{}", registry.addr)).unwrap()],
        ..ClientConfig::default()
    });
    let again = mirrored
        .fetch(&store, &"x:v1".parse().unwrap(), &[Platform::host()])
        .await
        .unwrap();
    assert_eq!(again, descriptor);
    assert_eq!(counter.fetched.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(counter.skipped.load(std::sync::atomic::Ordering::SeqCst), 2);

    let missing = client
        .pull(
            &store,
            &format!("{}/library/nope:v1", registry.addr)
                .parse()
                .unwrap(),
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, ClientError::NotFound { .. }), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pulls_container_images_through_airlock_as_a_docker_io_mirror() {
    let Some(c) = cluster() else { return };
    let registry = serve(&c.store, ServerConfig::read_only()).await;
    let (client, counter) = new_client(ClientConfig {
        mirrors: vec![Mirror::parse(&format!("docker.io={}", registry.url())).unwrap()],
        ..ClientConfig::default()
    });
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let descriptor = client
        .pull(&store, &"busybox:1.36".parse().unwrap(), &[])
        .await
        .unwrap();
    assert_eq!(descriptor.digest.to_string(), c.layout.manifest_digest);
    assert_eq!(counter.fetched.load(std::sync::atomic::Ordering::SeqCst), 2);
    let quay = client
        .pull(
            &store,
            &"quay.io/library/busybox:1.36".parse().unwrap(),
            &[],
        )
        .await;
    assert!(quay.is_err(), "quay.io has no mirror and must not resolve");
    registry.stop().await.unwrap();
}

fn airlock(root: &std::path::Path, docker_config: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"));
    cmd.arg("--root")
        .arg(root)
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("AIRLOCK_ROOT");
    cmd
}

fn run_with_stdin(cmd: &mut std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn push_pull_login_logout_against_docker_registry_with_htpasswd() {
    let Some(c) = cluster() else { return };
    let auth_dir = tempfile::tempdir().unwrap();
    let htpasswd = auth_dir.path().join("htpasswd");
    let hash = bcrypt::hash_with_result("correct horse", 5)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let Some(registry) = support::DockerRegistry::start(Some(&htpasswd)) else {
        return;
    };
    let docker_config = tempfile::tempdir().unwrap();
    let root = c.store.root().to_path_buf();
    let addr = registry.addr.clone();
    let destination = format!("{addr}/team/demo:v1");

    let out = airlock(&root, docker_config.path())
        .args(["push", "demo:v1", &destination])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "push without login must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("airlock login"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let wrong = run_with_stdin(
        airlock(&root, docker_config.path()).args([
            "login",
            &addr,
            "-u",
            "alice",
            "--password-stdin",
        ]),
        "wrong\n",
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(!docker_config.path().join("config.json").exists());

    let ok = run_with_stdin(
        airlock(&root, docker_config.path()).args([
            "login",
            &addr,
            "-u",
            "alice",
            "--password-stdin",
        ]),
        "correct horse\n",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let saved = std::fs::read_to_string(docker_config.path().join("config.json")).unwrap();
    assert!(
        saved.contains(&addr) && !saved.contains("correct horse"),
        "{saved}"
    );

    let out = airlock(&root, docker_config.path())
        .args(["push", "demo:v1", &destination])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        c.index_digest.to_string()
    );
    let again = airlock(&root, docker_config.path())
        .args(["push", "demo:v1", &destination])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{status}");
    assert!(
        status.contains("0 uploaded ("),
        "second push uploaded blobs again: {status}"
    );

    let pulled = tempfile::tempdir().unwrap();
    let out = airlock(pulled.path(), docker_config.path())
        .args(["pull", &destination])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(pulled.path()).unwrap();
    let descriptor = store.resolve(&destination).unwrap();
    assert_eq!(descriptor.digest, c.index_digest);
    for blob in c.store.walk(&descriptor).unwrap() {
        assert_eq!(
            store.read_blob(&blob.digest).unwrap(),
            c.store.read_blob(&blob.digest).unwrap()
        );
    }

    let out = airlock(&root, docker_config.path())
        .args(["logout", &addr])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = airlock(tempfile::tempdir().unwrap().path(), docker_config.path())
        .args(["pull", &destination])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "pull after logout must fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_refuse_bad_input_and_store_nothing() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let mut config = ServerConfig::writable(store.clone());
    config.max_manifest_bytes = 1024;
    let registry = serve(&store, config).await;
    let http = reqwest::Client::new();
    let url = registry.url();
    let content = b"some blob content".to_vec();
    let right = Digest::of(&content);
    let wrong = Digest::of(b"other");

    // Monolithic POST with the wrong digest.
    let r = http
        .post(format!("{url}/v2/a/b/blobs/uploads/?digest={wrong}"))
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert!(!store.has_blob(&wrong) && !store.has_blob(&right));

    // Chunked upload, truncated: the PUT names the digest of the whole content.
    let r = http
        .post(format!("{url}/v2/a/b/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").to_string();
    let r = http
        .patch(format!("{url}{location}"))
        .header("content-range", "0-4")
        .body(content[..5].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-4");
    let r = http
        .patch(format!("{url}{location}"))
        .header("content-range", "3-7")
        .body(content[3..8].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416, "an out-of-order chunk was accepted");
    let r = http
        .put(format!("{url}{location}?digest={right}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert!(!store.has_blob(&right));
    let r = http
        .put(format!("{url}{location}?digest={right}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a failed upload must be gone");
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    // Chunked upload done right.
    let r = http
        .post(format!("{url}/v2/a/b/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = header(&r, "location").to_string();
    http.patch(format!("{url}{location}"))
        .body(content[..5].to_vec())
        .send()
        .await
        .unwrap();
    let r = http
        .put(format!("{url}{location}?digest={right}"))
        .body(content[5..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest"), right.to_string());
    assert_eq!(store.read_blob(&right).unwrap(), content);

    // Manifests: too large, not a manifest, unknown blob, invalid names.
    let big = format!(r#"{{"schemaVersion":2,"pad":"{}"}}"#, "x".repeat(2000));
    let r = http
        .put(format!("{url}/v2/a/b/manifests/v1"))
        .header("content-type", oci::MEDIA_TYPE_MANIFEST)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let r = http
        .put(format!("{url}/v2/a/b/manifests/v1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{wrong}","size":5}},"layers":[]}}"#,
        oci::MEDIA_TYPE_MANIFEST,
        oci::MEDIA_TYPE_CONFIG
    );
    let r = http
        .put(format!("{url}/v2/a/b/manifests/v1"))
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // (`..` segments are folded by the HTTP client itself; the route parser's unit
    // test covers them.)
    for bad in [
        "UPPER/blobs/uploads/",
        "a//b/blobs/uploads/",
        "a/.hidden/blobs/uploads/",
        "a/b%2F..%2F..%2Fetc/blobs/uploads/",
    ] {
        let r = http.post(format!("{url}/v2/{bad}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(error_code(r).await, "NAME_INVALID", "{bad}");
    }
    assert!(store.images().unwrap().is_empty());
    registry.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_every_request() {
    let Some(c) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, format!("bob:{}\n", bcrypt::hash("pw", 4).unwrap())).unwrap();
    let mut config = ServerConfig::read_only();
    config.htpasswd = Some(Arc::new(
        airlock::registry::htpasswd::Htpasswd::load(&path).unwrap(),
    ));
    let registry = serve(&c.store, config).await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/v2/", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").starts_with("Basic"));
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    let r = http
        .get(format!("{}/v2/", registry.url()))
        .basic_auth("bob", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let host = registry.addr.to_string();
    let reference: Reference = format!("{host}/library/busybox:1.36").parse().unwrap();
    let anonymous = RegistryClient::new(ClientConfig::default()).unwrap();
    let err = anonymous.pull(&store, &reference, &[]).await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
    let bob = RegistryClient::new(ClientConfig::default())
        .unwrap()
        .with_credentials(
            &host,
            airlock::registry::auth::Credentials {
                username: "bob".into(),
                password: airlock::remote::Secret::new("pw"),
            },
        );
    bob.check_login(&host).await.unwrap();
    let descriptor = bob.pull(&store, &reference, &[]).await.unwrap();
    assert_eq!(descriptor.digest.to_string(), c.layout.manifest_digest);
    registry.stop().await.unwrap();
}

/// Random bytes (so nothing along the way can compress or dedupe them).
fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_curl_connection_mixes_manifests_and_large_blobs_and_stop_finishes_a_download() {
    // Large blobs move their connection to the bulk lane and back, and are sent with
    // sendfile in windows; curl reuses one connection for every URL it is given.
    if support::require("curl").is_none() {
        return;
    }
    let Some(c) = cluster() else { return };
    let blob = random_bytes(40 * 1024 * 1024 + 12_345);
    let digest = c.store.put_bytes(&blob).unwrap();
    let registry = serve(&c.store, ServerConfig::read_only()).await;
    let out = tempfile::tempdir().unwrap();
    let blob_url = format!("{}/v2/library/busybox/blobs/{digest}", registry.url());
    let manifest_url = format!("{}/v2/library/busybox/manifests/1.36", registry.url());
    let file = |name: &str| out.path().join(name).display().to_string();
    let accept = format!("Accept: {}", oci::MEDIA_TYPE_MANIFEST);
    let common = [
        "-fsS",
        "-H",
        &accept,
        "-w",
        "%{num_connects} %{http_code}\n",
    ];
    let mut curl = std::process::Command::new("curl");
    curl.args(common);
    curl.args([
        &manifest_url,
        "-o",
        &file("m1"),
        &blob_url,
        "-o",
        &file("b1"),
    ]);
    curl.args([&manifest_url, "-o", &file("m2")]);
    // A range across the 2 MiB windows, then the whole blob again (`--next` starts
    // a new set of options; the connection is still reused).
    curl.arg("--next")
        .args(common)
        .args(["-r", "2097000-6291500"]);
    curl.args([&blob_url, "-o", &file("r1")]);
    curl.arg("--next").args(common);
    curl.args([
        &blob_url,
        "-o",
        &file("b2"),
        &manifest_url,
        "-o",
        &file("m3"),
    ]);
    let output = tokio::task::spawn_blocking(move || curl.output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines,
        ["1 200", "0 200", "0 200", "0 206", "0 200", "0 200"],
        "one connection, every answer as expected"
    );
    for name in ["m1", "m2", "m3"] {
        assert_eq!(std::fs::read(file(name)).unwrap(), c.layout.manifest);
    }
    for name in ["b1", "b2"] {
        assert!(std::fs::read(file(name)).unwrap() == blob, "{name} differs");
    }
    assert!(std::fs::read(file("r1")).unwrap() == blob[2_097_000..=6_291_500]);

    // A slow download in flight when the registry is stopped is finished first.
    let mut slow = std::process::Command::new("curl");
    slow.args([
        "-fsS",
        "--limit-rate",
        "10M",
        &blob_url,
        "-o",
        &file("slow"),
    ]);
    let mut slow = slow.spawn().unwrap();
    let started = std::time::Instant::now();
    while std::fs::metadata(file("slow")).map_or(0, |m| m.len()) == 0 {
        assert!(
            started.elapsed().as_secs() < 30,
            "the slow download never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let addr = registry.addr;
    registry.stop().await.unwrap();
    let received = std::fs::metadata(file("slow")).unwrap().len();
    assert!(
        received < blob.len() as u64,
        "the download was over before the registry stopped: the test proves nothing"
    );
    let status = slow.wait().unwrap();
    assert!(status.success(), "the download in flight was cut: {status}");
    assert!(std::fs::read(file("slow")).unwrap() == blob);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "a stopped registry still accepts connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_answers_follow_the_store_when_it_changes_under_the_registry() {
    // Manifest answers are cached while the store's index.json is unchanged: a tag
    // moved by another process and a blob deleted through the registry are seen at once.
    let Some(c) = cluster() else { return };
    let mut config = ServerConfig::writable(c.store.clone());
    config.delete_enabled = true;
    let registry = serve(&c.store, config).await;
    let http = reqwest::Client::new();
    let accept = format!("{}, {}", oci::MEDIA_TYPE_INDEX, oci::MEDIA_TYPE_MANIFEST);
    let get = |path: String| {
        http.get(format!("{}{path}", registry.url()))
            .header("accept", &accept)
            .send()
    };
    let tag = "/v2/library/demo/manifests/v1".to_string();
    for _ in 0..2 {
        let r = get(tag.clone()).await.unwrap();
        assert_eq!(
            header(&r, "docker-content-digest"),
            c.index_digest.to_string()
        );
    }

    // Another handle on the store (as another airlock process would) moves the tag.
    let busybox = Descriptor::new(
        oci::MEDIA_TYPE_MANIFEST,
        c.layout.manifest_digest.parse().unwrap(),
        c.layout.manifest.len() as u64,
    );
    let other = Store::open(c.store.root()).unwrap();
    other
        .set_ref("docker.io/library/demo:v1", &busybox)
        .unwrap();
    let r = get(tag).await.unwrap();
    assert_eq!(
        header(&r, "docker-content-digest"),
        c.layout.manifest_digest
    );
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        c.layout.manifest.as_slice()
    );

    // By digest, then the blob deleted through the registry: gone at once.
    let by_digest = format!("/v2/library/busybox/manifests/{}", c.index_digest);
    assert_eq!(get(by_digest.clone()).await.unwrap().status(), 200);
    let delete = format!(
        "{}/v2/library/busybox/blobs/{}",
        registry.url(),
        c.index_digest
    );
    assert_eq!(http.delete(delete).send().await.unwrap().status(), 202);
    let r = get(by_digest).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    registry.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_a_connection_that_stopped_reading_once_the_grace_period_is_over() {
    // A client that asked for a large blob and never reads would hold a graceful
    // shutdown for as long as it keeps its connection open.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let digest = store.put_bytes(&random_bytes(40 * 1024 * 1024)).unwrap();
    let mut config = ServerConfig::read_only();
    config.shutdown_grace = std::time::Duration::from_secs(1);
    let registry = serve(&store, config).await;
    let mut stalled = tokio::net::TcpStream::connect(registry.addr).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let request = format!("GET /v2/any/blobs/{digest} HTTP/1.1\r\nHost: registry\r\n\r\n");
    stalled.write_all(request.as_bytes()).await.unwrap();
    // The answer has begun: the blob is in flight, and nobody reads the rest.
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // (a hang guard, not a timing assertion)
    tokio::time::timeout(std::time::Duration::from_secs(120), registry.stop())
        .await
        .expect("stop returned")
        .unwrap();
    // The server closed the connection: reading what is left ends (EOF or reset)
    // well before the 40 MiB a complete answer would hold.
    let mut rest = Vec::new();
    let read = stalled.read_to_end(&mut rest).await;
    assert!(
        read.is_err() || rest.len() < 40 * 1024 * 1024,
        "the whole blob arrived: the connection was not cut"
    );
}
