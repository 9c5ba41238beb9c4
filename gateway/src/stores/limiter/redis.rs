//! Counters shared by every replica through Redis.
//!
//! One Lua script checks and books all of a request's counters atomically (`ADMIT`), one applies the
//! settlement (`SETTLE`). Both take their time from the Redis server (`TIME`), so replicas with skewed
//! clocks still agree on windows. Keys:
//! - `{prefix}:{t|k}:{id}:{rpm|tpm}:{minute}`: window counters (integers, expire after 3 minutes);
//! - `{prefix}:{t|k}:{id}:conc`: a sorted set of in-flight requests scored by start time; members
//!   older than `concurrency_stale` (a crashed replica's) are reclaimed on the next admission;
//! - `{prefix}:{t|k}:{id}:budget:{YYYYMM}`: nano-USD spent this month (expires after 40 days). A
//!   missing budget counter is never treated as zero: `ADMIT` answers "unseeded" and the limiter
//!   seeds it from the ledger (`SET NX`) and asks again, so a restarted replica, a second replica,
//!   a flushed or failed-over Redis all start from the month's real spend (issue 11, item 4).
//!
//! The script derives window keys from its `KEYS`, so it needs a single Redis (or one hash slot), not
//! a cluster.
//!
//! Every call has a deadline (`redis_timeout`). A failure marks Redis down: admissions use the local
//! counters until the health task's `PING` succeeds again (checked every second).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio_util::sync::CancellationToken;

use super::{Check, LimitKind, Seen, Verdict};

/// What one run of the admission script decided.
#[derive(Debug)]
pub(crate) enum RedisAdmit {
    /// Checked (and booked when admitted) at the server's time, unix ms.
    Decided(i64, Verdict),
    /// The budget counter of `checks[index]` does not exist: seed it from the ledger and retry.
    /// Nothing was booked.
    Unseeded(usize),
}
use crate::metrics::Metrics;

const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win = math.floor(now / 60000)
local elapsed = (now % 60000) / 60000
local stale = tonumber(ARGV[1])
local member = ARGV[2]
local seen = {1, now}
for i = 1, #KEYS do
  if ARGV[3 + (i - 1) * 3] == 'b' and redis.call('EXISTS', KEYS[i]) == 0 then
    return {2, now, i - 1}
  end
end
for i = 1, #KEYS do
  local kind = ARGV[3 + (i - 1) * 3]
  local limit = tonumber(ARGV[4 + (i - 1) * 3])
  local amount = tonumber(ARGV[5 + (i - 1) * 3])
  local base = KEYS[i]
  local cur, prev, ok = 0, 0, true
  if kind == 'w' then
    cur = tonumber(redis.call('GET', base .. ':' .. string.format('%d', win)) or '0')
    prev = tonumber(redis.call('GET', base .. ':' .. string.format('%d', win - 1)) or '0')
    ok = math.floor(prev * (1 - elapsed)) + cur + amount <= limit
  elseif kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', base, '-inf', now - stale)
    cur = redis.call('ZCARD', base)
    ok = cur + 1 <= limit
  else
    cur = tonumber(redis.call('GET', base) or '0')
    ok = cur < limit
  end
  if not ok then
    return {0, now, i - 1, cur, prev}
  end
  seen[#seen + 1] = cur
  seen[#seen + 1] = prev
end
for i = 1, #KEYS do
  local kind = ARGV[3 + (i - 1) * 3]
  local amount = tonumber(ARGV[5 + (i - 1) * 3])
  local base = KEYS[i]
  if kind == 'w' then
    local k = base .. ':' .. string.format('%d', win)
    redis.call('INCRBY', k, amount)
    redis.call('PEXPIRE', k, 180000)
  elseif kind == 'c' then
    redis.call('ZADD', base, now, member)
    redis.call('PEXPIRE', base, stale)
  else
    redis.call('INCRBY', base, amount)
    redis.call('EXPIRE', base, 3456000)
  end
end
return seen
";

const SETTLE: &str = r"
for i = 1, #KEYS do
  local kind = ARGV[2 + (i - 1) * 2]
  local d = tonumber(ARGV[3 + (i - 1) * 2])
  if kind == 'c' then
    redis.call('ZREM', KEYS[i], ARGV[1])
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    local v = redis.call('INCRBY', KEYS[i], d)
    if v < 0 then
      redis.call('SET', KEYS[i], 0, 'KEEPTTL')
    end
  end
end
return 1
";

/// Budget counters live 40 days: long enough to outlive their month.
const BUDGET_TTL_SECS: u64 = 40 * 86_400;
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The Redis side of the limiter; cheap to clone.
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    admit: Script,
    settle: Script,
    timeout: Duration,
    up: AtomicBool,
    metrics: Option<Arc<Metrics>>,
}

impl RedisLimiter {
    /// A lazily connected client; nothing is sent until the first call.
    ///
    /// # Errors
    /// The URL does not parse.
    pub fn new(url: &str, timeout: Duration, metrics: Option<Arc<Metrics>>) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid redis_url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("redis connection manager: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                admit: Script::new(ADMIT),
                settle: Script::new(SETTLE),
                timeout,
                up: AtomicBool::new(false),
                metrics,
            }),
        })
    }

    /// True while the last call or health check succeeded.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    fn set_up(&self, up: bool, why: &str) {
        let was = self.inner.up.swap(up, Ordering::AcqRel);
        if let Some(m) = &self.inner.metrics {
            m.limits_redis_up.set(i64::from(up));
        }
        if was && !up {
            tracing::warn!(error = why, "Redis is unreachable: rate limits fall back to per-replica counters");
        } else if !was && up {
            tracing::info!("Redis reachable: rate limits are shared across replicas");
        }
    }

    /// One `PING`; updates the up flag.
    pub async fn check(&self) -> bool {
        let mut conn = self.inner.conn.clone();
        let res = tokio::time::timeout(self.inner.timeout.max(Duration::from_millis(500)), async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await;
        match res {
            Ok(Ok(_)) => {
                self.set_up(true, "");
                true
            }
            Ok(Err(e)) => {
                self.set_up(false, &e.to_string());
                false
            }
            Err(_) => {
                self.set_up(false, "timeout");
                false
            }
        }
    }

    /// Health loop: one `PING` a second until `shutdown`.
    pub async fn watch(self, shutdown: CancellationToken) {
        loop {
            self.check().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(HEALTH_INTERVAL) => {}
            }
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, inv: redis::ScriptInvocation<'_>) -> Result<T, ()> {
        let mut conn = self.inner.conn.clone();
        match tokio::time::timeout(self.inner.timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.set_up(false, &e.to_string());
                Err(())
            }
            Err(_) => {
                self.set_up(false, "timeout");
                Err(())
            }
        }
    }

    /// Checks and books `checks` atomically; returns the server's time (unix ms) and the verdict,
    /// or which budget counter must be seeded first.
    pub(crate) async fn admit(&self, checks: &[Check], member: &str, stale: Duration) -> Result<RedisAdmit, ()> {
        let mut inv = self.inner.admit.prepare_invoke();
        inv.arg(i64::try_from(stale.as_millis()).unwrap_or(i64::MAX)).arg(member);
        for c in checks {
            inv.key(&c.key);
            inv.arg(kind_code(c.kind)).arg(c.limit).arg(c.amount);
        }
        let reply: Vec<i64> = self.run(inv).await?;
        match reply.as_slice() {
            [1, now, rest @ ..] if rest.len() == 2 * checks.len() => {
                let seen = rest.chunks_exact(2).map(|p| Seen { cur: p[0], prev: p[1] }).collect();
                Ok(RedisAdmit::Decided(*now, Verdict::Admitted { seen }))
            }
            [0, now, index, cur, prev] => Ok(RedisAdmit::Decided(
                *now,
                Verdict::Refused {
                    index: usize::try_from(*index).unwrap_or(0).min(checks.len().saturating_sub(1)),
                    seen: Seen { cur: *cur, prev: *prev },
                },
            )),
            [2, _now, index] => match usize::try_from(*index).ok().filter(|i| *i < checks.len()) {
                Some(i) => Ok(RedisAdmit::Unseeded(i)),
                None => {
                    self.set_up(false, "unexpected reply from the admission script");
                    Err(())
                }
            },
            _ => {
                self.set_up(false, "unexpected reply from the admission script");
                Err(())
            }
        }
    }

    /// Applies settlement deltas to the counters booked in window `index` and frees the slot.
    pub(crate) async fn settle(&self, checks: &[Check], deltas: &[(usize, i64)], window: i64, member: &str) {
        let mut inv = self.inner.settle.prepare_invoke();
        inv.arg(member);
        for (i, delta) in deltas {
            let Some(c) = checks.get(*i) else { continue };
            match c.kind {
                LimitKind::Requests | LimitKind::Tokens => inv.key(format!("{}:{window}", c.key)),
                LimitKind::Concurrency | LimitKind::Budget => inv.key(&c.key),
            };
            inv.arg(kind_code(c.kind)).arg(*delta);
        }
        // A failed settlement leaves the reservation in place (it expires with its window or month);
        // the slot is reclaimed after `concurrency_stale`.
        let _ = self.run::<i64>(inv).await;
    }

    /// Sets a budget counter's starting spend unless Redis already has one.
    pub(crate) async fn seed(&self, key: &str, spent_nano_usd: i64) -> Result<(), ()> {
        let mut conn = self.inner.conn.clone();
        let cmd =
            redis::cmd("SET").arg(key).arg(spent_nano_usd.max(0)).arg("NX").arg("EX").arg(BUDGET_TTL_SECS).to_owned();
        match tokio::time::timeout(self.inner.timeout, cmd.query_async::<Option<String>>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                self.set_up(false, &e.to_string());
                Err(())
            }
            Err(_) => {
                self.set_up(false, "timeout");
                Err(())
            }
        }
    }
}

fn kind_code(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Requests | LimitKind::Tokens => "w",
        LimitKind::Concurrency => "c",
        LimitKind::Budget => "b",
    }
}
