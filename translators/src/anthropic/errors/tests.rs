//! Upstream error mapping (wire-formats §3.8, §7 items 51–52).

use super::*;

fn anthropic_body(kind: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}))
    .unwrap()
}

fn mapped(status: u16, kind: &str, message: &str) -> MappedError {
    map_error(status, &anthropic_body(kind, message))
}

#[track_caller]
fn check(m: &MappedError, status: u16, kind: &str, code: Option<&str>) {
    assert_eq!(m.status, status, "{m:?}");
    assert_eq!(m.body.kind, kind, "{m:?}");
    assert_eq!(m.body.code.as_deref(), code, "{m:?}");
    assert!(m.body.message.starts_with("anthropic: "), "{m:?}");
}

#[test]
fn each_anthropic_status_maps() {
    let m = mapped(400, "invalid_request_error", "messages: text content blocks must be non-empty");
    check(&m, 400, "invalid_request_error", None);
    assert_eq!(m.body.message, "anthropic: messages: text content blocks must be non-empty");
    assert_eq!(m.body.param, None);

    let m = mapped(400, "invalid_request_error", "prompt is too long: 205000 tokens > 200000 maximum");
    check(&m, 400, "invalid_request_error", Some("context_length_exceeded"));
    assert_eq!(m.body.param.as_deref(), Some("messages"));
    let m = mapped(400, "invalid_request_error", "input length and `max_tokens` exceed context limit: 1 + 2 > 3");
    check(&m, 400, "invalid_request_error", Some("context_length_exceeded"));

    check(&mapped(401, "authentication_error", "invalid x-api-key"), 502, "server_error", Some("upstream_auth_failed"));
    check(&mapped(403, "permission_error", "no access"), 502, "server_error", Some("upstream_auth_failed"));
    check(
        &mapped(402, "billing_error", "credit balance too low"),
        429,
        "insufficient_quota",
        Some("insufficient_quota"),
    );
    let m = mapped(404, "not_found_error", "model: claude-nope");
    check(&m, 404, "invalid_request_error", Some("model_not_found"));
    assert_eq!(m.body.param.as_deref(), Some("model"));
    check(&mapped(413, "request_too_large", "too big"), 413, "invalid_request_error", Some("request_too_large"));
    check(&mapped(429, "rate_limit_error", "slow down"), 429, "requests", Some("rate_limit_exceeded"));
    check(&mapped(500, "api_error", "Internal server error"), 502, "server_error", None);
    check(&mapped(504, "timeout_error", "timed out"), 504, "server_error", Some("timeout"));
    check(&mapped(529, "overloaded_error", "Overloaded"), 503, "server_error", Some("overloaded"));
    check(&mapped(503, "overloaded_error", "Overloaded"), 503, "server_error", Some("overloaded"));
    check(&mapped(502, "api_error", "bad gateway"), 502, "server_error", None);
    check(&mapped(422, "invalid_request_error", "unprocessable"), 422, "invalid_request_error", None);
}

#[test]
fn unreadable_bodies_become_502_upstream_error() {
    for (status, body) in [
        (502, &b"<html><body>502 Bad Gateway</body></html>"[..]),
        (500, b""),
        (401, b"   "),
        (400, b"plain text"),
        (500, b"{}"),
        (500, b"[]"),
        (500, br#"{"error":"string not object"}"#),
    ] {
        let m = map_error(status, body);
        check(&m, 502, "server_error", Some("upstream_error"));
        assert!(!m.body.message.contains("html"), "raw bodies are not echoed");
    }
}

#[test]
fn unreadable_bodies_keep_retry_semantics() {
    check(&map_error(429, b""), 429, "requests", Some("rate_limit_exceeded"));
    check(&map_error(529, b"<html>overloaded</html>"), 503, "server_error", Some("overloaded"));
    check(&map_error(503, b""), 503, "server_error", Some("overloaded"));
    check(&map_error(504, b"gateway timeout"), 504, "server_error", Some("timeout"));
}

#[test]
fn success_status_with_error_object_is_502() {
    check(&mapped(200, "overloaded_error", "Overloaded"), 502, "server_error", Some("upstream_error"));
}

#[test]
fn bom_and_whitespace_around_json_are_tolerated() {
    let mut body = b"\xEF\xBB\xBF  ".to_vec();
    body.extend(anthropic_body("rate_limit_error", "slow"));
    body.extend(b"\n");
    check(&map_error(429, &body), 429, "requests", Some("rate_limit_exceeded"));
}

#[test]
fn stream_errors_map_by_type() {
    for (kind, expected_kind, code) in [
        ("overloaded_error", "server_error", Some("overloaded")),
        ("api_error", "server_error", None),
        ("rate_limit_error", "requests", Some("rate_limit_exceeded")),
        ("invalid_request_error", "invalid_request_error", None),
        ("authentication_error", "server_error", Some("upstream_auth_failed")),
        ("permission_error", "server_error", Some("upstream_auth_failed")),
        ("billing_error", "insufficient_quota", Some("insufficient_quota")),
        ("not_found_error", "invalid_request_error", Some("model_not_found")),
        ("request_too_large", "invalid_request_error", Some("request_too_large")),
        ("timeout_error", "server_error", Some("timeout")),
        ("future_error", "server_error", Some("upstream_error")),
    ] {
        let body = map_stream_error(&anthropic_body(kind, "m"));
        assert_eq!((body.kind.as_str(), body.code.as_deref()), (expected_kind, code), "{kind}");
        assert_eq!(body.message, "anthropic: m");
        assert_eq!(body.param, None);
    }
}

#[test]
fn stream_error_shapes() {
    let event = br#"{"type":"error","error":{"details":null,"type":"overloaded_error","message":"Overloaded"}}"#;
    assert_eq!(map_stream_error(event), ErrorBody::new("anthropic: Overloaded", "server_error", Some("overloaded")));
    let bare = br#"{"type":"overloaded_error","message":"Overloaded"}"#;
    assert_eq!(map_stream_error(bare), map_stream_error(event));
    let no_message = br#"{"type":"error","error":{"type":"overloaded_error"}}"#;
    assert_eq!(map_stream_error(no_message).message, "anthropic: overloaded_error");
    let long = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 1 > 0"}}"#;
    assert_eq!(map_stream_error(long).code.as_deref(), Some("context_length_exceeded"));
    let garbage = map_stream_error(b"not json");
    assert_eq!((garbage.kind.as_str(), garbage.code.as_deref()), ("server_error", Some("upstream_error")));
}
