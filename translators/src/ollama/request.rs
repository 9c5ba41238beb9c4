//! OpenAI chat request → Ollama `/api/chat` body (wire-formats §4.6).
//!
//! Every field is either mapped, dropped and reported in `dropped_params`, or rejected with a 400 that
//! names the offending parameter. Nothing is fetched: image URLs are rejected, data URLs are inlined.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::wire;
use crate::error::TranslateError;
use crate::openai::{ChatRequest, Content, ContentPart, Message, ResponseFormat, ToolChoice};

/// Per-request settings that come from the route, not from the client.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions<'a> {
    /// The model name Ollama knows (`llama3.2:latest`, `hf.co/org/repo:Q4_K_M`), gateway prefix stripped.
    pub upstream_model: &'a str,
    /// Ask Ollama for an NDJSON stream. May differ from the client's `stream` (the gateway can stream
    /// upstream and aggregate).
    pub stream: bool,
    /// `options.num_ctx` from config (Ollama's default context is small and truncates silently).
    pub num_ctx: Option<u64>,
    /// `keep_alive` from config: a Go duration (`"10m"`) or seconds (`"300"`, `"-1"` = forever).
    pub keep_alive: Option<&'a str>,
}

/// The encoded body plus what was left out.
#[derive(Debug, Clone)]
pub struct EncodedRequest {
    /// JSON body for `POST {base}/api/chat`.
    pub body: Vec<u8>,
    /// Client parameters that Ollama has no equivalent for and that were dropped (for a warning header or
    /// log), in a stable order without duplicates.
    pub dropped_params: Vec<&'static str>,
}

/// Image types Ollama's OpenAI layer accepts (`data:image/{jpeg,jpg,png,webp};base64,`, or no type).
const IMAGE_MIMES: &[&str] = &["image/jpeg", "image/jpg", "image/png", "image/webp", ""];

/// Builds the `/api/chat` body.
///
/// Errors: `InvalidRequest` for malformed input (empty `messages`, unparsable tool arguments, bad data
/// URLs, `stream_options` without `stream`), `Unsupported` for what Ollama cannot do (`n > 1`, forced tool
/// choice, image URLs, GIF, audio and file parts). Both carry the JSON path in `param`.
pub fn encode_request(req: &ChatRequest, opts: &EncodeOptions) -> Result<EncodedRequest, TranslateError> {
    let mut dropped = Vec::new();
    validate_top_level(req)?;

    let messages = encode_messages(&req.messages, &mut dropped)?;
    let tools = encode_tools(req)?;

    let options = wire::Options {
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        stop: encode_stop(req),
        num_predict: req.max_output_tokens(),
        num_ctx: opts.num_ctx,
    };

    let format = match &req.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(Value::from("json")),
        // `name`, `description` and `strict` have no Ollama equivalent; without a schema, plain JSON mode.
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            Some(json_schema.schema.clone().unwrap_or_else(|| Value::from("json")))
        }
    };

    let think = match req.reasoning_effort.as_deref() {
        None => None,
        Some(effort) => Some(encode_think(effort)?),
    };

    if req.logit_bias.is_some() {
        dropped.push("logit_bias");
    }
    if req.user.is_some() {
        dropped.push("user");
    }
    if req.parallel_tool_calls == Some(false) {
        // Ollama may return several calls in one turn; it has no switch to prevent that.
        dropped.push("parallel_tool_calls");
    }
    for key in crate::openai::OPENAI_ONLY_PARAMS {
        if req.extra.contains_key(*key) {
            dropped.push(*key);
        }
    }

    let body = wire::ChatRequest {
        model: opts.upstream_model,
        messages,
        tools,
        format,
        options: if options.is_empty() { None } else { Some(options) },
        stream: opts.stream,
        keep_alive: opts.keep_alive.map(wire::KeepAlive::from_config),
        think,
        logprobs: req.logprobs,
        top_logprobs: req.top_logprobs,
    };
    let body = serde_json::to_vec(&body).map_err(|e| TranslateError::Protocol(format!("encode: {e}").into()))?;
    dropped.dedup();
    Ok(EncodedRequest { body, dropped_params: dropped })
}

fn validate_top_level(req: &ChatRequest) -> Result<(), TranslateError> {
    if req.messages.is_empty() {
        // An empty list makes Ollama load (or unload) the model instead of answering.
        return Err(TranslateError::invalid("messages must contain at least one message", "messages"));
    }
    match req.n {
        None | Some(1) => {}
        Some(0) => return Err(TranslateError::invalid("n must be at least 1", "n")),
        Some(_) => return Err(TranslateError::unsupported("Ollama returns one choice per request; n must be 1", "n")),
    }
    if req.stream_options.is_some() && !req.is_stream() {
        return Err(TranslateError::invalid("stream_options is only allowed when stream is true", "stream_options"));
    }
    check_range(req.temperature, 0.0, 2.0, "temperature")?;
    check_range(req.top_p, 0.0, 1.0, "top_p")?;
    check_range(req.presence_penalty, -2.0, 2.0, "presence_penalty")?;
    check_range(req.frequency_penalty, -2.0, 2.0, "frequency_penalty")?;
    if let Some(n) = req.top_logprobs {
        if n > 20 {
            return Err(TranslateError::invalid("top_logprobs must be between 0 and 20", "top_logprobs"));
        }
    }
    Ok(())
}

fn check_range(value: Option<f64>, min: f64, max: f64, param: &'static str) -> Result<(), TranslateError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => {
            Err(TranslateError::invalid(format!("{param} must be between {min} and {max}"), param))
        }
        _ => Ok(()),
    }
}

fn encode_stop(req: &ChatRequest) -> Option<Vec<String>> {
    let stop: Vec<String> = req.stop.as_ref()?.to_vec().into_iter().filter(|s| !s.is_empty()).collect();
    if stop.is_empty() {
        None
    } else {
        Some(stop)
    }
}

/// `reasoning_effort` → `think`, with the same clamp as Ollama's OpenAI layer.
fn encode_think(effort: &str) -> Result<wire::Think, TranslateError> {
    Ok(match effort {
        "none" => wire::Think::Enabled(false),
        "minimal" | "low" => wire::Think::Level("low"),
        "medium" => wire::Think::Level("medium"),
        "high" => wire::Think::Level("high"),
        "xhigh" => wire::Think::Level("max"),
        _ => {
            return Err(TranslateError::invalid(
                "reasoning_effort must be one of none, minimal, low, medium, high, xhigh",
                "reasoning_effort",
            ))
        }
    })
}

fn encode_tools<'a>(req: &'a ChatRequest) -> Result<Option<Vec<wire::Tool<'a>>>, TranslateError> {
    match &req.tool_choice {
        None => {}
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            // The model may not call a tool it is not told about.
            "none" => return Ok(None),
            "auto" => {}
            "required" => {
                return Err(TranslateError::unsupported(
                    "tool_choice \"required\" cannot be enforced by Ollama; use \"auto\" or omit tool_choice",
                    "tool_choice",
                ))
            }
            _ => {
                return Err(TranslateError::invalid(
                    "tool_choice must be \"none\", \"auto\", \"required\" or an object",
                    "tool_choice",
                ))
            }
        },
        Some(ToolChoice::Object(_)) => {
            return Err(TranslateError::unsupported(
                "forcing a specific tool (named or allowed_tools tool_choice) cannot be enforced by Ollama; \
                 use \"auto\" or omit tool_choice",
                "tool_choice",
            ))
        }
    }
    let Some(tools) = &req.tools else {
        return Ok(None);
    };
    if tools.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let function = match (&tool.function, tool.kind.as_str()) {
            (Some(function), "function") => function,
            (_, "function") => {
                return Err(TranslateError::invalid(
                    "function tools need a function object",
                    format!("tools[{i}].function"),
                ))
            }
            _ => {
                return Err(TranslateError::unsupported(
                    "Ollama supports only function tools",
                    format!("tools[{i}].type"),
                ))
            }
        };
        let parameters = match &function.parameters {
            Some(params @ Value::Object(_)) => params.clone(),
            // No parameters = a no-argument function; Ollama wants an object schema either way.
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(_) => {
                return Err(TranslateError::invalid(
                    "function parameters must be a JSON Schema object",
                    format!("tools[{i}].function.parameters"),
                ))
            }
        };
        out.push(wire::Tool {
            kind: "function",
            function: wire::ToolFunction {
                name: &function.name,
                description: function.description.as_deref(),
                parameters,
            },
        });
    }
    Ok(Some(out))
}

fn encode_messages<'a>(
    messages: &'a [Message],
    dropped: &mut Vec<&'static str>,
) -> Result<Vec<wire::Message<'a>>, TranslateError> {
    let mut out = Vec::with_capacity(messages.len());
    // Tool-call id → function name from earlier assistant turns; a later call with the same id wins, as in
    // Ollama's own OpenAI layer.
    let mut tool_names: HashMap<&'a str, &'a str> = HashMap::new();
    let mut named = false;
    for (i, message) in messages.iter().enumerate() {
        let encoded = match message {
            Message::System { content, name } | Message::Developer { content, name } => {
                named |= name.is_some();
                wire::Message::text("system", text_only(content, i)?)
            }
            Message::User { content, name } => {
                named |= name.is_some();
                encode_user(content, i)?
            }
            Message::Assistant { content, tool_calls, name, function_call, .. } => {
                named |= name.is_some();
                if function_call.is_some() {
                    return Err(TranslateError::unsupported(
                        "legacy function_call messages are not supported; use tool_calls",
                        format!("messages[{i}].function_call"),
                    ));
                }
                let text = match content {
                    Some(content) => text_only(content, i)?,
                    None => String::new(),
                };
                let mut message = wire::Message::text("assistant", text);
                for (j, call) in tool_calls.iter().flatten().enumerate() {
                    tool_names.insert(call.id.as_str(), call.function.name.as_str());
                    message.tool_calls.push(wire::ToolCall {
                        id: if call.id.is_empty() { None } else { Some(call.id.as_str()) },
                        function: wire::ToolCallFunction {
                            index: u32::try_from(j).unwrap_or(u32::MAX),
                            name: &call.function.name,
                            arguments: parse_arguments(
                                &call.function.arguments,
                                &format!("messages[{i}].tool_calls[{j}].function.arguments"),
                            )?,
                        },
                    });
                }
                message
            }
            Message::Tool { content, tool_call_id } => {
                let mut message = wire::Message::text("tool", text_only(content, i)?);
                message.tool_call_id = Some(tool_call_id.as_str());
                message.tool_name = tool_names.get(tool_call_id.as_str()).copied();
                message
            }
            Message::Function { .. } => {
                return Err(TranslateError::unsupported(
                    "legacy function messages are not supported; use tool messages",
                    format!("messages[{i}].role"),
                ))
            }
        };
        out.push(encoded);
    }
    if named {
        dropped.push("messages[].name");
    }
    Ok(out)
}

/// Tool-call arguments string → JSON object. `""` means no arguments; anything but an object is a 400.
fn parse_arguments(arguments: &str, param: &str) -> Result<Box<RawValue>, TranslateError> {
    let trimmed = arguments.trim();
    if trimmed.is_empty() {
        return RawValue::from_string("{}".to_owned())
            .map_err(|e| TranslateError::Protocol(format!("encode: {e}").into()));
    }
    match serde_json::from_str::<Box<RawValue>>(trimmed) {
        Ok(raw) if raw.get().starts_with('{') => Ok(raw),
        Ok(_) => Err(TranslateError::invalid("tool call arguments must be a JSON object", param.to_owned())),
        Err(e) => {
            Err(TranslateError::invalid(format!("tool call arguments are not valid JSON: {e}"), param.to_owned()))
        }
    }
}

/// Text of a system/developer/assistant/tool message; parts are joined with `\n`.
fn text_only(content: &Content, i: usize) -> Result<String, TranslateError> {
    if let Content::Parts(parts) = content {
        for (j, part) in parts.iter().enumerate() {
            if !matches!(part, ContentPart::Text { .. } | ContentPart::Refusal { .. }) {
                return Err(TranslateError::invalid(
                    "only text parts are allowed in this message",
                    format!("messages[{i}].content[{j}]"),
                ));
            }
        }
    }
    Ok(content.joined_text("\n"))
}

/// A user turn: texts joined with `\n` into one message (Ollama's own OpenAI layer splits parts into
/// separate messages, which confuses chat templates), images inlined as raw base64.
fn encode_user<'a>(content: &Content, i: usize) -> Result<wire::Message<'a>, TranslateError> {
    let parts = match content {
        Content::Text(text) => return Ok(wire::Message::text("user", text.clone())),
        Content::Parts(parts) => parts,
    };
    let mut text = String::new();
    let mut images = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match part {
            ContentPart::Text { text: t } => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
            }
            ContentPart::ImageUrl { image_url } => images.push(decode_image(image_url.url(), i, j)?),
            ContentPart::InputAudio { .. } => {
                return Err(TranslateError::unsupported(
                    "audio input is not supported by Ollama",
                    format!("messages[{i}].content[{j}]"),
                ))
            }
            ContentPart::File { .. } => {
                return Err(TranslateError::unsupported(
                    "file input is not supported by Ollama",
                    format!("messages[{i}].content[{j}]"),
                ))
            }
            ContentPart::Refusal { .. } | ContentPart::Unknown => {
                return Err(TranslateError::invalid(
                    "unsupported content part type in a user message",
                    format!("messages[{i}].content[{j}].type"),
                ))
            }
        }
    }
    let mut message = wire::Message::text("user", text);
    message.images = images;
    Ok(message)
}

/// `data:<mime>;base64,<data>` → normalized standard base64 (no whitespace, `+/` alphabet, padded).
fn decode_image(url: &str, i: usize, j: usize) -> Result<String, TranslateError> {
    let param = || format!("messages[{i}].content[{j}].image_url.url");
    let Some(rest) = strip_prefix_ignore_case(url.trim_start(), "data:") else {
        return Err(TranslateError::unsupported("image URLs are not supported by Ollama; send a data URL", param()));
    };
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(TranslateError::invalid("malformed data URL: missing ','", param()));
    };
    let mut meta_parts = meta.split(';');
    let mime = meta_parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if !meta_parts.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err(TranslateError::invalid("image data URLs must be base64-encoded (;base64,)", param()));
    }
    if mime == "image/gif" {
        return Err(TranslateError::unsupported(
            "GIF images are not supported by Ollama; send JPEG, PNG or WebP",
            param(),
        ));
    }
    if !IMAGE_MIMES.contains(&mime.as_str()) {
        return Err(TranslateError::unsupported(
            format!("image type '{mime}' is not supported by Ollama; send JPEG, PNG or WebP"),
            param(),
        ));
    }
    let mut b64: String = data
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    if b64.contains('%') {
        return Err(TranslateError::invalid("image data must be base64, not percent-encoded", param()));
    }
    let unpadded = b64.trim_end_matches('=').len();
    b64.truncate(unpadded);
    match unpadded % 4 {
        0 => {}
        2 => b64.push_str("=="),
        3 => b64.push('='),
        _ => return Err(TranslateError::invalid("image data is not valid base64", param())),
    }
    if b64.is_empty() || base64::engine::general_purpose::STANDARD.decode(&b64).is_err() {
        return Err(TranslateError::invalid("image data is not valid base64", param()));
    }
    Ok(b64)
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
