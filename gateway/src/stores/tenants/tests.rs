use super::*;

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ai-agg-store-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn new_key(id: &str, tenant: &str, digest: &str) -> NewKey {
    NewKey {
        id: id.into(),
        tenant_id: tenant.into(),
        digest_hex: digest.into(),
        prefix: "sk-abcdefg".into(),
        name: Some("ci".into()),
        limits: LimitSpec { rpm: Some(3), ..LimitSpec::default() },
    }
}

/// The whole life cycle, identical on both stores.
async fn lifecycle(store: &TenantStore) {
    assert_eq!(store.count_tenants().await.unwrap(), 0);
    let limits =
        LimitSpec { rpm: Some(60), tpm: None, max_concurrent: Some(4), monthly_budget_micro_usd: Some(12_500_000) };
    let t = store.create_tenant("acme", limits).await.unwrap();
    assert_eq!(t.limits, limits);
    assert!(matches!(store.create_tenant("acme", limits).await, Err(StoreError::Conflict(id)) if id == "acme"));
    store.create_tenant("globex", LimitSpec::default()).await.unwrap();
    let ids: Vec<String> = store.list_tenants().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["acme", "globex"]);
    assert_eq!(store.count_tenants().await.unwrap(), 2);

    let updated = store.update_tenant("acme", LimitSpec { rpm: Some(10), ..limits }, true).await.unwrap().unwrap();
    assert_eq!(updated.limits.rpm, Some(10));
    assert!(updated.disabled);
    assert!(store.update_tenant("nope", limits, false).await.unwrap().is_none());
    assert_eq!(store.get_tenant("acme").await.unwrap().unwrap(), updated);

    let k = store.create_key(new_key("key_1", "acme", "aa")).await.unwrap();
    assert!(matches!(store.create_key(new_key("key_2", "acme", "aa")).await, Err(StoreError::Conflict(_))));
    assert!(store.create_key(new_key("key_3", "no-such-tenant", "bb")).await.is_err(), "foreign key");
    assert_eq!(store.key_by_digest("aa").await.unwrap().unwrap(), k);
    assert!(store.key_by_digest("zz").await.unwrap().is_none());
    assert_eq!(store.list_keys("acme").await.unwrap(), vec![k.clone()]);
    let revoked = store.revoke_key("key_1").await.unwrap().unwrap();
    let first = revoked.revoked_at_unix_ms.unwrap();
    // Revoking again keeps the first time.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(store.revoke_key("key_1").await.unwrap().unwrap().revoked_at_unix_ms, Some(first));
    assert!(store.revoke_key("key_missing").await.unwrap().is_none());
    assert!(store.key_by_digest("aa").await.unwrap().unwrap().revoked_at_unix_ms.is_some());
}

#[tokio::test]
async fn sqlite_store_lifecycle_and_it_shares_the_ledger_file() {
    let dir = temp_dir();
    // The ledger migrates first (version 1), then the store adds version 2 to the same file.
    let (ledger, _writer) = crate::stores::ledger::start(crate::stores::ledger::LedgerConfig {
        data_dir: dir.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let store = TenantStore::open(None, &dir).await.unwrap();
    lifecycle(&store).await;
    assert_eq!(ledger.sqlite_path(), Some(dir.join(SQLITE_FILE).as_path()));
    // Opening again does not re-run the migration.
    let again = TenantStore::open(None, &dir).await.unwrap();
    assert_eq!(again.count_tenants().await.unwrap(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[tokio::test]
async fn postgres_store_lifecycle() {
    let Ok((client, conn)) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls).await else {
        eprintln!("skipped: no Postgres at {PG_URL}");
        return;
    };
    tokio::spawn(conn);
    let schema = format!("tenants_store_{}_{}", std::process::id(), fastrand::u32(..));
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let url = format!("{PG_URL}?options=-c%20search_path%3D{schema}");
    let store = TenantStore::open(Some(&url), &temp_dir()).await.unwrap();
    store.ping().await.unwrap();
    lifecycle(&store).await;
    let applied: i64 = client
        .query_one(&format!("SELECT COUNT(*) FROM {schema}.schema_migrations WHERE version = 2"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 1);
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}

/// Regression: more concurrent first callers than pool connections must not starve the migration.
#[tokio::test]
async fn postgres_concurrent_first_use_does_not_exhaust_the_pool() {
    let Ok((client, conn)) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls).await else {
        eprintln!("skipped: no Postgres at {PG_URL}");
        return;
    };
    tokio::spawn(conn);
    let schema = format!("tenants_store_pool_{}_{}", std::process::id(), fastrand::u32(..));
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let url = format!("{PG_URL}?options=-c%20search_path%3D{schema}");
    let store = std::sync::Arc::new(TenantStore::open(Some(&url), &temp_dir()).await.unwrap());
    let tasks: Vec<_> = (0..3 * POOL_SIZE)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.count_tenants().await })
        })
        .collect();
    let all = tokio::time::timeout(std::time::Duration::from_secs(8), async {
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 0);
        }
    })
    .await;
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    assert!(all.is_ok(), "concurrent first use timed out");
}

/// Issue #11, item 12: tenant ids are unique regardless of case, on both stores.
async fn ids_are_case_insensitively_unique(store: &TenantStore) {
    store.create_tenant("Acme", LimitSpec::default()).await.unwrap();
    for other in ["acme", "ACME", "aCmE"] {
        assert!(
            matches!(store.create_tenant(other, LimitSpec::default()).await, Err(StoreError::Conflict(id)) if id == other),
            "{other} must conflict with Acme"
        );
    }
    let ids: Vec<String> = store.list_tenants().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["Acme"]);
    // Racing creates of two spellings: exactly one wins.
    let (a, b) = tokio::join!(
        store.create_tenant("globex", LimitSpec::default()),
        store.create_tenant("GLOBEX", LimitSpec::default())
    );
    assert_eq!(usize::from(a.is_ok()) + usize::from(b.is_ok()), 1, "{a:?} {b:?}");
}

#[tokio::test]
async fn sqlite_tenant_ids_are_case_insensitively_unique() {
    let dir = temp_dir();
    let store = TenantStore::open(None, &dir).await.unwrap();
    ids_are_case_insensitively_unique(&store).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn postgres_tenant_ids_are_case_insensitively_unique() {
    let Ok((client, conn)) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls).await else {
        eprintln!("skipped: no Postgres at {PG_URL}");
        return;
    };
    tokio::spawn(conn);
    let schema = format!("tenants_case_{}_{}", std::process::id(), fastrand::u32(..));
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let url = format!("{PG_URL}?options=-c%20search_path%3D{schema}");
    let store = TenantStore::open(Some(&url), &temp_dir()).await.unwrap();
    ids_are_case_insensitively_unique(&store).await;
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
