use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::framing::sse::SseFramer;
use crate::openai::{chunk, CompletionTokensDetails, FunctionCallDelta, PromptTokensDetails, ToolCallDelta};
use crate::responses::Echo;

pub(crate) fn ctx() -> EncodeContext {
    EncodeContext {
        response_id: "resp_test".into(),
        created_at: 1_700_000_000,
        completed_at: 1_700_000_005,
        id_seed: 7,
    }
}

pub(crate) fn text(s: &str) -> StreamEvent {
    let mut c = chunk("chatcmpl-1", 1, "m", true);
    c.choices[0].delta.content = Some(s.into());
    StreamEvent::Chunk(c)
}

pub(crate) fn reasoning(s: &str) -> StreamEvent {
    let mut c = chunk("chatcmpl-1", 1, "m", true);
    c.choices[0].delta.reasoning_content = Some(s.into());
    StreamEvent::Chunk(c)
}

fn refusal(s: &str) -> StreamEvent {
    let mut c = chunk("chatcmpl-1", 1, "m", true);
    c.choices[0].delta.refusal = Some(s.into());
    StreamEvent::Chunk(c)
}

pub(crate) fn tool(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> StreamEvent {
    let mut c = chunk("chatcmpl-1", 1, "m", true);
    c.choices[0].delta.tool_calls = Some(vec![ToolCallDelta {
        index,
        id: id.map(Into::into),
        kind: id.map(|_| "function".into()),
        function: Some(FunctionCallDelta { name: name.map(Into::into), arguments: Some(args.into()) }),
    }]);
    StreamEvent::Chunk(c)
}

pub(crate) fn finish(reason: FinishReason) -> StreamEvent {
    let mut c = chunk("chatcmpl-1", 1, "m", true);
    c.choices[0].finish_reason = Some(reason);
    StreamEvent::Chunk(c)
}

pub(crate) fn usage_chunk(usage: Usage) -> StreamEvent {
    let mut c = chunk("chatcmpl-1", 1, "m", true);
    c.choices.clear();
    c.usage = Some(Some(usage));
    StreamEvent::Chunk(c)
}

pub(crate) fn rich_usage() -> Usage {
    Usage {
        prompt_tokens: 100,
        completion_tokens: 40,
        total_tokens: 140,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(60),
            cache_write_tokens: Some(10),
            audio_tokens: None,
        }),
        completion_tokens_details: Some(CompletionTokensDetails {
            reasoning_tokens: Some(12),
            ..CompletionTokensDetails::default()
        }),
    }
}

/// Runs the encoder and returns the SSE frames parsed back: (event field, data JSON).
pub(crate) fn run(echo: Echo, events: &[StreamEvent], summary: Option<&StreamSummary>) -> Vec<Value> {
    let mut encoder = StreamEncoder::new(echo, ctx());
    let mut out = Vec::new();
    // One event per push, as the gateway does with each translator feed.
    for event in events {
        encoder.push(std::slice::from_ref(event), &mut out);
    }
    encoder.finish(summary, &mut out);
    // A second finish and later pushes emit nothing.
    let before = out.len();
    encoder.finish(summary, &mut out);
    encoder.push(&[text("late")], &mut out);
    assert_eq!(out.len(), before, "nothing after the terminal event");
    assert!(encoder.is_done());
    let mut bytes = BytesMut::new();
    write_sse(&out, &mut bytes);
    parse_sse(&bytes)
}

pub(crate) fn parse_sse(bytes: &[u8]) -> Vec<Value> {
    let mut framer = SseFramer::default();
    let mut frames = Vec::new();
    framer.feed(bytes, &mut frames).unwrap();
    assert!(!framer.has_pending(), "every frame ends with a blank line");
    frames
        .into_iter()
        .map(|f| {
            let data: Value = serde_json::from_slice(&f.data).unwrap();
            assert_eq!(data["type"], f.event.as_str(), "event: line matches data.type");
            data
        })
        .collect()
}

/// Structural checks every encoded stream must pass; returns the terminal `response`.
pub(crate) fn check_stream(events: &[Value]) -> Value {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64, "sequence numbers from 0, step 1: {e}");
    }
    assert_eq!(events[0]["type"], "response.created");
    assert_eq!(events[0]["response"]["status"], "in_progress");
    assert_eq!(events[1]["type"], "response.in_progress");
    let terminal_types = ["response.completed", "response.incomplete", "response.failed"];
    let terminals: Vec<_> = events.iter().filter(|e| terminal_types.contains(&e["type"].as_str().unwrap())).collect();
    assert_eq!(terminals.len(), 1, "exactly one terminal event");
    let last = events.last().unwrap();
    assert!(terminal_types.contains(&last["type"].as_str().unwrap()), "the terminal event is last");
    let response = last["response"].clone();

    // Items: added once, done once, deltas add up to the done values, and the terminal output is the done items.
    let mut added = std::collections::BTreeMap::new();
    let mut done = std::collections::BTreeMap::new();
    let mut text_deltas: std::collections::BTreeMap<(u64, u64), String> = Default::default();
    let mut arg_deltas: std::collections::BTreeMap<u64, String> = Default::default();
    for e in events {
        let index = e["output_index"].as_u64();
        match e["type"].as_str().unwrap() {
            "response.output_item.added" => {
                assert!(added.insert(index.unwrap(), e["item"].clone()).is_none(), "added twice");
                assert!(!done.contains_key(&index.unwrap()));
            }
            "response.output_item.done" => {
                assert!(added.contains_key(&index.unwrap()), "done before added");
                assert!(done.insert(index.unwrap(), e["item"].clone()).is_none(), "done twice");
            }
            "response.output_text.delta" | "response.refusal.delta" | "response.reasoning_text.delta" => {
                assert!(!done.contains_key(&index.unwrap()), "delta after item done");
                let key = (index.unwrap(), e["content_index"].as_u64().unwrap());
                text_deltas.entry(key).or_default().push_str(e["delta"].as_str().unwrap());
            }
            "response.reasoning_summary_text.delta" => {
                let key = (index.unwrap(), 1000 + e["summary_index"].as_u64().unwrap());
                text_deltas.entry(key).or_default().push_str(e["delta"].as_str().unwrap());
            }
            "response.output_text.done" | "response.reasoning_text.done" => {
                let key = (index.unwrap(), e["content_index"].as_u64().unwrap());
                assert_eq!(text_deltas.get(&key).map(String::as_str).unwrap_or(""), e["text"].as_str().unwrap());
            }
            "response.refusal.done" => {
                let key = (index.unwrap(), e["content_index"].as_u64().unwrap());
                assert_eq!(text_deltas.get(&key).map(String::as_str).unwrap_or(""), e["refusal"].as_str().unwrap());
            }
            "response.reasoning_summary_text.done" => {
                let key = (index.unwrap(), 1000 + e["summary_index"].as_u64().unwrap());
                assert_eq!(text_deltas.get(&key).map(String::as_str).unwrap_or(""), e["text"].as_str().unwrap());
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                assert!(!done.contains_key(&index.unwrap()), "delta after item done");
                arg_deltas.entry(index.unwrap()).or_default().push_str(e["delta"].as_str().unwrap());
            }
            "response.function_call_arguments.done" => {
                assert_eq!(arg_deltas.get(&index.unwrap()).map(String::as_str).unwrap_or(""), e["arguments"]);
            }
            "response.custom_tool_call_input.done" => {
                assert_eq!(arg_deltas.get(&index.unwrap()).map(String::as_str).unwrap_or(""), e["input"]);
            }
            _ => {}
        }
    }
    assert_eq!(added.keys().collect::<Vec<_>>(), done.keys().collect::<Vec<_>>(), "no item left open");
    assert_eq!(
        added.keys().copied().collect::<Vec<_>>(),
        (0..added.len() as u64).collect::<Vec<_>>(),
        "output indices are contiguous"
    );
    for (index, item) in &added {
        assert_eq!(item["id"], done[index]["id"]);
        assert_eq!(item["type"], done[index]["type"]);
        assert_eq!(item["status"], "in_progress");
    }
    let output: Vec<Value> = done.into_values().collect();
    assert_eq!(response["output"], Value::Array(output), "terminal output = the done items");
    response
}

#[test]
fn text_stream_golden() {
    let events = run(
        Echo::new("claude-x"),
        &[text("Hel"), text("lo"), finish(FinishReason::Stop), usage_chunk(rich_usage())],
        None,
    );
    let response = check_stream(&events);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let msg_id = events[2]["item"]["id"].as_str().unwrap();
    assert!(msg_id.starts_with("msg_"));
    assert_eq!(
        events[2],
        json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
               "item": {"type": "message", "id": msg_id, "status": "in_progress", "role": "assistant", "content": []}})
    );
    assert_eq!(
        events[3],
        json!({"type": "response.content_part.added", "sequence_number": 3, "item_id": msg_id, "output_index": 0,
               "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
    );
    assert_eq!(
        events[4],
        json!({"type": "response.output_text.delta", "sequence_number": 4, "item_id": msg_id, "output_index": 0,
               "content_index": 0, "delta": "Hel", "logprobs": []})
    );
    assert_eq!(events[6]["text"], "Hello");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["completed_at"], 1_700_000_005);
    assert_eq!(response["model"], "claude-x");
    assert_eq!(response["id"], "resp_test");
    assert_eq!(response["output"][0]["status"], "completed");
    assert_eq!(response["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 10},
               "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 140})
    );
    // `response.created` carries the same echo with no output and no usage yet.
    assert_eq!(events[0]["response"]["output"], json!([]));
    assert_eq!(events[0]["response"]["usage"], Value::Null);
    assert_eq!(events[0]["response"]["completed_at"], Value::Null);
}

#[test]
fn reasoning_then_text_as_reasoning_text_content() {
    let events = run(
        Echo::new("m"),
        &[reasoning("think "), reasoning("hard"), text("Answer"), finish(FinishReason::Stop)],
        None,
    );
    let response = check_stream(&events);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &types[2..9],
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ]
    );
    let rs = &response["output"][0];
    assert_eq!(rs["type"], "reasoning");
    assert!(rs["id"].as_str().unwrap().starts_with("rs_"));
    assert_eq!(rs["summary"], json!([]));
    assert_eq!(rs["content"], json!([{"type": "reasoning_text", "text": "think hard"}]));
    assert_eq!(response["output"][1]["type"], "message");
}

#[test]
fn reasoning_as_summary_when_the_client_asked_for_one() {
    let mut echo = Echo::new("m");
    echo.reasoning_summary = true;
    let events = run(echo, &[reasoning("plan"), text("ok")], None);
    let response = check_stream(&events);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &types[2..7],
        [
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
        ]
    );
    assert_eq!(events[3]["part"], json!({"type": "summary_text", "text": ""}));
    assert_eq!(events[3]["summary_index"], 0);
    assert_eq!(response["output"][0]["summary"], json!([{"type": "summary_text", "text": "plan"}]));
    assert!(response["output"][0].get("content").is_none());
}

#[test]
fn parallel_tool_calls_get_their_own_items_even_interleaved() {
    let events = run(
        Echo::new("m"),
        &[
            text("Let me check."),
            tool(0, Some("call_a"), Some("weather"), "{\"city\":"),
            tool(1, Some("call_b"), Some("time"), "{\"tz\":"),
            tool(0, None, None, "\"Paris\"}"),
            tool(1, None, None, "\"CET\"}"),
            finish(FinishReason::ToolCalls),
            usage_chunk(Usage { prompt_tokens: 5, completion_tokens: 6, total_tokens: 11, ..Usage::default() }),
        ],
        None,
    );
    let response = check_stream(&events);
    assert_eq!(response["status"], "completed");
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), 3);
    assert_eq!(output[0]["type"], "message");
    for (item, (call_id, name, args)) in
        output[1..].iter().zip([("call_a", "weather", "{\"city\":\"Paris\"}"), ("call_b", "time", "{\"tz\":\"CET\"}")])
    {
        assert_eq!(item["type"], "function_call");
        assert!(item["id"].as_str().unwrap().starts_with("fc_"));
        assert_eq!(item["call_id"], call_id);
        assert_eq!(item["name"], name);
        assert_eq!(item["arguments"], args);
        assert_eq!(item["status"], "completed");
    }
    assert_ne!(output[1]["id"], output[2]["id"]);
    // The message was closed before the first call was added.
    let added_call = events.iter().position(|e| e["type"] == "response.output_item.added" && e["output_index"] == 1);
    let message_done = events.iter().position(|e| e["type"] == "response.output_item.done" && e["output_index"] == 0);
    assert!(message_done < added_call);
    let first_done = events.iter().find(|e| e["type"] == "response.function_call_arguments.done").unwrap();
    assert_eq!(first_done["name"], "weather");
    assert_eq!(response["usage"]["total_tokens"], 11);
}

#[test]
fn custom_tool_call_is_unwrapped() {
    let mut echo = Echo::new("m");
    echo.custom_tools.insert("apply_patch".into());
    let events = run(
        echo,
        &[tool(0, Some("call_p"), Some("apply_patch"), "{\"input\":\"*** Begin"), tool(0, None, None, " Patch\"}")],
        None,
    );
    let response = check_stream(&events);
    let item = &response["output"][0];
    assert_eq!(item["type"], "custom_tool_call");
    assert!(item["id"].as_str().unwrap().starts_with("ctc_"));
    assert_eq!(item["call_id"], "call_p");
    assert_eq!(item["input"], "*** Begin Patch");
    assert!(events
        .iter()
        .any(|e| e["type"] == "response.custom_tool_call_input.done" && e["input"] == "*** Begin Patch"));
    assert!(!events.iter().any(|e| e["type"] == "response.function_call_arguments.delta"));
}

#[test]
fn every_finish_reason_maps_to_a_status() {
    let cases = [
        (FinishReason::Stop, "completed", Value::Null),
        (FinishReason::ToolCalls, "completed", Value::Null),
        (FinishReason::FunctionCall, "completed", Value::Null),
        (FinishReason::Length, "incomplete", json!({"reason": "max_output_tokens"})),
        (FinishReason::ContentFilter, "incomplete", json!({"reason": "content_filter"})),
    ];
    for (reason, status, details) in cases {
        let events = run(Echo::new("m"), &[text("partial"), finish(reason)], None);
        let response = check_stream(&events);
        let last = events.last().unwrap();
        assert_eq!(last["type"], format!("response.{status}"), "{reason:?}");
        assert_eq!(response["status"], status);
        assert_eq!(response["incomplete_details"], details);
        let item_status = if status == "completed" { "completed" } else { "incomplete" };
        assert_eq!(response["output"][0]["status"], item_status);
        assert_eq!(response["completed_at"].is_null(), status != "completed");
    }
}

#[test]
fn mid_stream_error_fails_the_response_and_closes_items() {
    let events = run(
        Echo::new("m"),
        &[
            text("Hal"),
            tool(0, Some("call_1"), Some("f"), "{"),
            StreamEvent::Error(ErrorBody::new("overloaded", "server_error", Some("upstream_error"))),
            text("ignored"),
        ],
        None,
    );
    let response = check_stream(&events);
    assert_eq!(events.last().unwrap()["type"], "response.failed");
    assert_eq!(response["status"], "failed");
    assert_eq!(response["error"], json!({"code": "server_error", "message": "overloaded"}));
    assert_eq!(response["output"][0]["status"], "completed");
    assert_eq!(response["output"][1]["status"], "incomplete");
    assert_eq!(response["output"][1]["arguments"], "{");
    assert!(!events.iter().any(|e| e["delta"] == "ignored"));
}

#[test]
fn rate_limit_errors_keep_their_code() {
    let events =
        run(Echo::new("m"), &[StreamEvent::Error(ErrorBody::new("slow down", "rate_limit_error", None))], None);
    let response = check_stream(&events);
    assert_eq!(response["error"]["code"], "rate_limit_exceeded");
    assert_eq!(response["output"], json!([]));
}

#[test]
fn truncated_summary_without_error_event_fails() {
    let mut summary = StreamSummary::open();
    summary.outcome = StreamOutcome::Truncated;
    let events = run(Echo::new("m"), &[text("cut")], Some(&summary));
    let response = check_stream(&events);
    assert_eq!(response["status"], "failed");
    assert_eq!(response["error"]["message"], "upstream stream ended prematurely");
}

#[test]
fn summary_usage_and_finish_fill_in_when_chunks_had_none() {
    let mut summary = StreamSummary::open();
    summary.outcome = StreamOutcome::Completed;
    summary.usage = rich_usage();
    summary.usage_is_final = true;
    summary.finish_reason = Some(FinishReason::Length);
    let events = run(Echo::new("m"), &[text("x")], Some(&summary));
    let response = check_stream(&events);
    assert_eq!(response["status"], "incomplete");
    assert_eq!(response["usage"]["input_tokens_details"]["cached_tokens"], 60);
}

#[test]
fn empty_answer_is_one_empty_message() {
    let events = run(Echo::new("m"), &[text(""), finish(FinishReason::Stop)], None);
    let response = check_stream(&events);
    assert_eq!(response["output"].as_array().unwrap().len(), 1);
    assert_eq!(response["output"][0]["content"][0]["text"], "");
    assert!(!events.iter().any(|e| e["type"] == "response.output_text.delta"));
}

#[test]
fn refusal_parts() {
    let events = run(Echo::new("m"), &[text("I "), refusal("can't"), text(" sorry")], None);
    let response = check_stream(&events);
    assert_eq!(
        response["output"][0]["content"],
        json!([
            {"type": "output_text", "text": "I ", "annotations": [], "logprobs": []},
            {"type": "refusal", "refusal": "can't"},
            {"type": "output_text", "text": " sorry", "annotations": [], "logprobs": []}
        ])
    );
}

#[test]
fn raw_openai_chunks_are_understood() {
    let raw = |s: &str| StreamEvent::Raw(Bytes::from(s.to_owned()));
    let events = run(
        Echo::new("m"),
        &[
            raw(
                r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","reasoning":"r"}}]}"#,
            ),
            raw(
                r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"length"}]}"#,
            ),
            raw(
                r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
            ),
            raw("not json"),
        ],
        None,
    );
    let response = check_stream(&events);
    assert_eq!(response["status"], "incomplete");
    assert_eq!(response["output"][0]["content"][0]["text"], "r");
    assert_eq!(response["output"][1]["content"][0]["text"], "hi");
    assert_eq!(response["usage"]["total_tokens"], 5);

    let events = run(Echo::new("m"), &[raw(r#"{"error":{"message":"bad","type":"server_error"}}"#)], None);
    assert_eq!(check_stream(&events)["error"]["message"], "bad");
}

/// One piece of hub content for the property test.
#[derive(Debug, Clone)]
enum Segment {
    Reasoning(String),
    Text(String),
    Tool(String, String),
}

fn segment() -> impl Strategy<Value = Segment> {
    prop_oneof![
        "[a-zé😀 ]{1,12}".prop_map(Segment::Reasoning),
        "[a-z€ ]{1,12}".prop_map(Segment::Text),
        ("[a-z]{1,5}", "[a-z{}:\"]{0,12}").prop_map(|(n, a)| Segment::Tool(n, a)),
    ]
}

/// Hub events for the segments, each text cut at the given points (char boundaries).
fn hub_events(segments: &[Segment], cuts: &[usize]) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    let mut cut = cuts.iter().copied().cycle();
    let mut tool_index = 0;
    let split = |s: &str, n: usize| -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        if chars.len() < 2 || n == 0 {
            return vec![s.to_owned()];
        }
        let at = 1 + n % (chars.len() - 1);
        vec![chars[..at].iter().collect(), chars[at..].iter().collect()]
    };
    for seg in segments {
        match seg {
            Segment::Reasoning(s) => events.extend(split(s, cut.next().unwrap_or(0)).iter().map(|p| reasoning(p))),
            Segment::Text(s) => events.extend(split(s, cut.next().unwrap_or(0)).iter().map(|p| text(p))),
            Segment::Tool(name, args) => {
                let id = format!("call_{tool_index}");
                for (k, part) in split(args, cut.next().unwrap_or(0)).iter().enumerate() {
                    let first = k == 0;
                    events.push(tool(tool_index, first.then_some(id.as_str()), first.then_some(name.as_str()), part));
                }
                tool_index += 1;
            }
        }
    }
    events
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_response(
        segments in proptest::collection::vec(segment(), 0..8),
        cuts in proptest::collection::vec(0usize..20, 1..10),
        summary_mode in any::<bool>(),
        reason in prop_oneof![Just(FinishReason::Stop), Just(FinishReason::Length), Just(FinishReason::ToolCalls)],
    ) {
        let mut echo = Echo::new("m");
        echo.reasoning_summary = summary_mode;
        let tail = [finish(reason), usage_chunk(rich_usage())];
        let mut whole = hub_events(&segments, &[0]);
        whole.extend(tail.iter().cloned());
        let mut split = hub_events(&segments, &cuts);
        split.extend(tail.iter().cloned());
        let a = run(echo.clone(), &whole, None);
        let b = run(echo, &split, None);
        let ra = check_stream(&a);
        let rb = check_stream(&b);
        prop_assert_eq!(ra, rb);
    }

    #[test]
    fn arbitrary_event_sequences_are_always_well_formed(
        ops in proptest::collection::vec(0u8..8, 0..30),
    ) {
        let mut events = Vec::new();
        for (k, op) in ops.iter().enumerate() {
            events.push(match op {
                0 => text("t"),
                1 => reasoning("r"),
                2 => refusal("n"),
                3 => tool((k % 3) as u32, Some("call_x"), Some("f"), "{"),
                4 => tool((k % 3) as u32, None, None, "}"),
                5 => finish(FinishReason::Length),
                6 => usage_chunk(rich_usage()),
                _ => StreamEvent::Error(ErrorBody::new("e", "server_error", None)),
            });
        }
        let out = run(Echo::new("m"), &events, None);
        let _ = check_stream(&out);
    }
}

#[test]
fn namespaced_calls_get_their_namespace_back() {
    let mut echo = Echo::new("m");
    echo.namespaced.insert("collaboration__spawn_agent".into(), ("collaboration".into(), "spawn_agent".into()));
    let events = run(echo, &[tool(0, Some("call_1"), Some("collaboration__spawn_agent"), "{}")], None);
    let response = check_stream(&events);
    let added = events.iter().find(|e| e["type"] == "response.output_item.added").unwrap();
    assert_eq!(added["item"]["name"], "spawn_agent");
    assert_eq!(added["item"]["namespace"], "collaboration");
    let done = events.iter().find(|e| e["type"] == "response.function_call_arguments.done").unwrap();
    assert_eq!(done["name"], "spawn_agent");
    assert_eq!(response["output"][0]["name"], "spawn_agent");
    assert_eq!(response["output"][0]["namespace"], "collaboration");
}

proptest! {
    #[test]
    fn arbitrary_raw_payloads_never_break_the_stream(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..8)) {
        let events: Vec<StreamEvent> = payloads.into_iter().map(|p| StreamEvent::Raw(Bytes::from(p))).collect();
        let out = run(Echo::new("m"), &events, None);
        let _ = check_stream(&out);
    }
}

fn custom_echo() -> Echo {
    let mut echo = Echo::new("m");
    echo.custom_tools.insert("apply_patch".into());
    echo
}

#[test]
fn custom_input_streams_as_it_arrives() {
    let events = run(
        custom_echo(),
        &[
            tool(0, Some("call_p"), Some("apply_patch"), "{\"inp"),
            tool(0, None, None, "ut\": \"line1\\"),
            tool(0, None, None, "nline2 \\u00"),
            tool(0, None, None, "e9 \\ud83d"),
            tool(0, None, None, "\\ude00\"}"),
        ],
        None,
    );
    let response = check_stream(&events);
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "response.custom_tool_call_input.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["line1", "\nline2 ", "é ", "😀"]);
    assert_eq!(response["output"][0]["input"], "line1\nline2 é 😀");
}

#[test]
fn non_canonical_custom_arguments_are_sent_at_the_end() {
    let events = run(custom_echo(), &[tool(0, Some("c"), Some("apply_patch"), "{\"x\":1,\"input\":\"a\"}")], None);
    let response = check_stream(&events);
    let deltas: Vec<&Value> =
        events.iter().filter(|e| e["type"] == "response.custom_tool_call_input.delta").map(|e| &e["delta"]).collect();
    assert_eq!(deltas, [&json!("a")]);
    assert_eq!(response["output"][0]["input"], "a");
    // Not JSON at all: the raw arguments are the input.
    let response = check_stream(&run(custom_echo(), &[tool(0, Some("c"), Some("apply_patch"), "raw text")], None));
    assert_eq!(response["output"][0]["input"], "raw text");
}

proptest! {
    #[test]
    fn custom_input_is_split_invariant(text in "[a-z\"\\\\\n\té😀\u{1}]{0,24}", cuts in proptest::collection::vec(0usize..200, 0..6)) {
        let args = serde_json::to_string(&json!({"input": text})).unwrap();
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (args.len() + 1)).filter(|&c| args.is_char_boundary(c)).collect();
        points.sort_unstable();
        points.dedup();
        let mut events = Vec::new();
        let mut start = 0;
        for (k, p) in points.into_iter().chain([args.len()]).enumerate() {
            let first = k == 0;
            events.push(tool(0, first.then_some("c"), first.then_some("apply_patch"), &args[start..p]));
            start = p;
        }
        let response = check_stream(&run(custom_echo(), &events, None));
        prop_assert_eq!(&response["output"][0]["input"], &json!(text));
    }
}
