//! Events: appending a PDU (with the state and membership changes it brings, in one
//! transaction) and reading events back.

use async_trait::async_trait;
use ruma::{DeviceId, EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::value::RawValue;

use super::{StorageResult, StreamPosition};

/// An event as stored.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub stream_pos: i64,
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    /// The state group holding the room state after this event.
    pub state_group: i64,
    /// The PDU, or its redacted form once it has been redacted.
    pub json: Box<RawValue>,
    /// Unsigned data the server adds (`prev_content`, `replaces_state`, ...).
    pub unsigned: Option<Box<RawValue>>,
    pub redacted_by: Option<OwnedEventId>,
}

/// How the room state changes with an event.
#[derive(Debug)]
pub enum StateChange<'a> {
    /// Not a state event: the state after it is the state before it.
    Unchanged { group: i64 },
    /// A state event: a new group, either a delta on `prev_group` or a full snapshot.
    New { prev_group: Option<i64>, chain_len: i32, entries: &'a [(String, String, OwnedEventId)] },
}

/// A room row, written with the room's create event.
#[derive(Debug)]
pub struct NewRoom<'a> {
    pub room_version: &'a str,
    pub creator: &'a UserId,
    pub created_at: i64,
}

/// Everything appending one event writes.
#[derive(Debug)]
pub struct PersistEvent<'a> {
    pub pos: &'a StreamPosition,
    pub event_id: &'a EventId,
    pub room_id: &'a RoomId,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a UserId,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub json: &'a str,
    pub unsigned: Option<&'a str>,
    pub state: StateChange<'a>,
    /// These stop being forward extremities; the new event becomes one.
    pub prev_events: &'a [OwnedEventId],
    /// For member events: whose membership, and what it becomes.
    pub membership: Option<(&'a UserId, &'a str)>,
    /// The client transaction that sent it, for idempotent retries.
    pub txn: Option<TxnRef<'a>>,
    /// For redactions: the target event and its redacted JSON.
    pub redaction: Option<(&'a EventId, &'a str)>,
    pub new_room: Option<NewRoom<'a>>,
    /// What the push rules said to each recipient (only those told to notify).
    pub push_actions: &'a [super::push::PushActionRow],
    /// Notifications for the recipients' pushers, queued with the event.
    pub push_queue: &'a [super::push::NewQueuedPush],
}

/// A client transaction: the device, the request scope (path) and the client's ID.
#[derive(Clone, Copy, Debug)]
pub struct TxnRef<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a DeviceId,
    pub key: &'a str,
    pub txn_id: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends the event and everything that comes with it in one transaction. Returns the
    /// state group after the event.
    async fn persist(&self, event: PersistEvent<'_>) -> StorageResult<i64>;

    async fn get(&self, event_id: &EventId) -> StorageResult<Option<StoredEvent>>;

    async fn get_many(&self, event_ids: &[OwnedEventId]) -> StorageResult<Vec<StoredEvent>>;

    /// Events of a room with `after < stream_pos < before`, nearest the starting end first:
    /// ascending for `Forward` (starting after `after`), descending for `Backward`.
    async fn room_events(
        &self,
        room_id: &RoomId,
        after: i64,
        before: i64,
        dir: Direction,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>>;

    /// The last event of the room at or before `pos`.
    async fn last_event_at_or_before(&self, room_id: &RoomId, pos: i64) -> StorageResult<Option<StoredEvent>>;

    /// The event closest to `ts` in the given direction: the first at or after it (`Forward`),
    /// or the last at or before it (`Backward`).
    async fn event_near_ts(
        &self,
        room_id: &RoomId,
        ts: i64,
        dir: Direction,
    ) -> StorageResult<Option<(OwnedEventId, i64)>>;

    /// The position of each room's latest event.
    async fn latest_positions(&self, room_ids: &[OwnedRoomId]) -> StorageResult<Vec<(OwnedRoomId, i64)>>;

    /// The highest stream position of any event, for seeding the stream allocator.
    async fn max_stream_pos(&self) -> StorageResult<i64>;

    /// The event a device's transaction (by its scoped key) produced.
    async fn txn_event(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        txn_key: &str,
    ) -> StorageResult<Option<OwnedEventId>>;

    /// The transaction IDs `device_id` used for any of `event_ids`, so that the sending device
    /// can be shown its `transaction_id`.
    async fn txn_ids(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        event_ids: &[OwnedEventId],
    ) -> StorageResult<Vec<(OwnedEventId, String)>>;
}

pub(super) type EventRow = (i64, String, String, i64, String, Option<String>, Option<String>);

pub(super) fn event_from_row(
    (stream_pos, event_id, room_id, state_group, json, unsigned, redacted_by): EventRow,
) -> anyhow::Result<StoredEvent> {
    Ok(StoredEvent {
        stream_pos,
        event_id: event_id.try_into()?,
        room_id: room_id.try_into()?,
        state_group,
        json: RawValue::from_string(json)?,
        unsigned: unsigned.map(RawValue::from_string).transpose()?,
        redacted_by: redacted_by.map(OwnedEventId::try_from).transpose()?,
    })
}
