//! AI Aggregator: an OpenAI-compatible gateway in front of OpenAI, Anthropic and Ollama.
//!
//! Layers, each importing only from the ones below it (`docs/ARCHITECTURE.md`; checked by
//! `gateway/tests/layers.rs`):
//!
//! ```text
//! http (front doors)  →  services  →  stores, upstream  →  metrics  →  domain
//! ```
//!
//! This file is the wiring: `serve` builds the stores, the upstream clients and the services once,
//! then runs the front doors on a listener the caller binds, so tests run the gateway in-process on
//! `127.0.0.1:0`. The binary (`main.rs`) only parses flags, loads config, sets up logging and signals.

pub mod dashboard;
pub mod domain;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod services;
pub mod stores;
pub mod upstream;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use domain::config::{Config, EnvSource, MapEnv, ProcessEnv};
pub use services::Error;

use services::{auth, sink, state};
use stores::{ledger, limiter, pricing};

/// Why the gateway could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("provider `{provider}`: {message}")]
    Provider { provider: String, message: String },
    #[error("refusing to listen on non-loopback address {0} without tenants (open mode); configure tenants or bind to 127.0.0.1")]
    OpenModeNotLoopback(std::net::SocketAddr),
    #[error("pricing: {0}")]
    Pricing(#[from] pricing::PricingError),
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::LedgerError),
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    #[error("access control: {0}")]
    Access(String),
}

/// Runs the gateway on `listener` until `shutdown` is cancelled; returns after in-flight requests have
/// drained (up to the configured grace period) and background work has finished.
pub async fn serve(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), StartError> {
    serve_with_admin(config, listener, None, shutdown).await
}

/// Like [`serve`], plus an optional operations listener that serves only `/metrics`, `/healthz` and
/// `/readyz` (`--admin-listen`), so metrics can stay off the public port.
pub async fn serve_with_admin(
    config: Config,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let config = Arc::new(config);
    let local = listener.local_addr()?;
    // Open mode (no tenant, no JWT) is for loopback only. On another address the admin key must be set:
    // tenants are then created through the admin API, and requests are refused until one exists.
    let open_allowed = local.ip().is_loopback();
    if config.tenants.is_empty() && config.jwt.is_none() {
        match (open_allowed, config.admin_api_key.is_some()) {
            (true, _) => tracing::warn!(
                "no tenants configured: open mode (loopback only, usage metered as `anonymous`) until a tenant is created through the admin API"
            ),
            (false, true) => tracing::warn!(
                "no tenants configured: requests are refused until a tenant is created through the admin API"
            ),
            (false, false) => return Err(StartError::OpenModeNotLoopback(local)),
        }
    }
    let Built { state, ledger_stop, writer_task } = build(config.clone(), open_allowed, shutdown.clone()).await?;
    tracing::info!(listen = %local, "listening");
    let ops = admin_listener.map(|l| {
        tracing::info!(listen = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "operations listener ready");
        tokio::spawn(http::server::run_ops(l, state.clone(), shutdown.clone(), config.shutdown_grace))
    });
    http::server::run_with(listener, state.clone(), mounts(&config), shutdown, config.shutdown_grace).await;
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    state.tasks.close();
    state.tasks.wait().await;
    drop(state);
    ledger_stop.cancel();
    if writer_task.await.is_err() {
        tracing::error!("the ledger writer panicked; unflushed records are in the journal");
    }
    tracing::info!("ledger flushed; bye");
    Ok(())
}

/// The front doors mounted into the REST dispatch: GraphQL at `/graphql` (`http` and `graphql` are
/// both layer 4 and do not import each other; the wiring joins them).
fn mounts(config: &Config) -> http::routes::Mounts {
    let door = Arc::new(graphql::Door::new(&config.graphql));
    let mount: http::routes::Mount = Arc::new(move |state, auth, req| {
        let door = door.clone();
        Box::pin(async move { door.handle(state, auth, req).await })
    });
    http::routes::Mounts { graphql: Some(mount) }
}

/// The services and the background work that must stop after them.
pub(crate) struct Built {
    pub(crate) state: Arc<state::AppState>,
    /// Stops the ledger writer (after every connection has drained).
    pub(crate) ledger_stop: CancellationToken,
    pub(crate) writer_task: tokio::task::JoinHandle<()>,
}

/// Builds the stores, the upstream clients and the services once, for every front door.
pub(crate) async fn build(
    config: Arc<Config>,
    open_allowed: bool,
    shutdown: CancellationToken,
) -> Result<Built, StartError> {
    let mut upstreams = HashMap::new();
    for provider in &config.providers {
        let upstream = upstream::provider::Upstream::new(provider.clone())
            .map_err(|message| StartError::Provider { provider: provider.id.clone(), message })?;
        upstreams.insert(provider.id.clone(), Arc::new(upstream));
    }
    let live: Vec<_> = config.providers.iter().map(|p| format!("{} ({})", p.id, p.kind.as_str())).collect();
    tracing::info!(providers = %live.join(", "), disabled = %config.disabled_providers.join(", "), "gateway ready");

    let tasks = TaskTracker::new();
    let pricing = match &config.pricing_file {
        Some(path) => {
            let pricing = pricing::Pricing::load(path)?;
            tracing::info!(file = %path.display(), entries = pricing.current().len(), "pricing loaded over the built-in prices");
            tasks.spawn(pricing.watch(shutdown.clone()));
            pricing
        }
        None => {
            let pricing = pricing::Pricing::builtin()?;
            tracing::info!(entries = pricing.current().len(), "no pricing file: built-in prices");
            pricing
        }
    };
    log_unpriced_routes(&config, &pricing.current());
    let ledger_cfg = ledger::LedgerConfig {
        database_url: config.ledger.database_url.as_ref().map(|u| u.expose().to_owned()),
        data_dir: config.ledger.data_dir.clone(),
        queue_capacity: config.ledger.queue_capacity,
        batch_rows: config.ledger.batch_rows,
        batch_interval: config.ledger.batch_interval,
    };
    let store = if ledger_cfg.database_url.is_some() { "postgres" } else { "embedded sqlite" };
    let database_url = ledger_cfg.database_url.clone();
    let (ledger, writer) = ledger::start(ledger_cfg).await?;
    tracing::info!(store, data_dir = %config.ledger.data_dir.display(), "ledger ready");
    // The writer outlives the HTTP server: it is stopped only after every connection has drained.
    let ledger_stop = CancellationToken::new();
    let writer_task = tokio::spawn(writer.run(ledger_stop.clone()));

    let metrics = metrics::Metrics::new(config.metrics_tenant_label);
    let store = stores::tenants::TenantStore::open(database_url.as_deref(), &config.ledger.data_dir)
        .await
        .map_err(|e| StartError::Access(e.to_string()))?;
    let mut auth = auth::Authenticator::new(&config.tenants, config.admin_api_key.as_ref().map(|k| k.expose()))
        .with_defaults(config.limits.defaults)
        .with_store(auth::KeyCache::new(Arc::new(store), config.limits.key_cache_ttl))
        .with_open_allowed(open_allowed);
    if let Some(jwt) = &config.jwt {
        let verifier = auth::JwtVerifier::new(jwt.clone()).map_err(StartError::Access)?;
        tasks.spawn(verifier.clone().watch(shutdown.clone()));
        auth = auth.with_jwt(verifier);
    }
    let limiter = limiter::Limiter::new(
        config.limits.limiter.clone(),
        Some(metrics.clone()),
        Some(ledger.clone()),
        tasks.clone(),
        shutdown.clone(),
    )
    .map_err(StartError::Access)?;
    limiter.check_redis().await;

    let batch_store = stores::batches::BatchStore::open(database_url.as_deref(), &config.ledger.data_dir)
        .await
        .map_err(|e| StartError::Access(e.to_string()))?;
    let batches = Arc::new(services::batches::Batches::new(
        Arc::new(batch_store),
        config.batches.clone(),
        Some(metrics::batches::BatchMetrics::new(&metrics)),
    ));
    let state = Arc::new(state::AppState {
        models: services::models::ModelsCache::new(config.models_cache_ttl, config.models_fetch_timeout),
        upstreams,
        breakers: upstream::health::Breakers::new(config.circuit_breaker),
        auth,
        limiter,
        sink: Some(Arc::new(sink::Sink::new(Some(pricing), Some(ledger), metrics).with_unpriced(config.unpriced))),
        shutdown: shutdown.clone(),
        cut_streams: services::stream::StreamCut::default(),
        sessions: services::sessions::Sessions::new(config.dashboard.session_secret.as_ref()),
        dashboard: Some(dashboard_door),
        tasks,
        config: config.clone(),
        batches: Some(batches),
    });
    if config.batches.worker {
        state.tasks.spawn(worker::run(state.clone()));
    }
    Ok(Built { state, ledger_stop, writer_task })
}

/// Warns about the routable models no price matches: exact-name routes and aliases (globs and
/// `provider/model` names can only be checked per request, which refuses them unless a fallback is set).
fn log_unpriced_routes(config: &Config, table: &domain::pricing::PricingTable) {
    let mut unpriced: Vec<String> = Vec::new();
    for rule in &config.routes {
        for t in &rule.targets {
            let model = match (&t.model, &rule.pattern) {
                (Some(m), _) => m.as_str(),
                (None, domain::config::ModelPattern::Exact(name)) => name.as_str(),
                (None, domain::config::ModelPattern::Glob(_)) => continue,
            };
            let Some(provider) = config.provider(&t.provider) else { continue };
            if table.lookup_for(&provider.id, provider.kind.as_str(), model).is_none() {
                unpriced.push(format!("`{}` ({}/{model})", rule.pattern.as_str(), provider.id));
            }
        }
    }
    if unpriced.is_empty() {
        return;
    }
    let policy = match config.unpriced {
        domain::pricing::UnpricedPolicy::Refuse => "refused with 403 `model_price_missing`",
        domain::pricing::UnpricedPolicy::Fallback(_) => "charged the `pricing.fallback` price",
    };
    tracing::warn!(models = %unpriced.join(", "), policy, "Routable models without a price: add them to the pricing file");
}

/// The dashboard as the router's door for `/dashboard…`.
fn dashboard_door(
    state: Arc<state::AppState>,
    req: ::http::Request<hyper::body::Incoming>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ::http::Response<dashboard::Body>> + Send>> {
    Box::pin(async move { dashboard::handle(&state, req).await })
}
