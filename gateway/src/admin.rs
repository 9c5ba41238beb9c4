//! The admin API for tenants and keys, behind the admin key. Plain JSON in and out.
//!
//! | method and path                   | does                                                        |
//! |-----------------------------------|-------------------------------------------------------------|
//! | `POST /admin/tenants`             | create (`{"id","rpm","tpm","max_concurrent","monthly_budget_usd"}`) |
//! | `GET /admin/tenants`              | list (stored and config-file tenants)                       |
//! | `GET /admin/tenants/{id}`         | one tenant                                                  |
//! | `PATCH /admin/tenants/{id}`       | change limits (`null` clears one) or `disabled`             |
//! | `DELETE /admin/tenants/{id}`      | disable (keys stop working; usage history stays)            |
//! | `POST /admin/tenants/{id}/keys`   | new key → `{"id":"key_…","key":"sk-…"}`, the secret shown once |
//! | `GET /admin/tenants/{id}/keys`    | list keys (never the secret)                                |
//! | `DELETE /admin/keys/{key_id}`     | revoke                                                      |
//!
//! Tenants and keys live in the tenant store (`tenants_store.rs`), so every replica sees them; other
//! replicas notice a revocation or a disabled tenant within the key cache TTL.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::RawUsd;
use crate::error::Error;
use crate::http::body::{self, Body};
use crate::limits::{format_usd_micro, parse_usd_micro, LimitSpec};
use crate::state::AppState;
use crate::tenants_store::{KeyRow, NewKey, StoreError, TenantRow};

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;
/// Random characters in a key secret (62 symbols each: ~357 bits).
const SECRET_CHARS: usize = 60;
/// Characters of the secret kept for listings.
const PREFIX_CHARS: usize = 10;

/// Handles `/admin/tenants…` and `/admin/keys/…` (the caller already checked the admin key).
///
/// # Errors
/// 400 for a bad body, 404 for an unknown tenant or key, 409 for a duplicate or a config-file tenant,
/// 503 when the store is down.
pub async fn handle(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let Some(cache) = state.auth.store() else {
        return Err(Error::StoreUnavailable("no tenant store".into()));
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, ["admin", "tenants"]) => {
            let body: TenantBody = read_json(req).await?;
            let Some(id) = body.id.as_deref() else {
                return Err(Error::bad_request("`id` is required.", Some("id")));
            };
            if !crate::config::is_valid_tenant_id(id) {
                return Err(Error::bad_request(
                    "Tenant ids may contain only letters, digits, '-', '_' and '.' (at most 128).",
                    Some("id"),
                ));
            }
            if state.auth.is_config_tenant(id) || id == crate::auth::ANONYMOUS {
                return Err(Error::Conflict(format!("Tenant `{id}` is defined in the config file.").into()));
            }
            let limits = body.apply(LimitSpec::default())?;
            let row = cache.store().create_tenant(id, limits).await.map_err(store_error)?;
            cache.changed_tenant(id).await;
            tracing::info!(tenant = id, "Tenant created");
            Ok(json_response(StatusCode::CREATED, &tenant_json(&row)))
        }
        (&Method::GET, ["admin", "tenants"]) => {
            let rows = cache.store().list_tenants().await.map_err(store_error)?;
            let mut data: Vec<Value> = rows.iter().map(tenant_json).collect();
            for (id, limits) in state.config.tenants.iter().map(|t| (&t.id, &t.limits)) {
                data.push(json!({
                    "id": id,
                    "source": "config",
                    "rpm": limits.rpm,
                    "tpm": limits.tpm,
                    "max_concurrent": limits.max_concurrent,
                    "monthly_budget_usd": limits.monthly_budget_micro_usd.map(format_usd_micro),
                    "disabled": false,
                }));
            }
            Ok(json_response(StatusCode::OK, &json!({"object": "list", "data": data})))
        }
        (&Method::GET, ["admin", "tenants", id]) => {
            let row = existing_tenant(state, id).await?;
            Ok(json_response(StatusCode::OK, &tenant_json(&row)))
        }
        (&Method::PATCH, ["admin", "tenants", id]) => {
            let id = (*id).to_owned();
            let body: TenantBody = read_json(req).await?;
            if body.id.as_deref().is_some_and(|b| b != id) {
                return Err(Error::bad_request("A tenant's id cannot change.", Some("id")));
            }
            let current = existing_tenant(state, &id).await?;
            let limits = body.apply(current.limits)?;
            let disabled = body.disabled.unwrap_or(current.disabled);
            let row = cache
                .store()
                .update_tenant(&id, limits, disabled)
                .await
                .map_err(store_error)?
                .ok_or_else(|| not_found("tenant", &id))?;
            cache.changed_tenant(&id).await;
            tracing::info!(tenant = %id, disabled, "Tenant updated");
            Ok(json_response(StatusCode::OK, &tenant_json(&row)))
        }
        (&Method::DELETE, ["admin", "tenants", id]) => {
            let current = existing_tenant(state, id).await?;
            let row = cache
                .store()
                .update_tenant(id, current.limits, true)
                .await
                .map_err(store_error)?
                .ok_or_else(|| not_found("tenant", id))?;
            cache.changed_tenant(id).await;
            tracing::info!(tenant = %id, "Tenant disabled");
            Ok(json_response(StatusCode::OK, &tenant_json(&row)))
        }
        (&Method::POST, ["admin", "tenants", id, "keys"]) => {
            let id = (*id).to_owned();
            let body: KeyBody = read_json(req).await?;
            let tenant = existing_tenant(state, &id).await?;
            if tenant.disabled {
                return Err(Error::Conflict(format!("Tenant `{id}` is disabled.").into()));
            }
            let limits = body.limits.apply(LimitSpec::default())?;
            let secret = new_secret()?;
            let digest = crate::auth::sha256(secret.as_bytes());
            let key_id = format!("key_{}", &new_secret()?[3..27]);
            let row = cache
                .store()
                .create_key(NewKey {
                    id: key_id,
                    tenant_id: id.clone(),
                    digest_hex: hex::encode(digest),
                    prefix: secret[..PREFIX_CHARS].to_owned(),
                    name: body.name,
                    limits,
                })
                .await
                .map_err(store_error)?;
            cache.changed_key(Some(&digest)).await;
            tracing::info!(tenant = %id, key_id = %row.id, "API key created");
            let mut v = key_json(&row);
            v["key"] = Value::String(secret);
            Ok(json_response(StatusCode::CREATED, &v))
        }
        (&Method::GET, ["admin", "tenants", id, "keys"]) => {
            existing_tenant(state, id).await?;
            let rows = cache.store().list_keys(id).await.map_err(store_error)?;
            let data: Vec<Value> = rows.iter().map(key_json).collect();
            Ok(json_response(StatusCode::OK, &json!({"object": "list", "data": data})))
        }
        (&Method::DELETE, ["admin", "keys", key_id]) => {
            let row =
                cache.store().revoke_key(key_id).await.map_err(store_error)?.ok_or_else(|| not_found("key", key_id))?;
            cache.changed_key(None).await;
            tracing::info!(tenant = %row.tenant_id, key_id = %row.id, "API key revoked");
            Ok(json_response(StatusCode::OK, &key_json(&row)))
        }
        (
            _,
            ["admin", "tenants"] | ["admin", "tenants", _] | ["admin", "tenants", _, "keys"] | ["admin", "keys", _],
        ) => Err(Error::MethodNotAllowed),
        _ => {
            Err(Error::NotFound(format!("Unknown admin path `{}`.", path.chars().take(200).collect::<String>()).into()))
        }
    }
}

/// A tenant's limits in a create or patch body. Absent fields keep their value; `null` clears.
#[derive(Debug, Default, Deserialize)]
struct TenantBody {
    id: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    max_concurrent: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    monthly_budget_usd: Option<Option<RawUsd>>,
    disabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct KeyBody {
    name: Option<String>,
    #[serde(flatten)]
    limits: TenantBody,
}

fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl TenantBody {
    fn apply(&self, mut limits: LimitSpec) -> Result<LimitSpec, Error> {
        for (name, field, v) in [
            ("rpm", &mut limits.rpm, self.rpm),
            ("tpm", &mut limits.tpm, self.tpm),
            ("max_concurrent", &mut limits.max_concurrent, self.max_concurrent),
        ] {
            if let Some(v) = v {
                if v == Some(0) {
                    return Err(Error::bad_request(
                        format!("`{name}` must be greater than 0 (null for no limit)."),
                        None,
                    ));
                }
                *field = v;
            }
        }
        if let Some(budget) = &self.monthly_budget_usd {
            limits.monthly_budget_micro_usd = match budget {
                None => None,
                Some(raw) => Some(parse_usd_micro(&raw.as_text()).map_err(|e| {
                    Error::bad_request(format!("`monthly_budget_usd`: {e}."), Some("monthly_budget_usd"))
                })?),
            };
        }
        Ok(limits)
    }
}

async fn read_json<T: serde::de::DeserializeOwned + Default>(req: Request<Incoming>) -> Result<T, Error> {
    let bytes = match Limited::new(req.into_body(), MAX_ADMIN_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return Err(Error::PayloadTooLarge { limit: MAX_ADMIN_BODY as u64 }),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::bad_request(format!("Invalid JSON body: {e}"), None))
}

async fn existing_tenant(state: &AppState, id: &str) -> Result<TenantRow, Error> {
    if state.auth.is_config_tenant(id) {
        return Err(Error::Conflict(format!("Tenant `{id}` is defined in the config file; edit it there.").into()));
    }
    let Some(cache) = state.auth.store() else {
        return Err(Error::StoreUnavailable("no tenant store".into()));
    };
    cache.store().get_tenant(id).await.map_err(store_error)?.ok_or_else(|| not_found("tenant", id))
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

fn tenant_json(t: &TenantRow) -> Value {
    json!({
        "id": t.id,
        "source": "admin",
        "rpm": t.limits.rpm,
        "tpm": t.limits.tpm,
        "max_concurrent": t.limits.max_concurrent,
        "monthly_budget_usd": t.limits.monthly_budget_micro_usd.map(format_usd_micro),
        "disabled": t.disabled,
        "created_at": t.created_at_unix_ms / 1000,
        "updated_at": t.updated_at_unix_ms / 1000,
    })
}

fn key_json(k: &KeyRow) -> Value {
    json!({
        "id": k.id,
        "tenant": k.tenant_id,
        "name": k.name,
        "prefix": k.prefix,
        "rpm": k.limits.rpm,
        "tpm": k.limits.tpm,
        "max_concurrent": k.limits.max_concurrent,
        "monthly_budget_usd": k.limits.monthly_budget_micro_usd.map(format_usd_micro),
        "created_at": k.created_at_unix_ms / 1000,
        "revoked": k.revoked_at_unix_ms.is_some(),
        "revoked_at": k.revoked_at_unix_ms.map(|ms| ms / 1000),
    })
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(body::full(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
