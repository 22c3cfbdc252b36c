use async_trait::async_trait;
use ruma::{RoomId, UserId};
use serde_json::value::RawValue;

use super::Pools;
use crate::storage::{
    StorageResult, StreamPosition,
    account_data::{AccountDataEntry, AccountDataRow, AccountDataStore, entry_from_row, room_key},
};

pub(super) struct AccountDataStoreSql(pub Pools);

#[async_trait]
impl AccountDataStore for AccountDataStoreSql {
    async fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &RawValue,
        pos: &StreamPosition,
    ) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos",
        )
        .bind(user_id.as_str())
        .bind(room_key(room_id))
        .bind(data_type)
        .bind(content.get())
        .bind(pos.get())
        .execute(self.0.writer())
        .await?;
        Ok(())
    }

    async fn get(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> StorageResult<Option<Box<RawValue>>> {
        let content: Option<String> = sqlx::query_scalar(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        )
        .bind(user_id.as_str())
        .bind(room_key(room_id))
        .bind(data_type)
        .fetch_optional(self.0.reader())
        .await?;
        Ok(content.map(RawValue::from_string).transpose()?)
    }

    async fn changed_since(&self, user_id: &UserId, after: i64, up_to: i64) -> StorageResult<Vec<AccountDataEntry>> {
        sqlx::query_as::<_, AccountDataRow>(
            "SELECT room_id, data_type, content, stream_pos FROM account_data \
             WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos",
        )
        .bind(user_id.as_str())
        .bind(after)
        .bind(up_to)
        .fetch_all(self.0.reader())
        .await?
        .into_iter()
        .map(entry_from_row)
        .collect()
    }

    async fn max_stream_pos(&self) -> StorageResult<i64> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM account_data").fetch_one(self.0.reader()).await?;
        Ok(max.unwrap_or(0))
    }
}
