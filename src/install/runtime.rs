//! Cluster runtimes: what turns unpacked hosts into a cluster.
//!
//! 1. [`ImageFiles::scan`] lists the rootfs paths the engine cares about (`scripts/`,
//!    `plugins/`, `*.tmpl`) by reading the layers' tar headers once on the operator.
//! 2. A [`Runtime`] answers, for each [`RuntimeAction`] (init on the first master,
//!    join on the others one at a time, check, uninstall), the command to run on a host,
//!    or nothing when the runtime has nothing to do for it.
//! 3. The [`GenericRuntime`] runs the image's own scripts: `scripts/<action>.sh`, or the
//!    path a `io.airlock.runtime.<action>` label names, with `sh`, in the rootfs, with the
//!    env of [`script_env`] (the contract is in `docs/runtimes.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufReader, Read as _};

/// The largest `plugins/*.yaml` file read from an image.
const MAX_PLUGIN_FILE: u64 = 1 << 20;

/// Where an image keeps its layer of kubeadm configuration.
pub const KUBEADM_FILES: [&str; 2] = ["etc/kubeadm.yml", "etc/kubeadm.yaml"];

use serde::Serialize;

use crate::image::BlobSource;
use crate::image::cluster::open_blob;
use crate::image::layer;
use crate::image::oci::ImageManifest;
use crate::remote::RemoteCommand;
use crate::spec::clusterfile::{ClusterSpec, Host, PluginSpec, ROLE_MASTER, ROLE_NODE};

/// What a runtime is asked to do on a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeAction {
    /// Create the cluster, on the first master.
    Init,
    /// Join a host to the cluster, on every other host, one at a time.
    Join,
    /// Say whether the host's part of the cluster is healthy (`airlock check --post`).
    Check,
    /// Take the host out of the cluster and remove what the runtime made there.
    Uninstall,
}

impl RuntimeAction {
    /// Every action.
    pub const ALL: [Self; 4] = [Self::Init, Self::Join, Self::Check, Self::Uninstall];

    /// The name in script file names, labels and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Join => "join",
            Self::Check => "check",
            Self::Uninstall => "uninstall",
        }
    }
}

impl fmt::Display for RuntimeAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The label that names the script of `action` in the rootfs, over the default.
pub fn script_label(action: RuntimeAction) -> String {
    format!("io.airlock.runtime.{}", action.as_str())
}

/// A file a runtime puts on a host before its command runs (written atomically by the
/// engine through stdin, never on a command line). Its `Debug` hides the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct RuntimeFile {
    /// Absolute path on the host.
    pub path: String,
    /// The contents.
    pub bytes: Vec<u8>,
    /// Octal mode, `600` for anything secret.
    pub mode: &'static str,
}

impl fmt::Debug for RuntimeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeFile")
            .field("path", &self.path)
            .field("mode", &self.mode)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A cluster runtime: the command of each action on a host.
pub trait Runtime: Send + Sync + fmt::Debug {
    /// `generic`, `kubernetes`, ...
    fn name(&self) -> &str;
    /// The command that does `action` on a host whose rootfs is at `rootfs`, with `env`;
    /// `None` when the runtime has nothing to do for it.
    fn command(
        &self,
        action: RuntimeAction,
        rootfs: &str,
        env: &[(String, String)],
    ) -> Option<RemoteCommand>;
    /// The rootfs-relative path of the script of `action`, if any (recorded on hosts so
    /// that `airlock reset` finds the uninstall script without the image).
    fn script(&self, action: RuntimeAction) -> Option<&str>;

    /// The files `host` needs before `action` runs there (none by default).
    fn files(&self, _action: RuntimeAction, _host: &Host) -> Vec<RuntimeFile> {
        Vec::new()
    }

    /// Whether the runtime keeps `file` (one of [`Runtime::files`]) current on running
    /// hosts by itself: it changes when hosts join or leave (as [`MEMBERSHIP_VARS`]
    /// do) or when certificates are renewed, so it stays out of the fingerprint of the
    /// step that writes it and a finished step does not run again for it (no file by
    /// default).
    fn keeps_current(&self, _file: &RuntimeFile) -> bool {
        false
    }

    /// The command of `action` on `host`; by default [`Runtime::command`], the same on
    /// every host.
    fn host_command(
        &self,
        action: RuntimeAction,
        _host: &Host,
        rootfs: &str,
        env: &[(String, String)],
    ) -> Option<RemoteCommand> {
        self.command(action, rootfs, env)
    }

    /// A command the first master runs just before `host` joins (a fresh join token).
    fn before_join(&self, _host: &Host, _rootfs: &str) -> Option<RemoteCommand> {
        None
    }

    /// Whether hosts that are not masters may join at the same time (masters always
    /// join one at a time).
    fn parallel_workers(&self) -> bool {
        false
    }

    /// A command the first master runs once every host has joined (labels, taints,
    /// waiting for the cluster to be ready), as the `ready` step.
    fn after_joins(&self, _rootfs: &str, _env: &[(String, String)]) -> Option<RemoteCommand> {
        None
    }
}

/// The rootfs paths the engine cares about, read from the layers' tar headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageFiles {
    /// Regular files under `scripts/` and `plugins/`, and every `*.tmpl` file.
    pub paths: BTreeSet<String>,
    /// The text of every `plugins/*.yaml` (or `.yml`) file, and of `etc/kubeadm.yml`
    /// (or `.yaml`, the Kubernetes runtime's layer of kubeadm configuration), by path.
    pub plugin_docs: BTreeMap<String, String>,
}

impl ImageFiles {
    /// List the files of the rootfs whose manifest is `manifest`.
    pub fn scan(source: &dyn BlobSource, manifest: &ImageManifest) -> Result<Self, String> {
        let mut paths = BTreeSet::new();
        let mut plugin_docs = BTreeMap::new();
        for l in &manifest.layers {
            let blob = open_blob(source, &l.digest).map_err(|e| e.to_string())?;
            let tar = layer::decompress(&l.media_type, &l.digest, BufReader::new(blob))
                .map_err(|e| e.to_string())?;
            let mut archive = tar::Archive::new(tar);
            for entry in archive.entries().map_err(|e| e.to_string())? {
                let mut entry = entry.map_err(|e| format!("layer {}: {e}", l.digest))?;
                let name = String::from_utf8_lossy(&entry.path_bytes())
                    .trim_start_matches("./")
                    .to_string();
                let base = name.rsplit('/').next().unwrap_or_default();
                if let Some(gone) = base.strip_prefix(".wh.") {
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                    let gone = if dir.is_empty() {
                        gone.to_string()
                    } else {
                        format!("{dir}/{gone}")
                    };
                    let under = format!("{gone}/");
                    paths.retain(|p: &String| p != &gone && !p.starts_with(&under));
                    plugin_docs.retain(|p: &String, _| p != &gone && !p.starts_with(&under));
                    continue;
                }
                let is_kubeadm_doc = KUBEADM_FILES.contains(&name.as_str());
                let wanted = name.starts_with("scripts/")
                    || name.starts_with("plugins/")
                    || name.ends_with(".tmpl")
                    || is_kubeadm_doc;
                if wanted && entry.header().entry_type().is_file() {
                    let is_plugin_doc = is_kubeadm_doc
                        || name.starts_with("plugins/")
                            && (name.ends_with(".yaml") || name.ends_with(".yml"));
                    if is_plugin_doc {
                        let mut text = String::new();
                        (&mut entry)
                            .take(MAX_PLUGIN_FILE)
                            .read_to_string(&mut text)
                            .map_err(|e| format!("{name}: {e}"))?;
                        plugin_docs.insert(name.clone(), text);
                    }
                    paths.insert(name);
                }
            }
        }
        Ok(Self { paths, plugin_docs })
    }

    /// The SHELL plugins declared in `plugins/*.yaml` (sealer's `Plugin` documents).
    pub fn plugins(&self) -> Result<Vec<PluginSpec>, String> {
        let mut out = Vec::new();
        for (path, text) in &self.plugin_docs {
            if KUBEADM_FILES.contains(&path.as_str()) {
                continue;
            }
            let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text)
                .map_err(|e| format!("{path}: not valid YAML: {e}"))?;
            for doc in docs {
                if doc.get("kind").and_then(|k| k.as_str()) != Some("Plugin") {
                    continue;
                }
                let spec = doc.get("spec").cloned().unwrap_or_default();
                out.push(
                    serde_json::from_value(spec)
                        .map_err(|e| format!("{path}: Plugin spec: {e}"))?,
                );
            }
        }
        Ok(out)
    }

    /// Whether the rootfs has `path`.
    pub fn has(&self, path: &str) -> bool {
        self.paths.contains(path)
    }
}

/// The generic runtime: the image's own scripts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenericRuntime {
    scripts: BTreeMap<RuntimeAction, String>,
}

impl GenericRuntime {
    /// The scripts of an image: `scripts/<action>.sh` when the rootfs has it, or the
    /// path its `io.airlock.runtime.<action>` label names (which must exist).
    pub fn from_image(
        files: &ImageFiles,
        labels: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let mut scripts = BTreeMap::new();
        for action in RuntimeAction::ALL {
            let label = script_label(action);
            if let Some(path) = labels.get(&label) {
                let path = path.trim_start_matches("./").to_string();
                if !files.has(&path) {
                    return Err(format!(
                        "label {label} names {path:?}, which is not a file in the rootfs"
                    ));
                }
                scripts.insert(action, path);
            } else {
                let path = format!("scripts/{}.sh", action.as_str());
                if files.has(&path) {
                    scripts.insert(action, path);
                }
            }
        }
        Ok(Self { scripts })
    }

    /// Whether the image has any runtime script at all.
    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }
}

impl Runtime for GenericRuntime {
    fn name(&self) -> &str {
        "generic"
    }

    fn command(
        &self,
        action: RuntimeAction,
        rootfs: &str,
        env: &[(String, String)],
    ) -> Option<RemoteCommand> {
        let script = self.scripts.get(&action)?;
        let mut cmd = RemoteCommand::new("sh")
            .arg(script.as_str())
            .cwd(rootfs)
            .sudo();
        for (k, v) in env {
            cmd = cmd.env(k.as_str(), v.as_str());
        }
        Some(cmd)
    }

    fn script(&self, action: RuntimeAction) -> Option<&str> {
        self.scripts.get(&action).map(String::as_str)
    }
}

/// The primary role of a host: `master`, `node`, or its first custom role.
pub fn primary_role(host: &Host) -> &str {
    if host.is_master() {
        ROLE_MASTER
    } else if host.roles.contains(ROLE_NODE) {
        ROLE_NODE
    } else {
        host.roles.iter().next().map_or(ROLE_NODE, String::as_str)
    }
}

/// The env every script of the image sees on `host` (runtime scripts, launch commands,
/// plugins, templates): the image's `ENV`, then the cluster's `spec.env`, then the host's,
/// then airlock's `AIRLOCK_*` variables (see `docs/runtimes.md`).
pub fn script_env(
    spec: &ClusterSpec,
    image_env: &BTreeMap<String, String>,
    host: &Host,
) -> BTreeMap<String, String> {
    let mut env = image_env.clone();
    env.extend(spec.env.clone());
    env.extend(host.env.clone());
    let ips = |master: bool| {
        spec.hosts
            .iter()
            .filter(|h| h.is_master() == master)
            .map(|h| h.ip.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let reg = &spec.registry;
    let root = &spec.data_root;
    let pairs = [
        ("AIRLOCK_CLUSTER", spec.name.clone()),
        ("AIRLOCK_ROLE", primary_role(host).to_string()),
        (
            "AIRLOCK_ROLES",
            host.roles.iter().cloned().collect::<Vec<_>>().join(","),
        ),
        ("AIRLOCK_MASTERS", ips(true)),
        ("AIRLOCK_NODES", ips(false)),
        ("AIRLOCK_HOST_IP", host.ip.to_string()),
        ("AIRLOCK_FIRST_MASTER", spec.first_master().ip.to_string()),
        ("AIRLOCK_REGISTRY", reg.address()),
        ("AIRLOCK_DATA_ROOT", root.clone()),
        ("AIRLOCK_ROOTFS", format!("{root}/rootfs")),
    ];
    for (k, v) in pairs {
        env.insert(k.to_string(), v);
    }
    env
}

/// The env variables whose values change when hosts come and go: left out of step
/// fingerprints so that scaling does not redo the steps of hosts already there.
pub const MEMBERSHIP_VARS: [&str; 2] = ["AIRLOCK_MASTERS", "AIRLOCK_NODES"];

#[cfg(test)]
mod tests {
    use super::*;

    fn files(paths: &[&str]) -> ImageFiles {
        ImageFiles {
            paths: paths.iter().map(|p| (*p).to_string()).collect(),
            plugin_docs: BTreeMap::new(),
        }
    }

    #[test]
    fn scripts_by_convention_and_by_label() {
        let f = files(&["scripts/init.sh", "scripts/join.sh", "bin/up.sh"]);
        let rt = GenericRuntime::from_image(&f, &BTreeMap::new()).unwrap();
        assert_eq!(rt.script(RuntimeAction::Init), Some("scripts/init.sh"));
        assert_eq!(rt.script(RuntimeAction::Check), None);
        let labels = BTreeMap::from([(script_label(RuntimeAction::Check), "bin/up.sh".into())]);
        let rt = GenericRuntime::from_image(&f, &labels).unwrap();
        assert_eq!(rt.script(RuntimeAction::Check), Some("bin/up.sh"));
        let cmd = rt
            .command(
                RuntimeAction::Join,
                "/r/rootfs",
                &[("A".into(), "1".into())],
            )
            .unwrap();
        assert!(
            cmd.summary().contains("scripts/join.sh"),
            "{}",
            cmd.summary()
        );
        assert!(rt.command(RuntimeAction::Uninstall, "/r", &[]).is_none());
        let bad = BTreeMap::from([(script_label(RuntimeAction::Init), "nope.sh".into())]);
        assert!(
            GenericRuntime::from_image(&f, &bad)
                .unwrap_err()
                .contains("io.airlock.runtime.init names \"nope.sh\"")
        );
    }
}
