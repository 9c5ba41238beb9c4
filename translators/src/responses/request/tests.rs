use serde_json::json;

use super::*;

fn decode(body: Value) -> DecodedRequest {
    decode_request(body.to_string().as_bytes()).unwrap()
}

fn chat_json(body: Value) -> Value {
    serde_json::to_value(&decode(body).chat).unwrap()
}

fn error(body: Value) -> TranslateError {
    decode_request(body.to_string().as_bytes()).unwrap_err()
}

#[test]
fn string_input_with_instructions() {
    let got = chat_json(json!({"model": "claude-x", "instructions": "Be brief.", "input": "Hi"}));
    assert_eq!(
        got,
        json!({
            "model": "claude-x",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "Hi"}
            ]
        })
    );
}

#[test]
fn items_conversation_with_tools_maps_to_hub_turns() {
    let body = json!({
        "model": "m",
        "input": [
            {"role": "system", "content": "sys"},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hmm"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Calling", "annotations": []}]},
            {"type": "function_call", "call_id": "call_a", "name": "f", "arguments": "{\"x\":1}"},
            {"type": "function_call", "call_id": "call_b", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_a", "output": "A"},
            {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "B"}]},
            {"type": "custom_tool_call", "call_id": "call_c", "name": "patch", "input": "*** Begin"},
            {"type": "custom_tool_call_output", "call_id": "call_c", "output": "ok"},
            {"role": "developer", "content": "dev note"}
        ]
    });
    let decoded = decode(body);
    assert_eq!(
        serde_json::to_value(&decoded.chat.messages).unwrap(),
        json!([
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
            ]},
            {"role": "assistant", "content": "Calling", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "A"},
            {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "B"}]},
            {"role": "assistant", "tool_calls": [
                {"id": "call_c", "type": "function", "function": {"name": "patch", "arguments": "{\"input\":\"*** Begin\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_c", "content": "ok"},
            {"role": "developer", "content": "dev note"}
        ])
    );
    assert_eq!(
        decoded.message_origins,
        ["input[0]", "input[1]", "input[3]", "input[6]", "input[7]", "input[8]", "input[9]", "input[10]"]
    );
}

#[test]
fn assistant_message_after_tool_calls_starts_a_new_turn() {
    let got = chat_json(json!({"model": "m", "input": [
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"role": "assistant", "content": "then text"},
        {"type": "function_call_output", "call_id": "c1", "output": "r"}
    ]}));
    assert_eq!(got["messages"][0]["tool_calls"][0]["id"], "c1");
    assert!(got["messages"][0].get("content").is_none());
    assert_eq!(got["messages"][1], json!({"role": "assistant", "content": "then text"}));
    assert_eq!(got["messages"][2]["role"], "tool");
}

#[test]
fn flat_function_and_custom_tools() {
    let decoded = decode(json!({
        "model": "m", "input": "x",
        "tools": [
            {"type": "function", "name": "get_weather", "description": "Weather", "parameters": {"type": "object"}, "strict": true},
            {"type": "function", "name": "noargs"},
            {"type": "custom", "name": "apply_patch", "description": "Patch files",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
        ],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": false
    }));
    let chat = serde_json::to_value(&decoded.chat).unwrap();
    assert_eq!(
        chat["tools"][0],
        json!({"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}, "strict": true}})
    );
    assert_eq!(chat["tools"][1], json!({"type": "function", "function": {"name": "noargs"}}));
    let custom = &chat["tools"][2]["function"];
    assert_eq!(custom["name"], "apply_patch");
    assert_eq!(custom["parameters"]["required"], json!(["input"]));
    let description = custom["description"].as_str().unwrap();
    assert!(description.starts_with("Patch files\n\n"), "{description}");
    assert!(description.contains("lark grammar:\nstart: /.+/"), "{description}");
    assert_eq!(chat["tool_choice"], json!({"type": "function", "function": {"name": "get_weather"}}));
    assert_eq!(chat["parallel_tool_calls"], false);
    // Echo: function tools gain the spec-required `strict`/`parameters`; custom tools are kept as sent.
    assert_eq!(
        decoded.echo.tools[1],
        json!({"type": "function", "name": "noargs", "parameters": null, "strict": null})
    );
    assert_eq!(decoded.echo.tools[2]["format"]["syntax"], "lark");
    assert!(decoded.echo.custom_tools.contains("apply_patch"));
    assert_eq!(decoded.echo.tool_choice, json!({"type": "function", "name": "get_weather"}));
    assert!(!decoded.echo.parallel_tool_calls);
}

#[test]
fn tool_choice_forms() {
    let choice = |c: Value| {
        let body = json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": c});
        chat_json(body)["tool_choice"].clone()
    };
    assert_eq!(choice(json!("none")), json!("none"));
    assert_eq!(choice(json!("auto")), json!("auto"));
    assert_eq!(choice(json!("required")), json!("required"));
    assert_eq!(choice(json!({"type": "custom", "name": "f"})), json!({"type": "function", "function": {"name": "f"}}));
    assert_eq!(
        choice(json!({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "f"}]})),
        json!({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}})
    );
    let e = error(json!({"model": "m", "input": "x", "tool_choice": {"type": "web_search_preview"}}));
    assert_eq!(e.param(), Some("tool_choice"));
    let e = error(json!({"model": "m", "input": "x", "tool_choice": "sometimes"}));
    assert!(matches!(e, TranslateError::InvalidRequest { .. }));
}

#[test]
fn sampling_limits_format_reasoning_user_and_stream() {
    let decoded = decode(json!({
        "model": "m", "input": "x",
        "max_output_tokens": 256, "temperature": 0.2, "top_p": 0.9,
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"},
        "reasoning": {"effort": "max", "summary": "auto"},
        "stream": true, "user": "u1", "metadata": {"k": "v"}, "store": true,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "pk", "truncation": "disabled",
        "some_future_field": {"x": 1}
    }));
    let chat = serde_json::to_value(&decoded.chat).unwrap();
    assert_eq!(
        chat,
        json!({
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_completion_tokens": 256,
            "temperature": 0.2,
            "top_p": 0.9,
            "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}},
            "user": "u1",
            "reasoning_effort": "xhigh",
            "verbosity": "low"
        })
    );
    let echo = &decoded.echo;
    assert_eq!(echo.max_output_tokens, Some(256));
    assert_eq!(echo.reasoning, json!({"effort": "max", "summary": "auto"}));
    assert!(echo.reasoning_summary);
    assert_eq!(echo.metadata.get("k"), Some(&json!("v")));
    assert_eq!(echo.prompt_cache_key.as_deref(), Some("pk"));
    assert_eq!(echo.text["format"]["name"], "out");
}

#[test]
fn text_format_text_and_json_object() {
    let got = chat_json(json!({"model": "m", "input": "x", "text": {"format": {"type": "text"}}}));
    assert!(got.get("response_format").is_none());
    let got = chat_json(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}));
    assert_eq!(got["response_format"], json!({"type": "json_object"}));
    let e = error(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}));
    assert_eq!(e.param(), Some("text.format.name"));
}

#[test]
fn store_false_background_false_and_nulls_are_accepted() {
    for body in [
        json!({"model": "m", "input": "x", "store": false, "background": false}),
        json!({"model": "m", "input": "x", "previous_response_id": null, "conversation": null, "prompt": null}),
    ] {
        let decoded = decode(body);
        assert_eq!(decoded.chat.messages.len(), 1);
    }
    assert!(!decode(json!({"model": "m", "input": "x", "store": false})).echo.store);
    assert!(decode(json!({"model": "m", "input": "x"})).echo.store);
}

#[test]
fn stateful_features_and_templates_are_refused_with_param() {
    for (field, value) in [
        ("previous_response_id", json!("resp_1")),
        ("conversation", json!("conv_1")),
        ("background", json!(true)),
        ("prompt", json!({"id": "pmpt_1"})),
        ("context_management", json!([{"type": "compaction"}])),
    ] {
        let mut body = json!({"model": "m", "input": "x"});
        body[field] = value;
        let e = error(body);
        assert!(matches!(e, TranslateError::Unsupported { .. }), "{field}: {e:?}");
        assert_eq!(e.param(), Some(field));
    }
}

#[test]
fn hosted_tools_are_refused_naming_the_tool() {
    for kind in [
        "web_search",
        "web_search_preview",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
    ] {
        let e =
            error(json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": kind}]}));
        assert!(matches!(e, TranslateError::Unsupported { .. }), "{kind}");
        assert_eq!(e.param(), Some("tools[1].type"), "{kind}");
        assert!(e.to_string().contains(kind));
    }
}

#[test]
fn unsupported_items_and_parts_name_their_path() {
    let cases = [
        (json!([{"type": "item_reference", "id": "msg_1"}]), "input[0]"),
        (json!([{"type": "web_search_call", "id": "ws_1"}]), "input[0].type"),
        (
            json!([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1", "detail": "auto"}]}]),
            "input[0].content[0].file_id",
        ),
        (json!([{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]), "input[0].content[0]"),
        (json!([{"role": "user", "content": [{"type": "input_audio"}]}]), "input[0].content[0].type"),
    ];
    for (input, param) in cases {
        let e = error(json!({"model": "m", "input": input}));
        assert!(matches!(e, TranslateError::Unsupported { .. }), "{param}: {e:?}");
        assert_eq!(e.param(), Some(param));
    }
}

#[test]
fn malformed_fields_are_invalid_with_param() {
    let cases = [
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": 3}), "input"),
        (json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}), "input[0].call_id"),
        (json!({"model": "m", "input": [{"role": "wizard", "content": "x"}]}), "input[0].role"),
        (json!({"model": "m", "input": "x", "temperature": "hot"}), "temperature"),
        (json!({"model": "m", "input": "x", "max_output_tokens": -1}), "max_output_tokens"),
        (json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}), "tools[0].name"),
        (json!({"model": "m", "input": "x", "instructions": ["a"]}), "instructions"),
        (json!({"model": "", "input": "x"}), "model"),
    ];
    for (body, param) in cases {
        let e = error(body);
        assert!(matches!(e, TranslateError::InvalidRequest { .. }), "{param}: {e:?}");
        assert_eq!(e.param(), Some(param));
    }
}

#[test]
fn compaction_item_becomes_a_user_summary() {
    let got = chat_json(json!({"model": "m", "input": [
        {"type": "compaction", "encrypted_content": "Summary so far"},
        {"role": "user", "content": "go on"}
    ]}));
    assert_eq!(got["messages"][0], json!({"role": "user", "content": "Summary so far"}));
}

#[test]
fn parse_head_reads_model_stream_and_state() {
    let head = parse_head(br#"{"model":"gpt-5","stream":true,"input":"x"}"#).unwrap();
    assert_eq!(head, RequestHead { model: "gpt-5".into(), stream: true, stateful_param: None });
    let head = parse_head(br#"{"model":"m","stream":null,"previous_response_id":"resp_1"}"#).unwrap();
    assert!(!head.stream);
    assert_eq!(head.stateful_param, Some("previous_response_id"));
    assert_eq!(parse_head(br#"{"model":"m","background":true}"#).unwrap().stateful_param, Some("background"));
    assert_eq!(parse_head(br#"{"model":"m","background":false}"#).unwrap().stateful_param, None);
    assert_eq!(parse_head(br#"{"input":"x"}"#).unwrap_err().param(), Some("model"));
    assert_eq!(parse_head(br#"{"model":"m","stream":"yes"}"#).unwrap_err().param(), Some("stream"));
    assert!(parse_head(b"[1]").is_err());
    assert!(parse_head(b"{").is_err());
}

#[test]
fn hub_params_are_mapped_back_to_responses_paths() {
    let decoded = decode(json!({"model": "m", "instructions": "i", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "a"}]}
    ]}));
    assert_eq!(decoded.responses_param("messages[1].content[0].image_url.url"), "input[0].content[0].image_url.url");
    assert_eq!(decoded.responses_param("messages[0]"), "instructions");
    assert_eq!(decoded.responses_param("messages[9]"), "input");
    assert_eq!(decoded.responses_param("reasoning_effort"), "reasoning.effort");
    assert_eq!(decoded.responses_param("max_completion_tokens"), "max_output_tokens");
    assert_eq!(decoded.responses_param("response_format.json_schema"), "text.format");
    assert_eq!(decoded.responses_param("tools[2].function.parameters"), "tools[2].parameters");
    assert_eq!(decoded.responses_param("temperature"), "temperature");
}

#[test]
fn web_search_can_be_dropped_by_policy() {
    let body = json!({"model": "m", "tools": [{"type": "web_search"}, {"type": "function", "name": "f"}],
                      "input": [{"type": "web_search_call", "id": "ws_1"}, {"role": "user", "content": "hi"}]});
    let e = decode_request(body.to_string().as_bytes()).unwrap_err();
    assert_eq!(e.param(), Some("tools[0].type"), "refused by default");
    let decoded = decode_request_with(body.to_string().as_bytes(), &DecodeOptions { drop_web_search: true }).unwrap();
    assert_eq!(decoded.dropped, ["tools[0]", "input[0]"]);
    assert_eq!(decoded.chat.tools.as_ref().unwrap().len(), 1);
    assert_eq!(decoded.echo.tools, [json!({"type": "function", "name": "f", "parameters": null, "strict": null})]);
    assert_eq!(decoded.tool_origins, [1]);
    assert_eq!(decoded.responses_param("tools[0].function.parameters"), "tools[1].parameters");
    // Other hosted tools are still refused.
    let body = json!({"model": "m", "tools": [{"type": "file_search"}], "input": "x"});
    let e = decode_request_with(body.to_string().as_bytes(), &DecodeOptions { drop_web_search: true }).unwrap_err();
    assert_eq!(e.param(), Some("tools[0].type"));
}

/// The shape Codex CLI sends on a second turn (field set per codex-rs `ResponsesApiRequest`): developer and
/// user messages, a reasoning item with encrypted content, a shell call and an apply_patch custom call with
/// their outputs, `include`, `prompt_cache_key`, `store: false`.
#[test]
fn codex_style_second_turn() {
    let body = json!({
        "model": "anthropic/claude-sonnet-4-5",
        "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Look first"}], "content": null, "encrypted_content": "gAAAA"},
            {"type": "function_call", "name": "shell", "arguments": "{\"command\":[\"ls\"]}", "call_id": "call_1"},
            {"type": "function_call_output", "call_id": "call_1", "output": "src\n"},
            {"type": "custom_tool_call", "status": "completed", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": "Done"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Fixed."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]}
        ],
        "tools": [
            {"type": "function", "name": "shell", "description": "Runs a command", "strict": false,
             "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"], "additionalProperties": false}},
            {"type": "custom", "name": "apply_patch", "description": "Edit files",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}}
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199a1b2-session",
        "text": {"verbosity": "medium"}
    });
    let decoded = decode(body);
    let roles: Vec<String> = serde_json::to_value(&decoded.chat.messages)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        roles,
        ["developer", "developer", "user", "assistant", "tool", "assistant", "tool", "assistant", "user"]
    );
    let chat = serde_json::to_value(&decoded.chat).unwrap();
    assert_eq!(
        chat["messages"][5]["tool_calls"][0]["function"]["arguments"],
        "{\"input\":\"*** Begin Patch\\n*** End Patch\"}"
    );
    assert_eq!(chat["reasoning_effort"], "medium");
    assert_eq!(chat["parallel_tool_calls"], false);
    assert_eq!(chat["stream_options"]["include_usage"], true);
    assert!(chat.get("response_format").is_none());
    assert!(decoded.echo.reasoning_summary);
    assert!(!decoded.echo.store);
    assert!(decoded.echo.custom_tools.contains("apply_patch"));
}

#[test]
fn namespace_tools_are_flattened_and_calls_follow() {
    let decoded = decode(json!({
        "model": "m",
        "tools": [{"type": "namespace", "name": "collaboration", "description": "Agents", "tools": [
            {"type": "function", "name": "spawn_agent", "description": "Spawns", "parameters": {"type": "object"}},
            {"type": "custom", "name": "exec"}
        ]}],
        "input": [
            {"type": "function_call", "call_id": "c1", "namespace": "collaboration", "name": "spawn_agent", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "namespace": "collaboration", "output": "ok"}
        ]
    }));
    let chat = serde_json::to_value(&decoded.chat).unwrap();
    assert_eq!(chat["tools"][0]["function"]["name"], "collaboration__spawn_agent");
    assert_eq!(chat["tools"][0]["function"]["description"], "Spawns");
    assert_eq!(chat["tools"][1]["function"]["name"], "collaboration__exec");
    assert_eq!(chat["messages"][0]["tool_calls"][0]["function"]["name"], "collaboration__spawn_agent");
    assert!(decoded.echo.custom_tools.contains("collaboration__exec"));
    assert_eq!(decoded.echo.client_tool_name("collaboration__spawn_agent"), (Some("collaboration"), "spawn_agent"));
    assert_eq!(decoded.echo.client_tool_name("other"), (None, "other"));
    assert_eq!(decoded.echo.tools[0]["type"], "namespace", "echoed as sent");
    assert_eq!(decoded.tool_origins, [0, 0]);
    let e = error(
        json!({"model": "m", "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "mcp"}]}]}),
    );
    assert_eq!(e.param(), Some("tools[0].tools[0].name"));
}
