use async_trait::async_trait;
use ruma::{DeviceId, UserId};

use super::{Pools, dialect};
use crate::storage::{
    StorageResult, StreamPosition,
    to_device::{
        NewToDevice, ToDeviceMessage, ToDeviceRow, ToDeviceSender, ToDeviceStore, ToDeviceWrite, message_from_row,
    },
};

pub(super) struct ToDeviceStoreSql(pub Pools);

#[async_trait]
impl ToDeviceStore for ToDeviceStoreSql {
    async fn send(
        &self,
        sender: ToDeviceSender<'_>,
        event_type: &str,
        messages: &[NewToDevice<'_>],
        pos: &StreamPosition,
        now_ms: i64,
    ) -> StorageResult<ToDeviceWrite> {
        let mut tx = self.0.writer().begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO to_device_txns (user_id, device_id, txn_id, stream_pos, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(sender.user_id.as_str())
        .bind(sender.device_id.as_str())
        .bind(sender.txn_id)
        .bind(pos.get())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if fresh == 0 {
            return Ok(ToDeviceWrite::RepeatedTransaction);
        }
        for message in messages {
            sqlx::query(
                "INSERT INTO to_device_messages (user_id, device_id, stream_pos, sender, event_type, content) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(message.user_id.as_str())
            .bind(message.device_id.as_str())
            .bind(pos.get())
            .bind(sender.user_id.as_str())
            .bind(event_type)
            .bind(message.content)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ToDeviceWrite::Stored)
    }

    async fn pending(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> StorageResult<Vec<ToDeviceMessage>> {
        sqlx::query_as::<_, ToDeviceRow>(
            "SELECT stream_pos, sender, event_type, content FROM to_device_messages \
             WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4 \
             ORDER BY stream_pos, id LIMIT $5",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(after)
        .bind(up_to)
        .bind(limit)
        .fetch_all(self.0.reader())
        .await?
        .into_iter()
        .map(message_from_row)
        .collect()
    }

    async fn delete_up_to(&self, user_id: &UserId, device_id: &DeviceId, up_to: i64) -> StorageResult<u64> {
        // Most syncs have nothing to acknowledge; with a single writer, look on a reader first
        // so that they do not queue for it.
        if dialect::SINGLE_WRITER {
            let any: Option<i64> = sqlx::query_scalar(
                "SELECT stream_pos FROM to_device_messages WHERE user_id = $1 AND device_id = $2 \
                 AND stream_pos <= $3 LIMIT 1",
            )
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(up_to)
            .fetch_optional(self.0.reader())
            .await?;
            if any.is_none() {
                return Ok(0);
            }
        }
        let done =
            sqlx::query("DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3")
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(up_to)
                .execute(self.0.writer())
                .await?;
        Ok(done.rows_affected())
    }

    async fn max_stream_pos(&self) -> StorageResult<i64> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM to_device_txns").fetch_one(self.0.reader()).await?;
        Ok(max.unwrap_or(0))
    }
}
