//! Secrets never leak: an install with a login password, a key passphrase and a sudo
//! password onto testbed hosts, watched and then searched (issue 10).
//!
//! 1. Build and bundle the hello example (as `e2e.rs` does), bring up 2 testbed hosts
//!    with containerd, and authorize a passphrase-protected key for the non-root user
//!    `ops` on the first.
//! 2. Install with a Clusterfile holding all three secrets inline: host 1 logs in as
//!    `ops` with the key (`pkPasswd`) and sudoes with `sudoPasswd`; host 2 logs in as
//!    `ops` with `passwd` (sudo then uses it too).
//! 3. Meanwhile a sampler lists every process (`ps -eo args`) on the operator machine
//!    and inside each host, over and over, until the install ends.
//! 4. Afterwards no secret may appear in: the sampled process lists, the install's
//!    output, any file under the operator's root (state, journal, logs, saved
//!    Clusterfile, known_hosts), the Clusterfile as saved without secrets (what the
//!    wizard's support bundle carries), any file a host wrote (its overlay's upper
//!    layer and containerd's state, on the machine), the hosts' own `/tmp` and `/run`,
//!    or a host's journal when it has one.
//! 5. Files under the operator's root that hold keys or host keys are mode 0600.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use airlock::spec::clusterfile::Clusterfile;

use crate::e2e::build_and_bundle;
use crate::testbed::{Testbed, TestbedOptions, skip_reason};

const PASSPHRASE: &str = "kp-Phr4se-ZQ81";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if m.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Lists processes on the machine and in every host until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<usize>,
}

impl Sampler {
    fn start(tb: &Arc<Testbed>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tb, stop2, seen2) = (tb.clone(), stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop2.load(Ordering::SeqCst) {
                let mut lists = vec![text(
                    &Command::new("ps").args(["-eo", "args"]).output().unwrap(),
                )];
                for host in 1..=tb.hosts.len() {
                    lists.push(text(&tb.exec(host, &["ps", "-eo", "args"])));
                }
                seen2.lock().unwrap().extend(lists);
                rounds += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            rounds
        });
        Sampler { stop, seen, thread }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let rounds = self.thread.join().unwrap();
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        (rounds, seen)
    }
}

#[test]
fn no_secret_appears_in_processes_logs_state_or_host_files() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED no_secret_appears_in_processes_logs_state_or_host_files: {why}");
        return;
    }
    let Some(keygen) = crate::support::tool("ssh-keygen") else {
        eprintln!("SKIPPED no_secret_appears_in_processes_logs_state_or_host_files: no ssh-keygen");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let bundle = build_and_bundle(work.path());
    let tb = Arc::new(
        Testbed::up(TestbedOptions {
            hosts: 2,
            containerd: true,
            ..TestbedOptions::default()
        })
        .expect("testbed up"),
    );
    let ops_password = tb.ops_password.clone();
    assert!(
        ops_password.len() >= 8,
        "the testbed's ops password is too short to search for"
    );
    let secrets = [ops_password.as_str(), PASSPHRASE];

    // A passphrase-protected key for ops on host 1 (ssh-keygen reads -N from argv:
    // that is this test's own process on the machine, not airlock's).
    let key = work.path().join("ops_key");
    let made = Command::new(keygen)
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            PASSPHRASE,
            "-C",
            "secrets-test",
            "-f",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let authorize = format!(
        "set -e; d=$(getent passwd ops | cut -d: -f6)/.ssh; mkdir -p \"$d\"; printf '%s\\n' '{}' >> \"$d/authorized_keys\"; chown -R ops: \"$d\"; chmod 700 \"$d\"; chmod 600 \"$d/authorized_keys\"",
        public.trim()
    );
    let out = tb.exec(1, &["sh", "-c", &authorize]);
    assert!(out.status.success(), "{}", text(&out));

    let clusterfile = work.path().join("Clusterfile");
    let cf_text = format!(
        "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata:\n  name: hello\nspec:\n  image: hello-cluster:v1\n  hosts:\n    - ips: [ {h1} ]\n      roles: [ master ]\n      ssh:\n        user: ops\n        pk: {key}\n        pkPasswd: \"{PASSPHRASE}\"\n        sudoPasswd: \"{ops_password}\"\n    - ips: [ {h2} ]\n      roles: [ node ]\n      ssh:\n        user: ops\n        passwd: \"{ops_password}\"\n",
        h1 = tb.hosts[0],
        h2 = tb.hosts[1],
        key = key.display(),
    );
    std::fs::write(&clusterfile, &cf_text).unwrap();

    let operator = work.path().join("operator");
    let sampler = Sampler::start(&tb);
    let out = Command::new(&bundle)
        .args(["install", "-f"])
        .arg(&clusterfile)
        .arg("--yes")
        .env("AIRLOCK_ROOT", &operator)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (rounds, lists) = sampler.finish();
    let output = text(&out);
    assert!(out.status.success(), "install failed:\n{output}");
    assert!(rounds >= 2, "the process sampler ran {rounds} times only");

    // The search itself works: the Clusterfile the test wrote holds every secret.
    let written = std::fs::read(&clusterfile).unwrap();
    assert!(secrets.iter().all(|s| contains(&written, s)));

    let mut leaks: Vec<String> = Vec::new();
    for secret in secrets {
        let tag = if secret == PASSPHRASE {
            "the key passphrase"
        } else {
            "the ops (login and sudo) password"
        };
        if output.contains(secret) {
            leaks.push(format!("{tag} in the install output"));
        }
        if let Some(list) = lists.iter().find(|l| l.contains(secret)) {
            let line = list
                .lines()
                .find(|l| l.contains(secret))
                .unwrap_or_default();
            leaks.push(format!("{tag} in a process list: {line}"));
        }
        for file in files_under(&operator) {
            if contains(&std::fs::read(&file).unwrap_or_default(), secret) {
                leaks.push(format!("{tag} in {}", file.display()));
            }
        }
        let saved = Clusterfile::parse("Clusterfile", &cf_text)
            .unwrap()
            .to_yaml_without_secrets();
        if saved.contains(secret) {
            leaks.push(format!("{tag} in the Clusterfile saved without secrets"));
        }
        for host in 1..=tb.hosts.len() {
            // Everything the host wrote to its root overlay, and containerd's state,
            // are files on the machine under the host's testbed directory.
            for file in files_under(&tb.dir.join(format!("h{host}"))) {
                if contains(&std::fs::read(&file).unwrap_or_default(), secret) {
                    leaks.push(format!("{tag} on host {host} in {}", file.display()));
                }
            }
            // Its /tmp, /run and journal are its own: search inside, the pattern on
            // stdin so it is not in argv.
            let script = "pat=$(mktemp); cat > \"$pat\"; \
                 grep -rlaF -f \"$pat\" /tmp /run 2>/dev/null | grep -v \"^$pat\\$\"; \
                 if command -v journalctl >/dev/null && [ -d /run/systemd/system ]; then \
                   journalctl --no-pager -q 2>/dev/null | grep -qaF -f \"$pat\" && echo journal; fi; \
                 rm -f \"$pat\"; true";
            let found = exec_with_stdin(&tb, host, script, secret);
            for line in found.lines().filter(|l| !l.trim().is_empty()) {
                leaks.push(format!("{tag} on host {host} in {line}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));

    // Files that hold keys are private.
    let mut loose = Vec::new();
    for file in files_under(&operator) {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        if name.contains("known_hosts") || name.ends_with(".key") || name.contains("token") {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            if mode != 0o600 {
                loose.push(format!("{} is {mode:o}", file.display()));
            }
        }
    }
    assert!(loose.is_empty(), "secret files not 0600: {loose:?}");
    eprintln!(
        "secrets test: {rounds} process-list rounds, {} files under the operator root searched",
        files_under(&operator).len()
    );
}

/// Run `script` with `sh -c` in host `host`, `input` on its stdin; its stdout.
fn exec_with_stdin(tb: &Testbed, host: usize, script: &str, input: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(crate::testbed::script())
        .args([
            "exec",
            "--name",
            &tb.name,
            &host.to_string(),
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{input}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
