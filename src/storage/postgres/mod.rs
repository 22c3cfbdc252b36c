//! The PostgreSQL backend: one pool; PostgreSQL's MVCC lets writers run concurrently.

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

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgPoolOptions};

use super::{Backend, Closer, Storage};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub(super) struct PgDb {
    pub pool: PgPool,
}

/// The database the shared statements (storage/sql/) run on.
type Db = sqlx::Postgres;
type DbPools = PgDb;

impl PgDb {
    /// Where writes go: PostgreSQL's MVCC lets them share the one pool with reads.
    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
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
    let db = PgDb { pool };
    Ok(Storage {
        backend: Backend::Postgres,
        users: Arc::new(users::PgUsers(db.clone())),
        devices: Arc::new(devices::PgDevices(db.clone())),
        account_data: Arc::new(account_data::PgAccountData(db.clone())),
        registration: Arc::new(registration::PgRegistration(db.clone())),
        rooms: Arc::new(rooms::PgRooms(db.clone())),
        events: Arc::new(events::SqlEvents(db.clone())),
        state: Arc::new(state::SqlState(db.clone())),
        server_keys: Arc::new(server_keys::SqlServerKeys(db.clone())),
        federation: Arc::new(federation::SqlFederation(db.clone())),
        filters: Arc::new(filters::PgFilters(db.clone())),
        receipts: Arc::new(receipts::PgReceipts(db.clone())),
        presence: Arc::new(receipts::PgReceipts(db.clone())),
        push: Arc::new(push::PgPush(db.clone())),
        keys: Arc::new(keys::PgKeys(db.clone())),
        to_device: Arc::new(to_device::PgToDevice(db.clone())),
        backup: Arc::new(backup::PgBackup(db.clone())),
        closer: Arc::new(db),
    })
}

#[async_trait::async_trait]
impl Closer for PgDb {
    async fn close(&self) {
        self.pool.close().await;
    }
}
