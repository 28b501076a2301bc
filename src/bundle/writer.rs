//! Writing a bundle from the local store.
//!
//! 1. Walk the image in the [`Store`] from its resolved descriptor; sort the blobs by
//!    digest. For a delta, drop the blobs its [`DeltaBase`] holds (a complete bundle,
//!    or an image of the store that a complete bundle was made from).
//! 2. Build the SBOM (one more blob) from the image's top-level index.
//! 3. Into a temp file beside the output: copy the runner binary (hashing it), pad to
//!    [`ALIGNMENT`], copy each blob at its aligned offset (the kernel copies file to
//!    file: `copy_file_range`), then the index JSON and the trailer (signed with the
//!    key, if any).
//! 4. chmod 755, sync, rename onto the output: a bundle path that exists is complete.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};

use super::elf::Elf;
use super::format::{
    ALIGNMENT, Base, BlobEntry, FLAG_DELTA, FLAG_SIGNED, FORMAT_VERSION, Index, IndexImage,
    MEDIA_TYPE_CLUSTERFILE, MEDIA_TYPE_SBOM, Runner, Trailer, align_up,
};
use super::reader::Bundle;
use super::{sbom, signing};
use crate::digest::{Digest, HashingWriter};
use crate::image::BlobSource;
use crate::image::store::{Store, StoreError};

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Reading the store failed (unknown image, missing blob, corrupt manifest).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runner binary cannot be read.
    #[error("cannot read the runner binary {path}: {source}")]
    Runner {
        /// The runner.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The output file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A blob in the store is not the size its descriptor says.
    #[error(
        "blob {digest} in the store is {actual} bytes, but the image says {expected}: run `airlock pull` or rebuild the image"
    )]
    BlobSize {
        /// The blob.
        digest: Digest,
        /// From the manifest.
        expected: u64,
        /// On disk.
        actual: u64,
    },
    /// `extract` was pointed at a directory that holds other files.
    #[error(
        "{path} is not empty and not an OCI image layout: extract into a new or empty directory, or an existing OCI layout to add the image to it"
    )]
    TargetNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// A delta was asked against a bundle that is itself a delta.
    #[error(
        "the base bundle {path} is itself a delta: deltas must be taken against a complete bundle"
    )]
    BaseIsDelta {
        /// The base bundle.
        path: PathBuf,
    },
}

/// What to put in a bundle besides the image.
pub struct PackOptions<'a> {
    /// The binary that runs the bundle (normally a static airlock).
    pub runner: &'a Path,
    /// `airlock <version>`, recorded in the index.
    pub created_by: String,
    /// Sign with this key.
    pub signing_key: Option<&'a SigningKey>,
    /// A Clusterfile template to carry (shown to users, written on the ISO).
    pub clusterfile: Option<Vec<u8>>,
    /// Leave out the blobs this base (a complete bundle or a store image) holds.
    pub base: Option<&'a DeltaBase>,
}

/// What a delta is made against: the blobs it may leave out and how the delta names
/// its base (see [`Base`]).
#[derive(Clone, Debug)]
pub struct DeltaBase {
    /// Recorded in the delta's index.
    pub base: Base,
    /// Every blob of the base, with its size.
    pub blobs: HashMap<Digest, u64>,
}

impl DeltaBase {
    /// A complete bundle (`--base OLD.run`): the delta then needs exactly that file.
    pub fn from_bundle(bundle: &Bundle) -> Result<Self, PackError> {
        if bundle.is_delta() {
            return Err(PackError::BaseIsDelta {
                path: bundle.path().to_path_buf(),
            });
        }
        Ok(Self {
            base: Base {
                image: bundle.image_name().to_string(),
                image_digest: bundle.image_descriptor().digest.clone(),
                index_digest: Some(bundle.index_digest()),
            },
            blobs: bundle
                .index()
                .blobs
                .iter()
                .map(|b| (b.digest.clone(), b.size))
                .collect(),
        })
    }

    /// An image of the local store (`--base NAME`): the delta then needs any complete
    /// bundle of that image (same top-level digest).
    pub fn from_store(store: &Store, name: &str) -> Result<Self, PackError> {
        let top = store.resolve(name)?;
        let blobs = store
            .walk(&top)?
            .into_iter()
            .map(|d| (d.digest, d.size))
            .collect();
        Ok(Self {
            base: Base {
                image: name.to_string(),
                image_digest: top.digest,
                index_digest: None,
            },
            blobs,
        })
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PackSummary {
    /// The bundle file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Blobs in the payload.
    pub blobs: usize,
    /// Blobs left to the base bundle (deltas).
    pub blobs_in_base: usize,
    /// SHA-256 of the index: the bundle content's identity.
    pub index_digest: Digest,
    /// Whether the runner needs a dynamic loader (then the bundle may not run everywhere).
    pub runner_is_dynamic: bool,
}

/// Where a payload blob's bytes come from.
enum Content {
    Store,
    Bytes(Vec<u8>),
}

/// Write the image `name` from `store` as a bundle at `output`; `progress(done, total)`
/// is called with payload bytes written.
pub fn pack(
    store: &Store,
    name: &str,
    output: &Path,
    options: &PackOptions<'_>,
    progress: &dyn Fn(u64, u64),
) -> Result<PackSummary, PackError> {
    let out_err = |source: io::Error| PackError::Output {
        path: output.to_path_buf(),
        source,
    };
    let runner_err = |source: io::Error| PackError::Runner {
        path: options.runner.to_path_buf(),
        source,
    };
    let top = store.resolve(name)?;
    let mut blobs: Vec<(BlobEntry, Content)> = Vec::new();
    for descriptor in store.walk(&top)? {
        let actual = store.blob_size(&descriptor.digest)?;
        if actual != descriptor.size {
            return Err(PackError::BlobSize {
                digest: descriptor.digest,
                expected: descriptor.size,
                actual,
            });
        }
        blobs.push((
            BlobEntry {
                digest: descriptor.digest,
                offset: None,
                size: descriptor.size,
                media_type: Some(descriptor.media_type),
            },
            Content::Store,
        ));
    }

    let mut runner_file = File::open(options.runner).map_err(runner_err)?;
    let runner_is_dynamic = Elf::read(&runner_file)
        .map_err(runner_err)?
        .is_some_and(|elf| elf.is_dynamic);
    let (runner_digest, _) =
        crate::digest::digest_reader(io::BufReader::with_capacity(1 << 20, &mut runner_file))
            .map_err(runner_err)?;
    runner_file.seek(SeekFrom::Start(0)).map_err(runner_err)?;
    let runner_size = runner_file.metadata().map_err(runner_err)?.len();
    let runner = Runner {
        size: runner_size,
        digest: runner_digest,
    };

    let top_bytes = store.read_blob(&top.digest)?;
    let images = sbom::contents(name, &top, &top_bytes);
    let sbom_bytes = sbom::cyclonedx(name, &top.digest, &images, &runner, &options.created_by);
    let sbom_digest = add_bytes(&mut blobs, sbom_bytes, MEDIA_TYPE_SBOM);
    let clusterfile_digest = options
        .clusterfile
        .clone()
        .map(|bytes| add_bytes(&mut blobs, bytes, MEDIA_TYPE_CLUSTERFILE));
    blobs.sort_by(|a, b| a.0.digest.cmp(&b.0.digest));

    // Lay out: every blob not in the base gets the next aligned offset.
    let payload_start = align_up(runner.size);
    let mut cursor = payload_start;
    let mut blobs_in_base = 0;
    for (entry, _) in &mut blobs {
        let in_base = options
            .base
            .is_some_and(|base| base.blobs.get(&entry.digest) == Some(&entry.size));
        if in_base {
            blobs_in_base += 1;
            continue;
        }
        let offset = align_up(cursor);
        entry.offset = Some(offset);
        cursor = offset + entry.size;
    }
    let payload_total = cursor - payload_start;

    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(out_err)?;
    let file = tmp.as_file_mut();
    let copied = io::copy(&mut runner_file, file).map_err(out_err)?;
    if copied != runner.size {
        return Err(runner_err(io::Error::other(
            "the runner changed size while it was copied",
        )));
    }
    let mut position = runner.size;
    for (entry, content) in &blobs {
        let Some(offset) = entry.offset else { continue };
        pad_to(file, &mut position, offset).map_err(out_err)?;
        match content {
            Content::Store => {
                let blob = store.open_blob(&entry.digest)?;
                let n = io::copy(&mut blob.take(entry.size), file).map_err(out_err)?;
                if n != entry.size {
                    return Err(PackError::BlobSize {
                        digest: entry.digest.clone(),
                        expected: entry.size,
                        actual: n,
                    });
                }
            }
            Content::Bytes(bytes) => file.write_all(bytes).map_err(out_err)?,
        }
        position += entry.size;
        progress(position - payload_start, payload_total);
    }
    pad_to(file, &mut position, cursor).map_err(out_err)?;

    let index = Index {
        format_version: FORMAT_VERSION,
        created_by: options.created_by.clone(),
        image: IndexImage {
            name: name.to_string(),
            descriptor: top,
        },
        runner,
        blobs: blobs.into_iter().map(|(entry, _)| entry).collect(),
        sbom: Some(sbom_digest),
        clusterfile: clusterfile_digest,
        signer: options
            .signing_key
            .map(|k| signing::signer_entry(&k.verifying_key())),
        base: options.base.map(|b| b.base.clone()),
    };
    let index_bytes = serde_json::to_vec(&index).map_err(|e| out_err(io::Error::other(e)))?;
    let index_sha256: [u8; 32] = Sha256::digest(&index_bytes).into();
    let mut flags = 0;
    if options.base.is_some() {
        flags |= FLAG_DELTA;
    }
    let mut signature = [0u8; 64];
    if let Some(key) = options.signing_key {
        flags |= FLAG_SIGNED;
        signature = signing::sign(key, &index_sha256);
    }
    let trailer = Trailer {
        flags,
        payload_start,
        index_offset: position,
        index_len: index_bytes.len() as u64,
        index_sha256,
        signature,
    };
    let mut writer = HashingWriter::new(io::BufWriter::new(&mut *file));
    writer.write_all(&index_bytes).map_err(out_err)?;
    writer.write_all(&trailer.encode()).map_err(out_err)?;
    let (_, tail, mut buffered) = writer.finish();
    buffered.flush().map_err(out_err)?;
    drop(buffered);
    file.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(out_err)?;
    file.sync_all().map_err(out_err)?;
    tmp.persist(output).map_err(|e| out_err(e.error))?;
    Ok(PackSummary {
        path: output.to_path_buf(),
        size: position + tail,
        blobs: index.blobs.len() - blobs_in_base,
        blobs_in_base,
        index_digest: Digest::of(&index_bytes),
        runner_is_dynamic,
    })
}

/// Add `bytes` to the payload (once), returning their digest.
fn add_bytes(blobs: &mut Vec<(BlobEntry, Content)>, bytes: Vec<u8>, media_type: &str) -> Digest {
    let digest = Digest::of(&bytes);
    if !blobs.iter().any(|(b, _)| b.digest == digest) {
        blobs.push((
            BlobEntry {
                digest: digest.clone(),
                offset: None,
                size: bytes.len() as u64,
                media_type: Some(media_type.to_string()),
            },
            Content::Bytes(bytes),
        ));
    }
    digest
}

/// Write zeros from `position` up to `target`.
fn pad_to(file: &mut File, position: &mut u64, target: u64) -> io::Result<()> {
    debug_assert!(target >= *position && target - *position < ALIGNMENT);
    let zeros = [0u8; ALIGNMENT as usize];
    let n = usize::try_from(target.saturating_sub(*position)).unwrap_or(0);
    file.write_all(&zeros[..n.min(zeros.len())])?;
    *position = target;
    Ok(())
}

/// Unpack the payload of `bundle` into an OCI image layout (a [`Store`]) at `dir`,
/// verifying each blob as it is written, and name the image as the bundle does.
/// `dir` must be missing, empty, or already an OCI layout (the image is added to it,
/// blobs it has are kept); any other directory is refused untouched.
pub fn extract(
    bundle: &Bundle,
    dir: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<Store, PackError> {
    let io_err = |source: io::Error| PackError::Output {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            let is_empty = entries.next().is_none();
            if !is_empty && !dir.join("oci-layout").is_file() {
                return Err(PackError::TargetNotEmpty {
                    path: dir.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let store = Store::open(dir)?;
    let total: u64 = bundle.index().blobs.iter().map(|b| b.size).sum();
    let mut done = 0;
    for entry in &bundle.index().blobs {
        let index = bundle.index();
        let is_extra = Some(&entry.digest) == index.sbom.as_ref()
            || Some(&entry.digest) == index.clusterfile.as_ref();
        if is_extra || store.has_blob(&entry.digest) {
            done += entry.size;
            continue;
        }
        let location = bundle
            .locate(&entry.digest)
            .map_err(|source| PackError::Output {
                path: bundle.path().to_path_buf(),
                source,
            })?
            .ok_or_else(|| PackError::Store(StoreError::BlobUnknown(entry.digest.clone())))?;
        let mut file = File::open(&location.path).map_err(|source| PackError::Output {
            path: location.path.clone(),
            source,
        })?;
        file.seek(SeekFrom::Start(location.offset))
            .map_err(|source| PackError::Output {
                path: location.path.clone(),
                source,
            })?;
        store.put_reader(
            file.take(location.size),
            Some(&entry.digest),
            Some(entry.size),
        )?;
        done += entry.size;
        progress(done, total);
    }
    store.set_ref(bundle.image_name(), bundle.image_descriptor())?;
    Ok(store)
}
