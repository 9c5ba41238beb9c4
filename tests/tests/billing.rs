//! Billing integrity (issue 11, items 1, 2 and 4), over loopback with the mock upstreams, on the
//! embedded SQLite ledger and on this machine's Postgres (and Redis for the two-replica case):
//!
//! - item 1: the ledger's identity is a server-generated record id, so a reused `x-request-id`
//!   (by one tenant, or by another tenant) never merges or un-bills requests;
//! - item 2: streams still open when the shutdown grace period ends get an in-band error event and
//!   their records reach the ledger before the writer drains;
//! - item 4: monthly budgets (tenant and key) are computed from the ledger at start and shared by
//!   replicas, so a restart or a second replica does not hand out a fresh budget.
//!
//! Postgres and Redis cases skip (with a message) when the service is not running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gateway::{Config, MapEnv};
use http::Method;
use integration_tests::client::{TestClient, TestResponse};
use integration_tests::harness::{temp_dir, ConfigBuilder};
use integration_tests::mock::{Answer, Ending, Flavor, MockUpstream, Reply, Usage};
use integration_tests::summary::StreamSummary;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432/test";
const ADMIN: &str = "admin-key-billing-0123456789";
const ACME_KEY: &str = "sk-acme-billing-1";
const GLOBEX_KEY: &str = "sk-globex-billing-1";
const BUDGET_KEY: &str = "sk-budget-billing-1";

/// A gateway on a data directory (and environment) the test owns, so it can be restarted on the
/// same ledger.
struct Gw {
    addr: SocketAddr,
    token: CancellationToken,
    task: Option<JoinHandle<Result<(), gateway::StartError>>>,
}

impl Gw {
    async fn start(yaml: &str, data_dir: &Path, mut env: MapEnv) -> Self {
        env.0.insert("DATA_DIR".to_owned(), data_dir.display().to_string());
        let config = Config::from_yaml_str(yaml, &env).unwrap_or_else(|e| panic!("config rejected: {e}\n{yaml}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn(gateway::serve(config, listener, token.clone()));
        Gw { addr, token, task: Some(task) }
    }

    fn client(&self) -> TestClient {
        TestClient::new(&format!("http://{}", self.addr))
    }

    /// Cancels the shutdown token and waits for `serve` to return (ledger drained).
    async fn stop(mut self) {
        self.token.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("serve returns within 30 s")
            .expect("serve did not panic")
            .expect("serve succeeded");
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A fresh Postgres schema (the ledger and tenant store go there through `search_path`).
struct PgSchema {
    name: String,
    client: tokio_postgres::Client,
}

impl PgSchema {
    async fn create(tag: &str) -> Option<Self> {
        let (client, conn) = tokio_postgres::connect(PG_BASE, tokio_postgres::NoTls).await.ok()?;
        tokio::spawn(conn);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("billing_{tag}_{}_{nanos}", std::process::id());
        client.batch_execute(&format!("CREATE SCHEMA {name}")).await.ok()?;
        Some(Self { name, client })
    }

    fn url(&self) -> String {
        format!("{PG_BASE}?options=-c%20search_path%3D{}", self.name)
    }

    fn env(&self) -> MapEnv {
        MapEnv::from_pairs([("DATABASE_URL", self.url().as_str())])
    }

    async fn drop_schema(self) {
        let _ = self.client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name)).await;
    }
}

/// One ledger row as these tests check it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    record_id: String,
    request_id: String,
    tenant: String,
    status: String,
    completion_tokens: i64,
    http_status: i64,
}

const ROWS_SQL: &str = "SELECT record_id, request_id, tenant, status, completion_tokens, \
     CAST(http_status AS BIGINT) FROM ledger_records ORDER BY ts_unix_ms, record_id";

fn sqlite_rows(data_dir: &Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(data_dir.join("ledger.sqlite3")).unwrap();
    let mut stmt = conn.prepare(ROWS_SQL).unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok(Row {
                record_id: r.get(0)?,
                request_id: r.get(1)?,
                tenant: r.get(2)?,
                status: r.get(3)?,
                completion_tokens: r.get(4)?,
                http_status: r.get(5)?,
            })
        })
        .unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

async fn pg_rows(pg: &PgSchema) -> Vec<Row> {
    let sql = ROWS_SQL.replace("FROM ledger_records", &format!("FROM {}.ledger_records", pg.name));
    pg.client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| Row {
            record_id: r.get(0),
            request_id: r.get(1),
            tenant: r.get(2),
            status: r.get(3),
            completion_tokens: r.get(4),
            http_status: r.get(5),
        })
        .collect()
}

/// Where a test's ledger lives.
enum Store {
    Sqlite,
    Postgres(PgSchema),
}

impl Store {
    /// `None` (and a message) when Postgres is wanted but not running.
    async fn new(postgres: bool, tag: &str) -> Option<Self> {
        if !postgres {
            return Some(Store::Sqlite);
        }
        match PgSchema::create(tag).await {
            Some(pg) => Some(Store::Postgres(pg)),
            None => {
                eprintln!("skipped: no Postgres at {PG_BASE}");
                None
            }
        }
    }

    fn env(&self) -> MapEnv {
        match self {
            Store::Sqlite => MapEnv::default(),
            Store::Postgres(pg) => pg.env(),
        }
    }

    async fn rows(&self, data_dir: &Path) -> Vec<Row> {
        match self {
            Store::Sqlite => sqlite_rows(data_dir),
            Store::Postgres(pg) => pg_rows(pg).await,
        }
    }

    async fn finish(self, data_dir: PathBuf) {
        if let Store::Postgres(pg) = self {
            pg.drop_schema().await;
        }
        let _ = std::fs::remove_dir_all(data_dir);
    }
}

/// An OpenAI mock whose every answer reports 200 prompt + 100 completion tokens.
async fn openai_mock() -> MockUpstream {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    mock.always(Flavor::OpenAi.chat_path(), Reply::answer(Answer::text("hello").with_usage(Usage::new(200, 100))))
        .await;
    mock
}

/// $1000 per million tokens for `gpt-4o-mini*`: one mock answer (300 tokens) costs $0.30.
fn pricing_file(dir: &Path) -> PathBuf {
    let path = dir.join("pricing.yaml");
    std::fs::write(&path, "providers:\n  openai:\n    \"gpt-4o-mini*\": { input: \"1000\", output: \"1000\" }\n")
        .unwrap();
    path
}

fn chat_body() -> Value {
    json!({"model": "openai/gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
}

async fn chat_as(c: &TestClient, key: &str, request_id: Option<&str>) -> TestResponse {
    let auth = format!("Bearer {key}");
    let mut headers = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
    if let Some(id) = request_id {
        headers.push(("x-request-id", id));
    }
    c.raw(Method::POST, "/v1/chat/completions", &headers, chat_body().to_string()).await.unwrap()
}

async fn admin(c: &TestClient, method: Method, path: &str, body: Option<Value>) -> TestResponse {
    let auth = format!("Bearer {ADMIN}");
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    c.raw(method, path, &headers, body.map(|b| b.to_string()).unwrap_or_default()).await.unwrap()
}

/// `/v1/usage` request count of the key's tenant, once it reaches `want` (records are written
/// asynchronously) or after 10 s.
async fn usage_requests(c: &TestClient, key: &str, want: u64) -> u64 {
    let auth = format!("Bearer {key}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.raw(Method::GET, "/v1/usage", &[("authorization", auth.as_str())], "").await.unwrap();
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
        let n = r.json()["data"][0]["requests"].as_u64().unwrap_or(0);
        if n >= want || tokio::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn statuses(rs: &[TestResponse]) -> Vec<u16> {
    rs.iter().map(|r| r.status.as_u16()).collect()
}

fn expect_insufficient_quota(r: &TestResponse, what: &str) {
    assert_eq!(r.status.as_u16(), 429, "{what}: {}", r.text());
    assert_eq!(r.json()["error"]["code"], "insufficient_quota", "{what}: {}", r.text());
}

// -------------------------------------------------------------------------------------------------
// Item 1: the record id, not the client's x-request-id, is the ledger's identity.

/// Issue 11, item 1: five answered requests with one `x-request-id` are five ledger rows (and five
/// in `/v1/usage`); another tenant reusing that id is billed too and leaves the first tenant's
/// rows alone. The client's id is still echoed and kept for correlation.
async fn reused_request_id_is_billed_every_time(postgres: bool) {
    let Some(store) = Store::new(postgres, "reuse").await else { return };
    let mock = openai_mock().await;
    let data_dir = temp_dir("billing-reuse");
    let yaml = ConfigBuilder::new()
        .provider("openai", &mock)
        .extra(&format!(
            "tenants:\n  - id: acme\n    api_keys: [\"{ACME_KEY}\"]\n  - id: globex\n    api_keys: [\"{GLOBEX_KEY}\"]\n"
        ))
        .build();
    let gw = Gw::start(&yaml, &data_dir, store.env()).await;
    let c = gw.client();
    for _ in 0..5 {
        let r = chat_as(&c, ACME_KEY, Some("dup-request-1")).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
        assert_eq!(r.header("x-request-id"), Some("dup-request-1"), "the client's id is still echoed");
    }
    assert_eq!(usage_requests(&c, ACME_KEY, 5).await, 5, "every request counts in /v1/usage");
    // Tenant B reuses A's id (after A's rows are committed, the case that used to un-bill B).
    for _ in 0..2 {
        assert_eq!(chat_as(&c, GLOBEX_KEY, Some("dup-request-1")).await.status.as_u16(), 200);
    }
    assert_eq!(usage_requests(&c, GLOBEX_KEY, 2).await, 2, "tenant B is billed for its requests");
    assert_eq!(usage_requests(&c, ACME_KEY, 5).await, 5, "tenant A keeps all of its rows");
    gw.stop().await;

    let rows = store.rows(&data_dir).await;
    assert_eq!(rows.len(), 7, "{rows:#?}");
    assert!(rows.iter().all(|r| r.request_id == "dup-request-1"), "correlation id kept: {rows:#?}");
    let ids: HashSet<&str> = rows.iter().map(|r| r.record_id.as_str()).collect();
    assert_eq!(ids.len(), 7, "one record id per request");
    assert!(rows.iter().all(|r| r.record_id.starts_with("rec_") && r.record_id.len() == 36), "{rows:#?}");
    let by_tenant = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.tenant.as_str()).or_insert(0) += 1;
        m
    });
    assert_eq!(by_tenant, BTreeMap::from([("acme", 5), ("globex", 2)]));
    store.finish(data_dir).await;
}

#[tokio::test]
async fn reused_request_id_is_billed_every_time_sqlite() {
    reused_request_id_is_billed_every_time(false).await;
}

#[tokio::test]
async fn reused_request_id_is_billed_every_time_postgres() {
    reused_request_id_is_billed_every_time(true).await;
}

// -------------------------------------------------------------------------------------------------
// Item 2: streams cut by shutdown are recorded and end with an error event.

/// Issue 11, item 2: with `shutdown_grace_secs: 1`, four streams held open by a stalled upstream
/// and one non-streamed request still waiting for its answer: after the shutdown token is
/// cancelled, every stream ends with one OpenAI-shaped error event (no `[DONE]`), the waiting
/// request is answered 503, and the ledger holds five records (streams `partial` with the tokens
/// so far, the waiting request `cancelled`).
async fn streams_cut_by_shutdown(h2c: bool) {
    const STREAMS: usize = 4;
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    let pieces = ["one ", "two ", "three ", "four ", "five ", "six "];
    for _ in 0..STREAMS {
        mock.enqueue_chat(Reply::answer(Answer::text_pieces(&pieces)).ending(Ending::StallAfter(3))).await;
    }
    let data_dir = temp_dir("billing-cut");
    let yaml = ConfigBuilder::new().provider("openai", &mock).extra("shutdown_grace_secs: 1\n").build();
    let gw = Gw::start(&yaml, &data_dir, MapEnv::default()).await;
    let c = if h2c { TestClient::h2c(&format!("http://{}", gw.addr)) } else { gw.client() };
    let body = json!({"model": "openai/gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let mut readers = Vec::new();
    for i in 0..STREAMS {
        let id = format!("cut-stream-{i}");
        let mut s = c.stream("/v1/chat/completions", &[("x-request-id", id.as_str())], &body).await.unwrap();
        assert_eq!(s.status.as_u16(), 200);
        let first = s.next_event().await.unwrap().expect("a first event");
        readers.push(tokio::spawn(async move {
            let mut events = vec![first];
            events.extend(s.collect().await.expect("the stream ends instead of hanging"));
            (events, s.end().cloned())
        }));
    }
    // A non-streamed request whose upstream answers long after the grace period.
    mock.enqueue_chat(Reply::answer(Answer::text("late")).delay(Duration::from_secs(30))).await;
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move {
            let body = json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
            c.raw(
                Method::POST,
                "/v1/chat/completions",
                &[("content-type", "application/json"), ("x-request-id", "cut-waiting")],
                body.to_string(),
            )
            .await
        })
    };
    // Wait until the waiting request has reached the upstream (so it went through the meter).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mock.calls(Flavor::OpenAi.chat_path()).await < STREAMS + 1 {
        assert!(tokio::time::Instant::now() < deadline, "the waiting request never reached the mock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    gw.stop().await;

    for (i, reader) in readers.into_iter().enumerate() {
        let (events, end) = reader.await.unwrap();
        let sum = StreamSummary::from_events(&events);
        assert_eq!(sum.errors.len(), 1, "stream {i}: one error event: {events:?}");
        assert_eq!(sum.errors[0]["error"]["code"], "gateway_shutdown", "stream {i}: {:?}", sum.errors);
        assert_eq!(sum.errors[0]["error"]["type"], "server_error");
        assert!(sum.errors[0]["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(sum.done_count, 0, "stream {i}: no [DONE] after a cut");
        assert_eq!(sum.events_after_error, 0, "stream {i}: the error event is the last");
        assert!(sum.text.starts_with("one "), "stream {i}: text so far: {:?}", sum.text);
        assert_eq!(end, Some(integration_tests::client::StreamEnd::Eof), "stream {i}: a clean end, not a reset");
    }
    // The waiting request is answered 503 in OpenAI's error shape instead of a cut connection.
    let w = waiting.await.unwrap().expect("an answer, not a cut connection");
    assert_eq!(w.status.as_u16(), 503, "{}", w.text());
    assert_eq!(w.json()["error"]["code"], "shutting_down", "{}", w.text());

    let rows = sqlite_rows(&data_dir);
    assert_eq!(rows.len(), STREAMS + 1, "every request that reached the meter is recorded: {rows:#?}");
    for i in 0..STREAMS {
        let id = format!("cut-stream-{i}");
        let r = rows.iter().find(|r| r.request_id == id).unwrap_or_else(|| panic!("no record for {id}: {rows:#?}"));
        assert_eq!((r.status.as_str(), r.http_status), ("partial", 200), "{r:?}");
        assert!(r.completion_tokens > 0, "the tokens streamed so far are billed: {r:?}");
    }
    let w = rows.iter().find(|r| r.request_id == "cut-waiting").expect("the waiting request's record");
    assert_eq!((w.status.as_str(), w.http_status), ("cancelled", 503), "{w:?}");
    let _ = std::fs::remove_dir_all(data_dir);
}

/// Issue 11, item 2, over HTTP/1.1.
#[tokio::test]
async fn streams_cut_by_shutdown_are_recorded_and_end_with_an_error_event() {
    streams_cut_by_shutdown(false).await;
}

/// Issue 11, item 2, over HTTP/2 (h2c): the streams are polled by hyper's per-stream tasks, which
/// shutdown must also wait for.
#[tokio::test]
async fn streams_cut_by_shutdown_over_h2c_are_recorded_and_end_with_an_error_event() {
    streams_cut_by_shutdown(true).await;
}

// -------------------------------------------------------------------------------------------------
// Item 4: budgets come from the ledger at start and are shared by replicas.

fn budget_yaml(mock: &MockUpstream, pricing: &Path, extra: &str) -> String {
    ConfigBuilder::new()
        .provider("openai", mock)
        .extra(&format!(
            "admin_api_key: {ADMIN}\npricing_file: {}\ntenants:\n  - id: budget-t\n    api_keys: [\"{BUDGET_KEY}\"]\n    \
             monthly_budget_usd: \"1.00\"\n{extra}",
            pricing.display()
        ))
        .build()
}

/// Issue 11, item 4: a $1.00 tenant budget at $0.30 a request admits four requests (at a spend of
/// 0, 0.30, 0.60, 0.90); after a restart on the same ledger the next request is refused with 429
/// `insufficient_quota`. Same for a key budget ($0.50: two requests) on an admin-made key of an
/// unlimited tenant.
async fn budget_survives_a_restart(postgres: bool) {
    let Some(store) = Store::new(postgres, "budget").await else { return };
    let mock = openai_mock().await;
    let data_dir = temp_dir("billing-budget");
    let pricing = pricing_file(&data_dir);
    let yaml = budget_yaml(&mock, &pricing, "");

    let gw = Gw::start(&yaml, &data_dir, store.env()).await;
    let c = gw.client();
    let mut rs = Vec::new();
    for _ in 0..5 {
        rs.push(chat_as(&c, BUDGET_KEY, None).await);
    }
    assert_eq!(statuses(&rs), [200, 200, 200, 200, 429], "{}", rs[4].text());
    let r = admin(&c, Method::POST, "/admin/tenants", Some(json!({"id": "keyed"}))).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text());
    let r = admin(&c, Method::POST, "/admin/tenants/keyed/keys", Some(json!({"monthly_budget_usd": "0.50"}))).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_owned();
    let mut rs = Vec::new();
    for _ in 0..3 {
        rs.push(chat_as(&c, &key, None).await);
    }
    assert_eq!(statuses(&rs), [200, 200, 429], "key budget before the restart: {}", rs[2].text());
    gw.stop().await;

    let gw = Gw::start(&yaml, &data_dir, store.env()).await;
    let c = gw.client();
    expect_insufficient_quota(&chat_as(&c, BUDGET_KEY, None).await, "tenant budget after a restart");
    expect_insufficient_quota(&chat_as(&c, &key, None).await, "key budget after a restart");
    gw.stop().await;
    assert_eq!(mock.calls(Flavor::OpenAi.chat_path()).await, 6, "no request reached the upstream after the restart");
    store.finish(data_dir).await;
}

#[tokio::test]
async fn budget_survives_a_restart_sqlite() {
    budget_survives_a_restart(false).await;
}

#[tokio::test]
async fn budget_survives_a_restart_postgres() {
    budget_survives_a_restart(true).await;
}

fn redis_running() -> bool {
    Command::new("redis-cli").arg("ping").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
}

fn redis_cleanup(prefix: &str) {
    let keys = Command::new("redis-cli").args(["--scan", "--pattern", &format!("{prefix}:*")]).output();
    if let Ok(out) = keys {
        for key in String::from_utf8_lossy(&out.stdout).lines().filter(|k| !k.is_empty()) {
            let _ = Command::new("redis-cli").args(["del", key]).output();
        }
    }
}

/// Issue 11, item 4: two replicas on one Redis and one Postgres share a tenant budget ($1.00 at
/// $0.30 a request: four admitted in all, alternating replicas); after Redis lost the counter
/// (flush, failover), the replica that kept running and a restarted one both still refuse with 429
/// `insufficient_quota` (the counter is re-seeded from the ledger, not restarted at zero).
#[tokio::test]
async fn budget_is_shared_by_two_replicas() {
    if !redis_running() {
        eprintln!("skipped: no Redis on 127.0.0.1:6379");
        return;
    }
    let Some(store) = Store::new(true, "replicas").await else { return };
    let Store::Postgres(pg) = &store else { unreachable!() };
    let mock = openai_mock().await;
    let (dir_a, dir_b) = (temp_dir("billing-ra"), temp_dir("billing-rb"));
    let pricing = pricing_file(&dir_a);
    let prefix = pg.name.clone();
    let yaml = budget_yaml(&mock, &pricing, &format!("limits:\n  redis_timeout_ms: 5000\n  redis_prefix: {prefix}\n"));
    let env = || {
        let mut env = pg.env();
        env.0.insert("REDIS_URL".to_owned(), "redis://127.0.0.1:6379".to_owned());
        env
    };
    let a = Gw::start(&yaml, &dir_a, env()).await;
    let b = Gw::start(&yaml, &dir_b, env()).await;
    let (ca, cb) = (a.client(), b.client());
    let mut rs = Vec::new();
    for i in 0..6 {
        rs.push(chat_as(if i % 2 == 0 { &ca } else { &cb }, BUDGET_KEY, None).await);
    }
    assert_eq!(statuses(&rs), [200, 200, 200, 200, 429, 429], "one budget across both replicas");
    b.stop().await;
    // Redis loses the counter (flush, failover): a restarted replica seeds it from the ledger, once
    // the running replica's records are committed (within its batch interval).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let count = format!("SELECT COUNT(*) FROM {}.ledger_records", pg.name);
    while pg.client.query_one(&count, &[]).await.unwrap().get::<_, i64>(0) < 6 {
        assert!(tokio::time::Instant::now() < deadline, "replica A's records never reached the ledger");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis_cleanup(&prefix);
    expect_insufficient_quota(&chat_as(&ca, BUDGET_KEY, None).await, "the replica that kept running");
    let b = Gw::start(&yaml, &dir_b, env()).await;
    expect_insufficient_quota(&chat_as(&b.client(), BUDGET_KEY, None).await, "restarted replica");
    a.stop().await;
    b.stop().await;
    assert_eq!(mock.calls(Flavor::OpenAi.chat_path()).await, 4);
    redis_cleanup(&prefix);
    let _ = std::fs::remove_dir_all(dir_b);
    store.finish(dir_a).await;
}
