//! `EventStore` for both backends: one body, compiled once against each backend's `Db`.

use async_trait::async_trait;
use ruma::{DeviceId, EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};
use sqlx::{AssertSqlSafe, QueryBuilder};

use super::{Db, Pools, dialect};
use crate::storage::{
    StorageResult,
    events::{
        Direction, EVENT_COLUMNS, EventRow, EventStore, GroupRef, PersistEvent, Placement, StoredEvent, TopoFrom,
        TopoPoint, event_from_row,
    },
};

pub(super) struct EventStoreSql(pub Pools);

/// Rows per multi-row INSERT: below both backends' limits on bound parameters (8 columns).
const ROWS_PER_INSERT: usize = 1000;

type Tx<'c> = sqlx::Transaction<'c, Db>;

fn group_id(group: GroupRef, written: &[i64]) -> anyhow::Result<i64> {
    match group {
        GroupRef::Stored(id) => Ok(id),
        GroupRef::New(i) => written.get(i).copied().ok_or_else(|| anyhow::anyhow!("state group {i} was not written")),
    }
}

impl EventStoreSql {
    /// Writes the new state groups, in order, and returns their IDs.
    async fn write_groups(tx: &mut Tx<'_>, ev: &PersistEvent<'_>) -> StorageResult<Vec<i64>> {
        let mut written = Vec::with_capacity(ev.groups.len());
        for group in ev.groups {
            let prev = group.prev.map(|g| group_id(g, &written)).transpose()?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO state_groups (room_id, prev_id, chain_len) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(ev.room_id.as_str())
            .bind(prev)
            .bind(group.chain_len)
            .fetch_one(&mut **tx)
            .await?;
            for chunk in group.entries.chunks(ROWS_PER_INSERT) {
                let mut insert = QueryBuilder::<Db>::new(
                    "INSERT INTO state_group_entries (group_id, event_type, state_key, event_id) ",
                );
                insert.push_values(chunk, |mut row, (event_type, state_key, event_id)| {
                    row.push_bind(id).push_bind(event_type).push_bind(state_key).push_bind(event_id.as_str());
                });
                insert.build().execute(&mut **tx).await?;
            }
            written.push(id);
        }
        Ok(written)
    }

    /// The event row: inserted, or an outlier's row brought into the graph.
    async fn write_event(
        tx: &mut Tx<'_>,
        ev: &PersistEvent<'_>,
        state_group: Option<i64>,
        head_group: Option<i64>,
    ) -> StorageResult<()> {
        let (outlier, soft_failed, rejected) = match ev.placement {
            Placement::Timeline => (false, false, None),
            Placement::Outlier => (true, false, None),
            Placement::SoftFailed => (false, true, None),
            Placement::Rejected(reason) => (state_group.is_none(), false, Some(reason.as_str())),
        };
        let done = sqlx::query(
            "INSERT INTO events (event_id, stream_pos, room_id, event_type, state_key, sender, origin_server_ts, \
             depth, state_group, json, unsigned, outlier, soft_failed, rejected, head_group) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (event_id) DO UPDATE SET stream_pos = excluded.stream_pos, state_group = excluded.state_group, \
             unsigned = excluded.unsigned, outlier = excluded.outlier, soft_failed = excluded.soft_failed, \
             rejected = excluded.rejected, head_group = excluded.head_group \
             WHERE events.outlier AND NOT excluded.outlier",
        )
        .bind(ev.event_id.as_str())
        .bind(ev.stream_pos)
        .bind(ev.room_id.as_str())
        .bind(ev.event_type)
        .bind(ev.state_key)
        .bind(ev.sender.as_str())
        .bind(ev.origin_server_ts)
        .bind(ev.depth)
        .bind(state_group)
        .bind(ev.json)
        .bind(ev.unsigned)
        .bind(outlier)
        .bind(soft_failed)
        .bind(rejected)
        .bind(head_group)
        .execute(&mut **tx)
        .await?;
        anyhow::ensure!(done.rows_affected() == 1, "event {} is already stored", ev.event_id);
        // One statement per kind of edge, however many there are.
        if !ev.prev_events.is_empty() {
            let mut insert = QueryBuilder::<Db>::new("INSERT INTO event_edges (event_id, prev_event_id, room_id) ");
            insert.push_values(ev.prev_events.iter().take(ROWS_PER_INSERT), |mut row, prev| {
                row.push_bind(ev.event_id.as_str()).push_bind(prev.as_str()).push_bind(ev.room_id.as_str());
            });
            insert.push(" ON CONFLICT DO NOTHING");
            insert.build().execute(&mut **tx).await?;
        }
        if !ev.auth_events.is_empty() {
            let mut insert = QueryBuilder::<Db>::new("INSERT INTO event_auth_edges (event_id, auth_event_id) ");
            insert.push_values(ev.auth_events.iter().take(ROWS_PER_INSERT), |mut row, auth| {
                row.push_bind(ev.event_id.as_str()).push_bind(auth.as_str());
            });
            insert.push(" ON CONFLICT DO NOTHING");
            insert.build().execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Moves the room's head: extremities, current state group, current state, memberships.
    async fn write_head(tx: &mut Tx<'_>, ev: &PersistEvent<'_>, head_group: i64) -> StorageResult<()> {
        let Some(head) = &ev.head else { return Ok(()) };
        let room = ev.room_id.as_str();
        if !head.removed_extremities.is_empty() {
            let sql = format!(
                "DELETE FROM room_extremities WHERE room_id = $1 AND {}",
                concat!("event_id ", dialect::in_list!(2))
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(room)
                .bind(dialect::list(head.removed_extremities))
                .execute(&mut **tx)
                .await?;
        }
        if head.add_extremity {
            sqlx::query("INSERT INTO room_extremities (room_id, event_id) VALUES ($1, $2)")
                .bind(room)
                .bind(ev.event_id.as_str())
                .execute(&mut **tx)
                .await?;
        }
        if head.group_changed {
            sqlx::query("UPDATE rooms SET current_group = $2 WHERE room_id = $1")
                .bind(room)
                .bind(head_group)
                .execute(&mut **tx)
                .await?;
        }
        for (event_type, state_key, event_id) in head.state_changes {
            let query = match event_id {
                Some(event_id) => sqlx::query(
                    "INSERT INTO current_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
                )
                .bind(room)
                .bind(event_type)
                .bind(state_key)
                .bind(event_id.as_str()),
                None => {
                    sqlx::query("DELETE FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3")
                        .bind(room)
                        .bind(event_type)
                        .bind(state_key)
                }
            };
            query.execute(&mut **tx).await?;
        }
        let pos = ev.stream_pos.unwrap_or(0);
        for (user_id, membership, event_id) in head.memberships {
            sqlx::query(
                "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten) \
                 VALUES ($1, $2, $3, $4, $5, FALSE) ON CONFLICT (room_id, user_id) DO UPDATE SET \
                 membership = excluded.membership, event_id = excluded.event_id, stream_pos = excluded.stream_pos, \
                 forgotten = FALSE",
            )
            .bind(room)
            .bind(user_id.as_str())
            .bind(membership)
            .bind(event_id.as_str())
            .bind(pos)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// What the event brings besides itself: the client transaction, a redaction's effect on
    /// its target, push actions and queued notifications.
    async fn write_effects(tx: &mut Tx<'_>, ev: &PersistEvent<'_>) -> StorageResult<()> {
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
            .execute(&mut **tx)
            .await?;
        }
        if let Some((target, redacted_json)) = ev.redaction {
            sqlx::query("UPDATE events SET json = $2, redacted_by = $3 WHERE event_id = $1")
                .bind(target.as_str())
                .bind(redacted_json)
                .bind(ev.event_id.as_str())
                .execute(&mut **tx)
                .await?;
        }
        let pos = ev.stream_pos.unwrap_or(0);
        // One statement per thousand recipients: a message to a large room has many.
        for chunk in ev.push_actions.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<Db>::new(
                "INSERT INTO event_push_actions (user_id, event_id, room_id, stream_pos, thread_id, highlight, actions, ts) ",
            );
            insert.push_values(chunk, |mut row, action| {
                row.push_bind(action.user_id.as_str())
                    .push_bind(ev.event_id.as_str())
                    .push_bind(ev.room_id.as_str())
                    .push_bind(pos)
                    .push_bind(action.thread_id.as_str())
                    .push_bind(action.highlight)
                    .push_bind(action.actions.as_str())
                    .push_bind(ev.origin_server_ts);
            });
            insert.build().execute(&mut **tx).await?;
        }
        for chunk in ev.outbox.chunks(ROWS_PER_INSERT) {
            let mut insert =
                QueryBuilder::<Db>::new("INSERT INTO federation_outbox (destination, room_id, event_id, created_at) ");
            insert.push_values(chunk, |mut row, destination| {
                row.push_bind(destination.as_str())
                    .push_bind(ev.room_id.as_str())
                    .push_bind(ev.event_id.as_str())
                    .push_bind(ev.origin_server_ts);
            });
            insert.build().execute(&mut **tx).await?;
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
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl EventStore for EventStoreSql {
    async fn persist(&self, ev: PersistEvent<'_>) -> StorageResult<Vec<i64>> {
        let mut tx = self.0.writer().begin().await?;
        if let Some(room) = &ev.new_room {
            sqlx::query("INSERT INTO rooms (room_id, room_version, creator, created_at) VALUES ($1, $2, $3, $4)")
                .bind(ev.room_id.as_str())
                .bind(room.room_version)
                .bind(room.creator.as_str())
                .bind(room.created_at)
                .execute(&mut *tx)
                .await?;
        }
        let written = Self::write_groups(&mut tx, &ev).await?;
        let state_group = ev.state_group.map(|g| group_id(g, &written)).transpose()?;
        let head_group = ev.head.as_ref().map(|h| group_id(h.current_group, &written)).transpose()?;
        Self::write_event(&mut tx, &ev, state_group, head_group).await?;
        if let Some(head_group) = head_group {
            Self::write_head(&mut tx, &ev, head_group).await?;
        }
        Self::write_effects(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(written)
    }

    async fn get(&self, event_id: &EventId) -> StorageResult<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1");
        sqlx::query_as::<_, EventRow>(AssertSqlSafe(sql))
            .bind(event_id.as_str())
            .fetch_optional(self.0.reader())
            .await?
            .map(event_from_row)
            .transpose()
    }

    async fn get_many(&self, event_ids: &[OwnedEventId]) -> StorageResult<Vec<StoredEvent>> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE {}", concat!("event_id ", dialect::in_list!(1)));
        sqlx::query_as::<_, EventRow>(AssertSqlSafe(sql))
            .bind(dialect::list(event_ids))
            .fetch_all(self.0.reader())
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
        let order = match dir {
            Direction::Forward => "ASC",
            Direction::Backward => "DESC",
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos < $3 \
             ORDER BY stream_pos {order} LIMIT $4"
        );
        sqlx::query_as::<_, EventRow>(AssertSqlSafe(sql))
            .bind(room_id.as_str())
            .bind(after)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(self.0.reader())
            .await?
            .into_iter()
            .map(event_from_row)
            .collect()
    }

    async fn room_events_topo(
        &self,
        room_id: &RoomId,
        from: TopoFrom,
        to: Option<TopoPoint>,
        ceiling: i64,
        dir: Direction,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>> {
        // Row values compare lexicographically, which is the topological order, and both
        // backends can walk the (room_id, depth, stream_pos) index with them.
        let mut binds: Vec<i64> = vec![ceiling];
        let mut conditions = vec!["stream_pos <= $2".to_owned()];
        let point = |binds: &mut Vec<i64>, op: &str, p: TopoPoint| {
            binds.extend([p.depth, p.stream]);
            format!("(depth, stream_pos) {op} (${}, ${})", binds.len(), binds.len() + 1)
        };
        let (from_op, to_op, order) = match dir {
            Direction::Backward => ("<=", ">", "DESC"),
            Direction::Forward => (">", "<=", "ASC"),
        };
        match from {
            TopoFrom::Stream(pos) => {
                binds.push(pos);
                let op = if dir == Direction::Backward { "<=" } else { ">" };
                conditions.push(format!("stream_pos {op} ${}", binds.len() + 1));
            }
            TopoFrom::Point(p) => conditions.push(point(&mut binds, from_op, p)),
        }
        if let Some(to) = to {
            conditions.push(point(&mut binds, to_op, to));
        }
        binds.push(i64::from(limit));
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_pos IS NOT NULL AND {} \
             ORDER BY depth {order}, stream_pos {order} LIMIT ${}",
            conditions.join(" AND "),
            binds.len() + 1
        );
        let mut query = sqlx::query_as::<_, EventRow>(AssertSqlSafe(sql)).bind(room_id.as_str());
        for value in binds {
            query = query.bind(value);
        }
        query.fetch_all(self.0.reader()).await?.into_iter().map(event_from_row).collect()
    }

    async fn topo_point(&self, event_id: &EventId) -> StorageResult<Option<TopoPoint>> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT depth, stream_pos FROM events WHERE event_id = $1 AND stream_pos IS NOT NULL")
                .bind(event_id.as_str())
                .fetch_optional(self.0.reader())
                .await?;
        Ok(row.map(|(depth, stream)| TopoPoint { depth, stream }))
    }

    async fn last_event_at_or_before(&self, room_id: &RoomId, pos: i64) -> StorageResult<Option<(OwnedEventId, i64)>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT event_id, COALESCE(head_group, state_group) FROM events \
             WHERE room_id = $1 AND stream_pos IS NOT NULL AND stream_pos <= $2 ORDER BY stream_pos DESC LIMIT 1",
        )
        .bind(room_id.as_str())
        .bind(pos)
        .fetch_optional(self.0.reader())
        .await?;
        row.map(|(id, group)| Ok((id.try_into()?, group))).transpose()
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
                 AND stream_pos IS NOT NULL ORDER BY origin_server_ts ASC, stream_pos ASC LIMIT 1"
            }
            Direction::Backward => {
                "SELECT event_id, origin_server_ts FROM events WHERE room_id = $1 AND origin_server_ts <= $2 \
                 AND stream_pos IS NOT NULL ORDER BY origin_server_ts DESC, stream_pos DESC LIMIT 1"
            }
        };
        let row: Option<(String, i64)> =
            sqlx::query_as(sql).bind(room_id.as_str()).bind(ts).fetch_optional(self.0.reader()).await?;
        row.map(|(id, ts)| Ok((id.try_into()?, ts))).transpose()
    }

    async fn latest_positions(&self, room_ids: &[OwnedRoomId]) -> StorageResult<Vec<(OwnedRoomId, i64)>> {
        let sql = format!(
            "SELECT room_id, MAX(stream_pos) FROM events WHERE {} AND stream_pos IS NOT NULL GROUP BY room_id",
            concat!("room_id ", dialect::in_list!(1))
        );
        let rows: Vec<(String, i64)> =
            sqlx::query_as(AssertSqlSafe(sql)).bind(dialect::list(room_ids)).fetch_all(self.0.reader()).await?;
        rows.into_iter().map(|(room, pos)| Ok((room.try_into()?, pos))).collect()
    }

    async fn stream_bounds(&self) -> StorageResult<(i64, i64)> {
        let (max, min): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT MAX(stream_pos), MIN(stream_pos) FROM events").fetch_one(self.0.reader()).await?;
        Ok((max.unwrap_or(0), min.unwrap_or(0)))
    }

    async fn has_successor(&self, event_id: &EventId) -> StorageResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM event_edges x JOIN events e ON e.event_id = x.event_id \
             WHERE x.prev_event_id = $1 AND e.stream_pos IS NOT NULL LIMIT 1",
        )
        .bind(event_id.as_str())
        .fetch_optional(self.0.reader())
        .await?;
        Ok(found.is_some())
    }

    async fn auth_chain(&self, event_ids: &[OwnedEventId]) -> StorageResult<Vec<OwnedEventId>> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        // UNION (not UNION ALL) drops what was already reached, so the walk ends on any graph.
        let sql = format!(
            "WITH RECURSIVE chain(event_id) AS ( \
               SELECT auth_event_id FROM event_auth_edges WHERE {} \
               UNION \
               SELECT a.auth_event_id FROM event_auth_edges a JOIN chain c ON a.event_id = c.event_id) \
             SELECT c.event_id FROM chain c JOIN events e ON e.event_id = c.event_id",
            concat!("event_id ", dialect::in_list!(1))
        );
        let ids: Vec<String> =
            sqlx::query_scalar(AssertSqlSafe(sql)).bind(dialect::list(event_ids)).fetch_all(self.0.reader()).await?;
        ids.into_iter().map(|id| Ok(id.try_into()?)).collect()
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
        .fetch_optional(self.0.reader())
        .await?;
        Ok(id.map(OwnedEventId::try_from).transpose()?)
    }

    async fn txn_ids(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        event_ids: &[OwnedEventId],
    ) -> StorageResult<Vec<(OwnedEventId, String)>> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String)> = sqlx::query_as(dialect::TXN_IDS)
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(dialect::list(event_ids))
            .fetch_all(self.0.reader())
            .await?;
        rows.into_iter().map(|(e, t)| Ok((e.try_into()?, t))).collect()
    }
}
