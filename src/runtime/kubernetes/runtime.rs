//! The Kubernetes runtime in the install engine: kubeadm driven over SSH with a PKI
//! airlock makes itself.
//!
//! 1. [`KubernetesRuntime::prepare`] (on the operator, once per run) merges the kubeadm
//!    configuration ([`super::kubeadm`]), then loads the cluster's PKI and bootstrap
//!    token from the cluster state (`<store>/clusters/<name>/kubernetes/`), generating
//!    them the first time ([`super::pki`]).
//! 2. For each host the engine asks for [`Runtime::files`]: everything is staged under
//!    `<data root>/cluster/kubernetes/` (keys and kubeconfigs 0600): `kube.sh`
//!    (`installer/kubernetes/kube.sh`), the containerd configuration, the host's kubeadm
//!    file; masters get `etc/` (their `/etc/kubernetes`: the first master the whole
//!    layout, the others the shared certificates and keys plus their own etcd
//!    certificates and kubeconfigs, never a `kubelet.conf`, which their join makes);
//!    workers get no key at all, only the cluster CA certificate (for the load
//!    balancer's health checks), the `airlock-lb` systemd unit and its backends file.
//! 3. The engine runs `kube.sh init` on the first master, `kube.sh join-master` on the
//!    other masters one at a time and `kube.sh join-node` on the workers at the same
//!    time; before each join the first master refreshes the bootstrap token
//!    (`kube.sh token`, the token on stdin).
//! 4. Once every host joined, the first master labels and taints the nodes from the
//!    Clusterfile and waits (bounded) for Ready nodes and running kube-system pods
//!    (`kube.sh ready`).
//! 5. `airlock check --post` and `airlock reset`/`delete` run `check.sh` and
//!    `uninstall.sh` from the staging directory (recorded by the engine).
//! 6. Afterwards, [`renew_pki`] re-issues the PKI from its CAs (`airlock cert renew`,
//!    and [`KubernetesRuntime::issue_for_new_masters`] when a master is not in it yet:
//!    adding masters), [`master_files`] and [`kube_sh_file`] stage it on masters, and
//!    [`lb_backends_file`] rewrites the workers' backends when masters join or leave
//!    ([`super::scale`] keeps running hosts current).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rand::Rng as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::kubeadm::{self, ClusterInputs, KubeadmConfig, KubeadmError, NodeInputs};
use super::pki::{self, AdminIdentity, Node, PkiError, PkiOptions};
use crate::install::runtime::{ImageFiles, Runtime, RuntimeAction, RuntimeFile};
use crate::remote::{RemoteCommand, Secret};
use crate::spec::clusterfile::{ClusterSpec, Host};

const KUBE_SH: &str = include_str!("../../../installer/kubernetes/kube.sh");
/// The image's base script when no label names another.
pub const DEFAULT_BASE_SCRIPT: &str = "scripts/init-kube.sh";
/// The label that names the image's base script.
pub const BASE_SCRIPT_LABEL: &str = "io.airlock.runtime.base";
/// How long `kube.sh ready` waits for the cluster, in seconds (env `KubeReadyWait`).
pub const DEFAULT_READY_WAIT: u64 = 600;

/// Why the Kubernetes runtime cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// The kubeadm configuration cannot be made.
    #[error(transparent)]
    Kubeadm(#[from] KubeadmError),
    /// The PKI cannot be made or read.
    #[error("cluster PKI: {0}")]
    Pki(#[from] PkiError),
    /// The cluster state cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The image does not say its Kubernetes version.
    #[error(
        "image {0}: no Kubernetes version (set KUBEVERSION or LABEL io.airlock.runtime-version in its Kubefile)"
    )]
    NoVersion(String),
    /// The Clusterfile lists a master first that is not the one the cluster was
    /// created on (the first master runs `kubeadm init` and keeps the registry).
    #[error(
        "master {listed} is listed first, but the cluster's PKI ({dir}) was made with {created} as the first master: list {created} first under spec.hosts (new masters can come after it)"
    )]
    FirstMasterChanged {
        /// The master listed first.
        listed: IpAddr,
        /// The node name of the first master the PKI was made with.
        created: String,
        /// The PKI's directory.
        dir: PathBuf,
    },
    /// A command on a host failed while its Kubernetes files were brought up to date.
    #[error("{host}: {doing}: {source} (run the same command again)")]
    Remote {
        /// The host.
        host: IpAddr,
        /// What was being done.
        doing: &'static str,
        /// The failure.
        source: crate::remote::RemoteError,
    },
    /// A certificate does not parse.
    #[error("{path}: {message}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The Kubernetes runtime of one cluster, ready to give each host its files and commands.
pub struct KubernetesRuntime {
    pub(super) data_root: String,
    pub(super) first: IpAddr,
    pub(super) masters: Vec<IpAddr>,
    config: KubeadmConfig,
    /// The PKI by relative path (`pki/ca.crt`, `nodes/<name>/kubelet.conf`).
    pub(super) pki: BTreeMap<String, (String, bool)>,
    /// How long `kube.sh renew` keeps the static pods aside, in seconds (env
    /// `KubeRestartWait`).
    pub(super) restart_wait: String,
    /// Where the PKI and the token are kept.
    state_dir: PathBuf,
    /// Masters not in the PKI yet: [`KubernetesRuntime::issue_for_new_masters`].
    new_masters: Vec<IpAddr>,
    token: Secret,
    ca_cert_hash: String,
    containerd: String,
    base_script: Option<String>,
    marks: String,
    ready_wait: u64,
}

impl std::fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRuntime")
            .field("first", &self.first)
            .field("masters", &self.masters)
            .field("pki_files", &self.pki.len())
            .finish_non_exhaustive()
    }
}

/// What [`KubernetesRuntime::prepare`] reads from the image.
#[derive(Clone, Copy, Debug)]
pub struct ImageInputs<'a> {
    /// The image's name (for messages).
    pub name: &'a str,
    /// Its Kubernetes version (`runtime_version` of its config).
    pub version: Option<&'a str>,
    /// Its rootfs files (for `etc/kubeadm.yml` and the base script).
    pub files: &'a ImageFiles,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

impl KubernetesRuntime {
    /// Merge the kubeadm configuration and load (or make, the first time) the PKI and
    /// the bootstrap token under `state_dir`. Masters not in the PKI (added to a
    /// running cluster) are only noted: [`KubernetesRuntime::issue_for_new_masters`]
    /// re-issues the PKI for them once the operator confirmed, before any host runs.
    pub fn prepare(
        spec: &ClusterSpec,
        image: ImageInputs<'_>,
        clusterfile_kubeadm: &[Value],
        state_dir: &Path,
        now: OffsetDateTime,
    ) -> Result<Self, KubernetesError> {
        let version = image
            .version
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| KubernetesError::NoVersion(image.name.to_string()))?;
        let masters = spec.master_ips();
        let registry = format!("{}:{}", spec.registry.domain, spec.registry.port);
        let inputs = ClusterInputs {
            version: version.to_string(),
            registry: registry.clone(),
            masters: masters.clone(),
            env: spec.env.clone(),
        };
        let image_doc = crate::install::runtime::KUBEADM_FILES
            .iter()
            .find_map(|p| image.files.plugin_docs.get(*p))
            .map(String::as_str);
        let config = KubeadmConfig::merge(&inputs, image_doc, clusterfile_kubeadm)?;
        let pki = load_or_make_pki(state_dir, &config, &masters, version, now)?;
        let first = spec.first_master().ip;
        if let Some(created) = pki_first_master(&pki)
            && created != node_name(first)
        {
            return Err(KubernetesError::FirstMasterChanged {
                listed: first,
                created,
                dir: state_dir.to_path_buf(),
            });
        }
        let new_masters = missing_masters(&pki, &masters);
        let token = load_or_make_token(state_dir)?;
        let ca = pki.get("pki/ca.crt").map(|(c, _)| c.as_str()).unwrap_or("");
        let ca_cert_hash = ca_public_key_hash(ca)?;
        let base_script = image
            .labels
            .get(BASE_SCRIPT_LABEL)
            .map(|p| p.trim_start_matches("./").to_string())
            .or_else(|| {
                image
                    .files
                    .has(DEFAULT_BASE_SCRIPT)
                    .then(|| DEFAULT_BASE_SCRIPT.to_string())
            });
        let ready_wait = spec
            .env
            .get("KubeReadyWait")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_READY_WAIT);
        Ok(Self {
            data_root: spec.data_root.clone(),
            first,
            restart_wait: restart_wait(spec),
            state_dir: state_dir.to_path_buf(),
            new_masters,
            containerd: kubeadm::containerd_config(&kubeadm::pause_image(&registry, version)),
            marks: marks(spec),
            masters,
            config,
            pki,
            token,
            ca_cert_hash,
            base_script,
            ready_wait,
        })
    }

    /// The masters of the Clusterfile that are not in the cluster's PKI yet.
    pub fn new_masters(&self) -> &[IpAddr] {
        &self.new_masters
    }

    /// Re-issue the PKI from its CAs for every master when some are new to it
    /// ([`renew_pki`]: the new ones get their own etcd certificates and kubeconfigs,
    /// the API server certificate names them). Call it before the engine runs: until
    /// then a new master's files lack its certificates. Returns whether it re-issued.
    pub fn issue_for_new_masters(&mut self, now: OffsetDateTime) -> Result<bool, KubernetesError> {
        if self.new_masters.is_empty() {
            return Ok(false);
        }
        self.pki = renew_pki(&self.state_dir, &self.masters, &[], now)?;
        self.new_masters.clear();
        Ok(true)
    }

    fn stage(&self) -> String {
        format!("{}/cluster/kubernetes", self.data_root)
    }

    fn kube_sh(&self) -> String {
        format!("{}/kube.sh", self.stage())
    }

    /// `sh kube.sh ACTION` in the rootfs, as root, with `env` and the runtime's own.
    fn kube(&self, action: &str, rootfs: &str, env: &[(String, String)]) -> RemoteCommand {
        let mut cmd = RemoteCommand::new("sh")
            .args([self.kube_sh().as_str(), action])
            .cwd(rootfs)
            .sudo();
        for (k, v) in env {
            cmd = cmd.env(k.as_str(), v.as_str());
        }
        cmd.env(
            "AIRLOCK_KUBE_BASE",
            self.base_script.clone().unwrap_or_default(),
        )
    }

    fn node_inputs(&self, host: &Host) -> NodeInputs {
        NodeInputs {
            name: node_name(host.ip),
            ip: host.ip,
            token: self.token.expose().to_string(),
            ca_cert_hash: self.ca_cert_hash.clone(),
        }
    }

    fn lb_unit(&self) -> String {
        let stage = self.stage();
        format!(
            "# written by airlock\n[Unit]\nDescription=airlock load balancer in front of the Kubernetes API servers\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nExecStart={root}/bin/airlock agent lb --listen 127.0.0.1:{port} --backends-file {stage}/lb-backends --health-ca {stage}/ca.crt\nRestart=always\nRestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n",
            root = self.data_root,
            port = kubeadm::API_PORT,
        )
    }
}

impl Runtime for KubernetesRuntime {
    fn name(&self) -> &str {
        "kubernetes"
    }

    fn command(
        &self,
        action: RuntimeAction,
        rootfs: &str,
        env: &[(String, String)],
    ) -> Option<RemoteCommand> {
        let name = match action {
            RuntimeAction::Init => "init",
            RuntimeAction::Join => {
                let is_master = env
                    .iter()
                    .any(|(k, v)| k == "AIRLOCK_ROLE" && v == "master");
                if is_master {
                    "join-master"
                } else {
                    "join-node"
                }
            }
            RuntimeAction::Check => "check",
            RuntimeAction::Uninstall => "uninstall",
        };
        Some(self.kube(name, rootfs, env))
    }

    fn host_command(
        &self,
        action: RuntimeAction,
        host: &Host,
        rootfs: &str,
        env: &[(String, String)],
    ) -> Option<RemoteCommand> {
        let name = match action {
            RuntimeAction::Join if host.is_master() => "join-master",
            RuntimeAction::Join => "join-node",
            RuntimeAction::Init => "init",
            RuntimeAction::Check => "check",
            RuntimeAction::Uninstall => "uninstall",
        };
        Some(self.kube(name, rootfs, env))
    }

    fn script(&self, action: RuntimeAction) -> Option<&str> {
        // Relative to the rootfs, as the engine records them for `check` and `reset`.
        match action {
            RuntimeAction::Check => Some("../cluster/kubernetes/check.sh"),
            RuntimeAction::Uninstall => Some("../cluster/kubernetes/uninstall.sh"),
            RuntimeAction::Init | RuntimeAction::Join => Some("../cluster/kubernetes/kube.sh"),
        }
    }

    fn files(&self, action: RuntimeAction, host: &Host) -> Vec<RuntimeFile> {
        if !matches!(action, RuntimeAction::Init | RuntimeAction::Join) {
            return Vec::new();
        }
        let stage = self.stage();
        let file = |name: &str, bytes: Vec<u8>, mode: &'static str| RuntimeFile {
            path: format!("{stage}/{name}"),
            bytes,
            mode,
        };
        let mut out = vec![
            file("kube.sh", KUBE_SH.as_bytes().to_vec(), "600"),
            file(
                "check.sh",
                b"exec sh \"$(dirname \"$0\")/kube.sh\" check\n".to_vec(),
                "600",
            ),
            file(
                "uninstall.sh",
                b"exec sh \"$(dirname \"$0\")/kube.sh\" uninstall\n".to_vec(),
                "600",
            ),
            file(
                "containerd.toml",
                self.containerd.clone().into_bytes(),
                "644",
            ),
        ];
        let node = self.node_inputs(host);
        let kubeadm = if host.ip == self.first {
            self.config.init_config(&node)
        } else {
            self.config.join_config(&node, host.is_master())
        };
        // The kubeadm file holds the bootstrap token.
        out.push(file("kubeadm.yaml", kubeadm.into_bytes(), "600"));
        if host.is_master() {
            out.extend(master_files(
                &self.pki,
                self.first,
                host.ip,
                &self.data_root,
            ));
        } else {
            let ca = self.pki.get("pki/ca.crt").map(|(c, _)| c.clone());
            out.push(file("ca.crt", ca.unwrap_or_default().into_bytes(), "644"));
            out.push(file(
                "airlock-lb.service",
                self.lb_unit().into_bytes(),
                "644",
            ));
            out.push(lb_backends_file(&self.data_root, &self.masters));
        }
        out
    }

    /// The PKI (renewed on running masters by `kube.sh renew`), the workers'
    /// `lb-backends` (rewritten when masters join or leave) and the kubeadm file
    /// (its certSANs list every master; kubeadm reads it only to init or join, which
    /// a node that runs does not do again).
    fn keeps_current(&self, file: &RuntimeFile) -> bool {
        let stage = self.stage();
        file.path.strip_prefix(stage.as_str()).is_some_and(|rel| {
            rel.starts_with("/etc/") || rel == "/lb-backends" || rel == "/kubeadm.yaml"
        })
    }

    fn before_join(&self, _host: &Host, rootfs: &str) -> Option<RemoteCommand> {
        Some(
            RemoteCommand::new("sh")
                .args([self.kube_sh().as_str(), "token"])
                .cwd(rootfs)
                .env("AIRLOCK_DATA_ROOT", self.data_root.as_str())
                .env("AIRLOCK_HOST_IP", self.first.to_string())
                .stdin(self.token.expose().as_bytes().to_vec())
                .sudo(),
        )
    }

    fn parallel_workers(&self) -> bool {
        true
    }

    fn after_joins(&self, rootfs: &str, env: &[(String, String)]) -> Option<RemoteCommand> {
        Some(
            self.kube("ready", rootfs, env)
                .env("AIRLOCK_KUBE_MARKS", self.marks.clone())
                .env("AIRLOCK_KUBE_WAIT", self.ready_wait.to_string()),
        )
    }
}

/// The files staged for a master's `/etc/kubernetes`, under
/// `<data_root>/cluster/kubernetes/etc/`: for the first master the whole layout but
/// `nodes/`; for the others the shared certificates and keys, `admin.conf`, and their
/// own `nodes/<name>/` files but `kubelet.conf` (their join makes it).
pub fn master_files(
    pki: &BTreeMap<String, (String, bool)>,
    first: IpAddr,
    ip: IpAddr,
    data_root: &str,
) -> Vec<RuntimeFile> {
    let mut chosen: BTreeMap<String, &(String, bool)> = pki
        .iter()
        .filter(|(p, _)| !p.starts_with("nodes/"))
        .filter(|(p, _)| ip == first || !matches!(p.as_str(), "kubelet.conf" | "super-admin.conf"))
        .map(|(p, f)| (p.clone(), f))
        .collect();
    if ip != first {
        let own = format!("nodes/{}/", node_name(ip));
        for (p, f) in pki {
            if let Some(rel) = p.strip_prefix(&own)
                && rel != "kubelet.conf"
            {
                chosen.insert(rel.to_string(), f);
            }
        }
    }
    chosen
        .into_iter()
        .map(|(path, (contents, secret))| RuntimeFile {
            path: format!("{data_root}/cluster/kubernetes/etc/{path}"),
            bytes: contents.clone().into_bytes(),
            mode: if *secret { "600" } else { "644" },
        })
        .collect()
}

/// A worker's `lb-backends`: every master's API server, one `IP:6443` a line
/// (`airlock agent lb` re-reads it every second).
pub fn lb_backends_file(data_root: &str, masters: &[IpAddr]) -> RuntimeFile {
    let backends: String = masters
        .iter()
        .map(|ip| format!("{}\n", std::net::SocketAddr::new(*ip, kubeadm::API_PORT)))
        .collect();
    RuntimeFile {
        path: format!("{data_root}/cluster/kubernetes/lb-backends"),
        bytes: backends.into_bytes(),
        mode: "644",
    }
}

/// `kube.sh`, staged on masters before `airlock cert renew` runs its `renew` action.
pub fn kube_sh_file(data_root: &str) -> RuntimeFile {
    RuntimeFile {
        path: format!("{data_root}/cluster/kubernetes/kube.sh"),
        bytes: KUBE_SH.as_bytes().to_vec(),
        mode: "600",
    }
}

/// What the PKI was made from, kept beside it for renewals (`pki-options.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredPkiOptions {
    /// The service CIDR.
    pub service_cidr: String,
    /// The cluster DNS domain.
    pub dns_domain: String,
    /// The API server's extra SANs.
    pub alt_names: Vec<String>,
    /// The Kubernetes version.
    pub version: String,
}

/// Re-issue every certificate and kubeconfig of the cluster's PKI under `state_dir`
/// from its three CAs, keeping the CAs and the service-account key pair, with
/// `add_alt_names` added to the API server's SANs. The previous files are kept as
/// `pki-files.<unix time>.old`. Returns the new PKI.
pub fn renew_pki(
    state_dir: &Path,
    masters: &[IpAddr],
    add_alt_names: &[String],
    now: OffsetDateTime,
) -> Result<BTreeMap<String, (String, bool)>, KubernetesError> {
    let root = state_dir.join("pki-files");
    let old = read_tree(&root)?;
    let options_path = state_dir.join("pki-options.json");
    let text = fs_err::read_to_string(&options_path).map_err(io_err(&options_path))?;
    let mut stored: StoredPkiOptions =
        serde_json::from_str(&text).map_err(|e| KubernetesError::Io {
            path: options_path.clone(),
            source: std::io::Error::other(e),
        })?;
    for name in add_alt_names {
        if !stored.alt_names.contains(name) {
            stored.alt_names.push(name.clone());
        }
    }
    let ca = |base: &str| -> Result<pki::ExistingCa, KubernetesError> {
        let get = |ext: &str| {
            let path = format!("{base}.{ext}");
            old.get(&path)
                .map(|(c, _)| c.clone())
                .ok_or_else(|| KubernetesError::Certificate {
                    path: root.join(&path).display().to_string(),
                    message: "missing: cannot renew without the CA".into(),
                })
        };
        Ok(pki::ExistingCa {
            cert_pem: get("crt")?,
            key_pem: get("key")?,
        })
    };
    let mut options = pki_options(masters, &stored);
    options.ca = Some(ca("pki/ca")?);
    options.front_proxy_ca = Some(ca("pki/front-proxy-ca")?);
    options.etcd_ca = Some(ca("pki/etcd/ca")?);
    let mut made = pki::generate(&options, now)?;
    for f in &mut made.files {
        let path = f.path.to_string_lossy().into_owned();
        if let Some((kept, _)) = old
            .get(&path)
            .filter(|_| matches!(path.as_str(), "pki/sa.key" | "pki/sa.pub"))
        {
            f.contents.clone_from(kept);
        }
    }
    let fresh = state_dir.join("pki-files.new");
    if fresh.exists() {
        fs_err::remove_dir_all(&fresh).map_err(io_err(&fresh))?;
    }
    fs_err::create_dir_all(&fresh).map_err(io_err(&fresh))?;
    made.write_to(&fresh)?;
    let aside = state_dir.join(format!("pki-files.{}.old", now.unix_timestamp()));
    fs_err::rename(&root, &aside).map_err(io_err(&root))?;
    fs_err::rename(&fresh, &root).map_err(io_err(&root))?;
    let json = serde_json::to_vec_pretty(&stored).unwrap_or_default();
    write_private(&options_path, &json).map_err(io_err(&options_path))?;
    read_tree(&root)
}

fn pki_options(masters: &[IpAddr], stored: &StoredPkiOptions) -> PkiOptions {
    let mut options = PkiOptions::new(
        masters
            .iter()
            .map(|ip| Node {
                name: node_name(*ip),
                ip: *ip,
            })
            .collect(),
    );
    options.service_cidr.clone_from(&stored.service_cidr);
    options.dns_domain.clone_from(&stored.dns_domain);
    options.alt_names.clone_from(&stored.alt_names);
    if let Ok((major, minor)) = kubeadm::parse_version(&stored.version) {
        options.admin_identity = AdminIdentity::for_version(major, minor);
    }
    options
}

/// The Kubernetes node name of a host: airlock names nodes after their address.
pub fn node_name(ip: IpAddr) -> String {
    ip.to_string()
}

/// How long `kube.sh renew` keeps the static pods aside: the cluster env's
/// `KubeRestartWait`, 20 seconds by default.
pub fn restart_wait(spec: &ClusterSpec) -> String {
    spec.env
        .get("KubeRestartWait")
        .cloned()
        .unwrap_or_else(|| "20".to_string())
}

/// The masters that have no files of their own in `pki` yet (`nodes/<name>/`).
pub fn missing_masters(pki: &BTreeMap<String, (String, bool)>, masters: &[IpAddr]) -> Vec<IpAddr> {
    masters
        .iter()
        .filter(|ip| !pki.contains_key(&format!("nodes/{}/pki/etcd/server.crt", node_name(**ip))))
        .copied()
        .collect()
}

/// The node name of the master `pki` was made with first: the one whose etcd
/// serving certificate is also the layout's own (`pki/etcd/server.crt`).
fn pki_first_master(pki: &BTreeMap<String, (String, bool)>) -> Option<String> {
    let top = pki.get("pki/etcd/server.crt")?;
    pki.iter().find_map(|(path, file)| {
        let name = path
            .strip_prefix("nodes/")?
            .strip_suffix("/pki/etcd/server.crt")?;
        (file == top).then(|| name.to_string())
    })
}

/// `label NODE K=V` and `taint NODE T` lines for every host's labels and taints.
fn marks(spec: &ClusterSpec) -> String {
    let mut out = String::new();
    for h in &spec.hosts {
        for (k, v) in &h.labels {
            out.push_str(&format!("label {} {k}={v}\n", node_name(h.ip)));
        }
        for t in &h.taints {
            out.push_str(&format!("taint {} {t}\n", node_name(h.ip)));
        }
    }
    out
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KubernetesError + '_ {
    move |source| KubernetesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The PKI under `dir/pki-files`, made the first time with every master.
fn load_or_make_pki(
    dir: &Path,
    config: &KubeadmConfig,
    masters: &[IpAddr],
    version: &str,
    now: OffsetDateTime,
) -> Result<BTreeMap<String, (String, bool)>, KubernetesError> {
    let root = dir.join("pki-files");
    if !root.join("pki/ca.crt").is_file() {
        let (service_cidr, dns_domain, alt_names) = config.pki_inputs();
        let stored = StoredPkiOptions {
            service_cidr,
            dns_domain,
            alt_names,
            version: version.to_string(),
        };
        let made = pki::generate(&pki_options(masters, &stored), now)?;
        let tmp = dir.join("pki-files.tmp");
        if tmp.exists() {
            fs_err::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        fs_err::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        made.write_to(&tmp)?;
        let options_path = dir.join("pki-options.json");
        let json = serde_json::to_vec_pretty(&stored).unwrap_or_default();
        write_private(&options_path, &json).map_err(io_err(&options_path))?;
        fs_err::rename(&tmp, &root).map_err(io_err(&root))?;
    }
    read_tree(&root)
}

/// The cluster's current PKI under `state_dir/pki-files`, by relative path, with
/// whether each file is secret.
pub fn load_pki(state_dir: &Path) -> Result<BTreeMap<String, (String, bool)>, KubernetesError> {
    read_tree(&state_dir.join("pki-files"))
}

/// Every file under `root`, by relative path, with whether it is secret (not a
/// certificate or public key).
fn read_tree(root: &Path) -> Result<BTreeMap<String, (String, bool)>, KubernetesError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs_err::read_dir(&d).map_err(io_err(&d))? {
            let path = entry.map_err(io_err(&d))?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let text = fs_err::read_to_string(&path).map_err(io_err(&path))?;
            let secret = !rel.ends_with(".crt") && !rel.ends_with(".pub");
            out.insert(rel, (text, secret));
        }
    }
    Ok(out)
}

/// The bootstrap token under `dir/token` (0600), made the first time.
fn load_or_make_token(dir: &Path) -> Result<Secret, KubernetesError> {
    let path = dir.join("token");
    if let Ok(text) = fs_err::read_to_string(&path) {
        let t = text.trim();
        if is_token(t) {
            return Ok(Secret::new(t));
        }
    }
    let mut rng = rand::rng();
    let mut pick = |n: usize| -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect()
    };
    let token = format!("{}.{}", pick(6), pick(16));
    fs_err::create_dir_all(dir).map_err(io_err(dir))?;
    write_private(&path, format!("{token}\n").as_bytes()).map_err(io_err(&path))?;
    Ok(Secret::new(token))
}

/// Write `bytes` to `path` through a temporary file created 0600, then rename it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = fs_err::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs_err::rename(&tmp, path)
}

/// Whether `t` is a kubeadm bootstrap token: `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn is_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    t.split_once('.')
        .is_some_and(|(a, b)| ok(a, 6) && ok(b, 16))
}

/// kubeadm's `--discovery-token-ca-cert-hash`: `sha256:` and the hex SHA-256 of the
/// CA certificate's SubjectPublicKeyInfo.
pub fn ca_public_key_hash(ca_pem: &str) -> Result<String, KubernetesError> {
    let bad = |message: String| KubernetesError::Certificate {
        path: "pki/ca.crt".into(),
        message,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("not a certificate: {e}")))?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(spki))))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::spec::clusterfile::Clusterfile;

    /// A cluster with these masters (`198.18.0.2, 198.18.0.3`) and the worker
    /// 198.18.0.4, prepared with its state under `dir`.
    pub(in super::super) fn prepare_with(
        dir: &Path,
        masters: &str,
    ) -> Result<(ClusterSpec, KubernetesRuntime), KubernetesError> {
        let text = format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: k\nspec:\n  image: k:v1\n  ssh: {{ passwd: x }}\n  env: [ SvcCIDR=10.200.0.0/16, KubeRestartWait=0 ]\n  hosts:\n    - ips: [ {masters} ]\n      roles: [ master ]\n    - ips: [ 198.18.0.4 ]\n      roles: [ node ]\n      labels: {{ disk: ssd }}\n      taints: [ \"gpu=yes:NoSchedule\" ]\n"
        );
        let cf = Clusterfile::parse("Clusterfile", &text).unwrap();
        let spec = cf.resolve(&|_| None).unwrap();
        let files = ImageFiles::default();
        let rt = KubernetesRuntime::prepare(
            &spec,
            ImageInputs {
                name: "k:v1",
                version: Some("v1.30.2"),
                files: &files,
                labels: &BTreeMap::new(),
            },
            &[],
            dir,
            OffsetDateTime::now_utc(),
        )?;
        Ok((spec, rt))
    }

    fn prepare(dir: &Path) -> (ClusterSpec, KubernetesRuntime) {
        prepare_with(dir, "198.18.0.2, 198.18.0.3").unwrap()
    }

    /// The IP addresses among the SANs of a PEM certificate.
    fn san_ips(pem: &str) -> Vec<IpAddr> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                    16 => Some(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn adding_a_master_reissues_the_pki_from_the_same_cas() {
        let dir = tempfile::tempdir().unwrap();
        let (_, one) = prepare_with(dir.path(), "198.18.0.2").unwrap();
        let m2: IpAddr = "198.18.0.3".parse().unwrap();
        assert!(!san_ips(&one.pki["pki/apiserver.crt"].0).contains(&m2));
        assert_eq!(missing_masters(&one.pki, &[one.first, m2]), vec![m2]);
        let (spec, mut two) = prepare_with(dir.path(), "198.18.0.2, 198.18.0.3").unwrap();
        // Preparing changes nothing yet (the operator has not confirmed).
        assert_eq!(two.new_masters(), [m2]);
        assert_eq!(two.pki, one.pki);
        assert!(
            two.issue_for_new_masters(OffsetDateTime::now_utc())
                .unwrap()
        );
        assert!(two.new_masters().is_empty());
        for kept in [
            "pki/ca.crt",
            "pki/ca.key",
            "pki/front-proxy-ca.key",
            "pki/etcd/ca.crt",
            "pki/etcd/ca.key",
            "pki/sa.key",
            "pki/sa.pub",
        ] {
            assert_eq!(two.pki[kept], one.pki[kept], "{kept}");
        }
        // The new master has its own etcd certificates and kubeconfigs; the API
        // server certificate names both masters; the first master is still first.
        assert!(missing_masters(&two.pki, &spec.master_ips()).is_empty());
        for own in ["pki/etcd/server.crt", "pki/etcd/peer.key", "kubelet.conf"] {
            assert!(
                two.pki.contains_key(&format!("nodes/198.18.0.3/{own}")),
                "{own}"
            );
        }
        let ips = san_ips(&two.pki["pki/apiserver.crt"].0);
        assert!(ips.contains(&m2) && ips.contains(&two.first), "{ips:?}");
        assert_eq!(pki_first_master(&two.pki).as_deref(), Some("198.18.0.2"));
        assert_eq!(
            san_ips(&two.pki["nodes/198.18.0.3/pki/etcd/server.crt"].0)[0],
            m2
        );
        // The old files are kept aside; the next run re-issues nothing.
        let aside = fs_err::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".old"))
            .count();
        assert_eq!(aside, 1);
        let (_, mut again) = prepare_with(dir.path(), "198.18.0.2, 198.18.0.3").unwrap();
        assert!(again.new_masters().is_empty());
        assert!(
            !again
                .issue_for_new_masters(OffsetDateTime::now_utc())
                .unwrap()
        );
        assert_eq!(again.pki, two.pki);
        // Another master listed first is refused, naming the one to list first.
        let err = prepare_with(dir.path(), "198.18.0.9, 198.18.0.2")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("198.18.0.9 is listed first") && err.contains("list 198.18.0.2 first"),
            "{err}"
        );
    }

    #[test]
    fn the_files_kept_current_stay_out_of_step_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        let (spec, rt) = prepare(dir.path());
        let kept = |action, host| -> Vec<String> {
            let files = rt.files(action, host);
            paths(
                &files
                    .into_iter()
                    .filter(|f| rt.keeps_current(f))
                    .collect::<Vec<_>>(),
            )
        };
        let first = kept(RuntimeAction::Init, &spec.hosts[0]);
        assert!(first.contains(&"kubeadm.yaml".to_string()), "{first:?}");
        assert!(
            first.contains(&"etc/pki/apiserver.crt".to_string()),
            "{first:?}"
        );
        assert!(
            first
                .iter()
                .all(|p| p == "kubeadm.yaml" || p.starts_with("etc/"))
        );
        let worker = kept(RuntimeAction::Join, &spec.hosts[2]);
        assert_eq!(worker, ["kubeadm.yaml", "lb-backends"]);
    }

    fn paths(files: &[RuntimeFile]) -> Vec<String> {
        files
            .iter()
            .map(|f| {
                f.path
                    .trim_start_matches("/var/lib/airlock/cluster/kubernetes/")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn masters_get_keys_workers_get_none() {
        let dir = tempfile::tempdir().unwrap();
        let (spec, rt) = prepare(dir.path());
        let [m1, m2, w] = [&spec.hosts[0], &spec.hosts[1], &spec.hosts[2]];
        let first = paths(&rt.files(RuntimeAction::Init, m1));
        for want in [
            "etc/pki/ca.key",
            "etc/pki/sa.key",
            "etc/kubelet.conf",
            "etc/super-admin.conf",
            "kubeadm.yaml",
        ] {
            assert!(first.contains(&want.to_string()), "{want} in {first:?}");
        }
        let second = paths(&rt.files(RuntimeAction::Join, m2));
        assert!(second.contains(&"etc/pki/ca.key".to_string()));
        assert!(second.contains(&"etc/pki/etcd/server.key".to_string()));
        assert!(
            !second.contains(&"etc/kubelet.conf".to_string()),
            "{second:?}"
        );
        // The second master's etcd certificate is its own.
        let own = rt.files(RuntimeAction::Join, m2);
        let server = own
            .iter()
            .find(|f| f.path.ends_with("etc/pki/etcd/server.crt"))
            .unwrap();
        assert_eq!(
            server.bytes,
            rt.pki["nodes/198.18.0.3/pki/etcd/server.crt"].0.as_bytes()
        );
        let worker = rt.files(RuntimeAction::Join, w);
        assert!(
            worker.iter().all(|f| !f.path.contains("/etc/")),
            "{:?}",
            paths(&worker)
        );
        assert!(
            worker
                .iter()
                .filter(|f| f.mode == "600")
                .all(|f| f.path.ends_with(".sh") || f.path.ends_with("kubeadm.yaml"))
        );
        let backends = worker
            .iter()
            .find(|f| f.path.ends_with("lb-backends"))
            .unwrap();
        assert_eq!(backends.bytes, b"198.18.0.2:6443\n198.18.0.3:6443\n");
        // The same PKI and token on the next run.
        let (_, again) = prepare(dir.path());
        assert_eq!(again.pki, rt.pki);
        assert_eq!(again.token.expose(), rt.token.expose());
        assert!(is_token(rt.token.expose()));
        assert!(rt.marks.contains("label 198.18.0.4 disk=ssd\n"));
        assert!(rt.marks.contains("taint 198.18.0.4 gpu=yes:NoSchedule\n"));
        // The service CIDR of the env reached the API server certificate's service IP.
        assert_eq!(rt.config.pki_inputs().0, "10.200.0.0/16");
    }

    #[test]
    fn renewal_keeps_the_cas_and_service_account_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (spec, rt) = prepare(dir.path());
        let masters = spec.master_ips();
        let renewed = renew_pki(
            dir.path(),
            &masters,
            &["new.example.com".to_string()],
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        for kept in [
            "pki/ca.crt",
            "pki/ca.key",
            "pki/front-proxy-ca.crt",
            "pki/front-proxy-ca.key",
            "pki/etcd/ca.crt",
            "pki/etcd/ca.key",
            "pki/sa.key",
            "pki/sa.pub",
        ] {
            assert_eq!(renewed[kept], rt.pki[kept], "{kept}");
        }
        for fresh in [
            "pki/apiserver.crt",
            "pki/apiserver.key",
            "admin.conf",
            "nodes/198.18.0.3/pki/etcd/server.crt",
        ] {
            assert_ne!(renewed[fresh], rt.pki[fresh], "{fresh}");
        }
        // The next renewal remembers the added name; the old files are kept aside.
        let stored: StoredPkiOptions = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("pki-options.json")).unwrap(),
        )
        .unwrap();
        assert!(stored.alt_names.contains(&"new.example.com".to_string()));
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".old"))
            .count();
        assert_eq!(aside, 1);
        // Loading after the renewal gives the renewed PKI.
        let (_, again) = prepare(dir.path());
        assert_eq!(again.pki, renewed);
    }
}
