//! The accept loop: HTTP/1.1 keep-alive and HTTP/2 (h2c, prior knowledge) on one listener, with
//! `TCP_NODELAY` on every accepted socket and graceful shutdown.
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
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::routes;
use crate::services::state::AppState;

/// Slowloris guard: a client must finish sending its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
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
    // Connection tasks and HTTP/2 stream tasks; `kill` drops the connections still open at the end.
    let conns = TaskTracker::new();
    let kill = CancellationToken::new();
    let mut builder = auto::Builder::new(TrackedExecutor(conns.clone()));
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(1024);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
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
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move {
                        if ops_only {
                            routes::dispatch_ops(state, req).await
                        } else {
                            routes::dispatch(state, req).await
                        }
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                let kill = kill.clone();
                conns.spawn(async move {
                    tokio::select! {
                        res = conn => if let Err(e) = res {
                            tracing::trace!(error = %e, "connection ended with an error");
                        },
                        // Dropping the connection drops its handlers and bodies: their meters record.
                        () = kill.cancelled() => {}
                    }
                });
            }
            () = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    let drained = graceful.shutdown();
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
    conns.close();
    if tokio::time::timeout(CLOSE_WAIT, conns.wait()).await.is_err() {
        tracing::error!(
            tasks = conns.len(),
            "Connections still unwinding after shutdown; their records may reach the ledger late (journal)"
        );
    }
}
