//! Shared, immutable-per-process state handed to every request.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::http::models::ModelsCache;
use crate::sink::Sink;
use crate::upstream::provider::Upstream;

/// Everything a handler needs. Built once at start; cheap to share behind `Arc`.
pub struct AppState {
    pub config: Arc<Config>,
    /// Enabled providers by id.
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub models: ModelsCache,
    /// Circuit breakers per provider deployment.
    pub breakers: crate::upstream::health::Breakers,
    pub auth: Authenticator,
    /// Tenant and key limits (admission before the upstream, settlement at the end).
    pub limiter: Arc<crate::limits::Limiter>,
    /// Where finished requests are recorded (log line, ledger, metrics).
    pub sink: Option<Arc<Sink>>,
    /// Cancelled when shutdown begins: readiness turns false, new work is refused.
    pub shutdown: CancellationToken,
    /// Background tasks that must finish before the process exits.
    pub tasks: TaskTracker,
}

impl AppState {
    /// The prepared upstream for a provider id.
    pub fn upstream(&self, id: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(id)
    }
}
