//! [`SshRemote`]: the [`Remote`] trait over SSH (russh), with sudo, a bastion and
//! resumable verified uploads.
//!
//! Connecting ([`SshRemote::connect`]):
//! 1. Reach the host: a TCP connection, or a `direct-tcpip` channel through the
//!    bastion (itself an [`SshRemote`]). Connection failures (refused, timed out,
//!    handshake cut) are retried with exponential backoff; nothing else is.
//! 2. The SSH handshake pins the key the server proves; before any credential is
//!    sent it is checked against airlock's [`KnownHosts`] file (trust on first use).
//! 3. Authenticate with the target's [`SshAuth`]: password (falling back to
//!    keyboard-interactive, answered with the same password), a private key file
//!    (ed25519, RSA, ECDSA; optionally passphrase-protected) or the ssh-agent.
//!
//! Running ([`Remote::run`], [`Remote::run_streaming`]):
//! 1. Open an exec channel (at most [`SshTarget::max_channels`] at once: OpenSSH
//!    refuses more than 10 per connection) with [`RemoteCommand::to_shell`].
//! 2. As root through sudo when the login user is not root:
//!    `sudo -S -p <marker> -- sh -c '<announce start>; <command>'`. When the prompt
//!    marker shows on stderr the sudo password is written to stdin (never argv); the
//!    command's own stdin is sent only once the start marker shows.
//! 3. stdout and stderr are collected (and split into lines for the callback); the
//!    exit status is read until the channel closes; the whole is bounded by the
//!    command's timeout. Secrets are scrubbed from what is returned.
//!
//! Uploading ([`Remote::upload`]) uses three exec channels, never SFTP:
//! 1. `upload-probe.sh` reports `present` (the destination already matches) or how
//!    many bytes of `<path>.airlock-part` arrived in an earlier attempt.
//! 2. `upload-append.sh` appends stdin to the part file; the local region is read
//!    in [`CHUNK`]s from that offset and streamed (the prefix is hashed locally
//!    without sending when no SHA-256 was given). A ping follows each chunk and at
//!    most [`IN_FLIGHT`] bytes go out before the server has answered the ping
//!    behind them, so the connection's output buffers stay small (see [`Pacer`]).
//! 3. `upload-commit.sh` hashes the part on the far side, deletes it and fails with
//!    [`RemoteError::TransferCorrupt`] on mismatch, else chmods and renames it.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use russh::client::{self, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelWriteHalf, Disconnect};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Semaphore, oneshot};

use super::known_hosts::{HostKeyInfo, KnownHosts, host_label};
use super::{
    LineSink, Output, ProgressSink, Remote, RemoteCommand, RemoteError, Secret, Stream,
    UploadReport, UploadSource, quote,
};

const PROBE_SCRIPT: &str = include_str!("scripts/upload-probe.sh");
const APPEND_SCRIPT: &str = include_str!("scripts/upload-append.sh");
const COMMIT_SCRIPT: &str = include_str!("scripts/upload-commit.sh");
/// Exit status of `upload-commit.sh` when the digest does not match.
const CORRUPT_STATUS: i32 = 86;
/// Bytes read from the local file and handed to the channel at once.
const CHUNK: usize = 128 << 10;
/// Bytes of an upload sent but not yet acknowledged by the server (see [`Pacer`]).
const IN_FLIGHT: u64 = 512 << 10;

/// How to log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshAuth {
    /// A password; also answers keyboard-interactive prompts.
    Password(Secret),
    /// A private key file in OpenSSH or PEM format.
    Key {
        /// The private key file.
        path: PathBuf,
        /// Its passphrase, if it has one.
        passphrase: Option<Secret>,
    },
    /// Keys held by an ssh-agent listening on `socket` (the app reads `SSH_AUTH_SOCK`).
    Agent {
        /// The agent's Unix socket.
        socket: PathBuf,
    },
}

/// One host to reach over SSH, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    /// Address or name.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Credentials.
    pub auth: SshAuth,
    /// Password sudo asks for, when the login user is not root.
    pub sudo_password: Option<Secret>,
    /// Reach the host through this jump host.
    pub bastion: Option<Box<SshTarget>>,
    /// Limit for the TCP connection plus handshake, and for authentication.
    pub connect_timeout: Duration,
    /// Connection attempts before giving up (at least 1).
    pub connect_attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub retry_backoff: Duration,
    /// Send a keepalive after this long without traffic; 3 unanswered close the session.
    pub keepalive: Duration,
    /// Channels (commands, transfers) open at once on this connection.
    pub max_channels: usize,
}

impl SshTarget {
    /// `user@host:22` with `auth` and the default limits.
    pub fn new(host: impl Into<String>, user: impl Into<String>, auth: SshAuth) -> Self {
        Self {
            host: host.into(),
            port: 22,
            user: user.into(),
            auth,
            sudo_password: None,
            bastion: None,
            connect_timeout: Duration::from_secs(15),
            connect_attempts: 4,
            retry_backoff: Duration::from_secs(1),
            keepalive: Duration::from_secs(15),
            max_channels: 8,
        }
    }

    /// The host as named in messages: `host`, or `host:port` off port 22.
    pub fn label(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            host_label(&self.host, self.port)
        }
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut secrets: Vec<&Secret> = self.sudo_password.iter().collect();
        match &self.auth {
            SshAuth::Password(p) => secrets.push(p),
            SshAuth::Key {
                passphrase: Some(p),
                ..
            } => secrets.push(p),
            _ => {}
        }
        secrets
    }
}

/// Accepts the host key the server proves and pins it: a different key on re-key is
/// refused. The pinned key is checked against [`KnownHosts`] before authenticating.
struct PinningHandler {
    presented: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for PinningHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        let mut slot = self
            .presented
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*slot {
            None => {
                *slot = Some(key);
                Ok(true)
            }
            Some(first) => Ok(first.key_data() == key.key_data()),
        }
    }
}

/// The host key `host:port` presents, fetched without logging in (no credential is
/// sent), so that its fingerprint can be shown before it is trusted.
pub async fn scan_host_key(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<PublicKey, RemoteError> {
    let label = host_label(host, port);
    let connect_error = |reason: String| RemoteError::Connect {
        host: label.clone(),
        reason,
    };
    let presented = Arc::new(Mutex::new(None));
    let handler = PinningHandler {
        presented: Arc::clone(&presented),
    };
    let config = Arc::new(client::Config::default());
    let handle = tokio::time::timeout(timeout, client::connect(config, (host, port), handler))
        .await
        .map_err(|_| connect_error(format!("no answer within {}s", timeout.as_secs_f32())))?
        .map_err(|e| connect_error(e.to_string()))?;
    disconnect(&handle).await;
    presented
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .ok_or_else(|| connect_error("the server proved no host key".to_string()))
}

/// An authenticated SSH connection to one host.
pub struct SshRemote {
    target: SshTarget,
    label: String,
    /// Shared with the ping tasks of uploads (see [`Pacer`]).
    handle: Arc<Handle<PinningHandler>>,
    host_key: HostKeyInfo,
    channels: Semaphore,
    /// Kept open while this connection runs through it.
    _bastion: Option<Box<SshRemote>>,
}

impl std::fmt::Debug for SshRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshRemote")
            .field("host", &self.label)
            .field("user", &self.target.user)
            .finish_non_exhaustive()
    }
}

impl SshRemote {
    /// Connect and authenticate, checking the host key against `known_hosts`.
    pub async fn connect(
        target: SshTarget,
        known_hosts: &KnownHosts,
    ) -> Result<SshRemote, RemoteError> {
        let bastion = match &target.bastion {
            Some(jump) => Some(Box::new(
                Box::pin(Self::connect((**jump).clone(), known_hosts)).await?,
            )),
            None => None,
        };
        let label = target.label();
        let mut delay = target.retry_backoff;
        let mut attempt = 1;
        loop {
            match Self::attempt(&target, bastion.as_deref(), known_hosts).await {
                Ok((handle, host_key)) => {
                    return Ok(SshRemote {
                        channels: Semaphore::new(target.max_channels.max(1)),
                        target,
                        label,
                        handle: Arc::new(handle),
                        host_key,
                        _bastion: bastion,
                    });
                }
                Err(RemoteError::Connect { reason, .. }) if attempt < target.connect_attempts => {
                    tracing::debug!(host = %label, attempt, %reason, "connection failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One connection attempt: reach, handshake, check the key, authenticate.
    async fn attempt(
        target: &SshTarget,
        bastion: Option<&SshRemote>,
        known_hosts: &KnownHosts,
    ) -> Result<(Handle<PinningHandler>, HostKeyInfo), RemoteError> {
        let label = target.label();
        let connect_error = |reason: String| RemoteError::Connect {
            host: label.clone(),
            reason,
        };
        let config = Arc::new(client::Config {
            keepalive_interval: Some(target.keepalive),
            keepalive_max: 3,
            window_size: 8 << 20,
            nodelay: true,
            ..client::Config::default()
        });
        let presented = Arc::new(Mutex::new(None));
        let handler = PinningHandler {
            presented: Arc::clone(&presented),
        };
        let handshake = async {
            match bastion {
                None => client::connect(config, (target.host.as_str(), target.port), handler).await,
                Some(jump) => {
                    let channel = jump
                        .handle
                        .channel_open_direct_tcpip(
                            target.host.clone(),
                            u32::from(target.port),
                            "127.0.0.1",
                            0,
                        )
                        .await
                        .map_err(|e| {
                            russh::Error::IO(std::io::Error::other(format!(
                                "through bastion {}: {e}",
                                jump.label
                            )))
                        })?;
                    client::connect_stream(config, channel.into_stream(), handler).await
                }
            }
        };
        let mut handle = tokio::time::timeout(target.connect_timeout, handshake)
            .await
            .map_err(|_| {
                connect_error(format!(
                    "no answer within {}s",
                    target.connect_timeout.as_secs_f32()
                ))
            })?
            .map_err(|e| connect_error(e.to_string()))?;
        let key = presented
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| connect_error("the server proved no host key".to_string()))?;
        let host_key = match known_hosts.check(&target.host, target.port, &key) {
            Ok(info) => info,
            Err(e) => {
                disconnect(&handle).await;
                return Err(e);
            }
        };
        let authenticated =
            tokio::time::timeout(target.connect_timeout, authenticate(&mut handle, target))
                .await
                .map_err(|_| RemoteError::Session {
                    host: label.clone(),
                    reason: "authentication did not finish in time".to_string(),
                })??;
        if !authenticated {
            disconnect(&handle).await;
            return Err(RemoteError::Auth {
                host: label,
                user: target.user.clone(),
            });
        }
        Ok((handle, host_key))
    }

    /// The host key the server proved, and whether it was just trusted for the first
    /// time (the app shows its fingerprint then).
    pub fn host_key(&self) -> &HostKeyInfo {
        &self.host_key
    }

    /// The target this connection was made for.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Close the connection.
    pub async fn close(&self) {
        disconnect(&self.handle).await;
    }

    fn session_error(&self, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Session {
            host: self.label.clone(),
            reason: e.to_string(),
        }
    }

    /// Whether commands marked `sudo` go through sudo.
    fn needs_sudo(&self, cmd: &RemoteCommand) -> bool {
        cmd.sudo && self.target.user != "root"
    }

    /// Run `cmd`, feeding `stdin`, optionally streaming lines; see the module docs.
    async fn exec(
        &self,
        cmd: &RemoteCommand,
        stdin: Stdin<'_>,
        on_line: Option<LineSink<'_>>,
    ) -> Result<(Output, Option<Fed>), RemoteError> {
        let work = self.exec_untimed(cmd, stdin, on_line);
        match cmd.timeout {
            None => work.await,
            Some(limit) => {
                tokio::time::timeout(limit, work)
                    .await
                    .map_err(|_| RemoteError::Timeout {
                        host: self.label.clone(),
                        command: cmd.summary(),
                        seconds: limit.as_secs(),
                    })?
            }
        }
    }

    async fn exec_untimed(
        &self,
        cmd: &RemoteCommand,
        stdin: Stdin<'_>,
        on_line: Option<LineSink<'_>>,
    ) -> Result<(Output, Option<Fed>), RemoteError> {
        let _permit = self
            .channels
            .acquire()
            .await
            .map_err(|e| self.session_error(e))?;
        let sudo = self.needs_sudo(cmd).then(SudoMarkers::new);
        let line = match &sudo {
            Some(markers) => markers.wrap(cmd),
            None => cmd.to_shell(),
        };
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.session_error(e))?;
        let (rx, tx) = channel.split();
        tx.exec(true, line)
            .await
            .map_err(|e| self.session_error(e))?;
        let (start_tx, start_rx) = oneshot::channel();
        let reader = Reader {
            remote: self,
            sudo,
            tx: Some(tx),
            start: Some(start_tx),
            on_line,
            out: Output {
                status: -1,
                ..Output::default()
            },
            stdout_line: Vec::new(),
            stderr_line: Vec::new(),
            held_stderr: Vec::new(),
            prompts: 0,
            sudo_failure: None,
        };
        let feeder = async {
            let tx = start_rx.await.map_err(|_| FeedError::NotStarted)?;
            feed(&self.handle, tx, stdin).await
        };
        let reading = reader.read(rx);
        tokio::pin!(reading, feeder);
        let mut fed = None;
        let reader = loop {
            tokio::select! {
                reader = &mut reading => break reader,
                result = &mut feeder, if fed.is_none() => fed = Some(result),
            }
        };
        if let Some(reason) = reader.sudo_failure {
            return Err(RemoteError::Sudo {
                host: self.label.clone(),
                user: self.target.user.clone(),
                reason: reason.to_string(),
            });
        }
        let fed = match fed {
            Some(Ok(fed)) => Some(fed),
            Some(Err(FeedError::Local { path, source })) => {
                return Err(RemoteError::Local { path, source });
            }
            Some(Err(FeedError::Channel(_) | FeedError::NotStarted)) | None => None,
        };
        let secrets = self.target.secrets();
        let mut out = reader.out;
        out.stdout = redact_bytes(out.stdout, &secrets);
        out.stderr = redact_bytes(out.stderr, &secrets);
        Ok((out, fed))
    }

    /// Upload with the three scripts from the module docs.
    async fn send_file(
        &self,
        source: &UploadSource,
        path: &str,
        mode: u32,
        progress: ProgressSink<'_>,
    ) -> Result<UploadReport, RemoteError> {
        let part = format!("{path}.airlock-part");
        let as_root = |cmd: RemoteCommand| {
            if self.target.user == "root" {
                cmd
            } else {
                cmd.sudo()
            }
        };
        let want = source.sha256.clone().unwrap_or_default();
        let probe = RemoteCommand::script(
            PROBE_SCRIPT,
            [path, part.as_str(), &source.len.to_string(), &want],
        );
        let probed = self.run(&as_root(probe.clone())).await?;
        if !probed.success() {
            return Err(self.failed(&probe, &probed));
        }
        let answer = probed.stdout_text();
        let answer = answer.trim();
        if answer == "present" {
            progress(source.len);
            return Ok(UploadReport {
                resumed_from: source.len,
                bytes_sent: 0,
                already_present: true,
            });
        }
        let resumed_from: u64 = answer
            .strip_prefix("offset ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| self.session_error(format!("upload probe answered {answer:?}")))?;
        let append = as_root(RemoteCommand::script(APPEND_SCRIPT, [part.as_str()]));
        let (appended, fed) = self
            .exec(
                &append,
                Stdin::Region {
                    source,
                    from: resumed_from,
                    hash: source.sha256.is_none(),
                    progress,
                },
                None,
            )
            .await?;
        let fed = match fed {
            Some(fed) if appended.success() => fed,
            _ => {
                return Err(self.session_error(format!(
                    "the transfer of {path} stopped (exit {}): {}",
                    appended.status,
                    appended.stderr_tail(3)
                )));
            }
        };
        let want = source.sha256.clone().or(fed.sha256).unwrap_or_default();
        let commit = RemoteCommand::script(
            COMMIT_SCRIPT,
            [path, part.as_str(), &want, &format!("{mode:o}")],
        );
        let committed = self.run(&as_root(commit.clone())).await?;
        match committed.status {
            0 => Ok(UploadReport {
                resumed_from,
                bytes_sent: fed.sent,
                already_present: false,
            }),
            CORRUPT_STATUS => Err(RemoteError::TransferCorrupt {
                host: self.label.clone(),
                path: path.to_string(),
            }),
            _ => Err(self.failed(&commit, &committed)),
        }
    }

    fn failed(&self, cmd: &RemoteCommand, out: &Output) -> RemoteError {
        RemoteError::CommandFailed {
            host: self.label.clone(),
            command: cmd.summary(),
            status: out.status,
            stderr: out.stderr_tail(5),
        }
    }
}

#[async_trait::async_trait]
impl Remote for SshRemote {
    fn host(&self) -> &str {
        &self.label
    }

    async fn run(&self, cmd: &RemoteCommand) -> Result<Output, RemoteError> {
        let stdin = Stdin::Bytes(cmd.stdin.clone());
        Ok(self.exec(cmd, stdin, None).await?.0)
    }

    async fn run_streaming(
        &self,
        cmd: &RemoteCommand,
        on_line: LineSink<'_>,
    ) -> Result<Output, RemoteError> {
        let stdin = Stdin::Bytes(cmd.stdin.clone());
        Ok(self.exec(cmd, stdin, Some(on_line)).await?.0)
    }

    async fn upload(
        &self,
        source: &UploadSource,
        path: &str,
        mode: u32,
    ) -> Result<(), RemoteError> {
        self.send_file(source, path, mode, &|_| {})
            .await
            .map(|_| ())
    }

    async fn upload_with_progress(
        &self,
        source: &UploadSource,
        path: &str,
        mode: u32,
        progress: ProgressSink<'_>,
    ) -> Result<UploadReport, RemoteError> {
        self.send_file(source, path, mode, progress).await
    }
}

async fn disconnect(handle: &Handle<PinningHandler>) {
    // The peer may already be gone; there is nothing left to do then.
    let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
}

/// Try the target's credentials; `Ok(false)` when the server refused them.
async fn authenticate(
    handle: &mut Handle<PinningHandler>,
    target: &SshTarget,
) -> Result<bool, RemoteError> {
    let user = target.user.as_str();
    let session = |e: russh::Error| RemoteError::Session {
        host: target.label(),
        reason: e.to_string(),
    };
    match &target.auth {
        SshAuth::Password(password) => {
            let result = handle
                .authenticate_password(user, password.expose())
                .await
                .map_err(session)?;
            if result.success() {
                return Ok(true);
            }
            keyboard_interactive(handle, user, password)
                .await
                .map_err(session)
        }
        SshAuth::Key { path, passphrase } => {
            let key = russh::keys::load_secret_key(path, passphrase.as_ref().map(Secret::expose))
                .map_err(|e| RemoteError::Key {
                path: path.clone(),
                reason: key_error_reason(&e, passphrase.is_some()),
            })?;
            let hash = if key.algorithm().is_rsa() {
                handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(session)?
                    .flatten()
            } else {
                None
            };
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            let result = handle
                .authenticate_publickey(user, key)
                .await
                .map_err(session)?;
            Ok(result.success())
        }
        SshAuth::Agent { socket } => {
            let agent_error = |e: russh::keys::Error| RemoteError::Session {
                host: target.label(),
                reason: format!("ssh-agent at {}: {e}", socket.display()),
            };
            let mut agent = russh::keys::agent::client::AgentClient::connect_uds(socket)
                .await
                .map_err(agent_error)?;
            if let Some(binding) = handle.agent_session_binding() {
                // Older agents do not know session binding; plain keys still work.
                let _ = agent.bind_session(binding, false).await;
            }
            let identities = agent.request_identities().await.map_err(agent_error)?;
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(session)?
                .flatten();
            for identity in identities {
                let key = identity.public_key().into_owned();
                let hash = if key.algorithm().is_rsa() { hash } else { None };
                match handle
                    .authenticate_publickey_with(user, key, hash, &mut agent)
                    .await
                {
                    Ok(result) if result.success() => return Ok(true),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "agent could not sign"),
                }
            }
            Ok(false)
        }
    }
}

/// Keyboard-interactive: answer hidden prompts with the password, shown ones with the user.
async fn keyboard_interactive(
    handle: &mut Handle<PinningHandler>,
    user: &str,
    password: &Secret,
) -> Result<bool, russh::Error> {
    let mut reply = handle
        .authenticate_keyboard_interactive_start(user, None)
        .await?;
    for _ in 0..8 {
        match reply {
            KeyboardInteractiveAuthResponse::Success => return Ok(true),
            KeyboardInteractiveAuthResponse::Failure { .. } => return Ok(false),
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                let answers = prompts
                    .iter()
                    .map(|p| {
                        if p.echo {
                            user.to_string()
                        } else {
                            password.expose().to_string()
                        }
                    })
                    .collect();
                reply = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await?;
            }
        }
    }
    Ok(false)
}

fn key_error_reason(e: &russh::keys::Error, had_passphrase: bool) -> String {
    match e {
        russh::keys::Error::KeyIsEncrypted => {
            "is protected by a passphrase; give the passphrase with the key".to_string()
        }
        russh::keys::Error::IO(io) => format!("cannot read it: {io}"),
        other if had_passphrase => {
            format!("cannot decrypt or parse it (is the passphrase right?): {other}")
        }
        other => format!("cannot parse it: {other}"),
    }
}

/// Markers that tell sudo's password prompt and the command's start apart from output.
struct SudoMarkers {
    prompt: String,
    started: String,
}

impl SudoMarkers {
    fn new() -> Self {
        let tag = format!("airlock-{:016x}", rand::random::<u64>());
        Self {
            prompt: format!("[{tag}:password]"),
            started: format!("[{tag}:started]\n"),
        }
    }

    /// `sudo -S -p <prompt> -- sh -c '<announce>; <command>'`.
    fn wrap(&self, cmd: &RemoteCommand) -> String {
        let announce = format!("printf '%s\\n' {} >&2", quote(self.started.trim_end()));
        let inner = format!("{announce} && {}", cmd.to_shell());
        format!(
            "sudo -S -p {} -- sh -c {}",
            quote(&self.prompt),
            quote(&inner)
        )
    }
}

/// What goes to the command's stdin.
enum Stdin<'a> {
    /// These bytes, then end of file.
    Bytes(Option<Vec<u8>>),
    /// A region of a local file from `from` on, then end of file.
    Region {
        source: &'a UploadSource,
        from: u64,
        /// Hash the whole region (reading the skipped prefix without sending it).
        hash: bool,
        progress: ProgressSink<'a>,
    },
}

/// What the feeder sent.
struct Fed {
    sent: u64,
    sha256: Option<String>,
}

enum FeedError {
    NotStarted,
    Channel(#[allow(dead_code)] russh::Error),
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
}

async fn feed(
    handle: &Arc<Handle<PinningHandler>>,
    tx: ChannelWriteHalf<client::Msg>,
    stdin: Stdin<'_>,
) -> Result<Fed, FeedError> {
    let fed = match stdin {
        Stdin::Bytes(bytes) => {
            let sent = bytes.as_ref().map_or(0, Vec::len) as u64;
            if let Some(bytes) = bytes {
                tx.data_bytes(bytes).await.map_err(FeedError::Channel)?;
            }
            Fed { sent, sha256: None }
        }
        Stdin::Region {
            source,
            from,
            hash,
            progress,
        } => match send_region(handle, &tx, source, from, hash, progress).await {
            Ok(fed) => fed,
            Err(e) => {
                let _ = tx.close().await;
                return Err(e);
            }
        },
    };
    tx.eof().await.map_err(FeedError::Channel)?;
    Ok(fed)
}

async fn send_region(
    handle: &Arc<Handle<PinningHandler>>,
    tx: &ChannelWriteHalf<client::Msg>,
    source: &UploadSource,
    from: u64,
    hash: bool,
    progress: ProgressSink<'_>,
) -> Result<Fed, FeedError> {
    let local = |source_error| FeedError::Local {
        path: source.path.clone(),
        source: source_error,
    };
    let file = Arc::new(std::fs::File::open(&source.path).map_err(local)?);
    let mut hasher = hash.then(Sha256::new);
    // Nothing to hash in the prefix: start at the resume point.
    let mut position = if hasher.is_some() { 0 } else { from };
    let mut pacer = Pacer::new(|| {
        let handle = Arc::clone(handle);
        // A failed ping means the session ended; the next send reports it.
        tokio::spawn(async move { handle.send_ping().await })
            .map(|_| ())
            .boxed()
    });
    let mut sent = 0u64;
    progress(from);
    while position < source.len {
        let want = usize::try_from(source.len - position)
            .unwrap_or(usize::MAX)
            .min(CHUNK);
        let chunk = read_at(&file, source.offset + position, want)
            .await
            .map_err(|e| {
                local(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    std::io::Error::new(
                        e.kind(),
                        format!("file ends before offset {} + {}", source.offset, source.len),
                    )
                } else {
                    e
                })
            })?;
        if let Some(hasher) = &mut hasher {
            hasher.update(&chunk);
        }
        let chunk_end = position + want as u64;
        if chunk_end > from {
            let skip = usize::try_from(from.saturating_sub(position)).unwrap_or(0);
            let mut bytes = bytes::Bytes::from(chunk);
            let tail = bytes.split_off(skip);
            pacer.room(sent, tail.len() as u64).await;
            sent += tail.len() as u64;
            tx.data_bytes(tail).await.map_err(FeedError::Channel)?;
            pacer.sent(sent);
            progress(chunk_end);
        }
        position = chunk_end;
    }
    Ok(Fed {
        sent,
        sha256: hasher.map(|h| hex::encode(h.finalize())),
    })
}

/// `len` bytes of `file` at `at`, read on tokio's blocking pool straight into the
/// buffer that is then sent (no second buffer as `tokio::fs::File` keeps). The
/// buffer is allocated here, on a runtime worker, not on the blocking thread: each
/// thread that allocates gets its own malloc arena, and dozens of blocking threads
/// each holding a few freed chunks add up.
async fn read_at(file: &Arc<std::fs::File>, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let file = Arc::clone(file);
    let mut buf = vec![0u8; len];
    tokio::task::spawn_blocking(move || {
        file.read_exact_at(&mut buf, at)?;
        Ok(buf)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Keeps an upload at most [`IN_FLIGHT`] bytes ahead of what the server has received.
///
/// russh moves everything a channel may send (up to the server's window, 2 MiB for
/// OpenSSH) into the connection's output buffers before writing them, and those
/// keep their largest size for the life of the connection: with one connection per
/// host, the operator held MiBs per host. A ping (`keepalive@openssh.com`, answered
/// by the server in order) follows each chunk; before more is sent, the pings older
/// than the last [`IN_FLIGHT`] bytes are awaited. The pings are pipelined, so a
/// short round trip costs no throughput; over a long link an upload runs at most at
/// `IN_FLIGHT` per round trip.
///
/// Each ping runs as its own task: a ping future left unpolled while it waits for
/// room in the connection's queue (10 messages) would hold that room once given it,
/// and enough of them would stall the upload's own data.
struct Pacer<P> {
    /// Starts a ping behind what was sent; the future ends with the server's answer.
    ping: P,
    /// Unanswered pings, oldest first, each with the bytes sent before it.
    pings: VecDeque<(u64, BoxFuture<'static, ()>)>,
    /// Bytes the server has received (as far as answered pings tell).
    acked: u64,
}

impl<P: Fn() -> BoxFuture<'static, ()>> Pacer<P> {
    fn new(ping: P) -> Self {
        Self {
            ping,
            pings: VecDeque::new(),
            acked: 0,
        }
    }

    /// `sent` bytes have been handed to the channel: start a ping behind them.
    fn sent(&mut self, sent: u64) {
        self.pings.push_back((sent, (self.ping)()));
    }

    /// Wait until `next` more bytes keep at most [`IN_FLIGHT`] unacknowledged.
    async fn room(&mut self, sent: u64, next: u64) {
        while sent + next > self.acked + IN_FLIGHT {
            let Some((at, ping)) = self.pings.pop_front() else {
                return;
            };
            ping.await;
            self.acked = at;
        }
    }
}

/// Reads one channel to its end, answering sudo and releasing stdin at the right time.
struct Reader<'a, 'r> {
    remote: &'r SshRemote,
    sudo: Option<SudoMarkers>,
    tx: Option<ChannelWriteHalf<client::Msg>>,
    start: Option<oneshot::Sender<ChannelWriteHalf<client::Msg>>>,
    on_line: Option<LineSink<'a>>,
    out: Output,
    stdout_line: Vec<u8>,
    stderr_line: Vec<u8>,
    /// stderr before sudo announced the command's start.
    held_stderr: Vec<u8>,
    prompts: u32,
    sudo_failure: Option<&'static str>,
}

impl Reader<'_, '_> {
    async fn read(mut self, mut rx: russh::ChannelReadHalf) -> Self {
        if self.sudo.is_none() {
            self.release_stdin();
        }
        while let Some(msg) = rx.wait().await {
            match msg {
                ChannelMsg::Data { data } => self.output(Stream::Stdout, &data),
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    if self.sudo.is_some() {
                        self.held_stderr.extend_from_slice(&data);
                        self.answer_sudo().await;
                    } else {
                        self.output(Stream::Stderr, &data);
                    }
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    self.out.status = i32::try_from(exit_status).unwrap_or(-1);
                }
                ChannelMsg::ExitSignal { .. } => self.out.status = -1,
                _ => {}
            }
        }
        if self.sudo.take().is_some() {
            let held = std::mem::take(&mut self.held_stderr);
            self.output(Stream::Stderr, &held);
        }
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(match stream {
                Stream::Stdout => &mut self.stdout_line,
                Stream::Stderr => &mut self.stderr_line,
            });
            if let (Some(sink), false) = (self.on_line.as_mut(), rest.is_empty()) {
                sink(stream, &String::from_utf8_lossy(&rest));
            }
        }
        self
    }

    /// Look at stderr held back while sudo authenticates: answer its prompt once,
    /// and let the command's stdin go once the command has started.
    async fn answer_sudo(&mut self) {
        let Some(markers) = &self.sudo else { return };
        if let Some(at) = find(&self.held_stderr, markers.prompt.as_bytes()) {
            self.held_stderr.drain(at..at + markers.prompt.len());
            self.prompts += 1;
            let password = self.remote.target.sudo_password.clone();
            match (&password, self.prompts, self.tx.as_ref()) {
                (Some(password), 1, Some(tx)) => {
                    let line = format!("{}\n", password.expose());
                    if tx.data_bytes(line.into_bytes()).await.is_err() {
                        self.sudo_failure = Some("the session ended while answering sudo");
                    }
                }
                (None, _, _) => {
                    self.sudo_failure = Some(
                        "sudo asks for a password and none was given; set the host's sudo password or log in as root",
                    );
                    self.close_stdin().await;
                }
                _ => {
                    self.sudo_failure =
                        Some("sudo refused the password; check the host's sudo password");
                    self.close_stdin().await;
                }
            }
        }
        let Some(markers) = &self.sudo else { return };
        if let Some(at) = find(&self.held_stderr, markers.started.as_bytes()) {
            let mut held = std::mem::take(&mut self.held_stderr);
            held.drain(at..at + markers.started.len());
            self.sudo = None;
            self.sudo_failure = None;
            self.output(Stream::Stderr, &held);
            self.release_stdin();
        }
    }

    async fn close_stdin(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.eof().await;
        }
    }

    fn release_stdin(&mut self) {
        if let (Some(tx), Some(start)) = (self.tx.take(), self.start.take()) {
            // The feeder is gone only when the whole exchange is over.
            let _ = start.send(tx);
        }
    }

    fn output(&mut self, stream: Stream, data: &[u8]) {
        let (all, line) = match stream {
            Stream::Stdout => (&mut self.out.stdout, &mut self.stdout_line),
            Stream::Stderr => (&mut self.out.stderr, &mut self.stderr_line),
        };
        all.extend_from_slice(data);
        let Some(sink) = self.on_line.as_mut() else {
            return;
        };
        line.extend_from_slice(data);
        while let Some(end) = line.iter().position(|&b| b == b'\n') {
            let text: Vec<u8> = line.drain(..=end).collect();
            let text = String::from_utf8_lossy(&text[..end]);
            sink(stream, text.trim_end_matches('\r'));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// [`super::redact`] for bytes that may not be text.
fn redact_bytes(mut data: Vec<u8>, secrets: &[&Secret]) -> Vec<u8> {
    for secret in secrets {
        let needle = secret.expose().as_bytes();
        if needle.is_empty() {
            continue;
        }
        while let Some(at) = find(&data, needle) {
            data.splice(at..at + needle.len(), b"***".iter().copied());
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_wrapper_keeps_the_password_out_of_the_command_line() {
        let markers = SudoMarkers::new();
        let cmd = RemoteCommand::new("id").arg("-u").cwd("/tmp").sudo();
        let line = markers.wrap(&cmd);
        assert!(line.starts_with("sudo -S -p '[airlock-"), "{line}");
        assert!(line.contains("-- sh -c '"), "{line}");
        assert!(line.contains("id -u"), "{line}");
    }

    #[test]
    fn pacer_waits_for_the_ping_behind_the_oldest_bytes_past_the_limit() {
        // Each ping answers when its sender fires (or is dropped).
        let answers: Arc<Mutex<Vec<oneshot::Sender<()>>>> = Arc::default();
        let queued = Arc::clone(&answers);
        let mut pacer = Pacer::new(move || {
            let (tx, rx) = oneshot::channel();
            queued.lock().unwrap().push(tx);
            rx.map(|_| ()).boxed()
        });
        let chunk = CHUNK as u64;
        let mut sent = 0;
        // Up to the limit, nothing waits.
        while sent + chunk <= IN_FLIGHT {
            assert!(pacer.room(sent, chunk).now_or_never().is_some(), "{sent}");
            sent += chunk;
            pacer.sent(sent);
        }
        assert_eq!(answers.lock().unwrap().len(), (IN_FLIGHT / chunk) as usize);
        // One more chunk needs the first ping's answer, and only that one.
        let mut room = Box::pin(pacer.room(sent, chunk));
        assert!((&mut room).now_or_never().is_none());
        answers.lock().unwrap().remove(1).send(()).unwrap();
        assert!(
            (&mut room).now_or_never().is_none(),
            "a later answer let it on"
        );
        answers.lock().unwrap().remove(0).send(()).unwrap();
        assert!((&mut room).now_or_never().is_some());
        drop(room);
        assert_eq!(pacer.acked, chunk);
        // Two chunks past the limit wait for the two oldest pings still queued.
        assert_eq!(pacer.pings.len(), (IN_FLIGHT / chunk) as usize - 1);
        let mut room = Box::pin(pacer.room(sent, 2 * chunk));
        assert!((&mut room).now_or_never().is_some(), "ping 2 was answered");
        drop(room);
        assert_eq!(pacer.acked, 2 * chunk);
    }

    #[test]
    fn redaction_replaces_every_occurrence() {
        let secret = Secret::new("s3cret");
        let out = redact_bytes(b"a s3cret b s3cret".to_vec(), &[&secret]);
        assert_eq!(out, b"a *** b ***");
    }

    #[test]
    fn labels_show_the_port_only_when_unusual() {
        let mut target = SshTarget::new("10.0.0.1", "root", SshAuth::Password(Secret::new("x")));
        assert_eq!(target.label(), "10.0.0.1");
        target.port = 2222;
        assert_eq!(target.label(), "10.0.0.1:2222");
        target.auth = SshAuth::Password(Secret::new("hunter2"));
        target.sudo_password = Some(Secret::new("sudo-hunter2"));
        assert!(!format!("{target:?}").contains("hunter2"));
    }
}
