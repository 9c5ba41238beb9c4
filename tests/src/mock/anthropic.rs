//! Anthropic Messages wire format (wire-formats.md §2.5, §2.6, §2.7, §2.9).

use bytes::Bytes;
use serde_json::{json, Value};

use super::{fragments, request_model, wants_stream, Answer, Flavor, RecordedRequest, Stop};

const ID: &str = "msg_01MockXFDUDYJgAACzvnptvV";

fn stop_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::End => "end_turn",
        Stop::Length => "max_tokens",
        Stop::Tool => "tool_use",
    }
}

fn usage_json(a: &Answer, output: u64) -> Value {
    json!({
        "input_tokens": a.usage.input,
        "cache_creation_input_tokens": a.usage.cache_creation,
        "cache_read_input_tokens": a.usage.cache_read,
        "output_tokens": output,
        "service_tier": "standard"
    })
}

/// A non-streaming `message` body.
pub fn message_json(model: &str, a: &Answer) -> Value {
    let mut content = Vec::new();
    if !a.text.is_empty() {
        content.push(json!({"type": "text", "text": a.full_text()}));
    }
    for c in &a.tool_calls {
        content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.input}));
    }
    json!({
        "id": ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(a.stop),
        "stop_sequence": null,
        "usage": usage_json(a, a.usage.output)
    })
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The SSE events (`event:` + `data:` lines) for an answer, ending with `message_stop`.
pub fn sse_events(model: &str, a: &Answer) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = message_json(model, a);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["usage"] = usage_json(a, 1);
    out.push(event("message_start", &json!({"type": "message_start", "message": start})));
    let mut index = 0;
    if !a.text.is_empty() {
        out.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        ));
        out.push(event("ping", &json!({"type": "ping"})));
        for piece in &a.text {
            out.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        out.push(event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        index += 1;
    } else {
        out.push(event("ping", &json!({"type": "ping"})));
    }
    for c in &a.tool_calls {
        out.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}}),
        ));
        for piece in fragments(&c.input.to_string()) {
            out.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        out.push(event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    out.push(event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(a.stop), "stop_sequence": null},
                "usage": {"output_tokens": a.usage.output}}),
    ));
    out.push(event("message_stop", &json!({"type": "message_stop"})));
    out
}

pub(crate) fn render_chat(req: &RecordedRequest, a: &Answer) -> (u16, &'static str, Vec<Bytes>) {
    let model = request_model(req, a);
    if wants_stream(Flavor::Anthropic, req) {
        (200, "text/event-stream; charset=utf-8", sse_events(&model, a))
    } else {
        (200, "application/json", vec![Bytes::from(message_json(&model, a).to_string())])
    }
}

/// One `ModelInfo` entry.
pub fn model_info(id: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-09-29T00:00:00Z",
           "max_input_tokens": 200_000, "max_tokens": 64_000})
}

/// One page of `GET /v1/models` honouring `limit` (default 20) and `after_id`.
pub fn models_page(models: &[String], limit: usize, after_id: Option<&str>) -> Value {
    let start = match after_id {
        Some(after) => models.iter().position(|m| m == after).map_or(models.len(), |p| p + 1),
        None => 0,
    };
    let page: Vec<&String> = models.iter().skip(start).take(limit.max(1)).collect();
    let has_more = start + page.len() < models.len();
    json!({
        "data": page.iter().map(|m| model_info(m)).collect::<Vec<_>>(),
        "has_more": has_more,
        "first_id": page.first(),
        "last_id": page.last(),
    })
}

pub(crate) fn render_models(req: &RecordedRequest, models: &[String]) -> (u16, &'static str, Vec<Bytes>) {
    let limit = req.query_param("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
    let after = req.query_param("after_id");
    let body = models_page(models, limit, after.as_deref());
    (200, "application/json", vec![Bytes::from(body.to_string())])
}

/// Anthropic error body for `status`.
pub fn error_body(status: u16, message: &str) -> Value {
    let ty = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": ty, "message": message}, "request_id": "req_011MockRequest"})
}

/// In-band `event: error` (overloaded) as sent mid-stream.
pub fn inband_error() -> Bytes {
    event("error", &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
}
