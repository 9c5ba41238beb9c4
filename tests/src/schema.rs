//! Structural checks of gateway output against the OpenAI shapes SDKs rely on (wire-formats.md §1.5–1.8).
//!
//! These are the required keys and types of `CreateChatCompletionResponse`,
//! `CreateChatCompletionStreamResponse`, `ErrorResponse` and `ListModelsResponse`; the Python suite
//! validates the same bodies against the full OpenAPI schemas.

use serde_json::Value;

const FINISH_REASONS: [&str; 5] = ["stop", "length", "tool_calls", "content_filter", "function_call"];

fn is_u64(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(Value::is_u64)
}

fn is_str(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(Value::is_string)
}

fn check_usage(u: &Value) -> Result<(), String> {
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        if !is_u64(u, k) {
            return Err(format!("usage.{k} missing or not an integer: {u}"));
        }
    }
    let sum = u["prompt_tokens"].as_u64().unwrap_or(0) + u["completion_tokens"].as_u64().unwrap_or(0);
    if u["total_tokens"].as_u64() != Some(sum) {
        return Err(format!("usage.total_tokens != prompt + completion: {u}"));
    }
    Ok(())
}

fn check_tool_call(tc: &Value, streamed: bool) -> Result<(), String> {
    if streamed {
        if !is_u64(tc, "index") {
            return Err(format!("streamed tool call without integer index: {tc}"));
        }
        return Ok(());
    }
    if !is_str(tc, "id") || tc["type"] != "function" || !is_str(&tc["function"], "name") {
        return Err(format!("tool call lacks id/type/function.name: {tc}"));
    }
    if !is_str(&tc["function"], "arguments") {
        return Err(format!("tool call arguments must be a JSON string: {tc}"));
    }
    Ok(())
}

/// Checks a non-streamed `chat.completion` body.
///
/// # Errors
/// A description of the first violation.
pub fn check_completion(v: &Value) -> Result<(), String> {
    if !is_str(v, "id") || v["object"] != "chat.completion" || !is_u64(v, "created") || !is_str(v, "model") {
        return Err(format!("completion lacks id/object/created/model: {v}"));
    }
    let choices = v["choices"].as_array().ok_or_else(|| format!("choices not an array: {v}"))?;
    if choices.is_empty() {
        return Err("choices is empty".into());
    }
    for c in choices {
        if !is_u64(c, "index") || c.get("logprobs").is_none() {
            return Err(format!("choice lacks index/logprobs: {c}"));
        }
        let fr = c["finish_reason"].as_str().unwrap_or("");
        if !FINISH_REASONS.contains(&fr) {
            return Err(format!("bad finish_reason: {c}"));
        }
        let m = &c["message"];
        if m["role"] != "assistant" {
            return Err(format!("message.role != assistant: {m}"));
        }
        if !(m["content"].is_string() || m["content"].is_null()) || m.get("content").is_none() {
            return Err(format!("message.content must be string or null: {m}"));
        }
        if let Some(r) = m.get("refusal") {
            if !(r.is_null() || r.is_string()) {
                return Err(format!("message.refusal must be string or null: {m}"));
            }
        }
        if let Some(tcs) = m.get("tool_calls") {
            for tc in tcs.as_array().ok_or("tool_calls not an array")? {
                check_tool_call(tc, false)?;
            }
        }
    }
    if let Some(u) = v.get("usage") {
        check_usage(u)?;
    }
    Ok(())
}

/// Checks one `chat.completion.chunk`.
///
/// # Errors
/// A description of the first violation.
pub fn check_chunk(v: &Value) -> Result<(), String> {
    if !is_str(v, "id") || v["object"] != "chat.completion.chunk" || !is_u64(v, "created") || !is_str(v, "model") {
        return Err(format!("chunk lacks id/object/created/model: {v}"));
    }
    let choices = v["choices"].as_array().ok_or_else(|| format!("chunk choices not an array: {v}"))?;
    for c in choices {
        if !is_u64(c, "index") || !c["delta"].is_object() || c.get("finish_reason").is_none() {
            return Err(format!("chunk choice lacks index/delta/finish_reason: {c}"));
        }
        let fr = &c["finish_reason"];
        if !(fr.is_null() || fr.as_str().is_some_and(|s| FINISH_REASONS.contains(&s))) {
            return Err(format!("bad chunk finish_reason: {c}"));
        }
        if let Some(tcs) = c["delta"].get("tool_calls") {
            for tc in tcs.as_array().ok_or("delta.tool_calls not an array")? {
                check_tool_call(tc, true)?;
            }
        }
    }
    if let Some(u) = v.get("usage") {
        if !u.is_null() {
            check_usage(u)?;
        }
    }
    Ok(())
}

/// Checks an error envelope `{"error":{"message","type","param","code"}}`.
///
/// # Errors
/// A description of the first violation.
pub fn check_error(v: &Value) -> Result<(), String> {
    let e = v.get("error").ok_or_else(|| format!("no `error` key: {v}"))?;
    if !is_str(e, "message") || !is_str(e, "type") {
        return Err(format!("error lacks message/type strings: {v}"));
    }
    for k in ["param", "code"] {
        match e.get(k) {
            Some(Value::Null | Value::String(_)) => {}
            _ => return Err(format!("error.{k} must be present, string or null: {v}")),
        }
    }
    Ok(())
}

/// Checks a `GET /v1/models` list.
///
/// # Errors
/// A description of the first violation.
pub fn check_model_list(v: &Value) -> Result<(), String> {
    if v["object"] != "list" {
        return Err(format!("models object != list: {v}"));
    }
    for m in v["data"].as_array().ok_or("models data not an array")? {
        check_model(m)?;
    }
    Ok(())
}

/// Checks one `Model`.
///
/// # Errors
/// A description of the first violation.
pub fn check_model(m: &Value) -> Result<(), String> {
    if !is_str(m, "id") || m["object"] != "model" || !is_u64(m, "created") || !is_str(m, "owned_by") {
        return Err(format!("model lacks id/object/created/owned_by: {m}"));
    }
    Ok(())
}
