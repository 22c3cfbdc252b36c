use async_trait::async_trait;
use ruma::UserId;

use super::Pools;
use crate::storage::{StorageResult, filters::FilterStore};

pub(super) struct FilterStoreSql(pub Pools);

#[async_trait]
impl FilterStore for FilterStoreSql {
    async fn put(&self, user_id: &UserId, filter_id: &str, json: &str) -> StorageResult<()> {
        sqlx::query("INSERT INTO filters (user_id, filter_id, json) VALUES ($1, $2, $3)")
            .bind(user_id.as_str())
            .bind(filter_id)
            .bind(json)
            .execute(self.0.writer())
            .await?;
        Ok(())
    }

    async fn get(&self, user_id: &UserId, filter_id: &str) -> StorageResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT json FROM filters WHERE user_id = $1 AND filter_id = $2")
            .bind(user_id.as_str())
            .bind(filter_id)
            .fetch_optional(self.0.reader())
            .await?)
    }
}
