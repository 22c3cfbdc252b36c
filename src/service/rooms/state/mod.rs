//! Room state: state groups (the state at every event), room heads (the current state), and
//! state resolution.
//!
//! Owns: the room heads cache, and the caches of state groups, which never change once
//! written. Heads move only when the timeline persists an event, under the room's lock.

mod groups;
pub mod head;
mod power;
mod resolve;

use std::sync::Arc;

use ruma::{OwnedEventId, RoomId, UserId};

pub use self::{
    groups::{GroupBase, GroupPlan, MAX_STATE_CHAIN, diff, extremities, plan},
    head::{RoomHead, StateMap},
};
use super::{PduRef, events::Events};
use crate::{
    error::Result,
    service::cache::{BoundedLru, Generations},
    storage::{StateEntry, Storage},
};

/// Bytes of room heads (mostly their current state maps) kept in memory.
const HEAD_CACHE_BYTES: usize = 64 << 20;
/// Single-key lookups `(group, type, key)` kept in memory.
const LOOKUP_CACHE_SIZE: usize = 50_000;
/// State group entries kept in memory, counted in entries.
const GROUP_CACHE_ENTRIES: usize = 500_000;

/// The `membership` of a member event's content.
#[derive(serde::Deserialize)]
struct MemberContent {
    membership: String,
}

pub struct RoomState {
    storage: Storage,
    events: Arc<Events>,
    heads: BoundedLru<ruma::OwnedRoomId, Arc<RoomHead>>,
    head_generations: Generations,
    lookups: BoundedLru<(i64, String, String), Option<OwnedEventId>>,
    /// Whole state groups' entries (event IDs, not events).
    group_entries: BoundedLru<i64, Arc<Vec<StateEntry>>>,
}

impl RoomState {
    pub fn new(storage: Storage, events: Arc<Events>) -> Self {
        Self {
            storage,
            events,
            heads: BoundedLru::new(HEAD_CACHE_BYTES),
            head_generations: Generations::default(),
            lookups: BoundedLru::new(LOOKUP_CACHE_SIZE),
            group_entries: BoundedLru::new(GROUP_CACHE_ENTRIES),
        }
    }

    /// The current state events of a room.
    pub async fn current_state(&self, room_id: &RoomId) -> Result<Vec<PduRef>> {
        let Some(head) = self.head(room_id).await? else { return Ok(Vec::new()) };
        let ids: Vec<OwnedEventId> = head.state.values().cloned().collect();
        self.events.pdus(&ids).await
    }

    /// One current state event.
    pub async fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<PduRef>> {
        let Some(head) = self.head(room_id).await? else { return Ok(None) };
        match head.state_event(event_type, state_key) {
            Some(id) => self.events.pdu(id).await,
            None => Ok(None),
        }
    }

    /// The content of a current state event, parsed leniently.
    pub async fn state_content<T: serde::de::DeserializeOwned>(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<T>> {
        Ok(self.current_state_event(room_id, event_type, state_key).await?.and_then(|pdu| pdu.content_as::<T>()))
    }

    /// The state events in a state group (the state after some event).
    pub async fn group_state(&self, group: i64) -> Result<Vec<PduRef>> {
        self.group_state_where(group, |_, _| true).await
    }

    /// The entries `(type, state key, event ID)` of a state group, cached: groups never change.
    pub async fn group_entries(&self, group: i64) -> Result<Arc<Vec<StateEntry>>> {
        if let Some(entries) = self.group_entries.get(&group) {
            return Ok(entries);
        }
        let entries = Arc::new(self.storage.state.group_state(group).await?);
        self.group_entries.put(group, Arc::clone(&entries), entries.len().max(1));
        Ok(entries)
    }

    /// A state group as a map, to resolve or to build on.
    pub async fn group_map(&self, group: i64) -> Result<StateMap> {
        Ok(self.group_entries(group).await?.iter().map(|(t, k, id)| ((t.clone(), k.clone()), id.clone())).collect())
    }

    /// The state events of a group whose `(type, state key)` passes `keep`; only those are
    /// loaded, which matters for lazy-loaded members in large rooms.
    pub async fn group_state_where(&self, group: i64, keep: impl Fn(&str, &str) -> bool) -> Result<Vec<PduRef>> {
        let ids: Vec<OwnedEventId> = self
            .group_entries(group)
            .await?
            .iter()
            .filter(|(t, k, _)| keep(t, k))
            .map(|(_, _, id)| id.clone())
            .collect();
        self.events.pdus(&ids).await
    }

    /// One entry of a state group, cached: groups never change.
    pub async fn group_lookup(&self, group: i64, event_type: &str, state_key: &str) -> Result<Option<PduRef>> {
        let key = (group, event_type.to_owned(), state_key.to_owned());
        let event_id = match self.lookups.get(&key) {
            Some(id) => id,
            None => {
                let id = self.storage.state.group_lookup(group, event_type, state_key).await?;
                self.lookups.put(key, id.clone(), 1);
                id
            }
        };
        match event_id {
            Some(id) => self.events.pdu(&id).await,
            None => Ok(None),
        }
    }

    /// A user's membership in a state group (`leave` when they have none).
    pub async fn membership_in_group(&self, group: i64, user_id: &UserId) -> Result<String> {
        Ok(self
            .group_lookup(group, "m.room.member", user_id.as_str())
            .await?
            .and_then(|pdu| pdu.content_as::<MemberContent>())
            .map_or_else(|| "leave".to_owned(), |m| m.membership))
    }

    /// A stored state group with its state, to store another state relative to.
    pub async fn group_base(&self, group: i64) -> Result<GroupBase> {
        let chain_len = self.storage.state.group_chain_len(group).await?;
        Ok(GroupBase { id: group, chain_len, map: Arc::new(self.group_map(group).await?) })
    }
}
