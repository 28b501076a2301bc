//! airlock: build, ship and run whole clusters offline.
//!
//! The flow of the product, and where each part lives:
//! 1. [`spec`] reads what users write (Kubefile, Clusterfile, image references):
//!    pure types and validation, no I/O beyond reading the file it is given.
//! 2. [`image`] builds cluster images into the local OCI [`image::store::Store`].
//! 3. [`registry`] serves a store (or a bundle) over the OCI distribution API, and
//!    pulls container images from registries into the store.
//! 4. [`bundle`] writes and reads self-extracting installers.
//! 5. [`remote`] runs commands and copies files on hosts over SSH.
//! 6. [`distribute`] fans blobs out node to node (the install engine's blobs step).
//! 7. [`install`] turns a Clusterfile and an image into a plan and runs it on hosts,
//!    after [`preflight`] has checked every host read-only.
//! 8. [`runtime`] holds what a cluster runtime needs beyond the install engine:
//!    for Kubernetes, the PKI, kubeconfigs and the API server load balancer.
//! 9. [`wizard`] is the full-screen terminal face of the same flow.
//!
//! The binary (`src/main.rs` and [`commands`]) is the only place that prints,
//! reads the environment or owns the terminal.

pub mod bundle;
pub mod cli;
pub mod commands;
pub mod digest;
pub mod distribute;
pub mod image;
pub mod install;
pub mod preflight;
pub mod printer;
pub mod registry;
pub mod remote;
pub mod runtime;
pub mod settings;
pub mod spec;
pub mod wizard;
