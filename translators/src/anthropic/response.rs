//! Anthropic message → OpenAI `chat.completion` (wire-formats §3.4–§3.6), and the `GET /v1/models` page.
//!
//! - `id` is `chatcmpl-<msg id>`, `created` and `model` come from the caller's [`ResponseContext`].
//! - Text blocks are concatenated; `content` is `null` when there is no text but there are tool calls.
//! - `tool_use` blocks become `tool_calls` with `arguments` = compact JSON of `input`, in block order.
//! - Thinking text becomes `reasoning_content` only when `ctx.include_reasoning`; other blocks are skipped.
//! - In JSON mode (`response_format` → forced tool, see `request`), the forced tool's input is written
//!   into `content` in block order and `tool_use` finishes as `stop`.

use serde_json::Value;

use crate::error::TranslateError;
use crate::openai::{
    ChatResponse, Choice, CompletionTokensDetails, FinishReason, FunctionCall, PromptTokensDetails, ResponseMessage,
    ToolCall, Usage, OBJECT_COMPLETION,
};
use crate::rfc3339::parse_rfc3339;
use crate::stream::ResponseContext;

use super::wire::{self, Message, ModelList, ResponseBlock};

/// Decodes a non-streamed Anthropic `message` body.
///
/// Errors: `Json` when the body is not a message; `Protocol` when it is an Anthropic error object (a 200
/// carrying `{"type":"error"}`), which the gateway reports as 502.
pub fn decode_response(body: &[u8], ctx: &ResponseContext) -> Result<ChatResponse, TranslateError> {
    decode(body, ctx, None)
}

/// [`decode_response`] for a request encoded in JSON mode (`EncodedRequest::json_mode_tool` is
/// `Some(tool_name)`): the forced tool's input becomes the message `content` and `finish_reason` is `stop`.
pub fn decode_response_json_mode(
    body: &[u8],
    ctx: &ResponseContext,
    tool_name: &str,
) -> Result<ChatResponse, TranslateError> {
    decode(body, ctx, Some(tool_name))
}

/// An error object where a message was expected.
fn upstream_error_object(body: &[u8]) -> TranslateError {
    let mapped = super::map_stream_error(body);
    TranslateError::Protocol(format!("upstream returned an error object: {}", mapped.message).into())
}

fn decode(body: &[u8], ctx: &ResponseContext, json_tool: Option<&str>) -> Result<ChatResponse, TranslateError> {
    // One parse, straight into the message (a `Value` tree first cost a fifth of a translated
    // request's instructions, issue 17); only a body that is not a message is read again, to tell
    // an error object from malformed JSON.
    let message: Message = match serde_json::from_slice(body) {
        Ok(message) => message,
        Err(source) => {
            let value: Value =
                serde_json::from_slice(body).map_err(|source| TranslateError::Json { at: "message", source })?;
            if value.get("type").and_then(Value::as_str) == Some("error") {
                return Err(upstream_error_object(body));
            }
            return Err(TranslateError::Json { at: "message", source });
        }
    };
    if message.kind.as_deref() == Some("error") {
        return Err(upstream_error_object(body));
    }

    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    let mut json_tool_seen = false;
    for block in &message.content {
        match block {
            ResponseBlock::Text { text: t } => text.push_str(t),
            ResponseBlock::ToolUse { name, input, .. } if json_tool == Some(name.as_str()) => {
                json_tool_seen = true;
                text.push_str(&compact_input(input));
            }
            ResponseBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id: id.clone(),
                kind: "function".to_owned(),
                function: FunctionCall { name: name.clone(), arguments: compact_input(input) },
            }),
            ResponseBlock::Thinking { thinking } => reasoning.push_str(thinking),
            ResponseBlock::Unknown => {}
        }
    }

    let mut finish_reason = finish_reason(message.stop_reason.as_deref());
    if json_tool_seen && finish_reason == FinishReason::ToolCalls && tool_calls.is_empty() {
        finish_reason = FinishReason::Stop;
    }
    let refusal = if message.stop_reason.as_deref() == Some("refusal") {
        message.stop_details.as_ref().and_then(|d| d.explanation.clone())
    } else {
        None
    };
    let content = if text.is_empty() && !tool_calls.is_empty() { None } else { Some(text) };
    let id = if message.id.is_empty() { ctx.id.clone() } else { format!("chatcmpl-{}", message.id) };

    Ok(ChatResponse {
        id,
        object: OBJECT_COMPLETION.to_owned(),
        created: ctx.created,
        model: ctx.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".to_owned(),
                content,
                refusal,
                tool_calls: if tool_calls.is_empty() { None } else { Some(tool_calls) },
                reasoning_content: if ctx.include_reasoning && !reasoning.is_empty() { Some(reasoning) } else { None },
            },
            logprobs: None,
            finish_reason: Some(finish_reason),
        }],
        usage: Some(UsageCounts::from_wire(message.usage.as_ref()).to_openai()),
        system_fingerprint: None,
    })
}

/// `tool_use.input` as compact JSON text (`{}` when absent).
pub(super) fn compact_input(input: &Value) -> String {
    match input {
        Value::Null => "{}".to_owned(),
        other => other.to_string(),
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`. Never null: unknown or missing reasons are `stop`.
pub fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("end_turn" | "stop_sequence" | "pause_turn") => FinishReason::Stop,
        Some("max_tokens" | "model_context_window_exceeded") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        Some(_) | None => FinishReason::Stop,
    }
}

/// Raw Anthropic token counts (streams update them event by event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct UsageCounts {
    pub input: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
    pub output: u64,
    pub thinking: Option<u64>,
}

impl UsageCounts {
    pub fn from_wire(usage: Option<&wire::Usage>) -> Self {
        let mut counts = Self::default();
        if let Some(usage) = usage {
            counts.apply(usage);
        }
        counts
    }

    /// Overrides every count the upstream reported (`message_delta` counts are cumulative).
    pub fn apply(&mut self, usage: &wire::Usage) {
        if let Some(n) = usage.input_tokens {
            self.input = n;
        }
        if let Some(n) = usage.cache_creation_input_tokens {
            self.cache_creation = n;
        }
        if let Some(n) = usage.cache_read_input_tokens {
            self.cache_read = n;
        }
        if let Some(n) = usage.output_tokens {
            self.output = n;
        }
        if let Some(n) = usage.output_tokens_details.and_then(|d| d.thinking_tokens) {
            self.thinking = Some(n);
        }
    }

    /// OpenAI usage: prompt = input + cache creation + cache read; cached = cache read; cache writes =
    /// cache creation; reasoning = thinking tokens when reported, else 0.
    pub fn to_openai(self) -> Usage {
        let prompt = self.input.saturating_add(self.cache_creation).saturating_add(self.cache_read);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: self.output,
            total_tokens: prompt.saturating_add(self.output),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(self.cache_read),
                cache_write_tokens: Some(self.cache_creation),
                audio_tokens: None,
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: Some(self.thinking.unwrap_or(0)),
                ..CompletionTokensDetails::default()
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------------

/// One page of Anthropic's model listing. Fetch the next page with `?after_id=<last_id>` while `has_more`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPage {
    pub models: Vec<ModelInfo>,
    pub has_more: bool,
    pub last_id: Option<String>,
}

/// One Anthropic model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    /// Unix seconds from `created_at` (RFC 3339); 0 when absent or unparsable.
    pub created: u64,
    pub display_name: Option<String>,
    /// Maximum output tokens, when Anthropic reports it.
    pub max_tokens: Option<u64>,
}

/// Parses one page of `GET /v1/models`.
///
/// Errors: `Json` when the body is not a model list.
pub fn parse_models_page(body: &[u8]) -> Result<ModelPage, TranslateError> {
    let list: ModelList =
        serde_json::from_slice(body).map_err(|source| TranslateError::Json { at: "models", source })?;
    let last_id = list.last_id.or_else(|| list.data.last().map(|m| m.id.clone()));
    let models = list
        .data
        .into_iter()
        .map(|m| ModelInfo {
            created: m.created_at.as_deref().and_then(parse_rfc3339).unwrap_or(0),
            id: m.id,
            display_name: m.display_name,
            max_tokens: m.max_tokens,
        })
        .collect();
    Ok(ModelPage { models, has_more: list.has_more, last_id })
}

#[cfg(test)]
mod tests;
