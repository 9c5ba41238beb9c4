//! Hourly rollups of the ledger (issue 16): one row per hour × tenant × key × provider × upstream
//! model × status, holding the request and error counts, the token sums by class, the cost
//! (nano-USD, exactly as the records hold it), the latency sum and a latency histogram.
//!
//! Invariants:
//! - **Same transaction.** A rollup row changes only in the transaction that inserts (or prunes)
//!   the records it sums: SQLite adds the batch's aggregate inside `insert_blocking`'s
//!   transaction, Postgres in the same statement as the `INSERT ... ON CONFLICT DO NOTHING`
//!   (a data-modifying CTE). So the rollups equal a `GROUP BY` over `ledger_records` at every
//!   committed state, on both stores.
//! - **Idempotent like the ledger.** Only records that were actually inserted are counted: SQLite
//!   counts a record when its `INSERT` changed a row, Postgres aggregates the `RETURNING` rows of
//!   the insert. A duplicate `record_id` (journal replay) adds nothing.
//! - **One upsert per key per batch.** A batch is aggregated per rollup key first (in memory for
//!   SQLite, by `GROUP BY` over the inserted rows for Postgres), then upserted once per key.
//! - **Pruning subtracts.** `prune_before` subtracts the deleted records' aggregate in the same
//!   transaction as the delete and removes rows that reach zero, so rollups never keep usage of
//!   pruned records (see `sqlite.rs`/`postgres.rs` `prune_before`).
//! - **Keys.** A record without a key is rolled up under `key_id = ''` (a primary key column
//!   cannot be NULL in both dialects); no real key id is empty.
//!
//! Reads ([`sources`]): a usage or latency query over `[from, to)` reads whole hours from the
//! rollups and only the partial edge hours (a bound that is not on an hour) from the raw ledger,
//! so results stay exact. Hourly rows are exact for day groups in any whole-hour UTC offset. A
//! query that groups by day in an offset that is not a whole number of hours (+05:30, +05:45)
//! reads the raw ledger instead: its local days do not start on a UTC hour.
//!
//! Latency resolution: [`LATENCY_BOUNDS_MS`] are the exclusive upper bounds of 23 buckets, the
//! 24th is open-ended. Percentiles read from the histogram are the upper bound of the bucket that
//! holds the nearest-rank value, so they over-estimate by less than one bucket width: at most
//! 2.5× below 25 ms, 1.5× up to 1 s, 1.33× up to 5 s, 2× up to 60 s; above 60 s they read as
//! 60 000 ms ("60 s or more").

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use super::query::{Bind, Bucket, Dialect, GroupBy, UsageQuery};
use super::record::to_i64;
use super::{LedgerRecord, RecordStatus};

/// The rollup granularity.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// Schema version of the rollup migration (issue 16) in `schema_migrations`.
pub(crate) const MIGRATION_VERSION: i64 = 16;
/// Its name in `schema_migrations`.
pub(crate) const MIGRATION_NAME: &str = "ledger_rollups";

/// Exclusive upper bounds of the latency buckets, milliseconds; bucket `i` holds
/// `[LATENCY_BOUNDS_MS[i-1], LATENCY_BOUNDS_MS[i])` (from 0 for the first), the last bucket
/// everything from 60 s.
pub const LATENCY_BOUNDS_MS: [u64; 23] = [
    10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000, 4_000, 5_000, 7_500, 10_000, 15_000,
    20_000, 30_000, 60_000,
];

/// Number of latency buckets (one more than bounds).
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The rollup table.
pub(crate) const TABLE: &str = "ledger_rollup_hourly";

/// The key columns, in primary-key order.
const KEY_COLUMNS: [&str; 6] = ["hour_ms", "tenant", "key_id", "provider", "upstream_model", "status"];

/// The summed columns after the key, in order (the histogram columns follow).
const SUM_COLUMNS: [&str; 8] = [
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cost_nano_usd",
    "latency_ms_sum",
];

/// The bucket a latency falls in.
pub(crate) fn bucket_of(latency_ms: u64) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|&b| b <= latency_ms)
}

/// The name of histogram column `i`.
fn lat_column(i: usize) -> String {
    format!("lat_{i:02}")
}

/// Every column of the rollup table, in order.
fn all_columns() -> Vec<String> {
    let mut cols: Vec<String> = KEY_COLUMNS.iter().chain(SUM_COLUMNS.iter()).map(|c| (*c).to_owned()).collect();
    cols.extend((0..LATENCY_BUCKETS).map(lat_column));
    cols
}

/// `CREATE TABLE` and indexes; the same text for both dialects (BIGINT is INTEGER in SQLite).
fn create_sql() -> String {
    let mut sql = format!(
        "CREATE TABLE {TABLE} (\n    hour_ms BIGINT NOT NULL,\n    tenant TEXT NOT NULL,\n    key_id TEXT NOT NULL,\n    \
         provider TEXT NOT NULL,\n    upstream_model TEXT NOT NULL,\n    status TEXT NOT NULL,\n"
    );
    for c in SUM_COLUMNS.iter().map(|c| (*c).to_owned()).chain((0..LATENCY_BUCKETS).map(lat_column)) {
        let _ = writeln!(sql, "    {c} BIGINT NOT NULL,");
    }
    let _ = write!(
        sql,
        "    PRIMARY KEY ({})\n);\n\
         CREATE INDEX {TABLE}_tenant_idx ON {TABLE} (tenant, hour_ms);\n\
         CREATE INDEX {TABLE}_key_idx ON {TABLE} (key_id, hour_ms);\n",
        KEY_COLUMNS.join(", ")
    );
    sql
}

/// The aggregate of ledger rows as rollup rows: `SELECT <key>, <sums>, <histogram> {from_where}
/// GROUP BY <key>`. `sign` is `""` to add, `"-"` to subtract. `from_where` is the `FROM ...
/// [WHERE ...]` over rows with the ledger's column names.
pub(crate) fn aggregate_select(from_where: &str, sign: &str) -> String {
    let mut sel = vec![
        format!("(ts_unix_ms / {HOUR_MS}) * {HOUR_MS}"),
        "tenant".to_owned(),
        "COALESCE(key_id, '')".to_owned(),
        "provider".to_owned(),
        "upstream_model".to_owned(),
        "status".to_owned(),
        format!("CAST({sign}COUNT(*) AS BIGINT)"),
        format!("CAST({sign}SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS BIGINT)"),
    ];
    for c in
        ["prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "cost_nano_usd", "latency_ms"]
    {
        sel.push(format!("CAST({sign}SUM({c}) AS BIGINT)"));
    }
    for i in 0..LATENCY_BUCKETS {
        sel.push(format!("CAST({sign}SUM({}) AS BIGINT)", bucket_case(i)));
    }
    format!("SELECT {} {from_where} GROUP BY 1, 2, 3, 4, 5, 6", sel.join(", "))
}

/// `CASE` giving 1 when a row's `latency_ms` falls in bucket `i`.
fn bucket_case(i: usize) -> String {
    let lo = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] };
    match LATENCY_BOUNDS_MS.get(i) {
        Some(hi) => format!("CASE WHEN latency_ms >= {lo} AND latency_ms < {hi} THEN 1 ELSE 0 END"),
        None => format!("CASE WHEN latency_ms >= {lo} THEN 1 ELSE 0 END"),
    }
}

/// `ON CONFLICT (<key>) DO UPDATE SET c = t.c + excluded.c, ...`.
fn upsert_clause() -> String {
    let sets: Vec<String> = all_columns()
        .into_iter()
        .skip(KEY_COLUMNS.len())
        .map(|c| format!("{c} = {TABLE}.{c} + excluded.{c}"))
        .collect();
    format!("ON CONFLICT ({}) DO UPDATE SET {}", KEY_COLUMNS.join(", "), sets.join(", "))
}

/// The rollup migration: creates the table and back-fills it from the records already stored
/// (one `GROUP BY` over `ledger_records`, inside the migration's transaction).
pub(crate) fn migration_sql() -> String {
    format!(
        "{}INSERT INTO {TABLE} ({}) {};\n",
        create_sql(),
        all_columns().join(", "),
        aggregate_select("FROM ledger_records WHERE 1 = 1", "")
    )
}

// ------------------------------------------------------------------------------------- SQLite

/// One rollup key of a batch (borrowed from the records).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key<'a> {
    hour_ms: i64,
    tenant: Cow<'a, str>,
    key_id: Cow<'a, str>,
    provider: Cow<'a, str>,
    upstream_model: Cow<'a, str>,
    status: &'static str,
}

/// The sums of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sums {
    /// `requests, errors, prompt, completion, cached, cache_write, cost, latency_sum`.
    sums: [i64; SUM_COLUMNS.len()],
    hist: [i64; LATENCY_BUCKETS],
}

/// A batch's rollup deltas, aggregated per key in memory.
#[derive(Debug, Default)]
pub(crate) struct Delta<'a> {
    rows: HashMap<Key<'a>, Sums>,
}

impl<'a> Delta<'a> {
    /// Counts one inserted record.
    pub(crate) fn add(&mut self, r: &'a LedgerRecord) {
        let key = Key {
            hour_ms: r.ts_unix_ms.div_euclid(HOUR_MS) * HOUR_MS,
            tenant: Cow::Borrowed(&r.tenant),
            key_id: Cow::Borrowed(r.key_id.as_deref().unwrap_or("")),
            provider: Cow::Borrowed(&r.provider),
            upstream_model: Cow::Borrowed(&r.upstream_model),
            status: r.status.as_str(),
        };
        let s = self.rows.entry(key).or_default();
        let add = [
            1,
            i64::from(r.status != RecordStatus::Ok),
            to_i64(r.prompt_tokens),
            to_i64(r.completion_tokens),
            to_i64(r.cached_tokens),
            to_i64(r.cache_write_tokens),
            r.cost_nano_usd,
            to_i64(r.latency_ms),
        ];
        for (acc, v) in s.sums.iter_mut().zip(add) {
            *acc = acc.saturating_add(v);
        }
        s.hist[bucket_of(r.latency_ms)] += 1;
    }

    /// Applies the deltas in `tx` (the ledger insert's transaction): one upsert per key.
    pub(crate) fn apply_sqlite(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut stmt = tx.prepare_cached(&sqlite_upsert_sql())?;
        // Sorted, so two writers would take row locks in one order (matters for Postgres-like
        // engines; cheap here).
        let mut keys: Vec<(&Key<'_>, &Sums)> = self.rows.iter().collect();
        keys.sort_unstable_by(|a, b| {
            (a.0.hour_ms, &a.0.tenant, &a.0.key_id, &a.0.provider, &a.0.upstream_model, a.0.status).cmp(&(
                b.0.hour_ms,
                &b.0.tenant,
                &b.0.key_id,
                &b.0.provider,
                &b.0.upstream_model,
                b.0.status,
            ))
        });
        let mut values: Vec<rusqlite::types::Value> = Vec::with_capacity(KEY_COLUMNS.len() + 8 + LATENCY_BUCKETS);
        for (k, s) in keys {
            use rusqlite::types::Value;
            values.clear();
            values.push(Value::Integer(k.hour_ms));
            values.push(Value::Text(k.tenant.to_string()));
            values.push(Value::Text(k.key_id.to_string()));
            values.push(Value::Text(k.provider.to_string()));
            values.push(Value::Text(k.upstream_model.to_string()));
            values.push(Value::Text(k.status.to_owned()));
            values.extend(s.sums.iter().chain(s.hist.iter()).map(|v| Value::Integer(*v)));
            stmt.execute(rusqlite::params_from_iter(values.iter()))?;
        }
        Ok(())
    }
}

fn sqlite_upsert_sql() -> String {
    let cols = all_columns();
    let ph: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    format!("INSERT INTO {TABLE} ({}) VALUES ({}) {}", cols.join(", "), ph.join(", "), upsert_clause())
}

/// SQLite prune, step 1 (in the prune transaction, after `temp.prune_chunk` holds the rowids
/// about to be deleted): subtracts their aggregate from the rollups.
pub(crate) fn sqlite_subtract_chunk_sql() -> String {
    format!(
        "INSERT INTO {TABLE} ({}) {} {}",
        all_columns().join(", "),
        aggregate_select("FROM ledger_records WHERE rowid IN (SELECT id FROM temp.prune_chunk)", "-"),
        upsert_clause()
    )
}

/// Pruning, last step (same transaction): drops rollup rows that no longer sum any record, in
/// the hours the prune touched (`hour_ms <= ?1`/`$1`).
pub(crate) fn delete_empty_sql(dialect: Dialect) -> String {
    let p = match dialect {
        Dialect::Sqlite => "?1",
        Dialect::Postgres => "$1",
    };
    format!("DELETE FROM {TABLE} WHERE hour_ms <= {p} AND requests = 0")
}

// ----------------------------------------------------------------------------------- Postgres

/// Columns the Postgres insert returns for the rollup (the ledger names).
const RETURNED: &str = "ts_unix_ms, tenant, key_id, provider, upstream_model, status, prompt_tokens, \
                        completion_tokens, cached_tokens, cache_write_tokens, cost_nano_usd, latency_ms";

/// The Postgres batch insert with its rollup: `insert_sql` (an `INSERT ... ON CONFLICT DO
/// NOTHING`) becomes a CTE whose `RETURNING` rows (the ones actually inserted) are aggregated per
/// key and upserted, in key order, in the same statement. The statement returns one row: the
/// number of records inserted.
pub(crate) fn postgres_insert_sql(insert_sql: &str) -> String {
    format!(
        "WITH ins AS ({insert_sql} RETURNING {RETURNED}), \
         up AS (INSERT INTO {TABLE} ({}) {} ORDER BY 1, 2, 3, 4, 5, 6 {}) \
         SELECT CAST(COUNT(*) AS BIGINT) FROM ins",
        all_columns().join(", "),
        aggregate_select("FROM ins", ""),
        upsert_clause()
    )
}

/// SQLite: the rollup upsert of the one record that the previous statement of the same
/// transaction tried to insert with `ON CONFLICT DO NOTHING` (the batch store's line commit).
/// `changes()` is that statement's row count, so a record that was already stored is not counted
/// twice. `record_param` is the placeholder bound to the record id.
pub(crate) fn sqlite_upsert_after_insert_sql(record_param: &str) -> String {
    format!(
        "INSERT INTO {TABLE} ({}) {} {}",
        all_columns().join(", "),
        aggregate_select(&format!("FROM ledger_records WHERE record_id = {record_param} AND changes() = 1"), ""),
        upsert_clause()
    )
}

/// The Postgres prune chunk: deletes up to 10,000 records older than `$1` and subtracts their
/// aggregate from the rollups in the same statement; returns the number deleted.
pub(crate) fn postgres_prune_chunk_sql() -> String {
    format!(
        "WITH del AS (DELETE FROM ledger_records WHERE record_id IN \
         (SELECT record_id FROM ledger_records WHERE ts_unix_ms < $1 LIMIT 10000) RETURNING {RETURNED}), \
         up AS (INSERT INTO {TABLE} ({}) {} ORDER BY 1, 2, 3, 4, 5, 6 {}) \
         SELECT CAST(COUNT(*) AS BIGINT) FROM del",
        all_columns().join(", "),
        aggregate_select("FROM del", "-"),
        upsert_clause()
    )
}

// -------------------------------------------------------------------------------------- reads

/// What a read needs from each row source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// Requests and the five sums of a usage row.
    Usage,
    /// Requests, errors and the histogram.
    Latency,
}

/// The measure columns each source yields, named alike so the outer query sums them.
fn measure_columns(measure: Measure, rolled: bool) -> Vec<String> {
    let mut out = Vec::new();
    match measure {
        Measure::Usage => {
            out.push(if rolled { "requests AS n".to_owned() } else { "1 AS n".to_owned() });
            for c in ["prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "cost_nano_usd"] {
                out.push(format!("{c} AS m_{c}"));
            }
        }
        Measure::Latency => {
            out.push(if rolled { "requests AS n".to_owned() } else { "1 AS n".to_owned() });
            out.push(if rolled {
                "errors AS m_errors".to_owned()
            } else {
                "CASE WHEN status <> 'ok' THEN 1 ELSE 0 END AS m_errors".to_owned()
            });
            for i in 0..LATENCY_BUCKETS {
                let c = lat_column(i);
                out.push(if rolled { format!("{c} AS m_{c}") } else { format!("{} AS m_{c}", bucket_case(i)) });
            }
        }
    }
    out
}

/// The outer sums over the sources, in the order `measure_columns` names them.
pub(crate) fn outer_sums(measure: Measure) -> Vec<String> {
    let mut out = vec!["COALESCE(CAST(SUM(n) AS BIGINT), 0)".to_owned()];
    let names: Vec<String> = match measure {
        Measure::Usage => {
            ["prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "cost_nano_usd"]
                .iter()
                .map(|c| format!("m_{c}"))
                .collect()
        }
        Measure::Latency => std::iter::once("m_errors".to_owned())
            .chain((0..LATENCY_BUCKETS).map(|i| format!("m_{}", lat_column(i))))
            .collect(),
    };
    out.extend(names.into_iter().map(|c| format!("COALESCE(CAST(SUM({c}) AS BIGINT), 0)")));
    out
}

/// How a `[from, to)` range splits: whole hours from the rollups, partial edge hours from the raw
/// ledger. `None` when the rollups cannot serve the query (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    /// Half-open raw ranges (each within one hour).
    pub raw: Vec<(i64, i64)>,
    /// Half-open rolled-up range, on hour boundaries; `None` bounds are open.
    pub rolled: (Option<i64>, Option<i64>),
}

/// Whether rollups can serve `q`, and how its range splits.
pub(crate) fn split(q: &UsageQuery) -> Option<Split> {
    if q.group_by.contains(&GroupBy::Day) {
        let offset = q.bucket.map_or(q.utc_offset_ms, Bucket::offset_ms);
        if offset.rem_euclid(HOUR_MS) != 0 {
            return None;
        }
    }
    let ceil = |t: i64| t.div_euclid(HOUR_MS) * HOUR_MS + if t.rem_euclid(HOUR_MS) == 0 { 0 } else { HOUR_MS };
    let floor = |t: i64| t.div_euclid(HOUR_MS) * HOUR_MS;
    let (from, to) = (q.from_unix_ms, q.to_unix_ms);
    let body_from = from.map(ceil);
    let body_to = to.map(floor);
    if let (Some(f), Some(t)) = (body_from, body_to) {
        if f >= t {
            return None; // inside one or two partial hours: the raw ledger is as cheap
        }
    }
    let mut raw = Vec::new();
    if let (Some(f), Some(bf)) = (from, body_from) {
        if f < bf {
            raw.push((f, bf));
        }
    }
    if let (Some(t), Some(bt)) = (to, body_to) {
        if bt < t {
            raw.push((bt, t));
        }
    }
    Some(Split { raw, rolled: (body_from, body_to) })
}

/// Placeholder `n` of `dialect`.
fn ph(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Postgres => format!("${n}"),
        Dialect::Sqlite => format!("?{n}"),
    }
}

/// The non-time filters of `q` as conditions (same column names in both tables).
fn filter_conds(q: &UsageQuery, dialect: Dialect, binds: &mut Vec<Bind>, conds: &mut Vec<String>) {
    for (col, v) in [
        ("tenant", &q.tenant),
        ("key_id", &q.key_id),
        ("provider", &q.provider),
        ("upstream_model", &q.model),
        ("status", &q.status),
    ] {
        if let Some(v) = v {
            binds.push(Bind::Text(v.clone()));
            conds.push(format!("{col} = {}", ph(dialect, binds.len())));
        }
    }
}

/// `FROM (<sources>) AS u`: the rows `q` selects, as `ts_unix_ms, tenant, provider,
/// upstream_model` plus the `measure` columns, from the rollups where they serve and the raw
/// ledger elsewhere (see [`split`]). Binds are appended to `binds`.
pub(crate) fn sources(q: &UsageQuery, dialect: Dialect, measure: Measure, binds: &mut Vec<Bind>) -> String {
    let dims = "tenant, provider, upstream_model";
    let raw_select = |binds: &mut Vec<Bind>, ranges: &[(Option<i64>, Option<i64>)]| {
        let mut conds = Vec::new();
        let mut ors = Vec::new();
        for (f, t) in ranges {
            let mut and = Vec::new();
            if let Some(f) = f {
                binds.push(Bind::Int(*f));
                and.push(format!("ts_unix_ms >= {}", ph(dialect, binds.len())));
            }
            if let Some(t) = t {
                binds.push(Bind::Int(*t));
                and.push(format!("ts_unix_ms < {}", ph(dialect, binds.len())));
            }
            if !and.is_empty() {
                ors.push(and.join(" AND "));
            }
        }
        if ors.len() == 1 {
            conds.push(ors.remove(0));
        } else if !ors.is_empty() {
            conds.push(format!("(({}))", ors.join(") OR (")));
        }
        filter_conds(q, dialect, binds, &mut conds);
        let mut sql =
            format!("SELECT ts_unix_ms, {dims}, {} FROM ledger_records", measure_columns(measure, false).join(", "));
        if !conds.is_empty() {
            let _ = write!(sql, " WHERE {}", conds.join(" AND "));
        }
        sql
    };
    let parts: Vec<String> = match split(q) {
        None => vec![raw_select(binds, &[(q.from_unix_ms, q.to_unix_ms)])],
        Some(s) => {
            let mut parts = Vec::new();
            if !s.raw.is_empty() {
                let ranges: Vec<(Option<i64>, Option<i64>)> = s.raw.iter().map(|(f, t)| (Some(*f), Some(*t))).collect();
                parts.push(raw_select(binds, &ranges));
            }
            let mut conds = Vec::new();
            if let Some(f) = s.rolled.0 {
                binds.push(Bind::Int(f));
                conds.push(format!("hour_ms >= {}", ph(dialect, binds.len())));
            }
            if let Some(t) = s.rolled.1 {
                binds.push(Bind::Int(t));
                conds.push(format!("hour_ms < {}", ph(dialect, binds.len())));
            }
            filter_conds(q, dialect, binds, &mut conds);
            let mut sql = format!(
                "SELECT hour_ms AS ts_unix_ms, {dims}, {} FROM {TABLE}",
                measure_columns(measure, true).join(", ")
            );
            if !conds.is_empty() {
                let _ = write!(sql, " WHERE {}", conds.join(" AND "));
            }
            parts.push(sql);
            parts
        }
    };
    format!("FROM ({}) AS u", parts.join(" UNION ALL "))
}

/// The nearest-rank percentile `p` (1..=100) read from a histogram: the upper bound of the bucket
/// holding it (60 000 for the open last bucket). `None` for an empty histogram.
pub(crate) fn percentile(hist: &[i64; LATENCY_BUCKETS], p: u64) -> Option<u64> {
    let n: u64 = hist.iter().map(|c| u64::try_from(*c).unwrap_or(0)).sum();
    if n == 0 {
        return None;
    }
    let rank = super::browse::rank(n, p);
    let mut seen = 0u64;
    for (i, c) in hist.iter().enumerate() {
        seen += u64::try_from(*c).unwrap_or(0);
        if seen > rank {
            return Some(LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_latency_once() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(9), 0);
        assert_eq!(bucket_of(10), 1);
        assert_eq!(bucket_of(59_999), LATENCY_BUCKETS - 2);
        assert_eq!(bucket_of(60_000), LATENCY_BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
        assert!(LATENCY_BOUNDS_MS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn percentile_reads_the_bucket_upper_bound() {
        let mut h = [0i64; LATENCY_BUCKETS];
        assert_eq!(percentile(&h, 50), None);
        h[bucket_of(120)] = 98; // [100, 150)
        h[bucket_of(2_500)] = 2; // [2000, 3000)
        assert_eq!(percentile(&h, 50), Some(150));
        assert_eq!(percentile(&h, 99), Some(3_000));
        h[LATENCY_BUCKETS - 1] = 1_000;
        assert_eq!(percentile(&h, 99), Some(60_000));
    }

    #[test]
    fn ranges_split_into_whole_hours_and_raw_edges() {
        let h = HOUR_MS;
        let q = |f: Option<i64>, t: Option<i64>| UsageQuery { from_unix_ms: f, to_unix_ms: t, ..UsageQuery::default() };
        assert_eq!(split(&q(None, None)), Some(Split { raw: vec![], rolled: (None, None) }));
        assert_eq!(
            split(&q(Some(10 * h), Some(20 * h))),
            Some(Split { raw: vec![], rolled: (Some(10 * h), Some(20 * h)) })
        );
        assert_eq!(
            split(&q(Some(10 * h + 5), Some(20 * h + 7))),
            Some(Split { raw: vec![(10 * h + 5, 11 * h), (20 * h, 20 * h + 7)], rolled: (Some(11 * h), Some(20 * h)) })
        );
        assert_eq!(split(&q(Some(10 * h + 5), Some(11 * h + 7))), None);
        assert_eq!(
            split(&q(Some(10 * h + 5), None)),
            Some(Split { raw: vec![(10 * h + 5, 11 * h)], rolled: (Some(11 * h), None) })
        );
        // Day groups at +05:30 need the raw ledger; at +03:00 the rollups serve them.
        let day = |off: i64| UsageQuery { group_by: vec![GroupBy::Day], utc_offset_ms: off, ..UsageQuery::default() };
        assert_eq!(split(&day(19_800_000)), None);
        assert!(split(&day(10_800_000)).is_some());
        // Grouping by tenant only: the offset is irrelevant.
        let t = UsageQuery { group_by: vec![GroupBy::Tenant], utc_offset_ms: 19_800_000, ..UsageQuery::default() };
        assert!(split(&t).is_some());
    }

    #[test]
    fn migration_sql_names_every_column() {
        let sql = migration_sql();
        for c in all_columns() {
            assert!(sql.contains(&c), "{c}");
        }
        assert!(sql.contains("lat_23 BIGINT NOT NULL"));
    }
}
