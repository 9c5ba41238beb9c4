//! Ollama `/api/chat` response → OpenAI `chat.completion`, `/api/tags` → model list, and the mappings the
//! stream decoder shares (finish reason, usage, tool calls, logprobs).

use serde_json::{Map, Value};

use super::wire;
use crate::error::TranslateError;
use crate::openai::{
    ChatResponse, Choice, FinishReason, FunctionCall, PromptTokensDetails, ResponseMessage, ToolCall, Usage,
    OBJECT_COMPLETION,
};
use crate::rfc3339::parse_rfc3339;
use crate::stream::ResponseContext;

/// Decodes a non-stream `/api/chat` body (`"stream": false`).
///
/// `id`, `created` and `model` come from `ctx`. Errors: `Json` for a body that is not a chat response,
/// `Protocol` for a 200 body that carries `{"error": …}`.
pub fn decode_response(body: &[u8], ctx: &ResponseContext) -> Result<ChatResponse, TranslateError> {
    let resp: wire::ChatResponse = serde_json::from_slice(body)
        .map_err(|source| TranslateError::Json { at: "ollama /api/chat response", source })?;
    if let Some(error) = &resp.error {
        return Err(TranslateError::Protocol(format!("ollama: {}", error_message(error)).into()));
    }
    let usage = usage(&resp);
    let finish_done_reason = resp.done_reason.clone();
    let logprobs = resp.logprobs.as_deref().map(convert_logprobs);
    let message = resp.message.unwrap_or_default();
    let mut tool_calls = Vec::new();
    for (n, call) in message.tool_calls.iter().flatten().enumerate() {
        tool_calls.push(convert_tool_call(call, ctx.id_seed, u32::try_from(n).unwrap_or(u32::MAX)));
    }
    let text = message.content.unwrap_or_default();
    let content = if text.is_empty() && !tool_calls.is_empty() { None } else { Some(text) };
    let reasoning_content = match message.thinking {
        Some(thinking) if ctx.include_reasoning && !thinking.is_empty() => Some(thinking),
        _ => None,
    };
    let finish_reason = finish_reason(finish_done_reason.as_deref(), !tool_calls.is_empty());
    Ok(ChatResponse {
        id: ctx.id.clone(),
        object: OBJECT_COMPLETION.to_owned(),
        created: ctx.created,
        model: ctx.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".to_owned(),
                content,
                refusal: None,
                tool_calls: if tool_calls.is_empty() { None } else { Some(tool_calls) },
                reasoning_content,
            },
            logprobs,
            finish_reason: Some(finish_reason),
        }],
        usage: Some(usage),
        system_fingerprint: None,
    })
}

/// `done_reason` → `finish_reason` (wire-formats §3.5). Ollama reports `stop` for tool calls, so any tool
/// call turns `stop` into `tool_calls`. Missing, `load`, `unload` or unknown values count as `stop`.
pub(crate) fn finish_reason(done_reason: Option<&str>, saw_tool_call: bool) -> FinishReason {
    match done_reason {
        Some("length") => FinishReason::Length,
        _ if saw_tool_call => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Usage of a final (`done: true`) response (wire-formats §3.6); absent counts are 0.
pub(crate) fn usage(resp: &wire::ChatResponse) -> Usage {
    let prompt = resp.prompt_eval_count.unwrap_or(0);
    let completion = resp.eval_count.unwrap_or(0);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        prompt_tokens_details: resp
            .prompt_eval_cached_count
            .map(|cached| PromptTokensDetails { cached_tokens: Some(cached), ..Default::default() }),
        completion_tokens_details: None,
    }
}

/// An Ollama tool call → OpenAI tool call; `n` is the call's position in the response (or stream), used
/// to synthesize an id when Ollama gives none.
pub(crate) fn convert_tool_call(call: &wire::ResponseToolCall, id_seed: u64, n: u32) -> ToolCall {
    let id = match &call.id {
        Some(id) if !id.is_empty() => id.clone(),
        _ => crate::ids::tool_call_id(id_seed, n),
    };
    ToolCall {
        id,
        kind: "function".to_owned(),
        function: FunctionCall { name: call.function.name.clone(), arguments: arguments_string(call) },
    }
}

/// The arguments object as a compact JSON string, keys in Ollama's order. A string is taken as already
/// encoded; missing/null is `{}`.
fn arguments_string(call: &wire::ResponseToolCall) -> String {
    let Some(raw) = &call.function.arguments else {
        return "{}".to_owned();
    };
    let raw = raw.get();
    if raw.starts_with('"') {
        if let Ok(s) = serde_json::from_str::<String>(raw) {
            return s;
        }
    }
    compact_json(raw)
}

/// Removes insignificant whitespace from valid JSON text without reordering anything.
pub(crate) fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            out.push(c);
        }
    }
    out
}

/// Ollama `logprobs` (`[{token, logprob, bytes?, top_logprobs?}]`) → OpenAI `{"content": […]}`, filling
/// the keys OpenAI requires (`bytes` null, `top_logprobs` empty).
pub(crate) fn convert_logprobs(entries: &[Value]) -> Value {
    let content = entries.iter().map(|entry| convert_token_logprob(entry, true)).collect::<Vec<_>>();
    let mut out = Map::new();
    out.insert("content".to_owned(), Value::Array(content));
    out.insert("refusal".to_owned(), Value::Null);
    Value::Object(out)
}

fn convert_token_logprob(entry: &Value, with_top: bool) -> Value {
    let mut out = Map::new();
    out.insert("token".to_owned(), entry.get("token").cloned().unwrap_or(Value::from("")));
    out.insert("logprob".to_owned(), entry.get("logprob").cloned().unwrap_or(Value::from(0.0)));
    out.insert("bytes".to_owned(), entry.get("bytes").cloned().unwrap_or(Value::Null));
    if with_top {
        let top = match entry.get("top_logprobs") {
            Some(Value::Array(top)) => top.iter().map(|t| convert_token_logprob(t, false)).collect(),
            _ => Vec::new(),
        };
        out.insert("top_logprobs".to_owned(), Value::Array(top));
    }
    Value::Object(out)
}

/// The text of an Ollama `error` value (a string in practice).
pub(crate) fn error_message(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        Value::Object(map) => match map.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => error.to_string(),
        },
        other => other.to_string(),
    }
}

/// One model of `GET /api/tags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model name including its tag, e.g. `llama3.2:latest` or `hf.co/org/repo:Q4_K_M`.
    pub id: String,
    /// `modified_at` as unix seconds; 0 when missing or unparsable.
    pub created: u64,
}

/// Parses a `GET /api/tags` body. Entries without a name are skipped.
pub fn parse_tags(body: &[u8]) -> Result<Vec<ModelInfo>, TranslateError> {
    let tags: wire::TagsResponse =
        serde_json::from_slice(body).map_err(|source| TranslateError::Json { at: "ollama /api/tags", source })?;
    Ok(tags
        .models
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let id = m.name.filter(|n| !n.is_empty()).or(m.model.filter(|n| !n.is_empty()))?;
            let created = m.modified_at.as_deref().and_then(parse_rfc3339).unwrap_or(0);
            Some(ModelInfo { id, created })
        })
        .collect())
}

#[cfg(test)]
mod tests;
