//! The head of a room: its forward extremities and its current state, what the next local
//! event builds on. Cached per room and replaced, under the room's lock, by the timeline
//! after every event that moves it.

use std::{collections::HashMap, sync::Arc};

use ruma::{OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, room_version_rules::RoomVersionRules};

use super::RoomState;
use crate::{
    error::{Error, Result},
    service::cache::WriteGuard,
};

/// Room state keyed by `(event type, state key)`.
pub type StateMap = HashMap<(String, String), OwnedEventId>;

#[derive(Clone, Debug)]
pub struct RoomHead {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    /// Forward extremities with their depths: the events the next event will follow.
    pub extremities: Vec<(OwnedEventId, i64)>,
    /// The state group holding the current state (0 before the create event).
    pub current_group: i64,
    /// How many deltas lie between `current_group` and its snapshot.
    pub chain_len: i32,
    /// The current state: the resolution of the states after the extremities.
    pub state: Arc<StateMap>,
}

impl RoomHead {
    pub fn rules_for(version: &RoomVersionId) -> Result<RoomVersionRules> {
        version.rules().ok_or_else(|| Error::internal(format!("no rules for room version {version}")))
    }

    pub fn state_event(&self, event_type: &str, state_key: &str) -> Option<&OwnedEventId> {
        self.state.get(&(event_type.to_owned(), state_key.to_owned()))
    }

    /// The greatest depth among the extremities.
    pub fn depth(&self) -> i64 {
        self.extremities.iter().map(|(_, depth)| *depth).max().unwrap_or(0)
    }

    /// What a head costs in memory, roughly: its state map dominates.
    pub(crate) fn weight(&self) -> usize {
        const ENTRY: usize = 96;
        self.state.iter().map(|((t, k), id)| t.len() + k.len() + id.as_str().len() + ENTRY).sum::<usize>()
            + self.extremities.len() * ENTRY
            + 256
    }
}

impl RoomState {
    /// The room's head, or `None` for a room this server does not have.
    pub async fn head(&self, room_id: &RoomId) -> Result<Option<Arc<RoomHead>>> {
        if let Some(head) = self.heads.get(&room_id.to_owned()) {
            return Ok(Some(head));
        }
        let snapshot = self.head_generations.snapshot(room_id);
        let Some(row) = self.storage.state.room_head(room_id).await? else { return Ok(None) };
        let version = RoomVersionId::try_from(row.room_version.as_str())
            .map_err(|e| Error::internal(format!("stored room version: {e}")))?;
        let state: StateMap = self
            .storage
            .state
            .current_state(room_id)
            .await?
            .into_iter()
            .map(|(event_type, state_key, event_id)| ((event_type, state_key), event_id))
            .collect();
        let head = Arc::new(RoomHead {
            room_id: room_id.to_owned(),
            rules: RoomHead::rules_for(&version)?,
            version,
            extremities: row.extremities,
            current_group: row.current_group,
            chain_len: row.chain_len,
            state: Arc::new(state),
        });
        // A head loaded while an event was being persisted may already be out of date.
        if self.head_generations.unchanged(snapshot) {
            self.heads.put(room_id.to_owned(), Arc::clone(&head), head.weight());
        }
        Ok(Some(head))
    }

    /// Marks a move of the room's head under way; see `cache::Generations`.
    pub(in crate::service::rooms) fn head_write(&self, room_id: &RoomId) -> WriteGuard<'_> {
        self.head_generations.write(room_id)
    }

    /// The head after a committed move. Call under [`RoomState::head_write`].
    pub(in crate::service::rooms) fn set_head(&self, head: Arc<RoomHead>) {
        let weight = head.weight();
        self.heads.put(head.room_id.clone(), head, weight);
    }

    /// Drops a cached head, when the database may hold a newer one than the cache knows.
    pub(in crate::service::rooms) fn forget_head(&self, room_id: &RoomId) {
        self.heads.remove(&room_id.to_owned());
    }
}
