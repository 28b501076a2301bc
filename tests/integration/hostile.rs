//! Tampered and hostile input: every case is refused with an error that names what,
//! and nothing is written outside where it belongs (issue 10).
//!
//! 1. Bundles: two blobs swapped in place (each still a valid blob, at the wrong
//!    offset) are refused by verification naming the first blob; a bundle cut at
//!    any region boundary does not open. (Bit flips anywhere are in `bundle.rs`.)
//! 2. Layer tars: `..` names, absolute names, symlinks and hard links that leave the
//!    directory, and a symlink chain that climbs out through another symlink are
//!    refused; a canary beside the target directory is untouched and nothing new
//!    appears beside it.
//! 3. YAML bombs in a Clusterfile: an alias "billion laughs", 10,000-deep nesting and
//!    a 100 MB scalar end in a bounded "not valid YAML" error, through the library
//!    and through `airlock run` (exit code 2).
//! 4. The registry, spoken to over a raw socket so `..` reaches it unfolded: names,
//!    digests and upload ids with traversal get `NAME_INVALID`/`DIGEST_INVALID`/
//!    `BLOB_UPLOAD_UNKNOWN`, and nothing appears outside the push store.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use airlock::bundle::{Bundle, PackOptions, pack};
use airlock::digest::Digest;
use airlock::image::layer::unpack_layer;
use airlock::image::oci::{self, Descriptor};
use airlock::image::store::Store;
use airlock::registry::server::{RegistryServer, ServerConfig};
use airlock::spec::clusterfile::Clusterfile;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");
const NAME: &str = "registry.local/hostile/cluster:v1";

/// A store holding one image: a manifest of a config and two same-size layers.
fn store_with_image(root: &Path) -> (Store, Vec<Digest>) {
    let store = Store::open(root).unwrap();
    let layer = |seed: u8| -> Vec<u8> {
        (0..10_000u32)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect()
    };
    let layers = [layer(3), layer(5)];
    let mut descriptors = Vec::new();
    for l in &layers {
        let digest = store.put_bytes(l).unwrap();
        descriptors.push(Descriptor::new(
            oci::MEDIA_TYPE_LAYER_GZIP,
            digest,
            l.len() as u64,
        ));
    }
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = store.put_bytes(config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_TYPE_MANIFEST,
        "config": Descriptor::new(oci::MEDIA_TYPE_CONFIG, config_digest, config.len() as u64),
        "layers": descriptors,
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = store.put_bytes(&bytes).unwrap();
    store
        .set_ref(
            NAME,
            &Descriptor::new(oci::MEDIA_TYPE_MANIFEST, digest, bytes.len() as u64),
        )
        .unwrap();
    let layer_digests = descriptors.into_iter().map(|d| d.digest).collect();
    (store, layer_digests)
}

/// A bundle of [`store_with_image`]'s image run by `runner` (a script or airlock).
fn packed(dir: &Path, runner: Option<&Path>) -> (std::path::PathBuf, Vec<Digest>) {
    let (store, layers) = store_with_image(&dir.join("store"));
    let script = dir.join("runner");
    fs::write(&script, b"#!/bin/sh\nexit 0\n").unwrap();
    let out = dir.join("cluster.run");
    let options = PackOptions {
        runner: runner.unwrap_or(&script),
        created_by: "airlock test".to_string(),
        signing_key: None,
        clusterfile: None,
        base: None,
    };
    pack(&store, NAME, &out, &options, &|_, _| {}).unwrap();
    (out, layers)
}

#[test]
fn a_bundle_with_two_blobs_swapped_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (file, layers) = packed(dir.path(), Some(Path::new(BIN)));
    let bundle = Bundle::open(&file).unwrap();
    bundle.verify(&|_, _| {}).unwrap();
    let mut entries: Vec<_> = layers
        .iter()
        .map(|d| bundle.entry(d).unwrap().clone())
        .collect();
    entries.sort_by_key(|e| e.offset);
    let (a, b) = (&entries[0], &entries[1]);
    assert_eq!(a.size, b.size);
    drop(bundle);

    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let mut bytes_a = vec![0u8; a.size as usize];
    let mut bytes_b = vec![0u8; b.size as usize];
    f.read_exact_at(&mut bytes_a, a.offset.unwrap()).unwrap();
    f.read_exact_at(&mut bytes_b, b.offset.unwrap()).unwrap();
    f.write_all_at(&bytes_b, a.offset.unwrap()).unwrap();
    f.write_all_at(&bytes_a, b.offset.unwrap()).unwrap();
    drop(f);

    // The trailer and index are intact: the bundle opens, and verification refuses it.
    let bundle = Bundle::open(&file).unwrap();
    let err = bundle.verify(&|_, _| {}).unwrap_err().to_string();
    assert!(
        err.contains(&format!("blob {}", a.digest)) && err.contains("is damaged"),
        "{err}"
    );
    assert!(err.contains(&Digest::of(&bytes_b).to_string()), "{err}");
    // The bundle's own check (what `install` runs first) says the same, exit code 2.
    let output = Command::new(&file).arg("verify").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("blob {}", a.digest)), "{stderr}");
}

#[test]
fn a_bundle_cut_anywhere_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = packed(dir.path(), None);
    let full = fs::read(&file).unwrap();
    let bundle = Bundle::open(&file).unwrap();
    let mut cuts: BTreeSet<u64> = [1, full.len() as u64 - 1, full.len() as u64 - 192]
        .into_iter()
        .collect();
    cuts.insert(bundle.trailer().index_offset);
    cuts.insert(bundle.trailer().index_offset + 1);
    for blob in &bundle.index().blobs {
        cuts.insert(blob.offset.unwrap());
        cuts.insert(blob.offset.unwrap() + blob.size);
    }
    drop(bundle);
    let cut = dir.path().join("cut.run");
    for at in cuts {
        fs::write(&cut, &full[..at as usize]).unwrap();
        let err = Bundle::open(&cut).expect_err(&format!("cut at {at} opened"));
        let text = err.to_string();
        assert!(text.contains("cut.run"), "cut at {at}: {text}");
    }
}

/// A tar of `entries`: (name, kind, link target, content). Names are written raw
/// into the header, so `..` and absolute names reach the reader unchanged.
fn tar_of(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, link, content) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        let raw = name.as_bytes();
        h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        if !link.is_empty() {
            let raw = link.as_bytes();
            h.as_old_mut().linkname[..raw.len()].copy_from_slice(raw);
        }
        h.set_cksum();
        builder.append(&h, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Every path under `dir` with its bytes (symlinks as their target).
fn listing(dir: &Path) -> BTreeSet<(String, Vec<u8>)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = if meta.file_type().is_symlink() {
                fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_dir() {
                stack.push(path.clone());
                Vec::new()
            } else {
                fs::read(&path).unwrap()
            };
            out.insert((path.display().to_string(), content));
        }
    }
    out
}

#[test]
fn layer_entries_that_leave_the_directory_are_refused_and_nothing_escapes() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let layer = Digest::of(b"hostile layer");
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, tar::EntryType, &'a str, &'a [u8])>,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "dot-dot name",
            vec![("../canary", Regular, "", b"pwned")],
            "contains `..`",
        ),
        (
            "dot-dot in the middle",
            vec![("a/../../canary", Regular, "", b"pwned")],
            "contains `..`",
        ),
        (
            "absolute name",
            vec![("/canary", Regular, "", b"pwned")],
            "absolute path",
        ),
        (
            "absolute symlink",
            vec![("up", Symlink, "/", b"")],
            "outside the image",
        ),
        (
            "relative symlink out",
            vec![("a/", Directory, "", b""), ("a/up", Symlink, "../..", b"")],
            "outside the image",
        ),
        (
            "hard link to a file outside",
            vec![("hl", Link, "../canary", b"")],
            "hard link target contains `..`",
        ),
        (
            "absolute hard link",
            vec![("hl", Link, "/etc/passwd", b"")],
            "hard link target is an absolute path",
        ),
        (
            // `d -> .` is harmless alone, but `d/..` then resolves to the parent.
            "symlink climbing through a symlink",
            vec![("d", Symlink, ".", b""), ("s", Symlink, "d/..", b"")],
            "outside the image",
        ),
        (
            "write through an inside symlink to outside",
            vec![
                ("s", Symlink, "d/..", b""),
                ("d", Symlink, ".", b""),
                ("s/canary", Regular, "", b"pwned"),
            ],
            "outside the image",
        ),
        (
            "write through a symlink to the directory itself",
            vec![
                ("a", Symlink, ".", b""),
                ("a/canary", Regular, "", b"pwned"),
            ],
            "through a symlink",
        ),
        (
            "device node",
            vec![("dev", tar::EntryType::Char, "", b"")],
            "which a cluster image may not hold",
        ),
    ];
    for (what, entries, expected) in cases {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("rootfs");
        fs::create_dir(&dest).unwrap();
        fs::write(outer.path().join("canary"), b"original").unwrap();
        let before = listing(outer.path());
        let err = unpack_layer(&layer, &tar_of(&entries)[..], &dest)
            .expect_err(what)
            .to_string();
        assert!(err.contains(expected), "{what}: {err}");
        assert!(err.contains(&layer.to_string()), "{what}: {err}");
        let after: BTreeSet<_> = listing(outer.path())
            .into_iter()
            .filter(|(p, _)| !Path::new(p).starts_with(&dest))
            .collect();
        let before: BTreeSet<_> = before
            .into_iter()
            .filter(|(p, _)| !Path::new(p).starts_with(&dest))
            .collect();
        assert_eq!(
            after, before,
            "{what}: something changed outside the target"
        );
    }
}

/// `Clusterfile::parse` on `text` fails with a YAML error naming the file.
fn assert_bounded_yaml_error(what: &str, text: &str) {
    let err = Clusterfile::parse("bomb.yaml", text)
        .expect_err(what)
        .to_string();
    assert!(err.contains("bomb.yaml"), "{what}: {err}");
    assert!(err.contains("not valid YAML"), "{what}: {err}");
    assert!(
        err.len() < 2_000,
        "{what}: the error is {} bytes",
        err.len()
    );
}

fn billion_laughs() -> String {
    let mut text = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(",");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    format!(
        "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  bomb:\n{}",
        indent(&text)
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn deep_nesting() -> String {
    let depth = 10_000;
    format!(
        "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  env: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

fn huge_scalar() -> String {
    let mut text = String::with_capacity(100 << 20);
    text.push_str("apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: \"");
    text.extend(std::iter::repeat_n('x', 100 << 20));
    text.push_str("\"\n");
    text
}

#[test]
fn yaml_bombs_in_a_clusterfile_end_in_a_bounded_error() {
    assert_bounded_yaml_error("billion laughs", &billion_laughs());
    assert_bounded_yaml_error("10k-deep flow nesting", &deep_nesting());
    let block_nesting: String = (0..10_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    assert_bounded_yaml_error(
        "10k-deep block nesting",
        &format!("apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n{block_nesting}"),
    );
    assert_bounded_yaml_error("100 MB scalar", &huge_scalar());
}

#[test]
fn airlock_run_refuses_a_yaml_bomb_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Clusterfile");
    fs::write(&file, billion_laughs()).unwrap();
    let output = Command::new(BIN)
        .arg("--root")
        .arg(dir.path().join("store"))
        .args(["run", "-f"])
        .arg(&file)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not valid YAML"), "{stderr}");
    assert!(stderr.contains("Clusterfile"), "{stderr}");
}

/// Send `request` raw and return the status code and body.
fn raw_http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_refuses_traversal_in_names_digests_and_upload_ids() {
    let outer = tempfile::tempdir().unwrap();
    let store = Store::open(outer.path().join("store")).unwrap();
    fs::write(outer.path().join("canary"), b"original").unwrap();
    let before = listing(outer.path());
    let registry = RegistryServer::new(
        Arc::new(store.clone()),
        ServerConfig::writable(store.clone()),
    )
    .spawn("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let addr = registry.addr;
    let body = "pwned";
    let digest = Digest::of(body.as_bytes());
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("POST /v2/../../canary/blobs/uploads/?digest={digest}"),
            400,
            "NAME_INVALID",
        ),
        (
            format!("POST /v2/a/../../../x/blobs/uploads/?digest={digest}"),
            400,
            "NAME_INVALID",
        ),
        (
            "GET /v2/a/blobs/sha256:../../../canary".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "POST /v2/a/blobs/uploads/?digest=sha256:../../canary".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("PUT /v2/a/blobs/uploads/../../../canary?digest={digest}"),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            "PATCH /v2/a/blobs/uploads/..%2F..%2Fcanary".to_string(),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            "PUT /v2/a/manifests/../../canary".to_string(),
            400,
            "TAG_INVALID",
        ),
        (
            format!("POST /v2/a/blobs/uploads/?mount={digest}&from=../../x"),
            202,
            "",
        ),
    ];
    let mut results = Vec::new();
    for (line, status, code) in &cases {
        let request = format!(
            "{line} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let (got, response) = tokio::task::spawn_blocking(move || raw_http(addr, &request))
            .await
            .unwrap();
        results.push((line.clone(), got, response.clone()));
        assert_eq!(got, *status, "{line}: {response}");
        assert!(response.contains(code), "{line}: {response}");
    }
    registry.stop().await.unwrap();
    assert!(!store.has_blob(&digest), "a blob was stored: {results:?}");
    let outside = |set: BTreeSet<(String, Vec<u8>)>| -> BTreeSet<_> {
        set.into_iter()
            .filter(|(p, _)| !Path::new(p).starts_with(store.root()))
            .collect()
    };
    assert_eq!(outside(listing(outer.path())), outside(before));
}
