//! The service layer's error: what every service operation can end in, with the lower layers' errors
//! (routing, translation, upstream, authentication, authorization) folded in. Each front door maps it
//! to its wire shape once (`http::rescue` for OpenAI's).

use std::borrow::Cow;

use http::StatusCode;
use translators::TranslateError;

use crate::domain::principal::Denied;
use crate::domain::routing::RouteError;
pub use crate::upstream::UpstreamError;

/// Which side of the gateway is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

/// Credential failures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("Missing API key. Send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.")]
    Missing,
    #[error("Incorrect API key provided.")]
    Invalid,
    #[error("This endpoint needs the admin key.")]
    NotAdmin,
    #[error("This tenant is disabled.")]
    TenantDisabled,
    #[error("The token names a tenant this gateway does not know.")]
    UnknownTenant,
    #[error("Invalid token: {0}.")]
    InvalidToken(&'static str),
    #[error("Credentials cannot be checked right now (tenant store unavailable).")]
    Unavailable,
}

/// Every error a request can end in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    BadRequest { message: Cow<'static, str>, param: Option<Cow<'static, str>>, code: Option<&'static str> },
    #[error("Request body is larger than the {limit}-byte limit.")]
    PayloadTooLarge { limit: u64 },
    #[error("{0}")]
    NotFound(Cow<'static, str>),
    #[error("Method not allowed.")]
    MethodNotAllowed,
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The caller is authenticated but may not do this (`domain::principal`).
    #[error(transparent)]
    Denied(#[from] Denied),
    /// A tenant or key limit refused the request (429).
    #[error("{0}")]
    RateLimited(Box<crate::domain::limits::Rejection>),
    /// An admin change conflicts with what exists (409).
    #[error("{0}")]
    Conflict(Cow<'static, str>),
    /// The tenant store cannot be reached (503).
    #[error("{0}")]
    StoreUnavailable(Cow<'static, str>),
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The routed model has no price and the operator's policy refuses unpriced models (403).
    #[error(
        "The model `{model}` of provider `{provider}` has no price configured, so this gateway will not serve it; \
         the operator must add it to the pricing file (or set `pricing.unpriced: fallback`)."
    )]
    PriceMissing { provider: String, model: String },
    #[error(transparent)]
    Translate(#[from] TranslateError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("The gateway is shutting down.")]
    ShuttingDown,
    #[error("The client closed the connection while sending the request.")]
    ClientDisconnected,
    /// The request body stalled for longer than `server.body_read_timeout_secs` (408; the
    /// connection is closed).
    #[error("The request body was not received in time (no data for {secs} s).")]
    BodyTimeout { secs: u64 },
    #[error("internal error: {0}")]
    Internal(Cow<'static, str>),
}

impl Error {
    /// A 400 with a parameter path.
    pub fn bad_request(message: impl Into<Cow<'static, str>>, param: Option<&'static str>) -> Self {
        Error::BadRequest { message: message.into(), param: param.map(Cow::Borrowed), code: None }
    }

    /// Who is at fault.
    pub fn side(&self) -> Side {
        match self {
            Error::BadRequest { .. }
            | Error::PayloadTooLarge { .. }
            | Error::NotFound(_)
            | Error::MethodNotAllowed
            | Error::Auth(
                AuthError::Missing
                | AuthError::Invalid
                | AuthError::NotAdmin
                | AuthError::TenantDisabled
                | AuthError::UnknownTenant
                | AuthError::InvalidToken(_),
            )
            | Error::Denied(_)
            | Error::RateLimited(_)
            | Error::Conflict(_)
            | Error::Route(_)
            | Error::PriceMissing { .. } => Side::Downstream,
            Error::Auth(AuthError::Unavailable) | Error::StoreUnavailable(_) => Side::Internal,
            Error::Translate(e) => {
                if e.is_client_error() {
                    Side::Downstream
                } else {
                    Side::Upstream
                }
            }
            Error::Upstream(UpstreamError::Status { mapped, .. }) => {
                if matches!(mapped.status, 400 | 404 | 409 | 413 | 422) {
                    Side::Downstream
                } else {
                    Side::Upstream
                }
            }
            Error::Upstream(_) => Side::Upstream,
            Error::ClientDisconnected | Error::BodyTimeout { .. } => Side::Downstream,
            Error::ShuttingDown | Error::Internal(_) => Side::Internal,
        }
    }

    /// The HTTP status sent downstream.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Auth(
                AuthError::Missing
                | AuthError::Invalid
                | AuthError::NotAdmin
                | AuthError::TenantDisabled
                | AuthError::UnknownTenant
                | AuthError::InvalidToken(_),
            ) => StatusCode::UNAUTHORIZED,
            Error::Auth(AuthError::Unavailable) | Error::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // 401 as before the principal model: the admin key and tenant keys are different credentials.
            Error::Denied(Denied::AdminOnly | Denied::NotATenant | Denied::JobNeedsTenant) => StatusCode::UNAUTHORIZED,
            // Another tenant's resources do not exist for this caller.
            Error::Denied(Denied::OtherTenant) => StatusCode::NOT_FOUND,
            Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Route(RouteError::UnknownModel(_)) => StatusCode::NOT_FOUND,
            Error::Route(RouteError::EmptyModel) => StatusCode::BAD_REQUEST,
            // 404 like an unknown model (SDKs do not retry it), with its own code and the fix in the message.
            Error::Route(RouteError::ProviderNotEnabled { .. }) => StatusCode::NOT_FOUND,
            // Like OpenAI's "no access to this model": a 4xx SDKs do not retry; the operator must act.
            Error::PriceMissing { .. } => StatusCode::FORBIDDEN,
            Error::Translate(e) => {
                if e.is_client_error() {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::BAD_GATEWAY
                }
            }
            Error::Upstream(UpstreamError::Connect | UpstreamError::Transport | UpstreamError::Protocol(_)) => {
                StatusCode::BAD_GATEWAY
            }
            Error::Upstream(UpstreamError::FirstByteTimeout) => StatusCode::GATEWAY_TIMEOUT,
            Error::Upstream(UpstreamError::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Upstream(UpstreamError::Status { mapped, .. }) => {
                StatusCode::from_u16(mapped.status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            // nginx's "client closed request": nobody reads it, but logs and metrics see why.
            Error::ClientDisconnected => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Error::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's error `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Auth(AuthError::Unavailable) => "server_error",
            Error::Auth(_) | Error::Denied(Denied::AdminOnly | Denied::NotATenant | Denied::JobNeedsTenant) => {
                "authentication_error"
            }
            Error::RateLimited(r) => r.error_type(),
            _ => match self.side() {
                Side::Downstream => "invalid_request_error",
                Side::Upstream | Side::Internal => "server_error",
            },
        }
    }

    /// OpenAI's error `code`.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Error::BadRequest { code, .. } => *code,
            Error::PayloadTooLarge { .. } => Some("request_too_large"),
            Error::NotFound(_) => Some("not_found"),
            Error::MethodNotAllowed => Some("method_not_allowed"),
            Error::Auth(AuthError::Missing) => Some("missing_api_key"),
            Error::Auth(AuthError::Invalid | AuthError::NotAdmin) => Some("invalid_api_key"),
            Error::Auth(AuthError::TenantDisabled) => Some("tenant_disabled"),
            Error::Auth(AuthError::UnknownTenant) => Some("unknown_tenant"),
            Error::Auth(AuthError::InvalidToken(_)) => Some("invalid_token"),
            Error::Auth(AuthError::Unavailable) | Error::StoreUnavailable(_) => Some("store_unavailable"),
            Error::Denied(Denied::AdminOnly | Denied::NotATenant | Denied::JobNeedsTenant) => Some("invalid_api_key"),
            Error::Denied(Denied::OtherTenant) => Some("not_found"),
            Error::RateLimited(r) => Some(r.code()),
            Error::Conflict(_) => Some("conflict"),
            Error::Route(RouteError::UnknownModel(_)) => Some("model_not_found"),
            Error::Route(RouteError::EmptyModel) => Some("invalid_value"),
            Error::Route(RouteError::ProviderNotEnabled { .. }) => Some("provider_not_enabled"),
            Error::PriceMissing { .. } => Some("model_price_missing"),
            Error::Translate(e) => Some(e.code()),
            Error::Upstream(UpstreamError::Connect) => Some("upstream_unreachable"),
            Error::Upstream(UpstreamError::FirstByteTimeout) => Some("timeout"),
            Error::Upstream(UpstreamError::Unavailable) => Some("upstream_unavailable"),
            Error::Upstream(UpstreamError::Transport | UpstreamError::Protocol(_)) => Some("upstream_error"),
            Error::Upstream(UpstreamError::Status { .. }) => None,
            Error::ClientDisconnected => Some("client_disconnected"),
            Error::BodyTimeout { .. } => Some("request_timeout"),
            Error::ShuttingDown => Some("shutting_down"),
            Error::Internal(_) => None,
        }
    }

    /// OpenAI's error `param`.
    pub fn param(&self) -> Option<&str> {
        match self {
            Error::BadRequest { param, .. } => param.as_deref(),
            Error::Route(_) | Error::PriceMissing { .. } => Some("model"),
            Error::Translate(e) => e.param(),
            _ => None,
        }
    }

    /// True when the failure says the deployment (and model) is unhealthy, so it counts toward its circuit
    /// breaker: connect errors, timeouts, broken connections and protocols, and 5xx/529 from the deployment.
    /// Client errors (an upstream 400/404/413/422, our own 4xx), upstream rate limits and credential
    /// refusals do not: one tenant's bad requests must not open the circuit for every tenant (issue 11,
    /// item 6).
    pub fn is_deployment_failure(&self) -> bool {
        match self {
            Error::Upstream(
                UpstreamError::Connect
                | UpstreamError::FirstByteTimeout
                | UpstreamError::Transport
                | UpstreamError::Protocol(_),
            ) => true,
            Error::Upstream(UpstreamError::Status { upstream_status, .. }) => *upstream_status >= 500,
            Error::Upstream(UpstreamError::Unavailable)
            | Error::BadRequest { .. }
            | Error::PayloadTooLarge { .. }
            | Error::NotFound(_)
            | Error::MethodNotAllowed
            | Error::Auth(_)
            | Error::Denied(_)
            | Error::RateLimited(_)
            | Error::Conflict(_)
            | Error::StoreUnavailable(_)
            | Error::Route(_)
            | Error::PriceMissing { .. }
            | Error::Translate(_)
            | Error::ShuttingDown
            | Error::ClientDisconnected
            | Error::BodyTimeout { .. }
            | Error::Internal(_) => false,
        }
    }

    /// True for a transient overload answered before any byte: the deployment said 503 or 529 (or an
    /// in-band `overloaded` error before any content, mapped to 503). Retried by the default policy.
    pub fn is_overload(&self) -> bool {
        matches!(self, Error::Upstream(UpstreamError::Status { mapped, upstream_status, .. })
            if matches!(*upstream_status, 503 | 529) || mapped.status == 503)
    }

    /// True when a retry against the same or another upstream could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Upstream(UpstreamError::Connect | UpstreamError::FirstByteTimeout | UpstreamError::Unavailable) => {
                true
            }
            Error::Upstream(UpstreamError::Status { mapped, .. }) => {
                matches!(mapped.status, 429 | 502 | 503 | 504)
            }
            // A connection that failed before any byte reached the client can be retried; an upstream that
            // breaks its protocol would do so again.
            Error::Upstream(UpstreamError::Transport) => true,
            Error::Upstream(UpstreamError::Protocol(_)) => false,
            Error::RateLimited(r) => r.kind != crate::domain::limits::LimitKind::Budget,
            Error::StoreUnavailable(_) => true,
            Error::BadRequest { .. }
            | Error::Conflict(_)
            | Error::PayloadTooLarge { .. }
            | Error::NotFound(_)
            | Error::MethodNotAllowed
            | Error::Auth(_)
            | Error::Denied(_)
            | Error::Route(_)
            | Error::PriceMissing { .. }
            | Error::Translate(_)
            | Error::ShuttingDown
            | Error::ClientDisconnected
            | Error::BodyTimeout { .. }
            | Error::Internal(_) => false,
        }
    }

    /// A short, closed-set label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::BadRequest { .. } => "bad_request",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Auth(AuthError::Unavailable) | Error::StoreUnavailable(_) => "store_unavailable",
            Error::Auth(_) => "unauthorized",
            Error::Denied(_) => "forbidden",
            Error::RateLimited(_) => "rate_limited",
            Error::Conflict(_) => "conflict",
            Error::Route(_) => "model_not_found",
            Error::PriceMissing { .. } => "price_missing",
            Error::Translate(e) if e.is_client_error() => "translate_request",
            Error::Translate(_) => "translate_response",
            Error::Upstream(UpstreamError::Connect) => "upstream_connect",
            Error::Upstream(UpstreamError::FirstByteTimeout) => "upstream_timeout",
            Error::Upstream(UpstreamError::Unavailable) => "circuit_open",
            Error::Upstream(UpstreamError::Transport) => "upstream_transport",
            Error::Upstream(UpstreamError::Status { .. }) => "upstream_status",
            Error::Upstream(UpstreamError::Protocol(_)) => "upstream_protocol",
            Error::ClientDisconnected => "client_disconnected",
            Error::BodyTimeout { .. } => "body_timeout",
            Error::ShuttingDown => "shutting_down",
            Error::Internal(_) => "internal",
        }
    }
}
