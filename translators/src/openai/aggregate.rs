//! Folds a stream of OpenAI chunks back into one `chat.completion`.
//!
//! Used when the client asked for a non-streamed answer but the gateway streams from the upstream (long
//! Anthropic generations, which its API refuses to run without streaming past ~10 minutes).

use std::collections::BTreeMap;

use super::{ChatChunk, ChatResponse, Choice, ErrorBody, FinishReason, FunctionCall, ResponseMessage, ToolCall, Usage};
use crate::stream::StreamEvent;

#[derive(Debug, Default)]
struct ChoiceState {
    content: String,
    has_content: bool,
    reasoning: String,
    refusal: Option<String>,
    tool_calls: BTreeMap<u32, ToolCall>,
    finish_reason: Option<FinishReason>,
}

/// Accumulates chunks; `finish` builds the response.
#[derive(Debug, Default)]
pub struct Aggregator {
    id: String,
    created: u64,
    model: String,
    choices: BTreeMap<u32, ChoiceState>,
    usage: Option<Usage>,
    error: Option<ErrorBody>,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds in stream events; a `Raw` payload is parsed as a chunk, an `Error` is kept and wins.
    pub fn push(&mut self, events: &[StreamEvent]) {
        for event in events {
            match event {
                StreamEvent::Chunk(chunk) => self.push_chunk(chunk),
                StreamEvent::Raw(bytes) => {
                    if let Ok(chunk) = serde_json::from_slice::<ChatChunk>(bytes) {
                        self.push_chunk(&chunk);
                    }
                }
                StreamEvent::Error(body) => {
                    if self.error.is_none() {
                        self.error = Some(body.clone());
                    }
                }
            }
        }
    }

    fn push_chunk(&mut self, chunk: &ChatChunk) {
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.created = chunk.created;
            self.model.clone_from(&chunk.model);
        }
        if let Some(Some(usage)) = chunk.usage {
            self.usage = Some(usage);
        }
        for c in &chunk.choices {
            let state = self.choices.entry(c.index).or_default();
            if let Some(text) = &c.delta.content {
                state.content.push_str(text);
                state.has_content = true;
            }
            if let Some(r) = &c.delta.reasoning_content {
                state.reasoning.push_str(r);
            }
            if let Some(r) = &c.delta.refusal {
                state.refusal.get_or_insert_with(String::new).push_str(r);
            }
            for tc in c.delta.tool_calls.iter().flatten() {
                let call = state.tool_calls.entry(tc.index).or_insert_with(|| ToolCall {
                    id: String::new(),
                    kind: "function".to_owned(),
                    function: FunctionCall { name: String::new(), arguments: String::new() },
                });
                if let Some(id) = &tc.id {
                    call.id.clone_from(id);
                }
                if let Some(f) = &tc.function {
                    if let Some(name) = &f.name {
                        call.function.name.push_str(name);
                    }
                    if let Some(args) = &f.arguments {
                        call.function.arguments.push_str(args);
                    }
                }
            }
            if c.finish_reason.is_some() {
                state.finish_reason = c.finish_reason;
            }
        }
    }

    /// The completed response, or the stream's error.
    pub fn finish(self) -> Result<ChatResponse, ErrorBody> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let mut choices: Vec<Choice> = self
            .choices
            .into_iter()
            .map(|(index, s)| {
                let tool_calls: Vec<ToolCall> = s.tool_calls.into_values().collect();
                // Text when some arrived; `null` for a tool-calls-only answer; `""` for an empty one.
                let content = if s.has_content && (!s.content.is_empty() || tool_calls.is_empty()) {
                    Some(s.content)
                } else if tool_calls.is_empty() {
                    Some(String::new())
                } else {
                    None
                };
                Choice {
                    index,
                    message: ResponseMessage {
                        role: "assistant".to_owned(),
                        content,
                        refusal: s.refusal,
                        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                        reasoning_content: (!s.reasoning.is_empty()).then_some(s.reasoning),
                    },
                    logprobs: None,
                    finish_reason: Some(s.finish_reason.unwrap_or(FinishReason::Stop)),
                }
            })
            .collect();
        if choices.is_empty() {
            choices.push(Choice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".to_owned(),
                    content: Some(String::new()),
                    refusal: None,
                    tool_calls: None,
                    reasoning_content: None,
                },
                logprobs: None,
                finish_reason: Some(FinishReason::Stop),
            });
        }
        Ok(ChatResponse {
            id: self.id,
            object: super::OBJECT_COMPLETION.to_owned(),
            created: self.created,
            model: self.model,
            choices,
            usage: self.usage,
            system_fingerprint: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{chunk, Delta, FunctionCallDelta, ToolCallDelta};

    #[test]
    fn folds_text_tool_calls_finish_and_usage() {
        let mut a = Aggregator::new();
        let mut c1 = chunk("chatcmpl-1", 7, "m", true);
        c1.choices[0].delta = Delta { role: Some("assistant".into()), content: Some("Hel".into()), ..Delta::default() };
        let mut c2 = chunk("chatcmpl-1", 7, "m", true);
        c2.choices[0].delta.content = Some("lo".into());
        let mut c3 = chunk("chatcmpl-1", 7, "m", true);
        c3.choices[0].delta.tool_calls = Some(vec![ToolCallDelta {
            index: 0,
            id: Some("call_1".into()),
            kind: Some("function".into()),
            function: Some(FunctionCallDelta { name: Some("f".into()), arguments: Some("{\"a\":".into()) }),
        }]);
        let mut c4 = chunk("chatcmpl-1", 7, "m", true);
        c4.choices[0].delta.tool_calls = Some(vec![ToolCallDelta {
            index: 0,
            function: Some(FunctionCallDelta { name: None, arguments: Some("1}".into()) }),
            ..ToolCallDelta::default()
        }]);
        c4.choices[0].finish_reason = Some(FinishReason::ToolCalls);
        let mut c5 = chunk("chatcmpl-1", 7, "m", true);
        c5.choices.clear();
        c5.usage = Some(Some(Usage { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7, ..Usage::default() }));
        a.push(&[c1, c2, c3, c4, c5].map(StreamEvent::Chunk));
        let r = a.finish().unwrap();
        assert_eq!(r.id, "chatcmpl-1");
        assert_eq!(r.object, "chat.completion");
        let m = &r.choices[0].message;
        assert_eq!(m.content.as_deref(), Some("Hello"));
        let calls = m.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].id, "call_1");
        assert_eq!(calls[0].function.arguments, "{\"a\":1}");
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(r.usage.unwrap().total_tokens, 7);
    }

    #[test]
    fn an_error_event_wins() {
        let mut a = Aggregator::new();
        a.push(&[
            StreamEvent::Chunk(chunk("x", 1, "m", false)),
            StreamEvent::Error(ErrorBody::new("boom", "server_error", None)),
        ]);
        assert_eq!(a.finish().unwrap_err().message, "boom");
    }
}
