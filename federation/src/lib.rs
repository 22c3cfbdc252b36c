//! The Matrix Server-Server protocol pieces Parley needs, kept apart from HTTP serving and
//! storage: the server's signing keys, and hashing, signing and identifying events.
//!
//! Everything here is built on ruma's canonical JSON and `ruma::signatures`; this crate adds
//! the glue Parley wants (key handling, one call to turn an event into a signed PDU) without
//! reimplementing any of the algorithms.

pub mod keys;
pub mod pdu;

pub use self::keys::SigningKey;
