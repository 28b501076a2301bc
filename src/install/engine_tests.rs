//! Orchestration tests of the engine against recording fakes (no hosts involved).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::*;
use crate::image::oci::{Platform, RootfsConfig, RootfsDiffIds};
use crate::image::store::{Store, to_json};
use crate::install::limits;
use crate::remote::fake::{FakeCall, FakeRemote, FakeReply};
use crate::spec::clusterfile::Clusterfile;

/// A store holding a tiny cluster image `docker.io/library/demo:v1` with one
/// container image, built by hand.
fn fixture(change: &dyn Fn(&mut ClusterConfig)) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let put = |bytes: &[u8], media: &str| {
        Descriptor::new(media, store.put_bytes(bytes).unwrap(), bytes.len() as u64)
    };
    // A container image: config + layer + manifest.
    let app_layer = put(b"app layer bytes", oci::MEDIA_TYPE_LAYER_GZIP);
    let app_config = put(
        br#"{"architecture":"amd64","os":"linux"}"#,
        oci::MEDIA_TYPE_CONFIG,
    );
    let app_manifest = manifest_bytes(&app_config, &app_layer);
    let mut app = put(&app_manifest, oci::MEDIA_TYPE_MANIFEST);
    app.annotations.insert(
        oci::ANNOTATION_ROLE.into(),
        oci::ROLE_CONTAINER_IMAGE.into(),
    );
    app.annotations.insert(
        oci::ANNOTATION_IMAGE_REF.into(),
        "docker.io/airlockdemo/hello:1.0".into(),
    );
    // The rootfs: a real zstd tar with runtime scripts, a plugin and a template.
    let layer = put(&rootfs_layer(), oci::MEDIA_TYPE_LAYER_ZSTD);
    let config = RootfsConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootfsDiffIds {
            kind: "layers".into(),
            diff_ids: vec![Digest::of(b"tar")],
        },
        airlock: ClusterConfig {
            runtime: "generic".into(),
            cmds: vec!["sh scripts/launch.sh".into()],
            env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
            ..ClusterConfig::default()
        },
    };
    let mut config = config;
    change(&mut config.airlock);
    let config = put(&to_json(&config), oci::MEDIA_TYPE_CONFIG);
    let manifest = manifest_bytes(&config, &layer);
    let mut rootfs = put(&manifest, oci::MEDIA_TYPE_MANIFEST);
    rootfs.platform = Some(Platform::linux("amd64"));
    rootfs
        .annotations
        .insert(oci::ANNOTATION_ROLE.into(), oci::ROLE_ROOTFS.into());
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_INDEX.into()),
        manifests: vec![rootfs, app],
        annotations: BTreeMap::new(),
    };
    let top = put(&to_json(&index), oci::MEDIA_TYPE_INDEX);
    store.set_ref("docker.io/library/demo:v1", &top).unwrap();
    (dir, store)
}

const PLUGIN_YAML: &str = "apiVersion: sealer.io/v1\nkind: Plugin\nmetadata: {name: p}\nspec:\n  type: SHELL\n  action: post-install\n  scope: node\n  data: echo image-plugin\n";

fn rootfs_layer() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let files: [(&str, &[u8]); 5] = [
        ("scripts/launch.sh", b"echo launch\n"),
        ("scripts/init.sh", b"echo init\n"),
        ("scripts/join.sh", b"echo join\n"),
        ("plugins/p.yaml", PLUGIN_YAML.as_bytes()),
        ("etc/a.conf.tmpl", b"greeting={{ .GREETING }}\n"),
    ];
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, bytes).unwrap();
    }
    zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap()
}

fn manifest_bytes(config: &Descriptor, layer: &Descriptor) -> Vec<u8> {
    to_json(&oci::ImageManifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
        config: config.clone(),
        layers: vec![layer.clone()],
        annotations: BTreeMap::new(),
    })
}

const CLUSTERFILE: &str = "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {name: t}\nspec:\n  ssh: {passwd: pw}\n  env: [GREETING=hello]\n  hosts:\n  - ips: [198.18.0.2]\n    roles: [master]\n  - ips: [198.18.0.3-198.18.0.4]\n    roles: [node]\n";

struct Fixture {
    _dir: tempfile::TempDir,
    install: Install,
    fakes: BTreeMap<IpAddr, Arc<FakeRemote>>,
    events: Arc<Mutex<Vec<Event>>>,
}

fn setup(configure: impl Fn(IpAddr, &FakeRemote)) -> Fixture {
    setup_with(CLUSTERFILE, &|_| {}, configure)
}

fn setup_with(
    clusterfile: &str,
    change: &dyn Fn(&mut ClusterConfig),
    configure: impl Fn(IpAddr, &FakeRemote),
) -> Fixture {
    let (dir, store) = fixture(change);
    let spec = Clusterfile::parse("Clusterfile", clusterfile)
        .unwrap()
        .resolve(&|_| None)
        .unwrap();
    let plan = ImagePlan::read(&store, "docker.io/library/demo:v1").unwrap();
    let mut fakes = BTreeMap::new();
    let mut remotes: BTreeMap<IpAddr, Arc<dyn Remote>> = BTreeMap::new();
    for host in &spec.hosts {
        let fake = Arc::new(FakeRemote::new(host.ip.to_string()));
        configure(host.ip, &fake);
        remotes.insert(host.ip, fake.clone());
        fakes.insert(host.ip, fake);
    }
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let install = Install {
        spec,
        plan,
        source: Arc::new(store),
        agent: UploadSource {
            path: "/proc/self/exe".into(),
            offset: 0,
            len: 1,
            sha256: Some("ab".repeat(32)),
        },
        remotes,
        reporter: Arc::new(move |e: Event| sink.lock().unwrap().push(e)),
        scale_up: BTreeSet::new(),
        registry_access: RegistryAccess::default(),
        skip: BTreeSet::new(),
        limits: limits::Limits {
            backoff: std::time::Duration::ZERO,
            ..limits::Limits::default()
        },
    };
    Fixture {
        _dir: dir,
        install,
        fakes,
        events,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ran_script(fake: &FakeRemote, script: &str) -> bool {
    fake.commands()
        .iter()
        .any(|argv| argv.len() > 2 && argv[0] == "sh" && argv[2] == script)
}

/// The marker writes of a run, as `markers.sh` would print them on the next run.
fn markers_written(fake: &FakeRemote) -> String {
    fake.calls()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Run(cmd)
                if cmd.argv.len() > 4
                    && cmd.argv[2] == WRITE_FILE
                    && cmd.argv[4].contains("/state/") =>
            {
                let step = cmd.argv[4].rsplit('/').next().unwrap().to_string();
                Some(format!(
                    "{step} {}\n",
                    String::from_utf8(cmd.stdin.clone().unwrap()).unwrap()
                ))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn fresh_install_runs_each_step_where_it_belongs() {
    let f = setup(|_, _| {});
    f.install.run().await.unwrap();
    let master = &f.fakes[&ip("198.18.0.2")];
    let node = &f.fakes[&ip("198.18.0.3")];
    // The agent binary and the rootfs blobs go everywhere; container image blobs only to the registry host.
    let app_blobs = f.install.plan.image_blobs.len();
    assert_eq!(app_blobs, 3, "manifest, config, layer of the app image");
    let rootfs_blobs = f.install.plan.rootfs_blobs.len();
    assert_eq!(master.uploads().len(), 1 + rootfs_blobs + app_blobs);
    assert_eq!(node.uploads().len(), 1 + rootfs_blobs);
    assert!(master.uploads()[0].ends_with("/bin/airlock"));
    // The registry runs on the first master only; mirrors everywhere; launch on the first master.
    assert!(ran_script(master, REGISTRY));
    assert!(!ran_script(node, REGISTRY));
    for fake in f.fakes.values() {
        assert!(ran_script(fake, ETC_HOSTS));
        let hosts_toml: Vec<String> = fake
            .commands()
            .into_iter()
            .filter(|a| a.len() > 4 && a[2] == WRITE_FILE && a[4].ends_with("hosts.toml"))
            .map(|a| a[4].clone())
            .collect();
        assert_eq!(
            hosts_toml,
            [
                "/etc/containerd/certs.d/docker.io/hosts.toml",
                "/etc/containerd/certs.d/sea.hub:5000/hosts.toml"
            ]
        );
    }
    let launches = |fake: &FakeRemote| {
        fake.calls()
            .into_iter()
            .filter_map(|c| match c {
                FakeCall::Run(cmd) if cmd.argv == ["sh", "-c", "sh scripts/launch.sh"] => Some(cmd),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let launch = launches(master);
    assert_eq!(launch.len(), 1);
    assert_eq!(launch[0].cwd.as_deref(), Some("/var/lib/airlock/rootfs"));
    assert!(
        launch[0]
            .env
            .contains(&("GREETING".to_string(), "hello".to_string())),
        "cluster env overrides image env"
    );
    assert!(launch[0].env.contains(&(
        "AIRLOCK_NODES".to_string(),
        "198.18.0.3,198.18.0.4".to_string()
    )));
    assert!(launches(node).is_empty());
    // Every step reported done on the master.
    let done: Vec<StepId> = f
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Step {
                host,
                step,
                state: StepState::Done,
                ..
            } if *host == ip("198.18.0.2") => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(
        done,
        [
            StepId::Prepare,
            StepId::Blobs,
            StepId::Unpack,
            StepId::Registry,
            StepId::Mirrors,
            StepId::Init,
            StepId::Launch
        ]
    );
}

fn runs_of(fake: &FakeRemote, argv: &[&str]) -> usize {
    fake.commands().iter().filter(|a| *a == argv).count()
}

#[tokio::test]
async fn generic_runtime_inits_the_first_master_and_joins_the_others_in_turn() {
    let f = setup(|_, _| {});
    f.install.run().await.unwrap();
    let master = &f.fakes[&ip("198.18.0.2")];
    assert_eq!(runs_of(master, &["sh", "scripts/init.sh"]), 1);
    assert_eq!(runs_of(master, &["sh", "scripts/join.sh"]), 0);
    for node in ["198.18.0.3", "198.18.0.4"] {
        let fake = &f.fakes[&ip(node)];
        assert_eq!(runs_of(fake, &["sh", "scripts/init.sh"]), 0);
        assert_eq!(runs_of(fake, &["sh", "scripts/join.sh"]), 1);
        // The image's post-install plugin is scoped to nodes.
        assert_eq!(runs_of(fake, &["sh", "-c", "echo image-plugin"]), 1);
    }
    assert_eq!(runs_of(master, &["sh", "-c", "echo image-plugin"]), 0);
    // Joins run one at a time, after the init, in host order.
    let events = f.events.lock().unwrap();
    let order: Vec<(IpAddr, StepId)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step {
                host,
                step: s @ (StepId::Init | StepId::Join),
                state: StepState::Started | StepState::Done,
                ..
            } => Some((*host, *s)),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        [
            (ip("198.18.0.2"), StepId::Init),
            (ip("198.18.0.2"), StepId::Init),
            (ip("198.18.0.3"), StepId::Join),
            (ip("198.18.0.3"), StepId::Join),
            (ip("198.18.0.4"), StepId::Join),
            (ip("198.18.0.4"), StepId::Join),
        ]
    );
    // The script env follows the contract of docs/runtimes.md.
    let init = master
        .calls()
        .into_iter()
        .find_map(|c| match c {
            FakeCall::Run(cmd) if cmd.argv == ["sh", "scripts/init.sh"] => Some(cmd),
            _ => None,
        })
        .unwrap();
    let env: BTreeMap<String, String> = init.env.iter().cloned().collect();
    assert_eq!(env["AIRLOCK_ROLE"], "master");
    assert_eq!(env["AIRLOCK_FIRST_MASTER"], "198.18.0.2");
    assert_eq!(env["AIRLOCK_MASTERS"], "198.18.0.2");
    assert_eq!(env["AIRLOCK_REGISTRY"], "sea.hub:5000");
    assert_eq!(init.cwd.as_deref(), Some("/var/lib/airlock/rootfs"));
    // Templates are rendered on the host by the agent, with the env on stdin.
    let render = master
        .calls()
        .into_iter()
        .find_map(|c| match c {
            FakeCall::Run(cmd) if cmd.argv.iter().any(|a| a == "render") => Some(cmd),
            _ => None,
        })
        .unwrap();
    let input: crate::install::render::RenderInput =
        serde_json::from_slice(render.stdin.as_ref().unwrap()).unwrap();
    assert_eq!(input.env["GREETING"], "hello");
}

#[tokio::test]
async fn scaling_up_does_not_redo_the_steps_of_hosts_already_there() {
    let first = setup(|_, _| {});
    first.install.run().await.unwrap();
    let markers: BTreeMap<IpAddr, String> = first
        .fakes
        .iter()
        .map(|(ip, f)| (*ip, markers_written(f)))
        .collect();
    // The same hosts plus one more node.
    let mut second = setup(|ip, fake| {
        if let Some(m) = markers.get(&ip) {
            fake.on(&["sh", "-c", MARKERS], FakeReply::exit(0, m));
        }
    });
    let mut new_host = second.install.spec.hosts[2].clone();
    new_host.ip = ip("198.18.0.9");
    second.install.spec.hosts.push(new_host);
    let fake = Arc::new(FakeRemote::new("198.18.0.9"));
    second
        .install
        .remotes
        .insert(ip("198.18.0.9"), fake.clone());
    second.install.scale_up.insert(ip("198.18.0.9"));
    second.install.run().await.unwrap();
    for f in second.fakes.values() {
        assert_eq!(
            f.calls().len(),
            1,
            "only the marker read: {:?}",
            f.commands()
        );
    }
    assert_eq!(runs_of(&fake, &["sh", "scripts/join.sh"]), 1);
}

#[tokio::test]
async fn rerun_of_a_finished_install_changes_nothing() {
    let first = setup(|_, _| {});
    first.install.run().await.unwrap();
    let markers: BTreeMap<IpAddr, String> = first
        .fakes
        .iter()
        .map(|(ip, f)| (*ip, markers_written(f)))
        .collect();
    let second = setup(|ip, fake| {
        fake.on(&["sh", "-c", MARKERS], FakeReply::exit(0, &markers[&ip]));
    });
    second.install.run().await.unwrap();
    for fake in second.fakes.values() {
        assert_eq!(
            fake.calls().len(),
            1,
            "only the marker read: {:?}",
            fake.commands()
        );
    }
}

#[tokio::test]
async fn failure_names_host_and_step_and_stops_before_launch() {
    let f = setup(|ip, fake| {
        if ip.to_string() == "198.18.0.4" {
            fake.on(
                &["/var/lib/airlock/bin/airlock"],
                FakeReply::fail(3, "disk full"),
            );
        }
    });
    let err = f.install.run().await.unwrap_err().to_string();
    assert!(
        err.starts_with("step unpack failed on 198.18.0.4:"),
        "{err}"
    );
    assert!(
        err.contains("disk full") && err.contains("exited with 3"),
        "{err}"
    );
    assert!(
        err.contains("3 tries, the last: `/var/lib/airlock/bin/airlock --root /var/lib/airlock/store agent unpack")
            && err.contains("last lines of stderr:\n    disk full"),
        "{err}"
    );
    let master = &f.fakes[&ip("198.18.0.2")];
    assert!(
        !ran_script(master, REGISTRY),
        "nothing after the failed phase"
    );
    // Resume: the hosts that finished keep their markers; the failed host has none for unpack.
    let failed = markers_written(&f.fakes[&ip("198.18.0.4")]);
    assert!(
        failed.contains("blobs ") && !failed.contains("unpack "),
        "{failed}"
    );
}

/// The fixture with the cluster of `clusterfile` (its hosts must be among the
/// default fixture's).
fn setup_cluster(clusterfile: &str) -> Fixture {
    let mut f = setup(|_, _| {});
    f.install.spec = Clusterfile::parse("Clusterfile", clusterfile)
        .unwrap()
        .resolve(&|_| None)
        .unwrap();
    f
}

/// The files a fake host was sent through `write-file.sh`: path, mode, content.
fn written_files(fake: &FakeRemote) -> Vec<(String, String, String)> {
    fake.calls()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Run(cmd) if cmd.argv.len() > 5 && cmd.argv[2] == WRITE_FILE => Some((
                cmd.argv[4].clone(),
                cmd.argv[5].clone(),
                String::from_utf8(cmd.stdin.clone().unwrap_or_default()).unwrap(),
            )),
            _ => None,
        })
        .collect()
}

fn limits_with(f: &mut Fixture, change: impl FnOnce(&mut limits::Limits)) {
    change(&mut f.install.limits);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_command_times_out_naming_host_step_and_command() {
    let mut f = setup(|ip, fake| {
        if ip.to_string() == "198.18.0.2" {
            fake.on(&["sh", "-c", "sh scripts/launch.sh"], FakeReply::Hang);
        }
    });
    limits_with(&mut f, |l| {
        l.timeouts
            .insert("launch".into(), std::time::Duration::from_secs(90));
    });
    let err = f.install.run().await.unwrap_err().to_string();
    assert_eq!(
        err,
        "step launch failed on 198.18.0.2: `sh -c 'sh scripts/launch.sh' (in /var/lib/airlock/rootfs)` timed out after 90s (raise it with --step-timeout launch=DURATION or spec.stepTimeouts in the Clusterfile)"
    );
    // The host was told the limit too, so the command does not run on unseen.
    let launch = f.fakes[&ip("198.18.0.2")]
        .calls()
        .into_iter()
        .find_map(|c| match c {
            FakeCall::Run(cmd)
                if cmd.argv.get(2).map(String::as_str) == Some("sh scripts/launch.sh") =>
            {
                Some(cmd)
            }
            _ => None,
        })
        .unwrap();
    assert!(
        launch
            .timeout
            .is_some_and(|t| t <= std::time::Duration::from_secs(95))
    );
    let events = f.events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Step { step: StepId::Launch, state: StepState::Failed(why), elapsed_ms, .. }
            if why.contains("timed out after 90s") && *elapsed_ms >= 90_000
    )));
}

#[tokio::test(start_paused = true)]
async fn a_retryable_step_that_fails_twice_then_succeeds_is_retried_with_backoff() {
    let mut f = setup(|ip, fake| {
        if ip.to_string() == "198.18.0.2" {
            fake.on_times(
                &["sh", "-c", REGISTRY],
                FakeReply::fail(1, "address in use"),
                2,
            );
        }
    });
    limits_with(&mut f, |l| l.backoff = std::time::Duration::from_secs(2));
    f.install.run().await.unwrap();
    let registry_runs = f.fakes[&ip("198.18.0.2")]
        .commands()
        .iter()
        .filter(|a| a.len() > 2 && a[2] == REGISTRY)
        .count();
    assert_eq!(registry_runs, 3);
    let events = f.events.lock().unwrap();
    let retries: Vec<(u32, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Retry {
                step: StepId::Registry,
                attempt,
                wait_ms,
                reason,
                ..
            } => {
                assert!(reason.contains("address in use"), "{reason}");
                Some((*attempt, *wait_ms))
            }
            _ => None,
        })
        .collect();
    assert_eq!(retries, [(2, 2000), (3, 4000)]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Step {
            step: StepId::Registry,
            state: StepState::Done,
            ..
        }
    )));
}

#[tokio::test]
async fn init_is_not_retried() {
    let f = setup(|ip, fake| {
        if ip.to_string() == "198.18.0.2" {
            fake.on_times(&["sh", "scripts/init.sh"], FakeReply::fail(1, "boom"), 1);
        }
    });
    let err = f.install.run().await.unwrap_err().to_string();
    assert!(
        err.starts_with("step init failed on 198.18.0.2: `sh scripts/init.sh"),
        "{err}"
    );
    assert_eq!(
        runs_of(&f.fakes[&ip("198.18.0.2")], &["sh", "scripts/init.sh"]),
        1
    );
}

#[tokio::test]
async fn a_step_the_user_skipped_is_recorded_as_done_without_running() {
    let mut f = setup(|ip, fake| {
        if ip.to_string() == "198.18.0.2" {
            fake.on(&["sh", "scripts/init.sh"], FakeReply::fail(1, "boom"));
        }
    });
    assert!(f.install.run().await.is_err(), "init fails first");
    f.install
        .skip
        .insert((ip("198.18.0.2"), "init".to_string()));
    f.install.run().await.unwrap();
    let first = &f.fakes[&ip("198.18.0.2")];
    assert_eq!(
        runs_of(first, &["sh", "scripts/init.sh"]),
        1,
        "the skipped step did not run again"
    );
    assert!(
        markers_written(first).contains("init "),
        "its marker was written"
    );
    let events = f.events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Log { line, .. } if line == "init: skipped at the user's request, recorded as done"
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Step {
            step: StepId::Init,
            state: StepState::Skipped,
            ..
        }
    )));
}

/// Counts commands in flight across every host (a test gauge around the fakes). The
/// fan-out's relays are left out: a relay chain spans every host by design.
struct Gauge {
    inner: Arc<FakeRemote>,
    running: Arc<std::sync::atomic::AtomicUsize>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl Remote for Gauge {
    fn host(&self) -> &str {
        self.inner.host()
    }

    async fn run(&self, cmd: &RemoteCommand) -> Result<crate::remote::Output, RemoteError> {
        use std::sync::atomic::Ordering;
        if cmd.argv.iter().any(|a| a == "relay") || cmd.argv[0] == "kill" {
            return self.inner.run(cmd).await;
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        let out = self.inner.run(cmd).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        out
    }

    async fn upload(
        &self,
        source: &UploadSource,
        path: &str,
        mode: u32,
    ) -> Result<(), RemoteError> {
        self.inner.upload(source, path, mode).await
    }
}

#[tokio::test]
async fn no_more_hosts_at_once_than_max_parallel() {
    for limit in [1, 2] {
        let mut f = setup(|_, _| {});
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for (ip, fake) in &f.fakes {
            let gauge = Gauge {
                inner: fake.clone(),
                running: running.clone(),
                peak: peak.clone(),
            };
            f.install.remotes.insert(*ip, Arc::new(gauge));
        }
        f.install.limits.max_parallel = limit;
        f.install.run().await.unwrap();
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), limit);
    }
}

#[tokio::test]
async fn the_plan_comes_first_and_lists_every_step_that_runs() {
    let f = setup(|_, _| {});
    f.install.run().await.unwrap();
    let events = f.events.lock().unwrap();
    let Some(Event::Plan { steps }) = events.first() else {
        panic!("the first event is not the plan: {:?}", events.first());
    };
    let planned: Vec<(IpAddr, StepId)> = steps.iter().map(|s| (s.host, s.step)).collect();
    let done: BTreeSet<(IpAddr, StepId)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step {
                host,
                step,
                state: StepState::Done,
                ..
            } => Some((*host, *step)),
            _ => None,
        })
        .collect();
    assert_eq!(planned.iter().copied().collect::<BTreeSet<_>>(), done);
    assert_eq!(planned.len(), done.len(), "no step twice in the plan");
    let line = serde_json::to_string(&events[0]).unwrap();
    assert!(
        line.starts_with(r#"{"event":"plan","steps":[{"host":"198.18.0.2","step":"prepare"}"#),
        "{line}"
    );
}

fn apps(config: &mut ClusterConfig) {
    let app = |name: &str, kind: &str, files: &[&str]| oci::AppConfig {
        name: name.into(),
        role: "app".into(),
        kind: kind.into(),
        files: files
            .iter()
            .map(|f| format!("application/apps/{name}/{f}"))
            .collect(),
        ..oci::AppConfig::default()
    };
    let mut shell = app("greeter", "shell", &["greet.sh"]);
    shell.env.insert("WHO".into(), "world".into());
    let mut custom = app("custom", "untyped", &["x.bin"]);
    custom.cmds = vec!["./x.bin --serve".into()];
    config.apps = vec![
        app("web", "kube", &["web.yaml"]),
        app("chart", "helm", &["mychart"]),
        shell,
        custom,
        app("blob", "untyped", &["y.bin"]),
    ];
    config.launch = vec![
        "web".into(),
        "chart".into(),
        "greeter".into(),
        "custom".into(),
    ];
}

/// `(cmd, cwd, env)` of a command.
type Ran = (String, String, Vec<(String, String)>);

/// `(cmd, cwd, env)` of every `sh -c` launch-time command run on the first master.
fn launched(f: &Fixture) -> Vec<Ran> {
    f.fakes[&ip("198.18.0.2")]
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Run(cmd) if cmd.argv.len() == 3 && cmd.argv[1] == "-c" => {
                Some((cmd.argv[2].clone(), cmd.cwd.unwrap_or_default(), cmd.env))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn tls_and_auth_reach_the_registry_host_and_every_mirror_through_stdin_only() {
    let mut f = setup(|_, _| {});
    let state = tempfile::tempdir().unwrap();
    let access =
        RegistryAccess::prepare(&f.install.spec, state.path(), std::time::SystemTime::now())
            .unwrap();
    let (user, password) = access.credentials.clone().unwrap();
    f.install.registry_access = access;
    f.install.run().await.unwrap();
    let master = &f.fakes[&ip("198.18.0.2")];
    let node = &f.fakes[&ip("198.18.0.3")];
    // The registry host gets its key and htpasswd 0600, and serves with them.
    let files = written_files(master);
    let mode_of = |files: &[(String, String, String)], path: &str| {
        files
            .iter()
            .find(|(p, _, _)| p == path)
            .map(|(_, m, _)| m.clone())
    };
    assert_eq!(
        mode_of(&files, "/var/lib/airlock/registry/server-key.pem").as_deref(),
        Some("600")
    );
    assert_eq!(
        mode_of(&files, "/var/lib/airlock/registry/htpasswd").as_deref(),
        Some("600")
    );
    assert_eq!(
        mode_of(&files, "/var/lib/airlock/cluster/registry/ca-key.pem").as_deref(),
        Some("600")
    );
    let serve = master
        .commands()
        .into_iter()
        .find(|a| a.len() > 2 && a[2] == REGISTRY)
        .unwrap();
    assert!(serve.contains(&"https".to_string()), "{serve:?}");
    assert!(serve.contains(&"--htpasswd".to_string()), "{serve:?}");
    assert!(serve.contains(&"--tls-key".to_string()), "{serve:?}");
    // Workers: CA and hosts.toml with the header; the password is in no argv anywhere.
    let files = written_files(node);
    let toml = files
        .iter()
        .find(|(p, _, _)| p == "/etc/containerd/certs.d/docker.io/hosts.toml")
        .unwrap();
    assert_eq!(toml.1, "600");
    assert!(
        toml.2.contains("[host.\"https://sea.hub:5000\"]"),
        "{}",
        toml.2
    );
    assert!(
        toml.2
            .contains("ca = \"/etc/containerd/certs.d/docker.io/airlock-ca.crt\""),
        "{}",
        toml.2
    );
    assert!(toml.2.contains("Authorization = [\"Basic "), "{}", toml.2);
    assert!(files.iter().any(
        |(p, _, c)| p == "/etc/containerd/certs.d/docker.io/airlock-ca.crt"
            && c.contains("BEGIN CERTIFICATE")
    ));
    assert!(user == "airlock");
    for fake in f.fakes.values() {
        for argv in fake.commands() {
            assert!(
                !argv.iter().any(|a| a.contains(password.expose())),
                "password in argv {argv:?}"
            );
        }
    }
}

#[tokio::test]
async fn external_registry_mode_runs_no_registry_and_sends_no_image_blobs() {
    const EXTERNAL: &str = "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {name: t}\nspec:\n  ssh: {passwd: pw}\n  registry:\n    externalRegistry: {domain: 127.0.0.1, port: 1, username: u, password: p}\n  hosts:\n  - ips: [198.18.0.2]\n    roles: [master]\n";
    let f = setup_cluster(EXTERNAL);
    let err = f.install.run().await.unwrap_err().to_string();
    // Nothing listens on port 1: the push fails and says where to look.
    assert!(err.contains("externalRegistry"), "{err}");
    let master = &f.fakes[&ip("198.18.0.2")];
    assert!(!ran_script(master, REGISTRY));
    let rootfs_blobs = f.install.plan.rootfs_blobs.len();
    assert_eq!(master.uploads().len(), 1 + rootfs_blobs);
}

#[tokio::test]
async fn ha_runs_a_registry_on_every_master_each_with_the_image_blobs() {
    const HA: &str = "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {name: t}\nspec:\n  ssh: {passwd: pw}\n  registry:\n    localRegistry: {ha: true}\n  hosts:\n  - ips: [198.18.0.2, 198.18.0.3]\n    roles: [master]\n  - ips: [198.18.0.4]\n    roles: [node]\n";
    let f = setup_cluster(HA);
    f.install.run().await.unwrap();
    let all = 1 + f.install.plan.rootfs_blobs.len() + f.install.plan.image_blobs.len();
    for master in ["198.18.0.2", "198.18.0.3"] {
        let fake = &f.fakes[&ip(master)];
        assert!(ran_script(fake, REGISTRY), "{master}");
        assert_eq!(fake.uploads().len(), all, "{master}");
        // Each master names itself for the registry domain.
        let hosts = fake
            .commands()
            .into_iter()
            .find(|a| a.len() > 3 && a[2] == ETC_HOSTS)
            .unwrap();
        assert_eq!(hosts[4], master);
    }
    let worker = &f.fakes[&ip("198.18.0.4")];
    assert!(!ran_script(worker, REGISTRY));
    assert_eq!(
        worker.uploads().len(),
        1 + f.install.plan.rootfs_blobs.len()
    );
    let toml = written_files(worker)
        .into_iter()
        .find(|(p, _, _)| p.ends_with("docker.io/hosts.toml"))
        .unwrap()
        .2;
    assert!(
        toml.find("http://sea.hub:5000").unwrap() < toml.find("http://198.18.0.3:5000").unwrap(),
        "{toml}"
    );
}

#[tokio::test]
async fn launch_runs_cmds_then_each_app_by_type_in_its_dir_with_its_env() {
    let f = setup_with(CLUSTERFILE, &apps, |_, _| {});
    f.install.run().await.unwrap();
    let ran = launched(&f);
    let apps_dir = "/var/lib/airlock/rootfs/application/apps";
    let got: Vec<(&str, &str)> = ran
        .iter()
        .map(|(c, d, _)| (c.as_str(), d.as_str()))
        .filter(|(c, _)| !c.starts_with("echo "))
        .collect();
    assert_eq!(
        got,
        [
            ("sh scripts/launch.sh", "/var/lib/airlock/rootfs"),
            (
                "kubectl apply -f /var/lib/airlock/rootfs/application/apps/web",
                &*format!("{apps_dir}/web")
            ),
            (
                "helm install chart /var/lib/airlock/rootfs/application/apps/chart/mychart",
                &*format!("{apps_dir}/chart")
            ),
            (
                "sh /var/lib/airlock/rootfs/application/apps/greeter/greet.sh",
                &*format!("{apps_dir}/greeter")
            ),
            ("./x.bin --serve", &*format!("{apps_dir}/custom")),
        ]
    );
    let greeter_env = &ran
        .iter()
        .find(|(c, _, _)| c.contains("greet.sh"))
        .unwrap()
        .2;
    assert!(greeter_env.contains(&("WHO".to_string(), "world".to_string())));
    assert!(greeter_env.contains(&("GREETING".to_string(), "hello".to_string())));
}

#[tokio::test]
async fn application_documents_override_the_launch_list_cmds_and_env() {
    let cf = format!(
        "{CLUSTERFILE}---\napiVersion: app.sealer.io/v1beta1\nkind: Application\nmetadata: {{name: a}}\nspec:\n  launchApps: [greeter]\n  configs:\n  - name: greeter\n    env: [WHO=operator]\n    launch:\n      cmds: [sh greet.sh --loud]\n"
    );
    let f = setup_with(&cf, &apps, |_, _| {});
    f.install.run().await.unwrap();
    let ran: Vec<_> = launched(&f)
        .into_iter()
        .filter(|(c, _, _)| !c.starts_with("echo "))
        .collect();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_eq!(ran[1].0, "sh greet.sh --loud");
    assert!(
        ran[1]
            .2
            .contains(&("WHO".to_string(), "operator".to_string()))
    );
}

#[tokio::test]
async fn an_untyped_app_without_commands_or_an_unknown_app_is_refused() {
    let only = |names: &'static [&'static str]| {
        move |c: &mut ClusterConfig| {
            apps(c);
            c.launch = names.iter().map(|n| (*n).to_string()).collect();
        }
    };
    let f = setup_with(CLUSTERFILE, &only(&["blob"]), |_, _| {});
    let err = f.install.run().await.unwrap_err().to_string();
    assert!(
        err.contains("app \"blob\" is untyped") && err.contains("APPCMDS blob"),
        "{err}"
    );
    let f = setup_with(CLUSTERFILE, &only(&["nope"]), |_, _| {});
    let err = f.install.run().await.unwrap_err().to_string();
    assert!(
        err.contains("no such app (it has: web, chart, greeter, custom, blob)"),
        "{err}"
    );
}

#[tokio::test]
async fn the_upgrade_hook_runs_upgrade_plugins_only_where_in_scope() {
    let cf = format!(
        "{CLUSTERFILE}---\napiVersion: sealer.io/v1\nkind: Plugin\nmetadata: {{name: up}}\nspec:\n  type: SHELL\n  action: upgrade\n  scope: master\n  data: echo upgrading\n"
    );
    let f = setup_with(&cf, &|_| {}, |_, _| {});
    f.install.run().await.unwrap();
    let ran = |host: &str| {
        f.fakes[&ip(host)]
            .commands()
            .iter()
            .filter(|a| a.get(2).map(String::as_str) == Some("echo upgrading"))
            .count()
    };
    assert_eq!(
        ran("198.18.0.2"),
        0,
        "an install does not run the upgrade phase"
    );
    f.install.run_phase(Phase::Upgrade).await.unwrap();
    assert_eq!((ran("198.18.0.2"), ran("198.18.0.3")), (1, 0));
    assert_eq!(Phase::parse("Upgrade"), Some(Phase::Upgrade));
    let events = f.events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Step {
            step: StepId::Plugin(Phase::Upgrade),
            state: StepState::Done,
            ..
        }
    )));
    assert_eq!(StepId::Plugin(Phase::Upgrade).as_str(), "plugin-upgrade");
}

/// The image's generic runtime, plus two files on every host before init and join:
/// `fixed` and `kept` (which the runtime keeps current itself).
#[derive(Debug)]
struct KeepingRuntime {
    inner: Arc<dyn Runtime>,
    fixed: &'static str,
    kept: &'static str,
}

impl Runtime for KeepingRuntime {
    fn name(&self) -> &str {
        "keeping"
    }

    fn command(
        &self,
        action: RuntimeAction,
        rootfs: &str,
        env: &[(String, String)],
    ) -> Option<RemoteCommand> {
        self.inner.command(action, rootfs, env)
    }

    fn script(&self, action: RuntimeAction) -> Option<&str> {
        self.inner.script(action)
    }

    fn files(
        &self,
        _action: RuntimeAction,
        _host: &Host,
    ) -> Vec<crate::install::runtime::RuntimeFile> {
        [("fixed", self.fixed), ("kept", self.kept)]
            .into_iter()
            .map(|(name, text)| crate::install::runtime::RuntimeFile {
                path: format!("/var/lib/airlock/cluster/{name}"),
                bytes: text.as_bytes().to_vec(),
                mode: "600",
            })
            .collect()
    }

    fn keeps_current(&self, file: &crate::install::runtime::RuntimeFile) -> bool {
        file.path.ends_with("/kept")
    }
}

#[tokio::test]
async fn files_the_runtime_keeps_current_do_not_rerun_finished_steps() {
    let with = |fixed: &'static str, kept: &'static str, markers: &BTreeMap<IpAddr, String>| {
        let markers = markers.clone();
        let mut f = setup(move |ip, fake| {
            if let Some(m) = markers.get(&ip) {
                fake.on(&["sh", "-c", MARKERS], FakeReply::exit(0, m));
            }
        });
        f.install.plan.runtime = Arc::new(KeepingRuntime {
            inner: f.install.plan.runtime.clone(),
            fixed,
            kept,
        });
        f
    };
    let first = with("a", "1", &BTreeMap::new());
    first.install.run().await.unwrap();
    let markers: BTreeMap<IpAddr, String> = first
        .fakes
        .iter()
        .map(|(ip, f)| (*ip, markers_written(f)))
        .collect();
    // The kept file changed: nothing runs again.
    let second = with("a", "2", &markers);
    second.install.run().await.unwrap();
    for fake in second.fakes.values() {
        assert_eq!(
            fake.calls().len(),
            1,
            "only the marker read: {:?}",
            fake.commands()
        );
    }
    // The other file changed: init and the joins run again.
    let third = with("b", "2", &markers);
    third.install.run().await.unwrap();
    assert_eq!(
        runs_of(&third.fakes[&ip("198.18.0.2")], &["sh", "scripts/init.sh"]),
        1
    );
    let joined = third
        .fakes
        .values()
        .filter(|f| runs_of(f, &["sh", "scripts/join.sh"]) == 1)
        .count();
    assert_eq!(joined, third.fakes.len() - 1);
}
