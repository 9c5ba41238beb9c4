//! The services' shared state: stores, upstream clients, caches and the shutdown signal, built once by
//! the wiring (`lib.rs`) and handed to every front door behind `Arc`.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::Authenticator;
use super::models::ModelsCache;
use super::sink::Sink;
use crate::domain::config::Config;
use crate::upstream::provider::Upstream;

/// A front door the HTTP router hands whole paths to (the dashboard, under `/dashboard`): installed
/// by the wiring, so the two doors at layer 4 never import each other.
pub type Door = fn(
    Arc<AppState>,
    http::Request<hyper::body::Incoming>,
) -> std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = http::Response<
                    http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::convert::Infallible>,
                >,
            > + Send,
    >,
>;

/// Everything a service needs. Built once at start; cheap to share behind `Arc`.
pub struct AppState {
    pub config: Arc<Config>,
    /// Enabled providers by id.
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub models: ModelsCache,
    /// Circuit breakers per provider deployment.
    pub breakers: crate::upstream::health::Breakers,
    pub auth: Authenticator,
    /// Tenant and key limits (admission before the upstream, settlement at the end).
    pub limiter: Arc<crate::stores::limiter::Limiter>,
    /// Where finished requests are recorded (log line, ledger, metrics).
    pub sink: Option<Arc<Sink>>,
    /// Cancelled when shutdown begins: readiness turns false, new work is refused.
    pub shutdown: CancellationToken,
    /// Fired by the server when the shutdown grace period is over: every open stream ends with
    /// an in-band error event and records its usage so far (issue 11, item 2), before the
    /// remaining connections are closed and the ledger writer drains.
    pub cut_streams: super::stream::StreamCut,
    /// The dashboard door for `/dashboard…` paths (`None`: not served).
    pub dashboard: Option<Door>,
    /// Dashboard browser sessions (in memory) and the sign-in limiter.
    pub sessions: super::sessions::Sessions,
    /// Background tasks that must finish before the process exits.
    pub tasks: TaskTracker,
    /// Files, batches and their queue (`None` only in tests that build a bare state).
    pub batches: Option<Arc<super::batches::Batches>>,
}

impl AppState {
    /// The prepared upstream for a provider id.
    pub fn upstream(&self, id: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(id)
    }
}
