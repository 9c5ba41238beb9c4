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
