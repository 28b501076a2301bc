//! Self-extracting bundles: `airlock binary | payload | index | trailer`.
//!
//! 1. [`writer::pack`] writes an image of the local store after a runner binary:
//!    blobs back to back at aligned offsets, a JSON [`format::Index`], a fixed-size
//!    [`format::Trailer`] (layout: `docs/bundle-format.md`).
//! 2. [`reader::Bundle::open_self`] tells at start-up whether the running executable
//!    is a bundle; [`reader::Bundle::open`] opens any bundle file.
//! 3. A [`reader::Bundle`] is a [`crate::image::BlobSource`]: the installer and the
//!    registry read blobs at their offsets in the file, with no copy.
//! 4. [`reader::Bundle::verify`] re-hashes everything before any host is touched;
//!    [`signing`] checks who signed it; [`summary`] says what it holds.

pub mod elf;
pub mod format;
pub mod iso;
pub mod reader;
pub mod sbom;
pub mod signing;
pub mod summary;
pub mod writer;

pub use reader::{Bundle, BundleError};
pub use writer::{DeltaBase, PackError, PackOptions, PackSummary, extract, pack};
