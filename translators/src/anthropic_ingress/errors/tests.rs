//! Error envelopes: type per status, 503 → 529, context-overflow rewording, in-band types.

use serde_json::{json, Value};

use super::*;

fn parse(e: &EncodedError) -> Value {
    serde_json::from_slice(&e.body).unwrap()
}

#[test]
fn type_per_status() {
    for (status, kind, sent) in [
        (400, "invalid_request_error", 400),
        (401, "authentication_error", 401),
        (402, "billing_error", 402),
        (403, "permission_error", 403),
        (404, "not_found_error", 404),
        (409, "invalid_request_error", 409),
        (413, "request_too_large", 413),
        (422, "invalid_request_error", 422),
        (429, "rate_limit_error", 429),
        (500, "api_error", 500),
        (502, "api_error", 502),
        (503, "overloaded_error", 529),
        (504, "timeout_error", 504),
        (529, "overloaded_error", 529),
    ] {
        let e = encode_error(status, &ErrorBody::new("boom", "server_error", None), Some("req_1"));
        assert_eq!(e.status, sent, "{status}");
        assert_eq!(
            parse(&e),
            json!({"type": "error", "error": {"type": kind, "message": "boom"}, "request_id": "req_1"})
        );
    }
    let e = encode_error(401, &ErrorBody::new("bad key", "invalid_request_error", None), None);
    assert_eq!(parse(&e), json!({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}));
}

#[test]
fn context_overflow_is_reworded_for_claude_code() {
    let cases = [
        (
            ErrorBody::new("This model's maximum context length is 128000 tokens. However, your messages resulted in 130,512 tokens. Please reduce the length of the messages.", "invalid_request_error", Some("context_length_exceeded")),
            "prompt is too long: 130512 tokens > 128000 maximum",
        ),
        (
            ErrorBody::new("This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion).", "BadRequestError", None),
            "prompt is too long: 5000 tokens > 4096 maximum",
        ),
        (
            ErrorBody::new("input exceeds the context window", "invalid_request_error", Some("context_length_exceeded")),
            "prompt is too long: input exceeds the context window",
        ),
        (
            ErrorBody::new("prompt is too long: 205000 tokens > 200000 maximum", "invalid_request_error", None),
            "prompt is too long: 205000 tokens > 200000 maximum",
        ),
    ];
    for (body, expected) in cases {
        // Whatever status the backend used (some say 413 or 500), the client sees Anthropic's 400.
        for status in [400, 413, 500] {
            let e = encode_error(status, &body, None);
            assert_eq!(e.status, 400);
            assert_eq!(parse(&e)["error"], json!({"type": "invalid_request_error", "message": expected}));
        }
        assert_eq!(stream_error_type(&body), ("invalid_request_error", expected.to_owned()));
    }
    assert_eq!(context_overflow_message(&ErrorBody::new("model not found", "invalid_request_error", None)), None);
}

#[test]
fn in_band_types() {
    for (kind, code, expected) in [
        ("requests", Some("rate_limit_exceeded"), "rate_limit_error"),
        ("server_error", Some("overloaded"), "overloaded_error"),
        ("server_error", Some("timeout"), "timeout_error"),
        ("insufficient_quota", Some("insufficient_quota"), "billing_error"),
        ("server_error", Some("upstream_auth_failed"), "api_error"),
        ("invalid_request_error", None, "invalid_request_error"),
        ("overloaded_error", None, "overloaded_error"),
        ("server_error", Some("upstream_error"), "api_error"),
        ("whatever", None, "api_error"),
    ] {
        let (got, message) = stream_error_type(&ErrorBody::new("m", kind, code));
        assert_eq!(got, expected, "{kind} {code:?}");
        assert_eq!(message, "m");
    }
}

#[test]
fn translate_errors_are_400_with_the_field_in_the_message() {
    let e = encode_translate_error(&TranslateError::invalid("max_tokens: Field required", "max_tokens"), Some("req_9"));
    assert_eq!(e.status, 400);
    assert_eq!(
        parse(&e),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}, "request_id": "req_9"})
    );
    let e = encode_translate_error(&TranslateError::Protocol("x".into()), None);
    assert_eq!(e.status, 500);
    assert_eq!(parse(&e)["error"]["type"], "api_error");
}
