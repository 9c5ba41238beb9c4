//! Hub stream events → Anthropic Messages SSE, for every backend (research note §1.2).
//!
//! [`StreamEncoder`] sits behind any [`crate::StreamTranslator`]: the Anthropic, Ollama and OpenAI
//! decoders emit [`StreamEvent::Chunk`]s, and the OpenAI pass-through
//! ([`crate::openai::passthrough::StreamPassthrough`], built with `client_wants_usage = true` so the usage
//! chunk is kept) emits [`StreamEvent::Raw`] chunk JSON, which is parsed here leniently.
//!
//! Output, in order: `message_start` (lazily, at the first chunk, or by [`StreamEncoder::start`]);
//! content blocks `content_block_start` → deltas → `content_block_stop`; at [`StreamEncoder::finish`]
//! `message_delta` (stop reason and final usage, input tokens included) and `message_stop`. Every frame
//! is `event: <type>\ndata: <json>\n\n`.
//!
//! Invariants, for any sequence and any split of the input:
//! - Block indexes are 0, 1, 2… with exactly one block open at a time, and each delta's type matches its
//!   block (the SDKs and Claude Code crash otherwise). Every block opened is closed before
//!   `message_delta` or `error`.
//! - Each tool call (keyed by OpenAI `index`, and by `id` when an upstream reuses an index for several
//!   calls) gets its own `tool_use` block, started with its id and name, and the concatenation of its
//!   `partial_json` equals the concatenation of the call's `arguments` fragments (`{}` when it had none).
//! - A tool block is closed only once its arguments parse as complete JSON (or at the end). Text,
//!   thinking or another call arriving while the open call is incomplete are queued and follow, in
//!   arrival order, when it completes: arguments are never split across blocks, even when an upstream
//!   interleaves calls. The usual sequential upstream is streamed live, without queueing.
//! - Upstreams that resend cumulative argument snapshots are normalised: once a call's arguments are
//!   complete JSON, a fragment that repeats them is reduced to its new suffix; anything else after
//!   complete JSON (which could only make the arguments invalid) is dropped.
//! - Thinking blocks (only with `include_thinking`) end with a `signature_delta` carrying
//!   [`GATEWAY_THINKING_SIGNATURE`].
//! - An upstream error ([`StreamEvent::Error`], or a raw chunk with a truthy `error`) closes the open
//!   block and becomes one `event: error` with Anthropic's error JSON; nothing follows it.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::Value;

use crate::openai::{ChatChunk, ErrorBody, FinishReason, ToolCallDelta, Usage};
use crate::stream::{StreamEvent, StreamOutcome, StreamSummary};

use super::errors::stream_error_type;
use super::response::{message_id, stop_reason, tool_use_id, usage, EncodeContext, GATEWAY_THINKING_SIGNATURE};
use super::wire::{self, BlockDelta, BlockStart, EmptyObject, MessageDeltaBody};

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing written yet.
    Idle,
    /// `message_start` written.
    Started,
    /// `message_stop` written (terminal).
    Done,
    /// `error` written (terminal).
    Failed,
}

/// The one open content block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text {
        index: u32,
    },
    Thinking {
        index: u32,
    },
    /// `call` indexes [`StreamEncoder::calls`].
    Tool {
        index: u32,
        call: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallPhase {
    /// Seen, not written yet (its arguments accumulate).
    Waiting,
    /// Its block is open.
    Open,
    /// Its block was closed.
    Closed,
}

#[derive(Debug, Clone)]
struct Call {
    openai_index: u32,
    upstream_id: Option<String>,
    name: Option<String>,
    /// Every argument fragment kept so far.
    args: String,
    /// Bytes of `args` already written as `partial_json`.
    written: usize,
    phase: CallPhase,
    /// Memo of the last completeness check: (`args.len()`, complete).
    complete_memo: Option<(usize, bool)>,
}

impl Call {
    fn is_complete(&mut self) -> bool {
        if let Some((len, complete)) = self.complete_memo {
            if len == self.args.len() {
                return complete;
            }
        }
        let complete =
            !self.args.trim().is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(&self.args).is_ok();
        self.complete_memo = Some((self.args.len(), complete));
        complete
    }

    fn ready(&self) -> bool {
        self.name.as_deref().is_some_and(|n| !n.is_empty())
    }
}

/// Output waiting behind an incomplete tool call.
#[derive(Debug, Clone)]
enum Pending {
    Text(String),
    Thinking(String),
    Call(usize),
}

/// Encodes one Anthropic Messages stream; see the module docs for the rules.
#[derive(Debug)]
pub struct StreamEncoder {
    ctx: EncodeContext,
    phase: Phase,
    next_index: u32,
    open: Option<Open>,
    calls: Vec<Call>,
    pending: VecDeque<Pending>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
    message_id: String,
    /// Bytes of text, thinking and arguments seen: the output estimate when no usage ever arrives.
    streamed_bytes: u64,
    /// Fragments dropped by snapshot normalisation (a broken upstream); for logs and tests.
    dropped_fragments: u64,
}

impl StreamEncoder {
    /// An encoder for one response.
    pub fn new(ctx: EncodeContext) -> Self {
        Self {
            message_id: ctx.message_id.clone(),
            ctx,
            phase: Phase::Idle,
            next_index: 0,
            open: None,
            calls: Vec::new(),
            pending: VecDeque::new(),
            finish_reason: None,
            usage: None,
            streamed_bytes: 0,
            dropped_fragments: 0,
        }
    }

    /// True once `message_stop` or `error` was written: nothing more will be.
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }

    /// Argument fragments dropped because they followed a call's complete JSON (see the module docs).
    pub fn dropped_fragments(&self) -> u64 {
        self.dropped_fragments
    }

    /// Writes `message_start` now if it was not written yet (e.g. to commit the `200` and start pings
    /// before the backend's first byte). Input tokens are [`EncodeContext::input_tokens_hint`].
    pub fn start(&mut self, out: &mut BytesMut) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Started;
        if self.message_id.is_empty() {
            self.message_id = message_id("");
        }
        let start_usage = match &self.usage {
            Some(u) => usage(u),
            None => wire::Usage { input_tokens: self.ctx.input_tokens_hint, ..wire::Usage::default() },
        };
        let message = wire::Message {
            id: self.message_id.clone(),
            kind: "message",
            role: "assistant",
            model: self.ctx.model.clone(),
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: start_usage,
        };
        write_event(&wire::StreamEvent::MessageStart { message: &message }, out);
    }

    /// Writes a `ping` (keep-alive; Claude Code drops a stream silent for 5 minutes). Nothing once
    /// terminal.
    pub fn ping(&mut self, out: &mut BytesMut) {
        if !self.is_terminal() {
            write_event(&wire::StreamEvent::Ping, out);
        }
    }

    /// Consumes one hub event, appending zero or more SSE frames to `out`.
    pub fn push(&mut self, event: &StreamEvent, out: &mut BytesMut) {
        if self.is_terminal() {
            return;
        }
        match event {
            StreamEvent::Chunk(chunk) => self.on_chunk(chunk, out),
            StreamEvent::Raw(payload) => match parse_raw(payload) {
                RawChunk::Chunk(chunk) => self.on_chunk(&chunk, out),
                RawChunk::Error(body) => self.fail(&body, out),
                // Not a chunk (a keep-alive, an unknown object): nothing to say.
                RawChunk::Other => {}
            },
            StreamEvent::Error(body) => self.fail(body, out),
        }
    }

    /// Consumes a slice of hub events.
    pub fn push_all(&mut self, events: &[StreamEvent], out: &mut BytesMut) {
        for event in events {
            self.push(event, out);
        }
    }

    /// The upstream ended: closes every block, writes `message_delta` and `message_stop`. `summary` is
    /// the upstream translator's final summary; its usage wins when final, and an outcome other than
    /// `Completed` without an error event so far writes an `error` event instead. Calling it twice writes
    /// nothing new.
    pub fn finish(&mut self, summary: &StreamSummary, out: &mut BytesMut) {
        if self.is_terminal() {
            return;
        }
        match &summary.outcome {
            StreamOutcome::Completed => {}
            StreamOutcome::UpstreamError(body) => return self.fail(body, out),
            StreamOutcome::Open | StreamOutcome::Truncated => {
                return self.fail(&crate::stream::truncated_error(), out);
            }
        }
        self.start(out);
        self.flush_all(out);
        if self.is_terminal() {
            return;
        }
        let finish = self.finish_reason.or(summary.finish_reason);
        let has_tool_use = self.calls.iter().any(|c| c.phase == CallPhase::Closed);
        let reason = stop_reason(finish, has_tool_use);
        let mut final_usage = if summary.usage_is_final || self.usage.is_none() {
            usage(&summary.usage)
        } else {
            self.usage.as_ref().map(usage).unwrap_or_default()
        };
        if !summary.usage_is_final && self.usage.is_none() {
            // No count from the backend at all: the hint and the gateway's 4-bytes-per-token estimate,
            // never 0 (Claude Code's context meter freezes on zeros).
            if final_usage.input_tokens == 0 {
                final_usage.input_tokens = self.ctx.input_tokens_hint;
            }
            if final_usage.output_tokens == 0 {
                final_usage.output_tokens = self.streamed_bytes.max(summary.streamed_bytes).div_ceil(4);
            }
        }
        write_event(
            &wire::StreamEvent::MessageDelta {
                delta: MessageDeltaBody { stop_reason: reason, stop_sequence: None },
                usage: final_usage,
            },
            out,
        );
        write_event(&wire::StreamEvent::MessageStop, out);
        self.phase = Phase::Done;
    }

    fn fail(&mut self, body: &ErrorBody, out: &mut BytesMut) {
        if self.is_terminal() {
            return;
        }
        self.close_open(out);
        let (kind, message) = stream_error_type(body);
        write_event(&wire::StreamEvent::Error { error: wire::ErrorObject { kind, message: &message } }, out);
        self.phase = Phase::Failed;
    }

    fn on_chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if self.message_id.is_empty() && !chunk.id.is_empty() {
            self.message_id = message_id(&chunk.id);
        }
        if let Some(Some(u)) = &chunk.usage {
            self.usage = Some(*u);
        }
        self.start(out);
        // One choice is requested (`n` is never set by the ingress); other choices are ignored.
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return;
        };
        let delta = &choice.delta;
        if let Some(reasoning) = delta.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            self.streamed_bytes += reasoning.len() as u64;
            if self.ctx.include_thinking {
                self.on_content(Pending::Thinking(reasoning.to_owned()), out);
            }
        }
        for text in [delta.content.as_deref(), delta.refusal.as_deref()].into_iter().flatten() {
            if !text.is_empty() {
                self.streamed_bytes += text.len() as u64;
                self.on_content(Pending::Text(text.to_owned()), out);
            }
        }
        for fragment in delta.tool_calls.iter().flatten() {
            self.on_tool_fragment(fragment, out);
        }
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason);
        }
    }

    /// Text or thinking (never `Pending::Call`).
    fn on_content(&mut self, item: Pending, out: &mut BytesMut) {
        match (&item, self.open) {
            (Pending::Text(text), Some(Open::Text { index })) if self.pending.is_empty() => {
                write_delta(index, BlockDelta::TextDelta { text }, out);
                return;
            }
            (Pending::Thinking(text), Some(Open::Thinking { index })) if self.pending.is_empty() => {
                write_delta(index, BlockDelta::ThinkingDelta { thinking: text }, out);
                return;
            }
            _ => {}
        }
        if self.pending.is_empty() && self.can_switch() {
            self.close_open(out);
            self.open_item(item, out);
            return;
        }
        match (self.pending.back_mut(), item) {
            (Some(Pending::Text(queued)), Pending::Text(text)) => queued.push_str(&text),
            (Some(Pending::Thinking(queued)), Pending::Thinking(text)) => queued.push_str(&text),
            (_, item) => self.pending.push_back(item),
        }
    }

    fn on_tool_fragment(&mut self, fragment: &ToolCallDelta, out: &mut BytesMut) {
        let function = fragment.function.as_ref();
        let name = function.and_then(|f| f.name.as_deref()).filter(|n| !n.is_empty());
        let args = function.and_then(|f| f.arguments.as_deref()).unwrap_or("");
        let id = fragment.id.as_deref().filter(|id| !id.is_empty());
        let call = self.find_or_add_call(fragment.index, id);
        let state = &mut self.calls[call];
        if state.name.is_none() {
            state.name = name.map(str::to_owned);
        }
        let args = normalise_fragment(state, args);
        match args {
            Fragment::Append(text) => {
                self.streamed_bytes += text.len() as u64;
                self.calls[call].args.push_str(&text);
            }
            Fragment::Nothing => {}
            Fragment::Dropped => self.dropped_fragments += 1,
        }
        match self.calls[call].phase {
            CallPhase::Open => {
                self.write_call_args(call, out);
                self.drain(out);
            }
            CallPhase::Closed => {}
            CallPhase::Waiting => {
                let queued = self.pending.iter().any(|p| matches!(p, Pending::Call(c) if *c == call));
                if queued {
                    self.drain(out);
                } else if self.pending.is_empty() && self.can_switch() && self.calls[call].ready() {
                    self.close_open(out);
                    self.open_item(Pending::Call(call), out);
                } else {
                    self.pending.push_back(Pending::Call(call));
                    self.drain(out);
                }
            }
        }
    }

    /// The call a fragment belongs to: with an id, the call of that index and id (a new call when the
    /// upstream reuses an index with a new id); without, the latest call of that index.
    fn find_or_add_call(&mut self, openai_index: u32, id: Option<&str>) -> usize {
        let latest = self.calls.iter().rposition(|c| c.openai_index == openai_index);
        if let Some(pos) = latest {
            match (id, self.calls[pos].upstream_id.as_deref()) {
                (None, _) => return pos,
                (Some(id), Some(known)) if id == known => return pos,
                (Some(id), None) => {
                    self.calls[pos].upstream_id = Some(id.to_owned());
                    return pos;
                }
                (Some(_), Some(_)) => {}
            }
        }
        self.calls.push(Call {
            openai_index,
            upstream_id: id.map(str::to_owned),
            name: None,
            args: String::new(),
            written: 0,
            phase: CallPhase::Waiting,
            complete_memo: None,
        });
        self.calls.len() - 1
    }

    /// True when the open block may be closed now without splitting anything.
    fn can_switch(&mut self) -> bool {
        match self.open {
            None | Some(Open::Text { .. } | Open::Thinking { .. }) => true,
            Some(Open::Tool { call, .. }) => self.calls[call].is_complete(),
        }
    }

    /// Moves queued output out while the open block allows it.
    fn drain(&mut self, out: &mut BytesMut) {
        while let Some(front) = self.pending.front() {
            if let Pending::Call(call) = front {
                if !self.calls[*call].ready() {
                    return;
                }
            }
            if !self.can_switch() {
                return;
            }
            let Some(item) = self.pending.pop_front() else { return };
            self.close_open(out);
            self.open_item(item, out);
        }
    }

    /// End of stream: everything queued is written, whatever the completeness of the arguments.
    fn flush_all(&mut self, out: &mut BytesMut) {
        while let Some(item) = self.pending.pop_front() {
            if let Pending::Call(call) = item {
                if !self.calls[call].ready() {
                    // Fail closed: a nameless tool_use is schema-invalid for every client.
                    let body = ErrorBody::new(
                        "upstream returned a tool call without a name",
                        "server_error",
                        Some("upstream_error"),
                    );
                    return self.fail(&body, out);
                }
            }
            self.close_open(out);
            self.open_item(item, out);
        }
        self.close_open(out);
    }

    fn open_item(&mut self, item: Pending, out: &mut BytesMut) {
        let index = self.next_index;
        self.next_index += 1;
        match item {
            Pending::Text(text) => {
                write_event(
                    &wire::StreamEvent::ContentBlockStart { index, content_block: BlockStart::Text { text: "" } },
                    out,
                );
                write_delta(index, BlockDelta::TextDelta { text: &text }, out);
                self.open = Some(Open::Text { index });
            }
            Pending::Thinking(text) => {
                write_event(
                    &wire::StreamEvent::ContentBlockStart {
                        index,
                        content_block: BlockStart::Thinking { thinking: "", signature: "" },
                    },
                    out,
                );
                write_delta(index, BlockDelta::ThinkingDelta { thinking: &text }, out);
                self.open = Some(Open::Thinking { index });
            }
            Pending::Call(call) => {
                let counter = u32::try_from(call).unwrap_or(u32::MAX);
                let state = &mut self.calls[call];
                let id = tool_use_id(state.upstream_id.as_deref().unwrap_or(""), self.ctx.id_seed, counter);
                let name = state.name.as_deref().unwrap_or("");
                write_event(
                    &wire::StreamEvent::ContentBlockStart {
                        index,
                        content_block: BlockStart::ToolUse { id: &id, name, input: EmptyObject },
                    },
                    out,
                );
                state.phase = CallPhase::Open;
                self.open = Some(Open::Tool { index, call });
                self.write_call_args(call, out);
            }
        }
    }

    /// Writes the not-yet-written part of an open call's arguments.
    fn write_call_args(&mut self, call: usize, out: &mut BytesMut) {
        let Some(Open::Tool { index, call: open_call }) = self.open else { return };
        if open_call != call {
            return;
        }
        let state = &mut self.calls[call];
        if state.written < state.args.len() {
            write_delta(index, BlockDelta::InputJsonDelta { partial_json: &state.args[state.written..] }, out);
            state.written = state.args.len();
        }
    }

    fn close_open(&mut self, out: &mut BytesMut) {
        let Some(open) = self.open.take() else { return };
        let index = match open {
            Open::Text { index } => index,
            Open::Thinking { index } => {
                write_delta(index, BlockDelta::SignatureDelta { signature: GATEWAY_THINKING_SIGNATURE }, out);
                index
            }
            Open::Tool { index, call } => {
                let state = &mut self.calls[call];
                if state.args.trim().is_empty() {
                    // The concatenated partial_json must parse: a call without arguments has input {}.
                    write_delta(index, BlockDelta::InputJsonDelta { partial_json: "{}" }, out);
                }
                state.phase = CallPhase::Closed;
                index
            }
        };
        write_event(&wire::StreamEvent::ContentBlockStop { index }, out);
    }
}

/// What to do with an argument fragment.
enum Fragment {
    Append(String),
    Nothing,
    Dropped,
}

/// Snapshot normalisation (see the module docs).
fn normalise_fragment(call: &mut Call, args: &str) -> Fragment {
    if args.is_empty() {
        return Fragment::Nothing;
    }
    if !call.is_complete() {
        return Fragment::Append(args.to_owned());
    }
    let rest = args.strip_prefix(call.args.as_str()).unwrap_or(args);
    if rest.trim().is_empty() {
        Fragment::Nothing
    } else {
        Fragment::Dropped
    }
}

fn write_delta(index: u32, delta: BlockDelta, out: &mut BytesMut) {
    write_event(&wire::StreamEvent::ContentBlockDelta { index, delta }, out);
}

/// Appends one frame: `event: <type>\ndata: <compact json>\n\n`.
fn write_event(event: &wire::StreamEvent, out: &mut BytesMut) {
    out.put_slice(b"event: ");
    out.put_slice(event.name().as_bytes());
    out.put_slice(b"\ndata: ");
    let result = serde_json::to_writer((&mut *out).writer(), event);
    // Serializing these plain structs into memory cannot fail; if it ever did, the frame is still closed
    // so the client's framing survives.
    debug_assert!(result.is_ok());
    out.put_slice(b"\n\n");
}

// ---------------------------------------------------------------------------------------------------
// Raw OpenAI chunks (pass-through backends)
// ---------------------------------------------------------------------------------------------------

enum RawChunk {
    Chunk(ChatChunk),
    Error(ErrorBody),
    Other,
}

/// A chunk as OpenAI-compatible servers send it: every field optional (some omit `object`, `created`
/// or `model`), reasoning as `reasoning_content` (DeepSeek, vLLM) or `reasoning` (Groq, OpenRouter).
#[derive(Deserialize)]
struct LenientChunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    choices: Option<Vec<LenientChoice>>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct LenientChoice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<LenientDelta>,
    #[serde(default)]
    finish_reason: Option<Value>,
}

#[derive(Deserialize)]
struct LenientDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

fn parse_raw(payload: &[u8]) -> RawChunk {
    let Ok(chunk) = serde_json::from_slice::<LenientChunk>(payload) else {
        return RawChunk::Other;
    };
    if let Some(error) = chunk.error.filter(is_truthy) {
        return RawChunk::Error(error_body(&error));
    }
    let choices = chunk
        .choices
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let delta = c.delta.map(|d| crate::openai::Delta {
                role: None,
                content: d.content,
                refusal: d.refusal,
                tool_calls: d.tool_calls,
                reasoning_content: d.reasoning_content.or(d.reasoning),
            });
            crate::openai::ChunkChoice {
                index: c.index.unwrap_or(0),
                delta: delta.unwrap_or_default(),
                logprobs: None,
                finish_reason: c.finish_reason.and_then(|r| serde_json::from_value(r).ok()),
            }
        })
        .collect();
    let usage = chunk.usage.filter(|u| !u.is_null()).and_then(|u| serde_json::from_value::<Usage>(u).ok());
    RawChunk::Chunk(ChatChunk {
        id: chunk.id.unwrap_or_default(),
        object: crate::openai::OBJECT_CHUNK.to_owned(),
        created: 0,
        model: String::new(),
        choices,
        usage: usage.map(Some),
    })
}

/// openai-python raises for any chunk whose `error` is truthy; so do we.
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
    }
}

fn error_body(error: &Value) -> ErrorBody {
    match error {
        Value::Object(map) => {
            let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
            let mut body = ErrorBody::new(
                text("message").unwrap_or_else(|| error.to_string()),
                map.get("type").and_then(Value::as_str).unwrap_or("server_error"),
                None,
            );
            body.code = text("code").or_else(|| map.get("code").and_then(Value::as_u64).map(|n| n.to_string()));
            body
        }
        Value::String(s) => ErrorBody::new(s.clone(), "server_error", None),
        other => ErrorBody::new(other.to_string(), "server_error", None),
    }
}

#[cfg(test)]
mod tests;
