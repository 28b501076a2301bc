//! `airlock run` checks every host before it changes any: a failed check stops it
//! with nothing changed and names the flag that goes on anyway; with
//! `--ignore-preflight-errors` it installs. The failing check is real: an image that
//! declares more memory than the testbed host has.

use std::path::Path;

use crate::lifecycle::{airlock, ok, text};
use crate::testbed::skip_reason;

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
    let report = std::fs::read_to_string(store.join("clusters/gate/preflight.json")).unwrap();
    assert!(
        report.contains("\"memory\"") && report.contains("\"fail\""),
        "{report}"
    );

    // Told to ignore it, the install goes on, and says what it ignored.
    let out = run(&["--ignore-preflight-errors", "memory"]);
    let msg = ok(out, "airlock run --ignore-preflight-errors memory");
    assert!(msg.contains("(ignored: memory)"), "{msg}");
    assert!(data_root_exists(), "the install must have run");
    tb.down().unwrap();
}
