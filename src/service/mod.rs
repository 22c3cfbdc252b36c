//! Domain logic. Handlers call into these services; services call storage.

pub mod account_data;
pub mod accounts;
pub mod auth;
pub mod backup;
pub mod cache;
pub mod devices;
pub mod ephemeral;
pub mod federation;
pub mod filter;
pub mod keys;
pub mod latest;
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
    pub account_data: Arc<account_data::AccountDataService>,
    pub filters: filter::FilterService,
    pub rate_limiter: ratelimit::RateLimiter,
    pub rooms: Arc<rooms::Rooms>,
    pub server_keys: Arc<server_keys::ServerKeys>,
    pub notifier: Arc<notifier::Notifier>,
    pub sync: sync::SyncService,
    pub typing: Arc<ephemeral::typing::TypingService>,
    pub receipts: Arc<ephemeral::receipts::ReceiptService>,
    pub presence: Arc<ephemeral::presence::PresenceService>,
    pub push: Arc<push::PushService>,
    pub gateway: push::gateway::GatewayClient,
    pub keys: keys::KeyService,
    pub to_device: to_device::ToDeviceService,
    pub backup: backup::BackupService,
    /// The outbound side of federation (signed client and queue); `None` when it is off.
    pub federation: Option<federation::Outbound>,
}

impl Services {
    pub async fn build(
        config: Arc<Config>,
        storage: Storage,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Self>> {
        let stream = StreamAllocator::new(storage.max_stream_pos().await?);
        let server_keys = Arc::new(server_keys::ServerKeys::load(config.server_name.clone(), storage.clone()).await?);
        let notifier = Arc::new(notifier::Notifier::default());
        // After a restart nothing is known about what was written before: global streams may
        // have changed up to the current position.
        notifier.latest().note(latest::Key::DeviceLists, stream.watermark());
        notifier.latest().note(latest::Key::Presence, stream.watermark());
        let rooms = Arc::new(rooms::Rooms::new(rooms::RoomsParts {
            config: Arc::clone(&config),
            storage: storage.clone(),
            stream: Arc::clone(&stream),
            lowest_pos: storage.events.stream_bounds().await?.1,
            keys: Arc::clone(&server_keys),
            notifier: Arc::clone(&notifier),
        }));
        let outbound = federation::Outbound::build(&config, &server_keys, &storage, &rooms, shutdown.clone())?;
        let edus = federation::EduOut::new(
            config.server_name.clone(),
            outbound.as_ref().map(|o| Arc::clone(&o.sender)),
            Arc::clone(&rooms),
        );
        let remote = outbound.as_ref().map(|o| o.client.clone());
        let device_lists =
            Arc::new(keys::DeviceLists::new(storage.clone(), Arc::clone(&stream), Arc::clone(&notifier)));
        let accounts = Arc::new(accounts::AccountService::new(
            Arc::clone(&config),
            storage.clone(),
            Arc::clone(&rooms),
            Arc::clone(&device_lists),
        ));
        let account_data = Arc::new(account_data::AccountDataService::new(
            storage.clone(),
            Arc::clone(&stream),
            Arc::clone(&notifier),
        ));
        let push = push::PushService::new(Arc::clone(&config), storage.clone(), Arc::clone(&rooms));
        rooms.timeline.set_push_evaluator(Arc::new(push::PushHook {
            push: Arc::clone(&push),
            account_data: Arc::clone(&account_data),
        }));
        let gateway = push::gateway::GatewayClient::new(&config.push)?;
        let typing = ephemeral::typing::TypingService::new(Arc::clone(&rooms), Arc::clone(&notifier), edus.clone());
        let receipts = Arc::new(ephemeral::receipts::ReceiptService::new(
            storage.clone(),
            Arc::clone(&stream),
            Arc::clone(&rooms),
            Arc::clone(&notifier),
            edus.clone(),
        ));
        let presence = ephemeral::presence::PresenceService::new(
            config.presence.clone(),
            storage.clone(),
            Arc::clone(&stream),
            Arc::clone(&rooms),
            Arc::clone(&notifier),
            edus.clone(),
        );
        Ok(Arc::new(Self {
            auth: auth::AuthService::new(storage.clone(), Arc::clone(&device_lists)),
            devices: devices::DeviceService::new(storage.clone(), Arc::clone(&device_lists)),
            keys: keys::KeyService::new(
                config.server_name.clone(),
                storage.clone(),
                Arc::clone(&stream),
                device_lists,
                remote,
                edus.clone(),
            ),
            to_device: to_device::ToDeviceService::new(
                config.server_name.clone(),
                storage.clone(),
                Arc::clone(&stream),
                Arc::clone(&notifier),
                edus,
            ),
            backup: backup::BackupService::new(storage.clone()),
            uiaa: uiaa::UiaaService::new(storage.clone(), Arc::clone(&accounts)),
            account_data: Arc::clone(&account_data),
            filters: filter::FilterService::new(storage.clone()),
            rate_limiter: ratelimit::RateLimiter::new(config.rate_limits.clone()),
            accounts,
            sync: sync::SyncService::new(
                storage.clone(),
                sync::SyncSources {
                    rooms: Arc::clone(&rooms),
                    stream: Arc::clone(&stream),
                    notifier: Arc::clone(&notifier),
                    typing: Arc::clone(&typing),
                    receipts: Arc::clone(&receipts),
                    presence: Arc::clone(&presence),
                    push: Arc::clone(&push),
                },
                shutdown,
            ),
            typing,
            receipts,
            presence,
            push,
            gateway,
            rooms,
            server_keys,
            federation: outbound,
            notifier,
            stream,
            storage,
            config,
        }))
    }
}

impl Services {
    /// Starts the background tasks (typing expiry, presence timeouts); they stop when
    /// `shutdown` flips.
    pub fn spawn_background(&self, shutdown: &tokio::sync::watch::Sender<bool>) {
        tokio::spawn(Arc::clone(&self.typing).run_expiry(shutdown.subscribe()));
        tokio::spawn(Arc::clone(&self.presence).run(shutdown.subscribe()));
        tokio::spawn(Arc::clone(&self.push).run_delivery(self.gateway.clone(), shutdown.subscribe()));
        if let Some(federation) = &self.federation {
            let sender = Arc::clone(&federation.sender);
            tokio::spawn(async move {
                if let Err(e) = sender.resume().await {
                    tracing::warn!(error = %e, "could not resume the federation queues");
                }
            });
            tokio::spawn(federation::prune_inbound_txns(self.storage.clone(), shutdown.subscribe()));
        }
    }
}

/// Milliseconds since the Unix epoch, the unit of every timestamp Parley stores.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
