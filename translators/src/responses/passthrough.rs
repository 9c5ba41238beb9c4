//! OpenAI-kind backends serve `/v1/responses` themselves: the gateway forwards bytes and only meters.
//!
//! - [`rename_model`]: the request body with `model` renamed, every other byte kept (it reuses
//!   [`openai::passthrough::rewrite_request`](crate::openai::passthrough::rewrite_request), which only
//!   renames when told the request is not a stream: Responses streams need no `stream_options` forcing,
//!   since their terminal event always carries usage).
//! - [`extract_usage`]: usage of a non-streamed `response` body.
//! - [`UsageScanner`]: reads a passed-through Responses SSE stream on the side (the caller forwards the
//!   bytes untouched) and finds usage in the terminal `response.completed` / `response.incomplete` /
//!   `response.failed` event. Any split of the bytes gives the same summary.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::response::usage_from_response_usage;
use super::wire::ResponseUsage;
use crate::error::TranslateError;
use crate::framing::sse::{SseEvent, SseFramer};
use crate::openai::passthrough::{rewrite_request, RequestHead as ChatHead};
use crate::openai::{ErrorBody, FinishReason, Usage};
use crate::stream::{StreamOutcome, StreamSummary};

/// The body with `model` set to `upstream_model` (`client_model` is the body's current `model`, from
/// [`parse_head`](super::parse_head)). Returns `body` itself when the names are equal. Works for any JSON
/// object body (`/v1/responses`, `/v1/embeddings`, `/v1/completions`, `/v1/responses/compact`).
pub fn rename_model(body: Bytes, client_model: &str, upstream_model: &str) -> Result<Bytes, TranslateError> {
    let head = ChatHead {
        model: client_model.to_owned(),
        stream: false,
        include_usage: false,
        max_output_tokens: None,
        n: None,
    };
    rewrite_request(body, &head, upstream_model)
}

#[derive(Deserialize)]
struct UsageOnly<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

/// `ResponseUsage` as upstreams send it: any count may be missing.
#[derive(Deserialize)]
struct UsageWire {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetailsWire>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetailsWire>,
}

#[derive(Deserialize)]
struct InputDetailsWire {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputDetailsWire {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

fn parse_usage(raw: &str) -> Option<Usage> {
    let wire: UsageWire = serde_json::from_str(raw).ok()?;
    let input = wire.input_tokens.unwrap_or(0);
    let output = wire.output_tokens.unwrap_or(0);
    let usage = ResponseUsage {
        input_tokens: input,
        input_tokens_details: super::wire::InputTokensDetails {
            cached_tokens: wire.input_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_write_tokens: wire.input_tokens_details.as_ref().and_then(|d| d.cache_write_tokens).unwrap_or(0),
        },
        output_tokens: output,
        output_tokens_details: super::wire::OutputTokensDetails {
            reasoning_tokens: wire.output_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0),
        },
        total_tokens: wire.total_tokens.unwrap_or(input.saturating_add(output)),
    };
    Some(usage_from_response_usage(&usage))
}

/// The `usage` of a non-streamed `response` body (`None` when absent, null or malformed). Also reads the
/// `usage` of `/v1/responses/compact` answers, which have the same shape.
pub fn extract_usage(body: &[u8]) -> Option<Usage> {
    let body: UsageOnly = serde_json::from_slice(body).ok()?;
    parse_usage(body.usage?.get())
}

/// An event read only as far as metering needs.
#[derive(Deserialize)]
struct LightEvent<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    delta: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    response: Option<LightResponse<'a>>,
    #[serde(borrow, default)]
    message: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LightResponse<'a> {
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    incomplete_details: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// Meters a passed-through Responses stream; never changes or holds back the bytes.
#[derive(Debug)]
pub struct UsageScanner {
    framer: SseFramer,
    events: Vec<SseEvent>,
    outcome: StreamOutcome,
    usage: Usage,
    usage_is_final: bool,
    streamed_bytes: u64,
    finish_reason: Option<FinishReason>,
    upstream_model: Option<String>,
    /// The framer failed (an oversized event): metering stops; the bytes still flow.
    broken: bool,
}

impl Default for UsageScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageScanner {
    /// A scanner for one stream.
    pub fn new() -> Self {
        Self {
            framer: SseFramer::default(),
            events: Vec::new(),
            outcome: StreamOutcome::Open,
            usage: Usage::default(),
            usage_is_final: false,
            streamed_bytes: 0,
            finish_reason: None,
            upstream_model: None,
            broken: false,
        }
    }

    /// Looks at the next bytes of the stream (any split). The caller forwards them unchanged.
    pub fn feed(&mut self, input: &[u8]) {
        if self.broken {
            return;
        }
        if self.framer.feed(input, &mut self.events).is_err() {
            self.broken = true;
        }
        self.process();
    }

    /// The upstream ended: a last event without its blank line is still read. Returns the summary;
    /// `outcome` stays `Truncated` when no terminal event was seen.
    pub fn finish(&mut self) -> StreamSummary {
        if !self.broken {
            self.framer.finish(&mut self.events);
            self.process();
        }
        if self.outcome == StreamOutcome::Open {
            self.outcome = StreamOutcome::Truncated;
        }
        self.summary()
    }

    /// True once a terminal event (`response.completed`, `.incomplete`, `.failed`, `error`) was seen.
    pub fn is_terminal(&self) -> bool {
        self.outcome != StreamOutcome::Open
    }

    /// The summary so far (for a client that hung up).
    pub fn summary(&self) -> StreamSummary {
        StreamSummary {
            outcome: self.outcome.clone(),
            usage: self.usage,
            usage_is_final: self.usage_is_final,
            streamed_bytes: self.streamed_bytes,
            finish_reason: self.finish_reason,
            upstream_model: self.upstream_model.clone(),
        }
    }

    fn process(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            self.event(&event);
        }
        self.events = events;
    }

    fn event(&mut self, event: &SseEvent) {
        let Ok(light) = serde_json::from_slice::<LightEvent>(&event.data) else { return };
        // The `type` in the data is authoritative; the `event:` line is its copy.
        let kind = light.kind.unwrap_or(event.event.as_str());
        if kind.ends_with(".delta") {
            if let Some(delta) = &light.delta {
                self.streamed_bytes += delta.len() as u64;
            }
            return;
        }
        match kind {
            "response.created" | "response.in_progress" => {
                if let Some(model) = light.response.as_ref().and_then(|r| r.model.as_ref()) {
                    self.upstream_model = Some(model.to_string());
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let Some(response) = light.response else { return };
                if let Some(model) = &response.model {
                    self.upstream_model = Some(model.to_string());
                }
                if let Some(usage) = response.usage.filter(|u| u.get() != "null").and_then(|u| parse_usage(u.get())) {
                    self.usage = usage;
                    self.usage_is_final = true;
                }
                self.finish_reason = match kind {
                    "response.incomplete" => {
                        let reason = response.incomplete_details.map(RawValue::get).unwrap_or_default();
                        Some(if reason.contains("content_filter") {
                            FinishReason::ContentFilter
                        } else {
                            FinishReason::Length
                        })
                    }
                    "response.completed" => Some(FinishReason::Stop),
                    _ => None,
                };
                self.outcome = if kind == "response.failed" {
                    let message = response
                        .error
                        .and_then(|e| serde_json::from_str::<ErrorMessage>(e.get()).ok())
                        .map(|e| e.message)
                        .unwrap_or_else(|| "upstream response failed".to_owned());
                    StreamOutcome::UpstreamError(ErrorBody::new(message, "server_error", Some("upstream_error")))
                } else {
                    StreamOutcome::Completed
                };
            }
            "error" => {
                let message = light.message.map(|m| m.into_owned()).unwrap_or_else(|| "upstream error".to_owned());
                let code = light.code.and_then(|c| serde_json::from_str::<String>(c.get()).ok());
                let mut body = ErrorBody::new(message, "server_error", None);
                body.code = code;
                self.outcome = StreamOutcome::UpstreamError(body);
            }
            _ => {}
        }
    }
}

#[derive(Deserialize)]
struct ErrorMessage {
    #[serde(default)]
    message: String,
}
