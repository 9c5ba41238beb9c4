//! The usage ledger: exactly one [`LedgerRecord`] per request, written asynchronously to
//! Postgres (when a database URL is set) or to an embedded SQLite file under `data_dir`.
//!
//! Life of a record (see `docs/LEDGER.md`):
//! 1. The request path calls [`LedgerHandle::submit`]: a `try_send` on a bounded tokio mpsc.
//!    It never awaits. When the queue is full (or the writer has stopped) the record goes to the
//!    on-disk journal through the journal thread's unbounded channel instead. Never dropped.
//! 2. [`LedgerWriter::run`] takes batches with `recv_many` (up to `batch_rows`, or whatever
//!    arrived within `batch_interval` of the first record) and inserts each in one statement,
//!    idempotent on `record_id` (server-generated, never the client's `x-request-id`). A failed batch is journaled (fsynced) and the store is retried
//!    with backoff.
//! 3. Journal segments are replayed in order when the store is healthy again and at every start,
//!    and deleted only after all their records are committed.
//!
//! Crash bound: a `kill -9` loses at most the records not yet committed nor journaled: those in
//! the queue, in the batch being filled, and in the batches being inserted, i.e.
//! `queue_capacity + (MAX_IN_FLIGHT + 1) * batch_rows` records (`MAX_IN_FLIGHT` = 2), plus
//! overflow records handed to the journal thread but not yet fsynced (one group commit).
//! In steady state the queue is near empty, so the loss is about `batch_interval` plus one insert
//! round trip of traffic. Graceful shutdown loses nothing.

mod browse;
mod journal;
mod postgres;
mod query;
mod record;
pub(crate) mod rollup;
mod sqlite;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc;

pub use crate::metrics::LedgerStats;
pub use browse::{Cursor, LatencyStats, RecordSummary};
pub use query::{regroup, Bucket, GroupBy, UsageQuery, UsageRow};
pub use record::{new_record_id, LedgerRecord, RecordStatus, RECORD_ID_PREFIX};
pub use rollup::{LATENCY_BOUNDS_MS, LATENCY_BUCKETS};
pub use writer::LedgerWriter;

use journal::Journal;

/// Subdirectory of `data_dir` holding journal segments.
pub const JOURNAL_DIR: &str = "journal";

/// Ledger settings. `Default` gives an embedded store under `./data`.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Postgres URL (`postgres://user@host:5432/db`); `None` or empty = embedded SQLite.
    pub database_url: Option<String>,
    /// Holds the journal and, without a database URL, `ledger.sqlite3`. Created if missing.
    pub data_dir: PathBuf,
    /// Records buffered between the request path and the writer (default 8192); also the bulk of
    /// the kill -9 loss bound.
    pub queue_capacity: usize,
    /// Most records per insert (default 1000).
    pub batch_rows: usize,
    /// Longest wait for a batch to fill after its first record (default 100 ms).
    pub batch_interval: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            data_dir: PathBuf::from("./data"),
            queue_capacity: 8192,
            batch_rows: 1000,
            batch_interval: Duration::from_millis(100),
        }
    }
}

/// Ledger failures. Only [`start`] failures are fatal; write failures are journaled and retried.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database URL or a setting is invalid.
    #[error("invalid ledger configuration: {0}")]
    Config(String),
    /// The database cannot be reached (connect, pool timeout).
    #[error("ledger database unavailable: {0}")]
    Unavailable(String),
    /// A Postgres error.
    #[error("ledger Postgres error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A SQLite error.
    #[error("ledger SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The journal or data directory failed.
    #[error("ledger I/O error at `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("ledger task failed: {0}")]
    Task(String),
    /// A usage query is invalid (bad time, unknown group).
    #[error("invalid usage query: {0}")]
    Query(String),
}

impl LedgerError {
    /// A metric label.
    pub fn label(&self) -> &'static str {
        match self {
            LedgerError::Config(_) => "config",
            LedgerError::Unavailable(_) => "unavailable",
            LedgerError::Postgres(_) => "postgres",
            LedgerError::Sqlite(_) => "sqlite",
            LedgerError::Io { .. } => "io",
            LedgerError::Task(_) => "task",
            LedgerError::Query(_) => "query",
        }
    }
}

/// State shared by the handle, the writer and the journal thread (atomics only).
pub(crate) struct Shared {
    written: AtomicU64,
    batches: AtomicU64,
    journaled: AtomicU64,
    replayed: AtomicU64,
    journal_skipped: AtomicU64,
    database_ok: AtomicBool,
    journal_ok: AtomicBool,
    /// Set by the journal thread when it wrote records; cleared by the writer before a replay.
    journal_dirty: AtomicBool,
    last_error: ArcSwapOption<String>,
}

impl Shared {
    fn new() -> Self {
        Self {
            written: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            journaled: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            journal_skipped: AtomicU64::new(0),
            database_ok: AtomicBool::new(false),
            journal_ok: AtomicBool::new(true),
            journal_dirty: AtomicBool::new(false),
            last_error: ArcSwapOption::empty(),
        }
    }

    pub(crate) fn set_error(&self, msg: String) {
        self.last_error.store(Some(Arc::new(msg)));
    }
}

/// Where records are stored.
pub(crate) enum Store {
    Postgres(postgres::PgStore),
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// Inserts a batch; hands it back so a failed batch can be journaled without a clone.
    async fn insert(&self, batch: Vec<LedgerRecord>) -> (Vec<LedgerRecord>, Result<u64, LedgerError>) {
        match self {
            Store::Postgres(pg) => {
                let res = pg.insert(&batch).await;
                (batch, res)
            }
            Store::Sqlite(lite) => lite.insert(batch).await,
        }
    }

    /// Makes sure the schema is current (Postgres may have been down at start).
    async fn ensure_ready(&self, migrated: &AtomicBool) -> Result<(), LedgerError> {
        if migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        match self {
            Store::Postgres(pg) => pg.migrate().await?,
            Store::Sqlite(_) => {}
        }
        migrated.store(true, Ordering::Release);
        Ok(())
    }
}

/// The store plus whether its migrations ran.
pub(crate) struct StoreCell {
    store: Store,
    migrated: AtomicBool,
}

impl StoreCell {
    async fn insert(&self, batch: Vec<LedgerRecord>) -> (Vec<LedgerRecord>, Result<u64, LedgerError>) {
        if let Err(e) = self.store.ensure_ready(&self.migrated).await {
            return (batch, Err(e));
        }
        self.store.insert(batch).await
    }

    /// Checks the store answers (and its schema is current).
    async fn ping(&self) -> Result<(), LedgerError> {
        self.store.ensure_ready(&self.migrated).await?;
        match &self.store {
            Store::Postgres(pg) => pg.ping().await,
            Store::Sqlite(_) => Ok(()),
        }
    }
}

/// Opens the store, applies migrations, replays any journal left by a previous run, and returns
/// the request-path handle and the writer (which the caller runs on its task tracker).
///
/// An unreachable Postgres is not fatal: the ledger starts journaling and retries in the
/// background (`stats().database_ok` is false meanwhile).
///
/// # Errors
/// [`LedgerError::Config`] for a bad URL or zero sizes; [`LedgerError::Io`] when `data_dir` or
/// the journal cannot be created; [`LedgerError::Sqlite`] when the embedded database cannot be
/// opened or migrated.
pub async fn start(cfg: LedgerConfig) -> Result<(LedgerHandle, LedgerWriter), LedgerError> {
    if cfg.queue_capacity == 0 || cfg.batch_rows == 0 {
        return Err(LedgerError::Config("queue_capacity and batch_rows must be at least 1".to_owned()));
    }
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| LedgerError::Io { path, source }
    };
    tokio::fs::create_dir_all(&cfg.data_dir).await.map_err(io_err(&cfg.data_dir))?;
    let shared = Arc::new(Shared::new());
    let journal_dir = cfg.data_dir.join(JOURNAL_DIR);
    let journal = Journal::open(&journal_dir, Arc::clone(&shared)).map_err(io_err(&journal_dir))?;

    let url = cfg.database_url.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let store = match url {
        Some(url) => Store::Postgres(postgres::PgStore::new(url)?),
        None => Store::Sqlite(sqlite::SqliteStore::open(&cfg.data_dir).await?),
    };
    let cell = Arc::new(StoreCell { migrated: AtomicBool::new(matches!(store, Store::Sqlite(_))), store });

    // Migrations and the replay of a previous run's journal. Failure here means the database is
    // down: keep going, the writer retries.
    match cell.store.ensure_ready(&cell.migrated).await {
        Ok(()) => {
            shared.database_ok.store(true, Ordering::Release);
            if let Err(error) = writer::replay_journal(&cell, &journal, &shared, cfg.batch_rows).await {
                shared.database_ok.store(false, Ordering::Release);
                shared.journal_dirty.store(true, Ordering::Release);
                shared.set_error(error.to_string());
                tracing::warn!(%error, "Ledger journal replay failed at start; will retry");
            }
        }
        Err(error) => {
            shared.journal_dirty.store(true, Ordering::Release);
            shared.set_error(error.to_string());
            tracing::warn!(
                %error,
                "Ledger database unavailable at start; records are journaled until it is back"
            );
        }
    }

    let (tx, rx) = mpsc::channel(cfg.queue_capacity);
    let handle = LedgerHandle { tx, journal: journal.clone(), shared: Arc::clone(&shared), store: Arc::clone(&cell) };
    let writer = LedgerWriter::new(rx, journal, shared, cell, &cfg);
    Ok((handle, writer))
}

/// The request-path side of the ledger; cheap to clone.
#[derive(Clone)]
pub struct LedgerHandle {
    tx: mpsc::Sender<LedgerRecord>,
    journal: Journal,
    shared: Arc<Shared>,
    store: Arc<StoreCell>,
}

impl std::fmt::Debug for LedgerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerHandle").field("stats", &self.stats()).finish()
    }
}

impl LedgerHandle {
    /// Hands a record to the writer without waiting. When the queue is full, or the writer has
    /// shut down, the record goes to the on-disk journal (through the journal thread; no fsync
    /// wait here). Never blocks on the database, never drops.
    pub fn submit(&self, record: LedgerRecord) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(record) | mpsc::error::TrySendError::Closed(record)) => {
                self.journal.append(record);
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LedgerStats {
        let s = &self.shared;
        LedgerStats {
            queue_depth: self.tx.max_capacity() - self.tx.capacity(),
            queue_capacity: self.tx.max_capacity(),
            written: s.written.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            journaled: s.journaled.load(Ordering::Relaxed),
            replayed: s.replayed.load(Ordering::Relaxed),
            journal_skipped: s.journal_skipped.load(Ordering::Relaxed),
            database_ok: s.database_ok.load(Ordering::Acquire),
            journal_ok: s.journal_ok.load(Ordering::Acquire),
            last_error: s.last_error.load_full().map(|e| (*e).clone()),
        }
    }

    /// True while records can be persisted somewhere: the database is reachable or the journal
    /// is writable (for readiness probes).
    pub fn is_writable(&self) -> bool {
        self.shared.database_ok.load(Ordering::Acquire) || self.shared.journal_ok.load(Ordering::Acquire)
    }

    /// Aggregated usage; identical results on both stores. Records still queued or journaled are
    /// not visible yet.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] / `Postgres` / `Sqlite` when the store fails.
    pub async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, LedgerError> {
        self.store.store.ensure_ready(&self.store.migrated).await?;
        match &self.store.store {
            Store::Postgres(pg) => pg.usage(q).await,
            Store::Sqlite(lite) => lite.usage(q).await,
        }
    }

    async fn cells(
        &self,
        build: impl Fn(query::Dialect) -> browse::Plain,
    ) -> Result<Vec<Vec<browse::Cell>>, LedgerError> {
        self.store.store.ensure_ready(&self.store.migrated).await?;
        match &self.store.store {
            Store::Postgres(pg) => pg.cells(build(query::Dialect::Postgres)).await,
            Store::Sqlite(lite) => lite.cells(build(query::Dialect::Sqlite)).await,
        }
    }

    /// The newest records matching `q` (filters only; `group_by` is ignored) strictly older than
    /// `before`, at most `limit` (1..=500): one keyset page. Identical on both stores.
    ///
    /// # Errors
    /// As [`LedgerHandle::usage`].
    pub async fn records(
        &self,
        q: &UsageQuery,
        before: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<RecordSummary>, LedgerError> {
        let rows = self.cells(|d| browse::records(q, before, limit, d)).await?;
        Ok(rows.iter().filter_map(|r| browse::record_from(r)).collect())
    }

    /// Request and error counts (exact) and p50/p99 latency over the records matching `q`, read
    /// from the rollups' latency histogram (each percentile is the upper bound of the bucket
    /// holding the nearest-rank value; see `rollup::LATENCY_BOUNDS_MS`).
    ///
    /// # Errors
    /// As [`LedgerHandle::usage`].
    pub async fn latency(&self, q: &UsageQuery) -> Result<LatencyStats, LedgerError> {
        let rows = self.cells(|d| browse::latency_histogram(q, d)).await?;
        // One row per rollup row and one for the raw part: summed here (see `rollup::parts_sql`).
        let mut sums = [0i64; 2 + rollup::LATENCY_BUCKETS];
        for row in &rows {
            for (acc, cell) in sums.iter_mut().zip(row) {
                if let browse::Cell::Int(Some(v)) = cell {
                    *acc = acc.saturating_add(*v);
                }
            }
        }
        let mut hist = [0i64; rollup::LATENCY_BUCKETS];
        hist.copy_from_slice(&sums[2..]);
        Ok(LatencyStats {
            requests: u64::try_from(sums[0]).unwrap_or(0),
            errors: u64::try_from(sums[1]).unwrap_or(0),
            p50_ms: rollup::percentile(&hist, 50),
            p99_ms: rollup::percentile(&hist, 99),
        })
    }

    /// Retention: deletes records with `ts_unix_ms < ts_unix_ms` (in chunks of 10,000) and
    /// returns how many. Run it from a scheduled job or an admin endpoint.
    ///
    /// # Errors
    /// As [`LedgerHandle::usage`].
    pub async fn prune_before(&self, ts_unix_ms: i64) -> Result<u64, LedgerError> {
        self.store.store.ensure_ready(&self.store.migrated).await?;
        match &self.store.store {
            Store::Postgres(pg) => pg.prune_before(ts_unix_ms).await,
            Store::Sqlite(lite) => lite.prune_before(ts_unix_ms).await,
        }
    }

    /// The embedded database file, when the SQLite store is in use.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.store.store {
            Store::Postgres(_) => None,
            Store::Sqlite(lite) => Some(lite.path()),
        }
    }

    #[cfg(test)]
    pub(crate) async fn fetch(&self, record_id: &str) -> Result<Option<LedgerRecord>, LedgerError> {
        match &self.store.store {
            Store::Postgres(pg) => pg.fetch(record_id).await,
            Store::Sqlite(lite) => lite.fetch(record_id).await,
        }
    }
}

#[cfg(test)]
mod tests;
