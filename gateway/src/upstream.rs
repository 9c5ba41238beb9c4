//! The upstream side: pooled HTTP clients per provider and the request/response plumbing.

pub mod client;
pub mod health;
pub mod provider;
