//! `airlock check --pre` (read-only checks before an install) and `--post` (health).
//!
//! 1. Take the Clusterfile (`-f`, or the one kept for the cluster).
//! 2. `--pre`: connect and run [`crate::preflight::run`] on every host (nothing is
//!    changed); print each finding that is not a pass, with its fix.
//! 3. `--post`: run the runtime's check script recorded on each host
//!    (`installer/runtime-action.sh DATA_ROOT check`), in parallel.
//! 4. Exit 1 when anything failed, naming the hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::cluster;
use crate::install::connect::target_for;
use crate::preflight::{self, Requirements, Status};
use crate::printer::Printer;
use crate::remote::known_hosts::KnownHosts;
use crate::remote::ssh::SshRemote;
use crate::remote::{Remote, RemoteCommand};
use crate::settings::Settings;

const RUNTIME_ACTION: &str = include_str!("../../installer/runtime-action.sh");

/// Flags of `airlock check`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  airlock check --pre -f Clusterfile\n  airlock check --post")]
pub struct CheckArgs {
    /// Read-only checks before an install.
    #[arg(long, conflicts_with = "post")]
    pub pre: bool,
    /// The runtime's health check on every host (the default).
    #[arg(long)]
    pub post: bool,
    /// The Clusterfile (default: the one kept for the cluster).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The cluster, when several are recorded.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Output format.
    #[command(flatten)]
    pub format: super::OutputArgs,
}

/// Check the hosts.
pub async fn run(args: CheckArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let cf =
        cluster::clusterfile_or_stored(args.file.as_deref(), args.cluster.as_deref(), settings)?;
    let spec = cluster::resolve(&cf, settings)?;
    if args.pre {
        return pre(&spec, &args, settings, printer).await;
    }
    let remotes = super::run::connect_all(&spec, settings, printer).await?;
    let root = spec.data_root.clone();
    let runs = spec.hosts.iter().map(|h| {
        let remote = remotes[&h.ip].clone();
        let cmd = RemoteCommand::script(RUNTIME_ACTION, [root.as_str(), "check"]).sudo();
        async move { (h.ip, remote.run(&cmd).await) }
    });
    let mut failed = Vec::new();
    let mut results = BTreeMap::new();
    for (ip, result) in futures_util::future::join_all(runs).await {
        let (ok, text) = match result {
            Ok(out) => (
                out.success(),
                format!("{}{}", out.stdout_text(), out.stderr_tail(5)),
            ),
            Err(e) => (false, e.to_string()),
        };
        if !ok {
            failed.push(ip.to_string());
        }
        results.insert(
            ip,
            serde_json::json!({"healthy": ok, "output": text.trim()}),
        );
        if !args.format.is_json() {
            let mark = if ok { "healthy" } else { "UNHEALTHY" };
            printer.result(format!("{ip}: {mark}"));
            for line in text.lines() {
                printer.status(format!("{ip}| {line}"));
            }
        }
    }
    if args.format.is_json() {
        printer.json(&results);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("the runtime's check failed on {}", failed.join(", "))
    }
}

/// What the cluster's image asks of the hosts, if the image is in the local store;
/// otherwise the strictest (Kubernetes) requirements.
fn requirements(
    spec: &crate::spec::clusterfile::ClusterSpec,
    settings: &Settings,
    printer: Printer,
) -> Requirements {
    let plan = cluster::store_source(settings, &spec.image).and_then(|from| {
        crate::install::ImagePlan::read(from.source.as_ref(), &from.image).map_err(Into::into)
    });
    match plan {
        Ok(plan) => Requirements::for_image(&plan.config, plan.payload_bytes()),
        Err(e) => {
            printer.status(format!(
                "image {} is not readable here ({e:#}): judging the hosts as for Kubernetes",
                spec.image
            ));
            Requirements::default()
        }
    }
}

async fn pre(
    spec: &crate::spec::clusterfile::ClusterSpec,
    args: &CheckArgs,
    settings: &Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    let known_hosts = KnownHosts::new(settings.root.join("known_hosts"));
    let connects = spec.hosts.iter().map(|host| {
        let known_hosts = &known_hosts;
        async move {
            let remote = SshRemote::connect(target_for(host), known_hosts)
                .await
                .map(|r| Arc::new(r) as Arc<dyn Remote>);
            (host.ip, remote)
        }
    });
    let targets: preflight::Targets = futures_util::future::join_all(connects)
        .await
        .into_iter()
        .collect();
    let req = requirements(spec, settings, printer);
    let report = preflight::run(spec, &req, &targets, &BTreeSet::new(), &|_| {}).await;
    if args.format.is_json() {
        printer.json(&report.findings);
    } else {
        for f in &report.findings {
            match f.status {
                Status::Pass => {}
                Status::Skipped => {}
                Status::Fail | Status::Warn => printer.result(f.line()),
            }
        }
    }
    if report.is_ok() {
        printer.status(format!("{} hosts passed the checks", spec.hosts.len()));
        Ok(())
    } else {
        anyhow::bail!("some checks failed (see above); nothing was changed")
    }
}
