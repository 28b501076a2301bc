//! The command line: flags parsed by clap, then dispatched to one function per verb.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;
use crate::printer::Printer;
use crate::settings::{Env, Settings};

/// airlock builds, ships and runs whole clusters offline.
#[derive(Debug, Parser)]
#[command(name = "airlock", version, about, propagate_version = true)]
pub struct Cli {
    /// Local image store (default: ~/.local/share/airlock; env AIRLOCK_ROOT).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// More log detail (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a cluster image from a Kubefile.
    Build(commands::build::BuildArgs),
    /// List the images in the local store.
    Images(commands::images::ImagesArgs),
    /// Show an image's metadata and contents.
    Inspect(commands::images::InspectArgs),
    /// Give an image another name.
    Tag(commands::images::TagArgs),
    /// Remove images from the local store.
    Rmi(commands::images::RmiArgs),
    /// Delete blobs that no image in the store uses.
    Prune(commands::images::PruneArgs),
    /// Write images to an OCI archive.
    Save(commands::images::SaveArgs),
    /// Read images from an OCI archive.
    Load(commands::images::LoadArgs),
    /// Write a self-extracting installer for an image.
    Bundle(commands::bundle::BundleArgs),
    /// Write an ISO image holding a bundle, its checksum, a README and a Clusterfile template.
    Iso(commands::iso::IsoArgs),
    /// Signing keys for bundles.
    #[command(subcommand)]
    Key(commands::key::KeyCommand),
    /// Install a cluster image onto the hosts of a Clusterfile.
    Run(commands::run::RunArgs),
    /// Converge a cluster to a Clusterfile: create, scale up and down.
    Apply(commands::apply::ApplyArgs),
    /// Add masters or nodes to a cluster.
    Join(commands::join::JoinArgs),
    /// Remove hosts from a cluster, or the whole cluster (--all).
    Delete(commands::delete::DeleteArgs),
    /// Remove everything airlock put on hosts, even after a failed install.
    Reset(commands::reset::ResetArgs),
    /// Check hosts: --pre (read-only, before an install) or --post (health).
    Check(commands::check::CheckArgs),
    /// Run a command on the cluster's hosts.
    Exec(commands::exec::ExecArgs),
    /// Show what airlock knows about a cluster.
    Status(commands::status::StatusArgs),
    /// A cluster's record on this machine: fetch it from the cluster's first master.
    #[command(subcommand)]
    Cluster(commands::fetch::ClusterCommand),
    /// Push a cluster image to a registry (blobs it has are skipped).
    Push(commands::registry::PushArgs),
    /// Pull a cluster image from a registry into the local store.
    Pull(commands::registry::PullArgs),
    /// Save credentials for a registry (shared with ~/.docker/config.json).
    Login(commands::registry::LoginArgs),
    /// Remove the saved credentials of a registry.
    Logout(commands::registry::LogoutArgs),
    /// The embedded OCI registry.
    #[command(subcommand)]
    Registry(commands::registry::RegistryCommand),
    /// The cluster PKI: generate it, check when it expires, renew it on a cluster.
    #[command(subcommand)]
    Cert(commands::cert::CertCommand),
    /// Upgrade a Kubernetes cluster to a newer cluster image.
    Upgrade(commands::upgrade::UpgradeArgs),
    /// Node-side helpers that airlock runs on hosts (not for direct use).
    #[command(subcommand, hide = true)]
    Agent(commands::agent::AgentCommand),
}

/// Parse, resolve settings, run, and map the outcome to an exit code.
pub fn main() -> ExitCode {
    let env = Env::from_process();
    if let Some(code) = commands::bundle::run_if_bundle(&env) {
        return code;
    }
    let cli = Cli::parse();
    let settings = Settings::resolve(cli.root.clone(), cli.verbose, &env);
    init_tracing(&env, cli.verbose);
    let printer = Printer { quiet: false };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&anyhow::Error::new(e).context("cannot start the async runtime"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(commands::dispatch(cli.command, settings, printer));
    commands::exit_code(result, printer)
}

/// Logs go to stderr, filtered by `AIRLOCK_LOG` or `-v`.
pub fn init_tracing(env: &Env, verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,airlock=debug",
        _ => "debug",
    };
    let filter = env
        .get(crate::settings::env_vars::AIRLOCK_LOG)
        .unwrap_or(default)
        .to_string();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
