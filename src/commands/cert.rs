//! `airlock cert ...`: the cluster PKI.
//!
//! 1. `cert gen` turns its flags into [`PkiOptions`] (reading `--ca-cert/--ca-key`
//!    when given), generates the PKI off the async threads (RSA key generation is
//!    CPU work) and writes kubeadm's layout into `--out`.
//! 2. `cert check` reads every certificate of a layout and prints when each one
//!    expires, as a table or as JSON: a local directory (`--dir`), or by default every
//!    master of the recorded cluster, over SSH (`installer/kubernetes/certs-dump.sh`
//!    sends the certificates only, never a key).
//! 3. `cert renew` re-issues the cluster's certificates from its CAs on every master.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use time::OffsetDateTime;

use crate::commands::{OutputArgs, bad_input};
use crate::printer::Printer;
use crate::remote::Remote;
use crate::runtime::kubernetes::pki::{
    self, AdminIdentity, CertificateStatus, ExistingCa, KeyAlgorithm, Node, PkiOptions,
};
use crate::settings::Settings;

/// `airlock cert` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Generate a cluster PKI (CAs, certificates, SA keys, kubeconfigs) in kubeadm's layout.
    Gen(Box<GenArgs>),
    /// Print when every certificate of a kubeadm layout expires.
    Check(CheckArgs),
    /// Re-issue every certificate of an installed cluster from its CAs (kept) and put
    /// them on every master, restarting the control plane; `--alt-names` adds SANs to
    /// the API server certificate.
    Renew(RenewArgs),
}

/// Flags of `airlock cert renew`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  airlock cert renew --yes\n  airlock cert renew --alt-names k8s.example.com,10.0.0.9 --yes"
)]
pub struct RenewArgs {
    /// Extra SANs for the API server certificate, comma-separated IPs or DNS names
    /// (kept for later renewals).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub alt_names: Vec<String>,
    /// The cluster (default: the only one recorded on this machine).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Read the cluster from this Clusterfile instead of the recorded one.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// Flags of `airlock cert gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Directory to write into (its `pki/` must not exist yet).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A control-plane host, `NAME=IP` or `IP` (repeatable; the first runs kubeadm init).
    #[arg(long = "master", value_name = "[NAME=]IP", required = true)]
    pub masters: Vec<String>,
    /// A worker, `NAME=IP` or `IP` (repeatable): gets a kubelet.conf.
    #[arg(long = "node", value_name = "[NAME=]IP")]
    pub nodes: Vec<String>,
    /// Extra SANs for the API server certificate, comma-separated IPs or DNS names.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub alt_names: Vec<String>,
    /// The virtual IP of the API servers, added to the API server SANs.
    #[arg(long, value_name = "IP")]
    pub vip: Option<IpAddr>,
    /// The service CIDR; its first address is added to the API server SANs.
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    /// The cluster DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    pub dns_domain: String,
    /// HOST:PORT that admin.conf, super-admin.conf and kubelet.conf point at.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "apiserver.cluster.local:6443"
    )]
    pub endpoint: String,
    /// The port every API server listens on (controller-manager.conf, scheduler.conf).
    #[arg(long, value_name = "PORT", default_value_t = 6443)]
    pub api_port: u16,
    /// Key algorithm: rsa (RSA-2048) or ecdsa (P-256).
    #[arg(long, value_name = "ALG", default_value = "rsa")]
    pub key_algorithm: String,
    /// The Kubernetes version, e.g. v1.28.4: before 1.29 admin.conf is in
    /// system:masters and there is no super-admin.conf.
    #[arg(long, value_name = "VERSION")]
    pub kubernetes_version: Option<String>,
    /// Use this cluster CA certificate instead of making one (needs --ca-key).
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The private key of --ca-cert (PKCS#8 or PKCS#1 PEM).
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
}

/// Flags of `airlock cert check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// A local layout to read (e.g. a `cert gen --out` directory); without it, every
    /// master of the cluster is read over SSH.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The cluster (default: the only one recorded on this machine).
    #[arg(long, value_name = "NAME", conflicts_with = "dir")]
    pub cluster: Option<String>,
    /// Read the cluster from this Clusterfile instead of the recorded one.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "dir"
    )]
    pub file: Option<PathBuf>,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Run a `cert` subcommand.
pub async fn run(cmd: CertCommand, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Gen(args) => generate(*args, printer).await,
        CertCommand::Check(args) => match &args.dir {
            Some(dir) => check(dir, &args, printer),
            None => check_cluster(&args, settings, printer).await,
        },
        CertCommand::Renew(args) => renew(args, settings, printer).await,
    }
}

/// Renew the PKI kept for the cluster, then on each master (one at a time) stage the
/// new files and run `kube.sh renew`.
async fn renew(args: RenewArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    use crate::commands::cluster;
    use crate::install::journal;
    use crate::runtime::kubernetes::runtime::{load_pki, renew_pki};
    use crate::runtime::kubernetes::scale::{master_pki_state, pki_fingerprint};

    for name in &args.alt_names {
        if name.trim().is_empty() {
            return Err(bad_input("--alt-names: an empty name"));
        }
    }
    let cf =
        cluster::clusterfile_or_stored(args.file.as_deref(), args.cluster.as_deref(), settings)?;
    let spec = cluster::resolve(&cf, settings)?;
    let state = journal::cluster_dir(&settings.root, &spec.name).join("kubernetes");
    if !state.join("pki-files/pki/ca.crt").is_file() {
        return Err(bad_input(format!(
            "cluster {}: no PKI under {} (is it a Kubernetes cluster installed from this machine?)",
            spec.name,
            state.display()
        )));
    }
    let masters = spec.master_ips();
    let remotes = super::run::connect_all(&spec, settings, printer).await?;
    let root = spec.data_root.as_str();
    // A renewal that stopped part way (a master still runs on the PKI before the
    // current one) is finished, not started again: the masters already renewed keep
    // their certificates. New alt names always mean a new issue.
    if args.alt_names.is_empty() {
        let current = load_pki(&state).with_context(|| format!("reading {}", state.display()))?;
        let fingerprint = pki_fingerprint(&current);
        let mut behind = Vec::new();
        for ip in &masters {
            let remote = remotes
                .get(ip)
                .with_context(|| format!("{ip}: not connected"))?;
            let on = master_pki_state(remote.as_ref(), root)
                .await
                .with_context(|| format!("{ip}: reading which PKI it runs on"))?;
            if on.is_stale(&fingerprint) {
                behind.push(*ip);
            }
        }
        if !behind.is_empty() {
            cluster::confirm(
                args.yes,
                &format!(
                    "finish the renewal of cluster {}'s certificates on {} (restarting their control planes)",
                    spec.name,
                    cluster::ips_text(behind.iter().copied())
                ),
            )?;
            apply_to(&spec, &remotes, &current, &behind, printer).await?;
            printer.result(format!(
                "finished the renewal of the certificates of {} on {}",
                spec.name,
                cluster::ips_text(behind.iter().copied())
            ));
            return Ok(());
        }
    }
    let what = if args.alt_names.is_empty() {
        format!(
            "re-issue the certificates of cluster {} and restart its control plane",
            spec.name
        )
    } else {
        format!(
            "re-issue the certificates of cluster {} with the API server names {} and restart its control plane",
            spec.name,
            args.alt_names.join(", ")
        )
    };
    cluster::confirm(args.yes, &what)?;
    let now = OffsetDateTime::now_utc();
    let (dir, ips, names) = (state.clone(), masters.clone(), args.alt_names.clone());
    let pki = tokio::task::spawn_blocking(move || renew_pki(&dir, &ips, &names, now))
        .await
        .context("the PKI generator stopped")?
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| format!("renewing the PKI under {}", state.display()))?;
    printer.status(format!("re-issued the PKI under {}", state.display()));
    apply_to(&spec, &remotes, &pki, &masters, printer).await?;
    printer.result(format!(
        "renewed the certificates of {} on {} master(s)",
        spec.name,
        masters.len()
    ));
    Ok(())
}

/// Put `pki` on each of `masters`, one at a time, restarting its control plane.
async fn apply_to(
    spec: &crate::spec::clusterfile::ClusterSpec,
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
    pki: &BTreeMap<String, (String, bool)>,
    masters: &[IpAddr],
    printer: Printer,
) -> anyhow::Result<()> {
    use crate::runtime::kubernetes::runtime::restart_wait;
    use crate::runtime::kubernetes::scale::apply_pki;
    let first = spec.first_master().ip;
    let wait = restart_wait(spec);
    for ip in masters {
        let remote = remotes
            .get(ip)
            .with_context(|| format!("{ip}: not connected"))?;
        let out = apply_pki(remote.as_ref(), pki, first, *ip, &spec.data_root, &wait)
            .await
            .with_context(|| {
                format!("{ip}: renewing the certificates (run the same command again: it finishes the renewal)")
            })?;
        for line in out.stdout_text().lines() {
            printer.status(format!("{ip}| {line}"));
        }
        printer.status(format!("{ip}: certificates renewed"));
    }
    Ok(())
}

async fn generate(args: GenArgs, printer: Printer) -> anyhow::Result<()> {
    let options = options(&args)?;
    let out = args.out.clone();
    printer.status(format!(
        "generating the cluster PKI for {} master(s) and {} worker(s)",
        options.masters.len(),
        options.workers.len()
    ));
    let now = OffsetDateTime::now_utc();
    let pki = tokio::task::spawn_blocking(move || pki::generate(&options, now))
        .await
        .context("the PKI generator stopped")?
        .map_err(bad_input_if_options)?;
    pki.write_to(&out)
        .map_err(bad_input_if_options)
        .with_context(|| format!("writing the PKI into {}", out.display()))?;
    printer.status(format!("wrote {} files", pki.files.len()));
    printer.result(out.display().to_string());
    Ok(())
}

/// Errors that come from what the user gave exit 2; the rest exit 1.
fn bad_input_if_options(err: pki::PkiError) -> anyhow::Error {
    use pki::PkiError as E;
    match err {
        E::NoMasters
        | E::InvalidNode(_)
        | E::InvalidNodeName(_)
        | E::DuplicateNode(_)
        | E::InvalidAltName(_)
        | E::InvalidServiceCidr { .. }
        | E::InvalidKeyAlgorithm(_)
        | E::BadCaCert(_)
        | E::BadCaKey(_)
        | E::CaKeyMismatch
        | E::Exists(_) => bad_input(err),
        other => other.into(),
    }
}

fn options(args: &GenArgs) -> anyhow::Result<PkiOptions> {
    let nodes = |values: &[String], flag: &str| -> anyhow::Result<Vec<Node>> {
        values
            .iter()
            .map(|v| {
                v.parse::<Node>()
                    .map_err(|e| bad_input(format!("--{flag} {v}: {e}")))
            })
            .collect()
    };
    let mut options = PkiOptions::new(nodes(&args.masters, "master")?);
    options.workers = nodes(&args.nodes, "node")?;
    options.vip = args.vip;
    options.alt_names.clone_from(&args.alt_names);
    options.service_cidr.clone_from(&args.service_cidr);
    options.dns_domain.clone_from(&args.dns_domain);
    options.control_plane_endpoint.clone_from(&args.endpoint);
    options.api_port = args.api_port;
    options.key_algorithm = args
        .key_algorithm
        .parse::<KeyAlgorithm>()
        .map_err(|e| bad_input(format!("--key-algorithm: {e}")))?;
    if let Some(version) = &args.kubernetes_version {
        let (major, minor) = parse_version(version).ok_or_else(|| {
            bad_input(format!(
                "--kubernetes-version {version}: write it as v1.29.3 or 1.29"
            ))
        })?;
        options.admin_identity = AdminIdentity::for_version(major, minor);
    }
    if let (Some(cert), Some(key)) = (&args.ca_cert, &args.ca_key) {
        let read = |path: &PathBuf, flag: &str| {
            fs_err::read_to_string(path).map_err(|e| bad_input(format!("--{flag}: {e}")))
        };
        options.ca = Some(ExistingCa {
            cert_pem: read(cert, "ca-cert")?,
            key_pem: read(key, "ca-key")?,
        });
    }
    Ok(options)
}

/// `v1.29.3`, `1.29` -> (1, 29).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn check(dir: &std::path::Path, args: &CheckArgs, printer: Printer) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(bad_input(format!(
            "--dir {}: not a directory",
            dir.display()
        )));
    }
    let found = pki::inspect_dir(dir, OffsetDateTime::now_utc())
        .with_context(|| format!("reading the certificates under {}", dir.display()))?;
    if found.is_empty() {
        return Err(bad_input(format!(
            "no certificates (*.crt, *.conf) under {}",
            dir.display()
        )));
    }
    if args.output.is_json() {
        printer.json(&found);
    } else {
        for line in table(&found) {
            printer.result(line);
        }
    }
    Ok(())
}

const CERTS_DUMP: &str = include_str!("../../installer/kubernetes/certs-dump.sh");

/// Every master's certificates, read over SSH, one table per master.
async fn check_cluster(
    args: &CheckArgs,
    settings: &Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    use crate::commands::cluster;
    use crate::remote::RemoteCommand;
    let cf =
        cluster::clusterfile_or_stored(args.file.as_deref(), args.cluster.as_deref(), settings)?;
    let mut spec = cluster::resolve(&cf, settings)?;
    spec.hosts.retain(|h| h.is_master());
    let remotes = super::run::connect_all(&spec, settings, printer).await?;
    let now = OffsetDateTime::now_utc();
    let mut all = std::collections::BTreeMap::new();
    for host in &spec.hosts {
        let cmd = RemoteCommand::script(CERTS_DUMP, ["/etc/kubernetes"]).sudo();
        let out = remotes[&host.ip]
            .check(&cmd)
            .await
            .with_context(|| format!("{}: reading /etc/kubernetes", host.ip))?;
        let dir = tempfile::tempdir()?;
        write_dump(dir.path(), &out.stdout_text())?;
        let found = pki::inspect_dir(dir.path(), now)
            .with_context(|| format!("{}: the certificates under /etc/kubernetes", host.ip))?;
        all.insert(host.ip, found);
    }
    if args.output.is_json() {
        printer.json(&all);
        return Ok(());
    }
    for (ip, found) in &all {
        printer.result(format!("master {ip}:"));
        if found.is_empty() {
            printer.result("  no certificates under /etc/kubernetes");
        }
        for line in table(found) {
            printer.result(format!("  {line}"));
        }
    }
    Ok(())
}

/// Lay out what `certs-dump.sh` printed under `dir`: each `*.crt` as it was, each
/// kubeconfig as a minimal one holding only its client certificate.
fn write_dump(dir: &std::path::Path, dump: &str) -> anyhow::Result<()> {
    for section in dump.split("=== ").filter(|s| !s.trim().is_empty()) {
        let (name, body) = section.split_once('\n').unwrap_or((section, ""));
        let name = name.trim().trim_start_matches("./");
        if name.split('/').any(|c| c == ".." || c.is_empty()) {
            anyhow::bail!("the host listed a certificate at {name:?}");
        }
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        if name.ends_with(".conf") {
            let Some(data) = body
                .lines()
                .find_map(|l| l.trim().strip_prefix("client-certificate-data:"))
            else {
                continue;
            };
            let yaml = format!(
                "apiVersion: v1\nkind: Config\nusers:\n- name: {name}\n  user:\n    client-certificate-data: {}\n",
                data.trim()
            );
            fs_err::write(&path, yaml)?;
        } else {
            fs_err::write(&path, body)?;
        }
    }
    Ok(())
}

fn table(found: &[CertificateStatus]) -> Vec<String> {
    let widest = |header: &str, values: &mut dyn Iterator<Item = usize>| {
        values.max().unwrap_or(0).max(header.len())
    };
    let width = widest("CERTIFICATE", &mut found.iter().map(|c| c.path.len()));
    let cn_width = widest("SUBJECT", &mut found.iter().map(|c| c.common_name.len()));
    let issuer_width = widest(
        "(self-signed CA)",
        &mut found.iter().map(|c| c.issuer.len()),
    );
    let mut lines = vec![format!(
        "{:width$}  {:cn_width$}  {:issuer_width$}  {:20}  RESIDUAL",
        "CERTIFICATE", "SUBJECT", "ISSUER", "EXPIRES"
    )];
    for c in found {
        let residual = if c.days_left < 0 {
            "expired".to_string()
        } else if c.days_left >= 365 {
            format!("{}y", c.days_left / 365)
        } else {
            format!("{}d", c.days_left)
        };
        let issuer = if c.is_ca && c.issuer == c.common_name {
            "(self-signed CA)"
        } else {
            c.issuer.as_str()
        };
        lines.push(format!(
            "{:width$}  {:cn_width$}  {:issuer_width$}  {:20}  {residual}",
            c.path, c.common_name, issuer, c.not_after
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("v1.29.3"), Some((1, 29)));
        assert_eq!(parse_version("1.28"), Some((1, 28)));
        assert_eq!(parse_version("latest"), None);
    }
}
