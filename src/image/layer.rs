//! Deterministic layers: writing a [`Tree`] as tar+zstd, and unpacking layers safely.
//!
//! Writing ([`write_layers`]):
//! 1. Entries go in path order, with mtime 0, uid/gid 0, no user or group names,
//!    normalised modes, symlinks kept, paths relative (never `/` or `..`).
//! 2. Files that are already compressed (gzip, zstd, xz, bzip2, zip) and at least
//!    [`RAW_MIN_SIZE`] bytes go into a second, uncompressed `tar` layer, so they are
//!    not compressed twice; everything else is compressed with zstd on all threads.
//!    zstd's multi-threaded output does not depend on the thread count, so digests
//!    are the same on every machine.
//! 3. Each tar is hashed as it is written (the diff id) and the compressed stream is
//!    hashed into the store (the layer digest); the raw layer's tar is its blob, so it
//!    is hashed once. Hashing runs on threads of its own
//!    ([`HashingWriter::offloaded`]), beside the tar writer and zstd's workers. The two layers are written at once on two threads, and each
//!    source file is read once, in 1 MiB reads. No per-file digest is taken: the build
//!    cache keys a step on its files' stamps and on the diff ids written
//!    ([`crate::image::build`]).
//!
//! Unpacking ([`unpack_layer`]) refuses absolute paths, `..`, links whose target
//! leaves the directory, and writes through symlinks; it honours whiteouts.

use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use fs_err as fs;

use crate::digest::{Digest, HashingWriter};
use crate::image::oci::{self, Descriptor};
use crate::image::store::{Store, StoreError};
use crate::image::tree::{NodeKind, Tree};

/// Uncompressed tar layer.
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Already-compressed files smaller than this are compressed with the rest.
pub const RAW_MIN_SIZE: u64 = 64 * 1024;
/// zstd level of rootfs layers (the level of `zstd -3`).
pub const ZSTD_LEVEL: i32 = 3;

/// A layer written to the store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuiltLayer {
    /// Its descriptor (compressed digest and size).
    pub descriptor: Descriptor,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
}

/// Errors of layer writing and unpacking.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Reading a source file or writing the blob failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The store refused the blob.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A layer entry that would write outside the directory.
    #[error("layer {layer}: entry {entry:?} {reason}; refusing to unpack it")]
    Unsafe {
        /// The layer digest.
        layer: Digest,
        /// The entry path.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// The media type is not a tar layer airlock can read.
    #[error("layer {0}: media type {1} is not a tar layer (tar, tar+gzip, tar+zstd)")]
    MediaType(Digest, String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether the file starts like a compressed stream.
pub fn is_compressed(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 6];
    let mut f = fs::File::open(path)?;
    let n = f.read(&mut magic)?;
    let m = &magic[..n];
    Ok(m.starts_with(&[0x1f, 0x8b])
        || m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00])
        || m.starts_with(b"BZh")
        || m.starts_with(b"PK\x03\x04"))
}

/// Write `changes` (and whiteouts for `removed`) as one or two layers, in the order
/// they must be applied. Nothing is written for an empty change. The compressed and
/// the raw layer are written at the same time, on two threads.
pub fn write_layers(
    store: &Store,
    changes: &Tree,
    removed: &[String],
    threads: u32,
) -> Result<Vec<BuiltLayer>, LayerError> {
    let mut compressible = Tree::default();
    let mut raw = Tree::default();
    for (path, node) in &changes.nodes {
        let already = match &node.kind {
            NodeKind::File { source, size } if *size >= RAW_MIN_SIZE => {
                is_compressed(source).map_err(io_at(source))?
            }
            _ => false,
        };
        if already {
            raw.nodes.insert(path.clone(), node.clone());
        } else {
            compressible.nodes.insert(path.clone(), node.clone());
        }
    }
    let (compressed, raw) = std::thread::scope(|scope| {
        let raw = (!raw.is_empty()).then(|| scope.spawn(|| write_raw(store, &raw)));
        let compressed = (!compressible.is_empty() || !removed.is_empty())
            .then(|| write_compressed(store, &compressible, removed, threads))
            .transpose();
        let raw = match raw {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .map(Some),
            None => Ok(None),
        };
        (compressed, raw)
    });
    Ok([compressed?, raw?].into_iter().flatten().collect())
}

/// Buffer in front of the tar writer: large reads from the source files.
const COPY_BUFFER: usize = 1 << 20;

fn write_compressed(
    store: &Store,
    tree: &Tree,
    removed: &[String],
    threads: u32,
) -> Result<BuiltLayer, LayerError> {
    let blob = store.large_blob_writer()?;
    let mut encoder =
        zstd::stream::write::Encoder::new(blob, ZSTD_LEVEL).map_err(io_at(store.root()))?;
    encoder
        .multithread(threads.max(1))
        .map_err(io_at(store.root()))?;
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(
        COPY_BUFFER,
        HashingWriter::offloaded(encoder),
    ));
    append_tree(&mut tar, tree, removed)?;
    let hashing = tar
        .into_inner()
        .and_then(|b| b.into_inner().map_err(io::IntoInnerError::into_error))
        .map_err(io_at(store.root()))?;
    let (diff_id, _, encoder) = hashing.finish();
    let blob = encoder.finish().map_err(io_at(store.root()))?;
    let (digest, size) = blob.commit(None, None)?;
    let layer = BuiltLayer {
        descriptor: Descriptor::new(oci::MEDIA_TYPE_LAYER_ZSTD, digest, size),
        diff_id,
    };
    Ok(layer)
}

fn write_raw(store: &Store, tree: &Tree) -> Result<BuiltLayer, LayerError> {
    let blob = store.large_blob_writer()?;
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(COPY_BUFFER, blob));
    append_tree(&mut tar, tree, &[])?;
    let blob = tar
        .into_inner()
        .and_then(|b| b.into_inner().map_err(io::IntoInnerError::into_error))
        .map_err(io_at(store.root()))?;
    let (digest, size) = blob.commit(None, None)?;
    let layer = BuiltLayer {
        descriptor: Descriptor::new(MEDIA_TYPE_LAYER_TAR, digest.clone(), size),
        diff_id: digest,
    };
    Ok(layer)
}

/// Copy at most `size` bytes of `file` to `out` through `buffer`, each read filling
/// the buffer; returns the bytes copied (fewer when the file shrank).
fn copy_data(
    mut file: impl Read,
    size: u64,
    out: &mut impl Write,
    buffer: &mut [u8],
) -> io::Result<u64> {
    let mut copied = 0u64;
    while copied < size {
        let want = usize::try_from((size - copied).min(buffer.len() as u64)).unwrap_or(0);
        let mut filled = 0;
        while filled < want {
            match file.read(&mut buffer[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        out.write_all(&buffer[..filled])?;
        copied += filled as u64;
    }
    Ok(copied)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    tree: &Tree,
    removed: &[String],
) -> Result<(), LayerError> {
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut whiteouts: Vec<String> = removed
        .iter()
        .map(|p| match p.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.wh.{name}"),
            None => format!(".wh.{p}"),
        })
        .collect();
    whiteouts.sort();
    let mut entries: Vec<(&str, Option<&crate::image::tree::Node>)> = tree
        .nodes
        .iter()
        .map(|(p, n)| (p.as_str(), Some(n)))
        .chain(whiteouts.iter().map(|p| (p.as_str(), None)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let here = Path::new(".");
    for (path, node) in entries {
        match node.map(|n| (&n.kind, n.mode)) {
            None => {
                let mut h = header(tar::EntryType::Regular, 0o644, 0);
                tar.append_data(&mut h, path, io::empty())
                    .map_err(io_at(here))?;
            }
            Some((NodeKind::Dir, mode)) => {
                let mut h = header(tar::EntryType::Directory, mode, 0);
                tar.append_data(&mut h, format!("{path}/"), io::empty())
                    .map_err(io_at(here))?;
            }
            Some((NodeKind::File { source, size }, mode)) => {
                let mut h = header(tar::EntryType::Regular, mode, *size);
                // The header (and a long-name entry if needed) through the builder,
                // the data straight into its writer in large reads: the builder's own
                // copy goes 8 KiB at a time.
                tar.append_data(&mut h, path, io::empty())
                    .map_err(io_at(here))?;
                let file = fs::File::open(source).map_err(io_at(source))?;
                let copied =
                    copy_data(file, *size, tar.get_mut(), &mut buffer).map_err(io_at(source))?;
                if copied != *size {
                    return Err(LayerError::Io {
                        path: source.clone(),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the file shrank while the layer was written; build again",
                        ),
                    });
                }
                let padding = (512 - size % 512) % 512;
                tar.get_mut()
                    .write_all(&[0u8; 512][..usize::try_from(padding).unwrap_or(0)])
                    .map_err(io_at(here))?;
            }
            Some((NodeKind::Symlink { target }, mode)) => {
                let mut h = header(tar::EntryType::Symlink, mode, 0);
                tar.append_link(&mut h, path, target).map_err(io_at(here))?;
            }
        }
    }
    tar.finish().map_err(io_at(here))?;
    Ok(())
}

/// A reader of the uncompressed tar of a layer blob.
pub fn decompress<'a>(
    media_type: &str,
    digest: &Digest,
    blob: impl Read + 'a,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    let base = media_type
        .trim_end_matches("+zstd")
        .trim_end_matches("+gzip")
        .trim_end_matches(".gzip");
    let is_tar = base == MEDIA_TYPE_LAYER_TAR
        || base == "application/vnd.docker.image.rootfs.diff.tar"
        || media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip";
    if !is_tar {
        return Err(LayerError::MediaType(
            digest.clone(),
            media_type.to_string(),
        ));
    }
    Ok(if media_type.ends_with("zstd") {
        Box::new(zstd::stream::read::Decoder::new(blob).map_err(io_at(Path::new(".")))?)
    } else if media_type.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(blob))
    } else {
        Box::new(blob)
    })
}

/// A relative path made only of normal components, or why not.
fn safe_relative(entry: &str) -> Result<PathBuf, String> {
    let p = Path::new(entry);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains `..`".to_string()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("is an absolute path".to_string());
            }
        }
    }
    Ok(out)
}

/// Make sure no existing component of `rel` under `dest` is a symlink, and create
/// the missing directories.
fn prepare_parents(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut at = dest.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err("would be written through a symlink".to_string());
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(&at).map_err(|e| e.to_string())?;
                std::fs::create_dir(&at).map_err(|e| e.to_string())?;
            }
            Err(_) => std::fs::create_dir(&at).map_err(|e| e.to_string())?,
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a symlink at `rel` pointing to `target` stays inside the directory.
///
/// `..` may only lead the target (`../../lib/x`): after a name, the name could itself
/// be a symlink (`d -> .`), and `d/..` would then climb out of the directory.
fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    let mut named = false;
    for c in target.components() {
        match c {
            Component::ParentDir if named => return false,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => {
                named = true;
                depth += 1;
            }
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Apply the layer `tar` (already decompressed) onto `dest`.
pub fn unpack_layer(layer: &Digest, tar: impl Read, dest: &Path) -> Result<(), LayerError> {
    let unsafe_entry = |entry: &str, reason: String| LayerError::Unsafe {
        layer: layer.clone(),
        entry: entry.to_string(),
        reason,
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(io_at(dest))? {
        let mut entry = entry.map_err(io_at(dest))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = safe_relative(&name).map_err(|r| unsafe_entry(&name, r))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        prepare_parents(dest, &rel).map_err(|r| unsafe_entry(&name, r))?;
        let file_name = rel
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
        if file_name == ".wh..wh..opq" {
            for child in fs::read_dir(&parent).map_err(io_at(&parent))? {
                let child = child.map_err(io_at(&parent))?;
                remove_any(&child.path()).map_err(io_at(&child.path()))?;
            }
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            let victim = parent.join(hidden);
            remove_any(&victim).map_err(io_at(&victim))?;
            continue;
        }
        let target = dest.join(&rel);
        let mode = entry.header().mode().map_err(io_at(&target))? & 0o1777;
        let kind = entry.header().entry_type();
        use std::os::unix::fs::PermissionsExt;
        match kind {
            tar::EntryType::Directory => {
                match std::fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => remove_any(&target).map_err(io_at(&target))?,
                    Err(_) => {}
                }
                if !target.is_dir() {
                    fs::create_dir(&target).map_err(io_at(&target))?;
                }
                fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(io_at(&target))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_any(&target).map_err(io_at(&target))?;
                let mut out = fs::File::create(&target).map_err(io_at(&target))?;
                io::copy(&mut entry, &mut out).map_err(io_at(&target))?;
                fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(io_at(&target))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(io_at(&target))?
                    .ok_or_else(|| unsafe_entry(&name, "is a symlink without a target".into()))?
                    .into_owned();
                if !link_stays_inside(&rel, &link) {
                    return Err(unsafe_entry(
                        &name,
                        format!("links to {} outside the image", link.display()),
                    ));
                }
                remove_any(&target).map_err(io_at(&target))?;
                std::os::unix::fs::symlink(&link, &target).map_err(io_at(&target))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(io_at(&target))?
                    .ok_or_else(|| unsafe_entry(&name, "is a hard link without a target".into()))?
                    .into_owned();
                let link_rel = safe_relative(&link.to_string_lossy())
                    .map_err(|r| unsafe_entry(&name, format!("hard link target {r}")))?;
                prepare_parents(dest, &link_rel).map_err(|r| unsafe_entry(&name, r))?;
                remove_any(&target).map_err(io_at(&target))?;
                fs::hard_link(dest.join(&link_rel), &target).map_err(io_at(&target))?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                return Err(unsafe_entry(
                    &name,
                    format!("is a {other:?} entry, which a cluster image may not hold"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tree::Node;

    fn tree_of(dir: &Path) -> Tree {
        Tree::scan(dir).unwrap()
    }

    #[test]
    fn layers_are_deterministic_and_round_trip() {
        let ctx = tempfile::tempdir().unwrap();
        fs::create_dir_all(ctx.path().join("bin")).unwrap();
        let mut x: u32 = 1;
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 24) as u8
            })
            .collect();
        fs::write(ctx.path().join("bin/tool"), &big).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&big).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() as u64 >= RAW_MIN_SIZE);
        fs::write(ctx.path().join("chart.tgz"), &gz).unwrap();
        std::os::unix::fs::symlink("bin/tool", ctx.path().join("tool")).unwrap();

        let s1 = tempfile::tempdir().unwrap();
        let s2 = tempfile::tempdir().unwrap();
        let store1 = Store::open(s1.path()).unwrap();
        let store2 = Store::open(s2.path()).unwrap();
        let tree = tree_of(ctx.path());
        let one = write_layers(&store1, &tree, &["gone".to_string()], 1).unwrap();
        let many = write_layers(&store2, &tree, &["gone".to_string()], 3).unwrap();
        assert_eq!(one, many, "thread count changed the digest");
        assert_eq!(one.len(), 2);
        assert_eq!(one[0].descriptor.media_type, oci::MEDIA_TYPE_LAYER_ZSTD);
        assert_eq!(one[1].descriptor.media_type, MEDIA_TYPE_LAYER_TAR);

        let out = tempfile::tempdir().unwrap();
        fs::write(out.path().join("gone"), b"x").unwrap();
        for l in &one {
            let blob = store1.open_blob(&l.descriptor.digest).unwrap();
            let tar = decompress(&l.descriptor.media_type, &l.descriptor.digest, blob).unwrap();
            unpack_layer(&l.descriptor.digest, tar, out.path()).unwrap();
        }
        assert!(!out.path().join("gone").exists());
        assert_eq!(fs::read(out.path().join("bin/tool")).unwrap(), big);
        assert_eq!(fs::read(out.path().join("chart.tgz")).unwrap(), gz);
        assert_eq!(
            fs::read_link(out.path().join("tool")).unwrap(),
            Path::new("bin/tool")
        );
        let mut raw = Vec::new();
        store1
            .open_blob(&one[1].descriptor.digest)
            .unwrap()
            .read_to_end(&mut raw)
            .unwrap();
        let mut a = tar::Archive::new(&raw[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 0);
            assert_eq!(e.header().uid().unwrap(), 0);
            assert_eq!(e.header().username().unwrap(), Some(""));
        }
    }

    fn evil_tar(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    #[test]
    fn unpack_refuses_escapes() {
        let d = Digest::of(b"x");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                evil_tar(|b| {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    b.append_link(&mut h, "etc", "/etc").unwrap();
                }),
                "outside the image",
            ),
            (
                evil_tar(|b| {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    b.append_link(&mut h, "a/up", "../../x").unwrap();
                }),
                "outside the image",
            ),
            (
                evil_tar(|b| {
                    let mut h = header(tar::EntryType::Regular, 0o644, 1);
                    let name = b"../x";
                    h.as_old_mut().name[..name.len()].copy_from_slice(name);
                    h.set_cksum();
                    b.append(&h, &b"x"[..]).unwrap();
                }),
                "contains `..`",
            ),
        ];
        for (tar, needle) in cases {
            let out = tempfile::tempdir().unwrap();
            let err = unpack_layer(&d, &tar[..], out.path()).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        // A symlink inside is fine, but nothing may be written through it.
        let out = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/tmp", out.path().join("t")).unwrap();
        let tar = evil_tar(|b| {
            let mut h = header(tar::EntryType::Regular, 0o644, 1);
            b.append_data(&mut h, "t/x", &b"x"[..]).unwrap();
        });
        let err = unpack_layer(&d, &tar[..], out.path()).unwrap_err();
        assert!(err.to_string().contains("through a symlink"), "{err}");
        let _ = Node::dir();
    }
}
