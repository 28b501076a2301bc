//! `airlock run`.

use std::path::PathBuf;

use crate::printer::Printer;
use crate::settings::Settings;

/// Flags of `airlock run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The Clusterfile.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// Install a cluster.
pub async fn run(_args: RunArgs, _settings: &Settings, _printer: Printer) -> anyhow::Result<()> {
    anyhow::bail!("run is not wired yet")
}
