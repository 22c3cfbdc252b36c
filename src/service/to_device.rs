//! To-device messages: sending them to devices, once per transaction ID.
//!
//! Messages are stored per recipient device at the stream position of their send; `/sync`
//! hands them to that device and deletes them once the device acknowledges them by syncing
//! with a later token (see `sync::e2ee`).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use ruma::{
    DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId,
    api::client::to_device::send_event_to_device::v3::Messages, to_device::DeviceIdOrAllDevices,
};
use serde_json::{Value as JsonValue, json, value::RawValue};

use super::{auth::AuthedUser, federation::EduOut, latest::Key, notifier::Notifier, now_ms, secrets};
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
    /// Carries messages for other servers' devices (`m.direct_to_device`).
    edus: EduOut,
}

/// The sender of messages from another server: its devices are not known here, so one name
/// stands for all of them in the once-per-message record.
const REMOTE_SENDER_DEVICE: &str = "";

impl ToDeviceService {
    pub fn new(
        server_name: OwnedServerName,
        storage: Storage,
        stream: Arc<StreamAllocator>,
        notifier: Arc<Notifier>,
        edus: EduOut,
    ) -> Self {
        Self { server_name, storage, stream, notifier, edus }
    }

    /// Stores the messages for their devices (`*` meaning every device the user has now) and
    /// wakes the recipients' syncs. A transaction ID the sending device used before changes
    /// nothing and succeeds, so a retried request is delivered once.
    pub async fn send(&self, sender: &AuthedUser, event_type: &str, txn_id: &str, messages: &Messages) -> Result<()> {
        // Expand `*` and drop unknown devices first; a device named both explicitly and through
        // `*` gets the explicit message.
        let mut batch: Vec<(ruma::OwnedUserId, OwnedDeviceId, &str)> = Vec::new();
        let mut remote: BTreeMap<OwnedServerName, BTreeMap<&OwnedUserId, BTreeMap<String, JsonValue>>> =
            BTreeMap::new();
        for (user_id, by_device) in messages {
            if user_id.server_name() != self.server_name {
                // Another server's devices: their server delivers it (and expands `*`).
                let devices = remote.entry(user_id.server_name().to_owned()).or_default().entry(user_id).or_default();
                for (target, content) in by_device {
                    let key = match target {
                        DeviceIdOrAllDevices::DeviceId(device_id) => device_id.to_string(),
                        DeviceIdOrAllDevices::AllDevices => "*".to_owned(),
                    };
                    devices.insert(key, serde_json::from_str(object(content.json().get())?)?);
                }
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
        let from = ToDeviceSender { user_id: &sender.user_id, device_id: &sender.device_id, txn_id };
        match self.storage.to_device.send(from, event_type, &messages, &pos, now_ms()).await? {
            ToDeviceWrite::Stored => {}
            // A retried request: the first one stored (and sent on) the messages.
            ToDeviceWrite::RepeatedTransaction => return Ok(()),
        }
        drop(pos);
        for (server, messages) in remote {
            // Unique per message, so the receiving server delivers a retried EDU once.
            let message_id =
                secrets::random_string(24, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
            let content = json!({
                "sender": sender.user_id, "type": event_type, "message_id": message_id, "messages": messages,
            });
            self.edus.to_server(&server, "m.direct_to_device", content).await?;
        }
        Ok(())
    }

    /// Messages from another server's user for devices of this one (`m.direct_to_device`),
    /// delivered once per `message_id`.
    pub async fn receive_remote(
        &self,
        sender: &UserId,
        event_type: &str,
        message_id: &str,
        messages: &BTreeMap<OwnedUserId, BTreeMap<DeviceIdOrAllDevices, Box<RawValue>>>,
    ) -> Result<()> {
        let mut batch: Vec<(OwnedUserId, OwnedDeviceId, &str)> = Vec::new();
        for (user_id, by_device) in messages {
            if user_id.server_name() != self.server_name {
                continue;
            }
            let devices: BTreeSet<OwnedDeviceId> =
                self.storage.devices.list(user_id).await?.into_iter().map(|d| d.device_id).collect();
            for (target, content) in by_device {
                let content = object(content.get())?;
                match target {
                    DeviceIdOrAllDevices::DeviceId(device_id) if devices.contains(device_id) => {
                        batch.push((user_id.clone(), device_id.clone(), content));
                    }
                    DeviceIdOrAllDevices::AllDevices => {
                        batch.extend(devices.iter().map(|d| (user_id.clone(), d.clone(), content)));
                    }
                    DeviceIdOrAllDevices::DeviceId(_) => {}
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
        let device: &DeviceId = REMOTE_SENDER_DEVICE.into();
        let from = ToDeviceSender { user_id: sender, device_id: device, txn_id: message_id };
        match self.storage.to_device.send(from, event_type, &messages, &pos, now_ms()).await? {
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
