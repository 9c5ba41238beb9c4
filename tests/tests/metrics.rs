//! Issue 5: a Prometheus scrape after mixed traffic shows the right counts, and per-request gauges return
//! to zero.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::harness::Stack;
use integration_tests::mock::{Answer, Flavor, Reply, Usage};
use serde_json::json;

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let rest = rest.trim_end_matches('}');
                    let labels = rest
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once("=\"")?;
                            Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            Some((name, labels, value))
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
        .sum()
}

const ADMIN: &str = "admin-key-0123456789abcdef";

async fn scrape_full(client: &integration_tests::client::TestClient) -> integration_tests::client::TestResponse {
    let auth = format!("Bearer {ADMIN}");
    client.raw(http::Method::GET, "/metrics", &[("authorization", &auth)], "").await.unwrap()
}

#[tokio::test]
async fn scrape_after_mixed_traffic_shows_correct_counts() {
    // Issue #11, item 11: business series (requests, tokens by model) need the admin key on the public port.
    let s =
        Stack::start_with(integration_tests::harness::Timeouts::default(), &format!("admin_api_key: {ADMIN}\n")).await;
    let client = s.client();
    for _ in 0..3 {
        s.openai.enqueue_chat(Reply::answer(Answer::text("hi").with_usage(Usage::new(10, 4)))).await;
        let r = client
            .chat(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    for _ in 0..2 {
        s.anthropic.enqueue_chat(Reply::answer(Answer::text_pieces(&["a", "b"]).with_usage(Usage::new(7, 3)))).await;
        let mut st = client
            .chat_stream(&json!({"model": "anthropic/claude-sonnet-4-5", "stream": true,
                                  "messages": [{"role": "user", "content": "x"}]}))
            .await
            .unwrap();
        assert!(st.collect().await.unwrap().last().unwrap().is_done());
    }
    s.openai.enqueue_chat(Reply::error(Flavor::OpenAi, 500, "boom")).await;
    let r =
        client.chat(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})).await.unwrap();
    assert_eq!(r.status, 502);
    let r =
        client.chat(&json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})).await.unwrap();
    assert_eq!(r.status, 404);

    // Recorded when each request ends; give the last stream's end a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let scrape = scrape_full(&client).await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.header("content-type").unwrap().starts_with("text/plain"));
    let m = parse(&scrape.text());
    let req = "aggregator_requests_total";
    assert_eq!(
        value(&m, req, &[("provider", "openai"), ("model", "gpt-4o-mini"), ("status", "2xx"), ("stream", "false")]),
        3.0
    );
    assert_eq!(
        value(
            &m,
            req,
            &[("provider", "anthropic"), ("model", "claude-sonnet-4-5"), ("status", "2xx"), ("stream", "true")]
        ),
        2.0
    );
    assert_eq!(value(&m, req, &[("provider", "openai"), ("status", "5xx")]), 1.0);
    assert_eq!(value(&m, req, &[("status", "4xx")]), 1.0);
    assert_eq!(value(&m, req, &[]), 7.0);
    assert_eq!(value(&m, "aggregator_upstream_errors_total", &[("provider", "openai")]), 1.0);
    assert_eq!(value(&m, "aggregator_tokens_total", &[("provider", "openai"), ("type", "prompt")]), 30.0);
    assert_eq!(value(&m, "aggregator_tokens_total", &[("provider", "openai"), ("type", "completion")]), 12.0);
    assert_eq!(value(&m, "aggregator_tokens_total", &[("provider", "anthropic"), ("type", "prompt")]), 14.0);
    assert_eq!(value(&m, "aggregator_request_duration_seconds_count", &[]), 7.0);
    assert_eq!(value(&m, "aggregator_time_to_first_token_seconds_count", &[("stream", "true")]), 2.0);
    assert_eq!(value(&m, "aggregator_inflight_requests", &[]), 0.0);
    assert_eq!(value(&m, "aggregator_open_streams", &[]), 0.0);
    assert_eq!(value(&m, "aggregator_build_info", &[]), 1.0);
    // Every request reaches the ledger; the scrape reports it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = parse(&scrape_full(&client).await.text());
        let written = value(&m, "aggregator_ledger_records", &[("kind", "written")]);
        if written >= 7.0 || tokio::time::Instant::now() > deadline {
            assert_eq!(written, 7.0);
            assert_eq!(value(&m, "aggregator_ledger_queue_depth", &[]), 0.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.gateway.shutdown().await;
}
