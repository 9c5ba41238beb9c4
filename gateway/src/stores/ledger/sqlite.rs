//! The embedded store: one SQLite file under `data_dir` (WAL mode, `synchronous = FULL`).
//!
//! rusqlite is blocking: every call runs on `spawn_blocking` while holding an owned async mutex
//! over its connection. The writer and the usage queries use separate connections, so queries
//! read a WAL snapshot without waiting for inserts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};
use tokio::sync::Mutex;

use super::browse;
use super::query::{self, Accumulator, Bind, Dialect};
use super::record::to_i64;
use super::rollup;
use super::{LedgerError, LedgerRecord, UsageQuery, UsageRow};

/// Versioned schema migrations, applied in order at start.
/// (Version 2 is the tenant store's, in the same `schema_migrations` table.)
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "ledger_records", include_str!("../../../migrations/sqlite/0001_ledger_records.sql")),
    (3, "record_id", include_str!("../../../migrations/sqlite/0003_record_id.sql")),
    (4, "session_id", include_str!("../../../migrations/sqlite/0004_session_id.sql")),
];

const INSERT_SQL: &str = "INSERT INTO ledger_records (record_id, request_id, ts_unix_ms, tenant, key_id, provider, \
     requested_model, upstream_model, prompt_tokens, completion_tokens, cached_tokens, \
     cache_write_tokens, usage_estimated, cost_nano_usd, price_input_micro_per_m, \
     price_output_micro_per_m, price_cached_input_micro_per_m, price_cache_write_micro_per_m, \
     status, stream, latency_ms, ttft_ms, attempts, http_status, session_id) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
     ?20, ?21, ?22, ?23, ?24, ?25) ON CONFLICT (record_id) DO NOTHING";

/// File name of the database inside `data_dir`.
pub(crate) const FILE_NAME: &str = "ledger.sqlite3";

pub(crate) struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Settings of the one writing connection, after the migrations.
///
/// `ignore_check_constraints`: the only CHECK on the tables this connection writes is
/// `ledger_records.status IN (...)`, and SQLite evaluates an IN list by building a temporary
/// B-tree of its five strings every time the insert statement runs, i.e. once per record: a page
/// allocated, zeroed and freed, about 40 % of the instructions of a record's insert (issue 17,
/// callgrind). Every status this connection writes comes from [`super::RecordStatus::as_str`]
/// (records replayed from the journal are parsed into that enum first), so the constraint can only
/// fail for other writers, and for them it still holds: the pragma is per connection.
fn writer_settings(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "ignore_check_constraints", true)
}

impl SqliteStore {
    /// Opens (creating) the database and applies pending migrations.
    pub(crate) async fn open(data_dir: &Path) -> Result<Self, LedgerError> {
        let path = data_dir.join(FILE_NAME);
        let p = path.clone();
        let (writer, reader) = tokio::task::spawn_blocking(move || {
            let mut writer = open(&p)?;
            migrate(&mut writer)?;
            writer_settings(&writer)?;
            let reader = open(&p)?;
            Ok::<_, rusqlite::Error>((writer, reader))
        })
        .await
        .map_err(|e| LedgerError::Task(e.to_string()))??;
        Ok(Self { path, writer: Arc::new(Mutex::new(writer)), reader: Arc::new(Mutex::new(reader)) })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Inserts a batch in one transaction; duplicates (by `record_id`) are ignored.
    /// Returns the batch (for the journal on failure) and the number of new rows.
    pub(crate) async fn insert(&self, batch: Vec<LedgerRecord>) -> (Vec<LedgerRecord>, Result<u64, LedgerError>) {
        let conn = Arc::clone(&self.writer).lock_owned().await;
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = conn;
            let res = insert_blocking(&mut conn, &batch);
            (batch, res)
        })
        .await;
        match joined {
            Ok((batch, res)) => (batch, res.map_err(LedgerError::from)),
            // The batch is lost with the panicked task: cannot happen short of a rusqlite bug.
            Err(e) => (Vec::new(), Err(LedgerError::Task(e.to_string()))),
        }
    }

    /// Runs a browse query (`browse.rs`) on the reader connection.
    pub(crate) async fn cells(&self, plain: browse::Plain) -> Result<Vec<Vec<browse::Cell>>, LedgerError> {
        let conn = Arc::clone(&self.reader).lock_owned().await;
        tokio::task::spawn_blocking(move || -> rusqlite::Result<Vec<Vec<browse::Cell>>> {
            let mut stmt = conn.prepare(&plain.sql)?;
            let binds: Vec<rusqlite::types::Value> = plain
                .binds
                .iter()
                .map(|b| match b {
                    Bind::Int(i) => rusqlite::types::Value::Integer(*i),
                    Bind::Text(t) => rusqlite::types::Value::Text(t.clone()),
                })
                .collect();
            let rows = stmt.query_map(rusqlite::params_from_iter(binds), |row| {
                let mut out = Vec::with_capacity(plain.kinds.len());
                for (i, k) in plain.kinds.iter().enumerate() {
                    out.push(match k {
                        browse::Kind::Int => browse::Cell::Int(row.get(i)?),
                        browse::Kind::Text => browse::Cell::Text(row.get(i)?),
                    });
                }
                Ok(out)
            })?;
            rows.collect()
        })
        .await
        .map_err(|e| LedgerError::Task(e.to_string()))?
        .map_err(LedgerError::from)
    }

    pub(crate) async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, LedgerError> {
        let built = query::build(q, Dialect::Sqlite);
        let result_groups = built.groups.clone();
        let bucket = built.bucket;
        let conn = Arc::clone(&self.reader).lock_owned().await;
        let acc = tokio::task::spawn_blocking(move || -> rusqlite::Result<Accumulator> {
            let mut stmt = conn.prepare(&built.sql)?;
            let binds: Vec<rusqlite::types::Value> = built
                .binds
                .iter()
                .map(|b| match b {
                    Bind::Int(i) => rusqlite::types::Value::Integer(*i),
                    Bind::Text(t) => rusqlite::types::Value::Text(t.clone()),
                })
                .collect();
            let n_groups = built.groups.len();
            let mut acc = Accumulator::default();
            let mut rows = stmt.query(rusqlite::params_from_iter(binds))?;
            while let Some(row) = rows.next()? {
                let mut texts = [None; 3];
                let mut next_text = 0;
                let mut day = None;
                for (i, g) in built.groups.iter().enumerate() {
                    if matches!(g, query::GroupBy::Day) {
                        day = row.get::<_, Option<i64>>(i)?;
                    } else {
                        // Borrowed from the statement: interned, not allocated per row.
                        let text = match row.get_ref(i)? {
                            rusqlite::types::ValueRef::Text(t) => Some(acc.intern(&String::from_utf8_lossy(t))),
                            _ => None,
                        };
                        if let Some(slot) = texts.get_mut(next_text) {
                            *slot = text;
                        }
                        next_text += 1;
                    }
                }
                let mut counters = [0i64; 6];
                for (k, c) in counters.iter_mut().enumerate() {
                    *c = row.get(n_groups + k)?;
                }
                acc.add(texts, day, counters);
            }
            Ok(acc)
        })
        .await
        .map_err(|e| LedgerError::Task(e.to_string()))??;
        Ok(query::finish(&result_groups, bucket, acc))
    }

    /// Deletes records older than `ts_unix_ms`, in chunks; returns how many. Each chunk's
    /// aggregate is subtracted from the rollups in the chunk's transaction, and rollup rows left
    /// empty are removed, so rollups keep equalling the records.
    pub(crate) async fn prune_before(&self, ts_unix_ms: i64) -> Result<u64, LedgerError> {
        let mut total = 0u64;
        loop {
            let conn = Arc::clone(&self.writer).lock_owned().await;
            let n = tokio::task::spawn_blocking(move || {
                let mut conn = conn;
                prune_chunk_blocking(&mut conn, ts_unix_ms)
            })
            .await
            .map_err(|e| LedgerError::Task(e.to_string()))??;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// The record with this record id, for tests and tools.
    #[cfg(test)]
    pub(crate) async fn fetch(&self, record_id: &str) -> Result<Option<LedgerRecord>, LedgerError> {
        use super::record::to_u64;
        use crate::domain::pricing::Price;
        let id = record_id.to_owned();
        let conn = Arc::clone(&self.reader).lock_owned().await;
        tokio::task::spawn_blocking(move || -> rusqlite::Result<Option<LedgerRecord>> {
            let mut stmt = conn.prepare(
                "SELECT request_id, ts_unix_ms, tenant, key_id, provider, requested_model, \
                 upstream_model, prompt_tokens, completion_tokens, cached_tokens, \
                 cache_write_tokens, usage_estimated, cost_nano_usd, price_input_micro_per_m, \
                 price_output_micro_per_m, price_cached_input_micro_per_m, \
                 price_cache_write_micro_per_m, status, stream, latency_ms, ttft_ms, attempts, \
                 http_status, record_id, session_id FROM ledger_records WHERE record_id = ?1",
            )?;
            let mut rows = stmt.query(params![id])?;
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            let status: String = row.get(17)?;
            Ok(Some(LedgerRecord {
                record_id: row.get(23)?,
                session_id: row.get(24)?,
                request_id: row.get(0)?,
                ts_unix_ms: row.get(1)?,
                tenant: row.get(2)?,
                key_id: row.get(3)?,
                provider: row.get(4)?,
                requested_model: row.get(5)?,
                upstream_model: row.get(6)?,
                prompt_tokens: to_u64(row.get(7)?),
                completion_tokens: to_u64(row.get(8)?),
                cached_tokens: to_u64(row.get(9)?),
                cache_write_tokens: to_u64(row.get(10)?),
                usage_estimated: row.get(11)?,
                cost_nano_usd: row.get(12)?,
                price: Price {
                    input_micro_per_m: row.get(13)?,
                    output_micro_per_m: row.get(14)?,
                    cached_input_micro_per_m: row.get(15)?,
                    cache_write_micro_per_m: row.get(16)?,
                },
                status: super::RecordStatus::parse(&status).unwrap_or(super::RecordStatus::UpstreamError),
                stream: row.get(18)?,
                latency_ms: to_u64(row.get(19)?),
                ttft_ms: row.get::<_, Option<i64>>(20)?.map(to_u64),
                attempts: u32::try_from(row.get::<_, i64>(21)?).unwrap_or(u32::MAX),
                http_status: u16::try_from(row.get::<_, i64>(22)?).unwrap_or(0),
            }))
        })
        .await
        .map_err(|e| LedgerError::Task(e.to_string()))?
        .map_err(LedgerError::from)
    }
}

fn insert_blocking(conn: &mut Connection, batch: &[LedgerRecord]) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let mut inserted = 0u64;
    // Rollups (issue 16): only the records this insert actually stored, aggregated per key, then
    // one upsert per key, all in this transaction.
    let mut delta = rollup::Delta::default();
    {
        let mut stmt = tx.prepare_cached(INSERT_SQL)?;
        for r in batch {
            let changed = stmt.execute(params![
                r.record_id,
                r.request_id,
                r.ts_unix_ms,
                r.tenant,
                r.key_id,
                r.provider,
                r.requested_model,
                r.upstream_model,
                to_i64(r.prompt_tokens),
                to_i64(r.completion_tokens),
                to_i64(r.cached_tokens),
                to_i64(r.cache_write_tokens),
                r.usage_estimated,
                r.cost_nano_usd,
                r.price.input_micro_per_m,
                r.price.output_micro_per_m,
                r.price.cached_input_micro_per_m,
                r.price.cache_write_micro_per_m,
                r.status.as_str(),
                r.stream,
                to_i64(r.latency_ms),
                r.ttft_ms.map(to_i64),
                i64::from(r.attempts),
                i64::from(r.http_status),
                r.session_id,
            ])?;
            if changed > 0 {
                delta.add(r);
                inserted += 1;
            }
        }
    }
    delta.apply_sqlite(&tx)?;
    tx.commit()?;
    Ok(inserted)
}

/// One prune chunk (up to 10,000 records) with its rollup subtraction, in one transaction.
fn prune_chunk_blocking(conn: &mut Connection, ts_unix_ms: i64) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS prune_chunk (id INTEGER PRIMARY KEY); DELETE FROM temp.prune_chunk;",
    )?;
    let n = tx.execute(
        "INSERT INTO temp.prune_chunk (id) SELECT rowid FROM ledger_records WHERE ts_unix_ms < ?1 LIMIT 10000",
        params![ts_unix_ms],
    )?;
    if n > 0 {
        for sql in rollup::sqlite_subtract_chunk_sql() {
            tx.execute(&sql, [])?;
        }
        tx.execute("DELETE FROM ledger_records WHERE rowid IN (SELECT id FROM temp.prune_chunk)", [])?;
        for sql in rollup::delete_empty_sql(Dialect::Sqlite) {
            tx.execute(&sql, params![ts_unix_ms])?;
        }
    }
    tx.execute("DELETE FROM temp.prune_chunk", [])?;
    tx.commit()?;
    Ok(n as u64)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at_unix_ms INTEGER NOT NULL
         )",
    )?;
    let applied: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT version FROM schema_migrations")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_unix_ms) VALUES (?1, ?2, ?3)",
            params![version, name, crate::domain::time::now_unix_ms()],
        )?;
        tracing::info!(version, name, "Ledger SQLite migration applied");
    }
    // Issue 16: the hourly and daily rollups, back-filled from the records already stored (SQL
    // generated from `rollup.rs`, so the histogram bounds have one definition).
    for (version, name, sql) in rollup::migrations(Dialect::Sqlite) {
        if applied.contains(&version) {
            continue;
        }
        tx.execute_batch(&sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_unix_ms) VALUES (?1, ?2, ?3)",
            params![version, name, crate::domain::time::now_unix_ms()],
        )?;
        tracing::info!(version, name, "Ledger SQLite rollups created and back-filled");
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opcodes(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        // Unbound parameters are NULL; EXPLAIN only lists the program.
        let mut rows = stmt.raw_query();
        let mut ops = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            ops.push(row.get::<_, String>(1).unwrap());
        }
        ops
    }

    /// Issue 17: the writer's insert builds no temporary B-tree per record (the status CHECK's IN
    /// list did), while a connection without the writer's settings still enforces the CHECK.
    #[test]
    fn writer_insert_builds_no_temporary_btree_and_the_check_still_binds_others() {
        let dir = std::env::temp_dir().join(format!("aiagg-ledger-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let _ = std::fs::remove_file(&path);
        let mut writer = open(&path).unwrap();
        migrate(&mut writer).unwrap();
        let plain = opcodes(&writer, INSERT_SQL);
        assert!(plain.iter().any(|op| op == "OpenEphemeral"), "the CHECK's IN list: {plain:?}");
        writer_settings(&writer).unwrap();
        let ops = opcodes(&writer, INSERT_SQL);
        assert!(!ops.iter().any(|op| op == "OpenEphemeral"), "{ops:?}");
        assert!(ops.iter().filter(|op| *op == "IdxInsert").count() >= 5, "every index is still written: {ops:?}");

        let other = open(&path).unwrap();
        let bad = other.execute(
            "INSERT INTO ledger_records (record_id, request_id, ts_unix_ms, tenant, provider, requested_model, \
             upstream_model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, usage_estimated, \
             cost_nano_usd, price_input_micro_per_m, price_output_micro_per_m, price_cached_input_micro_per_m, \
             price_cache_write_micro_per_m, status, stream, latency_ms, attempts, http_status) \
             VALUES ('r', 'q', 0, 't', 'p', 'm', 'm', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'bogus', 0, 0, 1, 200)",
            [],
        );
        assert!(bad.is_err(), "another connection must still be refused a bad status");
        drop((writer, other));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
