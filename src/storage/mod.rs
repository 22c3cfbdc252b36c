//! Storage: one trait per area, each with a PostgreSQL and a SQLite implementation.
//!
//! Every trait method is one whole atomic operation; each implementation opens its own
//! transaction where it writes more than one row. The two implementations of an area keep
//! the same shape and differ only in SQL. Logic that is the same for both lives above the
//! traits, in `service/`.

pub mod account_data;
pub mod backup;
pub mod devices;
pub mod events;
pub mod federation;
pub mod filters;
pub mod keys;
pub mod push;
pub mod receipts;
pub mod registration;
pub mod rooms;
pub mod server_keys;
pub mod state;
pub mod stream;
pub mod to_device;
pub mod users;

mod postgres;
mod sqlite;

use std::sync::Arc;

use anyhow::Context as _;

pub use self::{
    account_data::{AccountDataEntry, AccountDataStore},
    backup::BackupStore,
    devices::{Device, DeviceStore, TokenOwner},
    events::{
        Direction, EventStore, GroupRef, HeadUpdate, NewGroup, NewRoom, PersistEvent, Placement, StoredEvent, TopoFrom,
        TopoPoint, TxnRef,
    },
    keys::KeyStore,
    registration::{RegistrationStore, RegistrationToken, UiaaSession},
    rooms::{RoomInfo, RoomStore},
    state::{Membership, RoomHeadRow, StateEntry, StateStore},
    stream::{StreamAllocator, StreamPosition},
    to_device::ToDeviceStore,
    users::{CreateUserOutcome, NewUser, User, UserStore},
};

pub type StorageResult<T> = anyhow::Result<T>;

/// The outcome of a write to one row that may not be there (an unknown device, version,
/// pusher, account): a condition callers must handle, so it is a type, not a `bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum RowWrite {
    Written,
    /// There was no such row; nothing changed.
    NotFound,
}

impl RowWrite {
    /// From the rows a single-row statement affected.
    pub fn from_rows(affected: u64) -> Self {
        if affected > 0 { Self::Written } else { Self::NotFound }
    }
}

/// Which database a [`Storage`] runs on; chosen from the URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            anyhow::bail!("unsupported database URL `{url}`: use sqlite:// or postgres://")
        }
    }
}

/// All storage areas of one homeserver.
#[derive(Clone)]
pub struct Storage {
    pub backend: Backend,
    pub users: Arc<dyn UserStore>,
    pub devices: Arc<dyn DeviceStore>,
    pub account_data: Arc<dyn AccountDataStore>,
    pub registration: Arc<dyn RegistrationStore>,
    pub rooms: Arc<dyn RoomStore>,
    pub events: Arc<dyn EventStore>,
    pub state: Arc<dyn StateStore>,
    pub server_keys: Arc<dyn server_keys::ServerKeyStore>,
    pub federation: Arc<dyn federation::FederationStore>,
    pub filters: Arc<dyn filters::FilterStore>,
    pub receipts: Arc<dyn receipts::ReceiptStore>,
    pub presence: Arc<dyn receipts::PresenceStore>,
    pub push: Arc<dyn push::PushStore>,
    pub keys: Arc<dyn KeyStore>,
    pub to_device: Arc<dyn ToDeviceStore>,
    pub backup: Arc<dyn BackupStore>,
    closer: Arc<dyn Closer>,
}

/// Closes a backend's pools, so that a shutdown leaves nothing open.
#[async_trait::async_trait]
trait Closer: Send + Sync {
    async fn close(&self);
}

impl Storage {
    /// Connects to the database at `url`, creating a SQLite file if needed, and applies any
    /// pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let storage = match Backend::from_url(url)? {
            Backend::Postgres => postgres::connect(url, max_connections).await,
            Backend::Sqlite => sqlite::connect(url, max_connections).await,
        }
        .with_context(|| format!("connecting to the database at {}", redact_url(url)))?;
        Ok(storage)
    }

    /// The highest stream position stored in any area; the allocator starts after it.
    pub async fn max_stream_pos(&self) -> StorageResult<i64> {
        let positions = [
            self.account_data.max_stream_pos().await?,
            self.events.stream_bounds().await?.0,
            self.receipts.max_stream_pos().await?,
            self.presence.max_stream_pos().await?,
            self.keys.max_stream_pos().await?,
            self.to_device.max_stream_pos().await?,
            self.federation.max_stream_pos().await?,
        ];
        Ok(positions.into_iter().max().unwrap_or(0))
    }

    pub async fn close(&self) {
        self.closer.close().await;
    }
}

/// The URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
