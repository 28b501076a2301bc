//! What a bundle holds, for `FILE.run info`.
//!
//! 1. The index gives the image name, top digest, sizes, blob count, runner and signer;
//!    the SBOM blob gives its component list.
//! 2. The top-level index lists the rootfs and container images ([`sbom::contents`]).
//! 3. The rootfs manifest's config gives the runtime, its version and the image list
//!    ([`RootfsConfig`]); an image without one simply has no such fields.

use super::format::Base;
use super::reader::Bundle;
use super::sbom::{self, ImageEntry};
use crate::digest::Digest;
use crate::image::oci::{self, AnyManifest, RootfsConfig};

/// Everything `info` shows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The image's name.
    pub image: String,
    /// Its top-level digest.
    pub digest: Digest,
    /// The bundle file's size.
    pub file_size: u64,
    /// Sum of the sizes of the blobs in the payload.
    pub payload_size: u64,
    /// Number of blobs the image has.
    pub blobs: usize,
    /// `airlock <version>` that wrote it.
    pub created_by: String,
    /// The runner's size.
    pub runner_size: u64,
    /// The runner's SHA-256.
    pub runner_digest: Digest,
    /// The runtime (`kubernetes`, ...), when the rootfs config says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// The container runtime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_runtime: Option<String>,
    /// The images the index carries.
    pub images: Vec<ImageEntry>,
    /// The container images the rootfs config lists.
    pub image_list: Vec<String>,
    /// The signer's fingerprint, when signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The SBOM blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Digest>,
    /// The SBOM's components (`type name`: the runner binary and every image), when
    /// it is in this file and parses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sbom_components: Vec<String>,
    /// The Clusterfile template blob, when the bundle carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusterfile: Option<Digest>,
    /// The base a delta needs (its image and digest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_of: Option<Base>,
}

/// Summarise `bundle`: reads the index and, when present, the top index, the rootfs
/// manifest and its config (small blobs).
pub fn summarise(bundle: &Bundle) -> Summary {
    let index = bundle.index();
    let top = bundle.image_descriptor();
    let top_bytes = bundle
        .read_blob(&top.digest)
        .ok()
        .flatten()
        .unwrap_or_default();
    let images = sbom::contents(&index.image.name, top, &top_bytes);
    let config = rootfs_config(bundle, &images);
    Summary {
        image: index.image.name.clone(),
        digest: top.digest.clone(),
        file_size: bundle.size(),
        payload_size: index
            .blobs
            .iter()
            .filter(|b| b.offset.is_some())
            .map(|b| b.size)
            .sum(),
        blobs: index.blobs.len(),
        created_by: index.created_by.clone(),
        runner_size: index.runner.size,
        runner_digest: index.runner.digest.clone(),
        runtime: config.as_ref().map(|c| c.airlock.runtime.clone()),
        runtime_version: config
            .as_ref()
            .and_then(|c| c.airlock.runtime_version.clone()),
        container_runtime: config
            .as_ref()
            .map(|c| c.airlock.container_runtime.clone())
            .filter(|c| !c.is_empty()),
        image_list: config.map(|c| c.airlock.images).unwrap_or_default(),
        images,
        signer: index.signer.as_ref().map(|s| s.fingerprint.clone()),
        sbom_components: index
            .sbom
            .as_ref()
            .map(|d| sbom_components(bundle, d))
            .unwrap_or_default(),
        sbom: index.sbom.clone(),
        clusterfile: index.clusterfile.clone(),
        delta_of: index.base.clone(),
    }
}

/// `type name@version` of each component of the SBOM blob `digest`.
fn sbom_components(bundle: &Bundle, digest: &Digest) -> Vec<String> {
    let Some(Ok(sbom)) = bundle
        .read_blob(digest)
        .ok()
        .flatten()
        .map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes))
    else {
        return Vec::new();
    };
    let text = |c: &serde_json::Value, key: &str| c[key].as_str().unwrap_or("").to_string();
    sbom["components"]
        .as_array()
        .map(|components| {
            components
                .iter()
                .map(|c| {
                    let version = text(c, "version");
                    let name = text(c, "name");
                    if version.is_empty() {
                        format!("{} {name}", text(c, "type"))
                    } else {
                        format!("{} {name}@{version}", text(c, "type"))
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The rootfs image's config, when the bundle has it and it parses.
fn rootfs_config(bundle: &Bundle, images: &[ImageEntry]) -> Option<RootfsConfig> {
    let rootfs = images.iter().find(|i| i.role == oci::ROLE_ROOTFS)?;
    let manifest: AnyManifest =
        serde_json::from_slice(&bundle.read_blob(&rootfs.digest).ok()??).ok()?;
    let config = manifest.config?;
    serde_json::from_slice(&bundle.read_blob(&config.digest).ok()??).ok()
}
