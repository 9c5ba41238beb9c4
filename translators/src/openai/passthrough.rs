//! OpenAI-kind upstreams (OpenAI, vLLM, Groq, …): forward bytes, touch only what the gateway must.
//!
//! - Requests: only `model` (renamed to the upstream's name) and, for streams, `stream_options.include_usage`
//!   (forced on so the gateway can meter) are rewritten; every other byte of every other field is kept
//!   (large integers, unknown fields). When nothing changes, the input `Bytes` are returned as they are.
//! - Streams: each SSE `data:` payload is forwarded as [`StreamEvent::Raw`]. Only when the gateway forced
//!   `include_usage` on a client that did not ask for it are the `usage` keys and the final usage chunk
//!   removed (wire-formats §1.9; many clients index `choices[0]` unguarded).
//! - Errors: upstream OpenAI error bodies are forwarded under the gateway's status policy.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{MappedError, TranslateError};
use crate::framing::sse::{SseEvent, SseFramer};
use crate::openai::{CompletionTokensDetails, ErrorBody, FinishReason, PromptTokensDetails, Usage};
use crate::stream::{StreamEvent, StreamOutcome, StreamSummary, StreamTranslator};

/// Chat endpoint, appended to a base URL that ends in `/v1`.
pub const CHAT_PATH: &str = "/chat/completions";
/// Model listing endpoint, appended to the same base URL.
pub const MODELS_PATH: &str = "/models";

/// The fields the gateway interprets (routing, limits, metering), read in one pass over the body.
///
/// This is the only reading of these fields: what the gateway reserves against limits is what the upstream
/// receives, because [`parse_head`] refuses the bodies that an upstream could read differently (a duplicated
/// interpreted key, a non-integer token count).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead {
    /// The client's `model`, gateway prefix included (e.g. `openai/gpt-4o-mini`).
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true` (only meaningful with `stream`).
    pub include_usage: bool,
    /// `max_completion_tokens`, else the deprecated `max_tokens` (`None` when both are absent or null).
    pub max_output_tokens: Option<u64>,
    /// `n` (completions per request; `None` when absent or null).
    pub n: Option<u64>,
}

/// Top-level members the gateway interprets: each may appear once (issue 11, item 3). serde_json keeps the
/// first or last of a duplicated key depending on the type it reads into, and upstreams differ too, so a
/// duplicate could make the gateway reserve one `max_tokens` while the upstream obeys another.
pub const INTERPRETED_FIELDS: &[&str] =
    &["model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "messages", "n"];

#[derive(Deserialize)]
struct StreamOptionsWire {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// A token count or `n`: a JSON integer ≥ 0, or null (absent). `500000.0`, `5e5`, `"5"` and negatives are
/// refused as OpenAI refuses them (`integer` in its OpenAPI spec; the API answers 400 for a decimal).
fn integer_field(raw: &RawValue, name: &'static str) -> Result<Option<u64>, TranslateError> {
    if raw.get() == "null" {
        return Ok(None);
    }
    serde_json::from_str::<u64>(raw.get())
        .map(Some)
        .map_err(|_| TranslateError::invalid(format!("{name} must be a non-negative integer"), name))
}

/// Reads the interpreted fields of a chat request body in one pass. Unknown fields are skipped (but the
/// whole body must be valid JSON).
///
/// Errors (`InvalidRequest`): invalid JSON or a non-object body (no `param`); an interpreted member
/// ([`INTERPRETED_FIELDS`]) given twice (`param` names it); `model` missing, empty or not a string
/// (`param: "model"`); `messages` missing or not a non-empty array (`param: "messages"`); `stream` not a
/// boolean; `max_tokens`, `max_completion_tokens` or `n` not a non-negative integer; `stream_options` not
/// an object, or present without `stream: true` (`param: "stream_options"`, as OpenAI answers).
pub fn parse_head(body: &[u8]) -> Result<RequestHead, TranslateError> {
    let not_valid = |e: serde_json::Error| TranslateError::InvalidRequest {
        message: format!("request body is not valid JSON: {e}").into(),
        param: None,
    };
    if body.iter().copied().find(|b| !b.is_ascii_whitespace()) != Some(b'{') {
        // A derived struct would also accept a JSON array; only an object is a request.
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => {
                TranslateError::InvalidRequest { message: "request body must be a JSON object".into(), param: None }
            }
            Err(e) => not_valid(e),
        });
    }
    let object: RawObject = serde_json::from_slice(body).map_err(not_valid)?;
    // One slot per interpreted field, in `INTERPRETED_FIELDS` order.
    let mut slots: [Option<&RawValue>; 7] = [None; 7];
    for (key, value) in &object.0 {
        // Keys are compared unescaped: `"max\u005ftokens"` is `max_tokens` to every JSON reader.
        let Some(i) = INTERPRETED_FIELDS.iter().position(|f| *f == key.as_ref()) else { continue };
        if slots[i].is_some() {
            let name = INTERPRETED_FIELDS[i];
            return Err(TranslateError::invalid(format!("duplicate key `{name}` in the request body"), name));
        }
        slots[i] = Some(*value);
    }
    let [model, stream, stream_options, max_tokens, max_completion_tokens, messages, n] = slots;
    let model = match model {
        None => return Err(TranslateError::invalid("model is required", "model")),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map_err(|_| TranslateError::invalid("model must be a string", "model"))?,
    };
    if model.is_empty() {
        return Err(TranslateError::invalid("model must not be empty", "model"));
    }
    // The same 400 for every provider, before any upstream call (issue 11, item 15): `[]`, `{}`, null and
    // a missing member would otherwise fail differently per provider, or upstream after admission.
    match messages.map(|raw| raw.get().trim_start()) {
        Some(text) if text.starts_with('[') && !is_empty_array(text) => {}
        _ => return Err(TranslateError::invalid("messages must be a non-empty array", "messages")),
    }
    let stream = match stream {
        None => false,
        Some(raw) => serde_json::from_str::<Option<bool>>(raw.get())
            .map_err(|_| TranslateError::invalid("stream must be a boolean", "stream"))?
            .unwrap_or(false),
    };
    let include_usage = match stream_options {
        None => false,
        Some(raw) if raw.get() == "null" => false,
        Some(raw) => {
            if !raw.get().starts_with('{') {
                return Err(TranslateError::invalid("stream_options must be an object", "stream_options"));
            }
            if !stream {
                return Err(TranslateError::invalid(
                    "stream_options is only allowed when stream is true",
                    "stream_options",
                ));
            }
            serde_json::from_str::<StreamOptionsWire>(raw.get())
                .map_err(|_| {
                    TranslateError::invalid(
                        "stream_options.include_usage must be a boolean",
                        "stream_options.include_usage",
                    )
                })?
                .include_usage
                .unwrap_or(false)
        }
    };
    let max_tokens = max_tokens.map(|raw| integer_field(raw, "max_tokens")).transpose()?.flatten();
    let max_completion_tokens =
        max_completion_tokens.map(|raw| integer_field(raw, "max_completion_tokens")).transpose()?.flatten();
    let n = n.map(|raw| integer_field(raw, "n")).transpose()?.flatten();
    Ok(RequestHead { model, stream, include_usage, max_output_tokens: max_completion_tokens.or(max_tokens), n })
}

/// `[]` with any whitespace inside.
fn is_empty_array(text: &str) -> bool {
    text.strip_prefix('[').is_some_and(|rest| rest.trim_start().starts_with(']'))
}

/// A JSON object as its members in order, values kept as raw text.
struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Key(key)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(RawObject(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    // Serializing a `str` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
}

/// Rewrites the body for the upstream: `model` renamed to `upstream_model`; for streams,
/// `stream_options.include_usage` forced true (the gateway meters every stream).
///
/// Returns `body` itself (no copy) when nothing changes. Otherwise every other member is copied as raw
/// text, in order: numbers beyond 2^53, unknown fields and string escapes survive byte for byte.
/// `head` must come from [`parse_head`] on the same body.
pub fn rewrite_request(body: Bytes, head: &RequestHead, upstream_model: &str) -> Result<Bytes, TranslateError> {
    let rename = head.model != upstream_model;
    let force_usage = head.stream && !head.include_usage;
    if !rename && !force_usage {
        return Ok(body);
    }
    let object: RawObject = serde_json::from_slice(&body).map_err(|e| TranslateError::InvalidRequest {
        message: format!("request body is not a valid JSON object: {e}").into(),
        param: None,
    })?;
    let mut out = Vec::with_capacity(body.len() + upstream_model.len() + 40);
    out.push(b'{');
    let mut saw_stream_options = false;
    for (i, (key, value)) in object.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(&mut out, key);
        match key.as_ref() {
            "model" if rename => {
                let _ = serde_json::to_writer(&mut out, upstream_model);
            }
            "stream_options" if force_usage => {
                saw_stream_options = true;
                write_stream_options(&mut out, value)?;
            }
            _ => out.extend_from_slice(value.get().as_bytes()),
        }
    }
    if force_usage && !saw_stream_options {
        if !object.0.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}

/// `stream_options` with `include_usage` set to true, other members kept.
fn write_stream_options(out: &mut Vec<u8>, value: &RawValue) -> Result<(), TranslateError> {
    if value.get() == "null" {
        out.extend_from_slice(br#"{"include_usage":true}"#);
        return Ok(());
    }
    let object: RawObject = serde_json::from_str(value.get())
        .map_err(|_| TranslateError::invalid("stream_options must be an object", "stream_options"))?;
    out.push(b'{');
    let mut first = true;
    for (key, value) in &object.0 {
        if key == "include_usage" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_key(out, key);
        out.extend_from_slice(value.get().as_bytes());
    }
    if !first {
        out.push(b',');
    }
    out.extend_from_slice(br#""include_usage":true}"#);
    Ok(())
}

/// `usage` as providers send it: counts may be missing or null, details may be malformed (then dropped).
#[derive(Deserialize)]
struct UsageWire<'a> {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(borrow, default)]
    prompt_tokens_details: Option<&'a RawValue>,
    #[serde(borrow, default)]
    completion_tokens_details: Option<&'a RawValue>,
}

fn parse_usage(raw: &str) -> Option<Usage> {
    let wire: UsageWire = serde_json::from_str(raw).ok()?;
    let prompt = wire.prompt_tokens.unwrap_or(0);
    let completion = wire.completion_tokens.unwrap_or(0);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: wire.total_tokens.unwrap_or(prompt.saturating_add(completion)),
        prompt_tokens_details: wire
            .prompt_tokens_details
            .and_then(|r| serde_json::from_str::<Option<PromptTokensDetails>>(r.get()).ok().flatten()),
        completion_tokens_details: wire
            .completion_tokens_details
            .and_then(|r| serde_json::from_str::<Option<CompletionTokensDetails>>(r.get()).ok().flatten()),
    })
}

/// The `usage` object of a non-stream `chat.completion` body (`None` when absent, null or malformed).
/// The body itself is forwarded untouched by the caller.
pub fn extract_usage(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow, default)]
        usage: Option<&'a RawValue>,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    parse_usage(body.usage?.get())
}

/// One reading of a non-stream pass-through body (issue 17: it used to be read twice): `Err` when it
/// is not a `chat.completion` (not a JSON object, or no `choices` member, or `choices` twice), else
/// its usage exactly as [`extract_usage`] reads it (`None` when absent, null, malformed or given
/// twice). The body itself is forwarded untouched by the caller.
///
/// # Errors
/// `NotACompletion` when the body is not a chat completion.
pub fn completion_usage(body: &[u8]) -> Result<Option<Usage>, NotACompletion> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a chat completion object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut choices, mut usage, mut usages) = (false, None, 0u32);
            while let Some(Key(key)) = map.next_key()? {
                match key.as_ref() {
                    "choices" => {
                        if choices {
                            return Err(serde::de::Error::duplicate_field("choices"));
                        }
                        choices = true;
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                    "usage" => {
                        usages += 1;
                        usage = Some(map.next_value::<&'de RawValue>()?);
                    }
                    _ => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
            }
            if !choices {
                return Err(serde::de::Error::missing_field("choices"));
            }
            // A duplicated `usage` is unreadable to `extract_usage` too: no usage.
            Ok(usage.filter(|_| usages == 1))
        }
        // As derived one-field structs read a sequence: its one element is `choices` to the shape
        // check and `usage` to `extract_usage`.
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            match seq.next_element::<&'de RawValue>()? {
                Some(first) => Ok(Some(first)),
                None => Err(serde::de::Error::invalid_length(0, &self)),
            }
        }
    }
    struct Shape<'a>(Option<&'a RawValue>);
    impl<'de> Deserialize<'de> for Shape<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(Visitor).map(Shape)
        }
    }
    let Shape(usage) = serde_json::from_slice(body).map_err(|_| NotACompletion)?;
    Ok(usage.and_then(|raw| parse_usage(raw.get())))
}

/// A 200 body that is not a chat completion (HTML from a proxy, truncated or garbage bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotACompletion;

/// A stream chunk, read only as far as metering needs; strings borrow from the payload when unescaped.
#[derive(Deserialize)]
struct LightChunk<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<LightChoice<'a>>>,
    /// `Some` whenever the key is present, `null` included.
    #[serde(borrow, default, deserialize_with = "present")]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LightChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<LightDelta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LightDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    /// Reasoning text (DeepSeek/vLLM `reasoning_content`, Groq/OpenRouter `reasoning`).
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<LightToolCall<'a>>>,
}

#[derive(Deserialize)]
struct LightToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<LightFunction<'a>>,
}

#[derive(Deserialize)]
struct LightFunction<'a> {
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ErrorOnly<'a> {
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(deserializer).map(Some)
}

/// What one chunk contributes to the summary, extracted before the borrowed parse is dropped.
struct ChunkFacts {
    model: Option<String>,
    streamed_bytes: u64,
    finish_reason: Option<FinishReason>,
    has_choices: bool,
    usage_key: bool,
    usage: Option<Usage>,
    error: Option<ErrorBody>,
}

fn chunk_facts(payload: &[u8]) -> Option<ChunkFacts> {
    let chunk: LightChunk = serde_json::from_slice(payload).ok()?;
    let error = chunk.error.filter(|e| is_truthy(e)).map(|e| error_body_from(e.get()));
    let mut streamed_bytes = 0u64;
    let mut finish_reason = None;
    let choices = chunk.choices.unwrap_or_default();
    for choice in &choices {
        if let Some(delta) = &choice.delta {
            for text in
                [&delta.content, &delta.refusal, &delta.reasoning_content, &delta.reasoning].into_iter().flatten()
            {
                streamed_bytes += text.len() as u64;
            }
            for call in delta.tool_calls.iter().flatten() {
                if let Some(args) = call.function.as_ref().and_then(|f| f.arguments.as_ref()) {
                    streamed_bytes += args.len() as u64;
                }
            }
        }
        if let Some(reason) = &choice.finish_reason {
            finish_reason = serde_json::from_value::<FinishReason>(Value::from(reason.as_ref())).ok().or(finish_reason);
        }
    }
    let usage = chunk.usage.filter(|u| u.get() != "null").and_then(|u| parse_usage(u.get()));
    Some(ChunkFacts {
        model: chunk.model.map(Cow::into_owned),
        streamed_bytes,
        finish_reason,
        has_choices: !choices.is_empty(),
        usage_key: chunk.usage.is_some(),
        usage,
        error,
    })
}

/// openai-python raises for any chunk whose `error` is truthy.
fn is_truthy(value: &RawValue) -> bool {
    !matches!(value.get(), "null" | "false" | "0" | "\"\"" | "{}" | "[]")
}

/// An upstream error object (OpenAI-shaped or not) → `ErrorBody`; missing `param`/`code` become null.
fn error_body_from(raw: &str) -> ErrorBody {
    let value: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    match &value {
        Value::Object(map) => ErrorBody {
            message: match map.get("message") {
                Some(Value::String(s)) => s.clone(),
                _ => value.to_string(),
            },
            kind: map.get("type").and_then(Value::as_str).unwrap_or("server_error").to_owned(),
            param: scalar_string(map.get("param")),
            code: scalar_string(map.get("code")),
        },
        Value::String(s) => ErrorBody::new(s.clone(), "server_error", None),
        other => ErrorBody::new(other.to_string(), "server_error", None),
    }
}

/// A string, or a number rendered as one (some providers send numeric codes); anything else is null.
fn scalar_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Removes the top-level `usage` key of a chunk: a byte cut of `,"usage":null` / `"usage":null,` when
/// present (OpenAI's compact encoding), else a parse and re-serialization without it.
fn strip_usage(payload: &Bytes) -> Bytes {
    for pattern in [&b",\"usage\":null"[..], &b"\"usage\":null,"[..]] {
        if let Some(pos) = memchr::memmem::rfind(payload, pattern) {
            let mut out = Vec::with_capacity(payload.len() - pattern.len());
            out.extend_from_slice(&payload[..pos]);
            out.extend_from_slice(&payload[pos + pattern.len()..]);
            return Bytes::from(out);
        }
    }
    let Ok(object) = serde_json::from_slice::<RawObject>(payload) else {
        return payload.clone();
    };
    let mut out = Vec::with_capacity(payload.len());
    out.push(b'{');
    let mut first = true;
    for (key, value) in &object.0 {
        if key == "usage" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_key(&mut out, key);
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    Bytes::from(out)
}

/// Forwards an OpenAI-kind SSE stream, metering it on the way.
#[derive(Debug)]
pub struct StreamPassthrough {
    client_wants_usage: bool,
    framer: SseFramer,
    /// Scratch buffer of framed events, reused across feeds.
    events: Vec<SseEvent>,
    /// Outcome, usage, streamed bytes, finish reason and model so far: the summary itself.
    tally: StreamSummary,
    finished: bool,
}

impl StreamPassthrough {
    /// `client_wants_usage`: the client itself asked for `stream_options.include_usage`. When false (the
    /// gateway forced it upstream), usage keys and the usage chunk are stripped from what is forwarded.
    pub fn new(client_wants_usage: bool) -> Self {
        Self {
            client_wants_usage,
            framer: SseFramer::default(),
            events: Vec::new(),
            tally: StreamSummary::open(),
            finished: false,
        }
    }

    fn process_events(&mut self, out: &mut Vec<StreamEvent>) {
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            if self.is_terminal() {
                break;
            }
            self.process(event.data, out);
        }
        self.events = events;
    }

    fn process(&mut self, data: Bytes, out: &mut Vec<StreamEvent>) {
        let payload = trim_bytes(data);
        if payload.is_empty() {
            return;
        }
        if payload.starts_with(b"[DONE]") {
            // The gateway writes its own `data: [DONE]`.
            self.tally.outcome = StreamOutcome::Completed;
            return;
        }
        let Some(facts) = chunk_facts(&payload) else {
            // Not a chunk we can read: forward it as it is rather than guess, but still honour an error.
            let error = serde_json::from_slice::<ErrorOnly>(&payload)
                .ok()
                .and_then(|e| e.error.filter(|e| is_truthy(e)).map(|e| error_body_from(e.get())));
            out.push(StreamEvent::Raw(payload));
            if let Some(error) = error {
                self.tally.outcome = StreamOutcome::UpstreamError(error);
            }
            return;
        };
        if let Some(error) = facts.error {
            out.push(StreamEvent::Raw(payload));
            self.tally.outcome = StreamOutcome::UpstreamError(error);
            return;
        }
        if self.tally.upstream_model.is_none() {
            // Azure's first chunk (prompt filter results) has an empty model.
            self.tally.upstream_model = facts.model.filter(|m| !m.is_empty());
        }
        self.tally.streamed_bytes += facts.streamed_bytes;
        if facts.finish_reason.is_some() {
            self.tally.finish_reason = facts.finish_reason;
        }
        let usage_chunk = !facts.has_choices && facts.usage.is_some();
        if let Some(usage) = facts.usage {
            self.tally.usage = usage;
            // Intermediate usage (vLLM `continuous_usage_stats`) is not final; the `choices: []` chunk or
            // usage on a finish chunk is.
            if usage_chunk || facts.finish_reason.is_some() {
                self.tally.usage_is_final = true;
            }
        }
        if self.client_wants_usage {
            out.push(StreamEvent::Raw(payload));
        } else if usage_chunk {
            // Consumed for metering: the client did not ask for it.
        } else if facts.usage_key {
            out.push(StreamEvent::Raw(strip_usage(&payload)));
        } else {
            out.push(StreamEvent::Raw(payload));
        }
    }
}

fn trim_bytes(data: Bytes) -> Bytes {
    let start = data.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(data.len());
    let end = data.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |p| p + 1);
    if start == 0 && end == data.len() {
        data
    } else {
        data.slice(start..end.max(start))
    }
}

impl StreamTranslator for StreamPassthrough {
    fn feed(&mut self, input: &[u8], out: &mut Vec<StreamEvent>) {
        if self.is_terminal() || self.finished {
            return;
        }
        let result = self.framer.feed(input, &mut self.events);
        self.process_events(out);
        if let Err(e) = result {
            if !self.is_terminal() {
                let body = ErrorBody::new(format!("upstream: {e}"), "server_error", Some("upstream_error"));
                out.push(StreamEvent::Error(body.clone()));
                self.tally.outcome = StreamOutcome::UpstreamError(body);
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> StreamSummary {
        if !self.finished {
            self.finished = true;
            if !self.is_terminal() {
                // A last event without its blank line is still dispatched (it may be `[DONE]`).
                self.framer.finish(&mut self.events);
                self.process_events(out);
            }
            self.tally.truncate_if_open(out);
        }
        self.summary()
    }

    fn is_terminal(&self) -> bool {
        self.tally.is_terminal()
    }

    fn summary(&self) -> StreamSummary {
        self.tally.clone()
    }
}

/// Maps a non-2xx upstream response.
///
/// Status policy: 400/404/409/413/422/429 keep their status and the upstream's error; 401/403 become 502
/// `upstream_auth_failed` (the gateway's provider key is at fault; the upstream message, which may quote
/// the key, is not forwarded); 503 and 504 keep their status; other statuses become 502. OpenAI-shaped
/// bodies are forwarded as they are (missing `param`/`code` become null); other JSON errors and non-JSON
/// bodies (HTML, empty) get a gateway-made message prefixed `upstream: ` (non-JSON → 502
/// `upstream_error`, the raw body is never echoed).
pub fn map_error(status: u16, body: &[u8]) -> MappedError {
    let mapped_status = match status {
        400 | 404 | 409 | 413 | 422 | 429 | 503 | 504 => status,
        _ => 502,
    };
    if matches!(status, 401 | 403) {
        return MappedError {
            status: 502,
            body: ErrorBody::new(
                format!("upstream: the provider rejected the gateway's credentials (HTTP {status})"),
                "server_error",
                Some("upstream_auth_failed"),
            ),
        };
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let Some(parsed) = parsed else {
        let what = if body.iter().all(u8::is_ascii_whitespace) { "an empty body" } else { "a non-JSON body" };
        return MappedError {
            status: 502,
            body: ErrorBody::new(
                format!("upstream: HTTP {status} with {what}"),
                "server_error",
                Some("upstream_error"),
            ),
        };
    };
    let default_kind = match mapped_status {
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    // OpenAI's envelope: `{"error": {"message": …, "type": …, "param": …, "code": …}}`.
    if let Some(Value::Object(error)) = parsed.get("error") {
        if let Some(Value::String(message)) = error.get("message") {
            return MappedError {
                status: mapped_status,
                body: ErrorBody {
                    message: message.clone(),
                    kind: error.get("type").and_then(Value::as_str).unwrap_or(default_kind).to_owned(),
                    param: scalar_string(error.get("param")),
                    code: scalar_string(error.get("code")),
                },
            };
        }
    }
    // Other JSON shapes: `{"error": "…"}`, `{"message": …}`, FastAPI's `{"detail": …}` (vLLM).
    let text = ["error", "message", "detail"].iter().find_map(|key| match parsed.get(*key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.get("message").and_then(Value::as_str).map(str::to_owned),
        Some(v @ Value::Array(_)) => Some(v.to_string()),
        _ => None,
    });
    let message = match text {
        Some(text) => format!("upstream: {text}"),
        None => format!("upstream: HTTP {status} with an unrecognized error body"),
    };
    let code = if mapped_status == 502 { Some("upstream_error") } else { None };
    MappedError { status: mapped_status, body: ErrorBody::new(message, default_kind, code) }
}

/// One model of `GET /models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    /// Unix seconds; 0 when missing.
    pub created: u64,
    /// The upstream's `owned_by` (empty when missing).
    pub owned_by: String,
}

/// Parses a `GET /models` body (`{"object":"list","data":[…]}`; a bare array is accepted too). Entries
/// without an `id` are skipped.
pub fn parse_models(body: &[u8]) -> Result<Vec<ModelInfo>, TranslateError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListWire {
        Object { data: Vec<Value> },
        Array(Vec<Value>),
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|source| TranslateError::Json { at: "upstream /models", source })?;
    let list = serde_json::from_value::<ListWire>(value)
        .map_err(|_| TranslateError::Protocol("upstream /models response has no data array".into()))?;
    let data = match list {
        ListWire::Object { data } | ListWire::Array(data) => data,
    };
    Ok(data
        .iter()
        .filter_map(|m| {
            let id = m.get("id")?.as_str().filter(|s| !s.is_empty())?.to_owned();
            let created = match m.get("created") {
                Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
                _ => None,
            };
            Some(ModelInfo {
                id,
                created: created.unwrap_or(0),
                owned_by: m.get("owned_by").and_then(Value::as_str).unwrap_or_default().to_owned(),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests;
