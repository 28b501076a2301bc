//! The wizard behind `./FILE.run` on a terminal: the [`WizardEngine`] that connects
//! the screens to the real bundle, SSH, preflight checks and install engine.
//!
//! 1. `verify` re-hashes every byte of the bundle.
//! 2. `preflight` connects to each host over SSH and runs the read-only checks. A
//!    `generic` image (no Kubernetes) is held to less: platform, payload disk and the
//!    registry's port; the Kubernetes-only checks show as not needed.
//! 3. `install` connects again and runs the same engine as `FILE.run install`, with
//!    progress going to the dashboard and to the log file.
//! 4. `support_bundle` packs the logs and the Clusterfile (without secrets) in a tar.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::bundle::Bundle;
use crate::image::BlobSource;
use crate::install::connect::target_for;
use crate::install::{Event, ImagePlan, Install, Reporter};
use crate::preflight::{self, CheckId, Finding, Report, Requirements, Status};
use crate::printer::Printer;
use crate::remote::known_hosts::KnownHosts;
use crate::remote::ssh::SshRemote;
use crate::remote::{Remote, RemoteCommand, UploadSource};
use crate::runtime::kubernetes::runtime::{ImageInputs, KubernetesRuntime};
use crate::settings::Settings;
use crate::spec::clusterfile::ClusterSpec;
use crate::wizard::event::InstallResult;
use crate::wizard::runner::{WizardEngine, WizardInput, WizardOutcome, load_session, run_wizard};
use crate::wizard::state::{ImageInfo, Param};

/// The engine of a bundle's wizard.
pub(crate) struct BundleEngine {
    bundle: Arc<Bundle>,
    plan: ImagePlan,
    agent: UploadSource,
    settings: Settings,
}

impl BundleEngine {
    fn known_hosts(&self) -> KnownHosts {
        KnownHosts::new(self.settings.root.join("known_hosts"))
    }
}

#[async_trait::async_trait]
impl WizardEngine for BundleEngine {
    async fn verify(&self, progress: &(dyn Fn(u64, u64) + Send + Sync)) -> anyhow::Result<()> {
        tokio::task::block_in_place(|| self.bundle.verify(progress)).map_err(Into::into)
    }

    async fn preflight(
        &self,
        spec: &ClusterSpec,
        skip: &BTreeSet<CheckId>,
        on_finding: &(dyn for<'f> Fn(&'f Finding) + Send + Sync),
    ) -> anyhow::Result<Report> {
        let known_hosts = self.known_hosts();
        let connects = spec.hosts.iter().map(|host| {
            let known_hosts = &known_hosts;
            async move {
                let remote = SshRemote::connect(target_for(host), known_hosts)
                    .await
                    .map(|r| Arc::new(r) as Arc<dyn Remote>);
                (host.ip, remote)
            }
        });
        let targets: BTreeMap<IpAddr, _> = futures_util::future::join_all(connects)
            .await
            .into_iter()
            .collect();
        let payload: u64 = self
            .plan
            .rootfs_blobs
            .iter()
            .chain(&self.plan.image_blobs)
            .map(|d| d.size)
            .sum();
        if is_kubernetes(&self.plan.config.runtime) {
            let req = Requirements {
                platforms: self.plan.config.platforms.clone(),
                payload_bytes: payload,
                ..Requirements::default()
            };
            return Ok(preflight::run(spec, &req, &targets, skip, on_finding).await);
        }
        let req = generic_requirements(self.plan.config.platforms.clone(), payload);
        let mut not_judged = skip.clone();
        not_judged.extend(KUBERNETES_ONLY);
        let relabel = |f: &Finding| {
            if f.check == CheckId::Ports {
                return; // judged below, on the ports a generic image needs
            }
            if KUBERNETES_ONLY.contains(&f.check) && !skip.contains(&f.check) {
                on_finding(&not_needed(f));
            } else {
                on_finding(f);
            }
        };
        let mut report = preflight::run(spec, &req, &targets, &not_judged, &relabel).await;
        for finding in report.findings.iter_mut() {
            if KUBERNETES_ONLY.contains(&finding.check) && !skip.contains(&finding.check) {
                *finding = not_needed(finding);
            }
        }
        report.findings.retain(|f| f.check != CheckId::Ports);
        for host in &spec.hosts {
            if let Some(facts) = report.facts.get(&host.ip) {
                let ours = match targets.get(&host.ip) {
                    Some(Ok(remote)) => airlock_listens(remote.as_ref(), spec.registry.port).await,
                    _ => false,
                };
                let finding = generic_ports(spec, host, facts, skip, ours);
                on_finding(&finding);
                report.findings.push(finding);
            }
        }
        Ok(report)
    }

    async fn install(&self, spec: &ClusterSpec, reporter: Arc<dyn Reporter>) -> InstallResult {
        let failed = |cause: String| InstallResult::Failed {
            host: None,
            step: None,
            cause,
        };
        let quiet = Printer { quiet: true };
        let log_path = match super::run::log_file(&self.settings, &spec.name) {
            Ok(p) => p,
            Err(e) => return failed(format!("{e:#}")),
        };
        let log = match super::run::LineReporter::new(quiet, &log_path) {
            Ok(l) => l,
            Err(e) => return failed(format!("{e:#}")),
        };
        let remotes = match super::run::connect_all(spec, &self.settings, quiet).await {
            Ok(r) => r,
            Err(e) => return failed(format!("{e:#}")),
        };
        if let Err(e) = super::run::preflight(spec, &remotes).await {
            return failed(format!("{e:#}"));
        }
        // A Kubernetes image: its runtime, with the PKI kept on this machine.
        let mut plan = self.plan.clone();
        let mut kubeconfig = None;
        if is_kubernetes(&plan.config.runtime) {
            let dir = crate::install::journal::cluster_dir(&self.settings.root, &spec.name)
                .join("kubernetes");
            let image = ImageInputs {
                name: &plan.name,
                version: plan.config.runtime_version.as_deref(),
                files: &plan.files,
                labels: &plan.config.labels,
            };
            let now = time::OffsetDateTime::now_utc();
            match KubernetesRuntime::prepare(spec, image, &[], &dir, now) {
                Ok(rt) => plan.runtime = Arc::new(rt),
                Err(e) => return failed(e.to_string()),
            }
            kubeconfig = Some(dir.join("pki-files/admin.conf"));
        }
        let install = Install {
            scale_up: std::collections::BTreeSet::new(),
            spec: spec.clone(),
            plan,
            source: self.bundle.clone() as Arc<dyn BlobSource>,
            agent: self.agent.clone(),
            remotes,
            reporter: Arc::new(Tee(reporter, log)),
        };
        match install.run().await {
            Ok(()) => InstallResult::Done {
                endpoints: vec![format!(
                    "registry: http://{}:{} (as {} on the hosts)",
                    spec.first_master().ip,
                    spec.registry.port,
                    spec.registry.domain
                )],
                kubeconfig,
                log_file: Some(log_path),
            },
            Err(e) => InstallResult::from_error(&e),
        }
    }

    async fn support_bundle(&self, clusterfile: &str) -> anyhow::Result<PathBuf> {
        let root = self.settings.root.clone();
        let clusterfile = clusterfile.to_string();
        tokio::task::block_in_place(|| write_support_bundle(&root, &clusterfile))
    }
}

/// Checks that only matter to a Kubernetes runtime (etcd, kubelet, CNI, kubeadm).
const KUBERNETES_ONLY: [CheckId; 8] = [
    CheckId::Fsync,
    CheckId::Ports,
    CheckId::Swap,
    CheckId::Modules,
    CheckId::Sysctl,
    CheckId::Runtime,
    CheckId::Leftovers,
    CheckId::Cidr,
];

/// Whether an image's runtime (its `runtime` config field) is Kubernetes.
fn is_kubernetes(runtime: &str) -> bool {
    !(runtime.is_empty() || runtime == "generic")
}

/// What a generic image needs of a host: its platform and room for the payload.
fn generic_requirements(platforms: Vec<String>, payload_bytes: u64) -> Requirements {
    Requirements {
        platforms,
        master_cpus: 1,
        master_mem_mb: 0,
        node_cpus: 1,
        node_mem_mb: 0,
        disk_mb: 0,
        payload_bytes,
        ports: Vec::new(),
        ..Requirements::default()
    }
}

/// A Kubernetes-only check, as shown for a generic image.
fn not_needed(f: &Finding) -> Finding {
    Finding {
        status: Status::Skipped,
        message: "not needed: the image runs no Kubernetes".to_string(),
        fix: String::new(),
        ..f.clone()
    }
}

/// Whether the process listening on `port` is airlock's own registry (a re-run).
async fn airlock_listens(remote: &dyn Remote, port: u16) -> bool {
    let cmd = RemoteCommand::new("ss")
        .args(["-ltnpH", &format!("sport = :{port}")])
        .sudo();
    remote
        .check(&cmd)
        .await
        .is_ok_and(|out| out.stdout_text().contains("((\"airlock\""))
}

/// The ports check of a generic image: only the registry's port, where it runs;
/// `ours` says airlock's own registry holds it (from an earlier install).
fn generic_ports(
    spec: &ClusterSpec,
    host: &crate::spec::clusterfile::Host,
    facts: &preflight::Facts,
    skip: &BTreeSet<CheckId>,
    ours: bool,
) -> Finding {
    let registry_here = if spec.registry.ha {
        host.is_master()
    } else {
        spec.first_master().ip == host.ip
    };
    let port = spec.registry.port;
    let busy = registry_here && facts.listening_ports().contains(&port);
    let (status, message, fix) = if busy && ours {
        (
            Status::Pass,
            format!("registry port {port}: airlock's registry already runs here"),
            String::new(),
        )
    } else if !busy {
        let message = if registry_here {
            format!("registry port {port} free")
        } else {
            "none needed".to_string()
        };
        (Status::Pass, message, String::new())
    } else if skip.contains(&CheckId::Ports) {
        (Status::Skipped, format!("in use: {port}"), String::new())
    } else {
        (
            Status::Fail,
            format!("in use: {port} (the registry's port)"),
            "stop what listens there (`ss -ltnp` shows it) or choose another registry port (Settings)"
                .to_string(),
        )
    };
    Finding {
        host: host.ip,
        check: CheckId::Ports,
        status,
        message,
        fix,
    }
}

/// Sends every event to two reporters.
struct Tee<A, B>(A, B);

impl<A: std::ops::Deref<Target = dyn Reporter> + Send + Sync, B: Reporter> Reporter for Tee<A, B> {
    fn event(&self, event: Event) {
        self.1.event(event.clone());
        self.0.event(event);
    }
}

/// A tar of the install logs and the Clusterfile (the caller strips secrets from it).
fn write_support_bundle(root: &std::path::Path, clusterfile: &str) -> anyhow::Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    fs_err::create_dir_all(root)?;
    let path = root.join(format!("support-{stamp}.tar"));
    let file = fs_err::File::create(&path)?;
    let mut tar = tar::Builder::new(file);
    let clusters = root.join("clusters");
    if clusters.is_dir() {
        tar.append_dir_all("clusters", &clusters)
            .context("adding the install logs")?;
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(clusterfile.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, "Clusterfile", clusterfile.as_bytes())?;
    tar.into_inner()?.sync_all()?;
    Ok(path)
}

/// An image reference as the wizard shows it: (`hello-cluster`, `v1`) for
/// `docker.io/library/hello-cluster:v1`; the whole text and no version if it does not parse.
fn split_name(name: &str) -> (String, String) {
    match name.parse::<crate::spec::reference::Reference>() {
        Ok(reference) => {
            let version = reference.tag.clone().unwrap_or_default();
            let bare = crate::spec::reference::Reference {
                tag: None,
                ..reference
            };
            (bare.familiar(), version)
        }
        Err(_) => (name.to_string(), String::new()),
    }
}

/// Run the wizard for `bundle` on this terminal.
pub(crate) async fn run(
    bundle: Bundle,
    agent: UploadSource,
    settings: &Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    let name = bundle.image_name().to_string();
    let plan = ImagePlan::read(&bundle, &name)?;
    let file_size = fs_err::metadata(bundle.path())?.len();
    let signer = crate::bundle::summary::summarise(&bundle).signer;
    let (short_name, version) = split_name(&name);
    let image = ImageInfo {
        name: short_name,
        version,
        runtime: if plan.config.runtime.is_empty() {
            "generic".to_string()
        } else {
            plan.config.runtime.clone()
        },
        size: file_size,
        signer,
        platforms: plan.config.platforms.clone(),
        params: plan
            .config
            .env
            .iter()
            .map(|(k, v)| Param {
                name: k.clone(),
                default: v.clone(),
                help: format!("the image's {k} (ENV)"),
            })
            .collect(),
    };
    let dir = settings.root.join("wizard");
    let session_path = dir.join("session.json");
    let input = WizardInput {
        image,
        resume: load_session(&session_path)?,
        session_path,
        clusterfile_path: dir.join("Clusterfile"),
        color: settings.color,
    };
    let engine = BundleEngine {
        bundle: Arc::new(bundle),
        plan,
        agent,
        settings: settings.clone(),
    };
    match run_wizard(input, &engine).await? {
        WizardOutcome::Installed { clusterfile } => {
            printer.result(format!("installed {name}"));
            if let Some(cf) = clusterfile {
                printer.result(format!(
                    "Clusterfile saved at {}; re-run or manage with: ./FILE.run install -f {}",
                    cf.display(),
                    cf.display()
                ));
            }
            Ok(())
        }
        WizardOutcome::Failed => {
            anyhow::bail!("the install did not finish; run the bundle again to resume")
        }
        WizardOutcome::Quit { session } => {
            printer.status(format!(
                "left the wizard (session kept in {}); run the bundle again to resume where you stopped",
                session.display()
            ));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::clusterfile::Clusterfile;

    fn spec() -> ClusterSpec {
        let text = "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: hello\nspec:\n  image: hello:1\n  ssh:\n    user: root\n    pk: /k\n  hosts:\n    - ips: [ 198.18.0.2 ]\n      roles: [ master ]\n    - ips: [ 198.18.0.3 ]\n      roles: [ node ]\n";
        Clusterfile::parse("Clusterfile", text)
            .unwrap()
            .resolve(&|_| None)
            .unwrap()
    }

    #[test]
    fn generic_images_need_only_the_registry_port_on_its_host() {
        let spec = spec();
        let busy =
            preflight::Facts::parse("listen=0.0.0.0:5000\nlisten=*:10250\nlisten=[::]:6443\n");
        let skip = BTreeSet::new();
        let master = generic_ports(&spec, &spec.hosts[0], &busy, &skip, false);
        assert_eq!(master.status, Status::Fail, "{master:?}");
        assert!(master.message.contains("5000"), "{master:?}");
        assert!(!master.message.contains("10250"), "{master:?}");
        let node = generic_ports(&spec, &spec.hosts[1], &busy, &skip, false);
        assert_eq!(node.status, Status::Pass, "{node:?}");
        let free = preflight::Facts::parse("listen=*:10250\n");
        let master = generic_ports(&spec, &spec.hosts[0], &free, &skip, false);
        assert_eq!(master.status, Status::Pass, "{master:?}");
        let skipped = BTreeSet::from([CheckId::Ports]);
        let master = generic_ports(&spec, &spec.hosts[0], &busy, &skipped, false);
        assert_eq!(master.status, Status::Skipped, "{master:?}");
        let rerun = generic_ports(&spec, &spec.hosts[0], &busy, &skip, true);
        assert_eq!(rerun.status, Status::Pass, "{rerun:?}");
    }

    #[test]
    fn image_names_split_into_name_and_version() {
        assert_eq!(
            split_name("docker.io/library/hello-cluster:v1"),
            ("hello-cluster".to_string(), "v1".to_string())
        );
        assert_eq!(
            split_name("reg.local:5000/team/app"),
            ("reg.local:5000/team/app".to_string(), "latest".to_string())
        );
    }

    #[test]
    fn only_a_kubernetes_runtime_gets_kubernetes_checks() {
        assert!(!is_kubernetes(""));
        assert!(!is_kubernetes("generic"));
        assert!(is_kubernetes("kubernetes"));
        let req = generic_requirements(vec!["linux/amd64".into()], 1 << 30);
        assert_eq!((req.master_cpus, req.master_mem_mb, req.disk_mb), (1, 0, 0));
        assert!(req.ports.is_empty());
    }
}
