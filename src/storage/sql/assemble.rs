//! A backend's [`Storage`], built from its pools: the same for both backends, since every area
//! shares its SQL.

use std::sync::Arc;

use super::{
    Pools, account_data::AccountDataStoreSql, backup::BackupStoreSql, devices::DeviceStoreSql, events::EventStoreSql,
    federation::FederationStoreSql, filters::FilterStoreSql, keys::KeyStoreSql, push::PushStoreSql,
    receipts::ReceiptStoreSql, registration::RegistrationStoreSql, rooms::RoomStoreSql, server_keys::ServerKeyStoreSql,
    state::StateStoreSql, to_device::ToDeviceStoreSql, users::UserStoreSql,
};
use crate::storage::{Backend, Closer, Storage};

pub(super) fn storage(backend: Backend, db: Pools) -> Storage {
    Storage {
        backend,
        users: Arc::new(UserStoreSql(db.clone())),
        devices: Arc::new(DeviceStoreSql(db.clone())),
        account_data: Arc::new(AccountDataStoreSql(db.clone())),
        registration: Arc::new(RegistrationStoreSql(db.clone())),
        rooms: Arc::new(RoomStoreSql(db.clone())),
        events: Arc::new(EventStoreSql(db.clone())),
        state: Arc::new(StateStoreSql(db.clone())),
        server_keys: Arc::new(ServerKeyStoreSql(db.clone())),
        federation: Arc::new(FederationStoreSql(db.clone())),
        filters: Arc::new(FilterStoreSql(db.clone())),
        receipts: Arc::new(ReceiptStoreSql(db.clone())),
        presence: Arc::new(ReceiptStoreSql(db.clone())),
        push: Arc::new(PushStoreSql(db.clone())),
        keys: Arc::new(KeyStoreSql(db.clone())),
        to_device: Arc::new(ToDeviceStoreSql(db.clone())),
        backup: Arc::new(BackupStoreSql(db.clone())),
        closer: Arc::new(db),
    }
}

#[async_trait::async_trait]
impl Closer for Pools {
    async fn close(&self) {
        // PostgreSQL's reader and writer are one pool; closing it twice is harmless.
        self.writer().close().await;
        self.reader().close().await;
    }
}
