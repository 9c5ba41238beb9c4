//! Every service operation under both principals: the authorization rules of `domain::principal`
//! hold whichever front door calls (issue #10). Runs against the real embedded stores (SQLite in a
//! temporary directory), with no upstream configured.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use tokio_util::sync::CancellationToken;

use super::error::Error;
use super::state::AppState;
use super::{chat, models, tenants, usage};
use crate::domain::config::{Config, MapEnv};
use crate::domain::limits::CallerLimits;
use crate::domain::principal::{Credential, Denied, Principal, TenantCaller};

const ADMIN_KEY: &str = "admin-key-for-service-tests-0123";

/// A built gateway over a temporary data directory, removed on drop (shared by the services' tests).
pub(super) struct Fixture {
    pub(super) state: Arc<AppState>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds the gateway from `listen`, `admin_api_key: {admin_key}`, the ledger in a fresh temp dir
/// named after `tag`, then `rest` (YAML lines after the ledger block).
pub(super) async fn fixture_with(tag: &str, admin_key: &str, rest: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("ai-agg-{tag}-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml =
        format!("listen: 127.0.0.1:0\nadmin_api_key: {admin_key}\nledger:\n  data_dir: {}\n{rest}", dir.display());
    let config = Config::from_yaml_str(&yaml, &MapEnv::default()).unwrap();
    let built = crate::build(Arc::new(config), true, CancellationToken::new()).await.unwrap();
    Fixture { state: built.state, dir }
}

async fn fixture() -> Fixture {
    fixture_with("services", ADMIN_KEY, "providers: {}\n").await
}

fn tenant(id: &str) -> Principal {
    Principal::Tenant(TenantCaller {
        tenant: Arc::from(id),
        key_id: None,
        limits: CallerLimits::default(),
        credential: Credential::ApiKey,
    })
}

fn is_denied(r: &Result<impl std::fmt::Debug, Error>, want: Denied) -> bool {
    matches!(r, Err(Error::Denied(d)) if *d == want)
}

#[tokio::test]
async fn tenants_are_managed_by_the_admin_only() {
    let f = fixture().await;
    let s = &f.state;
    let admin = Principal::Admin;
    let acme = tenant("acme");
    let change = tenants::TenantChange::default();

    assert!(is_denied(&tenants::create_tenant(s, &acme, "evil", &change).await, Denied::AdminOnly));
    let created = tenants::create_tenant(s, &admin, "acme", &change).await.unwrap();
    assert_eq!(created.id, "acme");
    tenants::create_tenant(s, &admin, "globex", &change).await.unwrap();

    assert!(is_denied(&tenants::list_tenants(s, &acme).await, Denied::AdminOnly));
    assert_eq!(tenants::list_tenants(s, &admin).await.unwrap().len(), 2);

    // A tenant reads itself, never another tenant.
    assert_eq!(tenants::get_tenant(s, &acme, "acme").await.unwrap().id, "acme");
    assert!(is_denied(&tenants::get_tenant(s, &acme, "globex").await, Denied::OtherTenant));
    assert_eq!(tenants::get_tenant(s, &admin, "globex").await.unwrap().id, "globex");

    let raise = tenants::TenantChange {
        limits: tenants::LimitsPatch { rpm: Some(Some(1_000_000)), ..Default::default() },
        disabled: None,
    };
    assert!(is_denied(&tenants::update_tenant(s, &acme, "acme", &raise).await, Denied::AdminOnly));
    assert_eq!(tenants::update_tenant(s, &admin, "acme", &raise).await.unwrap().limits.rpm, Some(1_000_000));

    assert!(is_denied(&tenants::disable_tenant(s, &acme, "acme").await, Denied::AdminOnly));
    assert!(is_denied(&tenants::disable_tenant(s, &acme, "globex").await, Denied::AdminOnly));
    assert!(tenants::disable_tenant(s, &admin, "globex").await.unwrap().disabled);
}

#[tokio::test]
async fn keys_are_the_admins_or_their_own_tenants() {
    let f = fixture().await;
    let s = &f.state;
    let admin = Principal::Admin;
    let acme = tenant("acme");
    let globex = tenant("globex");
    for id in ["acme", "globex"] {
        tenants::create_tenant(s, &admin, id, &tenants::TenantChange::default()).await.unwrap();
    }
    let request = tenants::NewKeyRequest { name: Some("ci".into()), ..Default::default() };

    // Issue: the admin for anyone, a tenant for itself only.
    let by_admin = tenants::create_key(s, &admin, "acme", &request).await.unwrap();
    assert!(by_admin.secret.starts_with("sk-"));
    let own = tenants::create_key(s, &acme, "acme", &request).await.unwrap();
    assert_eq!(own.key.tenant_id, "acme");
    assert!(is_denied(&tenants::create_key(s, &globex, "acme", &request).await, Denied::OtherTenant));

    // List: own keys only.
    assert_eq!(tenants::list_keys(s, &acme, "acme").await.unwrap().len(), 2);
    assert_eq!(tenants::list_keys(s, &admin, "acme").await.unwrap().len(), 2);
    assert!(is_denied(&tenants::list_keys(s, &globex, "acme").await, Denied::OtherTenant));

    // Revoke: another tenant's key does not exist for this caller, and stays valid.
    let other = tenants::revoke_key(s, &globex, &own.key.id).await;
    assert!(matches!(other, Err(Error::NotFound(_))), "{other:?}");
    let keys = tenants::list_keys(s, &admin, "acme").await.unwrap();
    assert!(keys.iter().all(|k| k.revoked_at_unix_ms.is_none()));
    assert!(tenants::revoke_key(s, &acme, &own.key.id).await.unwrap().revoked_at_unix_ms.is_some());
    assert!(tenants::revoke_key(s, &admin, &by_admin.key.id).await.unwrap().revoked_at_unix_ms.is_some());
}

#[tokio::test]
async fn usage_is_the_callers_own_unless_admin() {
    let f = fixture().await;
    let s = &f.state;
    let admin = Principal::Admin;
    let acme = tenant("acme");

    assert!(usage::query(s, &acme, usage::UsageFilter::default()).await.is_ok());
    let narrowed = usage::UsageFilter { tenant: Some("acme".into()), ..Default::default() };
    assert!(usage::query(s, &acme, narrowed).await.is_ok());
    let other = usage::UsageFilter { tenant: Some("globex".into()), ..Default::default() };
    let refused = usage::query(s, &acme, other.clone()).await;
    assert!(matches!(refused, Err(Error::BadRequest { .. })), "{refused:?}");
    assert!(usage::query(s, &admin, other.clone()).await.is_ok());

    assert!(is_denied(&usage::query_all(s, &acme, usage::UsageFilter::default()).await, Denied::AdminOnly));
    assert!(usage::query_all(s, &admin, other).await.is_ok());
}

#[tokio::test]
async fn model_requests_need_a_tenant() {
    let f = fixture().await;
    let s = &f.state;
    let req = || {
        http::Request::new(Full::new(Bytes::from_static(
            br#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#,
        )))
    };

    let admin = chat::complete(s, &Principal::Admin, "req_1", chat::Dialect::OpenAi, req()).await;
    assert!(is_denied(&admin.map(|_| ()), Denied::NotATenant));
    // A tenant gets past authorization (and fails later, on routing: no provider is configured).
    let acme = chat::complete(s, &tenant("acme"), "req_2", chat::Dialect::OpenAi, req()).await;
    assert!(matches!(acme, Err(Error::Route(_))), "{:?}", acme.map(|_| ()));

    // The catalog is readable by both.
    assert!(models::list(s, &Principal::Admin).await.is_empty());
    assert!(models::list(s, &tenant("acme")).await.is_empty());
}

/// Issue 16: the dashboard's record list, latency figures and catalog follow the usage rules.
#[tokio::test]
async fn records_latency_and_catalog_are_scoped() {
    let f = fixture().await;
    let s = &f.state;
    let admin = Principal::Admin;
    let acme = tenant("acme");
    let other = usage::UsageFilter { tenant: Some("globex".into()), ..usage::UsageFilter::default() };
    assert!(usage::records(s, &admin, other.clone(), None, 10).await.unwrap().is_empty());
    assert!(matches!(usage::records(s, &acme, other.clone(), None, 10).await, Err(Error::BadRequest { .. })));
    assert!(matches!(usage::latency(s, &acme, other).await, Err(Error::BadRequest { .. })));
    let own = usage::latency(s, &acme, usage::UsageFilter::default()).await.unwrap();
    assert_eq!((own.requests, own.errors, own.p50_ms), (0, 0, None));
    assert!(usage::records(s, &acme, usage::UsageFilter::default(), None, 10).await.unwrap().is_empty());
    // No provider configured: an empty catalog for both.
    assert!(models::catalog_rows(s, &admin).await.is_empty());
    assert!(models::catalog_rows(s, &acme).await.is_empty());
}

/// Issue 16: dashboard sessions re-authenticate their credential; bad ones are limited per address.
#[tokio::test]
async fn dashboard_sessions() {
    use super::sessions::{self, SignInError};
    let f = fixture().await;
    let s = &f.state;
    let ip = Some(std::net::IpAddr::from([10, 0, 0, 1]));
    // A tenant exists, so open mode (any credential is `anonymous`) is off, as in production.
    tenants::create_tenant(s, &Principal::Admin, "acme", &tenants::TenantChange::default()).await.unwrap();
    let (id, resumed) = sessions::sign_in(s, ADMIN_KEY, ip).await.unwrap();
    assert!(matches!(resumed.principal, Principal::Admin));
    assert!(sessions::resume(s, &id).await.is_some());
    sessions::sign_out(s, &id).await;
    assert!(sessions::resume(s, &id).await.is_none());
    for _ in 0..sessions::MAX_FAILURES {
        assert_eq!(sessions::sign_in(s, "nope", ip).await.err(), Some(SignInError::Invalid));
    }
    assert!(matches!(sessions::sign_in(s, ADMIN_KEY, ip).await, Err(SignInError::TooMany { .. })));
    // Another address is not affected.
    assert!(sessions::sign_in(s, ADMIN_KEY, Some(std::net::IpAddr::from([10, 0, 0, 2]))).await.is_ok());
}

/// Issue 16: with `dashboard.session_secret`, sessions live in the tenant store: a restarted gateway
/// (a second one over the same data) resumes them, a sign-out is final for both, the stored row holds
/// neither the session id nor the credential in the clear, and a gateway with another secret or with
/// none does not accept them.
#[tokio::test]
async fn dashboard_sessions_survive_a_restart_only_when_configured() {
    use super::sessions;
    const SECRET: &str = "dashboard-session-secret-for-tests-0123456789";
    let rest = format!("providers: {{}}\ndashboard:\n  session_secret: {SECRET}\n");
    let f = fixture_with("sessions", ADMIN_KEY, &rest).await;
    let s = &f.state;
    assert!(s.sessions.persisted());
    tenants::create_tenant(s, &Principal::Admin, "acme", &tenants::TenantChange::default()).await.unwrap();
    let ip = Some(std::net::IpAddr::from([10, 0, 0, 1]));
    let (id, first) = sessions::sign_in(s, ADMIN_KEY, ip).await.unwrap();
    let (other, _) = sessions::sign_in(s, ADMIN_KEY, ip).await.unwrap();

    // The row: no session id, no admin key, in any column.
    let db = rusqlite::Connection::open(f.dir.join("ledger.sqlite3")).unwrap();
    let rows: Vec<String> = db
        .prepare("SELECT id_hash || ' ' || sealed || ' ' || csrf FROM dashboard_sessions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| !r.contains(&id) && !r.contains(&other) && !r.contains(ADMIN_KEY)), "{rows:?}");

    // "Restart": a second gateway over the same data and config.
    let yaml = |rest: &str| {
        format!("listen: 127.0.0.1:0\nadmin_api_key: {ADMIN_KEY}\nledger:\n  data_dir: {}\n{rest}", f.dir.display())
    };
    let build = |yaml: String| async move {
        let config = Config::from_yaml_str(&yaml, &MapEnv::default()).unwrap();
        crate::build(Arc::new(config), true, CancellationToken::new()).await.unwrap().state
    };
    let again = build(yaml(&rest)).await;
    let resumed = sessions::resume(&again, &id).await.expect("the session survives the restart");
    assert!(matches!(resumed.principal, Principal::Admin));
    assert_eq!(resumed.csrf, first.csrf);
    assert!(sessions::resume(&again, "not-a-session").await.is_none());

    // Signing out on one is final on both.
    sessions::sign_out(&again, &id).await;
    assert!(sessions::resume(s, &id).await.is_none());
    assert!(sessions::resume(&again, &id).await.is_none());

    // Without the secret sessions are in memory: the stored one is not accepted.
    let memory = build(yaml("providers: {}\n")).await;
    assert!(!memory.sessions.persisted());
    assert!(sessions::resume(&memory, &other).await.is_none());
    // Another secret cannot open the sealed credential: refused (and the row dropped).
    let rotated =
        build(yaml("providers: {}\ndashboard:\n  session_secret: another-secret-of-at-least-32-characters\n")).await;
    assert!(sessions::resume(&rotated, &other).await.is_none());
    assert!(sessions::resume(s, &other).await.is_none());

    // A secret too short to be one is a configuration error.
    let short = Config::from_yaml_str(&yaml("dashboard:\n  session_secret: short\n"), &MapEnv::default());
    assert!(short.unwrap_err().to_string().contains("dashboard.session_secret"));
}

#[tokio::test]
async fn me_prices_catalog_and_series_follow_the_usage_scope() {
    let f = fixture().await;
    let s = &f.state;
    let admin = Principal::Admin;
    let acme = tenant("acme");

    let me = super::account::me(s, &acme).await.unwrap();
    assert_eq!(me.tenant.as_deref(), Some("acme"));
    assert_eq!(me.spend_this_month_nano_usd, 0);
    assert_eq!(super::account::me(s, &admin).await.unwrap().tenant, None);

    // Prices and the catalog: public to every authenticated caller, and the same for both.
    assert_eq!(super::pricing::list(s, &admin), super::pricing::list(s, &acme));
    assert!(!super::pricing::list(s, &acme).entries.is_empty());
    assert_eq!(models::catalog(s, &admin).await, models::catalog(s, &acme).await);

    // A series is a usage query: the same scope rule.
    let bucket = usage::Bucket::new(3_600_000, 0).unwrap();
    let other = usage::UsageFilter { tenant: Some("globex".into()), ..Default::default() };
    assert!(matches!(usage::series(s, &acme, other.clone(), bucket).await, Err(Error::BadRequest { .. })));
    assert!(usage::series(s, &admin, other, bucket).await.is_ok());
    assert!(usage::Bucket::new(60_000, 0).is_err());
    assert!(usage::Bucket::new(3_600_000, 19 * 3_600_000).is_err());
}
