//! The SSH remote layer against a real sshd on loopback (see `sshd.rs`).
//!
//! Each test starts its own sshd (and test user when it needs a password), so
//! tests run in parallel. They skip, saying so, when not root or sshd is missing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use airlock::remote::known_hosts::KnownHosts;
use airlock::remote::ssh::{SshAuth, SshRemote, SshTarget};
use airlock::remote::{Remote, RemoteCommand, RemoteError, Secret, Stream, UploadSource};

use crate::sshd::{Sshd, TestUser, keygen, run, skip_unless_sshd};

fn target(sshd: &Sshd, user: &str, auth: SshAuth) -> SshTarget {
    let mut target = SshTarget::new("127.0.0.1", user, auth);
    target.port = sshd.port;
    target.connect_timeout = Duration::from_secs(20);
    target
}

fn key_auth(path: &Path) -> SshAuth {
    SshAuth::Key {
        path: path.to_path_buf(),
        passphrase: None,
    }
}

/// An sshd with a root ed25519 key authorized; returns the key path.
fn root_sshd(dir: &Path) -> (Sshd, PathBuf) {
    let sshd = Sshd::start("");
    let key = keygen(dir, "ed25519", "");
    sshd.authorize(&key.with_extension("pub"));
    (sshd, key)
}

async fn stdout(remote: &SshRemote, cmd: RemoteCommand) -> String {
    remote.check(&cmd).await.unwrap().stdout_text()
}

fn random_file(path: &Path, len: usize) {
    let mut data = vec![0u8; len];
    rand::fill(&mut data[..]);
    fs_err::write(path, data).unwrap();
}

fn whole(path: &Path) -> UploadSource {
    UploadSource {
        path: path.to_path_buf(),
        offset: 0,
        len: fs_err::metadata(path).unwrap().len(),
        sha256: None,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    airlock::digest::Digest::of(data).hex().to_string()
}

#[tokio::test]
async fn ssh_key_auth_ed25519_rsa_ecdsa_and_passphrase() {
    if skip_unless_sshd("ssh_key_auth_ed25519_rsa_ecdsa_and_passphrase") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start("");
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let protected_dir = dir.path().join("protected");
    fs_err::create_dir(&protected_dir).unwrap();
    let protected = keygen(&protected_dir, "ed25519", "correct horse");
    sshd.authorize(&protected.with_extension("pub"));
    let mut first = true;
    for kind in ["ed25519", "rsa", "ecdsa"] {
        let key = keygen(dir.path(), kind, "");
        sshd.authorize(&key.with_extension("pub"));
        let remote = SshRemote::connect(target(&sshd, "root", key_auth(&key)), &known)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}\n{}", sshd.log()));
        assert_eq!(
            stdout(&remote, RemoteCommand::new("id").arg("-un")).await,
            "root\n"
        );
        // Trust on first use: the first connection records the key, later ones find it.
        assert_eq!(remote.host_key().newly_trusted, first, "{kind}");
        assert_eq!(remote.host_key().fingerprint, sshd.host_fingerprint());
        first = false;
        assert!(
            sshd.log().contains("Accepted publickey for root"),
            "{}",
            sshd.log()
        );
    }
    let recorded = fs_err::read_to_string(known.path()).unwrap();
    let host_key = sshd.host_public_key();
    let host_key_base64 = host_key.split_whitespace().nth(1).unwrap();
    assert_eq!(
        recorded,
        format!("127.0.0.1:{} ssh-ed25519 {host_key_base64}\n", sshd.port)
    );

    let with_passphrase = SshAuth::Key {
        path: protected.clone(),
        passphrase: Some(Secret::new("correct horse")),
    };
    let remote = SshRemote::connect(target(&sshd, "root", with_passphrase), &known)
        .await
        .unwrap();
    assert_eq!(
        stdout(&remote, RemoteCommand::new("whoami")).await,
        "root\n"
    );

    let without = SshRemote::connect(target(&sshd, "root", key_auth(&protected)), &known).await;
    let err = without.unwrap_err();
    assert!(matches!(err, RemoteError::Key { .. }), "{err}");
    assert!(err.to_string().contains("passphrase"), "{err}");
}

#[tokio::test]
async fn ssh_password_auth_and_wrong_password() {
    if skip_unless_sshd("ssh_password_auth_and_wrong_password") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start("KbdInteractiveAuthentication no");
    let user = TestUser::create("airlock-t-pw", false);
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let auth = SshAuth::Password(Secret::new(user.password.clone()));
    let remote = SshRemote::connect(target(&sshd, &user.name, auth), &known)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(
        stdout(&remote, RemoteCommand::new("id").arg("-un")).await,
        format!("{}\n", user.name)
    );
    assert!(
        sshd.log()
            .contains(&format!("Accepted password for {}", user.name))
    );
    remote.close().await;

    let wrong = SshAuth::Password(Secret::new("not-the-password"));
    let err = SshRemote::connect(target(&sshd, &user.name, wrong), &known)
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Auth { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&user.name) && message.contains("127.0.0.1"),
        "{message}"
    );
    assert!(!message.contains("not-the-password"), "{message}");
}

#[tokio::test]
async fn ssh_keyboard_interactive_answers_with_the_password() {
    if skip_unless_sshd("ssh_keyboard_interactive_answers_with_the_password") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start("PasswordAuthentication no");
    let user = TestUser::create("airlock-t-kbd", false);
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let auth = SshAuth::Password(Secret::new(user.password.clone()));
    let remote = SshRemote::connect(target(&sshd, &user.name, auth), &known)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(
        stdout(&remote, RemoteCommand::new("whoami")).await,
        format!("{}\n", user.name)
    );
    let log = sshd.log();
    assert!(
        log.contains(&format!(
            "Accepted keyboard-interactive/pam for {}",
            user.name
        )),
        "{log}"
    );
}

#[tokio::test]
async fn ssh_agent_auth() {
    if skip_unless_sshd("ssh_agent_auth") {
        return;
    }
    if !Path::new("/usr/bin/ssh-agent").exists() {
        eprintln!("SKIPPED ssh_agent_auth: ssh-agent missing (apt-get install openssh-client)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sshd, key) = root_sshd(dir.path());
    let socket = dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    run(std::process::Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &socket));
    // The key file is gone: only the agent can sign.
    fs_err::remove_file(&key).unwrap();
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let auth = SshAuth::Agent {
        socket: socket.clone(),
    };
    let result = SshRemote::connect(target(&sshd, "root", auth), &known).await;
    let _ = agent.kill();
    let _ = agent.wait();
    let remote = result.unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(
        stdout(&remote, RemoteCommand::new("whoami")).await,
        "root\n"
    );
}

#[tokio::test]
async fn ssh_exit_code_stderr_streaming_quoting_and_timeout() {
    if skip_unless_sshd("ssh_exit_code_stderr_streaming_quoting_and_timeout") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sshd, key) = root_sshd(dir.path());
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let remote = SshRemote::connect(target(&sshd, "root", key_auth(&key)), &known)
        .await
        .unwrap();

    let script = RemoteCommand::script(
        "echo out1; echo err1 >&2; cat; echo out2; exit 7",
        Vec::<String>::new(),
    )
    .stdin("from-stdin\n");
    let mut lines = Vec::new();
    let out = remote
        .run_streaming(&script, &mut |stream, line| {
            lines.push((stream, line.to_string()))
        })
        .await
        .unwrap();
    assert_eq!(out.status, 7);
    assert_eq!(out.stdout_text(), "out1\nfrom-stdin\nout2\n");
    assert_eq!(out.stderr, b"err1\n");
    let stdout_lines: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(stdout_lines, ["out1", "from-stdin", "out2"]);
    assert!(lines.contains(&(Stream::Stderr, "err1".to_string())));

    let failed = remote
        .check(&RemoteCommand::new("ls").arg("/no/such/dir"))
        .await
        .unwrap_err();
    assert!(
        matches!(&failed, RemoteError::CommandFailed { status: 2, stderr, .. } if stderr.contains("/no/such/dir")),
        "{failed}"
    );

    let hostile = ["a b", "it's", "$(touch /tmp/airlock-pwned)", "", "*", "\\n"];
    let echoed = remote
        .check(
            &RemoteCommand::new("printf")
                .arg("[%s]")
                .args(hostile)
                .env("X", "y z")
                .cwd("/"),
        )
        .await
        .unwrap()
        .stdout_text();
    assert_eq!(echoed, "[a b][it's][$(touch /tmp/airlock-pwned)][][*][\\n]");

    let slow = RemoteCommand::new("sleep")
        .arg("37")
        .timeout(Duration::from_secs(1));
    let err = remote.run(&slow).await.unwrap_err();
    assert!(
        matches!(err, RemoteError::Timeout { seconds: 1, .. }),
        "{err}"
    );
    // The far side stops the command too: it does not run on unseen.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::process::Command::new("pgrep")
        .args(["-fx", "sleep 37"])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the timed-out command still runs on the host"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The connection still works after a timed-out command.
    assert_eq!(
        stdout(&remote, RemoteCommand::new("echo").arg("ok")).await,
        "ok\n"
    );
}

#[tokio::test]
async fn ssh_sudo_with_password_keeps_it_out_of_argv() {
    if skip_unless_sshd("ssh_sudo_with_password_keeps_it_out_of_argv") {
        return;
    }
    if !Path::new("/usr/bin/sudo").exists() {
        eprintln!("SKIPPED ssh_sudo_with_password_keeps_it_out_of_argv: sudo missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start("");
    let user = TestUser::create("airlock-t-sudo", true);
    let key = keygen(dir.path(), "ed25519", "");
    sshd.authorize(&key.with_extension("pub"));
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let mut with_password = target(&sshd, &user.name, key_auth(&key));
    with_password.sudo_password = Some(Secret::new(user.password.clone()));
    let remote = SshRemote::connect(with_password.clone(), &known)
        .await
        .unwrap();

    assert_eq!(
        stdout(&remote, RemoteCommand::new("id").arg("-u").sudo()).await,
        "0\n"
    );
    // The command's own stdin arrives after sudo took the password.
    let cat = RemoteCommand::new("cat").stdin("payload-for-root").sudo();
    assert_eq!(stdout(&remote, cat).await, "payload-for-root");

    // While a sudo command runs, no process shows the password in its argv. The
    // listing goes to a file read here, not through the (redacted) output.
    let listing = dir.path().join("ps.txt");
    fs_err::write(&listing, "").unwrap();
    let ps = RemoteCommand::script("ps -eo args > \"$1\"", [listing.display().to_string()]).sudo();
    remote.check(&ps).await.unwrap();
    let processes = fs_err::read_to_string(&listing).unwrap();
    assert!(processes.contains("sudo -S -p"), "{processes}");
    assert!(!processes.contains(&user.password), "{processes}");

    // Upload as the non-root user into a root-only directory goes through sudo too.
    let blob = dir.path().join("blob");
    random_file(&blob, 100_000);
    let dest_dir = dir.path().join("root-only");
    fs_err::create_dir(&dest_dir).unwrap();
    let dest = dest_dir.join("blob");
    remote
        .upload(&whole(&blob), dest.to_str().unwrap(), 0o600)
        .await
        .unwrap();
    assert_eq!(fs_err::read(&dest).unwrap(), fs_err::read(&blob).unwrap());
    remote.close().await;

    let mut wrong = with_password.clone();
    wrong.sudo_password = Some(Secret::new("wrong-sudo-password"));
    let remote = SshRemote::connect(wrong, &known).await.unwrap();
    let err = remote
        .run(&RemoteCommand::new("true").sudo())
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Sudo { .. }), "{err}");
    assert!(err.to_string().contains("refused the password"), "{err}");
    remote.close().await;

    let mut none = with_password;
    none.sudo_password = None;
    let remote = SshRemote::connect(none, &known).await.unwrap();
    let err = remote
        .run(&RemoteCommand::new("true").sudo())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("none was given"), "{err}");
}

#[tokio::test]
async fn ssh_changed_host_key_is_refused() {
    if skip_unless_sshd("ssh_changed_host_key_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sshd, key) = root_sshd(dir.path());
    let other = keygen(dir.path(), "ecdsa", "");
    let other_public = fs_err::read_to_string(other.with_extension("pub")).unwrap();
    let mut words = other_public.split_whitespace();
    let (kind, data) = (words.next().unwrap(), words.next().unwrap());
    let path = dir.path().join("known_hosts");
    fs_err::write(
        &path,
        format!(
            "# airlock known hosts\n127.0.0.1:1 ssh-ed25519 AAAA\n127.0.0.1:{} {kind} {data}\n",
            sshd.port
        ),
    )
    .unwrap();
    let known = KnownHosts::new(&path);
    let err = SshRemote::connect(target(&sshd, "root", key_auth(&key)), &known)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, RemoteError::HostKeyChanged { line: 3, .. }),
        "{message}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(&sshd.host_fingerprint()), "{message}");
    assert!(message.contains("remove line 3"), "{message}");
    // No credential was offered to the impostor.
    assert!(!sshd.log().contains("Accepted"), "{}", sshd.log());
}

/// The wizard's host key step: the key is fetched without logging in, matches what
/// `ssh-keygen -lf` says of the server's key, and once trusted a login accepts it.
#[tokio::test]
async fn ssh_host_key_scan_logs_nothing_in_and_matches_the_server() {
    if skip_unless_sshd("ssh_host_key_scan_logs_nothing_in_and_matches_the_server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sshd, key) = root_sshd(dir.path());
    let scanned =
        airlock::remote::ssh::scan_host_key("127.0.0.1", sshd.port, Duration::from_secs(20))
            .await
            .unwrap();
    assert_eq!(
        airlock::remote::known_hosts::fingerprint(&scanned),
        sshd.host_fingerprint()
    );
    assert!(
        !sshd.log().contains("Accepted"),
        "the scan logged in: {}",
        sshd.log()
    );
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    known.trust("127.0.0.1", sshd.port, &scanned).unwrap();
    let remote = SshRemote::connect(target(&sshd, "root", key_auth(&key)), &known)
        .await
        .unwrap();
    assert!(
        !remote.host_key().newly_trusted,
        "the key was already trusted"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = airlock::remote::ssh::scan_host_key("127.0.0.1", port, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn ssh_unreachable_host_is_named() {
    if skip_unless_sshd("ssh_unreachable_host_is_named") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let port = crate::sshd::free_port();
    let mut closed = SshTarget::new("127.0.0.1", "root", SshAuth::Password(Secret::new("x")));
    closed.port = port;
    closed.connect_attempts = 3;
    closed.retry_backoff = Duration::from_millis(10);
    let err = SshRemote::connect(closed, &known).await.unwrap_err();
    assert!(matches!(err, RemoteError::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    let mut blackhole = SshTarget::new(
        "198.18.255.254",
        "root",
        SshAuth::Password(Secret::new("x")),
    );
    blackhole.connect_attempts = 1;
    blackhole.connect_timeout = Duration::from_secs(2);
    let err = SshRemote::connect(blackhole, &known).await.unwrap_err();
    assert!(matches!(err, RemoteError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("198.18.255.254"), "{err}");
}

#[tokio::test]
async fn ssh_upload_verifies_region_mode_and_skips_present() {
    if skip_unless_sshd("ssh_upload_verifies_region_mode_and_skips_present") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sshd, key) = root_sshd(dir.path());
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let remote = SshRemote::connect(target(&sshd, "root", key_auth(&key)), &known)
        .await
        .unwrap();
    let blob = dir.path().join("blob");
    random_file(&blob, 3 * 1024 * 1024 + 17);
    let data = fs_err::read(&blob).unwrap();
    let dest = dir.path().join("remote dir/sub/blob");
    let dest_str = dest.to_str().unwrap();
    let seen = AtomicU64::new(0);
    let report = remote
        .upload_with_progress(&whole(&blob), dest_str, 0o640, &|n| {
            seen.store(n, Ordering::SeqCst);
        })
        .await
        .unwrap();
    assert_eq!(report.bytes_sent, data.len() as u64);
    assert_eq!(report.resumed_from, 0);
    assert_eq!(seen.load(Ordering::SeqCst), data.len() as u64);
    assert_eq!(fs_err::read(&dest).unwrap(), data);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        fs_err::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(!Path::new(&format!("{dest_str}.airlock-part")).exists());

    // With the digest known, a second upload finds the content present.
    let mut known_digest = whole(&blob);
    known_digest.sha256 = Some(sha256_hex(&data));
    let again = remote
        .upload_with_progress(&known_digest, dest_str, 0o640, &|_| {})
        .await
        .unwrap();
    assert!(again.already_present);
    assert_eq!(again.bytes_sent, 0);

    // A region of the file.
    let region = UploadSource {
        path: blob.clone(),
        offset: 1000,
        len: 1_500_000,
        sha256: Some(sha256_hex(&data[1000..1_501_000])),
    };
    let region_dest = dir.path().join("region");
    remote
        .upload(&region, region_dest.to_str().unwrap(), 0o644)
        .await
        .unwrap();
    assert_eq!(fs_err::read(&region_dest).unwrap(), &data[1000..1_501_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_upload_resumes_after_killed_connection() {
    if skip_unless_sshd("ssh_upload_resumes_after_killed_connection") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sshd, key) = root_sshd(dir.path());
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let blob = dir.path().join("blob");
    let len = 48 * 1024 * 1024;
    random_file(&blob, len);
    let dest = dir.path().join("dest/blob");
    let dest_str = dest.to_str().unwrap();
    let part = PathBuf::from(format!("{dest_str}.airlock-part"));

    let remote = SshRemote::connect(target(&sshd, "root", key_auth(&key)), &known)
        .await
        .unwrap();
    let killed = AtomicBool::new(false);
    let first = remote
        .upload_with_progress(&whole(&blob), dest_str, 0o644, &|sent| {
            if sent >= 8 * 1024 * 1024 && !killed.swap(true, Ordering::SeqCst) {
                sshd.kill_sessions();
            }
        })
        .await;
    assert!(killed.load(Ordering::SeqCst));
    let err = first.unwrap_err();
    assert!(matches!(err, RemoteError::Session { .. }), "{err}");
    assert!(!dest.exists());
    let arrived = fs_err::metadata(&part).unwrap().len();
    assert!(arrived > 0 && arrived < len as u64, "{arrived}");
    assert_eq!(
        fs_err::read(&part).unwrap(),
        fs_err::read(&blob).unwrap()[..arrived as usize]
    );

    let remote = SshRemote::connect(target(&sshd, "root", key_auth(&key)), &known)
        .await
        .unwrap();
    let second = remote
        .upload_with_progress(&whole(&blob), dest_str, 0o644, &|_| {})
        .await
        .unwrap();
    assert_eq!(second.resumed_from, arrived);
    assert_eq!(second.bytes_sent, len as u64 - arrived);
    assert_eq!(fs_err::read(&dest).unwrap(), fs_err::read(&blob).unwrap());
    assert!(!part.exists());
}

#[tokio::test]
async fn ssh_upload_corrupted_partial_is_rejected() {
    if skip_unless_sshd("ssh_upload_corrupted_partial_is_rejected") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sshd, key) = root_sshd(dir.path());
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let remote = SshRemote::connect(target(&sshd, "root", key_auth(&key)), &known)
        .await
        .unwrap();
    let blob = dir.path().join("blob");
    random_file(&blob, 2 * 1024 * 1024);
    let dest = dir.path().join("blob.out");
    let dest_str = dest.to_str().unwrap();
    let part = PathBuf::from(format!("{dest_str}.airlock-part"));

    // A partial from an "earlier attempt" whose bytes were damaged in flight.
    fs_err::write(&part, vec![0xAAu8; 1024 * 1024]).unwrap();
    let err = remote
        .upload(&whole(&blob), dest_str, 0o644)
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::TransferCorrupt { .. }), "{err}");
    assert!(err.to_string().contains(dest_str), "{err}");
    assert!(!part.exists() && !dest.exists());

    // A wrong expected digest is rejected the same way.
    let mut lying = whole(&blob);
    lying.sha256 = Some(sha256_hex(b"something else"));
    let err = remote.upload(&lying, dest_str, 0o644).await.unwrap_err();
    assert!(matches!(err, RemoteError::TransferCorrupt { .. }), "{err}");
    assert!(!part.exists() && !dest.exists());

    // The retry starts from scratch and lands.
    let report = remote
        .upload_with_progress(&whole(&blob), dest_str, 0o644, &|_| {})
        .await
        .unwrap();
    assert_eq!(report.resumed_from, 0);
    assert_eq!(fs_err::read(&dest).unwrap(), fs_err::read(&blob).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_through_a_bastion() {
    if skip_unless_sshd("ssh_through_a_bastion") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (bastion_sshd, key) = root_sshd(dir.path());
    let inner = Sshd::start("");
    inner.authorize(&key.with_extension("pub"));
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let mut through = target(&inner, "root", key_auth(&key));
    through.bastion = Some(Box::new(target(&bastion_sshd, "root", key_auth(&key))));
    through.connect_attempts = 1;
    let remote = SshRemote::connect(through, &known).await.unwrap();
    let out = stdout(&remote, RemoteCommand::new("echo").arg("inside")).await;
    assert_eq!(out, "inside\n");
    // Both hosts were learned: the bastion and the host behind it.
    let recorded = fs_err::read_to_string(known.path()).unwrap();
    assert!(recorded.contains(&format!("127.0.0.1:{} ", bastion_sshd.port)));
    assert!(recorded.contains(&format!("127.0.0.1:{} ", inner.port)));
    // The traffic really goes through the bastion: cut it and the session dies.
    bastion_sshd.kill_sessions();
    let err = remote.run(&RemoteCommand::new("true")).await.unwrap_err();
    assert!(matches!(err, RemoteError::Session { .. }), "{err}");
}

/// Not run by default: prints the upload throughput of a 256 MiB file on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run with --ignored --nocapture"]
async fn ssh_upload_throughput_256mib() {
    if skip_unless_sshd("ssh_upload_throughput_256mib") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sshd, key) = root_sshd(dir.path());
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let remote = SshRemote::connect(target(&sshd, "root", key_auth(&key)), &known)
        .await
        .unwrap();
    let blob = dir.path().join("blob");
    random_file(&blob, 256 * 1024 * 1024);
    for (label, sha256) in [("digest given", true), ("digest computed locally", false)] {
        let mut source = whole(&blob);
        if sha256 {
            source.sha256 = Some(
                airlock::digest::Digest::of(&fs_err::read(&blob).unwrap())
                    .hex()
                    .to_string(),
            );
        }
        let dest = dir.path().join(format!("dest-{sha256}"));
        let started = std::time::Instant::now();
        remote
            .upload(&source, dest.to_str().unwrap(), 0o644)
            .await
            .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "256 MiB upload ({label}): {seconds:.2}s, {:.1} MiB/s",
            256.0 / seconds
        );
    }
}
