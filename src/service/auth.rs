//! Access tokens: issuing them at login or registration, and resolving them per request.

use std::sync::Arc;

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::{keys::DeviceLists, now_ms, secrets};
use crate::{
    error::{Error, Result},
    storage::Storage,
};

/// A request's authenticated identity: the user and the device its access token belongs to.
/// Only [`AuthService::authenticate`] makes one, so holding one proves the token was valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthedUser {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

impl AuthedUser {
    /// This user and device as the viewer of events.
    pub fn viewer(&self) -> super::rooms::Viewer<'_> {
        super::rooms::Viewer { user_id: &self.user_id, device_id: Some(&self.device_id) }
    }
}

/// A freshly issued login.
#[derive(Debug)]
pub struct NewSession {
    pub device_id: OwnedDeviceId,
    pub access_token: String,
}

pub struct AuthService {
    storage: Storage,
    device_lists: Arc<DeviceLists>,
}

impl AuthService {
    pub fn new(storage: Storage, device_lists: Arc<DeviceLists>) -> Self {
        Self { storage, device_lists }
    }

    /// Resolves an access token. Unknown, revoked and deactivated-account tokens all fail alike.
    pub async fn authenticate(&self, token: &str) -> Result<AuthedUser> {
        let owner = self
            .storage
            .devices
            .find_token(&secrets::sha256(token))
            .await?
            .ok_or_else(|| Error::unknown_token("Unknown or expired access token"))?;
        Ok(AuthedUser { user_id: owner.user_id, device_id: owner.device_id })
    }

    /// Issues a token for `device_id`, creating the device if needed. An existing device keeps
    /// its ID and display name, and its earlier token stops working.
    pub async fn issue(
        &self,
        user_id: &UserId,
        device_id: Option<&DeviceId>,
        display_name: Option<&str>,
    ) -> Result<NewSession> {
        let device_id: OwnedDeviceId = match device_id {
            Some(id) if id.as_str().is_empty() || id.as_str().len() > 255 => {
                return Err(Error::invalid_param("device_id must be 1 to 255 characters"));
            }
            Some(id) => id.to_owned(),
            None => secrets::new_device_id().into(),
        };
        let access_token = secrets::new_access_token();
        self.storage
            .devices
            .upsert_with_token(user_id, &device_id, display_name, &secrets::sha256(&access_token), now_ms())
            .await?;
        Ok(NewSession { device_id, access_token })
    }

    /// Logs the device out: its token, the device itself and its keys go.
    pub async fn logout(&self, user: &AuthedUser) -> Result<()> {
        let pos = self.device_lists.position_for(&[&user.user_id]).await?;
        self.storage.devices.delete(&user.user_id, std::slice::from_ref(&user.device_id), &pos).await?;
        self.device_lists.forget_devices(&user.user_id, std::slice::from_ref(&user.device_id));
        Ok(())
    }

    /// Logs every device of the user out.
    pub async fn logout_all(&self, user_id: &UserId) -> Result<()> {
        let pos = self.device_lists.position_for(&[user_id]).await?;
        self.storage.devices.delete_all_except(user_id, None, &pos).await?;
        Ok(())
    }
}
