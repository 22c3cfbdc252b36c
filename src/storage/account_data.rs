//! Account data: global (`room_id` empty) and per room. Every write takes a stream position
//! so that `/sync` can deliver changes since a token.

use async_trait::async_trait;
use ruma::{RoomId, UserId};
use serde_json::value::RawValue;

use super::{StorageResult, StreamPosition};

#[derive(Clone, Debug)]
pub struct AccountDataEntry {
    /// `None` for global account data.
    pub room_id: Option<String>,
    pub data_type: String,
    pub content: Box<RawValue>,
    pub stream_pos: i64,
}

#[async_trait]
pub trait AccountDataStore: Send + Sync {
    async fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &RawValue,
        pos: &StreamPosition,
    ) -> StorageResult<()>;

    async fn get(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> StorageResult<Option<Box<RawValue>>>;

    /// Entries written at positions in `(after, up_to]`, global and per room.
    async fn changed_since(&self, user_id: &UserId, after: i64, up_to: i64) -> StorageResult<Vec<AccountDataEntry>>;

    /// The highest position used, for seeding the stream allocator.
    async fn max_stream_pos(&self) -> StorageResult<i64>;
}

pub(super) type AccountDataRow = (String, String, String, i64);

pub(super) fn entry_from_row(
    (room_id, data_type, content, stream_pos): AccountDataRow,
) -> anyhow::Result<AccountDataEntry> {
    Ok(AccountDataEntry {
        room_id: if room_id.is_empty() { None } else { Some(room_id) },
        data_type,
        content: RawValue::from_string(content)?,
        stream_pos,
    })
}

/// Global account data is stored under the empty room ID.
pub(super) fn room_key(room_id: Option<&RoomId>) -> &str {
    room_id.map_or("", RoomId::as_str)
}
