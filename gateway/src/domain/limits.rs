//! Limits as data: what a tenant or key may use, why a request was refused, and the `x-ratelimit-*`
//! headers that tell the client. Counting and enforcement live in `stores::limiter`.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::config::{ModelPattern, Secret};
use super::money::format_usd_micro;

/// `x-ratelimit-limit-requests`, as OpenAI sends it.
pub const X_RATELIMIT_LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
/// `x-ratelimit-remaining-requests`.
pub const X_RATELIMIT_REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
/// `x-ratelimit-reset-requests` (a duration such as `1s`, `6m0s` or `20ms`).
pub const X_RATELIMIT_RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
/// `x-ratelimit-limit-tokens`.
pub const X_RATELIMIT_LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
/// `x-ratelimit-remaining-tokens`.
pub const X_RATELIMIT_REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
/// `x-ratelimit-reset-tokens`.
pub const X_RATELIMIT_RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// Limits of one tenant or key; `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LimitSpec {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// Spend per calendar month (UTC), in micro-USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_budget_micro_usd: Option<i64>,
}

impl LimitSpec {
    /// Each field, or `default`'s when unset.
    pub fn or(self, default: LimitSpec) -> LimitSpec {
        LimitSpec {
            rpm: self.rpm.or(default.rpm),
            tpm: self.tpm.or(default.tpm),
            max_concurrent: self.max_concurrent.or(default.max_concurrent),
            monthly_budget_micro_usd: self.monthly_budget_micro_usd.or(default.monthly_budget_micro_usd),
        }
    }

    /// True when nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        *self == LimitSpec::default()
    }
}

/// The limits that apply to one caller: its tenant's (defaults filled in) and its key's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallerLimits {
    pub tenant: LimitSpec,
    pub key: LimitSpec,
}

impl CallerLimits {
    /// True when neither the tenant nor the key has a limit.
    pub fn is_unlimited(&self) -> bool {
        self.tenant.is_unlimited() && self.key.is_unlimited()
    }
}

/// Which limit refused a request (also the `limit` label of `aggregator_rate_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Concurrency,
    Budget,
}

impl LimitKind {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Concurrency => "concurrency",
            LimitKind::Budget => "budget",
        }
    }
}

/// Whether a counter belongs to the tenant or to one of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    Tenant,
    Key,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Tenant => "tenant",
            ScopeKind::Key => "key",
        }
    }
}

/// A refused request: what to tell the client.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub kind: LimitKind,
    pub scope: ScopeKind,
    /// The limit (requests, tokens, slots, or micro-USD for budgets).
    pub limit: u64,
    /// How long until a retry can succeed (until the next month for budgets).
    pub retry_after: Duration,
    /// `x-ratelimit-*` headers.
    pub headers: RateHeaders,
}

impl Rejection {
    /// OpenAI's error `type`: `requests`, `tokens` or `insufficient_quota`.
    pub fn error_type(&self) -> &'static str {
        match self.kind {
            LimitKind::Requests | LimitKind::Concurrency => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Budget => "insufficient_quota",
        }
    }

    /// OpenAI's error `code`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            LimitKind::Budget => "insufficient_quota",
            LimitKind::Requests | LimitKind::Tokens | LimitKind::Concurrency => "rate_limit_exceeded",
        }
    }

    /// `retry-after` in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_millis().div_ceil(1000).max(1) as u64
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = self.scope.as_str();
        let wait = format_reset(self.retry_after);
        match self.kind {
            LimitKind::Requests => write!(
                f,
                "Rate limit reached for this {scope} on requests per min (RPM): Limit {}. Please try again in {wait}.",
                self.limit
            ),
            LimitKind::Tokens => write!(
                f,
                "Rate limit reached for this {scope} on tokens per min (TPM): Limit {}. Please try again in {wait}.",
                self.limit
            ),
            LimitKind::Concurrency => write!(
                f,
                "Too many concurrent requests for this {scope}: Limit {}. Please try again in {wait}.",
                self.limit
            ),
            LimitKind::Budget => write!(
                f,
                "You exceeded your current quota: this {scope}'s monthly budget of ${} is spent.",
                format_usd_micro(i64::try_from(self.limit).unwrap_or(i64::MAX))
            ),
        }
    }
}

/// One `x-ratelimit-*` family: limit, remaining and time to reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeader {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// The `x-ratelimit-*` headers of one response (the most constrained scope of each family).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub requests: Option<RateHeader>,
    pub tokens: Option<RateHeader>,
}

impl RateHeaders {
    /// Writes the headers into `h`.
    pub fn apply(&self, h: &mut HeaderMap) {
        let families = [
            (self.requests, [X_RATELIMIT_LIMIT_REQUESTS, X_RATELIMIT_REMAINING_REQUESTS, X_RATELIMIT_RESET_REQUESTS]),
            (self.tokens, [X_RATELIMIT_LIMIT_TOKENS, X_RATELIMIT_REMAINING_TOKENS, X_RATELIMIT_RESET_TOKENS]),
        ];
        for (value, [limit, remaining, reset]) in families {
            let Some(v) = value else { continue };
            h.insert(limit, HeaderValue::from(v.limit));
            h.insert(remaining, HeaderValue::from(v.remaining));
            if let Ok(r) = HeaderValue::try_from(format_reset(v.reset)) {
                h.insert(reset, r);
            }
        }
    }

    pub fn merge(&mut self, kind: LimitKind, header: RateHeader) {
        let slot = match kind {
            LimitKind::Requests => &mut self.requests,
            LimitKind::Tokens => &mut self.tokens,
            LimitKind::Concurrency | LimitKind::Budget => return,
        };
        match slot {
            Some(existing) if existing.remaining <= header.remaining => {}
            _ => *slot = Some(header),
        }
    }
}

/// OpenAI's reset format: `20ms`, `1.5s`, `6m0s`.
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = ms as f64 / 1000.0;
        let text = format!("{s:.3}");
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let secs = ms.div_ceil(1000);
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

/// What one request may consume, estimated before it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    /// Prompt estimate plus the completion allowance.
    pub tokens: u64,
    /// Worst-case cost in nano-USD at current prices.
    pub cost_nano_usd: i64,
}

/// Settings of the limiter (from `limits:` and `REDIS_URL`).
#[derive(Debug, Clone)]
pub struct LimiterSettings {
    /// Completion allowance when a request has no `max_tokens`, by model pattern (first match wins).
    pub completion_defaults: Vec<(ModelPattern, u64)>,
    /// Completion allowance when no pattern matches.
    pub default_completion_tokens: u64,
    /// `redis://…`; `None` keeps the counters in memory.
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// Longest wait for one Redis round trip before falling back to local counters.
    pub redis_timeout: Duration,
    /// A concurrency slot older than this is considered leaked (crashed replica) and reclaimed.
    pub concurrency_stale: Duration,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        Self {
            completion_defaults: Vec::new(),
            default_completion_tokens: 1024,
            redis_url: None,
            redis_prefix: "aiagg".to_owned(),
            redis_timeout: Duration::from_millis(500),
            concurrency_stale: Duration::from_secs(15 * 60),
        }
    }
}
