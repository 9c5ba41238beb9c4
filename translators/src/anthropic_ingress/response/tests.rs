//! Non-stream encoding: block order, tool input parsing, every stop reason, usage with cache tokens, and
//! the round trip Anthropic message → egress `decode_response` → hub → this encoder.

use serde_json::{json, Value};

use super::*;
use crate::openai::{Choice, CompletionTokensDetails, FunctionCall, PromptTokensDetails, ResponseMessage, ToolCall};
use crate::stream::ResponseContext;

fn ctx(include_thinking: bool) -> EncodeContext {
    EncodeContext {
        message_id: String::new(),
        model: "claude-sonnet-4-5".to_owned(),
        include_thinking,
        input_tokens_hint: 0,
        id_seed: 9,
    }
}

fn response(message: ResponseMessage, finish: Option<FinishReason>, usage: Option<Usage>) -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-abc123".to_owned(),
        object: "chat.completion".to_owned(),
        created: 1,
        model: "gpt-4.1".to_owned(),
        choices: vec![Choice { index: 0, message, logprobs: None, finish_reason: finish }],
        usage,
        system_fingerprint: None,
    }
}

fn msg(content: Option<&str>, calls: &[(&str, &str, &str)]) -> ResponseMessage {
    ResponseMessage {
        role: "assistant".to_owned(),
        content: content.map(str::to_owned),
        refusal: None,
        tool_calls: if calls.is_empty() {
            None
        } else {
            Some(
                calls
                    .iter()
                    .map(|(id, name, args)| ToolCall {
                        id: (*id).to_owned(),
                        kind: "function".to_owned(),
                        function: FunctionCall { name: (*name).to_owned(), arguments: (*args).to_owned() },
                    })
                    .collect(),
            )
        },
        reasoning_content: None,
    }
}

fn encode(resp: &ChatResponse, ctx: &EncodeContext) -> Value {
    serde_json::from_slice(&encode_response(resp, ctx).unwrap()).unwrap()
}

#[test]
fn text_response_golden() {
    let usage = Usage {
        prompt_tokens: 3000,
        completion_tokens: 40,
        total_tokens: 3040,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(2048),
            cache_write_tokens: Some(100),
            audio_tokens: None,
        }),
        completion_tokens_details: Some(CompletionTokensDetails::default()),
    };
    let got = encode(&response(msg(Some("Hello!"), &[]), Some(FinishReason::Stop), Some(usage)), &ctx(false));
    assert_eq!(
        got,
        json!({"id": "msg_abc123", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
               "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "stop_sequence": null,
               "usage": {"input_tokens": 852, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2048, "output_tokens": 40}})
    );
}

#[test]
fn tool_calls_with_valid_empty_and_invalid_arguments() {
    let resp = response(
        msg(
            None,
            &[
                ("call_1", "a", "{\"x\":1}"),
                ("", "b", ""),
                ("functions.c:2", "c", "{\"trunc"),
                ("call_4", "d", "[1,2]"),
            ],
        ),
        Some(FinishReason::ToolCalls),
        None,
    );
    let got = encode(&resp, &ctx(false));
    let content = got["content"].as_array().unwrap();
    assert_eq!(content.len(), 4);
    assert_eq!(content[0], json!({"type": "tool_use", "id": "call_1", "name": "a", "input": {"x": 1}}));
    assert!(content[1]["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(content[1]["input"], json!({}));
    assert_eq!(content[2]["id"], crate::anthropic::sanitize_tool_id("functions.c:2"));
    assert_eq!(content[2]["input"], json!({RAW_ARGUMENTS_KEY: "{\"trunc"}));
    assert_eq!(content[3]["input"], json!({RAW_ARGUMENTS_KEY: "[1,2]"}));
    assert_eq!(got["stop_reason"], "tool_use");
    // No usage from the backend: zeros (and the hint) rather than missing keys.
    assert_eq!(
        got["usage"],
        json!({"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0})
    );
}

#[test]
fn thinking_first_only_when_asked() {
    let mut m = msg(Some("42"), &[]);
    m.reasoning_content = Some("compute".to_owned());
    let resp = response(m, Some(FinishReason::Stop), None);
    assert_eq!(
        encode(&resp, &ctx(true))["content"],
        json!([{"type": "thinking", "thinking": "compute", "signature": GATEWAY_THINKING_SIGNATURE}, {"type": "text", "text": "42"}])
    );
    assert_eq!(encode(&resp, &ctx(false))["content"], json!([{"type": "text", "text": "42"}]));
}

#[test]
fn refusal_text_and_every_stop_reason() {
    let mut m = msg(None, &[]);
    m.refusal = Some("I can't help with that.".to_owned());
    let got = encode(&response(m, Some(FinishReason::ContentFilter), None), &ctx(false));
    assert_eq!(got["content"], json!([{"type": "text", "text": "I can't help with that."}]));
    assert_eq!(got["stop_reason"], "refusal");

    for (finish, tools, expected) in [
        (Some(FinishReason::Stop), false, "end_turn"),
        (Some(FinishReason::Stop), true, "tool_use"),
        (Some(FinishReason::Length), false, "max_tokens"),
        (Some(FinishReason::ToolCalls), true, "tool_use"),
        (Some(FinishReason::ToolCalls), false, "end_turn"),
        (Some(FinishReason::FunctionCall), true, "tool_use"),
        (Some(FinishReason::ContentFilter), false, "refusal"),
        (None, false, "end_turn"),
    ] {
        let calls: &[(&str, &str, &str)] = if tools { &[("call_1", "f", "{}")] } else { &[] };
        let got = encode(&response(msg(Some("x"), calls), finish, None), &ctx(false));
        assert_eq!(got["stop_reason"], expected, "{finish:?} {tools}");
        assert_eq!(stop_reason(finish, tools), expected);
    }
}

#[test]
fn message_ids() {
    assert_eq!(message_id("chatcmpl-msg_01ABC"), "msg_01ABC");
    assert_eq!(message_id("chatcmpl-xyz"), "msg_xyz");
    assert_eq!(message_id("resp.1/2"), "msg_resp_1_2");
    assert_eq!(message_id(""), "msg_gateway");
    let mut c = ctx(false);
    c.message_id = "msg_fixed".to_owned();
    assert_eq!(encode(&response(msg(Some("x"), &[]), None, None), &c)["id"], "msg_fixed");
}

/// An Anthropic message decoded by the egress translator and encoded back keeps its meaning.
#[test]
fn round_trip_through_the_egress_decoder() {
    let original = json!({
        "id": "msg_01XF", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "plan", "signature": "sig"},
            {"type": "text", "text": "Let me check both."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Tokyo"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 412, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 2048, "output_tokens": 89}
    });
    let hub_ctx = ResponseContext {
        id: "chatcmpl-x".to_owned(),
        created: 1,
        model: "m".to_owned(),
        include_usage: false,
        include_reasoning: true,
        id_seed: 1,
    };
    let hub = crate::anthropic::decode_response(&serde_json::to_vec(&original).unwrap(), &hub_ctx).unwrap();
    let mut c = ctx(true);
    c.model = "claude-sonnet-4-5-20250929".to_owned();
    let mut back = encode(&hub, &c);
    // Only the signature differs: the hub does not carry Anthropic's.
    assert_eq!(back["content"][0]["signature"], GATEWAY_THINKING_SIGNATURE);
    back["content"][0]["signature"] = json!("sig");
    assert_eq!(back, original);
}
