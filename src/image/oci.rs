//! OCI image-spec types, with the fields airlock reads and writes.
//!
//! Unknown fields are kept out of these types on purpose: manifests that came from
//! registries are stored and served as their original bytes, never re-serialised.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema 2 manifest list.
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 2 manifest.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A tar layer compressed with zstd.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// A tar layer compressed with gzip.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Annotation holding a reference name in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation on index entries: `rootfs` or `container-image`.
pub const ANNOTATION_ROLE: &str = "io.airlock.role";
/// Annotation on container-image entries: the original reference (`docker.io/library/nginx:1.25`).
pub const ANNOTATION_IMAGE_REF: &str = "io.airlock.image.ref";
/// Value of [`ANNOTATION_ROLE`] for the cluster rootfs manifest.
pub const ROLE_ROOTFS: &str = "rootfs";
/// Value of [`ANNOTATION_ROLE`] for a container image.
pub const ROLE_CONTAINER_IMAGE: &str = "container-image";

/// Whether `media_type` is an index or manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST
}

/// Whether `media_type` is a single-platform manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_MANIFEST || media_type == MEDIA_TYPE_DOCKER_MANIFEST
}

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform, on index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor without platform or annotations.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The annotation `key`, if present.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

/// An OS/architecture pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `linux`.
    pub os: String,
    /// `v8` etc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/<arch>`.
    pub fn linux(architecture: &str) -> Self {
        Self {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: None,
        }
    }

    /// The platform of the machine airlock was built for.
    pub fn host() -> Self {
        Self::linux(go_arch(std::env::consts::ARCH))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Rust's architecture name as OCI (Go) spells it.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An image index (or Docker manifest list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Entries.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Just enough of any manifest to route it: its media type and what it points to.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnyManifest {
    /// Media type field, if the document has one.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Index entries.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Manifest config.
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// Manifest layers.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

impl AnyManifest {
    /// The media type, from the field or inferred from the shape.
    pub fn kind(&self) -> &str {
        match &self.media_type {
            Some(m) => m,
            None if self.config.is_some() => MEDIA_TYPE_MANIFEST,
            None => MEDIA_TYPE_INDEX,
        }
    }

    /// Every descriptor this document references directly.
    pub fn children(&self) -> Vec<&Descriptor> {
        self.manifests
            .iter()
            .chain(self.config.iter())
            .chain(self.layers.iter())
            .collect()
    }
}

/// airlock's metadata in the rootfs image config, under the key `airlock`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    /// `kubernetes`, `k0s` or `generic`.
    #[serde(default)]
    pub runtime: String,
    /// Version of the runtime, if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// `containerd` or `docker`.
    #[serde(default)]
    pub container_runtime: String,
    /// Env defaults (`ENV`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Labels (`LABEL`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Launch commands (`CMDS`), run in the rootfs on the first master.
    #[serde(default)]
    pub cmds: Vec<String>,
    /// Apps to launch (`LAUNCH`).
    #[serde(default)]
    pub launch: Vec<String>,
    /// Every container image the cluster needs, normalised.
    #[serde(default)]
    pub images: Vec<String>,
    /// Platforms the image supports.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Applications (`APP`, `CNI`, `CSI`), parent's first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppConfig>,
    /// Kubernetes versions the image works with (`KUBEVERSION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
    /// `MAINTAINER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintainer: Option<String>,
    /// Minimum resources per node, if the image declares them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resources: Option<MinResources>,
}

/// An application of the cluster image, from `APP`/`CNI`/`CSI` and its `APPCMDS`/`APPENV`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppConfig {
    /// Its name.
    pub name: String,
    /// `app`, `cni` or `csi`.
    pub role: String,
    /// `helm`, `kube` (YAML manifests), `shell` or `untyped`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its files in the rootfs (`application/apps/<name>/...`).
    pub files: Vec<String>,
    /// Commands that launch it (`APPCMDS`); empty means the default for its type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmds: Vec<String>,
    /// Its variables (`APPENV`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// Minimum resources of each node, declared with labels `io.airlock.min-cpus` and
/// `io.airlock.min-memory-mib`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MinResources {
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
}

/// The rootfs image config: a standard OCI config plus [`ClusterConfig`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsConfig {
    /// OCI architecture.
    pub architecture: String,
    /// OCI os.
    pub os: String,
    /// OCI rootfs: the uncompressed layer digests.
    pub rootfs: RootfsDiffIds,
    /// airlock's metadata.
    pub airlock: ClusterConfig,
}

/// The `rootfs` field of an OCI config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsDiffIds {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digest of each layer's uncompressed tar.
    pub diff_ids: Vec<Digest>,
}
