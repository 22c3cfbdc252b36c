//! Sync filters uploaded by clients.

use async_trait::async_trait;
use ruma::UserId;

use super::StorageResult;

#[async_trait]
pub trait FilterStore: Send + Sync {
    async fn put(&self, user_id: &UserId, filter_id: &str, json: &str) -> StorageResult<()>;

    async fn get(&self, user_id: &UserId, filter_id: &str) -> StorageResult<Option<String>>;
}
