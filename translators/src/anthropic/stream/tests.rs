//! Golden, invariant and split-invariance tests of the Anthropic stream decoder.
//!
//! Fixtures live in `tests/fixtures/anthropic/<case>/` (see its README). `UPDATE_GOLDEN=1` rewrites the
//! `expected.jsonl` files from the current output.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::openai::Usage;

// ---------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Fixture {
    name: String,
    dir: PathBuf,
    upstream: Vec<u8>,
    ctx: ResponseContext,
    json_mode_tool: Option<String>,
}

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/anthropic")
}

fn ctx(include_usage: bool, include_reasoning: bool) -> ResponseContext {
    ResponseContext {
        id: "chatcmpl-fallback".to_owned(),
        created: 1_760_000_000,
        model: "anthropic/claude-test".to_owned(),
        include_usage,
        include_reasoning,
        id_seed: 7,
    }
}

fn load_fixtures() -> Vec<Fixture> {
    let mut fixtures = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_root())
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("context.json").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let context: Value =
            serde_json::from_slice(&std::fs::read(dir.join("context.json")).unwrap()).expect("context.json");
        let upstream_path = match context.get("upstream").and_then(Value::as_str) {
            Some(rel) => fixtures_root().join(rel),
            None => dir.join("upstream.sse"),
        };
        let upstream = std::fs::read(&upstream_path).unwrap_or_else(|e| panic!("{}: {e}", upstream_path.display()));
        let flag = |key: &str| context.get(key).and_then(Value::as_bool).unwrap_or(false);
        fixtures.push(Fixture {
            name,
            dir,
            upstream,
            ctx: ctx(flag("include_usage"), flag("include_reasoning")),
            json_mode_tool: context.get("json_mode_tool").and_then(Value::as_str).map(str::to_owned),
        });
    }
    assert!(fixtures.len() >= 30, "expected the fixture set, found {}", fixtures.len());
    fixtures
}

fn fixtures() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(load_fixtures)
}

fn fixture(name: &str) -> &'static Fixture {
    fixtures().iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no fixture {name}"))
}

fn decoder_for(f: &Fixture) -> StreamDecoder {
    match &f.json_mode_tool {
        Some(tool) => StreamDecoder::with_json_mode(f.ctx.clone(), tool.clone()),
        None => StreamDecoder::new(f.ctx.clone()),
    }
}

/// Feeds `input` cut at `cuts` (sorted, clamped), then finishes.
fn run_cuts(mut dec: StreamDecoder, input: &[u8], cuts: &[usize]) -> (Vec<StreamEvent>, StreamSummary) {
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.min(input.len()).max(start);
        dec.feed(&input[start..cut], &mut out);
        start = cut;
    }
    dec.feed(&input[start..], &mut out);
    let summary = dec.finish(&mut out);
    // finish is idempotent.
    let mut again = Vec::new();
    assert_eq!(dec.finish(&mut again), summary);
    assert!(again.is_empty(), "second finish emitted {again:?}");
    assert!(dec.is_terminal());
    (out, summary)
}

fn run(f: &Fixture, cuts: &[usize]) -> (Vec<StreamEvent>, StreamSummary) {
    run_cuts(decoder_for(f), &f.upstream, cuts)
}

fn run_whole(f: &Fixture) -> (Vec<StreamEvent>, StreamSummary) {
    run(f, &[])
}

fn event_json(event: &StreamEvent) -> Value {
    match event {
        StreamEvent::Chunk(chunk) => serde_json::to_value(chunk).unwrap(),
        StreamEvent::Error(body) => json!({ "error": body }),
        StreamEvent::Raw(bytes) => serde_json::from_slice(bytes).unwrap(),
    }
}

fn outcome_name(outcome: &StreamOutcome) -> &'static str {
    match outcome {
        StreamOutcome::Open => "open",
        StreamOutcome::Completed => "completed",
        StreamOutcome::UpstreamError(_) => "upstream_error",
        StreamOutcome::Truncated => "truncated",
    }
}

/// The golden representation: one JSON value per event, then the summary (`done`: whether the gateway
/// writes `data: [DONE]`).
fn golden_lines(events: &[StreamEvent], summary: &StreamSummary) -> Vec<Value> {
    let mut lines: Vec<Value> = events.iter().map(event_json).collect();
    lines.push(json!({"summary": {
        "outcome": outcome_name(&summary.outcome),
        "done": summary.outcome == StreamOutcome::Completed,
        "finish_reason": summary.finish_reason,
        "usage": summary.usage,
        "usage_is_final": summary.usage_is_final,
        "streamed_bytes": summary.streamed_bytes,
        "upstream_model": summary.upstream_model,
    }}));
    lines
}

fn chunks(events: &[StreamEvent]) -> Vec<&ChatChunk> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Chunk(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn content_of(events: &[StreamEvent]) -> String {
    chunks(events).iter().flat_map(|c| &c.choices).filter_map(|c| c.delta.content.clone()).collect()
}

fn reasoning_of(events: &[StreamEvent]) -> String {
    chunks(events).iter().flat_map(|c| &c.choices).filter_map(|c| c.delta.reasoning_content.clone()).collect()
}

/// Per OpenAI tool index: (id, name, concatenated arguments), in order of first appearance.
fn tool_calls_of(events: &[StreamEvent]) -> Vec<(String, String, String)> {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for chunk in chunks(events) {
        for choice in &chunk.choices {
            for tc in choice.delta.tool_calls.iter().flatten() {
                let index = tc.index as usize;
                if let Some(id) = &tc.id {
                    assert_eq!(index, calls.len(), "tool indices must be 0,1,2… in order of first appearance");
                    let name = tc.function.as_ref().and_then(|f| f.name.clone()).expect("name in first fragment");
                    assert_eq!(tc.kind.as_deref(), Some("function"));
                    calls.push((id.clone(), name, String::new()));
                } else {
                    assert!(tc.kind.is_none() && tc.function.as_ref().is_none_or(|f| f.name.is_none()));
                }
                let call = calls.get_mut(index).expect("fragment of an announced tool call");
                if let Some(args) = tc.function.as_ref().and_then(|f| f.arguments.as_deref()) {
                    call.2.push_str(args);
                }
            }
        }
    }
    calls
}

fn finish_reasons(events: &[StreamEvent]) -> Vec<FinishReason> {
    chunks(events).iter().flat_map(|c| &c.choices).filter_map(|c| c.finish_reason).collect()
}

/// Invariants every translated stream must satisfy (wire-formats §1.6, §3.7, §7 items 31–43).
fn check_invariants(f: &Fixture, events: &[StreamEvent], summary: &StreamSummary) {
    let name = &f.name;
    let all_chunks = chunks(events);
    if let Some(first) = all_chunks.first() {
        assert_eq!(first.choices[0].delta.role.as_deref(), Some("assistant"), "{name}: first chunk has the role");
        assert_eq!(first.choices[0].delta.content.as_deref(), Some(""), "{name}: first chunk has content \"\"");
    }
    for (i, chunk) in all_chunks.iter().enumerate() {
        assert_eq!(chunk.id, all_chunks[0].id, "{name}: constant id");
        assert_eq!(chunk.created, f.ctx.created, "{name}: constant created");
        assert_eq!(chunk.model, f.ctx.model, "{name}: constant model");
        assert_eq!(chunk.object, "chat.completion.chunk");
        let json = serde_json::to_value(chunk).unwrap();
        if f.ctx.include_usage {
            assert!(json.as_object().unwrap().contains_key("usage"), "{name}: usage key on every chunk");
            if chunk.choices.is_empty() {
                assert!(chunk.usage.flatten().is_some(), "{name}: usage chunk carries totals");
                assert_eq!(i, all_chunks.len() - 1, "{name}: usage chunk is the last chunk");
            } else {
                assert_eq!(json["usage"], Value::Null, "{name}: usage null on content chunks");
            }
        } else {
            assert!(!json.as_object().unwrap().contains_key("usage"), "{name}: no usage key without include_usage");
            assert!(!chunk.choices.is_empty(), "{name}: no usage chunk without include_usage");
        }
        if i > 0 {
            assert!(chunk.choices.iter().all(|c| c.delta.role.is_none()), "{name}: role only in first chunk");
        }
    }
    let finishes = finish_reasons(events);
    assert!(finishes.len() <= 1, "{name}: at most one finish_reason, got {finishes:?}");
    let errors = events.iter().filter(|e| matches!(e, StreamEvent::Error(_))).count();
    match &summary.outcome {
        StreamOutcome::Completed => {
            assert_eq!(finishes.len(), 1, "{name}: completed streams have exactly one finish chunk");
            assert_eq!(errors, 0);
            assert_eq!(summary.finish_reason, Some(finishes[0]));
            // The finish chunk comes after every content chunk.
            let pos = events
                .iter()
                .position(|e| matches!(e, StreamEvent::Chunk(c) if c.choices.iter().any(|c| c.finish_reason.is_some())))
                .unwrap();
            assert!(events[pos + 1..].iter().all(|e| matches!(e, StreamEvent::Chunk(c) if c.choices.is_empty())));
            if f.ctx.include_usage {
                let last = all_chunks.last().unwrap();
                assert!(last.choices.is_empty(), "{name}: usage chunk closes a completed stream");
                assert_eq!(last.usage, Some(Some(summary.usage)));
            }
        }
        StreamOutcome::UpstreamError(body) => {
            assert_eq!(errors, 1, "{name}");
            assert_eq!(events.last(), Some(&StreamEvent::Error(body.clone())), "{name}: the error ends the stream");
            assert!(all_chunks.iter().all(|c| !c.choices.is_empty()), "{name}: no usage chunk after an error");
        }
        StreamOutcome::Truncated => {
            assert_eq!(errors, 1, "{name}");
            assert_eq!(events.last(), Some(&StreamEvent::Error(truncated_error())), "{name}");
            // A finish chunk only if the upstream's message_delta really arrived before the hang-up.
            assert!(finishes.is_empty() || summary.usage_is_final, "{name}: no fabricated finish chunk");
        }
        StreamOutcome::Open => panic!("{name}: finish() must leave a terminal outcome"),
    }
    // Tool calls are well formed; for completed tool_calls finishes, arguments parse as objects.
    let calls = tool_calls_of(events);
    if finishes == [FinishReason::ToolCalls] {
        for (id, _, args) in &calls {
            let parsed: Value =
                serde_json::from_str(args).unwrap_or_else(|e| panic!("{name}: {id} args {args:?}: {e}"));
            assert!(parsed.is_object(), "{name}");
        }
    }
}

#[test]
fn golden_fixtures() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for f in fixtures() {
        let (events, summary) = run_whole(f);
        check_invariants(f, &events, &summary);
        let lines = golden_lines(&events, &summary);
        let path = f.dir.join("expected.jsonl");
        if update {
            let text: String = lines.iter().map(|l| format!("{}\n", serde_json::to_string(l).unwrap())).collect();
            std::fs::write(&path, text).unwrap();
            continue;
        }
        let expected: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()))
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if expected != lines {
            failures.push(format!(
                "{}:\n  expected {}\n  got      {}",
                f.name,
                serde_json::to_string(&expected).unwrap(),
                serde_json::to_string(&lines).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "golden mismatches (UPDATE_GOLDEN=1 to accept):\n{}", failures.join("\n"));
}

#[test]
fn every_recorded_stream_is_a_golden_input() {
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/recorded/anthropic");
    for entry in std::fs::read_dir(&recorded).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(file.ends_with(".txt") || file.ends_with(".sse")) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            fixtures().iter().any(|f| f.upstream == bytes),
            "recorded stream {file} has no golden case in tests/fixtures/anthropic"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Semantics of individual cases (beyond the golden files)
// ---------------------------------------------------------------------------------------------------

#[test]
fn text_then_two_tools_uses_per_call_indices() {
    let (events, summary) = run_whole(fixture("text-two-tools"));
    assert_eq!(content_of(&events), "Let me check both.");
    let calls = tool_calls_of(&events);
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].0.as_str(), calls[0].1.as_str()), ("toolu_01A", "get_weather"));
    assert_eq!(serde_json::from_str::<Value>(&calls[0].2).unwrap(), json!({"city": "Paris"}));
    assert_eq!((calls[1].0.as_str(), calls[1].1.as_str()), ("toolu_01B", "get_weather"));
    assert_eq!(serde_json::from_str::<Value>(&calls[1].2).unwrap(), json!({"city": "Tokyo"}));
    assert_eq!(finish_reasons(&events), [FinishReason::ToolCalls]);
    assert_eq!(chunks(&events)[0].id, "chatcmpl-msg_01A");
    assert_eq!(summary.usage.prompt_tokens, 412 + 2048);
    assert_eq!(summary.usage.completion_tokens, 89, "output from message_delta, not summed with message_start");
    assert_eq!(summary.usage.total_tokens, 412 + 2048 + 89);
    assert_eq!(summary.usage.cached_tokens(), 2048);
    assert_eq!(summary.upstream_model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    // Text, then the empty first fragment's absence: "" partial_json is never forwarded.
    let fragments: Vec<&str> = chunks(&events)
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|c| c.delta.tool_calls.iter().flatten())
        .filter(|t| t.id.is_none())
        .filter_map(|t| t.function.as_ref()?.arguments.as_deref())
        .collect();
    assert_eq!(fragments, ["{\"city\": \"Par", "is\"}", "{\"city\": \"Tokyo\"}"]);
}

#[test]
fn recorded_tool_use_after_text_block_gets_index_zero() {
    let (events, _) = run_whole(fixture("recorded-tool-use-response"));
    let calls = tool_calls_of(&events);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, "get_weather");
    assert_eq!(serde_json::from_str::<Value>(&calls[0].2).unwrap(), json!({"location": "Paris"}));
    assert_eq!(finish_reasons(&events), [FinishReason::ToolCalls]);
}

#[test]
fn empty_tool_input_becomes_empty_object() {
    let (events, _) = run_whole(fixture("empty-tool-input"));
    let calls = tool_calls_of(&events);
    assert_eq!(calls.iter().map(|c| c.2.as_str()).collect::<Vec<_>>(), ["{}", "{}"]);
}

#[test]
fn partial_json_split_in_escapes_and_multibyte_reassembles() {
    let f = fixture("partial-json-escapes");
    let (events, _) = run_whole(f);
    assert_eq!(content_of(&events), "Café ✓ 😀");
    let calls = tool_calls_of(&events);
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].2).unwrap(),
        json!({"text": "say \"hi\" café naïve 😀", "n": 1})
    );
    // Cutting the bytes inside every multi-byte character gives the same result.
    for (pos, _) in f.upstream.iter().enumerate().filter(|(_, b)| **b >= 0x80) {
        assert_eq!(run(f, &[pos]), (events.clone(), run_whole(f).1), "cut at {pos}");
    }
}

#[test]
fn max_tokens_mid_tool_call_finishes_with_length_and_no_fabricated_braces() {
    let (events, summary) = run_whole(fixture("max-tokens-mid-tool"));
    let calls = tool_calls_of(&events);
    assert_eq!(calls[0].2, r#"{"filename": "a.txt", "lines": ["one", "tw"#);
    assert_eq!(finish_reasons(&events), [FinishReason::Length]);
    assert_eq!(summary.outcome, StreamOutcome::Completed);

    let (events, _) = run_whole(fixture("max-tokens-mid-tool-no-fragment"));
    assert_eq!(tool_calls_of(&events)[0].2, "", "no `{{}}` for a block that never stopped");

    let (events, _) = run_whole(fixture("recorded-incomplete-partial-json-response"));
    let calls = tool_calls_of(&events);
    assert!(calls[0].2.ends_with("\n\"Filing taxes"), "{:?}", calls[0].2);
    assert_eq!(finish_reasons(&events), [FinishReason::Length]);
}

#[test]
fn stop_reasons_map_and_are_never_null() {
    for (case, reason) in [
        ("recorded-basic-response", FinishReason::Stop),
        ("stop-sequence", FinishReason::Stop),
        ("refusal", FinishReason::ContentFilter),
        ("recorded-refusal-response", FinishReason::ContentFilter),
        ("recorded-stream-a-toolrefusal", FinishReason::ContentFilter),
        ("pause-turn", FinishReason::Stop),
        ("context-window-exceeded", FinishReason::Length),
        ("unknown-stop-reason", FinishReason::Stop),
        ("null-stop-reason", FinishReason::Stop),
        ("message-stop-without-delta", FinishReason::Stop),
    ] {
        let (events, summary) = run_whole(fixture(case));
        assert_eq!(finish_reasons(&events), [reason], "{case}");
        assert_eq!(summary.finish_reason, Some(reason), "{case}");
    }
}

#[test]
fn cache_usage_and_message_delta_overrides() {
    let (events, summary) = run_whole(fixture("cache-usage-override"));
    let expected = Usage {
        prompt_tokens: 120 + 1030,
        completion_tokens: 12,
        total_tokens: 120 + 1030 + 12,
        prompt_tokens_details: Some(crate::openai::PromptTokensDetails {
            cached_tokens: Some(1030),
            cache_write_tokens: Some(0),
            audio_tokens: None,
        }),
        completion_tokens_details: Some(crate::openai::CompletionTokensDetails {
            reasoning_tokens: Some(4),
            ..Default::default()
        }),
    };
    assert_eq!(summary.usage, expected);
    assert!(summary.usage_is_final);
    let last = (*chunks(&events).last().unwrap()).clone();
    assert!(last.choices.is_empty());
    assert_eq!(last.usage, Some(Some(expected)));
    // The finish chunk went out at the first message_delta; the second only updated usage.
    assert_eq!(finish_reasons(&events), [FinishReason::Stop]);
}

#[test]
fn pings_and_unknown_things_are_ignored() {
    let (events, _) = run_whole(fixture("pings-before-start"));
    assert_eq!(content_of(&events), "pong");
    let (events, _) = run_whole(fixture("unknown-events-blocks-deltas"));
    assert_eq!(content_of(&events), "See [1]");
    let calls = tool_calls_of(&events);
    assert_eq!(calls.len(), 1, "server tools are not client tool calls");
    assert_eq!((calls[0].0.as_str(), calls[0].2.as_str()), ("toolu_after", "{\"city\":\"Oslo\"}"));
    let (events, _) = run_whole(fixture("recorded-stream-a-toolrefusal"));
    assert!(tool_calls_of(&events).is_empty());
    assert_eq!(content_of(&events), "Here's a summary of this year's solar eclipses and how");
    let (events, _) = run_whole(fixture("recorded-compaction-response"));
    assert_eq!(content_of(&events), "Hello there!");
    let (events, _) = run_whole(fixture("recorded-fallback-response"));
    assert_eq!(content_of(&events), "Hello there!");
}

#[test]
fn thinking_only_with_include_reasoning_and_never_in_content() {
    let (with, with_summary) = run_whole(fixture("thinking-included"));
    let (without, without_summary) = run_whole(fixture("thinking-dropped"));
    assert_eq!(reasoning_of(&with), "Let me think about it.");
    assert_eq!(reasoning_of(&without), "");
    assert_eq!(content_of(&with), "Answer.");
    assert_eq!(content_of(&without), "Answer.");
    assert_eq!(with_summary.streamed_bytes, without_summary.streamed_bytes);
    assert_eq!(with_summary.streamed_bytes, ("Let me think about it.".len() + "Answer.".len()) as u64);
    let (recorded, _) = run_whole(fixture("recorded-stream-a-refusal"));
    assert!(reasoning_of(&recorded).starts_with("Simple educational question"));
    assert_eq!(content_of(&recorded), "Hi");
}

#[test]
fn error_event_after_content_ends_stream_without_finish() {
    let (events, summary) = run_whole(fixture("error-after-content"));
    assert_eq!(content_of(&events), "Partial ans");
    assert!(finish_reasons(&events).is_empty());
    let expected = ErrorBody::new("anthropic: Overloaded", "server_error", Some("overloaded"));
    assert_eq!(events.last(), Some(&StreamEvent::Error(expected.clone())));
    assert_eq!(summary.outcome, StreamOutcome::UpstreamError(expected));
    assert_eq!(summary.usage.prompt_tokens, 10, "usage so far is kept for the ledger");

    let (events, summary) = run_whole(fixture("error-before-start"));
    assert_eq!(events.len(), 1);
    assert!(matches!(summary.outcome, StreamOutcome::UpstreamError(ref b) if b.kind == "server_error"));
}

#[test]
fn eof_before_message_stop_is_truncated() {
    for case in ["eof-without-message-stop", "eof-mid-event", "eof-before-anything"] {
        let (events, summary) = run_whole(fixture(case));
        assert_eq!(summary.outcome, StreamOutcome::Truncated, "{case}");
        assert_eq!(events.last(), Some(&StreamEvent::Error(truncated_error())), "{case}");
    }
    let (events, summary) = run_whole(fixture("eof-without-message-stop"));
    // message_delta arrived, so its finish chunk went out; no usage chunk without message_stop.
    assert_eq!(finish_reasons(&events), [FinishReason::Stop]);
    assert!(chunks(&events).iter().all(|c| !c.choices.is_empty()));
    assert!(summary.usage_is_final);
}

#[test]
fn unreadable_event_is_an_upstream_error() {
    let (events, summary) = run_whole(fixture("unreadable-event"));
    assert_eq!(content_of(&events), "a");
    assert!(
        matches!(summary.outcome, StreamOutcome::UpstreamError(ref b) if b.code.as_deref() == Some("upstream_error"))
    );
}

#[test]
fn framing_variants_translate_like_plain_lf() {
    let reference = run_whole(fixture("framing-crlf"));
    assert_eq!(content_of(&reference.0), "Héllo");
    for case in ["framing-bare-cr", "framing-no-space-bom", "framing-trailing-whitespace", "framing-multiline-data"] {
        assert_eq!(run_whole(fixture(case)), reference, "{case}");
    }
}

#[test]
fn json_mode_streams_tool_input_as_content() {
    let (events, summary) = run_whole(fixture("json-mode"));
    assert_eq!(serde_json::from_str::<Value>(&content_of(&events)).unwrap(), json!({"name": "Ada", "age": 36}));
    assert!(tool_calls_of(&events).is_empty());
    assert_eq!(finish_reasons(&events), [FinishReason::Stop]);
    assert_eq!(summary.finish_reason, Some(FinishReason::Stop));
    let (events, _) = run_whole(fixture("json-mode-empty-input"));
    assert_eq!(content_of(&events), "{}");
}

#[test]
fn summary_of_an_abandoned_stream_has_usage_so_far() {
    let f = fixture("text-two-tools");
    let cut = f.upstream.windows(9).position(|w| w == b"toolu_01B").unwrap();
    let mut dec = decoder_for(f);
    let mut out = Vec::new();
    dec.feed(&f.upstream[..cut], &mut out);
    let summary = dec.summary();
    assert_eq!(summary.outcome, StreamOutcome::Open);
    assert!(!dec.is_terminal());
    assert_eq!(summary.usage.prompt_tokens, 412 + 2048);
    assert_eq!(summary.usage.completion_tokens, 1, "provisional output count from message_start");
    assert!(!summary.usage_is_final);
    let expected_bytes = "Let me check both.".len() + "{\"city\": \"Par".len() + "is\"}".len();
    assert_eq!(summary.streamed_bytes, expected_bytes as u64);
}

#[test]
fn feed_after_terminal_emits_nothing() {
    let f = fixture("recorded-basic-response");
    let mut dec = decoder_for(f);
    let mut out = Vec::new();
    dec.feed(&f.upstream, &mut out);
    dec.feed(b"\n\n", &mut out);
    assert!(dec.is_terminal());
    let n = out.len();
    dec.feed(b"event: ping\ndata: {\"type\":\"ping\"}\n\n", &mut out);
    dec.feed(b"data: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"x\"}}\n\n", &mut out);
    assert_eq!(out.len(), n);
    assert_eq!(dec.finish(&mut out).outcome, StreamOutcome::Completed);
    assert_eq!(out.len(), n);
}

#[test]
fn oversized_event_is_a_framing_error() {
    let mut dec = StreamDecoder::new(ctx(false, false));
    let mut out = Vec::new();
    dec.feed(b"event: content_block_delta\ndata: ", &mut out);
    let big = vec![b'a'; crate::framing::DEFAULT_MAX_EVENT_BYTES + 1];
    dec.feed(&big, &mut out);
    assert!(dec.is_terminal());
    assert!(matches!(out.last(), Some(StreamEvent::Error(b)) if b.code.as_deref() == Some("upstream_error")));
    assert!(matches!(dec.summary().outcome, StreamOutcome::UpstreamError(_)));
}

#[test]
fn without_message_id_the_context_id_is_used() {
    let input = b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"Hi\"}}\n\n\
data: {\"type\":\"message_stop\"}\n\n";
    let (events, summary) = run_cuts(StreamDecoder::new(ctx(false, false)), input, &[]);
    assert!(chunks(&events).iter().all(|c| c.id == "chatcmpl-fallback"));
    assert_eq!(content_of(&events), "Hi", "text in content_block_start is forwarded");
    assert_eq!(summary.outcome, StreamOutcome::Completed);
}

// ---------------------------------------------------------------------------------------------------
// Split invariance and robustness
// ---------------------------------------------------------------------------------------------------

#[test]
fn every_single_split_position_gives_the_same_events() {
    for f in fixtures() {
        let whole = run_whole(f);
        for pos in 0..=f.upstream.len() {
            assert_eq!(run(f, &[pos]), whole, "{} split at {pos}", f.name);
        }
    }
}

#[test]
fn one_byte_feeds_give_the_same_events() {
    for f in fixtures() {
        let cuts: Vec<usize> = (1..f.upstream.len()).collect();
        assert_eq!(run(f, &cuts), run_whole(f), "{}", f.name);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_splits_give_the_same_events(
        which in 0usize..1000,
        cuts in proptest::collection::vec(0usize..5000, 0..24),
    ) {
        let f = &fixtures()[which % fixtures().len()];
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (f.upstream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(run(f, &cuts), run_whole(f), "{}", f.name);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(0usize..2000, 0..8),
    ) {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let (_, summary) = run_cuts(StreamDecoder::new(ctx(true, true)), &bytes, &cuts);
        prop_assert!(summary.outcome != StreamOutcome::Open);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0usize..1000,
        edits in proptest::collection::vec((0usize..5000, any::<u8>()), 1..8),
        truncate in proptest::option::of(0usize..5000),
    ) {
        let f = &fixtures()[which % fixtures().len()];
        let mut bytes = f.upstream.clone();
        for (pos, byte) in edits {
            if !bytes.is_empty() {
                let pos = pos % bytes.len();
                bytes[pos] = byte;
            }
        }
        if let Some(len) = truncate {
            bytes.truncate(len % (bytes.len() + 1));
        }
        let (events, summary) = run_cuts(decoder_for(f), &bytes, &[bytes.len() / 2]);
        prop_assert!(summary.outcome != StreamOutcome::Open);
        // Whatever happens, the stream ends with either a completed outcome or exactly one error event.
        let errors = events.iter().filter(|e| matches!(e, StreamEvent::Error(_))).count();
        prop_assert_eq!(errors, usize::from(summary.outcome != StreamOutcome::Completed));
    }
}
