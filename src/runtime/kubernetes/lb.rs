//! The API server load balancer a worker runs, so a cluster is highly available
//! without an external load balancer: kubelet and kube-proxy talk to
//! `127.0.0.1:6443` and this spreads their connections over the masters that are up.
//!
//! 1. [`LoadBalancer::bind`] listens on [`LbConfig::listen`] with the backends of
//!    [`LbConfig::backends`], all taken as up at first (so the node works before the
//!    first check has run).
//! 2. [`LoadBalancer::run`] accepts connections and hands each one to the next
//!    healthy backend in turn (round robin). If connecting to it fails, the next
//!    healthy one is tried; with none left the client's connection is closed. Bytes
//!    are copied both ways untouched: TLS goes end to end between client and API
//!    server.
//! 3. Beside it, every [`HealthCheck::interval`] each backend is probed at once:
//!    `GET /readyz` over HTTPS (or only a TCP connect, [`Probe::Tcp`]). A backend is
//!    taken out after [`HealthCheck::fall`] failed probes in a row and put back after
//!    [`HealthCheck::rise`] good ones in a row.
//! 4. An HTTPS probe counts as good when the server answers 200, or 401 or 403:
//!    the probe is anonymous, and a server that refuses an anonymous client is up
//!    and serving (anonymous access to `/readyz` can be switched off). Anything
//!    else (500 while the API server's own checks fail, no answer, a TLS failure,
//!    a refused connection, a timeout) is a failure. The server's certificate is
//!    verified against the cluster CA when one is given ([`Probe::Https::ca_pem`]),
//!    and not verified otherwise.
//! 5. [`LbHandle::set_backends`] replaces the backend list while running; backends
//!    that stay keep their health, new ones start as up. [`parse_backends`] reads the
//!    backends file the agent watches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How a backend is probed.
#[derive(Clone, Debug)]
pub enum Probe {
    /// A TCP connect that succeeds is enough.
    Tcp,
    /// `GET PATH` over HTTPS; 200, 401 and 403 count as up.
    Https {
        /// The path, e.g. `/readyz`.
        path: String,
        /// PEM of the CA to verify the server with; `None` skips verification.
        ca_pem: Option<String>,
    },
}

/// When backends are probed and how many results flip their state.
#[derive(Clone, Debug)]
pub struct HealthCheck {
    /// What a probe is.
    pub probe: Probe,
    /// Time between two rounds of probes.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Failed probes in a row that take a backend out.
    pub fall: u32,
    /// Good probes in a row that put it back.
    pub rise: u32,
}

impl Default for HealthCheck {
    /// `GET /readyz` without verification every second, 2 s timeout, out after 3
    /// failures, back after 2 successes.
    fn default() -> Self {
        Self {
            probe: Probe::Https {
                path: "/readyz".into(),
                ca_pem: None,
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            fall: 3,
            rise: 2,
        }
    }
}

/// What the load balancer does.
#[derive(Clone, Debug)]
pub struct LbConfig {
    /// Where clients connect, e.g. 127.0.0.1:6443.
    pub listen: SocketAddr,
    /// The API servers.
    pub backends: Vec<SocketAddr>,
    /// How they are probed.
    pub health: HealthCheck,
    /// How long connecting to a backend may take before the next one is tried.
    pub connect_timeout: Duration,
}

impl LbConfig {
    /// Listen on `listen` in front of `backends` with the default [`HealthCheck`].
    pub fn new(listen: SocketAddr, backends: Vec<SocketAddr>) -> Self {
        Self {
            listen,
            backends,
            health: HealthCheck::default(),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// Why the load balancer cannot start or a backends file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The CA given for health checks holds no certificate.
    #[error("the health-check CA is not usable: {0}")]
    BadCa(String),
    /// A line of a backends file is not `HOST:PORT`.
    #[error("line {line}: `{text}` is not an IP:PORT backend (e.g. 198.18.0.2:6443)")]
    BadBackend {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

/// One backend as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackendStatus {
    /// Its address.
    pub addr: SocketAddr,
    /// Whether connections go to it.
    pub is_healthy: bool,
    /// How many client connections it was given so far.
    pub connections: u64,
}

#[derive(Debug)]
struct Backend {
    addr: SocketAddr,
    is_healthy: bool,
    good_in_row: u32,
    bad_in_row: u32,
    connections: u64,
}

impl Backend {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            is_healthy: true,
            good_in_row: 0,
            bad_in_row: 0,
            connections: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    backends: Mutex<Vec<Backend>>,
    next: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Backend>> {
        // The data stays consistent even if a holder panicked: every update is one step.
        self.backends.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle to a running load balancer: read its state, change its backends.
#[derive(Clone, Debug)]
pub struct LbHandle(Arc<Shared>);

impl LbHandle {
    /// Every backend, in configured order.
    pub fn status(&self) -> Vec<BackendStatus> {
        self.0
            .lock()
            .iter()
            .map(|b| BackendStatus {
                addr: b.addr,
                is_healthy: b.is_healthy,
                connections: b.connections,
            })
            .collect()
    }

    /// Replace the backends. Backends that stay keep their state; new ones start up.
    /// Returns whether anything changed.
    pub fn set_backends(&self, addrs: &[SocketAddr]) -> bool {
        let mut backends = self.0.lock();
        if backends.iter().map(|b| b.addr).eq(addrs.iter().copied()) {
            return false;
        }
        let mut old: Vec<Backend> = std::mem::take(&mut *backends);
        for addr in addrs {
            match old.iter().position(|b| b.addr == *addr) {
                Some(i) => backends.push(old.swap_remove(i)),
                None if backends.iter().any(|b| b.addr == *addr) => {}
                None => backends.push(Backend::new(*addr)),
            }
        }
        tracing::info!(backends = ?addrs, "load balancer backends changed");
        true
    }

    /// The healthy backends, starting at the next one in turn.
    fn candidates(&self) -> Vec<SocketAddr> {
        let healthy: Vec<SocketAddr> = self
            .0
            .lock()
            .iter()
            .filter(|b| b.is_healthy)
            .map(|b| b.addr)
            .collect();
        if healthy.is_empty() {
            return healthy;
        }
        let start = self.0.next.fetch_add(1, Ordering::Relaxed) % healthy.len();
        healthy[start..]
            .iter()
            .chain(&healthy[..start])
            .copied()
            .collect()
    }

    fn count_connection(&self, addr: SocketAddr) {
        if let Some(b) = self.0.lock().iter_mut().find(|b| b.addr == addr) {
            b.connections += 1;
        }
    }

    fn record_probe(&self, addr: SocketAddr, result: Result<(), String>, health: &HealthCheck) {
        let mut backends = self.0.lock();
        let Some(b) = backends.iter_mut().find(|b| b.addr == addr) else {
            return;
        };
        match result {
            Ok(()) => {
                b.bad_in_row = 0;
                b.good_in_row = b.good_in_row.saturating_add(1);
                if !b.is_healthy && b.good_in_row >= health.rise {
                    b.is_healthy = true;
                    tracing::info!(%addr, "backend is up again");
                }
            }
            Err(reason) => {
                b.good_in_row = 0;
                b.bad_in_row = b.bad_in_row.saturating_add(1);
                if b.is_healthy && b.bad_in_row >= health.fall {
                    b.is_healthy = false;
                    tracing::warn!(%addr, %reason, "backend is down");
                } else {
                    tracing::debug!(%addr, %reason, "health probe failed");
                }
            }
        }
    }
}

/// A bound load balancer, ready to [`run`](Self::run).
pub struct LoadBalancer {
    listener: TcpListener,
    handle: LbHandle,
    config: LbConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl LoadBalancer {
    /// Bind the listen address and set up the health probes.
    pub async fn bind(config: LbConfig) -> Result<Self, LbError> {
        let tls = match &config.health.probe {
            Probe::Tcp => None,
            Probe::Https { ca_pem, .. } => Some(Arc::new(client_config(ca_pem.as_deref())?)),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| LbError::Bind {
                addr: config.listen,
                source,
            })?;
        let handle = LbHandle(Arc::new(Shared::default()));
        handle.set_backends(&config.backends);
        Ok(Self {
            listener,
            handle,
            config,
            tls,
        })
    }

    /// The address it listens on (useful after binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle to watch and change it while it runs.
    pub fn handle(&self) -> LbHandle {
        self.handle.clone()
    }

    /// Proxy connections and probe backends until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let checker = tokio::spawn(health_loop(
            self.handle.clone(),
            self.config.health.clone(),
            self.tls.clone(),
            shutdown.clone(),
        ));
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((client, peer)) => {
                    let handle = self.handle.clone();
                    let connect_timeout = self.config.connect_timeout;
                    tokio::spawn(async move {
                        if let Err(reason) = proxy(client, &handle, connect_timeout).await {
                            tracing::debug!(%peer, %reason, "connection not proxied");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        checker.abort();
    }
}

async fn proxy(
    mut client: TcpStream,
    handle: &LbHandle,
    connect_timeout: Duration,
) -> Result<(), String> {
    let candidates = handle.candidates();
    if candidates.is_empty() {
        return Err("no healthy backend".into());
    }
    let mut last = String::new();
    for addr in candidates {
        match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(mut backend)) => {
                handle.count_connection(addr);
                let _ = client.set_nodelay(true);
                let _ = backend.set_nodelay(true);
                // Either side closing ends the copy; errors here are the peers' business.
                let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                return Ok(());
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: connect timed out"),
        }
    }
    Err(format!("every healthy backend failed, last {last}"))
}

async fn health_loop(
    handle: LbHandle,
    health: HealthCheck,
    tls: Option<Arc<rustls::ClientConfig>>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let addrs: Vec<SocketAddr> = handle.status().iter().map(|b| b.addr).collect();
        let probes = addrs.into_iter().map(|addr| {
            let tls = tls.clone();
            let health = &health;
            async move {
                let result =
                    tokio::time::timeout(health.timeout, probe(addr, &health.probe, tls.as_ref()))
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()));
                (addr, result)
            }
        });
        for (addr, result) in futures_util::future::join_all(probes).await {
            handle.record_probe(addr, result, &health);
        }
    }
}

/// One probe of one backend.
async fn probe(
    addr: SocketAddr,
    probe: &Probe,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (Probe::Https { path, .. }, Some(tls)) = (probe, tls) else {
        return Ok(());
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
    let name = ServerName::IpAddress(addr.ip().into());
    let mut stream = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", line.lines().next()))?;
    match status {
        200 | 401 | 403 => Ok(()),
        other => Err(format!("{path} answered HTTP {other}")),
    }
}

fn client_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, LbError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| LbError::BadCa(e.to_string()))?;
    let config = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| LbError::BadCa(e.to_string()))?;
                roots.add(cert).map_err(|e| LbError::BadCa(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(LbError::BadCa("no PEM CERTIFICATE in it".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// Accepts any server certificate (the probe only asks "is it serving?"), but still
/// checks the handshake signatures so the TLS session itself is sound.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The backends of a backends file: one `IP:PORT` per line; blank lines and text
/// after `#` are ignored.
pub fn parse_backends(text: &str) -> Result<Vec<SocketAddr>, LbError> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let addr = line.parse().map_err(|_| LbError::BadBackend {
            line: index + 1,
            text: line.to_string(),
        })?;
        out.push(addr);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn backends_file_parses_and_names_bad_lines() {
        let text = "# masters\n198.18.0.2:6443\n\n198.18.0.3:6443 # second\n";
        assert_eq!(
            parse_backends(text).unwrap(),
            vec![addr("198.18.0.2:6443"), addr("198.18.0.3:6443")]
        );
        let err = parse_backends("198.18.0.2:6443\nmaster-2:6443\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: `master-2:6443` is not an IP:PORT backend (e.g. 198.18.0.2:6443)"
        );
    }

    #[test]
    fn health_flips_after_fall_and_rise_and_survives_new_lists() {
        let handle = LbHandle(Arc::new(Shared::default()));
        let (a, b) = (addr("198.18.0.2:6443"), addr("198.18.0.3:6443"));
        assert!(handle.set_backends(&[a, b]));
        assert!(!handle.set_backends(&[a, b]));
        let health = HealthCheck {
            fall: 2,
            rise: 2,
            ..HealthCheck::default()
        };
        handle.record_probe(a, Err("x".into()), &health);
        assert!(handle.status()[0].is_healthy);
        handle.record_probe(a, Err("x".into()), &health);
        assert!(!handle.status()[0].is_healthy);
        assert_eq!(handle.candidates(), vec![b]);
        // Reordering keeps a's state.
        handle.set_backends(&[b, a]);
        assert!(!handle.status()[1].is_healthy);
        handle.record_probe(a, Ok(()), &health);
        assert!(!handle.status()[1].is_healthy);
        handle.record_probe(a, Ok(()), &health);
        assert!(handle.status()[1].is_healthy);
        let first = handle.candidates()[0];
        let second = handle.candidates()[0];
        assert_ne!(first, second, "round robin moves on");
    }
}
