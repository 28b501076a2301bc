//! `airlock join --masters IPs --nodes IPs`: add hosts to a cluster.
//!
//! 1. Take the Clusterfile (`-f`, or the one kept for the cluster), add the hosts it
//!    does not list yet as a new group with the cluster's ssh settings (a host listed
//!    with another role is refused).
//! 2. Converge onto it, as `apply` does: the new hosts are installed and joined one at a
//!    time; the others skip every finished step. Joining the same hosts again resumes a
//!    join that failed, and changes nothing once it is done.

use std::path::PathBuf;

use super::{bad_input, cluster};
use crate::printer::Printer;
use crate::settings::Settings;
use crate::spec::clusterfile::{ROLE_MASTER, ROLE_NODE};

/// Flags of `airlock join`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example: airlock join --nodes 198.18.0.5,198.18.0.6-198.18.0.7 --yes")]
pub struct JoinArgs {
    /// Masters to add (comma-separated IPs or ranges).
    #[arg(long, value_delimiter = ',')]
    pub masters: Vec<String>,
    /// Nodes to add (comma-separated IPs or ranges).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
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

/// Add hosts to the cluster.
pub async fn run(args: JoinArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let masters = cluster::parse_ips(&args.masters, "--masters")?;
    let nodes = cluster::parse_ips(&args.nodes, "--nodes")?;
    if masters.is_empty() && nodes.is_empty() {
        return Err(bad_input("nothing to join: pass --masters or --nodes"));
    }
    let mut cf =
        cluster::clusterfile_or_stored(args.file.as_deref(), args.cluster.as_deref(), settings)?;
    let current = cluster::resolve(&cf, settings)?;
    let mut listed = Vec::new();
    for (ips, role) in [(&masters, ROLE_MASTER), (&nodes, ROLE_NODE)] {
        let mut new = Vec::new();
        for ip in ips {
            match current.hosts.iter().find(|h| h.ip == *ip) {
                None => new.push(*ip),
                Some(h) if h.roles.contains(role) => listed.push(*ip),
                Some(h) => {
                    let has = h.roles.iter().cloned().collect::<Vec<_>>().join(",");
                    return Err(bad_input(format!(
                        "{ip} is in cluster {} already with the roles {has}, not {role}: delete it first (airlock delete --masters/--nodes {ip})",
                        current.name
                    )));
                }
            }
        }
        cf.add_hosts(&new, &[role]);
    }
    if !listed.is_empty() {
        printer.status(format!(
            "{} in cluster {} already: finishing what is left to do there",
            cluster::ips_text(listed.into_iter()),
            current.name
        ));
    }
    let spec = cluster::resolve(&cf, settings)?;
    let from = cluster::store_source(settings, &spec.image)?;
    cluster::converge(&cf, spec, from, args.yes, &args.engine, settings, printer).await
}
