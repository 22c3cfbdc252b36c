//! Read receipts and presence, the persisted parts of the ephemeral data `/sync` delivers.

use async_trait::async_trait;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{StorageResult, StreamPosition};

#[derive(Clone, Debug)]
pub struct Receipt {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub receipt_type: String,
    /// Empty for unthreaded receipts.
    pub thread_id: String,
    pub event_id: String,
    /// The stream position of the event read.
    pub event_pos: i64,
    pub ts: i64,
    pub stream_pos: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceRow {
    pub user_id: OwnedUserId,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub currently_active: bool,
    pub stream_pos: i64,
}

/// What [`ReceiptStore::put`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum ReceiptWrite {
    Stored,
    /// The user's receipt of that kind and thread is already at the event or later.
    NotNewer,
}

#[async_trait]
pub trait ReceiptStore: Send + Sync {
    /// Stores the receipt unless the user already has one of that kind, in that thread, for a
    /// later event: receipts only move forward.
    async fn put(&self, receipt: &Receipt, pos: &StreamPosition) -> StorageResult<ReceiptWrite>;

    /// Receipts set in `(after, up_to]` in the given rooms.
    async fn changed_since(&self, room_ids: &[OwnedRoomId], after: i64, up_to: i64) -> StorageResult<Vec<Receipt>>;

    /// The room's current receipts.
    async fn room_receipts(&self, room_id: &RoomId) -> StorageResult<Vec<Receipt>>;

    /// The stream position of the latest event the user has read (any read receipt) in the
    /// room's main timeline, or 0.
    async fn read_up_to(&self, room_id: &RoomId, user_id: &UserId) -> StorageResult<i64>;

    async fn max_stream_pos(&self) -> StorageResult<i64>;
}

#[async_trait]
pub trait PresenceStore: Send + Sync {
    async fn put(&self, row: &PresenceRow, pos: &StreamPosition) -> StorageResult<()>;

    async fn get(&self, user_id: &UserId) -> StorageResult<Option<PresenceRow>>;

    /// Presence written in `(after, up_to]`.
    async fn changed_since(&self, after: i64, up_to: i64) -> StorageResult<Vec<PresenceRow>>;

    async fn max_stream_pos(&self) -> StorageResult<i64>;
}

pub(super) type ReceiptRow = (String, String, String, String, String, i64, i64, i64);

pub(super) fn receipt_from_row(
    (room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos): ReceiptRow,
) -> anyhow::Result<Receipt> {
    Ok(Receipt {
        room_id: room_id.try_into()?,
        user_id: user_id.try_into()?,
        receipt_type,
        thread_id,
        event_id,
        event_pos,
        ts,
        stream_pos,
    })
}

pub(super) type PresenceDbRow = (String, String, Option<String>, i64, bool, i64);

pub(super) fn presence_from_row(
    (user_id, state, status_msg, last_active_ts, currently_active, stream_pos): PresenceDbRow,
) -> anyhow::Result<PresenceRow> {
    Ok(PresenceRow { user_id: user_id.try_into()?, state, status_msg, last_active_ts, currently_active, stream_pos })
}
