//! Usage totals from the ledger, scoped by the caller: a tenant reads only its own, the admin reads
//! everyone's (and may filter by tenant). The same numbers for every front door.

use super::error::Error;
use super::state::AppState;
use crate::domain::principal::{Denied, MetricsScope, Principal, UsageScope};
use crate::domain::time::{month_start_ms, now_unix_ms};
pub use crate::stores::ledger::{
    regroup, Bucket, Cursor, GroupBy, LatencyStats, LedgerError, RecordStatus, RecordSummary, UsageRow,
};
use crate::stores::ledger::{LedgerHandle, UsageQuery};

/// What to total and how to group it: the ledger's own query type (times in unix ms, `from`
/// inclusive, `to` exclusive). Its `tenant` is a filter the caller asks for; the scope decides.
pub type UsageFilter = UsageQuery;

/// Usage visible to `principal`: its own for a tenant (a `tenant` filter naming another tenant is
/// refused), everyone's for the admin.
///
/// # Errors
/// 400 for a tenant filtering on another tenant or a bad filter; 500 when the ledger cannot answer.
pub async fn query(state: &AppState, principal: &Principal, filter: UsageFilter) -> Result<Vec<UsageRow>, Error> {
    let scope = principal.usage_scope(filter.tenant.as_deref()).map_err(|denied| match denied {
        Denied::OtherTenant => Error::bad_request("`tenant` can only be filtered with the admin key.", Some("tenant")),
        other => Error::Denied(other),
    })?;
    run(state, scope, filter).await
}

/// Usage visible to `principal` (as [`query`]) as a time series: one row per `bucket` (and per the
/// filter's other groups), each with its `bucket_start_unix_ms`; empty buckets are absent.
///
/// # Errors
/// As [`query`].
pub async fn series(
    state: &AppState,
    principal: &Principal,
    mut filter: UsageFilter,
    bucket: Bucket,
) -> Result<Vec<UsageRow>, Error> {
    if !filter.group_by.contains(&GroupBy::Day) {
        filter.group_by.push(GroupBy::Day);
    }
    filter.bucket = Some(bucket);
    query(state, principal, filter).await
}

/// Everyone's usage (admin only): the operation behind `/admin/usage`.
///
/// # Errors
/// 401 for a tenant caller, otherwise as [`query`].
pub async fn query_all(state: &AppState, principal: &Principal, filter: UsageFilter) -> Result<Vec<UsageRow>, Error> {
    principal.admin()?;
    query(state, principal, filter).await
}

/// The filter narrowed to what `principal` may see, and the ledger to run it on.
fn scoped<'s>(
    state: &'s AppState,
    principal: &Principal,
    filter: UsageFilter,
) -> Result<(UsageQuery, &'s LedgerHandle), Error> {
    let scope = principal.usage_scope(filter.tenant.as_deref()).map_err(|denied| match denied {
        Denied::OtherTenant => Error::bad_request("`tenant` can only be filtered with the admin key.", Some("tenant")),
        other => Error::Denied(other),
    })?;
    let ledger = state
        .sink
        .as_ref()
        .and_then(|s| s.ledger())
        .ok_or_else(|| Error::Internal("the ledger is not running".into()))?;
    let tenant = match scope {
        UsageScope::All { tenant } => tenant,
        UsageScope::Tenant(own) => Some(own.tenant().to_owned()),
    };
    Ok((UsageQuery { tenant, ..filter }, ledger))
}

fn ledger_error(e: LedgerError) -> Error {
    match e {
        LedgerError::Query(message) => Error::bad_request(message, None),
        other => Error::Internal(other.to_string().into()),
    }
}

async fn run(state: &AppState, scope: UsageScope, filter: UsageFilter) -> Result<Vec<UsageRow>, Error> {
    let ledger = state
        .sink
        .as_ref()
        .and_then(|s| s.ledger())
        .ok_or_else(|| Error::Internal("the ledger is not running".into()))?;
    let tenant = match scope {
        UsageScope::All { tenant } => tenant,
        UsageScope::Tenant(own) => Some(own.tenant().to_owned()),
    };
    let q = UsageQuery { tenant, ..filter };
    ledger.usage(&q).await.map_err(ledger_error)
}

/// The newest ledger records `principal` may see (a tenant: its own), filtered by `filter` (its
/// `group_by` is ignored), strictly older than `before`, at most `limit` (1..=500). Never bodies:
/// the ledger holds none.
///
/// # Errors
/// As [`query`].
pub async fn records(
    state: &AppState,
    principal: &Principal,
    filter: UsageFilter,
    before: Option<&Cursor>,
    limit: u32,
) -> Result<Vec<RecordSummary>, Error> {
    let (q, ledger) = scoped(state, principal, filter)?;
    ledger.records(&q, before, limit).await.map_err(ledger_error)
}

/// Request and error counts and p50/p99 latency of what `principal` may see under `filter`.
///
/// # Errors
/// As [`query`].
pub async fn latency(state: &AppState, principal: &Principal, filter: UsageFilter) -> Result<LatencyStats, Error> {
    let (q, ledger) = scoped(state, principal, filter)?;
    ledger.latency(&q).await.map_err(ledger_error)
}

/// Writes one CSV cell. A cell a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`,
/// a tab or a carriage return) gets a leading `'`, as OWASP recommends against CSV injection: model
/// and tenant names are client-chosen text.
pub fn csv_field(out: &mut String, value: &str) {
    let neutralise = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if neutralise || value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if neutralise {
            out.push('\'');
        }
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// The CSV of usage rows, as `/admin/usage?format=csv` and the dashboard's export serve it: one
/// encoder, so the two reconcile byte for byte for the same filter.
pub fn to_csv(rows: &[UsageRow]) -> String {
    let mut out = String::from(
        "tenant,provider,model,day,requests,prompt_tokens,completion_tokens,cached_tokens,cache_write_tokens,cost_usd\n",
    );
    for r in rows {
        for v in [&r.tenant, &r.provider, &r.model, &r.day] {
            csv_field(&mut out, v.as_deref().unwrap_or(""));
            out.push(',');
        }
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            r.requests, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.cache_write_tokens, r.cost_usd
        ));
    }
    out
}

/// Deletes ledger records older than `before_unix_ms` (admin only): retention, e.g. 13 months for
/// invoicing. Bounded: the cut-off must be at or before the start of the current UTC month, so this
/// month's usage (which budgets are computed from) cannot be deleted. Logged at info with the count.
///
/// # Errors
/// 401 for a tenant caller; 400 for a cut-off inside the current month; 500 when the ledger fails.
pub async fn prune(state: &AppState, principal: &Principal, before_unix_ms: i64) -> Result<u64, Error> {
    principal.admin()?;
    let month_start = month_start_ms(now_unix_ms());
    if before_unix_ms > month_start {
        return Err(Error::bad_request(
            "`before` must be at or before the start of the current month (UTC): this month's usage is kept.",
            Some("before"),
        ));
    }
    let ledger = state
        .sink
        .as_ref()
        .and_then(|s| s.ledger())
        .ok_or_else(|| Error::Internal("the ledger is not running".into()))?;
    let deleted = ledger.prune_before(before_unix_ms).await.map_err(|e| Error::Internal(e.to_string().into()))?;
    tracing::info!(before_unix_ms, deleted, "Usage records pruned through the admin API");
    Ok(deleted)
}

/// The `/metrics` text for `scope`: business series (model, tenant, tokens, cost) only in
/// [`MetricsScope::Full`]. `None` when metrics are disabled.
pub fn metrics_text(state: &AppState, scope: MetricsScope) -> Option<Vec<u8>> {
    let sink = state.sink.as_ref()?;
    let stats = sink.ledger().map(|l| l.stats());
    Some(sink.metrics().render_scoped(stats.as_ref(), scope == MetricsScope::Full))
}
