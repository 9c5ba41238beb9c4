//! Hub errors → Anthropic's error envelope `{"type":"error","error":{"type","message"},"request_id"}`.
//!
//! The status decides the `error.type` ([`error_type`], Anthropic's errors page); in-band stream errors
//! have no status, so their type comes from the hub body's `code`/`type` ([`stream_error_type`]).
//! Context-window overflows from any backend are rewritten to Anthropic's wording,
//! `prompt is too long: N tokens > M maximum`, because Claude Code compacts and retries only when it
//! sees it (research note §1.3, error wording). Other messages are passed through unchanged.

use crate::error::TranslateError;
use crate::openai::ErrorBody;

use super::wire;

/// An error answer for an Anthropic client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedError {
    /// HTTP status to send.
    pub status: u16,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// Anthropic's `error.type` for an HTTP status.
///
/// | status | type |
/// |---|---|
/// | 400, other 4xx | `invalid_request_error` |
/// | 401 | `authentication_error` |
/// | 402 | `billing_error` |
/// | 403 | `permission_error` |
/// | 404 | `not_found_error` |
/// | 413 | `request_too_large` |
/// | 429 | `rate_limit_error` |
/// | 503, 529 | `overloaded_error` |
/// | 504 | `timeout_error` |
/// | 500, other 5xx and anything else | `api_error` |
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The status to send an Anthropic client: 503 becomes Anthropic's 529 (`overloaded_error`, which the
/// SDKs and Claude Code retry with backoff); every other status is kept.
pub fn anthropic_status(status: u16) -> u16 {
    if status == 503 {
        529
    } else {
        status
    }
}

/// Serializes the envelope.
pub fn error_json(kind: &str, message: &str, request_id: Option<&str>) -> Vec<u8> {
    let body = wire::ErrorResponse { kind: "error", error: wire::ErrorObject { kind, message }, request_id };
    // Serializing two strings into memory cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A hub error (status and OpenAI body, as the gateway's rescue layer or a provider's `map_error`
/// produced it) → the Anthropic answer. Context overflow becomes a 400 with Anthropic's wording.
pub fn encode_error(status: u16, body: &ErrorBody, request_id: Option<&str>) -> EncodedError {
    if let Some(message) = context_overflow_message(body) {
        return EncodedError { status: 400, body: error_json("invalid_request_error", &message, request_id) };
    }
    let status = anthropic_status(status);
    EncodedError { status, body: error_json(error_type(status), &body.message, request_id) }
}

/// A translation failure of the client's request (always 400 `invalid_request_error`; the message
/// already names the field).
pub fn encode_translate_error(error: &TranslateError, request_id: Option<&str>) -> EncodedError {
    let status = if error.is_client_error() { 400 } else { 500 };
    EncodedError { status, body: error_json(error_type(status), &error.to_string(), request_id) }
}

/// `error.type` and message of an in-band stream error.
pub fn stream_error_type(body: &ErrorBody) -> (&'static str, String) {
    if let Some(message) = context_overflow_message(body) {
        return ("invalid_request_error", message);
    }
    let kind = match (body.code.as_deref(), body.kind.as_str()) {
        (Some("rate_limit_exceeded"), _) | (_, "requests" | "tokens" | "rate_limit_error") => "rate_limit_error",
        (Some("overloaded"), _) | (_, "overloaded_error") => "overloaded_error",
        (Some("timeout"), _) | (_, "timeout_error") => "timeout_error",
        (Some("insufficient_quota"), _) | (_, "insufficient_quota" | "billing_error") => "billing_error",
        (Some("request_too_large"), _) | (_, "request_too_large") => "request_too_large",
        (Some("model_not_found"), _) | (_, "not_found_error") => "not_found_error",
        (_, "authentication_error") => "authentication_error",
        (_, "permission_error") => "permission_error",
        // The gateway's own provider key was refused: not the client's fault.
        (Some("upstream_auth_failed"), _) => "api_error",
        (_, "invalid_request_error") => "invalid_request_error",
        _ => "api_error",
    };
    (kind, body.message.clone())
}

/// `Some("prompt is too long: …")` when the body reports a context-window overflow.
///
/// Recognised: code `context_length_exceeded`, and the phrasings of OpenAI ("maximum context length is
/// M tokens. However, your messages resulted in N tokens"), vLLM ("… you requested N tokens"), Ollama
/// and llama.cpp ("exceeds the context", "context window"), and Anthropic itself. With both numbers
/// the message is exactly `prompt is too long: N tokens > M maximum`; otherwise the original text
/// follows `prompt is too long: `.
pub fn context_overflow_message(body: &ErrorBody) -> Option<String> {
    let lower = body.message.to_ascii_lowercase();
    let matches = body.code.as_deref() == Some("context_length_exceeded")
        || [
            "prompt is too long",
            "maximum context length",
            "context length exceeded",
            "context_length_exceeded",
            "exceeds the context",
            "exceed context limit",
            "context window",
            "exceeds the maximum context",
        ]
        .iter()
        .any(|p| lower.contains(p));
    if !matches {
        return None;
    }
    if lower.starts_with("prompt is too long") {
        return Some(body.message.clone());
    }
    let maximum = ["maximum context length is ", "context length of ", "context window of ", "n_ctx = "]
        .iter()
        .find_map(|p| number_after(&lower, p));
    let used = ["resulted in ", "you requested ", "requested ", "prompt has ", "n_prompt_tokens = "]
        .iter()
        .find_map(|p| number_after(&lower, p));
    Some(match (used, maximum) {
        (Some(n), Some(m)) => format!("prompt is too long: {n} tokens > {m} maximum"),
        _ => format!("prompt is too long: {}", body.message),
    })
}

/// The integer right after the first `needle` in `haystack` (commas inside it allowed: `128,000`).
fn number_after(haystack: &str, needle: &str) -> Option<u64> {
    let start = haystack.find(needle)? + needle.len();
    let digits: String = haystack[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
