//! HTTP-level behaviour: request ids, HTTP/2 prior knowledge, unknown routes, concurrency, graceful
//! shutdown.

// Test helpers outside #[test] fns panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::Method;
use integration_tests::client::TestClient;
use integration_tests::harness::Stack;
use integration_tests::mock::{Answer, Reply};
use integration_tests::schema::{check_completion, check_error, check_model_list};
use integration_tests::summary::StreamSummary;
use serde_json::json;

fn hello(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn x_request_id_is_echoed_or_generated() {
    let stack = Stack::start().await;
    let c = stack.client();
    let body = hello("anthropic/claude-sonnet-4-5").to_string();
    let r = c
        .raw(
            Method::POST,
            "/v1/chat/completions",
            &[("content-type", "application/json"), ("x-request-id", "it-req-0001")],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("it-req-0001"), "client request id echoed");

    let r = c.raw(Method::POST, "/v1/chat/completions", &[("content-type", "application/json")], body).await.unwrap();
    let generated = r.header("x-request-id").unwrap_or_else(|| panic!("no generated x-request-id: {:?}", r.headers));
    assert!(!generated.is_empty());
    let r2 = c.chat(&hello("anthropic/claude-sonnet-4-5")).await.unwrap();
    assert_ne!(r2.header("x-request-id"), Some(generated), "a fresh id per request");

    // On errors and streams too.
    let r = c
        .raw(
            Method::POST,
            "/v1/chat/completions",
            &[("content-type", "application/json"), ("x-request-id", "it-req-404")],
            hello("nope-model").to_string(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-request-id"), Some("it-req-404"));
    let mut body = hello("ollama/llama3.2");
    body["stream"] = json!(true);
    let s = c.stream("/v1/chat/completions", &[("x-request-id", "it-req-stream")], &body).await.unwrap();
    assert_eq!(s.header("x-request-id"), Some("it-req-stream"));
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    let stack = Stack::start().await;
    let c = TestClient::h2c(&stack.gateway.base_url());
    let r = c.get("/v1/models").await.unwrap();
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.status, 200);
    check_model_list(&r.json()).unwrap();
    let r = c.chat(&hello("anthropic/claude-sonnet-4-5")).await.unwrap();
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.status, 200, "{}", r.text());
    check_completion(&r.json()).unwrap();
    let mut body = hello("gpt-4o-mini");
    body["stream"] = json!(true);
    let events = c.chat_stream(&body).await.unwrap().collect().await.unwrap();
    let sum = StreamSummary::from_events(&events);
    sum.assert_well_formed();
    assert_eq!(sum.text, "Hello there!");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn stream_response_headers() {
    let stack = Stack::start().await;
    let mut body = hello("anthropic/claude-sonnet-4-5");
    body["stream"] = json!(true);
    let s = stack.client().chat_stream(&body).await.unwrap();
    assert_eq!(s.status, 200);
    assert!(s.header("content-type").unwrap_or("").starts_with("text/event-stream"));
    assert!(s.header("content-encoding").is_none(), "no compression on the stream");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn unknown_route_is_404_envelope() {
    let stack = Stack::start().await;
    let r = stack.client().get("/v1/nope").await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    check_error(&r.json()).unwrap();
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn concurrent_streams_to_all_providers() {
    let stack = Stack::start().await;
    let c = stack.client();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let c = c.clone();
        let model = ["gpt-4o-mini", "anthropic/claude-sonnet-4-5", "ollama/llama3.2"][i % 3];
        tasks.push(tokio::spawn(async move {
            let mut body = hello(model);
            body["stream"] = json!(true);
            let events = c.chat_stream(&body).await.unwrap().collect().await.unwrap();
            let sum = StreamSummary::from_events(&events);
            sum.assert_well_formed();
            assert_eq!(sum.text, "Hello there!", "{model}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_stream() {
    let stack = Stack::start().await;
    let pieces: Vec<String> = (0..10).map(|i| format!("w{i} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    stack.anthropic.enqueue_chat(Reply::answer(Answer::text_pieces(&pieces)).gap(Duration::from_millis(100))).await;
    let mut body = hello("anthropic/claude-sonnet-4-5");
    body["stream"] = json!(true);
    let mut s = stack.client().chat_stream(&body).await.unwrap();
    let first = s.next_event().await.unwrap().expect("a first event");
    let Stack { gateway, openai, anthropic, ollama } = stack;
    let shutdown = tokio::spawn(gateway.shutdown());
    let mut events = vec![first];
    while let Some(ev) = s.next_event().await.unwrap() {
        events.push(ev);
    }
    let sum = StreamSummary::from_events(&events);
    assert!(sum.errors.is_empty(), "the in-flight stream completes during the grace period");
    assert!(sum.done_last, "stream finished with [DONE]");
    assert_eq!(sum.text, pieces.concat(), "the whole text arrives");
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("serve returned").unwrap();
    drop((openai, anthropic, ollama));
}
