//! The model catalog: live listings from every provider, fetched concurrently, cached per provider
//! (moka, TTL), with the last good list kept when a provider is down; plus the configured aliases.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::{BodyExt, Limited};
use serde::Serialize;

use super::error::{Error, UpstreamError};
use super::state::AppState;
use crate::domain::config::{Config, ModelPattern, ProviderKind};
use crate::domain::principal::Principal;
use crate::upstream::provider::Upstream;

/// Anthropic's largest page size.
const ANTHROPIC_PAGE_LIMIT: u32 = 1000;
/// Safety cap on Anthropic pagination.
const MAX_PAGES: usize = 50;
const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;

/// One entry of the OpenAI model list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ModelEntry {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: String,
}

/// Per-provider listing cache.
pub struct ModelsCache {
    cache: moka::future::Cache<String, Arc<Vec<ModelEntry>>>,
    last_good: DashMap<String, Arc<Vec<ModelEntry>>>,
    fetch_timeout: Duration,
}

impl ModelsCache {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration, fetch_timeout: Duration) -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .max_capacity(1024)
                .build(),
            last_good: DashMap::new(),
            fetch_timeout,
        }
    }

    /// One provider's models: cached, else fetched (concurrent callers share one fetch); on failure the last
    /// good list, or nothing.
    async fn provider_models(
        &self,
        upstream: &Arc<Upstream>,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> Arc<Vec<ModelEntry>> {
        let id = upstream.config.id.clone();
        if let Some(hit) = self.cache.get(&id).await {
            if let Some(m) = metrics {
                m.models_cache.with_label_values(&["hit"]).inc();
            }
            return hit;
        }
        let timeout = self.fetch_timeout;
        let fetched = self
            .cache
            .try_get_with(id.clone(), async {
                match tokio::time::timeout(timeout, fetch(upstream)).await {
                    Ok(Ok(list)) => Ok(Arc::new(list)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                }
            })
            .await;
        if let Some(m) = metrics {
            m.models_cache.with_label_values(&[if fetched.is_ok() { "refresh" } else { "refresh_error" }]).inc();
        }
        match fetched {
            Ok(list) => {
                self.last_good.insert(id, list.clone());
                list
            }
            Err(reason) => {
                tracing::warn!(provider = %id, reason = %reason, "model listing failed; serving the last good list");
                self.last_good.get(&id).map(|l| l.clone()).unwrap_or_default()
            }
        }
    }

    /// Every enabled provider's models plus the configured aliases, sorted and de-duplicated.
    pub async fn all(&self, state: &AppState) -> Vec<ModelEntry> {
        let mut upstreams: Vec<_> = state.upstreams.values().cloned().collect();
        upstreams.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        let metrics = state.sink.as_ref().map(|s| s.metrics().as_ref());
        let lists = futures_util::future::join_all(upstreams.iter().map(|u| self.provider_models(u, metrics))).await;
        let mut out: Vec<ModelEntry> = lists.iter().flat_map(|l| l.iter().cloned()).collect();
        out.extend(aliases(&state.config));
        out.dedup_by(|a, b| a.id == b.id);
        out
    }
}

/// Exact-name routes with a target model are aliases clients can list.
fn aliases(config: &Config) -> Vec<ModelEntry> {
    config
        .routes
        .iter()
        .filter_map(|r| match &r.pattern {
            ModelPattern::Exact(name) => {
                Some(ModelEntry { id: name.clone(), object: "model", created: 0, owned_by: "gateway".into() })
            }
            ModelPattern::Glob(_) => None,
        })
        .collect()
}

async fn get(upstream: &Upstream, path: &str) -> Result<Bytes, UpstreamError> {
    let resp = upstream.send(upstream.get_request(path)?).await?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_LISTING_BYTES)
        .collect()
        .await
        .map_err(|_| UpstreamError::Transport)?
        .to_bytes();
    if !status.is_success() {
        return Err(UpstreamError::Protocol(format!("listing answered HTTP {}", status.as_u16()).into()));
    }
    Ok(body)
}

fn protocol(e: translators::TranslateError) -> UpstreamError {
    UpstreamError::Protocol(e.to_string().into())
}

/// Fetches one provider's listing from its own API.
async fn fetch(upstream: &Upstream) -> Result<Vec<ModelEntry>, UpstreamError> {
    let id = &upstream.config.id;
    let entry = |model: &str, created: u64, owned_by: &str| ModelEntry {
        id: format!("{id}/{model}"),
        object: "model",
        created,
        owned_by: owned_by.to_owned(),
    };
    let mut out = Vec::new();
    match upstream.config.kind {
        ProviderKind::OpenAi => {
            let body = get(upstream, "/models").await?;
            for m in translators::openai::passthrough::parse_models(&body).map_err(protocol)? {
                out.push(entry(&m.id, m.created, if m.owned_by.is_empty() { id } else { &m.owned_by }));
            }
        }
        ProviderKind::Anthropic => {
            let mut after: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let mut path = format!("/v1/models?limit={ANTHROPIC_PAGE_LIMIT}");
                if let Some(a) = &after {
                    path.push_str("&after_id=");
                    path.push_str(
                        &percent_encoding::utf8_percent_encode(a, percent_encoding::NON_ALPHANUMERIC).to_string(),
                    );
                }
                let page = translators::anthropic::parse_models_page(&get(upstream, &path).await?).map_err(protocol)?;
                for m in &page.models {
                    out.push(entry(&m.id, m.created, id));
                }
                match (page.has_more, page.last_id) {
                    (true, Some(last)) => after = Some(last),
                    _ => break,
                }
            }
        }
        ProviderKind::Ollama => {
            let body = get(upstream, "/api/tags").await?;
            for m in translators::ollama::parse_tags(&body).map_err(protocol)? {
                out.push(entry(&m.id, m.created, id));
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Every model the caller can use: the live catalog of every enabled provider, plus the aliases.
/// Any authenticated principal may read it.
pub async fn list(state: &AppState, _principal: &Principal) -> Vec<ModelEntry> {
    state.models.all(state).await
}

/// One model by id (`provider/model`, or a bare name resolved through the routes).
///
/// # Errors
/// 404 `model_not_found` when no listed model matches.
pub async fn retrieve(state: &AppState, principal: &Principal, id: &str) -> Result<ModelEntry, Error> {
    let all = list(state, principal).await;
    let wanted = match all.iter().find(|m| m.id == id) {
        Some(m) => Some(m),
        None => crate::domain::routing::resolve(&state.config, id).ok().and_then(|r| {
            let full = format!("{}/{}", r.primary().provider.id, r.primary().upstream_model);
            all.iter().find(|m| m.id == full)
        }),
    };
    wanted.cloned().ok_or_else(|| Error::Route(crate::domain::routing::RouteError::UnknownModel(id.to_owned())))
}

/// One row of the model catalog with its price and health, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// `provider/model` (or an alias).
    pub id: String,
    /// The provider id, `None` for an alias.
    pub provider: Option<String>,
    /// Current price, `None` when unpriced (refused unless a fallback price is configured).
    pub price: Option<crate::domain::pricing::Price>,
    /// The circuit breaker of this deployment and model.
    pub breaker: crate::upstream::health::BreakerState,
}

/// The live catalog with prices and breaker states: what [`list`] shows, for any principal.
pub async fn catalog(state: &AppState, principal: &Principal) -> Vec<CatalogEntry> {
    let all = list(state, principal).await;
    all.into_iter()
        .map(|m| {
            let split = m.id.split_once('/').and_then(|(p, model)| state.upstream(p).map(|u| (u, model)));
            match split {
                Some((u, model)) => CatalogEntry {
                    price: state.sink.as_ref().and_then(|s| s.price_of(&u.config.id, u.config.kind, model)),
                    breaker: state.breakers.state(&m.id),
                    provider: Some(u.config.id.clone()),
                    id: m.id,
                },
                None => CatalogEntry {
                    id: m.id,
                    provider: None,
                    price: None,
                    breaker: crate::upstream::health::BreakerState::Closed,
                },
            }
        })
        .collect()
}

/// The current price of `model` on provider `provider_id` (`None`: unpriced or unknown provider).
/// Prices are not secret: any principal may read them.
pub fn price(state: &AppState, provider_id: &str, model: &str) -> Option<crate::domain::pricing::Price> {
    let u = state.upstream(provider_id)?;
    state.sink.as_ref()?.price_of(&u.config.id, u.config.kind, model)
}
pub use crate::upstream::health::BreakerState;
