//! `airlock agent lb`: the API server load balancer a worker runs.
//!
//! 1. The backends are the `--backend` flags plus the lines of `--backends-file`
//!    (one `IP:PORT` a line, `#` comments).
//! 2. [`LoadBalancer::bind`] listens; its `run` proxies and health-checks until
//!    SIGINT or SIGTERM.
//! 3. Meanwhile the backends file is re-read every second, and at once on SIGHUP;
//!    when its contents change the new list replaces the old one. A file that does
//!    not parse is reported and the last good list kept.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::commands::bad_input;
use crate::printer::Printer;
use crate::runtime::kubernetes::lb::{
    HealthCheck, LbConfig, LbHandle, LoadBalancer, Probe, parse_backends,
};

/// Flags of `airlock agent lb`.
#[derive(Debug, clap::Args)]
pub struct LbArgs {
    /// Where clients connect.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// An API server (repeatable).
    #[arg(long = "backend", value_name = "IP:PORT")]
    pub backends: Vec<SocketAddr>,
    /// A file of more backends, one IP:PORT a line; re-read when it changes or on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub backends_file: Option<PathBuf>,
    /// The health check: `https PATH` (GET over TLS; 200, 401 and 403 count as up) or `tcp`.
    #[arg(long, num_args = 1..=2, value_names = ["KIND", "PATH"], default_values = ["https", "/readyz"])]
    pub health: Vec<String>,
    /// Verify the backends' certificates with this CA (e.g. /etc/kubernetes/pki/ca.crt);
    /// without it the probe does not verify them.
    #[arg(long, value_name = "FILE")]
    pub health_ca: Option<PathBuf>,
    /// Milliseconds between two rounds of health checks.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interval_ms: u64,
    /// Milliseconds one probe may take.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Failed probes in a row that take a backend out.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub fall: u32,
    /// Good probes in a row that put a backend back.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub rise: u32,
}

/// Run the load balancer until SIGINT or SIGTERM.
pub async fn run(args: LbArgs, printer: Printer) -> anyhow::Result<()> {
    let probe = match args.health.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["tcp"] => Probe::Tcp,
        ["https"] => Probe::Https {
            path: "/readyz".into(),
            ca_pem: read_ca(args.health_ca.as_ref())?,
        },
        ["https", path] if path.starts_with('/') => Probe::Https {
            path: path.to_string(),
            ca_pem: read_ca(args.health_ca.as_ref())?,
        },
        _ => {
            return Err(bad_input(format!(
                "--health {}: write `https /readyz` or `tcp`",
                args.health.join(" ")
            )));
        }
    };
    if args.fall == 0 || args.rise == 0 || args.interval_ms == 0 {
        return Err(bad_input(
            "--fall, --rise and --interval-ms must be at least 1",
        ));
    }
    let mut watcher = FileWatch {
        path: args.backends_file.clone(),
        fixed: args.backends.clone(),
        last: None,
    };
    let backends = watcher.initial()?;
    if backends.is_empty() {
        return Err(bad_input(
            "no backend: give --backend IP:PORT or a --backends-file listing some",
        ));
    }
    let mut config = LbConfig::new(args.listen, backends.clone());
    config.health = HealthCheck {
        probe,
        interval: Duration::from_millis(args.interval_ms),
        timeout: Duration::from_millis(args.timeout_ms),
        fall: args.fall,
        rise: args.rise,
    };
    let lb = LoadBalancer::bind(config).await.map_err(bad_input)?;
    let handle = lb.handle();
    printer.status(format!(
        "load balancer on {} in front of {}",
        lb.local_addr()?,
        list(&backends)
    ));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(lb.run(shutdown.clone()));

    let mut hangup = signal(SignalKind::hangup()).context("watching SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => watcher.reload(&handle, printer, true),
            _ = tick.tick() => watcher.reload(&handle, printer, false),
        }
    }
    shutdown.cancel();
    task.await.context("the load balancer stopped")?;
    printer.status("load balancer stopped");
    Ok(())
}

fn read_ca(path: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    path.map(|p| fs_err::read_to_string(p).map_err(|e| bad_input(format!("--health-ca: {e}"))))
        .transpose()
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `--backend` flags plus the backends file, and the file's last contents.
struct FileWatch {
    path: Option<PathBuf>,
    fixed: Vec<SocketAddr>,
    last: Option<String>,
}

impl FileWatch {
    /// The first list: a file that cannot be read or parsed is bad input.
    fn initial(&mut self) -> anyhow::Result<Vec<SocketAddr>> {
        let Some(path) = &self.path else {
            return Ok(self.fixed.clone());
        };
        let text = fs_err::read_to_string(path).map_err(bad_input)?;
        let from_file =
            parse_backends(&text).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
        self.last = Some(text);
        Ok(self.merged(from_file))
    }

    fn merged(&self, from_file: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let mut all = self.fixed.clone();
        for addr in from_file {
            if !all.contains(&addr) {
                all.push(addr);
            }
        }
        all
    }

    /// Re-read the file; apply it when it changed (or always, when `force`).
    fn reload(&mut self, handle: &LbHandle, printer: Printer, force: bool) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let text = match fs_err::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                if force || self.last.is_some() {
                    printer.warn(format!("{e}; keeping the current backends"));
                }
                self.last = None;
                return;
            }
        };
        if !force && self.last.as_deref() == Some(text.as_str()) {
            return;
        }
        self.last = Some(text.clone());
        match parse_backends(&text) {
            Ok(from_file) => {
                let all = self.merged(from_file);
                if all.is_empty() {
                    printer.warn(format!(
                        "{} lists no backend; keeping the current ones",
                        path.display()
                    ));
                } else if handle.set_backends(&all) {
                    printer.status(format!("backends now {}", list(&all)));
                }
            }
            Err(e) => printer.warn(format!(
                "{}: {e}; keeping the current backends",
                path.display()
            )),
        }
    }
}
