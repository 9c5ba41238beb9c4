//! Chat completions through the gateway to each provider, streamed and not: the client-facing result and
//! the translated request the upstream received.

// Test helpers outside #[test] fns panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::harness::{Stack, ANTHROPIC_KEY, OPENAI_KEY};
use integration_tests::mock::{Answer, Flavor, Reply, Stop, ToolCall, Usage};
use integration_tests::schema::check_completion;
use integration_tests::summary::StreamSummary;
use serde_json::{json, Value};

/// A 1×1 PNG.
const PNG_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

fn calls(prefix: &str) -> Vec<ToolCall> {
    vec![
        ToolCall::new(&format!("{prefix}_a1"), "get_weather", json!({"city": "Paris"})),
        ToolCall::new(&format!("{prefix}_b2"), "get_weather", json!({"city": "Tokyo"})),
    ]
}

fn model_for(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::OpenAi => "gpt-4o-mini",
        Flavor::Anthropic => "anthropic/claude-sonnet-4-5",
        Flavor::Ollama => "ollama/llama3.2",
    }
}

fn upstream_model(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::OpenAi => "gpt-4o-mini",
        Flavor::Anthropic => "claude-sonnet-4-5",
        Flavor::Ollama => "llama3.2",
    }
}

const ALL: [Flavor; 3] = Flavor::ALL;

#[tokio::test]
async fn text_non_stream_each_provider() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        let r = c
            .chat(&json!({"model": model_for(flavor), "messages": [{"role": "user", "content": "Say hello"}]}))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{flavor:?}: {}", r.text());
        assert!(r.header("content-type").unwrap_or("").starts_with("application/json"), "{flavor:?}");
        let v = r.json();
        check_completion(&v).unwrap_or_else(|e| panic!("{flavor:?}: {e}"));
        assert_eq!(v["choices"][0]["message"]["content"], "Hello there!", "{flavor:?}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{flavor:?}");
        assert_eq!(v["usage"]["prompt_tokens"], 11, "{flavor:?}");
        assert_eq!(v["usage"]["completion_tokens"], 6, "{flavor:?}");
        assert_eq!(v["usage"]["total_tokens"], 17, "{flavor:?}");
        let sent = stack.mock(flavor).last_chat().await;
        assert_eq!(sent.body_json()["model"], upstream_model(flavor), "{flavor:?} upstream model");
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn text_stream_each_provider_with_usage() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        let mut s = c
            .chat_stream(&json!({"model": model_for(flavor), "stream": true,
                                 "stream_options": {"include_usage": true},
                                 "messages": [{"role": "user", "content": "Say hello"}]}))
            .await
            .unwrap();
        assert_eq!(s.status, 200, "{flavor:?}");
        assert!(s.header("content-type").unwrap_or("").starts_with("text/event-stream"), "{flavor:?}");
        let events = s.collect().await.unwrap();
        let sum = StreamSummary::from_events(&events);
        sum.assert_well_formed();
        assert_eq!(sum.text, "Hello there!", "{flavor:?}");
        assert_eq!(sum.finish_reasons, ["stop"], "{flavor:?}");
        assert_eq!(sum.usages.len(), 1, "{flavor:?}: exactly one usage chunk");
        let last = sum.chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]), "{flavor:?}: usage chunk has empty choices");
        assert_eq!(last["usage"]["total_tokens"], 17, "{flavor:?}");
        for ch in &sum.chunks[..sum.chunks.len() - 1] {
            assert!(ch["usage"].is_null(), "{flavor:?}: usage null on all but the last chunk: {ch}");
        }
        assert_eq!(stack.mock(flavor).last_chat().await.body_json()["stream"], true, "{flavor:?}");
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_keys() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        let events = c
            .chat_stream(&json!({"model": model_for(flavor), "stream": true,
                                 "messages": [{"role": "user", "content": "hi"}]}))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let sum = StreamSummary::from_events(&events);
        sum.assert_well_formed();
        assert!(sum.usages.is_empty(), "{flavor:?}: no usage without include_usage");
        for ch in &sum.chunks {
            assert!(ch.get("usage").is_none(), "{flavor:?}: no `usage` key at all: {ch}");
            assert!(!ch["choices"].as_array().unwrap().is_empty(), "{flavor:?}: no empty-choices chunk: {ch}");
        }
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn tool_calls_non_stream_each_provider() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        let expected = calls(match flavor {
            Flavor::OpenAi => "call",
            Flavor::Anthropic => "toolu",
            Flavor::Ollama => "call_k3j9x2ab",
        });
        stack.mock(flavor).enqueue_chat(Reply::answer(Answer::tools(expected.clone()))).await;
        let r = c
            .chat(&json!({"model": model_for(flavor), "tools": weather_tools(), "tool_choice": "auto",
                          "messages": [{"role": "user", "content": "Weather in Paris and Tokyo?"}]}))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{flavor:?}: {}", r.text());
        let v = r.json();
        check_completion(&v).unwrap_or_else(|e| panic!("{flavor:?}: {e}"));
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{flavor:?}");
        let tcs = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(tcs.len(), 2, "{flavor:?}");
        for (tc, want) in tcs.iter().zip(&expected) {
            assert_eq!(tc["id"], want.id.as_str(), "{flavor:?}");
            assert_eq!(tc["type"], "function");
            assert_eq!(tc["function"]["name"], "get_weather");
            let args: Value = serde_json::from_str(tc["function"]["arguments"].as_str().unwrap()).unwrap();
            assert_eq!(args, want.input, "{flavor:?}");
        }
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn tool_calls_stream_each_provider_after_text() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        let expected = calls(match flavor {
            Flavor::OpenAi => "call",
            Flavor::Anthropic => "toolu",
            Flavor::Ollama => "call_k3j9x2ab",
        });
        let answer = Answer::text("Let me check both.").with_tools(expected.clone());
        stack.mock(flavor).enqueue_chat(Reply::answer(answer)).await;
        let events = c
            .chat_stream(&json!({"model": model_for(flavor), "stream": true, "tools": weather_tools(),
                                 "messages": [{"role": "user", "content": "Weather?"}]}))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let sum = StreamSummary::from_events(&events);
        sum.assert_well_formed();
        assert_eq!(sum.text, "Let me check both.", "{flavor:?}");
        assert_eq!(sum.finish_reasons, ["tool_calls"], "{flavor:?}");
        let indices: Vec<u64> = sum.tool_calls.iter().map(|t| t.index).collect();
        assert_eq!(indices, [0, 1], "{flavor:?}: tool call indices count calls, not content blocks");
        for (got, want) in sum.tool_calls.iter().zip(&expected) {
            assert_eq!(got.id.as_deref(), Some(want.id.as_str()), "{flavor:?}");
            assert_eq!(got.ids_seen, 1, "{flavor:?}: id only in the first fragment");
            assert_eq!(got.name.as_deref(), Some("get_weather"), "{flavor:?}");
        }
        assert_eq!(sum.tool_args(), expected.iter().map(|t| t.input.clone()).collect::<Vec<_>>(), "{flavor:?}");
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn anthropic_request_translation_and_headers() {
    let stack = Stack::start().await;
    let body = json!({
        "model": "anthropic/claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris? Also describe the image."},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG_B64}")}}]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_a1", "content": "18°C, cloudy"}
        ],
        "tools": weather_tools(),
        "tool_choice": "auto",
        "max_completion_tokens": 1024,
        "temperature": 0.2,
        "stop": ["\n\nUser:"]
    });
    let r = stack.client().chat(&body).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let req = stack.anthropic.last_chat().await;
    assert_eq!(req.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert!(req.header("content-type").unwrap_or("").starts_with("application/json"));
    assert!(req.header("authorization").is_none(), "no Bearer header to Anthropic");
    let sent = req.body_json();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["max_tokens"], 1024);
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["stop_sequences"], json!(["\n\nUser:"]));
    let system = &sent["system"];
    let system_text = system.as_str().map(str::to_owned).unwrap_or_else(|| {
        system.as_array().unwrap().iter().map(|b| b["text"].as_str().unwrap()).collect::<Vec<_>>().join("")
    });
    assert_eq!(system_text, "You are terse.");
    assert_eq!(
        sent["tools"],
        json!([{"name": "get_weather", "description": "Current weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
    );
    assert_eq!(sent["tool_choice"]["type"], "auto");
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "user, assistant, user(tool_result): {msgs:?}");
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content"][0], json!({"type": "text", "text": "Weather in Paris? Also describe the image."}));
    assert_eq!(
        msgs[0]["content"][1],
        json!({"type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}})
    );
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(
        msgs[1]["content"],
        json!([{"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_a1", "name": "get_weather", "input": {"city": "Paris"}}])
    );
    assert_eq!(msgs[2]["role"], "user");
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    assert_eq!(msgs[2]["content"][0]["tool_use_id"], "call_a1");
    let result_text = match &msgs[2]["content"][0]["content"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a[0]["text"].as_str().unwrap().to_owned(),
        other => panic!("tool_result content: {other}"),
    };
    assert_eq!(result_text, "18°C, cloudy");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn anthropic_default_max_tokens_is_sent() {
    let stack = Stack::start().await;
    let r = stack
        .client()
        .chat(&json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "bare claude-* routes to anthropic: {}", r.text());
    let sent = stack.anthropic.last_chat().await;
    assert_eq!(sent.body_json()["model"], "claude-sonnet-4-5");
    assert!(sent.body_json()["max_tokens"].as_u64().is_some_and(|m| m > 0), "max_tokens is required upstream");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn ollama_request_translation() {
    let stack = Stack::start().await;
    let body = json!({
        "model": "ollama/llama3.2",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG_B64}")}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_k3j9x2ab", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Toronto\"}"}}]},
            {"role": "tool", "tool_call_id": "call_k3j9x2ab", "content": "11 degrees celsius"}
        ],
        "tools": weather_tools(),
        "max_tokens": 512,
        "temperature": 0.2,
        "seed": 42,
        "stop": ["</s>"]
    });
    let r = stack.client().chat(&body).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = stack.ollama.last_chat().await;
    let j = sent.body_json();
    assert_eq!(j["model"], "llama3.2");
    assert_eq!(j["stream"], false, "stream must be sent explicitly");
    assert_eq!(j["options"]["num_ctx"], 8192);
    assert_eq!(j["options"]["num_predict"], 512);
    assert_eq!(j["options"]["temperature"], 0.2);
    assert_eq!(j["options"]["seed"], 42);
    assert_eq!(j["options"]["stop"], json!(["</s>"]));
    assert_eq!(j["keep_alive"], "5m");
    let msgs = j["messages"].as_array().unwrap();
    assert_eq!(msgs[0], json!({"role": "system", "content": "You are terse."}));
    assert_eq!(msgs[1]["role"], "user");
    assert_eq!(msgs[1]["content"], "What is in this image?");
    assert_eq!(msgs[1]["images"], json!([PNG_B64]), "raw base64 without the data: prefix");
    assert_eq!(msgs[2]["role"], "assistant");
    assert_eq!(msgs[2]["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(msgs[2]["tool_calls"][0]["function"]["arguments"], json!({"city": "Toronto"}), "arguments as object");
    assert_eq!(msgs[3]["role"], "tool");
    assert_eq!(msgs[3]["content"], "11 degrees celsius");
    assert_eq!(msgs[3]["tool_name"], "get_weather");
    assert_eq!(j["tools"], weather_tools());
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn openai_passthrough_keeps_body_and_sets_key() {
    let stack = Stack::start().await;
    let raw = r#"{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"seed":9007199254740993,"future_param":{"x":[1,2]},"logit_bias":{"50256":-100}}"#;
    let r = stack
        .client()
        .raw(http::Method::POST, "/v1/chat/completions", &[("content-type", "application/json")], raw)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let req = stack.openai.last_chat().await;
    assert_eq!(req.header("authorization"), Some(format!("Bearer {OPENAI_KEY}").as_str()));
    let j = req.body_json();
    assert_eq!(j["model"], "gpt-4o-mini", "provider prefix stripped");
    assert_eq!(j["future_param"], json!({"x": [1, 2]}), "unknown fields pass through");
    assert_eq!(j["logit_bias"], json!({"50256": -100}));
    let body = String::from_utf8_lossy(&req.body);
    assert!(body.contains("9007199254740993"), "seed > 2^53 survives byte-for-value: {body}");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn anthropic_usage_with_cache_tokens() {
    let stack = Stack::start().await;
    let usage = Usage { input: 412, output: 89, cache_read: 2048, cache_creation: 100 };
    let answer = Answer::text("Hi").with_usage(usage);
    stack.anthropic.enqueue_chat(Reply::answer(answer.clone())).await;
    stack.anthropic.enqueue_chat(Reply::answer(answer)).await;
    let c = stack.client();
    let msg = json!([{"role": "user", "content": "hi"}]);
    let v = c.chat(&json!({"model": "anthropic/claude-sonnet-4-5", "messages": msg})).await.unwrap().json();
    let prompt = 412 + 2048 + 100;
    assert_eq!(v["usage"]["prompt_tokens"], prompt, "prompt = input + cache_read + cache_creation: {v}");
    assert_eq!(v["usage"]["completion_tokens"], 89);
    assert_eq!(v["usage"]["total_tokens"], prompt + 89);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2048);

    let events = c
        .chat_stream(&json!({"model": "anthropic/claude-sonnet-4-5", "messages": msg, "stream": true,
                             "stream_options": {"include_usage": true}}))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let sum = StreamSummary::from_events(&events);
    sum.assert_well_formed();
    let u = &sum.usages[0];
    assert_eq!(u["prompt_tokens"], prompt, "{u}");
    assert_eq!(u["completion_tokens"], 89, "output from the last message_delta, not summed with message_start: {u}");
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 2048);
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn stop_reasons_map_to_finish_reasons() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        stack.mock(flavor).enqueue_chat(Reply::answer(Answer::text("cut").with_stop(Stop::Length))).await;
        let v = c
            .chat(&json!({"model": model_for(flavor), "messages": [{"role": "user", "content": "hi"}]}))
            .await
            .unwrap()
            .json();
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{flavor:?}: {v}");
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn recorded_anthropic_tool_stream_translates() {
    // Real recorded stream: text block at content index 0, tool_use at index 1 → OpenAI tool index 0.
    let stack = Stack::start().await;
    stack.anthropic.enqueue_chat(Reply::sse_fixture("recorded/anthropic/tool_use_response.txt")).await;
    let events = stack
        .client()
        .chat_stream(&json!({"model": "anthropic/claude-sonnet-4-5", "stream": true, "tools": weather_tools(),
                             "messages": [{"role": "user", "content": "weather in Paris?"}]}))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let sum = StreamSummary::from_events(&events);
    sum.assert_well_formed();
    assert_eq!(sum.text, "I'll check the current weather in Paris for you.");
    assert_eq!(sum.tool_calls.len(), 1);
    assert_eq!(sum.tool_calls[0].index, 0);
    assert_eq!(sum.tool_calls[0].id.as_deref(), Some("toolu_01NRLabsLyVHZPKxbKvkfSMn"));
    assert_eq!(sum.tool_args()[0]["location"], "Paris");
    assert_eq!(sum.finish_reasons, ["tool_calls"]);
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn one_byte_upstream_writes_give_the_same_stream() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        let answer =
            Answer::text("Split é 日本 ok").with_tools(vec![ToolCall::new("call_x1", "f", json!({"q": "é\"x"}))]);
        stack
            .mock(flavor)
            // A 1 ms gap makes every byte its own TCP segment; Anthropic (the richest SSE) gets it, the
            // others rely on the mock flushing every one-byte frame on its own.
            .enqueue_chat(Reply::answer(answer).split(1).gap(if flavor == Flavor::Anthropic {
                std::time::Duration::from_millis(1)
            } else {
                std::time::Duration::ZERO
            }))
            .await;
        let events = c
            .chat_stream(&json!({"model": model_for(flavor), "stream": true,
                                 "messages": [{"role": "user", "content": "hi"}]}))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let sum = StreamSummary::from_events(&events);
        sum.assert_well_formed();
        assert_eq!(sum.text, "Split é 日本 ok", "{flavor:?}");
        assert_eq!(sum.tool_args(), [json!({"q": "é\"x"})], "{flavor:?}");
    }
    stack.gateway.shutdown().await;
}
