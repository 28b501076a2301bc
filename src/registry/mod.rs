//! The OCI distribution protocol: the embedded registry ([`server`]) and the client
//! that fetches images from registries into the store ([`client`]).

pub mod client;
pub mod server;
