//! Room state: state groups (the state after each event), the current state, and the
//! memberships derived from it.

use async_trait::async_trait;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::StorageResult;

/// One state entry: `(event type, state key, event ID)`.
pub type StateEntry = (String, String, OwnedEventId);

/// What a room's append path needs to continue the graph.
#[derive(Clone, Debug)]
pub struct RoomHeadRow {
    pub room_version: String,
    /// The forward extremities with their depths.
    pub extremities: Vec<(OwnedEventId, i64)>,
    /// The state group of the current state, and its delta chain length.
    pub current_group: i64,
    pub chain_len: i32,
}

#[derive(Clone, Debug)]
pub struct Membership {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub membership: String,
    pub event_id: OwnedEventId,
    pub stream_pos: i64,
    pub forgotten: bool,
}

#[async_trait]
pub trait StateStore: Send + Sync {
    /// The full state in a group, resolving its delta chain.
    async fn group_state(&self, group: i64) -> StorageResult<Vec<StateEntry>>;

    /// How many deltas lie between the group and its snapshot.
    async fn group_chain_len(&self, group: i64) -> StorageResult<i32>;

    /// One state entry in a group.
    async fn group_lookup(&self, group: i64, event_type: &str, state_key: &str) -> StorageResult<Option<OwnedEventId>>;

    /// The room's current state.
    async fn current_state(&self, room_id: &RoomId) -> StorageResult<Vec<StateEntry>>;

    async fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StorageResult<Option<OwnedEventId>>;

    /// What the append path needs, or `None` for an unknown room.
    async fn room_head(&self, room_id: &RoomId) -> StorageResult<Option<RoomHeadRow>>;

    async fn membership(&self, room_id: &RoomId, user_id: &UserId) -> StorageResult<Option<Membership>>;

    /// The rooms where the user's membership is one of `memberships`.
    async fn user_rooms(&self, user_id: &UserId, memberships: &[&str]) -> StorageResult<Vec<Membership>>;

    /// The room's members whose membership is one of `memberships`.
    async fn room_members(&self, room_id: &RoomId, memberships: &[&str]) -> StorageResult<Vec<Membership>>;

    /// Hides a room the user has left from their room lists. Returns `false` when the user
    /// has no membership in the room.
    async fn forget(&self, room_id: &RoomId, user_id: &UserId) -> StorageResult<bool>;
}

pub(super) type MembershipRow = (String, String, String, String, i64, bool);

pub(super) fn membership_from_row(
    (room_id, user_id, membership, event_id, stream_pos, forgotten): MembershipRow,
) -> anyhow::Result<Membership> {
    Ok(Membership {
        room_id: room_id.try_into()?,
        user_id: user_id.try_into()?,
        membership,
        event_id: event_id.try_into()?,
        stream_pos,
        forgotten,
    })
}

/// Resolves rows `(type, key, event_id, distance)` of a delta chain into the state: for each
/// key, the entry nearest the group wins.
pub(super) fn resolve_chain(mut rows: Vec<(String, String, String, i64)>) -> anyhow::Result<Vec<StateEntry>> {
    rows.sort_by_key(|row| row.3);
    let mut seen = std::collections::HashSet::new();
    let mut state = Vec::new();
    for (event_type, state_key, event_id, _) in rows {
        if seen.insert((event_type.clone(), state_key.clone())) {
            state.push((event_type, state_key, event_id.try_into()?));
        }
    }
    Ok(state)
}
