//! Unit tests, golden fixtures (`tests/fixtures/openai-passthrough/<case>/`) and split-invariance tests.
//!
//! A case holds the client's `request.json`, an optional `context.json` (`upstream_model`, default
//! `gpt-4o-mini`), the expected rewritten body `expected_upstream_request.json`, and for stream cases the
//! upstream `upstream.sse` with `expected.jsonl` (forwarded events as JSON, one per line) and
//! `expected_summary.json`. `UPDATE_GOLDEN=1` rewrites the expected files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::stream::truncated_error;

// ---------------------------------------------------------------------------------------------------
// parse_head

const MSG: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

fn head_of(members: &str) -> Result<RequestHead, TranslateError> {
    parse_head(format!("{{{MSG},{members}}}").as_bytes())
}

#[test]
fn head_reads_model_stream_and_usage() {
    let head = parse_head(br#"{"messages":[{"role":"user","content":"x"}],"model":"openai/gpt-4o","stream":true,"stream_options":{"include_usage":true,"x":1},"z":[1]}"#).unwrap();
    assert_eq!(
        head,
        RequestHead { model: "openai/gpt-4o".into(), stream: true, include_usage: true, ..Default::default() }
    );
    let head = parse_head(br#" {"model":"m","stream":null,"stream_options":null,"messages":[{}]} "#).unwrap();
    assert_eq!(head, RequestHead { model: "m".into(), stream: false, include_usage: false, ..Default::default() });
    let head = head_of(r#""model":"m\u00e9","stream":true,"stream_options":{}"#).unwrap();
    assert_eq!(head, RequestHead { model: "mé".into(), stream: true, include_usage: false, ..Default::default() });
}

/// Issue 11, item 3: a duplicated interpreted key is refused (400 naming it), escaped spellings included,
/// so the gateway and the upstream cannot read different values; other duplicates are left alone.
#[test]
fn head_refuses_duplicate_interpreted_keys() {
    for (members, param) in [
        (r#""model":"m","max_tokens":10,"max_tokens":500000"#, "max_tokens"),
        (r#""model":"m","max_tokens":10,"max\u005ftokens":500000"#, "max_tokens"),
        (r#""model":"m","max_completion_tokens":1,"max_completion_tokens":2"#, "max_completion_tokens"),
        (r#""model":"a","model":"b""#, "model"),
        (r#""model":"m","stream":false,"stream":true"#, "stream"),
        (r#""model":"m","n":1,"n":100"#, "n"),
        (r#""model":"m","messages":[{"role":"user","content":"x"}]"#, "messages"),
    ] {
        let err = head_of(members).unwrap_err();
        assert!(matches!(err, TranslateError::InvalidRequest { .. }), "{members}");
        assert_eq!(err.param(), Some(param), "{members}");
        assert!(err.to_string().contains("duplicate"), "{members}: {err}");
    }
    let head = head_of(r#""model":"m","user":"a","user":"b""#).unwrap();
    assert_eq!(head.model, "m", "keys the gateway does not interpret may repeat");
}

/// Issue 11, item 3: token counts are JSON integers as OpenAI reads them (its API refuses a decimal);
/// the value the gateway reserves is the one in the body, `max_completion_tokens` first.
#[test]
fn head_reads_token_counts_as_integers_only() {
    let head = head_of(r#""model":"m","max_tokens":500000,"n":3"#).unwrap();
    assert_eq!((head.max_output_tokens, head.n), (Some(500_000), Some(3)));
    let head = head_of(r#""model":"m","max_tokens":7,"max_completion_tokens":9"#).unwrap();
    assert_eq!(head.max_output_tokens, Some(9));
    let head = head_of(r#""model":"m","max_tokens":null,"n":null"#).unwrap();
    assert_eq!((head.max_output_tokens, head.n), (None, None));
    for (members, param) in [
        (r#""model":"m","max_tokens":500000.0"#, "max_tokens"),
        (r#""model":"m","max_tokens":5e5"#, "max_tokens"),
        (r#""model":"m","max_tokens":"500000""#, "max_tokens"),
        (r#""model":"m","max_tokens":-1"#, "max_tokens"),
        (r#""model":"m","max_completion_tokens":1.5"#, "max_completion_tokens"),
        (r#""model":"m","n":2.0"#, "n"),
    ] {
        assert_eq!(head_of(members).unwrap_err().param(), Some(param), "{members}");
    }
}

/// Issue 11, item 15: `messages` must be a non-empty array, whatever the provider.
#[test]
fn head_requires_a_non_empty_messages_array() {
    for body in [
        &br#"{"model":"m"}"#[..],
        br#"{"model":"m","messages":[]}"#,
        br#"{"model":"m","messages":[ ]}"#,
        br#"{"model":"m","messages":null}"#,
        br#"{"model":"m","messages":{}}"#,
        br#"{"model":"m","messages":"hi"}"#,
    ] {
        let err = parse_head(body).unwrap_err();
        assert_eq!(err.param(), Some("messages"), "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn head_errors_name_the_param() {
    let cases: [(&[u8], Option<&str>); 11] = [
        (b"", None),
        (b"{\"model\":", None),
        (b"[1,2]", None),
        (b"\"model\"", None),
        (br#"{"messages":[{}]}"#, Some("model")),
        (br#"{"model":null}"#, Some("model")),
        (br#"{"model":42}"#, Some("model")),
        (br#"{"model":""}"#, Some("model")),
        (br#"{"model":"m","stream":"yes","messages":[{}]}"#, Some("stream")),
        (br#"{"model":"m","stream_options":{"include_usage":true},"messages":[{}]}"#, Some("stream_options")),
        (
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":"yes"},"messages":[{}]}"#,
            Some("stream_options.include_usage"),
        ),
    ];
    for (body, param) in cases {
        let err = parse_head(body).unwrap_err();
        assert!(matches!(err, TranslateError::InvalidRequest { .. }), "{:?}", String::from_utf8_lossy(body));
        assert_eq!(err.param(), param, "{:?}", String::from_utf8_lossy(body));
    }
    assert!(parse_head(b"[1]").unwrap_err().to_string().contains("must be a JSON object"));
    assert_eq!(
        head_of(r#""model":"m","stream":false,"stream_options":{"include_usage":false}"#).unwrap_err().param(),
        Some("stream_options")
    );
    assert_eq!(
        head_of(r#""model":"m","stream":true,"stream_options":[]"#).unwrap_err().param(),
        Some("stream_options")
    );
}

// ---------------------------------------------------------------------------------------------------
// rewrite_request

/// The head of a body that may lack `messages` (rewriting does not look at them): parsed with a message
/// added, so the head is the one `parse_head` gives for the same body with messages.
fn head_for(body: &[u8]) -> RequestHead {
    let text = std::str::from_utf8(body).unwrap().trim_start();
    let with_messages = if text.contains("\"messages\"") {
        text.replace("\"messages\":[]", "\"messages\":[{}]")
    } else {
        format!("{{\"messages\":[{{}}],{}", &text[1..])
    };
    parse_head(with_messages.as_bytes()).unwrap()
}

fn rewrite(body: &str, upstream: &str) -> String {
    let head = head_for(body.as_bytes());
    let out = rewrite_request(Bytes::copy_from_slice(body.as_bytes()), &head, upstream).unwrap();
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn unchanged_body_is_returned_without_copying() {
    let body = Bytes::from_static(br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}"#);
    let head = head_for(&body);
    let out = rewrite_request(body.clone(), &head, "gpt-4o").unwrap();
    assert_eq!(out.as_ptr(), body.as_ptr());
    assert_eq!(out.len(), body.len());
    let body = Bytes::from_static(br#"{"model":"gpt-4o","messages":[]}"#);
    let out = rewrite_request(body.clone(), &head_for(&body), "gpt-4o").unwrap();
    assert_eq!(out.as_ptr(), body.as_ptr());
}

#[test]
fn model_is_renamed_and_everything_else_kept_byte_for_byte() {
    let out = rewrite(
        r#"{"seed":1152921504606846977,"model":"openai/gpt-4o","temperature":0.10000000000000000555,"x":{"a" : [1, 2]},"s":"\u00e9"}"#,
        "gpt-4o",
    );
    assert_eq!(
        out,
        r#"{"seed":1152921504606846977,"model":"gpt-4o","temperature":0.10000000000000000555,"x":{"a" : [1, 2]},"s":"\u00e9"}"#
    );
}

#[test]
fn stream_usage_is_forced_in_every_shape() {
    assert_eq!(
        rewrite(r#"{"model":"m","stream":true}"#, "m"),
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
    );
    assert_eq!(
        rewrite(r#"{"model":"m","stream":true,"stream_options":null}"#, "m"),
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
    );
    assert_eq!(
        rewrite(
            r#"{"stream_options":{"include_usage":false,"include_obfuscation":false},"model":"m","stream":true}"#,
            "up"
        ),
        r#"{"stream_options":{"include_obfuscation":false,"include_usage":true},"model":"up","stream":true}"#
    );
    assert_eq!(
        rewrite(r#"{"model":"m","stream":true,"stream_options":{}}"#, "m"),
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
    );
    // Not a stream: stream_options are not added.
    assert_eq!(rewrite(r#"{"model":"m","stream":false}"#, "u"), r#"{"model":"u","stream":false}"#);
}

#[test]
fn upstream_model_with_special_characters_is_escaped() {
    let out = rewrite(r#"{"model":"m"}"#, "org/model\"x");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["model"], json!("org/model\"x"));
}

// ---------------------------------------------------------------------------------------------------
// extract_usage, strip_usage

/// Issue 17: `completion_usage` is the shape check the gateway made (a derived struct requiring
/// `choices`) and `extract_usage`, in one reading, with the same verdict on every body.
#[test]
fn completion_usage_is_the_shape_check_and_extract_usage_in_one_pass() {
    #[derive(serde::Deserialize)]
    struct CompletionShape {
        #[serde(rename = "choices")]
        _choices: serde::de::IgnoredAny,
    }
    let bodies: &[&[u8]] = &[
        br#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        br#"{"choices":[{"index":0}],"usage":null}"#,
        br#"{"choices":[]}"#,
        br#"{"usage":{"prompt_tokens":3},"choices":[]}"#,
        br#"{"usage":{"prompt_tokens":3},"usage":{"prompt_tokens":4},"choices":[]}"#,
        br#"{"choices":[],"choices":[]}"#,
        br#"{"usage":{"prompt_tokens":3}}"#,
        br#"{"choices":[],"usage":{"prompt_tokens":"x"}}"#,
        br#"{"choices":[],"usage":{"prompt_tokens":3,"prompt_tokens_details":"weird"}}"#,
        br#"[[]]"#,
        br#"[]"#,
        br#"[1,2]"#,
        b"<html>",
        br#"{"choices":[]"#,
        b"",
    ];
    for body in bodies {
        let old = serde_json::from_slice::<CompletionShape>(body).ok().map(|_| extract_usage(body));
        assert_eq!(completion_usage(body).ok(), old, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn usage_is_extracted_from_completion_bodies() {
    let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,
        "prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":5}}}"#;
    let usage = extract_usage(body).unwrap();
    assert_eq!(usage.prompt_tokens, 1117);
    assert_eq!(usage.total_tokens, 1163);
    assert_eq!(usage.cached_tokens(), 1024);
    assert_eq!(usage.completion_tokens_details.unwrap().reasoning_tokens, Some(5));
    assert_eq!(extract_usage(br#"{"id":"x"}"#), None);
    assert_eq!(extract_usage(br#"{"usage":null}"#), None);
    assert_eq!(extract_usage(b"<html>"), None);
    // Missing total, malformed details: still metered.
    let usage =
        extract_usage(br#"{"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":"weird"}}"#)
            .unwrap();
    assert_eq!((usage.total_tokens, usage.prompt_tokens_details), (7, None));
}

#[test]
fn strip_usage_cuts_bytes_or_reserializes() {
    let strip = |s: &str| String::from_utf8(strip_usage(&Bytes::copy_from_slice(s.as_bytes())).to_vec()).unwrap();
    assert_eq!(strip(r#"{"id":"a","choices":[],"usage":null}"#), r#"{"id":"a","choices":[]}"#);
    assert_eq!(strip(r#"{"usage":null,"id":"a"}"#), r#"{"id":"a"}"#);
    assert_eq!(strip(r#"{"id":"a","usage":null,"obfuscation":"x"}"#), r#"{"id":"a","obfuscation":"x"}"#);
    assert_eq!(strip(r#"{"id": "a", "usage": null, "z": 1}"#), r#"{"id":"a","z":1}"#);
    assert_eq!(strip(r#"{"id":"a","usage":{"prompt_tokens":1},"c":[1, 2]}"#), r#"{"id":"a","c":[1, 2]}"#);
}

// ---------------------------------------------------------------------------------------------------
// Stream unit tests

fn run(input: &[u8], wants_usage: bool, cuts: &[usize]) -> (Vec<StreamEvent>, StreamSummary) {
    let mut s = StreamPassthrough::new(wants_usage);
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.clamp(start, input.len());
        s.feed(&input[start..cut], &mut out);
        start = cut;
    }
    s.feed(&input[start..], &mut out);
    let summary = s.finish(&mut out);
    (out, summary)
}

fn raw_strings(events: &[StreamEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            StreamEvent::Raw(b) => String::from_utf8(b.to_vec()).unwrap(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn payloads_are_forwarded_byte_for_byte_when_usage_was_requested() {
    let a = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hé"},"finish_reason":null}],"usage":null}"#;
    let b = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;
    let input = format!("data: {a}\n\ndata: {b}\n\ndata: [DONE]\n\n");
    let (events, summary) = run(input.as_bytes(), true, &[]);
    assert_eq!(raw_strings(&events), vec![a.to_owned(), b.to_owned()]);
    assert_eq!(summary.outcome, StreamOutcome::Completed);
    assert!(summary.usage_is_final);
    assert_eq!(summary.usage.total_tokens, 3);
    assert_eq!(summary.streamed_bytes, 3);
}

#[test]
fn usage_chunk_is_consumed_and_usage_keys_removed_when_not_requested() {
    let a = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}],"usage":null}"#;
    let b = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;
    let input = format!("data: {a}\n\ndata: {b}\n\ndata: [DONE]\n\n");
    let (events, summary) = run(input.as_bytes(), false, &[]);
    assert_eq!(
        raw_strings(&events),
        vec![r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}"#.to_owned()]
    );
    assert_eq!(summary.usage.prompt_tokens, 2);
    assert!(summary.usage_is_final);
    assert_eq!(summary.finish_reason, Some(FinishReason::Stop));
}

#[test]
fn continuous_usage_is_not_final_and_is_stripped() {
    let a = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;
    let (events, summary) = run(format!("data: {a}\n\n").as_bytes(), false, &[]);
    assert_eq!(
        raw_strings(&events)[0],
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#
    );
    assert!(!summary.usage_is_final);
    assert_eq!(summary.usage.completion_tokens, 1);
    assert_eq!(summary.outcome, StreamOutcome::Truncated);
}

#[test]
fn in_band_error_is_forwarded_and_terminal() {
    let err = r#"{"error":{"message":"boom","type":"server_error","code":500}}"#;
    let input = format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"x\"}}}}]}}\n\ndata: {err}\n\ndata: {{\"choices\":[]}}\n\n"
    );
    let mut s = StreamPassthrough::new(false);
    let mut out = Vec::new();
    s.feed(input.as_bytes(), &mut out);
    assert!(s.is_terminal());
    let summary = s.finish(&mut out);
    assert_eq!(raw_strings(&out)[1], err);
    assert_eq!(out.len(), 2);
    let StreamOutcome::UpstreamError(body) = summary.outcome else { panic!() };
    assert_eq!(
        body,
        ErrorBody { message: "boom".into(), kind: "server_error".into(), param: None, code: Some("500".into()) }
    );
}

#[test]
fn falsy_error_keys_are_not_errors() {
    let input = "data: {\"error\":null,\"choices\":[]}\n\ndata: {\"error\":false,\"choices\":[]}\n\ndata: [DONE]\n\n";
    let (events, summary) = run(input.as_bytes(), true, &[]);
    assert_eq!(events.len(), 2);
    assert_eq!(summary.outcome, StreamOutcome::Completed);
}

#[test]
fn unreadable_payloads_are_forwarded_and_string_errors_still_end_the_stream() {
    let input = "data: not json\n\ndata: {\"error\":\"quota\",\"choices\":5}\n\n";
    let (events, summary) = run(input.as_bytes(), false, &[]);
    assert_eq!(raw_strings(&events), vec!["not json".to_owned(), "{\"error\":\"quota\",\"choices\":5}".to_owned()]);
    assert_eq!(summary.outcome, StreamOutcome::UpstreamError(ErrorBody::new("quota", "server_error", None)));
}

#[test]
fn eof_without_done_is_truncated_once() {
    let mut s = StreamPassthrough::new(true);
    let mut out = Vec::new();
    s.feed(b"data: {\"choices\":[]}\n\n", &mut out);
    let summary = s.finish(&mut out);
    assert_eq!(summary.outcome, StreamOutcome::Truncated);
    assert_eq!(out.last(), Some(&StreamEvent::Error(truncated_error())));
    let n = out.len();
    s.finish(&mut out);
    s.feed(b"data: [DONE]\n\n", &mut out);
    assert_eq!(out.len(), n);
}

#[test]
fn azure_prompt_filter_chunk_is_forwarded_and_its_empty_model_ignored() {
    let input = concat!(
        r#"data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0}]}"#,
        "\n\n",
        r#"data: {"choices":[{"index":0,"delta":{"content":"x"}}],"model":"gpt-4o-2024-11-20","usage":null}"#,
        "\n\ndata: [DONE]\n\n"
    );
    let (events, summary) = run(input.as_bytes(), false, &[]);
    assert_eq!(events.len(), 2);
    assert!(raw_strings(&events)[0].contains("prompt_filter_results"));
    assert!(!raw_strings(&events)[1].contains("usage"));
    assert_eq!(summary.upstream_model.as_deref(), Some("gpt-4o-2024-11-20"));
}

#[test]
fn done_without_trailing_blank_line_completes() {
    let (events, summary) = run(b"data: [DONE]", true, &[]);
    assert!(events.is_empty());
    assert_eq!(summary.outcome, StreamOutcome::Completed);
}

#[test]
fn oversized_event_is_an_upstream_error() {
    let mut s = StreamPassthrough::new(true);
    s.framer = SseFramer::new(32);
    let mut out = Vec::new();
    s.feed(b"data: {\"choices\":[]}\n\ndata: 0123456789012345678901234567890123456789", &mut out);
    assert!(s.is_terminal());
    assert_eq!(out.len(), 2);
    assert!(matches!(out[1], StreamEvent::Error(_)));
}

#[test]
fn summary_counts_text_tool_arguments_refusal_and_reasoning() {
    let input = concat!(
        r#"data: {"model":"gpt-x","choices":[{"index":0,"delta":{"content":"ab","reasoning_content":"r","tool_calls":[{"index":0,"function":{"arguments":"{\"k\":"}}]}}]}"#,
        "\n\n",
        r#"data: {"model":"other","choices":[{"index":0,"delta":{"refusal":"no\u00e9","reasoning":"rr"}}]}"#,
        "\n\n"
    );
    let mut s = StreamPassthrough::new(true);
    let mut out = Vec::new();
    s.feed(input.as_bytes(), &mut out);
    let summary = s.summary();
    assert_eq!(summary.streamed_bytes, 2 + 1 + 5 + 4 + 2);
    assert_eq!(summary.upstream_model.as_deref(), Some("gpt-x"));
    assert_eq!(summary.outcome, StreamOutcome::Open);
}

// ---------------------------------------------------------------------------------------------------
// map_error, parse_models

#[test]
fn client_errors_keep_status_and_body() {
    for status in [400, 404, 409, 413, 422, 429] {
        let m = map_error(
            status,
            br#"{"error":{"message":"Use 'max_completion_tokens' instead.","type":"invalid_request_error","param":"max_tokens","code":"unsupported_parameter"}}"#,
        );
        assert_eq!(m.status, status);
        assert_eq!(
            m.body,
            ErrorBody {
                message: "Use 'max_completion_tokens' instead.".into(),
                kind: "invalid_request_error".into(),
                param: Some("max_tokens".into()),
                code: Some("unsupported_parameter".into()),
            }
        );
    }
}

#[test]
fn missing_param_and_code_become_null() {
    let m = map_error(429, br#"{"error":{"message":"Rate limit reached","type":"requests"}}"#);
    assert_eq!(m.status, 429);
    assert_eq!(
        m.body,
        ErrorBody { message: "Rate limit reached".into(), kind: "requests".into(), param: None, code: None }
    );
    let m = map_error(400, br#"{"error":{"message":"bad"}}"#);
    assert_eq!(m.body.kind, "invalid_request_error");
}

#[test]
fn auth_errors_become_502_without_the_upstream_message() {
    for status in [401, 403] {
        let m = map_error(status, br#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz","type":"invalid_request_error","code":"invalid_api_key"}}"#);
        assert_eq!(m.status, 502);
        assert_eq!(m.body.code.as_deref(), Some("upstream_auth_failed"));
        assert!(!m.body.message.contains("sk-"));
        assert!(m.body.message.starts_with("upstream: "));
    }
}

#[test]
fn server_errors_follow_the_status_policy() {
    let body = br#"{"error":{"message":"The server is overloaded","type":"server_error","param":null,"code":null}}"#;
    for (status, expected) in [(500, 502), (502, 502), (503, 503), (504, 504), (520, 502), (402, 502), (418, 502)] {
        let m = map_error(status, body);
        assert_eq!(m.status, expected, "{status}");
        assert_eq!(m.body.message, "The server is overloaded", "{status}");
    }
}

#[test]
fn non_openai_bodies_get_gateway_messages() {
    for (status, body, expected_status, message) in [
        (502, &b"<html><body>Bad gateway</body></html>"[..], 502, "upstream: HTTP 502 with a non-JSON body"),
        (500, b"", 502, "upstream: HTTP 500 with an empty body"),
        (503, b"upstream connect error", 502, "upstream: HTTP 503 with a non-JSON body"),
        (400, br#"{"error":"bad things"}"#, 400, "upstream: bad things"),
        (422, br#"{"detail":"Field required"}"#, 422, "upstream: Field required"),
        (500, br#"{"message":"oops"}"#, 502, "upstream: oops"),
        (500, br#"{"foo":1}"#, 502, "upstream: HTTP 500 with an unrecognized error body"),
    ] {
        let m = map_error(status, body);
        assert_eq!(m.status, expected_status, "{message}");
        assert_eq!(m.body.message, message);
        if expected_status == 502 {
            assert_eq!(m.body.code.as_deref(), Some("upstream_error"));
            assert_eq!(m.body.kind, "server_error");
        }
    }
}

#[test]
fn models_are_parsed() {
    let body = br#"{"object":"list","data":[
        {"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},
        {"id":"meta-llama/Llama-3.1-8B","object":"model","created":1.7e9,"owned_by":"vllm","max_model_len":8192},
        {"id":"no-created"},
        {"object":"model"}
    ]}"#;
    assert_eq!(
        parse_models(body).unwrap(),
        vec![
            ModelInfo { id: "gpt-4o-mini".into(), created: 1_721_172_741, owned_by: "system".into() },
            ModelInfo { id: "meta-llama/Llama-3.1-8B".into(), created: 1_700_000_000, owned_by: "vllm".into() },
            ModelInfo { id: "no-created".into(), created: 0, owned_by: String::new() },
        ]
    );
    assert_eq!(parse_models(br#"[{"id":"a","created":1}]"#).unwrap().len(), 1);
    assert!(matches!(parse_models(br#"{"object":"list"}"#), Err(TranslateError::Protocol(_))));
    assert!(matches!(parse_models(b"<html>"), Err(TranslateError::Json { .. })));
}

// ---------------------------------------------------------------------------------------------------
// Golden fixtures

struct Case {
    name: String,
    dir: PathBuf,
    request: Bytes,
    head: RequestHead,
    upstream_model: String,
    stream: Option<Vec<u8>>,
}

fn load_cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/openai-passthrough");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let request = Bytes::from(std::fs::read(dir.join("request.json")).unwrap());
            let head = parse_head(&request).unwrap();
            let context: Value = std::fs::read(dir.join("context.json"))
                .map(|b| serde_json::from_slice(&b).unwrap())
                .unwrap_or_else(|_| json!({}));
            let upstream_model = context["upstream_model"].as_str().unwrap_or("gpt-4o-mini").to_owned();
            let stream = std::fs::read(dir.join("upstream.sse")).ok();
            Case {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                dir,
                request,
                head,
                upstream_model,
                stream,
            }
        })
        .collect()
}

fn stream_cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| load_cases().into_iter().filter(|c| c.stream.is_some()).collect())
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

fn golden_json(path: &Path, actual: &Value) {
    if updating() && path.file_name().is_some_and(|n| n != "expected_upstream_request.json") {
        std::fs::write(path, serde_json::to_string_pretty(actual).unwrap() + "\n").unwrap();
        return;
    }
    let text = std::fs::read(path).unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(actual, &serde_json::from_slice::<Value>(&text).unwrap(), "{}", path.display());
}

fn golden_jsonl(path: &Path, actual: &[Value]) {
    if updating() {
        let text: String = actual.iter().map(|v| serde_json::to_string(v).unwrap() + "\n").collect();
        std::fs::write(path, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1", path.display()));
    let expected: Vec<Value> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(actual.len(), expected.len(), "{}: event count", path.display());
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "{} line {}", path.display(), i + 1);
    }
}

fn event_json(event: &StreamEvent) -> Value {
    match event {
        StreamEvent::Chunk(c) => serde_json::to_value(c).unwrap(),
        StreamEvent::Raw(raw) => serde_json::from_slice(raw).unwrap(),
        StreamEvent::Error(body) => json!({"error": body}),
    }
}

fn summary_json(s: &StreamSummary) -> Value {
    let outcome = match &s.outcome {
        StreamOutcome::Open => json!("open"),
        StreamOutcome::Completed => json!("completed"),
        StreamOutcome::Truncated => json!("truncated"),
        StreamOutcome::UpstreamError(body) => json!({"upstream_error": body}),
    };
    json!({
        "outcome": outcome,
        "usage": s.usage,
        "usage_is_final": s.usage_is_final,
        "streamed_bytes": s.streamed_bytes,
        "finish_reason": s.finish_reason,
        "upstream_model": s.upstream_model,
    })
}

/// The `data:` payloads of an SSE fixture, in order (via the framer, which has its own tests).
fn input_payloads(input: &[u8]) -> Vec<Bytes> {
    let mut framer = SseFramer::default();
    let mut events = Vec::new();
    framer.feed(input, &mut events).unwrap();
    framer.finish(&mut events);
    events.into_iter().map(|e| trim_bytes(e.data)).filter(|d| !d.is_empty() && !d.starts_with(b"[DONE]")).collect()
}

#[test]
fn golden_fixtures() {
    let cases = load_cases();
    assert!(cases.len() >= 10, "fixtures missing: {}", cases.len());
    for case in &cases {
        let out = rewrite_request(case.request.clone(), &case.head, &case.upstream_model).unwrap();
        // Written as the exact bytes sent upstream (so large integers are visible), compared as JSON.
        let path = case.dir.join("expected_upstream_request.json");
        if updating() {
            std::fs::write(&path, [&out[..], b"\n"].concat()).unwrap();
        }
        golden_json(&path, &serde_json::from_slice(&out).unwrap());

        // Byte-for-value: every member other than `model`/`stream_options` has the same raw text.
        let before: RawObject = serde_json::from_slice(&case.request).unwrap();
        let after: RawObject = serde_json::from_slice(&out).unwrap();
        let strip = |o: &RawObject| -> Vec<(String, String)> {
            o.0.iter()
                .filter(|(k, _)| k != "model" && k != "stream_options")
                .map(|(k, v)| (k.to_string(), v.get().to_owned()))
                .collect()
        };
        assert_eq!(strip(&before), strip(&after), "{}", case.name);
        let after_value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(after_value["model"], json!(case.upstream_model), "{}", case.name);
        if case.head.stream {
            assert_eq!(after_value["stream_options"]["include_usage"], json!(true), "{}", case.name);
        }
        let unchanged = case.head.model == case.upstream_model && (!case.head.stream || case.head.include_usage);
        assert_eq!(out.as_ptr() == case.request.as_ptr(), unchanged, "{}: zero-copy", case.name);

        if let Some(input) = &case.stream {
            let (events, summary) = run(input, case.head.include_usage, &[]);
            golden_jsonl(&case.dir.join("expected.jsonl"), &events.iter().map(event_json).collect::<Vec<_>>());
            golden_json(&case.dir.join("expected_summary.json"), &summary_json(&summary));
        }
    }
}

/// Forwarded payloads are the upstream's bytes (usage requested) or the upstream's JSON minus `usage`.
#[test]
fn forwarded_payloads_match_the_upstream() {
    for case in stream_cases() {
        let input = case.stream.as_deref().unwrap();
        let (events, summary) = run(input, case.head.include_usage, &[]);
        let raws: Vec<&Bytes> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Raw(b) => Some(b),
                _ => None,
            })
            .collect();
        let payloads = input_payloads(input);
        if case.head.include_usage {
            assert!(raws.len() <= payloads.len(), "{}", case.name);
            if summary.outcome == StreamOutcome::Completed {
                assert_eq!(raws.len(), payloads.len(), "{}", case.name);
            }
            for (raw, payload) in raws.iter().zip(&payloads) {
                assert_eq!(*raw, payload, "{}: bytes changed", case.name);
            }
        } else {
            let mut expected = Vec::new();
            for payload in &payloads {
                let mut v: Value = serde_json::from_slice(payload).unwrap();
                let usage_chunk = v["choices"] == json!([]) && !v["usage"].is_null();
                if usage_chunk {
                    continue;
                }
                if let Some(o) = v.as_object_mut() {
                    o.remove("usage");
                }
                expected.push(v);
            }
            let actual: Vec<Value> = raws.iter().map(|r| serde_json::from_slice(r).unwrap()).collect();
            assert_eq!(actual, expected[..actual.len()], "{}", case.name);
            for v in &actual {
                assert!(v.get("usage").is_none(), "{}: usage leaked", case.name);
            }
        }
    }
}

#[test]
fn every_single_split_position_gives_the_same_events() {
    for case in stream_cases() {
        let input = case.stream.as_deref().unwrap();
        let whole = run(input, case.head.include_usage, &[]);
        for cut in 0..=input.len() {
            assert_eq!(run(input, case.head.include_usage, &[cut]), whole, "{} cut at {cut}", case.name);
        }
    }
}

#[test]
fn one_byte_at_a_time_gives_the_same_events() {
    for case in stream_cases() {
        let input = case.stream.as_deref().unwrap();
        let cuts: Vec<usize> = (1..input.len()).collect();
        assert_eq!(
            run(input, case.head.include_usage, &cuts),
            run(input, case.head.include_usage, &[]),
            "{}",
            case.name
        );
    }
}

proptest! {
    #[test]
    fn random_splits_give_the_same_events(cuts in proptest::collection::vec(0usize..8192, 0..24)) {
        for case in stream_cases() {
            let input = case.stream.as_deref().unwrap();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(run(input, case.head.include_usage, &cuts), run(input, case.head.include_usage, &[]), "{}", case.name);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024), cut in 0usize..1024, wants in any::<bool>()) {
        let (_, summary) = run(&bytes, wants, &[cut]);
        prop_assert!(summary.outcome != StreamOutcome::Open);
    }

    #[test]
    fn mutated_fixtures_never_panic(case_ix in 0usize..64, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let cases = stream_cases();
        let case = &cases[case_ix % cases.len()];
        let mut input = case.stream.clone().unwrap();
        for (pos, byte) in flips {
            let len = input.len();
            input[pos % len] = byte;
        }
        let (_, summary) = run(&input, case.head.include_usage, &[input.len() / 3]);
        prop_assert!(summary.outcome != StreamOutcome::Open);
    }

    #[test]
    fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), status in 100u16..600) {
        let _ = map_error(status, &bytes);
        let _ = parse_models(&bytes);
        let _ = extract_usage(&bytes);
        if let Ok(head) = parse_head(&bytes) {
            let out = rewrite_request(Bytes::from(bytes.clone()), &head, "up").unwrap();
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
        }
    }

    #[test]
    fn rewrite_keeps_arbitrary_members(seed in any::<i64>(), big in any::<u64>(), text in ".{0,20}", stream in any::<bool>()) {
        let body = json!({"model": "a/b", "seed": seed, "n": big, "t": text, "stream": stream}).to_string();
        let head = head_for(body.as_bytes());
        let out = rewrite_request(Bytes::from(body), &head, "b").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&v["seed"], &json!(seed));
        prop_assert_eq!(&v["n"], &json!(big));
        prop_assert_eq!(&v["t"], &json!(text));
        prop_assert_eq!(&v["model"], &json!("b"));
        prop_assert_eq!(v.get("stream_options").is_some(), stream);
    }
}
