//! `ServerKeyStore` for both backends: one body, compiled once against each backend's `Db`.

use async_trait::async_trait;
use ruma::ServerName;

use super::Pools;
use crate::storage::{
    StorageResult,
    server_keys::{RemoteKey, ServerKeyStore},
};

pub(super) struct ServerKeyStoreSql(pub Pools);

#[async_trait]
impl ServerKeyStore for ServerKeyStoreSql {
    async fn remote_keys(&self, server_name: &ServerName) -> StorageResult<Vec<RemoteKey>> {
        let rows: Vec<(String, String, i64, bool)> = sqlx::query_as(
            "SELECT key_id, public_key, valid_until_ts, expired FROM server_keys WHERE server_name = $1",
        )
        .bind(server_name.as_str())
        .fetch_all(self.0.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key_id, public_key, valid_until_ts, expired)| RemoteKey {
                key_id,
                public_key,
                valid_until_ts,
                expired,
            })
            .collect())
    }

    async fn store_remote_keys(
        &self,
        server_name: &ServerName,
        keys: &[RemoteKey],
        fetched_at: i64,
    ) -> StorageResult<()> {
        let mut tx = self.0.writer().begin().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired, fetched_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (server_name, key_id) DO UPDATE SET \
                 public_key = excluded.public_key, valid_until_ts = excluded.valid_until_ts, \
                 expired = excluded.expired, fetched_at = excluded.fetched_at",
            )
            .bind(server_name.as_str())
            .bind(&key.key_id)
            .bind(&key.public_key)
            .bind(key.valid_until_ts)
            .bind(key.expired)
            .bind(fetched_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn store_response(&self, server_name: &ServerName, response: &str, valid_until_ts: i64) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO server_key_responses (server_name, response, valid_until_ts) VALUES ($1, $2, $3) \
             ON CONFLICT (server_name) DO UPDATE SET response = excluded.response, \
             valid_until_ts = excluded.valid_until_ts WHERE excluded.valid_until_ts >= server_key_responses.valid_until_ts",
        )
        .bind(server_name.as_str())
        .bind(response)
        .bind(valid_until_ts)
        .execute(self.0.writer())
        .await?;
        Ok(())
    }

    async fn response(&self, server_name: &ServerName) -> StorageResult<Option<(String, i64)>> {
        Ok(sqlx::query_as("SELECT response, valid_until_ts FROM server_key_responses WHERE server_name = $1")
            .bind(server_name.as_str())
            .fetch_optional(self.0.reader())
            .await?)
    }
}
