//! Who is calling, and what that caller may do: the one authorization model of the gateway.
//!
//! Authentication (a key or token → [`Principal`]) happens once per request, in
//! `services::auth`. Authorization happens here, in pure functions that every service calls before
//! it touches a store: each returns a *scope* (a capability) or [`Denied`], and the services' store
//! calls take the scope, so a front door (REST, GraphQL, dashboard, batch worker) cannot reach data
//! without passing the check and cannot re-implement it differently.
//!
//! The rules:
//! - An admin manages tenants and reads everyone's usage; it does not make model requests (no tenant
//!   would be billed).
//! - A tenant makes model requests billed to itself, and reads and changes only its own usage, keys,
//!   jobs, batches and files. It never sees or changes another tenant.
//! - The admin also reads every tenant's jobs, batches and files and may cancel any job or batch
//!   ([`Principal::owner_scope`]), but creates none: jobs, batches and uploads are billed to (and
//!   owned by) a tenant, so creating them needs a tenant key ([`Principal::own_scope`]).

use std::sync::Arc;

use super::limits::CallerLimits;

/// How the caller proved who it is (for logs and audit; rules do not depend on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A key from the config file or the tenant store.
    ApiKey,
    /// A verified JWT.
    Jwt,
    /// Open mode: no tenant exists, loopback listener, metered as `anonymous`.
    Open,
}

/// A tenant caller: the tenant billed, the key used (none for JWTs and open mode) and its limits.
#[derive(Debug, Clone)]
pub struct TenantCaller {
    pub tenant: Arc<str>,
    pub key_id: Option<Arc<str>>,
    /// The tenant's and the key's limits.
    pub limits: CallerLimits,
    pub credential: Credential,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The holder of the admin key.
    Admin,
    /// A tenant's key, a JWT naming a tenant, or open mode's `anonymous`.
    Tenant(TenantCaller),
}

/// Why an operation is refused to this principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Only the admin key may do this.
    #[error("This operation needs the admin key.")]
    AdminOnly,
    /// The admin key is not a tenant: model requests need a tenant key.
    #[error("The admin key cannot make model requests; use a tenant key.")]
    NotATenant,
    /// A tenant asked for another tenant's data.
    #[error("A tenant key can only see and change its own tenant.")]
    OtherTenant,
    /// The admin key tried to create a job: a job is billed to (and owned by) a tenant.
    #[error("Jobs are billed to a tenant's key: create them with a tenant key.")]
    JobNeedsTenant,
}

/// Permission to manage every tenant (only from [`Principal::admin`]).
#[derive(Debug, Clone, Copy)]
pub struct AdminScope(());

/// Permission to act on one tenant's own resources: its usage, keys, batches and files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    tenant: Arc<str>,
}

impl TenantScope {
    /// The tenant this scope covers.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
}

/// Which tenants' usage a caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageScope {
    /// Every tenant (admin), optionally filtered to one.
    All { tenant: Option<String> },
    /// Exactly this tenant.
    Tenant(TenantScope),
}

/// Which tenants' jobs, batches and files a caller may read (and whose jobs and batches it may
/// cancel): the admin every tenant's, optionally filtered to one; a tenant its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerScope {
    /// Every tenant (admin), optionally filtered to one.
    All { tenant: Option<String> },
    /// Exactly this tenant.
    Tenant(TenantScope),
}

impl OwnerScope {
    /// The one tenant the store query is narrowed to; `None` for every tenant.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            OwnerScope::All { tenant } => tenant.as_deref(),
            OwnerScope::Tenant(t) => Some(t.tenant()),
        }
    }
}

impl Principal {
    /// The tenant caller, when this is one.
    pub fn as_tenant(&self) -> Option<&TenantCaller> {
        match self {
            Principal::Tenant(t) => Some(t),
            Principal::Admin => None,
        }
    }

    /// True for the admin key.
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin)
    }

    /// Managing tenants (create, list, change, disable): admin only.
    ///
    /// # Errors
    /// [`Denied::AdminOnly`] for a tenant.
    pub fn admin(&self) -> Result<AdminScope, Denied> {
        match self {
            Principal::Admin => Ok(AdminScope(())),
            Principal::Tenant(_) => Err(Denied::AdminOnly),
        }
    }

    /// Making model requests (chat, embeddings, batches): a tenant, billed to itself.
    ///
    /// # Errors
    /// [`Denied::NotATenant`] for the admin key.
    pub fn caller(&self) -> Result<&TenantCaller, Denied> {
        match self {
            Principal::Tenant(t) => Ok(t),
            Principal::Admin => Err(Denied::NotATenant),
        }
    }

    /// Acting on `tenant`'s own resources (keys, batches, files): the admin for any tenant, a tenant
    /// for itself only.
    ///
    /// # Errors
    /// [`Denied::OtherTenant`] when a tenant names another one.
    pub fn tenant_scope(&self, tenant: &str) -> Result<TenantScope, Denied> {
        match self {
            Principal::Admin => Ok(TenantScope { tenant: Arc::from(tenant) }),
            Principal::Tenant(t) if &*t.tenant == tenant => Ok(TenantScope { tenant: t.tenant.clone() }),
            Principal::Tenant(_) => Err(Denied::OtherTenant),
        }
    }

    /// Creating a job: a tenant, for itself (the job is billed to its key).
    ///
    /// # Errors
    /// [`Denied::JobNeedsTenant`] for the admin key.
    pub fn job_creator(&self) -> Result<&TenantCaller, Denied> {
        self.caller().map_err(|_| Denied::JobNeedsTenant)
    }

    /// The caller's own tenant scope (for resources a tenant creates without naming a tenant).
    ///
    /// # Errors
    /// [`Denied::NotATenant`] for the admin key.
    pub fn own_scope(&self) -> Result<TenantScope, Denied> {
        let t = self.caller()?;
        Ok(TenantScope { tenant: t.tenant.clone() })
    }

    /// Reading (and cancelling) jobs, batches and files, optionally filtered to `tenant`: the admin
    /// any tenant's; a tenant only its own, and naming another tenant is refused like the other
    /// tenant-named operations ([`Principal::tenant_scope`]: `keys(tenantId:)`), not silently narrowed.
    ///
    /// # Errors
    /// [`Denied::OtherTenant`] when a tenant names another one.
    pub fn owner_scope(&self, tenant: Option<&str>) -> Result<OwnerScope, Denied> {
        match self {
            Principal::Admin => Ok(OwnerScope::All { tenant: tenant.map(str::to_owned) }),
            Principal::Tenant(t) => match tenant {
                Some(other) if other != &*t.tenant => Err(Denied::OtherTenant),
                _ => Ok(OwnerScope::Tenant(TenantScope { tenant: t.tenant.clone() })),
            },
        }
    }

    /// Reading usage, optionally filtered to `tenant`: the admin reads anyone's; a tenant reads only
    /// its own, and naming another tenant is refused rather than silently narrowed.
    ///
    /// # Errors
    /// [`Denied::OtherTenant`] when a tenant filters on another tenant.
    pub fn usage_scope(&self, tenant: Option<&str>) -> Result<UsageScope, Denied> {
        match self {
            Principal::Admin => Ok(UsageScope::All { tenant: tenant.map(str::to_owned) }),
            Principal::Tenant(t) => match tenant {
                Some(other) if other != &*t.tenant => Err(Denied::OtherTenant),
                _ => Ok(UsageScope::Tenant(TenantScope { tenant: t.tenant.clone() })),
            },
        }
    }
}

/// What a `/metrics` scrape may show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsScope {
    /// Health of the gateway only: in-flight requests, open streams, latency by provider, upstream
    /// errors, limiter and ledger state. No model names, tenants, tokens or cost.
    Operational,
    /// Everything, including the business series (requests, tokens and cost by model and tenant).
    Full,
}

/// Where a scrape arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The public API port: anyone can reach it.
    Public,
    /// The operations listener (`--admin-listen`), meant for a private network.
    Ops,
}

/// What a scrape by `principal` (none: no credentials) on `listener` may show: everything on the
/// operations listener or with the admin key; only operational metrics otherwise, since model names
/// and spend are every tenant's business data (a tenant key does not see other tenants' either).
pub fn metrics_scope(principal: Option<&Principal>, listener: Listener) -> MetricsScope {
    match (listener, principal) {
        (Listener::Ops, _) | (Listener::Public, Some(Principal::Admin)) => MetricsScope::Full,
        (Listener::Public, None | Some(Principal::Tenant(_))) => MetricsScope::Operational,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> Principal {
        Principal::Tenant(TenantCaller {
            tenant: Arc::from(id),
            key_id: Some(Arc::from("key_1")),
            limits: CallerLimits::default(),
            credential: Credential::ApiKey,
        })
    }

    #[test]
    fn only_the_admin_manages_tenants() {
        assert!(Principal::Admin.admin().is_ok());
        assert_eq!(tenant("acme").admin().err(), Some(Denied::AdminOnly));
    }

    #[test]
    fn only_tenants_make_model_requests() {
        assert_eq!(tenant("acme").caller().map(|t| t.tenant.to_string()), Ok("acme".to_owned()));
        assert_eq!(Principal::Admin.caller().err(), Some(Denied::NotATenant));
        assert_eq!(Principal::Admin.own_scope().err(), Some(Denied::NotATenant));
        assert_eq!(tenant("acme").own_scope().map(|s| s.tenant().to_owned()), Ok("acme".to_owned()));
        assert_eq!(Principal::Admin.job_creator().err(), Some(Denied::JobNeedsTenant));
        assert!(tenant("acme").job_creator().is_ok());
    }

    #[test]
    fn tenant_resources_are_the_tenants_own() {
        assert_eq!(tenant("acme").tenant_scope("acme").map(|s| s.tenant().to_owned()), Ok("acme".to_owned()));
        assert_eq!(tenant("acme").tenant_scope("globex").err(), Some(Denied::OtherTenant));
        // Tenant ids are exact: no prefix or case games.
        assert_eq!(tenant("acme").tenant_scope("acme2").err(), Some(Denied::OtherTenant));
        assert_eq!(tenant("acme").tenant_scope("ACME").err(), Some(Denied::OtherTenant));
        assert!(Principal::Admin.tenant_scope("globex").is_ok());
    }

    /// Issue #11, item 11: business metrics only for the admin or on the operations listener.
    #[test]
    fn metrics_are_scoped() {
        assert_eq!(metrics_scope(None, Listener::Public), MetricsScope::Operational);
        assert_eq!(metrics_scope(Some(&tenant("a")), Listener::Public), MetricsScope::Operational);
        assert_eq!(metrics_scope(Some(&Principal::Admin), Listener::Public), MetricsScope::Full);
        assert_eq!(metrics_scope(None, Listener::Ops), MetricsScope::Full);
    }

    /// Issue #15: the admin reads every tenant's jobs, batches and files; a tenant only its own.
    #[test]
    fn owned_resources_are_scoped() {
        assert_eq!(Principal::Admin.owner_scope(None), Ok(OwnerScope::All { tenant: None }));
        assert_eq!(Principal::Admin.owner_scope(None).unwrap().tenant(), None);
        assert_eq!(Principal::Admin.owner_scope(Some("b")).unwrap().tenant(), Some("b"));
        assert_eq!(tenant("a").owner_scope(None).unwrap().tenant(), Some("a"));
        assert_eq!(tenant("a").owner_scope(Some("a")).unwrap().tenant(), Some("a"));
        assert_eq!(tenant("a").owner_scope(Some("b")), Err(Denied::OtherTenant));
        assert_eq!(tenant("a").owner_scope(Some("A")), Err(Denied::OtherTenant));
    }

    #[test]
    fn usage_is_scoped() {
        assert_eq!(Principal::Admin.usage_scope(None), Ok(UsageScope::All { tenant: None }));
        assert_eq!(Principal::Admin.usage_scope(Some("b")), Ok(UsageScope::All { tenant: Some("b".into()) }));
        let own = tenant("a").usage_scope(None).unwrap();
        assert_eq!(own, UsageScope::Tenant(TenantScope { tenant: Arc::from("a") }));
        assert_eq!(tenant("a").usage_scope(Some("a")), Ok(own));
        assert_eq!(tenant("a").usage_scope(Some("b")), Err(Denied::OtherTenant));
    }
}
