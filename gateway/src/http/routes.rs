//! Request dispatch by method and path; assigns the request id every response carries.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{self, Body};
use super::{admin, anthropic, batches, chat, files, models, rescue, usage};
use crate::domain::principal::{metrics_scope, Listener, MetricsScope, Principal};
use crate::services::{self, AppState, Error};

/// `X-API-Key`, the other header a credential may arrive in.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// `x-request-id`: honoured when the client sends a sane one, generated otherwise, always returned.
/// Correlation only: the ledger's identity is a record id the meter generates (issue 11, item 1), so
/// a reused or borrowed id never merges records.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_REQUEST_ID_LEN: usize = 128;

/// The path of the GraphQL front door.
pub const GRAPHQL_PATH: &str = "/graphql";

/// A front door the wiring (`lib.rs`) mounts beside these routes: GraphQL at [`GRAPHQL_PATH`].
/// `http` cannot import it (both are layer 4 front doors), so it arrives as a function of the
/// state, the result of authenticating the request (authentication stays here, once, deny by
/// default; the door renders a failure in its own wire format, and may serve a page that needs no
/// credentials) and the request.
pub type Mount = Arc<
    dyn Fn(Arc<AppState>, Result<Principal, Error>, Request<Incoming>) -> BoxFuture<'static, Response<Body>>
        + Send
        + Sync,
>;

/// The front doors mounted by the wiring; `Default` mounts none (`/graphql` is then a 404).
#[derive(Clone, Default)]
pub struct Mounts {
    /// Serves [`GRAPHQL_PATH`].
    pub graphql: Option<Mount>,
}

/// Entry point for every downstream request.
pub async fn dispatch(
    state: Arc<AppState>,
    mounts: &Mounts,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let request_id = request_id(req.headers().get(&X_REQUEST_ID));
    if req.uri().path() == GRAPHQL_PATH {
        if let Some(door) = &mounts.graphql {
            let auth = state.auth.authenticate(req.headers()).await.map_err(Error::from);
            let mut resp = door(state.clone(), auth, req).await;
            if let Ok(v) = HeaderValue::try_from(request_id) {
                resp.headers_mut().insert(X_REQUEST_ID, v);
            }
            return Ok(resp);
        }
    }
    let anthropic_client = speaks_anthropic(&req);
    let mut resp = route(&state, req, &request_id).await.unwrap_or_else(|e| {
        if anthropic_client {
            rescue::render_anthropic(&e, &request_id)
        } else {
            rescue::render(&e)
        }
    });
    if let Ok(v) = HeaderValue::try_from(request_id) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    Ok(resp)
}

/// The path without the prefixes clients put in their base URL: `/v1`, and `/anthropic/v1` (the
/// Anthropic SDKs and Claude Code pointed at `…/anthropic`).
fn api_path(path: &str) -> &str {
    let path = path.strip_prefix("/anthropic").filter(|p| p.starts_with('/')).unwrap_or(path);
    path.strip_prefix("/v1").filter(|p| p.starts_with('/')).unwrap_or(path)
}

/// Whether errors (authentication included) go out in Anthropic's envelope: the Messages paths, and
/// the shared `GET /v1/models` when the client is an Anthropic one.
fn speaks_anthropic(req: &Request<Incoming>) -> bool {
    match api_path(req.uri().path()) {
        "/messages" | "/messages/count_tokens" => true,
        "/models" => anthropic::is_anthropic_client(req.headers()),
        p => p.starts_with("/models/") && anthropic::is_anthropic_client(req.headers()),
    }
}

async fn route(state: &Arc<AppState>, req: Request<Incoming>, request_id: &str) -> Result<Response<Body>, Error> {
    let path = req.uri().path();
    let api_path = api_path(path);
    // Public paths: probes and metrics. Everything else is authenticated first (deny by default), so
    // a route added later cannot skip it; what the principal may do is each service's decision.
    match (req.method(), api_path) {
        (&Method::GET, "/metrics") if path == "/metrics" => return public_metrics(state, &req).await,
        (&Method::GET, "/healthz") => return Ok(text(StatusCode::OK, "ok\n")),
        (&Method::GET, "/readyz") => return Ok(readiness(state)),
        // Claude Code's connection probe: any fast answer will do.
        (&Method::HEAD, "/") => return Ok(text(StatusCode::OK, "")),
        (_, "/healthz" | "/readyz") => return Err(Error::MethodNotAllowed),
        _ => {}
    }
    // The dashboard authenticates with its own session cookie, not API credentials.
    if path == "/dashboard" || path.starts_with("/dashboard/") {
        if let Some(door) = state.dashboard {
            return Ok(door(Arc::clone(state), req).await);
        }
    }
    let principal = state.auth.authenticate(req.headers()).await?;
    match (req.method(), api_path) {
        (&Method::POST, "/chat/completions") => chat::handle(state, &principal, request_id, req).await,
        (&Method::POST, "/responses") => {
            chat::handle_dialect(state, &principal, request_id, services::chat::Dialect::Responses, req).await
        }
        (&Method::POST, "/completions") => {
            chat::handle_dialect(state, &principal, request_id, services::chat::Dialect::Completions, req).await
        }
        (&Method::POST, "/embeddings") => chat::embeddings(state, &principal, request_id, req).await,
        (&Method::GET | &Method::DELETE, p) if p.starts_with("/responses/") && !p.ends_with("/cancel") => {
            let path = format!("{p}{}", req.uri().query().map(|q| format!("?{q}")).unwrap_or_default());
            chat::stored_response(state, &principal, req.method().clone(), &path).await
        }
        (&Method::POST, p) if p.starts_with("/responses/") && p.ends_with("/cancel") => {
            chat::stored_response(state, &principal, Method::POST, p).await
        }
        (&Method::POST, "/messages") => anthropic::messages(state, &principal, request_id, req).await,
        (&Method::POST, "/messages/count_tokens") => anthropic::count_tokens(state, &principal, req).await,
        (&Method::GET, "/models") if anthropic::is_anthropic_client(req.headers()) => {
            anthropic::list_models(state, &principal, req.uri().query()).await
        }
        (&Method::GET, "/models") => models::list(state, &principal).await,
        (&Method::GET, p) if p.starts_with("/models/") => {
            let tail = p["/models/".len()..].to_owned();
            models::retrieve(state, &principal, &tail).await
        }
        (_, p) if p == "/files" || p.starts_with("/files/") => {
            let tail = p["/files".len()..].to_owned();
            files::handle(state, &principal, &tail, req).await
        }
        (_, p) if p == "/batches" || p.starts_with("/batches/") => {
            let tail = p["/batches".len()..].to_owned();
            batches::handle(state, &principal, &tail, req).await
        }
        (&Method::GET, "/usage") => usage::handle(state, &principal, req.uri().query(), usage::Which::Visible).await,
        (_, _) if path.starts_with("/admin/tenants") || path.starts_with("/admin/keys/") => {
            admin::handle(state, &principal, req).await
        }
        (&Method::GET, "/admin/usage") if path == "/admin/usage" => {
            usage::handle(state, &principal, req.uri().query(), usage::Which::All).await
        }
        (&Method::DELETE, "/admin/usage") if path == "/admin/usage" => {
            usage::prune(state, &principal, req.uri().query()).await
        }
        (
            _,
            "/chat/completions"
            | "/models"
            | "/messages"
            | "/messages/count_tokens"
            | "/responses"
            | "/completions"
            | "/embeddings",
        ) => Err(Error::MethodNotAllowed),
        _ => Err(Error::NotFound(format!("Unknown path `{}`.", truncate(path, 200)).into())),
    }
}

/// Entry point of the operations listener: probes and metrics only, no credentials involved.
pub async fn dispatch_ops(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(&state, metrics_scope(None, Listener::Ops)),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readiness(&state),
        _ => rescue::render(&Error::NotFound("The operations listener serves /metrics, /healthz and /readyz.".into())),
    };
    Ok(resp)
}

/// `/metrics` on the public port: operational metrics for anyone; with credentials, what that
/// principal may see (the admin key: everything). Bad credentials are a 401, not a silent downgrade.
async fn public_metrics(state: &Arc<AppState>, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let h = req.headers();
    let principal = if h.contains_key(AUTHORIZATION) || h.contains_key(X_API_KEY) {
        Some(state.auth.authenticate(h).await?)
    } else {
        None
    };
    Ok(metrics(state, metrics_scope(principal.as_ref(), Listener::Public)))
}

fn metrics(state: &AppState, scope: MetricsScope) -> Response<Body> {
    let Some(text) = services::usage::metrics_text(state, scope) else {
        return text(StatusCode::NOT_FOUND, "metrics disabled\n");
    };
    let mut resp = Response::new(body::full(Bytes::from(text)));
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
    // `req_`, the arrival time in milliseconds (7 base-62 digits, in ASCII order, so ids sort by time)
    // and 17 random alphanumerics: the ledger's `request_id` index is appended to instead of written
    // at random places (issue 17).
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut ms = crate::domain::time::now_unix_ms().unsigned_abs();
    let mut time = [b'0'; 7];
    for d in time.iter_mut().rev() {
        *d = DIGITS[(ms % 62) as usize];
        ms /= 62;
    }
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    id.extend(time.iter().map(|&b| char::from(b)));
    for _ in 0..17 {
        id.push(fastrand::alphanumeric());
    }
    id
}
