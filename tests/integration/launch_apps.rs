//! The launch step's apps on a testbed host: a generic image whose Kubefile declares a
//! shell app with APPENV and a kube-YAML app, both LAUNCHed. The shell app writes a
//! file from its env in its own directory; the kube-YAML app runs `kubectl apply` on a
//! test double (a script on the host that records its argv and directory), and a
//! failing app makes `run` fail naming host, step, command, exit status and stderr,
//! with the command that resumes, and `-o json` ends with a `finished` failed event.

use crate::lifecycle::{airlock, ok, text};
use crate::testbed::{Testbed, TestbedOptions, skip_reason};
use std::path::{Path, PathBuf};

const KUBEFILE: &str = r#"FROM scratch
ENV CLUSTER_WORD=airlock
APP greeter local://greet.sh
APPENV greeter WHO=world
APP web local://web.yaml
LAUNCH ["greeter", "web"]
"#;

const GREET: &str = "echo \"hello $WHO from $CLUSTER_WORD\" > \"$PWD/greeting\"\n";

const WEB: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  a: b\n";

/// A kubectl test double: records its directory and argv; fails when told to.
const KUBECTL_DOUBLE: &str = "#!/bin/sh\n# kubectl TEST DOUBLE (airlock launch_apps test): records, applies nothing.\necho \"$PWD $*\" >> /root/kubectl-double.argv\nif [ -e /root/kubectl-double.fail ]; then echo 'error: the server is down' >&2; exit 7; fi\n";

fn clusterfile(dir: &Path, tb: &Testbed) -> PathBuf {
    let path = dir.join("Clusterfile");
    std::fs::write(
        &path,
        format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: apps\nspec:\n  image: apps-cluster:v1\n  ssh:\n    user: root\n    pk: {}\n  hosts:\n    - ips: [ {} ]\n      roles: [ master ]\n",
            tb.key.display(),
            tb.hosts[0]
        ),
    )
    .unwrap();
    path
}

#[test]
fn launched_apps_run_by_type_with_their_env_on_a_testbed_host() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED launched_apps_run_by_type_with_their_env_on_a_testbed_host: {why}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Kubefile"), KUBEFILE).unwrap();
    std::fs::write(ctx.join("greet.sh"), GREET).unwrap();
    std::fs::write(ctx.join("web.yaml"), WEB).unwrap();
    let store = work.path().join("store");
    ok(
        airlock(&store)
            .args(["build", "-t", "apps-cluster:v1"])
            .arg(&ctx)
            .output()
            .unwrap(),
        "airlock build",
    );
    let tb = Testbed::up(TestbedOptions::default()).expect("testbed up");
    ok(
        tb.exec(
            1,
            &[
                "sh",
                "-c",
                &format!(
                    "cat > /usr/local/bin/kubectl <<'EOF'\n{KUBECTL_DOUBLE}EOF\nchmod 755 /usr/local/bin/kubectl"
                ),
            ],
        ),
        "install the kubectl double",
    );
    ok(
        tb.exec(1, &["touch", "/root/kubectl-double.fail"]),
        "make the double fail",
    );
    let cf = clusterfile(work.path(), &tb);
    let apps = "/var/lib/airlock/rootfs/application/apps";

    // The kube app fails: the error names host, step, command, exit status, stderr and
    // the command that resumes; -o json ends with `finished` failed.
    let failed = airlock(&store)
        .args(["run", "-o", "json", "-f"])
        .arg(&cf)
        .arg("--yes")
        .output()
        .unwrap();
    assert!(!failed.status.success(), "{}", text(&failed));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    let host = tb.hosts[0].to_string();
    for want in [
        format!(
            "step launch failed on {host}: `sh -c 'kubectl apply -f {apps}/web' (in {apps}/web)` exited with 7"
        ),
        "error: the server is down".to_string(),
        "resume (finished steps are skipped)".to_string(),
        format!("run -o json -f {}", cf.display()),
    ] {
        assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
    }
    let last: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&failed.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["event"], "finished", "{last}");
    assert_eq!(last["result"]["status"], "failed", "{last}");

    // Fixed: the re-run resumes at launch and both apps run.
    ok(
        tb.exec(1, &["rm", "/root/kubectl-double.fail"]),
        "let the double pass",
    );
    let resumed = ok(
        airlock(&store)
            .args(["run", "-f"])
            .arg(&cf)
            .arg("--yes")
            .output()
            .unwrap(),
        "run (resumed)",
    );
    assert!(resumed.contains("unpack already done"), "{resumed}");
    let greeting = tb.exec(1, &["cat", &format!("{apps}/greeter/greeting")]);
    assert_eq!(
        String::from_utf8_lossy(&greeting.stdout),
        "hello world from airlock\n",
        "{}",
        text(&greeting)
    );
    let argv = tb.exec(1, &["cat", "/root/kubectl-double.argv"]);
    assert_eq!(
        String::from_utf8_lossy(&argv.stdout),
        format!("{apps}/web apply -f {apps}/web\n").repeat(2),
        "{}",
        text(&argv)
    );
}
