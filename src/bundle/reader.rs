//! Reading a bundle in place: open, locate blobs, verify.
//!
//! 1. [`Bundle::open`] reads the trailer (magic, checksum, version), then the index at
//!    the place it names, checks the index's SHA-256 and its layout (sorted, aligned,
//!    non-overlapping regions inside the file). Nothing else is read.
//! 2. [`Bundle`] is a [`BlobSource`]: `locate` returns the region of the bundle file
//!    holding a blob, so the registry and the installer read blobs where they are.
//! 3. [`Bundle::verify`] re-hashes the runner and every blob, and checks that the
//!    padding between them is zero, so a bit flipped anywhere in the file is caught.
//!    Workers hash regions in parallel; the error reported is the first in file order.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::elf::Elf;
use super::format::{
    self, BlobEntry, FORMAT_VERSION, Index, TRAILER_SIZE, Trailer, TrailerError, align_up,
};
use crate::digest::Digest;
use crate::image::oci::Descriptor;
use crate::image::{BlobLocation, BlobSource};

/// Why a bundle cannot be used. Every variant names the file and what failed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading the file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The bundle.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file has no trailer and nothing after an executable: not a bundle.
    #[error("{path} is not an airlock bundle (no AIRLOCK-BUNDLE trailer at its end)")]
    NotABundle {
        /// The file.
        path: PathBuf,
    },
    /// Data follows the runner but there is no trailer: cut short or damaged at the end.
    #[error(
        "{path} is truncated or its trailer is damaged: {size} bytes, no AIRLOCK-BUNDLE trailer at the end; copy the bundle again"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The trailer is present but invalid.
    #[error("{path}: {source}; copy the bundle again")]
    Trailer {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: TrailerError,
    },
    /// The index region named by the trailer is not inside the file.
    #[error(
        "{path}: the trailer puts the index at {offset}+{len}, outside the {size}-byte file; the bundle is truncated or damaged"
    )]
    IndexBounds {
        /// The file.
        path: PathBuf,
        /// Where the trailer says the index is.
        offset: u64,
        /// Its length.
        len: u64,
        /// The file's size.
        size: u64,
    },
    /// The index does not hash to what the trailer says.
    #[error(
        "{path}: the bundle index is damaged (its SHA-256 does not match the trailer); copy the bundle again"
    )]
    IndexDigest {
        /// The file.
        path: PathBuf,
    },
    /// The index is not valid JSON of the expected shape.
    #[error("{path}: the bundle index cannot be parsed: {source}")]
    IndexParse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The index parses but describes an impossible layout.
    #[error("{path}: the bundle index is invalid: {reason}")]
    IndexInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The runner region does not hash to the index's value.
    #[error(
        "{path}: the airlock binary at the start of the bundle (bytes 0..{size}) is damaged: it hashes to {actual}, expected {expected}"
    )]
    RunnerDigest {
        /// The file.
        path: PathBuf,
        /// The runner's size.
        size: u64,
        /// From the index.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A blob does not hash to its digest.
    #[error(
        "{path}: blob {digest} (bytes {offset}..{end}) is damaged: it hashes to {actual}",
        end = offset + size
    )]
    BlobDigest {
        /// The file.
        path: PathBuf,
        /// The blob's digest.
        digest: Digest,
        /// Where it starts.
        offset: u64,
        /// Its size.
        size: u64,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// Padding between regions is not zero.
    #[error(
        "{path}: byte {offset} is in the zero padding between blobs but is not zero: the bundle is damaged"
    )]
    Padding {
        /// The file.
        path: PathBuf,
        /// The first non-zero byte.
        offset: u64,
    },
    /// The signature does not match the index and the signer's key.
    #[error(
        "{path}: the bundle signature does not verify with the key it names ({fingerprint}): the bundle was altered or the signature is forged"
    )]
    BadSignature {
        /// The file.
        path: PathBuf,
        /// The key's fingerprint.
        fingerprint: String,
    },
    /// Signed flag and signer entry disagree, or the key is malformed.
    #[error("{path}: {reason}")]
    SignatureInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// An opened bundle: its path, trailer and index. Blobs stay in the file.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    file: File,
    size: u64,
    trailer: Trailer,
    index: Index,
    index_bytes: Vec<u8>,
    by_digest: BTreeMap<Digest, usize>,
    base: Option<Box<Bundle>>,
}

impl Bundle {
    /// Open `path` and check its trailer and index (not its blobs: see [`Bundle::verify`]).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, BundleError> {
        let path = path.into();
        let file = File::open(&path).map_err(|source| io_error(&path, source))?;
        match read_trailer(&path, &file)? {
            Some((size, trailer)) => Self::from_trailer(path, file, size, trailer),
            None => Err(BundleError::NotABundle { path }),
        }
    }

    /// Open `exe` (the running executable) as a bundle when it carries one: `Ok(None)`
    /// for plain airlock. Cheap: reads the ELF headers and the last bytes only.
    pub fn open_self(exe: &Path) -> Result<Option<Self>, BundleError> {
        let path = exe.to_path_buf();
        let file = File::open(&path).map_err(|source| io_error(&path, source))?;
        match read_trailer(&path, &file) {
            Ok(Some((size, trailer))) => Self::from_trailer(path, file, size, trailer).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn from_trailer(
        path: PathBuf,
        file: File,
        size: u64,
        trailer: Trailer,
    ) -> Result<Self, BundleError> {
        let index_end = size - TRAILER_SIZE as u64;
        if trailer.index_offset.checked_add(trailer.index_len) != Some(index_end)
            || trailer.index_len > 256 << 20
        {
            return Err(BundleError::IndexBounds {
                path,
                offset: trailer.index_offset,
                len: trailer.index_len,
                size,
            });
        }
        let len = usize::try_from(trailer.index_len).unwrap_or(usize::MAX);
        let mut index_bytes = vec![0u8; len];
        file.read_exact_at(&mut index_bytes, trailer.index_offset)
            .map_err(|source| io_error(&path, source))?;
        if Sha256::digest(&index_bytes).as_slice() != trailer.index_sha256 {
            return Err(BundleError::IndexDigest { path });
        }
        let index: Index =
            serde_json::from_slice(&index_bytes).map_err(|source| BundleError::IndexParse {
                path: path.clone(),
                source,
            })?;
        check_layout(&index, &trailer).map_err(|reason| BundleError::IndexInvalid {
            path: path.clone(),
            reason,
        })?;
        let by_digest = index
            .blobs
            .iter()
            .enumerate()
            .map(|(i, b)| (b.digest.clone(), i))
            .collect();
        Ok(Self {
            path,
            file,
            size,
            trailer,
            index,
            index_bytes,
            by_digest,
            base: None,
        })
    }

    /// The bundle file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The parsed index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The index exactly as stored (what the trailer's hash covers).
    pub fn index_bytes(&self) -> &[u8] {
        &self.index_bytes
    }

    /// The SHA-256 of the index: the identity of the bundle's content.
    pub fn index_digest(&self) -> Digest {
        Digest::of(&self.index_bytes)
    }

    /// The decoded trailer.
    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    /// The image's name as stored.
    pub fn image_name(&self) -> &str {
        &self.index.image.name
    }

    /// The image's top-level descriptor.
    pub fn image_descriptor(&self) -> &Descriptor {
        &self.index.image.descriptor
    }

    /// The index entry of `digest`.
    pub fn entry(&self, digest: &Digest) -> Option<&BlobEntry> {
        self.by_digest.get(digest).map(|i| &self.index.blobs[*i])
    }

    /// Whether this is a delta bundle (some blobs live in a base bundle).
    pub fn is_delta(&self) -> bool {
        self.index.base.is_some()
    }

    /// The base bundle attached with [`Bundle::with_base`].
    pub fn base(&self) -> Option<&Bundle> {
        self.base.as_deref()
    }

    /// Attach the base bundle of a delta, checking that it is the one the delta names:
    /// a complete bundle of the base image (and the very file, when the delta was
    /// made against a bundle) that holds every blob the delta leaves out.
    pub fn with_base(mut self, base: Bundle) -> Result<Self, BundleError> {
        let Some(expected) = self.index.base.clone() else {
            return Err(self.invalid("this bundle is complete: it takes no base".to_string()));
        };
        let wrong = |why: String| {
            format!(
                "this delta needs a complete bundle of {} (image {}{}), but {} {why}",
                expected.image,
                expected.image_digest,
                expected
                    .index_digest
                    .as_ref()
                    .map(|d| format!(", bundle index {d}"))
                    .unwrap_or_default(),
                base.path.display(),
            )
        };
        if base.is_delta() {
            return Err(self.invalid(wrong("is itself a delta".to_string())));
        }
        if base.image_descriptor().digest != expected.image_digest {
            return Err(self.invalid(wrong(format!(
                "carries {} (image {})",
                base.image_name(),
                base.image_descriptor().digest
            ))));
        }
        if let Some(index_digest) = &expected.index_digest
            && &base.index_digest() != index_digest
        {
            return Err(self.invalid(wrong(format!(
                "is another bundle of it (index {})",
                base.index_digest()
            ))));
        }
        let missing = self
            .index
            .blobs
            .iter()
            .filter(|b| b.offset.is_none())
            .find(|b| base.entry(&b.digest).is_none_or(|e| e.size != b.size));
        if let Some(blob) = missing {
            return Err(self.invalid(wrong(format!("lacks the blob {}", blob.digest))));
        }
        self.base = Some(Box::new(base));
        Ok(self)
    }

    /// An [`BundleError::IndexInvalid`] about this bundle.
    fn invalid(&self, reason: String) -> BundleError {
        BundleError::IndexInvalid {
            path: self.path.clone(),
            reason,
        }
    }

    /// Read a whole (small) blob into memory.
    pub fn read_blob(&self, digest: &Digest) -> io::Result<Option<Vec<u8>>> {
        let Some(location) = self.locate(digest)? else {
            return Ok(None);
        };
        let len = usize::try_from(location.size).map_err(io::Error::other)?;
        let mut out = vec![0u8; len];
        if location.path == self.path {
            self.file.read_exact_at(&mut out, location.offset)?;
        } else {
            File::open(&location.path)?.read_exact_at(&mut out, location.offset)?;
        }
        Ok(Some(out))
    }

    /// Hash the runner and every blob, and check the padding; `progress(done, total)`
    /// is called with bytes checked so far. Returns the first failure in file order.
    pub fn verify(&self, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<(), BundleError> {
        let checks = self.checks();
        let total: u64 = checks.iter().map(Check::len).sum();
        let done = AtomicU64::new(0);
        let next = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let failures: Mutex<Vec<(u64, BundleError)>> = Mutex::new(Vec::new());
        let workers = std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(checks.len().max(1));
        let worker = || {
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(check) = usize::try_from(i).ok().and_then(|i| checks.get(i)) else {
                    return;
                };
                let on_bytes = |n: u64| progress(done.fetch_add(n, Ordering::Relaxed) + n, total);
                if let Err(err) = self.run_check(check, &mut buffer, &on_bytes) {
                    stop.store(true, Ordering::Relaxed);
                    if let Ok(mut f) = failures.lock() {
                        f.push((check.start(), err));
                    }
                }
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..workers {
                scope.spawn(worker);
            }
            worker();
        });
        let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
        failures.sort_by_key(|(start, _)| *start);
        if let Some((_, err)) = failures.into_iter().next() {
            return Err(err);
        }
        self.verify_signature()
    }

    /// Check the signature against the key the index names (integrity, not trust:
    /// whether that key is trusted is the caller's decision).
    pub fn verify_signature(&self) -> Result<(), BundleError> {
        super::signing::verify_bundle(self)
    }

    /// The regions [`Bundle::verify`] checks, in file order.
    fn checks(&self) -> Vec<Check> {
        let mut checks = vec![
            Check::Runner {
                size: self.index.runner.size,
            },
            Check::Zero {
                start: self.index.runner.size,
                end: self.trailer.payload_start,
            },
        ];
        let mut cursor = self.trailer.payload_start;
        for (i, blob) in self.index.blobs.iter().enumerate() {
            let Some(offset) = blob.offset else { continue };
            checks.push(Check::Zero {
                start: cursor,
                end: offset,
            });
            checks.push(Check::Blob {
                index: i,
                offset,
                size: blob.size,
            });
            cursor = offset + blob.size;
        }
        checks.push(Check::Zero {
            start: cursor,
            end: self.trailer.index_offset,
        });
        checks.retain(|c| !matches!(c, Check::Zero { .. }) || c.len() > 0);
        checks
    }

    fn run_check(
        &self,
        check: &Check,
        buffer: &mut [u8],
        on_bytes: &dyn Fn(u64),
    ) -> Result<(), BundleError> {
        match check {
            Check::Runner { .. } => {
                let runner = &self.index.runner;
                let actual = self.hash_region(0, runner.size, buffer, on_bytes)?;
                if actual != runner.digest {
                    return Err(BundleError::RunnerDigest {
                        path: self.path.clone(),
                        size: runner.size,
                        expected: runner.digest.clone(),
                        actual,
                    });
                }
            }
            Check::Blob { index, offset, .. } => {
                let blob = &self.index.blobs[*index];
                let offset = *offset;
                let actual = self.hash_region(offset, blob.size, buffer, on_bytes)?;
                if actual != blob.digest {
                    return Err(BundleError::BlobDigest {
                        path: self.path.clone(),
                        digest: blob.digest.clone(),
                        offset,
                        size: blob.size,
                        actual,
                    });
                }
            }
            Check::Zero { start, end } => {
                let mut at = *start;
                while at < *end {
                    let n = chunk(*end - at, buffer.len());
                    self.read_at(&mut buffer[..n], at)?;
                    if let Some(pos) = buffer[..n].iter().position(|b| *b != 0) {
                        return Err(BundleError::Padding {
                            path: self.path.clone(),
                            offset: at + pos as u64,
                        });
                    }
                    at += n as u64;
                    on_bytes(n as u64);
                }
            }
        }
        Ok(())
    }

    fn hash_region(
        &self,
        offset: u64,
        size: u64,
        buffer: &mut [u8],
        on_bytes: &dyn Fn(u64),
    ) -> Result<Digest, BundleError> {
        let mut hasher = Sha256::new();
        let mut at = offset;
        let end = offset + size;
        while at < end {
            let n = chunk(end - at, buffer.len());
            self.read_at(&mut buffer[..n], at)?;
            hasher.update(&buffer[..n]);
            at += n as u64;
            on_bytes(n as u64);
        }
        Ok(Digest::from_hasher(hasher))
    }

    fn read_at(&self, buffer: &mut [u8], offset: u64) -> Result<(), BundleError> {
        self.file
            .read_exact_at(buffer, offset)
            .map_err(|source| io_error(&self.path, source))
    }
}

impl BlobSource for Bundle {
    fn images(&self) -> io::Result<Vec<(String, Descriptor)>> {
        Ok(vec![(
            self.index.image.name.clone(),
            self.index.image.descriptor.clone(),
        )])
    }

    /// A bundle's image never changes while it is open.
    fn images_version(&self) -> io::Result<Option<crate::image::ImagesVersion>> {
        Ok(Some([0; 4]))
    }

    fn locate(&self, digest: &Digest) -> io::Result<Option<BlobLocation>> {
        let Some(entry) = self.entry(digest) else {
            return Ok(None);
        };
        match (entry.offset, &self.base) {
            (Some(offset), _) => Ok(Some(BlobLocation {
                path: self.path.clone(),
                offset,
                size: entry.size,
            })),
            (None, Some(base)) => base.locate(digest),
            (None, None) => Ok(None),
        }
    }
}

/// One region [`Bundle::verify`] checks: `[start, start + len)`.
enum Check {
    Runner {
        size: u64,
    },
    Blob {
        index: usize,
        offset: u64,
        size: u64,
    },
    Zero {
        start: u64,
        end: u64,
    },
}

impl Check {
    fn start(&self) -> u64 {
        match self {
            Check::Runner { .. } => 0,
            Check::Blob { offset, .. } => *offset,
            Check::Zero { start, .. } => *start,
        }
    }

    fn len(&self) -> u64 {
        match self {
            Check::Runner { size } | Check::Blob { size, .. } => *size,
            Check::Zero { start, end } => end.saturating_sub(*start),
        }
    }
}

fn chunk(remaining: u64, buffer: usize) -> usize {
    usize::try_from(remaining).map_or(buffer, |r| r.min(buffer))
}

fn io_error(path: &Path, source: io::Error) -> BundleError {
    BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Read and decode the trailer of `file`: `Ok(None)` when the file has no magic and
/// nothing follows its executable (plain airlock, or another file).
fn read_trailer(path: &Path, file: &File) -> Result<Option<(u64, Trailer)>, BundleError> {
    let size = file
        .metadata()
        .map_err(|source| io_error(path, source))?
        .len();
    let mut bytes = [0u8; TRAILER_SIZE];
    let decoded = if size >= TRAILER_SIZE as u64 {
        file.read_exact_at(&mut bytes, size - TRAILER_SIZE as u64)
            .map_err(|source| io_error(path, source))?;
        Trailer::decode(&bytes)
    } else {
        Err(TrailerError::NoMagic)
    };
    match decoded {
        Ok(trailer) => Ok(Some((size, trailer))),
        Err(TrailerError::NoMagic) => {
            let elf = Elf::read(file).map_err(|source| io_error(path, source))?;
            match elf {
                Some(elf) if elf.extent != size => Err(BundleError::Truncated {
                    path: path.to_path_buf(),
                    size,
                }),
                _ => Ok(None),
            }
        }
        Err(source) => Err(BundleError::Trailer {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Check that the index describes a possible file: version, runner inside the first
/// page-aligned region, blobs sorted by digest, aligned, in order, not overlapping,
/// and all before the index.
fn check_layout(index: &Index, trailer: &Trailer) -> Result<(), String> {
    if index.format_version != FORMAT_VERSION {
        return Err(format!(
            "format version {} does not match the trailer's {FORMAT_VERSION}",
            index.format_version
        ));
    }
    if align_up(index.runner.size) != trailer.payload_start {
        return Err(format!(
            "runner size {} does not end at the payload start {}",
            index.runner.size, trailer.payload_start
        ));
    }
    if (trailer.flags & format::FLAG_DELTA != 0) != index.base.is_some() {
        return Err("the delta flag and the index's base disagree".to_string());
    }
    let mut cursor = trailer.payload_start;
    let mut previous: Option<&Digest> = None;
    for blob in &index.blobs {
        if previous.is_some_and(|p| p >= &blob.digest) {
            return Err(format!("blob {} is out of order or repeated", blob.digest));
        }
        previous = Some(&blob.digest);
        let Some(offset) = blob.offset else {
            if index.base.is_none() {
                return Err(format!("blob {} has no offset", blob.digest));
            }
            continue;
        };
        let end = offset.checked_add(blob.size);
        if offset % format::ALIGNMENT != 0
            || offset < cursor
            || end.is_none_or(|e| e > trailer.index_offset)
        {
            return Err(format!(
                "blob {} at {offset}+{} is misaligned, overlaps another or runs past the index",
                blob.digest, blob.size
            ));
        }
        cursor = end.unwrap_or(u64::MAX);
    }
    let top = &index.image.descriptor.digest;
    if !index.blobs.iter().any(|b| &b.digest == top) {
        return Err(format!("the image's top-level blob {top} is not listed"));
    }
    Ok(())
}
