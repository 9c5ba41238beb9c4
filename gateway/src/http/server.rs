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
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
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
    accept_loop(listener, state, shutdown, grace, false).await;
}

/// The operations listener: `/metrics`, `/healthz` and `/readyz` only.
pub async fn run_ops(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken, grace: Duration) {
    accept_loop(listener, state, shutdown, grace, true).await;
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    grace: Duration,
    ops_only: bool,
) {
    let limits: ServerSettings = state.config.server;
    // Connection tasks and HTTP/2 stream tasks; `kill` drops the connections still open at the end.
    let connections = TaskTracker::new();
    let kill = CancellationToken::new();
    let mut builder = auto::Builder::new(TrackedExecutor(connections.clone()));
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        .keep_alive_interval(limits.h2_keep_alive_interval)
        .keep_alive_timeout(limits.h2_keep_alive_timeout);
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
                let activity = Arc::new(Activity::new());
                let tracked = activity.clone();
                let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    // The client address, for per-address limits (dashboard sign-in).
                    req.extensions_mut().insert(peer);
                    let state = state.clone();
                    // Taken before the request is served and released when its response body is
                    // dropped: the connection is not idle while a request or a stream is open.
                    let guard = InFlight::begin(&tracked);
                    async move {
                        let resp = if ops_only {
                            routes::dispatch_ops(state, req).await
                        } else {
                            routes::dispatch(state, req).await
                        };
                        resp.map(|r| r.map(|inner| TrackedBody { inner, _guard: guard }))
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let shutdown = shutdown.clone();
                let kill = kill.clone();
                let idle = limits.idle_timeout;
                connections.spawn(async move {
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
