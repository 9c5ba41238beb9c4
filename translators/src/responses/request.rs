//! `POST /v1/responses` body → hub [`ChatRequest`], for the stateless subset (research §2.5).
//!
//! Mapping (all deterministic; the gateway keeps the [`Echo`] to build the answer):
//! - `instructions` → a leading `developer` message (OpenAI's own semantics for the field).
//! - `input` string → one user message. Items, in order:
//!   - `message` (with or without `type`): roles user/system/developer/assistant; parts `input_text`,
//!     `output_text` → text, `input_image` (URL or data URL) → `image_url`, `input_file` with inline
//!     `file_data` → `file`, `refusal` → the assistant refusal. `file_id` references are refused: the
//!     files live at OpenAI.
//!   - `function_call` → a tool call of the current assistant turn (consecutive calls, and an assistant
//!     message right before them, form one assistant message); `function_call_output` → a `tool` message.
//!   - `custom_tool_call` → a tool call whose arguments are `{"input": <input>}`; `custom_tool_call_output`
//!     → a `tool` message.
//!   - `reasoning` → dropped (the hub has no reasoning input, and there is no encrypted content to replay).
//!   - `compaction` → a user message with the summary text (what this gateway's compaction produces).
//!   - `item_reference` and hosted-tool items → 400, `param` naming the item.
//! - `tools`: flat `function` tools → hub function tools; `custom` tools → a function with one string
//!   parameter [`CUSTOM_TOOL_INPUT`] (a grammar is appended to the description, since no translated
//!   backend can enforce it). `namespace` tools (Codex's MCP and collaboration groups) are flattened to
//!   hub functions named [`namespaced_name`] (`<namespace>__<name>`); `function_call` items with a
//!   `namespace` map the same way, and output items get `namespace` and `name` back. Hosted tools → 400 `param: tools[i].type`, except that `web_search*` tools
//!   (and `web_search_call` items) are dropped when [`DecodeOptions::drop_web_search`] is set (Codex).
//! - `tool_choice`: `none`/`auto`/`required`, `{type: function|custom, name}`, `allowed_tools`.
//! - `max_output_tokens` → `max_completion_tokens`; `reasoning.effort` → `reasoning_effort` (`max` →
//!   `xhigh`, the hub's highest); `text.format` → `response_format`; `user` → `user`.
//! - `stream: true` → a hub stream with `include_usage` (the terminal event carries usage).
//! - `store` is accepted whatever its value (nothing is persisted; rejecting the default `true` breaks the
//!   Agents SDK). `metadata`, `include`, `prompt_cache_key`, `safety_identifier`, `service_tier`,
//!   `truncation`, `top_logprobs`, `max_tool_calls`, `stream_options`, `text.verbosity` are accepted and
//!   echoed but not forwarded. Unknown fields are ignored.
//! - Refused (400, `param` = the field): `previous_response_id`, `conversation`, `background: true`,
//!   `prompt`, `context_management`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::error::TranslateError;
use crate::openai::{
    ChatRequest, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, JsonSchemaFormat, Message, ResponseFormat,
    StreamOptions, Tool, ToolCall, ToolChoice,
};

/// Name of the single string parameter a `custom` tool becomes on the hub.
pub const CUSTOM_TOOL_INPUT: &str = "input";

/// Tool types that run at OpenAI (hosted tools) or need client capabilities the hub cannot express.
const HOSTED_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "web_search_2025_08_26",
    "file_search",
    "code_interpreter",
    "computer",
    "computer_use",
    "computer_use_preview",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
    "tool_search",
];

/// Separator of the hub name of a tool inside a `namespace` tool: `<namespace>__<name>` (tool names
/// must match `^[a-zA-Z0-9_-]+$` at OpenAI and Anthropic, so no dot).
pub const NAMESPACE_SEPARATOR: &str = "__";

/// The hub function name of tool `name` in namespace `namespace`.
pub fn namespaced_name(namespace: &str, name: &str) -> String {
    format!("{namespace}{NAMESPACE_SEPARATOR}{name}")
}

/// What the gateway needs before choosing a route, read without building the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The client's `model`.
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
    /// The first stateful field present (`previous_response_id`, `conversation` or `background`), if any:
    /// such requests can only be passed through to an OpenAI-kind backend.
    pub stateful_param: Option<&'static str>,
}

#[derive(Deserialize)]
struct HeadWire<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    previous_response_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    conversation: Option<&'a RawValue>,
    #[serde(borrow, default)]
    background: Option<&'a RawValue>,
}

/// Reads `model`, `stream` and the stateful fields of a Responses body (cheap: no tree is built).
///
/// Errors (`InvalidRequest`): not a JSON object; `model` missing, empty or not a string (`param:
/// "model"`); `stream` neither a boolean nor null (`param: "stream"`).
pub fn parse_head(body: &[u8]) -> Result<RequestHead, TranslateError> {
    if body.iter().copied().find(|b| !b.is_ascii_whitespace()) != Some(b'{') {
        return Err(TranslateError::InvalidRequest {
            message: "request body must be a JSON object".into(),
            param: None,
        });
    }
    let wire: HeadWire = serde_json::from_slice(body).map_err(|e| TranslateError::InvalidRequest {
        message: format!("request body is not valid JSON: {e}").into(),
        param: None,
    })?;
    let model = match wire.model {
        None => return Err(TranslateError::invalid("model is required", "model")),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map_err(|_| TranslateError::invalid("model must be a string", "model"))?,
    };
    if model.is_empty() {
        return Err(TranslateError::invalid("model must not be empty", "model"));
    }
    let stream = match wire.stream {
        None => false,
        Some(raw) => serde_json::from_str::<Option<bool>>(raw.get())
            .map_err(|_| TranslateError::invalid("stream must be a boolean", "stream"))?
            .unwrap_or(false),
    };
    let present = |raw: Option<&RawValue>| raw.is_some_and(|r| r.get() != "null");
    let stateful_param = if present(wire.previous_response_id) {
        Some("previous_response_id")
    } else if present(wire.conversation) {
        Some("conversation")
    } else if wire.background.is_some_and(|r| r.get() == "true") {
        Some("background")
    } else {
        None
    };
    Ok(RequestHead { model, stream, stateful_param })
}

/// The request fields the `response` object echoes, plus what the encoders need to know about tools.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    /// The client's `model`, echoed as `model`.
    pub model: String,
    /// `instructions` (a string) or `null`.
    pub instructions: Value,
    /// `tools` as sent; function tools get `strict` and `parameters` (`null` when absent), which the
    /// spec's `FunctionTool` requires.
    pub tools: Vec<Value>,
    /// `tool_choice` as sent, `"auto"` by default.
    pub tool_choice: Value,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// `parallel_tool_calls`, `true` by default.
    pub parallel_tool_calls: bool,
    pub max_output_tokens: Option<u64>,
    pub max_tool_calls: Option<u64>,
    /// `text` as sent, `{"format":{"type":"text"}}` by default.
    pub text: Value,
    /// `{effort, summary}` as sent, nulls by default.
    pub reasoning: Value,
    pub metadata: Map<String, Value>,
    /// `store`, `true` by default (echoed; nothing is stored).
    pub store: bool,
    pub user: Option<String>,
    /// `truncation`, `disabled` by default.
    pub truncation: String,
    pub top_logprobs: Option<u64>,
    pub prompt_cache_key: Option<String>,
    pub safety_identifier: Option<String>,
    pub service_tier: Option<String>,
    /// Names of the `custom` tools: hub calls of these become `custom_tool_call` items.
    pub custom_tools: BTreeSet<String>,
    /// Hub name → (namespace, name) for the tools of `namespace` tools, which the hub sees flattened
    /// ([`namespaced_name`]); output items get the client's `name` and `namespace` back.
    pub namespaced: BTreeMap<String, (String, String)>,
    /// The client asked for a reasoning summary (`reasoning.summary`): reasoning text is sent as
    /// `summary` parts; otherwise as `reasoning_text` content.
    pub reasoning_summary: bool,
}

impl Echo {
    /// The client's (namespace, name) of a hub tool name: namespaced tools are un-flattened.
    pub fn client_tool_name<'a>(&'a self, hub_name: &'a str) -> (Option<&'a str>, &'a str) {
        match self.namespaced.get(hub_name) {
            Some((namespace, name)) => (Some(namespace.as_str()), name.as_str()),
            None => (None, hub_name),
        }
    }

    /// An echo with every field at its default, for `model`.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            instructions: Value::Null,
            tools: Vec::new(),
            tool_choice: Value::from("auto"),
            temperature: None,
            top_p: None,
            parallel_tool_calls: true,
            max_output_tokens: None,
            max_tool_calls: None,
            text: json!({"format": {"type": "text"}}),
            reasoning: json!({"effort": null, "summary": null}),
            metadata: Map::new(),
            store: true,
            user: None,
            truncation: "disabled".to_owned(),
            top_logprobs: None,
            prompt_cache_key: None,
            safety_identifier: None,
            service_tier: None,
            custom_tools: BTreeSet::new(),
            namespaced: BTreeMap::new(),
            reasoning_summary: false,
        }
    }
}

/// A decoded Responses request: the hub request to execute and what to echo in the answer.
#[derive(Debug, Clone)]
pub struct DecodedRequest {
    /// The hub request (`model` is the client's; the gateway renames it for the route as usual).
    pub chat: ChatRequest,
    /// Echoed fields; pass to [`encode_response`](super::encode_response) or
    /// [`StreamEncoder::new`](super::StreamEncoder::new).
    pub echo: Echo,
    /// For each hub message, the Responses field it came from (`instructions`, `input`, `input[3]`).
    pub message_origins: Vec<String>,
    /// For each hub tool, the index of the Responses tool it came from (they differ when tools were
    /// dropped).
    pub tool_origins: Vec<usize>,
    /// Request parts accepted but not honoured because [`DecodeOptions`] said so (e.g. `tools[3]`); the
    /// gateway may report them as a warning header.
    pub dropped: Vec<String>,
}

/// Gateway policy knobs for [`decode_request_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Drop `web_search*` tools (and `web_search_call` history items) instead of refusing the request.
    /// Codex declares `web_search` whenever it is enabled; dropping it lets Codex run on backends without
    /// search (the model simply cannot search). Off by default: silently missing tools surprise people.
    pub drop_web_search: bool,
}

impl DecodedRequest {
    /// Rewrites a hub `param` path (from a provider encoder's error) into the client's Responses terms:
    /// `messages[4].content[1]` → `input[3].content[1]`, `reasoning_effort` → `reasoning.effort`,
    /// `max_completion_tokens` → `max_output_tokens`, `response_format…` → `text.format`,
    /// `tools[2].function.parameters` → `tools[2].parameters`. Unknown paths are returned unchanged.
    pub fn responses_param(&self, hub_param: &str) -> String {
        if let Some(rest) = hub_param.strip_prefix("messages[") {
            if let Some((index, suffix)) = rest.split_once(']') {
                if let Some(origin) = index.parse::<usize>().ok().and_then(|i| self.message_origins.get(i)) {
                    // Content indices survive for messages; other suffixes describe hub shapes.
                    return if suffix.starts_with(".content") && origin.starts_with("input[") {
                        format!("{origin}{suffix}")
                    } else {
                        origin.clone()
                    };
                }
            }
            return "input".to_owned();
        }
        match hub_param {
            "reasoning_effort" => return "reasoning.effort".to_owned(),
            "max_completion_tokens" | "max_tokens" => return "max_output_tokens".to_owned(),
            _ => {}
        }
        if hub_param.starts_with("response_format") {
            return "text.format".to_owned();
        }
        if let Some(rest) = hub_param.strip_prefix("tools[") {
            if let Some((index, suffix)) = rest.split_once(']') {
                let suffix = suffix.strip_prefix(".function").unwrap_or(suffix);
                let index = match index.parse::<usize>().ok().and_then(|i| self.tool_origins.get(i)) {
                    Some(origin) => origin.to_string(),
                    None => index.to_owned(),
                };
                return format!("tools[{index}]{suffix}");
            }
        }
        hub_param.to_owned()
    }
}

/// Decodes a Responses request body into the hub request and its echo.
///
/// Errors: `InvalidRequest` for malformed JSON or fields of the wrong type (`param` is the JSON path,
/// e.g. `input[2].content[0].image_url`); `Unsupported` for stateful features, prompt templates, hosted
/// tools and item types the stateless translation cannot honour.
pub fn decode_request(body: &[u8]) -> Result<DecodedRequest, TranslateError> {
    decode_request_with(body, &DecodeOptions::default())
}

/// [`decode_request`] with gateway policy options.
pub fn decode_request_with(body: &[u8], opts: &DecodeOptions) -> Result<DecodedRequest, TranslateError> {
    let head = parse_head(body)?;
    let root: Map<String, Value> = serde_json::from_slice(body).map_err(|e| TranslateError::InvalidRequest {
        message: format!("request body is not a valid JSON object: {e}").into(),
        param: None,
    })?;
    refuse_stateful(&root)?;

    let mut echo = Echo::new(head.model.clone());
    let mut chat = ChatRequest { model: head.model, ..ChatRequest::default() };
    let mut origins = Vec::new();
    let mut tool_origins = Vec::new();
    let mut dropped = Vec::new();

    if head.stream {
        chat.stream = Some(true);
        // The terminal event carries usage, so the hub stream must report it.
        chat.stream_options = Some(StreamOptions { include_usage: Some(true), extra: Map::new() });
    }

    // Tools first: message decoding needs the custom tool names.
    if let Some(tools) = non_null(&root, "tools") {
        let Value::Array(tools) = tools else {
            return Err(TranslateError::invalid("tools must be an array", "tools"));
        };
        let mut hub_tools = Vec::with_capacity(tools.len());
        for (i, tool) in tools.iter().enumerate() {
            let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
            if opts.drop_web_search && kind.starts_with("web_search") {
                dropped.push(format!("tools[{i}]"));
                continue;
            }
            let param = format!("tools[{i}]");
            if kind == "namespace" {
                // Codex groups MCP and collaboration tools in namespaces; the hub sees them flattened.
                let namespace = match tool.get("name") {
                    Some(Value::String(n)) if !n.is_empty() => n.clone(),
                    _ => return Err(TranslateError::invalid("namespace name is required", format!("{param}.name"))),
                };
                let Some(Value::Array(children)) = tool.get("tools") else {
                    return Err(TranslateError::invalid("namespace tools must be an array", format!("{param}.tools")));
                };
                for (j, child) in children.iter().enumerate() {
                    let param = format!("{param}.tools[{j}]");
                    // The flat name is what the model sees: a child of the wrong type is refused like a tool.
                    let name = match child.get("name") {
                        Some(Value::String(n)) if !n.is_empty() => n.clone(),
                        _ => return Err(TranslateError::invalid("tool name is required", format!("{param}.name"))),
                    };
                    let flat = namespaced_name(&namespace, &name);
                    let mut renamed = child.clone();
                    renamed["name"] = Value::from(flat.clone());
                    let (hub, _) = decode_tool(&renamed, &param, &mut echo.custom_tools)?;
                    hub_tools.push(hub);
                    tool_origins.push(i);
                    echo.namespaced.insert(flat, (namespace.clone(), name));
                }
                echo.tools.push(tool.clone());
                continue;
            }
            let (hub, echoed) = decode_tool(tool, &param, &mut echo.custom_tools)?;
            hub_tools.push(hub);
            echo.tools.push(echoed);
            tool_origins.push(i);
        }
        if !hub_tools.is_empty() {
            chat.tools = Some(hub_tools);
        }
    }
    if let Some(choice) = non_null(&root, "tool_choice") {
        chat.tool_choice = Some(decode_tool_choice(choice)?);
        echo.tool_choice = choice.clone();
    }
    if let Some(parallel) = opt_bool(&root, "parallel_tool_calls")? {
        chat.parallel_tool_calls = Some(parallel);
        echo.parallel_tool_calls = parallel;
    }

    match non_null(&root, "instructions") {
        None => {}
        Some(Value::String(text)) => {
            echo.instructions = Value::from(text.clone());
            if !text.is_empty() {
                chat.messages.push(Message::Developer { content: Content::Text(text.clone()), name: None });
                origins.push("instructions".to_owned());
            }
        }
        Some(_) => return Err(TranslateError::invalid("instructions must be a string", "instructions")),
    }
    match non_null(&root, "input") {
        None => return Err(TranslateError::invalid("input is required", "input")),
        Some(Value::String(text)) => {
            chat.messages.push(Message::User { content: Content::Text(text.clone()), name: None });
            origins.push("input".to_owned());
        }
        Some(Value::Array(items)) => {
            let mut decoder = ItemDecoder { messages: &mut chat.messages, origins: &mut origins, pending: None };
            for (i, item) in items.iter().enumerate() {
                if opts.drop_web_search && item.get("type").and_then(Value::as_str) == Some("web_search_call") {
                    dropped.push(format!("input[{i}]"));
                    continue;
                }
                decoder.item(item, i)?;
            }
            decoder.flush();
        }
        Some(_) => return Err(TranslateError::invalid("input must be a string or an array of items", "input")),
    }

    if let Some(max) = opt_u64(&root, "max_output_tokens")? {
        chat.max_completion_tokens = Some(max);
        echo.max_output_tokens = Some(max);
    }
    echo.max_tool_calls = opt_u64(&root, "max_tool_calls")?;
    if let Some(t) = opt_f64(&root, "temperature")? {
        chat.temperature = Some(t);
        echo.temperature = Some(t);
    }
    if let Some(p) = opt_f64(&root, "top_p")? {
        chat.top_p = Some(p);
        echo.top_p = Some(p);
    }
    echo.top_logprobs = opt_u64(&root, "top_logprobs")?;
    if let Some(text) = non_null(&root, "text") {
        let Value::Object(text_obj) = text else {
            return Err(TranslateError::invalid("text must be an object", "text"));
        };
        if let Some(format) = text_obj.get("format").filter(|f| !f.is_null()) {
            chat.response_format = decode_text_format(format)?;
        }
        if let Some(verbosity) = text_obj.get("verbosity").filter(|v| !v.is_null()) {
            // Hub encoders report it as an OpenAI-only parameter.
            chat.extra.insert("verbosity".to_owned(), verbosity.clone());
        }
        echo.text = text.clone();
    }
    if let Some(reasoning) = non_null(&root, "reasoning") {
        let Value::Object(r) = reasoning else {
            return Err(TranslateError::invalid("reasoning must be an object", "reasoning"));
        };
        match r.get("effort") {
            None | Some(Value::Null) => {}
            Some(Value::String(effort)) => {
                // `max` is newer than the hub's scale; `xhigh` is its highest level.
                let effort = if effort == "max" { "xhigh" } else { effort.as_str() };
                chat.reasoning_effort = Some(effort.to_owned());
            }
            Some(_) => return Err(TranslateError::invalid("reasoning.effort must be a string", "reasoning.effort")),
        }
        let summary = r.get("summary").or_else(|| r.get("generate_summary")).filter(|s| !s.is_null());
        echo.reasoning_summary = summary.is_some();
        echo.reasoning = json!({
            "effort": r.get("effort").cloned().unwrap_or(Value::Null),
            "summary": summary.cloned().unwrap_or(Value::Null),
        });
    }
    match non_null(&root, "metadata") {
        None => {}
        Some(Value::Object(m)) => echo.metadata = m.clone(),
        Some(_) => return Err(TranslateError::invalid("metadata must be an object", "metadata")),
    }
    if let Some(store) = opt_bool(&root, "store")? {
        echo.store = store;
    }
    if let Some(user) = opt_string(&root, "user")? {
        chat.user = Some(user.clone());
        echo.user = Some(user);
    }
    if let Some(truncation) = opt_string(&root, "truncation")? {
        echo.truncation = truncation;
    }
    echo.prompt_cache_key = opt_string(&root, "prompt_cache_key")?;
    echo.safety_identifier = opt_string(&root, "safety_identifier")?;
    echo.service_tier = opt_string(&root, "service_tier")?;

    Ok(DecodedRequest { chat, echo, message_origins: origins, tool_origins, dropped })
}

fn refuse_stateful(root: &Map<String, Value>) -> Result<(), TranslateError> {
    if non_null(root, "previous_response_id").is_some() {
        return Err(TranslateError::unsupported(
            "previous_response_id is not supported for this model: the gateway is stateless here; send the full \
             conversation in input (store: false style)",
            "previous_response_id",
        ));
    }
    if non_null(root, "conversation").is_some() {
        return Err(TranslateError::unsupported(
            "conversation is not supported for this model: the gateway stores no conversations here; send the \
             full conversation in input",
            "conversation",
        ));
    }
    if root.get("background") == Some(&Value::Bool(true)) {
        return Err(TranslateError::unsupported(
            "background responses are not supported for this model (they need stored responses)",
            "background",
        ));
    }
    if non_null(root, "prompt").is_some() {
        return Err(TranslateError::unsupported(
            "prompt templates are stored at OpenAI and are not supported for this model; send instructions and \
             input instead",
            "prompt",
        ));
    }
    if non_null(root, "context_management").is_some() {
        return Err(TranslateError::unsupported(
            "context_management is not supported for this model",
            "context_management",
        ));
    }
    Ok(())
}

/// One Responses tool → (hub tool, echoed tool).
fn decode_tool(
    tool: &Value,
    param: &str,
    custom_tools: &mut BTreeSet<String>,
) -> Result<(Tool, Value), TranslateError> {
    let Value::Object(obj) = tool else {
        return Err(TranslateError::invalid("each tool must be an object", param.to_owned()));
    };
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or("function");
    let name = || -> Result<String, TranslateError> {
        match obj.get("name") {
            Some(Value::String(name)) if !name.is_empty() => Ok(name.clone()),
            _ => Err(TranslateError::invalid("tool name is required", format!("{param}.name"))),
        }
    };
    let description = match obj.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => return Err(TranslateError::invalid("description must be a string", format!("{param}.description"))),
    };
    match kind {
        "function" => {
            let name = name()?;
            let parameters = obj.get("parameters").filter(|p| !p.is_null()).cloned();
            if parameters.as_ref().is_some_and(|p| !p.is_object()) {
                return Err(TranslateError::invalid("parameters must be an object", format!("{param}.parameters")));
            }
            let strict = match obj.get("strict") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => return Err(TranslateError::invalid("strict must be a boolean", format!("{param}.strict"))),
            };
            let mut echoed = obj.clone();
            echoed.insert("type".to_owned(), Value::from("function"));
            echoed.entry("parameters").or_insert(Value::Null);
            echoed.entry("strict").or_insert(Value::Null);
            let hub = Tool {
                kind: "function".to_owned(),
                function: Some(FunctionDef { name, description, parameters, strict }),
                extra: Map::new(),
            };
            Ok((hub, Value::Object(echoed)))
        }
        "custom" => {
            let name = name()?;
            let mut description = description.unwrap_or_default();
            if let Some(Value::Object(format)) = obj.get("format") {
                if format.get("type").and_then(Value::as_str) == Some("grammar") {
                    // No translated backend can constrain output to a grammar; the model is told instead.
                    let syntax = format.get("syntax").and_then(Value::as_str).unwrap_or("grammar");
                    let definition = format.get("definition").and_then(Value::as_str).unwrap_or_default();
                    if !description.is_empty() {
                        description.push_str("\n\n");
                    }
                    description.push_str(&format!(
                        "The `{CUSTOM_TOOL_INPUT}` argument must follow this {syntax} grammar:\n{definition}"
                    ));
                }
            }
            custom_tools.insert(name.clone());
            let parameters = json!({
                "type": "object",
                "properties": {CUSTOM_TOOL_INPUT: {"type": "string", "description": "The raw input of the tool."}},
                "required": [CUSTOM_TOOL_INPUT],
                "additionalProperties": false,
            });
            let hub = Tool {
                kind: "function".to_owned(),
                function: Some(FunctionDef {
                    name,
                    description: (!description.is_empty()).then_some(description),
                    parameters: Some(parameters),
                    strict: None,
                }),
                extra: Map::new(),
            };
            Ok((hub, tool.clone()))
        }
        other if HOSTED_TOOLS.contains(&other) || other.starts_with("web_search") || other.starts_with("computer") => {
            Err(TranslateError::unsupported(
                format!("hosted tool `{other}` is only available on OpenAI models; use function tools here"),
                format!("{param}.type"),
            ))
        }
        other => Err(TranslateError::unsupported(
            format!("tool type `{other}` is not supported for this model (only function and custom tools)"),
            format!("{param}.type"),
        )),
    }
}

fn decode_tool_choice(choice: &Value) -> Result<ToolChoice, TranslateError> {
    let named = |name: Option<&Value>, param: &'static str| -> Result<ToolChoice, TranslateError> {
        match name {
            Some(Value::String(name)) => {
                Ok(ToolChoice::Object(json!({"type": "function", "function": {"name": name}})))
            }
            _ => Err(TranslateError::invalid("tool_choice.name must be a string", param)),
        }
    };
    match choice {
        Value::String(mode) => match mode.as_str() {
            "none" | "auto" | "required" => Ok(ToolChoice::Mode(mode.clone())),
            other => Err(TranslateError::invalid(
                format!("unknown tool_choice `{other}` (expected none, auto or required)"),
                "tool_choice",
            )),
        },
        Value::Object(obj) => match obj.get("type").and_then(Value::as_str) {
            Some("function" | "custom") => named(obj.get("name"), "tool_choice.name"),
            Some("allowed_tools") => {
                let mode = obj.get("mode").and_then(Value::as_str).unwrap_or("auto");
                let Some(Value::Array(tools)) = obj.get("tools") else {
                    return Err(TranslateError::invalid("tool_choice.tools must be an array", "tool_choice.tools"));
                };
                let mut hub_tools = Vec::with_capacity(tools.len());
                for (k, t) in tools.iter().enumerate() {
                    match (t.get("type").and_then(Value::as_str), t.get("name").and_then(Value::as_str)) {
                        (Some("function" | "custom") | None, Some(name)) => {
                            hub_tools.push(json!({"type": "function", "function": {"name": name}}));
                        }
                        _ => {
                            return Err(TranslateError::unsupported(
                                "allowed_tools may only name function and custom tools here",
                                format!("tool_choice.tools[{k}]"),
                            ))
                        }
                    }
                }
                Ok(ToolChoice::Object(json!({
                    "type": "allowed_tools",
                    "allowed_tools": {"mode": mode, "tools": hub_tools},
                })))
            }
            Some(other) => Err(TranslateError::unsupported(
                format!("tool_choice `{other}` names a hosted tool, which is only available on OpenAI models"),
                "tool_choice",
            )),
            None => Err(TranslateError::invalid("tool_choice.type is required", "tool_choice.type")),
        },
        _ => Err(TranslateError::invalid("tool_choice must be a string or an object", "tool_choice")),
    }
}

fn decode_text_format(format: &Value) -> Result<Option<ResponseFormat>, TranslateError> {
    let Value::Object(obj) = format else {
        return Err(TranslateError::invalid("text.format must be an object", "text.format"));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let name = match obj.get("name") {
                Some(Value::String(name)) => name.clone(),
                _ => return Err(TranslateError::invalid("text.format.name is required", "text.format.name")),
            };
            let schema = match obj.get("schema") {
                Some(schema @ Value::Object(_)) => Some(schema.clone()),
                _ => return Err(TranslateError::invalid("text.format.schema must be an object", "text.format.schema")),
            };
            Ok(Some(ResponseFormat::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name,
                    description: obj.get("description").and_then(Value::as_str).map(str::to_owned),
                    schema,
                    strict: obj.get("strict").and_then(Value::as_bool),
                },
            }))
        }
        Some(other) => Err(TranslateError::invalid(
            format!("unknown text.format.type `{other}` (expected text, json_object or json_schema)"),
            "text.format.type",
        )),
        None => Err(TranslateError::invalid("text.format.type is required", "text.format.type")),
    }
}

/// An assistant turn being assembled from consecutive assistant items.
struct PendingAssistant {
    text: String,
    has_text: bool,
    refusal: Option<String>,
    tool_calls: Vec<ToolCall>,
    origin: String,
}

struct ItemDecoder<'a> {
    messages: &'a mut Vec<Message>,
    origins: &'a mut Vec<String>,
    pending: Option<PendingAssistant>,
}

impl ItemDecoder<'_> {
    fn flush(&mut self) {
        let Some(p) = self.pending.take() else { return };
        if !p.has_text && p.tool_calls.is_empty() && p.refusal.is_none() {
            return;
        }
        self.messages.push(Message::Assistant {
            content: p.has_text.then_some(Content::Text(p.text)),
            tool_calls: (!p.tool_calls.is_empty()).then_some(p.tool_calls),
            refusal: p.refusal,
            name: None,
            function_call: None,
        });
        self.origins.push(p.origin);
    }

    fn push(&mut self, message: Message, origin: String) {
        self.flush();
        self.messages.push(message);
        self.origins.push(origin);
    }

    fn pending(&mut self, origin: &str) -> &mut PendingAssistant {
        self.pending.get_or_insert_with(|| PendingAssistant {
            text: String::new(),
            has_text: false,
            refusal: None,
            tool_calls: Vec::new(),
            origin: origin.to_owned(),
        })
    }

    fn item(&mut self, item: &Value, i: usize) -> Result<(), TranslateError> {
        let param = format!("input[{i}]");
        let Value::Object(obj) = item else {
            return Err(TranslateError::invalid("each input item must be an object", param));
        };
        let kind = match obj.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            // `EasyInputMessage` may omit `type`.
            None | Some(Value::Null) if obj.contains_key("role") => "message",
            _ => return Err(TranslateError::invalid("input item type is required", format!("{param}.type"))),
        };
        match kind {
            "message" => self.message(obj, &param),
            "function_call" | "custom_tool_call" => {
                let call_id = required_str(obj, "call_id", &param)?;
                let mut name = required_str(obj, "name", &param)?;
                if let Some(Value::String(namespace)) = obj.get("namespace") {
                    name = namespaced_name(namespace, &name);
                }
                let arguments = if kind == "function_call" {
                    match obj.get("arguments") {
                        Some(Value::String(a)) => a.clone(),
                        None | Some(Value::Null) => String::new(),
                        Some(_) => {
                            return Err(TranslateError::invalid(
                                "arguments must be a string",
                                format!("{param}.arguments"),
                            ))
                        }
                    }
                } else {
                    let input = match obj.get("input") {
                        Some(Value::String(s)) => s.as_str(),
                        None | Some(Value::Null) => "",
                        Some(_) => {
                            return Err(TranslateError::invalid("input must be a string", format!("{param}.input")))
                        }
                    };
                    json!({CUSTOM_TOOL_INPUT: input}).to_string()
                };
                // Consecutive calls (and the assistant message before them) form one assistant turn.
                let pending = self.pending(&param);
                pending.tool_calls.push(ToolCall {
                    id: call_id,
                    kind: "function".to_owned(),
                    function: FunctionCall { name, arguments },
                });
                Ok(())
            }
            "function_call_output" | "custom_tool_call_output" => {
                let call_id = required_str(obj, "call_id", &param)?;
                let content = match obj.get("output") {
                    Some(Value::String(s)) => Content::Text(s.clone()),
                    Some(Value::Array(parts)) => Content::Parts(input_parts(parts, &format!("{param}.output"))?),
                    _ => {
                        return Err(TranslateError::invalid(
                            "output must be a string or an array of content parts",
                            format!("{param}.output"),
                        ))
                    }
                };
                self.push(Message::Tool { content, tool_call_id: call_id }, param);
                Ok(())
            }
            // The hub carries no reasoning input and there is no encrypted content to replay.
            "reasoning" => Ok(()),
            // Codex has used both names for its compaction summary item.
            "compaction" | "compaction_summary" => {
                let summary = match obj.get("encrypted_content") {
                    Some(Value::String(s)) => s.clone(),
                    _ => {
                        return Err(TranslateError::invalid(
                            "compaction items need encrypted_content",
                            format!("{param}.encrypted_content"),
                        ))
                    }
                };
                self.push(Message::User { content: Content::Text(summary), name: None }, param);
                Ok(())
            }
            "item_reference" => Err(TranslateError::unsupported(
                "item_reference needs stored items, which this model's backend does not have; send the item itself",
                param,
            )),
            other => Err(TranslateError::unsupported(
                format!("input items of type `{other}` belong to hosted tools and are not supported for this model"),
                format!("{param}.type"),
            )),
        }
    }

    fn message(&mut self, obj: &Map<String, Value>, param: &str) -> Result<(), TranslateError> {
        let role = match obj.get("role") {
            Some(Value::String(role)) => role.as_str(),
            _ => return Err(TranslateError::invalid("message role is required", format!("{param}.role"))),
        };
        let content_param = format!("{param}.content");
        let raw =
            obj.get("content").ok_or_else(|| TranslateError::invalid("content is required", content_param.clone()))?;
        if role == "assistant" {
            // A new assistant message starts a new turn if the current one already has tool calls.
            if self.pending.as_ref().is_some_and(|p| !p.tool_calls.is_empty()) {
                self.flush();
            }
            let pending = self.pending(param);
            match raw {
                Value::String(s) => {
                    pending.text.push_str(s);
                    pending.has_text = true;
                }
                Value::Array(parts) => {
                    for (j, part) in parts.iter().enumerate() {
                        let part_param = format!("{content_param}[{j}]");
                        match part.get("type").and_then(Value::as_str) {
                            Some("output_text" | "input_text" | "text") => {
                                pending.text.push_str(required_text(part, "text", &part_param)?);
                                pending.has_text = true;
                            }
                            Some("refusal") => {
                                let refusal = required_text(part, "refusal", &part_param)?;
                                pending.refusal.get_or_insert_with(String::new).push_str(refusal);
                            }
                            _ => {
                                return Err(TranslateError::unsupported(
                                    "assistant content parts must be output_text or refusal",
                                    format!("{part_param}.type"),
                                ))
                            }
                        }
                    }
                }
                _ => return Err(TranslateError::invalid("content must be a string or an array", content_param)),
            }
            return Ok(());
        }
        let content = match raw {
            Value::String(s) => Content::Text(s.clone()),
            Value::Array(parts) => Content::Parts(input_parts(parts, &content_param)?),
            _ => return Err(TranslateError::invalid("content must be a string or an array", content_param)),
        };
        let message = match role {
            "user" => Message::User { content, name: None },
            "system" => Message::System { content, name: None },
            "developer" => Message::Developer { content, name: None },
            other => {
                return Err(TranslateError::invalid(
                    format!("unknown role `{other}` (expected user, assistant, system or developer)"),
                    format!("{param}.role"),
                ))
            }
        };
        self.push(message, param.to_owned());
        Ok(())
    }
}

/// `input_text` / `input_image` / `input_file` parts → hub parts.
fn input_parts(parts: &[Value], param: &str) -> Result<Vec<ContentPart>, TranslateError> {
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let part_param = format!("{param}[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => {
                out.push(ContentPart::Text { text: required_text(part, "text", &part_param)?.to_owned() })
            }
            Some("input_image") => {
                let url = match part.get("image_url") {
                    Some(Value::String(url)) => url.clone(),
                    _ if part.get("file_id").is_some_and(|f| !f.is_null()) => {
                        return Err(TranslateError::unsupported(
                            "file_id images live in OpenAI's file store; send image_url (a URL or data URL)",
                            format!("{part_param}.file_id"),
                        ))
                    }
                    _ => {
                        return Err(TranslateError::invalid("image_url is required", format!("{part_param}.image_url")))
                    }
                };
                let detail = part.get("detail").and_then(Value::as_str).map(str::to_owned);
                out.push(ContentPart::ImageUrl { image_url: ImageUrl::Object { url, detail } });
            }
            Some("input_file") => {
                if part.get("file_data").is_some_and(Value::is_string) {
                    let mut file = Map::new();
                    for key in ["file_data", "filename"] {
                        if let Some(v) = part.get(key).filter(|v| v.is_string()) {
                            file.insert(key.to_owned(), v.clone());
                        }
                    }
                    out.push(ContentPart::File { file: Value::Object(file) });
                } else {
                    return Err(TranslateError::unsupported(
                        "only inline file_data files are supported for this model (file_id and file_url are not)",
                        part_param,
                    ));
                }
            }
            Some(other) => {
                return Err(TranslateError::unsupported(
                    format!("content part type `{other}` is not supported for this model"),
                    format!("{part_param}.type"),
                ))
            }
            None => return Err(TranslateError::invalid("content part type is required", format!("{part_param}.type"))),
        }
    }
    Ok(out)
}

fn non_null<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn opt_bool(obj: &Map<String, Value>, key: &'static str) -> Result<Option<bool>, TranslateError> {
    match non_null(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(TranslateError::invalid(format!("{key} must be a boolean"), key)),
    }
}

fn opt_f64(obj: &Map<String, Value>, key: &'static str) -> Result<Option<f64>, TranslateError> {
    match non_null(obj, key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| TranslateError::invalid(format!("{key} must be a number"), key)),
    }
}

fn opt_u64(obj: &Map<String, Value>, key: &'static str) -> Result<Option<u64>, TranslateError> {
    match non_null(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| TranslateError::invalid(format!("{key} must be a non-negative integer"), key)),
    }
}

fn opt_string(obj: &Map<String, Value>, key: &'static str) -> Result<Option<String>, TranslateError> {
    match non_null(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TranslateError::invalid(format!("{key} must be a string"), key)),
    }
}

fn required_str(obj: &Map<String, Value>, key: &str, param: &str) -> Result<String, TranslateError> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(TranslateError::invalid(format!("{key} is required"), format!("{param}.{key}"))),
    }
}

fn required_text<'a>(part: &'a Value, key: &str, param: &str) -> Result<&'a str, TranslateError> {
    part.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{key} must be a string"), format!("{param}.{key}")))
}

#[cfg(test)]
mod tests;
