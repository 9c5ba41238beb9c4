//! The single batch writer: queue → store, falling back to the journal; replays the journal when
//! the store is healthy; drains everything on shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::journal::{self, Journal};
use super::{LedgerConfig, LedgerError, LedgerRecord, Shared, StoreCell};

/// How often the writer checks for journal work while the queue is idle.
const MAINTENANCE_EVERY: Duration = Duration::from_millis(500);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often [`LedgerWriter::fill`] looks at the queue while a batch fills.
const FILL_POLL: Duration = Duration::from_millis(10);
/// Batches being inserted concurrently (each on its own pooled connection), so the next batch
/// is collected and sent while the previous one commits.
pub(crate) const MAX_IN_FLIGHT: usize = 2;

/// A batch handed back by the store with the insert's result.
type InsertOutcome = (Vec<LedgerRecord>, Result<u64, LedgerError>);

/// The background writer returned by [`super::start`]; run it exactly once.
pub struct LedgerWriter {
    rx: mpsc::Receiver<LedgerRecord>,
    journal: Journal,
    shared: Arc<Shared>,
    store: Arc<StoreCell>,
    batch_rows: usize,
    batch_interval: Duration,
}

impl std::fmt::Debug for LedgerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerWriter")
            .field("batch_rows", &self.batch_rows)
            .field("batch_interval", &self.batch_interval)
            .finish()
    }
}

/// Store health as the writer sees it.
struct Health {
    healthy: bool,
    backoff: Duration,
    next_retry: Instant,
}

impl Health {
    fn ok(&mut self, shared: &Shared) {
        if !self.healthy {
            tracing::info!("Ledger database is reachable again");
        }
        self.healthy = true;
        self.backoff = MIN_BACKOFF;
        shared.database_ok.store(true, Ordering::Release);
    }

    fn fail(&mut self, shared: &Shared, error: &LedgerError) {
        if self.healthy {
            tracing::warn!(%error, "Ledger database write failed; journaling until it recovers");
        } else {
            tracing::debug!(%error, "Ledger database still unavailable");
        }
        self.healthy = false;
        self.next_retry = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        shared.database_ok.store(false, Ordering::Release);
        shared.set_error(error.to_string());
    }
}

impl LedgerWriter {
    pub(crate) fn new(
        rx: mpsc::Receiver<LedgerRecord>,
        journal: Journal,
        shared: Arc<Shared>,
        store: Arc<StoreCell>,
        cfg: &LedgerConfig,
    ) -> Self {
        Self { rx, journal, shared, store, batch_rows: cfg.batch_rows, batch_interval: cfg.batch_interval }
    }

    /// Writes batches until `shutdown` is cancelled, then closes the queue (later submits go to
    /// the journal), drains it into the store (or the journal), replays the journal if the store
    /// is healthy, waits for the journal's fsync and returns. Spawn it on the task tracker and
    /// await it after cancelling.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut health = Health {
            healthy: self.shared.database_ok.load(Ordering::Acquire),
            backoff: MIN_BACKOFF,
            next_retry: Instant::now() + MIN_BACKOFF,
        };
        let mut buf: Vec<LedgerRecord> = Vec::with_capacity(self.batch_rows);
        let mut in_flight: JoinSet<InsertOutcome> = JoinSet::new();
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    self.finished(done, &mut health).await;
                }
                n = self.rx.recv_many(&mut buf, self.batch_rows), if in_flight.len() < MAX_IN_FLIGHT => {
                    if n == 0 {
                        break;
                    }
                    self.fill(&mut buf, &shutdown).await;
                    let batch = std::mem::replace(&mut buf, Vec::with_capacity(self.batch_rows));
                    if health.healthy {
                        let store = Arc::clone(&self.store);
                        in_flight.spawn(async move { store.insert(batch).await });
                    } else {
                        self.journal_batch(batch).await;
                    }
                }
                _ = tick.tick() => {}
            }
            self.maintain(&mut health).await;
        }
        while let Some(done) = in_flight.join_next().await {
            self.finished(done, &mut health).await;
        }

        // Drain: nothing new enters the queue (submit now journals), everything queued is written.
        self.rx.close();
        let mut drained = buf.len();
        if !buf.is_empty() {
            let batch = std::mem::take(&mut buf);
            self.flush(batch, &mut health).await;
        }
        loop {
            let n = self.rx.recv_many(&mut buf, self.batch_rows).await;
            if n == 0 {
                break;
            }
            drained += n;
            let batch = std::mem::replace(&mut buf, Vec::with_capacity(self.batch_rows));
            self.flush(batch, &mut health).await;
        }
        if health.healthy && self.shared.journal_dirty.load(Ordering::Acquire) {
            if let Err(error) = replay_journal(&self.store, &self.journal, &self.shared, self.batch_rows).await {
                health.fail(&self.shared, &error);
            }
        }
        let durable = self.journal.sync().await;
        tracing::info!(drained, database_ok = health.healthy, journal_durable = durable, "Ledger writer stopped");
    }

    /// Tops the batch up until `batch_rows` or `batch_interval` after its first record.
    ///
    /// Polls the queue on a short timer instead of waiting on it (issue 17): a waiting receiver is
    /// woken by every `submit`, i.e. one task wake-up on the serving threads per request; polled,
    /// the request path only pushes (no wake) and the writer wakes a few times per batch.
    async fn fill(&mut self, buf: &mut Vec<LedgerRecord>, shutdown: &CancellationToken) {
        let deadline = Instant::now() + self.batch_interval;
        loop {
            while buf.len() < self.batch_rows {
                match self.rx.try_recv() {
                    Ok(record) => buf.push(record),
                    // Empty, or every sender gone (the caller's next `recv_many` sees the close).
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if buf.len() >= self.batch_rows || now >= deadline || shutdown.is_cancelled() || self.rx.is_closed() {
                return;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(deadline.min(now + FILL_POLL)) => {}
            }
        }
    }

    /// Writes one batch to the store, or to the journal when the store is (known to be) down.
    async fn flush(&self, batch: Vec<LedgerRecord>, health: &mut Health) {
        if batch.is_empty() {
            return;
        }
        if health.healthy {
            let outcome = self.store.insert(batch).await;
            self.finished(Ok(outcome), health).await;
        } else {
            self.journal_batch(batch).await;
        }
    }

    /// Accounts for a finished insert; a failed batch goes to the journal.
    async fn finished(&self, done: Result<InsertOutcome, tokio::task::JoinError>, health: &mut Health) {
        match done {
            Ok((batch, Ok(_))) => {
                self.shared.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                health.ok(&self.shared);
            }
            Ok((batch, Err(error))) => {
                health.fail(&self.shared, &error);
                self.journal_batch(batch).await;
            }
            Err(error) => {
                // Only a panic inside the store could get here; the batch went with it.
                tracing::error!(%error, "Ledger insert task failed; its batch is lost");
                self.shared.set_error(error.to_string());
            }
        }
    }

    async fn journal_batch(&self, batch: Vec<LedgerRecord>) {
        if batch.is_empty() {
            return;
        }
        if !self.journal.append_batch(batch).await {
            tracing::error!("Ledger journal is failing too; records are held in memory and retried");
        }
    }

    /// Replays the journal when there is something in it and the store is (maybe) back.
    async fn maintain(&self, health: &mut Health) {
        let dirty = self.shared.journal_dirty.load(Ordering::Acquire);
        if health.healthy && !dirty {
            return;
        }
        if !health.healthy && Instant::now() < health.next_retry {
            return;
        }
        let res = match self.store.ping().await {
            Ok(()) => replay_journal(&self.store, &self.journal, &self.shared, self.batch_rows).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => health.ok(&self.shared),
            Err(error) => health.fail(&self.shared, &error),
        }
    }
}

/// Seals the journal and commits every sealed segment in order, deleting each segment only after
/// all its records are committed. Idempotent: records already stored are ignored by the store.
pub(crate) async fn replay_journal(
    store: &StoreCell,
    journal: &Journal,
    shared: &Shared,
    batch_rows: usize,
) -> Result<(), LedgerError> {
    shared.journal_dirty.store(false, Ordering::Release);
    let res = replay_sealed(store, journal, shared, batch_rows).await;
    if res.is_err() {
        shared.journal_dirty.store(true, Ordering::Release);
    }
    res
}

async fn replay_sealed(
    store: &StoreCell,
    journal: &Journal,
    shared: &Shared,
    batch_rows: usize,
) -> Result<(), LedgerError> {
    let segments = journal.seal().await.map_err(|source| LedgerError::Io { path: "journal".into(), source })?;
    for path in segments {
        let p = path.clone();
        let segment = tokio::task::spawn_blocking(move || journal::read_segment(&p))
            .await
            .map_err(|e| LedgerError::Task(e.to_string()))?
            .map_err(|source| LedgerError::Io { path: path.clone(), source })?;
        let total = segment.records.len() as u64;
        let mut records = segment.records;
        while !records.is_empty() {
            let rest = records.split_off(records.len().min(batch_rows));
            let chunk = std::mem::replace(&mut records, rest);
            let (_, res) = store.insert(chunk).await;
            res?;
        }
        tokio::fs::remove_file(&path).await.map_err(|source| LedgerError::Io { path: path.clone(), source })?;
        if let Some(dir) = path.parent() {
            let dir = dir.to_owned();
            // Best effort: a lost unlink only means an idempotent re-replay.
            let _ = tokio::task::spawn_blocking(move || journal::sync_dir(&dir)).await;
        }
        shared.replayed.fetch_add(total, Ordering::Relaxed);
        shared.journal_skipped.fetch_add(segment.skipped, Ordering::Relaxed);
        tracing::info!(
            path = %path.display(), records = total, skipped = segment.skipped,
            "Ledger journal segment replayed"
        );
    }
    Ok(())
}
