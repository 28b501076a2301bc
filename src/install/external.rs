//! External registry mode: the image set goes to a registry the customer runs (e.g.
//! Harbor) instead of a registry on the nodes.
//!
//! 1. [`images`] lists the container images of the cluster image: each one's
//!    original reference and the descriptor of its manifest or index.
//! 2. [`push_image_set`] pushes each with airlock's registry client to the same
//!    repository path and tag in the external registry (`docker.io/library/nginx:1.25`
//!    becomes `HOST/library/nginx:1.25`, which containerd's mirror request for the
//!    original name asks for), with the registry's credentials and CA. Blobs and
//!    manifests the registry already has are not sent again.
//! 3. The Mirrors step then points every registry domain of the image at it
//!    (`crate::install::registry_node::mirror_files`).

use crate::image::oci::{self, Descriptor, ImageIndex};
use crate::image::{BlobSource, read_blob};
use crate::registry::auth::Credentials;
use crate::registry::client::{ClientConfig, ClientError, PushSummary, RegistryClient};
use crate::spec::clusterfile::ExternalRegistry;
use crate::spec::reference::Reference;

/// Why the image set could not be pushed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The cluster image cannot be read.
    #[error("reading the cluster image: {0}")]
    Image(String),
    /// The registry refused or could not be reached.
    #[error("pushing {image} to {registry}: {source}")]
    Push {
        /// The container image (original name).
        image: String,
        /// The external registry.
        registry: String,
        /// The cause.
        source: Box<ClientError>,
    },
}

/// The container images of the cluster image whose top-level index is `top`: original
/// reference and descriptor.
pub fn images(
    source: &dyn BlobSource,
    top: &Descriptor,
) -> Result<Vec<(Reference, Descriptor)>, PushError> {
    let bytes = read_blob(source, &top.digest).map_err(|e| PushError::Image(e.to_string()))?;
    let index: ImageIndex = serde_json::from_slice(&bytes)
        .map_err(|e| PushError::Image(format!("top-level index is not valid: {e}")))?;
    let mut out = Vec::new();
    for entry in index
        .manifests
        .iter()
        .filter(|d| d.annotation(oci::ANNOTATION_ROLE) == Some(oci::ROLE_CONTAINER_IMAGE))
    {
        if let Some(r) = entry.annotation(oci::ANNOTATION_IMAGE_REF) {
            let reference: Reference = r
                .parse()
                .map_err(|e| PushError::Image(format!("bad image reference {r:?}: {e}")))?;
            out.push((reference, entry.clone()));
        }
    }
    Ok(out)
}

/// Where `reference` goes in the registry at `host`: same repository, tag and digest.
pub fn destination(reference: &Reference, host: &str) -> Reference {
    Reference {
        domain: host.to_string(),
        ..reference.clone()
    }
}

/// Push every container image of the cluster image (index `top` in `source`) to
/// `registry`, calling `log` with a line per image; returns the totals.
pub async fn push_image_set(
    source: &dyn BlobSource,
    top: &Descriptor,
    registry: &ExternalRegistry,
    log: &(dyn Fn(String) + Send + Sync),
) -> Result<PushSummary, PushError> {
    let config = ClientConfig {
        insecure: if registry.insecure {
            vec![registry.host.clone()]
        } else {
            Vec::new()
        },
        ca_certs: registry.ca_file.iter().cloned().collect(),
        retries: 2,
        ..ClientConfig::default()
    };
    let push_error = |image: String| {
        let registry = registry.host.clone();
        move |source| PushError::Push {
            image,
            registry,
            source: Box::new(source),
        }
    };
    let mut client = RegistryClient::new(config).map_err(push_error(String::new()))?;
    if let Some((username, password)) = &registry.credentials {
        client = client.with_credentials(
            &registry.host,
            Credentials {
                username: username.clone(),
                password: password.clone(),
            },
        );
    }
    let mut total = PushSummary::default();
    for (reference, descriptor) in images(source, top)? {
        let to = destination(&reference, &registry.host);
        let summary = client
            .push_from(source, &descriptor, &to)
            .await
            .map_err(push_error(reference.to_string()))?;
        log(format!(
            "pushed {reference} to {}: {} sent ({} bytes), {} already there",
            to.name(),
            summary.uploaded,
            summary.bytes,
            summary.skipped
        ));
        total.uploaded += summary.uploaded;
        total.skipped += summary.skipped;
        total.bytes += summary.bytes;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_keeps_repository_tag_and_digest() {
        let r: Reference = "docker.io/library/nginx:1.25".parse().unwrap();
        let d = destination(&r, "harbor.example.com:8443");
        assert_eq!(d.to_string(), "harbor.example.com:8443/library/nginx:1.25");
        let r: Reference = format!("quay.io/a/b@sha256:{}", "a".repeat(64))
            .parse()
            .unwrap();
        assert_eq!(destination(&r, "h").repository, "a/b");
        assert_eq!(destination(&r, "h").digest, r.digest);
    }
}
