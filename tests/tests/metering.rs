//! Issue 3: every request is exactly one ledger record with the provider's own token counts and the
//! right cost, on the embedded store and on the real Postgres; tenants only see their own usage; pricing
//! reloads without a restart and keeps the old prices on a broken edit.

use std::collections::HashMap;
use std::time::Duration;

use http::Method;
use integration_tests::harness::{temp_dir, ConfigBuilder, GatewayUnderTest};
use integration_tests::mock::{Answer, Ending, Flavor, MockUpstream, Reply, ToolCall, Usage};
use serde_json::{json, Value};

const ACME_KEY: &str = "sk-acme-metering-1";
const GLOBEX_KEY: &str = "sk-globex-metering-1";
const ADMIN_KEY: &str = "admin-key-metering-0123456789";

/// Prices chosen so every cost is an exact integer number of nano-USD.
const PRICING: &str = r#"
providers:
  openai:
    "gpt-4o-mini*": { input: "1.00", output: "2.00", cached_input: "0.50" }
  anthropic:
    "claude-sonnet-4-5*": { input: "3.00", output: "15.00", cached_input: "0.30", cache_write: "3.75" }
"#;

fn tenants_yaml(pricing_path: &std::path::Path, database_url: Option<&str>) -> String {
    let mut s = format!(
        "tenants:\n  - id: acme\n    api_keys: [\"{ACME_KEY}\"]\n  - id: globex\n    api_keys: [\"{GLOBEX_KEY}\"]\n\
         admin_api_key: {ADMIN_KEY}\npricing_file: {}\n",
        pricing_path.display()
    );
    if let Some(url) = database_url {
        s.push_str(&format!("ledger:\n  database_url: \"{url}\"\n  data_dir: ${{DATA_DIR}}\n"));
    }
    s
}

struct Stack3 {
    openai: MockUpstream,
    anthropic: MockUpstream,
    ollama: MockUpstream,
    gateway: GatewayUnderTest,
}

async fn start(database_url: Option<&str>) -> Stack3 {
    let openai = MockUpstream::start(Flavor::OpenAi).await;
    let anthropic = MockUpstream::start(Flavor::Anthropic).await;
    let ollama = MockUpstream::start(Flavor::Ollama).await;
    let dir = temp_dir("pricing");
    let pricing = dir.join("pricing.yaml");
    std::fs::write(&pricing, PRICING).unwrap();
    let mut yaml = ConfigBuilder::new()
        .provider("openai", &openai)
        .provider("anthropic", &anthropic)
        .provider("ollama", &ollama)
        .extra(&tenants_yaml(&pricing, database_url))
        .build();
    if database_url.is_some() {
        // The builder's default ledger section is replaced by the one with the database URL.
        yaml = yaml.replacen("ledger:\n  data_dir: ${DATA_DIR}\n", "", 1);
    }
    let gateway = GatewayUnderTest::start(&yaml).await;
    Stack3 { openai, anthropic, ollama, gateway }
}

/// What the ledger must hold for one request.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    status: &'static str,
    tenant: &'static str,
    provider: &'static str,
    prompt: Option<u64>,
    completion: Option<u64>,
    cached: u64,
    cache_write: u64,
    estimated: bool,
    cost_nano: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    status: String,
    tenant: String,
    provider: String,
    prompt: u64,
    completion: u64,
    cached: u64,
    cache_write: u64,
    estimated: bool,
    cost_nano: i64,
}

fn chat(model: &str, stream: bool) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "Count the tokens, please."}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// Drives a mixed workload and returns the expected record per request id.
async fn workload(s: &Stack3) -> HashMap<String, Expected> {
    let client = s.gateway.client();
    let mut expected = HashMap::new();
    let mut n = 0u32;
    let mut next_id = |tag: &str| {
        n += 1;
        format!("req-metering-{tag}-{n}")
    };
    let providers: [(&MockUpstream, &str, &str); 3] = [
        (&s.openai, "openai", "gpt-4o-mini"),
        (&s.anthropic, "anthropic", "anthropic/claude-sonnet-4-5"),
        (&s.ollama, "ollama", "ollama/llama3.2"),
    ];
    for (i, (mock, provider, model)) in providers.iter().enumerate() {
        let i = i as u64;
        // Non-streamed and streamed, exact counts (Anthropic with cache reads and writes).
        for stream in [false, true] {
            let mut usage = Usage::new(20 + i, 7 + i);
            if *provider == "anthropic" {
                usage.cache_read = 100;
                usage.cache_creation = 40;
            }
            mock.enqueue_chat(Reply::answer(Answer::text_pieces(&["Hello", " there", "!"]).with_usage(usage))).await;
            let id = next_id(provider);
            let (tenant, key) = if stream { ("globex", GLOBEX_KEY) } else { ("acme", ACME_KEY) };
            let auth = format!("Bearer {key}");
            if stream {
                let mut st = client
                    .stream(
                        "/v1/chat/completions",
                        &[("authorization", &auth), ("x-request-id", &id)],
                        &chat(model, true),
                    )
                    .await
                    .unwrap();
                let events = st.collect().await.unwrap();
                assert!(events.last().unwrap().is_done(), "{provider} stream must end with [DONE]");
            } else {
                let resp = client
                    .raw(
                        Method::POST,
                        "/v1/chat/completions",
                        &[("authorization", &auth), ("x-request-id", &id), ("content-type", "application/json")],
                        chat(model, false).to_string(),
                    )
                    .await
                    .unwrap();
                assert_eq!(resp.status, 200, "{}", resp.text());
                assert!(resp.header("x-aggregator-cost-usd").is_some());
            }
            let prompt = usage.input + usage.cache_read + usage.cache_creation;
            let cost = match *provider {
                // (uncached × input + cached × cached price + writes × write price + out × output) / 1000
                "openai" => Some(((prompt * 1_000_000 + usage.output * 2_000_000) / 1000) as i64),
                "anthropic" => Some(
                    ((usage.input * 3_000_000 + 100 * 300_000 + 40 * 3_750_000 + usage.output * 15_000_000) / 1000)
                        as i64,
                ),
                _ => Some(0),
            };
            expected.insert(
                id,
                Expected {
                    status: "ok",
                    tenant,
                    provider,
                    prompt: Some(prompt),
                    completion: Some(usage.output),
                    cached: usage.cache_read,
                    cache_write: usage.cache_creation,
                    estimated: false,
                    cost_nano: cost,
                },
            );
        }
        // Cut by the upstream mid-stream: a partial record, counted from what streamed (estimated).
        mock.enqueue_chat(
            Reply::answer(
                Answer::text_pieces(&["one ", "two ", "three ", "four ", "five"]).with_usage(Usage::new(30, 9)),
            )
            .ending(Ending::DisconnectAfter(3)),
        )
        .await;
        let id = next_id("cut");
        let auth = format!("Bearer {ACME_KEY}");
        let mut st = client
            .stream("/v1/chat/completions", &[("authorization", &auth), ("x-request-id", &id)], &chat(model, true))
            .await
            .unwrap();
        let events = st.collect().await.unwrap_or_default();
        assert!(!events.iter().any(|e| e.is_done()), "a cut stream must not end with [DONE]");
        expected.insert(
            id,
            Expected {
                status: "partial",
                tenant: "acme",
                provider,
                prompt: None,
                completion: None,
                cached: 0,
                cache_write: 0,
                estimated: true,
                cost_nano: None,
            },
        );
        // Cancelled by the client after the first events.
        mock.enqueue_chat(
            Reply::answer(Answer::text_pieces(&["slow ", "slow ", "slow ", "slow ", "slow ", "slow"]))
                .gap(Duration::from_millis(150)),
        )
        .await;
        let id = next_id("cancel");
        let mut st = client
            .stream("/v1/chat/completions", &[("authorization", &auth), ("x-request-id", &id)], &chat(model, true))
            .await
            .unwrap();
        let mut got_text = false;
        while let Ok(Some(ev)) = st.next_event_within(Duration::from_secs(5)).await {
            if ev.json()["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty()) {
                got_text = true;
                break;
            }
        }
        assert!(got_text, "{provider}: the cancelled stream should have produced text first");
        drop(st);
        assert!(
            mock.wait_peer_closed(Duration::from_secs(3)).await.is_some(),
            "{provider}: upstream not closed on cancel"
        );
        expected.insert(
            id,
            Expected {
                status: "cancelled",
                tenant: "acme",
                provider,
                prompt: None,
                completion: None,
                cached: 0,
                cache_write: 0,
                estimated: true,
                cost_nano: None,
            },
        );
    }
    // A client error is one record too (no upstream attempt). `n: 3` is what Anthropic cannot do (an empty
    // `messages` is now refused before routing, issue 11 item 15, and that record has no provider).
    let id = next_id("bad");
    let resp = client
        .raw(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {ACME_KEY}")), ("x-request-id", &id)],
            r#"{"model":"anthropic/claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}],"n":3}"#,
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    expected.insert(
        id,
        Expected {
            status: "client_error",
            tenant: "acme",
            provider: "anthropic",
            prompt: Some(0),
            completion: Some(0),
            cached: 0,
            cache_write: 0,
            estimated: false,
            cost_nano: Some(0),
        },
    );
    expected
}

fn check(expected: &HashMap<String, Expected>, rows: &HashMap<String, Row>) {
    assert_eq!(rows.len(), expected.len(), "exactly one record per request: {rows:#?}");
    for (id, e) in expected {
        let r = rows.get(id).unwrap_or_else(|| panic!("no ledger record for {id}"));
        assert_eq!(r.status, e.status, "{id}");
        assert_eq!(r.tenant, e.tenant, "{id}");
        assert_eq!(r.provider, e.provider, "{id}");
        assert_eq!(r.estimated, e.estimated, "{id}");
        assert_eq!(r.cached, e.cached, "{id}");
        assert_eq!(r.cache_write, e.cache_write, "{id}");
        match (e.prompt, e.completion, e.cost_nano) {
            (Some(p), Some(c), Some(cost)) => {
                assert_eq!((r.prompt, r.completion, r.cost_nano), (p, c, cost), "{id}");
            }
            _ => {
                // Cut or cancelled: what streamed is still counted, never zero.
                assert!(r.completion > 0, "{id}: streamed tokens must be counted, got {r:?}");
                assert!(r.prompt > 0, "{id}: prompt must be counted or estimated, got {r:?}");
            }
        }
    }
}

async fn wait_for<F: Fn() -> usize>(want: usize, count: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count() < want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sqlite_rows(path: &std::path::Path) -> HashMap<String, Row> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT request_id, status, tenant, provider, prompt_tokens, completion_tokens, cached_tokens, \
             cache_write_tokens, usage_estimated, cost_nano_usd FROM ledger_records",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Row {
                status: r.get(1)?,
                tenant: r.get(2)?,
                provider: r.get(3)?,
                prompt: r.get::<_, i64>(4)? as u64,
                completion: r.get::<_, i64>(5)? as u64,
                cached: r.get::<_, i64>(6)? as u64,
                cache_write: r.get::<_, i64>(7)? as u64,
                estimated: r.get::<_, i64>(8)? != 0,
                cost_nano: r.get(9)?,
            },
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test]
async fn every_request_is_exactly_one_record_embedded_store() {
    let s = start(None).await;
    let expected = workload(&s).await;
    let db = s.gateway.data_dir.join("ledger.sqlite3");
    wait_for(expected.len(), || if db.exists() { sqlite_rows(&db).len() } else { 0 }).await;
    check(&expected, &sqlite_rows(&db));
    // The usage API agrees with the rows.
    let admin = s
        .gateway
        .client()
        .raw(Method::GET, "/admin/usage?group_by=tenant", &[("authorization", &format!("Bearer {ADMIN_KEY}"))], "")
        .await
        .unwrap();
    assert_eq!(admin.status, 200, "{}", admin.text());
    let total: u64 = admin.json()["data"].as_array().unwrap().iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, expected.len());
    s.gateway.shutdown().await;
}

struct PgSchema {
    name: String,
}

impl PgSchema {
    async fn create() -> Self {
        let name = format!("it_metering_{}_{}", std::process::id(), fastrand_suffix());
        let (client, conn) =
            tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", tokio_postgres::NoTls)
                .await
                .expect("Postgres must be running on 127.0.0.1:5432 (scripts/test starts it)");
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
        PgSchema { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{}", self.name)
    }

    async fn rows(&self) -> HashMap<String, Row> {
        let (client, conn) =
            tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        let sql = format!(
            "SELECT request_id, status, tenant, provider, prompt_tokens, completion_tokens, cached_tokens, \
             cache_write_tokens, usage_estimated, cost_nano_usd FROM {}.ledger_records",
            self.name
        );
        let Ok(rows) = client.query(&sql, &[]).await else { return HashMap::new() };
        rows.iter()
            .map(|r| {
                let int = |i: usize| -> u64 { r.get::<_, i64>(i) as u64 };
                (
                    r.get::<_, String>(0),
                    Row {
                        status: r.get(1),
                        tenant: r.get(2),
                        provider: r.get(3),
                        prompt: int(4),
                        completion: int(5),
                        cached: int(6),
                        cache_write: int(7),
                        estimated: r.get(8),
                        cost_nano: r.get(9),
                    },
                )
            })
            .collect()
    }

    async fn drop_schema(&self) {
        let (client, conn) =
            tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        let _ = client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name)).await;
    }
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_007
}

#[tokio::test]
async fn every_request_is_exactly_one_record_postgres() {
    let schema = PgSchema::create().await;
    let s = start(Some(&schema.url())).await;
    let expected = workload(&s).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut rows = schema.rows().await;
    while rows.len() < expected.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rows = schema.rows().await;
    }
    check(&expected, &rows);
    s.gateway.shutdown().await;
    // Still exactly once after the shutdown flush.
    assert_eq!(schema.rows().await.len(), expected.len());
    schema.drop_schema().await;
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_usage() {
    let s = start(None).await;
    let client = s.gateway.client();
    for (key, n) in [(ACME_KEY, 3), (GLOBEX_KEY, 2)] {
        for _ in 0..n {
            s.openai.enqueue_chat(Reply::answer(Answer::text("hi").with_usage(Usage::new(10, 5)))).await;
            let r = client
                .raw(
                    Method::POST,
                    "/v1/chat/completions",
                    &[("x-api-key", key), ("content-type", "application/json")],
                    chat("gpt-4o-mini", false).to_string(),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200);
        }
    }
    let usage_of = |key: &'static str, query: &'static str| {
        let client = client.clone();
        async move {
            client
                .raw(Method::GET, &format!("/v1/usage{query}"), &[("authorization", &format!("Bearer {key}"))], "")
                .await
                .unwrap()
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let acme = usage_of(ACME_KEY, "").await.json();
        if acme["data"][0]["requests"] == 3 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acme = usage_of(ACME_KEY, "?group_by=tenant").await.json();
    assert_eq!(acme["data"].as_array().unwrap().len(), 1, "{acme}");
    assert_eq!(acme["data"][0]["tenant"], "acme");
    assert_eq!(acme["data"][0]["requests"], 3);
    assert_eq!(acme["data"][0]["prompt_tokens"], 30);
    let globex = usage_of(GLOBEX_KEY, "?group_by=tenant,provider").await.json();
    assert_eq!(globex["data"][0]["tenant"], "globex");
    assert_eq!(globex["data"][0]["requests"], 2);
    // Asking for another tenant's usage is refused; no key is 401; a tenant key is not an admin key.
    assert_eq!(usage_of(ACME_KEY, "?tenant=globex").await.status, 400);
    assert_eq!(client.get("/v1/usage").await.unwrap().status, 401);
    assert_eq!(
        client
            .raw(Method::GET, "/admin/usage", &[("authorization", &format!("Bearer {ACME_KEY}"))], "")
            .await
            .unwrap()
            .status,
        401
    );
    // The admin sees both; CSV works.
    let csv = client
        .raw(
            Method::GET,
            "/admin/usage?group_by=tenant&format=csv",
            &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
            "",
        )
        .await
        .unwrap();
    assert_eq!(csv.status, 200);
    let text = csv.text();
    assert!(text.starts_with("tenant,provider,model,day,requests"), "{text}");
    assert!(text.contains("\nacme,,,,3,") && text.contains("\nglobex,,,,2,"), "{text}");
    s.gateway.shutdown().await;
}

#[tokio::test]
async fn pricing_reloads_without_restart_and_keeps_old_prices_on_a_broken_edit() {
    let openai = MockUpstream::start(Flavor::OpenAi).await;
    let dir = temp_dir("pricing-reload");
    let pricing = dir.join("pricing.yaml");
    std::fs::write(&pricing, PRICING).unwrap();
    let yaml = ConfigBuilder::new()
        .provider("openai", &openai)
        .extra(&format!("pricing_file: {}\n", pricing.display()))
        .build();
    let gw = GatewayUnderTest::start(&yaml).await;
    let client = gw.client();
    let cost = || async {
        openai.enqueue_chat(Reply::answer(Answer::text("hi").with_usage(Usage::new(1000, 1000)))).await;
        let r = client.chat(&chat("gpt-4o-mini", false)).await.unwrap();
        assert_eq!(r.status, 200);
        r.header("x-aggregator-cost-usd").unwrap().to_owned()
    };
    // 1000 × $1/M + 1000 × $2/M = $0.003
    assert_eq!(cost().await, "0.003000");
    // Make sure the new file gets a different mtime on coarse-grained filesystems.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&pricing, PRICING.replace("input: \"1.00\", output: \"2.00\"", "input: \"2.00\", output: \"4.00\""))
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut now = cost().await;
    while now != "0.006000" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        now = cost().await;
    }
    assert_eq!(now, "0.006000", "the edited prices apply without a restart");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&pricing, "providers:\n  openai:\n    \"gpt-4o-mini*\": { input: \"-5\" }\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cost().await, "0.006000", "a broken edit keeps the old prices");
    gw.shutdown().await;
}

#[tokio::test]
async fn cache_tokens_and_tool_calls_are_metered_from_the_provider_counts() {
    let s = start(None).await;
    let mut usage = Usage::new(5, 12);
    usage.cache_read = 2000;
    usage.cache_creation = 300;
    s.anthropic
        .enqueue_chat(Reply::answer(
            Answer::tools(vec![ToolCall::new("toolu_1", "get_weather", json!({"city": "Paris"}))]).with_usage(usage),
        ))
        .await;
    let resp = s
        .gateway
        .client()
        .raw(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {ACME_KEY}")), ("content-type", "application/json")],
            chat("anthropic/claude-sonnet-4-5", false).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["usage"]["prompt_tokens"], 2305);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 2000);
    // 5 × $3 + 2000 × $0.30 + 300 × $3.75 + 12 × $15, per million = $0.00192
    assert_eq!(resp.header("x-aggregator-cost-usd"), Some("0.001920"));
    s.gateway.shutdown().await;
}
