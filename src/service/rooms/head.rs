//! The head of a room: what the append path continues from. Cached per room and replaced,
//! under the room's lock, after every append.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError},
};

use ruma::{OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, room_version_rules::RoomVersionRules};

use super::Rooms;
use crate::error::{Error, Result};

/// Room state keyed by `(event type, state key)`.
pub type StateMap = HashMap<(String, String), OwnedEventId>;

#[derive(Clone, Debug)]
pub struct RoomHead {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    /// Forward extremities: the events the next event will follow.
    pub extremities: Vec<OwnedEventId>,
    /// The greatest depth among the extremities.
    pub depth: i64,
    /// The state group after the latest event (0 before the create event).
    pub state_group: i64,
    /// How many deltas lie between `state_group` and its snapshot.
    pub chain_len: i32,
    /// The current state.
    pub state: Arc<StateMap>,
}

impl RoomHead {
    pub fn rules_for(version: &RoomVersionId) -> Result<RoomVersionRules> {
        version.rules().ok_or_else(|| Error::internal(format!("no rules for room version {version}")))
    }

    pub fn state_event(&self, event_type: &str, state_key: &str) -> Option<&OwnedEventId> {
        self.state.get(&(event_type.to_owned(), state_key.to_owned()))
    }
}

impl Rooms {
    /// The room's head, or `None` for a room this server does not have.
    pub async fn head(&self, room_id: &RoomId) -> Result<Option<Arc<RoomHead>>> {
        if let Some(head) = self.heads.lock().unwrap_or_else(PoisonError::into_inner).get(room_id) {
            return Ok(Some(Arc::clone(head)));
        }
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
            depth: row.extremities.iter().map(|(_, depth)| *depth).max().unwrap_or(0),
            extremities: row.extremities.into_iter().map(|(id, _)| id).collect(),
            state_group: row.state_group,
            chain_len: row.chain_len,
            state: Arc::new(state),
        });
        // Only cache heads loaded while nobody is appending; an append replaces the entry anyway.
        self.heads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(room_id.to_owned())
            .or_insert_with(|| Arc::clone(&head));
        Ok(Some(head))
    }

    pub(super) fn set_head(&self, head: Arc<RoomHead>) {
        self.heads.lock().unwrap_or_else(PoisonError::into_inner).insert(head.room_id.clone(), head);
    }
}
