//! Server-sent events framer (WHATWG event-stream rules), fed arbitrary byte splits.
//!
//! Accepts LF, CRLF and bare CR line endings (a CRLF may be split across feeds), `:` comments, a leading
//! BOM, `field:value` with one optional space, multi-line `data:` joined with `\n`. Bytes are buffered and
//! only complete events are handed out, so UTF-8 sequences cut by the transport are reassembled.

use bytes::Bytes;

use crate::error::TranslateError;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, empty when absent.
    pub event: String,
    /// The joined `data:` lines.
    pub data: Bytes,
}

/// Incremental SSE parser.
#[derive(Debug)]
pub struct SseFramer {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    event: String,
    /// The previous feed ended on `\r`: a `\n` at the start of the next one belongs to that line ending.
    skip_lf: bool,
    at_stream_start: bool,
    max_event_bytes: usize,
}

impl Default for SseFramer {
    fn default() -> Self {
        Self::new(super::DEFAULT_MAX_EVENT_BYTES)
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseFramer {
    /// A framer that fails any event larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            event: String::new(),
            skip_lf: false,
            at_stream_start: true,
            max_event_bytes,
        }
    }

    /// Feeds bytes; appends every completed event to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<SseEvent>) -> Result<(), TranslateError> {
        while !input.is_empty() {
            if self.skip_lf {
                self.skip_lf = false;
                if input[0] == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', input) {
                None => {
                    self.line.extend_from_slice(input);
                    self.check_size()?;
                    return Ok(());
                }
                Some(pos) => {
                    self.line.extend_from_slice(&input[..pos]);
                    self.check_size()?;
                    if input[pos] == b'\r' {
                        self.skip_lf = true;
                    }
                    input = &input[pos + 1..];
                    self.end_line(out);
                }
            }
        }
        Ok(())
    }

    /// The input ended: a last line without its terminator and an event without its blank line are still
    /// dispatched (servers that close right after the final event are common).
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            self.end_line(out);
        }
        self.dispatch(out);
    }

    /// True when bytes of an incomplete event are buffered.
    pub fn has_pending(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    fn check_size(&self) -> Result<(), TranslateError> {
        if self.line.len() + self.data.len() > self.max_event_bytes {
            return Err(TranslateError::Protocol("SSE event exceeds the size limit".into()));
        }
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let mut line = std::mem::take(&mut self.line);
        if self.at_stream_start {
            self.at_stream_start = false;
            if line.starts_with(BOM) {
                line.drain(..BOM.len());
            }
        }
        self.process_line(&line, out);
        // Reuse the allocation for the next line.
        line.clear();
        self.line = line;
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                event: std::mem::take(&mut self.event),
                data: Bytes::from(std::mem::take(&mut self.data)),
            });
        }
        self.has_data = false;
        self.event.clear();
    }
}

#[cfg(test)]
mod tests;
