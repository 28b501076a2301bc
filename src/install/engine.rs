//! The steps of an install and the loop that runs them on every host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::future::join_all;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::event::{Event, Reporter, StepState};
use super::limits::Limits;
use super::registry_node::{self, RegistryAccess};
use super::render::RenderInput;
use super::runtime::{
    GenericRuntime, ImageFiles, MEMBERSHIP_VARS, Runtime, RuntimeAction, script_env,
};
use super::tracked::Tracked;
use crate::digest::Digest;
use crate::distribute::{self, BlobNeed, FanOutEvent, FanOutHost, FanOutOptions};
use crate::image::oci::{self, ClusterConfig, Descriptor, ImageIndex};
use crate::image::{BlobSource, read_blob};
use crate::remote::{Remote, RemoteCommand, RemoteError, UploadSource};
use crate::spec::clusterfile::{ClusterSpec, Host, PluginSpec};
use crate::spec::reference::Reference;

const WRITE_FILE: &str = include_str!("../../installer/write-file.sh");
const ETC_HOSTS: &str = include_str!("../../installer/etc-hosts.sh");
const REGISTRY: &str = include_str!("../../installer/registry.sh");
const MARKERS: &str = include_str!("../../installer/markers.sh");
const RECORD_DIRS: &str = include_str!("../../installer/record-dirs.sh");
const LIST_BLOBS: &str = include_str!("../../installer/list-blobs.sh");

/// The steps, in the order they run on a host. Serialized as [`StepId::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepId {
    /// Data root and the airlock binary.
    Prepare,
    /// The blobs the host needs.
    Blobs,
    /// The rootfs unpacked.
    Unpack,
    /// The registry running (registry hosts only).
    Registry,
    /// `/etc/hosts` and containerd mirrors.
    Mirrors,
    /// The runtime's init script (first master only).
    Init,
    /// The runtime's join script (every other host, one at a time).
    Join,
    /// The runtime's last command on the first master once every host joined.
    Ready,
    /// The image's launch commands (first master only).
    Launch,
    /// The SHELL plugins of a phase.
    Plugin(Phase),
    /// A host leaving: the runtime's uninstall and everything airlock put there.
    Clean,
}

impl Serialize for StepId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The phases at which SHELL plugins run (sealer's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// On every host, before airlock touches it.
    PreInitHost,
    /// On every host, once the rootfs is unpacked.
    PostInitHost,
    /// On every host, before the runtime's init.
    PreInstall,
    /// On every host, after the launch.
    PostInstall,
    /// On hosts being added, before they join.
    PreScaleup,
    /// On hosts being added, after they joined.
    PostScaleup,
    /// On a host being removed, before its uninstall.
    PreCleanHost,
    /// On a host being removed, after its uninstall (before its data root goes).
    PostCleanHost,
    /// On every host, when `airlock upgrade` moves the cluster to a new image: the
    /// hook is [`Install::run_phase`]`(Phase::Upgrade)`.
    Upgrade,
}

impl Phase {
    /// Every phase.
    pub const ALL: [Self; 9] = [
        Self::PreInitHost,
        Self::PostInitHost,
        Self::PreInstall,
        Self::PostInstall,
        Self::PreScaleup,
        Self::PostScaleup,
        Self::PreCleanHost,
        Self::PostCleanHost,
        Self::Upgrade,
    ];

    /// sealer's name of the phase (`action:` of a Plugin document).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreInitHost => "pre-init-host",
            Self::PostInitHost => "post-init-host",
            Self::PreInstall => "pre-install",
            Self::PostInstall => "post-install",
            Self::PreScaleup => "pre-scaleup",
            Self::PostScaleup => "post-scaleup",
            Self::PreCleanHost => "pre-clean-host",
            Self::PostCleanHost => "post-clean-host",
            Self::Upgrade => "upgrade",
        }
    }

    /// The phase named `name` (sealer also spells some `PreInstall` etc.).
    pub fn parse(name: &str) -> Option<Self> {
        let norm: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().replace('-', "") == norm)
    }
}

impl StepId {
    /// The name used in markers and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepare => "prepare",
            Self::Blobs => "blobs",
            Self::Unpack => "unpack",
            Self::Registry => "registry",
            Self::Mirrors => "mirrors",
            Self::Init => "init",
            Self::Join => "join",
            Self::Ready => "ready",
            Self::Launch => "launch",
            Self::Plugin(p) => match p {
                Phase::PreInitHost => "plugin-pre-init-host",
                Phase::PostInitHost => "plugin-post-init-host",
                Phase::PreInstall => "plugin-pre-install",
                Phase::PostInstall => "plugin-post-install",
                Phase::PreScaleup => "plugin-pre-scaleup",
                Phase::PostScaleup => "plugin-post-scaleup",
                Phase::PreCleanHost => "plugin-pre-clean-host",
                Phase::PostCleanHost => "plugin-post-clean-host",
                Phase::Upgrade => "plugin-upgrade",
            },
            Self::Clean => "clean",
        }
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An install that stopped.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A step failed on a host.
    #[error("step {step} failed on {host}: {reason}")]
    Step {
        /// The host.
        host: IpAddr,
        /// The step.
        step: StepId,
        /// The cause, with the command, exit status and last lines of stderr.
        reason: String,
    },
    /// The image cannot be installed as it is.
    #[error("image {image}: {reason}")]
    Image {
        /// The image.
        image: String,
        /// What is wrong.
        reason: String,
    },
}

/// What of the image goes where, read once from the source.
#[derive(Clone, Debug)]
pub struct ImagePlan {
    /// The image's name as stored.
    pub name: String,
    /// Its top-level index.
    pub top: Descriptor,
    /// Blobs every host needs to unpack the rootfs: index, rootfs manifest, config, layers.
    pub rootfs_blobs: Vec<Descriptor>,
    /// Blobs of the container images, needed on registry hosts.
    pub image_blobs: Vec<Descriptor>,
    /// The container images, by original reference.
    pub images: Vec<Reference>,
    /// The image's metadata.
    pub config: ClusterConfig,
    /// The rootfs files the engine cares about (scripts, plugins, templates).
    pub files: ImageFiles,
    /// The runtime: the image's scripts ([`GenericRuntime`]) unless the command
    /// layer puts another in (the Kubernetes runtime).
    pub runtime: Arc<dyn Runtime>,
    /// The image's own SHELL plugins (`plugins/*.yaml`).
    pub plugins: Vec<PluginSpec>,
}

impl ImagePlan {
    /// Bytes sent to a host that gets everything: the rootfs and the container images.
    pub fn payload_bytes(&self) -> u64 {
        self.rootfs_blobs
            .iter()
            .chain(&self.image_blobs)
            .map(|d| d.size)
            .sum()
    }

    /// Read the plan of the image `name` from `source`.
    pub fn read(source: &dyn BlobSource, name: &str) -> Result<Self, InstallError> {
        let err = |reason: String| InstallError::Image {
            image: name.to_string(),
            reason,
        };
        let top = source
            .images()
            .map_err(|e| err(e.to_string()))?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
            .ok_or_else(|| err("not found (see `airlock images`)".to_string()))?;
        let index: ImageIndex = serde_json::from_slice(
            &read_blob(source, &top.digest).map_err(|e| err(e.to_string()))?,
        )
        .map_err(|e| err(format!("top-level index is not valid: {e}")))?;
        let host = oci::Platform::host();
        let rootfs_entries: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| d.annotation(oci::ANNOTATION_ROLE) == Some(oci::ROLE_ROOTFS))
            .collect();
        let rootfs = rootfs_entries
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.architecture == host.architecture)
            })
            .or(rootfs_entries.first())
            .copied()
            .ok_or_else(|| {
                err("no rootfs manifest: is it a cluster image built by airlock?".to_string())
            })?;
        let manifest: oci::ImageManifest = serde_json::from_slice(
            &read_blob(source, &rootfs.digest).map_err(|e| err(e.to_string()))?,
        )
        .map_err(|e| err(format!("rootfs manifest is not valid: {e}")))?;
        let config: oci::RootfsConfig = serde_json::from_slice(
            &read_blob(source, &manifest.config.digest).map_err(|e| err(e.to_string()))?,
        )
        .map_err(|e| err(format!("rootfs config is not valid: {e}")))?;
        let mut rootfs_blobs = vec![top.clone(), rootfs.clone(), manifest.config.clone()];
        rootfs_blobs.extend(manifest.layers.iter().cloned());
        let mut image_blobs = Vec::new();
        let mut images = Vec::new();
        let mut seen: BTreeSet<Digest> = rootfs_blobs.iter().map(|d| d.digest.clone()).collect();
        for entry in index
            .manifests
            .iter()
            .filter(|d| d.annotation(oci::ANNOTATION_ROLE) == Some(oci::ROLE_CONTAINER_IMAGE))
        {
            if let Some(r) = entry.annotation(oci::ANNOTATION_IMAGE_REF) {
                images.push(
                    r.parse::<Reference>()
                        .map_err(|e| err(format!("bad image reference annotation: {e}")))?,
                );
            }
            let mut stack = vec![entry.clone()];
            while let Some(d) = stack.pop() {
                if !seen.insert(d.digest.clone()) {
                    continue;
                }
                // Platforms that were not fetched are not in the source: skip them.
                if source
                    .locate(&d.digest)
                    .map_err(|e| err(e.to_string()))?
                    .is_none()
                {
                    if d.digest == entry.digest {
                        return Err(err(format!(
                            "blob {} of {} is missing",
                            d.digest,
                            entry.annotation(oci::ANNOTATION_IMAGE_REF).unwrap_or("?")
                        )));
                    }
                    continue;
                }
                if oci::is_index(&d.media_type) || oci::is_manifest(&d.media_type) {
                    let any: oci::AnyManifest = serde_json::from_slice(
                        &read_blob(source, &d.digest).map_err(|e| err(e.to_string()))?,
                    )
                    .map_err(|e| err(format!("manifest {} is not valid: {e}", d.digest)))?;
                    stack.extend(any.children().into_iter().cloned());
                }
                image_blobs.push(d);
            }
        }
        let files = ImageFiles::scan(source, &manifest).map_err(err)?;
        let runtime = GenericRuntime::from_image(&files, &config.airlock.labels).map_err(err)?;
        let plugins = files.plugins().map_err(err)?;
        Ok(Self {
            name: name.to_string(),
            top,
            rootfs_blobs,
            image_blobs,
            images,
            config: config.airlock,
            files,
            runtime: Arc::new(runtime),
            plugins,
        })
    }
}

/// Everything an install needs, ready to run.
pub struct Install {
    /// The cluster.
    pub spec: ClusterSpec,
    /// The image.
    pub plan: ImagePlan,
    /// Where blobs are read from.
    pub source: Arc<dyn BlobSource>,
    /// The airlock binary to put on hosts (a static build).
    pub agent: UploadSource,
    /// A connected remote per host.
    pub remotes: BTreeMap<IpAddr, Arc<dyn Remote>>,
    /// Where progress goes.
    pub reporter: Arc<dyn Reporter>,
    /// Hosts being added to a running cluster: the scale-up plugins run on them.
    pub scale_up: BTreeSet<IpAddr>,
    /// How the registry serves and the nodes reach it (TLS, CA, credentials).
    pub registry_access: RegistryAccess,
    /// Step timeouts, retries and how many hosts at once.
    pub limits: Limits,
    /// Steps the user chose to skip after they failed, by host and step name: each is
    /// recorded as done (its marker written) without running, and reported skipped.
    pub skip: BTreeSet<(IpAddr, String)>,
}

pub(super) struct HostCtx<'a> {
    pub(super) host: &'a Host,
    /// The host's remote, wrapped to remember the command in flight.
    remote: Arc<dyn Remote>,
    tracked: Arc<Tracked>,
    pub(super) markers: BTreeMap<String, String>,
}

impl Install {
    fn data_root(&self) -> &str {
        &self.spec.data_root
    }

    pub(super) fn is_registry_host(&self, host: &Host) -> bool {
        registry_node::registry_hosts(&self.spec)
            .iter()
            .any(|h| h.ip == host.ip)
    }

    fn report(&self, host: IpAddr, step: StepId, state: StepState, elapsed_ms: u64) {
        self.reporter.event(Event::Step {
            host,
            step,
            state,
            elapsed_ms,
        });
    }

    /// Connect the engine to every host: wrap its remote and read its step markers.
    async fn host_contexts(&self) -> Result<Vec<HostCtx<'_>>, InstallError> {
        let mut hosts = Vec::new();
        for host in &self.spec.hosts {
            let inner = self
                .remotes
                .get(&host.ip)
                .cloned()
                .ok_or_else(|| InstallError::Step {
                    host: host.ip,
                    step: StepId::Prepare,
                    reason: "not connected".to_string(),
                })?;
            let tracked = Arc::new(Tracked::new(inner));
            let out = tracked
                .check(&RemoteCommand::script(MARKERS, [self.data_root()]).sudo())
                .await
                .map_err(|e| step_err(host.ip, StepId::Prepare, e))?;
            let markers = out
                .stdout_text()
                .lines()
                .filter_map(|l| {
                    l.split_once(' ')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                })
                .collect();
            hosts.push(HostCtx {
                host,
                remote: tracked.clone(),
                tracked,
                markers,
            });
        }
        Ok(hosts)
    }

    /// Run `work` (one future per host), at most [`Limits::max_parallel`] at once
    /// (in the given order); the first error (in that order) once all have ended.
    async fn bounded<Fut>(&self, work: impl IntoIterator<Item = Fut>) -> Result<(), InstallError>
    where
        Fut: Future<Output = Result<(), InstallError>>,
    {
        let gate = tokio::sync::Semaphore::new(self.limits.max_parallel.max(1));
        let gated = work.into_iter().map(|f| async {
            let _permit = gate.acquire().await;
            f.await
        });
        first_error(join_all(gated).await)
    }

    /// Run every step on every host; hosts in parallel (at most
    /// [`Limits::max_parallel`] at once), steps in order.
    pub async fn run(&self) -> Result<(), InstallError> {
        // Apps that cannot be launched stop the install before any host changes.
        self.launch_commands(&self.env_for(self.spec.first_master()))?;
        let hosts = self.host_contexts().await?;
        self.reporter.event(Event::Plan {
            steps: self.planned_steps(),
        });
        // Phase 1: everything that does not depend on other hosts. The airlock binary
        // goes on every host first; then the blobs travel node to node in one
        // fan-out, and each host's blobs step verifies them (and sends over SSH
        // whatever the fan-out could not deliver).
        self.bounded(hosts.iter().map(|h| self.prepare_first(h)))
            .await?;
        self.fan_out(&hosts).await;
        self.bounded(hosts.iter().map(|h| self.prepare_host(h)))
            .await?;
        // Phase 2: registries (or the push to an external one), then mirrors everywhere.
        self.push_external().await?;
        let registries = hosts
            .iter()
            .filter(|h| self.is_registry_host(h.host))
            .map(|h| self.registry(h));
        self.bounded(registries).await?;
        self.bounded(hosts.iter().map(|h| self.mirrors(h))).await?;
        // Phase 3: the runtime: init on the first master, then joins one at a time.
        self.each_plugin(&hosts, Phase::PreInstall).await?;
        let first = self.spec.first_master().ip;
        let scaling: Vec<&HostCtx<'_>> = hosts
            .iter()
            .filter(|h| self.scale_up.contains(&h.host.ip))
            .collect();
        for h in &scaling {
            self.plugins(h, Phase::PreScaleup).await?;
        }
        let first_ctx = hosts.iter().find(|h| h.host.ip == first);
        if let Some(h) = first_ctx {
            self.runtime_step(h, StepId::Init, RuntimeAction::Init, None)
                .await?;
        }
        let first_remote = first_ctx.map(|h| h.remote.as_ref());
        let (masters, others): (Vec<&HostCtx<'_>>, Vec<&HostCtx<'_>>) = hosts
            .iter()
            .filter(|h| h.host.ip != first)
            .partition(|h| h.host.is_master());
        for h in masters {
            self.runtime_step(h, StepId::Join, RuntimeAction::Join, first_remote)
                .await?;
        }
        if self.plan.runtime.parallel_workers() {
            let joins = others
                .iter()
                .map(|h| self.runtime_step(h, StepId::Join, RuntimeAction::Join, first_remote));
            first_error(join_all(joins).await)?;
        } else {
            for h in others {
                self.runtime_step(h, StepId::Join, RuntimeAction::Join, first_remote)
                    .await?;
            }
        }
        if let Some(h) = first_ctx {
            self.ready(h).await?;
        }
        for h in &scaling {
            self.plugins(h, Phase::PostScaleup).await?;
        }
        // Phase 4: launch, then the post-install plugins.
        if let Some(h) = hosts.iter().find(|h| h.host.ip == first) {
            self.launch(h).await?;
        }
        self.each_plugin(&hosts, Phase::PostInstall).await
    }

    /// Run the SHELL plugins of `phase` on every host they apply to, as their own
    /// step (`plugin-<phase>`), with the same markers, limits and events as an install.
    /// This is the hook for phases outside an install: `airlock upgrade` calls it
    /// with [`Phase::Upgrade`] once the hosts run the new image.
    pub async fn run_phase(&self, phase: Phase) -> Result<(), InstallError> {
        let hosts = self.host_contexts().await?;
        self.each_plugin(&hosts, phase).await
    }

    async fn each_plugin(&self, hosts: &[HostCtx<'_>], phase: Phase) -> Result<(), InstallError> {
        self.bounded(hosts.iter().map(|h| self.plugins(h, phase)))
            .await
    }

    /// The SHELL plugins of `phase` whose scope takes `host`: the image's first, then
    /// the Clusterfile's.
    pub(super) fn plugins_for(&self, host: &Host, phase: Phase) -> Vec<&PluginSpec> {
        self.plan
            .plugins
            .iter()
            .chain(&self.spec.plugins)
            .filter(|p| plugin_applies(p, host, phase))
            .collect()
    }

    async fn plugins(&self, h: &HostCtx<'_>, phase: Phase) -> Result<(), InstallError> {
        let plugins = self.plugins_for(h.host, phase);
        if plugins.is_empty() {
            return Ok(());
        }
        let env = self.env_for(h.host);
        let mut parts: Vec<String> = plugins.iter().map(|p| p.data.clone()).collect();
        parts.extend(fingerprint_env(&env));
        let parts_ref: Vec<&str> = parts.iter().map(String::as_str).collect();
        let cwd = if matches!(phase, Phase::PreInitHost) {
            "/".to_string()
        } else {
            format!("{}/rootfs", self.data_root())
        };
        self.step(
            h,
            StepId::Plugin(phase),
            fingerprint(&parts_ref),
            || async {
                for p in &plugins {
                    let mut rc = RemoteCommand::new("sh")
                        .args(["-c", p.data.as_str()])
                        .cwd(cwd.as_str())
                        .sudo();
                    for (k, v) in &env {
                        rc = rc.env(k.as_str(), v.as_str());
                    }
                    self.run_logged(h, &rc).await?;
                }
                Ok(())
            },
        )
        .await
    }

    /// Run `cmd` on the host, reporting its stdout as log lines.
    async fn run_logged(&self, h: &HostCtx<'_>, cmd: &RemoteCommand) -> Result<(), RemoteError> {
        let out = h.remote.check(cmd).await?;
        for line in out.stdout_text().lines() {
            self.reporter.event(Event::Log {
                host: h.host.ip,
                line: line.to_string(),
            });
        }
        Ok(())
    }

    /// Every env variable the image's scripts see on `host`.
    fn env_for(&self, host: &Host) -> Vec<(String, String)> {
        script_env(&self.spec, &self.plan.config.env, host)
            .into_iter()
            .collect()
    }

    /// The runtime's `ready` command on the first master, once every host joined.
    async fn ready(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        let rootfs = format!("{}/rootfs", self.data_root());
        let env = self.env_for(h.host);
        let Some(cmd) = self.plan.runtime.after_joins(&rootfs, &env) else {
            return Ok(());
        };
        let mut parts = vec![self.plan.top.digest.to_string()];
        parts.extend(cmd.argv.iter().cloned());
        parts.extend(cmd.env.iter().map(|(k, v)| format!("{k}={v}")));
        let parts_ref: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.step(h, StepId::Ready, fingerprint(&parts_ref), || async {
            self.run_logged(h, &cmd).await
        })
        .await
    }

    /// The runtime's `action` on a host, as `step`: records its env and uninstall script
    /// under `<data root>/cluster/` (for `airlock reset`), writes the runtime's files,
    /// runs its command on the first master before a join (`first`), then runs the
    /// script.
    async fn runtime_step(
        &self,
        h: &HostCtx<'_>,
        step: StepId,
        action: RuntimeAction,
        first: Option<&dyn Remote>,
    ) -> Result<(), InstallError> {
        let runtime: &dyn Runtime = self.plan.runtime.as_ref();
        let rootfs = format!("{}/rootfs", self.data_root());
        let env = self.env_for(h.host);
        let Some(cmd) = runtime.host_command(action, h.host, &rootfs, &env) else {
            return Ok(());
        };
        let files = runtime.files(action, h.host);
        let before = runtime.before_join(h.host, &rootfs);
        let mut parts = vec![
            self.plan.top.digest.to_string(),
            runtime.script(action).unwrap_or_default().to_string(),
        ];
        parts.extend(files.iter().filter(|f| !runtime.keeps_current(f)).map(|f| {
            format!(
                "{} {} {}",
                f.path,
                f.mode,
                hex::encode(Sha256::digest(&f.bytes))
            )
        }));
        parts.extend(fingerprint_env(&env));
        let parts_ref: Vec<&str> = parts.iter().map(String::as_str).collect();
        let cluster_dir = format!("{}/cluster", self.data_root());
        let env_file: String = env
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", crate::remote::quote(v)))
            .collect();
        let recorded: Vec<(String, String)> = [RuntimeAction::Check, RuntimeAction::Uninstall]
            .into_iter()
            .map(|a| {
                (
                    format!("{cluster_dir}/{a}"),
                    runtime.script(a).unwrap_or_default().to_string(),
                )
            })
            .collect();
        self.step(h, step, fingerprint(&parts_ref), || async {
            let remote = h.remote.as_ref();
            write_file(
                remote,
                &format!("{cluster_dir}/runtime.env"),
                env_file.as_bytes(),
                "600",
            )
            .await?;
            for (path, script) in &recorded {
                write_file(remote, path, script.as_bytes(), "600").await?;
            }
            for f in &files {
                write_file(remote, &f.path, &f.bytes, f.mode).await?;
            }
            if let (Some(before), Some(first)) = (&before, first) {
                first.check(before).await?;
            }
            self.run_logged(h, &cmd).await
        })
        .await
    }

    async fn prepare_first(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        self.plugins(h, Phase::PreInitHost).await?;
        self.prepare(h).await
    }

    /// Send the blobs of every host whose blobs step is not done yet node to node
    /// (`crate::distribute`). Best effort: the blobs step that follows on each host
    /// checks what arrived and sends the rest over SSH, resuming partial files.
    async fn fan_out(&self, hosts: &[HostCtx<'_>]) {
        let pending: Vec<FanOutHost> = hosts
            .iter()
            .filter(|h| {
                h.markers.get(StepId::Blobs.as_str()) != Some(&self.blobs_fingerprint(h.host))
            })
            .map(|h| FanOutHost {
                addr: h.host.ip,
                remote: h.remote.clone(),
                needs: self
                    .blobs_for(h.host)
                    .into_iter()
                    .map(BlobNeed::from)
                    .collect(),
            })
            .collect();
        if pending.len() < 2 {
            return;
        }
        let log = |host: IpAddr, line: String| self.reporter.event(Event::Log { host, line });
        let first = pending[0].addr;
        let events = |e: FanOutEvent| match e {
            FanOutEvent::Chain { chain, hosts } => {
                let order: Vec<String> = hosts.iter().map(ToString::to_string).collect();
                log(
                    first,
                    format!("fan-out chain {chain}: operator -> {}", order.join(" -> ")),
                );
            }
            FanOutEvent::Fallback { host, reason } => log(
                host,
                format!("fan-out: sending over SSH instead ({reason})"),
            ),
            FanOutEvent::Relay { .. } | FanOutEvent::Sent { .. } => {}
        };
        let options = FanOutOptions::for_data_root(self.data_root());
        match distribute::fan_out(&pending, self.source.as_ref(), &options, &events).await {
            Ok(report) => {
                for (host, r) in &report.hosts {
                    if let Some(err) = &r.error {
                        log(
                            *host,
                            format!("fan-out incomplete ({err}); the rest goes over SSH"),
                        );
                    }
                }
            }
            Err(e) => log(first, format!("fan-out failed ({e}); blobs go over SSH")),
        }
    }

    fn blobs_fingerprint(&self, host: &Host) -> String {
        let digests: Vec<String> = self
            .blobs_for(host)
            .iter()
            .map(|d| d.digest.to_string())
            .collect();
        let refs: Vec<&str> = digests.iter().map(String::as_str).collect();
        fingerprint(&refs)
    }

    async fn prepare_host(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        self.blobs(h).await?;
        self.unpack(h).await?;
        self.plugins(h, Phase::PostInitHost).await
    }

    /// Run `body` unless the host's marker for `step` already holds `fingerprint`:
    /// within the step's time limit, tried again after a wait when the step is safe
    /// to repeat ([`Limits`]), reporting start and end with how long it took.
    async fn step<F, Fut>(
        &self,
        h: &HostCtx<'_>,
        step: StepId,
        fingerprint: String,
        body: F,
    ) -> Result<(), InstallError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), RemoteError>>,
    {
        let ip = h.host.ip;
        if h.markers.get(step.as_str()) == Some(&fingerprint) {
            self.report(ip, step, StepState::Skipped, 0);
            return Ok(());
        }
        if self.skip.contains(&(ip, step.as_str().to_string())) {
            let marker = format!("{}/state/{}", self.data_root(), step.as_str());
            write_file(h.remote.as_ref(), &marker, fingerprint.as_bytes(), "600")
                .await
                .map_err(|e| step_err(ip, step, e))?;
            self.reporter.event(Event::Log {
                host: ip,
                line: format!("{step}: skipped at the user's request, recorded as done"),
            });
            self.report(ip, step, StepState::Skipped, 0);
            return Ok(());
        }
        self.report(ip, step, StepState::Started, 0);
        let started = Instant::now();
        let limit = self.limits.timeout(step);
        let attempts = self.limits.attempts(step);
        let mut attempt = 1;
        let result = loop {
            h.tracked.set_deadline(Some(Instant::now() + limit));
            let once = async {
                body().await?;
                let marker = format!("{}/state/{}", self.data_root(), step.as_str());
                write_file(h.remote.as_ref(), &marker, fingerprint.as_bytes(), "600").await
            };
            let reason = match tokio::time::timeout(limit, once).await {
                Ok(Ok(())) => break Ok(()),
                Ok(Err(e)) => failure_reason(&e, h.tracked.current()),
                Err(_) => format!(
                    "{} timed out after {}s (raise it with --step-timeout {step}=DURATION or spec.stepTimeouts in the Clusterfile)",
                    h.tracked
                        .current()
                        .map_or_else(|| "the step".to_string(), |c| format!("`{c}`")),
                    limit.as_secs()
                ),
            };
            if attempt >= attempts {
                break Err(reason);
            }
            attempt += 1;
            let wait = self.limits.backoff_before(attempt);
            self.reporter.event(Event::Retry {
                host: ip,
                step,
                attempt,
                attempts,
                reason,
                wait_ms: millis(wait),
            });
            tokio::time::sleep(wait).await;
        };
        h.tracked.set_deadline(None);
        let elapsed = millis(started.elapsed());
        match result {
            Ok(()) => {
                self.report(ip, step, StepState::Done, elapsed);
                Ok(())
            }
            Err(reason) => {
                let reason = if attempts > 1 {
                    format!("{attempts} tries, the last: {reason}")
                } else {
                    reason
                };
                self.report(ip, step, StepState::Failed(reason.clone()), elapsed);
                Err(InstallError::Step {
                    host: ip,
                    step,
                    reason,
                })
            }
        }
    }

    async fn prepare(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        let root = self.data_root();
        let agent_sha = self.agent.sha256.clone().unwrap_or_default();
        self.step(
            h,
            StepId::Prepare,
            fingerprint(&[root, &agent_sha]),
            || async {
                let dirs = [
                    "bin",
                    "store/blobs/sha256",
                    "store/tmp",
                    "state",
                    "log",
                    "run",
                ]
                .map(|d| format!("{root}/{d}"));
                h.remote
                    .check(&RemoteCommand::new("mkdir").arg("-p").args(dirs).sudo())
                    .await?;
                h.remote
                    .check(
                        &RemoteCommand::new("chmod")
                            .args(["700", &format!("{root}/state")])
                            .sudo(),
                    )
                    .await?;
                h.remote
                    .upload(&self.agent, &format!("{root}/bin/airlock"), 0o755)
                    .await
            },
        )
        .await
    }

    fn blobs_for(&self, host: &Host) -> Vec<&Descriptor> {
        let mut blobs: Vec<&Descriptor> = self.plan.rootfs_blobs.iter().collect();
        if self.is_registry_host(host) {
            blobs.extend(self.plan.image_blobs.iter());
        }
        blobs
    }

    async fn blobs(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        let root = self.data_root();
        let wanted = self.blobs_for(h.host);
        self.step(h, StepId::Blobs, self.blobs_fingerprint(h.host), || async {
            let store = format!("{root}/store");
            let present: BTreeSet<String> = h
                .remote
                .check(&RemoteCommand::script(LIST_BLOBS, [store.as_str()]).sudo())
                .await?
                .stdout_text()
                .lines()
                .map(str::to_string)
                .collect();
            let missing: Vec<&&Descriptor> = wanted
                .iter()
                .filter(|d| !present.contains(d.digest.hex()))
                .collect();
            let total: u64 = missing.iter().map(|d| d.size).sum();
            let mut sent = 0;
            for d in missing {
                let loc = self
                    .source
                    .locate(&d.digest)
                    .map_err(|e| RemoteError::Local {
                        path: "blob source".into(),
                        source: e,
                    })?
                    .ok_or_else(|| RemoteError::Local {
                        path: format!("blob {}", d.digest).into(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "missing from the image",
                        ),
                    })?;
                let src = UploadSource {
                    path: loc.path,
                    offset: loc.offset,
                    len: loc.size,
                    sha256: Some(d.digest.hex().to_string()),
                };
                h.remote
                    .upload(
                        &src,
                        &format!("{store}/blobs/sha256/{}", d.digest.hex()),
                        0o644,
                    )
                    .await?;
                sent += d.size;
                self.reporter.event(Event::Transfer {
                    host: h.host.ip,
                    sent,
                    total,
                });
            }
            let mut entry = self.plan.top.clone();
            entry
                .annotations
                .insert(oci::ANNOTATION_REF_NAME.to_string(), self.plan.name.clone());
            let index = ImageIndex {
                schema_version: 2,
                media_type: Some(oci::MEDIA_TYPE_INDEX.to_string()),
                manifests: vec![entry],
                annotations: BTreeMap::new(),
            };
            write_file(
                h.remote.as_ref(),
                &format!("{store}/oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
                "644",
            )
            .await?;
            write_file(
                h.remote.as_ref(),
                &format!("{store}/index.json"),
                &crate::image::store::to_json(&index),
                "644",
            )
            .await
        })
        .await
    }

    async fn unpack(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        let root = self.data_root();
        let top = self.plan.top.digest.to_string();
        let render = RenderInput {
            env: self.env_for(h.host).into_iter().collect(),
            configs: self.spec.configs.clone(),
        };
        let mut stable = render.clone();
        for k in MEMBERSHIP_VARS {
            stable.env.remove(k);
        }
        let render_json = serde_json::to_vec(&render).unwrap_or_default();
        let stable_json =
            String::from_utf8(serde_json::to_vec(&stable).unwrap_or_default()).unwrap_or_default();
        let needs_render = !render.configs.is_empty()
            || self.plan.files.paths.iter().any(|p| p.ends_with(".tmpl"));
        self.step(
            h,
            StepId::Unpack,
            fingerprint(&[&top, &stable_json]),
            || async {
                let agent = format!("{root}/bin/airlock");
                let rootfs = format!("{root}/rootfs");
                let cmd = RemoteCommand::new(agent.as_str())
                    .args(["--root", &format!("{root}/store"), "agent", "unpack"])
                    .arg(self.plan.name.as_str())
                    .args(["--dest", rootfs.as_str()])
                    .sudo();
                h.remote.check(&cmd).await?;
                if needs_render {
                    let cmd = RemoteCommand::new(agent.as_str())
                        .args(["agent", "render", "--rootfs", rootfs.as_str()])
                        .stdin(render_json.clone())
                        .sudo();
                    h.remote.check(&cmd).await?;
                }
                Ok(())
            },
        )
        .await
    }

    async fn registry(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        let root = self.data_root();
        let port = self.spec.registry.port.to_string();
        let top = self.plan.top.digest.to_string();
        let access = &self.registry_access;
        let (files, flags) = access.server_files(root);
        // The operator's CA, key and credentials stay on the first master too.
        let kept = if h.host.ip == self.spec.first_master().ip {
            access.kept_files(root).map_err(|e| InstallError::Step {
                host: h.host.ip,
                step: StepId::Registry,
                reason: e.to_string(),
            })?
        } else {
            Vec::new()
        };
        let mut parts: Vec<&str> = vec![root, &port, &top];
        parts.extend(flags.iter().map(String::as_str));
        parts.extend(files.iter().map(|(_, c, _)| c.expose()));
        parts.extend(kept.iter().flat_map(|(p, c)| [p.as_str(), c.expose()]));
        self.step(h, StepId::Registry, fingerprint(&parts), || async {
            for (path, content, mode) in &files {
                write_file(h.remote.as_ref(), path, content.expose().as_bytes(), mode).await?;
            }
            for (path, content) in &kept {
                write_file(h.remote.as_ref(), path, content.expose().as_bytes(), "600").await?;
            }
            let scheme = access.scheme();
            h.remote
                .check(
                    &RemoteCommand::script(REGISTRY, [root, port.as_str(), scheme])
                        .args(flags.iter().cloned())
                        .sudo(),
                )
                .await
                .map(drop)
        })
        .await
    }

    /// External registry mode: push the image set there from the operator (what the
    /// registry already has is not sent again).
    async fn push_external(&self) -> Result<(), InstallError> {
        let Some(ext) = &self.spec.registry.external else {
            return Ok(());
        };
        let first = self.spec.first_master().ip;
        let log = |line: String| {
            self.reporter.event(Event::Log { host: first, line });
        };
        super::external::push_image_set(self.source.as_ref(), &self.plan.top, ext, &log)
            .await
            .map(drop)
            .map_err(|e| InstallError::Step {
                host: first,
                step: StepId::Registry,
                reason: format!(
                    "{e}\n  check spec.registry.externalRegistry (domain, credentials, caFile)"
                ),
            })
    }

    async fn mirrors(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        let reg = &self.spec.registry;
        let mirror = registry_node::mirror_files(
            &self.spec,
            &self.registry_access,
            &self.plan.images,
            h.host,
        );
        let hosts_ip = mirror.etc_hosts.map(|ip| ip.to_string());
        let mut parts: Vec<&str> = vec![hosts_ip.as_deref().unwrap_or("-"), &reg.domain];
        parts.extend(
            mirror
                .files
                .iter()
                .flat_map(|(p, c, m)| [p.as_str(), c.expose(), m]),
        );
        self.step(h, StepId::Mirrors, fingerprint(&parts), || async {
            if let Some(ip) = &hosts_ip {
                h.remote
                    .check(
                        &RemoteCommand::script(ETC_HOSTS, [ip.as_str(), reg.domain.as_str()])
                            .sudo(),
                    )
                    .await?;
            }
            let dirs: BTreeSet<String> = mirror
                .files
                .iter()
                .filter_map(|(p, _, _)| p.rsplit_once('/').map(|(d, _)| d.to_string()))
                .collect();
            h.remote
                .check(
                    &RemoteCommand::script(RECORD_DIRS, [self.data_root().to_string()])
                        .args(dirs)
                        .sudo(),
                )
                .await?;
            for (path, content, mode) in &mirror.files {
                write_file(h.remote.as_ref(), path, content.expose().as_bytes(), mode).await?;
            }
            registry_node::docker_mirror(
                h.remote.as_ref(),
                &self.spec,
                &self.registry_access,
                &h.host.ip.to_string(),
            )
            .await
        })
        .await
    }

    async fn launch(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        let env = self.env_for(h.host);
        let cmds = self.launch_commands(&env)?;
        let mut parts: Vec<String> = vec![self.plan.top.digest.to_string()];
        for c in &cmds {
            parts.push(c.cmd.clone());
            parts.push(c.dir.clone());
            parts.extend(fingerprint_env(&c.env));
        }
        let parts_ref: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.step(h, StepId::Launch, fingerprint(&parts_ref), || async {
            for c in &cmds {
                let mut rc = RemoteCommand::new("sh")
                    .args(["-c", c.cmd.as_str()])
                    .cwd(c.dir.as_str())
                    .sudo();
                for (k, v) in &c.env {
                    rc = rc.env(k.as_str(), v.as_str());
                }
                self.run_logged(h, &rc).await?;
            }
            Ok(())
        })
        .await
    }
}

/// Whether the SHELL plugin `p` runs on `host` at `phase`: its `action` names the
/// phase and its `scope` (roles separated by `,` or `|`; empty: every host) takes one
/// of the host's roles.
fn plugin_applies(p: &PluginSpec, host: &Host, phase: Phase) -> bool {
    let is_shell = p.kind.is_empty() || p.kind.eq_ignore_ascii_case("shell");
    let scope = p.scope.as_deref().unwrap_or_default();
    let in_scope = scope.trim().is_empty()
        || scope
            .split([',', '|'])
            .map(str::trim)
            .any(|r| host.roles.contains(r));
    is_shell && Phase::parse(&p.action) == Some(phase) && in_scope
}

/// `K=V` of every env variable but those that change with membership.
fn fingerprint_env(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .filter(|(k, _)| !MEMBERSHIP_VARS.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// Write `bytes` to `path` on the host atomically, creating its directory.
pub(crate) async fn write_file(
    remote: &dyn Remote,
    path: &str,
    bytes: &[u8],
    mode: &str,
) -> Result<(), RemoteError> {
    remote
        .check(
            &RemoteCommand::script(WRITE_FILE, [path, mode])
                .stdin(bytes.to_vec())
                .sudo(),
        )
        .await
        .map(drop)
}

fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

fn step_err(host: IpAddr, step: StepId, e: RemoteError) -> InstallError {
    InstallError::Step {
        host,
        step,
        reason: e.to_string(),
    }
}

/// Why a step failed, for people: for a command that exited non-zero, the command as
/// it was run (`command`, when known), its exit status and the last lines of stderr.
fn failure_reason(e: &RemoteError, command: Option<String>) -> String {
    match e {
        RemoteError::CommandFailed {
            command: summary,
            status,
            stderr,
            ..
        } => {
            let command = command.unwrap_or_else(|| summary.clone());
            let mut text = format!("`{command}` exited with {status}");
            if stderr.trim().is_empty() {
                text.push_str(" (no stderr)");
            } else {
                text.push_str(", last lines of stderr:");
                for line in stderr.lines() {
                    text.push_str("\n    ");
                    text.push_str(line);
                }
            }
            text
        }
        other => other.to_string(),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn first_error(results: Vec<Result<(), InstallError>>) -> Result<(), InstallError> {
    results.into_iter().collect()
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
