//! The wizard in a real pseudo-terminal (tmux): with a fake engine, and for real.
//!
//! 1. `wizard_in_a_real_terminal` starts tmux at 80x24 running this test binary again,
//!    selecting the ignored test `wizard_child_with_fake_engine` with an env var.
//! 2. The child runs `run_wizard` on the pane's terminal with `FakeEngine`: preflight
//!    accepts the password `right` only; the install reports progress and succeeds.
//! 3. The parent types like an engineer would (`send-keys`) and reads the screen
//!    (`capture-pane -p`): 3 hosts, a wrong password that preflight refuses, the fix,
//!    preflight passing, the install, the result screen, Ctrl-C to leave.
//! 4. `wizard_installs_a_real_bundle_on_three_testbed_hosts` builds and bundles the hello
//!    example, starts its `.run` file in tmux against 3 testbed hosts (containerd), logs
//!    in with the testbed key, passes the real preflight, installs and reads the result
//!    screen; a second run with a wrong root password fails preflight (auth), is
//!    corrected and installs again. The hosts are then checked for the install.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::install::{self, Reporter, StepId, StepState};
use airlock::preflight::{CHECKS, CheckId, Finding, Report, Status};
use airlock::spec::clusterfile::ClusterSpec;
use airlock::wizard::runner::load_session;
use airlock::wizard::state::{HostKeyRow, ImageInfo, KeyStatus, KeyTarget};
use airlock::wizard::{InstallResult, WizardEngine, WizardInput, run_wizard};

const CHILD_ENV: &str = "AIRLOCK_TEST_WIZARD_DIR";

/// A fake engine: no hosts are touched. Accepted host keys are written to
/// `trusted` in its directory, for the parent test to read.
struct FakeEngine {
    dir: PathBuf,
}

#[async_trait::async_trait]
impl WizardEngine for FakeEngine {
    async fn verify(&self, progress: &(dyn Fn(u64, u64) + Send + Sync)) -> anyhow::Result<()> {
        for done in [0, 512, 1024] {
            progress(done, 1024);
        }
        Ok(())
    }

    async fn scan_host_keys(&self, targets: &[KeyTarget]) -> Vec<HostKeyRow> {
        targets
            .iter()
            .map(|t| HostKeyRow {
                target: t.clone(),
                algorithm: "ssh-ed25519".to_string(),
                fingerprint: format!("SHA256:fake-fingerprint-of-{}", t.host),
                public_key: String::new(),
                status: KeyStatus::New,
            })
            .collect()
    }

    async fn trust_host_keys(&self, rows: &[HostKeyRow]) -> anyhow::Result<()> {
        let hosts: Vec<String> = rows.iter().map(|r| r.target.label()).collect();
        fs_err::write(self.dir.join("trusted"), hosts.join("\n"))?;
        Ok(())
    }

    async fn preflight(
        &self,
        spec: &ClusterSpec,
        _skip: &BTreeSet<CheckId>,
        on_finding: &(dyn for<'f> Fn(&'f Finding) + Send + Sync),
    ) -> anyhow::Result<Report> {
        let mut report = Report::default();
        for host in &spec.hosts {
            let right = host.ssh.password.as_ref().map(|p| p.expose()) == Some("right");
            for check in CHECKS {
                let status = match (check.id, right) {
                    (_, true) => Status::Pass,
                    (CheckId::Reach, false) => Status::Pass,
                    (CheckId::Auth, false) => Status::Fail,
                    _ => continue,
                };
                let f = Finding {
                    host: host.ip,
                    check: check.id,
                    status,
                    message: if status == Status::Pass {
                        "fine".to_string()
                    } else {
                        format!("login as {} refused", host.ssh.user)
                    },
                    fix: "check the user, password or key file on the Credentials screen"
                        .to_string(),
                };
                on_finding(&f);
                report.findings.push(f);
            }
        }
        Ok(report)
    }

    async fn install(
        &self,
        spec: &ClusterSpec,
        _skip: &[(std::net::IpAddr, String)],
        reporter: Arc<dyn Reporter>,
    ) -> InstallResult {
        for host in &spec.hosts {
            for step in [
                StepId::Prepare,
                StepId::Blobs,
                StepId::Unpack,
                StepId::Mirrors,
            ] {
                reporter.event(install::Event::Step {
                    host: host.ip,
                    step,
                    state: StepState::Started,
                    elapsed_ms: 0,
                });
                if step == StepId::Blobs {
                    reporter.event(install::Event::Transfer {
                        host: host.ip,
                        sent: 1 << 20,
                        total: 1 << 20,
                    });
                }
                reporter.event(install::Event::Step {
                    host: host.ip,
                    step,
                    state: StepState::Done,
                    elapsed_ms: 1,
                });
            }
        }
        InstallResult::Done {
            endpoints: vec![format!("https://{}:6443", spec.first_master().ip)],
            kubeconfig: None,
            log_file: None,
        }
    }

    async fn support_bundle(&self, _clusterfile: &str) -> anyhow::Result<PathBuf> {
        anyhow::bail!("the fake engine writes no support bundle")
    }
}

#[test]
#[ignore = "the terminal side of wizard_in_a_real_terminal, which runs it inside tmux"]
fn wizard_child_with_fake_engine() {
    #[expect(
        clippy::disallowed_methods,
        reason = "a test child finds its directory in its environment"
    )]
    let dir = PathBuf::from(
        std::env::var_os(CHILD_ENV).expect("run by wizard_in_a_real_terminal, which sets it"),
    );
    let input = WizardInput {
        image: ImageInfo {
            name: "hello".to_string(),
            version: "1.0".to_string(),
            runtime: "generic".to_string(),
            size: 1024,
            ..ImageInfo::default()
        },
        resume: load_session(&dir.join("session.json")).unwrap(),
        session_path: dir.join("session.json"),
        clusterfile_path: dir.join("Clusterfile"),
        color: false,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = FakeEngine { dir: dir.clone() };
    let outcome = runtime.block_on(run_wizard(input, &engine)).unwrap();
    fs_err::write(dir.join("outcome"), format!("{outcome:?}")).unwrap();
}

/// A tmux server of our own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            assert!(self.cmd(&["send-keys", "-t", "w", key]).status.success());
        }
    }

    fn text(&self, text: &str) {
        assert!(
            self.cmd(&["send-keys", "-t", "w", "-l", text])
                .status
                .success()
        );
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "w"]).stdout).into_owned()
    }

    /// Wait until the screen shows `text`; fail with the screen after a long while.
    fn wait_for(&self, text: &str) -> String {
        self.wait_within(text, Duration::from_secs(60))
    }

    /// Wait until the screen shows `text`; fail with the screen after `limit`.
    fn wait_within(&self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {text:?}; the screen is:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    fs_err::read_to_string(path).expect("the child wrote its outcome")
}

/// Start the wizard child in a fresh tmux server at 80x24; `None` without tmux.
fn start(name: &str, dir: &Path) -> Option<Tmux> {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("SKIPPED {name}: tmux is not installed (apt-get install tmux)");
        return None;
    }
    let tmux = Tmux {
        socket: format!("airlock-{name}-{}", std::process::id()),
    };
    tmux.launch(dir);
    Some(tmux)
}

impl Tmux {
    fn launch(&self, dir: &Path) {
        let exe = std::env::current_exe().expect("the test binary has a path");
        self.launch_command(&format!(
            "env {CHILD_ENV}={} {} --ignored --exact wizard::wizard_child_with_fake_engine --nocapture",
            dir.display(),
            exe.display()
        ));
    }

    /// Run the shell command line `command` in a new 80x24 session `w`.
    fn launch_command(&self, command: &str) {
        let out = self.cmd(&[
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            "80",
            "-y",
            "24",
            command,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn wizard_resumes_after_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tmux) = start("wizard-resume", dir.path()) else {
        return;
    };
    tmux.wait_for("Verified: every part matches its digest.");
    tmux.keys(&["Enter"]);
    tmux.wait_for("No hosts yet");
    tmux.text("198.18.0.2");
    tmux.keys(&["Enter"]);
    tmux.wait_for("Hosts: 1 master, 0 nodes");
    tmux.keys(&["C-c"]);
    tmux.wait_for("Quit the wizard?");
    tmux.keys(&["y"]);
    let outcome = wait_for_file(&dir.path().join("outcome"));
    assert!(outcome.starts_with("Quit"), "{outcome}");
    fs_err::remove_file(dir.path().join("outcome")).unwrap();

    // The same bundle run again comes back to the same screen with the same hosts.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tmux.cmd(&["has-session", "-t", "w"]).status.success() {
        assert!(Instant::now() < deadline, "the first wizard never exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.launch(dir.path());
    let screen = tmux.wait_for("Hosts: 1 master, 0 nodes");
    assert!(screen.contains("198.18.0.2"), "{screen}");
    tmux.keys(&["C-c", "y"]);
    wait_for_file(&dir.path().join("outcome"));
}

#[test]
fn wizard_in_a_real_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tmux) = start("wizard-e2e", dir.path()) else {
        return;
    };
    tmux.wait_for("Verified: every part matches its digest.");
    tmux.keys(&["Enter"]);
    tmux.wait_for("No hosts yet");
    tmux.text("198.18.0.2");
    tmux.keys(&["Enter", "Tab", "Space", "BTab"]);
    tmux.text("198.18.0.3-198.18.0.300");
    tmux.wait_for("is not an IPv4 address");
    for _ in 0..3 {
        tmux.keys(&["BSpace"]);
    }
    tmux.text("4");
    tmux.wait_for("ok: 2 hosts, Enter to add");
    tmux.keys(&["Enter"]);
    tmux.wait_for("Hosts: 1 master, 2 nodes");

    tmux.keys(&["C-n"]);
    tmux.wait_for("Log in with");
    tmux.keys(&["Down", "Space", "Down"]);
    tmux.text("wrong");
    tmux.wait_for("[*****_]");
    tmux.keys(&["C-n"]);
    let screen = tmux.wait_for("3 new host keys");
    assert!(
        screen.contains("SHA256:fake-fingerprint-of-198.18.0.4"),
        "{screen}"
    );
    assert!(
        !dir.path().join("trusted").exists(),
        "keys were recorded before the user accepted them"
    );
    tmux.keys(&["C-n"]);
    tmux.wait_for("Registry domain");
    let trusted = wait_for_file(&dir.path().join("trusted"));
    assert_eq!(trusted, "198.18.0.2:22\n198.18.0.3:22\n198.18.0.4:22");
    tmux.keys(&["C-n"]);
    let screen = tmux.wait_for("Preflight: 3 failed");
    assert!(screen.contains("FAIL"), "{screen}");
    tmux.keys(&["Down"]);
    tmux.wait_for("login as root refused");

    // Correct the password and check again.
    tmux.keys(&["C-b", "C-b"]);
    tmux.wait_for("Log in with");
    for _ in 0..5 {
        tmux.keys(&["BSpace"]);
    }
    tmux.text("right");
    tmux.keys(&["C-n", "C-n"]);
    tmux.wait_for("All checks passed");
    tmux.keys(&["C-n"]);
    tmux.wait_for("Saved:");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("The cluster is installed.");
    assert!(screen.contains("https://198.18.0.2:6443"), "{screen}");

    tmux.keys(&["C-c"]);
    tmux.wait_for("Quit the wizard?");
    tmux.keys(&["y"]);
    let outcome = wait_for_file(&dir.path().join("outcome"));
    assert!(outcome.starts_with("Installed"), "{outcome}");

    let clusterfile = dir.path().join("Clusterfile");
    let text = fs_err::read_to_string(&clusterfile).unwrap();
    assert!(text.contains("198.18.0.3-198.18.0.4"), "{text}");
    assert!(
        !text.contains("right"),
        "the password was saved without consent:\n{text}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs_err::metadata(&clusterfile).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Run `bundle` in a new session with its own `AIRLOCK_ROOT`; its exit status goes to `exit`.
fn launch_bundle(tmux: &Tmux, bundle: &Path, root: &Path, exit: &Path) {
    tmux.launch_command(&format!(
        "env AIRLOCK_ROOT={} NO_COLOR=1 {}; echo $? > {}",
        root.display(),
        bundle.display(),
        exit.display()
    ));
}

/// Leave the wizard from its result screen and return the bundle's exit status.
fn quit_and_wait(tmux: &Tmux, exit: &Path) -> String {
    tmux.keys(&["C-c"]);
    tmux.wait_for("Quit the wizard?");
    tmux.keys(&["y"]);
    let status = wait_for_file(exit);
    let deadline = Instant::now() + Duration::from_secs(60);
    while tmux.cmd(&["has-session", "-t", "w"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the bundle's session never ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    status.trim().to_string()
}

/// The Welcome screen, then one master and two nodes on the Hosts screen.
fn welcome_and_hosts(tmux: &Tmux, tb: &crate::testbed::Testbed) {
    tmux.wait_within(
        "Verified: every part matches its digest.",
        Duration::from_secs(300),
    );
    tmux.keys(&["Enter"]);
    tmux.wait_for("No hosts yet");
    tmux.text(&tb.hosts[0].to_string());
    tmux.keys(&["Enter"]);
    tmux.wait_for("Hosts: 1 master, 0 nodes");
    tmux.keys(&["Tab", "Space", "BTab"]);
    for ip in &tb.hosts[1..] {
        tmux.text(&ip.to_string());
        tmux.keys(&["Enter"]);
    }
    tmux.wait_for("Hosts: 1 master, 2 nodes");
    tmux.keys(&["C-n"]);
    tmux.wait_for("Log in with");
}

/// Ctrl-N on Credentials: the hosts' real key fingerprints are shown (compared with what
/// `ssh-keygen -lf` says on a host), and a second Ctrl-N accepts them.
fn accept_host_keys(tmux: &Tmux, tb: &crate::testbed::Testbed) {
    tmux.keys(&["C-n"]);
    let screen = tmux.wait_for("3 new host keys");
    let out = tb.exec(
        1,
        &["ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub"],
    );
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let fingerprint = listed.split_whitespace().nth(1).unwrap_or("no fingerprint");
    assert!(
        screen.contains(fingerprint),
        "host 1's fingerprint {fingerprint} is not on the screen:\n{screen}"
    );
    tmux.keys(&["C-n"]);
    tmux.wait_for("Registry domain");
}

/// From a passed preflight to the result screen of a real install.
fn install_from_preflight(tmux: &Tmux, tb: &crate::testbed::Testbed) {
    tmux.keys(&["C-n"]);
    tmux.wait_for("Saved:");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_within("The cluster is installed.", Duration::from_secs(600));
    let registry = format!("registry: https://{}:5000", tb.hosts[0]);
    assert!(screen.contains(&registry), "{screen}");
}

/// Issue 9 end to end: the hello example built and bundled for real, its `.run` file
/// started in tmux, 3 testbed hosts typed in, preflight and install against them over
/// SSH; then a second run whose wrong root password fails preflight until corrected.
#[test]
fn wizard_installs_a_real_bundle_on_three_testbed_hosts() {
    const NAME: &str = "wizard_installs_a_real_bundle_on_three_testbed_hosts";
    if let Some(why) = crate::testbed::skip_reason() {
        eprintln!("SKIPPED {NAME}: {why}");
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("SKIPPED {NAME}: tmux is not installed (apt-get install tmux)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (bundle, tb) = crate::e2e::bundle_and_hosts(work.path(), 3);
    let tmux = Tmux {
        socket: format!("airlock-wizard-real-{}", std::process::id()),
    };

    // First run: log in with the testbed key, pass preflight, install.
    let exit = work.path().join("exit-key");
    launch_bundle(&tmux, &bundle, &work.path().join("root-key"), &exit);
    welcome_and_hosts(&tmux, &tb);
    tmux.keys(&["Down", "Down"]);
    tmux.text(&tb.key.display().to_string());
    accept_host_keys(&tmux, &tb);
    tmux.keys(&["C-n"]);
    let screen = tmux.wait_within("All checks passed", Duration::from_secs(300));
    assert!(!screen.contains("FAIL"), "{screen}");
    install_from_preflight(&tmux, &tb);
    assert_eq!(
        quit_and_wait(&tmux, &exit),
        "0",
        "the first run's exit status"
    );

    let launched = tb.exec(1, &["cat", "/var/lib/airlock/hello.out"]);
    let said = String::from_utf8_lossy(&launched.stdout);
    assert!(
        said.contains("hello from airlock on") && said.contains("via sea.hub:5000"),
        "{launched:?}"
    );
    for host in 2..=3 {
        let mirror = tb.exec(
            host,
            &["test", "-f", "/etc/containerd/certs.d/docker.io/hosts.toml"],
        );
        assert!(
            mirror.status.success(),
            "host {host} has no registry mirror"
        );
    }

    // Second run: the root password, wrong first.
    let exit = work.path().join("exit-password");
    launch_bundle(&tmux, &bundle, &work.path().join("root-password"), &exit);
    welcome_and_hosts(&tmux, &tb);
    tmux.keys(&["Down", "Space", "Down"]);
    let wrong = "not-the-password";
    tmux.text(wrong);
    accept_host_keys(&tmux, &tb);
    tmux.keys(&["C-n"]);
    let screen = tmux.wait_within("Preflight: 3 failed", Duration::from_secs(300));
    assert!(screen.contains("FAIL"), "{screen}");
    tmux.keys(&["Down"]);
    let screen = tmux.wait_for("login as root refused");
    assert!(
        !screen.contains(wrong),
        "the password is on the screen:\n{screen}"
    );

    // Correct it and check again.
    tmux.keys(&["C-b", "C-b"]);
    tmux.wait_for("Log in with");
    for _ in 0..wrong.len() {
        tmux.keys(&["BSpace"]);
    }
    tmux.text(&tb.root_password);
    tmux.keys(&["C-n"]);
    tmux.wait_for("Registry domain");
    tmux.keys(&["C-n"]);
    let screen = tmux.wait_within("All checks passed", Duration::from_secs(300));
    assert!(!screen.contains("FAIL"), "{screen}");
    install_from_preflight(&tmux, &tb);
    assert_eq!(
        quit_and_wait(&tmux, &exit),
        "0",
        "the second run's exit status"
    );

    let saved = fs_err::read_to_string(work.path().join("root-password/wizard/Clusterfile"))
        .expect("the wizard saved the Clusterfile");
    assert!(
        saved.contains("hello-cluster:v1") && !saved.contains("v1:v1"),
        "the saved Clusterfile names the wrong image:\n{saved}"
    );
    assert!(
        !saved.contains(&tb.root_password),
        "the password was saved without consent:\n{saved}"
    );
}
