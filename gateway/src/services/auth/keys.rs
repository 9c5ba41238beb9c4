//! Cached look-ups of stored keys and tenants.
//!
//! Both caches (moka) hold positive and negative answers for `ttl` (default 5 s), so a key revoked or
//! a tenant disabled on another replica stops working here within `ttl` plus one store round trip.
//! Changes made through this replica's admin API invalidate its entries at once. Concurrent misses for
//! one key share one store query.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::domain::limits::LimitSpec;
use crate::services::error::AuthError;
use crate::stores::tenants::{KeyRow, StoreError, TenantRow, TenantStore};

/// Most cached keys and tenants (each).
const CACHE_CAPACITY: u64 = 100_000;

/// The tenant store behind caches.
#[derive(Clone)]
pub struct KeyCache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<TenantStore>,
    keys: Cache<[u8; 32], Option<Arc<KeyRow>>>,
    tenants: Cache<String, Option<Arc<TenantRow>>>,
    ttl: Duration,
    /// Sticky once true: tenants are disabled, never deleted.
    has_tenants: AtomicBool,
    has_tenants_checked_ms: AtomicI64,
    /// The last count's answer: `UNCHECKED`, `NONE` or `UNKNOWN` (failed: treated as "tenants exist",
    /// fail closed, until the next check).
    has_tenants_state: AtomicU8,
}

const UNCHECKED: u8 = 0;
const NONE: u8 = 1;
const UNKNOWN: u8 = 2;

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").field("ttl", &self.inner.ttl).finish()
    }
}

fn unavailable(e: &Arc<StoreError>) -> AuthError {
    tracing::warn!(error = %e, "Tenant store unavailable for a key look-up");
    AuthError::Unavailable
}

impl KeyCache {
    /// Caches `store` answers for `ttl`.
    pub fn new(store: Arc<TenantStore>, ttl: Duration) -> Self {
        let live = ttl.max(Duration::from_millis(1));
        Self {
            inner: Arc::new(Inner {
                store,
                keys: Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(live).build(),
                tenants: Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(live).build(),
                ttl,
                has_tenants: AtomicBool::new(false),
                has_tenants_checked_ms: AtomicI64::new(i64::MIN),
                has_tenants_state: AtomicU8::new(UNCHECKED),
            }),
        }
    }

    /// The store itself (admin API).
    pub fn store(&self) -> &Arc<TenantStore> {
        &self.inner.store
    }

    /// How long a cached answer may be stale.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The stored key with this digest, revoked or not.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the store cannot be read.
    pub async fn key(&self, digest: &[u8; 32]) -> Result<Option<Arc<KeyRow>>, AuthError> {
        let store = Arc::clone(&self.inner.store);
        let hex_digest = hex::encode(digest);
        self.inner
            .keys
            .try_get_with(*digest, async move { store.key_by_digest(&hex_digest).await.map(|k| k.map(Arc::new)) })
            .await
            .map_err(|e| unavailable(&e))
    }

    /// The stored tenant with this id.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the store cannot be read.
    pub async fn tenant(&self, id: &str) -> Result<Option<Arc<TenantRow>>, AuthError> {
        let store = Arc::clone(&self.inner.store);
        let owned = id.to_owned();
        self.inner
            .tenants
            .try_get_with(id.to_owned(), async move { store.get_tenant(&owned).await.map(|t| t.map(Arc::new)) })
            .await
            .map_err(|e| unavailable(&e))
    }

    /// Creates a tenant with no limits of its own (JWT auto-creation); an existing one is fine.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the store cannot be written.
    pub async fn create_tenant(&self, id: &str) -> Result<(), AuthError> {
        match self.inner.store.create_tenant(id, LimitSpec::default()).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {
                self.changed_tenant(id).await;
                Ok(())
            }
            Err(e) => Err(unavailable(&Arc::new(e))),
        }
    }

    /// Whether the store holds any tenant; re-read at most once per `ttl`, sticky once true.
    pub async fn has_tenants(&self) -> bool {
        if self.inner.has_tenants.load(Ordering::Acquire) {
            return true;
        }
        let now = crate::domain::time::now_unix_ms();
        let ttl_ms = i64::try_from(self.inner.ttl.as_millis()).unwrap_or(i64::MAX);
        let last = self.inner.has_tenants_checked_ms.load(Ordering::Acquire);
        let state = self.inner.has_tenants_state.load(Ordering::Acquire);
        // Never answer "open" from a state nobody has checked yet: concurrent first requests all ask.
        if state != UNCHECKED && now.saturating_sub(last) < ttl_ms {
            return state == UNKNOWN;
        }
        let answer = self.inner.store.count_tenants().await;
        self.inner.has_tenants_checked_ms.store(crate::domain::time::now_unix_ms(), Ordering::Release);
        match answer {
            Ok(n) if n > 0 => {
                self.inner.has_tenants.store(true, Ordering::Release);
                true
            }
            Ok(_) => {
                self.inner.has_tenants_state.store(NONE, Ordering::Release);
                false
            }
            // The store is unreadable. Keep a known "no tenants" answer (open mode on loopback keeps
            // serving through a database outage); with no answer yet, fail closed.
            Err(error) => {
                if state == NONE {
                    tracing::debug!(%error, "Tenant store unavailable; keeping the last known answer (no tenants)");
                    return false;
                }
                tracing::warn!(%error, "Tenant store unavailable; refusing keyless requests until it answers");
                self.inner.has_tenants_state.store(UNKNOWN, Ordering::Release);
                true
            }
        }
    }

    /// Forgets what this replica cached about `tenant` (after an admin change here).
    pub async fn changed_tenant(&self, tenant: &str) {
        self.inner.has_tenants.store(true, Ordering::Release);
        self.inner.tenants.invalidate(tenant).await;
    }

    /// Forgets a key (after an admin change here).
    pub async fn changed_key(&self, digest: Option<&[u8; 32]>) {
        match digest {
            Some(d) => self.inner.keys.invalidate(d).await,
            // The digest is not known (revocation by id): drop every cached key.
            None => self.inner.keys.invalidate_all(),
        }
    }
}
