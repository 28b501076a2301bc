//! What users write, as types: image references, the Kubefile and the Clusterfile.
//!
//! Everything here is pure: parsing and validation, with errors that name the
//! file, line or field at fault. No network, no hosts.

pub mod clusterfile;
pub mod engine_fields;
pub mod kubefile;
pub mod reference;
