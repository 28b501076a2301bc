//! `airlock reset`: remove everything airlock put on hosts, even after a failed install,
//! without the image and without a working cluster.
//!
//! 1. Take the hosts from `-f Clusterfile` (or the one kept for the cluster), or only
//!    `--hosts` of them.
//! 2. Run `installer/reset.sh` on each, in parallel, forcing past a failing uninstall
//!    script: the runtime's uninstall if the rootfs is there, the registry, the
//!    `/etc/hosts` line, the mirror files and the directories made for them, the data root.
//! 3. When every host was reset, the cluster's records on this machine go too.

use std::path::PathBuf;

use super::cluster::{self, Scope};
use super::run::connect_all;
use crate::install::journal;
use crate::printer::Printer;
use crate::settings::Settings;

/// Flags of `airlock reset`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example: airlock reset -f Clusterfile --yes")]
pub struct ResetArgs {
    /// The Clusterfile (default: the one kept for the cluster).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The cluster, when several are recorded.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only these hosts (comma-separated IPs or ranges).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// Reset hosts.
pub async fn run(args: ResetArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let cf =
        cluster::clusterfile_or_stored(args.file.as_deref(), args.cluster.as_deref(), settings)?;
    let mut spec = cluster::resolve(&cf, settings)?;
    let only = cluster::parse_ips(&args.hosts, "--hosts")?;
    let all = only.is_empty();
    if !all {
        spec.hosts.retain(|h| only.contains(&h.ip));
        if spec.hosts.is_empty() {
            return Err(super::bad_input(
                "--hosts: none of them is in the Clusterfile",
            ));
        }
    }
    cluster::confirm(
        args.yes,
        &format!(
            "reset {} (remove everything airlock put there)",
            cluster::ips_text(spec.hosts.iter().map(|h| h.ip))
        ),
    )?;
    let remotes = connect_all(&spec, settings, printer).await?;
    let lines = super::run::LineReporter::stderr(printer);
    let max_parallel = spec
        .max_parallel
        .unwrap_or(crate::install::limits::DEFAULT_MAX_PARALLEL);
    cluster::clean(
        &spec,
        &spec.hosts,
        &remotes,
        Scope::Cluster,
        true,
        max_parallel,
        &lines,
    )
    .await?;
    if all {
        let dir = journal::cluster_dir(&settings.root, &spec.name);
        if dir.join(journal::JOURNAL_FILE).exists() {
            fs_err::remove_file(dir.join(journal::JOURNAL_FILE))?;
        }
        if dir.join(journal::CLUSTERFILE).exists() {
            fs_err::remove_file(dir.join(journal::CLUSTERFILE))?;
        }
        // The registry's CA and credentials go with the cluster.
        let registry = dir.join(crate::install::registry_node::OPERATOR_DIR);
        if registry.is_dir() {
            fs_err::remove_dir_all(registry)?;
        }
    }
    printer.result(format!("reset {} hosts", spec.hosts.len()));
    Ok(())
}
