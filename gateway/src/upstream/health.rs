//! Per-deployment circuit breakers and the target picker.
//!
//! A breaker opens after `failures` consecutive failures of a deployment (a provider entry: one base URL
//! and key), stays open for `cooldown`, then lets exactly one probe request through (half-open): success
//! closes it, failure re-opens it. Lock-free: atomics only, never held across an await.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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

/// All breakers, keyed by provider id.
#[derive(Debug)]
pub struct Breakers {
    map: DashMap<String, Arc<Breaker>>,
    policy: BreakerPolicy,
    epoch: Instant,
}

impl Breakers {
    /// Empty breakers with `policy`.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self { map: DashMap::new(), policy, epoch: Instant::now() }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    fn get(&self, id: &str) -> Arc<Breaker> {
        if let Some(b) = self.map.get(id) {
            return b.clone();
        }
        self.map.entry(id.to_owned()).or_default().clone()
    }

    /// The current state of `id`'s breaker.
    pub fn state(&self, id: &str) -> BreakerState {
        let b = self.get(id);
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
            BreakerState::HalfOpen => self.probe_expired(self.get(id).probe_started_ms.load(Ordering::Acquire)),
        }
    }

    /// Claims the right to send to `id`: always for a closed breaker, once for a half-open one.
    fn acquire(&self, id: &str) -> bool {
        match self.state(id) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                let b = self.get(id);
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

    /// Records a success: the breaker closes.
    pub fn success(&self, id: &str) {
        let b = self.get(id);
        b.consecutive_failures.store(0, Ordering::Release);
        b.open_until_ms.store(0, Ordering::Release);
        b.probe_started_ms.store(0, Ordering::Release);
    }

    /// Records a failure: opens the breaker after `failures` in a row, or at once when a probe failed.
    pub fn failure(&self, id: &str) {
        let b = self.get(id);
        let n = b.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_probe = b.probe_started_ms.swap(0, Ordering::AcqRel) != 0;
        if n >= self.policy.failures || was_probe {
            let until = self.now_ms() + self.cooldown_ms();
            b.open_until_ms.store(until, Ordering::Release);
            tracing::warn!(provider = %id, consecutive_failures = n, cooldown_ms = self.policy.cooldown.as_millis() as u64, "circuit opened");
        }
    }

    /// Releases a half-open probe that ended without a verdict (client cancelled, client error).
    pub fn release(&self, id: &str) {
        self.get(id).probe_started_ms.store(0, Ordering::Release);
    }

    /// Picks the next target: the best priority group with an available deployment not in `excluded`,
    /// then a weighted random choice within that group. Returns the index into `targets`.
    pub fn pick(&self, targets: &[RouteTarget], excluded: &[usize]) -> Option<usize> {
        let mut skip: Vec<usize> = excluded.to_vec();
        loop {
            let candidates: Vec<usize> =
                (0..targets.len()).filter(|i| !skip.contains(i) && self.available(&targets[*i].provider.id)).collect();
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
            if self.acquire(&targets[chosen].provider.id) {
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
            upstream_model: "m".into(),
            weight,
            priority,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_failures_then_half_opens_for_one_probe() {
        let b = Breakers::new(BreakerPolicy { failures: 3, cooldown: Duration::from_secs(10) });
        for _ in 0..2 {
            b.failure("a");
        }
        assert_eq!(b.state("a"), BreakerState::Closed);
        b.failure("a");
        assert_eq!(b.state("a"), BreakerState::Open);
        let targets = [target("a", 1, 0)];
        assert_eq!(b.pick(&targets, &[]), None);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.state("a"), BreakerState::HalfOpen);
        assert_eq!(b.pick(&targets, &[]), Some(0), "one probe goes through");
        assert_eq!(b.pick(&targets, &[]), None, "a second concurrent probe does not");
        b.failure("a");
        assert_eq!(b.state("a"), BreakerState::Open, "a failed probe re-opens at once");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.pick(&targets, &[]), Some(0));
        b.success("a");
        assert_eq!(b.state("a"), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn picks_by_priority_then_weight_and_skips_open_or_excluded() {
        let b = Breakers::new(BreakerPolicy { failures: 1, cooldown: Duration::from_secs(10) });
        let targets = [target("a", 1, 0), target("b", 3, 1), target("c", 1, 1)];
        assert_eq!(b.pick(&targets, &[]), Some(0));
        assert_ne!(b.pick(&targets, &[0]), Some(0));
        b.failure("a");
        let mut counts = [0u32; 3];
        for _ in 0..4000 {
            counts[b.pick(&targets, &[]).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0, "open breaker is skipped");
        let share_b = f64::from(counts[1]) / 4000.0;
        assert!((0.70..0.80).contains(&share_b), "weight 3:1 gives ~75%, got {share_b}");
        assert_eq!(b.pick(&targets, &[1, 2]), None);
    }
}
