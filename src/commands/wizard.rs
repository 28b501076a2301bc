//! The wizard behind `./FILE.run` on a terminal: the [`WizardEngine`] that connects
//! the screens to the real bundle, SSH, preflight checks and install engine.
//!
//! 1. `verify` re-hashes every byte of the bundle.
//! 2. `preflight` connects to each host over SSH and runs the read-only checks. A
//!    `generic` image (no Kubernetes) is held to less: platform, payload disk and the
//!    registry's port; the Kubernetes-only checks show as not needed.
//! 3. `install` connects again and runs the same engine as `FILE.run install`, with
//!    progress going to the dashboard and to the log file.
//! 4. `support_bundle` packs the logs and journals, the Clusterfile (without secrets)
//!    and the last preflight report (every host's facts and findings) in a 0600 tar.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::bundle::Bundle;
use crate::image::BlobSource;
use crate::install::connect::target_for;
use crate::install::{Event, ImagePlan, Install, Reporter};
use crate::preflight::{self, CheckId, Finding, Report, Requirements};
use crate::printer::Printer;
use crate::remote::known_hosts::KnownHosts;
use crate::remote::ssh::SshRemote;
use crate::remote::{Remote, UploadSource};
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
    /// The last preflight report, for the support bundle.
    last_report: std::sync::Mutex<Option<Report>>,
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

    async fn scan_host_keys(
        &self,
        targets: &[crate::wizard::state::KeyTarget],
    ) -> Vec<crate::wizard::state::HostKeyRow> {
        crate::wizard::hostkeys::scan(&self.known_hosts(), targets).await
    }

    async fn trust_host_keys(
        &self,
        rows: &[crate::wizard::state::HostKeyRow],
    ) -> anyhow::Result<()> {
        crate::wizard::hostkeys::trust(&self.known_hosts(), rows)
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
        let req = Requirements::for_image(&self.plan.config, self.plan.payload_bytes());
        let report = preflight::run(spec, &req, &targets, skip, on_finding).await;
        if let Ok(mut last) = self.last_report.lock() {
            *last = Some(report.clone());
        }
        Ok(report)
    }

    async fn install(
        &self,
        spec: &ClusterSpec,
        skip: &[(IpAddr, String)],
        reporter: Arc<dyn Reporter>,
    ) -> InstallResult {
        let failed = |cause: String| InstallResult::Failed {
            host: None,
            step: None,
            cause,
        };
        let quiet = Printer { quiet: true };
        let log_path = super::run::log_file(&self.settings, &spec.name);
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
        let registry_access =
            match super::cluster::registry_access(spec, &self.settings, &remotes).await {
                Ok(a) => a,
                Err(e) => return failed(format!("{e:#}")),
            };
        // A Kubernetes image: its runtime, with the PKI kept on this machine.
        let mut plan = self.plan.clone();
        let mut kubeconfig = None;
        let dir = crate::install::journal::cluster_dir(&self.settings.root, &spec.name);
        match super::cluster::kubernetes_runtime(&[], spec, &plan, &dir) {
            Ok(Some(mut rt)) => {
                // Running masters serve a PKI re-issued for new masters first (as converge).
                if let Err(e) = rt.issue_for_new_masters(time::OffsetDateTime::now_utc()) {
                    return failed(format!("{e:#}"));
                }
                let report = |host, line| reporter.event(Event::Log { host, line });
                if let Err(e) = rt.renew_running_masters(&remotes, &report).await {
                    return failed(format!("{e:#}"));
                }
                plan.runtime = Arc::new(rt);
                kubeconfig = Some(dir.join("kubernetes/pki-files/admin.conf"));
            }
            Ok(None) => {}
            Err(e) => return failed(format!("{e:#}")),
        }
        let install = Install {
            registry_access,
            scale_up: std::collections::BTreeSet::new(),
            skip: skip.iter().cloned().collect(),
            limits: crate::install::limits::Limits::from_spec(
                spec,
                &crate::install::limits::Overrides::default(),
            ),
            spec: spec.clone(),
            plan,
            source: self.bundle.clone() as Arc<dyn BlobSource>,
            agent: self.agent.clone(),
            remotes,
            reporter: Arc::new(Tee(reporter, log)),
        };
        if let Err(e) = install.run().await {
            return InstallResult::from_error(&e);
        }
        // Workers' load balancers in front of every master (as converge does).
        if let Err(e) =
            super::cluster::rewrite_lb_backends(&dir, spec, &install.remotes, quiet).await
        {
            return failed(format!("{e:#}"));
        }
        InstallResult::Done {
            endpoints: vec![format!(
                "registry: {}://{}:{} (as {} on the hosts)",
                if spec.registry.insecure {
                    "http"
                } else {
                    "https"
                },
                spec.first_master().ip,
                spec.registry.port,
                spec.registry.domain
            )],
            kubeconfig,
            log_file: Some(log_path),
        }
    }

    async fn support_bundle(&self, clusterfile: &str) -> anyhow::Result<PathBuf> {
        let root = self.settings.root.clone();
        let clusterfile = clusterfile.to_string();
        let report = self.last_report.lock().ok().and_then(|r| r.clone());
        tokio::task::block_in_place(|| write_support_bundle(&root, &clusterfile, report.as_ref()))
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
fn write_support_bundle(
    root: &std::path::Path,
    clusterfile: &str,
    report: Option<&Report>,
) -> anyhow::Result<PathBuf> {
    use fs_err::os::unix::fs::OpenOptionsExt as _;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    fs_err::create_dir_all(root)?;
    let path = root.join(format!("support-{stamp}.tar"));
    let file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    let mut tar = tar::Builder::new(file);
    let clusters = root.join("clusters");
    if clusters.is_dir() {
        tar.append_dir_all("clusters", &clusters)
            .context("adding the install logs")?;
    }
    let mut add = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)
    };
    add("Clusterfile", clusterfile.as_bytes())?;
    if let Some(report) = report {
        add("preflight.json", &serde_json::to_vec_pretty(report)?)?;
    }
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
        last_report: std::sync::Mutex::new(None),
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

    #[test]
    fn the_support_bundle_holds_logs_clusterfile_and_host_facts_privately() {
        use std::io::Read as _;
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("clusters/default/logs");
        fs_err::create_dir_all(&logs).unwrap();
        fs_err::write(logs.join("install-1.log"), "{\"event\":\"step\"}\n").unwrap();
        let host: std::net::IpAddr = "198.18.0.2".parse().unwrap();
        let mut report = Report::default();
        report
            .facts
            .insert(host, preflight::Facts::parse("hostname=m1\nkernel=6.1.0\n"));
        let path = write_support_bundle(root.path(), "kind: Cluster\n", Some(&report)).unwrap();
        let mode = fs_err::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut entries = std::collections::BTreeMap::new();
        let mut tar = tar::Archive::new(fs_err::File::open(&path).unwrap());
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            entries.insert(name, text);
        }
        assert_eq!(entries["Clusterfile"], "kind: Cluster\n");
        assert!(
            entries.contains_key("clusters/default/logs/install-1.log"),
            "{entries:?}"
        );
        assert!(entries["preflight.json"].contains("\"m1\""), "{entries:?}");
        let second = write_support_bundle(root.path(), "", None).unwrap();
        assert_ne!(second, path, "a second bundle does not overwrite the first");
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
}
