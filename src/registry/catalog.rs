//! Which repository and tag names the registry answers to, built from a [`BlobSource`].
//!
//! 1. Every top-level image of the source (`docker.io/library/demo:v1`) is served under
//!    its own domain, repository and tag.
//! 2. Every entry of a cluster image's index with `io.airlock.role: container-image` is
//!    served under its original reference (`io.airlock.image.ref`), so a container
//!    runtime that uses the registry as a mirror finds `docker.io/library/busybox:1.36`
//!    under `library/busybox:1.36?ns=docker.io`.
//! 3. [`Catalog::resolve`] looks a tag up in the domain named by `ns`, or without `ns`
//!    in `docker.io` first, then in any domain (sorted), so plain clients work too.
//!    Plain clients also find `docker.io/library/x` as `x`, and any image under its
//!    full name `DOMAIN/REPOSITORY` (`127.0.0.1:5000/quay.io/a/b:1`).
//! 4. The catalog is rebuilt only when the source's list of top-level images changes.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use crate::digest::Digest;
use crate::image::oci::{self, Descriptor};
use crate::image::{BlobLocation, BlobSource};
use crate::spec::reference::{DEFAULT_DOMAIN, Reference};

/// Largest index or manifest the catalog reads to find container images.
const MAX_INDEX_BYTES: u64 = 4 << 20;

/// The names a source's images are served under.
#[derive(Debug, Default)]
pub struct Catalog {
    /// `(domain, repository)` to tag to descriptor.
    repositories: BTreeMap<(String, String), BTreeMap<String, Descriptor>>,
}

impl Catalog {
    /// Build the catalog of `source`'s images.
    pub fn build(source: &dyn BlobSource, images: &[(String, Descriptor)]) -> io::Result<Self> {
        let mut catalog = Self::default();
        for (name, descriptor) in images {
            let Ok(reference) = name.parse::<Reference>() else {
                tracing::debug!("registry: not serving image {name:?}: not a reference");
                continue;
            };
            catalog.insert(&reference, descriptor.clone());
            if !oci::is_index(&descriptor.media_type) {
                continue;
            }
            let Some(location) = source.locate(&descriptor.digest)? else {
                continue;
            };
            if location.size > MAX_INDEX_BYTES {
                continue;
            }
            let bytes = read_region(&location)?;
            let Ok(index) = serde_json::from_slice::<oci::ImageIndex>(&bytes) else {
                continue;
            };
            for entry in &index.manifests {
                if entry.annotation(oci::ANNOTATION_ROLE) != Some(oci::ROLE_CONTAINER_IMAGE) {
                    continue;
                }
                let Some(original) = entry.annotation(oci::ANNOTATION_IMAGE_REF) else {
                    continue;
                };
                match original.parse::<Reference>() {
                    Ok(r) => catalog.insert(&r, entry.clone()),
                    Err(e) => tracing::debug!("registry: skipping container image: {e}"),
                }
            }
        }
        Ok(catalog)
    }

    /// Record `reference` under its repository and under the names plain clients use:
    /// `x` for `docker.io/library/x`, and `DOMAIN/REPOSITORY` in full.
    fn insert(&mut self, reference: &Reference, mut descriptor: Descriptor) {
        let Some(tag) = &reference.tag else {
            return;
        };
        descriptor.annotations.clear();
        descriptor.platform = None;
        let mut names = vec![reference.repository.clone(), reference.name()];
        if reference.domain == DEFAULT_DOMAIN
            && let Some(short) = reference.repository.strip_prefix("library/")
        {
            names.push(short.to_string());
        }
        for repository in names {
            self.repositories
                .entry((reference.domain.clone(), repository))
                .or_default()
                .entry(tag.clone())
                .or_insert_with(|| descriptor.clone());
        }
    }

    /// The descriptor tagged `tag` in `repository`, in domain `ns` (or any, docker.io first).
    pub fn resolve(&self, ns: Option<&str>, repository: &str, tag: &str) -> Option<&Descriptor> {
        self.tags_of(ns, repository)
            .into_iter()
            .find_map(|tags| tags.get(tag))
    }

    /// The tag maps of `repository` in lookup order.
    fn tags_of(&self, ns: Option<&str>, repository: &str) -> Vec<&BTreeMap<String, Descriptor>> {
        if let Some(domain) = ns {
            let domain = normalise_domain(domain);
            return self
                .repositories
                .get(&(domain.to_string(), repository.to_string()))
                .into_iter()
                .collect();
        }
        let preferred = self
            .repositories
            .get(&(DEFAULT_DOMAIN.to_string(), repository.to_string()));
        let others = self
            .repositories
            .iter()
            .filter(|((d, r), _)| r == repository && d != DEFAULT_DOMAIN)
            .map(|(_, tags)| tags);
        preferred.into_iter().chain(others).collect()
    }

    /// Every tag of `repository` (sorted, without duplicates), or `None` if unknown.
    pub fn tags(&self, ns: Option<&str>, repository: &str) -> Option<Vec<String>> {
        let maps = self.tags_of(ns, repository);
        if maps.is_empty() {
            return None;
        }
        let mut tags: Vec<String> = maps.into_iter().flat_map(|m| m.keys().cloned()).collect();
        tags.sort();
        tags.dedup();
        Some(tags)
    }

    /// Every repository name (sorted, without duplicates).
    pub fn repositories(&self) -> Vec<String> {
        let mut names: Vec<String> = self.repositories.keys().map(|(_, r)| r.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// containerd sends `ns=docker.io`; older clients may send `index.docker.io`.
fn normalise_domain(domain: &str) -> &str {
    match domain {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_DOMAIN,
        other => other,
    }
}

/// Read a (small) file region whole.
pub fn read_region(location: &BlobLocation) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let file = fs_err::File::open(&location.path)?;
    let size = usize::try_from(location.size).map_err(io::Error::other)?;
    let mut buf = vec![0; size];
    file.file().read_exact_at(&mut buf, location.offset)?;
    Ok(buf)
}

/// The source's top-level images by name and digest: what a catalog was built from.
type CatalogKey = Vec<(String, Digest)>;

/// A catalog cache keyed on the source's list of top-level images.
#[derive(Default)]
pub struct CatalogCache {
    current: Mutex<Option<(CatalogKey, Arc<Catalog>)>>,
}

impl CatalogCache {
    /// The catalog for the source's current images, rebuilt if they changed.
    pub fn get(&self, source: &dyn BlobSource) -> io::Result<Arc<Catalog>> {
        let images = source.images()?;
        let key: CatalogKey = images
            .iter()
            .map(|(n, d)| (n.clone(), d.digest.clone()))
            .collect();
        if let Ok(guard) = self.current.lock()
            && let Some((k, catalog)) = guard.as_ref()
            && *k == key
        {
            return Ok(catalog.clone());
        }
        let catalog = Arc::new(Catalog::build(source, &images)?);
        if let Ok(mut guard) = self.current.lock() {
            *guard = Some((key, catalog.clone()));
        }
        Ok(catalog)
    }
}
