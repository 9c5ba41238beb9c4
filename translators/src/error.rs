//! The one error type of the translators. It knows nothing about HTTP: the gateway maps it once.

use std::borrow::Cow;

/// Why a translation failed.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The client's request is malformed or self-contradictory (→ 400 `invalid_request_error`).
    #[error("{message}")]
    InvalidRequest {
        message: Cow<'static, str>,
        /// JSON path of the offending field, e.g. `messages[3].content`.
        param: Option<Cow<'static, str>>,
    },
    /// The request asks for something the target provider cannot do (→ 400 `unsupported_parameter`).
    #[error("{message}")]
    Unsupported { message: Cow<'static, str>, param: Option<Cow<'static, str>> },
    /// Upstream bytes that are not valid JSON where JSON was expected.
    #[error("invalid JSON from upstream at {at}: {source}")]
    Json {
        at: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Upstream broke its own protocol (missing fields, events out of order, oversized event).
    #[error("upstream protocol error: {0}")]
    Protocol(Cow<'static, str>),
}

impl TranslateError {
    /// A client-side error with a parameter path.
    pub fn invalid(message: impl Into<Cow<'static, str>>, param: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidRequest { message: message.into(), param: Some(param.into()) }
    }

    /// An unsupported-parameter error with a parameter path.
    pub fn unsupported(message: impl Into<Cow<'static, str>>, param: impl Into<Cow<'static, str>>) -> Self {
        Self::Unsupported { message: message.into(), param: Some(param.into()) }
    }

    /// True when the fault lies with the client's request rather than with the upstream.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::InvalidRequest { .. } | Self::Unsupported { .. })
    }

    /// The `param` of the OpenAI error envelope, when there is one.
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } | Self::Unsupported { param, .. } => param.as_deref(),
            Self::Json { .. } | Self::Protocol(_) => None,
        }
    }

    /// The `code` of the OpenAI error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_value",
            Self::Unsupported { .. } => "unsupported_parameter",
            Self::Json { .. } | Self::Protocol(_) => "upstream_error",
        }
    }
}

/// An upstream HTTP error response translated into what the client receives.
///
/// Status policy shared by all providers: an upstream 401/403 about *our* provider key becomes 502 (the
/// client's key is fine), 429 stays 429, Anthropic's non-standard 529 becomes 503, other 5xx become 502
/// (504 stays 504), and client-caused 4xx (400, 404, 413, 422) keep their status.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedError {
    /// HTTP status to send downstream.
    pub status: u16,
    /// The OpenAI error body to send.
    pub body: crate::openai::ErrorBody,
}
