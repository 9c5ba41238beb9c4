//! The one place where errors become HTTP responses, in OpenAI's `{"error":{message,type,param,code}}` shape.

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
    let status = error.status();
    let json = serde_json::to_vec(&ErrorEnvelope { error: error_body(error) }).unwrap_or_default();
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
    if (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS)
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
        let retry = if error.is_retryable() { "true" } else { "false" };
        h.insert(X_SHOULD_RETRY, HeaderValue::from_static(retry));
    }
    resp
}
