use async_trait::async_trait;

use super::Pools;
use crate::storage::{
    StorageResult,
    registration::{
        RegistrationStore, RegistrationToken, SessionRow, TokenRow, TokenUse, UiaaSession, session_from_row,
        token_from_row,
    },
};

pub(super) struct RegistrationStoreSql(pub Pools);

#[async_trait]
impl RegistrationStore for RegistrationStoreSql {
    async fn create_token(&self, hash: &[u8], token: RegistrationToken) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO registration_tokens (token_hash, prefix, uses_allowed, completed, expiry_ts, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash)
        .bind(&token.prefix)
        .bind(token.uses_allowed)
        .bind(token.completed)
        .bind(token.expiry_ts)
        .bind(token.created_at)
        .execute(self.0.writer())
        .await?;
        Ok(())
    }

    async fn get_token(&self, hash: &[u8]) -> StorageResult<Option<RegistrationToken>> {
        let row = sqlx::query_as::<_, TokenRow>("SELECT prefix, uses_allowed, completed, expiry_ts, created_at FROM registration_tokens WHERE token_hash = $1")
        .bind(hash)
        .fetch_optional(self.0.reader())
        .await?;
        Ok(row.map(token_from_row))
    }

    async fn list_tokens(&self) -> StorageResult<Vec<RegistrationToken>> {
        let rows = sqlx::query_as::<_, TokenRow>("SELECT prefix, uses_allowed, completed, expiry_ts, created_at FROM registration_tokens ORDER BY created_at")
        .fetch_all(self.0.reader())
        .await?;
        Ok(rows.into_iter().map(token_from_row).collect())
    }

    async fn delete_tokens_by_prefix(&self, prefix: &str) -> StorageResult<u64> {
        let done = sqlx::query("DELETE FROM registration_tokens WHERE prefix = $1")
            .bind(prefix)
            .execute(self.0.writer())
            .await?;
        Ok(done.rows_affected())
    }

    async fn consume_token(&self, hash: &[u8], now_ms: i64) -> StorageResult<TokenUse> {
        let done = sqlx::query(
            "UPDATE registration_tokens SET completed = completed + 1 WHERE token_hash = $1 \
             AND (uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > $2)",
        )
        .bind(hash)
        .bind(now_ms)
        .execute(self.0.writer())
        .await?;
        Ok(if done.rows_affected() > 0 { TokenUse::Consumed } else { TokenUse::Unusable })
    }

    async fn put_session(&self, session: &UiaaSession) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO uiaa_sessions (session_id, scope, completed, registration_token_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_id) DO UPDATE SET \
             completed = excluded.completed, registration_token_hash = excluded.registration_token_hash",
        )
        .bind(&session.session_id)
        .bind(&session.scope)
        .bind(serde_json::to_string(&session.completed)?)
        .bind(&session.registration_token_hash)
        .bind(session.created_at)
        .execute(self.0.writer())
        .await?;
        Ok(())
    }

    async fn get_session(&self, session_id: &str) -> StorageResult<Option<UiaaSession>> {
        sqlx::query_as::<_, SessionRow>(
            "SELECT session_id, scope, completed, registration_token_hash, created_at FROM uiaa_sessions WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(self.0.reader())
        .await?
        .map(session_from_row)
        .transpose()
    }

    async fn delete_session(&self, session_id: &str) -> StorageResult<()> {
        sqlx::query("DELETE FROM uiaa_sessions WHERE session_id = $1")
            .bind(session_id)
            .execute(self.0.writer())
            .await?;
        Ok(())
    }

    async fn prune_sessions(&self, before_ms: i64) -> StorageResult<u64> {
        let done = sqlx::query("DELETE FROM uiaa_sessions WHERE created_at < $1")
            .bind(before_ms)
            .execute(self.0.writer())
            .await?;
        Ok(done.rows_affected())
    }
}
