//! Record-level reads for the dashboard: the latest records (keyset-paginated, newest first) and
//! error/latency figures over a filter. One SQL text for both stores, like `query.rs`; every column
//! is selected as BIGINT or TEXT so the two stores decode the same cells. Never request bodies: the
//! ledger does not hold them.

use serde::{Deserialize, Serialize};

use super::query::{Bind, Dialect, UsageQuery};

/// One cell of a browse result.
#[derive(Debug, Clone)]
pub(crate) enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
}

/// The expected type of a result column.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Int,
    Text,
}

/// SQL, binds and the column kinds of one browse query.
pub(crate) struct Plain {
    pub sql: String,
    pub binds: Vec<Bind>,
    pub kinds: Vec<Kind>,
}

/// A position in the newest-first record list: the last record of the previous page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// `ts_unix_ms` of the last record shown.
    pub ts_unix_ms: i64,
    /// Its `record_id` (ties on the timestamp are broken by id).
    pub record_id: String,
}

impl Cursor {
    /// `ts.record_id`, as put in a `before=` link.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.ts_unix_ms, self.record_id)
    }

    /// The inverse of [`Cursor::encode`]; `None` for anything else.
    pub fn decode(s: &str) -> Option<Self> {
        let (ts, id) = s.split_once('.')?;
        let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        ok.then(|| Some(Cursor { ts_unix_ms: ts.parse().ok()?, record_id: id.to_owned() })).flatten()
    }
}

/// One ledger record as the request list shows it (no bodies, no prices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordSummary {
    pub record_id: String,
    pub request_id: String,
    pub ts_unix_ms: i64,
    pub tenant: String,
    pub key_id: Option<String>,
    pub provider: String,
    pub requested_model: String,
    pub upstream_model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cost_nano_usd: i64,
    pub status: String,
    pub latency_ms: u64,
    pub http_status: u16,
}

/// Error count and latency percentiles over a filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencyStats {
    pub requests: u64,
    /// Records whose status is not `ok`.
    pub errors: u64,
    /// Percentiles of `latency_ms` from the rollups' histogram: the upper bound of the bucket
    /// holding the nearest-rank value (resolution in `rollup.rs`); `None` without records.
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

struct Where {
    conds: Vec<String>,
    binds: Vec<Bind>,
    dialect: Dialect,
}

impl Where {
    fn push(&mut self, cond: &str, bind: Bind) {
        self.binds.push(bind);
        let n = self.binds.len();
        let ph = match self.dialect {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite => format!("?{n}"),
        };
        self.conds.push(cond.replace('?', &ph));
    }

    fn sql(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }
}

fn filters(q: &UsageQuery, dialect: Dialect) -> Where {
    let mut w = Where { conds: Vec::new(), binds: Vec::new(), dialect };
    if let Some(from) = q.from_unix_ms {
        w.push("ts_unix_ms >= ?", Bind::Int(from));
    }
    if let Some(to) = q.to_unix_ms {
        w.push("ts_unix_ms < ?", Bind::Int(to));
    }
    for (col, v) in q.column_filters() {
        if let Some(v) = v {
            w.push(&format!("{col} = ?"), Bind::Text(v.clone()));
        }
    }
    w
}

const RECORD_COLUMNS: &[(&str, Kind)] = &[
    ("record_id", Kind::Text),
    ("request_id", Kind::Text),
    ("CAST(ts_unix_ms AS BIGINT)", Kind::Int),
    ("tenant", Kind::Text),
    ("key_id", Kind::Text),
    ("provider", Kind::Text),
    ("requested_model", Kind::Text),
    ("upstream_model", Kind::Text),
    ("CAST(prompt_tokens AS BIGINT)", Kind::Int),
    ("CAST(completion_tokens AS BIGINT)", Kind::Int),
    ("CAST(cached_tokens AS BIGINT)", Kind::Int),
    ("CAST(cost_nano_usd AS BIGINT)", Kind::Int),
    ("status", Kind::Text),
    ("CAST(latency_ms AS BIGINT)", Kind::Int),
    ("CAST(http_status AS BIGINT)", Kind::Int),
];

/// The newest records matching `q` (its `group_by` is ignored) strictly before `before`, at most
/// `limit`: a keyset page on `(ts_unix_ms, record_id)`, so page N costs what page 1 costs.
pub(crate) fn records(q: &UsageQuery, before: Option<&Cursor>, limit: u32, dialect: Dialect) -> Plain {
    let mut w = filters(q, dialect);
    if let Some(c) = before {
        // Expanded rather than a row-value comparison: both stores plan it on the ts index.
        w.binds.push(Bind::Int(c.ts_unix_ms));
        let ts = w.binds.len();
        w.binds.push(Bind::Text(c.record_id.clone()));
        let id = w.binds.len();
        let ph = |n: usize| match dialect {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite => format!("?{n}"),
        };
        w.conds.push(format!(
            "(ts_unix_ms < {ts} OR (ts_unix_ms = {ts} AND record_id < {id}))",
            ts = ph(ts),
            id = ph(id)
        ));
    }
    let cols: Vec<&str> = RECORD_COLUMNS.iter().map(|(c, _)| *c).collect();
    let sql = format!(
        "SELECT {} FROM ledger_records{} ORDER BY ts_unix_ms DESC, record_id DESC LIMIT {}",
        cols.join(", "),
        w.sql(),
        limit.clamp(1, 500)
    );
    Plain { sql, binds: w.binds, kinds: RECORD_COLUMNS.iter().map(|(_, k)| *k).collect() }
}

pub(crate) fn record_from(cells: &[Cell]) -> Option<RecordSummary> {
    if cells.len() != RECORD_COLUMNS.len() {
        return None;
    }
    let int = |i: usize| match &cells[i] {
        Cell::Int(v) => v.unwrap_or(0),
        Cell::Text(_) => 0,
    };
    let txt = |i: usize| match &cells[i] {
        Cell::Text(v) => v.clone(),
        Cell::Int(_) => None,
    };
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    Some(RecordSummary {
        record_id: txt(0)?,
        request_id: txt(1).unwrap_or_default(),
        ts_unix_ms: int(2),
        tenant: txt(3).unwrap_or_default(),
        key_id: txt(4),
        provider: txt(5).unwrap_or_default(),
        requested_model: txt(6).unwrap_or_default(),
        upstream_model: txt(7).unwrap_or_default(),
        prompt_tokens: u(int(8)),
        completion_tokens: u(int(9)),
        cached_tokens: u(int(10)),
        cost_nano_usd: int(11),
        status: txt(12).unwrap_or_default(),
        latency_ms: u(int(13)),
        http_status: u16::try_from(int(14)).unwrap_or(0),
    })
}

/// Requests, errors and the latency histogram over `q` (`rollup::LATENCY_BUCKETS` columns), from
/// the rollups for whole hours and days and the raw ledger for partial hours: rows to be summed
/// by the caller (one per rollup row and one for the raw part).
pub(crate) fn latency_histogram(q: &UsageQuery, dialect: Dialect) -> Plain {
    use super::rollup::{parts_sql, Measure, LATENCY_BUCKETS};
    let mut binds = Vec::new();
    let sql = parts_sql(q, dialect, Measure::Latency, &|_| Vec::new(), &mut binds);
    Plain { sql, binds, kinds: vec![Kind::Int; 2 + LATENCY_BUCKETS] }
}

/// Nearest-rank index (0-based) of percentile `p` (1..=100) among `n` sorted values (`n > 0`).
pub(crate) fn rank(n: u64, p: u64) -> u64 {
    (n * p).div_ceil(100).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_junk() {
        let c = Cursor { ts_unix_ms: 1_700_000_000_123, record_id: "rec_ab12".into() };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("x.rec_1"), None);
        assert_eq!(Cursor::decode("1.rec'--"), None);
        assert_eq!(Cursor::decode("1."), None);
    }

    #[test]
    fn nearest_rank() {
        assert_eq!(rank(1, 50), 0);
        assert_eq!(rank(1, 99), 0);
        assert_eq!(rank(100, 50), 49);
        assert_eq!(rank(100, 99), 98);
        assert_eq!(rank(3, 50), 1);
    }

    #[test]
    fn keyset_page_sql() {
        let q = UsageQuery { tenant: Some("acme".into()), ..UsageQuery::default() };
        let c = Cursor { ts_unix_ms: 5, record_id: "rec_1".into() };
        let p = records(&q, Some(&c), 50, Dialect::Postgres);
        assert!(p.sql.contains("tenant = $1"), "{}", p.sql);
        assert!(p.sql.contains("(ts_unix_ms < $2 OR (ts_unix_ms = $2 AND record_id < $3))"), "{}", p.sql);
        assert!(p.sql.ends_with("ORDER BY ts_unix_ms DESC, record_id DESC LIMIT 50"));
    }
}
