//! What the gateway keeps: files, batches and their queue (`batches`), the usage ledger, tenants and keys, the live price table and the limit
//! counters (local or Redis). Each store speaks in `domain` types; none knows about requests, HTTP or
//! the services above it.

pub mod batches;
pub mod ledger;
pub mod limiter;
pub mod pricing;
pub mod tenants;
