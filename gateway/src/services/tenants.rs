//! Tenants and their API keys: create, list, change, disable; issue, list, revoke keys.
//!
//! Every operation takes the caller's [`Principal`]: tenants are managed by the admin only; keys by
//! the admin for any tenant, or by a tenant for itself. Tenants and keys live in the tenant store
//! (`stores::tenants`), so every replica sees them; this replica's key cache is invalidated at once,
//! others notice within the cache TTL. Config-file tenants are listed but read-only.

use super::auth::{sha256, KeyCache, ANONYMOUS};
use super::error::Error;
use super::state::AppState;
use crate::domain::config::{is_valid_tenant_id, MAX_LIMIT};
use crate::domain::limits::LimitSpec;
use crate::domain::money::parse_usd_micro;
use crate::domain::principal::{Principal, TenantScope};
use crate::domain::text::{has_control, Escaped, MAX_CLIENT_STRING};
pub use crate::stores::tenants::KeyRow;
use crate::stores::tenants::{NewKey, StoreError, TenantRow};

/// Random characters in a key secret (62 symbols each: ~357 bits).
const SECRET_CHARS: usize = 60;
/// Characters of the secret kept for listings.
const PREFIX_CHARS: usize = 10;

/// A change to limits: `None` keeps a field, `Some(None)` clears it, `Some(Some(v))` sets it.
/// Budgets are decimal USD text (`"12.50"`), parsed exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsPatch {
    pub rpm: Option<Option<u64>>,
    pub tpm: Option<Option<u64>>,
    pub max_concurrent: Option<Option<u64>>,
    pub monthly_budget_usd: Option<Option<String>>,
}

/// What a create or update of a tenant asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantChange {
    pub limits: LimitsPatch,
    pub disabled: Option<bool>,
}

/// What a new key asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewKeyRequest {
    pub name: Option<String>,
    pub limits: LimitsPatch,
}

/// Where a tenant is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantSource {
    /// The config file: read-only here.
    Config,
    /// The tenant store (admin API, GraphQL, dashboard, JWT auto-creation).
    Stored,
}

/// A tenant as the services show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub source: TenantSource,
    pub limits: LimitSpec,
    pub disabled: bool,
    /// Unix ms; `None` for config tenants.
    pub created_at_unix_ms: Option<i64>,
    pub updated_at_unix_ms: Option<i64>,
}

/// A key just made: its stored row and the secret, shown this once.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key: KeyRow,
    pub secret: String,
}

impl LimitsPatch {
    /// `current` with this patch applied, validated.
    ///
    /// # Errors
    /// 400 for a zero limit (use `null` for none) or a budget that is not a decimal USD amount.
    pub fn apply(&self, mut limits: LimitSpec) -> Result<LimitSpec, Error> {
        for (name, field, v) in [
            ("rpm", &mut limits.rpm, self.rpm),
            ("tpm", &mut limits.tpm, self.tpm),
            ("max_concurrent", &mut limits.max_concurrent, self.max_concurrent),
        ] {
            if let Some(v) = v {
                if v == Some(0) {
                    return Err(Error::bad_request(
                        format!("`{name}` must be greater than 0 (null for no limit)."),
                        Some(name),
                    ));
                }
                // Refused, not clamped: the stores hold a signed 64-bit count.
                if v.is_some_and(|v| v > MAX_LIMIT) {
                    return Err(Error::bad_request(format!("`{name}` must be at most {MAX_LIMIT}."), Some(name)));
                }
                *field = v;
            }
        }
        if let Some(budget) = &self.monthly_budget_usd {
            limits.monthly_budget_micro_usd = match budget {
                None => None,
                Some(text) => Some(parse_usd_micro(text).map_err(|e| {
                    Error::bad_request(format!("`monthly_budget_usd`: {e}."), Some("monthly_budget_usd"))
                })?),
            };
        }
        Ok(limits)
    }
}

fn store(state: &AppState) -> Result<&KeyCache, Error> {
    state.auth.store().ok_or_else(|| Error::StoreUnavailable("no tenant store".into()))
}

fn stored(row: &TenantRow) -> Tenant {
    Tenant {
        id: row.id.clone(),
        source: TenantSource::Stored,
        limits: row.limits,
        disabled: row.disabled,
        created_at_unix_ms: Some(row.created_at_unix_ms),
        updated_at_unix_ms: Some(row.updated_at_unix_ms),
    }
}

/// Creates a stored tenant (admin only).
///
/// # Errors
/// 401 for a tenant caller; 400 for a bad id or limits; 409 for an existing or config-file tenant;
/// 503 when the store is down.
pub async fn create_tenant(
    state: &AppState,
    principal: &Principal,
    id: &str,
    change: &TenantChange,
) -> Result<Tenant, Error> {
    principal.admin()?;
    if id.is_empty() {
        return Err(Error::bad_request("`id` is required.", Some("id")));
    }
    if !is_valid_tenant_id(id) {
        return Err(Error::bad_request(
            "Tenant ids may contain only letters, digits, '-', '_' and '.', must start with a letter or digit, \
             and have at most 128 characters.",
            Some("id"),
        ));
    }
    // Ids are unique regardless of case (the store checks its own rows the same way).
    let reserved = id.eq_ignore_ascii_case(ANONYMOUS)
        || state.auth.is_config_tenant(id)
        || state.config.tenants.iter().any(|t| t.id.eq_ignore_ascii_case(id));
    if reserved {
        return Err(Error::Conflict(format!("Tenant `{id}` is defined in the config file.").into()));
    }
    let limits = change.limits.apply(LimitSpec::default())?;
    let cache = store(state)?;
    let row = cache.store().create_tenant(id, limits).await.map_err(store_error)?;
    cache.changed_tenant(id).await;
    tracing::info!(tenant = %Escaped(id), "Tenant created");
    Ok(stored(&row))
}

/// Every tenant, stored ones first, then the config file's (admin only).
///
/// # Errors
/// 401 for a tenant caller; 503 when the store is down.
pub async fn list_tenants(state: &AppState, principal: &Principal) -> Result<Vec<Tenant>, Error> {
    principal.admin()?;
    let rows = store(state)?.store().list_tenants().await.map_err(store_error)?;
    let mut out: Vec<Tenant> = rows.iter().map(stored).collect();
    out.extend(state.config.tenants.iter().map(|t| Tenant {
        id: t.id.clone(),
        source: TenantSource::Config,
        limits: t.limits,
        disabled: false,
        created_at_unix_ms: None,
        updated_at_unix_ms: None,
    }));
    Ok(out)
}

/// One stored tenant: the admin for any, a tenant for itself.
///
/// # Errors
/// 404 for an unknown tenant (or another tenant's, for a tenant caller); 409 for a config-file tenant.
pub async fn get_tenant(state: &AppState, principal: &Principal, id: &str) -> Result<Tenant, Error> {
    let scope = principal.tenant_scope(id)?;
    existing(state, &scope).await.map(|row| stored(&row))
}

/// Changes a stored tenant's limits or disabled flag (admin only).
///
/// # Errors
/// As [`create_tenant`], and 404 for an unknown tenant.
pub async fn update_tenant(
    state: &AppState,
    principal: &Principal,
    id: &str,
    change: &TenantChange,
) -> Result<Tenant, Error> {
    principal.admin()?;
    let scope = principal.tenant_scope(id)?;
    let current = existing(state, &scope).await?;
    let limits = change.limits.apply(current.limits)?;
    let disabled = change.disabled.unwrap_or(current.disabled);
    let cache = store(state)?;
    let row = cache
        .store()
        .update_tenant(id, limits, disabled)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("tenant", id))?;
    cache.changed_tenant(id).await;
    tracing::info!(tenant = %Escaped(id), disabled, "Tenant updated");
    Ok(stored(&row))
}

/// Disables a stored tenant: its keys stop working, its usage history stays (admin only).
///
/// # Errors
/// As [`update_tenant`].
pub async fn disable_tenant(state: &AppState, principal: &Principal, id: &str) -> Result<Tenant, Error> {
    update_tenant(state, principal, id, &TenantChange { disabled: Some(true), ..TenantChange::default() }).await
}

/// Issues a key for `tenant`: the admin for any stored tenant, a tenant for itself. The secret is in
/// the result and nowhere else (only its SHA-256 is stored).
///
/// # Errors
/// 404 for an unknown tenant, 409 for a disabled one, 400 for bad limits, 503 when the store is down.
pub async fn create_key(
    state: &AppState,
    principal: &Principal,
    tenant: &str,
    request: &NewKeyRequest,
) -> Result<IssuedKey, Error> {
    let scope = principal.tenant_scope(tenant)?;
    let row = existing(state, &scope).await?;
    if row.disabled {
        return Err(Error::Conflict(format!("Tenant `{tenant}` is disabled.").into()));
    }
    if let Some(name) = &request.name {
        check_key_name(name)?;
    }
    let limits = request.limits.apply(LimitSpec::default())?;
    let secret = new_secret()?;
    let digest = sha256(secret.as_bytes());
    let key_id = format!("key_{}", &new_secret()?[3..27]);
    let cache = store(state)?;
    let key = cache
        .store()
        .create_key(NewKey {
            id: key_id,
            tenant_id: tenant.to_owned(),
            digest_hex: hex::encode(digest),
            prefix: secret[..PREFIX_CHARS].to_owned(),
            name: request.name.clone(),
            limits,
        })
        .await
        .map_err(store_error)?;
    cache.changed_key(Some(&digest)).await;
    tracing::info!(tenant = %Escaped(tenant), key_id = %Escaped(&key.id), "API key created");
    Ok(IssuedKey { key, secret })
}

/// A tenant's keys (never their secrets): the admin for any tenant, a tenant for itself.
///
/// # Errors
/// 404 for an unknown tenant, 503 when the store is down.
pub async fn list_keys(state: &AppState, principal: &Principal, tenant: &str) -> Result<Vec<KeyRow>, Error> {
    let scope = principal.tenant_scope(tenant)?;
    existing(state, &scope).await?;
    store(state)?.store().list_keys(scope.tenant()).await.map_err(store_error)
}

/// Revokes a key: the admin any key, a tenant only one of its own (another tenant's key is 404, as if
/// it did not exist).
///
/// # Errors
/// 404 for an unknown key, 503 when the store is down.
pub async fn revoke_key(state: &AppState, principal: &Principal, key_id: &str) -> Result<KeyRow, Error> {
    let cache = store(state)?;
    if let Principal::Tenant(caller) = principal {
        let own = cache.store().list_keys(&caller.tenant).await.map_err(store_error)?;
        if !own.iter().any(|k| k.id == key_id) {
            return Err(not_found("key", key_id));
        }
    }
    let row = cache.store().revoke_key(key_id).await.map_err(store_error)?.ok_or_else(|| not_found("key", key_id))?;
    cache.changed_key(None).await;
    tracing::info!(tenant = %Escaped(&row.tenant_id), key_id = %Escaped(&row.id), "API key revoked");
    Ok(row)
}

/// A key's `name`: at most [`MAX_CLIENT_STRING`] bytes, no control characters (a NUL used to reach
/// Postgres and come back as a 503; a newline would end up in logs and listings).
///
/// # Errors
/// 400 with `param: "name"`.
fn check_key_name(name: &str) -> Result<(), Error> {
    if name.len() > MAX_CLIENT_STRING {
        return Err(Error::bad_request(format!("`name` is longer than {MAX_CLIENT_STRING} bytes."), Some("name")));
    }
    if has_control(name) {
        return Err(Error::bad_request("`name` must not contain control characters.", Some("name")));
    }
    Ok(())
}

async fn existing(state: &AppState, scope: &TenantScope) -> Result<TenantRow, Error> {
    let id = scope.tenant();
    if state.auth.is_config_tenant(id) {
        return Err(Error::Conflict(format!("Tenant `{id}` is defined in the config file; edit it there.").into()));
    }
    store(state)?.store().get_tenant(id).await.map_err(store_error)?.ok_or_else(|| not_found("tenant", id))
}

fn not_found(what: &str, id: &str) -> Error {
    Error::NotFound(format!("No {what} `{}`.", id.chars().take(128).collect::<String>()).into())
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Conflict(what) => Error::Conflict(format!("`{what}` already exists.").into()),
        StoreError::Unavailable(_) | StoreError::Config(_) => {
            tracing::warn!(error = %e, "Tenant store error");
            Error::StoreUnavailable("The tenant store is unavailable; retry shortly.".into())
        }
    }
}

/// `sk-` plus random alphanumerics from the OS CSPRNG.
fn new_secret() -> Result<String, Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(3 + SECRET_CHARS);
    out.push_str("sk-");
    let mut buf = [0u8; 64];
    while out.len() < 3 + SECRET_CHARS {
        getrandom::getrandom(&mut buf).map_err(|e| Error::Internal(format!("no randomness: {e}").into()))?;
        // Rejection sampling: 248 = 4 * 62 keeps the distribution uniform.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == 3 + SECRET_CHARS {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(*b % 62)]));
        }
    }
    Ok(out)
}
