//! `airlock run` checks every host before it changes any: a failed check stops it
//! with nothing changed and names the flag that goes on anyway; with
//! `--ignore-preflight-errors` it asks for confirmation, and declining it (`n` on a
//! terminal: `script` gives the command one) changes nothing either, on the hosts or
//! on this machine (no cluster directory, no `preflight.json`, no log); confirmed, it
//! installs and keeps the report. The failing check is real: an image that declares
//! more memory than the testbed host has.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::lifecycle::{airlock, ok, text};
use crate::testbed::{find_command, skip_reason};

fn clusterfile(dir: &Path, ip: std::net::Ipv4Addr, key: &Path) -> std::path::PathBuf {
    let path = dir.join("Clusterfile");
    std::fs::write(
        &path,
        format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: gate\nspec:\n  image: hungry:v1\n  ssh:\n    user: root\n    pk: {}\n  hosts:\n    - ips: [ {ip} ]\n      roles: [ master ]\n",
            key.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn run_stops_on_a_failed_preflight_check_and_goes_on_when_told_to_ignore_it() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED run_stops_on_a_failed_preflight_check: {why}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (_bundle, tb) = crate::e2e::bundle_and_hosts(work.path(), 1);
    let store = work.path().join("store");
    // The hello image, asking for 256 TiB of memory.
    let ctx = work.path().join("hungry");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Kubefile"),
        "FROM hello-cluster:v1\nLABEL io.airlock.min-memory-mib=268435456\n",
    )
    .unwrap();
    ok(
        airlock(&store)
            .args(["build", "-t", "hungry:v1"])
            .arg(&ctx)
            .output()
            .unwrap(),
        "airlock build hungry",
    );
    let cf = clusterfile(work.path(), tb.ip(1), &tb.key);
    let run = |extra: &[&str]| {
        airlock(&store)
            .args(["run", "--yes", "-f"])
            .arg(&cf)
            .args(extra)
            .output()
            .unwrap()
    };
    let data_root_exists = || {
        tb.exec(1, &["test", "-e", "/var/lib/airlock"])
            .status
            .success()
    };

    // A misspelt check name is bad input.
    let out = run(&["--ignore-preflight-errors=memroy"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(msg.contains("unknown check \"memroy\""), "{msg}");

    // The memory check fails: nothing changes, and the way on is named.
    let out = run(&[]);
    let msg = text(&out);
    assert!(!out.status.success(), "{msg}");
    assert!(
        msg.contains(&format!("{} memory FAIL", tb.ip(1))),
        "the failure must name host and check:\n{msg}"
    );
    assert!(
        msg.contains("nothing was changed") && msg.contains("--ignore-preflight-errors=memory"),
        "{msg}"
    );
    assert!(
        !data_root_exists(),
        "a refused install must not touch the host"
    );
    let cluster_dir = store.join("clusters/gate");
    assert!(
        !cluster_dir.exists(),
        "a refused install left {} behind",
        cluster_dir.display()
    );

    // Told to ignore it, the install asks first; `n` changes nothing anywhere.
    if find_command("script").is_some() {
        let out = Command::new("script")
            .args([
                "-qec",
                r#"exec "$AIRLOCK_BIN" run -f "$CLUSTERFILE" --ignore-preflight-errors memory"#,
                "/dev/null",
            ])
            .env("SHELL", "/bin/sh")
            .env("AIRLOCK_BIN", env!("CARGO_BIN_EXE_airlock"))
            .env("CLUSTERFILE", &cf)
            .env("AIRLOCK_ROOT", &store)
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(b"n\n")?;
                child.wait_with_output()
            })
            .unwrap();
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(2), "{msg}");
        assert!(
            msg.contains("(ignored: memory)") && msg.contains("Continue? [y/N]"),
            "the checks ran and the question was asked:\n{msg}"
        );
        assert!(msg.contains("cancelled; nothing was changed"), "{msg}");
        assert!(!data_root_exists(), "a declined install touched the host");
        assert!(
            !cluster_dir.exists(),
            "a declined install left {} behind",
            cluster_dir.display()
        );
    } else {
        eprintln!(
            "SKIPPED declining the confirmation in run_stops_on_a_failed_preflight_check: script (util-linux) is missing"
        );
    }

    // Confirmed (--yes), the install goes on, says what it ignored, and keeps the
    // report and the log.
    let out = run(&["--ignore-preflight-errors", "memory"]);
    let msg = ok(out, "airlock run --ignore-preflight-errors memory");
    assert!(msg.contains("(ignored: memory)"), "{msg}");
    assert!(data_root_exists(), "the install must have run");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cluster_dir.join("preflight.json")).unwrap())
            .unwrap();
    let memory = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "memory")
        .unwrap_or_else(|| panic!("no memory finding in {report:#}"));
    assert_eq!(memory["status"], "skipped", "{report:#}");
    let logs: Vec<_> = std::fs::read_dir(cluster_dir.join("logs"))
        .unwrap()
        .collect();
    assert_eq!(logs.len(), 1, "one log for the one confirmed run: {logs:?}");
    assert!(msg.contains("log: "), "{msg}");
    tb.down().unwrap();
}
