//! Integration tests: real servers over real HTTP, on SQLite and on PostgreSQL.

mod harness;

mod accounts;
mod cli;
mod dag_util;
mod e2ee_backup;
mod e2ee_client;
mod e2ee_cross_signing;
mod e2ee_device_lists;
mod e2ee_keys;
mod e2ee_to_device;
mod e2ee_util;
mod ephemeral;
mod errors;
mod fed_harness;
mod federation;
mod federation_rooms;
mod hostile_input;
mod push;
mod real_client;
mod room_util;
mod rooms;
mod rooms_access;
mod rooms_dag;
mod rooms_read;
mod rooms_verify;
mod rooms_visibility;
mod storage;
mod synapse;
mod sync;
