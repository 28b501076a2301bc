//! Fuzz the bundle trailer and index reader, and verification of what they locate.
//!
//! A trailer carries two SHA-256 sums a fuzzer cannot guess, so the input picks one of
//! three ways to build the file the reader opens:
//! 1. `raw`: the input is the whole file (trailer decoding, ELF sniffing, truncation).
//! 2. `framed`: the input gives a body, an index (arbitrary bytes) and trailer fields;
//!    the harness writes body, zeros up to the index offset, the index and a trailer
//!    whose checksums are right, so the index parser and layout checks are reached.
//! 3. `tampered`: the input gives a runner and blobs; the harness writes a valid
//!    bundle of them, then flips, truncates or swaps bytes as the input says, and
//!    checks that [`Bundle::verify`] refuses whatever no longer matches.
//!
//! Whatever opens is verified and every blob it lists is located and read.
#![no_main]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use airlock::bundle::Bundle;
use airlock::bundle::format::{
    ALIGNMENT, BlobEntry, FORMAT_VERSION, Index, IndexImage, Runner, TRAILER_SIZE, Trailer,
    align_up,
};
use airlock::digest::Digest;
use airlock::image::BlobSource as _;
use airlock::image::oci::Descriptor;
use libfuzzer_sys::fuzz_target;

/// Largest file the `framed` mode writes (zeros up to the index offset).
const MAX_INDEX_OFFSET: u64 = 1 << 20;

fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path()
}

fn write_file(bytes: &[u8]) -> PathBuf {
    let path = scratch().join("bundle.run");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(bytes).expect("write");
    path
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, slot) in b.iter_mut().enumerate() {
        *slot = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let hex = Digest::of(bytes).to_string();
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&hex[7 + 2 * i..9 + 2 * i], 16).expect("hex");
    }
    out
}

fn trailer(flags: u32, payload_start: u64, index_offset: u64, index: &[u8]) -> [u8; TRAILER_SIZE] {
    Trailer {
        flags,
        payload_start,
        index_offset,
        index_len: index.len() as u64,
        index_sha256: sha256(index),
        signature: [0u8; 64],
    }
    .encode()
}

/// Open `path`; when it opens, verify it and read every blob it lists.
fn exercise(path: &Path) -> Option<Result<(), String>> {
    let bundle = Bundle::open(path).ok()?;
    let _ = bundle.verify_signature();
    let verified = bundle.verify(&|_, _| {}).map_err(|e| e.to_string());
    for blob in &bundle.index().blobs {
        let _ = bundle.locate(&blob.digest);
        let _ = bundle.read_blob(&blob.digest);
    }
    let _ = bundle.images();
    Some(verified)
}

fn framed(data: &[u8]) {
    let flags = u64_at(data, 0) as u32 & 0b111;
    let payload_start = u64_at(data, 4) % (MAX_INDEX_OFFSET + ALIGNMENT);
    let body_len = (u64_at(data, 12) & 0xffff) as usize;
    let rest = data.get(14..).unwrap_or_default();
    let (body, index) = rest.split_at(body_len.min(rest.len()));
    let index_offset = align_up(payload_start).max(body.len() as u64).min(MAX_INDEX_OFFSET);
    let mut file = body.to_vec();
    file.resize(index_offset as usize, 0);
    file.extend_from_slice(index);
    file.extend_from_slice(&trailer(flags, payload_start, index_offset, index));
    exercise(&write_file(&file));
}

/// A valid bundle of `runner` and `blobs`, as bytes.
fn valid_bundle(runner: &[u8], blobs: &[&[u8]]) -> Vec<u8> {
    let mut sorted: Vec<(Digest, &[u8])> = blobs.iter().map(|b| (Digest::of(b), *b)).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut file = runner.to_vec();
    let payload_start = align_up(runner.len() as u64);
    file.resize(payload_start as usize, 0);
    let mut entries = Vec::new();
    for (digest, bytes) in &sorted {
        file.resize(align_up(file.len() as u64) as usize, 0);
        entries.push(BlobEntry {
            digest: digest.clone(),
            offset: Some(file.len() as u64),
            size: bytes.len() as u64,
            media_type: None,
        });
        file.extend_from_slice(bytes);
    }
    let top = sorted.first().map_or_else(|| Digest::of(b""), |b| b.0.clone());
    let index = Index {
        format_version: FORMAT_VERSION,
        created_by: "airlock fuzz".to_string(),
        image: IndexImage {
            name: "registry.local/fuzz:v1".to_string(),
            descriptor: Descriptor::new("application/vnd.oci.image.index.v1+json", top, 0),
        },
        runner: Runner {
            size: runner.len() as u64,
            digest: Digest::of(runner),
        },
        blobs: entries,
        sbom: None,
        clusterfile: None,
        signer: None,
        base: None,
    };
    let index_bytes = serde_json::to_vec(&index).expect("index json");
    let index_offset = file.len() as u64;
    file.extend_from_slice(&index_bytes);
    file.extend_from_slice(&trailer(0, payload_start, index_offset, &index_bytes));
    file
}

fn tampered(data: &[u8]) {
    let action = data.first().copied().unwrap_or(0);
    let at = u64_at(data, 1);
    let mut parts = data.get(9..).unwrap_or_default().split(|b| *b == 0xff);
    // A bundle always has a runner and its image's top-level blob.
    let mut runner = b"#!runner ".to_vec();
    runner.extend_from_slice(parts.next().unwrap_or_default());
    let mut blobs: Vec<&[u8]> = parts.take(8).collect();
    if blobs.is_empty() {
        blobs.push(b"{}");
    }
    let mut file = valid_bundle(&runner, &blobs);
    let pristine = file.clone();
    assert_eq!(
        exercise(&write_file(&file)),
        Some(Ok(())),
        "a freshly written bundle does not verify"
    );
    let len = file.len() as u64;
    match action % 3 {
        0 => {
            let i = (at % len) as usize;
            file[i] ^= 1 << (action >> 5);
        }
        1 => file.truncate((at % len) as usize),
        _ => {
            // Swap the first bytes of two regions (two blobs, or a blob and the runner).
            let a = (at % len) as usize;
            let b = ((at >> 32) % len) as usize;
            file.swap(a, b);
        }
    }
    if file == pristine {
        return;
    }
    if let Some(Ok(())) = exercise(&write_file(&file)) {
        panic!("a changed bundle verified (action {action}, at {at})");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            exercise(&write_file(rest));
        }
        1 => framed(rest),
        _ => tampered(rest),
    }
});
