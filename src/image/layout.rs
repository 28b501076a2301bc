//! OCI image layouts and archives outside the store: a source of container images
//! for builds, and the format of `airlock save` / `airlock load`.
//!
//! 1. [`LayoutDir`] reads any OCI layout directory (`oci-layout`, `index.json`,
//!    `blobs/`) as a [`BlobSource`], without writing to it.
//! 2. [`LayoutFetcher`] implements [`ImageFetcher`] over layouts (`oci:DIR`), OCI
//!    archives (`oci-archive:FILE.tar`, unpacked once into a temp dir) and docker
//!    archives (`docker-archive:FILE.tar`, turned into a layout once by
//!    [`docker_archive::convert`]): a reference matches an entry whose
//!    `org.opencontainers.image.ref.name` normalises to it.
//!    Blobs are copied byte for byte and verified against their digests.
//! 3. [`save`] writes images as a deterministic OCI archive that `skopeo copy
//!    oci-archive:FILE.tar ...` reads; [`load`] verifies every blob of an archive into
//!    the store, then names its images.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fs_err as fs;

use crate::digest::Digest;
use crate::image::cluster::{self, ClusterImageError, open_blob};
use crate::image::docker_archive;
use crate::image::oci::{self, Descriptor, ImageIndex, Platform};
use crate::image::store::{self, Store, StoreError};
use crate::image::{BlobLocation, BlobSource, ImageFetcher};
use crate::spec::reference::Reference;

/// An OCI layout directory, read-only.
#[derive(Clone, Debug)]
pub struct LayoutDir {
    root: PathBuf,
}

impl LayoutDir {
    /// Open the layout at `root`; it must have an `index.json`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        if !root.join("index.json").is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} is not an OCI layout (no index.json); create one with `skopeo copy ... oci:DIR:NAME`",
                    root.display()
                ),
            ));
        }
        Ok(Self { root })
    }

    /// The index of the layout.
    pub fn index(&self) -> io::Result<ImageIndex> {
        let path = self.root.join("index.json");
        serde_json::from_slice(&fs::read(&path)?).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }
}

impl BlobSource for LayoutDir {
    fn images(&self) -> io::Result<Vec<(String, Descriptor)>> {
        Ok(self
            .index()?
            .manifests
            .into_iter()
            .filter_map(|d| {
                d.annotation(oci::ANNOTATION_REF_NAME)
                    .map(str::to_string)
                    .map(|n| (n, d))
            })
            .collect())
    }

    fn locate(&self, digest: &Digest) -> io::Result<Option<BlobLocation>> {
        BlobLocation::whole_file(
            self.root
                .join("blobs")
                .join(digest.algorithm())
                .join(digest.hex()),
        )
    }
}

/// Where container images can come from besides registries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalSource {
    /// `oci:DIR`: an OCI layout directory.
    Layout(PathBuf),
    /// `oci-archive:FILE`: a tar of an OCI layout.
    Archive(PathBuf),
    /// `docker-archive:FILE`: a `docker save` tarball.
    DockerArchive(PathBuf),
}

impl std::str::FromStr for LocalSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("oci-archive:") {
            Ok(Self::Archive(PathBuf::from(p)))
        } else if let Some(p) = s.strip_prefix("docker-archive:") {
            Ok(Self::DockerArchive(PathBuf::from(p)))
        } else if let Some(p) = s.strip_prefix("oci:") {
            Ok(Self::Layout(PathBuf::from(p)))
        } else {
            Err(format!(
                "{s:?} is not an image source; write oci:DIR (an OCI layout), oci-archive:FILE.tar or docker-archive:FILE.tar (docker save)"
            ))
        }
    }
}

/// Fetches container images from OCI layouts and archives on this machine.
pub struct LayoutFetcher {
    layouts: Vec<LayoutDir>,
    _unpacked: Vec<tempfile::TempDir>,
}

impl LayoutFetcher {
    /// Open every source; archives are unpacked into temp dirs kept for the fetcher's life.
    pub fn open(sources: &[LocalSource]) -> anyhow::Result<Self> {
        let mut layouts = Vec::new();
        let mut unpacked = Vec::new();
        for s in sources {
            match s {
                LocalSource::Layout(dir) => layouts.push(LayoutDir::open(dir)?),
                LocalSource::Archive(file) => {
                    let dir = tempfile::tempdir()?;
                    extract_archive(file, dir.path())
                        .with_context(|| format!("reading OCI archive {}", file.display()))?;
                    layouts.push(LayoutDir::open(dir.path())?);
                    unpacked.push(dir);
                }
                LocalSource::DockerArchive(file) => {
                    let dir = tempfile::tempdir()?;
                    docker_archive::convert(file, dir.path())?;
                    layouts.push(LayoutDir::open(dir.path())?);
                    unpacked.push(dir);
                }
            }
        }
        Ok(Self {
            layouts,
            _unpacked: unpacked,
        })
    }

    /// The layout and entry that hold `reference`, if any.
    /// The layout holding `reference` and its descriptor there, if any.
    pub fn find(&self, reference: &Reference) -> io::Result<Option<(&LayoutDir, Descriptor)>> {
        for layout in &self.layouts {
            for (name, d) in layout.images()? {
                let matches = name.parse::<Reference>().is_ok_and(|r| {
                    r.name() == reference.name() && tag_or_digest_match(&r, reference, &d)
                });
                if matches {
                    return Ok(Some((layout, d)));
                }
            }
        }
        Ok(None)
    }
}

fn tag_or_digest_match(stored: &Reference, wanted: &Reference, d: &Descriptor) -> bool {
    match (&wanted.digest, &wanted.tag) {
        (Some(digest), _) => *digest == d.digest,
        (None, tag) => stored.tag == *tag,
    }
}

fn platform_matches(p: Option<&Platform>, wanted: &[Platform]) -> bool {
    match p {
        None => true,
        Some(p) => wanted.iter().any(|w| {
            w.os == p.os
                && w.architecture == p.architecture
                && (w.variant.is_none() || w.variant == p.variant)
        }),
    }
}

/// Copy `top` and what it needs from `source` into `store`, verifying digests. An
/// index keeps all its entries but only the manifests of `platforms` are copied.
pub fn copy_image(
    source: &dyn BlobSource,
    store: &Store,
    top: &Descriptor,
    platforms: &[Platform],
) -> Result<(), ClusterImageError> {
    let mut stack = vec![top.clone()];
    while let Some(d) = stack.pop() {
        if !store.has_blob(&d.digest) {
            let reader = open_blob(source, &d.digest)?;
            store
                .put_reader(reader, Some(&d.digest), Some(d.size))
                .map_err(|e| match e {
                    StoreError::Io(io) => ClusterImageError::Io(io),
                    other => ClusterImageError::Io(io::Error::other(other)),
                })?;
        }
        if oci::is_index(&d.media_type) || oci::is_manifest(&d.media_type) {
            let doc: oci::AnyManifest =
                serde_json::from_slice(&cluster::read_blob(source, &d.digest)?).map_err(|e| {
                    ClusterImageError::Invalid {
                        what: "manifest",
                        digest: d.digest.clone(),
                        reason: e.to_string(),
                    }
                })?;
            if oci::is_index(doc.kind()) {
                stack.extend(
                    doc.manifests
                        .iter()
                        .filter(|m| platform_matches(m.platform.as_ref(), platforms))
                        .cloned(),
                );
            } else {
                stack.extend(doc.children().into_iter().cloned());
            }
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl ImageFetcher for LayoutFetcher {
    async fn fetch(
        &self,
        store: &Store,
        reference: &Reference,
        platforms: &[Platform],
    ) -> anyhow::Result<Descriptor> {
        let Some((layout, mut top)) = self.find(reference)? else {
            anyhow::bail!(
                "{reference} is in none of the local image sources; add it with `skopeo copy docker://{} oci:DIR:{reference}` and pass --image-source oci:DIR",
                reference.familiar()
            );
        };
        top.annotations.remove(oci::ANNOTATION_REF_NAME);
        copy_image(layout, store, &top, platforms)
            .with_context(|| format!("copying {reference} from {}", layout.root.display()))?;
        Ok(top)
    }
}

/// Extract an OCI archive into `dest`, refusing unsafe paths.
pub fn extract_archive(file: &Path, dest: &Path) -> anyhow::Result<()> {
    let f = io::BufReader::new(fs::File::open(file)?);
    crate::image::layer::unpack_layer(&Digest::of(b""), f, dest)?;
    Ok(())
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    tar.append_data(&mut h, path, data)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    tar.append_data(&mut h, path, io::empty())
}

/// Write the images `names` of `source` to `out` as an OCI archive (written to a
/// temp file and renamed). Returns the archive's size.
pub fn save(source: &dyn BlobSource, names: &[String], out: &Path) -> anyhow::Result<u64> {
    let images = source.images()?;
    let mut entries = Vec::new();
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    for name in names {
        let (_, d) = images
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| ClusterImageError::Unknown(name.clone()))?;
        for b in cluster::reachable(source, d)? {
            let size = source
                .locate(&b.digest)?
                .map(|l| l.size)
                .ok_or_else(|| ClusterImageError::Missing(b.digest.clone()))?;
            blobs.insert(b.digest, size);
        }
        entries.push(d.clone());
    }
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_INDEX.to_string()),
        manifests: entries,
        annotations: BTreeMap::new(),
    };
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, tmp));
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;
    for (digest, size) in &blobs {
        let reader = open_blob(source, digest)?;
        append_file(
            &mut tar,
            &format!("blobs/sha256/{}", digest.hex()),
            *size,
            reader,
        )?;
    }
    let index_bytes = store::to_json(&index);
    append_file(
        &mut tar,
        "index.json",
        index_bytes.len() as u64,
        &index_bytes[..],
    )?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append_file(&mut tar, "oci-layout", layout.len() as u64, &layout[..])?;
    tar.finish()?;
    let tmp = tar
        .into_inner()?
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    tmp.as_file().sync_all()?;
    let size = tmp.as_file().metadata()?.len();
    tmp.persist(out).map_err(|e| e.error)?;
    Ok(size)
}

/// Load an OCI archive into `store`: every blob verified against its digest, then
/// each named entry of its index tagged. Returns the names loaded.
pub fn load(store: &Store, file: &Path) -> anyhow::Result<Vec<String>> {
    let mut archive = tar::Archive::new(io::BufReader::new(fs::File::open(file)?));
    let mut index: Option<ImageIndex> = None;
    for entry in archive.entries()? {
        let entry = entry?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = path.trim_start_matches("./");
        if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            let digest: Digest = format!("sha256:{hex}").parse().with_context(|| {
                format!("{}: entry {path} is not named by a digest", file.display())
            })?;
            if !store.has_blob(&digest) {
                store
                    .put_reader(entry, Some(&digest), None)
                    .with_context(|| format!("{}: {path}", file.display()))?;
            }
        } else if path == "index.json" {
            index = Some(
                serde_json::from_reader(entry)
                    .with_context(|| format!("{}: index.json", file.display()))?,
            );
        }
    }
    let index = index.ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no index.json; it is not an OCI archive",
            file.display()
        )
    })?;
    let mut names = Vec::new();
    for d in &index.manifests {
        let Some(name) = d.annotation(oci::ANNOTATION_REF_NAME) else {
            continue;
        };
        let name = name
            .parse::<Reference>()
            .map_or_else(|_| name.to_string(), |r| r.to_string());
        cluster::reachable(store, d)
            .with_context(|| format!("{}: image {name}", file.display()))?;
        let mut entry = d.clone();
        entry.annotations.remove(oci::ANNOTATION_REF_NAME);
        store.set_ref(&name, &entry)?;
        names.push(name);
    }
    if names.is_empty() {
        anyhow::bail!(
            "{}: no entry of index.json has a name ({}); nothing to load",
            file.display(),
            oci::ANNOTATION_REF_NAME
        );
    }
    Ok(names)
}
