//! What the operator and the relays say to each other.
//!
//! Over TCP, from upstream (the operator or the previous node) to downstream:
//! 1. [`MAGIC`], then the run's token (64 hex digits). A relay compares it in
//!    constant time and closes the connection on a mismatch.
//! 2. A [`Header`] frame: the hops still ahead and the blobs of the stream, with
//!    which hop needs which. The receiver connects to the next hop and forwards the
//!    header without itself.
//! 3. Downstream answers an [`Ack`] frame: how many hops, itself included, are
//!    connected from there on.
//! 4. A [`Start`] frame: for every blob, the offset its bytes start from in the
//!    stream (its size when it is not in the stream at all).
//! 5. The bytes: every blob in header order, from its start offset to its end,
//!    unframed (lengths are known from the header and the start frame).
//!
//! A frame is a 4-byte big-endian length and that many bytes of JSON.
//!
//! On its stdout (read by the operator over SSH) a relay writes one [`RelayLine`]
//! per line; on its stdin it reads a [`RelayRequest`] (token first: never argv).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::digest::Digest;
use crate::remote::Secret;

/// The first bytes on every relay connection.
pub const MAGIC: &[u8; 16] = b"airlock-relay/1\n";
/// Length of a token: 32 random bytes in hex.
pub const TOKEN_LEN: usize = 64;
/// The largest frame accepted (a header listing many thousands of blobs fits).
pub const MAX_FRAME: u32 = 64 << 20;

/// A fresh one-time token for one fan-out run.
pub fn new_token() -> Secret {
    Secret::new(hex::encode(rand::random::<[u8; 32]>()))
}

/// Whether `given` equals `expected`, in time that does not depend on where they differ.
pub fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// One blob of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// For the receiver (index 0) and each hop after it: whether it wants the blob.
    pub need: Vec<bool>,
}

/// The plan of a chain, as one hop receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The hops after the receiver, in chain order.
    pub hops: Vec<SocketAddr>,
    /// The blobs, in stream order.
    pub blobs: Vec<WireBlob>,
}

impl Header {
    /// The header the receiver forwards to the next hop: without itself.
    pub fn next(&self) -> Self {
        Self {
            hops: self.hops.iter().skip(1).copied().collect(),
            blobs: self
                .blobs
                .iter()
                .map(|b| WireBlob {
                    digest: b.digest.clone(),
                    size: b.size,
                    need: b.need.iter().skip(1).copied().collect(),
                })
                .collect(),
        }
    }
}

/// Downstream's answer to a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Hops connected from the answering one on, itself included.
    pub reach: u32,
}

/// Where each blob's bytes start in the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// Per blob of the header: the first offset sent; its size when not sent.
    pub from: Vec<u64>,
}

/// Write `value` as one frame.
pub async fn write_frame<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    value: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|n| *n <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("frame too large"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await
}

/// Read one frame into a `T`.
pub async fn read_frame<T: for<'de> Deserialize<'de>>(
    r: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Open a connection: magic and token.
pub async fn write_hello(w: &mut (impl AsyncWrite + Unpin), token: &Secret) -> std::io::Result<()> {
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(token.expose().as_bytes());
    w.write_all(&hello).await?;
    w.flush().await
}

/// What a relay is told on stdin: the token, then the blobs this node wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayRequest {
    /// The run's token.
    pub token: Secret,
    /// The blobs this node wants: digest and size.
    pub wants: Vec<(Digest, u64)>,
}

/// Why a relay request could not be read.
#[derive(Debug, thiserror::Error)]
#[error("relay request on stdin, line {line}: {reason}")]
pub struct BadRequest {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl RelayRequest {
    /// The text sent on the relay's stdin: the token line, then `<digest> <size>` lines.
    pub fn encode(&self) -> String {
        let mut text = format!("{}\n", self.token.expose());
        for (digest, size) in &self.wants {
            text.push_str(&format!("{digest} {size}\n"));
        }
        text
    }

    /// Parse what [`RelayRequest::encode`] wrote.
    pub fn parse(text: &str) -> Result<Self, BadRequest> {
        let mut lines = text.lines().enumerate();
        let token = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
        if token.len() != TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadRequest {
                line: 1,
                reason: format!("expected a token of {TOKEN_LEN} hex digits"),
            });
        }
        let mut wants = Vec::new();
        for (i, line) in lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: String| BadRequest {
                line: i + 1,
                reason,
            };
            let (digest, size) = line
                .split_once(' ')
                .ok_or_else(|| bad("expected `<digest> <size>`".to_string()))?;
            let digest: Digest = digest.parse().map_err(|e| bad(format!("{e}")))?;
            let size: u64 = size
                .parse()
                .map_err(|e| bad(format!("size {size:?}: {e}")))?;
            wants.push((digest, size));
        }
        Ok(Self {
            token: Secret::new(token),
            wants,
        })
    }
}

/// One line a relay writes on stdout for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayLine {
    /// The node already holds the blob; it is not received.
    Have(Digest),
    /// The node wants the blob and holds its first `offset` bytes from an earlier run.
    Partial {
        /// The blob.
        digest: Digest,
        /// Bytes already held.
        offset: u64,
    },
    /// The relay listens on `port`; its process id is `pid`. Comes after every
    /// `have`/`partial` line.
    Listening {
        /// The port.
        port: u16,
        /// The relay's process id on the node.
        pid: u32,
    },
    /// A connection came with a wrong token and was closed.
    Refused {
        /// Who connected.
        peer: String,
    },
    /// The next hop could not be reached: the chain ends here.
    Unreachable {
        /// The next hop.
        next: String,
        /// Why.
        reason: String,
    },
    /// The next hop went away mid-stream: forwarding stopped, receiving goes on.
    DownstreamLost {
        /// Why.
        reason: String,
    },
    /// So many bytes of the blob are held (counting resumed ones).
    Progress {
        /// The blob.
        digest: Digest,
        /// Bytes held.
        bytes: u64,
    },
    /// The blob arrived, matched its digest and is in place.
    Done {
        /// The blob.
        digest: Digest,
        /// Bytes written in this run.
        received: u64,
        /// Bytes kept from an earlier run.
        resumed: u64,
    },
    /// The blob did not arrive whole or did not match its digest.
    Fail {
        /// The blob.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// The relay is done: so many blobs arrived, so many failed.
    Finished {
        /// Blobs that arrived.
        done: u32,
        /// Blobs that failed.
        failed: u32,
    },
}

impl fmt::Display for RelayLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            Self::Have(d) => write!(f, "have {d}"),
            Self::Partial { digest, offset } => write!(f, "partial {digest} {offset}"),
            Self::Listening { port, pid } => write!(f, "listening {port} {pid}"),
            Self::Refused { peer } => write!(f, "refused {}", one_line(peer)),
            Self::Unreachable { next, reason } => {
                write!(f, "unreachable {} {}", one_line(next), one_line(reason))
            }
            Self::DownstreamLost { reason } => write!(f, "downstream-lost {}", one_line(reason)),
            Self::Progress { digest, bytes } => write!(f, "progress {digest} {bytes}"),
            Self::Done {
                digest,
                received,
                resumed,
            } => write!(f, "done {digest} {received} {resumed}"),
            Self::Fail { digest, reason } => write!(f, "fail {digest} {}", one_line(reason)),
            Self::Finished { done, failed } => write!(f, "finished {done} {failed}"),
        }
    }
}

impl FromStr for RelayLine {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a relay line: {line:?}");
        let (word, rest) = line.trim().split_once(' ').ok_or_else(bad)?;
        let mut words = rest.splitn(3, ' ');
        let mut next = || words.next().ok_or_else(bad);
        let digest = |s: &str| s.parse::<Digest>().map_err(|e| e.to_string());
        let number = |s: &str| s.parse::<u64>().map_err(|e| format!("{line:?}: {e}"));
        Ok(match word {
            "have" => Self::Have(digest(next()?)?),
            "partial" => Self::Partial {
                digest: digest(next()?)?,
                offset: number(next()?)?,
            },
            "listening" => Self::Listening {
                port: next()?.parse().map_err(|_| bad())?,
                pid: next()?.parse().map_err(|_| bad())?,
            },
            "refused" => Self::Refused {
                peer: rest.to_string(),
            },
            "unreachable" => {
                let (next_hop, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                Self::Unreachable {
                    next: next_hop.to_string(),
                    reason: reason.to_string(),
                }
            }
            "downstream-lost" => Self::DownstreamLost {
                reason: rest.to_string(),
            },
            "progress" => Self::Progress {
                digest: digest(next()?)?,
                bytes: number(next()?)?,
            },
            "done" => Self::Done {
                digest: digest(next()?)?,
                received: number(next()?)?,
                resumed: number(next()?)?,
            },
            "fail" => {
                let (d, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                Self::Fail {
                    digest: digest(d)?,
                    reason: reason.to_string(),
                }
            }
            "finished" => Self::Finished {
                done: next()?.parse().map_err(|_| bad())?,
                failed: next()?.parse().map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_lines_round_trip() {
        let d = Digest::of(b"x");
        for line in [
            RelayLine::Have(d.clone()),
            RelayLine::Partial {
                digest: d.clone(),
                offset: 7,
            },
            RelayLine::Listening { port: 4000, pid: 9 },
            RelayLine::Refused {
                peer: "198.18.0.9:5000".into(),
            },
            RelayLine::Unreachable {
                next: "198.18.0.3:41000".into(),
                reason: "connection refused (os error 111)".into(),
            },
            RelayLine::DownstreamLost {
                reason: "broken pipe".into(),
            },
            RelayLine::Progress {
                digest: d.clone(),
                bytes: 5,
            },
            RelayLine::Done {
                digest: d.clone(),
                received: 3,
                resumed: 2,
            },
            RelayLine::Fail {
                digest: d.clone(),
                reason: "digest mismatch: got sha256:00".into(),
            },
            RelayLine::Finished { done: 1, failed: 2 },
        ] {
            assert_eq!(line.to_string().parse::<RelayLine>(), Ok(line));
        }
        assert!("hello world".parse::<RelayLine>().is_err());
    }

    #[test]
    fn request_round_trips_and_rejects_bad_tokens() {
        let req = RelayRequest {
            token: new_token(),
            wants: vec![(Digest::of(b"a"), 1), (Digest::of(b"bb"), 2)],
        };
        assert_eq!(RelayRequest::parse(&req.encode()).unwrap(), req);
        let err = RelayRequest::parse("short\n").unwrap_err();
        assert_eq!(err.line, 1);
        let text = format!("{}\nsha256:zz 1\n", req.token.expose());
        assert_eq!(RelayRequest::parse(&text).unwrap_err().line, 2);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches(b"abcd", b"abcd"));
        assert!(!token_matches(b"abcd", b"abce"));
        assert!(!token_matches(b"abc", b"abcd"));
        assert_ne!(new_token(), new_token());
    }
}
