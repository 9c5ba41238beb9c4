//! The OpenAI and admin REST front door: the accept loop, dispatch by method and path,
//! authentication (once per request, deny by default), one handler per endpoint over the services,
//! and the one place errors become OpenAI-shaped responses (`rescue`).

pub mod admin;
pub mod anthropic;
pub mod batches;
pub mod body;
pub mod chat;
pub mod files;
pub mod models;
pub mod rescue;
pub mod routes;
pub mod server;
pub mod usage;
