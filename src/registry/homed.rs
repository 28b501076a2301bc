//! A connection's TCP socket, registered with the reactor of the lane it runs on.
//!
//! A tokio socket belongs to the reactor of the runtime it was registered with: that
//! runtime's threads wait for its readiness events and wake its task, on whichever
//! runtime the task runs. A blob connection moved to the bulk lane ([`super::lanes`])
//! would leave its events with the control lane, waking a control worker each time
//! the socket can take more bytes (measured: a control worker then runs about a
//! tenth of every second while 16 clients pull). [`Homed`] moves the registration with
//! the connection: on the first use after a move it deregisters the socket and
//! registers it with the reactor of the runtime now polling it.
//!
//! The lane a connection is on is told by [`on_lane`], which [`super::lanes`] wraps
//! around each poll of a connection. Outside it (the TLS handshake, tests) a socket
//! stays where it is.

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

thread_local! {
    /// The lane of the connection being polled on this thread (`Some(true)`: bulk).
    static LANE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Run `poll` (one poll of a connection) with the connection's sockets told that it
/// runs on the bulk lane (`bulk`) or the control lane.
pub(super) fn on_lane<R>(bulk: bool, poll: impl FnOnce() -> R) -> R {
    /// Puts back what the thread had before, also when `poll` panics.
    struct Restore(Option<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            LANE.set(self.0);
        }
    }
    let _restore = Restore(LANE.replace(Some(bulk)));
    poll()
}

/// The lane [`on_lane`] says this thread is polling a connection on (`Some(true)`:
/// bulk), `None` outside one.
pub(super) fn current_lane() -> Option<bool> {
    LANE.get()
}

/// A TCP socket that follows its connection between lanes (see the module).
#[derive(Debug)]
pub(crate) struct Homed {
    /// `None` only when re-registering failed; the connection is then broken.
    tcp: Option<TcpStream>,
    /// The lane whose reactor `tcp` is registered with.
    on_bulk: bool,
}

impl Homed {
    /// A socket accepted on the control lane.
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Self {
            tcp: Some(tcp),
            on_bulk: false,
        }
    }

    /// The socket, registered with the reactor of the lane polling it.
    pub(crate) fn stream(&mut self) -> io::Result<&mut TcpStream> {
        if let Some(bulk) = current_lane()
            && bulk != self.on_bulk
            && let Some(tcp) = self.tcp.take()
        {
            // `into_std` deregisters (and leaves the socket non-blocking);
            // `from_std` registers with the current runtime, the one polling.
            self.tcp = Some(TcpStream::from_std(tcp.into_std()?)?);
            self.on_bulk = bulk;
        }
        self.tcp.as_mut().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection's socket was lost moving between lanes",
            )
        })
    }
}

/// `Poll::Ready(Err)` for an error getting the socket, else the socket.
macro_rules! stream {
    ($homed:expr) => {
        match $homed.stream() {
            Ok(tcp) => Pin::new(tcp),
            Err(e) => return Poll::Ready(Err(e)),
        }
    };
}

impl AsyncRead for Homed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        stream!(self).poll_read(cx, buf)
    }
}

impl AsyncWrite for Homed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        stream!(self).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        stream!(self).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        stream!(self).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        stream!(self).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn runtime(name: &str) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Polls `F` as a connection on lane `.0` (as `super::lanes` does).
    struct OnLane<F>(bool, Pin<Box<F>>);

    impl<F: Future> Future for OnLane<F> {
        type Output = F::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            let bulk = self.0;
            on_lane(bulk, || self.1.as_mut().poll(cx))
        }
    }

    /// Echo one line through `homed`, polled as a connection on lane `bulk`.
    async fn echo(homed: &mut Homed, bulk: bool, line: &[u8]) -> io::Result<Vec<u8>> {
        OnLane(
            bulk,
            Box::pin(async {
                homed.write_all(line).await?;
                let mut got = vec![0u8; line.len()];
                homed.read_exact(&mut got).await?;
                Ok(got)
            }),
        )
        .await
    }

    /// A socket accepted and registered on `runtime`, and its peer: a thread that
    /// echoes what it reads until the socket closes.
    fn accepted_on(runtime: &tokio::runtime::Runtime) -> (Homed, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            let mut copy = client.try_clone().unwrap();
            let _ = std::io::copy(&mut client, &mut copy);
        });
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let homed = runtime.block_on(async { Homed::new(TcpStream::from_std(server).unwrap()) });
        (homed, peer)
    }

    #[test]
    fn a_socket_moved_to_the_bulk_lane_no_longer_needs_the_control_lane() {
        let control = runtime("control");
        let bulk = runtime("bulk");
        let (mut homed, peer) = accepted_on(&control);
        control.block_on(async {
            assert_eq!(
                echo(&mut homed, false, b"on control\n").await.unwrap(),
                b"on control\n"
            );
        });
        bulk.block_on(async {
            assert_eq!(
                echo(&mut homed, true, b"moved\n").await.unwrap(),
                b"moved\n"
            );
        });
        // With the control lane's reactor gone, a socket still registered there fails.
        control.shutdown_timeout(std::time::Duration::from_secs(5));
        bulk.block_on(async {
            assert_eq!(
                echo(&mut homed, true, b"still there\n").await.unwrap(),
                b"still there\n"
            );
            homed.shutdown().await.unwrap();
        });
        drop(homed);
        peer.join().unwrap();
    }

    #[test]
    fn outside_a_lane_a_socket_stays_where_it_is() {
        let control = runtime("control");
        let other = runtime("other");
        let (mut homed, peer) = accepted_on(&control);
        control.shutdown_timeout(std::time::Duration::from_secs(5));
        // Not told of a lane: no re-registration, so the gone reactor shows.
        let error = other.block_on(async { homed.write_all(b"x").await.unwrap_err() });
        assert_ne!(error.kind(), io::ErrorKind::NotConnected, "{error}");
        drop(homed);
        peer.join().unwrap();
    }
}
