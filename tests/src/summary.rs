//! Folds a client-side OpenAI chunk stream into what a client would assemble, checking every chunk's
//! shape on the way (wire-formats.md §1.6).

use serde_json::Value;

use crate::client::SseEvent;
use crate::schema;

/// One assembled tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledCall {
    /// `index` the fragments carried.
    pub index: u64,
    /// Id from the first fragment.
    pub id: Option<String>,
    /// Function name from the first fragment.
    pub name: Option<String>,
    /// Concatenated argument fragments.
    pub arguments: String,
    /// Number of fragments that carried an `id` (must be 1).
    pub ids_seen: usize,
}

/// What a client assembles from a stream.
#[derive(Debug, Clone, Default)]
pub struct StreamSummary {
    /// Parsed chunks (without `[DONE]` and without error events).
    pub chunks: Vec<Value>,
    /// Concatenated `delta.content`.
    pub text: String,
    /// Tool calls by index, in index order.
    pub tool_calls: Vec<AssembledCall>,
    /// Every non-null `finish_reason`.
    pub finish_reasons: Vec<String>,
    /// The non-null `usage` objects.
    pub usages: Vec<Value>,
    /// Whether the last event was `[DONE]`.
    pub done_last: bool,
    /// Number of `[DONE]` events.
    pub done_count: usize,
    /// In-band error events (`{"error":{...}}`).
    pub errors: Vec<Value>,
    /// Whether anything followed an error event.
    pub events_after_error: usize,
    /// Whether the first chunk's delta carried `role: assistant`.
    pub first_has_role: bool,
}

impl StreamSummary {
    /// Folds `events`, panicking with a precise message on any malformed chunk.
    ///
    /// # Panics
    /// When a chunk is not valid JSON or violates the chunk shape.
    pub fn from_events(events: &[SseEvent]) -> Self {
        let mut s = StreamSummary::default();
        for ev in events {
            if !s.errors.is_empty() {
                s.events_after_error += 1;
            }
            if ev.is_done() {
                s.done_count += 1;
                continue;
            }
            let v = ev.json();
            if v.get("error").is_some() {
                schema::check_error(&v).unwrap_or_else(|e| panic!("bad in-band error event: {e}"));
                s.errors.push(v);
                continue;
            }
            schema::check_chunk(&v).unwrap_or_else(|e| panic!("bad chunk: {e}"));
            if s.chunks.is_empty() {
                s.first_has_role = v["choices"][0]["delta"]["role"] == "assistant";
            }
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                s.usages.push(u.clone());
            }
            for c in v["choices"].as_array().into_iter().flatten() {
                if let Some(t) = c["delta"]["content"].as_str() {
                    s.text.push_str(t);
                }
                if let Some(f) = c["finish_reason"].as_str() {
                    s.finish_reasons.push(f.to_owned());
                }
                for tc in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                    let index = tc["index"].as_u64().unwrap_or(u64::MAX);
                    let pos = match s.tool_calls.iter().position(|a| a.index == index) {
                        Some(p) => p,
                        None => {
                            s.tool_calls.push(AssembledCall {
                                index,
                                id: None,
                                name: None,
                                arguments: String::new(),
                                ids_seen: 0,
                            });
                            s.tool_calls.len() - 1
                        }
                    };
                    let call = &mut s.tool_calls[pos];
                    if let Some(id) = tc["id"].as_str() {
                        call.id = Some(id.to_owned());
                        call.ids_seen += 1;
                    }
                    if let Some(n) = tc["function"]["name"].as_str() {
                        call.name = Some(n.to_owned());
                    }
                    if let Some(a) = tc["function"]["arguments"].as_str() {
                        call.arguments.push_str(a);
                    }
                }
            }
            s.chunks.push(v);
        }
        s.done_last = events.last().is_some_and(SseEvent::is_done);
        s.tool_calls.sort_by_key(|c| c.index);
        s
    }

    /// Checks the invariants of a successful stream: role first, constant id/created/model, exactly one
    /// finish reason, `[DONE]` once and last.
    ///
    /// # Panics
    /// On any violation, naming it.
    pub fn assert_well_formed(&self) {
        assert!(self.errors.is_empty(), "unexpected in-band error: {:?}", self.errors);
        assert!(self.first_has_role, "first chunk must carry delta.role=assistant: {:?}", self.chunks.first());
        let first = &self.chunks[0];
        for c in &self.chunks {
            for k in ["id", "created", "model"] {
                assert_eq!(c[k], first[k], "`{k}` must be the same on every chunk");
            }
        }
        assert_eq!(self.finish_reasons.len(), 1, "exactly one finish_reason: {:?}", self.finish_reasons);
        assert_eq!(self.done_count, 1, "exactly one [DONE]");
        assert!(self.done_last, "[DONE] must be the last event");
    }

    /// The tool-call arguments parsed as JSON.
    ///
    /// # Panics
    /// When some arguments are not valid JSON.
    pub fn tool_args(&self) -> Vec<Value> {
        self.tool_calls
            .iter()
            .map(|c| {
                serde_json::from_str(&c.arguments)
                    .unwrap_or_else(|e| panic!("tool call {} arguments are not JSON ({e}): {}", c.index, c.arguments))
            })
            .collect()
    }
}
