//! Ollama native `/api/chat` and `/api/tags` wire types, named after Ollama's `api/types.go`.
//!
//! Request types borrow from the OpenAI request where they can and serialize only the fields that are set
//! (Ollama falls back to the Modelfile for every option we leave out). Response types are tolerant: every
//! field is optional and unknown fields are ignored, because Ollama marks its metrics `omitempty` and adds
//! fields often.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// `POST /api/chat` body.
#[derive(Debug, Serialize)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool<'a>>>,
    /// `"json"` or a JSON-Schema object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    /// Always sent: Ollama streams when it is absent.
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAlive<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub think: Option<Think>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u64>,
}

/// `keep_alive`: Ollama parses strings with Go's `time.ParseDuration` (which rejects unitless `"300"` or
/// `"-1"`) and numbers as seconds, so configured plain numbers are sent as JSON numbers.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum KeepAlive<'a> {
    Seconds(f64),
    Duration(&'a str),
}

impl<'a> KeepAlive<'a> {
    /// `"10m"` stays a string, `"300"`/`"-1"`/`"0.5"` become numbers.
    pub fn from_config(value: &'a str) -> Self {
        match value.trim().parse::<f64>() {
            Ok(seconds) if seconds.is_finite() => KeepAlive::Seconds(seconds),
            _ => KeepAlive::Duration(value),
        }
    }
}

/// `think`: a switch, or an effort level on models that support levels.
#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Think {
    Enabled(bool),
    Level(&'static str),
}

/// One chat message.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: &'static str,
    pub content: String,
    /// Raw standard-alphabet base64, no `data:` prefix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
}

impl Message<'_> {
    /// A message with only a role and text.
    pub fn text(role: &'static str, content: String) -> Self {
        Self { role, content, images: Vec::new(), tool_calls: Vec::new(), tool_name: None, tool_call_id: None }
    }
}

/// An assistant tool call in the request history.
#[derive(Debug, Serialize)]
pub struct ToolCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub function: ToolCallFunction<'a>,
}

/// The function part of a request tool call; `arguments` is a JSON object (kept as the client wrote it,
/// so key order survives).
#[derive(Debug, Serialize)]
pub struct ToolCallFunction<'a> {
    pub index: u32,
    pub name: &'a str,
    pub arguments: Box<RawValue>,
}

/// A tool definition (`{"type":"function","function":{…}}`, same shape as OpenAI's).
#[derive(Debug, Serialize)]
pub struct Tool<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: ToolFunction<'a>,
}

/// A function tool.
#[derive(Debug, Serialize)]
pub struct ToolFunction<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub parameters: Value,
}

/// `options`: only the fields the client set (or the gateway configured) are sent.
#[derive(Debug, Serialize, Default, PartialEq)]
pub struct Options {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Maximum output tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<u64>,
    /// Context window; Ollama's default is small and silently truncates long prompts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<u64>,
}

impl Options {
    /// True when no option is set (the `options` key is then omitted).
    pub fn is_empty(&self) -> bool {
        *self == Options::default()
    }
}

/// A `/api/chat` response body (non-stream) or one NDJSON line of a stream.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ChatResponse {
    pub model: Option<String>,
    pub message: Option<ResponseMessage>,
    pub done: bool,
    /// `stop`, `length`, `load`, `unload`; absent when generation ended abnormally.
    pub done_reason: Option<String>,
    pub prompt_eval_count: Option<u64>,
    pub eval_count: Option<u64>,
    /// Cached prompt tokens (newer builds, reported).
    pub prompt_eval_cached_count: Option<u64>,
    /// Per-token log probabilities, when requested.
    pub logprobs: Option<Vec<Value>>,
    /// An in-band error (`{"error": "…"}`); a string in practice, tolerated as any JSON.
    pub error: Option<Value>,
}

/// `message` of a response.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ResponseMessage {
    pub content: Option<String>,
    pub thinking: Option<String>,
    pub tool_calls: Option<Vec<ResponseToolCall>>,
}

/// A tool call produced by the model; arrives whole, never fragmented.
#[derive(Debug, Deserialize)]
pub struct ResponseToolCall {
    /// Absent in older Ollama versions: synthesize one.
    #[serde(default)]
    pub id: Option<String>,
    pub function: ResponseToolFunction,
}

/// The function part of a response tool call.
#[derive(Debug, Deserialize)]
pub struct ResponseToolFunction {
    #[serde(default)]
    pub name: String,
    /// A JSON object in practice; kept raw so key order survives into the OpenAI `arguments` string.
    #[serde(default)]
    pub arguments: Option<Box<RawValue>>,
}

/// `GET /api/tags` body.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct TagsResponse {
    pub models: Option<Vec<TagModel>>,
}

/// One local model.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct TagModel {
    pub name: Option<String>,
    pub model: Option<String>,
    /// RFC 3339 with fractional seconds and an offset, e.g. `2025-05-04T17:37:44.706015396-07:00`.
    pub modified_at: Option<String>,
}
