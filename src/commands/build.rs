//! `airlock build`.

use std::path::PathBuf;

use crate::printer::Printer;
use crate::settings::Settings;

/// Flags of `airlock build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The Kubefile (default: CONTEXT/Kubefile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Name of the image to build, NAME[:TAG].
    #[arg(short = 't', long = "tag")]
    pub tag: String,
    /// Build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// Registry access.
    #[command(flatten)]
    pub registry: super::RegistryArgs,
}

/// Build an image.
pub async fn run(_args: BuildArgs, _settings: &Settings, _printer: Printer) -> anyhow::Result<()> {
    anyhow::bail!("build is not wired yet")
}
