//! Integration tests: real servers over real HTTP, on SQLite and on PostgreSQL.

mod harness;

mod accounts;
mod cli;
mod ephemeral;
mod errors;
mod push;
mod real_client;
mod room_util;
mod rooms;
mod rooms_access;
mod rooms_read;
mod rooms_verify;
mod rooms_visibility;
mod storage;
mod sync;
