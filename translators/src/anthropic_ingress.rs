//! Anthropic Messages *ingress*: clients that speak Anthropic's API (Claude Code, the `anthropic` SDKs)
//! in front of any backend (issue #12; research note `ingress.md` §1).
//!
//! Hub and spoke, like every provider: Anthropic requests are decoded into the OpenAI hub types, and
//! hub responses/stream events are encoded back, so one translator pair serves OpenAI-kind, Ollama and
//! (on fallback) Anthropic backends. When the backend *is* Anthropic, the gateway does not translate:
//! it forwards the body with [`rewrite_model`] (byte-preserving) and relays the stream.
//!
//! | Gateway step | Function |
//! |---|---|
//! | route | [`parse_head`] (model, stream) |
//! | Anthropic backend | [`rewrite_model`] |
//! | other backends | [`decode_request`] → hub [`crate::openai::ChatRequest`] → provider encoder |
//! | non-stream answer | [`encode_response`] (hub `ChatResponse` → `message` JSON) |
//! | stream answer | [`StreamEncoder`] fed the provider translator's [`crate::StreamEvent`]s |
//! | errors | [`encode_error`], [`encode_translate_error`], in-band via the encoder |
//! | `count_tokens` | [`count_tokens`] + [`count_tokens_json`] |
//! | `GET /v1/models` | [`ModelsQuery::parse`] + [`encode_models_page`] |
//!
//! Invariants: pure (no I/O, clocks or randomness: ids and seeds come from [`EncodeContext`]); the
//! stream encoder's output is the same for any split of its input into events (see [`stream`]'s docs);
//! everything written parses as the official SDKs' types (every usage key present, `stop_sequence`
//! explicit, `tool_use.input` always an object).

mod errors;
mod models;
mod request;
mod response;
pub mod stream;
mod tokens;
pub mod wire;

pub use errors::{
    anthropic_status, context_overflow_message, encode_error, encode_translate_error, error_json, error_type,
    stream_error_type, EncodedError,
};
pub use models::{encode_models_page, models_page, ModelEntry, ModelsQuery, DEFAULT_LIMIT, MAX_LIMIT};
pub use request::{
    decode_request, parse_head, reasoning_effort, rewrite_model, DecodedRequest, MessagesHead, ATTRIBUTION_PREFIX,
    TOOL_ERROR_PREFIX,
};
pub use response::{
    encode_message, encode_response, message_id, stop_reason, tool_input, tool_use_id, usage, EncodeContext,
    GATEWAY_THINKING_SIGNATURE, RAW_ARGUMENTS_KEY,
};
pub use stream::StreamEncoder;
pub use tokens::{count_tokens, count_tokens_json};

/// Path of the Messages endpoint (a `?beta=true` query is ignored).
pub const MESSAGES_PATH: &str = "/v1/messages";
/// Path of the token-counting endpoint.
pub const COUNT_TOKENS_PATH: &str = "/v1/messages/count_tokens";
/// Header whose presence (with [`API_KEY_HEADER`]) selects Anthropic's `GET /v1/models` shape.
pub const VERSION_HEADER: &str = "anthropic-version";
/// Header of beta features (forwarded to Anthropic, ignored when translating).
pub const BETA_HEADER: &str = "anthropic-beta";
/// Anthropic's API-key header (an alternative to `Authorization: Bearer`).
pub const API_KEY_HEADER: &str = "x-api-key";
/// Response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "request-id";
/// Claude Code's session header, for the ledger.
pub const SESSION_HEADER: &str = "x-claude-code-session-id";
/// Content type of a stream answer.
pub const SSE_CONTENT_TYPE: &str = "text/event-stream";
