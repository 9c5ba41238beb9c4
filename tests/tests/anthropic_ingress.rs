//! The Anthropic Messages door (issue #12) over loopback: `POST /v1/messages` in front of each backend,
//! streamed and not, tools, errors in Anthropic's envelope, `count_tokens`, the Anthropic-shaped model
//! list, and one ledger record per request.

// Test helpers outside #[test] fns panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Method;
use integration_tests::client::{SseEvent, TestClient, TestResponse};
use integration_tests::harness::{ConfigBuilder, GatewayUnderTest, Stack};
use integration_tests::mock::{Answer, Flavor, MockUpstream, Reply, ToolCall};
use serde_json::{json, Value};

const ALL: [Flavor; 3] = Flavor::ALL;

fn model_for(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::OpenAi => "openai/gpt-4o-mini",
        Flavor::Anthropic => "anthropic/claude-sonnet-4-5",
        Flavor::Ollama => "ollama/llama3.2",
    }
}

fn messages_body(flavor: Flavor, stream: bool) -> Value {
    json!({"model": model_for(flavor), "max_tokens": 256, "stream": stream,
           "messages": [{"role": "user", "content": "Say hello"}]})
}

const HEADERS: [(&str, &str); 2] = [("content-type", "application/json"), ("anthropic-version", "2023-06-01")];

async fn post_messages(c: &TestClient, body: &Value) -> TestResponse {
    c.raw(Method::POST, "/v1/messages", &HEADERS, body.to_string()).await.unwrap()
}

/// Asserts Anthropic's error envelope and status; returns `error`.
fn expect_anthropic_error(r: &TestResponse, status: u16, kind: &str, what: &str) -> Value {
    assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error", "{what}: {v}");
    assert_eq!(v["error"]["type"], kind, "{what}: {v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: message: {v}");
    assert!(r.header("request-id").is_some(), "{what}: request-id header");
    v["error"].clone()
}

/// The Anthropic SSE contract the official SDKs enforce: every frame named, `message_start` first,
/// contiguous block indices with matching start/stop, deltas matching their block, `message_delta`
/// then `message_stop` last. Returns (text, tool inputs as JSON, final message_delta).
fn check_anthropic_stream(events: &[SseEvent], what: &str) -> (String, Vec<(String, Value)>, Value) {
    let frames: Vec<(String, Value)> = events
        .iter()
        .filter(|e| e.event.as_deref() != Some("ping"))
        .map(|e| {
            let name = e.event.clone().unwrap_or_else(|| panic!("{what}: frame without `event:` {}", e.data));
            let v = e.json();
            assert_eq!(v["type"], name.as_str(), "{what}: event name matches data.type");
            (name, v)
        })
        .collect();
    assert_eq!(frames.first().map(|f| f.0.as_str()), Some("message_start"), "{what}: {frames:?}");
    assert_eq!(frames.last().map(|f| f.0.as_str()), Some("message_stop"), "{what}");
    let mut text = String::new();
    let mut tools = Vec::new();
    let mut open: Option<(u64, String)> = None;
    let mut next_index = 0u64;
    let mut args = String::new();
    let mut tool_name = String::new();
    let mut delta = Value::Null;
    for (name, v) in &frames {
        match name.as_str() {
            "content_block_start" => {
                assert!(open.is_none(), "{what}: a block opened while another is open");
                let index = v["index"].as_u64().unwrap();
                assert_eq!(index, next_index, "{what}: contiguous indices");
                next_index += 1;
                let kind = v["content_block"]["type"].as_str().unwrap().to_owned();
                if kind == "tool_use" {
                    assert!(
                        v["content_block"]["id"].as_str().is_some_and(|id| !id.is_empty()
                            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')),
                        "{what}: tool id {v}"
                    );
                    tool_name = v["content_block"]["name"].as_str().unwrap().to_owned();
                    args.clear();
                }
                open = Some((index, kind));
            }
            "content_block_delta" => {
                let (index, kind) = open.clone().unwrap_or_else(|| panic!("{what}: delta outside a block"));
                assert_eq!(v["index"].as_u64(), Some(index), "{what}");
                match (kind.as_str(), v["delta"]["type"].as_str().unwrap()) {
                    ("text", "text_delta") => text.push_str(v["delta"]["text"].as_str().unwrap()),
                    ("tool_use", "input_json_delta") => args.push_str(v["delta"]["partial_json"].as_str().unwrap()),
                    ("thinking", "thinking_delta" | "signature_delta") => {}
                    other => panic!("{what}: delta does not match its block: {other:?}"),
                }
            }
            "content_block_stop" => {
                let (index, kind) = open.take().unwrap_or_else(|| panic!("{what}: stop outside a block"));
                assert_eq!(v["index"].as_u64(), Some(index), "{what}");
                if kind == "tool_use" {
                    let input: Value = serde_json::from_str(if args.is_empty() { "{}" } else { &args })
                        .unwrap_or_else(|e| panic!("{what}: tool arguments are not JSON ({e}): {args}"));
                    tools.push((tool_name.clone(), input));
                }
            }
            "message_delta" => {
                assert!(open.is_none(), "{what}: message_delta with a block open");
                delta = v.clone();
            }
            "message_start" | "message_stop" => {}
            other => panic!("{what}: unexpected event {other}"),
        }
    }
    assert!(delta["delta"]["stop_reason"].is_string(), "{what}: stop_reason in message_delta: {delta}");
    for key in ["output_tokens"] {
        assert!(delta["usage"][key].is_u64(), "{what}: usage.{key} in message_delta: {delta}");
    }
    (text, tools, delta)
}

#[tokio::test]
async fn messages_non_stream_each_backend() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        let r = post_messages(&c, &messages_body(flavor, false)).await;
        assert_eq!(r.status, 200, "{flavor:?}: {}", r.text());
        let v = r.json();
        assert_eq!(v["type"], "message", "{flavor:?}: {v}");
        assert_eq!(v["role"], "assistant", "{flavor:?}");
        assert!(v["id"].as_str().unwrap().starts_with("msg"), "{flavor:?}: {v}");
        assert_eq!(v["content"][0], json!({"type": "text", "text": "Hello there!"}), "{flavor:?}: {v}");
        assert_eq!(v["stop_reason"], "end_turn", "{flavor:?}");
        assert_eq!(v["usage"]["output_tokens"], 6, "{flavor:?}: {v}");
        assert_eq!(v["usage"]["input_tokens"], 11, "{flavor:?}: {v}");
        assert!(r.header("request-id").is_some(), "{flavor:?}");
        let sent = stack.mock(flavor).last_chat().await;
        match flavor {
            // Pass-through: the client's body, renamed model, nothing else changed.
            Flavor::Anthropic => {
                let mut expected = messages_body(flavor, false);
                expected["model"] = json!("claude-sonnet-4-5");
                assert_eq!(sent.body_json(), &expected);
            }
            Flavor::OpenAi => {
                assert_eq!(sent.body_json()["model"], "gpt-4o-mini");
                assert_eq!(sent.body_json()["messages"][0]["content"], "Say hello");
            }
            Flavor::Ollama => assert_eq!(sent.body_json()["model"], "llama3.2"),
        }
        // Neither client credential nor Anthropic's own headers leak to an upstream that is not Anthropic.
        if flavor != Flavor::Anthropic {
            assert!(sent.header("anthropic-version").is_none(), "{flavor:?}");
        }
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn messages_stream_each_backend() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        let mut s = c.stream("/v1/messages", &HEADERS[1..], &messages_body(flavor, true)).await.unwrap();
        assert_eq!(s.status, 200, "{flavor:?}");
        assert!(s.header("content-type").unwrap_or("").starts_with("text/event-stream"), "{flavor:?}");
        let events = s.collect().await.unwrap();
        let (text, tools, delta) = check_anthropic_stream(&events, &format!("{flavor:?}"));
        assert_eq!(text, "Hello there!", "{flavor:?}");
        assert!(tools.is_empty(), "{flavor:?}");
        assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{flavor:?}");
        assert_eq!(delta["usage"]["output_tokens"], 6, "{flavor:?}: {delta}");
        assert!(events.iter().all(|e| !e.is_done()), "{flavor:?}: no OpenAI [DONE] in an Anthropic stream");
        if flavor == Flavor::OpenAi {
            // The usage chunk is asked for upstream, so the counts are real.
            assert_eq!(stack.openai.last_chat().await.body_json()["stream_options"]["include_usage"], true);
        }
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn tool_use_streams_for_translated_backends() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in [Flavor::OpenAi, Flavor::Ollama, Flavor::Anthropic] {
        let calls = vec![
            ToolCall::new("call_1", "get_weather", json!({"city": "Paris"})),
            ToolCall::new("call_2", "get_weather", json!({"city": "Tokyo"})),
        ];
        stack.mock(flavor).enqueue_chat(Reply::answer(Answer::text("Checking.").with_tools(calls))).await;
        let body = json!({"model": model_for(flavor), "max_tokens": 256, "stream": true,
            "tools": [{"name": "get_weather", "description": "weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "messages": [{"role": "user", "content": "Weather in Paris and Tokyo?"}]});
        let events = c.stream("/v1/messages", &HEADERS[1..], &body).await.unwrap().collect().await.unwrap();
        let (text, tools, delta) = check_anthropic_stream(&events, &format!("{flavor:?} tools"));
        assert_eq!(text, "Checking.", "{flavor:?}");
        assert_eq!(
            tools,
            vec![
                ("get_weather".to_owned(), json!({"city": "Paris"})),
                ("get_weather".to_owned(), json!({"city": "Tokyo"}))
            ],
            "{flavor:?}"
        );
        assert_eq!(delta["delta"]["stop_reason"], "tool_use", "{flavor:?}");
        if flavor == Flavor::OpenAi {
            let sent = stack.openai.last_chat().await;
            assert_eq!(sent.body_json()["tools"][0]["function"]["name"], "get_weather");
        }
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn tool_results_and_images_reach_translated_backends() {
    let stack = Stack::start().await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let body = json!({"model": "openai/gpt-4o-mini", "max_tokens": 100,
        "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather? And the image?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "18°C"}]}]});
    let r = post_messages(&stack.client(), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = stack.openai.last_chat().await;
    let msgs = sent.body_json()["messages"].as_array().unwrap().clone();
    assert_eq!(msgs[0]["role"], "system", "{msgs:?}");
    assert_eq!(msgs[1]["content"][1]["image_url"]["url"], format!("data:image/png;base64,{png}"), "{msgs:?}");
    assert_eq!(msgs[2]["tool_calls"][0]["id"], "toolu_01", "{msgs:?}");
    assert_eq!(msgs[3]["role"], "tool", "{msgs:?}");
    assert_eq!(msgs[3]["tool_call_id"], "toolu_01", "{msgs:?}");
    assert_eq!(r.header("x-gateway-dropped-params"), Some("cache_control"), "dropped features are listed");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn errors_are_in_anthropics_envelope() {
    let stack = Stack::start().await;
    let c = stack.client();
    // Unknown model.
    let r = post_messages(
        &c,
        &json!({"model": "nope/nothing", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    expect_anthropic_error(&r, 404, "not_found_error", "unknown model");
    // Bad body.
    let r = c.raw(Method::POST, "/v1/messages", &HEADERS, "{not json").await.unwrap();
    expect_anthropic_error(&r, 400, "invalid_request_error", "bad json");
    // Upstream rate limit keeps its status and retry-after, in Anthropic's words.
    for flavor in ALL {
        stack.mock(flavor).enqueue_chat(Reply::error(flavor, 429, "slow down").header("retry-after", "7")).await;
        // Retries of 429 are allowed by policy; make sure every attempt sees a 429.
        stack.mock(flavor).enqueue_chat(Reply::error(flavor, 429, "slow down").header("retry-after", "7")).await;
        stack.mock(flavor).enqueue_chat(Reply::error(flavor, 429, "slow down").header("retry-after", "7")).await;
        let r = post_messages(&c, &messages_body(flavor, false)).await;
        expect_anthropic_error(&r, 429, "rate_limit_error", &format!("{flavor:?} 429"));
        assert_eq!(r.header("retry-after"), Some("7"), "{flavor:?}");
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn overloaded_anthropic_is_529_and_auth_errors_are_anthropic_shaped() {
    let mock = MockUpstream::start(Flavor::Anthropic).await;
    let yaml = ConfigBuilder::new()
        .provider("anthropic", &mock)
        .extra("tenants:\n  - id: acme\n    api_keys: [sk-acme-0123456789]\n")
        .build();
    let gw = GatewayUnderTest::start(&yaml).await;
    let c = gw.client();
    let r = post_messages(&c, &messages_body(Flavor::Anthropic, false)).await;
    expect_anthropic_error(&r, 401, "authentication_error", "no key");
    let with_key = |key: &'static str| {
        vec![("content-type", "application/json"), ("anthropic-version", "2023-06-01"), ("x-api-key", key)]
    };
    let r = c
        .raw(Method::POST, "/v1/messages", &with_key("sk-wrong"), messages_body(Flavor::Anthropic, false).to_string())
        .await
        .unwrap();
    expect_anthropic_error(&r, 401, "authentication_error", "wrong key");

    // Every attempt (the default policy may retry an overload) sees a 529.
    for _ in 0..3 {
        mock.enqueue_chat(Reply::error(Flavor::Anthropic, 529, "Overloaded")).await;
    }
    let r = c
        .raw(
            Method::POST,
            "/v1/messages",
            &with_key("sk-acme-0123456789"),
            messages_body(Flavor::Anthropic, false).to_string(),
        )
        .await
        .unwrap();
    let e = expect_anthropic_error(&r, 529, "overloaded_error", "529");
    assert_eq!(e["message"], "Overloaded");
    assert!(r.header("retry-after").is_some());
    // The tenant key reached the gateway as `x-api-key`; the upstream got the gateway's own key.
    let sent = mock.last_chat().await;
    assert_ne!(sent.header("x-api-key"), Some("sk-acme-0123456789"), "the tenant key is never forwarded");
    gw.shutdown().await;
}

#[tokio::test]
async fn count_tokens_forwarded_to_anthropic_and_estimated_elsewhere() {
    let stack = Stack::start().await;
    let c = stack.client();
    stack.anthropic.enqueue("/v1/messages/count_tokens", Reply::json(200, &json!({"input_tokens": 4242}))).await;
    let body = json!({"model": "anthropic/claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello"}]});
    let r = c.raw(Method::POST, "/v1/messages/count_tokens?beta=true", &HEADERS, body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"input_tokens": 4242}));
    let sent = stack.anthropic.requests_to("/v1/messages/count_tokens").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body_json()["model"], "claude-sonnet-4-5");

    let long = "word ".repeat(400);
    for model in ["openai/gpt-4o-mini", "ollama/llama3.2"] {
        let body = json!({"model": model, "system": "You are a helpful assistant.",
                          "messages": [{"role": "user", "content": long}]});
        let r = c.raw(Method::POST, "/v1/messages/count_tokens", &HEADERS, body.to_string()).await.unwrap();
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let n = r.json()["input_tokens"].as_u64().unwrap();
        // ~2,000 bytes of text at ~4 bytes a token: an honest estimate, never 0.
        assert!((400..=700).contains(&n), "{model}: {n}");
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn models_in_anthropics_shape_for_anthropic_clients() {
    let stack = Stack::start().await;
    let c = stack.client();
    let r = c.raw(Method::GET, "/v1/models?limit=2", &[("anthropic-version", "2023-06-01")], "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let data = v["data"].as_array().unwrap();
    assert!(data.len() <= 2 && !data.is_empty(), "{v}");
    for m in data {
        assert_eq!(m["type"], "model");
        assert!(m["id"].is_string() && m["display_name"].is_string() && m["created_at"].is_string(), "{m}");
    }
    assert!(v["has_more"].is_boolean() && v["first_id"].is_string() && v["last_id"].is_string(), "{v}");
    // Without Anthropic headers: OpenAI's shape.
    assert_eq!(c.get("/v1/models").await.unwrap().json()["object"], "list");
    // HEAD / answers (Claude Code's probe).
    let r = c.raw(Method::HEAD, "/", &[], "").await.unwrap();
    assert_eq!(r.status, 200);
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn one_ledger_record_per_messages_request() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        assert_eq!(post_messages(&c, &messages_body(flavor, false)).await.status, 200);
        let events = c
            .stream("/v1/messages", &HEADERS[1..], &messages_body(flavor, true))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        check_anthropic_stream(&events, &format!("{flavor:?}"));
    }
    let usage = c.get("/v1/usage?group_by=provider").await.unwrap();
    assert_eq!(usage.status, 200, "{}", usage.text());
    let rows = usage.json()["data"].as_array().unwrap().clone();
    // The ledger writes asynchronously: wait for all six records.
    let mut rows = rows;
    for _ in 0..50 {
        if rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum::<u64>() == 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        rows = c.get("/v1/usage?group_by=provider").await.unwrap().json()["data"].as_array().unwrap().clone();
    }
    for flavor in ["openai", "anthropic", "ollama"] {
        let row = rows.iter().find(|r| r["provider"] == flavor).unwrap_or_else(|| panic!("{flavor}: {rows:?}"));
        assert_eq!(row["requests"], 2, "{flavor}: {row}");
        assert_eq!(row["prompt_tokens"], 22, "{flavor}: {row}");
        assert_eq!(row["completion_tokens"], 12, "{flavor}: {row}");
    }
    stack.gateway.shutdown().await;
}

/// Claude Code 2.1.3xx puts `system` turns inside `messages` for models it does not know (every
/// `openai/…` and `ollama/…` name). Translated backends get a system message in place instead of a 400
/// (which Claude Code recovered from only by resending the whole request: two upstream attempts and a
/// failed ledger record per turn).
#[tokio::test]
async fn system_turns_inside_messages_reach_translated_backends() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in [Flavor::OpenAi, Flavor::Ollama] {
        let body = json!({"model": model_for(flavor), "max_tokens": 256, "stream": true,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "say hi"}]},
                         {"role": "system", "content": [{"type": "text", "text": "# Environment\ncwd: /w"}]}]});
        let mut s = c.stream("/v1/messages", &HEADERS[1..], &body).await.unwrap();
        assert_eq!(s.status, 200, "{flavor:?}");
        let events = s.collect().await.unwrap();
        let (text, _, _) = check_anthropic_stream(&events, &format!("{flavor:?} system turn"));
        assert_eq!(text, "Hello there!", "{flavor:?}");
        let sent = stack.mock(flavor).last_chat().await;
        let msgs = sent.body_json()["messages"].as_array().unwrap().clone();
        let system: Vec<&Value> = msgs.iter().filter(|m| m["role"] == "system").collect();
        assert_eq!(system.len(), 1, "{flavor:?}: {msgs:?}");
        assert_eq!(system[0]["content"], "# Environment\ncwd: /w", "{flavor:?}");
        assert_eq!(msgs.last().unwrap()["role"], "system", "{flavor:?}: kept in place");
    }
    stack.gateway.shutdown().await;
}

/// Issue #12: Claude Code's `X-Claude-Code-Session-Id` is recorded with each request's ledger row (and a
/// malformed one is ignored, not stored).
#[tokio::test]
async fn claude_code_session_id_is_recorded() {
    let stack = Stack::start().await;
    let c = stack.client();
    for (session, model) in [
        ("sess-0123abcd", Flavor::Anthropic),
        ("sess-0123abcd", Flavor::OpenAi),
        ("bad id with spaces", Flavor::Ollama),
    ] {
        let mut headers = HEADERS.to_vec();
        headers.push(("x-claude-code-session-id", session));
        let r = c.raw(Method::POST, "/v1/messages", &headers, messages_body(model, false).to_string()).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let db = stack.gateway.data_dir.join("ledger.sqlite3");
    let mut sessions = Vec::new();
    for _ in 0..50 {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn.prepare("SELECT provider, session_id FROM ledger_records ORDER BY provider").unwrap();
        sessions = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        if sessions.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let of = |p: &str| sessions.iter().find(|(provider, _)| provider == p).map(|(_, s)| s.clone());
    assert_eq!(of("anthropic"), Some(Some("sess-0123abcd".to_owned())), "{sessions:?}");
    assert_eq!(of("openai"), Some(Some("sess-0123abcd".to_owned())), "{sessions:?}");
    assert_eq!(of("ollama"), Some(None), "a malformed session id is not stored: {sessions:?}");
    stack.gateway.shutdown().await;
}
