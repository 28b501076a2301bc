//! Reading a cluster image back from any [`BlobSource`] (the store, a bundle, a node).
//!
//! 1. [`ClusterImage::load`] reads the top-level index named `name`, then each
//!    `rootfs` entry's manifest and config ([`RootfsConfig`]), and lists the
//!    container-image entries with their original references.
//! 2. [`unpack_rootfs`] applies a rootfs image's layers in order onto a directory,
//!    refusing entries that would escape it (see [`crate::image::layer`]).
//! 3. [`reachable`] lists every blob an image needs, for `save`, `prune` and copies;
//!    manifests of platforms that were not fetched are skipped, as an index copied
//!    for some platforms only legitimately lacks them.

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::digest::Digest;
use crate::image::BlobSource;
use crate::image::layer::{self, LayerError};
use crate::image::oci::{self, Descriptor, ImageIndex, ImageManifest, Platform, RootfsConfig};
use crate::spec::reference::Reference;

/// Errors reading a cluster image.
#[derive(Debug, thiserror::Error)]
pub enum ClusterImageError {
    /// Reading a blob failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// No image of that name.
    #[error("image {0:?} is not in the store (see `airlock images`)")]
    Unknown(String),
    /// A blob the image refers to is missing.
    #[error("blob {0} is missing; the image is incomplete (pull or load it again)")]
    Missing(Digest),
    /// A manifest or config is not what a cluster image holds.
    #[error("{what} {digest}: {reason}")]
    Invalid {
        /// Which document.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// Unpacking a layer failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
}

/// A rootfs image of one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsImage {
    /// Its entry in the top-level index.
    pub descriptor: Descriptor,
    /// Its manifest.
    pub manifest: ImageManifest,
    /// Its config, with airlock's metadata.
    pub config: RootfsConfig,
}

/// A cluster image as stored: index, rootfs images, container images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterImage {
    /// The name it is stored under.
    pub name: String,
    /// The descriptor of the index.
    pub descriptor: Descriptor,
    /// The index.
    pub index: ImageIndex,
    /// Rootfs images, one per platform, `manifests[0]` first.
    pub rootfs: Vec<RootfsImage>,
    /// Container images: original reference and the descriptor as fetched.
    pub container_images: Vec<(Reference, Descriptor)>,
}

/// Open a blob of `source` as a reader of exactly its bytes.
pub fn open_blob(source: &dyn BlobSource, digest: &Digest) -> Result<impl Read, ClusterImageError> {
    let loc = source
        .locate(digest)?
        .ok_or_else(|| ClusterImageError::Missing(digest.clone()))?;
    let mut f = std::fs::File::open(&loc.path)?;
    f.seek(SeekFrom::Start(loc.offset))?;
    Ok(f.take(loc.size))
}

/// Read a whole (small) blob of `source`, verified against its digest.
pub fn read_blob(source: &dyn BlobSource, digest: &Digest) -> Result<Vec<u8>, ClusterImageError> {
    Ok(super::read_blob(source, digest)?)
}

fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    digest: &Digest,
) -> Result<T, ClusterImageError> {
    serde_json::from_slice(bytes).map_err(|e| ClusterImageError::Invalid {
        what,
        digest: digest.clone(),
        reason: e.to_string(),
    })
}

/// The stored name for what a user typed: the name itself if stored, else its
/// normalised reference (`demo:v1` → `docker.io/library/demo:v1`).
pub fn resolve_name(source: &dyn BlobSource, input: &str) -> Result<String, ClusterImageError> {
    let images = source.images()?;
    if images.iter().any(|(n, _)| n == input) {
        return Ok(input.to_string());
    }
    if let Ok(r) = input.parse::<Reference>() {
        let normal = r.to_string();
        if images.iter().any(|(n, _)| *n == normal) {
            return Ok(normal);
        }
    }
    Err(ClusterImageError::Unknown(input.to_string()))
}

impl ClusterImage {
    /// Read the image stored as `name` (exactly; see [`resolve_name`]).
    pub fn load(source: &dyn BlobSource, name: &str) -> Result<Self, ClusterImageError> {
        let descriptor = source
            .images()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
            .ok_or_else(|| ClusterImageError::Unknown(name.to_string()))?;
        let index: ImageIndex = parse(
            &read_blob(source, &descriptor.digest)?,
            "index",
            &descriptor.digest,
        )?;
        let mut rootfs = Vec::new();
        let mut container_images = Vec::new();
        for entry in &index.manifests {
            match entry.annotation(oci::ANNOTATION_ROLE) {
                Some(oci::ROLE_ROOTFS) => {
                    let manifest: ImageManifest = parse(
                        &read_blob(source, &entry.digest)?,
                        "manifest",
                        &entry.digest,
                    )?;
                    let config: RootfsConfig = parse(
                        &read_blob(source, &manifest.config.digest)?,
                        "rootfs config",
                        &manifest.config.digest,
                    )?;
                    rootfs.push(RootfsImage {
                        descriptor: entry.clone(),
                        manifest,
                        config,
                    });
                }
                Some(oci::ROLE_CONTAINER_IMAGE) => {
                    let text = entry
                        .annotation(oci::ANNOTATION_IMAGE_REF)
                        .unwrap_or_default();
                    let reference =
                        text.parse::<Reference>()
                            .map_err(|e| ClusterImageError::Invalid {
                                what: "index entry",
                                digest: entry.digest.clone(),
                                reason: format!(
                                    "bad {} annotation: {e}",
                                    oci::ANNOTATION_IMAGE_REF
                                ),
                            })?;
                    let mut d = entry.clone();
                    d.annotations.clear();
                    container_images.push((reference, d));
                }
                _ => {}
            }
        }
        if rootfs.is_empty() {
            return Err(ClusterImageError::Invalid {
                what: "index",
                digest: descriptor.digest.clone(),
                reason: format!(
                    "no entry annotated {}={}; this is not a cluster image",
                    oci::ANNOTATION_ROLE,
                    oci::ROLE_ROOTFS
                ),
            });
        }
        Ok(Self {
            name: name.to_string(),
            descriptor,
            index,
            rootfs,
            container_images,
        })
    }

    /// The first rootfs image (`manifests[0]`).
    pub fn primary(&self) -> &RootfsImage {
        &self.rootfs[0]
    }

    /// The rootfs image for `platform`, if the image has one.
    pub fn rootfs_for(&self, platform: &Platform) -> Option<&RootfsImage> {
        self.rootfs.iter().find(|r| {
            r.descriptor
                .platform
                .as_ref()
                .is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
        })
    }
}

/// Apply the layers of `rootfs` in order onto `dest` (created if missing).
pub fn unpack_rootfs(
    source: &dyn BlobSource,
    rootfs: &RootfsImage,
    dest: &Path,
) -> Result<(), ClusterImageError> {
    fs_err::create_dir_all(dest)?;
    for l in &rootfs.manifest.layers {
        let blob = open_blob(source, &l.digest)?;
        let tar = layer::decompress(&l.media_type, &l.digest, io::BufReader::new(blob))?;
        layer::unpack_layer(&l.digest, tar, dest)?;
    }
    Ok(())
}

/// Every blob reachable from `top` (itself included), each once, parents before
/// children. Manifests missing under an index are skipped (platforms not fetched);
/// any other missing blob is an error.
pub fn reachable(
    source: &dyn BlobSource,
    top: &Descriptor,
) -> Result<Vec<Descriptor>, ClusterImageError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(top.clone(), false)];
    while let Some((d, optional)) = stack.pop() {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        if source.locate(&d.digest)?.is_none() {
            if optional {
                continue;
            }
            return Err(ClusterImageError::Missing(d.digest));
        }
        if oci::is_index(&d.media_type) || oci::is_manifest(&d.media_type) {
            let doc: oci::AnyManifest =
                parse(&read_blob(source, &d.digest)?, "manifest", &d.digest)?;
            let is_index = oci::is_index(doc.kind());
            for child in doc.children().into_iter().rev() {
                let child_optional = is_index
                    && (oci::is_manifest(&child.media_type) || oci::is_index(&child.media_type))
                    && child.annotation(oci::ANNOTATION_ROLE).is_none();
                stack.push((child.clone(), child_optional));
            }
        }
        out.push(d);
    }
    Ok(out)
}
