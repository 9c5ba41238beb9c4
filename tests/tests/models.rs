//! `GET /v1/models` aggregation and `GET /v1/models/{id}`.

// Test helpers outside #[test] fns panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::harness::{ConfigBuilder, GatewayUnderTest, Stack, Timeouts, ANTHROPIC_KEY, OPENAI_KEY};
use integration_tests::mock::{Flavor, MockUpstream, Reply};
use integration_tests::schema::{check_error, check_model, check_model_list};
use serde_json::Value;

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

fn find<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed in {:?}", ids(list)))
}

#[tokio::test]
async fn lists_all_three_providers_with_prefixes() {
    let stack = Stack::start().await;
    let r = stack.client().get("/v1/models").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    check_model_list(&v).unwrap();
    for id in [
        "openai/gpt-4o-mini",
        "openai/gpt-4o",
        "anthropic/claude-sonnet-4-5-20250929",
        "anthropic/claude-haiku-4-5-20251001",
        "ollama/llama3.2:latest",
        "ollama/hf.co/org/repo:Q4_K_M",
    ] {
        find(&v, id);
    }
    // created: Anthropic created_at (RFC 3339) and Ollama modified_at converted to unix seconds.
    assert_eq!(find(&v, "anthropic/claude-sonnet-4-5-20250929")["created"], 1_759_104_000);
    assert_eq!(find(&v, "ollama/llama3.2:latest")["created"], 1_746_405_464);
    assert_eq!(find(&v, "openai/gpt-4o-mini")["created"], 1_721_172_741);
    let all = ids(&v);
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), all.len(), "no duplicates: {all:?}");

    // Upstream credentials on the listing calls.
    let oa = stack.openai.requests_to("/v1/models").await;
    assert_eq!(oa[0].header("authorization"), Some(format!("Bearer {OPENAI_KEY}").as_str()));
    let an = stack.anthropic.requests_to("/v1/models").await;
    assert_eq!(an[0].header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(an[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(stack.ollama.calls("/api/tags").await, 1);
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn follows_anthropic_pagination() {
    // More models than the largest page Anthropic serves (limit ≤ 1000), so at least two pages.
    let stack = Stack::start().await;
    let names: Vec<String> = (0..1_030).map(|i| format!("claude-test-{i:04}")).collect();
    stack.anthropic.set_models(&names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let v = stack.client().get("/v1/models").await.unwrap().json();
    let listed = ids(&v);
    for n in &names {
        assert!(listed.contains(&format!("anthropic/{n}")), "anthropic/{n} missing ({} listed)", listed.len());
    }
    let reqs = stack.anthropic.requests_to("/v1/models").await;
    assert!(reqs.len() >= 2, "more than one page fetched: {} request(s)", reqs.len());
    assert_eq!(reqs[0].query_param("after_id"), None, "first page has no after_id");
    let after = reqs[1].query_param("after_id");
    let limit: usize = reqs[0].query_param("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
    assert_eq!(after.as_deref(), Some(names[limit.min(names.len()) - 1].as_str()), "after_id = last_id of page 1");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn keeps_serving_when_one_provider_fails() {
    let stack = Stack::start().await;
    stack.anthropic.always("/v1/models", Reply::error(Flavor::Anthropic, 500, "boom")).await;
    let r = stack.client().get("/v1/models").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    check_model_list(&v).unwrap();
    find(&v, "openai/gpt-4o-mini");
    find(&v, "ollama/llama3.2:latest");
    assert!(!ids(&v).iter().any(|i| i.starts_with("anthropic/")), "{:?}", ids(&v));
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn keeps_serving_when_one_provider_is_unreachable() {
    let openai = MockUpstream::start(Flavor::OpenAi).await;
    let ollama = MockUpstream::start(Flavor::Ollama).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let t = Timeouts { connect_ms: 500, first_byte_ms: 2_000, idle_ms: 2_000 };
    let yaml = ConfigBuilder::new()
        .provider("openai", &openai)
        .provider_at("anthropic", Flavor::Anthropic, &format!("http://{closed}"), t)
        .provider("ollama", &ollama)
        .build();
    let gw = GatewayUnderTest::start(&yaml).await;
    let r = gw.client().get("/v1/models").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    find(&v, "openai/gpt-4o");
    find(&v, "ollama/hf.co/org/repo:Q4_K_M");
    gw.shutdown().await;
}

#[tokio::test]
async fn retrieves_a_model_whose_id_has_slashes_and_colons() {
    let stack = Stack::start().await;
    let c = stack.client();
    let r = c.get("/v1/models/ollama/hf.co/org/repo:Q4_K_M").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    check_model(&m).unwrap();
    assert_eq!(m["id"], "ollama/hf.co/org/repo:Q4_K_M");
    // Percent-encoded form of the same id.
    let r = c.get("/v1/models/ollama%2Fhf.co%2Forg%2Frepo%3AQ4_K_M").await.unwrap();
    assert_eq!(r.status, 200, "percent-encoded id: {}", r.text());
    assert_eq!(r.json()["id"], "ollama/hf.co/org/repo:Q4_K_M");
    let r = c.get("/v1/models/anthropic/claude-sonnet-4-5-20250929").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "anthropic/claude-sonnet-4-5-20250929");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn unknown_model_retrieve_is_404() {
    let stack = Stack::start().await;
    let r = stack.client().get("/v1/models/ollama/does-not-exist:latest").await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    let v = r.json();
    check_error(&v).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn listing_is_cached_for_the_ttl() {
    let openai = MockUpstream::start(Flavor::OpenAi).await;
    let yaml = ConfigBuilder::new().provider("openai", &openai).extra("models_cache_ttl_secs: 300").build();
    let yaml = yaml.replace("models_cache_ttl_secs: 0\n", "");
    let gw = GatewayUnderTest::start(&yaml).await;
    let c = gw.client();
    for _ in 0..3 {
        assert_eq!(c.get("/v1/models").await.unwrap().status, 200);
    }
    assert_eq!(openai.calls("/v1/models").await, 1, "one upstream listing within the TTL");
    gw.shutdown().await;
}
