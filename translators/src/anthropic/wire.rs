//! Anthropic Messages API wire types, named as in Anthropic's spec.
//!
//! Request types are built by [`super::request`] and only serialized. Response and stream types are only
//! deserialized and tolerate what they do not know: unknown fields are ignored and unknown block, delta
//! and event types land in an `Unknown` variant that the translators skip.

use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------------

/// `POST /v1/messages` body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u64,
    pub messages: Vec<MessageParam>,
    /// All system/developer messages joined with `"\n"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Thinking>,
    pub stream: bool,
}

/// `user` or `assistant`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One turn of `messages`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MessageParam {
    pub role: Role,
    pub content: Vec<ContentBlock>,
}

/// A request content block.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        /// Always a JSON object.
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
    },
}

impl ContentBlock {
    /// True for `tool_result` blocks (they must lead their user turn).
    pub fn is_tool_result(&self) -> bool {
        matches!(self, ContentBlock::ToolResult { .. })
    }
}

/// `tool_result.content`: a string, or text/image blocks.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

/// `image.source`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

/// A client tool definition.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolDef {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// An object schema (`"type": "object"`).
    pub input_schema: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    #[serde(rename = "none")]
    NoTool,
}

impl ToolChoice {
    /// True for `any` and `tool`, which are incompatible with extended thinking.
    pub fn forces_tool_use(&self) -> bool {
        matches!(self, ToolChoice::Any { .. } | ToolChoice::Tool { .. })
    }
}

/// `metadata`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metadata {
    pub user_id: String,
}

/// `thinking`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Thinking {
    Enabled { budget_tokens: u64 },
}

// ---------------------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------------------

/// A `type: "message"` response (also the `message` of `message_start`).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct Message {
    /// `"message"`; `"error"` for an error object (`{"type":"error","error":{…}}`), which the other
    /// fields' defaults would otherwise read as an empty message.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub content: Vec<ResponseBlock>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_details: Option<StopDetails>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// `stop_details` (present with `stop_reason: "refusal"`).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct StopDetails {
    #[serde(default)]
    pub explanation: Option<String>,
}

/// A response content block (also `content_block_start.content_block`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    /// `redacted_thinking`, `server_tool_use`, `web_search_tool_result`, `compaction`, `fallback`, future types.
    #[serde(other)]
    Unknown,
}

/// `usage` of a message, or the cumulative `usage` of `message_delta`. Every field may be absent or null.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens_details: Option<OutputTokensDetails>,
}

/// `usage.output_tokens_details`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub struct OutputTokensDetails {
    #[serde(default)]
    pub thinking_tokens: Option<u64>,
}

// ---------------------------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------------------------

/// One streamed event, dispatched on its JSON `type`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: Message,
    },
    ContentBlockStart {
        index: u64,
        content_block: ResponseBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<Usage>,
    },
    MessageStop,
    Ping,
    /// `{"type":"error","error":{…}}`; the body is re-read by `map_stream_error`.
    Error,
    #[serde(other)]
    Unknown,
}

/// `content_block_delta.delta`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta {
        #[serde(default)]
        text: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    ThinkingDelta {
        #[serde(default)]
        thinking: String,
    },
    /// `signature_delta`, `citations_delta`, `compaction_delta`, future types.
    #[serde(other)]
    Unknown,
}

/// `message_delta.delta`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct MessageDeltaBody {
    #[serde(default)]
    pub stop_reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------------
// Errors and models
// ---------------------------------------------------------------------------------------------------

/// `{"type":"error","error":{"type","message"},"request_id"}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct ErrorResponse {
    #[serde(default)]
    pub error: Option<ErrorObject>,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// The `error` member of an error body or `error` event.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct ErrorObject {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// One page of `GET /v1/models`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct ModelList {
    #[serde(default)]
    pub data: Vec<ModelEntry>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub last_id: Option<String>,
}

/// One `ModelInfo` of the listing.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct ModelEntry {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
}
