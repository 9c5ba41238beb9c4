use super::*;
use serde_json::json;

fn opts() -> EncodeOptions<'static> {
    EncodeOptions { upstream_model: "llama3.2:latest", stream: false, num_ctx: None, keep_alive: None }
}

fn request(value: Value) -> ChatRequest {
    serde_json::from_value(value).unwrap()
}

fn encode(value: Value) -> Value {
    encode_with(value, &opts())
}

fn encode_with(value: Value, opts: &EncodeOptions) -> Value {
    let encoded = encode_request(&request(value), opts).unwrap();
    serde_json::from_slice(&encoded.body).unwrap()
}

fn encode_err(value: Value) -> TranslateError {
    encode_request(&request(value), &opts()).unwrap_err()
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

#[test]
fn minimal_request_sends_model_messages_and_explicit_stream() {
    let body = encode(json!({"model": "ollama/llama3.2", "messages": [user("hi")]}));
    assert_eq!(
        body,
        json!({"model": "llama3.2:latest", "messages": [{"role": "user", "content": "hi"}], "stream": false})
    );
    let body = encode_with(json!({"model": "m", "messages": [user("hi")]}), &EncodeOptions { stream: true, ..opts() });
    assert_eq!(body["stream"], json!(true));
}

#[test]
fn empty_messages_is_400() {
    let err = encode_err(json!({"model": "m", "messages": []}));
    assert!(matches!(err, TranslateError::InvalidRequest { .. }));
    assert_eq!(err.param(), Some("messages"));
}

#[test]
fn system_and_developer_messages_stay_in_place() {
    let body = encode(json!({"model": "m", "messages": [
        {"role": "system", "content": "a"},
        user("u1"),
        {"role": "developer", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "c"}]},
        user("u2"),
        {"role": "system", "content": "z"}
    ]}));
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "a"},
            {"role": "user", "content": "u1"},
            {"role": "system", "content": "b\nc"},
            {"role": "user", "content": "u2"},
            {"role": "system", "content": "z"}
        ])
    );
}

#[test]
fn user_text_parts_join_into_one_message_with_images() {
    let body = encode(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "text", "text": "in this image?"},
        {"type": "image_url", "image_url": "data:image/jpeg;base64,/9j/4AAQ"}
    ]}]}));
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "What is\nin this image?", "images": ["iVBORw0KGgo=", "/9j/4AAQ"]}])
    );
}

#[test]
fn image_base64_is_normalized() {
    // URL-safe alphabet, newlines, missing padding, upper-case prefix, webp and the type-less form.
    let body = encode(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "DATA:image/webp;base64,_-8\nAB_-\r\n8"}},
        {"type": "image_url", "image_url": {"url": "data:;base64,/w"}}
    ]}]}));
    assert_eq!(body["messages"][0]["images"], json!(["/+8AB/+8", "/w=="]));
}

#[test]
fn image_errors_name_the_part() {
    let cases = [
        ("https://example.com/cat.png", "image URLs are not supported by Ollama; send a data URL", true),
        ("data:image/gif;base64,R0lGODlh", "GIF", true),
        ("data:image/svg+xml;base64,PHN2Zz4=", "image/svg+xml", true),
        ("data:image/png,rawbytes", "base64", false),
        ("data:image/png;base64,!!!!", "not valid base64", false),
        ("data:image/png;base64,a", "not valid base64", false),
        ("data:image/png;base64,", "not valid base64", false),
    ];
    for (url, needle, unsupported) in cases {
        let err = encode_err(json!({"model": "m", "messages": [
            user("x"),
            {"role": "user", "content": [{"type": "text", "text": "t"}, {"type": "image_url", "image_url": {"url": url}}]}
        ]}));
        assert_eq!(err.param(), Some("messages[1].content[1].image_url.url"), "{url}");
        assert!(err.to_string().contains(needle), "{url}: {err}");
        assert_eq!(matches!(err, TranslateError::Unsupported { .. }), unsupported, "{url}");
    }
}

#[test]
fn audio_file_and_unknown_parts_are_rejected() {
    for (part, unsupported) in [
        (json!({"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}), true),
        (json!({"type": "file", "file": {"file_data": "AA=="}}), true),
        (json!({"type": "video", "video": {}}), false),
    ] {
        let err = encode_err(json!({"model": "m", "messages": [{"role": "user", "content": [part]}]}));
        assert!(err.is_client_error());
        assert!(err.param().unwrap().starts_with("messages[0].content[0]"));
        assert_eq!(matches!(err, TranslateError::Unsupported { .. }), unsupported);
    }
    let err = encode_err(json!({"model": "m", "messages": [
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}
    ]}));
    assert_eq!(err.param(), Some("messages[0].content[0]"));
}

#[test]
fn assistant_tool_calls_become_objects_and_keep_ids_and_key_order() {
    let body = encode(json!({"model": "m", "messages": [
        user("weather?"),
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"z\":1, \"a\":{\"y\":2,\"b\":3}}"}},
            {"id": "call_b2", "type": "function", "function": {"name": "now", "arguments": ""}},
            {"id": "call_c3", "type": "function", "function": {"name": "now", "arguments": " {} "}}
        ]}
    ]}));
    let msg = &body["messages"][1];
    assert_eq!(
        msg,
        &json!({"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_a1", "function": {"index": 0, "name": "get_weather", "arguments": {"z": 1, "a": {"y": 2, "b": 3}}}},
            {"id": "call_b2", "function": {"index": 1, "name": "now", "arguments": {}}},
            {"id": "call_c3", "function": {"index": 2, "name": "now", "arguments": {}}}
        ]})
    );
    // Key order as the client wrote it (Value comparison above ignores order).
    let encoded = encode_request(
        &request(json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"z\":1,\"a\":2}"}}
        ]}]})),
        &opts(),
    )
    .unwrap();
    let text = String::from_utf8(encoded.body).unwrap();
    assert!(text.contains(r#""arguments":{"z":1,"a":2}"#), "{text}");
}

#[test]
fn bad_tool_arguments_are_400_with_the_path() {
    for args in ["{\"a\":", "[1,2]", "42", "\"str\"", "null"] {
        let err = encode_err(json!({"model": "m", "messages": [
            user("x"),
            {"role": "assistant", "content": "ok", "tool_calls": [
                {"id": "c0", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": args}}
            ]}
        ]}));
        assert!(matches!(err, TranslateError::InvalidRequest { .. }), "{args}");
        assert_eq!(err.param(), Some("messages[1].tool_calls[1].function.arguments"), "{args}");
    }
}

#[test]
fn tool_messages_get_tool_name_from_the_preceding_call() {
    let body = encode(json!({"model": "m", "messages": [
        user("x"),
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "first", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "second", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "r1"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "renamed", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "r2"},
        {"role": "tool", "tool_call_id": "orphan", "content": "r3"}
    ]}));
    let m = &body["messages"];
    assert_eq!(m[2], json!({"role": "tool", "content": "a\nb", "tool_name": "second", "tool_call_id": "call_2"}));
    assert_eq!(m[3], json!({"role": "tool", "content": "r1", "tool_name": "first", "tool_call_id": "call_1"}));
    assert_eq!(m[5], json!({"role": "tool", "content": "r2", "tool_name": "renamed", "tool_call_id": "call_1"}));
    assert_eq!(m[6], json!({"role": "tool", "content": "r3", "tool_call_id": "orphan"}));
}

#[test]
fn options_are_mapped_only_when_present() {
    let body = encode(json!({"model": "m", "messages": [user("x")],
        "temperature": 0.2, "top_p": 0.9, "seed": 42, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "stop": "END", "max_tokens": 100}));
    assert_eq!(
        body["options"],
        json!({"temperature": 0.2, "top_p": 0.9, "seed": 42, "presence_penalty": 0.5, "frequency_penalty": -0.5,
               "stop": ["END"], "num_predict": 100})
    );
    let body = encode(json!({"model": "m", "messages": [user("x")], "temperature": 0}));
    assert_eq!(body["options"], json!({"temperature": 0.0}));
    let body = encode(json!({"model": "m", "messages": [user("x")]}));
    assert!(body.get("options").is_none());
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    let body = encode(json!({"model": "m", "messages": [user("x")], "max_tokens": 10, "max_completion_tokens": 20}));
    assert_eq!(body["options"]["num_predict"], json!(20));
    let body = encode(json!({"model": "m", "messages": [user("x")], "max_completion_tokens": 7}));
    assert_eq!(body["options"]["num_predict"], json!(7));
}

#[test]
fn stop_array_drops_empty_entries() {
    let body = encode(json!({"model": "m", "messages": [user("x")], "stop": ["a", "", "b", "c", "d"]}));
    assert_eq!(body["options"]["stop"], json!(["a", "b", "c", "d"]));
    let body = encode(json!({"model": "m", "messages": [user("x")], "stop": ""}));
    assert!(body.get("options").is_none());
}

#[test]
fn num_ctx_and_keep_alive_come_from_route_options() {
    let o = EncodeOptions { num_ctx: Some(16384), keep_alive: Some("10m"), ..opts() };
    let body = encode_with(json!({"model": "m", "messages": [user("x")], "seed": 1}), &o);
    assert_eq!(body["options"], json!({"seed": 1, "num_ctx": 16384}));
    assert_eq!(body["keep_alive"], json!("10m"));
    let o = EncodeOptions { keep_alive: Some("-1"), ..opts() };
    assert_eq!(encode_with(json!({"model": "m", "messages": [user("x")]}), &o)["keep_alive"], json!(-1.0));
}

#[test]
fn out_of_range_sampling_values_are_400() {
    for (field, value) in [
        ("temperature", json!(-0.1)),
        ("temperature", json!(2.5)),
        ("top_p", json!(1.5)),
        ("presence_penalty", json!(3)),
        ("frequency_penalty", json!(-3)),
        ("top_logprobs", json!(21)),
    ] {
        let mut req = json!({"model": "m", "messages": [user("x")]});
        req[field] = value;
        let err = encode_err(req);
        assert_eq!(err.param(), Some(field));
    }
}

#[test]
fn response_format_maps_to_format() {
    let body = encode(json!({"model": "m", "messages": [user("x")], "response_format": {"type": "json_object"}}));
    assert_eq!(body["format"], json!("json"));
    let schema = json!({"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]});
    let body = encode(json!({"model": "m", "messages": [user("x")],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "strict": true, "schema": schema}}}));
    assert_eq!(body["format"], schema);
    let body = encode(json!({"model": "m", "messages": [user("x")],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s"}}}));
    assert_eq!(body["format"], json!("json"));
    let body = encode(json!({"model": "m", "messages": [user("x")], "response_format": {"type": "text"}}));
    assert!(body.get("format").is_none());
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": true}},
        {"type": "function", "function": {"name": "now"}}
    ])
}

#[test]
fn tools_pass_through_with_default_parameters() {
    let body = encode(json!({"model": "m", "messages": [user("x")], "tools": weather_tools()}));
    assert_eq!(
        body["tools"],
        json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
        ])
    );
    let body = encode(json!({"model": "m", "messages": [user("x")], "tools": weather_tools(), "tool_choice": "auto"}));
    assert_eq!(body["tools"].as_array().map(Vec::len), Some(2));
}

#[test]
fn tool_choice_none_omits_tools() {
    let body = encode(json!({"model": "m", "messages": [user("x")], "tools": weather_tools(), "tool_choice": "none"}));
    assert!(body.get("tools").is_none());
}

#[test]
fn forced_tool_choice_is_unsupported() {
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
        json!({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": []}}),
    ] {
        let err =
            encode_err(json!({"model": "m", "messages": [user("x")], "tools": weather_tools(), "tool_choice": choice}));
        assert!(matches!(err, TranslateError::Unsupported { .. }));
        assert_eq!(err.param(), Some("tool_choice"));
        assert!(err.to_string().contains("cannot be enforced by Ollama"), "{err}");
    }
}

#[test]
fn custom_tools_are_unsupported() {
    let err = encode_err(json!({"model": "m", "messages": [user("x")],
        "tools": [{"type": "custom", "custom": {"name": "grammar"}}]}));
    assert!(matches!(err, TranslateError::Unsupported { .. }));
    assert_eq!(err.param(), Some("tools[0].type"));
}

#[test]
fn logprobs_are_mapped() {
    let body = encode(json!({"model": "m", "messages": [user("x")], "logprobs": true, "top_logprobs": 5}));
    assert_eq!(body["logprobs"], json!(true));
    assert_eq!(body["top_logprobs"], json!(5));
}

#[test]
fn reasoning_effort_maps_to_think() {
    for (effort, think) in [
        ("none", json!(false)),
        ("minimal", json!("low")),
        ("low", json!("low")),
        ("medium", json!("medium")),
        ("high", json!("high")),
        ("xhigh", json!("max")),
    ] {
        let body = encode(json!({"model": "m", "messages": [user("x")], "reasoning_effort": effort}));
        assert_eq!(body["think"], think, "{effort}");
    }
    let err = encode_err(json!({"model": "m", "messages": [user("x")], "reasoning_effort": "extreme"}));
    assert_eq!(err.param(), Some("reasoning_effort"));
    assert!(encode(json!({"model": "m", "messages": [user("x")]})).get("think").is_none());
}

#[test]
fn n_greater_than_one_is_400() {
    let err = encode_err(json!({"model": "m", "messages": [user("x")], "n": 2}));
    assert_eq!(err.param(), Some("n"));
    assert!(err.is_client_error());
    assert!(encode_request(&request(json!({"model": "m", "messages": [user("x")], "n": 1})), &opts()).is_ok());
}

#[test]
fn dropped_params_are_reported() {
    let encoded = encode_request(
        &request(json!({"model": "m", "messages": [{"role": "user", "content": "x", "name": "bob"}],
            "logit_bias": {"50256": -100}, "user": "u-1", "parallel_tool_calls": false,
            "metadata": {"k": "v"}, "store": true, "some_future_param": 1})),
        &opts(),
    )
    .unwrap();
    assert_eq!(
        encoded.dropped_params,
        vec!["messages[].name", "logit_bias", "user", "parallel_tool_calls", "metadata", "store"]
    );
    let body: Value = serde_json::from_slice(&encoded.body).unwrap();
    for key in ["logit_bias", "user", "metadata", "store", "some_future_param", "parallel_tool_calls"] {
        assert!(body.get(key).is_none(), "{key}");
    }
}

#[test]
fn stream_options_without_stream_is_400() {
    let err = encode_err(json!({"model": "m", "messages": [user("x")], "stream_options": {"include_usage": true}}));
    assert_eq!(err.param(), Some("stream_options"));
    let ok = encode_request(
        &request(
            json!({"model": "m", "messages": [user("x")], "stream": true, "stream_options": {"include_usage": true}}),
        ),
        &opts(),
    );
    assert!(ok.is_ok());
}

#[test]
fn legacy_function_messages_are_unsupported() {
    let err =
        encode_err(json!({"model": "m", "messages": [user("x"), {"role": "function", "name": "f", "content": "r"}]}));
    assert_eq!(err.param(), Some("messages[1].role"));
    let err = encode_err(json!({"model": "m", "messages": [
        {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}}]}));
    assert_eq!(err.param(), Some("messages[0].function_call"));
}
