//! Cluster images: OCI types, the local store, and building images from a Kubefile.
//!
//! A cluster image is an OCI image index (see `docs/image-format.md`):
//! 1. `manifests[0]` is the cluster **rootfs** image: an OCI image manifest whose
//!    config carries airlock's metadata ([`oci::ClusterConfig`]) and whose layers are
//!    deterministic tar+zstd layers;
//! 2. every other entry is a **container image** the cluster needs, stored byte for
//!    byte as its registry served it, annotated with its original reference.

pub mod build;
pub mod cluster;
pub mod discover;
pub mod docker_archive;
pub mod download;
pub mod gc;
pub mod layer;
pub mod layout;
pub mod oci;
pub mod store;
pub mod tree;

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::spec::reference::Reference;
use oci::{Descriptor, Platform};

/// Where a blob's bytes are: a region of a file. Blobs in the store are whole files;
/// blobs in a bundle are regions of the bundle, served without copying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The file holding the blob.
    pub path: PathBuf,
    /// Where the blob starts in the file.
    pub offset: u64,
    /// The blob's size.
    pub size: u64,
}

impl BlobLocation {
    /// The whole of the regular file at `path`, or `None` when there is none.
    pub fn whole_file(path: PathBuf) -> io::Result<Option<Self>> {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(Self {
                path,
                offset: 0,
                size: m.len(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Anything that holds named images and their blobs: the local [`store::Store`], a
/// bundle file, or an unpacked install on a node. The registry serves any of them.
pub trait BlobSource: Send + Sync + 'static {
    /// Every named top-level image: name (as stored) and the descriptor of its index or manifest.
    fn images(&self) -> io::Result<Vec<(String, Descriptor)>>;
    /// Where the blob `digest` is, or `None` when the source does not have it.
    fn locate(&self, digest: &Digest) -> io::Result<Option<BlobLocation>>;
    /// A value that changes whenever [`BlobSource::images`] may answer differently,
    /// cheap enough to take on every request (one `stat` at most); `None` when the
    /// source cannot tell, and nothing derived from its images may be cached.
    fn images_version(&self) -> io::Result<Option<ImagesVersion>> {
        Ok(None)
    }
}

/// See [`BlobSource::images_version`].
pub type ImagesVersion = [u64; 4];

impl BlobSource for store::Store {
    fn images(&self) -> io::Result<Vec<(String, Descriptor)>> {
        store::Store::images(self).map_err(io::Error::other)
    }

    /// `index.json` is only ever replaced (temp file, then rename): its inode, size and
    /// times change with every write.
    fn images_version(&self) -> io::Result<Option<ImagesVersion>> {
        use std::os::unix::fs::MetadataExt as _;
        match std::fs::metadata(self.root().join("index.json")) {
            Ok(m) => Ok(Some([
                m.ino(),
                m.size(),
                m.mtime().cast_unsigned(),
                (m.mtime_nsec().cast_unsigned() << 32) ^ m.ctime_nsec().cast_unsigned(),
            ])),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some([0; 4])),
            Err(e) => Err(e),
        }
    }

    fn locate(&self, digest: &Digest) -> io::Result<Option<BlobLocation>> {
        BlobLocation::whole_file(self.blob_path(digest))
    }
}

/// Something that can copy a container image into the store: a registry, a local
/// OCI layout, an archive. Used by `airlock build` to gather the images a cluster needs.
#[async_trait::async_trait]
pub trait ImageFetcher: Send + Sync {
    /// Copy `reference` into `store` byte for byte (digests preserved): for an index,
    /// the index itself plus the manifests (and their blobs) of `platforms` only.
    /// Returns the descriptor of the top-level manifest or index as stored.
    async fn fetch(
        &self,
        store: &store::Store,
        reference: &Reference,
        platforms: &[Platform],
    ) -> anyhow::Result<Descriptor>;
}

/// The largest manifest or config [`read_blob`] reads into memory.
pub const MAX_METADATA_BLOB: u64 = 16 << 20;

/// Read a small blob (manifest, index, config) from any source, verifying its digest.
pub fn read_blob(source: &dyn BlobSource, digest: &Digest) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let loc = source.locate(digest)?.ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("blob {digest} is missing"))
    })?;
    if loc.size > MAX_METADATA_BLOB {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "blob {digest} is {} bytes, too large for a manifest or config",
                loc.size
            ),
        ));
    }
    let mut f = std::fs::File::open(&loc.path)?;
    f.seek(SeekFrom::Start(loc.offset))?;
    let mut buf = Vec::with_capacity(usize::try_from(loc.size).unwrap_or(0));
    f.take(loc.size).read_to_end(&mut buf)?;
    if Digest::of(&buf) != *digest {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob {digest} does not match its digest"),
        ));
    }
    Ok(buf)
}
