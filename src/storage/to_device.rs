//! To-device messages: stored per recipient device at the stream position of their send,
//! delivered by `/sync`, deleted once the device acknowledges them.

use async_trait::async_trait;
use ruma::{DeviceId, OwnedUserId, UserId};

use super::{StorageResult, StreamPosition};

/// One message for one device.
#[derive(Clone, Debug)]
pub struct NewToDevice<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a DeviceId,
    pub content: &'a str,
}

/// A message waiting for its device.
#[derive(Clone, Debug)]
pub struct ToDeviceMessage {
    pub stream_pos: i64,
    pub sender: OwnedUserId,
    pub event_type: String,
    pub content: String,
}

/// Who sent a batch, and under which transaction ID.
#[derive(Clone, Copy, Debug)]
pub struct ToDeviceSender<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a DeviceId,
    pub txn_id: &'a str,
}

/// What [`ToDeviceStore::send`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum ToDeviceWrite {
    Stored,
    /// The sender's device used this transaction ID before: a retry, stored nothing.
    RepeatedTransaction,
}

#[async_trait]
pub trait ToDeviceStore: Send + Sync {
    /// Stores the batch at `pos`, in one transaction with the sender's transaction ID, unless
    /// that transaction ID was used before.
    async fn send(
        &self,
        sender: ToDeviceSender<'_>,
        event_type: &str,
        messages: &[NewToDevice<'_>],
        pos: &StreamPosition,
        now_ms: i64,
    ) -> StorageResult<ToDeviceWrite>;

    /// Messages for the device at positions `(after, up_to]`, oldest first, at most `limit`.
    async fn pending(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> StorageResult<Vec<ToDeviceMessage>>;

    /// Deletes the device's messages at positions up to `up_to` (acknowledged). Returns how
    /// many went.
    async fn delete_up_to(&self, user_id: &UserId, device_id: &DeviceId, up_to: i64) -> StorageResult<u64>;

    /// Highest position of any send, delivered or not, for seeding the stream allocator.
    async fn max_stream_pos(&self) -> StorageResult<i64>;
}

pub(super) type ToDeviceRow = (i64, String, String, String);

pub(super) fn message_from_row(
    (stream_pos, sender, event_type, content): ToDeviceRow,
) -> anyhow::Result<ToDeviceMessage> {
    Ok(ToDeviceMessage { stream_pos, sender: sender.try_into()?, event_type, content })
}

/// Recipients of a batch, for waking them.
pub fn recipients(messages: &[NewToDevice<'_>]) -> Vec<OwnedUserId> {
    let mut users: Vec<OwnedUserId> = messages.iter().map(|m| m.user_id.to_owned()).collect();
    users.sort();
    users.dedup();
    users
}
