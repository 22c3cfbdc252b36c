//! `StateStore` for both backends: one body, compiled once against each backend's `Db`.

use async_trait::async_trait;
use ruma::{OwnedEventId, RoomId, UserId};

use super::{Pools, dialect};
use crate::storage::{
    StorageResult,
    state::{Membership, MembershipRow, RoomHeadRow, StateEntry, StateStore, membership_from_row, resolve_chain},
};

pub(super) struct StateStoreSql(pub Pools);

/// The delta chain of a state group, nearest first: `(group, distance)`.
const CHAIN: &str = "WITH RECURSIVE chain(id, prev_id, n) AS ( \
       SELECT id, prev_id, CAST(0 AS BIGINT) FROM state_groups WHERE id = $1 \
       UNION ALL \
       SELECT g.id, g.prev_id, c.n + 1 FROM state_groups g JOIN chain c ON g.id = c.prev_id) ";

#[async_trait]
impl StateStore for StateStoreSql {
    async fn group_state(&self, group: i64) -> StorageResult<Vec<StateEntry>> {
        let sql = format!(
            "{CHAIN} SELECT e.event_type, e.state_key, e.event_id, c.n FROM chain c \
             JOIN state_group_entries e ON e.group_id = c.id"
        );
        let rows: Vec<(String, String, String, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(group).fetch_all(self.0.reader()).await?;
        resolve_chain(rows)
    }

    async fn group_chain_len(&self, group: i64) -> StorageResult<i32> {
        let len: i32 = sqlx::query_scalar("SELECT chain_len FROM state_groups WHERE id = $1")
            .bind(group)
            .fetch_one(self.0.reader())
            .await?;
        Ok(len)
    }

    async fn group_lookup(&self, group: i64, event_type: &str, state_key: &str) -> StorageResult<Option<OwnedEventId>> {
        let sql = format!(
            "{CHAIN} SELECT e.event_id FROM chain c JOIN state_group_entries e ON e.group_id = c.id \
             WHERE e.event_type = $2 AND e.state_key = $3 ORDER BY c.n LIMIT 1"
        );
        let id: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(group)
            .bind(event_type)
            .bind(state_key)
            .fetch_optional(self.0.reader())
            .await?;
        Ok(id.map(OwnedEventId::try_from).transpose()?)
    }

    async fn current_state(&self, room_id: &RoomId) -> StorageResult<Vec<StateEntry>> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1")
                .bind(room_id.as_str())
                .fetch_all(self.0.reader())
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
        .fetch_optional(self.0.reader())
        .await?;
        Ok(id.map(OwnedEventId::try_from).transpose()?)
    }

    async fn room_head(&self, room_id: &RoomId) -> StorageResult<Option<RoomHeadRow>> {
        let mut conn = self.0.reader().acquire().await?;
        let room: Option<(String, Option<i64>, Option<i32>)> = sqlx::query_as(
            "SELECT r.room_version, r.current_group, g.chain_len FROM rooms r \
             LEFT JOIN state_groups g ON g.id = r.current_group WHERE r.room_id = $1",
        )
        .bind(room_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        let Some((room_version, Some(current_group), Some(chain_len))) = room else { return Ok(None) };
        let extremities: Vec<(String, i64)> = sqlx::query_as(
            "SELECT x.event_id, e.depth FROM room_extremities x JOIN events e ON e.event_id = x.event_id \
             WHERE x.room_id = $1",
        )
        .bind(room_id.as_str())
        .fetch_all(&mut *conn)
        .await?;
        let extremities =
            extremities.into_iter().map(|(id, depth)| Ok((id.try_into()?, depth))).collect::<anyhow::Result<_>>()?;
        Ok(Some(RoomHeadRow { room_version, extremities, current_group, chain_len }))
    }

    async fn membership(&self, room_id: &RoomId, user_id: &UserId) -> StorageResult<Option<Membership>> {
        sqlx::query_as::<_, MembershipRow>(
            "SELECT room_id, user_id, membership, event_id, stream_pos, forgotten FROM memberships \
             WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .fetch_optional(self.0.reader())
        .await?
        .map(membership_from_row)
        .transpose()
    }

    async fn user_rooms(&self, user_id: &UserId, memberships: &[&str]) -> StorageResult<Vec<Membership>> {
        let sql = format!(
            "SELECT room_id, user_id, membership, event_id, stream_pos, forgotten FROM memberships \
             WHERE user_id = $1 AND {} ORDER BY stream_pos",
            concat!("membership ", dialect::in_list!(2))
        );
        sqlx::query_as::<_, MembershipRow>(sqlx::AssertSqlSafe(sql))
            .bind(user_id.as_str())
            .bind(dialect::list(memberships))
            .fetch_all(self.0.reader())
            .await?
            .into_iter()
            .map(membership_from_row)
            .collect()
    }

    async fn room_members(&self, room_id: &RoomId, memberships: &[&str]) -> StorageResult<Vec<Membership>> {
        let sql = format!(
            "SELECT room_id, user_id, membership, event_id, stream_pos, forgotten FROM memberships \
             WHERE room_id = $1 AND {} ORDER BY stream_pos",
            concat!("membership ", dialect::in_list!(2))
        );
        sqlx::query_as::<_, MembershipRow>(sqlx::AssertSqlSafe(sql))
            .bind(room_id.as_str())
            .bind(dialect::list(memberships))
            .fetch_all(self.0.reader())
            .await?
            .into_iter()
            .map(membership_from_row)
            .collect()
    }

    async fn forget(&self, room_id: &RoomId, user_id: &UserId) -> StorageResult<bool> {
        let done = sqlx::query("UPDATE memberships SET forgotten = TRUE WHERE room_id = $1 AND user_id = $2")
            .bind(room_id.as_str())
            .bind(user_id.as_str())
            .execute(self.0.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
