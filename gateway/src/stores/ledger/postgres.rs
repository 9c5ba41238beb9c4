//! The Postgres store, through a deadpool-postgres pool.
//!
//! Batches are inserted with one `INSERT ... SELECT * FROM UNNEST($1::text[], ...) ON CONFLICT
//! (record_id) DO NOTHING` statement: 25 array parameters whatever the batch size, one round
//! trip, atomic, idempotent on the server-generated `record_id`. The schema is whatever the connection's
//! `search_path` selects (use `?options=-c%20search_path%3Dmyschema` in the URL).

use std::borrow::Cow;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use super::browse;
use super::query::{self, Accumulator, Bind, Dialect, GroupBy};
use super::record::to_i64;
use super::rollup;
use super::{LedgerError, LedgerRecord, UsageQuery, UsageRow};

/// Versioned schema migrations, applied in order at start.
/// (Version 2 is the tenant store's, in the same `schema_migrations` table.)
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "ledger_records", include_str!("../../../migrations/postgres/0001_ledger_records.sql")),
    (3, "record_id", include_str!("../../../migrations/postgres/0003_record_id.sql")),
    (4, "session_id", include_str!("../../../migrations/postgres/0004_session_id.sql")),
];

/// Serializes concurrent migrators (two gateways starting at once); the value spells "LEDGER".
const MIGRATION_LOCK: i64 = 0x4c45_4447_4552;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_SIZE: usize = 4;

const INSERT_SQL: &str = "INSERT INTO ledger_records (request_id, ts_unix_ms, tenant, key_id, \
     provider, requested_model, upstream_model, prompt_tokens, completion_tokens, cached_tokens, \
     cache_write_tokens, usage_estimated, cost_nano_usd, price_input_micro_per_m, \
     price_output_micro_per_m, price_cached_input_micro_per_m, price_cache_write_micro_per_m, \
     status, stream, latency_ms, ttft_ms, attempts, http_status, record_id, session_id) \
     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::bool[], \
     $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int8[], $18::text[], $19::bool[], \
     $20::int8[], $21::int8[], $22::int4[], $23::int4[], $24::text[], $25::text[]) \
     ON CONFLICT (record_id) DO NOTHING";

pub(crate) struct PgStore {
    pool: Pool,
    /// `INSERT_SQL` wrapped with its rollup upsert (`rollup::postgres_insert_sql`), built once.
    insert_sql: String,
}

/// Postgres `text` cannot hold NUL; a client-supplied model name must not poison a batch.
fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

impl PgStore {
    /// Builds the pool (no connection yet).
    ///
    /// # Errors
    /// [`LedgerError::Config`] when the URL does not parse.
    pub(crate) fn new(url: &str) -> Result<Self, LedgerError> {
        let mut pg: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| LedgerError::Config(e.to_string()))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("ai-aggregator-ledger");
        }
        let connect_timeout = pg.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let mgr = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(connect_timeout + Duration::from_secs(1)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| LedgerError::Config(e.to_string()))?;
        Ok(Self { pool, insert_sql: rollup::postgres_insert_sql(INSERT_SQL) })
    }

    /// Applies pending migrations under an advisory lock.
    pub(crate) async fn migrate(&self) -> Result<(), LedgerError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version BIGINT PRIMARY KEY,
                 name TEXT NOT NULL,
                 applied_at_unix_ms BIGINT NOT NULL
             )",
        )
        .await?;
        let applied: Vec<i64> =
            tx.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at_unix_ms) \
                 VALUES ($1, $2, $3)",
                &[version, name, &crate::domain::time::now_unix_ms()],
            )
            .await?;
            tracing::info!(version, name, "Ledger Postgres migration applied");
        }
        // Issue 16: the hourly and daily rollups, back-filled from the records already stored.
        for (version, name, sql) in rollup::migrations(Dialect::Postgres) {
            if applied.contains(&version) {
                continue;
            }
            tx.batch_execute(&sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at_unix_ms) VALUES ($1, $2, $3)",
                &[&version, &name, &crate::domain::time::now_unix_ms()],
            )
            .await?;
            tracing::info!(version, name, "Ledger Postgres rollups created and back-filled");
        }
        tx.commit().await?;
        Ok(())
    }

    /// One round trip, to tell "reachable" from "down".
    pub(crate) async fn ping(&self) -> Result<(), LedgerError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Inserts a batch in one statement; duplicates are ignored. Returns the new row count.
    pub(crate) async fn insert(&self, batch: &[LedgerRecord]) -> Result<u64, LedgerError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        let mut request_id = Vec::with_capacity(n);
        let mut ts = Vec::with_capacity(n);
        let mut tenant = Vec::with_capacity(n);
        let mut key_id = Vec::with_capacity(n);
        let mut provider = Vec::with_capacity(n);
        let mut requested_model = Vec::with_capacity(n);
        let mut upstream_model = Vec::with_capacity(n);
        let mut prompt = Vec::with_capacity(n);
        let mut completion = Vec::with_capacity(n);
        let mut cached = Vec::with_capacity(n);
        let mut cache_write = Vec::with_capacity(n);
        let mut estimated = Vec::with_capacity(n);
        let mut cost = Vec::with_capacity(n);
        let mut p_in = Vec::with_capacity(n);
        let mut p_out = Vec::with_capacity(n);
        let mut p_cached = Vec::with_capacity(n);
        let mut p_write = Vec::with_capacity(n);
        let mut status = Vec::with_capacity(n);
        let mut stream = Vec::with_capacity(n);
        let mut latency = Vec::with_capacity(n);
        let mut ttft = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        let mut http_status = Vec::with_capacity(n);
        let mut record_id = Vec::with_capacity(n);
        let mut session_id = Vec::with_capacity(n);
        for r in batch {
            session_id.push(r.session_id.as_deref().map(pg_text));
            record_id.push(pg_text(&r.record_id));
            request_id.push(pg_text(&r.request_id));
            ts.push(r.ts_unix_ms);
            tenant.push(pg_text(&r.tenant));
            key_id.push(r.key_id.as_deref().map(pg_text));
            provider.push(pg_text(&r.provider));
            requested_model.push(pg_text(&r.requested_model));
            upstream_model.push(pg_text(&r.upstream_model));
            prompt.push(to_i64(r.prompt_tokens));
            completion.push(to_i64(r.completion_tokens));
            cached.push(to_i64(r.cached_tokens));
            cache_write.push(to_i64(r.cache_write_tokens));
            estimated.push(r.usage_estimated);
            cost.push(r.cost_nano_usd);
            p_in.push(r.price.input_micro_per_m);
            p_out.push(r.price.output_micro_per_m);
            p_cached.push(r.price.cached_input_micro_per_m);
            p_write.push(r.price.cache_write_micro_per_m);
            status.push(r.status.as_str());
            stream.push(r.stream);
            latency.push(to_i64(r.latency_ms));
            ttft.push(r.ttft_ms.map(to_i64));
            attempts.push(i32::try_from(r.attempts).unwrap_or(i32::MAX));
            http_status.push(i32::from(r.http_status));
        }
        let client = self.pool.get().await.map_err(unavailable)?;
        // Issue 16: the insert and its rollup upsert are one statement (see `rollup.rs`).
        let stmt = client.prepare_cached(&self.insert_sql).await?;
        let params: [&(dyn ToSql + Sync); 25] = [
            &request_id,
            &ts,
            &tenant,
            &key_id,
            &provider,
            &requested_model,
            &upstream_model,
            &prompt,
            &completion,
            &cached,
            &cache_write,
            &estimated,
            &cost,
            &p_in,
            &p_out,
            &p_cached,
            &p_write,
            &status,
            &stream,
            &latency,
            &ttft,
            &attempts,
            &http_status,
            &record_id,
            &session_id,
        ];
        let inserted: i64 = client.query_one(&stmt, &params).await?.try_get(0)?;
        Ok(u64::try_from(inserted).unwrap_or(0))
    }

    /// Runs a browse query (`browse.rs`).
    pub(crate) async fn cells(&self, plain: browse::Plain) -> Result<Vec<Vec<browse::Cell>>, LedgerError> {
        let binds: Vec<Box<dyn ToSql + Sync + Send>> = plain
            .binds
            .iter()
            .map(|b| -> Box<dyn ToSql + Sync + Send> {
                match b {
                    Bind::Int(i) => Box::new(*i),
                    Bind::Text(t) => Box::new(t.clone()),
                }
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| -> &(dyn ToSql + Sync) { b.as_ref() }).collect();
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client.query(&plain.sql, &params).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut cells = Vec::with_capacity(plain.kinds.len());
            for (i, k) in plain.kinds.iter().enumerate() {
                cells.push(match k {
                    browse::Kind::Int => browse::Cell::Int(row.try_get(i)?),
                    browse::Kind::Text => browse::Cell::Text(row.try_get(i)?),
                });
            }
            out.push(cells);
        }
        Ok(out)
    }

    pub(crate) async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, LedgerError> {
        let built = query::build(q, Dialect::Postgres);
        let binds: Vec<Box<dyn ToSql + Sync + Send>> = built
            .binds
            .iter()
            .map(|b| -> Box<dyn ToSql + Sync + Send> {
                match b {
                    Bind::Int(i) => Box::new(*i),
                    Bind::Text(t) => Box::new(t.clone()),
                }
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| -> &(dyn ToSql + Sync) { b.as_ref() }).collect();
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client.query(&built.sql, &params).await?;
        let n_groups = built.groups.len();
        let mut acc = Accumulator::default();
        for row in rows {
            let mut texts = [None; 3];
            let mut next_text = 0;
            let mut day = None;
            for (i, g) in built.groups.iter().enumerate() {
                if matches!(g, GroupBy::Day) {
                    day = row.try_get::<_, Option<i64>>(i)?;
                } else {
                    let text = row.try_get::<_, Option<&str>>(i)?.map(|t| acc.intern(t));
                    if let Some(slot) = texts.get_mut(next_text) {
                        *slot = text;
                    }
                    next_text += 1;
                }
            }
            let mut counters = [0i64; 6];
            for (k, c) in counters.iter_mut().enumerate() {
                *c = row.try_get(n_groups + k)?;
            }
            acc.add(texts, day, counters);
        }
        Ok(query::finish(&built.groups, built.bucket, acc))
    }

    /// Deletes records older than `ts_unix_ms` in chunks (short transactions); returns how many.
    /// Each chunk subtracts its aggregate from the rollups in the delete statement and removes
    /// emptied rollup rows in the same transaction.
    pub(crate) async fn prune_before(&self, ts_unix_ms: i64) -> Result<u64, LedgerError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let chunk_sql = rollup::postgres_prune_chunk_sql();
        let empty_sql = rollup::delete_empty_sql(Dialect::Postgres);
        let mut total = 0;
        loop {
            let tx = client.transaction().await?;
            let n: i64 = tx.query_one(&chunk_sql, &[&ts_unix_ms]).await?.try_get(0)?;
            if n > 0 {
                for sql in &empty_sql {
                    tx.execute(sql, &[&ts_unix_ms]).await?;
                }
            }
            tx.commit().await?;
            total += u64::try_from(n).unwrap_or(0);
            if n == 0 {
                return Ok(total);
            }
        }
    }

    #[cfg(test)]
    pub(crate) async fn fetch(&self, record_id: &str) -> Result<Option<LedgerRecord>, LedgerError> {
        use super::record::to_u64;
        use crate::domain::pricing::Price;
        let client = self.pool.get().await.map_err(unavailable)?;
        let Some(row) = client
            .query_opt(
                "SELECT request_id, ts_unix_ms, tenant, key_id, provider, requested_model, \
                 upstream_model, prompt_tokens, completion_tokens, cached_tokens, \
                 cache_write_tokens, usage_estimated, cost_nano_usd, price_input_micro_per_m, \
                 price_output_micro_per_m, price_cached_input_micro_per_m, \
                 price_cache_write_micro_per_m, status, stream, latency_ms, ttft_ms, attempts, \
                 http_status, record_id, session_id FROM ledger_records WHERE record_id = $1",
                &[&record_id],
            )
            .await?
        else {
            return Ok(None);
        };
        let status: String = row.get(17);
        Ok(Some(LedgerRecord {
            record_id: row.get(23),
            session_id: row.get(24),
            request_id: row.get(0),
            ts_unix_ms: row.get(1),
            tenant: row.get(2),
            key_id: row.get(3),
            provider: row.get(4),
            requested_model: row.get(5),
            upstream_model: row.get(6),
            prompt_tokens: to_u64(row.get(7)),
            completion_tokens: to_u64(row.get(8)),
            cached_tokens: to_u64(row.get(9)),
            cache_write_tokens: to_u64(row.get(10)),
            usage_estimated: row.get(11),
            cost_nano_usd: row.get(12),
            price: Price {
                input_micro_per_m: row.get(13),
                output_micro_per_m: row.get(14),
                cached_input_micro_per_m: row.get(15),
                cache_write_micro_per_m: row.get(16),
            },
            status: super::RecordStatus::parse(&status).unwrap_or(super::RecordStatus::Ok),
            stream: row.get(18),
            latency_ms: to_u64(row.get(19)),
            ttft_ms: row.get::<_, Option<i64>>(20).map(to_u64),
            attempts: u32::try_from(row.get::<_, i32>(21)).unwrap_or(0),
            http_status: u16::try_from(row.get::<_, i32>(22)).unwrap_or(0),
        }))
    }
}
