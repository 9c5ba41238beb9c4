//! GraphQL over our hyper server (no second HTTP framework):
//! - `POST /graphql` with a JSON body `{query, variables, operationName}` (at most
//!   [`MAX_BODY_BYTES`]), answered with `application/json`;
//! - `GET /graphql?query=…&variables=…` for queries (a mutation over GET is refused: GET must be safe);
//! - `POST` with `Accept: text/event-stream`: graphql-sse's distinct connections mode, for
//!   subscriptions (any operation works: a query or mutation is one `next` event), each result an
//!   `event: next` and the end an `event: complete`;
//! - `GET` with `Accept: text/html` and no `query`: the playground page, when enabled.
//!
//! Credentials are checked by the REST dispatch before this door is called; a failure is answered
//! here in GraphQL's shape (`UNAUTHENTICATED`, status 401).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;

use super::errors::{code, code_of};
use super::schema::{build_schema, GatewaySchema, MonthSpend};
use crate::domain::config::GraphqlSettings;
use crate::domain::principal::Principal;
use crate::services::error::Side;
use crate::services::{AppState, Error};

/// The response body type every front door shares (`http::body::Body`, which this door does not import).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body: a GraphQL document and its variables, never bulk data.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

const PLAYGROUND_HTML: &str = include_str!("playground.html");

/// The GraphQL front door: the schema (built once) and whether the playground is served.
#[derive(Clone)]
pub struct Door {
    schema: GatewaySchema,
    playground: bool,
}

impl Door {
    /// A door with `settings`' limits and playground switch.
    pub fn new(settings: &GraphqlSettings) -> Self {
        Self { schema: build_schema(settings), playground: settings.playground }
    }

    /// The schema, for its SDL.
    pub fn schema(&self) -> &GatewaySchema {
        &self.schema
    }

    /// Answers one request to `/graphql`; `auth` is the result of authenticating it.
    pub async fn handle(
        &self,
        state: Arc<AppState>,
        auth: Result<Principal, Error>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        let sse = accept.contains("text/event-stream");
        match *req.method() {
            Method::GET => {
                let query = req.uri().query().unwrap_or("").to_owned();
                if accept.contains("text/html") && !query.split('&').any(|p| p.starts_with("query=")) {
                    return self.playground();
                }
                let request = match from_query_string(&query) {
                    Ok(r) => r,
                    Err(message) => return error_response(StatusCode::BAD_REQUEST, code::BAD_USER_INPUT, &message),
                };
                if is_mutation(&request) {
                    let mut resp = error_response(
                        StatusCode::METHOD_NOT_ALLOWED,
                        code::BAD_USER_INPUT,
                        "Mutations must be sent with POST.",
                    );
                    resp.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
                    return resp;
                }
                self.run(state, auth, request, sse).await
            }
            Method::POST => {
                let timeout = state.config.server.body_read_timeout;
                let body = match read_body(req.into_body(), timeout).await {
                    Ok(b) => b,
                    Err(resp) => return *resp,
                };
                let request: async_graphql::Request = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => {
                        return error_response(
                            StatusCode::BAD_REQUEST,
                            code::BAD_USER_INPUT,
                            &format!("The body must be a JSON object with `query` (and optional `variables`, `operationName`): {e}."),
                        )
                    }
                };
                self.run(state, auth, request, sse).await
            }
            _ => {
                let mut resp = error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    code::BAD_USER_INPUT,
                    "Use POST (or GET for queries).",
                );
                resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, POST"));
                resp
            }
        }
    }

    fn playground(&self) -> Response<Body> {
        if !self.playground {
            return error_response(
                StatusCode::NOT_FOUND,
                code::NOT_FOUND,
                "The playground is off (set ENABLE_PLAYGROUND=true or graphql.playground: true); POST queries to /graphql.",
            );
        }
        let mut resp = Response::new(full(Bytes::from_static(PLAYGROUND_HTML.as_bytes())));
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        // The page runs only its own inline script and talks only to this origin.
        h.insert(
            http::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        );
        resp
    }

    async fn run(
        &self,
        state: Arc<AppState>,
        auth: Result<Principal, Error>,
        request: async_graphql::Request,
        sse: bool,
    ) -> Response<Body> {
        let principal = match auth {
            Ok(p) => p,
            Err(e) => {
                let status = if code_of(&e) == code::UNAUTHENTICATED { StatusCode::UNAUTHORIZED } else { e.status() };
                let message = if e.side() == Side::Internal {
                    "Credentials cannot be checked right now; retry shortly.".to_owned()
                } else {
                    e.to_string()
                };
                return error_response(status, code_of(&e), &message);
            }
        };
        let shutdown = state.shutdown.clone();
        let request = request.data(principal).data(state).data(MonthSpend::default());
        if sse {
            let events = self
                .schema
                .execute_stream(request)
                .take_until(shutdown.cancelled_owned())
                .map(|r| sse_event("next", &serde_json::to_string(&r).unwrap_or_default()))
                .chain(futures_util::stream::once(async { sse_event("complete", "") }))
                .map(|b| Ok::<_, Infallible>(hyper::body::Frame::data(b)));
            let mut resp = Response::new(StreamBody::new(events).boxed_unsync());
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return resp;
        }
        let response = self.schema.execute(request).await;
        json_response(StatusCode::OK, serde_json::to_vec(&response).unwrap_or_default())
    }
}

fn sse_event(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed_unsync()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A GraphQL-shaped error outside execution (credentials, body, method).
fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"message": message, "extensions": {"code": code}}]});
    json_response(status, serde_json::to_vec(&body).unwrap_or_default())
}

async fn read_body(body: Incoming, timeout: std::time::Duration) -> Result<Bytes, Box<Response<Body>>> {
    match tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Err(_) => Err(Box::new(error_response(
            StatusCode::REQUEST_TIMEOUT,
            code::BAD_USER_INPUT,
            "The request body was not received in time.",
        ))),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(Box::new(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::BAD_USER_INPUT,
            &format!("The request body is larger than the {MAX_BODY_BYTES}-byte limit."),
        ))),
        Ok(Err(_)) => Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            code::BAD_USER_INPUT,
            "The request body could not be read.",
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// `query`, `operationName` and `variables` (JSON) from a GET query string.
fn from_query_string(raw: &str) -> Result<async_graphql::Request, String> {
    let mut query = None;
    let mut operation = None;
    let mut variables = None;
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
        match k {
            "query" => query = Some(v),
            "operationName" => operation = Some(v).filter(|o| !o.is_empty()),
            "variables" if !v.is_empty() => {
                let value: serde_json::Value =
                    serde_json::from_str(&v).map_err(|e| format!("`variables` is not JSON: {e}."))?;
                variables = Some(async_graphql::Variables::from_json(value));
            }
            _ => {}
        }
    }
    let mut request = async_graphql::Request::new(query.ok_or("`query` is required.")?);
    if let Some(op) = operation {
        request = request.operation_name(op);
    }
    if let Some(vars) = variables {
        request = request.variables(vars);
    }
    Ok(request)
}

/// Whether the operation a request would run is a mutation (for GET, which must be safe).
/// A document that does not parse is left to the executor, which reports the syntax error.
fn is_mutation(request: &async_graphql::Request) -> bool {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else { return false };
    match &doc.operations {
        DocumentOperations::Single(op) => op.node.ty == OperationType::Mutation,
        DocumentOperations::Multiple(ops) => match &request.operation_name {
            Some(name) => ops.get(name.as_str()).is_some_and(|op| op.node.ty == OperationType::Mutation),
            None => ops.values().any(|op| op.node.ty == OperationType::Mutation),
        },
    }
}
