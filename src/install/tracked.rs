//! [`Tracked`]: a [`Remote`] that remembers what it is doing, for timeout messages.
//!
//! 1. The engine wraps each host's remote once; a step sets a deadline with
//!    [`Tracked::set_deadline`] before it starts.
//! 2. Every command (or upload) records its description ([`describe`]) as the one in
//!    flight, and a command with no time limit of its own gets the time left until the
//!    deadline (plus a few seconds), so the host stops it too
//!    ([`RemoteCommand::timeout`]).
//! 3. When a step times out, [`Tracked::current`] names the command it was waiting on.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::remote::{
    LineSink, Output, ProgressSink, Remote, RemoteCommand, RemoteError, UploadReport, UploadSource,
};

/// How much longer than the step's deadline a command may run on the host.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    current: Option<String>,
    deadline: Option<Instant>,
}

/// A host's remote, wrapped to remember the command in flight and the step deadline.
pub(crate) struct Tracked {
    inner: Arc<dyn Remote>,
    state: Mutex<State>,
}

impl Tracked {
    /// Wrap `inner`.
    pub(crate) fn new(inner: Arc<dyn Remote>) -> Self {
        Self {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The deadline of the step now running (`None`: no step).
    pub(crate) fn set_deadline(&self, deadline: Option<Instant>) {
        let mut s = self.state();
        s.deadline = deadline;
        s.current = None;
    }

    /// The command last started, described for people.
    pub(crate) fn current(&self) -> Option<String> {
        self.state().current.clone()
    }

    fn start(&self, cmd: &RemoteCommand) -> RemoteCommand {
        let mut s = self.state();
        s.current = Some(describe(cmd));
        let mut cmd = cmd.clone();
        if cmd.timeout.is_none()
            && let Some(deadline) = s.deadline
        {
            // A little past the deadline: the step's own limit fires first and names
            // the step; the host still stops the command soon after.
            let left = deadline.saturating_duration_since(Instant::now());
            cmd.timeout = Some(left + GRACE);
        }
        cmd
    }
}

/// A command as people read it: the program and its arguments; a script as
/// `sh -c '<its one line>'` when short, else `sh -c <N-line script>` and its arguments.
pub(crate) fn describe(cmd: &RemoteCommand) -> String {
    let words: Vec<String> = match cmd.argv.as_slice() {
        [sh, c, text, rest @ ..] if sh == "sh" && c == "-c" => {
            let lines = text.lines().count();
            let mut w = if lines <= 1 && text.len() <= 200 {
                vec![format!("sh -c {}", crate::remote::quote(text))]
            } else {
                vec![format!("sh -c <{lines}-line script>")]
            };
            w.extend(
                rest.iter()
                    .skip_while(|a| *a == "airlock-script")
                    .map(|a| crate::remote::quote(a)),
            );
            w
        }
        argv => argv.iter().map(|a| crate::remote::quote(a)).collect(),
    };
    let mut text = words.join(" ");
    if let Some(dir) = &cmd.cwd {
        text.push_str(&format!(" (in {dir})"));
    }
    text
}

#[async_trait::async_trait]
impl Remote for Tracked {
    fn host(&self) -> &str {
        self.inner.host()
    }

    async fn run(&self, cmd: &RemoteCommand) -> Result<Output, RemoteError> {
        let cmd = self.start(cmd);
        self.inner.run(&cmd).await
    }

    async fn upload(
        &self,
        source: &UploadSource,
        path: &str,
        mode: u32,
    ) -> Result<(), RemoteError> {
        self.state().current = Some(format!("upload of {path}"));
        self.inner.upload(source, path, mode).await
    }

    async fn run_streaming(
        &self,
        cmd: &RemoteCommand,
        on_line: LineSink<'_>,
    ) -> Result<Output, RemoteError> {
        let cmd = self.start(cmd);
        self.inner.run_streaming(&cmd, on_line).await
    }

    async fn upload_with_progress(
        &self,
        source: &UploadSource,
        path: &str,
        mode: u32,
        progress: ProgressSink<'_>,
    ) -> Result<UploadReport, RemoteError> {
        self.state().current = Some(format!("upload of {path}"));
        self.inner
            .upload_with_progress(source, path, mode, progress)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::fake::FakeRemote;

    #[tokio::test]
    async fn commands_get_the_time_left_and_are_remembered() {
        let fake = Arc::new(FakeRemote::new("h"));
        let tracked = Tracked::new(fake.clone());
        tracked.set_deadline(Some(Instant::now() + Duration::from_secs(600)));
        tracked
            .run(&RemoteCommand::script("echo a\necho b\n", ["x y"]).cwd("/r"))
            .await
            .unwrap();
        assert_eq!(
            tracked.current().as_deref(),
            Some("sh -c <2-line script> 'x y' (in /r)")
        );
        let limit = fake.calls().iter().find_map(|c| match c {
            crate::remote::fake::FakeCall::Run(cmd) => cmd.timeout,
            crate::remote::fake::FakeCall::Upload { .. } => None,
        });
        assert!(limit.is_some_and(|l| l <= Duration::from_secs(600) + GRACE));
        assert_eq!(
            describe(&RemoteCommand::new("sh").args(["-c", "kubectl apply -f ."])),
            "sh -c 'kubectl apply -f .'"
        );
    }
}
