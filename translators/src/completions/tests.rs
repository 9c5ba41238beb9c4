use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::framing::sse::SseFramer;
use crate::openai::{chunk, Choice, ResponseMessage};

fn decode(body: Value) -> Result<DecodedCompletion, TranslateError> {
    decode_request(body.to_string().as_bytes())
}

fn hub_response(content: &str, finish: FinishReason) -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-abc".into(),
        object: "chat.completion".into(),
        created: 42,
        model: "up".into(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content: Some(content.into()),
                refusal: None,
                tool_calls: None,
                reasoning_content: None,
            },
            logprobs: None,
            finish_reason: Some(finish),
        }],
        usage: Some(Usage { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12, ..Usage::default() }),
        system_fingerprint: None,
    }
}

#[test]
fn request_maps_to_one_user_message_with_default_max_tokens() {
    let dec = decode(json!({"model": "ollama/llama3", "prompt": "Once upon", "temperature": 0.5, "top_p": 0.9,
                            "stop": ["\n"], "seed": 3, "n": 1, "user": "u", "best_of": 1, "suffix": null}))
    .unwrap();
    assert_eq!(
        serde_json::to_value(&dec.chat).unwrap(),
        json!({"model": "ollama/llama3", "messages": [{"role": "user", "content": "Once upon"}], "max_tokens": 16,
               "temperature": 0.5, "top_p": 0.9, "n": 1, "stop": ["\n"], "seed": 3, "user": "u"})
    );
    assert!(!dec.echo);
    let dec = decode(json!({"model": "m", "prompt": ["only one"], "max_tokens": 100, "stream": true,
                            "stream_options": {"include_usage": true}}))
    .unwrap();
    assert_eq!(dec.chat.max_tokens, Some(100));
    assert_eq!(dec.prompt, "only one");
    assert!(dec.chat.is_stream() && dec.chat.wants_stream_usage() && dec.include_usage);
}

#[test]
fn refusals_name_their_param() {
    let cases = [
        (json!({"model": "m", "prompt": "x", "suffix": "}"}), "suffix", true),
        (json!({"model": "m", "prompt": "x", "logprobs": 2}), "logprobs", true),
        (json!({"model": "m", "prompt": "x", "best_of": 3}), "best_of", true),
        (json!({"model": "m", "prompt": ["a", "b"]}), "prompt", true),
        (json!({"model": "m", "prompt": [1, 2]}), "prompt", true),
        (json!({"model": "m", "prompt": [[1], [2]]}), "prompt", true),
        (json!({"model": "m", "prompt": []}), "prompt", false),
        (json!({"model": "m"}), "prompt", false),
        (json!({"prompt": "x"}), "model", false),
        (json!({"model": "m", "prompt": "x", "stop": 3}), "stop", false),
        (json!({"model": "m", "prompt": "x", "max_tokens": -2}), "max_tokens", false),
    ];
    for (body, param, unsupported) in cases {
        let e = decode(body).unwrap_err();
        assert_eq!(e.param(), Some(param), "{e}");
        assert_eq!(matches!(e, TranslateError::Unsupported { .. }), unsupported, "{e}");
    }
}

#[test]
fn response_golden_and_every_finish_reason() {
    let dec = decode(json!({"model": "ollama/llama3", "prompt": "Say"})).unwrap();
    let got = serde_json::to_value(encode_response(&hub_response(" hi", FinishReason::Stop), &dec)).unwrap();
    assert_eq!(
        got,
        json!({"id": "cmpl-abc", "object": "text_completion", "created": 42, "model": "ollama/llama3",
               "choices": [{"text": " hi", "index": 0, "logprobs": null, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})
    );
    for (hub, legacy) in [
        (FinishReason::Stop, "stop"),
        (FinishReason::Length, "length"),
        (FinishReason::ContentFilter, "content_filter"),
        (FinishReason::ToolCalls, "stop"),
        (FinishReason::FunctionCall, "stop"),
    ] {
        let got = encode_response(&hub_response("x", hub), &dec);
        assert_eq!(got.choices[0].finish_reason.as_deref(), Some(legacy));
    }
    let echo = decode(json!({"model": "m", "prompt": "Say", "echo": true})).unwrap();
    assert_eq!(encode_response(&hub_response(" hi", FinishReason::Stop), &echo).choices[0].text, "Say hi");
}

fn text_chunk(s: &str) -> StreamEvent {
    let mut c = chunk("chatcmpl-abc", 42, "m", false);
    c.choices[0].delta.content = Some(s.into());
    StreamEvent::Chunk(c)
}

fn finish_chunk(reason: FinishReason) -> StreamEvent {
    let mut c = chunk("chatcmpl-abc", 42, "m", false);
    c.choices[0].finish_reason = Some(reason);
    StreamEvent::Chunk(c)
}

fn usage_chunk() -> StreamEvent {
    let mut c = chunk("chatcmpl-abc", 42, "m", false);
    c.choices.clear();
    c.usage = Some(Some(Usage { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5, ..Usage::default() }));
    StreamEvent::Chunk(c)
}

/// Data payloads of the frames (`[DONE]` as the string "[DONE]").
fn frames(bytes: &[u8]) -> Vec<Value> {
    let mut framer = SseFramer::default();
    let mut events = Vec::new();
    framer.feed(bytes, &mut events).unwrap();
    assert!(!framer.has_pending());
    events
        .into_iter()
        .map(
            |e| {
                if &e.data[..] == b"[DONE]" {
                    Value::from("[DONE]")
                } else {
                    serde_json::from_slice(&e.data).unwrap()
                }
            },
        )
        .collect()
}

fn run(dec: &DecodedCompletion, events: &[StreamEvent], summary: Option<&StreamSummary>) -> Vec<Value> {
    let mut encoder = StreamEncoder::new(dec);
    let mut out = BytesMut::new();
    for e in events {
        encoder.push(std::slice::from_ref(e), &mut out);
    }
    encoder.finish(summary, &mut out);
    let len = out.len();
    encoder.finish(summary, &mut out);
    assert_eq!(out.len(), len, "finish twice writes nothing");
    assert!(encoder.is_done());
    frames(&out)
}

#[test]
fn stream_golden_with_usage_and_echo() {
    let dec = decode(
        json!({"model": "m", "prompt": "P", "echo": true, "stream": true, "stream_options": {"include_usage": true}}),
    )
    .unwrap();
    let got = run(
        &dec,
        &[text_chunk(""), text_chunk("a"), text_chunk("b"), finish_chunk(FinishReason::Length), usage_chunk()],
        None,
    );
    let chunk = |text: &str, finish: Value| {
        json!({"id": "cmpl-abc", "object": "text_completion", "created": 42, "model": "m",
               "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}], "usage": null})
    };
    assert_eq!(
        got,
        [
            chunk("P", Value::Null),
            chunk("a", Value::Null),
            chunk("b", Value::Null),
            chunk("", json!("length")),
            json!({"id": "cmpl-abc", "object": "text_completion", "created": 42, "model": "m", "choices": [],
                   "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn stream_without_usage_request_has_no_usage_key() {
    let dec = decode(json!({"model": "m", "prompt": "P", "stream": true})).unwrap();
    let got = run(&dec, &[text_chunk("a"), finish_chunk(FinishReason::Stop), usage_chunk()], None);
    assert_eq!(got.len(), 3);
    assert!(got[0].get("usage").is_none());
    assert_eq!(got[1]["choices"][0]["finish_reason"], "stop");
    assert_eq!(got[2], "[DONE]");
}

#[test]
fn usage_from_summary_when_the_hub_sent_none() {
    let dec = decode(json!({"model": "m", "prompt": "P", "stream": true, "stream_options": {"include_usage": true}}))
        .unwrap();
    let mut summary = StreamSummary::open();
    summary.outcome = StreamOutcome::Completed;
    summary.usage = Usage { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2, ..Usage::default() };
    let got = run(&dec, &[text_chunk("a")], Some(&summary));
    assert_eq!(got[got.len() - 2]["usage"]["total_tokens"], 2);
}

#[test]
fn errors_end_the_stream_without_done() {
    let dec = decode(json!({"model": "m", "prompt": "P", "stream": true})).unwrap();
    let got = run(
        &dec,
        &[text_chunk("a"), StreamEvent::Error(ErrorBody::new("boom", "server_error", None)), text_chunk("b")],
        None,
    );
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["error"]["message"], "boom");
    let mut summary = StreamSummary::open();
    summary.outcome = StreamOutcome::Truncated;
    let got = run(&dec, &[text_chunk("a")], Some(&summary));
    assert_eq!(got.last().unwrap()["error"]["message"], "upstream stream ended prematurely");
}

#[test]
fn outputs_validate_against_the_spec() {
    let Some(schemas) = crate::responses::spec_tests::schemas() else { return };
    let dec = decode(json!({"model": "m", "prompt": "P", "stream": true, "stream_options": {"include_usage": true}}))
        .unwrap();
    for finish in [FinishReason::Stop, FinishReason::Length, FinishReason::ContentFilter, FinishReason::ToolCalls] {
        let body = serde_json::to_value(encode_response(&hub_response("x", finish), &dec)).unwrap();
        let errors = crate::responses::spec_tests::validate_named(schemas, "CreateCompletionResponse", &body);
        assert!(errors.is_empty(), "{errors:#?}");
    }
    // Chunks that carry a choice have the body's shape (the usage chunk has `choices: []`).
    for frame in run(&dec, &[text_chunk("a"), finish_chunk(FinishReason::Stop)], None) {
        if frame.get("choices").is_some_and(|c| !c.as_array().unwrap().is_empty()) {
            let mut frame = frame.clone();
            // `usage: null` is allowed on chunks by OpenAI's stream contract but not by the body schema.
            frame.as_object_mut().unwrap().remove("usage");
            if frame["choices"][0]["finish_reason"].is_null() {
                continue; // non-final chunks have `finish_reason: null`, which the body schema does not allow
            }
            let errors = crate::responses::spec_tests::validate_named(schemas, "CreateCompletionResponse", &frame);
            assert!(errors.is_empty(), "{errors:#?}");
        }
    }
}

proptest! {
    #[test]
    fn any_text_split_gives_the_same_text(text in "[a-zé😀 ]{0,30}", cut in 0usize..31) {
        let dec = decode(json!({"model": "m", "prompt": "P", "stream": true})).unwrap();
        let chars: Vec<char> = text.chars().collect();
        let at = cut.min(chars.len());
        let (a, b): (String, String) = (chars[..at].iter().collect(), chars[at..].iter().collect());
        let joined = |frames: Vec<Value>| -> String {
            frames.iter().filter_map(|f| f["choices"][0]["text"].as_str().map(str::to_owned)).collect()
        };
        let whole = run(&dec, &[text_chunk(&text), finish_chunk(FinishReason::Stop)], None);
        let split = run(&dec, &[text_chunk(&a), text_chunk(&b), finish_chunk(FinishReason::Stop)], None);
        prop_assert_eq!(joined(whole.clone()), text.clone());
        prop_assert_eq!(joined(split.clone()), text);
        prop_assert_eq!(whole.last(), split.last());
    }
}

proptest! {
    #[test]
    fn decode_never_panics(body in "\\PC{0,120}") {
        let _ = decode_request(body.as_bytes());
    }
}
