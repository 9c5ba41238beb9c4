//! Per-tenant and per-key limits: requests per minute, tokens per minute, concurrent requests and a
//! monthly budget in USD.
//!
//! Every chat request is *admitted* once, after routing and before the first upstream attempt, and
//! *settled* once, when its meter records the outcome:
//! - requests per minute count the admitted request;
//! - tokens per minute and the budget *reserve* the worst case before the request (prompt estimate
//!   from the body size plus `max_tokens`, or a per-model default) and settle to the real usage after
//!   it, so a burst of concurrent requests cannot overshoot by more than one reservation;
//! - concurrency takes a slot and gives it back at settlement (end of stream, error or cancel).
//!
//! Counters are sliding windows of one minute (the previous minute's count, weighted by how much of it
//! still overlaps, plus the current minute's), kept in memory for one replica (`local.rs`) or in Redis
//! when `REDIS_URL` is set (`redis.rs`: one atomic Lua script per admission and one per settlement).
//! When Redis is unreachable the limiter falls back to the local counters, says so in the logs and sets
//! `aggregator_limits_redis_up` to 0; each replica then enforces the full limit on its own.
//! See `docs/ACCESS_CONTROL.md` for the bounds.

mod local;
mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::task::TaskTracker;

use crate::config::ModelPattern;
use crate::ledger::{LedgerHandle, UsageQuery};
use crate::metrics::Metrics;

pub use self::redis::RedisLimiter;

/// Length of a rate window.
pub const WINDOW_MS: i64 = 60_000;

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
    fn as_str(self) -> &'static str {
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

    fn merge(&mut self, kind: LimitKind, header: RateHeader) {
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
    pub redis_url: Option<crate::config::Secret>,
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

/// One counter a request is checked against.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub kind: LimitKind,
    pub scope: ScopeKind,
    /// Counter id without window or month (`{prefix}:t:{tenant}:rpm`).
    pub key: String,
    /// Requests, tokens or slots; budgets in nano-USD.
    pub limit: i64,
    /// What this request adds (1 request, reserved tokens, 1 slot, reserved nano-USD).
    pub amount: i64,
}

/// The counter values a check saw, for headers and retry times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    pub cur: i64,
    pub prev: i64,
}

/// The verdict of one admission attempt on a backend.
#[derive(Debug)]
pub(crate) enum Verdict {
    Admitted { seen: Vec<Seen> },
    Refused { index: usize, seen: Seen },
}

/// Which counters an admission was booked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    Redis,
}

/// The limiter shared by every request.
pub struct Limiter {
    local: local::LocalCounters,
    redis: Option<RedisLimiter>,
    settings: LimiterSettings,
    metrics: Option<Arc<Metrics>>,
    ledger: Option<LedgerHandle>,
    tasks: TaskTracker,
    /// Budget counters already seeded from the ledger in this process (`key:month`).
    seeded: DashMap<String, ()>,
    next_member: AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("redis", &self.redis.is_some()).finish()
    }
}

impl Limiter {
    /// Builds the limiter. With a Redis URL the connection is made lazily and a health task on `tasks`
    /// keeps `aggregator_limits_redis_up` current until `shutdown`.
    ///
    /// # Errors
    /// A Redis URL that does not parse.
    pub fn new(
        settings: LimiterSettings,
        metrics: Option<Arc<Metrics>>,
        ledger: Option<LedgerHandle>,
        tasks: TaskTracker,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let redis = match &settings.redis_url {
            Some(url) => Some(RedisLimiter::new(url.expose(), settings.redis_timeout, metrics.clone())?),
            None => None,
        };
        if let Some(m) = &metrics {
            m.limits_redis_up.set(0);
        }
        let limiter = Arc::new(Self {
            local: local::LocalCounters::default(),
            redis,
            settings,
            metrics,
            ledger,
            tasks: tasks.clone(),
            seeded: DashMap::new(),
            next_member: AtomicU64::new(0),
        });
        if let Some(r) = &limiter.redis {
            tasks.spawn(r.clone().watch(shutdown));
        }
        Ok(limiter)
    }

    /// One Redis `PING` (at start, so the first requests already share counters); logs the outcome.
    pub async fn check_redis(&self) {
        if let Some(r) = &self.redis {
            if !r.check().await {
                tracing::warn!("Redis is unreachable at start: rate limits use per-replica counters until it answers");
            }
        }
    }

    /// True when counters are shared through Redis right now.
    pub fn redis_up(&self) -> bool {
        self.redis.as_ref().is_some_and(RedisLimiter::is_up)
    }

    /// The completion allowance for `model` when the request sets no `max_tokens`.
    pub fn completion_allowance(&self, model: &str) -> u64 {
        self.settings
            .completion_defaults
            .iter()
            .find(|(p, _)| p.matches(model))
            .map_or(self.settings.default_completion_tokens, |(_, n)| *n)
    }

    fn checks(&self, tenant: &str, key_id: Option<&str>, limits: &CallerLimits, demand: Demand) -> Vec<Check> {
        let prefix = &self.settings.redis_prefix;
        let month = month_of(now_ms());
        let mut out = Vec::new();
        let scopes = [(ScopeKind::Tenant, Some(tenant), &limits.tenant), (ScopeKind::Key, key_id, &limits.key)];
        for (scope, id, spec) in scopes {
            let Some(id) = id else { continue };
            let tag = match scope {
                ScopeKind::Tenant => "t",
                ScopeKind::Key => "k",
            };
            let to_i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            if let Some(rpm) = spec.rpm {
                out.push(Check {
                    kind: LimitKind::Requests,
                    scope,
                    key: format!("{prefix}:{tag}:{id}:rpm"),
                    limit: to_i(rpm),
                    amount: 1,
                });
            }
            if let Some(tpm) = spec.tpm {
                out.push(Check {
                    kind: LimitKind::Tokens,
                    scope,
                    key: format!("{prefix}:{tag}:{id}:tpm"),
                    limit: to_i(tpm),
                    amount: to_i(demand.tokens),
                });
            }
            if let Some(conc) = spec.max_concurrent {
                out.push(Check {
                    kind: LimitKind::Concurrency,
                    scope,
                    key: format!("{prefix}:{tag}:{id}:conc"),
                    limit: to_i(conc),
                    amount: 1,
                });
            }
            if let Some(budget) = spec.monthly_budget_micro_usd {
                out.push(Check {
                    kind: LimitKind::Budget,
                    scope,
                    key: format!("{prefix}:{tag}:{id}:budget:{month}"),
                    limit: budget.saturating_mul(1000),
                    amount: demand.cost_nano_usd.max(0),
                });
            }
        }
        out
    }

    /// Admits one request or says which limit refuses it. Never fails on Redis trouble: the local
    /// counters take over.
    pub async fn admit(
        self: &Arc<Self>,
        tenant: &str,
        key_id: Option<&str>,
        limits: &CallerLimits,
        demand: Demand,
    ) -> Result<Admission, Box<Rejection>> {
        if limits.is_unlimited() {
            return Ok(Admission::none());
        }
        let checks = self.checks(tenant, key_id, limits, demand);
        // Unique across replicas (pids repeat across containers): the concurrency set's member.
        let member = format!(
            "{:016x}{:016x}-{}",
            fastrand::u64(..),
            fastrand::u64(..),
            self.next_member.fetch_add(1, Ordering::Relaxed)
        );
        let seed_tenant = limits.tenant.monthly_budget_micro_usd.is_some().then_some(tenant);
        let mut outcome = None;
        if let Some(r) = self.redis.as_ref().filter(|r| r.is_up()) {
            self.seed_budgets(&checks, seed_tenant, Some(r)).await;
            // An error is logged and counted by the Redis limiter; the local counters take over.
            if let Ok((server_now, verdict)) = r.admit(&checks, &member, self.settings.concurrency_stale).await {
                outcome = Some((server_now, verdict, Backend::Redis));
            }
        }
        let (now, verdict, backend) = match outcome {
            Some(o) => o,
            None => {
                self.seed_budgets(&checks, seed_tenant, None).await;
                let now = now_ms();
                (now, self.local.admit(&checks, now), Backend::Local)
            }
        };
        match verdict {
            Verdict::Admitted { seen } => {
                let mut headers = RateHeaders::default();
                for (check, s) in checks.iter().zip(&seen) {
                    if let Some(h) = rate_header(check, *s, now, true) {
                        headers.merge(check.kind, h);
                    }
                }
                Ok(Admission {
                    inner: Some(Booked {
                        limiter: Arc::clone(self),
                        backend,
                        checks,
                        window: now.div_euclid(WINDOW_MS),
                        member,
                        headers,
                    }),
                })
            }
            Verdict::Refused { index, seen } => {
                let check = &checks[index];
                if let Some(m) = &self.metrics {
                    m.count_rate_limited(check.kind.label());
                }
                let mut headers = RateHeaders::default();
                if let Some(h) = rate_header(check, seen, now, false) {
                    headers.merge(check.kind, h);
                }
                let retry_after = match check.kind {
                    LimitKind::Requests | LimitKind::Tokens => {
                        Duration::from_millis(window_wait_ms(seen, now, check.limit, check.amount))
                    }
                    LimitKind::Concurrency => Duration::from_secs(1),
                    LimitKind::Budget => Duration::from_millis(ms_to_next_month(now)),
                };
                Err(Box::new(Rejection {
                    kind: check.kind,
                    scope: check.scope,
                    limit: u64::try_from(match check.kind {
                        LimitKind::Budget => check.limit / 1000,
                        _ => check.limit,
                    })
                    .unwrap_or(0),
                    retry_after,
                    headers,
                }))
            }
        }
    }

    /// Loads this month's spend from the ledger into budget counters not seen yet in this process, so
    /// a restart (or a flushed Redis) does not hand out a fresh budget.
    async fn seed_budgets(&self, checks: &[Check], tenant: Option<&str>, redis: Option<&RedisLimiter>) {
        for check in checks.iter().filter(|c| c.kind == LimitKind::Budget) {
            let marker = format!("{}:{}", if redis.is_some() { "r" } else { "l" }, check.key);
            if self.seeded.contains_key(&marker) {
                continue;
            }
            // Key budgets start from zero: the ledger is not indexed by key.
            let spent = match (check.scope, tenant, &self.ledger) {
                (ScopeKind::Tenant, Some(t), Some(ledger)) => {
                    let q = UsageQuery {
                        from_unix_ms: Some(month_start_ms(now_ms())),
                        tenant: Some(t.to_owned()),
                        ..UsageQuery::default()
                    };
                    match ledger.usage(&q).await {
                        Ok(rows) => rows.iter().map(|r| r.cost_nano_usd).sum::<i64>(),
                        Err(error) => {
                            tracing::warn!(%error, "Could not read this month's spend from the ledger; budget starts at 0");
                            0
                        }
                    }
                }
                _ => 0,
            };
            let ok = match redis {
                Some(r) => r.seed(&check.key, spent).await.is_ok(),
                None => {
                    self.local.seed(&check.key, spent);
                    true
                }
            };
            if ok {
                self.seeded.insert(marker, ());
            }
        }
    }

    fn settle(&self, booked: &Booked, used_tokens: u64, cost_nano_usd: i64) {
        let deltas: Vec<(usize, i64)> = booked
            .checks
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c.kind {
                LimitKind::Tokens => Some((i, i64::try_from(used_tokens).unwrap_or(i64::MAX) - c.amount)),
                LimitKind::Budget => Some((i, cost_nano_usd.max(0) - c.amount)),
                LimitKind::Concurrency => Some((i, -1)),
                LimitKind::Requests => None,
            })
            .filter(|(_, d)| *d != 0)
            .collect();
        if deltas.is_empty() {
            return;
        }
        match (booked.backend, &self.redis) {
            (Backend::Redis, Some(r)) => {
                let r = r.clone();
                let checks = booked.checks.clone();
                let window = booked.window;
                let member = booked.member.clone();
                self.tasks.spawn(async move { r.settle(&checks, &deltas, window, &member).await });
            }
            _ => self.local.settle(&booked.checks, &deltas, booked.window),
        }
    }
}

/// What `admit` booked; settled exactly once (explicitly, or from `Drop` with the reserved amounts).
pub struct Admission {
    inner: Option<Booked>,
}

struct Booked {
    limiter: Arc<Limiter>,
    backend: Backend,
    checks: Vec<Check>,
    window: i64,
    member: String,
    headers: RateHeaders,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("booked", &self.inner.is_some()).finish()
    }
}

impl Admission {
    /// An admission with nothing booked (no limits apply).
    pub fn none() -> Self {
        Self { inner: None }
    }

    /// The `x-ratelimit-*` headers for the response, when a rate limit applies.
    pub fn headers(&self) -> Option<RateHeaders> {
        self.inner.as_ref().map(|b| b.headers).filter(|h| h.requests.is_some() || h.tokens.is_some())
    }

    /// Replaces the reservations with the real usage and frees the concurrency slot. Never blocks:
    /// Redis updates run on the task tracker.
    pub fn settle(mut self, used_tokens: u64, cost_nano_usd: i64) {
        if let Some(booked) = self.inner.take() {
            booked.limiter.settle(&booked, used_tokens, cost_nano_usd);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(booked) = self.inner.take() {
            // Not settled explicitly: keep the reservations, free the slot.
            let reserved_tokens = booked
                .checks
                .iter()
                .find(|c| c.kind == LimitKind::Tokens)
                .map_or(0, |c| u64::try_from(c.amount).unwrap_or(0));
            let reserved_cost = booked.checks.iter().find(|c| c.kind == LimitKind::Budget).map_or(0, |c| c.amount);
            booked.limiter.settle(&booked, reserved_tokens, reserved_cost);
        }
    }
}

/// Admits a chat request for `limits` after routing: reserves the prompt estimate plus `max_tokens`
/// (or the model's completion allowance) and the worst-case cost on the first target, and hands the
/// admission to the meter, which settles it when the request ends.
///
/// # Errors
/// [`crate::Error::RateLimited`] when a limit refuses the request.
pub async fn admit_chat(
    state: &crate::state::AppState,
    meter: &mut crate::metering::RequestMeter,
    limits: &CallerLimits,
    body: &[u8],
    route: &crate::routing::Route,
) -> Result<Option<RateHeaders>, crate::Error> {
    if limits.is_unlimited() {
        return Ok(None);
    }
    let target = route.targets.first();
    let model = target.map_or(meter.info.requested_model.as_str(), |t| t.upstream_model.as_str());
    let completion = requested_max_tokens(body).unwrap_or_else(|| state.limiter.completion_allowance(model));
    let prompt = meter.info.prompt_estimate;
    let wants_cost = limits.tenant.monthly_budget_micro_usd.is_some() || limits.key.monthly_budget_micro_usd.is_some();
    let cost_nano_usd = match (&state.sink, target) {
        (Some(sink), Some(t)) if wants_cost => {
            let mut info = meter.info.clone();
            info.provider = Some(Arc::from(t.provider.id.as_str()));
            info.provider_kind = Some(t.provider.kind);
            info.upstream_model.clone_from(&t.upstream_model);
            let tokens = crate::metering::Tokens { prompt, completion, ..Default::default() };
            sink.cost_nano_usd(&info, &tokens).unwrap_or(0)
        }
        _ => 0,
    };
    let demand = Demand { tokens: prompt.saturating_add(completion), cost_nano_usd };
    let tenant = Arc::clone(&meter.info.tenant);
    let key_id = meter.info.key_id.clone();
    match state.limiter.admit(&tenant, key_id.as_deref(), limits, demand).await {
        Ok(admission) => {
            let headers = admission.headers();
            meter.admission = Some(admission);
            Ok(headers)
        }
        Err(rejection) => Err(crate::Error::RateLimited(rejection)),
    }
}

/// `max_completion_tokens` or `max_tokens` from an OpenAI request body.
fn requested_max_tokens(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct MaxTokens {
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
    }
    serde_json::from_slice::<MaxTokens>(body).ok().and_then(|m| m.max_completion_tokens.or(m.max_tokens))
}

/// Sliding-window usage: the previous window's count weighted by its remaining overlap, plus the
/// current window's. The Lua script computes exactly the same (`math.floor`).
pub(crate) fn window_used(seen: Seen, now_ms: i64) -> i64 {
    let elapsed = now_ms.rem_euclid(WINDOW_MS) as f64 / WINDOW_MS as f64;
    (seen.prev.max(0) as f64 * (1.0 - elapsed)).floor() as i64 + seen.cur.max(0)
}

/// How long until `amount` more fits under `limit`, assuming nothing else arrives.
pub(crate) fn window_wait_ms(seen: Seen, now_ms: i64, limit: i64, amount: i64) -> u64 {
    let into = now_ms.rem_euclid(WINDOW_MS);
    let to_end = WINDOW_MS - into;
    let room = limit - amount;
    if room < 0 {
        return WINDOW_MS as u64;
    }
    if seen.cur <= room {
        // Wait for the previous window's weight to decay: prev * (1 - e) <= room - cur.
        if seen.prev <= 0 {
            return 1000;
        }
        let e = 1.0 - (room - seen.cur) as f64 / seen.prev as f64;
        let target = (e * WINDOW_MS as f64).ceil() as i64;
        return u64::try_from((target - into).max(1)).unwrap_or(1000);
    }
    // Wait for the next window, where today's count becomes the decaying previous one.
    if seen.cur <= 0 {
        return u64::try_from(to_end).unwrap_or(1000);
    }
    let e = (1.0 - room as f64 / seen.cur as f64).max(0.0);
    u64::try_from(to_end + (e * WINDOW_MS as f64).ceil() as i64).unwrap_or(60_000)
}

fn rate_header(check: &Check, seen: Seen, now_ms: i64, admitted: bool) -> Option<RateHeader> {
    if !matches!(check.kind, LimitKind::Requests | LimitKind::Tokens) {
        return None;
    }
    // `seen` is before this request; an admitted request counts itself.
    let used = window_used(seen, now_ms) + if admitted { check.amount } else { 0 };
    let remaining = u64::try_from((check.limit - used).max(0)).unwrap_or(0);
    // Time until the window is empty again: the rest of this window, plus the next one when this one
    // already has traffic.
    let into = now_ms.rem_euclid(WINDOW_MS);
    let reset_ms = if seen.cur > 0 || admitted { 2 * WINDOW_MS - into } else { WINDOW_MS - into };
    Some(RateHeader {
        limit: u64::try_from(check.limit).unwrap_or(0),
        remaining,
        reset: Duration::from_millis(u64::try_from(reset_ms).unwrap_or(0)),
    })
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    crate::ledger::now_unix_ms()
}

/// Days since 1970-01-01 → (year, month), proleptic Gregorian (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// (year, month) → days since 1970-01-01 of its first day.
fn days_from_civil(year: i64, month: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYYMM` of a unix time (UTC).
pub(crate) fn month_of(unix_ms: i64) -> String {
    let (y, m) = civil_from_days(unix_ms.div_euclid(86_400_000));
    format!("{y:04}{m:02}")
}

/// Unix ms of the first instant of the month containing `unix_ms` (UTC).
pub(crate) fn month_start_ms(unix_ms: i64) -> i64 {
    let (y, m) = civil_from_days(unix_ms.div_euclid(86_400_000));
    days_from_civil(y, m) * 86_400_000
}

fn ms_to_next_month(unix_ms: i64) -> u64 {
    let (y, m) = civil_from_days(unix_ms.div_euclid(86_400_000));
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    u64::try_from(days_from_civil(ny, nm) * 86_400_000 - unix_ms).unwrap_or(0)
}

/// Parses a non-negative decimal USD amount (at most 6 decimals) into micro-USD.
///
/// # Errors
/// Not a decimal, negative, too many decimals or too large.
pub fn parse_usd_micro(s: &str) -> Result<i64, &'static str> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err("must not be negative");
    }
    let (int_part, frac_part) = s.split_once('.').unwrap_or((s, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("not a decimal number");
    }
    if frac_part.len() > 6 {
        return Err("more than 6 decimal places");
    }
    let mut value: i64 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()).chain(std::iter::repeat_n(b'0', 6 - frac_part.len())) {
        value = value.checked_mul(10).and_then(|v| v.checked_add(i64::from(b - b'0'))).ok_or("too large")?;
    }
    Ok(value)
}

/// Formats micro-USD as a decimal string (`12.5`).
pub fn format_usd_micro(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let abs = micro.unsigned_abs();
    let frac = format!("{:06}", abs % 1_000_000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{}", abs / 1_000_000)
    } else {
        format!("{sign}{}.{frac}", abs / 1_000_000)
    }
}

#[cfg(test)]
mod tests;
