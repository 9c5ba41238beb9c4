//! Access control (issue 7): the admin API over HTTP, limits producing 429s at the right counts, two
//! gateways sharing this machine's Redis and Postgres, and Redis going away mid-test.
//!
//! Postgres and Redis tests skip (with a message) when the service is not running on this machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener as StdListener;
use std::process::Command;
use std::time::{Duration, Instant};

use gateway::MapEnv;
use http::Method;
use integration_tests::client::{TestClient, TestResponse};
use integration_tests::harness::{temp_dir, ConfigBuilder, GatewayUnderTest};
use integration_tests::mock::{Answer, Flavor, MockUpstream, Reply, Usage};
use serde_json::{json, Value};

const ADMIN: &str = "admin-key-0123456789abcdef";
const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432/test";

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{tag}_{}_{nanos}", std::process::id())
}

async fn admin(c: &TestClient, method: Method, path: &str, body: Option<Value>) -> TestResponse {
    let auth = format!("Bearer {ADMIN}");
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    c.raw(method, path, &headers, body).await.unwrap()
}

fn chat_body() -> Value {
    json!({"model": "openai/gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
}

async fn chat(c: &TestClient, key: &str) -> TestResponse {
    let auth = format!("Bearer {key}");
    c.raw(
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", &auth), ("content-type", "application/json")],
        chat_body().to_string(),
    )
    .await
    .unwrap()
}

/// An OpenAI mock whose every answer reports 200 prompt + 100 completion tokens.
async fn openai_mock() -> MockUpstream {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    mock.always(Flavor::OpenAi.chat_path(), Reply::answer(Answer::text("hello").with_usage(Usage::new(200, 100))))
        .await;
    mock
}

fn config(mock: &MockUpstream, extra: &str) -> String {
    ConfigBuilder::new().provider("openai", mock).extra(&format!("admin_api_key: {ADMIN}\n")).extra(extra).build()
}

/// Waits out the last 5 s of a minute so a test does not straddle two rate windows.
async fn avoid_minute_edge() {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let into = ms % 60_000;
    if into > 55_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - into + 100)).await;
    }
}

fn statuses(rs: &[TestResponse]) -> Vec<u16> {
    rs.iter().map(|r| r.status.as_u16()).collect()
}

fn expect_429(r: &TestResponse, kind: &str, code: &str) {
    assert_eq!(r.status.as_u16(), 429, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["type"], kind, "{}", r.text());
    assert_eq!(e["code"], code, "{}", r.text());
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)), "retry-after");
}

#[tokio::test]
async fn admin_lifecycle_over_http() {
    let mock = openai_mock().await;
    let gw = GatewayUnderTest::start(&config(&mock, "limits:\n  key_cache_ttl_ms: 500\n")).await;
    let c = gw.client();

    // Open mode until the first tenant exists.
    assert_eq!(c.chat(&chat_body()).await.unwrap().status.as_u16(), 200);

    // The admin key guards the API.
    assert_eq!(c.get("/admin/tenants").await.unwrap().status.as_u16(), 401);
    let wrong =
        c.raw(Method::GET, "/admin/tenants", &[("authorization", "Bearer sk-not-the-admin")], "").await.unwrap();
    assert_eq!(wrong.status.as_u16(), 401);

    // Create, refuse duplicates and bad ids.
    let r = admin(
        &c,
        Method::POST,
        "/admin/tenants",
        Some(json!({"id": "acme", "rpm": 100, "monthly_budget_usd": "12.5"})),
    )
    .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text());
    assert_eq!(r.json()["id"], "acme");
    assert_eq!(r.json()["monthly_budget_usd"], "12.5");
    assert_eq!(r.json()["disabled"], false);
    let dup = admin(&c, Method::POST, "/admin/tenants", Some(json!({"id": "acme"}))).await;
    assert_eq!(dup.status.as_u16(), 409, "{}", dup.text());
    let bad = admin(&c, Method::POST, "/admin/tenants", Some(json!({"id": "no spaces"}))).await;
    assert_eq!(bad.status.as_u16(), 400);
    let bad = admin(&c, Method::POST, "/admin/tenants", Some(json!({"id": "x", "rpm": 0}))).await;
    assert_eq!(bad.status.as_u16(), 400);

    // List and patch (null clears a limit).
    let list = admin(&c, Method::GET, "/admin/tenants", None).await;
    assert_eq!(list.status.as_u16(), 200);
    assert!(list.json()["data"].as_array().unwrap().iter().any(|t| t["id"] == "acme"));
    let r = admin(&c, Method::PATCH, "/admin/tenants/acme", Some(json!({"rpm": null, "tpm": 50000}))).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json()["rpm"], Value::Null);
    assert_eq!(r.json()["tpm"], 50000);
    assert_eq!(admin(&c, Method::PATCH, "/admin/tenants/nope", Some(json!({"rpm": 1}))).await.status.as_u16(), 404);

    // Now that a tenant exists, requests without a key are refused.
    let r = c.chat(&chat_body()).await.unwrap();
    assert_eq!(r.status.as_u16(), 401, "{}", r.text());

    // A key: the secret once, then only its prefix.
    let r = admin(&c, Method::POST, "/admin/tenants/acme/keys", Some(json!({"name": "ci"}))).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text());
    let key_id = r.json()["id"].as_str().unwrap().to_owned();
    let secret = r.json()["key"].as_str().unwrap().to_owned();
    assert!(key_id.starts_with("key_") && secret.starts_with("sk-") && secret.len() >= 40);
    let keys = admin(&c, Method::GET, "/admin/tenants/acme/keys", None).await;
    let listed = &keys.json()["data"][0];
    assert_eq!(listed["id"], key_id.as_str());
    assert!(listed.get("key").is_none(), "the secret is never listed");
    assert!(secret.starts_with(listed["prefix"].as_str().unwrap()));
    assert_eq!(admin(&c, Method::POST, "/admin/tenants/nope/keys", Some(json!({}))).await.status.as_u16(), 404);

    // Use it.
    let r = chat(&c, &secret).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(chat(&c, "sk-wrong-wrong-wrong").await.status.as_u16(), 401);

    // Revoke: refused within the documented bound (this replica: at once).
    let r = admin(&c, Method::DELETE, &format!("/admin/keys/{key_id}"), None).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.json()["revoked"], true);
    let r = chat(&c, &secret).await;
    assert_eq!(r.status.as_u16(), 401, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert_eq!(admin(&c, Method::DELETE, "/admin/keys/key_missing", None).await.status.as_u16(), 404);

    // Disable the tenant: its other keys stop working too.
    let second = admin(&c, Method::POST, "/admin/tenants/acme/keys", Some(json!({}))).await.json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(chat(&c, &second).await.status.as_u16(), 200);
    let r = admin(&c, Method::DELETE, "/admin/tenants/acme", None).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.json()["disabled"], true);
    let r = chat(&c, &second).await;
    assert_eq!(r.status.as_u16(), 401);
    assert_eq!(r.json()["error"]["code"], "tenant_disabled");
    // Re-enable.
    admin(&c, Method::PATCH, "/admin/tenants/acme", Some(json!({"disabled": false}))).await;
    assert_eq!(chat(&c, &second).await.status.as_u16(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn config_tenants_work_beside_admin_tenants_and_cannot_be_shadowed() {
    let mock = openai_mock().await;
    let gw = GatewayUnderTest::start(&config(&mock, "tenants:\n  - id: cfg\n    api_keys: [\"sk-config-tenant-1\"]\n"))
        .await;
    let c = gw.client();
    assert_eq!(chat(&c, "sk-config-tenant-1").await.status.as_u16(), 200);
    assert_eq!(admin(&c, Method::POST, "/admin/tenants", Some(json!({"id": "cfg"}))).await.status.as_u16(), 409);
    admin(&c, Method::POST, "/admin/tenants", Some(json!({"id": "dyn"}))).await;
    let key = admin(&c, Method::POST, "/admin/tenants/dyn/keys", Some(json!({}))).await.json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(chat(&c, &key).await.status.as_u16(), 200);
    assert_eq!(chat(&c, "sk-config-tenant-1").await.status.as_u16(), 200);
    let list = admin(&c, Method::GET, "/admin/tenants", None).await.json();
    let sources: Vec<(String, String)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t["source"].as_str().unwrap().to_owned()))
        .collect();
    assert!(sources.contains(&("cfg".into(), "config".into())) && sources.contains(&("dyn".into(), "admin".into())));
    gw.shutdown().await;
}

#[tokio::test]
async fn rpm_tpm_budget_and_concurrency_produce_429s_at_the_right_counts() {
    avoid_minute_edge().await;
    let mock = openai_mock().await;
    let pricing_dir = temp_dir("pricing");
    let pricing = pricing_dir.join("pricing.yaml");
    // $1000 per million tokens: one request (300 tokens) costs $0.30.
    std::fs::write(&pricing, "providers:\n  openai:\n    \"gpt-4o-mini*\": { input: \"1000\", output: \"1000\" }\n")
        .unwrap();
    let extra = format!(
        "pricing_file: {}\ntenants:\n  - id: rpm-t\n    api_keys: [\"sk-rpm-tenant-1\"]\n    rpm: 3\n  - id: tpm-t\n    api_keys: [\"sk-tpm-tenant-1\"]\n    tpm: 1000\n  - id: budget-t\n    api_keys: [\"sk-budget-tenant-1\"]\n    monthly_budget_usd: \"1.00\"\n  - id: conc-t\n    api_keys: [\"sk-conc-tenant-1\"]\n    max_concurrent: 1\n",
        pricing.display()
    );
    let gw = GatewayUnderTest::start(&config(&mock, &extra)).await;
    let c = gw.client();

    // RPM 3: three admitted, then 429 `requests`.
    let mut rs = Vec::new();
    for _ in 0..5 {
        rs.push(chat(&c, "sk-rpm-tenant-1").await);
    }
    assert_eq!(statuses(&rs), [200, 200, 200, 429, 429]);
    let remaining: Vec<&str> = rs[..3].iter().map(|r| r.header("x-ratelimit-remaining-requests").unwrap()).collect();
    assert_eq!(remaining, ["2", "1", "0"]);
    assert_eq!(rs[0].header("x-ratelimit-limit-requests"), Some("3"));
    assert!(rs[0].header("x-ratelimit-reset-requests").is_some_and(|v| v.ends_with('s')));
    expect_429(&rs[3], "requests", "rate_limit_exceeded");
    assert_eq!(rs[3].header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(rs[3].header("x-should-retry"), Some("true"));

    // TPM 1000: each request reserves ~23 prompt + 100 max_tokens and settles at 300 used.
    // 0+123, 300+123, 600+123 fit; 900+123 does not.
    let mut rs = Vec::new();
    for _ in 0..4 {
        rs.push(chat(&c, "sk-tpm-tenant-1").await);
    }
    assert_eq!(statuses(&rs), [200, 200, 200, 429]);
    expect_429(&rs[3], "tokens", "rate_limit_exceeded");
    assert_eq!(rs[3].header("x-ratelimit-limit-tokens"), Some("1000"));
    let remaining: u64 = rs[2].header("x-ratelimit-remaining-tokens").unwrap().parse().unwrap();
    assert!((200..=300).contains(&remaining), "remaining tokens after the 3rd admission: {remaining}");

    // Budget $1.00 at $0.30 a request: admitted at a spend of 0, 0.30, 0.60 and 0.90; refused at 1.20.
    let mut rs = Vec::new();
    for _ in 0..6 {
        rs.push(chat(&c, "sk-budget-tenant-1").await);
    }
    assert_eq!(statuses(&rs), [200, 200, 200, 200, 429, 429]);
    expect_429(&rs[4], "insufficient_quota", "insufficient_quota");
    assert_eq!(rs[4].header("x-should-retry"), Some("false"));

    // One concurrent request: a second one while the first waits on a slow upstream is refused.
    mock.enqueue_chat(
        Reply::answer(Answer::text("slow").with_usage(Usage::new(1, 1))).delay(Duration::from_millis(800)),
    )
    .await;
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { chat(&c, "sk-conc-tenant-1").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = chat(&c, "sk-conc-tenant-1").await;
    expect_429(&r, "requests", "rate_limit_exceeded");
    assert_eq!(slow.await.unwrap().status.as_u16(), 200);
    assert_eq!(chat(&c, "sk-conc-tenant-1").await.status.as_u16(), 200, "the slot came back");

    let metrics = c.get("/metrics").await.unwrap().text();
    for (limit, n) in [("requests", 2), ("tokens", 1), ("budget", 2), ("concurrency", 1)] {
        let line = format!("aggregator_rate_limited_total{{limit=\"{limit}\"}} {n}");
        assert!(metrics.contains(&line), "missing `{line}` in\n{metrics}");
    }
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(pricing_dir);
}

fn redis_running() -> bool {
    Command::new("redis-cli").arg("ping").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
}

async fn pg_schema() -> Option<(tokio_postgres::Client, String)> {
    let (client, conn) = tokio_postgres::connect(PG_BASE, tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(conn);
    let schema = unique("acl");
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.ok()?;
    Some((client, schema))
}

/// Two replicas on one Redis and one Postgres: tenants and keys made on one work on the other and
/// survive a restart, one tenant's RPM limit holds across both, a revocation reaches the other replica
/// within the key cache TTL, and the ledger has exactly one row per request.
#[tokio::test]
async fn two_replicas_share_limits_tenants_and_one_ledger() {
    if !redis_running() {
        eprintln!("skipped: no Redis on 127.0.0.1:6379");
        return;
    }
    let Some((pg, schema)) = pg_schema().await else {
        eprintln!("skipped: no Postgres at {PG_BASE}");
        return;
    };
    let mock = openai_mock().await;
    let url = format!("{PG_BASE}?options=-c%20search_path%3D{schema}");
    let env = || MapEnv::from_pairs([("DATABASE_URL", url.as_str()), ("REDIS_URL", "redis://127.0.0.1:6379")]);
    // A generous Redis deadline: this test proves the shared bound, not the fallback (a loaded CI machine
    // must not time out into per-replica counters).
    let yaml = config(
        &mock,
        &format!("limits:\n  key_cache_ttl_ms: 1000\n  redis_timeout_ms: 5000\n  redis_prefix: {schema}\n"),
    );
    let a = GatewayUnderTest::start_with_env(&yaml, env()).await;
    let b = GatewayUnderTest::start_with_env(&yaml, env()).await;
    let (ca, cb) = (a.client(), b.client());

    let r = admin(&ca, Method::POST, "/admin/tenants", Some(json!({"id": "shared", "rpm": 10}))).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text());
    let key = admin(&ca, Method::POST, "/admin/tenants/shared/keys", Some(json!({}))).await.json();
    let (key_id, secret) = (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned());
    // Made on A, listed and usable on B.
    assert!(admin(&cb, Method::GET, "/admin/tenants", None).await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == "shared"));

    // 30 concurrent requests, alternating replicas, against RPM 10.
    avoid_minute_edge().await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let c = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        let secret = secret.clone();
        tasks.push(tokio::spawn(async move { chat(&c, &secret).await }));
    }
    let mut by_status = std::collections::BTreeMap::new();
    for t in tasks {
        let r = t.await.unwrap();
        *by_status.entry(r.status.as_u16()).or_insert(0) += 1;
    }
    assert_eq!(by_status.get(&200), Some(&10), "exactly the limit admitted across both replicas: {by_status:?}");
    assert_eq!(by_status.get(&429), Some(&20), "{by_status:?}");
    let metrics = cb.get("/metrics").await.unwrap().text();
    assert!(metrics.contains("aggregator_limits_redis_up 1"), "{metrics}");

    // Restart A: the tenant and key are still there.
    a.shutdown().await;
    let a2 = GatewayUnderTest::start_with_env(&yaml, env()).await;
    let ca2 = a2.client();
    assert!(
        admin(&ca2, Method::GET, "/admin/tenants/shared/keys", None).await.json()["data"][0]["id"] == key_id.as_str()
    );
    admin(&ca2, Method::PATCH, "/admin/tenants/shared", Some(json!({"rpm": null}))).await;
    // Let B's cached tenant (still RPM 10, window full) expire.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Revoke on A; B (which has the key cached) refuses it within the TTL (1 s) plus slack.
    let started = Instant::now();
    assert_eq!(admin(&ca2, Method::DELETE, &format!("/admin/keys/{key_id}"), None).await.status.as_u16(), 200);
    let mut served_meanwhile = 0;
    loop {
        let r = chat(&cb, &secret).await;
        match r.status.as_u16() {
            401 => break,
            200 => served_meanwhile += 1,
            other => panic!("unexpected {other}: {}", r.text()),
        }
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "revocation not seen by replica B after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() <= Duration::from_millis(1500), "{:?}", started.elapsed());
    a2.shutdown().await;
    b.shutdown().await;

    // One consistent ledger: one row per request, no duplicates, the admitted ones priced with usage.
    let rows = pg
        .query(
            &format!(
                "SELECT status, http_status, prompt_tokens, completion_tokens, request_id FROM {schema}.ledger_records \
                 WHERE tenant = 'shared'"
            ),
            &[],
        )
        .await
        .unwrap();
    let ids: std::collections::HashSet<String> = rows.iter().map(|r| r.get::<_, String>(4)).collect();
    assert_eq!(ids.len(), rows.len(), "request ids are unique");
    let ok = rows.iter().filter(|r| r.get::<_, String>(0) == "ok").count();
    let limited = rows.iter().filter(|r| r.get::<_, i32>(1) == 429).count();
    assert_eq!(limited, 20, "every refused request has its row");
    assert_eq!(ok, 10 + served_meanwhile, "the admitted requests, and those B served until the revocation reached it");
    assert_eq!(rows.len(), 30 + served_meanwhile);
    assert!(rows
        .iter()
        .filter(|r| r.get::<_, String>(0) == "ok")
        .all(|r| r.get::<_, i64>(2) == 200 && r.get::<_, i64>(3) == 100));
    pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}

/// A Redis on a port of our own, killed mid-test.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    fn start() -> Option<Self> {
        let port = StdListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let dir = temp_dir("redis");
        let ok = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--pidfile")
            .arg(dir.join("redis.pid"))
            .status()
            .ok()?
            .success();
        ok.then_some(OwnRedis { port, dir })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) -> bool {
        for _ in 0..50 {
            let out = Command::new("redis-cli").args(["-p", &self.port.to_string(), "ping"]).output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG")) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn stop(&self) {
        let _ = Command::new("redis-cli").args(["-p", &self.port.to_string(), "shutdown", "nosave"]).output();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn redis_stopped_mid_test_requests_are_still_served() {
    let Some(redis) = OwnRedis::start() else {
        eprintln!("skipped: cannot start redis-server");
        return;
    };
    assert!(redis.wait_ready().await, "own redis-server did not start");
    let mock = openai_mock().await;
    let yaml = config(
        &mock,
        "tenants:\n  - id: r\n    api_keys: [\"sk-redis-tenant-1\"]\n    rpm: 1000\n    tpm: 1000000\nlimits:\n  redis_timeout_ms: 200\n",
    );
    let url = redis.url();
    let gw = GatewayUnderTest::start_with_env(&yaml, MapEnv::from_pairs([("REDIS_URL", url.as_str())])).await;
    let c = gw.client();
    for _ in 0..3 {
        let r = chat(&c, "sk-redis-tenant-1").await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    }
    assert!(c.get("/metrics").await.unwrap().text().contains("aggregator_limits_redis_up 1"));

    redis.stop();
    let started = Instant::now();
    for _ in 0..5 {
        let r = chat(&c, "sk-redis-tenant-1").await;
        assert_eq!(r.status.as_u16(), 200, "served without Redis: {}", r.text());
        assert!(r.header("x-ratelimit-remaining-requests").is_some(), "local limits still apply");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "falling back is quick: {:?}", started.elapsed());
    let metrics = c.get("/metrics").await.unwrap().text();
    assert!(metrics.contains("aggregator_limits_redis_up 0"), "{metrics}");
    gw.shutdown().await;
}
