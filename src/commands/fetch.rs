//! `airlock cluster fetch --host IP -u USER`: manage a cluster from another operator
//! machine, by reading the state the cluster keeps on its first master.
//!
//! 1. Connect to the first master with the given credentials (`--pk`, `--passwd-env`
//!    or `--passwd-file`; never a password on the command line).
//! 2. Read `<data root>/cluster/Clusterfile` (no secrets) and `state.json` (the journal)
//!    from it; both are checked (a journal of another version is refused).
//! 3. Write them under `<store>/clusters/<name>/` (refusing to replace a cluster already
//!    recorded here without `--force`). The credentials given replace the Clusterfile's
//!    cluster-level ones, so `status`, `apply`, `join`, `delete` work from here on.

use std::path::PathBuf;

use super::{bad_input, cluster, run::connect_all};
use crate::install::journal::{self, Journal};
use crate::printer::Printer;
use crate::remote::RemoteCommand;
use crate::settings::Settings;
use crate::spec::clusterfile::{Clusterfile, DEFAULT_DATA_ROOT, Port};

/// `airlock cluster ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Rebuild this machine's record of a cluster from its first master.
    Fetch(FetchArgs),
}

/// Flags of `airlock cluster fetch`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: airlock cluster fetch --host 198.18.0.2 -u root --pk ~/.ssh/id_ed25519"
)]
pub struct FetchArgs {
    /// The cluster's first master.
    #[arg(long)]
    pub host: std::net::IpAddr,
    /// Login user.
    #[arg(short = 'u', long, default_value = "root")]
    pub user: String,
    /// SSH port.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// Private key file.
    #[arg(long, value_name = "FILE")]
    pub pk: Option<PathBuf>,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub passwd_env: Option<String>,
    /// Read the password from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub passwd_file: Option<PathBuf>,
    /// airlock's data root on the hosts.
    #[arg(long, default_value = DEFAULT_DATA_ROOT)]
    pub data_root: String,
    /// Replace the record of a cluster of the same name on this machine.
    #[arg(long)]
    pub force: bool,
}

/// Run a `cluster` subcommand.
pub async fn run(cmd: ClusterCommand, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Fetch(args) => fetch(args, settings, printer).await,
    }
}

async fn fetch(args: FetchArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let ssh = serde_json::json!({
        "user": args.user,
        "port": args.port,
        "pk": args.pk,
        "passwdEnv": args.passwd_env,
        "passwdFile": args.passwd_file,
    });
    let ssh: serde_json::Map<String, serde_json::Value> = ssh
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // JSON is YAML: a one-host Clusterfile, resolved like any other.
    let probe = serde_json::json!({
        "apiVersion": "sealer.io/v2",
        "kind": "Cluster",
        "spec": {
            "ssh": ssh,
            "dataRoot": args.data_root,
            "hosts": [{"ips": [args.host.to_string()], "roles": ["master"]}],
        },
    });
    let probe = Clusterfile::parse("command line", &probe.to_string()).map_err(bad_input)?;
    let spec = cluster::resolve(&probe, settings)?;
    let remotes = connect_all(&spec, settings, printer).await?;
    let remote = &remotes[&args.host];
    let (host, data_root) = (args.host, args.data_root.as_str());
    let read = |name: &'static str| {
        let path = format!("{data_root}/cluster/{name}");
        let remote = remote.clone();
        async move {
            let out = remote
                .run(&RemoteCommand::new("cat").arg(path.as_str()).sudo())
                .await?;
            if !out.success() {
                return Err(bad_input(format!(
                    "{host}: no {path} ({}); is it the first master of a cluster airlock installed, with data root {data_root}?",
                    out.stderr_tail(1).trim(),
                )));
            }
            anyhow::Ok(out.stdout)
        }
    };
    let cf_bytes = read(journal::CLUSTERFILE).await?;
    let state = read(cluster::STATE_FILE).await?;
    let mut cf = Clusterfile::parse(
        &format!("{}:{}/cluster/Clusterfile", args.host, args.data_root),
        &String::from_utf8_lossy(&cf_bytes),
    )
    .map_err(bad_input)?;
    let j = Journal::from_json(&state).map_err(|e| {
        bad_input(format!(
            "{}:{}/cluster/{}: {e}",
            args.host,
            args.data_root,
            cluster::STATE_FILE
        ))
    })?;
    if args.pk.is_some() || args.passwd_env.is_some() || args.passwd_file.is_some() {
        let s = &mut cf.cluster.spec.ssh;
        s.user = Some(args.user.clone());
        s.port = Some(Port(args.port));
        s.pk.clone_from(&args.pk);
        s.passwd_env.clone_from(&args.passwd_env);
        s.passwd_file.clone_from(&args.passwd_file);
    }
    let dir = journal::cluster_dir(&settings.root, &j.cluster);
    if dir.join(journal::JOURNAL_FILE).exists() && !args.force {
        return Err(bad_input(format!(
            "cluster {} is already recorded in {}; pass --force to replace that record",
            j.cluster,
            dir.display()
        )));
    }
    journal::write_atomic(
        &dir.join(journal::CLUSTERFILE),
        cf.to_yaml_without_secrets().as_bytes(),
    )?;
    journal::write_atomic(&dir.join(journal::JOURNAL_FILE), &j.to_json())?;
    printer.result(format!(
        "fetched cluster {} ({} hosts, image {}) from {}; see `airlock status`",
        j.cluster,
        j.hosts.len(),
        j.image,
        args.host
    ));
    Ok(())
}
