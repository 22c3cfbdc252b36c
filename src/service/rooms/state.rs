//! Reading room state: the current state, the state after any event, single entries.

use std::sync::{Arc, PoisonError};

use ruma::{OwnedEventId, RoomId, UserId};

use super::{PduRef, Rooms, read::StreamToken};
use crate::{
    error::{Error, Result},
    storage::StateEntry,
};

/// The `membership` of a member event's content.
#[derive(serde::Deserialize)]
struct MemberContent {
    membership: String,
}

impl Rooms {
    /// The current state events of a room.
    pub async fn current_state(&self, room_id: &RoomId) -> Result<Vec<PduRef>> {
        let Some(head) = self.head(room_id).await? else { return Ok(Vec::new()) };
        let ids: Vec<OwnedEventId> = head.state.values().cloned().collect();
        self.pdus(&ids).await
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
            Some(id) => self.pdu(id).await,
            None => Ok(None),
        }
    }

    /// The state events in a state group (the state after some event).
    pub async fn group_state(&self, group: i64) -> Result<Vec<PduRef>> {
        self.group_state_where(group, |_, _| true).await
    }

    /// The entries `(type, state key, event ID)` of a state group, cached: groups never change.
    pub async fn group_entries(&self, group: i64) -> Result<Arc<Vec<StateEntry>>> {
        if let Some(entries) = self.group_entries.lock().unwrap_or_else(PoisonError::into_inner).get(&group) {
            return Ok(Arc::clone(entries));
        }
        let entries = Arc::new(self.storage.state.group_state(group).await?);
        self.group_entries.lock().unwrap_or_else(PoisonError::into_inner).put(group, Arc::clone(&entries));
        Ok(entries)
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
        self.pdus(&ids).await
    }

    /// One entry of a state group, cached: groups never change.
    pub async fn group_lookup(&self, group: i64, event_type: &str, state_key: &str) -> Result<Option<PduRef>> {
        let key = (group, event_type.to_owned(), state_key.to_owned());
        let cached = self.lookups.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
        let event_id = match cached {
            Some(id) => id,
            None => {
                let id = self.storage.state.group_lookup(group, event_type, state_key).await?;
                self.lookups.lock().unwrap_or_else(PoisonError::into_inner).put(key, id.clone());
                id
            }
        };
        match event_id {
            Some(id) => self.pdu(&id).await,
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

    /// A user's current membership of a room, if any.
    pub async fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<crate::storage::Membership>> {
        Ok(self.storage.state.membership(room_id, user_id).await?)
    }

    /// Whether the user is joined to the room now.
    pub async fn is_joined(&self, room_id: &RoomId, user_id: &UserId) -> Result<bool> {
        Ok(self.membership(room_id, user_id).await?.is_some_and(|m| m.membership == "join"))
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

    /// The rooms where the user's membership is one of `memberships`.
    pub async fn user_rooms(&self, user_id: &UserId, memberships: &[&str]) -> Result<Vec<crate::storage::Membership>> {
        Ok(self.storage.state.user_rooms(user_id, memberships).await?)
    }

    /// The state a user may read: the current state while joined (or when the room is
    /// world-readable); the state when they left, once they have left; the state at `at`
    /// when given and visible to them. Never-members of other rooms get `403`.
    pub async fn readable_state(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        at: Option<StreamToken>,
    ) -> Result<Vec<PduRef>> {
        self.check_can_read(room_id, user_id).await?;
        if let Some(at) = at {
            let Some(stored) = self.storage.events.last_event_at_or_before(room_id, at.0).await? else {
                return Ok(Vec::new());
            };
            let pdu = match self.pdu(&stored.event_id).await? {
                Some(pdu) => pdu,
                None => return Ok(Vec::new()),
            };
            if !self.can_see(user_id, &pdu).await? {
                return Err(Error::forbidden("You may not see the room at that point"));
            }
            return self.group_state(pdu.state_group).await;
        }
        let membership = self.membership(room_id, user_id).await?;
        match membership {
            Some(m) if m.membership == "join" => self.current_state(room_id).await,
            _ if self.is_world_readable(room_id).await? => self.current_state(room_id).await,
            Some(m) if matches!(m.membership.as_str(), "leave" | "ban") => {
                let Some(event) = self.pdu(&m.event_id).await? else { return Ok(Vec::new()) };
                self.group_state(event.state_group).await
            }
            _ => Err(Error::forbidden("You are not in this room")),
        }
    }
}
