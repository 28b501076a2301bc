//! `airlock run`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::image::BlobSource;
use crate::printer::Printer;
use crate::settings::Settings;

/// Flags of `airlock run` (and of `FILE.run install`).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The cluster image (taken from the Clusterfile when omitted).
    pub image: Option<String>,
    /// The Clusterfile.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// Install a cluster from the local store.
pub async fn run(_args: RunArgs, _settings: &Settings, _printer: Printer) -> anyhow::Result<()> {
    anyhow::bail!("run is not wired yet")
}

/// Install a cluster whose image is `image` in `source` (the local store, or a bundle).
pub async fn run_from(
    _args: RunArgs,
    _source: Arc<dyn BlobSource>,
    _image: String,
    _settings: &Settings,
    _printer: Printer,
) -> anyhow::Result<()> {
    anyhow::bail!("run is not wired yet")
}
