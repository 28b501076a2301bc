//! Plain-HTTP connections that send blob bytes with `sendfile`: the kernel hands the
//! file's cached pages to the socket, and the server copies nothing.
//!
//! A blob body is a series of memory-mapped windows ([`super::mapped`]); hyper writes
//! them like any other bytes. [`Zerocopy`] looks at what it is asked to write: bytes
//! that start inside a live window are sent from the window's file, at the same
//! offset, with `sendfile`; anything else (headers, manifests, error bodies, bytes hyper
//! copied) is written as usual. The bytes on the wire are the same either way: the
//! window maps exactly that part of that file. TLS connections cannot use this (the
//! bytes must be encrypted in user space) and keep the copying write.

use std::io::{self, IoSlice};
use std::os::fd::AsFd as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use super::homed::Homed;
use super::mapped::file_behind;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A listener of plain TCP connections that send windows with `sendfile`.
pub(crate) struct ZerocopyListener {
    inner: tokio::net::TcpListener,
}

impl ZerocopyListener {
    /// Accept on `inner`; connections get `TCP_NODELAY`.
    pub(crate) fn new(inner: tokio::net::TcpListener) -> Self {
        Self { inner }
    }
}

impl axum::serve::Listener for ZerocopyListener {
    type Io = Zerocopy;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let _ = tcp.set_nodelay(true);
        let io = Zerocopy {
            tcp: Homed::new(tcp),
            write_only: false,
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP connection that sends mapped blob windows with `sendfile` (see the module).
pub(crate) struct Zerocopy {
    tcp: Homed,
    /// `sendfile` refused a file of this connection as unsupported: write instead.
    write_only: bool,
}

impl Zerocopy {
    /// Send `bytes` (which start inside a live window) from the window's file.
    /// `Ok(None)` when they must be written instead: no live window holds them, or
    /// the file's filesystem cannot `sendfile`.
    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<Option<usize>>> {
        if self.write_only {
            return Poll::Ready(Ok(None));
        }
        let Some((file, offset, len)) = file_behind(bytes) else {
            return Poll::Ready(Ok(None));
        };
        let mut offset = i64::try_from(offset).map_err(io::Error::other)?;
        let tcp = &*self.tcp.stream()?;
        loop {
            ready!(tcp.poll_write_ready(cx))?;
            let sent = tcp.try_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile64(tcp.as_fd(), file.as_fd(), Some(&mut offset), len)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(n) => return Poll::Ready(Ok(Some(n))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if unsupported(&e) => {
                    tracing::debug!("registry: sendfile unsupported ({e}); writing instead");
                    self.write_only = true;
                    return Poll::Ready(Ok(None));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// `sendfile` cannot serve this file (its filesystem does not support it), but a
/// plain write of the same bytes can.
fn unsupported(error: &io::Error) -> bool {
    use nix::errno::Errno;
    [Errno::EINVAL, Errno::ENOSYS, Errno::EOPNOTSUPP]
        .iter()
        .any(|errno| error.raw_os_error() == Some(*errno as i32))
}

impl AsyncRead for Zerocopy {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Zerocopy {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(n) = ready!(self.poll_sendfile(cx, buf))? {
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A window at the front is sent alone; slices before the first window are
        // written together (both are short writes, which callers handle).
        let mut slices = bufs.iter().enumerate().filter(|(_, b)| !b.is_empty());
        let Some((_, first)) = slices.next() else {
            return Poll::Ready(Ok(0));
        };
        if let Some(n) = ready!(self.poll_sendfile(cx, first))? {
            return Poll::Ready(Ok(n));
        }
        let end = slices
            .find(|(_, b)| file_behind(b).is_some())
            .map_or(bufs.len(), |(i, _)| i);
        Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[..end])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn windows_are_sent_from_their_file_and_other_bytes_as_written() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        let region = super::super::mapped::Region::open(file, 10, 2_999_990).unwrap();
        let mut region = region.for_sendfile();
        let first = region.map(1 << 20).unwrap().unwrap();
        let second = region.map(1 << 21).unwrap().unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = ZerocopyListener::new(listener);
        let reader = tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let (mut conn, _) = axum::serve::Listener::accept(&mut listener).await;
        // Head + window in one vectored write, as hyper sends a response.
        let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let mut sent = 0;
        while sent < head.len() + first.len() {
            let slices = if sent < head.len() {
                vec![IoSlice::new(&head[sent..]), IoSlice::new(&first)]
            } else {
                vec![IoSlice::new(&first[sent - head.len()..])]
            };
            sent += conn.write_vectored(&slices).await.unwrap();
        }
        conn.write_all(&second).await.unwrap();
        conn.write_all(b"tail").await.unwrap();
        conn.shutdown().await.unwrap();
        drop(conn);

        let got = reader.await.unwrap();
        let mut expected = head.clone();
        expected.extend_from_slice(&data[10..]);
        expected.extend_from_slice(b"tail");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes sent differ from the file's");
    }
}
