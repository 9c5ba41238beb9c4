//! The admin REST API for tenants and keys: plain JSON in and out, over `services::tenants`.
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
//! Who may do what is the service's decision (`domain::principal`): tenants are the admin's; a tenant
//! key may read its own tenant and manage its own keys here too.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{self, Body};
use crate::domain::config::RawUsd;
use crate::domain::money::format_usd_micro;
use crate::domain::principal::Principal;
use crate::services::chat;
use crate::services::tenants::{self, KeyRow, LimitsPatch, NewKeyRequest, Tenant, TenantChange, TenantSource};
use crate::services::{AppState, Error};

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Handles `/admin/tenants…` and `/admin/keys/…`.
///
/// # Errors
/// 400 for a bad body, 401 when the principal may not, 404 for an unknown tenant or key, 409 for a
/// duplicate or a config-file tenant, 503 when the store is down.
pub async fn handle(state: &AppState, principal: &Principal, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, ["admin", "tenants"]) => {
            let body: TenantBody = read_json(state, req).await?;
            let id = body.id.as_deref().unwrap_or_default();
            let tenant = tenants::create_tenant(state, principal, id, &body.change()).await?;
            Ok(json_response(StatusCode::CREATED, &tenant_json(&tenant)))
        }
        (&Method::GET, ["admin", "tenants"]) => {
            let data: Vec<Value> = tenants::list_tenants(state, principal).await?.iter().map(tenant_json).collect();
            Ok(json_response(StatusCode::OK, &json!({"object": "list", "data": data})))
        }
        (&Method::GET, ["admin", "tenants", id]) => {
            let tenant = tenants::get_tenant(state, principal, id).await?;
            Ok(json_response(StatusCode::OK, &tenant_json(&tenant)))
        }
        (&Method::PATCH, ["admin", "tenants", id]) => {
            let id = (*id).to_owned();
            let body: TenantBody = read_json(state, req).await?;
            if body.id.as_deref().is_some_and(|b| b != id) {
                return Err(Error::bad_request("A tenant's id cannot change.", Some("id")));
            }
            let tenant = tenants::update_tenant(state, principal, &id, &body.change()).await?;
            Ok(json_response(StatusCode::OK, &tenant_json(&tenant)))
        }
        (&Method::DELETE, ["admin", "tenants", id]) => {
            let tenant = tenants::disable_tenant(state, principal, id).await?;
            Ok(json_response(StatusCode::OK, &tenant_json(&tenant)))
        }
        (&Method::POST, ["admin", "tenants", id, "keys"]) => {
            let id = (*id).to_owned();
            let body: KeyBody = read_json(state, req).await?;
            let request = body.request();
            let issued = tenants::create_key(state, principal, &id, &request).await?;
            let mut v = key_json(&issued.key);
            v["key"] = Value::String(issued.secret);
            Ok(json_response(StatusCode::CREATED, &v))
        }
        (&Method::GET, ["admin", "tenants", id, "keys"]) => {
            let data: Vec<Value> = tenants::list_keys(state, principal, id).await?.iter().map(key_json).collect();
            Ok(json_response(StatusCode::OK, &json!({"object": "list", "data": data})))
        }
        (&Method::DELETE, ["admin", "keys", key_id]) => {
            let row = tenants::revoke_key(state, principal, key_id).await?;
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

/// A tenant create or patch body. Absent fields keep their value; `null` clears. Unknown fields
/// (`rmp`, `monthly_budget`) are refused, as in the config file: a typo must not silently set nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// A new key's body: its name and limits. The limit fields are spelled out rather than flattened from
/// [`TenantBody`]: serde's `deny_unknown_fields` does not work through `flatten`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    max_concurrent: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    monthly_budget_usd: Option<Option<RawUsd>>,
}

fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn budget_patch(budget: &Option<Option<RawUsd>>) -> Option<Option<String>> {
    budget.as_ref().map(|b| b.as_ref().map(RawUsd::as_text))
}

impl TenantBody {
    fn change(&self) -> TenantChange {
        TenantChange {
            limits: LimitsPatch {
                rpm: self.rpm,
                tpm: self.tpm,
                max_concurrent: self.max_concurrent,
                monthly_budget_usd: budget_patch(&self.monthly_budget_usd),
            },
            disabled: self.disabled,
        }
    }
}

impl KeyBody {
    fn request(self) -> NewKeyRequest {
        let limits = LimitsPatch {
            rpm: self.rpm,
            tpm: self.tpm,
            max_concurrent: self.max_concurrent,
            monthly_budget_usd: budget_patch(&self.monthly_budget_usd),
        };
        NewKeyRequest { name: self.name, limits }
    }
}

async fn read_json<T: serde::de::DeserializeOwned + Default>(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<T, Error> {
    let (parts, body) = req.into_parts();
    let bytes = chat::read_body(
        body,
        parts.headers.get(http::header::CONTENT_LENGTH),
        MAX_ADMIN_BODY as u64,
        state.config.server.body_read_timeout,
    )
    .await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // The path of the offending field becomes the error's `param` (`rpm`, `rmp`, ...).
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = format!("Invalid JSON body: {}", e.inner());
        let param = (path != ".").then_some(path);
        Error::BadRequest { message: message.into(), param: param.map(Into::into), code: Some("invalid_value") }
    })
}

fn tenant_json(t: &Tenant) -> Value {
    let mut v = json!({
        "id": t.id,
        "source": match t.source { TenantSource::Config => "config", TenantSource::Stored => "admin" },
        "rpm": t.limits.rpm,
        "tpm": t.limits.tpm,
        "max_concurrent": t.limits.max_concurrent,
        "monthly_budget_usd": t.limits.monthly_budget_micro_usd.map(format_usd_micro),
        "disabled": t.disabled,
    });
    if let (Some(created), Some(updated)) = (t.created_at_unix_ms, t.updated_at_unix_ms) {
        v["created_at"] = json!(created / 1000);
        v["updated_at"] = json!(updated / 1000);
    }
    v
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
