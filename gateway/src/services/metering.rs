//! Per-request metering: exactly one usage record per request, whatever happens to it.
//!
//! A `RequestMeter` is created when a chat request arrives and travels with it: into the streaming body
//! when there is one. `finish` records the outcome; if the meter is dropped unfinished (the client hung
//! up, the handler future was cancelled), `Drop` records it as `cancelled` with the usage known so far.

use std::sync::Arc;

use tokio::time::Instant;
use translators::openai::Usage;

use crate::domain::config::ProviderKind;

/// How a request ended, as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    UpstreamError,
    ClientError,
    Cancelled,
    Partial,
}

impl Outcome {
    /// The ledger's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ClientError => "client_error",
            Outcome::Cancelled => "cancelled",
            Outcome::Partial => "partial",
        }
    }
}

/// Token counts for one request, and whether any of them are estimates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub estimated: bool,
}

impl Tokens {
    /// Exact counts from the provider's usage.
    pub fn from_usage(u: &Usage) -> Self {
        Self {
            prompt: u.prompt_tokens,
            completion: u.completion_tokens,
            cached: u.cached_tokens(),
            cache_write: u.cache_write_tokens(),
            estimated: false,
        }
    }
}

/// Roughly four bytes of English text or JSON per token: the estimate used only when a stream was cut
/// before the provider's final count. Never zero for non-empty output.
pub fn estimate_tokens(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

/// Identity of a request, fixed once routing is done.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub request_id: String,
    pub tenant: Arc<str>,
    pub key_id: Option<Arc<str>>,
    pub provider: Option<Arc<str>>,
    pub provider_kind: Option<ProviderKind>,
    pub requested_model: String,
    pub upstream_model: String,
    pub stream: bool,
    /// Prompt-size estimate from the request body, used when the upstream never reported usage.
    pub prompt_estimate: u64,
    /// Closed-set label of the failure, for metrics (`upstream_timeout`, `stream_truncated`, ...).
    pub error_kind: Option<&'static str>,
    /// When set, the finished ledger record is handed here instead of to the async ledger writer
    /// (the batch worker commits it with the line's result, in one transaction).
    pub capture: Option<RecordCapture>,
}

/// A slot for a request's ledger record, put in the request's extensions by a caller that commits the
/// record itself (the batch worker: line result and ledger row in one transaction, exactly once).
/// Metrics and the log line are recorded as for any request; only the ledger hand-off changes.
#[derive(Debug, Clone, Default)]
pub struct RecordCapture(Arc<std::sync::OnceLock<crate::stores::ledger::LedgerRecord>>);

impl RecordCapture {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores the record (the first one wins: a request has exactly one).
    pub fn put(&self, record: crate::stores::ledger::LedgerRecord) {
        let _ = self.0.set(record);
    }

    /// The record, once the request finished.
    pub fn get(&self) -> Option<crate::stores::ledger::LedgerRecord> {
        self.0.get().cloned()
    }
}

/// Collects a request's outcome and records it exactly once.
#[derive(Debug)]
pub struct RequestMeter {
    pub info: RequestInfo,
    started: Instant,
    ts_unix_ms: i64,
    first_token: Option<Instant>,
    attempts: u32,
    sink: Option<Arc<crate::services::sink::Sink>>,
    done: bool,
    /// What the tenant limits booked for this request; settled with the real usage in `finish`.
    pub admission: Option<crate::stores::limiter::Admission>,
}

impl RequestMeter {
    /// Starts timing a request.
    pub fn start(info: RequestInfo, sink: Option<Arc<crate::services::sink::Sink>>) -> Self {
        let ts_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        if let Some(sink) = &sink {
            sink.metrics().inflight.inc();
        }
        Self {
            info,
            started: Instant::now(),
            ts_unix_ms,
            first_token: None,
            attempts: 0,
            sink,
            done: false,
            admission: None,
        }
    }

    /// The metrics, when this meter records anywhere.
    pub fn metrics(&self) -> Option<&Arc<crate::metrics::Metrics>> {
        self.sink.as_ref().map(|s| s.metrics())
    }

    /// Counts one upstream attempt.
    pub fn attempt(&mut self) {
        self.attempts += 1;
    }

    /// Marks the first byte of output sent downstream (time to first token).
    pub fn first_token(&mut self) {
        if self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
    }

    /// Records the outcome. Later calls (and `Drop`) do nothing.
    pub fn finish(&mut self, outcome: Outcome, tokens: Tokens, http_status: u16) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(admission) = self.admission.take() {
            let cost = self.sink.as_ref().and_then(|s| s.cost_nano_usd(&self.info, &tokens)).unwrap_or(0);
            admission.settle(tokens.prompt.saturating_add(tokens.completion), cost);
        }
        let latency = self.started.elapsed();
        let ttft = self.first_token.map(|t| t.duration_since(self.started));
        let record = crate::services::sink::Completed {
            info: &self.info,
            ts_unix_ms: self.ts_unix_ms,
            outcome,
            tokens,
            http_status,
            latency,
            ttft,
            attempts: self.attempts.max(u32::from(outcome != Outcome::ClientError)),
        };
        match &self.sink {
            Some(sink) => {
                sink.metrics().inflight.dec();
                sink.record(record);
            }
            None => crate::services::sink::log_line(&record, None),
        }
    }

    /// Moves the meter out (into a streaming body); `self` is left finished so it records nothing.
    pub fn hand_over(&mut self) -> RequestMeter {
        let moved = RequestMeter {
            info: std::mem::take(&mut self.info),
            started: self.started,
            ts_unix_ms: self.ts_unix_ms,
            first_token: self.first_token,
            attempts: self.attempts,
            sink: self.sink.take(),
            done: self.done,
            admission: self.admission.take(),
        };
        self.done = true;
        moved
    }

    /// True once `finish` ran.
    pub fn is_finished(&self) -> bool {
        self.done
    }
}

impl Drop for RequestMeter {
    fn drop(&mut self) {
        if !self.done {
            // The handler future was dropped before an outcome: the client went away while we waited on the
            // upstream. The upstream may still bill the prompt, so count the estimate.
            let tokens = Tokens { prompt: self.info.prompt_estimate, estimated: true, ..Tokens::default() };
            self.finish(Outcome::Cancelled, tokens, 499);
        }
    }
}
