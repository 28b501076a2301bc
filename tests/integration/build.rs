//! `airlock build` and the image commands, end to end through the binary.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions panic on failure by design"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use airlock::digest::Digest;
use airlock::image::cluster::{self, ClusterImage};
use airlock::image::oci::{self, Descriptor, ImageIndex, ImageManifest, Platform};
use airlock::image::store::{Store, to_json};

fn airlock(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Descriptor {
    let d = Digest::of(bytes);
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    Descriptor::new("", d, bytes.len() as u64)
}

/// An OCI layout holding `docker.io/library/busybox:1.36`: one layer with this
/// machine's static busybox, under an index for the host platform.
fn busybox_layout(dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let bin = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    h.set_size(bin.len() as u64);
    h.set_mode(0o755);
    tar.append_data(&mut h, "bin/busybox", &bin[..]).unwrap();
    let layer = write_blob(dir, &tar.into_inner().unwrap());
    let platform = Platform::host();
    let config = write_blob(
        dir,
        format!(
            r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            platform.architecture, layer.digest
        )
        .as_bytes(),
    );
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
        config: Descriptor::new(oci::MEDIA_TYPE_CONFIG, config.digest, config.size),
        layers: vec![Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar",
            layer.digest,
            layer.size,
        )],
        annotations: BTreeMap::new(),
    };
    let m = write_blob(dir, &to_json(&manifest));
    let mut entry = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, m.digest, m.size);
    entry.platform = Some(platform);
    let inner = ImageIndex {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_INDEX.into()),
        manifests: vec![entry],
        annotations: BTreeMap::new(),
    };
    let i = write_blob(dir, &to_json(&inner));
    let mut top = Descriptor::new(oci::MEDIA_TYPE_INDEX, i.digest, i.size);
    top.annotations.insert(
        oci::ANNOTATION_REF_NAME.into(),
        "docker.io/library/busybox:1.36".into(),
    );
    let outer = ImageIndex {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_INDEX.into()),
        manifests: vec![top],
        annotations: BTreeMap::new(),
    };
    std::fs::write(dir.join("index.json"), to_json(&outer)).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

const KUBEFILE: &str = r#"# demo cluster
ARG VERSION=1.0
FROM scratch
LABEL cluster.alpha.sealer.io/cluster-runtime-type=generic version=${VERSION}
ENV GREETING=hello
COPY bin bin/
COPY manifests manifests
COPY scripts/*.sh scripts/
APP web local://app/web.yaml
APPENV web REPLICAS=2
CNI flannel local://app/flannel.yaml
KUBEVERSION >=1.24 <1.31
LAUNCH ["flannel", "web"]
"#;

fn context(dir: &Path) {
    let w = |p: &str, c: &str, mode: u32| {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, c).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    w("Kubefile", KUBEFILE, 0o644);
    w("bin/tool", "#!/bin/sh\necho tool\n", 0o775);
    w("manifests/imageList", "# images\nbusybox:1.36\n", 0o664);
    w("scripts/init.sh", "echo init\n", 0o600);
    w("scripts/notes.txt", "not copied\n", 0o644);
    w(
        "app/web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: busybox:1.36\n",
        0o644,
    );
    w("app/flannel.yaml", "kind: ConfigMap\n", 0o644);
}

fn digest_of(stdout: &str) -> String {
    stdout.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn build_is_reproducible_and_images_round_trip_through_skopeo() {
    let images = tempfile::tempdir().unwrap();
    busybox_layout(images.path());
    let source = format!("oci:{}", images.path().display());

    // Two contexts in different places, written at different times with other modes.
    let ctx1 = tempfile::tempdir().unwrap();
    context(ctx1.path());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let ctx2 = tempfile::tempdir().unwrap();
    context(ctx2.path());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        ctx2.path().join("bin/tool"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();

    let root1 = tempfile::tempdir().unwrap();
    let root2 = tempfile::tempdir().unwrap();
    let build = |root: &Path, ctx: &Path, extra: &[&str]| {
        let c = ctx.to_str().unwrap();
        let mut args = vec!["build", "-t", "demo:v1", "--image-source", &source, c];
        args.extend_from_slice(extra);
        airlock(root, &args)
    };
    let out1 = build(root1.path(), ctx1.path(), &[]);
    let stderr1 = String::from_utf8_lossy(&out1.stderr).into_owned();
    let d1 = digest_of(&ok(out1));
    let d2 = digest_of(&ok(build(root2.path(), ctx2.path(), &[])));
    assert_eq!(d1, d2, "same context and Kubefile gave different digests");
    assert!(
        stderr1.contains("image docker.io/library/busybox:1.36 (from ")
            && stderr1.contains("manifests/imageList:2"),
        "{stderr1}"
    );

    // Rebuild: every layer from the cache, same digest; --no-cache: same digest.
    let again = build(root1.path(), ctx1.path(), &[]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("cached"));
    assert_eq!(digest_of(&ok(again)), d1);
    let fresh = build(root1.path(), ctx1.path(), &["--no-cache"]);
    assert!(!String::from_utf8_lossy(&fresh.stderr).contains("cached"));
    assert_eq!(digest_of(&ok(fresh)), d1);

    // A file changed in place (same size): its step is written again, the image
    // differs; put back (new mtime, old content): the digest is d1 again.
    let tool = ctx1.path().join("bin/tool");
    let original = std::fs::read(&tool).unwrap();
    std::fs::write(&tool, "#!/bin/sh\necho TOOL\n").unwrap();
    let changed = build(root1.path(), ctx1.path(), &[]);
    let changed_stderr = String::from_utf8_lossy(&changed.stderr).into_owned();
    assert_ne!(digest_of(&ok(changed)), d1, "{changed_stderr}");
    std::fs::write(&tool, &original).unwrap();
    assert_eq!(digest_of(&ok(build(root1.path(), ctx1.path(), &[]))), d1);

    // The image reads back with the library API and unpacks.
    let store = Store::open(root1.path()).unwrap();
    let image = ClusterImage::load(&store, "docker.io/library/demo:v1").unwrap();
    assert_eq!(image.descriptor.digest.to_string(), d1);
    let config = &image.primary().config.airlock;
    assert_eq!(config.images, ["docker.io/library/busybox:1.36"]);
    assert_eq!(config.launch, ["flannel", "web"]);
    assert_eq!(config.env["GREETING"], "hello");
    assert_eq!(config.labels["version"], "1.0");
    assert_eq!(config.kube_version.as_deref(), Some(">=1.24 <1.31"));
    assert_eq!(config.apps[0].name, "web");
    assert_eq!(config.apps[0].kind, "kube");
    assert_eq!(config.apps[0].env["REPLICAS"], "2");
    assert_eq!(config.apps[1].role, "cni");
    assert_eq!(image.container_images.len(), 1);
    let rootfs = tempfile::tempdir().unwrap();
    cluster::unpack_rootfs(&store, image.primary(), rootfs.path()).unwrap();
    let mode = std::fs::metadata(rootfs.path().join("bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(rootfs.path().join("scripts/init.sh").is_file());
    assert!(!rootfs.path().join("scripts/notes.txt").exists());
    assert!(
        rootfs
            .path()
            .join("application/apps/web/web.yaml")
            .is_file()
    );

    // images, inspect, tag.
    let list = ok(airlock(root1.path(), &["images", "-o", "json"]));
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(rows[0]["name"], "docker.io/library/demo:v1");
    assert_eq!(rows[0]["containerImages"], 1);
    let table = ok(airlock(root1.path(), &["images"]));
    assert!(table.starts_with("NAME"), "{table}");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(airlock(root1.path(), &["inspect", "demo:v1"]))).unwrap();
    assert_eq!(
        inspect["rootfs"][0]["config"]["airlock"]["runtime"],
        "generic"
    );
    ok(airlock(
        root1.path(),
        &["tag", "demo:v1", "127.0.0.1:5000/team/demo:v2"],
    ));

    // save → skopeo reads and copies it → load into another store gives the same image.
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("demo.tar");
    ok(airlock(
        root1.path(),
        &["save", "demo:v1", "-o", archive.to_str().unwrap()],
    ));
    if which("skopeo") {
        let inspected = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", archive.display()))
            .output()
            .unwrap();
        let raw = ok(inspected);
        assert_eq!(Digest::of(raw.as_bytes()).to_string(), d1);
        let copy = out.path().join("copy");
        ok(Command::new("skopeo")
            .args(["copy", "--preserve-digests"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("oci:{}:demo", copy.display()))
            .output()
            .unwrap());
        assert!(copy.join("index.json").is_file());
    } else {
        eprintln!("skopeo is not installed: skipping the skopeo half of this test");
    }
    let root3 = tempfile::tempdir().unwrap();
    let loaded = ok(airlock(
        root3.path(),
        &["load", "-i", archive.to_str().unwrap()],
    ));
    assert!(loaded.contains("docker.io/library/demo:v1"));
    let store3 = Store::open(root3.path()).unwrap();
    assert_eq!(
        store3
            .resolve("docker.io/library/demo:v1")
            .unwrap()
            .digest
            .to_string(),
        d1
    );

    // rmi and prune: blobs of the removed name go only when nothing else uses them.
    ok(airlock(root1.path(), &["rmi", "demo:v1"]));
    let pruned = ok(airlock(root1.path(), &["prune"]));
    assert!(pruned.contains("removed"), "{pruned}");
    assert!(ClusterImage::load(&store, "127.0.0.1:5000/team/demo:v2").is_ok());
    ok(airlock(
        root1.path(),
        &["rmi", "127.0.0.1:5000/team/demo:v2"],
    ));
    ok(airlock(root1.path(), &["prune"]));
    let left = std::fs::read_dir(root1.path().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "prune left blobs of removed images");
}

fn which(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn run_from_and_inheritance() {
    let images = tempfile::tempdir().unwrap();
    busybox_layout(images.path());
    let source = format!("oci:{}", images.path().display());
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    ok(airlock(
        root.path(),
        &[
            "build",
            "-t",
            "base:v1",
            "--image-source",
            &source,
            ctx.path().to_str().unwrap(),
        ],
    ));

    // A child: FROM the local base, RUN with the rootfs bin/ on PATH.
    let child = tempfile::tempdir().unwrap();
    std::fs::write(
        child.path().join("Kubefile"),
        "FROM base:v1\nRUN tool > made.txt && echo built && rm scripts/init.sh\nAPP extra local://extra.yaml\nCMDS [\"kubectl get nodes\"]\n",
    )
    .unwrap();
    std::fs::write(child.path().join("extra.yaml"), "kind: ConfigMap\n").unwrap();
    let out = airlock(
        root.path(),
        &["build", "-t", "child:v1", child.path().to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(
        stderr.contains("| built"),
        "RUN output not streamed: {stderr}"
    );
    let store = Store::open(root.path()).unwrap();
    let image = ClusterImage::load(&store, "docker.io/library/child:v1").unwrap();
    let config = &image.primary().config.airlock;
    let apps: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(apps, ["web", "flannel", "extra"]);
    assert_eq!(config.cmds, ["kubectl get nodes"]);
    assert!(config.launch.is_empty());
    assert_eq!(
        image.container_images.len(),
        1,
        "parent's images not inherited"
    );
    let base = ClusterImage::load(&store, "docker.io/library/base:v1").unwrap();
    assert_eq!(
        image.primary().manifest.layers[..base.primary().manifest.layers.len()],
        base.primary().manifest.layers[..]
    );
    let rootfs = tempfile::tempdir().unwrap();
    cluster::unpack_rootfs(&store, image.primary(), rootfs.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.path().join("made.txt")).unwrap(),
        "tool\n"
    );
    assert!(
        !rootfs.path().join("scripts/init.sh").exists(),
        "whiteout not applied"
    );
}

#[test]
fn kubefile_errors_exit_2_with_line_and_column() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let cases = [
        (
            "FROM scratch\nCOPPY a b\n",
            "Kubefile:2:1: unknown instruction `COPPY` (did you mean COPY?)",
        ),
        (
            "FROM scratch\nCOPY missing bin/\n",
            "Kubefile:2:6: `missing` does not exist in the build context",
        ),
        (
            "FROM scratch\nCOPY ../x bin/\n",
            "Kubefile:2:6: `../x` is outside the build context",
        ),
        (
            "FROM scratch\nLAUNCH [\"nope\"]\n",
            "LAUNCH names app `nope`, which is not declared",
        ),
    ];
    // An empty registry stands in for docker.io, so nothing leaves the machine.
    let registry = crate::support::DockerRegistry::start(None);
    let mirror = registry
        .as_ref()
        .map(|r| format!("docker.io=http://{}", r.addr));
    let from_missing = (
        "FROM nothing:v1\n",
        "Kubefile:1:6: base image `nothing:v1` is neither in the local store nor on its registry",
    );
    for (text, needle) in cases
        .into_iter()
        .chain(mirror.is_some().then_some(from_missing))
    {
        std::fs::write(ctx.path().join("Kubefile"), text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
            .current_dir(ctx.path())
            .arg("--root")
            .arg(root.path())
            .args(["build", "-f", "Kubefile", "-t", "x:1", "."])
            .args(
                mirror
                    .iter()
                    .flat_map(|m| ["--registry-mirror", m.as_str()]),
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains(needle), "{text:?}: {stderr}");
    }
}

/// `python3 -m http.server` on a free loopback port serving `dir`, killed on drop.
struct FileServer {
    addr: String,
    child: std::process::Child,
}

impl FileServer {
    fn start(dir: &Path) -> Option<Self> {
        let python = crate::support::require("python3")?;
        let port = crate::support::free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(python)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = Self { addr, child };
        for _ in 0..200 {
            if crate::support::http_get(&server.addr, "/").is_some() {
                return Some(server);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("python3 -m http.server did not start on {}", server.addr);
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn remote_sources_are_downloaded_verified_and_cached() {
    let served = tempfile::tempdir().unwrap();
    let Some(server) = FileServer::start(served.path()) else {
        return;
    };
    let tool = b"#!/bin/sh\necho downloaded tool\n".to_vec();
    std::fs::write(served.path().join("tool"), &tool).unwrap();
    std::fs::write(
        served.path().join("web.yaml"),
        "kind: Pod\nspec:\n  containers:\n    - image: busybox:1.36\n",
    )
    .unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let kubefile = |checksum: &str| {
        format!(
            "FROM scratch\nADD --checksum={checksum} http://{0}/tool bin/\nAPP web http://{0}/web.yaml\n",
            server.addr
        )
    };
    std::fs::write(
        ctx.path().join("Kubefile"),
        kubefile(&Digest::of(&tool).to_string()),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let ignored = ctx.path().join("ignored");
    std::fs::write(&ignored, "busybox:1.36\n").unwrap();
    let build = || {
        airlock(
            root.path(),
            &[
                "build",
                "-t",
                "remote:v1",
                "--ignored-image-list",
                ignored.to_str().unwrap(),
                ctx.path().to_str().unwrap(),
            ],
        )
    };
    let first = build();
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    let d1 = digest_of(&ok(first));
    assert!(stderr.contains("downloaded http://"), "{stderr}");

    // The content is what the server had, under the URL's file name.
    let store = Store::open(root.path()).unwrap();
    let image = ClusterImage::load(&store, "docker.io/library/remote:v1").unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    cluster::unpack_rootfs(&store, image.primary(), rootfs.path()).unwrap();
    assert_eq!(std::fs::read(rootfs.path().join("bin/tool")).unwrap(), tool);
    assert!(
        rootfs
            .path()
            .join("application/apps/web/web.yaml")
            .is_file()
    );
    assert_eq!(image.primary().config.airlock.apps[0].kind, "kube");
    // --ignored-image-list removed the image the app names.
    assert!(image.container_images.is_empty());

    // Nothing changed: the server answers 304, every step is cached, same digest.
    let again = build();
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    assert_eq!(digest_of(&ok(again)), d1);
    assert!(
        stderr.contains("current http://") && stderr.contains("cached"),
        "{stderr}"
    );

    // A pinned digest the content does not have: bad input, naming the line.
    std::fs::write(
        ctx.path().join("Kubefile"),
        kubefile(&Digest::of(b"something else").to_string()),
    )
    .unwrap();
    let wrong = build();
    let stderr = String::from_utf8_lossy(&wrong.stderr).into_owned();
    assert_eq!(wrong.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Kubefile:2:") && stderr.contains("expects"),
        "{stderr}"
    );

    // New content on the server (newer mtime): fetched again, a new image digest.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let tool2 = b"#!/bin/sh\necho version 2\n".to_vec();
    std::fs::write(served.path().join("tool"), &tool2).unwrap();
    std::fs::write(
        ctx.path().join("Kubefile"),
        kubefile(&Digest::of(&tool2).to_string()),
    )
    .unwrap();
    let changed = build();
    let stderr = String::from_utf8_lossy(&changed.stderr).into_owned();
    let d2 = digest_of(&ok(changed));
    assert_ne!(d1, d2);
    assert!(stderr.contains("downloaded http://"), "{stderr}");
}

/// `skopeo inspect --raw` of `image` on a plain-HTTP registry: the manifest bytes.
fn skopeo_raw(image: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Debian's docker-registry on loopback holding busybox under each of `names` (a
/// stand-in for docker.io, given to builds as `--registry-mirror docker.io=...`);
/// `None` when skopeo, docker-registry or the busybox layout is missing.
fn docker_io_mirror(names: &[&str]) -> Option<crate::support::DockerRegistry> {
    crate::support::require("skopeo")?;
    let registry = crate::support::DockerRegistry::start(None)?;
    let layouts = tempfile::tempdir().unwrap();
    let layout = crate::support::busybox_layout(layouts.path(), "1.36")?;
    for name in names {
        ok(Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{}", layout.dir.display(), layout.tag))
            .arg(format!("docker://{}/{name}", registry.addr))
            .output()
            .unwrap());
    }
    Some(registry)
}

#[test]
fn images_from_a_registry_keep_their_digests_and_from_pulls_the_base() {
    // Two images in the "docker.io mirror": busybox (wanted) and tools (ignored).
    let Some(registry) = docker_io_mirror(&["library/busybox:1.36", "library/tools:2"]) else {
        return;
    };
    let addr = registry.addr.clone();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ctx.path().join("manifests")).unwrap();
    std::fs::write(
        ctx.path().join("manifests/imageList"),
        "busybox:1.36\ntools:2\n",
    )
    .unwrap();
    std::fs::write(
        ctx.path().join("Kubefile"),
        "FROM scratch\nCOPY manifests manifests\n",
    )
    .unwrap();
    let ignored = ctx.path().join("ignored");
    std::fs::write(&ignored, "docker.io/library/tools:2\n").unwrap();
    let mirror = format!("docker.io=http://{addr}");
    let base = format!("{addr}/team/base:v1");
    let root = tempfile::tempdir().unwrap();
    ok(airlock(
        root.path(),
        &[
            "build",
            "-t",
            &base,
            "--registry-mirror",
            &mirror,
            "--ignored-image-list",
            ignored.to_str().unwrap(),
            ctx.path().to_str().unwrap(),
        ],
    ));

    // The container image is stored byte for byte as the registry serves it.
    let store = Store::open(root.path()).unwrap();
    let image = ClusterImage::load(&store, &base).unwrap();
    let refs: Vec<String> = image
        .container_images
        .iter()
        .map(|(r, _)| r.to_string())
        .collect();
    assert_eq!(refs, ["docker.io/library/busybox:1.36"]);
    let raw = skopeo_raw(&format!("{addr}/library/busybox:1.36"));
    let (_, stored) = &image.container_images[0];
    assert_eq!(stored.digest, Digest::of(&raw));
    assert_eq!(std::fs::read(store.blob_path(&stored.digest)).unwrap(), raw);

    // Push the cluster image; a build elsewhere pulls it for FROM.
    ok(airlock(root.path(), &["push", &base]));
    let pushed = skopeo_raw(&base);
    assert_eq!(Digest::of(&pushed), image.descriptor.digest);
    let child_ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        child_ctx.path().join("Kubefile"),
        format!("FROM {base}\nLABEL tier=child\n"),
    )
    .unwrap();
    let other_root = tempfile::tempdir().unwrap();
    ok(airlock(
        other_root.path(),
        &[
            "build",
            "-t",
            "child:v1",
            "--registry-mirror",
            &mirror,
            "--ignored-image-list",
            ignored.to_str().unwrap(),
            child_ctx.path().to_str().unwrap(),
        ],
    ));
    let other = Store::open(other_root.path()).unwrap();
    let child = ClusterImage::load(&other, "docker.io/library/child:v1").unwrap();
    let parent = ClusterImage::load(&other, &base).unwrap();
    assert_eq!(parent.descriptor.digest, image.descriptor.digest);
    assert_eq!(
        child.primary().manifest.layers,
        image.primary().manifest.layers
    );
    assert_eq!(child.container_images, image.container_images);
}

/// `docker-archive:` sources: an image served by Debian's docker-registry (with a
/// gzip layer), saved with `skopeo copy ... docker-archive:`, is taken from the
/// archive with the archive's config and layer digests.
#[test]
fn images_from_a_docker_archive_keep_config_and_layer_digests() {
    let Some(_) = crate::support::require("skopeo") else {
        return;
    };
    let Some(registry) = crate::support::DockerRegistry::start(None) else {
        return;
    };
    let addr = registry.addr.clone();
    let work = tempfile::tempdir().unwrap();
    let Some(layout) = crate::support::busybox_layout(&work.path().join("layout"), "1.36") else {
        return;
    };
    let remote = format!("docker://{addr}/library/busybox:1.36");
    ok(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-compress"])
        .arg(format!("oci:{}:{}", layout.dir.display(), layout.tag))
        .arg(&remote)
        .output()
        .unwrap());
    let archive = work.path().join("busybox.tar");
    ok(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(&remote)
        .arg(format!(
            "docker-archive:{}:docker.io/library/busybox:1.36",
            archive.display()
        ))
        .output()
        .unwrap());
    let inspected: serde_json::Value = serde_json::from_slice(&ok_bytes(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("docker-archive:{}", archive.display()))
            .output()
            .unwrap(),
    ))
    .unwrap();

    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Kubefile"),
        "FROM scratch\nCOPY images.txt .\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("images.txt"), "busybox:1.36\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let source = format!("docker-archive:{}", archive.display());
    let list = ctx.path().join("images.txt");
    ok(airlock(
        root.path(),
        &[
            "build",
            "-t",
            "from-archive:v1",
            "--image-source",
            &source,
            "--image-list",
            list.to_str().unwrap(),
            ctx.path().to_str().unwrap(),
        ],
    ));
    let store = Store::open(root.path()).unwrap();
    let image = ClusterImage::load(&store, "docker.io/library/from-archive:v1").unwrap();
    let (reference, top) = &image.container_images[0];
    assert_eq!(reference.to_string(), "docker.io/library/busybox:1.36");
    assert_eq!(top.media_type, oci::MEDIA_TYPE_DOCKER_MANIFEST);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.blob_path(&top.digest)).unwrap()).unwrap();
    assert_eq!(manifest["config"]["digest"], inspected["config"]["digest"]);
    assert_eq!(manifest["config"]["size"], inspected["config"]["size"]);
    let ours = manifest["layers"].as_array().unwrap();
    let theirs = inspected["layers"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (o, t) in ours.iter().zip(theirs) {
        assert_eq!((&o["digest"], &o["size"]), (&t["digest"], &t["size"]));
        // skopeo calls the uncompressed tar `tar.gzip`; airlock says what it is.
        assert_eq!(
            o["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar"
        );
    }
    // The archive's layer is the uncompressed tar the registry's gzip layer holds.
    assert_eq!(ours[0]["digest"], layout.layer_digest.as_str());
    let layer = store.blob_path(&ours[0]["digest"].as_str().unwrap().parse().unwrap());
    assert_eq!(std::fs::read(layer).unwrap(), layout.layer);
}

fn ok_bytes(out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A `helm` TEST DOUBLE: answers `helm version`, and for `helm template NAME DIR`
/// records its argv and prints what a real helm would render from the test's chart
/// (whose image is built by a template helper, so values.yaml alone does not name it).
const HELM_DOUBLE: &str = r#"#!/bin/sh
# helm TEST DOUBLE (airlock build test): records argv, prints a rendered Deployment.
case "$1" in
version) echo 'version.BuildInfo{Version:"v3-test-double"}' ;;
template)
    echo "$*" >> "$HELM_DOUBLE_LOG"
    printf -- '---\n# Source: web/templates/deploy.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: "busybox:1.36"\n' ;;
*) echo "helm double: unexpected $*" >&2; exit 1 ;;
esac
"#;

/// With a helm on PATH, charts are rendered with `helm template` and the rendered
/// images are fetched (here from Debian's docker-registry as the docker.io mirror);
/// the chart's values.yaml alone names no image.
#[test]
fn charts_are_rendered_with_helm_template_when_helm_is_on_path() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(registry) = docker_io_mirror(&["library/busybox:1.36"]) else {
        return;
    };
    let addr = registry.addr.clone();
    let bin = tempfile::tempdir().unwrap();
    let helm = bin.path().join("helm");
    std::fs::write(&helm, HELM_DOUBLE).unwrap();
    std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = bin.path().join("helm-double.log");

    let ctx = tempfile::tempdir().unwrap();
    let chart = ctx.path().join("charts/web");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(chart.join("values.yaml"), "replicas: 1\nflavour: tiny\n").unwrap();
    std::fs::write(
        chart.join("templates/deploy.yaml"),
        "image: {{ include \"web.image\" . }}\n",
    )
    .unwrap();
    std::fs::write(
        ctx.path().join("Kubefile"),
        "FROM scratch\nCOPY charts charts\n",
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut path = std::ffi::OsString::from(bin.path());
    path.push(":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--root")
        .arg(root.path())
        .args(["build", "-t", "charted:v1", "--registry-mirror"])
        .arg(format!("docker.io=http://{addr}"))
        .arg(ctx.path())
        .env("PATH", path)
        .env("HELM_DOUBLE_LOG", &log)
        .output()
        .unwrap();
    ok(out);
    let calls = std::fs::read_to_string(&log).unwrap();
    // One chart, rendered from the copy of its rootfs directory the build makes.
    assert!(
        calls.starts_with("template airlock-discovery ")
            && calls.lines().count() == 1
            && calls.trim_end().ends_with("charts_web"),
        "{calls}"
    );
    let store = Store::open(root.path()).unwrap();
    let image = ClusterImage::load(&store, "docker.io/library/charted:v1").unwrap();
    let refs: Vec<String> = image
        .container_images
        .iter()
        .map(|(r, _)| r.to_string())
        .collect();
    assert_eq!(refs, ["docker.io/library/busybox:1.36"]);
}
