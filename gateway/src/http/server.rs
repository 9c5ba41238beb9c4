//! The accept loop: HTTP/1.1 keep-alive and HTTP/2 (h2c, prior knowledge) on one listener, with
//! `TCP_NODELAY` on every accepted socket, idle-connection limits and graceful shutdown.
//!
//! Every connection is driven by its own task, which closes it gracefully (HTTP/1: at once when idle;
//! HTTP/2: GOAWAY) when it has had no request in flight for `server.idle_timeout_secs`, or when the
//! gateway shuts down. That covers what hyper's own timers do not: a client that connects and never
//! sends a byte (the HTTP/1-or-2 sniffing waits for the first bytes with no timer), and an h2c
//! connection kept open by a client that answers pings but sends nothing.

//!
//! Shutdown, in order (issue 11, item 2: every request that reached the meter is recorded):
//! 1. the shutdown token stops the accept loop; open connections are asked to finish (HTTP/1.1
//!    keep-alive off, HTTP/2 GOAWAY) and get `grace`;
//! 2. when `grace` is over, `AppState::cut_streams` fires: every open stream writes one
//!    OpenAI-shaped error event (no `[DONE]`), records itself as `partial` with the usage so far
//!    and ends; the connections get [`CUT_FLUSH`] to deliver that event;
//! 3. the remaining connections are dropped, which drops their handlers and bodies, whose meters
//!    record the request as `cancelled`; `run` returns only when every connection task (and every
//!    HTTP/2 stream task) has ended, so all those records are in the ledger's queue before the
//!    wiring stops the ledger writer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::body::Body;
use super::routes;
use crate::domain::config::ServerSettings;
use crate::services::state::AppState;

/// After the grace period, how long cut streams get to deliver their error event and end.
pub const CUT_FLUSH: Duration = Duration::from_secs(1);
/// Upper bound on waiting for dropped connections to finish unwinding (their meters record then).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Runs hyper's per-connection background work (HTTP/2 streams) on the server's tracker, so
/// shutdown can wait until every response body has been dropped and metered.
#[derive(Clone)]
struct TrackedExecutor(TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// Serves until `shutdown` is cancelled, then stops accepting and waits up to `grace` for open
/// connections (in-flight requests and streams) to finish.
pub async fn run(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken, grace: Duration) {
    run_with(listener, state, routes::Mounts::default(), shutdown, grace).await;
}

/// [`run`] with front doors mounted beside the REST routes (GraphQL), by the wiring.
pub async fn run_with(
    listener: TcpListener,
    state: Arc<AppState>,
    mounts: routes::Mounts,
    shutdown: CancellationToken,
    grace: Duration,
) {
    accept_loop(listener, state, mounts, shutdown, grace, false).await;
}

/// The operations listener: `/metrics`, `/healthz` and `/readyz` only.
pub async fn run_ops(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken, grace: Duration) {
    accept_loop(listener, state, routes::Mounts::default(), shutdown, grace, true).await;
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    mounts: routes::Mounts,
    shutdown: CancellationToken,
    grace: Duration,
    ops_only: bool,
) {
    let limits: ServerSettings = state.config.server;
    // Connection tasks and HTTP/2 stream tasks; `kill` drops the connections still open at the end.
    let connections = TaskTracker::new();
    let kill = CancellationToken::new();
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let mut h2 = http2::Builder::new(TrackedExecutor(connections.clone()));
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        .keep_alive_interval(limits.h2_keep_alive_interval)
        .keep_alive_timeout(limits.h2_keep_alive_timeout);
    let builders = Arc::new((h1, h2));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                let state = state.clone();
                let mounts = mounts.clone();
                let activity = Arc::new(Activity::new());
                let tracked = activity.clone();
                let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    // The client address, for per-address limits (dashboard sign-in).
                    req.extensions_mut().insert(peer);
                    let state = state.clone();
                    let mounts = mounts.clone();
                    // Taken before the request is served and released when its response body is
                    // dropped: the connection is not idle while a request or a stream is open.
                    let guard = InFlight::begin(&tracked);
                    // Boxed: hyper keeps one allocation the size of this future per connection for
                    // the connection's whole life, and a handler's state machine is ~8.5 KB (bench:
                    // 10k idle streams). Boxed, that memory is freed as soon as the response head is
                    // ready and the connection keeps a pointer.
                    Box::pin(async move {
                        let resp = if ops_only {
                            routes::dispatch_ops(state, req).await
                        } else {
                            routes::dispatch(state, &mounts, req).await
                        };
                        resp.map(|r| r.map(|inner| TrackedBody { inner, _guard: guard }))
                    })
                });
                let shutdown = shutdown.clone();
                let kill = kill.clone();
                let idle = limits.idle_timeout;
                let builders = builders.clone();
                connections.spawn(async move {
                    // A client that connects and never sends a byte is closed by the idle timer.
                    let protocol = tokio::select! {
                        p = sniff(&stream) => p,
                        () = activity.idle_for(idle) => return,
                        () = shutdown.cancelled() => return,
                    };
                    let (h1, h2) = &*builders;
                    match protocol {
                        Ok(Protocol::Http2) => {
                            let conn = h2.serve_connection(TokioIo::new(stream), service);
                            drive(conn, &activity, idle, &shutdown, &kill).await;
                        }
                        Ok(Protocol::Http1) => {
                            let conn = h1.serve_connection(TokioIo::new(stream), service).with_upgrades();
                            drive(conn, &activity, idle, &shutdown, &kill).await;
                        }
                        Err(e) => tracing::trace!(error = %e, "connection closed before its first request"),
                    }
                });
            }
            () = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    connections.close();
    let drained = connections.wait();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs(), "Grace period over; ending open streams with an error event");
            if !ops_only {
                state.cut_streams.cut();
            }
            tokio::select! {
                () = &mut drained => tracing::info!("all connections drained after the cut"),
                () = tokio::time::sleep(CUT_FLUSH) => tracing::warn!("Closing the remaining connections"),
            }
        }
    }
    kill.cancel();
    if tokio::time::timeout(CLOSE_WAIT, connections.wait()).await.is_err() {
        tracing::error!(
            tasks = connections.len(),
            "Connections still unwinding after shutdown; their records may reach the ledger late (journal)"
        );
    }
}

/// The HTTP/2 client preface (RFC 9113 §3.4): h2c with prior knowledge starts with it.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Tells HTTP/1 from h2c by peeking at the first bytes, without consuming them.
///
/// hyper-util's `auto` builder reads those bytes itself and hands them back to the HTTP/1 parser as
/// a separate 24-byte first read; the parser then grows its 8 KB read buffer to 16 KB for the rest
/// of the request and keeps it for the connection's life (10k idle streams: 8 KB each). Peeking
/// leaves the request in the socket, so the parser's first read takes all of it.
async fn sniff(stream: &TcpStream) -> std::io::Result<Protocol> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        // A strict prefix of the preface: more bytes are on their way. `peek` answers at once while
        // any byte is buffered, so wait a little instead of spinning (rare: h2c clients send the
        // preface in one segment); the caller's idle timer bounds the wait.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A served connection that can be asked to finish (HTTP/1: after the response in flight; HTTP/2:
/// GOAWAY).
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, B, E> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// Serves one connection until it ends, it has been idle for `idle`, or the gateway shuts down;
/// in the last two cases it is asked to finish, and dropped when `kill` fires.
async fn drive<C: Graceful>(
    conn: C,
    activity: &Activity,
    idle: Duration,
    shutdown: &CancellationToken,
    kill: &CancellationToken,
) {
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = activity.idle_for(idle) => {
            tracing::debug!(idle_secs = idle.as_secs(), "closing an idle connection");
            None
        }
        () = shutdown.cancelled() => None,
    };
    let result = match result {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                // Dropping the connection drops its handlers and bodies: their meters record.
                () = kill.cancelled() => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// One connection's requests in flight and when the last one ended.
struct Activity {
    origin: Instant,
    inflight: AtomicUsize,
    /// Milliseconds after `origin` when the connection last became idle.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { origin: Instant::now(), inflight: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0) }
    }

    fn idle_since(&self) -> Instant {
        self.origin + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    /// Resolves once the connection has had no request in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let now = Instant::now();
            let due = self.idle_since() + idle;
            let busy = self.inflight.load(Ordering::Acquire) > 0;
            if !busy && now >= due {
                return;
            }
            // Busy: look again in `idle` (the end of the request moves `idle_since` forward).
            tokio::time::sleep_until(if busy || now >= due { now + idle } else { due }).await;
        }
    }
}

/// A request in flight on its connection, from the service call until its response body is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.inflight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::Release);
        a.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until hyper drops it.
struct TrackedBody {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
