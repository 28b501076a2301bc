//! The node side: `airlock agent relay` receives blobs into the node's store while
//! passing them on to the next node.
//!
//! 1. [`survey`] looks at the store: a wanted blob already in place is `have`;
//!    otherwise the bytes of `<blob>.airlock-part` (left by an earlier relay or SSH
//!    upload) are kept and reported as `partial`. Nothing wanted: the relay ends.
//! 2. [`serve`] reports `listening`, then accepts connections until one brings the
//!    right token (others are `refused`) or the idle timeout passes.
//! 3. It reads the header, connects to the next hop and forwards the header; an
//!    unreachable next hop ends the chain here (`unreachable`). It answers upstream
//!    with how many hops are connected, then reads and forwards the start frame.
//! 4. Bytes are cut through: each chunk read from upstream is written to the next
//!    hop (for blobs someone after this node wants) and appended to this node's part
//!    file (past the bytes it already held), hashing as it goes.
//! 5. At each blob's end the digest is checked: a match is renamed into place
//!    (`done`); a mismatch deletes the part (`fail`). A lost upstream keeps the part
//!    for the next run (`fail ... upstream lost`); a lost downstream stops
//!    forwarding only (`downstream-lost`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::fs::File;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::protocol::{
    Ack, Header, MAGIC, RelayLine, RelayRequest, Start, TOKEN_LEN, read_frame, token_matches,
    write_frame, write_hello,
};
use crate::digest::Digest;

/// Bytes moved per read.
const CHUNK: usize = 256 << 10;
/// A `progress` line every this many bytes of a blob.
const PROGRESS_EVERY: u64 = 4 << 20;

/// How a relay behaves.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The store on this node (`<data root>/store`); blobs go to `blobs/sha256/<hex>`.
    pub store: PathBuf,
    /// Give up when nobody connects, or upstream sends nothing, for this long.
    pub idle_timeout: Duration,
    /// Limit for connecting to the next hop.
    pub connect_timeout: Duration,
}

/// A relay that could not run at all (per-blob failures are [`RelayLine::Fail`]).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The store could not be read or written.
    #[error("store {path}: {source}")]
    Store {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Nobody with the right token connected in time.
    #[error("no sender connected within {0}s")]
    Idle(u64),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The upstream connection broke before the stream began.
    #[error("upstream {peer}: {reason}")]
    Upstream {
        /// The sender.
        peer: String,
        /// Why.
        reason: String,
    },
}

/// What this node holds of one wanted blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Already in place: nothing to receive.
    pub present: bool,
    /// Bytes of the part file kept from an earlier run.
    pub offset: u64,
}

/// The final path of `digest` in `store`.
pub fn blob_path(store: &Path, digest: &Digest) -> PathBuf {
    store.join("blobs/sha256").join(digest.hex())
}

/// The part file of `digest` in `store` (shared with SSH uploads, so either resumes the other).
pub fn part_path(store: &Path, digest: &Digest) -> PathBuf {
    store
        .join("blobs/sha256")
        .join(format!("{}.airlock-part", digest.hex()))
}

fn store_err(path: &Path) -> impl FnOnce(std::io::Error) -> RelayError + '_ {
    move |source| RelayError::Store {
        path: path.to_path_buf(),
        source,
    }
}

/// Step 1: what of `request.wants` this node already holds.
pub async fn survey(store: &Path, request: &RelayRequest) -> Result<Vec<Holding>, RelayError> {
    let dir = store.join("blobs/sha256");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(store_err(&dir))?;
    let mut out = Vec::new();
    for (digest, size) in &request.wants {
        if out.iter().any(|h: &Holding| &h.digest == digest) {
            continue;
        }
        let size = *size;
        let len = |p: PathBuf| async move { tokio::fs::metadata(&p).await.ok().map(|m| m.len()) };
        let present = len(blob_path(store, digest)).await == Some(size);
        let mut offset = 0;
        if !present {
            let part = part_path(store, digest);
            offset = len(part.clone()).await.unwrap_or(0);
            if offset > size {
                tokio::fs::remove_file(&part)
                    .await
                    .map_err(store_err(&part))?;
                offset = 0;
            }
        }
        out.push(Holding {
            digest: digest.clone(),
            size,
            present,
            offset,
        });
    }
    Ok(out)
}

/// The whole relay: survey the store, report it, and serve one chain on `listen`
/// unless nothing is wanted. Returns `(done, failed)` counts.
pub async fn relay(
    listen: SocketAddr,
    request: &RelayRequest,
    config: &RelayConfig,
    on_line: &mut (dyn FnMut(RelayLine) + Send),
) -> Result<(u32, u32), RelayError> {
    let holdings = survey(&config.store, request).await?;
    for h in &holdings {
        on_line(if h.present {
            RelayLine::Have(h.digest.clone())
        } else {
            RelayLine::Partial {
                digest: h.digest.clone(),
                offset: h.offset,
            }
        });
    }
    if holdings.iter().all(|h| h.present) {
        on_line(RelayLine::Finished { done: 0, failed: 0 });
        return Ok((0, 0));
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| RelayError::Listen {
            addr: listen,
            source,
        })?;
    serve(listener, request, &holdings, config, on_line).await
}

/// Steps 2 to 5: serve one chain on `listener`, reporting through `on_line`.
/// Returns `(done, failed)` counts.
pub async fn serve(
    listener: TcpListener,
    request: &RelayRequest,
    holdings: &[Holding],
    config: &RelayConfig,
    on_line: &mut (dyn FnMut(RelayLine) + Send),
) -> Result<(u32, u32), RelayError> {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    on_line(RelayLine::Listening {
        port,
        pid: std::process::id(),
    });
    let (mut upstream, peer) = accept(&listener, request, config, on_line).await?;
    let upstream_err = |reason: String| RelayError::Upstream {
        peer: peer.to_string(),
        reason,
    };
    let header: Header = timed(config.idle_timeout, read_frame(&mut upstream))
        .await
        .map_err(|e| upstream_err(format!("reading the header: {e}")))?;
    let mut downstream = match header.hops.first() {
        Some(next) => match connect_next(*next, &header, request, config).await {
            Ok(pair) => Some(pair),
            Err(reason) => {
                on_line(RelayLine::Unreachable {
                    next: next.to_string(),
                    reason,
                });
                None
            }
        },
        None => None,
    };
    let reach = 1 + downstream.as_ref().map_or(0, |(_, reach)| *reach);
    write_frame(&mut upstream, &Ack { reach })
        .await
        .map_err(|e| upstream_err(format!("answering: {e}")))?;
    let start: Start = timed(config.idle_timeout, read_frame(&mut upstream))
        .await
        .map_err(|e| upstream_err(format!("reading the start frame: {e}")))?;
    if start.from.len() != header.blobs.len() {
        return Err(upstream_err(format!(
            "start frame lists {} blobs, header {}",
            start.from.len(),
            header.blobs.len()
        )));
    }
    // Blobs forwarded: those someone after this node wants.
    let forward: Vec<bool> = header
        .blobs
        .iter()
        .map(|b| b.need.iter().skip(1).any(|n| *n))
        .collect();
    if let Some((stream, _)) = &mut downstream {
        let from = header
            .blobs
            .iter()
            .zip(&start.from)
            .zip(&forward)
            .map(|((b, from), fwd)| if *fwd { *from } else { b.size })
            .collect();
        if let Err(e) = write_frame(stream, &Start { from }).await {
            on_line(RelayLine::DownstreamLost {
                reason: e.to_string(),
            });
            downstream = None;
        }
    }
    let mut down = downstream.map(|(s, _)| s);
    let mut done = 0;
    let mut failed = 0;
    let mut upstream_gone: Option<String> = None;
    for ((blob, from), fwd) in header.blobs.iter().zip(&start.from).zip(&forward) {
        let mine = holdings
            .iter()
            .find(|h| h.digest == blob.digest && !h.present && h.size == blob.size);
        let from = (*from).min(blob.size);
        let in_stream = from < blob.size;
        if let Some(reason) = &upstream_gone {
            if mine.is_some() {
                failed += 1;
                on_line(RelayLine::Fail {
                    digest: blob.digest.clone(),
                    reason: reason.clone(),
                });
            }
            continue;
        }
        let mut sink = match mine {
            Some(h) if h.offset >= from && (in_stream || h.offset == h.size) => {
                Some(BlobSink::open(&config.store, h).await?)
            }
            Some(h) => {
                failed += 1;
                on_line(RelayLine::Fail {
                    digest: h.digest.clone(),
                    reason: format!(
                        "the stream starts at byte {from} but this node holds {}",
                        h.offset
                    ),
                });
                None
            }
            None => None,
        };
        if in_stream {
            let mut pos = from;
            let mut buf = vec![0u8; CHUNK];
            let mut next_progress = pos + PROGRESS_EVERY;
            while pos < blob.size {
                let want = usize::try_from((blob.size - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
                let n = match timed(config.idle_timeout, upstream.read(&mut buf[..want])).await {
                    Ok(0) => {
                        upstream_gone = Some(format!("upstream lost at byte {pos}: closed"));
                        break;
                    }
                    Ok(n) => n,
                    Err(e) => {
                        upstream_gone = Some(format!("upstream lost at byte {pos}: {e}"));
                        break;
                    }
                };
                let chunk = &buf[..n];
                if *fwd
                    && let Some(stream) = &mut down
                    && let Err(e) = stream.write_all(chunk).await
                {
                    on_line(RelayLine::DownstreamLost {
                        reason: e.to_string(),
                    });
                    down = None;
                }
                if let Some(s) = &mut sink {
                    s.write(pos, chunk).await?;
                }
                pos += n as u64;
                if sink.is_some() && pos >= next_progress {
                    next_progress = pos + PROGRESS_EVERY;
                    on_line(RelayLine::Progress {
                        digest: blob.digest.clone(),
                        bytes: pos,
                    });
                }
            }
        }
        let Some(sink) = sink else { continue };
        if let Some(reason) = &upstream_gone {
            sink.keep().await?;
            failed += 1;
            on_line(RelayLine::Fail {
                digest: blob.digest.clone(),
                reason: reason.clone(),
            });
            continue;
        }
        match sink.finish(&config.store).await? {
            Ok((received, resumed)) => {
                done += 1;
                on_line(RelayLine::Done {
                    digest: blob.digest.clone(),
                    received,
                    resumed,
                });
            }
            Err(reason) => {
                failed += 1;
                on_line(RelayLine::Fail {
                    digest: blob.digest.clone(),
                    reason,
                });
            }
        }
    }
    // Wanted blobs the header did not list cannot arrive in this run.
    for h in holdings.iter().filter(|h| !h.present) {
        if !header.blobs.iter().any(|b| b.digest == h.digest) {
            failed += 1;
            on_line(RelayLine::Fail {
                digest: h.digest.clone(),
                reason: "not in the stream".to_string(),
            });
        }
    }
    if let Some(mut stream) = down {
        // The next hop reads to its end; a failure here shows there as `upstream lost`.
        let _ = stream.shutdown().await;
    }
    on_line(RelayLine::Finished { done, failed });
    Ok((done, failed))
}

async fn timed<T, E: std::fmt::Display>(
    limit: Duration,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("nothing for {}s", limit.as_secs())),
    }
}

/// Accept until a connection brings the magic and the right token.
async fn accept(
    listener: &TcpListener,
    request: &RelayRequest,
    config: &RelayConfig,
    on_line: &mut (dyn FnMut(RelayLine) + Send),
) -> Result<(TcpStream, SocketAddr), RelayError> {
    let deadline = tokio::time::Instant::now() + config.idle_timeout;
    loop {
        let accepted = tokio::time::timeout_at(deadline, listener.accept()).await;
        let Ok(Ok((mut stream, peer))) = accepted else {
            if accepted.is_err() {
                return Err(RelayError::Idle(config.idle_timeout.as_secs()));
            }
            continue;
        };
        let mut hello = [0u8; MAGIC.len() + TOKEN_LEN];
        let read =
            tokio::time::timeout(config.connect_timeout, stream.read_exact(&mut hello)).await;
        let good = matches!(read, Ok(Ok(_)))
            && &hello[..MAGIC.len()] == MAGIC
            && token_matches(&hello[MAGIC.len()..], request.token.expose().as_bytes());
        if good {
            let _ = stream.set_nodelay(true);
            return Ok((stream, peer));
        }
        on_line(RelayLine::Refused {
            peer: peer.to_string(),
        });
    }
}

/// Connect to the next hop, forward the header, and read how far the chain reaches.
async fn connect_next(
    next: SocketAddr,
    header: &Header,
    request: &RelayRequest,
    config: &RelayConfig,
) -> Result<(TcpStream, u32), String> {
    let mut stream = timed(config.connect_timeout, TcpStream::connect(next)).await?;
    let _ = stream.set_nodelay(true);
    write_hello(&mut stream, &request.token)
        .await
        .map_err(|e| e.to_string())?;
    write_frame(&mut stream, &header.next())
        .await
        .map_err(|e| e.to_string())?;
    // Each hop after this one may take a connect timeout of its own to answer.
    let hops = u32::try_from(header.hops.len()).unwrap_or(u32::MAX);
    let limit = config
        .connect_timeout
        .saturating_mul(hops.saturating_add(1));
    let ack: Ack = timed(limit, read_frame(&mut stream)).await?;
    Ok((stream, ack.reach.clamp(1, hops)))
}

/// The part file of one blob being received.
struct BlobSink {
    digest: Digest,
    size: u64,
    file: File,
    hasher: Sha256,
    /// Bytes held before this run.
    resumed: u64,
    /// Bytes held now.
    held: u64,
}

impl BlobSink {
    /// Open the part file, hashing the bytes it already holds.
    async fn open(store: &Path, h: &Holding) -> Result<Self, RelayError> {
        let part = part_path(store, &h.digest);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&part)
            .await
            .map_err(store_err(&part))?;
        let mut hasher = Sha256::new();
        let mut held = 0u64;
        let mut buf = vec![0u8; CHUNK];
        while held < h.offset {
            let want = usize::try_from((h.offset - held).min(CHUNK as u64)).unwrap_or(CHUNK);
            let n = file
                .read(&mut buf[..want])
                .await
                .map_err(store_err(&part))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            held += n as u64;
        }
        file.set_len(held).await.map_err(store_err(&part))?;
        Ok(Self {
            digest: h.digest.clone(),
            size: h.size,
            file,
            hasher,
            resumed: held,
            held,
        })
    }

    /// Take the chunk that starts at stream offset `pos`, keeping what is new.
    async fn write(&mut self, pos: u64, chunk: &[u8]) -> Result<(), RelayError> {
        let end = pos + chunk.len() as u64;
        if end <= self.held {
            return Ok(());
        }
        let skip = usize::try_from(self.held.saturating_sub(pos)).unwrap_or(0);
        let new = &chunk[skip..];
        self.file
            .write_all(new)
            .await
            .map_err(|source| RelayError::Store {
                path: PathBuf::from(format!("{}.airlock-part", self.digest.hex())),
                source,
            })?;
        self.hasher.update(new);
        self.held = end;
        Ok(())
    }

    /// Upstream went away: flush what arrived for the next run.
    async fn keep(mut self) -> Result<(), RelayError> {
        let digest = self.digest.clone();
        self.file.flush().await.map_err(|source| RelayError::Store {
            path: PathBuf::from(format!("{}.airlock-part", digest.hex())),
            source,
        })
    }

    /// Check the digest: rename into place, or delete the part. The inner result is
    /// `(received, resumed)` or why the blob was rejected.
    async fn finish(mut self, store: &Path) -> Result<Result<(u64, u64), String>, RelayError> {
        let part = part_path(store, &self.digest);
        self.file.flush().await.map_err(store_err(&part))?;
        self.file.sync_data().await.map_err(store_err(&part))?;
        drop(self.file);
        let got = Digest::from_hasher(self.hasher);
        if self.held != self.size || got != self.digest {
            tokio::fs::remove_file(&part)
                .await
                .map_err(store_err(&part))?;
            return Ok(Err(format!(
                "digest mismatch: {} bytes hash to {got}; the part was deleted",
                self.held
            )));
        }
        let dest = blob_path(store, &self.digest);
        set_mode(&part, 0o644).await?;
        tokio::fs::rename(&part, &dest)
            .await
            .map_err(store_err(&dest))?;
        Ok(Ok((self.held - self.resumed, self.resumed)))
    }
}

async fn set_mode(path: &Path, mode: u32) -> Result<(), RelayError> {
    use std::os::unix::fs::PermissionsExt as _;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(store_err(path))
}
