//! Where finished requests go: priced, handed to the ledger without waiting, and logged once.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::config::ProviderKind;
use crate::domain::pricing::{cost_nano_usd, Price, UnpricedPolicy};
use crate::domain::text::Escaped;
use crate::metrics::Metrics;
use crate::services::metering::{Outcome, RequestInfo, Tokens};
use crate::stores::ledger::{LedgerHandle, LedgerRecord, RecordStatus};
use crate::stores::pricing::Pricing;

/// A finished request, borrowed from its meter.
#[derive(Debug)]
pub struct Completed<'a> {
    pub info: &'a RequestInfo,
    pub ts_unix_ms: i64,
    pub outcome: Outcome,
    pub tokens: Tokens,
    pub http_status: u16,
    pub latency: Duration,
    pub ttft: Option<Duration>,
    pub attempts: u32,
}

/// Receives every finished request.
pub struct Sink {
    pricing: Option<Pricing>,
    unpriced: UnpricedPolicy,
    ledger: Option<LedgerHandle>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("pricing", &self.pricing.is_some())
            .field("ledger", &self.ledger.is_some())
            .finish()
    }
}

impl Sink {
    /// A sink that prices with `pricing` and records into `ledger`, either optional.
    pub fn new(pricing: Option<Pricing>, ledger: Option<LedgerHandle>, metrics: Arc<Metrics>) -> Self {
        Self { pricing, unpriced: UnpricedPolicy::Refuse, ledger, metrics }
    }

    /// Sets what unpriced models cost: refused before admission (the default), or a fallback price.
    pub fn with_unpriced(mut self, policy: UnpricedPolicy) -> Self {
        self.unpriced = policy;
        self
    }

    /// Whether a request for `model` on this deployment may be served: `false` when no price matches and
    /// the policy refuses unpriced models (issue 11, item 5). Always true without a pricing table.
    pub fn is_priced(&self, provider_id: &str, kind: ProviderKind, model: &str) -> bool {
        match (&self.pricing, self.unpriced) {
            (None, _) | (Some(_), UnpricedPolicy::Fallback(_)) => true,
            (Some(p), UnpricedPolicy::Refuse) => p.current().lookup_for(provider_id, kind.as_str(), model).is_some(),
        }
    }

    /// The current price of `model` on a deployment, `None` when no table entry matches (or there is
    /// no pricing table). For listings: requests are priced by [`Sink::cost_nano_usd`].
    pub fn price_of(&self, provider_id: &str, kind: ProviderKind, model: &str) -> Option<Price> {
        self.pricing.as_ref()?.current().lookup_for(provider_id, kind.as_str(), model)
    }

    /// The price table in effect now (`None` without one: every request costs 0).
    pub fn pricing_table(&self) -> Option<Arc<crate::domain::pricing::PricingTable>> {
        self.pricing.as_ref().map(|p| arc_swap::Guard::into_inner(p.current()))
    }

    /// What unpriced models cost (refused, or the fallback price).
    pub fn unpriced(&self) -> UnpricedPolicy {
        self.unpriced
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The ledger, for the usage API and readiness.
    pub fn ledger(&self) -> Option<&LedgerHandle> {
        self.ledger.as_ref()
    }

    /// The price of the request's deployment and model; an unpriced model costs the fallback price, or 0
    /// under `refuse` (such a request was refused before any upstream call and carries no tokens).
    fn price(&self, info: &RequestInfo) -> Price {
        match (&self.pricing, &info.provider, info.provider_kind) {
            (Some(p), Some(provider), Some(kind)) => {
                match p.current().lookup_for(provider, kind.as_str(), &info.upstream_model) {
                    Some(price) => price,
                    None => match self.unpriced {
                        UnpricedPolicy::Fallback(price) => price,
                        UnpricedPolicy::Refuse => Price::default(),
                    },
                }
            }
            _ => Price::default(),
        }
    }

    /// What a request with these tokens costs at the current prices, in nano-USD.
    pub fn cost_nano_usd(&self, info: &RequestInfo, tokens: &Tokens) -> Option<i64> {
        self.pricing.as_ref()?;
        let price = self.price(info);
        Some(cost_nano_usd(&price, tokens.prompt, tokens.completion, tokens.cached, tokens.cache_write))
    }

    /// Records one finished request. Never blocks and never waits on the database.
    pub fn record(&self, done: Completed<'_>) {
        let price = self.price(done.info);
        let t = done.tokens;
        let cost = cost_nano_usd(&price, t.prompt, t.completion, t.cached, t.cache_write);
        log_line(&done, Some(cost));
        self.observe(&done, cost);
        let i = done.info;
        let record = LedgerRecord {
            record_id: i.record_id.clone(),
            session_id: i.session_id.as_deref().map(str::to_owned),
            request_id: i.request_id.clone(),
            ts_unix_ms: done.ts_unix_ms,
            tenant: i.tenant.to_string(),
            key_id: i.key_id.as_deref().map(str::to_owned),
            provider: i.provider.as_deref().unwrap_or("").to_owned(),
            requested_model: i.requested_model.clone(),
            upstream_model: i.upstream_model.clone(),
            prompt_tokens: t.prompt,
            completion_tokens: t.completion,
            cached_tokens: t.cached,
            cache_write_tokens: t.cache_write,
            usage_estimated: t.estimated,
            cost_nano_usd: cost,
            price,
            status: match done.outcome {
                Outcome::Ok => RecordStatus::Ok,
                Outcome::UpstreamError => RecordStatus::UpstreamError,
                Outcome::ClientError => RecordStatus::ClientError,
                Outcome::Cancelled => RecordStatus::Cancelled,
                Outcome::Partial => RecordStatus::Partial,
            },
            stream: i.stream,
            latency_ms: done.latency.as_millis() as u64,
            ttft_ms: done.ttft.map(|d| d.as_millis() as u64),
            attempts: done.attempts,
            http_status: done.http_status,
        };
        // A caller that commits the record itself (the batch worker) gets it instead of the writer.
        if let Some(capture) = &i.capture {
            capture.put(record);
            return;
        }
        if let Some(ledger) = &self.ledger {
            ledger.submit(record);
        }
    }
}

impl Sink {
    /// Updates the request, latency, token and cost metrics once per request.
    fn observe(&self, done: &Completed<'_>, cost_nano_usd: i64) {
        let m = &self.metrics;
        let i = done.info;
        let provider = i.provider.as_deref().unwrap_or("none");
        // Only a request that reached an upstream names a model: a refused one (bad name, unknown
        // model, limit) must not turn client text into a label value.
        let model = if done.attempts == 0 { "none" } else { m.model_label(&i.upstream_model) };
        let status = match done.outcome {
            Outcome::Ok => "2xx",
            Outcome::ClientError => "4xx",
            Outcome::UpstreamError => "5xx",
            Outcome::Cancelled => "cancelled",
            Outcome::Partial => "partial",
        };
        let stream = if i.stream { "true" } else { "false" };
        if m.tenant_label() {
            m.requests.with_label_values(&[provider, model, status, stream, &i.tenant]).inc();
        } else {
            m.requests.with_label_values(&[provider, model, status, stream]).inc();
        }
        m.duration.with_label_values(&[provider, stream]).observe(done.latency.as_secs_f64());
        if let Some(ttft) = done.ttft {
            m.ttft.with_label_values(&[provider, stream]).observe(ttft.as_secs_f64());
        }
        if matches!(done.outcome, Outcome::UpstreamError | Outcome::Partial) {
            m.upstream_errors.with_label_values(&[provider, i.error_kind.unwrap_or("unknown")]).inc();
        }
        let t = &done.tokens;
        for (kind, n) in
            [("prompt", t.prompt), ("completion", t.completion), ("cached", t.cached), ("cache_write", t.cache_write)]
        {
            if n > 0 {
                m.tokens.with_label_values(&[provider, model, kind]).inc_by(n);
            }
        }
        if cost_nano_usd > 0 {
            m.cost_usd.with_label_values(&[provider, model]).inc_by(cost_nano_usd as f64 / 1e9);
        }
    }
}

/// The one info-level line per request. Carries ids, counts and timings: never keys or prompt text.
/// Client-chosen strings are escaped ([`Escaped`]): a newline in a model name cannot start a forged line.
pub fn log_line(done: &Completed<'_>, cost_nano_usd: Option<i64>) {
    let i = done.info;
    tracing::info!(
        record_id = %i.record_id,
        request_id = %Escaped(&i.request_id),
        tenant = %Escaped(&i.tenant),
        provider = i.provider.as_deref().unwrap_or("-"),
        model = %Escaped(&i.requested_model),
        upstream_model = %Escaped(&i.upstream_model),
        stream = i.stream,
        status = done.outcome.as_str(),
        http_status = done.http_status,
        prompt_tokens = done.tokens.prompt,
        completion_tokens = done.tokens.completion,
        cached_tokens = done.tokens.cached,
        estimated = done.tokens.estimated,
        cost_nano_usd = cost_nano_usd.unwrap_or(0),
        latency_ms = done.latency.as_millis() as u64,
        ttft_ms = done.ttft.map(|d| d.as_millis() as u64),
        "request finished"
    );
}
