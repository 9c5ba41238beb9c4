//! Ollama native wire format (wire-formats.md §4.2, §4.3, §4.4, §4.5).

use bytes::Bytes;
use serde_json::{json, Value};

use super::{request_model, wants_stream, Answer, Flavor, RecordedRequest, Stop};

fn done_reason(stop: Stop) -> &'static str {
    match stop {
        // Ollama reports `stop` even when the model called tools.
        Stop::End | Stop::Tool => "stop",
        Stop::Length => "length",
    }
}

fn tool_calls_json(a: &Answer) -> Value {
    a.tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut call = json!({"function": {"index": i, "name": c.name, "arguments": c.input}});
            if !c.id.is_empty() {
                call["id"] = json!(c.id);
            }
            call
        })
        .collect()
}

fn metrics(out: &mut Value, a: &Answer) {
    out["done"] = json!(true);
    out["done_reason"] = json!(done_reason(a.stop));
    out["total_duration"] = json!(3_244_883_583_u64);
    out["load_duration"] = json!(2_969_184_542_u64);
    out["prompt_eval_count"] = json!(a.usage.input);
    out["prompt_eval_duration"] = json!(141_656_333_u64);
    out["eval_count"] = json!(a.usage.output);
    out["eval_duration"] = json!(133_293_625_u64);
}

/// A non-streaming `/api/chat` body.
pub fn chat_json(model: &str, a: &Answer) -> Value {
    let mut message = json!({"role": "assistant", "content": a.full_text()});
    if !a.tool_calls.is_empty() {
        message["tool_calls"] = tool_calls_json(a);
    }
    let mut out = json!({"model": model, "created_at": "2025-07-07T20:32:53.844124Z", "message": message});
    metrics(&mut out, a);
    out
}

/// The NDJSON lines for an answer, the last with `done: true` and the metrics.
pub fn ndjson_lines(model: &str, a: &Answer) -> Vec<Bytes> {
    let line = |v: Value| Bytes::from(format!("{v}\n"));
    let mut out = Vec::new();
    for (i, piece) in a.text.iter().enumerate() {
        out.push(line(json!({"model": model, "created_at": format!("2025-10-26T17:15:24.{:06}Z", i),
                              "message": {"role": "assistant", "content": piece}, "done": false})));
    }
    if !a.tool_calls.is_empty() {
        out.push(line(json!({"model": model, "created_at": "2025-10-26T17:15:25.000000Z",
                              "message": {"role": "assistant", "content": "", "tool_calls": tool_calls_json(a)},
                              "done": false})));
    }
    let mut last = json!({"model": model, "created_at": "2025-10-26T17:15:26.000000Z",
                          "message": {"role": "assistant", "content": ""}});
    metrics(&mut last, a);
    out.push(line(last));
    out
}

pub(crate) fn render_chat(req: &RecordedRequest, a: &Answer) -> (u16, &'static str, Vec<Bytes>) {
    let model = request_model(req, a);
    if wants_stream(Flavor::Ollama, req) {
        (200, "application/x-ndjson", ndjson_lines(&model, a))
    } else {
        (200, "application/json; charset=utf-8", vec![Bytes::from(chat_json(&model, a).to_string())])
    }
}

/// `GET /api/tags` body.
pub fn tags_json(models: &[String]) -> Value {
    let entries: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({
                "name": m, "model": m,
                "modified_at": "2025-05-04T17:37:44.706015396-07:00",
                "size": 2_019_393_189_u64,
                "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                            "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}
            })
        })
        .collect();
    json!({"models": entries})
}

pub(crate) fn render_models(models: &[String]) -> (u16, &'static str, Vec<Bytes>) {
    (200, "application/json; charset=utf-8", vec![Bytes::from(tags_json(models).to_string())])
}

/// Mid-stream error line (HTTP status stays 200).
pub fn inband_error() -> Bytes {
    Bytes::from(format!("{}\n", json!({"error": "an error was encountered while running the model"})))
}
