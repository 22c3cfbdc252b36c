use async_trait::async_trait;
use ruma::{OwnedRoomId, RoomId, UserId};

use super::{Pools, dialect};
use crate::storage::{
    StorageResult, StreamPosition,
    receipts::{
        PresenceDbRow, PresenceRow, PresenceStore, Receipt, ReceiptRow, ReceiptStore, ReceiptWrite, presence_from_row,
        receipt_from_row,
    },
};

pub(super) struct ReceiptStoreSql(pub Pools);

#[async_trait]
impl ReceiptStore for ReceiptStoreSql {
    async fn put(&self, r: &Receipt, pos: &StreamPosition) -> StorageResult<ReceiptWrite> {
        let done = sqlx::query(
            "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id, \
             event_pos = excluded.event_pos, ts = excluded.ts, stream_pos = excluded.stream_pos \
             WHERE excluded.event_pos > receipts.event_pos",
        )
        .bind(r.room_id.as_str())
        .bind(r.user_id.as_str())
        .bind(&r.receipt_type)
        .bind(&r.thread_id)
        .bind(&r.event_id)
        .bind(r.event_pos)
        .bind(r.ts)
        .bind(pos.get())
        .execute(self.0.writer())
        .await?;
        Ok(if done.rows_affected() > 0 { ReceiptWrite::Stored } else { ReceiptWrite::NotNewer })
    }

    async fn changed_since(&self, room_ids: &[OwnedRoomId], after: i64, up_to: i64) -> StorageResult<Vec<Receipt>> {
        sqlx::query_as::<_, ReceiptRow>(concat!(
            "SELECT room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos FROM receipts \
             WHERE room_id ",
            dialect::in_list!(1),
            " AND stream_pos > $2 AND stream_pos <= $3",
        ))
        .bind(dialect::list(room_ids))
        .bind(after)
        .bind(up_to)
        .fetch_all(self.0.reader())
        .await?
        .into_iter()
        .map(receipt_from_row)
        .collect()
    }

    async fn room_receipts(&self, room_id: &RoomId) -> StorageResult<Vec<Receipt>> {
        sqlx::query_as::<_, ReceiptRow>(
            "SELECT room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos FROM receipts \
             WHERE room_id = $1",
        )
        .bind(room_id.as_str())
        .fetch_all(self.0.reader())
        .await?
        .into_iter()
        .map(receipt_from_row)
        .collect()
    }

    async fn read_up_to(&self, room_id: &RoomId, user_id: &UserId) -> StorageResult<i64> {
        let pos: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(event_pos) FROM receipts WHERE room_id = $1 AND user_id = $2 \
             AND receipt_type IN ('m.read', 'm.read.private') AND thread_id IN ('', 'main')",
        )
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .fetch_one(self.0.reader())
        .await?;
        Ok(pos.unwrap_or(0))
    }

    async fn max_stream_pos(&self) -> StorageResult<i64> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM receipts").fetch_one(self.0.reader()).await?;
        Ok(max.unwrap_or(0))
    }
}

#[async_trait]
impl PresenceStore for ReceiptStoreSql {
    async fn put(&self, row: &PresenceRow, pos: &StreamPosition) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, stream_pos) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, \
             status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts, \
             currently_active = excluded.currently_active, stream_pos = excluded.stream_pos",
        )
        .bind(row.user_id.as_str())
        .bind(&row.state)
        .bind(&row.status_msg)
        .bind(row.last_active_ts)
        .bind(row.currently_active)
        .bind(pos.get())
        .execute(self.0.writer())
        .await?;
        Ok(())
    }

    async fn get(&self, user_id: &UserId) -> StorageResult<Option<PresenceRow>> {
        sqlx::query_as::<_, PresenceDbRow>(
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_pos FROM presence WHERE user_id = $1",
        )
        .bind(user_id.as_str())
        .fetch_optional(self.0.reader())
        .await?
        .map(presence_from_row)
        .transpose()
    }

    async fn changed_since(&self, after: i64, up_to: i64) -> StorageResult<Vec<PresenceRow>> {
        sqlx::query_as::<_, PresenceDbRow>(
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_pos FROM presence \
             WHERE stream_pos > $1 AND stream_pos <= $2",
        )
        .bind(after)
        .bind(up_to)
        .fetch_all(self.0.reader())
        .await?
        .into_iter()
        .map(presence_from_row)
        .collect()
    }

    async fn max_stream_pos(&self) -> StorageResult<i64> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM presence").fetch_one(self.0.reader()).await?;
        Ok(max.unwrap_or(0))
    }
}
