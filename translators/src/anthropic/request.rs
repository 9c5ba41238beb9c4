//! OpenAI chat request → Anthropic `POST /v1/messages` body (wire-formats §3.1–§3.3).
//!
//! Policy decisions (all deterministic; the gateway reports `dropped_params` to the client):
//! - **System prompt**: every `system`/`developer` message, wherever it sits, is hoisted into the top-level
//!   `system` *string*, in order, joined with `"\n"` (Anthropic's own compat layer does the same).
//!   Whitespace-only parts are dropped; positions of mid-conversation system messages are lost.
//! - **Turns**: consecutive same-role turns are merged; `tool` messages become `tool_result` blocks of a
//!   user turn, and inside a user turn every `tool_result` comes first. An assistant message with no
//!   non-whitespace text and no tool calls is skipped. Every `tool_use` must be answered in the very next
//!   user turn and every `tool_result` must answer the turn before it, else 400 (never an opaque upstream
//!   400).
//! - **Leading assistant turn**: a placeholder user turn [`LEADING_PLACEHOLDER`] is inserted (as
//!   TensorZero does), because greeting-first conversations are common.
//! - **Trailing assistant turn** (prefill): its trailing whitespace is trimmed (Anthropic rejects it).
//!   Models that reject prefill altogether answer with their own explicit 400.
//! - **Tool-call ids** are made to match `^[a-zA-Z0-9_-]+$` by [`sanitize_tool_id`], identically for
//!   `tool_calls[].id` and `tool_call_id`.
//! - **History with tool blocks but no `tools`**: a permissive definition is added for every tool name
//!   used in the history and `tool_choice` becomes `none`, so the request stays valid and the model
//!   cannot call a tool the client did not offer.
//! - **`max_tokens`**: `max_completion_tokens` ?? `max_tokens`, else `EncodeOptions::default_max_tokens`,
//!   else [`default_max_tokens`] (per model family).
//! - **Sampling**: `temperature` above 1 is clamped to 1 and reported; with both `temperature` and
//!   `top_p`, only `temperature` is sent (newer models reject both) and `top_p` is reported.
//! - **JSON mode**: `response_format` `json_schema`/`json_object` becomes a forced tool named
//!   [`JSON_TOOL_NAME`]; decode with `decode_response_json_mode` / `StreamDecoder::with_json_mode`.
//! - **Reasoning**: `reasoning_effort` becomes `thinking.budget_tokens` (minimal/low 1024, medium 2048,
//!   high 4096, xhigh 8192; `none` disables), shrunk below `max_tokens` (400 when that leaves < 1024);
//!   `temperature`/`top_p` are dropped and reported.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::error::TranslateError;
use crate::openai::{ChatRequest, Content, ContentPart, Message, ResponseFormat, ToolChoice as OpenAiToolChoice};

use super::wire::{
    ContentBlock, ImageSource, MessageParam, MessagesRequest, Metadata, Role, Thinking, ToolChoice, ToolDef,
    ToolResultContent,
};

/// Name of the forced tool that carries `response_format` JSON answers.
pub const JSON_TOOL_NAME: &str = "json_response";
/// Text of the user turn inserted before a leading assistant turn.
pub const LEADING_PLACEHOLDER: &str = "[listening]";
/// Largest decoded image Anthropic accepts (5 MB per image).
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
/// Anthropic's `stop_sequences` limit mirrors OpenAI's `stop` limit.
const MAX_STOP_SEQUENCES: usize = 4;
/// Smallest `thinking.budget_tokens` Anthropic accepts.
const MIN_THINKING_BUDGET: u64 = 1024;

/// What the gateway decided about the upstream call.
#[derive(Debug, Clone)]
pub struct EncodeOptions<'a> {
    /// Model name to send upstream (gateway prefix already stripped).
    pub upstream_model: &'a str,
    /// Whether to ask Anthropic for a stream (the gateway may stream upstream for a non-stream client).
    pub stream: bool,
    /// Configured default for `max_tokens`; `None` uses [`default_max_tokens`].
    pub default_max_tokens: Option<u64>,
}

/// The encoded upstream body and what was dropped on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRequest {
    /// JSON body for `POST /v1/messages`.
    pub body: Vec<u8>,
    /// OpenAI parameters that were dropped or altered (e.g. `seed`, `temperature` when clamped), in a
    /// stable order, without duplicates; for a response header such as `x-gateway-dropped-params`.
    pub dropped_params: Vec<&'static str>,
    /// `Some(JSON_TOOL_NAME)` when `response_format` asked for JSON: decode the answer with
    /// `decode_response_json_mode` / `StreamDecoder::with_json_mode` and this name.
    pub json_mode_tool: Option<&'static str>,
}

/// Per-family default `max_tokens` (each family's maximum output without beta headers), used when
/// neither the client nor the configuration gives one:
///
/// | model contains | default |
/// |---|---|
/// | `claude-3-5-` | 8192 |
/// | `claude-3-7-` | 64000 |
/// | `sonnet-4…`, `haiku-4…` (4, 4-5, …) | 64000 |
/// | `opus-4`, `opus-4-1` | 32000 |
/// | `opus-4-5` and later opus 4.x | 64000 |
/// | anything else (claude-3 haiku/opus/sonnet, claude-2, unknown) | 4096 |
pub fn default_max_tokens(model: &str) -> u64 {
    let model = model.to_ascii_lowercase();
    if model.contains("claude-3-5-") || model.ends_with("claude-3-5") {
        return 8192;
    }
    if model.contains("claude-3-7-") || model.ends_with("claude-3-7") {
        return 64000;
    }
    for family in ["sonnet-4", "haiku-4"] {
        if family_minor(&model, family).is_some() {
            return 64000;
        }
    }
    if let Some(minor) = family_minor(&model, "opus-4") {
        return if minor < 5 { 32000 } else { 64000 };
    }
    4096
}

/// For `…<family>[-<minor>][-<date>]`, the minor version (0 when absent). `None` if `family` is absent
/// or followed by another digit (`opus-40`).
fn family_minor(model: &str, family: &str) -> Option<u32> {
    let start = model.find(family)? + family.len();
    let rest = &model[start..];
    if rest.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let Some(rest) = rest.strip_prefix('-') else {
        return Some(0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    // A date suffix (`-20250514`) is not a minor version.
    if digits.is_empty() || digits.len() > 2 {
        return Some(0);
    }
    digits.parse().ok()
}

/// Makes a tool-call id match Anthropic's `^[a-zA-Z0-9_-]+$`. Valid ids are returned unchanged; otherwise
/// every other character becomes `_` and `_` plus an FNV-1a hash of the original id is appended, so
/// distinct ids stay distinct. Deterministic: the gateway is stateless across turns.
pub fn sanitize_tool_id(id: &str) -> String {
    if !id.is_empty() && id.bytes().all(is_id_byte) {
        return id.to_owned();
    }
    let mut out: String = id.chars().map(|c| if c.is_ascii() && is_id_byte(c as u8) { c } else { '_' }).collect();
    let mut hash: u32 = 0x811c_9dc5;
    for byte in id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    out.push_str(&format!("_{hash:08x}"));
    out
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Translates a chat request into an Anthropic Messages body.
///
/// Errors: `InvalidRequest` (→ 400) for requests Anthropic would reject or that are self-contradictory,
/// with `param` set to the offending JSON path; `Unsupported` (→ 400 `unsupported_parameter`) for
/// features Anthropic lacks (`n > 1`, `logprobs`, audio/file parts, legacy functions).
pub fn encode_request(req: &ChatRequest, opts: &EncodeOptions) -> Result<EncodedRequest, TranslateError> {
    let mut dropped = Dropped::default();
    check_unsupported(req)?;

    let max_tokens = match (req.max_completion_tokens, req.max_tokens) {
        (Some(0), _) => {
            return Err(TranslateError::invalid("max_completion_tokens must be at least 1", "max_completion_tokens"))
        }
        (None, Some(0)) => return Err(TranslateError::invalid("max_tokens must be at least 1", "max_tokens")),
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => opts.default_max_tokens.unwrap_or_else(|| default_max_tokens(opts.upstream_model)),
    };
    if req.max_completion_tokens.is_some() && req.max_tokens.is_some() {
        // Both given: the authoritative one wins, the deprecated one is ignored.
        dropped.push("max_tokens");
    }

    let (mut temperature, mut top_p) = sampling(req, &mut dropped)?;
    let stop_sequences = stop_sequences(req, &mut dropped)?;

    let Conversation { system, messages, history_tool_names } = convert_messages(&req.messages)?;

    let tools_and_choice = tools_and_choice(req, history_tool_names)?;

    let thinking = thinking(req.reasoning_effort.as_deref(), max_tokens, tools_and_choice.choice.as_ref())?;
    if thinking.is_some() {
        // Anthropic rejects sampling changes with extended thinking.
        if temperature.take().is_some() {
            dropped.push("temperature");
        }
        if top_p.take().is_some() {
            dropped.push("top_p");
        }
    }

    let metadata = match req.user.as_deref() {
        None => None,
        Some(user) if is_opaque_user_id(user) => Some(Metadata { user_id: user.to_owned() }),
        Some(_) => {
            dropped.push("user");
            None
        }
    };

    if req.presence_penalty.is_some() {
        dropped.push("presence_penalty");
    }
    if req.frequency_penalty.is_some() {
        dropped.push("frequency_penalty");
    }
    if req.seed.is_some() {
        dropped.push("seed");
    }
    if req.logit_bias.is_some() {
        dropped.push("logit_bias");
    }
    for name in crate::openai::OPENAI_ONLY_PARAMS {
        if req.extra.get(*name).is_some_and(|v| !v.is_null()) {
            dropped.push(name);
        }
    }

    let body = MessagesRequest {
        model: opts.upstream_model.to_owned(),
        max_tokens,
        messages,
        system,
        stop_sequences,
        temperature,
        top_p,
        tools: tools_and_choice.tools,
        tool_choice: tools_and_choice.choice,
        metadata,
        thinking,
        stream: opts.stream,
    };
    let body = serde_json::to_vec(&body)
        .map_err(|_| TranslateError::Protocol("failed to serialize the Anthropic request".into()))?;
    Ok(EncodedRequest { body, dropped_params: dropped.0, json_mode_tool: tools_and_choice.json_mode_tool })
}

/// `reasoning_effort` → `thinking`. The budget is carved out of `max_tokens` (OpenAI's
/// `max_completion_tokens` includes reasoning tokens), so it is shrunk below `max_tokens` when needed.
fn thinking(
    effort: Option<&str>,
    max_tokens: u64,
    choice: Option<&ToolChoice>,
) -> Result<Option<Thinking>, TranslateError> {
    let Some(effort) = effort else { return Ok(None) };
    let budget: u64 = match effort {
        "none" => return Ok(None),
        "minimal" | "low" => 1024,
        "medium" => 2048,
        "high" => 4096,
        "xhigh" | "max" => 8192,
        _ => {
            return Err(TranslateError::invalid(
                format!("unknown reasoning_effort `{effort}` (expected none, minimal, low, medium, high or xhigh)"),
                "reasoning_effort",
            ))
        }
    };
    if choice.is_some_and(ToolChoice::forces_tool_use) {
        return Err(TranslateError::unsupported(
            "reasoning_effort cannot be combined with forced tool use (tool_choice `required` or a named tool, or \
             response_format json) on Anthropic",
            "reasoning_effort",
        ));
    }
    let budget = if budget < max_tokens { budget } else { max_tokens.saturating_sub(1) };
    if budget < MIN_THINKING_BUDGET {
        return Err(TranslateError::invalid(
            format!(
                "reasoning_effort needs a thinking budget of at least {MIN_THINKING_BUDGET} tokens below max_tokens; \
                 raise max_completion_tokens above {MIN_THINKING_BUDGET}"
            ),
            "reasoning_effort",
        ));
    }
    Ok(Some(Thinking::Enabled { budget_tokens: budget }))
}

/// Parameters rejected outright.
fn check_unsupported(req: &ChatRequest) -> Result<(), TranslateError> {
    if req.messages.is_empty() {
        return Err(TranslateError::invalid("messages must contain at least one message", "messages"));
    }
    match req.n {
        Some(0) => return Err(TranslateError::invalid("n must be at least 1", "n")),
        Some(n) if n > 1 => {
            return Err(TranslateError::unsupported("Anthropic models return one choice; n must be 1", "n"));
        }
        _ => {}
    }
    if req.logprobs == Some(true) {
        return Err(TranslateError::unsupported("logprobs are not available for Anthropic models", "logprobs"));
    }
    if req.top_logprobs.is_some_and(|n| n > 0) {
        return Err(TranslateError::unsupported("logprobs are not available for Anthropic models", "top_logprobs"));
    }
    if req.stream_options.is_some() && !req.is_stream() {
        return Err(TranslateError::invalid("stream_options is only allowed when stream is true", "stream_options"));
    }
    for legacy in ["functions", "function_call"] {
        if req.extra.get(legacy).is_some_and(|v| !v.is_null()) {
            return Err(TranslateError::unsupported(
                "the legacy functions API is not supported for Anthropic models; use tools and tool_choice",
                legacy,
            ));
        }
    }
    Ok(())
}

/// `temperature` and `top_p` after validation, clamping and the both-given rule.
fn sampling(req: &ChatRequest, dropped: &mut Dropped) -> Result<(Option<f64>, Option<f64>), TranslateError> {
    let temperature = match req.temperature {
        None => None,
        Some(t) if !(0.0..=2.0).contains(&t) => {
            return Err(TranslateError::invalid("temperature must be between 0 and 2", "temperature"));
        }
        Some(t) if t > 1.0 => {
            // Anthropic's range is 0..1; clamp rather than scale (t/2 would change 0..1 semantics).
            dropped.push("temperature");
            Some(1.0)
        }
        Some(t) => Some(t),
    };
    let top_p = match req.top_p {
        None => None,
        Some(p) if !(0.0..=1.0).contains(&p) => {
            return Err(TranslateError::invalid("top_p must be between 0 and 1", "top_p"));
        }
        Some(_) if temperature.is_some() => {
            dropped.push("top_p");
            None
        }
        Some(p) => Some(p),
    };
    Ok((temperature, top_p))
}

/// `stop` → `stop_sequences`: at most 4, empty and whitespace-only entries dropped.
fn stop_sequences(req: &ChatRequest, dropped: &mut Dropped) -> Result<Option<Vec<String>>, TranslateError> {
    let Some(stop) = &req.stop else {
        return Ok(None);
    };
    let all = stop.to_vec();
    if all.len() > MAX_STOP_SEQUENCES {
        return Err(TranslateError::invalid(
            format!("stop accepts at most {MAX_STOP_SEQUENCES} sequences, got {}", all.len()),
            "stop",
        ));
    }
    let kept: Vec<String> = all.iter().filter(|s| !s.trim().is_empty()).cloned().collect();
    if kept.len() != all.len() {
        dropped.push("stop");
    }
    Ok(if kept.is_empty() { None } else { Some(kept) })
}

/// `user` values that look like an email address or a phone number are personal data: Anthropic's
/// `metadata.user_id` must be an opaque id.
fn is_opaque_user_id(user: &str) -> bool {
    let user = user.trim();
    if user.is_empty() || user.contains('@') {
        return false;
    }
    let digits = user.bytes().filter(u8::is_ascii_digit).count();
    let phone_like = user.bytes().all(|b| b.is_ascii_digit() || b" +-().".contains(&b));
    !(phone_like && digits >= 7)
}

#[derive(Default)]
struct Dropped(Vec<&'static str>);

impl Dropped {
    fn push(&mut self, name: &'static str) {
        if !self.0.contains(&name) {
            self.0.push(name);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------------

struct Conversation {
    system: Option<String>,
    messages: Vec<MessageParam>,
    /// Tool names used by `tool_use` blocks of the history, for requests without `tools`.
    history_tool_names: BTreeSet<String>,
}

/// Where a `tool_use`/`tool_result` block came from, for pairing validation and error paths.
struct ToolUseOrigin {
    turn: usize,
    id: String,
    message: usize,
    call: usize,
}

struct ToolResultOrigin {
    turn: usize,
    id: String,
    message: usize,
}

#[derive(Default)]
struct TurnBuilder {
    turns: Vec<MessageParam>,
    /// Original message index of the first message of each turn.
    first_message: Vec<usize>,
}

impl TurnBuilder {
    /// Appends blocks to the last turn when it has the same role, else starts a turn. Returns the turn index.
    fn push(&mut self, role: Role, message: usize, blocks: Vec<ContentBlock>) -> usize {
        match self.turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => {
                self.turns.push(MessageParam { role, content: blocks });
                self.first_message.push(message);
            }
        }
        self.turns.len() - 1
    }
}

fn convert_messages(messages: &[Message]) -> Result<Conversation, TranslateError> {
    let mut system_parts: Vec<String> = Vec::new();
    let mut builder = TurnBuilder::default();
    let mut tool_uses: Vec<ToolUseOrigin> = Vec::new();
    let mut tool_results: Vec<ToolResultOrigin> = Vec::new();
    let mut history_tool_names = BTreeSet::new();

    for (i, message) in messages.iter().enumerate() {
        match message {
            Message::System { content, .. } | Message::Developer { content, .. } => {
                system_text(content, i, &mut system_parts)?;
            }
            Message::User { content, .. } => {
                let blocks = user_blocks(content, i)?;
                if blocks.is_empty() {
                    return Err(TranslateError::invalid(
                        format!("messages[{i}]: user message content must not be empty"),
                        format!("messages[{i}].content"),
                    ));
                }
                builder.push(Role::User, i, blocks);
            }
            Message::Assistant { content, tool_calls, refusal, function_call, .. } => {
                if function_call.is_some() {
                    return Err(TranslateError::unsupported(
                        "legacy function_call messages are not supported for Anthropic models; use tool_calls",
                        format!("messages[{i}].function_call"),
                    ));
                }
                let mut blocks = Vec::new();
                match content {
                    None => {}
                    Some(Content::Text(text)) => push_text(&mut blocks, text),
                    Some(Content::Parts(parts)) => {
                        for (j, part) in parts.iter().enumerate() {
                            match part {
                                ContentPart::Text { text } => push_text(&mut blocks, text),
                                ContentPart::Refusal { refusal } => push_text(&mut blocks, refusal),
                                _ => {
                                    return Err(TranslateError::invalid(
                                        "assistant content parts must be text or refusal",
                                        format!("messages[{i}].content[{j}]"),
                                    ))
                                }
                            }
                        }
                    }
                }
                if blocks.is_empty() {
                    if let Some(refusal) = refusal {
                        push_text(&mut blocks, refusal);
                    }
                }
                let mut calls = Vec::new();
                for (j, call) in tool_calls.iter().flatten().enumerate() {
                    if call.kind != "function" {
                        return Err(TranslateError::unsupported(
                            format!("tool calls of type `{}` are not supported for Anthropic models", call.kind),
                            format!("messages[{i}].tool_calls[{j}].type"),
                        ));
                    }
                    if call.id.is_empty() {
                        return Err(TranslateError::invalid(
                            "tool call id must not be empty",
                            format!("messages[{i}].tool_calls[{j}].id"),
                        ));
                    }
                    let input = parse_arguments(&call.function.arguments).ok_or_else(|| {
                        TranslateError::invalid(
                            format!(
                                "messages[{i}].tool_calls[{j}].function.arguments must be a JSON object (or empty)"
                            ),
                            format!("messages[{i}].tool_calls[{j}].function.arguments"),
                        )
                    })?;
                    history_tool_names.insert(call.function.name.clone());
                    let id = sanitize_tool_id(&call.id);
                    calls.push((j, id.clone()));
                    blocks.push(ContentBlock::ToolUse { id, name: call.function.name.clone(), input });
                }
                if blocks.is_empty() {
                    // Nothing to say: an empty assistant turn would only be rejected or merged away.
                    continue;
                }
                let turn = builder.push(Role::Assistant, i, blocks);
                for (call, id) in calls {
                    tool_uses.push(ToolUseOrigin { turn, id, message: i, call });
                }
            }
            Message::Tool { content, tool_call_id } => {
                if tool_call_id.is_empty() {
                    return Err(TranslateError::invalid(
                        "tool_call_id must not be empty",
                        format!("messages[{i}].tool_call_id"),
                    ));
                }
                let id = sanitize_tool_id(tool_call_id);
                let content = tool_result_content(content, i)?;
                let turn =
                    builder.push(Role::User, i, vec![ContentBlock::ToolResult { tool_use_id: id.clone(), content }]);
                tool_results.push(ToolResultOrigin { turn, id, message: i });
            }
            Message::Function { .. } => {
                return Err(TranslateError::unsupported(
                    "legacy function messages are not supported for Anthropic models; use tool messages",
                    format!("messages[{i}]"),
                ));
            }
        }
    }

    let TurnBuilder { mut turns, .. } = builder;
    validate_tool_pairing(&turns, &tool_uses, &tool_results)?;

    // tool_result blocks must lead their user turn (stable: results keep their order, so do the rest).
    for turn in &mut turns {
        if turn.role == Role::User {
            let (mut results, rest): (Vec<_>, Vec<_>) =
                std::mem::take(&mut turn.content).into_iter().partition(ContentBlock::is_tool_result);
            results.extend(rest);
            turn.content = results;
        }
    }

    if turns.is_empty() {
        return Err(TranslateError::invalid(
            "messages must contain at least one user or assistant message besides system messages",
            "messages",
        ));
    }
    if turns[0].role == Role::Assistant {
        turns.insert(
            0,
            MessageParam {
                role: Role::User,
                content: vec![ContentBlock::Text { text: LEADING_PLACEHOLDER.to_owned() }],
            },
        );
    }
    trim_prefill(&mut turns);

    let system = if system_parts.is_empty() { None } else { Some(system_parts.join("\n")) };
    Ok(Conversation { system, messages: turns, history_tool_names })
}

/// Collects the non-blank text of a system/developer message.
fn system_text(content: &Content, i: usize, out: &mut Vec<String>) -> Result<(), TranslateError> {
    match content {
        Content::Text(text) => {
            if !text.trim().is_empty() {
                out.push(text.clone());
            }
        }
        Content::Parts(parts) => {
            for (j, part) in parts.iter().enumerate() {
                match part {
                    ContentPart::Text { text } => {
                        if !text.trim().is_empty() {
                            out.push(text.clone());
                        }
                    }
                    _ => {
                        return Err(TranslateError::invalid(
                            "system and developer messages may only contain text parts",
                            format!("messages[{i}].content[{j}]"),
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

/// Blocks of a user message; whitespace-only text is dropped (Anthropic rejects it).
fn user_blocks(content: &Content, i: usize) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut blocks = Vec::new();
    match content {
        Content::Text(text) => push_text(&mut blocks, text),
        Content::Parts(parts) => {
            for (j, part) in parts.iter().enumerate() {
                part_block(part, i, j, &mut blocks)?;
            }
        }
    }
    Ok(blocks)
}

/// Converts one user/tool content part.
fn part_block(part: &ContentPart, i: usize, j: usize, blocks: &mut Vec<ContentBlock>) -> Result<(), TranslateError> {
    match part {
        ContentPart::Text { text } => push_text(blocks, text),
        ContentPart::Refusal { refusal } => push_text(blocks, refusal),
        ContentPart::ImageUrl { image_url } => {
            blocks.push(image_block(image_url.url(), &format!("messages[{i}].content[{j}].image_url"))?);
        }
        ContentPart::InputAudio { .. } => {
            return Err(TranslateError::unsupported(
                "audio input is not supported for Anthropic models",
                format!("messages[{i}].content[{j}]"),
            ))
        }
        ContentPart::File { .. } => {
            return Err(TranslateError::unsupported(
                "file input is not supported for Anthropic models",
                format!("messages[{i}].content[{j}]"),
            ))
        }
        ContentPart::Unknown => {
            return Err(TranslateError::unsupported(
                "unknown content part type",
                format!("messages[{i}].content[{j}].type"),
            ))
        }
    }
    Ok(())
}

/// `tool_result.content` of a tool message; `None` when it is empty (the field is optional upstream and
/// empty text blocks are rejected).
fn tool_result_content(content: &Content, i: usize) -> Result<Option<ToolResultContent>, TranslateError> {
    match content {
        Content::Text(text) => {
            Ok(if text.trim().is_empty() { None } else { Some(ToolResultContent::Text(text.clone())) })
        }
        Content::Parts(parts) => {
            let mut blocks = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                part_block(part, i, j, &mut blocks)?;
            }
            Ok(if blocks.is_empty() { None } else { Some(ToolResultContent::Blocks(blocks)) })
        }
    }
}

fn push_text(blocks: &mut Vec<ContentBlock>, text: &str) {
    if !text.trim().is_empty() {
        blocks.push(ContentBlock::Text { text: text.to_owned() });
    }
}

/// `arguments` → `tool_use.input`: blank → `{}`, a JSON object → itself, anything else → `None`.
fn parse_arguments(arguments: &str) -> Option<Value> {
    if arguments.trim().is_empty() {
        return Some(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => Some(value),
        _ => None,
    }
}

/// Anthropic requires every `tool_use` to be answered in the immediately following user turn, and every
/// `tool_result` to answer a `tool_use` of the turn just before it; ids must be unique.
fn validate_tool_pairing(
    turns: &[MessageParam],
    tool_uses: &[ToolUseOrigin],
    tool_results: &[ToolResultOrigin],
) -> Result<(), TranslateError> {
    let mut seen = BTreeSet::new();
    for use_ in tool_uses {
        if !seen.insert(use_.id.as_str()) {
            return Err(TranslateError::invalid(
                format!("messages[{}].tool_calls[{}]: duplicate tool call id `{}`", use_.message, use_.call, use_.id),
                format!("messages[{}].tool_calls[{}].id", use_.message, use_.call),
            ));
        }
    }
    let mut answered = BTreeSet::new();
    for result in tool_results {
        let matches = result.turn > 0 && tool_uses.iter().any(|u| u.turn + 1 == result.turn && u.id == result.id);
        if !matches {
            return Err(TranslateError::invalid(
                format!(
                    "messages[{}]: tool result for `{}` does not answer a tool call of the preceding assistant message",
                    result.message, result.id
                ),
                format!("messages[{}].tool_call_id", result.message),
            ));
        }
        if !answered.insert(result.id.as_str()) {
            return Err(TranslateError::invalid(
                format!("messages[{}]: duplicate tool result for `{}`", result.message, result.id),
                format!("messages[{}].tool_call_id", result.message),
            ));
        }
    }
    for use_ in tool_uses {
        let next_is_user = turns.get(use_.turn + 1).is_some_and(|t| t.role == Role::User);
        if !next_is_user || !answered.contains(use_.id.as_str()) {
            return Err(TranslateError::invalid(
                format!(
                    "messages[{}].tool_calls[{}]: tool call `{}` has no tool message answering it right after the \
                     assistant message",
                    use_.message, use_.call, use_.id
                ),
                format!("messages[{}].tool_calls[{}].id", use_.message, use_.call),
            ));
        }
    }
    Ok(())
}

/// A final assistant turn is a prefill: Anthropic rejects trailing whitespace in it.
fn trim_prefill(turns: &mut [MessageParam]) {
    let Some(last) = turns.last_mut() else { return };
    if last.role != Role::Assistant {
        return;
    }
    if let Some(ContentBlock::Text { text }) = last.content.last_mut() {
        let trimmed = text.trim_end().len();
        text.truncate(trimmed);
    }
}

/// `image_url` → an image block: data URLs are validated and become base64 sources, http(s) URLs become
/// url sources.
fn image_block(url: &str, param: &str) -> Result<ContentBlock, TranslateError> {
    let url = url.trim();
    if let Some(rest) = strip_prefix_ignore_case(url, "data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| TranslateError::invalid("malformed data URL: missing `,`", param.to_owned()))?;
        let mut meta_parts = meta.split(';');
        let mime = meta_parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if !meta_parts.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
            return Err(TranslateError::invalid("image data URLs must be base64-encoded", param.to_owned()));
        }
        let media_type = match mime.as_str() {
            "image/jpeg" | "image/jpg" => "image/jpeg",
            "image/png" => "image/png",
            "image/gif" => "image/gif",
            "image/webp" => "image/webp",
            other => {
                return Err(TranslateError::invalid(
                    format!(
                    "unsupported image type `{other}`; Anthropic accepts image/jpeg, image/png, image/gif, image/webp"
                ),
                    param.to_owned(),
                ))
            }
        };
        let data = normalize_base64(data, param)?;
        return Ok(ContentBlock::Image { source: ImageSource::Base64 { media_type: media_type.to_owned(), data } });
    }
    if strip_prefix_ignore_case(url, "https://").is_some() || strip_prefix_ignore_case(url, "http://").is_some() {
        return Ok(ContentBlock::Image { source: ImageSource::Url { url: url.to_owned() } });
    }
    Err(TranslateError::invalid("image_url must be an http(s) URL or a base64 data URL", param.to_owned()))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Accepts standard or URL-safe base64, with or without padding, with embedded whitespace/newlines;
/// returns canonical padded standard base64 after checking that it decodes and is at most
/// [`MAX_IMAGE_BYTES`].
fn normalize_base64(data: &str, param: &str) -> Result<String, TranslateError> {
    let mut clean: String = data
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    // Percent-encoded padding shows up in URL-ish data URLs.
    if clean.contains("%3D") || clean.contains("%3d") {
        clean = clean.replace("%3D", "=").replace("%3d", "=");
    }
    let unpadded = clean.trim_end_matches('=').len();
    clean.truncate(unpadded);
    if clean.is_empty() || clean.len() % 4 == 1 {
        return Err(TranslateError::invalid("image data is not valid base64", param.to_owned()));
    }
    // Reject oversized images before decoding them.
    if clean.len() / 4 * 3 + (clean.len() % 4).saturating_sub(1) > MAX_IMAGE_BYTES {
        return Err(TranslateError::invalid("image is larger than Anthropic's 5 MB limit", param.to_owned()));
    }
    while !clean.len().is_multiple_of(4) {
        clean.push('=');
    }
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .map_err(|_| TranslateError::invalid("image data is not valid base64", param.to_owned()))?;
    Ok(clean)
}

// ---------------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------------

struct ToolsAndChoice {
    tools: Option<Vec<ToolDef>>,
    choice: Option<ToolChoice>,
    json_mode_tool: Option<&'static str>,
}

/// Schema of a tool without `parameters`.
fn empty_object_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

fn tools_and_choice(req: &ChatRequest, history_tool_names: BTreeSet<String>) -> Result<ToolsAndChoice, TranslateError> {
    let mut tools: Vec<ToolDef> = Vec::new();
    for (i, tool) in req.tools.iter().flatten().enumerate() {
        if tool.kind != "function" {
            return Err(TranslateError::unsupported(
                format!("tools of type `{}` are not supported for Anthropic models", tool.kind),
                format!("tools[{i}].type"),
            ));
        }
        let function = tool.function.as_ref().ok_or_else(|| {
            TranslateError::invalid("function tools need a `function`", format!("tools[{i}].function"))
        })?;
        if function.name.is_empty() {
            return Err(TranslateError::invalid("tool name must not be empty", format!("tools[{i}].function.name")));
        }
        if tools.iter().any(|t| t.name == function.name) {
            return Err(TranslateError::invalid(
                format!("duplicate tool name `{}`", function.name),
                format!("tools[{i}].function.name"),
            ));
        }
        let input_schema = input_schema(function.parameters.as_ref(), &format!("tools[{i}].function.parameters"))?;
        tools.push(ToolDef { name: function.name.clone(), description: function.description.clone(), input_schema });
    }
    let client_gave_tools = !tools.is_empty();
    let parallel_off = req.parallel_tool_calls == Some(false);
    let disable_parallel = if parallel_off { Some(true) } else { None };

    let mut choice = match &req.tool_choice {
        None => None,
        Some(OpenAiToolChoice::Mode(mode)) => match mode.as_str() {
            "none" => Some(ToolChoice::NoTool),
            "auto" => Some(ToolChoice::Auto { disable_parallel_tool_use: disable_parallel }),
            "required" => Some(ToolChoice::Any { disable_parallel_tool_use: disable_parallel }),
            other => {
                return Err(TranslateError::invalid(
                    format!("unknown tool_choice `{other}` (expected none, auto or required)"),
                    "tool_choice",
                ))
            }
        },
        Some(OpenAiToolChoice::Object(object)) => match object.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = object.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                    TranslateError::invalid("tool_choice.function.name is required", "tool_choice.function.name")
                })?;
                if !tools.iter().any(|t| t.name == name) {
                    return Err(TranslateError::invalid(
                        format!("tool_choice names `{name}`, which is not in tools"),
                        "tool_choice.function.name",
                    ));
                }
                Some(ToolChoice::Tool { name: name.to_owned(), disable_parallel_tool_use: disable_parallel })
            }
            Some("allowed_tools") => {
                let allowed = object.get("allowed_tools").unwrap_or(&Value::Null);
                let mode = allowed.get("mode").and_then(Value::as_str).unwrap_or("auto");
                let mut names = BTreeSet::new();
                for (k, entry) in allowed.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let name = entry
                        .pointer("/function/name")
                        .or_else(|| entry.get("name"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            TranslateError::invalid(
                                "allowed_tools entries need a function name",
                                format!("tool_choice.allowed_tools.tools[{k}]"),
                            )
                        })?;
                    if !tools.iter().any(|t| t.name == name) {
                        return Err(TranslateError::invalid(
                            format!("allowed_tools names `{name}`, which is not in tools"),
                            format!("tool_choice.allowed_tools.tools[{k}]"),
                        ));
                    }
                    names.insert(name.to_owned());
                }
                if names.is_empty() {
                    return Err(TranslateError::invalid(
                        "allowed_tools.tools must name at least one tool",
                        "tool_choice.allowed_tools.tools",
                    ));
                }
                tools.retain(|t| names.contains(&t.name));
                match mode {
                    "auto" => Some(ToolChoice::Auto { disable_parallel_tool_use: disable_parallel }),
                    "required" => Some(ToolChoice::Any { disable_parallel_tool_use: disable_parallel }),
                    other => {
                        return Err(TranslateError::invalid(
                            format!("unknown allowed_tools mode `{other}` (expected auto or required)"),
                            "tool_choice.allowed_tools.mode",
                        ))
                    }
                }
            }
            Some(other) => {
                return Err(TranslateError::unsupported(
                    format!("tool_choice of type `{other}` is not supported for Anthropic models"),
                    "tool_choice.type",
                ))
            }
            None => return Err(TranslateError::invalid("tool_choice.type is required", "tool_choice")),
        },
    };
    if choice.as_ref().is_some_and(ToolChoice::forces_tool_use) && tools.is_empty() {
        return Err(TranslateError::invalid("tool_choice requires tools", "tool_choice"));
    }
    if choice.is_none() && parallel_off && client_gave_tools {
        choice = Some(ToolChoice::Auto { disable_parallel_tool_use: Some(true) });
    }

    // response_format JSON → a forced tool whose input is the answer.
    let mut json_mode_tool = None;
    let json_schema = match &req.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => {
            Some((json!({"type": "object", "additionalProperties": true, "properties": {}}), None))
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let schema = match &json_schema.schema {
                None | Some(Value::Null) => json!({"type": "object", "additionalProperties": true, "properties": {}}),
                Some(schema) => input_schema(Some(schema), "response_format.json_schema.schema")?,
            };
            Some((schema, json_schema.description.clone()))
        }
    };
    if let Some((schema, description)) = json_schema {
        if choice.as_ref().is_some_and(ToolChoice::forces_tool_use) {
            return Err(TranslateError::invalid(
                "response_format json cannot be combined with a forced tool_choice on Anthropic",
                "response_format",
            ));
        }
        if tools.iter().any(|t| t.name == JSON_TOOL_NAME) {
            return Err(TranslateError::invalid(
                format!("the tool name `{JSON_TOOL_NAME}` is reserved for response_format on Anthropic"),
                "tools",
            ));
        }
        tools.push(ToolDef {
            name: JSON_TOOL_NAME.to_owned(),
            description: Some(
                description.unwrap_or_else(|| "Respond with the answer as this tool's JSON input.".to_owned()),
            ),
            input_schema: schema,
        });
        choice = Some(ToolChoice::Tool { name: JSON_TOOL_NAME.to_owned(), disable_parallel_tool_use: Some(true) });
        json_mode_tool = Some(JSON_TOOL_NAME);
    }

    // History with tool blocks but no client tools: declare them so the request stays valid, and forbid
    // new calls the client never offered.
    if !client_gave_tools && !history_tool_names.is_empty() {
        for name in history_tool_names {
            if !tools.iter().any(|t| t.name == name) {
                tools.push(ToolDef {
                    name,
                    description: Some("Tool used earlier in this conversation.".to_owned()),
                    input_schema: empty_object_schema(),
                });
            }
        }
        if matches!(choice, None | Some(ToolChoice::Auto { .. })) {
            choice = Some(ToolChoice::NoTool);
        }
    }

    if tools.is_empty() {
        // tool_choice without tools is meaningless (and `none`/`auto` are the default then).
        return Ok(ToolsAndChoice { tools: None, choice: None, json_mode_tool });
    }
    Ok(ToolsAndChoice { tools: Some(tools), choice, json_mode_tool })
}

/// OpenAI `parameters` → Anthropic `input_schema`: missing/null/`{}` → an empty object schema; a schema
/// without `type` gets `"type": "object"`; non-object schemas are rejected (Anthropic needs an object).
fn input_schema(parameters: Option<&Value>, param: &str) -> Result<Value, TranslateError> {
    match parameters {
        None | Some(Value::Null) => Ok(empty_object_schema()),
        Some(Value::Object(map)) if map.is_empty() => Ok(empty_object_schema()),
        Some(Value::Object(map)) => match map.get("type") {
            None => {
                let mut map = map.clone();
                map.insert("type".to_owned(), Value::String("object".to_owned()));
                Ok(Value::Object(map))
            }
            Some(Value::String(t)) if t == "object" => Ok(Value::Object(map.clone())),
            Some(_) => Err(TranslateError::invalid(
                "the schema must describe a JSON object (`\"type\": \"object\"`)",
                param.to_owned(),
            )),
        },
        Some(_) => Err(TranslateError::invalid("the schema must be a JSON object", param.to_owned())),
    }
}

#[cfg(test)]
mod tests;
