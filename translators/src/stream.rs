//! The contract every stream translator fulfils, and what it reports back for metering.

use bytes::Bytes;

use crate::openai::{ChatChunk, ErrorBody, FinishReason, Usage};

/// One event to send downstream as `data: …`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A chunk built by a translator.
    Chunk(ChatChunk),
    /// A complete OpenAI chunk JSON passed through byte for byte (OpenAI-kind upstreams).
    Raw(Bytes),
    /// A mid-stream failure, sent as `{"error": …}`; the stream ends after it with no `[DONE]`.
    Error(ErrorBody),
}

/// What the caller tells a translator about the response it is building.
#[derive(Debug, Clone)]
pub struct ResponseContext {
    /// `id` of every chunk/response when the upstream gives none (e.g. `chatcmpl-<random>`).
    pub id: String,
    /// `created` (unix seconds) of every chunk/response.
    pub created: u64,
    /// The `model` echoed to the client.
    pub model: String,
    /// The client asked for `stream_options.include_usage`: every chunk carries `usage: null` and one final
    /// usage chunk with `choices: []` precedes `[DONE]`.
    pub include_usage: bool,
    /// Emit reasoning/thinking text as `reasoning_content` instead of dropping it.
    pub include_reasoning: bool,
    /// Seed for synthesized tool-call ids (random per request in production, fixed in tests).
    pub id_seed: u64,
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamOutcome {
    /// Still running (no terminal event seen yet).
    Open,
    /// The upstream's terminal event arrived (`message_stop`, `[DONE]`, `done: true`).
    Completed,
    /// The upstream reported an error in-band; an error event was emitted.
    UpstreamError(ErrorBody),
    /// The upstream ended (EOF) before its terminal event; an error event was emitted by `finish`.
    Truncated,
}

/// What a translator knows about the stream at any moment; the ledger's source of truth.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSummary {
    pub outcome: StreamOutcome,
    /// Best-known usage: final counts when `usage_is_final`, else what the upstream reported so far
    /// (for Anthropic: input and cache counts from `message_start`).
    pub usage: Usage,
    /// True once the provider's own final counts arrived.
    pub usage_is_final: bool,
    /// UTF-8 bytes of completion text, reasoning and tool arguments streamed so far: the basis of the
    /// completion-token estimate when a stream is cut before the final count.
    pub streamed_bytes: u64,
    pub finish_reason: Option<FinishReason>,
    /// Upstream's own model id when it reported one (e.g. `claude-sonnet-4-5-20250929`).
    pub upstream_model: Option<String>,
}

impl StreamSummary {
    /// True once the stream reached a terminal outcome (completed, in-band error, truncated).
    pub fn is_terminal(&self) -> bool {
        self.outcome != StreamOutcome::Open
    }

    /// The upstream ended (EOF) without its terminal event: emit one error event and mark the stream
    /// truncated. Shared by every translator's `finish`, so the rule is the same for all of them.
    pub fn truncate_if_open(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.is_terminal() {
            out.push(StreamEvent::Error(truncated_error()));
            self.outcome = StreamOutcome::Truncated;
        }
    }

    /// An empty summary for a stream that has not started.
    pub fn open() -> Self {
        Self {
            outcome: StreamOutcome::Open,
            usage: Usage::default(),
            usage_is_final: false,
            streamed_bytes: 0,
            finish_reason: None,
            upstream_model: None,
        }
    }
}

/// Turns upstream stream bytes into OpenAI stream events.
///
/// `feed` accepts any split of the input. Once `is_terminal()` is true the caller stops reading the
/// upstream and calls `finish`.
pub trait StreamTranslator {
    /// Consumes upstream bytes, appending zero or more events to `out`.
    fn feed(&mut self, input: &[u8], out: &mut Vec<StreamEvent>);
    /// The upstream ended (or the caller stops reading): flushes what is pending and, if no terminal event
    /// was seen, emits one error event. Returns the final summary. Calling it twice emits nothing new.
    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> StreamSummary;
    /// True after the terminal event or an in-band error: nothing more will be emitted by `feed`.
    fn is_terminal(&self) -> bool;
    /// The summary so far, for a stream the client abandoned.
    fn summary(&self) -> StreamSummary;
}

/// The error event for an upstream that closed the stream before its terminal event.
pub fn truncated_error() -> ErrorBody {
    ErrorBody::new("upstream stream ended prematurely", "server_error", Some("upstream_error"))
}
