use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, UserId};

use super::{Pools, dialect};
use crate::storage::{
    RowWrite, StorageResult, StreamPosition,
    devices::{Device, DeviceRow, DeviceStore, TokenOwner, device_from_row, token_owner_from_row},
    keys::{PURGE_DEVICE, PURGE_DEVICES_EXCEPT, RECORD_CHANGE},
};

pub(super) struct DeviceStoreSql(pub Pools);

#[async_trait]
impl DeviceStore for DeviceStoreSql {
    async fn upsert_with_token(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
        token_hash: &[u8],
        now_ms: i64,
    ) -> StorageResult<()> {
        let mut tx = self.0.writer().begin().await?;
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, created_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ts = excluded.last_seen_ts",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(display_name)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO access_tokens (token_hash, user_id, device_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_token(&self, token_hash: &[u8]) -> StorageResult<Option<TokenOwner>> {
        sqlx::query_as::<_, (String, String)>(
            "SELECT t.user_id, t.device_id FROM access_tokens t JOIN users u ON u.user_id = t.user_id \
             WHERE t.token_hash = $1 AND NOT u.deactivated",
        )
        .bind(token_hash)
        .fetch_optional(self.0.reader())
        .await?
        .map(token_owner_from_row)
        .transpose()
    }

    async fn get(&self, user_id: &UserId, device_id: &DeviceId) -> StorageResult<Option<Device>> {
        sqlx::query_as::<_, DeviceRow>("SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_at FROM devices WHERE user_id = $1 AND device_id = $2")
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .fetch_optional(self.0.reader())
        .await?
        .map(device_from_row)
        .transpose()
    }

    async fn list(&self, user_id: &UserId) -> StorageResult<Vec<Device>> {
        sqlx::query_as::<_, DeviceRow>("SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_at FROM devices WHERE user_id = $1 ORDER BY created_at, device_id")
        .bind(user_id.as_str())
        .fetch_all(self.0.reader())
        .await?
        .into_iter()
        .map(device_from_row)
        .collect()
    }

    async fn set_display_name(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
    ) -> StorageResult<RowWrite> {
        let done = sqlx::query("UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2")
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(display_name)
            .execute(self.0.writer())
            .await?;
        Ok(RowWrite::from_rows(done.rows_affected()))
    }

    async fn touch(&self, user_id: &UserId, device_id: &DeviceId, ts: i64, ip: Option<&str>) -> StorageResult<()> {
        sqlx::query("UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE user_id = $1 AND device_id = $2")
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(ts)
            .bind(ip)
            .execute(self.0.writer())
            .await?;
        Ok(())
    }

    async fn delete(&self, user_id: &UserId, device_ids: &[OwnedDeviceId], pos: &StreamPosition) -> StorageResult<u64> {
        let mut tx = self.0.writer().begin().await?;
        dialect::lock_devices(&mut tx, user_id, device_ids).await?;
        for device_id in device_ids {
            for sql in PURGE_DEVICE {
                sqlx::query(sql).bind(user_id.as_str()).bind(device_id.as_str()).execute(&mut *tx).await?;
            }
        }
        sqlx::query(concat!("DELETE FROM access_tokens WHERE user_id = $1 AND device_id ", dialect::in_list!(2)))
            .bind(user_id.as_str())
            .bind(dialect::list(device_ids))
            .execute(&mut *tx)
            .await?;
        let deleted =
            sqlx::query(concat!("DELETE FROM devices WHERE user_id = $1 AND device_id ", dialect::in_list!(2)))
                .bind(user_id.as_str())
                .bind(dialect::list(device_ids))
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if deleted > 0 {
            sqlx::query(RECORD_CHANGE).bind(user_id.as_str()).bind(pos.get()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn delete_all_except(
        &self,
        user_id: &UserId,
        keep: Option<&DeviceId>,
        pos: &StreamPosition,
    ) -> StorageResult<u64> {
        let keep = keep.map_or("", DeviceId::as_str);
        let mut tx = self.0.writer().begin().await?;
        dialect::lock_other_devices(&mut tx, user_id, keep).await?;
        for sql in PURGE_DEVICES_EXCEPT {
            sqlx::query(sql).bind(user_id.as_str()).bind(keep).execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2")
            .bind(user_id.as_str())
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id <> $2")
            .bind(user_id.as_str())
            .bind(keep)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted > 0 {
            sqlx::query(RECORD_CHANGE).bind(user_id.as_str()).bind(pos.get()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn revoke_tokens_except(&self, user_id: &UserId, keep: Option<&DeviceId>) -> StorageResult<u64> {
        let done = sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2")
            .bind(user_id.as_str())
            .bind(keep.map_or("", DeviceId::as_str))
            .execute(self.0.writer())
            .await?;
        Ok(done.rows_affected())
    }
}
