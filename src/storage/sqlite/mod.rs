//! The embedded SQLite backend.
//!
//! Single-writer contract: every write goes through `writer`, a pool of exactly one
//! connection, so writes are serialized in-process and never meet SQLITE_BUSY from each
//! other. Reads go through `reader`, a pool of read-only connections, which WAL mode lets run
//! alongside the writer. `synchronous = FULL` makes every acknowledged commit survive a
//! power loss, not only a process crash.
//!
//! Most areas' SQL lives once in `storage/sql/` and is compiled here against this module's
//! `Db`, `Pools` and `dialect` (and again in `postgres/` against PostgreSQL's); only what the
//! two databases say differently is in `dialect`.

mod dialect;

// The same files are compiled as modules of `postgres/` too, against PostgreSQL's `Db`,
// `Pools` and `dialect`: that is the point (each statement written once), so clippy's warning
// about a file loaded twice does not apply.
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

use std::{str::FromStr, time::Duration};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{Backend, Storage};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The database the shared SQL in `storage/sql/` runs on here.
pub(super) type Db = sqlx::Sqlite;

/// The two pools of one SQLite database.
#[derive(Clone, Debug)]
pub(super) struct Pools {
    pub writer: SqlitePool,
    pub reader: SqlitePool,
}

impl Pools {
    /// The single writer connection: every write queues here.
    pub fn writer(&self) -> &sqlx::Pool<Db> {
        &self.writer
    }

    /// The read-only connections.
    pub fn reader(&self) -> &sqlx::Pool<Db> {
        &self.reader
    }
}

pub(super) async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Storage> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true)
        // Reads through a memory map instead of a read() per page: every write invalidates the
        // other connections' page caches, so readers fetch pages often (measured: half of a
        // busy server's CPU went to those copies and their system calls). Linux counts a
        // mapped page in RSS once per mapping, and each connection maps the file, so the map
        // covers the first 64 MiB only: that bounds the (shared, reclaimable) page-cache share
        // of RSS at connections x 64 MiB; beyond it SQLite reads as usual. See
        // docs/benchmarks.md, "Peak RSS".
        .pragma("mmap_size", "67108864");
    let writer = SqlitePoolOptions::new().max_connections(1).min_connections(1).connect_with(options.clone()).await?;
    MIGRATOR.run(&writer).await?;
    let reader =
        SqlitePoolOptions::new().max_connections(max_connections).connect_with(options.read_only(true)).await?;
    let db = Pools { writer, reader };
    Ok(assemble::storage(Backend::Sqlite, db))
}
