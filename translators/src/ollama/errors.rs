//! Ollama HTTP error responses (`{"error": "<message>"}`) → the OpenAI error envelope (wire-formats §4.4).

use serde_json::Value;

use super::response::error_message;
use crate::error::MappedError;
use crate::openai::ErrorBody;

/// Maps a non-2xx `/api/chat` (or `/api/tags`) response.
///
/// 404 → 404 `model_not_found`; 400 → 400 with Ollama's message (e.g. "does not support tools"); 401/403
/// (cloud models: our side's sign-in) → 502 `upstream_auth_failed`; 429 → 429; 503 (queue full) → 503
/// `overloaded`, retryable; 504 → 504; other statuses → 502. A body that is not `{"error": …}` JSON →
/// 502 `upstream_error`. Messages are prefixed `ollama: `.
pub fn map_error(status: u16, body: &[u8]) -> MappedError {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let message = parsed.as_ref().and_then(|v| v.get("error").filter(|e| !e.is_null()).map(error_message));
    let Some(message) = message else {
        // Not Ollama's own error (a proxy page, a wrong base URL); raw upstream bodies are not echoed.
        let what = if body.iter().all(u8::is_ascii_whitespace) {
            "an empty body"
        } else if parsed.is_some() {
            "an unrecognized error body"
        } else {
            "a non-JSON body"
        };
        return mapped(502, format!("ollama: HTTP {status} with {what}"), "server_error", Some("upstream_error"));
    };
    let message = format!("ollama: {message}");
    match status {
        400 => mapped(400, message, "invalid_request_error", None),
        404 => mapped(404, message, "invalid_request_error", Some("model_not_found")),
        401 | 403 => mapped(
            502,
            format!("ollama: the upstream rejected the gateway's credentials (HTTP {status})"),
            "server_error",
            Some("upstream_auth_failed"),
        ),
        413 => mapped(413, message, "invalid_request_error", Some("request_too_large")),
        429 => mapped(429, message, "rate_limit_error", Some("rate_limit_exceeded")),
        503 => mapped(503, message, "server_error", Some("overloaded")),
        504 => mapped(504, message, "server_error", Some("upstream_timeout")),
        _ => mapped(502, message, "server_error", Some("upstream_error")),
    }
}

fn mapped(status: u16, message: String, kind: &str, code: Option<&str>) -> MappedError {
    MappedError { status, body: ErrorBody::new(message, kind, code) }
}

#[cfg(test)]
mod tests;
