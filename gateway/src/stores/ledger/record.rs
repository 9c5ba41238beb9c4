//! The ledger record: one per request, whatever its outcome.

use serde::{Deserialize, Serialize};

use crate::domain::pricing::Price;

/// The outcome of a request as the ledger stores it (`status` column).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// Completed normally.
    Ok,
    /// The upstream failed (5xx, timeout, connect error, 4xx the client did not cause).
    UpstreamError,
    /// Refused before or by the upstream because of the client (bad request, auth, 4xx).
    ClientError,
    /// The client went away before the response ended.
    Cancelled,
    /// A stream that failed after its first byte; usage so far is recorded.
    Partial,
}

impl RecordStatus {
    /// Every status, in a stable order.
    pub const ALL: [RecordStatus; 5] = [
        RecordStatus::Ok,
        RecordStatus::UpstreamError,
        RecordStatus::ClientError,
        RecordStatus::Cancelled,
        RecordStatus::Partial,
    ];

    /// The stored name: `ok`, `upstream_error`, `client_error`, `cancelled`, `partial`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Ok => "ok",
            RecordStatus::UpstreamError => "upstream_error",
            RecordStatus::ClientError => "client_error",
            RecordStatus::Cancelled => "cancelled",
            RecordStatus::Partial => "partial",
        }
    }

    /// The inverse of [`RecordStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for RecordStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request's usage and cost. `request_id` is the idempotency key: a record written twice
/// (journal replay after a crash) is stored once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LedgerRecord {
    /// Unique per request (the gateway's `x-request-id`).
    pub request_id: String,
    /// When the request arrived, unix milliseconds (UTC).
    pub ts_unix_ms: i64,
    /// Tenant id (`anonymous` in open mode).
    pub tenant: String,
    /// Which of the tenant's keys was used (its id or hash prefix, never the key).
    pub key_id: Option<String>,
    /// Provider id (`openai`, `anthropic`, `groq`, ...).
    pub provider: String,
    /// The model the client asked for.
    pub requested_model: String,
    /// The model sent upstream (after aliasing); usage queries group on this one.
    pub upstream_model: String,
    /// Input tokens, INCLUDING cached and cache-write tokens (OpenAI convention).
    pub prompt_tokens: u64,
    /// Output tokens (including reasoning tokens).
    pub completion_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// True when the upstream reported no usage and the gateway estimated it.
    pub usage_estimated: bool,
    /// Cost in nano-USD at `price` (see [`crate::domain::pricing::cost_nano_usd`]).
    pub cost_nano_usd: i64,
    /// The prices the request was charged at.
    pub price: Price,
    /// Outcome.
    pub status: RecordStatus,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Arrival to last byte sent, milliseconds.
    pub latency_ms: u64,
    /// Arrival to first byte sent (streams), milliseconds.
    pub ttft_ms: Option<u64>,
    /// Upstream attempts (1 without retries; 0 when refused before any attempt).
    pub attempts: u32,
    /// HTTP status returned to the client.
    pub http_status: u16,
}

/// `u64` → `i64` for storage; saturates (token counts never get near 2^63).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Stored `i64` → `u64`; negative values (never written by us) read as 0.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
