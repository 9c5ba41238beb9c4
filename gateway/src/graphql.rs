//! The GraphQL front door at `/graphql` (issue 15): queries, mutations and subscriptions over the
//! same services as the REST API, so the two cannot disagree.
//!
//! - `schema`: the types and resolvers. Every resolver takes the request's
//!   [`Principal`](crate::domain::principal::Principal) from the context and calls one service
//!   operation with it; permission rules live in `domain::principal` and the services, never here.
//! - `jobs`: jobs, batches and files (queries, `createJob`/`cancelJob`/`cancelBatch`, and the
//!   `jobUpdated`/`batchUpdated` subscriptions), over `services::{jobs, batches, files}`.
//! - `errors`: `services::Error` → a GraphQL error with `extensions.code` (`UNAUTHENTICATED`,
//!   `FORBIDDEN`, `NOT_FOUND`, `BAD_USER_INPUT`, `RATE_LIMITED`, `INTERNAL`), once.
//! - `transport`: GraphQL over our hyper server: `POST` JSON, `GET` with query parameters (queries
//!   only), subscriptions over graphql-sse (distinct connections mode: `Accept: text/event-stream`),
//!   and the playground page (`GET` with `Accept: text/html`, only when enabled).
//!
//! Safety: the schema refuses queries deeper than `graphql.max_depth` or more complex than
//! `graphql.max_complexity` (connections count their page size), pages hold at most 100 items,
//! bodies are capped at [`transport::MAX_BODY_BYTES`], and per-tenant fields of lists are read with
//! one query per request (`schema::MonthSpend`), not one per item; a page of jobs reads its results
//! in one query, a page of batches its live counts in one query.
//!
//! This module imports only from the services and the domain (layer 4, beside `http`, which
//! it does not import: the wiring mounts it into the REST dispatch).

pub mod errors;
pub mod jobs;
pub mod schema;
pub mod transport;

pub use schema::{build_schema, GatewaySchema};
pub use transport::Door;

#[cfg(test)]
mod tests;
