//! The local image store: an OCI image layout on disk.
//!
//! Layout (readable by `skopeo copy oci:DIR:NAME`):
//! ```text
//! ROOT/oci-layout          {"imageLayoutVersion":"1.0.0"}
//! ROOT/index.json          one entry per named image, `org.opencontainers.image.ref.name`
//! ROOT/blobs/sha256/<hex>  every blob, shared by all images
//! ROOT/tmp/                partial writes, renamed into blobs/ once verified
//! ROOT/lock                held while index.json changes
//! ```
//! 1. Blobs are written to `tmp/` while hashing, verified, then renamed: a blob path
//!    that exists is always complete and correct.
//! 2. `index.json` is rewritten temp-then-rename under an exclusive lock, so
//!    concurrent commands never lose each other's names.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use fs_err as fs;

use crate::digest::{Digest, HashingWriter};
use crate::image::oci::{self, Descriptor, ImageIndex};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Content did not match the digest it was announced with.
    #[error("content of {expected} hashed to {actual}: refusing to store it")]
    DigestMismatch {
        /// What the caller said.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// Content was not of the announced size.
    #[error("content of {digest} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// What the caller said.
        expected: u64,
        /// What arrived.
        actual: u64,
    },
    /// No blob with that digest.
    #[error("blob {0} is not in the store")]
    BlobUnknown(Digest),
    /// No image with that name.
    #[error("image {0:?} is not in the store (see `airlock images`)")]
    ImageUnknown(String),
    /// `index.json` or a manifest is not valid JSON of the expected shape.
    #[error("{path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// A handle on a store directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Open the store at `root`, creating its layout if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::create_dir_all(root.join("tmp"))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let empty = ImageIndex {
                schema_version: 2,
                media_type: Some(oci::MEDIA_TYPE_INDEX.to_string()),
                manifests: Vec::new(),
                annotations: BTreeMap::new(),
            };
            write_atomic(&index, &to_json(&empty))?;
        }
        Ok(Self { root })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Size of a present blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobUnknown(digest.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Open a present blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        match File::open(self.blob_path(digest)) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobUnknown(digest.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Read a whole (small) blob, such as a manifest or config.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.open_blob(digest)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Start writing a blob whose digest is known only at the end.
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
        Ok(BlobWriter {
            store: self.clone(),
            inner: HashingWriter::new(io::BufWriter::with_capacity(1 << 20, tmp)),
        })
    }

    /// [`Store::blob_writer`] for blobs of hundreds of MiB (layers being built): the
    /// digest is taken on a second thread ([`HashingWriter::offloaded`]).
    pub fn large_blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
        Ok(BlobWriter {
            store: self.clone(),
            inner: HashingWriter::offloaded(io::BufWriter::with_capacity(1 << 20, tmp)),
        })
    }

    /// Store `bytes`, returning their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        if !self.has_blob(&digest) {
            let mut w = self.blob_writer()?;
            w.write_all(bytes)?;
            w.commit(Some(&digest), None)?;
        }
        Ok(digest)
    }

    /// Stream `reader` into the store; with `expected`, refuse content that does not match.
    pub fn put_reader(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64), StoreError> {
        let mut w = self.blob_writer()?;
        io::copy(&mut reader, &mut w)?;
        w.commit(expected, expected_size)
    }

    /// Every named image: name to descriptor of its top manifest or index.
    pub fn images(&self) -> Result<Vec<(String, Descriptor)>, StoreError> {
        let index = self.read_index()?;
        Ok(index
            .manifests
            .into_iter()
            .filter_map(|d| {
                d.annotation(oci::ANNOTATION_REF_NAME)
                    .map(str::to_string)
                    .map(|n| (n, d))
            })
            .collect())
    }

    /// The descriptor of the image `name`.
    pub fn resolve(&self, name: &str) -> Result<Descriptor, StoreError> {
        self.images()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
            .ok_or_else(|| StoreError::ImageUnknown(name.to_string()))
    }

    /// Point `name` at `descriptor`, replacing what it named before.
    pub fn set_ref(&self, name: &str, descriptor: &Descriptor) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|d| d.annotation(oci::ANNOTATION_REF_NAME) != Some(name));
        let mut entry = descriptor.clone();
        entry
            .annotations
            .insert(oci::ANNOTATION_REF_NAME.to_string(), name.to_string());
        index.manifests.push(entry);
        index.manifests.sort_by(|a, b| {
            a.annotation(oci::ANNOTATION_REF_NAME)
                .cmp(&b.annotation(oci::ANNOTATION_REF_NAME))
        });
        write_atomic(&self.root.join("index.json"), &to_json(&index))?;
        Ok(())
    }

    /// Remove the name `name`; blobs stay until pruned. Returns whether it existed.
    pub fn remove_ref(&self, name: &str) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let before = index.manifests.len();
        index
            .manifests
            .retain(|d| d.annotation(oci::ANNOTATION_REF_NAME) != Some(name));
        let removed = index.manifests.len() != before;
        if removed {
            write_atomic(&self.root.join("index.json"), &to_json(&index))?;
        }
        Ok(removed)
    }

    /// Every blob reachable from `descriptor` (itself included), depth first.
    pub fn walk(&self, descriptor: &Descriptor) -> Result<Vec<Descriptor>, StoreError> {
        let mut out = Vec::new();
        let mut stack = vec![descriptor.clone()];
        let mut seen = std::collections::HashSet::new();
        while let Some(d) = stack.pop() {
            if !seen.insert(d.digest.clone()) {
                continue;
            }
            if oci::is_index(&d.media_type) || oci::is_manifest(&d.media_type) {
                let bytes = self.read_blob(&d.digest)?;
                let parsed: oci::AnyManifest =
                    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                        path: self.blob_path(&d.digest),
                        source,
                    })?;
                stack.extend(parsed.children().into_iter().rev().cloned());
            }
            out.push(d);
        }
        Ok(out)
    }

    /// Hold the store's exclusive lock until the guard is dropped.
    pub fn lock(&self) -> Result<File, StoreError> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))?;
        f.lock()?;
        Ok(f)
    }

    fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path, source })
    }
}

/// A blob being written; [`BlobWriter::commit`] verifies and publishes it.
pub struct BlobWriter {
    store: Store,
    inner: HashingWriter<io::BufWriter<tempfile::NamedTempFile>>,
}

impl BlobWriter {
    /// Verify against `expected` (if given), then move the blob into place.
    pub fn commit(
        self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64), StoreError> {
        let (digest, size, buffered) = self.inner.finish();
        if let Some(e) = expected
            && *e != digest
        {
            return Err(StoreError::DigestMismatch {
                expected: e.clone(),
                actual: digest,
            });
        }
        if let Some(s) = expected_size
            && s != size
        {
            return Err(StoreError::SizeMismatch {
                digest,
                expected: s,
                actual: size,
            });
        }
        let tmp = buffered
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        let target = self.store.blob_path(&digest);
        if !target.exists() {
            tmp.persist(&target).map_err(|e| e.error)?;
        }
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Serialise to pretty JSON with a trailing newline.
pub fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(value).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Write `bytes` to `path` by writing a sibling temp file, syncing it and renaming it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_before_they_appear() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = Digest::of(b"abc");
        let err = store
            .put_reader(&b"abd"[..], Some(&good), None)
            .unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!store.has_blob(&good));
        assert!(!store.has_blob(&Digest::of(b"abd")));
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "temp file left behind"
        );
        let (d, n) = store.put_reader(&b"abc"[..], Some(&good), Some(3)).unwrap();
        assert_eq!((d, n), (good.clone(), 3));
        assert_eq!(store.read_blob(&good).unwrap(), b"abc");
    }

    #[test]
    fn refs_are_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d1 = store.put_bytes(b"{}").unwrap();
        let desc = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, d1, 2);
        store.set_ref("a:1", &desc).unwrap();
        store.set_ref("a:1", &desc).unwrap();
        store.set_ref("b:1", &desc).unwrap();
        assert_eq!(store.images().unwrap().len(), 2);
        assert!(store.remove_ref("a:1").unwrap());
        assert!(!store.remove_ref("a:1").unwrap());
        assert!(matches!(
            store.resolve("a:1"),
            Err(StoreError::ImageUnknown(_))
        ));
        assert!(store.resolve("b:1").is_ok());
    }
}
