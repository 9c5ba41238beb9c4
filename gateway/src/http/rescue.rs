//! The one place where errors become HTTP responses: OpenAI's `{"error":{message,type,param,code}}` for
//! OpenAI clients, Anthropic's `{"type":"error","error":{type,message}}` (with its statuses and a
//! `request-id` header) for Anthropic clients. Status, retry headers and messages come from the same
//! service error either way.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use translators::openai::{ErrorBody, ErrorEnvelope};

use super::body::{self, Body};
use crate::services::error::{Error, UpstreamError};

/// `x-should-retry`, read by the official SDKs to override their retry decision.
pub const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
/// The upstream's own request id, surfaced for support tickets.
pub const X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// The OpenAI error body for `error`.
pub fn error_body(error: &Error) -> ErrorBody {
    if let Error::Upstream(UpstreamError::Status { mapped, .. }) = error {
        return mapped.body.clone();
    }
    ErrorBody {
        message: error.to_string(),
        kind: error.kind().to_owned(),
        param: error.param().map(str::to_owned),
        code: error.code().map(str::to_owned),
    }
}

/// Renders `error` as a JSON response with the right status and retry headers.
pub fn render(error: &Error) -> Response<Body> {
    let json = serde_json::to_vec(&ErrorEnvelope { error: error_body(error) }).unwrap_or_default();
    respond(error, error.status(), json)
}

/// Renders `error` in Anthropic's envelope: `529 overloaded_error` for an overloaded upstream, context
/// overflow as `prompt is too long: …` (what Claude Code compacts on), `request-id` set.
pub fn render_anthropic(error: &Error, request_id: &str) -> Response<Body> {
    if let Error::Upstream(UpstreamError::Status { anthropic_verbatim: Some((status, body)), .. }) = error {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut resp = respond(error, status, body.to_vec());
        if let Ok(v) = HeaderValue::try_from(request_id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        return resp;
    }
    let encoded =
        translators::anthropic_ingress::encode_error(error.status().as_u16(), &error_body(error), Some(request_id));
    let status = StatusCode::from_u16(encoded.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = respond(error, status, encoded.body);
    if let Ok(v) = HeaderValue::try_from(request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// Anthropic's request-id response header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

fn respond(error: &Error, status: StatusCode, json: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from(json)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Error::Upstream(UpstreamError::Status { retry_after, upstream_request_id, .. }) = error {
        if let Some(v) = retry_after {
            h.insert(RETRY_AFTER, v.clone());
        }
        if let Some(v) = upstream_request_id {
            h.insert(X_UPSTREAM_REQUEST_ID, v.clone());
        }
    }
    // Tenant limits: `retry-after` and the `x-ratelimit-*` headers, as OpenAI sends them.
    if let Error::RateLimited(rejection) = error {
        rejection.headers.apply(h);
        h.insert(RETRY_AFTER, HeaderValue::from(rejection.retry_after_secs()));
    }
    if (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS || status.as_u16() == 529)
        && !h.contains_key(RETRY_AFTER)
    {
        h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    // A stalled body is still unread: the connection cannot carry another request, so say so and
    // let hyper close it (HTTP/1; HTTP/2 resets the stream and drops the header).
    if matches!(error, Error::BodyTimeout { .. }) {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        // (529 is a server error too: Anthropic's SDKs retry it.)
        let retry = if error.is_retryable() { "true" } else { "false" };
        h.insert(X_SHOULD_RETRY, HeaderValue::from_static(retry));
    }
    resp
}
