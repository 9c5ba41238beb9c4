//! `me`: who the caller is, its limits and its spend this month (UTC), from the same ledger query
//! as the usage API and the budgets.

use super::error::Error;
use super::state::AppState;
use super::usage::{self, UsageFilter};
use crate::domain::limits::CallerLimits;
use crate::domain::principal::{Credential, Principal};
use crate::domain::time::{month_start_ms, now_unix_ms};

/// What `me` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// The tenant, `None` for the admin key.
    pub tenant: Option<String>,
    /// The key used, when the caller used a stored or configured key.
    pub key_id: Option<String>,
    /// How the caller authenticated.
    pub credential: Option<Credential>,
    /// The tenant's and the key's limits (unlimited for the admin).
    pub limits: CallerLimits,
    /// Spend since the start of this UTC month, nano-USD: the tenant's own, or everyone's for the admin.
    pub spend_this_month_nano_usd: i64,
    /// Requests since the start of this UTC month (same scope).
    pub requests_this_month: u64,
}

/// The caller's identity, limits and spend this month; any authenticated principal may ask.
///
/// # Errors
/// 500 when the ledger cannot answer.
pub async fn me(state: &AppState, principal: &Principal) -> Result<Me, Error> {
    let filter = UsageFilter { from_unix_ms: Some(month_start_ms(now_unix_ms())), ..UsageFilter::default() };
    // `usage::query` scopes a tenant to itself and the admin to everyone: the same rule as `/v1/usage`.
    let rows = usage::query(state, principal, filter).await?;
    let spend = rows.iter().map(|r| r.cost_nano_usd).sum();
    let requests = rows.iter().map(|r| r.requests).sum();
    Ok(match principal {
        Principal::Admin => Me {
            tenant: None,
            key_id: None,
            credential: None,
            limits: CallerLimits::default(),
            spend_this_month_nano_usd: spend,
            requests_this_month: requests,
        },
        Principal::Tenant(t) => Me {
            tenant: Some(t.tenant.to_string()),
            key_id: t.key_id.as_deref().map(str::to_owned),
            credential: Some(t.credential),
            limits: t.limits,
            spend_this_month_nano_usd: spend,
            requests_this_month: requests,
        },
    })
}
