//! OpenAI Chat Completions wire format (wire-formats.md §1.5, §1.6, §1.7, §1.8).

use bytes::Bytes;
use serde_json::{json, Value};

use super::{fragments, request_model, wants_stream, Answer, Flavor, RecordedRequest, Stop};

const ID: &str = "chatcmpl-mock0001";
const CREATED: u64 = 1_760_000_000;

fn finish_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::End => "stop",
        Stop::Length => "length",
        Stop::Tool => "tool_calls",
    }
}

/// The `usage` object for an answer (`prompt_tokens` includes cached tokens).
pub fn usage_json(a: &Answer) -> Value {
    let prompt = a.usage.input + a.usage.cache_read + a.usage.cache_creation;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": a.usage.output,
        "total_tokens": prompt + a.usage.output,
        "prompt_tokens_details": {"cached_tokens": a.usage.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

/// A non-streaming `chat.completion` body.
pub fn completion_json(model: &str, a: &Answer) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": if a.text.is_empty() { Value::Null } else { Value::String(a.full_text()) },
        "refusal": null,
        "annotations": []
    });
    if !a.tool_calls.is_empty() {
        message["tool_calls"] = a
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.input.to_string()}}))
            .collect();
    }
    json!({
        "id": ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_mock",
        "service_tier": "default",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(a.stop)}],
        "usage": usage_json(a)
    })
}

/// The `chat.completion.chunk` payloads (JSON, without SSE framing) for an answer.
pub fn chunk_payloads(model: &str, a: &Answer, include_usage: bool) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut out = Vec::new();
    let first_content = if a.text.is_empty() && !a.tool_calls.is_empty() { Value::Null } else { json!("") };
    out.push(chunk(json!({"role": "assistant", "content": first_content, "refusal": null}), Value::Null));
    for piece in &a.text {
        out.push(chunk(json!({"content": piece}), Value::Null));
    }
    for (i, call) in a.tool_calls.iter().enumerate() {
        let args = call.input.to_string();
        let mut pieces = fragments(&args).into_iter();
        let first = pieces.next().unwrap_or_default();
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "id": call.id, "type": "function",
                   "function": {"name": call.name, "arguments": first}}]}),
            Value::Null,
        ));
        for p in pieces.filter(|p| !p.is_empty()) {
            out.push(chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}), Value::Null));
        }
    }
    out.push(chunk(json!({}), json!(finish_reason(a.stop))));
    if include_usage {
        out.push(json!({
            "id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "system_fingerprint": "fp_mock", "choices": [], "usage": usage_json(a)
        }));
    }
    out
}

/// SSE-framed stream for an answer, ending with `data: [DONE]`.
pub fn sse_chunks(model: &str, a: &Answer, include_usage: bool) -> Vec<Bytes> {
    let mut out: Vec<Bytes> =
        chunk_payloads(model, a, include_usage).into_iter().map(|c| Bytes::from(format!("data: {c}\n\n"))).collect();
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

pub(crate) fn render_chat(req: &RecordedRequest, a: &Answer) -> (u16, &'static str, Vec<Bytes>) {
    let model = request_model(req, a);
    if wants_stream(Flavor::OpenAi, req) {
        let include_usage = req
            .json
            .as_ref()
            .and_then(|j| j.pointer("/stream_options/include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        (200, "text/event-stream", sse_chunks(&model, a, include_usage))
    } else {
        (200, "application/json", vec![Bytes::from(completion_json(&model, a).to_string())])
    }
}

/// `GET /v1/models` body.
pub fn models_json(models: &[String]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "object": "model", "created": 1_721_172_741 + i as u64, "owned_by": "system"}))
        .collect();
    json!({"object": "list", "data": data})
}

pub(crate) fn render_models(models: &[String]) -> (u16, &'static str, Vec<Bytes>) {
    (200, "application/json", vec![Bytes::from(models_json(models).to_string())])
}

/// OpenAI error envelope with the `type`/`code` OpenAI uses for `status`.
pub fn error_body(status: u16, message: &str) -> Value {
    let (ty, code) = match status {
        400 => ("invalid_request_error", Value::Null),
        401 => ("invalid_request_error", json!("invalid_api_key")),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        _ => ("server_error", Value::Null),
    };
    json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
}

/// In-band stream error event, as OpenAI sends it.
pub fn inband_error() -> Bytes {
    Bytes::from(format!(
        "data: {}\n\n",
        json!({"error": {"message": "The server had an error while processing your request.",
                         "type": "server_error", "param": null, "code": null}})
    ))
}
