//! Legacy `POST /v1/completions` (spec `CreateCompletionRequest` / `CreateCompletionResponse`) over the hub.
//!
//! OpenAI-kind backends get the endpoint passed through (rename the model with
//! [`responses::passthrough::rename_model`](crate::responses::passthrough::rename_model); the `usage` of a
//! body or of the final stream chunk has the chat shape, so
//! [`openai::passthrough::extract_usage`](crate::openai::passthrough::extract_usage) and
//! [`openai::passthrough::StreamPassthrough`](crate::openai::passthrough::StreamPassthrough) meter it).
//! Other backends: [`decode_request`] makes a hub chat request with one user message holding the prompt;
//! the hub answer becomes a `text_completion` with [`encode_response`] or [`StreamEncoder`].
//! Anthropic-kind routes may use it too, or answer 404 as the issue suggests; that is the gateway's call.
//!
//! Request policy (research §4):
//! - `prompt`: a string, or an array of exactly one string. Several prompts (one choice each) and token
//!   arrays are refused with `param: "prompt"`.
//! - `max_tokens` defaults to 16, as at OpenAI (a chat backend's default would be much longer).
//! - `suffix` (fill-in-the-middle) is refused: a chat turn cannot express it.
//! - `echo: true` is honoured by prefixing the prompt to the text. `logprobs` is refused (the legacy
//!   per-token format is not produced by the hub). `best_of` above 1 is refused.
//! - `temperature`, `top_p`, `n`, `stop`, `seed`, `presence_penalty`, `frequency_penalty`, `logit_bias`,
//!   `user`, `stream`, `stream_options` map to the hub fields of the same name.
//!
//! Output: `choices[].text`, `logprobs: null` (a required key), `finish_reason` `stop`/`length`/
//! `content_filter` (tool calls cannot occur: no tools are sent; they would map to `stop`). Streams are
//! `data: <chunk>\n\n` frames ending with `data: [DONE]`, or with one `{"error": …}` frame on failure.

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::TranslateError;
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, Content, ErrorBody, FinishReason, Message, Stop, StreamOptions, Usage,
};
use crate::stream::{truncated_error, StreamEvent, StreamOutcome, StreamSummary};

/// OpenAI-kind path, appended to a base URL ending in `/v1`.
pub const COMPLETIONS_PATH: &str = "/completions";
/// `object` of bodies and chunks.
pub const OBJECT_TEXT_COMPLETION: &str = "text_completion";
/// OpenAI's default `max_tokens` for this endpoint.
pub const DEFAULT_MAX_TOKENS: u64 = 16;

/// A decoded completions request.
#[derive(Debug, Clone)]
pub struct DecodedCompletion {
    /// The hub request: one user message with the prompt.
    pub chat: ChatRequest,
    /// The client's `model`, echoed in the answer.
    pub model: String,
    /// The prompt (prefixed to the text when `echo`).
    pub prompt: String,
    /// `echo: true`.
    pub echo: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
}

/// Decodes a completions body into the hub request.
///
/// Errors: `InvalidRequest` for malformed fields (`param` = the field); `Unsupported` for `suffix`,
/// `logprobs`, `best_of` > 1, several prompts and token prompts.
pub fn decode_request(body: &[u8]) -> Result<DecodedCompletion, TranslateError> {
    let root: Map<String, Value> = serde_json::from_slice(body).map_err(|e| TranslateError::InvalidRequest {
        message: format!("request body is not a valid JSON object: {e}").into(),
        param: None,
    })?;
    let get = |key: &str| root.get(key).filter(|v| !v.is_null());
    let model = match get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(TranslateError::invalid("model is required and must be a non-empty string", "model")),
    };
    let prompt = match get("prompt") {
        Some(Value::String(p)) => p.clone(),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(p)] => p.clone(),
            [] => return Err(TranslateError::invalid("prompt must not be an empty array", "prompt")),
            items if items.iter().all(Value::is_string) => {
                return Err(TranslateError::unsupported(
                    "several prompts in one request are not supported for this model; send one request per prompt",
                    "prompt",
                ))
            }
            _ => {
                return Err(TranslateError::unsupported(
                    "token-array prompts are not supported for this model; send text",
                    "prompt",
                ))
            }
        },
        None => return Err(TranslateError::invalid("prompt is required", "prompt")),
        Some(_) => return Err(TranslateError::invalid("prompt must be a string", "prompt")),
    };
    if let Some(suffix) = get("suffix") {
        if suffix.as_str() != Some("") {
            return Err(TranslateError::unsupported(
                "suffix (fill-in-the-middle) is not supported for this model",
                "suffix",
            ));
        }
    }
    if get("logprobs").is_some() {
        return Err(TranslateError::unsupported("logprobs is not supported for this model", "logprobs"));
    }
    if let Some(best_of) = get("best_of") {
        match best_of.as_u64() {
            Some(0 | 1) => {}
            Some(_) => {
                return Err(TranslateError::unsupported("best_of above 1 is not supported for this model", "best_of"))
            }
            None => return Err(TranslateError::invalid("best_of must be an integer", "best_of")),
        }
    }
    let echo = match get("echo") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(TranslateError::invalid("echo must be a boolean", "echo")),
    };
    let stream = match get("stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(TranslateError::invalid("stream must be a boolean", "stream")),
    };
    let include_usage = match get("stream_options") {
        None => false,
        Some(Value::Object(o)) => o.get("include_usage").and_then(Value::as_bool).unwrap_or(false),
        Some(_) => return Err(TranslateError::invalid("stream_options must be an object", "stream_options")),
    };
    let number = |key: &'static str| -> Result<Option<f64>, TranslateError> {
        match get(key) {
            None => Ok(None),
            Some(v) => {
                v.as_f64().map(Some).ok_or_else(|| TranslateError::invalid(format!("{key} must be a number"), key))
            }
        }
    };
    let unsigned = |key: &'static str| -> Result<Option<u64>, TranslateError> {
        match get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| TranslateError::invalid(format!("{key} must be a non-negative integer"), key)),
        }
    };
    let stop = match get("stop") {
        None => None,
        Some(Value::String(s)) => Some(Stop::One(s.clone())),
        Some(Value::Array(items)) => {
            let mut stops = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => stops.push(s.clone()),
                    _ => return Err(TranslateError::invalid("stop must be a string or an array of strings", "stop")),
                }
            }
            Some(Stop::Many(stops))
        }
        Some(_) => return Err(TranslateError::invalid("stop must be a string or an array of strings", "stop")),
    };
    let seed = match get("seed") {
        None => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| TranslateError::invalid("seed must be an integer", "seed"))?),
    };
    let user = match get("user") {
        None => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(_) => return Err(TranslateError::invalid("user must be a string", "user")),
    };
    let chat = ChatRequest {
        model: model.clone(),
        messages: vec![Message::User { content: Content::Text(prompt.clone()), name: None }],
        stream: stream.then_some(true),
        stream_options: (stream && include_usage)
            .then(|| StreamOptions { include_usage: Some(true), extra: Map::new() }),
        max_tokens: Some(unsigned("max_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS)),
        temperature: number("temperature")?,
        top_p: number("top_p")?,
        n: unsigned("n")?,
        stop,
        presence_penalty: number("presence_penalty")?,
        frequency_penalty: number("frequency_penalty")?,
        seed,
        logit_bias: get("logit_bias").cloned(),
        user,
        ..ChatRequest::default()
    };
    Ok(DecodedCompletion { chat, model, prompt, echo, include_usage: stream && include_usage })
}

/// `CreateCompletionResponse` (also the shape of each stream chunk).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    /// Bodies: always set. Chunks: `null` on every chunk when the client asked for usage (the final
    /// usage chunk has it and `choices: []`), absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "usage_key")]
    pub usage: Option<Option<Usage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

/// One choice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionChoice {
    pub text: String,
    pub index: u32,
    /// Always `null` (a required key).
    pub logprobs: Option<Value>,
    /// `stop`, `length` or `content_filter`; `null` on chunks before the last.
    pub finish_reason: Option<String>,
}

/// Hub `finish_reason` → the legacy enum (`stop`, `length`, `content_filter`).
pub fn finish_reason(reason: Option<FinishReason>) -> &'static str {
    match reason {
        Some(FinishReason::Length) => "length",
        Some(FinishReason::ContentFilter) => "content_filter",
        Some(FinishReason::Stop | FinishReason::ToolCalls | FinishReason::FunctionCall) | None => "stop",
    }
}

/// `cmpl-…` from the hub id (`chatcmpl-…` → `cmpl-…`, other ids kept).
fn completion_id(hub_id: &str) -> String {
    match hub_id.strip_prefix("chatcmpl-") {
        Some(rest) => format!("cmpl-{rest}"),
        None => hub_id.to_owned(),
    }
}

/// Encodes a non-streamed hub answer as a `text_completion`. Every hub choice becomes a choice.
pub fn encode_response(resp: &ChatResponse, dec: &DecodedCompletion) -> CompletionResponse {
    let choices = resp
        .choices
        .iter()
        .map(|c| {
            let mut text = if dec.echo { dec.prompt.clone() } else { String::new() };
            text.push_str(c.message.content.as_deref().unwrap_or_default());
            CompletionChoice {
                text,
                index: c.index,
                logprobs: None,
                finish_reason: Some(finish_reason(c.finish_reason).to_owned()),
            }
        })
        .collect();
    CompletionResponse {
        id: completion_id(&resp.id),
        object: OBJECT_TEXT_COMPLETION.to_owned(),
        created: resp.created,
        model: dec.model.clone(),
        choices,
        usage: Some(Some(resp.usage.unwrap_or_default())),
        system_fingerprint: resp.system_fingerprint.clone(),
    }
}

/// Encodes a hub stream as legacy completion SSE.
#[derive(Debug)]
pub struct StreamEncoder {
    model: String,
    prompt: Option<String>,
    include_usage: bool,
    id: Option<String>,
    created: u64,
    usage_sent: bool,
    done: bool,
}

impl StreamEncoder {
    /// An encoder for `dec`'s stream.
    pub fn new(dec: &DecodedCompletion) -> Self {
        Self {
            model: dec.model.clone(),
            prompt: dec.echo.then(|| dec.prompt.clone()),
            include_usage: dec.include_usage,
            id: None,
            created: 0,
            usage_sent: false,
            done: false,
        }
    }

    /// True once `[DONE]` or the error frame was written.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Consumes hub events, appending SSE frames to `out`. An error event writes one `{"error": …}` frame and
    /// ends the stream.
    pub fn push(&mut self, events: &[StreamEvent], out: &mut BytesMut) {
        for event in events {
            if self.done {
                return;
            }
            match event {
                StreamEvent::Chunk(chunk) => self.chunk(chunk, out),
                StreamEvent::Raw(bytes) => {
                    if let Ok(chunk) = serde_json::from_slice::<ChatChunk>(bytes) {
                        self.chunk(&chunk, out);
                    } else if let Ok(envelope) = serde_json::from_slice::<crate::openai::ErrorEnvelope>(bytes) {
                        self.error(&envelope.error, out);
                    }
                }
                StreamEvent::Error(error) => self.error(error, out),
            }
        }
    }

    /// The hub stream ended: writes the usage chunk if the client asked for it and none was written, then
    /// `data: [DONE]`; or the error frame when `summary` says the upstream did not complete.
    pub fn finish(&mut self, summary: Option<&StreamSummary>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if let Some(summary) = summary {
            match &summary.outcome {
                StreamOutcome::Completed => {}
                StreamOutcome::UpstreamError(error) => return self.error(error, out),
                StreamOutcome::Open | StreamOutcome::Truncated => return self.error(&truncated_error(), out),
            }
        }
        if self.include_usage && !self.usage_sent {
            let usage = summary.map(|s| s.usage).unwrap_or_default();
            let chunk = self.frame(Vec::new(), Some(Some(usage)));
            write_data(&chunk, out);
        }
        out.put_slice(crate::openai::sse_out::DONE);
        self.done = true;
    }

    fn frame(&self, choices: Vec<CompletionChoice>, usage: Option<Option<Usage>>) -> CompletionResponse {
        CompletionResponse {
            id: self.id.clone().unwrap_or_else(|| "cmpl-0".to_owned()),
            object: OBJECT_TEXT_COMPLETION.to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: usage.or(if self.include_usage { Some(None) } else { None }),
            system_fingerprint: None,
        }
    }

    fn chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if self.id.is_none() {
            self.id = Some(completion_id(&chunk.id));
            self.created = chunk.created;
        }
        if let Some(prompt) = self.prompt.take() {
            let choice = CompletionChoice { text: prompt, index: 0, logprobs: None, finish_reason: None };
            write_data(&self.frame(vec![choice], None), out);
        }
        let mut choices = Vec::new();
        for c in &chunk.choices {
            let text = c.delta.content.clone().unwrap_or_default();
            if text.is_empty() && c.finish_reason.is_none() {
                continue;
            }
            let finish = c.finish_reason.map(|r| finish_reason(Some(r)).to_owned());
            choices.push(CompletionChoice { text, index: c.index, logprobs: None, finish_reason: finish });
        }
        if !choices.is_empty() {
            write_data(&self.frame(choices, None), out);
        }
        if let Some(Some(usage)) = chunk.usage {
            if chunk.choices.is_empty() && self.include_usage && !self.usage_sent {
                self.usage_sent = true;
                write_data(&self.frame(Vec::new(), Some(Some(usage))), out);
            }
        }
    }

    fn error(&mut self, error: &ErrorBody, out: &mut BytesMut) {
        write_data(&crate::openai::ErrorEnvelope { error: error.clone() }, out);
        self.done = true;
    }
}

fn write_data<T: Serialize>(value: &T, out: &mut BytesMut) {
    out.put_slice(b"data: ");
    // Our own plain types cannot fail to serialize into memory.
    let result = serde_json::to_writer((&mut *out).writer(), value);
    debug_assert!(result.is_ok());
    out.put_slice(b"\n\n");
}

/// `Option<Option<Usage>>` with `Some(None)` ⇄ `null` (as in the chat chunk type).
mod usage_key {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::openai::Usage;

    pub fn serialize<S: Serializer>(value: &Option<Option<Usage>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Usage>>, D::Error> {
        Option::<Usage>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests;
