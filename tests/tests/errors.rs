//! Error mapping, faults mid-stream, timeouts and client cancellation.

// Test helpers outside #[test] fns panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use integration_tests::client::StreamEnd;
use integration_tests::harness::{Stack, Timeouts};
use integration_tests::mock::{Answer, BodyOutcome, Ending, Flavor, Reply};
use integration_tests::schema::check_error;
use integration_tests::summary::StreamSummary;
use serde_json::{json, Value};

const ALL: [Flavor; 3] = Flavor::ALL;

fn model_for(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::OpenAi => "openai/gpt-4o-mini",
        Flavor::Anthropic => "anthropic/claude-sonnet-4-5",
        Flavor::Ollama => "ollama/llama3.2",
    }
}

fn chat_body(flavor: Flavor, stream: bool) -> Value {
    json!({"model": model_for(flavor), "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn upstream_429_keeps_status_and_retry_after() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        stack
            .mock(flavor)
            .enqueue_chat(Reply::error(flavor, 429, "Rate limit reached").header("retry-after", "17"))
            .await;
        let r = c.chat(&chat_body(flavor, false)).await.unwrap();
        r.expect_error(429, &format!("{flavor:?} 429"));
        assert_eq!(r.header("retry-after"), Some("17"), "{flavor:?}: retry-after preserved");
    }
    // Same for a stream request: the error arrives before any byte of the stream.
    stack
        .anthropic
        .enqueue_chat(Reply::error(Flavor::Anthropic, 429, "Rate limit reached").header("retry-after", "5"))
        .await;
    let r = c.chat(&chat_body(Flavor::Anthropic, true)).await.unwrap();
    r.expect_error(429, "anthropic stream 429");
    assert_eq!(r.header("retry-after"), Some("5"));
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn anthropic_529_becomes_503_with_retry_after() {
    // One attempt: the default policy would retry the overload (issue 11, item 14).
    let stack = Stack::start_with(Timeouts::default(), "retry: {attempts: 1}\n").await;
    stack.anthropic.enqueue_chat(Reply::error(Flavor::Anthropic, 529, "Overloaded")).await;
    let r = stack.client().chat(&chat_body(Flavor::Anthropic, false)).await.unwrap();
    let e = r.expect_error(503, "529");
    assert!(e["message"].as_str().unwrap_or("").contains("Overloaded"), "upstream message kept: {e}");
    let ra = r.header("retry-after").unwrap_or_else(|| panic!("503 without retry-after; headers {:?}", r.headers));
    assert!(ra.parse::<u64>().is_ok(), "retry-after in seconds: {ra}");

    stack.anthropic.enqueue_chat(Reply::error(Flavor::Anthropic, 529, "Overloaded").header("retry-after", "9")).await;
    let r = stack.client().chat(&chat_body(Flavor::Anthropic, true)).await.unwrap();
    r.expect_error(503, "529 on a stream request");
    assert_eq!(r.header("retry-after"), Some("9"), "upstream retry-after kept");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn upstream_500_becomes_502() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        stack.mock(flavor).enqueue_chat(Reply::error(flavor, 500, "internal")).await;
        let r = c.chat(&chat_body(flavor, false)).await.unwrap();
        let e = r.expect_error(502, &format!("{flavor:?} 500"));
        assert_eq!(e["type"], "server_error", "{flavor:?}");
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn upstream_401_becomes_502() {
    // Our upstream key was rejected: the client's own credentials are fine, so not a 401 to the client.
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        stack.mock(flavor).enqueue_chat(Reply::error(flavor, 401, "invalid x-api-key")).await;
        let r = c.chat(&chat_body(flavor, false)).await.unwrap();
        r.expect_error(502, &format!("{flavor:?} upstream 401"));
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn upstream_html_error_page_becomes_502() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        stack.mock(flavor).enqueue_chat(Reply::html(502)).await;
        let r = c.chat(&chat_body(flavor, false)).await.unwrap();
        let e = r.expect_error(502, &format!("{flavor:?} html"));
        assert_eq!(e["type"], "server_error");
        assert!(!r.text().contains("<html>"), "HTML must not leak into the envelope: {}", r.text());
    }
    // A 200 whose body is not a valid response is as bad (wire-formats.md §7 case 52).
    stack.anthropic.enqueue_chat(Reply::raw(200, "text/html", vec!["<html>hi</html>".into()])).await;
    let r = c.chat(&chat_body(Flavor::Anthropic, false)).await.unwrap();
    r.expect_error(502, "anthropic 200 with an HTML body");
    stack
        .ollama
        .enqueue_chat(Reply::json(200, &json!({"error": "an error was encountered while running the model"})))
        .await;
    let r = c.chat(&chat_body(Flavor::Ollama, false)).await.unwrap();
    r.expect_error(502, "ollama 200 with an error object");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn ollama_model_not_found_becomes_404() {
    let stack = Stack::start().await;
    stack.ollama.enqueue_chat(Reply::error(Flavor::Ollama, 404, "model 'nope' not found, try pulling it first")).await;
    let r = stack
        .client()
        .chat(&json!({"model": "ollama/nope", "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    let e = r.expect_error(404, "ollama 404");
    assert_eq!(e["code"], "model_not_found");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn anthropic_400_keeps_status_and_message() {
    let stack = Stack::start().await;
    stack
        .anthropic
        .enqueue_chat(Reply::error(Flavor::Anthropic, 400, "messages: text content blocks must be non-empty"))
        .await;
    let r = stack.client().chat(&chat_body(Flavor::Anthropic, false)).await.unwrap();
    let e = r.expect_error(400, "anthropic 400");
    assert_eq!(e["type"], "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains("text content blocks must be non-empty"), "{e}");
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let stack = Stack::start().await;
    let c = stack.client();
    for model in ["no-such-model-xyz", "nosuchprovider/gpt-4o"] {
        let r = c.chat(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})).await.unwrap();
        let e = r.expect_error(404, model);
        assert_eq!(e["code"], "model_not_found", "{model}");
        assert_eq!(e["param"], "model", "{model}");
    }
    for m in [&stack.openai, &stack.anthropic, &stack.ollama] {
        assert_eq!(m.calls(m.flavor().chat_path()).await, 0, "no upstream call for an unknown model");
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn bad_json_is_400() {
    let stack = Stack::start().await;
    let c = stack.client();
    let r = c
        .raw(http::Method::POST, "/v1/chat/completions", &[("content-type", "application/json")], "{\"model\": ")
        .await
        .unwrap();
    let e = r.expect_error(400, "truncated JSON");
    assert_eq!(e["type"], "invalid_request_error");
    let r = c.chat(&json!({"model": "anthropic/claude-sonnet-4-5"})).await.unwrap();
    r.expect_error(400, "missing messages");
    let r = c.chat(&json!({"messages": [{"role": "user", "content": "hi"}]})).await.unwrap();
    r.expect_error(400, "missing model");
    let r = c
        .raw(http::Method::POST, "/v1/chat/completions", &[("content-type", "application/json")], "[1,2]")
        .await
        .unwrap();
    r.expect_error(400, "JSON array body");
    let r = c.chat(&json!({"model": "ollama/llama3.2", "messages": []})).await.unwrap();
    r.expect_error(400, "empty messages (must never reach Ollama, where it loads the model)");
    assert_eq!(stack.ollama.calls("/api/chat").await, 0);
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn oversized_body_is_413_before_upstream() {
    let stack = Stack::start_with(Timeouts::default(), "max_body_bytes: 4096").await;
    let big = "x".repeat(10_000);
    let r = stack
        .client()
        .chat(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": big}]}))
        .await
        .unwrap();
    r.expect_error(413, "oversized body");
    assert_eq!(stack.openai.calls("/v1/chat/completions").await, 0);
    // Just under the limit still works.
    let r = stack
        .client()
        .chat(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(3000)}]}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn n_greater_than_one_to_anthropic_is_400() {
    let stack = Stack::start().await;
    let r = stack
        .client()
        .chat(&json!({"model": "anthropic/claude-sonnet-4-5", "n": 2, "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    let e = r.expect_error(400, "n=2 to anthropic");
    assert_eq!(e["param"], "n");
    assert_eq!(stack.anthropic.calls("/v1/messages").await, 0);
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn stream_options_without_stream_is_400() {
    let stack = Stack::start().await;
    let r = stack
        .client()
        .chat(&json!({"model": "anthropic/claude-sonnet-4-5", "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    let e = r.expect_error(400, "stream_options with stream=false");
    assert_eq!(e["param"], "stream_options");
    stack.gateway.shutdown().await;
}

/// Number of upstream events that already carry some text (Anthropic opens with start, block start, ping).
fn cut_after_text(flavor: Flavor) -> usize {
    match flavor {
        Flavor::Anthropic => 5,
        Flavor::OpenAi | Flavor::Ollama => 3,
    }
}

fn assert_error_tail(sum: &StreamSummary, what: &str) {
    assert_eq!(sum.errors.len(), 1, "{what}: exactly one error event");
    assert_eq!(sum.done_count, 0, "{what}: no [DONE] after a failure");
    assert_eq!(sum.events_after_error, 0, "{what}: the error event is the last event");
    assert!(sum.finish_reasons.is_empty(), "{what}: no fake finish chunk: {:?}", sum.finish_reasons);
}

#[tokio::test]
async fn upstream_disconnect_mid_stream_gives_error_event_without_done() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        stack
            .mock(flavor)
            .enqueue_chat(
                Reply::answer(Answer::text("one two three four five"))
                    .ending(Ending::DisconnectAfter(cut_after_text(flavor))),
            )
            .await;
        let mut s = c.chat_stream(&chat_body(flavor, true)).await.unwrap();
        assert_eq!(s.status, 200, "{flavor:?}");
        let events = s.collect().await.unwrap();
        let sum = StreamSummary::from_events(&events);
        assert_error_tail(&sum, &format!("{flavor:?} disconnect"));
        assert!(!sum.text.is_empty(), "{flavor:?}: content before the cut reaches the client");
        assert_eq!(s.end(), Some(&StreamEnd::Eof), "{flavor:?}: the gateway ends its own stream cleanly");
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn upstream_inband_error_mid_stream_gives_error_event_without_done() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        stack
            .mock(flavor)
            .enqueue_chat(
                Reply::answer(Answer::text("one two three four"))
                    .ending(Ending::InbandErrorAfter(cut_after_text(flavor))),
            )
            .await;
        let events = c.chat_stream(&chat_body(flavor, true)).await.unwrap().collect().await.unwrap();
        let sum = StreamSummary::from_events(&events);
        assert_error_tail(&sum, &format!("{flavor:?} in-band error"));
        assert!(!sum.text.is_empty(), "{flavor:?}: content before the error reaches the client");
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn client_cancel_mid_stream_closes_upstream_quickly() {
    let stack = Stack::start().await;
    let c = stack.client();
    for flavor in ALL {
        let m = stack.mock(flavor);
        m.enqueue_chat(Reply::answer(Answer::text("one two three four five six")).ending(Ending::StallAfter(3))).await;
        let mut s = c.chat_stream(&chat_body(flavor, true)).await.unwrap();
        assert_eq!(s.status, 200, "{flavor:?}");
        let first = s.next_event().await.unwrap();
        assert!(first.is_some(), "{flavor:?}: got a first event");
        let dropped = Instant::now();
        drop(s);
        let outcome = m.wait_peer_closed(Duration::from_secs(2)).await;
        assert!(
            matches!(outcome, Some(BodyOutcome::PeerClosed { .. })),
            "{flavor:?}: the upstream connection must be dropped within 2 s of the client hanging up; \
             mock outcomes {:?}",
            m.outcomes().await
        );
        assert!(dropped.elapsed() < Duration::from_secs(2));
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn first_byte_timeout_is_504() {
    let t = Timeouts { connect_ms: 1_000, first_byte_ms: 400, idle_ms: 5_000 };
    let stack = Stack::start_with(t, "").await;
    let c = stack.client();
    for (flavor, stream) in [(Flavor::OpenAi, false), (Flavor::Anthropic, true), (Flavor::Ollama, false)] {
        stack.mock(flavor).enqueue_chat(Reply::answer(Answer::text("late")).delay(Duration::from_secs(4))).await;
        let started = Instant::now();
        let r = c.chat(&chat_body(flavor, stream)).await.unwrap();
        r.expect_error(504, &format!("{flavor:?} first byte timeout (stream={stream})"));
        assert!(started.elapsed() < Duration::from_secs(3), "{flavor:?}: 504 after {:?}", started.elapsed());
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_mid_stream_gives_error_event() {
    let t = Timeouts { connect_ms: 1_000, first_byte_ms: 5_000, idle_ms: 400 };
    let stack = Stack::start_with(t, "").await;
    let c = stack.client();
    for flavor in ALL {
        stack
            .mock(flavor)
            .enqueue_chat(Reply::answer(Answer::text("one two three four")).ending(Ending::StallAfter(3)))
            .await;
        let started = Instant::now();
        let events = c.chat_stream(&chat_body(flavor, true)).await.unwrap().collect().await.unwrap();
        let sum = StreamSummary::from_events(&events);
        assert_error_tail(&sum, &format!("{flavor:?} idle timeout"));
        assert!(started.elapsed() < Duration::from_secs(4), "{flavor:?}: error after {:?}", started.elapsed());
        assert!(
            stack.mock(flavor).wait_peer_closed(Duration::from_secs(2)).await.is_some(),
            "{flavor:?}: the stalled upstream connection is closed after the idle timeout"
        );
    }
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn connection_refused_is_502() {
    // A provider at a closed port.
    use integration_tests::harness::{ConfigBuilder, GatewayUnderTest};
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let yaml = ConfigBuilder::new()
        .provider_at("anthropic", Flavor::Anthropic, &format!("http://{closed}"), Timeouts::default())
        .build();
    let gw = GatewayUnderTest::start(&yaml).await;
    let r = gw.client().chat(&chat_body(Flavor::Anthropic, false)).await.unwrap();
    let status = r.status.as_u16();
    assert!(status == 502 || status == 503, "connection refused → 502/503, got {status}: {}", r.text());
    check_error(&r.json()).unwrap();
    gw.shutdown().await;
}
