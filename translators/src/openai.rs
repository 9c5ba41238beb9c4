//! OpenAI chat-completions types: the canonical (hub) format of the gateway.
//!
//! Request types are tolerant (unknown fields are captured in `extra`, never rejected) because SDKs add
//! fields faster than we ship. Response types serialize exactly the shapes the official SDKs expect.

pub mod aggregate;
pub mod passthrough;
mod request;
mod response;
pub mod sse_out;

pub use request::*;
pub use response::*;
