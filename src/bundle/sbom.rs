//! The bundle's software bill of materials: CycloneDX 1.5 JSON.
//!
//! 1. [`contents`] reads the image's top-level index (or manifest) and lists the
//!    cluster rootfs and every container image it carries, with their digests.
//! 2. [`cyclonedx`] turns that list and the runner binary's hash into a CycloneDX
//!    document. It has no timestamp and its serial number is derived from its
//!    content, so the same image and runner give the same bytes.
//! 3. The writer stores it as one more blob of the payload; `info` shows it.

use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::format::Runner;
use crate::digest::Digest;
use crate::image::oci::{self, AnyManifest, Descriptor};

/// One image the bundle carries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ImageEntry {
    /// `rootfs` or `container-image`.
    pub role: String,
    /// The original reference, or the bundle's image name for the rootfs.
    pub reference: String,
    /// Digest of its manifest or index.
    pub digest: Digest,
    /// Its platform, when the index says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// The images in `top` (whose bytes are `top_bytes`): the entries of an index, or the
/// manifest itself. `name` is the bundle image's name.
pub fn contents(name: &str, top: &Descriptor, top_bytes: &[u8]) -> Vec<ImageEntry> {
    if !oci::is_index(&top.media_type) {
        return vec![ImageEntry {
            role: oci::ROLE_ROOTFS.to_string(),
            reference: name.to_string(),
            digest: top.digest.clone(),
            platform: None,
        }];
    }
    let Ok(index) = serde_json::from_slice::<AnyManifest>(top_bytes) else {
        return Vec::new();
    };
    index
        .manifests
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let role = d
                .annotation(oci::ANNOTATION_ROLE)
                .unwrap_or(if i == 0 {
                    oci::ROLE_ROOTFS
                } else {
                    oci::ROLE_CONTAINER_IMAGE
                })
                .to_string();
            let reference = d
                .annotation(oci::ANNOTATION_IMAGE_REF)
                .map_or_else(|| name.to_string(), str::to_string);
            ImageEntry {
                role,
                reference,
                digest: d.digest.clone(),
                platform: d.platform.as_ref().map(ToString::to_string),
            }
        })
        .collect()
}

/// The CycloneDX JSON bytes for a bundle of `name` holding `images`, run by `runner`.
pub fn cyclonedx(
    name: &str,
    top: &Digest,
    images: &[ImageEntry],
    runner: &Runner,
    created_by: &str,
) -> Vec<u8> {
    let hash = |d: &Digest| json!([{ "alg": "SHA-256", "content": d.hex() }]);
    let mut components = vec![json!({
        "type": "application",
        "bom-ref": "runner",
        "name": "airlock",
        "version": created_by.trim_start_matches("airlock ").to_string(),
        "description": "the airlock binary that runs the bundle",
        "hashes": hash(&runner.digest),
    })];
    for image in images {
        components.push(json!({
            "type": "container",
            "bom-ref": image.digest.to_string(),
            "name": image.reference,
            "version": image.digest.to_string(),
            "description": image.role,
            "hashes": hash(&image.digest),
            "properties": image.platform.as_ref().map(|p| vec![json!({"name": "platform", "value": p})]).unwrap_or_default(),
        }));
    }
    let body = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "tools": { "components": [{ "type": "application", "name": "airlock", "version": created_by.trim_start_matches("airlock ") }] },
            "component": { "type": "container", "bom-ref": top.to_string(), "name": name, "version": top.to_string(), "hashes": hash(top) },
        },
        "components": components,
    });
    let serial = serial_number(&serde_json::to_vec(&body).unwrap_or_default());
    let mut document = json!({ "serialNumber": serial });
    if let (Some(doc), Some(fields)) = (document.as_object_mut(), body.as_object()) {
        for (k, v) in fields {
            doc.insert(k.clone(), v.clone());
        }
    }
    let mut bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// A version-5-style UUID URN derived from `content`, so it is stable.
fn serial_number(content: &[u8]) -> String {
    let h = Sha256::digest(content);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_become_components_and_output_is_stable() {
        let rootfs = Digest::of(b"rootfs");
        let nginx = Digest::of(b"nginx");
        let mut a = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, rootfs, 1);
        a.annotations
            .insert(oci::ANNOTATION_ROLE.into(), oci::ROLE_ROOTFS.into());
        let mut b = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, nginx.clone(), 1);
        b.annotations.insert(
            oci::ANNOTATION_IMAGE_REF.into(),
            "docker.io/library/nginx:1.25".into(),
        );
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [a, b]})).unwrap();
        let top = Descriptor::new(
            oci::MEDIA_TYPE_INDEX,
            Digest::of(&index),
            index.len() as u64,
        );
        let images = contents("c:1", &top, &index);
        assert_eq!(images.len(), 2);
        assert_eq!(images[1].reference, "docker.io/library/nginx:1.25");
        assert_eq!(images[1].role, oci::ROLE_CONTAINER_IMAGE);
        let runner = Runner {
            size: 1,
            digest: Digest::of(b"x"),
        };
        let one = cyclonedx("c:1", &top.digest, &images, &runner, "airlock 0.1.0");
        let two = cyclonedx("c:1", &top.digest, &images, &runner, "airlock 0.1.0");
        assert_eq!(one, two);
        let parsed: serde_json::Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(parsed["bomFormat"], "CycloneDX");
        assert_eq!(parsed["components"].as_array().unwrap().len(), 3);
        assert!(String::from_utf8_lossy(&one).contains(nginx.hex()));
    }
}
