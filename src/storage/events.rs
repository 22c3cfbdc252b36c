//! Events: persisting a PDU with everything it changes (its state group, the room head, the
//! current state and memberships) in one transaction, and reading events back.
//!
//! An event is in one of four places (see docs/architecture.md, "The event DAG"): in the
//! timeline (it has a stream position), soft-failed or rejected (stored, with the state
//! before it, but never shown), or an outlier (stored, with no state and no position).

use async_trait::async_trait;
use ruma::{DeviceId, EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::value::RawValue;

use super::{StorageResult, state::StateEntry};

/// Where an event stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In the room's timeline, at the event's stream position.
    Timeline,
    /// Its place in the graph is not known yet: no state, not in any timeline.
    Outlier,
    /// Valid against its own history but not against the current state: stored, never shown,
    /// never built upon.
    SoftFailed,
    /// It failed the authorization rules, for the reason given.
    Rejected(String),
}

/// An event as stored.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// The event's position in the stream, when it is in the timeline; 0 otherwise.
    pub stream_pos: i64,
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    /// The state group holding the room state after this event (before it, for a rejected
    /// event); `None` for outliers.
    pub state_group: Option<i64>,
    pub placement: Placement,
    /// The PDU, or its redacted form once it has been redacted.
    pub json: Box<RawValue>,
    /// Unsigned data the server adds (`prev_content`, `replaces_state`, ...).
    pub unsigned: Option<Box<RawValue>>,
    pub redacted_by: Option<OwnedEventId>,
}

/// A state group to write: a delta on `prev`, or a full snapshot when `prev` is `None`.
#[derive(Debug)]
pub struct NewGroup {
    pub prev: Option<GroupRef>,
    /// How many deltas lie between this group and its snapshot.
    pub chain_len: i32,
    pub entries: Vec<StateEntry>,
}

/// A state group: one already stored, or the n-th of the groups written with the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupRef {
    Stored(i64),
    New(usize),
}

/// A room row, written with the room's create event.
#[derive(Debug)]
pub struct NewRoom<'a> {
    pub room_version: &'a str,
    pub creator: &'a UserId,
    pub created_at: i64,
}

/// What the current state of the room becomes with an event in the timeline.
#[derive(Debug)]
pub struct HeadUpdate<'a> {
    /// Forward extremities that stop being extremities.
    pub removed_extremities: &'a [OwnedEventId],
    /// Whether the event itself becomes a forward extremity.
    pub add_extremity: bool,
    /// The state group of the new current state.
    pub current_group: GroupRef,
    /// Whether that group differs from the room's current one.
    pub group_changed: bool,
    /// Entries of the current state that change: set to an event, or removed.
    pub state_changes: &'a [(String, String, Option<OwnedEventId>)],
    /// Memberships that change: `(user, membership, member event)`, recorded at the event's
    /// stream position.
    pub memberships: &'a [(OwnedUserId, String, OwnedEventId)],
}

/// Everything persisting one event writes.
#[derive(Debug)]
pub struct PersistEvent<'a> {
    pub event_id: &'a EventId,
    pub room_id: &'a RoomId,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a UserId,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub json: &'a str,
    pub unsigned: Option<&'a str>,
    pub prev_events: &'a [OwnedEventId],
    pub auth_events: &'a [OwnedEventId],
    pub placement: &'a Placement,
    /// The stream position, for an event entering the timeline: positive when live (its
    /// `StreamPosition` held until the commit ends), negative when backfilled.
    pub stream_pos: Option<i64>,
    /// State groups to write first, in order; `GroupRef::New(i)` refers to the i-th.
    pub groups: &'a [NewGroup],
    /// The state after the event (before it, when rejected); `None` for outliers.
    pub state_group: Option<GroupRef>,
    /// How the room's head moves; `None` when it does not (events outside the timeline).
    pub head: Option<HeadUpdate<'a>>,
    /// The client transaction that sent it, for idempotent retries.
    pub txn: Option<TxnRef<'a>>,
    /// For redactions: the target event and its redacted JSON.
    pub redaction: Option<(&'a EventId, &'a str)>,
    pub new_room: Option<NewRoom<'a>>,
    /// What the push rules said to each recipient (only those told to notify).
    pub push_actions: &'a [super::push::PushActionRow],
    /// Notifications for the recipients' pushers, queued with the event.
    pub push_queue: &'a [super::push::NewQueuedPush],
    /// Servers to send the event to: it enters their federation queues with it.
    pub outbox: &'a [ruma::OwnedServerName],
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

/// A point in a room's topological order: `(depth, stream position)`. A bound includes the
/// events at or before it (paginating backwards) or after it (forwards).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopoPoint {
    pub depth: i64,
    pub stream: i64,
}

/// The events a /messages page may start from.
#[derive(Clone, Copy, Debug)]
pub enum TopoFrom {
    /// Events at or below this stream position (a /sync `prev_batch`), in topological order.
    Stream(i64),
    /// Events at or before (backwards), or after (forwards), this point.
    Point(TopoPoint),
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Persists the event and everything that comes with it in one transaction. Returns the
    /// IDs of the groups in `groups`, in order. An event already stored as an outlier is
    /// updated in place (de-outliered).
    async fn persist(&self, event: PersistEvent<'_>) -> StorageResult<Vec<i64>>;

    async fn get(&self, event_id: &EventId) -> StorageResult<Option<StoredEvent>>;

    async fn get_many(&self, event_ids: &[OwnedEventId]) -> StorageResult<Vec<StoredEvent>>;

    /// Timeline events of a room with `after < stream_pos < before`, nearest the starting end
    /// first: ascending for `Forward` (starting after `after`), descending for `Backward`.
    async fn room_events(
        &self,
        room_id: &RoomId,
        after: i64,
        before: i64,
        dir: Direction,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>>;

    /// Timeline events of a room in topological order (depth, then stream position), starting
    /// at `from` and going `dir`, never past `to` (inclusive) nor above the stream position
    /// `ceiling`.
    async fn room_events_topo(
        &self,
        room_id: &RoomId,
        from: TopoFrom,
        to: Option<TopoPoint>,
        ceiling: i64,
        dir: Direction,
        limit: u32,
    ) -> StorageResult<Vec<StoredEvent>>;

    /// The position of an event in its room's topological order, if it is in the timeline.
    async fn topo_point(&self, event_id: &EventId) -> StorageResult<Option<TopoPoint>>;

    /// The last timeline event of the room at or before stream position `pos`, with the
    /// room's current state group just after it.
    async fn last_event_at_or_before(&self, room_id: &RoomId, pos: i64) -> StorageResult<Option<(OwnedEventId, i64)>>;

    /// The timeline event closest to `ts` in the given direction: the first at or after it
    /// (`Forward`), or the last at or before it (`Backward`).
    async fn event_near_ts(
        &self,
        room_id: &RoomId,
        ts: i64,
        dir: Direction,
    ) -> StorageResult<Option<(OwnedEventId, i64)>>;

    /// The position of each room's latest timeline event.
    async fn latest_positions(&self, room_ids: &[OwnedRoomId]) -> StorageResult<Vec<(OwnedRoomId, i64)>>;

    /// The highest and lowest stream positions of any event, for seeding the allocators.
    async fn stream_bounds(&self) -> StorageResult<(i64, i64)>;

    /// Whether an event in the timeline, soft-failed or rejected, lists `event_id` among its
    /// `prev_events`: such an event is not a forward extremity.
    async fn has_successor(&self, event_id: &EventId) -> StorageResult<bool>;

    /// The auth chain of the events: every event reachable through `auth_events`, the events
    /// themselves excluded unless reachable from another. Only events this server has.
    async fn auth_chain(&self, event_ids: &[OwnedEventId]) -> StorageResult<Vec<OwnedEventId>>;

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

/// The columns every event read selects, in this order.
pub(super) const EVENT_COLUMNS: &str =
    "stream_pos, event_id, room_id, state_group, json, unsigned, redacted_by, outlier, soft_failed, rejected";

pub(super) type EventRow =
    (Option<i64>, String, String, Option<i64>, String, Option<String>, Option<String>, bool, bool, Option<String>);

pub(super) fn event_from_row(
    (stream_pos, event_id, room_id, state_group, json, unsigned, redacted_by, outlier, soft_failed, rejected): EventRow,
) -> anyhow::Result<StoredEvent> {
    let placement = match (outlier, soft_failed, rejected) {
        (_, _, Some(reason)) => Placement::Rejected(reason),
        (true, _, None) => Placement::Outlier,
        (false, true, None) => Placement::SoftFailed,
        (false, false, None) => Placement::Timeline,
    };
    Ok(StoredEvent {
        stream_pos: stream_pos.unwrap_or(0),
        event_id: event_id.try_into()?,
        room_id: room_id.try_into()?,
        state_group,
        placement,
        json: RawValue::from_string(json)?,
        unsigned: unsigned.map(RawValue::from_string).transpose()?,
        redacted_by: redacted_by.map(OwnedEventId::try_from).transpose()?,
    })
}
