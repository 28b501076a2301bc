//! [`FakeRemote`]: a recording fake of [`Remote`] for unit tests of orchestration.
//!
//! It talks to no host. It is a fake, named as one:
//! 1. Tests script replies with [`FakeRemote::on`]: the first rule whose argv prefix
//!    matches a command answers it (an [`Output`], a timeout, a lost session, or
//!    never: [`FakeReply::Hang`]).
//!    Commands no rule matches exit 0 with no output.
//! 2. Uploads succeed unless [`FakeRemote::fail_uploads`] scripted failures remain
//!    ([`FakeUploadFailure`]), taken one per upload.
//! 3. Every call is recorded in order; [`FakeRemote::calls`], [`FakeRemote::commands`]
//!    and [`FakeRemote::uploads`] return them for assertions.

use std::sync::Mutex;

use super::{Output, Remote, RemoteCommand, RemoteError, UploadSource};

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeCall {
    /// [`Remote::run`] (or `check`, `run_streaming`).
    Run(RemoteCommand),
    /// [`Remote::upload`].
    Upload {
        /// What was to be sent.
        source: UploadSource,
        /// Destination path.
        path: String,
        /// Destination mode.
        mode: u32,
    },
}

/// A scripted answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeReply {
    /// The command finished with this output.
    Output(Output),
    /// The command ran past its timeout.
    Timeout,
    /// The SSH session broke.
    SessionLost,
    /// The command never ends (for time limits: the caller must give up).
    Hang,
}

impl FakeReply {
    /// Exit `status` with `stdout`.
    pub fn exit(status: i32, stdout: &str) -> Self {
        Self::Output(Output {
            status,
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        })
    }

    /// Exit `status` with `stderr`.
    pub fn fail(status: i32, stderr: &str) -> Self {
        Self::Output(Output {
            status,
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
        })
    }
}

/// A scripted upload failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeUploadFailure {
    /// The far side found a digest mismatch.
    Corrupt,
    /// The SSH session broke mid-transfer.
    SessionLost,
    /// The transfer ran past its timeout.
    Timeout,
}

struct Rule {
    prefix: Vec<String>,
    reply: FakeReply,
    /// Answers left; `None` answers forever.
    times: Option<usize>,
}

/// A recording fake host.
pub struct FakeRemote {
    host: String,
    rules: Mutex<Vec<Rule>>,
    upload_failures: Mutex<Vec<FakeUploadFailure>>,
    calls: Mutex<Vec<FakeCall>>,
}

impl FakeRemote {
    /// A fake host named `host`.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            rules: Mutex::new(Vec::new()),
            upload_failures: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Answer commands whose argv starts with `prefix` with `reply`, always.
    pub fn on(&self, prefix: &[&str], reply: FakeReply) -> &Self {
        self.add_rule(prefix, reply, None)
    }

    /// Answer the next `times` commands starting with `prefix` with `reply`; later
    /// ones fall through to other rules.
    pub fn on_times(&self, prefix: &[&str], reply: FakeReply, times: usize) -> &Self {
        self.add_rule(prefix, reply, Some(times))
    }

    /// Fail the next uploads, one per reply given.
    pub fn fail_uploads(&self, failures: impl IntoIterator<Item = FakeUploadFailure>) -> &Self {
        lock(&self.upload_failures).extend(failures);
        self
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        lock(&self.calls).clone()
    }

    /// The argv of every command so far.
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                FakeCall::Run(cmd) => Some(cmd.argv),
                FakeCall::Upload { .. } => None,
            })
            .collect()
    }

    /// The destination path of every upload so far.
    pub fn uploads(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                FakeCall::Upload { path, .. } => Some(path),
                FakeCall::Run(_) => None,
            })
            .collect()
    }

    fn add_rule(&self, prefix: &[&str], reply: FakeReply, times: Option<usize>) -> &Self {
        lock(&self.rules).push(Rule {
            prefix: prefix.iter().map(|s| (*s).to_string()).collect(),
            reply,
            times,
        });
        self
    }

    fn answer(&self, reply: FakeReply, command: String) -> Result<Output, RemoteError> {
        match reply {
            FakeReply::Output(out) => Ok(out),
            FakeReply::Timeout => Err(RemoteError::Timeout {
                host: self.host.clone(),
                command,
                seconds: 0,
            }),
            FakeReply::SessionLost | FakeReply::Hang => Err(RemoteError::Session {
                host: self.host.clone(),
                reason: "connection lost (scripted by FakeRemote)".to_string(),
            }),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait::async_trait]
impl Remote for FakeRemote {
    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, cmd: &RemoteCommand) -> Result<Output, RemoteError> {
        lock(&self.calls).push(FakeCall::Run(cmd.clone()));
        let reply = {
            let mut rules = lock(&self.rules);
            let found = rules
                .iter_mut()
                .find(|rule| rule.times != Some(0) && cmd.argv.starts_with(&rule.prefix));
            found.map(|rule| {
                if let Some(times) = &mut rule.times {
                    *times -= 1;
                }
                rule.reply.clone()
            })
        };
        let reply = reply.unwrap_or(FakeReply::exit(0, ""));
        if reply == FakeReply::Hang {
            std::future::pending::<()>().await;
        }
        self.answer(reply, cmd.summary())
    }

    async fn upload(
        &self,
        source: &UploadSource,
        path: &str,
        mode: u32,
    ) -> Result<(), RemoteError> {
        lock(&self.calls).push(FakeCall::Upload {
            source: source.clone(),
            path: path.to_string(),
            mode,
        });
        let failure = {
            let mut failures = lock(&self.upload_failures);
            (!failures.is_empty()).then(|| failures.remove(0))
        };
        let reply = match failure {
            None => return Ok(()),
            Some(FakeUploadFailure::Corrupt) => {
                return Err(RemoteError::TransferCorrupt {
                    host: self.host.clone(),
                    path: path.to_string(),
                });
            }
            Some(FakeUploadFailure::SessionLost) => FakeReply::SessionLost,
            Some(FakeUploadFailure::Timeout) => FakeReply::Timeout,
        };
        self.answer(reply, format!("upload {path}")).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> UploadSource {
        UploadSource {
            path: "/tmp/blob".into(),
            offset: 0,
            len: 3,
            sha256: None,
        }
    }

    #[tokio::test]
    async fn records_and_answers_in_order() {
        let fake = FakeRemote::new("node1");
        fake.on(
            &["systemctl", "is-active"],
            FakeReply::exit(3, "inactive\n"),
        )
        .on_times(&["kubeadm"], FakeReply::Timeout, 1);
        let out = fake
            .run(&RemoteCommand::new("systemctl").args(["is-active", "kubelet"]))
            .await
            .unwrap();
        assert_eq!((out.status, out.stdout_text().as_str()), (3, "inactive\n"));
        let err = fake.run(&RemoteCommand::new("kubeadm").arg("init")).await;
        assert!(matches!(err, Err(RemoteError::Timeout { .. })));
        // The one-shot rule is spent: the second kubeadm falls through to success.
        assert!(fake.check(&RemoteCommand::new("kubeadm")).await.is_ok());
        let failed = fake
            .check(&RemoteCommand::new("systemctl").arg("is-active"))
            .await;
        assert!(matches!(
            failed,
            Err(RemoteError::CommandFailed { status: 3, .. })
        ));
        assert_eq!(fake.commands().len(), 4);
        assert_eq!(fake.commands()[1], vec!["kubeadm", "init"]);
    }

    #[tokio::test]
    async fn scripted_upload_failures_then_success() {
        let fake = FakeRemote::new("node2");
        fake.fail_uploads([FakeUploadFailure::SessionLost, FakeUploadFailure::Corrupt]);
        let first = fake.upload(&source(), "/var/lib/a", 0o644).await;
        assert!(matches!(first, Err(RemoteError::Session { .. })));
        let second = fake.upload(&source(), "/var/lib/a", 0o644).await;
        assert!(matches!(second, Err(RemoteError::TransferCorrupt { .. })));
        fake.upload(&source(), "/var/lib/a", 0o644).await.unwrap();
        assert_eq!(fake.uploads(), vec!["/var/lib/a"; 3]);
        assert!(matches!(
            fake.calls()[2],
            FakeCall::Upload { mode: 0o644, .. }
        ));
    }
}
