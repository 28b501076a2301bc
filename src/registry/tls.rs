//! TLS for the embedded registry: an airlock CA, server certificates it issues, and a
//! listener that speaks TLS.
//!
//! 1. [`generate_ca`] makes a CA (ECDSA P-256, valid 100 years) and writes `ca.pem`
//!    (0644) and `ca-key.pem` (0600) into a directory; [`CertificateAuthority::load`]
//!    reads them back, so one CA can issue certificates across runs.
//! 2. [`issue_server_cert`] issues a server certificate for the given names and
//!    addresses (subject alternative names) and writes `server.pem` (the certificate
//!    then the CA) and `server-key.pem` (0600).
//! 3. [`server_config`] loads a certificate chain and key (given by the user or
//!    issued above) into a rustls configuration with the ring provider.
//! 4. [`TlsListener`] accepts TCP connections, runs each handshake on its own task
//!    (bounded in number and time, so a slow client never stalls accepting), and hands
//!    finished TLS streams to `axum::serve`.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

use super::homed::Homed;

/// How long certificates made here are valid: 100 years.
pub const VALIDITY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
/// How far back `notBefore` is set, for hosts whose clocks lag.
const BACKDATE: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Handshakes running at once.
const MAX_HANDSHAKES: usize = 256;

/// File names inside the directories this module writes.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// A server certificate chain (certificate, then the CA).
pub const SERVER_CERT_FILE: &str = "server.pem";
/// A server's private key.
pub const SERVER_KEY_FILE: &str = "server-key.pem";

/// Why a TLS file could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to give instead.
        reason: String,
    },
    /// A subject alternative name is neither an IP address nor a DNS name.
    #[error("cannot put {name:?} in a certificate: not an IP address or DNS name")]
    BadName {
        /// The name.
        name: String,
    },
    /// A server certificate was asked for without any name.
    #[error("a server certificate needs at least one IP address or DNS name")]
    NoNames,
    /// The certificate could not be generated or signed.
    #[error("generating a certificate: {0}")]
    Generate(String),
    /// The certificate and key do not form a usable server identity.
    #[error("{cert} with {key}: {reason}")]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls refused.
        reason: String,
    },
}

fn generate_error(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// An airlock CA: its certificate and the key that signs server certificates.
pub struct CertificateAuthority {
    /// `ca.pem`: give it to clients (`--ca-cert`, containerd's `hosts.toml` `ca`).
    pub cert_path: PathBuf,
    /// `ca-key.pem` (0600).
    pub key_path: PathBuf,
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Read `ca.pem` and `ca-key.pem` from `dir` (written by [`generate_ca`]).
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read_text(&cert_path)?;
        let key_pem = read_text(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::BadFile {
            path: key_path.clone(),
            reason: format!("not a PEM private key ({e}); regenerate the CA"),
        })?;
        Issuer::from_ca_cert_pem(&cert_pem, &key).map_err(|e| TlsError::BadFile {
            path: cert_path.clone(),
            reason: format!("not a PEM CA certificate ({e}); regenerate the CA"),
        })?;
        Ok(Self {
            cert_path,
            key_path,
            cert_pem,
            key,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

/// A server certificate issued by [`issue_server_cert`].
#[derive(Clone, Debug)]
pub struct ServerCertificate {
    /// `server.pem`: the certificate, then the CA.
    pub cert_path: PathBuf,
    /// `server-key.pem` (0600).
    pub key_path: PathBuf,
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    fs_err::read_to_string(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// Write `bytes` to `path` atomically with permissions `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let io_error = |source| TlsError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir).map_err(io_error)?;
    // temp files start 0600, so a key is never readable by others, even briefly
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_error)?;
    tmp.write_all(bytes).map_err(io_error)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_error)?;
    tmp.as_file().sync_all().map_err(io_error)?;
    tmp.persist(path).map_err(|e| io_error(e.error))?;
    Ok(())
}

/// A random positive serial number.
fn serial_number() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// Valid from a day before `now` for [`VALIDITY`].
fn set_validity(params: &mut CertificateParams, now: SystemTime) {
    params.not_before = time::OffsetDateTime::from(now - BACKDATE);
    params.not_after = time::OffsetDateTime::from(now + VALIDITY);
}

/// Make a new CA valid 100 years from `now`, writing `ca.pem` and `ca-key.pem`
/// (0600) into `dir` (created if missing).
pub fn generate_ca(dir: &Path, now: SystemTime) -> Result<CertificateAuthority, TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "airlock");
    params
        .distinguished_name
        .push(DnType::CommonName, "airlock registry CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(serial_number());
    set_validity(&mut params, now);
    let key = KeyPair::generate().map_err(generate_error)?;
    let cert = params.self_signed(&key).map_err(generate_error)?;
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    let cert_pem = cert.pem();
    write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
    Ok(CertificateAuthority {
        cert_path,
        key_path,
        cert_pem,
        key,
    })
}

/// Issue a server certificate for `sans` (IP addresses and DNS names; the first is
/// also the common name) signed by `ca`, valid 100 years from `now`, writing
/// `server.pem` and `server-key.pem` (0600) into `dir`.
pub fn issue_server_cert(
    ca: &CertificateAuthority,
    sans: &[String],
    dir: &Path,
    now: SystemTime,
) -> Result<ServerCertificate, TlsError> {
    let Some(first) = sans.first() else {
        return Err(TlsError::NoNames);
    };
    if let Some(bad) = sans
        .iter()
        .find(|s| rustls::pki_types::ServerName::try_from(s.as_str()).is_err())
    {
        return Err(TlsError::BadName { name: bad.clone() });
    }
    let mut params = CertificateParams::new(sans.to_vec()).map_err(generate_error)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "airlock");
    params.distinguished_name.push(DnType::CommonName, first);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial_number());
    set_validity(&mut params, now);
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca.key).map_err(generate_error)?;
    let key = KeyPair::generate().map_err(generate_error)?;
    let cert = params.signed_by(&key, &issuer).map_err(generate_error)?;
    let cert_path = dir.join(SERVER_CERT_FILE);
    let key_path = dir.join(SERVER_KEY_FILE);
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    let chain = format!("{}{}", cert.pem(), ca.cert_pem);
    write_file(&cert_path, chain.as_bytes(), 0o644)?;
    Ok(ServerCertificate {
        cert_path,
        key_path,
    })
}

/// A rustls server configuration (ring provider, HTTP/1.1) for the certificate chain
/// in `cert` and the private key in `key`, both PEM.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| TlsError::BadFile {
            path: cert.to_path_buf(),
            reason: format!("cannot read PEM certificates ({e})"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::BadFile {
            path: cert.to_path_buf(),
            reason: "holds no certificate; give a PEM file with BEGIN CERTIFICATE blocks"
                .to_string(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::BadFile {
        path: key.to_path_buf(),
        reason: format!("no PEM private key in it ({e}); give a PKCS#8, SEC1 or PKCS#1 key"),
    })?;
    let identity = |e: rustls::Error| TlsError::Identity {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(identity)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(identity)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener handing out TLS streams whose handshake has finished.
pub(crate) struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<Homed>, SocketAddr)>,
    local_addr: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accept on `listener`, with `config` for every handshake.
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, incoming) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // out of file descriptors and the like: wait, then go on
                        tracing::warn!("registry: accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(Homed::new(tcp)))
                            .await;
                    drop(permit);
                    match handshake {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("registry: TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::debug!("registry: TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        Ok(Self {
            incoming,
            local_addr,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Homed>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(accepted) => accepted,
            // the accepting task only ends when this listener is dropped
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn ca_and_server_certificates_are_written_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ca = generate_ca(&dir.path().join("ca"), now).unwrap();
        let mode = |p: &Path| fs_err::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&ca.key_path), 0o600);
        assert_eq!(mode(&ca.cert_path), 0o644);
        let loaded = CertificateAuthority::load(&dir.path().join("ca")).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let server = issue_server_cert(
            &loaded,
            &["127.0.0.1".to_string(), "registry.local".to_string()],
            &dir.path().join("server"),
            now,
        )
        .unwrap();
        assert_eq!(mode(&server.key_path), 0o600);
        let chain = fs_err::read_to_string(&server.cert_path).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(chain.ends_with(ca.cert_pem()));
        server_config(&server.cert_path, &server.key_path).unwrap();
    }

    #[test]
    fn server_certificates_verify_against_the_ca_for_their_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ca = generate_ca(dir.path(), now).unwrap();
        let server = issue_server_cert(&ca, &["198.18.0.1".to_string()], dir.path(), now).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&ca.cert_path).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&server.cert_path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let check = |name: &str, at: SystemTime| {
            use rustls::client::danger::ServerCertVerifier as _;
            verifier.verify_server_cert(
                &chain[0],
                &chain[1..],
                &rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
                &[],
                rustls::pki_types::UnixTime::since_unix_epoch(
                    at.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
                ),
            )
        };
        check("198.18.0.1", now).unwrap();
        check(
            "198.18.0.1",
            now + Duration::from_secs(99 * 365 * 24 * 3600),
        )
        .unwrap();
        assert!(check("198.18.0.2", now).is_err());
        assert!(check("198.18.0.1", now + VALIDITY + BACKDATE).is_err());
    }

    #[test]
    fn bad_files_and_names_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs_err::write(&empty, "").unwrap();
        let err = server_config(&empty, &empty).unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let ca = generate_ca(dir.path(), SystemTime::now()).unwrap();
        let err = issue_server_cert(
            &ca,
            &["bad name!".to_string()],
            dir.path(),
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::BadName { .. }), "{err}");
        let err = CertificateAuthority::load(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }
}
