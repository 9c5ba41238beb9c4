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

/// What requests on one deployment pay, from [`Sink::deployment_price`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentPrice {
    /// No pricing table: requests cost 0 and carry no cost header.
    Unmetered,
    /// The table's price, or the fallback price for an unpriced model.
    Priced(Price),
    /// No price matches and the policy refuses unpriced models.
    Unpriced,
}

impl DeploymentPrice {
    /// The price to keep on the request ([`RequestInfo::price`]); `None` without a table.
    pub fn for_request(self) -> Option<Price> {
        match self {
            Self::Priced(price) => Some(price),
            // Refused before any upstream call: such a request carries no tokens.
            Self::Unpriced => Some(Price::default()),
            Self::Unmetered => None,
        }
    }
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

    /// What a request for `model` on this deployment pays at the current prices (one table look-up):
    /// the table's entry, else the fallback price; [`DeploymentPrice::Unpriced`] when no price
    /// matches and the policy refuses unpriced models (issue 11, item 5).
    pub fn deployment_price(&self, provider_id: &str, kind: ProviderKind, model: &str) -> DeploymentPrice {
        let Some(pricing) = &self.pricing else {
            return DeploymentPrice::Unmetered;
        };
        match (pricing.current().lookup_for(provider_id, kind.as_str(), model), self.unpriced) {
            (Some(price), _) | (None, UnpricedPolicy::Fallback(price)) => DeploymentPrice::Priced(price),
            (None, UnpricedPolicy::Refuse) => DeploymentPrice::Unpriced,
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
        if let Some(price) = info.price {
            return price;
        }
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

/// Where text access lines go when the binary takes them over (see [`set_access_writer`]).
type AccessWriter = Box<dyn Fn(&str) + Send + Sync>;
static ACCESS_WRITER: std::sync::OnceLock<AccessWriter> = std::sync::OnceLock::new();

/// Text logs (not `LOG_FORMAT=json`, not a terminal): the binary hands [`log_line`] a writer that
/// prefixes the line exactly as the subscriber would (time, level, target) and appends it to the log
/// buffer. Set once at start-up; JSON logs keep the structured event (the fields must stay fields).
///
/// Why: the subscriber's text output escapes every byte of every field and message one character at
/// a time, which made this one line 18–23k of the ~200k instructions of a pass-through request
/// (issue 17). The strings in it are escaped here already ([`Escaped`]).
pub fn set_access_writer(writer: AccessWriter) {
    let _ = ACCESS_WRITER.set(writer);
}

/// The one info-level line per request. Carries ids, counts and timings: never keys or prompt text.
/// Client-chosen strings are escaped ([`Escaped`]): a newline in a model name cannot start a forged line.
pub fn log_line(done: &Completed<'_>, cost_nano_usd: Option<i64>) {
    let i = done.info;
    if let Some(write) = ACCESS_WRITER.get() {
        // The same text the subscriber prints for the event below, when its filter lets it through.
        if tracing::enabled!(tracing::Level::INFO) {
            write(&access_line(done, cost_nano_usd));
        }
        return;
    }
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

/// `request finished record_id=… request_id=… …`: the fields of [`log_line`] as tracing's text
/// format prints them (strings given as `&str` quoted, `%` ones bare, an absent `ttft_ms` left out).
pub(crate) fn access_line(done: &Completed<'_>, cost_nano_usd: Option<i64>) -> String {
    use crate::domain::text::{push_debug_str, push_escaped, push_i64, push_u64};
    let i = done.info;
    let mut out = String::with_capacity(320);
    out.push_str("request finished record_id=");
    out.push_str(&i.record_id);
    out.push_str(" request_id=");
    push_escaped(&mut out, &i.request_id);
    out.push_str(" tenant=");
    push_escaped(&mut out, &i.tenant);
    out.push_str(" provider=");
    push_debug_str(&mut out, i.provider.as_deref().unwrap_or("-"));
    out.push_str(" model=");
    push_escaped(&mut out, &i.requested_model);
    out.push_str(" upstream_model=");
    push_escaped(&mut out, &i.upstream_model);
    out.push_str(if i.stream { " stream=true" } else { " stream=false" });
    out.push_str(" status=\"");
    out.push_str(done.outcome.as_str());
    out.push('"');
    let mut num = |name: &str, v: u64| {
        out.push(' ');
        out.push_str(name);
        out.push('=');
        push_u64(&mut out, v);
    };
    num("http_status", u64::from(done.http_status));
    num("prompt_tokens", done.tokens.prompt);
    num("completion_tokens", done.tokens.completion);
    num("cached_tokens", done.tokens.cached);
    out.push_str(if done.tokens.estimated { " estimated=true" } else { " estimated=false" });
    out.push_str(" cost_nano_usd=");
    push_i64(&mut out, cost_nano_usd.unwrap_or(0));
    out.push_str(" latency_ms=");
    push_u64(&mut out, done.latency.as_millis() as u64);
    if let Some(t) = done.ttft {
        out.push_str(" ttft_ms=");
        push_u64(&mut out, t.as_millis() as u64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer into a shared buffer, for a test subscriber.
    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Issue 17: the hand-formatted access line is exactly what the text subscriber prints for the
    /// structured event (including escaped client strings, quoted ids and an absent `ttft_ms`).
    #[test]
    fn access_line_matches_the_subscribers_text() {
        let info = RequestInfo {
            record_id: "rec_0123".into(),
            request_id: "req\nforged INFO line".into(),
            tenant: Arc::from("acme"),
            provider: Some(Arc::from("openai")),
            requested_model: "gpt-4o\u{1b}[31m".into(),
            upstream_model: "gpt-4o-2024-08-06".into(),
            stream: true,
            ..RequestInfo::default()
        };
        for (ttft, outcome, cost) in
            [(Some(Duration::from_millis(42)), Outcome::Ok, Some(1_234_567)), (None, Outcome::UpstreamError, None)]
        {
            let done = Completed {
                info: &info,
                ts_unix_ms: 0,
                outcome,
                tokens: Tokens { prompt: 10, completion: 20, cached: 3, cache_write: 0, estimated: ttft.is_none() },
                http_status: 200,
                latency: Duration::from_millis(1_500),
                ttft,
                attempts: 1,
            };
            let buf = Buf::default();
            let w = buf.clone();
            let subscriber = tracing_subscriber::fmt()
                .without_time()
                .with_target(false)
                .with_level(false)
                .with_ansi(false)
                .with_writer(move || w.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || log_line(&done, cost));
            let printed = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert_eq!(printed.trim_end(), access_line(&done, cost), "{printed}");
            assert_eq!(printed.lines().count(), 1);
        }
    }
}
