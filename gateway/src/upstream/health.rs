//! Per-deployment circuit breakers and the target picker.
//!
//! A breaker guards one deployment and upstream model (a provider entry, i.e. one base URL and key, plus
//! the model name sent to it: [`breaker_key`]), so one model's failures never close another's traffic
//! (issue 11, item 6). It opens after `failures` consecutive failures, stays open for `cooldown`, then
//! lets exactly one probe request through (half-open): success closes it, failure re-opens it. Which
//! failures count is the caller's decision (`services::error::Error::is_deployment_failure`: connect
//! errors, timeouts, transport failures, 5xx/529; never a client error). Lock-free: atomics only, never
//! held across an await.
//!
//! Bounded: an entry exists only while its deployment has failures on record (a success removes it), and
//! at most [`MAX_TRACKED`] are kept, so clients naming endless models cannot grow the map.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::domain::config::BreakerPolicy;
use crate::domain::routing::RouteTarget;

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: AtomicU32,
    /// Milliseconds since `Breakers::epoch` until which the breaker is open; 0 = closed.
    open_until_ms: AtomicU64,
    /// When the half-open probe was sent (ms since epoch); 0 = none. A probe whose request was abandoned
    /// (client hung up) expires after one cooldown instead of blocking the deployment forever.
    probe_started_ms: AtomicU64,
}

/// The state of one deployment's breaker, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Most breakers tracked at once; beyond it, closed ones are dropped first, then new failures go untracked.
pub const MAX_TRACKED: usize = 4096;

/// The breaker key of a deployment and model: `provider/model` (provider ids cannot contain `/`).
pub fn breaker_key(target: &RouteTarget) -> String {
    let mut key = String::with_capacity(target.provider.id.len() + 1 + target.upstream_model.len());
    key.push_str(&target.provider.id);
    key.push('/');
    key.push_str(&target.upstream_model);
    key
}

/// All breakers, keyed by [`breaker_key`].
#[derive(Debug)]
pub struct Breakers {
    map: DashMap<String, Arc<Breaker>>,
    /// Entries in `map` (an upper bound while one is being added or removed). Zero in the normal
    /// case, every deployment healthy: then no request builds a key or looks one up (issue 17).
    tracked: AtomicUsize,
    policy: BreakerPolicy,
    epoch: Instant,
}

impl Breakers {
    /// Empty breakers with `policy`.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self { map: DashMap::new(), tracked: AtomicUsize::new(0), policy, epoch: Instant::now() }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// The breaker of `id` when it has failures on record; `None` is a closed breaker.
    fn find(&self, id: &str) -> Option<Arc<Breaker>> {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.map.get(id).map(|b| b.clone())
    }

    /// The breaker of `id`, created to record a failure; `None` when the map is full of open breakers.
    fn get_or_track(&self, id: &str) -> Option<Arc<Breaker>> {
        if let Some(b) = self.find(id) {
            return Some(b);
        }
        if self.map.len() >= MAX_TRACKED {
            let now = self.now_ms();
            self.map.retain(|_, b| b.open_until_ms.load(Ordering::Acquire) > now);
            self.tracked.store(self.map.len(), Ordering::Release);
            if self.map.len() >= MAX_TRACKED {
                return None;
            }
        }
        // Counted before it exists, so a reader that sees no entry counted sees no entry.
        self.tracked.fetch_add(1, Ordering::AcqRel);
        let entry = self.map.entry(id.to_owned());
        if matches!(entry, dashmap::Entry::Occupied(_)) {
            self.tracked.fetch_sub(1, Ordering::AcqRel);
        }
        Some(entry.or_default().clone())
    }

    /// The current state of `id`'s breaker.
    pub fn state(&self, id: &str) -> BreakerState {
        let Some(b) = self.find(id) else { return BreakerState::Closed };
        let until = b.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            BreakerState::Closed
        } else if self.now_ms() < until {
            BreakerState::Open
        } else {
            BreakerState::HalfOpen
        }
    }

    /// True when a request may be sent to `id` now (closed, or half-open with no probe in flight).
    fn available(&self, id: &str) -> bool {
        match self.state(id) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                self.find(id).is_none_or(|b| self.probe_expired(b.probe_started_ms.load(Ordering::Acquire)))
            }
        }
    }

    /// Claims the right to send to `id`: always for a closed breaker, once for a half-open one.
    fn acquire(&self, id: &str) -> bool {
        match self.state(id) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                let Some(b) = self.find(id) else { return true };
                let current = b.probe_started_ms.load(Ordering::Acquire);
                self.probe_expired(current)
                    && b.probe_started_ms
                        .compare_exchange(current, self.now_ms(), Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
            }
        }
    }

    fn probe_expired(&self, started_ms: u64) -> bool {
        started_ms == 0 || self.now_ms().saturating_sub(started_ms) > self.cooldown_ms()
    }

    fn cooldown_ms(&self) -> u64 {
        u64::try_from(self.policy.cooldown.as_millis()).unwrap_or(u64::MAX / 2)
    }

    /// Records a success: the breaker closes (its entry is dropped).
    pub fn success(&self, id: &str) {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some((_, b)) = self.map.remove(id) {
            self.tracked.fetch_sub(1, Ordering::AcqRel);
            b.consecutive_failures.store(0, Ordering::Release);
            b.open_until_ms.store(0, Ordering::Release);
            b.probe_started_ms.store(0, Ordering::Release);
        }
    }

    /// [`Breakers::success`] for a route target; builds its key only when some breaker is tracked.
    pub fn success_of(&self, target: &RouteTarget) {
        if self.tracked.load(Ordering::Acquire) != 0 {
            self.success(&breaker_key(target));
        }
    }

    /// Records a failure: opens the breaker after `failures` in a row, or at once when a probe failed.
    pub fn failure(&self, id: &str) {
        let Some(b) = self.get_or_track(id) else { return };
        let n = b.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_probe = b.probe_started_ms.swap(0, Ordering::AcqRel) != 0;
        if n >= self.policy.failures || was_probe {
            let until = self.now_ms() + self.cooldown_ms();
            b.open_until_ms.store(until, Ordering::Release);
            tracing::warn!(deployment = %id, consecutive_failures = n, cooldown_ms = self.policy.cooldown.as_millis() as u64, "circuit opened");
        }
    }

    /// Releases a half-open probe that ended without a verdict (client cancelled, client error).
    pub fn release(&self, id: &str) {
        if let Some(b) = self.find(id) {
            b.probe_started_ms.store(0, Ordering::Release);
        }
    }

    /// Picks the next target: the best priority group with an available deployment not in `excluded`,
    /// then a weighted random choice within that group. Returns the index into `targets`.
    pub fn pick(&self, targets: &[RouteTarget], excluded: &[usize]) -> Option<usize> {
        // Every breaker closed (none tracked) and a single target: the common case, without keys.
        if targets.len() == 1 && excluded.is_empty() && self.tracked.load(Ordering::Acquire) == 0 {
            return Some(0);
        }
        let mut skip: Vec<usize> = excluded.to_vec();
        let keys: Vec<String> = targets.iter().map(breaker_key).collect();
        loop {
            let candidates: Vec<usize> =
                (0..targets.len()).filter(|i| !skip.contains(i) && self.available(&keys[*i])).collect();
            let best = candidates.iter().map(|&i| targets[i].priority).min()?;
            let group: Vec<usize> = candidates.into_iter().filter(|&i| targets[i].priority == best).collect();
            let total: u64 = group.iter().map(|&i| u64::from(targets[i].weight)).sum();
            let mut ticket = fastrand::u64(0..total.max(1));
            let mut chosen = group[0];
            for &i in &group {
                let w = u64::from(targets[i].weight);
                if ticket < w {
                    chosen = i;
                    break;
                }
                ticket -= w;
            }
            if self.acquire(&keys[chosen]) {
                return Some(chosen);
            }
            skip.push(chosen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::{ProviderConfig, ProviderKind, Timeouts};
    use std::time::Duration;

    fn target(id: &str, weight: u32, priority: u32) -> RouteTarget {
        target_for(id, "m", weight, priority)
    }

    fn target_for(id: &str, model: &str, weight: u32, priority: u32) -> RouteTarget {
        RouteTarget {
            provider: Arc::new(ProviderConfig {
                id: id.into(),
                kind: ProviderKind::OpenAi,
                base_url: "http://127.0.0.1:1/v1".into(),
                api_key: None,
                headers: Vec::new(),
                timeouts: Timeouts::default(),
                anthropic_version: String::new(),
                default_max_tokens: None,
                num_ctx: None,
                keep_alive: None,
            }),
            upstream_model: model.into(),
            weight,
            priority,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_failures_then_half_opens_for_one_probe() {
        let b = Breakers::new(BreakerPolicy { failures: 3, cooldown: Duration::from_secs(10) });
        for _ in 0..2 {
            b.failure("a/m");
        }
        assert_eq!(b.state("a/m"), BreakerState::Closed);
        b.failure("a/m");
        assert_eq!(b.state("a/m"), BreakerState::Open);
        let targets = [target("a", 1, 0)];
        assert_eq!(b.pick(&targets, &[]), None);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.state("a/m"), BreakerState::HalfOpen);
        assert_eq!(b.pick(&targets, &[]), Some(0), "one probe goes through");
        assert_eq!(b.pick(&targets, &[]), None, "a second concurrent probe does not");
        b.failure("a/m");
        assert_eq!(b.state("a/m"), BreakerState::Open, "a failed probe re-opens at once");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.pick(&targets, &[]), Some(0));
        b.success("a/m");
        assert_eq!(b.state("a/m"), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn picks_by_priority_then_weight_and_skips_open_or_excluded() {
        let b = Breakers::new(BreakerPolicy { failures: 1, cooldown: Duration::from_secs(10) });
        let targets = [target("a", 1, 0), target("b", 3, 1), target("c", 1, 1)];
        assert_eq!(b.pick(&targets, &[]), Some(0));
        assert_ne!(b.pick(&targets, &[0]), Some(0));
        b.failure("a/m");
        let mut counts = [0u32; 3];
        for _ in 0..4000 {
            counts[b.pick(&targets, &[]).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0, "open breaker is skipped");
        let share_b = f64::from(counts[1]) / 4000.0;
        assert!((0.70..0.80).contains(&share_b), "weight 3:1 gives ~75%, got {share_b}");
        assert_eq!(b.pick(&targets, &[1, 2]), None);
    }

    /// Issue 11, item 6: one model's failures open only its own breaker; other models of the same
    /// deployment stay available, and a success forgets the entry.
    #[tokio::test(start_paused = true)]
    async fn breakers_are_per_deployment_and_model() {
        let b = Breakers::new(BreakerPolicy { failures: 2, cooldown: Duration::from_secs(10) });
        let (x, y) = (target_for("a", "x", 1, 0), target_for("a", "y", 1, 0));
        assert_eq!(breaker_key(&x), "a/x");
        b.failure("a/x");
        b.failure("a/x");
        assert_eq!(b.state("a/x"), BreakerState::Open);
        assert_eq!(b.state("a/y"), BreakerState::Closed);
        assert_eq!(b.pick(std::slice::from_ref(&x), &[]), None);
        assert_eq!(b.pick(std::slice::from_ref(&y), &[]), Some(0));
        b.failure("a/y");
        b.success("a/y");
        assert_eq!(b.map.len(), 1, "a success drops the entry");
    }

    #[tokio::test(start_paused = true)]
    async fn tracked_breakers_are_bounded() {
        let b = Breakers::new(BreakerPolicy { failures: 3, cooldown: Duration::from_secs(10) });
        for i in 0..MAX_TRACKED + 100 {
            b.failure(&format!("a/model-{i}"));
        }
        assert!(b.map.len() <= MAX_TRACKED, "{} entries", b.map.len());
    }
}
