//! Fan-out: ship the blobs each node lacks node to node, so that the operator's
//! uplink carries each byte about once.
//!
//! The airlock binary is already on every node (the install engine's `prepare`
//! step); it acts as the relay. One [`fan_out`] run:
//! 1. Draws a one-time token ([`protocol::new_token`]) and starts
//!    `airlock agent relay` on every node over SSH (sudo), handing it the token and
//!    the blobs the node wants on stdin, never in argv.
//! 2. Each relay answers on stdout what it already has (`have`), how much of each
//!    other blob arrived in an earlier run (`partial`), and the port it listens on.
//! 3. The nodes that still lack something form a chain, the nodes needing the most
//!    first. The operator connects to the head and sends the header; each node
//!    connects to the next and forwards it. The head's answer says how far the chain
//!    reaches; nodes past an unreachable hop start a new chain straight from the
//!    operator, and a node the operator cannot reach over TCP is sent its blobs over
//!    SSH ([`crate::remote::Remote::upload`]) instead.
//! 4. Each blob is streamed from the smallest offset any node of the chain still
//!    lacks; each node keeps the bytes past its own offset and forwards the bytes as
//!    they arrive (cut-through). See [`relay`] for the node's side.
//! 5. Every node verifies every blob by SHA-256 before renaming it into place and
//!    says so on stdout (`done` / `fail`); the operator gathers that into a
//!    [`FanOutReport`]. Bytes that arrived before an interruption stay in a part
//!    file, so the next run sends only the rest.

pub mod protocol;
pub mod relay;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::digest::Digest;
use crate::image::BlobSource;
use crate::image::oci::Descriptor;
use crate::remote::{Output, Remote, RemoteCommand, RemoteError, Secret, Stream, UploadSource};
use protocol::{Ack, Header, RelayLine, RelayRequest, Start, WireBlob};

/// One blob a node needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobNeed {
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

impl From<&Descriptor> for BlobNeed {
    fn from(d: &Descriptor) -> Self {
        Self {
            digest: d.digest.clone(),
            size: d.size,
        }
    }
}

/// One node of a fan-out: where it is, how to reach it, what it needs.
#[derive(Clone)]
pub struct FanOutHost {
    /// The address other nodes and the operator reach its relay on.
    pub addr: IpAddr,
    /// The SSH connection to it.
    pub remote: Arc<dyn Remote>,
    /// The blobs it must hold at the end (those already there are not sent).
    pub needs: Vec<BlobNeed>,
}

/// How a fan-out runs.
#[derive(Clone, Debug)]
pub struct FanOutOptions {
    /// The airlock binary on the nodes (`<data root>/bin/airlock`).
    pub agent: String,
    /// The store on the nodes (`<data root>/store`).
    pub store: String,
    /// The port relays listen on; 0 lets each node pick a free one.
    pub port: u16,
    /// Limit for each TCP connection (operator to node, node to node).
    pub connect_timeout: Duration,
    /// A relay gives up when nobody connects, or nothing arrives, for this long.
    pub idle_timeout: Duration,
}

impl FanOutOptions {
    /// The options for a data root (`/var/lib/airlock`): agent and store under it.
    pub fn for_data_root(data_root: &str) -> Self {
        Self {
            agent: format!("{data_root}/bin/airlock"),
            store: format!("{data_root}/store"),
            port: 0,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// How a node got its blobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// It already held everything.
    Nothing,
    /// Through a chain of relays: chain number (from 0) and place in it (0 = head).
    Chain {
        /// Which chain.
        chain: usize,
        /// Its place in the chain.
        position: usize,
    },
    /// Over SSH from the operator, because its relay could not be reached.
    Ssh {
        /// Why the relay path was not used.
        reason: String,
    },
}

/// Progress of a fan-out, for the app to render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FanOutEvent {
    /// A chain was formed: its nodes in order.
    Chain {
        /// Its number.
        chain: usize,
        /// The nodes.
        hosts: Vec<IpAddr>,
    },
    /// A node is sent its blobs over SSH instead.
    Fallback {
        /// The node.
        host: IpAddr,
        /// Why.
        reason: String,
    },
    /// A relay said something (see [`RelayLine`]).
    Relay {
        /// The node.
        host: IpAddr,
        /// What it said.
        line: RelayLine,
    },
    /// The operator has sent so many bytes in all.
    Sent {
        /// Bytes so far.
        bytes: u64,
    },
}

/// One blob that arrived on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The blob.
    pub digest: Digest,
    /// Bytes written in this run.
    pub received: u64,
    /// Bytes kept from an earlier run.
    pub resumed: u64,
}

/// What happened on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostReport {
    /// How it got its blobs.
    pub route: Route,
    /// Blobs it already held.
    pub present: Vec<Digest>,
    /// Blobs that arrived and were verified.
    pub received: Vec<Receipt>,
    /// Blobs that did not arrive, and why.
    pub failed: Vec<(Digest, String)>,
    /// Why the node could not take part at all, if it could not.
    pub error: Option<String>,
}

impl HostReport {
    fn new() -> Self {
        Self {
            route: Route::Nothing,
            present: Vec::new(),
            received: Vec::new(),
            failed: Vec::new(),
            error: None,
        }
    }

    /// Whether every blob the node needs is in place.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.error.is_none()
    }
}

/// What a fan-out did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FanOutReport {
    /// Per node.
    pub hosts: BTreeMap<IpAddr, HostReport>,
    /// Bytes the operator sent (to chain heads and over SSH).
    pub operator_bytes: u64,
}

impl FanOutReport {
    /// `Ok` when every node holds every blob it needs, else the first node that does not.
    pub fn check(&self) -> Result<(), DistributeError> {
        for (host, r) in &self.hosts {
            if let Some(reason) = &r.error {
                return Err(DistributeError::Host {
                    host: *host,
                    reason: reason.clone(),
                });
            }
            if let Some((digest, reason)) = r.failed.first() {
                return Err(DistributeError::Blob {
                    host: *host,
                    digest: digest.clone(),
                    reason: reason.clone(),
                    more: r.failed.len() - 1,
                });
            }
        }
        Ok(())
    }
}

/// A fan-out that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum DistributeError {
    /// A blob a node needs is not in the source.
    #[error("blob {digest} is not in the image being installed")]
    MissingBlob {
        /// The blob.
        digest: Digest,
    },
    /// The source could not be read.
    #[error("reading blob {digest} from the source: {source}")]
    Source {
        /// The blob.
        digest: Digest,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A node could not take part (relay did not start, SSH failed).
    #[error("{host}: {reason}")]
    Host {
        /// The node.
        host: IpAddr,
        /// Why.
        reason: String,
    },
    /// A blob did not arrive on a node.
    #[error(
        "{host}: blob {digest} did not arrive: {reason}{}; run again to resume",
        if *more > 0 { format!(" (and {more} more)") } else { String::new() }
    )]
    Blob {
        /// The node.
        host: IpAddr,
        /// The blob.
        digest: Digest,
        /// Why.
        reason: String,
        /// How many other blobs failed on that node.
        more: usize,
    },
}

/// Progress callback of [`fan_out`].
pub type Progress<'a> = &'a (dyn Fn(FanOutEvent) + Send + Sync);

/// What the operator knows of one node's relay.
#[derive(Default)]
struct RelayState {
    port: Option<u16>,
    pid: Option<u32>,
    /// Wanted blobs not yet present, with the bytes already held.
    partial: BTreeMap<Digest, u64>,
    exited: bool,
    /// Said `finished` without listening: nothing to receive.
    idle: bool,
}

enum Message {
    Line(usize, RelayLine),
    Exited(usize, Result<Output, RemoteError>),
}

/// Ship to every host the blobs it needs and lacks; see the module docs for the flow.
/// Per-node failures are in the report ([`FanOutReport::check`]); an `Err` means the
/// run could not start or the source failed.
pub async fn fan_out(
    hosts: &[FanOutHost],
    source: &dyn BlobSource,
    opts: &FanOutOptions,
    progress: Progress<'_>,
) -> Result<FanOutReport, DistributeError> {
    // The source must hold everything before any node is touched.
    let mut locations = BTreeMap::new();
    for need in hosts.iter().flat_map(|h| &h.needs) {
        if locations.contains_key(&need.digest) {
            continue;
        }
        let loc = source
            .locate(&need.digest)
            .map_err(|e| DistributeError::Source {
                digest: need.digest.clone(),
                source: e,
            })?
            .filter(|l| l.size == need.size)
            .ok_or_else(|| DistributeError::MissingBlob {
                digest: need.digest.clone(),
            })?;
        locations.insert(need.digest.clone(), loc);
    }
    let token = protocol::new_token();
    let report = Mutex::new(FanOutReport {
        hosts: hosts.iter().map(|h| (h.addr, HostReport::new())).collect(),
        operator_bytes: 0,
    });
    let states: Mutex<Vec<RelayState>> =
        Mutex::new(hosts.iter().map(|_| RelayState::default()).collect());
    let (tx, rx) = mpsc::unbounded_channel();
    let relays = join_all(
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| run_relay(i, h, &token, opts, tx.clone())),
    );
    drop(tx);
    let run = Run {
        hosts,
        locations: &locations,
        token: &token,
        opts,
        progress,
        report: &report,
        states: &states,
        sent: std::sync::atomic::AtomicU64::new(0),
    };
    let ((), result) = tokio::join!(async { drop(relays.await) }, run.drive(rx));
    result?;
    Ok(report
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Step 1: start the relay on one node and pass its lines on until it exits.
async fn run_relay(
    index: usize,
    host: &FanOutHost,
    token: &Secret,
    opts: &FanOutOptions,
    tx: mpsc::UnboundedSender<Message>,
) {
    let request = RelayRequest {
        token: token.clone(),
        wants: host
            .needs
            .iter()
            .map(|n| (n.digest.clone(), n.size))
            .collect(),
    };
    let cmd = RemoteCommand::new(opts.agent.clone())
        .args(["agent", "relay", "--listen"])
        .arg(SocketAddr::new(unspecified(host.addr), opts.port).to_string())
        .args(["--store", &opts.store, "--token-stdin"])
        .args([
            "--idle-timeout",
            &opts.idle_timeout.as_secs().max(1).to_string(),
        ])
        .args([
            "--connect-timeout",
            &opts.connect_timeout.as_secs().max(1).to_string(),
        ])
        .stdin(request.encode())
        .sudo();
    let line_tx = tx.clone();
    let mut on_line = move |stream: Stream, line: &str| {
        if stream == Stream::Stdout
            && let Ok(parsed) = line.parse::<RelayLine>()
        {
            let _ = line_tx.send(Message::Line(index, parsed));
        }
    };
    let result = host.remote.run_streaming(&cmd, &mut on_line).await;
    let _ = tx.send(Message::Exited(index, result));
}

fn unspecified(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The shared state of one fan-out: what every step reads and records.
struct Run<'a> {
    hosts: &'a [FanOutHost],
    locations: &'a BTreeMap<Digest, crate::image::BlobLocation>,
    token: &'a Secret,
    opts: &'a FanOutOptions,
    progress: Progress<'a>,
    report: &'a Mutex<FanOutReport>,
    states: &'a Mutex<Vec<RelayState>>,
    /// Bytes the operator sent, over chains and SSH.
    sent: std::sync::atomic::AtomicU64,
}

impl Run<'_> {
    /// Record one message from a relay in the report and the relay's state.
    fn record(&self, msg: Message) {
        let Self {
            hosts,
            report,
            states,
            progress,
            ..
        } = *self;
        match msg {
            Message::Line(i, line) => {
                let host = hosts[i].addr;
                {
                    let mut states = lock(states);
                    let st = &mut states[i];
                    let mut rep = lock(report);
                    let hr = rep.hosts.entry(host).or_insert_with(HostReport::new);
                    match &line {
                        RelayLine::Have(d) => hr.present.push(d.clone()),
                        RelayLine::Partial { digest, offset } => {
                            st.partial.insert(digest.clone(), *offset);
                        }
                        RelayLine::Listening { port, pid } => {
                            st.port = Some(*port);
                            st.pid = Some(*pid);
                        }
                        RelayLine::Done {
                            digest,
                            received,
                            resumed,
                        } => hr.received.push(Receipt {
                            digest: digest.clone(),
                            received: *received,
                            resumed: *resumed,
                        }),
                        RelayLine::Fail { digest, reason } => {
                            hr.failed.push((digest.clone(), reason.clone()));
                        }
                        RelayLine::Finished { .. } if st.port.is_none() => st.idle = true,
                        _ => {}
                    }
                }
                progress(FanOutEvent::Relay { host, line });
            }
            Message::Exited(i, result) => {
                let host = hosts[i].addr;
                let mut states = lock(states);
                let st = &mut states[i];
                st.exited = true;
                let mut rep = lock(report);
                let hr = rep.hosts.entry(host).or_insert_with(HostReport::new);
                // A relay killed on purpose (SSH fallback) or one that reported its own
                // failures needs no more words; a relay that never started does.
                let ssh = matches!(hr.route, Route::Ssh { .. });
                if !ssh && hr.failed.is_empty() && st.port.is_none() && !st.idle {
                    hr.error = Some(match result {
                        Ok(out) => format!(
                            "the relay exited with {} before listening: {}",
                            out.status,
                            out.stderr_tail(3)
                        ),
                        Err(e) => format!("starting the relay: {e}"),
                    });
                } else if !ssh
                    && let Ok(out) = &result
                    && !out.success()
                    && hr.failed.is_empty()
                    && hr.error.is_none()
                    && st.port.is_some()
                    && hr.received.len() + hr.present.len() < hosts[i].needs.len()
                {
                    hr.error = Some(format!(
                        "the relay exited with {}: {}",
                        out.status,
                        out.stderr_tail(3)
                    ));
                }
            }
        }
    }

    /// Steps 2 to 5, while the relays run.
    async fn drive(&self, mut rx: mpsc::UnboundedReceiver<Message>) -> Result<(), DistributeError> {
        let states = self.states;
        // Step 2: wait until every relay listens, has nothing to do, or has exited.
        let settled = |states: &Mutex<Vec<RelayState>>| {
            lock(states)
                .iter()
                .all(|s| s.port.is_some() || s.idle || s.exited)
        };
        while !settled(states) {
            let Some(msg) = rx.recv().await else { break };
            self.record(msg);
        }
        // Step 3 and 4 run while lines keep coming.
        let listen = async {
            while let Some(msg) = rx.recv().await {
                self.record(msg);
            }
        };
        let (result, ()) = tokio::join!(self.ship(), listen);
        lock(self.report).operator_bytes = self.sent.load(std::sync::atomic::Ordering::Relaxed);
        result
    }

    /// Form the chains and stream into them; send the unreachable nodes their blobs over SSH.
    async fn ship(&self) -> Result<(), DistributeError> {
        let Self {
            hosts,
            locations,
            token,
            opts,
            progress,
            report,
            states,
            ..
        } = *self;
        let sent = &self.sent;
        // Who still lacks something, and what: (host index, port, wanted blobs with offsets).
        let mut members: Vec<(usize, u16, BTreeMap<Digest, u64>)> = lock(states)
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.exited && !s.partial.is_empty())
            .filter_map(|(i, s)| s.port.map(|p| (i, p, s.partial.clone())))
            .collect();
        let lacking = |m: &BTreeMap<Digest, u64>| -> u64 {
            m.iter()
                .map(|(d, off)| locations.get(d).map_or(0, |l| l.size.saturating_sub(*off)))
                .sum()
        };
        members.sort_by_key(|(i, _, m)| (std::cmp::Reverse(lacking(m)), *i));
        let mut remaining: VecDeque<_> = members.into();
        let mut streams = Vec::new();
        let mut fallbacks = Vec::new();
        let mut chain_no = 0;
        while !remaining.is_empty() {
            let blobs = stream_blobs(remaining.iter().map(|(_, _, m)| m), locations);
            let hops: Vec<SocketAddr> = remaining
                .iter()
                .map(|(i, port, _)| SocketAddr::new(hosts[*i].addr, *port))
                .collect();
            let header = Header {
                hops: hops[1..].to_vec(),
                blobs: blobs
                    .iter()
                    .map(|(digest, size)| WireBlob {
                        digest: digest.clone(),
                        size: *size,
                        need: remaining
                            .iter()
                            .map(|(_, _, m)| m.contains_key(digest))
                            .collect(),
                    })
                    .collect(),
            };
            let head = hops[0];
            match open_chain(head, &header, token, opts).await {
                Err(reason) => {
                    let (i, _, _) = remaining.pop_front().unwrap_or_default();
                    fallbacks.push((i, format!("relay at {head} unreachable: {reason}")));
                }
                Ok((stream, reach)) => {
                    let k = usize::try_from(reach)
                        .unwrap_or(1)
                        .clamp(1, remaining.len());
                    let chain: Vec<_> = remaining.drain(..k).collect();
                    {
                        let mut rep = lock(report);
                        for (position, (i, _, _)) in chain.iter().enumerate() {
                            if let Some(hr) = rep.hosts.get_mut(&hosts[*i].addr) {
                                hr.route = Route::Chain {
                                    chain: chain_no,
                                    position,
                                };
                            }
                        }
                    }
                    progress(FanOutEvent::Chain {
                        chain: chain_no,
                        hosts: chain.iter().map(|(i, _, _)| hosts[*i].addr).collect(),
                    });
                    // Each blob starts at the smallest offset a chain member wanting it holds.
                    let from: Vec<u64> = blobs
                        .iter()
                        .map(|(digest, size)| {
                            chain
                                .iter()
                                .filter_map(|(_, _, m)| m.get(digest).copied())
                                .min()
                                .unwrap_or(*size)
                                .min(*size)
                        })
                        .collect();
                    streams.push(stream_chain(stream, blobs, from, locations, progress, sent));
                    chain_no += 1;
                }
            }
        }
        let ssh = fallbacks
            .into_iter()
            .map(|(i, reason)| self.ssh_fallback(i, reason));
        let (streamed, sshed) = tokio::join!(join_all(streams), join_all(ssh));
        for r in streamed.into_iter().chain(sshed) {
            r?;
        }
        Ok(())
    }
}

/// The blobs some node of `wants` lacks, in a stable order, with their sizes.
fn stream_blobs<'a>(
    wants: impl Iterator<Item = &'a BTreeMap<Digest, u64>>,
    locations: &BTreeMap<Digest, crate::image::BlobLocation>,
) -> Vec<(Digest, u64)> {
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    for m in wants {
        for d in m.keys() {
            if !blobs.iter().any(|(b, _)| b == d)
                && let Some(loc) = locations.get(d)
            {
                blobs.push((d.clone(), loc.size));
            }
        }
    }
    blobs
}

/// Connect to a chain's head, send the header, and read how far the chain reaches.
async fn open_chain(
    head: SocketAddr,
    header: &Header,
    token: &Secret,
    opts: &FanOutOptions,
) -> Result<(TcpStream, u32), String> {
    let connect = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(head));
    let mut stream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no answer in {}s", opts.connect_timeout.as_secs())),
    };
    let _ = stream.set_nodelay(true);
    protocol::write_hello(&mut stream, token)
        .await
        .map_err(|e| e.to_string())?;
    protocol::write_frame(&mut stream, header)
        .await
        .map_err(|e| e.to_string())?;
    let hops = u32::try_from(header.hops.len() + 1).unwrap_or(u32::MAX);
    let limit = opts.connect_timeout.saturating_mul(hops.saturating_add(1));
    let ack: Ack = match tokio::time::timeout(limit, protocol::read_frame(&mut stream)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(format!("no answer to the header: {e}")),
        Err(_) => return Err(format!("no answer to the header in {}s", limit.as_secs())),
    };
    Ok((stream, ack.reach))
}

/// Step 4: send the start frame and every blob's bytes from its start offset.
async fn stream_chain(
    mut stream: TcpStream,
    blobs: Vec<(Digest, u64)>,
    from: Vec<u64>,
    locations: &BTreeMap<Digest, crate::image::BlobLocation>,
    progress: Progress<'_>,
    sent: &std::sync::atomic::AtomicU64,
) -> Result<(), DistributeError> {
    // A broken connection shows on the nodes as `fail ... upstream lost`; the
    // operator has nothing to add, so write errors end the stream quietly.
    if protocol::write_frame(&mut stream, &Start { from: from.clone() })
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut buf = vec![0u8; 1 << 20];
    for ((digest, size), start) in blobs.iter().zip(from) {
        if start >= *size {
            continue;
        }
        let loc = &locations[digest];
        let src_err = |source| DistributeError::Source {
            digest: digest.clone(),
            source,
        };
        let mut file = tokio::fs::File::open(&loc.path).await.map_err(src_err)?;
        file.seek(std::io::SeekFrom::Start(loc.offset + start))
            .await
            .map_err(src_err)?;
        let mut left = size - start;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = file.read(&mut buf[..want]).await.map_err(src_err)?;
            if n == 0 {
                return Err(src_err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the source ended early",
                )));
            }
            if stream.write_all(&buf[..n]).await.is_err() {
                return Ok(());
            }
            left -= n as u64;
            let total = sent.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed) + n as u64;
            progress(FanOutEvent::Sent { bytes: total });
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}

impl Run<'_> {
    /// Send one node its blobs over SSH, after stopping its relay.
    async fn ssh_fallback(&self, index: usize, reason: String) -> Result<(), DistributeError> {
        let Self {
            locations,
            opts,
            progress,
            report,
            states,
            ..
        } = *self;
        let (host, sent) = (&self.hosts[index], &self.sent);
        if let Some(hr) = lock(report).hosts.get_mut(&host.addr) {
            hr.route = Route::Ssh {
                reason: reason.clone(),
            };
        }
        progress(FanOutEvent::Fallback {
            host: host.addr,
            reason,
        });
        let (pid, wanted) = {
            let st = &lock(states)[index];
            (st.pid, st.partial.clone())
        };
        if let Some(pid) = pid {
            // The relay holds the token and a port: stop it before writing its files.
            let kill = RemoteCommand::new("kill").arg(pid.to_string()).sudo();
            let _ = host.remote.run(&kill).await;
        }
        for digest in wanted.keys() {
            let loc = &locations[digest];
            let src = UploadSource {
                path: loc.path.clone(),
                offset: loc.offset,
                len: loc.size,
                sha256: Some(digest.hex().to_string()),
            };
            let dest = format!("{}/blobs/sha256/{}", opts.store, digest.hex());
            let done = std::sync::atomic::AtomicU64::new(0);
            let on_progress = |n: u64| done.store(n, std::sync::atomic::Ordering::Relaxed);
            let result = host
                .remote
                .upload_with_progress(&src, &dest, 0o644, &on_progress)
                .await;
            let mut rep = lock(report);
            let hr = rep.hosts.entry(host.addr).or_insert_with(HostReport::new);
            match result {
                Ok(up) => {
                    sent.fetch_add(up.bytes_sent, std::sync::atomic::Ordering::Relaxed);
                    hr.received.push(Receipt {
                        digest: digest.clone(),
                        received: up.bytes_sent,
                        resumed: up.resumed_from,
                    });
                }
                Err(e) => hr.failed.push((digest.clone(), e.to_string())),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
