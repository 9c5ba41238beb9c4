//! Responses API output types, named as in OpenAI's spec (`Response`, `OutputItem`, `ResponseUsage`,
//! `ResponseStreamEvent` members).
//!
//! Only the shapes the gateway produces are modelled. Every key the spec marks `required` is always
//! serialized (as `null` where the schema allows it); optional keys are serialized when known, because the
//! official SDKs read several of them (`status`, `completed_at`, `usage`) without a presence check.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `object` of a response.
pub const OBJECT_RESPONSE: &str = "response";

/// `Response.status`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Completed,
    Failed,
    InProgress,
    Cancelled,
    Queued,
    Incomplete,
}

/// `status` of an output item.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    InProgress,
    Completed,
    Incomplete,
}

/// The response object (`Response` = `ModelResponseProperties` ∪ `ResponseProperties` ∪ own fields).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub id: String,
    pub object: String,
    pub created_at: u64,
    pub status: Status,
    /// Set only when `status` is `completed`.
    pub completed_at: Option<u64>,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    /// The request's `instructions` (string) or `null`.
    pub instructions: Value,
    pub max_output_tokens: Option<u64>,
    pub max_tool_calls: Option<u64>,
    /// The model the client asked for.
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    /// Always `null`: the translated path is stateless.
    pub previous_response_id: Option<String>,
    /// `{effort, summary}` as requested (nulls when absent).
    pub reasoning: Value,
    pub store: bool,
    pub temperature: Option<f64>,
    /// `{format: {...}}` as requested, `{format: {type: "text"}}` by default.
    pub text: Value,
    pub tool_choice: Value,
    pub tools: Vec<Value>,
    pub top_logprobs: Option<u64>,
    pub top_p: Option<f64>,
    pub truncation: String,
    /// Absent until the terminal event (the spec's `usage` is not nullable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResponseUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub metadata: Map<String, Value>,
    pub background: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
}

/// `ResponseError`: set when `status` is `failed`. `code` is one of the spec's `ResponseErrorCode`s.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResponseError {
    pub code: String,
    pub message: String,
}

/// `incomplete_details`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: String,
}

/// `ResponseUsage`. `input_tokens` includes cached and cache-write tokens, as OpenAI counts them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ResponseUsage {
    pub input_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u64,
}

/// `ResponseUsage.input_tokens_details` (both keys required by the spec).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct InputTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
}

/// `ResponseUsage.output_tokens_details`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct OutputTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// One `OutputItem`, discriminated by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// `OutputMessage`.
    Message(OutputMessage),
    /// `FunctionToolCall`.
    FunctionCall(FunctionToolCall),
    /// `CustomToolCall` (a call of a `custom` tool; its `input` is free text).
    CustomToolCall(CustomToolCall),
    /// `ReasoningItem`.
    Reasoning(ReasoningItem),
}

/// `OutputMessage`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputMessage {
    pub id: String,
    pub status: ItemStatus,
    /// Always `assistant`.
    pub role: String,
    pub content: Vec<ContentPart>,
}

/// A content part (`OutputContent`: `output_text`, `refusal`, `reasoning_text`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    OutputText {
        text: String,
        /// Always empty: translated backends produce no citations.
        annotations: Vec<Value>,
        /// Always empty (logprobs are not translated).
        logprobs: Vec<Value>,
    },
    Refusal {
        refusal: String,
    },
    ReasoningText {
        text: String,
    },
}

impl ContentPart {
    /// An `output_text` part.
    pub fn output_text(text: String) -> Self {
        ContentPart::OutputText { text, annotations: Vec::new(), logprobs: Vec::new() }
    }
}

/// `FunctionToolCall`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionToolCall {
    /// `fc_…`.
    pub id: String,
    /// The id the client answers with in `function_call_output.call_id` (the hub's tool-call id).
    pub call_id: String,
    /// The tool's `namespace` when it was declared inside a `namespace` tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// JSON-encoded arguments, as the model produced them.
    pub arguments: String,
    pub status: ItemStatus,
}

/// `CustomToolCall`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CustomToolCall {
    /// `ctc_…`.
    pub id: String,
    pub call_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub input: String,
    /// Not in the spec's `CustomToolCall` properties, but OpenAI sends it and the SDKs read it.
    pub status: ItemStatus,
}

/// `ReasoningItem`. Translated backends' reasoning text goes in `summary` (when the request asked for a
/// summary) or in `content` as `reasoning_text`; there is never `encrypted_content`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReasoningItem {
    /// `rs_…`.
    pub id: String,
    pub summary: Vec<SummaryText>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ContentPart>,
    pub status: ItemStatus,
}

/// `SummaryTextContent`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SummaryText {
    /// Always `summary_text`.
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

impl SummaryText {
    /// A `summary_text` part.
    pub fn new(text: String) -> Self {
        Self { kind: "summary_text".to_owned(), text }
    }
}

/// The members of `ResponseStreamEvent` the encoder emits. `sequence_number` is in every variant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum Event {
    #[serde(rename = "response.created")]
    Created { response: Box<Response>, sequence_number: u64 },
    #[serde(rename = "response.in_progress")]
    InProgress { response: Box<Response>, sequence_number: u64 },
    #[serde(rename = "response.completed")]
    Completed { response: Box<Response>, sequence_number: u64 },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: Box<Response>, sequence_number: u64 },
    #[serde(rename = "response.failed")]
    Failed { response: Box<Response>, sequence_number: u64 },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded { output_index: usize, item: OutputItem, sequence_number: u64 },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone { output_index: usize, item: OutputItem, sequence_number: u64 },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: ContentPart,
        sequence_number: u64,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: ContentPart,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        logprobs: Vec<Value>,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        logprobs: Vec<Value>,
        sequence_number: u64,
    },
    #[serde(rename = "response.refusal.delta")]
    RefusalDelta { item_id: String, output_index: usize, content_index: usize, delta: String, sequence_number: u64 },
    #[serde(rename = "response.refusal.done")]
    RefusalDone { item_id: String, output_index: usize, content_index: usize, refusal: String, sequence_number: u64 },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta { item_id: String, output_index: usize, delta: String, sequence_number: u64 },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        item_id: String,
        output_index: usize,
        name: String,
        arguments: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.custom_tool_call_input.delta")]
    CustomToolCallInputDelta { item_id: String, output_index: usize, delta: String, sequence_number: u64 },
    #[serde(rename = "response.custom_tool_call_input.done")]
    CustomToolCallInputDone { item_id: String, output_index: usize, input: String, sequence_number: u64 },
    #[serde(rename = "response.reasoning_summary_part.added")]
    ReasoningSummaryPartAdded {
        item_id: String,
        output_index: usize,
        summary_index: usize,
        part: SummaryText,
        sequence_number: u64,
    },
    #[serde(rename = "response.reasoning_summary_part.done")]
    ReasoningSummaryPartDone {
        item_id: String,
        output_index: usize,
        summary_index: usize,
        part: SummaryText,
        sequence_number: u64,
    },
    #[serde(rename = "response.reasoning_summary_text.delta")]
    ReasoningSummaryTextDelta {
        item_id: String,
        output_index: usize,
        summary_index: usize,
        delta: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.reasoning_summary_text.done")]
    ReasoningSummaryTextDone {
        item_id: String,
        output_index: usize,
        summary_index: usize,
        text: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.reasoning_text.delta")]
    ReasoningTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.reasoning_text.done")]
    ReasoningTextDone { item_id: String, output_index: usize, content_index: usize, text: String, sequence_number: u64 },
}

impl Event {
    /// The `type` string, also written as the SSE `event:` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Created { .. } => "response.created",
            Event::InProgress { .. } => "response.in_progress",
            Event::Completed { .. } => "response.completed",
            Event::Incomplete { .. } => "response.incomplete",
            Event::Failed { .. } => "response.failed",
            Event::OutputItemAdded { .. } => "response.output_item.added",
            Event::OutputItemDone { .. } => "response.output_item.done",
            Event::ContentPartAdded { .. } => "response.content_part.added",
            Event::ContentPartDone { .. } => "response.content_part.done",
            Event::OutputTextDelta { .. } => "response.output_text.delta",
            Event::OutputTextDone { .. } => "response.output_text.done",
            Event::RefusalDelta { .. } => "response.refusal.delta",
            Event::RefusalDone { .. } => "response.refusal.done",
            Event::FunctionCallArgumentsDelta { .. } => "response.function_call_arguments.delta",
            Event::FunctionCallArgumentsDone { .. } => "response.function_call_arguments.done",
            Event::CustomToolCallInputDelta { .. } => "response.custom_tool_call_input.delta",
            Event::CustomToolCallInputDone { .. } => "response.custom_tool_call_input.done",
            Event::ReasoningSummaryPartAdded { .. } => "response.reasoning_summary_part.added",
            Event::ReasoningSummaryPartDone { .. } => "response.reasoning_summary_part.done",
            Event::ReasoningSummaryTextDelta { .. } => "response.reasoning_summary_text.delta",
            Event::ReasoningSummaryTextDone { .. } => "response.reasoning_summary_text.done",
            Event::ReasoningTextDelta { .. } => "response.reasoning_text.delta",
            Event::ReasoningTextDone { .. } => "response.reasoning_text.done",
        }
    }
}
