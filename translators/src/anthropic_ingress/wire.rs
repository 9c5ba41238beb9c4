//! Anthropic Messages wire types the ingress *writes* (responses, stream events, errors, model pages).
//!
//! The egress direction's [`crate::anthropic::wire`] types are deserialize-only and tolerant; these are
//! serialize-only and exact: every key the official SDKs read is always present (`stop_sequence: null`,
//! all four usage counts), because Claude Code has rejected streams whose `usage` lacked keys
//! (LiteLLM#24176).

use serde::Serialize;
use serde_json::Value;

/// A non-streamed `type: "message"` response, also the `message` of `message_start` (then with empty
/// `content` and null `stop_reason`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: String,
    pub content: Vec<ContentBlock>,
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

/// A response content block.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        /// Always a JSON object.
        input: Value,
    },
    Thinking {
        thinking: String,
        signature: String,
    },
}

/// `usage`: Anthropic semantics, `input_tokens` excludes both cache counts.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
}

/// One streamed event; the SSE `event:` line carries the same name as `type`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent<'a> {
    MessageStart { message: &'a Message },
    ContentBlockStart { index: u32, content_block: BlockStart<'a> },
    ContentBlockDelta { index: u32, delta: BlockDelta<'a> },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: MessageDeltaBody, usage: Usage },
    MessageStop,
    Ping,
    Error { error: ErrorObject<'a> },
}

impl StreamEvent<'_> {
    /// The SSE event name (= the JSON `type`).
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
        }
    }
}

/// `content_block_start.content_block`: empty shells, filled by the deltas.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockStart<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        /// Always `{}`: the input streams as `input_json_delta`.
        input: EmptyObject,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
}

/// Serializes as `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        s.serialize_map(Some(0))?.end()
    }
}

/// `content_block_delta.delta`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
    ThinkingDelta { thinking: &'a str },
    SignatureDelta { signature: &'a str },
}

/// `message_delta.delta`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MessageDeltaBody {
    pub stop_reason: &'static str,
    pub stop_sequence: Option<String>,
}

/// The `error` member of an error body or `error` event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorObject<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub message: &'a str,
}

/// `{"type":"error","error":{…},"request_id":…}`, the body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorResponse<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub error: ErrorObject<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelInfo {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub display_name: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A page of `GET /v1/models`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelList {
    pub data: Vec<ModelInfo>,
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}
