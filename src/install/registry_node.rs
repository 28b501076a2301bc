//! The cluster registry's identity and how every node reaches it: TLS and basic auth by
//! default, plain HTTP on request, or a registry the customer runs.
//!
//! 1. [`RegistryAccess::prepare`] runs on the operator, once per install, over the
//!    cluster's directory (`<store>/clusters/<name>/registry/`): it makes the CA (100
//!    years), a random user and password and their bcrypt htpasswd line the first time,
//!    and reuses them on every re-run; the server certificate (names: the registry
//!    domain, every registry host's IP, `127.0.0.1`, the Clusterfile's extra names) is
//!    re-issued by the same CA only when those names change. A certificate of the
//!    user's own (`cert.certFile`/`keyFile`) replaces the generated one; `insecure`
//!    means plain HTTP without auth; `externalRegistry` means the customer's registry,
//!    its CA and credentials.
//! 2. [`RegistryAccess::server_files`]: what a registry host gets under
//!    `<data root>/registry/` (certificate, key and htpasswd, keys 0600) and the flags
//!    of `airlock registry serve` that use them; [`RegistryAccess::kept_files`]: the
//!    operator's files, kept 0600 under `<data root>/cluster/registry/` on the first
//!    master so that another operator machine can take over the cluster.
//! 3. [`mirror_files`]: for every host, containerd's `certs.d/<domain>/hosts.toml`
//!    (0600 when it holds the `Authorization` header) and `airlock-ca.crt` for every
//!    registry domain of the image, and the address `/etc/hosts` gives the registry
//!    domain there (see [`registry_hosts`] for HA); on hosts that pull with Docker,
//!    [`docker_mirror`] merges the mirror into `/etc/docker/daemon.json`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::engine::write_file;
use crate::registry::tls::{self, CertificateAuthority, TlsError};
use crate::remote::{Remote, RemoteCommand, RemoteError, Secret};
use crate::spec::clusterfile::{ClusterSpec, Host};
use crate::spec::reference::Reference;

const DOCKER_FACTS: &str = include_str!("../../installer/docker-facts.sh");
const DOCKER_RELOAD: &str = include_str!("../../installer/docker-reload.sh");
const RECORD_DIRS: &str = include_str!("../../installer/record-dirs.sh");

/// The operator's registry directory inside the cluster's directory.
pub const OPERATOR_DIR: &str = "registry";
/// The user name and password (two lines, 0600).
const CREDENTIALS_FILE: &str = "credentials";
/// The htpasswd line (0600).
const HTPASSWD_FILE: &str = "htpasswd";
/// The names of the issued server certificate, one a line.
const NAMES_FILE: &str = "names";
/// The user of generated credentials.
const DEFAULT_USER: &str = "airlock";
/// bcrypt cost of the htpasswd line: the password is 192 random bits, so the cost
/// only has to keep the first check on each registry quick.
const BCRYPT_COST: u32 = 10;
/// The CA's file name in every `certs.d/<domain>/` directory.
pub const CA_FILE_NAME: &str = "airlock-ca.crt";

/// Why the registry's identity cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum RegistryAccessError {
    /// A certificate or key could not be made or read.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A file could not be read or written.
    #[error("{path}: {source}; {hint}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// The password could not be hashed.
    #[error("hashing the registry password: {0}")]
    Hash(String),
}

/// The server side of the cluster registry: its certificate chain and key.
#[derive(Clone, Debug)]
pub struct ServerIdentity {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: Secret,
}

/// How the nodes reach the registry, and what a registry host serves with.
#[derive(Clone, Debug, Default)]
pub struct RegistryAccess {
    /// HTTPS (else plain HTTP).
    pub tls: bool,
    /// The CA the nodes trust for it (none: publicly trusted, or plain HTTP).
    pub ca_pem: Option<String>,
    /// The registry's certificate and key (airlock's registry only).
    pub server: Option<ServerIdentity>,
    /// User and password the nodes pull with.
    pub credentials: Option<(String, Secret)>,
    /// `user:bcrypt-hash` for the registry (airlock's registry only).
    pub htpasswd: Option<String>,
    /// Where the operator keeps its files (none for plain HTTP and external registries).
    pub dir: Option<PathBuf>,
}

fn io_error(path: &Path, hint: &'static str) -> impl FnOnce(std::io::Error) -> RegistryAccessError {
    let path = path.to_path_buf();
    move |source| RegistryAccessError::Io { path, source, hint }
}

fn read_text(path: &Path, hint: &'static str) -> Result<String, RegistryAccessError> {
    fs_err::read_to_string(path).map_err(io_error(path, hint))
}

/// Write a 0600 file atomically.
fn write_private(path: &Path, text: &str) -> Result<(), RegistryAccessError> {
    use std::io::Write as _;
    let hint = "check the permissions of the airlock store";
    let dir = path.parent().unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir).map_err(io_error(path, hint))?;
    // temp files start 0600
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_error(path, hint))?;
    tmp.write_all(text.as_bytes())
        .map_err(io_error(path, hint))?;
    tmp.as_file().sync_all().map_err(io_error(path, hint))?;
    tmp.persist(path)
        .map_err(|e| io_error(path, hint)(e.error))?;
    Ok(())
}

/// The hosts that run airlock's registry: every master with `ha: true`, else the first
/// master; none with an external registry.
pub fn registry_hosts(spec: &ClusterSpec) -> Vec<&Host> {
    if spec.registry.external.is_some() {
        return Vec::new();
    }
    let first = spec.first_master().ip;
    spec.hosts
        .iter()
        .filter(|h| {
            if spec.registry.ha {
                h.is_master()
            } else {
                h.ip == first
            }
        })
        .collect()
}

/// The names the generated server certificate holds.
fn server_names(spec: &ClusterSpec) -> Vec<String> {
    let mut names = vec![spec.registry.domain.clone()];
    names.extend(registry_hosts(spec).iter().map(|h| h.ip.to_string()));
    names.push("127.0.0.1".to_string());
    names.extend(spec.registry.extra_names.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn random_password() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

impl RegistryAccess {
    /// The identity of `spec`'s registry, made or reused under `cluster_dir`
    /// (`<store>/clusters/<name>`), certificates valid from `now`.
    pub fn prepare(
        spec: &ClusterSpec,
        cluster_dir: &Path,
        now: SystemTime,
    ) -> Result<Self, RegistryAccessError> {
        let reg = &spec.registry;
        if let Some(ext) = &reg.external {
            let ca_pem = ext
                .ca_file
                .as_deref()
                .map(|p| read_text(p, "fix spec.registry.externalRegistry.caFile"))
                .transpose()?;
            return Ok(Self {
                tls: !ext.insecure,
                ca_pem,
                credentials: ext.credentials.clone(),
                ..Self::default()
            });
        }
        if reg.insecure {
            return Ok(Self::default());
        }
        let dir = cluster_dir.join(OPERATOR_DIR);
        fs_err::create_dir_all(&dir).map_err(io_error(&dir, "check the airlock store"))?;
        let credentials = match &reg.credentials {
            Some(c) => c.clone(),
            None => load_or_make_credentials(&dir)?,
        };
        let htpasswd = load_or_make_htpasswd(&dir, &credentials)?;
        let (server, ca_pem) = match &reg.supplied_cert {
            Some(supplied) => {
                tls::server_config(&supplied.cert, &supplied.key)?;
                let hint = "fix spec.registry.localRegistry.cert";
                let cert_pem = read_text(&supplied.cert, hint)?;
                let key_pem = Secret::new(read_text(&supplied.key, hint)?);
                let ca_pem = match &supplied.ca {
                    Some(ca) => read_text(ca, hint)?,
                    None => first_certificate(&cert_pem),
                };
                (ServerIdentity { cert_pem, key_pem }, ca_pem)
            }
            None => generated_identity(spec, &dir, now)?,
        };
        Ok(Self {
            tls: true,
            ca_pem: Some(ca_pem),
            server: Some(server),
            credentials: Some(credentials),
            htpasswd: Some(htpasswd),
            dir: Some(dir),
        })
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// `Basic base64(user:password)`, when the nodes pull with credentials.
    pub fn authorization(&self) -> Option<Secret> {
        self.credentials.as_ref().map(|(user, password)| {
            Secret::new(format!(
                "Basic {}",
                STANDARD.encode(format!("{user}:{}", password.expose()))
            ))
        })
    }

    /// Files for a registry host under `<data_root>/registry/` (path, content, mode) and
    /// the `airlock registry serve` flags that use them.
    pub fn server_files(
        &self,
        data_root: &str,
    ) -> (Vec<(String, Secret, &'static str)>, Vec<String>) {
        let dir = format!("{data_root}/registry");
        let mut files = Vec::new();
        let mut flags = Vec::new();
        if let Some(server) = &self.server {
            let cert = format!("{dir}/server.pem");
            let key = format!("{dir}/server-key.pem");
            files.push((cert.clone(), Secret::new(server.cert_pem.clone()), "644"));
            files.push((key.clone(), server.key_pem.clone(), "600"));
            flags.extend(["--tls-cert".to_string(), cert, "--tls-key".to_string(), key]);
        }
        if let Some(line) = &self.htpasswd {
            let path = format!("{dir}/htpasswd");
            files.push((path.clone(), Secret::new(format!("{line}\n")), "600"));
            flags.extend(["--htpasswd".to_string(), path]);
        }
        (files, flags)
    }

    /// The operator's files, to keep (0600) under `<data_root>/cluster/registry/` on
    /// the first master.
    pub fn kept_files(
        &self,
        data_root: &str,
    ) -> Result<Vec<(String, Secret)>, RegistryAccessError> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let names = [
            tls::CA_CERT_FILE,
            tls::CA_KEY_FILE,
            CREDENTIALS_FILE,
            HTPASSWD_FILE,
        ];
        for name in names {
            let path = dir.join(name);
            if path.is_file() {
                let text = read_text(&path, "check the airlock store")?;
                out.push((
                    format!("{data_root}/cluster/registry/{name}"),
                    Secret::new(text),
                ));
            }
        }
        Ok(out)
    }

    /// Put files kept on the first master (name, content) back into the operator's
    /// directory when it has none (another operator machine took over).
    pub fn restore(
        cluster_dir: &Path,
        files: &[(String, Secret)],
    ) -> Result<usize, RegistryAccessError> {
        let dir = cluster_dir.join(OPERATOR_DIR);
        if dir.join(tls::CA_CERT_FILE).is_file() || dir.join(CREDENTIALS_FILE).is_file() {
            return Ok(0);
        }
        let mut n = 0;
        for (name, text) in files {
            if [
                tls::CA_CERT_FILE,
                tls::CA_KEY_FILE,
                CREDENTIALS_FILE,
                HTPASSWD_FILE,
            ]
            .contains(&name.as_str())
            {
                write_private(&dir.join(name), text.expose())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The names of the files [`RegistryAccess::kept_files`] keeps.
pub const KEPT_FILES: [&str; 4] = [
    tls::CA_CERT_FILE,
    tls::CA_KEY_FILE,
    CREDENTIALS_FILE,
    HTPASSWD_FILE,
];

fn first_certificate(pem: &str) -> String {
    const END: &str = "-----END CERTIFICATE-----";
    match pem.find(END) {
        Some(i) => format!("{}\n", &pem[..i + END.len()]),
        None => pem.to_string(),
    }
}

fn load_or_make_credentials(dir: &Path) -> Result<(String, Secret), RegistryAccessError> {
    let path = dir.join(CREDENTIALS_FILE);
    if path.is_file() {
        let text = read_text(&path, "remove it to make new credentials")?;
        let mut lines = text.lines();
        if let (Some(user), Some(password)) = (lines.next(), lines.next())
            && !user.is_empty()
            && !password.is_empty()
        {
            return Ok((user.to_string(), Secret::new(password)));
        }
    }
    let password = random_password();
    write_private(&path, &format!("{DEFAULT_USER}\n{password}\n"))?;
    Ok((DEFAULT_USER.to_string(), Secret::new(password)))
}

/// The kept htpasswd line if it still matches the credentials, else a new one.
fn load_or_make_htpasswd(
    dir: &Path,
    (user, password): &(String, Secret),
) -> Result<String, RegistryAccessError> {
    let path = dir.join(HTPASSWD_FILE);
    if path.is_file() {
        let text = read_text(&path, "remove it to make a new one")?;
        let line = text.trim();
        if let Some((u, hash)) = line.split_once(':')
            && u == user
            && bcrypt::verify(password.expose(), hash).unwrap_or(false)
        {
            return Ok(line.to_string());
        }
    }
    let hash = bcrypt::hash(password.expose(), BCRYPT_COST)
        .map_err(|e| RegistryAccessError::Hash(e.to_string()))?;
    let line = format!("{user}:{hash}");
    write_private(&path, &format!("{line}\n"))?;
    Ok(line)
}

/// The kept CA (made the first time) and a server certificate for the current names.
fn generated_identity(
    spec: &ClusterSpec,
    dir: &Path,
    now: SystemTime,
) -> Result<(ServerIdentity, String), RegistryAccessError> {
    let ca = if dir.join(tls::CA_CERT_FILE).is_file() {
        CertificateAuthority::load(dir)?
    } else {
        tls::generate_ca(dir, now)?
    };
    let names = server_names(spec);
    let wanted = names.join("\n");
    let names_path = dir.join(NAMES_FILE);
    let cert_path = dir.join(tls::SERVER_CERT_FILE);
    let key_path = dir.join(tls::SERVER_KEY_FILE);
    let current = fs_err::read_to_string(&names_path).unwrap_or_default();
    let cert_pem = fs_err::read_to_string(&cert_path).unwrap_or_default();
    let still_signed = cert_pem.ends_with(ca.cert_pem());
    if current.trim() != wanted || !key_path.is_file() || !still_signed {
        tls::issue_server_cert(&ca, &names, dir, now)?;
        write_private(&names_path, &format!("{wanted}\n"))?;
    }
    let hint = "remove the cluster's registry directory to make new ones";
    Ok((
        ServerIdentity {
            cert_pem: read_text(&cert_path, hint)?,
            key_pem: Secret::new(read_text(&key_path, hint)?),
        },
        ca.cert_pem().to_string(),
    ))
}

/// What the Mirrors step writes on one host.
#[derive(Clone, Debug, Default)]
pub struct MirrorFiles {
    /// The address `/etc/hosts` gives the registry domain (none with an external
    /// registry: its name is resolved as usual).
    pub etc_hosts: Option<IpAddr>,
    /// Files: path, content, mode.
    pub files: Vec<(String, Secret, &'static str)>,
}

/// The upstream server containerd would use for `domain` without a mirror.
fn upstream(domain: &str) -> String {
    if domain == "docker.io" {
        "https://registry-1.docker.io".to_string()
    } else {
        format!("https://{domain}")
    }
}

/// Every registry domain the image's container images come from, plus `registry`
/// (`HOST:PORT` of the cluster registry), sorted and without duplicates.
pub fn mirror_domains(images: &[Reference], registry: &str) -> Vec<String> {
    let mut out: std::collections::BTreeSet<String> =
        images.iter().map(|r| r.domain.clone()).collect();
    out.insert(registry.to_string());
    out.into_iter().collect()
}

/// containerd's `certs.d/<domain>/hosts.toml`: pull and resolve `domain`'s images
/// from `mirrors` in order (containerd falls over to the next on errors), trusting
/// `ca` and sending `authorization` to them. The image names stay as they are;
/// containerd adds `?ns=<domain>` so the registry knows which domain is meant.
pub fn hosts_toml(
    domain: &str,
    mirrors: &[String],
    ca: Option<&str>,
    authorization: Option<&Secret>,
) -> String {
    let mut out = format!(
        "# written by airlock: {domain} images come from the cluster registry\n\
         server = \"{}\"\n",
        upstream(domain)
    );
    for m in mirrors {
        out.push_str(&format!(
            "\n[host.\"{m}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ));
        if let Some(ca) = ca {
            out.push_str(&format!("  ca = \"{ca}\"\n"));
        }
        if let Some(a) = authorization {
            out.push_str(&format!(
                "  [host.\"{m}\".header]\n    Authorization = [\"{}\"]\n",
                a.expose()
            ));
        }
    }
    out
}

/// What the Mirrors step writes on `host`: with airlock's registry, `/etc/hosts` sends
/// the domain to the host itself when it runs a registry (HA masters) and to the first
/// registry host otherwise, and `hosts.toml` lists the domain first, then every other
/// registry host by IP (its certificate names them all), so containerd falls over to
/// another master when one is down.
pub fn mirror_files(
    spec: &ClusterSpec,
    access: &RegistryAccess,
    images: &[Reference],
    host: &Host,
) -> MirrorFiles {
    let reg = &spec.registry;
    let scheme = access.scheme();
    let registries: Vec<IpAddr> = registry_hosts(spec).iter().map(|h| h.ip).collect();
    let etc_hosts = if reg.external.is_some() {
        None
    } else if registries.contains(&host.ip) {
        Some(host.ip)
    } else {
        Some(
            registries
                .first()
                .copied()
                .unwrap_or(spec.first_master().ip),
        )
    };
    let mut mirrors = vec![format!("{scheme}://{}", reg.address())];
    mirrors.extend(
        registries
            .iter()
            .filter(|ip| Some(**ip) != etc_hosts)
            .map(|ip| format!("{scheme}://{}", socket(*ip, reg.port))),
    );
    let authorization = access.authorization();
    let mut files = Vec::new();
    for domain in mirror_domains(images, &reg.address()) {
        let dir = format!("/etc/containerd/certs.d/{domain}");
        let ca_path = access.ca_pem.as_ref().map(|pem| {
            let path = format!("{dir}/{CA_FILE_NAME}");
            files.push((path.clone(), Secret::new(pem.clone()), "644"));
            path
        });
        let toml = hosts_toml(
            &domain,
            &mirrors,
            ca_path.as_deref(),
            authorization.as_ref(),
        );
        let mode = if authorization.is_some() {
            "600"
        } else {
            "644"
        };
        files.push((format!("{dir}/hosts.toml"), Secret::new(toml), mode));
    }
    MirrorFiles { etc_hosts, files }
}

/// Docker's files on a host that pulls with Docker (`installer/docker-facts.sh` printed
/// `facts`): `daemon.json` with the registry first in `registry-mirrors` and every other
/// key kept, the base it was merged into kept once under
/// `<data_root>/cluster/docker/` (so a re-run merges into the same base and `reset`
/// restores it), and the CA in `/etc/docker/certs.d/<registry>/`. Docker mirrors only
/// Docker Hub images; the other domains need containerd. Empty when the host has no
/// Docker or has containerd.
pub fn docker_files(
    facts: &str,
    spec: &ClusterSpec,
    access: &RegistryAccess,
    data_root: &str,
) -> Result<Vec<(String, Secret, &'static str)>, String> {
    let mut lines = facts.splitn(3, '\n');
    if lines.next().map(str::trim) != Some("docker") {
        return Ok(Vec::new());
    }
    let kind = lines.next().unwrap_or("absent").trim();
    let base = lines.next().unwrap_or_default();
    let kept = format!("{data_root}/cluster/docker");
    let mut files = Vec::new();
    match kind {
        "current" => files.push((format!("{kept}/daemon.json.orig"), Secret::new(base), "600")),
        "absent" => files.push((format!("{kept}/daemon.json.absent"), Secret::new(""), "600")),
        _ => {}
    }
    let mut json: serde_json::Map<String, serde_json::Value> = if base.trim().is_empty() {
        serde_json::Map::new()
    } else {
        serde_json::from_str(base).map_err(|e| {
            format!("/etc/docker/daemon.json is not a JSON object ({e}); fix it and run again")
        })?
    };
    let address = spec.registry.address();
    let mirror = format!("{}://{address}", access.scheme());
    let mut mirrors = vec![serde_json::Value::String(mirror.clone())];
    if let Some(existing) = json.get("registry-mirrors").and_then(|v| v.as_array()) {
        mirrors.extend(
            existing
                .iter()
                .filter(|v| v.as_str() != Some(&mirror))
                .cloned(),
        );
    }
    json.insert("registry-mirrors".into(), serde_json::Value::Array(mirrors));
    let text = serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
    files.push((
        "/etc/docker/daemon.json".to_string(),
        Secret::new(text),
        "644",
    ));
    if let Some(ca) = &access.ca_pem {
        files.push((
            format!("/etc/docker/certs.d/{address}/{CA_FILE_NAME}"),
            Secret::new(ca.clone()),
            "644",
        ));
    }
    Ok(files)
}

/// On a host that pulls with Docker (see [`docker_files`]): merge the mirror into
/// `daemon.json`, add the CA, and make dockerd read it again. Nothing elsewhere.
pub async fn docker_mirror(
    remote: &dyn Remote,
    spec: &ClusterSpec,
    access: &RegistryAccess,
    host: &str,
) -> Result<(), RemoteError> {
    let root = spec.data_root.as_str();
    let facts = remote
        .check(&RemoteCommand::script(DOCKER_FACTS, [root]).sudo())
        .await?
        .stdout_text();
    let files =
        docker_files(&facts, spec, access, root).map_err(|stderr| RemoteError::CommandFailed {
            host: host.to_string(),
            command: "docker-facts.sh (merging the registry mirror)".to_string(),
            status: 1,
            stderr,
        })?;
    if files.is_empty() {
        return Ok(());
    }
    let dirs: std::collections::BTreeSet<String> = files
        .iter()
        .filter_map(|(p, _, _)| p.rsplit_once('/').map(|(d, _)| d.to_string()))
        .filter(|d| d.starts_with("/etc/"))
        .collect();
    remote
        .check(
            &RemoteCommand::script(RECORD_DIRS, [root.to_string()])
                .args(dirs)
                .sudo(),
        )
        .await?;
    for (path, content, mode) in &files {
        write_file(remote, path, content.expose().as_bytes(), mode).await?;
    }
    remote
        .check(&RemoteCommand::script(DOCKER_RELOAD, Vec::<String>::new()).sudo())
        .await
        .map(drop)
}

fn socket(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

#[cfg(test)]
#[path = "registry_node_tests.rs"]
mod tests;
