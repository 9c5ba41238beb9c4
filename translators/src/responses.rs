//! OpenAI Responses API (`POST /v1/responses`) ⇄ hub chat completions, for backends that do not speak it.
//!
//! Hub and spoke: a Responses request is decoded into an [`openai::ChatRequest`](crate::openai::ChatRequest)
//! (then encoded for Anthropic/Ollama by their own translators), and the hub's answer, a
//! [`ChatResponse`](crate::openai::ChatResponse) or a stream of [`StreamEvent`](crate::StreamEvent)s, is
//! encoded back as a Responses `response` object or Responses SSE. Nothing here knows any provider.
//!
//! - [`decode_request`]: the stateless subset (research `ingress.md` §2.5). State (`previous_response_id`,
//!   `conversation`, `background: true`), prompt templates and hosted tools are refused with `param`.
//! - [`encode_response`]: `chat.completion` → `response` object, with every field the spec requires.
//! - [`StreamEncoder`]: hub stream events → `event: <type>\ndata: <json>\n\n` frames.
//! - [`passthrough`]: OpenAI-kind backends get `/v1/responses` untouched; usage is read for the ledger.
//!
//! Intended use from the gateway's `/v1/responses` front door, for a non-OpenAI route (the provider
//! translator is whichever the route names; Ollama here):
//!
//! ```
//! use bytes::BytesMut;
//! use translators::responses::{self, EncodeContext};
//! use translators::stream::ResponseContext;
//! use translators::StreamTranslator;
//!
//! let body = br#"{"model":"ollama/qwen3","input":"Hi","stream":true,"store":true}"#;
//! let head = responses::parse_head(body)?; // route on head.model; head.stateful_param → OpenAI only
//! let decoded = responses::decode_request(body)?; // 400 with err.param() on refusal
//! // decoded.chat goes through the usual route/encode path (`ollama::encode_request`, …).
//! # let ndjson = br#"{"message":{"role":"assistant","content":"Hello"},"done":true,"done_reason":"stop","prompt_eval_count":3,"eval_count":1}"#;
//! let hub_ctx = ResponseContext {
//!     id: "chatcmpl-1".into(), created: 1_700_000_000, model: head.model.clone(),
//!     include_usage: true, include_reasoning: true, id_seed: 42,
//! };
//! let mut upstream = translators::ollama::StreamDecoder::new(hub_ctx);
//! let ctx = EncodeContext {
//!     response_id: responses::response_id(42), created_at: 1_700_000_000, completed_at: 1_700_000_002, id_seed: 42,
//! };
//! let mut encoder = responses::StreamEncoder::new(decoded.echo, ctx);
//! let (mut hub, mut events, mut sse) = (Vec::new(), Vec::new(), BytesMut::new());
//! upstream.feed(ndjson, &mut hub);          // for each upstream body chunk
//! encoder.push(&hub, &mut events);
//! let summary = upstream.finish(&mut hub);  // at upstream EOF (summary.usage → ledger)
//! encoder.push(&hub, &mut events);
//! encoder.finish(Some(&summary), &mut events);
//! responses::write_sse(&events, &mut sse);  // event: response.created … response.completed
//! assert!(encoder.is_done());
//! # assert!(std::str::from_utf8(&sse).unwrap().contains("event: response.completed"));
//! # Ok::<(), translators::TranslateError>(())
//! ```
//!
//! Non-streamed: `encode_response(&chat_response, &decoded.echo, &ctx)` and serialize it.
//!
//! The provider translator's `ResponseContext` must have `include_usage: true` (the terminal event
//! carries usage) and `include_reasoning: true` (reasoning becomes a `reasoning` item). Request errors from
//! the provider encoders name hub paths; [`DecodedRequest::responses_param`] turns them into Responses paths.
//!
//! Accepted but not translated: `top_logprobs` and `include: ["message.output_text.logprobs"]` (no
//! logprobs), `max_tool_calls` (hosted tools only), `truncation: "auto"`, `text.verbosity` (reported by the
//! encoders as dropped), `reasoning` input items (dropped: no encrypted content to replay).
//!
//! Invariants:
//! - Pure: ids and timestamps come from the caller ([`EncodeContext`]); no clock, no randomness.
//! - The stream encoder's output depends only on the sequence of hub deltas, not on how they were cut
//!   into chunks, and always ends with exactly one terminal event (`response.completed`,
//!   `response.incomplete` or `response.failed`); no output item is left open.
//! - `sequence_number` starts at 0 and increases by one per event.

pub mod passthrough;
mod request;
mod response;
mod stream;
pub mod wire;

pub use request::{
    decode_request, decode_request_with, namespaced_name, parse_head, DecodeOptions, DecodedRequest, Echo, RequestHead,
    CUSTOM_TOOL_INPUT, NAMESPACE_SEPARATOR,
};
pub use response::{encode_response, response_usage, usage_from_response_usage};
pub use stream::{write_sse, StreamEncoder};

/// Path of the endpoint, appended to a base URL ending in `/v1`.
pub const RESPONSES_PATH: &str = "/responses";
/// Content type of the SSE answer.
pub const SSE_CONTENT_TYPE: &str = "text/event-stream";

/// What the caller supplies for one response: ids and times (the translators have no clock and no RNG).
#[derive(Debug, Clone)]
pub struct EncodeContext {
    /// `id` of the response, e.g. from [`response_id`].
    pub response_id: String,
    /// `created_at`, unix seconds (when the gateway received the request).
    pub created_at: u64,
    /// `completed_at`, unix seconds, used when the status is `completed` (for a stream: the time the caller
    /// calls [`StreamEncoder::finish`]; for a body: now).
    pub completed_at: u64,
    /// Seed of the output item ids (`msg_…`, `fc_…`, `rs_…`) and of synthesized call ids: random per request
    /// in production, fixed in tests.
    pub id_seed: u64,
}

/// `resp_` plus 48 lowercase hex digits derived from `seed` (the shape OpenAI uses).
pub fn response_id(seed: u64) -> String {
    prefixed_id("resp", seed, u32::MAX)
}

/// `<prefix>_` plus 48 hex digits from `seed` and a counter: distinct per (seed, counter), deterministic.
pub(crate) fn prefixed_id(prefix: &str, seed: u64, counter: u32) -> String {
    use std::fmt::Write as _;
    let mut id = String::with_capacity(prefix.len() + 49);
    id.push_str(prefix);
    id.push('_');
    let mut x = mix(seed ^ mix(u64::from(counter).wrapping_add(0x2545_F491_4F6C_DD1D)));
    for _ in 0..3 {
        // splitmix64 steps: cheap and well distributed.
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let _ = write!(id, "{:016x}", mix(x));
    }
    id
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
pub(crate) mod spec_tests;
#[cfg(test)]
mod tests;
