//! Hub stream events → Responses stream events (`ResponseStreamEvent`), then SSE frames.
//!
//! State machine, per response:
//! - The first call emits `response.created` and `response.in_progress` (sequence 0 and 1).
//! - Reasoning and text are streamed into one open item at a time (a `reasoning` item, or a `message`
//!   whose parts are `output_text`/`refusal`); any other kind of delta closes it (`….done`,
//!   `content_part.done`, `output_item.done`) and opens the next. Text after a tool call opens a new
//!   `message` item.
//! - Each hub tool call (by its hub `index`) gets its own output item, opened at its first fragment. Tool
//!   items stay open until the hub stream ends, so fragments of parallel calls may arrive in any order;
//!   they are closed in output order before the terminal event. A `custom` tool's input is decoded from
//!   the hub's `{"input": "…"}` arguments as they arrive (escapes split across fragments wait for their
//!   rest); arguments of another shape are unwrapped at the end and sent in one delta.
//! - Terminal, exactly once: `response.completed`, or `response.incomplete` (`finish_reason` `length` →
//!   `max_output_tokens`, `content_filter`), or `response.failed` for a hub error event or a stream that
//!   ended without completing. Items still open are closed first (`incomplete` when the response is not
//!   completed), so none is left open. Nothing is emitted after the terminal event.
//! - Only choice 0 is read (the Responses API has no `n`). Empty text deltas open nothing.
//!
//! The concatenation of the deltas and the terminal `response` depend only on the hub content, not on how
//! it was cut into chunks.

use std::collections::BTreeMap;

use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::Value;

use super::request::Echo;
use super::response::{custom_input, reasoning_item, skeleton, status_for, tool_call_item};
use super::wire::{
    ContentPart, CustomToolCall, Event, FunctionToolCall, ItemStatus, OutputItem, OutputMessage, ReasoningItem,
    Response, ResponseError, Status, SummaryText,
};
use super::{prefixed_id, response_usage, EncodeContext};
use crate::openai::{ChatChunk, ErrorBody, FinishReason, Usage};
use crate::stream::{truncated_error, StreamEvent, StreamOutcome, StreamSummary};

/// An output slot: a finished item, or an item being streamed.
#[derive(Debug)]
enum Slot {
    Done(OutputItem),
    Message {
        id: String,
        parts: Vec<ContentPart>,
    },
    Reasoning {
        id: String,
        text: String,
    },
    Tool {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        /// `Some` for a call of a `custom` tool: its `input` is decoded from the arguments as they arrive.
        custom: Option<CustomInput>,
    },
}

/// What one hub delta says, whatever event shape it came in.
#[derive(Debug, Default)]
struct HubDelta {
    reasoning: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<HubToolCall>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
}

#[derive(Debug)]
struct HubToolCall {
    index: u32,
    id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
}

/// Encodes one Responses stream from hub stream events. See the module docs for the event order.
#[derive(Debug)]
pub struct StreamEncoder {
    echo: Echo,
    ctx: EncodeContext,
    next_sequence: u64,
    started: bool,
    done: bool,
    output: Vec<Slot>,
    /// Output index of the open message or reasoning item.
    open_text: Option<usize>,
    /// Hub tool-call index → output index.
    tools: BTreeMap<u32, usize>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    /// An encoder for one response. `echo` comes from [`decode_request`](super::decode_request); `ctx`
    /// supplies the response id, times and the id seed.
    pub fn new(echo: Echo, ctx: EncodeContext) -> Self {
        Self {
            echo,
            ctx,
            next_sequence: 0,
            started: false,
            done: false,
            output: Vec::new(),
            open_text: None,
            tools: BTreeMap::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// True once the terminal event was emitted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Emits `response.created` and `response.in_progress` if not done yet. Optional: the first
    /// [`push`](Self::push) or [`finish`](Self::finish) does it.
    pub fn start(&mut self, out: &mut Vec<Event>) {
        if self.started {
            return;
        }
        self.started = true;
        let snapshot = Box::new(skeleton(&self.echo, &self.ctx, Status::InProgress));
        let sequence_number = self.seq();
        out.push(Event::Created { response: snapshot.clone(), sequence_number });
        let sequence_number = self.seq();
        out.push(Event::InProgress { response: snapshot, sequence_number });
    }

    /// Consumes hub events (from any provider stream translator), appending Responses events to `out`.
    /// A [`StreamEvent::Error`] (or a raw chunk carrying `error`) ends the response with `response.failed`.
    pub fn push(&mut self, events: &[StreamEvent], out: &mut Vec<Event>) {
        for event in events {
            if self.done {
                return;
            }
            self.start(out);
            match event {
                StreamEvent::Chunk(chunk) => {
                    let delta = from_chunk(chunk);
                    self.apply(delta, out);
                }
                StreamEvent::Raw(bytes) => match from_raw(bytes) {
                    Ok(Some(delta)) => self.apply(delta, out),
                    Ok(None) => {}
                    Err(error) => self.fail(&error, out),
                },
                StreamEvent::Error(error) => self.fail(error, out),
            }
        }
    }

    /// The hub stream ended. Emits the terminal event unless one was already emitted.
    ///
    /// `summary` is the provider translator's final summary: its usage is used when the hub events carried
    /// none, and an outcome other than `Completed` (a truncated or failed upstream whose error event was
    /// not pushed) ends the response with `response.failed`. `None` means the hub stream completed.
    pub fn finish(&mut self, summary: Option<&StreamSummary>, out: &mut Vec<Event>) {
        if self.done {
            return;
        }
        self.start(out);
        if let Some(summary) = summary {
            match &summary.outcome {
                StreamOutcome::Completed => {}
                StreamOutcome::UpstreamError(error) => return self.fail(error, out),
                StreamOutcome::Open | StreamOutcome::Truncated => return self.fail(&truncated_error(), out),
            }
            if self.usage.is_none() && (summary.usage_is_final || summary.usage != Usage::default()) {
                self.usage = Some(summary.usage);
            }
            if self.finish_reason.is_none() {
                self.finish_reason = summary.finish_reason;
            }
        }
        let (status, incomplete) = status_for(self.finish_reason);
        let item_status = if status == Status::Completed { ItemStatus::Completed } else { ItemStatus::Incomplete };
        self.close_all(item_status, out);
        let has_answer = self.output.iter().any(|slot| {
            matches!(
                slot,
                Slot::Done(OutputItem::Message(_) | OutputItem::FunctionCall(_) | OutputItem::CustomToolCall(_))
            )
        });
        if !has_answer {
            // Same rule as the non-streamed encoder: an empty answer is one empty message, not no output.
            self.open_message(out);
            self.append_text(String::new(), out);
            self.close_text(item_status, out);
        }
        let mut response = self.snapshot(status);
        response.incomplete_details = incomplete;
        response.usage = Some(self.usage.as_ref().map(response_usage).unwrap_or_default());
        let sequence_number = self.seq();
        let response = Box::new(response);
        out.push(if status == Status::Completed {
            Event::Completed { response, sequence_number }
        } else {
            Event::Incomplete { response, sequence_number }
        });
        self.done = true;
    }

    fn seq(&mut self) -> u64 {
        let n = self.next_sequence;
        self.next_sequence += 1;
        n
    }

    fn snapshot(&self, status: Status) -> Response {
        let mut response = skeleton(&self.echo, &self.ctx, status);
        response.output = self
            .output
            .iter()
            .filter_map(|slot| match slot {
                Slot::Done(item) => Some(item.clone()),
                _ => None,
            })
            .collect();
        response
    }

    fn fail(&mut self, error: &ErrorBody, out: &mut Vec<Event>) {
        self.close_all(ItemStatus::Incomplete, out);
        let mut response = self.snapshot(Status::Failed);
        response.error = Some(ResponseError { code: error_code(error).to_owned(), message: error.message.clone() });
        response.usage = self.usage.as_ref().map(response_usage);
        let sequence_number = self.seq();
        out.push(Event::Failed { response: Box::new(response), sequence_number });
        self.done = true;
    }

    fn apply(&mut self, delta: HubDelta, out: &mut Vec<Event>) {
        if let Some(text) = delta.reasoning.filter(|t| !t.is_empty()) {
            if !matches!(self.open_text.and_then(|i| self.output.get(i)), Some(Slot::Reasoning { .. })) {
                self.close_text(ItemStatus::Completed, out);
                self.open_reasoning(out);
            }
            self.append_reasoning(text, out);
        }
        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
            self.ensure_message(out);
            self.append_text(text, out);
        }
        if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
            self.ensure_message(out);
            self.append_refusal(text, out);
        }
        for call in delta.tool_calls {
            self.tool_fragment(call, out);
        }
        if delta.finish_reason.is_some() {
            self.finish_reason = delta.finish_reason;
        }
        if delta.usage.is_some() {
            self.usage = delta.usage;
        }
    }

    fn ensure_message(&mut self, out: &mut Vec<Event>) {
        if !matches!(self.open_text.and_then(|i| self.output.get(i)), Some(Slot::Message { .. })) {
            self.close_text(ItemStatus::Completed, out);
            self.open_message(out);
        }
    }

    fn open_message(&mut self, out: &mut Vec<Event>) {
        let output_index = self.output.len();
        let id = prefixed_id("msg", self.ctx.id_seed, output_index as u32);
        let item = OutputItem::Message(OutputMessage {
            id: id.clone(),
            status: ItemStatus::InProgress,
            role: "assistant".to_owned(),
            content: Vec::new(),
        });
        let sequence_number = self.seq();
        out.push(Event::OutputItemAdded { output_index, item, sequence_number });
        self.output.push(Slot::Message { id, parts: Vec::new() });
        self.open_text = Some(output_index);
    }

    fn open_reasoning(&mut self, out: &mut Vec<Event>) {
        let output_index = self.output.len();
        let id = prefixed_id("rs", self.ctx.id_seed, output_index as u32);
        let item = OutputItem::Reasoning(ReasoningItem {
            id: id.clone(),
            summary: Vec::new(),
            content: Vec::new(),
            status: ItemStatus::InProgress,
        });
        let sequence_number = self.seq();
        out.push(Event::OutputItemAdded { output_index, item, sequence_number });
        let sequence_number = self.seq();
        out.push(if self.echo.reasoning_summary {
            Event::ReasoningSummaryPartAdded {
                item_id: id.clone(),
                output_index,
                summary_index: 0,
                part: SummaryText::new(String::new()),
                sequence_number,
            }
        } else {
            Event::ContentPartAdded {
                item_id: id.clone(),
                output_index,
                content_index: 0,
                part: ContentPart::ReasoningText { text: String::new() },
                sequence_number,
            }
        });
        self.output.push(Slot::Reasoning { id, text: String::new() });
        self.open_text = Some(output_index);
    }

    fn append_reasoning(&mut self, delta: String, out: &mut Vec<Event>) {
        let Some(output_index) = self.open_text else { return };
        let sequence_number = self.next_sequence;
        let summary = self.echo.reasoning_summary;
        let Some(Slot::Reasoning { id, text }) = self.output.get_mut(output_index) else { return };
        text.push_str(&delta);
        let item_id = id.clone();
        self.next_sequence += 1;
        out.push(if summary {
            Event::ReasoningSummaryTextDelta { item_id, output_index, summary_index: 0, delta, sequence_number }
        } else {
            Event::ReasoningTextDelta { item_id, output_index, content_index: 0, delta, sequence_number }
        });
    }

    /// Appends text to the open message, opening an `output_text` part if the last part is not one.
    fn append_text(&mut self, delta: String, out: &mut Vec<Event>) {
        let Some(output_index) = self.open_text else { return };
        let Some(Slot::Message { id, parts }) = self.output.get_mut(output_index) else { return };
        let item_id = id.clone();
        if !matches!(parts.last(), Some(ContentPart::OutputText { .. })) {
            let closing = parts.last().cloned();
            if let Some(part) = closing {
                let content_index = parts.len() - 1;
                self.part_done(&item_id, output_index, content_index, part, out);
            }
            let Some(Slot::Message { parts, .. }) = self.output.get_mut(output_index) else { return };
            parts.push(ContentPart::output_text(String::new()));
            let content_index = parts.len() - 1;
            let sequence_number = self.seq();
            out.push(Event::ContentPartAdded {
                item_id: item_id.clone(),
                output_index,
                content_index,
                part: ContentPart::output_text(String::new()),
                sequence_number,
            });
        }
        let Some(Slot::Message { parts, .. }) = self.output.get_mut(output_index) else { return };
        let content_index = parts.len() - 1;
        if let Some(ContentPart::OutputText { text, .. }) = parts.last_mut() {
            text.push_str(&delta);
        }
        if !delta.is_empty() {
            let sequence_number = self.seq();
            out.push(Event::OutputTextDelta {
                item_id,
                output_index,
                content_index,
                delta,
                logprobs: Vec::new(),
                sequence_number,
            });
        }
    }

    fn append_refusal(&mut self, delta: String, out: &mut Vec<Event>) {
        let Some(output_index) = self.open_text else { return };
        let Some(Slot::Message { id, parts }) = self.output.get_mut(output_index) else { return };
        let item_id = id.clone();
        if !matches!(parts.last(), Some(ContentPart::Refusal { .. })) {
            let closing = parts.last().cloned();
            if let Some(part) = closing {
                let content_index = parts.len() - 1;
                self.part_done(&item_id, output_index, content_index, part, out);
            }
            let Some(Slot::Message { parts, .. }) = self.output.get_mut(output_index) else { return };
            parts.push(ContentPart::Refusal { refusal: String::new() });
            let content_index = parts.len() - 1;
            let sequence_number = self.seq();
            out.push(Event::ContentPartAdded {
                item_id: item_id.clone(),
                output_index,
                content_index,
                part: ContentPart::Refusal { refusal: String::new() },
                sequence_number,
            });
        }
        let Some(Slot::Message { parts, .. }) = self.output.get_mut(output_index) else { return };
        let content_index = parts.len() - 1;
        if let Some(ContentPart::Refusal { refusal }) = parts.last_mut() {
            refusal.push_str(&delta);
        }
        let sequence_number = self.seq();
        out.push(Event::RefusalDelta { item_id, output_index, content_index, delta, sequence_number });
    }

    /// `output_text.done`/`refusal.done` then `content_part.done` for one finished part.
    fn part_done(
        &mut self,
        item_id: &str,
        output_index: usize,
        content_index: usize,
        part: ContentPart,
        out: &mut Vec<Event>,
    ) {
        let sequence_number = self.seq();
        match &part {
            ContentPart::OutputText { text, .. } => out.push(Event::OutputTextDone {
                item_id: item_id.to_owned(),
                output_index,
                content_index,
                text: text.clone(),
                logprobs: Vec::new(),
                sequence_number,
            }),
            ContentPart::Refusal { refusal } => out.push(Event::RefusalDone {
                item_id: item_id.to_owned(),
                output_index,
                content_index,
                refusal: refusal.clone(),
                sequence_number,
            }),
            ContentPart::ReasoningText { text } => out.push(Event::ReasoningTextDone {
                item_id: item_id.to_owned(),
                output_index,
                content_index,
                text: text.clone(),
                sequence_number,
            }),
        }
        let sequence_number = self.seq();
        out.push(Event::ContentPartDone {
            item_id: item_id.to_owned(),
            output_index,
            content_index,
            part,
            sequence_number,
        });
    }

    /// Closes the open message or reasoning item, if any.
    fn close_text(&mut self, status: ItemStatus, out: &mut Vec<Event>) {
        let Some(output_index) = self.open_text.take() else { return };
        let Some(slot) = self.output.get_mut(output_index) else { return };
        let slot = std::mem::replace(slot, Slot::Done(placeholder()));
        let item = match slot {
            Slot::Message { id, parts } => {
                if let Some(part) = parts.last().cloned() {
                    self.part_done(&id, output_index, parts.len() - 1, part, out);
                }
                OutputItem::Message(OutputMessage { id, status, role: "assistant".to_owned(), content: parts })
            }
            Slot::Reasoning { id, text } => {
                if self.echo.reasoning_summary {
                    let sequence_number = self.seq();
                    out.push(Event::ReasoningSummaryTextDone {
                        item_id: id.clone(),
                        output_index,
                        summary_index: 0,
                        text: text.clone(),
                        sequence_number,
                    });
                    let sequence_number = self.seq();
                    out.push(Event::ReasoningSummaryPartDone {
                        item_id: id.clone(),
                        output_index,
                        summary_index: 0,
                        part: SummaryText::new(text.clone()),
                        sequence_number,
                    });
                } else {
                    self.part_done(&id, output_index, 0, ContentPart::ReasoningText { text: text.clone() }, out);
                }
                match reasoning_item(&self.echo, &self.ctx, output_index, text, status) {
                    OutputItem::Reasoning(mut r) => {
                        r.id = id;
                        OutputItem::Reasoning(r)
                    }
                    other => other,
                }
            }
            other => {
                // Not a text slot (cannot happen: `open_text` only points at text slots); put it back.
                self.output[output_index] = other;
                return;
            }
        };
        let sequence_number = self.seq();
        out.push(Event::OutputItemDone { output_index, item: item.clone(), sequence_number });
        self.output[output_index] = Slot::Done(item);
    }

    fn tool_fragment(&mut self, call: HubToolCall, out: &mut Vec<Event>) {
        let output_index = match self.tools.get(&call.index) {
            Some(&i) => i,
            None => {
                self.close_text(ItemStatus::Completed, out);
                let output_index = self.output.len();
                let call_id = call
                    .id
                    .clone()
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| crate::ids::tool_call_id(self.ctx.id_seed, call.index));
                let name = call.name.clone().unwrap_or_default();
                let custom = self.echo.custom_tools.contains(&name);
                let (namespace, client_name) = self.echo.client_tool_name(&name);
                let (namespace, client_name) = (namespace.map(str::to_owned), client_name.to_owned());
                let (id, item) = if custom {
                    let id = prefixed_id("ctc", self.ctx.id_seed, output_index as u32);
                    let item = OutputItem::CustomToolCall(CustomToolCall {
                        id: id.clone(),
                        call_id: call_id.clone(),
                        namespace,
                        name: client_name,
                        input: String::new(),
                        status: ItemStatus::InProgress,
                    });
                    (id, item)
                } else {
                    let id = prefixed_id("fc", self.ctx.id_seed, output_index as u32);
                    let item = OutputItem::FunctionCall(FunctionToolCall {
                        id: id.clone(),
                        call_id: call_id.clone(),
                        namespace,
                        name: client_name,
                        arguments: String::new(),
                        status: ItemStatus::InProgress,
                    });
                    (id, item)
                };
                let sequence_number = self.seq();
                out.push(Event::OutputItemAdded { output_index, item, sequence_number });
                let custom = custom.then(CustomInput::default);
                self.output.push(Slot::Tool { id, call_id, name, arguments: String::new(), custom });
                self.tools.insert(call.index, output_index);
                // The name was consumed by the added item.
                return self.tool_arguments(output_index, None, call.arguments, out);
            }
        };
        self.tool_arguments(output_index, call.name, call.arguments, out);
    }

    fn tool_arguments(
        &mut self,
        output_index: usize,
        name_fragment: Option<String>,
        arguments: Option<String>,
        out: &mut Vec<Event>,
    ) {
        let sequence_number = self.next_sequence;
        let Some(Slot::Tool { id, name, arguments: args, custom, .. }) = self.output.get_mut(output_index) else {
            return;
        };
        if let Some(fragment) = name_fragment {
            name.push_str(&fragment);
        }
        let Some(delta) = arguments.filter(|a| !a.is_empty()) else { return };
        args.push_str(&delta);
        let item_id = id.clone();
        match custom {
            None => {
                self.next_sequence += 1;
                out.push(Event::FunctionCallArgumentsDelta { item_id, output_index, delta, sequence_number });
            }
            Some(input) => {
                let Some(delta) = input.advance(args).filter(|d| !d.is_empty()) else { return };
                self.next_sequence += 1;
                out.push(Event::CustomToolCallInputDelta { item_id, output_index, delta, sequence_number });
            }
        }
    }

    /// Closes the open text item, then every open tool item in output order.
    fn close_all(&mut self, status: ItemStatus, out: &mut Vec<Event>) {
        self.close_text(status, out);
        for output_index in 0..self.output.len() {
            if !matches!(self.output[output_index], Slot::Tool { .. }) {
                continue;
            }
            let slot = std::mem::replace(&mut self.output[output_index], Slot::Done(placeholder()));
            let Slot::Tool { id, call_id, name, arguments, custom } = slot else { continue };
            let item = if let Some(streamed) = custom {
                // Streamed incrementally: the decoded text is the input (so the deltas add up to it).
                // Otherwise (not the `{"input": "…"}` shape) the whole input goes in one delta now.
                let streaming = streamed.is_streaming();
                let input = if streaming { streamed.decoded } else { custom_input(&arguments) };
                if !streaming && !input.is_empty() {
                    let sequence_number = self.seq();
                    out.push(Event::CustomToolCallInputDelta {
                        item_id: id.clone(),
                        output_index,
                        delta: input.clone(),
                        sequence_number,
                    });
                }
                let sequence_number = self.seq();
                out.push(Event::CustomToolCallInputDone {
                    item_id: id.clone(),
                    output_index,
                    input: input.clone(),
                    sequence_number,
                });
                match tool_call_item(&self.echo, &self.ctx, output_index, call_id, name, arguments, status) {
                    OutputItem::CustomToolCall(mut c) => {
                        c.id = id;
                        c.input = input;
                        OutputItem::CustomToolCall(c)
                    }
                    other => other,
                }
            } else {
                let sequence_number = self.seq();
                out.push(Event::FunctionCallArgumentsDone {
                    item_id: id.clone(),
                    output_index,
                    name: self.echo.client_tool_name(&name).1.to_owned(),
                    arguments: arguments.clone(),
                    sequence_number,
                });
                let item = tool_call_item(&self.echo, &self.ctx, output_index, call_id, name, arguments, status);
                match item {
                    OutputItem::FunctionCall(mut f) => {
                        f.id = id;
                        OutputItem::FunctionCall(f)
                    }
                    other => other,
                }
            };
            let sequence_number = self.seq();
            out.push(Event::OutputItemDone { output_index, item: item.clone(), sequence_number });
            self.output[output_index] = Slot::Done(item);
        }
    }
}

/// Incremental decoder of the `input` string of a custom tool's hub arguments, which the model writes as
/// `{"input": "<JSON string>"}` a fragment at a time. Only that canonical shape is streamed; anything
/// else is left to [`custom_input`] at the end. Escapes split across fragments wait for their rest.
#[derive(Debug, Default)]
struct CustomInput {
    /// Byte offset in the arguments where the string value starts (after its opening quote).
    start: Option<usize>,
    /// Byte offset up to which the value has been decoded.
    pos: usize,
    decoded: String,
    /// The closing quote was seen.
    closed: bool,
    /// The arguments do not have the canonical shape.
    gave_up: bool,
}

impl CustomInput {
    /// True when the input is being streamed (the canonical prefix was seen).
    fn is_streaming(&self) -> bool {
        self.start.is_some() && !self.gave_up
    }

    /// Decodes as much of the value as `args` (all arguments so far) allows; returns the new text.
    fn advance(&mut self, args: &str) -> Option<String> {
        if self.gave_up || self.closed {
            return None;
        }
        let bytes = args.as_bytes();
        if self.start.is_none() {
            match value_start(bytes) {
                Prefix::Incomplete => return None,
                Prefix::Mismatch => {
                    self.gave_up = true;
                    return None;
                }
                Prefix::Found(at) => {
                    self.start = Some(at);
                    self.pos = at;
                }
            }
        }
        let before = self.decoded.len();
        while self.pos < bytes.len() {
            match bytes[self.pos] {
                b'"' => {
                    self.closed = true;
                    break;
                }
                b'\\' => {
                    let Some((c, len)) = unescape(&bytes[self.pos..]) else { break };
                    self.decoded.push(c);
                    self.pos += len;
                }
                _ => {
                    let Some(c) = args.get(self.pos..).and_then(|rest| rest.chars().next()) else { break };
                    self.decoded.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
        Some(self.decoded[before..].to_owned())
    }
}

enum Prefix {
    Incomplete,
    Mismatch,
    Found(usize),
}

/// Matches `ws* { ws* "input" ws* : ws* "` at the start of the arguments.
fn value_start(bytes: &[u8]) -> Prefix {
    let expected: &[&[u8]] = &[b"{", b"\"input\"", b":", b"\""];
    let mut pos = 0;
    for token in expected {
        while bytes.get(pos).is_some_and(u8::is_ascii_whitespace) {
            pos += 1;
        }
        let rest = &bytes[pos.min(bytes.len())..];
        if rest.len() < token.len() {
            return if token.starts_with(rest) { Prefix::Incomplete } else { Prefix::Mismatch };
        }
        if !rest.starts_with(token) {
            return Prefix::Mismatch;
        }
        pos += token.len();
    }
    Prefix::Found(pos)
}

/// One JSON escape at the start of `bytes` (which begins with a backslash): the character and the bytes
/// it used, or `None` when the escape is not complete yet. Invalid `\\u` escapes decode as U+FFFD.
fn unescape(bytes: &[u8]) -> Option<(char, usize)> {
    let simple = match *bytes.get(1)? {
        b'n' => '\n',
        b't' => '\t',
        b'r' => '\r',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'u' => {
            let Some(high) = hex4(bytes.get(2..6)?) else { return Some((char::REPLACEMENT_CHARACTER, 2)) };
            if (0xD800..0xDC00).contains(&high) {
                // A surrogate pair: wait for the low half.
                let tail = bytes.get(6..12)?;
                if tail.starts_with(b"\\u") {
                    let low = hex4(&tail[2..]).unwrap_or(0);
                    if !(0xDC00..0xE000).contains(&low) {
                        return Some((char::REPLACEMENT_CHARACTER, 6));
                    }
                    let c = char::from_u32(0x10000 + ((high - 0xD800) << 10) + low.wrapping_sub(0xDC00))
                        .unwrap_or(char::REPLACEMENT_CHARACTER);
                    return Some((c, 12));
                }
                return Some((char::REPLACEMENT_CHARACTER, 6));
            }
            return Some((char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER), 6));
        }
        other => char::from(other),
    };
    Some((simple, 2))
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    // `from_str_radix` would accept a leading `+`.
    if !bytes.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    std::str::from_utf8(bytes).ok().and_then(|s| u32::from_str_radix(s, 16).ok())
}

/// A value for the moment a slot is moved out and before it is replaced.
fn placeholder() -> OutputItem {
    OutputItem::Message(OutputMessage {
        id: String::new(),
        status: ItemStatus::Incomplete,
        role: String::new(),
        content: Vec::new(),
    })
}

/// `ResponseErrorCode` for a hub error: rate limits keep their meaning, everything else is `server_error`.
fn error_code(error: &ErrorBody) -> &'static str {
    let is_rate_limit = error.kind == "rate_limit_error"
        || matches!(error.code.as_deref(), Some("rate_limit_exceeded" | "rate_limit_error"));
    if is_rate_limit {
        "rate_limit_exceeded"
    } else {
        "server_error"
    }
}

fn from_chunk(chunk: &ChatChunk) -> HubDelta {
    let mut delta = HubDelta { usage: chunk.usage.flatten(), ..HubDelta::default() };
    if let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) {
        delta.reasoning.clone_from(&choice.delta.reasoning_content);
        delta.content.clone_from(&choice.delta.content);
        delta.refusal.clone_from(&choice.delta.refusal);
        delta.finish_reason = choice.finish_reason;
        for call in choice.delta.tool_calls.iter().flatten() {
            delta.tool_calls.push(HubToolCall {
                index: call.index,
                id: call.id.clone(),
                name: call.function.as_ref().and_then(|f| f.name.clone()),
                arguments: call.function.as_ref().and_then(|f| f.arguments.clone()),
            });
        }
    }
    delta
}

/// A raw OpenAI-kind chunk, read leniently (vLLM/Groq spellings of reasoning included).
#[derive(Deserialize)]
struct RawChunk {
    #[serde(default)]
    choices: Vec<RawChoice>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct RawChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<RawDelta>,
    #[serde(default)]
    finish_reason: Option<Value>,
}

#[derive(Deserialize)]
struct RawDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<RawToolCall>>,
}

#[derive(Deserialize)]
struct RawToolCall {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<RawFunction>,
}

#[derive(Deserialize)]
struct RawFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// `Ok(None)`: not a chunk (skipped). `Err`: the chunk reports an upstream error.
fn from_raw(bytes: &[u8]) -> Result<Option<HubDelta>, ErrorBody> {
    let Ok(chunk) = serde_json::from_slice::<RawChunk>(bytes) else { return Ok(None) };
    if let Some(error) = chunk.error.filter(|e| !matches!(e, Value::Null | Value::Bool(false))) {
        let message = match error.get("message") {
            Some(Value::String(m)) => m.clone(),
            _ => match &error {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        };
        let kind = error.get("type").and_then(Value::as_str).unwrap_or("server_error");
        let mut body = ErrorBody::new(message, kind, None);
        body.code = error.get("code").and_then(Value::as_str).map(str::to_owned);
        return Err(body);
    }
    let mut delta = HubDelta { usage: crate::openai::passthrough::extract_usage(bytes), ..HubDelta::default() };
    if let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) {
        delta.finish_reason = choice.finish_reason.and_then(|r| serde_json::from_value(r).ok());
        if let Some(d) = choice.delta {
            delta.reasoning = d.reasoning_content.or(d.reasoning);
            delta.content = d.content;
            delta.refusal = d.refusal;
            for call in d.tool_calls.into_iter().flatten() {
                let (name, arguments) = match call.function {
                    Some(f) => (f.name, f.arguments),
                    None => (None, None),
                };
                delta.tool_calls.push(HubToolCall { index: call.index, id: call.id, name, arguments });
            }
        }
    }
    Ok(Some(delta))
}

/// Appends events as SSE frames: `event: <type>\ndata: <compact json>\n\n` (no `[DONE]`: Responses
/// streams end with their terminal event).
pub fn write_sse(events: &[Event], out: &mut BytesMut) {
    for event in events {
        out.put_slice(b"event: ");
        out.put_slice(event.kind().as_bytes());
        out.put_slice(b"\ndata: ");
        // Serializing our own plain types into memory cannot fail; the frame stays well-formed regardless.
        let result = serde_json::to_writer((&mut *out).writer(), event);
        debug_assert!(result.is_ok());
        out.put_slice(b"\n\n");
    }
}

#[cfg(test)]
pub(crate) mod tests;
