//! Request decoding: field mapping, precise error paths, `rewrite_model`, and the round trip
//! Anthropic body → hub → the existing Anthropic egress encoder → compared with the original.

use serde_json::{json, Value};

use super::*;
use crate::anthropic::{encode_request, EncodeOptions};

fn decode_value(v: Value) -> DecodedRequest {
    decode_request(&serde_json::to_vec(&v).unwrap()).unwrap_or_else(|e| panic!("unexpected error: {e:?}"))
}

fn base(messages: Value) -> Value {
    json!({"model": "ollama/qwen3", "max_tokens": 1024, "messages": messages})
}

/// The hub request as JSON, for comparison with expected values.
fn hub(v: Value) -> Value {
    serde_json::to_value(decode_value(v).chat).unwrap()
}

fn err(v: Value) -> TranslateError {
    match decode_request(&serde_json::to_vec(&v).unwrap()) {
        Ok(d) => panic!("expected an error, got {:?}", d.chat),
        Err(e) => e,
    }
}

#[test]
fn minimal_request() {
    let got = hub(base(json!([{"role": "user", "content": "Hello"}])));
    assert_eq!(
        got,
        json!({"model": "ollama/qwen3", "max_completion_tokens": 1024,
               "messages": [{"role": "user", "content": "Hello"}]})
    );
}

#[test]
fn system_blocks_cache_control_and_attribution() {
    let mut v = base(json!([{"role": "user", "content": "hi"}]));
    v["system"] = json!([
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.70; cc_entrypoint=cli; cch=abc;"},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief."}
    ]);
    let d = decode_value(v);
    let got = serde_json::to_value(&d.chat).unwrap();
    assert_eq!(got["messages"][0], json!({"role": "system", "content": "You are Claude Code.\nBe brief."}));
    assert_eq!(d.dropped, vec!["cache_control"]);

    let mut v = base(json!([{"role": "user", "content": "hi"}]));
    v["system"] = json!("Plain system.");
    assert_eq!(hub(v)["messages"][0], json!({"role": "system", "content": "Plain system."}));
}

/// Claude Code 2.1.3xx sends `system` turns inside `messages` to models it does not know (every
/// `openai/…` and `ollama/…` name): they become system messages in place, not a 400.
#[test]
fn system_turns_inside_messages() {
    let got = hub(base(json!([
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "# Environment", "cache_control": {"type": "ephemeral"}},
                                       {"type": "text", "text": "cwd: /w"}]},
        {"role": "system", "content": "Plain."},
        {"role": "system", "content": []}
    ])));
    assert_eq!(
        got["messages"],
        json!([{"role": "user", "content": "hi"}, {"role": "system", "content": "# Environment\ncwd: /w"},
               {"role": "system", "content": "Plain."}])
    );
}

#[test]
fn images_base64_and_url() {
    let got = hub(base(json!([{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    ]}])));
    assert_eq!(
        got["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
        ])
    );
}

#[test]
fn documents() {
    let got = hub(base(json!([{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}, "title": "a.pdf"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain body"}, "title": "Notes"}
    ]}])));
    assert_eq!(
        got["messages"][0]["content"],
        json!([
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
            {"type": "text", "text": "Notes\nplain body"}
        ])
    );
    let e = err(base(json!([{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}])));
    assert!(matches!(e, TranslateError::Unsupported { .. }));
    assert_eq!(e.param(), Some("messages.0.content.0.source.type"));
}

#[test]
fn tool_use_and_results_with_errors_and_images() {
    let mut v = base(json!([
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two calls.", "signature": "EqQB"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Tokyo"}}
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18°C"},
            {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": true,
             "content": [{"type": "text", "text": "timeout"},
                         {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}}]},
            {"type": "text", "text": "Summarize."}
        ]}
    ]));
    v["tools"] = json!([{"name": "get_weather", "description": "Weather", "input_schema":
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let d = decode_value(v);
    assert_eq!(d.dropped, vec!["thinking_blocks"]);
    let got = serde_json::to_value(&d.chat).unwrap();
    assert_eq!(
        got["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_01B", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Tokyo\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "18°C"},
            {"role": "tool", "tool_call_id": "toolu_01B", "content": "Error: timeout"},
            {"role": "user", "content": [
                {"type": "text", "text": "Summarize."},
                {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}}
            ]}
        ])
    );
    assert_eq!(
        got["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    );
}

#[test]
fn tool_choice_variants() {
    let tools = json!([{"name": "f", "input_schema": {"type": "object"}}]);
    let cases = [
        (json!({"type": "auto"}), json!("auto"), None),
        (json!({"type": "any"}), json!("required"), None),
        (json!({"type": "none"}), json!("none"), None),
        (json!({"type": "tool", "name": "f"}), json!({"type": "function", "function": {"name": "f"}}), None),
        (json!({"type": "auto", "disable_parallel_tool_use": true}), json!("auto"), Some(false)),
        (json!({"type": "any", "disable_parallel_tool_use": false}), json!("required"), None),
    ];
    for (choice, expected, parallel) in cases {
        let mut v = base(json!([{"role": "user", "content": "x"}]));
        v["tools"] = tools.clone();
        v["tool_choice"] = choice.clone();
        let got = hub(v);
        assert_eq!(got["tool_choice"], expected, "{choice}");
        assert_eq!(got.get("parallel_tool_calls").and_then(Value::as_bool), parallel, "{choice}");
    }
    let mut v = base(json!([{"role": "user", "content": "x"}]));
    v["tools"] = tools;
    v["tool_choice"] = json!({"type": "tool", "name": "nope"});
    assert_eq!(err(v).param(), Some("tool_choice.name"));
}

#[test]
fn sampling_stop_metadata_stream() {
    let mut v = base(json!([{"role": "user", "content": "x"}]));
    v["temperature"] = json!(0.2);
    v["top_p"] = json!(0.9);
    v["top_k"] = json!(40);
    v["stop_sequences"] = json!(["END", "STOP"]);
    v["metadata"] = json!({"user_id": "user-123"});
    v["stream"] = json!(true);
    v["context_management"] = json!({"edits": []});
    v["some_future_field"] = json!({"a": 1});
    let d = decode_value(v);
    assert_eq!(d.top_k, Some(40));
    assert_eq!(d.stop_sequences, vec!["END", "STOP"]);
    assert_eq!(d.dropped, vec!["top_k", "context_management"]);
    let got = serde_json::to_value(&d.chat).unwrap();
    assert_eq!(got["temperature"], 0.2);
    assert_eq!(got["top_p"], 0.9);
    assert_eq!(got["stop"], json!(["END", "STOP"]));
    assert_eq!(got["user"], "user-123");
    assert_eq!(got["stream"], true);
    assert_eq!(got["stream_options"], json!({"include_usage": true}));
    assert!(got.get("some_future_field").is_none());
}

#[test]
fn thinking_to_reasoning_effort() {
    let cases = [
        (json!({"type": "enabled", "budget_tokens": 1024}), None, Some("low"), true),
        (json!({"type": "enabled", "budget_tokens": 2048}), None, Some("medium"), true),
        (json!({"type": "enabled", "budget_tokens": 31999}), None, Some("high"), true),
        (json!({"type": "adaptive"}), None, Some("medium"), true),
        (json!({"type": "adaptive"}), Some(json!({"effort": "max"})), Some("xhigh"), true),
        (json!({"type": "disabled"}), None, None, false),
        (Value::Null, Some(json!({"effort": "low"})), Some("low"), true),
    ];
    for (thinking, output_config, effort, on) in cases {
        let mut v = base(json!([{"role": "user", "content": "x"}]));
        v["max_tokens"] = json!(40000);
        v["thinking"] = thinking.clone();
        if let Some(c) = output_config {
            v["output_config"] = c;
        }
        let d = decode_value(v);
        assert_eq!(d.chat.reasoning_effort.as_deref(), effort, "{thinking}");
        assert_eq!(d.thinking, on, "{thinking}");
    }
    let mut v = base(json!([{"role": "user", "content": "x"}]));
    v["thinking"] = json!({"type": "enabled", "budget_tokens": 100});
    assert_eq!(err(v).param(), Some("thinking.budget_tokens"));
}

#[test]
fn output_format_json_schema() {
    let mut v = base(json!([{"role": "user", "content": "x"}]));
    v["output_config"] = json!({"format": {"type": "json_schema", "schema": {"type": "object"}}});
    assert_eq!(
        hub(v)["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": true}})
    );
}

#[test]
fn precise_errors() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}), "max_tokens"),
        (json!({"model": "m", "max_tokens": 0, "messages": []}), "max_tokens"),
        (json!({"model": "m", "max_tokens": "10", "messages": []}), "max_tokens"),
        (json!({"max_tokens": 10, "messages": []}), "model"),
        (json!({"model": "m", "max_tokens": 10}), "messages"),
        (json!({"model": "m", "max_tokens": 10, "messages": []}), "messages"),
        (base(json!([{"role": "tool", "content": "x"}])), "messages.0.role"),
        (base(json!([{"role": "system", "content": [{"type": "image"}]}])), "messages.0.content.0.type"),
        (base(json!([{"role": "system", "content": 7}])), "messages.0.content"),
        (base(json!([{"role": "user"}])), "messages.0.content"),
        (base(json!([{"role": "user", "content": [{"text": "no type"}]}])), "messages.0.content.0.type"),
        (base(json!([{"role": "user", "content": [{"type": "text"}]}])), "messages.0.content.0.text"),
        (
            base(
                json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "x"}}]}]),
            ),
            "messages.0.content.0.source.media_type",
        ),
        (base(json!([{"role": "user", "content": [{"type": "tool_result"}]}])), "messages.0.content.0.tool_use_id"),
        (
            base(
                json!([{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}]),
            ),
            "messages.0.content.0.input",
        ),
        (
            base(
                json!([{"role": "user", "content": "x"}, {"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}]}]),
            ),
            "messages.1.content.0.type",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]}),
            "temperature",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
            "stream",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "tools": [{"name": "f"}], "messages": [{"role": "user", "content": "x"}]}),
            "tools.0.input_schema",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "tools": [{"name": "f", "input_schema": {}}, {"name": "f", "input_schema": {}}], "messages": [{"role": "user", "content": "x"}]}),
            "tools.1.name",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "tool_choice": {"type": "any"}, "messages": [{"role": "user", "content": "x"}]}),
            "tool_choice",
        ),
    ];
    for (body, param) in cases {
        let e = err(body.clone());
        assert!(e.is_client_error(), "{body}");
        assert_eq!(e.param(), Some(param), "{body}: {e}");
        assert!(e.to_string().starts_with(param), "message names the field: {e}");
    }
    assert!(decode_request(b"[1]").is_err());
    assert!(decode_request(b"{not json").is_err());
}

#[test]
fn server_tools_and_mcp_are_unsupported() {
    let mut v = base(json!([{"role": "user", "content": "x"}]));
    v["tools"] = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]);
    let e = err(v);
    assert!(matches!(e, TranslateError::Unsupported { .. }));
    assert_eq!(e.param(), Some("tools.0.type"));

    let mut v = base(json!([{"role": "user", "content": "x"}]));
    v["mcp_servers"] = json!([{"type": "url", "url": "https://mcp", "name": "m"}]);
    assert_eq!(err(v).param(), Some("mcp_servers"));

    // `type: "custom"` is an ordinary tool.
    let mut v = base(json!([{"role": "user", "content": "x"}]));
    v["tools"] = json!([{"type": "custom", "name": "f", "input_schema": {"type": "object"}}]);
    assert_eq!(hub(v)["tools"][0]["function"]["name"], "f");
}

#[test]
fn parse_head_reads_model_and_stream() {
    assert_eq!(
        parse_head(br#"{"stream":true,"model":"claude-sonnet-4-5","messages":[]}"#).unwrap(),
        MessagesHead { model: "claude-sonnet-4-5".to_owned(), stream: true }
    );
    assert!(!parse_head(br#"{"model":"m","stream":null}"#).unwrap().stream);
    assert_eq!(parse_head(br#"{"model":""}"#).unwrap_err().param(), Some("model"));
    assert_eq!(parse_head(br#"{"model":1}"#).unwrap_err().param(), Some("model"));
    assert_eq!(parse_head(br#"{"model":"m","stream":1}"#).unwrap_err().param(), Some("stream"));
    assert_eq!(parse_head(b"[]").unwrap_err().param(), None);
}

#[test]
fn rewrite_model_preserves_every_other_byte() {
    let body = br#"{"model":"anthropic/claude-sonnet-4-5","max_tokens":100000000000000000001,"stream":true,"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"x","signature":"Eq\u00e9+/=="}]}],"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}]}"#;
    let bytes = Bytes::from_static(body);
    let head = parse_head(body).unwrap();
    let out = rewrite_model(bytes.clone(), &head, "claude-sonnet-4-5-20250929").unwrap();
    let expected =
        String::from_utf8_lossy(body).replace("\"anthropic/claude-sonnet-4-5\"", "\"claude-sonnet-4-5-20250929\"");
    assert_eq!(String::from_utf8_lossy(&out), expected);
    assert!(!out.windows(14).any(|w| w == b"stream_options"));
    // Same name: the very same buffer comes back.
    let same = rewrite_model(bytes.clone(), &head, "anthropic/claude-sonnet-4-5").unwrap();
    assert_eq!(same.as_ptr(), bytes.as_ptr());
}

/// Anthropic body → hub → Anthropic egress encoder: the conversation, tools and parameters survive.
#[test]
fn round_trip_through_the_egress_encoder() {
    let original = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 8000,
        "system": "You are terse.",
        "temperature": 0.5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": [{"name": "get_weather", "description": "Weather",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C"},
                {"type": "text", "text": "Thanks"}
            ]}
        ]
    });
    let d = decode_value(original.clone());
    let opts = EncodeOptions { upstream_model: "claude-sonnet-4-5", stream: false, default_max_tokens: None };
    let encoded = encode_request(&d.chat, &opts).unwrap();
    let back: Value = serde_json::from_slice(&encoded.body).unwrap();
    for key in ["model", "max_tokens", "system", "stop_sequences", "metadata", "tools", "messages"] {
        assert_eq!(back[key], original[key], "{key}");
    }
    assert_eq!(back["thinking"], original["thinking"]);
    assert_eq!(back["tool_choice"], original["tool_choice"]);
    // Extended thinking forbids sampling changes; the egress encoder drops temperature (and says so).
    assert!(encoded.dropped_params.contains(&"temperature"));
}
