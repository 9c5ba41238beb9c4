//! The operations every front door performs, each taking a [`Principal`](crate::domain::principal::Principal)
//! and plain arguments and checking it through `domain::principal` before touching a store:
//!
//! | module | operations |
//! |---|---|
//! | `auth` | credentials → `Principal` (authentication; authorization is in `domain::principal`) |
//! | `chat` | chat execution: admit → route → attempt → translate → meter |
//! | `tenants` | tenants (admin) and keys (admin, or a tenant for its own) |
//! | `usage` | usage totals from the ledger, scoped to what the caller may see |
//! | `models` | the live model catalog (with prices and breaker health) |
//! | `account` | `me`: who the caller is, its limits and spend this month |
//! | `pricing` | the price table in effect |
//! | `sessions` | dashboard sign-in: browser sessions over `auth`, CSRF tokens, the sign-in limiter |
//! | `files` | the Files API, tenant-scoped |
//! | `batches` | the Batch API, tenant-scoped, and the steps of its local execution; watching a batch |
//! | `jobs` | jobs: one model request run in the background as a one-line batch, tenant-scoped; states, results, watching |
//!
//! `metering`, `sink` and `stream` are the chat service's parts: one record per request, priced and
//! handed to the ledger; the translating stream body. `error` is this layer's one error type.

pub mod account;
pub mod auth;
pub mod batches;
pub mod chat;
pub mod embeddings;
pub mod error;
pub mod files;
pub mod jobs;
pub mod metering;
pub mod models;
pub mod pricing;
pub mod sessions;
pub mod sink;
pub mod state;
pub mod stream;
pub mod tenants;
pub mod usage;

pub use error::Error;
pub use state::AppState;

#[cfg(test)]
mod tests;
