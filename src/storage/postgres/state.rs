use async_trait::async_trait;
use ruma::{OwnedEventId, RoomId, UserId};

use super::PgDb;
use crate::storage::{
    StorageResult,
    state::{Membership, MembershipRow, RoomHeadRow, StateEntry, StateStore, membership_from_row, resolve_chain},
};

pub(super) struct PgState(pub PgDb);

#[async_trait]
impl StateStore for PgState {
    async fn group_state(&self, group: i64) -> StorageResult<Vec<StateEntry>> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "WITH RECURSIVE chain(id, prev_id, n) AS ( \
               SELECT id, prev_id, 0::BIGINT FROM state_groups WHERE id = $1 \
               UNION ALL \
               SELECT g.id, g.prev_id, c.n + 1 FROM state_groups g JOIN chain c ON g.id = c.prev_id) \
             SELECT e.event_type, e.state_key, e.event_id, c.n FROM chain c \
             JOIN state_group_entries e ON e.group_id = c.id",
        )
        .bind(group)
        .fetch_all(&self.0.pool)
        .await?;
        resolve_chain(rows)
    }

    async fn group_lookup(&self, group: i64, event_type: &str, state_key: &str) -> StorageResult<Option<OwnedEventId>> {
        let id: Option<String> = sqlx::query_scalar(
            "WITH RECURSIVE chain(id, prev_id, n) AS ( \
               SELECT id, prev_id, 0 FROM state_groups WHERE id = $1 \
               UNION ALL \
               SELECT g.id, g.prev_id, c.n + 1 FROM state_groups g JOIN chain c ON g.id = c.prev_id) \
             SELECT e.event_id FROM chain c JOIN state_group_entries e ON e.group_id = c.id \
             WHERE e.event_type = $2 AND e.state_key = $3 ORDER BY c.n LIMIT 1",
        )
        .bind(group)
        .bind(event_type)
        .bind(state_key)
        .fetch_optional(&self.0.pool)
        .await?;
        Ok(id.map(OwnedEventId::try_from).transpose()?)
    }

    async fn current_state(&self, room_id: &RoomId) -> StorageResult<Vec<StateEntry>> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1")
                .bind(room_id.as_str())
                .fetch_all(&self.0.pool)
                .await?;
        rows.into_iter().map(|(t, k, e)| Ok((t, k, e.try_into()?))).collect()
    }

    async fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StorageResult<Option<OwnedEventId>> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT event_id FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
        )
        .bind(room_id.as_str())
        .bind(event_type)
        .bind(state_key)
        .fetch_optional(&self.0.pool)
        .await?;
        Ok(id.map(OwnedEventId::try_from).transpose()?)
    }

    async fn room_head(&self, room_id: &RoomId) -> StorageResult<Option<RoomHeadRow>> {
        let mut conn = self.0.pool.acquire().await?;
        let version: Option<String> = sqlx::query_scalar("SELECT room_version FROM rooms WHERE room_id = $1")
            .bind(room_id.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        let Some(room_version) = version else { return Ok(None) };
        let extremities: Vec<(String, i64)> = sqlx::query_as(
            "SELECT x.event_id, e.depth FROM room_extremities x JOIN events e ON e.event_id = x.event_id \
             WHERE x.room_id = $1",
        )
        .bind(room_id.as_str())
        .fetch_all(&mut *conn)
        .await?;
        let latest: Option<(i64, i32)> = sqlx::query_as(
            "SELECT e.state_group, g.chain_len FROM events e JOIN state_groups g ON g.id = e.state_group \
             WHERE e.room_id = $1 ORDER BY e.stream_pos DESC LIMIT 1",
        )
        .bind(room_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        let Some((state_group, chain_len)) = latest else { return Ok(None) };
        let extremities =
            extremities.into_iter().map(|(id, depth)| Ok((id.try_into()?, depth))).collect::<anyhow::Result<_>>()?;
        Ok(Some(RoomHeadRow { room_version, extremities, state_group, chain_len }))
    }

    async fn membership(&self, room_id: &RoomId, user_id: &UserId) -> StorageResult<Option<Membership>> {
        sqlx::query_as::<_, MembershipRow>(
            "SELECT room_id, user_id, membership, event_id, stream_pos, forgotten FROM memberships \
             WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .fetch_optional(&self.0.pool)
        .await?
        .map(membership_from_row)
        .transpose()
    }

    async fn user_rooms(&self, user_id: &UserId, memberships: &[&str]) -> StorageResult<Vec<Membership>> {
        sqlx::query_as::<_, MembershipRow>(
            "SELECT room_id, user_id, membership, event_id, stream_pos, forgotten FROM memberships \
             WHERE user_id = $1 AND membership = ANY($2) ORDER BY stream_pos",
        )
        .bind(user_id.as_str())
        .bind(memberships)
        .fetch_all(&self.0.pool)
        .await?
        .into_iter()
        .map(membership_from_row)
        .collect()
    }

    async fn room_members(&self, room_id: &RoomId, memberships: &[&str]) -> StorageResult<Vec<Membership>> {
        sqlx::query_as::<_, MembershipRow>(
            "SELECT room_id, user_id, membership, event_id, stream_pos, forgotten FROM memberships \
             WHERE room_id = $1 AND membership = ANY($2) ORDER BY stream_pos",
        )
        .bind(room_id.as_str())
        .bind(memberships)
        .fetch_all(&self.0.pool)
        .await?
        .into_iter()
        .map(membership_from_row)
        .collect()
    }

    async fn forget(&self, room_id: &RoomId, user_id: &UserId) -> StorageResult<bool> {
        let done = sqlx::query("UPDATE memberships SET forgotten = TRUE WHERE room_id = $1 AND user_id = $2")
            .bind(room_id.as_str())
            .bind(user_id.as_str())
            .execute(&self.0.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
