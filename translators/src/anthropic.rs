//! Anthropic Messages API ⇄ OpenAI chat completions.
//!
//! - [`encode_request`]: OpenAI request → `POST /v1/messages` body (policies documented in `request`).
//! - [`decode_response`] / [`decode_response_json_mode`]: non-streamed message → `chat.completion`.
//! - [`StreamDecoder`]: Messages SSE → OpenAI chunk events (a [`crate::StreamTranslator`]).
//! - [`map_error`] / [`map_stream_error`]: upstream errors → OpenAI error envelopes.
//! - [`parse_models_page`]: one page of `GET /v1/models`.
//!
//! Pure: no I/O, no clocks; ids and timestamps come from [`crate::stream::ResponseContext`].
//! Headers the gateway must send: `x-api-key`, `anthropic-version: DEFAULT_VERSION`, `content-type`.

mod errors;
mod request;
mod response;
mod stream;
pub mod wire;

pub use crate::rfc3339::parse_rfc3339;
pub use errors::{map_error, map_stream_error};
pub use request::{
    default_max_tokens, encode_request, sanitize_tool_id, EncodeOptions, EncodedRequest, JSON_TOOL_NAME,
    LEADING_PLACEHOLDER, MAX_IMAGE_BYTES,
};
pub use response::{
    decode_response, decode_response_json_mode, finish_reason, parse_models_page, ModelInfo, ModelPage,
};
pub use stream::StreamDecoder;

/// Path of the Messages endpoint.
pub const MESSAGES_PATH: &str = "/v1/messages";
/// Path of the model listing (paginate with `?limit=1000&after_id=<last_id>`).
pub const MODELS_PATH: &str = "/v1/models";
/// Value of the required `anthropic-version` header.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// Name of the version header.
pub const VERSION_HEADER: &str = "anthropic-version";
/// Name of the API-key header.
pub const API_KEY_HEADER: &str = "x-api-key";
