//! `airlock bundle`, and running a bundle (`./FILE.run ...`).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::printer::Printer;
use crate::settings::{Env, Settings};

/// Flags of `airlock bundle`.
#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// Image to bundle.
    pub name: String,
    /// Output file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

/// Write a bundle.
pub async fn run(_args: BundleArgs, _settings: &Settings, _printer: Printer) -> anyhow::Result<()> {
    anyhow::bail!("bundle is not wired yet")
}

/// When this executable is a bundle, run as the bundle and return its exit code.
pub fn run_if_bundle(_env: &Env) -> Option<ExitCode> {
    None
}
