//! The steps of an install and the loop that runs them on every host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::future::join_all;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::event::{Event, Reporter, StepState};
use super::files;
use crate::digest::Digest;
use crate::image::oci::{self, ClusterConfig, Descriptor, ImageIndex};
use crate::image::{BlobSource, read_blob};
use crate::remote::{Remote, RemoteCommand, RemoteError, UploadSource};
use crate::spec::clusterfile::{ClusterSpec, Host};
use crate::spec::reference::Reference;

const WRITE_FILE: &str = include_str!("../../installer/write-file.sh");
const ETC_HOSTS: &str = include_str!("../../installer/etc-hosts.sh");
const REGISTRY: &str = include_str!("../../installer/registry.sh");
const MARKERS: &str = include_str!("../../installer/markers.sh");
const LIST_BLOBS: &str = include_str!("../../installer/list-blobs.sh");

/// The steps, in the order they run on a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
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
    /// The image's launch commands (first master only).
    Launch,
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
            Self::Launch => "launch",
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
    #[error(
        "step {step} failed on {host}: {reason}\n  fix the cause and run the same command again: finished steps are skipped"
    )]
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
}

impl ImagePlan {
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
        let rootfs = index
            .manifests
            .iter()
            .find(|d| d.annotation(oci::ANNOTATION_ROLE) == Some(oci::ROLE_ROOTFS))
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
        Ok(Self {
            name: name.to_string(),
            top,
            rootfs_blobs,
            image_blobs,
            images,
            config: config.airlock,
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
}

struct HostCtx<'a> {
    host: &'a Host,
    remote: Arc<dyn Remote>,
    markers: BTreeMap<String, String>,
}

impl Install {
    fn data_root(&self) -> &str {
        &self.spec.data_root
    }

    fn is_registry_host(&self, host: &Host) -> bool {
        if self.spec.registry.ha {
            host.is_master()
        } else {
            host.ip == self.spec.first_master().ip
        }
    }

    fn report(&self, host: IpAddr, step: StepId, state: StepState) {
        self.reporter.event(Event::Step { host, step, state });
    }

    /// Run every step on every host; hosts in parallel, steps in order.
    pub async fn run(&self) -> Result<(), InstallError> {
        let mut hosts = Vec::new();
        for host in &self.spec.hosts {
            let remote = self
                .remotes
                .get(&host.ip)
                .cloned()
                .ok_or_else(|| InstallError::Step {
                    host: host.ip,
                    step: StepId::Prepare,
                    reason: "not connected".to_string(),
                })?;
            let out = remote
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
                remote,
                markers,
            });
        }
        // Phase 1: everything that does not depend on other hosts.
        let per_host = hosts.iter().map(|h| self.prepare_host(h));
        first_error(join_all(per_host).await)?;
        // Phase 2: registries, then mirrors everywhere, then launch.
        let registries = hosts
            .iter()
            .filter(|h| self.is_registry_host(h.host))
            .map(|h| self.registry(h));
        first_error(join_all(registries).await)?;
        first_error(join_all(hosts.iter().map(|h| self.mirrors(h))).await)?;
        let first = self.spec.first_master().ip;
        if let Some(h) = hosts.iter().find(|h| h.host.ip == first) {
            self.launch(h).await?;
        }
        Ok(())
    }

    async fn prepare_host(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        self.prepare(h).await?;
        self.blobs(h).await?;
        self.unpack(h).await
    }

    /// Run `body` unless the host's marker for `step` already holds `fingerprint`.
    async fn step<F, Fut>(
        &self,
        h: &HostCtx<'_>,
        step: StepId,
        fingerprint: String,
        body: F,
    ) -> Result<(), InstallError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), RemoteError>>,
    {
        let ip = h.host.ip;
        if h.markers.get(step.as_str()) == Some(&fingerprint) {
            self.report(ip, step, StepState::Skipped);
            return Ok(());
        }
        self.report(ip, step, StepState::Started);
        let result = async {
            body().await?;
            let marker = format!("{}/state/{}", self.data_root(), step.as_str());
            write_file(h.remote.as_ref(), &marker, fingerprint.as_bytes(), "600").await
        }
        .await;
        match result {
            Ok(()) => {
                self.report(ip, step, StepState::Done);
                Ok(())
            }
            Err(e) => {
                let err = step_err(ip, step, e);
                if let InstallError::Step { reason, .. } = &err {
                    self.report(ip, step, StepState::Failed(reason.clone()));
                }
                Err(err)
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
        let digests: Vec<String> = wanted.iter().map(|d| d.digest.to_string()).collect();
        let refs: Vec<&str> = digests.iter().map(String::as_str).collect();
        self.step(h, StepId::Blobs, fingerprint(&refs), || async {
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
        self.step(h, StepId::Unpack, fingerprint(&[&top]), || async {
            let cmd = RemoteCommand::new(format!("{root}/bin/airlock"))
                .args([
                    "--root",
                    &format!("{root}/store"),
                    "agent",
                    "unpack",
                    &self.plan.name,
                ])
                .args(["--dest", &format!("{root}/rootfs")])
                .sudo();
            h.remote.check(&cmd).await.map(drop)
        })
        .await
    }

    async fn registry(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        let root = self.data_root();
        let port = self.spec.registry.port.to_string();
        let top = self.plan.top.digest.to_string();
        self.step(
            h,
            StepId::Registry,
            fingerprint(&[root, &port, &top]),
            || async {
                h.remote
                    .check(&RemoteCommand::script(REGISTRY, [root, port.as_str()]).sudo())
                    .await
                    .map(drop)
            },
        )
        .await
    }

    async fn mirrors(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        let reg = &self.spec.registry;
        let registry_ip = self.spec.first_master().ip.to_string();
        let mirror = format!("http://{}:{}", reg.domain, reg.port);
        let files: Vec<(String, String)> =
            files::mirror_domains(&self.plan.images, &reg.domain, reg.port)
                .into_iter()
                .map(|domain| {
                    (
                        format!("/etc/containerd/certs.d/{domain}/hosts.toml"),
                        files::hosts_toml(&domain, &mirror),
                    )
                })
                .collect();
        let mut parts: Vec<&str> = vec![&registry_ip, &reg.domain];
        parts.extend(files.iter().flat_map(|(p, c)| [p.as_str(), c.as_str()]));
        self.step(h, StepId::Mirrors, fingerprint(&parts), || async {
            h.remote
                .check(
                    &RemoteCommand::script(ETC_HOSTS, [registry_ip.as_str(), reg.domain.as_str()])
                        .sudo(),
                )
                .await?;
            for (path, content) in &files {
                write_file(h.remote.as_ref(), path, content.as_bytes(), "644").await?;
            }
            Ok(())
        })
        .await
    }

    fn launch_env(&self, host: &Host) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = self.plan.config.env.clone();
        env.extend(self.spec.env.clone());
        env.extend(host.env.clone());
        let ips = |master: bool| {
            self.spec
                .hosts
                .iter()
                .filter(|h| h.is_master() == master)
                .map(|h| h.ip.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let reg = &self.spec.registry;
        env.insert("AIRLOCK_MASTERS".into(), ips(true));
        env.insert("AIRLOCK_NODES".into(), ips(false));
        env.insert("AIRLOCK_HOST_IP".into(), host.ip.to_string());
        env.insert(
            "AIRLOCK_REGISTRY".into(),
            format!("{}:{}", reg.domain, reg.port),
        );
        env.insert(
            "AIRLOCK_ROOTFS".into(),
            format!("{}/rootfs", self.data_root()),
        );
        env.insert("AIRLOCK_CLUSTER".into(), self.spec.name.clone());
        env.into_iter().collect()
    }

    async fn launch(&self, h: &HostCtx<'_>) -> Result<(), InstallError> {
        let cmds = if self.spec.cmds.is_empty() {
            self.plan.config.cmds.clone()
        } else {
            self.spec.cmds.clone()
        };
        let env = self.launch_env(h.host);
        let mut parts: Vec<String> = vec![self.plan.top.digest.to_string()];
        parts.extend(cmds.iter().cloned());
        parts.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        let parts_ref: Vec<&str> = parts.iter().map(String::as_str).collect();
        let rootfs = format!("{}/rootfs", self.data_root());
        self.step(h, StepId::Launch, fingerprint(&parts_ref), || async {
            for cmd in &cmds {
                let mut rc = RemoteCommand::new("sh")
                    .args(["-c", cmd.as_str()])
                    .cwd(rootfs.as_str())
                    .sudo();
                for (k, v) in &env {
                    rc = rc.env(k.as_str(), v.as_str());
                }
                let out = h.remote.check(&rc).await?;
                for line in out.stdout_text().lines() {
                    self.reporter.event(Event::Log {
                        host: h.host.ip,
                        line: line.to_string(),
                    });
                }
            }
            Ok(())
        })
        .await
    }
}

/// Write `bytes` to `path` on the host atomically, creating its directory.
async fn write_file(
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

fn first_error(results: Vec<Result<(), InstallError>>) -> Result<(), InstallError> {
    results.into_iter().collect()
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
