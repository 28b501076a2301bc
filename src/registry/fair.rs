//! Connections that take turns: each yields its worker after writing [`WRITE_SHARE`]
//! bytes, so no blob connection holds a worker for long.
//!
//! Why: hyper writes a response for as long as the socket takes bytes (up to 16 body
//! frames, 2 MiB each, per poll), and on loopback, where the client drains as fast as
//! the server writes, one poll of a blob connection could send tens of megabytes while
//! the other connections on that worker waited. Small requests no longer share
//! workers with blob writes ([`super::lanes`]); this keeps the blob connections fair
//! to each other. The share is large because each turn costs: with 256 KiB shares the
//! server used 0.84–1.00 CPU seconds per 3.2 GB sent, with 4 MiB 0.57–0.64
//! (`docs/benchmarks.md`, registry).
//!
//! 1. [`FairListener`] wraps any listener (plain TCP or TLS) and hands out [`Fair`]
//!    connections.
//! 2. [`Fair`] counts the bytes written since the connection last gave up its worker.
//!    Past [`WRITE_SHARE`] it wakes itself and answers `Pending`: the task goes to the
//!    back of the worker's queue, behind the requests that arrived meanwhile. A write
//!    the socket cannot take (also `Pending`) starts a new share.
//! 3. Reads are passed through untouched.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes a connection writes before it lets the other connections on its worker run.
pub(crate) const WRITE_SHARE: usize = 4 * 1024 * 1024;

/// A listener whose connections take turns writing (see the module).
pub(crate) struct FairListener<L> {
    inner: L,
}

impl<L> FairListener<L> {
    /// Hand out `inner`'s connections as [`Fair`] ones.
    pub(crate) fn new(inner: L) -> Self {
        Self { inner }
    }
}

impl<L: axum::serve::Listener> axum::serve::Listener for FairListener<L> {
    type Io = Fair<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (Fair::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that yields its worker every [`WRITE_SHARE`] bytes written.
pub(crate) struct Fair<S> {
    inner: S,
    /// Bytes written since this connection last returned `Pending` from a write.
    written: usize,
}

impl<S> Fair<S> {
    /// Wrap `inner`.
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, written: 0 }
    }

    /// Bytes this connection may still write in its share; `None` when the share is
    /// spent, after waking the task so it runs again once the others had their turn.
    fn room(&mut self, cx: &Context<'_>) -> Option<usize> {
        if self.written >= WRITE_SHARE {
            self.written = 0;
            cx.waker().wake_by_ref();
            return None;
        }
        Some(WRITE_SHARE - self.written)
    }

    /// Count a write's outcome against the share.
    fn count(&mut self, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match &result {
            Poll::Ready(Ok(n)) => self.written += n,
            Poll::Pending => self.written = 0,
            Poll::Ready(Err(_)) => {}
        }
        result
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Fair<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Fair<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(room) = self.room(cx) else {
            return Poll::Pending;
        };
        let limit = buf.len().min(room);
        let result = Pin::new(&mut self.inner).poll_write(cx, &buf[..limit]);
        self.count(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(room) = self.room(cx) else {
            return Poll::Pending;
        };
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let result = if total <= room {
            Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
        } else {
            // More than the share: write part of the first non-empty slice (a short
            // write, which every caller of a vectored write must handle).
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            let limit = first.len().min(room);
            Pin::new(&mut self.inner).poll_write(cx, &first[..limit])
        };
        self.count(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// Counts how often the task was woken.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_connection_yields_after_its_share_and_wakes_itself() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fair = Fair::new(Vec::new());
        let big = vec![7u8; WRITE_SHARE + 1000];

        // The first write is cut to the share, the next yields and wakes the task.
        let first = Pin::new(&mut fair).poll_write(&mut cx, &big);
        assert!(
            matches!(first, Poll::Ready(Ok(n)) if n == WRITE_SHARE),
            "{first:?}"
        );
        assert!(Pin::new(&mut fair).poll_write(&mut cx, &big).is_pending());
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);

        // After the yield a new share starts; vectored writes beyond it are short.
        let slices = [IoSlice::new(&[]), IoSlice::new(&big), IoSlice::new(b"tail")];
        let second = Pin::new(&mut fair).poll_write_vectored(&mut cx, &slices);
        assert!(
            matches!(second, Poll::Ready(Ok(n)) if n == WRITE_SHARE),
            "{second:?}"
        );
        assert!(Pin::new(&mut fair).poll_write(&mut cx, b"x").is_pending());

        // Vectored writes within the share go through whole.
        let small = [IoSlice::new(b"head"), IoSlice::new(b"body")];
        let third = Pin::new(&mut fair).poll_write_vectored(&mut cx, &small);
        assert!(matches!(third, Poll::Ready(Ok(8))), "{third:?}");
        assert_eq!(fair.inner.len(), 2 * WRITE_SHARE + 8);
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn everything_written_arrives_in_order() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let data: Vec<u8> = (0..3 * WRITE_SHARE + 17).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let mut fair = Fair::new(server);
            fair.write_all(&data).await.unwrap();
            poll_fn(|cx| Pin::new(&mut fair).poll_shutdown(cx))
                .await
                .unwrap();
        });
        let mut got = Vec::new();
        use tokio::io::AsyncReadExt as _;
        let mut client = client;
        client.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, expected);
    }
}
