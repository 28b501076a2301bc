//! The on-disk format of a bundle (see `docs/bundle-format.md`).
//!
//! ```text
//! [runner: a static airlock binary][zero padding to 4 KiB]
//! [blob][zero padding to 4 KiB][blob][padding]...[blob]   <- the payload, sorted by digest
//! [index: JSON][trailer: 192 bytes]
//! ```
//! 1. A reader takes the last [`TRAILER_SIZE`] bytes and decodes the [`Trailer`]: magic,
//!    version, a SHA-256 of the trailer itself, the index's place and its SHA-256.
//! 2. It reads the [`Index`] at that place, checks its hash, and parses it: every blob
//!    of the image with its offset and size, and the runner's size and SHA-256.
//! 3. Blobs are then read in place (offset, size): nothing is unpacked.
//!
//! Every number in the trailer is little-endian. Writing the same store content with
//! the same runner gives byte-identical files: blobs are sorted by digest, the index
//! is serialised from ordered types, and there are no timestamps.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::image::oci::Descriptor;

/// The first 14 bytes of the trailer.
pub const MAGIC: &[u8; 14] = b"AIRLOCK-BUNDLE";
/// The version of the trailer and index layout this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the trailer at the very end of the file.
pub const TRAILER_SIZE: usize = 192;
/// Every blob starts at a multiple of this, so it can be read, mapped or sent by page.
pub const ALIGNMENT: u64 = 4096;
/// Trailer flag: the bundle is signed (the trailer carries an ed25519 signature).
pub const FLAG_SIGNED: u32 = 1;
/// Trailer flag: the payload holds only the blobs a base bundle lacks.
pub const FLAG_DELTA: u32 = 2;
/// Media type of the SBOM blob.
pub const MEDIA_TYPE_SBOM: &str = "application/vnd.cyclonedx+json";
/// Media type of the Clusterfile template blob.
pub const MEDIA_TYPE_CLUSTERFILE: &str = "application/vnd.airlock.clusterfile.v1+yaml";
/// Every flag this version knows.
pub const KNOWN_FLAGS: u32 = FLAG_SIGNED | FLAG_DELTA;

/// Byte ranges of the trailer fields.
mod field {
    use std::ops::Range;
    pub(super) const MAGIC: Range<usize> = 0..14;
    pub(super) const VERSION: Range<usize> = 14..16;
    pub(super) const FLAGS: Range<usize> = 16..20;
    pub(super) const RESERVED_A: Range<usize> = 20..24;
    pub(super) const PAYLOAD_START: Range<usize> = 24..32;
    pub(super) const INDEX_OFFSET: Range<usize> = 32..40;
    pub(super) const INDEX_LEN: Range<usize> = 40..48;
    pub(super) const INDEX_SHA256: Range<usize> = 48..80;
    pub(super) const SIGNATURE: Range<usize> = 80..144;
    pub(super) const RESERVED_B: Range<usize> = 144..160;
    pub(super) const CHECKSUM: Range<usize> = 160..192;
}

/// The fixed-size record at the end of a bundle that locates its index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// [`FLAG_SIGNED`], [`FLAG_DELTA`].
    pub flags: u32,
    /// Where the payload starts: the runner's size rounded up to [`ALIGNMENT`].
    pub payload_start: u64,
    /// Where the index starts.
    pub index_offset: u64,
    /// The index's length in bytes.
    pub index_len: u64,
    /// SHA-256 of the index bytes.
    pub index_sha256: [u8; 32],
    /// ed25519 signature of [`signed_message`] when [`FLAG_SIGNED`] is set, else zeros.
    pub signature: [u8; 64],
}

/// Why the last bytes of a file are not a valid trailer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrailerError {
    /// The magic is missing: the file is not a bundle (or its trailer was damaged).
    #[error("no bundle trailer: the last {TRAILER_SIZE} bytes do not start with AIRLOCK-BUNDLE")]
    NoMagic,
    /// The trailer's own SHA-256 does not match: a bit was flipped in the trailer.
    #[error("the bundle trailer is damaged (its checksum does not match)")]
    Checksum,
    /// Written by a newer airlock.
    #[error(
        "bundle format version {0} is not supported (this airlock reads version {FORMAT_VERSION})"
    )]
    Version(u16),
    /// Flags this version does not know, or reserved bytes that are not zero.
    #[error("the bundle trailer has unknown flags {0:#x} or non-zero reserved bytes")]
    Reserved(u32),
}

impl Trailer {
    /// Encode, computing the trailer checksum.
    pub fn encode(&self) -> [u8; TRAILER_SIZE] {
        let mut out = [0u8; TRAILER_SIZE];
        out[field::MAGIC].copy_from_slice(MAGIC);
        out[field::VERSION].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[field::FLAGS].copy_from_slice(&self.flags.to_le_bytes());
        out[field::PAYLOAD_START].copy_from_slice(&self.payload_start.to_le_bytes());
        out[field::INDEX_OFFSET].copy_from_slice(&self.index_offset.to_le_bytes());
        out[field::INDEX_LEN].copy_from_slice(&self.index_len.to_le_bytes());
        out[field::INDEX_SHA256].copy_from_slice(&self.index_sha256);
        out[field::SIGNATURE].copy_from_slice(&self.signature);
        let checksum = Sha256::digest(&out[..field::CHECKSUM.start]);
        out[field::CHECKSUM].copy_from_slice(&checksum);
        out
    }

    /// Decode and check magic, checksum, version and reserved bytes, in that order.
    pub fn decode(bytes: &[u8; TRAILER_SIZE]) -> Result<Self, TrailerError> {
        if &bytes[field::MAGIC] != MAGIC {
            return Err(TrailerError::NoMagic);
        }
        let checksum = Sha256::digest(&bytes[..field::CHECKSUM.start]);
        if checksum.as_slice() != &bytes[field::CHECKSUM] {
            return Err(TrailerError::Checksum);
        }
        let version = u16::from_le_bytes(array(&bytes[field::VERSION]));
        if version != FORMAT_VERSION {
            return Err(TrailerError::Version(version));
        }
        let flags = u32::from_le_bytes(array(&bytes[field::FLAGS]));
        let reserved_zero = bytes[field::RESERVED_A].iter().all(|b| *b == 0)
            && bytes[field::RESERVED_B].iter().all(|b| *b == 0);
        if flags & !KNOWN_FLAGS != 0 || !reserved_zero {
            return Err(TrailerError::Reserved(flags));
        }
        Ok(Self {
            flags,
            payload_start: u64::from_le_bytes(array(&bytes[field::PAYLOAD_START])),
            index_offset: u64::from_le_bytes(array(&bytes[field::INDEX_OFFSET])),
            index_len: u64::from_le_bytes(array(&bytes[field::INDEX_LEN])),
            index_sha256: array(&bytes[field::INDEX_SHA256]),
            signature: array(&bytes[field::SIGNATURE]),
        })
    }

    /// Whether [`FLAG_SIGNED`] is set.
    pub fn is_signed(&self) -> bool {
        self.flags & FLAG_SIGNED != 0
    }
}

/// Copy a slice whose length the caller knows into an array.
fn array<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    out
}

/// What a signature covers: a fixed context string and the index's SHA-256. The index
/// names every blob digest and the runner's hash, so this covers the whole file.
pub fn signed_message(index_sha256: &[u8; 32]) -> Vec<u8> {
    let mut message = b"airlock-bundle-v1\0".to_vec();
    message.extend_from_slice(index_sha256);
    message
}

/// `value` rounded up to the next multiple of [`ALIGNMENT`].
pub fn align_up(value: u64) -> u64 {
    value.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// The bundle's table of contents, stored as JSON just before the trailer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Index {
    /// Equal to [`FORMAT_VERSION`].
    pub format_version: u16,
    /// `airlock <version>` that wrote the bundle.
    pub created_by: String,
    /// The image the bundle carries.
    pub image: IndexImage,
    /// The runner binary at the start of the file.
    pub runner: Runner,
    /// Every blob of the image, sorted by digest, at increasing offsets.
    pub blobs: Vec<BlobEntry>,
    /// The SBOM blob (CycloneDX JSON), when the bundle has one; it is one of `blobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Digest>,
    /// A Clusterfile template for this image (`bundle --clusterfile`); one of `blobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusterfile: Option<Digest>,
    /// Who signed the bundle, when it is signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
    /// For a delta bundle: the bundle whose blobs this one leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Base>,
}

/// The image a bundle carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexImage {
    /// The name as stored (`registry.local/cluster:v1`).
    pub name: String,
    /// Its top-level index or manifest.
    pub descriptor: Descriptor,
}

/// The runner binary region `[0, size)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Runner {
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub digest: Digest,
}

/// One blob in the payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlobEntry {
    /// Its digest.
    pub digest: Digest,
    /// Where it starts in the file (a multiple of [`ALIGNMENT`]); absent when it is
    /// in the base bundle of a delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Its size.
    pub size: u64,
    /// Its media type, when a manifest names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// The public key that signed a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signer {
    /// `ed25519`.
    pub algorithm: String,
    /// The 32-byte public key, hex.
    pub public_key: String,
    /// `SHA256:` and the base64 of the SHA-256 of the public key (as shown to users).
    pub fingerprint: String,
}

/// The base of a delta bundle: the complete bundle (or the store image) whose blobs
/// the delta leaves out. Running the delta needs a complete bundle of `image_digest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Base {
    /// The base image's name.
    pub image: String,
    /// The base image's top-level digest: the base bundle must carry this image.
    pub image_digest: Digest,
    /// The SHA-256 of the base bundle's index, when the delta was made against a
    /// bundle (`--base OLD.run`); absent when made against a store image
    /// (`--base NAME`), as any complete bundle of that image will do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Trailer {
        Trailer {
            flags: FLAG_SIGNED,
            payload_start: 8192,
            index_offset: 123_456,
            index_len: 789,
            index_sha256: [7; 32],
            signature: [9; 64],
        }
    }

    #[test]
    fn trailer_round_trips() {
        let t = sample();
        assert_eq!(Trailer::decode(&t.encode()), Ok(t));
    }

    #[test]
    fn every_bit_flip_in_the_trailer_is_caught() {
        let good = sample().encode();
        for byte in 0..TRAILER_SIZE {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                assert!(
                    Trailer::decode(&bad).is_err(),
                    "flip at {byte}:{bit} passed"
                );
            }
        }
    }

    #[test]
    fn newer_versions_and_unknown_flags_are_refused() {
        let mut bytes = sample().encode();
        bytes[field::VERSION].copy_from_slice(&2u16.to_le_bytes());
        let checksum = Sha256::digest(&bytes[..field::CHECKSUM.start]);
        bytes[field::CHECKSUM].copy_from_slice(&checksum);
        assert_eq!(Trailer::decode(&bytes), Err(TrailerError::Version(2)));
        let t = Trailer {
            flags: 0x80,
            ..sample()
        };
        assert_eq!(
            Trailer::decode(&t.encode()),
            Err(TrailerError::Reserved(0x80))
        );
    }

    #[test]
    fn align_up_rounds_to_pages() {
        assert_eq!(align_up(0), 0);
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_up(4096), 4096);
        assert_eq!(align_up(4097), 8192);
    }
}
