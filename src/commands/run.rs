//! `airlock run` (and `FILE.run install`): install a cluster image onto hosts.
//!
//! 1. Read and resolve the Clusterfile (errors name the field: exit 2).
//! 2. Read the image's plan from the source (the store, or the bundle itself).
//! 3. Connect to every host and run read-only checks; any failure stops here,
//!    before a single host is changed.
//! 4. Ask for confirmation (or `--yes`); only then keep the preflight report
//!    (`preflight.json`) and open the log file, so a declined command leaves nothing
//!    on disk. Then run the install engine, printing its events as lines and keeping
//!    them in the log file, whose path is printed at the end.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{bad_input, cluster};
use crate::image::BlobSource;
use crate::install::{Event, Reporter, StepState, connect};
use crate::printer::Printer;
use crate::remote::known_hosts::KnownHosts;
use crate::remote::{Remote, RemoteCommand, UploadSource};
use crate::settings::Settings;
use crate::spec::clusterfile::{ClusterSpec, Clusterfile};

/// Flags of `airlock run` (and of `FILE.run install`).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The cluster image (taken from the Clusterfile when omitted).
    pub image: Option<String>,
    /// The Clusterfile.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Step timeouts, host concurrency, output format.
    #[command(flatten)]
    pub engine: super::progress::EngineArgs,
}

/// Install a cluster from the local store.
pub async fn run(args: RunArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let (cf, spec) = read_clusterfile(&args, settings)?;
    let wanted = args.image.clone().unwrap_or_else(|| spec.image.clone());
    let from = cluster::store_source(settings, &wanted)?;
    cluster::converge(&cf, spec, from, args.yes, &args.engine, settings, printer).await
}

/// Install a cluster whose image is `image` in `source` (a bundle), putting `agent`
/// (the bundle's own airlock binary) on the hosts.
pub async fn run_from(
    args: RunArgs,
    source: Arc<dyn BlobSource>,
    image: String,
    agent: UploadSource,
    settings: &Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    let (cf, spec) = read_clusterfile(&args, settings)?;
    let from = cluster::ImageSource {
        source,
        image,
        agent,
    };
    cluster::converge(&cf, spec, from, args.yes, &args.engine, settings, printer).await
}

fn read_clusterfile(
    args: &RunArgs,
    settings: &Settings,
) -> anyhow::Result<(Clusterfile, ClusterSpec)> {
    let path = args.file.clone().ok_or_else(|| {
        bad_input("no Clusterfile: pass -f Clusterfile (see docs/clusterfile.md)")
    })?;
    let cf = cluster::read_clusterfile(&path)?;
    let spec = cluster::resolve(&cf, settings)?;
    Ok((cf, spec))
}

/// Connect to every host; every failure names its host and stops everything.
pub(crate) async fn connect_all(
    spec: &ClusterSpec,
    settings: &Settings,
    printer: Printer,
) -> anyhow::Result<BTreeMap<IpAddr, Arc<dyn Remote>>> {
    let known_hosts = KnownHosts::new(settings.root.join("known_hosts"));
    match connect::connect_all(spec, &known_hosts).await {
        Ok(connected) => {
            for key in &connected.new_keys {
                printer.status(format!(
                    "trusted the host key of {} on first use: {} {}",
                    key.host, key.algorithm, key.fingerprint
                ));
            }
            Ok(connected.remotes)
        }
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::bail!(
                "cannot reach every host, nothing was changed:\n  {}",
                lines.join("\n  ")
            )
        }
    }
}

/// Read-only checks on every host before anything changes (at most `spec.maxParallel`
/// hosts at once).
pub(crate) async fn preflight(
    spec: &ClusterSpec,
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
) -> anyhow::Result<()> {
    let arch = std::env::consts::ARCH;
    let gate = tokio::sync::Semaphore::new(
        spec.max_parallel
            .unwrap_or(crate::install::limits::DEFAULT_MAX_PARALLEL),
    );
    let gate = &gate;
    let checks = spec.hosts.iter().map(|host| async move {
        let _permit = gate.acquire().await;
        let remote = &remotes[&host.ip];
        let out = remote
            .check(&RemoteCommand::new("uname").arg("-m").sudo())
            .await
            .map_err(|e| format!("{}: cannot run commands as root: {e}", host.ip))?;
        let got = out.stdout_text().trim().to_string();
        if got != arch {
            return Err(format!(
                "{}: architecture is {got}, this airlock is for {arch}; use a bundle built for {got}",
                host.ip
            ));
        }
        Ok(())
    });
    let errors: Vec<String> = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "host checks failed, nothing was changed:\n  {}",
            errors.join("\n  ")
        )
    }
}

/// Every preflight check ([`crate::preflight::run`]) on every host of `spec`, before
/// anything changes: warnings and failures are printed, and any failure not in
/// `ignore` stops the command with nothing changed. The report comes back in memory:
/// the caller keeps it ([`keep_preflight_report`]) only once the operator confirmed,
/// so that a declined or refused command leaves nothing on disk.
pub(crate) async fn host_checks(
    spec: &ClusterSpec,
    remotes: &BTreeMap<IpAddr, Arc<dyn Remote>>,
    req: &crate::preflight::Requirements,
    ignore: &std::collections::BTreeSet<crate::preflight::CheckId>,
    printer: Printer,
) -> anyhow::Result<crate::preflight::Report> {
    use crate::preflight::Status;
    let targets: crate::preflight::Targets = remotes
        .iter()
        .map(|(ip, remote)| (*ip, Ok(remote.clone())))
        .collect();
    let report = crate::preflight::run(spec, req, &targets, ignore, &|_| {}).await;
    // On stderr, as every other progress line (stdout may be `-o json` events); checks
    // skipped because the image does not need them are not news.
    let mut failed = 0;
    for f in &report.findings {
        match f.status {
            Status::Fail => {
                failed += 1;
                printer.status(f.line());
            }
            Status::Warn => printer.status(f.line()),
            Status::Skipped if ignore.contains(&f.check) => printer.status(f.line()),
            Status::Skipped | Status::Pass => {}
        }
    }
    if failed > 0 {
        let mut ids: Vec<&str> = report
            .findings
            .iter()
            .filter(|f| f.status == Status::Fail && f.check.can_skip())
            .map(|f| f.check.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        anyhow::bail!(
            "preflight: {failed} check(s) failed (above); nothing was changed. Fix them and run again{}",
            if ids.is_empty() {
                String::new()
            } else {
                format!(
                    ", or go on anyway with --ignore-preflight-errors={}",
                    ids.join(",")
                )
            }
        );
    }
    printer.status(format!(
        "preflight: {} hosts passed{}",
        spec.hosts.len(),
        if ignore.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = ignore.iter().map(|id| id.as_str()).collect();
            format!(" (ignored: {})", names.join(", "))
        }
    ));
    Ok(report)
}

/// Keep `report` as `preflight.json` in the cluster's directory (the support bundle's
/// copy): the checks this install went ahead on. Called once the operator confirmed.
pub(crate) fn keep_preflight_report(
    cluster_dir: &Path,
    report: &crate::preflight::Report,
) -> anyhow::Result<()> {
    crate::install::journal::write_atomic(
        &cluster_dir.join("preflight.json"),
        &crate::image::store::to_json(report),
    )?;
    Ok(())
}

/// Where this run's log of `cluster` goes: `<store>/clusters/<name>/logs/install-<secs>.log`
/// (nothing is created here).
pub(crate) fn log_file(settings: &Settings, cluster: &str) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    settings
        .root
        .join("clusters")
        .join(cluster)
        .join("logs")
        .join(format!("install-{stamp}.log"))
}

pub(crate) fn sha256_region(path: &Path, offset: u64, len: u64) -> anyhow::Result<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = fs_err::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let (digest, _) = crate::digest::digest_reader(f.take(len))?;
    Ok(digest.hex().to_string())
}

/// Renders events as plain lines on stderr (unless quiet) and appends them as JSON
/// lines to the log file, if any. A log can be held: its lines wait in memory until
/// [`LineReporter::open_log`] (after the operator confirmed), and are dropped if it
/// never comes, so a declined command creates no file.
pub(crate) struct LineReporter {
    printer: Printer,
    log: Option<Mutex<LogFile>>,
}

/// The log file of a [`LineReporter`]: held in memory, or open.
enum LogFile {
    Held { path: PathBuf, lines: Vec<u8> },
    Open { path: PathBuf, file: fs_err::File },
}

/// `path` opened for appending, its directory made first.
fn open_append(path: &Path) -> anyhow::Result<fs_err::File> {
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
    }
    Ok(fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?)
}

impl LineReporter {
    /// Lines on stderr and in the log file at `path`, opened now.
    pub(crate) fn new(printer: Printer, path: &Path) -> anyhow::Result<Self> {
        let file = open_append(path)?;
        Ok(Self {
            printer,
            log: Some(Mutex::new(LogFile::Open {
                path: path.to_path_buf(),
                file,
            })),
        })
    }

    /// Lines on stderr, and in the log file at `path` once [`LineReporter::open_log`]
    /// is called (the lines before it are kept until then).
    pub(crate) fn held(printer: Printer, path: PathBuf) -> Self {
        Self {
            printer,
            log: Some(Mutex::new(LogFile::Held {
                path,
                lines: Vec::new(),
            })),
        }
    }

    /// Create the held log file and write what it held; a no-op once open.
    pub(crate) fn open_log(&self) -> anyhow::Result<()> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let mut log = log
            .lock()
            .map_err(|_| anyhow::anyhow!("log lock poisoned"))?;
        if let LogFile::Held { path, lines } = &*log {
            let mut file = open_append(path)?;
            file.write_all(lines)?;
            *log = LogFile::Open {
                path: path.clone(),
                file,
            };
        }
        Ok(())
    }

    /// Lines on stderr only.
    pub(crate) fn stderr(printer: Printer) -> Self {
        Self { printer, log: None }
    }

    /// The log file's path, once it is open.
    pub(crate) fn log_path(&self) -> Option<PathBuf> {
        match &*self.log.as_ref()?.lock().ok()? {
            LogFile::Open { path, .. } => Some(path.clone()),
            LogFile::Held { .. } => None,
        }
    }
}

impl Reporter for LineReporter {
    fn event(&self, event: Event) {
        if let Some(Ok(mut log)) = self.log.as_ref().map(Mutex::lock) {
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            match &mut *log {
                LogFile::Held { lines, .. } => lines.extend_from_slice(&line),
                LogFile::Open { file, .. } => {
                    let _ = file.write_all(&line);
                }
            }
        }
        let secs = |ms: u64| format!("{:.1}s", Duration::from_millis(ms).as_secs_f64());
        match event {
            Event::Step {
                host,
                step,
                state,
                elapsed_ms,
            } => match state {
                StepState::Started => self.printer.status(format!("{host}: {step} ...")),
                StepState::Done => self
                    .printer
                    .status(format!("{host}: {step} done ({})", secs(elapsed_ms))),
                StepState::Skipped => self.printer.status(format!("{host}: {step} already done")),
                StepState::Failed(why) => self.printer.status(format!(
                    "{host}: {step} FAILED after {}: {why}",
                    secs(elapsed_ms)
                )),
            },
            Event::Plan { steps } => {
                let hosts: std::collections::BTreeSet<IpAddr> =
                    steps.iter().map(|s| s.host).collect();
                self.printer.status(format!(
                    "plan: {} steps on {} hosts",
                    steps.len(),
                    hosts.len()
                ));
            }
            Event::Retry {
                host,
                step,
                attempt,
                attempts,
                reason,
                wait_ms,
            } => self.printer.status(format!(
                "{host}: {step} failed ({reason}); try {attempt} of {attempts} in {}",
                secs(wait_ms)
            )),
            Event::Transfer { .. } | Event::Finished { .. } => {}
            Event::Log { host, line } => self.printer.status(format!("{host}| {line}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Event {
        Event::Log {
            host: "198.18.0.2".parse().unwrap(),
            line: text.into(),
        }
    }

    #[test]
    fn a_held_log_writes_nothing_until_opened_then_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clusters/c/logs/install-1.log");
        let log = LineReporter::held(Printer { quiet: true }, path.clone());
        log.event(line("before"));
        assert!(!dir.path().join("clusters").exists());
        assert_eq!(log.log_path(), None);
        log.open_log().unwrap();
        log.event(line("after"));
        log.open_log().unwrap();
        assert_eq!(log.log_path(), Some(path.clone()));
        let text = fs_err::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("\"before\"") && lines[1].contains("\"after\""));
    }
}
