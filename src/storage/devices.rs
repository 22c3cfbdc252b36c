//! Devices and the access tokens that belong to them.
//!
//! A device holds at most one access token. Tokens are stored only as their SHA-256 hash.

use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::{RowWrite, StorageResult, StreamPosition};

#[derive(Clone, Debug)]
pub struct Device {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
    pub created_at: i64,
}

/// The identity an access token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOwner {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Creates the device if it does not exist (keeping its display name if it does), and makes
    /// `token_hash` its only access token, revoking any earlier one. One transaction.
    async fn upsert_with_token(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
        token_hash: &[u8],
        now_ms: i64,
    ) -> StorageResult<()>;

    /// Resolves an access token hash, for a live (not deactivated) account only.
    async fn find_token(&self, token_hash: &[u8]) -> StorageResult<Option<TokenOwner>>;

    async fn get(&self, user_id: &UserId, device_id: &DeviceId) -> StorageResult<Option<Device>>;

    async fn list(&self, user_id: &UserId) -> StorageResult<Vec<Device>>;

    async fn set_display_name(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
    ) -> StorageResult<RowWrite>;

    /// Records the last activity seen from a device.
    async fn touch(&self, user_id: &UserId, device_id: &DeviceId, ts: i64, ip: Option<&str>) -> StorageResult<()>;

    /// Deletes the given devices with their tokens, keys and pending to-device messages, and
    /// records a device-list change at `pos` if any existed. Returns how many devices existed.
    async fn delete(&self, user_id: &UserId, device_ids: &[OwnedDeviceId], pos: &StreamPosition) -> StorageResult<u64>;

    /// Deletes every device of the user except `keep`, as [`DeviceStore::delete`] does.
    /// Returns how many went.
    async fn delete_all_except(
        &self,
        user_id: &UserId,
        keep: Option<&DeviceId>,
        pos: &StreamPosition,
    ) -> StorageResult<u64>;

    /// Revokes the access tokens of every device except `keep`, leaving the devices.
    async fn revoke_tokens_except(&self, user_id: &UserId, keep: Option<&DeviceId>) -> StorageResult<u64>;
}

/// The columns both backends select for a [`Device`], in order.
pub(super) type DeviceRow = (String, String, Option<String>, Option<i64>, Option<String>, i64);

pub(super) fn device_from_row(
    (user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_at): DeviceRow,
) -> anyhow::Result<Device> {
    Ok(Device {
        user_id: user_id.try_into()?,
        device_id: device_id.into(),
        display_name,
        last_seen_ts,
        last_seen_ip,
        created_at,
    })
}

pub(super) fn token_owner_from_row((user_id, device_id): (String, String)) -> anyhow::Result<TokenOwner> {
    Ok(TokenOwner { user_id: user_id.try_into()?, device_id: device_id.into() })
}
