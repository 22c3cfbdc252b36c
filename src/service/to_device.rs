//! To-device messages: sending them to devices, once per transaction ID.
//!
//! Messages are stored per recipient device at the stream position of their send; `/sync`
//! hands them to that device and deletes them once the device acknowledges them by syncing
//! with a later token (see `sync::e2ee`).

use std::{collections::BTreeSet, sync::Arc};

use ruma::{
    OwnedDeviceId, OwnedServerName, api::client::to_device::send_event_to_device::v3::Messages,
    to_device::DeviceIdOrAllDevices,
};

use super::{auth::AuthedUser, latest::Key, notifier::Notifier, now_ms};
use crate::{
    error::{Error, Result},
    storage::{
        Storage, StreamAllocator,
        to_device::{NewToDevice, ToDeviceSender, ToDeviceWrite, recipients},
    },
};

pub struct ToDeviceService {
    server_name: OwnedServerName,
    storage: Storage,
    stream: Arc<StreamAllocator>,
    notifier: Arc<Notifier>,
}

impl ToDeviceService {
    pub fn new(
        server_name: OwnedServerName,
        storage: Storage,
        stream: Arc<StreamAllocator>,
        notifier: Arc<Notifier>,
    ) -> Self {
        Self { server_name, storage, stream, notifier }
    }

    /// Stores the messages for their devices (`*` meaning every device the user has now) and
    /// wakes the recipients' syncs. A transaction ID the sending device used before changes
    /// nothing and succeeds, so a retried request is delivered once.
    pub async fn send(&self, sender: &AuthedUser, event_type: &str, txn_id: &str, messages: &Messages) -> Result<()> {
        // Expand `*` and drop unknown devices first; a device named both explicitly and through
        // `*` gets the explicit message.
        let mut batch: Vec<(ruma::OwnedUserId, OwnedDeviceId, &str)> = Vec::new();
        for (user_id, by_device) in messages {
            if user_id.server_name() != self.server_name {
                // No federation: there is no way to deliver to another server's devices.
                tracing::debug!(%user_id, "dropping to-device message for a remote user");
                continue;
            }
            let devices: BTreeSet<OwnedDeviceId> =
                self.storage.devices.list(user_id).await?.into_iter().map(|d| d.device_id).collect();
            let mut covered = BTreeSet::new();
            for (target, content) in by_device {
                if let DeviceIdOrAllDevices::DeviceId(device_id) = target {
                    let content = object(content.json().get())?;
                    if devices.contains(device_id) && covered.insert(device_id.clone()) {
                        batch.push((user_id.clone(), device_id.clone(), content));
                    }
                }
            }
            if let Some(content) = by_device.get(&DeviceIdOrAllDevices::AllDevices) {
                let content = object(content.json().get())?;
                for device_id in devices.iter().filter(|d| !covered.contains(*d)) {
                    batch.push((user_id.clone(), device_id.clone(), content));
                }
            }
        }
        let messages: Vec<NewToDevice<'_>> =
            batch.iter().map(|(user_id, device_id, content)| NewToDevice { user_id, device_id, content }).collect();
        let mut pos = self.stream.allocate();
        for message in &messages {
            self.notifier
                .latest()
                .note(Key::ToDevice(message.user_id.to_owned(), message.device_id.to_owned()), pos.get());
        }
        let targets = recipients(&messages);
        let notifier = Arc::clone(&self.notifier);
        pos.on_visible(move || notifier.notify_users(targets.iter().map(|u| &**u)));
        let sender = ToDeviceSender { user_id: &sender.user_id, device_id: &sender.device_id, txn_id };
        match self.storage.to_device.send(sender, event_type, &messages, &pos, now_ms()).await? {
            // A retried request: the first one stored (and delivers) the messages.
            ToDeviceWrite::Stored | ToDeviceWrite::RepeatedTransaction => Ok(()),
        }
    }
}

/// Message contents must be JSON objects.
fn object(json: &str) -> Result<&str> {
    if json.trim_start().starts_with('{') {
        Ok(json)
    } else {
        Err(Error::bad_json("To-device message contents must be JSON objects"))
    }
}
