use super::*;
use serde_json::json;

fn ctx() -> ResponseContext {
    ResponseContext {
        id: "chatcmpl-test".into(),
        created: 1_760_000_000,
        model: "ollama/llama3.2".into(),
        include_usage: false,
        include_reasoning: false,
        id_seed: 7,
    }
}

fn decode(body: Value, ctx: &ResponseContext) -> Value {
    let resp = decode_response(&serde_json::to_vec(&body).unwrap(), ctx).unwrap();
    serde_json::to_value(resp).unwrap()
}

#[test]
fn text_response() {
    let out = decode(
        json!({"model": "llama3.2", "created_at": "2025-07-07T20:32:53.844124Z",
               "message": {"role": "assistant", "content": "Hello!"}, "done": true, "done_reason": "stop",
               "total_duration": 1, "prompt_eval_count": 12, "eval_count": 3}),
        &ctx(),
    );
    assert_eq!(
        out,
        json!({"id": "chatcmpl-test", "object": "chat.completion", "created": 1_760_000_000u64, "model": "ollama/llama3.2",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": null},
                            "logprobs": null, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}})
    );
}

#[test]
fn tool_calls_with_and_without_ids_and_stop_becomes_tool_calls() {
    let out = decode(
        json!({"message": {"role": "assistant", "content": "",
                "tool_calls": [
                    {"id": "call_k3j9x2ab", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo", "a": 1}}},
                    {"function": {"name": "now", "arguments": {}}}
                ]},
               "done": true, "done_reason": "stop", "prompt_eval_count": 169, "eval_count": 18}),
        &ctx(),
    );
    let msg = &out["choices"][0]["message"];
    assert_eq!(msg["content"], Value::Null);
    assert_eq!(
        msg["tool_calls"],
        json!([
            // `json!` sorts keys; order preservation is tested with raw bytes below.
            {"id": "call_k3j9x2ab", "type": "function", "function": {"name": "get_weather", "arguments": "{\"a\":1,\"city\":\"Tokyo\"}"}},
            {"id": crate::ids::tool_call_id(7, 1), "type": "function", "function": {"name": "now", "arguments": "{}"}}
        ])
    );
    assert_eq!(out["choices"][0]["finish_reason"], json!("tool_calls"));
}

#[test]
fn tool_arguments_keep_key_order_and_are_compact() {
    let body = br#"{"message":{"tool_calls":[{"function":{"name":"f","arguments":{ "z" : [1, 2], "a" : "x y\" }" }}}]},"done":true}"#;
    let resp = decode_response(body, &ctx()).unwrap();
    let calls = resp.choices[0].message.tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].function.arguments, r#"{"z":[1,2],"a":"x y\" }"}"#);
}

#[test]
fn missing_arguments_and_string_arguments() {
    let resp = decode_response(
        br#"{"message":{"tool_calls":[{"function":{"name":"f"}},{"function":{"name":"g","arguments":"{\"k\":1}"}}]},"done":true}"#,
        &ctx(),
    )
    .unwrap();
    let calls = resp.choices[0].message.tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].function.arguments, "{}");
    assert_eq!(calls[1].function.arguments, "{\"k\":1}");
}

#[test]
fn finish_reason_mapping() {
    let cases = [
        (json!("stop"), false, "stop"),
        (json!("stop"), true, "tool_calls"),
        (json!("length"), false, "length"),
        (json!("length"), true, "length"),
        (Value::Null, false, "stop"),
        (json!(""), false, "stop"),
        (json!("unload"), false, "stop"),
        (json!("something_new"), true, "tool_calls"),
    ];
    for (reason, tool, expected) in cases {
        let mut body = json!({"message": {"content": "x"}, "done": true, "done_reason": reason});
        if tool {
            body["message"]["tool_calls"] = json!([{"function": {"name": "f", "arguments": {}}}]);
        }
        assert_eq!(decode(body, &ctx())["choices"][0]["finish_reason"], json!(expected), "{reason} {tool}");
    }
}

#[test]
fn usage_defaults_to_zero_and_maps_cached_count() {
    let out = decode(json!({"message": {"content": "x"}, "done": true, "eval_count": 5}), &ctx());
    assert_eq!(out["usage"], json!({"prompt_tokens": 0, "completion_tokens": 5, "total_tokens": 5}));
    let out = decode(
        json!({"message": {"content": "x"}, "done": true, "prompt_eval_count": 100, "eval_count": 5, "prompt_eval_cached_count": 64}),
        &ctx(),
    );
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105, "prompt_tokens_details": {"cached_tokens": 64}})
    );
}

#[test]
fn thinking_only_when_reasoning_is_enabled() {
    let body = json!({"message": {"content": "4", "thinking": "2+2..."}, "done": true});
    assert!(decode(body.clone(), &ctx())["choices"][0]["message"].get("reasoning_content").is_none());
    let with = ResponseContext { include_reasoning: true, ..ctx() };
    assert_eq!(decode(body, &with)["choices"][0]["message"]["reasoning_content"], json!("2+2..."));
}

#[test]
fn logprobs_are_mapped_to_openai_shape() {
    let out = decode(
        json!({"message": {"content": "Hi"}, "done": true,
               "logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": [{"token": "Hi", "logprob": -0.1}]}]}),
        &ctx(),
    );
    assert_eq!(
        out["choices"][0]["logprobs"],
        json!({"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
                            "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": null}]}], "refusal": null})
    );
}

#[test]
fn error_body_and_garbage_are_errors() {
    let err = decode_response(br#"{"error":"model crashed"}"#, &ctx()).unwrap_err();
    assert!(matches!(err, TranslateError::Protocol(_)));
    assert!(err.to_string().contains("ollama: model crashed"));
    assert!(matches!(decode_response(b"<html>", &ctx()), Err(TranslateError::Json { .. })));
}

#[test]
fn tags_are_parsed() {
    let body = br#"{"models":[
        {"name":"llama3.2:latest","model":"llama3.2:latest","modified_at":"2025-05-04T17:37:44.706015396-07:00","size":1,"details":{"family":"llama"}},
        {"name":"hf.co/org/repo:Q4_K_M","modified_at":"not a date"},
        {"model":"only-model:7b","modified_at":"2024-01-01T00:00:00Z"},
        {"size":3}
    ]}"#;
    assert_eq!(
        parse_tags(body).unwrap(),
        vec![
            ModelInfo { id: "llama3.2:latest".into(), created: 1_746_405_464 },
            ModelInfo { id: "hf.co/org/repo:Q4_K_M".into(), created: 0 },
            ModelInfo { id: "only-model:7b".into(), created: 1_704_067_200 },
        ]
    );
    assert_eq!(parse_tags(br#"{"models":null}"#).unwrap(), vec![]);
    assert!(parse_tags(b"not json").is_err());
}

#[test]
fn rfc3339_parsing() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339("2025-05-04T17:37:44.706015396-07:00"), Some(1_746_405_464));
    assert_eq!(parse_rfc3339("2025-05-05T00:37:44Z"), Some(1_746_405_464));
    assert_eq!(parse_rfc3339("2025-05-05T02:07:44+01:30"), Some(1_746_405_464));
    assert_eq!(parse_rfc3339("2024-02-29t12:00:00.5z"), Some(1_709_208_000));
    assert_eq!(parse_rfc3339("2000-03-01 00:00:00+00:00"), Some(951_868_800));
    for bad in [
        "",
        "2025-05-04",
        "2025-05-04T17:37:44",
        "2025-13-04T17:37:44Z",
        "2023-02-29T00:00:00Z",
        "2025-05-04T24:00:00Z",
        "2025-05-04T17:37:44.Z",
        "2025-05-04T17:37:44+0700",
        "1969-12-31T23:59:59Z",
        "2025-05-04T17:37:44Zjunk",
        "２０２５-05-04T17:37:44Z",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
}

#[test]
fn compact_json_keeps_strings_intact() {
    assert_eq!(compact_json("{ \"a b\" : [ 1 , \"\\\\\" ] }"), "{\"a b\":[1,\"\\\\\"]}");
}
