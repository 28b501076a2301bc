//! `airlock status`: what airlock knows about a cluster, from this machine's journal.
//!
//! 1. Find the cluster (`--cluster NAME`, or the only one recorded).
//! 2. Print its image, how the last operation ended and each host with its roles and
//!    step states; `-o json` prints the journal itself.

use super::cluster;
use crate::install::journal::{self, Journal, Outcome};
use crate::printer::Printer;
use crate::settings::Settings;

/// Flags of `airlock status`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example: airlock status -o json")]
pub struct StatusArgs {
    /// The cluster, when several are recorded.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Output format.
    #[command(flatten)]
    pub format: super::OutputArgs,
}

/// Show the cluster's state.
pub async fn run(args: StatusArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let name = cluster::cluster_name(settings, args.cluster.as_deref())?;
    let dir = journal::cluster_dir(&settings.root, &name);
    let j = Journal::load(&dir)?.ok_or_else(|| {
        super::bad_input(format!(
            "cluster {name} has no journal in {}",
            dir.display()
        ))
    })?;
    if args.format.is_json() {
        printer.json(&j);
        return Ok(());
    }
    let outcome = match &j.outcome {
        Outcome::Installed => "installed".to_string(),
        Outcome::Running => "not finished (re-run the same command to resume)".to_string(),
        Outcome::Failed { host, step, reason } => {
            format!("failed at step {step} on {host}: {reason}")
        }
    };
    printer.result(format!("cluster {}: {outcome}", j.cluster));
    printer.result(format!("image {} ({})", j.image, j.image_digest));
    for (ip, host) in &j.hosts {
        let done = host
            .steps
            .values()
            .filter(|s| *s == "done" || *s == "skipped")
            .count();
        let failed: Vec<&str> = host
            .steps
            .iter()
            .filter(|(_, s)| s.starts_with("failed"))
            .map(|(k, _)| k.as_str())
            .collect();
        printer.result(format!(
            "{ip} [{}] {done}/{} steps done{}",
            host.roles.join(","),
            host.steps.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(", failed: {}", failed.join(", "))
            }
        ));
    }
    Ok(())
}
