//! The Matrix Server-Server protocol pieces Parley needs, kept apart from HTTP serving and
//! storage: the server's signing keys, hashing, signing and identifying events, server
//! discovery, the signed federation client, and fetching and verifying other servers' keys.
//!
//! Everything here is built on ruma's canonical JSON and `ruma::signatures`; this crate adds
//! the glue Parley wants without reimplementing any of the algorithms.
//!
//! No axum and no sqlx: where the crate needs storage (remote keys) it defines a trait
//! ([`keys::KeyCache`]) that the server implements. Nothing is global either: a
//! [`discovery::Resolver`], a [`client::FederationClient`] and a [`keys::KeyFetcher`] belong to
//! one homeserver, so several can run in one process.

mod cache;
pub mod client;
mod connect;
pub mod discovery;
pub mod ip_filter;
pub mod keys;
pub mod pdu;
pub mod tls;

pub use self::{ip_filter::IpFilter, keys::SigningKey};
