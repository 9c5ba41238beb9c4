//! Failures talking to an upstream, before the service layer folds them into its error.

use std::borrow::Cow;

use http::HeaderValue;
use translators::error::MappedError;

/// Failures talking to an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to the upstream")]
    Connect,
    #[error("the upstream did not answer in time")]
    FirstByteTimeout,
    #[error("the upstream connection failed")]
    Transport,
    /// A non-2xx answer (or an in-band error before any content), mapped for the client.
    #[error("{}", .mapped.body.message)]
    Status {
        mapped: MappedError,
        /// The status the deployment itself answered (529, 401, …), before mapping; for an in-band error,
        /// the status it maps to. Circuit breakers read this, not the client's status.
        upstream_status: u16,
        retry_after: Option<HeaderValue>,
        upstream_request_id: Option<HeaderValue>,
        /// An Anthropic provider's own status and error body, for Anthropic clients: Claude Code's
        /// recovery matches on Anthropic's exact wording, so it is relayed verbatim to them (not for
        /// 401/403, which are about the gateway's key, not the client's).
        anthropic_verbatim: Option<(u16, bytes::Bytes)>,
    },
    #[error("upstream protocol error: {0}")]
    Protocol(Cow<'static, str>),
    #[error("every upstream for this model is unavailable (circuit open); retry shortly")]
    Unavailable,
}

impl UpstreamError {
    /// Classifies a hyper-util client error.
    pub fn from_client(e: &hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            UpstreamError::Connect
        } else {
            UpstreamError::Transport
        }
    }
}
