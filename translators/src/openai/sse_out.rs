//! Encodes stream events as OpenAI SSE: `data: <json>\n\n`, then `data: [DONE]\n\n` once.

use bytes::{BufMut, BytesMut};

use crate::stream::StreamEvent;

/// The terminal event of a successful OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Appends one event to `out`. JSON is written compactly on a single line.
pub fn encode_event(event: &StreamEvent, out: &mut BytesMut) {
    out.put_slice(b"data: ");
    let result = match event {
        StreamEvent::Chunk(chunk) => serde_json::to_writer((&mut *out).writer(), chunk),
        StreamEvent::Raw(payload) => {
            out.put_slice(payload);
            Ok(())
        }
        StreamEvent::Error(body) => {
            serde_json::to_writer((&mut *out).writer(), &crate::openai::ErrorEnvelope { error: body.clone() })
        }
    };
    // Serializing our own plain structs into memory cannot fail; if it ever did, close the event so the
    // framing stays valid for the client.
    debug_assert!(result.is_ok());
    out.put_slice(b"\n\n");
}

/// Appends every event of `events`, in order.
pub fn encode_all(events: &[StreamEvent], out: &mut BytesMut) {
    for event in events {
        encode_event(event, out);
    }
}
