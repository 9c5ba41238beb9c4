//! Stream encoder tests: protocol invariants (the checker below is what the SDKs enforce), the recorded
//! Anthropic streams of the official SDK through the egress decoder and back, and split/sequence
//! invariance properties.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::framing::sse::SseFramer;
use crate::openai::{self, Delta, FunctionCallDelta, PromptTokensDetails};
use crate::stream::{ResponseContext, StreamTranslator};

// ---------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------

fn ctx(include_thinking: bool) -> EncodeContext {
    EncodeContext {
        message_id: "msg_test".to_owned(),
        model: "claude-sonnet-4-5".to_owned(),
        include_thinking,
        input_tokens_hint: 0,
        id_seed: 3,
    }
}

/// Parses SSE output into `(event name, data)`, checking that every frame has both and that they agree.
fn frames(bytes: &[u8]) -> Vec<(String, Value)> {
    let mut framer = SseFramer::default();
    let mut events = Vec::new();
    framer.feed(bytes, &mut events).unwrap();
    framer.finish(&mut events);
    events
        .into_iter()
        .map(|e| {
            let data: Value = serde_json::from_slice(&e.data).unwrap();
            assert_eq!(data["type"].as_str(), Some(e.event.as_str()), "event line and type differ: {data}");
            (e.event, data)
        })
        .collect()
}

/// What an SDK would accumulate; `partial_json` is kept as the concatenated text.
#[derive(Debug, Clone, PartialEq)]
struct Accumulated {
    message_start: Option<Value>,
    blocks: Vec<Value>,
    stop_reason: Option<String>,
    usage: Option<Value>,
    stopped: bool,
    error: Option<Value>,
}

/// Accumulates frames and asserts the protocol invariants of research note §1.2: `message_start`
/// first; contiguous indexes; one open block at a time; delta types matching their block; nothing open
/// at `message_delta`/`error`; `message_stop` last; nothing after `error`.
fn accumulate(frames: &[(String, Value)]) -> Accumulated {
    let mut acc = Accumulated {
        message_start: None,
        blocks: Vec::new(),
        stop_reason: None,
        usage: None,
        stopped: false,
        error: None,
    };
    let mut open: Option<usize> = None;
    for (i, (name, data)) in frames.iter().enumerate() {
        assert!(!acc.stopped && acc.error.is_none(), "frame after the end: {name}");
        match name.as_str() {
            "message_start" => {
                assert!(acc.message_start.is_none(), "second message_start");
                let m = &data["message"];
                assert!(m["id"].as_str().unwrap().starts_with("msg_"));
                assert_eq!(m["type"], "message");
                assert_eq!(m["role"], "assistant");
                assert_eq!(m["content"], json!([]));
                assert!(m["stop_reason"].is_null());
                for key in ["input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"] {
                    assert!(m["usage"][key].is_u64(), "message_start usage lacks {key}");
                }
                acc.message_start = Some(m.clone());
            }
            "content_block_start" => {
                assert!(acc.message_start.is_some(), "block before message_start");
                assert!(open.is_none(), "block {i} starts while another is open");
                let index = data["index"].as_u64().unwrap() as usize;
                assert_eq!(index, acc.blocks.len(), "indexes must be contiguous");
                let mut block = data["content_block"].clone();
                match block["type"].as_str().unwrap() {
                    "text" => assert_eq!(block["text"], ""),
                    "thinking" => assert_eq!(block["thinking"], ""),
                    "tool_use" => {
                        assert_eq!(block["input"], json!({}));
                        let id = block["id"].as_str().unwrap();
                        assert!(
                            !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                        );
                        assert!(!block["name"].as_str().unwrap().is_empty());
                        block["partial_json"] = json!("");
                    }
                    other => panic!("unexpected block type {other}"),
                }
                acc.blocks.push(block);
                open = Some(index);
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(index), "delta for a block that is not open");
                let block = &mut acc.blocks[index];
                let delta = &data["delta"];
                let append = |block: &mut Value, key: &str, text: &Value| {
                    let joined = format!("{}{}", block[key].as_str().unwrap_or(""), text.as_str().unwrap());
                    block[key] = json!(joined);
                };
                match (block["type"].as_str().unwrap(), delta["type"].as_str().unwrap()) {
                    ("text", "text_delta") => append(block, "text", &delta["text"]),
                    ("thinking", "thinking_delta") => append(block, "thinking", &delta["thinking"]),
                    ("thinking", "signature_delta") => append(block, "signature", &delta["signature"]),
                    ("tool_use", "input_json_delta") => append(block, "partial_json", &delta["partial_json"]),
                    (b, d) => panic!("delta {d} in a {b} block"),
                }
            }
            "content_block_stop" => {
                let index = data["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(index), "stop for a block that is not open");
                open = None;
            }
            "message_delta" => {
                assert!(open.is_none(), "message_delta with an open block");
                assert!(acc.stop_reason.is_none(), "second message_delta");
                acc.stop_reason = Some(data["delta"]["stop_reason"].as_str().unwrap().to_owned());
                assert!(data["delta"].get("stop_sequence").is_some());
                for key in ["input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"] {
                    assert!(data["usage"][key].is_u64(), "message_delta usage lacks {key}");
                }
                acc.usage = Some(data["usage"].clone());
            }
            "message_stop" => {
                assert!(acc.stop_reason.is_some(), "message_stop without message_delta");
                acc.stopped = true;
            }
            "error" => {
                assert!(open.is_none(), "error with an open block");
                assert!(data["error"]["type"].is_string() && data["error"]["message"].is_string());
                acc.error = Some(data["error"].clone());
            }
            "ping" => {}
            other => panic!("unexpected event {other}"),
        }
    }
    acc
}

fn run(events: &[StreamEvent], summary: &StreamSummary, ctx: EncodeContext) -> Vec<u8> {
    let mut enc = StreamEncoder::new(ctx);
    let mut out = BytesMut::new();
    enc.push_all(events, &mut out);
    enc.finish(summary, &mut out);
    // finish is idempotent.
    let len = out.len();
    enc.finish(summary, &mut out);
    assert_eq!(out.len(), len);
    out.to_vec()
}

fn completed(usage: Usage) -> StreamSummary {
    StreamSummary { outcome: StreamOutcome::Completed, usage, usage_is_final: true, ..StreamSummary::open() }
}

fn usage_of(prompt: u64, completion: u64, cached: u64, written: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(cached),
            cache_write_tokens: Some(written),
            audio_tokens: None,
        }),
        completion_tokens_details: None,
    }
}

fn chunk_with(delta: Delta, finish: Option<FinishReason>) -> StreamEvent {
    let mut c = openai::chunk("chatcmpl-abc", 1, "m", false);
    c.choices[0].delta = delta;
    c.choices[0].finish_reason = finish;
    StreamEvent::Chunk(c)
}

fn text(t: &str) -> StreamEvent {
    chunk_with(Delta { content: Some(t.to_owned()), ..Delta::default() }, None)
}

fn reasoning(t: &str) -> StreamEvent {
    chunk_with(Delta { reasoning_content: Some(t.to_owned()), ..Delta::default() }, None)
}

fn tool(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> StreamEvent {
    chunk_with(
        Delta {
            tool_calls: Some(vec![ToolCallDelta {
                index,
                id: id.map(str::to_owned),
                kind: id.map(|_| "function".to_owned()),
                function: Some(FunctionCallDelta { name: name.map(str::to_owned), arguments: Some(args.to_owned()) }),
            }]),
            ..Delta::default()
        },
        None,
    )
}

fn finish_chunk(reason: FinishReason) -> StreamEvent {
    chunk_with(Delta::default(), Some(reason))
}

fn role_chunk() -> StreamEvent {
    chunk_with(Delta { role: Some("assistant".to_owned()), content: Some(String::new()), ..Delta::default() }, None)
}

fn blocks_summary(acc: &Accumulated) -> Vec<Value> {
    acc.blocks
        .iter()
        .map(|b| match b["type"].as_str().unwrap() {
            "text" => json!({"text": b["text"]}),
            "thinking" => json!({"thinking": b["thinking"]}),
            "tool_use" => json!({"tool": b["name"], "args": b["partial_json"]}),
            _ => unreachable!(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// Golden cases
// ---------------------------------------------------------------------------------------------------

#[test]
fn text_stream_golden() {
    let events = [role_chunk(), text("Hello"), text(" there"), finish_chunk(FinishReason::Stop)];
    let out = run(&events, &completed(usage_of(11, 6, 0, 0)), ctx(false));
    let got: Vec<Value> = frames(&out).into_iter().map(|(_, d)| d).collect();
    let expected = vec![
        json!({"type":"message_start","message":{"id":"msg_test","type":"message","role":"assistant",
            "model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,
            "usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}}),
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}),
        json!({"type":"content_block_stop","index":0}),
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
            "usage":{"input_tokens":11,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":6}}),
        json!({"type":"message_stop"}),
    ];
    assert_eq!(got, expected);
    // Byte-level framing: `event:` line, `data:` line, blank line.
    assert!(out.starts_with(b"event: message_start\ndata: {"));
    assert!(out.ends_with(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
}

#[test]
fn text_then_parallel_tools() {
    let events = [
        role_chunk(),
        text("Let me check."),
        tool(0, Some("call_A"), Some("get_weather"), ""),
        tool(0, None, None, "{\"city\":"),
        tool(0, None, None, "\"Paris\"}"),
        tool(1, Some("call_B"), Some("get_weather"), "{\"city\":\"Tokyo\"}"),
        finish_chunk(FinishReason::ToolCalls),
    ];
    let acc = accumulate(&frames(&run(&events, &completed(usage_of(400, 89, 0, 0)), ctx(false))));
    assert_eq!(
        blocks_summary(&acc),
        vec![
            json!({"text": "Let me check."}),
            json!({"tool": "get_weather", "args": "{\"city\":\"Paris\"}"}),
            json!({"tool": "get_weather", "args": "{\"city\":\"Tokyo\"}"}),
        ]
    );
    assert_eq!(acc.blocks[1]["id"], "call_A");
    assert_eq!(acc.blocks[2]["id"], "call_B");
    assert_eq!(acc.stop_reason.as_deref(), Some("tool_use"));
}

#[test]
fn tool_args_stream_live_while_sequential() {
    // The first argument fragment is written before the call is complete (fine-grained streaming).
    let mut enc = StreamEncoder::new(ctx(false));
    let mut out = BytesMut::new();
    enc.push(&tool(0, Some("call_A"), Some("f"), "{\"a\":"), &mut out);
    let so_far = frames(&out);
    assert_eq!(so_far.last().unwrap().1["delta"]["partial_json"], "{\"a\":");
}

#[test]
fn interleaved_tool_calls_are_not_split() {
    // Both calls start before either finishes; fragments alternate.
    let events = [
        tool(0, Some("call_A"), Some("a"), "{\"x\":"),
        tool(1, Some("call_B"), Some("b"), "{\"y\":"),
        tool(0, None, None, "1}"),
        tool(1, None, None, "2}"),
        text("done"),
        finish_chunk(FinishReason::ToolCalls),
    ];
    let acc = accumulate(&frames(&run(&events, &completed(Usage::default()), ctx(false))));
    assert_eq!(
        blocks_summary(&acc),
        vec![
            json!({"tool": "a", "args": "{\"x\":1}"}),
            json!({"tool": "b", "args": "{\"y\":2}"}),
            json!({"text": "done"})
        ]
    );
}

#[test]
fn reused_index_with_new_ids_makes_separate_calls() {
    // Some upstreams give every call index 0 (Bifrost#1961, Portkey#1284).
    let events = [
        tool(0, Some("call_A"), Some("a"), "{}"),
        tool(0, Some("call_B"), Some("b"), "{\"k\":1}"),
        finish_chunk(FinishReason::ToolCalls),
    ];
    let acc = accumulate(&frames(&run(&events, &completed(Usage::default()), ctx(false))));
    assert_eq!(
        blocks_summary(&acc),
        vec![json!({"tool": "a", "args": "{}"}), json!({"tool": "b", "args": "{\"k\":1}"})]
    );
}

#[test]
fn cumulative_snapshots_are_normalised() {
    let events = [
        tool(0, Some("call_A"), Some("a"), "{\"x\":1}"),
        tool(0, None, None, "{\"x\":1}"),
        tool(0, None, None, "{\"x\":1}  "),
        finish_chunk(FinishReason::ToolCalls),
    ];
    let acc = accumulate(&frames(&run(&events, &completed(Usage::default()), ctx(false))));
    assert_eq!(blocks_summary(&acc), vec![json!({"tool": "a", "args": "{\"x\":1}"})]);
}

#[test]
fn empty_arguments_become_empty_object() {
    let events = [tool(0, Some("call_A"), Some("list"), ""), finish_chunk(FinishReason::ToolCalls)];
    let acc = accumulate(&frames(&run(&events, &completed(Usage::default()), ctx(false))));
    assert_eq!(blocks_summary(&acc), vec![json!({"tool": "list", "args": "{}"})]);
}

#[test]
fn invalid_tool_ids_are_sanitized_and_missing_ones_synthesized() {
    let events = [
        tool(0, Some("functions.Bash:0"), Some("Bash"), "{}"),
        tool(1, None, Some("Read"), "{}"),
        finish_chunk(FinishReason::ToolCalls),
    ];
    let acc = accumulate(&frames(&run(&events, &completed(Usage::default()), ctx(false))));
    assert_eq!(acc.blocks[0]["id"], crate::anthropic::sanitize_tool_id("functions.Bash:0"));
    assert!(acc.blocks[1]["id"].as_str().unwrap().starts_with("toolu_"));
}

#[test]
fn nameless_tool_call_fails_closed() {
    let events = [tool(0, Some("call_A"), None, "{}"), finish_chunk(FinishReason::ToolCalls)];
    let acc = accumulate(&frames(&run(&events, &completed(Usage::default()), ctx(false))));
    assert_eq!(acc.error.unwrap()["type"], "api_error");
    assert!(!acc.stopped);
}

#[test]
fn thinking_blocks_only_when_asked_and_signed_with_the_tag() {
    let events = [reasoning("Let me think"), reasoning("..."), text("Answer"), finish_chunk(FinishReason::Stop)];
    let acc = accumulate(&frames(&run(&events, &completed(Usage::default()), ctx(true))));
    assert_eq!(blocks_summary(&acc), vec![json!({"thinking": "Let me think..."}), json!({"text": "Answer"})]);
    assert_eq!(acc.blocks[0]["signature"], GATEWAY_THINKING_SIGNATURE);

    let acc = accumulate(&frames(&run(&events, &completed(Usage::default()), ctx(false))));
    assert_eq!(blocks_summary(&acc), vec![json!({"text": "Answer"})]);
}

#[test]
fn every_stop_reason() {
    let cases = [
        (Some(FinishReason::Stop), false, "end_turn"),
        (Some(FinishReason::Stop), true, "tool_use"),
        (Some(FinishReason::Length), false, "max_tokens"),
        (Some(FinishReason::Length), true, "max_tokens"),
        (Some(FinishReason::ToolCalls), true, "tool_use"),
        (Some(FinishReason::ToolCalls), false, "end_turn"),
        (Some(FinishReason::FunctionCall), true, "tool_use"),
        (Some(FinishReason::ContentFilter), false, "refusal"),
        (None, false, "end_turn"),
        (None, true, "tool_use"),
    ];
    for (finish, with_tool, expected) in cases {
        let mut events = vec![text("x")];
        if with_tool {
            events.push(tool(0, Some("call_1"), Some("f"), "{}"));
        }
        if let Some(reason) = finish {
            events.push(finish_chunk(reason));
        }
        let acc = accumulate(&frames(&run(&events, &completed(Usage::default()), ctx(false))));
        assert_eq!(acc.stop_reason.as_deref(), Some(expected), "{finish:?} tool={with_tool}");
    }
}

#[test]
fn usage_with_cache_tokens_excludes_them_from_input() {
    let events = [text("hi"), finish_chunk(FinishReason::Stop)];
    let acc = accumulate(&frames(&run(&events, &completed(usage_of(3000, 50, 2048, 500)), ctx(false))));
    assert_eq!(
        acc.usage.unwrap(),
        json!({"input_tokens": 452, "cache_creation_input_tokens": 500, "cache_read_input_tokens": 2048, "output_tokens": 50})
    );
}

#[test]
fn usage_chunk_is_used_when_summary_is_not_final_and_estimate_when_nothing() {
    let mut usage_chunk = openai::chunk("chatcmpl-abc", 1, "m", true);
    usage_chunk.choices.clear();
    usage_chunk.usage = Some(Some(usage_of(100, 7, 0, 0)));
    let events = [text("hello world!"), finish_chunk(FinishReason::Stop), StreamEvent::Chunk(usage_chunk)];
    let not_final = StreamSummary { outcome: StreamOutcome::Completed, ..StreamSummary::open() };
    let acc = accumulate(&frames(&run(&events, &not_final, ctx(false))));
    assert_eq!(acc.usage.as_ref().unwrap()["input_tokens"], 100);
    assert_eq!(acc.usage.as_ref().unwrap()["output_tokens"], 7);

    // No usage anywhere: the hint for input, 4 bytes per token for output, never 0.
    let mut c = ctx(false);
    c.input_tokens_hint = 321;
    let acc = accumulate(&frames(&run(&events[..2], &not_final, c)));
    assert_eq!(acc.usage.as_ref().unwrap()["input_tokens"], 321);
    assert_eq!(acc.usage.as_ref().unwrap()["output_tokens"], 3);
}

#[test]
fn message_start_reports_hint_and_id_from_chunk() {
    let mut c = ctx(false);
    c.message_id = String::new();
    c.input_tokens_hint = 42;
    let out = run(&[text("a")], &completed(Usage::default()), c);
    let acc = accumulate(&frames(&out));
    let start = acc.message_start.unwrap();
    assert_eq!(start["id"], "msg_abc");
    assert_eq!(start["usage"]["input_tokens"], 42);
}

#[test]
fn upstream_error_mid_stream_closes_block_and_ends() {
    let events = [
        text("partial"),
        StreamEvent::Error(ErrorBody::new("Overloaded", "server_error", Some("overloaded"))),
        text("ignored"),
    ];
    let summary = StreamSummary {
        outcome: StreamOutcome::UpstreamError(ErrorBody::new("Overloaded", "server_error", Some("overloaded"))),
        ..StreamSummary::open()
    };
    let acc = accumulate(&frames(&run(&events, &summary, ctx(false))));
    assert_eq!(acc.error.clone().unwrap(), json!({"type": "overloaded_error", "message": "Overloaded"}));
    assert_eq!(blocks_summary(&acc), vec![json!({"text": "partial"})]);
}

#[test]
fn truncated_stream_ends_with_error() {
    let summary = StreamSummary { outcome: StreamOutcome::Truncated, ..StreamSummary::open() };
    let acc = accumulate(&frames(&run(&[text("cut")], &summary, ctx(false))));
    assert_eq!(acc.error.unwrap()["type"], "api_error");
    assert!(!acc.stopped);
}

#[test]
fn context_overflow_mid_stream_uses_anthropic_wording() {
    let body = ErrorBody::new(
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
        "invalid_request_error",
        Some("context_length_exceeded"),
    );
    let acc = accumulate(&frames(&run(&[StreamEvent::Error(body)], &completed(Usage::default()), ctx(false))));
    assert_eq!(
        acc.error.unwrap(),
        json!({"type": "invalid_request_error", "message": "prompt is too long: 130000 tokens > 128000 maximum"})
    );
}

#[test]
fn empty_stream_still_has_start_delta_and_stop() {
    let acc = accumulate(&frames(&run(&[], &completed(usage_of(5, 1, 0, 0)), ctx(false))));
    assert!(acc.message_start.is_some() && acc.stopped);
    assert!(acc.blocks.is_empty());
    assert_eq!(acc.stop_reason.as_deref(), Some("end_turn"));
}

#[test]
fn ping_and_start_are_idempotent_and_silent_after_the_end() {
    let mut enc = StreamEncoder::new(ctx(false));
    let mut out = BytesMut::new();
    enc.ping(&mut out);
    enc.start(&mut out);
    enc.start(&mut out);
    let names: Vec<String> = frames(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["ping", "message_start"]);
    enc.finish(&completed(Usage::default()), &mut out);
    assert!(enc.is_terminal());
    let len = out.len();
    enc.ping(&mut out);
    enc.push(&text("late"), &mut out);
    assert_eq!(out.len(), len);
}

#[test]
fn raw_openai_chunks_are_understood() {
    let raw = |s: &str| StreamEvent::Raw(Bytes::copy_from_slice(s.as_bytes()));
    let events = [
        raw(
            r#"{"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        ),
        raw(r#"{"id":"chatcmpl-x","choices":[{"index":0,"delta":{"reasoning":"hmm"}}]}"#),
        raw(r#"{"id":"chatcmpl-x","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#),
        raw(
            r#"{"id":"chatcmpl-x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}"#,
        ),
        raw(r#"{"id":"chatcmpl-x","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#),
        raw(
            r#"{"id":"chatcmpl-x","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":16}}}"#,
        ),
        raw(r#"not json"#),
    ];
    let not_final = StreamSummary { outcome: StreamOutcome::Completed, ..StreamSummary::open() };
    let acc = accumulate(&frames(&run(&events, &not_final, ctx(true))));
    assert_eq!(
        blocks_summary(&acc),
        vec![json!({"thinking": "hmm"}), json!({"text": "Hi"}), json!({"tool": "f", "args": "{\"a\":1}"})]
    );
    assert_eq!(acc.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(acc.usage.unwrap()["input_tokens"], 4);

    let acc = accumulate(&frames(&run(
        &[raw(r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#)],
        &not_final,
        ctx(false),
    )));
    assert_eq!(acc.error.unwrap(), json!({"type": "rate_limit_error", "message": "Rate limit reached"}));
}

#[test]
fn openai_passthrough_stream_end_to_end() {
    // Raw OpenAI SSE → StreamPassthrough (client_wants_usage = true keeps the usage chunk) → encoder.
    let sse = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Héllo\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14}}\n\n",
        "data: [DONE]\n\n",
    );
    let mut pass = crate::openai::passthrough::StreamPassthrough::new(true);
    let mut events = Vec::new();
    for piece in sse.as_bytes().chunks(7) {
        pass.feed(piece, &mut events);
    }
    let summary = pass.finish(&mut events);
    let acc = accumulate(&frames(&run(&events, &summary, ctx(false))));
    assert_eq!(blocks_summary(&acc), vec![json!({"text": "Héllo"})]);
    assert_eq!(acc.usage.unwrap()["input_tokens"], 12);
    assert_eq!(acc.message_start.unwrap()["id"], "msg_test");
}

// ---------------------------------------------------------------------------------------------------
// Recorded Anthropic streams: Anthropic SSE → egress decoder → hub → this encoder
// ---------------------------------------------------------------------------------------------------

fn recordings_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/anthropic-recordings")
}

fn recordings() -> Vec<(String, Vec<u8>)> {
    let dir = recordings_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt" || e == "sse"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

fn hub_ctx() -> ResponseContext {
    ResponseContext {
        id: "chatcmpl-fallback".to_owned(),
        created: 1,
        model: "claude".to_owned(),
        include_usage: true,
        include_reasoning: true,
        id_seed: 1,
    }
}

/// Recording → hub events, fed in the given pieces.
fn decode_recording(pieces: &[&[u8]]) -> (Vec<StreamEvent>, StreamSummary) {
    let mut decoder = crate::anthropic::StreamDecoder::new(hub_ctx());
    let mut events = Vec::new();
    for piece in pieces {
        decoder.feed(piece, &mut events);
    }
    let summary = decoder.finish(&mut events);
    (events, summary)
}

/// The recording's own semantics, accumulated leniently (unknown block types skipped).
fn original_semantics(bytes: &[u8]) -> (Vec<Value>, Option<String>, Value) {
    let mut framer = SseFramer::default();
    let mut events = Vec::new();
    framer.feed(bytes, &mut events).unwrap();
    framer.finish(&mut events);
    let mut blocks: Vec<(u64, Value)> = Vec::new();
    let mut stop = None;
    let mut usage = json!({});
    for e in events {
        let d: Value = serde_json::from_slice(&e.data).unwrap();
        match d["type"].as_str().unwrap() {
            "message_start" => usage = d["message"]["usage"].clone(),
            "content_block_start" => {
                let b = &d["content_block"];
                let v = match b["type"].as_str().unwrap() {
                    "text" => json!({"text": ""}),
                    "thinking" => json!({"thinking": ""}),
                    "tool_use" => json!({"tool": b["name"], "args": ""}),
                    _ => continue,
                };
                blocks.push((d["index"].as_u64().unwrap(), v));
            }
            "content_block_delta" => {
                let Some((_, b)) = blocks.iter_mut().find(|(i, _)| *i == d["index"].as_u64().unwrap()) else {
                    continue;
                };
                let (key, val) = match d["delta"]["type"].as_str().unwrap() {
                    "text_delta" => ("text", &d["delta"]["text"]),
                    "thinking_delta" => ("thinking", &d["delta"]["thinking"]),
                    "input_json_delta" => ("args", &d["delta"]["partial_json"]),
                    _ => continue,
                };
                b[key] = json!(format!("{}{}", b[key].as_str().unwrap(), val.as_str().unwrap()));
            }
            "message_delta" => {
                stop = d["delta"]["stop_reason"].as_str().map(str::to_owned);
                for (k, v) in d["usage"].as_object().unwrap() {
                    usage[k] = v.clone();
                }
            }
            _ => {}
        }
    }
    // Empty text blocks carry nothing (refusal_response has one); the encoder does not write them.
    let blocks = blocks.into_iter().map(|(_, b)| b).filter(|b| b.get("text").is_none_or(|t| t != "")).collect();
    (blocks, stop, usage)
}

#[test]
fn recorded_streams_keep_their_semantics() {
    let files = recordings();
    for (name, bytes) in &files {
        let (events, summary) = decode_recording(&[bytes]);
        let out = run(&events, &summary, ctx(true));
        let acc = accumulate(&frames(&out));
        let (blocks, stop, usage) = original_semantics(bytes);
        assert!(acc.stopped, "{name}: not completed");
        assert_eq!(blocks_summary(&acc), blocks, "{name}: blocks");
        assert_eq!(acc.stop_reason, stop, "{name}: stop_reason");
        let got = acc.usage.unwrap();
        for key in ["input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"] {
            assert_eq!(got[key], usage.get(key).cloned().unwrap_or(json!(0)), "{name}: usage {key}");
        }
        for (i, block) in acc.blocks.iter().enumerate() {
            if block["type"] == "thinking" {
                assert_eq!(block["signature"], GATEWAY_THINKING_SIGNATURE, "{name}: block {i}");
            }
        }
    }
    assert!(files.len() >= 10, "expected the recorded set, found {}", files.len());
}

#[test]
fn recorded_tool_use_keeps_the_tool_id() {
    let (_, bytes) = recordings().into_iter().find(|(n, _)| n == "tool_use_response.txt").unwrap();
    let (events, summary) = decode_recording(&[&bytes]);
    let acc = accumulate(&frames(&run(&events, &summary, ctx(false))));
    assert_eq!(acc.blocks[1]["id"], "toolu_01NRLabsLyVHZPKxbKvkfSMn");
    assert_eq!(acc.blocks[1]["partial_json"], "{\"location\": \"Paris\"}");
    assert_eq!(acc.stop_reason.as_deref(), Some("tool_use"));
}

// ---------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------

/// Cut points → pieces.
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in cuts {
        pieces.push(&bytes[start..cut]);
        start = cut;
    }
    pieces.push(&bytes[start..]);
    pieces
}

/// A logical answer: what the client must end up with, however the upstream chunks it.
#[derive(Debug, Clone)]
enum Segment {
    Text(String),
    Thinking(String),
    Tool { name: String, args: String },
}

fn segment() -> impl Strategy<Value = Segment> {
    let text = "[a-zé日 ]{1,12}";
    prop_oneof![
        text.prop_map(Segment::Text),
        text.prop_map(Segment::Thinking),
        ("[a-z]{1,6}", proptest::collection::btree_map("[a-z]{1,4}", 0u32..100, 0..3))
            .prop_map(|(name, map)| { Segment::Tool { name, args: serde_json::to_string(&map).unwrap() } }),
    ]
}

/// Splits a string into fragments at char boundaries chosen by `cuts`.
fn fragments(s: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points {
        out.push(chars[start..p].iter().collect());
        start = p;
    }
    out.push(chars[start..].iter().collect());
    out.into_iter().filter(|f: &String| !f.is_empty()).collect()
}

/// The blocks a client must see for sequential segments: adjacent texts (and thinkings) merge.
fn expected_blocks(segments: &[Segment]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for s in segments {
        match s {
            Segment::Text(t) => match out.last_mut() {
                Some(Value::Object(b)) if b.contains_key("text") => {
                    let joined = format!("{}{t}", b["text"].as_str().unwrap());
                    b.insert("text".to_owned(), json!(joined));
                }
                _ => out.push(json!({"text": t})),
            },
            Segment::Thinking(t) => match out.last_mut() {
                Some(Value::Object(b)) if b.contains_key("thinking") => {
                    let joined = format!("{}{t}", b["thinking"].as_str().unwrap());
                    b.insert("thinking".to_owned(), json!(joined));
                }
                _ => out.push(json!({"thinking": t})),
            },
            Segment::Tool { name, args } => out.push(json!({"tool": name, "args": args})),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any byte split of any recording gives byte-identical Anthropic output.
    #[test]
    fn recordings_any_split_same_output(which in 0usize..64, cuts in proptest::collection::vec(0usize..10_000, 0..40)) {
        let files = recordings();
        let (_, bytes) = &files[which % files.len()];
        let (whole_events, whole_summary) = decode_recording(&[bytes]);
        let whole = run(&whole_events, &whole_summary, ctx(true));
        let (events, summary) = decode_recording(&split(bytes, &cuts));
        prop_assert_eq!(run(&events, &summary, ctx(true)), whole);
    }

    /// Any chunking of a sequential answer gives the same accumulated message, and a valid stream.
    #[test]
    fn any_chunking_same_message(
        segments in proptest::collection::vec(segment(), 0..6),
        cuts in proptest::collection::vec(0usize..64, 0..8),
        finish in prop_oneof![Just(FinishReason::Stop), Just(FinishReason::Length), Just(FinishReason::ToolCalls)],
    ) {
        let mut events = vec![role_chunk()];
        let mut tool_index = 0u32;
        for s in &segments {
            match s {
                Segment::Text(t) => events.extend(fragments(t, &cuts).iter().map(|f| text(f))),
                Segment::Thinking(t) => events.extend(fragments(t, &cuts).iter().map(|f| reasoning(f))),
                Segment::Tool { name, args } => {
                    let id = format!("call_{tool_index}");
                    events.push(tool(tool_index, Some(&id), Some(name), ""));
                    events.extend(fragments(args, &cuts).iter().map(|f| tool(tool_index, None, None, f)));
                    tool_index += 1;
                }
            }
        }
        events.push(finish_chunk(finish));
        let out = run(&events, &completed(usage_of(10, 5, 2, 1)), ctx(true));
        let acc = accumulate(&frames(&out));
        prop_assert!(acc.stopped);
        prop_assert_eq!(blocks_summary(&acc), expected_blocks(&segments));
        let has_tools = tool_index > 0;
        let expected_stop = match finish {
            FinishReason::Length => "max_tokens",
            _ if has_tools => "tool_use",
            _ => "end_turn",
        };
        prop_assert_eq!(acc.stop_reason.as_deref(), Some(expected_stop));

        // The same events as raw OpenAI chunk JSON give the same bytes.
        let raw: Vec<StreamEvent> = events
            .iter()
            .map(|e| match e {
                StreamEvent::Chunk(c) => StreamEvent::Raw(Bytes::from(serde_json::to_vec(c).unwrap())),
                other => other.clone(),
            })
            .collect();
        prop_assert_eq!(run(&raw, &completed(usage_of(10, 5, 2, 1)), ctx(true)), out);
    }

    /// Parallel calls whose fragments interleave arbitrarily: every call keeps exactly its arguments in
    /// one block, texts keep their order, and the stream stays valid.
    #[test]
    fn interleaved_calls_keep_their_arguments(
        calls in proptest::collection::vec(("[a-z]{1,5}", proptest::collection::btree_map("[a-z]{1,3}", 0u32..50, 0..3)), 1..4),
        cuts in proptest::collection::vec(0usize..40, 0..6),
        order in proptest::collection::vec(0usize..4, 0..40),
        texts in proptest::collection::vec("[a-z]{1,5}", 0..3),
    ) {
        let mut queues: Vec<Vec<StreamEvent>> = calls
            .iter()
            .enumerate()
            .map(|(i, (name, map))| {
                let args = serde_json::to_string(map).unwrap();
                let i = i as u32;
                let mut q = vec![tool(i, Some(&format!("call_{i}")), Some(name), "")];
                q.extend(fragments(&args, &cuts).iter().map(|f| tool(i, None, None, f)));
                q.reverse();
                q
            })
            .collect();
        let mut text_queue: Vec<StreamEvent> = texts.iter().rev().map(|t| text(t)).collect();
        let mut events = Vec::new();
        let mut picks = order.iter().copied().cycle();
        while queues.iter().any(|q| !q.is_empty()) || !text_queue.is_empty() {
            let pick = picks.next().unwrap_or(0) % (queues.len() + 1);
            let source = if pick == queues.len() { &mut text_queue } else { &mut queues[pick] };
            match source.pop() {
                Some(e) => events.push(e),
                None => {
                    // That source is drained: take from the first non-empty one.
                    if let Some(e) = queues.iter_mut().find(|q| !q.is_empty()).and_then(Vec::pop).or_else(|| text_queue.pop()) {
                        events.push(e);
                    }
                }
            }
        }
        events.push(finish_chunk(FinishReason::ToolCalls));
        let acc = accumulate(&frames(&run(&events, &completed(Usage::default()), ctx(false))));
        prop_assert!(acc.stopped);
        let mut got_tools: Vec<(String, String, String)> = acc
            .blocks
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .map(|b| (b["id"].as_str().unwrap().to_owned(), b["name"].as_str().unwrap().to_owned(), b["partial_json"].as_str().unwrap().to_owned()))
            .collect();
        got_tools.sort();
        let mut want_tools: Vec<(String, String, String)> = calls
            .iter()
            .enumerate()
            .map(|(i, (name, map))| (format!("call_{i}"), name.clone(), serde_json::to_string(map).unwrap()))
            .collect();
        want_tools.sort();
        prop_assert_eq!(got_tools, want_tools);
        let got_text: String = acc.blocks.iter().filter(|b| b["type"] == "text").map(|b| b["text"].as_str().unwrap()).collect();
        prop_assert_eq!(got_text, texts.concat());
        prop_assert_eq!(acc.stop_reason.as_deref(), Some("tool_use"));
    }

    /// Arbitrary raw payloads never panic and always leave a valid stream.
    #[test]
    fn arbitrary_raw_payloads_are_safe(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..10)) {
        let events: Vec<StreamEvent> = payloads.into_iter().map(|p| StreamEvent::Raw(Bytes::from(p))).collect();
        let acc = accumulate(&frames(&run(&events, &completed(Usage::default()), ctx(true))));
        prop_assert!(acc.stopped);
    }
}
