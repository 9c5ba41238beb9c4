//! Authentication: who is calling. The admin key, API keys (from the config file or the tenant store)
//! and JWTs are resolved to a [`Principal`] once per request; what that principal may do is decided
//! by `domain::principal`, in the services.
//!
//! - Config-file keys are SHA-256 digests in a map built at start; digests compare in constant time.
//! - Keys made through the admin API are looked up by digest in the tenant store through a cache
//!   (`auth/keys.rs`): a revoked key or a disabled tenant stops working on every replica within
//!   `limits.key_cache_ttl_secs` (default 5 s).
//! - A bearer token that looks like a JWT (three base64url segments) is verified when `jwt:` is
//!   configured (`auth/jwt.rs`); the tenant comes from a claim.
//!
//! Open mode (no tenant anywhere, no JWT, loopback listener): every request is metered as `anonymous`.
//! Once any tenant exists, in the config or in the store, requests without a valid credential are
//! refused.

mod jwt;
mod keys;

use std::collections::HashMap;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use jwt::{JwtSettings, JwtVerifier, PublicKeySpec};
pub use keys::KeyCache;

use crate::domain::config::{KeySpec, TenantConfig};
use crate::domain::limits::{CallerLimits, LimitSpec};
use crate::domain::principal::{Credential, Principal, TenantCaller};
use crate::services::error::AuthError;

/// The tenant used in open mode (no tenants configured).
pub const ANONYMOUS: &str = "anonymous";

/// `X-API-Key`, the alternative to `Authorization: Bearer`.
pub const X_API_KEY: &str = "x-api-key";

#[derive(Debug)]
struct KeyEntry {
    digest: [u8; 32],
    tenant: Arc<str>,
    key_id: Arc<str>,
}

/// Resolves credentials to tenants.
#[derive(Debug)]
pub struct Authenticator {
    by_digest: HashMap<[u8; 32], KeyEntry>,
    /// Config-file tenants and their own limits (defaults not applied).
    config_tenants: HashMap<Arc<str>, LimitSpec>,
    /// Limits of tenants that set none of their own.
    defaults: LimitSpec,
    admin_digest: Option<[u8; 32]>,
    anonymous: TenantCaller,
    /// Open mode is possible at all (loopback listener).
    open_allowed: bool,
    store: Option<KeyCache>,
    jwt: Option<JwtVerifier>,
}

impl Authenticator {
    /// Builds the key table from the configured tenants and the admin key, without a store or JWT.
    pub fn new(tenants: &[TenantConfig], admin_key: Option<&str>) -> Self {
        let mut by_digest = HashMap::new();
        let mut config_tenants = HashMap::new();
        for tenant in tenants {
            let tenant_id: Arc<str> = Arc::from(tenant.id.as_str());
            config_tenants.insert(tenant_id.clone(), tenant.limits);
            for key in &tenant.api_keys {
                let digest = match key {
                    KeySpec::Plain(secret) => sha256(secret.expose().as_bytes()),
                    KeySpec::Sha256(d) => *d,
                };
                let key_id: Arc<str> = Arc::from(format!("key_{}", &hex::encode(digest)[..12]));
                by_digest.insert(digest, KeyEntry { digest, tenant: tenant_id.clone(), key_id });
            }
        }
        Self {
            by_digest,
            config_tenants,
            defaults: LimitSpec::default(),
            admin_digest: admin_key.map(|k| sha256(k.as_bytes())),
            anonymous: TenantCaller {
                tenant: Arc::from(ANONYMOUS),
                key_id: None,
                limits: CallerLimits::default(),
                credential: Credential::Open,
            },
            open_allowed: true,
            store: None,
            jwt: None,
        }
    }

    /// Default limits for tenants that set none (also the anonymous tenant's in open mode).
    #[must_use]
    pub fn with_defaults(mut self, defaults: LimitSpec) -> Self {
        self.defaults = defaults;
        self.anonymous.limits = CallerLimits { tenant: defaults, key: LimitSpec::default() };
        self
    }

    /// Looks keys and tenants up in the tenant store too.
    #[must_use]
    pub fn with_store(mut self, store: KeyCache) -> Self {
        self.store = Some(store);
        self
    }

    /// Accepts JWTs.
    #[must_use]
    pub fn with_jwt(mut self, jwt: JwtVerifier) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// Whether open mode may apply at all (false on a non-loopback listener).
    #[must_use]
    pub fn with_open_allowed(mut self, allowed: bool) -> Self {
        self.open_allowed = allowed;
        self
    }

    /// The key cache over the tenant store, when there is one.
    pub fn store(&self) -> Option<&KeyCache> {
        self.store.as_ref()
    }

    /// True when no tenant is configured and no JWT is accepted (the store may still hold tenants: see
    /// [`Authenticator::is_open`]).
    pub fn is_statically_open(&self) -> bool {
        self.by_digest.is_empty() && self.config_tenants.is_empty() && self.jwt.is_none()
    }

    /// True when requests are metered as `anonymous`: no tenant in the config or the store, no JWT,
    /// and a loopback listener.
    pub async fn is_open(&self) -> bool {
        if !self.open_allowed || !self.is_statically_open() {
            return false;
        }
        match &self.store {
            Some(store) => !store.has_tenants().await,
            None => true,
        }
    }

    /// A configured tenant's id, when `id` is one.
    pub fn is_config_tenant(&self, id: &str) -> bool {
        self.config_tenants.contains_key(id)
    }

    /// The principal behind the request's credentials: the admin key is [`Principal::Admin`]; in open
    /// mode every other request is the `anonymous` tenant; otherwise a tenant key or JWT.
    ///
    /// # Errors
    /// [`AuthError::Missing`] / [`AuthError::Invalid`] (401), [`AuthError::Unavailable`] (503) when
    /// the tenant store cannot be read for a key it would hold.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let presented = presented_key(headers);
        if let (Some(expected), Some(key)) = (self.admin_digest, presented) {
            if bool::from(sha256(key.as_bytes()).ct_eq(&expected)) {
                return Ok(Principal::Admin);
            }
        }
        if self.is_open().await {
            return Ok(Principal::Tenant(self.anonymous.clone()));
        }
        self.tenant(presented.ok_or(AuthError::Missing)?).await.map(Principal::Tenant)
    }

    /// As [`Authenticator::authenticate`], for tests that expect a tenant: the admin key is refused.
    #[cfg(test)]
    pub(crate) async fn authenticate_tenant(&self, headers: &HeaderMap) -> Result<TenantCaller, AuthError> {
        match self.authenticate(headers).await? {
            Principal::Tenant(t) => Ok(t),
            Principal::Admin => Err(AuthError::Invalid),
        }
    }

    async fn tenant(&self, key: &str) -> Result<TenantCaller, AuthError> {
        if let Some(jwt) = self.jwt.as_ref().filter(|_| jwt::looks_like_jwt(key)) {
            let tenant = jwt.verify(key).await?;
            let limits = self.tenant_limits(&tenant, jwt.auto_create()).await?;
            return Ok(TenantCaller {
                tenant,
                key_id: None,
                limits: CallerLimits { tenant: limits, key: LimitSpec::default() },
                credential: Credential::Jwt,
            });
        }
        let digest = sha256(key.as_bytes());
        if let Some(entry) = self.by_digest.get(&digest) {
            if bool::from(entry.digest.ct_eq(&digest)) {
                let own = self.config_tenants.get(&entry.tenant).copied().unwrap_or_default();
                return Ok(TenantCaller {
                    tenant: entry.tenant.clone(),
                    key_id: Some(entry.key_id.clone()),
                    limits: CallerLimits { tenant: own.or(self.defaults), key: LimitSpec::default() },
                    credential: Credential::ApiKey,
                });
            }
        }
        let Some(store) = &self.store else { return Err(AuthError::Invalid) };
        let key_row = store.key(&digest).await?.ok_or(AuthError::Invalid)?;
        if key_row.revoked_at_unix_ms.is_some() {
            return Err(AuthError::Invalid);
        }
        let tenant = store.tenant(&key_row.tenant_id).await?.ok_or(AuthError::Invalid)?;
        if tenant.disabled {
            return Err(AuthError::TenantDisabled);
        }
        Ok(TenantCaller {
            tenant: Arc::from(tenant.id.as_str()),
            key_id: Some(Arc::from(key_row.id.as_str())),
            limits: CallerLimits { tenant: tenant.limits.or(self.defaults), key: key_row.limits },
            credential: Credential::ApiKey,
        })
    }

    /// The limits of a tenant named by a token: a config tenant, a stored one, or (when allowed) one
    /// created now with the default limits.
    async fn tenant_limits(&self, tenant: &str, auto_create: bool) -> Result<LimitSpec, AuthError> {
        if let Some(own) = self.config_tenants.get(tenant) {
            return Ok(own.or(self.defaults));
        }
        let Some(store) = &self.store else {
            return if auto_create { Ok(self.defaults) } else { Err(AuthError::UnknownTenant) };
        };
        match store.tenant(tenant).await? {
            Some(row) if row.disabled => Err(AuthError::TenantDisabled),
            Some(row) => Ok(row.limits.or(self.defaults)),
            None if auto_create => {
                store.create_tenant(tenant).await?;
                tracing::info!(tenant = %crate::domain::text::Escaped(tenant), "Tenant created from a valid JWT (auto_create_tenants)");
                Ok(self.defaults)
            }
            None => Err(AuthError::UnknownTenant),
        }
    }
}

/// The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(rest) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            let rest = rest.trim();
            if !rest.is_empty() {
                return Some(rest);
            }
        }
    }
    headers.get(X_API_KEY).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty())
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests;
