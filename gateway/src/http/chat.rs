//! `POST /v1/chat/completions`: the OpenAI door of the chat service. The service reads the body,
//! routes, calls the upstream and meters; this module only turns its reply into a response body.

use std::sync::Arc;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{self, Body};
use crate::domain::principal::Principal;
use crate::services::chat::{self, ReplyBody};
use crate::services::{AppState, Error};

pub use crate::services::chat::{
    X_AGGREGATOR_COST_USD, X_AGGREGATOR_MODEL, X_AGGREGATOR_PROVIDER, X_GATEWAY_DROPPED_PARAMS,
};

/// Handles one chat completion request.
///
/// # Errors
/// The service's error (already metered), for `rescue` to render.
pub async fn handle(
    state: &Arc<AppState>,
    principal: &Principal,
    request_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let reply = chat::complete(state, principal, request_id, chat::Dialect::OpenAi, req).await?;
    Ok(reply.map(|b| match b {
        ReplyBody::Full(bytes) => body::full(bytes),
        ReplyBody::Stream(stream) => stream.boxed_unsync(),
    }))
}

/// `POST /v1/responses` and `POST /v1/completions`: the same chat service in the Responses or legacy
/// completions dialect.
///
/// # Errors
/// The service's error (already metered), for `rescue` to render.
pub async fn handle_dialect(
    state: &Arc<AppState>,
    principal: &Principal,
    request_id: &str,
    dialect: chat::Dialect,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let reply = chat::complete(state, principal, request_id, dialect, req).await?;
    Ok(reply.map(|b| match b {
        ReplyBody::Full(bytes) => body::full(bytes),
        ReplyBody::Stream(stream) => stream.boxed_unsync(),
    }))
}

/// `POST /v1/embeddings`.
///
/// # Errors
/// The service's error (already metered).
pub async fn embeddings(
    state: &Arc<AppState>,
    principal: &Principal,
    request_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let reply = crate::services::embeddings::embed(state, principal, request_id, req).await?;
    Ok(reply.map(body::full))
}

/// `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`, `POST /v1/responses/{id}/cancel`,
/// `GET /v1/responses/{id}/input_items`: stored responses live at OpenAI, so these are forwarded to the
/// OpenAI-kind provider; with none configured they do not exist here (404).
///
/// # Errors
/// 404 without an OpenAI-kind provider; the upstream's error otherwise.
pub async fn stored_response(
    state: &Arc<AppState>,
    principal: &Principal,
    method: http::Method,
    path_and_query: &str,
) -> Result<Response<Body>, Error> {
    let (status, bytes) = chat::stored_response(state, principal, method, path_and_query).await?;
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(resp)
}
