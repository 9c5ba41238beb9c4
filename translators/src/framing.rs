//! Framing, kept apart from formats: SSE (Anthropic, OpenAI) and NDJSON (Ollama native).

pub mod ndjson;
pub mod sse;

/// Default cap on one SSE event or NDJSON line. Large enough for big tool arguments and base64 payloads,
/// small enough that a broken upstream cannot make us buffer without bound.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
