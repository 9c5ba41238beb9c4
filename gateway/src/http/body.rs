//! Response bodies: a boxed body type shared by every handler.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// Every response body the gateway sends. Streams never fail at the body level: failures are in-band events.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A complete body.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}
