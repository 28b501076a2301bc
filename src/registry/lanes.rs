//! Two lanes for connections: small requests on the process's runtime, connections
//! sending large blobs on a runtime of their own, so a manifest GET never waits
//! behind blob writes on a shared worker.
//!
//! Why: on one runtime, a manifest request that arrives while 16 clients pull blobs
//! is queued behind every blob connection's turn at writing, even with turns bounded
//! ([`super::fair`]): 5–30 ms per manifest GET on two cores, measured
//! (`docs/benchmarks.md`, registry). The control lane's workers are idle most of the
//! time, so the kernel runs them as soon as a request arrives.
//!
//! 1. [`serve`] accepts connections and runs each with hyper's HTTP/1.1 server on the
//!    control lane (the runtime `serve` runs on). Every request carries the
//!    connection's [`Lane`] as an extension.
//! 2. A handler that starts a large body takes a [`BulkGuard`] from the [`Lane`]
//!    ([`Lane::bulk`]); the body holds it until it is dropped (sent or abandoned).
//! 3. After each poll of a connection, [`Driven`] compares where the connection runs
//!    with where it should (bulk while any guard is held) and, when they differ,
//!    moves the whole connection future to a task on the other lane. The new task
//!    polls it at once, which registers its wakers afresh (every `Pending` future
//!    must wake the waker of its latest poll), so no wake-up is lost by the move. The
//!    connection's socket moves its reactor registration along ([`super::homed`]),
//!    so the control lane is not woken by a bulk socket's readiness.
//! 4. Shutdown: stop accepting, ask every connection to finish the request in
//!    flight (hyper's graceful shutdown) and wait for all to end, for at most the
//!    grace period: a client that stopped reading mid-blob would otherwise hold the
//!    registry up for as long as it keeps its connection open. Connections still open
//!    then are closed. Then the bulk lane's threads stop.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{mpsc, watch};

/// Worker threads of the bulk lane.
const BULK_WORKERS: usize = 2;
/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Which lane a connection belongs on (the bulk lane while it sends a large body),
/// and how it sends blobs.
#[derive(Clone, Debug, Default)]
pub(super) struct Lane {
    bulk: Arc<AtomicUsize>,
    /// The connection sends blob windows with `sendfile` ([`super::zerocopy`]), so
    /// their bytes are never read through memory.
    pub(super) sendfile: bool,
}

impl Lane {
    fn new(sendfile: bool) -> Self {
        Self {
            bulk: Arc::default(),
            sendfile,
        }
    }

    /// Put the connection on the bulk lane until the guard is dropped.
    pub(super) fn bulk(&self) -> BulkGuard {
        self.bulk.fetch_add(1, Ordering::AcqRel);
        BulkGuard(self.bulk.clone())
    }

    fn is_bulk(&self) -> bool {
        self.bulk.load(Ordering::Acquire) > 0
    }
}

/// Keeps a connection on the bulk lane while it lives (see [`Lane::bulk`]).
#[derive(Debug)]
pub(super) struct BulkGuard(Arc<AtomicUsize>);

impl Drop for BulkGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `bytes` holding `guard` until they are dropped: a body's last window keeps its
/// connection on the bulk lane until hyper has written it, not only until the body
/// has handed it over. The bytes stay where they are (so `sendfile` still finds
/// their window).
pub(super) fn hold(bytes: Bytes, guard: &Arc<BulkGuard>) -> Bytes {
    struct Held(
        Bytes,
        #[allow(dead_code, reason = "held for its Drop")] Arc<BulkGuard>,
    );
    impl AsRef<[u8]> for Held {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    Bytes::from_owner(Held(bytes, guard.clone()))
}

/// The two runtimes a connection can run on.
struct Lanes {
    control: Handle,
    bulk: Handle,
}

/// The bulk lane's runtime, stopped without blocking when dropped (dropping a runtime
/// from async code would panic).
struct BulkRuntime(Option<Runtime>);

impl Drop for BulkRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

type Connection = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serve `router` on `listener`'s connections until `shutdown` resolves, then let
/// the requests in flight finish within `grace`. `sendfile`: the listener's
/// connections send blob windows with `sendfile`.
pub(super) async fn serve<L>(
    mut listener: L,
    sendfile: bool,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()>
where
    L: axum::serve::Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let bulk = BulkRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(BULK_WORKERS)
            .thread_name("registry-bulk")
            .enable_all()
            .build()?,
    ));
    let lanes = Arc::new(Lanes {
        control: Handle::current(),
        bulk: bulk
            .0
            .as_ref()
            .map(|r| r.handle().clone())
            .ok_or_else(|| io::Error::other("the registry's bulk runtime is gone"))?,
    });
    let (stop, stopping) = watch::channel(Stop::Serving);
    // Every connection holds a sender; `recv` answers `None` once all have ended.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let lane = Lane::new(sendfile);
        let connection = connection(
            io,
            router.clone(),
            lane.clone(),
            stopping.clone(),
            open.clone(),
        );
        tokio::spawn(Driven {
            connection: Some(connection),
            lane,
            on_bulk: false,
            lanes: lanes.clone(),
        });
    }
    drop(listener);
    let _ = stop.send(Stop::Finishing);
    drop(open);
    if tokio::time::timeout(grace, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            "registry: connections still open {} s after shutdown began; closing them",
            grace.as_secs()
        );
        let _ = stop.send(Stop::Closing);
        let _ = all_closed.recv().await;
    }
    drop(bulk);
    Ok(())
}

/// Where shutdown is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    Serving,
    /// Finish the request in flight, then close.
    Finishing,
    /// Close now: the grace period is over.
    Closing,
}

/// One connection served by hyper until it closes, or until shutdown lets its request
/// in flight finish.
fn connection<I>(
    io: I,
    router: Router,
    lane: Lane,
    stopping: watch::Receiver<Stop>,
    open: mpsc::Sender<()>,
) -> Connection
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(lane.clone());
        // A Router is always ready, so it may be called without `poll_ready`.
        tower_service::Service::call(&mut router.clone(), request)
    });
    Box::pin(async move {
        let _open = open;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        // An error means `serve` is gone: stop too.
        let reached = |stop: Stop| {
            let mut stopping = stopping.clone();
            async move {
                let _ = stopping.wait_for(|now| *now >= stop).await;
            }
        };
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = reached(Stop::Finishing) => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    result = conn.as_mut() => result,
                    () = reached(Stop::Closing) => {
                        tracing::debug!("registry: connection closed at the end of the shutdown grace period");
                        Ok(())
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!("registry: connection ended: {e}");
        }
    })
}

/// A connection on one lane; moves itself to the other lane when its [`Lane`] says so.
struct Driven {
    connection: Option<Connection>,
    lane: Lane,
    on_bulk: bool,
    lanes: Arc<Lanes>,
}

impl Future for Driven {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let on_bulk = self.on_bulk;
        let Some(connection) = self.connection.as_mut() else {
            return Poll::Ready(());
        };
        // The connection's socket registers with this lane's reactor ([`super::homed`]).
        if super::homed::on_lane(on_bulk, || connection.as_mut().poll(cx)).is_ready() {
            self.connection = None;
            return Poll::Ready(());
        }
        let bulk = self.lane.is_bulk();
        if bulk == self.on_bulk {
            return Poll::Pending;
        }
        let moved = Driven {
            connection: self.connection.take(),
            lane: self.lane.clone(),
            on_bulk: bulk,
            lanes: self.lanes.clone(),
        };
        let lane = if bulk {
            &self.lanes.bulk
        } else {
            &self.lanes.control
        };
        // A runtime that is shutting down drops the task, which closes the connection.
        drop(lane.spawn(moved));
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_bulk_while_any_guard_lives() {
        let lane = Lane::default();
        assert!(!lane.is_bulk());
        let first = lane.bulk();
        let second = lane.clone().bulk();
        assert!(lane.is_bulk());
        drop(first);
        assert!(lane.is_bulk());
        drop(second);
        assert!(!lane.is_bulk());
    }

    #[test]
    fn held_bytes_keep_the_connection_bulk_and_stay_where_they_are() {
        let lane = Lane::default();
        let guard = Arc::new(lane.bulk());
        let window = Bytes::from(vec![1u8, 2, 3]);
        let held = hold(window.clone(), &guard);
        assert_eq!(held.as_ptr(), window.as_ptr(), "no copy");
        drop(guard);
        assert!(lane.is_bulk(), "the last window is not written yet");
        drop(held);
        assert!(!lane.is_bulk());
    }

    /// A future that reports which runtime polls it, and finishes after `polls` polls.
    struct Recorder {
        seen: Arc<std::sync::Mutex<Vec<String>>>,
        /// The lane each poll's sockets were told ([`super::super::homed`]).
        lanes_told: Arc<std::sync::Mutex<Vec<Option<bool>>>>,
        lane: Lane,
        guard: Option<BulkGuard>,
        polls: usize,
    }

    impl Future for Recorder {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let name = std::thread::current().name().unwrap_or("").to_string();
            self.seen.lock().unwrap().push(name);
            self.lanes_told
                .lock()
                .unwrap()
                .push(super::super::homed::current_lane());
            self.polls -= 1;
            match self.polls {
                0 => return Poll::Ready(()),
                // Second poll: start a "large body"; fourth: finish it.
                3 => self.guard = Some(self.lane.bulk()),
                1 => self.guard = None,
                _ => {}
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_connection_moves_to_the_bulk_lane_and_back() {
        let control = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("control")
            .enable_all()
            .build()
            .unwrap();
        let bulk = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bulk")
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let lane = Lane::default();
        let (done, finished) = std::sync::mpsc::channel();
        let lanes_told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder = Recorder {
            seen: seen.clone(),
            lanes_told: lanes_told.clone(),
            lane: lane.clone(),
            guard: None,
            polls: 5,
        };
        let connection: Connection = Box::pin(async move {
            recorder.await;
            done.send(()).unwrap();
        });
        control.spawn(Driven {
            connection: Some(connection),
            lane,
            on_bulk: false,
            lanes: Arc::new(Lanes {
                control: control.handle().clone(),
                bulk: bulk.handle().clone(),
            }),
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the connection finished");
        // Polls 1-2 on control (the guard is taken in poll 2), 3-4 on bulk (dropped in
        // poll 4), 5 back on control.
        assert_eq!(
            *seen.lock().unwrap(),
            ["control", "control", "bulk", "bulk", "control"]
        );
        // Each poll tells the connection's sockets the lane it runs on.
        let (control, bulk) = (Some(false), Some(true));
        assert_eq!(
            *lanes_told.lock().unwrap(),
            [control, control, bulk, bulk, control]
        );
    }
}
