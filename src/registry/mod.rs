//! The OCI distribution protocol: the embedded registry ([`server`]) and the client
//! that moves images between registries and the store ([`client`]).
//!
//! 1. [`server::RegistryServer`] serves any [`crate::image::BlobSource`]; names come
//!    from [`catalog`], pushes go through `upload`, errors through [`error`].
//! 2. [`client::RegistryClient`] pulls and pushes over HTTP(S) with the auth schemes
//!    real registries use.
//! 3. [`tls`] makes the airlock CA and server certificates and the TLS listener.

pub mod auth;
pub mod catalog;
pub mod client;
pub mod error;
mod fair;
mod homed;
pub mod htpasswd;
mod lanes;
mod mapped;
pub mod server;
pub mod tls;
mod upload;
mod zerocopy;
