//! Ollama NDJSON stream → OpenAI chunks (wire-formats §4.3, §4.6 "Streaming").
//!
//! Each line is one JSON object. Content and thinking arrive as fragments; tool calls arrive whole, each
//! becomes one delta with a running index across the stream; the `done: true` line carries the finish
//! reason and the only usage counts. An `{"error": …}` line (HTTP status still 200) ends the stream.

use bytes::Bytes;

use super::response::{convert_logprobs, convert_tool_call, error_message, finish_reason, usage};
use super::wire;
use crate::framing::ndjson::NdjsonFramer;
use crate::openai::{chunk, ChatChunk, ErrorBody, FunctionCallDelta, ToolCallDelta};
use crate::stream::{ResponseContext, StreamEvent, StreamOutcome, StreamSummary, StreamTranslator};

/// Translates an Ollama `/api/chat` NDJSON stream into OpenAI stream events.
#[derive(Debug)]
pub struct StreamDecoder {
    ctx: ResponseContext,
    framer: NdjsonFramer,
    /// Scratch buffer of framed lines, reused across feeds.
    lines: Vec<Bytes>,
    /// Outcome, usage, streamed bytes, finish reason and model so far: the summary itself.
    tally: StreamSummary,
    /// `finish` already ran (a second call emits nothing).
    finished: bool,
    role_sent: bool,
    /// OpenAI index of the next tool call (0, 1, 2… across the whole stream).
    next_tool_index: u32,
}

impl StreamDecoder {
    /// A decoder for one response; `ctx` supplies `id`, `created`, `model` and the usage/reasoning options.
    pub fn new(ctx: ResponseContext) -> Self {
        Self {
            ctx,
            framer: NdjsonFramer::default(),
            lines: Vec::new(),
            tally: StreamSummary::open(),
            finished: false,
            role_sent: false,
            next_tool_index: 0,
        }
    }

    fn chunk(&self) -> ChatChunk {
        chunk(&self.ctx.id, self.ctx.created, &self.ctx.model, self.ctx.include_usage)
    }

    fn process_lines(&mut self, out: &mut Vec<StreamEvent>) {
        let mut lines = std::mem::take(&mut self.lines);
        for line in lines.drain(..) {
            if self.is_terminal() {
                break;
            }
            self.process_line(&line, out);
        }
        self.lines = lines;
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<StreamEvent>) {
        let resp: wire::ChatResponse = match serde_json::from_slice(line) {
            Ok(resp) => resp,
            Err(e) => {
                self.fail(
                    ErrorBody::new(
                        format!("ollama: invalid JSON in stream: {e}"),
                        "server_error",
                        Some("upstream_error"),
                    ),
                    out,
                );
                return;
            }
        };
        if let Some(error) = &resp.error {
            if !error.is_null() {
                self.fail(
                    ErrorBody::new(format!("ollama: {}", error_message(error)), "server_error", Some("upstream_error")),
                    out,
                );
                return;
            }
        }
        if self.tally.upstream_model.is_none() {
            self.tally.upstream_model = resp.model.clone();
        }
        if !self.role_sent {
            self.role_sent = true;
            let mut first = self.chunk();
            first.choices[0].delta.role = Some("assistant".to_owned());
            first.choices[0].delta.content = Some(String::new());
            out.push(StreamEvent::Chunk(first));
        }
        if let Some(message) = &resp.message {
            if let Some(thinking) = message.thinking.as_deref().filter(|t| !t.is_empty()) {
                self.tally.streamed_bytes += thinking.len() as u64;
                if self.ctx.include_reasoning {
                    let mut c = self.chunk();
                    c.choices[0].delta.reasoning_content = Some(thinking.to_owned());
                    out.push(StreamEvent::Chunk(c));
                }
            }
            if let Some(content) = message.content.as_deref().filter(|t| !t.is_empty()) {
                self.tally.streamed_bytes += content.len() as u64;
                let mut c = self.chunk();
                c.choices[0].delta.content = Some(content.to_owned());
                c.choices[0].logprobs = resp.logprobs.as_deref().map(convert_logprobs);
                out.push(StreamEvent::Chunk(c));
            }
            for call in message.tool_calls.iter().flatten() {
                let index = self.next_tool_index;
                self.next_tool_index += 1;
                let call = convert_tool_call(call, self.ctx.id_seed, index);
                self.tally.streamed_bytes += call.function.arguments.len() as u64;
                let mut c = self.chunk();
                c.choices[0].delta.tool_calls = Some(vec![ToolCallDelta {
                    index,
                    id: Some(call.id),
                    kind: Some(call.kind),
                    function: Some(FunctionCallDelta {
                        name: Some(call.function.name),
                        arguments: Some(call.function.arguments),
                    }),
                }]);
                out.push(StreamEvent::Chunk(c));
            }
        }
        if resp.done {
            let reason = finish_reason(resp.done_reason.as_deref(), self.next_tool_index > 0);
            self.tally.finish_reason = Some(reason);
            self.tally.usage = usage(&resp);
            self.tally.usage_is_final = true;
            let mut c = self.chunk();
            c.choices[0].finish_reason = Some(reason);
            out.push(StreamEvent::Chunk(c));
            if self.ctx.include_usage {
                let mut c = self.chunk();
                c.choices.clear();
                c.usage = Some(Some(self.tally.usage));
                out.push(StreamEvent::Chunk(c));
            }
            self.tally.outcome = StreamOutcome::Completed;
        }
    }

    fn fail(&mut self, body: ErrorBody, out: &mut Vec<StreamEvent>) {
        out.push(StreamEvent::Error(body.clone()));
        self.tally.outcome = StreamOutcome::UpstreamError(body);
    }
}

impl StreamTranslator for StreamDecoder {
    fn feed(&mut self, input: &[u8], out: &mut Vec<StreamEvent>) {
        if self.is_terminal() || self.finished {
            return;
        }
        if let Err(e) = self.framer.feed(input, &mut self.lines) {
            self.process_lines(out);
            if !self.is_terminal() {
                self.fail(ErrorBody::new(format!("ollama: {e}"), "server_error", Some("upstream_error")), out);
            }
            return;
        }
        self.process_lines(out);
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> StreamSummary {
        if !self.finished {
            self.finished = true;
            if !self.is_terminal() {
                // The last line may lack its `\n` (and may be the `done` line).
                self.framer.finish(&mut self.lines);
                self.process_lines(out);
            }
            self.tally.truncate_if_open(out);
        }
        self.summary()
    }

    fn is_terminal(&self) -> bool {
        self.tally.is_terminal()
    }

    fn summary(&self) -> StreamSummary {
        self.tally.clone()
    }
}

#[cfg(test)]
mod tests;
