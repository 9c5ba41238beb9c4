//! The bottom layer: validated configuration, identities and the authorization model, limits, money,
//! prices, routing rules and time. Plain data and pure functions: no I/O (the one clock read is
//! `time::now_unix_ms`), and nothing from any layer above.

pub mod config;
pub mod limits;
pub mod money;
pub mod pricing;
pub mod principal;
pub mod routing;
pub mod text;
pub mod time;
