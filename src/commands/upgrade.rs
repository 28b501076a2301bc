//! `airlock upgrade IMAGE`: move a Kubernetes cluster to a newer cluster image.
//!
//! 1. Read the recorded Clusterfile (or `-f`), point it at IMAGE, and check that IMAGE
//!    is a Kubernetes image with a version that kubeadm can upgrade to from the
//!    cluster's current one (same major, at most the next minor, never back), and
//!    whose kubeadm configuration merges with the Clusterfile's.
//! 2. Converge the hosts onto IMAGE with the runtime's steps left out
//!    (`cluster::converge_image`): each host gets only the blobs it lacks (the
//!    blobs step), the new rootfs, the registry with the new images, the mirrors and
//!    the launch; the Clusterfile and journal are recorded with the new image.
//! 3. Stage the new `kube.sh` on every host, then: `kubeadm upgrade apply VERSION` on
//!    the first master; `kubeadm upgrade node` on the other masters one by one; each
//!    worker, one by one, drained from the first master, `kubeadm upgrade node`, then
//!    uncordoned. Each host runs the image's base script again and restarts its kubelet
//!    after its kubeadm step.
//! 4. Run the `upgrade` SHELL plugins (the image's and the Clusterfile's) on the hosts
//!    their scope takes.
//! 5. Each host done leaves `<data root>/state/upgrade-VERSION` (and `.plugins` after
//!    its plugins), so the same command run again after a failure resumes at the
//!    first host not done, and changes nothing once all are.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use super::{bad_input, cluster};
use crate::install::runtime::script_env;
use crate::install::{Phase, write_file};
use crate::printer::Printer;
use crate::remote::{Remote, RemoteCommand};
use crate::runtime::kubernetes::runtime::{kube_sh_file, node_name};
use crate::settings::Settings;
use crate::spec::clusterfile::{Host, PluginSpec};

/// Flags of `airlock upgrade`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example: airlock upgrade kubernetes:v1.31.2 --yes")]
pub struct UpgradeArgs {
    /// The newer cluster image (from the store: `airlock pull` or `airlock build` it first).
    pub image: String,
    /// The cluster (default: the only one recorded on this machine).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Read the cluster from this Clusterfile instead of the recorded one.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Step time limits, host concurrency and output format.
    #[command(flatten)]
    pub engine: super::progress::EngineArgs,
}

/// Upgrade the cluster to `args.image`.
pub async fn run(args: UpgradeArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let mut cf =
        cluster::clusterfile_or_stored(args.file.as_deref(), args.cluster.as_deref(), settings)?;
    let running = running_version(&cf.cluster.spec.image, settings);
    cf.cluster.spec.image.clone_from(&args.image);
    let spec = cluster::resolve(&cf, settings)?;
    let from = cluster::store_source(settings, &args.image)?;
    let plan =
        crate::install::ImagePlan::read(from.source.as_ref(), &from.image).map_err(bad_input)?;
    let version = plan.config.runtime_version.clone().unwrap_or_default();
    if plan.config.runtime != "kubernetes" || version.is_empty() {
        return Err(bad_input(format!(
            "image {}: runtime {:?} version {version:?}; `airlock upgrade` needs a Kubernetes image with a version (LABEL io.airlock.runtime-version)",
            args.image, plan.config.runtime
        )));
    }
    match &running {
        Some(from) => check_skew(from, &version).map_err(|e| {
            bad_input(format!(
                "image {}: {e} (the cluster runs {from})",
                args.image
            ))
        })?,
        None => printer.status(format!(
            "the cluster's current image is not in the store here: its Kubernetes version is not checked against {version}"
        )),
    }
    // The new image's kubeadm configuration must merge with the Clusterfile's before
    // any host changes (bad layers exit 2, naming the document and field).
    let dir = crate::install::journal::cluster_dir(&settings.root, &spec.name);
    cluster::kubernetes_runtime(&cf.kubeadm, &spec, &plan, &dir)?;
    let plan = cluster::converge_image(
        &cf,
        spec.clone(),
        from,
        args.yes,
        &args.engine,
        settings,
        printer,
        true,
    )
    .await?;
    let remotes = super::run::connect_all(&spec, settings, printer).await?;
    let root = spec.data_root.as_str();
    for host in &spec.hosts {
        let f = kube_sh_file(root);
        write_file(
            remote(&remotes, host.ip)?.as_ref(),
            &f.path,
            &f.bytes,
            f.mode,
        )
        .await
        .with_context(|| format!("{}: staging kube.sh", host.ip))?;
    }
    let first = spec.first_master();
    let env = |host: &Host| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = script_env(&spec, &plan.config.env, host)
            .into_iter()
            .collect();
        env.push(("AIRLOCK_KUBE_VERSION".into(), version.clone()));
        env.push((
            "AIRLOCK_KUBE_BASE".into(),
            if plan.files.has("scripts/init-kube.sh") {
                "scripts/init-kube.sh".into()
            } else {
                String::new()
            },
        ));
        env
    };
    let kube = |host: &Host, args: &[String]| {
        let mut cmd = RemoteCommand::new("sh")
            .arg(format!("{root}/cluster/kubernetes/kube.sh"))
            .args(args.iter().cloned())
            .cwd(format!("{root}/rootfs"))
            .sudo();
        for (k, v) in env(host) {
            cmd = cmd.env(k, v);
        }
        cmd
    };
    let step = |host: &Host, on: &Host, args: Vec<String>| {
        let cmd = kube(on, &args);
        let target = remote(&remotes, on.ip);
        let what = format!("{}: {}", host.ip, args.join(" "));
        let on_ip = on.ip;
        async move {
            let out = target?.check(&cmd).await.with_context(|| {
                format!("{what} (fix the cause and run the same command again)")
            })?;
            for line in out.stdout_text().lines() {
                printer.status(format!("{on_ip}| {line}"));
            }
            printer.status(what);
            anyhow::Ok(())
        }
    };
    // A host done with this version carries a marker, so running the same command
    // again after a failure resumes at the first host not done.
    let marker = |what: &str| format!("{root}/state/upgrade-{version}{what}");
    let done = |host: &Host, what: &str| {
        let path = marker(what);
        let target = remote(&remotes, host.ip);
        let ip = host.ip;
        async move {
            let out = target?
                .run(
                    &RemoteCommand::new("test")
                        .args(["-f", path.as_str()])
                        .sudo(),
                )
                .await
                .with_context(|| format!("{ip}: reading {path}"))?;
            anyhow::Ok(out.success())
        }
    };
    let mark = |host: &Host, what: &str| {
        let path = marker(what);
        let target = remote(&remotes, host.ip);
        let ip = host.ip;
        async move {
            write_file(target?.as_ref(), &path, b"done\n", "644")
                .await
                .with_context(|| format!("{ip}: writing {path}"))
        }
    };
    let masters_first = spec
        .hosts
        .iter()
        .filter(|h| h.ip == first.ip)
        .chain(
            spec.hosts
                .iter()
                .filter(|h| h.is_master() && h.ip != first.ip),
        )
        .chain(spec.hosts.iter().filter(|h| !h.is_master()));
    for host in masters_first {
        if done(host, "").await? {
            printer.status(format!("{}: already on Kubernetes {version}", host.ip));
            continue;
        }
        if host.ip == first.ip {
            step(host, host, vec!["upgrade-apply".into()]).await?;
        } else if host.is_master() {
            step(host, host, vec!["upgrade-node".into()]).await?;
        } else {
            let name = node_name(host.ip);
            step(host, first, vec!["drain".into(), name.clone()]).await?;
            step(host, host, vec!["upgrade-node".into()]).await?;
            step(host, first, vec!["uncordon".into(), name]).await?;
        }
        mark(host, "").await?;
    }
    let plugins: Vec<&PluginSpec> = plan.plugins.iter().chain(&spec.plugins).collect();
    for host in &spec.hosts {
        if plugins.iter().any(|p| applies(p, host)) && done(host, ".plugins").await? {
            continue;
        }
        for p in plugins.iter().filter(|p| applies(p, host)) {
            let mut cmd = RemoteCommand::new("sh")
                .args(["-c", p.data.as_str()])
                .cwd(format!("{root}/rootfs"))
                .sudo();
            for (k, v) in env(host) {
                cmd = cmd.env(k, v);
            }
            remote(&remotes, host.ip)?
                .check(&cmd)
                .await
                .with_context(|| format!("{}: upgrade plugin", host.ip))?;
        }
        if plugins.iter().any(|p| applies(p, host)) {
            mark(host, ".plugins").await?;
        }
    }
    printer.result(format!(
        "upgraded {} to {} (Kubernetes {version}) on {} hosts",
        spec.name,
        args.image,
        spec.hosts.len()
    ));
    Ok(())
}

/// The Kubernetes version of the cluster's current image, when the store has it.
fn running_version(image: &str, settings: &Settings) -> Option<String> {
    let from = cluster::store_source(settings, image).ok()?;
    let plan = crate::install::ImagePlan::read(from.source.as_ref(), &from.image).ok()?;
    plan.config.runtime_version.filter(|v| !v.trim().is_empty())
}

/// kubeadm's version skew rule for `upgrade`: the same major version, and the next
/// minor version at most (a patch release of the same minor is fine); never back.
fn check_skew(running: &str, wanted: &str) -> Result<(), String> {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut parts = v.trim().trim_start_matches('v').splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts
            .next()
            .map(|p| p.split(['-', '+']).next().unwrap_or(p))
            .unwrap_or("0")
            .parse()
            .ok()?;
        Some((major, minor, patch))
    };
    let (Some(from), Some(to)) = (parse(running), parse(wanted)) else {
        return Err(format!(
            "cannot compare Kubernetes versions {running:?} and {wanted:?}; set LABEL io.airlock.runtime-version to vMAJOR.MINOR.PATCH"
        ));
    };
    if to < from {
        return Err(format!(
            "Kubernetes {wanted} is older than {running}: kubeadm cannot downgrade a cluster"
        ));
    }
    if to.0 != from.0 || to.1 > from.1 + 1 {
        return Err(format!(
            "Kubernetes {wanted} skips minor versions: upgrade one minor version at a time (to v{}.{}.x first), as kubeadm requires",
            from.0,
            from.1 + 1
        ));
    }
    Ok(())
}

fn remote(
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
    ip: IpAddr,
) -> anyhow::Result<Arc<dyn Remote>> {
    remotes
        .get(&ip)
        .cloned()
        .with_context(|| format!("{ip}: not connected"))
}

/// Whether the SHELL plugin `p` is an `upgrade` plugin whose scope takes `host`.
fn applies(p: &PluginSpec, host: &Host) -> bool {
    let is_shell = p.kind.is_empty() || p.kind.eq_ignore_ascii_case("shell");
    let scope = p.scope.as_deref().unwrap_or_default();
    let in_scope = scope.trim().is_empty()
        || scope
            .split([',', '|'])
            .any(|r| host.roles.contains(r.trim()));
    is_shell && Phase::parse(&p.action) == Some(Phase::Upgrade) && in_scope
}

#[cfg(test)]
mod tests {
    use super::check_skew;

    #[test]
    fn upgrades_go_one_minor_version_at_a_time_and_never_back() {
        assert!(check_skew("v1.30.2", "v1.31.0").is_ok());
        assert!(check_skew("v1.30.2", "v1.30.5").is_ok());
        assert!(check_skew("1.30.2", "v1.30.2").is_ok());
        assert!(check_skew("v1.30.2", "v1.31.0-rc.1").is_ok());
        let skip = check_skew("v1.30.2", "v1.32.0").unwrap_err();
        assert!(skip.contains("to v1.31.x first"), "{skip}");
        let back = check_skew("v1.31.0", "v1.30.9").unwrap_err();
        assert!(back.contains("cannot downgrade"), "{back}");
        assert!(check_skew("v1.30.2", "v2.0.0").is_err());
        let bad = check_skew("v1.30.2", "latest").unwrap_err();
        assert!(bad.contains("vMAJOR.MINOR.PATCH"), "{bad}");
    }
}
