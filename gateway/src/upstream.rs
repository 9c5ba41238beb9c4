//! The upstream side: pooled HTTP clients per provider, request building, circuit breakers, and the
//! errors of talking to a provider. Depends only on `domain`.

pub mod client;
pub mod error;
pub mod health;
pub mod provider;

pub use error::UpstreamError;
