//! What the cluster verbs (`run`, `apply`, `join`, `delete`, `reset`, `check`, `exec`,
//! `status`) share: reading the Clusterfile or the stored state, converging hosts onto
//! it, cleaning hosts, and keeping the journal.
//!
//! 1. [`read_clusterfile`] reads `-f FILE`; [`stored_clusterfile`] reads the one kept
//!    under `<store>/clusters/<name>/` (secrets stripped: keys, `passwdEnv` and
//!    `passwdFile` still work).
//! 2. [`converge`] installs the image onto every host of the Clusterfile (finished steps
//!    are skipped on hosts), first cleaning the hosts the journal has but the file no
//!    longer lists (scale down), and running the scale-up plugins on hosts it adds.
//! 3. [`clean`] runs `installer/reset.sh` on hosts (the runtime's uninstall, then
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
use super::run::{LineReporter, connect_all, log_file, preflight};
use crate::image::BlobSource;
use crate::install::journal::{self, Journal, Outcome};
use crate::install::{Event, ImagePlan, Install, Reporter, write_file};
use crate::printer::Printer;
use crate::remote::{Remote, RemoteCommand, UploadSource};
use crate::runtime::kubernetes::runtime::{ImageInputs, KubernetesRuntime};
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

struct Tee(Vec<Arc<dyn Reporter>>);

impl Reporter for Tee {
    fn event(&self, event: Event) {
        for r in &self.0 {
            r.event(event.clone());
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
/// install on every host of `cf` (finished steps are skipped).
pub(crate) async fn converge(
    cf: &Clusterfile,
    spec: ClusterSpec,
    from: ImageSource,
    yes: bool,
    settings: &Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    converge_image(cf, spec, from, yes, settings, printer, false)
        .await
        .map(drop)
}

/// [`converge`], returning the image's plan; with `artifacts_only` the runtime has no
/// step (`airlock upgrade` puts the new image's files, registry and launch in place,
/// then upgrades the runtime itself).
pub(crate) async fn converge_image(
    cf: &Clusterfile,
    spec: ClusterSpec,
    from: ImageSource,
    yes: bool,
    settings: &Settings,
    printer: Printer,
    artifacts_only: bool,
) -> anyhow::Result<ImagePlan> {
    let mut plan = ImagePlan::read(from.source.as_ref(), &from.image).map_err(bad_input)?;
    let dir = journal::cluster_dir(&settings.root, &spec.name);
    if artifacts_only {
        plan.runtime = Arc::new(crate::install::runtime::GenericRuntime::default());
    } else if plan.config.runtime == "kubernetes" {
        plan.runtime = Arc::new(kubernetes_runtime(cf, &spec, &plan, &dir)?);
    }
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
    let mut what = format!("install {} onto {} hosts", from.image, spec.hosts.len());
    if !leaving.is_empty() {
        what.push_str(&format!(
            " and remove {} from the cluster",
            ips_text(leaving.iter().map(|h| h.ip))
        ));
    }
    confirm(yes, &what)?;

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
        clean(&spec, &leaving, &remotes, Scope::Host, false, printer).await?;
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
    let log_path = log_file(settings, &spec.name)?;
    let journal_reporter = Arc::new(JournalReporter {
        dir: dir.clone(),
        journal: Mutex::new(j),
    });
    let reporter = Arc::new(Tee(vec![
        Arc::new(LineReporter::new(printer, &log_path)?),
        journal_reporter.clone(),
    ]));
    let remotes: BTreeMap<IpAddr, Arc<dyn Remote>> = remotes
        .into_iter()
        .filter(|(ip, _)| listed.contains(ip))
        .collect();
    let install = Install {
        spec,
        plan,
        source: from.source,
        agent: from.agent,
        remotes,
        reporter,
        scale_up,
    };
    let result = install.run().await;
    printer.status(format!("log: {}", log_path.display()));
    result?;
    let mut j = journal_reporter
        .journal
        .lock()
        .map_err(|_| anyhow::anyhow!("journal lock poisoned"))?
        .clone();
    j.outcome = Outcome::Installed;
    j.save(&dir, now())?;
    record_on_first_master(&install, cf, &j).await?;
    printer.result(format!(
        "installed {} on {} hosts; registry at {}:{}",
        install.plan.name,
        install.spec.hosts.len(),
        install.spec.registry.domain,
        install.spec.registry.port
    ));
    Ok(install.plan)
}

/// The Kubernetes runtime of the cluster: its kubeadm configuration, and its PKI and
/// join token kept under `<cluster dir>/kubernetes/` (made on the first run).
fn kubernetes_runtime(
    cf: &Clusterfile,
    spec: &ClusterSpec,
    plan: &ImagePlan,
    dir: &Path,
) -> anyhow::Result<KubernetesRuntime> {
    let image = ImageInputs {
        name: &plan.name,
        version: plan.config.runtime_version.as_deref(),
        files: &plan.files,
        labels: &plan.config.labels,
    };
    let now = time::OffsetDateTime::now_utc();
    KubernetesRuntime::prepare(spec, image, &cf.kubeadm, &dir.join("kubernetes"), now)
        .map_err(bad_input)
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
/// every worker's load balancer at the masters of `spec` (after masters left).
pub(crate) async fn rewrite_lb_backends(
    dir: &Path,
    spec: &ClusterSpec,
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
    printer: Printer,
) -> anyhow::Result<()> {
    if !dir.join("kubernetes/pki-files").is_dir() {
        return Ok(());
    }
    let masters: Vec<IpAddr> = spec
        .hosts
        .iter()
        .filter(|h| h.is_master())
        .map(|h| h.ip)
        .collect();
    let file = crate::runtime::kubernetes::runtime::lb_backends_file(&spec.data_root, &masters);
    for host in spec.hosts.iter().filter(|h| !h.is_master()) {
        let remote = remotes
            .get(&host.ip)
            .with_context(|| format!("{}: not connected", host.ip))?;
        write_file(remote.as_ref(), &file.path, &file.bytes, file.mode)
            .await
            .with_context(|| format!("{}: rewriting the load balancer's backends", host.ip))?;
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
/// (no secrets) and `state.json` (the journal), both 0600.
async fn record_on_first_master(
    install: &Install,
    cf: &Clusterfile,
    j: &Journal,
) -> anyhow::Result<()> {
    let first = install.spec.first_master().ip;
    let remote = install
        .remotes
        .get(&first)
        .context("the first master is not connected")?;
    let dir = format!("{}/cluster", install.spec.data_root);
    write_file(
        remote.as_ref(),
        &format!("{dir}/Clusterfile"),
        cf.to_yaml_without_secrets().as_bytes(),
        "600",
    )
    .await
    .with_context(|| format!("keeping the cluster's state on {first}"))?;
    write_file(
        remote.as_ref(),
        &format!("{dir}/state.json"),
        &j.to_json(),
        "600",
    )
    .await
    .with_context(|| format!("keeping the cluster's state on {first}"))?;
    Ok(())
}

/// Who goes when hosts are cleaned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// These hosts leave a cluster that goes on.
    Host,
    /// The whole cluster goes.
    Cluster,
}

/// Run the clean-host plugins and `installer/reset.sh` on `hosts`, in parallel for a
/// whole cluster, one at a time for hosts leaving a running one. `force` goes on when
/// the runtime's uninstall fails.
pub(crate) async fn clean(
    spec: &ClusterSpec,
    hosts: &[Host],
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
    scope: Scope,
    force: bool,
    printer: Printer,
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
        let plugins = |phase: crate::install::Phase| -> Vec<String> {
            spec.plugins
                .iter()
                .filter(|p| {
                    crate::install::Phase::parse(&p.action) == Some(phase)
                        && p.scope.as_deref().is_none_or(|s| {
                            s.trim().is_empty()
                                || s.split([',', '|']).any(|r| host.roles.contains(r.trim()))
                        })
                })
                .map(|p| p.data.clone())
                .collect()
        };
        let pre = plugins(crate::install::Phase::PreCleanHost);
        let post = plugins(crate::install::Phase::PostCleanHost);
        let root = spec.data_root.clone();
        let ip = host.ip;
        async move {
            let remote = remote.with_context(|| format!("{ip}: not connected"))?;
            let with_env = |mut cmd: RemoteCommand| {
                for (k, v) in &env {
                    cmd = cmd.env(k.as_str(), v.as_str());
                }
                cmd.sudo()
            };
            for script in &pre {
                remote
                    .check(&with_env(RemoteCommand::new("sh").args(["-c", script])))
                    .await
                    .with_context(|| format!("{ip}: pre-clean-host plugin"))?;
            }
            let cmd = with_env(RemoteCommand::script(
                RESET,
                [root.as_str(), scope_arg, if force { "1" } else { "0" }],
            ));
            let out = remote.check(&cmd).await.with_context(|| {
                format!(
                    "{ip}: reset (fix the cause and run it again, or use `airlock reset` to force)"
                )
            })?;
            for line in out.stdout_text().lines() {
                printer.status(format!("{ip}| {line}"));
            }
            for script in &post {
                remote
                    .check(&with_env(RemoteCommand::new("sh").args(["-c", script])))
                    .await
                    .with_context(|| format!("{ip}: post-clean-host plugin"))?;
            }
            printer.status(format!("{ip}: cleaned"));
            anyhow::Ok(())
        }
    };
    match scope {
        Scope::Host => {
            for h in hosts {
                one(h).await?;
            }
        }
        Scope::Cluster => {
            let results = futures_util::future::join_all(hosts.iter().map(one)).await;
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
