//! Parley, a Matrix homeserver.
//!
//! [`Server::start`] runs one homeserver on a listener and returns a [`Handle`]. Nothing is
//! global: several servers can run in one process, as the integration tests do.

pub mod api;
pub mod cli;
pub mod config;
pub mod error;
pub mod json_depth;
mod serve;
pub mod server;
pub mod service;
pub mod storage;
mod tls;

pub use crate::{
    config::Config,
    server::{Handle, Server},
};
