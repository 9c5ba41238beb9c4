//! Non-stream response decoding, finish/usage mapping, model listing and RFC 3339 parsing.

use serde_json::{json, Value};

use super::*;

fn ctx(include_reasoning: bool) -> ResponseContext {
    ResponseContext {
        id: "chatcmpl-ctx".to_owned(),
        created: 1_760_000_000,
        model: "anthropic/claude-sonnet-4-5".to_owned(),
        include_usage: false,
        include_reasoning,
        id_seed: 1,
    }
}

fn message(content: Value, stop_reason: &str, usage: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929", "content": content, "stop_reason": stop_reason,
        "stop_sequence": null, "usage": usage}))
    .unwrap()
}

fn decode_json(body: &[u8], include_reasoning: bool) -> Value {
    serde_json::to_value(decode_response(body, &ctx(include_reasoning)).unwrap()).unwrap()
}

#[test]
fn text_and_tool_calls_with_cache_usage() {
    let body = message(
        json!([
            {"type": "text", "text": "Let me check "},
            {"type": "text", "text": "both."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Tokyo", "units": ["c"]}}
        ]),
        "tool_use",
        json!({"input_tokens": 412, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2048,
               "output_tokens": 89, "service_tier": "standard"}),
    );
    assert_eq!(
        decode_json(&body, false),
        json!({
            "id": "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
            "object": "chat.completion",
            "created": 1_760_000_000,
            "model": "anthropic/claude-sonnet-4-5",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check both.",
                    "refusal": null,
                    "tool_calls": [
                        {"id": "toolu_01A", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "toolu_01B", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Tokyo\",\"units\":[\"c\"]}"}}
                    ]
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {
                "prompt_tokens": 412 + 100 + 2048,
                "completion_tokens": 89,
                "total_tokens": 412 + 100 + 2048 + 89,
                "prompt_tokens_details": {"cached_tokens": 2048, "cache_write_tokens": 100},
                "completion_tokens_details": {"reasoning_tokens": 0}
            }
        })
    );
}

#[test]
fn only_tool_calls_gives_null_content_and_no_text_gives_empty_string() {
    let body = message(
        json!([{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]),
        "tool_use",
        json!({"input_tokens": 1, "output_tokens": 2}),
    );
    let v = decode_json(&body, false);
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{}");
    let body = message(json!([]), "end_turn", json!({"input_tokens": 1, "output_tokens": 1}));
    let v = decode_json(&body, false);
    assert_eq!(v["choices"][0]["message"]["content"], "");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
}

#[test]
fn thinking_only_with_include_reasoning_and_unknown_blocks_skipped() {
    let body = message(
        json!([
            {"type": "thinking", "thinking": "Hmm, ", "signature": "EqQB"},
            {"type": "redacted_thinking", "data": "EmwK"},
            {"type": "thinking", "thinking": "primes.", "signature": "EqQC"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "some_future_block", "x": 1},
            {"type": "text", "text": "Answer."}
        ]),
        "end_turn",
        json!({"input_tokens": 5, "output_tokens": 50, "output_tokens_details": {"thinking_tokens": 40}}),
    );
    let with = decode_json(&body, true);
    assert_eq!(with["choices"][0]["message"]["reasoning_content"], "Hmm, primes.");
    assert_eq!(with["choices"][0]["message"]["content"], "Answer.");
    assert_eq!(with["usage"]["completion_tokens_details"]["reasoning_tokens"], 40);
    let without = decode_json(&body, false);
    assert!(without["choices"][0]["message"].get("reasoning_content").is_none());
    assert_eq!(without["choices"][0]["message"]["content"], "Answer.");
    assert!(without["choices"][0]["message"].get("tool_calls").is_none(), "server tools are not client calls");
}

#[test]
fn finish_reason_mapping() {
    for (stop, expected) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("brand_new_reason", "stop"),
    ] {
        let body =
            message(json!([{"type": "text", "text": "x"}]), stop, json!({"input_tokens": 1, "output_tokens": 1}));
        assert_eq!(decode_json(&body, false)["choices"][0]["finish_reason"], expected, "{stop}");
    }
    let body = serde_json::to_vec(&json!({"id": "msg_1", "content": [], "stop_reason": null})).unwrap();
    assert_eq!(decode_json(&body, false)["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish_reason(None), FinishReason::Stop);
}

#[test]
fn refusal_explanation_goes_to_refusal() {
    let body = serde_json::to_vec(&json!({
        "id": "msg_r", "type": "message", "role": "assistant", "content": [],
        "stop_reason": "refusal",
        "stop_details": {"type": "refusal", "category": "cyber", "explanation": "Refused due to policy."},
        "usage": {"input_tokens": 20, "output_tokens": 0}}))
    .unwrap();
    let v = decode_json(&body, false);
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["message"]["refusal"], "Refused due to policy.");
    assert_eq!(v["choices"][0]["message"]["content"], "");
}

#[test]
fn missing_usage_and_missing_id_are_tolerated() {
    let body = br#"{"type":"message","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn"}"#;
    let v = decode_json(body, false);
    assert_eq!(v["id"], "chatcmpl-ctx");
    assert_eq!(v["usage"]["prompt_tokens"], 0);
    assert_eq!(v["usage"]["total_tokens"], 0);
}

#[test]
fn json_mode_unwraps_the_forced_tool() {
    let body = message(
        json!([{"type": "tool_use", "id": "toolu_j", "name": "json_response", "input": {"name": "Ada", "age": 36}}]),
        "tool_use",
        json!({"input_tokens": 10, "output_tokens": 20}),
    );
    let v = serde_json::to_value(decode_response_json_mode(&body, &ctx(false), "json_response").unwrap()).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let content: Value = serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"name": "Ada", "age": 36}));
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    // Without JSON mode the same body is an ordinary tool call.
    let v = decode_json(&body, false);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    // max_tokens in JSON mode stays length.
    let body = message(
        json!([{"type": "tool_use", "id": "toolu_j", "name": "json_response", "input": {}}]),
        "max_tokens",
        json!({"input_tokens": 10, "output_tokens": 20}),
    );
    let v = serde_json::to_value(decode_response_json_mode(&body, &ctx(false), "json_response").unwrap()).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["choices"][0]["message"]["content"], "{}");
}

#[test]
fn error_objects_and_garbage_are_errors() {
    let e =
        decode_response(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, &ctx(false))
            .unwrap_err();
    assert!(matches!(e, TranslateError::Protocol(_)), "{e:?}");
    assert!(e.to_string().contains("Overloaded"));
    assert!(!e.is_client_error());
    // An error object that does not even fit a message's shape is still read as an error object.
    let odd = br#"{"type":"error","content":5,"error":{"type":"api_error","message":"Internal"}}"#;
    let e = decode_response(odd, &ctx(false)).unwrap_err();
    assert!(matches!(e, TranslateError::Protocol(_)) && e.to_string().contains("Internal"), "{e:?}");
    assert!(matches!(decode_response(b"<html>502</html>", &ctx(false)), Err(TranslateError::Json { .. })));
    assert!(matches!(decode_response(b"", &ctx(false)), Err(TranslateError::Json { .. })));
    assert!(matches!(decode_response(b"[1,2]", &ctx(false)), Err(TranslateError::Json { .. })));
}

#[test]
fn models_page() {
    let body = br#"{"data": [
        {"type": "model", "id": "claude-sonnet-4-5-20250929", "display_name": "Claude Sonnet 4.5",
         "created_at": "2025-09-29T00:00:00Z", "max_input_tokens": 200000, "max_tokens": 64000},
        {"type": "model", "id": "claude-3-haiku-20240307", "display_name": "Claude Haiku 3",
         "created_at": "not a date"},
        {"type": "model", "id": "claude-x"}
    ], "has_more": true, "first_id": "claude-sonnet-4-5-20250929", "last_id": "claude-x"}"#;
    let page = parse_models_page(body).unwrap();
    assert!(page.has_more);
    assert_eq!(page.last_id.as_deref(), Some("claude-x"));
    assert_eq!(
        page.models[0],
        ModelInfo {
            id: "claude-sonnet-4-5-20250929".to_owned(),
            created: 1_759_104_000,
            display_name: Some("Claude Sonnet 4.5".to_owned()),
            max_tokens: Some(64000),
        }
    );
    assert_eq!(page.models[1].created, 0);
    assert_eq!(
        page.models[2],
        ModelInfo { id: "claude-x".to_owned(), created: 0, display_name: None, max_tokens: None }
    );
    let empty = parse_models_page(br#"{"data": [], "has_more": false, "first_id": null, "last_id": null}"#).unwrap();
    assert!(empty.models.is_empty() && !empty.has_more && empty.last_id.is_none());
    assert!(parse_models_page(b"nope").is_err());
}

#[test]
fn rfc3339() {
    for (s, expected) in [
        ("1970-01-01T00:00:00Z", Some(0)),
        ("2025-09-29T00:00:00Z", Some(1_759_104_000)),
        ("2025-05-04T17:37:44.706015396-07:00", Some(1_746_405_464)),
        ("2024-02-29T12:00:00+02:00", Some(1_709_200_800)),
        ("2000-03-01t00:00:00z", Some(951_868_800)),
        ("2025-09-29 00:00:00Z", Some(1_759_104_000)),
        ("1969-12-31T23:59:59Z", None),
        ("2023-02-29T00:00:00Z", None),
        ("2025-13-01T00:00:00Z", None),
        ("2025-09-29T24:00:00Z", None),
        ("2025-09-29T00:00:00", None),
        ("2025-09-29", None),
        ("2025-09-29T00:00:00.Z", None),
        ("2025-09-29T00:00:00+0200", None),
        ("", None),
        ("2025-09-29T00:00:00Zjunk", None),
    ] {
        assert_eq!(parse_rfc3339(s), expected, "{s}");
    }
}
