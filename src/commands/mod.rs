//! One module per verb. Each exposes its clap `Args` and an async `run`.

pub mod agent;
pub mod agent_lb;
pub mod apply;
pub mod build;
pub mod bundle;
pub mod cert;
pub mod check;
pub mod cluster;
pub mod delete;
pub mod exec;
pub mod fetch;
pub mod images;
pub mod iso;
pub mod join;
pub mod key;
pub mod progress;
pub mod registry;
pub mod reset;
pub mod run;
pub mod status;
pub mod upgrade;
pub mod wizard;

use std::process::ExitCode;

use crate::cli::Command;
use crate::printer::Printer;
use crate::settings::{OutputFormat, Settings};

/// Bad input from the user: exit code 2 instead of 1. The message must name the
/// file, line, field or host at fault and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Wrap any error as [`BadInput`], keeping its message.
pub fn bad_input(err: impl std::fmt::Display) -> anyhow::Error {
    BadInput(err.to_string()).into()
}

/// Run one verb.
pub async fn dispatch(
    command: Command,
    settings: Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    match command {
        Command::Build(args) => build::run(args, &settings, printer).await,
        Command::Images(args) => images::images(args, &settings, printer).await,
        Command::Inspect(args) => images::inspect(args, &settings, printer).await,
        Command::Tag(args) => images::tag(args, &settings, printer).await,
        Command::Rmi(args) => images::rmi(args, &settings, printer).await,
        Command::Prune(args) => images::prune(args, &settings, printer).await,
        Command::Save(args) => images::save(args, &settings, printer).await,
        Command::Load(args) => images::load(args, &settings, printer).await,
        Command::Bundle(args) => bundle::run(args, &settings, printer).await,
        Command::Iso(args) => iso::run(args, &settings, printer).await,
        Command::Key(cmd) => key::run(cmd, &settings, printer).await,
        Command::Run(args) => run::run(args, &settings, printer).await,
        Command::Apply(args) => apply::run(args, &settings, printer).await,
        Command::Join(args) => join::run(args, &settings, printer).await,
        Command::Delete(args) => delete::run(args, &settings, printer).await,
        Command::Reset(args) => reset::run(args, &settings, printer).await,
        Command::Check(args) => check::run(args, &settings, printer).await,
        Command::Exec(args) => exec::run(args, &settings, printer).await,
        Command::Status(args) => status::run(args, &settings, printer).await,
        Command::Cluster(cmd) => fetch::run(cmd, &settings, printer).await,
        Command::Push(args) => registry::push(args, &settings, printer).await,
        Command::Pull(args) => registry::pull(args, &settings, printer).await,
        Command::Login(args) => registry::login(args, &settings, printer).await,
        Command::Logout(args) => registry::logout(args, &settings, printer).await,
        Command::Registry(cmd) => registry::run(cmd, &settings, printer).await,
        Command::Cert(cmd) => cert::run(cmd, &settings, printer).await,
        Command::Upgrade(args) => upgrade::run(args, &settings, printer).await,
        Command::Agent(cmd) => agent::run(cmd, &settings, printer).await,
    }
}

/// 0 on success, 2 for [`BadInput`] anywhere in the chain, 1 otherwise.
pub fn exit_code(result: anyhow::Result<()>, printer: Printer) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            printer.error(&err);
            if err.chain().any(|e| e.is::<BadInput>()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// `-o/--output` of the read commands.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct OutputArgs {
    /// Output format: text for people, json for programs.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

impl OutputArgs {
    /// Whether JSON was asked for.
    pub fn is_json(self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// Flags shared by every command that reads from registries.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RegistryArgs {
    /// Fetch DOMAIN/... references from URL instead (repeatable), e.g. docker.io=http://127.0.0.1:5000.
    #[arg(long = "registry-mirror", value_name = "DOMAIN=URL")]
    pub registry_mirror: Vec<String>,
    /// Allow plain HTTP or unverified TLS for HOST[:PORT] (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// Trust the CA certificates in FILE (PEM) for registries (repeatable).
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub ca_cert: Vec<std::path::PathBuf>,
}
