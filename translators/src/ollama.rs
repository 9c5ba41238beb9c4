//! Ollama native `/api/chat` ⇄ OpenAI chat completions, and `/api/tags` → model list.
//!
//! - `request`: OpenAI request → `/api/chat` body (wire-formats §4.6). Ollama's OpenAI-compatible layer
//!   is not used: it ignores `max_completion_tokens`, `num_ctx` and `keep_alive`, and overrides Modelfile
//!   sampling defaults.
//! - `response`: non-stream body → `chat.completion`; tags → models.
//! - `stream`: NDJSON → OpenAI chunks; `feed` accepts any split of the bytes.
//! - `errors`: HTTP error bodies → OpenAI envelope with the gateway's status policy.
//!
//! Pure: ids, timestamps and the tool-call id seed come from the caller's `ResponseContext`.

mod errors;
mod request;
mod response;
mod stream;
pub mod wire;

pub use crate::rfc3339::parse_rfc3339;
pub use errors::map_error;
pub use request::{encode_request, EncodeOptions, EncodedRequest};
pub use response::{decode_response, parse_tags, ModelInfo};
pub use stream::StreamDecoder;

/// Chat endpoint, appended to the configured base URL (`http://localhost:11434`).
pub const CHAT_PATH: &str = "/api/chat";
/// Local model listing endpoint.
pub const TAGS_PATH: &str = "/api/tags";

#[cfg(test)]
mod tests;
