//! The embedded SQLite backend.
//!
//! Single-writer contract: every write goes through `writer`, a pool of exactly one
//! connection, so writes are serialized in-process and never meet SQLITE_BUSY from each
//! other. Reads go through `reader`, a pool of read-only connections, which WAL mode lets run
//! alongside the writer. `synchronous = FULL` makes every acknowledged commit survive a
//! power loss, not only a process crash.

mod account_data;
mod backup;
mod devices;
mod dialect;
// Statements both backends run live once, in storage/sql/, and are compiled for each backend
// against its own `Db`, `DbPools` and `dialect`: the code is shared, the types stay concrete.
#[allow(clippy::duplicate_mod)]
#[path = "../sql/events.rs"]
mod events;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/federation.rs"]
mod federation;
mod filters;
mod keys;
mod push;
mod receipts;
mod registration;
mod rooms;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/server_keys.rs"]
mod server_keys;
#[allow(clippy::duplicate_mod)]
#[path = "../sql/state.rs"]
mod state;
mod to_device;
mod users;

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{Backend, Closer, Storage};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The two pools of one SQLite database.
#[derive(Clone, Debug)]
pub(super) struct SqliteDb {
    pub writer: SqlitePool,
    pub reader: SqlitePool,
}

/// The database the shared statements (storage/sql/) run on.
type Db = sqlx::Sqlite;
type DbPools = SqliteDb;

impl SqliteDb {
    /// The single writer connection (see the module comment).
    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    fn reader(&self) -> &SqlitePool {
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
    let db = SqliteDb { writer, reader };
    Ok(Storage {
        backend: Backend::Sqlite,
        users: Arc::new(users::SqliteUsers(db.clone())),
        devices: Arc::new(devices::SqliteDevices(db.clone())),
        account_data: Arc::new(account_data::SqliteAccountData(db.clone())),
        registration: Arc::new(registration::SqliteRegistration(db.clone())),
        rooms: Arc::new(rooms::SqliteRooms(db.clone())),
        events: Arc::new(events::SqlEvents(db.clone())),
        state: Arc::new(state::SqlState(db.clone())),
        server_keys: Arc::new(server_keys::SqlServerKeys(db.clone())),
        federation: Arc::new(federation::SqlFederation(db.clone())),
        filters: Arc::new(filters::SqliteFilters(db.clone())),
        receipts: Arc::new(receipts::SqliteReceipts(db.clone())),
        presence: Arc::new(receipts::SqliteReceipts(db.clone())),
        push: Arc::new(push::SqlitePush(db.clone())),
        keys: Arc::new(keys::SqliteKeys(db.clone())),
        to_device: Arc::new(to_device::SqliteToDevice(db.clone())),
        backup: Arc::new(backup::SqliteBackup(db.clone())),
        closer: Arc::new(db),
    })
}

#[async_trait::async_trait]
impl Closer for SqliteDb {
    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
