//! Prometheus metrics. Handles are registered once; labels come from closed sets (status classes, error
//! kinds, configured providers, a capped set of model names). Per-request values are recorded once, when
//! the request ends, never per chunk.

pub mod batches;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Most distinct model names used as label values; later ones are reported as `other`.
pub const MAX_MODEL_LABELS: usize = 200;
/// Longest model name used as a label value, in bytes; longer ones are reported as `other`.
pub const MAX_MODEL_LABEL_LEN: usize = 128;
/// Metric families that carry model names, tenants, tokens or cost: business data, shown only to the
/// admin key or on the operations listener (`docs/ARCHITECTURE.md`, README security notes).
pub const BUSINESS_FAMILIES: &[&str] =
    &["aggregator_requests_total", "aggregator_tokens_total", "aggregator_cost_usd_total"];
/// Latency buckets from milliseconds to minutes (LLM calls span both).
const LATENCY_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// All gateway metrics.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub ttft: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub tokens: IntCounterVec,
    pub cost_usd: prometheus::CounterVec,
    pub inflight: IntGauge,
    pub open_streams: IntGauge,
    pub rate_limited: IntCounterVec,
    /// 1 while rate-limit counters are shared through Redis; 0 when it is down (local fallback) or unset.
    pub limits_redis_up: IntGauge,
    pub models_cache: IntCounterVec,
    ledger_queue_depth: IntGauge,
    ledger_gauges: IntGaugeVec,
    ledger_up: Gauge,
    model_labels: DashMap<String, ()>,
    model_label_count: AtomicUsize,
    tenant_label: bool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn must<T>(r: Result<T, prometheus::Error>) -> T {
    match r {
        Ok(v) => v,
        // Metric definitions are static; a failure here is a programming error caught by the unit test.
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

impl Metrics {
    /// Registers every metric. `tenant_label` adds a `tenant` label to the request counter (opt-in: tenant
    /// counts can be large).
    #[expect(clippy::too_many_lines, reason = "one flat list of metric definitions reads best")]
    pub fn new(tenant_label: bool) -> Arc<Self> {
        let registry = Registry::new();
        let request_labels: &[&str] = if tenant_label {
            &["provider", "model", "status", "stream", "tenant"]
        } else {
            &["provider", "model", "status", "stream"]
        };
        let requests = must(IntCounterVec::new(
            Opts::new(
                "aggregator_requests_total",
                "Chat requests by provider, model, status class (2xx/4xx/5xx/cancelled) and stream flag.",
            ),
            request_labels,
        ));
        let duration = must(HistogramVec::new(
            HistogramOpts::new("aggregator_request_duration_seconds", "Arrival to last byte sent.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider", "stream"],
        ));
        let ttft = must(HistogramVec::new(
            HistogramOpts::new("aggregator_time_to_first_token_seconds", "Arrival to first byte of the answer sent.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider", "stream"],
        ));
        let upstream_errors = must(IntCounterVec::new(
            Opts::new("aggregator_upstream_errors_total", "Upstream failures by provider and kind."),
            &["provider", "kind"],
        ));
        let tokens = must(IntCounterVec::new(
            Opts::new(
                "aggregator_tokens_total",
                "Tokens by provider, model and type (prompt, completion, cached, cache_write).",
            ),
            &["provider", "model", "type"],
        ));
        let cost_usd = must(prometheus::CounterVec::new(
            Opts::new(
                "aggregator_cost_usd_total",
                "Cost in USD at pricing.yaml prices (the ledger holds the exact integer amounts).",
            ),
            &["provider", "model"],
        ));
        let inflight = must(IntGauge::new("aggregator_inflight_requests", "Chat requests being served."));
        let open_streams = must(IntGauge::new("aggregator_open_streams", "SSE streams open to clients."));
        let rate_limited = must(IntCounterVec::new(
            Opts::new("aggregator_rate_limited_total", "Requests refused by a rate limit or budget."),
            &["limit"],
        ));
        let limits_redis_up = must(IntGauge::new(
            "aggregator_limits_redis_up",
            "1 while rate-limit counters are shared through Redis; 0 when Redis is down (per-replica fallback) or not configured.",
        ));
        let models_cache = must(IntCounterVec::new(
            Opts::new("aggregator_models_cache_total", "Model-listing cache events (hit, refresh, refresh_error)."),
            &["event"],
        ));
        let ledger_queue_depth =
            must(IntGauge::new("aggregator_ledger_queue_depth", "Usage records waiting for the ledger writer."));
        let ledger_gauges = must(IntGaugeVec::new(
            Opts::new(
                "aggregator_ledger_records",
                "Ledger record counters since start: written, batches, journaled, replayed, journal_skipped.",
            ),
            &["kind"],
        ));
        let ledger_up = must(Gauge::new("aggregator_ledger_store_up", "1 when the last ledger store write succeeded."));
        let build = must(IntGaugeVec::new(Opts::new("aggregator_build_info", "Build information."), &["version"]));
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(ttft.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(tokens.clone()),
            Box::new(cost_usd.clone()),
            Box::new(inflight.clone()),
            Box::new(open_streams.clone()),
            Box::new(rate_limited.clone()),
            Box::new(limits_redis_up.clone()),
            Box::new(models_cache.clone()),
            Box::new(ledger_queue_depth.clone()),
            Box::new(ledger_gauges.clone()),
            Box::new(ledger_up.clone()),
            Box::new(build),
        ] {
            must(registry.register(c));
        }
        Arc::new(Self {
            registry,
            requests,
            duration,
            ttft,
            upstream_errors,
            tokens,
            cost_usd,
            inflight,
            open_streams,
            rate_limited,
            limits_redis_up,
            models_cache,
            ledger_queue_depth,
            ledger_gauges,
            ledger_up,
            model_labels: DashMap::new(),
            model_label_count: AtomicUsize::new(0),
            tenant_label,
        })
    }

    /// Whether request counters carry a tenant label.
    pub fn tenant_label(&self) -> bool {
        self.tenant_label
    }

    /// A model name as a label value: the first `MAX_MODEL_LABELS` distinct names of at most
    /// `MAX_MODEL_LABEL_LEN` bytes, then `other`. Both bounds keep `/metrics` and memory bounded
    /// whatever names clients send.
    pub fn model_label<'a>(&self, model: &'a str) -> &'a str {
        if model.is_empty() {
            return "none";
        }
        if model.len() > MAX_MODEL_LABEL_LEN {
            return "other";
        }
        if self.model_labels.contains_key(model) {
            return model;
        }
        if self.model_label_count.fetch_add(1, Ordering::Relaxed) < MAX_MODEL_LABELS {
            self.model_labels.insert(model.to_owned(), ());
            model
        } else {
            self.model_label_count.fetch_sub(1, Ordering::Relaxed);
            "other"
        }
    }

    /// The text exposition of every metric, with ledger gauges refreshed from `ledger`.
    pub fn render(&self, ledger: Option<&LedgerStats>) -> Vec<u8> {
        self.render_scoped(ledger, true)
    }

    /// Like [`Metrics::render`]; without `business`, the series labelled by model or tenant (requests,
    /// tokens, cost: [`BUSINESS_FAMILIES`]) are left out.
    pub fn render_scoped(&self, ledger: Option<&LedgerStats>, business: bool) -> Vec<u8> {
        if let Some(s) = ledger {
            self.ledger_queue_depth.set(i64::try_from(s.queue_depth).unwrap_or(i64::MAX));
            for (kind, v) in [
                ("written", s.written),
                ("batches", s.batches),
                ("journaled", s.journaled),
                ("replayed", s.replayed),
                ("journal_skipped", s.journal_skipped),
            ] {
                self.ledger_gauges.with_label_values(&[kind]).set(i64::try_from(v).unwrap_or(i64::MAX));
            }
            self.ledger_up.set(if s.database_ok { 1.0 } else { 0.0 });
        }
        let mut out = Vec::with_capacity(16 * 1024);
        let mut families = self.registry.gather();
        if !business {
            families.retain(|f| !BUSINESS_FAMILIES.contains(&f.name()));
        }
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }

    /// Counts a refused request.
    pub fn count_rate_limited(&self, limit: &str) {
        self.rate_limited.with_label_values(&[limit]).inc();
    }
}

/// Counters for metrics and readiness; a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Records waiting in the queue.
    pub queue_depth: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Records committed to the store from the queue (new rows and ignored duplicates alike).
    pub written: u64,
    /// Batches committed from the queue.
    pub batches: u64,
    /// Records made durable in the journal (queue full, store down, or after shutdown).
    pub journaled: u64,
    /// Journal records committed to the store by replay.
    pub replayed: u64,
    /// Journal lines skipped at replay (torn tail after a crash, bad checksum).
    pub journal_skipped: u64,
    /// Whether the last store operation succeeded.
    pub database_ok: bool,
    /// Whether the last journal write succeeded.
    pub journal_ok: bool,
    /// The most recent error, if any.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders() {
        let m = Metrics::new(false);
        m.requests.with_label_values(&["openai", "gpt-4o", "2xx", "false"]).inc();
        let text = String::from_utf8(m.render(Some(&LedgerStats { written: 3, ..LedgerStats::default() }))).unwrap();
        assert!(text.contains(
            "aggregator_requests_total{model=\"gpt-4o\",provider=\"openai\",status=\"2xx\",stream=\"false\"} 1"
        ));
        assert!(text.contains("aggregator_ledger_records{kind=\"written\"} 3"));
        assert!(text.contains("aggregator_build_info"));
    }

    #[test]
    fn model_labels_are_capped() {
        let m = Metrics::new(false);
        for i in 0..MAX_MODEL_LABELS {
            assert_eq!(m.model_label(&format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(m.model_label("one-too-many"), "other");
        assert_eq!(m.model_label("m0"), "m0");
    }

    /// Issue #11, item 7: a long name is never a label value, and does not use up a slot.
    #[test]
    fn long_model_names_are_not_labels() {
        let m = Metrics::new(false);
        let long = "x".repeat(MAX_MODEL_LABEL_LEN + 1);
        assert_eq!(m.model_label(&long), "other");
        assert_eq!(m.model_label(&"y".repeat(MAX_MODEL_LABEL_LEN)), "y".repeat(MAX_MODEL_LABEL_LEN));
        assert_eq!(m.model_labels.len(), 1);
    }
}
