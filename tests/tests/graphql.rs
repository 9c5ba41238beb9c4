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
