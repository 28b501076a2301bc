//! The embedded OCI registry, serving any [`crate::image::BlobSource`].
