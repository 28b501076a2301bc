//! Every screen as an 80x24 snapshot (including error states), and the state machine
//! driven by key events, without a terminal.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

use crate::install::{self, StepId, StepState};
use crate::preflight::{CHECKS, CheckId, Finding, Status};
use crate::spec::clusterfile::Clusterfile;
use crate::wizard::event::{Event, InstallResult, Key};
use crate::wizard::state::{
    AuthMethod, HostKeyRow, HostKeys, ImageInfo, KeyStatus, KeyTarget, Param, Screen, State, Verify,
};
use crate::wizard::{Action, draw, on};

fn image() -> ImageInfo {
    ImageInfo {
        name: "hello".to_string(),
        version: "1.0".to_string(),
        runtime: "kubernetes v1.30.2".to_string(),
        size: 1_288_490_189,
        signer: Some("Example Corp release key (ed25519 3F2A...9C1D)".to_string()),
        platforms: vec!["linux/amd64".to_string()],
        params: vec![
            Param {
                name: "Replicas".to_string(),
                default: "2".to_string(),
                help: "Replicas of the hello app.".to_string(),
            },
            Param {
                name: "Greeting".to_string(),
                default: "hello".to_string(),
                help: "What the app says.".to_string(),
            },
        ],
    }
}

fn render(state: &State) -> String {
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal.draw(|f| draw(state, f)).unwrap();
    terminal.backend().to_string()
}

fn press(state: &mut State, key: Key) -> Option<Action> {
    on(state, Event::Key(key))
}

fn typed(state: &mut State, text: &str) {
    for c in text.chars() {
        assert_eq!(press(state, Key::Char(c)), None);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A fresh wizard, verified, on the Hosts screen.
fn at_hosts() -> State {
    let mut s = State::new(image());
    assert_eq!(on(&mut s, Event::Start), Some(Action::Verify));
    on(&mut s, Event::Verified(Ok(())));
    assert_eq!(press(&mut s, Key::Enter), None);
    assert_eq!(s.screen, Screen::Hosts);
    s
}

/// Three testbed hosts: one master, a range of two nodes.
fn with_hosts() -> State {
    let mut s = at_hosts();
    typed(&mut s, "198.18.0.2");
    press(&mut s, Key::Enter);
    press(&mut s, Key::Tab);
    press(&mut s, Key::Char(' '));
    press(&mut s, Key::BackTab);
    typed(&mut s, "198.18.0.3-198.18.0.4");
    press(&mut s, Key::Enter);
    s
}

fn at_credentials() -> State {
    let mut s = with_hosts();
    assert_eq!(press(&mut s, Key::CtrlN), None);
    assert_eq!(s.screen, Screen::Credentials);
    s
}

/// What the engine reports for `targets`: the first with `first`, the others new.
fn key_rows(targets: &[KeyTarget], first: KeyStatus) -> Vec<HostKeyRow> {
    targets
        .iter()
        .enumerate()
        .map(|(i, t)| HostKeyRow {
            target: t.clone(),
            algorithm: "ssh-ed25519".to_string(),
            fingerprint: format!("SHA256:{}xbMzVtOkiDXQHPAqn2tzy8mK2sK9yYJ3dbs0Hk", t.host),
            public_key: format!("ssh-ed25519 AAAAkey{i}"),
            status: if i == 0 {
                first.clone()
            } else {
                KeyStatus::New
            },
        })
        .collect()
}

/// Credentials filled in with a key file; Ctrl-N asks for the host keys, which arrive.
fn with_host_keys(first: KeyStatus) -> State {
    let mut s = at_credentials();
    press(&mut s, Key::Down);
    press(&mut s, Key::Down);
    typed(&mut s, "/root/.ssh/id_ed25519");
    let action = press(&mut s, Key::CtrlN);
    let Some(Action::ScanHostKeys { targets }) = action else {
        panic!("expected a host key scan, got {action:?}")
    };
    assert_eq!(
        targets.iter().map(KeyTarget::label).collect::<Vec<_>>(),
        ["198.18.0.2:22", "198.18.0.3:22", "198.18.0.4:22"]
    );
    assert_eq!(s.screen, Screen::Credentials, "nothing is accepted unseen");
    assert_eq!(press(&mut s, Key::CtrlN), None, "a second Ctrl-N waits");
    on(&mut s, Event::HostKeys(key_rows(&targets, first)));
    s
}

fn at_settings() -> State {
    let mut s = with_host_keys(KeyStatus::Known);
    let action = press(&mut s, Key::CtrlN);
    let Some(Action::TrustHostKeys { rows }) = action else {
        panic!("expected the new keys to be trusted, got {action:?}")
    };
    assert_eq!(rows.len(), 2, "only the new keys are recorded: {rows:?}");
    assert_eq!(s.screen, Screen::Settings);
    s
}

fn pass_all(s: &mut State) {
    for host in s.host_ips() {
        for c in CHECKS {
            on(
                s,
                Event::Finding(Finding {
                    host,
                    check: c.id,
                    status: Status::Pass,
                    message: "fine".to_string(),
                    fix: String::new(),
                }),
            );
        }
    }
}

fn at_preflight() -> State {
    let mut s = at_settings();
    let action = press(&mut s, Key::CtrlN);
    let Some(Action::Preflight { spec, skip }) = action else {
        panic!("expected preflight, got {action:?}")
    };
    assert_eq!(spec.hosts.len(), 3);
    assert!(skip.is_empty());
    assert_eq!(s.screen, Screen::Preflight);
    s
}

fn at_summary() -> State {
    let mut s = at_preflight();
    pass_all(&mut s);
    on(&mut s, Event::PreflightDone(Ok(())));
    let action = press(&mut s, Key::CtrlN);
    assert!(
        matches!(action, Some(Action::SaveClusterfile { .. })),
        "{action:?}"
    );
    on(
        &mut s,
        Event::Saved(Ok(PathBuf::from("/root/hello.Clusterfile"))),
    );
    s.notice = None;
    s
}

fn at_install() -> State {
    let mut s = at_summary();
    let action = press(&mut s, Key::Enter);
    assert!(matches!(action, Some(Action::Install { .. })), "{action:?}");
    assert_eq!(s.screen, Screen::Install);
    s
}

fn step(s: &mut State, host: &str, step: StepId, state: StepState) {
    on(
        s,
        Event::Install(install::Event::Step {
            host: ip(host),
            step,
            state,
            elapsed_ms: 0,
        }),
    );
}

fn transfer(s: &mut State, host: &str, sent: u64, total: u64) {
    on(
        s,
        Event::Install(install::Event::Transfer {
            host: ip(host),
            sent,
            total,
        }),
    );
}

#[test]
fn welcome_verifying() {
    let mut s = State::new(image());
    on(&mut s, Event::Start);
    on(
        &mut s,
        Event::VerifyProgress {
            done: 429_496_729,
            total: 1_288_490_189,
        },
    );
    // Enter does nothing until verified, and says why.
    press(&mut s, Key::Enter);
    assert_eq!(s.screen, Screen::Welcome);
    insta::assert_snapshot!(render(&s));
}

#[test]
fn welcome_verified() {
    let mut s = State::new(image());
    on(&mut s, Event::Start);
    on(&mut s, Event::Verified(Ok(())));
    insta::assert_snapshot!(render(&s));
}

#[test]
fn welcome_damaged_bundle() {
    let mut s = State::new(image());
    on(&mut s, Event::Start);
    on(
        &mut s,
        Event::Verified(Err(
            "blob sha256:5d41402abc4b2a76 at offset 1048576: digest mismatch".to_string(),
        )),
    );
    press(&mut s, Key::CtrlN);
    assert_eq!(s.screen, Screen::Welcome);
    insta::assert_snapshot!(render(&s));
    assert_eq!(press(&mut s, Key::Char('r')), Some(Action::Verify));
}

#[test]
fn hosts_empty() {
    let mut s = at_hosts();
    press(&mut s, Key::CtrlN);
    assert_eq!(s.screen, Screen::Hosts, "no master: cannot go on");
    insta::assert_snapshot!(render(&s));
}

#[test]
fn hosts_invalid_ip_as_typed() {
    let mut s = with_hosts();
    typed(&mut s, "198.18.0.300");
    assert!(
        s.hosts
            .entry_problem()
            .unwrap()
            .contains("is not an IP address")
    );
    press(&mut s, Key::Enter);
    assert_eq!(s.hosts.rows.len(), 2, "a bad entry is not added");
    insta::assert_snapshot!(render(&s));
}

#[test]
fn hosts_duplicate_and_even_masters() {
    let mut s = with_hosts();
    typed(&mut s, "198.18.0.4");
    assert_eq!(
        s.hosts.entry_problem().as_deref(),
        Some("198.18.0.4 is already in the list")
    );
    // Make the node range masters too: 3 masters, then a 4th makes it even.
    press(&mut s, Key::Esc);
    press(&mut s, Key::BackTab);
    press(&mut s, Key::Down);
    press(&mut s, Key::Char(' '));
    press(&mut s, Key::Tab);
    typed(&mut s, "198.18.0.9");
    press(&mut s, Key::Tab);
    press(&mut s, Key::Char('m'));
    press(&mut s, Key::Tab);
    typed(&mut s, "admin");
    press(&mut s, Key::Tab);
    typed(&mut s, "2222");
    press(&mut s, Key::Enter);
    assert_eq!(s.hosts.counts(), (4, 0));
    assert!(s.hosts.problems().warnings[0].contains("odd number"));
    insta::assert_snapshot!(render(&s));
}

#[test]
fn hosts_edit_and_remove() {
    let mut s = with_hosts();
    press(&mut s, Key::BackTab);
    press(&mut s, Key::Up);
    press(&mut s, Key::Char('e'));
    assert_eq!(s.hosts.editing, Some(0));
    press(&mut s, Key::Backspace);
    typed(&mut s, "5");
    press(&mut s, Key::Enter);
    assert_eq!(s.hosts.rows[0].ips, "198.18.0.5");
    assert_eq!(s.hosts.rows.len(), 2);
    press(&mut s, Key::BackTab);
    press(&mut s, Key::Delete);
    assert_eq!(s.hosts.rows.len(), 1);
}

#[test]
fn credentials_key_file() {
    let mut s = at_settings();
    press(&mut s, Key::CtrlB);
    assert_eq!(s.screen, Screen::Credentials);
    insta::assert_snapshot!(render(&s));
}

#[test]
fn credentials_missing_password() {
    let mut s = at_credentials();
    press(&mut s, Key::Down);
    press(&mut s, Key::Char(' '));
    assert_eq!(s.credentials.method, AuthMethod::Password);
    press(&mut s, Key::CtrlN);
    assert_eq!(s.screen, Screen::Credentials);
    insta::assert_snapshot!(render(&s));
    press(&mut s, Key::Down);
    typed(&mut s, "hunter2");
    assert!(!render(&s).contains("hunter2"), "passwords are masked");
    let action = press(&mut s, Key::CtrlN);
    assert!(
        matches!(action, Some(Action::ScanHostKeys { .. })),
        "{action:?}"
    );
}

#[test]
fn credentials_host_keys_to_accept() {
    let s = with_host_keys(KeyStatus::Known);
    let HostKeys::Scanned { rows, .. } = &s.credentials.host_keys else {
        panic!("{:?}", s.credentials.host_keys)
    };
    assert_eq!(rows.len(), 3);
    insta::assert_snapshot!(render(&s));
}

#[test]
fn a_changed_host_key_stops_on_credentials_and_esc_returns_to_the_form() {
    let changed = KeyStatus::Changed {
        reason: "the host key changed; if the host was reinstalled on purpose, remove line 1 of /k and press Esc, then Ctrl-N".to_string(),
    };
    let mut s = with_host_keys(changed);
    assert_eq!(press(&mut s, Key::CtrlN), None);
    assert_eq!(s.screen, Screen::Credentials);
    let notice = s.notice.clone().unwrap_or_default();
    assert_eq!(notice, "198.18.0.2:22: its host key changed (see above)");
    insta::assert_snapshot!(render(&s));
    press(&mut s, Key::Esc);
    assert_eq!(s.credentials.host_keys, HostKeys::NotScanned);
    assert!(render(&s).contains("Key file"), "the form is back");
    // Ctrl-N fetches again (the user removed the old line meanwhile).
    let action = press(&mut s, Key::CtrlN);
    assert!(
        matches!(action, Some(Action::ScanHostKeys { .. })),
        "{action:?}"
    );
}

#[test]
fn accepted_host_keys_are_not_asked_again_unless_the_hosts_change() {
    let mut s = at_settings();
    press(&mut s, Key::CtrlB);
    assert_eq!(press(&mut s, Key::CtrlN), None, "same hosts: straight on");
    assert_eq!(s.screen, Screen::Settings);
    // Another SSH port: other servers, asked again.
    press(&mut s, Key::CtrlB);
    for _ in 0..3 {
        press(&mut s, Key::Down); // Key file -> SSH port
    }
    press(&mut s, Key::Backspace);
    press(&mut s, Key::Backspace);
    typed(&mut s, "2222");
    let action = press(&mut s, Key::CtrlN);
    let Some(Action::ScanHostKeys { targets }) = action else {
        panic!("expected a new scan, got {action:?}")
    };
    assert!(targets.iter().all(|t| t.port == 2222), "{targets:?}");
    // Results for hosts no longer asked about are dropped.
    let stale = key_rows(&targets[..1], KeyStatus::New);
    on(&mut s, Event::HostKeys(stale));
    assert!(matches!(s.credentials.host_keys, HostKeys::Scanning { .. }));
}

#[test]
fn hosts_behind_a_bastion_are_trusted_on_first_use() {
    let mut s = at_credentials();
    press(&mut s, Key::Down);
    press(&mut s, Key::Down);
    typed(&mut s, "/root/.ssh/id_ed25519");
    for _ in 0..4 {
        press(&mut s, Key::Down);
    }
    typed(&mut s, "jump@198.18.0.1:22");
    assert_eq!(press(&mut s, Key::CtrlN), None);
    assert_eq!(s.screen, Screen::Settings);
}

#[test]
fn settings_with_image_parameters() {
    let mut s = at_settings();
    for _ in 0..6 {
        press(&mut s, Key::Down);
    }
    insta::assert_snapshot!(render(&s));
}

#[test]
fn settings_bad_cidr() {
    let mut s = at_settings();
    press(&mut s, Key::Down);
    press(&mut s, Key::Down);
    for _ in 0..3 {
        press(&mut s, Key::Backspace);
    }
    typed(&mut s, "/99");
    assert_eq!(press(&mut s, Key::CtrlN), None);
    assert_eq!(s.screen, Screen::Settings);
    insta::assert_snapshot!(render(&s));
}

#[test]
fn preflight_running() {
    let mut s = at_preflight();
    for c in &CHECKS[..6] {
        on(
            &mut s,
            Event::Finding(Finding {
                host: ip("198.18.0.2"),
                check: c.id,
                status: Status::Pass,
                message: "fine".to_string(),
                fix: String::new(),
            }),
        );
    }
    press(&mut s, Key::CtrlN);
    assert_eq!(s.screen, Screen::Preflight);
    insta::assert_snapshot!(render(&s));
}

fn failed_preflight() -> State {
    let mut s = at_preflight();
    pass_all(&mut s);
    on(
        &mut s,
        Event::Finding(Finding {
            host: ip("198.18.0.3"),
            check: CheckId::Swap,
            status: Status::Warn,
            message: "2048 MiB of swap is on".to_string(),
            fix: "run `swapoff -a` and remove swap from /etc/fstab".to_string(),
        }),
    );
    on(
        &mut s,
        Event::Finding(Finding {
            host: ip("198.18.0.4"),
            check: CheckId::Ports,
            status: Status::Fail,
            message: "in use: 10250".to_string(),
            fix: "stop what listens there (`ss -ltnp` shows it) or use another host".to_string(),
        }),
    );
    on(&mut s, Event::PreflightDone(Ok(())));
    s
}

#[test]
fn preflight_failure_details() {
    let mut s = failed_preflight();
    for _ in 0..9 {
        press(&mut s, Key::Down);
    }
    press(&mut s, Key::Right);
    press(&mut s, Key::Right);
    press(&mut s, Key::CtrlN);
    assert_eq!(s.screen, Screen::Preflight, "a failure blocks the install");
    s.notice = None;
    insta::assert_snapshot!(render(&s));
}

#[test]
fn preflight_skip_is_confirmed_and_recorded() {
    let mut s = failed_preflight();
    for _ in 0..9 {
        press(&mut s, Key::Down);
    }
    press(&mut s, Key::Char('s'));
    assert_eq!(s.preflight.confirm_skip, Some(CheckId::Ports));
    insta::assert_snapshot!(render(&s));
    press(&mut s, Key::Char('y'));
    assert!(s.preflight.is_passed());
    assert!(
        s.to_yaml(false)
            .contains("# Preflight check skipped by the user: ports (without the wizard: --ignore-preflight-errors=ports)")
    );
    // A re-run passes the skip to the engine.
    let Some(Action::Preflight { skip, .. }) = press(&mut s, Key::Char('r')) else {
        panic!("expected a re-run")
    };
    assert_eq!(skip, BTreeSet::from([CheckId::Ports]));
}

#[test]
fn preflight_auth_cannot_be_skipped() {
    let mut s = failed_preflight();
    press(&mut s, Key::Down);
    press(&mut s, Key::Char('s'));
    assert_eq!(s.preflight.confirm_skip, None);
    assert!(s.notice.as_deref().unwrap().contains("cannot be skipped"));
}

#[test]
fn preflight_passed() {
    let mut s = at_preflight();
    pass_all(&mut s);
    on(&mut s, Event::PreflightDone(Ok(())));
    insta::assert_snapshot!(render(&s));
}

#[test]
fn summary_clusterfile() {
    let s = at_summary();
    insta::assert_snapshot!(render(&s));
}

#[test]
fn install_dashboard() {
    let mut s = at_install();
    on(&mut s, Event::Tick(1_000));
    for h in ["198.18.0.2", "198.18.0.3", "198.18.0.4"] {
        step(&mut s, h, StepId::Prepare, StepState::Done);
        step(&mut s, h, StepId::Blobs, StepState::Started);
        transfer(&mut s, h, 0, 1_073_741_824);
    }
    on(&mut s, Event::Tick(11_000));
    transfer(&mut s, "198.18.0.2", 1_073_741_824, 1_073_741_824);
    step(&mut s, "198.18.0.2", StepId::Blobs, StepState::Done);
    step(&mut s, "198.18.0.2", StepId::Unpack, StepState::Started);
    transfer(&mut s, "198.18.0.3", 536_870_912, 1_073_741_824);
    transfer(&mut s, "198.18.0.4", 209_715_200, 1_073_741_824);
    for line in [
        "sending 14 blobs (1.0 GiB)",
        "blobs verified",
        "unpacking rootfs",
    ] {
        on(
            &mut s,
            Event::Install(install::Event::Log {
                host: ip("198.18.0.2"),
                line: line.to_string(),
            }),
        );
    }
    // No going back while it runs.
    press(&mut s, Key::CtrlB);
    assert_eq!(s.screen, Screen::Install);
    insta::assert_snapshot!(render(&s));
}

#[test]
fn result_success() {
    let mut s = at_install();
    on(
        &mut s,
        Event::InstallDone(InstallResult::Done {
            endpoints: vec!["https://198.18.0.2:6443".to_string()],
            kubeconfig: Some(PathBuf::from("/root/hello.kubeconfig")),
            log_file: Some(PathBuf::from("/root/airlock-install.log")),
        }),
    );
    assert_eq!(s.screen, Screen::Result);
    insta::assert_snapshot!(render(&s));
}

#[test]
fn result_failure_then_retry() {
    let mut s = at_install();
    step(
        &mut s,
        "198.18.0.3",
        StepId::Blobs,
        StepState::Failed(
            "`sh -c <script>` exited with 1 on 198.18.0.3: No space left on device".to_string(),
        ),
    );
    on(
        &mut s,
        Event::InstallDone(InstallResult::Failed {
            host: Some(ip("198.18.0.3")),
            step: Some(StepId::Blobs),
            cause: "`sh -c <script>` exited with 1 on 198.18.0.3: No space left on device"
                .to_string(),
        }),
    );
    insta::assert_snapshot!(render(&s));
    assert!(matches!(
        press(&mut s, Key::Char('w')),
        Some(Action::SupportBundle { .. })
    ));
    assert!(matches!(
        press(&mut s, Key::Char('r')),
        Some(Action::Install { .. })
    ));
    assert_eq!(s.screen, Screen::Install);
    assert!(s.dashboard.hosts.values().all(|h| h.failed.is_none()));
}

#[test]
fn a_failed_step_can_be_skipped_after_a_confirmation_and_is_recorded() {
    let mut s = at_install();
    on(
        &mut s,
        Event::InstallDone(InstallResult::Failed {
            host: Some(ip("198.18.0.2")),
            step: Some(StepId::Launch),
            cause: "`sh -c 'sh launch.sh'` exited with 3".to_string(),
        }),
    );
    assert!(render(&s).contains("s skip this step"), "{}", render(&s));
    assert_eq!(press(&mut s, Key::Char('s')), None);
    let notice = s.notice.clone().unwrap_or_default();
    assert!(notice.starts_with("Skip launch on 198.18.0.2?"), "{notice}");
    assert_eq!(press(&mut s, Key::Char('n')), None, "n cancels");
    assert!(s.dashboard.skipped_steps.is_empty());
    press(&mut s, Key::Char('s'));
    let action = press(&mut s, Key::Char('y'));
    let Some(Action::Install { skip, .. }) = action else {
        panic!("expected the install again, got {action:?}")
    };
    assert_eq!(skip, [(ip("198.18.0.2"), "launch".to_string())]);
    assert_eq!(s.screen, Screen::Install);
    assert!(
        s.to_yaml(false)
            .contains("# Install step skipped by the user after it failed: launch on 198.18.0.2"),
        "{}",
        s.to_yaml(false)
    );
}

#[test]
fn ctrl_c_asks_first() {
    let mut s = with_hosts();
    assert_eq!(press(&mut s, Key::CtrlC), None);
    insta::assert_snapshot!(render(&s));
    assert_eq!(
        press(&mut s, Key::Char('x')),
        None,
        "other keys wait for an answer"
    );
    assert_eq!(press(&mut s, Key::Char('n')), None);
    assert!(!s.confirm_quit);
    press(&mut s, Key::CtrlC);
    assert_eq!(press(&mut s, Key::Char('y')), Some(Action::Quit));
}

#[test]
fn no_color_draws_no_colours() {
    let mut s = failed_preflight();
    s.color = false;
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal.draw(|f| draw(&s, f)).unwrap();
    let buffer = terminal.backend().buffer();
    assert!(
        buffer
            .content
            .iter()
            .all(|c| c.fg == Color::Reset && c.bg == Color::Reset)
    );
    s.color = true;
    terminal.draw(|f| draw(&s, f)).unwrap();
    assert!(
        terminal
            .backend()
            .buffer()
            .content
            .iter()
            .any(|c| c.fg == Color::Red)
    );
}

#[test]
fn every_screen_fits_small_terminals() {
    // Resizes must not panic, down to a tiny window.
    for s in [at_hosts(), failed_preflight(), at_summary(), at_install()] {
        for (w, h) in [(80, 24), (40, 12), (20, 6), (100, 40)] {
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal.draw(|f| draw(&s, f)).unwrap();
        }
    }
}

#[test]
fn the_saved_clusterfile_resolves_to_the_same_spec() {
    let mut s = at_summary();
    s.settings
        .params
        .insert("Replicas".to_string(), "3".to_string());
    let yaml = s.to_yaml(true);
    let from_file = Clusterfile::parse("Clusterfile", &yaml)
        .unwrap()
        .resolve(&|_| None)
        .unwrap();
    assert_eq!(from_file, s.to_spec().unwrap());
    assert_eq!(from_file.env["Replicas"], "3");
    assert!(
        !from_file.env.contains_key("Greeting"),
        "defaults stay in the image"
    );
}

#[test]
fn secrets_are_written_only_with_consent() {
    let mut s = at_credentials();
    press(&mut s, Key::Down);
    press(&mut s, Key::Char(' '));
    press(&mut s, Key::Down);
    typed(&mut s, "hunter2");
    assert!(!s.to_yaml(false).contains("hunter2"));
    assert!(s.to_yaml(false).contains("The password is not saved"));
    assert!(s.to_yaml(true).contains("hunter2"));
    assert_eq!(
        s.to_spec().unwrap().hosts[0]
            .ssh
            .password
            .as_ref()
            .unwrap()
            .expose(),
        "hunter2"
    );
    // Sessions never hold secrets.
    let json = serde_json::to_string(&s).unwrap();
    assert!(!json.contains("hunter2"));
}

#[test]
fn a_session_resumes_where_it_stopped() {
    let mut s = at_install();
    transfer(&mut s, "198.18.0.2", 10, 100);
    let json = serde_json::to_string(&s).unwrap();
    let mut resumed: State = serde_json::from_str(&json).unwrap();
    assert_eq!(resumed.hosts, s.hosts);
    assert_eq!(resumed.dashboard, s.dashboard);
    // An install cut short resumes at the Summary, verified, ready to run again.
    assert_eq!(on(&mut resumed, Event::Start), None);
    assert_eq!(resumed.screen, Screen::Summary);
    assert_eq!(resumed.verify, Verify::Passed);
    assert!(!resumed.dashboard.running);
}
