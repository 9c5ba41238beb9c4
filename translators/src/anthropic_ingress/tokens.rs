//! `POST /v1/messages/count_tokens` for backends without a counting endpoint: a tokenizer-free estimate.
//!
//! Heuristic (the same 4-bytes-per-token rule the gateway's ledger uses for cut streams, plus fixed
//! costs for what is not text), deliberately erring high, because an undercount stops Claude Code from
//! compacting in time and a fake 0 disables compaction altogether (research note §1.3, count_tokens):
//! - UTF-8 bytes of `system` text, of every text / thinking block, of `tool_use` names and compact
//!   `input` JSON, of `tool_result` contents (recursively), and of each tool definition's compact JSON
//!   (name, description, `input_schema`), divided by 4, rounded up;
//! - [`TOKENS_PER_IMAGE`] per image (Anthropic's cap for a ~1.15-megapixel image, width·height/750);
//! - PDF documents: [`TOKENS_PER_PDF_PAGE`] per estimated page ([`PDF_BYTES_PER_PAGE`] decoded bytes);
//! - [`TOKENS_PER_MESSAGE`] per message, and [`TOOLS_OVERHEAD`] when tools are present (the tool-use
//!   system prompt Anthropic adds);
//! - at least 1 for any request.

use serde_json::Value;

use crate::error::TranslateError;

/// Bytes of text per token.
pub const BYTES_PER_TOKEN: u64 = 4;
/// Tokens counted per image block.
pub const TOKENS_PER_IMAGE: u64 = 1600;
/// Tokens counted per estimated PDF page (text plus page image).
pub const TOKENS_PER_PDF_PAGE: u64 = 2250;
/// Decoded PDF bytes assumed per page.
pub const PDF_BYTES_PER_PAGE: u64 = 50_000;
/// Role and turn framing per message.
pub const TOKENS_PER_MESSAGE: u64 = 4;
/// The tool-use system prompt added when `tools` is non-empty.
pub const TOOLS_OVERHEAD: u64 = 346;

#[derive(Default)]
struct Tally {
    bytes: u64,
    fixed: u64,
}

impl Tally {
    fn text(&mut self, s: &str) {
        self.bytes += s.len() as u64;
    }

    fn tokens(&self) -> u64 {
        (self.bytes.div_ceil(BYTES_PER_TOKEN) + self.fixed).max(1)
    }
}

/// Estimates the input tokens of a `count_tokens` body (a Messages body without `max_tokens`).
///
/// The body is validated like a Messages request first, so malformed bodies get the same precise 400.
pub fn count_tokens(body: &[u8]) -> Result<u64, TranslateError> {
    super::request::decode(body, false)?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::InvalidRequest { message: format!("invalid JSON: {e}").into(), param: None })?;
    let mut tally = Tally::default();
    match value.get("system") {
        Some(Value::String(s)) => tally.text(s),
        Some(Value::Array(blocks)) => blocks.iter().for_each(|b| block(b, &mut tally)),
        _ => {}
    }
    for message in value.get("messages").and_then(Value::as_array).into_iter().flatten() {
        tally.fixed += TOKENS_PER_MESSAGE;
        match message.get("content") {
            Some(Value::String(s)) => tally.text(s),
            Some(Value::Array(blocks)) => blocks.iter().for_each(|b| block(b, &mut tally)),
            _ => {}
        }
    }
    let tools = value.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty());
    if let Some(tools) = tools {
        tally.fixed += TOOLS_OVERHEAD;
        for tool in tools {
            for key in ["name", "description"] {
                if let Some(s) = tool.get(key).and_then(Value::as_str) {
                    tally.text(s);
                }
            }
            if let Some(schema) = tool.get("input_schema") {
                tally.text(&schema.to_string());
            }
        }
    }
    Ok(tally.tokens())
}

/// `{"input_tokens": N}`.
pub fn count_tokens_json(input_tokens: u64) -> Vec<u8> {
    format!("{{\"input_tokens\":{input_tokens}}}").into_bytes()
}

fn block(b: &Value, tally: &mut Tally) {
    let str_of = |key: &str| b.get(key).and_then(Value::as_str);
    match str_of("type") {
        Some("text") => tally.text(str_of("text").unwrap_or("")),
        Some("thinking") => tally.text(str_of("thinking").unwrap_or("")),
        Some("redacted_thinking") => tally.text(str_of("data").unwrap_or("")),
        Some("image") => tally.fixed += TOKENS_PER_IMAGE,
        Some("tool_use") => {
            tally.text(str_of("name").unwrap_or(""));
            if let Some(input) = b.get("input") {
                tally.text(&input.to_string());
            }
        }
        Some("tool_result") => match b.get("content") {
            Some(Value::String(s)) => tally.text(s),
            Some(Value::Array(blocks)) => blocks.iter().for_each(|inner| block(inner, tally)),
            _ => {}
        },
        Some("document") => document(b, tally),
        _ => tally.text(&b.to_string()),
    }
}

fn document(b: &Value, tally: &mut Tally) {
    let source = b.get("source");
    let kind = source.and_then(|s| s.get("type")).and_then(Value::as_str);
    match kind {
        Some("base64") => {
            let data = source.and_then(|s| s.get("data")).and_then(Value::as_str).unwrap_or("");
            // Decoded size without decoding: 3 bytes per 4 characters.
            let decoded = (data.trim_end_matches('=').len() as u64) * 3 / 4;
            tally.fixed += decoded.div_ceil(PDF_BYTES_PER_PAGE).max(1) * TOKENS_PER_PDF_PAGE;
        }
        Some("text") => tally.text(source.and_then(|s| s.get("data")).and_then(Value::as_str).unwrap_or("")),
        _ => tally.text(&b.to_string()),
    }
}

#[cfg(test)]
mod tests;
