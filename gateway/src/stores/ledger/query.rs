//! Usage queries: one SQL shape for both stores, results normalized and sorted in Rust so
//! Postgres and SQLite answer identically (no collation or date-function differences).
//!
//! Times are unix milliseconds, UTC; `from` is inclusive, `to` exclusive. `day` groups by UTC
//! calendar day (`ts_unix_ms / 86_400_000`), rendered `YYYY-MM-DD`. `model` is the upstream model.

use serde::{Deserialize, Serialize};

use super::LedgerError;
use crate::domain::pricing::format_usd;
use crate::domain::time::format_day;

/// A dimension to group usage by.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Tenant id.
    Tenant,
    /// Provider id.
    Provider,
    /// Upstream model.
    Model,
    /// UTC calendar day.
    Day,
}

impl GroupBy {
    /// Parses `tenant`, `provider`, `model` or `day`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(Self::Tenant),
            "provider" => Some(Self::Provider),
            "model" => Some(Self::Model),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    /// Parses a comma-separated list (`"tenant,day"`); empty items are ignored.
    ///
    /// # Errors
    /// [`LedgerError::Query`] naming the unknown dimension.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, LedgerError> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let g = Self::parse(item).ok_or_else(|| {
                LedgerError::Query(format!("unknown group_by `{item}` (expected tenant, provider, model, day)"))
            })?;
            if !out.contains(&g) {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// The group expression over a table whose time column (bucket start, unix ms) is `time`.
    fn column(self, bucket: Option<Bucket>, utc_offset_ms: i64, time: &str) -> String {
        match (self, bucket) {
            (GroupBy::Tenant, _) => "tenant".to_owned(),
            (GroupBy::Provider, _) => "provider".to_owned(),
            (GroupBy::Model, _) => "upstream_model".to_owned(),
            // Integer division truncates toward zero; timestamps before 1970 are not stored.
            (GroupBy::Day, None) if utc_offset_ms == 0 => format!("({time} / 86400000)"),
            (GroupBy::Day, None) => format!("(({time} + ({utc_offset_ms})) / 86400000)"),
            // Integers of our own (validated by `Bucket::new`), not client text: formatted into the
            // SQL so both dialects see the same BIGINT arithmetic without typed placeholders.
            (GroupBy::Day, Some(b)) => format!("(({time} + ({})) / {})", b.offset_ms, b.width_ms),
        }
    }
}

/// A time bucket for series: `width_ms` long, aligned to local midnight of a fixed UTC offset
/// (`offset_ms`, e.g. +02:00 = 7 200 000). Replaces the UTC day of [`GroupBy::Day`] when set.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bucket {
    width_ms: i64,
    offset_ms: i64,
}

impl Bucket {
    /// Widest bucket (a day) and largest offset (±18 h, as RFC 3339 and ISO 8601 allow).
    const MAX_OFFSET_MS: i64 = 18 * 3_600_000;

    /// A bucket of `width_ms` (one hour or one day; an hour boundary is the same in every whole-
    /// or quarter-hour offset, so the offset only matters for days) at `offset_ms` from UTC.
    ///
    /// # Errors
    /// [`LedgerError::Query`] for a width other than 1 h or 1 day, or an offset beyond ±18 h.
    pub fn new(width_ms: i64, offset_ms: i64) -> Result<Self, LedgerError> {
        if width_ms != 3_600_000 && width_ms != 86_400_000 {
            return Err(LedgerError::Query("bucket width must be one hour or one day".into()));
        }
        if offset_ms.abs() > Self::MAX_OFFSET_MS {
            return Err(LedgerError::Query("time zone offset must be within ±18:00".into()));
        }
        Ok(Self { width_ms, offset_ms })
    }

    /// The bucket's width, ms.
    pub fn width_ms(self) -> i64 {
        self.width_ms
    }

    /// The offset from UTC, ms east.
    pub fn offset_ms(self) -> i64 {
        self.offset_ms
    }

    /// Where bucket number `n` starts, unix ms UTC.
    fn start_ms(self, n: i64) -> i64 {
        n * self.width_ms - self.offset_ms
    }
}

/// Filters and grouping for [`super::LedgerHandle::usage`]. All filters are optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageQuery {
    /// Inclusive lower bound, unix ms.
    pub from_unix_ms: Option<i64>,
    /// Exclusive upper bound, unix ms.
    pub to_unix_ms: Option<i64>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this API key id (the ledger's `key_id`; budgets of one key).
    #[serde(default)]
    pub key_id: Option<String>,
    /// Only this provider id.
    pub provider: Option<String>,
    /// Only this upstream model (exact).
    pub model: Option<String>,
    /// Dimensions to group by (any subset, order irrelevant); empty = one total row.
    pub group_by: Vec<GroupBy>,
    /// Only records with this status (`ok`, `upstream_error`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// Offset of the time zone `day` groups in, ms east of UTC (0 = UTC): a day is the half-open
    /// `[local midnight, next local midnight)`.
    #[serde(default)]
    pub utc_offset_ms: i64,
    /// With [`GroupBy::Day`]: bucket by this instead of the UTC day (rows then carry
    /// `bucket_start_unix_ms` and no `day`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<Bucket>,
}

impl UsageQuery {
    /// The equality filters, as (ledger column, value): the same columns in the records and in
    /// every rollup tier that can serve them.
    pub(crate) fn column_filters(&self) -> [(&'static str, &Option<String>); 5] {
        [
            ("tenant", &self.tenant),
            ("key_id", &self.key_id),
            ("provider", &self.provider),
            ("upstream_model", &self.model),
            ("status", &self.status),
        ]
    }
}

/// One usage row. A dimension not grouped by is `None`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageRow {
    /// Tenant, when grouped by tenant.
    pub tenant: Option<String>,
    /// Provider, when grouped by provider.
    pub provider: Option<String>,
    /// Upstream model, when grouped by model.
    pub model: Option<String>,
    /// UTC day `YYYY-MM-DD`, when grouped by day.
    pub day: Option<String>,
    /// Start of the time bucket (unix ms), when grouped by a [`Bucket`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_start_unix_ms: Option<i64>,
    /// Number of requests (ledger records).
    pub requests: u64,
    /// Sum of prompt tokens (including cached and cache-write tokens).
    pub prompt_tokens: u64,
    /// Sum of completion tokens.
    pub completion_tokens: u64,
    /// Sum of cached input tokens.
    pub cached_tokens: u64,
    /// Sum of cache-write tokens.
    pub cache_write_tokens: u64,
    /// Sum of costs, nano-USD.
    pub cost_nano_usd: i64,
    /// The same cost as a decimal USD string (`format_usd`).
    pub cost_usd: String,
}

impl UsageRow {
    /// A row of no requests, grouped by nothing.
    pub fn zero() -> Self {
        UsageRow {
            tenant: None,
            provider: None,
            model: None,
            day: None,
            bucket_start_unix_ms: None,
            requests: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            cache_write_tokens: 0,
            cost_nano_usd: 0,
            cost_usd: format_usd(0),
        }
    }

    /// Adds `other`'s counts (not its groups). `cost_usd` is not reformatted on every addition:
    /// call [`UsageRow::summed`] once the sum is complete.
    pub fn add(&mut self, other: &UsageRow) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cost_nano_usd += other.cost_nano_usd;
    }

    /// The row with `cost_usd` matching its summed cost.
    #[must_use]
    pub fn summed(mut self) -> Self {
        self.cost_usd = format_usd(self.cost_nano_usd);
        self
    }
}

/// Sums `rows` (the result of a query grouped by at least `keep`) into the rows of the same query
/// grouped by `keep` only, sorted as a query's rows are. Exact: each coarse row is the integer sum
/// of the fine rows it covers, which is what the coarser query would have summed. A page that
/// shows several breakdowns of one period runs one fine query and regroups it, instead of scanning
/// the rollups once per breakdown.
pub fn regroup(rows: &[UsageRow], keep: &[GroupBy]) -> Vec<UsageRow> {
    use std::collections::BTreeMap;
    fn pick(kept: bool, v: &Option<String>) -> Option<&str> {
        if kept {
            v.as_deref()
        } else {
            None
        }
    }
    // Borrowed keys: a coarse row's strings are cloned once, when the group first appears.
    type GroupKey<'r> = (Option<i64>, Option<&'r str>, Option<&'r str>, Option<&'r str>, Option<&'r str>);
    let mut out: BTreeMap<GroupKey<'_>, UsageRow> = BTreeMap::new();
    let kept = |g: GroupBy| keep.contains(&g);
    for r in rows {
        let key = (
            if kept(GroupBy::Day) { r.bucket_start_unix_ms } else { None },
            pick(kept(GroupBy::Day), &r.day),
            pick(kept(GroupBy::Tenant), &r.tenant),
            pick(kept(GroupBy::Provider), &r.provider),
            pick(kept(GroupBy::Model), &r.model),
        );
        let acc = out.entry(key).or_insert_with(|| UsageRow {
            tenant: key.2.map(str::to_owned),
            provider: key.3.map(str::to_owned),
            model: key.4.map(str::to_owned),
            day: key.1.map(str::to_owned),
            bucket_start_unix_ms: key.0,
            ..UsageRow::zero()
        });
        acc.add(r);
    }
    out.into_values().map(UsageRow::summed).collect()
}

/// Placeholder style of the store's SQL dialect.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

/// A bind value of a usage query.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Int(i64),
    Text(String),
}

/// The SQL and binds of a usage query; result columns are the group columns in
/// `UsageQuery::group_by` order, then requests and the five sums.
pub(crate) struct BuiltQuery {
    pub sql: String,
    pub binds: Vec<Bind>,
    pub groups: Vec<GroupBy>,
    pub bucket: Option<Bucket>,
}

pub(crate) fn build(q: &UsageQuery, dialect: Dialect) -> BuiltQuery {
    let mut groups = q.group_by.clone();
    groups.sort_unstable();
    groups.dedup();
    let mut binds = Vec::new();
    // Whole days and hours from the rollups, partial edge hours from the raw ledger (`rollup.rs`);
    // the rows of every part are summed per group in `finish`.
    let group_exprs = |time: &str| groups.iter().map(|g| g.column(q.bucket, q.utc_offset_ms, time)).collect();
    let sql = super::rollup::parts_sql(q, dialect, super::rollup::Measure::Usage, &group_exprs, &mut binds);
    BuiltQuery { sql, binds, groups, bucket: q.bucket }
}

/// Sums a usage query's result rows per group while they are read: the parts' rows (rollup rows as
/// stored, the raw part grouped; see `rollup::parts_sql`) can number 10⁵ for a 90-day page, so group
/// texts are interned (one allocation per distinct name, not per row) and the map key is plain
/// integers.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    ids: std::collections::HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    sums: std::collections::HashMap<GroupIds, [i64; 6]>,
}

/// A group as interned text ids (in `groups` order, `Day` skipped) and a day number.
type GroupIds = ([Option<u32>; 3], Option<i64>);

impl Accumulator {
    /// The id of a group text.
    pub(crate) fn intern(&mut self, text: &str) -> u32 {
        if let Some(id) = self.ids.get(text) {
            return *id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(text.into());
        self.ids.insert(text.into(), id);
        id
    }

    /// Adds one result row: its group texts' ids (in `groups` order, `Day` skipped), its day
    /// number, its counters.
    pub(crate) fn add(&mut self, texts: [Option<u32>; 3], day: Option<i64>, counters: [i64; 6]) {
        let acc = self.sums.entry((texts, day)).or_insert([0; 6]);
        for (a, c) in acc.iter_mut().zip(counters) {
            *a = a.saturating_add(c);
        }
    }
}

/// A merged group: text ids, day number, counters.
struct RawRow {
    texts: [Option<u32>; 3],
    day: Option<i64>,
    counters: [i64; 6],
}

pub(crate) fn finish(groups: &[GroupBy], bucket: Option<Bucket>, acc: Accumulator) -> Vec<UsageRow> {
    let Accumulator { names, sums: merged, .. } = acc;
    let name = |id: Option<u32>| id.and_then(|i| names.get(i as usize)).map(|n| n.to_string());
    let mut rows: Vec<UsageRow> = merged
        .into_iter()
        .map(|((texts, day), counters)| RawRow { texts, day, counters })
        // No record, no row: a raw GROUP BY never yields an empty group, and a rollup row a prune
        // emptied must not show up as one.
        .filter(|r| r.counters[0] > 0)
        .map(|r| {
            let mut texts = r.texts.into_iter().map(name);
            let mut row = UsageRow {
                tenant: None,
                provider: None,
                model: None,
                day: None,
                bucket_start_unix_ms: None,
                requests: super::record::to_u64(r.counters[0]),
                prompt_tokens: super::record::to_u64(r.counters[1]),
                completion_tokens: super::record::to_u64(r.counters[2]),
                cached_tokens: super::record::to_u64(r.counters[3]),
                cache_write_tokens: super::record::to_u64(r.counters[4]),
                cost_nano_usd: r.counters[5],
                cost_usd: format_usd(r.counters[5]),
            };
            for g in groups {
                match g {
                    GroupBy::Tenant => row.tenant = texts.next().flatten(),
                    GroupBy::Provider => row.provider = texts.next().flatten(),
                    GroupBy::Model => row.model = texts.next().flatten(),
                    GroupBy::Day => match bucket {
                        None => row.day = r.day.map(format_day),
                        Some(b) => row.bucket_start_unix_ms = r.day.map(|n| b.start_ms(n)),
                    },
                }
            }
            row
        })
        .collect();
    rows.sort_by(|a, b| {
        (a.bucket_start_unix_ms, &a.day, &a.tenant, &a.provider, &a.model).cmp(&(
            b.bucket_start_unix_ms,
            &b.day,
            &b.tenant,
            &b.provider,
            &b.model,
        ))
    });
    rows
}
