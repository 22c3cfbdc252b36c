//! Devices: listing, renaming and deleting them. Deleting a device logs it out and removes
//! its keys and pending to-device messages.

use std::sync::Arc;

use ruma::{DeviceId, OwnedDeviceId, UserId};

use super::keys::DeviceLists;
use crate::{
    error::{Error, Result},
    storage::{Device, RowWrite, Storage},
};

pub struct DeviceService {
    storage: Storage,
    device_lists: Arc<DeviceLists>,
}

impl DeviceService {
    pub fn new(storage: Storage, device_lists: Arc<DeviceLists>) -> Self {
        Self { storage, device_lists }
    }

    pub async fn list(&self, user_id: &UserId) -> Result<Vec<Device>> {
        Ok(self.storage.devices.list(user_id).await?)
    }

    pub async fn get(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Device> {
        self.storage.devices.get(user_id, device_id).await?.ok_or_else(|| Error::not_found("No such device"))
    }

    pub async fn rename(&self, user_id: &UserId, device_id: &DeviceId, name: Option<&str>) -> Result<()> {
        if name.is_some_and(|n| n.len() > 255) {
            return Err(Error::invalid_param("Display name too long"));
        }
        if self.storage.devices.set_display_name(user_id, device_id, name).await? == RowWrite::NotFound {
            return Err(Error::not_found("No such device"));
        }
        Ok(())
    }

    /// Deletes the devices (unknown IDs are skipped) with their tokens and keys.
    pub async fn delete(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> Result<()> {
        let pos = self.device_lists.position_for(&[user_id]).await?;
        self.storage.devices.delete(user_id, device_ids, &pos).await?;
        self.device_lists.forget_devices(user_id, device_ids);
        Ok(())
    }

    /// Revokes the tokens of every device but `keep`; used when the password changes.
    pub async fn revoke_other_tokens(&self, user_id: &UserId, keep: Option<&DeviceId>) -> Result<()> {
        self.storage.devices.revoke_tokens_except(user_id, keep).await?;
        Ok(())
    }
}
