//! `/v1/batches`: the OpenAI Batch door. Parses the wire format and calls one batch service operation;
//! validation, permissions and execution are the service's.

use std::sync::Arc;

use http::header::CONTENT_LENGTH;
use http::{HeaderName, Request, Response};
use hyper::body::Incoming;

use super::body::Body;
use super::files::{json, parse_limit, query_pairs};
use crate::domain::principal::Principal;
use crate::services::batches;
use crate::services::{AppState, Error};

/// `Idempotency-Key`: a retried create with the same key returns the batch made the first time.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// A create body is a few hundred bytes; this bounds it generously.
const MAX_CREATE_BODY: u64 = 64 * 1024;

/// Routes `/v1/batches…` (`tail` is the path after `/batches`).
///
/// # Errors
/// The service's errors, for `rescue`.
pub async fn handle(
    state: &Arc<AppState>,
    principal: &Principal,
    tail: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let method = req.method().clone();
    let segments: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", []) => {
            let key = req
                .headers()
                .get(&IDEMPOTENCY_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= 256)
                .map(str::to_owned);
            let (parts, body) = req.into_parts();
            let body = crate::services::chat::read_body(
                body,
                parts.headers.get(CONTENT_LENGTH),
                MAX_CREATE_BODY,
                state.config.server.body_read_timeout,
            )
            .await?;
            json(&batches::create(state, principal, &body, key.as_deref()).await?)
        }
        ("GET", []) => {
            let mut after = None;
            let mut limit = None;
            for (k, v) in query_pairs(req.uri().query()) {
                match k.as_str() {
                    "after" => after = Some(v),
                    "limit" => limit = Some(parse_limit(&v)?),
                    _ => {}
                }
            }
            json(&batches::list(state, principal, None, after.as_deref(), limit).await?)
        }
        ("GET", [id]) => json(&batches::retrieve(state, principal, id).await?),
        ("POST", [id, "cancel"]) => json(&batches::cancel(state, principal, id).await?),
        (_, [] | [_] | [_, "cancel"]) => Err(Error::MethodNotAllowed),
        _ => Err(Error::NotFound("Unknown batches path.".into())),
    }
}
