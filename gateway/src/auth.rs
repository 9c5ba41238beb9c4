//! Tenant authentication by API key. Keys are kept only as SHA-256 digests; look-ups never touch the
//! database and compare digests in constant time.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{KeySpec, TenantConfig};
use crate::error::AuthError;
use crate::http::chat::Caller;

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
    admin_digest: Option<[u8; 32]>,
    anonymous: Caller,
}

impl Authenticator {
    /// Builds the key table from the configured tenants and the admin key.
    pub fn new(tenants: &[TenantConfig], admin_key: Option<&str>) -> Self {
        let mut by_digest = HashMap::new();
        for tenant in tenants {
            let tenant_id: Arc<str> = Arc::from(tenant.id.as_str());
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
            admin_digest: admin_key.map(|k| sha256(k.as_bytes())),
            anonymous: Caller { tenant: Arc::from(ANONYMOUS), key_id: None },
        }
    }

    /// True when no tenant is configured: every request is metered as `anonymous`.
    pub fn is_open(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The caller behind the request's credentials.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        if self.is_open() {
            return Ok(self.anonymous.clone());
        }
        let key = presented_key(headers).ok_or(AuthError::Missing)?;
        let digest = sha256(key.as_bytes());
        match self.by_digest.get(&digest) {
            Some(entry) if bool::from(entry.digest.ct_eq(&digest)) => {
                Ok(Caller { tenant: entry.tenant.clone(), key_id: Some(entry.key_id.clone()) })
            }
            _ => Err(AuthError::Invalid),
        }
    }

    /// Checks the admin key (`Authorization: Bearer`).
    pub fn authenticate_admin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let expected = self.admin_digest.ok_or(AuthError::NotAdmin)?;
        let key = presented_key(headers).ok_or(AuthError::Missing)?;
        if bool::from(sha256(key.as_bytes()).ct_eq(&expected)) {
            Ok(())
        } else {
            Err(AuthError::NotAdmin)
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

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn auth() -> Authenticator {
        let hashed = sha256(b"sk-hashed-key-2");
        Authenticator::new(
            &[
                TenantConfig { id: "acme".into(), api_keys: vec![KeySpec::Plain(Secret::new("sk-acme-key-1".into()))] },
                TenantConfig { id: "globex".into(), api_keys: vec![KeySpec::Sha256(hashed)] },
            ],
            Some("admin-key-0123456789"),
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_and_x_api_key_both_work_and_hashes_match() {
        let a = auth();
        let c = a.authenticate(&headers(&[("authorization", "Bearer sk-acme-key-1")])).unwrap();
        assert_eq!(&*c.tenant, "acme");
        assert!(c.key_id.unwrap().starts_with("key_"));
        let c = a.authenticate(&headers(&[("x-api-key", "sk-hashed-key-2")])).unwrap();
        assert_eq!(&*c.tenant, "globex");
    }

    #[test]
    fn wrong_or_missing_keys_are_refused() {
        let a = auth();
        assert_eq!(a.authenticate(&headers(&[])).unwrap_err(), AuthError::Missing);
        assert_eq!(a.authenticate(&headers(&[("authorization", "Bearer nope-nope")])).unwrap_err(), AuthError::Invalid);
        assert_eq!(a.authenticate(&headers(&[("authorization", "Basic abc")])).unwrap_err(), AuthError::Missing);
    }

    #[test]
    fn admin_key_is_separate_from_tenant_keys() {
        let a = auth();
        assert!(a.authenticate_admin(&headers(&[("authorization", "Bearer admin-key-0123456789")])).is_ok());
        assert!(a.authenticate_admin(&headers(&[("authorization", "Bearer sk-acme-key-1")])).is_err());
        assert!(a.authenticate(&headers(&[("authorization", "Bearer admin-key-0123456789")])).is_err());
    }

    #[test]
    fn open_mode_meters_anonymous() {
        let a = Authenticator::new(&[], None);
        assert!(a.is_open());
        assert_eq!(&*a.authenticate(&HeaderMap::new()).unwrap().tenant, ANONYMOUS);
    }
}
