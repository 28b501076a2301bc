//! `airlock registry serve`.

use crate::printer::Printer;
use crate::settings::Settings;

/// Registry subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Serve the local store over the OCI distribution API.
    Serve(ServeArgs),
}

/// Flags of `airlock registry serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub addr: String,
}

/// Run a registry subcommand.
pub async fn run(
    _cmd: RegistryCommand,
    _settings: &Settings,
    _printer: Printer,
) -> anyhow::Result<()> {
    anyhow::bail!("registry is not wired yet")
}
