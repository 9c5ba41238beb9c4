//! The one mapping from the services' error to GraphQL's: a message safe to show and
//! `extensions.code`. Internal failures are logged here and answered with a generic message.

use async_graphql::ErrorExtensions;

use crate::domain::principal::Denied;
use crate::services::error::{AuthError, Side};
use crate::services::Error;

/// Codes a client can branch on, in `extensions.code`.
pub mod code {
    /// No or bad credentials.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// Authenticated, but this principal may not do that (e.g. a tenant key on an admin operation).
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// No such object, or one the caller may not see (another tenant's is indistinguishable).
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// Invalid arguments, a conflict with what exists, a too large page or body.
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    /// A tenant or key limit.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The gateway or a provider failed; retry later.
    pub const INTERNAL: &str = "INTERNAL";
}

/// The `extensions.code` of a service error.
pub fn code_of(error: &Error) -> &'static str {
    match error {
        Error::Auth(AuthError::NotAdmin)
        | Error::Denied(Denied::AdminOnly | Denied::NotATenant | Denied::JobNeedsTenant) => code::FORBIDDEN,
        Error::Auth(AuthError::Unavailable) => code::INTERNAL,
        Error::Auth(_) => code::UNAUTHENTICATED,
        Error::Denied(Denied::OtherTenant) | Error::NotFound(_) => code::NOT_FOUND,
        Error::Route(crate::domain::routing::RouteError::UnknownModel(_))
        | Error::Route(crate::domain::routing::RouteError::ProviderNotEnabled { .. }) => code::NOT_FOUND,
        Error::PriceMissing { .. } => code::FORBIDDEN,
        Error::RateLimited(_) => code::RATE_LIMITED,
        other => match other.side() {
            Side::Downstream => code::BAD_USER_INPUT,
            Side::Upstream | Side::Internal => code::INTERNAL,
        },
    }
}

/// A GraphQL error for `error`: its message when the caller is at fault (or a provider, whose
/// message the REST API shows too), a generic one for internal failures (logged here, once).
pub fn to_graphql(error: Error) -> async_graphql::Error {
    let code = code_of(&error);
    let message = match error.side() {
        Side::Internal => {
            tracing::warn!(error = %error, "GraphQL operation failed");
            match &error {
                Error::StoreUnavailable(m) => m.to_string(),
                Error::ShuttingDown => error.to_string(),
                _ => "Internal error; retry later.".to_owned(),
            }
        }
        Side::Downstream | Side::Upstream => error.to_string(),
    };
    let reason = error.code();
    let retry_after = match &error {
        Error::RateLimited(r) => Some(r.retry_after_secs()),
        _ => None,
    };
    let param = error.param().map(str::to_owned);
    async_graphql::Error::new(message).extend_with(|_, e| {
        e.set("code", code);
        if let Some(reason) = reason {
            e.set("reason", reason);
        }
        if let Some(param) = &param {
            e.set("param", param.as_str());
        }
        if let Some(secs) = retry_after {
            e.set("retryAfterSeconds", secs);
        }
    })
}

/// A `BAD_USER_INPUT` error with `message`.
pub fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code::BAD_USER_INPUT))
}
