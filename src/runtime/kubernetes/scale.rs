//! Keeping the running hosts of a Kubernetes cluster current when masters join
//! (issue 7: adding masters; "scaling masters updates every worker's backends").
//!
//! 1. [`KubernetesRuntime::prepare`] notes the masters of the Clusterfile that are not
//!    in the cluster's PKI; once the operator confirmed,
//!    [`KubernetesRuntime::issue_for_new_masters`] re-issues the PKI from its CAs
//!    ([`renew_pki`]): the new master gets its own etcd certificates and kubeconfigs,
//!    the API server certificate names it; the CAs, the service-account key pair and
//!    every other master's node name stay.
//! 2. Before the install engine runs, [`KubernetesRuntime::renew_running_masters`]
//!    asks every master which PKI its control plane runs on
//!    (`installer/kubernetes/pki-state.sh`; `kube.sh` records the
//!    [`pki_fingerprint`] once a control plane starts on a PKI). Each master that runs
//!    on another PKI gets its files staged and `kube.sh renew` ([`apply_pki`], as
//!    `airlock cert renew` does), one master at a time. So the running masters serve
//!    the new API server certificate before the new master joins.
//! 3. The engine joins the new master (`kube.sh join-master`, a fresh token first);
//!    it does not run finished init and join steps again for files these steps keep
//!    current ([`Runtime::keeps_current`](crate::install::runtime::Runtime::keeps_current)).
//! 4. After the joins, [`sync_lb_backends`] rewrites each worker's `lb-backends` that
//!    does not list every master (its load balancer re-reads it within a second).
//!
//! Every step looks before it acts: a re-run changes nothing, and a failed one goes
//! on where it stopped (a master whose renewal did not finish is still stale).
//!
//! [`renew_pki`]: super::runtime::renew_pki

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::runtime::{
    KubernetesError, KubernetesRuntime, kube_sh_file, lb_backends_file, master_files,
};
use crate::install::write_file;
use crate::remote::{Output, Remote, RemoteCommand, RemoteError};

const PKI_STATE: &str = include_str!("../../../installer/kubernetes/pki-state.sh");

/// Which PKI a control plane runs on: the SHA-256 (hex) of the PKI's API server
/// certificate, which every issue and re-issue makes anew. `kube.sh` writes the digest
/// of the certificate a control plane started on to `<stage>/pki-applied`.
pub fn pki_fingerprint(pki: &BTreeMap<String, (String, bool)>) -> String {
    let cert = pki.get("pki/apiserver.crt").map_or("", |(c, _)| c.as_str());
    hex::encode(Sha256::digest(cert.as_bytes()))
}

/// What `pki-state.sh` says about a master.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterPkiState {
    /// Whether it has a kube-apiserver static pod (it joined, or was the first).
    pub has_control_plane: bool,
    /// The [`pki_fingerprint`] its control plane was last started on, if recorded.
    pub applied: Option<String>,
    /// The [`pki_fingerprint`] of its `/etc/kubernetes/pki/apiserver.crt`, if any.
    pub installed: Option<String>,
}

impl MasterPkiState {
    /// Read `pki-state.sh`'s lines (`control-plane yes|no`, `applied HEX`,
    /// `installed HEX`).
    pub fn parse(text: &str) -> Self {
        let mut state = Self::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once(' ') else {
                continue;
            };
            let value = Some(value.trim().to_string()).filter(|v| !v.is_empty());
            match key {
                "control-plane" => state.has_control_plane = value.as_deref() == Some("yes"),
                "applied" => state.applied = value,
                "installed" => state.installed = value,
                _ => {}
            }
        }
        state
    }

    /// Whether the master runs a control plane on a PKI other than `current`: the
    /// one `kube.sh` recorded or, on a master installed before it recorded one, the
    /// one in `/etc/kubernetes`. A master without a control plane gets the current
    /// PKI when it joins.
    pub fn is_stale(&self, current: &str) -> bool {
        let runs_on = self.applied.as_deref().or(self.installed.as_deref());
        self.has_control_plane && runs_on != Some(current)
    }
}

/// Ask a master which PKI its control plane runs on (changes nothing).
pub async fn master_pki_state(
    remote: &dyn Remote,
    data_root: &str,
) -> Result<MasterPkiState, RemoteError> {
    let cmd = RemoteCommand::script(PKI_STATE, [data_root]).sudo();
    let out = remote.check(&cmd).await?;
    Ok(MasterPkiState::parse(&out.stdout_text()))
}

/// Stage the master `ip`'s files of `pki` (and `kube.sh`) under
/// `<data_root>/cluster/kubernetes/`, then run `kube.sh renew` there: the files into
/// `/etc/kubernetes`, the static pods and the kubelet restarted. Returns its output.
pub async fn apply_pki(
    remote: &dyn Remote,
    pki: &BTreeMap<String, (String, bool)>,
    first: IpAddr,
    ip: IpAddr,
    data_root: &str,
    restart_wait: &str,
) -> Result<Output, RemoteError> {
    let mut files = vec![kube_sh_file(data_root)];
    files.extend(master_files(pki, first, ip, data_root));
    for f in &files {
        write_file(remote, &f.path, &f.bytes, f.mode).await?;
    }
    let cmd = RemoteCommand::new("sh")
        .args([
            format!("{data_root}/cluster/kubernetes/kube.sh"),
            "renew".to_string(),
        ])
        .cwd(format!("{data_root}/rootfs"))
        .env("AIRLOCK_DATA_ROOT", data_root)
        .env("AIRLOCK_HOST_IP", ip.to_string())
        .env("AIRLOCK_KUBE_RESTART_WAIT", restart_wait)
        .sudo();
    remote.check(&cmd).await
}

/// Make a worker's `lb-backends` list `masters` (one `IP:6443` a line), writing it
/// only when it does not already. Returns whether it was written.
pub async fn sync_lb_backends(
    remote: &dyn Remote,
    data_root: &str,
    masters: &[IpAddr],
) -> Result<bool, RemoteError> {
    let file = lb_backends_file(data_root, masters);
    let current = remote
        .run(&RemoteCommand::new("cat").arg(file.path.as_str()).sudo())
        .await?;
    if current.success() && current.stdout == file.bytes {
        return Ok(false);
    }
    write_file(remote, &file.path, &file.bytes, file.mode).await?;
    Ok(true)
}

impl KubernetesRuntime {
    /// Bring every master that runs a control plane on another PKI than this one's
    /// up to date, one at a time in the Clusterfile's order ([`apply_pki`]), telling
    /// `report` each line of their output. Returns the masters renewed (none when
    /// every master is current).
    pub async fn renew_running_masters(
        &self,
        remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
        report: &(dyn Fn(IpAddr, String) + Sync),
    ) -> Result<Vec<IpAddr>, KubernetesError> {
        let current = pki_fingerprint(&self.pki);
        let failed = |host: IpAddr, doing: &'static str| {
            move |source| KubernetesError::Remote {
                host,
                doing,
                source,
            }
        };
        let mut renewed = Vec::new();
        for ip in &self.masters {
            let remote = remotes
                .get(ip)
                .ok_or_else(|| RemoteError::Connect {
                    host: ip.to_string(),
                    reason: "not connected".to_string(),
                })
                .map_err(failed(*ip, "reading which PKI it runs on"))?;
            let state = master_pki_state(remote.as_ref(), &self.data_root)
                .await
                .map_err(failed(*ip, "reading which PKI it runs on"))?;
            if !state.is_stale(&current) {
                continue;
            }
            report(
                *ip,
                "its control plane runs on an older PKI: renewing its certificates".into(),
            );
            let out = apply_pki(
                remote.as_ref(),
                &self.pki,
                self.first,
                *ip,
                &self.data_root,
                &self.restart_wait,
            )
            .await
            .map_err(failed(*ip, "renewing its certificates"))?;
            for line in out.stdout_text().lines() {
                report(*ip, line.to_string());
            }
            renewed.push(*ip);
        }
        Ok(renewed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::fake::{FakeRemote, FakeReply};

    const ROOT: &str = "/var/lib/airlock";

    fn fleet(hosts: &[(&str, Arc<FakeRemote>)]) -> BTreeMap<IpAddr, Arc<dyn Remote>> {
        hosts
            .iter()
            .map(|(ip, r)| (ip.parse().unwrap(), r.clone() as Arc<dyn Remote>))
            .collect()
    }

    /// The paths written (`write-file.sh PATH MODE`) and the programs run, in order.
    fn actions(remote: &FakeRemote) -> Vec<String> {
        remote
            .commands()
            .into_iter()
            .map(|argv| match argv.as_slice() {
                [sh, c, text, ..] if sh == "sh" && c == "-c" && text == PKI_STATE => {
                    "probe".to_string()
                }
                [sh, c, text, _, path, ..]
                    if sh == "sh" && c == "-c" && text.contains("Write stdin to a file") =>
                {
                    format!("write {path}")
                }
                other => other.join(" "),
            })
            .collect()
    }

    #[tokio::test]
    async fn only_masters_running_on_another_pki_are_renewed_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (_, rt) = super::super::runtime::tests::prepare_with(
            dir.path(),
            "198.18.0.2, 198.18.0.3, 198.18.0.5",
        )
        .unwrap();
        let current = pki_fingerprint(&rt.pki);
        let [m1, m2, m3] =
            ["198.18.0.2", "198.18.0.3", "198.18.0.5"].map(|h| Arc::new(FakeRemote::new(h)));
        let probe = ["sh", "-c", PKI_STATE];
        m1.on(
            &probe,
            FakeReply::exit(0, "control-plane yes\napplied 0ld\n"),
        );
        m1.on(
            &["sh", &format!("{ROOT}/cluster/kubernetes/kube.sh"), "renew"],
            FakeReply::exit(0, "restarted static pod kube-apiserver\n"),
        );
        m2.on(
            &probe,
            FakeReply::exit(0, &format!("control-plane yes\napplied {current}\n")),
        );
        m3.on(&probe, FakeReply::exit(0, "control-plane no\n"));
        let remotes = fleet(&[
            ("198.18.0.2", m1.clone()),
            ("198.18.0.3", m2.clone()),
            ("198.18.0.5", m3.clone()),
        ]);
        let lines = std::sync::Mutex::new(Vec::new());
        let report = |ip: IpAddr, line: String| lines.lock().unwrap().push(format!("{ip}| {line}"));
        let renewed = rt.renew_running_masters(&remotes, &report).await.unwrap();
        assert_eq!(renewed, ["198.18.0.2".parse::<IpAddr>().unwrap()]);
        let done = actions(&m1);
        assert_eq!(done[0], "probe");
        let stage = format!("{ROOT}/cluster/kubernetes");
        assert_eq!(done[1], format!("write {stage}/kube.sh"));
        assert!(
            done.contains(&format!("write {stage}/etc/pki/apiserver.crt")),
            "{done:?}"
        );
        assert_eq!(done.last().unwrap(), &format!("sh {stage}/kube.sh renew"));
        let renew = m1.commands().pop().unwrap();
        assert_eq!(renew[2], "renew");
        assert_eq!(actions(&m2), ["probe"]);
        assert_eq!(actions(&m3), ["probe"]);
        assert!(
            lines
                .lock()
                .unwrap()
                .contains(&"198.18.0.2| restarted static pod kube-apiserver".to_string())
        );

        // A renewal that fails names the host and stops before the next master.
        let m1 = Arc::new(FakeRemote::new("198.18.0.2"));
        m1.on(&probe, FakeReply::exit(0, "control-plane yes\n"));
        m1.on(
            &["sh", &format!("{stage}/kube.sh"), "renew"],
            FakeReply::fail(1, "boom"),
        );
        let m2 = Arc::new(FakeRemote::new("198.18.0.3"));
        let remotes = fleet(&[("198.18.0.2", m1.clone()), ("198.18.0.3", m2.clone())]);
        let err = rt
            .renew_running_masters(&remotes, &|_, _| {})
            .await
            .unwrap_err();
        assert!(
            matches!(&err, KubernetesError::Remote { host, .. } if host.to_string() == "198.18.0.2"),
            "{err}"
        );
        assert!(
            err.to_string().contains("run the same command again"),
            "{err}"
        );
        assert!(m2.commands().is_empty());
        // A master that is not connected is an error, not skipped.
        let err = rt
            .renew_running_masters(&fleet(&[("198.18.0.3", m2)]), &|_, _| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not connected"), "{err}");
    }

    #[tokio::test]
    async fn lb_backends_are_written_only_when_they_differ() {
        let masters: Vec<IpAddr> = ["198.18.0.2", "198.18.0.3"]
            .map(|m| m.parse().unwrap())
            .to_vec();
        let path = format!("{ROOT}/cluster/kubernetes/lb-backends");
        let same = FakeRemote::new("198.18.0.4");
        same.on(
            &["cat", &path],
            FakeReply::exit(0, "198.18.0.2:6443\n198.18.0.3:6443\n"),
        );
        assert!(!sync_lb_backends(&same, ROOT, &masters).await.unwrap());
        assert_eq!(actions(&same), [format!("cat {path}")]);
        let old = FakeRemote::new("198.18.0.4");
        old.on(&["cat", &path], FakeReply::exit(0, "198.18.0.2:6443\n"));
        assert!(sync_lb_backends(&old, ROOT, &masters).await.unwrap());
        assert_eq!(
            actions(&old),
            [format!("cat {path}"), format!("write {path}")]
        );
        let stdin = old
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                crate::remote::fake::FakeCall::Run(cmd) => cmd.stdin,
                crate::remote::fake::FakeCall::Upload { .. } => None,
            })
            .next_back()
            .unwrap();
        assert_eq!(stdin, b"198.18.0.2:6443\n198.18.0.3:6443\n");
        let missing = FakeRemote::new("198.18.0.4");
        missing.on(&["cat", &path], FakeReply::fail(1, "No such file"));
        assert!(sync_lb_backends(&missing, ROOT, &masters).await.unwrap());
    }

    #[test]
    fn a_master_is_stale_when_its_control_plane_runs_on_another_pki() {
        let current = "ab12";
        let state = |text: &str| MasterPkiState::parse(text);
        // A new master (no control plane yet) joins with the current PKI.
        assert!(!state("control-plane no\n").is_stale(current));
        assert!(!state("control-plane no\napplied 99\n").is_stale(current));
        // A running master on the current PKI stays; on another one it is renewed.
        assert!(!state("control-plane yes\napplied ab12\ninstalled ab12\n").is_stale(current));
        assert!(state("control-plane yes\napplied 99\ninstalled 99\n").is_stale(current));
        // A renewal that stopped after copying the files, before the restart.
        assert!(state("control-plane yes\napplied 99\ninstalled ab12\n").is_stale(current));
        // Nothing recorded (an older airlock installed it): the installed files say.
        assert!(!state("control-plane yes\ninstalled ab12\n").is_stale(current));
        assert!(state("control-plane yes\ninstalled 99\n").is_stale(current));
        assert!(state("control-plane yes\napplied \n").is_stale(current));
        assert_eq!(state("noise\n"), MasterPkiState::default());
    }

    #[test]
    fn the_fingerprint_is_the_api_server_certificate_digest() {
        let mut pki = BTreeMap::new();
        pki.insert(
            "pki/apiserver.crt".to_string(),
            ("CERT\n".to_string(), false),
        );
        pki.insert("pki/ca.crt".to_string(), ("CA\n".to_string(), false));
        // `printf 'CERT\n' | sha256sum`, as kube.sh computes it.
        assert_eq!(
            pki_fingerprint(&pki),
            hex::encode(Sha256::digest(b"CERT\n"))
        );
        let before = pki_fingerprint(&pki);
        pki.insert("pki/ca.crt".to_string(), ("CA2\n".to_string(), false));
        assert_eq!(
            pki_fingerprint(&pki),
            before,
            "only the API server certificate counts"
        );
    }
}
