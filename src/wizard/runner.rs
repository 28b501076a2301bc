//! The terminal loop: the only place that owns the terminal and performs actions.
//!
//! 1. Raw mode and the alternate screen are entered; a panic hook and a drop guard
//!    restore the terminal whatever happens.
//! 2. One channel carries every [`Event`]: keys (read on a thread), ticks (time since
//!    start), and the reports of work started by actions.
//! 3. Each event goes through [`on`]; an [`Action`] it returns is performed here,
//!    through the app's [`WizardEngine`], as a future polled beside the loop so the
//!    screen stays live.
//! 4. The session is saved (0600, atomically) whenever the screen changes and on quit,
//!    so an interrupted wizard resumes where it was; secrets are not in it.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use super::event::{Event, InstallResult, Key};
use super::state::{HostKeyRow, ImageInfo, KeyTarget, Outcome, State};
use super::{Action, draw, on};
use crate::install::{InstallError, Reporter};
use crate::preflight::{CheckId, Finding, Report};
use crate::spec::clusterfile::ClusterSpec;

/// What the app does for the wizard: the same engines as the CLI.
#[async_trait::async_trait]
pub trait WizardEngine: Send + Sync {
    /// Verify every blob of the bundle, reporting bytes checked out of the total.
    async fn verify(&self, progress: &(dyn Fn(u64, u64) + Send + Sync)) -> anyhow::Result<()>;

    /// Fetch each host's SSH key without logging in and say what the known-hosts file
    /// says of it (one row per target, in order).
    async fn scan_host_keys(&self, targets: &[KeyTarget]) -> Vec<HostKeyRow>;

    /// Record the keys the user accepted in the known-hosts file.
    async fn trust_host_keys(&self, rows: &[HostKeyRow]) -> anyhow::Result<()>;

    /// Connect to every host of `spec` and run the preflight checks, reporting each
    /// finding as it is known. `Err` only when the checks could not run at all.
    async fn preflight(
        &self,
        spec: &ClusterSpec,
        skip: &BTreeSet<CheckId>,
        on_finding: &(dyn for<'f> Fn(&'f Finding) + Send + Sync),
    ) -> anyhow::Result<Report>;

    /// Run the install of `spec`, streaming progress to `reporter`; the steps in `skip`
    /// (host, step name) are recorded as done without running (the user chose so).
    async fn install(
        &self,
        spec: &ClusterSpec,
        skip: &[(std::net::IpAddr, String)],
        reporter: Arc<dyn Reporter>,
    ) -> InstallResult;

    /// Write a support bundle (logs, journal, `clusterfile` without secrets, host facts).
    async fn support_bundle(&self, clusterfile: &str) -> anyhow::Result<PathBuf>;
}

impl InstallResult {
    /// The failure an [`InstallError`] describes.
    pub fn from_error(err: &InstallError) -> Self {
        match err {
            InstallError::Step { host, step, reason } => Self::Failed {
                host: Some(*host),
                step: Some(*step),
                cause: reason.clone(),
            },
            other => Self::Failed {
                host: None,
                step: None,
                cause: other.to_string(),
            },
        }
    }
}

/// What the wizard starts from.
#[derive(Clone, Debug)]
pub struct WizardInput {
    /// The bundle's image.
    pub image: ImageInfo,
    /// A saved session to resume (see [`load_session`]).
    pub resume: Option<State>,
    /// Where the session is saved.
    pub session_path: PathBuf,
    /// Where the Clusterfile is saved.
    pub clusterfile_path: PathBuf,
    /// Colours allowed (`NO_COLOR` unset).
    pub color: bool,
}

/// How the wizard ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WizardOutcome {
    /// The cluster was installed.
    Installed {
        /// The saved Clusterfile.
        clusterfile: Option<PathBuf>,
    },
    /// The install failed and the user left.
    Failed,
    /// The user left before the end; the session resumes from `session`.
    Quit {
        /// The saved session.
        session: PathBuf,
    },
}

/// Read a saved session; `None` if there is none or it is of another version.
pub fn load_session(path: &Path) -> anyhow::Result<Option<State>> {
    let text = match fs_err::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let state: State = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a wizard session: {e}", path.display()))?;
    Ok((state.version == super::state::SESSION_VERSION).then_some(state))
}

/// Write `bytes` to `path` with mode 0600, through a temporary file and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use fs_err::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs_err::rename(&tmp, path)
}

fn save_session(path: &Path, state: &State) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    write_private(path, &json)
}

/// Restores the terminal when dropped (normal return, error or unwinding).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

type Work<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Run the wizard on the terminal until the user leaves.
pub async fn run_wizard(
    input: WizardInput,
    engine: &dyn WizardEngine,
) -> anyhow::Result<WizardOutcome> {
    let mut state = input
        .resume
        .unwrap_or_else(|| State::new(input.image.clone()));
    state.color = input.color;

    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    crossterm::terminal::enable_raw_mode()?;
    let _guard = TerminalGuard;
    crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::EnterAlternateScreen,
        crossterm::cursor::Hide
    )?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    terminal.clear()?;

    let (tx, mut rx) = unbounded_channel::<Event>();
    let started = Instant::now();
    spawn_input(tx.clone(), started);
    let ticker = {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(250));
            loop {
                interval.tick().await;
                if tx.send(Event::Tick(elapsed_ms(started))).is_err() {
                    break;
                }
            }
        })
    };
    let _ = tx.send(Event::Start);

    let mut work: FuturesUnordered<Work<'_>> = FuturesUnordered::new();
    let result = loop {
        terminal.draw(|frame| draw(&state, frame))?;
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { break Ok(()) };
                let screen = state.screen;
                let action = on(&mut state, event);
                if state.screen != screen {
                    save_session(&input.session_path, &state)?;
                }
                match action {
                    None => {}
                    Some(Action::Quit) => break Ok(()),
                    Some(action) => work.push(perform(action, engine, tx.clone(), &input.clusterfile_path)),
                }
            }
            Some(()) = work.next(), if !work.is_empty() => {}
        }
    };
    ticker.abort();
    drop(terminal);
    result.map_err(|e: std::io::Error| anyhow::Error::from(e))?;
    Ok(match &state.outcome {
        Some(Outcome::Success { .. }) => {
            let _ = fs_err::remove_file(&input.session_path);
            WizardOutcome::Installed {
                clusterfile: state.summary.saved.clone(),
            }
        }
        Some(Outcome::Failure { .. }) => {
            save_session(&input.session_path, &state)?;
            WizardOutcome::Failed
        }
        None => {
            save_session(&input.session_path, &state)?;
            WizardOutcome::Quit {
                session: input.session_path.clone(),
            }
        }
    })
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Read the keyboard on a thread (crossterm's reads block) until the loop is gone.
fn spawn_input(tx: UnboundedSender<Event>, started: Instant) {
    std::thread::spawn(move || {
        while !tx.is_closed() {
            match crossterm::event::poll(Duration::from_millis(100)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => break,
            }
            let event = match crossterm::event::read() {
                Ok(crossterm::event::Event::Key(key)) => Key::from_crossterm(&key).map(Event::Key),
                // A redraw at the new size follows any event.
                Ok(crossterm::event::Event::Resize(..)) => Some(Event::Tick(elapsed_ms(started))),
                Ok(_) => None,
                Err(_) => break,
            };
            if let Some(event) = event
                && tx.send(event).is_err()
            {
                break;
            }
        }
    });
}

/// Perform one action; its results come back as events.
fn perform<'a>(
    action: Action,
    engine: &'a dyn WizardEngine,
    tx: UnboundedSender<Event>,
    clusterfile_path: &'a Path,
) -> Work<'a> {
    Box::pin(async move {
        let event = match action {
            Action::Verify => {
                let progress = {
                    let tx = tx.clone();
                    move |done, total| {
                        let _ = tx.send(Event::VerifyProgress { done, total });
                    }
                };
                Event::Verified(engine.verify(&progress).await.map_err(|e| format!("{e:#}")))
            }
            Action::ScanHostKeys { targets } => {
                Event::HostKeys(engine.scan_host_keys(&targets).await)
            }
            Action::TrustHostKeys { rows } => Event::HostKeysTrusted(
                engine
                    .trust_host_keys(&rows)
                    .await
                    .map_err(|e| format!("{e:#}")),
            ),
            Action::Preflight { spec, skip } => {
                let on_finding = {
                    let tx = tx.clone();
                    move |f: &Finding| {
                        let _ = tx.send(Event::Finding(f.clone()));
                    }
                };
                let result = engine.preflight(&spec, &skip, &on_finding).await;
                Event::PreflightDone(result.map(|_| ()).map_err(|e| format!("{e:#}")))
            }
            Action::SaveClusterfile { yaml } => Event::Saved(
                write_private(clusterfile_path, yaml.as_bytes())
                    .map(|()| clusterfile_path.to_path_buf())
                    .map_err(|e| e.to_string()),
            ),
            Action::Install { spec, skip } => {
                let reporter: Arc<dyn Reporter> = {
                    let tx = tx.clone();
                    Arc::new(move |e| {
                        let _ = tx.send(Event::Install(e));
                    })
                };
                Event::InstallDone(engine.install(&spec, &skip, reporter).await)
            }
            Action::SupportBundle { yaml } => Event::SupportBundle(
                engine
                    .support_bundle(&yaml)
                    .await
                    .map_err(|e| format!("{e:#}")),
            ),
            Action::Quit => return,
        };
        let _ = tx.send(event);
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn sessions_are_private_and_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/session.json");
        assert_eq!(load_session(&path).unwrap(), None);
        let mut state = State::new(ImageInfo::default());
        state.hosts.entry.ips = "198.18.0.2".to_string();
        save_session(&path, &state).unwrap();
        let mode = fs_err::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_session(&path).unwrap().unwrap().hosts, state.hosts);
        state.version += 1;
        save_session(&path, &state).unwrap();
        assert_eq!(
            load_session(&path).unwrap(),
            None,
            "other versions start afresh"
        );
        fs_err::write(&path, "{").unwrap();
        assert!(
            load_session(&path)
                .unwrap_err()
                .to_string()
                .contains("not a wizard session")
        );
    }
}
