//! `airlock delete --masters/--nodes IPs` or `airlock delete --all`.
//!
//! 1. Take the Clusterfile (`-f`, or the one kept for the cluster).
//! 2. With IPs: the hosts leave one at a time (clean-host plugins, the runtime's
//!    uninstall with `AIRLOCK_UNINSTALL_SCOPE=host`, then everything airlock put there);
//!    the Clusterfile and journal kept for the cluster drop them.
//! 3. With `--all`: every host is cleaned in parallel (`AIRLOCK_UNINSTALL_SCOPE=cluster`)
//!    and the cluster's records on this machine are removed.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::cluster::{self, Scope};
use super::progress::Progress;
use super::{bad_input, run::connect_all};
use crate::install::journal::{self, Journal};
use crate::printer::Printer;
use crate::settings::Settings;

/// Flags of `airlock delete`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  airlock delete --nodes 198.18.0.5 --yes\n  airlock delete --all --yes"
)]
pub struct DeleteArgs {
    /// Masters to remove (comma-separated IPs or ranges).
    #[arg(long, value_delimiter = ',')]
    pub masters: Vec<String>,
    /// Nodes to remove (comma-separated IPs or ranges).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Remove the whole cluster.
    #[arg(long, conflicts_with_all = ["masters", "nodes"])]
    pub all: bool,
    /// The Clusterfile (default: the one kept for the cluster).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The cluster, when several are recorded.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Step timeouts, host concurrency, output format.
    #[command(flatten)]
    pub engine: super::progress::EngineArgs,
}

/// Remove hosts, or the whole cluster. Events go to stderr as lines and, with
/// `-o json`, to stdout as JSON lines ending with `finished`.
pub async fn run(args: DeleteArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let progress = Progress::new(
        Arc::new(super::run::LineReporter::stderr(printer)),
        args.engine.format,
        printer,
    );
    let result = delete(&args, &progress, settings, printer).await;
    progress.finish(result)
}

async fn delete(
    args: &DeleteArgs,
    progress: &Progress,
    settings: &Settings,
    printer: Printer,
) -> anyhow::Result<String> {
    let max_parallel = args.engine.overrides()?.max_parallel;
    let mut cf =
        cluster::clusterfile_or_stored(args.file.as_deref(), args.cluster.as_deref(), settings)?;
    let spec = cluster::resolve(&cf, settings)?;
    let dir = journal::cluster_dir(&settings.root, &spec.name);
    if args.all {
        cluster::confirm(
            args.yes,
            &format!(
                "delete cluster {} from {} hosts",
                spec.name,
                spec.hosts.len()
            ),
        )?;
        let remotes = connect_all(&spec, settings, printer).await?;
        let max_parallel = max_parallel
            .or(spec.max_parallel)
            .unwrap_or(crate::install::limits::DEFAULT_MAX_PARALLEL);
        let reporter = progress.reporter.as_ref();
        cluster::clean(
            &spec,
            &spec.hosts,
            &remotes,
            Scope::Cluster,
            false,
            max_parallel,
            reporter,
        )
        .await?;
        if dir.exists() {
            fs_err::remove_dir_all(&dir)?;
        }
        return Ok(format!("deleted cluster {}", spec.name));
    }
    let mut gone: Vec<IpAddr> = cluster::parse_ips(&args.masters, "--masters")?;
    gone.extend(cluster::parse_ips(&args.nodes, "--nodes")?);
    if gone.is_empty() {
        return Err(bad_input(
            "nothing to delete: pass --masters, --nodes or --all",
        ));
    }
    for ip in &gone {
        if !spec.hosts.iter().any(|h| h.ip == *ip) {
            return Err(bad_input(format!(
                "{ip} is not a host of cluster {}; nothing was changed",
                spec.name
            )));
        }
    }
    let gone_set: BTreeSet<IpAddr> = gone.iter().copied().collect();
    if spec
        .hosts
        .iter()
        .filter(|h| h.is_master())
        .all(|h| gone_set.contains(&h.ip))
    {
        return Err(bad_input(
            "that would remove every master; use --all to delete the cluster",
        ));
    }
    if gone_set.contains(&spec.first_master().ip) {
        return Err(bad_input(format!(
            "{} is the first master (it runs the registry and keeps the state); it cannot leave the cluster",
            spec.first_master().ip
        )));
    }
    cluster::confirm(
        args.yes,
        &format!(
            "remove {} from cluster {}",
            cluster::ips_text(gone.iter().copied()),
            spec.name
        ),
    )?;
    let leaving: Vec<_> = spec
        .hosts
        .iter()
        .filter(|h| gone_set.contains(&h.ip))
        .cloned()
        .collect();
    let remotes = connect_all(&spec, settings, printer).await?;
    let (drain, delete_node) = (
        cluster::WorkerLeaving::Drain,
        cluster::WorkerLeaving::DeleteNode,
    );
    cluster::workers_leaving(&dir, &spec, &leaving, &remotes, drain, printer).await?;
    let reporter = progress.reporter.as_ref();
    cluster::clean(&spec, &leaving, &remotes, Scope::Host, false, 1, reporter).await?;
    cluster::workers_leaving(&dir, &spec, &leaving, &remotes, delete_node, printer).await?;
    let mut staying = spec.clone();
    staying.hosts.retain(|h| !gone_set.contains(&h.ip));
    cluster::rewrite_lb_backends(&dir, &staying, &remotes, printer).await?;
    cf.remove_hosts(&gone);
    journal::write_atomic(
        &dir.join(journal::CLUSTERFILE),
        cf.to_yaml_without_secrets().as_bytes(),
    )?;
    if let Some(mut j) = Journal::load(&dir)? {
        for ip in &gone {
            j.hosts.remove(ip);
        }
        j.save(&dir, 0)?;
        let mut staying = spec.clone();
        staying.hosts.retain(|h| !gone_set.contains(&h.ip));
        cluster::record_state(&staying, &remotes, &cf, &j).await?;
    }
    Ok(format!(
        "removed {} from cluster {}",
        cluster::ips_text(gone.into_iter()),
        spec.name
    ))
}
