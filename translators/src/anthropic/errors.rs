//! Anthropic error responses and `error` stream events → OpenAI error envelopes (wire-formats §3.8).
//!
//! Status policy: the client's status tells it what to do, so an upstream 401/403 (our provider key is
//! bad, the client's key is fine) becomes 502 `upstream_auth_failed`; 402 billing becomes OpenAI's quota
//! convention 429 `insufficient_quota`; 529 becomes a standard 503; other 5xx become 502 (504 stays).
//! Bodies that are not Anthropic JSON errors (CDN HTML pages, empty bodies, a 200 carrying an error)
//! become 502 `upstream_error`, except 429/503/504/529, whose status alone carries the retry semantics
//! the client needs. Messages are prefixed with `anthropic: `; raw upstream bodies are never echoed.

use crate::error::MappedError;
use crate::openai::ErrorBody;

use super::wire::{ErrorObject, ErrorResponse};

const PREFIX: &str = "anthropic: ";

/// OpenAI `type` for client-side errors.
const INVALID_REQUEST: &str = "invalid_request_error";
/// OpenAI `type` for server-side errors.
const SERVER_ERROR: &str = "server_error";

/// Maps an upstream HTTP error (status and body) to the status and OpenAI error body for the client.
///
/// Never fails: an unreadable body yields a generic 502 `upstream_error`.
pub fn map_error(status: u16, body: &[u8]) -> MappedError {
    let parsed = parse_error_object(body);
    let Some(error) = parsed else {
        return unreadable(status);
    };
    let upstream_message = error.message.as_deref().unwrap_or("");
    let message = format!("{PREFIX}{upstream_message}");
    let (status, kind, code, param) = match status {
        400 if is_context_length(upstream_message) => {
            (400, INVALID_REQUEST, Some("context_length_exceeded"), Some("messages"))
        }
        400 => (400, INVALID_REQUEST, None, None),
        401 | 403 => (502, SERVER_ERROR, Some("upstream_auth_failed"), None),
        402 => (429, "insufficient_quota", Some("insufficient_quota"), None),
        404 => (404, INVALID_REQUEST, Some("model_not_found"), Some("model")),
        413 => (413, INVALID_REQUEST, Some("request_too_large"), None),
        429 => (429, "requests", Some("rate_limit_exceeded"), None),
        503 | 529 => (503, SERVER_ERROR, Some("overloaded"), None),
        504 => (504, SERVER_ERROR, Some("timeout"), None),
        // 408, 409, 422 and other client errors keep their status.
        405..=499 => (status, INVALID_REQUEST, None, None),
        // 2xx/3xx carrying an error object: the upstream broke its contract.
        0..=399 => (502, SERVER_ERROR, Some("upstream_error"), None),
        _ => (502, SERVER_ERROR, None, None),
    };
    let mut body = ErrorBody::new(message, kind, code);
    body.param = param.map(str::to_owned);
    MappedError { status, body }
}

/// Maps the data of an in-band `error` event (`{"type":"error","error":{…}}`, or the inner `error`
/// object alone) to the OpenAI error body sent as `data: {"error": …}`.
pub fn map_stream_error(error_json: &[u8]) -> ErrorBody {
    let Some(error) = parse_error_object(error_json) else {
        return ErrorBody::new(
            format!("{PREFIX}upstream stream reported an unreadable error"),
            SERVER_ERROR,
            Some("upstream_error"),
        );
    };
    let upstream_message = error.message.as_deref().unwrap_or("");
    let (kind, code) = match error.kind.as_deref().unwrap_or("") {
        "invalid_request_error" if is_context_length(upstream_message) => {
            (INVALID_REQUEST, Some("context_length_exceeded"))
        }
        "invalid_request_error" => (INVALID_REQUEST, None),
        "authentication_error" | "permission_error" => (SERVER_ERROR, Some("upstream_auth_failed")),
        "billing_error" => ("insufficient_quota", Some("insufficient_quota")),
        "not_found_error" => (INVALID_REQUEST, Some("model_not_found")),
        "request_too_large" => (INVALID_REQUEST, Some("request_too_large")),
        "rate_limit_error" => ("requests", Some("rate_limit_exceeded")),
        "overloaded_error" => (SERVER_ERROR, Some("overloaded")),
        "timeout_error" => (SERVER_ERROR, Some("timeout")),
        "api_error" => (SERVER_ERROR, None),
        _ => (SERVER_ERROR, Some("upstream_error")),
    };
    let message = if upstream_message.is_empty() {
        format!("{PREFIX}{}", error.kind.as_deref().unwrap_or("upstream error"))
    } else {
        format!("{PREFIX}{upstream_message}")
    };
    ErrorBody::new(message, kind, code)
}

/// The Anthropic `error` object of a body, accepting the full envelope or the bare object. `None` when
/// the body is not JSON or carries no recognisable error.
fn parse_error_object(body: &[u8]) -> Option<ErrorObject> {
    let value: serde_json::Value = serde_json::from_slice(trim_ascii(body)).ok()?;
    if !value.is_object() {
        return None;
    }
    if value.get("error").is_some_and(serde_json::Value::is_object) {
        let envelope: ErrorResponse = serde_json::from_value(value).ok()?;
        let error = envelope.error?;
        if error.kind.is_none() && error.message.is_none() {
            return None;
        }
        return Some(error);
    }
    // A bare error object (`{"type":"overloaded_error","message":"…"}`) or `{"message":"…"}`.
    let error: ErrorObject = serde_json::from_value(value).ok()?;
    error.message.as_ref()?;
    Some(error)
}

/// Bodies that are not Anthropic JSON errors (empty, HTML from a CDN, plain text).
fn unreadable(status: u16) -> MappedError {
    let (status, code) = match status {
        429 => (429, "rate_limit_exceeded"),
        503 | 529 => (503, "overloaded"),
        504 => (504, "timeout"),
        _ => (502, "upstream_error"),
    };
    let kind = if status == 429 { "requests" } else { SERVER_ERROR };
    MappedError {
        status,
        body: ErrorBody::new(format!("{PREFIX}upstream returned an unreadable error response"), kind, Some(code)),
    }
}

/// Anthropic says "prompt is too long: 205000 tokens > 200000 maximum" or "input length and `max_tokens`
/// exceed context limit".
fn is_context_length(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("prompt is too long")
        || lower.contains("exceed context limit")
        || lower.contains("context window")
        || lower.contains("context length")
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes.trim_ascii()
}

#[cfg(test)]
mod tests;
