//! The GraphQL front door over loopback (issue 15): every query and mutation, pagination to the
//! end, usage equal to `/admin/usage` for the same filter, errors with their `extensions.code`
//! and HTTP status, the graphql-sse transport, the playground switch, and abusive queries refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use gateway::MapEnv;
use http::Method;
use integration_tests::client::{TestClient, TestResponse};
use integration_tests::faults::wait_for;
use integration_tests::harness::{ConfigBuilder, GatewayUnderTest};
use integration_tests::mock::{Answer, Flavor, MockUpstream, Reply, Usage};
use serde_json::{json, Value};

const ADMIN: &str = "admin-key-graphql-0123456789";

async fn gql(c: &TestClient, key: Option<&str>, query: &str, variables: Value) -> TestResponse {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(k) = key {
        headers.push(("x-api-key", k));
    }
    let body = json!({"query": query, "variables": variables}).to_string();
    c.raw(Method::POST, "/graphql", &headers, body).await.unwrap()
}

/// `data` of a successful response (panics with the body otherwise).
async fn data(c: &TestClient, key: &str, query: &str, variables: Value) -> Value {
    let r = gql(c, Some(key), query, variables).await;
    let v = r.json();
    assert!(r.status.is_success() && v["errors"].is_null(), "{}: {}", r.status, r.text());
    v["data"].clone()
}

fn code(v: &Value) -> &str {
    v["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

async fn start() -> (MockUpstream, GatewayUnderTest) {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    mock.always(Flavor::OpenAi.chat_path(), Reply::answer(Answer::text("hello").with_usage(Usage::new(200, 100))))
        .await;
    let yaml = ConfigBuilder::new().provider("openai", &mock).extra(&format!("admin_api_key: {ADMIN}\n")).build();
    let gw = GatewayUnderTest::start(&yaml).await;
    (mock, gw)
}

async fn chat(c: &TestClient, key: &str) {
    let auth = format!("Bearer {key}");
    let body = json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let r = c
        .raw(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &auth), ("content-type", "application/json")],
            body.to_string(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn every_query_and_mutation_over_loopback() {
    let (_mock, gw) = start().await;
    let c = gw.client();

    // Tenants and keys, by the admin.
    for id in ["acme", "globex", "initech"] {
        let d = data(
            &c,
            ADMIN,
            "mutation($id: ID!) { createTenant(input: {id: $id, limits: {rpm: 1000}}) { id source limits { rpm } } }",
            json!({"id": id}),
        )
        .await;
        assert_eq!(d["createTenant"], json!({"id": id, "source": "STORED", "limits": {"rpm": 1000}}));
    }
    let d = data(&c, ADMIN, "mutation { updateTenant(id: \"globex\", input: {limits: {monthlyBudgetUsd: \"5\"}}) { limits { rpm monthlyBudgetUsd } } }", json!({})).await;
    assert_eq!(d["updateTenant"]["limits"], json!({"rpm": 1000, "monthlyBudgetUsd": "5"}));
    let d = data(
        &c,
        ADMIN,
        "mutation { createKey(input: {tenantId: \"acme\", name: \"ci\"}) { secret key { id tenantId name revoked } } }",
        json!({}),
    )
    .await;
    let secret = d["createKey"]["secret"].as_str().unwrap().to_owned();
    let key_id = d["createKey"]["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(d["createKey"]["key"]["revoked"], false);

    // Pagination to the end, one tenant per page.
    let mut after = Value::Null;
    let mut ids = Vec::new();
    loop {
        let d = data(&c, ADMIN, "query($a: String) { tenants(first: 1, after: $a) { totalCount edges { node { id } } pageInfo { hasNextPage endCursor } } }", json!({"a": after})).await;
        let conn = &d["tenants"];
        assert_eq!(conn["totalCount"], 3);
        ids.extend(conn["edges"].as_array().unwrap().iter().map(|e| e["node"]["id"].as_str().unwrap().to_owned()));
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
    ids.sort();
    assert_eq!(ids, ["acme", "globex", "initech"]);

    // The new key works for chat, and the tenant sees itself through it.
    chat(&c, &secret).await;
    chat(&c, &secret).await;
    let me = data(&c, &secret, "{ me { kind tenantId keyId credential } }", json!({})).await;
    assert_eq!(me["me"], json!({"kind": "TENANT", "tenantId": "acme", "keyId": key_id, "credential": "API_KEY"}));
    let t = data(&c, &secret, "{ tenant(id: \"acme\") { id disabled } }", json!({})).await;
    assert_eq!(t["tenant"], json!({"id": "acme", "disabled": false}));
    let k =
        data(&c, &secret, "{ keys(tenantId: \"acme\") { totalCount edges { node { id prefix } } } }", json!({})).await;
    assert_eq!(k["keys"]["totalCount"], 1);
    assert!(secret.starts_with(k["keys"]["edges"][0]["node"]["prefix"].as_str().unwrap()));

    // Usage: wait for the ledger, then compare with /admin/usage for the same filter and grouping.
    let usage_q = "query($f: UsageFilterInput) { usage(filter: $f, groupBy: [TENANT, MODEL]) { totals { requests promptTokens completionTokens costUsd } rows { tenantId model totals { requests promptTokens completionTokens costUsd } } } }";
    let f = json!({"tenantId": "acme", "from": "2020-01-01"});
    assert!(
        wait_for(Duration::from_secs(10), || async {
            data(&c, ADMIN, usage_q, json!({"f": f})).await["usage"]["totals"]["requests"] == 2
        })
        .await,
        "two ledger rows"
    );
    let g = data(&c, ADMIN, usage_q, json!({"f": f})).await;
    let auth = format!("Bearer {ADMIN}");
    let rest = c
        .raw(
            Method::GET,
            "/admin/usage?tenant=acme&from=2020-01-01&group_by=tenant,model",
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    let rest_rows = rest.json()["data"].as_array().unwrap().clone();
    let rows = g["usage"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), rest_rows.len());
    for (ours, theirs) in rows.iter().zip(&rest_rows) {
        assert_eq!(ours["tenantId"], theirs["tenant"]);
        assert_eq!(ours["model"], theirs["model"]);
        for (a, b) in [
            ("requests", "requests"),
            ("promptTokens", "prompt_tokens"),
            ("completionTokens", "completion_tokens"),
            ("costUsd", "cost_usd"),
        ] {
            assert_eq!(ours["totals"][a], theirs[b], "{a}");
        }
    }
    assert_eq!(g["usage"]["totals"]["promptTokens"], 400, "rows add up to the totals");
    // The tenant's own view is the same; another tenant's is refused.
    let own = data(&c, &secret, usage_q, json!({"f": {"from": "2020-01-01"}})).await;
    assert_eq!(own["usage"]["totals"], g["usage"]["totals"]);
    assert_eq!(
        code(&gql(&c, Some(&secret), usage_q, json!({"f": {"tenantId": "globex"}})).await.json()),
        "BAD_USER_INPUT"
    );
    let series = data(&c, &secret, "{ usageSeries(bucket: DAY, timezone: \"+02:00\") { timezone totals { requests } points { start totals { requests } } } }", json!({})).await;
    assert_eq!(series["usageSeries"]["totals"]["requests"], 2);
    let spend =
        data(&c, ADMIN, "{ tenants { edges { node { id requestsThisMonth spendThisMonthUsd } } } }", json!({})).await;
    let acme =
        spend["tenants"]["edges"].as_array().unwrap().iter().find(|e| e["node"]["id"] == "acme").unwrap().clone();
    assert_eq!(acme["node"]["requestsThisMonth"], 2);
    assert_eq!(acme["node"]["spendThisMonthUsd"], g["usage"]["totals"]["costUsd"]);

    // Catalog with price and health, and the price table.
    let m = data(&c, &secret, "{ models { id provider upstreamModel health price { inputUsdPerMillion } } pricing { unpriced entries { provider model } } }", json!({})).await;
    let models = m["models"].as_array().unwrap();
    assert!(!models.is_empty() && models.iter().all(|m| m["health"] == "HEALTHY"), "{models:?}");
    assert!(m["pricing"]["entries"].as_array().unwrap().len() > 5);

    // Revoke the key (tenant, its own), disable a tenant (admin).
    let r = data(&c, &secret, "mutation($id: ID!) { revokeKey(id: $id) { revoked } }", json!({"id": key_id})).await;
    assert_eq!(r["revokeKey"]["revoked"], true);
    let d = data(&c, ADMIN, "mutation { deleteTenant(id: \"initech\") { id disabled } }", json!({})).await;
    assert_eq!(d["deleteTenant"]["disabled"], true);
    gw.shutdown().await;
}

#[tokio::test]
async fn errors_carry_their_codes_and_statuses() {
    let (_mock, gw) = start().await;
    let c = gw.client();
    data(&c, ADMIN, "mutation { createTenant(input: {id: \"acme\"}) { id } }", json!({})).await;
    let d = data(&c, ADMIN, "mutation { createKey(input: {tenantId: \"acme\"}) { secret } }", json!({})).await;
    let tenant_key = d["createKey"]["secret"].as_str().unwrap().to_owned();

    let none = gql(&c, None, "{ me { kind } }", json!({})).await;
    assert_eq!((none.status.as_u16(), code(&none.json())), (401, "UNAUTHENTICATED"), "{}", none.text());
    let bad = gql(&c, Some("sk-not-a-key-at-all"), "{ me { kind } }", json!({})).await;
    assert_eq!((bad.status.as_u16(), code(&bad.json())), (401, "UNAUTHENTICATED"));
    let forbidden = gql(&c, Some(&tenant_key), "{ tenants { totalCount } }", json!({})).await;
    assert_eq!((forbidden.status.as_u16(), code(&forbidden.json())), (200, "FORBIDDEN"));
    let missing = gql(&c, Some(ADMIN), "{ tenant(id: \"nobody\") { id } }", json!({})).await;
    assert_eq!(code(&missing.json()), "NOT_FOUND");
    let syntax = gql(&c, Some(ADMIN), "{ me { ", json!({})).await;
    assert!(!syntax.json()["errors"].as_array().unwrap().is_empty());

    // GET: queries run, mutations do not; the playground is off by default.
    let auth = [("x-api-key", ADMIN)];
    let get = c.raw(Method::GET, "/graphql?query=%7B%20me%20%7B%20kind%20%7D%20%7D", &auth, "").await.unwrap();
    assert_eq!(get.json()["data"]["me"]["kind"], "ADMIN", "{}", get.text());
    let mutation = c
        .raw(
            Method::GET,
            "/graphql?query=mutation%20%7B%20deleteTenant(id%3A%22acme%22)%20%7B%20id%20%7D%20%7D",
            &auth,
            "",
        )
        .await
        .unwrap();
    assert_eq!(mutation.status, 405);
    let page = c.raw(Method::GET, "/graphql", &[("accept", "text/html")], "").await.unwrap();
    assert_eq!(page.status, 404);

    // Body limit and abusive queries.
    let huge = format!("{{\"query\":\"{}\"}}", " ".repeat(300 * 1024));
    let r = c
        .raw(Method::POST, "/graphql", &[("x-api-key", ADMIN), ("content-type", "application/json")], huge)
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    let aliases: String = (0..40)
        .map(|i| format!("a{i}: tenants(first: 100) {{ edges {{ node {{ id limits {{ rpm tpm }} }} }} }} "))
        .collect();
    let r = gql(&c, Some(ADMIN), &format!("{{ {aliases} }}"), json!({})).await;
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("too complex"), "{}", r.text());
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } } } } }";
    let r = gql(&c, Some(ADMIN), deep, json!({})).await;
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("too deep"), "{}", r.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn graphql_sse_and_the_playground() {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    let yaml = ConfigBuilder::new().provider("openai", &mock).extra(&format!("admin_api_key: {ADMIN}\n")).build();
    let gw = GatewayUnderTest::start_with_env(&yaml, MapEnv::from_pairs([("ENABLE_PLAYGROUND", "true")])).await;
    let c = gw.client();

    let page = c.raw(Method::GET, "/graphql", &[("accept", "text/html")], "").await.unwrap();
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("<textarea") && !html.contains("src=\"http") && !html.contains("cdn"), "self-contained page");

    let mut s = c
        .stream(
            "/graphql",
            &[("x-api-key", ADMIN), ("accept", "text/event-stream")],
            &json!({"query": "{ me { kind } }"}),
        )
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let events = s.collect().await.unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].event.as_deref(), Some("next"));
    assert_eq!(events[0].json()["data"]["me"]["kind"], "ADMIN");
    assert_eq!(events[1].event.as_deref(), Some("complete"));
    gw.shutdown().await;
}

/// An admin-made tenant and its key's secret.
async fn tenant_key(c: &TestClient, id: &str) -> String {
    data(c, ADMIN, "mutation($id: ID!) { createTenant(input: {id: $id}) { id } }", json!({"id": id})).await;
    let d = data(c, ADMIN, "mutation($t: ID!) { createKey(input: {tenantId: $t}) { secret } }", json!({"t": id})).await;
    d["createKey"]["secret"].as_str().unwrap().to_owned()
}

const CREATE_JOB: &str =
    "mutation($in: CreateJobInput!) { createJob(input: $in) { id type status batchStatus model createdAt } }";

fn text_job(prompt: &str) -> Value {
    json!({"in": {"type": "TEXT", "model": "openai/gpt-4o-mini", "prompt": prompt, "maxTokens": 64, "temperature": 0.2}})
}

/// Walks a connection (`first` per page) to its end and returns every node id.
async fn walk(c: &TestClient, key: &str, field: &str, first: u32) -> Vec<String> {
    let q = format!(
        "query($a: String) {{ {field}(first: {first}, after: $a) {{ edges {{ cursor node {{ id }} }} pageInfo {{ hasNextPage hasPreviousPage endCursor }} }} }}"
    );
    let mut after = Value::Null;
    let mut ids = Vec::new();
    loop {
        let d = data(c, key, &q, json!({"a": after})).await;
        let conn = &d[field];
        let edges = conn["edges"].as_array().unwrap();
        assert!(edges.len() <= first as usize);
        assert_eq!(conn["pageInfo"]["hasPreviousPage"], !after.is_null());
        ids.extend(edges.iter().map(|e| e["node"]["id"].as_str().unwrap().to_owned()));
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        assert_eq!(conn["pageInfo"]["endCursor"], edges.last().unwrap()["cursor"]);
        after = conn["pageInfo"]["endCursor"].clone();
    }
    ids
}

fn rank(status: &str) -> u8 {
    match status {
        "PENDING" => 0,
        "PROCESSING" => 1,
        _ => 2,
    }
}

const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh Postgres schema for one gateway (its ledger and batch store go there through `search_path`).
struct PgSchema {
    name: String,
    client: tokio_postgres::Client,
}

impl PgSchema {
    async fn create() -> Self {
        let (client, conn) =
            tokio_postgres::connect(PG_BASE, tokio_postgres::NoTls).await.expect("the machine's Postgres");
        tokio::spawn(conn);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("graphql_jobs_{}_{nanos}", std::process::id());
        client.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
        Self { name, client }
    }

    fn env(&self) -> MapEnv {
        let url = format!("{PG_BASE}?options=-c%20search_path%3D{}", self.name);
        MapEnv::from_pairs([("DATABASE_URL", url.as_str())])
    }

    async fn drop_schema(self) {
        let _ = self.client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name)).await;
    }
}

#[tokio::test]
async fn a_job_runs_to_completed_with_one_ledger_row_and_a_subscription_follows_it() {
    job_lifecycle(None).await;
}

#[tokio::test]
async fn a_job_runs_to_completed_on_postgres_too() {
    let pg = PgSchema::create().await;
    job_lifecycle(Some(&pg)).await;
    pg.drop_schema().await;
}

/// A job made by the mutation, followed by a subscription to `COMPLETED`, read back with its result,
/// usage and timings; one upstream call and one ledger row (in the embedded store, or in `pg`).
async fn job_lifecycle(pg: Option<&PgSchema>) {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    // Slow enough that the job is seen running.
    mock.always(
        Flavor::OpenAi.chat_path(),
        Reply::answer(Answer::text("Hello from the job").with_usage(Usage::new(12, 5)))
            .delay(Duration::from_millis(700)),
    )
    .await;
    let yaml = ConfigBuilder::new()
        .provider("openai", &mock)
        .extra(&format!("admin_api_key: {ADMIN}\nbatches:\n  poll_ms: 100\n"))
        .build();
    let gw = GatewayUnderTest::start_with_env(&yaml, pg.map(PgSchema::env).unwrap_or_default()).await;
    let c = gw.client();
    let key = tenant_key(&c, "acme").await;

    let made = data(&c, &key, CREATE_JOB, text_job("Say hello")).await["createJob"].clone();
    assert_eq!(made["type"], "TEXT");
    assert_eq!(made["model"], "openai/gpt-4o-mini");
    let id = made["id"].as_str().unwrap().to_owned();

    // The subscription: the state now, then every transition, then `complete`.
    let sub = json!({
        "query": "subscription($id: ID!) { jobUpdated(id: $id) { id status batchStatus result { text } } }",
        "variables": {"id": id},
    });
    let mut s = c.stream("/graphql", &[("x-api-key", &key), ("accept", "text/event-stream")], &sub).await.unwrap();
    assert_eq!(s.status, 200);
    let events = s.collect().await.unwrap();
    assert_eq!(events.last().unwrap().event.as_deref(), Some("complete"), "{events:?}");
    let states: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| {
            assert_eq!(e.event.as_deref(), Some("next"));
            let v = e.json();
            assert!(v["errors"].is_null(), "{v}");
            v["data"]["jobUpdated"].clone()
        })
        .collect();
    let statuses: Vec<&str> = states.iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert!(statuses.len() >= 2, "at least the state now and COMPLETED: {statuses:?}");
    assert!(statuses.windows(2).all(|w| rank(w[0]) <= rank(w[1])), "never backwards: {statuses:?}");
    assert!(statuses.contains(&"PROCESSING"), "the running state is seen: {statuses:?}");
    assert_eq!(statuses.last(), Some(&"COMPLETED"));
    assert_eq!(states.last().unwrap()["result"]["text"], "Hello from the job");
    assert_eq!(states.last().unwrap()["batchStatus"], "COMPLETED");

    // The job query: result, usage and cost, timings.
    let q = "query($id: ID!) { job(id: $id) { status result { statusCode text response } error { code } usage { promptTokens completionTokens totalTokens costUsd } createdAt queuedAt answeredAt endedAt durationMs } }";
    let job = data(&c, &key, q, json!({"id": id})).await["job"].clone();
    assert_eq!(job["status"], "COMPLETED");
    assert!(job["error"].is_null());
    assert_eq!(job["result"]["statusCode"], 200);
    assert_eq!(job["result"]["text"], "Hello from the job");
    assert_eq!(job["result"]["response"]["choices"][0]["message"]["content"], "Hello from the job");
    assert_eq!(job["usage"]["promptTokens"], 12);
    assert_eq!(job["usage"]["completionTokens"], 5);
    assert_eq!(job["usage"]["totalTokens"], 17);
    assert!(job["usage"]["costUsd"].as_str().is_some_and(|c| c.parse::<f64>().unwrap() > 0.0), "{job}");
    for t in ["createdAt", "queuedAt", "answeredAt", "endedAt"] {
        assert!(job[t].as_str().is_some_and(|v| v.ends_with('Z')), "{t}: {job}");
    }

    // Exactly one upstream call and exactly one ledger row, whose cost is the job's.
    assert_eq!(mock.requests_to(Flavor::OpenAi.chat_path()).await.len(), 1);
    let (rows, tenant, all): (i64, String, i64) = match pg {
        None => {
            let conn = rusqlite::Connection::open(gw.data_dir.join("ledger.sqlite3")).unwrap();
            let (rows, tenant) = conn
                .query_row("SELECT COUNT(*), MAX(tenant) FROM ledger_records WHERE batch_id = ?1", [&id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            (rows, tenant, conn.query_row("SELECT COUNT(*) FROM ledger_records", [], |r| r.get(0)).unwrap())
        }
        Some(pg) => {
            let q = format!("SELECT COUNT(*), MAX(tenant) FROM {}.ledger_records WHERE batch_id = $1", pg.name);
            let r = pg.client.query_one(&q, &[&id]).await.unwrap();
            let all =
                pg.client.query_one(&format!("SELECT COUNT(*) FROM {}.ledger_records", pg.name), &[]).await.unwrap();
            (r.get(0), r.get(1), all.get(0))
        }
    };
    assert_eq!((rows, tenant.as_str()), (1, "acme"));
    assert_eq!(all, 1, "no other ledger row");
    let usage = data(&c, &key, "{ usage { totals { requests costUsd } } }", json!({})).await;
    assert_eq!(usage["usage"]["totals"]["requests"], 1);
    assert_eq!(usage["usage"]["totals"]["costUsd"], job["usage"]["costUsd"]);

    // The batch behind it, its files, and the lists.
    let b = data(&c, &key, "query($id: ID!) { batch(id: $id) { id status isJob endpoint requestCounts { total completed failed } outputFileId } }", json!({"id": id})).await;
    assert_eq!(
        b["batch"],
        json!({"id": id, "status": "COMPLETED", "isJob": true, "endpoint": "/v1/chat/completions",
               "requestCounts": {"total": 1, "completed": 1, "failed": 0}, "outputFileId": b["batch"]["outputFileId"]})
    );
    let files = walk(&c, &key, "files", 1).await;
    assert!(files.contains(&b["batch"]["outputFileId"].as_str().unwrap().to_owned()), "{files:?}");
    assert_eq!(files.len(), 2, "the job's input and output files: {files:?}");
    let done = data(&c, &key, "{ jobs(status: COMPLETED) { edges { node { id result { text } } } } }", json!({})).await;
    assert_eq!(done["jobs"]["edges"][0]["node"], json!({"id": id, "result": {"text": "Hello from the job"}}));
    let none = data(&c, &key, "{ jobs(status: PENDING) { edges { node { id } } } }", json!({})).await;
    assert_eq!(none["jobs"]["edges"], json!([]));
    // The admin key's tenant-less and tenant-filtered lists (one store query each, on either store).
    assert_eq!(walk(&c, ADMIN, "jobs", 1).await, [id.clone()]);
    let theirs = data(&c, ADMIN, "{ jobs(tenantId: \"acme\", status: COMPLETED) { edges { node { id tenantId } } } files { edges { node { tenantId } } } }", json!({})).await;
    assert_eq!(theirs["jobs"]["edges"], json!([{"node": {"id": id, "tenantId": "acme"}}]));
    assert_eq!(theirs["files"]["edges"].as_array().unwrap().len(), 2, "{theirs}");

    // A finished job cannot be cancelled; a subscription to it yields its final state and ends.
    let r = gql(&c, Some(&key), "mutation($id: ID!) { cancelJob(id: $id) { id } }", json!({"id": id})).await;
    assert_eq!(code(&r.json()), "BAD_USER_INPUT", "{}", r.text());
    let sub = json!({"query": "subscription($id: ID!) { batchUpdated(id: $id) { status } }", "variables": {"id": id}});
    let mut s = c.stream("/graphql", &[("x-api-key", &key), ("accept", "text/event-stream")], &sub).await.unwrap();
    let events = s.collect().await.unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].json()["data"]["batchUpdated"]["status"], "COMPLETED");
    gw.shutdown().await;
}

#[tokio::test]
async fn jobs_batches_and_files_are_the_callers_own() {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    // The worker is off: every job stays where the test puts it.
    let yaml = ConfigBuilder::new()
        .provider("openai", &mock)
        .extra(&format!("admin_api_key: {ADMIN}\nbatches:\n  worker: false\n"))
        .build();
    let gw = GatewayUnderTest::start(&yaml).await;
    let c = gw.client();
    let acme = tenant_key(&c, "acme").await;
    let globex = tenant_key(&c, "globex").await;

    let mut made = Vec::new();
    for i in 0..5 {
        let job = data(&c, &acme, CREATE_JOB, text_job(&format!("prompt {i}"))).await["createJob"].clone();
        assert_eq!((job["status"].as_str(), job["batchStatus"].as_str()), (Some("PENDING"), Some("VALIDATING")));
        made.push(job["id"].as_str().unwrap().to_owned());
    }
    let messages = json!({"in": {"type": "TEXT", "model": "openai/gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}});
    made.push(data(&c, &acme, CREATE_JOB, messages).await["createJob"]["id"].as_str().unwrap().to_owned());

    // Pagination to the end: newest first, each once.
    let mut newest_first = made.clone();
    newest_first.reverse();
    assert_eq!(walk(&c, &acme, "jobs", 4).await, newest_first);
    assert_eq!(walk(&c, &acme, "batches", 2).await, newest_first);
    let files = walk(&c, &acme, "files", 4).await;
    assert_eq!(files.len(), 6, "one input file per job: {files:?}");
    let pending =
        data(&c, &acme, "{ jobs(first: 100, status: PENDING) { edges { node { id status } } } }", json!({})).await;
    assert_eq!(pending["jobs"]["edges"].as_array().unwrap().len(), 6);

    // Another tenant sees nothing of them and can change nothing: NOT_FOUND, as in REST.
    assert!(walk(&c, &globex, "jobs", 10).await.is_empty());
    assert!(walk(&c, &globex, "batches", 10).await.is_empty());
    assert!(walk(&c, &globex, "files", 10).await.is_empty());
    let target = json!({"id": made[0]});
    for q in [
        "query($id: ID!) { job(id: $id) { id } }",
        "query($id: ID!) { batch(id: $id) { id } }",
        "mutation($id: ID!) { cancelJob(id: $id) { id } }",
        "mutation($id: ID!) { cancelBatch(id: $id) { id } }",
    ] {
        let r = gql(&c, Some(&globex), q, target.clone()).await;
        assert_eq!(code(&r.json()), "NOT_FOUND", "{q}: {}", r.text());
    }
    let auth = format!("Bearer {globex}");
    let rest = c.raw(Method::GET, &format!("/v1/batches/{}", made[0]), &[("authorization", &auth)], "").await.unwrap();
    assert_eq!(rest.status, 404, "REST agrees");
    let rest = c.raw(Method::GET, &format!("/v1/files/{}", files[0]), &[("authorization", &auth)], "").await.unwrap();
    assert_eq!(rest.status, 404, "another tenant's file is 404 in REST");
    let cursor = data(&c, &acme, "{ files(first: 1) { pageInfo { endCursor } } }", json!({})).await["files"]
        ["pageInfo"]["endCursor"]
        .clone();
    let r = gql(
        &c,
        Some(&globex),
        "query($a: String) { files(after: $a) { edges { node { id } } } }",
        json!({"a": cursor}),
    )
    .await;
    assert_eq!(code(&r.json()), "BAD_USER_INPUT", "another tenant's file is no cursor: {}", r.text());
    let sub = json!({"query": "subscription($id: ID!) { jobUpdated(id: $id) { status } }", "variables": target});
    let mut s = c.stream("/graphql", &[("x-api-key", &globex), ("accept", "text/event-stream")], &sub).await.unwrap();
    let events = s.collect().await.unwrap();
    assert_eq!(events.len(), 2, "one error, then complete: {events:?}");
    assert_eq!(code(&events[0].json()), "NOT_FOUND", "{events:?}");
    assert!(events[0].json()["data"].is_null() || events[0].json()["data"]["jobUpdated"].is_null());

    // Issue #15: the admin key sees every tenant's jobs, batches and files, paged to the end, newest
    // first, with `tenantId` on each; it filters by tenant, reads and cancels another tenant's job,
    // but creates none (a job is billed to a tenant's key).
    let mut theirs = Vec::new();
    for i in 0..2 {
        let job = data(&c, &globex, CREATE_JOB, text_job(&format!("theirs {i}"))).await["createJob"].clone();
        theirs.push(job["id"].as_str().unwrap().to_owned());
    }
    let mut everyone: Vec<String> = made.iter().chain(theirs.iter()).cloned().collect();
    everyone.reverse();
    assert_eq!(walk(&c, ADMIN, "jobs", 3).await, everyone, "both tenants' jobs, newest first, each once");
    assert_eq!(walk(&c, ADMIN, "batches", 5).await, everyone);
    assert_eq!(walk(&c, ADMIN, "files", 3).await.len(), 8, "both tenants' input files");
    let owners = data(&c, ADMIN, "{ jobs(first: 100) { edges { node { id tenantId } } } }", json!({})).await;
    let owners: Vec<(String, String)> = owners["jobs"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["node"]["id"].as_str().unwrap().to_owned(), e["node"]["tenantId"].as_str().unwrap().to_owned()))
        .collect();
    let want: Vec<(String, String)> = everyone
        .iter()
        .map(|id| (id.clone(), if theirs.contains(id) { "globex" } else { "acme" }.to_owned()))
        .collect();
    assert_eq!(owners, want);
    let only = data(&c, ADMIN, "{ jobs(tenantId: \"globex\") { edges { node { id tenantId } } } batches(tenantId: \"globex\") { edges { node { tenantId } } } files(tenantId: \"globex\") { edges { node { tenantId } } } }", json!({})).await;
    let ids: Vec<&str> =
        only["jobs"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [theirs[1].as_str(), theirs[0].as_str()]);
    for field in ["batches", "files"] {
        let edges = only[field]["edges"].as_array().unwrap();
        assert!(edges.len() == 2 && edges.iter().all(|e| e["node"]["tenantId"] == "globex"), "{field}: {only}");
    }
    // A tenant sees only its own id, and naming another tenant is NOT_FOUND (as `keys(tenantId:)`).
    let mine = data(&c, &globex, "{ jobs { edges { node { tenantId } } } }", json!({})).await;
    assert!(mine["jobs"]["edges"].as_array().unwrap().iter().all(|e| e["node"]["tenantId"] == "globex"), "{mine}");
    let r = gql(&c, Some(&globex), "{ jobs(tenantId: \"acme\") { edges { cursor } } }", json!({})).await;
    assert_eq!(code(&r.json()), "NOT_FOUND", "{}", r.text());
    let one = data(
        &c,
        ADMIN,
        "query($id: ID!) { job(id: $id) { id tenantId status } batch(id: $id) { tenantId } }",
        json!({"id": theirs[0]}),
    )
    .await;
    assert_eq!(
        one,
        json!({"job": {"id": theirs[0], "tenantId": "globex", "status": "PENDING"}, "batch": {"tenantId": "globex"}})
    );
    let by_admin = data(
        &c,
        ADMIN,
        "mutation($id: ID!) { cancelJob(id: $id) { id tenantId batchStatus } }",
        json!({"id": theirs[0]}),
    )
    .await;
    assert_eq!(by_admin["cancelJob"], json!({"id": theirs[0], "tenantId": "globex", "batchStatus": "CANCELLING"}));
    let seen = data(&c, &globex, "query($id: ID!) { job(id: $id) { batchStatus } }", json!({"id": theirs[0]})).await;
    assert_eq!(seen["job"]["batchStatus"], "CANCELLING", "the owner sees the admin's cancel");
    let refused = gql(&c, Some(ADMIN), CREATE_JOB, text_job("x")).await.json();
    assert_eq!(code(&refused), "FORBIDDEN");
    assert_eq!(refused["errors"][0]["message"], "Jobs are billed to a tenant's key: create them with a tenant key.");
    // REST agrees with GraphQL on reads: the admin lists every tenant's batches and reads any file.
    let admin_auth = format!("Bearer {ADMIN}");
    let rest = c.raw(Method::GET, "/v1/batches?limit=100", &[("authorization", &admin_auth)], "").await.unwrap();
    assert_eq!(rest.status, 200, "{}", rest.text());
    assert_eq!(rest.json()["data"].as_array().unwrap().len(), 8);
    let rest =
        c.raw(Method::GET, &format!("/v1/files/{}", files[0]), &[("authorization", &admin_auth)], "").await.unwrap();
    assert_eq!(rest.status, 200, "{}", rest.text());

    // The owner cancels: a job, and a batch.
    let cancelled =
        data(&c, &acme, "mutation($id: ID!) { cancelJob(id: $id) { id status batchStatus } }", target.clone()).await;
    assert_eq!(cancelled["cancelJob"], json!({"id": made[0], "status": "PROCESSING", "batchStatus": "CANCELLING"}));
    let b = data(
        &c,
        &acme,
        "mutation($id: ID!) { cancelBatch(id: $id) { id status cancellingAt } }",
        json!({"id": made[1]}),
    )
    .await;
    assert_eq!(b["cancelBatch"]["status"], "CANCELLING");
    assert!(b["cancelBatch"]["cancellingAt"].is_string());
    let processing = data(&c, &acme, "{ jobs(status: PROCESSING) { edges { node { id } } } }", json!({})).await;
    assert_eq!(processing["jobs"]["edges"].as_array().unwrap().len(), 2);

    // IMAGE is refused with a clear error; bad input is BAD_USER_INPUT.
    let r =
        gql(&c, Some(&acme), "mutation { createJob(input: {type: IMAGE, prompt: \"a cat\"}) { id } }", json!({})).await;
    let v = r.json();
    assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("image generation is not routed yet"), "{v}");
    let both = json!({"in": {"type": "TEXT", "model": "openai/gpt-4o-mini", "prompt": "x", "messages": [{"role": "user", "content": "y"}]}});
    assert_eq!(code(&gql(&c, Some(&acme), CREATE_JOB, both).await.json()), "BAD_USER_INPUT");
    let no_model = json!({"in": {"type": "TEXT", "prompt": "x"}});
    assert_eq!(code(&gql(&c, Some(&acme), CREATE_JOB, no_model).await.json()), "BAD_USER_INPUT");
    let unknown = json!({"in": {"type": "TEXT", "model": "nowhere/nothing", "prompt": "x"}});
    assert_eq!(code(&gql(&c, Some(&acme), CREATE_JOB, unknown).await.json()), "NOT_FOUND");

    // Page sizes and abusive queries.
    for q in [
        "{ jobs(first: 101) { edges { cursor } } }",
        "{ batches(first: 0) { edges { cursor } } }",
        "{ files(after: \"zz\") { edges { cursor } } }",
    ] {
        assert_eq!(code(&gql(&c, Some(&acme), q, json!({})).await.json()), "BAD_USER_INPUT", "{q}");
    }
    let aliases: String = (0..30)
        .map(|i| {
            format!(
                "a{i}: jobs(first: 100) {{ edges {{ node {{ id status result {{ text }} usage {{ costUsd }} }} }} }} "
            )
        })
        .collect();
    let r = gql(&c, Some(&acme), &format!("{{ {aliases} }}"), json!({})).await;
    assert!(r.json()["errors"][0]["message"].as_str().unwrap_or("").contains("too complex"), "{}", r.text());
    assert_eq!(mock.requests_to(Flavor::OpenAi.chat_path()).await.len(), 0, "nothing ran");
    gw.shutdown().await;
}
