//! Request dispatch by method and path; assigns the request id every response carries.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{self, Body};
use super::{admin, chat, models, rescue, usage};
use crate::services::{AppState, Error};

/// `x-request-id`: honoured when the client sends a sane one, generated otherwise, always returned.
/// Correlation only: the ledger's identity is a record id the meter generates (issue 11, item 1), so
/// a reused or borrowed id never merges records.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_REQUEST_ID_LEN: usize = 128;

/// Entry point for every downstream request.
pub async fn dispatch(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let request_id = request_id(req.headers().get(&X_REQUEST_ID));
    let mut resp = route(&state, req, &request_id).await.unwrap_or_else(|e| rescue::render(&e));
    if let Ok(v) = HeaderValue::try_from(request_id) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    Ok(resp)
}

async fn route(state: &Arc<AppState>, req: Request<Incoming>, request_id: &str) -> Result<Response<Body>, Error> {
    let path = req.uri().path();
    // Accept both `/v1/...` and bare paths: some clients set a base URL without `/v1`.
    let api_path = path.strip_prefix("/v1").filter(|p| p.starts_with('/')).unwrap_or(path);
    // Public paths: probes and metrics. Everything else is authenticated first (deny by default), so
    // a route added later cannot skip it; what the principal may do is each service's decision.
    match (req.method(), api_path) {
        (&Method::GET, "/metrics") if path == "/metrics" => return Ok(metrics(state)),
        (&Method::GET, "/healthz") => return Ok(text(StatusCode::OK, "ok\n")),
        (&Method::GET, "/readyz") => return Ok(readiness(state)),
        (_, "/healthz" | "/readyz") => return Err(Error::MethodNotAllowed),
        _ => {}
    }
    let principal = state.auth.authenticate(req.headers()).await?;
    match (req.method(), api_path) {
        (&Method::POST, "/chat/completions") => chat::handle(state, &principal, request_id, req).await,
        (&Method::GET, "/models") => models::list(state, &principal).await,
        (&Method::GET, p) if p.starts_with("/models/") => {
            let tail = p["/models/".len()..].to_owned();
            models::retrieve(state, &principal, &tail).await
        }
        (&Method::GET, "/usage") => usage::handle(state, &principal, req.uri().query(), usage::Which::Visible).await,
        (_, _) if path.starts_with("/admin/tenants") || path.starts_with("/admin/keys/") => {
            admin::handle(state, &principal, req).await
        }
        (&Method::GET, "/admin/usage") if path == "/admin/usage" => {
            usage::handle(state, &principal, req.uri().query(), usage::Which::All).await
        }
        (_, "/chat/completions" | "/models") => Err(Error::MethodNotAllowed),
        _ => Err(Error::NotFound(format!("Unknown path `{}`.", truncate(path, 200)).into())),
    }
}

/// Entry point of the operations listener: probes and metrics only, no credentials involved.
pub async fn dispatch_ops(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(&state),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readiness(&state),
        _ => rescue::render(&Error::NotFound("The operations listener serves /metrics, /healthz and /readyz.".into())),
    };
    Ok(resp)
}

fn metrics(state: &AppState) -> Response<Body> {
    let Some(sink) = &state.sink else {
        return text(StatusCode::NOT_FOUND, "metrics disabled\n");
    };
    let stats = sink.ledger().map(|l| l.stats());
    let mut resp = Response::new(body::full(Bytes::from(sink.metrics().render(stats.as_ref()))));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

fn readiness(state: &AppState) -> Response<Body> {
    if state.shutdown.is_cancelled() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    if state.upstreams.is_empty() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "no provider enabled\n");
    }
    if let Some(ledger) = state.sink.as_ref().and_then(|s| s.ledger()) {
        if !ledger.is_writable() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "ledger neither writable nor journaling\n");
        }
    }
    text(StatusCode::OK, "ready\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn request_id(incoming: Option<&HeaderValue>) -> String {
    if let Some(v) = incoming.and_then(|v| v.to_str().ok()) {
        if !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN && v.bytes().all(|b| b.is_ascii_graphic()) {
            return v.to_owned();
        }
    }
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    for _ in 0..24 {
        id.push(fastrand::alphanumeric());
    }
    id
}
