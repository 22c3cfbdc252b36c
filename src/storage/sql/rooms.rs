use async_trait::async_trait;
use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};

use super::{Pools, dialect};
use crate::storage::{
    StorageResult,
    rooms::{RoomInfo, RoomStore},
};

pub(super) struct RoomStoreSql(pub Pools);

#[async_trait]
impl RoomStore for RoomStoreSql {
    async fn get(&self, room_id: &RoomId) -> StorageResult<Option<RoomInfo>> {
        let row: Option<(String, String, String, bool)> =
            sqlx::query_as("SELECT room_id, room_version, creator, is_public FROM rooms WHERE room_id = $1")
                .bind(room_id.as_str())
                .fetch_optional(self.0.reader())
                .await?;
        row.map(|(room_id, room_version, creator, is_public)| {
            Ok(RoomInfo { room_id: room_id.try_into()?, room_version, creator: creator.try_into()?, is_public })
        })
        .transpose()
    }

    async fn set_public(&self, room_id: &RoomId, public: bool) -> StorageResult<bool> {
        let done = sqlx::query("UPDATE rooms SET is_public = $2 WHERE room_id = $1")
            .bind(room_id.as_str())
            .bind(public)
            .execute(self.0.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn public_rooms(&self) -> StorageResult<Vec<(OwnedRoomId, i64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT r.room_id, (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join') AS joined \
             FROM rooms r WHERE r.is_public ORDER BY joined DESC, r.room_id",
        )
        .fetch_all(self.0.reader())
        .await?;
        rows.into_iter().map(|(id, n)| Ok((id.try_into()?, n))).collect()
    }

    async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
        now_ms: i64,
    ) -> StorageResult<bool> {
        let done = sqlx::query(
            "INSERT INTO room_aliases (alias, room_id, creator, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (alias) DO NOTHING",
        )
        .bind(alias.as_str())
        .bind(room_id.as_str())
        .bind(creator.as_str())
        .bind(now_ms)
        .execute(self.0.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn resolve_alias(&self, alias: &RoomAliasId) -> StorageResult<Option<(OwnedRoomId, OwnedUserId)>> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
                .bind(alias.as_str())
                .fetch_optional(self.0.reader())
                .await?;
        row.map(|(room, creator)| Ok((room.try_into()?, creator.try_into()?))).transpose()
    }

    async fn delete_alias(&self, alias: &RoomAliasId) -> StorageResult<bool> {
        let done = sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
            .bind(alias.as_str())
            .execute(self.0.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn room_aliases(&self, room_id: &RoomId) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
            .bind(room_id.as_str())
            .fetch_all(self.0.reader())
            .await?)
    }

    async fn current_signing_key(&self) -> StorageResult<Option<(String, Vec<u8>)>> {
        Ok(sqlx::query_as(
            "SELECT key_version, secret_der FROM server_signing_keys WHERE expired_at IS NULL \
             ORDER BY created_at DESC LIMIT 1",
        )
        .fetch_optional(self.0.reader())
        .await?)
    }

    async fn insert_signing_key(&self, version: &str, der: &[u8], now_ms: i64) -> StorageResult<(String, Vec<u8>)> {
        let mut tx = self.0.writer().begin().await?;
        dialect::lock_signing_keys(&mut tx).await?;
        let existing: Option<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT key_version, secret_der FROM server_signing_keys WHERE expired_at IS NULL \
             ORDER BY created_at DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        sqlx::query("INSERT INTO server_signing_keys (key_version, secret_der, created_at) VALUES ($1, $2, $3)")
            .bind(version)
            .bind(der)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((version.to_owned(), der.to_vec()))
    }
}
