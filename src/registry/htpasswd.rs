//! Basic auth for the embedded registry, from an htpasswd file of bcrypt hashes.
//!
//! 1. [`Htpasswd::load`] reads `user:$2y$...` lines (the format `htpasswd -B` and
//!    distribution use); any other hash is refused with the line number.
//! 2. [`Htpasswd::check`] verifies an `Authorization: Basic` value. bcrypt is slow on
//!    purpose, so values that verified once are remembered (by their SHA-256, never
//!    in clear) and later requests cost a hash lookup.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::digest::Digest;

/// Why an htpasswd file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not `user:bcrypt-hash`.
    #[error("{path}:{line}: expected USER:BCRYPT-HASH (create it with `htpasswd -B`)")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// Users and their bcrypt hashes.
#[derive(Debug, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    verified: Mutex<HashSet<Digest>>,
}

impl Htpasswd {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
        let text = fs_err::read_to_string(path).map_err(|source| HtpasswdError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || HtpasswdError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
            };
            let (user, hash) = line.split_once(':').ok_or_else(bad)?;
            if user.is_empty() || !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                return Err(bad());
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Self {
            users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether `authorization` (the header value) names a user with the right password.
    pub fn check(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let key = Digest::of(value.as_bytes());
        if self.verified.lock().is_ok_and(|v| v.contains(&key)) {
            return true;
        }
        let Some(encoded) = value.strip_prefix("Basic ") else {
            return false;
        };
        let Some(decoded) = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        let ok = self
            .users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
        if ok && let Ok(mut v) = self.verified.lock() {
            v.insert(key);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_bcrypt_users_and_rejects_other_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("pw", 4).unwrap();
        fs_err::write(&path, format!("# users\nbob:{hash}\n")).unwrap();
        let h = Htpasswd::load(&path).unwrap();
        let header = |s: &str| format!("Basic {}", STANDARD.encode(s));
        assert!(h.check(Some(&header("bob:pw"))));
        assert!(h.check(Some(&header("bob:pw"))));
        assert!(!h.check(Some(&header("bob:wrong"))));
        assert!(!h.check(Some(&header("eve:pw"))));
        assert!(!h.check(None));
        fs_err::write(&path, "bob:{SHA}abc\n").unwrap();
        let err = Htpasswd::load(&path).unwrap_err();
        assert!(err.to_string().contains(":1:"), "{err}");
    }
}
