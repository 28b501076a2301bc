//! What the cluster verbs (`run`, `apply`, `join`, `delete`, `reset`, `check`, `exec`,
//! `status`) share: reading the Clusterfile or the stored state, converging hosts onto
//! it, cleaning hosts, and keeping the journal.
//!
//! 1. `read_clusterfile` reads `-f FILE`; `stored_clusterfile` reads the one kept
//!    under `<store>/clusters/<name>/` (secrets stripped: keys, `passwdEnv` and
//!    `passwdFile` still work).
//! 2. `converge` installs the image onto every host of the Clusterfile (finished steps
//!    are skipped on hosts), first cleaning the hosts the journal has but the file no
//!    longer lists (scale down), and running the scale-up plugins on hosts it adds. On
//!    a Kubernetes cluster, running masters get a PKI re-issued for new masters before
//!    those join, and workers' load balancers every master after the joins. Until the
//!    operator confirmed, it leaves nothing under `<store>/clusters/<name>/`: the
//!    preflight report and the log wait in memory, and a Kubernetes image's first PKI
//!    (made while the runtime is prepared) is removed again if the command stops.
//! 3. `clean` runs `installer/reset.sh` on hosts (the runtime's uninstall, then
//!    everything airlock put there).
//! 4. The journal and the Clusterfile are saved on the operator, atomically, after every
//!    step event, and copied to `<data root>/cluster/` on the first master at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal as _, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use super::bad_input;
use super::progress::{EngineArgs, Progress, Tee};
use super::run::{
    LineReporter, connect_all, host_checks, keep_preflight_report, log_file, preflight,
};
use crate::image::BlobSource;
use crate::install::journal::{self, Journal, Outcome};
use crate::install::limits::{self, Limits};
use crate::install::registry_node::{self, RegistryAccess};
use crate::install::{
    Event, ImagePlan, Install, Phase, PlannedStep, Reporter, StepId, StepState, write_file,
};
use crate::preflight::{CheckId, Requirements};
use crate::printer::Printer;
use crate::remote::{Remote, RemoteCommand, UploadSource};
use crate::runtime::kubernetes::runtime::{ImageInputs, KubernetesRuntime};
use crate::runtime::kubernetes::scale::sync_lb_backends;
use crate::settings::Settings;
use crate::spec::clusterfile::{ClusterSpec, Clusterfile, Host};
use crate::spec::reference::Reference;

const RESET: &str = include_str!("../../installer/reset.sh");

/// Read and parse `path` (errors exit 2).
pub(crate) fn read_clusterfile(path: &Path) -> anyhow::Result<Clusterfile> {
    Clusterfile::read(path).map_err(bad_input)
}

/// Resolve a Clusterfile with the process env (for `passwdEnv`).
pub(crate) fn resolve(cf: &Clusterfile, settings: &Settings) -> anyhow::Result<ClusterSpec> {
    cf.resolve(&|name| settings.env.get(name).map(str::to_string))
        .map_err(bad_input)
}

/// The cluster named `name`, or the only cluster airlock manages from this machine.
pub(crate) fn cluster_name(settings: &Settings, name: Option<&str>) -> anyhow::Result<String> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    let dir = settings.root.join("clusters");
    let mut names: Vec<String> = fs_err::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().join(journal::CLUSTERFILE).is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(bad_input(format!(
            "no cluster is recorded under {}: pass -f Clusterfile",
            dir.display()
        ))),
        many => Err(bad_input(format!(
            "several clusters are recorded ({}): pass --cluster NAME or -f Clusterfile",
            many.join(", ")
        ))),
    }
}

/// The Clusterfile kept for the cluster `name` (without secrets).
pub(crate) fn stored_clusterfile(settings: &Settings, name: &str) -> anyhow::Result<Clusterfile> {
    let path = journal::cluster_dir(&settings.root, name).join(journal::CLUSTERFILE);
    if !path.is_file() {
        return Err(bad_input(format!(
            "cluster {name} is not recorded on this machine ({} is missing): pass -f Clusterfile",
            path.display()
        )));
    }
    read_clusterfile(&path)
}

/// `-f FILE` if given, else the stored Clusterfile of `--cluster NAME` (or the only one).
pub(crate) fn clusterfile_or_stored(
    file: Option<&Path>,
    cluster: Option<&str>,
    settings: &Settings,
) -> anyhow::Result<Clusterfile> {
    match file {
        Some(f) => read_clusterfile(f),
        None => stored_clusterfile(settings, &cluster_name(settings, cluster)?),
    }
}

/// Ask on the terminal, or require `--yes` without one.
pub(crate) fn confirm(yes: bool, what: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(bad_input(format!(
            "about to {what}, but there is no terminal to confirm on: pass --yes"
        )));
    }
    let mut err = std::io::stderr();
    write!(err, "About to {what}. Continue? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(bad_input("cancelled; nothing was changed"))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Folds events into the journal and saves it after each step event.
struct JournalReporter {
    dir: PathBuf,
    journal: Mutex<Journal>,
}

impl Reporter for JournalReporter {
    fn event(&self, event: Event) {
        if let Ok(mut j) = self.journal.lock() {
            j.record(&event);
            if matches!(event, Event::Step { .. }) {
                let _ = j.save(&self.dir, now());
            }
        }
    }
}

/// Where the image comes from: the store or a bundle, and the agent binary to put on hosts.
pub(crate) struct ImageSource {
    /// The blobs.
    pub(crate) source: Arc<dyn BlobSource>,
    /// The image's name in it.
    pub(crate) image: String,
    /// The airlock binary for hosts.
    pub(crate) agent: UploadSource,
}

/// Converge the hosts onto `cf`: clean hosts the journal has and `cf` does not, then
/// install on every host of `cf` (finished steps are skipped). Events go to stderr as
/// lines, to the log file, and with `-o json` to stdout; the last is
/// [`Event::Finished`](crate::install::Event::Finished).
pub(crate) async fn converge(
    cf: &Clusterfile,
    spec: ClusterSpec,
    from: ImageSource,
    yes: bool,
    engine: &EngineArgs,
    settings: &Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    converge_image(cf, spec, from, yes, engine, settings, printer, false)
        .await
        .map(drop)
}

/// [`converge`], returning the image's plan; with `artifacts_only` the runtime has no
/// step (`airlock upgrade` puts the new image's files, registry and launch in place,
/// then upgrades the runtime itself).
#[expect(clippy::too_many_arguments, reason = "the verbs' parts, passed on")]
pub(crate) async fn converge_image(
    cf: &Clusterfile,
    spec: ClusterSpec,
    from: ImageSource,
    yes: bool,
    engine: &EngineArgs,
    settings: &Settings,
    printer: Printer,
    artifacts_only: bool,
) -> anyhow::Result<ImagePlan> {
    let limits = Limits::from_spec(&spec, &engine.overrides()?);
    let ignore = engine.ignored_checks()?;
    for step in limits.timeouts.keys() {
        if !limits::is_step_name(step) {
            return Err(bad_input(format!(
                "{}: Cluster spec.stepTimeouts.{step}: unknown step; use one of {}",
                cf.file,
                limits::step_names().join(", ")
            )));
        }
    }
    // The log stays in memory until the operator confirmed (see `converge_with`).
    let lines = Arc::new(LineReporter::held(printer, log_file(settings, &spec.name)));
    let progress = Progress::new(lines.clone(), engine.format, printer);
    let mut plan = None;
    let result = converge_with(
        cf,
        spec,
        from,
        yes,
        limits,
        &ignore,
        &progress,
        &lines,
        settings,
        printer,
        artifacts_only,
    )
    .await
    .map(|(summary, p)| {
        plan = Some(p);
        summary
    });
    if let Some(path) = lines.log_path() {
        printer.status(format!("log: {}", path.display()));
    }
    progress.finish(result)?;
    plan.ok_or_else(|| anyhow::anyhow!("the install finished without its plan"))
}

#[expect(clippy::too_many_arguments, reason = "the one caller passes its parts")]
async fn converge_with(
    cf: &Clusterfile,
    spec: ClusterSpec,
    from: ImageSource,
    yes: bool,
    limits: Limits,
    ignore: &BTreeSet<CheckId>,
    progress: &Progress,
    log: &LineReporter,
    settings: &Settings,
    printer: Printer,
    artifacts_only: bool,
) -> anyhow::Result<(String, ImagePlan)> {
    let mut plan = ImagePlan::read(from.source.as_ref(), &from.image).map_err(bad_input)?;
    let dir = journal::cluster_dir(&settings.root, &spec.name);
    // A Kubernetes image's PKI and token are made while its runtime is prepared, before
    // the question: for a cluster new to this machine they go again if the command
    // stops before the operator confirmed.
    let unconfirmed = NewClusterState::watch(&dir);
    // The Kubernetes runtime goes into the plan once its running hosts caught up.
    let kubernetes = if artifacts_only {
        plan.runtime = Arc::new(crate::install::runtime::GenericRuntime::default());
        None
    } else {
        kubernetes_runtime(&cf.kubeadm, &spec, &plan, &dir)?
    };
    let previous = Journal::load(&dir)?;
    let listed: BTreeSet<IpAddr> = spec.hosts.iter().map(|h| h.ip).collect();
    let leaving: Vec<Host> = previous
        .as_ref()
        .map(|j| {
            j.hosts
                .iter()
                .filter(|(ip, _)| !listed.contains(ip))
                .map(|(ip, rec)| leaving_host(&spec, *ip, &rec.roles))
                .collect()
        })
        .unwrap_or_default();
    let scale_up: BTreeSet<IpAddr> = match &previous {
        Some(j) if j.outcome == Outcome::Installed => listed
            .iter()
            .filter(|ip| !j.hosts.contains_key(ip))
            .copied()
            .collect(),
        _ => BTreeSet::new(),
    };
    printer.status(format!(
        "image {} ({} container images) onto {} hosts{}; checking hosts first",
        Reference::familiar(&from.image.parse()?),
        plan.images.len(),
        spec.hosts.len(),
        if leaving.is_empty() {
            String::new()
        } else {
            format!(", removing {}", ips_text(leaving.iter().map(|h| h.ip)))
        }
    ));
    let mut everyone = spec.clone();
    everyone.hosts.extend(leaving.iter().cloned());
    let remotes = connect_all(&everyone, settings, printer).await?;
    preflight(&spec, &remotes).await?;
    let report = host_checks(
        &spec,
        &remotes,
        &Requirements::for_image(&plan.config, plan.payload_bytes()),
        ignore,
        printer,
    )
    .await?;
    let mut what = format!("install {} onto {} hosts", from.image, spec.hosts.len());
    if !leaving.is_empty() {
        what.push_str(&format!(
            " and remove {} from the cluster",
            ips_text(leaving.iter().map(|h| h.ip))
        ));
    }
    if let Some(rt) = kubernetes
        .as_ref()
        .filter(|rt| !rt.new_masters().is_empty())
    {
        what.push_str(&format!(
            ", re-issuing the cluster's certificates for the new master(s) {} (the running masters' control planes restart one at a time)",
            ips_text(rt.new_masters().iter().copied())
        ));
    }
    confirm(yes, &what)?;
    unconfirmed.confirmed();
    // Only now is the cluster's directory written: a declined command, or one whose
    // checks failed, leaves no directory behind for a cluster that did not exist.
    keep_preflight_report(&dir, &report)?;
    log.open_log()?;

    if !leaving.is_empty() {
        workers_leaving(
            &dir,
            &spec,
            &leaving,
            &remotes,
            WorkerLeaving::Drain,
            printer,
        )
        .await?;
        clean(
            &spec,
            &leaving,
            &remotes,
            Scope::Host,
            false,
            limits.max_parallel,
            progress.reporter.as_ref(),
        )
        .await?;
        workers_leaving(
            &dir,
            &spec,
            &leaving,
            &remotes,
            WorkerLeaving::DeleteNode,
            printer,
        )
        .await?;
        rewrite_lb_backends(&dir, &spec, &remotes, printer).await?;
    }
    let mut j = Journal::new(
        &spec.name,
        &from.image,
        &plan.top.digest.to_string(),
        &spec.data_root,
    );
    for h in &spec.hosts {
        j.hosts.entry(h.ip).or_default().roles = h.roles.iter().cloned().collect();
    }
    j.save(&dir, now())?;
    journal::write_atomic(
        &dir.join(journal::CLUSTERFILE),
        cf.to_yaml_without_secrets().as_bytes(),
    )?;
    let journal_reporter = Arc::new(JournalReporter {
        dir: dir.clone(),
        journal: Mutex::new(j),
    });
    let reporter = Arc::new(Tee(vec![
        progress.reporter.clone(),
        journal_reporter.clone(),
    ]));
    let remotes: BTreeMap<IpAddr, Arc<dyn Remote>> = remotes
        .into_iter()
        .filter(|(ip, _)| listed.contains(ip))
        .collect();
    let registry_access = registry_access(&spec, settings, &remotes).await?;
    if let Some(rt) = kubernetes {
        plan.runtime = Arc::new(kubernetes_catch_up(rt, &dir, &remotes, printer).await?);
    }
    let install = Install {
        spec,
        plan,
        source: from.source,
        agent: from.agent,
        remotes,
        reporter,
        scale_up,
        registry_access,
        limits,
        skip: BTreeSet::new(),
    };
    install.run().await?;
    rewrite_lb_backends(&dir, &install.spec, &install.remotes, printer).await?;
    let mut j = journal_reporter
        .journal
        .lock()
        .map_err(|_| anyhow::anyhow!("journal lock poisoned"))?
        .clone();
    j.outcome = Outcome::Installed;
    j.save(&dir, now())?;
    record_on_first_master(&install, cf, &j).await?;
    let summary = format!(
        "installed {} on {} hosts; registry at {}://{}",
        install.plan.name,
        install.spec.hosts.len(),
        install.registry_access.scheme(),
        install.spec.registry.address()
    );
    Ok((summary, install.plan))
}

/// What a command made in the directory of a cluster new to this machine before the
/// operator confirmed (a Kubernetes image's PKI and token, under `kubernetes/`):
/// removed when dropped unconfirmed, so a declined or refused command leaves no
/// cluster directory behind. A process killed at the question leaves them; the next
/// run uses them, as no host has them yet.
struct NewClusterState {
    /// The cluster's directory, when it did not exist.
    dir: Option<PathBuf>,
}

impl NewClusterState {
    fn watch(dir: &Path) -> Self {
        Self {
            dir: (!dir.exists()).then(|| dir.to_path_buf()),
        }
    }

    /// The operator confirmed: keep everything.
    fn confirmed(mut self) {
        self.dir = None;
    }
}

impl Drop for NewClusterState {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let made = dir.join("kubernetes");
            if made.is_dir() {
                let _ = fs_err::remove_dir_all(&made);
            }
            // Only when nothing else is in it.
            let _ = fs_err::remove_dir(&dir);
        }
    }
}

/// The registry's CA, certificate and credentials, made once per cluster under its
/// directory and reused; when this machine has none, those kept on the first master
/// (another operator installed the cluster) are taken back first.
pub(crate) async fn registry_access(
    spec: &ClusterSpec,
    settings: &Settings,
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
) -> anyhow::Result<RegistryAccess> {
    let dir = journal::cluster_dir(&settings.root, &spec.name);
    let first = spec.first_master().ip;
    let needs_restore = spec.registry.external.is_none()
        && !spec.registry.insecure
        && !dir.join(registry_node::OPERATOR_DIR).is_dir();
    if needs_restore && let Some(remote) = remotes.get(&first) {
        let mut kept = Vec::new();
        for name in registry_node::KEPT_FILES {
            let path = format!("{}/cluster/registry/{name}", spec.data_root);
            let cmd = RemoteCommand::new("cat").arg(path).sudo();
            if let Ok(out) = remote.run(&cmd).await
                && out.success()
            {
                kept.push((
                    name.to_string(),
                    crate::remote::Secret::new(out.stdout_text()),
                ));
            }
        }
        RegistryAccess::restore(&dir, &kept)
            .with_context(|| format!("taking back the registry's CA from {first}"))?;
    }
    RegistryAccess::prepare(spec, &dir, std::time::SystemTime::now()).map_err(bad_input)
}

/// The Kubernetes runtime of the cluster: its kubeadm configuration, and its PKI and
/// join token kept under `<cluster dir>/kubernetes/` (made on the first run).
/// `None` when the image's runtime is not `kubernetes`. Also what the wizard installs
/// with (it has no kubeadm documents).
pub(crate) fn kubernetes_runtime(
    kubeadm: &[serde_json::Value],
    spec: &ClusterSpec,
    plan: &ImagePlan,
    dir: &Path,
) -> anyhow::Result<Option<KubernetesRuntime>> {
    if plan.config.runtime != "kubernetes" {
        return Ok(None);
    }
    let image = ImageInputs {
        name: &plan.name,
        version: plan.config.runtime_version.as_deref(),
        files: &plan.files,
        labels: &plan.config.labels,
    };
    let now = time::OffsetDateTime::now_utc();
    KubernetesRuntime::prepare(spec, image, kubeadm, &dir.join("kubernetes"), now)
        .map(Some)
        .map_err(bad_input)
}

/// Before the engine runs on a Kubernetes cluster: the PKI re-issued for masters new to
/// it, then every running master on another PKI renewed, one at a time, so that they
/// serve the new API server certificate before new masters join.
async fn kubernetes_catch_up(
    mut rt: KubernetesRuntime,
    dir: &Path,
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
    printer: Printer,
) -> anyhow::Result<KubernetesRuntime> {
    let new = ips_text(rt.new_masters().iter().copied());
    if rt.issue_for_new_masters(time::OffsetDateTime::now_utc())? {
        printer.status(format!(
            "re-issued the cluster's PKI under {} for the new master(s) {new}",
            dir.join("kubernetes").display()
        ));
    }
    let report = |ip: IpAddr, line: String| printer.status(format!("{ip}| {line}"));
    rt.renew_running_masters(remotes, &report)
        .await
        .context("bringing the running masters' certificates up to date")?;
    Ok(rt)
}

/// What the first master does about a worker leaving a Kubernetes cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkerLeaving {
    /// Before its reset: drain it (a failure is reported, not fatal: the worker may
    /// be dead already).
    Drain,
    /// After its reset: delete its node.
    DeleteNode,
}

/// On a Kubernetes cluster, run `kube.sh drain` or `delete-node` on the first master
/// for each worker in `leaving` (masters drain themselves in their uninstall).
pub(crate) async fn workers_leaving(
    dir: &Path,
    spec: &ClusterSpec,
    leaving: &[Host],
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
    what: WorkerLeaving,
    printer: Printer,
) -> anyhow::Result<()> {
    if !dir.join("kubernetes/pki-files").is_dir() {
        return Ok(());
    }
    let first = spec.first_master().ip;
    let remote = remotes
        .get(&first)
        .with_context(|| format!("{first}: not connected"))?;
    let root = spec.data_root.as_str();
    for host in leaving.iter().filter(|h| !h.is_master()) {
        let action = match what {
            WorkerLeaving::Drain => "drain",
            WorkerLeaving::DeleteNode => "delete-node",
        };
        let node = crate::runtime::kubernetes::runtime::node_name(host.ip);
        let cmd = RemoteCommand::new("sh")
            .args([
                format!("{root}/cluster/kubernetes/kube.sh"),
                action.into(),
                node,
            ])
            .cwd(format!("{root}/rootfs"))
            .env("AIRLOCK_DATA_ROOT", root)
            .env("AIRLOCK_HOST_IP", first.to_string())
            .sudo();
        match remote.check(&cmd).await {
            Ok(_) => printer.status(format!("{first}: {action} {}", host.ip)),
            Err(e) if what == WorkerLeaving::Drain => printer.status(format!(
                "{first}: could not drain {} ({e}); going on",
                host.ip
            )),
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("{first}: deleting node {}", host.ip))
                );
            }
        }
    }
    Ok(())
}

/// On a Kubernetes cluster (one with a PKI under `<cluster dir>/kubernetes/`), point
/// every worker's load balancer at the masters of `spec` (after masters joined or
/// left); a worker whose backends already list them is left alone.
pub(crate) async fn rewrite_lb_backends(
    dir: &Path,
    spec: &ClusterSpec,
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
    printer: Printer,
) -> anyhow::Result<()> {
    if !dir.join("kubernetes/pki-files").is_dir() {
        return Ok(());
    }
    let masters = spec.master_ips();
    for host in spec.hosts.iter().filter(|h| !h.is_master()) {
        let remote = remotes
            .get(&host.ip)
            .with_context(|| format!("{}: not connected", host.ip))?;
        let written = sync_lb_backends(remote.as_ref(), &spec.data_root, &masters)
            .await
            .with_context(|| format!("{}: rewriting the load balancer's backends", host.ip))?;
        if !written {
            continue;
        }
        printer.status(format!(
            "{}: load balancer backends: {}",
            host.ip,
            ips_text(masters.iter().copied())
        ));
    }
    Ok(())
}

/// A host the journal has but the Clusterfile no longer lists: reached with the
/// cluster's ssh settings (those of the first master).
fn leaving_host(spec: &ClusterSpec, ip: IpAddr, roles: &[String]) -> Host {
    let mut host = spec.first_master().clone();
    host.ip = ip;
    host.roles = roles.iter().cloned().collect();
    host.env = BTreeMap::new();
    host
}

pub(crate) fn ips_text(ips: impl Iterator<Item = IpAddr>) -> String {
    ips.map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ")
}

/// Keep the cluster's state on its first master: `<data root>/cluster/Clusterfile`
/// (no secrets) and `state.json` (the journal), both 0600; `airlock cluster fetch`
/// reads them back on another operator machine.
async fn record_on_first_master(
    install: &Install,
    cf: &Clusterfile,
    j: &Journal,
) -> anyhow::Result<()> {
    record_state(&install.spec, &install.remotes, cf, j).await
}

/// [`record_on_first_master`] for any connected cluster.
pub(crate) async fn record_state(
    spec: &ClusterSpec,
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
    cf: &Clusterfile,
    j: &Journal,
) -> anyhow::Result<()> {
    let first = spec.first_master().ip;
    let remote = remotes
        .get(&first)
        .context("the first master is not connected")?;
    let dir = format!("{}/cluster", spec.data_root);
    for (name, bytes) in [
        (
            journal::CLUSTERFILE,
            cf.to_yaml_without_secrets().into_bytes(),
        ),
        (STATE_FILE, j.to_json()),
    ] {
        write_file(remote.as_ref(), &format!("{dir}/{name}"), &bytes, "600")
            .await
            .with_context(|| format!("keeping the cluster's state on {first}"))?;
    }
    Ok(())
}

/// The journal's file name under `<data root>/cluster/` on the first master.
pub(crate) const STATE_FILE: &str = "state.json";

/// Who goes when hosts are cleaned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// These hosts leave a cluster that goes on.
    Host,
    /// The whole cluster goes.
    Cluster,
}

/// Run the clean-host plugins and `installer/reset.sh` on `hosts`, in parallel (at
/// most `max_parallel` at once) for a whole cluster, one at a time for hosts leaving a
/// running one. `force` goes on when the runtime's uninstall fails. Each is a step
/// reported to `reporter` (`plugin-pre-clean-host`, `clean`, `plugin-post-clean-host`).
pub(crate) async fn clean(
    spec: &ClusterSpec,
    hosts: &[Host],
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
    scope: Scope,
    force: bool,
    max_parallel: usize,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let remaining: Vec<&Host> = spec
        .hosts
        .iter()
        .filter(|h| !hosts.iter().any(|g| g.ip == h.ip))
        .collect();
    let one = |host: &Host| {
        let remote = remotes.get(&host.ip).cloned();
        let mut env = crate::install::runtime::script_env(spec, &BTreeMap::new(), host);
        if scope == Scope::Host {
            let ips = |master: bool| {
                remaining
                    .iter()
                    .filter(|h| h.is_master() == master)
                    .map(|h| h.ip.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            env.insert("AIRLOCK_MASTERS".into(), ips(true));
            env.insert("AIRLOCK_NODES".into(), ips(false));
        } else {
            // The env recorded on the host is used (the cluster goes as a whole).
            env.clear();
        }
        let scope_arg = match scope {
            Scope::Host => "host",
            Scope::Cluster => "cluster",
        };
        let pre = clean_plugins(spec, host, Phase::PreCleanHost);
        let post = clean_plugins(spec, host, Phase::PostCleanHost);
        let root = spec.data_root.clone();
        let ip = host.ip;
        async move {
            let remote = remote.with_context(|| format!("{ip}: not connected"))?;
            let with_env = |mut cmd: RemoteCommand| {
                for (k, v) in &env {
                    cmd = cmd.env(k.as_str(), v.as_str());
                }
                cmd.sudo().timeout(limits::default_timeout(StepId::Clean))
            };
            let mut scripts: Vec<(StepId, RemoteCommand)> = pre
                .iter()
                .map(|script| {
                    (
                        StepId::Plugin(Phase::PreCleanHost),
                        with_env(RemoteCommand::new("sh").args(["-c", script])),
                    )
                })
                .collect();
            scripts.push((
                StepId::Clean,
                with_env(RemoteCommand::script(
                    RESET,
                    [root.as_str(), scope_arg, if force { "1" } else { "0" }],
                )),
            ));
            scripts.extend(post.iter().map(|script| {
                (
                    StepId::Plugin(Phase::PostCleanHost),
                    with_env(RemoteCommand::new("sh").args(["-c", script])),
                )
            }));
            for (step, cmd) in &scripts {
                let step = *step;
                let started = std::time::Instant::now();
                let elapsed = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let report = |state: StepState, elapsed_ms: u64| {
                    reporter.event(Event::Step {
                        host: ip,
                        step,
                        state,
                        elapsed_ms,
                    });
                };
                report(StepState::Started, 0);
                match remote.check(cmd).await {
                    Ok(out) => {
                        for line in out.stdout_text().lines() {
                            reporter.event(Event::Log {
                                host: ip,
                                line: line.to_string(),
                            });
                        }
                        report(StepState::Done, elapsed());
                    }
                    Err(e) => {
                        report(StepState::Failed(e.to_string()), elapsed());
                        let hint = if step == StepId::Clean {
                            " (fix the cause and run it again, or use `airlock reset` to force)"
                        } else {
                            ""
                        };
                        return Err(anyhow::Error::new(e)
                            .context(format!("{ip}: step {step} failed{hint}")));
                    }
                }
            }
            anyhow::Ok(())
        }
    };
    reporter.event(Event::Plan {
        steps: hosts
            .iter()
            .flat_map(|h| {
                let n_pre = !clean_plugins(spec, h, Phase::PreCleanHost).is_empty();
                let n_post = !clean_plugins(spec, h, Phase::PostCleanHost).is_empty();
                let mut steps = Vec::new();
                if n_pre {
                    steps.push(StepId::Plugin(Phase::PreCleanHost));
                }
                steps.push(StepId::Clean);
                if n_post {
                    steps.push(StepId::Plugin(Phase::PostCleanHost));
                }
                steps
                    .into_iter()
                    .map(|step| PlannedStep { host: h.ip, step })
                    .collect::<Vec<_>>()
            })
            .collect(),
    });
    match scope {
        Scope::Host => {
            for h in hosts {
                one(h).await?;
            }
        }
        Scope::Cluster => {
            let gate = tokio::sync::Semaphore::new(max_parallel.max(1));
            let results = futures_util::future::join_all(hosts.iter().map(|h| {
                let work = one(h);
                let gate = &gate;
                async move {
                    let _permit = gate.acquire().await;
                    work.await
                }
            }))
            .await;
            let errors: Vec<String> = results
                .into_iter()
                .filter_map(Result::err)
                .map(|e| format!("{e:#}"))
                .collect();
            if !errors.is_empty() {
                anyhow::bail!("cleaning failed:\n  {}", errors.join("\n  "));
            }
        }
    }
    Ok(())
}

/// The scripts of the Clusterfile's SHELL plugins of `phase` whose scope takes `host`.
fn clean_plugins(spec: &ClusterSpec, host: &Host, phase: Phase) -> Vec<String> {
    spec.plugins
        .iter()
        .filter(|p| {
            Phase::parse(&p.action) == Some(phase)
                && p.scope.as_deref().is_none_or(|s| {
                    s.trim().is_empty()
                        || s.split([',', '|']).any(|r| host.roles.contains(r.trim()))
                })
        })
        .map(|p| p.data.clone())
        .collect()
}

/// Parse `--masters`/`--nodes` lists: comma-separated IPs or ranges.
pub(crate) fn parse_ips(list: &[String], flag: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        out.extend(
            crate::spec::clusterfile::expand_ips(item)
                .map_err(|e| bad_input(format!("{flag}: {e}")))?,
        );
    }
    Ok(out)
}

/// The store image source with this airlock binary as the agent.
pub(crate) fn store_source(settings: &Settings, wanted: &str) -> anyhow::Result<ImageSource> {
    let store = crate::image::store::Store::open(&settings.root)
        .with_context(|| format!("opening the store {}", settings.root.display()))?;
    if wanted.is_empty() {
        return Err(bad_input(
            "no image: give IMAGE or spec.image in the Clusterfile",
        ));
    }
    let image = super::images::resolve(&store, wanted).map_err(|e| {
        bad_input(format!(
            "image {wanted}: {e:#}; nothing was changed (see `airlock images`, `airlock pull`)"
        ))
    })?;
    let exe = std::env::current_exe().context("locating the airlock binary to put on hosts")?;
    let len = fs_err::metadata(&exe)?.len();
    let agent = UploadSource {
        sha256: Some(super::run::sha256_region(&exe, 0, len)?),
        path: exe,
        offset: 0,
        len,
    };
    Ok(ImageSource {
        source: Arc::new(store),
        image,
        agent,
    })
}
