use async_trait::async_trait;
use ruma::UserId;
use serde_json::Value as JsonValue;

use super::Pools;
use crate::storage::{
    RowWrite, StorageResult, StreamPosition,
    keys::{PURGE_USER, RECORD_CHANGE},
    users::{CreateUserOutcome, NewUser, User, UserRow, UserStore, profile_from_rows, user_from_row},
};

pub(super) struct UserStoreSql(pub Pools);

#[async_trait]
impl UserStore for UserStoreSql {
    async fn create(&self, user: NewUser) -> StorageResult<CreateUserOutcome> {
        let mut tx = self.0.writer().begin().await?;
        if let Some(hash) = &user.registration_token_hash {
            let consumed = sqlx::query(
                "UPDATE registration_tokens SET completed = completed + 1 WHERE token_hash = $1 \
                 AND (uses_allowed IS NULL OR completed < uses_allowed) \
                 AND (expiry_ts IS NULL OR expiry_ts > $2)",
            )
            .bind(hash)
            .bind(user.now_ms)
            .execute(&mut *tx)
            .await?;
            if consumed.rows_affected() == 0 {
                return Ok(CreateUserOutcome::TokenUnusable);
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO users (user_id, password_hash, is_admin, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.user_id.as_str())
        .bind(&user.password_hash)
        .bind(user.is_admin)
        .bind(user.now_ms)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(CreateUserOutcome::UserIdTaken);
        }
        for (field, value) in &user.profile {
            sqlx::query("INSERT INTO profiles (user_id, field, value) VALUES ($1, $2, $3)")
                .bind(user.user_id.as_str())
                .bind(field)
                .bind(value.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(CreateUserOutcome::Created)
    }

    async fn get(&self, user_id: &UserId) -> StorageResult<Option<User>> {
        sqlx::query_as::<_, UserRow>(
            "SELECT user_id, password_hash, is_admin, deactivated, created_at FROM users WHERE user_id = $1",
        )
        .bind(user_id.as_str())
        .fetch_optional(self.0.reader())
        .await?
        .map(user_from_row)
        .transpose()
    }

    async fn set_password_hash(&self, user_id: &UserId, hash: Option<&str>) -> StorageResult<RowWrite> {
        let done = sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
            .bind(user_id.as_str())
            .bind(hash)
            .execute(self.0.writer())
            .await?;
        Ok(RowWrite::from_rows(done.rows_affected()))
    }

    async fn deactivate(&self, user_id: &UserId, pos: &StreamPosition) -> StorageResult<RowWrite> {
        let mut tx = self.0.writer().begin().await?;
        let done = sqlx::query("UPDATE users SET deactivated = TRUE, password_hash = NULL WHERE user_id = $1")
            .bind(user_id.as_str())
            .execute(&mut *tx)
            .await?;
        for sql in [
            "DELETE FROM access_tokens WHERE user_id = $1",
            "DELETE FROM devices WHERE user_id = $1",
            "DELETE FROM profiles WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(user_id.as_str()).execute(&mut *tx).await?;
        }
        for sql in PURGE_USER {
            sqlx::query(sql).bind(user_id.as_str()).execute(&mut *tx).await?;
        }
        sqlx::query(RECORD_CHANGE).bind(user_id.as_str()).bind(pos.get()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(RowWrite::from_rows(done.rows_affected()))
    }

    async fn profile(&self, user_id: &UserId) -> StorageResult<Option<Vec<(String, JsonValue)>>> {
        let mut conn = self.0.reader().acquire().await?;
        let live: Option<bool> = sqlx::query_scalar("SELECT deactivated FROM users WHERE user_id = $1")
            .bind(user_id.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        if live != Some(false) {
            return Ok(None);
        }
        let rows = sqlx::query_as::<_, (String, String)>("SELECT field, value FROM profiles WHERE user_id = $1")
            .bind(user_id.as_str())
            .fetch_all(&mut *conn)
            .await?;
        profile_from_rows(rows).map(Some)
    }

    async fn set_profile_field(&self, user_id: &UserId, field: &str, value: Option<&JsonValue>) -> StorageResult<()> {
        let query = match value {
            Some(value) => sqlx::query(
                "INSERT INTO profiles (user_id, field, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value",
            )
            .bind(user_id.as_str())
            .bind(field)
            .bind(value.to_string()),
            None => {
                sqlx::query("DELETE FROM profiles WHERE user_id = $1 AND field = $2").bind(user_id.as_str()).bind(field)
            }
        };
        query.execute(self.0.writer()).await?;
        Ok(())
    }

    async fn count(&self) -> StorageResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(self.0.reader()).await?)
    }
}
