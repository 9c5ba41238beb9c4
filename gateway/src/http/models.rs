//! `GET /v1/models` and `GET /v1/models/{id}` in OpenAI's shape, from the catalog service.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};
use serde::Serialize;

use super::body::{self, Body};
use crate::domain::principal::Principal;
use crate::services::models::{self, ModelEntry};
use crate::services::{AppState, Error};

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: &'a [ModelEntry],
}

fn json(bytes: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from(bytes)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `GET /v1/models`.
pub async fn list(state: &AppState, principal: &Principal) -> Result<Response<Body>, Error> {
    let all = models::list(state, principal).await;
    let bytes = serde_json::to_vec(&ModelList { object: "list", data: &all })
        .map_err(|e| Error::Internal(e.to_string().into()))?;
    Ok(json(bytes))
}

/// `GET /v1/models/{id}`; `raw_id` is the undecoded path tail (ids contain `/` and `:`).
pub async fn retrieve(state: &AppState, principal: &Principal, raw_id: &str) -> Result<Response<Body>, Error> {
    let id = percent_encoding::percent_decode_str(raw_id).decode_utf8_lossy().into_owned();
    let model = models::retrieve(state, principal, &id).await?;
    Ok(json(serde_json::to_vec(&model).map_err(|e| Error::Internal(e.to_string().into()))?))
}
