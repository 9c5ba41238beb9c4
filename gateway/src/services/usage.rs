//! Usage totals from the ledger, scoped by the caller: a tenant reads only its own, the admin reads
//! everyone's (and may filter by tenant). The same numbers for every front door.

use super::error::Error;
use super::state::AppState;
use crate::domain::principal::{Denied, Principal, UsageScope};
use crate::stores::ledger::UsageQuery;
pub use crate::stores::ledger::{GroupBy, LedgerError, UsageRow};

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

/// Everyone's usage (admin only): the operation behind `/admin/usage`.
///
/// # Errors
/// 401 for a tenant caller, otherwise as [`query`].
pub async fn query_all(state: &AppState, principal: &Principal, filter: UsageFilter) -> Result<Vec<UsageRow>, Error> {
    principal.admin()?;
    query(state, principal, filter).await
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
    ledger.usage(&q).await.map_err(|e| match e {
        LedgerError::Query(message) => Error::bad_request(message, None),
        other => Error::Internal(other.to_string().into()),
    })
}
