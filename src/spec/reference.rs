//! Container image references, normalised the way Docker and containerd do.
//!
//! `nginx` means `docker.io/library/nginx:latest`; `quay.io/x/y@sha256:...` keeps its
//! digest. A [`Reference`] always has a domain and a repository path, and a tag, a
//! digest, or both.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry domain that references without one belong to.
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// A normalised image reference.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Reference {
    /// Registry domain, with port if any: `docker.io`, `127.0.0.1:5000`.
    pub domain: String,
    /// Repository path inside the registry: `library/nginx`.
    pub repository: String,
    /// Tag, if given (`latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// Digest, if given.
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidReference {
    /// Empty input.
    #[error("empty image reference")]
    Empty,
    /// A path component breaks the distribution grammar.
    #[error("{reference:?}: {reason}")]
    Malformed {
        /// The input.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn malformed(reference: &str, reason: impl Into<String>) -> InvalidReference {
    InvalidReference::Malformed {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

fn is_valid_component(c: &str) -> bool {
    // [a-z0-9]+ separated by '.', '_', '__' or one or more '-'
    if c.is_empty() || c.len() > 255 {
        return false;
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// Whether `repository` is a valid repository path (`library/nginx`): the check the
/// registry uses on names in URLs, so `..` and empty components never pass.
pub fn is_valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(is_valid_component)
}

fn looks_like_domain(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

impl FromStr for Reference {
    type Err = InvalidReference;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(InvalidReference::Empty);
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(
                    d.parse::<Digest>()
                        .map_err(|e| malformed(input, e.to_string()))?,
                ),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = tag
            && !is_valid_tag(t)
        {
            return Err(malformed(input, format!("invalid tag {t:?}")));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest)) if looks_like_domain(first) => {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" || domain == "registry-1.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        if domain
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')))
        {
            return Err(malformed(
                input,
                format!("invalid registry domain {domain:?}"),
            ));
        }
        let repository = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if !is_valid_repository(&repository) {
            return Err(malformed(
                input,
                "repository must be lowercase letters, digits and separators (. _ __ -) between slashes",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Self {
            domain,
            repository,
            tag,
            digest,
        })
    }
}

impl Reference {
    /// `domain/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.repository)
    }

    /// What to ask a registry for: the digest if known, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The form Docker users write: `nginx:1.25` for `docker.io/library/nginx:1.25`.
    pub fn familiar(&self) -> String {
        let name = if self.domain == DEFAULT_DOMAIN {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        let mut out = name;
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(&d.to_string());
        }
        out
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(r("nginx").to_string(), "docker.io/library/nginx:latest");
        assert_eq!(r("nginx:1.25").to_string(), "docker.io/library/nginx:1.25");
        assert_eq!(
            r("bitnami/redis:7").to_string(),
            "docker.io/bitnami/redis:7"
        );
        assert_eq!(
            r("index.docker.io/library/nginx").to_string(),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            r("registry.k8s.io/pause:3.9").to_string(),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(r("localhost:5000/a/b/c:v1").domain, "localhost:5000");
        assert_eq!(r("127.0.0.1:5000/x").to_string(), "127.0.0.1:5000/x:latest");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let with_digest = r(&format!("quay.io/coreos/etcd@{d}"));
        assert_eq!(with_digest.tag, None);
        assert_eq!(with_digest.manifest_ref(), d);
        assert_eq!(
            r(&format!("nginx:1@{d}")).to_string(),
            format!("docker.io/library/nginx:1@{d}")
        );
    }

    #[test]
    fn familiar_form_drops_defaults() {
        assert_eq!(r("docker.io/library/nginx:1.25").familiar(), "nginx:1.25");
        assert_eq!(r("quay.io/a/b:1").familiar(), "quay.io/a/b:1");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Upper",
            "a/../b",
            "a//b",
            "nginx:",
            "nginx:-x",
            "a/b@sha256:zz",
            "-a",
            "a/.b",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} parsed");
        }
        assert!(!is_valid_repository("../etc"));
        assert!(is_valid_repository("library/nginx"));
    }
}
