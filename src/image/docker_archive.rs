//! `docker-archive:FILE`: container images from a `docker save` tarball (or one
//! written by `skopeo copy ... docker-archive:FILE`), turned into an OCI layout that
//! [`crate::image::layout::LayoutFetcher`] reads like any other.
//!
//! 1. The tarball is unpacked into `DEST/archive` with the checks of
//!    [`unpack_layer`] (no absolute paths, no `..`, no links leading out).
//! 2. `manifest.json` lists each image: its config file, its layer files in order and
//!    its `RepoTags`.
//! 3. Every config and layer file becomes a blob of `DEST/blobs/sha256` under the
//!    SHA-256 of its bytes (moved, not copied). Layer digests are those of the files
//!    as the archive holds them, so an uncompressed layer keeps digest = diff id;
//!    each uncompressed layer is checked against the config's `rootfs.diff_ids`.
//! 4. Each image gets a Docker v2 manifest: compact JSON with the fields in the order
//!    registries write them, layer media types from the content's first bytes
//!    (tar, tar+gzip, tar+zstd). The same archive always gives the same manifest
//!    digest; it differs from `skopeo inspect --raw docker-archive:FILE` only where
//!    skopeo calls an uncompressed layer `tar.gzip`.
//! 5. `DEST/index.json` names the manifest once per repo tag (normalised,
//!    `nginx:1.25` → `docker.io/library/nginx:1.25`), with the config's platform.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::layer::{self, unpack_layer};
use crate::image::oci::{self, Descriptor, ImageIndex, Platform};
use crate::image::store;
use crate::spec::reference::Reference;

/// Docker v2 image config media type.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker v2 uncompressed layer.
pub const MEDIA_TYPE_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker v2 gzip layer.
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker v2 zstd layer (Docker 23 and later).
pub const MEDIA_TYPE_DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";

/// Why a docker archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DockerArchiveError {
    /// Reading the archive or writing the layout failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The archive could not be unpacked safely.
    #[error("{archive}: {source}")]
    Unpack {
        /// The archive.
        archive: PathBuf,
        /// The cause.
        source: layer::LayerError,
    },
    /// The archive is not what `docker save` writes.
    #[error(
        "{archive}: {reason}; write it with `docker save -o FILE IMAGE` or `skopeo copy ... docker-archive:FILE:IMAGE`"
    )]
    Invalid {
        /// The archive.
        archive: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One entry of `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The parts of a Docker image config this module reads.
#[derive(Debug, Deserialize)]
struct SavedConfig {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    rootfs: Option<SavedRootfs>,
}

#[derive(Debug, Deserialize)]
struct SavedRootfs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

/// A descriptor in a Docker v2 manifest, fields in registry order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct V2Descriptor {
    media_type: &'static str,
    size: u64,
    digest: Digest,
}

/// A Docker v2 manifest, fields in registry order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct V2Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: V2Descriptor,
    layers: Vec<V2Descriptor>,
}

/// Turn the docker archive `archive` into an OCI layout at `dest` (an empty
/// directory). Returns the names it holds.
pub fn convert(archive: &Path, dest: &Path) -> Result<Vec<String>, DockerArchiveError> {
    let invalid = |reason: String| DockerArchiveError::Invalid {
        archive: archive.to_path_buf(),
        reason,
    };
    let unpacked = dest.join("archive");
    let blobs = dest.join("blobs/sha256");
    for dir in [&unpacked, &blobs] {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
    }
    let file = fs::File::open(archive).map_err(io_at(archive))?;
    unpack_layer(
        &Digest::of(b""),
        io::BufReader::with_capacity(1 << 20, file),
        &unpacked,
    )
    .map_err(|source| DockerArchiveError::Unpack {
        archive: archive.to_path_buf(),
        source,
    })?;
    let manifest_path = unpacked.join("manifest.json");
    if !manifest_path.is_file() {
        return Err(invalid(
            "it has no manifest.json, so it is not a docker archive".to_string(),
        ));
    }
    let saved: Vec<SavedImage> =
        serde_json::from_slice(&fs::read(&manifest_path).map_err(io_at(&manifest_path))?)
            .map_err(|e| invalid(format!("manifest.json: {e}")))?;

    let mut moved = Blobs {
        root: &unpacked,
        blobs: &blobs,
        by_path: BTreeMap::new(),
    };
    let mut entries = Vec::new();
    let mut names = Vec::new();
    for (i, image) in saved.iter().enumerate() {
        let what = |field: &str| format!("manifest.json entry {i}: {field}");
        let config = moved
            .take(&image.config)
            .map_err(|e| e.described(archive, &what("Config")))?;
        let config_path = blobs.join(config.digest.hex());
        let parsed: SavedConfig =
            serde_json::from_slice(&fs::read(&config_path).map_err(io_at(&config_path))?)
                .map_err(|e| invalid(format!("{}: {e}", what("Config"))))?;
        let diff_ids = parsed
            .rootfs
            .as_ref()
            .map(|r| &r.diff_ids[..])
            .unwrap_or(&[]);
        if diff_ids.len() != image.layers.len() {
            return Err(invalid(format!(
                "{} lists {} layers but its config has {} diff ids",
                what("Layers"),
                image.layers.len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (n, (path, diff_id)) in image.layers.iter().zip(diff_ids).enumerate() {
            let blob = moved
                .take(path)
                .map_err(|e| e.described(archive, &what(&format!("Layers[{n}]"))))?;
            let media_type = layer_media_type(&blobs.join(blob.digest.hex()))
                .map_err(io_at(&blobs.join(blob.digest.hex())))?;
            if media_type == MEDIA_TYPE_DOCKER_LAYER_TAR && blob.digest != *diff_id {
                return Err(invalid(format!(
                    "layer {path} has digest {} but the config says {diff_id}; the archive is damaged",
                    blob.digest
                )));
            }
            layers.push(V2Descriptor {
                media_type,
                size: blob.size,
                digest: blob.digest,
            });
        }
        let manifest = V2Manifest {
            schema_version: 2,
            media_type: oci::MEDIA_TYPE_DOCKER_MANIFEST,
            config: V2Descriptor {
                media_type: MEDIA_TYPE_DOCKER_CONFIG,
                size: config.size,
                digest: config.digest,
            },
            layers,
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|e| invalid(e.to_string()))?;
        let digest = Digest::of(&bytes);
        let path = blobs.join(digest.hex());
        fs::write(&path, &bytes).map_err(io_at(&path))?;
        let mut entry =
            Descriptor::new(oci::MEDIA_TYPE_DOCKER_MANIFEST, digest, bytes.len() as u64);
        entry.platform = match (parsed.os, parsed.architecture) {
            (Some(os), Some(architecture)) => Some(Platform {
                architecture,
                os,
                variant: parsed.variant,
            }),
            _ => None,
        };
        for tag in image.repo_tags.iter().flatten() {
            let name = tag
                .parse::<Reference>()
                .map_err(|e| invalid(format!("{}: {e}", what("RepoTags"))))?
                .to_string();
            let mut named = entry.clone();
            named
                .annotations
                .insert(oci::ANNOTATION_REF_NAME.to_string(), name.clone());
            entries.push(named);
            names.push(name);
        }
    }
    if entries.is_empty() {
        return Err(invalid(
            "no image in it has a name (RepoTags); save it with a tag".to_string(),
        ));
    }
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_INDEX.to_string()),
        manifests: entries,
        annotations: BTreeMap::new(),
    };
    let index_path = dest.join("index.json");
    fs::write(&index_path, store::to_json(&index)).map_err(io_at(&index_path))?;
    let layout = dest.join("oci-layout");
    fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_at(&layout))?;
    Ok(names)
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DockerArchiveError + '_ {
    move |source| DockerArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The media type of a layer file, from its first bytes.
fn layer_media_type(path: &Path) -> io::Result<&'static str> {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path)?;
    let n = f.read(&mut magic)?;
    Ok(if magic[..n].starts_with(&[0x1f, 0x8b]) {
        MEDIA_TYPE_DOCKER_LAYER_GZIP
    } else if magic[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        MEDIA_TYPE_DOCKER_LAYER_ZSTD
    } else {
        MEDIA_TYPE_DOCKER_LAYER_TAR
    })
}

/// A blob moved out of the unpacked archive.
#[derive(Clone, Debug)]
struct Blob {
    digest: Digest,
    size: u64,
}

/// Why a file named by `manifest.json` could not become a blob.
enum TakeError {
    Outside,
    Io(io::Error),
}

impl TakeError {
    fn described(self, archive: &Path, field: &str) -> DockerArchiveError {
        match self {
            Self::Outside => DockerArchiveError::Invalid {
                archive: archive.to_path_buf(),
                reason: format!("{field} names a file outside the archive"),
            },
            Self::Io(source) => DockerArchiveError::Io {
                path: archive.to_path_buf(),
                source: io::Error::new(source.kind(), format!("{field}: {source}")),
            },
        }
    }
}

/// Files of the unpacked archive moved into the blob directory, once each (images
/// share layers; old `docker save` links shared `layer.tar` files with symlinks).
struct Blobs<'a> {
    root: &'a Path,
    blobs: &'a Path,
    by_path: BTreeMap<PathBuf, Blob>,
}

impl Blobs<'_> {
    fn take(&mut self, name: &str) -> Result<Blob, TakeError> {
        let root = fs::canonicalize(self.root).map_err(TakeError::Io)?;
        let path = fs::canonicalize(self.root.join(name)).map_err(TakeError::Io)?;
        if !path.starts_with(&root) {
            return Err(TakeError::Outside);
        }
        if let Some(b) = self.by_path.get(&path) {
            return Ok(b.clone());
        }
        let file = fs::File::open(&path).map_err(TakeError::Io)?;
        let (digest, size) =
            crate::digest::digest_reader(io::BufReader::with_capacity(1 << 20, file))
                .map_err(TakeError::Io)?;
        fs::rename(&path, self.blobs.join(digest.hex())).map_err(TakeError::Io)?;
        let blob = Blob { digest, size };
        self.by_path.insert(path, blob.clone());
        Ok(blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o444);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A `docker save`-style archive: one uncompressed and one gzip layer, two tags.
    fn archive(dir: &Path, damaged: bool) -> PathBuf {
        let plain = tar_of(&[("etc/hello", b"hello\n")]);
        let inner = tar_of(&[("etc/bye", b"bye\n")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&inner).unwrap();
        let gz = gz.finish().unwrap();
        let first_id = if damaged {
            Digest::of(b"other")
        } else {
            Digest::of(&plain)
        };
        let config = format!(
            r#"{{"architecture":"arm64","os":"linux","variant":"v8","rootfs":{{"type":"layers","diff_ids":["{first_id}","{}"]}}}}"#,
            Digest::of(&inner)
        );
        let manifest = r#"[{"Config":"c.json","RepoTags":["nginx:1.25","example.com/web:2"],"Layers":["a/layer.tar","b.tar.gz"]}]"#;
        let path = dir.join("saved.tar");
        fs::write(
            &path,
            tar_of(&[
                ("manifest.json", manifest.as_bytes()),
                ("c.json", config.as_bytes()),
                ("a/layer.tar", &plain),
                ("b.tar.gz", &gz),
            ]),
        )
        .unwrap();
        path
    }

    #[test]
    fn docker_save_becomes_a_layout_with_the_same_layer_digests() {
        let dir = tempfile::tempdir().unwrap();
        let file = archive(dir.path(), false);
        let one = tempfile::tempdir().unwrap();
        let names = convert(&file, one.path()).unwrap();
        assert_eq!(names, ["docker.io/library/nginx:1.25", "example.com/web:2"]);
        let index: ImageIndex =
            serde_json::from_slice(&fs::read(one.path().join("index.json")).unwrap()).unwrap();
        let top = &index.manifests[0];
        assert_eq!(top.platform.as_ref().unwrap().to_string(), "linux/arm64/v8");
        let manifest: serde_json::Value = serde_json::from_slice(
            &fs::read(one.path().join("blobs/sha256").join(top.digest.hex())).unwrap(),
        )
        .unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers[0]["mediaType"], MEDIA_TYPE_DOCKER_LAYER_TAR);
        assert_eq!(layers[1]["mediaType"], MEDIA_TYPE_DOCKER_LAYER_GZIP);
        let plain = tar_of(&[("etc/hello", b"hello\n")]);
        assert_eq!(layers[0]["digest"], Digest::of(&plain).to_string());
        for l in layers {
            let d: Digest = l["digest"].as_str().unwrap().parse().unwrap();
            let bytes = fs::read(one.path().join("blobs/sha256").join(d.hex())).unwrap();
            assert_eq!(Digest::of(&bytes), d);
        }

        // Deterministic: the same archive converted again gives the same index.
        let two = tempfile::tempdir().unwrap();
        convert(&file, two.path()).unwrap();
        assert_eq!(
            fs::read(one.path().join("index.json")).unwrap(),
            fs::read(two.path().join("index.json")).unwrap()
        );
    }

    #[test]
    fn a_layer_that_is_not_its_diff_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = archive(dir.path(), true);
        let out = tempfile::tempdir().unwrap();
        let err = convert(&file, out.path()).unwrap_err().to_string();
        assert!(
            err.contains("a/layer.tar") && err.contains("damaged"),
            "{err}"
        );

        let not = dir.path().join("not.tar");
        fs::write(&not, tar_of(&[("index.json", b"{}")])).unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = convert(&not, out.path()).unwrap_err().to_string();
        assert!(err.contains("no manifest.json"), "{err}");
    }
}
