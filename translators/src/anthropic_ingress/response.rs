//! Hub [`ChatResponse`] → Anthropic `type: "message"` body (research note §1.5 item 4).
//!
//! - Block order: thinking (only with [`EncodeContext::include_thinking`]), then text, then one
//!   `tool_use` per tool call, in call order. Empty text is omitted, so an answer that is only tool
//!   calls has only `tool_use` blocks, as Anthropic's own answers do.
//! - `tool_use.input` is the parsed `arguments` when they are a JSON object; blank arguments are `{}`;
//!   any other JSON value or invalid JSON is wrapped as `{`[`RAW_ARGUMENTS_KEY`]`: "<text>"}` so that
//!   `input` is always an object (SDKs and Claude Code index into it) and nothing is lost.
//! - Tool ids are made to match `^[a-zA-Z0-9_-]+$` with [`crate::anthropic::sanitize_tool_id`]
//!   (deterministic, so the client's `tool_result` ids map back the same way); empty ids get a
//!   synthesized `toolu_…` id.
//! - `stop_reason`: see [`stop_reason`]. `usage`: see [`usage`].

use serde_json::{Map, Value};

use crate::anthropic::sanitize_tool_id;
use crate::error::TranslateError;
use crate::openai::{ChatResponse, FinishReason, Usage};

use super::wire::{self, ContentBlock};

/// Key under which tool arguments that are not a JSON object are kept in `tool_use.input`.
pub const RAW_ARGUMENTS_KEY: &str = "_raw_arguments";

/// Signature of thinking blocks made by the gateway from a non-Anthropic backend's reasoning. Anthropic
/// would reject it, so it tags the block: before a request that carries it goes to Anthropic, the
/// block must be removed (research note §1.3, thinking blocks).
pub const GATEWAY_THINKING_SIGNATURE: &str = "aigw-unsigned-thinking";

/// What the caller tells the encoders about the response being built.
#[derive(Debug, Clone)]
pub struct EncodeContext {
    /// `id` of the message (`msg_…`); when empty, [`message_id`] of the hub response/chunk id is used.
    pub message_id: String,
    /// The `model` echoed to the client: the name the client asked for.
    pub model: String,
    /// Emit reasoning as `thinking` blocks (the client enabled `thinking`); otherwise it is dropped.
    pub include_thinking: bool,
    /// Input-token count to report before (or without) the backend's own count, e.g. the
    /// [`super::count_tokens`] estimate; 0 when unknown.
    pub input_tokens_hint: u64,
    /// Seed for synthesized tool ids (random per request in production, fixed in tests).
    pub id_seed: u64,
}

/// `msg_…` from a hub id: `chatcmpl-msg_X` → `msg_X`, `chatcmpl-X` → `msg_X`, anything else prefixed;
/// characters outside `[a-zA-Z0-9_-]` become `_`. Empty input gives `msg_gateway`.
pub fn message_id(hub_id: &str) -> String {
    let rest = hub_id.strip_prefix("chatcmpl-").unwrap_or(hub_id);
    let rest = rest.strip_prefix("msg_").unwrap_or(rest);
    let rest = if rest.is_empty() { "gateway" } else { rest };
    let mut id = String::with_capacity(4 + rest.len());
    id.push_str("msg_");
    id.extend(rest.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }));
    id
}

/// A tool id valid for Anthropic: sanitized when present, synthesized (`toolu_…`) when empty.
pub fn tool_use_id(id: &str, seed: u64, counter: u32) -> String {
    if id.is_empty() {
        let call = crate::ids::tool_call_id(seed, counter);
        format!("toolu_{}", call.strip_prefix("call_").unwrap_or(&call))
    } else {
        sanitize_tool_id(id)
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`, exhaustively.
///
/// | finish_reason | stop_reason |
/// |---|---|
/// | `stop`, none | `tool_use` when the answer has tool calls (some backends say `stop` with calls), else `end_turn` |
/// | `length` | `max_tokens` |
/// | `tool_calls`, `function_call` | `tool_use`, or `end_turn` when no call was actually returned |
/// | `content_filter` | `refusal` |
///
/// `stop_sequence` is never produced: OpenAI-kind backends do not say whether a stop sequence matched.
pub fn stop_reason(finish: Option<FinishReason>, has_tool_use: bool) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ContentFilter) => "refusal",
        Some(FinishReason::Stop | FinishReason::ToolCalls | FinishReason::FunctionCall) | None => {
            if has_tool_use {
                "tool_use"
            } else {
                "end_turn"
            }
        }
    }
}

/// Hub usage → Anthropic usage. OpenAI's `prompt_tokens` includes cached and cache-write tokens;
/// Anthropic's `input_tokens` excludes both, so `input = prompt − cached − cache_write` (saturating).
pub fn usage(u: &Usage) -> wire::Usage {
    let cached = u.cached_tokens();
    let written = u.cache_write_tokens();
    wire::Usage {
        input_tokens: u.prompt_tokens.saturating_sub(cached).saturating_sub(written),
        cache_creation_input_tokens: written,
        cache_read_input_tokens: cached,
        output_tokens: u.completion_tokens,
    }
}

/// `arguments` text → an object for `tool_use.input` (see the module docs).
pub fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            let mut map = Map::new();
            map.insert(RAW_ARGUMENTS_KEY.to_owned(), Value::String(arguments.to_owned()));
            Value::Object(map)
        }
    }
}

/// Builds the Anthropic message for a hub response (its first choice).
pub fn encode_message(resp: &ChatResponse, ctx: &EncodeContext) -> wire::Message {
    let mut content = Vec::new();
    let choice = resp.choices.first();
    let message = choice.map(|c| &c.message);
    if ctx.include_thinking {
        if let Some(reasoning) = message.and_then(|m| m.reasoning_content.as_deref()).filter(|r| !r.is_empty()) {
            content.push(ContentBlock::Thinking {
                thinking: reasoning.to_owned(),
                signature: GATEWAY_THINKING_SIGNATURE.to_owned(),
            });
        }
    }
    let text = message.and_then(|m| m.content.as_deref().filter(|t| !t.is_empty()).or(m.refusal.as_deref()));
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        content.push(ContentBlock::Text { text: text.to_owned() });
    }
    let mut has_tool_use = false;
    for (i, call) in message.and_then(|m| m.tool_calls.as_deref()).unwrap_or_default().iter().enumerate() {
        has_tool_use = true;
        content.push(ContentBlock::ToolUse {
            id: tool_use_id(&call.id, ctx.id_seed, u32::try_from(i).unwrap_or(u32::MAX)),
            name: call.function.name.clone(),
            input: tool_input(&call.function.arguments),
        });
    }
    let usage = match &resp.usage {
        Some(u) => usage(u),
        None => wire::Usage { input_tokens: ctx.input_tokens_hint, ..wire::Usage::default() },
    };
    wire::Message {
        id: if ctx.message_id.is_empty() { message_id(&resp.id) } else { ctx.message_id.clone() },
        kind: "message",
        role: "assistant",
        model: ctx.model.clone(),
        content,
        stop_reason: Some(stop_reason(choice.and_then(|c| c.finish_reason), has_tool_use)),
        stop_sequence: None,
        usage,
    }
}

/// [`encode_message`] serialized as the JSON body of a `200` answer to `POST /v1/messages`.
///
/// Errors: `Protocol` only if serialization fails (it does not for these plain types).
pub fn encode_response(resp: &ChatResponse, ctx: &EncodeContext) -> Result<Vec<u8>, TranslateError> {
    serde_json::to_vec(&encode_message(resp, ctx))
        .map_err(|_| TranslateError::Protocol("failed to serialize the Anthropic message".into()))
}

#[cfg(test)]
mod tests;
