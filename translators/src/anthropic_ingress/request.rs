//! Anthropic Messages request body → OpenAI [`ChatRequest`] (the hub), for translated backends.
//!
//! The body is walked as a JSON value so that every error names the offending field in Anthropic's own
//! dotted style (`messages.2.content.0.source.media_type`), which the gateway puts in a 400
//! `invalid_request_error`. Unknown fields are ignored, never rejected (SDKs add fields faster than we
//! ship); things that cannot be honoured on a translated backend are errors, not silence.
//!
//! Mapping (research note `ingress.md` §1.3):
//! - `system` (string or text blocks) → one leading `system` message, blocks joined with `"\n"`. The
//!   Claude Code attribution block (`x-anthropic-billing-header: …`) is removed: its hash changes on every
//!   request and would defeat the backend's prefix cache. `cache_control` is dropped (reported).
//! - `system` turns inside `messages` (Claude Code sends them to models it does not know) → a `system`
//!   message in place, like the top-level `system`.
//! - User turns: `tool_result` blocks become `tool` messages (in order, before the rest of the turn, as
//!   OpenAI requires them right after the assistant's `tool_calls`); `is_error: true` prefixes the result
//!   with [`TOOL_ERROR_PREFIX`] (OpenAI has no error flag). Images inside tool results, which OpenAI tool
//!   messages cannot carry, follow in a user message. Text, images (base64 → data URL, url → url) and
//!   documents (PDF → `file` part with a data URL, plain text → text) become content parts.
//! - Assistant turns: text → `content`; `tool_use` → `tool_calls` with `arguments` = compact JSON of
//!   `input`. `thinking` / `redacted_thinking` blocks are dropped (reported): their signatures only mean
//!   something to Anthropic, and no OpenAI-kind backend accepts them in history.
//! - `tools`: custom tools → function tools (`input_schema` → `parameters`). Server tools (`web_search_*`,
//!   `bash_*`, `code_execution_*`, …) and `mcp_servers` → `Unsupported`: the backend cannot run them.
//! - `tool_choice`: `auto` → `auto`, `any` → `required`, `tool` → the named function, `none` → `none`;
//!   `disable_parallel_tool_use: true` → `parallel_tool_calls: false`.
//! - `max_tokens` (required, ≥ 1) → `max_completion_tokens` (OpenAI's current name, accepted by every
//!   model, unlike the deprecated `max_tokens`). `temperature`, `top_p` as they are; `stop_sequences` →
//!   `stop`; `metadata.user_id` → `user`; `top_k` has no hub field: it is returned in
//!   [`DecodedRequest::top_k`] and reported.
//! - `stream: true` → `stream` plus `stream_options.include_usage` (the Anthropic stream needs final
//!   usage for `message_delta`).
//! - `thinking` / `output_config.effort` → `reasoning_effort`, see [`reasoning_effort`].
//! - `output_config.format` (`json_schema`) → `response_format` `json_schema`.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::error::TranslateError;
use crate::openai::{
    ChatRequest, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, JsonSchemaFormat, Message, ResponseFormat,
    Stop, StreamOptions, Tool, ToolCall, ToolChoice,
};

/// Text put before the content of a `tool_result` with `is_error: true` (OpenAI tool messages have no
/// error flag, so the model is told in words).
pub const TOOL_ERROR_PREFIX: &str = "Error: ";

/// Prefix of the attribution block Claude Code puts first in `system` (stripped when translating).
pub const ATTRIBUTION_PREFIX: &str = "x-anthropic-billing-header:";

/// The few fields the gateway needs for routing, read without building the full request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagesHead {
    /// The client's `model`, gateway prefix included (e.g. `ollama/qwen3`).
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
}

/// A decoded Messages request and what the translation left out.
#[derive(Debug, Clone)]
pub struct DecodedRequest {
    /// The hub request; `model` is the client's model name, unchanged.
    pub chat: ChatRequest,
    /// `top_k`, which the hub has no field for (some backends, e.g. vLLM, take it as an extra).
    pub top_k: Option<u64>,
    /// The client enabled extended thinking (`thinking.type` `enabled`/`adaptive`, or an effort): the
    /// response should carry thinking blocks (set `ResponseContext::include_reasoning` and
    /// `EncodeContext::include_thinking`).
    pub thinking: bool,
    /// The stop sequences, for the response's `stop_sequence` when a backend reports which one matched.
    pub stop_sequences: Vec<String>,
    /// Anthropic features that were dropped, for a response header (stable order, no duplicates):
    /// `cache_control`, `thinking_blocks`, `top_k`, `context_management`, `service_tier`, `container`.
    pub dropped: Vec<&'static str>,
}

#[derive(Deserialize)]
struct HeadWire<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
}

fn not_json(e: &serde_json::Error) -> TranslateError {
    TranslateError::InvalidRequest { message: format!("request body is not valid JSON: {e}").into(), param: None }
}

/// Reads `model` and `stream` from a Messages body without building the request (every other field is
/// skipped, but the whole body must be valid JSON).
///
/// Errors (`InvalidRequest`): invalid JSON or a non-object body (no `param`); `model` missing, empty or
/// not a string (`param: "model"`); `stream` not a boolean (`param: "stream"`).
pub fn parse_head(body: &[u8]) -> Result<MessagesHead, TranslateError> {
    if body.iter().copied().find(|b| !b.is_ascii_whitespace()) != Some(b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => {
                TranslateError::InvalidRequest { message: "request body must be a JSON object".into(), param: None }
            }
            Err(e) => not_json(&e),
        });
    }
    let wire: HeadWire = serde_json::from_slice(body).map_err(|e| not_json(&e))?;
    let model = match wire.model {
        None => return Err(TranslateError::invalid("model: Field required", "model")),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map_err(|_| TranslateError::invalid("model: Input should be a valid string", "model"))?,
    };
    if model.is_empty() {
        return Err(TranslateError::invalid("model: must not be empty", "model"));
    }
    let stream = match wire.stream {
        None => false,
        Some(raw) if raw.get() == "null" => false,
        Some(raw) => serde_json::from_str::<bool>(raw.get())
            .map_err(|_| TranslateError::invalid("stream: Input should be a valid boolean", "stream"))?,
    };
    Ok(MessagesHead { model, stream })
}

/// Renames `model` in a Messages body for an Anthropic backend, keeping every other byte (thinking
/// signatures, `cache_control`, numbers beyond 2^53, unknown fields, member order).
///
/// Returns `body` itself (no copy) when the name does not change. This reuses
/// [`crate::openai::passthrough::rewrite_request`]: with a non-stream head it touches only `model` (it
/// must not add OpenAI's `stream_options`, which Anthropic rejects). Errors: `InvalidRequest` when the
/// body is not a JSON object.
pub fn rewrite_model(body: Bytes, head: &MessagesHead, upstream_model: &str) -> Result<Bytes, TranslateError> {
    let openai_head = crate::openai::passthrough::RequestHead {
        model: head.model.clone(),
        stream: false,
        include_usage: false,
        max_output_tokens: None,
        n: None,
    };
    crate::openai::passthrough::rewrite_request(body, &openai_head, upstream_model)
}

/// Decodes a Messages request body into the hub request.
///
/// Errors: `InvalidRequest` (→ 400 `invalid_request_error`) with the dotted path of the offending field
/// as `param` and the path at the start of the message; `Unsupported` (also a 400 for Anthropic clients)
/// for features a translated backend cannot honour (server tools, MCP servers, URL documents).
pub fn decode_request(body: &[u8]) -> Result<DecodedRequest, TranslateError> {
    decode(body, true)
}

/// [`decode_request`] for a `count_tokens` body, where `max_tokens` is absent.
pub(super) fn decode(body: &[u8], require_max_tokens: bool) -> Result<DecodedRequest, TranslateError> {
    let head = parse_head(body)?;
    let value: Value = serde_json::from_slice(body).map_err(|e| not_json(&e))?;
    let Value::Object(root) = value else {
        return Err(TranslateError::InvalidRequest {
            message: "request body must be a JSON object".into(),
            param: None,
        });
    };
    let mut d = Decoder::default();

    let max_tokens = match root.get("max_tokens") {
        None | Some(Value::Null) if require_max_tokens => return Err(invalid("max_tokens", "Field required")),
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(0) => return Err(invalid("max_tokens", "Input should be greater than or equal to 1")),
            Some(n) => Some(n),
            None => return Err(invalid("max_tokens", "Input should be a valid integer")),
        },
    };
    let temperature = opt_number(&root, "temperature")?;
    if temperature.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        return Err(invalid("temperature", "Input should be between 0 and 1"));
    }
    let top_p = opt_number(&root, "top_p")?;
    if top_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return Err(invalid("top_p", "Input should be between 0 and 1"));
    }
    let top_k = match root.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| invalid("top_k", "Input should be a valid integer"))?),
    };
    if top_k.is_some() {
        d.drop("top_k");
    }
    let stop_sequences = match root.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(format!("stop_sequences.{i}"), "Input should be a valid string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("stop_sequences", "Input should be a valid list")),
    };
    let user = match root.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(meta)) => match meta.get("user_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("metadata.user_id", "Input should be a valid string")),
        },
        Some(_) => return Err(invalid("metadata", "Input should be a valid dictionary")),
    };
    if root.get("mcp_servers").is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty())) {
        return Err(unsupported("mcp_servers", "MCP servers are only available with Anthropic models"));
    }
    for (key, name) in [
        ("context_management", "context_management"),
        ("service_tier", "service_tier"),
        ("container", "container"),
        ("cache_control", "cache_control"),
    ] {
        if root.get(key).is_some_and(|v| !v.is_null()) {
            d.drop(name);
        }
    }

    let mut messages = Vec::new();
    if let Some(system) = d.system(root.get("system"))? {
        messages.push(Message::System { content: Content::Text(system), name: None });
    }
    match root.get("messages") {
        None | Some(Value::Null) => return Err(invalid("messages", "Field required")),
        Some(Value::Array(items)) => {
            if items.is_empty() && require_max_tokens {
                return Err(invalid("messages", "at least one message is required"));
            }
            for (i, item) in items.iter().enumerate() {
                d.message(item, i, &mut messages)?;
            }
        }
        Some(_) => return Err(invalid("messages", "Input should be a valid list")),
    }

    let tools = d.tools(root.get("tools"))?;
    let (tool_choice, parallel_tool_calls) = tool_choice(root.get("tool_choice"), tools.as_deref())?;
    let (reasoning_effort, thinking) = reasoning_effort(root.get("thinking"), root.get("output_config"))?;
    let response_format = response_format(root.get("output_config"))?;

    let stream = head.stream;
    let chat = ChatRequest {
        model: head.model,
        messages,
        stream: stream.then_some(true),
        stream_options: stream.then(|| StreamOptions { include_usage: Some(true), extra: Map::new() }),
        max_completion_tokens: max_tokens,
        temperature,
        top_p,
        stop: if stop_sequences.is_empty() { None } else { Some(Stop::Many(stop_sequences.clone())) },
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format,
        user,
        reasoning_effort,
        ..ChatRequest::default()
    };
    Ok(DecodedRequest { chat, top_k, thinking, stop_sequences, dropped: d.dropped })
}

fn invalid(param: impl Into<String>, message: &str) -> TranslateError {
    let param = param.into();
    TranslateError::invalid(format!("{param}: {message}"), param)
}

fn unsupported(param: impl Into<String>, message: &str) -> TranslateError {
    let param = param.into();
    TranslateError::unsupported(format!("{param}: {message}"), param)
}

fn opt_number(root: &Map<String, Value>, key: &'static str) -> Result<Option<f64>, TranslateError> {
    match root.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| invalid(key, "Input should be a valid number")),
    }
}

/// `thinking` and `output_config.effort` → `reasoning_effort`, and whether thinking was asked for.
///
/// - `output_config.effort` wins when present: `low`/`medium`/`high`/`xhigh` as they are, `max` → `xhigh`.
/// - `thinking: {type: "enabled", budget_tokens}`: below 2048 → `low`, below 4096 → `medium`, else
///   `high` (the inverse of the Anthropic egress budgets 1024/2048/4096, so a round trip is stable; large
///   budgets such as Claude Code's 31999 stay `high`, which every reasoning backend accepts).
/// - `thinking: {type: "adaptive"}` → `medium`; `{type: "disabled"}` or absent → no effort.
pub fn reasoning_effort(
    thinking: Option<&Value>,
    output_config: Option<&Value>,
) -> Result<(Option<String>, bool), TranslateError> {
    let explicit = match output_config.and_then(|c| c.get("effort")) {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(match e.as_str() {
            "low" | "medium" | "high" | "xhigh" => e.clone(),
            "max" => "xhigh".to_owned(),
            _ => {
                return Err(invalid(
                    "output_config.effort",
                    "Input should be 'low', 'medium', 'high', 'xhigh' or 'max'",
                ))
            }
        }),
        Some(_) => return Err(invalid("output_config.effort", "Input should be a valid string")),
    };
    let from_thinking = match thinking {
        None | Some(Value::Null) => None,
        Some(Value::Object(t)) => match t.get("type").and_then(Value::as_str) {
            Some("enabled") => {
                let budget = t
                    .get("budget_tokens")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| invalid("thinking.budget_tokens", "Field required"))?;
                if budget < 1024 {
                    return Err(invalid("thinking.budget_tokens", "Input should be greater than or equal to 1024"));
                }
                Some(
                    match budget {
                        0..=2047 => "low",
                        2048..=4095 => "medium",
                        _ => "high",
                    }
                    .to_owned(),
                )
            }
            Some("adaptive") => Some("medium".to_owned()),
            Some("disabled") => None,
            _ => return Err(invalid("thinking.type", "Input should be 'enabled', 'adaptive' or 'disabled'")),
        },
        Some(_) => return Err(invalid("thinking", "Input should be a valid dictionary")),
    };
    let thinking_on = from_thinking.is_some() || explicit.is_some();
    Ok((explicit.or(from_thinking), thinking_on))
}

/// `output_config.format` `{type: "json_schema", schema}` → `response_format` `json_schema`.
fn response_format(output_config: Option<&Value>) -> Result<Option<ResponseFormat>, TranslateError> {
    let Some(format) = output_config.and_then(|c| c.get("format")).filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let schema = format
                .get("schema")
                .cloned()
                .ok_or_else(|| invalid("output_config.format.schema", "Field required"))?;
            Ok(Some(ResponseFormat::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name: "output".to_owned(),
                    description: None,
                    schema: Some(schema),
                    strict: Some(true),
                },
            }))
        }
        _ => Err(invalid("output_config.format.type", "Input should be 'json_schema'")),
    }
}

/// `tool_choice` → OpenAI `tool_choice` and `parallel_tool_calls`.
fn tool_choice(
    choice: Option<&Value>,
    tools: Option<&[Tool]>,
) -> Result<(Option<ToolChoice>, Option<bool>), TranslateError> {
    let Some(choice) = choice.filter(|c| !c.is_null()) else {
        return Ok((None, None));
    };
    let Value::Object(obj) = choice else {
        return Err(invalid("tool_choice", "Input should be a valid dictionary"));
    };
    let parallel = match obj.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(true)) => Some(false),
        Some(Value::Bool(false)) => None,
        Some(_) => return Err(invalid("tool_choice.disable_parallel_tool_use", "Input should be a valid boolean")),
    };
    let mode = |m: &str| Some(ToolChoice::Mode(m.to_owned()));
    let choice = match obj.get("type").and_then(Value::as_str) {
        Some("auto") => mode("auto"),
        Some("any") => mode("required"),
        Some("none") => mode("none"),
        Some("tool") => {
            let name = obj
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid("tool_choice.name", "Field required"))?;
            let known =
                tools.is_some_and(|tools| tools.iter().any(|t| t.function.as_ref().is_some_and(|f| f.name == name)));
            if !known {
                return Err(invalid("tool_choice.name", "names a tool that is not in tools"));
            }
            Some(ToolChoice::Object(json!({"type": "function", "function": {"name": name}})))
        }
        _ => return Err(invalid("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")),
    };
    if matches!(obj.get("type").and_then(Value::as_str), Some("any" | "tool")) && tools.is_none() {
        return Err(invalid("tool_choice", "tool_choice requires tools"));
    }
    Ok((choice, parallel))
}

/// Walks the message list; collects what was dropped.
#[derive(Default)]
struct Decoder {
    dropped: Vec<&'static str>,
}

impl Decoder {
    fn drop(&mut self, name: &'static str) {
        if !self.dropped.contains(&name) {
            self.dropped.push(name);
        }
    }

    fn note_cache_control(&mut self, block: &Map<String, Value>) {
        if block.get("cache_control").is_some_and(|v| !v.is_null()) {
            self.drop("cache_control");
        }
    }

    /// `system` → one string, or `None` when absent or empty after removing the attribution block.
    fn system(&mut self, system: Option<&Value>) -> Result<Option<String>, TranslateError> {
        self.system_text(system, "system")
    }

    /// A system text (string or text blocks) at `path` → one string, as [`Self::system`].
    fn system_text(&mut self, system: Option<&Value>, at: &str) -> Result<Option<String>, TranslateError> {
        let mut parts: Vec<String> = Vec::new();
        match system {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => parts.push(s.clone()),
            Some(Value::Array(blocks)) => {
                for (i, block) in blocks.iter().enumerate() {
                    let path = format!("{at}.{i}");
                    let obj = block.as_object().ok_or_else(|| invalid(&path, "Input should be a valid dictionary"))?;
                    if obj.get("type").and_then(Value::as_str) != Some("text") {
                        return Err(invalid(format!("{path}.type"), "Input should be 'text'"));
                    }
                    let text = obj
                        .get("text")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("{path}.text"), "Field required"))?;
                    self.note_cache_control(obj);
                    parts.push(text.to_owned());
                }
            }
            Some(_) => return Err(invalid(at, "Input should be a valid string or list of text blocks")),
        }
        let parts: Vec<String> = parts.into_iter().filter_map(|p| strip_attribution(&p)).collect();
        Ok(if parts.is_empty() { None } else { Some(parts.join("\n")) })
    }

    fn message(&mut self, item: &Value, i: usize, out: &mut Vec<Message>) -> Result<(), TranslateError> {
        let path = format!("messages.{i}");
        let obj = item.as_object().ok_or_else(|| invalid(&path, "Input should be a valid dictionary"))?;
        let role =
            obj.get("role").and_then(Value::as_str).ok_or_else(|| invalid(format!("{path}.role"), "Field required"))?;
        let content = obj.get("content").ok_or_else(|| invalid(format!("{path}.content"), "Field required"))?;
        match role {
            "user" => self.user(content, &path, out),
            "assistant" => self.assistant(content, &path, out),
            // Claude Code (2.1.3xx) sends `system` turns inside `messages` to models it does not know
            // (any `openai/…`, `ollama/…` name): a system message in place, which both backends accept.
            "system" => {
                if let Some(text) = self.system_text(Some(content), &format!("{path}.content"))? {
                    out.push(Message::System { content: Content::Text(text), name: None });
                }
                Ok(())
            }
            _ => Err(invalid(format!("{path}.role"), "Input should be 'user', 'assistant' or 'system'")),
        }
    }

    fn user(&mut self, content: &Value, path: &str, out: &mut Vec<Message>) -> Result<(), TranslateError> {
        let blocks = match content {
            Value::String(s) => {
                out.push(Message::User { content: Content::Text(s.clone()), name: None });
                return Ok(());
            }
            Value::Array(blocks) => blocks,
            _ => return Err(invalid(format!("{path}.content"), "Input should be a valid string or list")),
        };
        let mut parts: Vec<ContentPart> = Vec::new();
        // Images of tool results: OpenAI tool messages carry text only, so they follow in a user turn.
        let mut tool_images: Vec<ContentPart> = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let bpath = format!("{path}.content.{j}");
            let obj = block.as_object().ok_or_else(|| invalid(&bpath, "Input should be a valid dictionary"))?;
            self.note_cache_control(obj);
            match block_type(obj, &bpath)? {
                "tool_result" => {
                    let id = obj
                        .get("tool_use_id")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| invalid(format!("{bpath}.tool_use_id"), "Field required"))?;
                    let is_error = obj.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                    let text = self.tool_result_content(obj.get("content"), &bpath, &mut tool_images)?;
                    let text = if is_error && !text.starts_with(TOOL_ERROR_PREFIX) {
                        format!("{TOOL_ERROR_PREFIX}{text}")
                    } else {
                        text
                    };
                    out.push(Message::Tool { content: Content::Text(text), tool_call_id: id.to_owned() });
                }
                "thinking" | "redacted_thinking" => {
                    return Err(invalid(
                        format!("{bpath}.type"),
                        "thinking blocks are only allowed in assistant messages",
                    ))
                }
                "tool_use" => {
                    return Err(invalid(
                        format!("{bpath}.type"),
                        "tool_use blocks are only allowed in assistant messages",
                    ))
                }
                other => parts.push(self.user_part(other, obj, &bpath)?),
            }
        }
        parts.extend(tool_images);
        if !parts.is_empty() {
            let content = match parts.as_slice() {
                [ContentPart::Text { text }] => Content::Text(text.clone()),
                _ => Content::Parts(parts),
            };
            out.push(Message::User { content, name: None });
        }
        Ok(())
    }

    /// A text, image or document block of a user turn (or of a tool result).
    fn user_part(&mut self, kind: &str, obj: &Map<String, Value>, path: &str) -> Result<ContentPart, TranslateError> {
        match kind {
            "text" => Ok(ContentPart::Text { text: text_field(obj, path)? }),
            "image" => image_part(obj, path),
            "document" => document_part(obj, path),
            "search_result" => {
                // Its text blocks are the content; title and source become a header line.
                let title = obj.get("title").and_then(Value::as_str).unwrap_or("");
                let source = obj.get("source").and_then(Value::as_str).unwrap_or("");
                let mut text = format!("{title} ({source})");
                for block in obj.get("content").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(t) = block.get("text").and_then(Value::as_str) {
                        text.push('\n');
                        text.push_str(t);
                    }
                }
                Ok(ContentPart::Text { text })
            }
            other => Err(unsupported(
                format!("{path}.type"),
                &format!("content blocks of type `{other}` are not supported for this model"),
            )),
        }
    }

    /// `tool_result.content` → text; images are moved to `images`.
    fn tool_result_content(
        &mut self,
        content: Option<&Value>,
        path: &str,
        images: &mut Vec<ContentPart>,
    ) -> Result<String, TranslateError> {
        match content {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Array(blocks)) => {
                let mut texts: Vec<String> = Vec::new();
                for (k, block) in blocks.iter().enumerate() {
                    let bpath = format!("{path}.content.{k}");
                    let obj = block.as_object().ok_or_else(|| invalid(&bpath, "Input should be a valid dictionary"))?;
                    self.note_cache_control(obj);
                    let kind = block_type(obj, &bpath)?;
                    match self.user_part(kind, obj, &bpath)? {
                        ContentPart::Text { text } => texts.push(text),
                        other => images.push(other),
                    }
                }
                Ok(texts.join("\n"))
            }
            Some(_) => Err(invalid(format!("{path}.content"), "Input should be a valid string or list")),
        }
    }

    fn assistant(&mut self, content: &Value, path: &str, out: &mut Vec<Message>) -> Result<(), TranslateError> {
        let blocks = match content {
            Value::String(s) => {
                out.push(Message::Assistant {
                    content: Some(Content::Text(s.clone())),
                    tool_calls: None,
                    refusal: None,
                    name: None,
                    function_call: None,
                });
                return Ok(());
            }
            Value::Array(blocks) => blocks,
            _ => return Err(invalid(format!("{path}.content"), "Input should be a valid string or list")),
        };
        let mut texts: Vec<ContentPart> = Vec::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let bpath = format!("{path}.content.{j}");
            let obj = block.as_object().ok_or_else(|| invalid(&bpath, "Input should be a valid dictionary"))?;
            self.note_cache_control(obj);
            match block_type(obj, &bpath)? {
                "text" => texts.push(ContentPart::Text { text: text_field(obj, &bpath)? }),
                "tool_use" => {
                    let id = obj
                        .get("id")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| invalid(format!("{bpath}.id"), "Field required"))?;
                    let name = obj
                        .get("name")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| invalid(format!("{bpath}.name"), "Field required"))?;
                    let arguments = match obj.get("input") {
                        None | Some(Value::Null) => "{}".to_owned(),
                        Some(input @ Value::Object(_)) => input.to_string(),
                        Some(_) => return Err(invalid(format!("{bpath}.input"), "Input should be a valid dictionary")),
                    };
                    calls.push(ToolCall {
                        id: id.to_owned(),
                        kind: "function".to_owned(),
                        function: FunctionCall { name: name.to_owned(), arguments },
                    });
                }
                "thinking" | "redacted_thinking" => self.drop("thinking_blocks"),
                other => {
                    return Err(unsupported(
                        format!("{bpath}.type"),
                        &format!("assistant content blocks of type `{other}` are not supported for this model"),
                    ))
                }
            }
        }
        let content = match texts.as_slice() {
            [] => None,
            [ContentPart::Text { text }] => Some(Content::Text(text.clone())),
            _ => Some(Content::Parts(texts)),
        };
        if content.is_none() && calls.is_empty() {
            // Only thinking blocks (or nothing): an empty assistant turn still keeps the alternation.
            out.push(Message::Assistant {
                content: Some(Content::Text(String::new())),
                tool_calls: None,
                refusal: None,
                name: None,
                function_call: None,
            });
            return Ok(());
        }
        out.push(Message::Assistant {
            content,
            tool_calls: if calls.is_empty() { None } else { Some(calls) },
            refusal: None,
            name: None,
            function_call: None,
        });
        Ok(())
    }

    fn tools(&mut self, tools: Option<&Value>) -> Result<Option<Vec<Tool>>, TranslateError> {
        let items = match tools {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(invalid("tools", "Input should be a valid list")),
        };
        let mut out: Vec<Tool> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("tools.{i}");
            let obj = item.as_object().ok_or_else(|| invalid(&path, "Input should be a valid dictionary"))?;
            match obj.get("type").and_then(Value::as_str) {
                None | Some("custom") => {}
                Some(other) => {
                    return Err(unsupported(
                        format!("{path}.type"),
                        &format!("server tool `{other}` is only available with Anthropic models"),
                    ))
                }
            }
            self.note_cache_control(obj);
            let name = obj
                .get("name")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(format!("{path}.name"), "Field required"))?;
            if out.iter().any(|t| t.function.as_ref().is_some_and(|f| f.name == name)) {
                return Err(invalid(format!("{path}.name"), "Tool names must be unique"));
            }
            let schema = match obj.get("input_schema") {
                Some(schema @ Value::Object(_)) => schema.clone(),
                None | Some(Value::Null) => return Err(invalid(format!("{path}.input_schema"), "Field required")),
                Some(_) => return Err(invalid(format!("{path}.input_schema"), "Input should be a valid dictionary")),
            };
            let description = match obj.get("description") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(invalid(format!("{path}.description"), "Input should be a valid string")),
            };
            out.push(Tool {
                kind: "function".to_owned(),
                function: Some(FunctionDef {
                    name: name.to_owned(),
                    description,
                    parameters: Some(schema),
                    strict: obj.get("strict").and_then(Value::as_bool),
                }),
                extra: Map::new(),
            });
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }
}

/// Drops the Claude Code attribution line(s); `None` when nothing else is left.
fn strip_attribution(text: &str) -> Option<String> {
    if !text.contains(ATTRIBUTION_PREFIX) {
        return Some(text.to_owned());
    }
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with(ATTRIBUTION_PREFIX)).collect();
    let kept = kept.join("\n");
    if kept.trim().is_empty() {
        None
    } else {
        Some(kept)
    }
}

fn block_type<'a>(obj: &'a Map<String, Value>, path: &str) -> Result<&'a str, TranslateError> {
    obj.get("type").and_then(Value::as_str).ok_or_else(|| invalid(format!("{path}.type"), "Field required"))
}

fn text_field(obj: &Map<String, Value>, path: &str) -> Result<String, TranslateError> {
    obj.get("text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| invalid(format!("{path}.text"), "Field required"))
}

/// Image media types Anthropic accepts (and that every vision backend reads).
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

fn image_part(obj: &Map<String, Value>, path: &str) -> Result<ContentPart, TranslateError> {
    let source = obj
        .get("source")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(format!("{path}.source"), "Field required"))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = source
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{path}.source.media_type"), "Field required"))?;
            if !IMAGE_TYPES.contains(&media_type) {
                return Err(invalid(
                    format!("{path}.source.media_type"),
                    "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
                ));
            }
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{path}.source.data"), "Field required"))?;
            format!("data:{media_type};base64,{data}")
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{path}.source.url"), "Field required"))?
            .to_owned(),
        Some("file") => {
            return Err(unsupported(
                format!("{path}.source.type"),
                "Files API images are only available with Anthropic models",
            ))
        }
        _ => return Err(invalid(format!("{path}.source.type"), "Input should be 'base64' or 'url'")),
    };
    Ok(ContentPart::ImageUrl { image_url: ImageUrl::Object { url, detail: None } })
}

/// `document` → a `file` part (base64 PDF) or text (plain-text and content sources).
fn document_part(obj: &Map<String, Value>, path: &str) -> Result<ContentPart, TranslateError> {
    let source = obj
        .get("source")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(format!("{path}.source"), "Field required"))?;
    let title = obj.get("title").and_then(Value::as_str);
    let with_title = |text: String| match title {
        Some(title) => format!("{title}\n{text}"),
        None => text,
    };
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = source.get("media_type").and_then(Value::as_str).unwrap_or("application/pdf");
            if media_type != "application/pdf" {
                return Err(invalid(format!("{path}.source.media_type"), "Input should be 'application/pdf'"));
            }
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{path}.source.data"), "Field required"))?;
            Ok(ContentPart::File {
                file: json!({
                    "filename": title.unwrap_or("document.pdf"),
                    "file_data": format!("data:application/pdf;base64,{data}"),
                }),
            })
        }
        Some("text") => {
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{path}.source.data"), "Field required"))?;
            Ok(ContentPart::Text { text: with_title(data.to_owned()) })
        }
        Some("content") => {
            let text = match source.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(blocks)) => {
                    blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
                }
                _ => return Err(invalid(format!("{path}.source.content"), "Field required")),
            };
            Ok(ContentPart::Text { text: with_title(text) })
        }
        Some("url" | "file") => Err(unsupported(
            format!("{path}.source.type"),
            "URL and Files API documents are only available with Anthropic models",
        )),
        _ => Err(invalid(format!("{path}.source.type"), "Input should be 'base64', 'text', 'content' or 'url'")),
    }
}

#[cfg(test)]
mod tests;
