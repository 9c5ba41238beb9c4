//! Wire-format translation for the AI Aggregator gateway.
//!
//! Invariants:
//! - No I/O: no sockets, no clocks, no tasks. Callers pass in ids and timestamps.
//! - OpenAI chat completions are the hub; each provider converts to and from them.
//! - Stream translators accept any split of the upstream bytes: `feed` may be called with one byte or
//!   one megabyte, with SSE/NDJSON lines and UTF-8 sequences cut anywhere, and the output is the same.

pub mod anthropic;
pub mod anthropic_ingress;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod framing;
pub mod ids;
pub mod ollama;
pub mod openai;
pub mod responses;
pub mod rfc3339;
pub mod stream;

pub use error::TranslateError;
pub use stream::{StreamEvent, StreamOutcome, StreamSummary, StreamTranslator};
