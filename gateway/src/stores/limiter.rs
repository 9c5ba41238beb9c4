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
use tokio_util::task::TaskTracker;

use crate::domain::limits::{
    CallerLimits, Demand, LimitKind, LimiterSettings, RateHeader, RateHeaders, Rejection, ScopeKind,
};
use crate::metrics::Metrics;
use crate::stores::ledger::{LedgerHandle, UsageQuery};

use self::redis::RedisAdmit;
pub use self::redis::RedisLimiter;

/// Length of a rate window.
pub const WINDOW_MS: i64 = 60_000;

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
    /// Local budget counters already seeded from the ledger in this process (`key:month`).
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
        let mut outcome = None;
        if let Some(r) = self.redis.as_ref().filter(|r| r.is_up()) {
            outcome = self.admit_redis(r, &checks, &member, tenant, key_id).await;
        }
        let (now, verdict, backend) = match outcome {
            Some(o) => o,
            None => {
                self.seed_local(&checks, tenant, key_id).await;
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

    /// One admission on Redis. A budget counter Redis does not have (first use this month, a new
    /// or restarted replica, a flushed or failed-over Redis) is seeded from the ledger and the
    /// admission retried, so no replica ever starts a budget from zero. `None`: use the local
    /// counters (Redis failed, or the ledger could not be read to seed a budget).
    async fn admit_redis(
        &self,
        r: &RedisLimiter,
        checks: &[Check],
        member: &str,
        tenant: &str,
        key_id: Option<&str>,
    ) -> Option<(i64, Verdict, Backend)> {
        let budgets = checks.iter().filter(|c| c.kind == LimitKind::Budget).count();
        // Each round seeds at most one counter; one more round decides.
        for _ in 0..=budgets {
            // An error is logged and counted by the Redis limiter; the local counters take over.
            match r.admit(checks, member, self.settings.concurrency_stale).await.ok()? {
                RedisAdmit::Decided(now, verdict) => return Some((now, verdict, Backend::Redis)),
                RedisAdmit::Unseeded(i) => {
                    let check = &checks[i];
                    let spent = self.month_spend(check, tenant, key_id).await.ok()?;
                    r.seed(&check.key, spent).await.ok()?;
                }
            }
        }
        None
    }

    /// Loads this month's spend from the ledger into the local budget counters not seeded yet in
    /// this process, so a restart does not hand out a fresh budget. A counter whose ledger read
    /// fails is retried at the next admission.
    async fn seed_local(&self, checks: &[Check], tenant: &str, key_id: Option<&str>) {
        for check in checks.iter().filter(|c| c.kind == LimitKind::Budget) {
            if self.seeded.contains_key(&check.key) {
                continue;
            }
            if let Ok(spent) = self.month_spend(check, tenant, key_id).await {
                self.local.seed(&check.key, spent);
                self.seeded.insert(check.key.clone(), ());
            }
        }
    }

    /// This month's spend (nano-USD) of the tenant or key a budget check is for, from the ledger.
    /// Records not committed yet (in a replica's queue or journal) are not included.
    ///
    /// # Errors
    /// The ledger cannot be read (logged here).
    async fn month_spend(&self, check: &Check, tenant: &str, key_id: Option<&str>) -> Result<i64, ()> {
        let Some(ledger) = &self.ledger else { return Ok(0) };
        let key_id = match check.scope {
            ScopeKind::Tenant => None,
            ScopeKind::Key => match key_id {
                Some(k) => Some(k.to_owned()),
                None => return Ok(0),
            },
        };
        let q = UsageQuery {
            from_unix_ms: Some(month_start_ms(now_ms())),
            tenant: Some(tenant.to_owned()),
            key_id,
            ..UsageQuery::default()
        };
        match ledger.usage(&q).await {
            Ok(rows) => Ok(rows.iter().map(|r| r.cost_nano_usd).sum::<i64>()),
            Err(error) => {
                tracing::warn!(
                    %error, counter = %check.key,
                    "Could not read this month's spend from the ledger; the budget counter is seeded later"
                );
                Err(())
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
    crate::domain::time::now_unix_ms()
}

pub(crate) use crate::domain::time::{month_of, month_start_ms, ms_to_next_month};

#[cfg(test)]
mod tests;
