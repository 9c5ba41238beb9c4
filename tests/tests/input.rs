//! Issue 11, hostile input and the defaults a new user hits: limits that JSON cannot bypass (item 3),
//! prices for every routable model (item 5), circuit breakers one tenant cannot open for all (item 6),
//! retries of a transient overload by default (item 14), one 400 for a malformed `messages` (item 15) and
//! a clear error for a model whose provider is not enabled (item 16).

// Test helpers outside #[test] fns panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Method;
use integration_tests::client::{TestClient, TestResponse};
use integration_tests::harness::{ConfigBuilder, GatewayUnderTest, Stack, Timeouts};
use integration_tests::mock::{Flavor, MockUpstream};
use integration_tests::schema::check_error;
use serde_json::{json, Value};

const ALL: [Flavor; 3] = [Flavor::OpenAi, Flavor::Anthropic, Flavor::Ollama];

fn model_for(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::OpenAi => "openai/gpt-4o-mini",
        Flavor::Anthropic => "anthropic/claude-sonnet-4-5",
        Flavor::Ollama => "ollama/llama3.2",
    }
}

fn mock(stack: &Stack, flavor: Flavor) -> &MockUpstream {
    match flavor {
        Flavor::OpenAi => &stack.openai,
        Flavor::Anthropic => &stack.anthropic,
        Flavor::Ollama => &stack.ollama,
    }
}

/// Asserts the status and the OpenAI error envelope; returns the `error` object.
fn expect_error(r: &TestResponse, status: u16, what: &str) -> Value {
    assert_eq!(r.status.as_u16(), status, "{what}: body {}", r.text());
    let v = r.json();
    check_error(&v).unwrap_or_else(|e| panic!("{what}: {e}"));
    v["error"].clone()
}

/// `POST /v1/chat/completions` with a body sent byte for byte (duplicate keys cannot be built as a `Value`).
async fn post_raw(c: &TestClient, key: Option<&str>, body: &str) -> TestResponse {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    c.raw(Method::POST, "/v1/chat/completions", &headers, body.to_owned()).await.unwrap()
}

async fn chat_calls(stack: &Stack) -> usize {
    let mut n = 0;
    for flavor in ALL {
        n += mock(stack, flavor).calls(flavor.chat_path()).await;
    }
    n
}

// -------------------------------------------------------------------------------------------------
// Item 3: one reading of the body decides both the reservation and what the upstream receives
// -------------------------------------------------------------------------------------------------

/// Issue 11, item 3: with `tpm: 100000`, `max_tokens` written twice (the gateway used to reserve the
/// first, the upstream obeys the last) or as `500000.0` (the gateway used to fall back to its small
/// default allowance) no longer passes: a duplicated key is a 400 naming it, a non-integer count is a
/// 400, `n` multiplies the reservation, and none of these reach an upstream.
#[tokio::test]
async fn max_tokens_duplicates_and_decimals_cannot_bypass_tpm() {
    let tenants = "tenants:\n  - id: tpm-t\n    api_keys: [\"sk-tpm-tenant-1\"]\n    tpm: 100000\n";
    let stack = Stack::start_with(Timeouts::default(), tenants).await;
    let c = stack.client();
    let key = Some("sk-tpm-tenant-1");
    let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
    for flavor in ALL {
        let model = model_for(flavor);
        for (what, members, param) in [
            ("duplicate max_tokens", r#""max_tokens":10,"max_tokens":500000"#, "max_tokens"),
            ("escaped duplicate", r#""max_tokens":10,"max\u005ftokens":500000"#, "max_tokens"),
            (
                "duplicate max_completion_tokens",
                r#""max_completion_tokens":10,"max_completion_tokens":500000"#,
                "max_completion_tokens",
            ),
            ("decimal max_tokens", r#""max_tokens":500000.0"#, "max_tokens"),
            ("exponent max_tokens", r#""max_tokens":5e5"#, "max_tokens"),
            ("duplicate n", r#""n":1,"n":128"#, "n"),
        ] {
            let body = format!(r#"{{"model":"{model}",{msgs},{members}}}"#);
            let r = post_raw(&c, key, &body).await;
            let e = expect_error(&r, 400, &format!("{flavor:?} {what}"));
            assert_eq!(e["param"], json!(param), "{flavor:?} {what}: {e}");
        }
        // An honest 500000 and n × max_tokens beyond the limit are refused by the limiter itself.
        for (what, members) in
            [("max_tokens 500000", r#""max_tokens":500000"#), ("n=200 × 1000", r#""max_tokens":1000,"n":200"#)]
        {
            let body = format!(r#"{{"model":"{model}",{msgs},{members}}}"#);
            let r = post_raw(&c, key, &body).await;
            let e = expect_error(&r, 429, &format!("{flavor:?} {what}"));
            assert_eq!(e["code"], json!("rate_limit_exceeded"), "{flavor:?} {what}: {e}");
        }
    }
    assert_eq!(chat_calls(&stack).await, 0, "no refused request reached an upstream");
    // A small, well-formed request still passes.
    let body = format!(r#"{{"model":"openai/gpt-4o-mini",{msgs},"max_tokens":100}}"#);
    let r = post_raw(&c, key, &body).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(stack.openai.calls(Flavor::OpenAi.chat_path()).await, 1);
    stack.gateway.shutdown().await;
}

// -------------------------------------------------------------------------------------------------
// Item 15: a malformed `messages` is the same 400 whatever the provider
// -------------------------------------------------------------------------------------------------

/// Issue 11, item 15: no `messages`, `messages: []`, `null`, an object or a string → 400 with param
/// `messages` for OpenAI (pass-through), Anthropic and Ollama alike, and no upstream call.
#[tokio::test]
async fn malformed_messages_is_the_same_400_for_every_provider() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        let model = model_for(flavor);
        for (what, body) in [
            ("missing", json!({"model": model})),
            ("empty", json!({"model": model, "messages": []})),
            ("null", json!({"model": model, "messages": null})),
            ("object", json!({"model": model, "messages": {"role": "user", "content": "hi"}})),
            ("string", json!({"model": model, "messages": "hi", "stream": true})),
        ] {
            let r = c.chat(&body).await.unwrap();
            let e = expect_error(&r, 400, &format!("{flavor:?} messages {what}"));
            assert_eq!(e["param"], json!("messages"), "{flavor:?} {what}: {e}");
            assert_eq!(e["type"], json!("invalid_request_error"), "{flavor:?} {what}: {e}");
        }
        assert_eq!(mock(&stack, flavor).calls(flavor.chat_path()).await, 0, "{flavor:?}: no upstream call");
    }
    stack.gateway.shutdown().await;
}

// -------------------------------------------------------------------------------------------------
// Item 16: a model whose provider is not enabled says so
// -------------------------------------------------------------------------------------------------

/// Issue 11, item 16: started from the environment without `OPENAI_API_KEY`, `gpt-4o` (built-in route
/// `gpt-*` → openai) and `openai/gpt-4o` get a 404 `provider_not_enabled` whose message says
/// "provider `openai` is not enabled: set `OPENAI_API_KEY`", not a bare `model_not_found`; an unknown
/// model is still `model_not_found`.
#[tokio::test]
async fn a_model_of_a_provider_that_is_not_enabled_names_the_fix() {
    let ollama = MockUpstream::start(Flavor::Ollama).await;
    let yaml = "listen: 127.0.0.1:0\nledger:\n  data_dir: ${DATA_DIR}\n";
    let env = gateway::MapEnv::from_pairs([("OLLAMA_URL", ollama.base_url().as_str())]);
    let gw = GatewayUnderTest::start_with_env(yaml, env).await;
    let c = gw.client();
    for model in ["gpt-4o", "openai/gpt-4o"] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let r = c.chat(&body).await.unwrap();
        let e = expect_error(&r, 404, model);
        assert_eq!(e["code"], json!("provider_not_enabled"), "{model}: {e}");
        assert_eq!(e["param"], json!("model"), "{model}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains("provider `openai` is not enabled: set `OPENAI_API_KEY`"), "{model}: {message}");
    }
    let r = c.chat(&json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})).await.unwrap();
    assert_eq!(expect_error(&r, 404, "unknown")["code"], json!("model_not_found"));
    let r =
        c.chat(&json!({"model": "ollama/llama3.2", "messages": [{"role": "user", "content": "hi"}]})).await.unwrap();
    assert_eq!(r.status.as_u16(), 200, "the enabled provider still serves: {}", r.text());
    gw.shutdown().await;
}

// -------------------------------------------------------------------------------------------------
// Item 6: one tenant cannot open the circuit breaker for all
// -------------------------------------------------------------------------------------------------

fn chat_json(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

/// Issue 11, item 6: with `circuit_breaker: {failures: 3}`, tenant B's requests for model X that the
/// upstream refuses as client errors (400, 404), rate limits (429) or credential refusals (403) do not
/// count, so tenant A's requests (for X and for Y on the same provider) still succeed; a real 5xx storm
/// on X opens X's breaker only: X answers 503 `upstream_unavailable` without an upstream call, Y still
/// answers 200.
#[tokio::test]
async fn one_tenants_failures_open_no_breaker_for_others() {
    let openai = MockUpstream::start(Flavor::OpenAi).await;
    let yaml = ConfigBuilder::new()
        .provider("openai", &openai)
        .extra(
            "circuit_breaker: {failures: 3, cooldown_ms: 60000}\ntenants:\n  - id: tenant-a\n    api_keys: [\"sk-tenant-a-1\"]\n  \
             - id: tenant-b\n    api_keys: [\"sk-tenant-b-1\"]\n",
        )
        .build();
    let gw = GatewayUnderTest::start(&yaml).await;
    let c = gw.client();
    let (a, b) = (Some("sk-tenant-a-1"), Some("sk-tenant-b-1"));
    let (x, y) = ("openai/gpt-4o", "openai/gpt-4o-mini");
    for (status, times) in [(400, 3), (404, 3), (429, 3), (403, 3)] {
        for _ in 0..times {
            openai.enqueue_chat(integration_tests::mock::Reply::error(Flavor::OpenAi, status, "refused")).await;
            let r = post_raw(&c, b, &chat_json(x)).await;
            assert!(r.status.is_client_error() || r.status == 502, "B's upstream {status}: {}", r.text());
        }
    }
    for model in [x, y] {
        let r = post_raw(&c, a, &chat_json(model)).await;
        assert_eq!(r.status.as_u16(), 200, "A's {model} after B's refused requests: {}", r.text());
    }
    // A real outage of X: three 5xx in a row open X's breaker, and only X's.
    for _ in 0..3 {
        openai.enqueue_chat(integration_tests::mock::Reply::error(Flavor::OpenAi, 500, "boom")).await;
        let r = post_raw(&c, b, &chat_json(x)).await;
        assert_eq!(r.status.as_u16(), 502, "{}", r.text());
    }
    let calls = openai.calls(Flavor::OpenAi.chat_path()).await;
    let r = post_raw(&c, a, &chat_json(x)).await;
    assert_eq!(expect_error(&r, 503, "X after its 5xx storm")["code"], json!("upstream_unavailable"));
    assert_eq!(openai.calls(Flavor::OpenAi.chat_path()).await, calls, "an open breaker makes no upstream call");
    let r = post_raw(&c, a, &chat_json(y)).await;
    assert_eq!(r.status.as_u16(), 200, "Y on the same provider is unaffected: {}", r.text());
    gw.shutdown().await;
}

// -------------------------------------------------------------------------------------------------
// Item 14: a transient overload is retried by default
// -------------------------------------------------------------------------------------------------

/// Issue 11, item 14: with no `retry:` anywhere, an Anthropic 529 (and an OpenAI 503) answered before
/// any byte is retried once: the client gets 200 and the upstream saw two calls. With the top-level
/// `retry: {attempts: 1}` the same overload reaches the client as 503 after one call. A client error
/// (400) is never retried.
#[tokio::test]
async fn an_overload_is_retried_by_default_and_attempts_1_turns_it_off() {
    use integration_tests::mock::Reply;
    let stack = Stack::start().await;
    let c = stack.client();
    for (flavor, status) in [(Flavor::Anthropic, 529), (Flavor::OpenAi, 503)] {
        let m = mock(&stack, flavor);
        m.enqueue_chat(Reply::error(flavor, status, "Overloaded")).await;
        for stream in [false, true] {
            if stream {
                m.enqueue_chat(Reply::error(flavor, status, "Overloaded")).await;
            }
            let before = m.calls(flavor.chat_path()).await;
            let body =
                json!({"model": model_for(flavor), "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
            let r = c.chat(&body).await.unwrap();
            assert_eq!(r.status.as_u16(), 200, "{flavor:?} {status} stream={stream}: {}", r.text());
            assert_eq!(m.calls(flavor.chat_path()).await - before, 2, "{flavor:?}: one retry");
        }
    }
    stack.anthropic.enqueue_chat(Reply::error(Flavor::Anthropic, 400, "bad")).await;
    let r = c
        .chat(&json!({"model": "anthropic/claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    expect_error(&r, 400, "client error");
    assert_eq!(stack.anthropic.calls("/v1/messages").await, 5, "a 400 is not retried");
    stack.gateway.shutdown().await;

    let stack = Stack::start_with(Timeouts::default(), "retry: {attempts: 1}\n").await;
    stack.anthropic.enqueue_chat(Reply::error(Flavor::Anthropic, 529, "Overloaded")).await;
    let r = stack
        .client()
        .chat(&json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    expect_error(&r, 503, "attempts: 1");
    assert_eq!(stack.anthropic.calls("/v1/messages").await, 1, "no retry with attempts: 1");
    stack.gateway.shutdown().await;
}

// -------------------------------------------------------------------------------------------------
// Item 5: every routable paid model has a price, or the operator decides
// -------------------------------------------------------------------------------------------------

fn cost_of(r: &TestResponse) -> f64 {
    r.header("x-aggregator-cost-usd").unwrap_or_else(|| panic!("no cost header: {:?}", r.headers)).parse().unwrap()
}

/// Issue 11, item 5: with no pricing file at all, the built-in table prices the models once metered at
/// $0 (`gpt-4-1106-preview`, `gpt-4-0125-preview`, `computer-use-preview`, `claude-3-sonnet-20240229`);
/// Ollama stays free; a model priced nowhere is refused with 403 `model_price_missing` naming it, before
/// any upstream call. With `pricing: {unpriced: fallback, ...}` it is served and charged the fallback.
#[tokio::test]
async fn unpriced_models_are_refused_or_charged_the_fallback_never_free() {
    let stack = Stack::start().await;
    let c = stack.client();
    let ask = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for model in [
        "openai/gpt-4-1106-preview",
        "openai/gpt-4-0125-preview",
        "openai/computer-use-preview",
        "anthropic/claude-3-sonnet-20240229",
    ] {
        let r = c.chat(&ask(model)).await.unwrap();
        assert_eq!(r.status.as_u16(), 200, "{model}: {}", r.text());
        assert!(cost_of(&r) > 0.0, "{model} is not free: {:?}", r.header("x-aggregator-cost-usd"));
    }
    let r = c.chat(&ask("ollama/llama3.2")).await.unwrap();
    assert_eq!(cost_of(&r), 0.0, "local models are free");

    let before = stack.openai.calls(Flavor::OpenAi.chat_path()).await;
    let r = c.chat(&ask("openai/acme-unreleased-model")).await.unwrap();
    let e = expect_error(&r, 403, "unpriced");
    assert_eq!(e["code"], json!("model_price_missing"), "{e}");
    assert_eq!(e["param"], json!("model"), "{e}");
    assert!(e["message"].as_str().unwrap().contains("acme-unreleased-model"), "{e}");
    assert_eq!(stack.openai.calls(Flavor::OpenAi.chat_path()).await, before, "refused before any upstream call");
    stack.gateway.shutdown().await;

    let fallback = "pricing:\n  unpriced: fallback\n  fallback: {input: \"10\", output: \"30\"}\n";
    let stack = Stack::start_with(Timeouts::default(), fallback).await;
    let r = stack.client().chat(&ask("openai/acme-unreleased-model")).await.unwrap();
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let usage = r.json()["usage"].clone();
    let (p, k) = (usage["prompt_tokens"].as_f64().unwrap(), usage["completion_tokens"].as_f64().unwrap());
    let expected = (p * 10.0 + k * 30.0) / 1e6;
    assert!((cost_of(&r) - expected).abs() < 1e-9, "fallback price charged: {} vs {expected}", cost_of(&r));
    stack.gateway.shutdown().await;
}
