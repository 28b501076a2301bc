//! Signing bundles with ed25519.
//!
//! 1. `airlock key generate` makes a key pair from 32 random bytes the caller supplies;
//!    the secret key file is written 0600 by the command, the public one 0644.
//! 2. `airlock bundle --sign KEY` puts the signer's public key in the index
//!    ([`format::Signer`]), then signs [`format::signed_message`] (the index's SHA-256)
//!    into the trailer. The index covers every blob digest and the runner's hash.
//! 3. [`verify_bundle`] checks that the signature matches the key the index names
//!    (integrity); [`check_trust`] checks that this key is the one the user trusts.
//!
//! Key files are one line: `airlock-ed25519-secret <base64>` or
//! `airlock-ed25519-public <base64>`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::format::{self, Signer};
use super::reader::{Bundle, BundleError};

const SECRET_PREFIX: &str = "airlock-ed25519-secret";
const PUBLIC_PREFIX: &str = "airlock-ed25519-public";
/// The value of [`Signer::algorithm`].
pub const ALGORITHM: &str = "ed25519";

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not in the expected one-line format.
    #[error(
        "{what}: expected one line `{prefix} <base64 of 32 bytes>` (see `airlock key generate`)"
    )]
    Format {
        /// The file, or `the key`.
        what: String,
        /// The expected prefix.
        prefix: &'static str,
    },
    /// The bytes are not a valid ed25519 public key.
    #[error("{what}: not a valid ed25519 public key")]
    InvalidPublicKey {
        /// The file, or `the key`.
        what: String,
    },
}

/// Why a verified bundle is still not trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    /// The bundle carries no signature but one was required.
    #[error("the bundle is not signed, but a trusted key was given: refusing it")]
    Unsigned,
    /// Signed by another key.
    #[error("the bundle is signed by {actual}, not by the trusted key {expected}: refusing it")]
    OtherSigner {
        /// The trusted key's fingerprint.
        expected: String,
        /// The signer's.
        actual: String,
    },
}

/// A key pair as the two files `airlock key generate` writes.
pub struct KeyFiles {
    /// The secret key file's content (write it 0600).
    pub secret: crate::remote::Secret,
    /// The public key file's content.
    pub public: String,
    /// The public key's fingerprint.
    pub fingerprint: String,
}

/// Make a key pair from 32 random bytes.
pub fn generate(seed: [u8; 32]) -> KeyFiles {
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key();
    KeyFiles {
        secret: crate::remote::Secret::new(format!(
            "{SECRET_PREFIX} {}\n",
            STANDARD.encode(key.to_bytes())
        )),
        public: public_key_line(&public),
        fingerprint: fingerprint(&public),
    }
}

/// The one-line public key file of `key`.
pub fn public_key_line(key: &VerifyingKey) -> String {
    format!("{PUBLIC_PREFIX} {}\n", STANDARD.encode(key.to_bytes()))
}

/// Parse a secret key file's content; `what` names the file in errors.
pub fn parse_secret(text: &str, what: &str) -> Result<SigningKey, KeyError> {
    let bytes = parse_line(text, SECRET_PREFIX, what)?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Parse a public key file's content; `what` names the file in errors.
pub fn parse_public(text: &str, what: &str) -> Result<VerifyingKey, KeyError> {
    let bytes = parse_line(text, PUBLIC_PREFIX, what)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPublicKey {
        what: what.to_string(),
    })
}

fn parse_line(text: &str, prefix: &'static str, what: &str) -> Result<[u8; 32], KeyError> {
    let error = || KeyError::Format {
        what: what.to_string(),
        prefix,
    };
    let encoded = text
        .trim()
        .strip_prefix(prefix)
        .map(str::trim)
        .ok_or_else(error)?;
    let bytes = STANDARD.decode(encoded).map_err(|_| error())?;
    bytes.try_into().map_err(|_| error())
}

/// `SHA256:<base64>` of the public key bytes, the form users compare.
pub fn fingerprint(key: &VerifyingKey) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(key.to_bytes()))
    )
}

/// The index entry naming `key` as the signer.
pub fn signer_entry(key: &VerifyingKey) -> Signer {
    Signer {
        algorithm: ALGORITHM.to_string(),
        public_key: hex::encode(key.to_bytes()),
        fingerprint: fingerprint(key),
    }
}

/// Sign an index's SHA-256; the result goes into the trailer.
pub fn sign(key: &SigningKey, index_sha256: &[u8; 32]) -> [u8; 64] {
    key.sign(&format::signed_message(index_sha256)).to_bytes()
}

/// The key named by the index's signer entry.
fn signer_key(signer: &Signer) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(&signer.public_key).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Check the bundle's signature against the key its index names. An unsigned bundle
/// passes (whether that is acceptable is [`check_trust`]'s decision).
pub fn verify_bundle(bundle: &Bundle) -> Result<(), BundleError> {
    let invalid = |reason: &str| BundleError::SignatureInvalid {
        path: bundle.path().to_path_buf(),
        reason: reason.to_string(),
    };
    let signer = bundle.index().signer.as_ref();
    let trailer = bundle.trailer();
    match (trailer.is_signed(), signer) {
        (false, None) => Ok(()),
        (true, None) => Err(invalid(
            "the trailer says the bundle is signed but its index names no signer",
        )),
        (false, Some(_)) => Err(invalid(
            "the index names a signer but the trailer carries no signature",
        )),
        (true, Some(signer)) => {
            let key = signer_key(signer)
                .filter(|_| signer.algorithm == ALGORITHM)
                .ok_or_else(|| {
                    invalid("the signer's public key in the index is not a valid ed25519 key")
                })?;
            let signature = Signature::from_bytes(&trailer.signature);
            key.verify_strict(&format::signed_message(&trailer.index_sha256), &signature)
                .map_err(|_| BundleError::BadSignature {
                    path: bundle.path().to_path_buf(),
                    fingerprint: fingerprint(&key),
                })
        }
    }
}

/// Check that the bundle was signed by `trusted` (given as a key or a fingerprint).
/// Call after [`verify_bundle`].
pub fn check_trust(bundle: &Bundle, trusted_fingerprint: &str) -> Result<(), TrustError> {
    let signer = bundle
        .index()
        .signer
        .as_ref()
        .filter(|_| bundle.trailer().is_signed())
        .ok_or(TrustError::Unsigned)?;
    if signer.fingerprint == trusted_fingerprint {
        Ok(())
    } else {
        Err(TrustError::OtherSigner {
            expected: trusted_fingerprint.to_string(),
            actual: signer.fingerprint.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_files() {
        let files = generate([5; 32]);
        let secret = parse_secret(files.secret.expose(), "k").unwrap();
        let public = parse_public(&files.public, "k.pub").unwrap();
        assert_eq!(secret.verifying_key(), public);
        assert_eq!(fingerprint(&public), files.fingerprint);
        assert!(files.fingerprint.starts_with("SHA256:"));
        let err = parse_public(files.secret.expose(), "k").unwrap_err();
        assert!(err.to_string().contains("airlock-ed25519-public"), "{err}");
    }

    #[test]
    fn signatures_cover_the_index_hash() {
        let key = parse_secret(generate([1; 32]).secret.expose(), "k").unwrap();
        let signature = Signature::from_bytes(&sign(&key, &[3; 32]));
        let public = key.verifying_key();
        assert!(
            public
                .verify_strict(&format::signed_message(&[3; 32]), &signature)
                .is_ok()
        );
        assert!(
            public
                .verify_strict(&format::signed_message(&[4; 32]), &signature)
                .is_err()
        );
    }
}
