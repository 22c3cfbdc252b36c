use async_trait::async_trait;
use ruma::{RoomId, UserId};

use super::{Pools, dialect};
use crate::storage::{
    RowWrite, StorageResult,
    push::{
        NotificationRow, PushStore, PusherDbRow, PusherRow, QueueDbRow, QueuedPush, UnreadCounts, pusher_from_row,
        queued_from_row, unread_from_rows,
    },
};

pub(super) struct PushStoreSql(pub Pools);

#[async_trait]
impl PushStore for PushStoreSql {
    async fn pushers(&self, user_id: &UserId) -> StorageResult<Vec<PusherRow>> {
        sqlx::query_as::<_, PusherDbRow>(
            "SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, \
             created_at FROM pushers WHERE user_id = $1 ORDER BY created_at",
        )
        .bind(user_id.as_str())
        .fetch_all(self.0.reader())
        .await?
        .into_iter()
        .map(pusher_from_row)
        .collect()
    }

    async fn pusher(&self, user_id: &UserId, app_id: &str, pushkey: &str) -> StorageResult<Option<PusherRow>> {
        sqlx::query_as::<_, PusherDbRow>(
            "SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, \
             created_at FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
        )
        .bind(user_id.as_str())
        .bind(app_id)
        .bind(pushkey)
        .fetch_optional(self.0.reader())
        .await?
        .map(pusher_from_row)
        .transpose()
    }

    async fn set_pusher(&self, p: &PusherRow, append: bool) -> StorageResult<()> {
        let mut tx = self.0.writer().begin().await?;
        if !append {
            sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
                .bind(&p.app_id)
                .bind(&p.pushkey)
                .bind(p.user_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, \
             lang, data, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind, \
             app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name, \
             profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data",
        )
        .bind(p.user_id.as_str())
        .bind(&p.app_id)
        .bind(&p.pushkey)
        .bind(&p.kind)
        .bind(&p.app_display_name)
        .bind(&p.device_display_name)
        .bind(&p.profile_tag)
        .bind(&p.lang)
        .bind(&p.data)
        .bind(p.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_pusher(&self, user_id: &UserId, app_id: &str, pushkey: &str) -> StorageResult<RowWrite> {
        let mut tx = self.0.writer().begin().await?;
        sqlx::query("DELETE FROM push_queue WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
            .bind(user_id.as_str())
            .bind(app_id)
            .bind(pushkey)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
            .bind(user_id.as_str())
            .bind(app_id)
            .bind(pushkey)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RowWrite::from_rows(done.rows_affected()))
    }

    async fn delete_pushkey(&self, app_id: &str, pushkey: &str) -> StorageResult<u64> {
        let mut tx = self.0.writer().begin().await?;
        sqlx::query("DELETE FROM push_queue WHERE app_id = $1 AND pushkey = $2")
            .bind(app_id)
            .bind(pushkey)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2")
            .bind(app_id)
            .bind(pushkey)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn due(&self, now_ms: i64, limit: i64) -> StorageResult<Vec<QueuedPush>> {
        sqlx::query_as::<_, QueueDbRow>(
            "SELECT id, user_id, app_id, pushkey, event_id, room_id, highlight, actions, attempts FROM push_queue \
             WHERE next_attempt_at <= $1 ORDER BY id LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(self.0.reader())
        .await?
        .into_iter()
        .map(queued_from_row)
        .collect()
    }

    async fn next_due(&self) -> StorageResult<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM push_queue").fetch_one(self.0.reader()).await?)
    }

    async fn delete_queued(&self, id: i64) -> StorageResult<()> {
        sqlx::query("DELETE FROM push_queue WHERE id = $1").bind(id).execute(self.0.writer()).await?;
        Ok(())
    }

    async fn reschedule(&self, id: i64, attempts: i32, next_attempt_at: i64) -> StorageResult<()> {
        sqlx::query("UPDATE push_queue SET attempts = $2, next_attempt_at = $3 WHERE id = $1")
            .bind(id)
            .bind(attempts)
            .bind(next_attempt_at)
            .execute(self.0.writer())
            .await?;
        Ok(())
    }

    async fn unread(&self, user_id: &UserId, room_id: &RoomId) -> StorageResult<Vec<(String, UnreadCounts)>> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(concat!(
            "SELECT thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END) FROM event_push_actions \
             WHERE user_id = $1 AND room_id = $2 AND stream_pos > ",
            dialect::greatest!(),
            "( \
               COALESCE((SELECT MAX(r.event_pos) FROM receipts r WHERE r.room_id = $2 AND r.user_id = $1 \
                 AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id IN ('', 'main')), 0), \
               COALESCE((SELECT m.stream_pos FROM memberships m WHERE m.room_id = $2 AND m.user_id = $1), 0)) \
             GROUP BY thread_id",
        ))
        .bind(user_id.as_str())
        .bind(room_id.as_str())
        .fetch_all(self.0.reader())
        .await?;
        Ok(unread_from_rows(rows))
    }

    async fn total_unread(&self, user_id: &UserId) -> StorageResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM event_push_actions a WHERE a.user_id = $1 AND a.stream_pos > COALESCE( \
             (SELECT MAX(r.event_pos) FROM receipts r WHERE r.room_id = a.room_id AND r.user_id = a.user_id \
              AND r.receipt_type IN ('m.read', 'm.read.private')), 0) \
             AND a.stream_pos > COALESCE( \
             (SELECT m.stream_pos FROM memberships m WHERE m.room_id = a.room_id AND m.user_id = a.user_id), 0)",
        )
        .bind(user_id.as_str())
        .fetch_one(self.0.reader())
        .await?)
    }

    async fn notifications(
        &self,
        user_id: &UserId,
        before: i64,
        limit: i64,
        only_highlight: bool,
    ) -> StorageResult<Vec<NotificationRow>> {
        let rows: Vec<(String, String, i64, String, i64)> = sqlx::query_as(
            "SELECT event_id, room_id, stream_pos, actions, ts FROM event_push_actions \
             WHERE user_id = $1 AND stream_pos < $2 AND (highlight OR NOT $3) ORDER BY stream_pos DESC LIMIT $4",
        )
        .bind(user_id.as_str())
        .bind(before)
        .bind(only_highlight)
        .bind(limit)
        .fetch_all(self.0.reader())
        .await?;
        rows.into_iter()
            .map(|(event_id, room_id, stream_pos, actions, ts)| {
                Ok(NotificationRow { event_id, room_id: room_id.try_into()?, stream_pos, actions, ts })
            })
            .collect()
    }
}
