//! Domain logic. Handlers call into these services; services call storage.

pub mod account_data;
pub mod accounts;
pub mod auth;
pub mod backup;
pub mod devices;
pub mod filter;
pub mod keys;
pub mod notifier;
pub mod password;
pub mod push;
pub mod ratelimit;
pub mod rooms;
pub mod secrets;
pub mod server_keys;
pub mod sync;
pub mod to_device;
pub mod uiaa;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    config::Config,
    storage::{Storage, StreamAllocator},
};

/// Everything one homeserver's handlers need. One per server; no globals, so several servers
/// can run in one process.
pub struct Services {
    pub config: Arc<Config>,
    pub storage: Storage,
    pub stream: Arc<StreamAllocator>,
    pub auth: auth::AuthService,
    pub accounts: Arc<accounts::AccountService>,
    pub devices: devices::DeviceService,
    pub uiaa: uiaa::UiaaService,
    pub account_data: account_data::AccountDataService,
    pub rate_limiter: ratelimit::RateLimiter,
    pub rooms: Arc<rooms::Rooms>,
    pub notifier: Arc<notifier::Notifier>,
    pub sync: sync::SyncService,
    pub keys: keys::KeyService,
    pub to_device: to_device::ToDeviceService,
    pub backup: backup::BackupService,
}

impl Services {
    pub async fn build(
        config: Arc<Config>,
        storage: Storage,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Self>> {
        let stream = StreamAllocator::new(storage.max_stream_pos().await?);
        let key = Arc::new(server_keys::load_or_create(&storage).await?);
        let notifier = Arc::new(notifier::Notifier::default());
        let rooms = Arc::new(rooms::Rooms::new(
            Arc::clone(&config),
            storage.clone(),
            Arc::clone(&stream),
            key,
            Arc::clone(&notifier),
        ));
        let device_lists =
            Arc::new(keys::DeviceLists::new(storage.clone(), Arc::clone(&stream), Arc::clone(&notifier)));
        let accounts = Arc::new(accounts::AccountService::new(
            Arc::clone(&config),
            storage.clone(),
            Arc::clone(&rooms),
            Arc::clone(&device_lists),
        ));
        Ok(Arc::new(Self {
            auth: auth::AuthService::new(storage.clone(), Arc::clone(&device_lists)),
            devices: devices::DeviceService::new(storage.clone(), Arc::clone(&device_lists)),
            keys: keys::KeyService::new(config.server_name.clone(), storage.clone(), Arc::clone(&stream), device_lists),
            to_device: to_device::ToDeviceService::new(
                config.server_name.clone(),
                storage.clone(),
                Arc::clone(&stream),
                Arc::clone(&notifier),
            ),
            backup: backup::BackupService::new(storage.clone()),
            uiaa: uiaa::UiaaService::new(storage.clone(), Arc::clone(&accounts)),
            account_data: account_data::AccountDataService::new(
                storage.clone(),
                Arc::clone(&stream),
                Arc::clone(&notifier),
            ),
            rate_limiter: ratelimit::RateLimiter::new(config.rate_limits.clone()),
            accounts,
            sync: sync::SyncService::new(
                storage.clone(),
                Arc::clone(&rooms),
                Arc::clone(&stream),
                Arc::clone(&notifier),
                shutdown,
            ),
            rooms,
            notifier,
            stream,
            storage,
            config,
        }))
    }
}

/// Milliseconds since the Unix epoch, the unit of every timestamp Parley stores.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
