//! Devices: listing, renaming and deleting them. Deleting a device logs it out.

use ruma::{DeviceId, OwnedDeviceId, UserId};

use crate::{
    error::{Error, Result},
    storage::{Device, Storage},
};

pub struct DeviceService {
    storage: Storage,
}

impl DeviceService {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
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
        if !self.storage.devices.set_display_name(user_id, device_id, name).await? {
            return Err(Error::not_found("No such device"));
        }
        Ok(())
    }

    /// Deletes the devices (unknown IDs are skipped) and revokes their tokens.
    pub async fn delete(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> Result<()> {
        self.storage.devices.delete(user_id, device_ids).await?;
        Ok(())
    }

    /// Revokes the tokens of every device but `keep`; used when the password changes.
    pub async fn revoke_other_tokens(&self, user_id: &UserId, keep: Option<&DeviceId>) -> Result<()> {
        self.storage.devices.revoke_tokens_except(user_id, keep).await?;
        Ok(())
    }
}
