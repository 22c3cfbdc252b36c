use async_trait::async_trait;
use ruma::{DeviceId, EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};

use super::PgDb;
use crate::storage::{
    StorageResult,
    events::{Direction, EventRow, EventStore, PersistEvent, StateChange, StoredEvent, event_from_row},
};

pub(super) struct PgEvents(pub PgDb);

#[async_trait]
impl EventStore for PgEvents {
    async fn persist(&self, ev: PersistEvent<'_>) -> StorageResult<i64> {
        let mut tx = self.0.pool.begin().await?;
        if let Some(room) = &ev.new_room {
            sqlx::query("INSERT INTO rooms (room_id, room_version, creator, created_at) VALUES ($1, $2, $3, $4)")
                .bind(ev.room_id.as_str())
                .bind(room.room_version)
                .bind(room.creator.as_str())
                .bind(room.created_at)
                .execute(&mut *tx)
                .await?;
        }
        let group = match ev.state {
            StateChange::Unchanged { group } => group,
            StateChange::New { prev_group, chain_len, entries } => {
                let group: i64 = sqlx::query_scalar(
                    "INSERT INTO state_groups (room_id, prev_id, chain_len) VALUES ($1, $2, $3) RETURNING id",
                )
                .bind(ev.room_id.as_str())
                .bind(prev_group)
                .bind(chain_len)
                .fetch_one(&mut *tx)
                .await?;
                // One statement for the whole delta or snapshot, however large.
                let types: Vec<&str> = entries.iter().map(|(t, _, _)| t.as_str()).collect();
                let keys: Vec<&str> = entries.iter().map(|(_, k, _)| k.as_str()).collect();
                let ids: Vec<&str> = entries.iter().map(|(_, _, e)| e.as_str()).collect();
                sqlx::query(
                    "INSERT INTO state_group_entries (group_id, event_type, state_key, event_id) \
                     SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[])",
                )
                .bind(group)
                .bind(&types)
                .bind(&keys)
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
                group
            }
        };
        sqlx::query(
            "INSERT INTO events (stream_pos, event_id, room_id, event_type, state_key, sender, origin_server_ts, \
             depth, state_group, json, unsigned) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(ev.pos.get())
        .bind(ev.event_id.as_str())
        .bind(ev.room_id.as_str())
        .bind(ev.event_type)
        .bind(ev.state_key)
        .bind(ev.sender.as_str())
        .bind(ev.origin_server_ts)
        .bind(ev.depth)
        .bind(group)
        .bind(ev.json)
        .bind(ev.unsigned)
        .execute(&mut *tx)
        .await?;
        if let Some(state_key) = ev.state_key {
            sqlx::query(
                "INSERT INTO current_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
            )
            .bind(ev.room_id.as_str())
            .bind(ev.event_type)
            .bind(state_key)
            .bind(ev.event_id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        if let Some((user_id, membership)) = ev.membership {
            sqlx::query(
                "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten) \
                 VALUES ($1, $2, $3, $4, $5, FALSE) ON CONFLICT (room_id, user_id) DO UPDATE SET \
                 membership = excluded.membership, event_id = excluded.event_id, stream_pos = excluded.stream_pos, \
                 forgotten = FALSE",
            )
            .bind(ev.room_id.as_str())
            .bind(user_id.as_str())
            .bind(membership)
            .bind(ev.event_id.as_str())
            .bind(ev.pos.get())
            .execute(&mut *tx)
            .await?;
        }
        let prev: Vec<&str> = ev.prev_events.iter().map(|id| id.as_str()).collect();
        sqlx::query("DELETE FROM room_extremities WHERE room_id = $1 AND event_id = ANY($2)")
            .bind(ev.room_id.as_str())
            .bind(&prev)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO room_extremities (room_id, event_id) VALUES ($1, $2)")
            .bind(ev.room_id.as_str())
            .bind(ev.event_id.as_str())
            .execute(&mut *tx)
            .await?;
        if let Some(txn) = ev.txn {
            sqlx::query(
                "INSERT INTO event_txns (user_id, device_id, txn_key, txn_id, event_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(txn.user_id.as_str())
            .bind(txn.device_id.as_str())
            .bind(txn.key)
            .bind(txn.txn_id)
            .bind(ev.event_id.as_str())
            .bind(ev.origin_server_ts)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((target, redacted_json)) = ev.redaction {
            sqlx::query("UPDATE events SET json = $2, redacted_by = $3 WHERE event_id = $1")
                .bind(target.as_str())
                .bind(redacted_json)
                .bind(ev.event_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        // One statement for every recipient: a message to a large room has many.
        if !ev.push_actions.is_empty() {
            let users: Vec<&str> = ev.push_actions.iter().map(|a| a.user_id.as_str()).collect();
            let threads: Vec<&str> = ev.push_actions.iter().map(|a| a.thread_id.as_str()).collect();
            let highlights: Vec<bool> = ev.push_actions.iter().map(|a| a.highlight).collect();
            let actions: Vec<&str> = ev.push_actions.iter().map(|a| a.actions.as_str()).collect();
            sqlx::query(
                "INSERT INTO event_push_actions (user_id, event_id, room_id, stream_pos, thread_id, highlight, actions, ts) \
                 SELECT u, $2, $3, $4, t, h, a, $5 FROM UNNEST($1::text[], $6::text[], $7::bool[], $8::text[]) AS x(u, t, h, a)",
            )
            .bind(&users)
            .bind(ev.event_id.as_str())
            .bind(ev.room_id.as_str())
            .bind(ev.pos.get())
            .bind(ev.origin_server_ts)
            .bind(&threads)
            .bind(&highlights)
            .bind(&actions)
            .execute(&mut *tx)
            .await?;
        }
        for push in ev.push_queue {
            sqlx::query(
                "INSERT INTO push_queue (user_id, app_id, pushkey, event_id, room_id, highlight, actions, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(push.user_id.as_str())
            .bind(&push.app_id)
            .bind(&push.pushkey)
            .bind(ev.event_id.as_str())
            .bind(ev.room_id.as_str())
            .bind(push.highlight)
            .bind(&push.actions)
            .bind(ev.origin_server_ts)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(group)
    }

    async fn get(&self, event_id: &EventId) -> StorageResult<Option<StoredEvent>> {
        sqlx::query_as::<_, EventRow>(
            "SELECT stream_pos, event_id, room_id, state_group, json, unsigned, redacted_by FROM events WHERE event_id = $1",
        )
        .bind(event_id.as_str())
        .fetch_optional(&self.0.pool)
        .await?
        .map(event_from_row)
        .transpose()
    }

    async fn get_many(&self, event_ids: &[OwnedEventId]) -> StorageResult<Vec<StoredEvent>> {
        let ids: Vec<&str> = event_ids.iter().map(|id| id.as_str()).collect();
        sqlx::query_as::<_, EventRow>(
            "SELECT stream_pos, event_id, room_id, state_group, json, unsigned, redacted_by FROM events \
             WHERE event_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.0.pool)
        .await?
        .into_iter()
        .map(event_from_row)
        .collect()
    }

    async fn room_events(
        &self,
        room_id: &RoomId,
        after: i64,
        before: i64,
        dir: Direction,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>> {
        let sql = match dir {
            Direction::Forward => {
                "SELECT stream_pos, event_id, room_id, state_group, json, unsigned, redacted_by FROM events \
                 WHERE room_id = $1 AND stream_pos > $2 AND stream_pos < $3 ORDER BY stream_pos ASC LIMIT $4"
            }
            Direction::Backward => {
                "SELECT stream_pos, event_id, room_id, state_group, json, unsigned, redacted_by FROM events \
                 WHERE room_id = $1 AND stream_pos > $2 AND stream_pos < $3 ORDER BY stream_pos DESC LIMIT $4"
            }
        };
        sqlx::query_as::<_, EventRow>(sql)
            .bind(room_id.as_str())
            .bind(after)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.0.pool)
            .await?
            .into_iter()
            .map(event_from_row)
            .collect()
    }

    async fn last_event_at_or_before(&self, room_id: &RoomId, pos: i64) -> StorageResult<Option<StoredEvent>> {
        sqlx::query_as::<_, EventRow>(
            "SELECT stream_pos, event_id, room_id, state_group, json, unsigned, redacted_by FROM events \
             WHERE room_id = $1 AND stream_pos <= $2 ORDER BY stream_pos DESC LIMIT 1",
        )
        .bind(room_id.as_str())
        .bind(pos)
        .fetch_optional(&self.0.pool)
        .await?
        .map(event_from_row)
        .transpose()
    }

    async fn event_near_ts(
        &self,
        room_id: &RoomId,
        ts: i64,
        dir: Direction,
    ) -> StorageResult<Option<(OwnedEventId, i64)>> {
        let sql = match dir {
            Direction::Forward => {
                "SELECT event_id, origin_server_ts FROM events WHERE room_id = $1 AND origin_server_ts >= $2 \
                 ORDER BY origin_server_ts ASC, stream_pos ASC LIMIT 1"
            }
            Direction::Backward => {
                "SELECT event_id, origin_server_ts FROM events WHERE room_id = $1 AND origin_server_ts <= $2 \
                 ORDER BY origin_server_ts DESC, stream_pos DESC LIMIT 1"
            }
        };
        let row: Option<(String, i64)> =
            sqlx::query_as(sql).bind(room_id.as_str()).bind(ts).fetch_optional(&self.0.pool).await?;
        row.map(|(id, ts)| Ok((id.try_into()?, ts))).transpose()
    }

    async fn latest_positions(&self, room_ids: &[OwnedRoomId]) -> StorageResult<Vec<(OwnedRoomId, i64)>> {
        let ids: Vec<&str> = room_ids.iter().map(|id| id.as_str()).collect();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT room_id, MAX(stream_pos) FROM events WHERE room_id = ANY($1) GROUP BY room_id")
                .bind(&ids)
                .fetch_all(&self.0.pool)
                .await?;
        rows.into_iter().map(|(room, pos)| Ok((room.try_into()?, pos))).collect()
    }

    async fn max_stream_pos(&self) -> StorageResult<i64> {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(stream_pos) FROM events").fetch_one(&self.0.pool).await?;
        Ok(max.unwrap_or(0))
    }

    async fn txn_event(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        txn_key: &str,
    ) -> StorageResult<Option<OwnedEventId>> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT event_id FROM event_txns WHERE user_id = $1 AND device_id = $2 AND txn_key = $3",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(txn_key)
        .fetch_optional(&self.0.pool)
        .await?;
        Ok(id.map(OwnedEventId::try_from).transpose()?)
    }

    async fn txn_ids(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        event_ids: &[OwnedEventId],
    ) -> StorageResult<Vec<(OwnedEventId, String)>> {
        let ids: Vec<&str> = event_ids.iter().map(|id| id.as_str()).collect();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT event_id, txn_id FROM event_txns WHERE user_id = $1 AND device_id = $2 AND event_id = ANY($3)",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(&ids)
        .fetch_all(&self.0.pool)
        .await?;
        rows.into_iter().map(|(e, t)| Ok((e.try_into()?, t))).collect()
    }
}
