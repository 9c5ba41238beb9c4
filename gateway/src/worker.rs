//! The batch worker: a front door (layer 4) that schedules batch work on this replica when
//! `batches.worker` is on (the default). It decides *when* and *how much*, never *how*: each batch
//! step is `services::batches::advance`, each line `services::batches::execute` (the chat service,
//! metering, fenced commits).
//!
//! - **Coordinator**: every tick, advances the active batches (validation, expiry, cancel drain,
//!   finalization; each step fenced by a lease on the batch row) and refreshes the batch gauges.
//! - **Lanes**: one dispatcher per provider (plus one for lines whose model routes nowhere). A lane
//!   holds at most `batches.lanes.<provider>` (default `lane_concurrency`) lines in flight on this
//!   replica and claims only as many as it has room for, so a replica never leases work it cannot
//!   start. A 429 pauses the lane for its `retry-after` (the line is requeued without spending its
//!   retry budget). While a line runs its lease is renewed every third of the lease time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::domain::time::now_unix_ms;
use crate::services::batches::{self, Executed};
use crate::services::AppState;

/// Active batches advanced per coordinator tick.
const BATCHES_PER_TICK: i64 = 100;

/// A fresh worker identity per process start: a restarted replica never mistakes an old lease for its own.
fn owner_id() -> String {
    let mut id = String::from("w_");
    for _ in 0..16 {
        id.push(fastrand::alphanumeric());
    }
    id
}

/// Runs the coordinator and one dispatcher per lane until shutdown.
pub async fn run(state: Arc<AppState>) {
    let Some(b) = state.batches.clone() else { return };
    let owner = Arc::<str>::from(owner_id());
    tracing::info!(worker = %owner, shared = b.store.is_shared(), "batch worker started");
    let mut lanes: Vec<String> = state.config.providers.iter().map(|p| p.id.clone()).collect();
    lanes.push(String::new());
    for lane in lanes {
        state.tasks.spawn(dispatch(state.clone(), owner.clone(), lane));
    }
    coordinate(state, owner).await;
}

async fn coordinate(state: Arc<AppState>, owner: Arc<str>) {
    let Some(b) = state.batches.clone() else { return };
    let tick = b.settings.poll.max(Duration::from_millis(200));
    let mut last_gauges = 0i64;
    loop {
        match b.store.active_batches(BATCHES_PER_TICK).await {
            Ok(active) => {
                for (id, status) in active {
                    if let Err(e) = batches::advance(&state, &owner, &id, &status).await {
                        tracing::warn!(batch_id = %id, error = %e, "batch step failed; retried next tick");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "batch store unavailable to the worker"),
        }
        if now_unix_ms() - last_gauges > 2000 {
            last_gauges = now_unix_ms();
            refresh_gauges(&b).await;
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
    }
}

async fn refresh_gauges(b: &batches::Batches) {
    let Some(m) = &b.metrics else { return };
    if let Ok(statuses) = b.store.status_counts().await {
        for s in
            ["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"]
        {
            let n = statuses.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
            m.batches.with_label_values(&[s]).set(n);
        }
    }
    if let Ok(g) = b.store.queue_gauge().await {
        for (state, n) in
            [("queued", g.queued), ("running", g.running), ("succeeded", g.succeeded), ("failed", g.failed)]
        {
            m.lines.with_label_values(&[state]).set(n);
        }
    }
}

async fn dispatch(state: Arc<AppState>, owner: Arc<str>, lane: String) {
    let Some(b) = state.batches.clone() else { return };
    let size = b.settings.lane(&lane);
    let slots = Arc::new(Semaphore::new(size as usize));
    // Lane pause (unix ms) after a 429, shared by this lane's lines.
    let paused_until = Arc::new(AtomicI64::new(0));
    let lease_ms = i64::try_from(b.settings.lease.as_millis()).unwrap_or(60_000);
    let label = if lane.is_empty() { "unrouted" } else { lane.as_str() };
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        let pause = paused_until.load(Ordering::Relaxed) - now_unix_ms();
        if pause > 0 {
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(u64::try_from(pause).unwrap_or(0))) => {}
            }
            continue;
        }
        // Wait for room, then claim as many lines as there is room for.
        let first = tokio::select! {
            () = state.shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let want = permits.len() as i64;
        let claimed = match b.store.claim(&lane, want, &owner, lease_ms).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(lane = label, error = %e, "batch claim failed");
                Vec::new()
            }
        };
        let got = claimed.len() as i64;
        for line in claimed {
            let Some(permit) = permits.pop() else { break };
            let state = state.clone();
            let b = b.clone();
            let paused_until = paused_until.clone();
            let label = label.to_owned();
            state.clone().tasks.spawn(async move {
                let _permit = permit;
                if let Some(m) = &b.metrics {
                    m.lane_inflight.with_label_values(&[&label]).inc();
                    if line.redispatch {
                        m.redispatch.inc();
                    }
                }
                let renew = b.settings.lease / 3;
                let run = batches::execute(&state, &line);
                tokio::pin!(run);
                let outcome = loop {
                    tokio::select! {
                        out = &mut run => break out,
                        () = tokio::time::sleep(renew) => {
                            if !b.store.heartbeat(&line, lease_ms).await.unwrap_or(true) {
                                tracing::warn!(batch_id = %line.batch_id, line = line.line_no, "lease lost while running; the result will be dropped");
                            }
                        }
                    }
                };
                match outcome {
                    Ok(Executed::RateLimited { retry_after }) => {
                        let until = now_unix_ms() + i64::try_from(retry_after.as_millis()).unwrap_or(1000);
                        paused_until.fetch_max(until, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(batch_id = %line.batch_id, line = line.line_no, error = %e, "batch line not committed; its lease will expire"),
                }
                if let Some(m) = &b.metrics {
                    m.lane_inflight.with_label_values(&[&label]).dec();
                }
            });
        }
        drop(permits);
        if got < want {
            // Nothing more to do right now: wait a tick (new work is found by polling).
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                () = tokio::time::sleep(b.settings.poll) => {}
            }
        }
    }
}
