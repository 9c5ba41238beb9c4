//! The downstream HTTP side: server loop, request routing, handlers, error rendering.

pub mod body;
pub mod chat;
pub mod models;
pub mod rescue;
pub mod routes;
pub mod server;
pub mod stream;
pub mod usage;
