//! `airlock exec [--roles master] -- CMD...`: run a command on the cluster's hosts.
//!
//! 1. Take the Clusterfile (`-f`, or the one kept for the cluster) and keep the hosts
//!    that have one of `--roles` (every host without it).
//! 2. Run CMD as root on each, in parallel, and print each host's output as
//!    `HOST| line`; the exit code is 1 if it failed anywhere, naming the hosts.

use std::path::PathBuf;

use super::cluster;
use super::run::connect_all;
use crate::printer::Printer;
use crate::remote::RemoteCommand;
use crate::settings::Settings;

/// Flags of `airlock exec`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example: airlock exec --roles master -- systemctl is-active etcd")]
pub struct ExecArgs {
    /// Only hosts with one of these roles (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// The Clusterfile (default: the one kept for the cluster).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The cluster, when several are recorded.
    #[arg(long)]
    pub cluster: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Run a command on hosts.
pub async fn run(args: ExecArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let cf =
        cluster::clusterfile_or_stored(args.file.as_deref(), args.cluster.as_deref(), settings)?;
    let mut spec = cluster::resolve(&cf, settings)?;
    if !args.roles.is_empty() {
        spec.hosts
            .retain(|h| args.roles.iter().any(|r| h.roles.contains(r.trim())));
    }
    if spec.hosts.is_empty() {
        return Err(super::bad_input(format!(
            "no host has the roles {}",
            args.roles.join(", ")
        )));
    }
    let remotes = connect_all(&spec, settings, printer).await?;
    let cmd = RemoteCommand::new(&args.command[0])
        .args(args.command[1..].iter().cloned())
        .sudo();
    let runs = spec.hosts.iter().map(|h| {
        let remote = remotes[&h.ip].clone();
        let cmd = cmd.clone();
        async move { (h.ip, remote.run(&cmd).await) }
    });
    let mut failed = Vec::new();
    for (ip, result) in futures_util::future::join_all(runs).await {
        match result {
            Ok(out) => {
                for line in out.stdout_text().lines() {
                    printer.result(format!("{ip}| {line}"));
                }
                for line in String::from_utf8_lossy(&out.stderr).lines() {
                    printer.status(format!("{ip}| {line}"));
                }
                if !out.success() {
                    failed.push(format!("{ip} (exit {})", out.status));
                }
            }
            Err(e) => failed.push(format!("{ip}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "`{}` failed on {}",
            args.command.join(" "),
            failed.join(", ")
        )
    }
}
