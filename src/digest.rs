//! Content digests (`sha256:<64 hex>`), the identity of every blob airlock handles.
//!
//! A [`Digest`] is validated when parsed, so it is always safe to use as a path
//! component: it never contains `/` or `..`.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:` content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a sha256 digest (expected `sha256:` and 64 lowercase hex digits)")]
pub struct InvalidDigest(pub String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher holds.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The algorithm name; always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix("sha256:")
            .filter(|h| {
                h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            .ok_or_else(|| InvalidDigest(s.to_string()))?;
        Ok(Self {
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes and counts what passes through it.
///
/// [`HashingWriter::new`] hashes on the writing thread. [`HashingWriter::offloaded`]
/// hashes on a second thread, for streams of hundreds of MiB where hashing would
/// otherwise hold up the writer (a layer build): what is written is copied into
/// [`OFFLOAD_CHUNK`] buffers, at most [`OFFLOAD_QUEUE`] of them wait for the hashing
/// thread, and buffers come back to be reused. The thread starts with the first full
/// buffer, so a short stream never starts one.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

/// The size of the buffers handed to an offloaded hasher.
pub const OFFLOAD_CHUNK: usize = 1 << 20;
/// How many full buffers may wait for an offloaded hasher.
pub const OFFLOAD_QUEUE: usize = 4;

enum Hasher {
    Inline(Sha256),
    Offloaded(Offload),
}

#[derive(Default)]
struct Offload {
    pending: Vec<u8>,
    thread: Option<HashThread>,
}

struct HashThread {
    full: std::sync::mpsc::SyncSender<Vec<u8>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    handle: std::thread::JoinHandle<Sha256>,
}

impl Offload {
    fn update(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending = self.fresh_buffer();
            }
            let room = OFFLOAD_CHUNK - self.pending.len();
            let (now, rest) = buf.split_at(room.min(buf.len()));
            self.pending.extend_from_slice(now);
            buf = rest;
            if self.pending.len() == OFFLOAD_CHUNK {
                let full = std::mem::take(&mut self.pending);
                self.send(full);
            }
        }
    }

    fn fresh_buffer(&self) -> Vec<u8> {
        self.thread
            .as_ref()
            .and_then(|t| t.empty.try_recv().ok())
            .map(|mut b| {
                b.clear();
                b
            })
            .unwrap_or_else(|| Vec::with_capacity(OFFLOAD_CHUNK))
    }

    fn send(&mut self, full: Vec<u8>) {
        let thread = self.thread.get_or_insert_with(|| {
            let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(OFFLOAD_QUEUE);
            let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let handle = std::thread::spawn(move || {
                let mut hasher = Sha256::new();
                for chunk in full_rx {
                    hasher.update(&chunk);
                    // The writer may be gone or have enough buffers: either is fine.
                    let _ = empty_tx.send(chunk);
                }
                hasher
            });
            HashThread {
                full: full_tx,
                empty: empty_rx,
                handle,
            }
        });
        if thread.full.send(full).is_err() {
            // The hashing thread is gone, which only a panic does: surface it.
            if let Some(Err(panic)) = self.thread.take().map(|t| t.handle.join()) {
                std::panic::resume_unwind(panic);
            }
        }
    }

    fn finish(self) -> Sha256 {
        match self.thread {
            None => Sha256::new_with_prefix(&self.pending),
            Some(thread) => {
                if !self.pending.is_empty() {
                    let _ = thread.full.send(self.pending);
                }
                drop(thread.full);
                thread
                    .handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
        }
    }
}

impl<W: Write> HashingWriter<W> {
    /// Wrap `inner`, hashing on the writing thread.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::Inline(Sha256::new()),
            written: 0,
        }
    }

    /// Wrap `inner`, hashing on a second thread once more than [`OFFLOAD_CHUNK`]
    /// bytes were written.
    pub fn offloaded(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::Offloaded(Offload::default()),
            written: 0,
        }
    }

    /// The digest and size of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        let hasher = match self.hasher {
            Hasher::Inline(h) => h,
            Hasher::Offloaded(o) => o.finish(),
        };
        (Digest::from_hasher(hasher), self.written, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        match &mut self.hasher {
            Hasher::Inline(h) => h.update(&buf[..n]),
            Hasher::Offloaded(o) => o.update(&buf[..n]),
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The digest and size of everything `reader` yields.
pub fn digest_reader(mut reader: impl Read) -> io::Result<(Digest, u64)> {
    let mut writer = HashingWriter::new(io::sink());
    io::copy(&mut reader, &mut writer)?;
    let (digest, size, _) = writer.finish();
    Ok((digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloaded_hashing_gives_the_inline_digest() {
        // Sizes around the chunk edges, written in odd pieces, and more chunks than
        // the queue holds (buffers are reused).
        let data: Vec<u8> = (0..(OFFLOAD_CHUNK * (OFFLOAD_QUEUE + 3) + 777))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for len in [
            0,
            1,
            OFFLOAD_CHUNK - 1,
            OFFLOAD_CHUNK,
            OFFLOAD_CHUNK + 1,
            data.len(),
        ] {
            let part = &data[..len];
            let mut w = HashingWriter::offloaded(Vec::new());
            for piece in part.chunks(4093) {
                w.write_all(piece).unwrap();
            }
            let (digest, size, out) = w.finish();
            assert_eq!(digest, Digest::of(part), "length {len}");
            assert_eq!(size, len as u64);
            assert_eq!(out, part);
        }
    }

    #[test]
    fn digest_of_empty_is_the_well_known_one() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_rejects_traversal_uppercase_and_wrong_length() {
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:abc",
            "md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} parsed");
        }
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(d, Digest::of(b""));
    }

    #[test]
    fn hashing_writer_matches_one_shot_digest() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (d, n, inner) = w.finish();
        assert_eq!(d, Digest::of(b"hello world"));
        assert_eq!(n, 11);
        assert_eq!(inner, b"hello world");
    }
}
