//! The Anthropic Messages door: Claude Code and the `anthropic` SDKs (`ANTHROPIC_BASE_URL` pointed at
//! the gateway). `POST /v1/messages` runs the same chat service as `/v1/chat/completions`, in the
//! Anthropic dialect; `count_tokens` and the Anthropic-shaped model list sit beside it. Errors are
//! rendered in Anthropic's envelope by `rescue::render_anthropic` (the dispatcher picks it for these
//! paths).

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use translators::anthropic_ingress::{self, ModelEntry, ModelsQuery};

use super::body::{self, Body};
use crate::domain::principal::Principal;
use crate::services::chat::{self, Dialect, ReplyBody};
use crate::services::{models, AppState, Error};

/// True when a request for a path both APIs share (`GET /v1/models`) comes from an Anthropic client: it
/// carries `anthropic-version` or `x-api-key`.
pub fn is_anthropic_client(headers: &HeaderMap) -> bool {
    headers.contains_key(anthropic_ingress::VERSION_HEADER) || headers.contains_key(anthropic_ingress::API_KEY_HEADER)
}

/// `POST /v1/messages`.
///
/// # Errors
/// The chat service's error (already metered), rendered in Anthropic's shape by the dispatcher.
pub async fn messages(
    state: &Arc<AppState>,
    principal: &Principal,
    request_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let reply = chat::complete(state, principal, request_id, Dialect::Anthropic, req).await?;
    let mut resp = reply.map(|b| match b {
        ReplyBody::Full(bytes) => body::full(bytes),
        ReplyBody::Stream(stream) => stream.boxed_unsync(),
    });
    if let Ok(v) = HeaderValue::try_from(request_id) {
        resp.headers_mut().insert(super::rescue::REQUEST_ID, v);
    }
    Ok(resp)
}

/// `POST /v1/messages/count_tokens`.
///
/// # Errors
/// As [`chat::count_tokens`].
pub async fn count_tokens(
    state: &Arc<AppState>,
    principal: &Principal,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let bytes = chat::count_tokens(state, principal, req).await?;
    Ok(json(bytes))
}

/// `GET /v1/models` in Anthropic's shape, paginated by `limit`, `after_id`, `before_id`.
///
/// # Errors
/// 400 for a bad pagination query.
pub async fn list_models(
    state: &AppState,
    principal: &Principal,
    query: Option<&str>,
) -> Result<Response<Body>, Error> {
    let query = ModelsQuery::parse(query.unwrap_or(""))?;
    let entries: Vec<ModelEntry> = models::list(state, principal)
        .await
        .into_iter()
        .map(|m| ModelEntry { id: m.id, created: m.created, display_name: None })
        .collect();
    Ok(json(Bytes::from(anthropic_ingress::encode_models_page(&entries, &query))))
}

fn json(bytes: Bytes) -> Response<Body> {
    let mut resp = Response::new(body::full(bytes));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
