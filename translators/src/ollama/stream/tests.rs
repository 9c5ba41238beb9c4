use super::*;
use crate::openai::ChunkChoice;
use crate::openai::FinishReason;
use crate::stream::truncated_error;
use serde_json::{json, Value};

fn ctx(include_usage: bool, include_reasoning: bool) -> ResponseContext {
    ResponseContext {
        id: "chatcmpl-s".into(),
        created: 1_760_000_000,
        model: "ollama/llama3.2".into(),
        include_usage,
        include_reasoning,
        id_seed: 11,
    }
}

fn run(input: &str, ctx: ResponseContext) -> (Vec<StreamEvent>, StreamSummary) {
    let mut d = StreamDecoder::new(ctx);
    let mut out = Vec::new();
    d.feed(input.as_bytes(), &mut out);
    let summary = d.finish(&mut out);
    (out, summary)
}

fn json_events(events: &[StreamEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| match e {
            StreamEvent::Chunk(c) => serde_json::to_value(c).unwrap(),
            StreamEvent::Error(b) => json!({"error": b}),
            StreamEvent::Raw(r) => serde_json::from_slice(r).unwrap(),
        })
        .collect()
}

const TEXT: &str = concat!(
    r#"{"model":"llama3.2","created_at":"2025-10-26T17:15:24.097767Z","message":{"role":"assistant","content":"The"},"done":false}"#,
    "\n",
    r#"{"model":"llama3.2","created_at":"2025-10-26T17:15:24.109172Z","message":{"role":"assistant","content":" sky"},"done":false}"#,
    "\n",
    r#"{"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":2}"#,
    "\n"
);

#[test]
fn text_stream_without_usage_has_no_usage_key() {
    let (events, summary) = run(TEXT, ctx(false, false));
    let events = json_events(&events);
    assert_eq!(events.len(), 4);
    let base = |choice: Value| {
        json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1_760_000_000u64,
               "model": "ollama/llama3.2", "choices": [choice]})
    };
    assert_eq!(
        events[0],
        base(
            json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null})
        )
    );
    assert_eq!(
        events[1],
        base(json!({"index": 0, "delta": {"content": "The"}, "logprobs": null, "finish_reason": null}))
    );
    assert_eq!(
        events[2],
        base(json!({"index": 0, "delta": {"content": " sky"}, "logprobs": null, "finish_reason": null}))
    );
    assert_eq!(events[3], base(json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"})));
    assert_eq!(summary.outcome, StreamOutcome::Completed);
    assert!(summary.usage_is_final);
    assert_eq!(summary.usage.prompt_tokens, 26);
    assert_eq!(summary.usage.completion_tokens, 2);
    assert_eq!(summary.streamed_bytes, 7);
    assert_eq!(summary.finish_reason, Some(FinishReason::Stop));
    assert_eq!(summary.upstream_model.as_deref(), Some("llama3.2"));
}

#[test]
fn text_stream_with_usage_has_null_usage_then_a_usage_chunk() {
    let (events, _) = run(TEXT, ctx(true, false));
    let events = json_events(&events);
    assert_eq!(events.len(), 5);
    for e in &events[..4] {
        assert_eq!(e["usage"], Value::Null);
        assert!(e.as_object().unwrap().contains_key("usage"));
    }
    assert_eq!(events[4]["choices"], json!([]));
    assert_eq!(events[4]["usage"], json!({"prompt_tokens": 26, "completion_tokens": 2, "total_tokens": 28}));
}

#[test]
fn tool_calls_get_running_indices_and_finish_tool_calls() {
    let input = concat!(
        r#"{"message":{"content":"Checking."},"done":false}"#,
        "\n",
        r#"{"message":{"content":"","tool_calls":[{"id":"call_x1","function":{"index":0,"name":"w","arguments":{"city":"Tokyo"}}}]},"done":false}"#,
        "\n",
        r#"{"message":{"content":"","tool_calls":[{"function":{"index":0,"name":"w","arguments":{"city":"Paris"}}}]},"done":false}"#,
        "\n",
        r#"{"message":{"content":""},"done":true,"done_reason":"stop"}"#,
        "\n"
    );
    let (events, summary) = run(input, ctx(false, false));
    let calls: Vec<&ToolCallDelta> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Chunk(c) => c.choices.first().and_then(|ch: &ChunkChoice| ch.delta.tool_calls.as_ref()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].index, 0);
    assert_eq!(calls[0].id.as_deref(), Some("call_x1"));
    assert_eq!(calls[1].index, 1);
    assert_eq!(calls[1].id, Some(crate::ids::tool_call_id(11, 1)));
    assert_eq!(calls[1].function.as_ref().unwrap().arguments.as_deref(), Some(r#"{"city":"Paris"}"#));
    assert_eq!(calls[1].kind.as_deref(), Some("function"));
    assert_eq!(summary.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(summary.streamed_bytes, ("Checking.".len() + 2 * r#"{"city":"Tokyo"}"#.len()) as u64);
    assert_eq!(summary.usage.prompt_tokens, 0);
}

#[test]
fn error_line_ends_the_stream() {
    let input = concat!(
        r#"{"message":{"content":"Hi"},"done":false}"#,
        "\n",
        r#"{"error":"an error was encountered while running the model"}"#,
        "\n",
        r#"{"message":{"content":"ignored"},"done":false}"#,
        "\n"
    );
    let mut d = StreamDecoder::new(ctx(false, false));
    let mut out = Vec::new();
    d.feed(input.as_bytes(), &mut out);
    assert!(d.is_terminal());
    let summary = d.finish(&mut out);
    assert_eq!(out.len(), 3);
    let StreamEvent::Error(body) = &out[2] else { panic!("{:?}", out[2]) };
    assert_eq!(body.message, "ollama: an error was encountered while running the model");
    assert_eq!(body.kind, "server_error");
    assert_eq!(summary.outcome, StreamOutcome::UpstreamError(body.clone()));
    assert_eq!(summary.streamed_bytes, 2);
}

#[test]
fn eof_without_done_is_truncated_and_finish_is_idempotent() {
    let mut d = StreamDecoder::new(ctx(false, false));
    let mut out = Vec::new();
    d.feed(br#"{"message":{"content":"Hi"},"done":false}"#, &mut out);
    d.feed(b"\n", &mut out);
    assert_eq!(d.summary().outcome, StreamOutcome::Open);
    let summary = d.finish(&mut out);
    assert_eq!(summary.outcome, StreamOutcome::Truncated);
    assert_eq!(out.last(), Some(&StreamEvent::Error(truncated_error())));
    let n = out.len();
    let again = d.finish(&mut out);
    assert_eq!(out.len(), n);
    assert_eq!(again, summary);
    d.feed(b"{\"done\":true}\n", &mut out);
    assert_eq!(out.len(), n);
}

#[test]
fn unterminated_done_line_completes_at_finish() {
    let (events, summary) =
        run(r#"{"message":{"content":"x"},"done":true,"done_reason":"length","eval_count":1}"#, ctx(false, false));
    assert_eq!(summary.outcome, StreamOutcome::Completed);
    assert_eq!(summary.finish_reason, Some(FinishReason::Length));
    assert_eq!(events.len(), 3);
}

#[test]
fn thinking_is_reasoning_content_only_when_enabled() {
    let input = concat!(
        r#"{"message":{"thinking":"Let me think","content":""},"done":false}"#,
        "\n",
        r#"{"message":{"content":"4"},"done":true,"done_reason":"stop"}"#
    );
    let (off, s_off) = run(input, ctx(false, false));
    let (on, s_on) = run(input, ctx(false, true));
    assert_eq!(off.len(), 3);
    assert_eq!(on.len(), 4);
    let StreamEvent::Chunk(c) = &on[1] else { panic!() };
    assert_eq!(c.choices[0].delta.reasoning_content.as_deref(), Some("Let me think"));
    assert!(off.iter().all(
        |e| !matches!(e, StreamEvent::Chunk(c) if c.choices.iter().any(|ch| ch.delta.reasoning_content.is_some()))
    ));
    assert_eq!(s_off.streamed_bytes, s_on.streamed_bytes);
    assert_eq!(s_on.streamed_bytes, 13);
}

#[test]
fn invalid_json_line_is_an_upstream_error() {
    let (events, summary) = run("{\"message\":\n", ctx(false, false));
    assert_eq!(events.len(), 1);
    assert!(matches!(summary.outcome, StreamOutcome::UpstreamError(_)));
}

#[test]
fn oversized_line_is_an_upstream_error() {
    let mut d = StreamDecoder::new(ctx(false, false));
    d.framer = NdjsonFramer::new(16);
    let mut out = Vec::new();
    d.feed(b"{\"done\":false}\n{\"message\":{\"content\":\"0123456789\"}}", &mut out);
    assert!(d.is_terminal());
    assert!(matches!(out.last(), Some(StreamEvent::Error(_))));
}

#[test]
fn summary_reports_progress_mid_stream() {
    let mut d = StreamDecoder::new(ctx(false, false));
    let mut out = Vec::new();
    d.feed(b"{\"model\":\"m1\",\"message\":{\"content\":\"h\xC3\xA9\"}}\n", &mut out);
    let s = d.summary();
    assert_eq!(s.outcome, StreamOutcome::Open);
    assert_eq!(s.streamed_bytes, 3);
    assert!(!s.usage_is_final);
    assert_eq!(s.upstream_model.as_deref(), Some("m1"));
}

#[test]
fn streamed_logprobs_ride_on_content_chunks() {
    let (events, _) = run(
        r#"{"message":{"content":"Hi"},"logprobs":[{"token":"Hi","logprob":-0.5}],"done":false}
{"done":true}"#,
        ctx(false, false),
    );
    let StreamEvent::Chunk(c) = &events[1] else { panic!() };
    assert_eq!(
        c.choices[0].logprobs,
        Some(
            json!({"content": [{"token": "Hi", "logprob": -0.5, "bytes": null, "top_logprobs": []}], "refusal": null})
        )
    );
}
