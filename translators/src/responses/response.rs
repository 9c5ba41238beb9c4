//! Hub `chat.completion` → Responses `response` object.
//!
//! - Output order: a `reasoning` item (when the hub message carries reasoning), a `message` item (text
//!   and/or refusal; omitted when the answer is only tool calls), then one `function_call` (or
//!   `custom_tool_call`, for `custom` tools) item per hub tool call, in order.
//! - Status: `finish_reason` `length` → `incomplete` with `max_output_tokens`, `content_filter` →
//!   `incomplete` with `content_filter`, anything else → `completed` (with `completed_at`).
//! - Only the first choice is used: the Responses API has no `n`.

use serde_json::Value;

use super::request::{Echo, CUSTOM_TOOL_INPUT};
use super::wire::{
    ContentPart, CustomToolCall, FunctionToolCall, IncompleteDetails, InputTokensDetails, ItemStatus, OutputItem,
    OutputMessage, OutputTokensDetails, ReasoningItem, Response, ResponseUsage, Status, SummaryText, OBJECT_RESPONSE,
};
use super::{prefixed_id, EncodeContext};
use crate::openai::{ChatResponse, CompletionTokensDetails, FinishReason, PromptTokensDetails, Usage};

/// Encodes a non-streamed hub answer as a Responses `response` object.
pub fn encode_response(resp: &ChatResponse, echo: &Echo, ctx: &EncodeContext) -> Response {
    let choice = resp.choices.first();
    let finish = choice.and_then(|c| c.finish_reason);
    let (status, incomplete) = status_for(finish);
    let item_status = if status == Status::Completed { ItemStatus::Completed } else { ItemStatus::Incomplete };
    let mut output = Vec::new();
    if let Some(message) = choice.map(|c| &c.message) {
        if let Some(reasoning) = message.reasoning_content.as_ref().filter(|r| !r.is_empty()) {
            output.push(reasoning_item(echo, ctx, output.len(), reasoning.clone(), ItemStatus::Completed));
        }
        let calls = message.tool_calls.as_deref().unwrap_or_default();
        let mut content = Vec::new();
        if let Some(text) = message.content.as_ref().filter(|t| !t.is_empty()) {
            content.push(ContentPart::output_text(text.clone()));
        }
        if let Some(refusal) = message.refusal.as_ref().filter(|r| !r.is_empty()) {
            content.push(ContentPart::Refusal { refusal: refusal.clone() });
        }
        if content.is_empty() && calls.is_empty() {
            // An empty answer is one empty message (the stream encoder does the same).
            content.push(ContentPart::output_text(String::new()));
        }
        if !content.is_empty() {
            output.push(OutputItem::Message(OutputMessage {
                id: prefixed_id("msg", ctx.id_seed, output.len() as u32),
                status: item_status,
                role: "assistant".to_owned(),
                content,
            }));
        }
        for (k, call) in calls.iter().enumerate() {
            let call_id =
                if call.id.is_empty() { crate::ids::tool_call_id(ctx.id_seed, k as u32) } else { call.id.clone() };
            output.push(tool_call_item(
                echo,
                ctx,
                output.len(),
                call_id,
                call.function.name.clone(),
                call.function.arguments.clone(),
                item_status,
            ));
        }
    }
    let mut response = skeleton(echo, ctx, status);
    response.incomplete_details = incomplete;
    response.output = output;
    response.usage = Some(resp.usage.as_ref().map(response_usage).unwrap_or_default());
    response
}

/// `finish_reason` → (status, incomplete_details).
pub(super) fn status_for(finish: Option<FinishReason>) -> (Status, Option<IncompleteDetails>) {
    match finish {
        Some(FinishReason::Length) => {
            (Status::Incomplete, Some(IncompleteDetails { reason: "max_output_tokens".to_owned() }))
        }
        Some(FinishReason::ContentFilter) => {
            (Status::Incomplete, Some(IncompleteDetails { reason: "content_filter".to_owned() }))
        }
        Some(FinishReason::Stop | FinishReason::ToolCalls | FinishReason::FunctionCall) | None => {
            (Status::Completed, None)
        }
    }
}

/// A `response` object with the echoed fields, no output and no usage.
pub(super) fn skeleton(echo: &Echo, ctx: &EncodeContext, status: Status) -> Response {
    Response {
        id: ctx.response_id.clone(),
        object: OBJECT_RESPONSE.to_owned(),
        created_at: ctx.created_at,
        status,
        completed_at: (status == Status::Completed).then_some(ctx.completed_at),
        error: None,
        incomplete_details: None,
        instructions: echo.instructions.clone(),
        max_output_tokens: echo.max_output_tokens,
        max_tool_calls: echo.max_tool_calls,
        model: echo.model.clone(),
        output: Vec::new(),
        parallel_tool_calls: echo.parallel_tool_calls,
        previous_response_id: None,
        reasoning: echo.reasoning.clone(),
        store: echo.store,
        temperature: echo.temperature,
        text: echo.text.clone(),
        tool_choice: echo.tool_choice.clone(),
        tools: echo.tools.clone(),
        top_logprobs: echo.top_logprobs,
        top_p: echo.top_p,
        truncation: echo.truncation.clone(),
        usage: None,
        user: echo.user.clone(),
        metadata: echo.metadata.clone(),
        background: false,
        prompt_cache_key: echo.prompt_cache_key.clone(),
        safety_identifier: echo.safety_identifier.clone(),
        service_tier: echo.service_tier.clone(),
    }
}

/// A finished reasoning item: text as a summary when the client asked for one, else as `reasoning_text`.
pub(super) fn reasoning_item(
    echo: &Echo,
    ctx: &EncodeContext,
    index: usize,
    text: String,
    status: ItemStatus,
) -> OutputItem {
    let (summary, content) = if echo.reasoning_summary {
        (vec![SummaryText::new(text)], Vec::new())
    } else {
        (Vec::new(), vec![ContentPart::ReasoningText { text }])
    };
    OutputItem::Reasoning(ReasoningItem { id: prefixed_id("rs", ctx.id_seed, index as u32), summary, content, status })
}

/// A finished tool-call item: `custom_tool_call` for custom tools (input unwrapped), else `function_call`.
pub(super) fn tool_call_item(
    echo: &Echo,
    ctx: &EncodeContext,
    index: usize,
    call_id: String,
    name: String,
    arguments: String,
    status: ItemStatus,
) -> OutputItem {
    let custom = echo.custom_tools.contains(&name);
    let (namespace, client_name) = echo.client_tool_name(&name);
    let namespace = namespace.map(str::to_owned);
    let client_name = client_name.to_owned();
    if custom {
        OutputItem::CustomToolCall(CustomToolCall {
            id: prefixed_id("ctc", ctx.id_seed, index as u32),
            call_id,
            namespace,
            name: client_name,
            input: custom_input(&arguments),
            status,
        })
    } else {
        OutputItem::FunctionCall(FunctionToolCall {
            id: prefixed_id("fc", ctx.id_seed, index as u32),
            call_id,
            namespace,
            name: client_name,
            arguments,
            status,
        })
    }
}

/// The `input` string of a custom tool's hub arguments `{"input": "…"}`; the raw arguments when the model
/// did not produce that shape (better to hand the client something than nothing).
pub(super) fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(map)) => match map.get(CUSTOM_TOOL_INPUT) {
            Some(Value::String(s)) => s.clone(),
            _ => arguments.to_owned(),
        },
        _ => arguments.to_owned(),
    }
}

/// Hub usage → `ResponseUsage` (`input_tokens` includes cached and cache-write tokens on both sides).
pub fn response_usage(usage: &Usage) -> ResponseUsage {
    ResponseUsage {
        input_tokens: usage.prompt_tokens,
        input_tokens_details: InputTokensDetails {
            cached_tokens: usage.cached_tokens(),
            cache_write_tokens: usage.cache_write_tokens(),
        },
        output_tokens: usage.completion_tokens,
        output_tokens_details: OutputTokensDetails {
            reasoning_tokens: usage.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0),
        },
        total_tokens: usage.total_tokens,
    }
}

/// `ResponseUsage` → hub usage (for the ledger of passed-through Responses traffic).
pub fn usage_from_response_usage(usage: &ResponseUsage) -> Usage {
    let details = usage.input_tokens_details;
    Usage {
        prompt_tokens: usage.input_tokens,
        completion_tokens: usage.output_tokens,
        total_tokens: usage.total_tokens,
        prompt_tokens_details: (details.cached_tokens > 0 || details.cache_write_tokens > 0).then_some(
            PromptTokensDetails {
                cached_tokens: Some(details.cached_tokens),
                cache_write_tokens: (details.cache_write_tokens > 0).then_some(details.cache_write_tokens),
                audio_tokens: None,
            },
        ),
        completion_tokens_details: (usage.output_tokens_details.reasoning_tokens > 0).then_some(
            CompletionTokensDetails {
                reasoning_tokens: Some(usage.output_tokens_details.reasoning_tokens),
                ..CompletionTokensDetails::default()
            },
        ),
    }
}
