//! The rest of the OpenAI surface (issue #13) over loopback: the Responses API (passed through to
//! OpenAI-kind backends, translated statelessly for Anthropic and Ollama), embeddings and legacy
//! completions, each metered once.

// Test helpers outside #[test] fns panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::Method;
use integration_tests::client::{SseEvent, TestClient};
use integration_tests::harness::Stack;
use integration_tests::mock::{Flavor, Reply};
use serde_json::{json, Value};

fn model_for(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::OpenAi => "openai/gpt-4o-mini",
        Flavor::Anthropic => "anthropic/claude-sonnet-4-5",
        Flavor::Ollama => "ollama/llama3.2",
    }
}

/// A Responses object as OpenAI returns it.
fn openai_response(text: &str) -> Value {
    json!({"id": "resp_abc", "object": "response", "created_at": 1_764_000_000, "status": "completed",
        "model": "gpt-4o-mini-2024-07-18",
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": {"input_tokens": 21, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 30}})
}

async fn usage_total(c: &TestClient, want_requests: u64) -> Value {
    // The ledger writes asynchronously: poll until the expected number of records is visible.
    let mut last = Value::Null;
    for _ in 0..60 {
        last = c.get("/v1/usage").await.unwrap().json()["data"][0].clone();
        if last["requests"].as_u64() == Some(want_requests) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("expected {want_requests} ledger records, saw {last}");
}

fn sse_frames(events: &[SseEvent]) -> Vec<(String, Value)> {
    events
        .iter()
        .map(|e| {
            let v = e.json();
            let name = e.event.clone().unwrap_or_default();
            assert_eq!(v["type"], name.as_str(), "event name matches data.type: {v}");
            (name, v)
        })
        .collect()
}

#[tokio::test]
async fn responses_pass_through_to_openai_and_are_metered() {
    let stack = Stack::start().await;
    let c = stack.client();
    stack.openai.enqueue("/v1/responses", Reply::json(200, &openai_response("Hi from OpenAI"))).await;
    let body = json!({"model": "openai/gpt-4o-mini", "input": "hello", "store": true,
                      "previous_response_id": "resp_prev", "future_field": {"kept": true}});
    let r = c.post_json("/v1/responses", &body).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), openai_response("Hi from OpenAI"), "forwarded untouched");
    let sent = stack.openai.requests_to("/v1/responses").await;
    assert_eq!(sent.len(), 1);
    let mut expected = body.clone();
    expected["model"] = json!("gpt-4o-mini");
    assert_eq!(sent[0].body_json(), &expected, "only the model is renamed; state fields go to OpenAI");

    // Streamed: the upstream's bytes reach the client as they are; usage comes from response.completed.
    let completed = json!({"type": "response.completed", "sequence_number": 2, "response": openai_response("Hey")});
    let raw = format!(
        "event: response.created\ndata: {}\n\nevent: response.output_text.delta\ndata: {}\n\nevent: response.completed\ndata: {}\n\n",
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_abc", "status": "in_progress"}}),
        json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hey"}),
        completed
    );
    stack.openai.enqueue("/v1/responses", Reply::raw(200, "text/event-stream", vec![Bytes::from(raw.clone())])).await;
    let mut s = c
        .stream("/v1/responses", &[], &json!({"model": "openai/gpt-4o-mini", "input": "x", "stream": true}))
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let events = s.collect().await.unwrap();
    let frames = sse_frames(&events);
    assert_eq!(
        frames.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["response.created", "response.output_text.delta", "response.completed"]
    );
    assert_eq!(frames[2].1, completed);

    let total = usage_total(&c, 2).await;
    assert_eq!(total["prompt_tokens"], 42, "{total}");
    assert_eq!(total["completion_tokens"], 18, "{total}");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn responses_are_translated_for_anthropic_and_ollama() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in [Flavor::Anthropic, Flavor::Ollama] {
        let body = json!({"model": model_for(flavor), "instructions": "Be brief.", "input": "Say hello",
                          "max_output_tokens": 100, "store": true});
        let r = c.post_json("/v1/responses", &body).await.unwrap();
        assert_eq!(r.status, 200, "{flavor:?}: {}", r.text());
        let v = r.json();
        assert_eq!(v["object"], "response", "{flavor:?}: {v}");
        assert_eq!(v["status"], "completed", "{flavor:?}");
        assert_eq!(v["model"], model_for(flavor), "{flavor:?}: echoes the client's model");
        let message = v["output"].as_array().unwrap().iter().find(|o| o["type"] == "message").unwrap().clone();
        assert_eq!(message["content"][0]["type"], "output_text", "{flavor:?}");
        assert_eq!(message["content"][0]["text"], "Hello there!", "{flavor:?}");
        assert_eq!(v["usage"]["input_tokens"], 11, "{flavor:?}: {v}");
        assert_eq!(v["usage"]["output_tokens"], 6, "{flavor:?}");
        let sent = stack.mock(flavor).last_chat().await;
        assert!(sent.body.windows(9).any(|w| w == b"Be brief."), "{flavor:?}: instructions reach the upstream");

        // Streamed: Responses events rebuilt from the provider's stream.
        let stream_body = json!({"model": model_for(flavor), "input": "Say hello", "stream": true});
        let events = c.stream("/v1/responses", &[], &stream_body).await.unwrap().collect().await.unwrap();
        let frames = sse_frames(&events);
        assert_eq!(frames.first().map(|f| f.0.as_str()), Some("response.created"), "{flavor:?}");
        assert_eq!(frames.last().map(|f| f.0.as_str()), Some("response.completed"), "{flavor:?}");
        for (i, (_, v)) in frames.iter().enumerate() {
            assert_eq!(v["sequence_number"], i as u64, "{flavor:?}: sequence numbers from 0");
        }
        let text: String = frames
            .iter()
            .filter(|f| f.0 == "response.output_text.delta")
            .map(|f| f.1["delta"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(text, "Hello there!", "{flavor:?}");
        assert_eq!(frames.last().unwrap().1["response"]["usage"]["output_tokens"], 6, "{flavor:?}");
    }
    // Server-side state cannot be honoured statelessly: a 400 naming the field, no upstream call.
    let before = stack.anthropic.calls("/v1/messages").await;
    let r = c
        .post_json(
            "/v1/responses",
            &json!({"model": model_for(Flavor::Anthropic), "input": "x", "previous_response_id": "resp_1"}),
        )
        .await
        .unwrap();
    let e = r.expect_error(400, "stateful on a translated backend");
    assert_eq!(e["param"], "previous_response_id");
    assert_eq!(stack.anthropic.calls("/v1/messages").await, before);
    let total = usage_total(&c, 5).await;
    assert_eq!(total["completion_tokens"], 24, "four answered requests of 6 tokens, one refused: {total}");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn stored_responses_are_forwarded_to_openai() {
    let stack = Stack::start().await;
    let c = stack.client();
    stack.openai.enqueue("/v1/responses/resp_abc", Reply::json(200, &openai_response("stored"))).await;
    let r = c.get("/v1/responses/resp_abc").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "resp_abc");
    stack
        .openai
        .enqueue(
            "/v1/responses/resp_abc",
            Reply::json(200, &json!({"id": "resp_abc", "object": "response.deleted", "deleted": true})),
        )
        .await;
    let r = c.raw(Method::DELETE, "/v1/responses/resp_abc", &[], "").await.unwrap();
    assert_eq!(r.json()["deleted"], true);
    let seen = stack.openai.requests_to("/v1/responses/resp_abc").await;
    assert_eq!(seen.iter().map(|r| r.method.clone()).collect::<Vec<_>>(), [Method::GET, Method::DELETE]);
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn embeddings_for_openai_and_ollama_and_a_clear_error_for_anthropic() {
    let stack = Stack::start().await;
    let c = stack.client();
    let openai_answer = json!({"object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
        "usage": {"prompt_tokens": 4, "total_tokens": 4}});
    stack.openai.enqueue("/v1/embeddings", Reply::json(200, &openai_answer)).await;
    let r = c
        .post_json("/v1/embeddings", &json!({"model": "openai/text-embedding-3-small", "input": "hello"}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), openai_answer);
    assert_eq!(stack.openai.requests_to("/v1/embeddings").await[0].body_json()["model"], "text-embedding-3-small");

    stack
        .ollama
        .enqueue(
            "/api/embed",
            Reply::json(
                200,
                &json!({"model": "nomic-embed-text", "embeddings": [[0.5, 1.0], [0.0, -1.0]], "prompt_eval_count": 6}),
            ),
        )
        .await;
    let r =
        c.post_json("/v1/embeddings", &json!({"model": "ollama/nomic-embed-text", "input": ["a", "b"]})).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["embedding"], json!([0.0, -1.0]));
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    let sent = stack.ollama.requests_to("/api/embed").await;
    assert_eq!(sent[0].body_json()["input"], json!(["a", "b"]));

    let r =
        c.post_json("/v1/embeddings", &json!({"model": "anthropic/claude-sonnet-4-5", "input": "x"})).await.unwrap();
    let e = r.expect_error(400, "anthropic embeddings");
    assert_eq!(e["param"], "model");
    let total = usage_total(&c, 3).await;
    assert_eq!(total["prompt_tokens"], 10, "{total}");
    assert_eq!(total["completion_tokens"], 0, "{total}");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn legacy_completions_for_every_provider() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in Flavor::ALL {
        let r = c
            .post_json("/v1/completions", &json!({"model": model_for(flavor), "prompt": "Say hello", "max_tokens": 20}))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{flavor:?}: {}", r.text());
        let v = r.json();
        assert_eq!(v["object"], "text_completion", "{flavor:?}: {v}");
        assert_eq!(v["choices"][0]["text"], "Hello there!", "{flavor:?}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{flavor:?}");
        assert_eq!(v["usage"]["completion_tokens"], 6, "{flavor:?}");
        let events = c
            .stream("/v1/completions", &[], &json!({"model": model_for(flavor), "prompt": "Say hello", "stream": true}))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert!(events.last().is_some_and(SseEvent::is_done), "{flavor:?}: [DONE] last");
        let text: String = events
            .iter()
            .filter(|e| !e.is_done())
            .map(|e| e.json()["choices"][0]["text"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(text, "Hello there!", "{flavor:?}");
    }
    usage_total(&c, 6).await;
    stack.gateway.shutdown().await;
}

/// Codex (0.171, `codex exec`) declares its hosted `web_search` tool on every turn, whatever the model.
/// For translated backends the gateway drops it for Codex (recognised by `originator: codex_…` or a
/// `codex_…` user agent) and says so in `x-gateway-dropped-params`; other clients still get the 400
/// naming the tool. Found by tests/python/test_codex.py: before, every Codex turn on `anthropic/…` or
/// `ollama/…` failed with 400 `tools[8].type`.
#[tokio::test]
async fn codex_web_search_tool_is_dropped_on_translated_backends() {
    let stack = Stack::start().await;
    let c = stack.client();
    let body = json!({"model": "", "stream": false, "store": false, "include": ["reasoning.encrypted_content"],
        "reasoning": {"summary": "auto"}, "prompt_cache_key": "01a2", "tool_choice": "auto",
        "parallel_tool_calls": true, "client_metadata": {"session_id": "01a2"},
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "say hi"}]},
                  {"type": "web_search_call", "id": "ws_1", "status": "completed",
                   "action": {"type": "search", "query": "x"}}],
        "tools": [{"type": "function", "name": "exec_command", "description": "Runs a command",
                   "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}, "strict": false},
                  {"type": "web_search", "external_web_access": false}]});
    for flavor in [Flavor::Anthropic, Flavor::Ollama] {
        let mut b = body.clone();
        b["model"] = json!(model_for(flavor));
        // Not Codex: the hosted tool is refused, naming it.
        let r = c.post_json("/v1/responses", &b).await.unwrap();
        let e = r.expect_error(400, "web_search for a non-Codex client");
        assert_eq!(e["param"], "tools[1].type", "{flavor:?}: {e}");

        for (name, value) in
            [("originator", "codex_exec"), ("user-agent", "codex_exec/0.171.0 (Debian 12.0.0; x86_64)")]
        {
            let r = c
                .raw(
                    Method::POST,
                    "/v1/responses",
                    &[("content-type", "application/json"), (name, value)],
                    b.to_string(),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{flavor:?} {name}: {}", r.text());
            assert_eq!(r.json()["output"][0]["content"][0]["text"], "Hello there!", "{flavor:?}");
            assert_eq!(r.header("x-gateway-dropped-params"), Some("web_search"), "{flavor:?} {name}");
        }
        let path = if flavor == Flavor::Anthropic { "/v1/messages" } else { "/api/chat" };
        let mock = if flavor == Flavor::Anthropic { &stack.anthropic } else { &stack.ollama };
        let sent = mock.requests_to(path).await;
        assert_eq!(sent.len(), 2, "{flavor:?}: the refused request never left");
        for s in &sent {
            let tools = s.body_json()["tools"].as_array().unwrap().clone();
            assert_eq!(tools.len(), 1, "{flavor:?}: only the function tool is forwarded: {tools:?}");
            assert!(!s.body_json().to_string().contains("web_search"), "{flavor:?}: {}", s.body_json());
        }
    }
    stack.gateway.shutdown().await;
}
