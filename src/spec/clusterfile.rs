//! The Clusterfile: sealer's multi-document description of a cluster.
//!
//! 1. [`Clusterfile::parse`] splits the YAML into documents and reads each by `kind`:
//!    `Cluster` (`sealer.io/v2`, or airlock's own `airlock.dev/v1` with the same fields
//!    plus additions), `Config`, `Plugin`, `Application`, and kubeadm documents, which
//!    are kept as they are for the Kubernetes runtime.
//! 2. Field errors name the document and the field path:
//!    `Clusterfile: Cluster spec.hosts[1].ips[0]: "198.18.0.300" is not an IP address`.
//! 3. [`Clusterfile::resolve`] expands IP ranges, merges per-host ssh over the cluster's,
//!    reads passwords from the environment or a file when asked to, and checks the
//!    whole (duplicate IPs, role rules) into a [`ClusterSpec`], the one type the
//!    install engine and the wizard share.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::remote::Secret;

/// Default registry domain on the cluster (as sealer's).
pub const DEFAULT_REGISTRY_DOMAIN: &str = "sea.hub";
/// Default registry port on the cluster.
pub const DEFAULT_REGISTRY_PORT: u16 = 5000;
/// Default data root on hosts.
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/airlock";

/// A Clusterfile problem, naming the file, document and field.
#[derive(Debug, PartialEq, Eq)]
pub struct ClusterfileError {
    /// The file (or `Clusterfile` when read from memory).
    pub file: String,
    /// The document: `Cluster`, `Config my-config`, `document 3`.
    pub doc: String,
    /// The field path inside it: `spec.hosts[1].ips[0]`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for ClusterfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = [self.doc.as_str(), self.field.as_str()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if place.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {place}: {}", self.file, self.message)
        }
    }
}

impl std::error::Error for ClusterfileError {}

/// A port that YAML may give as a number or a string (`port: "22"` in sealer's files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        let n = match Raw::deserialize(d)? {
            Raw::Num(n) => n,
            Raw::Text(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a port number")))?,
        };
        u16::try_from(n)
            .ok()
            .filter(|p| *p > 0)
            .map(Port)
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a port number (1-65535)")))
    }
}

/// The `ssh` block, at cluster or host level. Empty fields inherit.
/// Its `Debug` hides the passwords.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshFields {
    /// Login user (default `root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password (sealer's `passwd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passwd: Option<String>,
    /// airlock: read the password from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passwd_env: Option<String>,
    /// airlock: read the password from this file (first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passwd_file: Option<PathBuf>,
    /// Private key file (sealer's `pk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pk: Option<PathBuf>,
    /// Private key passphrase (sealer's `pkPasswd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pk_passwd: Option<String>,
    /// Port (default 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// airlock: sudo password when `user` is not root (default: the login password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_passwd: Option<String>,
    /// airlock: reach the host through this jump host, `[USER@]HOST[:PORT]` (like
    /// `ssh -J`), logging in there with the same credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bastion: Option<String>,
}

impl std::fmt::Debug for SshFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("SshFields")
            .field("user", &self.user)
            .field("passwd", &hide(&self.passwd))
            .field("passwd_env", &self.passwd_env)
            .field("passwd_file", &self.passwd_file)
            .field("pk", &self.pk)
            .field("pk_passwd", &hide(&self.pk_passwd))
            .field("port", &self.port)
            .field("sudo_passwd", &hide(&self.sudo_passwd))
            .field("bastion", &self.bastion)
            .finish()
    }
}

impl SshFields {
    /// `self` with empty fields taken from `base`.
    fn over(&self, base: &Self) -> Self {
        Self {
            user: self.user.clone().or_else(|| base.user.clone()),
            passwd: self.passwd.clone().or_else(|| base.passwd.clone()),
            passwd_env: self.passwd_env.clone().or_else(|| base.passwd_env.clone()),
            passwd_file: self
                .passwd_file
                .clone()
                .or_else(|| base.passwd_file.clone()),
            pk: self.pk.clone().or_else(|| base.pk.clone()),
            pk_passwd: self.pk_passwd.clone().or_else(|| base.pk_passwd.clone()),
            port: self.port.or(base.port),
            sudo_passwd: self
                .sudo_passwd
                .clone()
                .or_else(|| base.sudo_passwd.clone()),
            bastion: self.bastion.clone().or_else(|| base.bastion.clone()),
        }
    }
}

/// One entry of `spec.hosts`: IPs sharing roles and settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostGroup {
    /// IPs or ranges (`198.18.0.2-198.18.0.5`).
    #[serde(default)]
    pub ips: Vec<String>,
    /// `master` and/or `node`, plus any custom roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Per-host ssh overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshFields>,
    /// Per-host env, `K=V`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Node labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Node taints, `key=value:Effect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<String>,
}

/// `spec.registry`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryFields {
    /// The registry airlock runs on the masters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_registry: Option<LocalRegistryFields>,
    /// A registry the customer runs (e.g. Harbor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_registry: Option<ExternalRegistryFields>,
}

/// `spec.registry.localRegistry` (sealer's v2 schema, plus airlock's file fields).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalRegistryFields {
    /// Domain put in `/etc/hosts` (default `sea.hub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Port (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// User of the registry's basic auth (default: a random one, kept per cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its password (sealer's field; default: a random one, kept per cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// airlock: read the password from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Run on every master instead of the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<bool>,
    /// Plain HTTP without auth instead of TLS and basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// The server certificate: extra names (sealer), or a certificate of your own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<RegistryCertFields>,
}

impl std::fmt::Debug for LocalRegistryFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRegistryFields")
            .field("domain", &self.domain)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_env", &self.password_env)
            .field("ha", &self.ha)
            .field("insecure", &self.insecure)
            .field("cert", &self.cert)
            .finish()
    }
}

/// `spec.registry.localRegistry.cert`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCertFields {
    /// sealer: names added to the generated certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_name: Option<SubjectAltNameFields>,
    /// airlock: a PEM certificate chain of your own for the registry (with `keyFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// airlock: the private key of `certFile` (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// airlock: the CA that signed `certFile`, for the nodes to trust (default: the
    /// first certificate of `certFile`, right for a self-signed one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// `spec.registry.localRegistry.cert.subjectAltName` (sealer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAltNameFields {
    /// DNS names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

/// `spec.registry.externalRegistry` (sealer's v2 schema, plus airlock's fields).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRegistryFields {
    /// Domain (`harbor.example.com`, or `HOST:PORT`).
    #[serde(default)]
    pub domain: String,
    /// Port, if not in the domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// User to push and pull with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its password (sealer's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// airlock: read the password from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// airlock: the CA of the registry's certificate (PEM), when not publicly trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// airlock: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

impl std::fmt::Debug for ExternalRegistryFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalRegistryFields")
            .field("domain", &self.domain)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_env", &self.password_env)
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// `spec` of the `Cluster` document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpecFields {
    /// The cluster image.
    #[serde(default)]
    pub image: String,
    /// Cluster env, `K=V`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Extra args for the image's commands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd_args: Vec<String>,
    /// Overrides of the image's CMDS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmds: Vec<String>,
    /// Apps to launch instead of the image's LAUNCH.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_names: Vec<String>,
    /// Cluster-wide ssh settings.
    #[serde(default)]
    pub ssh: SshFields,
    /// Hosts.
    #[serde(default)]
    pub hosts: Vec<HostGroup>,
    /// Registry settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryFields>,
    /// Where airlock keeps its files on hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_root: Option<String>,
    /// airlock: how long each install step may take, by step name (`blobs: 2h`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub step_timeouts: BTreeMap<String, String>,
    /// airlock: how many hosts are worked on at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
}

/// `metadata`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Name.
    #[serde(default)]
    pub name: String,
}

/// The `Cluster` document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDoc {
    /// `sealer.io/v2` or `airlock.dev/v1`.
    pub api_version: String,
    /// `Cluster`.
    pub kind: String,
    /// Name.
    #[serde(default)]
    pub metadata: Metadata,
    /// The cluster.
    #[serde(default)]
    pub spec: ClusterSpecFields,
}

/// A `Config` document: a file of the image to overwrite or merge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDoc {
    /// Name.
    #[serde(default)]
    pub metadata: Metadata,
    /// What to change.
    #[serde(default)]
    pub spec: ConfigSpec,
}

/// `spec` of a `Config` document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSpec {
    /// Path inside the rootfs.
    #[serde(default)]
    pub path: String,
    /// `merge` or `overwrite` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Processing steps, e.g. `value|toJson|toBase64|toSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// The content.
    #[serde(default)]
    pub data: String,
}

/// A `Plugin` document: a shell script run at a phase, on some roles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginDoc {
    /// Name.
    #[serde(default)]
    pub metadata: Metadata,
    /// What to run.
    #[serde(default)]
    pub spec: PluginSpec,
}

/// `spec` of a `Plugin` document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginSpec {
    /// `SHELL`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Phase, e.g. `post-install`.
    #[serde(default)]
    pub action: String,
    /// Roles it runs on (comma-separated in sealer's files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The script.
    #[serde(default)]
    pub data: String,
}

/// A whole Clusterfile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Clusterfile {
    /// The file it came from (for messages).
    pub file: String,
    /// The `Cluster` document.
    pub cluster: ClusterDoc,
    /// `Config` documents.
    pub configs: Vec<ConfigDoc>,
    /// `Plugin` documents.
    pub plugins: Vec<PluginDoc>,
    /// `Application` documents, kept as they are.
    pub applications: Vec<serde_json::Value>,
    /// kubeadm documents (`InitConfiguration`, `ClusterConfiguration`, ...), kept as they are.
    pub kubeadm: Vec<serde_json::Value>,
}

const KUBEADM_KINDS: &[&str] = &[
    "InitConfiguration",
    "ClusterConfiguration",
    "JoinConfiguration",
    "KubeletConfiguration",
    "KubeProxyConfiguration",
    "UpgradeConfiguration",
    "ResetConfiguration",
];

impl Clusterfile {
    /// Read and parse `path`.
    pub fn read(path: &Path) -> Result<Self, ClusterfileError> {
        let file = path.display().to_string();
        let text = fs_err::read_to_string(path).map_err(|e| ClusterfileError {
            file: file.clone(),
            doc: String::new(),
            field: String::new(),
            message: format!("cannot read it: {}", e.kind()),
        })?;
        Self::parse(&file, &text)
    }

    /// Parse the text of a Clusterfile named `file`.
    pub fn parse(file: &str, text: &str) -> Result<Self, ClusterfileError> {
        let err = |doc: &str, field: &str, message: String| ClusterfileError {
            file: file.to_string(),
            doc: doc.to_string(),
            field: field.to_string(),
            message,
        };
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|e| {
            err(
                "",
                "",
                format!(
                    "not valid YAML: {}",
                    e.to_string().lines().next().unwrap_or_default()
                ),
            )
        })?;
        let mut out = Self {
            file: file.to_string(),
            ..Self::default()
        };
        let mut cluster = None;
        for (i, doc) in docs.into_iter().enumerate() {
            if doc.is_null() {
                continue;
            }
            let kind = doc
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            let name = doc
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .map(|n| format!("{kind} {n}"))
                .unwrap_or_else(|| {
                    if kind.is_empty() {
                        format!("document {}", i + 1)
                    } else {
                        kind.clone()
                    }
                });
            match kind.as_str() {
                "Cluster" => {
                    if cluster.is_some() {
                        return Err(err(
                            &name,
                            "kind",
                            "a second Cluster document; keep exactly one".to_string(),
                        ));
                    }
                    let c: ClusterDoc = typed(doc).map_err(|(f, m)| err("Cluster", &f, m))?;
                    if c.api_version != "sealer.io/v2" && c.api_version != "airlock.dev/v1" {
                        return Err(err(
                            "Cluster",
                            "apiVersion",
                            format!(
                                "{:?} is not supported; use sealer.io/v2 or airlock.dev/v1",
                                c.api_version
                            ),
                        ));
                    }
                    cluster = Some(c);
                }
                "Config" => out
                    .configs
                    .push(typed(doc).map_err(|(f, m)| err(&name, &f, m))?),
                "Plugin" => out
                    .plugins
                    .push(typed(doc).map_err(|(f, m)| err(&name, &f, m))?),
                "Application" => out.applications.push(doc),
                k if KUBEADM_KINDS.contains(&k) => out.kubeadm.push(doc),
                "" => {
                    return Err(err(
                        &name,
                        "kind",
                        "missing; expected Cluster, Config, Plugin or Application".to_string(),
                    ));
                }
                other => {
                    return Err(err(
                        &name,
                        "kind",
                        format!(
                            "unknown kind {other:?}; expected Cluster, Config, Plugin, Application or a kubeadm kind"
                        ),
                    ));
                }
            }
        }
        out.cluster = cluster.ok_or_else(|| {
            err(
                "",
                "",
                "no Cluster document (kind: Cluster, apiVersion: sealer.io/v2)".to_string(),
            )
        })?;
        Ok(out)
    }

    /// Check the whole and resolve it into a [`ClusterSpec`]; `lookup_env` reads
    /// environment variables named by `passwdEnv`.
    pub fn resolve(
        &self,
        lookup_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ClusterSpec, ClusterfileError> {
        let err = |field: String, message: String| ClusterfileError {
            file: self.file.clone(),
            doc: "Cluster".to_string(),
            field,
            message,
        };
        let spec = &self.cluster.spec;
        let env = parse_env(&spec.env).map_err(|(i, m)| err(format!("spec.env[{i}]"), m))?;
        let mut hosts: Vec<Host> = Vec::new();
        let mut seen: BTreeMap<IpAddr, String> = BTreeMap::new();
        for (g, group) in spec.hosts.iter().enumerate() {
            if group.ips.is_empty() {
                return Err(err(
                    format!("spec.hosts[{g}].ips"),
                    "empty; list at least one IP".to_string(),
                ));
            }
            if group.roles.is_empty() {
                return Err(err(
                    format!("spec.hosts[{g}].roles"),
                    "empty; give master or node".to_string(),
                ));
            }
            for (r, role) in group.roles.iter().enumerate() {
                if role.trim().is_empty() {
                    return Err(err(
                        format!("spec.hosts[{g}].roles[{r}]"),
                        "empty role".to_string(),
                    ));
                }
            }
            let roles: BTreeSet<String> =
                group.roles.iter().map(|r| r.trim().to_string()).collect();
            if roles.contains(ROLE_MASTER) && roles.contains(ROLE_NODE) {
                return Err(err(
                    format!("spec.hosts[{g}].roles"),
                    "a host is either master or node, not both (masters run workloads already)"
                        .to_string(),
                ));
            }
            let ssh_fields = group.ssh.clone().unwrap_or_default().over(&spec.ssh);
            let field = |name: &str| format!("spec.hosts[{g}].ssh.{name}");
            let ssh = resolve_ssh(&ssh_fields, lookup_env).map_err(|(f, m)| err(field(&f), m))?;
            let host_env = parse_env(&group.env)
                .map_err(|(i, m)| err(format!("spec.hosts[{g}].env[{i}]"), m))?;
            for (i, text) in group.ips.iter().enumerate() {
                let at = format!("spec.hosts[{g}].ips[{i}]");
                for ip in expand_ips(text).map_err(|m| err(at.clone(), m))? {
                    if let Some(first) = seen.get(&ip) {
                        return Err(err(
                            at.clone(),
                            format!("{ip} is listed twice (also at {first}); list each host once"),
                        ));
                    }
                    seen.insert(ip, at.clone());
                    hosts.push(Host {
                        ip,
                        roles: roles.clone(),
                        ssh: ssh.clone(),
                        env: host_env.clone(),
                        labels: group.labels.clone(),
                        taints: group.taints.clone(),
                    });
                }
            }
        }
        if hosts.is_empty() {
            return Err(err(
                "spec.hosts".to_string(),
                "no hosts; add at least one master".to_string(),
            ));
        }
        if !hosts.iter().any(|h| h.is_master()) {
            return Err(err(
                "spec.hosts".to_string(),
                "no host has the role master; give one host roles: [master]".to_string(),
            ));
        }
        let registry = resolve_registry(
            spec.registry.as_ref().cloned().unwrap_or_default(),
            lookup_env,
        )
        .map_err(|(f, m)| err(format!("spec.registry.{f}"), m))?;
        let data_root = spec
            .data_root
            .clone()
            .unwrap_or_else(|| DEFAULT_DATA_ROOT.to_string());
        if !data_root.starts_with('/') || data_root.split('/').any(|c| c == "..") {
            return Err(err(
                "spec.dataRoot".to_string(),
                format!("{data_root:?} must be an absolute path without .."),
            ));
        }
        let step_timeouts = super::engine_fields::resolve_limits(
            &self.cluster.api_version,
            &spec.step_timeouts,
            spec.max_parallel,
        )
        .map_err(|(f, m)| err(f, m))?;
        let (launch_apps, apps) =
            super::engine_fields::resolve_apps(&self.applications, &spec.app_names).map_err(
                |(field, message)| ClusterfileError {
                    file: self.file.clone(),
                    doc: String::new(),
                    field,
                    message,
                },
            )?;
        Ok(ClusterSpec {
            step_timeouts,
            max_parallel: spec.max_parallel,
            launch_apps,
            apps,
            name: if self.cluster.metadata.name.is_empty() {
                "default".to_string()
            } else {
                self.cluster.metadata.name.clone()
            },
            image: spec.image.clone(),
            env,
            cmds: spec.cmds.clone(),
            hosts,
            registry,
            data_root,
            configs: self.configs.iter().map(|c| c.spec.clone()).collect(),
            plugins: self.plugins.iter().map(|p| p.spec.clone()).collect(),
        })
    }

    /// The Clusterfile as YAML without any secret: `passwd`, `pkPasswd` and `sudoPasswd`
    /// are dropped everywhere (`passwdEnv`, `passwdFile` and `pk` name where secrets
    /// are and stay). This is what airlock keeps as the cluster's state.
    pub fn to_yaml_without_secrets(&self) -> String {
        let strip = |s: &mut SshFields| {
            s.passwd = None;
            s.pk_passwd = None;
            s.sudo_passwd = None;
        };
        let mut cluster = self.cluster.clone();
        strip(&mut cluster.spec.ssh);
        if let Some(r) = cluster.spec.registry.as_mut() {
            if let Some(l) = r.local_registry.as_mut() {
                l.password = None;
            }
            if let Some(e) = r.external_registry.as_mut() {
                e.password = None;
            }
        }
        for g in &mut cluster.spec.hosts {
            if let Some(s) = g.ssh.as_mut() {
                strip(s);
            }
        }
        let mut docs: Vec<String> = vec![serde_saphyr::to_string(&cluster).unwrap_or_default()];
        let kinded = |kind: &str, v: serde_json::Value| {
            let mut v = v;
            if let Some(o) = v.as_object_mut() {
                o.insert("apiVersion".into(), "sealer.io/v1".into());
                o.insert("kind".into(), kind.into());
            }
            serde_saphyr::to_string(&v).unwrap_or_default()
        };
        for c in &self.configs {
            docs.push(kinded(
                "Config",
                serde_json::to_value(c).unwrap_or_default(),
            ));
        }
        for p in &self.plugins {
            docs.push(kinded(
                "Plugin",
                serde_json::to_value(p).unwrap_or_default(),
            ));
        }
        for v in self.applications.iter().chain(&self.kubeadm) {
            docs.push(serde_saphyr::to_string(v).unwrap_or_default());
        }
        docs.join("---\n")
    }

    /// Add hosts to the `Cluster` document as a new host group with `roles`.
    pub fn add_hosts(&mut self, ips: &[IpAddr], roles: &[&str]) {
        if ips.is_empty() {
            return;
        }
        self.cluster.spec.hosts.push(HostGroup {
            ips: ips.iter().map(ToString::to_string).collect(),
            roles: roles.iter().map(|r| (*r).to_string()).collect(),
            ..HostGroup::default()
        });
    }

    /// Remove hosts from the `Cluster` document (ranges holding them are expanded);
    /// groups left without IPs are dropped.
    pub fn remove_hosts(&mut self, ips: &[IpAddr]) {
        for g in &mut self.cluster.spec.hosts {
            if !g
                .ips
                .iter()
                .any(|t| expand_ips(t).is_ok_and(|list| list.iter().any(|ip| ips.contains(ip))))
            {
                continue;
            }
            g.ips = g
                .ips
                .iter()
                .flat_map(|t| expand_ips(t).unwrap_or_default())
                .filter(|ip| !ips.contains(ip))
                .map(|ip| ip.to_string())
                .collect();
        }
        self.cluster.spec.hosts.retain(|g| !g.ips.is_empty());
    }
}

/// `kind`-dispatched documents are converted through JSON, which gives field paths.
fn typed<T: serde::de::DeserializeOwned>(doc: serde_json::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

fn parse_env(items: &[String]) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut out = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| (i, format!("{item:?} is not KEY=VALUE")))?;
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err((
                i,
                format!("{k:?} is not a variable name (letters, digits, _)"),
            ));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn resolve_ssh(
    f: &SshFields,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<SshConfig, (String, String)> {
    let password = if let Some(p) = &f.passwd {
        Some(Secret::new(p.clone()))
    } else if let Some(var) = &f.passwd_env {
        Some(Secret::new(lookup_env(var).ok_or_else(|| {
            (
                "passwdEnv".to_string(),
                format!("environment variable {var} is not set; export it or use passwdFile"),
            )
        })?))
    } else if let Some(file) = &f.passwd_file {
        let text = fs_err::read_to_string(file).map_err(|e| {
            (
                "passwdFile".to_string(),
                format!("cannot read {}: {}", file.display(), e.kind()),
            )
        })?;
        Some(Secret::new(
            text.lines().next().unwrap_or_default().to_string(),
        ))
    } else {
        None
    };
    if password.is_none() && f.pk.is_none() {
        return Err((
            "passwd".to_string(),
            "no credential; give passwd, passwdEnv, passwdFile or pk (a private key file)"
                .to_string(),
        ));
    }
    let user = f.user.clone().unwrap_or_else(|| "root".to_string());
    let bastion = f
        .bastion
        .as_deref()
        .map(|b| Bastion::parse(b, &user))
        .transpose()
        .map_err(|m| ("bastion".to_string(), m))?;
    Ok(SshConfig {
        bastion,
        user: f.user.clone().unwrap_or_else(|| "root".to_string()),
        port: f.port.map_or(22, |p| p.0),
        password: password.clone(),
        key: f.pk.clone(),
        key_passphrase: f.pk_passwd.clone().map(Secret::new),
        sudo_password: f.sudo_passwd.clone().map(Secret::new).or(password),
    })
}

/// Expand `198.18.0.2` or a range `198.18.0.2-198.18.0.5` (IPv4 ranges only).
pub fn expand_ips(text: &str) -> Result<Vec<IpAddr>, String> {
    let text = text.trim();
    if let Some((a, b)) = text.split_once('-') {
        let parse4 = |s: &str| {
            s.trim().parse::<std::net::Ipv4Addr>().map_err(|_| {
                format!(
                    "{:?} is not an IPv4 address (ranges look like 198.18.0.2-198.18.0.5)",
                    s.trim()
                )
            })
        };
        let (a, b) = (u32::from(parse4(a)?), u32::from(parse4(b)?));
        if b < a {
            return Err(format!("{text:?}: the range ends before it starts"));
        }
        if b - a > 4096 {
            return Err(format!(
                "{text:?}: a range of more than 4096 hosts is surely a typo"
            ));
        }
        return Ok((a..=b).map(|n| IpAddr::V4(n.into())).collect());
    }
    text.parse::<IpAddr>()
        .map(|ip| vec![ip])
        .map_err(|_| format!("{text:?} is not an IP address"))
}

/// The master role.
pub const ROLE_MASTER: &str = "master";
/// The worker role.
pub const ROLE_NODE: &str = "node";

/// How to log in to one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshConfig {
    /// Login user.
    pub user: String,
    /// SSH port.
    pub port: u16,
    /// Password, if any.
    pub password: Option<Secret>,
    /// Private key file, if any.
    pub key: Option<PathBuf>,
    /// Passphrase of the key.
    pub key_passphrase: Option<Secret>,
    /// Password for sudo when the user is not root.
    pub sudo_password: Option<Secret>,
    /// The jump host to go through, if any.
    pub bastion: Option<Bastion>,
}

/// A jump host: where it is and who logs in there (with the host's credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bastion {
    /// Its address or name.
    pub host: String,
    /// Its SSH port.
    pub port: u16,
    /// Login user there.
    pub user: String,
}

impl Bastion {
    /// Parse `[USER@]HOST[:PORT]`; the user defaults to `default_user`.
    pub fn parse(text: &str, default_user: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not [USER@]HOST[:PORT], e.g. ops@198.18.0.1:22");
        let (user, rest) = match text.trim().split_once('@') {
            Some((u, r)) if !u.is_empty() => (u.to_string(), r),
            Some(_) => return Err(bad()),
            None => (default_user.to_string(), text.trim()),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?),
            None => (rest, 22),
        };
        if host.is_empty() || host.contains(['/', ' ', '@']) {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_string(),
            port,
            user,
        })
    }
}

/// One host of the cluster, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Its address.
    pub ip: IpAddr,
    /// Its roles.
    pub roles: BTreeSet<String>,
    /// How to reach it.
    pub ssh: SshConfig,
    /// Host env, over the cluster's.
    pub env: BTreeMap<String, String>,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    pub taints: Vec<String>,
}

impl Host {
    /// Whether it has the master role.
    pub fn is_master(&self) -> bool {
        self.roles.contains(ROLE_MASTER)
    }
}

/// The registry on the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Domain in `/etc/hosts` and in mirror configs.
    pub domain: String,
    /// Port.
    pub port: u16,
    /// On every master instead of the first only.
    pub ha: bool,
    /// Plain HTTP without auth (`insecure: true`).
    pub insecure: bool,
    /// Basic auth the Clusterfile gives (default: random, kept per cluster).
    pub credentials: Option<(String, Secret)>,
    /// Names added to the generated server certificate.
    pub extra_names: Vec<String>,
    /// A certificate of the user's own instead of a generated one.
    pub supplied_cert: Option<SuppliedCert>,
    /// A registry the customer runs: images are pushed there, none runs on the nodes.
    pub external: Option<ExternalRegistry>,
}

/// `localRegistry.cert.certFile`/`keyFile`/`caFile`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuppliedCert {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The CA the nodes trust (default: `cert`).
    pub ca: Option<PathBuf>,
}

/// `registry.externalRegistry`, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalRegistry {
    /// `HOST[:PORT]` as clients address it.
    pub host: String,
    /// User and password, if it needs them.
    pub credentials: Option<(String, Secret)>,
    /// Its CA (PEM file), when not publicly trusted.
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP.
    pub insecure: bool,
}

impl RegistryConfig {
    /// `HOST:PORT` the nodes pull from: the external registry's, or `domain:port`.
    pub fn address(&self) -> String {
        match &self.external {
            Some(e) => e.host.clone(),
            None => format!("{}:{}", self.domain, self.port),
        }
    }
}

fn resolve_password(
    password: Option<&String>,
    password_env: Option<&String>,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, (String, String)> {
    if let Some(p) = password {
        return Ok(Some(Secret::new(p.clone())));
    }
    let Some(var) = password_env else {
        return Ok(None);
    };
    lookup_env(var).map(Secret::new).map(Some).ok_or_else(|| {
        (
            "passwordEnv".to_string(),
            format!("environment variable {var} is not set; export it"),
        )
    })
}

fn resolve_registry(
    r: RegistryFields,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<RegistryConfig, (String, String)> {
    let local = r.local_registry.unwrap_or_default();
    let at = |prefix: &str, (f, m): (String, String)| (format!("{prefix}.{f}"), m);
    let password = resolve_password(
        local.password.as_ref(),
        local.password_env.as_ref(),
        lookup_env,
    )
    .map_err(|e| at("localRegistry", e))?;
    let credentials = match (local.username.clone(), password) {
        (Some(u), Some(p)) if !u.is_empty() && !u.contains(':') => Some((u, p)),
        (None, None) => None,
        _ => {
            return Err((
                "localRegistry.username".to_string(),
                "give both username (without `:`) and password (or passwordEnv), or neither for random ones".to_string(),
            ));
        }
    };
    let cert = local.cert.unwrap_or_default();
    let extra_names = cert
        .subject_alt_name
        .map(|s| s.dns_names.into_iter().chain(s.ips).collect())
        .unwrap_or_default();
    let supplied_cert = match (cert.cert_file, cert.key_file) {
        (Some(cert_path), Some(key)) => Some(SuppliedCert {
            cert: cert_path,
            key,
            ca: cert.ca_file,
        }),
        (None, None) => None,
        _ => {
            return Err((
                "localRegistry.cert".to_string(),
                "give both certFile and keyFile (PEM), or neither for a generated certificate"
                    .to_string(),
            ));
        }
    };
    let external = match r.external_registry {
        None => None,
        Some(e) => {
            let domain = e.domain.trim().to_string();
            if domain.is_empty() || domain.contains('/') || domain.contains("://") {
                return Err((
                    "externalRegistry.domain".to_string(),
                    format!(
                        "{domain:?} is not a registry host; give HOST or HOST:PORT (no scheme, no path)"
                    ),
                ));
            }
            let host = match e.port {
                Some(p) => format!("{domain}:{}", p.0),
                None => domain,
            };
            let password =
                resolve_password(e.password.as_ref(), e.password_env.as_ref(), lookup_env)
                    .map_err(|x| at("externalRegistry", x))?;
            let credentials = match (e.username, password) {
                (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
                (None, None) => None,
                _ => {
                    return Err((
                        "externalRegistry.username".to_string(),
                        "give both username and password (or passwordEnv), or neither".to_string(),
                    ));
                }
            };
            Some(ExternalRegistry {
                host,
                credentials,
                ca_file: e.ca_file,
                insecure: e.insecure.unwrap_or(false),
            })
        }
    };
    Ok(RegistryConfig {
        domain: local
            .domain
            .unwrap_or_else(|| DEFAULT_REGISTRY_DOMAIN.to_string()),
        port: local.port.map_or(DEFAULT_REGISTRY_PORT, |p| p.0),
        ha: local.ha.unwrap_or(false),
        insecure: local.insecure.unwrap_or(false),
        credentials,
        extra_names,
        supplied_cert,
        external,
    })
}

/// A whole cluster, resolved and checked: what the install engine runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Cluster name.
    pub name: String,
    /// Cluster image.
    pub image: String,
    /// Cluster env.
    pub env: BTreeMap<String, String>,
    /// CMDS override.
    pub cmds: Vec<String>,
    /// Hosts, masters in file order first.
    pub hosts: Vec<Host>,
    /// Registry settings.
    pub registry: RegistryConfig,
    /// Data root on hosts.
    pub data_root: String,
    /// `Config` documents, applied to the rootfs at unpack.
    pub configs: Vec<ConfigSpec>,
    /// `Plugin` documents, run at their phases.
    pub plugins: Vec<PluginSpec>,
    /// How long install steps may take, by step name (`spec.stepTimeouts`).
    pub step_timeouts: BTreeMap<String, std::time::Duration>,
    /// Hosts worked on at once (`spec.maxParallel`), if set.
    pub max_parallel: Option<usize>,
    /// The apps to launch instead of the image's `LAUNCH` (`Application`
    /// `spec.launchApps` or `Cluster` `spec.appNames`).
    pub launch_apps: Option<Vec<String>>,
    /// Per-app launch commands and env from `Application` documents.
    pub apps: BTreeMap<String, super::engine_fields::AppOverride>,
}

impl ClusterSpec {
    /// The first master: registry host and where launch commands run.
    pub fn first_master(&self) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.is_master())
            .unwrap_or(&self.hosts[0])
    }

    /// Every master's IP, in host order.
    pub fn master_ips(&self) -> Vec<IpAddr> {
        self.hosts
            .iter()
            .filter(|h| h.is_master())
            .map(|h| h.ip)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_yaml_has_no_secrets_and_reads_back() {
        let mut cf = Clusterfile::parse("Clusterfile", SEALER).unwrap();
        let yaml = cf.to_yaml_without_secrets();
        assert!(!yaml.contains("s3cret"), "{yaml}");
        let back = Clusterfile::parse("state", &yaml).unwrap();
        assert_eq!(back.cluster.spec.hosts, cf.cluster.spec.hosts);
        assert_eq!(back.configs, cf.configs);
        assert_eq!(back.plugins, cf.plugins);
        assert_eq!(back.kubeadm, cf.kubeadm);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        cf.remove_hosts(&[ip("198.18.0.3"), ip("198.18.0.5")]);
        cf.add_hosts(&[ip("198.18.0.9")], &["node"]);
        let spec = cf.resolve(&no_env).unwrap();
        let ips: Vec<String> = spec.hosts.iter().map(|h| h.ip.to_string()).collect();
        assert_eq!(ips, ["198.18.0.2", "198.18.0.4", "198.18.0.9"]);
    }

    const SEALER: &str = r#"
apiVersion: sealer.io/v2
kind: Cluster
metadata:
  name: my-cluster
spec:
  image: kubernetes:v1.19.8
  env:
    - key1=value1
  ssh:
    passwd: s3cret
    user: root
    port: "22"
  hosts:
    - ips: [ 198.18.0.2, 198.18.0.3-198.18.0.4 ]
      roles: [ master ]
      ssh:
        port: "2222"
    - ips: [ 198.18.0.5 ]
      roles: [ node ]
      env: [ "NODE_ONLY=1" ]
---
apiVersion: sealer.io/v1
kind: Config
metadata:
  name: mysql-config
spec:
  path: etc/mysql.yaml
  data: |
    mysql-user: root
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
networking:
  podSubnet: 100.64.0.0/10
---
apiVersion: sealer.io/v1
kind: Plugin
metadata:
  name: hello
spec:
  type: SHELL
  action: post-install
  scope: master
  data: echo hi
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn registry_passwords_stay_out_of_the_state_and_half_given_credentials_are_refused() {
        let text = "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  ssh: {passwd: pw}\n  hosts:\n  - ips: [198.18.0.2]\n    roles: [master]\n  registry:\n    localRegistry: {username: ops, password: loc4l-pw, ha: true}\n    externalRegistry: {domain: harbor.corp, port: 8443, username: u, password: ext3rnal-pw}\n";
        let cf = Clusterfile::parse("Clusterfile", text).unwrap();
        let spec = cf.resolve(&no_env).unwrap();
        assert!(spec.registry.ha);
        assert_eq!(spec.registry.address(), "harbor.corp:8443");
        assert_eq!(
            spec.registry.credentials.as_ref().map(|c| c.1.expose()),
            Some("loc4l-pw")
        );
        let yaml = cf.to_yaml_without_secrets();
        assert!(
            !yaml.contains("loc4l-pw") && !yaml.contains("ext3rnal-pw"),
            "{yaml}"
        );
        assert!(!format!("{cf:?}").contains("loc4l-pw"));
        let half = text.replace("username: ops, password: loc4l-pw, ", "username: ops, ");
        let err = Clusterfile::parse("Clusterfile", &half)
            .unwrap()
            .resolve(&no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.registry.localRegistry.username"),
            "{err}"
        );
    }

    #[test]
    fn reads_a_sealer_clusterfile_unchanged() {
        let cf = Clusterfile::parse("Clusterfile", SEALER).unwrap();
        assert_eq!(cf.configs.len(), 1);
        assert_eq!(cf.plugins[0].spec.action, "post-install");
        assert_eq!(cf.kubeadm.len(), 1);
        let spec = cf.resolve(&no_env).unwrap();
        assert_eq!(spec.name, "my-cluster");
        let ips: Vec<String> = spec.hosts.iter().map(|h| h.ip.to_string()).collect();
        assert_eq!(
            ips,
            ["198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.5"]
        );
        assert_eq!(spec.hosts[0].ssh.port, 2222);
        assert_eq!(spec.hosts[3].ssh.port, 22);
        assert_eq!(
            spec.hosts[3].ssh.password.as_ref().unwrap().expose(),
            "s3cret"
        );
        assert_eq!(spec.hosts[3].env["NODE_ONLY"], "1");
        assert_eq!(spec.env["key1"], "value1");
        assert_eq!(spec.registry.domain, "sea.hub");
        assert_eq!(spec.first_master().ip.to_string(), "198.18.0.2");
    }

    fn resolve_err(yaml: &str) -> String {
        let cf = Clusterfile::parse("cf.yaml", yaml);
        match cf {
            Err(e) => e.to_string(),
            Ok(cf) => cf.resolve(&no_env).unwrap_err().to_string(),
        }
    }

    fn cluster(hosts: &str) -> String {
        format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  ssh: {{passwd: x}}\n  hosts:\n{hosts}"
        )
    }

    #[test]
    fn errors_name_document_and_field() {
        assert_eq!(
            resolve_err(&cluster(
                "  - ips: [198.18.0.2]\n    roles: [master]\n  - ips: [198.18.0.300]\n    roles: [node]\n"
            )),
            r#"cf.yaml: Cluster spec.hosts[1].ips[0]: "198.18.0.300" is not an IP address"#
        );
        assert_eq!(
            resolve_err(&cluster(
                "  - ips: [198.18.0.2-198.18.0.3]\n    roles: [master]\n  - ips: [198.18.0.3]\n    roles: [node]\n"
            )),
            "cf.yaml: Cluster spec.hosts[1].ips[0]: 198.18.0.3 is listed twice (also at spec.hosts[0].ips[0]); list each host once"
        );
        assert!(
            resolve_err(&cluster(
                "  - ips: [198.18.0.2]\n    roles: [master, node]\n"
            ))
            .starts_with("cf.yaml: Cluster spec.hosts[0].roles: a host is either master or node")
        );
        assert!(
            resolve_err(&cluster("  - ips: [198.18.0.2]\n    roles: [node]\n"))
                .contains("no host has the role master")
        );
        assert!(
            resolve_err(&cluster(
                "  - ips: [198.18.0.2]\n    roles: [master]\n    ssh: {port: 70000}\n"
            ))
            .starts_with("cf.yaml: Cluster spec.hosts[0].ssh.port: 70000 is not a port number")
        );
        assert!(resolve_err("kind: Nope\n").contains("unknown kind \"Nope\""));
        assert!(
            resolve_err("apiVersion: v9\nkind: Cluster\n")
                .contains("Cluster apiVersion: \"v9\" is not supported")
        );
        let e = resolve_err("a: [\n");
        assert!(e.starts_with("cf.yaml: not valid YAML"), "{e}");
        let no_cred = "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  hosts:\n  - ips: [198.18.0.2]\n    roles: [master]\n";
        assert!(resolve_err(no_cred).contains("spec.hosts[0].ssh.passwd: no credential"));
    }

    #[test]
    fn a_bastion_is_parsed_and_checked() {
        let yaml = "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  ssh: {passwd: x, user: ops, bastion: 198.18.0.1}\n  hosts:\n  - ips: [198.18.0.2]\n    roles: [master]\n    ssh: {bastion: 'jump@gw:2222'}\n  - ips: [198.18.0.3]\n    roles: [node]\n";
        let spec = Clusterfile::parse("cf", yaml)
            .unwrap()
            .resolve(&no_env)
            .unwrap();
        let b = |i: usize| spec.hosts[i].ssh.bastion.clone().unwrap();
        assert_eq!(
            b(0),
            Bastion {
                host: "gw".into(),
                port: 2222,
                user: "jump".into()
            }
        );
        assert_eq!(
            b(1),
            Bastion {
                host: "198.18.0.1".into(),
                port: 22,
                user: "ops".into()
            }
        );
        let bad = yaml.replace("jump@gw:2222", "gw:notaport");
        let err = Clusterfile::parse("cf", &bad)
            .unwrap()
            .resolve(&no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "cf: Cluster spec.hosts[0].ssh.bastion: \"gw:notaport\" is not [USER@]HOST[:PORT]"
            ),
            "{err}"
        );
    }

    #[test]
    fn passwords_come_from_env_when_asked() {
        let yaml = "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  ssh: {passwdEnv: MY_PW}\n  hosts:\n  - ips: [198.18.0.2]\n    roles: [master]\n";
        let cf = Clusterfile::parse("cf", yaml).unwrap();
        assert!(
            cf.resolve(&no_env)
                .unwrap_err()
                .to_string()
                .contains("MY_PW is not set")
        );
        let spec = cf
            .resolve(&|k| (k == "MY_PW").then(|| "pw".to_string()))
            .unwrap();
        assert_eq!(spec.hosts[0].ssh.password.as_ref().unwrap().expose(), "pw");
    }

    #[test]
    fn secrets_never_print_in_debug() {
        let cf = Clusterfile::parse("Clusterfile", SEALER).unwrap();
        assert!(!format!("{cf:?}").contains("s3cret"));
        let spec = cf.resolve(&no_env).unwrap();
        assert!(!format!("{spec:?}").contains("s3cret"));
    }
}
