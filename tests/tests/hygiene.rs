//! Issue #11, items 7, 8, 11, 12 and 13 over real loopback: bounded client strings, idle and stalled
//! connections, what `/metrics` shows on the public port, strict admin bodies, broken bodies, usage
//! dates and pruning.

use std::time::Duration;

use http::Method;
use integration_tests::harness::{Stack, Timeouts};
use integration_tests::mock::{Answer, Reply, Usage};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "admin-key-0123456789abcdef";

fn admin_header() -> (&'static str, String) {
    ("authorization", format!("Bearer {ADMIN}"))
}

async fn stack(extra: &str) -> Stack {
    Stack::start_with(Timeouts::default(), &format!("admin_api_key: {ADMIN}\n{extra}")).await
}

/// Reads until EOF (or error), at most `within`; returns the bytes and whether EOF was seen in time.
async fn read_until_closed(sock: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0) | Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Item 8: a TCP connection that never sends a byte is closed after `server.idle_timeout_secs`.
#[tokio::test]
async fn silent_connection_is_closed_after_the_idle_timeout() {
    let s = stack("server:\n  idle_timeout_secs: 1\n").await;
    let mut sock = TcpStream::connect(s.gateway.addr).await.unwrap();
    let (bytes, closed) = read_until_closed(&mut sock, Duration::from_secs(10)).await;
    assert!(closed, "the gateway kept a silent connection open");
    assert!(bytes.is_empty(), "nothing to answer: {bytes:?}");
    // An HTTP/1.1 keep-alive connection idle after one request is closed too.
    let mut sock = TcpStream::connect(s.gateway.addr).await.unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let (bytes, closed) = read_until_closed(&mut sock, Duration::from_secs(10)).await;
    assert!(closed, "an idle keep-alive connection stayed open");
    assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&bytes));
    s.gateway.shutdown().await;
}

/// Item 8: an idle h2c connection gets a GOAWAY and is closed after the idle timeout.
#[tokio::test]
async fn idle_h2c_connection_gets_goaway() {
    let s = stack("server:\n  idle_timeout_secs: 1\n").await;
    let mut sock = TcpStream::connect(s.gateway.addr).await.unwrap();
    sock.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    sock.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    // Play a minimal, well-behaved client: acknowledge SETTINGS and PINGs, send nothing else.
    let mut buf = Vec::new();
    let mut types = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let closed = loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        while buf.len() >= 9 {
            let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            types.push(kind);
            if kind == 4 && flags & 1 == 0 {
                let _ = sock.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
            }
            if kind == 6 && flags & 1 == 0 {
                let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                ack.extend_from_slice(&buf[9..17]);
                let _ = sock.write_all(&ack).await;
            }
            buf.drain(..9 + len);
        }
    };
    assert!(closed, "the idle h2c connection stayed open; frames {types:?}");
    assert!(types.contains(&7), "no GOAWAY frame among {types:?}");
    s.gateway.shutdown().await;
}

/// Item 8: a body that stalls mid-upload is answered 408 (OpenAI-shaped, metered as a client error)
/// and the connection is closed.
#[tokio::test]
async fn stalled_body_is_a_408_and_the_connection_closes() {
    let s = stack("server:\n  body_read_timeout_secs: 1\n").await;
    let mut sock = TcpStream::connect(s.gateway.addr).await.unwrap();
    sock.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let (bytes, closed) = read_until_closed(&mut sock, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    assert!(closed, "the connection stayed open after the 408");
    s.gateway.shutdown().await;
}

/// Item 13: a broken chunked body is a 400, not `499`.
#[tokio::test]
async fn broken_chunked_body_is_a_400() {
    let s = stack("").await;
    let mut sock = TcpStream::connect(s.gateway.addr).await.unwrap();
    sock.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let (bytes, _) = read_until_closed(&mut sock, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("invalid_request_error"), "{text}");
    s.gateway.shutdown().await;
}

/// Item 7: a model name over 256 bytes is a 400 naming `model`, and it is neither echoed nor labelled.
#[tokio::test]
async fn oversized_model_name_is_refused() {
    let s = stack("").await;
    let c = s.client();
    let model = format!("gpt-{}", "x".repeat(300));
    let r = c.chat(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]})).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "model");
    assert!(r.text().len() < 1024, "the name was echoed: {}", r.text().len());
    assert_eq!(s.openai.calls(s.openai.flavor().chat_path()).await, 0);
    let (k, v) = admin_header();
    let m = c.raw(Method::GET, "/metrics", &[(k, &v)], "").await.unwrap().text();
    assert!(!m.contains("xxxxxxxx"), "the refused name became a label");
    s.gateway.shutdown().await;
}

/// Item 11: the public `/metrics` without a key shows no model names, tokens or cost; the admin key
/// (or the operations listener) sees them.
#[tokio::test]
async fn public_metrics_hide_business_series() {
    let s = stack("").await;
    let c = s.client();
    s.openai.enqueue_chat(Reply::answer(Answer::text("hi").with_usage(Usage::new(10, 4)))).await;
    let r = c.chat(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})).await.unwrap();
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let public = c.get("/metrics").await.unwrap();
    assert_eq!(public.status, 200);
    let text = public.text();
    for hidden in ["gpt-4o-mini", "aggregator_cost_usd_total", "aggregator_tokens_total", "aggregator_requests_total"] {
        assert!(!text.contains(hidden), "public /metrics shows `{hidden}`:\n{text}");
    }
    assert!(text.contains("aggregator_inflight_requests"), "operational gauges stay public:\n{text}");
    let (k, v) = admin_header();
    let full = c.raw(Method::GET, "/metrics", &[(k, &v)], "").await.unwrap().text();
    assert!(full.contains("model=\"gpt-4o-mini\""), "{full}");
    assert!(full.contains("aggregator_tokens_total"), "{full}");
    // Open mode: any other key is the `anonymous` tenant, which sees operational metrics only.
    let tenant = c.raw(Method::GET, "/metrics", &[("authorization", "Bearer sk-some-tenant")], "").await.unwrap();
    assert!(!tenant.text().contains("gpt-4o-mini"), "{}", tenant.text());
    s.gateway.shutdown().await;
}

/// Item 12: admin bodies are validated like the config file.
#[tokio::test]
async fn admin_bodies_are_strict() {
    let s = stack("").await;
    let c = s.client();
    let (k, v) = admin_header();
    let post = |path: &'static str, body: serde_json::Value| {
        let c = c.clone();
        let v = v.clone();
        async move {
            c.raw(Method::POST, path, &[(k, &v), ("content-type", "application/json")], body.to_string()).await.unwrap()
        }
    };
    for (body, param) in [
        (json!({"id": "."}), "id"),
        (json!({"id": ".."}), "id"),
        (json!({"id": "-x"}), "id"),
        (json!({"id": "acme", "rmp": 5}), "rmp"),
        (json!({"id": "acme", "monthly_budget": "5"}), "monthly_budget"),
        (json!({"id": "acme", "rpm": 9_223_372_036_854_775_808u64}), "rpm"),
    ] {
        let r = post("/admin/tenants", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(r.json()["error"]["param"], param, "{body}: {}", r.text());
    }
    assert_eq!(post("/admin/tenants", json!({"id": "Acme"})).await.status, 201);
    let dup = post("/admin/tenants", json!({"id": "acme"})).await;
    assert_eq!(dup.status, 409, "{}", dup.text());
    for (body, param) in [
        (json!({"name": "a\u{0}b"}), "name"),
        (json!({"name": "a\nb"}), "name"),
        (json!({"name": "x".repeat(300)}), "name"),
        (json!({"name": "ok", "disabled": true}), "disabled"),
        (json!({"name": "ok", "rpm": 9_223_372_036_854_775_808u64}), "rpm"),
    ] {
        let r = post("/admin/tenants/Acme/keys", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param, "{body}: {}", r.text());
    }
    assert_eq!(post("/admin/tenants/Acme/keys", json!({"name": "ci", "rpm": 5})).await.status, 201);
    s.gateway.shutdown().await;
}

/// Item 13: an impossible date in a usage filter is a 400 over HTTP; the admin key works as
/// `X-API-Key` too; pruning is admin only and refuses the current month.
#[tokio::test]
async fn usage_dates_and_pruning() {
    let s = stack("").await;
    let c = s.client();
    let r = c.raw(Method::GET, "/admin/usage?from=2026-02-31", &[("x-api-key", ADMIN)], "").await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "from");
    let (k, v) = admin_header();
    let r = c.raw(Method::DELETE, "/admin/usage?before=2020-01-01", &[(k, &v)], "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], 0);
    let r = c.raw(Method::DELETE, "/admin/usage?before=2999-01-01", &[(k, &v)], "").await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "before");
    let r = c.raw(Method::DELETE, "/admin/usage", &[(k, &v)], "").await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    // Open mode: an unauthenticated caller is the `anonymous` tenant, not the admin.
    let r = c.raw(Method::DELETE, "/admin/usage?before=2020-01-01", &[], "").await.unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    s.gateway.shutdown().await;
}
