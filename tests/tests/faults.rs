//! Fault injection over loopback (issue 6): upstreams that refuse, reset, stall, send garbage or rate
//! limit; retries, fallbacks and circuit breakers; hostile and vanishing clients; a ledger database
//! that goes away under load.
//!
//! Every case states its expected outcome, then checks that (1) the gateway keeps serving other
//! requests, (2) nothing leaks: the fault upstream has no response in progress (`busy() == 0`) and
//! `aggregator_open_streams` / `aggregator_inflight_requests` are back to 0, and (3) the ledger holds
//! the right record, read from the embedded SQLite file after the gateway shut down and drained (or
//! from Postgres for the database case). Every test is bounded by [`CASE_DEADLINE`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use integration_tests::client::{SseStream, TestClient, TestResponse};
use integration_tests::faults::gateway::{record, FaultGateway, LedgerRow};
use integration_tests::faults::proxy::TcpProxy;
use integration_tests::faults::upstream::{End, FaultUpstream, Script};
use integration_tests::faults::{rss_kib, wait_for};
use integration_tests::harness::{ConfigBuilder, Timeouts};
use integration_tests::mock::{Answer, Flavor, MockUpstream};
use integration_tests::schema::check_error;
use integration_tests::summary::StreamSummary;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any one test.
const CASE_DEADLINE: Duration = Duration::from_secs(90);
/// How long leaks get to clear after a case.
const SETTLE: Duration = Duration::from_secs(3);
/// Serialises the memory-sensitive tests (RSS is per process and tests share it).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ALL: [Flavor; 3] = Flavor::ALL;

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    if tokio::time::timeout(CASE_DEADLINE, f).await.is_err() {
        panic!("fault case exceeded its {CASE_DEADLINE:?} deadline");
    }
}

fn model(provider: &str, flavor: Flavor) -> String {
    match flavor {
        Flavor::OpenAi => format!("{provider}/gpt-4o-mini"),
        Flavor::Anthropic => format!("{provider}/claude-sonnet-4-5"),
        Flavor::Ollama => format!("{provider}/llama3.2"),
    }
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// Events that carry some text (Anthropic opens with message_start, block start and a ping).
fn after_text(flavor: Flavor) -> usize {
    match flavor {
        Flavor::Anthropic => 5,
        Flavor::OpenAi | Flavor::Ollama => 3,
    }
}

async fn post(c: &TestClient, id: &str, body: &Value) -> TestResponse {
    c.raw(
        http::Method::POST,
        "/v1/chat/completions",
        &[("content-type", "application/json"), ("x-request-id", id)],
        body.to_string(),
    )
    .await
    .unwrap_or_else(|e| panic!("{id}: {e}"))
}

async fn open_stream(c: &TestClient, id: &str, body: &Value) -> SseStream {
    c.stream("/v1/chat/completions", &[("x-request-id", id)], body).await.unwrap_or_else(|e| panic!("{id}: {e}"))
}

/// One error event, no `[DONE]`, nothing after the error, no fake finish.
fn assert_error_tail(sum: &StreamSummary, what: &str) {
    assert_eq!(sum.errors.len(), 1, "{what}: exactly one error event");
    assert_eq!(sum.done_count, 0, "{what}: no [DONE] after a failure");
    assert_eq!(sum.events_after_error, 0, "{what}: the error event is the last");
    assert!(sum.finish_reasons.is_empty(), "{what}: no finish_reason: {:?}", sum.finish_reasons);
}

fn base_config(healthy: &MockUpstream) -> ConfigBuilder {
    ConfigBuilder::new().provider("healthy", healthy).extra("shutdown_grace_secs: 2")
}

/// The gateway still answers a normal request (streamed and not) through the healthy provider.
async fn assert_still_serving(gw: &FaultGateway) {
    let c = gw.client();
    let r = c.chat(&chat("healthy/gpt-4o-mini", false)).await.unwrap_or_else(|e| panic!("after the fault: {e}"));
    assert_eq!(r.status, 200, "a normal request after the fault: {}", r.text());
    let mut s = c
        .chat_stream(&chat("healthy/gpt-4o-mini", true))
        .await
        .unwrap_or_else(|e| panic!("stream after the fault: {e}"));
    let events = s.collect().await.unwrap_or_else(|e| panic!("stream after the fault: {e}"));
    let sum = StreamSummary::from_events(&events);
    assert_eq!(sum.text, "Hello there!", "a normal stream after the fault");
    assert!(sum.done_last);
}

/// No response in progress at any fault upstream, and the gateway's gauges are back to 0.
async fn assert_no_leaks(gw: &FaultGateway, ups: &[&FaultUpstream]) {
    for up in ups {
        assert!(
            up.wait_idle(SETTLE).await,
            "{:?} upstream: {} response(s) still in progress (open connections {}): the gateway leaked them",
            up.flavor(),
            up.busy(),
            up.open()
        );
    }
    let (streams, inflight) = gw.wait_gauges_zero(SETTLE).await;
    assert_eq!(streams, 0.0, "aggregator_open_streams back to 0");
    assert_eq!(inflight, 0.0, "aggregator_inflight_requests back to 0");
}

fn assert_record(rows: &[LedgerRow], id: &str, status: &str, http: i64, attempts: i64) -> LedgerRow {
    let r = record(rows, id).clone();
    assert_eq!(
        (r.status.as_str(), r.http_status, r.attempts),
        (status, http, attempts),
        "ledger record of {id}: {r:?}"
    );
    r
}

// -------------------------------------------------------------------------------------------------
// Upstream faults
// -------------------------------------------------------------------------------------------------

/// Expected: an upstream whose port refuses connections → 502 (streamed or not), ledger
/// `upstream_error` with http 502 and one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refuses_connections_is_502() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let t = Timeouts { connect_ms: 1_000, ..Timeouts::default() };
        let yaml = base_config(&healthy)
            .provider_at("dead", Flavor::Anthropic, &format!("http://{closed}"), t)
            .provider_at("deadoai", Flavor::OpenAi, &format!("http://{closed}/v1"), t)
            .build();
        let gw = FaultGateway::start(&yaml).await;
        let c = gw.client();
        for (id, m, stream) in [
            ("refused-a", "dead/claude-sonnet-4-5", false),
            ("refused-b", "dead/claude-sonnet-4-5", true),
            ("refused-c", "deadoai/gpt-4o", true),
        ] {
            let started = Instant::now();
            let r = post(&c, id, &chat(m, stream)).await;
            r.expect_error(502, id);
            assert!(started.elapsed() < Duration::from_secs(2), "{id}: refused fast, took {:?}", started.elapsed());
        }
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &[]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        for id in ["refused-a", "refused-b", "refused-c"] {
            assert_record(&rows, id, "upstream_error", 502, 1);
        }
    })
    .await;
}

/// Expected: an upstream that resets (RST) mid-stream → the client gets the content so far, one
/// OpenAI-shaped error event and no `[DONE]`; ledger `partial` (http 200) with estimated usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_stream_is_error_event_and_partial() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let ups = [
            FaultUpstream::start(Flavor::OpenAi).await,
            FaultUpstream::start(Flavor::Anthropic).await,
            FaultUpstream::start(Flavor::Ollama).await,
        ];
        let mut b = base_config(&healthy);
        for (i, up) in ups.iter().enumerate() {
            b = b.provider_at(&format!("up{i}"), up.flavor(), &up.base_url(), Timeouts::default());
        }
        let gw = FaultGateway::start(&b.build()).await;
        let c = gw.client();
        for (i, up) in ups.iter().enumerate() {
            let f = up.flavor();
            up.enqueue(Script::answer(Answer::text("one two three four five six")).end(End::ResetAfter(after_text(f))))
                .await;
            let id = format!("reset-{i}");
            let mut s = open_stream(&c, &id, &chat(&model(&format!("up{i}"), f), true)).await;
            assert_eq!(s.status, 200, "{f:?}");
            let sum = StreamSummary::from_events(&s.collect().await.unwrap());
            assert_error_tail(&sum, &format!("{f:?} reset"));
            assert!(!sum.text.is_empty(), "{f:?}: content before the reset reaches the client");
            assert!(
                wait_for(SETTLE, || async { up.open() == 0 }).await,
                "{f:?}: the reset connection is gone from the pool"
            );
        }
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &ups.iter().collect::<Vec<_>>()).await;
        let rows = gw.shutdown_and_read_ledger().await;
        for i in 0..3 {
            let r = assert_record(&rows, &format!("reset-{i}"), "partial", 200, 1);
            assert!(r.completion_tokens > 0, "usage so far is recorded: {r:?}");
        }
    })
    .await;
}

/// Expected: an upstream that sends no response headers → 504 once `first_byte_ms` (300 ms) passed,
/// streamed or not, and the gateway hangs up on it; ledger `upstream_error` http 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stall_before_first_byte_is_504_within_first_byte_ms() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let up = FaultUpstream::start(Flavor::Anthropic).await;
        let oai = FaultUpstream::start(Flavor::OpenAi).await;
        let t = Timeouts { connect_ms: 1_000, first_byte_ms: 300, idle_ms: 5_000 };
        let yaml = base_config(&healthy)
            .provider_at("up", up.flavor(), &up.base_url(), t)
            .provider_at("oai", oai.flavor(), &oai.base_url(), t)
            .build();
        let gw = FaultGateway::start(&yaml).await;
        let c = gw.client();
        let cases = [
            ("stall-head-a", &up, "up/claude-sonnet-4-5", false),
            ("stall-head-b", &up, "up/claude-sonnet-4-5", true),
            ("stall-head-c", &oai, "oai/gpt-4o", true),
        ];
        for (id, u, m, stream) in cases {
            let before = u.peer_closed();
            u.enqueue(Script::answer(Answer::text("late")).delay(Duration::from_secs(20))).await;
            let started = Instant::now();
            let r = post(&c, id, &chat(m, stream)).await;
            let took = started.elapsed();
            r.expect_error(504, id);
            assert!(
                took >= Duration::from_millis(300) && took < Duration::from_millis(1_800),
                "{id}: 504 after {took:?}"
            );
            assert!(
                u.wait_peer_closed(before + 1, SETTLE).await,
                "{id}: the gateway closed the stalled upstream connection"
            );
        }
        // Headers on time, then silence before the first event: still the first-byte budget, still 504.
        up.enqueue(Script::answer(Answer::text("late")).end(End::StallAfter(0))).await;
        let started = Instant::now();
        let r = post(&c, "stall-head-d", &chat("up/claude-sonnet-4-5", true)).await;
        r.expect_error(504, "headers then silence");
        assert!(started.elapsed() < Duration::from_millis(1_800), "504 after {:?}", started.elapsed());
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &[&up, &oai]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        for id in ["stall-head-a", "stall-head-b", "stall-head-c", "stall-head-d"] {
            assert_record(&rows, id, "upstream_error", 504, 1);
        }
    })
    .await;
}

/// Expected: an upstream that goes silent mid-stream → after `idle_ms` (400 ms) one in-stream error
/// event (code `timeout`), no `[DONE]`, the upstream connection closed; ledger `partial`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stall_between_chunks_is_in_stream_error_after_idle_ms() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let ups = [
            FaultUpstream::start(Flavor::OpenAi).await,
            FaultUpstream::start(Flavor::Anthropic).await,
            FaultUpstream::start(Flavor::Ollama).await,
        ];
        let t = Timeouts { connect_ms: 1_000, first_byte_ms: 5_000, idle_ms: 400 };
        let mut b = base_config(&healthy);
        for (i, up) in ups.iter().enumerate() {
            b = b.provider_at(&format!("up{i}"), up.flavor(), &up.base_url(), t);
        }
        let gw = FaultGateway::start(&b.build()).await;
        let c = gw.client();
        for (i, up) in ups.iter().enumerate() {
            let f = up.flavor();
            up.enqueue(Script::answer(Answer::text("one two three four")).end(End::StallAfter(after_text(f)))).await;
            let id = format!("stall-mid-{i}");
            let started = Instant::now();
            let mut s = open_stream(&c, &id, &chat(&model(&format!("up{i}"), f), true)).await;
            let sum = StreamSummary::from_events(&s.collect().await.unwrap());
            let took = started.elapsed();
            assert_error_tail(&sum, &format!("{f:?} idle"));
            assert_eq!(sum.errors[0]["error"]["code"], "timeout", "{f:?}: {:?}", sum.errors);
            assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "{f:?}: error after {took:?}");
            assert!(up.wait_peer_closed(1, SETTLE).await, "{f:?}: the stalled upstream connection is closed");
        }
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &ups.iter().collect::<Vec<_>>()).await;
        let rows = gw.shutdown_and_read_ledger().await;
        for i in 0..3 {
            assert_record(&rows, &format!("stall-mid-{i}"), "partial", 200, 1);
        }
    })
    .await;
}

/// Expected, for answers that are not what the protocol promises:
/// - 200 + binary garbage (JSON or stream requested) → 502;
/// - 200 + truncated JSON (complete HTTP body) → 502, never a 200 with a broken body;
/// - 200 + body cut mid-transfer → 502;
/// - an HTML error page (502, or 200 with text/html) → 502 without the HTML;
/// - 200 stream whose first event is an in-band error → a real status (Anthropic `overloaded` → 503
///   with retry-after, OpenAI `server_error` → 502);
/// - 200 stream with an in-band error after content → error event, no `[DONE]`, ledger `partial`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_html_and_in_stream_errors() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let ant = FaultUpstream::start(Flavor::Anthropic).await;
        let oai = FaultUpstream::start(Flavor::OpenAi).await;
        let oll = FaultUpstream::start(Flavor::Ollama).await;
        let yaml = base_config(&healthy)
            .provider_at("ant", ant.flavor(), &ant.base_url(), Timeouts::default())
            .provider_at("oai", oai.flavor(), &oai.base_url(), Timeouts::default())
            .provider_at("oll", oll.flavor(), &oll.base_url(), Timeouts::default())
            // Many failures in a row here: keep the breakers out of the way (they have their own test), and
            // the default retry of an overload (issue 11, item 14): one scripted answer per request.
            .extra("circuit_breaker: {failures: 1000, cooldown_ms: 1000}\nretry: {attempts: 1}")
            .build();
        let gw = FaultGateway::start(&yaml).await;
        let c = gw.client();
        let garbage =
            || vec![Bytes::from_static(b"\x00\xff\xfegarbage\x1b[0m\r\n\x80\x81"), Bytes::from_static(b"\xc3(\n\n")];
        let truncated = |flavor: Flavor| -> Bytes {
            let full = match flavor {
                Flavor::OpenAi => {
                    integration_tests::mock::openai::completion_json("gpt-4o", &Answer::text("hello world"))
                }
                Flavor::Anthropic => {
                    integration_tests::mock::anthropic::message_json("claude", &Answer::text("hello world"))
                }
                Flavor::Ollama => integration_tests::mock::ollama::chat_json("llama3.2", &Answer::text("hello world")),
            }
            .to_string();
            Bytes::from(full[..full.len() / 2].to_owned())
        };
        let ups = [(&oai, "oai/gpt-4o"), (&ant, "ant/claude-sonnet-4-5"), (&oll, "oll/llama3.2")];
        let mut expected: Vec<(String, &str, i64)> = Vec::new();
        let mut wrong_status = Vec::new();
        for (up, m) in ups {
            let f = up.flavor();
            let cases: Vec<(&str, Script, bool)> = vec![
                ("garbage-json", Script::raw(200, "application/json", garbage()), false),
                ("garbage-stream", Script::raw(200, "text/event-stream", garbage()), true),
                ("truncated-json", Script::raw(200, "application/json", vec![truncated(f)]), false),
                (
                    "cut-body",
                    Script::raw(200, "application/json", vec![truncated(f), Bytes::from_static(b"...")])
                        .end(End::CloseAfter(1)),
                    false,
                ),
                (
                    "html-502",
                    Script::raw(
                        502,
                        "text/html",
                        vec![Bytes::from_static(b"<html><body><h1>502 Bad Gateway</h1></body></html>")],
                    ),
                    false,
                ),
                (
                    "html-200",
                    Script::raw(
                        200,
                        "text/html",
                        vec![Bytes::from_static(b"<html><body>Just a moment...</body></html>")],
                    ),
                    false,
                ),
            ];
            for (case, script, stream) in cases {
                let id = format!("{case}-{f:?}");
                up.enqueue(script).await;
                let r = post(&c, &id, &chat(m, stream)).await;
                let enveloped = r.status == 502
                    && serde_json::from_slice::<Value>(&r.body).ok().is_some_and(|v| check_error(&v).is_ok());
                if !enveloped || r.text().contains("<html") {
                    let text = r.text();
                    let snippet: String = text.chars().take(80).collect();
                    wrong_status.push(format!("{id}: expected a 502 error envelope, got {} {snippet:?}", r.status));
                }
                expected.push((id, "upstream_error", 502));
            }
        }
        // In-band error as the first event: a real status instead of a 200 stream.
        ant.enqueue(Script::raw(200, "text/event-stream", vec![integration_tests::mock::anthropic::inband_error()]))
            .await;
        let r = post(&c, "inband-first-Anthropic", &chat("ant/claude-sonnet-4-5", true)).await;
        if r.status != 503 || r.header("retry-after").is_none() {
            wrong_status.push(format!(
                "inband-first-Anthropic: expected 503 + retry-after, got {} {:?}",
                r.status,
                r.text()
            ));
        }
        expected.push(("inband-first-Anthropic".into(), "upstream_error", 503));
        oai.enqueue(Script::raw(200, "text/event-stream", vec![integration_tests::mock::openai::inband_error()])).await;
        let r = post(&c, "inband-first-OpenAi", &chat("oai/gpt-4o", true)).await;
        if r.status != 502 {
            wrong_status.push(format!("inband-first-OpenAi: expected 502, got {} {:?}", r.status, r.text()));
        }
        expected.push(("inband-first-OpenAi".into(), "upstream_error", 502));
        // In-band error after content, per flavor (the mock's own in-band error renderings).
        for (up, m) in ups {
            let f = up.flavor();
            let mut pieces = match f {
                Flavor::OpenAi => {
                    integration_tests::mock::openai::sse_chunks("gpt-4o", &Answer::text("one two three"), false)
                }
                Flavor::Anthropic => {
                    integration_tests::mock::anthropic::sse_events("claude", &Answer::text("one two three"))
                }
                Flavor::Ollama => {
                    integration_tests::mock::ollama::ndjson_lines("llama3.2", &Answer::text("one two three"))
                }
            };
            pieces.truncate(after_text(f));
            pieces.push(match f {
                Flavor::OpenAi => integration_tests::mock::openai::inband_error(),
                Flavor::Anthropic => integration_tests::mock::anthropic::inband_error(),
                Flavor::Ollama => integration_tests::mock::ollama::inband_error(),
            });
            up.enqueue(Script::raw(200, "text/event-stream", pieces)).await;
            let id = format!("inband-mid-{f:?}");
            let mut s = open_stream(&c, &id, &chat(m, true)).await;
            assert_eq!(s.status, 200, "{id}");
            let sum = StreamSummary::from_events(&s.collect().await.unwrap());
            assert_error_tail(&sum, &id);
            assert!(!sum.text.is_empty(), "{id}: content before the error");
            expected.push((id, "partial", 200));
        }
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &[&ant, &oai, &oll]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        let mut wrong = Vec::new();
        for (id, status, http) in &expected {
            let r = record(&rows, id);
            if (r.status.as_str(), r.http_status) != (*status, *http) {
                wrong.push(format!("{id}: expected {status}/{http}, got {}/{}", r.status, r.http_status));
            }
        }
        assert!(
            wrong_status.is_empty() && wrong.is_empty(),
            "answers to malformed upstream bodies: {wrong_status:#?}\nledger records: {wrong:#?}"
        );
    })
    .await;
}

// -------------------------------------------------------------------------------------------------
// Rate limits, retries, fallbacks, circuit breakers
// -------------------------------------------------------------------------------------------------

/// Expected: 429 with `retry-after: 1` on a route that retries → the gateway waits at least the
/// `retry-after` (capped by max_backoff) and the retry succeeds: 200, ledger `ok` with attempts=2. On a
/// route without retries the 429 and its `retry-after` reach the client; ledger http 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_429_retry_after_is_honoured_or_passed_on() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let up = FaultUpstream::start(Flavor::Anthropic).await;
        let yaml = base_config(&healthy)
            .provider_at("up", up.flavor(), &up.base_url(), Timeouts::default())
            .extra(
                "routes:\n  - match: patient\n    targets:\n      - {provider: up, model: claude-sonnet-4-5}\n    \
                 retry: {attempts: 2, backoff_ms: 10, max_backoff_ms: 3000, deadline_ms: 10000}\n",
            )
            .build();
        let gw = FaultGateway::start(&yaml).await;
        let c = gw.client();
        up.enqueue(Script::error(Flavor::Anthropic, 429, "Rate limit reached").header("retry-after", "1")).await;
        let started = Instant::now();
        let r = post(&c, "429-retried", &chat("patient", false)).await;
        let took = started.elapsed();
        assert_eq!(r.status, 200, "retried after the 429: {}", r.text());
        assert!(took >= Duration::from_millis(950), "retry-after: 1 honoured, retried after {took:?}");
        assert!(took < Duration::from_secs(3), "retried after {took:?}");
        assert_eq!(up.calls(), 2);

        up.enqueue(Script::error(Flavor::Anthropic, 429, "Rate limit reached").header("retry-after", "7")).await;
        let r = post(&c, "429-passed", &chat("up/claude-sonnet-4-5", false)).await;
        r.expect_error(429, "no retry on an explicit provider/model");
        assert_eq!(r.header("retry-after"), Some("7"), "retry-after passed to the client");
        assert_eq!(up.calls(), 3, "no retry");

        up.enqueue(Script::error(Flavor::Anthropic, 429, "Rate limit reached").header("retry-after", "3")).await;
        let r = post(&c, "429-passed-stream", &chat("up/claude-sonnet-4-5", true)).await;
        r.expect_error(429, "stream request");
        assert_eq!(r.header("retry-after"), Some("3"));

        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &[&up]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        assert_record(&rows, "429-retried", "ok", 200, 2);
        let r = record(&rows, "429-passed");
        assert_eq!((r.http_status, r.attempts), (429, 1), "{r:?}");
        assert_ne!(r.status, "ok");
    })
    .await;
}

/// Expected: Anthropic 529 (overloaded) → 503 with a `retry-after` in seconds, streamed or not; ledger
/// `upstream_error` http 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_529_is_503_with_retry_after() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let up = FaultUpstream::start(Flavor::Anthropic).await;
        // Retries configured down to one attempt (the default retries an overload once: issue 11, item 14).
        let yaml = base_config(&healthy)
            .provider_at("up", up.flavor(), &up.base_url(), Timeouts::default())
            .extra("retry: {attempts: 1}")
            .build();
        let gw = FaultGateway::start(&yaml).await;
        let c = gw.client();
        for (id, stream) in [("529-a", false), ("529-b", true)] {
            up.enqueue(Script::error(Flavor::Anthropic, 529, "Overloaded")).await;
            let r = post(&c, id, &chat("up/claude-sonnet-4-5", stream)).await;
            r.expect_error(503, id);
            let ra = r.header("retry-after").unwrap_or_else(|| panic!("{id}: 503 without retry-after"));
            assert!(ra.parse::<u64>().is_ok(), "{id}: retry-after in seconds: {ra}");
        }
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &[&up]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        assert_record(&rows, "529-a", "upstream_error", 503, 1);
        assert_record(&rows, "529-b", "upstream_error", 503, 1);
    })
    .await;
}

/// Expected: 500 then success on a retrying route → 200 (streamed and not); ledger `ok`, attempts=2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_then_success_is_retried() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let up = FaultUpstream::start(Flavor::OpenAi).await;
        let yaml = base_config(&healthy)
            .provider_at("up", up.flavor(), &up.base_url(), Timeouts::default())
            .extra(
                "routes:\n  - match: sturdy\n    targets:\n      - {provider: up, model: gpt-4.1}\n    \
                 retry: {attempts: 3, backoff_ms: 20, max_backoff_ms: 200, deadline_ms: 5000}\n",
            )
            .build();
        let gw = FaultGateway::start(&yaml).await;
        let c = gw.client();
        up.enqueue(Script::error(Flavor::OpenAi, 500, "boom")).await;
        let r = post(&c, "500-then-ok", &chat("sturdy", false)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["choices"][0]["message"]["content"], "Hello there!");
        up.enqueue(Script::error(Flavor::OpenAi, 500, "boom")).await;
        let mut s = open_stream(&c, "500-then-ok-stream", &chat("sturdy", true)).await;
        assert_eq!(s.status, 200);
        let sum = StreamSummary::from_events(&s.collect().await.unwrap());
        assert_eq!(sum.text, "Hello there!");
        assert!(sum.done_last);
        assert_eq!(up.calls(), 4);
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &[&up]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        assert_record(&rows, "500-then-ok", "ok", 200, 2);
        assert_record(&rows, "500-then-ok-stream", "ok", 200, 2);
    })
    .await;
}

/// Expected: an upstream that reads the request and closes the connection without sending a single
/// response byte is retried on a retrying route like a connect failure (nothing reached the client
/// yet): 200, ledger `ok`, attempts=2. The same with a reset (RST) instead of a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closed_before_any_response_byte_is_retried() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let up = FaultUpstream::start(Flavor::OpenAi).await;
        let yaml = base_config(&healthy)
            .provider_at("up", up.flavor(), &up.base_url(), Timeouts::default())
            .extra(
                "routes:\n  - match: sturdy\n    targets:\n      - {provider: up, model: gpt-4.1}\n    \
                 retry: {attempts: 3, backoff_ms: 20, max_backoff_ms: 200, deadline_ms: 5000}\n",
            )
            .build();
        let gw = FaultGateway::start(&yaml).await;
        let c = gw.client();
        up.enqueue(Script::close_without_answer()).await;
        let closed = post(&c, "closed-then-ok", &chat("sturdy", false)).await;
        up.enqueue(Script::reset_without_answer()).await;
        let reset = post(&c, "reset-then-ok", &chat("sturdy", true)).await;
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &[&up]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        assert_eq!(closed.status, 200, "closed before any byte: {}", closed.text());
        assert_eq!(reset.status, 200, "reset before any byte: {}", reset.text());
        assert_record(&rows, "closed-then-ok", "ok", 200, 2);
        assert_record(&rows, "reset-then-ok", "ok", 200, 2);
    })
    .await;
}

/// Expected: the primary target refuses connections → the fallback serves, and the response headers
/// name it (`x-aggregator-provider: fb`, `x-aggregator-model: gpt-4.1`); ledger provider `fb`,
/// attempts=2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_down_fallback_serves() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let fb = FaultUpstream::start(Flavor::OpenAi).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let yaml = base_config(&healthy)
            .provider_at("primary", Flavor::Anthropic, &format!("http://{closed}"), Timeouts { connect_ms: 500, ..Timeouts::default() })
            .provider_at("fb", fb.flavor(), &fb.base_url(), Timeouts::default())
            .extra(
                "routes:\n  - match: smart\n    targets:\n      - {provider: primary, model: claude-sonnet-4-5}\n      \
                 - {provider: fb, model: gpt-4.1}\n    retry: {attempts: 3, backoff_ms: 20, max_backoff_ms: 200, deadline_ms: 5000}\n",
            )
            .build();
        let gw = FaultGateway::start(&yaml).await;
        let c = gw.client();
        let r = post(&c, "fallback-a", &chat("smart", false)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-aggregator-provider"), Some("fb"));
        assert_eq!(r.header("x-aggregator-model"), Some("gpt-4.1"));
        let mut s = open_stream(&c, "fallback-b", &chat("smart", true)).await;
        assert_eq!(s.status, 200);
        assert_eq!(s.header("x-aggregator-provider"), Some("fb"));
        let sum = StreamSummary::from_events(&s.collect().await.unwrap());
        assert_eq!(sum.text, "Hello there!");
        assert_eq!(fb.calls(), 2);
        assert_eq!(fb.received().await[0].json.as_ref().map(|j| j["model"].clone()), Some(json!("gpt-4.1")));
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &[&fb]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        for id in ["fallback-a", "fallback-b"] {
            let r = assert_record(&rows, id, "ok", 200, 2);
            assert_eq!(r.provider, "fb", "{r:?}");
        }
    })
    .await;
}

/// Expected: with `circuit_breaker: {failures: 3, cooldown_ms: 1500}`, three failures of the primary
/// open its circuit: later requests go straight to the fallback (the primary's call count stays flat).
/// After the cooldown exactly one probe reaches the primary (half-open); a failed probe re-opens the
/// circuit, a successful one closes it and traffic returns to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_opens_after_n_failures_and_half_opens_after_cooldown() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let primary = FaultUpstream::start(Flavor::Anthropic).await;
        let fb = FaultUpstream::start(Flavor::OpenAi).await;
        primary.always(Some(Script::error(Flavor::Anthropic, 500, "down"))).await;
        let yaml = base_config(&healthy)
            .provider_at("primary", primary.flavor(), &primary.base_url(), Timeouts::default())
            .provider_at("fb", fb.flavor(), &fb.base_url(), Timeouts::default())
            .extra(
                "circuit_breaker: {failures: 3, cooldown_ms: 1500}\nroutes:\n  - match: smart\n    targets:\n      \
                 - {provider: primary, model: claude-sonnet-4-5}\n      - {provider: fb, model: gpt-4.1}\n    \
                 retry: {attempts: 2, backoff_ms: 10, max_backoff_ms: 50, deadline_ms: 5000}\n",
            )
            .build();
        let gw = FaultGateway::start(&yaml).await;
        let c = gw.client();
        let served_by = |r: &TestResponse| r.header("x-aggregator-provider").unwrap_or("-").to_owned();
        for i in 0..3 {
            let r = post(&c, &format!("cb-fail-{i}"), &chat("smart", false)).await;
            assert_eq!((r.status.as_u16(), served_by(&r).as_str()), (200, "fb"), "request {i}: {}", r.text());
        }
        assert_eq!(primary.calls(), 3, "each of the first three requests tried the primary");
        for i in 0..6 {
            let r = post(&c, &format!("cb-open-{i}"), &chat("smart", i % 2 == 1)).await;
            assert_eq!((r.status.as_u16(), served_by(&r).as_str()), (200, "fb"), "open circuit, request {i}");
        }
        assert_eq!(primary.calls(), 3, "open circuit: the dead primary is not tried");
        // Cooldown over, primary still failing: one probe, which fails and re-opens the circuit.
        tokio::time::sleep(Duration::from_millis(1_700)).await;
        let r = post(&c, "cb-probe-fail", &chat("smart", false)).await;
        assert_eq!(served_by(&r), "fb");
        assert_eq!(primary.calls(), 4, "half-open: exactly one probe");
        for i in 0..3 {
            post(&c, &format!("cb-reopened-{i}"), &chat("smart", false)).await;
        }
        assert_eq!(primary.calls(), 4, "a failed probe re-opens the circuit at once");
        // Primary healthy again: after the next cooldown the probe succeeds and closes the circuit.
        primary.always(None).await;
        tokio::time::sleep(Duration::from_millis(1_700)).await;
        let r = post(&c, "cb-probe-ok", &chat("smart", false)).await;
        assert_eq!((r.status.as_u16(), served_by(&r).as_str()), (200, "primary"), "{}", r.text());
        for i in 0..3 {
            let r = post(&c, &format!("cb-closed-{i}"), &chat("smart", false)).await;
            assert_eq!(served_by(&r), "primary", "closed circuit, request {i}");
        }
        assert_eq!(primary.calls(), 8);
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &[&primary, &fb]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        assert_eq!(record(&rows, "cb-fail-0").attempts, 2);
        assert_eq!(record(&rows, "cb-open-0").attempts, 1, "an open circuit costs no attempt");
        assert_eq!(record(&rows, "cb-probe-ok").provider, "primary");
    })
    .await;
}

// -------------------------------------------------------------------------------------------------
// Hostile and vanishing clients
// -------------------------------------------------------------------------------------------------

/// Expected: clients trickling their request headers (slowloris) do not stop the gateway serving
/// others meanwhile. (Their eviction after the 30 s header timeout is not waited for here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_do_not_block_others() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let gw = FaultGateway::start(&base_config(&healthy).build()).await;
        let addr = gw.addr;
        let mut lorises = Vec::new();
        for _ in 0..8 {
            lorises.push(tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n").await.unwrap();
                let header = b"x-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                for b in header.iter().cycle().take(30) {
                    if tcp.write_all(&[*b]).await.is_err() {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                true
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let c = gw.client();
        let started = Instant::now();
        for i in 0..20 {
            let t = Instant::now();
            let r = c.chat(&chat("healthy/gpt-4o-mini", i % 2 == 0)).await.unwrap();
            assert_eq!(r.status, 200, "request {i} while slowloris clients trickle");
            // A request held behind the trickling clients would wait for their 3 s trickle; 2 s
            // leaves room for a loaded CI machine running the debug build (1 s failed once there).
            assert!(t.elapsed() < Duration::from_secs(2), "request {i} took {:?}", t.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(6), "20 requests took {:?}", started.elapsed());
        for l in lorises {
            assert!(l.await.unwrap(), "the gateway keeps a trickling client within its header timeout");
        }
        assert_no_leaks(&gw, &[]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        assert_eq!(rows.len(), 20, "one record per served request, none for the unfinished requests");
    })
    .await;
}

/// Expected: a client that reads its stream very slowly while the upstream offers ~160 MiB does not
/// make the gateway buffer: what the upstream managed to write stays within socket buffers of what
/// the client read, and the process RSS stays bounded. When the client hangs up, the upstream
/// connection is closed and the ledger says `cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_causes_no_unbounded_buffering() {
    let _heavy = HEAVY.lock().await;
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let up = FaultUpstream::start(Flavor::OpenAi).await;
        let yaml = base_config(&healthy).provider_at("up", up.flavor(), &up.base_url(), Timeouts::default()).build();
        let gw = FaultGateway::start(&yaml).await;
        let c = gw.client();
        let offered: u64 = 20_000 * 8 * 1024;
        up.enqueue(Script::large_openai_stream(20_000, 8 * 1024)).await;
        let rss_before = rss_kib();
        let mut s = open_stream(&c, "slow-reader", &chat("up/gpt-4o-mini", true)).await;
        assert_eq!(s.status, 200);
        let mut peak_rss = rss_before;
        let started = Instant::now();
        let mut read_events = 0;
        while started.elapsed() < Duration::from_secs(3) {
            let ev = s.next_event().await.unwrap();
            assert!(ev.is_some(), "stream ended early");
            read_events += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            peak_rss = peak_rss.max(rss_kib());
        }
        let written = up.bytes_written();
        let read = s.raw.len() as u64;
        let in_flight = written.saturating_sub(read);
        eprintln!(
            "slow reader: read {read_events} events ({read} B), upstream wrote {written} B of {offered} B offered, \
             in flight {in_flight} B, RSS {rss_before} → {peak_rss} KiB"
        );
        assert!(written < offered / 2, "the upstream could write {written} B of {offered} B: unbounded buffering");
        assert!(
            in_flight < 48 * 1024 * 1024,
            "{in_flight} B between upstream and client (socket buffers are a few MiB)"
        );
        if rss_before > 0 {
            assert!(peak_rss.saturating_sub(rss_before) < 96 * 1024, "RSS grew {rss_before} → {peak_rss} KiB");
        }
        drop(s);
        assert!(up.wait_peer_closed(1, SETTLE).await, "the upstream connection is closed after the client hung up");
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &[&up]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        let r = assert_record(&rows, "slow-reader", "cancelled", 200, 1);
        assert!(r.completion_tokens > 0, "usage so far: {r:?}");
    })
    .await;
}

/// Expected: 1,000 concurrent streams (spread over the three provider kinds) all complete with their
/// own content and `[DONE]`; 1,000 `ok` ledger records; nothing left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_streams_all_complete() {
    let _heavy = HEAVY.lock().await;
    bounded(async {
        const N: usize = 1_000;
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let ups = Arc::new([
            FaultUpstream::start(Flavor::OpenAi).await,
            FaultUpstream::start(Flavor::Anthropic).await,
            FaultUpstream::start(Flavor::Ollama).await,
        ]);
        let mut b = base_config(&healthy);
        for (i, up) in ups.iter().enumerate() {
            up.always(Some(Script::answer(Answer::text("alpha beta gamma delta")).gap(Duration::from_millis(20))))
                .await;
            b = b.provider_at(&format!("up{i}"), up.flavor(), &up.base_url(), Timeouts::default());
        }
        let gw = FaultGateway::start(&b.build()).await;
        let c = gw.client();
        let started = Instant::now();
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..N {
            let c = c.clone();
            tasks.spawn(async move {
                let k = i % 3;
                let flavor = ALL[k];
                let m = match flavor {
                    Flavor::OpenAi => format!("up{k}/gpt-4o-mini-{i}"),
                    Flavor::Anthropic => format!("up{k}/claude-sonnet-4-5-{i}"),
                    Flavor::Ollama => format!("up{k}/llama3.2-{i}"),
                };
                let mut s = open_stream(&c, &format!("many-{i}"), &chat(&m, true)).await;
                assert_eq!(s.status, 200, "stream {i}");
                let events = s.collect().await.unwrap();
                let sum = StreamSummary::from_events(&events);
                assert_eq!(sum.text, "alpha beta gamma delta", "stream {i} ({flavor:?})");
                assert!(sum.done_last && sum.done_count == 1, "stream {i}: one [DONE] at the end");
                assert!(sum.errors.is_empty(), "stream {i}: {:?}", sum.errors);
                let model = sum.chunks[0]["model"].as_str().unwrap_or("").to_owned();
                assert!(model.ends_with(&format!("-{i}")), "stream {i} got another stream's model `{model}`");
            });
        }
        let sampler = {
            let base = gw.base_url();
            let peak = peak.clone();
            tokio::spawn(async move {
                let c = TestClient::new(&base);
                for _ in 0..200 {
                    if let Ok(r) = c.get("/metrics").await {
                        let v = r
                            .text()
                            .lines()
                            .find(|l| l.starts_with("aggregator_open_streams "))
                            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                            .unwrap_or(0.0);
                        peak.fetch_max(v as usize, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let mut failures = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                failures.push(e.to_string());
            }
        }
        sampler.abort();
        let took = started.elapsed();
        eprintln!("1000 streams in {took:?}, peak open streams {}", peak.load(Ordering::Relaxed));
        assert!(
            failures.is_empty(),
            "{} of {N} streams failed: {:#?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert_eq!(ups.iter().map(|u| u.calls()).sum::<usize>(), N);
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &ups.iter().collect::<Vec<_>>()).await;
        let rows = gw.shutdown_and_read_ledger().await;
        let ok = rows.iter().filter(|r| r.request_id.starts_with("many-") && r.status == "ok").count();
        assert_eq!(ok, N, "one ok record per stream");
    })
    .await;
}

/// Raw HTTP/1.1 request head for a chat request with a fixed request id.
fn raw_request(id: &str, body: &str, content_length: usize) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\nx-request-id: {id}\r\n\
         content-length: {content_length}\r\n\r\n{body}"
    )
    .into_bytes()
}

/// Expected: a client that goes away at any stage leaves one `cancelled` ledger record, and any
/// upstream request it caused is abandoned at once (the upstream sees its connection closed):
/// (a) mid request body: no upstream call; (b) while the gateway waits for upstream headers; (c) after
/// upstream headers, before the first event (the peek); (d) mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_at_every_stage_is_cancelled() {
    bounded(async {
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let up = FaultUpstream::start(Flavor::Anthropic).await;
        let yaml = base_config(&healthy).provider_at("up", up.flavor(), &up.base_url(), Timeouts::default()).build();
        let gw = FaultGateway::start(&yaml).await;
        let body = chat("up/claude-sonnet-4-5", true).to_string();

        // (a) Mid request body: promise 10 000 bytes, send 20, hang up.
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(&raw_request("cut-body", &body[..20], 10_000)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(tcp);

        // (b) Waiting for upstream headers.
        up.enqueue(Script::answer(Answer::text("late")).delay(Duration::from_secs(20))).await;
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(&raw_request("cut-waiting", &body, body.len())).await.unwrap();
        assert!(wait_for(SETTLE, || async { up.busy() == 1 }).await, "(b) the request reached the upstream");
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(tcp);
        assert!(
            up.wait_peer_closed(1, SETTLE).await,
            "(b) the gateway dropped the upstream request when the client left"
        );

        // (c) Upstream headers received, no event yet (the gateway is peeking; no downstream headers).
        up.enqueue(Script::answer(Answer::text("late")).end(End::StallAfter(0))).await;
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(&raw_request("cut-peek", &body, body.len())).await.unwrap();
        assert!(wait_for(SETTLE, || async { up.busy() == 1 }).await, "(c) the request reached the upstream");
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(tcp);
        assert!(
            up.wait_peer_closed(2, SETTLE).await,
            "(c) the gateway dropped the upstream request when the client left"
        );

        // (d) Mid-stream.
        up.enqueue(
            Script::answer(Answer::text("one two three four")).end(End::StallAfter(after_text(Flavor::Anthropic))),
        )
        .await;
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(&raw_request("cut-stream", &body, body.len())).await.unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + SETTLE;
        while !String::from_utf8_lossy(&got).contains("data: ") && Instant::now() < deadline {
            let mut b = [0u8; 4096];
            match tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut b)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&b[..n]),
                _ => {}
            }
        }
        assert!(
            String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
            "(d) stream started: {}",
            String::from_utf8_lossy(&got)
        );
        drop(tcp);
        assert!(
            up.wait_peer_closed(3, SETTLE).await,
            "(d) the gateway dropped the upstream stream when the client left"
        );

        assert_eq!(up.calls(), 3, "(a) never reached the upstream");
        assert_still_serving(&gw).await;
        assert_no_leaks(&gw, &[&up]).await;
        let rows = gw.shutdown_and_read_ledger().await;
        let mut wrong = Vec::new();
        for id in ["cut-body", "cut-waiting", "cut-peek", "cut-stream"] {
            match rows.iter().find(|r| r.request_id == id) {
                Some(r) if r.status == "cancelled" => {}
                Some(r) => wrong.push(format!("{id}: expected cancelled, got {} (http {})", r.status, r.http_status)),
                None => wrong.push(format!("{id}: no ledger record")),
            }
        }
        assert!(wrong.is_empty(), "client disconnects: {wrong:#?}");
    })
    .await;
}

// -------------------------------------------------------------------------------------------------
// The ledger database goes away under load
// -------------------------------------------------------------------------------------------------

/// The machine's Postgres (the database the ledger's own tests use).
fn pg_base() -> (String, u16, String) {
    ("127.0.0.1".to_owned(), 5432, "test".to_owned())
}

/// Expected: with the ledger on Postgres behind a proxy that goes down (connections reset, new ones
/// refused) in the middle of a load and comes back ~2 s later, every request still gets its answer,
/// and once the database is back every record is in Postgres exactly once (journaled meanwhile,
/// replayed after). The proxy only fronts 127.0.0.1:5432; other tests using Postgres are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_during_load_loses_no_record() {
    bounded(async {
        let (host, port, db) = pg_base();
        let admin_url = format!("host={host} port={port} user=postgres dbname={db} connect_timeout=5");
        let (pg, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("this test needs the machine's Postgres at {host}:{port} ({e})"));
        tokio::spawn(conn);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let schema = format!("faults_{}_{}", std::process::id(), nanos % 1_000_000_000);
        pg.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();

        let proxy = TcpProxy::start(format!("{host}:{port}").parse().unwrap()).await;
        let healthy = MockUpstream::start(Flavor::OpenAi).await;
        let url = format!(
            "postgres://postgres@{}/{db}?connect_timeout=2&options=-c%20search_path%3D{schema}",
            proxy.addr()
        );
        let yaml = base_config(&healthy)
            .build()
            .replace("ledger:\n  data_dir: ${DATA_DIR}\n", &format!("ledger:\n  data_dir: ${{DATA_DIR}}\n  database_url: \"{url}\"\n  batch_interval_ms: 50\n"));
        let gw = FaultGateway::start(&yaml).await;
        let c = gw.client();
        // Wait for the ledger to be up (migrated) before the load.
        assert!(
            wait_for(Duration::from_secs(10), || async {
                pg.query_one(&format!("SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}' AND table_name = 'ledger_records'"), &[])
                    .await
                    .map(|r| r.get::<_, i64>(0) == 1)
                    .unwrap_or(false)
            })
            .await,
            "the ledger migrated its schema"
        );

        const N: usize = 150;
        let sent = Arc::new(AtomicUsize::new(0));
        let load = {
            let c = c.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for batch in 0..N / 5 {
                    let mut set = tokio::task::JoinSet::new();
                    for j in 0..5 {
                        let c = c.clone();
                        let id = format!("pg-{}", batch * 5 + j);
                        set.spawn(async move {
                            let r = post(&c, &id, &chat("healthy/gpt-4o-mini", j % 2 == 0)).await;
                            (id, r.status.as_u16(), r.text())
                        });
                    }
                    while let Some(s) = set.join_next().await {
                        statuses.push(s.unwrap());
                    }
                    sent.fetch_add(5, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                statuses
            })
        };
        assert!(wait_for(Duration::from_secs(20), || async { sent.load(Ordering::SeqCst) >= 30 }).await);
        proxy.down().await;
        let down_at = sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let up_at = sent.load(Ordering::SeqCst);
        proxy.up();
        let statuses = load.await.unwrap();
        eprintln!("postgres down after {down_at} requests, up after {up_at}; {} refused connections while down", proxy.refused());
        assert!(up_at > down_at, "requests were served while the database was down");
        let refused: Vec<String> =
            statuses.iter().filter(|(_, st, _)| *st != 200).map(|(id, st, body)| format!("{id}: {st} {body}")).collect();

        let answered = statuses.iter().filter(|(_, st, _)| *st == 200).count();
        let all_in = wait_for(Duration::from_secs(30), || async {
            pg.query_one(&format!("SELECT count(*) FROM {schema}.ledger_records WHERE request_id LIKE 'pg-%'"), &[])
                .await
                .map(|r| r.get::<_, i64>(0) as usize >= answered)
                .unwrap_or(false)
        })
        .await;
        let dir = gw.shutdown().await;
        let rows = pg
            .query(&format!("SELECT request_id, count(*) FROM {schema}.ledger_records GROUP BY request_id"), &[])
            .await
            .unwrap();
        pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mut missing = Vec::new();
        let mut dupes = Vec::new();
        for (id, status, _) in &statuses {
            if *status != 200 {
                continue; // refused before metering (see `refused`): no record expected
            }
            let id = id.clone();
            match rows.iter().find(|r| r.get::<_, String>(0) == id) {
                None => missing.push(id),
                Some(r) if r.get::<_, i64>(1) != 1 => dupes.push(id),
                Some(_) => {}
            }
        }
        assert!(missing.is_empty() && dupes.is_empty(), "missing {missing:?}, duplicated {dupes:?}");
        assert!(all_in, "not every record reached Postgres within 30 s of it coming back");
        assert!(refused.is_empty(), "every request answered 200 while the ledger database flapped: {refused:#?}");
    })
    .await;
}
