//! The HTTP API: routing, extraction, and the handlers.

pub mod client;
pub mod extract;
pub mod router;
pub mod server;
