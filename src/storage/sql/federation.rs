//! `FederationStore` for both backends: one body, compiled once against each backend's `Db`.

use async_trait::async_trait;
use ruma::{OwnedServerName, RoomId, ServerName, UserId};
use sqlx::{AssertSqlSafe, QueryBuilder};

use super::{Db, Pools};
use crate::storage::{
    StorageResult,
    federation::{Backoff, FederationStore, OutboundTxn, OutboxRow, RemoteInvite, cut, outbox_entry},
};

pub(super) struct FederationStoreSql(pub Pools);

/// Queue entries read per new transaction: enough for a full one.
const READ_AHEAD: i64 = 200;
/// Destinations per multi-row insert.
const ROWS_PER_INSERT: usize = 1000;

const ENTRY_COLUMNS: &str = "id, room_id, event_id, edu";

#[async_trait]
impl FederationStore for FederationStoreSql {
    async fn store_remote_invite(&self, invite: &RemoteInvite) -> StorageResult<()> {
        let mut tx = self.0.writer().begin().await?;
        sqlx::query(
            "INSERT INTO remote_invites (room_id, user_id, event_id, event_json, invite_state, membership, stream_pos) \
             VALUES ($1, $2, $3, $4, $5, 'invite', $6) ON CONFLICT (room_id, user_id) DO UPDATE SET \
             event_id = excluded.event_id, event_json = excluded.event_json, invite_state = excluded.invite_state, \
             membership = 'invite', stream_pos = excluded.stream_pos",
        )
        .bind(invite.room_id.as_str())
        .bind(invite.user_id.as_str())
        .bind(invite.event_id.as_str())
        .bind(&invite.event_json)
        .bind(&invite.invite_state)
        .bind(invite.stream_pos)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten) \
             VALUES ($1, $2, 'invite', $3, $4, FALSE) ON CONFLICT (room_id, user_id) DO UPDATE SET \
             membership = 'invite', event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = FALSE",
        )
        .bind(invite.room_id.as_str())
        .bind(invite.user_id.as_str())
        .bind(invite.event_id.as_str())
        .bind(invite.stream_pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remote_invite(&self, room_id: &RoomId, user_id: &UserId) -> StorageResult<Option<RemoteInvite>> {
        let row: Option<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT event_id, event_json, invite_state, membership, stream_pos FROM remote_invites \
             WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .fetch_optional(self.0.reader())
        .await?;
        let Some((event_id, event_json, invite_state, membership, stream_pos)) = row else { return Ok(None) };
        Ok(Some(RemoteInvite {
            room_id: room_id.to_owned(),
            user_id: user_id.to_owned(),
            event_id: event_id.try_into().map_err(anyhow::Error::from)?,
            event_json,
            invite_state,
            membership,
            stream_pos,
        }))
    }

    async fn reject_remote_invite(&self, room_id: &RoomId, user_id: &UserId, stream_pos: i64) -> StorageResult<()> {
        let mut tx = self.0.writer().begin().await?;
        sqlx::query(
            "UPDATE remote_invites SET membership = 'leave', stream_pos = $3 WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .bind(stream_pos)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE memberships SET membership = 'leave', stream_pos = $3 \
             WHERE room_id = $1 AND user_id = $2 AND membership = 'invite'",
        )
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .bind(stream_pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn max_stream_pos(&self) -> StorageResult<i64> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM remote_invites").fetch_one(self.0.reader()).await?;
        Ok(max.unwrap_or(0))
    }

    async fn inbound_txn(&self, origin: &ServerName, txn_id: &str) -> StorageResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2")
            .bind(origin.as_str())
            .bind(txn_id)
            .fetch_optional(self.0.reader())
            .await?)
    }

    async fn record_inbound_txn(
        &self,
        origin: &ServerName,
        txn_id: &str,
        response: &str,
        at: i64,
    ) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO federation_inbound_txns (origin, txn_id, response, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (origin, txn_id) DO NOTHING",
        )
        .bind(origin.as_str())
        .bind(txn_id)
        .bind(response)
        .bind(at)
        .execute(self.0.writer())
        .await?;
        Ok(())
    }

    async fn prune_inbound_txns(&self, before: i64) -> StorageResult<u64> {
        let done = sqlx::query("DELETE FROM federation_inbound_txns WHERE received_at < $1")
            .bind(before)
            .execute(self.0.writer())
            .await?;
        Ok(done.rows_affected())
    }

    async fn enqueue_edu(&self, destinations: &[OwnedServerName], edu: &str, at: i64) -> StorageResult<()> {
        let mut tx = self.0.writer().begin().await?;
        for chunk in destinations.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<Db>::new("INSERT INTO federation_outbox (destination, edu, created_at) ");
            insert.push_values(chunk, |mut row, destination| {
                row.push_bind(destination.as_str()).push_bind(edu).push_bind(at);
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn destinations_with_work(&self) -> StorageResult<Vec<OwnedServerName>> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT destination FROM federation_outbox").fetch_all(self.0.reader()).await?;
        names.into_iter().map(|n| Ok(OwnedServerName::try_from(n)?)).collect()
    }

    async fn backoff(&self, destination: &ServerName) -> StorageResult<Backoff> {
        let row: Option<(i32, i64)> =
            sqlx::query_as("SELECT failures, next_attempt_at FROM federation_destinations WHERE destination = $1")
                .bind(destination.as_str())
                .fetch_optional(self.0.reader())
                .await?;
        Ok(row.map(|(failures, next_attempt_at)| Backoff { failures, next_attempt_at }).unwrap_or_default())
    }

    async fn next_txn(
        &self,
        destination: &ServerName,
        max_pdus: usize,
        max_edus: usize,
    ) -> StorageResult<Option<OutboundTxn>> {
        let dest = destination.as_str();
        let mut tx = self.0.writer().begin().await?;
        let pending: Option<(Option<String>, Option<i64>, i64)> = sqlx::query_as(
            "SELECT pending_txn, pending_upto, txn_counter FROM federation_destinations WHERE destination = $1",
        )
        .bind(dest)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((Some(txn_id), _, _)) = &pending {
            let entries = txn_entries(&mut tx, dest, txn_id).await?;
            tx.commit().await?;
            return Ok(Some(OutboundTxn { txn_id: txn_id.clone(), entries }));
        }
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM federation_outbox WHERE destination = $1 AND txn_id IS NULL ORDER BY id LIMIT $2"
        );
        let rows: Vec<OutboxRow> =
            sqlx::query_as(AssertSqlSafe(sql)).bind(dest).bind(READ_AHEAD).fetch_all(&mut *tx).await?;
        let entries = cut(rows.into_iter().map(outbox_entry).collect::<anyhow::Result<Vec<_>>>()?, max_pdus, max_edus);
        let (Some(first), Some(last)) = (entries.first().map(|e| e.id), entries.last().map(|e| e.id)) else {
            return Ok(None);
        };
        let counter = pending.map_or(0, |(_, _, counter)| counter) + 1;
        // Unique per destination across restarts: the counter is stored with the transaction.
        let txn_id = format!("p{counter}");
        // The entries are marked as this transaction's, so that exactly they are retried and
        // exactly they are deleted once it is through. An entry of that range that committed
        // since the read above is marked too, and kept out again if it overflows the limits.
        sqlx::query(
            "UPDATE federation_outbox SET txn_id = $1 \
             WHERE destination = $2 AND txn_id IS NULL AND id >= $3 AND id <= $4",
        )
        .bind(&txn_id)
        .bind(dest)
        .bind(first)
        .bind(last)
        .execute(&mut *tx)
        .await?;
        let marked = txn_entries(&mut tx, dest, &txn_id).await?;
        let entries = cut(marked.clone(), max_pdus, max_edus);
        if entries.len() < marked.len()
            && let Some(kept) = entries.last().map(|e| e.id)
        {
            sqlx::query(
                "UPDATE federation_outbox SET txn_id = NULL WHERE destination = $1 AND txn_id = $2 AND id > $3",
            )
            .bind(dest)
            .bind(&txn_id)
            .bind(kept)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO federation_destinations (destination, txn_counter, pending_txn) \
             VALUES ($1, $2, $3) ON CONFLICT (destination) DO UPDATE SET txn_counter = excluded.txn_counter, \
             pending_txn = excluded.pending_txn",
        )
        .bind(dest)
        .bind(counter)
        .bind(&txn_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(OutboundTxn { txn_id, entries }))
    }

    async fn txn_sent(&self, destination: &ServerName, txn_id: &str, at: i64) -> StorageResult<()> {
        let dest = destination.as_str();
        let mut tx = self.0.writer().begin().await?;
        sqlx::query("DELETE FROM federation_outbox WHERE destination = $1 AND txn_id = $2")
            .bind(dest)
            .bind(txn_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE federation_destinations SET pending_txn = NULL, pending_upto = NULL, failures = 0, \
             next_attempt_at = 0, last_success_at = $2 WHERE destination = $1",
        )
        .bind(dest)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn txn_failed(&self, destination: &ServerName, next_attempt_at: i64) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO federation_destinations (destination, failures, next_attempt_at) VALUES ($1, 1, $2) \
             ON CONFLICT (destination) DO UPDATE SET failures = federation_destinations.failures + 1, \
             next_attempt_at = excluded.next_attempt_at",
        )
        .bind(destination.as_str())
        .bind(next_attempt_at)
        .execute(self.0.writer())
        .await?;
        Ok(())
    }

    async fn retry_now(&self, destination: &ServerName) -> StorageResult<()> {
        sqlx::query("UPDATE federation_destinations SET next_attempt_at = 0 WHERE destination = $1")
            .bind(destination.as_str())
            .execute(self.0.writer())
            .await?;
        Ok(())
    }

    async fn backlog(&self, destination: &ServerName) -> StorageResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM federation_outbox WHERE destination = $1")
            .bind(destination.as_str())
            .fetch_one(self.0.reader())
            .await?)
    }

    async fn collapse_backlog(&self, destination: &ServerName) -> StorageResult<u64> {
        // Entries in flight stay: the transaction must be retried as it was.
        let done = sqlx::query(
            "DELETE FROM federation_outbox WHERE destination = $1 AND event_id IS NOT NULL \
             AND txn_id IS NULL \
             AND id < (SELECT MAX(o.id) FROM federation_outbox o \
                       WHERE o.destination = federation_outbox.destination AND o.room_id = federation_outbox.room_id \
                       AND o.event_id IS NOT NULL)",
        )
        .bind(destination.as_str())
        .execute(self.0.writer())
        .await?;
        Ok(done.rows_affected())
    }
}

/// The entries a transaction carries, in order.
async fn txn_entries(
    tx: &mut sqlx::Transaction<'_, Db>,
    destination: &str,
    txn_id: &str,
) -> StorageResult<Vec<crate::storage::federation::OutboxEntry>> {
    let sql =
        format!("SELECT {ENTRY_COLUMNS} FROM federation_outbox WHERE destination = $1 AND txn_id = $2 ORDER BY id");
    let rows: Vec<OutboxRow> =
        sqlx::query_as(AssertSqlSafe(sql)).bind(destination).bind(txn_id).fetch_all(&mut **tx).await?;
    rows.into_iter().map(outbox_entry).collect::<anyhow::Result<Vec<_>>>()
}
