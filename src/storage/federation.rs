//! Federation: transactions received from other servers (each processed once), and the
//! durable outbound queue, one per destination.
//!
//! PDUs enter the queue in the transaction that persists them (`PersistEvent::outbox`); EDUs
//! through [`FederationStore::enqueue_edu`]. A transaction, once formed, is retried exactly
//! as it is (same ID, same entries) until the destination answers.

use async_trait::async_trait;
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, ServerName, UserId};

use super::StorageResult;

/// One entry of a destination's queue: a PDU (by event ID) or an EDU (as JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub room_id: Option<OwnedRoomId>,
    pub event_id: Option<OwnedEventId>,
    pub edu: Option<String>,
}

/// A transaction to send: its ID and what it carries.
#[derive(Clone, Debug)]
pub struct OutboundTxn {
    pub txn_id: String,
    pub entries: Vec<OutboxEntry>,
}

/// A destination's retry state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Failed attempts since the last success.
    pub failures: i32,
    /// Not before this (ms).
    pub next_attempt_at: i64,
}

/// An invite from another server to a room this server does not have.
#[derive(Clone, Debug)]
pub struct RemoteInvite {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub event_id: OwnedEventId,
    /// The invite event, signed by both servers.
    pub event_json: String,
    /// The stripped state the inviting server sent, a JSON array.
    pub invite_state: String,
    /// `invite`, or `leave` once rejected here.
    pub membership: String,
    pub stream_pos: i64,
}

#[async_trait]
pub trait FederationStore: Send + Sync {
    /// Stores an invite to a room this server does not have, and the invitee's membership
    /// (`invite`, at the invite's stream position), in one transaction.
    async fn store_remote_invite(&self, invite: &RemoteInvite) -> StorageResult<()>;

    /// The invite to `room_id` for `user_id`, if another server sent one.
    async fn remote_invite(&self, room_id: &RoomId, user_id: &UserId) -> StorageResult<Option<RemoteInvite>>;

    /// Marks the invite rejected here, and the invitee's membership `leave`, at `stream_pos`.
    async fn reject_remote_invite(&self, room_id: &RoomId, user_id: &UserId, stream_pos: i64) -> StorageResult<()>;

    /// The latest stream position of a remote invite or its rejection.
    async fn max_stream_pos(&self) -> StorageResult<i64>;

    /// The answer given to a transaction already received, if any.
    async fn inbound_txn(&self, origin: &ServerName, txn_id: &str) -> StorageResult<Option<String>>;

    /// Records the answer to a transaction. A concurrent duplicate keeps the first answer.
    async fn record_inbound_txn(&self, origin: &ServerName, txn_id: &str, response: &str, at: i64)
    -> StorageResult<()>;

    /// Forgets transactions received before `before` (ms); returns how many.
    async fn prune_inbound_txns(&self, before: i64) -> StorageResult<u64>;

    /// Queues an EDU for each destination.
    async fn enqueue_edu(&self, destinations: &[OwnedServerName], edu: &str, at: i64) -> StorageResult<()>;

    /// Destinations with something queued (to resume their queues after a restart).
    async fn destinations_with_work(&self) -> StorageResult<Vec<OwnedServerName>>;

    /// The destination's retry state (the default for one never tried).
    async fn backoff(&self, destination: &ServerName) -> StorageResult<Backoff>;

    /// The transaction to send next: the one in flight, unchanged, if there is one; else a
    /// new one from the head of the queue, with at most `max_pdus` PDUs and `max_edus` EDUs,
    /// recorded as in flight. `None` when the queue is empty.
    async fn next_txn(
        &self,
        destination: &ServerName,
        max_pdus: usize,
        max_edus: usize,
    ) -> StorageResult<Option<OutboundTxn>>;

    /// The destination accepted the transaction: its entries leave the queue and the backoff
    /// resets.
    async fn txn_sent(&self, destination: &ServerName, txn_id: &str, at: i64) -> StorageResult<()>;

    /// The attempt failed: count it and wait until `next_attempt_at` (ms).
    async fn txn_failed(&self, destination: &ServerName, next_attempt_at: i64) -> StorageResult<()>;

    /// Ends the destination's wait (it showed it is up): the next attempt is now. Its failure
    /// count stays, so a long backlog is still caught up.
    async fn retry_now(&self, destination: &ServerName) -> StorageResult<()>;

    /// How many entries are queued for the destination.
    async fn backlog(&self, destination: &ServerName) -> StorageResult<i64>;

    /// Cuts a long backlog after an outage: of the PDUs not in flight, keeps only the latest
    /// of each room (the destination fetches the rest with get_missing_events). Returns how
    /// many entries were dropped.
    async fn collapse_backlog(&self, destination: &ServerName) -> StorageResult<u64>;
}

pub(super) type OutboxRow = (i64, Option<String>, Option<String>, Option<String>);

pub(super) fn outbox_entry((id, room_id, event_id, edu): OutboxRow) -> anyhow::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id,
        room_id: room_id.map(OwnedRoomId::try_from).transpose()?,
        event_id: event_id.map(OwnedEventId::try_from).transpose()?,
        edu,
    })
}

/// Takes entries from the head of a queue until either limit would be passed.
pub(super) fn cut(entries: Vec<OutboxEntry>, max_pdus: usize, max_edus: usize) -> Vec<OutboxEntry> {
    let (mut pdus, mut edus) = (0, 0);
    let mut taken = Vec::new();
    for entry in entries {
        let (count, max) = if entry.event_id.is_some() { (&mut pdus, max_pdus) } else { (&mut edus, max_edus) };
        if *count == max {
            break;
        }
        *count += 1;
        taken.push(entry);
    }
    taken
}
