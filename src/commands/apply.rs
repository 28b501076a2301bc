//! `airlock apply -f Clusterfile`: converge the cluster to the file.
//!
//! 1. Read the Clusterfile (errors name the field: exit 2).
//! 2. Hosts the journal has and the file does not are cleaned (scale down: the
//!    runtime's uninstall runs on each, one at a time); hosts the file adds are
//!    installed and joined (scale up); hosts already there skip every finished step.

use std::path::PathBuf;

use super::cluster;
use crate::printer::Printer;
use crate::settings::Settings;

/// Flags of `airlock apply`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example: airlock apply -f Clusterfile --yes")]
pub struct ApplyArgs {
    /// The Clusterfile to converge to.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Step timeouts, host concurrency, output format.
    #[command(flatten)]
    pub engine: super::progress::EngineArgs,
}

/// Converge the cluster to the Clusterfile.
pub async fn run(args: ApplyArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let cf = cluster::read_clusterfile(&args.file)?;
    let spec = cluster::resolve(&cf, settings)?;
    let from = cluster::store_source(settings, &spec.image)?;
    cluster::converge(&cf, spec, from, args.yes, &args.engine, settings, printer).await
}
