//! The PostgreSQL backend: one pool; PostgreSQL's MVCC lets writers run concurrently.
//!
//! Most areas' SQL lives once in `storage/sql/` and is compiled here against this module's
//! `Db`, `Pools` and `dialect` (and again in `sqlite/` against SQLite's); only what the two
//! databases say differently is in `dialect`.

mod dialect;

// The same files are compiled as modules of `sqlite/` too, against SQLite's `Db`, `Pools`
// and `dialect`: that is the point (each statement written once), so clippy's warning about a
// file loaded twice does not apply.
#[allow(clippy::duplicate_mod)]
#[path = "../sql/account_data.rs"]
mod account_data;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/assemble.rs"]
mod assemble;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/backup.rs"]
mod backup;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/devices.rs"]
mod devices;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/events.rs"]
mod events;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/federation.rs"]
mod federation;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/filters.rs"]
mod filters;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/keys.rs"]
mod keys;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/push.rs"]
mod push;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/receipts.rs"]
mod receipts;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/registration.rs"]
mod registration;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/rooms.rs"]
mod rooms;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/server_keys.rs"]
mod server_keys;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/state.rs"]
mod state;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/to_device.rs"]
mod to_device;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/users.rs"]
mod users;

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

use super::{Backend, Storage};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The database the shared SQL in `storage/sql/` runs on here.
pub(super) type Db = sqlx::Postgres;

/// The pool of one PostgreSQL database: readers and writers share it.
#[derive(Clone, Debug)]
pub(super) struct Pools {
    pub pool: PgPool,
}

impl Pools {
    /// Where writes go.
    pub fn writer(&self) -> &sqlx::Pool<Db> {
        &self.pool
    }

    /// Where reads go: the same pool.
    pub fn reader(&self) -> &sqlx::Pool<Db> {
        &self.pool
    }
}

pub(super) async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Storage> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await?;
    MIGRATOR.run(&pool).await?;
    let db = Pools { pool };
    Ok(assemble::storage(Backend::Postgres, db))
}
