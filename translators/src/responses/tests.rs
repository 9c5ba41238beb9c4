use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::stream::tests::{check_stream, ctx, parse_sse, rich_usage};
use super::*;
use crate::openai::{ChatResponse, Choice, FinishReason, FunctionCall, ResponseMessage, ToolCall, Usage};
use crate::stream::{ResponseContext, StreamTranslator};

fn chat_response(message: ResponseMessage, finish: FinishReason, usage: Option<Usage>) -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-1".into(),
        object: "chat.completion".into(),
        created: 1,
        model: "upstream-model".into(),
        choices: vec![Choice { index: 0, message, logprobs: None, finish_reason: Some(finish) }],
        usage,
        system_fingerprint: None,
    }
}

fn message(content: Option<&str>) -> ResponseMessage {
    ResponseMessage {
        role: "assistant".into(),
        content: content.map(Into::into),
        refusal: None,
        tool_calls: None,
        reasoning_content: None,
    }
}

fn encode(resp: &ChatResponse, echo: &Echo) -> Value {
    serde_json::to_value(encode_response(resp, echo, &ctx())).unwrap()
}

#[test]
fn text_response_golden() {
    let decoded = decode_request(
        json!({"model": "claude-x", "instructions": "Be brief.", "input": "Hi", "temperature": 0.5, "metadata": {"a": "b"}, "store": false})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let resp = chat_response(message(Some("Hello!")), FinishReason::Stop, Some(rich_usage()));
    let got = encode(&resp, &decoded.echo);
    let msg_id = got["output"][0]["id"].as_str().unwrap().to_owned();
    assert!(msg_id.starts_with("msg_") && msg_id.len() == 52, "{msg_id}");
    assert_eq!(
        got,
        json!({
            "id": "resp_test",
            "object": "response",
            "created_at": 1_700_000_000,
            "status": "completed",
            "completed_at": 1_700_000_005,
            "error": null,
            "incomplete_details": null,
            "instructions": "Be brief.",
            "max_output_tokens": null,
            "max_tool_calls": null,
            "model": "claude-x",
            "output": [{
                "type": "message", "id": msg_id, "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}]
            }],
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "store": false,
            "temperature": 0.5,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_logprobs": null,
            "top_p": null,
            "truncation": "disabled",
            "usage": {
                "input_tokens": 100, "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 10},
                "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 140
            },
            "metadata": {"a": "b"},
            "background": false
        })
    );
    // `output_text` is an SDK-side convenience (spec: "SDK-only"), never sent.
    assert!(got.get("output_text").is_none());
}

#[test]
fn reasoning_and_tool_calls_response() {
    let mut echo = Echo::new("m");
    echo.custom_tools.insert("apply_patch".into());
    let mut msg = message(None);
    msg.reasoning_content = Some("thinking".into());
    msg.tool_calls = Some(vec![
        ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: FunctionCall { name: "f".into(), arguments: "{\"a\":1}".into() },
        },
        ToolCall {
            id: String::new(),
            kind: "function".into(),
            function: FunctionCall { name: "apply_patch".into(), arguments: "{\"input\":\"diff\"}".into() },
        },
    ]);
    let got = encode(&chat_response(msg, FinishReason::ToolCalls, None), &echo);
    let output = got["output"].as_array().unwrap();
    assert_eq!(output.len(), 3, "reasoning, then one item per call, no empty message");
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(output[0]["content"], json!([{"type": "reasoning_text", "text": "thinking"}]));
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["call_id"], "call_1");
    assert_eq!(output[1]["arguments"], "{\"a\":1}");
    assert_eq!(output[1]["status"], "completed");
    assert_eq!(output[2]["type"], "custom_tool_call");
    assert_eq!(output[2]["input"], "diff");
    assert!(output[2]["call_id"].as_str().unwrap().starts_with("call_"), "a missing id is synthesized");
    // No usage from the backend: zeros, never a missing object (SDKs read it unguarded).
    assert_eq!(got["usage"]["total_tokens"], 0);
    assert_eq!(got["usage"]["input_tokens_details"]["cache_write_tokens"], 0);
}

#[test]
fn incomplete_and_refusal_responses() {
    let got = encode(&chat_response(message(Some("cut")), FinishReason::Length, None), &Echo::new("m"));
    assert_eq!(got["status"], "incomplete");
    assert_eq!(got["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert_eq!(got["completed_at"], Value::Null);
    assert_eq!(got["output"][0]["status"], "incomplete");

    let got = encode(&chat_response(message(Some("")), FinishReason::ContentFilter, None), &Echo::new("m"));
    assert_eq!(got["incomplete_details"], json!({"reason": "content_filter"}));
    assert_eq!(got["output"][0]["content"][0]["text"], "", "an empty answer is one empty message");

    let mut msg = message(None);
    msg.refusal = Some("no".into());
    let got = encode(&chat_response(msg, FinishReason::Stop, None), &Echo::new("m"));
    assert_eq!(got["output"][0]["content"], json!([{"type": "refusal", "refusal": "no"}]));
}

#[test]
fn stream_and_body_agree_on_the_final_response() {
    use super::stream::tests::{finish, reasoning, run, text, tool};
    let events = run(
        Echo::new("m"),
        &[reasoning("why"), text("Sure"), tool(0, Some("call_1"), Some("f"), "{}"), finish(FinishReason::ToolCalls)],
        None,
    );
    let streamed = check_stream(&events);
    let mut msg = message(Some("Sure"));
    msg.reasoning_content = Some("why".into());
    msg.tool_calls = Some(vec![ToolCall {
        id: "call_1".into(),
        kind: "function".into(),
        function: FunctionCall { name: "f".into(), arguments: "{}".into() },
    }]);
    let body = encode(&chat_response(msg, FinishReason::ToolCalls, None), &Echo::new("m"));
    assert_eq!(streamed, body);
}

#[test]
fn response_ids_are_distinct_and_well_formed() {
    let a = response_id(1);
    assert!(a.starts_with("resp_") && a.len() == 53);
    assert_ne!(a, response_id(2));
    assert_ne!(prefixed_id("msg", 1, 0), prefixed_id("msg", 1, 1));
    assert!(a[5..].bytes().all(|b| b.is_ascii_hexdigit()));
}

fn hub_ctx() -> ResponseContext {
    ResponseContext {
        id: "chatcmpl-x".into(),
        created: 1,
        model: "m".into(),
        include_usage: true,
        include_reasoning: true,
        id_seed: 3,
    }
}

/// The whole pipeline for an Ollama backend: NDJSON → hub events → Responses SSE.
#[test]
fn ollama_ndjson_end_to_end() {
    let ndjson = concat!(
        r#"{"model":"qwen3","message":{"role":"assistant","content":"","thinking":"hm"},"done":false}"#,
        "\n",
        r#"{"model":"qwen3","message":{"role":"assistant","content":"Hi"},"done":false}"#,
        "\n",
        r#"{"model":"qwen3","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{"x":1}}}]},"done":false}"#,
        "\n",
        r#"{"model":"qwen3","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":7,"eval_count":3}"#,
        "\n",
    );
    let mut decoder = crate::ollama::StreamDecoder::new(hub_ctx());
    let mut hub = Vec::new();
    decoder.feed(ndjson.as_bytes(), &mut hub);
    let summary = decoder.finish(&mut hub);
    let mut encoder = StreamEncoder::new(Echo::new("ollama/qwen3"), ctx());
    let mut events = Vec::new();
    encoder.push(&hub, &mut events);
    encoder.finish(Some(&summary), &mut events);
    let mut sse = BytesMut::new();
    write_sse(&events, &mut sse);
    let response = check_stream(&parse_sse(&sse));
    assert_eq!(response["status"], "completed");
    assert_eq!(response["model"], "ollama/qwen3");
    let kinds: Vec<&str> = response["output"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["reasoning", "message", "function_call"]);
    assert_eq!(response["output"][2]["arguments"], "{\"x\":1}");
    assert_eq!(response["usage"]["input_tokens"], 7);
    assert_eq!(response["usage"]["output_tokens"], 3);
}

/// The same for Anthropic, whose stream ends with a mid-stream `error` event.
#[test]
fn anthropic_sse_error_end_to_end() {
    let sse = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"usage":{"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":4}}}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        "\n\n",
        "event: error\n",
        r#"data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        "\n\n",
    );
    let mut decoder = crate::anthropic::StreamDecoder::new(hub_ctx());
    let mut hub = Vec::new();
    decoder.feed(sse.as_bytes(), &mut hub);
    let summary = decoder.finish(&mut hub);
    let mut encoder = StreamEncoder::new(Echo::new("claude"), ctx());
    let mut events = Vec::new();
    encoder.push(&hub, &mut events);
    encoder.finish(Some(&summary), &mut events);
    let mut bytes = BytesMut::new();
    write_sse(&events, &mut bytes);
    let response = check_stream(&parse_sse(&bytes));
    assert_eq!(response["status"], "failed");
    assert!(response["error"]["message"].as_str().unwrap().contains("Overloaded"), "{}", response["error"]);
    assert_eq!(response["output"][0]["status"], "incomplete");
    assert_eq!(response["output"][0]["content"][0]["text"], "Hi");
}

#[test]
fn passthrough_usage_of_a_body() {
    let body = json!({"id": "resp_1", "object": "response", "usage": {
        "input_tokens": 50, "input_tokens_details": {"cached_tokens": 20},
        "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 59}});
    let usage = passthrough::extract_usage(body.to_string().as_bytes()).unwrap();
    assert_eq!(usage.prompt_tokens, 50);
    assert_eq!(usage.cached_tokens(), 20);
    assert_eq!(usage.completion_tokens, 9);
    assert_eq!(usage.completion_tokens_details.unwrap().reasoning_tokens, Some(4));
    assert_eq!(usage.total_tokens, 59);
    assert_eq!(passthrough::extract_usage(br#"{"usage":null}"#), None);
    assert_eq!(passthrough::extract_usage(b"garbage"), None);
    // Round trip with our own encoder's usage.
    assert_eq!(usage_from_response_usage(&response_usage(&rich_usage())), rich_usage());
}

#[test]
fn rename_model_keeps_every_other_byte() {
    let body = Bytes::from_static(br#"{"model":"gpt-x","input":"h\u00e9","big":12345678901234567890,"z":[1.50]}"#);
    let out = passthrough::rename_model(body.clone(), "gpt-x", "gpt-5").unwrap();
    assert_eq!(&out[..], br#"{"model":"gpt-5","input":"h\u00e9","big":12345678901234567890,"z":[1.50]}"#);
    let same = passthrough::rename_model(body.clone(), "gpt-x", "gpt-x").unwrap();
    assert_eq!(same.as_ptr(), body.as_ptr(), "no copy when nothing changes");
}

fn upstream_stream() -> String {
    let events = [
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "model": "gpt-5-2025", "usage": null}}),
        json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Héllo", "logprobs": []}),
        json!({"type": "response.function_call_arguments.delta", "sequence_number": 2, "item_id": "fc_1", "output_index": 1, "delta": "{}"}),
        json!({"type": "response.completed", "sequence_number": 3, "response": {"id": "resp_1", "model": "gpt-5-2025", "status": "completed",
               "usage": {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": 5,
                         "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 16}}}),
    ];
    events.iter().map(|e| format!("event: {}\r\ndata: {}\r\n\r\n", e["type"].as_str().unwrap(), e)).collect()
}

#[test]
fn usage_scanner_reads_the_terminal_event() {
    let mut scanner = passthrough::UsageScanner::new();
    scanner.feed(upstream_stream().as_bytes());
    let summary = scanner.finish();
    assert_eq!(summary.outcome, crate::stream::StreamOutcome::Completed);
    assert!(summary.usage_is_final);
    assert_eq!(summary.usage.prompt_tokens, 11);
    assert_eq!(summary.usage.cached_tokens(), 3);
    assert_eq!(summary.usage.total_tokens, 16);
    assert_eq!(summary.streamed_bytes, "Héllo".len() as u64 + 2);
    assert_eq!(summary.upstream_model.as_deref(), Some("gpt-5-2025"));
    assert_eq!(summary.finish_reason, Some(FinishReason::Stop));
}

#[test]
fn usage_scanner_incomplete_failed_and_truncated() {
    let incomplete = r#"data: {"type":"response.incomplete","response":{"incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}}}"#;
    let mut s = passthrough::UsageScanner::new();
    s.feed(incomplete.as_bytes());
    let summary = s.finish();
    assert_eq!(summary.finish_reason, Some(FinishReason::Length));
    assert_eq!(summary.usage.total_tokens, 3);

    let failed = "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"server_error\",\"message\":\"boom\"},\"usage\":null}}\n\n";
    let mut s = passthrough::UsageScanner::new();
    s.feed(failed.as_bytes());
    match s.finish().outcome {
        crate::stream::StreamOutcome::UpstreamError(e) => assert_eq!(e.message, "boom"),
        other => panic!("{other:?}"),
    }

    let mut s = passthrough::UsageScanner::new();
    s.feed(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\n");
    assert_eq!(s.summary().outcome, crate::stream::StreamOutcome::Open);
    assert_eq!(s.finish().outcome, crate::stream::StreamOutcome::Truncated);
}

proptest! {
    #[test]
    fn usage_scanner_is_split_invariant(cuts in proptest::collection::vec(0usize..2000, 0..12)) {
        let stream = upstream_stream();
        let bytes = stream.as_bytes();
        let mut whole = passthrough::UsageScanner::new();
        whole.feed(bytes);
        let expected = whole.finish();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut split = passthrough::UsageScanner::new();
        let mut start = 0;
        for cut in cuts {
            split.feed(&bytes[start..cut]);
            start = cut;
        }
        split.feed(&bytes[start..]);
        prop_assert_eq!(split.finish(), expected);
    }

    #[test]
    fn usage_scanner_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut s = passthrough::UsageScanner::new();
        s.feed(&bytes);
        let _ = s.finish();
    }

    #[test]
    fn decode_request_never_panics(body in "\\PC{0,200}") {
        let _ = decode_request(body.as_bytes());
        let _ = parse_head(body.as_bytes());
    }
}
