//! The configuration files the install writes on hosts, rendered as text.

use std::collections::BTreeSet;

use crate::spec::reference::Reference;

/// The upstream server containerd would use for `domain` without a mirror.
fn upstream(domain: &str) -> String {
    if domain == "docker.io" {
        "https://registry-1.docker.io".to_string()
    } else {
        format!("https://{domain}")
    }
}

/// containerd's `certs.d/<domain>/hosts.toml`: pull and resolve `domain`'s images from
/// the cluster registry at `mirror` (`http://sea.hub:5000`). The image names stay as
/// they are; containerd adds `?ns=<domain>` so the registry knows which domain is meant.
pub fn hosts_toml(domain: &str, mirror: &str) -> String {
    format!(
        "# written by airlock: {domain} images come from the cluster registry\n\
         server = \"{}\"\n\n\
         [host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        upstream(domain)
    )
}

/// Every registry domain the image's container images come from, plus the cluster
/// registry's own `registry_domain:port`, sorted and without duplicates.
pub fn mirror_domains(
    images: &[Reference],
    registry_domain: &str,
    registry_port: u16,
) -> Vec<String> {
    let mut out: BTreeSet<String> = images.iter().map(|r| r.domain.clone()).collect();
    out.insert(format!("{registry_domain}:{registry_port}"));
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_toml_points_the_domain_at_the_mirror() {
        let t = hosts_toml("docker.io", "http://sea.hub:5000");
        assert!(t.contains("server = \"https://registry-1.docker.io\""));
        assert!(t.contains("[host.\"http://sea.hub:5000\"]"));
        assert!(t.contains("capabilities = [\"pull\", \"resolve\"]"));
        assert!(hosts_toml("quay.io", "http://x:1").contains("server = \"https://quay.io\""));
    }

    #[test]
    fn domains_are_unique_and_include_the_registry() {
        let refs: Vec<Reference> = ["nginx", "busybox", "quay.io/a/b"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            mirror_domains(&refs, "sea.hub", 5000),
            ["docker.io", "quay.io", "sea.hub:5000"]
        );
    }
}
