//! Fan-out on testbed hosts: the real airlock binary as the relay on every host,
//! reached over real SSH; blobs checked with `sha256sum` inside each host.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock::digest::Digest;
use airlock::distribute::protocol::{self, RelayLine, RelayRequest};
use airlock::distribute::{
    BlobNeed, FanOutEvent, FanOutHost, FanOutOptions, FanOutReport, Route, fan_out,
};
use airlock::image::oci::Descriptor;
use airlock::image::{BlobLocation, BlobSource};
use airlock::remote::known_hosts::KnownHosts;
use airlock::remote::ssh::{SshAuth, SshRemote, SshTarget};
use airlock::remote::{Remote, RemoteCommand, Stream, UploadSource};
use tokio::io::AsyncReadExt as _;

use crate::testbed::{Testbed, TestbedOptions, skip_reason};

const ROOT: &str = "/var/lib/airlock";

/// Blobs as plain files, by digest.
struct Files(BTreeMap<Digest, PathBuf>);

impl BlobSource for Files {
    fn images(&self) -> io::Result<Vec<(String, Descriptor)>> {
        Ok(Vec::new())
    }

    fn locate(&self, digest: &Digest) -> io::Result<Option<BlobLocation>> {
        Ok(self.0.get(digest).map(|p| BlobLocation {
            path: p.clone(),
            offset: 0,
            size: std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        }))
    }
}

/// A file of `len` random bytes in `dir`: its need and where it is.
fn random_blob(dir: &Path, len: usize) -> (BlobNeed, PathBuf) {
    let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    let digest = Digest::of(&bytes);
    let path = dir.join(digest.hex());
    std::fs::write(&path, &bytes).unwrap();
    (
        BlobNeed {
            digest,
            size: len as u64,
        },
        path,
    )
}

/// Connect to every host as root and put the airlock binary under the data root.
async fn connect_all(tb: &Testbed, dir: &Path) -> Vec<Arc<dyn Remote>> {
    let known = KnownHosts::new(dir.join("known_hosts"));
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_airlock"));
    let len = std::fs::metadata(&agent).unwrap().len();
    let mut remotes: Vec<Arc<dyn Remote>> = Vec::new();
    for ip in &tb.hosts {
        let auth = SshAuth::Key {
            path: tb.key.clone(),
            passphrase: None,
        };
        let remote = SshRemote::connect(SshTarget::new(ip.to_string(), "root", auth), &known)
            .await
            .unwrap();
        remote
            .check(&RemoteCommand::new("mkdir").args([
                "-p",
                &format!("{ROOT}/bin"),
                &format!("{ROOT}/store/blobs/sha256"),
            ]))
            .await
            .unwrap();
        let src = UploadSource {
            path: agent.clone(),
            offset: 0,
            len,
            sha256: None,
        };
        remote
            .upload(&src, &format!("{ROOT}/bin/airlock"), 0o755)
            .await
            .unwrap();
        remotes.push(Arc::new(remote));
    }
    remotes
}

fn hosts(tb: &Testbed, remotes: &[Arc<dyn Remote>], needs: &[BlobNeed]) -> Vec<FanOutHost> {
    tb.hosts
        .iter()
        .zip(remotes)
        .map(|(ip, r)| FanOutHost {
            addr: IpAddr::V4(*ip),
            remote: r.clone(),
            needs: needs.to_vec(),
        })
        .collect()
}

fn opts() -> FanOutOptions {
    FanOutOptions {
        idle_timeout: Duration::from_secs(30),
        ..FanOutOptions::for_data_root(ROOT)
    }
}

/// The SHA-256 of every blob as `sha256sum` computes it inside host `i`.
fn hashes_on(tb: &Testbed, i: usize, needs: &[BlobNeed]) -> Vec<String> {
    needs
        .iter()
        .map(|n| {
            let path = format!("{ROOT}/store/blobs/sha256/{}", n.digest.hex());
            let out = tb.exec(i, &["sha256sum", &path]);
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("missing")
                .to_string()
        })
        .collect()
}

fn assert_all_hold(tb: &Testbed, needs: &[BlobNeed]) {
    let want: Vec<String> = needs.iter().map(|n| n.digest.hex().to_string()).collect();
    for i in 1..=tb.hosts.len() {
        assert_eq!(hashes_on(tb, i, needs), want, "host {i}");
    }
}

fn report_of(r: &FanOutReport, tb: &Testbed, i: usize) -> airlock::distribute::HostReport {
    r.hosts[&IpAddr::V4(tb.ip(i))].clone()
}

/// Four hosts: a chain delivers every blob, a blob a host has is not sent to it,
/// a wrong token is refused, a corrupted blob is rejected, and hosts that cannot
/// be reached from the previous one (or at all over TCP) are served by the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_four_testbed_hosts() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED fan_out_to_four_testbed_hosts: {why}");
        return;
    }
    let tb = Testbed::up(TestbedOptions {
        hosts: 4,
        ..Default::default()
    })
    .expect("testbed up");
    let dir = tempfile::tempdir().unwrap();
    let remotes = connect_all(&tb, dir.path()).await;
    let (a, a_path) = random_blob(dir.path(), 4 << 20);
    let (b, b_path) = random_blob(dir.path(), 2 << 20);
    let (c, c_path) = random_blob(dir.path(), 1000);
    // Host 3 already holds `b`.
    remotes[2]
        .upload(
            &UploadSource {
                path: b_path.clone(),
                offset: 0,
                len: b.size,
                sha256: Some(b.digest.hex().to_string()),
            },
            &format!("{ROOT}/store/blobs/sha256/{}", b.digest.hex()),
            0o644,
        )
        .await
        .unwrap();
    let source = Files(
        [(&a, &a_path), (&b, &b_path), (&c, &c_path)]
            .into_iter()
            .map(|(n, p)| (n.digest.clone(), p.clone()))
            .collect(),
    );
    let needs = vec![a.clone(), b.clone(), c.clone()];
    let report = fan_out(&hosts(&tb, &remotes, &needs), &source, &opts(), &|_| {})
        .await
        .unwrap();
    report.check().unwrap();
    assert_all_hold(&tb, &needs);
    assert_eq!(
        report.operator_bytes,
        a.size + b.size + c.size,
        "the operator sent each byte once"
    );
    let h3 = report_of(&report, &tb, 3);
    assert_eq!(h3.present, vec![b.digest.clone()], "{h3:?}");
    assert!(!h3.received.iter().any(|r| r.digest == b.digest));
    for i in 1..=4 {
        assert!(
            matches!(
                report_of(&report, &tb, i).route,
                Route::Chain { chain: 0, .. }
            ),
            "host {i}: {report:?}"
        );
    }

    // A second run sends nothing: every host has everything.
    let again = fan_out(&hosts(&tb, &remotes, &needs), &source, &opts(), &|_| {})
        .await
        .unwrap();
    again.check().unwrap();
    assert_eq!(again.operator_bytes, 0);

    // A wrong token is refused by the real relay.
    let (d, d_path) = random_blob(dir.path(), 1 << 20);
    wrong_token_is_refused(&tb, remotes[0].clone(), &d).await;

    // A blob whose bytes do not match its digest is rejected everywhere, never renamed.
    let mut bytes = std::fs::read(&d_path).unwrap();
    bytes[1000] ^= 0x01;
    let bad_path = dir.path().join("corrupt");
    std::fs::write(&bad_path, &bytes).unwrap();
    let bad = Files([(d.digest.clone(), bad_path)].into_iter().collect());
    let report = fan_out(
        &hosts(&tb, &remotes, std::slice::from_ref(&d)),
        &bad,
        &opts(),
        &|_| {},
    )
    .await
    .unwrap();
    assert!(report.check().is_err());
    for i in 1..=4 {
        let r = report_of(&report, &tb, i);
        assert!(
            r.failed
                .iter()
                .any(|(g, why)| *g == d.digest && why.contains("digest mismatch")),
            "host {i}: {r:?}"
        );
        let out = tb.exec(i, &["ls", &format!("{ROOT}/store/blobs/sha256")]);
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(!listing.contains(d.digest.hex()), "host {i}: {listing}");
    }

    // Host 3 refuses relay connections from host 2, host 4 refuses every TCP port
    // but SSH: the chain ends at host 2, host 3 heads a chain of its own, and host 4
    // gets its blob over SSH.
    let reject = |i: usize, extra: &[&str]| {
        let mut argv = vec!["iptables", "-I", "INPUT", "-p", "tcp", "!", "--dport", "22"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["-j", "REJECT", "--reject-with", "tcp-reset"]);
        let out = tb.exec(i, &argv);
        assert!(out.status.success(), "{out:?}");
    };
    let h2 = tb.ip(2).to_string();
    reject(3, &["-s", &h2]);
    reject(4, &[]);
    let good = Files([(d.digest.clone(), d_path.clone())].into_iter().collect());
    let events = Mutex::new(Vec::new());
    let report = fan_out(
        &hosts(&tb, &remotes, std::slice::from_ref(&d)),
        &good,
        &opts(),
        &|e| events.lock().unwrap().push(e),
    )
    .await
    .unwrap();
    report.check().unwrap();
    assert_all_hold(&tb, std::slice::from_ref(&d));
    let routes: Vec<Route> = (1..=4).map(|i| report_of(&report, &tb, i).route).collect();
    assert_eq!(
        routes[0],
        Route::Chain {
            chain: 0,
            position: 0
        }
    );
    assert_eq!(
        routes[1],
        Route::Chain {
            chain: 0,
            position: 1
        }
    );
    assert_eq!(
        routes[2],
        Route::Chain {
            chain: 1,
            position: 0
        }
    );
    assert!(matches!(routes[3], Route::Ssh { .. }), "{routes:?}");
    let events = events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        FanOutEvent::Relay { host, line: RelayLine::Unreachable { .. } } if *host == IpAddr::V4(tb.ip(2))
    )));
}

/// Start a relay by hand with a known token; a connection with another token is
/// closed without an answer, and the relay says so.
async fn wrong_token_is_refused(tb: &Testbed, remote: Arc<dyn Remote>, blob: &BlobNeed) {
    let token = protocol::new_token();
    let request = RelayRequest {
        token,
        wants: vec![(blob.digest.clone(), blob.size)],
    };
    let cmd = RemoteCommand::new(format!("{ROOT}/bin/airlock"))
        .args(["agent", "relay", "--listen", "0.0.0.0:0"])
        .args(["--store", &format!("{ROOT}/store"), "--token-stdin"])
        .args(["--idle-timeout", "20"])
        .stdin(request.encode());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut sink = |s: Stream, line: &str| {
            if s == Stream::Stdout
                && let Ok(l) = line.parse::<RelayLine>()
            {
                let _ = tx.send(l);
            }
        };
        remote.run_streaming(&cmd, &mut sink).await
    });
    let (port, pid) = loop {
        match rx.recv().await.expect("relay lines") {
            RelayLine::Listening { port, pid } => break (port, pid),
            _ => continue,
        }
    };
    let mut stream = tokio::net::TcpStream::connect((tb.ip(1), port))
        .await
        .unwrap();
    protocol::write_hello(&mut stream, &protocol::new_token())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(stream.read(&mut buf).await.unwrap_or(0), 0, "closed");
    loop {
        if let RelayLine::Refused { .. } = rx.recv().await.expect("a refused line") {
            break;
        }
    }
    let out = tb.exec(1, &["kill", &pid.to_string()]);
    assert!(out.status.success(), "{out:?}");
    drop(task.await);
}

/// A relay killed halfway: the next run resumes every host from the bytes that
/// arrived, and the operator sends less than the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_resumes_after_a_relay_is_killed_halfway() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED fan_out_resumes_after_a_relay_is_killed_halfway: {why}");
        return;
    }
    let tb = Testbed::up(TestbedOptions {
        hosts: 4,
        rate: Some("100mbit".to_string()),
        ..Default::default()
    })
    .expect("testbed up");
    let dir = tempfile::tempdir().unwrap();
    let remotes = connect_all(&tb, dir.path()).await;
    let (a, a_path) = random_blob(dir.path(), 64 << 20);
    let source = Files([(a.digest.clone(), a_path)].into_iter().collect());
    let needs = vec![a.clone()];
    let h2 = IpAddr::V4(tb.ip(2));
    let h4 = IpAddr::V4(tb.ip(4));
    let pid2 = Mutex::new(None::<u32>);
    let killer = Mutex::new(None::<std::process::Child>);
    // Kill host 2's relay once host 4, behind it, holds a quarter of the blob.
    let on_event = |e: FanOutEvent| {
        let FanOutEvent::Relay { host, line } = e else {
            return;
        };
        match line {
            RelayLine::Listening { pid, .. } if host == h2 => *pid2.lock().unwrap() = Some(pid),
            RelayLine::Progress { bytes, .. } if host == h4 && bytes >= a.size / 4 => {
                let mut killer = killer.lock().unwrap();
                if killer.is_none() {
                    let pid = pid2.lock().unwrap().expect("host 2 listened").to_string();
                    let child = std::process::Command::new("bash")
                        .arg(crate::testbed::script())
                        .args(["exec", "--name", &tb.name, "2", "--", "kill", "-9", &pid])
                        .spawn()
                        .unwrap();
                    *killer = Some(child);
                }
            }
            _ => {}
        }
    };
    let first = fan_out(&hosts(&tb, &remotes, &needs), &source, &opts(), &on_event)
        .await
        .unwrap();
    let status = killer
        .lock()
        .unwrap()
        .take()
        .expect("the relay was killed")
        .wait()
        .unwrap();
    assert!(status.success());
    assert!(first.check().is_err(), "the kill came too late: {first:?}");

    let second = fan_out(&hosts(&tb, &remotes, &needs), &source, &opts(), &|_| {})
        .await
        .unwrap();
    second.check().unwrap();
    assert_all_hold(&tb, &needs);
    assert!(
        second.operator_bytes < a.size,
        "re-sent everything: {second:?}"
    );
    for i in 1..=4 {
        let r = report_of(&second, &tb, i);
        let resumed = r.received.iter().map(|x| x.resumed).sum::<u64>();
        assert!(
            r.present.contains(&a.digest) || resumed >= a.size / 4,
            "host {i} did not resume: {r:?}"
        );
    }
}
