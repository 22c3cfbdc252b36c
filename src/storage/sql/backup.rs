use async_trait::async_trait;
use ruma::UserId;

use super::{Pools, dialect};
use crate::storage::{
    RowWrite, StorageResult,
    backup::{
        BackupKey, BackupKeyRow, BackupStore, BackupVersion, KeyScope, PutKeysOutcome, is_better, key_from_row,
        scope_binds,
    },
};

pub(super) struct BackupStoreSql(pub Pools);

const VERSION_SQL: &str = "SELECT v.version, v.algorithm, v.etag, \
       (SELECT COUNT(*) FROM backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version) \
     FROM backup_versions v \
     WHERE v.user_id = $1 AND NOT v.deleted AND (CAST($2 AS BIGINT) IS NULL OR v.version = $2) \
     ORDER BY v.version DESC LIMIT 1";

const LIVE_SQL: &str = "SELECT version FROM backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted";

const ETAG_AND_COUNT_SQL: &str = "SELECT v.etag, \
       (SELECT COUNT(*) FROM backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version) \
     FROM backup_versions v WHERE v.user_id = $1 AND v.version = $2";

#[async_trait]
impl BackupStore for BackupStoreSql {
    async fn create_version(&self, user_id: &UserId, algorithm: &str) -> StorageResult<i64> {
        let mut tx = self.0.writer().begin().await?;
        // Serialises the user's version changes and uploads, so "current" holds until commit.
        dialect::lock_user(&mut tx, user_id).await?;
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM backup_versions WHERE user_id = $1")
                .bind(user_id.as_str())
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("INSERT INTO backup_versions (user_id, version, algorithm) VALUES ($1, $2, $3)")
            .bind(user_id.as_str())
            .bind(version)
            .bind(algorithm)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn version(&self, user_id: &UserId, version: Option<i64>) -> StorageResult<Option<BackupVersion>> {
        let row: Option<(i64, String, i64, i64)> =
            sqlx::query_as(VERSION_SQL).bind(user_id.as_str()).bind(version).fetch_optional(self.0.reader()).await?;
        Ok(row.map(|(version, algorithm, etag, count)| BackupVersion { version, algorithm, etag, count }))
    }

    async fn update_version(&self, user_id: &UserId, version: i64, algorithm: &str) -> StorageResult<RowWrite> {
        let done = sqlx::query(
            "UPDATE backup_versions SET algorithm = $3 WHERE user_id = $1 AND version = $2 AND NOT deleted",
        )
        .bind(user_id.as_str())
        .bind(version)
        .bind(algorithm)
        .execute(self.0.writer())
        .await?;
        Ok(RowWrite::from_rows(done.rows_affected()))
    }

    async fn delete_version(&self, user_id: &UserId, version: i64) -> StorageResult<RowWrite> {
        let mut tx = self.0.writer().begin().await?;
        // Serialises the user's version changes and uploads, so "current" holds until commit.
        dialect::lock_user(&mut tx, user_id).await?;
        let done = sqlx::query(
            "UPDATE backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2 AND NOT deleted",
        )
        .bind(user_id.as_str())
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(RowWrite::NotFound);
        }
        sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id.as_str())
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RowWrite::Written)
    }

    async fn put_keys(&self, user_id: &UserId, version: i64, keys: &[BackupKey]) -> StorageResult<PutKeysOutcome> {
        let mut tx = self.0.writer().begin().await?;
        // Serialises the user's version changes and uploads, so "current" holds until commit.
        dialect::lock_user(&mut tx, user_id).await?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM backup_versions WHERE user_id = $1 AND NOT deleted")
                .bind(user_id.as_str())
                .fetch_one(&mut *tx)
                .await?;
        match current {
            None => return Ok(PutKeysOutcome::NoSuchVersion),
            Some(current) if current != version => return Ok(PutKeysOutcome::NotCurrent { current }),
            Some(_) => {}
        }
        let mut changed = false;
        for key in keys {
            let old: Option<(i64, i64, bool)> = sqlx::query_as(
                "SELECT first_message_index, forwarded_count, is_verified FROM backup_keys \
                 WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
            )
            .bind(user_id.as_str())
            .bind(version)
            .bind(key.room_id.as_str())
            .bind(&key.session_id)
            .fetch_optional(&mut *tx)
            .await?;
            if old.is_some_and(|old| !is_better(key, old)) {
                continue;
            }
            sqlx::query(
                "INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index, \
                   forwarded_count, is_verified, key_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET \
                   first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count, \
                   is_verified = excluded.is_verified, key_json = excluded.key_json",
            )
            .bind(user_id.as_str())
            .bind(version)
            .bind(key.room_id.as_str())
            .bind(&key.session_id)
            .bind(key.first_message_index)
            .bind(key.forwarded_count)
            .bind(key.is_verified)
            .bind(&key.json)
            .execute(&mut *tx)
            .await?;
            changed = true;
        }
        if changed {
            sqlx::query("UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2")
                .bind(user_id.as_str())
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
        let (etag, count): (i64, i64) =
            sqlx::query_as(ETAG_AND_COUNT_SQL).bind(user_id.as_str()).bind(version).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(PutKeysOutcome::Stored { etag, count })
    }

    async fn keys(&self, user_id: &UserId, version: i64, scope: KeyScope<'_>) -> StorageResult<Option<Vec<BackupKey>>> {
        let mut conn = self.0.reader().acquire().await?;
        let live: Option<i64> =
            sqlx::query_scalar(LIVE_SQL).bind(user_id.as_str()).bind(version).fetch_optional(&mut *conn).await?;
        if live.is_none() {
            return Ok(None);
        }
        let (room, session) = scope_binds(scope);
        let rows: Vec<BackupKeyRow> = sqlx::query_as(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, key_json FROM backup_keys \
             WHERE user_id = $1 AND version = $2 AND (CAST($3 AS TEXT) IS NULL OR room_id = $3) \
               AND (CAST($4 AS TEXT) IS NULL OR session_id = $4) \
             ORDER BY room_id, session_id",
        )
        .bind(user_id.as_str())
        .bind(version)
        .bind(room)
        .bind(session)
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(key_from_row).collect::<anyhow::Result<_>>().map(Some)
    }

    async fn delete_keys(
        &self,
        user_id: &UserId,
        version: i64,
        scope: KeyScope<'_>,
    ) -> StorageResult<Option<(i64, i64)>> {
        let mut tx = self.0.writer().begin().await?;
        let live: Option<i64> =
            sqlx::query_scalar(LIVE_SQL).bind(user_id.as_str()).bind(version).fetch_optional(&mut *tx).await?;
        if live.is_none() {
            return Ok(None);
        }
        let (room, session) = scope_binds(scope);
        let deleted = sqlx::query(
            "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2 \
               AND (CAST($3 AS TEXT) IS NULL OR room_id = $3) AND (CAST($4 AS TEXT) IS NULL OR session_id = $4)",
        )
        .bind(user_id.as_str())
        .bind(version)
        .bind(room)
        .bind(session)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted > 0 {
            sqlx::query("UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2")
                .bind(user_id.as_str())
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
        let (etag, count): (i64, i64) =
            sqlx::query_as(ETAG_AND_COUNT_SQL).bind(user_id.as_str()).bind(version).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some((etag, count)))
    }
}
