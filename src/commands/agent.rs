//! `airlock agent ...`: what airlock runs on a host, as the node agent.

use crate::printer::Printer;
use crate::settings::Settings;

/// Agent subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Print the agent's version.
    Version,
}

/// Run an agent subcommand.
pub async fn run(cmd: AgentCommand, _settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Version => printer.result(env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
