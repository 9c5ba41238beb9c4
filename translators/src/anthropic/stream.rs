//! Anthropic Messages SSE → OpenAI `chat.completion.chunk` events (wire-formats §3.7).
//!
//! Pipeline: bytes → [`SseFramer`] → JSON event (dispatched on its `type`) → state machine → events.
//!
//! | Anthropic | OpenAI |
//! |---|---|
//! | `message_start` | role chunk `{"role":"assistant","content":""}`; id `chatcmpl-<msg id>`, input/cache usage |
//! | text `content_block_start` (non-empty) / `text_delta` | `content` |
//! | `tool_use` `content_block_start` | first `tool_calls` fragment (`index` = per-call counter from 0) |
//! | `input_json_delta` (non-empty) | `arguments` fragment |
//! | `content_block_stop` of a tool with no fragment | `arguments: "{}"` |
//! | `thinking_delta` | `reasoning_content` when `include_reasoning`, else dropped |
//! | `message_delta` | stores stop reason and cumulative usage; finish chunk (`delta: {}`) |
//! | `message_stop` | usage chunk (`choices: []`) when `include_usage`; terminal ([`StreamOutcome::Completed`]) |
//! | `error` | one error event, terminal ([`StreamOutcome::UpstreamError`]); no fake finish chunk |
//! | `ping`, signatures, citations, unknown events/blocks/deltas, server tools | nothing |
//!
//! EOF before `message_stop` emits [`truncated_error`] ([`StreamOutcome::Truncated`]). A tool block cut by
//! `max_tokens` (no `content_block_stop`) gets no fabricated `{}`. Exactly one finish chunk is sent per
//! completed stream: at the first `message_delta` that carries a stop reason, else at `message_stop`.

use bytes::Bytes;

use crate::framing::sse::{SseEvent, SseFramer};
use crate::openai::{self, ChatChunk, Delta, ErrorBody, FinishReason, FunctionCallDelta, ToolCallDelta};
use crate::stream::{truncated_error, ResponseContext, StreamEvent, StreamOutcome, StreamSummary, StreamTranslator};

use super::response::{compact_input, finish_reason, UsageCounts};
use super::wire::{self, BlockDelta, ResponseBlock};

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before `message_start`.
    AwaitStart,
    Streaming,
    /// `message_stop` seen (terminal).
    Done,
    /// In-band error, framing error or truncation (terminal).
    Failed,
}

/// What an open content block turns into.
#[derive(Debug, Clone, PartialEq)]
enum BlockKind {
    Text,
    Thinking,
    /// A block type we do not translate (server tools, redacted thinking, future types): its deltas are
    /// dropped whatever their type.
    Ignored,
    /// A client `tool_use` block streamed as OpenAI tool call `openai_index`.
    ToolCall {
        openai_index: u32,
    },
    /// The forced JSON-mode tool: its arguments stream as `content`.
    JsonContent,
}

#[derive(Debug, Clone)]
struct OpenBlock {
    /// Anthropic's content block index.
    index: u64,
    kind: BlockKind,
    /// A non-empty `partial_json` fragment was forwarded.
    args_seen: bool,
    /// `input` of `content_block_start` when it was a non-empty object (normally `{}`).
    initial_input: Option<String>,
}

/// Translates one Anthropic Messages stream; see the module docs for the mapping.
#[derive(Debug)]
pub struct StreamDecoder {
    ctx: ResponseContext,
    json_mode_tool: Option<String>,
    framer: SseFramer,
    frames: Vec<SseEvent>,
    phase: Phase,
    outcome: StreamOutcome,
    /// `chatcmpl-<msg id>` once `message_start` arrived, else `ctx.id`.
    chunk_id: String,
    upstream_model: Option<String>,
    role_sent: bool,
    blocks: Vec<OpenBlock>,
    next_tool_index: u32,
    usage: UsageCounts,
    usage_is_final: bool,
    stop_reason: Option<String>,
    finish_sent: Option<FinishReason>,
    json_tool_seen: bool,
    streamed_bytes: u64,
    /// `finish` is flushing the framer: an unparsable last event means the upstream hung up mid-event.
    at_eof: bool,
}

impl StreamDecoder {
    /// A decoder for a normal request.
    pub fn new(ctx: ResponseContext) -> Self {
        Self {
            chunk_id: ctx.id.clone(),
            ctx,
            json_mode_tool: None,
            framer: SseFramer::default(),
            frames: Vec::new(),
            phase: Phase::AwaitStart,
            outcome: StreamOutcome::Open,
            upstream_model: None,
            role_sent: false,
            blocks: Vec::new(),
            next_tool_index: 0,
            usage: UsageCounts::default(),
            usage_is_final: false,
            stop_reason: None,
            finish_sent: None,
            json_tool_seen: false,
            streamed_bytes: 0,
            at_eof: false,
        }
    }

    /// A decoder for a request encoded in JSON mode (`EncodedRequest::json_mode_tool`): the arguments of
    /// the tool `tool_name` stream as `content`, and `tool_use` finishes as `stop`.
    pub fn with_json_mode(ctx: ResponseContext, tool_name: impl Into<String>) -> Self {
        let mut decoder = Self::new(ctx);
        decoder.json_mode_tool = Some(tool_name.into());
        decoder
    }

    fn chunk(&self) -> ChatChunk {
        openai::chunk(&self.chunk_id, self.ctx.created, &self.ctx.model, self.ctx.include_usage)
    }

    fn emit_delta(&mut self, delta: Delta, out: &mut Vec<StreamEvent>) {
        self.ensure_role(out);
        let mut chunk = self.chunk();
        if let Some(choice) = chunk.choices.first_mut() {
            choice.delta = delta;
        }
        out.push(StreamEvent::Chunk(chunk));
    }

    fn ensure_role(&mut self, out: &mut Vec<StreamEvent>) {
        if self.role_sent {
            return;
        }
        self.role_sent = true;
        if self.phase == Phase::AwaitStart {
            self.phase = Phase::Streaming;
        }
        let mut chunk = self.chunk();
        if let Some(choice) = chunk.choices.first_mut() {
            choice.delta =
                Delta { role: Some("assistant".to_owned()), content: Some(String::new()), ..Delta::default() };
        }
        out.push(StreamEvent::Chunk(chunk));
    }

    fn emit_content(&mut self, text: &str, out: &mut Vec<StreamEvent>) {
        if text.is_empty() {
            return;
        }
        self.streamed_bytes += text.len() as u64;
        self.emit_delta(Delta { content: Some(text.to_owned()), ..Delta::default() }, out);
    }

    fn emit_reasoning(&mut self, text: &str, out: &mut Vec<StreamEvent>) {
        if text.is_empty() {
            return;
        }
        // Thinking tokens are billed as output whether or not the client sees them.
        self.streamed_bytes += text.len() as u64;
        if self.ctx.include_reasoning {
            self.emit_delta(Delta { reasoning_content: Some(text.to_owned()), ..Delta::default() }, out);
        }
    }

    fn emit_tool_fragment(&mut self, fragment: ToolCallDelta, out: &mut Vec<StreamEvent>) {
        self.emit_delta(Delta { tool_calls: Some(vec![fragment]), ..Delta::default() }, out);
    }

    fn emit_finish(&mut self, out: &mut Vec<StreamEvent>) {
        if self.finish_sent.is_some() {
            return;
        }
        let mut reason = finish_reason(self.stop_reason.as_deref());
        if reason == FinishReason::ToolCalls && self.json_tool_seen && self.next_tool_index == 0 {
            reason = FinishReason::Stop;
        }
        self.ensure_role(out);
        let mut chunk = self.chunk();
        if let Some(choice) = chunk.choices.first_mut() {
            choice.finish_reason = Some(reason);
        }
        out.push(StreamEvent::Chunk(chunk));
        self.finish_sent = Some(reason);
    }

    fn fail(&mut self, body: ErrorBody, outcome: StreamOutcome, out: &mut Vec<StreamEvent>) {
        out.push(StreamEvent::Error(body));
        self.phase = Phase::Failed;
        self.outcome = outcome;
    }

    fn is_terminal_phase(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }

    /// Handles the events the framer produced, stopping at the first terminal one.
    fn drain_frames(&mut self, out: &mut Vec<StreamEvent>) {
        let frames = std::mem::take(&mut self.frames);
        for frame in &frames {
            if self.is_terminal_phase() {
                break;
            }
            self.handle(&frame.data, out);
        }
        // Keep the allocation.
        let mut frames = frames;
        frames.clear();
        self.frames = frames;
    }

    fn handle(&mut self, data: &Bytes, out: &mut Vec<StreamEvent>) {
        let event: wire::StreamEvent = match serde_json::from_slice(data) {
            Ok(event) => event,
            // An event flushed at EOF without its blank line and unparsable was cut by the hang-up.
            Err(_) if self.at_eof => {
                self.fail(truncated_error(), StreamOutcome::Truncated, out);
                return;
            }
            Err(_) => {
                let body = ErrorBody::new(
                    "anthropic: upstream sent an unreadable stream event",
                    "server_error",
                    Some("upstream_error"),
                );
                self.fail(body.clone(), StreamOutcome::UpstreamError(body), out);
                return;
            }
        };
        match event {
            wire::StreamEvent::MessageStart { message } => self.on_message_start(message, out),
            wire::StreamEvent::ContentBlockStart { index, content_block } => {
                self.on_block_start(index, content_block, out);
            }
            wire::StreamEvent::ContentBlockDelta { index, delta } => self.on_block_delta(index, delta, out),
            wire::StreamEvent::ContentBlockStop { index } => self.on_block_stop(index, out),
            wire::StreamEvent::MessageDelta { delta, usage } => {
                if let Some(usage) = &usage {
                    self.usage.apply(usage);
                    self.usage_is_final = true;
                }
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                    self.emit_finish(out);
                }
            }
            wire::StreamEvent::MessageStop => {
                self.emit_finish(out);
                if self.ctx.include_usage {
                    let mut chunk = self.chunk();
                    chunk.choices.clear();
                    chunk.usage = Some(Some(self.usage.to_openai()));
                    out.push(StreamEvent::Chunk(chunk));
                }
                self.phase = Phase::Done;
                self.outcome = StreamOutcome::Completed;
            }
            wire::StreamEvent::Error => {
                let body = super::map_stream_error(data);
                self.fail(body.clone(), StreamOutcome::UpstreamError(body), out);
            }
            wire::StreamEvent::Ping | wire::StreamEvent::Unknown => {}
        }
    }

    fn on_message_start(&mut self, message: wire::Message, out: &mut Vec<StreamEvent>) {
        if self.phase != Phase::AwaitStart {
            // A repeated message_start (or one after content) changes nothing.
            return;
        }
        if !message.id.is_empty() {
            self.chunk_id = format!("chatcmpl-{}", message.id);
        }
        if !message.model.is_empty() {
            self.upstream_model = Some(message.model);
        }
        if let Some(usage) = &message.usage {
            self.usage.apply(usage);
        }
        self.ensure_role(out);
    }

    fn on_block_start(&mut self, index: u64, block: ResponseBlock, out: &mut Vec<StreamEvent>) {
        self.blocks.retain(|b| b.index != index);
        let plain = |kind| OpenBlock { index, kind, args_seen: false, initial_input: None };
        match block {
            ResponseBlock::Text { text } => {
                self.blocks.push(plain(BlockKind::Text));
                self.emit_content(&text, out);
            }
            ResponseBlock::Thinking { thinking } => {
                self.blocks.push(plain(BlockKind::Thinking));
                self.emit_reasoning(&thinking, out);
            }
            ResponseBlock::ToolUse { id, name, input } => {
                let initial_input = match &input {
                    serde_json::Value::Object(map) if !map.is_empty() => Some(compact_input(&input)),
                    _ => None,
                };
                if self.json_mode_tool.as_deref() == Some(name.as_str()) {
                    self.json_tool_seen = true;
                    self.blocks.push(OpenBlock {
                        index,
                        kind: BlockKind::JsonContent,
                        args_seen: false,
                        initial_input,
                    });
                    self.ensure_role(out);
                    return;
                }
                let openai_index = self.next_tool_index;
                self.next_tool_index += 1;
                self.blocks.push(OpenBlock {
                    index,
                    kind: BlockKind::ToolCall { openai_index },
                    args_seen: false,
                    initial_input,
                });
                self.emit_tool_fragment(
                    ToolCallDelta {
                        index: openai_index,
                        id: Some(id),
                        kind: Some("function".to_owned()),
                        function: Some(FunctionCallDelta { name: Some(name), arguments: Some(String::new()) }),
                    },
                    out,
                );
            }
            ResponseBlock::Unknown => self.blocks.push(plain(BlockKind::Ignored)),
        }
    }

    /// The kind of block `index`; `None` when the upstream never announced it (its text and thinking
    /// deltas are still forwarded, leniently).
    fn block_kind(&self, index: u64) -> Option<&BlockKind> {
        self.blocks.iter().find(|b| b.index == index).map(|b| &b.kind)
    }

    fn on_block_delta(&mut self, index: u64, delta: BlockDelta, out: &mut Vec<StreamEvent>) {
        match delta {
            BlockDelta::TextDelta { text } => {
                if matches!(self.block_kind(index), None | Some(BlockKind::Text)) {
                    self.emit_content(&text, out);
                }
            }
            BlockDelta::ThinkingDelta { thinking } => {
                if matches!(self.block_kind(index), None | Some(BlockKind::Thinking)) {
                    self.emit_reasoning(&thinking, out);
                }
            }
            BlockDelta::InputJsonDelta { partial_json } => {
                if partial_json.is_empty() {
                    return;
                }
                // Deltas of blocks we do not forward (server tools) are dropped.
                let Some(block) = self.blocks.iter_mut().find(|b| b.index == index) else {
                    return;
                };
                if !matches!(block.kind, BlockKind::JsonContent | BlockKind::ToolCall { .. }) {
                    return;
                }
                block.args_seen = true;
                let kind = block.kind.clone();
                match kind {
                    BlockKind::Text | BlockKind::Thinking | BlockKind::Ignored => {}
                    BlockKind::JsonContent => self.emit_content(&partial_json, out),
                    BlockKind::ToolCall { openai_index } => {
                        self.streamed_bytes += partial_json.len() as u64;
                        self.emit_tool_fragment(
                            ToolCallDelta {
                                index: openai_index,
                                function: Some(FunctionCallDelta { name: None, arguments: Some(partial_json) }),
                                ..ToolCallDelta::default()
                            },
                            out,
                        );
                    }
                }
            }
            BlockDelta::Unknown => {}
        }
    }

    fn on_block_stop(&mut self, index: u64, out: &mut Vec<StreamEvent>) {
        let Some(pos) = self.blocks.iter().position(|b| b.index == index) else {
            return;
        };
        let block = self.blocks.remove(pos);
        if block.args_seen {
            return;
        }
        // No fragment: make the concatenated arguments valid JSON.
        let arguments = block.initial_input.unwrap_or_else(|| "{}".to_owned());
        match block.kind {
            BlockKind::Text | BlockKind::Thinking | BlockKind::Ignored => {}
            BlockKind::JsonContent => self.emit_content(&arguments, out),
            BlockKind::ToolCall { openai_index } => self.emit_tool_fragment(
                ToolCallDelta {
                    index: openai_index,
                    function: Some(FunctionCallDelta { name: None, arguments: Some(arguments) }),
                    ..ToolCallDelta::default()
                },
                out,
            ),
        }
    }
}

impl StreamTranslator for StreamDecoder {
    fn feed(&mut self, input: &[u8], out: &mut Vec<StreamEvent>) {
        if self.is_terminal_phase() {
            return;
        }
        let mut frames = std::mem::take(&mut self.frames);
        let framed = self.framer.feed(input, &mut frames);
        self.frames = frames;
        self.drain_frames(out);
        if let Err(error) = framed {
            if !self.is_terminal_phase() {
                let body = ErrorBody::new(format!("anthropic: {error}"), "server_error", Some("upstream_error"));
                self.fail(body.clone(), StreamOutcome::UpstreamError(body), out);
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> StreamSummary {
        if !self.is_terminal_phase() {
            // Servers often close right after the last event without its blank line.
            let mut frames = std::mem::take(&mut self.frames);
            self.framer.finish(&mut frames);
            self.frames = frames;
            self.at_eof = true;
            self.drain_frames(out);
        }
        if !self.is_terminal_phase() {
            self.fail(truncated_error(), StreamOutcome::Truncated, out);
        }
        self.summary()
    }

    fn is_terminal(&self) -> bool {
        self.is_terminal_phase()
    }

    fn summary(&self) -> StreamSummary {
        StreamSummary {
            outcome: self.outcome.clone(),
            usage: self.usage.to_openai(),
            usage_is_final: self.usage_is_final,
            streamed_bytes: self.streamed_bytes,
            finish_reason: self.finish_sent,
            upstream_model: self.upstream_model.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
