//! Bundles end to end: `airlock bundle` writes one, then the `.run` file itself is
//! executed (`info`, `verify`, `extract`, `install`), damaged in every region, signed,
//! and cut into a delta. The runner is the airlock binary under test.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock::bundle::Bundle;
use airlock::bundle::format::{TRAILER_SIZE, Trailer};
use airlock::digest::Digest;
use airlock::image::oci::{self, Descriptor, Platform};
use airlock::image::store::Store;

const NAME: &str = "registry.local/test/cluster:v1";
const BIN: &str = env!("CARGO_BIN_EXE_airlock");

/// A deterministic pseudo-random layer of `size` bytes.
fn layer_bytes(seed: u8, size: usize) -> Vec<u8> {
    let mut state = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn put_json(store: &Store, value: &serde_json::Value) -> (Digest, u64) {
    let bytes = serde_json::to_vec(value).unwrap();
    (store.put_bytes(&bytes).unwrap(), bytes.len() as u64)
}

/// A manifest with one config and the given layers; returns its descriptor.
fn put_manifest(store: &Store, config: &serde_json::Value, layers: &[Vec<u8>]) -> Descriptor {
    let (config_digest, config_size) = put_json(store, config);
    let layers: Vec<Descriptor> = layers
        .iter()
        .map(|l| {
            Descriptor::new(
                oci::MEDIA_TYPE_LAYER_GZIP,
                store.put_bytes(l).unwrap(),
                l.len() as u64,
            )
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_TYPE_MANIFEST,
        "config": Descriptor::new(oci::MEDIA_TYPE_CONFIG, config_digest, config_size),
        "layers": layers,
    });
    let (digest, size) = put_json(store, &manifest);
    let mut d = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, digest, size);
    d.platform = Some(Platform::host());
    d
}

/// A cluster image: an index of a rootfs manifest (kubernetes config, a 3 MiB layer
/// and a small one) and one container image (`nginx`), named `name`.
fn put_cluster(store: &Store, name: &str, rootfs_seed: u8) {
    let platform = Platform::host();
    let rootfs_config = serde_json::json!({
        "architecture": platform.architecture, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "airlock": {"runtime": "kubernetes", "runtimeVersion": "v1.30.2",
                    "containerRuntime": "containerd",
                    "images": ["docker.io/library/nginx:1.25"]},
    });
    let mut rootfs = put_manifest(
        store,
        &rootfs_config,
        &[layer_bytes(rootfs_seed, 3 << 20), layer_bytes(7, 10_000)],
    );
    rootfs
        .annotations
        .insert(oci::ANNOTATION_ROLE.into(), oci::ROLE_ROOTFS.into());
    let nginx_config = serde_json::json!({
        "architecture": platform.architecture, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let mut nginx = put_manifest(store, &nginx_config, &[layer_bytes(99, 1 << 20)]);
    nginx.annotations.insert(
        oci::ANNOTATION_ROLE.into(),
        oci::ROLE_CONTAINER_IMAGE.into(),
    );
    nginx.annotations.insert(
        oci::ANNOTATION_IMAGE_REF.into(),
        "docker.io/library/nginx:1.25".into(),
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_TYPE_INDEX,
        "manifests": [rootfs, nginx],
    });
    let (digest, size) = put_json(store, &index);
    store
        .set_ref(name, &Descriptor::new(oci::MEDIA_TYPE_INDEX, digest, size))
        .unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        put_cluster(&Store::open(&root).unwrap(), NAME, 1);
        Self { dir, root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `airlock bundle NAME -o FILE ARGS...`, which must succeed.
    fn bundle(&self, name: &str, file: &str, args: &[&str]) -> PathBuf {
        let out = self.path(file);
        let output = airlock(&self.root)
            .args(["bundle", name, "-o"])
            .arg(&out)
            .args(["--runner", BIN])
            .args(args)
            .output()
            .unwrap();
        assert_success(&output);
        out
    }
}

fn airlock(root: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--root").arg(root).env("NO_COLOR", "1");
    c
}

fn run(file: &Path, args: &[&str]) -> Output {
    Command::new(file).args(args).output().unwrap()
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Open `file` for reading and writing in place.
fn open_rw(file: &Path) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap()
}

/// XOR the byte at `offset` with `mask`; doing it twice restores it.
fn flip(file: &Path, offset: u64, mask: u8) {
    let f = open_rw(file);
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, offset).unwrap();
    f.write_all_at(&[byte[0] ^ mask], offset).unwrap();
}

/// Flip one bit at `offset`, run the bundle with `args`, restore the byte.
fn verify_with_flip(file: &Path, offset: u64, args: &[&str]) -> Output {
    flip(file, offset, 0x10);
    let output = run(file, args);
    flip(file, offset, 0x10);
    output
}

#[test]
fn bundle_runs_info_and_verify_from_itself() {
    let fx = Fixture::new();
    let template = fx.path("Clusterfile.tmpl");
    fs::write(&template, "apiVersion: sealer.io/v2\nkind: Cluster\n").unwrap();
    let file = fx.bundle(
        NAME,
        "cluster.run",
        &["--clusterfile", template.to_str().unwrap()],
    );
    let mode = fs::metadata(&file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o755
    );

    let output = run(&file, &["verify"]);
    assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains(": ok"));
    assert!(
        stderr(&output).contains("verifying: 100%"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("not signed"));

    let output = run(&file, &["info"]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(NAME), "{text}");
    assert!(text.contains("kubernetes v1.30.2 (containerd)"), "{text}");
    assert!(text.contains("docker.io/library/nginx:1.25"), "{text}");
    assert!(text.contains("CycloneDX JSON, 3 components"), "{text}");
    assert!(text.contains("application airlock@"), "{text}");

    let output = run(&file, &["info", "-o", "json"]);
    assert_success(&output);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["image"], NAME);
    assert_eq!(json["runtime"], "kubernetes");
    assert_eq!(json["images"].as_array().unwrap().len(), 2);
    assert_eq!(json["sbomComponents"].as_array().unwrap().len(), 3);
    // index + 2 manifests + 2 configs + 3 layers + the SBOM + the Clusterfile
    assert_eq!(json["blobs"], 10);
    let clusterfile: Digest = json["clusterfile"].as_str().unwrap().parse().unwrap();
    let sbom: Digest = json["sbom"].as_str().unwrap().parse().unwrap();
    let bundle = Bundle::open(&file).unwrap();
    let sbom_bytes = bundle.read_blob(&sbom).unwrap().unwrap();
    let shown = run(&file, &["info", "--sbom"]);
    assert_success(&shown);
    assert_eq!(shown.stdout, sbom_bytes);
    let sbom: serde_json::Value = serde_json::from_slice(&sbom_bytes).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["components"].as_array().unwrap().len(), 3);
    assert_eq!(
        bundle.read_blob(&clusterfile).unwrap().unwrap(),
        fs::read(&template).unwrap()
    );

    // Without a subcommand and without a terminal: help.
    let output = run(&file, &[]);
    assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("install"));

    // Plain airlock is not mistaken for a bundle.
    assert_success(&Command::new(BIN).arg("--version").output().unwrap());
}

#[test]
fn bundles_of_the_same_store_are_byte_identical() {
    let fx = Fixture::new();
    let one = fs::read(fx.bundle(NAME, "one.run", &[])).unwrap();
    let two = fs::read(fx.bundle(NAME, "two.run", &[])).unwrap();
    assert!(one == two, "bundles differ");
}

#[test]
fn a_bit_flip_anywhere_or_a_truncation_is_refused_naming_what_failed() {
    let fx = Fixture::new();
    let file = fx.bundle(NAME, "cluster.run", &[]);
    let bundle = Bundle::open(&file).unwrap();
    let size = bundle.size();
    let trailer = bundle.trailer().clone();
    let mut cases: Vec<(String, u64, String)> = vec![
        (
            "trailer magic".into(),
            size - TRAILER_SIZE as u64 + 3,
            "truncated or its trailer is damaged".into(),
        ),
        (
            "trailer index offset".into(),
            size - TRAILER_SIZE as u64 + 33,
            "trailer is damaged".into(),
        ),
        (
            "trailer checksum".into(),
            size - 5,
            "trailer is damaged".into(),
        ),
        (
            "index".into(),
            trailer.index_offset + trailer.index_len / 2,
            "bundle index is damaged".into(),
        ),
    ];
    if !bundle.index().runner.size.is_multiple_of(4096) {
        cases.push((
            "padding after the runner".into(),
            bundle.index().runner.size,
            "padding".into(),
        ));
    }
    for blob in &bundle.index().blobs {
        let offset = blob.offset.unwrap();
        cases.push((
            format!("blob {}", blob.digest),
            offset + blob.size / 2,
            format!("blob {} (bytes {offset}..", blob.digest),
        ));
    }
    drop(bundle);
    for (what, offset, expected) in &cases {
        let output = verify_with_flip(&file, *offset, &["verify"]);
        assert_eq!(output.status.code(), Some(2), "{what}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(expected),
            "{what}: {}",
            stderr(&output)
        );
    }
    // The install verifies first: nothing is attempted on a damaged bundle.
    let (what, offset, expected) = cases.last().unwrap();
    let clusterfile = fx.path("Clusterfile");
    fs::write(&clusterfile, "apiVersion: sealer.io/v2\nkind: Cluster\n").unwrap();
    let output = verify_with_flip(
        &file,
        *offset,
        &["install", "-f", clusterfile.to_str().unwrap(), "--yes"],
    );
    assert_eq!(output.status.code(), Some(2), "{what}: {}", stderr(&output));
    assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("nothing was installed"),
        "{}",
        stderr(&output)
    );

    // The runner region is checked by the library (flipping code could crash the run).
    flip(&file, 1000, 1);
    let err = Bundle::open(&file).unwrap().verify(&|_, _| {}).unwrap_err();
    assert!(
        err.to_string().contains("airlock binary at the start"),
        "{err}"
    );
    flip(&file, 1000, 1);

    // Truncated by one byte, and to half.
    for keep in [size - 1, size / 2] {
        let cut = fx.path(&format!("cut-{keep}.run"));
        fs::copy(&file, &cut).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&cut)
            .unwrap()
            .set_len(keep)
            .unwrap();
        let output = run(&cut, &["verify"]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("is truncated"),
            "{}",
            stderr(&output)
        );
    }
    assert_success(&run(&file, &["verify"]));
}

#[test]
fn extract_writes_an_oci_layout_that_skopeo_reads() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skipped: skopeo is not installed");
        return;
    }
    let fx = Fixture::new();
    let file = fx.bundle(NAME, "cluster.run", &[]);
    let out = fx.path("extracted");
    assert_success(&run(&file, &["extract", out.to_str().unwrap()]));
    let output = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{NAME}", out.display()))
        .output()
        .unwrap();
    assert_success(&output);
    // Extracting again into the layout adds nothing and succeeds; a directory
    // holding anything else is refused untouched.
    assert_success(&run(&file, &["extract", out.to_str().unwrap()]));
    let busy = fx.path("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("notes.txt"), "mine").unwrap();
    let refused = run(&file, &["extract", busy.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("not empty"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(fs::read_dir(&busy).unwrap().count(), 1);
    // A full copy re-reads and checks every blob's digest.
    let copy = fx.path("copy");
    let output = Command::new("skopeo")
        .args(["copy", "--all"])
        .arg(format!("oci:{}:{NAME}", out.display()))
        .arg(format!("oci:{}:copy", copy.display()))
        .output()
        .unwrap();
    assert_success(&output);
}

#[test]
fn signed_bundles_are_trusted_only_by_their_key() {
    let fx = Fixture::new();
    let key = fx.path("release.key");
    let other = fx.path("other.key");
    for k in [&key, &other] {
        let output = airlock(&fx.root)
            .args(["key", "generate", "-o"])
            .arg(k)
            .output()
            .unwrap();
        assert_success(&output);
    }
    let file = fx.bundle(NAME, "signed.run", &["--sign", key.to_str().unwrap()]);
    let public = format!("{}.pub", key.display());
    assert_success(&run(&file, &["verify", "--trust", &public]));

    let info = run(&file, &["info", "-o", "json"]);
    let fingerprint = serde_json::from_slice::<serde_json::Value>(&info.stdout).unwrap()["signer"]
        .as_str()
        .unwrap()
        .to_string();
    assert_success(&run(&file, &["verify", "--trust", &fingerprint]));

    let output = run(
        &file,
        &["verify", "--trust", &format!("{}.pub", other.display())],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("not by the trusted key"),
        "{}",
        stderr(&output)
    );

    // An unsigned bundle is refused when a key is required.
    let unsigned = fx.bundle(NAME, "unsigned.run", &[]);
    let output = run(&unsigned, &["verify", "--trust", &public]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("not signed"),
        "{}",
        stderr(&output)
    );

    // A forged signature with a consistent trailer is refused.
    let f = open_rw(&file);
    let size = f.metadata().unwrap().len();
    let mut bytes = [0u8; TRAILER_SIZE];
    f.read_exact_at(&mut bytes, size - TRAILER_SIZE as u64)
        .unwrap();
    let mut trailer = Trailer::decode(&bytes).unwrap();
    trailer.signature[10] ^= 1;
    f.write_all_at(&trailer.encode(), size - TRAILER_SIZE as u64)
        .unwrap();
    drop(f);
    let output = run(&file, &["verify"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("signature does not verify"),
        "{}",
        stderr(&output)
    );
}

/// `delta verify --base base` fails with exit code 2 and says `needle`.
fn assert_base_refused(delta: &Path, base: &Path, needle: &str) {
    let output = run(delta, &["verify", "--base", base.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains(needle), "{}", stderr(&output));
}

/// `delta extract out --base base` writes every blob of `image`, whole.
fn assert_extracts_whole(delta: &Path, base: &Path, out: &Path, image: &str) {
    let args = [
        "extract",
        out.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
    ];
    assert_success(&run(delta, &args));
    let extracted = Store::open(out).unwrap();
    let top = extracted.resolve(image).unwrap();
    for descriptor in extracted.walk(&top).unwrap() {
        assert_eq!(
            extracted.blob_size(&descriptor.digest).unwrap(),
            descriptor.size
        );
    }
}

#[test]
fn a_delta_holds_only_new_blobs_and_needs_its_base() {
    let fx = Fixture::new();
    let base = fx.bundle(NAME, "v1.run", &[]);
    let v2 = "registry.local/test/cluster:v2";
    put_cluster(&Store::open(&fx.root).unwrap(), v2, 2);
    let delta = fx.bundle(v2, "v2-delta.run", &["--base", base.to_str().unwrap()]);
    let full = fx.bundle(v2, "v2.run", &[]);
    let payload = |p: &Path| {
        Bundle::open(p)
            .unwrap()
            .index()
            .blobs
            .iter()
            .filter(|b| b.offset.is_some())
            .map(|b| b.size)
            .sum::<u64>()
    };
    assert!(
        payload(&delta) + (1 << 20) < payload(&full),
        "the delta repeats old blobs"
    );

    let output = run(&delta, &["verify"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("pass --base"),
        "{}",
        stderr(&output)
    );
    assert_success(&run(&delta, &["info"]));
    assert_success(&run(&delta, &["verify", "--base", base.to_str().unwrap()]));
    let wrong = run(&delta, &["verify", "--base", full.to_str().unwrap()]);
    assert_eq!(wrong.status.code(), Some(2));
    // Made against a bundle file, the delta takes only that file, not another bundle
    // of the same image.
    let template = fx.path("Clusterfile.tmpl");
    fs::write(&template, "kind: Cluster\n").unwrap();
    let other = fx.bundle(
        NAME,
        "v1-other.run",
        &["--clusterfile", template.to_str().unwrap()],
    );
    assert_base_refused(&delta, &other, "another bundle");

    assert_extracts_whole(&delta, &base, &fx.path("v2-extracted"), v2);
}

#[test]
fn a_delta_against_a_store_image_runs_with_any_complete_bundle_of_that_image() {
    let fx = Fixture::new();
    let v2 = "registry.local/test/cluster:v2";
    put_cluster(&Store::open(&fx.root).unwrap(), v2, 2);
    // Made before any v1 bundle exists: only the store image is the base.
    let delta = fx.bundle(v2, "v2-delta.run", &["--base", NAME]);
    let v1_top = Store::open(&fx.root).unwrap().resolve(NAME).unwrap().digest;
    let index = Bundle::open(&delta).unwrap().index().clone();
    let base = index.base.clone().expect("a delta names its base");
    assert_eq!((base.image.as_str(), &base.image_digest), (NAME, &v1_top));
    assert_eq!(base.index_digest, None);
    assert!(
        index.blobs.iter().any(|b| b.offset.is_none()),
        "the delta repeats every blob of the base image"
    );

    let output = run(&delta, &["verify"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(&v1_top.to_string()),
        "{}",
        stderr(&output)
    );

    // Any complete bundle of v1 will do, whatever else it carries.
    let template = fx.path("Clusterfile.tmpl");
    fs::write(&template, "apiVersion: airlock.io/v1\nkind: Cluster\n").unwrap();
    let plain = fx.bundle(NAME, "v1.run", &[]);
    let with_template = fx.bundle(
        NAME,
        "v1-template.run",
        &["--clusterfile", template.to_str().unwrap()],
    );
    for old in [&plain, &with_template] {
        assert_success(&run(&delta, &["verify", "--base", old.to_str().unwrap()]));
    }

    // A bundle of another image is refused, naming the image the delta needs.
    let full_v2 = fx.bundle(v2, "v2.run", &[]);
    assert_base_refused(&delta, &full_v2, &v1_top.to_string());

    assert_extracts_whole(&delta, &plain, &fx.path("v2-extracted"), v2);

    // On a disc, the README tells the operator the delta needs its base.
    let iso = fx.path("delta.iso");
    let output = airlock(&fx.root)
        .arg("iso")
        .arg(&delta)
        .arg("-o")
        .arg(&iso)
        .output()
        .unwrap();
    assert_success(&output);
    let read_back = fx.path("delta-iso");
    if let Some(output) = xorriso_extract(&iso, &read_back) {
        assert_success(&output);
        let readme = fs::read_to_string(read_back.join("README.txt")).unwrap();
        assert!(readme.contains("--base OLD.run"), "{readme}");
        assert!(readme.contains(&v1_top.to_string()), "{readme}");
    }

    // A base that is neither a file nor an image is bad input.
    let output = airlock(&fx.root)
        .args(["bundle", v2, "-o"])
        .arg(fx.path("nope.run"))
        .args(["--runner", BIN, "--base", "registry.local/test/cluster:v0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

fn xorriso(args: &[&str]) -> Option<Output> {
    match Command::new("xorriso").args(args).output() {
        Ok(output) => Some(output),
        Err(e) => {
            eprintln!("skipped: xorriso cannot run ({e}); apt-get install xorriso");
            None
        }
    }
}

/// `xorriso -osirrox on -indev ISO -extract / OUT`.
fn xorriso_extract(iso: &Path, out: &Path) -> Option<Output> {
    xorriso(&[
        "-osirrox",
        "on",
        "-indev",
        iso.to_str().unwrap(),
        "-extract",
        "/",
        out.to_str().unwrap(),
    ])
}

fn sha256_file(path: &Path) -> Digest {
    airlock::digest::digest_reader(fs::File::open(path).unwrap())
        .unwrap()
        .0
}

#[test]
fn the_iso_is_read_back_by_xorriso_with_names_modes_and_content() {
    let fx = Fixture::new();
    let file = fx.bundle(NAME, "cluster-v1.run", &[]);
    let iso = fx.path("cluster.iso");
    assert_success(
        &airlock(&fx.root)
            .arg("iso")
            .arg(&file)
            .arg("-o")
            .arg(&iso)
            .output()
            .unwrap(),
    );
    let again = fx.path("again.iso");
    assert_success(
        &airlock(&fx.root)
            .arg("iso")
            .arg(&file)
            .arg("-o")
            .arg(&again)
            .output()
            .unwrap(),
    );
    assert!(
        fs::read(&iso).unwrap() == fs::read(&again).unwrap(),
        "ISOs differ"
    );

    let Some(list) = xorriso(&[
        "-indev",
        iso.to_str().unwrap(),
        "-find",
        "/",
        "-exec",
        "lsdl",
    ]) else {
        return;
    };
    assert_success(&list);
    let listing = String::from_utf8_lossy(&list.stdout);
    for name in ["cluster-v1.run", "SHA256SUMS", "README.txt", "Clusterfile"] {
        assert!(listing.contains(name), "{name} missing:\n{listing}");
    }
    let run_line = listing
        .lines()
        .find(|l| l.contains("cluster-v1.run"))
        .unwrap();
    // Rock Ridge carries the real name and mode (plain ISO 9660 would show neither).
    assert!(run_line.starts_with("-rwxr-xr-x"), "{run_line}");
    let info = String::from_utf8_lossy(&list.stderr);
    assert!(info.contains("CLUSTER_V1"), "volume label: {info}");
    for complaint in ["WARNING", "SORRY", "FAILURE", "MISHAP"] {
        assert!(!info.contains(complaint), "{info}");
    }

    let out = fx.path("from-iso");
    assert_success(&xorriso_extract(&iso, &out).unwrap());
    let copied = out.join("cluster-v1.run");
    assert_eq!(sha256_file(&copied), sha256_file(&file));
    let sums = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(
        sums,
        format!("{}  cluster-v1.run\n", sha256_file(&file).hex())
    );
    assert!(
        fs::read_to_string(out.join("Clusterfile"))
            .unwrap()
            .contains(NAME)
    );
    // The exec bit survived: the copy runs as a bundle.
    assert_success(&run(&copied, &["verify"]));

    // The Joliet tree has the same names; the plain ISO 9660 tree upper-case ones.
    for (tree, name) in [("norock", "cluster-v1.run"), ("ecma119", "CLUSTER_V1.RUN")] {
        let listing = xorriso(&[
            "-read_fs",
            tree,
            "-indev",
            iso.to_str().unwrap(),
            "-find",
            "/",
        ])
        .unwrap();
        assert_success(&listing);
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.contains(name), "{tree}: {listing}");
    }
    loop_mount(&iso, &file);
}

/// Mount the ISO read-only through a loop device when this machine allows it.
fn loop_mount(iso: &Path, bundle: &Path) {
    let mountpoint = iso.with_extension("mnt");
    fs::create_dir_all(&mountpoint).unwrap();
    let mount = Command::new("mount")
        .args(["-o", "loop,ro", "-t", "iso9660"])
        .arg(iso)
        .arg(&mountpoint)
        .output();
    match mount {
        Ok(output) if output.status.success() => {
            let mounted = mountpoint.join(bundle.file_name().unwrap());
            let same = sha256_file(&mounted) == sha256_file(bundle);
            let executable = fs::metadata(&mounted).unwrap().permissions();
            let _ = Command::new("umount").arg(&mountpoint).status();
            assert!(same, "the mounted bundle differs");
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&executable) & 0o777,
                0o755
            );
        }
        Ok(output) => eprintln!(
            "skipped loop mount: this machine does not allow it ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(e) => eprintln!("skipped loop mount: cannot run mount ({e})"),
    }
}

#[test]
fn files_larger_than_one_extent_are_split_and_read_back_whole() {
    use airlock::bundle::iso::{IsoFile, IsoOptions, IsoSource, write_iso};
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    fs::write(&big, layer_bytes(3, 300_000)).unwrap();
    let files = vec![
        IsoFile {
            name: "big.bin".into(),
            source: IsoSource::File(big.clone()),
            size: 300_000,
            mode: 0o644,
        },
        IsoFile {
            name: "empty".into(),
            source: IsoSource::Bytes(Vec::new()),
            size: 0,
            mode: 0o644,
        },
    ];
    let iso = dir.path().join("multi.iso");
    let mut out = fs::File::create(&iso).unwrap();
    // 64 KiB extents stand in for the 4 GiB limit: the same records, smaller numbers.
    let options = IsoOptions {
        label: "multi".into(),
        max_extent: 64 << 10,
    };
    write_iso(&files, &options, &mut out).unwrap();
    drop(out);
    let out = dir.path().join("out");
    let Some(extract) = xorriso_extract(&iso, &out) else {
        return;
    };
    assert_success(&extract);
    assert_eq!(sha256_file(&out.join("big.bin")), sha256_file(&big));
    assert_eq!(fs::metadata(out.join("empty")).unwrap().len(), 0);
}

/// Kills the serving bundle when the test ends, pass or fail.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_answers_skopeo_from_the_file() {
    use std::io::BufRead as _;
    if Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skipped: skopeo is not installed");
        return;
    }
    let fx = Fixture::new();
    let file = fx.bundle(NAME, "cluster.run", &[]);
    let mut child = Command::new(&file)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let serving = Serving(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();

    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{addr}/test/cluster:v1"))
        .output()
        .unwrap();
    assert_success(&inspect);
    // Every blob of the cluster image, checked by digest, and a container image by
    // its original name.
    let copy = fx.path("pulled");
    let output = Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{addr}/test/cluster:v1"))
        .arg(format!("oci:{}:pulled", copy.display()))
        .output()
        .unwrap();
    assert_success(&output);
    let nginx = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{addr}/library/nginx:1.25"))
        .output()
        .unwrap();
    assert_success(&nginx);
    // Nothing was unpacked: the bundle directory holds only what the test wrote.
    drop(serving);
    let names: Vec<String> = fs::read_dir(fx.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["cluster.run", "pulled", "store"]);
}
