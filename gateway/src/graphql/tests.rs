//! The schema against the real services (embedded stores in a temporary directory): the checked-in
//! SDL, every permission rule through the resolvers with both kinds of caller and the codes they
//! answer with, pagination, and the depth and complexity limits.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::schema::{build_schema, GatewaySchema, MonthSpend};
use crate::domain::config::{Config, GraphqlSettings, MapEnv};
use crate::domain::limits::CallerLimits;
use crate::domain::principal::{Credential, Principal, TenantCaller};
use crate::services::AppState;

/// Set to regenerate `gateway/schema.graphql` from the code.
const UPDATE_ENV: &str = "UPDATE_GRAPHQL_SCHEMA";

struct Fixture {
    state: Arc<AppState>,
    schema: GatewaySchema,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture() -> Fixture {
    let dir = std::env::temp_dir().join(format!("ai-agg-graphql-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin_api_key: admin-key-for-graphql-tests-01\nledger:\n  data_dir: {}\nproviders: {{}}\n",
        dir.display()
    );
    let config = Config::from_yaml_str(&yaml, &MapEnv::default()).unwrap();
    let built = crate::build(Arc::new(config), true, CancellationToken::new()).await.unwrap();
    Fixture { state: built.state, schema: build_schema(&GraphqlSettings::default()), dir }
}

fn tenant(id: &str) -> Principal {
    Principal::Tenant(TenantCaller {
        tenant: Arc::from(id),
        key_id: Some(Arc::from("key_test")),
        limits: CallerLimits::default(),
        credential: Credential::ApiKey,
    })
}

impl Fixture {
    async fn run(&self, principal: &Principal, query: &str, vars: Value) -> Value {
        let request = async_graphql::Request::new(query)
            .variables(async_graphql::Variables::from_json(vars))
            .data(principal.clone())
            .data(self.state.clone())
            .data(MonthSpend::default());
        serde_json::to_value(self.schema.execute(request).await).unwrap()
    }
}

/// The `extensions.code` of the first error, or `None` when the response has none.
fn code(v: &Value) -> Option<&str> {
    v["errors"][0]["extensions"]["code"].as_str()
}

#[test]
fn checked_in_sdl_matches_the_code() {
    let sdl = build_schema(&GraphqlSettings::default()).sdl();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    if std::env::var_os(UPDATE_ENV).is_some() {
        std::fs::write(&path, &sdl).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == sdl,
        "gateway/schema.graphql differs from the schema in the code: review the API change, then regenerate with \
         `{UPDATE_ENV}=1 cargo test -p ai-aggregator --lib graphql::tests::checked_in_sdl`"
    );
}

#[tokio::test]
async fn tenant_management_is_the_admins() {
    let f = fixture().await;
    let admin = Principal::Admin;
    let acme = tenant("acme");
    let create = "mutation($id: ID!) { createTenant(input: {id: $id, limits: {rpm: 60}}) { id limits { rpm } } }";

    let refused = f.run(&acme, create, json!({"id": "evil"})).await;
    assert_eq!(code(&refused), Some("FORBIDDEN"), "{refused}");
    let made = f.run(&admin, create, json!({"id": "acme"})).await;
    assert_eq!(made["data"]["createTenant"]["limits"]["rpm"], 60, "{made}");
    f.run(&admin, create, json!({"id": "globex"})).await;
    let again = f.run(&admin, create, json!({"id": "acme"})).await;
    assert_eq!(code(&again), Some("BAD_USER_INPUT"), "{again}");
    assert_eq!(again["errors"][0]["extensions"]["reason"], "conflict");

    let list = "{ tenants { totalCount edges { node { id } } } }";
    assert_eq!(code(&f.run(&acme, list, json!({})).await), Some("FORBIDDEN"));
    assert_eq!(f.run(&admin, list, json!({})).await["data"]["tenants"]["totalCount"], 2);

    // A tenant reads itself; another tenant does not exist for it.
    let one = "query($id: ID!) { tenant(id: $id) { id disabled } }";
    assert_eq!(f.run(&acme, one, json!({"id": "acme"})).await["data"]["tenant"]["id"], "acme");
    assert_eq!(code(&f.run(&acme, one, json!({"id": "globex"})).await), Some("NOT_FOUND"));
    assert_eq!(f.run(&admin, one, json!({"id": "globex"})).await["data"]["tenant"]["id"], "globex");
    assert_eq!(code(&f.run(&admin, one, json!({"id": "nobody"})).await), Some("NOT_FOUND"));

    let update = "mutation($id: ID!) { updateTenant(id: $id, input: {limits: {monthlyBudgetUsd: \"12.50\", rpm: null}}) { limits { rpm monthlyBudgetUsd } } }";
    assert_eq!(code(&f.run(&acme, update, json!({"id": "acme"})).await), Some("FORBIDDEN"));
    let updated = f.run(&admin, update, json!({"id": "acme"})).await;
    assert_eq!(
        updated["data"]["updateTenant"]["limits"],
        json!({"rpm": null, "monthlyBudgetUsd": "12.5"}),
        "{updated}"
    );
    let bad = "mutation { updateTenant(id: \"acme\", input: {limits: {monthlyBudgetUsd: \"lots\"}}) { id } }";
    assert_eq!(code(&f.run(&admin, bad, json!({})).await), Some("BAD_USER_INPUT"));

    let delete = "mutation($id: ID!) { deleteTenant(id: $id) { id disabled } }";
    assert_eq!(code(&f.run(&acme, delete, json!({"id": "acme"})).await), Some("FORBIDDEN"));
    assert_eq!(f.run(&admin, delete, json!({"id": "globex"})).await["data"]["deleteTenant"]["disabled"], true);
}

#[tokio::test]
async fn keys_are_the_admins_or_their_own_tenants() {
    let f = fixture().await;
    let admin = Principal::Admin;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    for id in ["acme", "globex"] {
        f.run(&admin, "mutation($id: ID!) { createTenant(input: {id: $id}) { id } }", json!({"id": id})).await;
    }
    let create = "mutation($t: ID!) { createKey(input: {tenantId: $t, name: \"ci\"}) { secret key { id tenantId prefix revoked } } }";
    let by_admin = f.run(&admin, create, json!({"t": "acme"})).await;
    let secret = by_admin["data"]["createKey"]["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("sk-")
            && secret.starts_with(by_admin["data"]["createKey"]["key"]["prefix"].as_str().unwrap())
    );
    let own = f.run(&acme, create, json!({"t": "acme"})).await;
    let own_id = own["data"]["createKey"]["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(code(&f.run(&globex, create, json!({"t": "acme"})).await), Some("NOT_FOUND"));

    let list = "query($t: ID!) { keys(tenantId: $t) { totalCount } }";
    assert_eq!(f.run(&acme, list, json!({"t": "acme"})).await["data"]["keys"]["totalCount"], 2);
    assert_eq!(f.run(&admin, list, json!({"t": "acme"})).await["data"]["keys"]["totalCount"], 2);
    assert_eq!(code(&f.run(&globex, list, json!({"t": "acme"})).await), Some("NOT_FOUND"));

    let revoke = "mutation($id: ID!) { revokeKey(id: $id) { id revoked } }";
    assert_eq!(code(&f.run(&globex, revoke, json!({"id": own_id})).await), Some("NOT_FOUND"));
    assert_eq!(f.run(&acme, revoke, json!({"id": own_id})).await["data"]["revokeKey"]["revoked"], true);
    let admin_key = by_admin["data"]["createKey"]["key"]["id"].clone();
    assert_eq!(f.run(&admin, revoke, json!({"id": admin_key})).await["data"]["revokeKey"]["revoked"], true);
}

#[tokio::test]
async fn pages_walk_to_the_end_and_are_capped() {
    let f = fixture().await;
    let admin = Principal::Admin;
    for i in 0..7 {
        f.run(&admin, "mutation($id: ID!) { createTenant(input: {id: $id}) { id } }", json!({"id": format!("t{i}")}))
            .await;
    }
    let q = "query($after: String) { tenants(first: 3, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage endCursor } } }";
    let mut after = Value::Null;
    let mut seen = Vec::new();
    loop {
        let v = f.run(&admin, q, json!({"after": after})).await;
        let conn = &v["data"]["tenants"];
        seen.extend(conn["edges"].as_array().unwrap().iter().map(|e| e["node"]["id"].as_str().unwrap().to_owned()));
        assert_eq!(conn["pageInfo"]["hasPreviousPage"], !after.is_null());
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "every tenant once: {seen:?}");
    assert_eq!(code(&f.run(&admin, "{ tenants(first: 101) { totalCount } }", json!({})).await), Some("BAD_USER_INPUT"));
    assert_eq!(
        code(&f.run(&admin, "{ tenants(after: \"zz\") { totalCount } }", json!({})).await),
        Some("BAD_USER_INPUT")
    );
}

#[tokio::test]
async fn usage_and_me_are_the_callers_own_unless_admin() {
    let f = fixture().await;
    let (admin, acme) = (Principal::Admin, tenant("acme"));
    let usage = "query($t: ID) { usage(filter: {tenantId: $t}, groupBy: [TENANT, DAY]) { totals { requests costUsd } rows { tenantId } } }";
    assert_eq!(f.run(&acme, usage, json!({"t": null})).await["data"]["usage"]["totals"]["requests"], 0);
    assert!(f.run(&acme, usage, json!({"t": "acme"})).await["errors"].is_null());
    assert_eq!(code(&f.run(&acme, usage, json!({"t": "globex"})).await), Some("BAD_USER_INPUT"));
    assert!(f.run(&admin, usage, json!({"t": "globex"})).await["errors"].is_null());

    let series = "query($tz: String) { usageSeries(bucket: HOUR, timezone: $tz) { timezone points { start } } }";
    assert_eq!(f.run(&acme, series, json!({"tz": "+05:30"})).await["data"]["usageSeries"]["timezone"], "+05:30");
    assert_eq!(code(&f.run(&admin, series, json!({"tz": "Europe/Paris"})).await), Some("BAD_USER_INPUT"));

    let me = "{ me { kind tenantId keyId credential spendThisMonthUsd requestsThisMonth } }";
    let mine = f.run(&acme, me, json!({})).await;
    assert_eq!(
        mine["data"]["me"],
        json!({"kind": "TENANT", "tenantId": "acme", "keyId": "key_test", "credential": "API_KEY", "spendThisMonthUsd": "0.000000", "requestsThisMonth": 0}),
        "{mine}"
    );
    assert_eq!(f.run(&admin, me, json!({})).await["data"]["me"]["kind"], "ADMIN");
}

#[tokio::test]
async fn catalog_and_prices_are_readable_by_both() {
    let f = fixture().await;
    for p in [Principal::Admin, tenant("acme")] {
        let v = f
            .run(
                &p,
                "{ models { id health } pricing { unpriced entries { provider model price { inputUsdPerMillion } } } }",
                json!({}),
            )
            .await;
        assert!(v["errors"].is_null(), "{v}");
        assert_eq!(v["data"]["models"], json!([]));
        let entries = v["data"]["pricing"]["entries"].as_array().unwrap();
        assert!(
            entries.iter().any(|e| e["provider"] == "openai" && e["model"] == "gpt-4o-mini*"),
            "built-in prices listed"
        );
        assert_eq!(v["data"]["pricing"]["unpriced"], "REFUSE");
    }
}

#[tokio::test]
async fn abusive_queries_are_refused_before_running() {
    let f = fixture().await;
    let admin = Principal::Admin;
    // Deeper than the limit (12), through introspection's recursive types.
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } } } } }";
    let v = f.run(&admin, deep, json!({})).await;
    assert!(v["errors"][0]["message"].as_str().unwrap_or("").contains("nested too deep"), "{v}");
    // Aliases multiply the work: 30 × a page of 100 tenants is far above the complexity limit.
    let aliases: String = (0..30)
        .map(|i| format!("a{i}: tenants(first: 100) {{ edges {{ node {{ id limits {{ rpm }} }} }} }} "))
        .collect();
    let v = f.run(&admin, &format!("{{ {aliases} }}"), json!({})).await;
    assert!(v["errors"][0]["message"].as_str().unwrap_or("").contains("too complex"), "{v}");
    assert!(v["data"].is_null());
}

#[test]
fn introspection_can_be_switched_off() {
    let schema = build_schema(&GraphqlSettings { introspection: false, ..GraphqlSettings::default() });
    let v = futures_util::FutureExt::now_or_never(schema.execute("{ __schema { queryType { name } } }")).unwrap();
    let v = serde_json::to_value(v).unwrap();
    assert!(v["data"]["__schema"].is_null(), "{v}");
}

/// Issue #15: the admin key reads and cancels every tenant's jobs, batches and files (an unknown id
/// is NOT_FOUND) but creates no job (FORBIDDEN); a tenant sees only its own.
#[tokio::test]
async fn jobs_batches_and_files_are_a_tenants_own_and_the_admins_to_read() {
    let f = fixture().await;
    let (admin, acme) = (Principal::Admin, tenant("acme"));
    let create = f
        .run(&admin, "mutation { createJob(input: {type: TEXT, model: \"m\", prompt: \"p\"}) { id } }", json!({}))
        .await;
    assert_eq!(code(&create), Some("FORBIDDEN"), "{create}");
    assert_eq!(
        create["errors"][0]["message"], "Jobs are billed to a tenant's key: create them with a tenant key.",
        "{create}"
    );
    let lists = f
        .run(
            &admin,
            "{ jobs(tenantId: \"acme\") { edges { cursor } } batches { edges { cursor } } files { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert!(lists["errors"].is_null(), "{lists}");
    assert_eq!(lists["data"]["jobs"]["edges"], json!([]));
    for q in [
        "{ job(id: \"batch_x\") { id } }",
        "{ batch(id: \"batch_x\") { id } }",
        "mutation { cancelJob(id: \"batch_x\") { id } }",
        "mutation { cancelBatch(id: \"batch_x\") { id } }",
    ] {
        assert_eq!(code(&f.run(&admin, q, json!({})).await), Some("NOT_FOUND"), "admin: {q}");
    }
    // A tenant naming another tenant: NOT_FOUND, as `keys(tenantId:)` answers.
    for q in [
        "{ jobs(tenantId: \"globex\") { edges { cursor } } }",
        "{ batches(tenantId: \"globex\") { edges { cursor } } }",
        "{ files(tenantId: \"globex\") { edges { cursor } } }",
    ] {
        assert_eq!(code(&f.run(&acme, q, json!({})).await), Some("NOT_FOUND"), "tenant: {q}");
    }
    let empty = f.run(&acme, "{ jobs(status: PENDING) { edges { node { id } } pageInfo { hasNextPage hasPreviousPage } } batches { edges { cursor } } files { edges { cursor } } }", json!({})).await;
    assert!(empty["errors"].is_null(), "{empty}");
    assert_eq!(
        empty["data"]["jobs"],
        json!({"edges": [], "pageInfo": {"hasNextPage": false, "hasPreviousPage": false}})
    );
    for q in [
        "{ job(id: \"batch_x\") { id } }",
        "{ batch(id: \"batch_x\") { id } }",
        "mutation { cancelJob(id: \"batch_x\") { id } }",
        "mutation { cancelBatch(id: \"batch_x\") { id } }",
    ] {
        assert_eq!(code(&f.run(&acme, q, json!({})).await), Some("NOT_FOUND"), "tenant: {q}");
    }
    let image = f.run(&acme, "mutation { createJob(input: {type: IMAGE, prompt: \"a cat\"}) { id } }", json!({})).await;
    assert_eq!(code(&image), Some("BAD_USER_INPUT"), "{image}");
    assert!(image["errors"][0]["message"].as_str().unwrap().contains("image generation is not routed yet"));
    // No provider is configured here: the model routes nowhere.
    let unrouted = f
        .run(&acme, "mutation { createJob(input: {type: TEXT, model: \"x/y\", prompt: \"p\"}) { id } }", json!({}))
        .await;
    assert_eq!(code(&unrouted), Some("NOT_FOUND"), "{unrouted}");

    // Subscriptions check the caller too: one error, then the stream ends.
    for (p, want) in [(&admin, "NOT_FOUND"), (&acme, "NOT_FOUND")] {
        let request = async_graphql::Request::new("subscription { jobUpdated(id: \"batch_x\") { status } }")
            .data(p.clone())
            .data(f.state.clone())
            .data(MonthSpend::default());
        let items: Vec<_> = futures_util::StreamExt::collect::<Vec<_>>(f.schema.execute_stream(request)).await;
        assert_eq!(items.len(), 1);
        let v = serde_json::to_value(&items[0]).unwrap();
        assert_eq!(code(&v), Some(want), "{v}");
    }
}
