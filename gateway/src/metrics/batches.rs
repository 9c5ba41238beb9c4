//! Batch metrics: batches by status and lines by state (gauges refreshed from the store by the worker),
//! lane concurrency, and the duplicate upstream dispatches that crash recovery may cause (a line taken
//! over from an expired lease: the provider may have run it twice, the ledger bills it once).

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};

use super::{must, Metrics};

/// The batch series, registered once in the gateway registry.
#[derive(Debug, Clone)]
pub struct BatchMetrics {
    /// `aggregator_batches{status}`: batches per status (all time, from the store).
    pub batches: IntGaugeVec,
    /// `aggregator_batch_lines{state}`: lines of active batches: queued, running, succeeded, failed.
    pub lines: IntGaugeVec,
    /// `aggregator_batch_lines_finished_total{result}`: lines this replica finished (`succeeded`,
    /// `failed`, `cancelled`, `expired`).
    pub finished: IntCounterVec,
    /// `aggregator_batch_lane_inflight{provider}`: lines running per provider lane on this replica.
    pub lane_inflight: IntGaugeVec,
    /// `aggregator_batch_redispatch_total`: lines re-sent upstream after an expired lease.
    pub redispatch: IntCounter,
    /// `aggregator_batch_requeues_total{reason}`: lines put back in the queue (`rate_limited`, `retry`).
    pub requeues: IntCounterVec,
    /// `aggregator_batch_stale_commits_total`: results dropped because the lease had been lost (fencing).
    pub stale_commits: IntCounter,
}

impl BatchMetrics {
    /// Registers the batch series in `m`'s registry.
    pub fn new(m: &Metrics) -> Self {
        let batches = must(IntGaugeVec::new(Opts::new("aggregator_batches", "Batches by status."), &["status"]));
        let lines = must(IntGaugeVec::new(
            Opts::new("aggregator_batch_lines", "Lines of active batches by state."),
            &["state"],
        ));
        let finished = must(IntCounterVec::new(
            Opts::new("aggregator_batch_lines_finished_total", "Batch lines finished by this replica."),
            &["result"],
        ));
        let lane_inflight = must(IntGaugeVec::new(
            Opts::new("aggregator_batch_lane_inflight", "Batch lines in flight per provider lane."),
            &["provider"],
        ));
        let redispatch = must(IntCounter::new(
            "aggregator_batch_redispatch_total",
            "Batch lines dispatched upstream again after a lost lease (billed once).",
        ));
        let requeues = must(IntCounterVec::new(
            Opts::new("aggregator_batch_requeues_total", "Batch lines put back in the queue."),
            &["reason"],
        ));
        let stale_commits = must(IntCounter::new(
            "aggregator_batch_stale_commits_total",
            "Batch line results dropped because another replica had taken the line over.",
        ));
        for c in [
            Box::new(batches.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lines.clone()),
            Box::new(finished.clone()),
            Box::new(lane_inflight.clone()),
            Box::new(redispatch.clone()),
            Box::new(requeues.clone()),
            Box::new(stale_commits.clone()),
        ] {
            must(m.registry.register(c));
        }
        Self { batches, lines, finished, lane_inflight, redispatch, requeues, stale_commits }
    }
}
