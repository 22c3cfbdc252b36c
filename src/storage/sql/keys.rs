use async_trait::async_trait;
use ruma::{DeviceId, OwnedUserId, UserId};

use super::{Pools, dialect};
use crate::storage::{
    StorageResult, StreamPosition,
    keys::{
        CHANGED_SQL, ClaimedKey, CrossSigningKeyRow, CrossSigningWrite, DeviceKeysRow, DeviceKeysSqlRow, KeySignature,
        KeyStore, KeyUpload, LEFT_SQL, MasterKeyCheck, RECORD_CHANGE, SHARING_SQL, SignatureRow, UploadOutcome,
        device_keys_from_row, signature_from_row, user_ids,
    },
};

pub(super) struct KeyStoreSql(pub Pools);

#[async_trait]
impl KeyStore for KeyStoreSql {
    async fn upload(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        upload: &KeyUpload<'_>,
        pos: &StreamPosition,
    ) -> StorageResult<UploadOutcome> {
        let mut tx = self.0.writer().begin().await?;
        let exists: Option<String> = sqlx::query_scalar(concat!(
            "SELECT device_id FROM devices WHERE user_id = $1 AND device_id = $2",
            dialect::for_share!()
        ))
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            return Ok(UploadOutcome::NoDevice);
        }
        let mut device_keys_changed = false;
        if let Some(json) = upload.device_keys {
            let old: Option<String> =
                sqlx::query_scalar("SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            if old.as_deref() != Some(json) {
                sqlx::query(
                    "INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(json)
                .execute(&mut *tx)
                .await?;
                sqlx::query(RECORD_CHANGE).bind(user_id.as_str()).bind(pos.get()).execute(&mut *tx).await?;
                device_keys_changed = true;
            }
        }
        for key in &upload.one_time_keys {
            let inserted = sqlx::query(
                "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(key.algorithm)
            .bind(key.key_id)
            .bind(key.json)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                let stored: Option<String> = sqlx::query_scalar(
                    "SELECT key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(key.key_id)
                .fetch_optional(&mut *tx)
                .await?;
                if stored.as_deref() != Some(key.json) {
                    return Ok(UploadOutcome::OneTimeKeyConflict(key.key_id.to_owned()));
                }
            }
        }
        for key in &upload.fallback_keys {
            sqlx::query(
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) \
                 VALUES ($1, $2, $3, $4, $5, FALSE) \
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET \
                   used = (fallback_keys.used AND fallback_keys.key_id = excluded.key_id \
                           AND fallback_keys.key_json = excluded.key_json), \
                   key_id = excluded.key_id, key_json = excluded.key_json",
            )
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(key.algorithm)
            .bind(key.key_id)
            .bind(key.json)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(UploadOutcome::Stored { device_keys_changed })
    }

    async fn one_time_key_counts(&self, user_id: &UserId, device_id: &DeviceId) -> StorageResult<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .fetch_all(self.0.reader())
        .await?)
    }

    async fn unused_fallback_algorithms(&self, user_id: &UserId, device_id: &DeviceId) -> StorageResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used ORDER BY algorithm",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .fetch_all(self.0.reader())
        .await?)
    }

    async fn device_keys(&self, user_id: &UserId) -> StorageResult<Vec<DeviceKeysRow>> {
        let rows: Vec<DeviceKeysSqlRow> = sqlx::query_as(
            "SELECT k.device_id, k.key_json, d.display_name FROM device_keys k \
             JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id \
             WHERE k.user_id = $1 ORDER BY k.device_id",
        )
        .bind(user_id.as_str())
        .fetch_all(self.0.reader())
        .await?;
        Ok(rows.into_iter().map(device_keys_from_row).collect())
    }

    async fn claim(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        algorithm: &str,
    ) -> StorageResult<Option<ClaimedKey>> {
        // One statement, which each backend makes safe against concurrent claims.
        let claimed: Option<(String, String)> = sqlx::query_as(dialect::CLAIM_ONE_TIME_KEY)
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(algorithm)
            .fetch_optional(self.0.writer())
            .await?;
        let claimed = match claimed {
            Some(key) => Some(key),
            None => {
                sqlx::query_as(
                    "UPDATE fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
                     RETURNING key_id, key_json",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(algorithm)
                .fetch_optional(self.0.writer())
                .await?
            }
        };
        Ok(claimed.map(|(key_id, json)| ClaimedKey { key_id, json }))
    }

    async fn cross_signing_keys(&self, user_id: &UserId) -> StorageResult<Vec<CrossSigningKeyRow>> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT key_type, key_id, key_json FROM cross_signing_keys WHERE user_id = $1")
                .bind(user_id.as_str())
                .fetch_all(self.0.reader())
                .await?;
        Ok(rows.into_iter().map(|(key_type, key_id, json)| CrossSigningKeyRow { key_type, key_id, json }).collect())
    }

    async fn put_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: &[CrossSigningKeyRow],
        check: MasterKeyCheck<'_>,
        pos: &StreamPosition,
    ) -> StorageResult<CrossSigningWrite> {
        let mut tx = self.0.writer().begin().await?;
        // Serialises the user's cross-signing uploads, so the check below holds until commit.
        dialect::lock_user(&mut tx, user_id).await?;
        if let MasterKeyCheck::Is(expected) = check {
            let master: Option<String> =
                sqlx::query_scalar("SELECT key_id FROM cross_signing_keys WHERE user_id = $1 AND key_type = 'master'")
                    .bind(user_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            if master.as_deref() != expected {
                return Ok(CrossSigningWrite::MasterKeyChanged);
            }
        }
        for key in keys {
            sqlx::query(
                "INSERT INTO cross_signing_keys (user_id, key_type, key_id, key_json) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, key_type) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json",
            )
            .bind(user_id.as_str())
            .bind(&key.key_type)
            .bind(&key.key_id)
            .bind(&key.json)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(RECORD_CHANGE).bind(user_id.as_str()).bind(pos.get()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(CrossSigningWrite::Stored)
    }

    async fn signatures(&self, target_user_id: &UserId) -> StorageResult<Vec<KeySignature>> {
        sqlx::query_as::<_, SignatureRow>(
            "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature FROM key_signatures \
             WHERE target_user_id = $1",
        )
        .bind(target_user_id.as_str())
        .fetch_all(self.0.reader())
        .await?
        .into_iter()
        .map(signature_from_row)
        .collect()
    }

    async fn add_signatures(
        &self,
        signatures: &[KeySignature],
        changed: &[OwnedUserId],
        pos: &StreamPosition,
    ) -> StorageResult<()> {
        let mut tx = self.0.writer().begin().await?;
        for sig in signatures {
            sqlx::query(
                "INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(sig.target_user_id.as_str())
            .bind(&sig.target_key_id)
            .bind(sig.signer_user_id.as_str())
            .bind(&sig.signer_key_id)
            .bind(&sig.signature)
            .execute(&mut *tx)
            .await?;
        }
        for user_id in changed {
            sqlx::query(RECORD_CHANGE).bind(user_id.as_str()).bind(pos.get()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn device_list_changed(&self, user_id: &UserId, after: i64, up_to: i64) -> StorageResult<Vec<OwnedUserId>> {
        let rows: Vec<String> = sqlx::query_scalar(CHANGED_SQL)
            .bind(user_id.as_str())
            .bind(after)
            .bind(up_to)
            .fetch_all(self.0.reader())
            .await?;
        user_ids(rows)
    }

    async fn device_list_left(&self, user_id: &UserId, after: i64, up_to: i64) -> StorageResult<Vec<OwnedUserId>> {
        let rows: Vec<String> = sqlx::query_scalar(LEFT_SQL)
            .bind(user_id.as_str())
            .bind(after)
            .bind(up_to)
            .fetch_all(self.0.reader())
            .await?;
        user_ids(rows)
    }

    async fn users_sharing_room(&self, user_id: &UserId) -> StorageResult<Vec<OwnedUserId>> {
        let rows: Vec<String> =
            sqlx::query_scalar(SHARING_SQL).bind(user_id.as_str()).fetch_all(self.0.reader()).await?;
        user_ids(rows)
    }

    async fn max_stream_pos(&self) -> StorageResult<i64> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM device_list_changes").fetch_one(self.0.reader()).await?;
        Ok(max.unwrap_or(0))
    }

    async fn record_device_list_change(&self, user_id: &UserId, pos: &StreamPosition) -> StorageResult<()> {
        sqlx::query(RECORD_CHANGE).bind(user_id.as_str()).bind(pos.get()).execute(self.0.writer()).await?;
        Ok(())
    }
}
