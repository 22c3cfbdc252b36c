//! History visibility: which events a user may see.
//!
//! For each event, the rules are applied to the state after it (which includes the event
//! itself, so a user sees their own join): `world_readable` events are visible to anyone;
//! otherwise a user sees an event if they were joined then, or invited then and visibility
//! was `invited`, or visibility was `shared` and they are joined now.

use std::collections::HashMap;

use ruma::{RoomId, UserId};

use super::{PduRef, Rooms};
use crate::error::Result;

/// A user always sees changes to their own membership: the invite, their leave, their kick.
fn is_own_membership(pdu: &PduRef, user_id: &UserId) -> bool {
    pdu.event_type == ruma::events::TimelineEventType::RoomMember && pdu.state_key.as_deref() == Some(user_id.as_str())
}

#[derive(serde::Deserialize)]
struct VisibilityContent {
    history_visibility: String,
}

impl Rooms {
    /// Keeps the events `user_id` may see, in order.
    pub async fn filter_visible(&self, user_id: &UserId, room_id: &RoomId, events: Vec<PduRef>) -> Result<Vec<PduRef>> {
        if events.is_empty() {
            return Ok(events);
        }
        let joined_now = self.is_joined(room_id, user_id).await?;
        let mut by_group: HashMap<i64, bool> = HashMap::new();
        let mut visible = Vec::with_capacity(events.len());
        for pdu in events {
            if is_own_membership(&pdu, user_id) {
                visible.push(pdu);
                continue;
            }
            let allowed = match by_group.get(&pdu.state_group) {
                Some(allowed) => *allowed,
                None => {
                    let allowed = self.visible_at(pdu.state_group, user_id, joined_now).await?;
                    by_group.insert(pdu.state_group, allowed);
                    allowed
                }
            };
            if allowed {
                visible.push(pdu);
            }
        }
        Ok(visible)
    }

    /// Whether one event is visible to the user.
    pub async fn can_see(&self, user_id: &UserId, pdu: &PduRef) -> Result<bool> {
        if is_own_membership(pdu, user_id) {
            return Ok(true);
        }
        let joined_now = self.is_joined(&pdu.room_id, user_id).await?;
        self.visible_at(pdu.state_group, user_id, joined_now).await
    }

    async fn visible_at(&self, group: i64, user_id: &UserId, joined_now: bool) -> Result<bool> {
        let visibility = self.history_visibility_in_group(group).await?;
        if visibility == "world_readable" {
            return Ok(true);
        }
        let membership = self.membership_in_group(group, user_id).await?;
        Ok(match membership.as_str() {
            "join" => true,
            "invite" => visibility == "invited" || (visibility == "shared" && joined_now),
            _ => visibility == "shared" && joined_now,
        })
    }

    /// The history visibility in a state group; `shared` when unset, as the spec says.
    pub async fn history_visibility_in_group(&self, group: i64) -> Result<String> {
        Ok(self
            .group_lookup(group, "m.room.history_visibility", "")
            .await?
            .and_then(|pdu| pdu.content_as::<VisibilityContent>())
            .map_or_else(|| "shared".to_owned(), |c| c.history_visibility))
    }

    /// Whether the room's current history visibility is `world_readable`.
    pub async fn is_world_readable(&self, room_id: &RoomId) -> Result<bool> {
        let content: Option<VisibilityContent> = self.state_content(room_id, "m.room.history_visibility", "").await?;
        Ok(content.is_some_and(|c| c.history_visibility == "world_readable"))
    }
}
