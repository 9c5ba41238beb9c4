//! Shared harness for the integration tests: mock upstreams and a gateway bound to 127.0.0.1:0.
//!
//! - [`mock`]: in-process hyper mock upstreams speaking the OpenAI, Anthropic and Ollama wire formats,
//!   with scripted replies, delivery faults and request recording.
//! - [`harness`]: [`harness::GatewayUnderTest`] runs `gateway::serve` on a loopback port; config builders.
//! - [`client`]: a hyper-util client for JSON and SSE exchanges with deadlines.
//! - [`schema`]: checks of gateway output against the OpenAI shapes the SDKs rely on.

pub mod client;
pub mod faults;
pub mod harness;
pub mod mock;
pub mod schema;
pub mod summary;
