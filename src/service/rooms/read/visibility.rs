//! History visibility: which events a user may see.
//!
//! The spec's rules ("Room History Visibility", server behaviour), applied to the state at
//! each event (here the state after it, which includes the event itself, so a user sees
//! their own join): `world_readable` events are visible to anyone; otherwise a user sees an
//! event if they were joined then, or invited then and visibility was `invited`, or
//! visibility was `shared` and they joined the room at any point after the event. A user's
//! own member events, and `m.room.history_visibility` events, are visible when the state
//! before *or* after them allows it. So a user who left keeps seeing what they saw before
//! leaving, including their own leave, and nothing after it.

use std::collections::HashMap;

use ruma::{RoomId, UserId, events::TimelineEventType};

use super::Reader;
use crate::error::Result;
use crate::service::rooms::PduRef;

#[derive(serde::Deserialize)]
struct VisibilityContent {
    history_visibility: String,
}

/// How far back a user's member events are followed to find their latest join.
const MAX_MEMBER_CHAIN: usize = 64;

/// The parts of an event's `unsigned` data the rules read.
#[derive(serde::Deserialize, Default)]
struct Unsigned {
    #[serde(default)]
    prev_content: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    replaces_state: Option<ruma::OwnedEventId>,
}

impl Unsigned {
    fn of(pdu: &PduRef) -> Self {
        pdu.unsigned.as_ref().and_then(|u| serde_json::from_str(u.get()).ok()).unwrap_or_default()
    }

    fn prev_field(&self, field: &str) -> Option<String> {
        self.prev_content.as_ref()?.get(field)?.as_str().map(str::to_owned)
    }
}

/// Whether an event is visible given the visibility and the user's membership at it, and
/// whether the user joined the room at some point after it.
fn allowed(visibility: &str, membership: &str, joined_after: bool) -> bool {
    visibility == "world_readable"
        || membership == "join"
        || (visibility == "shared" && joined_after)
        || (membership == "invite" && visibility == "invited")
}

impl Reader {
    /// Keeps the events `user_id` may see, in order.
    pub async fn filter_visible(&self, user_id: &UserId, room_id: &RoomId, events: Vec<PduRef>) -> Result<Vec<PduRef>> {
        if events.is_empty() {
            return Ok(events);
        }
        let last_join = self.last_join_pos(room_id, user_id).await?;
        let mut by_group: HashMap<i64, (String, String)> = HashMap::new();
        let mut visible = Vec::with_capacity(events.len());
        for pdu in events {
            // Only events in the timeline are ever shown.
            let Some(group) = pdu.group() else { continue };
            let at = match by_group.get(&group) {
                Some(at) => at.clone(),
                None => {
                    let at = self.visibility_and_membership(group, user_id).await?;
                    by_group.insert(group, at.clone());
                    at
                }
            };
            if Self::visible(&pdu, user_id, &at, last_join) {
                visible.push(pdu);
            }
        }
        Ok(visible)
    }

    /// Like [`Rooms::filter_visible`], with the user's current membership already known: a
    /// member joined since before all the events saw them all as a member, which needs no
    /// look-ups. The common case of an incremental sync.
    pub async fn filter_visible_as(
        &self,
        membership: &crate::storage::Membership,
        events: Vec<PduRef>,
    ) -> Result<Vec<PduRef>> {
        if membership.membership == "join"
            && events.iter().all(|e| e.in_timeline() && e.stream_pos > membership.stream_pos)
        {
            return Ok(events);
        }
        self.filter_visible(&membership.user_id, &membership.room_id, events).await
    }

    /// Whether one event is visible to the user.
    pub async fn can_see(&self, user_id: &UserId, pdu: &PduRef) -> Result<bool> {
        let Some(group) = pdu.group() else { return Ok(false) };
        let last_join = self.last_join_pos(&pdu.room_id, user_id).await?;
        let at = self.visibility_and_membership(group, user_id).await?;
        Ok(Self::visible(pdu, user_id, &at, last_join))
    }

    /// The rules for one event, given the visibility and membership in the state after it.
    fn visible(
        pdu: &PduRef,
        user_id: &UserId,
        (visibility, membership): &(String, String),
        last_join: Option<i64>,
    ) -> bool {
        let joined_after = last_join.is_some_and(|pos| pos > pdu.stream_pos);
        if allowed(visibility, membership, joined_after) {
            return true;
        }
        // The state before the event, where the event itself changed what the rules read.
        let unsigned = || Unsigned::of(pdu);
        if pdu.event_type == TimelineEventType::RoomMember && pdu.state_key.as_deref() == Some(user_id.as_str()) {
            let before = unsigned().prev_field("membership").unwrap_or_else(|| "leave".to_owned());
            return allowed(visibility, &before, joined_after);
        }
        if pdu.event_type == TimelineEventType::RoomHistoryVisibility && pdu.state_key.as_deref() == Some("") {
            let before = unsigned().prev_field("history_visibility").unwrap_or_else(|| "shared".to_owned());
            return allowed(&before, membership, joined_after);
        }
        false
    }

    async fn visibility_and_membership(&self, group: i64, user_id: &UserId) -> Result<(String, String)> {
        Ok((self.history_visibility_in_group(group).await?, self.state.membership_in_group(group, user_id).await?))
    }

    /// The stream position of the user's latest `join` member event in the room, if any:
    /// their current member event when joined, else found by following the member events
    /// back through `replaces_state`.
    async fn last_join_pos(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<i64>> {
        let Some(current) = self.members.membership(room_id, user_id).await? else { return Ok(None) };
        if current.membership == "join" {
            return Ok(Some(current.stream_pos));
        }
        let mut next = Some(current.event_id);
        for _ in 0..MAX_MEMBER_CHAIN {
            let Some(id) = next.take() else { break };
            let Some(pdu) = self.events.pdu(&id).await? else { break };
            if pdu.state_key.as_deref() != Some(user_id.as_str()) {
                break;
            }
            if pdu.membership().as_deref() == Some("join") {
                return Ok(Some(pdu.stream_pos));
            }
            next = Unsigned::of(&pdu).replaces_state;
        }
        Ok(None)
    }

    /// The history visibility in a state group; `shared` when unset, as the spec says.
    pub async fn history_visibility_in_group(&self, group: i64) -> Result<String> {
        Ok(self
            .state
            .group_lookup(group, "m.room.history_visibility", "")
            .await?
            .and_then(|pdu| pdu.content_as::<VisibilityContent>())
            .map_or_else(|| "shared".to_owned(), |c| c.history_visibility))
    }

    /// Whether the room's current history visibility is `world_readable`.
    pub async fn is_world_readable(&self, room_id: &RoomId) -> Result<bool> {
        let content: Option<VisibilityContent> =
            self.state.state_content(room_id, "m.room.history_visibility", "").await?;
        Ok(content.is_some_and(|c| c.history_visibility == "world_readable"))
    }
}
